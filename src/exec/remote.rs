//! The executor's worker pool: worker processes started by a [`Launcher`] (this machine or a
//! cluster) connect back over the process runner's TCP transport and run items of registered
//! [`Function`](super::Function)s.
//!
//! This is the process runner's machinery with items instead of blocks: the same server,
//! frames, token handshake, heartbeats, death timeout and lifetime retirement
//! ([`crate::run`]), the same launchers, worker contexts, log files and pacing. What differs is
//! the source of work: a queue fed by the executor's calls instead of the block scheduler. All
//! sockets, clocks and processes live on one driver thread.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};

use super::CallError;
use super::work::{ErasedFn, store_raw};
use crate::error::Error;
use crate::error::WorkerErrorKind;
use crate::fleet::budget::{Budget, Requirement};
use crate::fleet::context::Context;
use crate::fleet::jobs::requeue_front;
use crate::fleet::link::Link;
use crate::fleet::protocol::{
    ItemOutcome, ItemsRef, MAX_FRAME, ServerMsg, WireItem, WireItemRef, WorkerMsg, to_frame,
};
use crate::fleet::server::Event;
use crate::fleet::{
    Demand, Fleet, FleetError, Group, Loss, LossKind, Peer, ProcessOptions, Source,
};

/// How often an item is tried on workers that are lost while running it (dask's
/// `allowed-failures` + 1).
const ATTEMPTS: u32 = 3;

/// The prefix of a pool's id in worker contexts (task ids of block runs never need it).
pub(crate) const POOL_PREFIX: &str = "blockwise-executor:";

/// One call of a registered function on one item.
pub(crate) struct Call {
    pub(crate) func: Arc<str>,
    pub(crate) input: serde_json::Value,
    /// Asked just before the item goes to a worker; false drops it (cancelled).
    pub(crate) start: Option<Box<dyn FnOnce() -> bool + Send>>,
    /// Gets the result (or the error text); called once, on the pool's thread.
    pub(crate) done: Box<dyn FnOnce(Result<serde_json::Value, CallError>) + Send>,
    /// The item's time limit on a worker (`None`: none); a worker running it longer is to be
    /// killed and the item failed with the timeout.
    pub(crate) timeout: Option<Duration>,
    attempts: u32,
}

impl Call {
    pub(crate) fn new(
        func: Arc<str>,
        input: serde_json::Value,
        start: Option<Box<dyn FnOnce() -> bool + Send>>,
        timeout: Option<Duration>,
        done: Box<dyn FnOnce(Result<serde_json::Value, CallError>) + Send>,
    ) -> Call {
        Call {
            func,
            input,
            start,
            done,
            timeout,
            attempts: 0,
        }
    }
}

enum Cmd {
    Call(Call),
    Data {
        name: String,
        value: serde_json::Value,
    },
}

/// Settings of a pool (from [`ExecutorBuilder`](super::ExecutorBuilder)).
pub(crate) struct PoolOptions {
    pub(crate) name: String,
    /// What one worker needs of `budget`.
    pub(crate) need: Requirement,
    pub(crate) budget: Budget,
    pub(crate) workers: usize,
    pub(crate) prefetch: usize,
    pub(crate) max_worker_restarts: u32,
    pub(crate) process: ProcessOptions,
    pub(crate) functions: HashMap<String, ErasedFn>,
    /// Stops the pool like Ctrl-C when cancelled.
    pub(crate) cancel: Option<crate::Cancel>,
}

/// Workers connected now, shared with the executor for [`wait_for_workers`].
///
/// [`wait_for_workers`]: super::Executor::wait_for_workers
#[derive(Default)]
pub(crate) struct Connected {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Connected {
    fn set(&self, n: usize) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) = n;
        self.changed.notify_all();
    }

    pub(crate) fn get(&self) -> usize {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = self
                .changed
                .wait_timeout(count, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// A running pool. Dropping it lets every submitted item finish, then stops the workers and
/// cancels their jobs.
pub(crate) struct RemotePool {
    tx: Option<Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    pub(crate) workers: usize,
    pub(crate) functions: Vec<String>,
    pub(crate) connected: Arc<Connected>,
    pub(crate) launcher: String,
}

/// What starting a pool gave.
pub(crate) enum Started {
    /// The pool runs (this is the driving program).
    Pool(RemotePool),
    /// This process is a worker of something else (a block task or another pool).
    OtherWorker,
}

/// In a worker process of the pool named `name`: serves items with `functions` until the pool
/// says stop and returns how many were served; `None` in any other process.
pub(crate) fn serve_if_worker(
    name: &str,
    functions: &HashMap<String, ErasedFn>,
) -> Result<Option<u64>, Error> {
    let id = format!("{POOL_PREFIX}{name}");
    match Context::from_env()? {
        Some(ctx) if ctx.task_id == id => serve(ctx, functions).map(Some),
        _ => Ok(None),
    }
}

impl RemotePool {
    /// Starts the pool, or, in a worker process of this pool, serves items and exits.
    pub(crate) fn start(opts: PoolOptions) -> Result<Started, Error> {
        let id = format!("{POOL_PREFIX}{}", opts.name);
        if let Some(ctx) = Context::from_env()? {
            if ctx.task_id == id {
                serve_and_exit(ctx, &opts.functions);
            }
            return Ok(Started::OtherWorker);
        }
        let workers = opts.workers.max(1);
        let group = Group {
            id,
            log_group: format!("executor-{}", opts.name),
            workers,
            prefetch: opts.prefetch.max(1),
            threads: 1,
            max_restarts: opts.max_worker_restarts,
            need: opts.need,
            eager: true,
            label: "executor worker",
            verb: "running",
            unit: "item",
            a_unit: "an item",
        };
        let (fleet, events_rx) = Fleet::start(opts.process, vec![group], opts.budget)?;
        let launcher_name = fleet.launcher_name().to_owned();
        tracing::info!(launcher = %launcher_name, workers, "executor pool serving workers");
        let connected = Arc::new(Connected::default());
        let (tx, rx) = unbounded::<Cmd>();
        let mut functions: Vec<String> = opts.functions.keys().cloned().collect();
        functions.sort();
        let mut driver = Driver {
            fleet,
            calls: Calls {
                pending: VecDeque::new(),
                data: Vec::new(),
                broken: None,
            },
            connected: Arc::clone(&connected),
            cancel: opts.cancel,
        };
        let thread = std::thread::Builder::new()
            .name("blockwise-executor-pool".into())
            .spawn(move || {
                driver.drive(&rx, &events_rx);
                driver.fleet.shutdown(true);
                driver.connected.set(0);
            })
            .map_err(|source| Error::Io {
                context: "starting the executor pool's thread".into(),
                source,
            })?;
        Ok(Started::Pool(RemotePool {
            tx: Some(tx),
            thread: Some(thread),
            workers,
            functions,
            connected,
            launcher: launcher_name,
        }))
    }

    /// Queues a call; if the pool is gone, the call fails at once.
    pub(crate) fn submit(&self, call: Call) {
        if let Some(tx) = &self.tx
            && let Err(e) = tx.send(Cmd::Call(call))
            && let Cmd::Call(call) = e.into_inner()
        {
            (call.done)(Err(CallError::Failed("the executor was shut down".into())));
        }
    }

    /// Sends `value` to every worker once, under `name`.
    pub(crate) fn scatter(&self, name: &str, value: serde_json::Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Data {
                name: name.to_owned(),
                value,
            });
        }
    }
}

impl Drop for RemotePool {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            // The last handle may be dropped by a result callback on the pool's own thread.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// Worker mode: connect, run items until the pool says stop, exit the process.
fn serve_and_exit(ctx: Context, functions: &HashMap<String, ErasedFn>) -> ! {
    let worker = ctx.worker_id;
    match serve(ctx, functions) {
        Ok(n) => {
            tracing::info!(worker, items = n, "executor worker done");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("blockwise executor worker {worker}: {e}");
            std::process::exit(1)
        }
    }
}

/// What an executor worker receives, in arrival order.
enum Incoming {
    /// An item to run.
    Item(WireItem),
    /// Shared data to keep under a name.
    Data {
        name: String,
        value: serde_json::Value,
    },
}

/// The worker end of a pool: the connection and what it received but did not run yet.
struct Items {
    link: Link,
    queue: VecDeque<Incoming>,
}

impl Items {
    /// The next item to run or dataset to keep, or `None` when the pool has no more work for
    /// this worker (it shut down, or the worker reached its lifetime: then the items it holds
    /// go back).
    fn next(&mut self) -> Result<Option<Incoming>, Error> {
        let queue = &mut self.queue;
        let unstarted = || {
            queue
                .drain(..)
                .filter_map(|i| match i {
                    Incoming::Item(item) => Some(item.seq),
                    Incoming::Data { .. } => None,
                })
                .collect()
        };
        if !self.link.may_take(unstarted)? {
            return Ok(None);
        }
        loop {
            if let Some(incoming) = self.queue.pop_front() {
                return Ok(Some(incoming));
            }
            match self.link.receive()? {
                Some(ServerMsg::Items { items }) => {
                    self.queue.extend(items.into_iter().map(Incoming::Item));
                }
                Some(ServerMsg::Data { name, value }) => {
                    self.queue.push_back(Incoming::Data { name, value });
                }
                Some(other) => {
                    return Err(Error::worker(
                        WorkerErrorKind::Protocol,
                        format!("protocol error: an executor worker got {other:?}"),
                    ));
                }
                None => return Ok(None),
            }
        }
    }

    /// Reports an item's result, at once: the worker holds more items than the one it runs,
    /// and a result still waiting when a later item kills the worker would be lost with it
    /// (and the finished item counted as the one that was running).
    fn report(&mut self, seq: u64, result: Result<serde_json::Value, String>) -> Result<(), Error> {
        self.link.reported();
        let mut w = self.link.shared().lock();
        w.pending_items.push(ItemOutcome { seq, result });
        w.flush()
    }
}

fn serve(ctx: Context, functions: &HashMap<String, ErasedFn>) -> Result<u64, Error> {
    let mut client = Items {
        link: Link::connect(ctx)?,
        queue: VecDeque::new(),
    };
    let mut n = 0;
    while let Some(incoming) = client.next()? {
        match incoming {
            Incoming::Data { name, value } => store_raw(name, value),
            Incoming::Item(WireItem { seq, func, input }) => {
                let result = match functions.get(&func) {
                    Some(f) => f(input),
                    None => Err(format!(
                        "no function {func:?} is registered in this worker (registered: {:?})",
                        {
                            let mut names: Vec<&String> = functions.keys().collect();
                            names.sort();
                            names
                        }
                    )),
                };
                // A result too large for one frame fails its item, not the worker.
                let result = result.and_then(|v| {
                    let len = serde_json::to_vec(&v).map_or(0, |b| b.len());
                    if len > MAX_FRAME - 4096 {
                        Err(format!(
                            "the result is {len} bytes, more than a message can carry \
                             ({MAX_FRAME} bytes); write large results to storage and return \
                             where they are"
                        ))
                    } else {
                        Ok(v)
                    }
                });
                client.report(seq, result)?;
                n += 1;
            }
        }
    }
    client.link.bye()?;
    Ok(n)
}

/// The calls of a pool, as the fleet's source.
struct Calls {
    pending: VecDeque<Call>,
    /// Scattered datasets, sent to every worker before its items, in order.
    data: Vec<(String, serde_json::Value)>,
    /// Why the pool no longer runs items (workers cannot start, or it was interrupted).
    broken: Option<String>,
}

impl Calls {
    fn break_pool(&mut self, why: String) {
        if self.broken.is_none() {
            tracing::error!("executor pool stopped: {why}");
            self.broken = Some(why);
        }
    }
}

impl Source for Calls {
    type Unit = Call;
    type Outcome = ItemOutcome;

    fn demand(&self, _group: usize) -> Demand {
        if self.broken.is_some() {
            Demand::Closed
        } else if self.pending.is_empty() {
            Demand::Idle
        } else {
            Demand::Work
        }
    }

    /// The next call that was not cancelled meanwhile.
    fn next(&mut self, _group: usize) -> Option<Call> {
        while let Some(mut call) = self.pending.pop_front() {
            if call.start.take().is_none_or(|start| start()) {
                return Some(call);
            }
        }
        None
    }

    fn frame(&self, units: &[(u64, &Call)]) -> Result<Vec<u8>, String> {
        let items: Vec<WireItemRef<'_>> = units
            .iter()
            .map(|(seq, call)| WireItemRef {
                seq: *seq,
                func: &call.func,
                input: &call.input,
            })
            .collect();
        to_frame(&ItemsRef::Items { items: &items }).map_err(|e| e.to_string())
    }

    fn unsendable(&mut self, _group: usize, call: Call, message: String) {
        (call.done)(Err(CallError::Failed(format!("the item {message}"))));
    }

    fn preamble(&mut self, _group: usize, sent: &mut usize) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some((name, value)) = self.data.get(*sent) {
            let msg = ServerMsg::Data {
                name: name.clone(),
                value: value.clone(),
            };
            match to_frame(&msg) {
                Ok(frame) => frames.push(frame),
                Err(e) => tracing::error!("scattered data {name:?} cannot be sent: {e}"),
            }
            *sent += 1;
        }
        frames
    }

    fn results(msg: WorkerMsg) -> Result<Vec<(u64, ItemOutcome)>, WorkerMsg> {
        match msg {
            WorkerMsg::Results { results } => Ok(results.into_iter().map(|o| (o.seq, o)).collect()),
            other => Err(other),
        }
    }

    fn finished(&mut self, _group: usize, call: Call, outcome: ItemOutcome, _peer: &Peer) {
        (call.done)(outcome.result.map_err(CallError::Failed));
    }

    /// Past its time limit it fails with the limit; lost with its worker it is retried on
    /// another, up to [`ATTEMPTS`] tries in all.
    fn lost(&mut self, _group: usize, mut call: Call, loss: Loss) {
        if loss.kind == LossKind::Timeout
            && let Some(limit) = call.timeout
        {
            tracing::warn!("{}", loss.message);
            (call.done)(Err(CallError::TimedOut(limit)));
            return;
        }
        call.attempts += 1;
        if call.attempts >= ATTEMPTS {
            (call.done)(Err(CallError::Failed(format!(
                "{}; tried {} times",
                loss.message, call.attempts
            ))));
        } else {
            self.pending.push_front(call);
        }
    }

    fn give_back(&mut self, _group: usize, calls: Vec<Call>) {
        match &self.broken {
            Some(why) => {
                for call in calls {
                    (call.done)(Err(CallError::Failed(why.clone())));
                }
            }
            None => requeue_front(&mut self.pending, calls),
        }
    }

    fn timeout(&self, _group: usize, call: &Call) -> Option<Duration> {
        call.timeout
    }
}

struct Driver {
    fleet: Fleet<Call>,
    calls: Calls,
    connected: Arc<Connected>,
    cancel: Option<crate::Cancel>,
}

impl Driver {
    fn drive(&mut self, cmds: &Receiver<Cmd>, events: &Receiver<Event>) {
        let tick = self.fleet.tick();
        let mut open = true;
        let mut last_maintenance = Instant::now();
        loop {
            if let Some(signal) = self.fleet.interrupted() {
                self.calls.break_pool(format!(
                    "interrupted by {signal}; every worker job of the executor was cancelled"
                ));
                self.fleet.cancel_all();
            }
            if let Some(reason) = self.cancel.as_ref().and_then(crate::Cancel::reason) {
                self.cancel = None;
                self.calls.break_pool(format!(
                    "cancelled ({reason}); every worker job of the executor was cancelled"
                ));
                self.fleet.cancel_all();
            }
            if let Some(why) = &self.calls.broken {
                let why = why.clone();
                for call in self.calls.pending.drain(..) {
                    (call.done)(Err(CallError::Failed(why.clone())));
                }
            }
            let step = self.fleet.step(&mut self.calls);
            self.fleet_result(step);
            let idle = self.calls.pending.is_empty() && !self.fleet.busy();
            if !open && (idle || self.calls.broken.is_some() && self.fleet.connected() == 0) {
                return;
            }
            if open {
                crossbeam_channel::select! {
                    recv(cmds) -> cmd => match cmd {
                        Ok(cmd) => self.command(cmd),
                        Err(_) => open = false,
                    },
                    recv(events) -> event => match event {
                        Ok(event) => self.handle(event),
                        Err(_) => self.calls.break_pool("the executor's server stopped unexpectedly".into()),
                    },
                    default(tick) => {},
                }
                while let Ok(cmd) = cmds.try_recv() {
                    self.command(cmd);
                }
            } else {
                match events.recv_timeout(tick) {
                    Ok(event) => self.handle(event),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        self.calls
                            .break_pool("the executor's server stopped unexpectedly".into());
                    }
                }
            }
            while let Ok(event) = events.try_recv() {
                self.handle(event);
            }
            if last_maintenance.elapsed() >= tick {
                last_maintenance = Instant::now();
                let maintained = self.fleet.maintain(&mut self.calls);
                self.fleet_result(maintained);
            }
        }
    }

    fn handle(&mut self, event: Event) {
        let handled = self.fleet.handle(&mut self.calls, event);
        self.fleet_result(handled);
        self.connected.set(self.fleet.connected());
    }

    /// A fleet error breaks the pool: its calls fail with the reason.
    fn fleet_result(&mut self, result: Result<(), FleetError>) {
        match result {
            Ok(()) => {}
            Err(FleetError::Startup {
                attempts, message, ..
            }) => self.calls.break_pool(format!(
                "executor workers failed to start {attempts} times in a row; last error: {message}"
            )),
            Err(FleetError::Launch(e)) => {
                self.calls
                    .break_pool(format!("executor workers cannot be started: {e}"));
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Call(call) => match &self.calls.broken {
                Some(why) => (call.done)(Err(CallError::Failed(why.clone()))),
                None => self.calls.pending.push_back(call),
            },
            Cmd::Data { name, value } => self.calls.data.push((name, value)),
        }
    }
}
