//! Helpers for the hostile-client tests (`hostile_clients.rs`, `under_attack.rs`): the defaults
//! they rely on, the requests they send, slow connections that trickle a request in one byte a
//! second, and the replica's resident memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ACCEPT_BOTH, LATEST};

/// The defaults the tests rely on (README, "Limits worth knowing").
pub const BATCH_LIMIT: usize = 64;
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Slack on every timing bound, for a loaded 2-core machine running a debug build.
pub const SLACK: Duration = Duration::from_secs(3);

/// An `initialize` whose `clientInfo` carries `padding` bytes of description.
pub fn initialize_body(id: i64, padding: usize) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": LATEST,
            "capabilities": {},
            "clientInfo": {"name": "hostile", "version": "0", "description": "x".repeat(padding)}
        }
    })
    .to_string()
}

/// The text [`echo_call`] asks `local__echo` to return.
pub const ECHO_TEXT: &str = "echoed";

/// A tools/call of `local__echo` with [`ECHO_TEXT`].
pub fn echo_call(id: usize) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "local__echo", "arguments": {"text": ECHO_TEXT}}})
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("no /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("no VmRSS line")
}

/// Samples a process's `VmRSS` every 50 ms until dropped, keeping the largest value.
pub struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssPeak {
    /// Starts sampling `pid` in a task of its own.
    pub fn start(pid: u32) -> RssPeak {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssPeak { peak, stop }
    }

    /// The largest `VmRSS` seen so far, in KiB.
    pub fn kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How one slow connection ended.
pub struct Ending {
    pub after: Duration,
    /// The status the gateway answered with, if any.
    pub status: Option<u16>,
    /// The whole answer, as text.
    pub answer: String,
}

/// Opens a connection and sends `head`, the start of a request that will trickle in.
pub async fn open_slow(authority: &str, head: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(authority).await.expect("cannot connect");
    let _ = stream.write_all(head).await;
    stream
}

/// Sends one byte of `drip` per second until the gateway answers and closes, or until
/// `give_up` has passed since `opened`.
pub async fn trickle(
    mut stream: TcpStream,
    opened: Instant,
    drip: u8,
    give_up: Duration,
) -> Ending {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    while opened.elapsed() < give_up {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            },
            _ = ticks.tick() => if stream.write_all(&[drip]).await.is_err() { break },
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok());
    Ending {
        after: opened.elapsed(),
        status,
        answer,
    }
}

/// The head of a POST whose body of `length` bytes will trickle in, sent with `authorization`
/// when given.
pub fn slow_body_head(authority: &str, length: usize, authorization: Option<&str>) -> Vec<u8> {
    let authorization = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Accept: {ACCEPT_BOTH}\r\n{authorization}Content-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// Prints how `endings` of slow connections went; each must have been answered with `status`
/// and closed within `timeout` (plus [`SLACK`]).
pub fn assert_endings(what: &str, endings: &[Ending], timeout: Duration, status: u16) {
    let latest = endings.iter().map(|e| e.after).max().unwrap_or_default();
    let answered = endings.iter().filter(|e| e.status == Some(status)).count();
    println!(
        "{what}: {} connections, {answered} answered {status}, the last closed after {latest:?} \
         (timeout {timeout:?})",
        endings.len()
    );
    assert!(
        latest <= timeout + SLACK,
        "{what}: a connection was still open after {latest:?}"
    );
    if let Some(odd) = endings.iter().find(|e| e.status != Some(status)) {
        panic!(
            "{what}: {} of {} answered {status}; one got {:?}",
            answered,
            endings.len(),
            odd.answer
        );
    }
}
