//! Storage: arrays in world units, like funlib.persistence's `Array`.
//!
//! An array has an *offset* and a *voxel size* in world units, axis names and units, so blocks
//! (whose ROIs are in world units) read and write it directly: `array.read::<u8>(block.read_roi())`.
//! World ROIs are converted to voxels as `(roi - offset) / voxel_size`, and a ROI that does not
//! fall on voxel boundaries is an error (funlib silently truncates; see also
//! [`Roi::to_voxels`]).
//!
//! # Reads return a [`RoiArray`]
//!
//! A read returns the data together with its world ROI and voxel size, a [`RoiArray`], so the
//! part a block writes is addressed in world units too, with no voxel arithmetic:
//!
//! ```no_run
//! # use blockwise::store::ZarrArray;
//! # #[allow(dead_code)]
//! # fn f(raw: &ZarrArray, out: &ZarrArray, block: &blockwise::Block) -> Result<(), blockwise::BlockError> {
//! let data = raw.read::<u8>(block.read_roi())?; // the block's input, with context
//! let core = data.view_roi(block.write_roi())?;      // the part it writes
//! out.write(block.write_roi(), core)?;
//! // or, for a result computed at the read ROI: out.write_array(&result.crop(block.write_roi())?)
//! # Ok(())
//! # }
//! ```
//!
//! A `RoiArray` dereferences to its `ndarray::ArrayD` (re-exported as [`crate::ndarray`], so no
//! version needs guessing), except that `view` and `mapv` are its own (a world sub-ROI; a map
//! that keeps the ROI). [`write`](ZarrArray::write) takes anything that converts to an
//! `ArrayViewD` (a view, `&ArrayD`, `&RoiArray`), and [`write_array`](ZarrArray::write_array)
//! writes a `RoiArray` at its own ROI.
//!
//! # Reads past the border: [`Pad`]
//!
//! Reads past the array's bounds are an error with [`read`](ZarrArray::read), and padded by
//! [`read_padded`](ZarrArray::read_padded) with scipy.ndimage's boundary modes:
//! [`Pad::Constant`] (what [`read_with_fill`](ZarrArray::read_with_fill) does), [`Pad::Nearest`]
//! (the edge voxel repeated) and [`Pad::Reflect`] (mirrored about the edge, the edge voxel
//! repeated, again and again when the padding is wider than the array). That is what blocks of
//! `Fit::Overhang` tasks and blocks with context at the volume's border need, and a filter
//! computed block by block with `Reflect` padding equals scipy's on the whole volume.
//!
//! # Outputs: [`prepare`](ZarrArray::prepare) and identity
//!
//! [`ZarrArray::prepare`] (funlib.persistence's `prepare_ds`) opens an output if it exists and
//! matches the spec, creates it if it does not, and otherwise fails naming every difference
//! ([`StoreError::Mismatch`]; compression is not compared) unless `overwrite` is set, which
//! replaces it. A rerun of a pipeline therefore keeps its outputs.
//!
//! Every array blockwise creates ([`create`](ZarrArray::create),
//! [`create_like`](ZarrArray::create_like), `prepare`) gets a fresh random id in its attributes
//! ([`ARRAY_ID_KEY`], `"blockwise_array_id"`), read back by [`array_id`](ZarrArray::array_id)
//! and carried by its [`ChunkGrid`]: a run directory can then tell an output recreated after
//! blocks were recorded as done from the one they were written to. Arrays made by other tools
//! have none.
//!
//! Arrays are cheap to clone (clones share the store, chunk locks and caches), and
//! [`TaskBuilder::writes`](crate::TaskBuilder::writes) takes `&array` and `&Arc<array>` alike.
//!
//! # Metadata
//!
//! The metadata is stored the way funlib.persistence stores it: attributes `voxel_size`,
//! `offset`, `axis_names` and `units`, so Python users can open what blockwise writes with
//! `funlib.persistence.open_ds` or zarr-python, and the other way round.
//!
//! # Concurrent writes
//!
//! Zarr writes whole chunks (whole shards for sharded arrays), so writing part of a chunk is a
//! read-modify-write of the whole chunk. [`ZarrArray::write`] holds a lock on each chunk it
//! writes in part, among the threads of a process (a lock per chunk) and among processes of one
//! machine (an advisory `flock` on a hidden `.{chunk}.blockwise-lock` file next to the chunk,
//! removed after use): concurrent writes of disjoint ROIs lose no voxel, however they are
//! aligned. Chunks a write covers entirely take no lock.
//!
//! On network file systems (NFS, Lustre, GPFS) `flock` may hold only among processes of one
//! client, or not at all: there, declare the arrays a task writes with
//! [`TaskBuilder::writes`](crate::TaskBuilder::writes), so that `build()` checks that its blocks
//! write whole chunks, which needs no lock. Declaring them is good practice anywhere: whole
//! chunks are written without reading them first.
//!
//! Chunk files are written to a temporary file (`.{chunk}.blockwise-tmp-{host}-{pid}-{n}`) and
//! renamed into place, so a reader in another process sees either the old or the new chunk,
//! never a truncated one. A writer killed mid-write leaves its temporary file behind; the first
//! write of an opened array into a directory removes the temporaries there of writers that are
//! dead on this host, and [`ZarrArray::open`] does so for the array's own directory (see
//! [`AtomicFilesystemStore`]).
//!
//! Backends: zarr v2, v3 and sharded v3 through `zarrs` (feature `zarr`, on by default), HDF5
//! through `hdf5-metno` (feature `hdf5`; HDF5 allows one writer process per file).
//! `swmr` (feature `hdf5`, also at `blockwise::swmr`) follows an HDF5 file that another process
//! is still writing.

// Without a backend, the shared machinery below has no users.
#![cfg_attr(not(any(feature = "zarr", feature = "hdf5")), allow(dead_code))]

mod chunk_grid;
#[cfg(feature = "hdf5")]
pub(crate) mod hdf5_array;
#[cfg(feature = "zarr")]
mod ome;
mod pad;
mod roi_array;
mod spec;
#[cfg(feature = "hdf5")]
pub mod swmr;
#[cfg(feature = "zarr")]
mod zarr;
#[cfg(feature = "zarr")]
mod zarr_assemble;
#[cfg(feature = "zarr")]
mod zarr_store;

use std::fmt;
use std::ops::Range;

/// What is wrong with a dataset name as a path inside its store, if anything: an empty
/// component, `.` or `..` (which would lead out of the store: an `overwrite` deletes what the
/// name points at), a backslash or a NUL byte.
pub(crate) fn dataset_problem(dataset: &str) -> Option<&'static str> {
    let trimmed = dataset.trim_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    trimmed.split('/').find_map(|part| match part {
        "" => Some("has an empty path component (`//`)"),
        "." | ".." => Some("has a `.` or `..` component; it must stay inside its store"),
        _ if part.contains('\\') || part.contains('\0') => Some("contains a backslash or NUL byte"),
        _ => None,
    })
}

pub use chunk_grid::ChunkGrid;
#[cfg(feature = "hdf5")]
pub use hdf5_array::Hdf5Array;
#[cfg(feature = "zarr")]
pub(crate) use ome::write_levels as write_ome_levels;
#[cfg(feature = "zarr")]
pub use ome::{AxisKind, NgffVersion, OmeAxis, OmeLevel, OmeZarr, OmeZarrBuilder};
pub use pad::Pad;
pub use roi_array::RoiArray;
pub use spec::{ArraySpec, Codec, ZarrFormat};
#[cfg(feature = "zarr")]
pub use zarr::ZarrArray;
#[cfg(feature = "zarr")]
pub use zarr_store::{AtomicFilesystemStore, KeyLock};

use crate::geometry::{Coordinate, Roi};

/// Element types of arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `f32`
    F32,
    /// `f64`
    F64,
}

impl DataType {
    /// The zarr v3 name (`uint8`, `float32`, ...).
    #[must_use]
    pub fn zarr_v3_name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::U16 => "uint16",
            DataType::U32 => "uint32",
            DataType::U64 => "uint64",
            DataType::I8 => "int8",
            DataType::I16 => "int16",
            DataType::I32 => "int32",
            DataType::I64 => "int64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }

    /// The zarr v2 (numpy) dtype string, little endian (`|u1`, `<f4`, ...).
    #[must_use]
    pub fn zarr_v2_dtype(self) -> &'static str {
        match self {
            DataType::U8 => "|u1",
            DataType::U16 => "<u2",
            DataType::U32 => "<u4",
            DataType::U64 => "<u8",
            DataType::I8 => "|i1",
            DataType::I16 => "<i2",
            DataType::I32 => "<i4",
            DataType::I64 => "<i8",
            DataType::F32 => "<f4",
            DataType::F64 => "<f8",
        }
    }

    /// Size of one element in bytes.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<DataType> {
        const ALL: [DataType; 10] = [
            DataType::U8,
            DataType::U16,
            DataType::U32,
            DataType::U64,
            DataType::I8,
            DataType::I16,
            DataType::I32,
            DataType::I64,
            DataType::F32,
            DataType::F64,
        ];
        ALL.into_iter().find(|t| {
            t.zarr_v3_name() == name
                || t.zarr_v2_dtype() == name
                || t.zarr_v2_dtype().replace('|', "<") == name
                || t.zarr_v2_dtype().replace('<', "|") == name
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.zarr_v3_name())
    }
}

mod sealed {
    pub trait Sealed: Sized {
        /// The elements as their native-endian bytes.
        #[cfg(feature = "zarr")]
        fn bytes_mut(elements: &mut [Self]) -> &mut [u8];
    }
}

#[cfg(feature = "zarr")]
#[doc(hidden)]
pub trait ZarrElement: zarrs::array::Element + zarrs::array::ElementOwned {}
#[cfg(feature = "zarr")]
impl<T: zarrs::array::Element + zarrs::array::ElementOwned> ZarrElement for T {}
#[cfg(not(feature = "zarr"))]
#[doc(hidden)]
pub trait ZarrElement {}
#[cfg(not(feature = "zarr"))]
impl<T> ZarrElement for T {}

#[cfg(feature = "hdf5")]
#[doc(hidden)]
pub trait Hdf5Element: hdf5::H5Type {}
#[cfg(feature = "hdf5")]
impl<T: hdf5::H5Type> Hdf5Element for T {}
#[cfg(not(feature = "hdf5"))]
#[doc(hidden)]
pub trait Hdf5Element {}
#[cfg(not(feature = "hdf5"))]
impl<T> Hdf5Element for T {}

/// A Rust element type arrays can hold (`u8` … `u64`, `i8` … `i64`, `f32`, `f64`).
pub trait Scalar:
    sealed::Sealed
    + ZarrElement
    + Hdf5Element
    + Copy
    + Default
    + PartialEq
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The matching [`DataType`].
    const DATA_TYPE: DataType;
}

macro_rules! scalar {
    ($($t:ty => $d:ident),*) => {$(
        impl sealed::Sealed for $t {
            #[cfg(feature = "zarr")]
            fn bytes_mut(elements: &mut [Self]) -> &mut [u8] {
                bytemuck::cast_slice_mut(elements)
            }
        }
        impl Scalar for $t {
            const DATA_TYPE: DataType = DataType::$d;
        }
    )*};
}
scalar!(u8 => U8, u16 => U16, u32 => U32, u64 => U64, i8 => I8, i16 => I16, i32 => I32, i64 => I64, f32 => F32, f64 => F64);

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The array or store could not be opened or created.
    #[error("{path}: {message}")]
    Open {
        /// The store path and dataset.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A ROI does not fit the array (misaligned, outside, wrong dims or shape).
    #[error("{path}: {message}")]
    Roi {
        /// The store path and dataset.
        path: String,
        /// What is wrong, with the values.
        message: String,
    },
    /// Reading with a Rust type that does not match the array's data type.
    #[error("{path}: the array holds {actual}, not {requested}")]
    DataType {
        /// The store path and dataset.
        path: String,
        /// The array's data type.
        actual: DataType,
        /// The requested data type.
        requested: DataType,
    },
    /// An error of the zarr or HDF5 library while reading or writing.
    #[error("{path}: {message}")]
    Backend {
        /// The store path and dataset.
        path: String,
        /// The library's message.
        message: String,
    },
    /// A [`RoiArray`] was built from or addressed with ROIs that do not fit it.
    #[error("RoiArray: {message}")]
    RoiArray {
        /// What is wrong, with the values.
        message: String,
    },
    /// `prepare` found an array that differs from the spec (and `overwrite` was not set).
    #[error(
        "{path}: an array exists there that differs from the spec ({}); set `overwrite` to replace it",
        differences.join("; ")
    )]
    Mismatch {
        /// The store path and dataset.
        path: String,
        /// Every difference, each naming the property, the array's value and the spec's.
        differences: Vec<String>,
    },
    /// Two arrays that an operation needs alike (a raw chunk copy:
    /// [`ZarrArray::copy_chunks_from`]) are not.
    #[error("{path}: cannot copy the chunks of {other} as stored bytes ({})", differences.join("; "))]
    NotAlike {
        /// The store path and dataset written to.
        path: String,
        /// The other array's store path and dataset.
        other: String,
        /// Every difference, naming the property and both values.
        differences: Vec<String>,
    },
}

/// The attribute key of an array's identity (see [`ZarrArray::array_id`]).
pub const ARRAY_ID_KEY: &str = "blockwise_array_id";

/// A fresh array id: 128 random bits from the OS, hex.
pub(crate) fn new_array_id(path: &str) -> Result<String, StoreError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| StoreError::Open {
            path: path.to_owned(),
            message: format!("reading /dev/urandom for the array's id: {e}"),
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The array id in attribute value `v`, if it is a string (otherwise a warning, and none).
pub(crate) fn array_id_of(path: &str, v: Option<&serde_json::Value>) -> Option<String> {
    match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => {
            tracing::warn!(
                array = path,
                value = %other,
                "attribute {ARRAY_ID_KEY} is not a string; the array has no identity"
            );
            None
        }
    }
}

/// One difference for [`StoreError::Mismatch`]: `"{what}: the array has {a}, the spec {b}"`.
pub(crate) fn difference<V: fmt::Display + PartialEq>(
    out: &mut Vec<String>,
    what: &str,
    array: V,
    spec: V,
) {
    if array != spec {
        out.push(format!("{what}: the array has {array}, the spec {spec}"));
    }
}

/// A voxel shape for messages: `[64, 64, 64]`, or `none`.
pub(crate) struct ShapeText(pub(crate) Option<Vec<u64>>);

impl fmt::Display for ShapeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("none"),
            Some(s) => write!(f, "{s:?}"),
        }
    }
}

impl PartialEq for ShapeText {
    fn eq(&self, other: &ShapeText) -> bool {
        self.0 == other.0
    }
}

/// A list of strings for messages: `["z", "y", "x"]`.
pub(crate) struct ListText<'a>(pub(crate) &'a [String]);

impl fmt::Display for ListText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl PartialEq for ListText<'_> {
    fn eq(&self, other: &ListText<'_>) -> bool {
        self.0 == other.0
    }
}

/// The differences between an existing array's world metadata and a spec's (ROI, voxel
/// size, data type, and axis names and units where the spec gives them).
pub(crate) fn world_differences(
    meta: &WorldMeta,
    data_type: DataType,
    spec: &ArraySpec,
) -> Vec<String> {
    let mut out = Vec::new();
    difference(&mut out, "ROI", meta.roi(), spec.roi.clone());
    difference(
        &mut out,
        "voxel size",
        meta.voxel_size.clone(),
        spec.voxel_size.clone(),
    );
    difference(&mut out, "data type", data_type, spec.data_type);
    if let Some(names) = &spec.axis_names {
        difference(
            &mut out,
            "axis names",
            ListText(&meta.axis_names),
            ListText(names),
        );
    }
    if let Some(units) = &spec.units {
        difference(&mut out, "units", ListText(&meta.units), ListText(units));
    }
    out
}

/// The fill value a spec stores for its data type (integers truncated, as `create` does).
pub(crate) struct FillText {
    value: f64,
    data_type: DataType,
}

impl FillText {
    pub(crate) fn new(value: f64, data_type: DataType) -> FillText {
        let value = match data_type {
            DataType::F64 => value,
            DataType::F32 => f64::from(value as f32),
            _ => (value as i64) as f64,
        };
        FillText { value, data_type }
    }
}

impl fmt::Display for FillText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.data_type {
            DataType::F32 | DataType::F64 => write!(f, "{}", self.value),
            _ => write!(f, "{}", self.value as i64),
        }
    }
}

impl PartialEq for FillText {
    fn eq(&self, other: &FillText) -> bool {
        self.value.to_bits() == other.value.to_bits()
            || (self.value.is_nan() && other.value.is_nan())
            || self.value == other.value
    }
}

/// `Ok` if `T` is the array's element type.
pub(crate) fn check_type<T: Scalar>(path: &str, actual: DataType) -> Result<(), StoreError> {
    if T::DATA_TYPE == actual {
        Ok(())
    } else {
        Err(StoreError::DataType {
            path: path.to_owned(),
            actual,
            requested: T::DATA_TYPE,
        })
    }
}

/// Metadata shared by all backends: the array's place in world units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorldMeta {
    pub(crate) offset: Coordinate,
    pub(crate) voxel_size: Coordinate,
    pub(crate) axis_names: Vec<String>,
    pub(crate) units: Vec<String>,
    pub(crate) shape: Vec<u64>,
}

impl WorldMeta {
    pub(crate) fn roi(&self) -> Roi {
        let shape: Coordinate = self
            .shape
            .iter()
            .zip(self.voxel_size.iter())
            .map(|(&s, v)| s as i64 * v)
            .collect();
        Roi::new(self.offset.clone(), shape)
    }

    /// Voxel ranges of a world ROI; it must lie on voxel boundaries (and inside the array unless
    /// `allow_outside`).
    pub(crate) fn voxel_ranges(
        &self,
        path: &str,
        roi: &Roi,
        allow_outside: bool,
    ) -> Result<Vec<Range<i64>>, StoreError> {
        let err = |message: String| StoreError::Roi {
            path: path.to_owned(),
            message,
        };
        if roi.dims() != self.voxel_size.dims() {
            return Err(err(format!(
                "ROI {roi} has {} dims, the array has {}",
                roi.dims(),
                self.voxel_size.dims()
            )));
        }
        if !allow_outside && !self.roi().contains(roi) {
            return Err(err(format!(
                "ROI {roi} is not inside the array's ROI {}",
                self.roi()
            )));
        }
        let mut ranges = Vec::with_capacity(roi.dims());
        for d in 0..roi.dims() {
            let v = self.voxel_size[d];
            let s = roi.shape()[d];
            let (Some(b), true) = (roi.begin()[d].checked_sub(self.offset[d]), s >= 0) else {
                return Err(err(format!(
                    "ROI {roi} is too far from the array's offset {} or has a negative shape (axis {d})",
                    self.offset
                )));
            };
            let Some(e) = b.checked_add(s) else {
                return Err(err(format!(
                    "ROI {roi} is too far from the array's offset {} (axis {d})",
                    self.offset
                )));
            };
            if b.rem_euclid(v) != 0 || s.rem_euclid(v) != 0 {
                return Err(err(format!(
                    "ROI {roi} is not aligned to the voxel size {} from offset {} (axis {d})",
                    self.voxel_size, self.offset
                )));
            }
            ranges.push(b.div_euclid(v)..e.div_euclid(v));
        }
        Ok(ranges)
    }

    /// Reads a world ROI padded with `pad` outside the array; `read` reads voxel ranges that
    /// lie inside the array. Returns the data with the requested ROI.
    pub(crate) fn read_padded<T: Scalar>(
        &self,
        path: &str,
        roi: &Roi,
        pad: Pad<T>,
        read: impl FnOnce(&[Range<u64>]) -> Result<ndarray::ArrayD<T>, StoreError>,
    ) -> Result<RoiArray<T>, StoreError> {
        let ranges = self.voxel_ranges(path, roi, true)?;
        let err = |message: String| StoreError::Roi {
            path: path.to_owned(),
            message: format!("reading {roi}: {message}"),
        };
        let plan = pad::PadPlan::new(&pad, &ranges, &self.shape).map_err(err)?;
        let data = match &plan.source {
            Some(source) => Some(read(source)?),
            None => None,
        };
        let fill = match pad {
            Pad::Constant(v) => v,
            Pad::Nearest | Pad::Reflect => T::default(),
        };
        let out = plan.assemble(data, fill).map_err(err)?;
        self.roi_array(roi, out)
    }

    /// `data` (read at `roi`) as a [`RoiArray`].
    pub(crate) fn roi_array<T>(
        &self,
        roi: &Roi,
        data: ndarray::ArrayD<T>,
    ) -> Result<RoiArray<T>, StoreError> {
        RoiArray::new(roi.clone(), self.voxel_size.clone(), data)
    }

    /// The voxel ranges of a world ROI inside the array, as `u64`.
    pub(crate) fn inside_ranges(
        &self,
        path: &str,
        roi: &Roi,
    ) -> Result<Vec<Range<u64>>, StoreError> {
        Ok(self
            .voxel_ranges(path, roi, false)?
            .into_iter()
            .map(|r| r.start as u64..r.end as u64)
            .collect())
    }

    /// Checks that a [`RoiArray`] to write has the array's voxel size.
    pub(crate) fn check_voxel_size<T>(
        &self,
        path: &str,
        data: &RoiArray<T>,
    ) -> Result<(), StoreError> {
        if data.voxel_size() == &self.voxel_size {
            Ok(())
        } else {
            Err(StoreError::Roi {
                path: path.to_owned(),
                message: format!(
                    "the data to write (ROI {}) has voxel size {}, the array {}",
                    data.roi(),
                    data.voxel_size(),
                    self.voxel_size
                ),
            })
        }
    }

    /// Voxel ranges of a world ROI to write `shape` voxels to.
    pub(crate) fn write_ranges(
        &self,
        path: &str,
        roi: &Roi,
        shape: &[usize],
    ) -> Result<Vec<Range<i64>>, StoreError> {
        let ranges = self.voxel_ranges(path, roi, false)?;
        let want: Vec<usize> = ranges.iter().map(|r| (r.end - r.start) as usize).collect();
        if shape != want.as_slice() {
            return Err(StoreError::Roi {
                path: path.to_owned(),
                message: format!(
                    "data of shape {shape:?} does not match ROI {roi} ({want:?} voxels)"
                ),
            });
        }
        Ok(ranges)
    }

    pub(crate) fn chunk_grid(
        &self,
        name: &str,
        path: Option<&std::path::Path>,
        chunk: &[u64],
        array_id: Option<&str>,
    ) -> ChunkGrid {
        ChunkGrid {
            name: name.to_owned(),
            path: path.map(std::path::Path::to_owned),
            offset: self.offset.clone(),
            chunk: chunk
                .iter()
                .zip(self.voxel_size.iter())
                .map(|(&c, v)| c as i64 * v)
                .collect(),
            array_id: array_id.map(str::to_owned),
        }
    }

    /// The funlib.persistence attributes.
    pub(crate) fn attributes(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert(
            "voxel_size".into(),
            serde_json::json!(self.voxel_size.as_slice()),
        );
        m.insert("offset".into(), serde_json::json!(self.offset.as_slice()));
        m.insert("axis_names".into(), serde_json::json!(self.axis_names));
        m.insert("units".into(), serde_json::json!(self.units));
        m
    }

    /// Reads funlib.persistence attributes, with defaults (offset 0, voxel size 1, axes `d0..`,
    /// units "") where absent.
    pub(crate) fn from_attributes(
        path: &str,
        attrs: &serde_json::Map<String, serde_json::Value>,
        shape: Vec<u64>,
    ) -> Result<WorldMeta, StoreError> {
        let dims = shape.len();
        let bad = |what: &str, v: &serde_json::Value| StoreError::Open {
            path: path.to_owned(),
            message: format!(
                "attribute {what} = {v} is not a list of {dims} values of the right type"
            ),
        };
        let ints = |key: &str, default: i64| -> Result<Coordinate, StoreError> {
            match attrs.get(key) {
                None | Some(serde_json::Value::Null) => Ok(Coordinate::splat(default, dims)),
                Some(v) => {
                    let list = v.as_array().ok_or_else(|| bad(key, v))?;
                    let c: Option<Coordinate> = list
                        .iter()
                        .map(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64)))
                        .collect();
                    match c {
                        Some(c) if c.dims() == dims => Ok(c),
                        _ => Err(bad(key, v)),
                    }
                }
            }
        };
        let strings =
            |key: &str, default: &dyn Fn(usize) -> String| -> Result<Vec<String>, StoreError> {
                match attrs.get(key) {
                    None | Some(serde_json::Value::Null) => Ok((0..dims).map(default).collect()),
                    Some(v) => {
                        let list = v.as_array().ok_or_else(|| bad(key, v))?;
                        let s: Option<Vec<String>> =
                            list.iter().map(|x| x.as_str().map(str::to_owned)).collect();
                        match s {
                            Some(s) if s.len() == dims => Ok(s),
                            _ => Err(bad(key, v)),
                        }
                    }
                }
            };
        let voxel_size = ints("voxel_size", 1)?;
        if voxel_size.iter().any(|v| v <= 0) {
            return Err(StoreError::Open {
                path: path.to_owned(),
                message: format!("voxel size {voxel_size} has a non-positive element"),
            });
        }
        Ok(WorldMeta {
            offset: ints("offset", 0)?,
            voxel_size,
            axis_names: strings("axis_names", &|d| format!("d{d}"))?,
            units: strings("units", &|_| String::new())?,
            shape,
        })
    }
}
