//! Running tasks: [`run_blockwise`] and the [`Runner`] it uses.
//!
//! The default runner executes blocks on in-process worker threads. One driver (the calling
//! thread) owns the [`Scheduler`](crate::Scheduler); workers receive blocks and report results
//! over crossbeam channels. Each task gets `num_workers` threads, started when the task first
//! has a ready block, so chained tasks run concurrently as their blocks become ready. With a
//! resource budget ([`Runner::resources`]) workers start and retire within it instead (see
//! `threads.rs` and [`crate::fleet::budget`]).
//!
//! Failures, block outputs, timeouts and stuck threads are described on [`Runner`] (a public
//! page).
//!
//! # Worker processes
//!
//! The process runner (`processes.rs`) keeps the same driver loop around the scheduler but
//! talks to workers through a tokio TCP server (`server.rs`) with a framed protocol
//! (`protocol.rs`); workers are [`Client`]s (`client.rs`, `worker.rs`) started by a
//! [`Launcher`](crate::launch::Launcher), as [`WorkerOptions`] say. See [`Runner`] for the
//! behaviour.

mod cancel;
pub(crate) mod client;
mod drive;
mod entry;
mod failures;
mod observer;
pub(crate) mod processes;
mod threads;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::fleet::CONTEXT_ENV;
pub(crate) use crate::fleet::ProcessOptions;
use crate::fleet::WorkerOptions;
use crate::fleet::budget::{id_list, unit_list};
pub use cancel::Cancel;
pub use client::Client;
pub use entry::{serve_worker, worker_main};

use rustc_hash::FxHashSet;

use crate::error::{Error, ResourceError};
use crate::fleet::budget::Budget;
use crate::observe::{Progress, RunSummary};
use crate::task::Task;

/// Runs tasks (and every upstream task reachable from them) block by block on worker threads
/// and returns the per-task results.
///
/// Progress bars are shown (and the execution summary printed) when stdout is a terminal; use
/// [`Runner`] to choose.
///
/// ```
/// use blockwise::{Roi, Task};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// # fn main() -> Result<(), blockwise::Error> {
/// let sum = Arc::new(AtomicU64::new(0));
/// let s = Arc::clone(&sum);
/// let task = Task::builder("sum", Roi::new([0], [1000]), Roi::new([0], [100]), Roi::new([0], [100]))
///     .process(move |block| {
///         let r = block.write_roi();
///         s.fetch_add((r.begin()[0]..r.end()[0]).map(|x| x as u64).sum(), Ordering::Relaxed);
///         Ok::<(), blockwise::BlockError>(())
///     })
///     .num_workers(2)
///     .build()?;
/// let summary = blockwise::run_blockwise([task])?;
/// assert!(summary.is_success());
/// assert_eq!(sum.load(Ordering::Relaxed), 999 * 1000 / 2);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// Invalid task graphs (duplicate ids, unknown upstream ids, cycles), tasks without a process
/// function, and workers whose per-worker set-up keeps failing. Failed blocks are not errors.
pub fn run_blockwise(tasks: impl IntoIterator<Item = Task>) -> Result<RunSummary, Error> {
    Runner::new().run(tasks)
}

/// Configures and runs a set of tasks; [`run_blockwise`] is `Runner::new().run(tasks)`.
///
/// ```
/// use blockwise::{Progress, Roi, Runner, Task};
///
/// # fn main() -> Result<(), blockwise::Error> {
/// let task = Task::builder("noop", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([0], [10]))
///     .process(|_| Ok::<(), blockwise::BlockError>(()))
///     .build()?;
/// let summary = Runner::new().progress(Progress::Never).print_summary(false).run([task])?;
/// assert_eq!(summary.task("noop").map(|s| s.completed), Some(10));
/// # Ok(())
/// # }
/// ```
///
/// # Failures
///
/// A block fails when its function returns an error or panics (the panic is caught; the
/// worker goes on with the next block). It is retried up to `max_retries` times; after that it
/// fails permanently and every block downstream of it is orphaned. Failed blocks are reported
/// in the [`RunSummary`], not as an `Err`; each failed attempt is a
/// [`BlockFailure`](crate::BlockFailure) with its [`FailureKind`](crate::FailureKind) (error,
/// panic, timeout, lost worker, output too large) and its attempt number.
///
/// # Block outputs
///
/// Blocks of a task built with
/// [`TaskBuilder::process_with_output`](crate::TaskBuilder::process_with_output) return a
/// value; the runner serializes it where the block ran, checks it against
/// [`Runner::max_output_bytes`], and records it with the block's done-marker (see
/// [`crate::journal`]); [`RunSummary::outputs`] reads them back.
///
/// # Timeouts and stuck threads
///
/// With [`TaskBuilder::timeout`](crate::TaskBuilder::timeout), a block that runs longer than
/// the limit is failed (and retried). On worker threads, a fresh worker thread is started in
/// its place; Rust cannot kill a thread, so the stuck thread is abandoned, keeps running until
/// the user's function returns (holding whatever it holds, possibly still writing the block's
/// output), and then exits without reporting; its result is discarded. The run does not wait
/// for abandoned threads. On worker processes, the process running the late block is killed
/// and replaced. If a block can hang for ever or must be stopped hard, run it in a worker
/// process.
///
/// # Worker processes
///
/// [`Runner::processes`] (this machine) or [`Runner::workers`] with a [`WorkerOptions`] (its
/// launcher, e.g. a cluster, see [`crate::launch`]; its log directory, heartbeats, ...) run
/// blocks in worker processes instead of threads. The runner's thread
/// keeps the scheduler and serves TCP; each worker connects back, presents the run's random
/// token, and pulls blocks:
///
/// * **Re-execution.** By default a worker re-executes the current program with the same
///   arguments and a `BLOCKWISE_CONTEXT` environment variable (JSON: scheduler address, token,
///   task id, worker id, log directory, heartbeat, death timeout, lifetime). Call
///   [`worker_main`](crate::worker_main) first in `main`, with the function that builds the
///   program's tasks: in a worker it builds them, serves the worker's task and exits, so none
///   of the driver's code (generating data, creating outputs, other runs) runs again in the
///   workers. Without it (fine for a program with one `run` call and no side effects before
///   it), the program's own call to [`Runner::run`] (or [`run_blockwise`]) recognises the
///   context, serves blocks of that task and then **exits the process**; calls whose tasks do
///   not include the worker's task return an empty summary and say so in the worker's log.
///   Another program can be a worker with [`Client::from_env`] and an acquire/release loop
///   ([`WorkerOptions::worker_command`] names it).
/// * **Logs.** Each worker's stdout and stderr go to `<log dir>/<task>/worker_<id>.out/.err`
///   (default log dir `./blockwise_logs`); `<log dir>/jobs.txt` lists every job submitted.
/// * **Flow.** A worker holds a few blocks at a time (enough for about 2 ms of work, at most
///   [`Runner::prefetch`]); slow blocks are handed out one per worker, so all workers share
///   them.
/// * **Outputs.** A block's output (see
///   [`TaskBuilder::process_with_output`](crate::TaskBuilder::process_with_output)) is
///   serialized in the worker, checked against [`Runner::max_output_bytes`] there, and sent in
///   the block's release message; the scheduler records it.
/// * **Failures.** A block's error or panic fails it with its message (retried up to
///   `max_retries`). A worker that dies, hangs (no heartbeat within the heartbeat timeout) or
///   disconnects has the block it was running failed (an attempt) and the blocks it had not
///   started handed to others; its job is cancelled and a replacement started.
///   [`TaskBuilder::timeout`](crate::TaskBuilder::timeout) kills the worker process running a
///   late block. Workers that fail before completing a block (crash at start-up, cannot
///   connect, per-worker set-up error) are replaced at most [`Runner::max_worker_restarts`]
///   times in a row, then the run fails with [`Error::WorkerStartup`] carrying the worker's
///   stderr. A worker that loses its scheduler exits after
///   [`WorkerOptions::death_timeout`]; one that reaches [`WorkerOptions::worker_lifetime`]
///   finishes its block, gives back the rest and is replaced.
/// * **Cleanup.** When the run ends, fails, or is interrupted by Ctrl-C or SIGTERM
///   ([`Error::Interrupted`]), every job it submitted is cancelled.
///
/// ```no_run
/// use blockwise::launch::{Batch, Resources};
/// use blockwise::{Roi, Runner, Task, WorkerOptions};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), blockwise::Error> {
/// let task = Task::builder("predict", Roi::new([0, 0, 0], [1024, 1024, 1024]),
///         Roi::new([0, 0, 0], [128, 128, 128]), Roi::new([0, 0, 0], [128, 128, 128]))
///     .process(|_block| { /* read, compute, write */ Ok::<(), blockwise::BlockError>(()) })
///     .num_workers(16)
///     .build()?;
/// let mut resources = Resources::default();
/// resources.cores = Some(4);
/// resources.memory = Some(16 << 30);
/// resources.walltime = Some(Duration::from_secs(4 * 3600));
/// resources.queue = Some("gpu".into());
/// let workers = WorkerOptions::launcher(Batch::slurm().resources(resources))
///     .worker_lifetime(Duration::from_secs(3 * 3600 + 1800))
///     .log_dir("/shared/logs/predict");
/// let summary = Runner::new().workers(workers).run([task])?;
/// print!("{summary}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Runner {
    progress: Progress,
    print_summary: Option<bool>,
    max_worker_restarts: u32,
    prefetch: usize,
    /// Worker processes (`None`: threads).
    processes: Option<WorkerOptions>,
    run_dir: Option<PathBuf>,
    fresh: bool,
    /// Whether a run of this runner (or of a clone) already started fresh.
    fresh_used: Arc<std::sync::atomic::AtomicBool>,
    max_output: usize,
    cancel: Option<Cancel>,
    observer: Option<observer::Observer>,
    /// The run's resource budget: units per resource (`Runner::resources`).
    resources: Vec<(String, u64)>,
    /// Named units per resource (`Runner::devices`).
    devices: Vec<(String, Vec<String>)>,
}

/// The default of [`Runner::max_output_bytes`]: 1 MiB.
pub(crate) const DEFAULT_MAX_OUTPUT: usize = 1 << 20;
/// The largest [`Runner::max_output_bytes`] accepted: 1 GiB.
pub(crate) const MAX_OUTPUT_LIMIT: usize = 1 << 30;

/// The message of a block whose output is over the cap.
pub(crate) fn output_too_large(block: &crate::Block, len: usize, cap: usize) -> String {
    format!(
        "the output of block {block} is {len} bytes, more than the limit of {cap} bytes; raise it with Runner::max_output_bytes, or write large results to storage and return a reference"
    )
}

impl Default for Runner {
    fn default() -> Self {
        Runner::new()
    }
}

impl Runner {
    /// A runner with the defaults: progress bars and summary when stdout is a terminal.
    pub fn new() -> Runner {
        Runner {
            progress: Progress::Auto,
            print_summary: None,
            max_worker_restarts: 3,
            prefetch: 32,
            processes: None,
            run_dir: None,
            fresh: false,
            fresh_used: Arc::default(),
            max_output: DEFAULT_MAX_OUTPUT,
            cancel: None,
            observer: None,
            resources: Vec::new(),
            devices: Vec::new(),
        }
    }

    /// Stops runs of this runner when `cancel` is cancelled (see [`Cancel`]): they return
    /// [`Error::Interrupted`] with its reason.
    pub fn cancel_with(mut self, cancel: &Cancel) -> Self {
        self.cancel = Some(cancel.clone());
        self
    }

    /// Calls `f` with every task's counters (the run's tasks, upstream ones included, in the
    /// scheduler's order) while the run goes: at most once per `every` (at least 1 ms), only
    /// when a counter changed since the last call, and once more when the run ends. It runs on
    /// the driver's thread, between hand-outs, so keep it short (write a line, update a
    /// display); for progress bars see [`Runner::progress`].
    ///
    /// ```
    /// use blockwise::{Progress, Roi, Runner, Task};
    /// use std::sync::{Arc, Mutex};
    ///
    /// # fn main() -> Result<(), blockwise::Error> {
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = Arc::clone(&seen);
    /// let task = Task::builder("t", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///     .process(|_| Ok(()))
    ///     .build()?;
    /// let summary = Runner::new()
    ///     .progress(Progress::Never)
    ///     .on_progress(std::time::Duration::from_millis(10), move |tasks| {
    ///         let (id, state) = tasks[0];
    ///         s.lock().unwrap().push((id.to_owned(), state.completed));
    ///     })
    ///     .run([task])?;
    /// assert!(summary.is_success());
    /// // The last call saw the finished run.
    /// assert_eq!(seen.lock().unwrap().last(), Some(&("t".to_owned(), 10)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_progress<F>(mut self, every: Duration, f: F) -> Self
    where
        F: Fn(&[(&str, &crate::TaskState)]) + Send + Sync + 'static,
    {
        self.observer = Some(observer::Observer {
            every: every.max(Duration::from_millis(1)),
            f: Arc::new(f),
        });
        self
    }

    /// The reason the run was cancelled, if it was.
    pub(crate) fn cancelled(&self) -> Option<String> {
        self.cancel.as_ref().and_then(Cancel::reason)
    }

    /// The largest block output (see
    /// [`TaskBuilder::process_with_output`](crate::TaskBuilder::process_with_output)) in bytes
    /// of compact JSON (default 1 MiB, at most 1 GiB: larger values count as 1 GiB). A block
    /// whose output is larger fails (kind
    /// [`FailureKind::OutputTooLarge`](crate::FailureKind::OutputTooLarge), retried like any
    /// failure) with a message naming the block, the size and the limit. The limit is checked
    /// where the block ran, so an oversized output never travels; the messages between worker
    /// processes and the scheduler admit outputs up to it.
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output = bytes.min(MAX_OUTPUT_LIMIT);
        self
    }

    /// Records done-markers in `dir`, and resumes from them: blocks an earlier run with this
    /// directory finished are skipped (counted as skipped, without calling the process or
    /// check function). The directory is created if needed and held (locked) by the run. See
    /// [`crate::journal`] for what is stored and the guarantees.
    ///
    /// A run whose tasks have a different block layout than the recorded one fails with
    /// [`JournalError::LayoutMismatch`](crate::journal::JournalError::LayoutMismatch) unless
    /// [`fresh`](Runner::fresh) is set.
    ///
    /// ```
    /// use blockwise::{Progress, Roi, Runner, Task};
    ///
    /// # fn main() -> Result<(), blockwise::Error> {
    /// let dir = std::env::temp_dir().join(format!("blockwise-doc-run-dir-{}", std::process::id()));
    /// let task = || {
    ///     Task::builder("t", Roi::new([0], [1000]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///         .process(|_| Ok::<(), blockwise::BlockError>(()))
    ///         .build()
    /// };
    /// let runner = Runner::new().progress(Progress::Never).run_dir(&dir);
    /// let first = runner.run([task()?])?;
    /// assert_eq!(first.task("t").map(|s| (s.completed, s.skipped)), Some((100, 0)));
    /// let again = runner.run([task()?])?; // nothing left to do
    /// assert_eq!(again.task("t").map(|s| (s.completed, s.skipped)), Some((100, 100)));
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok(())
    /// # }
    /// ```
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// With a [`run_dir`](Runner::run_dir): start over (default false). The first run of this
    /// runner (or of one of its clones) discards every record of the run directory — the
    /// done-markers and block outputs of all its tasks, not only of the tasks of that run — and
    /// later runs of the same runner resume what it recorded. So a program that runs several
    /// steps with one runner starts over as a whole, and a rerun after it was killed part way
    /// never finds a later step's records from before the fresh start (which would skip
    /// blocks whose inputs were redone).
    pub fn fresh(mut self, fresh: bool) -> Self {
        self.fresh = fresh;
        self.fresh_used = Arc::default();
        self
    }

    /// Whether to show one progress bar per task.
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Whether to print the execution summary to stdout at the end (default: when progress
    /// bars are shown).
    pub fn print_summary(mut self, print: bool) -> Self {
        self.print_summary = Some(print);
        self
    }

    /// How often a worker that fails before completing a block (its per-worker set-up fails;
    /// for processes also: it crashes, exits or cannot connect) is replaced before the run stops
    /// with [`Error::WorkerStartup`], carrying the last error (for processes, the tail of the
    /// worker's stderr). The count is per task and resets whenever a worker of the task
    /// completes a block (default 3).
    pub fn max_worker_restarts(mut self, n: u32) -> Self {
        self.max_worker_restarts = n;
        self
    }

    /// How many blocks per worker may wait in a task's queue (default 32); larger values cut
    /// hand-off overhead for tiny blocks. Queued blocks count as processing.
    pub fn prefetch(mut self, blocks_per_worker: usize) -> Self {
        self.prefetch = blocks_per_worker.max(1);
        self
    }

    /// The run's resource budget: `(resource, units)` pairs, any names, integer units. The live
    /// workers of all tasks together never hold more units of a resource than this; what one
    /// worker needs is its task's [`TaskBuilder::requires`](crate::TaskBuilder::requires). A
    /// later call replaces the earlier list. Without a budget (the default, or an empty list
    /// and no [`devices`](Runner::devices)), requirements are ignored and every task runs on
    /// its `num_workers` workers.
    ///
    /// * **Devices.** The units of the resource `"gpu"` are device ids `"0"` to `"n-1"` (or the
    ///   ids given with [`devices`](Runner::devices)). Each worker gets its own ids
    ///   ([`WorkerContext::devices`](crate::WorkerContext::devices); for worker processes also
    ///   `CUDA_VISIBLE_DEVICES`, set to an empty list for workers that need no GPU) and holds
    ///   them until it exits; no two live workers hold the same id, and ids given back are
    ///   handed out again lowest first.
    /// * **Checked first.** A task one of whose workers needs more units than the budget has,
    ///   or a resource the budget does not have (most likely a typo, e.g. `"gpus"`), makes
    ///   [`run`](Runner::run) fail with [`Error::Resources`] before any block runs; so does an
    ///   invalid budget (an empty or repeated name, a number of units that differs from the
    ///   number of ids, a repeated id). A task that needs nothing is not limited by the budget.
    /// * **Sharing.** Workers start for tasks that have blocks to do, upstream tasks first (the
    ///   scheduler's task order): a task gets up to `num_workers` workers as units allow, all
    ///   of a worker's units or none. When a task has no ready block for an idle worker and
    ///   another task waits for units that worker holds, the idle worker retires (after its
    ///   current block; no block is abandoned) and its units start the waiting task's
    ///   workers; a task's workers start again when it gets blocks again. So a chained task's
    ///   workers grow as its upstream task drains. A worker that dies (its per-worker set-up
    ///   fails or panics) gives its units back; a worker thread abandoned by a
    ///   [timeout](crate::TaskBuilder::timeout) gives them back at once (its thread may still
    ///   be running, see [timeouts](Runner#timeouts-and-stuck-threads)).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use blockwise::{Block, Progress, Roi, Runner, Task, WorkerContext};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A GPU task and a CPU task downstream of it, on one 2-GPU, 4-core allocation.
    /// let gpu_workers = Arc::new(AtomicUsize::new(0));
    /// let g = Arc::clone(&gpu_workers);
    /// let predict = Task::builder("predict", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///     .requires([("gpu", 1), ("cpu", 1)])
    ///     .num_workers(4)
    ///     .process_per_worker(move |worker: &WorkerContext| {
    ///         assert_eq!(worker.devices().len(), 1); // its own GPU
    ///         g.fetch_add(1, Ordering::SeqCst);
    ///         Ok(|_: &Block| Ok(()))
    ///     })
    ///     .build()?;
    /// let extract = Task::builder("extract", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///     .requires([("cpu", 2)])
    ///     .num_workers(2)
    ///     .upstream(&predict)
    ///     .process(|_| Ok(()))
    ///     .build()?;
    /// let runner = Runner::new().progress(Progress::Never).resources([("gpu", 2), ("cpu", 4)]);
    /// assert!(runner.run([extract])?.is_success());
    /// assert!(gpu_workers.load(Ordering::SeqCst) >= 1);
    ///
    /// // A requirement the budget can never meet fails before any block runs.
    /// let greedy = Task::builder("greedy", Roi::new([0], [10]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///     .requires([("gpu", 4)])
    ///     .process(|_| Ok(()))
    ///     .build()?;
    /// let err = runner.run([greedy]).unwrap_err();
    /// assert!(err.to_string().contains("needs 4 units of resource \"gpu\""), "{err}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn resources(mut self, units: impl IntoIterator<Item = (impl Into<String>, u64)>) -> Self {
        self.resources = unit_list(units);
        self
    }

    /// Names the units of a resource of the budget: `ids` are its device ids, handed out to
    /// workers lowest first (in the order given), and the resource has as many units as ids
    /// (a count given with [`resources`](Runner::resources) must match). For `"gpu"`, e.g.
    /// `devices("gpu", ["2", "3"])` on a node whose GPUs 0 and 1 belong to someone else.
    /// Repeatable for different resources; ids must be non-empty, distinct and free of commas.
    ///
    /// ```
    /// use blockwise::{Block, Progress, Roi, Runner, Task, WorkerContext};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let task = Task::builder("predict", Roi::new([0], [40]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///     .requires([("gpu", 2)])
    ///     .process_per_worker(|worker: &WorkerContext| {
    ///         assert_eq!(worker.devices(), ["2", "3"]);
    ///         Ok(|_: &Block| Ok(()))
    ///     })
    ///     .build()?;
    /// let summary = Runner::new().progress(Progress::Never).devices("gpu", ["2", "3"]).run([task])?;
    /// assert!(summary.is_success());
    /// # Ok(())
    /// # }
    /// ```
    pub fn devices(
        mut self,
        resource: impl Into<String>,
        ids: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.devices.push(id_list(resource, ids));
        self
    }

    /// This runner with `units` of resource `"cpu"` added to its budget, unless the budget
    /// already has some (given with [`resources`](Runner::resources) or
    /// [`devices`](Runner::devices)): how a job of many tasks whose workers each need one
    /// `"cpu"` (a [`Pyramid`](crate::ops::Pyramid)'s levels) caps its workers in total.
    #[cfg_attr(not(feature = "zarr"), allow(dead_code))]
    pub(crate) fn with_cpu_budget(&self, units: u64) -> Runner {
        let has_cpu = self.resources.iter().any(|(name, _)| name == "cpu")
            || self.devices.iter().any(|(name, _)| name == "cpu");
        let mut runner = self.clone();
        if !has_cpu {
            runner.resources.push(("cpu".to_owned(), units));
        }
        runner
    }

    /// The run's budget, checked against every task (and upstream task) of `tasks`.
    pub(crate) fn budget(&self, tasks: &[Task]) -> Result<Budget, ResourceError> {
        let budget = Budget::new(&self.resources, &self.devices)?;
        if budget.is_empty() {
            return Ok(budget);
        }
        let mut seen: FxHashSet<*const crate::task::TaskInner> = FxHashSet::default();
        let mut stack: Vec<&Task> = tasks.iter().collect();
        while let Some(task) = stack.pop() {
            if !seen.insert(Arc::as_ptr(&task.inner)) {
                continue;
            }
            budget.check(task.task_id(), &task.inner.requirement)?;
            stack.extend(task.upstream_tasks());
        }
        Ok(budget)
    }

    /// Runs blocks in worker processes on this machine with the default
    /// [`WorkerOptions`]: `Runner::new().processes()` is
    /// `Runner::new().workers(WorkerOptions::new())`. On a runner that has worker options
    /// already (from [`workers`](Runner::workers)) it keeps them. Each worker connects back to the scheduler over loopback TCP; by default every
    /// worker re-executes the current program with its arguments (see
    /// [`WorkerOptions::worker_command`]); there, the program's own call to `run` finds the
    /// `BLOCKWISE_CONTEXT` variable and serves blocks instead of scheduling (see [worker
    /// processes](Runner#worker-processes)).
    pub fn processes(mut self) -> Self {
        self.processes.get_or_insert_with(WorkerOptions::new);
        self
    }

    /// Runs blocks in worker processes as `options` says: started by its launcher (this
    /// machine, or a cluster's batch system, see [`crate::launch`]), with its log directory,
    /// command, address, TLS, heartbeats and time-outs. Only this and
    /// [`processes`](Runner::processes) choose worker processes; without them a runner runs
    /// blocks on threads.
    ///
    /// ```
    /// use blockwise::launch::Batch;
    /// use blockwise::{Runner, WorkerOptions};
    /// use std::time::Duration;
    ///
    /// let runner = Runner::new()
    ///     .workers(
    ///         WorkerOptions::launcher(Batch::slurm())
    ///             .log_dir("/shared/logs")
    ///             .idle_timeout(Duration::from_secs(120)),
    ///     )
    ///     .max_worker_restarts(5);
    /// # let _ = runner;
    /// ```
    pub fn workers(mut self, options: WorkerOptions) -> Self {
        self.processes = Some(options);
        self
    }

    /// Runs the tasks (and every upstream task reachable from them).
    ///
    /// # Errors
    ///
    /// See [`run_blockwise`].
    pub fn run(&self, tasks: impl IntoIterator<Item = Task>) -> Result<RunSummary, Error> {
        let tasks: Vec<Task> = tasks.into_iter().collect();
        if let Some(ctx) = crate::fleet::context::Context::from_env()? {
            return serve_as_worker(&tasks, ctx);
        }
        let budget = self.budget(&tasks)?;
        let show = self.progress.enabled();
        let summary = match &self.processes {
            Some(workers) => processes::run(&tasks, self, &workers.process, budget, show)?,
            None => threads::run(&tasks, self, budget, show)?,
        };
        if self.print_summary.unwrap_or(show) {
            print!("{summary}");
        }
        Ok(summary)
    }
}

/// Whether this process is a worker started by a process runner (it has `BLOCKWISE_CONTEXT`).
///
/// A program that runs its own blocks in worker processes is re-executed for every worker.
/// Prefer [`worker_main`](crate::worker_main), which keeps workers out of the driver's code
/// altogether; without it, one-time set-up that must not be repeated (creating or overwriting
/// output arrays, writing sample data) belongs behind `if !blockwise::is_worker()`.
#[must_use]
pub fn is_worker() -> bool {
    std::env::var_os(CONTEXT_ENV).is_some()
}

/// Worker mode: serve the context's task, then exit the process (code 0, or 1 with the error
/// on stderr). Calls whose tasks do not include the context's task return an empty summary,
/// and say so in the worker's log.
fn serve_as_worker(
    tasks: &[Task],
    ctx: crate::fleet::context::Context,
) -> Result<RunSummary, Error> {
    let Some(task) = worker::find_task(tasks, &ctx)? else {
        // Worker mode's stderr is the worker's log: if the program never reaches a run with
        // its task, this line ends up in the start-up error the scheduler reports.
        tracing::warn!(worker = ctx.worker_id, task = %ctx.task_id, "a run without the worker's task was skipped");
        eprintln!(
            "blockwise worker {}: a run without task {:?} (its tasks: {}) was skipped; the worker serves the first run that has it (call blockwise::worker_main first in main to skip the driver's code)",
            ctx.worker_id,
            ctx.task_id,
            entry::task_list(tasks)
        );
        return Ok(RunSummary {
            tasks: Vec::new(),
            elapsed: Duration::ZERO,
            outputs_dir: None,
        });
    };
    serve_and_exit(&task, ctx)
}

/// Serves `task` as the worker of `ctx`, then exits the process.
fn serve_and_exit(task: &Task, ctx: crate::fleet::context::Context) -> ! {
    let worker_id = ctx.worker_id;
    match worker::serve(task, ctx) {
        Ok(n) => {
            tracing::info!(task = %task.task_id(), worker = worker_id, blocks = n, "worker done");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!(
                "blockwise worker {worker_id} of task {:?}: {e}",
                task.task_id()
            );
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_budget_is_added_only_to_a_budget_without_cpu() {
        let none = Runner::new().with_cpu_budget(3);
        assert_eq!(none.resources, [("cpu".to_owned(), 3)]);
        let gpu = Runner::new().resources([("gpu", 2)]).with_cpu_budget(3);
        assert_eq!(
            gpu.resources,
            [("gpu".to_owned(), 2), ("cpu".to_owned(), 3)]
        );
        let cpu = Runner::new().resources([("cpu", 8)]).with_cpu_budget(3);
        assert_eq!(cpu.resources, [("cpu".to_owned(), 8)]);
        let named = Runner::new().devices("cpu", ["0", "1"]).with_cpu_budget(3);
        assert!(named.resources.is_empty());
    }
}
