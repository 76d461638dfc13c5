//! `subscriptions/listen` (2026-07-28): the filter of change notifications a client asks for,
//! what an upstream can honour of it, and the notifications it admits. Each notification on a
//! listen stream carries the listen request's id as `io.modelcontextprotocol/subscriptionId`.

use serde_json::{Map, Value, json};

use super::CallError;
use super::era::meta::SUBSCRIPTION_ID;
use super::jsonrpc::RequestId;
use super::method::Method;

/// Most resource URIs one listen request may name, and the longest one, in bytes.
pub const MAX_URIS: usize = 256;
pub const MAX_URI_BYTES: usize = 2048;

/// Which change notifications a listen stream carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenFilter {
    pub tools: bool,
    pub prompts: bool,
    pub resources: bool,
    pub uris: Vec<String>,
}

impl ListenFilter {
    /// The filter of a listen request's `params.notifications` (every field optional).
    pub fn parse(params: Option<&Value>) -> Result<Self, CallError> {
        let invalid =
            |reason: &str| CallError::InvalidParams(format!("params.notifications{reason}"));
        let Some(filter) = params.and_then(|p| p.get("notifications")) else {
            return Ok(Self::default());
        };
        let filter = filter
            .as_object()
            .ok_or_else(|| invalid(" must be an object"))?;
        let flag = |key: &str| match filter.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(_) => Err(invalid(&format!(".{key} must be a boolean"))),
        };
        let uris = match filter.get("resourceSubscriptions") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => uris(items).map_err(|reason| invalid(&reason))?,
            Some(_) => return Err(invalid(".resourceSubscriptions must be an array")),
        };
        Ok(Self {
            tools: flag("toolsListChanged")?,
            prompts: flag("promptsListChanged")?,
            resources: flag("resourcesListChanged")?,
            uris,
        })
    }

    /// What an upstream with these server capabilities can honour of this filter.
    pub fn honoured_by(&self, capabilities: &Value) -> Self {
        let declares = |kind: &str, option: &str| {
            capabilities
                .get(kind)
                .and_then(|c| c.get(option))
                .and_then(Value::as_bool)
                == Some(true)
        };
        Self {
            tools: self.tools && declares("tools", "listChanged"),
            prompts: self.prompts && declares("prompts", "listChanged"),
            resources: self.resources && declares("resources", "listChanged"),
            uris: if declares("resources", "subscribe") {
                self.uris.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// What both filters admit.
    pub fn intersect(&self, other: &Self) -> Self {
        Self {
            tools: self.tools && other.tools,
            prompts: self.prompts && other.prompts,
            resources: self.resources && other.resources,
            uris: self
                .uris
                .iter()
                .filter(|u| other.uris.contains(u))
                .cloned()
                .collect(),
        }
    }

    /// Adds what `other` honours.
    pub fn merge(&mut self, other: &Self) {
        self.tools |= other.tools;
        self.prompts |= other.prompts;
        self.resources |= other.resources;
        for uri in &other.uris {
            if !self.uris.contains(uri) {
                self.uris.push(uri.clone());
            }
        }
    }

    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// As `notifications` in a request or an acknowledgement: only what is set.
    pub fn to_value(&self) -> Value {
        let mut fields = Map::new();
        for (key, set) in [
            ("toolsListChanged", self.tools),
            ("promptsListChanged", self.prompts),
            ("resourcesListChanged", self.resources),
        ] {
            if set {
                fields.insert(key.into(), json!(true));
            }
        }
        if !self.uris.is_empty() {
            fields.insert("resourceSubscriptions".into(), json!(self.uris));
        }
        Value::Object(fields)
    }

    /// Whether a notification of `method` with `params` belongs on a stream with this filter.
    pub fn admits(&self, method: &Method, params: Option<&Value>) -> bool {
        match method {
            Method::ToolsListChanged => self.tools,
            Method::PromptsListChanged => self.prompts,
            Method::ResourcesListChanged => self.resources,
            Method::ResourceUpdated => params
                .and_then(|p| p.get("uri"))
                .and_then(Value::as_str)
                .is_some_and(|uri| self.uris.iter().any(|u| u == uri)),
            _ => false,
        }
    }
}

fn uris(items: &[Value]) -> Result<Vec<String>, String> {
    if items.len() > MAX_URIS {
        return Err(format!(
            ".resourceSubscriptions may name at most {MAX_URIS} URIs"
        ));
    }
    items
        .iter()
        .map(|item| match item.as_str() {
            Some(uri) if uri.len() <= MAX_URI_BYTES => Ok(uri.to_owned()),
            Some(_) => Err(format!(
                ".resourceSubscriptions: a URI may take at most {MAX_URI_BYTES} bytes"
            )),
            None => Err(".resourceSubscriptions must hold strings".into()),
        })
        .collect()
}

/// The first message of a listen stream: what it will carry.
pub fn acknowledgement(subscription: &RequestId, honoured: &ListenFilter) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": Method::SubscriptionsAcknowledged.as_str(),
        "params": {"_meta": {SUBSCRIPTION_ID: subscription.to_value()}, "notifications": honoured.to_value()},
    })
}

/// Tags a notification (or the closing result) with the subscription it belongs to.
pub fn tag(params: &mut Value, subscription: &RequestId) {
    if !params.is_object() {
        *params = json!({});
    }
    let meta = params
        .as_object_mut()
        .map(|p| p.entry("_meta").or_insert_with(|| json!({})));
    if let Some(Value::Object(meta)) = meta {
        meta.insert(SUBSCRIPTION_ID.into(), subscription.to_value());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bounds_and_honours_by_capability() {
        let params = json!({"notifications": {"toolsListChanged": true, "promptsListChanged": true, "resourceSubscriptions": ["test://a"]}});
        let filter = ListenFilter::parse(Some(&params)).unwrap();
        assert!(filter.tools && filter.prompts && !filter.resources);
        let honoured = filter.honoured_by(
            &json!({"tools": {"listChanged": true}, "resources": {"subscribe": true}}),
        );
        assert_eq!(
            honoured.to_value(),
            json!({"toolsListChanged": true, "resourceSubscriptions": ["test://a"]})
        );
        assert!(
            ListenFilter::parse(Some(&json!({"notifications": {"toolsListChanged": 1}}))).is_err()
        );
        let many: Vec<String> = (0..=MAX_URIS).map(|i| format!("test://{i}")).collect();
        assert!(
            ListenFilter::parse(Some(
                &json!({"notifications": {"resourceSubscriptions": many}})
            ))
            .is_err()
        );
        assert!(ListenFilter::parse(None).unwrap().is_empty());
    }

    #[test]
    fn admits_only_what_was_asked_for() {
        let filter = ListenFilter {
            tools: true,
            uris: vec!["test://a".into()],
            ..Default::default()
        };
        assert!(filter.admits(&Method::ToolsListChanged, None));
        assert!(!filter.admits(&Method::PromptsListChanged, None));
        assert!(filter.admits(&Method::ResourceUpdated, Some(&json!({"uri": "test://a"}))));
        assert!(!filter.admits(&Method::ResourceUpdated, Some(&json!({"uri": "test://b"}))));
        assert!(!filter.admits(&Method::LogMessage, None));
    }

    #[test]
    fn tags_carry_the_subscription_id() {
        let mut params = json!({"uri": "test://a", "_meta": {"x": 1}});
        tag(&mut params, &RequestId::Number(7));
        assert_eq!(params["_meta"], json!({"x": 1, SUBSCRIPTION_ID: 7}));
        let ack = acknowledgement(&RequestId::Number(7), &ListenFilter::default());
        assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], json!(7));
        assert_eq!(
            ack["method"],
            json!("notifications/subscriptions/acknowledged")
        );
    }
}
