//! Per-block labelling and the neighbourhoods of the connectivities.

use std::fmt;

use ndarray::{Array3, ArrayD, ArrayViewD, IxDyn};
use ndarray_ndimage::Kernel3d;

use super::OpsError;

/// Which voxels touch: the neighbourhood of connected components.
///
/// | connectivity | 1-D | 2-D | 3-D |
/// |---|---|---|---|
/// | `Faces` | 2 | 4 | 6 |
/// | `Edges` | 2 | 8 | 18 |
/// | `Vertices` | 2 | 8 | 26 |
///
/// These are scipy's `generate_binary_structure(ndim, 1 / 2 / 3)`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Connectivity {
    /// Voxels sharing a face (6 neighbours in 3-D, 4 in 2-D); the default.
    #[default]
    Faces,
    /// Voxels sharing a face or an edge (18 neighbours in 3-D, 8 in 2-D).
    Edges,
    /// Voxels sharing a face, an edge or a corner (26 neighbours in 3-D, 8 in 2-D).
    Vertices,
}

impl fmt::Display for Connectivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Connectivity::Faces => "faces",
            Connectivity::Edges => "edges",
            Connectivity::Vertices => "vertices",
        })
    }
}

impl std::str::FromStr for Connectivity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "faces" => Ok(Connectivity::Faces),
            "edges" => Ok(Connectivity::Edges),
            "vertices" => Ok(Connectivity::Vertices),
            other => Err(format!(
                "unknown connectivity {other:?}: expected faces, edges or vertices"
            )),
        }
    }
}

/// The number of dimensions the labelling supports.
pub const MAX_DIMS: usize = 3;

pub(crate) fn check_dims(dims: usize) -> Result<(), OpsError> {
    if (1..=MAX_DIMS).contains(&dims) {
        Ok(())
    } else {
        Err(OpsError::Dimensions { dims })
    }
}

impl Connectivity {
    /// The largest number of non-zero components a neighbour offset may have.
    fn max_nonzero(self) -> usize {
        match self {
            Connectivity::Faces => 1,
            Connectivity::Edges => 2,
            Connectivity::Vertices => usize::MAX,
        }
    }

    /// Every neighbour offset in `dims` dimensions (each component -1, 0 or 1, not all 0), in
    /// row-major order.
    #[must_use]
    pub fn offsets(self, dims: usize) -> Vec<Vec<i8>> {
        let mut out = Vec::new();
        let count = 3usize.saturating_pow(u32::try_from(dims).unwrap_or(u32::MAX));
        for mut code in 0..count {
            let mut delta = vec![0i8; dims];
            for d in (0..dims).rev() {
                // `code % 3` is 0, 1 or 2.
                delta[d] = [-1, 0, 1][code % 3];
                code /= 3;
            }
            let nonzero = delta.iter().filter(|&&c| c != 0).count();
            if nonzero > 0 && nonzero <= self.max_nonzero() {
                out.push(delta);
            }
        }
        out
    }

    /// The neighbour offsets whose first non-zero component is -1: one of every pair
    /// `{delta, -delta}`. A voxel `p` and its neighbour `p + delta` in another block are
    /// compared by the block of `p` exactly when `delta` is one of these, so every adjacency
    /// between two blocks is found by exactly one of them.
    #[must_use]
    pub fn backward_offsets(self, dims: usize) -> Vec<Vec<i8>> {
        self.offsets(dims)
            .into_iter()
            .filter(|d| d.iter().find(|&&c| c != 0) == Some(&-1))
            .collect()
    }

    /// How many voxels of labels around a block [`block_pairs`](super::block_pairs) needs,
    /// `(below, above)` per axis: one voxel below on every axis and, with diagonal
    /// connectivity (`Edges`, `Vertices`, in 2-D or more), one voxel above on every axis but
    /// the first (a diagonal neighbour can be lower on one axis and higher on a later one).
    #[must_use]
    pub fn pair_context(self, dims: usize) -> (Vec<u64>, Vec<u64>) {
        let below = vec![1; dims];
        let mut above = vec![0; dims];
        for delta in self.backward_offsets(dims) {
            for (a, &c) in above.iter_mut().zip(&delta) {
                if c > 0 {
                    *a = 1;
                }
            }
        }
        (below, above)
    }

    fn kernel(self) -> Array3<bool> {
        match self {
            Connectivity::Faces => Kernel3d::Star.generate(),
            Connectivity::Edges => Kernel3d::Ball.generate(),
            Connectivity::Vertices => Kernel3d::Full.generate(),
        }
    }
}

/// Labels the connected components of a 1-, 2- or 3-D mask: `0` is background, the components
/// are numbered `1..=n` in row-major order of their first voxel. Returns the labels and `n`.
///
/// ```
/// use blockwise::ops::{Connectivity, label};
/// use ndarray::{ArrayD, IxDyn};
///
/// # fn main() -> Result<(), blockwise::ops::OpsError> {
/// // Two voxels touching at a corner.
/// let mask = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![true, false, false, true]).unwrap();
/// let (_, n) = label(mask.view(), Connectivity::Faces)?;
/// assert_eq!(n, 2);
/// let (labels, n) = label(mask.view(), Connectivity::Vertices)?;
/// assert_eq!((n, labels[[1, 1]]), (1, 1));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`OpsError::Dimensions`] for a mask with 0 or more than 3 dimensions.
pub fn label(
    mask: ArrayViewD<'_, bool>,
    connectivity: Connectivity,
) -> Result<(ArrayD<u64>, u64), OpsError> {
    let dims = mask.ndim();
    check_dims(dims)?;
    let shape = mask.shape().to_vec();
    if mask.is_empty() {
        return Ok((ArrayD::zeros(IxDyn(&shape)), 0));
    }
    // 1-D and 2-D masks get leading singleton axes: the middle plane of a 3×3×3 structure is
    // the 2-D structure of the same connectivity.
    let mut shape3 = [1usize; 3];
    shape3[3 - dims..].copy_from_slice(&shape);
    let mask3 = Array3::from_shape_vec(shape3, mask.iter().copied().collect())
        .map_err(|e| OpsError::Internal(format!("reshaping a mask of shape {shape:?}: {e}")))?;
    // u64 labels cannot overflow (a mask has far fewer than 2^64 voxels), the structure is
    // 3×3×3 and symmetric, and the mask is not empty: none of ndarray-ndimage's asserts fire.
    let (labels3, n) = ndarray_ndimage::label::<u64>(&mask3, &connectivity.kernel());
    let labels = labels3
        .into_shape_with_order(IxDyn(&shape))
        .map_err(|e| OpsError::Internal(format!("reshaping labels to {shape:?}: {e}")))?;
    let n = u64::try_from(n).map_err(|_| OpsError::Overflow {
        what: format!("{n} components"),
    })?;
    Ok((labels, n))
}

/// The first label id of the block with dense grid index `grid_index` when every (full) block
/// has `voxels_per_block` voxels: block `g` numbers its components `g * v + 1 ..= g * v + n`,
/// so ids are unique across blocks without coordination.
///
/// # Errors
///
/// [`OpsError::Overflow`] if `g * v + v` does not fit a `u64`; [`OpsError::Shape`] if
/// `voxels_per_block` is 0.
pub fn block_label_offset(grid_index: u64, voxels_per_block: u64) -> Result<u64, OpsError> {
    if voxels_per_block == 0 {
        return Err(OpsError::Shape(
            "voxels_per_block is 0; a block has at least one voxel".into(),
        ));
    }
    let offset = grid_index
        .checked_mul(voxels_per_block)
        .filter(|o| o.checked_add(voxels_per_block).is_some())
        .ok_or_else(|| OpsError::Overflow {
            what: format!(
                "label ids of block {grid_index} with {voxels_per_block} voxels per block exceed u64"
            ),
        })?;
    Ok(offset)
}

/// [`label`], with ids made unique across blocks: the block with dense grid index
/// `grid_index` gets `grid_index * voxels_per_block + local` (see [`block_label_offset`]);
/// background stays 0. Returns the labels and the number of components.
///
/// ```
/// use blockwise::ops::{Connectivity, label_block};
/// use ndarray::{ArrayD, IxDyn};
///
/// # fn main() -> Result<(), blockwise::ops::OpsError> {
/// let mask = ArrayD::from_shape_vec(IxDyn(&[4]), vec![true, false, true, true]).unwrap();
/// let (labels, n) = label_block(mask.view(), Connectivity::Faces, 3, 4)?;
/// assert_eq!((n, labels.as_slice()), (2, Some(&[13u64, 0, 14, 14][..])));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// As [`label`] and [`block_label_offset`], and [`OpsError::Shape`] if the mask has more
/// voxels than `voxels_per_block`.
pub fn label_block(
    mask: ArrayViewD<'_, bool>,
    connectivity: Connectivity,
    grid_index: u64,
    voxels_per_block: u64,
) -> Result<(ArrayD<u64>, u64), OpsError> {
    let offset = block_label_offset(grid_index, voxels_per_block)?;
    if mask.len() as u64 > voxels_per_block {
        return Err(OpsError::Shape(format!(
            "a block mask of shape {:?} has more than {voxels_per_block} voxels (voxels_per_block)",
            mask.shape()
        )));
    }
    let (mut labels, n) = label(mask, connectivity)?;
    if offset > 0 {
        // Cannot overflow: labels are at most n <= voxels_per_block, checked above.
        labels.mapv_inplace(|l| if l == 0 { 0 } else { offset + l });
    }
    Ok((labels, n))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn neighbour_counts() {
        let count = |c: Connectivity, d| c.offsets(d).len();
        assert_eq!([1, 2, 3].map(|d| count(Connectivity::Faces, d)), [2, 4, 6]);
        assert_eq!([1, 2, 3].map(|d| count(Connectivity::Edges, d)), [2, 8, 18]);
        assert_eq!(
            [1, 2, 3].map(|d| count(Connectivity::Vertices, d)),
            [2, 8, 26]
        );
        for c in [
            Connectivity::Faces,
            Connectivity::Edges,
            Connectivity::Vertices,
        ] {
            for d in 1..=3 {
                let back = c.backward_offsets(d);
                assert_eq!(back.len() * 2, c.offsets(d).len());
                for delta in &back {
                    let neg: Vec<i8> = delta.iter().map(|&x| -x).collect();
                    assert!(!back.contains(&neg));
                }
            }
        }
    }

    #[test]
    fn pair_context_by_connectivity() {
        assert_eq!(
            Connectivity::Faces.pair_context(3),
            (vec![1, 1, 1], vec![0, 0, 0])
        );
        assert_eq!(
            Connectivity::Edges.pair_context(3),
            (vec![1, 1, 1], vec![0, 1, 1])
        );
        assert_eq!(
            Connectivity::Vertices.pair_context(2),
            (vec![1, 1], vec![0, 1])
        );
        assert_eq!(Connectivity::Vertices.pair_context(1), (vec![1], vec![0]));
    }

    #[test]
    fn kernels_match_offsets() {
        for c in [
            Connectivity::Faces,
            Connectivity::Edges,
            Connectivity::Vertices,
        ] {
            let k = c.kernel();
            let offsets = c.offsets(3);
            for ((i, j, l), &on) in k.indexed_iter() {
                let delta = vec![i as i8 - 1, j as i8 - 1, l as i8 - 1];
                let centre = delta == [0, 0, 0];
                assert_eq!(on, centre || offsets.contains(&delta), "{c} {delta:?}");
            }
        }
    }

    #[test]
    fn bad_dims_and_empty() {
        let m = ArrayD::from_elem(IxDyn(&[2, 2, 2, 2]), true);
        assert!(matches!(
            label(m.view(), Connectivity::Faces),
            Err(OpsError::Dimensions { dims: 4 })
        ));
        let m = ArrayD::from_elem(IxDyn(&[]), true);
        assert!(matches!(
            label(m.view(), Connectivity::Faces),
            Err(OpsError::Dimensions { dims: 0 })
        ));
        for shape in [&[0usize][..], &[3, 0], &[0, 4, 5]] {
            let m = ArrayD::from_elem(IxDyn(shape), true);
            let (l, n) = label(m.view(), Connectivity::Vertices).unwrap();
            assert_eq!((l.shape(), n), (shape, 0));
        }
    }

    #[test]
    fn offsets_overflow_is_an_error() {
        assert!(matches!(
            block_label_offset(u64::MAX / 2, 3),
            Err(OpsError::Overflow { .. })
        ));
        assert!(matches!(block_label_offset(0, 0), Err(OpsError::Shape(_))));
        assert_eq!(block_label_offset(5, 8).unwrap(), 40);
        let m = ArrayD::from_elem(IxDyn(&[3]), true);
        assert!(matches!(
            label_block(m.view(), Connectivity::Faces, 0, 2),
            Err(OpsError::Shape(_))
        ));
    }

    #[test]
    fn labels_2d_by_connectivity() {
        // An X: diagonal only.
        let m = ArrayD::from_shape_vec(
            IxDyn(&[3, 3]),
            vec![true, false, true, false, true, false, true, false, true],
        )
        .unwrap();
        assert_eq!(label(m.view(), Connectivity::Faces).unwrap().1, 5);
        assert_eq!(label(m.view(), Connectivity::Edges).unwrap().1, 1);
        assert_eq!(label(m.view(), Connectivity::Vertices).unwrap().1, 1);
    }

    #[test]
    fn labels_3d_by_connectivity() {
        // (0,0,0) and (1,1,0) share an edge; (0,0,0) and (1,1,1) share only a corner.
        let mut m = ArrayD::from_elem(IxDyn(&[2, 2, 2]), false);
        m[[0, 0, 0]] = true;
        m[[1, 1, 0]] = true;
        assert_eq!(label(m.view(), Connectivity::Faces).unwrap().1, 2);
        assert_eq!(label(m.view(), Connectivity::Edges).unwrap().1, 1);
        let mut m = ArrayD::from_elem(IxDyn(&[2, 2, 2]), false);
        m[[0, 0, 0]] = true;
        m[[1, 1, 1]] = true;
        assert_eq!(label(m.view(), Connectivity::Edges).unwrap().1, 2);
        assert_eq!(label(m.view(), Connectivity::Vertices).unwrap().1, 1);
    }
}
