//! A task's own block dependency graph, as public queries on [`Task`]: the roots, the blocks of
//! each level in the order the scheduler hands them out, the read/write-conflict neighbours of a
//! block, and the blocks under a ROI (daisy's `BlockwiseDependencyGraph`). Nothing is stored:
//! every answer is computed from the task's grid.

use crate::blocks::Block;
use crate::blocks::grid::{Cell, product};
use crate::geometry::Roi;
use crate::task::Task;

impl Task {
    /// The cell of a block of this task; `None` for another task's block or an index past the
    /// last block.
    fn cell_of(&self, block: &Block) -> Option<Cell> {
        (block.task_id() == self.task_id() && block.grid_index() < self.num_blocks())
            .then(|| self.inner.grid.cell(block.grid_index()))
    }

    fn blocks_of(&self, mut cells: Vec<Cell>) -> Vec<Block> {
        let grid = &self.inner.grid;
        let mut blocks: Vec<Block> = cells
            .drain(..)
            .map(|c| grid.block(&self.inner.id, &c))
            .collect();
        blocks.sort_by_key(Block::block_id);
        blocks
    }

    /// The number of blocks of level 0: the blocks that wait for no other block of this task
    /// (daisy's `num_roots` of a task without upstream tasks).
    ///
    /// ```
    /// use blockwise::{Roi, Task};
    /// let t = Task::builder("t", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([1], [8]))
    ///     .process(|_| Ok(()))
    ///     .build()?;
    /// assert_eq!((t.num_roots(), t.num_levels(), t.num_blocks()), (6, 2, 12));
    /// # Ok::<(), blockwise::Error>(())
    /// ```
    #[must_use]
    pub fn num_roots(&self) -> u64 {
        self.inner.grid.level0_count()
    }

    /// The level of a block of this task (0 for roots), or `None` if the block is not this
    /// task's.
    #[must_use]
    pub fn block_level(&self, block: &Block) -> Option<usize> {
        self.cell_of(block).map(|c| self.inner.grid.level(&c))
    }

    /// The blocks of one level, lazily, in the order daisy enumerates them (product order of
    /// the level's grid positions, last axis fastest); level 0's order is the order in which the
    /// scheduler hands out a root task's roots. Empty past the last level. The iterator owns
    /// what it needs and does not borrow the task.
    ///
    /// ```
    /// use blockwise::{Roi, Task};
    /// let t = Task::builder("t", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([1], [8]))
    ///     .process(|_| Ok(()))
    ///     .build()?;
    /// let ids: Vec<u64> = t.level_blocks(0).map(|b| b.block_id()).collect();
    /// assert_eq!(ids, [1, 3, 5, 7, 9, 11]);
    /// # Ok::<(), blockwise::Error>(())
    /// ```
    pub fn level_blocks(&self, level: usize) -> impl Iterator<Item = Block> + Send + use<> {
        // Owns a copy of the grid (O(dims · levels)), so the iterator outlives `self`.
        let grid = self.inner.grid.clone();
        let id = std::sync::Arc::clone(&self.inner.id);
        let per_dim: Vec<Vec<i64>> = match grid.level_offsets.get(level) {
            Some(offset) if grid.num_blocks > 0 => (0..grid.dims)
                .map(|d| {
                    let s = grid.stride[d].max(1) as usize;
                    (offset[d]..grid.counts[d]).step_by(s).collect()
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut index = vec![0usize; per_dim.len()];
        let mut done = per_dim.is_empty() || per_dim.iter().any(Vec::is_empty);
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let cell: Cell = index.iter().zip(&per_dim).map(|(&i, v)| v[i]).collect();
            // Advance the multi-radix counter, last axis fastest.
            done = true;
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < per_dim[d].len() {
                    done = false;
                    break;
                }
                index[d] = 0;
            }
            Some(grid.block(&id, &cell))
        })
    }

    /// The blocks of this task that `block` waits for because of read/write conflicts
    /// (daisy's intra-task `upstream`), sorted by block id; empty for roots and for blocks of
    /// other tasks.
    #[must_use]
    pub fn upstream_blocks(&self, block: &Block) -> Vec<Block> {
        let mut cells = Vec::new();
        if let Some(c) = self.cell_of(block) {
            self.inner.grid.intra_upstream(&c, &mut cells);
        }
        self.blocks_of(cells)
    }

    /// The blocks of this task that wait for `block` because of read/write conflicts (daisy's
    /// intra-task `downstream`), sorted by block id; the exact inverse of
    /// [`Task::upstream_blocks`].
    #[must_use]
    pub fn downstream_blocks(&self, block: &Block) -> Vec<Block> {
        let mut cells = Vec::new();
        if let Some(c) = self.cell_of(block) {
            self.inner.grid.intra_downstream(&c, &mut cells);
        }
        self.blocks_of(cells)
    }

    /// The blocks whose write cell meets `roi` inside the total write ROI (daisy's
    /// `get_subgraph_blocks`), in grid order. A ROI of other dimensions, or one outside the
    /// total write ROI, gives none.
    ///
    /// ```
    /// use blockwise::{Roi, Task};
    /// let t = Task::builder("t", Roi::new([0, 0], [16, 16]), Roi::new([0, 0], [4, 4]), Roi::new([1, 1], [2, 2]))
    ///     .process(|_| Ok(()))
    ///     .build()?;
    /// let offsets: Vec<Vec<i64>> = t
    ///     .blocks_in(&Roi::new([6, 6], [3, 3]))
    ///     .iter()
    ///     .map(|b| b.write_roi().offset().iter().collect())
    ///     .collect();
    /// assert_eq!(offsets, [[5, 5], [5, 7], [7, 5], [7, 7]]);
    /// # Ok::<(), blockwise::Error>(())
    /// ```
    #[must_use]
    pub fn blocks_in(&self, roi: &Roi) -> Vec<Block> {
        let grid = &self.inner.grid;
        if roi.dims() != grid.dims || grid.num_blocks == 0 {
            return Vec::new();
        }
        let mut per_dim: Vec<Vec<i64>> = Vec::with_capacity(grid.dims);
        for d in 0..grid.dims {
            let tb = i128::from(grid.total_write.offset()[d]);
            let te = tb + i128::from(grid.total_write.shape()[d]);
            let rb = i128::from(roi.offset()[d]);
            let re = rb + i128::from(roi.shape()[d]);
            let (b, e) = (rb.max(tb), re.min(te));
            if b >= e {
                return Vec::new();
            }
            let ws = i128::from(grid.write_shape[d]);
            let n = i128::from(grid.counts[d]);
            let lo = (b - tb).div_euclid(ws).clamp(0, n);
            let hi = (-(-(e - tb)).div_euclid(ws)).clamp(0, n);
            if lo >= hi {
                return Vec::new();
            }
            // Both are within [0, counts], so they fit in an i64.
            per_dim.push((lo as i64..hi as i64).collect());
        }
        product(&per_dim)
            .iter()
            .map(|c| grid.block(&self.inner.id, c))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use crate::{Roi, Task};

    fn task(total: Roi, read: Roi, write: Roi, conflict: bool) -> Task {
        Task::builder("t", total, read, write)
            .read_write_conflict(conflict)
            .process(|_| Ok(()))
            .build()
            .expect("a valid task")
    }

    fn ids(blocks: &[crate::Block]) -> Vec<u64> {
        blocks.iter().map(crate::Block::block_id).collect()
    }

    #[test]
    fn levels_of_the_2d_wavefront() {
        // daisy.md §3.10, task_2d: the levels in the scheduler's order.
        let t = task(
            Roi::new([0, 0], [6, 6]),
            Roi::new([0, 0], [3, 3]),
            Roi::new([1, 1], [1, 1]),
            true,
        );
        let levels: Vec<Vec<u64>> = (0..t.num_levels())
            .map(|l| t.level_blocks(l).map(|b| b.block_id()).collect())
            .collect();
        assert_eq!(
            levels,
            [
                vec![12, 23, 25, 40],
                vec![8, 17, 19, 32],
                vec![7, 16, 18, 31],
                vec![4, 11, 13, 24]
            ]
        );
        assert_eq!(t.level_blocks(4).count(), 0);
        assert_eq!(t.num_roots(), 4);
        // Every block is in exactly one level, and its level is the one it was listed in.
        for l in 0..t.num_levels() {
            for b in t.level_blocks(l) {
                assert_eq!(t.block_level(&b), Some(l));
            }
        }
    }

    #[test]
    fn upstream_and_downstream_are_inverse() {
        let t = task(
            Roi::new([0, 0], [6, 6]),
            Roi::new([0, 0], [3, 3]),
            Roi::new([1, 1], [1, 1]),
            true,
        );
        let all: Vec<crate::Block> = (0..t.num_blocks()).filter_map(|i| t.block(i)).collect();
        for b in &all {
            for u in t.upstream_blocks(b) {
                assert!(ids(&t.downstream_blocks(&u)).contains(&b.block_id()));
                assert_eq!(t.block_level(&u).map(|l| l + 1), t.block_level(b));
            }
        }
        // Roots wait for nothing; level 1 of the 2D case waits for its (0, ±1) neighbours.
        let root = t.level_blocks(0).next().expect("a root");
        assert!(t.upstream_blocks(&root).is_empty());
        let b8 = t.level_blocks(1).next().expect("a level-1 block");
        assert_eq!(b8.block_id(), 8);
        assert_eq!(ids(&t.upstream_blocks(&b8)), [12]);
        // Another task's block has no neighbours here.
        let other = task(
            Roi::new([0, 0], [6, 6]),
            Roi::new([0, 0], [3, 3]),
            Roi::new([1, 1], [1, 1]),
            false,
        );
        assert_eq!(other.num_levels(), 1);
        assert!(other.upstream_blocks(&b8).is_empty());
        assert!(other.downstream_blocks(&root).is_empty());
    }

    #[test]
    fn blocks_in_a_roi() {
        // daisy.md §12 case 22.
        let t = task(
            Roi::new([0, 0], [16, 16]),
            Roi::new([0, 0], [4, 4]),
            Roi::new([1, 1], [2, 2]),
            true,
        );
        assert_eq!(t.blocks_in(&Roi::new([6, 6], [3, 3])).len(), 4);
        assert!(t.blocks_in(&Roi::new([100, 100], [3, 3])).is_empty());
        assert!(t.blocks_in(&Roi::new([6], [3])).is_empty());
        assert_eq!(
            t.blocks_in(&Roi::new([-100, -100], [1000, 1000])).len() as u64,
            t.num_blocks()
        );
    }
}
