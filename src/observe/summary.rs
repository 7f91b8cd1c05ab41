//! The run summary, printed as daisy's "Execution Summary".

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::journal::Outputs;
use crate::scheduler::TaskState;

/// At most this many failures are listed per task (daisy's limit).
pub(crate) const MAX_LISTED_FAILURES: usize = 100;

/// Why an attempt of a block failed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The block's function returned an error (or a worker released the block as failed).
    #[default]
    Error,
    /// The block's function panicked.
    Panic,
    /// The block ran longer than its task's [`timeout`](crate::TaskBuilder::timeout).
    Timeout,
    /// The worker process running the block died, hung or disconnected.
    LostWorker,
    /// The block's output was larger than
    /// [`Runner::max_output_bytes`](crate::Runner::max_output_bytes).
    OutputTooLarge,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Error => "error",
            FailureKind::Panic => "panic",
            FailureKind::Timeout => "timeout",
            FailureKind::LostWorker => "lost worker",
            FailureKind::OutputTooLarge => "output too large",
        })
    }
}

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
    /// Why the attempt failed.
    #[serde(default)]
    pub kind: FailureKind,
    /// Which attempt of the block this was in the run (1 for the first).
    #[serde(default)]
    pub attempt: u32,
}

/// Where a run's block outputs are: its run directory, or a temporary one that lives as long
/// as a summary (or an [`Outputs`] iterator) holds it.
#[derive(Debug, Clone)]
pub(crate) struct OutputsDir {
    pub(crate) path: PathBuf,
    pub(crate) temp: Option<Arc<tempfile::TempDir>>,
}

impl PartialEq for OutputsDir {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for OutputsDir {}

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
    /// Where the block outputs are (a run directory), if the run has one.
    #[serde(skip)]
    pub(crate) outputs_dir: Option<OutputsDir>,
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
    /// failed, was orphaned, or was left unprocessed, and no task was
    /// [abandoned](TaskState::abandoned).
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.tasks.iter().all(|t| {
            t.state.failed == 0
                && t.state.orphaned == 0
                && t.state.completed == t.state.total
                && t.state.abandoned.is_none()
        })
    }

    /// The tasks that were abandoned (see
    /// [`TaskBuilder::max_consecutive_failures`](crate::TaskBuilder::max_consecutive_failures)),
    /// with the reason, upstream tasks first.
    pub fn abandoned(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tasks.iter().filter_map(|t| {
            t.state
                .abandoned
                .as_deref()
                .map(|reason| (t.task_id.as_str(), reason))
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

    /// The outputs of task `task_id`'s blocks (see
    /// [`TaskBuilder::process_with_output`](crate::TaskBuilder::process_with_output)), read
    /// lazily from the run directory, one record at a time, in the order blocks finished.
    /// With a [`run_dir`](crate::Runner::run_dir) that resumed, blocks done by earlier runs are
    /// included: every done block has exactly one output (blocks done by an earlier run whose
    /// task had no outputs have none). Without one, the run recorded them in
    /// a temporary directory that is removed when this summary and every [`Outputs`] from it
    /// are dropped.
    ///
    /// ```
    /// use blockwise::{Roi, Task};
    ///
    /// # fn main() -> Result<(), blockwise::Error> {
    /// let task = Task::builder("stats", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///     .process_with_output(|block| {
    ///         let r = block.write_roi();
    ///         Ok(vec![r.begin()[0] as u64, r.end()[0] as u64])
    ///     })
    ///     .build()?;
    /// let summary = blockwise::run_blockwise([task])?;
    /// let mut total = 0;
    /// for output in summary.outputs::<Vec<u64>>("stats")? {
    ///     let output = output?;
    ///     total += output.value[1] - output.value[0];
    /// }
    /// assert_eq!(total, 100);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`JournalError::NoOutputs`](crate::journal::JournalError::NoOutputs) if the run has no
    /// such task (or recorded no outputs: no run directory and no task with outputs); errors
    /// of [`read_outputs`](crate::journal::read_outputs).
    pub fn outputs<T: DeserializeOwned>(&self, task_id: &str) -> Result<Outputs<T>, Error> {
        let Some(dir) = &self.outputs_dir else {
            return Err(Error::Journal(crate::journal::JournalError::NoOutputs {
                task: task_id.to_owned(),
                dir: PathBuf::from("(none: the run had no run directory and no task with outputs)"),
            }));
        };
        Ok(crate::journal::read_outputs(&dir.path, task_id)?.keep(dir.temp.clone()))
    }

    /// The run directory holding the run's block outputs: the runner's
    /// [`run_dir`](crate::Runner::run_dir), or the temporary directory of a run without one
    /// that has a task with outputs (removed when this summary, its clones and every
    /// [`Outputs`] read from it are dropped); `None` otherwise.
    #[must_use]
    pub fn outputs_dir(&self) -> Option<&std::path::Path> {
        self.outputs_dir.as_ref().map(|d| d.path.as_path())
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
            if let Some(reason) = &s.abandoned {
                writeln!(f, "    abandoned  : {reason}")?;
            }
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
            if s.completed == s.total && s.abandoned.is_none() {
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
            outputs_dir: None,
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
                    kind: FailureKind::Error,
                    attempt: 1,
                }],
                more_failures: 4,
                log_dir: None,
            }],
            elapsed: Duration::ZERO,
            outputs_dir: None,
        };
        let expected = "\nExecution Summary\n-----------------\n\n  Task t:\n\n    num blocks : 3\n    completed ✔: 1 (skipped 0)\n    failed    ✗: 1\n    orphaned  ∅: 1\n\n    Failed Blocks:\n\n      block 2 in worker 0 with exception boom\n      (and 4 more)\n\n";
        assert_eq!(summary.to_string(), expected);
        assert!(!summary.is_success());
    }
}
