//! The capabilities a method can need of the side receiving it: a server's (an upstream's
//! `initialize` result) for what a client asks, a client's (its `initialize` request) for what
//! a server asks.

use serde_json::Value;

/// The tasks extension's key in `capabilities.extensions` (either side declares it there).
pub const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// A capability one side declares at `initialize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Server(ServerCapability),
    Client(ClientCapability),
}

/// A server capability: a key of the `capabilities` object a server answers `initialize` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCapability {
    Tools,
    Prompts,
    Resources,
    Logging,
    Completions,
    /// The tasks extension, under `extensions`.
    Tasks,
}

impl ServerCapability {
    /// Whether a server's `capabilities` object declares it.
    pub fn is_declared_in(self, capabilities: &Value) -> bool {
        let key = match self {
            ServerCapability::Tools => "tools",
            ServerCapability::Prompts => "prompts",
            ServerCapability::Resources => "resources",
            ServerCapability::Logging => "logging",
            ServerCapability::Completions => "completions",
            ServerCapability::Tasks => return extension_declared(capabilities, TASKS_EXTENSION),
        };
        capabilities.get(key).is_some()
    }
}

/// Whether either side's `capabilities` object declares the extension `id`.
pub fn extension_declared(capabilities: &Value, id: &str) -> bool {
    capabilities
        .get("extensions")
        .and_then(|extensions| extensions.get(id))
        .is_some()
}

/// A client capability a server-to-client message can need, down to the modes and options
/// some messages ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCapability {
    Sampling,
    SamplingTools,
    Elicitation,
    ElicitationForm,
    ElicitationUrl,
    Roots,
}

impl ClientCapability {
    /// Its path in the client's `capabilities` object.
    pub fn path(self) -> &'static str {
        match self {
            ClientCapability::Sampling => "sampling",
            ClientCapability::SamplingTools => "sampling.tools",
            ClientCapability::Elicitation => "elicitation",
            ClientCapability::ElicitationForm => "elicitation.form",
            ClientCapability::ElicitationUrl => "elicitation.url",
            ClientCapability::Roots => "roots",
        }
    }

    /// Whether it refines a feature the client may still have (a mode, an option).
    pub fn is_refinement(self) -> bool {
        matches!(
            self,
            ClientCapability::SamplingTools
                | ClientCapability::ElicitationForm
                | ClientCapability::ElicitationUrl
        )
    }
}
