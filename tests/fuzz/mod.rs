//! Parts of the request fuzzer (`tests/fuzz_requests.rs`): raw requests with placeholders,
//! the seed corpus in `tests/fuzz/corpus/`, the generators ([`generate`], [`json`]), the
//! answer reader ([`answer`]) and the checks ([`sent`], [`check`]).

pub mod answer;
pub mod check;
pub mod generate;
pub mod json;
pub mod sent;

use std::fmt;
use std::path::Path;

/// Stands for the gateway's `127.0.0.1:PORT` in a request.
pub const HOST: &str = "{{HOST}}";
/// Stands for the id of the live 2025-11-25 session.
pub const SESSION: &str = "{{SESSION}}";
/// Stands for the id of the live 2025-03-26 session, the revision with JSON-RPC batches.
pub const BATCH_SESSION: &str = "{{BATCH_SESSION}}";

/// Where the seed corpus lives: one raw HTTP request per `*.http` file.
pub const CORPUS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/corpus");

/// One request exactly as it goes on the wire, but for the placeholders.
#[derive(Clone)]
pub struct RawRequest {
    pub bytes: Vec<u8>,
}

impl RawRequest {
    /// The bytes with every `(placeholder, value)` substituted.
    pub fn render(&self, values: &[(&str, &str)]) -> Vec<u8> {
        values
            .iter()
            .fold(self.bytes.clone(), |bytes, (placeholder, value)| {
                replace(&bytes, placeholder.as_bytes(), value.as_bytes())
            })
    }

    /// Whether the request names `placeholder` anywhere.
    pub fn mentions(&self, placeholder: &str) -> bool {
        find(&self.bytes, placeholder.as_bytes()).is_some()
    }
}

impl fmt::Debug for RawRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes: {}", self.bytes.len(), escape(&self.bytes))
    }
}

/// Every occurrence of `from` in `bytes` replaced by `to`.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = find(rest, from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes as printable text (Rust escapes), at most 3 KiB of it: the start and the end.
pub fn escape(bytes: &[u8]) -> String {
    const SHOWN: usize = 3 * 1024;
    let text = |b: &[u8]| b.escape_ascii().to_string();
    if bytes.len() <= SHOWN {
        return text(bytes);
    }
    let head = text(&bytes[..SHOWN - 512]);
    let tail = text(&bytes[bytes.len() - 512..]);
    format!("{head}… ({} bytes left out) …{tail}", bytes.len() - SHOWN)
}

/// The seed corpus, by file name, in name order.
pub fn corpus() -> Vec<(String, RawRequest)> {
    let mut seeds: Vec<(String, RawRequest)> = std::fs::read_dir(CORPUS_DIR)
        .unwrap_or_else(|e| panic!("cannot read {CORPUS_DIR}: {e}"))
        .map(|entry| entry.expect("cannot list the corpus").path())
        .filter(|path| path.extension().is_some_and(|e| e == "http"))
        .map(|path| (file_name(&path), read_seed(&path)))
        .collect();
    seeds.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!seeds.is_empty(), "no *.http seeds in {CORPUS_DIR}");
    seeds
}

/// The last part of `path`.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One seed file, as is.
fn read_seed(path: &Path) -> RawRequest {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    RawRequest { bytes }
}
