//! The worker fleet: worker processes started by a [`Launcher`](crate::launch::Launcher),
//! connected back over the framed TCP transport, handed units of work, heartbeated, timed
//! out, retired and replaced.
//!
//! One fleet serves both the process runner (units are blocks, one group per task) and the
//! executor's worker pools (units are calls, one group per pool). It knows launchers, the wire
//! protocol and the transport, never tasks, the scheduler or the executor: what a unit is, how
//! it is framed, and what happens when it finishes, fails or is lost is said by the [`Source`]
//! it serves. All of a fleet's sockets, clocks and processes are driven from one thread, the
//! driver's, through [`Fleet::handle`], [`Fleet::step`] and [`Fleet::maintain`].
//!
//! A worker's life, as the fleet sees it:
//! 1. [`Fleet::step`] starts workers for groups whose source has work (`Demand::Work`), up to
//!    the group's width, through the launcher, each with its context in `BLOCKWISE_CONTEXT`.
//! 2. The worker connects and says hello (`server.rs` checks the token); the fleet welcomes it.
//! 3. Units go out in frames, a window at a time (`pace.rs`); results come back and go to the
//!    source, which may ask for the next unit at once.
//! 4. A worker that goes silent, dies or runs a unit past its timeout is lost: the unit it was
//!    running goes to the source as lost (the source's retry policy decides), the units it held
//!    unstarted are given back. A worker that never completes a unit counts as a start-up
//!    failure; more than the group's restart cap in a row is an error.
//! 5. A worker leaves when its group closes, when it retires itself (its lifetime), or when its
//!    group has had no work for the idle timeout.

pub(crate) mod budget;
pub(crate) mod context;
pub(crate) mod jobs;
pub(crate) mod link;
mod options;
mod pace;
pub(crate) mod protocol;
pub(crate) mod server;
pub(crate) mod signals;
mod start;
pub(crate) mod tls;
pub(crate) mod transport;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc::UnboundedSender;

pub use context::CONTEXT_ENV;
use jobs::{Backoff, Jobs, tail, take_unstarted, transient};
pub(crate) use options::ProcessOptions;
pub use options::WorkerOptions;
use pace::Pace;
use protocol::{ServerMsg, WorkerMsg, to_frame};
use server::{Event, Hello};
use signals::Interrupts;
pub(crate) use start::{submit_worker, worker_program};
use transport::Transport;

use crate::error::Error;
use crate::launch::Launcher;
use budget::{Budget, GPU, Grant, Requirement};

/// A turn of the driver's loop later than this means the process did not run meanwhile.
const CLOCK_JUMP: Duration = Duration::from_secs(3);

/// What a group of workers serves, as the fleet needs to know it.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// The id workers say in their hello (a task id, or an executor pool's id).
    pub(crate) id: String,
    /// The folder of the log directory its workers' logs go to.
    pub(crate) log_group: String,
    /// At most this many live workers.
    pub(crate) workers: usize,
    /// Units a worker may hold at once, at most.
    pub(crate) prefetch: usize,
    /// Units a worker runs at once (on its threads).
    pub(crate) threads: usize,
    /// Start-up failures in a row allowed before it is an error.
    pub(crate) max_restarts: u32,
    /// Start workers as soon as the group is open, before it has work (executor pools).
    pub(crate) eager: bool,
    /// What one worker needs of the budget.
    pub(crate) need: Requirement,
    /// How a worker is named in messages ("worker", "executor worker").
    pub(crate) label: &'static str,
    /// What a worker does with a unit, in messages ("processing", "running").
    pub(crate) verb: &'static str,
    /// What a unit is called in messages ("block", "item").
    pub(crate) unit: &'static str,
    /// The same with its article ("a block", "an item").
    pub(crate) a_unit: &'static str,
}

/// Whether a group wants workers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Demand {
    /// Not open: not started, finished, abandoned or broken. No worker starts; connecting
    /// workers are told to leave.
    Closed,
    /// Open, but nothing to hand out now: live workers stay (until the idle timeout), no new
    /// ones start (unless the group is eager and has not been idle).
    Idle,
    /// Units are ready: workers start up to the group's width.
    Work,
}

/// Why a worker's running unit did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossKind {
    /// The worker died, disconnected or went silent.
    Died,
    /// The unit ran past its timeout and its worker was killed.
    Timeout,
}

/// A unit lost with its worker.
#[derive(Debug, Clone)]
pub(crate) struct Loss {
    pub(crate) kind: LossKind,
    /// The whole message: who was lost, why, and what the launcher says of its job.
    pub(crate) message: String,
    /// The worker's id.
    pub(crate) worker: u64,
}

/// What a fleet serves: where units come from and where their results go.
pub(crate) trait Source {
    /// One unit of work (a block, a call).
    type Unit;
    /// The result of one unit as a worker reports it.
    type Outcome;

    /// Whether `group` wants workers now.
    fn demand(&self, group: usize) -> Demand;
    /// The next unit for a worker of `group`, if one is ready.
    fn next(&mut self, group: usize) -> Option<Self::Unit>;
    /// One frame carrying `units`, numbered.
    fn frame(&self, units: &[(u64, &Self::Unit)]) -> Result<Vec<u8>, String>;
    /// A unit that cannot be sent (its frame is too large): it fails.
    fn unsendable(&mut self, group: usize, unit: Self::Unit, message: String);
    /// Frames a worker must have before its units, given how many it has (`sent`, which this
    /// advances).
    fn preamble(&mut self, _group: usize, _sent: &mut usize) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// The results in `msg`, or `msg` back if it is not a result message of this source's
    /// dialect.
    fn results(msg: WorkerMsg) -> Result<Vec<(u64, Self::Outcome)>, WorkerMsg>;
    /// A unit finished (successfully or not) on `worker`.
    fn finished(&mut self, group: usize, unit: Self::Unit, outcome: Self::Outcome, worker: &Peer);
    /// The unit a worker was running when it was lost.
    fn lost(&mut self, group: usize, unit: Self::Unit, loss: Loss);
    /// Units a worker held but never started, in order: they go back to the front.
    fn give_back(&mut self, group: usize, units: Vec<Self::Unit>);
    /// How long `unit` may run.
    fn timeout(&self, group: usize, unit: &Self::Unit) -> Option<Duration>;
}

/// A connected worker, as the source sees it.
pub(crate) struct Peer {
    pub(crate) hello: Hello,
    label: &'static str,
}

impl Peer {
    /// `worker 3 (pid 123 on host)`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} {} (pid {} on {})",
            self.label, self.hello.worker_id, self.hello.pid, self.hello.host
        )
    }

    /// The worker's id.
    pub(crate) fn worker_id(&self) -> u64 {
        self.hello.worker_id
    }
}

/// A connection and what it holds.
struct Conn<U> {
    group: usize,
    peer: Peer,
    tx: Option<UnboundedSender<Vec<u8>>>,
    launch: Option<u64>,
    /// Units sent and not yet reported, in the order the worker runs them.
    inflight: VecDeque<(u64, U)>,
    /// When the unit at the head of `inflight` started (approximately).
    busy_since: Instant,
    /// Whether the worker finished its set-up.
    ready: bool,
    next_seq: u64,
    completed: u64,
    /// How many preamble frames it has.
    preamble: usize,
    retiring: bool,
    leaving: bool,
    setup_failed: Option<String>,
    /// Since when the worker has held nothing while its group had nothing to hand out.
    idle_since: Option<Instant>,
}

impl<U> Conn<U> {
    fn send_frame(&self, frame: Vec<u8>) {
        if let Some(tx) = &self.tx {
            // A closed channel means the connection is going away; its Closed event follows.
            let _ = tx.send(frame);
        }
    }

    fn send(&self, msg: &ServerMsg) {
        if let Ok(frame) = to_frame(msg) {
            self.send_frame(frame);
        }
    }

    /// Tells the worker to leave after what it holds; nothing more is sent to it.
    fn dismiss(&mut self) {
        self.send(&ServerMsg::Shutdown);
        self.tx = None;
    }

    fn open(&self) -> bool {
        self.tx.is_some() && !self.retiring && !self.leaving
    }
}

/// The fleet's state of one group.
struct GroupState {
    group: Group,
    conns: Vec<u64>,
    /// Workers that failed one after another before completing a unit.
    startup_failures: u32,
    /// Smoothed time per unit, as workers report them.
    pace: Pace,
    /// Pauses worker starts after transient failures.
    backoff: Backoff,
    /// Workers were released for idleness since the group last had work: an eager group
    /// starts no more until it has work again.
    dormant: bool,
}

/// A fleet error: what the driver must act on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FleetError {
    /// Workers of a group failed to start more often in a row than its cap allows.
    #[error("{message}")]
    Startup {
        group: usize,
        attempts: u32,
        message: String,
    },
    /// Starting a worker failed for a reason that retrying will not cure.
    #[error(transparent)]
    Launch(Error),
}

/// Worker processes for the groups of one run or pool.
pub(crate) struct Fleet<U> {
    popts: ProcessOptions,
    launcher: Arc<dyn Launcher>,
    groups: Vec<GroupState>,
    by_id: FxHashMap<String, usize>,
    conns: FxHashMap<u64, Conn<U>>,
    /// Submitted workers, keyed by group.
    launches: Jobs<usize>,
    next_worker: u64,
    transport: Transport,
    program: PathBuf,
    args: Vec<OsString>,
    interrupts: Option<Interrupts>,
    last_turn: Instant,
    /// The run's resources; empty: no limit but each group's width.
    budget: Budget,
    /// What each submitted worker holds, by launch id, until its job ends.
    grants: FxHashMap<u64, Grant>,
    /// A group had work and room for more workers, but the budget had no units for them.
    starved: bool,
}

impl<U> Fleet<U> {
    /// Opens the transport (and installs signal handlers if asked) for `groups`; events from
    /// workers arrive on the returned receiver.
    pub(crate) fn start(
        popts: ProcessOptions,
        groups: Vec<Group>,
        budget: Budget,
    ) -> Result<(Fleet<U>, Receiver<Event>), Error> {
        let (program, args) = worker_program(popts.command.as_ref())?;
        let launcher = Arc::clone(&popts.launcher);
        let (events_tx, events_rx) = unbounded::<Event>();
        let transport = popts.open_transport(events_tx)?;
        let interrupts = if popts.handle_signals {
            Some(Interrupts::install()?)
        } else {
            None
        };
        tracing::info!(addr = %transport.addr, tls = transport.tls.is_some(), launcher = launcher.name(), log_dir = %popts.log_dir.display(), "scheduler serving workers");
        let by_id = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id.clone(), i))
            .collect();
        let groups = groups
            .into_iter()
            .map(|group| GroupState {
                group,
                conns: Vec::new(),
                startup_failures: 0,
                pace: Pace::default(),
                backoff: Backoff::default(),
                dormant: false,
            })
            .collect();
        Ok((
            Fleet {
                launches: Jobs::new(Arc::clone(&launcher)),
                popts,
                launcher,
                groups,
                by_id,
                conns: FxHashMap::default(),
                next_worker: 0,
                transport,
                program,
                args,
                interrupts,
                last_turn: Instant::now(),
                budget,
                grants: FxHashMap::default(),
                starved: false,
            },
            events_rx,
        ))
    }

    /// The launcher's name.
    pub(crate) fn launcher_name(&self) -> &str {
        self.launcher.name()
    }

    /// How often the driver should turn: at most every 20 ms, and at the launcher's pace.
    pub(crate) fn tick(&self) -> Duration {
        Duration::from_millis(20).min(self.launcher.poll_interval())
    }

    /// The log directory.
    pub(crate) fn log_dir(&self) -> &std::path::Path {
        &self.popts.log_dir
    }

    /// A signal received since the last call (the next one takes its default action).
    pub(crate) fn interrupted(&mut self) -> Option<String> {
        let signal = self.interrupts.as_ref().and_then(Interrupts::received)?;
        self.interrupts = None;
        Some(signal)
    }

    /// Connected workers.
    pub(crate) fn connected(&self) -> usize {
        self.conns.len()
    }

    /// Whether any worker holds a unit.
    pub(crate) fn busy(&self) -> bool {
        self.conns.values().any(|c| !c.inflight.is_empty())
    }

    /// Starts workers where groups want them and hands out units; call once per turn.
    pub(crate) fn step<S: Source<Unit = U>>(&mut self, source: &mut S) -> Result<(), FleetError> {
        let gap = self.last_turn.elapsed();
        self.last_turn = Instant::now();
        if gap > CLOCK_JUMP {
            // The driver did not run (stopped, swapped out, suspended): units did not run late
            // by that much as far as anyone could tell.
            tracing::warn!("the scheduler did not run for {gap:?}; timeouts restart");
            for conn in self.conns.values_mut() {
                conn.busy_since += gap;
            }
        }
        self.ensure_workers(source)?;
        self.dispatch(source);
        Ok(())
    }

    /// Starts workers for groups that want them, in group order (upstream tasks first), as
    /// far as each group's width and the budget allow.
    fn ensure_workers<S: Source<Unit = U>>(&mut self, source: &S) -> Result<(), FleetError> {
        self.reclaim();
        self.starved = false;
        for g in 0..self.groups.len() {
            let demand = source.demand(g);
            let wants = match demand {
                Demand::Work => {
                    self.groups[g].dormant = false;
                    true
                }
                Demand::Idle => self.groups[g].group.eager && !self.groups[g].dormant,
                Demand::Closed => false,
            };
            if !wants || !self.groups[g].backoff.ready() {
                continue;
            }
            let live = self.launches.live(g);
            for _ in live..self.groups[g].group.workers {
                let Some(grant) = self.budget.try_take(&self.groups[g].group.need) else {
                    self.starved |= demand == Demand::Work;
                    break;
                };
                match self.launch(g, grant) {
                    Ok(()) => self.groups[g].backoff.succeeded(),
                    Err(failed) => {
                        let (e, grant) = *failed;
                        self.budget.give_back(grant);
                        if !transient(&e) {
                            return Err(FleetError::Launch(e));
                        }
                        let pause = self.groups[g].backoff.failed();
                        self.startup_failure(
                            g,
                            format!("starting a worker failed ({e}); retrying in {pause:?}"),
                        )?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Returns the units of workers whose jobs ended to the budget.
    fn reclaim(&mut self) {
        for id in self.launches.take_ended() {
            if let Some(grant) = self.grants.remove(&id) {
                self.budget.give_back(grant);
            }
        }
    }

    /// Submits a worker of group `g` holding `grant` (its devices in its environment and
    /// context, unless the launcher places devices itself); on failure the grant comes back.
    fn launch(&mut self, g: usize, grant: Grant) -> Result<(), Box<(Error, Grant)>> {
        let id = self.next_worker;
        self.next_worker += 1;
        let group = &self.groups[g].group;
        let mut ctx = self
            .popts
            .context(&self.transport, &group.id, id, group.prefetch);
        let env = if self.launcher.assigns_devices(GPU) {
            ctx.devices_from_env = !grant.devices().is_empty() || group.need.uses(GPU);
            Vec::new()
        } else {
            ctx.devices = grant.devices().to_vec();
            grant.env()
        };
        let worker = start::Worker {
            program: &self.program,
            args: &self.args,
            env,
            resources: group.need.as_slice().to_vec(),
        };
        let submitted = submit_worker(
            self.launcher.as_ref(),
            &self.popts.log_dir,
            &group.log_group,
            &ctx,
            worker,
        );
        match submitted {
            Ok((job, stderr)) => {
                self.launches.insert(id, g, job, stderr);
                self.grants.insert(id, grant);
                Ok(())
            }
            Err(e) => Err(Box::new((e, grant))),
        }
    }

    /// Fills every open worker up to its window, round robin within each group.
    fn dispatch<S: Source<Unit = U>>(&mut self, source: &mut S) {
        for g in 0..self.groups.len() {
            if self.groups[g].conns.is_empty() || source.demand(g) == Demand::Closed {
                continue;
            }
            let group = &self.groups[g].group;
            // A worker with several threads holds one more than it runs, so that a thread that
            // finishes finds its next unit there.
            let window = self.groups[g].pace.window(group.prefetch).max(
                group
                    .threads
                    .saturating_add(1)
                    .min(group.prefetch.max(group.threads)),
            );
            let conns: Vec<u64> = self.groups[g]
                .conns
                .iter()
                .copied()
                .filter(|c| self.conns.get(c).is_some_and(Conn::open))
                .collect();
            for c in &conns {
                if let Some(conn) = self.conns.get_mut(c) {
                    for frame in source.preamble(g, &mut conn.preamble) {
                        conn.send_frame(frame);
                    }
                }
            }
            let mut batches: Vec<Vec<u64>> = vec![Vec::new(); conns.len()];
            'fill: loop {
                let mut sent = false;
                for (k, c) in conns.iter().enumerate() {
                    let Some(conn) = self.conns.get_mut(c) else {
                        continue;
                    };
                    if conn.inflight.len() >= window {
                        continue;
                    }
                    let Some(unit) = source.next(g) else {
                        break 'fill;
                    };
                    let seq = conn.next_seq;
                    conn.next_seq += 1;
                    if conn.inflight.is_empty() {
                        conn.busy_since = Instant::now();
                    }
                    conn.inflight.push_back((seq, unit));
                    batches[k].push(seq);
                    sent = true;
                }
                if !sent {
                    break;
                }
            }
            let now = Instant::now();
            for (k, seqs) in batches.into_iter().enumerate() {
                if !seqs.is_empty() {
                    self.send_units(source, g, conns[k], &seqs);
                }
                if let Some(conn) = self.conns.get_mut(&conns[k]) {
                    if conn.inflight.is_empty() {
                        conn.idle_since.get_or_insert(now);
                    } else {
                        conn.idle_since = None;
                    }
                }
            }
        }
    }

    /// Sends the units `seqs` (the tail of the connection's in-flight queue) in one frame, or
    /// one by one if that frame cannot be built; a unit whose own frame cannot be built fails.
    fn send_units<S: Source<Unit = U>>(&mut self, source: &mut S, g: usize, c: u64, seqs: &[u64]) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        let first = conn.inflight.len() - seqs.len();
        let frame = {
            let units: Vec<(u64, &U)> =
                conn.inflight.range(first..).map(|(s, u)| (*s, u)).collect();
            source.frame(&units)
        };
        if let Ok(frame) = frame {
            conn.send_frame(frame);
            return;
        }
        let tail: Vec<(u64, U)> = conn.inflight.drain(first..).collect();
        for (seq, unit) in tail {
            match source.frame(&[(seq, &unit)]) {
                Ok(frame) => {
                    conn.send_frame(frame);
                    conn.inflight.push_back((seq, unit));
                }
                Err(e) => source.unsendable(g, unit, format!("it cannot be sent to a worker: {e}")),
            }
        }
    }

    /// Takes one event from the server.
    pub(crate) fn handle<S: Source<Unit = U>>(
        &mut self,
        source: &mut S,
        event: Event,
    ) -> Result<(), FleetError> {
        match event {
            Event::Connected { conn, hello, tx } => self.on_connected(source, conn, hello, tx),
            Event::Message { conn, msg } => self.on_message(source, conn, msg),
            Event::Closed { conn, reason } => self.on_closed(source, conn, &reason)?,
            Event::Refused { peer, reason } => {
                tracing::warn!(%peer, "refused a worker connection: {reason}");
            }
        }
        Ok(())
    }

    fn on_connected<S: Source<Unit = U>>(
        &mut self,
        source: &S,
        id: u64,
        hello: Hello,
        tx: UnboundedSender<Vec<u8>>,
    ) {
        let Some(&g) = self.by_id.get(&hello.task_id) else {
            let reason = format!("{:?} is not served by this run", hello.task_id);
            tracing::warn!(peer = %hello.peer, "refused a worker: {reason}");
            if let Ok(frame) = to_frame(&ServerMsg::Refused { reason }) {
                let _ = tx.send(frame);
            }
            return;
        };
        let launch = self.launches.attach(hello.worker_id, g, id);
        tracing::debug!(group = %hello.task_id, worker = hello.worker_id, pid = hello.pid, host = %hello.host, "worker connected");
        let mut conn = Conn {
            group: g,
            peer: Peer {
                hello,
                label: self.groups[g].group.label,
            },
            tx: Some(tx),
            launch,
            inflight: VecDeque::new(),
            busy_since: Instant::now(),
            ready: false,
            next_seq: 0,
            completed: 0,
            preamble: 0,
            retiring: false,
            leaving: false,
            setup_failed: None,
            idle_since: None,
        };
        conn.send(&ServerMsg::Welcome { connection: id });
        if source.demand(g) == Demand::Closed {
            conn.dismiss();
        }
        self.conns.insert(id, conn);
        self.groups[g].conns.push(id);
    }

    fn on_message<S: Source<Unit = U>>(&mut self, source: &mut S, id: u64, msg: WorkerMsg) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let g = conn.group;
        let msg = match S::results(msg) {
            Ok(results) => {
                let since = conn.busy_since;
                let mut done = 0u32;
                for (seq, outcome) in results {
                    let Some(pos) = conn.inflight.iter().position(|(s, _)| *s == seq) else {
                        tracing::warn!(
                            "{} reported #{} which it does not hold; ignored",
                            conn.peer.describe(),
                            seq
                        );
                        continue;
                    };
                    let Some((_, unit)) = conn.inflight.remove(pos) else {
                        continue;
                    };
                    if pos == 0 {
                        conn.busy_since = Instant::now();
                    }
                    conn.completed += 1;
                    done += 1;
                    source.finished(g, unit, outcome, &conn.peer);
                }
                if done > 0 {
                    self.groups[g].startup_failures = 0;
                    if conn.ready {
                        self.groups[g].pace.observe(since.elapsed() / done);
                    }
                }
                return;
            }
            Err(msg) => msg,
        };
        match msg {
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
                source.give_back(g, back);
            }
            WorkerMsg::Bye => {
                // Everything the worker finished was reported before its goodbye: units it
                // still holds were never started (sent after it stopped taking units).
                conn.leaving = true;
                conn.tx = None;
                let back: Vec<U> = conn.inflight.drain(..).map(|(_, u)| u).collect();
                source.give_back(g, back);
            }
            WorkerMsg::Hello { .. } => {
                tracing::warn!("{} said hello twice; ignored", conn.peer.describe());
            }
            WorkerMsg::Done { .. } | WorkerMsg::Results { .. } => {
                tracing::warn!(
                    "{} sent results of another kind of work; ignored",
                    conn.peer.describe()
                );
            }
        }
    }

    /// A connection ended: the unit it ran is lost, the rest go back, its process is stopped,
    /// and a worker that never completed a unit counts as a start-up failure.
    fn on_closed<S: Source<Unit = U>>(
        &mut self,
        source: &mut S,
        id: u64,
        reason: &str,
    ) -> Result<(), FleetError> {
        let Some(mut conn) = self.conns.remove(&id) else {
            return Ok(());
        };
        let g = conn.group;
        self.groups[g].conns.retain(|c| *c != id);
        let who = conn.peer.describe();
        let graceful = conn.leaving && conn.inflight.is_empty() && conn.setup_failed.is_none();
        if !graceful {
            tracing::warn!(group = %self.groups[g].group.id, "{who} lost: {reason}");
        }
        let (detail, stderr) = match conn.launch {
            Some(l) => self.launches.detach(l, graceful),
            None => (String::new(), None),
        };
        // The head unit was running (unless set-up never finished); the rest never started.
        let started = conn.setup_failed.is_none() && conn.ready;
        let mut units: Vec<U> = conn.inflight.drain(..).map(|(_, u)| u).collect();
        if started && !units.is_empty() {
            let head = units.remove(0);
            let loss = Loss {
                kind: LossKind::Died,
                message: format!(
                    "{who} lost while {} this {}: {reason}{detail}",
                    self.groups[g].group.verb, self.groups[g].group.unit
                ),
                worker: conn.peer.worker_id(),
            };
            source.lost(g, head, loss);
        }
        source.give_back(g, units);
        // The head unit's loss may have closed the group: then its workers are not replaced,
        // and a worker lost is no start-up failure.
        if !graceful && conn.completed == 0 && source.demand(g) != Demand::Closed {
            let message = match conn.setup_failed.take() {
                Some(m) => format!("{who}: set-up failed: {m}"),
                None => {
                    let stderr = stderr.map(|p| tail(&p, 20)).unwrap_or_default();
                    format!(
                        "{who} ended before completing {} ({reason}{detail}); {stderr}",
                        self.groups[g].group.a_unit
                    )
                }
            };
            self.startup_failure(g, message)?;
        }
        Ok(())
    }

    fn startup_failure(&mut self, g: usize, message: String) -> Result<(), FleetError> {
        let state = &mut self.groups[g];
        state.startup_failures += 1;
        tracing::warn!(group = %state.group.id, attempt = state.startup_failures, "worker start-up failed: {message}");
        if state.startup_failures > state.group.max_restarts {
            return Err(FleetError::Startup {
                group: g,
                attempts: state.startup_failures,
                message,
            });
        }
        Ok(())
    }

    /// Polls jobs that are not connected (one that ended without connecting is a start-up
    /// failure) and kills workers whose running unit is past its timeout; call about once per
    /// [`Fleet::tick`].
    pub(crate) fn maintain<S: Source<Unit = U>>(
        &mut self,
        source: &mut S,
    ) -> Result<(), FleetError> {
        for (g, message) in self.launches.ended_without_connecting() {
            if source.demand(g) != Demand::Closed {
                self.startup_failure(g, message)?;
            }
        }
        self.check_timeouts(source);
        self.release_idle(source);
        Ok(())
    }

    /// Workers that have held nothing for the idle timeout while their group had no work
    /// leave; they are started again when the group has work.
    ///
    /// While another group waits for units of the budget, idle workers leave at once.
    fn release_idle<S: Source<Unit = U>>(&mut self, source: &S) {
        let idle_timeout = if self.starved {
            Duration::ZERO
        } else {
            self.popts.idle_timeout
        };
        for conn in self.conns.values_mut() {
            let idle = conn
                .idle_since
                .is_some_and(|since| since.elapsed() >= idle_timeout);
            if !idle || !conn.open() || !conn.inflight.is_empty() {
                continue;
            }
            if source.demand(conn.group) == Demand::Work {
                conn.idle_since = None;
                continue;
            }
            tracing::info!(group = %self.groups[conn.group].group.id, starved = self.starved, "{} idle for {idle_timeout:?}; released", conn.peer.describe());
            conn.dismiss();
            conn.retiring = true;
            self.launches.retiring(conn.launch);
            self.groups[conn.group].dormant = true;
        }
    }

    fn check_timeouts<S: Source<Unit = U>>(&mut self, source: &mut S) {
        let mut expired: Vec<(u64, Duration)> = Vec::new();
        for (id, conn) in &self.conns {
            if !conn.ready {
                continue;
            }
            let Some((_, head)) = conn.inflight.front() else {
                continue;
            };
            if let Some(timeout) = source.timeout(conn.group, head)
                && conn.busy_since.elapsed() > timeout
            {
                expired.push((*id, timeout));
            }
        }
        for (id, timeout) in expired {
            let Some(mut conn) = self.conns.remove(&id) else {
                continue;
            };
            let g = conn.group;
            self.groups[g].conns.retain(|c| *c != id);
            let who = conn.peer.describe();
            let killed = match conn.launch {
                Some(l) => self.launches.kill(l, &who),
                None => format!("{who} disconnected (not started by this run, so not killed)"),
            };
            conn.tx = None;
            let mut units: Vec<U> = conn.inflight.drain(..).map(|(_, u)| u).collect();
            let rest = units.split_off(self.groups[g].group.threads.min(units.len()));
            if !units.is_empty() {
                // The oldest ran late; the others running beside it on the worker's threads
                // were killed with it: they go back as lost, not as failed for time.
                let head = units.remove(0);
                let loss = Loss {
                    kind: LossKind::Timeout,
                    message: format!("timed out after {timeout:?}; {killed}"),
                    worker: conn.peer.worker_id(),
                };
                source.lost(g, head, loss);
                for unit in units {
                    let loss = Loss {
                        kind: LossKind::Died,
                        message: format!(
                            "{who} was killed while {} this {} because another of its {}s timed out",
                            self.groups[g].group.verb,
                            self.groups[g].group.unit,
                            self.groups[g].group.unit
                        ),
                        worker: conn.peer.worker_id(),
                    };
                    source.lost(g, unit, loss);
                }
            }
            source.give_back(g, rest);
        }
    }

    /// Tells the workers of a closed group to leave (each after the units it holds, whose
    /// results count) and cancels its jobs that have not connected.
    pub(crate) fn close_group(&mut self, g: usize) {
        for c in &self.groups[g].conns {
            if let Some(conn) = self.conns.get_mut(c) {
                conn.dismiss();
            }
        }
        self.launches.cancel_unconnected(g);
    }

    /// Cancels every job at once (after an interrupt).
    pub(crate) fn cancel_all(&mut self) {
        self.launches.cancel_all();
    }

    /// Tells every worker to leave (if `clean`), waits briefly for local workers to exit, and
    /// cancels every job that may still exist.
    pub(crate) fn shutdown(&mut self, clean: bool) {
        for conn in self.conns.values_mut() {
            if clean {
                conn.send(&ServerMsg::Shutdown);
            }
            conn.tx = None;
        }
        self.launches.stop(clean);
    }
}
