//! MCP methods by name. [`Method::parse`] turns a message's `method` into a [`Method`] once;
//! what the gateway knows about a method (its metric label, the capability its receiver needs,
//! the list it merges) is asked of the enum, never of the string.

use std::sync::LazyLock;

use foldhash::HashMap;

use super::capability::{Capability, ClientCapability, ServerCapability};

/// The lists the gateway merges across upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    /// The method that asks for the list.
    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The result field holding the items.
    pub fn field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::ResourceTemplates => "resourceTemplates",
        }
    }
}

/// An MCP method, named by a request's or a notification's `method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `initialize`: opens a session.
    Initialize,
    /// `server/discover`: the probe of revision 2026-07-28.
    Discover,
    /// `ping`, either way.
    Ping,
    /// `tools/list`, `prompts/list`, `resources/list`, `resources/templates/list`.
    List(ListKind),
    /// `tools/call`.
    CallTool,
    /// `prompts/get`.
    GetPrompt,
    /// `resources/read`.
    ReadResource,
    /// `resources/subscribe`.
    Subscribe,
    /// `resources/unsubscribe`.
    Unsubscribe,
    /// `completion/complete`.
    Complete,
    /// `logging/setLevel`.
    SetLevel,
    /// `subscriptions/listen` (2026-07-28): a stream of change notifications.
    Listen,
    /// `tasks/get` (tasks extension): a task's status, and its result once done.
    GetTask,
    /// `tasks/update` (tasks extension): answers to a task's pending input.
    UpdateTask,
    /// `tasks/cancel` (tasks extension).
    CancelTask,
    /// `notifications/subscriptions/acknowledged`: the first message of a listen stream.
    SubscriptionsAcknowledged,
    /// `notifications/initialized`.
    Initialized,
    /// `notifications/cancelled`, either way.
    Cancelled,
    /// `notifications/progress`, either way.
    Progress,
    /// `notifications/roots/list_changed`, from the client.
    RootsListChanged,
    /// `sampling/createMessage`, from a server.
    CreateMessage,
    /// `elicitation/create`, from a server.
    Elicit,
    /// `roots/list`, from a server.
    ListRoots,
    /// `notifications/elicitation/complete`, from a server.
    ElicitationComplete,
    /// `notifications/message`: a log message from a server.
    LogMessage,
    /// `notifications/tools/list_changed`, from a server.
    ToolsListChanged,
    /// `notifications/prompts/list_changed`, from a server.
    PromptsListChanged,
    /// `notifications/resources/list_changed`, from a server.
    ResourcesListChanged,
    /// `notifications/resources/updated`, from a server.
    ResourceUpdated,
    /// A method the gateway does not know, by its name.
    Other(String),
}

impl Method {
    /// Every method the gateway knows.
    const KNOWN: [Method; 32] = [
        Method::Initialize,
        Method::Discover,
        Method::Ping,
        Method::List(ListKind::Tools),
        Method::List(ListKind::Prompts),
        Method::List(ListKind::Resources),
        Method::List(ListKind::ResourceTemplates),
        Method::CallTool,
        Method::GetPrompt,
        Method::ReadResource,
        Method::Subscribe,
        Method::Unsubscribe,
        Method::Complete,
        Method::SetLevel,
        Method::Listen,
        Method::GetTask,
        Method::UpdateTask,
        Method::CancelTask,
        Method::SubscriptionsAcknowledged,
        Method::Initialized,
        Method::Cancelled,
        Method::Progress,
        Method::RootsListChanged,
        Method::CreateMessage,
        Method::Elicit,
        Method::ListRoots,
        Method::ElicitationComplete,
        Method::LogMessage,
        Method::ToolsListChanged,
        Method::PromptsListChanged,
        Method::ResourcesListChanged,
        Method::ResourceUpdated,
    ];

    /// The method named `name`; [`Method::Other`] when the gateway does not know it. Looked
    /// up by hash: every message is parsed, several times per call.
    pub fn parse(name: &str) -> Self {
        static BY_NAME: LazyLock<HashMap<&'static str, Method>> = LazyLock::new(|| {
            let named = |method: Method| Some((method.known_name()?, method));
            Method::KNOWN.into_iter().filter_map(named).collect()
        });
        BY_NAME
            .get(name)
            .cloned()
            .unwrap_or_else(|| Method::Other(name.to_owned()))
    }

    /// Its name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Other(name) => name,
            known => known.known_name().unwrap_or_default(),
        }
    }

    /// The value of the `method` label of the request metrics: the name of a client request
    /// the gateway serves in a session, `other` for anything else (a bounded set).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Method::Initialize
            | Method::Discover
            | Method::Ping
            | Method::List(_)
            | Method::CallTool
            | Method::GetPrompt
            | Method::ReadResource
            | Method::Subscribe
            | Method::Unsubscribe
            | Method::Complete
            | Method::SetLevel
            | Method::Listen
            | Method::GetTask
            | Method::UpdateTask
            | Method::CancelTask => self.known_name().unwrap_or("other"),
            _ => "other",
        }
    }

    /// Whether a client may send this request in the modern (2026-07-28) era: `initialize`,
    /// `ping`, `logging/setLevel` and resource subscriptions are gone there (and the tasks
    /// extension has no `tasks/result` or `tasks/list`, which stay unknown methods).
    pub fn served_in_modern_era(&self) -> bool {
        matches!(
            self,
            Method::Discover
                | Method::List(_)
                | Method::CallTool
                | Method::GetPrompt
                | Method::ReadResource
                | Method::Complete
                | Method::Listen
                | Method::GetTask
                | Method::UpdateTask
                | Method::CancelTask
        )
    }

    /// Whether a modern result of this method carries `ttlMs` and `cacheScope`.
    pub fn is_cacheable(&self) -> bool {
        matches!(
            self,
            Method::Discover | Method::List(_) | Method::ReadResource
        )
    }

    /// The params field a modern request mirrors in its `Mcp-Name` header, for the methods
    /// that name what they act on.
    pub fn mirrored_name_field(&self) -> Option<&'static str> {
        match self {
            Method::CallTool | Method::GetPrompt => Some("name"),
            Method::ReadResource => Some("uri"),
            Method::GetTask | Method::UpdateTask | Method::CancelTask => Some("taskId"),
            _ => None,
        }
    }

    /// The capability the receiver must have declared for this method to be sent to it: a
    /// server capability for a client's request, a client capability for a server's message
    /// (the mode or option its params ask for may need more, see `dispatch/capabilities.rs`).
    pub fn required_capability(&self) -> Option<Capability> {
        let server = |capability| Some(Capability::Server(capability));
        let client = |capability| Some(Capability::Client(capability));
        match self {
            Method::List(ListKind::Tools) | Method::CallTool => server(ServerCapability::Tools),
            Method::List(ListKind::Prompts) | Method::GetPrompt => {
                server(ServerCapability::Prompts)
            }
            Method::List(ListKind::Resources | ListKind::ResourceTemplates)
            | Method::ReadResource
            | Method::Subscribe
            | Method::Unsubscribe => server(ServerCapability::Resources),
            Method::Complete => server(ServerCapability::Completions),
            Method::SetLevel => server(ServerCapability::Logging),
            Method::GetTask | Method::UpdateTask | Method::CancelTask => {
                server(ServerCapability::Tasks)
            }
            Method::CreateMessage => client(ClientCapability::Sampling),
            Method::Elicit => client(ClientCapability::Elicitation),
            Method::ListRoots => client(ClientCapability::Roots),
            Method::ElicitationComplete => client(ClientCapability::ElicitationUrl),
            _ => None,
        }
    }

    /// The name of a known method; `None` for [`Method::Other`].
    fn known_name(&self) -> Option<&'static str> {
        let name = match self {
            Method::Initialize => "initialize",
            Method::Discover => "server/discover",
            Method::Ping => "ping",
            Method::List(kind) => kind.method(),
            Method::CallTool => "tools/call",
            Method::GetPrompt => "prompts/get",
            Method::ReadResource => "resources/read",
            Method::Subscribe => "resources/subscribe",
            Method::Unsubscribe => "resources/unsubscribe",
            Method::Complete => "completion/complete",
            Method::SetLevel => "logging/setLevel",
            Method::Listen => "subscriptions/listen",
            Method::GetTask => "tasks/get",
            Method::UpdateTask => "tasks/update",
            Method::CancelTask => "tasks/cancel",
            Method::SubscriptionsAcknowledged => "notifications/subscriptions/acknowledged",
            Method::Initialized => "notifications/initialized",
            Method::Cancelled => "notifications/cancelled",
            Method::Progress => "notifications/progress",
            Method::RootsListChanged => "notifications/roots/list_changed",
            Method::CreateMessage => "sampling/createMessage",
            Method::Elicit => "elicitation/create",
            Method::ListRoots => "roots/list",
            Method::ElicitationComplete => "notifications/elicitation/complete",
            Method::LogMessage => "notifications/message",
            Method::ToolsListChanged => "notifications/tools/list_changed",
            Method::PromptsListChanged => "notifications/prompts/list_changed",
            Method::ResourcesListChanged => "notifications/resources/list_changed",
            Method::ResourceUpdated => "notifications/resources/updated",
            Method::Other(_) => return None,
        };
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_method_parses_back_from_its_name() {
        for method in Method::KNOWN {
            assert_eq!(Method::parse(method.as_str()), method);
        }
        let unknown = Method::parse("tools/Call");
        assert_eq!(unknown, Method::Other("tools/Call".into()));
        assert_eq!(unknown.as_str(), "tools/Call");
    }

    #[test]
    fn metric_labels_are_the_served_requests_and_other() {
        let labelled: Vec<&str> = Method::KNOWN
            .iter()
            .map(Method::metric_label)
            .filter(|label| *label != "other")
            .collect();
        let expected = [
            "initialize",
            "server/discover",
            "ping",
            "tools/list",
            "prompts/list",
            "resources/list",
            "resources/templates/list",
            "tools/call",
            "prompts/get",
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
            "completion/complete",
            "logging/setLevel",
            "subscriptions/listen",
            "tasks/get",
            "tasks/update",
            "tasks/cancel",
        ];
        assert_eq!(labelled, expected);
        assert_eq!(Method::parse("x/y").metric_label(), "other");
    }

    #[test]
    fn requests_need_server_capabilities_and_server_requests_client_ones() {
        let needs = |name: &str| Method::parse(name).required_capability();
        assert_eq!(
            needs("resources/templates/list"),
            Some(Capability::Server(ServerCapability::Resources))
        );
        assert_eq!(
            needs("logging/setLevel"),
            Some(Capability::Server(ServerCapability::Logging))
        );
        assert_eq!(
            needs("notifications/elicitation/complete"),
            Some(Capability::Client(ClientCapability::ElicitationUrl))
        );
        assert_eq!(
            needs("tasks/update"),
            Some(Capability::Server(ServerCapability::Tasks))
        );
        assert_eq!(needs("ping"), None);
        assert_eq!(needs("notifications/progress"), None);
    }
}
