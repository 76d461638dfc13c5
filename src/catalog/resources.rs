//! Which upstream serves which resource URI.
//!
//! Learned from `resources/list` and `resources/templates/list` answers on this replica. A URI
//! never seen here (a revived session, say) is resolved by asking upstreams in order.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::sync::lock;

/// A per-replica cache of resource owners.
#[derive(Default)]
pub struct ResourceRoutes {
    exact: Mutex<HashMap<String, String>>,
    /// Literal prefix of a URI template (up to its first `{`) → upstream.
    templates: Mutex<Vec<(String, String)>>,
}

impl ResourceRoutes {
    pub fn learn_resource(&self, uri: &str, upstream: &str) {
        lock(&self.exact).insert(uri.to_owned(), upstream.to_owned());
    }

    pub fn learn_template(&self, template: &str, upstream: &str) {
        let prefix = template.split('{').next().unwrap_or_default().to_owned();
        let mut templates = lock(&self.templates);
        if !templates.iter().any(|(p, u)| p == &prefix && u == upstream) {
            templates.push((prefix, upstream.to_owned()));
            templates.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
    }

    /// The upstream known to serve `uri`, if any.
    pub fn owner(&self, uri: &str) -> Option<String> {
        if let Some(owner) = lock(&self.exact).get(uri) {
            return Some(owner.clone());
        }
        lock(&self.templates)
            .iter()
            .find(|(prefix, _)| !prefix.is_empty() && uri.starts_with(prefix.as_str()))
            .map(|(_, upstream)| upstream.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_uris_win_over_the_longest_template_prefix() {
        let routes = ResourceRoutes::default();
        routes.learn_template("test://template/{id}/data", "a");
        routes.learn_template("test://{x}", "b");
        routes.learn_resource("test://template/fixed/data", "c");
        assert_eq!(routes.owner("test://template/7/data").as_deref(), Some("a"));
        assert_eq!(routes.owner("test://other").as_deref(), Some("b"));
        assert_eq!(
            routes.owner("test://template/fixed/data").as_deref(),
            Some("c")
        );
        assert_eq!(routes.owner("file:///x"), None);
    }
}
