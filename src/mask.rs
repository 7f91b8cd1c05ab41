//! Masks that skip empty space: a task with a [`Mask`] runs only the blocks where the mask
//! has something.
//!
//! A mask is a zarr array ([`ZarrArray`]) and a predicate over the part of it under a block's
//! write ROI. Before a block is handed out (where the [check function](crate::TaskBuilder::check)
//! runs), the mask is read over the block's write ROI snapped outward to the mask's voxel grid
//! and cut to the mask's ROI, at the mask's own resolution, so a mask may be coarser (or finer)
//! than the task's data. A block whose region the predicate rejects, or whose write ROI lies
//! outside the mask's ROI altogether, is **masked out**: it is counted as completed and
//! skipped, releases the blocks downstream of it, and neither the process function nor the
//! check function is called for it.
//!
//! A masked-out block is never recorded as done in a run directory: a rerun with a mask that
//! now opens it runs it, and blocks that ran before stay done. This is why the mask is not
//! part of the task's layout (whose change refuses the rerun or discards its done-markers):
//! changing a mask must not throw away completed work. The run directory keeps what the mask
//! was (`tasks/<task>/mask.json`: its path, array id, ROI, voxel size and predicate) and the
//! run logs a warning when it differs from the last run's. The record includes a SHA-256 of
//! the mask's chunks under the task as stored ([`ZarrArray::stored_sha256`]: their encoded
//! bytes, read once when the run starts, not decoded), so a mask rewritten in place is
//! reported too. Which blocks run follows the voxels read when each block is about to be
//! handed out either way; the record is what tells the user the mask changed.
//!
//! A mask that cannot be read for a block (an I/O or decode error, or a predicate that
//! panics) fails that block's attempt, which is retried like a failed process function.
//!
//! Masks are evaluated one block at a time on the scheduler's thread, like check functions:
//! a coarse mask (a few voxels per block) keeps this cheap, and a mask opened with
//! [`ZarrArray::open_cached`] decodes a chunk that many blocks share once. With worker
//! processes, the mask is read by the scheduler's process only (workers build the task, and so
//! must be able to open the mask, but never read it).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::geometry::{GeometryError, Roi, Snap};
use crate::store::{DataType, RoiArray, Scalar, StoreError, ZarrArray};
use crate::util::panic_message;

/// The predicate over a block's mask region, type-erased.
type Predicate = dyn Fn(&ZarrArray, &Roi) -> Result<bool, StoreError> + Send + Sync;

/// A mask for [`TaskBuilder::mask`](crate::TaskBuilder::mask): a zarr array and a predicate
/// saying whether a block has anything to do.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use blockwise::mask::Mask;
/// use blockwise::store::{ArraySpec, DataType, ZarrArray};
/// use blockwise::{Roi, Task, run_blockwise};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("blockwise-doc-mask-{}", std::process::id()));
/// // A coarse mask: 10 voxels of 10 world units; only voxel 3 (world 30..40) is set.
/// let spec = ArraySpec::new(Roi::new([0], [100]), [10], DataType::U8, vec![10]);
/// let mask = ZarrArray::create(&dir, "mask", &spec)?;
/// let mut values = ndarray::Array1::<u8>::zeros(10);
/// values[3] = 1;
/// mask.write(&mask.roi(), &values.into_dyn())?;
///
/// // A task of 20 blocks of 5 world units: only the two blocks under voxel 3 run.
/// let ran = Arc::new(AtomicU64::new(0));
/// let r = Arc::clone(&ran);
/// let task = Task::builder("t", Roi::new([0], [100]), Roi::new([0], [5]), Roi::new([0], [5]))
///     .process(move |_| {
///         r.fetch_add(1, Ordering::SeqCst);
///         Ok(())
///     })
///     .mask(Mask::nonzero(&mask))
///     .build()?;
/// let summary = run_blockwise([task])?;
/// assert_eq!(ran.load(Ordering::SeqCst), 2);
/// let state = summary.task("t").expect("the task");
/// assert_eq!((state.completed, state.skipped), (20, 18));
/// std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Mask {
    array: ZarrArray,
    predicate: Arc<Predicate>,
    /// `"nonzero"`, `"custom"` or a custom predicate's [name](Mask::named), for the run
    /// directory's record.
    kind: String,
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mask")
            .field("array", &self.array.name())
            .field("predicate", &self.kind)
            .finish_non_exhaustive()
    }
}

impl From<&ZarrArray> for Mask {
    /// [`Mask::nonzero`].
    fn from(array: &ZarrArray) -> Mask {
        Mask::nonzero(array)
    }
}

/// Whether any value of the region differs from zero.
fn any_nonzero<T: Scalar>(array: &ZarrArray, roi: &Roi) -> Result<bool, StoreError> {
    let zero = T::default();
    Ok(array.read::<T>(roi)?.iter().any(|v| *v != zero))
}

impl Mask {
    /// The default mask: a block runs if any voxel of the mask under its write ROI is not
    /// zero. Works for every data type (for floats, `NaN` counts as not zero).
    #[must_use]
    pub fn nonzero(array: &ZarrArray) -> Mask {
        let predicate: Arc<Predicate> = match array.data_type() {
            DataType::U8 => Arc::new(any_nonzero::<u8>),
            DataType::U16 => Arc::new(any_nonzero::<u16>),
            DataType::U32 => Arc::new(any_nonzero::<u32>),
            DataType::U64 => Arc::new(any_nonzero::<u64>),
            DataType::I8 => Arc::new(any_nonzero::<i8>),
            DataType::I16 => Arc::new(any_nonzero::<i16>),
            DataType::I32 => Arc::new(any_nonzero::<i32>),
            DataType::I64 => Arc::new(any_nonzero::<i64>),
            DataType::F32 => Arc::new(any_nonzero::<f32>),
            DataType::F64 => Arc::new(any_nonzero::<f64>),
        };
        Mask {
            array: array.clone(),
            predicate,
            kind: "nonzero".to_owned(),
        }
    }

    /// A mask with a custom predicate: `predicate` gets the mask's voxels under a block's
    /// write ROI (the write ROI snapped outward to the mask's voxel grid, cut to the mask's
    /// ROI; never empty) and returns whether the block runs.
    ///
    /// ```
    /// use blockwise::mask::Mask;
    /// use blockwise::store::{ArraySpec, DataType, ZarrArray};
    /// use blockwise::Roi;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = std::env::temp_dir().join(format!("blockwise-doc-mask-p-{}", std::process::id()));
    /// let spec = ArraySpec::new(Roi::new([0], [8]), [1], DataType::F32, vec![4]);
    /// let array = ZarrArray::create(&dir, "fg", &spec)?;
    /// array.write(&array.roi(), &ndarray::arr1(&[0.1f32, 0.2, 0.9, 0.3, 0., 0., 0., 0.]).into_dyn())?;
    /// // Run where more than half of a block's voxels are over 0.15.
    /// let mask = Mask::with_predicate(&array, |v: &blockwise::RoiArray<f32>| {
    ///     2 * v.iter().filter(|&&x| x > 0.15).count() > v.len()
    /// })?;
    /// assert!(mask.selects(&Roi::new([0], [4]))?);
    /// assert!(!mask.selects(&Roi::new([4], [4]))?);
    /// // A `T` that is not the array's data type is refused.
    /// assert!(Mask::with_predicate(&array, |_: &blockwise::RoiArray<u8>| true).is_err());
    /// std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::DataType`] if `T` is not the array's data type.
    pub fn with_predicate<T, F>(array: &ZarrArray, predicate: F) -> Result<Mask, StoreError>
    where
        T: Scalar,
        F: Fn(&RoiArray<T>) -> bool + Send + Sync + 'static,
    {
        crate::store::check_type::<T>(array.name(), array.data_type())?;
        let predicate: Arc<Predicate> =
            Arc::new(move |a: &ZarrArray, roi: &Roi| Ok(predicate(&a.read::<T>(roi)?)));
        Ok(Mask {
            array: array.clone(),
            predicate,
            kind: "custom".to_owned(),
        })
    }

    /// Names the predicate in the run directory's record of the mask (`tasks/<task>/mask.json`,
    /// `"custom"` for a [custom predicate](Self::with_predicate) without a name), so that a
    /// rerun with another predicate over the same mask, e.g. another threshold, is reported
    /// as a changed mask. The name should say everything the predicate depends on.
    ///
    /// ```
    /// use blockwise::mask::Mask;
    /// use blockwise::store::{ArraySpec, DataType, ZarrArray};
    /// use blockwise::Roi;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let spec = ArraySpec::new(Roi::new([0], [8]), [1], DataType::F32, vec![8]);
    /// let array = ZarrArray::create(dir.path(), "probability", &spec)?;
    /// let t = 0.5;
    /// let mask = Mask::with_predicate(&array, move |v: &blockwise::RoiArray<f32>| {
    ///     v.iter().any(|&x| x > t)
    /// })?
    /// .named(format!("above {t}"));
    /// assert!(format!("{mask:?}").contains("above 0.5"));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Mask {
        self.kind = name.into();
        self
    }

    /// The mask's array.
    #[must_use]
    pub fn array(&self) -> &ZarrArray {
        &self.array
    }

    /// The part of the mask a block with this write ROI looks at: `write_roi` snapped outward
    /// to the mask's voxel grid (anchored at the mask's offset), cut to the mask's ROI; `None`
    /// if that is empty (the block lies outside the mask).
    ///
    /// # Errors
    ///
    /// A write ROI of other dimensions than the mask's, or arithmetic overflow.
    pub fn region(&self, write_roi: &Roi) -> Result<Option<Roi>, GeometryError> {
        let offset = self.array.offset();
        let neg: Option<Vec<i64>> = offset.iter().map(i64::checked_neg).collect();
        let neg = neg.ok_or(GeometryError::Overflow { op: "mask region" })?;
        let snapped = write_roi
            .try_shift(neg)?
            .try_snap_to_grid(self.array.voxel_size(), Snap::Grow)?
            .try_shift(offset.clone())?;
        let region = snapped.try_intersect(&self.array.roi())?;
        Ok((!region.is_empty()).then_some(region))
    }

    /// Whether a block with this write ROI runs: the predicate over its
    /// [region](Self::region); `false` outside the mask.
    ///
    /// # Errors
    ///
    /// The mask cannot be read there (I/O, decoding), the ROI has other dimensions than the
    /// mask, or the predicate panicked; the message names the mask.
    pub fn selects(&self, write_roi: &Roi) -> Result<bool, StoreError> {
        let name = self.array.name();
        let region = self.region(write_roi).map_err(|e| StoreError::Roi {
            path: name.to_owned(),
            message: format!("mask region of write ROI {write_roi}: {e}"),
        })?;
        let Some(region) = region else {
            return Ok(false);
        };
        match catch_unwind(AssertUnwindSafe(|| (self.predicate)(&self.array, &region))) {
            Ok(result) => result,
            Err(panic) => Err(StoreError::Backend {
                path: name.to_owned(),
                message: format!(
                    "the mask predicate panicked on region {region}: {}",
                    panic_message(panic.as_ref())
                ),
            }),
        }
    }

    /// Checks the mask against a task at build time: same dimensions, and some overlap with
    /// the task's total write ROI.
    pub(crate) fn check_task(&self, total_write: &Roi) -> Result<(), String> {
        let roi = self.array.roi();
        let name = self.array.name();
        if roi.dims() != total_write.dims() {
            return Err(format!(
                "mask {name} has {} dimensions (ROI {roi}), the task {} (total write ROI {total_write})",
                roi.dims(),
                total_write.dims()
            ));
        }
        if !roi.intersects(total_write) {
            return Err(format!(
                "mask {name} (ROI {roi}, voxel size {}) does not overlap the task's total write ROI {total_write}: every block would be skipped (are both in the same world units?)",
                self.array.voxel_size()
            ));
        }
        Ok(())
    }

    /// What the run directory records of the mask (`tasks/<task>/mask.json`) for a task with
    /// this total write ROI: the mask's path, array id, data type, ROI, voxel size and
    /// predicate, and a digest of its stored chunks under the task
    /// ([`ZarrArray::stored_sha256`] of the task's [region](Self::region)), so that a mask
    /// rewritten in place is told from the last run's.
    ///
    /// # Errors
    ///
    /// A chunk of the mask cannot be read.
    pub(crate) fn identity(&self, total_write: &Roi) -> Result<serde_json::Value, StoreError> {
        let name = self.array.name();
        let region = self.region(total_write).map_err(|e| StoreError::Roi {
            path: name.to_owned(),
            message: format!("mask region of the task's total write ROI {total_write}: {e}"),
        })?;
        let chunks = match &region {
            Some(region) => self.array.stored_sha256(region)?,
            None => String::new(),
        };
        Ok(serde_json::json!({
            "path": name,
            "array_id": self.array.array_id(),
            "data_type": self.array.data_type().to_string(),
            "roi": self.array.roi(),
            "voxel_size": self.array.voxel_size(),
            "predicate": self.kind,
            "chunks_sha256": chunks,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::ArraySpec;

    fn array(dir: &std::path::Path, roi: Roi, voxel: [i64; 2], values: &[u8]) -> ZarrArray {
        let shape: Vec<usize> = (0..2)
            .map(|d| usize::try_from(roi.shape()[d] / voxel[d]).unwrap_or(0))
            .collect();
        let spec = ArraySpec::new(roi, voxel, DataType::U8, vec![4, 4]);
        let a = ZarrArray::create(dir, "m", &spec).expect("create");
        let data = ndarray::ArrayD::from_shape_vec(shape, values.to_vec()).expect("shape");
        a.write(&a.roi(), &data).expect("write");
        a
    }

    #[test]
    fn region_snaps_outward_to_the_mask_grid_and_is_cut_to_its_roi() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 2x2 voxels of 4x4 world units, offset (4, 4); voxel (0, 1) is set: world
        // [4, 8) x [8, 12).
        let a = array(dir.path(), Roi::new([4, 4], [8, 8]), [4, 4], &[0, 1, 0, 0]);
        let m = Mask::nonzero(&a);
        assert_eq!(
            m.region(&Roi::new([5, 5], [1, 1])).expect("region"),
            Some(Roi::new([4, 4], [4, 4]))
        );
        assert_eq!(
            m.region(&Roi::new([0, 9], [6, 4])).expect("region"),
            Some(Roi::new([4, 8], [4, 4]))
        );
        assert_eq!(m.region(&Roi::new([20, 0], [4, 4])).expect("region"), None);
        assert!(m.region(&Roi::new([0], [4])).is_err());
        assert!(m.selects(&Roi::new([0], [4])).is_err());
        assert!(m.selects(&Roi::new([4, 8], [1, 1])).expect("selects"));
        assert!(!m.selects(&Roi::new([8, 8], [4, 4])).expect("selects"));
        assert!(!m.selects(&Roi::new([4, 4], [4, 4])).expect("selects"));
        // Outside the mask: empty.
        assert!(!m.selects(&Roi::new([40, 40], [4, 4])).expect("selects"));
        // Partly outside, touching the set voxel.
        assert!(m.selects(&Roi::new([-4, 10], [10, 4])).expect("selects"));
    }

    #[test]
    fn custom_predicates_see_the_region_and_their_panics_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = array(dir.path(), Roi::new([0, 0], [2, 2]), [1, 1], &[1, 2, 3, 4]);
        let sum_over_5 = Mask::with_predicate(&a, |v: &RoiArray<u8>| {
            v.iter().map(|&x| u32::from(x)).sum::<u32>() > 5
        })
        .expect("mask");
        assert!(
            sum_over_5
                .selects(&Roi::new([0, 0], [2, 2]))
                .expect("selects")
        );
        assert!(
            !sum_over_5
                .selects(&Roi::new([0, 0], [1, 2]))
                .expect("selects")
        );
        let panics =
            Mask::with_predicate(&a, |_: &RoiArray<u8>| -> bool { panic!("boom") }).expect("mask");
        let e = panics.selects(&Roi::new([0, 0], [1, 1])).unwrap_err();
        assert!(
            e.to_string().contains("panicked") && e.to_string().contains("boom"),
            "{e}"
        );
        let e = Mask::with_predicate(&a, |_: &RoiArray<f32>| true).unwrap_err();
        assert!(matches!(e, StoreError::DataType { .. }), "{e}");
    }

    #[test]
    fn task_checks_name_the_mask() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = array(dir.path(), Roi::new([0, 0], [4, 4]), [2, 2], &[0, 0, 0, 0]);
        let m = Mask::nonzero(&a);
        assert!(m.check_task(&Roi::new([0, 0], [8, 8])).is_ok());
        let e = m.check_task(&Roi::new([0], [8])).unwrap_err();
        assert!(
            e.contains("2 dimensions") && e.contains("the task 1"),
            "{e}"
        );
        let e = m.check_task(&Roi::new([100, 100], [8, 8])).unwrap_err();
        assert!(e.contains("does not overlap"), "{e}");
        let id = m.identity(&Roi::new([0, 0], [8, 8])).unwrap();
        assert_eq!(id["predicate"], "nonzero");
        // The digest covers the stored chunks under the task: a rewrite changes it.
        a.write(
            &Roi::new([0, 0], [2, 2]),
            &ndarray::arr2(&[[1u8]]).into_dyn(),
        )
        .unwrap();
        let again = m.identity(&Roi::new([0, 0], [8, 8])).unwrap();
        assert_ne!(id["chunks_sha256"], again["chunks_sha256"]);
        assert_eq!(id["array_id"], again["array_id"]);
        let named = m.clone().named("above 0.5");
        let id = named.identity(&Roi::new([0, 0], [8, 8])).unwrap();
        assert_eq!(id["predicate"], "above 0.5");
    }
}
