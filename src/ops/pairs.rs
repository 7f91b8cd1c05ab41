//! Label pairs that touch across block boundaries.

use std::ops::Range;

use ndarray::{ArrayViewD, Slice, Zip};

use super::OpsError;
use super::label::{Connectivity, check_dims};

/// The label pairs `(a, b)`, `a < b`, that touch across the lower boundaries of one block.
///
/// `labels` holds the block's labels with the context of
/// [`Connectivity::pair_context`] around them: its shape is `block_shape + below + above`, and
/// the block occupies `below .. below + block_shape` (voxels past the volume are 0,
/// background). For every voxel `p` of the block and every neighbour offset `delta` of
/// [`Connectivity::backward_offsets`] such that `p + delta` lies outside the block, the labels
/// of `p` and `p + delta` are paired when both are foreground and differ. Since the
/// neighbourhood is symmetric, every adjacency between two blocks is seen by exactly one of
/// them, so running this on every block finds every cross-block pair once.
///
/// The result is sorted and without duplicates.
///
/// ```
/// use blockwise::ops::{Connectivity, block_pairs};
/// use ndarray::{ArrayD, IxDyn};
///
/// # fn main() -> Result<(), blockwise::ops::OpsError> {
/// // A 1-D block of 2 voxels at [1, 3) with one voxel of context below: label 5 touches 9.
/// let labels = ArrayD::from_shape_vec(IxDyn(&[3]), vec![5u64, 9, 9]).unwrap();
/// assert_eq!(block_pairs(labels.view(), &[2], Connectivity::Faces)?, vec![(5, 9)]);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`OpsError::Dimensions`] for 0 or more than 3 dimensions, [`OpsError::Shape`] if `labels`
/// does not have the shape above.
pub fn block_pairs(
    labels: ArrayViewD<'_, u64>,
    block_shape: &[usize],
    connectivity: Connectivity,
) -> Result<Vec<(u64, u64)>, OpsError> {
    let dims = block_shape.len();
    check_dims(dims)?;
    let (below, above) = connectivity.pair_context(dims);
    let want: Vec<usize> = (0..dims)
        .map(|d| block_shape[d] as u64 + below[d] + above[d])
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .collect();
    if labels.shape() != want.as_slice() {
        return Err(OpsError::Shape(format!(
            "labels of shape {:?} for a block of shape {block_shape:?}: expected {want:?} \
             (the block plus {below:?} voxels below and {above:?} above)",
            labels.shape()
        )));
    }
    let mut pairs = Vec::new();
    if block_shape.contains(&0) {
        return Ok(pairs);
    }
    for delta in connectivity.backward_offsets(dims) {
        for slab in outside_slabs(block_shape, &delta) {
            let own = labels.slice_each_axis(|ax| {
                let d = ax.axis.index();
                let lo = below[d] as usize;
                Slice::from(lo + slab[d].start..lo + slab[d].end)
            });
            let other = labels.slice_each_axis(|ax| {
                let d = ax.axis.index();
                // `below` is 1, and `delta` -1 only on axes where the slab starts at 0 or
                // later: the shifted slab stays inside `labels`.
                let lo = (below[d] as isize + isize::from(delta[d])) as usize;
                Slice::from(lo + slab[d].start..lo + slab[d].end)
            });
            Zip::from(&own).and(&other).for_each(|&a, &b| {
                if a != 0 && b != 0 && a != b {
                    pairs.push((a.min(b), a.max(b)));
                }
            });
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    Ok(pairs)
}

/// The voxels `p` of a block of `shape` whose neighbour `p + delta` lies outside the block, as
/// disjoint boxes (block coordinates): for each axis `d` with `delta[d] != 0`, the box with
/// `p[d]` on the face `delta` points through, the axes before `d` inside (their neighbour
/// stays in the block) and the axes after `d` free.
fn outside_slabs(shape: &[usize], delta: &[i8]) -> Vec<Vec<Range<usize>>> {
    let dims = shape.len();
    let inner: Vec<Range<usize>> = (0..dims)
        .map(|d| match delta[d] {
            -1 => 1.min(shape[d])..shape[d],
            1 => 0..shape[d].saturating_sub(1),
            _ => 0..shape[d],
        })
        .collect();
    let mut slabs = Vec::new();
    for d in 0..dims {
        let face = match delta[d] {
            -1 => 0..1,
            1 => shape[d] - 1..shape[d],
            _ => continue,
        };
        let slab: Vec<Range<usize>> = (0..dims)
            .map(|j| match j.cmp(&d) {
                std::cmp::Ordering::Less => inner[j].clone(),
                std::cmp::Ordering::Equal => face.clone(),
                std::cmp::Ordering::Greater => 0..shape[j],
            })
            .collect();
        if slab.iter().all(|r| r.start < r.end) {
            slabs.push(slab);
        }
    }
    slabs
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn slabs_cover_exactly_the_outside() {
        for shape in [vec![1usize, 1, 1], vec![3, 1, 4], vec![2, 3, 2], vec![5]] {
            let dims = shape.len();
            for delta in Connectivity::Vertices.offsets(dims) {
                let slabs = outside_slabs(&shape, &delta);
                let mut seen = ArrayD::from_elem(IxDyn(&shape), 0u8);
                for s in &slabs {
                    seen.slice_each_axis_mut(|ax| Slice::from(s[ax.axis.index()].clone()))
                        .mapv_inplace(|c| c + 1);
                }
                for (p, &c) in seen.indexed_iter() {
                    let outside = (0..dims).any(|d| {
                        let q = p[d] as isize + isize::from(delta[d]);
                        q < 0 || q >= shape[d] as isize
                    });
                    assert_eq!(c, u8::from(outside), "{shape:?} {delta:?} at {p:?}");
                }
            }
        }
    }

    #[test]
    fn diagonal_pairs_need_the_upper_context() {
        // 2-D block 1×1 at (1, 1) in a 3×3 context (1 below, 1 above on axis 1 only → 2×3).
        let labels = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1u64, 0, 2, 0, 7, 0]).unwrap();
        assert_eq!(
            block_pairs(labels.view(), &[1, 1], Connectivity::Vertices).unwrap(),
            vec![(1, 7), (2, 7)]
        );
        let faces = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1u64, 3, 4, 7]).unwrap();
        assert_eq!(
            block_pairs(faces.view(), &[1, 1], Connectivity::Faces).unwrap(),
            vec![(3, 7), (4, 7)]
        );
        assert!(matches!(
            block_pairs(faces.view(), &[1, 1], Connectivity::Edges),
            Err(OpsError::Shape(_))
        ));
    }
}
