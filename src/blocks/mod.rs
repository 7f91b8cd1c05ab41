//! Blocks: what a worker processes, and the lazy block grid of one task.
//!
//! A task tiles its total ROI with blocks on a regular grid (daisy's rules, see [`Fit`]). Every
//! block has a *grid position* `k` (one non-negative cell index per axis), from which its ROIs,
//! its daisy-compatible id ([`Block::block_id`]) and its level are computed on demand: nothing
//! proportional to the number of blocks is ever stored.

mod cantor;
mod deps;
pub(crate) mod grid;

use std::fmt;
use std::sync::Arc;

use crate::geometry::Roi;

pub use cantor::cantor_number;
pub(crate) use grid::BlockGrid;

/// How a task's blocks treat the upper boundary of the total ROI when the write ROI does not
/// tile it exactly (daisy's `fit`).
///
/// ```text
///     |---------------------------|     total ROI
/// Valid:
///     |rrrr|wwwwww|rrrr|                block 1
///            |rrrr|wwwwww|rrrr|         block 2
///                                       no further block
/// Overhang:
///                   |rrrr|wwwwww|rrrr|  block 3 (reads and writes past the total ROI)
/// Shrink:
///                   |rrrr|www|rrrr|     block 3 (ROIs clipped to the total ROI)
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Only blocks whose read ROI lies entirely inside the total ROI (the default).
    #[default]
    Valid,
    /// Every block whose write ROI starts inside the total write ROI; ROIs may leave the
    /// total ROI (the process function must handle reads past the volume, e.g. with a fill value).
    Overhang,
    /// Like [`Fit::Overhang`], but boundary blocks are shrunk so that their read ROI stays inside
    /// the total ROI and their write ROI inside the total write ROI.
    Shrink,
}

impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fit::Valid => "valid",
            Fit::Overhang => "overhang",
            Fit::Shrink => "shrink",
        })
    }
}

impl std::str::FromStr for Fit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "valid" => Ok(Fit::Valid),
            "overhang" => Ok(Fit::Overhang),
            "shrink" => Ok(Fit::Shrink),
            other => Err(format!(
                "unknown fit {other:?}: expected valid, overhang or shrink"
            )),
        }
    }
}

/// The processing state of a block (daisy's `BlockStatus`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum BlockStatus {
    /// Not yet handed out.
    #[default]
    Created,
    /// Handed out to a worker.
    Processing,
    /// Processed successfully.
    Success,
    /// Processing failed.
    Failed,
}

/// One block of a task: a write ROI the worker may write, and a read ROI around it (the write
/// ROI plus context) that it may read.
///
/// ```
/// use blockwise::{Roi, Scheduler, Task};
///
/// # fn main() -> Result<(), blockwise::Error> {
/// let task = Task::builder("square", Roi::new([0], [4]), Roi::new([0], [3]), Roi::new([1], [1]))
///     .build()?;
/// let mut scheduler = Scheduler::new(&[task])?;
/// let block = scheduler.acquire_block("square").expect("a ready block");
/// assert_eq!(block.block_id(), 2);
/// assert_eq!(block.to_string(), "square/2 with read ROI [1:4] (3) and write ROI [2:3] (1)");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub(crate) task_id: Arc<str>,
    pub(crate) block_id: u64,
    pub(crate) read_roi: Roi,
    pub(crate) write_roi: Roi,
    pub(crate) status: BlockStatus,
    /// Dense row-major index of the block's grid position within its task.
    pub(crate) grid_index: u64,
}

impl Block {
    /// Creates a block by hand (for tests and custom runners). Blocks handed to a
    /// [`Scheduler`](crate::Scheduler) must be the ones it handed out.
    pub fn new(
        task_id: &str,
        block_id: u64,
        grid_index: u64,
        read_roi: Roi,
        write_roi: Roi,
    ) -> Block {
        Block {
            task_id: Arc::from(task_id),
            block_id,
            read_roi,
            write_roi,
            status: BlockStatus::Created,
            grid_index,
        }
    }

    /// The id of the task this block belongs to.
    #[must_use]
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// daisy's integer block id: the Cantor number of the block index
    /// `(write_roi.offset - total_roi.offset) / write_shape` (see [`cantor_number`]).
    #[must_use]
    pub fn block_id(&self) -> u64 {
        self.block_id
    }

    /// The dense row-major index of the block in its task's grid, from 0 to
    /// `task.num_blocks() - 1`. Unlike [`Block::block_id`] these indices have no gaps, which makes
    /// them the right key for done-markers and per-block arrays.
    #[must_use]
    pub fn grid_index(&self) -> u64 {
        self.grid_index
    }

    /// The region this block may read (its write ROI plus context).
    #[must_use]
    pub fn read_roi(&self) -> &Roi {
        &self.read_roi
    }

    /// The region this block writes.
    #[must_use]
    pub fn write_roi(&self) -> &Roi {
        &self.write_roi
    }

    /// The block's status.
    #[must_use]
    pub fn status(&self) -> BlockStatus {
        self.status
    }

    /// Sets the block's status; a scheduler reads it on release.
    pub fn set_status(&mut self, status: BlockStatus) {
        self.status = status;
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} with read ROI {} and write ROI {}",
            self.task_id, self.block_id, self.read_roi, self.write_roi
        )
    }
}
