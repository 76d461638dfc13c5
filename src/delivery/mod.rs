//! Delivery: every SSE stream mcpgate writes to a client, as a stream of byte chunks that
//! `http/` turns into a response (nothing here knows about actix-web).
//!
//! - [`tail`]: a session's event-log stream read out as SSE, for POST responses, the GET
//!   standalone stream and resumptions (`Last-Event-ID`) alike: event ids, pauses, keep-alives,
//!   the drain hint, outages of the event log.
//! - [`standalone`]: opening a session's standalone stream (`GET /mcp`, and `GET /sse` of the
//!   HTTP+SSE transport, whose stream carries everything, answers included).
//! - [`request_scoped`]: a modern (2026-07-28) request's own stream, from the request's
//!   channel: no event ids, no resumption, ends with the response.
//!
//! What *writes* the event log stays with the request that produces the messages
//! (`dispatch/response_stream.rs` for a POST's stream and its takeover, `dispatch/unsolicited.rs`
//! for the standalone stream): deciding what goes into a stream is part of running a request,
//! while delivery only decides how what is there reaches the client.

pub mod request_scoped;
pub mod standalone;
pub mod tail;

use std::time::Duration;

use bytes::Bytes;

/// How long a stream stays silent before a keep-alive comment (and, for a session's stream, a
/// check that the session still exists).
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// The keep-alive comment.
fn keep_alive() -> Bytes {
    Bytes::from_static(b": keep-alive\n\n")
}
