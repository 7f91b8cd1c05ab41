//! `Coordinate`: an n-dimensional integer point or vector.

use std::fmt;
use std::ops::{Add, Div, Index, IndexMut, Mul, Neg, Sub};

use smallvec::SmallVec;

use super::GeometryError;

/// An n-dimensional integer point or vector (`i64` per axis), stored inline for up to 4 dims.
///
/// Arithmetic is element-wise, with another coordinate of the same dims or with a scalar; `/`
/// truncates toward zero like funlib's `/`, and [`floor_div`](Coordinate::floor_div),
/// [`ceil_div`](Coordinate::ceil_div) and [`round_div`](Coordinate::round_div) round as named.
///
/// ```
/// use blockwise::Coordinate;
///
/// let c = Coordinate::from([4, 5, 6]);
/// assert_eq!(&c / 2, Coordinate::from([2, 2, 3]));
/// assert_eq!(Coordinate::from([-7]) / 2, Coordinate::from([-3]));
/// assert_eq!(Coordinate::from([-7]).floor_div(&Coordinate::from([2])), Coordinate::from([-4]));
/// assert_eq!(c.to_string(), "(4, 5, 6)");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Coordinate(SmallVec<[i64; 4]>);

impl Coordinate {
    /// A coordinate from any sequence of values.
    pub fn new<I: IntoIterator<Item = i64>>(values: I) -> Self {
        Coordinate(values.into_iter().collect())
    }

    /// The zero vector of `dims` dimensions.
    #[must_use]
    pub fn zeros(dims: usize) -> Self {
        Coordinate(SmallVec::from_elem(0, dims))
    }

    /// `value` in each of `dims` dimensions.
    #[must_use]
    pub fn splat(value: i64, dims: usize) -> Self {
        Coordinate(SmallVec::from_elem(value, dims))
    }

    /// The number of dimensions.
    #[must_use]
    #[inline]
    pub fn dims(&self) -> usize {
        self.0.len()
    }

    /// The values as a slice.
    #[must_use]
    #[inline]
    pub fn as_slice(&self) -> &[i64] {
        &self.0
    }

    /// The values, axis by axis.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = i64> + '_ {
        self.0.iter().copied()
    }

    /// The product of the values, or `None` on overflow (1 for 0 dims).
    #[must_use]
    pub fn checked_product(&self) -> Option<i64> {
        self.0.iter().try_fold(1i64, |acc, &v| acc.checked_mul(v))
    }

    /// Whether every value is a multiple of the matching value of `other` (false on a zero
    /// divisor or a dims mismatch).
    #[must_use]
    pub fn is_multiple_of(&self, other: &Coordinate) -> bool {
        self.dims() == other.dims()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(&a, &b)| b != 0 && a % b == 0)
    }

    /// Element-wise division rounding toward negative infinity (funlib `//`).
    ///
    /// # Panics
    ///
    /// On a dims mismatch or a zero divisor element.
    #[must_use]
    pub fn floor_div(&self, other: &Coordinate) -> Coordinate {
        self.zip_checked(other, "floor_div", |a, b| Some(floor(a, b)))
    }

    /// Element-wise division rounding toward positive infinity.
    ///
    /// # Panics
    ///
    /// On a dims mismatch or a zero divisor element.
    #[must_use]
    pub fn ceil_div(&self, other: &Coordinate) -> Coordinate {
        self.zip_checked(other, "ceil_div", |a, b| Some(-floor(-a, b)))
    }

    /// Element-wise division rounding to the nearest integer, halves down (funlib's
    /// `round_division`: `(a + (b - 1) // 2) // b`).
    ///
    /// # Panics
    ///
    /// On a dims mismatch or a zero divisor element.
    #[must_use]
    pub fn round_div(&self, other: &Coordinate) -> Coordinate {
        self.zip_checked(other, "round_div", |a, b| Some(floor(a + floor(b - 1, 2), b)))
    }

    /// Element-wise minimum.
    ///
    /// # Panics
    ///
    /// On a dims mismatch.
    #[must_use]
    pub fn elementwise_min(&self, other: &Coordinate) -> Coordinate {
        self.zip_checked(other, "elementwise_min", |a, b| Some(a.min(b)))
    }

    /// Element-wise maximum.
    ///
    /// # Panics
    ///
    /// On a dims mismatch.
    #[must_use]
    pub fn elementwise_max(&self, other: &Coordinate) -> Coordinate {
        self.zip_checked(other, "elementwise_max", |a, b| Some(a.max(b)))
    }

    /// Element-wise absolute value.
    #[must_use]
    pub fn abs(&self) -> Coordinate {
        Coordinate(self.0.iter().map(|v| v.abs()).collect())
    }

    /// Checked element-wise `+`.
    ///
    /// # Errors
    ///
    /// Dims mismatch or overflow.
    pub fn try_add(&self, other: &Coordinate) -> Result<Coordinate, GeometryError> {
        self.try_zip(other, "add", i64::checked_add)
    }

    /// Checked element-wise `-`.
    ///
    /// # Errors
    ///
    /// Dims mismatch or overflow.
    pub fn try_sub(&self, other: &Coordinate) -> Result<Coordinate, GeometryError> {
        self.try_zip(other, "sub", i64::checked_sub)
    }

    /// Checked element-wise `*`.
    ///
    /// # Errors
    ///
    /// Dims mismatch or overflow.
    pub fn try_mul(&self, other: &Coordinate) -> Result<Coordinate, GeometryError> {
        self.try_zip(other, "mul", i64::checked_mul)
    }

    /// Checked element-wise truncating `/`.
    ///
    /// # Errors
    ///
    /// Dims mismatch, a zero divisor element, or overflow.
    pub fn try_div(&self, other: &Coordinate) -> Result<Coordinate, GeometryError> {
        if other.0.contains(&0) {
            return Err(GeometryError::DivisionByZero {
                divisor: other.clone(),
            });
        }
        self.try_zip(other, "div", i64::checked_div)
    }

    fn try_zip(
        &self,
        other: &Coordinate,
        op: &'static str,
        f: impl Fn(i64, i64) -> Option<i64>,
    ) -> Result<Coordinate, GeometryError> {
        if self.dims() != other.dims() {
            return Err(GeometryError::DimsMismatch {
                left: self.clone(),
                right: other.clone(),
            });
        }
        self.0
            .iter()
            .zip(&other.0)
            .map(|(&a, &b)| f(a, b).ok_or(GeometryError::Overflow { op }))
            .collect::<Result<SmallVec<_>, _>>()
            .map(Coordinate)
    }

    #[inline]
    fn zip_checked(
        &self,
        other: &Coordinate,
        op: &'static str,
        f: impl Fn(i64, i64) -> Option<i64>,
    ) -> Coordinate {
        assert!(
            self.dims() == other.dims(),
            "coordinate dimension mismatch in {op}: {self} has {} dims, {other} has {}",
            self.dims(),
            other.dims()
        );
        let needs_divisor = op.ends_with("div");
        Coordinate(
            self.0
                .iter()
                .zip(&other.0)
                .map(|(&a, &b)| {
                    assert!(!(needs_divisor && b == 0), "division by zero in {op}: divisor {other}");
                    match f(a, b) {
                        Some(v) => v,
                        None => panic!("arithmetic overflow in {op}: {self} and {other}"),
                    }
                })
                .collect(),
        )
    }
}

/// Floor division for any sign of divisor.
#[inline]
fn floor(a: i64, b: i64) -> i64 {
    let q = a / b;
    if (a % b != 0) && ((a < 0) != (b < 0)) { q - 1 } else { q }
}

impl From<Vec<i64>> for Coordinate {
    fn from(v: Vec<i64>) -> Self {
        Coordinate(SmallVec::from_vec(v))
    }
}

impl From<&[i64]> for Coordinate {
    fn from(v: &[i64]) -> Self {
        Coordinate(SmallVec::from_slice(v))
    }
}

impl<const N: usize> From<[i64; N]> for Coordinate {
    fn from(v: [i64; N]) -> Self {
        Coordinate(SmallVec::from_slice(&v))
    }
}

impl From<&Coordinate> for Coordinate {
    fn from(c: &Coordinate) -> Self {
        c.clone()
    }
}

impl FromIterator<i64> for Coordinate {
    fn from_iter<T: IntoIterator<Item = i64>>(iter: T) -> Self {
        Coordinate(iter.into_iter().collect())
    }
}

impl Index<usize> for Coordinate {
    type Output = i64;
    #[inline]
    fn index(&self, i: usize) -> &i64 {
        &self.0[i]
    }
}

impl IndexMut<usize> for Coordinate {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut i64 {
        &mut self.0[i]
    }
}

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

impl fmt::Debug for Coordinate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

macro_rules! binop {
    ($trait:ident, $method:ident, $name:literal, $f:expr) => {
        impl $trait<&Coordinate> for &Coordinate {
            type Output = Coordinate;
            /// Element-wise; panics on a dims mismatch (and on a zero divisor for `/`).
            #[inline]
            fn $method(self, rhs: &Coordinate) -> Coordinate {
                self.zip_checked(rhs, $name, $f)
            }
        }
        impl $trait<Coordinate> for Coordinate {
            type Output = Coordinate;
            #[inline]
            fn $method(self, rhs: Coordinate) -> Coordinate {
                (&self).$method(&rhs)
            }
        }
        impl $trait<&Coordinate> for Coordinate {
            type Output = Coordinate;
            #[inline]
            fn $method(self, rhs: &Coordinate) -> Coordinate {
                (&self).$method(rhs)
            }
        }
        impl $trait<Coordinate> for &Coordinate {
            type Output = Coordinate;
            #[inline]
            fn $method(self, rhs: Coordinate) -> Coordinate {
                self.$method(&rhs)
            }
        }
        impl $trait<i64> for &Coordinate {
            type Output = Coordinate;
            #[inline]
            fn $method(self, rhs: i64) -> Coordinate {
                self.$method(&Coordinate::splat(rhs, self.dims()))
            }
        }
        impl $trait<i64> for Coordinate {
            type Output = Coordinate;
            #[inline]
            fn $method(self, rhs: i64) -> Coordinate {
                (&self).$method(rhs)
            }
        }
    };
}

binop!(Add, add, "add", i64::checked_add);
binop!(Sub, sub, "sub", i64::checked_sub);
binop!(Mul, mul, "mul", i64::checked_mul);
binop!(Div, div, "div", i64::checked_div);

impl Neg for &Coordinate {
    type Output = Coordinate;
    fn neg(self) -> Coordinate {
        Coordinate(self.0.iter().map(|v| -v).collect())
    }
}

impl Neg for Coordinate {
    type Output = Coordinate;
    fn neg(self) -> Coordinate {
        -&self
    }
}
