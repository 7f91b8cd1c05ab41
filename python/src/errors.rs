//! Python exceptions for blockwise's errors.

use pyo3::create_exception;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

create_exception!(
    blockwise,
    BlockwiseError,
    PyRuntimeError,
    "Base class of blockwise's errors (a RuntimeError)."
);
create_exception!(
    blockwise,
    ConfigError,
    PyValueError,
    "An invalid task, task graph or runner configuration (a ValueError); the message names the offending values."
);
create_exception!(
    blockwise,
    WorkerStartupError,
    BlockwiseError,
    "Workers of a task kept failing before completing a block (their set-up failed, they crashed or could not connect)."
);
create_exception!(
    blockwise,
    StoreError,
    BlockwiseError,
    "An array could not be opened, created, read or written, or does not match what was asked for."
);
create_exception!(
    blockwise,
    JournalError,
    BlockwiseError,
    "The run directory could not be used: locked, damaged, another block layout, replaced outputs."
);

/// The Python exception for a blockwise error.
pub fn to_py(e: blockwise::Error) -> PyErr {
    use blockwise::Error as E;
    let msg = e.to_string();
    match e {
        E::InvalidTask { .. }
        | E::DuplicateTaskId { .. }
        | E::UnknownUpstream { .. }
        | E::Cycle { .. }
        | E::MissingProcess { .. }
        | E::Resources(_)
        | E::Geometry(_) => ConfigError::new_err(msg),
        E::WorkerStartup { .. } => WorkerStartupError::new_err(msg),
        E::Interrupted { .. } => PyKeyboardInterrupt::new_err(msg),
        E::Store(_) => StoreError::new_err(msg),
        E::Journal(_) => JournalError::new_err(msg),
        _ => BlockwiseError::new_err(msg),
    }
}

/// The Python exception for a geometry error (a ValueError).
pub fn geometry_err(e: blockwise::GeometryError) -> PyErr {
    ConfigError::new_err(e.to_string())
}

/// The Python exception for a store error.
#[allow(dead_code)] // used by the arrays
pub fn store_err(e: blockwise::store::StoreError) -> PyErr {
    StoreError::new_err(e.to_string())
}

/// The Python exception for a journal error.
#[allow(dead_code)] // used by the arrays
pub fn journal_err(e: blockwise::journal::JournalError) -> PyErr {
    JournalError::new_err(e.to_string())
}

/// A Python exception as text: its `Type: message` line first (what summaries and the
/// failure budget's reason show), then the traceback as `traceback.format_exception` prints it.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        let only: Vec<String> = tb
            .getattr("format_exception_only")?
            .call1((err.get_type(py), err.value(py)))?
            .extract()?;
        let full: Vec<String> = tb
            .getattr("format_exception")?
            .call1((err.get_type(py), err.value(py), err.traceback(py)))?
            .extract()?;
        Ok::<_, PyErr>(format!(
            "{}\n{}",
            only.concat().trim_end(),
            full.concat().trim_end()
        ))
    });
    formatted.unwrap_or_else(|_| err.to_string())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("BlockwiseError", py.get_type::<BlockwiseError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("WorkerStartupError", py.get_type::<WorkerStartupError>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("JournalError", py.get_type::<JournalError>())?;
    Ok(())
}
