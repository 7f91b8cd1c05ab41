//! [`Roi`]: an axis-aligned box `offset + shape` with an exclusive end.

use std::fmt;
use std::ops::{Add, Div, Mul, Sub};

use serde::{Deserialize, Serialize};

use super::GeometryError;
use super::coordinate::{
    Coordinate, assert_same_dims, checked_ceil_div_i64, checked_floor_div_i64,
    checked_round_div_i64,
};

/// How [`Roi::snap_to_grid`] rounds begin and end to the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Snap {
    /// Floor the begin and ceil the end: the result contains the input.
    #[default]
    Grow,
    /// Ceil the begin and floor the end: the result lies inside the input
    /// (its shape may become zero or negative, i.e. empty).
    Shrink,
    /// Round begin and end to the nearest grid line, exact halves down.
    Closest,
}

/// An axis-aligned n-dimensional box: `offset + shape`, end exclusive.
///
/// Shapes may be zero or negative ("degenerate"); such ROIs are
/// [empty](Self::is_empty). Operations that combine ROIs
/// ([`intersect`](Self::intersect), [`union`](Self::union), …) panic on a
/// dimension mismatch, which is a programming error; `try_` twins return a
/// [`GeometryError`] instead.
///
/// # Overflow
///
/// [`new`](Self::new) accepts any offset and shape, even one whose end
/// (`offset + shape`) does not fit in an `i64`; [`try_new`](Self::try_new)
/// and deserialisation refuse such a ROI with
/// [`GeometryError::RoiEndOverflow`], and [`Task`](crate::Task) building
/// refuses a task whose ROIs or blocks would overflow. The predicates
/// ([`intersects`](Self::intersects), [`contains`](Self::contains),
/// [`contains_point`](Self::contains_point)), [`intersect`](Self::intersect)
/// and `Display` are exact for every ROI. Methods returning coordinates or
/// ROIs that can leave the `i64` range ([`end`](Self::end),
/// [`grow`](Self::grow), [`shift`](Self::shift), the operators) use plain
/// `i64` arithmetic (a panic in debug builds, wrapping in release builds);
/// their `try_` twins ([`try_end`](Self::try_end),
/// [`try_grow`](Self::try_grow), [`try_shift`](Self::try_shift), …) report
/// the overflow instead.
///
/// ```
/// use blockwise::{Coordinate, Roi};
///
/// let a = Roi::new([0, 0, 0], [100, 100, 100]);
/// let b = Roi::new([50, 50, 50], [100, 100, 100]);
/// assert_eq!(a.intersect(&b), Roi::new([50, 50, 50], [50, 50, 50]));
/// assert_eq!(a.union(&b), Roi::new([0, 0, 0], [150, 150, 150]));
/// assert_eq!(a.center(), Coordinate::new([50, 50, 50]));
/// assert_eq!(a.end(), Coordinate::new([100, 100, 100]));
///
/// // Scaling converts between voxel and world units; `/` truncates.
/// assert_eq!(Roi::new([1], [7]) / 2, Roi::new([0], [3]));
/// // `+` and `-` shift the offset.
/// assert_eq!(Roi::new([1], [7]) + 1, Roi::new([2], [7]));
///
/// assert_eq!(Roi::new([0, 0], [10, 10]).to_string(), "[0:10, 0:10] (10, 10)");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RoiFields")]
pub struct Roi {
    offset: Coordinate,
    shape: Coordinate,
}

/// Unvalidated serde form of [`Roi`]; deserialisation checks the dims.
#[derive(Deserialize)]
struct RoiFields {
    offset: Coordinate,
    shape: Coordinate,
}

impl TryFrom<RoiFields> for Roi {
    type Error = GeometryError;

    fn try_from(fields: RoiFields) -> Result<Roi, GeometryError> {
        Roi::try_new(fields.offset, fields.shape)
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn roi_dims_panic(what: &str, left: &Coordinate, right: &Coordinate) -> ! {
    panic!(
        "roi dimension mismatch in {what}: {left} has {} dims, {right} has {}",
        left.dims(),
        right.dims()
    )
}

#[cold]
#[inline(never)]
#[track_caller]
fn roi_error_panic(what: &str, err: GeometryError) -> ! {
    panic!("{what}: {err}")
}

impl Roi {
    /// Creates a ROI from its offset (begin) and shape.
    ///
    /// ```
    /// use blockwise::{Coordinate, Roi};
    ///
    /// let r = Roi::new([1, 2], [3, 4]);
    /// assert_eq!(r.offset(), &Coordinate::new([1, 2]));
    /// assert_eq!(r.shape(), &Coordinate::new([3, 4]));
    /// assert_eq!(r.size(), 12);
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `offset` and `shape` have different numbers of dimensions
    /// (see [`try_new`](Self::try_new)).
    #[inline]
    #[track_caller]
    pub fn new(offset: impl Into<Coordinate>, shape: impl Into<Coordinate>) -> Roi {
        let (offset, shape) = (offset.into(), shape.into());
        if offset.dims() != shape.dims() {
            roi_dims_panic("Roi::new (offset vs shape)", &offset, &shape);
        }
        Roi { offset, shape }
    }

    /// Fallible [`new`](Self::new) that also refuses a ROI whose end does not
    /// fit in an `i64`. Deserialisation goes through it.
    ///
    /// ```
    /// use blockwise::{GeometryError, Roi};
    ///
    /// assert!(Roi::try_new([i64::MAX - 100], [100]).is_ok());
    /// assert!(matches!(
    ///     Roi::try_new([i64::MAX - 5], [100]),
    ///     Err(GeometryError::RoiEndOverflow { axis: 0, .. })
    /// ));
    /// ```
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`] (left = offset, right = shape) if the
    /// dimensions differ, [`GeometryError::RoiEndOverflow`] if
    /// `offset + shape` overflows in some axis.
    #[inline]
    pub fn try_new(
        offset: impl Into<Coordinate>,
        shape: impl Into<Coordinate>,
    ) -> Result<Roi, GeometryError> {
        let (offset, shape) = (offset.into(), shape.into());
        offset.check_dims(&shape)?;
        let roi = Roi { offset, shape };
        roi.check_end()?;
        Ok(roi)
    }

    /// Fallible [`from_bounds`](Self::from_bounds).
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`] if the dimensions differ,
    /// [`GeometryError::Overflow`] if `end - begin` overflows.
    #[inline]
    pub fn try_from_bounds(
        begin: impl Into<Coordinate>,
        end: impl Into<Coordinate>,
    ) -> Result<Roi, GeometryError> {
        let (begin, end) = (begin.into(), end.into());
        end.check_dims(&begin)?;
        let shape = end
            .try_sub(&begin)
            .map_err(|_| GeometryError::Overflow { op: "from_bounds" })?;
        Ok(Roi {
            offset: begin,
            shape,
        })
    }

    /// Creates a ROI from its begin and exclusive end (`shape = end - begin`).
    ///
    /// ```
    /// use blockwise::Roi;
    ///
    /// assert_eq!(Roi::from_bounds([2, 3], [5, 10]), Roi::new([2, 3], [3, 7]));
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `begin` and `end` have different numbers of dimensions.
    #[inline]
    #[track_caller]
    pub fn from_bounds(begin: impl Into<Coordinate>, end: impl Into<Coordinate>) -> Roi {
        let (begin, end) = (begin.into(), end.into());
        if begin.dims() != end.dims() {
            roi_dims_panic("Roi::from_bounds (begin vs end)", &begin, &end);
        }
        let shape = end - &begin;
        Roi {
            offset: begin,
            shape,
        }
    }

    /// The offset (inclusive begin).
    #[inline]
    pub fn offset(&self) -> &Coordinate {
        &self.offset
    }

    /// The shape (may have zero or negative elements).
    #[inline]
    pub fn shape(&self) -> &Coordinate {
        &self.shape
    }

    /// The inclusive begin; the same as [`offset`](Self::offset).
    #[inline]
    pub fn begin(&self) -> &Coordinate {
        &self.offset
    }

    /// The exclusive end, `offset + shape`.
    ///
    /// # Panics
    ///
    /// Overflow panics in debug builds (wraps in release); see
    /// [`try_end`](Self::try_end).
    #[inline]
    pub fn end(&self) -> Coordinate {
        &self.offset + &self.shape
    }

    /// The exclusive end, or [`GeometryError::RoiEndOverflow`] if it does not
    /// fit in an `i64`.
    ///
    /// ```
    /// use blockwise::{Coordinate, Roi};
    ///
    /// assert_eq!(Roi::new([1, 2], [3, 4]).try_end(), Ok(Coordinate::new([4, 6])));
    /// assert!(Roi::new([0, i64::MIN], [1, -1]).try_end().is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`GeometryError::RoiEndOverflow`] naming the first overflowing axis.
    #[inline]
    pub fn try_end(&self) -> Result<Coordinate, GeometryError> {
        let mut end = self.offset.clone();
        for d in 0..self.dims() {
            end[d] = self.offset[d]
                .checked_add(self.shape[d])
                .ok_or_else(|| self.end_overflow(d))?;
        }
        Ok(end)
    }

    /// Checks that the end fits in an `i64` (see [`try_end`](Self::try_end)).
    #[inline]
    fn check_end(&self) -> Result<(), GeometryError> {
        match (0..self.dims()).find(|&d| self.offset[d].checked_add(self.shape[d]).is_none()) {
            Some(d) => Err(self.end_overflow(d)),
            None => Ok(()),
        }
    }

    #[cold]
    fn end_overflow(&self, axis: usize) -> GeometryError {
        GeometryError::RoiEndOverflow {
            offset: self.offset.clone(),
            shape: self.shape.clone(),
            axis,
        }
    }

    /// Number of dimensions.
    #[inline]
    pub fn dims(&self) -> usize {
        self.offset.dims()
    }

    /// Product of the shape (funlib's `size`): 0 or negative for degenerate
    /// shapes, 1 for a 0-dimensional ROI.
    ///
    /// # Panics
    ///
    /// Overflow panics in debug builds (wraps in release); see
    /// [`checked_size`](Self::checked_size).
    #[inline]
    pub fn size(&self) -> i64 {
        self.shape.iter().product()
    }

    /// Product of the shape, or `None` on overflow.
    #[inline]
    pub fn checked_size(&self) -> Option<i64> {
        self.shape.checked_product()
    }

    /// True if any shape element is zero or negative.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.shape.iter().any(|s| s <= 0)
    }

    /// `offset + shape / 2`, where `/` truncates toward zero (funlib).
    ///
    /// ```
    /// use blockwise::{Coordinate, Roi};
    ///
    /// assert_eq!(Roi::new([0], [5]).center(), Coordinate::new([2]));
    /// assert_eq!(Roi::new([-5], [5]).center(), Coordinate::new([-3]));
    /// ```
    #[inline]
    pub fn center(&self) -> Coordinate {
        self.offset.zip_map(&self.shape, |o, s| o + s / 2)
    }

    /// True if the two ROIs overlap in at least one point. Empty ROIs
    /// intersect nothing, and touching ROIs (one's end equals the other's
    /// begin) do not intersect.
    ///
    /// ```
    /// use blockwise::Roi;
    ///
    /// assert!(Roi::new([0], [10]).intersects(&Roi::new([9], [5])));
    /// assert!(!Roi::new([0], [10]).intersects(&Roi::new([10], [5])));
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the dimensions differ.
    #[inline]
    #[track_caller]
    pub fn intersects(&self, other: &Roi) -> bool {
        self.assert_dims(other, "Roi::intersects");
        // Per axis the overlap is [max(b1, b2), min(e1, e2)); an empty axis
        // (shape <= 0) can never satisfy this, so emptiness needs no extra test.
        (0..self.dims()).all(|d| {
            let (b1, e1) = wide_bounds(self, d);
            let (b2, e2) = wide_bounds(other, d);
            b1.max(b2) < e1.min(e2)
        })
    }

    /// The overlap of two ROIs.
    ///
    /// If they do not [intersect](Self::intersects), the result is an
    /// **empty** ROI whose shape is all zeros and whose offset is the
    /// element-wise maximum of the two begins. (funlib returns an offset of
    /// `None` there; this crate has no unbounded axes.)
    ///
    /// ```
    /// use blockwise::Roi;
    ///
    /// let a = Roi::new([0, 0], [10, 10]);
    /// assert_eq!(a.intersect(&Roi::new([5, -5], [10, 10])), Roi::new([5, 0], [5, 5]));
    ///
    /// let disjoint = Roi::new([0], [10]).intersect(&Roi::new([10], [5]));
    /// assert!(disjoint.is_empty());
    /// assert_eq!(disjoint, Roi::new([10], [0]));
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the dimensions differ (see [`try_intersect`](Self::try_intersect)).
    #[inline]
    #[track_caller]
    pub fn intersect(&self, other: &Roi) -> Roi {
        self.assert_dims(other, "Roi::intersect");
        let mut offset = self.offset.clone();
        let mut shape = self.shape.clone();
        let mut disjoint = false;
        for d in 0..self.dims() {
            let (b1, e1) = wide_bounds(self, d);
            let (b2, e2) = wide_bounds(other, d);
            let begin = b1.max(b2);
            let end = e1.min(e2);
            // `begin` is one of the two offsets, and when the axis overlaps,
            // `end - begin` is at most either shape: both fit in an `i64`.
            offset[d] = begin as i64;
            if end > begin {
                shape[d] = (end - begin) as i64;
            } else {
                disjoint = true;
            }
        }
        if disjoint {
            shape = Coordinate::zeros(shape.dims());
        }
        Roi { offset, shape }
    }

    /// Fallible [`intersect`](Self::intersect) (which cannot overflow).
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`] if the dimensions differ.
    #[inline]
    pub fn try_intersect(&self, other: &Roi) -> Result<Roi, GeometryError> {
        self.offset.check_dims(&other.offset)?;
        Ok(self.intersect(other))
    }

    /// The bounding box of both ROIs. If one of them is empty, the other is
    /// returned unchanged (even if it is empty too).
    ///
    /// ```
    /// use blockwise::Roi;
    ///
    /// let a = Roi::new([0, 0], [10, 10]);
    /// assert_eq!(a.union(&Roi::new([20, 5], [5, 1])), Roi::new([0, 0], [25, 10]));
    /// assert_eq!(a.union(&Roi::new([50, 50], [0, 0])), a);
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the dimensions differ or if the shape of the bounding box
    /// does not fit in an `i64` (see [`try_union`](Self::try_union)).
    #[inline]
    #[track_caller]
    pub fn union(&self, other: &Roi) -> Roi {
        self.assert_dims(other, "Roi::union");
        match self.try_union(other) {
            Ok(roi) => roi,
            Err(err) => roi_error_panic("Roi::union", err),
        }
    }

    /// Fallible [`union`](Self::union).
    ///
    /// ```
    /// use blockwise::{GeometryError, Roi};
    ///
    /// let low = Roi::new([i64::MIN], [1]);
    /// let high = Roi::new([i64::MAX - 1], [1]);
    /// assert_eq!(low.try_union(&high), Err(GeometryError::Overflow { op: "union" }));
    /// ```
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`] if the dimensions differ,
    /// [`GeometryError::Overflow`] if the bounding box's shape or end does
    /// not fit in an `i64`.
    #[inline]
    pub fn try_union(&self, other: &Roi) -> Result<Roi, GeometryError> {
        self.offset.check_dims(&other.offset)?;
        if self.is_empty() {
            return Ok(other.clone());
        }
        if other.is_empty() {
            return Ok(self.clone());
        }
        let overflow = GeometryError::Overflow { op: "union" };
        let mut offset = self.offset.clone();
        let mut shape = self.shape.clone();
        for d in 0..self.dims() {
            let (b1, e1) = wide_bounds(self, d);
            let (b2, e2) = wide_bounds(other, d);
            let (begin, end) = (b1.min(b2), e1.max(e2));
            offset[d] = begin as i64; // one of the two offsets
            shape[d] = i64::try_from(end - begin).map_err(|_| overflow.clone())?;
            if i64::try_from(end).is_err() {
                return Err(overflow);
            }
        }
        Ok(Roi { offset, shape })
    }

    /// True if `other` lies entirely inside `self`.
    ///
    /// An empty `other` is contained if `self` is empty or if `other`'s begin
    /// is a point of `self` (funlib semantics). ROIs with different numbers of
    /// dimensions never contain one another (no panic).
    ///
    /// ```
    /// use blockwise::Roi;
    ///
    /// let cube = Roi::new([0, 0, 0], [10, 10, 10]);
    /// assert!(cube.contains(&Roi::new([2, 2, 2], [8, 8, 8])));
    /// assert!(!cube.contains(&Roi::new([2, 2, 2], [9, 8, 8])));
    /// assert!(cube.contains(&Roi::new([5, 5, 5], [0, 0, 0])));
    /// assert!(!Roi::new([0], [10]).contains(&Roi::new([10], [0])));
    /// ```
    #[inline]
    pub fn contains(&self, other: &Roi) -> bool {
        if self.dims() != other.dims() {
            return false;
        }
        if other.is_empty() {
            return self.is_empty() || self.contains_point(&other.offset);
        }
        // `other` is non-empty, so `begin <= end - 1` on every axis and
        // containment of both corners reduces to these two comparisons.
        (0..self.dims()).all(|d| {
            let (b1, e1) = wide_bounds(self, d);
            let (b2, e2) = wide_bounds(other, d);
            b1 <= b2 && e2 <= e1
        })
    }

    /// True if `point` lies inside (`begin <= p < end` on every axis). A point
    /// with a different number of dimensions is never contained (no panic).
    ///
    /// ```
    /// use blockwise::{Coordinate, Roi};
    ///
    /// let r = Roi::new([0, 0], [10, 10]);
    /// assert!(r.contains_point(&Coordinate::new([9, 0])));
    /// assert!(!r.contains_point(&Coordinate::new([10, 0])));
    /// ```
    #[inline]
    pub fn contains_point(&self, point: &Coordinate) -> bool {
        point.dims() == self.dims()
            && (0..self.dims()).all(|d| {
                let (b, e) = wide_bounds(self, d);
                let p = i128::from(point[d]);
                b <= p && p < e
            })
    }

    /// Grows the ROI by `neg` below the begin and `pos` above the end:
    /// `offset -= neg; shape += neg + pos`. Negative amounts shrink it. The
    /// result is **not** normalised: the shape may become zero or negative
    /// (an empty ROI).
    ///
    /// ```
    /// use blockwise::Roi;
    ///
    /// let r = Roi::new([10, 10], [5, 5]);
    /// assert_eq!(r.grow([1, 2], [3, 4]), Roi::new([9, 8], [9, 11]));
    /// assert_eq!(Roi::new([0], [10]).grow([-6], [-6]), Roi::new([6], [-2]));
    /// assert_eq!(r.grow([1, 2], [3, 4]).shrink([1, 2], [3, 4]), r);
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the dimensions differ.
    #[inline]
    #[track_caller]
    pub fn grow(&self, neg: impl Into<Coordinate>, pos: impl Into<Coordinate>) -> Roi {
        let (neg, pos) = (neg.into(), pos.into());
        assert_same_dims(&self.offset, &neg);
        assert_same_dims(&self.offset, &pos);
        let offset = &self.offset - &neg;
        let mut shape = self.shape.clone();
        for d in 0..shape.dims() {
            shape[d] += neg[d] + pos[d];
        }
        Roi { offset, shape }
    }

    /// Fallible [`grow`](Self::grow): also refuses a result whose offset,
    /// shape or end does not fit in an `i64`.
    ///
    /// ```
    /// use blockwise::{GeometryError, Roi};
    ///
    /// let r = Roi::new([0], [10]);
    /// assert_eq!(r.try_grow([2], [3]), Ok(Roi::new([-2], [15])));
    /// assert!(matches!(
    ///     r.try_grow([0], [i64::MAX - 5]),
    ///     Err(GeometryError::Overflow { op: "grow" })
    /// ));
    /// ```
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`], [`GeometryError::Overflow`] (offset
    /// or shape) or [`GeometryError::RoiEndOverflow`] (end).
    pub fn try_grow(
        &self,
        neg: impl Into<Coordinate>,
        pos: impl Into<Coordinate>,
    ) -> Result<Roi, GeometryError> {
        let (neg, pos) = (neg.into(), pos.into());
        self.offset.check_dims(&neg)?;
        self.offset.check_dims(&pos)?;
        let overflow = || GeometryError::Overflow { op: "grow" };
        let offset = self.offset.try_sub(&neg).map_err(|_| overflow())?;
        let mut shape = self.shape.clone();
        for d in 0..shape.dims() {
            let grown = i128::from(shape[d]) + i128::from(neg[d]) + i128::from(pos[d]);
            shape[d] = i64::try_from(grown).map_err(|_| overflow())?;
        }
        let roi = Roi { offset, shape };
        roi.check_end()?;
        Ok(roi)
    }

    /// Grows every axis by `amount` on both sides (negative shrinks).
    ///
    /// ```
    /// use blockwise::Roi;
    ///
    /// assert_eq!(Roi::new([0, 0], [10, 10]).grow_by(2), Roi::new([-2, -2], [14, 14]));
    /// ```
    #[inline]
    pub fn grow_by(&self, amount: i64) -> Roi {
        Roi {
            offset: &self.offset - amount,
            shape: &self.shape + 2 * amount,
        }
    }

    /// The inverse of [`grow`](Self::grow): `grow(-neg, -pos)`.
    ///
    /// # Panics
    ///
    /// Panics if the dimensions differ.
    #[inline]
    #[track_caller]
    pub fn shrink(&self, neg: impl Into<Coordinate>, pos: impl Into<Coordinate>) -> Roi {
        self.grow(-neg.into(), -pos.into())
    }

    /// Moves the ROI by `by` (shape unchanged). Same as `roi + by`.
    ///
    /// # Panics
    ///
    /// Panics if the dimensions differ.
    #[inline]
    #[track_caller]
    pub fn shift(&self, by: impl Into<Coordinate>) -> Roi {
        Roi {
            offset: &self.offset + &by.into(),
            shape: self.shape.clone(),
        }
    }

    /// Fallible [`shift`](Self::shift): also refuses a result whose offset or
    /// end does not fit in an `i64`.
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`], [`GeometryError::Overflow`] (offset)
    /// or [`GeometryError::RoiEndOverflow`] (end).
    pub fn try_shift(&self, by: impl Into<Coordinate>) -> Result<Roi, GeometryError> {
        let by = by.into();
        let offset = self.offset.try_add(&by).map_err(|e| match e {
            GeometryError::Overflow { .. } => GeometryError::Overflow { op: "shift" },
            other => other,
        })?;
        let roi = Roi {
            offset,
            shape: self.shape.clone(),
        };
        roi.check_end()?;
        Ok(roi)
    }

    /// Snaps begin and end to multiples of `voxel_size` (see [`Snap`]).
    ///
    /// * [`Snap::Grow`]: begin rounded down, end rounded up.
    /// * [`Snap::Shrink`]: begin rounded up, end rounded down (the shape
    ///   can become zero or negative).
    /// * [`Snap::Closest`]: both rounded to the nearest multiple, exact halves
    ///   down.
    ///
    /// Voxel sizes are expected to be positive.
    ///
    /// ```
    /// use blockwise::{Coordinate, Roi, Snap};
    ///
    /// let r = Roi::new([1], [7]);
    /// let two = Coordinate::new([2]);
    /// assert_eq!(r.snap_to_grid(&two, Snap::Grow), Roi::new([0], [8]));
    /// assert_eq!(r.snap_to_grid(&two, Snap::Shrink), Roi::new([2], [6]));
    /// assert_eq!(r.snap_to_grid(&two, Snap::Closest), Roi::new([0], [8]));
    ///
    /// let voxel = Coordinate::new([4, 4]);
    /// let r = Roi::new([3, 7], [10, 10]);
    /// assert_eq!(r.snap_to_grid(&voxel, Snap::Grow), Roi::new([0, 4], [16, 16]));
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `voxel_size` has different dimensions or a zero element, or
    /// on `i64` overflow (see [`try_snap_to_grid`](Self::try_snap_to_grid)).
    #[inline]
    #[track_caller]
    pub fn snap_to_grid(&self, voxel_size: &Coordinate, mode: Snap) -> Roi {
        match self.try_snap_to_grid(voxel_size, mode) {
            Ok(roi) => roi,
            Err(err) => roi_error_panic("Roi::snap_to_grid", err),
        }
    }

    /// Fallible [`snap_to_grid`](Self::snap_to_grid).
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`], [`GeometryError::DivisionByZero`]
    /// (a zero voxel element) or [`GeometryError::Overflow`].
    pub fn try_snap_to_grid(
        &self,
        voxel_size: &Coordinate,
        mode: Snap,
    ) -> Result<Roi, GeometryError> {
        self.offset.check_divisor(voxel_size)?;
        let overflow = GeometryError::Overflow { op: "snap_to_grid" };
        let mut offset = self.offset.clone();
        let mut shape = self.shape.clone();
        for d in 0..self.dims() {
            let (b, v) = (self.offset[d], voxel_size[d]);
            let snap = || -> Option<(i64, i64)> {
                let e = b.checked_add(self.shape[d])?;
                let (begin, end) = match mode {
                    Snap::Grow => (checked_floor_div_i64(b, v)?, checked_ceil_div_i64(e, v)?),
                    Snap::Shrink => (checked_ceil_div_i64(b, v)?, checked_floor_div_i64(e, v)?),
                    Snap::Closest => (checked_round_div_i64(b, v)?, checked_round_div_i64(e, v)?),
                };
                let (begin, end) = (begin.checked_mul(v)?, end.checked_mul(v)?);
                Some((begin, end.checked_sub(begin)?))
            };
            let (begin, size) = snap().ok_or_else(|| overflow.clone())?;
            offset[d] = begin;
            shape[d] = size;
        }
        Ok(Roi { offset, shape })
    }

    /// Converts a ROI in world units to voxels: `offset / voxel_size`, `shape / voxel_size`,
    /// exactly (funlib's `roi / voxel_size` truncates; this refuses what does not divide).
    ///
    /// ```
    /// use blockwise::{Coordinate, GeometryError, Roi};
    ///
    /// let voxel_size = Coordinate::new([4, 2]);
    /// let world = Roi::new([8, -4], [40, 10]);
    /// assert_eq!(world.to_voxels(&voxel_size)?, Roi::new([2, -2], [10, 5]));
    ///
    /// // 6 is not a multiple of 4: the error names the axis and the values.
    /// let e = Roi::new([6, 0], [40, 10]).to_voxels(&voxel_size).unwrap_err();
    /// assert_eq!(
    ///     e,
    ///     GeometryError::NotVoxelMultiple { what: "offset", axis: 0, value: 6, voxel_size: 4 }
    /// );
    /// assert_eq!(
    ///     e.to_string(),
    ///     "the ROI's offset 6 in axis 0 is not a multiple of the voxel size 4"
    /// );
    /// # Ok::<(), GeometryError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`] (left = the ROI's offset, right = the voxel size) if the
    /// dims differ, [`GeometryError::NonPositiveVoxelSize`] if a voxel size is zero or
    /// negative, [`GeometryError::NotVoxelMultiple`] naming the first axis whose offset or
    /// shape is not a multiple of the voxel size.
    pub fn to_voxels(&self, voxel_size: &Coordinate) -> Result<Roi, GeometryError> {
        self.offset.check_dims(voxel_size)?;
        if let Some(axis) = voxel_size.iter().position(|v| v <= 0) {
            return Err(GeometryError::NonPositiveVoxelSize {
                voxel_size: voxel_size.clone(),
                axis,
            });
        }
        let mut offset = self.offset.clone();
        let mut shape = self.shape.clone();
        for d in 0..self.dims() {
            let v = voxel_size[d];
            for (what, value, out) in [
                ("offset", self.offset[d], &mut offset[d]),
                ("shape", self.shape[d], &mut shape[d]),
            ] {
                if value % v != 0 {
                    return Err(GeometryError::NotVoxelMultiple {
                        what,
                        axis: d,
                        value,
                        voxel_size: v,
                    });
                }
                *out = value / v;
            }
        }
        Ok(Roi { offset, shape })
    }

    #[inline]
    #[track_caller]
    fn assert_dims(&self, other: &Roi, what: &str) {
        if self.dims() != other.dims() {
            roi_dims_panic(what, &self.offset, &other.offset);
        }
    }
}

/// Begin and exclusive end of `roi` in axis `d`, exact in `i128`.
#[inline]
fn wide_bounds(roi: &Roi, d: usize) -> (i128, i128) {
    let b = i128::from(roi.offset[d]);
    (b, b + i128::from(roi.shape[d]))
}

/// funlib's `str`: `[0:10, 0:10] (10, 10)`, `[1:4] (3)`, or `[empty ROI]`.
/// The end is printed exactly even if it does not fit in an `i64`.
impl fmt::Display for Roi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("[empty ROI]");
        }
        f.write_str("[")?;
        for d in 0..self.dims() {
            if d > 0 {
                f.write_str(", ")?;
            }
            let (b, e) = wide_bounds(self, d);
            write!(f, "{b}:{e}")?;
        }
        f.write_str("] (")?;
        for (d, s) in self.shape.iter().enumerate() {
            if d > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{s}")?;
        }
        f.write_str(")")
    }
}

/// funlib's `repr`: `Roi((0, 0), (10, 10))`.
impl fmt::Debug for Roi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Roi({}, {})", self.offset, self.shape)
    }
}

/// Implements `Roi op Coordinate` / `Roi op i64` in owned and borrowed forms.
/// `$scale_shape` selects whether the shape is transformed too (`*`, `/`)
/// or only the offset (`+`, `-`).
macro_rules! impl_roi_op {
    ($Op:ident, $op:ident, $scale_shape:literal) => {
        impl $Op<&Coordinate> for Roi {
            type Output = Roi;

            #[inline]
            #[track_caller]
            fn $op(self, rhs: &Coordinate) -> Roi {
                let Roi { offset, shape } = self;
                let offset = $Op::$op(offset, rhs);
                let shape = if $scale_shape {
                    $Op::$op(shape, rhs)
                } else {
                    shape
                };
                Roi { offset, shape }
            }
        }

        impl $Op<Coordinate> for Roi {
            type Output = Roi;

            #[inline]
            #[track_caller]
            fn $op(self, rhs: Coordinate) -> Roi {
                $Op::$op(self, &rhs)
            }
        }

        impl $Op<&Coordinate> for &Roi {
            type Output = Roi;

            #[inline]
            #[track_caller]
            fn $op(self, rhs: &Coordinate) -> Roi {
                let offset = $Op::$op(&self.offset, rhs);
                let shape = if $scale_shape {
                    $Op::$op(&self.shape, rhs)
                } else {
                    self.shape.clone()
                };
                Roi { offset, shape }
            }
        }

        impl $Op<Coordinate> for &Roi {
            type Output = Roi;

            #[inline]
            #[track_caller]
            fn $op(self, rhs: Coordinate) -> Roi {
                $Op::$op(self, &rhs)
            }
        }

        impl $Op<i64> for Roi {
            type Output = Roi;

            #[inline]
            #[track_caller]
            fn $op(self, rhs: i64) -> Roi {
                let Roi { offset, shape } = self;
                let offset = $Op::$op(offset, rhs);
                let shape = if $scale_shape {
                    $Op::$op(shape, rhs)
                } else {
                    shape
                };
                Roi { offset, shape }
            }
        }

        impl $Op<i64> for &Roi {
            type Output = Roi;

            #[inline]
            #[track_caller]
            fn $op(self, rhs: i64) -> Roi {
                let offset = $Op::$op(&self.offset, rhs);
                let shape = if $scale_shape {
                    $Op::$op(&self.shape, rhs)
                } else {
                    self.shape.clone()
                };
                Roi { offset, shape }
            }
        }
    };
}

impl_roi_op!(Add, add, false);
impl_roi_op!(Sub, sub, false);
impl_roi_op!(Mul, mul, true);
impl_roi_op!(Div, div, true);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod unit {
    use super::*;

    fn c<const N: usize>(v: [i64; N]) -> Coordinate {
        Coordinate::from(v)
    }

    #[test]
    fn accessors() {
        let r = Roi::new([1, 2], [3, 4]);
        assert_eq!(r.offset(), &c([1, 2]));
        assert_eq!(r.begin(), &c([1, 2]));
        assert_eq!(r.shape(), &c([3, 4]));
        assert_eq!(r.end(), c([4, 6]));
        assert_eq!(r.dims(), 2);
        assert_eq!(r.size(), 12);
        assert_eq!(r.checked_size(), Some(12));
        assert!(!r.is_empty());
        assert_eq!(Roi::new([0, 0], [3, -2]).size(), -6);
        assert!(Roi::new([0, 0], [3, -2]).is_empty());
        assert!(Roi::new([0, 0], [3, 0]).is_empty());
        assert_eq!(Roi::from_bounds([2, 3], [5, 10]), Roi::new([2, 3], [3, 7]));
        assert_eq!(Roi::try_new([0], [1]), Ok(Roi::new([0], [1])));
        assert_eq!(
            Roi::try_new([0, 0], [1]),
            Err(GeometryError::DimsMismatch {
                left: c([0, 0]),
                right: c([1])
            })
        );
    }

    #[test]
    #[should_panic(
        expected = "roi dimension mismatch in Roi::new (offset vs shape): (0, 0) has 2 dims, (1,) has 1"
    )]
    fn new_dims_mismatch_panics() {
        let _ = Roi::new([0, 0], [1]);
    }

    #[test]
    fn acceptance_case_2_roi_operations() {
        let a = Roi::new([0, 0, 0], [100, 100, 100]);
        let b = Roi::new([50, 50, 50], [100, 100, 100]);
        assert_eq!(a.intersect(&b), Roi::new([50, 50, 50], [50, 50, 50]));
        assert_eq!(b.intersect(&a), Roi::new([50, 50, 50], [50, 50, 50]));
        assert_eq!(a.union(&b), Roi::new([0, 0, 0], [150, 150, 150]));
        assert_eq!(a.center(), c([50, 50, 50]));
        assert!(a.intersects(&b));

        let touching = Roi::new([0], [10]).intersect(&Roi::new([10], [5]));
        assert!(touching.is_empty());
        assert_eq!(touching.shape(), &c([0]));
        assert_eq!(touching.offset(), &c([10])); // our stand-in for funlib's None
        assert!(!Roi::new([0], [10]).intersects(&Roi::new([10], [5])));

        assert_eq!(Roi::new([-5], [5]).center(), c([-3]));
        assert_eq!(Roi::new([0], [5]).center(), c([2]));
    }

    #[test]
    fn acceptance_case_3_bounded_parts() {
        assert_eq!(Roi::new([1], [7]) / 2, Roi::new([0], [3]));
        assert_eq!(Roi::new([1], [7]) + 1, Roi::new([2], [7]));
        assert_eq!(
            Roi::new([0, 0, 0], [100, 100, 100]).grow([-1, -1, -1], [-1, -1, -1]),
            Roi::new([1, 1, 1], [98, 98, 98])
        );
        assert_eq!(
            Roi::new([0, 0, 0], [100, 100, 100]).grow_by(-1),
            Roi::new([1, 1, 1], [98, 98, 98])
        );
    }

    #[test]
    fn acceptance_case_4_snap_to_grid() {
        let r = Roi::new([1], [7]);
        let v2 = c([2]);
        assert_eq!(r.snap_to_grid(&v2, Snap::Grow), Roi::new([0], [8]));
        assert_eq!(r.snap_to_grid(&v2, Snap::Shrink), Roi::new([2], [6]));
        assert_eq!(r.snap_to_grid(&v2, Snap::Closest), Roi::new([0], [8]));
        let v3 = c([3]);
        assert_eq!(r.snap_to_grid(&v3, Snap::Grow), Roi::new([0], [9]));
        assert_eq!(r.snap_to_grid(&v3, Snap::Shrink), Roi::new([3], [3]));
        assert_eq!(r.snap_to_grid(&v3, Snap::Closest), Roi::new([0], [9]));
        assert_eq!(
            Roi::new([3, 7], [10, 10]).snap_to_grid(&c([4, 4]), Snap::Grow),
            Roi::new([0, 4], [16, 16])
        );
        assert_eq!(Snap::default(), Snap::Grow);
        // Shrink may produce a negative shape.
        assert_eq!(
            Roi::new([1], [2]).snap_to_grid(&c([4]), Snap::Shrink),
            Roi::new([4], [-4])
        );
    }

    #[test]
    fn snap_errors() {
        let r = Roi::new([1, 2], [7, 7]);
        assert!(matches!(
            r.try_snap_to_grid(&c([2]), Snap::Grow),
            Err(GeometryError::DimsMismatch { .. })
        ));
        assert_eq!(
            r.try_snap_to_grid(&c([2, 0]), Snap::Grow),
            Err(GeometryError::DivisionByZero { divisor: c([2, 0]) })
        );
        assert_eq!(
            Roi::new([i64::MAX - 1], [1]).try_snap_to_grid(&c([4]), Snap::Grow),
            Err(GeometryError::Overflow { op: "snap_to_grid" })
        );
    }

    #[test]
    #[should_panic(
        expected = "Roi::snap_to_grid: division by zero: divisor (0,) has a zero element"
    )]
    fn snap_zero_voxel_panics() {
        let _ = Roi::new([1], [7]).snap_to_grid(&c([0]), Snap::Grow);
    }

    #[test]
    fn acceptance_case_5_containment() {
        assert!(Roi::new([0, 0, 0], [10, 10, 10]).contains(&Roi::new([5, 5, 5], [0, 0, 0])));
        assert!(!Roi::new([0], [10]).contains(&Roi::new([10], [0])));
        assert!(!Roi::new([0, 0], [10, 10]).contains_point(&c([10, 0])));
        assert!(Roi::new([0, 0], [10, 10]).contains_point(&c([9, 9])));
        // Empty self contains any empty ROI, but no non-empty one.
        assert!(Roi::new([0], [0]).contains(&Roi::new([100], [-3])));
        assert!(!Roi::new([0], [0]).contains(&Roi::new([0], [1])));
        // Different dims: false, no panic.
        assert!(!Roi::new([0], [10]).contains(&Roi::new([0, 0], [1, 1])));
        assert!(!Roi::new([0], [10]).contains_point(&c([1, 1])));
        // Self contains itself.
        let r = Roi::new([-3, 4], [5, 6]);
        assert!(r.contains(&r));
    }

    #[test]
    fn union_with_empty() {
        let a = Roi::new([0], [10]);
        let e = Roi::new([100], [0]);
        assert_eq!(a.union(&e), a);
        assert_eq!(e.union(&a), a);
        assert_eq!(e.union(&Roi::new([7], [-1])), Roi::new([7], [-1]));
        assert_eq!(a.try_union(&Roi::new([1], [1])), Ok(a.clone()));
        assert!(a.try_union(&Roi::new([1, 1], [1, 1])).is_err());
        assert!(a.try_intersect(&Roi::new([1, 1], [1, 1])).is_err());
    }

    #[test]
    #[should_panic(expected = "roi dimension mismatch in Roi::intersects")]
    fn intersects_dims_mismatch_panics() {
        let _ = Roi::new([0], [10]).intersects(&Roi::new([0, 0], [1, 1]));
    }

    #[test]
    fn grow_shrink_shift() {
        let r = Roi::new([0], [10]);
        assert_eq!(r.grow([-6], [-6]), Roi::new([6], [-2]));
        assert!(r.grow([-6], [-6]).is_empty());
        assert_eq!(r.shrink([1], [2]), Roi::new([1], [7]));
        assert_eq!(r.shift([5]), Roi::new([5], [10]));
        let by = c([5]);
        assert_eq!(r.shift(&by), Roi::new([5], [10]));
        assert_eq!(by, c([5]));
    }

    #[test]
    fn operators() {
        let r = Roi::new([2, -4], [6, 8]);
        let v = c([2, 4]);
        let scaled = Roi::new([4, -16], [12, 32]);
        assert_eq!(&r * &v, scaled);
        assert_eq!(&r * v.clone(), scaled);
        assert_eq!(r.clone() * &v, scaled);
        assert_eq!(r.clone() * v.clone(), scaled);
        assert_eq!(&scaled / &v, r);
        assert_eq!(scaled.clone() / v.clone(), r);
        assert_eq!(&r * 2, Roi::new([4, -8], [12, 16]));
        assert_eq!(r.clone() / 2, Roi::new([1, -2], [3, 4]));
        assert_eq!(&Roi::new([-3], [7]) / 2, Roi::new([-1], [3])); // truncating
        assert_eq!(&r + &v, Roi::new([4, 0], [6, 8]));
        assert_eq!(r.clone() - v.clone(), Roi::new([0, -8], [6, 8]));
        assert_eq!(&r + 1, Roi::new([3, -3], [6, 8]));
        assert_eq!(r.clone() - 1, Roi::new([1, -5], [6, 8]));
    }

    #[test]
    fn display_and_debug() {
        assert_eq!(
            Roi::new([0, 0], [10, 10]).to_string(),
            "[0:10, 0:10] (10, 10)"
        );
        assert_eq!(Roi::new([1], [3]).to_string(), "[1:4] (3)");
        assert_eq!(Roi::new([2], [1]).to_string(), "[2:3] (1)");
        assert_eq!(
            Roi::new([-5, 3, 1], [5, 2, 1]).to_string(),
            "[-5:0, 3:5, 1:2] (5, 2, 1)"
        );
        assert_eq!(Roi::new([0], [0]).to_string(), "[empty ROI]");
        assert_eq!(Roi::new([0, 0], [5, -1]).to_string(), "[empty ROI]");
        assert_eq!(
            format!("{:?}", Roi::new([0, 0], [10, 10])),
            "Roi((0, 0), (10, 10))"
        );
        assert_eq!(format!("{:?}", Roi::new([1], [3])), "Roi((1,), (3,))");
    }

    #[test]
    fn serde_roundtrip() {
        let r = Roi::new([1, 2], [3, 4]);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"offset":[1,2],"shape":[3,4]}"#);
        let back: Roi = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let bad = serde_json::from_str::<Roi>(r#"{"offset":[1,2],"shape":[3]}"#);
        assert!(bad.unwrap_err().to_string().contains("dimension mismatch"));
    }

    #[test]
    fn checked_ends() {
        let max = Roi::new([i64::MAX - 5], [5]);
        assert_eq!(max.try_end(), Ok(c([i64::MAX])));
        let over = Roi::new([0, i64::MAX - 5], [1, 100]);
        let err = over.try_end().unwrap_err();
        assert_eq!(
            err,
            GeometryError::RoiEndOverflow {
                offset: c([0, i64::MAX - 5]),
                shape: c([1, 100]),
                axis: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "the end of the ROI with offset (0, 9223372036854775802) and shape (1, 100) overflows i64 in axis 1 (9223372036854775802 + 100 is outside [-9223372036854775808, 9223372036854775807])"
        );
        assert!(Roi::new([i64::MIN], [-1]).try_end().is_err());
        assert_eq!(Roi::try_new([0, i64::MAX - 5], [1, 100]), Err(err));
        assert_eq!(
            Roi::try_new([i64::MIN], [i64::MAX]),
            Ok(Roi::new([i64::MIN], [i64::MAX]))
        );
        // Deserialisation refuses overflowing ends.
        let bad = serde_json::from_str::<Roi>(r#"{"offset":[9223372036854775800],"shape":[100]}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("overflows i64 in axis 0")
        );
        assert_eq!(
            Roi::try_from_bounds([i64::MIN], [i64::MAX]),
            Err(GeometryError::Overflow { op: "from_bounds" })
        );
        assert_eq!(
            Roi::try_from_bounds([-1], [i64::MAX - 1]),
            Ok(Roi::new([-1], [i64::MAX]))
        );
    }

    #[test]
    fn checked_grow_and_shift() {
        let r = Roi::new([0], [10]);
        assert_eq!(r.try_grow([1], [2]), Ok(r.grow([1], [2])));
        assert_eq!(
            r.try_grow([i64::MIN], [0]),
            Err(GeometryError::Overflow { op: "grow" })
        );
        assert_eq!(
            r.try_grow([0], [i64::MAX]),
            Err(GeometryError::Overflow { op: "grow" })
        );
        // Offset and shape fit, the end does not.
        assert!(matches!(
            Roi::new([i64::MAX - 20], [10]).try_grow([0], [20]),
            Err(GeometryError::RoiEndOverflow { axis: 0, .. })
        ));
        assert_eq!(
            Roi::new([i64::MAX - 20], [10]).try_grow([0], [10]),
            Ok(Roi::new([i64::MAX - 20], [20]))
        );
        assert!(matches!(
            r.try_grow([1, 1], [1]),
            Err(GeometryError::DimsMismatch { .. })
        ));
        assert_eq!(r.try_shift([5]), Ok(Roi::new([5], [10])));
        assert_eq!(
            r.try_shift([i64::MAX - 5]),
            Err(GeometryError::RoiEndOverflow {
                offset: c([i64::MAX - 5]),
                shape: c([10]),
                axis: 0
            })
        );
        assert_eq!(
            Roi::new([-1], [1]).try_shift([i64::MIN]),
            Err(GeometryError::Overflow { op: "shift" })
        );
    }

    #[test]
    fn exact_near_the_limits() {
        let low = Roi::new([i64::MIN], [1]);
        let high = Roi::new([i64::MAX - 1], [1]);
        // Disjoint at opposite ends: no overflow in intersect, intersects or contains.
        assert!(!low.intersects(&high));
        assert!(low.intersect(&high).is_empty());
        assert_eq!(low.intersect(&high).offset(), &c([i64::MAX - 1]));
        assert!(!low.contains(&high));
        assert_eq!(
            low.try_union(&high),
            Err(GeometryError::Overflow { op: "union" })
        );
        assert_eq!(
            Roi::new([0], [1]).try_union(&high),
            Ok(Roi::new([0], [i64::MAX]))
        );
        // ROIs whose end does not fit still compare exactly.
        let over = Roi::new([i64::MAX - 5], [100]);
        assert!(over.contains_point(&c([i64::MAX])));
        assert!(over.contains(&Roi::new([i64::MAX - 1], [1])));
        assert!(over.intersects(&Roi::new([i64::MAX - 1], [1])));
        assert_eq!(
            over.intersect(&Roi::new([0], [i64::MAX])),
            Roi::new([i64::MAX - 5], [5])
        );
        assert_eq!(
            over.to_string(),
            "[9223372036854775802:9223372036854775902] (100)"
        );
    }

    #[test]
    #[should_panic(expected = "Roi::union: arithmetic overflow in union")]
    fn union_overflow_panics() {
        let _ = Roi::new([i64::MIN], [1]).union(&Roi::new([i64::MAX - 1], [1]));
    }
}
