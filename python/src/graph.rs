//! `_BlockGraph`: one task's block dependency graph (daisy's `BlockwiseDependencyGraph`), on
//! the core crate's `Task::level_blocks`, `upstream_blocks`, `downstream_blocks` and
//! `blocks_in`.

use blockwise::{Block, Task};
use pyo3::prelude::*;

use crate::errors::ConfigError;

use crate::geometry::roi;
use crate::task::{PyBlock, PyTask};

fn wrap(blocks: Vec<Block>) -> Vec<PyBlock> {
    blocks.into_iter().map(|inner| PyBlock { inner }).collect()
}

/// The block graph of one task: its levels, the read/write-conflict neighbours of a block and
/// the blocks under a ROI. Dependencies on upstream tasks are not part of it.
#[pyclass(module = "blockwise._native", name = "_BlockGraph", frozen)]
pub struct PyBlockGraph {
    task: Task,
}

#[pymethods]
impl PyBlockGraph {
    #[new]
    fn new(task: PyRef<'_, PyTask>) -> Self {
        PyBlockGraph {
            task: task.inner.clone(),
        }
    }

    /// The number of blocks.
    #[getter]
    fn num_blocks(&self) -> u64 {
        self.task.num_blocks()
    }

    /// The number of levels.
    #[getter]
    fn num_levels(&self) -> usize {
        self.task.num_levels()
    }

    /// The number of level-0 blocks.
    fn num_roots(&self) -> u64 {
        self.task.num_roots()
    }

    /// The blocks of a level, lazily, in the scheduler's order (level 0: the roots).
    fn level_blocks(&self, level: usize) -> PyLevelBlocks {
        PyLevelBlocks {
            iter: std::sync::Mutex::new(Box::new(self.task.level_blocks(level))),
        }
    }

    /// The level of a block of this task, or None.
    fn block_level(&self, block: PyRef<'_, PyBlock>) -> Option<usize> {
        self.task.block_level(&block.inner)
    }

    /// The blocks `block` waits for (read/write conflicts), sorted by block id.
    fn upstream(&self, block: PyRef<'_, PyBlock>) -> Vec<PyBlock> {
        wrap(self.task.upstream_blocks(&block.inner))
    }

    /// The blocks that wait for `block` (read/write conflicts), sorted by block id.
    fn downstream(&self, block: PyRef<'_, PyBlock>) -> Vec<PyBlock> {
        wrap(self.task.downstream_blocks(&block.inner))
    }

    /// The blocks whose write cell meets `roi` inside the total write ROI, in grid order.
    fn blocks_in(&self, roi_: &Bound<'_, PyAny>) -> PyResult<Vec<PyBlock>> {
        let r = roi(roi_, "roi")?;
        Ok(wrap(self.task.blocks_in(&r)))
    }
}

/// An iterator over the blocks of one level.
#[pyclass(module = "blockwise._native", name = "_LevelBlocks")]
pub struct PyLevelBlocks {
    iter: std::sync::Mutex<Box<dyn Iterator<Item = Block> + Send>>,
}

#[pymethods]
impl PyLevelBlocks {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self) -> Option<PyBlock> {
        let mut it = self
            .iter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        it.next().map(|inner| PyBlock { inner })
    }
}

/// daisy's block id of a block index (the Cantor number of its per-axis index).
#[pyfunction]
pub fn _cantor_number(index: Vec<i64>) -> PyResult<u64> {
    if index.is_empty() || index.iter().any(|&i| i < 0) {
        return Err(ConfigError::new_err(format!(
            "a block index must have at least one axis and no negative entries, got {index:?}"
        )));
    }
    blockwise::blocks::cantor_number(&index).ok_or_else(|| {
        ConfigError::new_err(format!("the block id of index {index:?} overflows 64 bits"))
    })
}
