//! Per-team policy, compiled from `[policy]`: which upstreams, tools, resources and prompts a
//! session's team may see and call. Dispatch asks it before listing, routing or forwarding
//! anything; what a team may not use looks to it exactly like what does not exist.

use std::collections::BTreeMap;

use crate::config::policy::{GlobRule, PolicyConfig, TeamRules};
use crate::glob_filter::GlobFilter;

/// Every team's rules.
#[derive(Debug)]
pub struct Policy {
    default: TeamPolicy,
    teams: BTreeMap<String, TeamPolicy>,
}

/// One team's rules, compiled.
#[derive(Debug)]
pub struct TeamPolicy {
    upstreams: GlobFilter,
    tools: GlobFilter,
    resources: GlobFilter,
    prompts: GlobFilter,
}

impl Policy {
    /// Compiles validated configuration (see [`PolicyConfig::validate`]).
    pub fn new(config: &PolicyConfig) -> Self {
        Self {
            default: TeamPolicy::new(&config.default),
            teams: config
                .teams
                .iter()
                .map(|(team, rules)| (team.clone(), TeamPolicy::new(rules)))
                .collect(),
        }
    }

    /// The rules for `team`: its own, or the default ones.
    pub fn for_team(&self, team: Option<&str>) -> &TeamPolicy {
        team.and_then(|team| self.teams.get(team))
            .unwrap_or(&self.default)
    }
}

impl Default for Policy {
    /// Everyone may use everything.
    fn default() -> Self {
        Self::new(&PolicyConfig::default())
    }
}

impl TeamPolicy {
    fn new(rules: &TeamRules) -> Self {
        let filter = |rule: &GlobRule| GlobFilter::new(&rule.allow, &rule.deny);
        Self {
            upstreams: filter(&rules.upstreams),
            tools: filter(&rules.tools),
            resources: filter(&rules.resources),
            prompts: filter(&rules.prompts),
        }
    }

    /// Whether the team may use the upstream named `upstream` at all.
    pub fn allows_upstream(&self, upstream: &str) -> bool {
        self.upstreams.allows(upstream)
    }

    /// Whether the team may see and call a tool, by the name the client sees.
    pub fn allows_tool(&self, upstream: &str, tool: &str) -> bool {
        self.allows_upstream(upstream) && self.tools.allows(tool)
    }

    /// Whether the team may see and get a prompt, by the name the client sees.
    pub fn allows_prompt(&self, upstream: &str, prompt: &str) -> bool {
        self.allows_upstream(upstream) && self.prompts.allows(prompt)
    }

    /// Whether the team may see, read and subscribe to a resource URI.
    pub fn allows_resource(&self, uri: &str) -> bool {
        self.resources.allows(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> Policy {
        let config: PolicyConfig = toml::from_str(toml).expect("valid policy");
        config.validate().expect("valid globs");
        Policy::new(&config)
    }

    #[test]
    fn teams_get_their_rules_and_others_the_default() {
        let policy = policy(
            r#"
            [default]
            upstreams.allow = ["public"]
            [teams.payments]
            upstreams.allow = ["public", "billing"]
            tools.deny = ["billing__delete_*"]
            resources.allow = ["file:///payments/*"]
            "#,
        );
        let payments = policy.for_team(Some("payments"));
        assert!(payments.allows_tool("billing", "billing__charge"));
        assert!(!payments.allows_tool("billing", "billing__delete_card"));
        assert!(payments.allows_resource("file:///payments/q3/report.csv"));
        assert!(!payments.allows_resource("file:///hr/salaries.csv"));
        for outsider in [None, Some("marketing")] {
            let rules = policy.for_team(outsider);
            assert!(rules.allows_tool("public", "public__echo"));
            assert!(!rules.allows_tool("billing", "billing__charge"));
            assert!(!rules.allows_prompt("billing", "billing__summary"));
        }
    }

    #[test]
    fn no_policy_allows_everything() {
        let rules = Policy::default();
        let rules = rules.for_team(Some("anyone"));
        assert!(rules.allows_tool("any", "any__thing") && rules.allows_resource("s3://x"));
    }
}
