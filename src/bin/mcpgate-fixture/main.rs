//! `mcpgate-fixture`: a small upstream MCP server used to test the gateway.
//!
//! It implements the server surface expected by the official conformance suite
//! (`@modelcontextprotocol/conformance` 0.1.16: every `test_*` tool, resource and
//! prompt, completion, logging, subscriptions, sampling, elicitation, progress,
//! SSE polling; 0.2.0 on protocol 2026-07-28: multi round-trip requests,
//! `subscriptions/listen`, the stateless diagnostics, the tasks extension) plus a few
//! gateway-oriented tools (`echo`, `whoami`, `slow`) and some that misbehave on purpose
//! (`hostile.rs`). It serves legacy sessions (`initialize`) and the 2026-07-28 per-request
//! wire side by side (`era.rs`); over HTTP, `--modern-only` makes it refuse the legacy
//! revisions. It serves stdio, Streamable HTTP (`http.rs`) or the legacy HTTP+SSE transport
//! (`sse.rs`), or relays to another endpoint with no MCP at all (`relay.rs`, for the benchmark).
//!
//! This file owns the command line and process setup; each concern lives in its
//! own module.

mod era;
mod hostile;
mod http;
mod input_required;
mod interactive;
mod logging;
mod media;
mod mrtr;
mod prompts;
mod reconnect;
mod relay;
mod request_state;
mod resources;
mod server;
mod sse;
mod standalone;
mod subscriptions;
mod tasks;
mod tools;

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rmcp::ServiceExt as _;
use tracing_subscriber::EnvFilter;

use crate::{server::Fixture, subscriptions::Changes};

/// Command line of the fixture server.
#[derive(Debug, Parser)]
#[command(
    name = "mcpgate-fixture",
    about = "Upstream MCP test server for mcpgate"
)]
struct Cli {
    /// Value reported as `serverInfo.name` (lets tests tell instances apart).
    #[arg(long, global = true, default_value = "mcpgate-fixture")]
    name: String,
    #[command(subcommand)]
    mode: Mode,
}

/// Transport to serve on.
#[derive(Debug, Subcommand)]
enum Mode {
    /// Serve newline-delimited JSON-RPC on stdin/stdout.
    Stdio,
    /// Serve Streamable HTTP at `/mcp`; the first stdout line is the URL.
    Http {
        /// Address to bind; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Serve only the 2026-07-28 wire, as a server without the legacy revisions would:
        /// every other request (`initialize` included) gets 400 with -32022.
        #[arg(long)]
        modern_only: bool,
    },
    /// Serve the legacy HTTP+SSE transport (2024-11-05) at `/sse` and `/messages`; the first
    /// stdout line is the stream's URL.
    Sse {
        /// Address to bind; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Relay POSTs and DELETEs to `/mcp` to another endpoint with no MCP in between (the
    /// benchmark's bare relay, `relay.rs`); the first stdout line is the URL.
    Relay {
        /// Address to bind; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The endpoint requests go to.
        #[arg(long)]
        upstream: String,
        /// A Redis (`redis://host:port`) each request makes one round trip to first.
        #[arg(long)]
        redis: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.mode {
        Mode::Stdio => serve_stdio(cli.name).await,
        Mode::Http {
            listen,
            modern_only,
        } => http::serve(listen, cli.name, modern_only).await,
        Mode::Sse { listen } => sse::serve(listen, cli.name).await,
        Mode::Relay {
            listen,
            upstream,
            redis,
        } => relay::serve(listen, upstream, redis).await,
    }
}

/// Sends logs to stderr only, so stdout stays clean for JSON-RPC or the URL line; rmcp's own
/// INFO lines (whole messages) only when `RUST_LOG` asks for them.
fn init_tracing() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// Serves one session over stdio until the client closes stdin.
async fn serve_stdio(name: String) -> anyhow::Result<()> {
    let mut fixture = Fixture::new(name, None, Changes::default());
    fixture.over_stdio = true;
    let running = fixture
        .serve(rmcp::transport::stdio())
        .await
        .context("stdio handshake failed")?;
    let reason = running
        .waiting()
        .await
        .context("stdio service task failed")?;
    tracing::info!(?reason, "stdio session ended");
    Ok(())
}
