//! HDF5 datasets in world units, through `hdf5-metno` (feature `hdf5`).
//!
//! HDF5 allows one writer process per file (a second one is refused by HDF5's file lock), and the
//! library serialises all calls within a process. Write HDF5 output from one process (threads
//! are fine but do not run HDF5 calls in parallel), or write zarr when blocks are written by many
//! processes.

use std::path::Path;

use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenUnicode};
use ndarray::{ArrayD, ArrayViewD, IxDyn, SliceInfo, SliceInfoElem};

use std::sync::Arc;

use super::{
    ARRAY_ID_KEY, ArraySpec, ChunkGrid, DataType, FillText, Pad, RoiArray, Scalar, StoreError,
    WorldMeta,
};
use crate::geometry::{Coordinate, Roi};

/// An HDF5 dataset in world units, with the same interface as
/// [`ZarrArray`](crate::store::ZarrArray). The metadata is stored in dataset attributes
/// `voxel_size`, `offset`, `axis_names` and `units`, and the identity (see
/// [`array_id`](Self::array_id)) in a string attribute `blockwise_array_id`.
///
/// Clones are cheap and share the file and dataset handles (HDF5 serialises all calls of a
/// process anyway).
#[derive(Clone)]
pub struct Hdf5Array {
    inner: Arc<Inner>,
}

/// What an [`Hdf5Array`] shares with its clones.
struct Inner {
    file: hdf5::File,
    dataset: hdf5::Dataset,
    name: String,
    meta: WorldMeta,
    data_type: DataType,
    chunk: Vec<u64>,
    array_id: Option<String>,
}

impl std::fmt::Debug for Hdf5Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hdf5Array")
            .field("name", &self.inner.name)
            .field("roi", &self.roi())
            .field("data_type", &self.inner.data_type)
            .field("array_id", &self.inner.array_id)
            .finish_non_exhaustive()
    }
}

/// An ndarray selection of `ranges` (one per axis), for hyperslab reads and writes.
pub(crate) fn selection(
    ranges: &[std::ops::Range<i64>],
) -> Result<SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>, String> {
    let elems: Vec<SliceInfoElem> = ranges
        .iter()
        .map(|r| SliceInfoElem::Slice {
            start: r.start as isize,
            end: Some(r.end as isize),
            step: 1,
        })
        .collect();
    SliceInfo::try_from(elems).map_err(|e| e.to_string())
}

fn data_type_of(d: &TypeDescriptor) -> Option<DataType> {
    Some(match d {
        TypeDescriptor::Unsigned(IntSize::U1) => DataType::U8,
        TypeDescriptor::Unsigned(IntSize::U2) => DataType::U16,
        TypeDescriptor::Unsigned(IntSize::U4) => DataType::U32,
        TypeDescriptor::Unsigned(IntSize::U8) => DataType::U64,
        TypeDescriptor::Integer(IntSize::U1) => DataType::I8,
        TypeDescriptor::Integer(IntSize::U2) => DataType::I16,
        TypeDescriptor::Integer(IntSize::U4) => DataType::I32,
        TypeDescriptor::Integer(IntSize::U8) => DataType::I64,
        TypeDescriptor::Float(FloatSize::U4) => DataType::F32,
        TypeDescriptor::Float(FloatSize::U8) => DataType::F64,
        _ => return None,
    })
}

impl Hdf5Array {
    /// Opens dataset `dataset` of the HDF5 file at `path` for reading and writing (read-only if
    /// the file is not writable).
    ///
    /// # Errors
    ///
    /// A missing file or dataset, an unsupported type, or malformed attributes.
    pub fn open(path: impl AsRef<Path>, dataset: &str) -> Result<Hdf5Array, StoreError> {
        let path = path.as_ref();
        let name = format!("{}/{}", path.display(), dataset.trim_matches('/'));
        let err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: name.clone(),
            message: e.to_string(),
        };
        let file = hdf5::File::open_rw(path)
            .or_else(|_| hdf5::File::open(path))
            .map_err(|e| err(&e))?;
        let ds = file.dataset(dataset).map_err(|e| err(&e))?;
        Self::from_dataset(file, ds, name)
    }

    fn from_dataset(
        file: hdf5::File,
        ds: hdf5::Dataset,
        name: String,
    ) -> Result<Hdf5Array, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: name.clone(),
            message: e.to_string(),
        };
        let descriptor = ds
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(|e| err(&e))?;
        let data_type = data_type_of(&descriptor)
            .ok_or_else(|| err(&format!("unsupported data type {descriptor:?}")))?;
        let shape: Vec<u64> = ds.shape().iter().map(|&s| s as u64).collect();
        let chunk: Vec<u64> = ds
            .chunk()
            .map_or_else(|| shape.clone(), |c| c.iter().map(|&s| s as u64).collect());
        let mut attrs = serde_json::Map::new();
        for key in ["voxel_size", "offset"] {
            if let Ok(a) = ds.attr(key) {
                let v: Vec<i64> = a.read_raw().map_err(|e| err(&e))?;
                attrs.insert(key.into(), serde_json::json!(v));
            }
        }
        for key in ["axis_names", "units"] {
            if let Ok(a) = ds.attr(key) {
                let v: Vec<VarLenUnicode> = a.read_raw().map_err(|e| err(&e))?;
                let v: Vec<String> = v.iter().map(|s| s.as_str().to_owned()).collect();
                attrs.insert(key.into(), serde_json::json!(v));
            }
        }
        let meta = WorldMeta::from_attributes(&name, &attrs, shape)?;
        let array_id = match ds.attr(ARRAY_ID_KEY) {
            Err(_) => None,
            Ok(a) => match a.read_scalar::<VarLenUnicode>() {
                Ok(id) => Some(id.as_str().to_owned()),
                Err(e) => {
                    tracing::warn!(
                        array = %name,
                        error = %e,
                        "attribute {ARRAY_ID_KEY} is not a string; the array has no identity"
                    );
                    None
                }
            },
        };
        Ok(Hdf5Array {
            inner: Arc::new(Inner {
                file,
                dataset: ds,
                name,
                meta,
                data_type,
                chunk,
                array_id,
            }),
        })
    }

    /// Creates dataset `dataset` in the HDF5 file at `path` (created if missing) from a spec,
    /// with a fresh identity (see [`array_id`](Self::array_id)).
    /// Only `Codec::None` and `Codec::Gzip` exist in HDF5 (gzip is HDF5's deflate); sharding
    /// and the zarr format are ignored.
    ///
    /// # Errors
    ///
    /// An invalid spec, a codec HDF5 does not have, an existing dataset without `overwrite`, or
    /// an HDF5 error.
    pub fn create(
        path: impl AsRef<Path>,
        dataset: &str,
        spec: &ArraySpec,
    ) -> Result<Hdf5Array, StoreError> {
        let path = path.as_ref();
        let name = format!("{}/{}", path.display(), dataset.trim_matches('/'));
        let err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: name.clone(),
            message: e.to_string(),
        };
        let meta = spec.world_meta().map_err(|m| err(&m))?;
        let array_id = super::new_array_id(&name)?;
        let file = if path.exists() {
            hdf5::File::open_rw(path)
        } else {
            hdf5::File::create(path)
        }
        .map_err(|e| err(&e))?;
        if file.link_exists(dataset) {
            if !spec.overwrite {
                return Err(err(
                    &"a dataset already exists there (set `overwrite` to replace it)",
                ));
            }
            file.unlink(dataset).map_err(|e| err(&e))?;
        }
        let shape: Vec<usize> = meta.shape.iter().map(|&s| s as usize).collect();
        let chunk: Vec<usize> = spec
            .chunk_shape
            .iter()
            .zip(&shape)
            .map(|(&c, &s)| (c as usize).min(s.max(1)))
            .collect();
        let deflate = match spec.codec {
            super::Codec::None => None,
            super::Codec::Gzip { level } => Some(level.min(9) as u8),
            other => {
                return Err(err(&format!(
                    "codec {other:?} is not available in HDF5; use Codec::Gzip or Codec::None"
                )));
            }
        };
        macro_rules! make {
            ($t:ty) => {{
                let mut b = file
                    .new_dataset::<$t>()
                    .chunk(chunk.clone())
                    .shape(shape.clone());
                if let Some(level) = deflate {
                    b = b.deflate(level);
                }
                b.fill_value(spec.fill_value as $t).create(dataset)
            }};
        }
        let ds = match spec.data_type {
            DataType::U8 => make!(u8),
            DataType::U16 => make!(u16),
            DataType::U32 => make!(u32),
            DataType::U64 => make!(u64),
            DataType::I8 => make!(i8),
            DataType::I16 => make!(i16),
            DataType::I32 => make!(i32),
            DataType::I64 => make!(i64),
            DataType::F32 => make!(f32),
            DataType::F64 => make!(f64),
        }
        .map_err(|e| err(&e))?;
        let dims = shape.len();
        let write_attrs = || -> hdf5::Result<()> {
            ds.new_attr::<i64>()
                .shape(dims)
                .create("voxel_size")?
                .write_raw(meta.voxel_size.as_slice())?;
            ds.new_attr::<i64>()
                .shape(dims)
                .create("offset")?
                .write_raw(meta.offset.as_slice())?;
            for (key, values) in [("axis_names", &meta.axis_names), ("units", &meta.units)] {
                let v: Vec<VarLenUnicode> = values
                    .iter()
                    .map(|s| s.parse::<VarLenUnicode>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| hdf5::Error::from(e.to_string()))?;
                ds.new_attr::<VarLenUnicode>()
                    .shape(dims)
                    .create(key)?
                    .write_raw(&v)?;
            }
            let id: VarLenUnicode = array_id
                .parse()
                .map_err(|e: hdf5::types::StringError| hdf5::Error::from(e.to_string()))?;
            ds.new_attr::<VarLenUnicode>()
                .create(ARRAY_ID_KEY)?
                .write_scalar(&id)?;
            Ok(())
        };
        write_attrs().map_err(|e| err(&e))?;
        Self::from_dataset(file, ds, name)
    }

    /// The dataset's ROI in world units.
    #[must_use]
    pub fn roi(&self) -> Roi {
        self.inner.meta.roi()
    }

    /// The size of one voxel in world units.
    #[must_use]
    pub fn voxel_size(&self) -> &Coordinate {
        &self.inner.meta.voxel_size
    }

    /// The world position of voxel 0.
    #[must_use]
    pub fn offset(&self) -> &Coordinate {
        &self.inner.meta.offset
    }

    /// Axis names.
    #[must_use]
    pub fn axis_names(&self) -> &[String] {
        &self.inner.meta.axis_names
    }

    /// Axis units.
    #[must_use]
    pub fn units(&self) -> &[String] {
        &self.inner.meta.units
    }

    /// The element type.
    #[must_use]
    pub fn data_type(&self) -> DataType {
        self.inner.data_type
    }

    /// The chunk grid in world units.
    #[must_use]
    pub fn chunk_grid(&self) -> ChunkGrid {
        self.inner.meta.chunk_grid(
            &self.inner.name,
            Some(&std::path::PathBuf::from(self.inner.file.filename())),
            &self.inner.chunk,
            self.array_id(),
        )
    }

    /// Flushes the file to disk.
    ///
    /// # Errors
    ///
    /// An HDF5 error.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.file.flush().map_err(|e| self.backend(&e))
    }

    fn backend(&self, e: &dyn std::fmt::Display) -> StoreError {
        StoreError::Backend {
            path: self.inner.name.clone(),
            message: e.to_string(),
        }
    }

    fn check_type<T: Scalar>(&self) -> Result<(), StoreError> {
        super::check_type::<T>(&self.inner.name, self.inner.data_type)
    }

    /// Reads a world ROI inside the dataset, on voxel boundaries.
    ///
    /// # Errors
    ///
    /// As [`ZarrArray::read`](crate::store::ZarrArray::read).
    pub fn read<T: Scalar>(&self, roi: &Roi) -> Result<RoiArray<T>, StoreError> {
        self.check_type::<T>()?;
        let ranges = self.inner.meta.inside_ranges(&self.inner.name, roi)?;
        let data = self.read_inside(&ranges)?;
        self.inner.meta.roi_array(roi, data)
    }

    /// Reads voxel ranges inside the dataset.
    fn read_inside<T: Scalar>(
        &self,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<ArrayD<T>, StoreError> {
        if ranges.iter().any(|r| r.start >= r.end) {
            let shape: Vec<usize> = ranges
                .iter()
                .map(|r| r.end.saturating_sub(r.start) as usize)
                .collect();
            return Ok(ArrayD::from_elem(IxDyn(&shape), T::default()));
        }
        let ranges: Vec<std::ops::Range<i64>> = ranges
            .iter()
            .map(|r| r.start as i64..r.end as i64)
            .collect();
        let sel = selection(&ranges).map_err(|e| self.backend(&e))?;
        self.inner
            .dataset
            .read_slice::<T, _, IxDyn>(sel)
            .map_err(|e| self.backend(&e))
    }

    /// Reads any world ROI on voxel boundaries; voxels outside the dataset are `fill`.
    ///
    /// # Errors
    ///
    /// As [`ZarrArray::read_with_fill`](crate::store::ZarrArray::read_with_fill).
    pub fn read_with_fill<T: Scalar>(&self, roi: &Roi, fill: T) -> Result<RoiArray<T>, StoreError> {
        self.read_padded(roi, Pad::Constant(fill))
    }

    /// Reads any world ROI on voxel boundaries, padded outside the dataset as `pad` says.
    ///
    /// # Errors
    ///
    /// As [`ZarrArray::read_padded`](crate::store::ZarrArray::read_padded).
    pub fn read_padded<T: Scalar>(
        &self,
        roi: &Roi,
        pad: Pad<T>,
    ) -> Result<RoiArray<T>, StoreError> {
        self.check_type::<T>()?;
        self.inner
            .meta
            .read_padded(&self.inner.name, roi, pad, |inside| {
                self.read_inside::<T>(inside)
            })
    }

    /// Writes `data` (a view, `&ArrayD` or `&RoiArray`) to a world ROI inside the dataset.
    ///
    /// # Errors
    ///
    /// As [`ZarrArray::write`](crate::store::ZarrArray::write).
    pub fn write<'a, T: Scalar>(
        &self,
        roi: &Roi,
        data: impl Into<ArrayViewD<'a, T>>,
    ) -> Result<(), StoreError> {
        let data: ArrayViewD<'a, T> = data.into();
        self.check_type::<T>()?;
        let ranges = self
            .inner
            .meta
            .write_ranges(&self.inner.name, roi, data.shape())?;
        if data.is_empty() {
            return Ok(());
        }
        let sel = selection(&ranges).map_err(|e| self.backend(&e))?;
        let owned = data.as_standard_layout();
        self.inner
            .dataset
            .write_slice(&owned, sel)
            .map_err(|e| self.backend(&e))
    }

    /// Writes a [`RoiArray`] at its own ROI; its voxel size must be the dataset's.
    ///
    /// # Errors
    ///
    /// As [`ZarrArray::write_array`](crate::store::ZarrArray::write_array).
    pub fn write_array<T: Scalar>(&self, data: &RoiArray<T>) -> Result<(), StoreError> {
        self.inner.meta.check_voxel_size(&self.inner.name, data)?;
        self.write(data.roi(), data)
    }

    /// The dataset's identity, as [`ZarrArray::array_id`](crate::store::ZarrArray::array_id)
    /// (stored in the string attribute `blockwise_array_id`).
    #[must_use]
    pub fn array_id(&self) -> Option<&str> {
        self.inner.array_id.as_deref()
    }

    /// Opens the dataset if it matches `spec`, creates it (and the file) if there is none, as
    /// [`ZarrArray::prepare`](crate::store::ZarrArray::prepare). Compared: ROI, voxel size,
    /// data type, chunk shape (as [`create`](Self::create) clamps it to the dataset's shape),
    /// fill value, and axis names and units if the spec gives them; not compared: the codec,
    /// and the shard shape and zarr format (HDF5 has neither).
    ///
    /// # Errors
    ///
    /// As [`ZarrArray::prepare`](crate::store::ZarrArray::prepare).
    pub fn prepare(
        path: impl AsRef<Path>,
        dataset: &str,
        spec: &ArraySpec,
    ) -> Result<Hdf5Array, StoreError> {
        let path = path.as_ref();
        let name = format!("{}/{}", path.display(), dataset.trim_matches('/'));
        let meta = spec.world_meta().map_err(|message| StoreError::Open {
            path: name.clone(),
            message,
        })?;
        let exists = path.exists()
            && hdf5::File::open_rw(path)
                .or_else(|_| hdf5::File::open(path))
                .map(|f| f.link_exists(dataset))
                .unwrap_or(false);
        if !exists {
            return Self::create(path, dataset, spec);
        }
        let existing = match Self::open(path, dataset) {
            Ok(a) => a,
            Err(_) if spec.overwrite => return Self::create(path, dataset, spec),
            Err(e) => return Err(e),
        };
        let mut differences =
            super::world_differences(&existing.inner.meta, existing.inner.data_type, spec);
        let chunk: Vec<u64> = spec
            .chunk_shape
            .iter()
            .zip(&meta.shape)
            .map(|(&c, &s)| c.min(s.max(1)))
            .collect();
        super::difference(
            &mut differences,
            "chunk shape",
            super::ShapeText(Some(existing.inner.chunk.clone())),
            super::ShapeText(Some(chunk)),
        );
        let wanted = FillText::new(spec.fill_value, spec.data_type);
        let fill = existing
            .inner
            .dataset
            .dcpl()
            .and_then(|p| p.get_fill_value_as::<f64>());
        match fill {
            Ok(Some(fill)) => super::difference(
                &mut differences,
                "fill value",
                FillText::new(fill, existing.inner.data_type),
                wanted,
            ),
            _ => differences.push(format!("fill value: the array has none, the spec {wanted}")),
        }
        if differences.is_empty() {
            return Ok(existing);
        }
        if spec.overwrite {
            drop(existing);
            return Self::create(path, dataset, spec);
        }
        Err(StoreError::Mismatch {
            path: name,
            differences,
        })
    }
}

impl From<&Hdf5Array> for ChunkGrid {
    fn from(a: &Hdf5Array) -> ChunkGrid {
        a.chunk_grid()
    }
}

impl From<&Arc<Hdf5Array>> for ChunkGrid {
    fn from(a: &Arc<Hdf5Array>) -> ChunkGrid {
        a.chunk_grid()
    }
}
