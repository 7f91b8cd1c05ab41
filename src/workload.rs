//! The benchmark workload shared by the pipeline example, `blockwise bench zarr` and the
//! side-by-side comparison (`benches/compare/`): a 3×3×3 box mean on `u8` volumes.
//!
//! For a read region of shape `(nz, ny, nx)`, [`box_mean_3x3x3`] returns the mean of the 27
//! voxels around every voxel that has all its neighbours inside the region, as
//! `(sum + 13) / 27` in integers; the result has shape `(nz - 2, ny - 2, nx - 2)` (the outermost
//! shell has no neighbours and is cropped away). With at least one voxel of context around a
//! block, the blockwise result equals the box mean of the zero-padded whole volume.

/// The 3×3×3 box mean of a C-order `u8` region of shape `shape`, cropped by one voxel per side.
///
/// Returns an empty vector if any axis is shorter than 3.
///
/// ```
/// use blockwise::workload::box_mean_3x3x3;
/// let region = vec![27u8; 4 * 3 * 3];
/// assert_eq!(box_mean_3x3x3(&region, [4, 3, 3]), vec![27, 27]);
/// ```
///
/// # Panics
///
/// If `data.len()` is not the product of `shape`.
#[must_use]
pub fn box_mean_3x3x3(data: &[u8], shape: [usize; 3]) -> Vec<u8> {
    let [nz, ny, nx] = shape;
    assert_eq!(
        data.len(),
        nz * ny * nx,
        "region of shape {shape:?} has {} voxels",
        data.len()
    );
    if nz < 3 || ny < 3 || nx < 3 {
        return Vec::new();
    }
    let (oz, oy, ox) = (nz - 2, ny - 2, nx - 2);
    // Sum along x, then y, then z (separable box filter).
    let mut sx = vec![0u16; nz * ny * ox];
    for zy in 0..nz * ny {
        let row = &data[zy * nx..(zy + 1) * nx];
        let out = &mut sx[zy * ox..(zy + 1) * ox];
        for (x, o) in out.iter_mut().enumerate() {
            *o = u16::from(row[x]) + u16::from(row[x + 1]) + u16::from(row[x + 2]);
        }
    }
    let mut sy = vec![0u16; nz * oy * ox];
    for z in 0..nz {
        for y in 0..oy {
            let a = (z * ny + y) * ox;
            let o = (z * oy + y) * ox;
            for x in 0..ox {
                sy[o + x] = sx[a + x] + sx[a + ox + x] + sx[a + 2 * ox + x];
            }
        }
    }
    let plane = oy * ox;
    let mut out = vec![0u8; oz * plane];
    for z in 0..oz {
        for i in 0..plane {
            let s = u32::from(sy[z * plane + i])
                + u32::from(sy[(z + 1) * plane + i])
                + u32::from(sy[(z + 2) * plane + i]);
            out[z * plane + i] = ((s + 13) / 27) as u8;
        }
    }
    out
}

/// A block's read region does not fit its write region and context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "read region of shape {read:?} cannot hold a write region of shape {write:?} with {context} voxels of context (at least 1) on every side"
)]
pub struct BlockShapeError {
    /// The read region's shape.
    pub read: Vec<usize>,
    /// The write region's shape.
    pub write: [usize; 3],
    /// The context.
    pub context: usize,
}

/// The 3×3×3 box mean of one block: `read` is the block's read region, with `context` voxels
/// (at least 1) around its write region of shape `write` on every side; the result has shape
/// `write`. Only the write region plus one voxel per side is filtered.
///
/// ```
/// use blockwise::workload::box_mean_block;
/// use ndarray::ArrayD;
///
/// let read = ArrayD::from_elem(vec![6, 6, 6], 9u8); // a 2³ write region with 2 voxels of context
/// let mean = box_mean_block(read.view(), 2, [2, 2, 2]).unwrap();
/// assert_eq!(mean, ArrayD::from_elem(vec![2, 2, 2], 9u8));
/// assert!(box_mean_block(read.view(), 0, [6, 6, 6]).is_err());
/// ```
///
/// # Errors
///
/// `read` is not 3D or not `write + 2 * context` on some axis, or `context` is 0.
pub fn box_mean_block(
    read: ndarray::ArrayViewD<'_, u8>,
    context: usize,
    write: [usize; 3],
) -> Result<ndarray::ArrayD<u8>, BlockShapeError> {
    let err = || BlockShapeError {
        read: read.shape().to_vec(),
        write,
        context,
    };
    if context == 0 || read.ndim() != 3 || (0..3).any(|d| read.shape()[d] != write[d] + 2 * context)
    {
        return Err(err());
    }
    let core = read.slice_each_axis(|ax| {
        ndarray::Slice::from(context - 1..context + 1 + write[ax.axis.index()])
    });
    let core = core.as_standard_layout();
    let data = core.as_slice().ok_or_else(err)?;
    let mean = box_mean_3x3x3(data, [write[0] + 2, write[1] + 2, write[2] + 2]);
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&write), mean).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::box_mean_3x3x3;

    fn naive(data: &[u8], [nz, ny, nx]: [usize; 3]) -> Vec<u8> {
        let mut out = Vec::new();
        for z in 1..nz - 1 {
            for y in 1..ny - 1 {
                for x in 1..nx - 1 {
                    let mut s = 0u32;
                    for dz in 0..3 {
                        for dy in 0..3 {
                            for dx in 0..3 {
                                s += u32::from(
                                    data[((z + dz - 1) * ny + y + dy - 1) * nx + x + dx - 1],
                                );
                            }
                        }
                    }
                    out.push(((s + 13) / 27) as u8);
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_naive_definition() {
        let shape = [5, 6, 7];
        let data: Vec<u8> = (0..5 * 6 * 7)
            .map(|i| ((i * 37 + 11) % 256) as u8)
            .collect();
        assert_eq!(box_mean_3x3x3(&data, shape), naive(&data, shape));
        let max = vec![255u8; 27];
        assert_eq!(box_mean_3x3x3(&max, [3, 3, 3]), vec![255]);
        assert!(box_mean_3x3x3(&[0; 8], [2, 2, 2]).is_empty());
    }
}
