//! `_run_serial`: daisy's serial mode. One loop on this thread over the core `Scheduler`: ask
//! the tasks in order for a block, call the task's function on it, release it; an exception
//! the function raises ends the run at once and propagates.

use std::collections::HashMap;

use blockwise::{BlockStatus, Scheduler};
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::to_py;
use crate::run::PyTaskState;
use crate::task::{PyBlock, PyBlockStatus, tasks_of};

/// Runs the tasks (and their upstream tasks) serially; `functions` maps each task id to the
/// callable to run on each of its blocks (a `Block`; a block whose status the callable set to
/// FAILED is failed, and retried like any failed block). Returns `[(task_id, TaskState)]`.
#[pyfunction]
pub fn _run_serial(
    py: Python<'_>,
    tasks: &Bound<'_, PyAny>,
    functions: &Bound<'_, PyDict>,
) -> PyResult<Vec<(String, PyTaskState)>> {
    let tasks = tasks_of(tasks)?;
    let mut scheduler = Scheduler::new(&tasks).map_err(to_py)?;
    let order: Vec<String> = scheduler.tasks().map(|t| t.task_id().to_owned()).collect();
    let mut fns: HashMap<String, Py<PyAny>> = HashMap::new();
    for id in &order {
        let f = functions.get_item(id)?.ok_or_else(|| {
            PyKeyError::new_err(format!("no function for task {id:?} in the serial run"))
        })?;
        fns.insert(id.clone(), f.unbind());
    }
    loop {
        let Some(mut block) = order.iter().find_map(|id| scheduler.acquire_block(id)) else {
            break;
        };
        let Some(f) = fns.get(block.task_id()) else {
            return Err(PyKeyError::new_err(format!(
                "no function for task {:?}",
                block.task_id()
            )));
        };
        block.set_status(BlockStatus::Processing);
        let handle = Py::new(
            py,
            PyBlock {
                inner: block.clone(),
            },
        )?;
        match f.call1(py, (handle.clone_ref(py),)) {
            Ok(_) => {
                let failed =
                    PyBlockStatus::from(handle.borrow(py).inner.status()) == PyBlockStatus::FAILED;
                block.set_status(if failed {
                    BlockStatus::Failed
                } else {
                    BlockStatus::Success
                });
                scheduler.try_release_block(block).map_err(to_py)?;
            }
            Err(e) => {
                block.set_status(BlockStatus::Failed);
                // Keep the scheduler consistent; the exception is what the caller sees.
                let _ = scheduler.try_release_block(block);
                return Err(e);
            }
        }
        py.check_signals()?;
    }
    Ok(order
        .iter()
        .filter_map(|id| {
            scheduler
                .task_state(id)
                .map(|s| (id.clone(), PyTaskState { inner: s.clone() }))
        })
        .collect())
}
