//! Sealed MRTR `requestState` values (SEP-2322): what a multi-round exchange carries from one
//! round to the next ([`Progress`]), as `base64url(JSON).base64url(HMAC-SHA256)` under a key
//! drawn when the process starts, or taken from `MCPGATE_FIXTURE_STATE_KEY` when it is set, so
//! that several instances (one child per gateway replica) accept each other's states as the
//! instances of a scaled-out server would. The tag also covers the tool or prompt name, so a
//! client can neither alter a state nor replay it against another tool; either gets -32602.

use std::sync::LazyLock;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng as _;
use rmcp::ErrorData as McpError;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::mrtr::Answers;

/// The environment variable holding a sealing key shared by several instances.
const SHARED_KEY_VAR: &str = "MCPGATE_FIXTURE_STATE_KEY";

/// This process's sealing key: the shared one's SHA-256, else random.
static KEY: LazyLock<[u8; 32]> = LazyLock::new(|| {
    if let Ok(shared) = std::env::var(SHARED_KEY_VAR) {
        return <Sha256 as sha2::Digest>::digest(shared.as_bytes()).into();
    }
    let mut key = [0; 32];
    rand::rng().fill_bytes(&mut key);
    key
});

/// How far an exchange got: the round it is in and the answers of the rounds before (and any
/// already given for this one).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    pub round: usize,
    pub answers: Answers,
}

/// Seals `progress` of the exchange with `name`.
pub fn seal(name: &str, progress: &Progress) -> String {
    let payload = serde_json::to_vec(progress).expect("progress serializes");
    let tag = mac(name, &payload).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// Opens a state sealed by [`seal`] for the exchange with `name`.
pub fn open(name: &str, state: &str) -> Result<Progress, McpError> {
    let rejected = || McpError::invalid_params("requestState failed its integrity check", None);
    let (payload, tag) = state.split_once('.').ok_or_else(rejected)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| rejected())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| rejected())?;
    mac(name, &payload)
        .verify_slice(&tag)
        .map_err(|_| rejected())?;
    serde_json::from_slice(&payload).map_err(|_| rejected())
}

/// The MAC over `name` and `payload`.
fn mac(name: &str, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(KEY.as_slice())
        .expect("HMAC takes keys of any length");
    mac.update(&(name.len() as u64).to_be_bytes());
    mac.update(name.as_bytes());
    mac.update(payload);
    mac
}
