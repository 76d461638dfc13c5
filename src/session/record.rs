//! The session record: everything needed to serve a session from a cold replica, and the
//! per-field changes ([`RecordChange`]) that replicas make to it concurrently.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::ProtocolVersion;

/// The record layout this build writes. Schema 1 was one JSON document per session (replaced
/// whole on every change); schema 2 keeps every independently changed part in its own field,
/// so concurrent changes never overwrite each other. Stores upgrade schema 1 records when they
/// read them and refuse records of a schema newer than this one.
pub const RECORD_SCHEMA: u32 = 2;

/// One session, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// Keyed hash of the principal (and team) that created the session; empty in records
    /// written before sessions had owners, which only the anonymous principal may use.
    #[serde(default)]
    pub owner: String,
    /// The owner's team, which selects the session's policy.
    #[serde(default)]
    pub team: Option<String>,
}

/// What an upstream issued for this session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpstreamSession {
    /// The upstream's `Mcp-Session-Id`, for HTTP upstreams that issue one.
    pub session_id: Option<String>,
    /// The revision the upstream negotiated.
    pub protocol_version: Option<String>,
}

impl UpstreamSession {
    /// What a modern request to an upstream goes with: no session, the modern revision.
    pub fn modern() -> Self {
        Self {
            session_id: None,
            protocol_version: Some(crate::protocol::era::MODERN_VERSIONS[0].to_owned()),
        }
    }

    /// Whether requests in this upstream session are modern ones.
    pub fn is_modern(&self) -> bool {
        self.protocol_version
            .as_deref()
            .is_some_and(|v| crate::protocol::era::MODERN_VERSIONS.contains(&v))
    }
}

/// The parts of a record fixed at `initialize`, stored together.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordCore {
    pub protocol_version: String,
    pub client_info: Value,
    pub client_capabilities: Value,
    pub created_at: u64,
    pub expires_at: u64,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub team: Option<String>,
}

/// One change to a live session's record. Stores apply each atomically and only to a record
/// that still exists, so changes made at the same time by different replicas all survive.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordChange {
    /// An upstream issued (or re-issued) its session for this one.
    Upstream {
        name: String,
        session: UpstreamSession,
    },
    /// The client asked for this log level.
    LogLevel(String),
    /// The client subscribed to `uri`, served by `upstream`.
    Subscribe { uri: String, upstream: String },
    /// The client unsubscribed from `uri`.
    Unsubscribe { uri: String },
}

impl RecordChange {
    /// Applies the change to an in-memory record.
    pub fn apply(&self, record: &mut SessionRecord) {
        match self {
            RecordChange::Upstream { name, session } => {
                record.upstreams.insert(name.clone(), session.clone());
            }
            RecordChange::LogLevel(level) => record.log_level = Some(level.clone()),
            RecordChange::Subscribe { uri, upstream } => {
                record.subscriptions.insert(uri.clone(), upstream.clone());
            }
            RecordChange::Unsubscribe { uri } => {
                record.subscriptions.remove(uri);
            }
        }
    }
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
            owner: String::new(),
            team: None,
        }
    }

    /// The same record, owned by the principal `owner` tags, of `team`.
    pub fn owned_by(self, owner: String, team: Option<String>) -> Self {
        Self {
            owner,
            team,
            ..self
        }
    }

    /// Rebuilds a record from its stored parts.
    pub fn from_parts(core: RecordCore) -> Self {
        Self {
            schema: RECORD_SCHEMA,
            protocol_version: core.protocol_version,
            client_info: core.client_info,
            client_capabilities: core.client_capabilities,
            created_at: core.created_at,
            expires_at: core.expires_at,
            upstreams: BTreeMap::new(),
            log_level: None,
            subscriptions: BTreeMap::new(),
            owner: core.owner,
            team: core.team,
        }
    }

    /// The parts fixed at `initialize`.
    pub fn core(&self) -> RecordCore {
        RecordCore {
            protocol_version: self.protocol_version.clone(),
            client_info: self.client_info.clone(),
            client_capabilities: self.client_capabilities.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            owner: self.owner.clone(),
            team: self.team.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_apply_field_by_field() {
        let mut record = SessionRecord::new(
            ProtocolVersion::LATEST,
            json!({}),
            json!({}),
            Duration::from_secs(60),
        );
        let subscribe = |uri: &str| RecordChange::Subscribe {
            uri: uri.into(),
            upstream: "files".into(),
        };
        subscribe("file:///a").apply(&mut record);
        subscribe("file:///b").apply(&mut record);
        RecordChange::LogLevel("debug".into()).apply(&mut record);
        RecordChange::Unsubscribe {
            uri: "file:///a".into(),
        }
        .apply(&mut record);
        assert_eq!(
            record.subscriptions.keys().collect::<Vec<_>>(),
            ["file:///b"]
        );
        assert_eq!(record.log_level.as_deref(), Some("debug"));
    }
}
