//! MCP protocol revisions this gateway speaks downstream, and the rules that depend on them.

use std::fmt;

/// A protocol revision negotiated with a client through `initialize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// The HTTP+SSE transport's revision: still what many legacy clients offer.
    V2024_11_05,
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
}

impl ProtocolVersion {
    /// The newest revision we implement; offered when a client asks for one we do not know.
    pub const LATEST: Self = ProtocolVersion::V2025_11_25;
    /// Assumed when a request carries no `MCP-Protocol-Version` header.
    pub const ASSUMED_WITHOUT_HEADER: Self = ProtocolVersion::V2025_03_26;
    /// Every revision we negotiate, newest first.
    pub const ALL: [Self; 4] = [
        Self::V2025_11_25,
        Self::V2025_06_18,
        Self::V2025_03_26,
        Self::V2024_11_05,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V2024_11_05 => "2024-11-05",
            ProtocolVersion::V2025_03_26 => "2025-03-26",
            ProtocolVersion::V2025_06_18 => "2025-06-18",
            ProtocolVersion::V2025_11_25 => "2025-11-25",
        }
    }

    /// Picks the revision to answer `initialize` with: the client's, if we speak it.
    pub fn negotiate(requested: &str) -> Self {
        Self::parse(requested).unwrap_or(Self::LATEST)
    }

    /// JSON-RPC batches exist up to 2025-03-26 (2025-06-18 removed them).
    pub fn allows_batches(self) -> bool {
        self <= ProtocolVersion::V2025_03_26
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_known_versions_and_falls_back_to_latest() {
        assert_eq!(
            ProtocolVersion::negotiate("2025-06-18"),
            ProtocolVersion::V2025_06_18
        );
        assert_eq!(
            ProtocolVersion::negotiate("2026-07-28"),
            ProtocolVersion::LATEST
        );
        assert!(ProtocolVersion::parse("garbage").is_none());
        assert_eq!(
            ProtocolVersion::negotiate("2024-11-05"),
            ProtocolVersion::V2024_11_05
        );
        assert!(ProtocolVersion::V2024_11_05.allows_batches());
        assert!(ProtocolVersion::V2025_03_26.allows_batches());
        assert!(!ProtocolVersion::V2025_11_25.allows_batches());
    }
}
