//! `OmeZarr`, `OmeAxis`, `OmeLevel`: OME-Zarr (NGFF 0.4 and 0.5) multiscale images over
//! blockwise's `OmeZarr`, whose levels open as `ZarrArray`s with the image's world metadata.

use std::path::PathBuf;

use blockwise::store::{AxisKind, NgffVersion, OmeAxis, OmeZarr};
use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyList, PyTuple};

use super::{Backend, PyStoreArray, codec, spec_of, wrap_base, writable};
use crate::errors::{ConfigError, store_err};
use crate::geometry::{PyCoordinate, PyRoi, roi};

/// Level `k` of `image` as a Python `ZarrArray` (store: the image group, dataset: the level's
/// path), remembering the level so that a pickled array reopens through the image.
fn wrap_level(py: Python<'_>, image: &OmeZarr, k: usize, writable: bool) -> PyResult<Py<PyAny>> {
    let array = py.detach(|| image.level(k)).map_err(store_err)?;
    let dataset = image
        .levels()
        .get(k)
        .map(|l| l.path.clone())
        .unwrap_or_default();
    wrap_base(
        py,
        PyStoreArray {
            backend: Backend::Zarr(array),
            store: image.path().to_owned(),
            dataset,
            writable,
            cache_bytes: None,
            ome_level: Some(k),
        },
    )
}

/// Opens level `k` of the OME-Zarr image at `path` (`ZarrArray.open_ome`, and the reopening
/// of a pickled level).
pub fn open_level(py: Python<'_>, path: PathBuf, k: usize, writable: bool) -> PyResult<Py<PyAny>> {
    let image = py.detach(|| OmeZarr::open(&path)).map_err(store_err)?;
    wrap_level(py, &image, k, writable)
}

/// The NGFF name of an axis type (`"space"`, `"time"`, `"channel"` or a custom name).
fn kind_name(kind: &AxisKind) -> String {
    match kind {
        AxisKind::Space => "space".to_owned(),
        AxisKind::Time => "time".to_owned(),
        AxisKind::Channel => "channel".to_owned(),
        AxisKind::Other(s) => s.clone(),
        // `AxisKind` is non-exhaustive.
        #[allow(unreachable_patterns)]
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The axis type named `name`.
fn kind_of(name: &str) -> AxisKind {
    match name {
        "space" => AxisKind::Space,
        "time" => AxisKind::Time,
        "channel" => AxisKind::Channel,
        other => AxisKind::Other(other.to_owned()),
    }
}

/// One axis of an OME-Zarr image: its `name`, `type` (`"space"`, `"time"`, `"channel"`, a
/// custom type, or None) and `unit` (an NGFF unit name such as `"nanometer"`, or None).
/// `OmeZarr.create` also takes `(name, type, unit)` tuples.
#[pyclass(module = "blockwise", name = "OmeAxis", frozen, eq, from_py_object)]
#[derive(Clone, PartialEq)]
pub struct PyOmeAxis(pub OmeAxis);

#[pymethods]
impl PyOmeAxis {
    #[new]
    #[pyo3(signature = (name, r#type = None, unit = None))]
    fn new(name: String, r#type: Option<String>, unit: Option<String>) -> Self {
        PyOmeAxis(OmeAxis {
            name,
            kind: r#type.as_deref().map(kind_of),
            unit,
        })
    }

    /// The axis name (e.g. `"z"`).
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    /// The axis type (`"space"`, `"time"`, `"channel"` or a custom type), or None if the
    /// metadata gives none.
    #[getter]
    fn r#type(&self) -> Option<String> {
        self.0.kind.as_ref().map(kind_name)
    }

    /// The unit (e.g. `"nanometer"`), or None.
    #[getter]
    fn unit(&self) -> Option<&str> {
        self.0.unit.as_deref()
    }

    /// Pickles as its constructor call.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let args = (self.0.name.clone(), self.r#type(), self.0.unit.clone()).into_pyobject(py)?;
        Ok((py.get_type::<PyOmeAxis>().into_any(), args))
    }

    fn __repr__(&self) -> String {
        format!(
            "OmeAxis({:?}, type={}, unit={})",
            self.0.name,
            self.r#type()
                .map_or_else(|| "None".to_owned(), |t| format!("{t:?}")),
            self.0
                .unit
                .as_ref()
                .map_or_else(|| "None".to_owned(), |u| format!("{u:?}"))
        )
    }
}

/// An axis from an `OmeAxis`, or a `(name, type, unit)` / `(name, type)` / `(name,)` tuple.
fn axis_of(obj: &Bound<'_, PyAny>) -> PyResult<OmeAxis> {
    if let Ok(a) = obj.cast::<PyOmeAxis>() {
        return Ok(a.get().0.clone());
    }
    let bad = || {
        PyTypeError::new_err(format!(
            "axes: expected OmeAxis or (name, type, unit) tuples such as (\"z\", \"space\", \"nanometer\"), got {}",
            obj.repr()
                .map_or_else(|_| "?".to_owned(), |r| r.to_string())
        ))
    };
    let items: Vec<Bound<'_, PyAny>> = obj.cast::<PyTuple>().map_err(|_| bad())?.iter().collect();
    if items.is_empty() || items.len() > 3 {
        return Err(bad());
    }
    let name: String = items[0].extract().map_err(|_| bad())?;
    let text = |i: usize| -> PyResult<Option<String>> {
        match items.get(i) {
            None => Ok(None),
            Some(v) if v.is_none() => Ok(None),
            Some(v) => v.extract().map(Some).map_err(|_| bad()),
        }
    };
    Ok(OmeAxis {
        name,
        kind: text(1)?.as_deref().map(kind_of),
        unit: text(2)?,
    })
}

/// One resolution level of an OME-Zarr image: its array's `path` in the image group and its
/// `voxel_size` and `offset` in world units (from the NGFF scale and translation).
#[pyclass(module = "blockwise", name = "OmeLevel", frozen)]
pub struct PyOmeLevel {
    /// The level array's path inside the image group (e.g. `"s0"`).
    #[pyo3(get)]
    path: String,
    voxel_size: PyCoordinate,
    offset: PyCoordinate,
}

#[pymethods]
impl PyOmeLevel {
    /// The size of one voxel in world units.
    #[getter]
    fn voxel_size(&self) -> PyCoordinate {
        self.voxel_size.clone()
    }

    /// The world position of voxel 0.
    #[getter]
    fn offset(&self) -> PyCoordinate {
        self.offset.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "OmeLevel({:?}, voxel_size={}, offset={})",
            self.path, self.voxel_size.0, self.offset.0
        )
    }
}

/// An OME-Zarr multiscale image (NGFF 0.4 on zarr v2, 0.5 on zarr v3): a zarr group whose
/// metadata lists resolution levels, finest first. `image[k]` (or `image.level(k)`) opens level
/// `k` as a `ZarrArray` whose voxel size, offset, axis names and units are the image's;
/// `len(image)` is the number of levels.
#[pyclass(module = "blockwise", name = "OmeZarr", frozen)]
pub struct PyOmeZarr {
    inner: OmeZarr,
}

#[pymethods]
impl PyOmeZarr {
    /// Opens the OME-Zarr image at `path` (its first multiscale image). Raises `StoreError`
    /// naming what is wrong: no zarr group, no multiscales metadata, metadata the NGFF schema
    /// rejects, or a scale or translation that is not a whole number.
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| OmeZarr::open(&path)).map_err(store_err)?;
        Ok(PyOmeZarr { inner })
    }

    /// Creates an OME-Zarr image at `path`: one zarr array per level and the multiscales
    /// metadata (NGFF 0.5 for `zarr_format=3`, 0.4 for 2). `axes` are `OmeAxis`es or
    /// `(name, type, unit)` tuples (NGFF: optional time, optional channel, then 2 or 3 space
    /// axes); `levels` are `(path, roi, voxel_size)` tuples, finest first, whose voxel size and
    /// ROI offset become the level's scale and translation. The other arguments, as
    /// `ZarrArray.create`'s, apply to every level; the arrays' axis names and units are the
    /// axes'. Raises `StoreError` for metadata that is not valid NGFF (e.g. no space axis).
    #[staticmethod]
    #[pyo3(signature = (
        path, axes, levels, dtype, chunk_shape, *, name = None, fill_value = 0.0,
        compression = Some("blosc-zstd"), compression_level = None, zarr_format = 3,
        shard_shape = None, overwrite = false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        py: Python<'_>,
        path: PathBuf,
        axes: &Bound<'_, PyAny>,
        levels: &Bound<'_, PyAny>,
        dtype: &Bound<'_, PyAny>,
        chunk_shape: Vec<u64>,
        name: Option<String>,
        fill_value: f64,
        compression: Option<&str>,
        compression_level: Option<i64>,
        zarr_format: u8,
        shard_shape: Option<Vec<u64>>,
        overwrite: bool,
    ) -> PyResult<Self> {
        let axes: Vec<OmeAxis> = axes
            .try_iter()
            .map_err(|_| PyTypeError::new_err("axes: expected a list of OmeAxis or tuples"))?
            .map(|a| axis_of(&a?))
            .collect::<PyResult<_>>()?;
        let codec = codec(compression, compression_level)?;
        let mut builder = OmeZarr::builder(&path).axes(axes);
        if let Some(n) = name {
            builder = builder.name(n);
        }
        let bad_level = |item: &Bound<'_, PyAny>| {
            PyTypeError::new_err(format!(
                "levels: expected (path, roi, voxel_size) tuples such as (\"s0\", roi, (4, 4, 4)), got {}",
                item.repr()
                    .map_or_else(|_| "?".to_owned(), |r| r.to_string())
            ))
        };
        let mut count = 0usize;
        for item in levels.try_iter().map_err(|_| {
            PyTypeError::new_err("levels: expected a list of (path, roi, voxel_size)")
        })? {
            let item = item?;
            let (level_path, level_roi, voxel_size): (String, Bound<'_, PyAny>, Bound<'_, PyAny>) =
                item.extract().map_err(|_| bad_level(&item))?;
            let spec = spec_of(
                &level_roi,
                &voxel_size,
                dtype,
                chunk_shape.clone(),
                None,
                None,
                fill_value,
                codec,
                zarr_format,
                shard_shape.clone(),
                overwrite,
            )?;
            builder = builder.level(level_path, spec);
            count += 1;
        }
        if count == 0 {
            return Err(ConfigError::new_err(format!(
                "{}: an OME-Zarr image needs at least one level",
                path.display()
            )));
        }
        let inner = py.detach(|| builder.create()).map_err(store_err)?;
        Ok(PyOmeZarr { inner })
    }

    /// The image group's path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_owned()
    }

    /// Whether the coarser levels are placed by their voxel centres (as ngff-zarr and
    /// ome-zarr-py write them): then every level's offset is level 0's translation, so the
    /// levels line up by their corners (blockwise's and funlib's offsets).
    #[getter]
    fn pixel_centres(&self) -> bool {
        self.inner.pixel_centres()
    }

    /// The NGFF version of the metadata: `"0.4"` or `"0.5"`.
    #[getter]
    fn version(&self) -> &'static str {
        match self.inner.version() {
            NgffVersion::V0_4 => "0.4",
            NgffVersion::V0_5 => "0.5",
            // `NgffVersion` is non-exhaustive.
            #[allow(unreachable_patterns)]
            _ => "unknown",
        }
    }

    /// The multiscale image's name, or None.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    /// The axes, in the arrays' order (a list of `OmeAxis`).
    #[getter]
    fn axes(&self) -> Vec<PyOmeAxis> {
        self.inner.axes().iter().cloned().map(PyOmeAxis).collect()
    }

    /// The levels, finest first (a list of `OmeLevel`).
    #[getter]
    fn levels(&self) -> Vec<PyOmeLevel> {
        self.inner
            .levels()
            .iter()
            .map(|l| PyOmeLevel {
                path: l.path.clone(),
                voxel_size: PyCoordinate(l.voxel_size.clone()),
                offset: PyCoordinate(l.offset.clone()),
            })
            .collect()
    }

    /// Opens level `k` (0 the finest) as a `ZarrArray` with the image's voxel size, offset,
    /// axis names and units; `mode="r"` (the default) reads only, `"r+"` reads and writes.
    /// Raises `StoreError` if there is no level `k` or its array does not open.
    #[pyo3(signature = (k, mode = "r"))]
    fn level(&self, py: Python<'_>, k: usize, mode: &str) -> PyResult<Py<PyAny>> {
        wrap_level(py, &self.inner, k, writable(mode)?)
    }

    /// Level `k`'s ROI over its space axes only (without channel and time axes): the total
    /// ROI of a task over space.
    fn space_roi(&self, py: Python<'_>, k: usize) -> PyResult<PyRoi> {
        py.detach(|| self.inner.space_roi(k))
            .map(PyRoi)
            .map_err(store_err)
    }

    /// A ROI over the space axes (a block's) as a ROI of level `k`: the level's whole extent
    /// on its channel and time axes, `roi` on its space axes, so reading it reads every
    /// channel of the block.
    fn expand_roi(&self, py: Python<'_>, k: usize, roi: &Bound<'_, PyAny>) -> PyResult<PyRoi> {
        let r = self::roi(roi, "roi")?;
        py.detach(|| {
            let level = self.inner.level(k)?;
            let space = self.inner.space_roi(k)?;
            if r.dims() != space.dims() {
                return Err(blockwise::store::StoreError::Roi {
                    path: level.name().to_owned(),
                    message: format!(
                        "ROI {r} has {} axes, the image {} space axes",
                        r.dims(),
                        space.dims()
                    ),
                });
            }
            level.spatial_roi(&r)
        })
        .map(PyRoi)
        .map_err(store_err)
    }

    /// The names of the image's label images (empty if it has no `labels` group).
    fn labels(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.labels()).map_err(store_err)
    }

    /// Opens the label image `name` (an `OmeZarr` in the `labels` group). Raises `StoreError`
    /// if the image has no such label.
    fn label(&self, py: Python<'_>, name: &str) -> PyResult<PyOmeZarr> {
        py.detach(|| self.inner.label(name))
            .map(|inner| PyOmeZarr { inner })
            .map_err(store_err)
    }

    /// The number of levels.
    fn __len__(&self) -> usize {
        self.inner.levels().len()
    }

    /// `image[k]`: level `k` read-only (negative `k` counts from the coarsest); IndexError
    /// past the last level.
    fn __getitem__(&self, py: Python<'_>, k: isize) -> PyResult<Py<PyAny>> {
        let n = self.inner.levels().len();
        let i = if k < 0 {
            n.checked_sub(k.unsigned_abs())
        } else {
            usize::try_from(k).ok().filter(|&i| i < n)
        };
        match i {
            Some(i) => wrap_level(py, &self.inner, i, false),
            None => Err(PyIndexError::new_err(format!(
                "{}: no level {k}, the image has {n} levels",
                self.inner.path().display()
            ))),
        }
    }

    /// The levels read-only, finest first.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        let levels = (0..self.inner.levels().len())
            .map(|k| wrap_level(py, &self.inner, k, false))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, levels)?.try_iter()
    }

    /// Pickles as a reopening by path.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let open = py.get_type::<PyOmeZarr>().getattr("open")?;
        let args = (self.inner.path().to_owned(),).into_pyobject(py)?;
        Ok((open, args))
    }

    fn __repr__(&self) -> String {
        format!(
            "OmeZarr({:?}, version={}, axes={:?}, levels={:?})",
            self.inner.path().display().to_string(),
            self.version(),
            self.inner
                .axes()
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            self.inner
                .levels()
                .iter()
                .map(|l| l.path.as_str())
                .collect::<Vec<_>>()
        )
    }
}
