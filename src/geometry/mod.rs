//! n-dimensional integer geometry: [`Coordinate`] points/vectors and
//! axis-aligned [`Roi`] boxes.
//!
//! The semantics follow Python's `funlib.geometry` (the geometry layer used by
//! daisy), with one deliberate difference: there are no unbounded (`None`)
//! axes. Every axis of every coordinate and ROI is a concrete `i64`.
//!
//! Operators (`+ - * /`) treat mismatched dimensions and division by zero as
//! programming errors and panic with a descriptive message; every fallible
//! operation also has a `try_` twin returning [`GeometryError`].
//!
//! ```
//! use blockwise::{Coordinate, Roi, Snap};
//!
//! let total = Roi::new([0, 0], [100, 100]);
//! let block = Roi::new([90, 90], [20, 20]);
//! assert_eq!(total.intersect(&block), Roi::new([90, 90], [10, 10]));
//!
//! let voxel = Coordinate::new([4, 4]);
//! let snapped = Roi::new([3, 7], [10, 10]).snap_to_grid(&voxel, Snap::Grow);
//! assert_eq!(snapped, Roi::new([0, 4], [16, 16]));
//! ```

mod coordinate;
mod roi;
#[cfg(test)]
mod tests;

pub use coordinate::Coordinate;
pub use roi::{Roi, Snap};

/// Error returned by the fallible (`try_`) geometry operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// Two operands have a different number of dimensions.
    #[error("dimension mismatch: {left} has {} dims, {right} has {}", left.dims(), right.dims())]
    DimsMismatch {
        /// The left-hand operand.
        left: Coordinate,
        /// The right-hand operand.
        right: Coordinate,
    },
    /// A divisor (or voxel size) has a zero element.
    #[error("division by zero: divisor {divisor} has a zero element")]
    DivisionByZero {
        /// The offending divisor.
        divisor: Coordinate,
    },
    /// An arithmetic operation overflowed `i64`.
    #[error("arithmetic overflow in {op}")]
    Overflow {
        /// Name of the operation that overflowed (for example `"add"`).
        op: &'static str,
    },
    /// The end (`offset + shape`) of a ROI lies outside the `i64` range.
    #[error(
        "the end of the ROI with offset {offset} and shape {shape} overflows i64 in axis {axis} ({} + {} is outside [{}, {}])",
        offset[*axis],
        shape[*axis],
        i64::MIN,
        i64::MAX
    )]
    RoiEndOverflow {
        /// The ROI's offset.
        offset: Coordinate,
        /// The ROI's shape.
        shape: Coordinate,
        /// The first axis whose end overflows.
        axis: usize,
    },
    /// A voxel size has a zero or negative element.
    #[error("voxel size {voxel_size} is not positive in axis {axis} ({})", voxel_size[*axis])]
    NonPositiveVoxelSize {
        /// The offending voxel size.
        voxel_size: Coordinate,
        /// The first axis whose voxel size is not positive.
        axis: usize,
    },
    /// A world value (a ROI's offset or shape) is not a multiple of the voxel size.
    #[error(
        "the ROI's {what} {value} in axis {axis} is not a multiple of the voxel size {voxel_size}"
    )]
    NotVoxelMultiple {
        /// `"offset"` or `"shape"`.
        what: &'static str,
        /// The first offending axis.
        axis: usize,
        /// The value in that axis.
        value: i64,
        /// The voxel size in that axis.
        voxel_size: i64,
    },
}
