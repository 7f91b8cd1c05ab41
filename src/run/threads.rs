//! The threaded runner: one driver owns the scheduler, worker threads process blocks.
//!
//! Each task has one queue of blocks its workers pull from. Without a resource budget a task's
//! `num_workers` threads start when its first block is handed out and stay until the task is
//! done. With one ([`Runner::resources`]), every worker holds a [`Grant`] of the budget from
//! its start to its exit: [`Driver::balance`] starts workers for tasks with blocks to do
//! (upstream tasks first) as units allow, and when a task waits for units, idle workers of
//! tasks that hold them are sent [`Job::Retire`] (behind any queued block, so none is
//! abandoned); a worker tells the driver when it exits ([`Msg::Exited`]) and its grant goes
//! back. Workers leave what their blocks did in the [`Inbox`], which wakes the driver once per
//! batch rather than once per block.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use rustc_hash::FxHashMap;

use super::observer::Watch;
use crate::blocks::Block;
use crate::error::Error;
use crate::fleet::budget::{Budget, Grant};
use crate::observe::{ProgressBars, RunSummary};
use crate::scheduler::{Scheduler, panic_message};
use crate::task::{BlockFn, Processor, Task, WorkerContext};

use super::Runner;
use super::drive::{Runs, drive};
use super::failures::{Failures, finish_run, open_journal};
use crate::journal::Journal;
use crate::observe::FailureKind;
use crate::observe::summary::OutputsDir;

/// A block handed to a worker, with the number of this hand-out.
struct Work {
    block: Block,
    seq: u64,
}

/// What a task's queue holds.
// `Block` is the hot message (one per block); boxing it would cost an allocation per block.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// A block to process.
    Block(Work),
    /// The worker that takes this exits (its task has nothing for it, and another task waits
    /// for its units).
    Retire,
}

/// What a worker reports of one block it ran.
struct Report {
    seq: u64,
    grid_index: u64,
    block_id: u64,
    /// The output (for tasks with outputs), or why the block failed (with the block, which the
    /// failure records need; rare, so boxed).
    result: Result<Option<String>, Box<(Block, FailureKind, String)>>,
}

/// What workers tell the driver.
enum Msg {
    /// New reports are in the [`Inbox`].
    Reports,
    InitFailed {
        task: usize,
        worker: u64,
        message: String,
    },
    /// A worker thread ended (sent as it unwinds too); `retired` when it took a
    /// [`Job::Retire`].
    Exited {
        task: usize,
        worker: u64,
        retired: bool,
    },
}

/// Where workers leave their reports for the driver. The driver hands out and releases every
/// block of the run, so with short blocks it is the busiest thread: instead of a message per
/// block it gets one [`Msg::Reports`] per batch. A worker adds its report at once (nothing
/// waits for other blocks) and sends the message only if none is on its way since the driver
/// last looked; the driver clears `news` before it takes the reports, so a report it misses
/// comes with a message of its own.
#[derive(Default)]
struct Inbox {
    /// `(task, worker, report)` in the order they came.
    reports: Mutex<Vec<(usize, u64, Report)>>,
    /// A [`Msg::Reports`] was sent since the driver last took the reports.
    news: AtomicBool,
}

impl Inbox {
    /// Leaves a worker's report; false when the driver is gone.
    fn report(&self, tx: &Sender<Msg>, task: usize, worker: u64, report: Report) -> bool {
        self.reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((task, worker, report));
        if self.news.swap(true, Ordering::AcqRel) {
            return true;
        }
        tx.send(Msg::Reports).is_ok()
    }

    /// Takes every report left so far, swapping them for `spare` (an empty buffer, so that
    /// its capacity is reused).
    fn take(&self, spare: Vec<(usize, u64, Report)>) -> Vec<(usize, u64, Report)> {
        self.news.store(false, Ordering::SeqCst);
        let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *reports, spare)
    }
}

/// Tells the driver that a worker thread ended, however it ends.
struct ExitNotice {
    task: usize,
    worker: u64,
    retired: bool,
    tx: Sender<Msg>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Exited {
            task: self.task,
            worker: self.worker,
            retired: self.retired,
        });
    }
}

/// Shared between a worker and the driver, for timeouts.
#[derive(Default)]
struct Slot {
    /// `(seq, grid_index, started)` of the block being processed.
    current: Mutex<Option<(u64, u64, Instant)>>,
    abandoned: AtomicBool,
}

struct WorkerHandle {
    id: u64,
    slot: Arc<Slot>,
    join: Option<JoinHandle<()>>,
    /// The units the worker holds (with a budget).
    grant: Option<Grant>,
}

struct TaskRun {
    task: Task,
    work_tx: Option<Sender<Job>>,
    work_rx: Receiver<Job>,
    capacity: u64,
    workers: Vec<WorkerHandle>,
    /// [`Job::Retire`]s sent to the queue whose worker has not exited yet.
    retiring: usize,
    started: bool,
    finished: bool,
    /// The task was abandoned: its queue is closed, its workers exit after their block.
    retired: bool,
    /// Blocks in flight by grid index, for tasks with a timeout: `(seq, block)`.
    outstanding: FxHashMap<u64, (u64, Block)>,
    failures: Failures,
    init_failures: u32,
}

struct Driver<'a> {
    opts: &'a Runner,
    sched: Scheduler,
    runs: Vec<TaskRun>,
    done_tx: Sender<Msg>,
    /// Where workers leave their reports.
    inbox: Arc<Inbox>,
    /// An empty buffer to swap for the inbox's reports.
    spare: Vec<(usize, u64, Report)>,
    next_worker: u64,
    next_seq: u64,
    journal: Option<Journal>,
    outputs_dir: Option<OutputsDir>,
    /// The run's resource budget (empty: none).
    budget: Budget,
    /// Threads of workers that exited, joined at shutdown.
    exited: Vec<JoinHandle<()>>,
}

/// How often a run with a [`Cancel`](super::Cancel) handle looks at it.
const CANCEL_POLL: Duration = Duration::from_millis(20);

pub(super) fn run(
    tasks: &[Task],
    opts: &Runner,
    budget: Budget,
    show: bool,
) -> Result<RunSummary, Error> {
    let start = Instant::now();
    let mut sched = Scheduler::new(tasks)?;
    sched.set_queue_window(crate::scheduler::RUNNER_QUEUE_WINDOW);
    let all: Vec<Task> = sched.tasks().cloned().collect();
    if let Some(t) = all.iter().find(|t| t.inner.processor.is_none()) {
        return Err(Error::MissingProcess {
            task: t.task_id().to_owned(),
        });
    }
    let (journal, outputs_dir) = open_journal(opts, &mut sched)?;
    let (done_tx, done_rx) = unbounded::<Msg>();
    let runs: Vec<TaskRun> = all
        .iter()
        .map(|t| {
            let (tx, rx) = unbounded();
            TaskRun {
                task: t.clone(),
                work_tx: Some(tx),
                work_rx: rx,
                capacity: (t.num_workers() * opts.prefetch) as u64,
                workers: Vec::new(),
                retiring: 0,
                started: false,
                finished: false,
                retired: false,
                outstanding: FxHashMap::default(),
                failures: Failures::default(),
                init_failures: 0,
            }
        })
        .collect();
    let ids: Vec<String> = all.iter().map(|t| t.task_id().to_owned()).collect();
    let mut driver = Driver {
        opts,
        sched,
        runs,
        done_tx,
        inbox: Arc::default(),
        spare: Vec::new(),
        next_worker: 0,
        next_seq: 0,
        journal,
        outputs_dir,
        budget,
        exited: Vec::new(),
    };
    let mut progress = show.then(|| ProgressBars::new(&ids));
    let mut watch = Watch::new(opts.observer.as_ref());
    let tick = driver.tick(progress.is_some());
    let mut turn = Turn {
        driver: &mut driver,
        done_rx: &done_rx,
    };
    let result = drive(&mut turn, tick, progress.as_mut(), &mut watch);
    watch.maybe_call(&driver.sched, true);
    driver.shutdown();
    if let Some(p) = progress.as_mut() {
        p.close();
    }
    finish_run(
        result,
        &driver.sched,
        driver
            .runs
            .iter_mut()
            .map(|run| (run.task.inner.id.as_ref(), &mut run.failures)),
        None,
        start.elapsed(),
        driver.journal.as_mut(),
        driver.outputs_dir.take(),
    )
}

impl Driver<'_> {
    /// How long the loop may wait at most: a tenth of the shortest block timeout (to notice
    /// late blocks), the progress bars' redraw, the cancel handle's poll.
    fn tick(&self, progress: bool) -> Option<Duration> {
        let min_timeout = self.runs.iter().filter_map(|r| r.task.timeout()).min();
        let tick = match (min_timeout, progress) {
            (Some(t), _) => {
                Some((t / 10).clamp(Duration::from_millis(1), Duration::from_millis(100)))
            }
            (None, true) => Some(Duration::from_millis(100)),
            (None, false) => None,
        };
        // A cancel handle is polled at least every 20 ms.
        [tick, self.opts.cancel.is_some().then_some(CANCEL_POLL)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Hands ready blocks to the workers of every task, up to each task's capacity, and
    /// starts workers: without a budget all of a task's workers at its first block, with one
    /// as [`balance`](Self::balance) decides.
    fn dispatch(&mut self) -> Result<(), Error> {
        let budgeted = !self.budget.is_empty();
        for i in 0..self.runs.len() {
            // Handing out this task's blocks does not change whether it is held back (that
            // depends on its downstream tasks), so once per task and call.
            if self.runs[i].finished || self.sched.is_held_back(self.runs[i].task.task_id()) {
                continue;
            }
            loop {
                let id = self.runs[i].task.inner.id.clone();
                let processing = self.sched.task_state(&id).map_or(0, |s| s.processing);
                if processing >= self.runs[i].capacity {
                    break;
                }
                let Some(block) = self.sched.acquire_block(&id) else {
                    break;
                };
                if !self.runs[i].started {
                    self.runs[i].started = true;
                    if !budgeted {
                        for _ in 0..self.runs[i].task.num_workers() {
                            self.spawn_worker(i, None)?;
                        }
                    }
                }
                self.next_seq += 1;
                let seq = self.next_seq;
                let run = &mut self.runs[i];
                if run.task.timeout().is_some() {
                    run.outstanding
                        .insert(block.grid_index, (seq, block.clone()));
                }
                if let Some(tx) = &run.work_tx {
                    // The receiver lives in `run`, so sending cannot fail.
                    let _ = tx.send(Job::Block(Work { block, seq }));
                }
            }
        }
        if budgeted {
            self.balance()?;
        }
        Ok(())
    }

    /// The workers of task `i` that have not been told to retire.
    fn active_workers(&self, i: usize) -> usize {
        let run = &self.runs[i];
        run.workers.len().saturating_sub(run.retiring)
    }

    /// `(ready, processing)` blocks of task `i` (processing: handed out, queued or running).
    fn load(&self, i: usize) -> (u64, u64) {
        self.sched
            .task_state(self.runs[i].task.task_id())
            .map_or((0, 0), |s| (s.ready, s.processing))
    }

    /// Whether task `i` has a block no worker of it will take soon, and room for a worker.
    fn wants_worker(&self, i: usize) -> bool {
        let run = &self.runs[i];
        if run.finished || run.retired || !run.started {
            return false;
        }
        let active = self.active_workers(i);
        if active >= run.task.num_workers() {
            return false;
        }
        let (ready, processing) = self.load(i);
        ready > 0 || processing > active as u64
    }

    /// The workers of task `i` that have nothing to do: no ready block, and more workers than
    /// blocks handed out.
    fn idle_workers(&self, i: usize) -> usize {
        let run = &self.runs[i];
        if run.finished || run.retired {
            return 0;
        }
        let (ready, processing) = self.load(i);
        if ready > 0 {
            return 0;
        }
        let processing = usize::try_from(processing).unwrap_or(usize::MAX);
        self.active_workers(i).saturating_sub(processing)
    }

    /// With a budget: starts workers for the tasks that want them, in the scheduler's task
    /// order (upstream first), as units allow; if a task must wait for units, the idle workers
    /// of other tasks holding some of what it needs retire.
    fn balance(&mut self) -> Result<(), Error> {
        let mut waiting: Vec<usize> = Vec::new();
        for i in 0..self.runs.len() {
            while self.wants_worker(i) {
                match self.budget.try_take(&self.runs[i].task.inner.requirement) {
                    Some(grant) => self.spawn_worker(i, Some(grant))?,
                    None => {
                        waiting.push(i);
                        break;
                    }
                }
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        for j in 0..self.runs.len() {
            let idle = self.idle_workers(j);
            if idle == 0 {
                continue;
            }
            let holds = &self.runs[j].task.inner.requirement;
            if !waiting
                .iter()
                .any(|&w| w != j && self.runs[w].task.inner.requirement.overlaps(holds))
            {
                continue;
            }
            let run = &mut self.runs[j];
            if let Some(tx) = &run.work_tx {
                for _ in 0..idle {
                    let _ = tx.send(Job::Retire);
                }
                run.retiring += idle;
                tracing::debug!(task = %run.task.task_id(), idle, "idle workers retire: another task waits for their units");
            }
        }
        Ok(())
    }

    /// Forgets worker `worker` of task `task` and gives its units back; its thread is joined at
    /// shutdown unless `abandoned`.
    fn remove_worker(&mut self, task: usize, worker: u64, abandoned: bool) {
        let run = &mut self.runs[task];
        let Some(pos) = run.workers.iter().position(|w| w.id == worker) else {
            return;
        };
        let mut w = run.workers.remove(pos);
        if let Some(grant) = w.grant.take() {
            self.budget.give_back(grant);
        }
        if !abandoned && let Some(join) = w.join.take() {
            self.exited.push(join);
        }
    }

    /// Stops the workers of abandoned tasks: their queues are closed (each worker exits after
    /// the block it is running), and the blocks queued for them but not taken go back to the
    /// scheduler, which counts them as orphaned.
    fn retire_abandoned(&mut self) {
        for run in &mut self.runs {
            if run.retired || run.finished {
                continue;
            }
            if self
                .sched
                .task_state(run.task.task_id())
                .is_none_or(|s| s.abandoned.is_none())
            {
                continue;
            }
            run.retired = true;
            run.work_tx = None;
            let mut returned = 0u64;
            while let Ok(job) = run.work_rx.try_recv() {
                match job {
                    Job::Block(Work { block, .. }) => {
                        run.outstanding.remove(&block.grid_index);
                        self.sched.unacquire(&block);
                        returned += 1;
                    }
                    Job::Retire => run.retiring = run.retiring.saturating_sub(1),
                }
            }
            tracing::info!(task = %run.task.task_id(), returned, "task abandoned; its workers stop after their current block");
        }
    }

    fn handle(&mut self, msg: Msg) -> Result<(), Error> {
        match msg {
            Msg::Reports => self.take_reports(),
            Msg::InitFailed {
                task,
                worker,
                message,
            } => {
                self.remove_worker(task, worker, false);
                let run = &mut self.runs[task];
                run.init_failures += 1;
                tracing::warn!(task = %run.task.task_id(), worker, error = %message, "worker set-up failed");
                if run.init_failures > self.opts.max_worker_restarts {
                    return Err(Error::WorkerStartup {
                        task: run.task.task_id().to_owned(),
                        attempts: run.init_failures,
                        message,
                    });
                }
                // With a budget, `balance` starts the replacement when units allow.
                if !run.finished && !run.retired && self.budget.is_empty() {
                    self.spawn_worker(task, None)?;
                }
            }
            Msg::Exited {
                task,
                worker,
                retired,
            } => {
                let run = &mut self.runs[task];
                if retired {
                    run.retiring = run.retiring.saturating_sub(1);
                }
                self.remove_worker(task, worker, false);
            }
        }
        Ok(())
    }

    /// Takes the reports in the inbox.
    fn take_reports(&mut self) {
        let mut reports = self.inbox.take(std::mem::take(&mut self.spare));
        for (task, worker, report) in reports.drain(..) {
            self.take_report(task, worker, report);
        }
        self.spare = reports;
    }

    /// Takes one block's report from worker `worker` of task `task`.
    fn take_report(&mut self, task: usize, worker: u64, report: Report) {
        let Report {
            seq,
            grid_index,
            block_id,
            result,
        } = report;
        let run = &mut self.runs[task];
        if run.task.timeout().is_some() {
            match run.outstanding.get(&grid_index) {
                Some(&(s, _)) if s == seq => {
                    run.outstanding.remove(&grid_index);
                }
                // A late result of a block that already timed out.
                _ => return,
            }
        }
        match result {
            Ok(output) => {
                if let Err(e) = self.sched.release_success(task, grid_index, block_id) {
                    tracing::warn!("ignoring release: {e}");
                    return;
                }
                if let Some(j) = &mut self.journal {
                    match output {
                        Some(o) => {
                            j.record_done_with_output(task, grid_index, block_id, o.as_bytes())
                        }
                        None => j.record_done(task, grid_index),
                    }
                }
            }
            Err(failure) => {
                let (block, kind, message) = *failure;
                self.fail_block(task, block, worker, kind, message);
            }
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

    fn check_timeouts(&mut self) {
        for i in 0..self.runs.len() {
            let Some(timeout) = self.runs[i].task.timeout() else {
                continue;
            };
            let mut expired: Vec<(u64, u64, u64)> = Vec::new();
            for w in &self.runs[i].workers {
                let current = w
                    .slot
                    .current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some((seq, index, started)) = *current
                    && started.elapsed() > timeout
                {
                    w.slot.abandoned.store(true, Ordering::SeqCst);
                    expired.push((w.id, seq, index));
                }
            }
            for (worker, seq, index) in expired {
                // The thread may still be running; its units go back at once (see
                // `Runner::resources`).
                self.remove_worker(i, worker, true);
                let run = &mut self.runs[i];
                let Some((s, block)) = run.outstanding.remove(&index) else {
                    continue;
                };
                if s != seq {
                    run.outstanding.insert(index, (s, block));
                    continue;
                }
                let message = format!(
                    "timed out after {timeout:?}; worker {worker} abandoned (its thread keeps running until the block's function returns)"
                );
                self.fail_block(i, block, worker, FailureKind::Timeout, message);
                let abandoned = self
                    .sched
                    .task_state(self.runs[i].task.task_id())
                    .is_some_and(|s| s.abandoned.is_some());
                if !self.runs[i].finished
                    && !self.runs[i].retired
                    && !abandoned
                    && self.budget.is_empty()
                    && let Err(e) = self.spawn_worker(i, None)
                {
                    tracing::error!("could not replace a timed-out worker: {e}");
                }
            }
        }
    }

    /// Starts a worker thread for task `task`, holding `grant` (with a budget).
    fn spawn_worker(&mut self, task: usize, grant: Option<Grant>) -> Result<(), Error> {
        let id = self.next_worker;
        self.next_worker += 1;
        let run = &mut self.runs[task];
        let slot = Arc::new(Slot::default());
        let ctx = WorkerContext {
            task_id: run.task.task_id().to_owned(),
            worker_id: id,
            devices: grant
                .as_ref()
                .map(|g| g.devices().to_vec())
                .unwrap_or_default(),
        };
        let work_rx = run.work_rx.clone();
        let done_tx = self.done_tx.clone();
        let processor = run.task.inner.processor.clone();
        let track = run.task.timeout().is_some();
        let max_output = self.opts.max_output;
        let inbox = Arc::clone(&self.inbox);
        let worker_slot = Arc::clone(&slot);
        let join = std::thread::Builder::new()
            .name(format!("blockwise-{}-{id}", ctx.task_id))
            .spawn(move || {
                worker_loop(
                    task,
                    ctx,
                    processor,
                    work_rx,
                    done_tx,
                    worker_slot,
                    track,
                    max_output,
                    inbox,
                );
            })
            .map_err(|source| Error::Io {
                context: format!("spawning a worker thread for task {:?}", run.task.task_id()),
                source,
            });
        let join = match join {
            Ok(join) => join,
            Err(e) => {
                if let Some(grant) = grant {
                    self.budget.give_back(grant);
                }
                return Err(e);
            }
        };
        run.workers.push(WorkerHandle {
            id,
            slot,
            join: Some(join),
            grant,
        });
        Ok(())
    }

    fn shutdown(&mut self) {
        for run in &mut self.runs {
            run.work_tx = None;
        }
        for run in &mut self.runs {
            for w in &mut run.workers {
                if let Some(join) = w.join.take() {
                    if w.slot.abandoned.load(Ordering::SeqCst) {
                        continue;
                    }
                    if join.join().is_err() {
                        tracing::error!(worker = w.id, "worker thread panicked outside user code");
                    }
                }
            }
        }
        for join in self.exited.drain(..) {
            if join.join().is_err() {
                tracing::error!("worker thread panicked outside user code");
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn worker_loop(
    task: usize,
    ctx: WorkerContext,
    processor: Option<Processor>,
    work_rx: Receiver<Job>,
    done_tx: Sender<Msg>,
    slot: Arc<Slot>,
    track: bool,
    max_output: usize,
    inbox: Arc<Inbox>,
) {
    let mut notice = ExitNotice {
        task,
        worker: ctx.worker_id,
        retired: false,
        tx: done_tx.clone(),
    };
    let mut f: BlockFn = match processor {
        Some(Processor::PerBlock(f)) => Box::new(move |b: &Block| f(b)),
        Some(Processor::PerWorker(init)) => match catch_unwind(AssertUnwindSafe(|| init(&ctx))) {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                let _ = done_tx.send(Msg::InitFailed {
                    task,
                    worker: ctx.worker_id,
                    message: e.to_string(),
                });
                return;
            }
            Err(panic) => {
                let _ = done_tx.send(Msg::InitFailed {
                    task,
                    worker: ctx.worker_id,
                    message: format!("panic: {}", panic_message(panic.as_ref())),
                });
                return;
            }
        },
        None => return,
    };
    while let Ok(job) = work_rx.recv() {
        let Work { block, seq } = match job {
            Job::Block(work) => work,
            Job::Retire => {
                notice.retired = true;
                return;
            }
        };
        if track {
            *slot.current.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((seq, block.grid_index, Instant::now()));
        }
        let result = match catch_unwind(AssertUnwindSafe(|| f(&block))) {
            Ok(Ok(Some(output))) if output.len() > max_output => Err((
                FailureKind::OutputTooLarge,
                super::output_too_large(&block, output.len(), max_output),
            )),
            Ok(Ok(output)) => Ok(output),
            Ok(Err(e)) => Err((FailureKind::Error, e.to_string())),
            Err(panic) => Err((
                FailureKind::Panic,
                format!("panic: {}", panic_message(panic.as_ref())),
            )),
        };
        if track {
            *slot.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
            if slot.abandoned.load(Ordering::SeqCst) {
                // The driver failed this block on timeout and replaced this worker.
                return;
            }
        }
        let report = Report {
            seq,
            grid_index: block.grid_index,
            block_id: block.block_id,
            result: result.map_err(|(kind, message)| Box::new((block, kind, message))),
        };
        if !inbox.report(&done_tx, task, ctx.worker_id, report) {
            return;
        }
    }
}

/// One threaded run in the shared loop.
struct Turn<'r, 'a> {
    driver: &'r mut Driver<'a>,
    done_rx: &'r Receiver<Msg>,
}

impl Runs for Turn<'_, '_> {
    fn sched(&self) -> &Scheduler {
        &self.driver.sched
    }

    fn journal(&mut self) -> Option<&mut Journal> {
        self.driver.journal.as_mut()
    }

    fn tasks(&self) -> usize {
        self.driver.runs.len()
    }

    fn lane(&self, i: usize) -> (&str, bool, bool) {
        let run = &self.driver.runs[i];
        (run.task.task_id(), run.started, run.finished)
    }

    /// Closing the queue lets the task's workers exit.
    fn finish(&mut self, i: usize) {
        let run = &mut self.driver.runs[i];
        run.finished = true;
        run.work_tx = None;
    }

    /// Blocks queued for workers but not started are dropped; running ones finish.
    fn cancelled(&mut self) -> Option<String> {
        let signal = self.driver.opts.cancelled()?;
        for run in &mut self.driver.runs {
            while let Ok(job) = run.work_rx.try_recv() {
                if matches!(job, Job::Retire) {
                    run.retiring = run.retiring.saturating_sub(1);
                }
            }
        }
        Some(signal)
    }

    fn prepare(&mut self) -> Result<(), Error> {
        self.driver.retire_abandoned();
        self.driver.dispatch()
    }

    /// Takes what workers reported, releasing in batches.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, Error> {
        let first = match timeout {
            Some(t) => match self.done_rx.recv_timeout(t) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.driver.take_reports();
                    return Ok(false);
                }
            },
            None => match self.done_rx.recv() {
                Ok(msg) => Some(msg),
                Err(_) => {
                    self.driver.take_reports();
                    return Ok(false);
                }
            },
        };
        if let Some(msg) = first {
            self.driver.handle(msg)?;
            while let Ok(msg) = self.done_rx.try_recv() {
                self.driver.handle(msg)?;
            }
        }
        Ok(true)
    }

    fn maintain(&mut self) -> Result<(), Error> {
        self.driver.check_timeouts();
        Ok(())
    }

    fn record_mask_failures(&mut self) {
        let d = &mut *self.driver;
        super::failures::record_mask_failures(
            &mut d.sched,
            d.journal.as_mut(),
            d.runs
                .iter_mut()
                .map(|r| (r.task.task_id(), &mut r.failures)),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn report(seq: u64) -> Report {
        Report {
            seq,
            grid_index: seq,
            block_id: seq,
            result: Ok(None),
        }
    }

    /// Every report left in the inbox reaches the driver, each once, however the workers'
    /// reports and the driver's takes interleave: a report the driver misses always comes with
    /// a message that wakes it (a lost wake-up would hang a run).
    #[test]
    fn every_report_in_the_inbox_reaches_the_driver() {
        const WORKERS: u64 = 4;
        const EACH: u64 = 20_000;
        let inbox = Arc::new(Inbox::default());
        let (tx, rx) = unbounded::<Msg>();
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let inbox = Arc::clone(&inbox);
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        assert!(inbox.report(&tx, 0, w, report(w * EACH + i)));
                    }
                })
            })
            .collect();
        drop(tx);
        let mut seen = vec![false; usize::try_from(WORKERS * EACH).unwrap()];
        let mut taken = 0u64;
        let mut spare = Vec::new();
        let mut messages = 0u64;
        while taken < WORKERS * EACH {
            // Every wait is bounded: a lost wake-up fails the test instead of hanging it.
            let msg = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a report was left in the inbox without a message");
            assert!(matches!(msg, Msg::Reports));
            messages += 1;
            let mut reports = inbox.take(std::mem::take(&mut spare));
            let mut last = FxHashMap::default();
            for (_, worker, r) in reports.drain(..) {
                let i = usize::try_from(r.seq).unwrap();
                assert!(!seen[i], "report {i} taken twice");
                seen[i] = true;
                // One worker's reports come in the order it made them.
                if let Some(prev) = last.insert(worker, r.seq) {
                    assert!(prev < r.seq);
                }
                taken += 1;
            }
            spare = reports;
        }
        for w in workers {
            w.join().unwrap();
        }
        assert!(seen.iter().all(|&s| s));
        // Nothing more is left, and fewer messages than reports were needed (usually far
        // fewer; at most one per report).
        assert!(inbox.take(Vec::new()).is_empty());
        assert!(messages <= WORKERS * EACH);
    }
}
