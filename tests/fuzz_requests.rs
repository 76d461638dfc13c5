//! Fuzzing of the request path, headers and body into the dispatcher (issue 7), with proptest
//! against one real gateway (memory store, the stdio fixture as `local`).
//!
//! Requests go over a raw TCP socket, so anything can be sent: odd methods, paths and
//! versions, repeated, non-ASCII and huge headers, wrong Content-Lengths, broken chunks, and
//! bodies from valid JSON-RPC of every MCP method to deep nesting and invalid UTF-8. Half the
//! cases name one of two live, initialized sessions (2025-11-25 and 2025-03-26, for batches)
//! so that they reach the dispatcher. Every answer must be a well-formed HTTP/1.1 response
//! within 10 s (the head only, for SSE) whose refusals carry a JSON-RPC error body, unless
//! actix-http answered below our handlers (`check::TRANSPORT_STATUSES`). Afterwards the
//! gateway still answers `local__echo` and its log shows no panic.
//!
//! The seed corpus `tests/fuzz/corpus/*.http` is replayed first, then proptest's regressions
//! (`proptest-regressions/fuzz_requests.txt`), then `MCPGATE_FUZZ_CASES` generated cases
//! (1000 by default: about 15 s on two cores).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use crate::fuzz;
use crate::fuzz::answer::{self, ANSWER_TIMEOUT, Answer};
use crate::fuzz::check;
use crate::fuzz::sent::Sent;
use crate::fuzz::{BATCH_SESSION, HOST, RawRequest, SESSION};
use crate::support::{BATCH_VERSION, Gateway, LATEST, Session};

/// Generated cases unless `MCPGATE_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u32 = 1000;
const CASES_VAR: &str = "MCPGATE_FUZZ_CASES";
/// proptest's seeds of past failures, replayed before new cases (kept in the repository).
const REGRESSIONS: &str = "proptest-regressions/fuzz_requests.txt";

/// Seeds, regressions and generated requests against one gateway; see the module doc.
#[test]
fn every_request_gets_a_well_formed_answer() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("cannot build a runtime");
    let fuzzer = runtime.block_on(Fuzzer::start());
    let started = Instant::now();
    replay_corpus(&runtime, &fuzzer);
    let cases = cases();
    run_generated(&runtime, &fuzzer, cases);
    runtime.block_on(fuzzer.assert_still_serving());
    fuzzer.assert_dispatcher_reached(cases);
    eprintln!(
        "{cases} generated cases in {:.1?}; answers by status: {:?}",
        started.elapsed(),
        fuzzer.statuses.borrow()
    );
}

/// How many cases to generate.
fn cases() -> u32 {
    std::env::var(CASES_VAR).map_or(DEFAULT_CASES, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{CASES_VAR}={v:?} is not a number of cases"))
    })
}

/// Every seed of the corpus; all failures are reported together.
fn replay_corpus(runtime: &Runtime, fuzzer: &Fuzzer) {
    let failures: Vec<String> = fuzz::corpus()
        .into_iter()
        .filter_map(|(name, seed)| {
            let result = runtime.block_on(fuzzer.run(&seed));
            result.err().map(|e| format!("{name}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "seeds answered badly:\n{}",
        failures.join("\n")
    );
}

/// proptest's regressions, then `cases` new requests (shrunk to a small one on failure).
fn run_generated(runtime: &Runtime, fuzzer: &Fuzzer, cases: u32) {
    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        max_shrink_iters: 512,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&fuzz::generate::request(), |request| {
        runtime
            .block_on(fuzzer.run(&request))
            .map_err(TestCaseError::fail)
    });
    if let Err(error) = result {
        panic!("{error}{}", fuzzer.trouble_report());
    }
}

/// The sessions requests may name, by placeholder.
struct Live {
    latest: Session,
    batch: Session,
}

/// One gateway, its live sessions and what the cases found.
struct Fuzzer {
    gateway: Gateway,
    live: RefCell<Live>,
    /// How many answers of each status the cases got (0: the connection closed unanswered).
    statuses: RefCell<BTreeMap<u16, u32>>,
    /// The first request after which the gateway exited or its log showed a panic, with the log.
    trouble: RefCell<Option<String>>,
}

/// Capabilities of the live sessions, so that upstream requests to the client reach them.
fn capabilities() -> Value {
    json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}})
}

impl Fuzzer {
    /// Starts the gateway with short body and head timeouts (so that requests whose body never
    /// ends cost half a second), a 64 KiB body limit and a 3 s upstream timeout.
    async fn start() -> Fuzzer {
        let gateway = Gateway::builder()
            .server("max_body_bytes = 65536")
            .server("body_read_timeout = \"500ms\"")
            .server("header_read_timeout = \"1s\"")
            .local("timeout = \"3s\"")
            .start()
            .await;
        let live = Live {
            latest: gateway.initialize_with(LATEST, capabilities()).await,
            batch: gateway.initialize_with(BATCH_VERSION, capabilities()).await,
        };
        Fuzzer {
            gateway,
            live: RefCell::new(live),
            statuses: RefCell::default(),
            trouble: RefCell::default(),
        }
    }

    /// What the placeholders stand for now.
    fn values(&self) -> [(&'static str, String); 3] {
        let live = self.live.borrow();
        [
            (HOST, self.gateway.authority.clone()),
            (SESSION, live.latest.id.clone()),
            (BATCH_SESSION, live.batch.id.clone()),
        ]
    }

    /// Sends one request and judges its answer, then looks for trouble. Once the gateway is in
    /// trouble, cases pass unsent: the trouble is reported at the end, and shrinking on a dead
    /// gateway would only mislead.
    async fn run(&self, request: &RawRequest) -> Result<(), String> {
        if self.trouble.borrow().is_some() {
            return Ok(());
        }
        let outcome = self.exchange(request).await;
        self.note_trouble(request);
        outcome
    }

    /// Sends one request and judges its answer.
    async fn exchange(&self, request: &RawRequest) -> Result<(), String> {
        let values = self.values();
        let pairs: Vec<(&str, &str)> = values.iter().map(|(p, v)| (*p, v.as_str())).collect();
        let bytes = request.render(&pairs);
        let sent = Sent::of(&bytes);
        let exchange = answer::exchange(&self.gateway.authority, bytes, &sent);
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {ANSWER_TIMEOUT:?}"))??;
        let answer = answer.ok_or("the connection closed without an answer")?;
        check::acceptable(&answer, &sent).map_err(|e| format!("{e}: {}", answer.describe()))?;
        *self.statuses.borrow_mut().entry(answer.status).or_default() += 1;
        self.renew_deleted(request, &sent, &answer).await;
        Ok(())
    }

    /// A live session a DELETE ended is replaced, so that later cases still reach the
    /// dispatcher.
    async fn renew_deleted(&self, request: &RawRequest, sent: &Sent, answer: &Answer) {
        if sent.method != b"DELETE" || answer.status != 204 {
            return;
        }
        if request.mentions(SESSION) {
            let session = self.gateway.initialize_with(LATEST, capabilities()).await;
            self.live.borrow_mut().latest = session;
        }
        if request.mentions(BATCH_SESSION) {
            let session = self
                .gateway
                .initialize_with(BATCH_VERSION, capabilities())
                .await;
            self.live.borrow_mut().batch = session;
        }
    }

    /// Remembers the first request after which the gateway exited or its log shows a panic
    /// (or a fatal runtime error, such as a stack overflow).
    fn note_trouble(&self, request: &RawRequest) {
        let log = self.gateway.log();
        let panicked = ["panicked", "fatal runtime error", "overflowed its stack"]
            .iter()
            .any(|sign| log.contains(sign));
        if panicked || !self.gateway_alive() {
            *self.trouble.borrow_mut() = Some(format!("after {request:?}\n--- log ---\n{log}"));
        }
    }

    /// Whether the gateway process still runs (it is never reaped, so an exited one is a
    /// zombie).
    fn gateway_alive(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.gateway.pid()));
        stat.is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    }

    /// The trouble noted, if any, for a failure message.
    fn trouble_report(&self) -> String {
        match self.trouble.borrow().as_ref() {
            Some(trouble) => format!("\nthe gateway exited or panicked {trouble}"),
            None => String::new(),
        }
    }

    /// The gateway survived: alive, no panic in its log, and `local__echo` still works.
    async fn assert_still_serving(&self) {
        if let Some(trouble) = self.trouble.borrow().as_ref() {
            panic!("the gateway exited or panicked {trouble}");
        }
        let session = self.live.borrow().latest.clone();
        self.gateway.assert_echo(&session, "the fuzz run").await;
    }

    /// At least one case in twenty was served by the dispatcher (200 or 202; about one in
    /// eight is): the fuzz did not stop at the header checks. Too few cases say nothing.
    fn assert_dispatcher_reached(&self, cases: u32) {
        let statuses = self.statuses.borrow();
        let served = statuses.get(&200).unwrap_or(&0) + statuses.get(&202).unwrap_or(&0);
        assert!(
            cases < 100 || served >= cases / 20,
            "only {served} of {cases} cases were served ({statuses:?}): the generators no \
             longer reach the dispatcher"
        );
    }
}
