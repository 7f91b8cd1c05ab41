//! The process runner: the driver owns the scheduler and a TCP server; worker processes,
//! started by a [`Launcher`], connect back and pull blocks.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, unbounded};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc::UnboundedSender;

use super::context::{CONTEXT_ENV, Context};
use super::failures::{Failures, finish_run, open_journal};
use super::jobs::{Backoff, Jobs, requeue_front, tail, take_unstarted, transient};
use super::observer::Watch;
use super::protocol::{ServerMsg, WireBlock, WorkerMsg, to_frame};
use super::server::{Event, Hello};
use super::signals::Interrupts;
use super::transport::Transport;
use super::{ProcessOptions, Runner};
use crate::blocks::{Block, BlockStatus};
use crate::error::Error;
use crate::journal::Journal;
use crate::launch::{JobId, Launcher, WorkerSpec};
use crate::observe::summary::OutputsDir;
use crate::observe::{FailureKind, ProgressBars, RunSummary};
use crate::scheduler::Scheduler;
use crate::task::Task;

/// A connected worker.
struct Conn {
    task: usize,
    tx: Option<UnboundedSender<Vec<u8>>>,
    launch: Option<u64>,
    hello: Hello,
    /// Blocks sent and not yet reported, in the order the worker processes them.
    inflight: VecDeque<(u64, Block)>,
    /// When the block at the head of `inflight` started (approximately).
    busy_since: Instant,
    /// Whether the worker finished its set-up.
    ready: bool,
    next_seq: u64,
    completed: u64,
    retiring: bool,
    leaving: bool,
    setup_failed: Option<String>,
}

impl Conn {
    fn send(&self, msg: &ServerMsg) {
        if let (Some(tx), Ok(frame)) = (&self.tx, to_frame(msg)) {
            // A closed channel means the connection is going away; its Closed event follows.
            let _ = tx.send(frame);
        }
    }

    fn describe(&self) -> String {
        format!(
            "worker {} (pid {} on {})",
            self.hello.worker_id, self.hello.pid, self.hello.host
        )
    }
}

struct TaskRun {
    task: Task,
    started: bool,
    finished: bool,
    /// The task was abandoned: its workers were told to leave, no worker is started for it.
    retired: bool,
    /// Blocks taken from the scheduler (so counted as processing) but not with a worker:
    /// returned unstarted by workers that left, or taken to see whether the task can start.
    requeue: VecDeque<Block>,
    conns: Vec<u64>,
    /// Workers that failed one after another before completing a block.
    startup_failures: u32,
    last_startup_error: String,
    failures: Failures,
    /// Smoothed time per block, as workers report them.
    pace: Pace,
    /// Pauses worker starts after transient failures.
    backoff: Backoff,
}

/// A turn of the driver's loop later than this means the process did not run meanwhile.
const CLOCK_JUMP: Duration = Duration::from_secs(3);

/// A worker holds enough work to stay busy for about this long, so that round trips do not
/// idle it, but no more, so that slow blocks (or executor items) spread over all workers.
const QUEUE_TIME: Duration = Duration::from_millis(2);

/// How many blocks or items a worker may hold, from the smoothed time per unit its workers
/// report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pace {
    per_unit: Option<Duration>,
}

impl Pace {
    /// One until unit times are known, then enough for [`QUEUE_TIME`], at most `limit`.
    pub(crate) fn window(&self, limit: usize) -> usize {
        match self.per_unit {
            None => 1,
            Some(t) if t.is_zero() => limit,
            Some(t) => usize::try_from(QUEUE_TIME.as_nanos().div_ceil(t.as_nanos()))
                .unwrap_or(limit)
                .clamp(1, limit),
        }
    }

    /// Folds in a measured time per unit.
    pub(crate) fn observe(&mut self, per_unit: Duration) {
        self.per_unit = Some(match self.per_unit {
            None => per_unit,
            Some(old) => (old * 3 + per_unit) / 4,
        });
    }
}

struct Driver<'a> {
    opts: &'a Runner,
    popts: &'a ProcessOptions,
    launcher: Arc<dyn Launcher>,
    sched: Scheduler,
    runs: Vec<TaskRun>,
    conns: FxHashMap<u64, Conn>,
    /// Submitted workers, keyed by task index.
    launches: Jobs<usize>,
    next_worker: u64,
    transport: Transport,
    log_dir: PathBuf,
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    journal: Option<Journal>,
    outputs_dir: Option<OutputsDir>,
}

pub(super) fn run(
    tasks: &[Task],
    opts: &Runner,
    popts: &ProcessOptions,
    show: bool,
) -> Result<RunSummary, Error> {
    let start = Instant::now();
    let mut sched = Scheduler::new(tasks)?;
    let all: Vec<Task> = sched.tasks().cloned().collect();
    if let Some(t) = all.iter().find(|t| t.inner.processor.is_none()) {
        return Err(Error::MissingProcess {
            task: t.task_id().to_owned(),
        });
    }
    let (journal, outputs_dir) = open_journal(opts, &mut sched)?;
    // Session frames admit the run's largest output.
    let mut popts = popts.clone();
    popts.max_output = opts.max_output;
    let popts = &popts;
    let log_dir = popts.log_dir.clone();
    let (program, args) = worker_program(popts.command.as_ref())?;
    let launcher = Arc::clone(&popts.launcher);
    let (events_tx, events_rx) = unbounded::<Event>();
    let transport = popts.open_transport(events_tx)?;
    tracing::info!(addr = %transport.addr, tls = transport.tls.is_some(), launcher = launcher.name(), log_dir = %log_dir.display(), "scheduler serving workers");
    let runs = all
        .iter()
        .map(|t| TaskRun {
            task: t.clone(),
            started: false,
            finished: false,
            retired: false,
            requeue: VecDeque::new(),
            conns: Vec::new(),
            startup_failures: 0,
            last_startup_error: String::new(),
            failures: Failures::default(),
            pace: Pace::default(),
            backoff: Backoff::default(),
        })
        .collect();
    let ids: Vec<String> = all.iter().map(|t| t.task_id().to_owned()).collect();
    let mut driver = Driver {
        opts,
        popts,
        launcher,
        sched,
        runs,
        conns: FxHashMap::default(),
        launches: Jobs::new(Arc::clone(&popts.launcher)),
        next_worker: 0,
        transport,
        log_dir,
        program,
        args,
        journal,
        outputs_dir,
    };
    let interrupts = if popts.handle_signals {
        Some(Interrupts::install()?)
    } else {
        None
    };
    let mut progress = show.then(|| ProgressBars::new(&ids));
    let mut watch = Watch::new(opts.observer.as_ref());
    let result = driver.drive(
        &events_rx,
        progress.as_mut(),
        interrupts.as_ref(),
        &mut watch,
    );
    watch.maybe_call(&driver.sched, true);
    driver.shutdown(result.is_ok());
    drop(interrupts);
    if let Some(p) = progress.as_mut() {
        p.close();
    }
    let log_dir = driver.log_dir.display().to_string();
    finish_run(
        result,
        &driver.sched,
        driver
            .runs
            .iter_mut()
            .map(|run| (run.task.inner.id.as_ref(), &mut run.failures)),
        Some(&log_dir),
        start.elapsed(),
        driver.journal.as_mut(),
        driver.outputs_dir.take(),
    )
}

/// Submits a worker with context `ctx` through `launcher`: it runs `program args` with
/// [`CONTEXT_ENV`] set, logs to `<log_dir>/<group>/worker_<id>.out/.err`, and is listed in
/// `<log_dir>/jobs.txt`. Returns the job and the worker's stderr file.
pub(crate) fn submit_worker(
    launcher: &dyn Launcher,
    log_dir: &Path,
    group: &str,
    ctx: &Context,
    program: &Path,
    args: &[std::ffi::OsString],
) -> Result<(JobId, PathBuf), Error> {
    let id = ctx.worker_id;
    let dir = log_dir.join(group);
    let spec = WorkerSpec {
        name: format!("blockwise-{group}-{id}"),
        program: program.to_path_buf(),
        args: args.to_vec(),
        env: vec![(CONTEXT_ENV.to_owned(), ctx.encode())],
        workdir: None,
        stdout: dir.join(format!("worker_{id}.out")),
        stderr: dir.join(format!("worker_{id}.err")),
        resources: Vec::new(),
    };
    let job = launcher.submit(&spec)?;
    tracing::debug!(group, worker = id, job = %job, "worker submitted");
    let line = format!("{} {job} {group} worker_{id}\n", launcher.name());
    let jobs = log_dir.join("jobs.txt");
    if let Err(e) = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&jobs)
        .and_then(|mut f| f.write_all(line.as_bytes()))
    {
        tracing::warn!("could not record job {job} in {}: {e}", jobs.display());
    }
    Ok((job, spec.stderr))
}

/// The current executable and arguments, or the configured worker command.
pub(crate) fn worker_program(
    command: Option<&(PathBuf, Vec<std::ffi::OsString>)>,
) -> Result<(PathBuf, Vec<std::ffi::OsString>), Error> {
    match command {
        Some((p, a)) => Ok((p.clone(), a.clone())),
        None => {
            let exe = std::env::current_exe().map_err(|source| Error::Io {
                context: "finding the current executable to start workers".into(),
                source,
            })?;
            Ok((exe, std::env::args_os().skip(1).collect()))
        }
    }
}

impl Driver<'_> {
    fn drive(
        &mut self,
        events: &Receiver<Event>,
        mut progress: Option<&mut ProgressBars>,
        interrupts: Option<&Interrupts>,
        watch: &mut Watch<'_>,
    ) -> Result<(), Error> {
        let tick = Duration::from_millis(20).min(self.launcher.poll_interval());
        let tick = watch.tick().map_or(tick, |t| t.min(tick));
        let mut last_draw = Instant::now();
        let mut last_maintenance = Instant::now();
        let mut last_turn = Instant::now();
        loop {
            if let Some(signal) = interrupts
                .and_then(Interrupts::received)
                .or_else(|| self.opts.cancelled())
            {
                return Err(Error::Interrupted { signal });
            }
            let gap = last_turn.elapsed();
            last_turn = Instant::now();
            if gap > CLOCK_JUMP {
                // The scheduler did not run (stopped, swapped out, suspended): blocks did not
                // run late by that much as far as anyone could tell.
                tracing::warn!("the scheduler did not run for {gap:?}; block timeouts restart");
                for conn in self.conns.values_mut() {
                    conn.busy_since += gap;
                }
            }
            self.retire_abandoned();
            self.start_tasks();
            self.ensure_workers()?;
            self.dispatch();
            self.finish_tasks(progress.as_deref_mut());
            if self.sched.is_done() {
                return Ok(());
            }
            if self.stalled() {
                tracing::error!("no block is ready or in flight but tasks are not done; stopping");
                return Ok(());
            }
            match events.recv_timeout(tick) {
                Ok(event) => {
                    self.handle(event)?;
                    while let Ok(event) = events.try_recv() {
                        self.handle(event)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Worker {
                        message: "the scheduler's server stopped unexpectedly".into(),
                    });
                }
            }
            if let Some(j) = &mut self.journal {
                j.maybe_flush()?;
            }
            if last_maintenance.elapsed() >= tick {
                last_maintenance = Instant::now();
                self.poll_launches()?;
                self.check_timeouts();
            }
            watch.maybe_call(&self.sched, false);
            if let Some(p) = progress.as_deref_mut()
                && last_draw.elapsed() >= Duration::from_millis(100)
            {
                last_draw = Instant::now();
                for (i, run) in self.runs.iter().enumerate() {
                    if run.started
                        && !run.finished
                        && let Some(state) = self.sched.task_state(run.task.task_id())
                    {
                        p.update(i, state);
                    }
                }
            }
        }
    }

    /// Abandoned tasks: blocks taken for them but not with a worker go back to the scheduler
    /// (which counts them as orphaned); their workers are told to leave (each after the blocks
    /// it holds, whose results count) and their queued jobs are cancelled.
    fn retire_abandoned(&mut self) {
        for i in 0..self.runs.len() {
            let run = &mut self.runs[i];
            if run.finished
                || self
                    .sched
                    .task_state(run.task.task_id())
                    .is_none_or(|s| s.abandoned.is_none())
            {
                continue;
            }
            for block in run.requeue.drain(..) {
                self.sched.unacquire(&block);
            }
            if run.retired {
                continue;
            }
            run.retired = true;
            tracing::info!(task = %run.task.task_id(), "task abandoned; its workers leave after the blocks they hold");
            for c in &run.conns {
                if let Some(conn) = self.conns.get_mut(c) {
                    conn.send(&ServerMsg::Shutdown);
                    conn.tx = None;
                }
            }
            self.launches.cancel_unconnected(i);
        }
    }

    /// A task starts (its workers are launched) once it has a ready block.
    fn start_tasks(&mut self) {
        for run in &mut self.runs {
            if run.started || run.finished || run.retired {
                continue;
            }
            if let Some(block) = self.sched.acquire_block(run.task.task_id()) {
                run.requeue.push_back(block);
                run.started = true;
            }
        }
    }

    /// Keeps `num_workers` live workers for every started, unfinished task.
    fn ensure_workers(&mut self) -> Result<(), Error> {
        for i in 0..self.runs.len() {
            let run = &self.runs[i];
            if !run.started || run.finished || run.retired {
                continue;
            }
            if !run.backoff.ready() {
                continue;
            }
            let live = self.launches.live(i);
            for _ in live..run.task.num_workers() {
                match self.launch(i) {
                    Ok(()) => self.runs[i].backoff.succeeded(),
                    Err(e) if transient(&e) => {
                        let pause = self.runs[i].backoff.failed();
                        self.startup_failure(
                            i,
                            format!("starting a worker failed ({e}); retrying in {pause:?}"),
                        )?;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn launch(&mut self, task: usize) -> Result<(), Error> {
        let id = self.next_worker;
        self.next_worker += 1;
        let task_id = self.runs[task].task.task_id().to_owned();
        let ctx = self
            .popts
            .context(&self.transport, &task_id, id, self.opts.prefetch);
        let (job, stderr) = submit_worker(
            self.launcher.as_ref(),
            &self.log_dir,
            &task_id,
            &ctx,
            &self.program,
            &self.args,
        )?;
        self.launches.insert(id, task, job, stderr);
        Ok(())
    }

    /// Next block of a task for a worker: returned blocks first, then the scheduler.
    fn next_block(&mut self, task: usize) -> Option<Block> {
        let run = &mut self.runs[task];
        if let Some(b) = run.requeue.pop_front() {
            return Some(b);
        }
        self.sched.acquire_block(run.task.task_id())
    }

    /// Fills every worker up to the prefetch limit, round robin.
    fn dispatch(&mut self) {
        for i in 0..self.runs.len() {
            if self.runs[i].finished || self.runs[i].retired || self.runs[i].conns.is_empty() {
                continue;
            }
            let prefetch = self.runs[i].pace.window(self.opts.prefetch);
            let conns: Vec<u64> = self.runs[i]
                .conns
                .iter()
                .copied()
                .filter(|c| {
                    self.conns
                        .get(c)
                        .is_some_and(|c| !c.retiring && c.tx.is_some())
                })
                .collect();
            let mut batches: Vec<Vec<WireBlock>> = vec![Vec::new(); conns.len()];
            'fill: loop {
                let mut sent = false;
                for (k, c) in conns.iter().enumerate() {
                    let room = self
                        .conns
                        .get(c)
                        .is_some_and(|c| c.inflight.len() < prefetch);
                    if !room {
                        continue;
                    }
                    let Some(block) = self.next_block(i) else {
                        break 'fill;
                    };
                    let Some(conn) = self.conns.get_mut(c) else {
                        continue;
                    };
                    let seq = conn.next_seq;
                    conn.next_seq += 1;
                    if conn.inflight.is_empty() {
                        conn.busy_since = Instant::now();
                    }
                    batches[k].push(WireBlock {
                        seq,
                        block_id: block.block_id,
                        grid_index: block.grid_index,
                        read_roi: block.read_roi.clone(),
                        write_roi: block.write_roi.clone(),
                    });
                    conn.inflight.push_back((seq, block));
                    sent = true;
                }
                if !sent {
                    break;
                }
            }
            for (k, blocks) in batches.into_iter().enumerate() {
                if !blocks.is_empty()
                    && let Some(conn) = self.conns.get(&conns[k])
                {
                    conn.send(&ServerMsg::Blocks { blocks });
                }
            }
        }
    }

    fn finish_tasks(&mut self, mut progress: Option<&mut ProgressBars>) {
        for i in 0..self.runs.len() {
            if self.runs[i].finished {
                continue;
            }
            let Some(state) = self.sched.task_state(self.runs[i].task.task_id()) else {
                continue;
            };
            if !state.is_done() {
                continue;
            }
            self.runs[i].finished = true;
            if let Some(p) = progress.as_deref_mut() {
                p.finish(i, state);
            }
            // Connected workers are told to leave; queued jobs are cancelled.
            for c in &self.runs[i].conns {
                if let Some(conn) = self.conns.get_mut(c) {
                    conn.send(&ServerMsg::Shutdown);
                    conn.tx = None;
                }
            }
            self.launches.cancel_unconnected(i);
        }
    }

    fn stalled(&self) -> bool {
        self.sched.tasks().all(|t| {
            self.sched
                .task_state(t.task_id())
                .is_none_or(|s| s.processing == 0 && s.ready == 0)
        })
    }

    fn handle(&mut self, event: Event) -> Result<(), Error> {
        match event {
            Event::Connected { conn, hello, tx } => self.connected(conn, hello, tx),
            Event::Message { conn, msg } => self.message(conn, msg),
            Event::Closed { conn, reason } => self.closed(conn, &reason)?,
            Event::Refused { peer, reason } => {
                tracing::warn!(%peer, "refused a worker connection: {reason}");
            }
        }
        Ok(())
    }

    fn connected(&mut self, id: u64, hello: Hello, tx: UnboundedSender<Vec<u8>>) {
        let Some(task) = self
            .runs
            .iter()
            .position(|r| r.task.task_id() == hello.task_id)
        else {
            let reason = format!("task {:?} is not part of this run", hello.task_id);
            tracing::warn!(peer = %hello.peer, "refused a worker: {reason}");
            if let Ok(frame) = to_frame(&ServerMsg::Refused { reason }) {
                let _ = tx.send(frame);
            }
            return;
        };
        let launch = self.launches.attach(hello.worker_id, task, id);
        tracing::debug!(task = %hello.task_id, worker = hello.worker_id, pid = hello.pid, host = %hello.host, "worker connected");
        let conn = Conn {
            task,
            tx: Some(tx),
            launch,
            hello,
            inflight: VecDeque::new(),
            busy_since: Instant::now(),
            ready: false,
            next_seq: 0,
            completed: 0,
            retiring: false,
            leaving: false,
            setup_failed: None,
        };
        conn.send(&ServerMsg::Welcome { connection: id });
        if self.runs[task].finished || self.runs[task].retired {
            conn.send(&ServerMsg::Shutdown);
            self.conns.insert(id, Conn { tx: None, ..conn });
        } else {
            self.conns.insert(id, conn);
        }
        self.runs[task].conns.push(id);
    }

    fn message(&mut self, id: u64, msg: WorkerMsg) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let task = conn.task;
        match msg {
            WorkerMsg::Done { results } => {
                let since = conn.busy_since;
                let before = conn.inflight.len();
                for outcome in results {
                    let Some(conn) = self.conns.get_mut(&id) else {
                        return;
                    };
                    let Some(pos) = conn.inflight.iter().position(|(s, _)| *s == outcome.seq)
                    else {
                        tracing::warn!(
                            "{} reported block #{} it does not hold; ignored",
                            conn.describe(),
                            outcome.seq
                        );
                        continue;
                    };
                    let Some((_, mut block)) = conn.inflight.remove(pos) else {
                        continue;
                    };
                    if pos == 0 {
                        conn.busy_since = Instant::now();
                    }
                    conn.completed += 1;
                    let worker = conn.hello.worker_id;
                    self.runs[task].startup_failures = 0;
                    let has_output = self.runs[task].task.has_output();
                    let cap = self.opts.max_output;
                    match (outcome.error, outcome.output) {
                        (None, Some(o)) if o.len() > cap => {
                            let message = super::output_too_large(&block, o.len(), cap);
                            self.fail_block(
                                task,
                                block,
                                worker,
                                FailureKind::OutputTooLarge,
                                message,
                            );
                        }
                        (None, None) if has_output => {
                            let message = format!(
                                "{} released block {block} without an output, but the task's blocks return outputs (a worker of another version, or Client::release_block instead of release_block_with_output)",
                                conn.describe()
                            );
                            self.fail_block(task, block, worker, FailureKind::Error, message);
                        }
                        (None, output) => {
                            let (index, id) = (block.grid_index, block.block_id);
                            block.set_status(BlockStatus::Success);
                            self.sched.release_block(block);
                            if let Some(j) = &mut self.journal {
                                match output.filter(|_| has_output) {
                                    Some(o) => {
                                        j.record_done_with_output(task, index, id, o.as_bytes());
                                    }
                                    None => j.record_done(task, index),
                                }
                            }
                        }
                        // A worker that reports failures still works: not a start-up failure.
                        (Some(message), _) => {
                            let kind = outcome.kind.unwrap_or(FailureKind::Error);
                            self.fail_block(task, block, worker, kind, message);
                        }
                    }
                }
                if let Some(conn) = self.conns.get(&id) {
                    let done = before.saturating_sub(conn.inflight.len());
                    if done > 0 && conn.ready {
                        let n = u32::try_from(done).unwrap_or(u32::MAX);
                        self.runs[task].pace.observe(since.elapsed() / n);
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
                requeue_front(&mut self.runs[task].requeue, back);
            }
            WorkerMsg::Bye => {
                // Everything the worker finished was reported before its goodbye: blocks it
                // still holds were never started (sent after it stopped taking blocks).
                conn.leaving = true;
                conn.tx = None;
                let back: Vec<Block> = conn.inflight.drain(..).map(|(_, b)| b).collect();
                requeue_front(&mut self.runs[task].requeue, back);
            }
            WorkerMsg::Hello { .. } => {
                tracing::warn!("{} said hello twice; ignored", conn.describe());
            }
            WorkerMsg::Results { .. } => {
                tracing::warn!(
                    "{} sent executor results to a block run; ignored",
                    conn.describe()
                );
            }
        }
    }

    /// A connection ended: give its blocks back, stop its process, count start-up failures.
    fn closed(&mut self, id: u64, reason: &str) -> Result<(), Error> {
        let Some(mut conn) = self.conns.remove(&id) else {
            return Ok(());
        };
        let task = conn.task;
        self.runs[task].conns.retain(|c| *c != id);
        let who = conn.describe();
        let graceful = conn.leaving && conn.inflight.is_empty() && conn.setup_failed.is_none();
        if !graceful {
            tracing::warn!(task = %self.runs[task].task.task_id(), "{who} lost: {reason}");
        }
        let (detail, stderr) = match conn.launch {
            Some(l) => self.launches.detach(l, graceful),
            None => (String::new(), None),
        };
        // The head block was running (unless set-up never finished); the rest never started.
        let started = conn.setup_failed.is_none() && conn.ready;
        let mut blocks: Vec<Block> = conn.inflight.drain(..).map(|(_, b)| b).collect();
        if started && !blocks.is_empty() {
            let head = blocks.remove(0);
            let message = format!("{who} lost while processing this block: {reason}{detail}");
            self.fail_block(
                task,
                head,
                conn.hello.worker_id,
                FailureKind::LostWorker,
                message,
            );
        }
        // The head block's failure may have abandoned the task: then its workers are not
        // replaced, and a worker lost is no start-up failure.
        let abandoned = self
            .sched
            .task_state(self.runs[task].task.task_id())
            .is_some_and(|s| s.abandoned.is_some());
        let run = &mut self.runs[task];
        requeue_front(&mut run.requeue, blocks);
        if !graceful && conn.completed == 0 && !run.finished && !run.retired && !abandoned {
            let message = match conn.setup_failed.take() {
                Some(m) => format!("{who}: set-up failed: {m}"),
                None => {
                    let stderr = stderr.map(|p| tail(&p, 20)).unwrap_or_default();
                    format!("{who} ended before completing a block ({reason}{detail}); {stderr}")
                }
            };
            self.startup_failure(task, message)?;
        }
        Ok(())
    }

    fn startup_failure(&mut self, task: usize, message: String) -> Result<(), Error> {
        let run = &mut self.runs[task];
        run.startup_failures += 1;
        tracing::warn!(task = %run.task.task_id(), attempt = run.startup_failures, "worker start-up failed: {message}");
        run.last_startup_error = message;
        if run.startup_failures > self.opts.max_worker_restarts {
            return Err(Error::WorkerStartup {
                task: run.task.task_id().to_owned(),
                attempts: run.startup_failures,
                message: std::mem::take(&mut run.last_startup_error),
            });
        }
        Ok(())
    }

    /// Polls launched jobs that are not connected: a job that ended without ever connecting
    /// is a start-up failure.
    fn poll_launches(&mut self) -> Result<(), Error> {
        for (task, message) in self.launches.ended_without_connecting() {
            if !self.runs[task].finished && !self.runs[task].retired {
                self.startup_failure(task, message)?;
            }
        }
        Ok(())
    }

    /// Kills workers whose current block ran past its task's timeout.
    fn check_timeouts(&mut self) {
        let mut expired: Vec<(u64, Duration)> = Vec::new();
        for (id, conn) in &self.conns {
            let Some(timeout) = self.runs[conn.task].task.timeout() else {
                continue;
            };
            if conn.ready && !conn.inflight.is_empty() && conn.busy_since.elapsed() > timeout {
                expired.push((*id, timeout));
            }
        }
        for (id, timeout) in expired {
            let Some(mut conn) = self.conns.remove(&id) else {
                continue;
            };
            let task = conn.task;
            self.runs[task].conns.retain(|c| *c != id);
            let who = conn.describe();
            let killed = match conn.launch {
                Some(l) => self.launches.kill(l, &who),
                None => format!("{who} disconnected (not started by this run, so not killed)"),
            };
            conn.tx = None;
            let mut blocks: Vec<Block> = conn.inflight.drain(..).map(|(_, b)| b).collect();
            if !blocks.is_empty() {
                let head = blocks.remove(0);
                let message = format!("timed out after {timeout:?}; {killed}");
                self.fail_block(
                    task,
                    head,
                    conn.hello.worker_id,
                    FailureKind::Timeout,
                    message,
                );
            }
            let run = &mut self.runs[task];
            requeue_front(&mut run.requeue, blocks);
        }
    }

    /// Records a failed attempt and releases the block as failed (retried or failed for good).
    fn fail_block(
        &mut self,
        task: usize,
        block: Block,
        worker: u64,
        kind: FailureKind,
        message: String,
    ) {
        self.runs[task].failures.fail_block(
            &mut self.sched,
            self.journal.as_mut(),
            task,
            block,
            worker,
            kind,
            message,
        );
    }

    /// Tells every worker to leave, waits briefly for local workers to exit, and cancels every
    /// job of the run that may still exist.
    fn shutdown(&mut self, clean: bool) {
        for conn in self.conns.values_mut() {
            if clean {
                conn.send(&ServerMsg::Shutdown);
            }
            conn.tx = None;
        }
        self.launches.stop(clean);
    }
}
