//! Pagination across upstreams: one opaque cursor holds each upstream's own cursor.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Which upstreams still have pages, and the cursor each gave us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListCursor {
    pub pending: BTreeMap<String, String>,
}

impl ListCursor {
    /// Encodes for the client; `None` when every upstream is exhausted.
    pub fn encode(&self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let json = serde_json::to_vec(&self.pending).ok()?;
        Some(URL_SAFE_NO_PAD.encode(json))
    }

    /// Decodes a client's cursor; `None` for anything we did not issue.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let pending: BTreeMap<String, String> = serde_json::from_slice(&bytes).ok()?;
        (!pending.is_empty()).then_some(ListCursor { pending })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_cursors() {
        let mut cursor = ListCursor::default();
        assert_eq!(cursor.encode(), None);
        cursor.pending.insert("remote".into(), "page-2".into());
        let text = cursor.encode().unwrap();
        assert_eq!(ListCursor::decode(&text), Some(cursor));
        assert_eq!(ListCursor::decode("not a cursor"), None);
        assert_eq!(ListCursor::decode(&URL_SAFE_NO_PAD.encode("{}")), None);
    }
}
