//! Per-upstream allow and deny lists of tool names, as globs.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Decides which of an upstream's tools are exposed.
pub struct ToolFilter {
    allow: Option<GlobSet>,
    deny: Option<GlobSet>,
}

impl ToolFilter {
    /// Builds the filter; the globs were checked when the configuration was validated, and an
    /// invalid one is skipped rather than exposing or hiding everything.
    pub fn new(allow: &[String], deny: &[String]) -> Self {
        Self {
            allow: build(allow),
            deny: build(deny),
        }
    }

    /// Whether a tool (by its upstream name) is exposed.
    pub fn allows(&self, tool: &str) -> bool {
        let allowed = self.allow.as_ref().is_none_or(|set| set.is_match(tool));
        let denied = self.deny.as_ref().is_some_and(|set| set.is_match(tool));
        allowed && !denied
    }
}

fn build(globs: &[String]) -> Option<GlobSet> {
    if globs.is_empty() {
        return None;
    }
    let mut builder = GlobSetBuilder::new();
    for glob in globs.iter().filter_map(|g| Glob::new(g).ok()) {
        builder.add(glob);
    }
    builder.build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allow_then_deny() {
        let filter = ToolFilter::new(&strings(&["test_*", "echo"]), &strings(&["test_error*"]));
        assert!(filter.allows("test_simple_text"));
        assert!(filter.allows("echo"));
        assert!(!filter.allows("test_error_handling"));
        assert!(!filter.allows("slow"));
        assert!(ToolFilter::new(&[], &[]).allows("anything"));
    }
}
