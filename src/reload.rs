//! Live reload of the configuration file's `[[upstreams]]`, on SIGHUP and when the file's
//! content changes.
//!
//! The file is read every `server.config_check_interval` and its digest compared with the last
//! one seen. A content check rather than an inotify watch: a Kubernetes ConfigMap update swaps
//! a symlink (`..data`) above the file, which a watch on the file itself never sees, while
//! reading one small file every few seconds costs next to nothing and sees every way of
//! changing it (rename, symlink swap, editing in place).
//!
//! A new file is loaded and validated as at start (environment overrides included). An invalid
//! one is refused: the error (with its key) is logged, `mcpgate_config_reloads_total{result=
//! "invalid"}` counts it, `mcpgate_config_last_reload_successful` turns 0, and the running
//! upstreams stay. A valid one is applied by `Gateway::reload_upstreams`; what changed outside
//! `[[upstreams]]` is named in a warning and takes effect at the next restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::{Config, ConfigError};
use crate::dispatch::Gateway;
use crate::telemetry::{Metrics, ReloadResult};
use crate::upstream::UpstreamError;

/// Why a new file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("{0}")]
    Unrunnable(String),
    #[error("cannot start the new upstreams: {0}")]
    Upstream(#[from] UpstreamError),
}

impl ReloadError {
    fn result(&self) -> ReloadResult {
        match self {
            ReloadError::Upstream(_) => ReloadResult::Failed,
            _ => ReloadResult::Invalid,
        }
    }
}

/// What the file held when last read: its digest, or why it could not be read (a change
/// either way triggers a reload; an unreadable file is then refused by `Config::load`).
#[derive(PartialEq)]
enum Seen {
    Digest(Vec<u8>),
    Unreadable(String),
}

/// Watches one configuration file for one gateway.
pub struct Reloader {
    path: PathBuf,
    running: Config,
    seen: Seen,
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// `running` is the configuration the gateway started with, read from `path`.
    pub fn new(
        path: PathBuf,
        running: Config,
        gateway: Arc<Gateway>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let seen = seen(&path);
        Self {
            path,
            running,
            seen,
            gateway,
            metrics,
        }
    }

    /// Reloads on SIGHUP and whenever the file's content changes, until the process ends.
    /// SIGHUP is caught from the call on (see [`ignore_hangups`]).
    pub fn run(self) -> impl Future<Output = ()> {
        let hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP; reloading on file changes only");
                None
            }
        };
        self.watch(hangups)
    }

    async fn watch(mut self, mut hangups: Option<Signal>) {
        let mut checks = tokio::time::interval(self.running.server.config_check_interval);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(()) = async { hangups.as_mut()?.recv().await } => {
                    tracing::info!(path = %self.path.display(), "SIGHUP: reloading the configuration");
                    self.seen = seen(&self.path);
                    self.reload().await;
                }
                _ = checks.tick() => self.reload_if_changed().await,
            }
        }
    }

    async fn reload_if_changed(&mut self) {
        let now = seen(&self.path);
        if now == self.seen {
            return;
        }
        self.seen = now;
        tracing::info!(path = %self.path.display(), "the configuration file changed: reloading it");
        self.reload().await;
    }

    /// Loads the file and applies it, or refuses it and keeps what runs.
    pub async fn reload(&mut self) {
        match self.apply().await {
            Ok(result) => self.metrics.config_reloaded(result),
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "configuration refused; the running one stays");
                self.metrics.config_reloaded(error.result());
            }
        }
    }

    async fn apply(&mut self) -> Result<ReloadResult, ReloadError> {
        let config = Config::load(Some(&self.path))?;
        let unrunnable: Vec<String> = config
            .unrunnable_commands()
            .iter()
            .map(ToString::to_string)
            .collect();
        if !unrunnable.is_empty() {
            return Err(ReloadError::Unrunnable(unrunnable.join("; ")));
        }
        let changes = self.gateway.reload_upstreams(&config.upstreams).await?;
        let restart_only = sections_changed(&self.running, &config);
        if !restart_only.is_empty() {
            tracing::warn!(sections = ?restart_only, "these sections changed and take effect at the next restart; only [[upstreams]] reloads live");
        }
        self.running.upstreams = config.upstreams;
        if changes.is_empty() {
            tracing::info!("configuration reloaded: the upstreams are unchanged");
            return Ok(ReloadResult::Unchanged);
        }
        tracing::info!(added = ?changes.added, removed = ?changes.removed, changed = ?changes.changed, "configuration reloaded: upstreams applied");
        Ok(ReloadResult::Applied)
    }
}

/// Without a configuration file there is nothing to reload: SIGHUP (whose default would end
/// the process) is only logged. It is caught from the call on, not from the returned task's
/// first poll, so a SIGHUP sent as soon as the gateway announced itself does not end it.
pub fn ignore_hangups() -> impl Future<Output = ()> {
    let hangups = signal(SignalKind::hangup());
    async move {
        let Ok(mut hangups) = hangups else {
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::warn!("SIGHUP: no --config file to reload; nothing changes");
        }
    }
}

/// The file's digest now, or why it cannot be read.
fn seen(path: &Path) -> Seen {
    match std::fs::read(path) {
        Ok(bytes) => Seen::Digest(Sha256::digest(bytes).to_vec()),
        Err(error) => Seen::Unreadable(error.to_string()),
    }
}

/// The sections other than `[[upstreams]]` that differ between `running` and `new`.
fn sections_changed(running: &Config, new: &Config) -> Vec<&'static str> {
    let sections = |config: &Config| {
        [
            ("server", serde_json::to_value(&config.server)),
            ("admin", serde_json::to_value(&config.admin)),
            ("session", serde_json::to_value(&config.session)),
            ("redis", serde_json::to_value(&config.redis)),
            ("limits", serde_json::to_value(&config.limits)),
            ("policy", serde_json::to_value(&config.policy)),
        ]
    };
    sections(running)
        .into_iter()
        .zip(sections(new))
        .filter(|((_, old), (_, new))| old.as_ref().ok() != new.as_ref().ok())
        .map(|((name, _), _)| name)
        .collect()
}
