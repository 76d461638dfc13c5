//! The `mcpgate` command: `serve` runs the gateway, `check-config` validates a configuration
//! and prints it with secrets redacted, `hash-key` hashes (or makes) an API key, `bench`
//! generates load on any MCP endpoint.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

use mcpgate::auth::Authenticator;
use mcpgate::config::auth::AuthMode;
use mcpgate::config::{Config, RedisMode, StoreKind};
use mcpgate::dispatch::{Backends, Bus, ExpiryEvents, Gateway, IdSigner, Settings};
use mcpgate::events::{MemoryEventLog, RedisEventLog};
use mcpgate::http::{self, HttpSettings, admin};
use mcpgate::limits::{LimitSettings, Limits};
use mcpgate::policy::Policy;
use mcpgate::redis::{RedisPool, Subscriber, pubsub};
use mcpgate::reload::Reloader;
use mcpgate::session::{MemoryStore, RedisStore, TracedStore};
use mcpgate::telemetry::{self, Metrics};
use mcpgate::upstream::Upstreams;

/// jemalloc rather than glibc's malloc: malloc and free took about 10% of a request's CPU
/// (README, Performance).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long `serve` waits for stdio upstreams before it starts listening anyway.
const UPSTREAM_SETTLE: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "mcpgate",
    version,
    about = "A horizontally scaled gateway for the Model Context Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// TOML configuration file; `MCPGATE_<SECTION>__<KEY>` variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log one JSON object per line.
        #[arg(long)]
        json_logs: bool,
    },
    /// Validate a configuration and print the effective values, secrets redacted.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the `sha256:<hex>` hash of the API key read from stdin, for `[server.auth]`.
    HashKey {
        /// Make a new random key instead, and print it with its hash.
        #[arg(long)]
        generate: bool,
    },
    /// Generate load on an MCP Streamable HTTP endpoint (ours or any) and print latency and
    /// throughput.
    #[command(after_help = mcpgate::bench::HELP)]
    Bench(Box<mcpgate::bench::BenchArgs>),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mcpgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { config } => check_config(config),
        Command::HashKey { generate } => hash_key(generate),
        Command::Bench(args) => Ok(mcpgate::bench::run(*args)?),
        Command::Serve { config, json_logs } => {
            let traces = telemetry::init_logging(json_logs)?;
            let served = Config::load(config.as_deref())
                .map_err(anyhow::Error::from)
                .and_then(|loaded| actix_web::rt::System::new().block_on(serve(loaded, config)));
            // After the drain: the spans of the last requests are sent before the process ends.
            traces.shutdown();
            served
        }
    }
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    let unrunnable = config.unrunnable_commands();
    if !unrunnable.is_empty() {
        let list: Vec<String> = unrunnable.iter().map(ToString::to_string).collect();
        anyhow::bail!("{}", list.join("\n"));
    }
    let text = toml::to_string_pretty(&config).context("cannot print the configuration")?;
    println!("# configuration is valid; effective values (secrets redacted):\n{text}");
    Ok(())
}

/// Reads the key from stdin (so it stays out of the shell history and the process list).
fn hash_key(generate: bool) -> anyhow::Result<()> {
    if generate {
        let key = mcpgate::auth::api_keys::generate_key();
        println!("key:  {key}\nhash: {}", mcpgate::auth::hash_key(&key));
        return Ok(());
    }
    let mut key = String::new();
    std::io::stdin()
        .read_line(&mut key)
        .context("cannot read the key from stdin")?;
    let key = key.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!key.is_empty(), "no key on stdin");
    println!("{}", mcpgate::auth::hash_key(key));
    Ok(())
}

/// Serves `config`, read from `path` (reloaded live when given).
async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    let auth = Authenticator::start(&config.server)
        .await
        .context("cannot start authentication")?;
    let gateway = start_gateway(&config, &metrics).await?;
    match path {
        Some(path) => {
            let reloader = Reloader::new(path, config.clone(), gateway.clone(), metrics);
            tokio::spawn(reloader.run());
        }
        None => {
            tokio::spawn(mcpgate::reload::ignore_hangups());
        }
    }

    let listener = TcpListener::bind(config.server.listen)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let admin_listener = TcpListener::bind(config.admin.listen)
        .with_context(|| format!("cannot listen on {}", config.admin.listen))?;
    let workers = config
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    mcpgate::process_limits::raise_fd_limit((workers * config.server.max_connections) as u64);
    let server = http::serve(
        listener.try_clone()?,
        gateway.clone(),
        auth,
        HttpSettings::from_config(&config.server),
        workers,
    )?;
    let admin_state = Arc::new(admin::AdminState {
        gateway,
        draining: AtomicBool::new(false),
    });
    let admin_server = admin::serve(admin_listener.try_clone()?, admin_state.clone())?;
    tokio::spawn(drain_on_signal(
        config.server.drain_grace,
        admin_state,
        server.handle(),
        admin_server.handle(),
    ));
    announce(&listener, &admin_listener)?;
    tokio::try_join!(server, admin_server).context("server failed")?;
    Ok(())
}

/// The gateway `config` describes, its upstreams given [`UPSTREAM_SETTLE`] to answer first.
async fn start_gateway(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<Arc<Gateway>> {
    let backends = backends(config, metrics)?;
    let signer = signer(config);
    report_upstream_problems(config);
    let settings = Settings::new(config.session.idle_ttl, config.session.max_lifetime)
        .with_policy(Policy::new(&config.policy))
        .with_max_held_streams(config.server.max_held_streams);
    let settings = Settings {
        request_state_ttl: config.server.request_state_ttl,
        ..settings
    };
    let upstream_configs = &config.upstreams;
    let gateway = Gateway::start(
        backends,
        |sink| Upstreams::start(upstream_configs, sink),
        signer,
        metrics.clone(),
        settings,
    )
    .context("cannot start upstreams")?;
    gateway.settle_upstreams(UPSTREAM_SETTLE).await;
    Ok(gateway)
}

/// The key signing ids and owner tags: the fleet's, or a random one. A random key is only a
/// problem where replicas share sessions (the Redis store), so only there is it a warning.
fn signer(config: &Config) -> IdSigner {
    if let Some(key) = &config.server.hmac_key {
        return IdSigner::new(key.expose().as_bytes());
    }
    if config.session.store == StoreKind::Redis {
        tracing::warn!(
            "server.hmac_key is not set: using a random key, valid for this process only; \
             replicas sharing sessions must share a key"
        );
    } else {
        tracing::info!("server.hmac_key is not set: using a random key (fine for one replica)");
    }
    IdSigner::random()
}

/// Says at start what will leave the gateway without tools: no upstreams at all, or stdio
/// upstreams whose program cannot be found (they stay down; the rest serve).
fn report_upstream_problems(config: &Config) {
    if config.upstreams.is_empty() {
        tracing::warn!(
            "no upstreams are configured: clients will see no tools (pass --config with [[upstreams]])"
        );
    }
    for problem in config.unrunnable_commands() {
        tracing::error!(%problem, "an upstream cannot start");
    }
}

/// The session store, event log and cross-replica bus the configuration asks for.
fn backends(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<Backends> {
    let session = &config.session;
    let authenticated = config.server.auth.mode != AuthMode::None;
    let limits = LimitSettings::new(&config.limits, authenticated, session.idle_ttl);
    if session.store == StoreKind::Memory {
        return Ok(Backends {
            store: Arc::new(TracedStore::new(
                MemoryStore::new(session.idle_ttl),
                "memory",
            )),
            events: Arc::new(MemoryEventLog::new(
                session.replay_window,
                session.replay_max_events,
            )),
            bus: None,
            expiry_events: None,
            limits: Limits::memory(limits, metrics.clone()),
        });
    }
    let pool = RedisPool::new(&config.redis, metrics.clone()).context("cannot configure Redis")?;
    let target = pubsub::subscriber_target(&config.redis).context("cannot configure Redis")?;
    let subscriber = Arc::new(Subscriber::start(target, config.redis.timeout));
    let events = RedisEventLog::new(
        pool.clone(),
        subscriber.clone(),
        session.replay_window,
        session.replay_max_events,
    );
    let store = Arc::new(TracedStore::new(
        RedisStore::new(pool.clone(), session.idle_ttl),
        "redis",
    ));
    let expiry_events = (config.redis.mode != RedisMode::Cluster).then(|| ExpiryEvents {
        subscriber: subscriber.clone(),
        db: mcpgate::redis::settings::database(&config.redis),
    });
    Ok(Backends {
        store,
        events: Arc::new(events),
        limits: Limits::redis(limits, pool.clone(), metrics.clone()),
        bus: Some(Bus::new(pool, subscriber)),
        expiry_events,
    })
}

/// On SIGTERM or SIGINT: readiness turns false, open SSE streams end with a `retry` hint (their
/// clients reconnect, to another replica behind a load balancer), held upstream streams are
/// released for another replica to take, requests in flight finish (for at most `grace`,
/// `server.drain_grace`), then the listeners stop.
///
/// The signals are caught from the call on, not from the returned task's first poll: until a
/// handler is installed, SIGTERM and SIGINT end the process at once, so a signal sent as soon as
/// the gateway announced itself would skip the drain.
fn drain_on_signal(
    grace: Duration,
    admin: Arc<admin::AdminState>,
    server: ServerHandle,
    admin_server: ServerHandle,
) -> impl Future<Output = ()> {
    let signals = signal(SignalKind::terminate())
        .and_then(|terminate| Ok((terminate, signal(SignalKind::interrupt())?)));
    async move {
        let (mut terminate, mut interrupt) = match signals {
            Ok(signals) => signals,
            Err(error) => {
                return tracing::error!(%error, "cannot listen for SIGTERM and SIGINT; no draining");
            }
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        drain(grace, admin, server, admin_server).await;
    }
}

async fn drain(
    grace: Duration,
    admin: Arc<admin::AdminState>,
    server: ServerHandle,
    admin_server: ServerHandle,
) {
    tracing::info!("draining: not ready, ending SSE streams, finishing requests in flight");
    admin.draining.store(true, Ordering::Relaxed);
    admin.gateway.drain();
    let deadline = tokio::time::Instant::now() + grace;
    while admin.gateway.is_busy() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop(true).await;
    admin_server.stop(true).await;
}

/// Tells whoever started us where we listen (first lines of stdout), so tests can use port 0.
fn announce(listener: &TcpListener, admin: &TcpListener) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}/mcp", listener.local_addr()?)?;
    writeln!(stdout, "admin on http://{}", admin.local_addr()?)?;
    stdout.flush()?;
    tracing::info!(mcp = %listener.local_addr()?, admin = %admin.local_addr()?, "mcpgate is serving");
    Ok(())
}
