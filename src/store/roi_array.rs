//! [`RoiArray`]: an in-memory array that knows where it lies in world units.

use std::ops::{Deref, DerefMut, Range};

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};

use super::StoreError;
use crate::geometry::{Coordinate, Roi};

/// An n-dimensional array together with its ROI in world units and its voxel size, what
/// [`ZarrArray::read`](crate::store::ZarrArray::read) returns (funlib.persistence's `Array`
/// in memory).
///
/// Voxel `i` of the data covers the world box `roi.offset() + i * voxel_size` (one voxel size
/// wide), so the data's shape is always `roi.shape() / voxel_size`. Sub-regions are addressed
/// in world units, as block ROIs are: [`view_roi`](Self::view_roi),
/// [`view_roi_mut`](Self::view_roi_mut) and
/// [`crop`](Self::crop) take a world ROI that must lie inside the array and on its voxel
/// boundaries (counted from the array's offset), and say what is wrong otherwise.
///
/// `RoiArray` dereferences to its [`ArrayD`], so ndarray's methods (`iter`, `shape`, `sum`,
/// indexing, `view`, ...) work on it directly; [`mapv`](Self::mapv) is this type's (a map that
/// keeps the ROI). Where an `impl Into<ArrayViewD>` is taken (as by
/// [`ZarrArray::write`](crate::store::ZarrArray::write)), pass `&array`.
/// Do not replace the data through [`DerefMut`] with an array of another shape: views of a
/// `RoiArray` whose data no longer has its ROI's shape are errors.
///
/// A block reads its input with context and works on the part it writes:
///
/// ```
/// use blockwise::store::RoiArray;
/// use blockwise::Roi;
///
/// # fn main() -> Result<(), blockwise::store::StoreError> {
/// // 6 × 4 voxels of 2 × 2 world units, from (10, 0): the read ROI of a block.
/// let data = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[6, 4]), |i| (10 * i[0] + i[1]) as u8);
/// let read = RoiArray::new(Roi::new([10, 0], [12, 8]), [2, 2], data)?;
///
/// // Its write ROI: voxels 1..5 × 1..3.
/// let write_roi = Roi::new([12, 2], [8, 4]);
/// let core = read.view_roi(&write_roi)?;
/// assert_eq!(core.shape(), &[4, 2]);
/// assert_eq!(core[[0, 0]], 11);
///
/// // An owned crop keeps its place in the world; mapv keeps the ROI too.
/// let mask = read.crop(&write_roi)?.mapv(|v| v > 20);
/// assert_eq!(mask.roi(), &write_roi);
/// assert_eq!(mask.iter().filter(|&&m| m).count(), 6);
///
/// // Off the voxel grid, or outside: an error naming the values.
/// let e = read.view_roi(&Roi::new([11, 2], [8, 4])).unwrap_err();
/// assert!(e.to_string().contains("voxel"), "{e}");
/// assert!(read.view_roi(&Roi::new([0, 0], [4, 4])).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RoiArray<T> {
    roi: Roi,
    voxel_size: Coordinate,
    data: ArrayD<T>,
}

fn roi_error(message: String) -> StoreError {
    StoreError::RoiArray { message }
}

impl<T> RoiArray<T> {
    /// An array covering `roi` (world units) with voxels of `voxel_size`.
    ///
    /// # Errors
    ///
    /// [`StoreError::RoiArray`] if the dims of the ROI, the voxel size and the data differ, a
    /// voxel size is not positive, or the data's shape is not `roi.shape() / voxel_size`.
    pub fn new(
        roi: Roi,
        voxel_size: impl Into<Coordinate>,
        data: ArrayD<T>,
    ) -> Result<RoiArray<T>, StoreError> {
        let voxel_size = voxel_size.into();
        if roi.dims() != voxel_size.dims() || roi.dims() != data.ndim() {
            return Err(roi_error(format!(
                "the ROI {roi} has {} dims, the voxel size {voxel_size} {} and the data (shape {:?}) {}",
                roi.dims(),
                voxel_size.dims(),
                data.shape(),
                data.ndim()
            )));
        }
        for d in 0..roi.dims() {
            let (v, s, n) = (voxel_size[d], roi.shape()[d], data.shape()[d]);
            if v <= 0 {
                return Err(roi_error(format!(
                    "voxel size {voxel_size} is not positive in axis {d}"
                )));
            }
            if i128::from(s) != i128::from(v) * n as i128 {
                return Err(roi_error(format!(
                    "data of shape {:?} does not cover the ROI {roi} with voxels of {voxel_size}: axis {d} has {n} voxels of {v}, the ROI's shape is {s}",
                    data.shape()
                )));
            }
        }
        Ok(RoiArray {
            roi,
            voxel_size,
            data,
        })
    }

    /// The array's ROI in world units.
    #[must_use]
    pub fn roi(&self) -> &Roi {
        &self.roi
    }

    /// The size of one voxel in world units.
    #[must_use]
    pub fn voxel_size(&self) -> &Coordinate {
        &self.voxel_size
    }

    /// The data, voxel `[0, 0, ...]` at the ROI's offset.
    #[must_use]
    pub fn data(&self) -> &ArrayD<T> {
        &self.data
    }

    /// The data, mutable (keep its shape: see the type's documentation).
    #[must_use]
    pub fn data_mut(&mut self) -> &mut ArrayD<T> {
        &mut self.data
    }

    /// The data, without the ROI.
    #[must_use]
    pub fn into_inner(self) -> ArrayD<T> {
        self.data
    }

    /// The voxel ranges (into the data) of a world sub-ROI.
    fn ranges(&self, roi: &Roi) -> Result<Vec<Range<usize>>, StoreError> {
        if roi.dims() != self.roi.dims() {
            return Err(roi_error(format!(
                "ROI {roi} has {} dims, the array (ROI {}) has {}",
                roi.dims(),
                self.roi,
                self.roi.dims()
            )));
        }
        let mut ranges = Vec::with_capacity(roi.dims());
        for d in 0..roi.dims() {
            let v = i128::from(self.voxel_size[d]);
            let begin = i128::from(roi.offset()[d]) - i128::from(self.roi.offset()[d]);
            let shape = i128::from(roi.shape()[d]);
            if begin % v != 0 || shape % v != 0 {
                return Err(roi_error(format!(
                    "ROI {roi} is not on the voxel grid of the array (ROI {}, voxel size {}) in axis {d}",
                    self.roi, self.voxel_size
                )));
            }
            let (b, e) = (begin / v, (begin + shape) / v);
            let n = self.data.shape().get(d).copied().unwrap_or(0) as i128;
            if shape < 0 || b < 0 || e > n || i128::from(self.roi.shape()[d]) != n * v {
                return Err(roi_error(format!(
                    "ROI {roi} is not inside the array's ROI {} (axis {d})",
                    self.roi
                )));
            }
            ranges.push(b as usize..e as usize);
        }
        Ok(ranges)
    }

    /// A view of the voxels of a world sub-ROI.
    ///
    /// # Errors
    ///
    /// [`StoreError::RoiArray`] if `roi` has other dims, is not on the voxel grid (from the
    /// array's offset) or is not inside the array's ROI.
    pub fn view_roi(&self, roi: &Roi) -> Result<ArrayViewD<'_, T>, StoreError> {
        let ranges = self.ranges(roi)?;
        Ok(self
            .data
            .slice_each_axis(|ax| ndarray::Slice::from(ranges[ax.axis.index()].clone())))
    }

    /// A mutable view of the voxels of a world sub-ROI.
    ///
    /// # Errors
    ///
    /// As [`view_roi`](Self::view_roi).
    pub fn view_roi_mut(&mut self, roi: &Roi) -> Result<ArrayViewMutD<'_, T>, StoreError> {
        let ranges = self.ranges(roi)?;
        Ok(self
            .data
            .slice_each_axis_mut(|ax| ndarray::Slice::from(ranges[ax.axis.index()].clone())))
    }

    /// An owned copy of a world sub-ROI, with that ROI.
    ///
    /// # Errors
    ///
    /// As [`view_roi`](Self::view_roi).
    pub fn crop(&self, roi: &Roi) -> Result<RoiArray<T>, StoreError>
    where
        T: Clone,
    {
        let data = self.view_roi(roi)?.to_owned();
        Ok(RoiArray {
            roi: roi.clone(),
            voxel_size: self.voxel_size.clone(),
            data,
        })
    }

    /// Applies `f` to every voxel, keeping the ROI and voxel size.
    #[must_use]
    pub fn mapv<U>(&self, f: impl FnMut(T) -> U) -> RoiArray<U>
    where
        T: Clone,
    {
        RoiArray {
            roi: self.roi.clone(),
            voxel_size: self.voxel_size.clone(),
            data: self.data.mapv(f),
        }
    }

    /// A `RoiArray` of `roi` filled with `value`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), and if `roi` is not a non-negative multiple of the voxel size.
    pub fn from_elem(
        roi: Roi,
        voxel_size: impl Into<Coordinate>,
        value: T,
    ) -> Result<RoiArray<T>, StoreError>
    where
        T: Clone,
    {
        let voxel_size = voxel_size.into();
        if roi.dims() != voxel_size.dims() {
            return Err(roi_error(format!(
                "the ROI {roi} has {} dims, the voxel size {voxel_size} {}",
                roi.dims(),
                voxel_size.dims()
            )));
        }
        let shape: Option<Vec<usize>> = (0..roi.dims())
            .map(|d| {
                let (s, v) = (roi.shape()[d], voxel_size[d]);
                (v > 0 && s >= 0 && s % v == 0).then(|| (s / v) as usize)
            })
            .collect();
        let shape = shape.ok_or_else(|| {
            roi_error(format!(
                "the ROI {roi} is not a non-negative multiple of the voxel size {voxel_size}"
            ))
        })?;
        let data = ArrayD::from_elem(IxDyn(&shape), value);
        RoiArray::new(roi, voxel_size, data)
    }
}

impl<T> Deref for RoiArray<T> {
    type Target = ArrayD<T>;

    fn deref(&self) -> &ArrayD<T> {
        &self.data
    }
}

impl<T> DerefMut for RoiArray<T> {
    fn deref_mut(&mut self) -> &mut ArrayD<T> {
        &mut self.data
    }
}

impl<'a, T> From<&'a RoiArray<T>> for ArrayViewD<'a, T> {
    fn from(a: &'a RoiArray<T>) -> ArrayViewD<'a, T> {
        a.data.view()
    }
}

impl<T> From<RoiArray<T>> for ArrayD<T> {
    fn from(a: RoiArray<T>) -> ArrayD<T> {
        a.data
    }
}

/// Compares the data only (a bare [`ArrayD`] has no ROI).
impl<T: PartialEq> PartialEq<ArrayD<T>> for RoiArray<T> {
    fn eq(&self, other: &ArrayD<T>) -> bool {
        self.data == *other
    }
}

/// Compares the data only (a bare [`ArrayD`] has no ROI).
impl<T: PartialEq> PartialEq<RoiArray<T>> for ArrayD<T> {
    fn eq(&self, other: &RoiArray<T>) -> bool {
        *self == other.data
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ramp() -> RoiArray<i32> {
        let data = ArrayD::from_shape_fn(IxDyn(&[4, 3]), |i| (10 * i[0] + i[1]) as i32);
        RoiArray::new(Roi::new([-4, 3], [16, 6]), [4, 2], data).unwrap()
    }

    #[test]
    fn new_checks_dims_and_shape() {
        let data = ArrayD::<u8>::zeros(IxDyn(&[4, 3]));
        let e = RoiArray::new(Roi::new([0, 0], [16, 7]), [4, 2], data.clone()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RoiArray: data of shape [4, 3] does not cover the ROI [0:16, 0:7] (16, 7) with voxels of (4, 2): axis 1 has 3 voxels of 2, the ROI's shape is 7"
        );
        let e = RoiArray::new(Roi::new([0], [16]), [4], data.clone()).unwrap_err();
        assert!(e.to_string().contains("has 1 dims"), "{e}");
        let e = RoiArray::new(Roi::new([0, 0], [16, 6]), [4, 0], data).unwrap_err();
        assert!(e.to_string().contains("not positive in axis 1"), "{e}");
    }

    #[test]
    fn views_and_crops_address_world_units() {
        let mut a = ramp();
        let sub = Roi::new([0, 5], [8, 4]);
        let v = a.view_roi(&sub).unwrap();
        assert_eq!(v.shape(), &[2, 2]);
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), vec![11, 12, 21, 22]);
        let c = a.crop(&sub).unwrap();
        assert_eq!(c.roi(), &sub);
        assert_eq!(c.voxel_size(), &Coordinate::new([4, 2]));
        assert_eq!(
            c,
            ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![11, 12, 21, 22]).unwrap()
        );
        a.view_roi_mut(&sub).unwrap().fill(-1);
        assert_eq!(a[[1, 1]], -1);
        assert_eq!(a[[0, 0]], 0);
        // The whole ROI and an empty ROI at the end are fine.
        assert_eq!(a.view_roi(&a.roi().clone()).unwrap().len(), 12);
        assert_eq!(a.view_roi(&Roi::new([12, 9], [0, 0])).unwrap().len(), 0);
        let m = a.mapv(|x| x * 2);
        assert_eq!(m.roi(), a.roi());
        assert_eq!(m[[3, 2]], 64);
    }

    #[test]
    fn bad_sub_rois_are_errors_naming_the_values() {
        let a = ramp();
        let e = a.view_roi(&Roi::new([-2, 3], [4, 2])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RoiArray: ROI [-2:2, 3:5] (4, 2) is not on the voxel grid of the array (ROI [-4:12, 3:9] (16, 6), voxel size (4, 2)) in axis 0"
        );
        let e = a.view_roi(&Roi::new([-4, 3], [4, 8])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RoiArray: ROI [-4:0, 3:11] (4, 8) is not inside the array's ROI [-4:12, 3:9] (16, 6) (axis 1)"
        );
        assert!(a.view_roi(&Roi::new([-8, 3], [4, 2])).is_err());
        assert!(a.crop(&Roi::new([0], [4])).is_err());
        // Data replaced by one of another shape: an error, not a panic.
        let mut b = ramp();
        *b = ArrayD::zeros(IxDyn(&[1, 1]));
        assert!(b.view_roi(&Roi::new([0, 3], [4, 2])).is_err());
    }

    #[test]
    fn from_elem_and_conversions() {
        let a = RoiArray::from_elem(Roi::new([0, 0], [8, 4]), [2, 2], 7u8).unwrap();
        assert_eq!(a.shape(), &[4, 2]);
        let view: ArrayViewD<'_, u8> = (&a).into();
        assert_eq!(view.sum(), 56);
        assert!(RoiArray::from_elem(Roi::new([0], [7]), [2], 0u8).is_err());
        let inner: ArrayD<u8> = a.clone().into();
        assert_eq!(inner, a);
        assert_eq!(a.into_inner().len(), 8);
    }
}
