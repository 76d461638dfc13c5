//! A stdio child's stderr, relayed into the gateway's log line by line under its upstream's
//! name, so that its output is told apart from the gateway's. Bounded: a line is cut at
//! [`MAX_LINE_BYTES`], and at most [`LINES_PER_SECOND`] lines a second are logged (the others
//! are counted and the count logged with the next line that passes), so a child can flood
//! neither the log nor the gateway's memory.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::ChildStderr;

/// Longest part of one stderr line that is logged.
pub const MAX_LINE_BYTES: usize = 4096;
/// Most stderr lines of one child logged per second.
pub const LINES_PER_SECOND: u32 = 100;

/// Logs `stderr` until the child closes it.
pub(super) fn relay(upstream: String, stderr: ChildStderr) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr);
        let rate = DefaultDirectRateLimiter::direct(Quota::per_second(
            NonZeroU32::new(LINES_PER_SECOND).expect("not zero"),
        ));
        let mut dropped = 0u64;
        let mut line = Vec::new();
        while read_line(&mut reader, &mut line).await {
            if rate.check().is_err() {
                dropped += 1;
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            tracing::info!(upstream = %upstream, dropped_before = dropped, line = ?text.trim_end(), "stdio upstream stderr");
            dropped = 0;
        }
    });
}

/// Reads the next line into `line`, keeping at most [`MAX_LINE_BYTES`] of it; `false` at the
/// end of the stream.
async fn read_line(reader: &mut BufReader<ChildStderr>, line: &mut Vec<u8>) -> bool {
    line.clear();
    loop {
        let Ok(buffer) = reader.fill_buf().await else {
            return false;
        };
        if buffer.is_empty() {
            return !line.is_empty();
        }
        let (piece, ends) = match buffer.iter().position(|b| *b == b'\n') {
            Some(at) => (&buffer[..=at], true),
            None => (buffer, false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&piece[..piece.len().min(room)]);
        let used = piece.len();
        reader.consume(used);
        if ends {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    #[tokio::test]
    async fn long_lines_are_cut_and_the_next_line_is_whole() {
        let mut child = tokio::process::Command::new("sh")
            .args([
                "-c",
                "head -c 10000 /dev/zero | tr '\\0' x >&2; echo >&2; echo second >&2",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let mut reader = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = Vec::new();
        assert!(read_line(&mut reader, &mut line).await);
        assert_eq!(line.len(), MAX_LINE_BYTES);
        assert!(read_line(&mut reader, &mut line).await);
        assert_eq!(line, b"second\n");
        assert!(!read_line(&mut reader, &mut line).await);
    }
}
