//! The crate's error type.
//!
//! A failed *block* is not an error: it is data in the [`RunSummary`](crate::RunSummary). An
//! [`Error`] is returned for invalid configuration (a task that cannot be tiled, duplicate ids,
//! cycles), infrastructure failures (a worker that cannot start) and I/O.

use crate::geometry::GeometryError;

/// The boxed error a user's process function may return.
pub type BlockError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong outside of a single block.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A task's configuration is invalid; the message names the offending values.
    #[error("task {task:?}: {reason}")]
    InvalidTask {
        /// The id of the task.
        task: String,
        /// What is wrong, with the offending values.
        reason: String,
    },
    /// Two different tasks share one id.
    #[error("duplicate task id {task:?}: two different tasks use it")]
    DuplicateTaskId {
        /// The id used twice.
        task: String,
    },
    /// A task names an upstream task (by id) that is not part of the run.
    #[error("task {task:?}: unknown upstream task {upstream:?}")]
    UnknownUpstream {
        /// The task that names the upstream task.
        task: String,
        /// The id that could not be found.
        upstream: String,
    },
    /// The task dependencies form a cycle.
    #[error("task dependencies form a cycle through {tasks:?}")]
    Cycle {
        /// The tasks on (or feeding) the cycle.
        tasks: Vec<String>,
    },
    /// A task was given to a runner without a process function.
    #[error(
        "task {task:?}: no process function; call `.process(..)` or `.process_per_worker(..)` on its builder"
    )]
    MissingProcess {
        /// The id of the task.
        task: String,
    },
    /// The workers of a task could not be started.
    #[error("task {task:?}: worker start-up failed {attempts} times, last error: {message}")]
    WorkerStartup {
        /// The id of the task.
        task: String,
        /// How many start attempts failed.
        attempts: u32,
        /// The last start-up error.
        message: String,
    },
    /// A block given back to a scheduler that cannot take it.
    #[error("cannot release block {block}: {reason}")]
    InvalidRelease {
        /// The block (daisy's repr).
        block: String,
        /// Why the release was refused.
        reason: String,
    },
    /// A worker process could not do its part (bad context, scheduler unreachable, refused,
    /// protocol error).
    #[error("worker: {message}")]
    Worker {
        /// What went wrong.
        message: String,
    },
    /// An executor could not start or share data (see [`crate::exec`]).
    #[error("executor: {message}")]
    Executor {
        /// What went wrong.
        message: String,
    },
    /// A launcher could not start, watch or stop a worker.
    #[error(transparent)]
    Launch(#[from] crate::launch::LaunchError),
    /// The run was interrupted by a signal (Ctrl-C, SIGTERM), or by a
    /// [`Cancel`](crate::Cancel) handle; every worker job it submitted was cancelled.
    #[error("interrupted by {signal}; every worker job of the run was cancelled")]
    Interrupted {
        /// The signal's name, or the reason given to [`Cancel::cancel`](crate::Cancel::cancel).
        signal: String,
    },
    /// The run directory (done-markers) could not be used: locked, damaged, another layout,
    /// or not writable.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// A storage error (zarr or HDF5).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A geometry error (dimension mismatch, division by zero, overflow).
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(task: &str, reason: impl Into<String>) -> Self {
        Error::InvalidTask {
            task: task.to_owned(),
            reason: reason.into(),
        }
    }
}
