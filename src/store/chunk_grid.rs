//! The chunk grid of an array in world units, and the check that a task's blocks write whole
//! chunks (so that concurrent writers never share a chunk).

use std::fmt;

use crate::geometry::Coordinate;

/// Where an array's chunks lie, in world units: chunk `i` covers
/// `offset + i * chunk ... offset + (i + 1) * chunk` per axis. For sharded arrays this is the
/// shard grid (the unit a writer rewrites).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkGrid {
    /// A name for messages (the array's path).
    pub name: String,
    /// The world position of the first chunk's begin (the array's offset).
    pub offset: Coordinate,
    /// The shape of one chunk (or shard) in world units (voxels × voxel size).
    pub chunk: Coordinate,
    /// Where the array's data lives (a zarr store directory, an HDF5 file), if on a local or
    /// mounted file system: a run directory syncs this file system before it marks blocks
    /// done, so that their outputs outlive a machine crash.
    pub path: Option<std::path::PathBuf>,
    /// The array's identity: a random id stored in its attributes when blockwise created it
    /// (`None` for arrays made by other tools). A run directory records the ids of the arrays
    /// a task writes, so that a rerun notices an output that was recreated after blocks were
    /// recorded as done.
    pub array_id: Option<String>,
}

impl fmt::Display for ChunkGrid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "array {} (chunks of {} world units from {})",
            self.name, self.chunk, self.offset
        )
    }
}

impl ChunkGrid {
    /// Checks that blocks whose write ROIs start at `first_write_begin + k * write_shape`
    /// (for every cell `k`) write whole chunks: the first begin lies on the chunk grid and the
    /// write shape is a multiple of the chunk shape. A boundary block that ends inside a chunk is
    /// fine, since no other block writes the rest of that chunk.
    ///
    /// # Errors
    ///
    /// A message naming the array, its chunk shape and the offending ROI values.
    pub fn check_writes(
        &self,
        first_write_begin: &Coordinate,
        write_shape: &Coordinate,
    ) -> Result<(), String> {
        if self.chunk.dims() != write_shape.dims() || self.offset.dims() != write_shape.dims() {
            return Err(format!(
                "{self} has {} dims but the task's write ROI has {}",
                self.chunk.dims(),
                write_shape.dims()
            ));
        }
        for d in 0..write_shape.dims() {
            let c = self.chunk[d];
            if c <= 0 {
                return Err(format!("{self} has a non-positive chunk shape in axis {d}"));
            }
            if write_shape[d] % c != 0 {
                return Err(format!(
                    "{self}: the write shape {write_shape} is not a multiple of the chunk shape {} (axis {d}); blocks would share chunks and lose each other's writes",
                    self.chunk
                ));
            }
            // In i128: the array's offset is independent of the task's ROIs, so the difference
            // may not fit in an i64.
            let shift = i128::from(first_write_begin[d]) - i128::from(self.offset[d]);
            if shift.rem_euclid(i128::from(c)) != 0 {
                return Err(format!(
                    "{self}: the first block's write ROI begins at {first_write_begin}, which is not on the chunk grid (axis {d}); blocks would share chunks and lose each other's writes"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> ChunkGrid {
        ChunkGrid {
            name: "out.zarr/raw".into(),
            path: None,
            offset: Coordinate::from([0, 0]),
            chunk: Coordinate::from([64, 64]),
            array_id: None,
        }
    }

    #[test]
    fn aligned_writes_pass() {
        assert!(
            grid()
                .check_writes(&[64, 0].into(), &[128, 64].into())
                .is_ok()
        );
    }

    #[test]
    fn misaligned_writes_fail_with_the_values() {
        let e = grid().check_writes(&[0, 0].into(), &[32, 64].into());
        assert_eq!(
            e,
            Err("array out.zarr/raw (chunks of (64, 64) world units from (0, 0)): the write shape (32, 64) is not a multiple of the chunk shape (64, 64) (axis 0); blocks would share chunks and lose each other's writes".into())
        );
        let e = grid().check_writes(&[8, 0].into(), &[64, 64].into()).err();
        assert!(e.is_some_and(|m| m.contains("begins at (8, 0)")));
    }
}
