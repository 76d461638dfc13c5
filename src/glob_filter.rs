//! Allow and deny lists of names, as globs: an upstream's tool filter, and each rule of a
//! team's policy.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Decides which names pass: those matching an allow glob (any, when there are none) and no
/// deny glob.
#[derive(Debug)]
pub struct GlobFilter {
    allow: Option<GlobSet>,
    deny: Option<GlobSet>,
}

impl GlobFilter {
    /// Builds the filter; the globs were checked when the configuration was validated, and an
    /// invalid one is skipped rather than exposing or hiding everything.
    pub fn new(allow: &[String], deny: &[String]) -> Self {
        Self {
            allow: build(allow),
            deny: build(deny),
        }
    }

    /// Whether `name` passes.
    pub fn allows(&self, name: &str) -> bool {
        let allowed = self.allow.as_ref().is_none_or(|set| set.is_match(name));
        let denied = self.deny.as_ref().is_some_and(|set| set.is_match(name));
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
        let filter = GlobFilter::new(&strings(&["test_*", "echo"]), &strings(&["test_error*"]));
        assert!(filter.allows("test_simple_text"));
        assert!(filter.allows("echo"));
        assert!(!filter.allows("test_error_handling"));
        assert!(!filter.allows("slow"));
        assert!(GlobFilter::new(&[], &[]).allows("anything"));
    }
}
