//! [`Coordinate`]: an n-dimensional integer point or vector.

use std::fmt;
use std::ops::{
    Add, AddAssign, Div, DivAssign, Index, IndexMut, Mul, MulAssign, Neg, Sub, SubAssign,
};

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

use super::GeometryError;

/// Inline storage: up to four dimensions live on the stack.
pub(super) type Buf = SmallVec<[i64; 4]>;

/// An n-dimensional integer point or vector (`i64` per axis).
///
/// Up to four dimensions are stored inline (no heap allocation); more are
/// supported and spill to the heap. Ordering is lexicographic, like Python
/// tuples. It serialises as a plain sequence of integers.
///
/// Arithmetic is element-wise. The operators `+ - * /` accept another
/// `Coordinate` (owned or borrowed) or an `i64` scalar on the right-hand side;
/// `/` **truncates toward zero** like funlib's `/` (use
/// [`floor_div`](Self::floor_div) for Python's `//`).
///
/// ```
/// use blockwise::Coordinate;
///
/// let a = Coordinate::new([4, 5, 6]);
/// assert_eq!(&a / 2, Coordinate::new([2, 2, 3]));
/// assert_eq!(&a + &Coordinate::new([1, 1, 1]), Coordinate::new([5, 6, 7]));
/// assert_eq!(a.to_string(), "(4, 5, 6)");
///
/// let m = Coordinate::new([-7]);
/// assert_eq!(&m / 2, Coordinate::new([-3])); // truncating
/// assert_eq!(m.floor_div(&Coordinate::new([2])), Coordinate::new([-4]));
/// assert_eq!(m.to_string(), "(-7,)");
/// ```
///
/// # Panics
///
/// The operators panic when the operands have different numbers of
/// dimensions, or when dividing by a zero element; the `try_` methods
/// ([`try_add`](Self::try_add), …) return a [`GeometryError`] instead. The
/// operators use plain `i64` arithmetic, so overflow panics in debug builds
/// and wraps in release builds (the `try_` methods report it as an error).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Coordinate(Buf);

#[cold]
#[inline(never)]
#[track_caller]
fn dims_mismatch_panic(left: &Coordinate, right: &Coordinate) -> ! {
    panic!(
        "coordinate dimension mismatch: {left} has {} dims, {right} has {}",
        left.dims(),
        right.dims()
    )
}

#[cold]
#[inline(never)]
#[track_caller]
fn division_by_zero_panic(divisor: &Coordinate) -> ! {
    panic!("coordinate division by zero: divisor {divisor} has a zero element")
}

#[cold]
#[inline(never)]
#[track_caller]
fn scalar_division_by_zero_panic() -> ! {
    panic!("coordinate division by zero: scalar divisor is 0")
}

/// Panics unless `left` and `right` have the same number of dimensions.
#[inline]
#[track_caller]
pub(super) fn assert_same_dims(left: &Coordinate, right: &Coordinate) {
    if left.0.len() != right.0.len() {
        dims_mismatch_panic(left, right);
    }
}

/// Panics if `divisor` has a zero element.
#[inline]
#[track_caller]
fn assert_nonzero(divisor: &Coordinate) {
    if divisor.0.contains(&0) {
        division_by_zero_panic(divisor);
    }
}

/// Floor division (Python `//`) of scalars. Panics on `b == 0` or
/// `i64::MIN / -1`.
#[inline]
pub(super) fn floor_div_i64(a: i64, b: i64) -> i64 {
    let q = a / b;
    let r = a % b;
    if r != 0 && ((r < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

/// Ceiling division of scalars. Panics on `b == 0` or `i64::MIN / -1`.
#[inline]
pub(super) fn ceil_div_i64(a: i64, b: i64) -> i64 {
    let q = a / b;
    let r = a % b;
    if r != 0 && ((r < 0) == (b < 0)) {
        q + 1
    } else {
        q
    }
}

/// Division rounding to the nearest integer, halves toward negative infinity.
/// Panics on `b == 0` or `i64::MIN / -1`. Never overflows otherwise.
#[inline]
pub(super) fn round_div_i64(a: i64, b: i64) -> i64 {
    let q = a / b;
    let r = a % b;
    // Normalise to floor division: remainder takes the sign of `b`.
    let (q, r) = if r != 0 && ((r < 0) != (b < 0)) {
        (q - 1, r + b)
    } else {
        (q, r)
    };
    // a / b = q + r / b with 0 <= r / b < 1; round up only past the half.
    let (ra, ba) = (r.unsigned_abs(), b.unsigned_abs());
    if ra > ba - ra { q + 1 } else { q }
}

/// Checked [`floor_div_i64`]: `None` on a zero divisor or overflow.
#[inline]
pub(super) fn checked_floor_div_i64(a: i64, b: i64) -> Option<i64> {
    a.checked_rem(b)?;
    Some(floor_div_i64(a, b))
}

/// Checked [`ceil_div_i64`]: `None` on a zero divisor or overflow.
#[inline]
pub(super) fn checked_ceil_div_i64(a: i64, b: i64) -> Option<i64> {
    a.checked_rem(b)?;
    Some(ceil_div_i64(a, b))
}

/// Checked [`round_div_i64`]: `None` on a zero divisor or overflow.
#[inline]
pub(super) fn checked_round_div_i64(a: i64, b: i64) -> Option<i64> {
    a.checked_rem(b)?;
    Some(round_div_i64(a, b))
}

impl Coordinate {
    /// Creates a coordinate from any iterable of `i64`.
    ///
    /// ```
    /// use blockwise::Coordinate;
    ///
    /// assert_eq!(Coordinate::new([1, 2, 3]).dims(), 3);
    /// assert_eq!(Coordinate::new(vec![1, 2]), Coordinate::from([1, 2]));
    /// assert_eq!(Coordinate::new(0..3), Coordinate::from([0, 1, 2]));
    /// ```
    #[inline]
    pub fn new<I: IntoIterator<Item = i64>>(values: I) -> Self {
        Coordinate(values.into_iter().collect())
    }

    /// A coordinate of `dims` zeros.
    #[inline]
    pub fn zeros(dims: usize) -> Self {
        Coordinate::splat(0, dims)
    }

    /// A coordinate with `value` in each of `dims` axes.
    #[inline]
    pub fn splat(value: i64, dims: usize) -> Self {
        Coordinate(SmallVec::from_elem(value, dims))
    }

    /// Number of dimensions (axes).
    #[inline]
    pub fn dims(&self) -> usize {
        self.0.len()
    }

    /// The values as a slice.
    #[inline]
    pub fn as_slice(&self) -> &[i64] {
        &self.0
    }

    /// Iterates over the values (by value).
    #[inline]
    pub fn iter(&self) -> std::iter::Copied<std::slice::Iter<'_, i64>> {
        self.0.iter().copied()
    }

    /// Product of all elements, or `None` on overflow. A 0-dimensional
    /// coordinate has product 1.
    #[inline]
    pub fn checked_product(&self) -> Option<i64> {
        self.0.iter().try_fold(1i64, |acc, &v| acc.checked_mul(v))
    }

    /// True if every element of `self` is a multiple of the corresponding
    /// element of `other` (`a % b == 0`). False if any element of `other` is
    /// zero.
    ///
    /// # Panics
    ///
    /// Panics if the dimensions differ.
    #[inline]
    #[track_caller]
    pub fn is_multiple_of(&self, other: &Coordinate) -> bool {
        assert_same_dims(self, other);
        self.0
            .iter()
            .zip(other.0.iter())
            .all(|(&a, &b)| b != 0 && a.wrapping_rem(b) == 0)
    }

    #[inline]
    #[track_caller]
    fn divide_with(&self, divisor: &Coordinate, f: impl Fn(i64, i64) -> i64) -> Coordinate {
        assert_same_dims(self, divisor);
        assert_nonzero(divisor);
        self.zip_map(divisor, f)
    }

    /// Element-wise floor division (Python `//`): rounds toward negative
    /// infinity.
    ///
    /// ```
    /// use blockwise::Coordinate;
    ///
    /// let a = Coordinate::new([10, 15, 25, -7]);
    /// let b = Coordinate::new([5, 6, 7, 2]);
    /// assert_eq!(a.floor_div(&b), Coordinate::new([2, 2, 3, -4]));
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the dimensions differ, if `divisor` has a zero element, or
    /// on the overflowing `i64::MIN / -1`.
    #[inline]
    #[track_caller]
    pub fn floor_div(&self, divisor: &Coordinate) -> Coordinate {
        self.divide_with(divisor, floor_div_i64)
    }

    /// Element-wise ceiling division: rounds toward positive infinity. For
    /// positive divisors this equals funlib's `(a + b - 1) // b`.
    ///
    /// ```
    /// use blockwise::Coordinate;
    ///
    /// let a = Coordinate::new([10, 15, 25, -7]);
    /// let b = Coordinate::new([5, 6, 7, 2]);
    /// assert_eq!(a.ceil_div(&b), Coordinate::new([2, 3, 4, -3]));
    /// ```
    ///
    /// # Panics
    ///
    /// Same as [`floor_div`](Self::floor_div).
    #[inline]
    #[track_caller]
    pub fn ceil_div(&self, divisor: &Coordinate) -> Coordinate {
        self.divide_with(divisor, ceil_div_i64)
    }

    /// Element-wise division rounded to the nearest integer, with exact
    /// halves rounded **down** (toward negative infinity). For positive
    /// divisors this equals funlib's `(a + (b - 1) // 2) // b`. Never
    /// overflows in intermediate steps.
    ///
    /// ```
    /// use blockwise::Coordinate;
    ///
    /// let a = Coordinate::new([10, 15, 25, 3, -3]);
    /// let b = Coordinate::new([5, 6, 7, 2, 2]);
    /// assert_eq!(a.round_div(&b), Coordinate::new([2, 2, 4, 1, -2]));
    /// ```
    ///
    /// # Panics
    ///
    /// Same as [`floor_div`](Self::floor_div).
    #[inline]
    #[track_caller]
    pub fn round_div(&self, divisor: &Coordinate) -> Coordinate {
        self.divide_with(divisor, round_div_i64)
    }

    /// Element-wise minimum.
    ///
    /// # Panics
    ///
    /// Panics if the dimensions differ.
    #[inline]
    #[track_caller]
    pub fn elementwise_min(&self, other: &Coordinate) -> Coordinate {
        self.zip_map(other, std::cmp::min)
    }

    /// Element-wise maximum.
    ///
    /// # Panics
    ///
    /// Panics if the dimensions differ.
    #[inline]
    #[track_caller]
    pub fn elementwise_max(&self, other: &Coordinate) -> Coordinate {
        self.zip_map(other, std::cmp::max)
    }

    /// Element-wise absolute value.
    ///
    /// # Panics
    ///
    /// In debug builds, panics if an element is `i64::MIN`.
    #[inline]
    pub fn abs(&self) -> Coordinate {
        self.map(i64::abs)
    }

    /// Checked element-wise addition.
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`] or [`GeometryError::Overflow`].
    #[inline]
    pub fn try_add(&self, other: &Coordinate) -> Result<Coordinate, GeometryError> {
        self.try_zip_map(other, "add", i64::checked_add)
    }

    /// Checked element-wise subtraction.
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`] or [`GeometryError::Overflow`].
    #[inline]
    pub fn try_sub(&self, other: &Coordinate) -> Result<Coordinate, GeometryError> {
        self.try_zip_map(other, "sub", i64::checked_sub)
    }

    /// Checked element-wise multiplication.
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`] or [`GeometryError::Overflow`].
    #[inline]
    pub fn try_mul(&self, other: &Coordinate) -> Result<Coordinate, GeometryError> {
        self.try_zip_map(other, "mul", i64::checked_mul)
    }

    /// Checked element-wise truncating division (the `/` operator).
    ///
    /// ```
    /// use blockwise::{Coordinate, GeometryError};
    ///
    /// let a = Coordinate::new([7, 8]);
    /// assert_eq!(a.try_div(&Coordinate::new([2, 2])), Ok(Coordinate::new([3, 4])));
    /// assert!(matches!(
    ///     a.try_div(&Coordinate::new([2, 0])),
    ///     Err(GeometryError::DivisionByZero { .. })
    /// ));
    /// ```
    ///
    /// # Errors
    ///
    /// [`GeometryError::DimsMismatch`], [`GeometryError::DivisionByZero`] or
    /// [`GeometryError::Overflow`] (`i64::MIN / -1`).
    #[inline]
    pub fn try_div(&self, other: &Coordinate) -> Result<Coordinate, GeometryError> {
        self.check_divisor(other)?;
        self.try_zip_map(other, "div", i64::checked_div)
    }

    /// Checks that `divisor` has our dims and no zero element.
    #[inline]
    pub(super) fn check_divisor(&self, divisor: &Coordinate) -> Result<(), GeometryError> {
        self.check_dims(divisor)?;
        if divisor.0.contains(&0) {
            return Err(GeometryError::DivisionByZero {
                divisor: divisor.clone(),
            });
        }
        Ok(())
    }

    /// Checks that `other` has our dims.
    #[inline]
    pub(super) fn check_dims(&self, other: &Coordinate) -> Result<(), GeometryError> {
        if self.0.len() != other.0.len() {
            return Err(GeometryError::DimsMismatch {
                left: self.clone(),
                right: other.clone(),
            });
        }
        Ok(())
    }

    #[inline]
    fn try_zip_map(
        &self,
        other: &Coordinate,
        op: &'static str,
        f: impl Fn(i64, i64) -> Option<i64>,
    ) -> Result<Coordinate, GeometryError> {
        self.check_dims(other)?;
        self.0
            .iter()
            .zip(other.0.iter())
            .map(|(&a, &b)| f(a, b))
            .collect::<Option<Buf>>()
            .map(Coordinate)
            .ok_or(GeometryError::Overflow { op })
    }

    /// Applies `f` element-wise to `self` and `other` into a new coordinate.
    #[inline]
    #[track_caller]
    pub(super) fn zip_map(&self, other: &Coordinate, f: impl Fn(i64, i64) -> i64) -> Coordinate {
        assert_same_dims(self, other);
        Coordinate(
            self.0
                .iter()
                .zip(other.0.iter())
                .map(|(&a, &b)| f(a, b))
                .collect(),
        )
    }

    /// Applies `f` element-wise, storing the result in `self`.
    #[inline]
    #[track_caller]
    fn zip_assign(&mut self, other: &Coordinate, f: impl Fn(i64, i64) -> i64) {
        assert_same_dims(self, other);
        for (a, &b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = f(*a, b);
        }
    }

    /// Applies `f(other_elem, self_elem)` element-wise, storing in `self`
    /// (lets `&a op b` reuse `b`'s storage).
    #[inline]
    #[track_caller]
    fn zip_assign_rev(&mut self, other: &Coordinate, f: impl Fn(i64, i64) -> i64) {
        assert_same_dims(other, self);
        for (b, &a) in self.0.iter_mut().zip(other.0.iter()) {
            *b = f(a, *b);
        }
    }

    #[inline]
    fn map(&self, f: impl Fn(i64) -> i64) -> Coordinate {
        Coordinate(self.0.iter().map(|&a| f(a)).collect())
    }

    #[inline]
    fn map_assign(&mut self, f: impl Fn(i64) -> i64) {
        for a in self.0.iter_mut() {
            *a = f(*a);
        }
    }
}

impl<const N: usize> From<[i64; N]> for Coordinate {
    #[inline]
    fn from(values: [i64; N]) -> Self {
        Coordinate(SmallVec::from_slice(&values))
    }
}

impl From<Vec<i64>> for Coordinate {
    #[inline]
    fn from(values: Vec<i64>) -> Self {
        if values.len() <= 4 {
            Coordinate(SmallVec::from_slice(&values))
        } else {
            Coordinate(SmallVec::from_vec(values))
        }
    }
}

impl From<&[i64]> for Coordinate {
    #[inline]
    fn from(values: &[i64]) -> Self {
        Coordinate(SmallVec::from_slice(values))
    }
}

impl From<&Coordinate> for Coordinate {
    #[inline]
    fn from(value: &Coordinate) -> Self {
        value.clone()
    }
}

impl From<Coordinate> for Vec<i64> {
    #[inline]
    fn from(value: Coordinate) -> Self {
        value.0.into_vec()
    }
}

impl FromIterator<i64> for Coordinate {
    #[inline]
    fn from_iter<T: IntoIterator<Item = i64>>(iter: T) -> Self {
        Coordinate(iter.into_iter().collect())
    }
}

impl AsRef<[i64]> for Coordinate {
    #[inline]
    fn as_ref(&self) -> &[i64] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Coordinate {
    type Item = i64;
    type IntoIter = std::iter::Copied<std::slice::Iter<'a, i64>>;

    #[inline]
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl IntoIterator for Coordinate {
    type Item = i64;
    type IntoIter = smallvec::IntoIter<[i64; 4]>;

    #[inline]
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Indexing by axis.
///
/// # Panics
///
/// Panics if `axis >= self.dims()`.
impl Index<usize> for Coordinate {
    type Output = i64;

    #[inline]
    fn index(&self, axis: usize) -> &i64 {
        &self.0[axis]
    }
}

/// Mutable indexing by axis.
///
/// # Panics
///
/// Panics if `axis >= self.dims()`.
impl IndexMut<usize> for Coordinate {
    #[inline]
    fn index_mut(&mut self, axis: usize) -> &mut i64 {
        &mut self.0[axis]
    }
}

/// Formats like a Python tuple: `(1, 2, 3)`, `(5,)`, `()`.
impl fmt::Display for Coordinate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{v}")?;
        }
        if self.0.len() == 1 {
            f.write_str(",")?;
        }
        f.write_str(")")
    }
}

/// Same as [`Display`](fmt::Display): `(1, 2, 3)`.
impl fmt::Debug for Coordinate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Coordinate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for Coordinate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CoordinateVisitor;

        impl<'de> Visitor<'de> for CoordinateVisitor {
            type Value = Coordinate;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of integers")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Coordinate, A::Error> {
                let mut values = Buf::new();
                if let Some(n) = seq.size_hint() {
                    values.reserve(n.min(64));
                }
                while let Some(v) = seq.next_element::<i64>()? {
                    values.push(v);
                }
                Ok(Coordinate(values))
            }
        }

        deserializer.deserialize_seq(CoordinateVisitor)
    }
}

/// Implements a binary element-wise operator in all owned/borrowed forms, with
/// a `Coordinate` or an `i64` on the right, plus the `*Assign` forms.
macro_rules! impl_binop {
    ($Op:ident, $op:ident, $OpAssign:ident, $op_assign:ident, $f:expr, $is_div:literal) => {
        impl $OpAssign<&Coordinate> for Coordinate {
            #[inline]
            #[track_caller]
            fn $op_assign(&mut self, rhs: &Coordinate) {
                assert_same_dims(self, rhs);
                if $is_div {
                    assert_nonzero(rhs);
                }
                self.zip_assign(rhs, $f);
            }
        }

        impl $OpAssign<Coordinate> for Coordinate {
            #[inline]
            #[track_caller]
            fn $op_assign(&mut self, rhs: Coordinate) {
                $OpAssign::$op_assign(self, &rhs);
            }
        }

        impl $OpAssign<i64> for Coordinate {
            #[inline]
            #[track_caller]
            fn $op_assign(&mut self, rhs: i64) {
                if $is_div && rhs == 0 {
                    scalar_division_by_zero_panic();
                }
                let f = $f;
                self.map_assign(|a| f(a, rhs));
            }
        }

        impl $Op<&Coordinate> for Coordinate {
            type Output = Coordinate;

            #[inline]
            #[track_caller]
            fn $op(mut self, rhs: &Coordinate) -> Coordinate {
                $OpAssign::$op_assign(&mut self, rhs);
                self
            }
        }

        impl $Op<Coordinate> for Coordinate {
            type Output = Coordinate;

            #[inline]
            #[track_caller]
            fn $op(mut self, rhs: Coordinate) -> Coordinate {
                $OpAssign::$op_assign(&mut self, &rhs);
                self
            }
        }

        impl $Op<&Coordinate> for &Coordinate {
            type Output = Coordinate;

            #[inline]
            #[track_caller]
            fn $op(self, rhs: &Coordinate) -> Coordinate {
                assert_same_dims(self, rhs);
                if $is_div {
                    assert_nonzero(rhs);
                }
                self.zip_map(rhs, $f)
            }
        }

        impl $Op<Coordinate> for &Coordinate {
            type Output = Coordinate;

            #[inline]
            #[track_caller]
            fn $op(self, mut rhs: Coordinate) -> Coordinate {
                assert_same_dims(self, &rhs);
                if $is_div {
                    assert_nonzero(&rhs);
                }
                rhs.zip_assign_rev(self, $f);
                rhs
            }
        }

        impl $Op<i64> for Coordinate {
            type Output = Coordinate;

            #[inline]
            #[track_caller]
            fn $op(mut self, rhs: i64) -> Coordinate {
                $OpAssign::$op_assign(&mut self, rhs);
                self
            }
        }

        impl $Op<i64> for &Coordinate {
            type Output = Coordinate;

            #[inline]
            #[track_caller]
            fn $op(self, rhs: i64) -> Coordinate {
                if $is_div && rhs == 0 {
                    scalar_division_by_zero_panic();
                }
                let f = $f;
                self.map(|a| f(a, rhs))
            }
        }
    };
}

impl_binop!(
    Add,
    add,
    AddAssign,
    add_assign,
    |a: i64, b: i64| a + b,
    false
);
impl_binop!(
    Sub,
    sub,
    SubAssign,
    sub_assign,
    |a: i64, b: i64| a - b,
    false
);
impl_binop!(
    Mul,
    mul,
    MulAssign,
    mul_assign,
    |a: i64, b: i64| a * b,
    false
);
impl_binop!(
    Div,
    div,
    DivAssign,
    div_assign,
    |a: i64, b: i64| a / b,
    true
);

impl Neg for Coordinate {
    type Output = Coordinate;

    #[inline]
    fn neg(mut self) -> Coordinate {
        self.map_assign(|a| -a);
        self
    }
}

impl Neg for &Coordinate {
    type Output = Coordinate;

    #[inline]
    fn neg(self) -> Coordinate {
        self.map(|a| -a)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod unit {
    use super::*;

    fn c<const N: usize>(v: [i64; N]) -> Coordinate {
        Coordinate::from(v)
    }

    #[test]
    fn construction() {
        assert_eq!(Coordinate::new([1, 2, 3]), c([1, 2, 3]));
        assert_eq!(Coordinate::new(vec![1, 2, 3]), c([1, 2, 3]));
        assert_eq!(Coordinate::from(vec![1, 2, 3]), c([1, 2, 3]));
        assert_eq!(Coordinate::from(&[1i64, 2][..]), c([1, 2]));
        assert_eq!(Coordinate::zeros(3), c([0, 0, 0]));
        assert_eq!(Coordinate::splat(7, 2), c([7, 7]));
        assert_eq!(Coordinate::default().dims(), 0);
        assert_eq!((0..5).collect::<Coordinate>(), c([0, 1, 2, 3, 4]));
        let big = Coordinate::from(vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(big.dims(), 6);
        assert_eq!(big[5], 6);
        assert_eq!(Vec::from(big.clone()), vec![1, 2, 3, 4, 5, 6]);
        // Vec with spare capacity still compares/hashes equal.
        let mut v = Vec::with_capacity(16);
        v.extend([1, 2]);
        assert_eq!(Coordinate::from(v), c([1, 2]));
    }

    #[test]
    fn indexing_and_iteration() {
        let mut a = c([1, 2, 3]);
        a[1] = 20;
        assert_eq!(a[1], 20);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![1, 20, 3]);
        assert_eq!(a.as_slice(), &[1, 20, 3]);
        assert_eq!((&a).into_iter().sum::<i64>(), 24);
        assert_eq!(a.into_iter().max(), Some(20));
    }

    #[test]
    fn ordering_is_lexicographic() {
        assert!(c([1, 5]) < c([2, 0]));
        assert!(c([1, 2]) < c([1, 3]));
        assert!(c([1, 2]) < c([1, 2, 0]));
    }

    #[test]
    fn acceptance_case_1_arithmetic() {
        // Coordinate(4,5,6)/2 == (2,2,3)
        assert_eq!(c([4, 5, 6]) / 2, c([2, 2, 3]));
        // Coordinate(-7)/2 == (-3,), Coordinate(-7)//2 == (-4,)
        assert_eq!(c([-7]) / 2, c([-3]));
        assert_eq!(c([-7]).floor_div(&c([2])), c([-4]));
        // (10,15,25) against (5,6,7): floor (2,2,3), round (2,2,4), ceil (2,3,4)
        let a = c([10, 15, 25]);
        let b = c([5, 6, 7]);
        assert_eq!(a.floor_div(&b), c([2, 2, 3]));
        assert_eq!(a.round_div(&b), c([2, 2, 4]));
        assert_eq!(a.ceil_div(&b), c([2, 3, 4]));
        // Integer version of (1,2,3)+1.9 truncated == (2,3,4): + 1
        assert_eq!(c([1, 2, 3]) + 1, c([2, 3, 4]));
    }

    #[test]
    fn all_operator_forms() {
        let a = c([6, -8]);
        let b = c([3, 2]);
        for (got, want) in [
            (&a + &b, c([9, -6])),
            (a.clone() + &b, c([9, -6])),
            (&a + b.clone(), c([9, -6])),
            (a.clone() + b.clone(), c([9, -6])),
            (&a - &b, c([3, -10])),
            (a.clone() - &b, c([3, -10])),
            (&a - b.clone(), c([3, -10])),
            (a.clone() - b.clone(), c([3, -10])),
            (&a * &b, c([18, -16])),
            (a.clone() * &b, c([18, -16])),
            (&a * b.clone(), c([18, -16])),
            (a.clone() * b.clone(), c([18, -16])),
            (&a / &b, c([2, -4])),
            (a.clone() / &b, c([2, -4])),
            (&a / b.clone(), c([2, -4])),
            (a.clone() / b.clone(), c([2, -4])),
            (&a + 1, c([7, -7])),
            (a.clone() - 1, c([5, -9])),
            (&a * 2, c([12, -16])),
            (a.clone() / 4, c([1, -2])),
            (-&a, c([-6, 8])),
            (-a.clone(), c([-6, 8])),
            (a.abs(), c([6, 8])),
        ] {
            assert_eq!(got, want);
        }
        let mut m = a.clone();
        m += &b;
        m -= b.clone();
        m *= 3;
        m /= 2;
        assert_eq!(m, c([9, -12]));
    }

    #[test]
    fn helpers() {
        assert!(c([4, 6]).is_multiple_of(&c([2, 3])));
        assert!(!c([4, 7]).is_multiple_of(&c([2, 3])));
        assert!(!c([0, 0]).is_multiple_of(&c([0, 1])));
        assert!(c([i64::MIN]).is_multiple_of(&c([-1])));
        assert_eq!(c([1, 5]).elementwise_min(&c([3, 2])), c([1, 2]));
        assert_eq!(c([1, 5]).elementwise_max(&c([3, 2])), c([3, 5]));
        assert_eq!(c([2, 3, 4]).checked_product(), Some(24));
        assert_eq!(Coordinate::default().checked_product(), Some(1));
        assert_eq!(c([i64::MAX, 2]).checked_product(), None);
    }

    #[test]
    fn divisions_with_negative_divisors() {
        // floor(5 / -2) = -3, ceil = -2, round(-2.5) half down = -3
        assert_eq!(floor_div_i64(5, -2), -3);
        assert_eq!(ceil_div_i64(5, -2), -2);
        assert_eq!(round_div_i64(5, -2), -3);
        assert_eq!(round_div_i64(3, -2), -2);
        assert_eq!(round_div_i64(-5, -2), 2);
        assert_eq!(round_div_i64(-3, 2), -2);
        assert_eq!(round_div_i64(i64::MIN, i64::MIN), 1);
        assert_eq!(round_div_i64(i64::MAX, i64::MIN), -1);
        assert_eq!(round_div_i64(0, i64::MIN), 0);
        assert_eq!(checked_floor_div_i64(i64::MIN, -1), None);
        assert_eq!(checked_ceil_div_i64(1, 0), None);
        assert_eq!(checked_round_div_i64(7, 2), Some(3));
    }

    #[test]
    fn try_ops() {
        let a = c([1, 2]);
        assert_eq!(a.try_add(&c([1, 1])), Ok(c([2, 3])));
        assert_eq!(a.try_sub(&c([1, 1])), Ok(c([0, 1])));
        assert_eq!(a.try_mul(&c([3, 3])), Ok(c([3, 6])));
        assert_eq!(a.try_div(&c([1, 2])), Ok(c([1, 1])));
        let err = a.try_add(&c([1, 2, 3])).unwrap_err();
        assert_eq!(
            err,
            GeometryError::DimsMismatch {
                left: c([1, 2]),
                right: c([1, 2, 3])
            }
        );
        assert_eq!(
            err.to_string(),
            "dimension mismatch: (1, 2) has 2 dims, (1, 2, 3) has 3"
        );
        let err = a.try_div(&c([1, 0])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "division by zero: divisor (1, 0) has a zero element"
        );
        assert_eq!(
            c([i64::MAX]).try_add(&c([1])),
            Err(GeometryError::Overflow { op: "add" })
        );
        assert_eq!(
            c([i64::MIN]).try_div(&c([-1])),
            Err(GeometryError::Overflow { op: "div" })
        );
        assert_eq!(
            GeometryError::Overflow { op: "mul" }.to_string(),
            "arithmetic overflow in mul"
        );
    }

    #[test]
    #[should_panic(expected = "coordinate dimension mismatch: (1, 2) has 2 dims, (1, 2, 3) has 3")]
    fn dims_mismatch_panics() {
        let _ = c([1, 2]) + c([1, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "coordinate dimension mismatch")]
    fn dims_mismatch_panics_ref_owned() {
        let _ = &c([1, 2]) - c([1, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "coordinate division by zero: divisor (1, 0) has a zero element")]
    fn division_by_zero_panics() {
        let _ = &c([1, 2]) / &c([1, 0]);
    }

    #[test]
    #[should_panic(expected = "coordinate division by zero: scalar divisor is 0")]
    fn scalar_division_by_zero_panics() {
        let _ = c([1, 2]) / 0;
    }

    #[test]
    #[should_panic(expected = "coordinate division by zero")]
    fn floor_div_by_zero_panics() {
        let _ = c([1, 2]).floor_div(&c([0, 1]));
    }

    #[test]
    fn display_and_debug() {
        assert_eq!(c([1, 2, 3]).to_string(), "(1, 2, 3)");
        assert_eq!(c([5]).to_string(), "(5,)");
        assert_eq!(Coordinate::default().to_string(), "()");
        assert_eq!(format!("{:?}", c([1, -2])), "(1, -2)");
    }

    #[test]
    fn serde_roundtrip() {
        let a = c([1, -2, 3]);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "[1,-2,3]");
        let back: Coordinate = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert!(serde_json::from_str::<Coordinate>("[1.5]").is_err());
        assert!(serde_json::from_str::<Coordinate>("{}").is_err());
    }
}
