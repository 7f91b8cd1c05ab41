//! The block grid of one task: daisy's tiling, levels and conflict offsets, computed
//! arithmetically from the task geometry (daisy's `BlockwiseDependencyGraph`).
//!
//! # Coordinates
//!
//! A block is identified by its *cell* `k`: per axis, the number of write shapes its write ROI
//! is shifted from the start of the total write ROI `TW`. With `T` the total (read) ROI, `R`/`W`
//! the block read/write ROIs, `ws` the write shape and the contexts
//! `ctx_lo = W.begin - R.begin`, `ctx_hi = R.end - W.end`:
//!
//! * `TW = T.grow(-ctx_lo, -ctx_hi)`;
//! * write ROI of cell `k`: `(TW.begin + k·ws) + [0, ws)`, read ROI: `(T.begin + k·ws) + [0, R.shape)`;
//! * `Fit::Shrink` then clips the write ROI to `TW` and the read ROI to `T`;
//! * the block index (for the id) is `trunc((ctx_lo + k·ws) / ws)`.
//!
//! The cells of a task form the box `0 <= k < counts`, with `counts = floor(TW.shape / ws)` for
//! `Fit::Valid` and `ceil(TW.shape / ws)` otherwise (never negative: daisy 1.x reports `-1`
//! blocks for some degenerate tasks, see daisy.md §3.11).
//!
//! # Levels
//!
//! With `read_write_conflict`, blocks are grouped into levels so that blocks of one level never
//! read what another writes: the level stride `S` (in cells) is the smallest multiple of `ws` that
//! is at least `max(ctx_lo, ctx_hi) + ws`, clamped to the (rounded) total write shape so that no
//! level is empty. Level offsets are every `o` with `0 <= o < S`, in product order (last axis
//! fastest) reversed: level 0 has the largest offset. Level `l >= 1` depends on the nearest blocks
//! of level `l - 1` through the conflict offsets (per axis `{0}`, `{d, d + S}` or `{d - S, d}` with
//! `d = offset(l-1) - offset(l)`). Without conflicts there is one level and no dependencies.
//!
//! # Overflow
//!
//! [`BlockGrid::new`] computes the grid geometry in exact `i128` arithmetic and refuses a grid
//! in which any value the per-block methods compute would leave the `i64` range: the ROI ends,
//! the contexts, the total write ROI, the unclipped read and write extents and block index of
//! the first and last cell of every axis (every such value is monotone in the cell index, so the
//! two extremes bound all cells), and `counts + stride` for the conflict offsets. The per-block
//! methods ([`BlockGrid::read_axis`], [`BlockGrid::write_bounds`], [`BlockGrid::cell_bounds`],
//! [`BlockGrid::block_index`], the intra-task up/downstream cells) rely on that invariant and use
//! plain `i64` arithmetic, so the hot paths stay as cheap as before.

use crate::blocks::{Block, BlockStatus, Fit, cantor_number};
use crate::geometry::{Coordinate, Roi};
use std::sync::Arc;

/// A block's cell index per axis (non-negative, below `counts`).
pub(crate) type Cell = smallvec::SmallVec<[i64; 4]>;

/// The grid of one task. Everything is O(dims · levels) in size.
#[derive(Debug, Clone)]
pub(crate) struct BlockGrid {
    pub(crate) dims: usize,
    /// `T`, the total (read) ROI.
    pub(crate) total: Roi,
    /// `TW`, the total write ROI.
    pub(crate) total_write: Roi,
    pub(crate) read_shape: Coordinate,
    pub(crate) write_shape: Coordinate,
    pub(crate) ctx_lo: Coordinate,
    pub(crate) ctx_hi: Coordinate,
    pub(crate) fit: Fit,
    /// Cells per axis; the task has `prod(counts)` blocks.
    pub(crate) counts: Vec<i64>,
    pub(crate) num_blocks: u64,
    /// Level stride in cells per axis (all 1 without conflicts).
    pub(crate) stride: Vec<i64>,
    /// Level offsets in cells, level 0 first.
    pub(crate) level_offsets: Vec<Cell>,
    /// Conflict offsets in cells per level (empty for level 0 and without conflicts).
    pub(crate) level_conflicts: Vec<Vec<Cell>>,
}

/// Why a grid cannot be built (turned into `Error::InvalidTask` by the task builder).
pub(crate) type GridError = String;

impl BlockGrid {
    /// Builds the grid; `Err` carries a message naming the offending values.
    pub(crate) fn new(
        total: &Roi,
        read_roi: &Roi,
        write_roi: &Roi,
        fit: Fit,
        conflict: bool,
    ) -> Result<BlockGrid, GridError> {
        let dims = total.dims();
        if read_roi.dims() != dims || write_roi.dims() != dims {
            return Err(format!(
                "dimension mismatch: total ROI {total} has {dims} dims, read ROI {read_roi} has {}, write ROI {write_roi} has {}",
                read_roi.dims(),
                write_roi.dims()
            ));
        }
        if dims == 0 {
            return Err("ROIs have 0 dimensions".to_owned());
        }
        if let Some(d) = (0..dims).find(|&d| write_roi.shape()[d] <= 0) {
            return Err(format!(
                "write ROI {write_roi} has a non-positive shape in axis {d}"
            ));
        }
        if let Some(d) = (0..dims).find(|&d| read_roi.shape()[d] <= 0) {
            return Err(format!(
                "read ROI {read_roi} has a non-positive shape in axis {d}"
            ));
        }
        if let Some(d) = (0..dims).find(|&d| total.shape()[d] < 0) {
            return Err(format!(
                "total ROI {total} has a negative shape in axis {d}"
            ));
        }
        // Exact per-axis geometry; every value a block method computes is checked to fit below.
        let (ctx_lo, ctx_hi, total_write) = checked_geometry(total, read_roi, write_roi)?;
        if conflict && !read_roi.contains(write_roi) {
            return Err(format!(
                "with read_write_conflict the read ROI must contain the write ROI, but read ROI {read_roi} does not contain write ROI {write_roi}"
            ));
        }
        let ws = write_roi.shape().clone();
        if let Some(d) = (0..dims).find(|&d| ctx_lo[d] <= -ws[d]) {
            return Err(format!(
                "the write ROI {write_roi} starts at least one write shape before the read ROI {read_roi} in axis {d}, which would give negative block ids"
            ));
        }

        let tws = total_write.shape();
        let counts: Vec<i64> = (0..dims)
            .map(|d| {
                let (t, w) = (i128::from(tws[d]), i128::from(ws[d]));
                let n = match fit {
                    Fit::Valid => t.div_euclid(w),
                    Fit::Overhang | Fit::Shrink => -((-t).div_euclid(w)),
                };
                // 0 <= n <= max(tws, 0) + 1 <= i64::MAX since ws >= 1 and tws fits in an i64.
                n.clamp(0, i128::from(i64::MAX)) as i64
            })
            .collect();
        let mut num_blocks: u64 = 1;
        for &c in &counts {
            num_blocks = num_blocks.checked_mul(c as u64).ok_or_else(|| {
                format!("the number of blocks overflows u64 (cells per axis {counts:?})")
            })?;
        }

        for d in 0..dims {
            check_cell_extremes(
                d,
                counts[d],
                total,
                &total_write,
                read_roi.shape()[d],
                ws[d],
                ctx_lo[d],
            )?;
        }

        let mut grid = BlockGrid {
            dims,
            total: total.clone(),
            total_write,
            read_shape: read_roi.shape().clone(),
            write_shape: ws,
            ctx_lo,
            ctx_hi,
            fit,
            counts,
            num_blocks,
            stride: vec![1; dims],
            level_offsets: vec![Cell::from_elem(0, dims)],
            level_conflicts: vec![Vec::new()],
        };
        if num_blocks == 0 {
            grid.level_offsets.clear();
            grid.level_conflicts.clear();
            return Ok(grid);
        }
        // The largest id belongs to the last cell (the Cantor number grows with every index).
        let last: Cell = grid.counts.iter().map(|&c| c - 1).collect();
        if grid.block_id(&last).is_none() {
            return Err(format!(
                "block ids overflow u64 for a grid of {:?} blocks",
                grid.counts
            ));
        }
        if conflict {
            grid.compute_levels()?;
        }
        // Conflict offsets are within one stride of a cell, so `k ± c` must fit for every cell
        // `0 <= k < counts`; the scheduler's root lattice also steps one stride past the last cell.
        if let Some(d) = (0..dims).find(|&d| grid.counts[d].checked_add(grid.stride[d]).is_none()) {
            return Err(format!(
                "{} blocks in axis {d} plus the level stride of {} blocks overflow i64 (the limit is {})",
                grid.counts[d],
                grid.stride[d],
                i64::MAX
            ));
        }
        Ok(grid)
    }

    fn compute_levels(&mut self) -> Result<(), GridError> {
        let dims = self.dims;
        let ws = &self.write_shape;
        let tws = self.total_write.shape();
        // Stride in world units, as daisy computes it (exactly, in i128), then converted to cells.
        let stride: Vec<i64> = (0..dims)
            .map(|d| {
                let w = i128::from(ws[d]);
                let t = i128::from(tws[d]);
                let max_ctx = i128::from(self.ctx_lo[d].max(self.ctx_hi[d]));
                let min_stride = max_ctx + w;
                let s = ((min_stride - 1).div_euclid(w) + 1) * w;
                let rounded = match self.fit {
                    Fit::Valid => t - t.rem_euclid(w),
                    Fit::Overhang | Fit::Shrink => t + (-t).rem_euclid(w),
                };
                // At most `counts[d]` cells (the rounded total write shape over ws), so it fits.
                (s.min(rounded) / w).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
            })
            .collect();
        // num_blocks > 0 implies every clamped stride is at least one cell, and then the number
        // of levels is at most the number of blocks.
        let num_levels: usize = stride
            .iter()
            .try_fold(1usize, |n, &s| {
                n.checked_mul(usize::try_from(s.max(1)).ok()?)
            })
            .ok_or_else(|| {
                format!("the number of levels (product of the level strides {stride:?}) overflows")
            })?;
        let level_offsets: Vec<Cell> = (0..num_levels)
            .map(|level| Self::level_offset_of(&stride, num_levels - 1 - level))
            .collect();
        let mut level_conflicts = Vec::with_capacity(num_levels);
        level_conflicts.push(Vec::new());
        for level in 1..num_levels {
            let prev = &level_offsets[level - 1];
            let cur = &level_offsets[level];
            let per_dim: Vec<Vec<i64>> = (0..dims)
                .map(|d| {
                    let delta = prev[d] - cur[d];
                    let s = stride[d];
                    match delta.cmp(&0) {
                        std::cmp::Ordering::Less => vec![delta, delta + s],
                        std::cmp::Ordering::Equal => vec![0],
                        std::cmp::Ordering::Greater => vec![delta - s, delta],
                    }
                })
                .collect();
            level_conflicts.push(product(&per_dim));
        }
        self.stride = stride;
        self.level_offsets = level_offsets;
        self.level_conflicts = level_conflicts;
        Ok(())
    }

    /// The offset of the `p`-th vector in product order over `0..stride` (last axis fastest).
    fn level_offset_of(stride: &[i64], mut p: usize) -> Cell {
        let mut cell = Cell::from_elem(0, stride.len());
        for d in (0..stride.len()).rev() {
            let s = stride[d].max(1) as usize;
            cell[d] = (p % s) as i64;
            p /= s;
        }
        cell
    }

    pub(crate) fn num_levels(&self) -> usize {
        self.level_offsets.len()
    }

    /// The level of a cell.
    pub(crate) fn level(&self, cell: &[i64]) -> usize {
        let p = cell.iter().zip(&self.stride).fold(0usize, |p, (&k, &s)| {
            p * s as usize + k.rem_euclid(s) as usize
        });
        self.num_levels() - 1 - p
    }

    pub(crate) fn contains_cell(&self, cell: &[i64]) -> bool {
        cell.iter()
            .zip(&self.counts)
            .all(|(&k, &n)| k >= 0 && k < n)
    }

    /// Dense row-major index of a cell.
    pub(crate) fn linear(&self, cell: &[i64]) -> u64 {
        self.linear_of(cell.iter().copied())
    }

    /// [`linear`](Self::linear) of a cell given axis by axis.
    pub(crate) fn linear_of(&self, cell: impl Iterator<Item = i64>) -> u64 {
        cell.zip(&self.counts)
            .fold(0u64, |i, (k, &n)| i * n as u64 + k as u64)
    }

    /// The cell of a dense row-major index.
    pub(crate) fn cell(&self, mut index: u64) -> Cell {
        let mut cell = Cell::from_elem(0, self.dims);
        for d in (0..self.dims).rev() {
            let n = self.counts[d] as u64;
            cell[d] = (index % n) as i64;
            index /= n;
        }
        cell
    }

    /// daisy's block index of a cell: `trunc((ctx_lo + k·ws) / ws)`.
    ///
    /// Like every per-cell method below, this uses unchecked `i64` arithmetic: [`BlockGrid::new`]
    /// proved that it fits for every cell `0 <= k < counts` (see the module's "Overflow").
    pub(crate) fn block_index(&self, cell: &[i64]) -> Cell {
        (0..self.dims)
            .map(|d| (self.ctx_lo[d] + cell[d] * self.write_shape[d]) / self.write_shape[d])
            .collect()
    }

    /// daisy's block id of a cell.
    pub(crate) fn block_id(&self, cell: &[i64]) -> Option<u64> {
        cantor_number(&self.block_index(cell))
    }

    /// The actual (possibly shrunk) read ROI of a cell, per axis `[begin, end)`.
    pub(crate) fn read_bounds(&self, cell: &[i64], d: usize) -> (i64, i64) {
        self.read_axis(cell[d], d)
    }

    /// The actual (possibly shrunk) read extent `[begin, end)` in axis `d` of cells with index `j`
    /// in that axis.
    pub(crate) fn read_axis(&self, j: i64, d: usize) -> (i64, i64) {
        // Fits for 0 <= j < counts[d]: checked by `check_cell_extremes` in `new`.
        let b = self.total.offset()[d] + j * self.write_shape[d];
        let e = b + self.read_shape[d];
        if self.fit == Fit::Shrink {
            let tb = self.total.offset()[d];
            let te = tb + self.total.shape()[d];
            (b.max(tb), e.min(te))
        } else {
            (b, e)
        }
    }

    /// The actual (possibly shrunk) write ROI of a cell, per axis `[begin, end)`.
    pub(crate) fn write_bounds(&self, cell: &[i64], d: usize) -> (i64, i64) {
        // Fits for every cell of the grid: checked by `check_cell_extremes` in `new`.
        let b = self.total_write.offset()[d] + cell[d] * self.write_shape[d];
        let e = b + self.write_shape[d];
        if self.fit == Fit::Shrink {
            let tb = self.total_write.offset()[d];
            let te = tb + self.total_write.shape()[d];
            (b.max(tb), e.min(te))
        } else {
            (b, e)
        }
    }

    /// The unclipped write cell of a cell, per axis `[begin, end)`.
    pub(crate) fn cell_bounds(&self, cell_index: i64, d: usize) -> (i64, i64) {
        // Fits for 0 <= cell_index < counts[d]: checked by `check_cell_extremes` in `new`.
        let b = self.total_write.offset()[d] + cell_index * self.write_shape[d];
        (b, b + self.write_shape[d])
    }

    fn roi_from_bounds(&self, cell: &[i64], f: impl Fn(&[i64], usize) -> (i64, i64)) -> Roi {
        let mut offset = Coordinate::zeros(self.dims);
        let mut shape = Coordinate::zeros(self.dims);
        for d in 0..self.dims {
            let (b, e) = f(cell, d);
            offset[d] = b;
            shape[d] = e - b;
        }
        if shape.iter().any(|s| s <= 0) {
            // An empty (shrunk) ROI: keep its offset, zero its shape, like `Roi::intersect`.
            shape = Coordinate::zeros(self.dims);
        }
        Roi::new(offset, shape)
    }

    /// Materialises the block of a cell.
    pub(crate) fn block(&self, task_id: &Arc<str>, cell: &[i64]) -> Block {
        Block {
            task_id: Arc::clone(task_id),
            // Checked at construction: the last cell's id fits, and ids grow with the cell.
            block_id: self.block_id(cell).unwrap_or(u64::MAX),
            read_roi: self.roi_from_bounds(cell, |c, d| self.read_bounds(c, d)),
            write_roi: self.roi_from_bounds(cell, |c, d| self.write_bounds(c, d)),
            status: BlockStatus::Created,
            grid_index: self.linear(cell),
        }
    }

    /// Intra-task upstream cells of `cell` (daisy's `upstream`), unsorted.
    pub(crate) fn intra_upstream(&self, cell: &[i64], out: &mut Vec<Cell>) {
        if self.num_levels() <= 1 {
            return;
        }
        let level = self.level(cell);
        // `|c| <= stride` and `counts + stride` fits (checked in `new`).
        for c in &self.level_conflicts[level] {
            let n: Cell = cell.iter().zip(c).map(|(a, b)| a + b).collect();
            if self.contains_cell(&n) {
                out.push(n);
            }
        }
    }

    /// Intra-task downstream cells of `cell` (daisy's `downstream`), unsorted.
    pub(crate) fn intra_downstream(&self, cell: &[i64], out: &mut Vec<Cell>) {
        if self.num_levels() <= 1 {
            return;
        }
        let next = self.level(cell) + 1;
        if next >= self.num_levels() {
            return;
        }
        for c in &self.level_conflicts[next] {
            let n: Cell = cell.iter().zip(c).map(|(a, b)| a - b).collect();
            if self.contains_cell(&n) {
                out.push(n);
            }
        }
    }

    /// Number of intra-task upstream cells of `cell`.
    pub(crate) fn intra_upstream_count(&self, cell: &[i64]) -> u64 {
        if self.num_levels() <= 1 {
            return 0;
        }
        let level = self.level(cell);
        self.level_conflicts[level]
            .iter()
            .filter(|c| {
                cell.iter()
                    .zip(c.iter())
                    .zip(&self.counts)
                    .all(|((&a, &b), &n)| a + b >= 0 && a + b < n)
            })
            .count() as u64
    }

    /// Number of level-0 cells in axis `d`.
    pub(crate) fn level0_axis_count(&self, d: usize) -> u64 {
        let s = self.stride[d].max(1);
        let n = self.counts[d];
        if n < s { 0 } else { ((n - s) / s + 1) as u64 }
    }

    /// Number of level-0 blocks (daisy's roots of a root task).
    pub(crate) fn level0_count(&self) -> u64 {
        if self.num_blocks == 0 {
            return 0;
        }
        (0..self.dims).map(|d| self.level0_axis_count(d)).product()
    }
}

/// Narrows an exact value to `i64`, or explains which value of which axis overflows.
fn narrow(value: i128, axis: usize, what: impl FnOnce() -> String) -> Result<i64, GridError> {
    i64::try_from(value).map_err(|_| {
        format!(
            "{} is {value} in axis {axis}, which overflows i64 (the limits are {} and {})",
            what(),
            i64::MIN,
            i64::MAX
        )
    })
}

/// The contexts and the total write ROI, computed exactly; `Err` if any of them, or the end of
/// any given ROI, does not fit in an `i64`.
fn checked_geometry(
    total: &Roi,
    read_roi: &Roi,
    write_roi: &Roi,
) -> Result<(Coordinate, Coordinate, Roi), GridError> {
    for (name, roi) in [
        ("total ROI", total),
        ("read ROI", read_roi),
        ("write ROI", write_roi),
    ] {
        roi.try_end().map_err(|e| format!("the {name}: {e}"))?;
    }
    let dims = total.dims();
    let mut ctx_lo = Coordinate::zeros(dims);
    let mut ctx_hi = Coordinate::zeros(dims);
    let mut tw_offset = Coordinate::zeros(dims);
    let mut tw_shape = Coordinate::zeros(dims);
    for d in 0..dims {
        let w = |c: &Coordinate| i128::from(c[d]);
        let (to, ts) = (w(total.offset()), w(total.shape()));
        let (ro, rs) = (w(read_roi.offset()), w(read_roi.shape()));
        let (wo, wsh) = (w(write_roi.offset()), w(write_roi.shape()));
        let lo = wo - ro;
        let hi = (ro + rs) - (wo + wsh);
        ctx_lo[d] = narrow(lo, d, || {
            format!(
                "the context below the write ROI (write ROI {write_roi} begin - read ROI {read_roi} begin)"
            )
        })?;
        ctx_hi[d] = narrow(hi, d, || {
            format!(
                "the context above the write ROI (read ROI {read_roi} end - write ROI {write_roi} end)"
            )
        })?;
        let what = |part: &'static str| {
            move || {
                format!(
                    "the {part} of the total write ROI (total ROI {total} shrunk by the context)"
                )
            }
        };
        tw_offset[d] = narrow(to + lo, d, what("begin"))?;
        tw_shape[d] = narrow(ts - lo - hi, d, what("shape"))?;
        narrow(to + ts - hi, d, what("end"))?;
    }
    Ok((ctx_lo, ctx_hi, Roi::new(tw_offset, tw_shape)))
}

/// Checks that the block methods' arithmetic fits in an `i64` for every cell `0 <= j < count`
/// of axis `d`. Each intermediate value is monotone in `j`, so checking `j = 0` and
/// `j = count - 1` covers all cells. The unclipped extents are checked even for
/// [`Fit::Shrink`], whose blocks are clipped only after they are computed.
fn check_cell_extremes(
    d: usize,
    count: i64,
    total: &Roi,
    total_write: &Roi,
    read_shape: i64,
    write_shape: i64,
    ctx_lo: i64,
) -> Result<(), GridError> {
    if count <= 0 {
        return Ok(());
    }
    let (ws, rs) = (i128::from(write_shape), i128::from(read_shape));
    let (to, two) = (
        i128::from(total.offset()[d]),
        i128::from(total_write.offset()[d]),
    );
    for j in [0, i128::from(count) - 1] {
        let step = j * ws;
        let ordinal = if j == 0 { "first" } else { "last" };
        narrow(step, d, || {
            format!("the shift of the {ordinal} block ({j} write shapes of {write_shape})")
        })?;
        narrow(to + step, d, || {
            format!("the begin of the {ordinal} block's read ROI")
        })?;
        narrow(to + step + rs, d, || {
            format!("the end of the {ordinal} block's read ROI")
        })?;
        narrow(two + step, d, || {
            format!("the begin of the {ordinal} block's write ROI")
        })?;
        narrow(two + step + ws, d, || {
            format!("the end of the {ordinal} block's write ROI")
        })?;
        narrow(i128::from(ctx_lo) + step, d, || {
            format!("the block index numerator of the {ordinal} block")
        })?;
    }
    Ok(())
}

/// `ceil(a / b)` for `b > 0`.
pub(crate) fn ceil_div(a: i64, b: i64) -> i64 {
    -((-a).div_euclid(b))
}

/// The Cartesian product of per-axis value lists, last axis fastest.
pub(crate) fn product(per_dim: &[Vec<i64>]) -> Vec<Cell> {
    let mut out = Vec::new();
    product_into(per_dim, &mut out);
    out
}

/// Appends the cartesian product of `per_dim` to `out`, first axis outermost, last axis
/// fastest (row-major), without intermediate vectors.
pub(crate) fn product_into<V: AsRef<[i64]>>(per_dim: &[V], out: &mut Vec<Cell>) {
    if per_dim.iter().any(|v| v.as_ref().is_empty()) {
        return;
    }
    let mut index: smallvec::SmallVec<[usize; 4]> = smallvec::smallvec![0; per_dim.len()];
    loop {
        out.push(
            per_dim
                .iter()
                .zip(&index)
                .map(|(v, &i)| v.as_ref()[i])
                .collect(),
        );
        let mut axis = per_dim.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < per_dim[axis].as_ref().len() {
                break;
            }
            index[axis] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(total: Roi, read: Roi, write: Roi, fit: Fit, conflict: bool) -> BlockGrid {
        match BlockGrid::new(&total, &read, &write, fit, conflict) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    fn level_ids(g: &BlockGrid, level: usize) -> Vec<u64> {
        let off = &g.level_offsets[level];
        let per_dim: Vec<Vec<i64>> = (0..g.dims)
            .map(|d| {
                (off[d]..g.counts[d])
                    .step_by(g.stride[d] as usize)
                    .collect()
            })
            .collect();
        product(&per_dim)
            .iter()
            .map(|c| g.block_id(c).unwrap_or(u64::MAX))
            .collect()
    }

    #[test]
    fn one_d_basic() {
        let g = grid(
            Roi::new([0], [100]),
            Roi::new([0], [10]),
            Roi::new([1], [8]),
            Fit::Valid,
            true,
        );
        assert_eq!(g.num_blocks, 12);
        assert_eq!(g.stride, vec![2]);
        assert_eq!(level_ids(&g, 0), vec![1, 3, 5, 7, 9, 11]);
        assert_eq!(level_ids(&g, 1), vec![0, 2, 4, 6, 8, 10]);
        let o = grid(
            Roi::new([0], [100]),
            Roi::new([0], [10]),
            Roi::new([1], [8]),
            Fit::Overhang,
            true,
        );
        assert_eq!(o.num_blocks, 13);
        let last = o.block(&Arc::from("t"), &[12]);
        assert_eq!(last.block_id(), 12);
        assert_eq!(last.write_roi(), &Roi::new([97], [8]));
        assert_eq!(last.read_roi(), &Roi::new([96], [10]));
        let s = grid(
            Roi::new([0], [100]),
            Roi::new([0], [10]),
            Roi::new([1], [8]),
            Fit::Shrink,
            true,
        );
        let last = s.block(&Arc::from("t"), &[12]);
        assert_eq!(last.write_roi(), &Roi::new([97], [2]));
        assert_eq!(last.read_roi(), &Roi::new([96], [4]));
    }

    #[test]
    fn two_d_levels_and_conflicts() {
        let g = grid(
            Roi::new([0, 0], [6, 6]),
            Roi::new([0, 0], [3, 3]),
            Roi::new([1, 1], [1, 1]),
            Fit::Valid,
            true,
        );
        assert_eq!(g.num_blocks, 16);
        assert_eq!(level_ids(&g, 0), vec![12, 23, 25, 40]);
        assert_eq!(level_ids(&g, 1), vec![8, 17, 19, 32]);
        assert_eq!(level_ids(&g, 2), vec![7, 16, 18, 31]);
        assert_eq!(level_ids(&g, 3), vec![4, 11, 13, 24]);
        let c: Vec<Vec<i64>> = g.level_conflicts[2].iter().map(|c| c.to_vec()).collect();
        assert_eq!(c, vec![vec![-1, -1], vec![-1, 1], vec![1, -1], vec![1, 1]]);
    }

    #[test]
    fn counts_never_negative() {
        let g = grid(
            Roi::new([0], [5]),
            Roi::new([0], [20]),
            Roi::new([5], [10]),
            Fit::Valid,
            false,
        );
        assert_eq!(g.num_blocks, 0);
    }

    #[test]
    fn zero_levels_clamp() {
        let g = grid(
            Roi::new([0, 0], [10, 10]),
            Roi::new([0, 0], [9, 9]),
            Roi::new([4, 4], [1, 1]),
            Fit::Overhang,
            true,
        );
        assert_eq!(g.stride, vec![2, 2]);
        assert_eq!(g.num_levels(), 4);
        assert_eq!(g.num_blocks, 4);
    }

    #[test]
    fn linear_round_trip() {
        let g = grid(
            Roi::new([0, 0, 0], [30, 20, 10]),
            Roi::new([0, 0, 0], [4, 4, 4]),
            Roi::new([1, 1, 1], [2, 2, 2]),
            Fit::Valid,
            true,
        );
        for i in 0..g.num_blocks {
            assert_eq!(g.linear(&g.cell(i)), i);
        }
    }

    fn grid_err(total: Roi, read: Roi, write: Roi, fit: Fit, conflict: bool) -> String {
        match BlockGrid::new(&total, &read, &write, fit, conflict) {
            Ok(g) => panic!("expected an error, got {g:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn overflowing_ends_and_total_write_roi() {
        let r = |o: i64, s: i64| Roi::new([o], [s]);
        let e = grid_err(r(i64::MAX - 5, 100), r(0, 10), r(0, 10), Fit::Valid, true);
        assert!(e.starts_with("the total ROI: the end of the ROI"), "{e}");
        let e = grid_err(
            r(0, 100),
            r(i64::MAX, 10),
            r(i64::MAX, 1),
            Fit::Valid,
            false,
        );
        assert!(e.starts_with("the read ROI: the end of the ROI"), "{e}");
        // Context above overflows: read end near MAX, write end near MIN.
        let e = grid_err(
            r(0, 100),
            r(i64::MAX - 10, 10),
            r(i64::MIN, 1),
            Fit::Valid,
            false,
        );
        assert!(e.contains("the context below the write ROI"), "{e}");
        // The end of the total write ROI: total ending at MAX with a negative context above.
        let e = grid_err(r(i64::MAX - 10, 10), r(0, 1), r(0, 5), Fit::Valid, false);
        assert!(e.contains("the end of the total write ROI"), "{e}");
    }

    #[test]
    fn extreme_cells_are_checked_in_every_axis() {
        // Axis 1 overhangs past i64::MAX; axis 0 is harmless.
        let total = Roi::new([0, i64::MAX - 100], [100, 100]);
        let (read, write) = (Roi::new([0, 0], [10, 10]), Roi::new([0, 0], [7, 7]));
        let e = grid_err(
            total.clone(),
            read.clone(),
            write.clone(),
            Fit::Overhang,
            true,
        );
        assert_eq!(
            e,
            "the end of the last block's read ROI is 9223372036854775808 in axis 1, which overflows i64 (the limits are -9223372036854775808 and 9223372036854775807)"
        );
        let g = grid(total, read, write, Fit::Valid, true);
        let last = g.block(&Arc::from("t"), &[g.counts[0] - 1, g.counts[1] - 1]);
        assert_eq!(
            last.read_roi(),
            &Roi::new([84, i64::MAX - 100 + 84], [10, 10])
        );
    }

    #[test]
    fn counts_plus_stride_must_fit() {
        let one = Roi::new([0], [1]);
        let e = grid_err(
            Roi::new([0], [i64::MAX]),
            one.clone(),
            one.clone(),
            Fit::Valid,
            false,
        );
        assert!(
            e.contains("plus the level stride of 1 blocks overflow i64"),
            "{e}"
        );
        let g = grid(
            Roi::new([0], [i64::MAX - 1]),
            one.clone(),
            one,
            Fit::Valid,
            false,
        );
        assert_eq!(g.num_blocks, (i64::MAX - 1) as u64);
        let last = g.block(&Arc::from("t"), &[i64::MAX - 2]);
        assert_eq!(last.write_roi(), &Roi::new([i64::MAX - 2], [1]));
        assert_eq!(last.block_id(), (i64::MAX - 2) as u64);
    }

    /// An offset near 0, near `i64::MAX` or near `i64::MIN`.
    fn edge() -> impl Strategy<Value = i64> {
        prop_oneof![
            -40i64..40,
            (0i64..70).prop_map(|x| i64::MAX - x),
            (0i64..70).prop_map(|x| i64::MIN + x),
        ]
    }

    /// One axis: total offset and shape, read offset and shape, context below, write shape.
    type Axis = (i64, i64, i64, i64, i64, i64);
    /// Per cell of one axis: read extent, write extent, block index.
    type Extents = ((i128, i128), (i128, i128), i128);

    fn axis() -> impl Strategy<Value = Axis> {
        (edge(), 0i64..40, edge(), 1i64..12).prop_flat_map(|(to, ts, ro, rs)| {
            (0..rs)
                .prop_flat_map(move |lo| (1..=rs - lo).prop_map(move |ws| (to, ts, ro, rs, lo, ws)))
        })
    }

    fn fit_strategy() -> impl Strategy<Value = Fit> {
        prop_oneof![Just(Fit::Valid), Just(Fit::Overhang), Just(Fit::Shrink)]
    }

    use proptest::prelude::*;

    proptest! {
        /// Tasks near the i64 limits either build to a grid whose every block ROI is exact
        /// (computed independently in i128), or are refused, and refused exactly when some
        /// value of the task or of one of its blocks does not fit in an i64.
        #[test]
        fn near_the_limits_blocks_are_exact_or_refused(
            axes in prop::collection::vec(axis(), 1..=2),
            fit in fit_strategy(),
            conflict in any::<bool>(),
        ) {
            let fits = |v: i128| i64::try_from(v).is_ok();
            // Write ROIs whose offset itself would not fit cannot even be constructed.
            prop_assume!(axes.iter().all(|a| fits(i128::from(a.2) + i128::from(a.4))));
            let dims = axes.len();
            let col = |f: &dyn Fn(&Axis) -> i64| -> Vec<i64> {
                axes.iter().map(f).collect()
            };
            let total = Roi::new(col(&|a| a.0), col(&|a| a.1));
            let read = Roi::new(col(&|a| a.2), col(&|a| a.3));
            let write = Roi::new(col(&|a| a.2 + a.4), col(&|a| a.5));

            // The oracle, in i128.
            let mut ok = true;
            let mut counts = Vec::new();
            let mut axis_blocks: Vec<Vec<Extents>> = Vec::new();
            for &(to, ts, ro, rs, lo, ws) in &axes {
                let (to, ts, ro, rs, lo, ws) = (
                    i128::from(to), i128::from(ts), i128::from(ro),
                    i128::from(rs), i128::from(lo), i128::from(ws),
                );
                let wo = ro + lo;
                let hi = (ro + rs) - (wo + ws);
                let (two, tws) = (to + lo, ts - lo - hi);
                ok &= fits(to + ts) && fits(ro + rs) && fits(wo + ws);
                ok &= fits(two) && fits(tws) && fits(two + tws);
                let n = match fit {
                    Fit::Valid => tws.div_euclid(ws),
                    _ => -((-tws).div_euclid(ws)),
                }
                .max(0);
                let mut list = Vec::new();
                for j in 0..n {
                    let (rb, re) = (to + j * ws, to + j * ws + rs);
                    let (wb, we) = (two + j * ws, two + j * ws + ws);
                    ok &= fits(rb) && fits(re) && fits(wb) && fits(we);
                    let (read, write) = if fit == Fit::Shrink {
                        ((rb.max(to), re.min(to + ts)), (wb.max(two), we.min(two + tws)))
                    } else {
                        ((rb, re), (wb, we))
                    };
                    list.push((read, write, (lo + j * ws) / ws));
                }
                counts.push(n);
                axis_blocks.push(list);
            }
            let built = BlockGrid::new(&total, &read, &write, fit, conflict);
            prop_assert_eq!(built.is_ok(), ok, "{:?}", built.as_ref().err());
            let Ok(g) = built else {
                let e = built.err().unwrap_or_default();
                prop_assert!(e.contains("overflow"), "{}", e);
                return Ok(());
            };
            let num: i128 = counts.iter().product();
            prop_assert_eq!(i128::from(g.num_blocks), num);
            let to_roi = |bounds: Vec<(i128, i128)>| -> Option<Roi> {
                let offset: Vec<i64> = bounds.iter().map(|b| i64::try_from(b.0).ok()).collect::<Option<_>>()?;
                let mut shape: Vec<i64> = bounds.iter().map(|b| i64::try_from(b.1 - b.0).ok()).collect::<Option<_>>()?;
                if shape.iter().any(|&s| s <= 0) {
                    shape = vec![0; shape.len()];
                }
                Some(Roi::new(offset, shape))
            };
            let id = Arc::from("t");
            for i in 0..g.num_blocks {
                let cell = g.cell(i);
                let block = g.block(&id, &cell);
                let per: Vec<_> = (0..dims).map(|d| axis_blocks[d][cell[d] as usize]).collect();
                prop_assert_eq!(Some(block.read_roi().clone()), to_roi(per.iter().map(|p| p.0).collect()));
                prop_assert_eq!(Some(block.write_roi().clone()), to_roi(per.iter().map(|p| p.1).collect()));
                let index: Vec<i64> = per.iter().map(|p| p.2 as i64).collect();
                prop_assert_eq!(Some(block.block_id()), cantor_number(&index));
            }
        }
    }
}
