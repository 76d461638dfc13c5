//! The capabilities a method can need of the side receiving it: a server's (an upstream's
//! `initialize` result) for what a client asks, a client's (its `initialize` request) for what
//! a server asks.

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
}

impl ServerCapability {
    /// Its key in the server's `capabilities` object.
    pub fn key(self) -> &'static str {
        match self {
            ServerCapability::Tools => "tools",
            ServerCapability::Prompts => "prompts",
            ServerCapability::Resources => "resources",
            ServerCapability::Logging => "logging",
            ServerCapability::Completions => "completions",
        }
    }
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
