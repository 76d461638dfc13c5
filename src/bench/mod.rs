//! `mcpgate bench`: a load generator for any MCP Streamable HTTP endpoint, in the manner of
//! wrk: `--connections` keep-alive HTTP/1.1 connections, one worker each, one request at a
//! time, on hyper's low-level client and a multi-thread tokio runtime.
//!
//! `options.rs` checks the command line into a plan; `modes.rs` runs the worker loops
//! (`phases.rs`: a session's steps) under `control.rs` (warm-up, time, budget, progress line);
//! `client.rs` is one connection, `reply.rs` judges an answer (JSON or SSE), `rpc.rs` holds the
//! bodies; `record.rs` collects the figures and `report.rs` prints them.

mod client;
mod control;
mod modes;
mod options;
mod phases;
mod record;
mod reply;
mod report;
mod rpc;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::header::HeaderValue;

pub use options::{BenchArgs, HELP, OptionError};
use report::Report;

/// Why a run could not be made or measured nothing.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Options(#[from] OptionError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("a worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
    #[error("cannot write --ids-out {path}: {source}")]
    WriteIds {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot print the report: {0}")]
    Print(std::io::Error),
    #[error("nothing could be measured: no measured request got an HTTP answer")]
    NothingMeasured,
}

/// Runs the load, prints the report, and fails when nothing could be measured.
pub fn run(args: BenchArgs) -> Result<(), BenchError> {
    let plan = Arc::new(options::Plan::new(args)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let measured = runtime.block_on(modes::run(plan.clone()))?;
    if let Some(path) = &plan.ids_out {
        write_ids(path, &measured.ids)?;
    }
    let report = Report::new(&plan, &measured);
    print(&report, plan.json)?;
    if measured.recorder.statuses.is_empty() {
        return Err(BenchError::NothingMeasured);
    }
    Ok(())
}

fn print(report: &Report, json: bool) -> Result<(), BenchError> {
    let text = match json {
        true => serde_json::to_string(report).map_err(|e| BenchError::Print(e.into()))? + "\n",
        false => report.table(),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(BenchError::Print)
}

fn write_ids(path: &Path, ids: &[HeaderValue]) -> Result<(), BenchError> {
    let text: String = ids
        .iter()
        .filter_map(|id| id.to_str().ok())
        .map(|id| format!("{id}\n"))
        .collect();
    std::fs::write(path, text).map_err(|source| BenchError::WriteIds {
        path: path.to_owned(),
        source,
    })
}
