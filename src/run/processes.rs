//! The process runner: the driver owns the scheduler and serves its blocks to a
//! [`Fleet`] of worker processes, which connect back and pull them.
//!
//! This file is the block source: which task's blocks go out next (blocks returned by workers
//! first, then the scheduler), what a finished, failed or lost block does to the scheduler and
//! the journal, and when a task's workers start and leave. Everything about the worker
//! processes themselves is the fleet's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::drive::{Runs, drive};
use super::failures::{Failures, finish_run, open_journal};
use super::observer::Watch;
use super::{ProcessOptions, Runner};
use crate::blocks::{Block, BlockStatus};
use crate::error::{Error, WorkerErrorKind};
use crate::fleet::budget::Budget;
use crate::fleet::jobs::requeue_front;
use crate::fleet::protocol::{Outcome, ServerMsg, WireBlock, WorkerMsg, to_frame};
use crate::fleet::server::Event;
use crate::fleet::{Demand, Fleet, FleetError, Group, Loss, LossKind, Peer, Source};
use crate::journal::Journal;
use crate::observe::summary::OutputsDir;
use crate::observe::{FailureKind, ProgressBars, RunSummary};
use crate::scheduler::Scheduler;
use crate::task::Task;

struct TaskRun {
    task: Task,
    started: bool,
    finished: bool,
    /// The task was abandoned: its workers were told to leave, no worker is started for it.
    retired: bool,
    /// Blocks taken from the scheduler (so counted as processing) but not with a worker:
    /// returned unstarted by workers that left, or taken to see whether the task can start.
    requeue: VecDeque<Block>,
    failures: Failures,
}

/// The blocks of a run, as the fleet's source.
struct Blocks<'a> {
    opts: &'a Runner,
    sched: Scheduler,
    runs: Vec<TaskRun>,
    journal: Option<Journal>,
    outputs_dir: Option<OutputsDir>,
}

pub(super) fn run(
    tasks: &[Task],
    opts: &Runner,
    popts: &ProcessOptions,
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
    // Session frames admit the run's largest output.
    let mut popts = popts.clone();
    popts.max_output = opts.max_output;
    let groups = all
        .iter()
        .map(|t| Group {
            id: t.task_id().to_owned(),
            log_group: t.task_id().to_owned(),
            workers: t.num_workers(),
            prefetch: opts.prefetch,
            threads: t.threads_per_worker(),
            max_restarts: opts.max_worker_restarts,
            need: t.inner.requirement.clone(),
            eager: false,
            label: "worker",
            verb: "processing",
            unit: "block",
            a_unit: "a block",
        })
        .collect();
    let (mut fleet, events) = Fleet::start(popts, groups, budget)?;
    let runs = all
        .iter()
        .map(|t| TaskRun {
            task: t.clone(),
            started: false,
            finished: false,
            retired: false,
            requeue: VecDeque::new(),
            failures: Failures::default(),
        })
        .collect();
    let ids: Vec<String> = all.iter().map(|t| t.task_id().to_owned()).collect();
    let mut blocks = Blocks {
        opts,
        sched,
        runs,
        journal,
        outputs_dir,
    };
    let mut progress = show.then(|| ProgressBars::new(&ids));
    let mut watch = Watch::new(opts.observer.as_ref());
    let tick = fleet.tick();
    let mut turn = Turn {
        blocks: &mut blocks,
        fleet: &mut fleet,
        events: &events,
        last_maintenance: Instant::now(),
    };
    let result = drive(&mut turn, Some(tick), progress.as_mut(), &mut watch);
    watch.maybe_call(&blocks.sched, true);
    fleet.shutdown(result.is_ok());
    if let Some(p) = progress.as_mut() {
        p.close();
    }
    let log_dir = fleet.log_dir().display().to_string();
    drop(fleet);
    finish_run(
        result,
        &blocks.sched,
        blocks
            .runs
            .iter_mut()
            .map(|run| (run.task.inner.id.as_ref(), &mut run.failures)),
        Some(&log_dir),
        start.elapsed(),
        blocks.journal.as_mut(),
        blocks.outputs_dir.take(),
    )
}

impl Blocks<'_> {
    fn fleet_error(&self, e: FleetError) -> Error {
        match e {
            FleetError::Startup {
                group,
                attempts,
                message,
            } => Error::WorkerStartup {
                task: self.runs[group].task.task_id().to_owned(),
                attempts,
                message,
            },
            FleetError::Launch(e) => e,
        }
    }

    /// Abandoned tasks: blocks taken for them but not with a worker go back to the scheduler
    /// (which counts them as orphaned); their workers are told to leave (each after the blocks
    /// it holds, whose results count) and their queued jobs are cancelled.
    fn retire_abandoned(&mut self, fleet: &mut Fleet<Block>) {
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
            fleet.close_group(i);
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
}

impl Source for Blocks<'_> {
    type Unit = Block;
    type Outcome = Outcome;

    fn demand(&self, task: usize) -> Demand {
        let run = &self.runs[task];
        if !run.started || run.finished || run.retired {
            return Demand::Closed;
        }
        let id = run.task.task_id();
        let ready =
            !self.sched.is_held_back(id) && self.sched.task_state(id).is_some_and(|s| s.ready > 0);
        if ready || !run.requeue.is_empty() {
            Demand::Work
        } else {
            Demand::Idle
        }
    }

    /// Returned blocks first, then the scheduler.
    fn next(&mut self, task: usize) -> Option<Block> {
        let run = &mut self.runs[task];
        if let Some(b) = run.requeue.pop_front() {
            return Some(b);
        }
        // Held back while a downstream task works through this one's lead (see
        // `Scheduler::is_held_back`): asked again when blocks come back.
        if self.sched.is_held_back(run.task.task_id()) {
            return None;
        }
        self.sched.acquire_block(run.task.task_id())
    }

    fn frame(&self, units: &[(u64, &Block)]) -> Result<Vec<u8>, String> {
        let blocks = units
            .iter()
            .map(|(seq, block)| WireBlock {
                seq: *seq,
                block_id: block.block_id,
                grid_index: block.grid_index,
                read_roi: block.read_roi.clone(),
                write_roi: block.write_roi.clone(),
            })
            .collect();
        to_frame(&ServerMsg::Blocks { blocks }).map_err(|e| e.to_string())
    }

    fn unsendable(&mut self, task: usize, block: Block, message: String) {
        self.fail_block(task, block, 0, FailureKind::Error, message);
    }

    fn results(msg: WorkerMsg) -> Result<Vec<(u64, Outcome)>, WorkerMsg> {
        match msg {
            WorkerMsg::Done { results } => Ok(results.into_iter().map(|o| (o.seq, o)).collect()),
            other => Err(other),
        }
    }

    fn finished(&mut self, task: usize, mut block: Block, outcome: Outcome, peer: &Peer) {
        let worker = peer.worker_id();
        let has_output = self.runs[task].task.has_output();
        let cap = self.opts.max_output;
        match (outcome.error, outcome.output) {
            (None, Some(o)) if o.len() > cap => {
                let message = super::output_too_large(&block, o.len(), cap);
                self.fail_block(task, block, worker, FailureKind::OutputTooLarge, message);
            }
            (None, None) if has_output => {
                let message = format!(
                    "{} released block {block} without an output, but the task's blocks return outputs (a worker of another version, or Client::release_block instead of release_block_with_output)",
                    peer.describe()
                );
                self.fail_block(task, block, worker, FailureKind::Error, message);
            }
            (None, output) => {
                let (index, id) = (block.grid_index, block.block_id);
                block.set_status(BlockStatus::Success);
                self.sched.release_block(block);
                if let Some(j) = &mut self.journal {
                    match output.filter(|_| has_output) {
                        Some(o) => j.record_done_with_output(task, index, id, o.as_bytes()),
                        None => j.record_done(task, index),
                    }
                }
            }
            (Some(message), _) => {
                let kind = outcome.kind.unwrap_or(FailureKind::Error);
                self.fail_block(task, block, worker, kind, message);
            }
        }
    }

    fn lost(&mut self, task: usize, block: Block, loss: Loss) {
        let kind = match loss.kind {
            LossKind::Died => FailureKind::LostWorker,
            LossKind::Timeout => FailureKind::Timeout,
        };
        self.fail_block(task, block, loss.worker, kind, loss.message);
    }

    fn give_back(&mut self, task: usize, blocks: Vec<Block>) {
        let run = &mut self.runs[task];
        if run.retired {
            // An abandoned task's blocks go back to the scheduler, which counts them orphaned.
            for block in &blocks {
                self.sched.unacquire(block);
            }
        } else {
            requeue_front(&mut run.requeue, blocks);
        }
    }

    fn timeout(&self, task: usize, _block: &Block) -> Option<Duration> {
        self.runs[task].task.timeout()
    }
}

/// One process run in the shared loop: the blocks and their fleet.
struct Turn<'r, 'a> {
    blocks: &'r mut Blocks<'a>,
    fleet: &'r mut Fleet<Block>,
    events: &'r Receiver<Event>,
    last_maintenance: Instant,
}

impl Runs for Turn<'_, '_> {
    fn sched(&self) -> &Scheduler {
        &self.blocks.sched
    }

    fn journal(&mut self) -> Option<&mut Journal> {
        self.blocks.journal.as_mut()
    }

    fn tasks(&self) -> usize {
        self.blocks.runs.len()
    }

    fn lane(&self, i: usize) -> (&str, bool, bool) {
        let run = &self.blocks.runs[i];
        (run.task.task_id(), run.started, run.finished)
    }

    /// Connected workers are told to leave; queued jobs are cancelled.
    fn finish(&mut self, i: usize) {
        self.blocks.runs[i].finished = true;
        self.fleet.close_group(i);
    }

    fn cancelled(&mut self) -> Option<String> {
        self.fleet
            .interrupted()
            .or_else(|| self.blocks.opts.cancelled())
    }

    fn prepare(&mut self) -> Result<(), Error> {
        self.blocks.retire_abandoned(self.fleet);
        self.blocks.start_tasks();
        self.fleet
            .step(self.blocks)
            .map_err(|e| self.blocks.fleet_error(e))
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, Error> {
        let first = match timeout {
            Some(t) => self.events.recv_timeout(t),
            None => self
                .events
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match first {
            Ok(event) => {
                self.fleet
                    .handle(self.blocks, event)
                    .map_err(|e| self.blocks.fleet_error(e))?;
                while let Ok(event) = self.events.try_recv() {
                    self.fleet
                        .handle(self.blocks, event)
                        .map_err(|e| self.blocks.fleet_error(e))?;
                }
                Ok(true)
            }
            Err(RecvTimeoutError::Timeout) => Ok(true),
            Err(RecvTimeoutError::Disconnected) => Err(Error::worker(
                WorkerErrorKind::ServerStopped,
                "the scheduler's server stopped unexpectedly",
            )),
        }
    }

    fn maintain(&mut self) -> Result<(), Error> {
        if self.last_maintenance.elapsed() >= self.fleet.tick() {
            self.last_maintenance = Instant::now();
            self.fleet
                .maintain(self.blocks)
                .map_err(|e| self.blocks.fleet_error(e))?;
        }
        Ok(())
    }

    fn record_mask_failures(&mut self) {
        let d = &mut *self.blocks;
        super::failures::record_mask_failures(
            &mut d.sched,
            d.journal.as_mut(),
            d.runs
                .iter_mut()
                .map(|r| (r.task.task_id(), &mut r.failures)),
        );
    }
}
