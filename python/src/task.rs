//! `Task`, `Block`, `BlockStatus`, `WorkerContext`: Python functions on blockwise's tasks.

use std::time::Duration;

use blockwise::{Block, BlockError, BlockStatus, Fit, Task, WorkerContext};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::{ConfigError, format_exception, to_py};
use crate::geometry::{PyRoi, roi};

/// A block's status.
#[pyclass(module = "blockwise", name = "BlockStatus", eq, eq_int, from_py_object)]
#[derive(Clone, Copy, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)] // daisy's names
pub enum PyBlockStatus {
    /// Not handed out yet.
    CREATED = 0,
    /// Handed out to a worker.
    PROCESSING = 1,
    /// Processed successfully.
    SUCCESS = 2,
    /// Processing failed.
    FAILED = 3,
}

impl From<BlockStatus> for PyBlockStatus {
    fn from(s: BlockStatus) -> Self {
        match s {
            BlockStatus::Created => PyBlockStatus::CREATED,
            BlockStatus::Processing => PyBlockStatus::PROCESSING,
            BlockStatus::Success => PyBlockStatus::SUCCESS,
            BlockStatus::Failed => PyBlockStatus::FAILED,
        }
    }
}

impl From<PyBlockStatus> for BlockStatus {
    fn from(s: PyBlockStatus) -> Self {
        match s {
            PyBlockStatus::CREATED => BlockStatus::Created,
            PyBlockStatus::PROCESSING => BlockStatus::Processing,
            PyBlockStatus::SUCCESS => BlockStatus::Success,
            PyBlockStatus::FAILED => BlockStatus::Failed,
        }
    }
}

/// One block of a task: the write ROI its function writes and the read ROI (write ROI plus
/// context) it may read, in world units.
#[pyclass(module = "blockwise", name = "Block")]
#[derive(Clone)]
pub struct PyBlock {
    pub inner: Block,
}

#[pymethods]
impl PyBlock {
    /// The id of the block's task.
    #[getter]
    fn task_id(&self) -> &str {
        self.inner.task_id()
    }

    /// daisy's block id (a Cantor number of the block's position).
    #[getter]
    fn block_id(&self) -> u64 {
        self.inner.block_id()
    }

    /// The block's dense row-major index in its task's grid.
    #[getter]
    fn grid_index(&self) -> u64 {
        self.inner.grid_index()
    }

    /// The ROI the block may read.
    #[getter]
    fn read_roi(&self) -> PyRoi {
        PyRoi(self.inner.read_roi().clone())
    }

    /// The ROI the block writes.
    #[getter]
    fn write_roi(&self) -> PyRoi {
        PyRoi(self.inner.write_roi().clone())
    }

    /// The block's status.
    #[getter]
    fn status(&self) -> PyBlockStatus {
        self.inner.status().into()
    }

    #[setter]
    fn set_status(&mut self, status: PyBlockStatus) {
        self.inner.set_status(status.into());
    }

    fn __repr__(&self) -> String {
        self.inner.to_string()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.extract::<PyRef<'_, PyBlock>>().is_ok_and(|o| {
            o.inner.task_id() == self.inner.task_id() && o.inner.block_id() == self.inner.block_id()
        })
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        (self.inner.task_id(), self.inner.block_id())
            .into_pyobject(py)?
            .hash()
    }
}

/// What a worker knows about itself: its task, its id (unique within the run) and the `gpu`
/// device ids it holds.
#[pyclass(module = "blockwise", name = "WorkerContext", frozen)]
pub struct PyWorkerContext {
    /// The task the worker serves.
    #[pyo3(get)]
    task_id: String,
    /// The worker's id.
    #[pyo3(get)]
    worker_id: u64,
    /// The `gpu` device ids the run's budget gave this worker (empty without one).
    devices: Vec<String>,
}

impl From<&WorkerContext> for PyWorkerContext {
    fn from(c: &WorkerContext) -> Self {
        PyWorkerContext {
            task_id: c.task_id.clone(),
            worker_id: c.worker_id,
            devices: c.devices().to_vec(),
        }
    }
}

#[pymethods]
impl PyWorkerContext {
    /// This process's context if a process runner started it as a worker, else None.
    #[staticmethod]
    fn from_env() -> PyResult<Option<PyWorkerContext>> {
        Ok(WorkerContext::from_env()
            .map_err(to_py)?
            .as_ref()
            .map(PyWorkerContext::from))
    }

    /// The `gpu` device ids this worker holds while it lives (a list of str), given by the
    /// run's budget (`run_blockwise(resources=..., devices=...)`) for the task's `requires`; no
    /// other live worker holds them. Empty when the task needs no GPU or the run has no
    /// budget. Worker processes also have them in `CUDA_VISIBLE_DEVICES`; on threads this is
    /// the only place to find them (select the device with it, e.g. `cuda:{id}`).
    #[getter]
    fn devices(&self) -> Vec<String> {
        self.devices.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "WorkerContext(task_id={:?}, worker_id={}, devices={:?})",
            self.task_id, self.worker_id, self.devices
        )
    }
}

/// A worker's block function that is released with the GIL held when the worker ends, so that
/// per-worker state (a model on a GPU) goes when its worker does, not at the next time some
/// thread takes the GIL.
struct WorkerFn(Option<Py<PyAny>>);

impl WorkerFn {
    fn get(&self) -> Result<&Py<PyAny>, BlockError> {
        self.0
            .as_ref()
            .ok_or_else(|| "the worker's block function was released".into())
    }
}

impl Drop for WorkerFn {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            Python::attach(move |_| drop(f));
        }
    }
}

/// `(resource, units)` pairs from a mapping `{name: units}` (or an iterable of pairs), units
/// whole numbers from 0; `what` names the argument in errors.
pub fn units_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<(String, u64)>> {
    let pairs = if obj.hasattr("items")? {
        obj.call_method0("items")?
    } else {
        obj.clone()
    };
    let iter = pairs.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what}: expected a dict of resource names to units, such as {{\"gpu\": 1}}"
        ))
    })?;
    let mut out = Vec::new();
    for item in iter {
        let (name, units): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            item?.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "{what}: expected a dict of resource names to units, such as {{\"gpu\": 1}}"
                ))
            })?;
        let name: String = name.extract().map_err(|_| {
            PyTypeError::new_err(format!("{what}: resource names are str, got {name:?}"))
        })?;
        let bad = || {
            ConfigError::new_err(format!(
                "{what}: resource {name:?} needs a whole number of units from 0, got {units}"
            ))
        };
        if units.is_instance_of::<pyo3::types::PyBool>() {
            return Err(bad());
        }
        let n: i64 = units.extract().map_err(|_| bad())?;
        let n = u64::try_from(n).map_err(|_| bad())?;
        out.push((name, n));
    }
    Ok(out)
}

/// `devices={"gpu": ["0", "3"]}`: each resource's device ids (str, or int for the
/// convenience of `range(n)`), in the order they are handed out.
pub fn device_ids_of(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, Vec<String>)>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Vec::new());
    };
    let expected = || {
        PyTypeError::new_err(
            "devices: expected a dict of resource names to lists of device ids, such as {\"gpu\": [\"0\", \"3\"]}",
        )
    };
    let items = obj.call_method0("items").map_err(|_| expected())?;
    let mut out = Vec::new();
    for item in items.try_iter()? {
        let (name, ids): (String, Bound<'_, PyAny>) = item?.extract().map_err(|_| expected())?;
        if ids.is_instance_of::<pyo3::types::PyString>() {
            return Err(ConfigError::new_err(format!(
                "devices[{name:?}]: expected a list of device ids, got the string {ids:?}; write [{ids:?}] for one id"
            )));
        }
        let mut list = Vec::new();
        for id in ids.try_iter().map_err(|_| expected())? {
            let id = id?;
            let text = if id.is_instance_of::<pyo3::types::PyString>() {
                id.extract::<String>()?
            } else if let Ok(n) = id.extract::<u64>() {
                n.to_string()
            } else {
                return Err(ConfigError::new_err(format!(
                    "devices[{name:?}]: device ids are str (or whole numbers), got {id}"
                )));
            };
            list.push(text);
        }
        out.push((name, list));
    }
    Ok(out)
}

/// Calls a block function and turns its exception into the block's error (with traceback).
fn call_block(f: &Py<PyAny>, block: &Block) -> Result<Option<Py<PyAny>>, BlockError> {
    Python::attach(|py| {
        let b = Py::new(
            py,
            PyBlock {
                inner: block.clone(),
            },
        )
        .map_err(|e| format_exception(py, &e))?;
        match f.call1(py, (b,)) {
            Ok(ret) if ret.is_none(py) => Ok(None),
            Ok(ret) => Ok(Some(ret)),
            Err(e) => {
                let text = format_exception(py, &e);
                if blockwise::is_worker() {
                    // The worker's log (its stderr) keeps the traceback too, as daisy's do.
                    let _ = py.import("sys").and_then(|sys| {
                        let err = sys.getattr("stderr")?;
                        err.call_method1("write", (format!("block {block} failed:\n{text}\n"),))?;
                        err.call_method0("flush")
                    });
                }
                Err(text.into())
            }
        }
    })
}

/// A block function's return value as JSON (`None` as `null`).
fn to_json(value: Option<Py<PyAny>>, block: &Block) -> Result<serde_json::Value, BlockError> {
    let Some(value) = value else {
        return Ok(serde_json::Value::Null);
    };
    Python::attach(|py| {
        let text: String = py
            .import("json")
            .and_then(|json| json.getattr("dumps")?.call1((value,))?.extract())
            .map_err(|e| {
                format!(
                    "the output of block {block} is not JSON-serialisable: {}",
                    e.value(py)
                )
            })?;
        serde_json::from_str(&text).map_err(|e| format!("the output of block {block}: {e}").into())
    })
}

fn worker_function_only(_: &Block) -> Result<(), BlockError> {
    Err(
        "this task has a worker function, which runs only on worker processes (runner=\"processes\")"
            .into(),
    )
}

fn fit(name: &str) -> PyResult<Fit> {
    match name {
        "valid" => Ok(Fit::Valid),
        "overhang" => Ok(Fit::Overhang),
        "shrink" => Ok(Fit::Shrink),
        other => Err(ConfigError::new_err(format!(
            "fit {other:?}: use 'valid', 'overhang' or 'shrink'"
        ))),
    }
}

/// Seconds (a number) or a `datetime.timedelta`, positive.
pub fn duration(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Duration> {
    let secs = match obj.extract::<f64>() {
        Ok(s) => s,
        Err(_) => match obj.extract::<Duration>() {
            Ok(d) => d.as_secs_f64(),
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "{what}: expected seconds (a number) or a datetime.timedelta"
                )));
            }
        },
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(ConfigError::new_err(format!(
            "{what} must be a positive duration, got {secs} s"
        )));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| ConfigError::new_err(format!("{what}: {e}")))
}

/// `idle_timeout`: seconds or a `timedelta`, 0 (idle workers leave at once) or more.
pub fn idle(obj: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let zero = match obj.extract::<f64>() {
        Ok(s) if s < 0.0 => {
            return Err(ConfigError::new_err(format!(
                "idle_timeout must be 0 s or more, got {s} s"
            )));
        }
        Ok(s) => s == 0.0,
        Err(_) => obj.extract::<Duration>().is_ok_and(|d| d.is_zero()),
    };
    if zero {
        return Ok(Duration::ZERO);
    }
    duration(obj, "idle_timeout")
}

/// A task: a total ROI tiled with blocks, and the Python function to run on each block.
///
/// Give exactly one of `process` (called with each `Block`), `process_per_worker` (called
/// once per worker with its `WorkerContext`; returns the function that then processes that
/// worker's blocks) or `worker_function` (called without arguments in each worker process; it
/// runs its own `Client` loop).
///
/// `mask` (a `ZarrArray`, at any voxel size) skips the blocks where it is all zero under the
/// write ROI (with `mask_threshold=t`: where no voxel is above `t`): neither `check` nor the
/// process function sees them; they count as completed and skipped (`TaskState.masked`), and
/// a run directory never records them as done.
#[pyclass(module = "blockwise", name = "Task", frozen)]
pub struct PyTask {
    pub inner: Task,
    /// The normalised constructor arguments: what a worker process rebuilds the task from.
    pub kwargs: Py<PyDict>,
    /// The upstream tasks given.
    pub upstream: Vec<Py<PyTask>>,
    pub worker_function: Option<Py<PyAny>>,
}

#[pymethods]
impl PyTask {
    #[new]
    #[pyo3(signature = (
        task_id, total_roi, read_roi, write_roi, *, process = None, process_per_worker = None,
        check = None, worker_function = None, fit = "valid", read_write_conflict = true,
        num_workers = 1, max_retries = 2, timeout = None, upstream = None, writes = None,
        outputs = false, max_consecutive_failures = None, requires = None, threads_per_worker = 1,
        mask = None, mask_threshold = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        task_id: String,
        total_roi: &Bound<'_, PyAny>,
        read_roi: &Bound<'_, PyAny>,
        write_roi: &Bound<'_, PyAny>,
        process: Option<Py<PyAny>>,
        process_per_worker: Option<Py<PyAny>>,
        check: Option<Py<PyAny>>,
        worker_function: Option<Py<PyAny>>,
        fit: &str,
        read_write_conflict: bool,
        num_workers: i64,
        max_retries: i64,
        timeout: Option<&Bound<'_, PyAny>>,
        upstream: Option<&Bound<'_, PyAny>>,
        writes: Option<&Bound<'_, PyAny>>,
        outputs: bool,
        max_consecutive_failures: Option<i64>,
        requires: Option<&Bound<'_, PyAny>>,
        threads_per_worker: i64,
        mask: Option<&Bound<'_, PyAny>>,
        mask_threshold: Option<f64>,
    ) -> PyResult<Self> {
        let kwargs = PyDict::new(py);
        let total = roi(total_roi, "total_roi")?;
        let read = roi(read_roi, "read_roi")?;
        let write = roi(write_roi, "write_roi")?;
        let given = [&process, &process_per_worker, &worker_function]
            .iter()
            .filter(|f| f.is_some())
            .count();
        if given != 1 {
            return Err(ConfigError::new_err(format!(
                "task {task_id:?}: give exactly one of process, process_per_worker and worker_function ({given} given)"
            )));
        }
        for (name, f) in [
            ("process", &process),
            ("process_per_worker", &process_per_worker),
            ("check", &check),
            ("worker_function", &worker_function),
        ] {
            if let Some(f) = f {
                if !f.bind(py).is_callable() {
                    return Err(PyTypeError::new_err(format!(
                        "task {task_id:?}: {name} must be callable"
                    )));
                }
                kwargs.set_item(name, f)?;
            }
        }
        if num_workers < 1 {
            return Err(ConfigError::new_err(format!(
                "task {task_id:?}: num_workers must be at least 1, got {num_workers}"
            )));
        }
        let max_retries = u32::try_from(max_retries).map_err(|_| {
            ConfigError::new_err(format!(
                "task {task_id:?}: max_retries must be between 0 and {}, got {max_retries}",
                u32::MAX
            ))
        })?;
        let mut b = Task::builder(&task_id, total.clone(), read.clone(), write.clone())
            .fit(self::fit(fit)?)
            .read_write_conflict(read_write_conflict)
            .num_workers(num_workers as usize)
            .max_retries(max_retries);
        if let Some(n) = max_consecutive_failures {
            let n = u32::try_from(n).map_err(|_| {
                ConfigError::new_err(format!(
                    "task {task_id:?}: max_consecutive_failures must be between 1 and {}, got {n}",
                    u32::MAX
                ))
            })?;
            b = b.max_consecutive_failures(n);
            kwargs.set_item("max_consecutive_failures", n)?;
        }
        if let Some(t) = timeout.filter(|t| !t.is_none()) {
            b = b.timeout(duration(t, &format!("task {task_id:?}: timeout"))?);
            kwargs.set_item("timeout", t)?;
        }
        if let Some(r) = requires.filter(|r| !r.is_none()) {
            let units = units_of(r, &format!("task {task_id:?}: requires"))?;
            let given = PyDict::new(py);
            for (name, n) in &units {
                given.set_item(name, n)?;
            }
            kwargs.set_item("requires", given)?;
            b = b.requires(units);
        }
        let threads = usize::try_from(threads_per_worker)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ConfigError::new_err(format!(
                    "task {task_id:?}: threads_per_worker must be at least 1, got {threads_per_worker}"
                ))
            })?;
        b = b.threads_per_worker(threads);
        kwargs.set_item("threads_per_worker", threads)?;
        let mut ups: Vec<Py<PyTask>> = Vec::new();
        if let Some(u) = upstream.filter(|u| !u.is_none()) {
            if let Ok(t) = u.cast::<PyTask>() {
                ups.push(t.clone().unbind());
            } else {
                for item in u.try_iter().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "task {task_id:?}: upstream must be a Task or an iterable of Tasks"
                    ))
                })? {
                    let item = item?;
                    let t = item.cast::<PyTask>().map_err(|_| {
                        PyTypeError::new_err(format!(
                            "task {task_id:?}: upstream holds a {} where a Task was expected",
                            item.get_type()
                                .name()
                                .map_or_else(|_| "?".to_owned(), |n| n.to_string())
                        ))
                    })?;
                    ups.push(t.clone().unbind());
                }
            }
        }
        for u in &ups {
            b = b.upstream(&u.get().inner);
        }
        if let Some(w) = writes.filter(|w| !w.is_none()) {
            let items: Vec<Bound<'_, PyAny>> = if w.hasattr("chunk_shape")? {
                vec![w.clone()]
            } else {
                w.try_iter()?.collect::<PyResult<_>>()?
            };
            for item in &items {
                b = b.writes(crate::store::chunk_grid_of(item)?);
            }
            kwargs.set_item("writes", PyTuple::new(py, items)?)?;
        }
        match (mask.filter(|m| !m.is_none()), mask_threshold) {
            (Some(m), t) => {
                b = b.mask(crate::store::mask_of(
                    m,
                    t,
                    &format!("task {task_id:?}: mask"),
                )?);
                kwargs.set_item("mask", m)?;
                if let Some(t) = t {
                    kwargs.set_item("mask_threshold", t)?;
                }
            }
            (None, Some(_)) => {
                return Err(ConfigError::new_err(format!(
                    "task {task_id:?}: mask_threshold needs a mask"
                )));
            }
            (None, None) => {}
        }
        if let Some(f) = check {
            b = b.check(move |block| {
                Python::attach(|py| {
                    let Ok(pb) = Py::new(
                        py,
                        PyBlock {
                            inner: block.clone(),
                        },
                    ) else {
                        return false;
                    };
                    match f.call1(py, (pb,)).and_then(|r| r.is_truthy(py)) {
                        Ok(done) => done,
                        Err(e) => {
                            // Like a panicking check in Rust: the block is not done.
                            e.display(py);
                            false
                        }
                    }
                })
            });
        }
        b = match (process, process_per_worker, &worker_function, outputs) {
            (Some(f), _, _, false) => b.process(move |block| call_block(&f, block).map(drop)),
            (Some(f), _, _, true) => {
                b.process_with_output(move |block| to_json(call_block(&f, block)?, block))
            }
            (None, Some(init), _, with_output) => {
                let init_fn = move |ctx: &WorkerContext| -> Result<Py<PyAny>, BlockError> {
                    Python::attach(|py| {
                        let c = Py::new(py, PyWorkerContext::from(ctx))
                            .map_err(|e| format_exception(py, &e))?;
                        let f = init.call1(py, (c,)).map_err(|e| format_exception(py, &e))?;
                        if !f.bind(py).is_callable() {
                            return Err(
                                "process_per_worker must return the block function (a callable)"
                                    .into(),
                            );
                        }
                        Ok(f)
                    })
                };
                if with_output {
                    b.process_per_worker_with_output(move |ctx| {
                        let f = WorkerFn(Some(init_fn(ctx)?));
                        Ok(move |block: &Block| to_json(call_block(f.get()?, block)?, block))
                    })
                } else {
                    b.process_per_worker(move |ctx| {
                        let f = WorkerFn(Some(init_fn(ctx)?));
                        Ok(move |block: &Block| call_block(f.get()?, block).map(drop))
                    })
                }
            }
            _ => b.process(worker_function_only),
        };
        let inner = b.build().map_err(to_py)?;
        kwargs.set_item("fit", fit)?;
        kwargs.set_item("read_write_conflict", read_write_conflict)?;
        kwargs.set_item("num_workers", num_workers)?;
        kwargs.set_item("max_retries", max_retries)?;
        kwargs.set_item("outputs", outputs)?;
        kwargs.set_item("upstream", PyTuple::new(py, &ups)?)?;
        kwargs.set_item("task_id", &task_id)?;
        kwargs.set_item("total_roi", PyRoi(total))?;
        kwargs.set_item("read_roi", PyRoi(read))?;
        kwargs.set_item("write_roi", PyRoi(write))?;
        Ok(PyTask {
            inner,
            kwargs: kwargs.unbind(),
            upstream: ups,
            worker_function,
        })
    }

    /// The task's id.
    #[getter]
    fn task_id(&self) -> &str {
        self.inner.task_id()
    }

    /// The number of blocks.
    #[getter]
    fn num_blocks(&self) -> u64 {
        self.inner.num_blocks()
    }

    /// The number of levels of the read-write conflict wavefront.
    #[getter]
    fn num_levels(&self) -> usize {
        self.inner.num_levels()
    }

    #[getter]
    fn total_roi(&self) -> PyRoi {
        PyRoi(self.inner.total_roi().clone())
    }

    /// The union of all blocks' write ROIs.
    #[getter]
    fn total_write_roi(&self) -> PyRoi {
        PyRoi(self.inner.total_write_roi().clone())
    }

    #[getter]
    fn read_roi(&self) -> PyRoi {
        PyRoi(self.inner.read_roi().clone())
    }

    #[getter]
    fn write_roi(&self) -> PyRoi {
        PyRoi(self.inner.write_roi().clone())
    }

    #[getter]
    fn num_workers(&self) -> usize {
        self.inner.num_workers()
    }

    #[getter]
    fn max_retries(&self) -> u32 {
        self.inner.max_retries()
    }

    /// The timeout in seconds, or None.
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.inner.timeout().map(|d| d.as_secs_f64())
    }

    #[getter]
    fn read_write_conflict(&self) -> bool {
        self.inner.read_write_conflict()
    }

    /// The fit: 'valid', 'overhang' or 'shrink'.
    #[getter]
    fn fit(&self) -> &'static str {
        match self.inner.fit() {
            Fit::Valid => "valid",
            Fit::Overhang => "overhang",
            Fit::Shrink => "shrink",
        }
    }

    /// The upstream tasks given.
    #[getter]
    fn upstream<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.upstream)
    }

    /// The process function, if any.
    #[getter]
    fn process(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.kwarg(py, "process")
    }

    /// The per-worker set-up, if any.
    #[getter]
    fn process_per_worker(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.kwarg(py, "process_per_worker")
    }

    /// The worker function, if any.
    #[getter]
    fn worker_function(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.worker_function.as_ref().map(|f| f.clone_ref(py))
    }

    /// The check function, if any.
    #[getter]
    fn check(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.kwarg(py, "check")
    }

    /// The failure budget: the task is abandoned after this many blocks in a row failed for
    /// good (None: no limit).
    #[getter]
    fn max_consecutive_failures(&self) -> Option<u32> {
        self.inner.max_consecutive_failures()
    }

    /// What one worker of the task needs of the run's resource budget: `{resource: units}`
    /// (empty by default; see `run_blockwise(resources=...)`).
    #[getter]
    fn requirements(&self) -> std::collections::BTreeMap<String, u64> {
        self.inner.requirements().iter().cloned().collect()
    }

    /// Blocks one worker process runs at once, each on its own thread.
    #[getter]
    fn threads_per_worker(&self) -> usize {
        self.inner.threads_per_worker()
    }

    /// The mask (a `ZarrArray`), or None.
    #[getter]
    fn mask(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.kwarg(py, "mask")
    }

    /// The mask's threshold (a block runs where a mask voxel is above it), or None (where
    /// one is not zero).
    #[getter]
    fn mask_threshold(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        self.kwarg(py, "mask_threshold")?
            .map(|t| t.extract(py))
            .transpose()
    }

    /// Whether the process function's return values are collected as block outputs.
    #[getter]
    fn outputs(&self) -> bool {
        self.inner.has_output()
    }

    /// The block with dense grid index `grid_index`, or None past the last block.
    fn block(&self, grid_index: u64) -> Option<PyBlock> {
        self.inner.block(grid_index).map(|inner| PyBlock { inner })
    }

    /// The constructor's arguments (used to rebuild the task in worker processes).
    fn _kwargs<'py>(&self, py: Python<'py>) -> Bound<'py, PyDict> {
        self.kwargs.bind(py).clone()
    }

    /// Pickles as its constructor call, so worker processes rebuild the same task.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyDict>,))> {
        let rebuild = py
            .import("blockwise._native")?
            .getattr("_task_from_kwargs")?;
        Ok((rebuild, (self.kwargs.bind(py).copy()?,)))
    }

    fn __repr__(&self) -> String {
        format!(
            "Task({:?}, {} blocks of write ROI {} in {})",
            self.inner.task_id(),
            self.inner.num_blocks(),
            self.inner.write_roi(),
            self.inner.total_roi()
        )
    }
}

impl PyTask {
    fn kwarg(&self, py: Python<'_>, name: &str) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.kwargs.bind(py).get_item(name)?.map(Bound::unbind))
    }
}

/// Rebuilds a task from its `_kwargs()` (the target of `Task.__reduce__`).
#[pyfunction]
pub fn _task_from_kwargs(py: Python<'_>, kwargs: &Bound<'_, PyDict>) -> PyResult<Py<PyTask>> {
    let cls = py.get_type::<PyTask>();
    let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
        kwargs
            .get_item(k)?
            .ok_or_else(|| PyValueError::new_err(format!("a pickled Task without {k}")))
    };
    let args = (
        get("task_id")?,
        get("total_roi")?,
        get("read_roi")?,
        get("write_roi")?,
    );
    let rest = kwargs.copy()?;
    for k in ["task_id", "total_roi", "read_roi", "write_roi"] {
        rest.del_item(k)?;
    }
    Ok(cls.call(args, Some(&rest))?.cast_into::<PyTask>()?.unbind())
}

/// Tasks from a Task or an iterable of Tasks.
pub fn tasks_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Task>> {
    if let Ok(t) = obj.cast::<PyTask>() {
        return Ok(vec![t.get().inner.clone()]);
    }
    let mut out = Vec::new();
    for item in obj
        .try_iter()
        .map_err(|_| PyTypeError::new_err("expected a Task or an iterable of Tasks"))?
    {
        let item = item?;
        let t = item.cast::<PyTask>().map_err(|_| {
            PyTypeError::new_err(format!(
                "expected Tasks, got a {}",
                item.get_type()
                    .name()
                    .map_or_else(|_| "?".to_owned(), |n| n.to_string())
            ))
        })?;
        out.push(t.get().inner.clone());
    }
    Ok(out)
}
