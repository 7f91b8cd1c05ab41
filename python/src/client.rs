//! `Client` (a worker's own loop over its task's blocks) and `Scheduler` (the pure state
//! machine, for tests and custom runners).

use blockwise::{Client, Scheduler};
use pyo3::prelude::*;

use crate::errors::{BlockwiseError, format_exception, to_py};
use crate::run::PyTaskState;
use crate::task::{PyBlock, PyBlockStatus, tasks_of};

/// A worker's connection to its scheduler, for worker functions that run their own loop:
///
/// ```python
/// client = blockwise.Client()
/// while True:
///     with client.acquire_block() as block:
///         if block is None:
///             break
///         process(block)
/// ```
///
/// `Client()` reads the worker's context from the environment a process runner set.
#[pyclass(module = "blockwise._native", name = "Client")]
pub struct PyClient {
    inner: Option<Client>,
}

impl PyClient {
    fn client(&mut self) -> PyResult<&mut Client> {
        self.inner
            .as_mut()
            .ok_or_else(|| BlockwiseError::new_err("the client is closed"))
    }
}

#[pymethods]
impl PyClient {
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let c = py.detach(Client::from_env).map_err(to_py)?;
        Ok(PyClient { inner: Some(c) })
    }

    /// The task this worker serves.
    #[getter]
    fn task_id(&mut self) -> PyResult<String> {
        Ok(self.client()?.task_id().to_owned())
    }

    /// The worker's id.
    #[getter]
    fn worker_id(&mut self) -> PyResult<u64> {
        Ok(self.client()?.worker_id())
    }

    /// The next block, or None when the scheduler has no more for this worker.
    fn _acquire(&mut self, py: Python<'_>) -> PyResult<Option<PyBlock>> {
        let c = self.client()?;
        let b = py.detach(|| c.acquire_block()).map_err(to_py)?;
        Ok(b.map(|inner| PyBlock { inner }))
    }

    /// Reports the block done (or failed, if its status is FAILED).
    fn _release(&mut self, py: Python<'_>, block: PyRef<'_, PyBlock>) -> PyResult<()> {
        let b = block.inner.clone();
        let failed = PyBlockStatus::from(b.status()) == PyBlockStatus::FAILED;
        let c = self.client()?;
        if failed {
            py.detach(|| c.fail_block(b, "the worker function set the block's status to FAILED"))
        } else {
            py.detach(|| c.release_block(b))
        }
        .map_err(to_py)
    }

    /// Reports the block done with an output (JSON text).
    fn _release_with_output(
        &mut self,
        py: Python<'_>,
        block: PyRef<'_, PyBlock>,
        json: &str,
    ) -> PyResult<()> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| BlockwiseError::new_err(format!("the block's output: {e}")))?;
        let b = block.inner.clone();
        let c = self.client()?;
        py.detach(|| c.release_block_with_output(b, &value))
            .map_err(to_py)
    }

    /// Reports the block failed with the exception's text and traceback.
    fn _fail(
        &mut self,
        py: Python<'_>,
        block: PyRef<'_, PyBlock>,
        error: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let message = match error.extract::<String>() {
            Ok(s) => s,
            Err(_) => format_exception(py, &PyErr::from_value(error)),
        };
        let b = block.inner.clone();
        let c = self.client()?;
        py.detach(|| c.fail_block(b, message)).map_err(to_py)
    }

    /// Closes the connection (also done when the client is garbage collected).
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.inner.take() {
            Some(c) => py.detach(|| c.close()).map_err(to_py),
            None => Ok(()),
        }
    }
}

/// The scheduler: a pure state machine that hands out ready blocks in daisy's order and takes
/// them back (no threads, no clock).
#[pyclass(module = "blockwise", name = "Scheduler")]
pub struct PyScheduler {
    inner: Scheduler,
}

#[pymethods]
impl PyScheduler {
    /// A scheduler for the tasks and every upstream task reachable from them.
    #[new]
    fn new(tasks: &Bound<'_, PyAny>) -> PyResult<Self> {
        let tasks = tasks_of(tasks)?;
        Ok(PyScheduler {
            inner: Scheduler::new(&tasks).map_err(to_py)?,
        })
    }

    /// The next ready block of the task, or None.
    fn acquire_block(&mut self, task_id: &str) -> Option<PyBlock> {
        self.inner
            .acquire_block(task_id)
            .map(|inner| PyBlock { inner })
    }

    /// Takes a block back; its status (SUCCESS or FAILED) says how it went.
    fn release_block(&mut self, block: PyRef<'_, PyBlock>) -> PyResult<()> {
        self.inner
            .try_release_block(block.inner.clone())
            .map_err(to_py)
    }

    /// The ids of tasks with ready blocks, in task order.
    fn ready_tasks(&self) -> Vec<String> {
        self.inner.ready_tasks().map(str::to_owned).collect()
    }

    /// The counters of one task.
    fn task_state(&self, task_id: &str) -> PyResult<PyTaskState> {
        self.inner
            .task_state(task_id)
            .map(|s| PyTaskState { inner: s.clone() })
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(format!("no task {task_id:?}")))
    }

    /// `{task_id: TaskState}` for every task.
    fn task_states(&self) -> Vec<(String, PyTaskState)> {
        self.inner
            .tasks()
            .filter_map(|t| {
                self.inner
                    .task_state(t.task_id())
                    .map(|s| (t.task_id().to_owned(), PyTaskState { inner: s.clone() }))
            })
            .collect()
    }

    /// Whether every block of every task reached a final state.
    fn is_done(&self) -> bool {
        self.inner.is_done()
    }
}
