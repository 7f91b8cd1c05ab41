//! Ready-made operations on volumes: connected components across blocks, and downsampling
//! ([`downsample`], [`Downsample`]) for resolution pyramids.
//!
//! Connected components of a thresholded volume cannot be computed block by block alone: a
//! component that crosses blocks gets a label in each. The building blocks here fix that
//! without coordination between blocks:
//!
//! 1. [`label_block`]: label each block's mask with ids unique across blocks (block `g` with
//!    `v` voxels per block numbers its components from `g * v + 1`);
//! 2. [`block_pairs`]: each block pairs its labels with those just below its lower faces (and
//!    corners, for diagonal [`Connectivity`]): every adjacency between two blocks is found by
//!    exactly one of them;
//! 3. [`UnionFind`]: merge the pairs into components, represented by their smallest label,
//!    giving a [`MergeTable`];
//! 4. [`MergeTable::relabel`]: map each block's labels to their component's.
//!
//! The result is the partition a whole-volume labelling gives (component ids differ: they are
//! not consecutive). [`ConnectedComponents`] runs all of it on zarr arrays as blockwise tasks.
//!
//! ```
//! use blockwise::ops::{Connectivity, UnionFind, block_pairs, label_block};
//! use ndarray::{ArrayD, IxDyn, s};
//!
//! # fn main() -> Result<(), blockwise::ops::OpsError> {
//! // A 1-D volume of 6 voxels in two blocks of 3: one component crosses the boundary.
//! let mask = [false, true, true, true, false, true];
//! let mut labels = ArrayD::zeros(IxDyn(&[6]));
//! for g in 0..2 {
//!     let m = ArrayD::from_shape_vec(IxDyn(&[3]), mask[3 * g..3 * g + 3].to_vec()).unwrap();
//!     let (l, _) = label_block(m.view(), Connectivity::Faces, g as u64, 3)?;
//!     labels.slice_mut(s![3 * g..3 * g + 3]).assign(&l);
//! }
//! assert_eq!(labels.as_slice(), Some(&[0u64, 1, 1, 4, 0, 5][..]));
//! // Block 1 with one voxel of context below (Connectivity::pair_context).
//! let pairs = block_pairs(labels.slice(s![2..6]).into_dyn(), &[3], Connectivity::Faces)?;
//! assert_eq!(pairs, vec![(1, 4)]);
//! let mut uf = UnionFind::new();
//! for (a, b) in pairs {
//!     uf.union(a, b);
//! }
//! uf.merge_table().relabel(labels.view_mut());
//! assert_eq!(labels.as_slice(), Some(&[0u64, 1, 1, 1, 0, 5][..]));
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "zarr")]
mod components;
mod downsample;
#[cfg(feature = "zarr")]
mod files;
mod label;
mod pairs;
#[cfg(feature = "zarr")]
mod pyramid;
mod union_find;

#[cfg(feature = "zarr")]
pub use components::{ComponentsReport, ConnectedComponents};
pub use downsample::{Downsample, Downsampled, downsample};
pub use label::{Connectivity, MAX_DIMS, block_label_offset, label, label_block};
pub use pairs::block_pairs;
#[cfg(feature = "zarr")]
pub use pyramid::Pyramid;
pub use union_find::{MergeTable, UnionFind};

/// Errors of the operations in [`crate::ops`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The volume has a number of dimensions the operation does not support.
    #[error("connected components support 1 to {MAX_DIMS} dimensions, not {dims}")]
    Dimensions {
        /// The number of dimensions given.
        dims: usize,
    },
    /// Label ids do not fit a `u64`.
    #[error("overflow: {what}")]
    Overflow {
        /// What overflowed, with the values.
        what: String,
    },
    /// An array does not have the shape the operation needs.
    #[error("shape: {0}")]
    Shape(String),
    /// A downsampling factor that does not fit the array: the wrong number of axes, a 0, or
    /// a window too large to count.
    #[error("downsampling factor {factor:?} {reason}")]
    Factor {
        /// The factor given, per axis.
        factor: Vec<u64>,
        /// What is wrong with it.
        reason: String,
    },
    /// An internal inconsistency (a bug); the message says where.
    #[error("internal error: {0}")]
    Internal(String),
}
