//! The one Redis key scheme: every key and channel name mcpgate uses is built here.
//!
//! The names are a wire format shared by every replica of a fleet, old and new alike during a
//! rolling upgrade: they must not change (the `pinned` test holds each one's exact text).
//! Each key carries a Redis Cluster hash tag `{…}`: a session's keys all have `{<sid>}`, so they
//! share one slot and the store's and event log's MULTI blocks and scripts never span slots; a
//! principal's have `{<principal key>}`, the keyed hash of the principal (base64url,
//! [`PrincipalKey`]). Nothing scans for keys: each has a TTL, and a session's event streams are
//! found through the set of their names.
//!
//! | key | type | TTL | written by |
//! |---|---|---|---|
//! | `mcpgate:{<sid>}:s` ([`session_record`]) | hash: the session record (`schema`, `core`, `kept`, `log`, `sub:<uri>`) | `min(idle_ttl, time left to the absolute cap)`, slid by every load | `session::RedisStore` |
//! | `mcpgate:{<sid>}:u` ([`session_upstreams`]) | hash: `<upstream>` → its upstream session (JSON) | `tombstone_ttl`, slid by a load that finds it due (the record's `kept`) | `session::RedisStore` |
//! | `mcpgate:{<sid>}:t` ([`session_tombstone`]) | string: `live`, `expired` or `deleted` | `tombstone_ttl` (2 × `idle_ttl`, at least `idle_ttl` + 1 min), slid with the upstream sessions | `session::RedisStore` |
//! | `mcpgate:{<sid>}:h:<upstream>` ([`holder_lease`]) | string: the replica holding the session's standalone stream of that upstream | the lease (30 s), renewed by its holder | `session::RedisStore::hold` for `dispatch::holder` |
//! | `mcpgate:{<sid>}:e:<stream>` ([`event_stream`]) | Redis Stream of one SSE stream's events (entry `<seq>-0`, field `d`) | `replay_window`, refreshed by every write to the stream | `events::RedisEventLog` |
//! | `mcpgate:{<sid>}:em:<stream>` ([`event_stream_meta`]) | hash: that stream's `seq`, `closed`, `delivered`, `rq`, `up:<upstream>` | as above | `events::RedisEventLog` |
//! | `mcpgate:{<sid>}:es` ([`event_stream_names`]) | set: the names of the session's streams | as above | `events::RedisEventLog` |
//! | `mcpgate:p:{<principal key>}:s` ([`principal_quota`]) | sorted set: the principal's live sessions, scored by deadline (ms) | follows the latest deadline | `limits::quota` |
//! | `mcpgate:p:{<principal key>}:r` ([`principal_rate`]) | string: the principal's GCRA theoretical arrival time | until that time | `limits::rate` |
//! | `mcpgate:readyz` ([`READINESS_PROBE`]) | never exists: `PEXPIRE` on it is the store's probe | — | nobody |
//!
//! And the pub/sub channels:
//!
//! | channel | carries | published by |
//! |---|---|---|
//! | `mcpgate:{<sid>}` ([`session_channel`]) | `e:<stream>`: the stream has new events or was closed; `m:<json>`: a client's answer or cancellation for the replica holding the exchange | `events::RedisEventLog` (in its scripts), `dispatch::bus` |
//! | `mcpgate:changes` ([`CHANGES_CHANNEL`]) | `<json>`: an upstream's list changed (or came back), for every replica's `subscriptions/listen` streams | `dispatch::bus` |
//! | `mcpgate:r:<replica>` ([`replica_channel`]) | `<json>`: a request only that replica can run (a stdio upstream's task), or the answer to one it asked another to run | `dispatch::bus` |
//! | `__keyevent@<db>__:expired` ([`expired_keys_channel`]) | names of expired keys; [`session_of_expired_key`] picks the records among them | Redis, with `notify-keyspace-events Ex` |

use crate::events::StreamKey;
use crate::limits::PrincipalKey;
use crate::session::SessionId;

/// The key `/readyz/store` expires to probe Redis; it never exists.
pub const READINESS_PROBE: &str = "mcpgate:readyz";

/// The fleet's channel of upstream list changes.
pub const CHANGES_CHANNEL: &str = "mcpgate:changes";

/// `mcpgate:r:<replica>`, the channel of requests only that replica can run, and of their
/// answers.
pub fn replica_channel(replica: &str) -> String {
    format!("mcpgate:r:{replica}")
}

/// `mcpgate:{<sid>}:<suffix>`, one of a session's keys. Concatenated rather than `format!`ted:
/// a session load builds three keys, and each `format!` cost about 1,100 instructions there.
fn session_key(session: &SessionId, suffix: &[&str]) -> String {
    let (head, id) = ("mcpgate:{", session.as_str());
    let length = head.len() + id.len() + 2 + suffix.iter().map(|part| part.len()).sum::<usize>();
    let mut key = String::with_capacity(length);
    key.push_str(head);
    key.push_str(id);
    key.push_str("}:");
    suffix.iter().for_each(|part| key.push_str(part));
    key
}

/// `mcpgate:{<sid>}:s`, the session record.
pub fn session_record(session: &SessionId) -> String {
    session_key(session, &["s"])
}

/// `mcpgate:{<sid>}:u`, the session's upstream sessions.
pub fn session_upstreams(session: &SessionId) -> String {
    session_key(session, &["u"])
}

/// `mcpgate:{<sid>}:t`, the session's tombstone.
pub fn session_tombstone(session: &SessionId) -> String {
    session_key(session, &["t"])
}

/// `mcpgate:{<sid>}:h:<upstream>`, the lease of the replica holding the session's standalone
/// stream of `upstream`.
pub fn holder_lease(session: &SessionId, upstream: &str) -> String {
    session_key(session, &["h:", upstream])
}

/// `mcpgate:{<sid>}:e:`, which a stream's name completes into its events key (the event log's
/// scripts do so for every stream in [`event_stream_names`]).
pub fn event_stream_prefix(session: &SessionId) -> String {
    session_key(session, &["e:"])
}

/// `mcpgate:{<sid>}:em:`, which a stream's name completes into its metadata key.
pub fn event_stream_meta_prefix(session: &SessionId) -> String {
    session_key(session, &["em:"])
}

/// `mcpgate:{<sid>}:e:<stream>`, the events of one stream.
pub fn event_stream(key: &StreamKey) -> String {
    session_key(&key.session, &["e:", key.stream.as_str()])
}

/// `mcpgate:{<sid>}:em:<stream>`, the metadata of one stream.
pub fn event_stream_meta(key: &StreamKey) -> String {
    session_key(&key.session, &["em:", key.stream.as_str()])
}

/// `mcpgate:{<sid>}:es`, the names of a session's streams.
pub fn event_stream_names(session: &SessionId) -> String {
    session_key(session, &["es"])
}

/// `mcpgate:p:{<principal key>}:s`, the principal's live sessions.
pub fn principal_quota(principal: &PrincipalKey) -> String {
    format!("mcpgate:p:{{{}}}:s", principal.as_str())
}

/// `mcpgate:p:{<principal key>}:r`, the principal's request rate (GCRA).
pub fn principal_rate(principal: &PrincipalKey) -> String {
    format!("mcpgate:p:{{{}}}:r", principal.as_str())
}

/// `mcpgate:{<sid>}`, the channel for everything about one session (same hash tag as its keys).
pub fn session_channel(session: &SessionId) -> String {
    format!("mcpgate:{{{session}}}")
}

/// `__keyevent@<db>__:expired`, where Redis publishes the keys of database `db` that expired.
pub fn expired_keys_channel(db: i64) -> String {
    format!("__keyevent@{db}__:expired")
}

/// The session whose record `key` is, for keys Redis reported expired (keyspace
/// notifications); `None` for any other key.
pub fn session_of_expired_key(key: &str) -> Option<SessionId> {
    key.strip_prefix("mcpgate:{")
        .and_then(|rest| rest.strip_suffix("}:s"))
        .and_then(SessionId::parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::StreamId;

    const SID: &str = "AbCdEfGhIjKlMnOpQrStUv-_0123456789abcdefghi";

    fn sid() -> SessionId {
        SessionId::parse(SID).expect("a valid session id")
    }

    fn stream() -> StreamKey {
        StreamKey {
            session: sid(),
            stream: StreamId::standalone(),
        }
    }

    fn principal() -> PrincipalKey {
        PrincipalKey::from_tag("pRiNcIpAl-_tag".to_owned())
    }

    /// Every session key and channel, with its name.
    fn session_names() -> Vec<String> {
        vec![
            session_record(&sid()),
            session_upstreams(&sid()),
            session_tombstone(&sid()),
            holder_lease(&sid(), "remote"),
            event_stream(&stream()),
            event_stream_meta(&stream()),
            event_stream_names(&sid()),
            session_channel(&sid()),
        ]
    }

    /// The part of a key Redis Cluster hashes: between the first `{` and the next `}`, when
    /// that is not empty; otherwise the whole key.
    fn hash_tag(key: &str) -> &str {
        key.find('{')
            .and_then(|open| {
                let close = key[open + 1..].find('}')? + open + 1;
                (close > open + 1).then(|| &key[open + 1..close])
            })
            .unwrap_or(key)
    }

    /// The exact names replicas of every version share. Changing one breaks a rolling upgrade.
    #[test]
    fn pinned() {
        let s = SID;
        assert_eq!(session_record(&sid()), format!("mcpgate:{{{s}}}:s"));
        assert_eq!(session_upstreams(&sid()), format!("mcpgate:{{{s}}}:u"));
        assert_eq!(session_tombstone(&sid()), format!("mcpgate:{{{s}}}:t"));
        assert_eq!(
            holder_lease(&sid(), "remote"),
            format!("mcpgate:{{{s}}}:h:remote")
        );
        assert_eq!(event_stream(&stream()), format!("mcpgate:{{{s}}}:e:get"));
        assert_eq!(
            event_stream_meta(&stream()),
            format!("mcpgate:{{{s}}}:em:get")
        );
        assert_eq!(event_stream_names(&sid()), format!("mcpgate:{{{s}}}:es"));
        assert_eq!(event_stream_prefix(&sid()), format!("mcpgate:{{{s}}}:e:"));
        assert_eq!(
            event_stream_meta_prefix(&sid()),
            format!("mcpgate:{{{s}}}:em:")
        );
        assert_eq!(session_channel(&sid()), format!("mcpgate:{{{s}}}"));
        assert_eq!(
            principal_quota(&principal()),
            "mcpgate:p:{pRiNcIpAl-_tag}:s"
        );
        assert_eq!(principal_rate(&principal()), "mcpgate:p:{pRiNcIpAl-_tag}:r");
        assert_eq!(READINESS_PROBE, "mcpgate:readyz");
        assert_eq!(CHANGES_CHANNEL, "mcpgate:changes");
        assert_eq!(replica_channel("0f3a"), "mcpgate:r:0f3a");
        assert_eq!(expired_keys_channel(3), "__keyevent@3__:expired");
    }

    #[test]
    fn a_session_shares_one_slot() {
        for name in session_names() {
            assert_eq!(hash_tag(&name), SID, "{name}");
        }
    }

    #[test]
    fn a_principal_shares_one_slot() {
        for name in [principal_quota(&principal()), principal_rate(&principal())] {
            assert_eq!(hash_tag(&name), "pRiNcIpAl-_tag", "{name}");
        }
    }

    #[test]
    fn expired_records_name_their_session() {
        let id = SessionId::generate();
        assert_eq!(session_of_expired_key(&session_record(&id)), Some(id));
        assert_eq!(session_of_expired_key(&session_record(&sid())), Some(sid()));
    }

    #[test]
    fn other_expired_keys_name_no_session() {
        let mut others = session_names();
        others.retain(|name| *name != session_record(&sid()));
        others.extend([
            principal_quota(&PrincipalKey::from_tag(SID.to_owned())),
            principal_rate(&PrincipalKey::from_tag(SID.to_owned())),
            READINESS_PROBE.to_owned(),
            holder_lease(&sid(), "x}:s"),
            "mcpgate:{short}:s".to_owned(),
            "other:{AbCdEfGhIjKlMnOpQrStUv}:s".to_owned(),
        ]);
        for name in others {
            assert_eq!(session_of_expired_key(&name), None, "{name}");
        }
    }
}
