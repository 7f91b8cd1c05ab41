//! What both runners do with failed blocks and finished runs.

use std::time::Duration;

use crate::blocks::{Block, BlockStatus};
use crate::observe::summary::{MAX_LISTED_FAILURES, TaskSummary};
use crate::observe::{BlockFailure, RunSummary};
use crate::scheduler::Scheduler;

/// The failed attempts of one task: the first [`MAX_LISTED_FAILURES`] in full, then a count.
#[derive(Debug, Default)]
pub(super) struct Failures {
    list: Vec<BlockFailure>,
    more: u64,
}

impl Failures {
    /// Records a failed attempt and releases the block as failed (the scheduler retries it or
    /// fails it for good and orphans what depends on it).
    pub(super) fn fail_block(
        &mut self,
        sched: &mut Scheduler,
        mut block: Block,
        worker: u64,
        message: String,
    ) {
        tracing::warn!(block = %block, worker, error = %message, "block failed");
        let failure = BlockFailure {
            block_id: block.block_id,
            grid_index: block.grid_index,
            worker_id: worker,
            message,
        };
        if self.list.len() < MAX_LISTED_FAILURES {
            self.list.push(failure);
        } else {
            self.more += 1;
        }
        block.set_status(BlockStatus::Failed);
        sched.release_block(block);
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
