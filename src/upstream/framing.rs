//! Upstream messages of at most `max_message_bytes`, bounded as they arrive.
//!
//! A stdio child's stdout is newline-delimited ([`BoundedLines`]). A longer line is never
//! buffered whole: it is discarded as it arrives, and [`Envelope`] keeps just enough of it (its
//! top-level `id`, whether it has a top-level `method`) to fail the request it answered. No JSON
//! crate reads a stream with memory bounded this way (they keep every string or key they meet),
//! hence the small scanner below.
//!
//! An HTTP upstream's SSE body is counted event by event ([`EventBound`]) before `sse-stream`,
//! which gathers each event whole, sees it.

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::codec::Decoder;

use super::http_client::Response;
use crate::protocol::jsonrpc::{Message, RequestId};

/// Longest top-level key the scanner remembers (`method`).
const MAX_KEY: usize = 6;
/// Longest raw `id` value the scanner keeps.
const MAX_ID: usize = 256;

/// One message read from a child.
#[derive(Debug)]
pub(super) enum Frame {
    /// A line within the bound, without its newline.
    Line(BytesMut),
    /// A line over the bound, discarded as it arrived.
    Oversized(Oversized),
}

/// What is known of a discarded line.
#[derive(Debug)]
pub(super) struct Oversized {
    /// Its length, without the newline.
    pub bytes: usize,
    envelope: Envelope,
}

impl Oversized {
    /// The id of the request this line answered, when it was a response whose id came through.
    pub fn answered(&self) -> Option<RequestId> {
        self.envelope.response_id()
    }
}

/// A [`Decoder`] of newline-delimited lines of at most `max` bytes.
pub(super) struct BoundedLines {
    max: usize,
    /// How much of the buffer was already searched for a newline.
    searched: usize,
    /// The oversized line being discarded, when there is one.
    discarding: Option<Oversized>,
}

impl BoundedLines {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            searched: 0,
            discarding: None,
        }
    }

    /// Scans and drops what `buf` holds of the oversized line; the line when it ended.
    fn discard(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let discarding = self.discarding.as_mut()?;
        let end = newline(buf);
        let taken = end.unwrap_or(buf.len());
        discarding.envelope.scan(&buf[..taken]);
        discarding.bytes += taken;
        buf.advance(taken + usize::from(end.is_some()));
        end?;
        self.discarding.take().map(Frame::Oversized)
    }
}

impl Decoder for BoundedLines {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Frame>> {
        if self.discarding.is_some() {
            return Ok(self.discard(buf));
        }
        let end = newline(&buf[self.searched..]).map(|at| self.searched + at);
        match end {
            Some(end) if end <= self.max => {
                self.searched = 0;
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                Ok(Some(Frame::Line(line)))
            }
            None if buf.len() <= self.max => {
                self.searched = buf.len();
                Ok(None)
            }
            _ => {
                self.searched = 0;
                self.discarding = Some(Oversized {
                    bytes: 0,
                    envelope: Envelope::default(),
                });
                Ok(self.discard(buf))
            }
        }
    }
}

fn newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

/// Why an upstream's body could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("a message is over max_message_bytes")]
    TooLarge,
    #[error("cannot read the body: {0}")]
    Body(String),
}

/// The SSE events of an HTTP body, failing with [`ReadError::TooLarge`] inside one over `max`
/// bytes, before it is gathered.
pub(super) fn bounded_events(
    response: Response,
    max: usize,
) -> impl Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Unpin + Send + use<> {
    let mut bound = EventBound::new(max);
    let bytes = response.into_body().into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| ReadError::Body(e.to_string()))?;
        if bound.fits(&chunk) {
            Ok(chunk)
        } else {
            Err(ReadError::TooLarge)
        }
    });
    sse_stream::SseStream::from_bytes_stream(bytes)
}

/// One SSE event's data as a JSON-RPC message from `upstream`; `None` (logged) for anything
/// else.
pub(super) fn event_message(upstream: &str, data: &str) -> Option<Message> {
    Message::from_json(data.as_bytes())
        .inspect_err(|reason| tracing::warn!(%upstream, %reason, "ignoring a malformed SSE event"))
        .ok()
}

/// Whether an SSE stream failed on an event over `max_message_bytes`.
pub(super) fn is_too_large(error: &sse_stream::Error) -> bool {
    let sse_stream::Error::Body(inner) = error else {
        return false;
    };
    matches!(inner.downcast_ref(), Some(ReadError::TooLarge))
}

/// Counts the bytes of the SSE event being received (its lines, without line ends).
pub(super) struct EventBound {
    max: usize,
    event: usize,
    line_empty: bool,
    after_cr: bool,
}

impl EventBound {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            event: 0,
            line_empty: true,
            after_cr: false,
        }
    }

    /// Accounts for the next piece of the body; `false` once the event exceeds the bound.
    pub fn fits(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    if self.line_empty {
                        self.event = 0;
                    }
                    self.line_empty = true;
                }
                _ => {
                    self.line_empty = false;
                    self.event += 1;
                }
            }
        }
        self.event <= self.max
    }
}

/// The raw top-level `id` of a message, as it is read.
#[derive(Debug, Default)]
enum Capture {
    #[default]
    Idle,
    Reading(Vec<u8>),
    Done(Vec<u8>),
    /// Longer than [`MAX_ID`]: not an id of ours.
    TooLong,
}

/// The top-level structure of a JSON object read in pieces, keeping only a few bytes.
#[derive(Debug, Default)]
struct Envelope {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The string being read is a top-level key.
    in_key: bool,
    /// At depth 1, the next string is a key.
    expect_key: bool,
    /// The last top-level key, `None` when longer than [`MAX_KEY`].
    key: Option<Vec<u8>>,
    id: Capture,
    has_method: bool,
}

impl Envelope {
    /// Reads the next piece of the message.
    fn scan(&mut self, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            if self.in_plain_string() {
                match bytes[at..].iter().position(|b| matches!(b, b'"' | b'\\')) {
                    Some(skip) => at += skip,
                    None => return,
                }
            }
            self.byte(bytes[at]);
            at += 1;
        }
    }

    /// Inside a string that nothing needs: only its end matters.
    fn in_plain_string(&self) -> bool {
        self.in_string && !self.escaped && !self.in_key && !matches!(self.id, Capture::Reading(_))
    }

    fn byte(&mut self, byte: u8) {
        self.capture(byte);
        if self.in_string {
            self.string_byte(byte);
        } else {
            self.structural_byte(byte);
        }
    }

    /// Adds a byte to the `id` being read, or ends it at the next top-level `,` or `}`.
    fn capture(&mut self, byte: u8) {
        let Capture::Reading(raw) = &mut self.id else {
            return;
        };
        if !self.in_string && self.depth == 1 && matches!(byte, b',' | b'}') {
            self.id = Capture::Done(std::mem::take(raw));
        } else if raw.len() < MAX_ID {
            raw.push(byte);
        } else {
            self.id = Capture::TooLong;
        }
    }

    fn string_byte(&mut self, byte: u8) {
        if self.escaped {
            self.escaped = false;
        } else if byte == b'\\' {
            self.escaped = true;
        } else if byte == b'"' {
            self.in_string = false;
            self.in_key = false;
            return;
        }
        if self.in_key {
            self.key = self
                .key
                .take()
                .filter(|key| key.len() < MAX_KEY)
                .map(|mut key| {
                    key.push(byte);
                    key
                });
        }
    }

    fn structural_byte(&mut self, byte: u8) {
        match byte {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_key {
                    self.in_key = true;
                    self.key = Some(Vec::new());
                }
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth == 1 {
                    self.expect_key = byte == b'{';
                }
            }
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            b':' if self.depth == 1 => self.key_done(),
            b',' if self.depth == 1 => self.expect_key = true,
            _ => {}
        }
    }

    /// A top-level key was read; its value follows.
    fn key_done(&mut self) {
        self.expect_key = false;
        match self.key.as_deref() {
            Some(b"id") if matches!(self.id, Capture::Idle) => {
                self.id = Capture::Reading(Vec::new())
            }
            Some(b"method") => self.has_method = true,
            _ => {}
        }
    }

    /// The top-level `id` of a message without a `method` (a response).
    fn response_id(&self) -> Option<RequestId> {
        let Capture::Done(raw) = &self.id else {
            return None;
        };
        if self.has_method {
            return None;
        }
        let value: Value = serde_json::from_slice(raw).ok()?;
        RequestId::from_value(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to a decoder of lines of at most `max` bytes, in pieces of `piece` bytes.
    fn frames(max: usize, input: &[u8], piece: usize) -> Vec<Frame> {
        let mut decoder = BoundedLines::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            buf.extend_from_slice(chunk);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                out.push(frame);
            }
            assert!(buf.len() <= max + piece, "buffered {} bytes", buf.len());
        }
        out
    }

    #[test]
    fn sse_events_are_counted_one_by_one_whatever_the_line_ends() {
        let mut bound = EventBound::new(10);
        assert!(bound.fits(b"data: 1234\n\ndata: 1234\r\n\r\ndata: 1234\r\r"));
        assert!(bound.fits(b"data: 1234\r"));
        assert!(
            bound.fits(b"\n\r\ndata: 1234\n"),
            "a CR LF split across pieces is one line end"
        );
        assert!(!bound.fits(b"data: x\n"), "two lines of one event add up");
    }

    fn answered(line: &str) -> Option<RequestId> {
        let mut envelope = Envelope::default();
        envelope.scan(line.as_bytes());
        envelope.response_id()
    }

    #[test]
    fn lines_within_the_bound_pass_and_longer_ones_are_discarded_as_they_come() {
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":7,"result":{{"text":"{}"}}}}"#,
            "x".repeat(1000)
        );
        let input = format!("{{\"a\":1}}\n{big}\n{{\"b\":2}}\n");
        for piece in [1, 7, 64, 4096] {
            let frames = frames(100, input.as_bytes(), piece);
            assert_eq!(frames.len(), 3, "piece {piece}");
            assert!(matches!(&frames[0], Frame::Line(l) if &l[..] == b"{\"a\":1}"));
            let Frame::Oversized(oversized) = &frames[1] else {
                panic!("expected the long line to be discarded")
            };
            assert_eq!(oversized.bytes, big.len());
            assert_eq!(oversized.answered(), Some(RequestId::Number(7)));
            assert!(matches!(&frames[2], Frame::Line(l) if &l[..] == b"{\"b\":2}"));
        }
    }

    #[test]
    fn only_a_top_level_id_of_a_response_counts() {
        let nested = r#"{"result":{"id":3,"s":"\"id\":4"},"id":"abc"}"#;
        assert_eq!(answered(nested), Some(RequestId::String("abc".into())));
        assert_eq!(
            answered(r#"{"result":{"id":3}, "id" : 12 }"#),
            Some(RequestId::Number(12))
        );
        assert_eq!(
            answered(r#"{"id":5,"method":"sampling/createMessage"}"#),
            None
        );
        assert_eq!(answered(r#"{"method":"notifications/message"}"#), None);
        assert_eq!(answered(r#"{"result":"no id"}"#), None);
        assert_eq!(
            answered(r#"{"id":5,"result":"cut off"#),
            Some(RequestId::Number(5))
        );
        assert_eq!(answered(r#"{"id":"cut off"#), None);
        let long_id = format!(r#"{{"id":"{}","result":1}}"#, "9".repeat(1000));
        assert_eq!(answered(&long_id), None);
    }
}
