//! Tasks: a total ROI tiled with blocks, a function to process each block, and options.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::blocks::{Block, BlockGrid, Fit};
use crate::error::{BlockError, Error};
use crate::fleet::budget::Requirement;
use crate::fleet::budget::unit_list;
use crate::geometry::Roi;
use crate::store::ChunkGrid;

/// What a worker knows about itself; passed to the per-worker set-up of
/// [`TaskBuilder::process_per_worker`].
///
/// More fields may be added (it is `#[non_exhaustive]`); read [`devices`](Self::devices) for
/// the device ids the worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerContext {
    /// The task the worker serves.
    pub task_id: String,
    /// The worker's id, unique within the run.
    pub worker_id: u64,
    /// The worker's `gpu` ids (see [`devices`](Self::devices)).
    pub(crate) devices: Vec<String>,
}

impl WorkerContext {
    /// The `gpu` device ids this worker holds for as long as it lives, given by the run's
    /// budget ([`Runner::resources`](crate::Runner::resources),
    /// [`Runner::devices`](crate::Runner::devices)) for the task's
    /// [requirement](TaskBuilder::requires); no other live worker holds them. Empty when the
    /// task needs no GPU or the run has no budget.
    ///
    /// Worker threads share the process's environment, so on threads this is the only place
    /// to find them (select the device with it, e.g. `cuda:{id}`); worker processes are also
    /// started with `CUDA_VISIBLE_DEVICES` set to them.
    #[must_use]
    pub fn devices(&self) -> &[String] {
        &self.devices
    }
}

/// What a block's function produced: its output as compact JSON, for tasks with outputs.
pub(crate) type BlockResult = Result<Option<String>, BlockError>;
pub(crate) type ProcessFn = Arc<dyn Fn(&Block) -> BlockResult + Send + Sync>;
pub(crate) type BlockFn = Box<dyn FnMut(&Block) -> BlockResult>;
pub(crate) type WorkerInitFn =
    Arc<dyn Fn(&WorkerContext) -> Result<BlockFn, BlockError> + Send + Sync>;
pub(crate) type CheckFn = Arc<dyn Fn(&Block) -> bool + Send + Sync>;

/// How a task processes its blocks.
#[derive(Clone)]
pub(crate) enum Processor {
    /// One function for every block, shared by all workers.
    PerBlock(ProcessFn),
    /// A set-up run once per worker that returns the worker's block function.
    PerWorker(WorkerInitFn),
}

pub(crate) struct TaskInner {
    pub(crate) id: Arc<str>,
    pub(crate) total_roi: Roi,
    pub(crate) read_roi: Roi,
    pub(crate) write_roi: Roi,
    pub(crate) fit: Fit,
    pub(crate) read_write_conflict: bool,
    pub(crate) num_workers: usize,
    pub(crate) threads_per_worker: usize,
    pub(crate) max_retries: u32,
    pub(crate) max_consecutive_failures: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) upstream: Vec<Task>,
    pub(crate) upstream_ids: Vec<String>,
    pub(crate) processor: Option<Processor>,
    /// Whether the process function returns outputs (`process_with_output`).
    pub(crate) has_output: bool,
    pub(crate) check: Option<CheckFn>,
    /// Blocks where the mask is empty are skipped (see [`TaskBuilder::mask`]).
    #[cfg(feature = "zarr")]
    pub(crate) mask: Option<crate::mask::Mask>,
    pub(crate) grid: BlockGrid,
    pub(crate) writes: Vec<ChunkGrid>,
    /// What one worker needs of the run's resource budget.
    pub(crate) requirement: Requirement,
}

/// A task: a total ROI tiled with blocks, and what to do with each block.
///
/// Build one with [`Task::builder`]. A `Task` is cheap to clone (it is reference counted).
///
/// ```
/// use blockwise::{Fit, Roi, Task};
///
/// # fn main() -> Result<(), blockwise::Error> {
/// // 1D: a 100-voxel volume, blocks writing 8 voxels and reading 1 voxel of context each side.
/// let task = Task::builder("smooth", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([1], [8]))
///     .process(|block| {
///         let _ = block.write_roi();
///         Ok::<(), blockwise::BlockError>(())
///     })
///     .fit(Fit::Valid)
///     .num_workers(2)
///     .build()?;
/// assert_eq!(task.num_blocks(), 12);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Task {
    pub(crate) inner: Arc<TaskInner>,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("task_id", &self.inner.id)
            .field("total_roi", &self.inner.total_roi)
            .field("read_roi", &self.inner.read_roi)
            .field("write_roi", &self.inner.write_roi)
            .field("fit", &self.inner.fit)
            .field("read_write_conflict", &self.inner.read_write_conflict)
            .field("num_workers", &self.inner.num_workers)
            .field("max_retries", &self.inner.max_retries)
            .field(
                "max_consecutive_failures",
                &self.inner.max_consecutive_failures,
            )
            .field("timeout", &self.inner.timeout)
            .field(
                "upstream",
                &self
                    .inner
                    .upstream
                    .iter()
                    .map(|t| t.task_id())
                    .chain(self.inner.upstream_ids.iter().map(String::as_str))
                    .collect::<Vec<_>>(),
            )
            .field("requirements", &self.requirements())
            .field("num_blocks", &self.num_blocks())
            .finish_non_exhaustive()
    }
}

impl Task {
    /// Starts building a task named `task_id` whose blocks tile `total_roi`.
    ///
    /// Only the shapes of `read_roi` and `write_roi` and their relative offset matter: the
    /// context is `write_roi.begin - read_roi.begin` below and `read_roi.end - write_roi.end`
    /// above, and the first block's read ROI starts at `total_roi.begin` (daisy's convention).
    pub fn builder(
        task_id: impl Into<String>,
        total_roi: Roi,
        read_roi: Roi,
        write_roi: Roi,
    ) -> TaskBuilder {
        TaskBuilder {
            task_id: task_id.into(),
            total_roi,
            read_roi,
            write_roi,
            fit: Fit::Valid,
            read_write_conflict: true,
            num_workers: 1,
            threads_per_worker: 1,
            max_retries: 2,
            max_consecutive_failures: None,
            timeout: None,
            upstream: Vec::new(),
            upstream_ids: Vec::new(),
            processor: None,
            has_output: false,
            check: None,
            #[cfg(feature = "zarr")]
            mask: None,
            writes: Vec::new(),
            requires: Vec::new(),
        }
    }

    /// The task's id.
    #[must_use]
    pub fn task_id(&self) -> &str {
        &self.inner.id
    }

    /// The number of blocks the task has (closed form; nothing is enumerated).
    #[must_use]
    pub fn num_blocks(&self) -> u64 {
        self.inner.grid.num_blocks
    }

    /// The total (read) ROI.
    #[must_use]
    pub fn total_roi(&self) -> &Roi {
        &self.inner.total_roi
    }

    /// The total write ROI: the total ROI shrunk by the block context.
    #[must_use]
    pub fn total_write_roi(&self) -> &Roi {
        &self.inner.grid.total_write
    }

    /// The read ROI of one block (shape and offset relative to the write ROI).
    #[must_use]
    pub fn read_roi(&self) -> &Roi {
        &self.inner.read_roi
    }

    /// The write ROI of one block.
    #[must_use]
    pub fn write_roi(&self) -> &Roi {
        &self.inner.write_roi
    }

    /// How boundary blocks are handled.
    #[must_use]
    pub fn fit(&self) -> Fit {
        self.inner.fit
    }

    /// Whether blocks whose read ROI overlaps another's write ROI are kept apart.
    #[must_use]
    pub fn read_write_conflict(&self) -> bool {
        self.inner.read_write_conflict
    }

    /// Number of workers the task runs on.
    #[must_use]
    pub fn num_workers(&self) -> usize {
        self.inner.num_workers
    }

    /// Blocks one worker process runs at once (see [`TaskBuilder::threads_per_worker`]).
    #[must_use]
    pub fn threads_per_worker(&self) -> usize {
        self.inner.threads_per_worker
    }

    /// How many times a failed block is retried (attempts are `max_retries + 1`).
    #[must_use]
    pub fn max_retries(&self) -> u32 {
        self.inner.max_retries
    }

    /// The failure budget: the task is abandoned after this many blocks in a row failed
    /// permanently (see [`TaskBuilder::max_consecutive_failures`]); `None` for no limit.
    #[must_use]
    pub fn max_consecutive_failures(&self) -> Option<u32> {
        self.inner.max_consecutive_failures
    }

    /// The per-block time limit, if any.
    #[must_use]
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// The upstream tasks given as [`Task`]s (ids given with
    /// [`TaskBuilder::upstream_id`] are resolved when the run starts).
    #[must_use]
    pub fn upstream_tasks(&self) -> &[Task] {
        &self.inner.upstream
    }

    /// Whether the task's blocks return outputs (see [`TaskBuilder::process_with_output`]).
    #[must_use]
    pub fn has_output(&self) -> bool {
        self.inner.has_output
    }

    /// The task's mask, if it has one (see [`TaskBuilder::mask`]).
    #[cfg(feature = "zarr")]
    #[must_use]
    pub fn mask(&self) -> Option<&crate::mask::Mask> {
        self.inner.mask.as_ref()
    }

    /// The arrays the task declared it writes (see [`TaskBuilder::writes`]).
    #[must_use]
    pub fn writes(&self) -> &[ChunkGrid] {
        &self.inner.writes
    }

    /// What the run directory records and checks of this task: the layout of its blocks and
    /// the arrays it writes (the journal never sees the task itself).
    pub(crate) fn layout(&self) -> crate::journal::TaskLayout {
        let inner = &self.inner;
        crate::journal::TaskLayout {
            task_id: inner.id.to_string(),
            total_roi: inner.total_roi.clone(),
            read_roi: inner.read_roi.clone(),
            write_roi: inner.write_roi.clone(),
            fit: inner.fit,
            read_write_conflict: inner.read_write_conflict,
            grid_shape: inner.grid.counts.clone(),
            num_blocks: inner.grid.num_blocks,
            writes: inner.writes.clone(),
        }
    }

    /// What one worker of the task needs of the run's resource budget, `(resource, units)`
    /// sorted by name (see [`TaskBuilder::requires`]); empty by default.
    #[must_use]
    pub fn requirements(&self) -> &[(String, u64)] {
        self.inner.requirement.as_slice()
    }

    /// The number of levels blocks are grouped into (1 without read/write conflicts).
    #[must_use]
    pub fn num_levels(&self) -> usize {
        self.inner.grid.num_levels()
    }

    /// The block with dense grid index `grid_index` (see [`Block::grid_index`]), or `None` past
    /// the last block. Handy for tests and tools; the scheduler never enumerates blocks.
    #[must_use]
    pub fn block(&self, grid_index: u64) -> Option<Block> {
        (grid_index < self.num_blocks()).then(|| {
            let cell = self.inner.grid.cell(grid_index);
            self.inner.grid.block(&self.inner.id, &cell)
        })
    }
}

/// A block's output as compact JSON; a value serde cannot serialize fails the block.
fn serialize_output<T: serde::Serialize>(value: &T) -> Result<String, BlockError> {
    serde_json::to_string(value)
        .map_err(|e| format!("the block's output cannot be serialized as JSON: {e}").into())
}

/// Builder for a [`Task`]; see [`Task::builder`].
#[must_use = "a builder does nothing until `.build()`"]
pub struct TaskBuilder {
    task_id: String,
    total_roi: Roi,
    read_roi: Roi,
    write_roi: Roi,
    fit: Fit,
    read_write_conflict: bool,
    num_workers: usize,
    threads_per_worker: usize,
    max_retries: u32,
    max_consecutive_failures: Option<u32>,
    timeout: Option<Duration>,
    upstream: Vec<Task>,
    upstream_ids: Vec<String>,
    processor: Option<Processor>,
    has_output: bool,
    check: Option<CheckFn>,
    #[cfg(feature = "zarr")]
    mask: Option<crate::mask::Mask>,
    writes: Vec<ChunkGrid>,
    requires: Vec<(String, u64)>,
}

impl fmt::Debug for TaskBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("task_id", &self.task_id)
            .field("total_roi", &self.total_roi)
            .field("read_roi", &self.read_roi)
            .field("write_roi", &self.write_roi)
            .finish_non_exhaustive()
    }
}

impl TaskBuilder {
    /// The function run for every block. A returned error or a panic fails the block (it is
    /// retried up to `max_retries` times); the message is kept in the run summary.
    ///
    /// The function returns `Result<(), BlockError>`, so a closure needs no annotation and `?`
    /// works on any error type (store, I/O, your own):
    ///
    /// ```
    /// use blockwise::{Roi, Task};
    ///
    /// # fn main() -> Result<(), blockwise::Error> {
    /// let task = Task::builder("t", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///     .process(|block| {
    ///         let n: u64 = "7".parse()?; // a ParseIntError, converted by `?`
    ///         assert!(block.write_roi().size() > 0 && n == 7);
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// assert!(blockwise::run_blockwise([task])?.is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A named function with another error type is passed as `|b| Ok(my_fn(b)?)`.
    pub fn process<F>(mut self, f: F) -> Self
    where
        F: Fn(&Block) -> Result<(), BlockError> + Send + Sync + 'static,
    {
        self.processor = Some(Processor::PerBlock(Arc::new(move |b: &Block| {
            f(b).map(|()| None)
        })));
        self.has_output = false;
        self
    }

    /// Like [`process`](Self::process), but each block's function returns a value (merge
    /// edges, statistics, counts) that the run collects: it is serialized (compact JSON) where
    /// the block ran, travels with the block's release (in the release message for worker
    /// processes), and is recorded with the block's done-marker in the run directory (a
    /// temporary one without [`Runner::run_dir`](crate::Runner::run_dir)): a crash keeps both
    /// or neither, and a rerun keeps exactly one output per done block. Read them back with
    /// [`RunSummary::outputs`](crate::RunSummary::outputs) or
    /// [`journal::read_outputs`](crate::journal::read_outputs).
    ///
    /// An output larger than [`Runner::max_output_bytes`](crate::Runner::max_output_bytes)
    /// (default 1 MiB) fails the block; write large results to storage and return a reference.
    ///
    /// ```
    /// use blockwise::{Roi, Task};
    ///
    /// # fn main() -> Result<(), blockwise::Error> {
    /// let task = Task::builder("edges", Roi::new([0], [40]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///     .process_with_output(|block| {
    ///         let _ = block.write_roi();
    ///         Ok(vec![1u64, 2])
    ///     })
    ///     .build()?;
    /// let summary = blockwise::run_blockwise([task])?;
    /// let outputs: Vec<_> = summary.outputs::<Vec<u64>>("edges")?.collect::<Result<_, _>>()?;
    /// assert_eq!(outputs.len(), 4);
    /// assert!(outputs.iter().all(|o| o.value == [1, 2]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn process_with_output<F, T>(mut self, f: F) -> Self
    where
        F: Fn(&Block) -> Result<T, BlockError> + Send + Sync + 'static,
        T: serde::Serialize + 'static,
    {
        self.processor = Some(Processor::PerBlock(Arc::new(move |b: &Block| {
            serialize_output(&f(b)?).map(Some)
        })));
        self.has_output = true;
        self
    }

    /// The per-worker form of [`process_with_output`](Self::process_with_output) (see
    /// [`process_per_worker`](Self::process_per_worker)).
    ///
    /// ```
    /// use blockwise::{Block, Roi, Task, WorkerContext};
    ///
    /// # fn main() -> Result<(), blockwise::Error> {
    /// let task = Task::builder("n", Roi::new([0], [40]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///     .process_per_worker_with_output(|_worker: &WorkerContext| {
    ///         let mut seen = 0u64;
    ///         Ok(move |_block: &Block| {
    ///             seen += 1;
    ///             Ok(seen)
    ///         })
    ///     })
    ///     .build()?;
    /// let summary = blockwise::run_blockwise([task])?;
    /// let mut seen: Vec<u64> = summary.outputs::<u64>("n")?.map(|o| o.map(|o| o.value)).collect::<Result<_, _>>()?;
    /// seen.sort();
    /// assert_eq!(seen, [1, 2, 3, 4]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn process_per_worker_with_output<I, P, T>(mut self, init: I) -> Self
    where
        I: Fn(&WorkerContext) -> Result<P, BlockError> + Send + Sync + 'static,
        P: FnMut(&Block) -> Result<T, BlockError> + 'static,
        T: serde::Serialize + 'static,
    {
        self.processor = Some(Processor::PerWorker(Arc::new(
            move |ctx: &WorkerContext| {
                let mut f = init(ctx)?;
                let boxed: BlockFn = Box::new(move |b: &Block| serialize_output(&f(b)?).map(Some));
                Ok(boxed)
            },
        )));
        self.has_output = true;
        self
    }

    /// A per-worker form of [`process`](Self::process): `init` runs once on each worker (open
    /// stores, load a model) and returns the function that then processes many blocks with that
    /// state. The returned function stays on its worker's thread, so it need not be `Send`.
    ///
    /// If `init` fails, the worker is restarted a few times and then the run stops with
    /// [`Error::WorkerStartup`].
    ///
    /// ```
    /// use blockwise::{Block, Roi, Task, WorkerContext};
    ///
    /// # fn main() -> Result<(), blockwise::Error> {
    /// let task = Task::builder("count", Roi::new([0], [40]), Roi::new([0], [10]), Roi::new([0], [10]))
    ///     .process_per_worker(|_worker: &WorkerContext| {
    ///         let mut seen = 0u64; // per-worker state
    ///         Ok(move |block: &Block| {
    ///             seen += 1;
    ///             assert!(seen <= 4 && block.block_id() < 4);
    ///             Ok(())
    ///         })
    ///     })
    ///     .build()?;
    /// let summary = blockwise::run_blockwise([task])?;
    /// assert!(summary.is_success());
    /// # Ok(())
    /// # }
    /// ```
    pub fn process_per_worker<I, P>(mut self, init: I) -> Self
    where
        I: Fn(&WorkerContext) -> Result<P, BlockError> + Send + Sync + 'static,
        P: FnMut(&Block) -> Result<(), BlockError> + 'static,
    {
        self.processor = Some(Processor::PerWorker(Arc::new(
            move |ctx: &WorkerContext| {
                let mut f = init(ctx)?;
                let boxed: BlockFn = Box::new(move |b: &Block| f(b).map(|()| None));
                Ok(boxed)
            },
        )));
        self.has_output = false;
        self
    }

    /// daisy's `check_function`: called before a block is handed out; `true` means the block is
    /// already done, so it is skipped (counted as completed and skipped) and releases its
    /// dependents. A panicking check counts as `false`.
    ///
    /// Like daisy, checks run one at a time where the scheduler runs (the runner's driver
    /// thread), so keep them cheap: a slow check delays every hand-out.
    pub fn check<F>(mut self, f: F) -> Self
    where
        F: Fn(&Block) -> bool + Send + Sync + 'static,
    {
        self.check = Some(Arc::new(f));
        self
    }

    /// Skips the blocks where `mask` is empty (feature `zarr`): before a block is handed out,
    /// the mask's voxels under its write ROI (at the mask's own resolution, which may be
    /// coarser than the task's) go to the mask's predicate ([`Mask::nonzero`] by default:
    /// a `&ZarrArray` converts to it). A block the predicate rejects, or one outside the
    /// mask's ROI, is counted as completed and skipped and releases its dependents; neither
    /// the process nor the check function is called for it, and a run directory does not
    /// record it as done, so a rerun with a mask that now covers it runs it. A mask that
    /// cannot be read fails the block's attempt (retried as usual). See [`crate::mask`].
    ///
    /// [`build`](Self::build) refuses a mask with other dimensions than the task, or one that
    /// does not overlap the task's total write ROI.
    ///
    /// [`Mask::nonzero`]: crate::mask::Mask::nonzero
    #[cfg(feature = "zarr")]
    pub fn mask(mut self, mask: impl Into<crate::mask::Mask>) -> Self {
        self.mask = Some(mask.into());
        self
    }

    /// Whether blocks whose read ROI overlaps another block's write ROI must not run at the
    /// same time (default `true`). Without it all blocks are independent.
    pub fn read_write_conflict(mut self, conflict: bool) -> Self {
        self.read_write_conflict = conflict;
        self
    }

    /// How to treat the upper boundary (default [`Fit::Valid`]).
    pub fn fit(mut self, fit: Fit) -> Self {
        self.fit = fit;
        self
    }

    /// Number of workers for this task (default 1).
    pub fn num_workers(mut self, n: usize) -> Self {
        self.num_workers = n;
        self
    }

    /// Blocks one worker process runs at once, each on its own thread (default 1): a GPU
    /// worker that reads the next block while the current one runs, or a worker filling a
    /// multi-core job. The worker holds a few more blocks than this, so that no thread waits for
    /// a round trip.
    ///
    /// Per-worker state is **built once per thread**: a
    /// [`process_per_worker`](Self::process_per_worker) set-up runs on each of the `n` threads
    /// (all with the worker's [`WorkerContext`]), so its state needs neither `Send` nor `Sync`;
    /// share something between the threads (one model on a GPU) by building it outside the
    /// set-up, behind an `Arc`. A set-up that fails on any thread fails the worker's start.
    ///
    /// Worker processes only: the threads runner already runs `num_workers` blocks at once and
    /// ignores this. When a worker is lost, the first `n` blocks it held count as running (they
    /// fail an attempt; the rest go back unstarted), and a block's timeout counts from when it
    /// became the oldest block the worker holds.
    pub fn threads_per_worker(mut self, n: usize) -> Self {
        self.threads_per_worker = n;
        self
    }

    /// How often a failed block is retried (default 2, so 3 attempts).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// A failure budget (daisy 2.0's abandonment): the task is **abandoned** once `n` of its
    /// blocks in a row failed permanently, with no block of the task succeeding in between.
    /// Default: no limit (every block gets its retries, as in daisy 1.x). `n == 0` is refused
    /// by [`build`](Self::build).
    ///
    /// What counts, in the order the scheduler takes blocks back:
    ///
    /// * A block that **fails permanently** (its last attempt, after
    ///   [`max_retries`](Self::max_retries) retries, failed) adds one, whatever the kind of
    ///   failure: an error, a panic, a [timeout](Self::timeout), a lost worker process, an
    ///   output too large. A failed attempt that is retried counts neither way.
    /// * A block whose function **succeeds** resets the count to zero.
    /// * A block **skipped** as already done (by the [check function](Self::check) or the
    ///   done-markers of a run directory) changes nothing: it ran nothing, so it says nothing
    ///   about whether the task's function works.
    ///
    /// When the task is abandoned it hands out no further block. Blocks already handed out
    /// still count when they come back (a success does not undo the abandonment; a failure with
    /// retries left is not retried and counts as orphaned): worker threads finish the block
    /// they are running and give back the blocks queued for them; worker processes finish the
    /// blocks they were sent (at most their [prefetch](crate::Runner::prefetch)) and leave, and
    /// no worker is started for the task any more. Every other block of the task
    /// that did not complete or fail counts as orphaned, and every task downstream of it
    /// (transitively, except tasks whose blocks all completed already) is abandoned too, its unfinished blocks orphaned.
    /// The reason is in [`TaskState::abandoned`](crate::TaskState::abandoned), the run
    /// summary's text, and `blockwise status` of the run directory; the run is not a success.
    /// This costs nothing per block.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use blockwise::{Progress, Roi, Runner, Task};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let calls = Arc::new(AtomicU32::new(0));
    /// let counter = Arc::clone(&calls);
    /// // 100 blocks whose function always fails: abandoned after 3, not 100 × 3 attempts.
    /// let broken = Task::builder("broken", Roi::new([0], [100]), Roi::new([0], [1]), Roi::new([0], [1]))
    ///     .process(move |_| {
    ///         counter.fetch_add(1, Ordering::SeqCst);
    ///         Err("the model file is missing".into())
    ///     })
    ///     .max_retries(0)
    ///     .max_consecutive_failures(3)
    ///     .build()?;
    /// let after = Task::builder("after", Roi::new([0], [100]), Roi::new([0], [1]), Roi::new([0], [1]))
    ///     .process(|_| Ok(()))
    ///     .upstream(&broken)
    ///     .build()?;
    /// // One block at a time, so that no block is running when the third one fails.
    /// let summary = Runner::new().progress(Progress::Never).prefetch(1).run([after])?;
    /// assert!(!summary.is_success());
    /// assert_eq!(calls.load(Ordering::SeqCst), 3);
    /// let state = summary.task("broken").ok_or("no task")?;
    /// assert_eq!((state.failed, state.orphaned), (3, 97));
    /// assert!(state.abandoned.as_deref().is_some_and(|r| r.starts_with("abandoned after 3 consecutive failed blocks")));
    /// let after = summary.task("after").ok_or("no task")?;
    /// assert_eq!((after.completed, after.orphaned), (0, 100));
    /// assert_eq!(after.abandoned.as_deref(), Some("upstream task broken was abandoned"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_consecutive_failures(mut self, n: u32) -> Self {
        self.max_consecutive_failures = Some(n);
        self
    }

    /// A per-block time limit: a block running longer is failed (and retried) and its worker
    /// replaced. See [timeouts and stuck threads](crate::Runner#timeouts-and-stuck-threads) for
    /// what happens to a stuck thread.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds an upstream task: a block of this task waits for every block of `task` whose write
    /// ROI overlaps its read ROI. Repeatable.
    pub fn upstream(mut self, task: &Task) -> Self {
        self.upstream.push(task.clone());
        self
    }

    /// Adds an upstream task by id; it must be part of the run (given to
    /// [`run_blockwise`](crate::run_blockwise) or reachable from a given task).
    pub fn upstream_id(mut self, task_id: impl Into<String>) -> Self {
        self.upstream_ids.push(task_id.into());
        self
    }

    /// Declares an array the task writes, by its chunk grid (see
    /// [`ChunkGrid`](crate::store::ChunkGrid)). [`build`](Self::build) then checks that every
    /// block writes whole chunks (whole shards for sharded arrays): zarr stores rewrite a chunk as
    /// a whole, so two blocks writing parts of one chunk at the same time lose each other's voxels.
    /// Repeatable.
    pub fn writes(mut self, grid: impl Into<ChunkGrid>) -> Self {
        self.writes.push(grid.into());
        self
    }

    /// What one worker of this task needs of the run's resource budget: `(resource, units)`
    /// pairs, any names (`"gpu"`, `"cpu"`, `"mem_gb"`, ...), integer units per worker. A
    /// later call replaces the earlier one; zero units mean nothing.
    ///
    /// With a budget ([`Runner::resources`](crate::Runner::resources),
    /// [`Runner::devices`](crate::Runner::devices)), the live workers of all tasks together
    /// never hold more than it has: a task runs on up to
    /// [`num_workers`](Self::num_workers) workers as units allow, a worker holds its units
    /// (and its `gpu` ids, [`WorkerContext::devices`]) from its start to its exit, and idle
    /// workers give them up when another task waits for them (see `Runner::resources`). A
    /// requirement the budget can never meet (more units than it has, or a resource it does
    /// not have, most likely a typo) makes [`Runner::run`](crate::Runner::run) fail with
    /// [`Error::Resources`] before any block runs. Without a budget requirements are ignored
    /// (every task runs on `num_workers` workers, as before).
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use std::sync::{Arc, Mutex};
    /// use blockwise::{Block, Progress, Roi, Runner, Task, WorkerContext};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let seen = Arc::new(Mutex::new(BTreeSet::new()));
    /// let s = Arc::clone(&seen);
    /// let predict = Task::builder("predict", Roi::new([0], [64]), Roi::new([0], [8]), Roi::new([0], [8]))
    ///     .requires([("gpu", 1), ("cpu", 2)])
    ///     .num_workers(4) // only 2 fit at a time: the budget has 2 GPUs
    ///     .process_per_worker(move |worker: &WorkerContext| {
    ///         let device = worker.devices().join(","); // "0" or "1", never both at once
    ///         s.lock().map_err(|_| "poisoned")?.insert(device.clone());
    ///         Ok(move |_block: &Block| {
    ///             let _ = &device; // run the model on `cuda:{device}`
    ///             Ok(())
    ///         })
    ///     })
    ///     .build()?;
    /// assert_eq!(predict.requirements(), [("cpu".to_owned(), 2), ("gpu".to_owned(), 1)]);
    /// let summary = Runner::new()
    ///     .progress(Progress::Never)
    ///     .resources([("gpu", 2), ("cpu", 8)])
    ///     .run([predict])?;
    /// assert!(summary.is_success());
    /// assert!(seen.lock().map_err(|_| "poisoned")?.iter().all(|d| d == "0" || d == "1"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn requires(mut self, units: impl IntoIterator<Item = (impl Into<String>, u64)>) -> Self {
        self.requires = unit_list(units);
        self
    }

    /// Validates the configuration and builds the task.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`] naming the task and the offending values: an empty or unusable id,
    /// ROIs of different dimensions, a non-positive read or write shape, a negative total shape,
    /// a write ROI outside the read ROI with `read_write_conflict`, zero workers, a zero timeout,
    /// a zero [`max_consecutive_failures`](Self::max_consecutive_failures), a
    /// [requirement](Self::requires) naming a resource twice or with an empty name,
    /// a grid whose block count or ids overflow, or write ROIs not aligned to the chunk grid of an
    /// array declared with [`writes`](Self::writes).
    ///
    /// Coordinates are `i64`, and a task is refused (never wrapped, never a panic) if any value
    /// its blocks need does not fit: the end of the total, read or write ROI, the contexts, the
    /// total write ROI, or the read and write ROI of any block (its unclipped ROIs, even with
    /// [`Fit::Shrink`]). The reason names the value, the axis and the limit. Only the first and
    /// last block of each axis are checked (all values grow with the block index), so this costs
    /// nothing per block.
    pub fn build(self) -> Result<Task, Error> {
        let id = self.task_id;
        if id.is_empty() {
            return Err(Error::invalid(&id, "the task id is empty"));
        }
        if id == "." || id == ".." || id.contains(['/', '\\', '\0']) {
            return Err(Error::invalid(
                &id,
                "the task id must not contain '/', '\\' or NUL, nor be '.' or '..' (it names log directories)",
            ));
        }
        if self.num_workers == 0 {
            return Err(Error::invalid(
                &id,
                "num_workers is 0; it must be at least 1",
            ));
        }
        if self.threads_per_worker == 0 {
            return Err(Error::invalid(
                &id,
                "threads_per_worker is 0; it must be at least 1",
            ));
        }
        if self.max_consecutive_failures == Some(0) {
            return Err(Error::invalid(
                &id,
                "max_consecutive_failures is 0; it must be at least 1 (leave it unset for no limit)",
            ));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::invalid(&id, "timeout is zero; it must be positive"));
        }
        let requirement = Requirement::new(self.requires)
            .map_err(|reason| Error::invalid(&id, format!("requires: {reason}")))?;
        let grid = BlockGrid::new(
            &self.total_roi,
            &self.read_roi,
            &self.write_roi,
            self.fit,
            self.read_write_conflict,
        )
        .map_err(|reason| Error::invalid(&id, reason))?;
        #[cfg(feature = "zarr")]
        if let Some(mask) = &self.mask {
            mask.check_task(&grid.total_write)
                .map_err(|reason| Error::invalid(&id, reason))?;
        }
        for target in &self.writes {
            target
                .check_writes(grid.total_write.offset(), &grid.write_shape)
                .map_err(|reason| Error::invalid(&id, reason))?;
        }
        Ok(Task {
            inner: Arc::new(TaskInner {
                id: Arc::from(id),
                total_roi: self.total_roi,
                read_roi: self.read_roi,
                write_roi: self.write_roi,
                fit: self.fit,
                read_write_conflict: self.read_write_conflict,
                num_workers: self.num_workers,
                threads_per_worker: self.threads_per_worker,
                max_retries: self.max_retries,
                max_consecutive_failures: self.max_consecutive_failures,
                timeout: self.timeout,
                upstream: self.upstream,
                upstream_ids: self.upstream_ids,
                processor: self.processor,
                has_output: self.has_output,
                check: self.check,
                #[cfg(feature = "zarr")]
                mask: self.mask,
                grid,
                writes: self.writes,
                requirement,
            }),
        })
    }
}
