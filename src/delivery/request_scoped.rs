//! A modern (2026-07-28) request's own SSE stream: the messages of the request's channel in
//! order, a keep-alive comment after [`KEEPALIVE`] of silence, and the end with the response.
//! No event ids: the modern era has no resumption. Dropping the stream drops the channel,
//! which cancels the request.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use tokio::sync::mpsc;

use super::KEEPALIVE;
use crate::dispatch::{Gateway, Outgoing};
use crate::protocol::jsonrpc::is_response;

/// The SSE chunks of a request's stream, `first` (already taken from `outgoing`) first.
pub fn events(
    gateway: Arc<Gateway>,
    outgoing: mpsc::Receiver<Outgoing>,
    first: Value,
) -> impl Stream<Item = Bytes> {
    gateway.metrics().sse_streams_open.inc();
    let stream = ResponseStream {
        gateway,
        outgoing,
        first: Some(first),
        done: false,
    };
    futures::stream::unfold(stream, next_chunk)
}

/// A modern request's response stream, until its response.
struct ResponseStream {
    gateway: Arc<Gateway>,
    outgoing: mpsc::Receiver<Outgoing>,
    first: Option<Value>,
    done: bool,
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        self.gateway.metrics().sse_streams_open.dec();
    }
}

async fn next_chunk(mut stream: ResponseStream) -> Option<(Bytes, ResponseStream)> {
    if stream.done {
        return None;
    }
    let message = match stream.first.take() {
        Some(first) => first,
        None => match tokio::time::timeout(KEEPALIVE, next_message(&mut stream.outgoing)).await {
            Err(_) => return Some((super::keep_alive(), stream)),
            Ok(None) => return None,
            Ok(Some(message)) => message,
        },
    };
    stream.done = is_response(&message);
    let chunk = sse_stream::Sse::default()
        .event("message")
        .data(message.to_string())
        .into();
    Some((chunk, stream))
}

/// The next JSON-RPC message; stream positions and pauses concern resumable streams only.
pub async fn next_message(outgoing: &mut mpsc::Receiver<Outgoing>) -> Option<Value> {
    loop {
        if let Outgoing::Message(message) = outgoing.recv().await? {
            return Some(message);
        }
    }
}
