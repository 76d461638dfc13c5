//! The 2024-11-05 HTTP+SSE transport's side of dispatch: every message for such a client goes
//! to its session's standalone stream in the event log (the one `GET /sse` tails), and the
//! stream's event ids are signed, because on a reconnect the `Last-Event-ID` alone names the
//! session.
//!
//! A session of this transport is a normal session: `initialize`, posted to the endpoint that
//! `GET /sse` announced, creates it under the id that endpoint carries. Answers to requests are
//! appended to the session's standalone stream by whichever replica ran the request, so they
//! reach the client's stream wherever it is open, or wait there for its reconnect.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Gateway, IdSigner, InitializeError, Outgoing};
use crate::auth::Principal;
use crate::events::{EventLogError, StreamKey};
use crate::limits::LimitExceeded;
use crate::protocol::jsonrpc::Request;
use crate::session::{SessionId, StoreError};

/// Bytes of HMAC-SHA256 an event id keeps: 128 bits.
const MAC_BYTES: usize = 16;

/// Names the events of one principal's streams: `<session>.<seq>.<mac>`, where the MAC binds
/// session and position to the principal's owner tag. An id of another principal's session,
/// or one not issued by a replica with the fleet's key, does not verify.
#[derive(Clone)]
pub struct SseEventIds {
    signer: IdSigner,
    owner: String,
}

impl SseEventIds {
    /// The id of event `seq` of `session`'s stream.
    pub fn name(&self, session: &SessionId, seq: u64) -> String {
        let mac = self.signer.sse_event_mac(&self.owner, session, seq);
        format!(
            "{}.{seq}.{}",
            session.as_str(),
            URL_SAFE_NO_PAD.encode(&mac[..MAC_BYTES])
        )
    }

    /// The session and position an id names, if it is one of this principal's ids.
    pub fn verify(&self, text: &str) -> Option<(SessionId, u64)> {
        let mut parts = text.rsplitn(3, '.');
        let (mac, seq, session) = (parts.next()?, parts.next()?, parts.next()?);
        let session = SessionId::parse(session)?;
        let seq = seq.parse().ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = self.signer.sse_event_mac(&self.owner, &session, seq);
        let genuine = mac.len() == MAC_BYTES
            && subtle::ConstantTimeEq::ct_eq(&expected[..MAC_BYTES], mac.as_slice()).into();
        genuine.then_some((session, seq))
    }
}

/// Why a posted `initialize` got no answer on its stream.
#[derive(Debug, thiserror::Error)]
pub enum SseInitializeError {
    /// No `GET /sse` announced this endpoint (or its stream is past its replay window).
    #[error("no SSE stream announced this endpoint")]
    NoStream,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    EventLog(#[from] EventLogError),
}

impl Gateway {
    /// How `principal`'s SSE event ids are named and checked.
    pub fn sse_event_ids(&self, principal: &Principal) -> SseEventIds {
        SseEventIds {
            signer: self.signer.clone(),
            owner: self.signer.owner_tag(principal),
        }
    }

    /// Creates the session `id` that `GET /sse` announced, and appends the answer (result or
    /// error: invalid params, the principal's session limit, a session that exists already)
    /// to its stream. Only a store or event log failure is left to the caller.
    pub async fn initialize_sse_session(
        &self,
        id: &SessionId,
        request: &Request,
        principal: &Principal,
        max_metadata_bytes: usize,
    ) -> Result<(), SseInitializeError> {
        let key = StreamKey::standalone(id.clone());
        match self
            .events
            .read(&key, u64::MAX, std::time::Duration::ZERO)
            .await
        {
            Err(EventLogError::UnknownStream(_)) => return Err(SseInitializeError::NoStream),
            Err(error) => return Err(error.into()),
            Ok(_) => {}
        }
        let answer = if self.store.exists(id).await? {
            let message = "this session is initialized already";
            let code = rmcp::model::ErrorCode::INVALID_REQUEST;
            super::error_response(Some(&request.id), code, message)
        } else {
            match self
                .initialize_as(id.clone(), request, principal, max_metadata_bytes)
                .await
            {
                Ok(result) => crate::protocol::jsonrpc::result_value(&request.id, result),
                Err(InitializeError::Invalid(data)) => {
                    super::response_value(&request.id, Err(data))
                }
                Err(InitializeError::Limited(limit)) => {
                    super::error_response(Some(&request.id), LimitExceeded::CODE, limit.to_string())
                }
                Err(InitializeError::Store(error)) => return Err(error.into()),
            }
        };
        self.events.append(&key, answer.to_string()).await?;
        Ok(())
    }

    /// Appends one message for `session`'s client to its stream.
    pub async fn post_to_sse_stream(
        &self,
        session: &SessionId,
        message: &Value,
    ) -> Result<(), EventLogError> {
        self.events
            .append(&StreamKey::standalone(session.clone()), message.to_string())
            .await
            .map(drop)
    }

    /// Appends what a request sends its client (its response last) to `session`'s stream, as
    /// it comes. Pauses and upstream positions have no place on this stream.
    pub async fn answer_on_sse_stream(
        self: Arc<Self>,
        session: SessionId,
        mut outgoing: mpsc::Receiver<Outgoing>,
    ) {
        let key = StreamKey::standalone(session);
        while let Some(next) = outgoing.recv().await {
            let Outgoing::Message(message) = next else {
                continue;
            };
            if let Err(error) = self.events.append(&key, message.to_string()).await {
                tracing::warn!(%error, "could not append an answer to an SSE stream");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;

    fn ids(signer: &IdSigner, principal: &Principal) -> SseEventIds {
        SseEventIds {
            signer: signer.clone(),
            owner: signer.owner_tag(principal),
        }
    }

    #[test]
    fn event_ids_name_session_and_position_for_their_principal_only() {
        let signer = IdSigner::new(b"fleet key");
        let alice = ids(&signer, &Principal::new("alice", None));
        let session = SessionId::generate();
        let id = alice.name(&session, 42);
        assert_eq!(alice.verify(&id), Some((session.clone(), 42)));
        let other_replica = ids(&IdSigner::new(b"fleet key"), &Principal::new("alice", None));
        assert_eq!(other_replica.verify(&id), Some((session.clone(), 42)));
        let bob = ids(&signer, &Principal::new("bob", None));
        assert_eq!(bob.verify(&id), None, "another principal's id");
        let other_fleet = ids(&IdSigner::new(b"other key"), &Principal::new("alice", None));
        assert_eq!(other_fleet.verify(&id), None, "another fleet's id");
        let moved = id.replacen(".42.", ".41.", 1);
        assert_eq!(alice.verify(&moved), None, "a forged position");
        let elsewhere = format!(
            "{}{}",
            SessionId::generate().as_str(),
            &id[session.as_str().len()..]
        );
        assert_eq!(alice.verify(&elsewhere), None, "a forged session");
        for garbage in ["", "get-7", "a.b.c", &format!("{}.7", session.as_str())] {
            assert_eq!(alice.verify(garbage), None, "{garbage}");
        }
    }
}
