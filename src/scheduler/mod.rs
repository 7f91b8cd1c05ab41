//! The scheduler: a pure, single-threaded state machine that hands out ready blocks and takes
//! them back (daisy's `Scheduler`).
//!
//! It has no threads, sockets or clocks; every runner drives one. Blocks are handed out in
//! exactly daisy 1.x's order: per task, first the roots (blocks of level 0, lazily in product
//! order), then blocks that became ready, first in first out, in the order daisy's ready surface
//! releases them (by block id). Failed blocks are retried at the back of the queue.
//!
//! # State kept
//!
//! Per task the scheduler keeps a cursor over the roots, the queue of ready blocks, the blocks
//! in flight, retry counts of failed blocks, an *unmet-dependency counter* for each block some
//! but not all of whose upstream blocks are done (the wavefront), and the set of orphaned
//! blocks. daisy keeps completed blocks in a "ready surface" until their dependents finish;
//! counting unmet dependencies instead releases blocks in the same order and frees memory as
//! soon as a block becomes ready.
//!
//! None of it is a per-block table, but the queue and the wavefront do grow with the task:
//! with `read_write_conflict`, daisy's order hands out every root (an eighth of a 3-D task's
//! blocks) before any other block, and the level-1 blocks the roots release wait in the queue
//! meanwhile. The queue therefore stores runs of keys with a constant step (24 bytes a run,
//! about one run per row of blocks; see `queue.rs`), and the wavefront is about one plane of
//! blocks (the blocks around the sweep's front, or those of a downstream task next to the
//! upstream task's front). The README's table gives measured peaks.
//!
//! That plane holds only while the upstream task does not run far ahead: every downstream
//! block an upstream block's completion touches waits (for its other upstream blocks, and with
//! conflicts downstream for its own neighbours), so a fast upstream task leaves its whole lead
//! waiting. The runners therefore ask [`Scheduler::is_held_back`] before handing out a block:
//! an upstream task gets none while a task downstream of it has blocks in flight and more
//! than two planes of its grid waiting. This decides only *when* the runners ask for blocks;
//! the order of each task's blocks, and [`acquire_block`](Scheduler::acquire_block) itself,
//! are unchanged.
//!
//! A task with a failure budget also keeps the number of blocks failed for good since its last
//! success. When it is abandoned (and the tasks downstream of it), its queue, wavefront, orphan
//! set and retry counts (but those of blocks in flight) are dropped and its counters computed:
//! every block not completed, failed or in flight is orphaned.
//!
//! # Where daisy 1.x is wrong
//!
//! * A task whose write ROI does not fit has 0 blocks, never a negative count.
//! * A block of a downstream task that no upstream block writes to has no dependencies: it is
//!   a root and runs (daisy never schedules it, and its server waits forever).
//! * A read ROI disjoint from an upstream task simply has no upstream blocks (daisy crashes).
//! * Dependencies between tasks are computed as exact inverses of each other (daisy computes the
//!   downstream side by growing the write ROI the wrong way round for asymmetric contexts, which
//!   can hand a block out twice or never).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::blocks::grid::Cell;
use crate::blocks::{Block, BlockGrid, BlockStatus};
use crate::error::Error;
use crate::graph::{self, TaskGraph};
use crate::journal::DoneSet;
use crate::task::Task;
// `run/threads.rs` still imports it from here; new code takes it from `crate::util`.
pub(crate) use crate::util::panic_message;

mod queue;
mod waiting;
use queue::ReadyQueue;
use waiting::{Counted, Waiting};

/// Blocks of a task that may wait for upstream blocks before the runners hold its upstream
/// tasks back ([`Scheduler::is_held_back`]): two planes of its grid (all axes but the first,
/// which the sweep follows), at least `min` ([`HOLD_MIN`] but in tests).
fn hold_limit(grid: &BlockGrid, min: u64) -> u64 {
    grid_plane(grid).saturating_mul(2).max(min)
}

/// The blocks of one plane of `grid`: all axes but the first.
fn grid_plane(grid: &BlockGrid) -> u64 {
    grid.counts
        .iter()
        .skip(1)
        .fold(1u64, |p, &c| p.saturating_mul(c.max(1).unsigned_abs()))
}

/// The least [`hold_limit`]: small tasks are never held back.
const HOLD_MIN: u64 = 1 << 16;

/// The ready-queue window the runners use ([`Scheduler::set_queue_window`]).
pub(crate) const RUNNER_QUEUE_WINDOW: usize = 8;

/// Per-task block counters, with daisy's meaning (`TaskState`).
///
/// `completed` includes `skipped`; `pending` counts blocks not yet ready (it includes orphans
/// found later). The counters always satisfy
/// `pending = total - ready - completed - failed - orphaned - processing`.
///
/// A task that exhausted its failure budget
/// ([`TaskBuilder::max_consecutive_failures`](crate::TaskBuilder::max_consecutive_failures)),
/// or is downstream of such a task, is *abandoned*: [`abandoned`](TaskState::abandoned) says
/// why, and every block that neither completed, failed nor is still in flight counts as
/// orphaned.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskState {
    /// Whether a block of the task has been handed out.
    pub started: bool,
    /// Number of blocks of the task.
    pub total: u64,
    /// Blocks ready to be handed out.
    pub ready: u64,
    /// Blocks that are not ready yet.
    pub pending: u64,
    /// Blocks handed out and not yet released.
    pub processing: u64,
    /// Blocks finished successfully, including skipped ones.
    pub completed: u64,
    /// Blocks skipped without running: the check function reported them as already done, a
    /// run directory recorded them as done, or the task's
    /// [mask](crate::TaskBuilder::mask) is empty there (those are also in
    /// [`masked`](Self::masked)).
    pub skipped: u64,
    /// Of the skipped blocks, those the task's [mask](crate::TaskBuilder::mask) left out
    /// (never recorded as done in a run directory). 0 in records of versions without masks.
    #[serde(default)]
    pub masked: u64,
    /// Blocks that failed permanently (after all retries).
    pub failed: u64,
    /// Blocks that can never run because a block they depend on failed (or their task was
    /// abandoned).
    pub orphaned: u64,
    /// Why the task was abandoned, if it was: `"abandoned after 3 consecutive failed blocks
    /// (last: block 17: <error>)"`, or `"upstream task <id> was abandoned"`. `None` otherwise
    /// (and in records of versions without failure budgets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<String>,
}

impl TaskState {
    /// Whether every block reached a final state (completed, failed or orphaned).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.completed + self.failed + self.orphaned >= self.total
    }

    fn update_pending(&mut self) {
        self.pending = self.total.saturating_sub(
            self.ready + self.completed + self.failed + self.orphaned + self.processing,
        );
    }
}

impl fmt::Display for TaskState {
    /// daisy's nine-line `TaskState` text, and a tenth line `Abandoned: <reason>` only if the
    /// task was abandoned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Started: {}",
            if self.started { "True" } else { "False" }
        )?;
        writeln!(f, "Total Blocks: {}", self.total)?;
        writeln!(f, "Ready: {}", self.ready)?;
        writeln!(f, "Processing: {}", self.processing)?;
        writeln!(f, "Pending: {}", self.pending)?;
        writeln!(f, "Completed: {}", self.completed)?;
        writeln!(f, "Skipped: {}", self.skipped)?;
        writeln!(f, "Failed: {}", self.failed)?;
        writeln!(f, "Orphaned: {}", self.orphaned)?;
        if let Some(reason) = &self.abandoned {
            writeln!(f, "Abandoned: {reason}")?;
        }
        Ok(())
    }
}

/// Lazily enumerates a task's roots: level-0 cells, in product order, outside every box of
/// cells that depend on an upstream task.
#[derive(Debug)]
struct Roots {
    remaining: u64,
    next: Option<Cell>,
    boxes: Vec<Vec<(i64, i64)>>,
}

impl Roots {
    fn none() -> Roots {
        Roots {
            remaining: 0,
            next: None,
            boxes: Vec::new(),
        }
    }

    fn new(grid: &BlockGrid, boxes: Vec<Vec<(i64, i64)>>) -> Roots {
        let first: Option<Cell> = (grid.num_blocks > 0)
            .then(|| (0..grid.dims).map(|d| grid.stride[d].max(1) - 1).collect());
        let lattice_total = grid.level0_count();
        let remaining = if boxes.is_empty() {
            lattice_total
        } else if boxes.len() <= 16 {
            lattice_total - covered_by_boxes(grid, &boxes)
        } else {
            let mut probe = Roots {
                remaining: u64::MAX,
                next: first.clone(),
                boxes: boxes.clone(),
            };
            let mut n = 0;
            while probe.next_cell(grid).is_some() {
                n += 1;
            }
            n
        };
        Roots {
            remaining,
            next: if remaining > 0 { first } else { None },
            boxes,
        }
    }

    fn in_boxes(&self, cell: &[i64]) -> bool {
        self.boxes
            .iter()
            .any(|b| b.iter().zip(cell).all(|(&(lo, hi), &k)| lo <= k && k < hi))
    }

    fn next_cell(&mut self, grid: &BlockGrid) -> Option<Cell> {
        loop {
            let cell = self.next.clone()?;
            // Advance in product order over the level-0 lattice, last axis fastest.
            let mut next = cell.clone();
            let mut axis = grid.dims;
            loop {
                if axis == 0 {
                    self.next = None;
                    break;
                }
                axis -= 1;
                let s = grid.stride[axis].max(1);
                next[axis] += s;
                if next[axis] < grid.counts[axis] {
                    self.next = Some(next);
                    break;
                }
                next[axis] = s - 1;
            }
            if !self.in_boxes(&cell) {
                self.remaining = self.remaining.saturating_sub(1);
                return Some(cell);
            }
        }
    }
}

/// Number of level-0 cells inside the union of `boxes` (inclusion–exclusion).
fn covered_by_boxes(grid: &BlockGrid, boxes: &[Vec<(i64, i64)>]) -> u64 {
    let lattice_upto = |d: usize, x: i64| -> i64 {
        let s = grid.stride[d].max(1);
        let o = s - 1;
        let x = x.min(grid.counts[d]);
        if x <= o { 0 } else { (x - 1 - o) / s + 1 }
    };
    let mut total: i128 = 0;
    for mask in 1u32..(1u32 << boxes.len()) {
        let mut count: i128 = 1;
        for d in 0..grid.dims {
            let (mut lo, mut hi) = (0i64, grid.counts[d]);
            for (i, b) in boxes.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    lo = lo.max(b[d].0);
                    hi = hi.min(b[d].1);
                }
            }
            let n = if lo < hi {
                lattice_upto(d, hi) - lattice_upto(d, lo)
            } else {
                0
            };
            count *= i128::from(n);
        }
        if mask.count_ones() % 2 == 1 {
            total += count;
        } else {
            total -= count;
        }
    }
    u64::try_from(total.max(0)).unwrap_or(0)
}

/// Finds the roots of a resumed task: blocks not done whose upstream blocks are all done,
/// scanning grid indices in order and skipping done regions a chunk at a time.
#[derive(Debug)]
struct Scan {
    /// The next grid index to look at.
    cursor: u64,
    /// The next root found, handed out before the queue (roots first, as in a fresh run).
    next: Option<u64>,
}

#[derive(Debug)]
struct TaskEntry {
    task: Task,
    /// Upstream tasks whose blocks this task's blocks wait for (all but fully done ones).
    upstream: Vec<usize>,
    downstream: Vec<usize>,
    state: TaskState,
    roots: Roots,
    /// Blocks finished by earlier runs (done-markers); never handed out.
    done: DoneSet,
    /// Whether counting upstream blocks must leave out done ones.
    filter_upstream: bool,
    /// Root finder of a task resumed part way (`None`: roots come from `roots`).
    scan: Option<Scan>,
    queue: ReadyQueue,
    processing: FxHashSet<u64>,
    retries: FxHashMap<u64, u32>,
    waiting: Waiting,
    orphaned: FxHashSet<u64>,
    /// Blocks failed permanently since the task's last success (the failure budget).
    consecutive_failures: u32,
}

/// How a block came back to the scheduler.
#[derive(Debug, Clone, Copy)]
enum Outcome<'a> {
    /// Its function succeeded.
    Success,
    /// The check function found it done (it ran nothing).
    Skipped,
    /// The attempt failed, with the error if the runner knows it.
    Failed(Option<&'a str>),
}

/// At most this many characters of a block's error go into the reason of an abandonment.
const REASON_MESSAGE_CHARS: usize = 200;

/// The first line of `message`, cut to [`REASON_MESSAGE_CHARS`] characters.
fn short_message(message: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    if line.chars().count() > REASON_MESSAGE_CHARS {
        let cut: String = line.chars().take(REASON_MESSAGE_CHARS).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

impl TaskEntry {
    fn grid(&self) -> &BlockGrid {
        &self.task.inner.grid
    }
}

/// The scheduler state machine (daisy's `Scheduler`): hands out ready blocks with
/// [`acquire_block`](Scheduler::acquire_block) and takes them back with
/// [`release_block`](Scheduler::release_block).
///
/// ```
/// use blockwise::{BlockStatus, Roi, Scheduler, Task};
///
/// # fn main() -> Result<(), blockwise::Error> {
/// // daisy's 1D example: 12 blocks in two levels.
/// let task = Task::builder("t", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([1], [8]))
///     .build()?;
/// let mut scheduler = Scheduler::new(&[task])?;
/// let mut order = Vec::new();
/// while let Some(mut block) = scheduler.acquire_block("t") {
///     order.push(block.block_id());
///     block.set_status(BlockStatus::Success);
///     scheduler.release_block(block);
/// }
/// assert_eq!(order, [1, 3, 5, 7, 9, 11, 0, 2, 4, 6, 8, 10]);
/// assert!(scheduler.is_done());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Scheduler {
    tasks: Vec<TaskEntry>,
    index: FxHashMap<Arc<str>, usize>,
    /// Every upstream task of each task, fully done or not.
    upstream_all: Vec<Vec<usize>>,
    /// Buffers [`mark_success`](Scheduler::mark_success) reuses (no allocation per block).
    scratch: Scratch,
    /// Failed attempts of blocks whose mask could not be read, for the runner's summary and
    /// failure log (see [`take_mask_failures`](Scheduler::take_mask_failures)).
    mask_failures: Vec<MaskFailure>,
    /// The least [`hold_limit`] ([`HOLD_MIN`]; smaller in tests).
    hold_min: u64,
}

/// At most this many mask failures wait for [`Scheduler::take_mask_failures`].
#[cfg_attr(not(feature = "zarr"), allow(dead_code))]
const MAX_MASK_FAILURES: usize = 10_000;

/// An attempt of a block failed because its mask could not be read
/// ([`Scheduler::take_mask_failures`]).
#[derive(Debug, Clone)]
pub(crate) struct MaskFailure {
    pub(crate) block: Block,
    pub(crate) message: String,
    /// The block failed for good (no retry left).
    pub(crate) last: bool,
}

/// Reusable buffers of the scheduler's hot path.
#[derive(Debug, Default)]
struct Scratch {
    cells: Vec<Cell>,
    keys: Vec<u64>,
    down: Vec<(usize, u64)>,
    ready: Vec<(usize, u64, usize, u64)>,
}

impl Scheduler {
    /// Creates a scheduler for `tasks` and every upstream task reachable from them.
    ///
    /// # Errors
    ///
    /// Duplicate task ids, unknown upstream ids, cycles, and chained tasks of different
    /// dimensions.
    pub fn new(tasks: &[Task]) -> Result<Scheduler, Error> {
        let graph = TaskGraph::new(tasks)?;
        let mut entries: Vec<TaskEntry> = Vec::with_capacity(graph.tasks.len());
        for (i, task) in graph.tasks.iter().enumerate() {
            let n = task.inner.grid.num_blocks;
            entries.push(TaskEntry {
                task: task.clone(),
                upstream: graph.upstream[i].clone(),
                downstream: graph.downstream[i].clone(),
                state: TaskState::default(),
                roots: Roots::none(),
                done: DoneSet::empty(n),
                filter_upstream: false,
                scan: None,
                queue: ReadyQueue::default(),
                processing: FxHashSet::default(),
                retries: FxHashMap::default(),
                waiting: Waiting::for_grid(n, grid_plane(&task.inner.grid)),
                orphaned: FxHashSet::default(),
                consecutive_failures: 0,
            });
        }
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (Arc::clone(&e.task.inner.id), i))
            .collect();
        let mut scheduler = Scheduler {
            tasks: entries,
            index,
            upstream_all: graph.upstream,
            scratch: Scratch::default(),
            mask_failures: Vec::new(),
            hold_min: HOLD_MIN,
        };
        for i in 0..scheduler.tasks.len() {
            scheduler.init_task(i);
        }
        Ok(scheduler)
    }

    /// Lets a released block join any of the last `window` runs of its task's ready queue
    /// (see the [module docs](self#state-kept)); 1 (the default) keeps daisy's exact order.
    /// The runners widen it: which of their workers finishes first decides the order anyway,
    /// and a wider window keeps the queue compact when blocks finish slightly out of order.
    pub(crate) fn set_queue_window(&mut self, window: usize) {
        for entry in &mut self.tasks {
            entry.queue.set_window(window);
        }
    }

    /// Starts over from the blocks earlier runs finished: `done[i]` for the `i`-th task of
    /// [`tasks`](Scheduler::tasks). Must be called before any block is handed out.
    ///
    /// Done blocks are counted as completed and skipped and are never handed out (the check
    /// function is not called for them); a block waits only for upstream blocks that are not
    /// done. A task whose blocks are all done is finished at once, without visiting its
    /// blocks, and tasks downstream of it do not wait for it. A task done part way finds its
    /// roots by scanning grid indices in order, skipping done regions 65,536 blocks at a time;
    /// blocks are then handed out roots first, as in a fresh run, but not in daisy's order.
    pub(crate) fn resume(&mut self, done: Vec<DoneSet>) -> Result<(), Error> {
        if done.len() != self.tasks.len() {
            return Err(Error::InvalidRelease {
                block: "(none)".into(),
                reason: format!(
                    "resume needs one done set per task: {} for {} tasks",
                    done.len(),
                    self.tasks.len()
                ),
            });
        }
        if self
            .tasks
            .iter()
            .any(|e| e.state.started || e.state.processing > 0)
        {
            return Err(Error::InvalidRelease {
                block: "(none)".into(),
                reason: "resume after blocks were handed out".into(),
            });
        }
        for (entry, set) in self.tasks.iter_mut().zip(done) {
            if set.len() != entry.grid().num_blocks {
                return Err(Error::invalid(
                    entry.task.task_id(),
                    format!(
                        "done-markers for {} blocks, but the task has {}",
                        set.len(),
                        entry.grid().num_blocks
                    ),
                ));
            }
            entry.done = set;
        }
        for i in 0..self.tasks.len() {
            self.init_task(i);
        }
        Ok(())
    }

    /// Sets up a task's roots and counters from its done set and those of its upstream tasks.
    fn init_task(&mut self, i: usize) {
        let upstream: Vec<usize> = self.upstream_all[i]
            .iter()
            .copied()
            .filter(|&u| !self.tasks[u].done.is_all_done())
            .collect();
        let filter_upstream = !self.tasks[i].done.is_none_done()
            || upstream.iter().any(|&u| !self.tasks[u].done.is_none_done());
        let grid = self.tasks[i].grid();
        let n = grid.num_blocks;
        let done_count = self.tasks[i].done.count();
        let (roots, scan) = if self.tasks[i].done.is_all_done() {
            (Roots::none(), None)
        } else if filter_upstream {
            let scan = Scan {
                cursor: 0,
                next: None,
            };
            (Roots::none(), Some(scan))
        } else {
            let boxes: Vec<Vec<(i64, i64)>> = upstream
                .iter()
                .filter_map(|&u| {
                    let up = self.tasks[u].grid();
                    let b: Vec<(i64, i64)> = (0..grid.dims)
                        .map(|d| graph::dependent_axis_interval(grid, d, up))
                        .collect();
                    b.iter().all(|&(lo, hi)| lo < hi).then_some(b)
                })
                .collect();
            // With no box, no block depends on an upstream block: every level-0 block is a root.
            (Roots::new(grid, boxes), None)
        };
        let entry = &mut self.tasks[i];
        entry.upstream = upstream;
        entry.filter_upstream = filter_upstream;
        entry.state = TaskState {
            total: n,
            ready: roots.remaining,
            completed: done_count,
            skipped: done_count,
            ..TaskState::default()
        };
        entry.roots = roots;
        entry.scan = scan;
        entry.state.update_pending();
        self.advance_scan(i);
    }

    /// Finds the next root of a resumed task (if it has no root waiting).
    fn advance_scan(&mut self, t: usize) {
        let Some(scan) = &self.tasks[t].scan else {
            return;
        };
        if scan.next.is_some() {
            return;
        }
        let mut cursor = scan.cursor;
        let mut found = None;
        while let Some(key) = self.tasks[t].done.next_not_done(cursor) {
            cursor = key + 1;
            if self.has_pending_upstream(t, key) {
                continue;
            }
            found = Some(key);
            break;
        }
        let entry = &mut self.tasks[t];
        if found.is_none() {
            cursor = entry.done.len();
        }
        if let Some(scan) = &mut entry.scan {
            scan.cursor = cursor;
            scan.next = found;
        }
        if found.is_some() {
            entry.state.ready += 1;
            entry.state.update_pending();
        }
    }

    /// Whether a block of a resumed task waits for an upstream block that is not done.
    fn has_pending_upstream(&self, t: usize, key: u64) -> bool {
        self.pending_upstream(t, key, 1) > 0
    }

    /// Number of upstream blocks of `(t, key)` (intra- and inter-task) that earlier runs did
    /// not finish, counting no further than `limit`.
    fn pending_upstream(&self, t: usize, key: u64, limit: u64) -> u64 {
        let entry = &self.tasks[t];
        let grid = entry.grid();
        let cell = grid.cell(key);
        let mut cells: Vec<Cell> = Vec::new();
        grid.intra_upstream(&cell, &mut cells);
        let mut n = 0;
        for c in &cells {
            if !entry.done.contains(grid.linear(c)) {
                n += 1;
                if n >= limit {
                    return n;
                }
            }
        }
        for &u in &entry.upstream {
            let up = &self.tasks[u];
            let ugrid = up.grid();
            if let Some(b) = graph::upstream_box(grid, &cell, ugrid) {
                for c in box_cells(&b) {
                    if !up.done.contains(ugrid.linear(&c)) {
                        n += 1;
                        if n >= limit {
                            return n;
                        }
                    }
                }
            }
        }
        n
    }

    /// The tasks of the run, upstream tasks before their downstream tasks.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter().map(|e| &e.task)
    }

    /// The task with this id.
    #[must_use]
    pub fn task(&self, task_id: &str) -> Option<&Task> {
        self.index.get(task_id).map(|&i| &self.tasks[i].task)
    }

    /// The counters of a task.
    #[must_use]
    pub fn task_state(&self, task_id: &str) -> Option<&TaskState> {
        self.index.get(task_id).map(|&i| &self.tasks[i].state)
    }

    /// Whether every block of every task reached a final state.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.tasks.iter().all(|e| e.state.is_done())
    }

    /// The ids of tasks that have ready blocks, in task order.
    pub fn ready_tasks(&self) -> impl Iterator<Item = &str> {
        self.tasks
            .iter()
            .filter(|e| e.state.ready > 0)
            .map(|e| e.task.task_id())
    }

    /// Whether the runners should hand out no more blocks of the task for now: a task
    /// downstream of it has blocks in flight, and more blocks waiting for some of their
    /// upstream blocks than [`hold_limit`] allows (two planes of its block grid, at least
    /// 65,536). An upstream task that runs ahead of its downstream task leaves every
    /// downstream block it touches waiting (with conflicts downstream, for that task's own
    /// neighbours as well); holding it back while the downstream task works keeps that set
    /// about a plane of the sweep instead of the upstream task's whole lead. It never holds
    /// back forever: once the downstream task has nothing in flight (it waits for the
    /// upstream task), the upstream task goes on.
    pub(crate) fn is_held_back(&self, task_id: &str) -> bool {
        let Some(&t) = self.index.get(task_id) else {
            return false;
        };
        self.tasks[t].downstream.iter().any(|&d| {
            let e = &self.tasks[d];
            e.state.processing > 0 && e.waiting.len() as u64 > hold_limit(e.grid(), self.hold_min)
        })
    }

    /// Hands out the next ready block of the task, or `None` if it has none right now (or
    /// never again: the task is done or [abandoned](TaskState::abandoned)).
    ///
    /// The task's [mask](crate::TaskBuilder::mask) is looked at first: a block where it is
    /// empty is counted as completed, skipped and masked, releases its dependents, and is
    /// never returned; a block whose mask cannot be read has failed an attempt (it is retried
    /// later, or fails for good). Then the task's check function runs: a block it reports as
    /// done is counted as completed and skipped, releases its dependents, and is never
    /// returned.
    pub fn acquire_block(&mut self, task_id: &str) -> Option<Block> {
        let t = *self.index.get(task_id)?;
        loop {
            if self.tasks[t].state.abandoned.is_some() {
                return None;
            }
            let scanned = self.tasks[t].scan.as_mut().and_then(|s| s.next.take());
            if scanned.is_some() {
                self.advance_scan(t);
            }
            let entry = &mut self.tasks[t];
            let key = if let Some(key) = scanned {
                key
            } else if entry.roots.remaining > 0 {
                let grid = &entry.task.inner.grid;
                match entry.roots.next_cell(grid) {
                    Some(cell) => grid.linear(&cell),
                    None => {
                        // Cannot happen: `remaining` counts exactly the cells left.
                        tracing::error!(task = task_id, "root enumeration ended early");
                        entry.state.ready = entry.state.ready.saturating_sub(entry.roots.remaining);
                        entry.roots.remaining = 0;
                        continue;
                    }
                }
            } else {
                entry.queue.pop_front()?
            };
            entry.state.ready -= 1;
            entry.state.processing += 1;
            entry.processing.insert(key);
            let grid = entry.grid();
            let mut block = grid.block(&entry.task.inner.id, &grid.cell(key));
            #[cfg(feature = "zarr")]
            if let Some(mask) = &entry.task.inner.mask {
                match mask.selects(&block.write_roi) {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!(block = %block, "skipping block; its mask is empty");
                        entry.state.skipped += 1;
                        entry.state.masked += 1;
                        block.status = BlockStatus::Success;
                        self.release(t, key, block.block_id, Outcome::Skipped);
                        continue;
                    }
                    Err(e) => {
                        let message = format!("reading the mask: {e}");
                        tracing::warn!(block = %block, error = %message, "block failed: its mask cannot be read");
                        let failed_before = entry.state.failed;
                        block.status = BlockStatus::Failed;
                        self.release(t, key, block.block_id, Outcome::Failed(Some(&message)));
                        let last = self.tasks[t].state.failed > failed_before;
                        // Bounded for schedulers no runner drains (the counters still count).
                        if self.mask_failures.len() < MAX_MASK_FAILURES {
                            self.mask_failures.push(MaskFailure {
                                block,
                                message,
                                last,
                            });
                        }
                        continue;
                    }
                }
            }
            let skip = match &entry.task.inner.check {
                Some(check) => match catch_unwind(AssertUnwindSafe(|| check(&block))) {
                    Ok(done) => done,
                    Err(panic) => {
                        tracing::warn!(
                            block = %block,
                            error = %panic_message(panic.as_ref()),
                            "check function panicked; treating the block as not done"
                        );
                        false
                    }
                },
                None => false,
            };
            if skip {
                tracing::debug!(block = %block, "skipping block; already processed");
                entry.state.skipped += 1;
                block.status = BlockStatus::Success;
                self.release(t, key, block.block_id, Outcome::Skipped);
                continue;
            }
            entry.state.started = true;
            entry.state.update_pending();
            block.status = BlockStatus::Processing;
            return Some(block);
        }
    }

    /// Takes a block back. `Success` releases the blocks waiting for it; `Failed` retries it (at
    /// the back of the queue) until it has failed `max_retries + 1` times, then fails it and
    /// orphans everything downstream, across tasks. A task with a failure budget
    /// ([`TaskBuilder::max_consecutive_failures`](crate::TaskBuilder::max_consecutive_failures))
    /// that reaches it is abandoned, with the tasks downstream of it.
    ///
    /// A block of an abandoned task still counts as it comes back: completed, failed (its last
    /// attempt), or orphaned (a failed attempt that would have been retried).
    ///
    /// A block this scheduler did not hand out (or already took back), or one whose status is
    /// neither `Success` nor `Failed`, is ignored with a warning; use
    /// [`try_release_block`](Scheduler::try_release_block) to get an error instead.
    pub fn release_block(&mut self, block: Block) {
        if let Err(e) = self.try_release_block(block) {
            tracing::warn!("ignoring release: {e}");
        }
    }

    /// Like [`release_block`](Scheduler::release_block), but says why a release is refused.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRelease`] for an unknown task, a block that is not in flight, or a status
    /// other than `Success` or `Failed`.
    pub fn try_release_block(&mut self, block: Block) -> Result<(), Error> {
        self.try_release(block, None)
    }

    /// [`release_block`](Scheduler::release_block) of a successful block named by its task's
    /// position in [`tasks`](Scheduler::tasks), its grid index and its id: for runners whose
    /// workers report results without sending the block back.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRelease`] for a task position out of range or a block not in flight.
    pub(crate) fn release_success(
        &mut self,
        t: usize,
        grid_index: u64,
        block_id: u64,
    ) -> Result<(), Error> {
        let refuse = |reason: &str| Error::InvalidRelease {
            block: format!("task #{t}, block {block_id} (grid index {grid_index})"),
            reason: reason.to_owned(),
        };
        let Some(entry) = self.tasks.get(t) else {
            return Err(refuse("unknown task"));
        };
        if !entry.processing.contains(&grid_index) {
            return Err(refuse("the block is not in flight"));
        }
        self.release(t, grid_index, block_id, Outcome::Success);
        Ok(())
    }

    /// [`release_block`](Scheduler::release_block) of a failed attempt whose error is known: a
    /// failure that exhausts the task's failure budget names it in the reason.
    pub(crate) fn release_failed(&mut self, mut block: Block, message: &str) {
        block.status = BlockStatus::Failed;
        if let Err(e) = self.try_release(block, Some(message)) {
            tracing::warn!("ignoring release: {e}");
        }
    }

    fn try_release(&mut self, block: Block, message: Option<&str>) -> Result<(), Error> {
        let refuse = |reason: &str| Error::InvalidRelease {
            block: block.to_string(),
            reason: reason.to_owned(),
        };
        let Some(&t) = self.index.get(block.task_id()) else {
            return Err(refuse("unknown task"));
        };
        if !matches!(block.status, BlockStatus::Success | BlockStatus::Failed) {
            return Err(refuse(&format!(
                "status {:?}; expected Success or Failed",
                block.status
            )));
        }
        let key = block.grid_index;
        if !self.tasks[t].processing.contains(&key) {
            return Err(refuse("the block is not in flight"));
        }
        let outcome = match block.status {
            BlockStatus::Success => Outcome::Success,
            _ => Outcome::Failed(message),
        };
        self.release(t, key, block.block_id, outcome);
        Ok(())
    }

    /// The failed attempts of blocks whose mask could not be read since the last call, oldest
    /// first (the scheduler already released them as failed: retried or failed for good).
    pub(crate) fn take_mask_failures(&mut self) -> Vec<MaskFailure> {
        std::mem::take(&mut self.mask_failures)
    }

    /// Takes back a block that was handed out but never ran (a runner had queued it for a
    /// worker when its task was abandoned): it counts as orphaned if its task is abandoned, and
    /// is ready again otherwise.
    pub(crate) fn unacquire(&mut self, block: &Block) {
        let Some(&t) = self.index.get(block.task_id()) else {
            tracing::warn!(block = %block, "ignoring a returned block of an unknown task");
            return;
        };
        let key = block.grid_index;
        let entry = &mut self.tasks[t];
        if !entry.processing.remove(&key) {
            tracing::warn!(block = %block, "ignoring a returned block that is not in flight");
            return;
        }
        entry.state.processing -= 1;
        if entry.state.abandoned.is_some() {
            entry.retries.remove(&key);
            entry.state.orphaned += 1;
        } else {
            entry.queue.push_front(key);
            entry.state.ready += 1;
        }
        entry.state.update_pending();
    }

    fn release(&mut self, t: usize, key: u64, block_id: u64, outcome: Outcome<'_>) {
        let entry = &mut self.tasks[t];
        entry.processing.remove(&key);
        entry.state.processing -= 1;
        if entry.state.abandoned.is_some() {
            // Nothing runs again: the result counts, and releases nothing.
            match outcome {
                Outcome::Success | Outcome::Skipped => entry.state.completed += 1,
                Outcome::Failed(_) => {
                    let retries = entry.retries.remove(&key).unwrap_or(0);
                    if retries >= entry.task.inner.max_retries {
                        entry.state.failed += 1;
                    } else {
                        entry.state.orphaned += 1;
                    }
                }
            }
            entry.state.update_pending();
            return;
        }
        match outcome {
            Outcome::Success | Outcome::Skipped => {
                if let Outcome::Success = outcome {
                    entry.consecutive_failures = 0;
                }
                entry.state.completed += 1;
                entry.retries.remove(&key);
                entry.state.update_pending();
                self.mark_success(t, key);
            }
            Outcome::Failed(message) => {
                let retries = entry.retries.get(&key).copied().unwrap_or(0);
                if retries >= entry.task.inner.max_retries {
                    tracing::debug!(task = %entry.task.task_id(), key, "block failed permanently");
                    entry.retries.remove(&key);
                    entry.state.failed += 1;
                    entry.state.update_pending();
                    entry.consecutive_failures = entry.consecutive_failures.saturating_add(1);
                    let streak = entry.consecutive_failures;
                    if entry
                        .task
                        .inner
                        .max_consecutive_failures
                        .is_some_and(|n| streak >= n)
                    {
                        let last = match message {
                            Some(m) => format!("block {block_id}: {}", short_message(m)),
                            None => format!("block {block_id}"),
                        };
                        let reason = format!(
                            "abandoned after {streak} consecutive failed blocks (last: {last})"
                        );
                        self.abandon(t, reason);
                    } else {
                        self.mark_failure(t, key);
                    }
                } else {
                    entry.retries.insert(key, retries + 1);
                    entry.queue.push_back(key);
                    entry.state.ready += 1;
                    entry.state.update_pending();
                }
            }
        }
    }

    /// Abandons task `t` and every task downstream of it (transitively), except tasks whose
    /// blocks all completed:
    /// they hand out nothing more, and their blocks that did not complete or fail and are not
    /// in flight are orphaned. Per-block state of those tasks is dropped (the counters are
    /// computed, not enumerated).
    fn abandon(&mut self, t: usize, reason: String) {
        let root = Arc::clone(&self.tasks[t].task.inner.id);
        tracing::warn!(task = %root, %reason, "abandoning the task and the tasks downstream of it");
        self.abandon_one(t, reason);
        let mut frontier: Vec<usize> = self.tasks[t].downstream.clone();
        while let Some(d) = frontier.pop() {
            let state = &self.tasks[d].state;
            // A task all of whose blocks completed lost nothing (and does not hold back the
            // tasks below it).
            if state.abandoned.is_some() || state.completed >= state.total {
                continue;
            }
            self.abandon_one(d, format!("upstream task {root} was abandoned"));
            frontier.extend_from_slice(&self.tasks[d].downstream);
        }
    }

    fn abandon_one(&mut self, t: usize, reason: String) {
        let entry = &mut self.tasks[t];
        tracing::debug!(task = %entry.task.task_id(), %reason, "task abandoned");
        let s = &mut entry.state;
        s.abandoned = Some(reason);
        s.ready = 0;
        s.orphaned = s
            .total
            .saturating_sub(s.completed + s.failed + s.processing);
        s.update_pending();
        entry.queue.clear();
        entry.waiting = Waiting::default();
        entry.orphaned = FxHashSet::default();
        entry.roots = Roots::none();
        entry.scan = None;
        let processing = &entry.processing;
        entry.retries.retain(|k, _| processing.contains(k));
    }

    /// The downstream blocks of `(t, key)`, grouped by task (the task's own blocks first,
    /// then each downstream task's in order), unsorted within a group, leaving out blocks done
    /// by earlier runs.
    fn downstream(&self, t: usize, key: u64, out: &mut Vec<(usize, u64)>) {
        self.downstream_with(t, key, &mut Vec::new(), &mut Vec::new(), out);
    }

    /// [`downstream`](Self::downstream) with a buffer for the cells.
    fn downstream_with(
        &self,
        t: usize,
        key: u64,
        cells: &mut Vec<Cell>,
        keys: &mut Vec<u64>,
        out: &mut Vec<(usize, u64)>,
    ) {
        let entry = &self.tasks[t];
        let grid = entry.grid();
        if grid.num_levels() <= 1 && entry.downstream.is_empty() {
            return;
        }
        let cell = grid.cell(key);
        cells.clear();
        grid.intra_downstream(&cell, cells);
        push_keys(grid, t, &entry.done, cells, out);
        for &d in &entry.downstream {
            let down = &self.tasks[d];
            if down.done.is_all_done() {
                continue;
            }
            keys.clear();
            graph::downstream_keys(grid, &cell, down.grid(), keys);
            out.extend(
                keys.iter()
                    .filter(|&&k| !down.done.contains(k))
                    .map(|&k| (d, k)),
            );
        }
    }

    /// Number of blocks `(t, key)` waits for (leaving out blocks done by earlier runs).
    fn upstream_count(&self, t: usize, key: u64) -> u64 {
        let entry = &self.tasks[t];
        let grid = entry.grid();
        let cell = grid.cell(key);
        if !entry.filter_upstream {
            let mut n = grid.intra_upstream_count(&cell);
            for &u in &entry.upstream {
                n += graph::upstream_count(grid, &cell, self.tasks[u].grid());
            }
            return n;
        }
        self.pending_upstream(t, key, u64::MAX)
    }

    /// Counts the success of `(t, key)` against the blocks waiting for it and queues those it
    /// makes ready: grouped by task as [`downstream`](Self::downstream) lists them, each group
    /// by block id (daisy's order). Only the blocks that became ready are sorted (usually one
    /// of the up to 27 a block of a chained task releases).
    fn mark_success(&mut self, t: usize, key: u64) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let Scratch {
            cells,
            keys,
            down,
            ready,
        } = &mut scratch;
        down.clear();
        ready.clear();
        self.downstream_with(t, key, cells, keys, down);
        // (group, block id, task, key) of the blocks made ready; groups keep their order.
        let mut group = 0;
        let mut last_task = None;
        for &(d, dkey) in down.iter() {
            if last_task != Some(d) {
                group += 1;
                last_task = Some(d);
            }
            if self.tasks[d].state.abandoned.is_some() || self.tasks[d].orphaned.contains(&dkey) {
                continue;
            }
            // One lookup for a block already waiting (the common case).
            let unmet = match self.tasks[d].waiting.count_one(dkey) {
                Counted::StillWaiting => continue,
                Counted::Released => 1,
                Counted::Absent => self.upstream_count(d, dkey),
            };
            let entry = &mut self.tasks[d];
            if unmet <= 1 {
                let grid = entry.grid();
                let id = grid.block_id(&grid.cell(dkey)).unwrap_or(u64::MAX);
                ready.push((group, id, d, dkey));
            } else {
                entry.waiting.insert(dkey, unmet - 1);
            }
        }
        if ready.len() > 1 {
            ready.sort_unstable();
        }
        for &(_, _, d, dkey) in ready.iter() {
            let entry = &mut self.tasks[d];
            entry.queue.push_back(dkey);
            entry.state.ready += 1;
            entry.state.update_pending();
        }
        self.scratch = scratch;
    }

    fn mark_failure(&mut self, t: usize, key: u64) {
        let mut frontier: Vec<(usize, u64)> = Vec::new();
        self.downstream(t, key, &mut frontier);
        let mut next: Vec<(usize, u64)> = Vec::new();
        while let Some((d, dkey)) = frontier.pop() {
            let entry = &mut self.tasks[d];
            // An abandoned task counts its orphans already.
            if entry.state.abandoned.is_some() || !entry.orphaned.insert(dkey) {
                continue;
            }
            entry.waiting.remove(dkey);
            entry.state.orphaned += 1;
            entry.state.update_pending();
            self.downstream(d, dkey, &mut next);
            frontier.append(&mut next);
        }
    }
}

/// Appends the keys of `cells` of task `t`, leaving out blocks done by earlier runs.
fn push_keys(
    grid: &BlockGrid,
    t: usize,
    done: &DoneSet,
    cells: &mut Vec<Cell>,
    out: &mut Vec<(usize, u64)>,
) {
    out.extend(
        cells
            .drain(..)
            .map(|c| grid.linear(&c))
            .filter(|&k| !done.contains(k))
            .map(|k| (t, k)),
    );
}

/// The cells of a box given as `[lo, hi)` per axis, in row-major order.
fn box_cells(b: &[(i64, i64)]) -> impl Iterator<Item = Cell> + '_ {
    let first: Option<Cell> = b
        .iter()
        .all(|&(lo, hi)| lo < hi)
        .then(|| b.iter().map(|&(lo, _)| lo).collect());
    std::iter::successors(first, move |c| {
        let mut next = c.clone();
        for axis in (0..b.len()).rev() {
            next[axis] += 1;
            if next[axis] < b[axis].1 {
                return Some(next);
            }
            next[axis] = b[axis].0;
        }
        None
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod budget_tests;
