//! `[policy]`: which upstreams, tools, resources and prompts each team may see and call.
//!
//! ```toml
//! [policy.default]                 # principals without a team, and teams not listed
//! upstreams.allow = ["public"]
//!
//! [policy.teams.payments]
//! upstreams.allow = ["public", "billing"]
//! tools.deny = ["billing__delete_*"]
//! resources.allow = ["file:///payments/*"]
//! ```
//!
//! Without a `[policy]` section every team may use everything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Per-team rules.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Rules for principals without a team and for teams not listed under `teams`.
    pub default: TeamRules,
    /// Rules by team name.
    pub teams: BTreeMap<String, TeamRules>,
}

/// What one team may see and call. Each rule is matched against what the client sees: the
/// upstream's name, a namespaced tool or prompt name (`<prefix>__<name>`), a resource URI.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeamRules {
    pub upstreams: GlobRule,
    pub tools: GlobRule,
    pub resources: GlobRule,
    pub prompts: GlobRule,
}

/// Allow and deny globs: a name passes when it matches an `allow` glob (or `allow` is empty)
/// and no `deny` glob. `*` matches any characters, `/` included.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobRule {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl PolicyConfig {
    /// Checks every glob, naming the key of a bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.default.validate("policy.default")?;
        for (team, rules) in &self.teams {
            rules.validate(&format!("policy.teams.{team}"))?;
        }
        Ok(())
    }
}

impl TeamRules {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        for (field, rule) in [
            ("upstreams", &self.upstreams),
            ("tools", &self.tools),
            ("resources", &self.resources),
            ("prompts", &self.prompts),
        ] {
            rule.validate(&format!("{key}.{field}"))?;
        }
        Ok(())
    }
}

impl GlobRule {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        for (field, globs) in [("allow", &self.allow), ("deny", &self.deny)] {
            for glob in globs {
                globset::Glob::new(glob).map_err(|e| {
                    invalid(format!("{key}.{field}"), format!("bad glob {glob:?}: {e}"))
                })?;
            }
        }
        Ok(())
    }
}
