//! `Coordinate` and `Roi`: funlib.geometry's semantics over blockwise's geometry, accepting
//! tuples and funlib's own types anywhere.

use blockwise::{Coordinate, Roi, Snap};
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError, PyZeroDivisionError};
use pyo3::prelude::*;
use pyo3::types::{PySlice, PyTuple};

use crate::errors::geometry_err;

/// An n-dimensional integer coordinate with funlib.geometry's `Coordinate` semantics: a
/// sequence of ints that compares equal to the tuple of its values, with element-wise
/// arithmetic (with another coordinate of the same dimensions, or a number).
#[pyclass(module = "blockwise", name = "Coordinate", frozen, from_py_object)]
#[derive(Clone)]
pub struct PyCoordinate(pub Coordinate);

/// A region of interest: an offset and a shape in world units (funlib.geometry's `Roi`).
#[pyclass(module = "blockwise", name = "Roi", frozen, from_py_object)]
#[derive(Clone)]
pub struct PyRoi(pub Roi);

fn int(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    if obj.is_none() {
        return Err(PyValueError::new_err(format!(
            "{what}: None (an unbounded dimension) is not supported; blockwise's ROIs are bounded"
        )));
    }
    obj.extract::<i64>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what}: expected an integer, got {}",
            obj.repr()
                .map_or_else(|_| "?".to_owned(), |r| r.to_string())
        ))
    })
}

/// A coordinate from a `Coordinate`, funlib `Coordinate`, tuple, list or any iterable of ints.
pub fn coord(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Coordinate> {
    if let Ok(c) = obj.cast::<PyCoordinate>() {
        return Ok(c.get().0.clone());
    }
    if obj.extract::<i64>().is_ok() || obj.is_instance_of::<pyo3::types::PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{what}: expected a sequence of integers, got {}",
            obj.repr()
                .map_or_else(|_| "?".to_owned(), |r| r.to_string())
        )));
    }
    let mut values = Vec::new();
    for item in obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what}: expected a sequence of integers, got {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string())
        ))
    })? {
        values.push(int(&item?, what)?);
    }
    Ok(Coordinate::new(values))
}

/// A coordinate, or a number broadcast to `dims` dimensions.
fn coord_or_scalar(obj: &Bound<'_, PyAny>, dims: usize, what: &str) -> PyResult<Coordinate> {
    match obj.extract::<i64>() {
        Ok(v) if !obj.is_instance_of::<pyo3::types::PyBool>() => Ok(Coordinate::splat(v, dims)),
        _ => coord(obj, what),
    }
}

/// A ROI from a `Roi`, a funlib `Roi` (anything with `offset` and `shape`), or an
/// `(offset, shape)` pair.
pub fn roi(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Roi> {
    if let Ok(r) = obj.cast::<PyRoi>() {
        return Ok(r.get().0.clone());
    }
    if let (Ok(offset), Ok(shape)) = (obj.getattr("offset"), obj.getattr("shape")) {
        return make_roi(
            coord(&offset, &format!("{what}.offset"))?,
            coord(&shape, &format!("{what}.shape"))?,
        );
    }
    if let Ok(t) = obj.cast::<PyTuple>()
        && t.len() == 2
    {
        return make_roi(
            coord(&t.get_item(0)?, &format!("{what} offset"))?,
            coord(&t.get_item(1)?, &format!("{what} shape"))?,
        );
    }
    Err(PyTypeError::new_err(format!(
        "{what}: expected a Roi (blockwise's or funlib's) or an (offset, shape) pair, got {}",
        obj.repr()
            .map_or_else(|_| "?".to_owned(), |r| r.to_string())
    )))
}

fn make_roi(offset: Coordinate, shape: Coordinate) -> PyResult<Roi> {
    if offset.dims() != shape.dims() {
        return Err(PyValueError::new_err(format!(
            "a ROI's offset {offset} and shape {shape} have different dimensions"
        )));
    }
    Roi::try_new(offset, shape).map_err(geometry_err)
}

fn same_dims(a: &Coordinate, b: &Coordinate) -> PyResult<()> {
    if a.dims() != b.dims() {
        return Err(PyValueError::new_err(format!(
            "coordinates {a} and {b} have different dimensions"
        )));
    }
    Ok(())
}

fn overflow(op: &str, a: &Coordinate, b: &Coordinate) -> PyErr {
    PyValueError::new_err(format!("{a} {op} {b} overflows 64-bit integers"))
}

/// Element-wise `op` of two coordinates (the right one possibly a broadcast number).
fn elementwise(
    a: &Coordinate,
    b: &Coordinate,
    name: &str,
    op: impl Fn(i64, i64) -> Option<i64>,
) -> PyResult<Coordinate> {
    same_dims(a, b)?;
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| op(x, y).ok_or_else(|| overflow(name, a, b)))
        .collect::<PyResult<Vec<i64>>>()
        .map(Coordinate::new)
}

fn nonzero(b: &Coordinate) -> PyResult<()> {
    if b.iter().any(|v| v == 0) {
        return Err(PyZeroDivisionError::new_err(format!("division by {b}")));
    }
    Ok(())
}

fn floor_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    if (a % b != 0) && ((a < 0) != (b < 0)) {
        q.checked_sub(1)
    } else {
        Some(q)
    }
}

fn py_mod(a: i64, b: i64) -> Option<i64> {
    let r = a.checked_rem(b)?;
    if r != 0 && ((r < 0) != (b < 0)) {
        r.checked_add(b)
    } else {
        Some(r)
    }
}

impl PyCoordinate {
    fn other(&self, other: &Bound<'_, PyAny>) -> PyResult<Coordinate> {
        coord_or_scalar(other, self.0.dims(), "the other operand")
    }
}

#[pymethods]
impl PyCoordinate {
    /// `Coordinate(1, 2, 3)` or `Coordinate((1, 2, 3))` (any iterable of ints).
    #[new]
    #[pyo3(signature = (*values))]
    fn new(values: &Bound<'_, PyTuple>) -> PyResult<Self> {
        if values.len() == 1 {
            let first = values.get_item(0)?;
            if first.extract::<i64>().is_err() {
                return coord(&first, "Coordinate").map(PyCoordinate);
            }
        }
        coord(values.as_any(), "Coordinate").map(PyCoordinate)
    }

    /// The number of dimensions.
    #[getter]
    fn dims(&self) -> usize {
        self.0.dims()
    }

    fn __len__(&self) -> usize {
        self.0.dims()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        if let Ok(slice) = index.cast::<PySlice>() {
            let t = PyTuple::new(py, self.0.iter())?;
            let part = t.as_any().get_item(slice)?;
            return Ok(PyCoordinate(coord(&part, "Coordinate")?)
                .into_pyobject(py)?
                .into_any()
                .unbind());
        }
        let i: isize = index.extract()?;
        let n = self.0.dims() as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err("Coordinate index out of range"));
        }
        Ok(self.0[j as usize].into_pyobject(py)?.into_any().unbind())
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyTuple::new(py, self.0.iter())?
            .as_any()
            .try_iter()
            .map(Bound::into_any)
    }

    fn __contains__(&self, value: i64) -> bool {
        self.0.iter().any(|v| v == value)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        coord(other, "").is_ok_and(|c| c == self.0)
    }

    fn __ne__(&self, other: &Bound<'_, PyAny>) -> bool {
        !self.__eq__(other)
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        PyTuple::new(py, self.0.iter())?.hash()
    }

    fn __repr__(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|v| v.to_string()).collect();
        if parts.len() == 1 {
            format!("({},)", parts[0])
        } else {
            format!("({})", parts.join(", "))
        }
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyTuple>,))> {
        Ok((
            slf.get_type().into_any(),
            (PyTuple::new(py, slf.get().0.iter())?,),
        ))
    }

    /// The values as a plain tuple.
    fn to_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.0.iter())
    }

    /// This coordinate as a `funlib.geometry.Coordinate` (funlib must be installed).
    fn to_funlib<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("funlib.geometry")?
            .getattr("Coordinate")?
            .call1((PyTuple::new(py, self.0.iter())?,))
    }

    /// The coordinate without dimension `dim`.
    #[pyo3(signature = (dim = 0))]
    fn squeeze(&self, dim: usize) -> PyResult<Self> {
        if dim >= self.0.dims() {
            return Err(PyIndexError::new_err(format!(
                "dimension {dim} of a {}-D coordinate",
                self.0.dims()
            )));
        }
        Ok(PyCoordinate(
            self.0
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != dim)
                .map(|(_, v)| v)
                .collect(),
        ))
    }

    /// Whether every value is a multiple of the other coordinate's.
    fn is_multiple_of(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let o = self.other(other)?;
        same_dims(&self.0, &o)?;
        nonzero(&o)?;
        Ok(self.0.is_multiple_of(&o))
    }

    /// Division rounding to the nearest integer, halves down (funlib's `round_division`).
    fn round_division(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let o = self.other(other)?;
        nonzero(&o)?;
        elementwise(&self.0, &o, "round_division", |a, b| {
            floor_div(a.checked_add(b.checked_sub(1)? / 2)?, b)
        })
        .map(PyCoordinate)
    }

    /// Division rounding down.
    fn floor_division(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let o = self.other(other)?;
        nonzero(&o)?;
        elementwise(&self.0, &o, "//", floor_div).map(PyCoordinate)
    }

    /// Division rounding up.
    fn ceil_division(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let o = self.other(other)?;
        nonzero(&o)?;
        elementwise(&self.0, &o, "ceil_division", |a, b| {
            floor_div(a.checked_add(b)?.checked_sub(1)?, b)
        })
        .map(PyCoordinate)
    }

    fn __neg__(&self) -> PyResult<Self> {
        let zero = Coordinate::zeros(self.0.dims());
        elementwise(&zero, &self.0, "-", i64::checked_sub).map(PyCoordinate)
    }

    fn __abs__(&self) -> PyResult<Self> {
        self.0
            .iter()
            .map(|v| {
                v.checked_abs()
                    .ok_or_else(|| PyValueError::new_err("abs overflows"))
            })
            .collect::<PyResult<Vec<_>>>()
            .map(|v| PyCoordinate(Coordinate::new(v)))
    }

    fn __add__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        elementwise(&self.0, &self.other(other)?, "+", i64::checked_add).map(PyCoordinate)
    }

    fn __radd__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        self.__add__(other)
    }

    fn __sub__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        elementwise(&self.0, &self.other(other)?, "-", i64::checked_sub).map(PyCoordinate)
    }

    fn __rsub__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        elementwise(&self.other(other)?, &self.0, "-", i64::checked_sub).map(PyCoordinate)
    }

    fn __mul__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        elementwise(&self.0, &self.other(other)?, "*", i64::checked_mul).map(PyCoordinate)
    }

    fn __rmul__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        self.__mul__(other)
    }

    /// funlib divides and truncates to ints: `int(a / b)`, toward zero.
    fn __truediv__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let o = self.other(other)?;
        nonzero(&o)?;
        elementwise(&self.0, &o, "/", i64::checked_div).map(PyCoordinate)
    }

    fn __floordiv__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        self.floor_division(other)
    }

    fn __mod__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let o = self.other(other)?;
        nonzero(&o)?;
        elementwise(&self.0, &o, "%", py_mod).map(PyCoordinate)
    }
}

/// What `__reduce__` returns: the class and its constructor arguments.
type Reduced<'py, A> = (Bound<'py, PyAny>, A);

fn snap_mode(mode: &str) -> PyResult<Snap> {
    match mode {
        "grow" => Ok(Snap::Grow),
        "shrink" => Ok(Snap::Shrink),
        "closest" => Ok(Snap::Closest),
        other => Err(PyValueError::new_err(format!(
            "unknown snap_to_grid mode {other:?}: use 'grow', 'shrink' or 'closest'"
        ))),
    }
}

impl PyRoi {
    fn amount(&self, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Coordinate> {
        let c = coord_or_scalar(obj, self.0.dims(), what)?;
        same_dims(self.0.offset(), &c)?;
        Ok(c)
    }
}

fn c(py: Python<'_>, c: Coordinate) -> PyResult<Py<PyCoordinate>> {
    Py::new(py, PyCoordinate(c))
}

#[pymethods]
impl PyRoi {
    /// `Roi(offset, shape)`, or `Roi(roi)` from a funlib `Roi` (or anything with `offset`
    /// and `shape`).
    #[new]
    #[pyo3(signature = (offset, shape = None))]
    fn new(offset: &Bound<'_, PyAny>, shape: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        match shape {
            None => roi(offset, "Roi").map(PyRoi),
            Some(s) => make_roi(coord(offset, "Roi offset")?, coord(s, "Roi shape")?).map(PyRoi),
        }
    }

    /// The ROI's offset (its begin).
    #[getter(offset)]
    fn prop_offset(&self, py: Python<'_>) -> PyResult<Py<PyCoordinate>> {
        c(py, self.0.offset().clone())
    }

    /// The ROI's shape.
    #[getter(shape)]
    fn prop_shape(&self, py: Python<'_>) -> PyResult<Py<PyCoordinate>> {
        c(py, self.0.shape().clone())
    }

    /// The ROI's begin (its offset).
    #[getter(begin)]
    fn prop_begin(&self, py: Python<'_>) -> PyResult<Py<PyCoordinate>> {
        c(py, self.0.begin().clone())
    }

    /// The ROI's end (exclusive).
    #[getter(end)]
    fn prop_end(&self, py: Python<'_>) -> PyResult<Py<PyCoordinate>> {
        c(py, self.0.try_end().map_err(geometry_err)?)
    }

    /// The ROI's center (rounded down).
    #[getter(center)]
    fn prop_center(&self, py: Python<'_>) -> PyResult<Py<PyCoordinate>> {
        c(py, self.0.center())
    }

    /// The number of dimensions.
    #[getter]
    fn dims(&self) -> usize {
        self.0.dims()
    }

    /// The volume (product of the shape).
    #[getter(size)]
    fn prop_size(&self) -> PyResult<i64> {
        self.0
            .checked_size()
            .ok_or_else(|| PyValueError::new_err(format!("the size of {} overflows", self.0)))
    }

    /// Whether the ROI has no voxels.
    #[getter]
    fn empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Always false: blockwise's ROIs are bounded.
    #[getter]
    fn unbounded(&self) -> bool {
        false
    }

    #[pyo3(name = "get_offset")]
    fn method_get_offset(&self, py: Python<'_>) -> PyResult<Py<PyCoordinate>> {
        self.prop_offset(py)
    }

    #[pyo3(name = "get_shape")]
    fn method_get_shape(&self, py: Python<'_>) -> PyResult<Py<PyCoordinate>> {
        self.prop_shape(py)
    }

    #[pyo3(name = "get_begin")]
    fn method_get_begin(&self, py: Python<'_>) -> PyResult<Py<PyCoordinate>> {
        self.prop_begin(py)
    }

    #[pyo3(name = "get_end")]
    fn method_get_end(&self, py: Python<'_>) -> PyResult<Py<PyCoordinate>> {
        self.prop_end(py)
    }

    #[pyo3(name = "get_center")]
    fn method_get_center(&self, py: Python<'_>) -> PyResult<Py<PyCoordinate>> {
        self.prop_center(py)
    }

    #[pyo3(name = "get_size")]
    fn method_get_size(&self) -> PyResult<i64> {
        self.prop_size()
    }

    /// A tuple of slices that index this ROI in an array whose origin is 0.
    fn to_slices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let end = self.0.try_end().map_err(geometry_err)?;
        let slices = self
            .0
            .begin()
            .iter()
            .zip(end.iter())
            .map(|(b, e)| py.get_type::<PySlice>().call1((b, e)))
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, slices)
    }

    /// Alias of `to_slices`.
    fn get_bounding_box<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.to_slices(py)
    }

    /// Whether `other` (a ROI or a point) lies inside this ROI.
    fn contains(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(r) = roi(other, "other") {
            same_dims(self.0.offset(), r.offset())?;
            return Ok(self.0.contains(&r));
        }
        let p = coord(other, "point")?;
        same_dims(self.0.offset(), &p)?;
        Ok(self.0.contains_point(&p))
    }

    fn intersects(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let r = roi(other, "other")?;
        same_dims(self.0.offset(), r.offset())?;
        Ok(self.0.intersects(&r))
    }

    fn intersect(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let r = roi(other, "other")?;
        same_dims(self.0.offset(), r.offset())?;
        self.0.try_intersect(&r).map(PyRoi).map_err(geometry_err)
    }

    fn union(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let r = roi(other, "other")?;
        same_dims(self.0.offset(), r.offset())?;
        self.0.try_union(&r).map(PyRoi).map_err(geometry_err)
    }

    /// The ROI moved by `by` (a coordinate or a number).
    fn shift(&self, by: &Bound<'_, PyAny>) -> PyResult<Self> {
        let b = self.amount(by, "shift")?;
        self.0.try_shift(b).map(PyRoi).map_err(geometry_err)
    }

    /// The ROI aligned with `voxel_size`: `mode` is 'grow' (default), 'shrink' or 'closest'.
    #[pyo3(signature = (voxel_size, mode = "grow"))]
    fn snap_to_grid(&self, voxel_size: &Bound<'_, PyAny>, mode: &str) -> PyResult<Self> {
        let v = self.amount(voxel_size, "voxel_size")?;
        if v.iter().any(|x| x <= 0) {
            return Err(PyValueError::new_err(format!(
                "voxel size {v} must be positive"
            )));
        }
        self.0
            .try_snap_to_grid(&v, snap_mode(mode)?)
            .map(PyRoi)
            .map_err(geometry_err)
    }

    /// The ROI grown by `amount_neg` below and `amount_pos` above (coordinates or numbers).
    #[pyo3(signature = (amount_neg = None, amount_pos = None))]
    fn grow(
        &self,
        amount_neg: Option<&Bound<'_, PyAny>>,
        amount_pos: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let zero = Coordinate::zeros(self.0.dims());
        let neg = amount_neg.map_or(Ok(zero.clone()), |a| self.amount(a, "amount_neg"))?;
        let pos = amount_pos.map_or(Ok(zero), |a| self.amount(a, "amount_pos"))?;
        self.0.try_grow(neg, pos).map(PyRoi).map_err(geometry_err)
    }

    fn copy(&self) -> Self {
        self.clone()
    }

    fn __copy__(&self) -> Self {
        self.clone()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.clone()
    }

    /// The ROI without dimension `dim`.
    #[pyo3(signature = (dim = 0))]
    fn squeeze(&self, dim: usize) -> PyResult<Self> {
        let o = PyCoordinate(self.0.offset().clone()).squeeze(dim)?;
        let s = PyCoordinate(self.0.shape().clone()).squeeze(dim)?;
        make_roi(o.0, s.0).map(PyRoi)
    }

    fn __add__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        self.shift(other)
    }

    fn __sub__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let b = self.amount(other, "shift")?;
        let neg = PyCoordinate(b).__neg__()?;
        self.0.try_shift(neg.0).map(PyRoi).map_err(geometry_err)
    }

    fn __mul__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let o = self.amount(other, "factor")?;
        let off = elementwise(self.0.offset(), &o, "*", i64::checked_mul)?;
        let shape = elementwise(self.0.shape(), &o, "*", i64::checked_mul)?;
        make_roi(off, shape).map(PyRoi)
    }

    fn __truediv__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let o = self.amount(other, "divisor")?;
        nonzero(&o)?;
        let off = elementwise(self.0.offset(), &o, "/", i64::checked_div)?;
        let shape = elementwise(self.0.shape(), &o, "/", i64::checked_div)?;
        make_roi(off, shape).map(PyRoi)
    }

    fn __floordiv__(&self, other: &Bound<'_, PyAny>) -> PyResult<Self> {
        let o = self.amount(other, "divisor")?;
        nonzero(&o)?;
        let off = elementwise(self.0.offset(), &o, "//", floor_div)?;
        let shape = elementwise(self.0.shape(), &o, "//", floor_div)?;
        make_roi(off, shape).map(PyRoi)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        if other.cast::<PyRoi>().is_err() && !other.hasattr("shape").unwrap_or(false) {
            return false;
        }
        roi(other, "").is_ok_and(|r| r == self.0)
    }

    fn __ne__(&self, other: &Bound<'_, PyAny>) -> bool {
        !self.__eq__(other)
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        (
            PyTuple::new(py, self.0.offset().iter())?,
            PyTuple::new(py, self.0.shape().iter())?,
        )
            .into_pyobject(py)?
            .hash()
    }

    /// funlib's form: `[begin:end, ...] (shape, ...)`, or `[empty ROI]`.
    fn __repr__(&self) -> String {
        if self.0.is_empty() {
            return "[empty ROI]".to_owned();
        }
        let end = self.0.try_end().unwrap_or_else(|_| self.0.offset().clone());
        let slices: Vec<String> = self
            .0
            .begin()
            .iter()
            .zip(end.iter())
            .map(|(b, e)| format!("{b}:{e}"))
            .collect();
        let dims: Vec<String> = self.0.shape().iter().map(|v| v.to_string()).collect();
        format!("[{}] ({})", slices.join(", "), dims.join(", "))
    }

    #[allow(clippy::type_complexity)] // (type, (offset, shape)), as pickle wants it
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
    ) -> PyResult<Reduced<'py, (Bound<'py, PyTuple>, Bound<'py, PyTuple>)>> {
        let r = &slf.get().0;
        Ok((
            slf.get_type().into_any(),
            (
                PyTuple::new(py, r.offset().iter())?,
                PyTuple::new(py, r.shape().iter())?,
            ),
        ))
    }

    /// This ROI as a `funlib.geometry.Roi` (funlib must be installed).
    fn to_funlib<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("funlib.geometry")?.getattr("Roi")?.call1((
            PyTuple::new(py, self.0.offset().iter())?,
            PyTuple::new(py, self.0.shape().iter())?,
        ))
    }
}
