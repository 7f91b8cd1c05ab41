//! The task graph and the block-level dependencies between tasks.
//!
//! Tasks form a DAG (petgraph checks for cycles and gives a topological order). Blocks are never
//! stored: the blocks a downstream block waits for are computed arithmetically from the two
//! tasks' grids (daisy's `get_subgraph_blocks`), and so is the exact inverse (which downstream
//! blocks wait for a given upstream block).
//!
//! A block `d` of task `D` depends on every block `u` of an upstream task `U` whose write cell
//! meets `d`'s actual read ROI within `U`'s total write ROI. Per axis, this is a range of `U`
//! cells that depends only on `d`'s index in that axis, so the upstream set is a box of cells and
//! the downstream set of `u` is a product of per-axis lists.

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::blocks::BlockGrid;
use crate::blocks::grid::ceil_div;
#[cfg(test)]
use crate::blocks::grid::{Cell, product_into};
use crate::error::Error;
use crate::task::Task;

/// The tasks of a run in topological order (upstream before downstream), with their edges.
#[derive(Debug)]
pub(crate) struct TaskGraph {
    pub(crate) tasks: Vec<Task>,
    pub(crate) upstream: Vec<Vec<usize>>,
    pub(crate) downstream: Vec<Vec<usize>>,
}

impl TaskGraph {
    /// Collects the given tasks and every upstream task reachable from them, resolves upstream
    /// ids, and orders them topologically. Duplicate ids, unknown upstream ids, cycles and
    /// dimension mismatches between chained tasks are errors.
    pub(crate) fn new(tasks: &[Task]) -> Result<TaskGraph, Error> {
        let mut found: Vec<Task> = Vec::new();
        let mut by_id: HashMap<Arc<str>, usize> = HashMap::new();
        let mut stack: Vec<Task> = tasks.iter().rev().cloned().collect();
        // Depth-first discovery keeps the user's order for the given tasks.
        while let Some(task) = stack.pop() {
            match by_id.get(&task.inner.id) {
                Some(&i) => {
                    if !Arc::ptr_eq(&found[i].inner, &task.inner) {
                        return Err(Error::DuplicateTaskId {
                            task: task.task_id().to_owned(),
                        });
                    }
                }
                None => {
                    by_id.insert(Arc::clone(&task.inner.id), found.len());
                    for up in task.inner.upstream.iter().rev() {
                        stack.push(up.clone());
                    }
                    found.push(task);
                }
            }
        }

        let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(found.len(), found.len());
        let nodes: Vec<NodeIndex> = (0..found.len()).map(|i| graph.add_node(i)).collect();
        let mut ups: Vec<Vec<usize>> = vec![Vec::new(); found.len()];
        for (i, task) in found.iter().enumerate() {
            let mut names: Vec<&str> = task.inner.upstream.iter().map(|t| t.task_id()).collect();
            names.extend(task.inner.upstream_ids.iter().map(|s| s.as_str()));
            for name in names {
                let Some(&j) = by_id.get(name) else {
                    return Err(Error::UnknownUpstream {
                        task: task.task_id().to_owned(),
                        upstream: name.to_owned(),
                    });
                };
                if !ups[i].contains(&j) {
                    ups[i].push(j);
                    graph.add_edge(nodes[j], nodes[i], ());
                }
            }
        }
        if toposort(&graph, None).is_err() {
            {
                let mut cyclic: Vec<String> = tarjan_scc(&graph)
                    .into_iter()
                    .filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
                    .flatten()
                    .map(|n| found[graph[n]].task_id().to_owned())
                    .collect();
                cyclic.sort();
                return Err(Error::Cycle { tasks: cyclic });
            }
        }
        // Stable topological order: repeatedly take the first task (in discovery order) whose
        // upstream tasks are all placed. petgraph's order only proves acyclicity.
        let n = found.len();
        let mut placed = vec![false; n];
        let mut position = vec![0usize; n];
        let mut sorted: Vec<usize> = Vec::with_capacity(n);
        while sorted.len() < n {
            let next = (0..n)
                .find(|&i| !placed[i] && ups[i].iter().all(|&j| placed[j]))
                .ok_or_else(|| Error::Cycle { tasks: Vec::new() })?;
            placed[next] = true;
            position[next] = sorted.len();
            sorted.push(next);
        }
        let tasks: Vec<Task> = sorted.iter().map(|&i| found[i].clone()).collect();
        let upstream: Vec<Vec<usize>> = sorted
            .iter()
            .map(|&i| ups[i].iter().map(|&j| position[j]).collect())
            .collect();
        let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ups) in upstream.iter().enumerate() {
            for &j in ups {
                downstream[j].push(i);
            }
        }
        for (i, ups) in upstream.iter().enumerate() {
            for &j in ups {
                let (a, b) = (&tasks[i], &tasks[j]);
                if a.inner.grid.dims != b.inner.grid.dims {
                    return Err(Error::invalid(
                        a.task_id(),
                        format!(
                            "its ROIs have {} dims but its upstream task {:?} has {}",
                            a.inner.grid.dims,
                            b.task_id(),
                            b.inner.grid.dims
                        ),
                    ));
                }
            }
        }
        Ok(TaskGraph {
            tasks,
            upstream,
            downstream,
        })
    }
}

/// In axis `axis`, the range `[lo, hi)` of cells of the upstream grid `up` that a block of the
/// downstream grid `down` with index `j` in that axis depends on; `None` if there are none.
pub(crate) fn upstream_axis(
    down: &BlockGrid,
    j: i64,
    axis: usize,
    up: &BlockGrid,
) -> Option<(i64, i64)> {
    let (rb, re) = down.read_axis(j, axis);
    let tb = up.total_write.offset()[axis];
    let te = tb + up.total_write.shape()[axis];
    let (sb, se) = (rb.max(tb), re.min(te));
    if rb >= re || tb >= te || sb >= se {
        return None;
    }
    let ws = up.write_shape[axis];
    let lo = (sb - tb).div_euclid(ws).max(0);
    let hi = ceil_div(se - tb, ws).min(up.counts[axis]);
    (lo < hi).then_some((lo, hi))
}

/// The box of upstream cells (per axis `[lo, hi)`) that the block at `cell` of `down` waits for
/// in `up`; `None` if it waits for none.
pub(crate) fn upstream_box(
    down: &BlockGrid,
    cell: &[i64],
    up: &BlockGrid,
) -> Option<smallvec::SmallVec<[(i64, i64); 4]>> {
    (0..down.dims)
        .map(|axis| upstream_axis(down, cell[axis], axis, up))
        .collect()
}

/// Number of upstream cells in `up` that the block at `cell` of `down` waits for.
pub(crate) fn upstream_count(down: &BlockGrid, cell: &[i64], up: &BlockGrid) -> u64 {
    upstream_box(down, cell, up)
        .map(|b| b.iter().map(|&(lo, hi)| (hi - lo) as u64).product())
        .unwrap_or(0)
}

/// The upstream cells in `up` of the block at `cell` of `down`.
#[cfg(test)]
pub(crate) fn upstream_cells(down: &BlockGrid, cell: &[i64], up: &BlockGrid, out: &mut Vec<Cell>) {
    if let Some(b) = upstream_box(down, cell, up) {
        let per_dim: Vec<Vec<i64>> = b.iter().map(|&(lo, hi)| (lo..hi).collect()).collect();
        product_into(&per_dim, out);
    }
}

/// The cells of `down` that wait for the block at `cell` of `up`: the exact inverse of
/// [`upstream_cells`].
#[cfg(test)]
pub(crate) fn downstream_cells(
    up: &BlockGrid,
    cell: &[i64],
    down: &BlockGrid,
    out: &mut Vec<Cell>,
) {
    if let Some(per_dim) = downstream_axes(up, cell, down) {
        product_into(&per_dim, out);
    }
}

/// Per axis, the cells of `down` whose read extent meets `cell` of `up` (`None` if an axis
/// has none).
fn downstream_axes(up: &BlockGrid, cell: &[i64], down: &BlockGrid) -> Option<AxisLists> {
    let mut per_dim: AxisLists = smallvec::SmallVec::with_capacity(up.dims);
    for (axis, &k) in cell.iter().enumerate().take(up.dims) {
        let (lo, hi) = downstream_candidates(up, k, axis, down);
        let list: smallvec::SmallVec<[i64; 8]> = (lo..hi)
            .filter(|&j| upstream_axis(down, j, axis, up).is_some_and(|(a, b)| a <= k && k < b))
            .collect();
        if list.is_empty() {
            return None;
        }
        per_dim.push(list);
    }
    Some(per_dim)
}

/// Cell indices per axis.
type AxisLists = smallvec::SmallVec<[smallvec::SmallVec<[i64; 8]>; 4]>;

/// The dense row-major indices in `down` of [`downstream_cells`], in the same order,
/// appended to `out` without building the cells.
pub(crate) fn downstream_keys(up: &BlockGrid, cell: &[i64], down: &BlockGrid, out: &mut Vec<u64>) {
    let Some(per_dim) = downstream_axes(up, cell, down) else {
        return;
    };
    let dims = per_dim.len();
    let mut index: smallvec::SmallVec<[usize; 4]> = smallvec::smallvec![0; dims];
    loop {
        out.push(down.linear_of(per_dim.iter().zip(&index).map(|(v, &i)| v[i])));
        let mut axis = dims;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < per_dim[axis].len() {
                break;
            }
            index[axis] = 0;
        }
    }
}

/// A superset `[lo, hi)` of the cells of `down` (in one axis) whose unclipped read extent meets
/// the unclipped write cell `k` of `up`.
fn downstream_candidates(up: &BlockGrid, k: i64, axis: usize, down: &BlockGrid) -> (i64, i64) {
    let (a, b) = up.cell_bounds(k, axis);
    let tb = down.total.offset()[axis];
    cell_range(a, b, tb, down, axis)
}

/// The cells `[lo, hi)` of `down` (in one axis) whose unclipped read extent
/// `[tb + j·ws, tb + j·ws + rs)` meets `[a, b)`, clamped to `[0, counts]`.
///
/// The two tasks are validated separately, so differences between their coordinates (one near
/// `i64::MIN`, the other near `i64::MAX`) may not fit in an `i64`: they are taken in `i128`,
/// with `i64` division whenever the difference fits (the common case).
fn cell_range(a: i64, b: i64, tb: i64, down: &BlockGrid, axis: usize) -> (i64, i64) {
    let ws = down.write_shape[axis];
    let rs = down.read_shape[axis];
    let n = i128::from(down.counts[axis]);
    let lo = (floor_div_wide(i128::from(a) - i128::from(rs) - i128::from(tb), ws) + 1).clamp(0, n);
    let hi = ceil_div_wide(i128::from(b) - i128::from(tb), ws).clamp(0, n);
    // Both are within [0, counts], so they fit in an i64.
    (lo as i64, hi.max(lo) as i64)
}

/// `floor(x / d)` for `d > 0`, in `i64` when `x` fits.
#[inline]
fn floor_div_wide(x: i128, d: i64) -> i128 {
    match i64::try_from(x) {
        Ok(x) => i128::from(x.div_euclid(d)),
        Err(_) => x.div_euclid(i128::from(d)),
    }
}

/// `ceil(x / d)` for `d > 0`, in `i64` when `x` fits.
#[inline]
fn ceil_div_wide(x: i128, d: i64) -> i128 {
    -floor_div_wide(-x, d)
}

/// In axis `axis`, the interval of cells of `down` that wait for at least one block of `up`.
pub(crate) fn dependent_axis_interval(down: &BlockGrid, axis: usize, up: &BlockGrid) -> (i64, i64) {
    // Superset from the unclipped read extents against the upstream total write ROI, then
    // trimmed with the exact predicate (the true set is an interval: extents slide monotonically).
    let tb = up.total_write.offset()[axis];
    let te = tb + up.total_write.shape()[axis]; // checked to fit when `up` was built
    let dtb = down.total.offset()[axis];
    let (mut lo, mut hi) = cell_range(tb, te, dtb, down, axis);
    while lo < hi && upstream_axis(down, lo, axis, up).is_none() {
        lo += 1;
    }
    while lo < hi && upstream_axis(down, hi - 1, axis, up).is_none() {
        hi -= 1;
    }
    (lo, hi.max(lo))
}
