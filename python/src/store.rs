//! Arrays: `ZarrArray` (and `Hdf5Array` with the `hdf5` feature) over blockwise's stores.
//!
//! Both are subclasses of one Python class `Array`, whose methods (reads, writes, metadata,
//! pickling) are written once over [`Backend`], an enum of the Rust array kinds; the element
//! type is dispatched in one place ([`dispatch!`]).

use std::path::{Path, PathBuf};

use blockwise::store::{ArraySpec, ChunkGrid, Codec, DataType, Pad, ZarrArray, ZarrFormat};
use blockwise::{Coordinate, Roi};
use numpy::{
    IntoPyArray, PyArrayDescr, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::{StoreError, store_err};
use crate::geometry::{PyCoordinate, PyRoi, coord, roi};

mod ome;
pub use ome::{PyOmeAxis, PyOmeLevel, PyOmeZarr};

/// The default size of `open_cached`'s chunk cache: 256 MiB.
const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// Runs `$body` with `$t` the Rust element type of data type `$dt` (the one place element
/// types are dispatched).
macro_rules! dispatch {
    ($dt:expr, $t:ident => $body:expr) => {
        match $dt {
            DataType::U8 => {
                type $t = u8;
                $body
            }
            DataType::U16 => {
                type $t = u16;
                $body
            }
            DataType::U32 => {
                type $t = u32;
                $body
            }
            DataType::U64 => {
                type $t = u64;
                $body
            }
            DataType::I8 => {
                type $t = i8;
                $body
            }
            DataType::I16 => {
                type $t = i16;
                $body
            }
            DataType::I32 => {
                type $t = i32;
                $body
            }
            DataType::I64 => {
                type $t = i64;
                $body
            }
            DataType::F32 => {
                type $t = f32;
                $body
            }
            DataType::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}

/// The Rust array behind a Python array.
#[derive(Clone)]
enum Backend {
    Zarr(ZarrArray),
    #[cfg(feature = "hdf5")]
    Hdf5(blockwise::store::Hdf5Array),
}

/// Runs `$body` with `$a` the backend's Rust array (both kinds have the same methods).
macro_rules! on_backend {
    ($b:expr, $a:ident => $body:expr) => {
        match $b {
            Backend::Zarr($a) => $body,
            #[cfg(feature = "hdf5")]
            Backend::Hdf5($a) => $body,
        }
    };
}

impl Backend {
    fn kind(&self) -> &'static str {
        match self {
            Backend::Zarr(_) => "zarr",
            #[cfg(feature = "hdf5")]
            Backend::Hdf5(_) => "hdf5",
        }
    }

    fn roi(&self) -> Roi {
        on_backend!(self, a => a.roi())
    }

    fn voxel_size(&self) -> Coordinate {
        on_backend!(self, a => a.voxel_size().clone())
    }

    fn data_type(&self) -> DataType {
        on_backend!(self, a => a.data_type())
    }

    fn chunk_grid(&self) -> ChunkGrid {
        on_backend!(self, a => a.chunk_grid())
    }
}

/// The element type named by a numpy dtype-like (`"uint8"`, `numpy.float32`, a dtype).
fn data_type_of(obj: &Bound<'_, PyAny>) -> PyResult<DataType> {
    let py = obj.py();
    let dt = py.import("numpy")?.getattr("dtype")?.call1((obj,))?;
    let name: String = dt.getattr("name")?.extract()?;
    Ok(match name.as_str() {
        "uint8" => DataType::U8,
        "uint16" => DataType::U16,
        "uint32" => DataType::U32,
        "uint64" => DataType::U64,
        "int8" => DataType::I8,
        "int16" => DataType::I16,
        "int32" => DataType::I32,
        "int64" => DataType::I64,
        "float32" => DataType::F32,
        "float64" => DataType::F64,
        other => {
            return Err(PyValueError::new_err(format!(
                "dtype {other}: blockwise arrays hold uint8..uint64, int8..int64, float32 or float64"
            )));
        }
    })
}

/// The numpy dtype of an element type.
fn numpy_dtype(py: Python<'_>, d: DataType) -> Bound<'_, PyArrayDescr> {
    dispatch!(d, T => numpy::dtype::<T>(py))
}

/// A padding mode by scipy.ndimage's name.
fn pad_of<T: for<'a, 'py> FromPyObject<'a, 'py>>(
    mode: &str,
    value: &Bound<'_, PyAny>,
    d: DataType,
) -> PyResult<Pad<T>> {
    match mode {
        "reflect" => Ok(Pad::Reflect),
        "nearest" => Ok(Pad::Nearest),
        "constant" => value.extract::<T>().map(Pad::Constant).map_err(|_| {
            PyValueError::new_err(format!(
                "the padding value {} is not a {d} value",
                value
                    .repr()
                    .map_or_else(|_| "?".to_owned(), |r| r.to_string())
            ))
        }),
        other => Err(PyValueError::new_err(format!(
            "pad '{other}': use 'reflect', 'nearest' or 'constant'"
        ))),
    }
}

/// How a new zarr array's chunks are compressed.
fn codec(name: Option<&str>, level: Option<i64>) -> PyResult<Codec> {
    let bad_level =
        |l: i64| PyValueError::new_err(format!("compression_level {l} is out of range"));
    Ok(match name {
        None | Some("none") => Codec::None,
        Some("zstd") => Codec::Zstd {
            level: i32::try_from(level.unwrap_or(3)).map_err(|_| bad_level(level.unwrap_or(0)))?,
        },
        Some("gzip") => Codec::Gzip {
            level: u32::try_from(level.unwrap_or(6))
                .ok()
                .filter(|&l| l <= 9)
                .ok_or_else(|| bad_level(level.unwrap_or(0)))?,
        },
        Some(b @ ("blosc-zstd" | "blosc-lz4")) => {
            let level = u8::try_from(level.unwrap_or(5))
                .ok()
                .filter(|&l| l <= 9)
                .ok_or_else(|| bad_level(level.unwrap_or(0)))?;
            if b == "blosc-zstd" {
                Codec::BloscZstd {
                    level,
                    shuffle: true,
                }
            } else {
                Codec::BloscLz4 {
                    level,
                    shuffle: true,
                }
            }
        }
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "compression '{other}': use None, 'none', 'zstd', 'gzip', 'blosc-zstd' or 'blosc-lz4'"
            )));
        }
    })
}

/// Splits a path into the store and the dataset inside it: at the last component that ends
/// with one of `suffixes` (`data.zarr/raw/s0` → `data.zarr`, `raw/s0`), or not at all.
fn split_path(path: &Path, dataset: Option<String>, suffixes: &[&str]) -> (PathBuf, String) {
    if let Some(d) = dataset {
        return (path.to_owned(), d);
    }
    let parts: Vec<_> = path.components().collect();
    let store_end = parts.iter().rposition(|c| {
        let s = c.as_os_str().to_string_lossy().to_ascii_lowercase();
        suffixes.iter().any(|x| s.ends_with(x))
    });
    match store_end {
        Some(i) if i + 1 < parts.len() => {
            let store: PathBuf = parts[..=i].iter().collect();
            let dataset: PathBuf = parts[i + 1..].iter().collect();
            (store, dataset.to_string_lossy().into_owned())
        }
        _ => (path.to_owned(), String::new()),
    }
}

const ZARR_SUFFIXES: &[&str] = &[".zarr", ".zarr2", ".zarr3"];
#[cfg(feature = "hdf5")]
const HDF5_SUFFIXES: &[&str] = &[".h5", ".hdf5", ".hdf"];

/// Whether an open mode allows writes: `"r"` reads only, `"r+"`/`"a"`/`"w"` read and write.
fn writable(mode: &str) -> PyResult<bool> {
    match mode {
        "r" => Ok(false),
        "r+" | "a" | "w" => Ok(true),
        other => Err(PyValueError::new_err(format!(
            "mode '{other}': use 'r' (read only) or 'r+' (read and write)"
        ))),
    }
}

/// A spec from `create`'s and `prepare`'s arguments.
#[allow(clippy::too_many_arguments)]
fn spec_of(
    roi_: &Bound<'_, PyAny>,
    voxel_size: &Bound<'_, PyAny>,
    dtype: &Bound<'_, PyAny>,
    chunk_shape: Vec<u64>,
    axis_names: Option<Vec<String>>,
    units: Option<Vec<String>>,
    fill_value: f64,
    codec: Codec,
    zarr_format: u8,
    shard_shape: Option<Vec<u64>>,
    overwrite: bool,
) -> PyResult<ArraySpec> {
    let mut spec = ArraySpec::new(
        roi(roi_, "roi")?,
        coord(voxel_size, "voxel_size")?,
        data_type_of(dtype)?,
        chunk_shape,
    );
    spec.axis_names = axis_names;
    spec.units = units;
    spec.fill_value = fill_value;
    spec.codec = codec;
    spec.format = match zarr_format {
        2 => ZarrFormat::V2,
        3 => ZarrFormat::V3,
        other => {
            return Err(PyValueError::new_err(format!(
                "zarr_format {other}: use 2 or 3"
            )));
        }
    };
    spec.shard_shape = shard_shape;
    spec.overwrite = overwrite;
    Ok(spec)
}

/// An array in world units (the base class of `ZarrArray` and `Hdf5Array`).
///
/// ROIs are in world units (`Roi`, funlib's `Roi` or `(offset, shape)`); they must lie on voxel
/// boundaries. Reads return numpy arrays (no copy: numpy takes the buffer the read filled) and
/// release the GIL during I/O, as do writes.
#[pyclass(module = "blockwise", name = "Array", subclass, frozen)]
pub struct PyStoreArray {
    backend: Backend,
    store: PathBuf,
    dataset: String,
    writable: bool,
    cache_bytes: Option<u64>,
    /// The OME-Zarr level this array was opened as (`store` is then the image group and
    /// `dataset` the level's path), so a pickled array reopens with the image's metadata.
    ome_level: Option<usize>,
}

impl PyStoreArray {
    /// The store path and dataset, for messages.
    fn name(&self) -> String {
        self.backend.chunk_grid().name
    }

    fn check_writable(&self) -> PyResult<()> {
        if self.writable {
            Ok(())
        } else {
            Err(StoreError::new_err(format!(
                "{}: the array was opened read-only (mode='r'{}); open it with mode='r+' to write",
                self.name(),
                if self.cache_bytes.is_some() {
                    ", with a read cache"
                } else {
                    ""
                }
            )))
        }
    }

    fn read_impl<'py>(
        &self,
        py: Python<'py>,
        roi_: &Bound<'py, PyAny>,
        pad: Option<(&str, &Bound<'py, PyAny>)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = roi(roi_, "roi")?;
        let d = self.backend.data_type();
        let backend = &self.backend;
        dispatch!(d, T => {
            let pad = pad.map(|(mode, value)| pad_of::<T>(mode, value, d)).transpose()?;
            let data = py
                .detach(|| on_backend!(backend, a => match pad {
                    None => a.read::<T>(&r),
                    Some(p) => a.read_padded::<T>(&r, p),
                }))
                .map_err(store_err)?;
            Ok(data.into_inner().into_pyarray(py).into_any())
        })
    }
}

#[pymethods]
impl PyStoreArray {
    /// The array's ROI in world units.
    #[getter]
    fn roi(&self) -> PyRoi {
        PyRoi(self.backend.roi())
    }

    /// The size of one voxel in world units.
    #[getter]
    fn voxel_size(&self) -> PyCoordinate {
        PyCoordinate(self.backend.voxel_size())
    }

    /// The world position of voxel 0 (the ROI's offset).
    #[getter]
    fn offset(&self) -> PyCoordinate {
        PyCoordinate(on_backend!(&self.backend, a => a.offset().clone()))
    }

    /// The shape in voxels.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let roi = self.backend.roi();
        let vs = self.backend.voxel_size();
        PyTuple::new(py, (0..roi.dims()).map(|d| roi.shape()[d] / vs[d]))
    }

    /// The number of dimensions.
    #[getter]
    fn dims(&self) -> usize {
        self.backend.roi().dims()
    }

    /// The axis names (`d0, d1, ...` for arrays without them).
    #[getter]
    fn axis_names(&self) -> Vec<String> {
        on_backend!(&self.backend, a => a.axis_names().to_vec())
    }

    /// The axis units (empty strings for arrays without them).
    #[getter]
    fn units(&self) -> Vec<String> {
        on_backend!(&self.backend, a => a.units().to_vec())
    }

    /// The element type, a numpy dtype.
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDescr> {
        numpy_dtype(py, self.backend.data_type())
    }

    /// The unit a writer rewrites, in voxels: the chunk shape (the shard shape if sharded).
    #[getter]
    fn chunk_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let grid = self.backend.chunk_grid();
        let vs = self.backend.voxel_size();
        PyTuple::new(py, (0..vs.dims()).map(|d| grid.chunk[d] / vs[d]))
    }

    /// The store: the zarr store's directory or the HDF5 file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.store.clone()
    }

    /// The dataset inside the store (`""` for an array at the store's root).
    #[getter]
    fn dataset(&self) -> &str {
        &self.dataset
    }

    /// Whether writes are allowed (not opened with `mode="r"` or a read cache).
    #[getter]
    fn writable(&self) -> bool {
        self.writable
    }

    /// The array's identity, a random id blockwise stores when it creates an array (None for
    /// arrays made by other tools). A run directory records it for the arrays a task writes.
    #[getter]
    fn array_id(&self) -> Option<String> {
        on_backend!(&self.backend, a => a.array_id().map(str::to_owned))
    }

    /// Reads a world ROI that lies inside the array; returns a numpy array of the ROI's voxel
    /// shape and the array's dtype.
    fn read<'py>(&self, py: Python<'py>, roi: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.read_impl(py, roi, None)
    }

    /// Reads any world ROI on voxel boundaries; voxels outside the array are `fill`.
    fn read_with_fill<'py>(
        &self,
        py: Python<'py>,
        roi: &Bound<'py, PyAny>,
        fill: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.read_impl(py, roi, Some(("constant", fill)))
    }

    /// Reads any world ROI on voxel boundaries, padding voxels outside the array as
    /// scipy.ndimage's modes of the same name do: `"reflect"` (mirrored, the edge voxel
    /// repeated), `"nearest"` (the edge voxel) or `"constant"` (`value`).
    #[pyo3(signature = (roi, pad = "reflect", value = None))]
    fn read_padded<'py>(
        &self,
        py: Python<'py>,
        roi: &Bound<'py, PyAny>,
        pad: &str,
        value: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let zero = 0i64.into_pyobject(py)?.into_any();
        let value = value.unwrap_or(&zero);
        self.read_impl(py, roi, Some((pad, value)))
    }

    /// Reads a world ROI as `(data, roi)`: the numpy array and the ROI it covers, so the part
    /// a block writes is found in world units. With `pad` (`"reflect"`, `"nearest"`,
    /// `"constant"` with `value`) the ROI may reach past the array.
    #[pyo3(signature = (roi, pad = None, value = None))]
    fn read_roi<'py>(
        &self,
        py: Python<'py>,
        roi: &Bound<'py, PyAny>,
        pad: Option<&str>,
        value: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyAny>, PyRoi)> {
        let r = crate::geometry::roi(roi, "roi")?;
        let data = match pad {
            None => self.read_impl(py, roi, None)?,
            Some(mode) => self.read_padded(py, roi, mode, value)?,
        };
        Ok((data, PyRoi(r)))
    }

    /// Writes a numpy array to a world ROI inside the array: its dtype must be the array's and
    /// its shape the ROI's in voxels (else ValueError naming both). C-contiguous input is
    /// written without a copy; the GIL is released while writing.
    fn write(
        &self,
        py: Python<'_>,
        roi: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.check_writable()?;
        let r = crate::geometry::roi(roi, "roi")?;
        let d = self.backend.data_type();
        let untyped = data.cast::<PyUntypedArray>().map_err(|_| {
            PyTypeError::new_err(format!(
                "write: data must be a numpy array, got {}",
                data.get_type()
                    .name()
                    .map_or_else(|_| "?".to_owned(), |n| n.to_string())
            ))
        })?;
        let want = numpy_dtype(py, d);
        let have = untyped.dtype();
        if !have.is_equiv_to(&want) {
            return Err(PyValueError::new_err(format!(
                "write to {}: the data has {}, the array {}; convert it with .astype(numpy.{})",
                self.name(),
                have.repr()?,
                want.repr()?,
                d
            )));
        }
        let vs = self.backend.voxel_size();
        if r.dims() == vs.dims() && r.shape().is_multiple_of(&vs) {
            let voxels: Vec<usize> = (0..vs.dims())
                .map(|i| usize::try_from(r.shape()[i] / vs[i]).unwrap_or(usize::MAX))
                .collect();
            if untyped.shape() != voxels.as_slice() {
                return Err(PyValueError::new_err(format!(
                    "write to {}: the data has shape {:?}, ROI {r} is {voxels:?} voxels (voxel size {vs})",
                    self.name(),
                    untyped.shape()
                )));
            }
        }
        let backend = &self.backend;
        dispatch!(d, T => {
            let typed = untyped.cast::<PyArrayDyn<T>>()?;
            let ro = typed.try_readonly().map_err(|e| PyValueError::new_err(format!("write: the data is being written elsewhere: {e}")))?;
            let view = ro.as_array();
            py.detach(|| on_backend!(backend, a => a.write::<T>(&r, view)))
                .map_err(store_err)
        })
    }

    /// `array[roi]`: `read(roi)`.
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        roi: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.read_impl(py, roi, None)
    }

    /// `array[roi] = data`: `write(roi, data)`.
    fn __setitem__(
        &self,
        py: Python<'_>,
        roi: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.write(py, roi, data)
    }

    /// Pickles as a reopening by path (for worker processes).
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let f = py.import("blockwise._native")?.getattr("_reopen_array")?;
        let args = (
            self.backend.kind(),
            self.store.clone(),
            self.dataset.clone(),
            self.writable,
            self.cache_bytes,
            self.ome_level,
        )
            .into_pyobject(py)?;
        Ok((f, args))
    }

    fn __repr__(&self) -> String {
        let class = match self.backend {
            Backend::Zarr(_) => "ZarrArray",
            #[cfg(feature = "hdf5")]
            Backend::Hdf5(_) => "Hdf5Array",
        };
        format!(
            "{class}({:?}, roi={}, voxel_size={}, dtype={})",
            self.name(),
            self.backend.roi(),
            self.backend.voxel_size(),
            self.backend.data_type()
        )
    }
}

/// Wraps a backend in its Python class.
fn wrap(
    py: Python<'_>,
    backend: Backend,
    store: PathBuf,
    dataset: String,
    writable: bool,
    cache_bytes: Option<u64>,
) -> PyResult<Py<PyAny>> {
    wrap_base(
        py,
        PyStoreArray {
            backend,
            store,
            dataset,
            writable,
            cache_bytes,
            ome_level: None,
        },
    )
}

/// Wraps an array in its Python class.
fn wrap_base(py: Python<'_>, base: PyStoreArray) -> PyResult<Py<PyAny>> {
    match base.backend {
        Backend::Zarr(_) => {
            Ok(Py::new(py, PyClassInitializer::from(base).add_subclass(PyZarrArray))?.into_any())
        }
        #[cfg(feature = "hdf5")]
        Backend::Hdf5(_) => Ok(Py::new(
            py,
            PyClassInitializer::from(base).add_subclass(hdf5_py::PyHdf5Array),
        )?
        .into_any()),
    }
}

/// Reopens a pickled array (the target of `Array.__reduce__`).
#[pyfunction]
#[pyo3(signature = (kind, store, dataset, writable, cache_bytes, ome_level = None))]
fn _reopen_array(
    py: Python<'_>,
    kind: &str,
    store: PathBuf,
    dataset: String,
    writable: bool,
    cache_bytes: Option<u64>,
    ome_level: Option<usize>,
) -> PyResult<Py<PyAny>> {
    if let Some(k) = ome_level {
        return ome::open_level(py, store, k, writable);
    }
    let backend = match kind {
        "zarr" => Backend::Zarr(
            py.detach(|| match cache_bytes {
                Some(c) => ZarrArray::open_cached(&store, &dataset, c),
                None => ZarrArray::open(&store, &dataset),
            })
            .map_err(store_err)?,
        ),
        #[cfg(feature = "hdf5")]
        "hdf5" => Backend::Hdf5(
            py.detach(|| blockwise::store::Hdf5Array::open(&store, &dataset))
                .map_err(store_err)?,
        ),
        other => {
            return Err(PyValueError::new_err(format!(
                "a pickled array of kind {other:?}, which this build of blockwise does not have"
            )));
        }
    };
    wrap(py, backend, store, dataset, writable, cache_bytes)
}

/// Whether `create`/`prepare` was called: `create` refuses an existing array (unless
/// `overwrite`), `prepare` opens a matching one.
fn make(how: &str) -> PyResult<bool> {
    match how {
        "create" => Ok(false),
        "prepare" => Ok(true),
        other => Err(PyValueError::new_err(format!(
            "expected \"create\" or \"prepare\", got {other:?}"
        ))),
    }
}

/// Calls `f(how, *args, **kwargs)`: a backend's `create` and `prepare` take the same
/// arguments, parsed once by `f`'s signature.
fn forward(
    f: &Bound<'_, pyo3::types::PyCFunction>,
    how: &str,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = f.py();
    let mut all = vec![how.into_pyobject(py)?.into_any()];
    all.extend(args.iter());
    f.call(PyTuple::new(py, all)?, kwargs).map(Bound::unbind)
}

/// `ZarrArray.create` and `ZarrArray.prepare` (`how`), with their one signature.
#[pyfunction]
#[pyo3(signature = (
    how, path, roi, voxel_size, dtype, chunk_shape, *, dataset = None, axis_names = None,
    units = None, fill_value = 0.0, compression = Some("blosc-zstd"), compression_level = None,
    zarr_format = 3, shard_shape = None, overwrite = false
))]
#[allow(clippy::too_many_arguments)]
fn zarr_array(
    py: Python<'_>,
    how: &str,
    path: PathBuf,
    roi: &Bound<'_, PyAny>,
    voxel_size: &Bound<'_, PyAny>,
    dtype: &Bound<'_, PyAny>,
    chunk_shape: Vec<u64>,
    dataset: Option<String>,
    axis_names: Option<Vec<String>>,
    units: Option<Vec<String>>,
    fill_value: f64,
    compression: Option<&str>,
    compression_level: Option<i64>,
    zarr_format: u8,
    shard_shape: Option<Vec<u64>>,
    overwrite: bool,
) -> PyResult<Py<PyAny>> {
    let prepare = make(how)?;
    let spec = spec_of(
        roi,
        voxel_size,
        dtype,
        chunk_shape,
        axis_names,
        units,
        fill_value,
        codec(compression, compression_level)?,
        zarr_format,
        shard_shape,
        overwrite,
    )?;
    let (store, dataset) = split_path(&path, dataset, ZARR_SUFFIXES);
    let a = py
        .detach(|| {
            if prepare {
                ZarrArray::prepare(&store, &dataset, &spec)
            } else {
                ZarrArray::create(&store, &dataset, &spec)
            }
        })
        .map_err(store_err)?;
    wrap(py, Backend::Zarr(a), store, dataset, true, None)
}

/// A zarr array (v2, v3 or sharded v3) in world units, stored as funlib.persistence stores it
/// (attributes `voxel_size`, `offset`, `axis_names`, `units`), so zarr-python and
/// `funlib.persistence.open_ds` read what it writes, and the other way round.
///
/// `path` names the store and, after a component ending in `.zarr`, the dataset
/// (`"data.zarr/raw"`); or give `dataset=` explicitly.
#[pyclass(module = "blockwise", name = "ZarrArray", extends = PyStoreArray, frozen)]
pub struct PyZarrArray;

#[pymethods]
impl PyZarrArray {
    /// Opens an existing array; `mode="r"` (the default) reads only, `"r+"` reads and writes.
    #[staticmethod]
    #[pyo3(signature = (path, mode = "r", *, dataset = None))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        mode: &str,
        dataset: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let w = writable(mode)?;
        let (store, dataset) = split_path(&path, dataset, ZARR_SUFFIXES);
        let a = py
            .detach(|| ZarrArray::open(&store, &dataset))
            .map_err(store_err)?;
        wrap(py, Backend::Zarr(a), store, dataset, w, None)
    }

    /// Opens level `level` (0 the finest) of the OME-Zarr image at `path` (NGFF 0.4 or 0.5),
    /// with the voxel size, offset, axis names and units of the image's multiscales metadata
    /// (not the array's own attributes); `mode` as `open`. `path` is the image group, and the
    /// array's `path` and `dataset` are the group and the level's path in it. Raises
    /// `StoreError` if `path` is not an OME-Zarr image or has no level `level`. Shorthand for
    /// `OmeZarr.open(path).level(level, mode)`.
    #[staticmethod]
    #[pyo3(signature = (path, level = 0, mode = "r"))]
    fn open_ome(py: Python<'_>, path: PathBuf, level: usize, mode: &str) -> PyResult<Py<PyAny>> {
        let w = writable(mode)?;
        ome::open_level(py, path, level, w)
    }

    /// Opens an array read-only through an LRU cache of decoded chunks of at most
    /// `cache_bytes` (default 256 MiB): for inputs that blocks with context read repeatedly.
    #[staticmethod]
    #[pyo3(signature = (path, cache_bytes = DEFAULT_CACHE_BYTES, *, dataset = None))]
    fn open_cached(
        py: Python<'_>,
        path: PathBuf,
        cache_bytes: u64,
        dataset: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let (store, dataset) = split_path(&path, dataset, ZARR_SUFFIXES);
        let a = py
            .detach(|| ZarrArray::open_cached(&store, &dataset, cache_bytes))
            .map_err(store_err)?;
        wrap(
            py,
            Backend::Zarr(a),
            store,
            dataset,
            false,
            Some(cache_bytes),
        )
    }

    /// Creates an array (and the store) covering `roi` (world units) with voxels of
    /// `voxel_size`, of `dtype`, in chunks of `chunk_shape` voxels. It gets a fresh
    /// `array_id`. `compression`: `None`/`"none"`, `"zstd"`, `"gzip"`, `"blosc-zstd"` (the
    /// default) or `"blosc-lz4"`, at `compression_level`; `shard_shape` (voxels, v3 only) stores
    /// chunks in shards. An existing array is an error unless `overwrite=True` replaces it.
    #[staticmethod]
    #[pyo3(signature = (*args, **kwargs), text_signature = "(path, roi, voxel_size, dtype, chunk_shape, *, dataset=None, axis_names=None, units=None, fill_value=0.0, compression='blosc-zstd', compression_level=None, zarr_format=3, shard_shape=None, overwrite=False)")]
    fn create(
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        forward(&wrap_pyfunction!(zarr_array, py)?, "create", args, kwargs)
    }

    /// Opens the array if it exists and matches (ROI, voxel size, dtype, chunk and shard
    /// shape, zarr format, fill value; axis names and units if given), creates it if there is
    /// none (funlib.persistence's `prepare_ds`): a rerun keeps its outputs and their
    /// `array_id`. A mismatch raises `StoreError` naming every difference, unless
    /// `overwrite=True`, which replaces it. Arguments as `create`.
    #[staticmethod]
    #[pyo3(signature = (*args, **kwargs), text_signature = "(path, roi, voxel_size, dtype, chunk_shape, *, dataset=None, axis_names=None, units=None, fill_value=0.0, compression='blosc-zstd', compression_level=None, zarr_format=3, shard_shape=None, overwrite=False)")]
    fn prepare(
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        forward(&wrap_pyfunction!(zarr_array, py)?, "prepare", args, kwargs)
    }

    /// Creates an array with the metadata of the zarr array `other` (shape, chunks, codecs,
    /// dtype, fill value, attributes) and a fresh `array_id`.
    #[staticmethod]
    #[pyo3(signature = (path, other, *, dataset = None, overwrite = false))]
    fn create_like(
        py: Python<'_>,
        path: PathBuf,
        other: &Bound<'_, PyAny>,
        dataset: Option<String>,
        overwrite: bool,
    ) -> PyResult<Py<PyAny>> {
        let like = match other
            .cast::<PyStoreArray>()
            .map(|o| o.get().backend.clone())
        {
            Ok(Backend::Zarr(z)) => z,
            _ => {
                return Err(PyTypeError::new_err(
                    "create_like: other must be a ZarrArray",
                ));
            }
        };
        let (store, dataset) = split_path(&path, dataset, ZARR_SUFFIXES);
        let a = py
            .detach(|| ZarrArray::create_like(&store, &dataset, &like, overwrite))
            .map_err(store_err)?;
        wrap(py, Backend::Zarr(a), store, dataset, true, None)
    }
}

#[cfg(feature = "hdf5")]
mod hdf5_py {
    use super::*;
    use blockwise::store::Hdf5Array;

    /// An HDF5 dataset in world units, with `ZarrArray`'s interface (attributes
    /// `voxel_size`, `offset`, `axis_names`, `units`). HDF5 allows one writer process per file.
    ///
    /// `path` names the file and, after a component ending in `.h5`/`.hdf5`/`.hdf`, the
    /// dataset (`"data.h5/raw"`); or give `dataset=`.
    #[pyclass(module = "blockwise", name = "Hdf5Array", extends = PyStoreArray, frozen)]
    pub struct PyHdf5Array;

    fn dataset_of(path: &Path, dataset: Option<String>) -> PyResult<(PathBuf, String)> {
        let (file, ds) = split_path(path, dataset, HDF5_SUFFIXES);
        if ds.is_empty() {
            return Err(PyValueError::new_err(format!(
                "{}: name the dataset (\"file.h5/raw\" or dataset=\"raw\")",
                path.display()
            )));
        }
        Ok((file, ds))
    }

    /// `Hdf5Array.create` and `Hdf5Array.prepare` (`how`), with their one signature.
    #[pyfunction]
    #[pyo3(signature = (
        how, path, roi, voxel_size, dtype, chunk_shape, *, dataset = None, axis_names = None,
        units = None, fill_value = 0.0, compression = Some("gzip"), compression_level = None,
        overwrite = false
    ))]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hdf5_array(
        py: Python<'_>,
        how: &str,
        path: PathBuf,
        roi: &Bound<'_, PyAny>,
        voxel_size: &Bound<'_, PyAny>,
        dtype: &Bound<'_, PyAny>,
        chunk_shape: Vec<u64>,
        dataset: Option<String>,
        axis_names: Option<Vec<String>>,
        units: Option<Vec<String>>,
        fill_value: f64,
        compression: Option<&str>,
        compression_level: Option<i64>,
        overwrite: bool,
    ) -> PyResult<Py<PyAny>> {
        let prepare = make(how)?;
        let spec = spec_of(
            roi,
            voxel_size,
            dtype,
            chunk_shape,
            axis_names,
            units,
            fill_value,
            codec(compression, compression_level)?,
            3,
            None,
            overwrite,
        )?;
        let (file, ds) = dataset_of(&path, dataset)?;
        let a = py
            .detach(|| {
                if prepare {
                    Hdf5Array::prepare(&file, &ds, &spec)
                } else {
                    Hdf5Array::create(&file, &ds, &spec)
                }
            })
            .map_err(store_err)?;
        wrap(py, Backend::Hdf5(a), file, ds, true, None)
    }

    #[pymethods]
    impl PyHdf5Array {
        /// Opens an existing dataset; `mode="r"` (the default) reads only, `"r+"` writes too.
        #[staticmethod]
        #[pyo3(signature = (path, mode = "r", *, dataset = None))]
        fn open(
            py: Python<'_>,
            path: PathBuf,
            mode: &str,
            dataset: Option<String>,
        ) -> PyResult<Py<PyAny>> {
            let w = writable(mode)?;
            let (file, ds) = dataset_of(&path, dataset)?;
            let a = py
                .detach(|| Hdf5Array::open(&file, &ds))
                .map_err(store_err)?;
            wrap(py, Backend::Hdf5(a), file, ds, w, None)
        }

        /// Creates a dataset (and the file); as `ZarrArray.create`, but HDF5 has only
        /// `compression=None`/`"none"` and `"gzip"` (the default), and no shards.
        #[staticmethod]
        #[pyo3(signature = (*args, **kwargs), text_signature = "(path, roi, voxel_size, dtype, chunk_shape, *, dataset=None, axis_names=None, units=None, fill_value=0.0, compression='gzip', compression_level=None, overwrite=False)")]
        fn create(
            py: Python<'_>,
            args: &Bound<'_, PyTuple>,
            kwargs: Option<&Bound<'_, PyDict>>,
        ) -> PyResult<Py<PyAny>> {
            forward(&wrap_pyfunction!(hdf5_array, py)?, "create", args, kwargs)
        }

        /// Opens the dataset if it matches, creates it if there is none; as
        /// `ZarrArray.prepare` (shards and the zarr format do not apply).
        #[staticmethod]
        #[pyo3(signature = (*args, **kwargs), text_signature = "(path, roi, voxel_size, dtype, chunk_shape, *, dataset=None, axis_names=None, units=None, fill_value=0.0, compression='gzip', compression_level=None, overwrite=False)")]
        fn prepare(
            py: Python<'_>,
            args: &Bound<'_, PyTuple>,
            kwargs: Option<&Bound<'_, PyDict>>,
        ) -> PyResult<Py<PyAny>> {
            forward(&wrap_pyfunction!(hdf5_array, py)?, "prepare", args, kwargs)
        }

        /// Flushes the file to disk.
        fn flush(self_: PyRef<'_, Self>, py: Python<'_>) -> PyResult<()> {
            let base = self_.as_super();
            match &base.backend {
                Backend::Hdf5(a) => py.detach(|| a.flush()).map_err(store_err),
                Backend::Zarr(_) => Ok(()),
            }
        }
    }
}

/// The Rust zarr array of a Python `ZarrArray`, with its store and dataset (for operations
/// that need zarr).
pub fn zarr_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(ZarrArray, PathBuf, String)> {
    let a = obj.cast::<PyStoreArray>().map(|a| a.get());
    match a {
        Ok(PyStoreArray {
            backend: Backend::Zarr(z),
            store,
            dataset,
            ..
        }) => Ok((z.clone(), store.clone(), dataset.clone())),
        _ => Err(PyTypeError::new_err(format!(
            "{what}: expected a ZarrArray, got {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string())
        ))),
    }
}

/// The mask of `Task(mask=..., mask_threshold=...)`: a block runs where a voxel of the zarr
/// array `obj` under it is not zero (no threshold) or is above `threshold`.
pub fn mask_of(
    obj: &Bound<'_, PyAny>,
    threshold: Option<f64>,
    what: &str,
) -> PyResult<blockwise::mask::Mask> {
    let (array, _, _) = zarr_of(obj, what)?;
    let Some(t) = threshold else {
        return Ok(blockwise::mask::Mask::nonzero(&array));
    };
    if t.is_nan() {
        return Err(PyValueError::new_err(format!(
            "{what}: mask_threshold must be a number, got NaN"
        )));
    }
    dispatch!(array.data_type(), T => {
        #[allow(clippy::cast_precision_loss, clippy::cast_lossless, clippy::unnecessary_cast)] // `T` is every element type
        let mask = blockwise::mask::Mask::with_predicate(
            &array,
            move |v: &blockwise::RoiArray<T>| v.iter().any(|&x| x as f64 > t),
        );
        // The threshold goes into the run directory's record: another one is a changed mask.
        mask.map(|m| m.named(format!("above {t:?}"))).map_err(store_err)
    })
}

/// The chunk grid of an array given to `Task(writes=...)`.
pub fn chunk_grid_of(obj: &Bound<'_, PyAny>) -> PyResult<ChunkGrid> {
    match obj.cast::<PyStoreArray>() {
        Ok(a) => Ok(a.get().backend.chunk_grid()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "writes= takes blockwise arrays (ZarrArray, Hdf5Array), got {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string())
        ))),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStoreArray>()?;
    m.add_class::<PyZarrArray>()?;
    #[cfg(feature = "hdf5")]
    m.add_class::<hdf5_py::PyHdf5Array>()?;
    m.add_class::<PyOmeZarr>()?;
    m.add_class::<PyOmeAxis>()?;
    m.add_class::<PyOmeLevel>()?;
    m.add_function(wrap_pyfunction!(_reopen_array, m)?)?;
    Ok(())
}
