//! Isolated stdio upstreams: who shares a child process (`isolation`), how long an unused one
//! lives (`idle_timeout`, which an sse upstream's connections use too), how many run per replica (`max_children`), and the environment of
//! each team's children (`team_env`).
//!
//! ```toml
//! [[upstreams]]
//! name = "files"
//! transport = "stdio"
//! command = "files-mcp"
//! isolation = "team"          # or "session"; default "shared"
//! idle_timeout = "5m"
//! max_children = 64
//! [upstreams.team_env.payments]
//! FILES_ROOT = "/srv/payments"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret, TransportKind, UpstreamConfig, invalid};

/// Default `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `max_children`.
pub const DEFAULT_MAX_CHILDREN: usize = 64;

/// Who shares one child process of a stdio upstream, on one replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// One supervised child for every session of the replica, initialized by mcpgate.
    #[default]
    Shared,
    /// One child per team (sessions without a team share one), started by a session of it.
    Team,
    /// One child per session.
    Session,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Shared => "shared",
            Isolation::Team => "team",
            Isolation::Session => "session",
        }
    }
}

/// The environment of a team's children: values by variable name, by team.
pub type TeamEnv = BTreeMap<String, BTreeMap<String, Secret>>;

impl UpstreamConfig {
    /// `isolation`, or its default.
    pub fn isolation(&self) -> Isolation {
        self.isolation.unwrap_or_default()
    }

    /// `idle_timeout`, or its default.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)
    }

    /// `max_children`, or its default.
    pub fn max_children(&self) -> usize {
        self.max_children.unwrap_or(DEFAULT_MAX_CHILDREN)
    }

    /// The environment a child started for `team` gets, besides the inherited variables:
    /// `team_env.<team>` when configured, `env` otherwise.
    pub fn env_for(&self, team: Option<&str>) -> &BTreeMap<String, Secret> {
        team.and_then(|team| self.team_env.get(team))
            .unwrap_or(&self.env)
    }
}

/// Checks the isolation keys of upstream `key`: stdio only, and the pool's settings only with
/// an isolated mode.
pub(super) fn validate(key: &str, upstream: &UpstreamConfig) -> Result<(), ConfigError> {
    if upstream.transport != TransportKind::Stdio && upstream.isolation.is_some() {
        return Err(invalid(
            format!("{key}.isolation"),
            "isolation belongs to transport = \"stdio\"",
        ));
    }
    let sse_idle = upstream.transport == TransportKind::Sse;
    let pool_keys = [
        ("idle_timeout", upstream.idle_timeout.is_some() && !sse_idle),
        ("max_children", upstream.max_children.is_some()),
        ("team_env", !upstream.team_env.is_empty()),
    ];
    if upstream.isolation() == Isolation::Shared
        && let Some((name, _)) = pool_keys.iter().find(|(_, set)| *set)
    {
        let also_sse = if *name == "idle_timeout" {
            ", or with transport = \"sse\""
        } else {
            ""
        };
        return Err(invalid(
            format!("{key}.{name}"),
            format!(
                "only used with isolation = \"team\" or \"session\" (transport = \"stdio\"){also_sse}"
            ),
        ));
    }
    if upstream.idle_timeout.is_some_and(|d| d.is_zero()) {
        return Err(invalid(
            format!("{key}.idle_timeout"),
            "must be greater than 0",
        ));
    }
    if upstream.max_children == Some(0) {
        return Err(invalid(
            format!("{key}.max_children"),
            "must be greater than 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(lines: &str) -> Result<crate::config::Config, ConfigError> {
        let toml = format!("[[upstreams]]\nname = \"a\"\n{lines}");
        let config: crate::config::Config = toml::from_str(&toml).unwrap();
        config.validate().map(|()| config)
    }

    const STDIO: &str = "transport = \"stdio\"\ncommand = \"x\"\n";

    #[test]
    fn defaults_and_team_environments() {
        let config = load(&format!(
            "{STDIO}isolation = \"team\"\nenv = {{ A = \"1\" }}\n[upstreams.team_env.red]\nA = \"2\""
        ))
        .unwrap();
        let upstream = &config.upstreams[0];
        assert_eq!(upstream.isolation(), Isolation::Team);
        assert_eq!(upstream.idle_timeout(), DEFAULT_IDLE_TIMEOUT);
        assert_eq!(upstream.max_children(), DEFAULT_MAX_CHILDREN);
        assert_eq!(upstream.env_for(Some("red"))["A"].expose(), "2");
        assert_eq!(upstream.env_for(Some("blue"))["A"].expose(), "1");
        assert_eq!(upstream.env_for(None)["A"].expose(), "1");
        assert_eq!(
            load(STDIO).unwrap().upstreams[0].isolation(),
            Isolation::Shared
        );
    }

    #[test]
    fn misplaced_keys_are_named() {
        let http = "transport = \"http\"\nurl = \"http://x\"\n";
        for (lines, key) in [
            (
                format!("{http}isolation = \"team\""),
                "upstreams[0].isolation",
            ),
            (
                format!("{STDIO}idle_timeout = \"1m\""),
                "upstreams[0].idle_timeout",
            ),
            (
                format!("{STDIO}max_children = 3"),
                "upstreams[0].max_children",
            ),
            (
                format!("{STDIO}[upstreams.team_env.red]\nA = \"1\""),
                "upstreams[0].team_env",
            ),
            (
                format!("{STDIO}isolation = \"session\"\nmax_children = 0"),
                "upstreams[0].max_children",
            ),
            (
                format!("{STDIO}isolation = \"session\"\nidle_timeout = \"0s\""),
                "upstreams[0].idle_timeout",
            ),
        ] {
            let error = load(&lines).unwrap_err().to_string();
            assert!(error.contains(key), "{lines:?} gave {error:?}");
        }
    }
}
