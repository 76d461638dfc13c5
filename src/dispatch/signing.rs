//! Unforgeable ids for server-to-client requests.
//!
//! When an upstream asks the client something (sampling, elicitation, roots), the client sees
//! `mcpgate.<payload>.<mac>`: the payload names the upstream and its own request id, and the
//! HMAC-SHA256 binds both to the session. The client's answer can then be routed back without
//! any shared state, and a client cannot address another session's or upstream's requests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::jsonrpc::RequestId;
use crate::session::SessionId;

const PREFIX: &str = "mcpgate.";

/// Signs and verifies gateway-issued request ids.
#[derive(Clone)]
pub struct IdSigner {
    key: Vec<u8>,
}

impl IdSigner {
    /// A signer with the fleet's shared key.
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// A signer with a random key, valid for this process only.
    pub fn random() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self { key }
    }

    /// The id the client sees for `upstream`'s request `id` in `session`.
    pub fn sign(&self, session: &SessionId, upstream: &str, id: &RequestId) -> RequestId {
        let payload = serde_json::json!([upstream, id]).to_string();
        let mac = URL_SAFE_NO_PAD.encode(self.mac(session, payload.as_bytes()));
        RequestId::String(format!("{PREFIX}{}.{mac}", URL_SAFE_NO_PAD.encode(payload)))
    }

    /// The upstream and its request id, if `id` was issued by us for this session.
    pub fn verify(&self, session: &SessionId, id: &RequestId) -> Option<(String, RequestId)> {
        let RequestId::String(text) = id else {
            return None;
        };
        let (payload_b64, mac_b64) = text.strip_prefix(PREFIX)?.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac_b64).ok()?;
        self.mac_checker(session, &payload)
            .verify_slice(&mac)
            .ok()?;
        let (upstream, id): (String, RequestId) = serde_json::from_slice(&payload).ok()?;
        Some((upstream, id))
    }

    fn mac_checker(&self, session: &SessionId, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_its_own_ids_only_for_the_same_session() {
        let signer = IdSigner::random();
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let id = signer.sign(&a, "remote", &RequestId::Number(7));
        assert_eq!(
            signer.verify(&a, &id),
            Some(("remote".into(), RequestId::Number(7)))
        );
        assert_eq!(signer.verify(&b, &id), None);
        assert_eq!(IdSigner::random().verify(&a, &id), None);
        let RequestId::String(text) = &id else {
            panic!()
        };
        let tampered = RequestId::String(text.replacen("mcpgate.", "mcpgate.x", 1));
        assert_eq!(signer.verify(&a, &tampered), None);
        assert_eq!(signer.verify(&a, &RequestId::Number(7)), None);
    }
}
