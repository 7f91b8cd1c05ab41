//! The run summary, printed as daisy's "Execution Summary".

use std::fmt;
use std::time::Duration;

use crate::scheduler::TaskState;

/// At most this many failures are listed per task (daisy's limit).
pub(crate) const MAX_LISTED_FAILURES: usize = 100;

/// One failed attempt of a block.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockFailure {
    /// daisy's block id.
    pub block_id: u64,
    /// The block's dense grid index.
    pub grid_index: u64,
    /// The worker that ran the attempt.
    pub worker_id: u64,
    /// The error message (or panic message, or timeout).
    pub message: String,
}

/// Per-task results of a run (daisy's task states plus the failures).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskSummary {
    /// The task id.
    pub task_id: String,
    /// The final counters.
    pub state: TaskState,
    /// The first failed attempts, in the order they happened (at most 100).
    pub failures: Vec<BlockFailure>,
    /// How many further failed attempts were not kept.
    pub more_failures: u64,
    /// Where the task's worker logs are (`<log dir>/<task>/worker_<id>.out/.err`), for runners
    /// whose workers write logs.
    pub log_dir: Option<String>,
}

/// The outcome of [`run_blockwise`](crate::run_blockwise): per-task counters and failures.
///
/// Failed and orphaned blocks are data here, not an `Err`. `Display` prints daisy's
/// "Execution Summary" text.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[must_use = "check `is_success()`: failed blocks are reported here, not as an error"]
pub struct RunSummary {
    pub(crate) tasks: Vec<TaskSummary>,
    /// Wall time of the run.
    #[serde(with = "duration_secs")]
    pub(crate) elapsed: Duration,
}

mod duration_secs {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let secs: f64 = serde::Deserialize::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

impl RunSummary {
    /// The counters of a task.
    #[must_use]
    pub fn task(&self, task_id: &str) -> Option<&TaskState> {
        self.tasks
            .iter()
            .find(|t| t.task_id == task_id)
            .map(|t| &t.state)
    }

    /// Per-task results, upstream tasks first.
    #[must_use]
    pub fn tasks(&self) -> &[TaskSummary] {
        &self.tasks
    }

    /// The failed attempts kept for a task.
    #[must_use]
    pub fn failures(&self, task_id: &str) -> &[BlockFailure] {
        self.tasks
            .iter()
            .find(|t| t.task_id == task_id)
            .map_or(&[], |t| t.failures.as_slice())
    }

    /// True only if every block of every task completed (succeeded or was skipped): no block
    /// failed, was orphaned, or was left unprocessed.
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.tasks.iter().all(|t| {
            t.state.failed == 0 && t.state.orphaned == 0 && t.state.completed == t.state.total
        })
    }

    /// Wall time of the run.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Total number of blocks that completed, over all tasks.
    #[must_use]
    pub fn completed(&self) -> u64 {
        self.tasks.iter().map(|t| t.state.completed).sum()
    }

    /// Total number of blocks skipped as already done (by a check function or by the
    /// done-markers of a run directory), over all tasks.
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.tasks.iter().map(|t| t.state.skipped).sum()
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        writeln!(f, "Execution Summary")?;
        writeln!(f, "-----------------")?;
        for t in &self.tasks {
            let s = &t.state;
            writeln!(f)?;
            writeln!(f, "  Task {}:", t.task_id)?;
            writeln!(f)?;
            writeln!(f, "    num blocks : {}", s.total)?;
            writeln!(
                f,
                "    completed ✔: {} (skipped {})",
                s.completed, s.skipped
            )?;
            writeln!(f, "    failed    ✗: {}", s.failed)?;
            writeln!(f, "    orphaned  ∅: {}", s.orphaned)?;
            writeln!(f)?;
            if !t.failures.is_empty() {
                writeln!(f, "    Failed Blocks:")?;
                writeln!(f)?;
                for failure in &t.failures {
                    writeln!(
                        f,
                        "      block {} in worker {} with exception {}",
                        failure.block_id, failure.worker_id, failure.message
                    )?;
                }
                if t.more_failures > 0 {
                    writeln!(f, "      (and {} more)", t.more_failures)?;
                }
                writeln!(f)?;
                if let Some(dir) = &t.log_dir {
                    writeln!(f, "    See worker logs for details:")?;
                    writeln!(f)?;
                    for failure in t.failures.iter().take(10) {
                        writeln!(
                            f,
                            "      {dir}/{}/worker_{}.err / .out",
                            t.task_id, failure.worker_id
                        )?;
                    }
                    if t.failures.len() as u64 + t.more_failures > 10 {
                        writeln!(f, "      ...")?;
                    }
                }
            }
            if s.completed == s.total {
                writeln!(f, "    all blocks processed successfully")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daisy_text_for_a_successful_task() {
        let summary = RunSummary {
            tasks: vec![TaskSummary {
                task_id: "test_server_task".into(),
                state: TaskState {
                    started: true,
                    total: 12,
                    completed: 12,
                    ..TaskState::default()
                },
                failures: Vec::new(),
                more_failures: 0,
                log_dir: None,
            }],
            elapsed: Duration::ZERO,
        };
        let expected = "\nExecution Summary\n-----------------\n\n  Task test_server_task:\n\n    num blocks : 12\n    completed ✔: 12 (skipped 0)\n    failed    ✗: 0\n    orphaned  ∅: 0\n\n    all blocks processed successfully\n";
        assert_eq!(summary.to_string(), expected);
        assert!(summary.is_success());
    }

    #[test]
    fn failures_are_listed() {
        let summary = RunSummary {
            tasks: vec![TaskSummary {
                task_id: "t".into(),
                state: TaskState {
                    total: 3,
                    completed: 1,
                    failed: 1,
                    orphaned: 1,
                    ..TaskState::default()
                },
                failures: vec![BlockFailure {
                    block_id: 2,
                    grid_index: 1,
                    worker_id: 0,
                    message: "boom".into(),
                }],
                more_failures: 4,
                log_dir: None,
            }],
            elapsed: Duration::ZERO,
        };
        let expected = "\nExecution Summary\n-----------------\n\n  Task t:\n\n    num blocks : 3\n    completed ✔: 1 (skipped 0)\n    failed    ✗: 1\n    orphaned  ∅: 1\n\n    Failed Blocks:\n\n      block 2 in worker 0 with exception boom\n      (and 4 more)\n\n";
        assert_eq!(summary.to_string(), expected);
        assert!(!summary.is_success());
    }
}
