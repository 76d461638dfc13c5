//! Sealed `requestState` of multi round-trip requests (MRTR, 2026-07-28).
//!
//! When an upstream answers a modern request with `input_required`, the client gets the
//! gateway's own `requestState`: the upstream's (if it gave one) sealed with XChaCha20-Poly1305
//! under a key derived from the fleet's shared key (`server.hmac_key`), together with what it
//! is bound to:
//!
//! - the upstream that issued it, so the retry goes back to it whatever its name looks like;
//! - what the gateway holds for it ([`Held`]): the upstream's own state, or the exchange with a
//!   legacy upstream that the gateway suspended on one replica (`suspended.rs`);
//! - the principal (its owner tag), so nobody else can continue the exchange;
//! - the method and the name or URI the request acted on, so a state cannot be replayed
//!   against another tool;
//! - an expiry, `server.request_state_ttl` after it was issued.
//!
//! Any replica with the fleet's key can open it, so the retry may land anywhere. A state that
//! does not decrypt is *tampered*, one past its expiry *expired*, and one bound to another
//! principal, method or name *foreign*; each is refused with its own message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Marks the gateway's states, and their format version.
const PREFIX: &str = "mcpgate.s2.";
const NONCE_LEN: usize = 24;

/// What a sealed state is bound to, besides the upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The principal's owner tag.
    pub owner: String,
    pub method: String,
    /// The tool or prompt name as the client named it, or the resource URI.
    pub target: String,
}

/// What a state stands for on the gateway's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Held {
    /// A modern upstream asked for input; its own `requestState`, if it gave one.
    Upstream { state: Option<String> },
    /// A legacy upstream asked for input in the middle of a call, which `replica` holds
    /// suspended as `exchange` until the retry brings the answers.
    Suspended { replica: String, exchange: String },
}

/// A state as sealed.
#[derive(Serialize, Deserialize)]
struct Contents {
    upstream: String,
    held: Held,
    binding: Binding,
    expires: u64,
}

/// An opened state: where the retry goes and what it continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub upstream: String,
    pub held: Held,
}

/// Why a client's `requestState` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("params.requestState must be a string")]
    NotAString,
    #[error("requestState was not issued by this gateway or was altered")]
    Tampered,
    #[error("requestState has expired; send the request again without it")]
    Expired,
    #[error("requestState belongs to another request or caller")]
    Foreign,
}

/// Seals and opens request states with the fleet's key.
#[derive(Clone)]
pub struct StateSealer {
    cipher: XChaCha20Poly1305,
    lifetime: Duration,
}

impl StateSealer {
    /// A sealer with a 32-byte key derived from the fleet's shared key, whose states last
    /// `lifetime`.
    pub fn new(key: [u8; 32], lifetime: Duration) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
            lifetime,
        }
    }

    /// The client's `requestState` for what the gateway `held` of `upstream`'s exchange.
    pub fn seal(&self, upstream: &str, held: Held, binding: Binding) -> String {
        let contents = Contents {
            upstream: upstream.to_owned(),
            held,
            binding,
            expires: unix_now() + self.lifetime.as_secs(),
        };
        self.seal_contents(&contents)
    }

    fn seal_contents(&self, contents: &Contents) -> String {
        let plaintext = serde_json::to_vec(contents).unwrap_or_default();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_slice())
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Opens a client's `requestState` for a request bound as `expected`.
    pub fn open(&self, text: &str, expected: &Binding) -> Result<Opened, StateError> {
        let bytes = text
            .strip_prefix(PREFIX)
            .and_then(|b64| URL_SAFE_NO_PAD.decode(b64).ok())
            .filter(|bytes| bytes.len() > NONCE_LEN)
            .ok_or(StateError::Tampered)?;
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| StateError::Tampered)?;
        let contents: Contents =
            serde_json::from_slice(&plaintext).map_err(|_| StateError::Tampered)?;
        if contents.expires < unix_now() {
            return Err(StateError::Expired);
        }
        if contents.binding != *expected {
            return Err(StateError::Foreign);
        }
        Ok(Opened {
            upstream: contents.upstream,
            held: contents.held,
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Duration = Duration::from_secs(600);

    fn binding(owner: &str) -> Binding {
        Binding {
            owner: owner.into(),
            method: "tools/call".into(),
            target: "local__ask".into(),
        }
    }

    #[test]
    fn a_state_opens_for_its_binding_only() {
        let sealer = StateSealer::new([7; 32], LIFETIME);
        let held = Held::Upstream {
            state: Some("inner".into()),
        };
        let state = sealer.seal("local", held.clone(), binding("alice"));
        let opened = sealer.open(&state, &binding("alice")).expect("opens");
        assert_eq!(opened.upstream, "local");
        assert_eq!(opened.held, held);
        assert!(
            !state.contains("inner"),
            "the upstream's state is not readable"
        );
        assert_eq!(
            sealer.open(&state, &binding("mallory")),
            Err(StateError::Foreign)
        );
        let other_tool = Binding {
            target: "local__other".into(),
            ..binding("alice")
        };
        assert_eq!(sealer.open(&state, &other_tool), Err(StateError::Foreign));
    }

    #[test]
    fn tampered_and_foreign_key_states_are_refused() {
        let sealer = StateSealer::new([7; 32], LIFETIME);
        let held = Held::Suspended {
            replica: "r1".into(),
            exchange: "x1".into(),
        };
        let state = sealer.seal("local", held, binding("alice"));
        let tampered = format!("{state}-TAMPERED");
        assert_eq!(
            sealer.open(&tampered, &binding("alice")),
            Err(StateError::Tampered)
        );
        let mut flipped = state.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            sealer.open(&flipped, &binding("alice")),
            Err(StateError::Tampered)
        );
        let other_fleet = StateSealer::new([8; 32], LIFETIME);
        assert_eq!(
            other_fleet.open(&state, &binding("alice")),
            Err(StateError::Tampered)
        );
        assert_eq!(
            sealer.open("upstream-state", &binding("alice")),
            Err(StateError::Tampered)
        );
    }

    #[test]
    fn an_expired_state_is_refused() {
        let sealer = StateSealer::new([7; 32], LIFETIME);
        let contents = Contents {
            upstream: "local".into(),
            held: Held::Upstream { state: None },
            binding: binding("alice"),
            expires: unix_now() - 1,
        };
        let state = sealer.seal_contents(&contents);
        assert_eq!(
            sealer.open(&state, &binding("alice")),
            Err(StateError::Expired)
        );
    }
}
