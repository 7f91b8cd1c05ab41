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
    /// A worker process, or the scheduler's end of its connection, could not do its part (a
    /// bad context, the scheduler unreachable, refused, a protocol error, a lost connection);
    /// [`WorkerError::kind`] says which.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// An executor could not start or share data (see [`crate::exec`]).
    #[error(transparent)]
    Executor(#[from] crate::exec::ExecutorError),
    /// An executor's item failed (see [`Executor::map`](crate::exec::Executor::map)); so `?`
    /// works on executor results in functions that return [`Error`].
    #[error(transparent)]
    Item(#[from] crate::exec::ItemError),
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

/// A worker process, or the scheduler's end of its connection, could not do its part.
///
/// [`kind`](WorkerError::kind) says what failed, for programs that react to it (retry when the
/// scheduler was unreachable, give up when it refused); [`message`](WorkerError::message) says
/// it for people, naming the address, the timeout or the message at fault. It displays as
/// `worker: <message>`.
///
/// ```
/// use blockwise::{Client, Error, WorkerErrorKind};
///
/// // Not started by a process runner: there is no worker context.
/// # if std::env::var_os(blockwise::CONTEXT_ENV).is_none() {
/// match Client::from_env() {
///     Err(Error::Worker(e)) => {
///         assert_eq!(e.kind(), WorkerErrorKind::BadContext);
///         assert!(e.to_string().starts_with("worker: BLOCKWISE_CONTEXT is not set"));
///     }
///     other => panic!("{other:?}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("worker: {message}")]
pub struct WorkerError {
    kind: WorkerErrorKind,
    message: String,
}

impl WorkerError {
    pub(crate) fn new(kind: WorkerErrorKind, message: impl Into<String>) -> WorkerError {
        WorkerError {
            kind,
            message: message.into(),
        }
    }

    /// What failed.
    #[must_use]
    pub fn kind(&self) -> WorkerErrorKind {
        self.kind
    }

    /// What went wrong, without the `worker: ` prefix of its display.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What failed, in a [`WorkerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerErrorKind {
    /// The worker context (`BLOCKWISE_CONTEXT`) is missing, not UTF-8, too long or malformed:
    /// the process was not started as a worker, or its environment was damaged.
    BadContext,
    /// The worker's program does not build the task its context names.
    UnknownTask,
    /// The tasks the worker's program built are invalid.
    InvalidTasks,
    /// The task's per-worker set-up failed in the worker, or the task has no process function
    /// in the worker's program.
    Setup,
    /// The scheduler could not be reached within the worker's death timeout.
    Unreachable,
    /// The scheduler refused the worker (a wrong token, or another protocol version).
    Refused,
    /// TLS: a handshake failed, the scheduler's certificate did not match the pinned one, or
    /// the run's certificate could not be made.
    Tls,
    /// A message that the protocol does not allow at that point, or that cannot be encoded.
    Protocol,
    /// The connection failed, or the other end closed it.
    ConnectionLost,
    /// The scheduler was silent for the worker's death timeout.
    Silent,
    /// The scheduler's address: the host workers should connect to does not resolve (see
    /// [`WorkerOptions::advertise_host`](crate::WorkerOptions::advertise_host)).
    Address,
    /// The scheduler's server stopped while the run went on.
    ServerStopped,
    /// A block released or handed off through a [`Client`](crate::Client) that did not
    /// acquire it (or released it already).
    NotAcquired,
    /// A thread of the worker or the scheduler could not be started, or panicked outside a
    /// block.
    Thread,
    /// The handlers of Ctrl-C and SIGTERM could not be installed.
    Signals,
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
    /// A [`WorkerError`] of `kind`.
    pub(crate) fn worker(kind: WorkerErrorKind, message: impl Into<String>) -> Self {
        Error::Worker(WorkerError::new(kind, message))
    }

    pub(crate) fn invalid(task: &str, reason: impl Into<String>) -> Self {
        Error::InvalidTask {
            task: task.to_owned(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! The kinds of worker errors, from the sites that make them.

    use std::io::Write;
    use std::net::TcpListener;

    use super::*;
    use crate::fleet::context::Context;
    use crate::fleet::protocol::{ServerMsg, WorkerMsg, read_frame, to_frame};
    use crate::run::Client;

    fn ctx(addr: String, death_ms: u64) -> Context {
        Context::for_test(addr, death_ms)
    }

    fn kind(e: &Error) -> WorkerErrorKind {
        match e {
            Error::Worker(w) => w.kind(),
            other => panic!("not a worker error: {other}"),
        }
    }

    /// A scheduler that welcomes (or refuses) one worker, then sends `then`.
    fn scheduler(first: ServerMsg, then: Option<ServerMsg>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let _hello: WorkerMsg = read_frame(&mut s, &mut buf).unwrap().unwrap();
            s.write_all(&to_frame(&first).unwrap()).unwrap();
            if let Some(msg) = then {
                s.write_all(&to_frame(&msg).unwrap()).unwrap();
            }
            // Hold the connection until the worker leaves.
            while let Ok(Some(_)) = read_frame::<WorkerMsg, _>(&mut s, &mut buf) {}
        });
        addr
    }

    #[test]
    fn a_bad_context_is_bad_context_and_keeps_its_text() {
        let e = Context::decode("{not json").unwrap_err();
        assert_eq!(kind(&e), WorkerErrorKind::BadContext);
        assert!(
            e.to_string()
                .starts_with("worker: BLOCKWISE_CONTEXT is not a valid worker context ("),
            "{e}"
        );
        let Error::Worker(w) = &e else { unreachable!() };
        assert_eq!(format!("worker: {}", w.message()), e.to_string());
    }

    #[test]
    fn an_unreachable_scheduler_is_unreachable() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = Client::connect(ctx(addr.to_string(), 100)).unwrap_err();
        assert_eq!(kind(&e), WorkerErrorKind::Unreachable);
        assert!(
            e.to_string().contains("could not reach the scheduler"),
            "{e}"
        );
    }

    #[test]
    fn a_refusal_is_refused() {
        let addr = scheduler(
            ServerMsg::Refused {
                reason: "wrong token".into(),
            },
            None,
        );
        let e = Client::connect(ctx(addr, 20_000)).unwrap_err();
        assert_eq!(kind(&e), WorkerErrorKind::Refused);
        assert!(
            e.to_string().contains("refused this worker: wrong token"),
            "{e}"
        );
    }

    #[test]
    fn an_unexpected_message_is_a_protocol_error() {
        let addr = scheduler(ServerMsg::Ping, None);
        let e = Client::connect(ctx(addr, 20_000)).unwrap_err();
        assert_eq!(kind(&e), WorkerErrorKind::Protocol);
        assert!(
            e.to_string().contains("protocol error: expected a welcome"),
            "{e}"
        );
    }

    #[test]
    fn a_silent_scheduler_is_silent() {
        let addr = scheduler(ServerMsg::Welcome { connection: 0 }, None);
        let mut client = Client::connect(ctx(addr, 200)).unwrap();
        let e = client.acquire_block().unwrap_err();
        assert_eq!(kind(&e), WorkerErrorKind::Silent);
    }

    #[test]
    fn executor_and_item_errors_convert_and_keep_their_text() {
        let e: Error = crate::exec::ExecutorError::DuplicateFunction { name: "inc".into() }.into();
        assert_eq!(
            e.to_string(),
            "executor: two functions are registered under the name \"inc\""
        );
        let item = crate::exec::ItemError::Failed {
            index: 3,
            message: "boom".into(),
        };
        let e: Error = item.clone().into();
        assert_eq!(e.to_string(), item.to_string());
        assert!(matches!(e, Error::Item(i) if i == item));
    }
}
