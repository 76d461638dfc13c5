//! The merged catalog: how upstream tools, prompts and resources appear to clients.
//!
//! Tools and prompts are namespaced `<prefix>__<name>`; resources keep their URIs and are
//! routed back to the upstream that listed them ([`ResourceRoutes`]). List pagination spans
//! upstreams through [`ListCursor`].

mod cursor;
mod resources;

use std::sync::Arc;

use crate::upstream::{Upstream, Upstreams};

pub use cursor::ListCursor;
pub use resources::ResourceRoutes;

/// Separates a prefix from an upstream's own name.
pub const SEPARATOR: &str = "__";

/// The name a client sees for an upstream's tool or prompt.
pub fn namespaced(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}{SEPARATOR}{name}")
    }
}

/// Finds the upstream that owns a namespaced name, and the name it knows.
pub fn resolve<'a>(
    upstreams: &'a Upstreams,
    name: &'a str,
) -> Option<(&'a Arc<Upstream>, &'a str)> {
    if let Some((prefix, rest)) = name.split_once(SEPARATOR) {
        let owner = upstreams
            .iter()
            .find(|u| !u.prefix.is_empty() && u.prefix == prefix);
        if let Some(owner) = owner {
            return Some((owner, rest));
        }
    }
    upstreams
        .iter()
        .find(|u| u.prefix.is_empty())
        .map(|u| (u, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespacing_joins_with_the_separator_unless_the_prefix_is_empty() {
        assert_eq!(namespaced("local", "echo"), "local__echo");
        assert_eq!(namespaced("", "echo"), "echo");
    }
}
