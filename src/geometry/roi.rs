//! `Roi`: an axis-aligned box, `offset + shape`, end exclusive.

use std::fmt;
use std::ops::{Add, Div, Mul, Sub};

use super::{Coordinate, GeometryError};

/// How [`Roi::snap_to_grid`] rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Snap {
    /// Begin rounded down, end rounded up: the result contains the input.
    #[default]
    Grow,
    /// Begin rounded up, end rounded down: the result lies inside the input.
    Shrink,
    /// Begin and end rounded to the nearest multiple (halves down).
    Closest,
}

/// An axis-aligned box `offset + shape` (end exclusive), in any number of dimensions.
///
/// ```
/// use blockwise::Roi;
///
/// let a = Roi::new([0, 0, 0], [100, 100, 100]);
/// let b = Roi::new([50, 50, 50], [100, 100, 100]);
/// assert_eq!(a.intersect(&b), Roi::new([50, 50, 50], [50, 50, 50]));
/// assert_eq!(a.union(&b), Roi::new([0, 0, 0], [150, 150, 150]));
/// // touching boxes do not intersect
/// assert!(!Roi::new([0], [10]).intersects(&Roi::new([10], [5])));
/// assert_eq!(Roi::new([0, 0], [10, 10]).to_string(), "[0:10, 0:10] (10, 10)");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Roi {
    offset: Coordinate,
    shape: Coordinate,
}

impl Roi {
    /// A ROI from its offset (begin) and shape.
    ///
    /// # Panics
    ///
    /// If offset and shape have different dims; see [`Roi::try_new`].
    #[must_use]
    pub fn new(offset: impl Into<Coordinate>, shape: impl Into<Coordinate>) -> Roi {
        match Roi::try_new(offset, shape) {
            Ok(r) => r,
            Err(e) => panic!("invalid Roi: {e}"),
        }
    }

    /// A ROI from its offset and shape.
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`] if offset and shape have different dims.
    pub fn try_new(
        offset: impl Into<Coordinate>,
        shape: impl Into<Coordinate>,
    ) -> Result<Roi, GeometryError> {
        let (offset, shape) = (offset.into(), shape.into());
        if offset.dims() != shape.dims() {
            return Err(GeometryError::DimsMismatch {
                left: offset,
                right: shape,
            });
        }
        Ok(Roi { offset, shape })
    }

    /// A ROI from its begin and (exclusive) end.
    ///
    /// # Panics
    ///
    /// On a dims mismatch.
    #[must_use]
    pub fn from_bounds(begin: impl Into<Coordinate>, end: impl Into<Coordinate>) -> Roi {
        let begin = begin.into();
        let shape = end.into() - &begin;
        Roi::new(begin, shape)
    }

    /// The offset (begin).
    #[must_use]
    #[inline]
    pub fn offset(&self) -> &Coordinate {
        &self.offset
    }

    /// The shape.
    #[must_use]
    #[inline]
    pub fn shape(&self) -> &Coordinate {
        &self.shape
    }

    /// The begin (same as the offset).
    #[must_use]
    #[inline]
    pub fn begin(&self) -> &Coordinate {
        &self.offset
    }

    /// The exclusive end, `offset + shape`.
    #[must_use]
    pub fn end(&self) -> Coordinate {
        &self.offset + &self.shape
    }

    /// The number of dimensions.
    #[must_use]
    #[inline]
    pub fn dims(&self) -> usize {
        self.offset.dims()
    }

    /// The product of the shape (0 or negative for degenerate shapes, like funlib).
    #[must_use]
    pub fn size(&self) -> i64 {
        self.shape.iter().product()
    }

    /// Whether any shape element is 0 or negative.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shape.iter().any(|s| s <= 0)
    }

    /// `offset + shape / 2`, with the truncating `/`.
    #[must_use]
    pub fn center(&self) -> Coordinate {
        &self.offset + &(&self.shape / 2)
    }

    /// Whether the ROIs overlap; touching ROIs and empty ROIs do not.
    ///
    /// # Panics
    ///
    /// On a dims mismatch.
    #[must_use]
    pub fn intersects(&self, other: &Roi) -> bool {
        self.assert_dims(other, "intersects");
        if self.is_empty() || other.is_empty() {
            return false;
        }
        (0..self.dims()).all(|d| {
            let (b1, e1) = (self.offset[d], self.offset[d] + self.shape[d]);
            let (b2, e2) = (other.offset[d], other.offset[d] + other.shape[d]);
            b1 < e2 && b2 < e1
        })
    }

    /// The overlap of two ROIs. Disjoint ROIs give an empty ROI with shape zero and offset the
    /// element-wise maximum of the begins (funlib gives an offset of `None`, which Rust does not
    /// have).
    ///
    /// # Panics
    ///
    /// On a dims mismatch; see [`Roi::try_intersect`].
    #[must_use]
    pub fn intersect(&self, other: &Roi) -> Roi {
        self.assert_dims(other, "intersect");
        let begin = self.offset.elementwise_max(&other.offset);
        if !self.intersects(other) {
            return Roi {
                shape: Coordinate::zeros(begin.dims()),
                offset: begin,
            };
        }
        let end = self.end().elementwise_min(&other.end());
        Roi {
            shape: &end - &begin,
            offset: begin,
        }
    }

    /// Checked [`Roi::intersect`].
    ///
    /// # Errors
    ///
    /// On a dims mismatch.
    pub fn try_intersect(&self, other: &Roi) -> Result<Roi, GeometryError> {
        self.check_dims(other)?;
        Ok(self.intersect(other))
    }

    /// The bounding box of both ROIs; an empty side yields the other.
    ///
    /// # Panics
    ///
    /// On a dims mismatch.
    #[must_use]
    pub fn union(&self, other: &Roi) -> Roi {
        self.assert_dims(other, "union");
        if self.is_empty() {
            return other.clone();
        }
        if other.is_empty() {
            return self.clone();
        }
        let begin = self.offset.elementwise_min(&other.offset);
        let end = self.end().elementwise_max(&other.end());
        Roi::from_bounds(begin, end)
    }

    /// Whether `other` lies inside this ROI. An empty `other` is contained if its offset is
    /// (or if this ROI is empty too).
    #[must_use]
    pub fn contains(&self, other: &Roi) -> bool {
        if other.dims() != self.dims() {
            return false;
        }
        if other.is_empty() {
            return self.is_empty() || self.contains_point(&other.offset);
        }
        self.contains_point(&other.offset) && self.contains_point(&(other.end() - 1))
    }

    /// Whether a point lies inside (the end is exclusive); false for other dims.
    #[must_use]
    pub fn contains_point(&self, point: &Coordinate) -> bool {
        point.dims() == self.dims()
            && (0..self.dims()).all(|d| {
                self.offset[d] <= point[d] && point[d] < self.offset[d] + self.shape[d]
            })
    }

    /// Grows by `neg` below and `pos` above (negative values shrink). Not normalised: the shape
    /// may become negative.
    ///
    /// ```
    /// use blockwise::Roi;
    /// assert_eq!(Roi::new([0], [10]).grow([2], [3]), Roi::new([-2], [15]));
    /// assert!(Roi::new([0], [10]).grow([-6], [-6]).is_empty());
    /// ```
    ///
    /// # Panics
    ///
    /// On a dims mismatch.
    #[must_use]
    pub fn grow(&self, neg: impl Into<Coordinate>, pos: impl Into<Coordinate>) -> Roi {
        let (neg, pos) = (neg.into(), pos.into());
        Roi {
            offset: &self.offset - &neg,
            shape: &(&self.shape + &neg) + &pos,
        }
    }

    /// Grows every axis by `amount` on both sides.
    #[must_use]
    pub fn grow_by(&self, amount: i64) -> Roi {
        let a = Coordinate::splat(amount, self.dims());
        self.grow(a.clone(), a)
    }

    /// Shrinks by `neg` below and `pos` above: `grow(-neg, -pos)`.
    ///
    /// # Panics
    ///
    /// On a dims mismatch.
    #[must_use]
    pub fn shrink(&self, neg: impl Into<Coordinate>, pos: impl Into<Coordinate>) -> Roi {
        self.grow(-neg.into(), -pos.into())
    }

    /// Moves the offset by `by`.
    ///
    /// # Panics
    ///
    /// On a dims mismatch.
    #[must_use]
    pub fn shift(&self, by: impl Into<Coordinate>) -> Roi {
        Roi {
            offset: &self.offset + &by.into(),
            shape: self.shape.clone(),
        }
    }

    /// Snaps begin and end to multiples of `voxel_size`.
    ///
    /// ```
    /// use blockwise::{Roi, Snap};
    /// let r = Roi::new([1], [7]);
    /// assert_eq!(r.snap_to_grid(&[2].into(), Snap::Grow), Roi::new([0], [8]));
    /// assert_eq!(r.snap_to_grid(&[2].into(), Snap::Shrink), Roi::new([2], [6]));
    /// assert_eq!(r.snap_to_grid(&[3].into(), Snap::Closest), Roi::new([0], [9]));
    /// ```
    ///
    /// # Panics
    ///
    /// On a dims mismatch or a zero voxel size element; see [`Roi::try_snap_to_grid`].
    #[must_use]
    pub fn snap_to_grid(&self, voxel_size: &Coordinate, mode: Snap) -> Roi {
        match self.try_snap_to_grid(voxel_size, mode) {
            Ok(r) => r,
            Err(e) => panic!("snap_to_grid of {self} to {voxel_size}: {e}"),
        }
    }

    /// Checked [`Roi::snap_to_grid`].
    ///
    /// # Errors
    ///
    /// A dims mismatch or a zero voxel size element.
    pub fn try_snap_to_grid(&self, voxel_size: &Coordinate, mode: Snap) -> Result<Roi, GeometryError> {
        if voxel_size.dims() != self.dims() {
            return Err(GeometryError::DimsMismatch {
                left: self.offset.clone(),
                right: voxel_size.clone(),
            });
        }
        if voxel_size.iter().any(|v| v == 0) {
            return Err(GeometryError::DivisionByZero {
                divisor: voxel_size.clone(),
            });
        }
        let end = self.end();
        let (b, e) = match mode {
            Snap::Grow => (self.offset.floor_div(voxel_size), end.ceil_div(voxel_size)),
            Snap::Shrink => (self.offset.ceil_div(voxel_size), end.floor_div(voxel_size)),
            Snap::Closest => (self.offset.round_div(voxel_size), end.round_div(voxel_size)),
        };
        Ok(Roi::from_bounds(&b * voxel_size, &e * voxel_size))
    }

    fn check_dims(&self, other: &Roi) -> Result<(), GeometryError> {
        if self.dims() == other.dims() {
            Ok(())
        } else {
            Err(GeometryError::DimsMismatch {
                left: self.offset.clone(),
                right: other.offset.clone(),
            })
        }
    }

    fn assert_dims(&self, other: &Roi, op: &str) {
        assert!(
            self.dims() == other.dims(),
            "Roi dimension mismatch in {op}: {self} has {} dims, {other} has {}",
            self.dims(),
            other.dims()
        );
    }
}

impl fmt::Display for Roi {
    /// funlib's `str`: `[0:10, 0:10] (10, 10)`; 1-D `[1:4] (3)`; empty `[empty ROI]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("[empty ROI]");
        }
        f.write_str("[")?;
        for d in 0..self.dims() {
            if d > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}:{}", self.offset[d], self.offset[d] + self.shape[d])?;
        }
        f.write_str("] (")?;
        for d in 0..self.dims() {
            if d > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", self.shape[d])?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for Roi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Roi({:?}, {:?})", self.offset, self.shape)
    }
}

macro_rules! scale {
    ($trait:ident, $method:ident) => {
        impl $trait<&Coordinate> for &Roi {
            type Output = Roi;
            /// Applies to both offset and shape; panics on a dims mismatch.
            fn $method(self, rhs: &Coordinate) -> Roi {
                Roi {
                    offset: (&self.offset).$method(rhs),
                    shape: (&self.shape).$method(rhs),
                }
            }
        }
        impl $trait<Coordinate> for Roi {
            type Output = Roi;
            fn $method(self, rhs: Coordinate) -> Roi {
                (&self).$method(&rhs)
            }
        }
        impl $trait<&Coordinate> for Roi {
            type Output = Roi;
            fn $method(self, rhs: &Coordinate) -> Roi {
                (&self).$method(rhs)
            }
        }
        impl $trait<i64> for &Roi {
            type Output = Roi;
            fn $method(self, rhs: i64) -> Roi {
                self.$method(&Coordinate::splat(rhs, self.dims()))
            }
        }
        impl $trait<i64> for Roi {
            type Output = Roi;
            fn $method(self, rhs: i64) -> Roi {
                (&self).$method(rhs)
            }
        }
    };
}

scale!(Mul, mul);
scale!(Div, div);

macro_rules! shift_op {
    ($trait:ident, $method:ident) => {
        impl $trait<&Coordinate> for &Roi {
            type Output = Roi;
            /// Moves the offset; panics on a dims mismatch.
            fn $method(self, rhs: &Coordinate) -> Roi {
                Roi {
                    offset: (&self.offset).$method(rhs),
                    shape: self.shape.clone(),
                }
            }
        }
        impl $trait<Coordinate> for Roi {
            type Output = Roi;
            fn $method(self, rhs: Coordinate) -> Roi {
                (&self).$method(&rhs)
            }
        }
        impl $trait<&Coordinate> for Roi {
            type Output = Roi;
            fn $method(self, rhs: &Coordinate) -> Roi {
                (&self).$method(rhs)
            }
        }
        impl $trait<i64> for &Roi {
            type Output = Roi;
            fn $method(self, rhs: i64) -> Roi {
                self.$method(&Coordinate::splat(rhs, self.dims()))
            }
        }
        impl $trait<i64> for Roi {
            type Output = Roi;
            fn $method(self, rhs: i64) -> Roi {
                (&self).$method(rhs)
            }
        }
    };
}

shift_op!(Add, add);
shift_op!(Sub, sub);
