//! [`RunDir`]: a run directory opened for reading, to ask what it holds.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::status::read_status;
use super::{JournalError, RunStatus, files};

/// A run directory ([`Runner::run_dir`](crate::Runner::run_dir)) opened for reading: what
/// its last run did ([`status`](RunDir::status)) and whether it holds earlier progress
/// ([`progress`](RunDir::progress)), for "is this a resume?" code.
///
/// Read-only: it never holds the directory's lock (it only probes it, without waiting, to
/// tell whether a run holds it) and never writes, so it can be used while a run holds the
/// directory (the counts are then those the run has written so far). After a crash, the
/// blocks of the write-ahead log's last batch count as recorded, as the next run will apply
/// them before it looks at any block.
///
/// ```
/// use blockwise::journal::RunDir;
/// use blockwise::{Progress, Roi, Runner, Task};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("blockwise-doc-rundir-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// assert!(!RunDir::exists(&dir));
/// let task = Task::builder("t", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([0], [10]))
///     .process(|_| Ok(()))
///     .build()?;
/// let summary = Runner::new().progress(Progress::Never).run_dir(&dir).run([task])?;
/// assert!(summary.is_success());
///
/// let progress = RunDir::open(&dir)?.progress()?;
/// assert!(progress.has_progress());
/// assert_eq!(progress.done(), 10);
/// let t = progress.task("t").ok_or("no task t")?;
/// assert_eq!((t.total, t.done, t.failed, t.never_run()), (10, 10, 0, 0));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Opens a run directory for reading (nothing is locked or written).
    ///
    /// # Errors
    ///
    /// [`JournalError::NotARunDir`] if `path` is not a directory with a `run.json`; an I/O
    /// error if it cannot be inspected.
    pub fn open(path: impl AsRef<Path>) -> Result<RunDir, JournalError> {
        let path = path.as_ref();
        if !path.is_dir() || !files::exists(&path.join("run.json"))? {
            return Err(JournalError::NotARunDir {
                dir: path.to_owned(),
            });
        }
        Ok(RunDir {
            path: path.to_owned(),
        })
    }

    /// Whether `path` is a run directory (a directory with a `run.json`): a run given it
    /// resumes earlier runs, if they recorded progress (see [`progress`](RunDir::progress)).
    #[must_use]
    pub fn exists(path: impl AsRef<Path>) -> bool {
        let path = path.as_ref();
        path.is_dir() && path.join("run.json").exists()
    }

    /// The run directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the directory says: how its last run ended, and every task's blocks done, failed
    /// and never run, with the errors of failed blocks (the CLI's `blockwise status`; the
    /// same as [`status`](super::status)).
    ///
    /// # Errors
    ///
    /// [`JournalError::NotARunDir`] if its `run.json` is gone; [`JournalError::Corrupt`] for
    /// damaged files; I/O errors.
    pub fn status(&self) -> Result<RunStatus, JournalError> {
        super::status(&self.path)
    }

    /// Every task's blocks done and failed, without the failure logs: does the directory
    /// hold earlier progress?
    ///
    /// # Errors
    ///
    /// As for [`status`](RunDir::status).
    pub fn progress(&self) -> Result<RunProgress, JournalError> {
        let status = read_status(&self.path, 0)?;
        Ok(RunProgress {
            tasks: status
                .tasks
                .into_iter()
                .map(|t| TaskProgress {
                    task_id: t.task_id,
                    total: t.total,
                    done: t.done,
                    failed: t.failed,
                })
                .collect(),
        })
    }

    /// The outputs of the done blocks of task `task_id` (see
    /// [`TaskBuilder::process_with_output`](crate::TaskBuilder::process_with_output)), read
    /// lazily: [`read_outputs`](super::read_outputs) on this directory.
    ///
    /// # Errors
    ///
    /// As for [`read_outputs`](super::read_outputs).
    pub fn outputs<T: serde::de::DeserializeOwned>(
        &self,
        task_id: &str,
    ) -> Result<super::Outputs<T>, JournalError> {
        super::read_outputs(&self.path, task_id)
    }
}

/// The progress a run directory holds (see [`RunDir::progress`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunProgress {
    /// Every task with done-markers, those of the last run first.
    pub tasks: Vec<TaskProgress>,
}

impl RunProgress {
    /// Blocks recorded done, over all tasks.
    #[must_use]
    pub fn done(&self) -> u64 {
        self.tasks.iter().map(|t| t.done).sum()
    }

    /// Blocks whose last attempt failed, over all tasks.
    #[must_use]
    pub fn failed(&self) -> u64 {
        self.tasks.iter().map(|t| t.failed).sum()
    }

    /// Whether any block is recorded done or failed: a run given this directory resumes
    /// (skipping the done blocks) rather than starting from nothing.
    #[must_use]
    pub fn has_progress(&self) -> bool {
        self.tasks.iter().any(|t| t.done > 0 || t.failed > 0)
    }

    /// The progress of the task `task_id`, if the directory has markers for it.
    #[must_use]
    pub fn task(&self, task_id: &str) -> Option<&TaskProgress> {
        self.tasks.iter().find(|t| t.task_id == task_id)
    }
}

/// One task's progress in a run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TaskProgress {
    /// The task's id.
    pub task_id: String,
    /// Blocks of the task.
    pub total: u64,
    /// Blocks recorded done.
    pub done: u64,
    /// Blocks whose last attempt failed.
    pub failed: u64,
}

impl TaskProgress {
    /// Blocks never run, orphaned or interrupted: `total - done - failed`.
    #[must_use]
    pub fn never_run(&self) -> u64 {
        self.total.saturating_sub(self.done + self.failed)
    }

    /// Whether every block is done.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.done == self.total
    }
}
