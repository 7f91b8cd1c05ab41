//! Arrays: `ZarrArray` (and `Hdf5Array` with the `hdf5` feature) over blockwise's stores.

use blockwise::store::ChunkGrid;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// The chunk grid of an array given to `Task(writes=...)`.
pub fn chunk_grid_of(obj: &Bound<'_, PyAny>) -> PyResult<ChunkGrid> {
    Err(PyTypeError::new_err(format!(
        "writes= takes blockwise arrays (ZarrArray, Hdf5Array), got {}",
        obj.get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string())
    )))
}

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
