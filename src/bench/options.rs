//! The options of `mcpgate bench` and their checks: [`BenchArgs`] is what the command line
//! says, [`Plan`] what a run does with it (defaults resolved per mode, bodies serialized,
//! headers parsed, the endpoint resolved). Header values are secrets: no error names them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use hyper::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::client::{Target, TargetError};
use super::rpc::{Call, Messages};

/// Said after the options in `mcpgate bench --help`.
pub const HELP: &str = "\
Modes (one iteration each):
  calls     one request of the method mix on one of the sessions opened before the run
            (--sessions, spread round robin over the connections), or on a random id of --ids-in
  sessions  a whole session: initialize, notifications/initialized, one request, DELETE;
            each phase is measured too, and the rate is lifecycles per second
  revival   a session opened on --revive-from and used there by one request (not measured;
            each worker has a connection there too), its first request on --url (`first`), one
            more (`steady`), then DELETE (not measured); two requests counted
  idle      initialize + notifications/initialized, the session left open (--ids-out)

Bounds: a run stops after the warm-up plus --duration (10s; 60s in idle mode), or after
--requests measured requests, whichever comes first; requests in flight then finish (each within
--timeout). --sessions also bounds the sessions and revival modes, and sets how many sessions
idle mode creates. Idle mode has no warm-up.

What counts: requests started after the warm-up. Latency is of successful ones (microseconds,
3 significant digits); `errors` counts every failed exchange after the warm-up, session setup
included (connect, connection, timeout, http_<status>, jsonrpc_error, bad_response); `statuses`
counts the HTTP statuses of measured requests. The exit status is non-zero for unusable options,
and when no measured request got an HTTP answer (the report is printed all the same).";

/// Which load to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Calls,
    Sessions,
    Revival,
    Idle,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Calls => "calls",
            Mode::Sessions => "sessions",
            Mode::Revival => "revival",
            Mode::Idle => "idle",
        }
    }
}

/// A method of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodKind {
    #[value(name = "tools/call")]
    ToolsCall,
    #[value(name = "tools/list")]
    ToolsList,
    #[value(name = "resources/read")]
    ResourcesRead,
}

/// `mcpgate bench`: a load generator for any MCP Streamable HTTP endpoint.
#[derive(Clone, Args)]
pub struct BenchArgs {
    /// The MCP endpoint, e.g. http://127.0.0.1:8080/mcp (plain HTTP/1.1; no https).
    #[arg(long)]
    pub url: String,
    /// What one iteration is (see "Modes" below).
    #[arg(long, value_enum, default_value_t = Mode::Calls)]
    pub mode: Mode,
    /// Concurrent keep-alive connections, one worker each, one request at a time on each.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Sessions to open (calls; default: --connections), to create (idle; default:
    /// --connections), or at most (sessions, revival; default: no bound).
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Measured time after the warm-up [default: 10s; 60s in idle mode].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many measured requests (sessions: lifecycles; idle: sessions).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Requests are sent but not recorded for this long first.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// The method mix, sent round robin: repeat the option or give a comma list.
    #[arg(
        long = "method",
        value_enum,
        value_delimiter = ',',
        default_value = "tools/call"
    )]
    pub methods: Vec<MethodKind>,
    /// The tool of tools/call.
    #[arg(long, default_value = "echo")]
    pub tool: String,
    /// The arguments of tools/call, a JSON object.
    #[arg(long, default_value = r#"{"text":"bench"}"#)]
    pub arguments: String,
    /// The URI of resources/read.
    #[arg(long)]
    pub uri: Option<String>,
    /// 'Name: value', sent with every request (repeatable); values are never printed.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Sent in initialize and as MCP-Protocol-Version.
    #[arg(long, default_value = "2025-11-25")]
    pub protocol_version: String,
    /// Longest wait for one request, connecting included.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Print one JSON object on stdout instead of the table (and no progress line).
    #[arg(long)]
    pub json: bool,
    /// Revival mode: the replica that opens the sessions --url then serves.
    #[arg(long)]
    pub revive_from: Option<String>,
    /// Idle mode: write the created session ids here, one a line.
    #[arg(long)]
    pub ids_out: Option<PathBuf>,
    /// Calls mode: use these session ids (one a line, a random one per request) instead of
    /// opening sessions.
    #[arg(long)]
    pub ids_in: Option<PathBuf>,
}

/// Options that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error("--{option} {problem}")]
    Endpoint {
        option: &'static str,
        problem: TargetError,
    },
    #[error("--header number {0} is not 'Name: value'")]
    Header(usize),
    #[error("--header {0}: the value is not a valid header value")]
    HeaderValue(String),
    #[error("--protocol-version is not a valid header value")]
    ProtocolVersion,
    #[error("--arguments is not a JSON object")]
    Arguments,
    #[error("--method resources/read needs --uri")]
    MissingUri,
    #[error("--mode revival needs --revive-from")]
    MissingReviveFrom,
    #[error("--{option} works in {mode} mode only")]
    WrongMode {
        option: &'static str,
        mode: &'static str,
    },
    #[error("cannot read --ids-in {path}: {source}")]
    ReadIds {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--ids-in {path}: line {line} is not a valid session id")]
    BadId { path: PathBuf, line: usize },
    #[error("--ids-in {0} holds no session id")]
    NoIds(PathBuf),
}

/// A run, checked and ready.
pub struct Plan {
    pub mode: Mode,
    pub target: Arc<Target>,
    pub revive_from: Option<Arc<Target>>,
    pub connections: usize,
    /// Calls: sessions to open; idle: sessions to create; others: an optional bound.
    pub sessions: Option<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    /// Measured iterations at most (see [`Plan::budget`]).
    pub budget: Option<u64>,
    pub messages: Messages,
    pub ids_in: Option<Arc<Vec<HeaderValue>>>,
    pub ids_out: Option<PathBuf>,
    pub json: bool,
}

impl Plan {
    pub fn new(args: BenchArgs) -> Result<Plan, OptionError> {
        check_counts(&args)?;
        check_modes(&args)?;
        let headers = Arc::new(parse_headers(&args.headers)?);
        let version = HeaderValue::from_str(&args.protocol_version)
            .map_err(|_| OptionError::ProtocolVersion)?;
        let endpoint = |option: &'static str, url: &str| {
            Target::new(url, headers.clone(), version.clone(), args.timeout)
                .map(Arc::new)
                .map_err(|problem| OptionError::Endpoint { option, problem })
        };
        let target = endpoint("url", &args.url)?;
        let revive_from = args
            .revive_from
            .as_deref()
            .map(|url| endpoint("revive-from", url))
            .transpose()?;
        let ids_in = args.ids_in.as_deref().map(read_ids).transpose()?;
        Ok(Plan {
            mode: args.mode,
            target,
            revive_from,
            connections: args.connections,
            sessions: sessions(&args),
            duration: duration(&args),
            warmup: warmup(&args),
            budget: budget(&args),
            messages: messages(&args)?,
            ids_in: ids_in.map(Arc::new),
            ids_out: args.ids_out,
            json: args.json,
        })
    }
}

fn check_counts(args: &BenchArgs) -> Result<(), OptionError> {
    let zero = [
        ("connections", args.connections == 0),
        ("sessions", args.sessions == Some(0)),
        ("requests", args.requests == Some(0)),
        ("duration", args.duration == Some(Duration::ZERO)),
        ("timeout", args.timeout.is_zero()),
    ];
    match zero.into_iter().find(|(_, is_zero)| *is_zero) {
        Some((option, _)) => Err(OptionError::Zero(option)),
        None => Ok(()),
    }
}

/// Options that belong to one mode only.
fn check_modes(args: &BenchArgs) -> Result<(), OptionError> {
    let wrong = |option, mode: Mode| OptionError::WrongMode {
        option,
        mode: mode.name(),
    };
    if args.mode == Mode::Revival && args.revive_from.is_none() {
        return Err(OptionError::MissingReviveFrom);
    }
    if args.mode != Mode::Revival && args.revive_from.is_some() {
        return Err(wrong("revive-from", Mode::Revival));
    }
    if args.mode != Mode::Idle && args.ids_out.is_some() {
        return Err(wrong("ids-out", Mode::Idle));
    }
    if args.mode != Mode::Calls && args.ids_in.is_some() {
        return Err(wrong("ids-in", Mode::Calls));
    }
    Ok(())
}

fn parse_headers(raw: &[String]) -> Result<Vec<(HeaderName, HeaderValue)>, OptionError> {
    raw.iter()
        .enumerate()
        .map(|(index, line)| {
            let (name, value) = line.split_once(':').ok_or(OptionError::Header(index + 1))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| OptionError::Header(index + 1))?;
            let mut value = HeaderValue::from_str(value.trim())
                .map_err(|_| OptionError::HeaderValue(name.to_string()))?;
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect()
}

fn sessions(args: &BenchArgs) -> Option<usize> {
    match args.mode {
        Mode::Calls | Mode::Idle => Some(args.sessions.unwrap_or(args.connections)),
        Mode::Sessions | Mode::Revival => args.sessions,
    }
}

fn duration(args: &BenchArgs) -> Duration {
    let default = match args.mode {
        Mode::Idle => Duration::from_secs(60),
        _ => Duration::from_secs(10),
    };
    args.duration.unwrap_or(default)
}

fn warmup(args: &BenchArgs) -> Duration {
    match args.mode {
        Mode::Idle => Duration::ZERO,
        _ => args.warmup,
    }
}

/// Measured iterations at most: requests (calls), lifecycles (sessions), sessions revived
/// (revival, two requests each) or created (idle).
fn budget(args: &BenchArgs) -> Option<u64> {
    let sessions = sessions(args).map(|s| s as u64);
    let (requests, sessions) = match args.mode {
        Mode::Calls => (args.requests, None),
        Mode::Revival => (args.requests.map(|r| r.div_ceil(2)), sessions),
        Mode::Sessions | Mode::Idle => (args.requests, sessions),
    };
    [requests, sessions].into_iter().flatten().min()
}

fn messages(args: &BenchArgs) -> Result<Messages, OptionError> {
    let arguments: Value = serde_json::from_str(&args.arguments)
        .ok()
        .filter(Value::is_object)
        .ok_or(OptionError::Arguments)?;
    let calls = args
        .methods
        .iter()
        .map(|method| match method {
            MethodKind::ToolsCall => Ok(Call::tool(&args.tool, &arguments)),
            MethodKind::ToolsList => Ok(Call::list_tools()),
            MethodKind::ResourcesRead => args
                .uri
                .as_deref()
                .map(Call::read_resource)
                .ok_or(OptionError::MissingUri),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Messages::new(&args.protocol_version, calls))
}

fn read_ids(path: &std::path::Path) -> Result<Vec<HeaderValue>, OptionError> {
    let text = std::fs::read_to_string(path).map_err(|source| OptionError::ReadIds {
        path: path.to_owned(),
        source,
    })?;
    let ids = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            HeaderValue::from_str(line.trim()).map_err(|_| OptionError::BadId {
                path: path.to_owned(),
                line: index + 1,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(OptionError::NoIds(path.to_owned()));
    }
    Ok(ids)
}
