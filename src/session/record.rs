//! The session record: everything needed to serve a session from a cold replica.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::ProtocolVersion;

/// Bumped when the record layout changes; readers accept every version up to their own.
pub const RECORD_SCHEMA: u32 = 1;

/// One session, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub schema: u32,
    /// Negotiated protocol revision, e.g. "2025-11-25".
    pub protocol_version: String,
    /// The client's `clientInfo` and `capabilities` from `initialize`, replayed to upstreams
    /// that must be (re-)initialized on the client's behalf.
    pub client_info: Value,
    pub client_capabilities: Value,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; the session ends here however busy it is.
    pub expires_at: u64,
    /// Per-upstream state, by upstream name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSession>,
    /// Level requested with `logging/setLevel`.
    #[serde(default)]
    pub log_level: Option<String>,
    /// Resource URIs the client subscribed to, with the upstream serving each.
    #[serde(default)]
    pub subscriptions: BTreeMap<String, String>,
}

/// What an upstream issued for this session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpstreamSession {
    /// The upstream's `Mcp-Session-Id`, for HTTP upstreams that issue one.
    pub session_id: Option<String>,
    /// The revision the upstream negotiated.
    pub protocol_version: Option<String>,
}

impl SessionRecord {
    /// A fresh record for a client that just initialized.
    pub fn new(
        version: ProtocolVersion,
        client_info: Value,
        client_capabilities: Value,
        max_lifetime: Duration,
    ) -> Self {
        let now = unix_now();
        Self {
            schema: RECORD_SCHEMA,
            protocol_version: version.as_str().to_owned(),
            client_info,
            client_capabilities,
            created_at: now,
            expires_at: now.saturating_add(max_lifetime.as_secs()),
            upstreams: BTreeMap::new(),
            log_level: None,
            subscriptions: BTreeMap::new(),
        }
    }

    /// The negotiated revision; records always hold one we wrote.
    pub fn version(&self) -> ProtocolVersion {
        ProtocolVersion::parse(&self.protocol_version).unwrap_or(ProtocolVersion::LATEST)
    }

    /// Time left before the absolute cap.
    pub fn remaining_lifetime(&self) -> Duration {
        Duration::from_secs(self.expires_at.saturating_sub(unix_now()))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
