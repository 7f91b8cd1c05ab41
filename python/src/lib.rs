//! `blockwise._native`: the Rust engine for Python. The pure-Python package `blockwise`
//! (`python/blockwise/`) re-exports it with a Pythonic surface; see `python/README.md`.
//!
//! This crate is a thin layer over the `blockwise` crate's public API: scheduling, retries,
//! the journal and the worker protocol all stay in Rust.

use pyo3::prelude::*;

mod client;
mod errors;
mod exec;
mod geometry;
mod graph;
mod ops;
mod run;
mod serial;
mod store;
mod task;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<geometry::PyCoordinate>()?;
    m.add_class::<geometry::PyRoi>()?;
    m.add_class::<task::PyBlockStatus>()?;
    m.add_class::<task::PyBlock>()?;
    m.add_class::<task::PyWorkerContext>()?;
    m.add_class::<task::PyTask>()?;
    m.add_function(wrap_pyfunction!(task::_task_from_kwargs, m)?)?;
    m.add_class::<client::PyClient>()?;
    m.add_class::<client::PyScheduler>()?;
    m.add_class::<graph::PyBlockGraph>()?;
    m.add_class::<graph::PyLevelBlocks>()?;
    m.add_function(wrap_pyfunction!(serial::_run_serial, m)?)?;
    m.add_function(wrap_pyfunction!(graph::_cantor_number, m)?)?;
    run::register(m)?;
    exec::register(m)?;
    store::register(m)?;
    ops::register(m)?;
    Ok(())
}
