//! Sending one raw request and reading its answer: a well-formed HTTP/1.1 response (status
//! line, CRLF headers, a body framed by Content-Length or chunks, or by the connection's end),
//! within [`ANSWER_TIMEOUT`]. An event stream's head is enough.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::sent::Sent;
use super::{escape, find};

/// Longest wait for an answer (its head only, for an SSE stream).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A response as read from the socket.
pub struct Answer {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Empty for an event stream, whose body is not read.
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name` as text (lossy), or "".
    fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    /// Whether the answer is an SSE stream.
    pub(super) fn is_event_stream(&self) -> bool {
        self.header("content-type").starts_with("text/event-stream")
    }

    /// Whether the answer says its body is JSON.
    pub(super) fn is_json(&self) -> bool {
        self.header("content-type").starts_with("application/json")
    }

    /// Status, headers and body, for failure messages.
    pub fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", escape(v)))
            .collect();
        format!(
            "{} [{}] {}",
            self.status,
            headers.join("; "),
            escape(&self.body)
        )
    }
}

/// Writes `request` while reading the answer (the gateway may answer before reading it all),
/// and returns as soon as the answer is whole; `None` when the connection closed without a
/// final answer (after nothing, or after interim 1xx answers only).
pub async fn exchange(
    authority: &str,
    request: Vec<u8>,
    sent: &Sent,
) -> Result<Option<Answer>, String> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        // The gateway may close before reading everything; what it answered counts.
        let _ = writer.write_all(&request).await;
        writer
    });
    let answer = read_answer(&mut reader, sent).await;
    writing.abort();
    answer
}

/// Reads until [`parse`] has a whole answer, or the connection ends.
async fn read_answer(
    reader: &mut (impl AsyncReadExt + Unpin),
    sent: &Sent,
) -> Result<Option<Answer>, String> {
    let mut bytes = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = reader.read(&mut buffer).await;
        let n = read.as_ref().copied().unwrap_or(0);
        bytes.extend_from_slice(&buffer[..n]);
        let eof = n == 0;
        let progress = parse(&bytes, sent, eof).map_err(|e| match &read {
            Err(io) => format!("{e} (read error: {io})"),
            Ok(_) => e,
        })?;
        match progress {
            Progress::More => {}
            Progress::Answered(answer) => return Ok(Some(answer)),
            Progress::Unanswered => return Ok(None),
        }
    }
}

/// What the bytes read so far hold.
enum Progress {
    /// Not yet a whole answer; more bytes will come.
    More,
    Answered(Answer),
    /// The connection ended without a final answer.
    Unanswered,
}

/// The answer in `bytes`; interim 1xx answers (`100 Continue`) are skipped.
fn parse(bytes: &[u8], sent: &Sent, eof: bool) -> Result<Progress, String> {
    let mut rest = bytes;
    loop {
        if eof && rest.is_empty() {
            return Ok(Progress::Unanswered);
        }
        let Some((answer, body_start)) = parse_head(rest, sent, eof)? else {
            return Ok(Progress::More);
        };
        match answer.status {
            101 => {
                return Err("101 Switching Protocols: the gateway speaks no other protocol".into());
            }
            100..=199 => rest = &rest[body_start..],
            _ => {
                let answer = frame_body(answer, &rest[body_start..], sent.is_head(), eof)?;
                return Ok(answer.map_or(Progress::More, Progress::Answered));
            }
        }
    }
}

/// Status line and headers; the answer comes back with an empty body.
fn parse_head(bytes: &[u8], sent: &Sent, eof: bool) -> Result<Option<(Answer, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if !eof => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err(format!("the answer's head ends early: {}", escape(bytes)));
        }
        Err(e) => return Err(format!("malformed answer head ({e}): {}", escape(bytes))),
    };
    let head = &bytes[..length];
    let version_ok = response
        .version
        .is_some_and(|v| sent.answer_minor_versions().contains(&v));
    if !version_ok
        || head.windows(2).filter(|w| w == b"\r\n").count()
            != head.iter().filter(|b| **b == b'\n').count()
    {
        return Err(format!(
            "not an HTTP/1.x head (as asked) with CRLF lines: {}",
            escape(head)
        ));
    }
    let answer = Answer {
        status: response.code.unwrap_or_default(),
        headers: response
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect(),
        body: Vec::new(),
    };
    Ok(Some((answer, length)))
}

/// Reads the body as the head frames it; an event stream's body is not read.
fn frame_body(
    mut answer: Answer,
    rest: &[u8],
    head: bool,
    eof: bool,
) -> Result<Option<Answer>, String> {
    if head || matches!(answer.status, 204 | 304) || answer.is_event_stream() {
        return Ok(Some(answer));
    }
    let lengths: Vec<String> = answer
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    let chunked = answer
        .header("transfer-encoding")
        .eq_ignore_ascii_case("chunked");
    let body = match (chunked, lengths.as_slice()) {
        (true, []) => dechunk(rest, eof)?,
        (false, [length]) => {
            let length: usize = length
                .parse()
                .map_err(|_| format!("Content-Length {length:?} is not a number"))?;
            sized(rest, length, eof)?
        }
        (false, []) if eof => Some(rest.to_vec()),
        (false, []) => None,
        _ => return Err(format!("conflicting body framing: {}", answer.describe())),
    };
    Ok(body.map(|body| {
        answer.body = body;
        answer
    }))
}

/// The first `length` bytes of `rest`, once they are there.
fn sized(rest: &[u8], length: usize, eof: bool) -> Result<Option<Vec<u8>>, String> {
    if rest.len() >= length {
        Ok(Some(rest[..length].to_vec()))
    } else if eof {
        Err(format!(
            "the connection closed after {} of {length} body bytes",
            rest.len()
        ))
    } else {
        Ok(None)
    }
}

/// A chunked body, strictly: hex sizes, CRLF after every chunk, a last chunk and a final CRLF.
fn dechunk(mut rest: &[u8], eof: bool) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return incomplete(eof);
        };
        let size_line = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size line {size_line:?}"))?;
        let data = line_end + 2;
        if size == 0 {
            return last_chunk(&rest[line_end..], body, eof);
        }
        if rest.len() < data + size + 2 {
            return incomplete(eof);
        }
        if &rest[data + size..data + size + 2] != b"\r\n" {
            return Err(format!("chunk of {size} bytes not followed by CRLF"));
        }
        body.extend_from_slice(&rest[data..data + size]);
        rest = &rest[data + size + 2..];
    }
}

/// After the last chunk's size line: trailer lines, if any, then a blank line.
fn last_chunk(rest: &[u8], body: Vec<u8>, eof: bool) -> Result<Option<Vec<u8>>, String> {
    match find(rest, b"\r\n\r\n") {
        Some(_) => Ok(Some(body)),
        None => incomplete(eof),
    }
}

/// More bytes are needed, unless none will come.
fn incomplete(eof: bool) -> Result<Option<Vec<u8>>, String> {
    if eof {
        Err("the connection closed inside a chunked body".into())
    } else {
        Ok(None)
    }
}
