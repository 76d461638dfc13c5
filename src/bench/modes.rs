//! The four modes, each a loop per worker (one connection, one request at a time) bounded by
//! the shared [`Control`]: `calls`, `sessions`, `revival` and `idle` (see `HELP`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use rand::RngExt;
use tokio::task::JoinError;
use tokio::time::Instant;

use super::client::{Connection, Exchange, Failure, Kind};
use super::control::{Control, Slot};
use super::options::{Mode, Plan};
use super::phases;
use super::record::Recorder;
use super::rpc::Bodies;

/// How long a worker waits after a refused connection before it tries again.
const CONNECT_PAUSE: Duration = Duration::from_millis(10);

/// What a run measured.
pub struct Measured {
    pub recorder: Recorder,
    /// From the end of the warm-up to the end of the last worker.
    pub window: Duration,
    /// The session ids idle mode created.
    pub ids: Vec<HeaderValue>,
}

pub async fn run(plan: Arc<Plan>) -> Result<Measured, JoinError> {
    match plan.mode {
        Mode::Calls => calls(plan).await,
        Mode::Sessions => measure(&plan, sessions).await,
        Mode::Revival => measure(&plan, revival).await,
        Mode::Idle => measure(&plan, idle).await,
    }
}

/// One worker: its connection, its bodies, what it recorded.
struct Worker {
    plan: Arc<Plan>,
    connection: Connection,
    bodies: Bodies,
    recorder: Recorder,
}

impl Worker {
    fn new(plan: Arc<Plan>, index: usize) -> Worker {
        Worker {
            connection: Connection::new(plan.target.clone()),
            bodies: plan.messages.bodies(index + 1),
            recorder: Recorder::default(),
            plan,
        }
    }
}

/// What a worker hands back: its recorder, and the ids of the sessions it left open.
type Done = (Recorder, Vec<HeaderValue>);

/// Runs one worker loop per connection under one [`Control`], and merges what they saw.
async fn measure<F, L>(plan: &Arc<Plan>, worker_loop: L) -> Result<Measured, JoinError>
where
    L: Fn(Worker, Arc<Control>) -> F,
    F: Future<Output = Done> + Send + 'static,
{
    let workers = (0..plan.connections).map(|index| Worker::new(plan.clone(), index));
    run_workers(plan, workers.collect(), worker_loop).await
}

async fn run_workers<W, F, L>(
    plan: &Plan,
    workers: Vec<W>,
    worker_loop: L,
) -> Result<Measured, JoinError>
where
    L: Fn(W, Arc<Control>) -> F,
    F: Future<Output = Done> + Send + 'static,
{
    let control = Arc::new(Control::new(plan.warmup, plan.duration, plan.budget));
    let progress = control.progress(!plan.json);
    let loops = workers.into_iter().map(|w| worker_loop(w, control.clone()));
    let done = join(loops).await;
    progress.finish();
    let mut measured = Measured {
        recorder: Recorder::default(),
        window: Instant::now().saturating_duration_since(control.start),
        ids: Vec::new(),
    };
    for (recorder, ids) in done? {
        measured.recorder.merge(recorder);
        measured.ids.extend(ids);
    }
    Ok(measured)
}

/// Spawns every task, then waits for all of them.
async fn join<T: Send + 'static>(
    tasks: impl Iterator<Item = impl Future<Output = T> + Send + 'static>,
) -> Result<Vec<T>, JoinError> {
    let handles: Vec<_> = tasks.map(tokio::spawn).collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await?);
    }
    Ok(results)
}

/// Calls mode: sessions opened first (or taken from `--ids-in`), then the measured calls.
async fn calls(plan: Arc<Plan>) -> Result<Measured, JoinError> {
    let setups = (0..plan.connections).map(|index| open_sessions(plan.clone(), index));
    let workers = join(setups).await?;
    let opened: Vec<HeaderValue> = workers.iter().flat_map(|(_, ids)| ids.clone()).collect();
    let workers = workers
        .into_iter()
        .enumerate()
        .map(|(index, (worker, own))| (worker, Picker::new(&plan, index, own, &opened)))
        .collect();
    let mut measured = run_workers(&plan, workers, |(worker, picker), control| {
        calls_loop(worker, control, picker)
    })
    .await?;
    if let Some(ids) = &plan.ids_in {
        measured.recorder.sessions = ids.len() as u64;
    }
    Ok(measured)
}

/// Opens this worker's share of `--sessions` (round robin over the connections).
async fn open_sessions(plan: Arc<Plan>, index: usize) -> (Worker, Vec<HeaderValue>) {
    let sessions = match plan.ids_in {
        Some(_) => 0,
        None => plan.sessions.unwrap_or(plan.connections),
    };
    let share = sessions / plan.connections + usize::from(index < sessions % plan.connections);
    let mut worker = Worker::new(plan, index);
    let mut ids = Vec::new();
    for _ in 0..share {
        let opening = phases::open(&mut worker.connection, &worker.bodies).await;
        opening.record_failures(&mut worker.recorder);
        worker.recorder.sessions += u64::from(opening.opened());
        ids.extend(opening.session().cloned());
        pause_after(opening.last()).await;
    }
    (worker, ids)
}

/// Which session a calls-mode request goes to.
enum Picker {
    /// The endpoint issued none.
    None,
    /// This worker's own sessions, in turn.
    RoundRobin(Vec<HeaderValue>, usize),
    /// A random one of `--ids-in`.
    Random(Arc<Vec<HeaderValue>>),
}

impl Picker {
    /// A worker that opened no session uses one of the others' (more connections than
    /// sessions).
    fn new(plan: &Plan, index: usize, own: Vec<HeaderValue>, all: &[HeaderValue]) -> Picker {
        if let Some(ids) = &plan.ids_in {
            return Picker::Random(ids.clone());
        }
        match (own.is_empty(), all.is_empty()) {
            (false, _) => Picker::RoundRobin(own, 0),
            (true, false) => Picker::RoundRobin(vec![all[index % all.len()].clone()], 0),
            (true, true) => Picker::None,
        }
    }

    fn next(&mut self) -> Option<&HeaderValue> {
        match self {
            Picker::None => None,
            Picker::RoundRobin(ids, next) => {
                let current = *next;
                *next = (current + 1) % ids.len();
                ids.get(current)
            }
            Picker::Random(ids) => ids.get(rand::rng().random_range(0..ids.len())),
        }
    }
}

async fn calls_loop(mut w: Worker, control: Arc<Control>, mut picker: Picker) -> Done {
    while let Some(slot) = control.next() {
        let body = w.bodies.next_call();
        let answer = w.connection.send(Kind::Request, body, picker.next()).await;
        if slot == Slot::Measured {
            record_request(&mut w.recorder, &control, &answer, None);
        }
        pause_after(Some(&answer)).await;
    }
    (w.recorder, Vec::new())
}

/// Sessions mode: whole lifecycles, each phase recorded under its name.
async fn sessions(mut w: Worker, control: Arc<Control>) -> Done {
    while let Some(slot) = control.next() {
        let lifecycle = phases::lifecycle(&mut w.connection, &mut w.bodies).await;
        if slot == Slot::Measured {
            lifecycle.record(&mut w.recorder, true);
            control.done(lifecycle.is_ok());
        }
        pause_after(lifecycle.last()).await;
    }
    (w.recorder, Vec::new())
}

/// Idle mode: sessions created and left open; their ids handed back.
async fn idle(mut w: Worker, control: Arc<Control>) -> Done {
    let mut ids = Vec::new();
    while let Some(slot) = control.next() {
        let opening = phases::open(&mut w.connection, &w.bodies).await;
        if slot == Slot::Measured {
            opening.record(&mut w.recorder, false);
            control.done(opening.is_ok());
        }
        ids.extend(opening.session().cloned());
        pause_after(opening.last()).await;
    }
    (w.recorder, ids)
}

/// Revival mode: a session opened and used once on `--revive-from` (so that its upstream
/// sessions are open), then `first` and `steady` on `--url`, then deleted there.
async fn revival(mut w: Worker, control: Arc<Control>) -> Done {
    let from = w.plan.revive_from.clone().unwrap_or(w.plan.target.clone());
    let mut from = Connection::new(from);
    while let Some(slot) = control.next() {
        let measured = slot == Slot::Measured;
        let opening = phases::open_and_call(&mut from, &mut w.bodies).await;
        if measured {
            opening.record_failures(&mut w.recorder);
        }
        if !opening.is_ok() {
            pause_after(opening.last()).await;
            continue;
        }
        let session = opening.session().cloned();
        for phase in ["first", "steady"] {
            let body = w.bodies.next_call();
            let answer = w
                .connection
                .send(Kind::Request, body, session.as_ref())
                .await;
            if measured {
                record_request(&mut w.recorder, &control, &answer, Some(phase));
            }
        }
        if let Some(session) = session {
            let deleted = phases::delete(&mut w.connection, &session).await;
            if measured {
                w.recorder.failure(&deleted);
            }
        }
        w.recorder.sessions += u64::from(measured);
    }
    (w.recorder, Vec::new())
}

/// One measured request, recorded under `phase` too when given.
fn record_request(
    recorder: &mut Recorder,
    control: &Control,
    answer: &Exchange,
    phase: Option<&'static str>,
) {
    recorder.exchange(answer, phase);
    recorder.iteration(answer.is_ok().then_some(answer.elapsed));
    control.done(answer.is_ok());
}

/// A short pause after a refused connection, so that a dead endpoint is not spun on.
async fn pause_after(exchange: Option<&Exchange>) {
    if exchange.is_some_and(|e| e.result == Err(Failure::Connect)) {
        tokio::time::sleep(CONNECT_PAUSE).await;
    }
}
