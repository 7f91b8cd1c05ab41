//! Assembling a read region from whole decoded chunks ([`ZarrArray::open_cached`]'s reads).
//!
//! zarrs' cached `retrieve_array_subset` extracts each chunk's overlap into a buffer of its own,
//! copies that into an output byte buffer element by element, then converts the bytes to a
//! `Vec<T>`: three copies and two allocations per block. Here each overlapping chunk is taken
//! from the cache once, as the cache holds it, and its overlap copied row by row (runs of
//! contiguous elements) straight into the block's `Vec<T>`.
//!
//! [`ZarrArray::open_cached`]: super::ZarrArray::open_cached

use std::ops::Range;

use super::Scalar;

/// Copies the part of a decoded chunk that overlaps the region `ranges` and lies before `end`
/// (the array's end) into `out`, the region's elements in C order.
///
/// The chunk covers `chunk_start .. chunk_start + chunk_shape` (it may extend past `end`, as
/// edge chunks do) and `chunk` holds its elements in C order as native-endian bytes.
/// Elements of `out` outside the chunk or past `end` are left alone.
///
/// # Errors
///
/// A message if the dimensionalities differ or `out` or `chunk` do not have the sizes their
/// shapes imply.
pub(super) fn copy_chunk_overlap<T: Scalar>(
    out: &mut [T],
    ranges: &[Range<u64>],
    chunk_start: &[u64],
    chunk_shape: &[u64],
    chunk: &[u8],
    end: &[u64],
) -> Result<(), String> {
    let dims = ranges.len();
    if chunk_start.len() != dims || chunk_shape.len() != dims || end.len() != dims {
        return Err(format!(
            "a {dims}-dimensional region and a chunk of {} dimensions",
            chunk_shape.len()
        ));
    }
    let size = std::mem::size_of::<T>();
    let out_shape: Vec<u64> = ranges
        .iter()
        .map(|r| r.end.saturating_sub(r.start))
        .collect();
    let out_len = to_usize(out_shape.iter().try_fold(1u64, |a, &s| a.checked_mul(s)))?;
    let chunk_len = to_usize(chunk_shape.iter().try_fold(1u64, |a, &s| a.checked_mul(s)))?;
    if out.len() != out_len {
        return Err(format!(
            "an output of {} elements for a region of {out_len}",
            out.len()
        ));
    }
    if Some(chunk.len()) != chunk_len.checked_mul(size) {
        return Err(format!(
            "a decoded chunk of {} bytes, expected {chunk_len} elements of {size} bytes",
            chunk.len()
        ));
    }
    if dims == 0 {
        <T as super::sealed::Sealed>::bytes_mut(out).copy_from_slice(chunk);
        return Ok(());
    }
    // The overlap, in array coordinates.
    let mut lo = Vec::with_capacity(dims);
    let mut hi = Vec::with_capacity(dims);
    for d in 0..dims {
        let chunk_end = chunk_start[d].saturating_add(chunk_shape[d]);
        let (l, h) = (
            ranges[d].start.max(chunk_start[d]),
            ranges[d].end.min(chunk_end).min(end[d]),
        );
        if l >= h {
            return Ok(());
        }
        lo.push(l);
        hi.push(h);
    }
    // The contiguous run: the innermost axis, and the axes outside it for as long as the
    // overlap spans the whole chunk and the whole region along the axes inside.
    let mut inner = dims - 1;
    while inner > 0 {
        let d = inner;
        let whole = hi[d] - lo[d] == chunk_shape[d] && hi[d] - lo[d] == out_shape[d];
        if !whole {
            break;
        }
        inner -= 1;
    }
    let run: u64 = (inner..dims).map(|d| hi[d] - lo[d]).product();
    let run = to_usize(Some(run))?;
    // Element strides of the region and of the chunk.
    let mut out_stride = vec![1u64; dims];
    let mut chunk_stride = vec![1u64; dims];
    for d in (0..dims - 1).rev() {
        out_stride[d] = out_stride[d + 1] * out_shape[d + 1];
        chunk_stride[d] = chunk_stride[d + 1] * chunk_shape[d + 1];
    }
    let offset = |idx: &[u64]| -> (u64, u64) {
        let mut o = 0;
        let mut c = 0;
        for d in 0..dims {
            o += (idx[d] - ranges[d].start) * out_stride[d];
            c += (idx[d] - chunk_start[d]) * chunk_stride[d];
        }
        (o, c)
    };
    let out_bytes = <T as super::sealed::Sealed>::bytes_mut(out);
    // An odometer over the axes outside the run (`idx[inner..]` stays at `lo`).
    let mut idx = lo.clone();
    loop {
        let (o, c) = offset(&idx);
        let (o, c) = (to_usize(Some(o))? * size, to_usize(Some(c))? * size);
        let bytes = run * size;
        out_bytes[o..o + bytes].copy_from_slice(&chunk[c..c + bytes]);
        let mut d = inner;
        loop {
            if d == 0 {
                return Ok(());
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < hi[d] {
                break;
            }
            idx[d] = lo[d];
        }
    }
}

fn to_usize(n: Option<u64>) -> Result<usize, String> {
    n.and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| "a region or chunk too large to address".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The element at `idx` of a chunk starting at `start`, by the naive definition.
    fn naive(
        ranges: &[Range<u64>],
        chunk_start: &[u64],
        chunk_shape: &[u64],
        chunk: &[u16],
        end: &[u64],
        out: &mut [u16],
    ) {
        let dims = ranges.len();
        let shape: Vec<u64> = ranges.iter().map(|r| r.end - r.start).collect();
        let total: u64 = shape.iter().product();
        for flat in 0..total {
            let mut rest = flat;
            let mut idx = vec![0u64; dims];
            for d in (0..dims).rev() {
                idx[d] = ranges[d].start + rest % shape[d];
                rest /= shape[d];
            }
            let inside = (0..dims).all(|d| {
                idx[d] >= chunk_start[d]
                    && idx[d] < chunk_start[d] + chunk_shape[d]
                    && idx[d] < end[d]
            });
            if inside {
                let mut c = 0u64;
                for d in 0..dims {
                    c = c * chunk_shape[d] + (idx[d] - chunk_start[d]);
                }
                out[flat as usize] = chunk[c as usize];
            }
        }
    }

    type Case = (Vec<Range<u64>>, Vec<u64>, Vec<u64>, Vec<u64>);

    fn case() -> impl Strategy<Value = Case> {
        (1usize..=4).prop_flat_map(|dims| {
            (
                prop::collection::vec((0u64..12, 0u64..6), dims),
                prop::collection::vec((0u64..12, 1u64..6, 0u64..20), dims),
            )
                .prop_map(|(r, c)| {
                    let ranges = r.into_iter().map(|(s, l)| s..s + l).collect();
                    let mut start = Vec::new();
                    let mut shape = Vec::new();
                    let mut end = Vec::new();
                    for (s, l, e) in c {
                        start.push(s);
                        shape.push(l);
                        end.push(e);
                    }
                    (ranges, start, shape, end)
                })
        })
    }

    proptest! {
        #[test]
        fn matches_the_naive_copy((ranges, start, shape, end) in case()) {
            let n: u64 = shape.iter().product();
            let chunk: Vec<u16> = (0..n).map(|i| 1000 + i as u16).collect();
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_ne_bytes()).collect();
            let len: u64 = ranges.iter().map(|r| r.end - r.start).product();
            let mut want = vec![7u16; len as usize];
            naive(&ranges, &start, &shape, &chunk, &end, &mut want);
            let mut got = vec![7u16; len as usize];
            copy_chunk_overlap(&mut got, &ranges, &start, &shape, &bytes, &end)
                .map_err(TestCaseError::fail)?;
            prop_assert_eq!(got, want);
        }
    }

    /// An array of `shape` voxels in `chunk`-shaped chunks (edge chunks where they do not
    /// divide) with fill value 9, of which only the first half along axis 0 is written: the
    /// chunks past it are missing.
    fn array(
        dir: &std::path::Path,
        shape: &[i64],
        chunk: &[u64],
        format: super::super::ZarrFormat,
        shard: Option<Vec<u64>>,
    ) -> super::super::ZarrArray {
        use super::super::{ArraySpec, DataType, ZarrArray};
        use crate::Roi;
        let dims = shape.len();
        let roi = Roi::new(vec![0i64; dims], shape.to_vec());
        let mut spec = ArraySpec::new(roi, vec![1i64; dims], DataType::U16, chunk.to_vec());
        spec.fill_value = 9.0;
        spec.format = format;
        spec.shard_shape = shard;
        let a = ZarrArray::create(dir, "a", &spec).expect("create");
        let mut half = shape.to_vec();
        half[0] /= 2;
        let n: i64 = half.iter().product();
        let dims_u: Vec<usize> = half.iter().map(|&h| h as usize).collect();
        let data = ndarray::ArrayD::from_shape_vec(
            ndarray::IxDyn(&dims_u),
            (0..n).map(|i| (i % 60000) as u16 + 100).collect(),
        )
        .expect("shape");
        a.write(&Roi::new(vec![0i64; dims], half), data.view())
            .expect("write");
        a
    }

    fn rois(shape: Vec<i64>) -> impl Strategy<Value = Vec<crate::Roi>> {
        let axes: Vec<_> = shape
            .into_iter()
            .map(|s| (0..s).prop_flat_map(move |o| (Just(o), 0..=s - o)))
            .collect();
        prop::collection::vec(axes, 1..8).prop_map(|rs| {
            rs.into_iter()
                .map(|axes| {
                    let (o, l): (Vec<i64>, Vec<i64>) = axes.into_iter().unzip();
                    crate::Roi::new(o, l)
                })
                .collect()
        })
    }

    fn compare(
        plain: &super::super::ZarrArray,
        cached: &super::super::ZarrArray,
        rois: &[crate::Roi],
    ) {
        for roi in rois {
            let want = plain.read::<u16>(roi).expect("uncached read");
            let got = cached.read::<u16>(roi).expect("cached read");
            assert_eq!(got.data(), want.data(), "{roi}");
            // With context past the border, as blocks read.
            let grown = roi.grow(vec![3i64; roi.dims()], vec![2i64; roi.dims()]);
            let want = plain
                .read_with_fill::<u16>(&grown, 5)
                .expect("uncached padded read");
            let got = cached
                .read_with_fill::<u16>(&grown, 5)
                .expect("cached padded read");
            assert_eq!(got.data(), want.data(), "{grown}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn cached_reads_match_uncached_3d(rois in rois(vec![13, 10, 7])) {
            let dir = tempfile::tempdir().expect("tempdir");
            let plain = array(dir.path(), &[13, 10, 7], &[4, 3, 5], super::super::ZarrFormat::V3, None);
            // A small cache, so that chunks are evicted and decoded again.
            let cached = super::super::ZarrArray::open_cached(dir.path(), "a", 4096).expect("open");
            compare(&plain, &cached, &rois);
        }

        #[test]
        fn cached_reads_match_uncached_other_layouts(rois in rois(vec![9, 11])) {
            let dir = tempfile::tempdir().expect("tempdir");
            let v2 = dir.path().join("v2");
            let plain = array(&v2, &[9, 11], &[2, 4], super::super::ZarrFormat::V2, None);
            let cached = super::super::ZarrArray::open_cached(&v2, "a", 1 << 20).expect("open");
            compare(&plain, &cached, &rois);
            let sharded = dir.path().join("sharded");
            let plain = array(&sharded, &[9, 11], &[2, 4], super::super::ZarrFormat::V3, Some(vec![4, 8]));
            let cached = super::super::ZarrArray::open_cached(&sharded, "a", 1 << 20).expect("open");
            compare(&plain, &cached, &rois);
        }
    }

    #[test]
    fn cached_reads_in_1d_and_4d() {
        for (shape, chunk) in [
            (vec![17i64], vec![5u64]),
            (vec![3, 4, 5, 6], vec![2, 3, 2, 4]),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let plain = array(
                dir.path(),
                &shape,
                &chunk,
                super::super::ZarrFormat::V3,
                None,
            );
            let cached =
                super::super::ZarrArray::open_cached(dir.path(), "a", 1 << 20).expect("open");
            let all = plain.roi();
            let inner = all.grow(vec![-1i64; shape.len()], vec![-1i64; shape.len()]);
            let empty = crate::Roi::new(vec![1i64; shape.len()], vec![0i64; shape.len()]);
            compare(&plain, &cached, &[all, inner, empty]);
        }
    }

    #[test]
    fn rejects_mismatched_sizes() {
        let mut out = vec![0u8; 4];
        let r = [0..2u64, 0..2];
        assert!(copy_chunk_overlap(&mut out, &r, &[0, 0], &[2, 2], &[0; 3], &[2, 2]).is_err());
        assert!(copy_chunk_overlap(&mut out[..3], &r, &[0, 0], &[2, 2], &[0; 4], &[2, 2]).is_err());
        assert!(copy_chunk_overlap(&mut out, &r, &[0], &[2], &[0; 2], &[2]).is_err());
        assert!(copy_chunk_overlap(&mut out, &r, &[0, 0], &[2, 2], &[1, 2, 3, 4], &[9, 9]).is_ok());
        assert_eq!(out, [1, 2, 3, 4]);
    }
}
