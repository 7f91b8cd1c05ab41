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
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc::UnboundedSender;

use super::work::{ErasedFn, store_raw};
use crate::error::Error;
use crate::launch::Launcher;
use crate::run::ProcessOptions;
use crate::run::client::{Client, Incoming};
use crate::run::context::Context;
use crate::run::jobs::{Backoff, Jobs, requeue_front, tail, take_unstarted};
use crate::run::processes::{Pace, submit_worker, worker_program};
use crate::run::protocol::{
    MAX_FRAME, OneItem, ServerMsg, WireItem, WireItemRef, WorkerMsg, to_frame,
};
use crate::run::server::{Event, Hello};
use crate::run::signals::Interrupts;
use crate::run::transport::Transport;

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
    pub(crate) done: Box<dyn FnOnce(Result<serde_json::Value, String>) + Send>,
    /// The item's time limit on a worker (`None`: none); a worker running it longer is to be
    /// killed and the item failed with the timeout.
    #[allow(dead_code)] // enforced by the fleet (issue 15)
    pub(crate) timeout: Option<Duration>,
    attempts: u32,
}

impl Call {
    pub(crate) fn new(
        func: Arc<str>,
        input: serde_json::Value,
        start: Option<Box<dyn FnOnce() -> bool + Send>>,
        timeout: Option<Duration>,
        done: Box<dyn FnOnce(Result<serde_json::Value, String>) + Send>,
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
        let p = &opts.process;
        let launcher = Arc::clone(&p.launcher);
        let (program, args) = worker_program(p.command.as_ref())?;
        let (events_tx, events_rx) = unbounded::<Event>();
        let transport = p.open_transport(events_tx)?;
        let interrupts = if p.handle_signals {
            Some(Interrupts::install()?)
        } else {
            None
        };
        tracing::info!(addr = %transport.addr, tls = transport.tls.is_some(), launcher = launcher.name(), workers = opts.workers, "executor pool serving workers");
        let connected = Arc::new(Connected::default());
        let (tx, rx) = unbounded::<Cmd>();
        let mut functions: Vec<String> = opts.functions.keys().cloned().collect();
        functions.sort();
        let launcher_name = launcher.name().to_owned();
        let mut driver = Driver {
            id,
            workers: opts.workers.max(1),
            prefetch: opts.prefetch.max(1),
            max_worker_restarts: opts.max_worker_restarts,
            launches: Jobs::new(Arc::clone(&launcher)),
            popts: opts.process,
            launcher,
            transport,
            program,
            args,
            pending: VecDeque::new(),
            data: Vec::new(),
            conns: FxHashMap::default(),
            next_worker: 0,
            pace: Pace::default(),
            startup_failures: 0,
            backoff: Backoff::default(),
            broken: None,
            connected: Arc::clone(&connected),
            interrupts,
            cancel: opts.cancel,
        };
        let thread = std::thread::Builder::new()
            .name("blockwise-executor-pool".into())
            .spawn(move || {
                driver.drive(&rx, &events_rx);
                driver.shutdown();
            })
            .map_err(|source| Error::Io {
                context: "starting the executor pool's thread".into(),
                source,
            })?;
        Ok(Started::Pool(RemotePool {
            tx: Some(tx),
            thread: Some(thread),
            workers: opts.workers.max(1),
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
            (call.done)(Err("the executor was shut down".into()));
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

fn serve(ctx: Context, functions: &HashMap<String, ErasedFn>) -> Result<u64, Error> {
    let mut client = Client::connect(ctx)?;
    let mut n = 0;
    while let Some(incoming) = client.acquire_item()? {
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
                client.report_item(seq, result)?;
                n += 1;
            }
        }
    }
    client.close()?;
    Ok(n)
}

struct Conn {
    tx: Option<UnboundedSender<Vec<u8>>>,
    launch: Option<u64>,
    hello: Hello,
    /// Items sent and not yet reported, in the order the worker runs them.
    inflight: VecDeque<(u64, Call)>,
    busy_since: Instant,
    ready: bool,
    next_seq: u64,
    completed: u64,
    /// How many of the pool's datasets this worker has.
    data_sent: usize,
    retiring: bool,
    leaving: bool,
    setup_failed: Option<String>,
}

impl Conn {
    fn send<M: serde::Serialize>(&self, msg: &M) -> Result<(), String> {
        let frame = to_frame(msg).map_err(|e| e.to_string())?;
        if let Some(tx) = &self.tx {
            // A closed channel means the connection is going; its Closed event follows.
            let _ = tx.send(frame);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "executor worker {} (pid {} on {})",
            self.hello.worker_id, self.hello.pid, self.hello.host
        )
    }

    fn open(&self) -> bool {
        self.tx.is_some() && !self.retiring && !self.leaving
    }
}

struct Driver {
    id: String,
    workers: usize,
    prefetch: usize,
    max_worker_restarts: u32,
    popts: ProcessOptions,
    launcher: Arc<dyn Launcher>,
    transport: Transport,
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    pending: VecDeque<Call>,
    data: Vec<(String, serde_json::Value)>,
    conns: FxHashMap<u64, Conn>,
    launches: Jobs<()>,
    next_worker: u64,
    pace: Pace,
    startup_failures: u32,
    /// Pauses worker starts after failures to submit.
    backoff: Backoff,
    /// Why the pool no longer runs items (workers cannot start, or it was interrupted).
    broken: Option<String>,
    connected: Arc<Connected>,
    interrupts: Option<Interrupts>,
    cancel: Option<crate::Cancel>,
}

impl Driver {
    fn drive(&mut self, cmds: &Receiver<Cmd>, events: &Receiver<Event>) {
        let tick = Duration::from_millis(20).min(self.launcher.poll_interval());
        let mut open = true;
        let mut last_maintenance = Instant::now();
        loop {
            if let Some(signal) = self.interrupts.as_ref().and_then(Interrupts::received) {
                // Stop everything; the next signal takes its default action.
                self.interrupts = None;
                self.break_pool(format!(
                    "interrupted by {signal}; every worker job of the executor was cancelled"
                ));
                self.launches.cancel_all();
            }
            if let Some(reason) = self.cancel.as_ref().and_then(crate::Cancel::reason) {
                self.cancel = None;
                self.break_pool(format!(
                    "cancelled ({reason}); every worker job of the executor was cancelled"
                ));
                self.launches.cancel_all();
            }
            if let Some(why) = &self.broken {
                let why = why.clone();
                for call in self.pending.drain(..) {
                    (call.done)(Err(why.clone()));
                }
            }
            self.ensure_workers();
            self.dispatch();
            let idle =
                self.pending.is_empty() && self.conns.values().all(|c| c.inflight.is_empty());
            if !open && (idle || self.broken.is_some() && self.conns.is_empty()) {
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
                        Err(_) => self.break_pool("the executor's server stopped unexpectedly".into()),
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
                        self.break_pool("the executor's server stopped unexpectedly".into());
                    }
                }
            }
            while let Ok(event) = events.try_recv() {
                self.handle(event);
            }
            if last_maintenance.elapsed() >= tick {
                last_maintenance = Instant::now();
                self.poll_launches();
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Call(call) => match &self.broken {
                Some(why) => (call.done)(Err(why.clone())),
                None => self.pending.push_back(call),
            },
            Cmd::Data { name, value } => self.data.push((name, value)),
        }
    }

    fn break_pool(&mut self, why: String) {
        if self.broken.is_none() {
            tracing::error!("executor pool stopped: {why}");
            self.broken = Some(why);
        }
    }

    fn ensure_workers(&mut self) {
        if self.broken.is_some() {
            return;
        }
        if !self.backoff.ready() {
            return;
        }
        let live = self.launches.live(());
        for _ in live..self.workers {
            match self.launch() {
                Ok(()) => self.backoff.succeeded(),
                Err(e) => {
                    let pause = self.backoff.failed();
                    self.startup_failure(format!(
                        "submitting a worker failed: {e}; retrying in {pause:?}"
                    ));
                    return;
                }
            }
        }
    }

    fn launch(&mut self) -> Result<(), Error> {
        let id = self.next_worker;
        self.next_worker += 1;
        let ctx = self
            .popts
            .context(&self.transport, &self.id, id, self.prefetch);
        let group = self.id.trim_start_matches(POOL_PREFIX).to_owned();
        let (job, stderr) = submit_worker(
            self.launcher.as_ref(),
            &self.popts.log_dir,
            &format!("executor-{group}"),
            &ctx,
            &self.program,
            &self.args,
        )?;
        self.launches.insert(id, (), job, stderr);
        Ok(())
    }

    /// Sends each open worker the datasets it lacks, then items up to its window.
    fn dispatch(&mut self) {
        let window = self.pace.window(self.prefetch);
        let mut ids: Vec<u64> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if !conn.open() {
                continue;
            }
            while let Some((name, value)) = self.data.get(conn.data_sent) {
                let msg = ServerMsg::Data {
                    name: name.clone(),
                    value: value.clone(),
                };
                if let Err(e) = conn.send(&msg) {
                    tracing::error!("scattered data {name:?} cannot be sent: {e}");
                }
                conn.data_sent += 1;
            }
            while conn.inflight.len() < window {
                let Some(mut call) = self.pending.pop_front() else {
                    return;
                };
                if let Some(start) = call.start.take()
                    && !start()
                {
                    continue;
                }
                let seq = conn.next_seq;
                conn.next_seq += 1;
                let msg = OneItem::Items {
                    items: [WireItemRef {
                        seq,
                        func: &call.func,
                        input: &call.input,
                    }],
                };
                if let Err(e) = conn.send(&msg) {
                    (call.done)(Err(format!("the item cannot be sent to a worker: {e}")));
                    continue;
                }
                if conn.inflight.is_empty() {
                    conn.busy_since = Instant::now();
                }
                conn.inflight.push_back((seq, call));
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Connected { conn, hello, tx } => self.connected(conn, hello, tx),
            Event::Message { conn, msg } => self.message(conn, msg),
            Event::Closed { conn, reason } => self.closed(conn, &reason),
            Event::Refused { peer, reason } => {
                tracing::warn!(%peer, "refused a worker connection: {reason}");
            }
        }
    }

    fn connected(&mut self, id: u64, hello: Hello, tx: UnboundedSender<Vec<u8>>) {
        if hello.task_id != self.id {
            let reason = format!(
                "{:?} is not this executor's pool {:?}",
                hello.task_id, self.id
            );
            tracing::warn!(peer = %hello.peer, "refused a worker: {reason}");
            if let Ok(frame) = to_frame(&ServerMsg::Refused { reason }) {
                let _ = tx.send(frame);
            }
            return;
        }
        let launch = self.launches.attach(hello.worker_id, (), id);
        tracing::debug!(worker = hello.worker_id, pid = hello.pid, host = %hello.host, "executor worker connected");
        let conn = Conn {
            tx: Some(tx),
            launch,
            hello,
            inflight: VecDeque::new(),
            busy_since: Instant::now(),
            ready: false,
            next_seq: 0,
            completed: 0,
            data_sent: 0,
            retiring: false,
            leaving: false,
            setup_failed: None,
        };
        let _ = conn.send(&ServerMsg::Welcome { connection: id });
        self.conns.insert(id, conn);
        self.connected.set(self.conns.len());
    }

    fn message(&mut self, id: u64, msg: WorkerMsg) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match msg {
            WorkerMsg::Results { results } => {
                let since = conn.busy_since;
                let mut finished = 0u32;
                for outcome in results {
                    let Some(pos) = conn.inflight.iter().position(|(s, _)| *s == outcome.seq)
                    else {
                        tracing::warn!(
                            "{} reported item #{} it does not hold; ignored",
                            conn.describe(),
                            outcome.seq
                        );
                        continue;
                    };
                    let Some((_, call)) = conn.inflight.remove(pos) else {
                        continue;
                    };
                    if pos == 0 {
                        conn.busy_since = Instant::now();
                    }
                    conn.completed += 1;
                    finished += 1;
                    (call.done)(outcome.result);
                }
                if finished > 0 {
                    self.startup_failures = 0;
                    if conn.ready {
                        self.pace.observe(since.elapsed() / finished);
                    }
                }
            }
            WorkerMsg::Ready => {
                conn.ready = true;
                conn.busy_since = Instant::now();
            }
            WorkerMsg::SetupFailed { message } => conn.setup_failed = Some(message),
            WorkerMsg::Heartbeat => {}
            WorkerMsg::Retire { unstarted } => {
                conn.retiring = true;
                let back = take_unstarted(&mut conn.inflight, &unstarted);
                self.launches.retiring(conn.launch);
                requeue_front(&mut self.pending, back);
            }
            WorkerMsg::Bye => {
                conn.leaving = true;
                conn.tx = None;
                let back: Vec<Call> = conn.inflight.drain(..).map(|(_, c)| c).collect();
                requeue_front(&mut self.pending, back);
            }
            WorkerMsg::Done { .. } | WorkerMsg::Hello { .. } => {
                tracing::warn!("{} sent an unexpected message; ignored", conn.describe());
            }
        }
    }

    /// A connection ended: its running item is retried (up to [`ATTEMPTS`]), the others go
    /// back to the queue, its job is stopped, and a worker that never completed an item counts
    /// as a start-up failure.
    fn closed(&mut self, id: u64, reason: &str) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        self.connected.set(self.conns.len());
        let who = conn.describe();
        let graceful = conn.leaving && conn.inflight.is_empty() && conn.setup_failed.is_none();
        if !graceful {
            tracing::warn!("{who} lost: {reason}");
        }
        let (detail, stderr) = match conn.launch {
            Some(l) => self.launches.detach(l, graceful),
            None => (String::new(), None),
        };
        let mut calls: Vec<Call> = conn.inflight.drain(..).map(|(_, c)| c).collect();
        if conn.ready && !calls.is_empty() {
            let mut head = calls.remove(0);
            head.attempts += 1;
            if head.attempts >= ATTEMPTS {
                (head.done)(Err(format!(
                    "{who} lost while running this item ({reason}{detail}); tried {} times",
                    head.attempts
                )));
            } else {
                calls.insert(0, head);
            }
        }
        requeue_front(&mut self.pending, calls);
        if !graceful && conn.completed == 0 && self.broken.is_none() {
            let message = match conn.setup_failed.take() {
                Some(m) => format!("{who}: set-up failed: {m}"),
                None => format!(
                    "{who} ended before completing an item ({reason}{detail}); {}",
                    stderr.map(|p| tail(&p, 20)).unwrap_or_default()
                ),
            };
            self.startup_failure(message);
        }
    }

    fn startup_failure(&mut self, message: String) {
        self.startup_failures += 1;
        tracing::warn!(
            attempt = self.startup_failures,
            "executor worker start-up failed: {message}"
        );
        if self.startup_failures > self.max_worker_restarts {
            self.break_pool(format!(
                "executor workers failed to start {} times in a row; last error: {message}",
                self.startup_failures
            ));
        }
    }

    /// A job that ended without ever connecting is a start-up failure.
    fn poll_launches(&mut self) {
        for ((), message) in self.launches.ended_without_connecting() {
            if self.broken.is_none() {
                self.startup_failure(message);
            }
        }
    }

    /// Tells every worker to leave, waits briefly for local workers to exit, then cancels
    /// every job the pool submitted.
    fn shutdown(&mut self) {
        for conn in self.conns.values_mut() {
            let _ = conn.send(&ServerMsg::Shutdown);
            conn.tx = None;
        }
        self.launches.stop(true);
        self.connected.set(0);
    }
}
