//! Downsampling an n-D array by an integer factor per axis: the reduction of each level of a
//! resolution pyramid.

use std::cmp::Ordering;
use std::fmt;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::OpsError;
use crate::store::Scalar;

/// How a window of voxels becomes one voxel in [`downsample`].
///
/// | method | result for a window |
/// |---|---|
/// | `Mean` | the mean; on integers the exact mean rounded half to even, on floats the `f64` mean cast to the type |
/// | `Mode` | the most frequent value; ties go to the smallest value |
/// | `Max` | the largest value (on floats, NaN if the window holds a NaN) |
/// | `Min` | the smallest value (on floats, NaN if the window holds a NaN) |
/// | `FirstNonZero` | the first non-zero value in C order within the window, 0 if none |
///
/// `Mean` suits intensities (EM, light microscopy); `Mode`, `Max` and `FirstNonZero` suit
/// labels, where a mean would invent ids.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Downsample {
    /// The mean of the window. On integers: the exact sum divided by the window size, rounded
    /// half to even (as numpy's `np.round(window.mean())`: a mean of 2.5 gives 2, 3.5 gives
    /// 4, -2.5 gives -2). On floats: the mean computed in `f64`, cast to the type.
    #[default]
    Mean,
    /// The most frequent value of the window; when several are equally frequent, the
    /// smallest of them (floats are ordered by [`f64::total_cmp`]).
    Mode,
    /// The largest value of the window.
    Max,
    /// The smallest value of the window.
    Min,
    /// The first non-zero value of the window in C (row-major) order, 0 if all are zero.
    FirstNonZero,
}

impl fmt::Display for Downsample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Downsample::Mean => "mean",
            Downsample::Mode => "mode",
            Downsample::Max => "max",
            Downsample::Min => "min",
            Downsample::FirstNonZero => "first_non_zero",
        })
    }
}

impl std::str::FromStr for Downsample {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mean" => Ok(Downsample::Mean),
            "mode" => Ok(Downsample::Mode),
            "max" => Ok(Downsample::Max),
            "min" => Ok(Downsample::Min),
            "first_non_zero" | "first-non-zero" | "firstnonzero" => Ok(Downsample::FirstNonZero),
            other => Err(format!(
                "unknown downsampling method {other:?}: expected mean, mode, max, min or first_non_zero"
            )),
        }
    }
}

/// An element type [`downsample`] reduces: every [`Scalar`] (`u8` … `u64`, `i8` … `i64`,
/// `f32`, `f64`). Its methods are implementation details.
pub trait Downsampled: Scalar + PartialOrd {
    #[doc(hidden)]
    /// The rounded mean of a non-empty window (see [`Downsample::Mean`]).
    fn mean_of(window: &[Self]) -> Self;
    #[doc(hidden)]
    /// Adds each run of `f` values of `row` to one `i64` sum of `sums` (`row` holds
    /// `sums.len() * f` values), for types whose windows' sums fit in `i64` (at most 32 bits,
    /// windows of up to 2^30 values); `false` (nothing added) for the others.
    fn add_runs(_sums: &mut [i64], _row: &[Self], _f: usize) -> bool {
        false
    }
    #[doc(hidden)]
    /// The rounded mean of a window of `n` values from its sum (see [`add_runs`](Self::add_runs)):
    /// what [`mean_of`](Self::mean_of) gives for the window.
    fn mean_from_sum(_sum: i64, _n: i64) -> Self {
        Self::default()
    }
    #[doc(hidden)]
    /// Writes the sum of each run of `f` values of `row` to one `u16` of `sums` (`row` holds
    /// `sums.len() * f` values) for `u8`, whose windows of up to 257 values sum to at most
    /// 65,535; `false` (nothing written) for the other types.
    fn sum_runs_u16(_sums: &mut [u16], _row: &[Self], _f: usize) -> bool {
        false
    }
    #[doc(hidden)]
    /// The value of a rounded mean computed by [`sum_runs_u16`](Self::sum_runs_u16)'s path
    /// (at most the window's largest value, so it fits the types that support that path).
    fn from_mean_u16(_mean: u16) -> Self {
        Self::default()
    }
    #[doc(hidden)]
    /// A total order (floats: `total_cmp`).
    fn order(&self, other: &Self) -> Ordering;
    #[doc(hidden)]
    /// Whether the value is NaN.
    fn nan(&self) -> bool {
        false
    }
    #[doc(hidden)]
    /// Whether the value is zero.
    fn zero(&self) -> bool {
        *self == Self::default()
    }
}

/// `sum / n` rounded half to even; `n > 0`.
fn div_half_even(sum: i128, n: i128) -> i128 {
    let q = sum.div_euclid(n);
    let r = sum.rem_euclid(n); // 0 <= r < n
    match (2 * r).cmp(&n) {
        Ordering::Less => q,
        Ordering::Greater => q + 1,
        Ordering::Equal => q + (q & 1),
    }
}

/// `sum / n` rounded half to even in `i64`; `n > 0`.
fn div_half_even_i64(sum: i64, n: i64) -> i64 {
    // Windows of 2^k voxels (factor 2 on every axis: 8) by a shift and a mask: the floor
    // quotient and the remainder in 0..n, as div_euclid and rem_euclid give (n > 0).
    let (q, r) = if n.count_ones() == 1 {
        (sum >> n.trailing_zeros(), sum & (n - 1))
    } else {
        (sum.div_euclid(n), sum.rem_euclid(n))
    }; // 0 <= r < n
    match (2 * r).cmp(&n) {
        Ordering::Less => q,
        Ordering::Greater => q + 1,
        Ordering::Equal => q + (q & 1),
    }
}

/// Types of at most 32 bits: the window's sum in `i64` (it cannot overflow for windows of up
/// to 2^30 values), larger windows in `i128`.
macro_rules! small_integer {
    ($($t:ty $({ $($extra:tt)* })?),*) => {$(
        impl Downsampled for $t {
            fn mean_of(window: &[Self]) -> Self {
                let mean = match i64::try_from(window.len()) {
                    Ok(n) if (1..=1 << 30).contains(&n) => {
                        let sum: i64 = window.iter().map(|&v| i64::from(v)).sum();
                        i128::from(div_half_even_i64(sum, n))
                    }
                    _ => {
                        let sum: i128 = window.iter().map(|&v| i128::from(v)).sum();
                        let n = i128::try_from(window.len()).unwrap_or(i128::MAX).max(1);
                        div_half_even(sum, n)
                    }
                };
                // The mean lies between the window's smallest and largest value, so it fits.
                <$t>::try_from(mean).unwrap_or_default()
            }
            fn add_runs(sums: &mut [i64], row: &[Self], f: usize) -> bool {
                match f {
                    // Factor 2 (the common case) and 1, so that the loop vectorises.
                    1 => {
                        for (s, &v) in sums.iter_mut().zip(row) {
                            *s += i64::from(v);
                        }
                    }
                    2 => {
                        for (s, p) in sums.iter_mut().zip(row.chunks_exact(2)) {
                            *s += i64::from(p[0]) + i64::from(p[1]);
                        }
                    }
                    _ => {
                        for (s, run) in sums.iter_mut().zip(row.chunks_exact(f)) {
                            *s += run.iter().map(|&v| i64::from(v)).sum::<i64>();
                        }
                    }
                }
                true
            }
            fn mean_from_sum(sum: i64, n: i64) -> Self {
                // The mean lies between the window's smallest and largest value, so it fits.
                <$t>::try_from(div_half_even_i64(sum, n)).unwrap_or_default()
            }
            $($($extra)*)?
            fn order(&self, other: &Self) -> Ordering {
                self.cmp(other)
            }
        }
    )*};
}
small_integer!(
    u8 {
        fn sum_runs_u16(sums: &mut [u16], row: &[u8], f: usize) -> bool {
            match f {
                // Factor 2 (the common case) and 1, so that the loop vectorises.
                1 => {
                    for (s, &v) in sums.iter_mut().zip(row) {
                        *s = u16::from(v);
                    }
                }
                2 => {
                    // 32 values at a time in fixed-size arrays, so that the pairs vectorise.
                    let mut sums32 = sums.chunks_exact_mut(16);
                    let mut row32 = row.chunks_exact(32);
                    for (s, p) in (&mut sums32).zip(&mut row32) {
                        if let (Ok(s), Ok(p)) =
                            (<&mut [u16; 16]>::try_from(s), <&[u8; 32]>::try_from(p))
                        {
                            for (i, d) in s.iter_mut().enumerate() {
                                *d = u16::from(p[2 * i]) + u16::from(p[2 * i + 1]);
                            }
                        }
                    }
                    let rest = sums32.into_remainder().iter_mut();
                    for (s, p) in rest.zip(row32.remainder().chunks_exact(2)) {
                        *s = u16::from(p[0]) + u16::from(p[1]);
                    }
                }
                _ => {
                    for (s, run) in sums.iter_mut().zip(row.chunks_exact(f)) {
                        *s = run.iter().map(|&v| u16::from(v)).sum::<u16>();
                    }
                }
            }
            true
        }
        fn from_mean_u16(mean: u16) -> u8 {
            // A mean of u8 values is at most 255.
            #[allow(clippy::cast_possible_truncation)]
            let v = mean.min(255) as u8;
            v
        }
    },
    u16,
    u32,
    i8,
    i16,
    i32
);

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl Downsampled for $t {
            fn mean_of(window: &[Self]) -> Self {
                let sum: i128 = window.iter().map(|&v| i128::from(v)).sum();
                let n = i128::try_from(window.len()).unwrap_or(i128::MAX).max(1);
                // The mean lies between the window's smallest and largest value, so it fits.
                <$t>::try_from(div_half_even(sum, n)).unwrap_or_default()
            }
            fn order(&self, other: &Self) -> Ordering {
                self.cmp(other)
            }
        }
    )*};
}
integer!(u64, i64);

macro_rules! float {
    ($($t:ty),*) => {$(
        impl Downsampled for $t {
            fn mean_of(window: &[Self]) -> Self {
                let sum: f64 = window.iter().map(|&v| f64::from(v)).sum();
                #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
                let mean = sum / window.len().max(1) as f64;
                #[allow(clippy::cast_possible_truncation)]
                let out = mean as $t;
                out
            }
            fn order(&self, other: &Self) -> Ordering {
                self.total_cmp(other)
            }
            fn nan(&self) -> bool {
                self.is_nan()
            }
        }
    )*};
}
float!(f32, f64);

/// Reduces one non-empty window (in C order) to one value; `scratch` is reused for `Mode`.
fn reduce<T: Downsampled>(method: Downsample, window: &[T], scratch: &mut Vec<T>) -> T {
    let Some(&first) = window.first() else {
        return T::default();
    };
    match method {
        Downsample::Mean => T::mean_of(window),
        Downsample::Max | Downsample::Min => {
            let mut best = first;
            for &v in window {
                if v.nan() {
                    return v;
                }
                let better = match method {
                    Downsample::Max => v > best,
                    _ => v < best,
                };
                if better || best.nan() {
                    best = v;
                }
            }
            best
        }
        Downsample::FirstNonZero => window
            .iter()
            .copied()
            .find(|v| !v.zero())
            .unwrap_or_default(),
        Downsample::Mode => {
            scratch.clear();
            scratch.extend_from_slice(window);
            scratch.sort_unstable_by(T::order);
            // The longest run of the sorted values; the first (smallest) wins ties.
            let (mut best, mut best_len) = (first, 0usize);
            let mut i = 0;
            while i < scratch.len() {
                let v = scratch[i];
                let mut j = i + 1;
                while j < scratch.len() && scratch[j].order(&v) == Ordering::Equal {
                    j += 1;
                }
                if j - i > best_len {
                    best = v;
                    best_len = j - i;
                }
                i = j;
            }
            best
        }
    }
}

/// Advances `index` to the next index of `shape` in C order; false (and all zeros) after the
/// last one.
fn next_index(index: &mut [usize], shape: &[usize]) -> bool {
    for k in (0..index.len()).rev() {
        index[k] += 1;
        if index[k] < shape[k] {
            return true;
        }
        index[k] = 0;
    }
    false
}

/// Checks a downsampling factor against an array of `dims` dimensions; returns the window size
/// (the product of the factors).
pub(crate) fn check_factor(factor: &[u64], dims: usize) -> Result<usize, OpsError> {
    let bad = |reason: String| OpsError::Factor {
        factor: factor.to_vec(),
        reason,
    };
    if factor.len() != dims {
        return Err(bad(format!(
            "has {} axes but the array has {dims}",
            factor.len()
        )));
    }
    if let Some(axis) = factor.iter().position(|&f| f == 0) {
        return Err(bad(format!(
            "is 0 on axis {axis}; factors must be at least 1"
        )));
    }
    factor
        .iter()
        .try_fold(1usize, |acc, &f| {
            usize::try_from(f).ok().and_then(|f| acc.checked_mul(f))
        })
        .ok_or_else(|| bad("gives a window (the product of the factors) too large to count".into()))
}

/// The rounded means (see [`Downsample::Mean`]) of a C-order array `flat` of `shape`, for the
/// types whose windows of `window_len` (at most 257) values sum in `u16`
/// ([`Downsampled::sum_runs_u16`]); `None` for the others. Axis after axis, from the last: the
/// last axis's runs are summed into a `u16` buffer, then on each axis before it the `factor`
/// consecutive slabs of the buffer are added in place (contiguous runs, which vectorise), so
/// every output voxel ends with its window's exact sum.
fn mean_u16<T: Downsampled>(
    flat: &[T],
    shape: &[usize],
    window: &[usize],
    out_shape: &[usize],
    window_len: usize,
) -> Option<Vec<T>> {
    let last = shape.len().checked_sub(1)?;
    let n = u16::try_from(window_len)
        .ok()
        .filter(|&n| (1..=257).contains(&n))?;
    let (len, f) = (shape[last], window[last]);
    let row_out = out_shape[last];
    // Whether `T` has the path at all, before the buffer is allocated.
    if row_out == 0 || !T::sum_runs_u16(&mut [], &[], f) {
        return None;
    }
    let rows: usize = shape[..last].iter().product();
    let mut sums = vec![0u16; rows * row_out];
    if len == row_out * f {
        // No trailing voxels on the last axis: its runs are all of `flat`'s.
        if !T::sum_runs_u16(&mut sums, &flat[..rows * len], f) {
            return None;
        }
    } else {
        for (r, s) in sums.chunks_exact_mut(row_out).enumerate() {
            let row = &flat[r * len..r * len + row_out * f];
            if !T::sum_runs_u16(s, row, f) {
                return None;
            }
        }
    }
    // `cur`: the buffer's shape, the axes after `k` already reduced.
    let mut cur: Vec<usize> = shape.to_vec();
    cur[last] = row_out;
    for k in (0..last).rev() {
        let (f, nk, nk_out) = (window[k], cur[k], out_shape[k]);
        let inner: usize = cur[k + 1..].iter().product();
        let outer: usize = cur[..k].iter().product();
        if f > 1 || nk_out != nk {
            for o in 0..outer {
                for j in 0..nk_out {
                    // Output slab (o, j) gets input slabs (o, j·f + w), w in 0..f; it starts
                    // at or before the first of them and ends before the second, so the
                    // others can be read beside it.
                    let dst = (o * nk_out + j) * inner;
                    let src = (o * nk + j * f) * inner;
                    sums.copy_within(src..src + inner, dst);
                    for w in 1..f {
                        let at = src + w * inner;
                        let (head, tail) = sums.split_at_mut(at);
                        for (d, &v) in head[dst..dst + inner].iter_mut().zip(&tail[..inner]) {
                            *d += v;
                        }
                    }
                }
            }
            sums.truncate(outer * nk_out * inner);
        }
        cur[k] = nk_out;
    }
    // The exact sums rounded half to even, without a branch per voxel.
    let round = |q: u16, r: u16| -> T {
        let up = (2 * r > n) | ((2 * r == n) & (q & 1 == 1));
        T::from_mean_u16(q + u16::from(up))
    };
    let mut out = Vec::with_capacity(sums.len());
    if n.is_power_of_two() {
        let (shift, mask) = (n.trailing_zeros(), n - 1);
        out.extend(sums.iter().map(|&s| round(s >> shift, s & mask)));
    } else {
        out.extend(sums.iter().map(|&s| round(s / n, s % n)));
    }
    Some(out)
}

/// Downsamples `data` by an integer `factor` per axis with `method`.
///
/// Each output voxel reduces a window of `factor[0] × factor[1] × …` input voxels; a factor
/// of 1 leaves its axis unchanged, and factors may differ per axis (e.g. `[1, 2, 2]` for EM
/// sections). The output has `floor(n / f)` voxels on an axis of `n` voxels: trailing voxels
/// that do not fill a whole window are dropped. That keeps every level of a pyramid aligned in
/// world units: the voxel size of a level is the previous level's times the factor, with the
/// same offset, and output voxel `i` covers exactly input voxels `i·f .. (i+1)·f`.
///
/// The rounding of [`Downsample::Mean`] on integers is half to even, like numpy's
/// `np.round(window.mean())`; ties of [`Downsample::Mode`] go to the smallest value.
///
/// ```
/// use blockwise::ops::{Downsample, downsample};
/// use ndarray::{ArrayD, IxDyn};
///
/// # fn main() -> Result<(), blockwise::ops::OpsError> {
/// // A 2 × 5 array; factor [1, 2]: the last column is dropped.
/// let a = ArrayD::from_shape_vec(IxDyn(&[2, 5]), vec![1u8, 2, 3, 4, 9, 5, 5, 0, 7, 9]).unwrap();
/// let mean = downsample(a.view(), &[1, 2], Downsample::Mean)?;
/// assert_eq!(mean.shape(), &[2, 2]);
/// // 1.5 -> 2, 3.5 -> 4, 5 -> 5, 3.5 -> 4 (half to even).
/// assert_eq!(mean.as_slice(), Some(&[2u8, 4, 5, 4][..]));
/// let max = downsample(a.view(), &[2, 2], Downsample::Max)?;
/// assert_eq!(max.as_slice(), Some(&[5u8, 7][..]));
/// assert!(downsample(a.view(), &[0, 2], Downsample::Max).is_err());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`OpsError::Factor`] when `factor` does not have one entry per axis of `data`, or has a 0.
pub fn downsample<T: Downsampled>(
    data: ArrayViewD<'_, T>,
    factor: &[u64],
    method: Downsample,
) -> Result<ArrayD<T>, OpsError> {
    let window_len = check_factor(factor, data.ndim())?;
    let window: Vec<usize> = factor
        .iter()
        .map(|&f| usize::try_from(f).unwrap_or(usize::MAX))
        .collect();
    let out_shape: Vec<usize> = data
        .shape()
        .iter()
        .zip(&window)
        .map(|(&n, &f)| n / f)
        .collect();
    let count: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(count);
    let mut scratch = Vec::new();
    if count > 0 && data.ndim() == 0 {
        out.extend(data.iter().copied());
    } else if count > 0 {
        // Output row after output row (the leading axes' indices in C order), the row's
        // windows are gathered into one buffer from contiguous runs of the input's last axis,
        // the leading window offsets in C order: each window is then in C order.
        let input = data.as_standard_layout();
        let flat = input.as_slice().ok_or_else(|| {
            OpsError::Internal("downsample: a standard layout that is not contiguous".into())
        })?;
        let dims = data.ndim();
        let last = dims - 1;
        let mut stride = vec![1usize; dims];
        for k in (0..last).rev() {
            stride[k] = stride[k + 1] * data.shape()[k + 1];
        }
        let (row_out, f_last) = (out_shape[last], window[last]);
        // The mean of u8: the windows' sums in u16, axis after axis.
        if method == Downsample::Mean
            && window_len <= 257
            && let Some(out) = mean_u16(flat, data.shape(), &window, &out_shape, window_len)
        {
            return ArrayD::from_shape_vec(IxDyn(&out_shape), out).map_err(|e| {
                OpsError::Internal(format!("downsample: output shape {out_shape:?}: {e}"))
            });
        }
        // The mean of small integers: every window's sum is added up run by run straight from
        // the input rows, without gathering the windows.
        if method == Downsample::Mean && window_len <= 1 << 30 {
            let n = i64::try_from(window_len).unwrap_or(i64::MAX);
            let mut sums = vec![0i64; row_out];
            let mut o = vec![0usize; last];
            let mut summed = true;
            'sum_rows: loop {
                sums.fill(0);
                let mut w = vec![0usize; last];
                loop {
                    let start: usize = (0..last)
                        .map(|k| (o[k] * window[k] + w[k]) * stride[k])
                        .sum();
                    let row = &flat[start..start + row_out * f_last];
                    if !T::add_runs(&mut sums, row, f_last) {
                        summed = false;
                        break 'sum_rows;
                    }
                    if !next_index(&mut w, &window[..last]) {
                        break;
                    }
                }
                out.extend(sums.iter().map(|&sum| T::mean_from_sum(sum, n)));
                if !next_index(&mut o, &out_shape[..last]) {
                    break 'sum_rows;
                }
            }
            if summed {
                return ArrayD::from_shape_vec(IxDyn(&out_shape), out).map_err(|e| {
                    OpsError::Internal(format!("downsample: output shape {out_shape:?}: {e}"))
                });
            }
            out.clear();
        }
        let mut windows = vec![T::default(); row_out * window_len];
        let mut o = vec![0usize; last];
        'rows: loop {
            let mut w = vec![0usize; last];
            let mut pos = 0;
            loop {
                let start: usize = (0..last)
                    .map(|k| (o[k] * window[k] + w[k]) * stride[k])
                    .sum();
                let row = &flat[start..start + row_out * f_last];
                // Element by element: runs are short (2 voxels for factor 2), too short for a
                // memcpy call each.
                for (win, run) in windows
                    .chunks_exact_mut(window_len)
                    .zip(row.chunks_exact(f_last))
                {
                    for (d, &v) in win[pos..pos + f_last].iter_mut().zip(run) {
                        *d = v;
                    }
                }
                pos += f_last;
                if !next_index(&mut w, &window[..last]) {
                    break;
                }
            }
            let wins = windows.chunks_exact(window_len);
            match method {
                // The common case without a match per window.
                Downsample::Mean => out.extend(wins.map(T::mean_of)),
                _ => out.extend(wins.map(|win| reduce(method, win, &mut scratch))),
            }
            if !next_index(&mut o, &out_shape[..last]) {
                break 'rows;
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), out)
        .map_err(|e| OpsError::Internal(format!("downsample: output shape {out_shape:?}: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ndarray::Slice;
    use proptest::prelude::*;

    const METHODS: [Downsample; 5] = [
        Downsample::Mean,
        Downsample::Mode,
        Downsample::Max,
        Downsample::Min,
        Downsample::FirstNonZero,
    ];

    /// The reference, written independently: explicit index loops over the output and each
    /// window, values collected in C order, reduced with f64/i128 arithmetic and `round_ties_even`.
    fn naive<T: Downsampled + Into<f64>>(
        data: &ArrayD<T>,
        factor: &[u64],
        method: Downsample,
        int: bool,
    ) -> ArrayD<T>
    where
        f64: ToT<T>,
    {
        let f: Vec<usize> = factor.iter().map(|&x| x as usize).collect();
        let shape: Vec<usize> = data.shape().iter().zip(&f).map(|(n, f)| n / f).collect();
        let total: usize = shape.iter().product();
        let mut out = Vec::new();
        for flat in 0..total {
            // The output index of `flat`, C order.
            let mut o = vec![0; shape.len()];
            let mut rest = flat;
            for d in (0..shape.len()).rev() {
                o[d] = rest % shape[d];
                rest /= shape[d];
            }
            let wlen: usize = f.iter().product();
            let mut vals = Vec::new();
            for wflat in 0..wlen {
                let mut i = vec![0; f.len()];
                let mut rest = wflat;
                for d in (0..f.len()).rev() {
                    i[d] = o[d] * f[d] + rest % f[d];
                    rest /= f[d];
                }
                vals.push(data[IxDyn(&i)]);
            }
            let v = match method {
                Downsample::Mean => {
                    if int {
                        // Exact for the small values of the tests.
                        let s: f64 = vals.iter().map(|&v| v.into()).sum();
                        (s / wlen as f64).round_ties_even().to_t()
                    } else {
                        let s: f64 = vals.iter().map(|&v| v.into()).sum();
                        (s / wlen as f64).to_t()
                    }
                }
                Downsample::Max => *vals
                    .iter()
                    .max_by(|a, b| a.partial_cmp(b).unwrap())
                    .unwrap(),
                Downsample::Min => *vals
                    .iter()
                    .min_by(|a, b| a.partial_cmp(b).unwrap())
                    .unwrap(),
                Downsample::FirstNonZero => vals
                    .iter()
                    .copied()
                    .find(|&v| v.into() != 0.0)
                    .unwrap_or_default(),
                Downsample::Mode => {
                    let mut best = vals[0];
                    let mut best_count = 0;
                    for &c in &vals {
                        let count = vals.iter().filter(|&&v| v == c).count();
                        if count > best_count || (count == best_count && c < best) {
                            best = c;
                            best_count = count;
                        }
                    }
                    best
                }
            };
            out.push(v);
        }
        ArrayD::from_shape_vec(IxDyn(&shape), out).unwrap()
    }

    trait ToT<T> {
        fn to_t(self) -> T;
    }
    macro_rules! to_t_impl {
        ($($t:ty),*) => {$(
            impl ToT<$t> for f64 {
                fn to_t(self) -> $t {
                    self as $t
                }
            }
        )*};
    }
    to_t_impl!(u8, u16, u32, i8, i16, i32, f32, f64);

    #[test]
    fn integer_mean_rounds_half_to_even_like_numpy() {
        let cases: [(&[i32], i32); 8] = [
            (&[2, 3], 2),       // 2.5
            (&[3, 4], 4),       // 3.5
            (&[-2, -3], -2),    // -2.5
            (&[-3, -4], -4),    // -3.5
            (&[1, 2, 2], 2),    // 1.67
            (&[1, 1, 2], 1),    // 1.33
            (&[0, 1], 0),       // 0.5
            (&[1, 2, 3, 4], 2), // 2.5
        ];
        for (window, want) in cases {
            let a = ArrayD::from_shape_vec(IxDyn(&[window.len()]), window.to_vec()).unwrap();
            let got = downsample(a.view(), &[window.len() as u64], Downsample::Mean).unwrap();
            assert_eq!(got[[0]], want, "{window:?}");
        }
        // u8: 1.5 -> 2, 0.5 -> 0, 254.5 -> 254, and no overflow at the top.
        let a =
            ArrayD::from_shape_vec(IxDyn(&[8]), vec![1u8, 2, 0, 1, 254, 255, 255, 255]).unwrap();
        let got = downsample(a.view(), &[2], Downsample::Mean).unwrap();
        assert_eq!(got.as_slice(), Some(&[2u8, 0, 254, 255][..]));
        // u64 and i64 extremes sum exactly.
        let a = ArrayD::from_shape_vec(IxDyn(&[2]), vec![u64::MAX, u64::MAX - 1]).unwrap();
        assert_eq!(
            downsample(a.view(), &[2], Downsample::Mean).unwrap()[[0]],
            u64::MAX - 1 // (2^64 - 1.5) -> ties to even
        );
        let a = ArrayD::from_shape_vec(IxDyn(&[2]), vec![i64::MIN, i64::MAX]).unwrap();
        assert_eq!(
            downsample(a.view(), &[2], Downsample::Mean).unwrap()[[0]],
            0
        ); // -0.5 -> 0
    }

    #[test]
    fn u8_means_of_the_largest_u16_windows_are_exact() {
        // Windows of 256, 257 (the largest whose sums fit u16) and 258 values (summed in i64).
        for n in [256usize, 257, 258] {
            let a = ArrayD::from_elem(IxDyn(&[2 * n]), 255u8);
            let got = downsample(a.view(), &[n as u64], Downsample::Mean).unwrap();
            assert_eq!(got.as_slice(), Some(&[255u8, 255][..]), "{n}");
            // Sums k·n + r around the half: r = n/2 ties to even (k = 6 stays, 7 goes up).
            for (k, r) in [(6usize, n / 2), (7, n / 2), (6, n / 2 + 1), (6, n / 2 - 1)] {
                let mut v = vec![k as u8; n];
                for x in v.iter_mut().take(r) {
                    *x += 1;
                }
                let a = ArrayD::from_shape_vec(IxDyn(&[n]), v.clone()).unwrap();
                let got = downsample(a.view(), &[n as u64], Downsample::Mean).unwrap()[[0]];
                let a = ArrayD::from_shape_vec(IxDyn(&[1, n]), v).unwrap();
                let want = naive(&a, &[1, n as u64], Downsample::Mean, true)[[0, 0]];
                assert_eq!(got, want, "n {n}, k {k}, r {r}");
            }
        }
    }

    #[test]
    fn mode_ties_go_to_the_smallest_value() {
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 4]), vec![7u32, 3, 3, 9, 7, 9, 5, 5]).unwrap();
        // Windows [7,3,7,9] -> 7; [3,9,5,5] -> 5.
        let got = downsample(a.view(), &[2, 2], Downsample::Mode).unwrap();
        assert_eq!(got.as_slice(), Some(&[7u32, 5][..]));
        // All different: the smallest.
        let a = ArrayD::from_shape_vec(IxDyn(&[4]), vec![4i8, -1, 3, 2]).unwrap();
        assert_eq!(
            downsample(a.view(), &[4], Downsample::Mode).unwrap()[[0]],
            -1
        );
    }

    #[test]
    fn first_non_zero_is_in_c_order_of_the_window() {
        // Window [[0, 0], [5, 6]] with factor [2, 2]: 5 comes first in C order; 0 if none.
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 4]), vec![0u16, 0, 0, 0, 5, 6, 0, 0]).unwrap();
        let got = downsample(a.view(), &[2, 2], Downsample::FirstNonZero).unwrap();
        assert_eq!(got.as_slice(), Some(&[5u16, 0][..]));
    }

    #[test]
    fn float_max_and_min_propagate_nan() {
        let a = ArrayD::from_shape_vec(IxDyn(&[4]), vec![1.0f32, f32::NAN, 2.0, 3.0]).unwrap();
        assert!(downsample(a.view(), &[2], Downsample::Max).unwrap()[[0]].is_nan());
        assert!(downsample(a.view(), &[2], Downsample::Min).unwrap()[[0]].is_nan());
        assert_eq!(
            downsample(a.view(), &[2], Downsample::Max).unwrap()[[1]],
            3.0
        );
    }

    #[test]
    fn bad_factors_are_errors_naming_the_problem() {
        let a = ArrayD::<u8>::zeros(IxDyn(&[4, 4]));
        let e = downsample(a.view(), &[2], Downsample::Mean).unwrap_err();
        assert!(
            e.to_string().contains("has 1 axes but the array has 2"),
            "{e}"
        );
        let e = downsample(a.view(), &[2, 0], Downsample::Mean).unwrap_err();
        assert!(e.to_string().contains("is 0 on axis 1"), "{e}");
        let e = downsample(a.view(), &[u64::MAX, u64::MAX], Downsample::Mean).unwrap_err();
        assert!(e.to_string().contains("too large to count"), "{e}");
    }

    #[test]
    fn factors_larger_than_the_array_give_an_empty_axis() {
        let a = ArrayD::<u8>::ones(IxDyn(&[3, 4]));
        let got = downsample(a.view(), &[4, 2], Downsample::Mean).unwrap();
        assert_eq!(got.shape(), &[0, 2]);
    }

    #[test]
    fn methods_parse_and_display() {
        for m in METHODS {
            assert_eq!(m.to_string().parse::<Downsample>().unwrap(), m);
        }
        assert!("median".parse::<Downsample>().is_err());
    }

    fn case() -> impl Strategy<Value = (Vec<usize>, Vec<u64>, u64)> {
        (1usize..=3).prop_flat_map(|dims| {
            (
                proptest::collection::vec(1usize..=9, dims),
                proptest::collection::vec(1u64..=4, dims),
                any::<u64>(),
            )
        })
    }

    /// Deterministic pseudo-random values in `0..range` (few distinct values so modes tie).
    fn values(seed: u64, n: usize, range: u64) -> Vec<u64> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % range
            })
            .collect()
    }

    fn check<T: Downsampled + Into<f64>>(
        shape: &[usize],
        factor: &[u64],
        vals: Vec<T>,
        int: bool,
    ) -> Result<(), TestCaseError>
    where
        f64: ToT<T>,
    {
        let a = ArrayD::from_shape_vec(IxDyn(shape), vals).unwrap();
        for m in METHODS {
            let got = downsample(a.view(), factor, m).unwrap();
            let want = naive(&a, factor, m, int);
            prop_assert_eq!(got.shape(), want.shape());
            for (g, w) in got.iter().zip(want.iter()) {
                prop_assert!(g.order(w) == Ordering::Equal, "{m}: {g:?} != {w:?}");
            }
        }
        Ok(())
    }

    /// A view that is not in standard layout (transposed, stepped) reduces like its copy.
    #[test]
    fn views_in_any_layout_reduce_like_their_copies() {
        let a = ArrayD::from_shape_fn(IxDyn(&[6, 9, 8]), |i| {
            (i[0] * 31 + i[1] * 7 + i[2] * 3) as u16 % 13
        });
        let t = a.view().reversed_axes();
        let stepped =
            a.slice_each_axis(|ax| Slice::new(0, None, if ax.axis.index() == 1 { 2 } else { 1 }));
        for v in [t, stepped] {
            for m in METHODS {
                let got = downsample(v.view(), &[2, 2, 3], m).unwrap();
                let want =
                    downsample(v.to_owned().as_standard_layout().view(), &[2, 2, 3], m).unwrap();
                assert_eq!(got, want, "{m}");
                assert_eq!(got, naive(&v.to_owned(), &[2, 2, 3], m, true), "{m}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_method_matches_the_naive_reference((shape, factor, seed) in case()) {
            let n: usize = shape.iter().product();
            let v = values(seed, n, 5);
            check(&shape, &factor, v.iter().map(|&x| x as u8).collect(), true)?;
            // u8 over its whole range (the u16 sums of its mean).
            let u = values(seed ^ 0x51ed, n, 256);
            check(&shape, &factor, u.iter().map(|&x| x as u8).collect(), true)?;
            check(&shape, &factor, v.iter().map(|&x| x as i16 - 2).collect(), true)?;
            check(&shape, &factor, v.iter().map(|&x| (x as u32) * 1_000_000).collect(), true)?;
            check(&shape, &factor, v.iter().map(|&x| x as i32 * -7).collect(), true)?;
            let w = values(seed ^ 0x9e37, n, 1000);
            check(&shape, &factor, w.iter().map(|&x| x as f32 / 8.0 - 50.0).collect(), false)?;
            check(&shape, &factor, w.iter().map(|&x| x as f64 / 3.0).collect(), false)?;
        }
    }
}
