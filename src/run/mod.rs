//! Running tasks: [`run_blockwise`] and the [`Runner`] it uses.
//!
//! The default runner executes blocks on in-process worker threads. One driver (the calling
//! thread) owns the [`Scheduler`](crate::Scheduler); workers receive blocks and report results
//! over crossbeam channels. Each task gets `num_workers` threads, started when the task first
//! has a ready block, so chained tasks run concurrently as their blocks become ready.
//!
//! # Failures
//!
//! A block fails when its function returns an error or panics (the panic is caught; the
//! worker goes on with the next block). It is retried up to `max_retries` times; after that it
//! fails permanently and every block downstream of it is orphaned. Failed blocks are reported in
//! the [`RunSummary`], not as an `Err`.
//!
//! # Timeouts and stuck threads
//!
//! With [`TaskBuilder::timeout`](crate::TaskBuilder::timeout), a block that runs longer than the
//! limit is failed (and retried, on a fresh worker thread started in its place). Rust cannot
//! kill a thread: the stuck thread is abandoned, keeps running until the user's function returns
//! (holding whatever it holds, possibly still writing the block's output), and then exits
//! without reporting; its result is discarded. The run does not wait for abandoned threads. If a
//! block can hang for ever or must be stopped hard, run it in a worker process instead.

mod threads;

use std::io::IsTerminal;

use crate::error::Error;
use crate::observe::RunSummary;
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

/// Whether to show progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Show them when stdout is a terminal.
    #[default]
    Auto,
    /// Always show them.
    Always,
    /// Never show them.
    Never,
}

impl Progress {
    fn enabled(self) -> bool {
        match self {
            Progress::Auto => std::io::stdout().is_terminal(),
            Progress::Always => true,
            Progress::Never => false,
        }
    }
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
#[derive(Debug, Clone)]
#[must_use]
pub struct Runner {
    progress: Progress,
    print_summary: Option<bool>,
    max_worker_restarts: u32,
    prefetch: usize,
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
        }
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

    /// How often a worker whose per-worker set-up failed is restarted before the run stops
    /// with [`Error::WorkerStartup`] (default 3).
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

    /// Runs the tasks (and every upstream task reachable from them).
    ///
    /// # Errors
    ///
    /// See [`run_blockwise`].
    pub fn run(&self, tasks: impl IntoIterator<Item = Task>) -> Result<RunSummary, Error> {
        let tasks: Vec<Task> = tasks.into_iter().collect();
        let show = self.progress.enabled();
        let summary = threads::run(&tasks, self, show)?;
        if self.print_summary.unwrap_or(show) {
            print!("{summary}");
        }
        Ok(summary)
    }
}
