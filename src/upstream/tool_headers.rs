//! What this replica knows of an upstream's `x-mcp-header` annotations (see
//! `protocol/param_headers.rs`), learned from the tool lists it relays: a modern call to one of
//! its tools is checked against them, and, to a modern HTTP upstream, sent with them.
//!
//! Bounded: at most [`MAX_TOOLS`] tools per upstream are remembered; a tool beyond that is
//! treated as having no annotations (its headers are then neither checked nor sent, and an
//! upstream that needs them refuses the call with its own -32020).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::protocol::param_headers::{self, ParamHeader};
use crate::sync::lock;

/// Most tools of one upstream whose annotations are kept.
const MAX_TOOLS: usize = 10_000;

/// One upstream's annotated tools by their own name; `None` until a list was seen.
#[derive(Default)]
pub struct ToolHeaders {
    tools: Mutex<Option<HashMap<String, Vec<ParamHeader>>>>,
}

impl ToolHeaders {
    /// Learns the annotations of a page of the upstream's `tools/list`.
    pub fn learn(&self, tools: &[Value]) {
        let mut known = lock(&self.tools);
        let known = known.get_or_insert_with(HashMap::new);
        for tool in tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let found = tool
                .get("inputSchema")
                .map(param_headers::annotations)
                .unwrap_or_default();
            if found.is_empty() {
                known.remove(name);
            } else if known.len() < MAX_TOOLS || known.contains_key(name) {
                known.insert(name.to_owned(), found);
            }
        }
    }

    /// The annotations of tool `name`; `None` when no list of this upstream was seen yet.
    pub fn of(&self, name: &str) -> Option<Vec<ParamHeader>> {
        let known = lock(&self.tools);
        Some(known.as_ref()?.get(name).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn learns_annotated_tools_and_knows_when_it_has_seen_none() {
        let headers = ToolHeaders::default();
        assert_eq!(headers.of("echo_region"), None);
        headers.learn(&[
            json!({"name": "echo_region", "inputSchema": {"properties": {"region": {"x-mcp-header": "Region"}}}}),
            json!({"name": "echo", "inputSchema": {"properties": {"text": {}}}}),
        ]);
        assert_eq!(headers.of("echo_region").unwrap()[0].name, "Region");
        assert_eq!(headers.of("echo"), Some(Vec::new()));
        assert_eq!(headers.of("never_listed"), Some(Vec::new()));
    }
}
