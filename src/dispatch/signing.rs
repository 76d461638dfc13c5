//! Keyed tags with the fleet's shared key: unforgeable ids for server-to-client requests, the
//! owner tag that binds a session to its principal, the MAC of task ids (`tasks.rs`) and of
//! HTTP+SSE event ids (`sse_transport.rs`), and the short tag that stands for a session id in
//! spans and logs.
//!
//! When an upstream asks the client something (sampling, elicitation, roots), the client sees
//! `mcpgate.<payload>.<mac>`: the payload names the upstream, its own request id and the
//! replica whose upstream exchange asked, and the HMAC-SHA256 binds them to the session. The
//! client's answer can then be routed back from any replica without shared state, and a client
//! cannot address another session's or upstream's requests.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::auth::Principal;
use crate::protocol::jsonrpc::RequestId;
use crate::session::SessionId;

const PREFIX: &str = "mcpgate.";
/// Domain separation: an owner tag can never equal a request id's MAC.
const OWNER_DOMAIN: &[u8] = b"mcpgate owner v1\0";
/// Domain separation for session tags.
const SESSION_TAG_DOMAIN: &[u8] = b"mcpgate session tag v1\0";
/// Domain separation for the MACs of task ids (`tasks.rs`).
const TASK_DOMAIN: &[u8] = b"mcpgate task id v1\0";
/// Domain separation for the key that seals MRTR request states.
const REQUEST_STATE_DOMAIN: &[u8] = b"mcpgate request state key v1\0";
/// Domain separation for the event ids of the HTTP+SSE transport (`sse_transport.rs`).
const SSE_EVENT_DOMAIN: &[u8] = b"mcpgate sse event id v1\0";
/// Hex digits of a session tag: 48 bits, enough to tell sessions apart in a trace backend.
const SESSION_TAG_HEX: usize = 12;

/// Signs and verifies gateway-issued request ids.
#[derive(Clone)]
pub struct IdSigner {
    /// HMAC-SHA256 under the fleet's key, the key already absorbed: every MAC starts from a
    /// copy of it rather than hashing the key again (two of a tag's four compressions).
    /// Shared, so that a signer stays small to move and cheap to clone.
    keyed: Arc<Hmac<Sha256>>,
    /// This process, as named in the ids it signs.
    replica: String,
}

/// What a verified id says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub upstream: String,
    /// The upstream's own id for its request.
    pub id: RequestId,
    /// The replica whose exchange relayed the request.
    pub replica: String,
}

impl IdSigner {
    /// A signer with the fleet's shared key.
    pub fn new(key: &[u8]) -> Self {
        Self {
            keyed: Arc::new(
                <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes keys of any length"),
            ),
            replica: random_replica_name(),
        }
    }

    /// A signer with a random key, valid for this process only.
    pub fn random() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self::new(&key)
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The id the client sees for `upstream`'s request `id` in `session`.
    pub fn sign(&self, session: &SessionId, upstream: &str, id: &RequestId) -> RequestId {
        let payload = serde_json::json!([upstream, id, self.replica]).to_string();
        let mac = URL_SAFE_NO_PAD.encode(self.mac(session, payload.as_bytes()));
        RequestId::String(format!("{PREFIX}{}.{mac}", URL_SAFE_NO_PAD.encode(payload)))
    }

    /// What `id` names, if a replica with our key issued it for this session.
    pub fn verify(&self, session: &SessionId, id: &RequestId) -> Option<SignedRequest> {
        let RequestId::String(text) = id else {
            return None;
        };
        let (payload_b64, mac_b64) = text.strip_prefix(PREFIX)?.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac_b64).ok()?;
        self.mac_checker(session, &payload)
            .verify_slice(&mac)
            .ok()?;
        let (upstream, id, replica) = serde_json::from_slice(&payload).ok()?;
        Some(SignedRequest {
            upstream,
            id,
            replica,
        })
    }

    /// The keyed hash of a principal and its team, as a session record stores its owner. Only
    /// a replica with the fleet's key can compute it, so a record reveals nobody's identity.
    pub fn owner_tag(&self, principal: &Principal) -> String {
        URL_SAFE_NO_PAD.encode(self.owner_mac(principal).finalize().into_bytes())
    }

    /// Whether `principal` owns a record tagged `owner`. Records written before sessions had
    /// owners carry no tag and belong to the anonymous principal (no authentication then).
    pub fn owns(&self, principal: &Principal, owner: &str) -> bool {
        if owner.is_empty() {
            return *principal == Principal::anonymous();
        }
        let mac = self.owner_mac(principal);
        URL_SAFE_NO_PAD
            .decode(owner)
            .is_ok_and(|tag| mac.verify_slice(&tag).is_ok())
    }

    /// What spans and logs show instead of a session id: the first 12 hex digits of its
    /// HMAC-SHA256 under this key. It reveals nothing of the id; replicas compute the same tag
    /// only when they share `server.hmac_key` (a random key makes it this process's own).
    pub fn session_tag(&self, session: &SessionId) -> String {
        let mut mac = Hmac::clone(&self.keyed);
        mac.update(SESSION_TAG_DOMAIN);
        mac.update(session.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        hex::encode(&digest[..SESSION_TAG_HEX / 2])
    }

    /// The key that seals MRTR request states (`request_state.rs`), derived from the fleet's
    /// key so that every replica derives the same one.
    pub fn request_state_key(&self) -> [u8; 32] {
        let mut mac = Hmac::clone(&self.keyed);
        mac.update(REQUEST_STATE_DOMAIN);
        mac.finalize().into_bytes().into()
    }

    /// The MAC binding a task id's `payload` to the owner tag of the principal it was issued
    /// to (`tasks.rs`): finalize it to sign, `verify_truncated_left` it to check an id's MAC.
    pub fn task_mac(&self, owner: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::clone(&self.keyed);
        mac.update(TASK_DOMAIN);
        mac.update(&(owner.len() as u64).to_be_bytes());
        mac.update(owner.as_bytes());
        mac.update(payload);
        mac
    }

    /// The MAC of an HTTP+SSE event id (`sse_transport.rs`): event `seq` of `session`'s
    /// stream, issued to the principal with owner tag `owner`.
    pub fn sse_event_mac(&self, owner: &str, session: &SessionId, seq: u64) -> [u8; 32] {
        let mut mac = Hmac::clone(&self.keyed);
        mac.update(SSE_EVENT_DOMAIN);
        mac.update(&(owner.len() as u64).to_be_bytes());
        mac.update(owner.as_bytes());
        mac.update(&seq.to_be_bytes());
        mac.update(session.as_str().as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn owner_mac(&self, principal: &Principal) -> Hmac<Sha256> {
        let mut mac = Hmac::clone(&self.keyed);
        mac.update(OWNER_DOMAIN);
        let id = principal.id().as_bytes();
        mac.update(&(id.len() as u64).to_be_bytes());
        mac.update(id);
        mac.update(principal.team().unwrap_or_default().as_bytes());
        mac
    }

    fn mac_checker(&self, session: &SessionId, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::clone(&self.keyed);
        mac.update(session.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    fn mac(&self, session: &SessionId, payload: &[u8]) -> Vec<u8> {
        self.mac_checker(session, payload)
            .finalize()
            .into_bytes()
            .to_vec()
    }
}

/// A random name for this process: 64 bits in hex.
fn random_replica_name() -> String {
    format!("{:016x}", rand::rng().next_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_its_own_ids_only_for_the_same_session() {
        let signer = IdSigner::random();
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let id = signer.sign(&a, "remote", &RequestId::Number(7));
        let verified = signer.verify(&a, &id).expect("our own id");
        assert_eq!(
            (verified.upstream.as_str(), &verified.id),
            ("remote", &RequestId::Number(7))
        );
        assert_eq!(verified.replica, signer.replica());
        assert_eq!(signer.verify(&b, &id), None);
        assert_eq!(IdSigner::random().verify(&a, &id), None);
        let RequestId::String(text) = &id else {
            panic!()
        };
        let tampered = RequestId::String(text.replacen("mcpgate.", "mcpgate.x", 1));
        assert_eq!(signer.verify(&a, &tampered), None);
        assert_eq!(signer.verify(&a, &RequestId::Number(7)), None);
    }

    #[test]
    fn session_tags_are_short_stable_per_key_and_hide_the_id() {
        let (fleet, other) = (IdSigner::new(b"fleet key"), IdSigner::new(b"other key"));
        let session = SessionId::generate();
        let tag = fleet.session_tag(&session);
        assert_eq!(tag.len(), 12);
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(IdSigner::new(b"fleet key").session_tag(&session), tag);
        assert_ne!(other.session_tag(&session), tag);
        assert_ne!(fleet.session_tag(&SessionId::generate()), tag);
        assert!(!session.as_str().contains(&tag));
    }
}
