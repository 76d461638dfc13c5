//! Per-session logging level (`logging/setLevel`) and the filtered sending of
//! `notifications/message` to the client. On the 2026-07-28 wire there is no session level: a
//! request's `_meta["io.modelcontextprotocol/logLevel"]` says what it wants, and a request
//! without one gets no log messages.
//!
//! rmcp 3.11 marks logging deprecated (SEP-2577, protocol 2026-07-28); the
//! fixture implements it anyway because the 2025-11-25 surface is under test.
#![allow(deprecated)]

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use rmcp::{
    Peer, RoleServer,
    model::{LoggingLevel, LoggingMessageNotificationParam},
    service::{RequestContext, ServiceError},
};
use serde_json::Value;

use crate::era;

/// Logger name carried by every notification the fixture sends.
const LOGGER: &str = "mcpgate-fixture";

/// Minimum severity the session wants; everything is sent until the client
/// calls `logging/setLevel`.
#[derive(Clone, Default)]
pub struct LogLevel(Arc<AtomicU8>);

impl LogLevel {
    /// Records the level asked for by `logging/setLevel`.
    pub fn set(&self, level: LoggingLevel) {
        self.0.store(severity(level), Ordering::Relaxed);
    }

    /// Sends `data` at `level` unless the session filtered that level out.
    pub async fn send(
        &self,
        peer: &Peer<RoleServer>,
        level: LoggingLevel,
        data: Value,
    ) -> Result<(), ServiceError> {
        if severity(level) < self.0.load(Ordering::Relaxed) {
            return Ok(());
        }
        notify(peer, level, data).await
    }

    /// Sends `data` at `level` while answering the request of `context`: in a legacy session
    /// as [`Self::send`] does, on the 2026-07-28 wire only if the request's own log level
    /// lets it through.
    pub async fn send_for(
        &self,
        context: &RequestContext<RoleServer>,
        level: LoggingLevel,
        data: Value,
    ) -> Result<(), ServiceError> {
        if !era::is_modern(context) {
            return self.send(&context.peer, level, data).await;
        }
        match context.meta.log_level() {
            Some(wanted) if severity(level) >= severity(wanted) => {
                notify(&context.peer, level, data).await
            }
            _ => Ok(()),
        }
    }
}

/// Sends one `notifications/message`.
async fn notify(
    peer: &Peer<RoleServer>,
    level: LoggingLevel,
    data: Value,
) -> Result<(), ServiceError> {
    let params = LoggingMessageNotificationParam::new(level, data).with_logger(LOGGER);
    peer.notify_logging_message(params).await
}

/// Rank of a level in the syslog order used by MCP (debug lowest).
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}
