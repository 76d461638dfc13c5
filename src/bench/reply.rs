//! Judging an answer: its status, then for a request the JSON-RPC response, either the JSON
//! body or the first response in an SSE stream (framed by `sse-stream`). A JSON-RPC `error`
//! is a [`Failure::JsonRpc`]. The body is read to its end when that is cheap, so that the
//! connection serves the next request.

use std::time::{Duration, Instant};

use futures::StreamExt;
use http_body_util::{BodyExt, Limited};
use hyper::Response;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use serde::Deserialize;
use serde::de::IgnoredAny;
use sse_stream::SseStream;

use super::client::{Failure, Kind};

/// The largest answer read.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long an SSE stream may stay open after its response before the connection is dropped.
const STREAM_END_GRACE: Duration = Duration::from_millis(50);

/// What an answer was.
pub struct Judged {
    pub result: Result<(), Failure>,
    /// When the JSON-RPC response (or the whole answer) was in.
    pub answered: Instant,
    /// Whether the body was read to its end (the connection can be used again).
    pub finished: bool,
}

impl Judged {
    fn now(result: Result<(), Failure>, finished: bool) -> Judged {
        Judged {
            result,
            answered: Instant::now(),
            finished,
        }
    }
}

/// The fields of a JSON-RPC message that tell a response, and its outcome.
#[derive(Deserialize)]
struct Message {
    method: Option<IgnoredAny>,
    result: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
}

impl Message {
    /// `None` for a message that is not a response (a notification or request in a stream).
    fn outcome(&self) -> Option<Result<(), Failure>> {
        match (&self.method, &self.result, &self.error) {
            (Some(_), _, _) => None,
            (None, _, Some(_)) => Some(Err(Failure::JsonRpc)),
            (None, Some(_), None) => Some(Ok(())),
            (None, None, None) => Some(Err(Failure::BadResponse)),
        }
    }
}

pub async fn judge(response: Response<Incoming>, kind: Kind) -> Judged {
    let status = response.status();
    let expects_response = matches!(kind, Kind::Initialize | Kind::Request);
    if !status.is_success() {
        return drained(response, Err(Failure::Http(status.as_u16()))).await;
    }
    if !expects_response {
        return drained(response, Ok(())).await;
    }
    if status.as_u16() == 202 {
        return drained(response, Err(Failure::BadResponse)).await;
    }
    let is_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    if is_stream {
        stream(response.into_body()).await
    } else {
        json(response.into_body()).await
    }
}

/// Reads the body and forgets it.
async fn drained(response: Response<Incoming>, result: Result<(), Failure>) -> Judged {
    let finished = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .is_ok();
    Judged::now(result, finished)
}

async fn json(body: Incoming) -> Judged {
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
        return Judged::now(Err(Failure::BadResponse), false);
    };
    let outcome = serde_json::from_slice::<Message>(&body.to_bytes())
        .ok()
        .and_then(|message| message.outcome());
    Judged::now(outcome.unwrap_or(Err(Failure::BadResponse)), true)
}

/// The first response in the stream; then the end of the stream, for a short while. The
/// stream's length is bounded by the request's timeout only.
async fn stream(body: Incoming) -> Judged {
    let mut events = SseStream::new(body);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(sse_stream::Error::Body(_)) => return Judged::now(Err(Failure::Connection), false),
            Err(_) => return Judged::now(Err(Failure::BadResponse), false),
        };
        let Some(data) = event.data.filter(|data| !data.is_empty()) else {
            continue;
        };
        let Ok(message) = serde_json::from_str::<Message>(&data) else {
            return Judged::now(Err(Failure::BadResponse), false);
        };
        if let Some(result) = message.outcome() {
            let answered = Instant::now();
            let rest = async { while events.next().await.is_some() {} };
            let finished = tokio::time::timeout(STREAM_END_GRACE, rest).await.is_ok();
            return Judged {
                result,
                answered,
                finished,
            };
        }
    }
    Judged::now(Err(Failure::BadResponse), true)
}
