//! What mcpgate knows of the protocol itself, apart from any transport, session or upstream:
//!
//! - [`jsonrpc`]: JSON-RPC 2.0 messages (classification of raw JSON, ids, builders);
//! - [`Method`]: every MCP method the gateway knows, parsed once from a message's `method`,
//!   with its metric label and the [`Capability`] its receiver must have declared;
//! - [`Call`]: a client request the gateway serves, with the parameters it routes by, checked
//!   once where the request arrives;
//! - [`ProtocolVersion`]: the negotiated revisions and the rules that depend on them;
//! - [`era`]: the two eras (legacy sessions, modern per-request metadata), how a request is
//!   sorted into one, and the checks and errors of the modern one.
//!
//! Nothing else matches on method names; nothing here does I/O.

mod call;
mod capability;
pub mod era;
pub mod jsonrpc;
pub mod listen;
mod method;
pub mod param_headers;
mod versions;

pub use call::{Call, CallError};
pub use capability::{
    Capability, ClientCapability, ServerCapability, TASKS_EXTENSION, extension_declared,
};
pub use era::{Mirrored, ModernError, ModernRequest};
pub use method::{ListKind, Method};
pub use versions::ProtocolVersion;
