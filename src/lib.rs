//! mcpgate: a horizontally scaled gateway for the Model Context Protocol.
//!
//! Requests flow one way: [`http`] (actix-web, the downstream Streamable HTTP endpoint) →
//! [`dispatch`] (JSON-RPC routing, fan-out and merge) → [`upstream`] (stdio and HTTP MCP servers).
//! Session state lives behind [`session::SessionStore`]; SSE events behind [`events::EventLog`].
//! See ARCHITECTURE.md for the map and the invariants.

// The layout of futures over redis's multiplexed connection is deeper than the default allows.
#![recursion_limit = "256"]

pub mod auth;
pub mod bench;
pub mod catalog;
pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod error_text;
pub mod events;
pub mod glob_filter;
pub mod http;
pub mod limits;
pub mod policy;
pub mod process_limits;
pub mod protocol;
pub mod redis;
pub mod reload;
pub mod session;
pub mod sync;
pub mod telemetry;
pub mod upstream;
