//! What both runners do with failed blocks and finished runs.

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::blocks::{Block, BlockStatus};
use crate::error::Error;
use crate::journal::{Journal, TaskLayout};
use crate::observe::summary::{MAX_LISTED_FAILURES, OutputsDir, TaskSummary};
use crate::observe::{BlockFailure, FailureKind, RunSummary};
use crate::scheduler::{MaskFailure, Scheduler};
use crate::task::Task;

use super::Runner;

/// Records, for both runners, the failed attempts of blocks whose mask could not be read (the
/// scheduler released them when it was about to hand them out) in the failures of their
/// task's run; `runs` lists each run's task id and failures, in the runs' order.
pub(super) fn record_mask_failures<'a>(
    sched: &mut Scheduler,
    mut journal: Option<&mut Journal>,
    runs: impl Iterator<Item = (&'a str, &'a mut Failures)>,
) {
    let failed = sched.take_mask_failures();
    if failed.is_empty() {
        return;
    }
    let mut runs: Vec<(&str, &mut Failures)> = runs.collect();
    for f in failed {
        let Some(i) = runs.iter().position(|(id, _)| *id == f.block.task_id()) else {
            continue;
        };
        runs[i].1.record_mask_failure(journal.as_deref_mut(), i, f);
    }
}

/// The failed attempts of one task: the first [`MAX_LISTED_FAILURES`] in full, then a count.
#[derive(Debug, Default)]
pub(super) struct Failures {
    list: Vec<BlockFailure>,
    more: u64,
    /// Failed attempts so far of blocks that failed and may be retried, by grid index.
    attempts: FxHashMap<u64, u32>,
}

impl Failures {
    /// Records a failed attempt (in the journal too) and releases the block as failed (the
    /// scheduler retries it or fails it for good and orphans what depends on it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fail_block(
        &mut self,
        sched: &mut Scheduler,
        journal: Option<&mut Journal>,
        task: usize,
        mut block: Block,
        worker: u64,
        kind: FailureKind,
        message: String,
    ) {
        tracing::warn!(block = %block, worker, %kind, error = %message, "block failed");
        let task_id = block.task_id.clone();
        let failed = |s: &Scheduler| s.task_state(&task_id).map_or(0, |t| t.failed);
        let before = failed(sched);
        let grid_index = block.grid_index;
        let attempts = self.attempts.entry(grid_index).or_insert(0);
        *attempts += 1;
        let failure = BlockFailure {
            block_id: block.block_id,
            grid_index,
            worker_id: worker,
            message,
            kind,
            attempt: *attempts,
        };
        let probe = journal.is_some().then(|| block.clone());
        block.set_status(BlockStatus::Failed);
        sched.release_failed(block, &failure.message);
        let last = failed(sched) > before;
        if last {
            // Failed for good: it does not run again in this run.
            self.attempts.remove(&grid_index);
        }
        if let (Some(journal), Some(probe)) = (journal, probe) {
            journal.record_block_failure(task, &probe, &failure, last);
        }
        self.push(failure);
    }

    /// Records a failed attempt the scheduler already released: a block whose mask could not
    /// be read when it was about to be handed out.
    pub(super) fn record_mask_failure(
        &mut self,
        journal: Option<&mut Journal>,
        task: usize,
        failed: MaskFailure,
    ) {
        let grid_index = failed.block.grid_index;
        let attempts = self.attempts.entry(grid_index).or_insert(0);
        *attempts += 1;
        let failure = BlockFailure {
            block_id: failed.block.block_id,
            grid_index,
            worker_id: 0,
            message: failed.message,
            kind: FailureKind::Error,
            attempt: *attempts,
        };
        if failed.last {
            self.attempts.remove(&grid_index);
        }
        if let Some(journal) = journal {
            journal.record_block_failure(task, &failed.block, &failure, failed.last);
        }
        self.push(failure);
    }

    fn push(&mut self, failure: BlockFailure) {
        if self.list.len() < MAX_LISTED_FAILURES {
            self.list.push(failure);
        } else {
            self.more += 1;
        }
    }
}

/// The run's summary: every task's final state and failures, in the scheduler's task order.
pub(super) fn summary<'a>(
    sched: &Scheduler,
    tasks: impl Iterator<Item = (&'a str, &'a mut Failures)>,
    log_dir: Option<&str>,
    elapsed: Duration,
    outputs_dir: Option<OutputsDir>,
) -> RunSummary {
    let tasks = tasks
        .map(|(id, failures)| TaskSummary {
            task_id: id.to_owned(),
            state: sched.task_state(id).cloned().unwrap_or_default(),
            failures: std::mem::take(&mut failures.list),
            more_failures: failures.more,
            log_dir: log_dir.map(str::to_owned),
        })
        .collect();
    RunSummary {
        tasks,
        elapsed,
        outputs_dir,
    }
}

/// The open journal of a run and where its outputs are.
pub(super) type OpenJournal = (Option<Journal>, Option<OutputsDir>);

/// Opens the runner's run directory (if it has one) for the scheduler's tasks and resumes the
/// scheduler from its done-markers. Without one, a run with a task with outputs records them
/// in a temporary run directory, which the summary keeps alive.
pub(super) fn open_journal(opts: &Runner, sched: &mut Scheduler) -> Result<OpenJournal, Error> {
    let tasks: Vec<Task> = sched.tasks().cloned().collect();
    let (dir, temp) = match &opts.run_dir {
        Some(dir) => (dir.clone(), None),
        None if tasks.iter().any(Task::has_output) => {
            let temp = tempfile::Builder::new()
                .prefix("blockwise-outputs-")
                .tempdir()
                .map_err(|source| Error::Io {
                    context: "creating a temporary run directory for the block outputs (set TMPDIR, or give the runner a run_dir)".into(),
                    source,
                })?;
            (temp.path().to_owned(), Some(Arc::new(temp)))
        }
        None => return Ok((None, None)),
    };
    // `fresh` starts over once per runner: its first run discards every record of the
    // directory, later runs (of this runner or its clones) resume what it recorded.
    let layouts: Vec<TaskLayout> = tasks.iter().map(Task::layout).collect();
    let mut journal = if temp.is_some() {
        Journal::open(&dir, &layouts, true)?
    } else if opts.fresh
        && !opts
            .fresh_used
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        Journal::open_fresh_all(&dir, &layouts)?
    } else {
        Journal::open(&dir, &layouts, false)?
    };
    if temp.is_some() {
        journal.not_durable()?;
    }
    #[cfg(feature = "zarr")]
    for t in &tasks {
        let identity = match t.inner.mask.as_ref() {
            Some(mask) => Some(mask.identity(t.total_write_roi())?),
            None => None,
        };
        journal.record_mask(t.task_id(), identity.as_ref())?;
    }
    let outputs_dir = Some(OutputsDir { path: dir, temp });
    sched.resume(journal.take_done())?;
    for t in &tasks {
        if let Some(s) = sched.task_state(t.task_id())
            && s.skipped > 0
        {
            tracing::info!(task = %t.task_id(), done = s.skipped, total = s.total, "resuming: blocks done by earlier runs are skipped");
        }
    }
    Ok((Some(journal), outputs_dir))
}

/// The end of a run, for both runners: the summary (if the run did not fail) and, with a run
/// directory, a final flush and a record of how the run ended.
pub(super) fn finish_run<'a>(
    result: Result<(), Error>,
    sched: &Scheduler,
    tasks: impl Iterator<Item = (&'a str, &'a mut Failures)>,
    log_dir: Option<&str>,
    elapsed: Duration,
    journal: Option<&mut Journal>,
    outputs_dir: Option<OutputsDir>,
) -> Result<RunSummary, Error> {
    let result = result.map(|()| summary(sched, tasks, log_dir, elapsed, outputs_dir));
    let Some(journal) = journal else {
        return result;
    };
    let outcome = match &result {
        Ok(s) if s.is_success() => "finished".to_owned(),
        Ok(_) => "finished with failures".to_owned(),
        Err(e) => format!("stopped: {e}"),
    };
    // Abandoned tasks are recorded for `blockwise status`.
    let mut recorded = Ok(());
    for task in sched.tasks() {
        if let Some(reason) = sched
            .task_state(task.task_id())
            .and_then(|s| s.abandoned.as_deref())
            && let Err(e) = journal.record_abandoned(task.task_id(), reason)
        {
            tracing::error!(task = %task.task_id(), "cannot record that the task was abandoned: {e}");
            if recorded.is_ok() {
                recorded = Err(e);
            }
        }
    }
    // Blocks masked out are not done: `blockwise status` says how many there were.
    #[cfg(feature = "zarr")]
    for task in sched.tasks().filter(|t| t.mask().is_some()) {
        let masked = sched.task_state(task.task_id()).map_or(0, |s| s.masked);
        if let Err(e) = journal.record_masked(task.task_id(), masked) {
            tracing::error!(task = %task.task_id(), "cannot record the blocks the mask left out: {e}");
            if recorded.is_ok() {
                recorded = Err(e);
            }
        }
    }
    let closed = journal.finish(&outcome);
    let summary = result?;
    closed?;
    recorded?;
    Ok(summary)
}
