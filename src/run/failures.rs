//! What both runners do with failed blocks and finished runs.

use std::time::Duration;

use crate::blocks::{Block, BlockStatus};
use crate::error::Error;
use crate::journal::Journal;
use crate::observe::summary::{MAX_LISTED_FAILURES, TaskSummary};
use crate::observe::{BlockFailure, RunSummary};
use crate::scheduler::Scheduler;
use crate::task::Task;

use super::Runner;

/// The failed attempts of one task: the first [`MAX_LISTED_FAILURES`] in full, then a count.
#[derive(Debug, Default)]
pub(super) struct Failures {
    list: Vec<BlockFailure>,
    more: u64,
}

impl Failures {
    /// Records a failed attempt (in the journal too) and releases the block as failed (the
    /// scheduler retries it or fails it for good and orphans what depends on it).
    pub(super) fn fail_block(
        &mut self,
        sched: &mut Scheduler,
        journal: Option<&mut Journal>,
        task: usize,
        mut block: Block,
        worker: u64,
        message: String,
    ) {
        tracing::warn!(block = %block, worker, error = %message, "block failed");
        let failed = |s: &Scheduler| s.task_state(block.task_id()).map_or(0, |t| t.failed);
        let before = failed(sched);
        let (block_id, grid_index) = (block.block_id, block.grid_index);
        let probe = journal.is_some().then(|| block.clone());
        block.set_status(BlockStatus::Failed);
        sched.release_block(block);
        if let (Some(journal), Some(probe)) = (journal, probe) {
            let last = sched.task_state(probe.task_id()).map_or(0, |t| t.failed) > before;
            journal.record_failure(task, &probe, worker, &message, last);
        }
        self.push(block_id, grid_index, worker, message);
    }

    fn push(&mut self, block_id: u64, grid_index: u64, worker: u64, message: String) {
        if self.list.len() < MAX_LISTED_FAILURES {
            self.list.push(BlockFailure {
                block_id,
                grid_index,
                worker_id: worker,
                message,
            });
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
    RunSummary { tasks, elapsed }
}

/// Opens the runner's run directory (if it has one) for the scheduler's tasks and resumes the
/// scheduler from its done-markers.
pub(super) fn open_journal(opts: &Runner, sched: &mut Scheduler) -> Result<Option<Journal>, Error> {
    let Some(dir) = &opts.run_dir else {
        return Ok(None);
    };
    let tasks: Vec<Task> = sched.tasks().cloned().collect();
    let mut journal = Journal::open(dir, &tasks, opts.fresh)?;
    sched.resume(journal.take_done())?;
    for t in &tasks {
        if let Some(s) = sched.task_state(t.task_id())
            && s.skipped > 0
        {
            tracing::info!(task = %t.task_id(), done = s.skipped, total = s.total, "resuming: blocks done by earlier runs are skipped");
        }
    }
    Ok(Some(journal))
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
) -> Result<RunSummary, Error> {
    let result = result.map(|()| summary(sched, tasks, log_dir, elapsed));
    let Some(journal) = journal else {
        return result;
    };
    let outcome = match &result {
        Ok(s) if s.is_success() => "finished".to_owned(),
        Ok(_) => "finished with failures".to_owned(),
        Err(e) => format!("stopped: {e}"),
    };
    let closed = journal.finish(&outcome);
    let summary = result?;
    closed?;
    Ok(summary)
}
