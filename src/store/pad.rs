//! Padding of reads past an array's bounds: [`Pad`], scipy.ndimage's boundary modes.

use std::ops::Range;

use ndarray::{ArrayD, Axis, IxDyn};

/// How [`read_padded`](crate::store::ZarrArray::read_padded) fills voxels outside the array,
/// with the semantics of scipy.ndimage's `mode` of the same name. For an array `a b c d`:
///
/// | mode | left padding | array | right padding |
/// |---|---|---|---|
/// | `Constant(x)` | `x x` | `a b c d` | `x x` |
/// | `Nearest` | `a a` | `a b c d` | `d d` |
/// | `Reflect` | `b a` | `a b c d` | `d c` |
///
/// `Reflect` is half-sample symmetric (the edge voxel is repeated; numpy's `symmetric`), and
/// padding wider than the array reflects again and again as scipy does (`a b c d` padded by 6
/// on the left reads `c d d c b a | a b c d`). Padding is per axis, so corners combine the
/// axes' modes as scipy's do. `Nearest` and `Reflect` need an array with at least one voxel in
/// every axis; a ROI entirely outside the array is padded like any other.
///
/// ```
/// use blockwise::store::Pad;
///
/// // The voxel index read for index -2 of an array of 4 voxels.
/// assert_eq!(Pad::<u8>::Nearest.source_index(-2, 4), Some(0));
/// assert_eq!(Pad::<u8>::Reflect.source_index(-2, 4), Some(1));
/// assert_eq!(Pad::Constant(0u8).source_index(-2, 4), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pad<T> {
    /// Voxels outside are this value (scipy's `constant` with `cval`).
    Constant(T),
    /// Voxels outside repeat the nearest edge voxel (scipy's `nearest`).
    Nearest,
    /// Voxels outside mirror the array about its edges, the edge voxel repeated (scipy's
    /// `reflect`).
    Reflect,
}

impl<T> Pad<T> {
    /// The index (in `0..n`) of the voxel that voxel index `i` of an axis of `n` voxels reads,
    /// or `None` if it reads the constant (or `n` is 0).
    #[must_use]
    pub fn source_index(&self, i: i64, n: u64) -> Option<u64> {
        let (i, n) = (i128::from(i), i128::from(n));
        if n == 0 {
            return None;
        }
        if (0..n).contains(&i) {
            return Some(i as u64);
        }
        match self {
            Pad::Constant(_) => None,
            Pad::Nearest => Some(i.clamp(0, n - 1) as u64),
            Pad::Reflect => {
                let m = i.rem_euclid(2 * n);
                Some(if m < n { m } else { 2 * n - 1 - m } as u64)
            }
        }
    }

    /// The name of the mode, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Pad::Constant(_) => "constant",
            Pad::Nearest => "nearest",
            Pad::Reflect => "reflect",
        }
    }
}

/// How to assemble a padded read of voxel ranges `wanted` (any integers) from an array of
/// `shape`: read `source` (a box inside the array; `None` if nothing is read) and gather.
pub(crate) struct PadPlan {
    /// The box of the array to read, in voxels.
    pub(crate) source: Option<Vec<Range<u64>>>,
    /// Per axis, for every output index, the index into the read box (`None`: the constant).
    maps: Vec<Vec<Option<usize>>>,
}

impl PadPlan {
    /// Plans a read of `wanted` from an array of `shape` padded with `pad`.
    ///
    /// # Errors
    ///
    /// A message if `pad` needs voxels (nearest, reflect) but the array has an empty axis the
    /// output does not.
    pub(crate) fn new<T>(
        pad: &Pad<T>,
        wanted: &[Range<i64>],
        shape: &[u64],
    ) -> Result<PadPlan, String> {
        let empty_out = wanted.iter().any(|r| r.end <= r.start);
        let mut source = Vec::with_capacity(wanted.len());
        let mut maps = Vec::with_capacity(wanted.len());
        for (d, (r, &n)) in wanted.iter().zip(shape).enumerate() {
            if n == 0 && !empty_out && !matches!(pad, Pad::Constant(_)) {
                return Err(format!(
                    "cannot pad with mode {}: the array has no voxels in axis {d}",
                    pad.name()
                ));
            }
            let idx: Vec<Option<u64>> = (r.start..r.end.max(r.start))
                .map(|i| pad.source_index(i, n))
                .collect();
            let lo = idx.iter().flatten().min().copied();
            let hi = idx.iter().flatten().max().copied();
            match (lo, hi) {
                (Some(lo), Some(hi)) => {
                    source.push(lo..hi + 1);
                    maps.push(idx.iter().map(|i| i.map(|i| (i - lo) as usize)).collect());
                }
                _ => {
                    source.push(0..0);
                    maps.push(vec![None; idx.len()]);
                }
            }
        }
        let reads = !empty_out && source.iter().all(|r| r.start < r.end);
        Ok(PadPlan {
            source: reads.then_some(source),
            maps,
        })
    }

    /// The padded output from the read box (`data`, the shape of `source`; ignored if there
    /// is no source), `fill` where the constant is read.
    ///
    /// # Errors
    ///
    /// A message if `data` does not have the shape of the source box.
    pub(crate) fn assemble<T: Clone>(
        &self,
        data: Option<ArrayD<T>>,
        fill: T,
    ) -> Result<ArrayD<T>, String> {
        let out_shape: Vec<usize> = self.maps.iter().map(Vec::len).collect();
        let (Some(source), Some(mut data)) = (&self.source, data) else {
            return Ok(ArrayD::from_elem(IxDyn(&out_shape), fill));
        };
        let want: Vec<usize> = source.iter().map(|r| (r.end - r.start) as usize).collect();
        if data.shape() != want.as_slice() {
            return Err(format!(
                "the backend returned {:?} voxels for a read of {want:?}",
                data.shape()
            ));
        }
        // First the axes that repeat or reorder voxels, by gathering (no constant there, or
        // it is a constant axis handled below); then the constant's border, by assignment.
        let mut constant_slices = Vec::with_capacity(self.maps.len());
        for (axis, map) in self.maps.iter().enumerate() {
            let inner: Vec<usize> = map.iter().flatten().copied().collect();
            let first = map.iter().position(Option::is_some).unwrap_or(0);
            constant_slices.push(first..first + inner.len());
            let identity =
                inner.len() == data.shape()[axis] && inner.iter().enumerate().all(|(k, &i)| k == i);
            if !identity {
                data = data.select(Axis(axis), &inner);
            }
        }
        if constant_slices
            .iter()
            .zip(&out_shape)
            .all(|(r, &n)| r.start == 0 && r.end == n)
        {
            return Ok(data);
        }
        let mut out = ArrayD::from_elem(IxDyn(&out_shape), fill);
        out.slice_each_axis_mut(|ax| {
            ndarray::Slice::from(constant_slices[ax.axis.index()].clone())
        })
        .assign(&data);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::single_range_in_vec_init
)]
mod tests {
    use super::*;

    /// Pads a 1-D array by `left` and `right` voxels with `pad`.
    fn pad1(a: &[i32], left: i64, right: i64, pad: Pad<i32>) -> Vec<i32> {
        let n = a.len() as i64;
        let wanted = [-left..n + right];
        let plan = PadPlan::new(&pad, &wanted, &[n as u64]).unwrap();
        let data = plan.source.as_ref().map(|s| {
            ArrayD::from_shape_vec(
                IxDyn(&[(s[0].end - s[0].start) as usize]),
                a[s[0].start as usize..s[0].end as usize].to_vec(),
            )
            .unwrap()
        });
        let fill = match pad {
            Pad::Constant(c) => c,
            _ => 0,
        };
        plan.assemble(data, fill).unwrap().iter().copied().collect()
    }

    /// scipy.ndimage's modes by their definition, voxel by voxel: reflect walks outward,
    /// flipping direction at every edge (the edge voxel repeated).
    fn by_definition(a: &[i32], i: i64, pad: Pad<i32>) -> i32 {
        let n = a.len() as i64;
        match pad {
            Pad::Constant(c) if !(0..n).contains(&i) => c,
            Pad::Nearest => a[i.clamp(0, n - 1) as usize],
            Pad::Reflect => {
                let mut j = i;
                while !(0..n).contains(&j) {
                    j = if j < 0 { -1 - j } else { 2 * n - 1 - j };
                }
                a[j as usize]
            }
            Pad::Constant(_) => a[i as usize],
        }
    }

    #[test]
    fn one_d_literals_match_scipy() {
        // scipy.ndimage.map_coordinates / numpy.pad equivalents, written out by hand:
        // np.pad([1, 2, 3], 5, 'symmetric') == scipy 'reflect'.
        assert_eq!(
            pad1(&[1, 2, 3], 5, 5, Pad::Reflect),
            vec![2, 3, 3, 2, 1, 1, 2, 3, 3, 2, 1, 1, 2]
        );
        // np.pad([1, 2, 3], 5, 'edge') == scipy 'nearest'.
        assert_eq!(
            pad1(&[1, 2, 3], 5, 5, Pad::Nearest),
            vec![1, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3]
        );
        assert_eq!(
            pad1(&[1, 2, 3], 2, 1, Pad::Constant(9)),
            vec![9, 9, 1, 2, 3, 9]
        );
        // a b c d: b a | a b c d | d c, and 6 on the left: c d d c b a | a b c d.
        assert_eq!(
            pad1(&[1, 2, 3, 4], 2, 2, Pad::Reflect),
            vec![2, 1, 1, 2, 3, 4, 4, 3]
        );
        assert_eq!(
            pad1(&[1, 2, 3, 4], 6, 0, Pad::Reflect),
            vec![3, 4, 4, 3, 2, 1, 1, 2, 3, 4]
        );
        // One voxel: everything is that voxel.
        assert_eq!(pad1(&[7], 3, 2, Pad::Reflect), vec![7; 6]);
        assert_eq!(pad1(&[7], 3, 2, Pad::Nearest), vec![7; 6]);
    }

    #[test]
    fn every_mode_matches_the_definition_for_any_window() {
        let a = [5, -1, 8, 3, 0];
        for pad in [Pad::Constant(42), Pad::Nearest, Pad::Reflect] {
            for begin in -13..14 {
                for len in 0..12 {
                    let wanted = [begin..begin + len];
                    let plan = PadPlan::new(&pad, &wanted, &[5]).unwrap();
                    let data = plan.source.as_ref().map(|s| {
                        let r = s[0].start as usize..s[0].end as usize;
                        ArrayD::from_shape_vec(IxDyn(&[r.len()]), a[r].to_vec()).unwrap()
                    });
                    let got: Vec<i32> = plan.assemble(data, 42).unwrap().iter().copied().collect();
                    let want: Vec<i32> = (begin..begin + len)
                        .map(|i| by_definition(&a, i, pad))
                        .collect();
                    assert_eq!(got, want, "{pad:?} window {begin}..{}", begin + len);
                }
            }
        }
    }

    #[test]
    fn two_d_corners_combine_the_axes() {
        // [[1, 2], [3, 4]] padded by one all round.
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1, 2, 3, 4]).unwrap();
        let wanted = [-1..3, -1..3];
        let run = |pad: Pad<i32>| -> Vec<i32> {
            let plan = PadPlan::new(&pad, &wanted, &[2, 2]).unwrap();
            let data = plan.source.as_ref().map(|s| {
                a.slice_each_axis(|ax| {
                    let r = &s[ax.axis.index()];
                    ndarray::Slice::from(r.start as usize..r.end as usize)
                })
                .to_owned()
            });
            plan.assemble(data, 0).unwrap().iter().copied().collect()
        };
        #[rustfmt::skip]
        let reflect = vec![
            1, 1, 2, 2,
            1, 1, 2, 2,
            3, 3, 4, 4,
            3, 3, 4, 4,
        ];
        assert_eq!(run(Pad::Reflect), reflect);
        assert_eq!(run(Pad::Nearest), reflect);
        #[rustfmt::skip]
        let constant = vec![
            0, 0, 0, 0,
            0, 1, 2, 0,
            0, 3, 4, 0,
            0, 0, 0, 0,
        ];
        assert_eq!(run(Pad::Constant(0)), constant);
    }

    #[test]
    fn empty_arrays_cannot_be_reflected() {
        let e = PadPlan::new(&Pad::<u8>::Reflect, &[0..2], &[0]).err();
        assert_eq!(
            e.as_deref(),
            Some("cannot pad with mode reflect: the array has no voxels in axis 0")
        );
        // Constant is fine, and so is an empty output.
        assert!(PadPlan::new(&Pad::Constant(1u8), &[0..2], &[0]).is_ok());
        assert!(PadPlan::new(&Pad::<u8>::Nearest, &[3..3], &[0]).is_ok());
    }
}
