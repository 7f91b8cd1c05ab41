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
    /// The run's resource budget is invalid, or a task's requirement cannot be met by it (see
    /// [`Runner::resources`](crate::Runner::resources)); returned by `Runner::run` before any
    /// block runs.
    #[error(transparent)]
    Resources(#[from] ResourceError),
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

/// What is wrong with a run's resource budget ([`Runner::resources`](crate::Runner::resources),
/// [`Runner::devices`](crate::Runner::devices)) or with a task's requirement
/// ([`TaskBuilder::requires`](crate::TaskBuilder::requires)) against it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// A resource of the budget has an empty name.
    #[error("resource budget: a resource has an empty name")]
    EmptyName,
    /// A resource is named twice in the budget (twice in `Runner::resources`, or twice in
    /// `Runner::devices`).
    #[error("resource budget: resource {resource:?} is given twice")]
    DuplicateResource {
        /// The resource.
        resource: String,
    },
    /// `Runner::resources` gives a resource a number of units that differs from the number of
    /// ids `Runner::devices` gives it.
    #[error(
        "resource budget: resource {resource:?} has {total} units in Runner::resources but {ids} device ids in Runner::devices; give the same number (or only the ids)"
    )]
    DeviceCount {
        /// The resource.
        resource: String,
        /// Its units in `Runner::resources`.
        total: u64,
        /// The number of ids in `Runner::devices`.
        ids: usize,
    },
    /// A device id is given twice for one resource.
    #[error("resource budget: resource {resource:?}: device id {id:?} is given twice")]
    DuplicateDevice {
        /// The resource.
        resource: String,
        /// The id given twice.
        id: String,
    },
    /// A device id is empty or contains a comma (ids are joined with commas in
    /// `CUDA_VISIBLE_DEVICES`).
    #[error(
        "resource budget: resource {resource:?}: device id {id:?} is empty or contains a comma"
    )]
    InvalidDevice {
        /// The resource.
        resource: String,
        /// The offending id.
        id: String,
    },
    /// The `gpu` resource was given more units than it may have without an id list (its
    /// default ids `"0"`.. are made up, one per unit).
    #[error(
        "resource budget: resource {resource:?} has {total} units, more than the {max} it may have without device ids; give its ids with Runner::devices"
    )]
    TooManyDevices {
        /// The resource.
        resource: String,
        /// The units given.
        total: u64,
        /// The most allowed without ids.
        max: u64,
    },
    /// One worker of a task needs more units of a resource than the whole budget has, so no
    /// worker of it could ever start.
    #[error(
        "task {task:?} needs {need} units of resource {resource:?} per worker, but the run's budget has only {have}; no worker of it could ever start"
    )]
    Exceeds {
        /// The task.
        task: String,
        /// The resource.
        resource: String,
        /// The units one worker needs.
        need: u64,
        /// The units the budget has.
        have: u64,
    },
    /// A task needs a resource the run's budget does not have (most likely a typo).
    #[error(
        "task {task:?} needs {need} units of resource {resource:?} per worker, which the run's budget does not have (it has: {})",
        .budget.join(", ")
    )]
    UnknownResource {
        /// The task.
        task: String,
        /// The resource.
        resource: String,
        /// The units one worker needs.
        need: u64,
        /// The resources the budget has, by name.
        budget: Vec<String>,
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
