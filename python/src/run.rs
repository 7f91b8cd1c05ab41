//! Running tasks from Python: the runners, launchers, summaries and the worker entry.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blockwise::launch::{Batch, CommandTemplate, Launcher, Local, Resources};
use blockwise::{
    BlockFailure, Cancel, FailureKind, Progress, RunSummary, Runner, TaskState, WorkerOptions,
};
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::errors::{BlockwiseError, ConfigError, to_py};
use crate::task::{device_ids_of, duration, idle, tasks_of, units_of};

/// Memory as bytes: an int, or a string with a K/M/G/T suffix (powers of 1024).
fn memory(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(n) = obj.extract::<u64>() {
        return Ok(n);
    }
    let s: String = obj
        .extract()
        .map_err(|_| PyTypeError::new_err("memory: bytes (an int) or a string such as '16G'"))?;
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let factor: u64 = match unit.trim().to_ascii_uppercase().trim_end_matches('B') {
        "" => 1,
        "K" | "KI" => 1 << 10,
        "M" | "MI" => 1 << 20,
        "G" | "GI" => 1 << 30,
        "T" | "TI" => 1 << 40,
        _ => return Err(ConfigError::new_err(format!("memory {s:?}: unknown unit"))),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| ConfigError::new_err(format!("memory {s:?} is not a size")))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(ConfigError::new_err(format!(
            "memory {s:?} must be positive"
        )));
    }
    Ok((n * factor as f64).ceil() as u64)
}

/// A launcher of worker processes: `Local()`, `Slurm(...)`, `Lsf(...)`, `Pbs(...)`,
/// `Sge(...)` or `CommandTemplate(...)`.
#[pyclass(module = "blockwise", name = "Launcher", subclass, frozen)]
pub struct PyLauncher {
    pub inner: Arc<dyn Launcher>,
}

#[pymethods]
impl PyLauncher {
    /// The launcher's name (`local`, `slurm`, ...).
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// Workers on this machine; `wrapper` prefixes each worker's command (e.g. `["srun"]`).
#[pyfunction]
#[pyo3(name = "Local", signature = (wrapper = None))]
fn local(wrapper: Option<Vec<String>>) -> PyLauncher {
    let l = match wrapper {
        Some(w) if !w.is_empty() => Local::wrapped(w),
        _ => Local::new(),
    };
    PyLauncher { inner: Arc::new(l) }
}

#[allow(clippy::too_many_arguments)]
fn batch(
    mut b: Batch,
    cores: Option<u32>,
    memory_: Option<&Bound<'_, PyAny>>,
    walltime: Option<&Bound<'_, PyAny>>,
    queue: Option<String>,
    account: Option<String>,
    parallel_environment: Option<String>,
    extra_directives: Vec<String>,
    prologue: Vec<String>,
    submit_args: Vec<String>,
    bin_dir: Option<PathBuf>,
) -> PyResult<PyLauncher> {
    let mut r = Resources::default();
    r.cores = cores;
    r.memory = memory_.map(memory).transpose()?;
    r.walltime = walltime.map(|w| duration(w, "walltime")).transpose()?;
    r.queue = queue;
    r.account = account;
    r.parallel_environment = parallel_environment;
    r.extra_directives = extra_directives;
    r.prologue = prologue;
    b = b.resources(r);
    if !submit_args.is_empty() {
        b = b.submit_args(submit_args);
    }
    if let Some(d) = bin_dir {
        b = b.bin_dir(d);
    }
    Ok(PyLauncher { inner: Arc::new(b) })
}

macro_rules! batch_launcher {
    ($fn:ident, $name:literal, $ctor:expr, $doc:literal) => {
        #[doc = $doc]
        #[pyfunction]
        #[pyo3(name = $name, signature = (
            *, cores = None, memory = None, walltime = None, queue = None, account = None,
            parallel_environment = None, extra_directives = Vec::new(), prologue = Vec::new(),
            submit_args = Vec::new(), bin_dir = None
        ))]
        #[allow(clippy::too_many_arguments)]
        fn $fn(
            cores: Option<u32>,
            memory: Option<&Bound<'_, PyAny>>,
            walltime: Option<&Bound<'_, PyAny>>,
            queue: Option<String>,
            account: Option<String>,
            parallel_environment: Option<String>,
            extra_directives: Vec<String>,
            prologue: Vec<String>,
            submit_args: Vec<String>,
            bin_dir: Option<PathBuf>,
        ) -> PyResult<PyLauncher> {
            batch(
                $ctor,
                cores,
                memory,
                walltime,
                queue,
                account,
                parallel_environment,
                extra_directives,
                prologue,
                submit_args,
                bin_dir,
            )
        }
    };
}

batch_launcher!(
    slurm,
    "Slurm",
    Batch::slurm(),
    "Workers as SLURM jobs (sbatch)."
);
batch_launcher!(lsf, "Lsf", Batch::lsf(), "Workers as LSF jobs (bsub).");
batch_launcher!(pbs, "Pbs", Batch::pbs(), "Workers as PBS jobs (qsub).");
batch_launcher!(sge, "Sge", Batch::sge(), "Workers as SGE jobs (qsub).");

/// Workers started by a command template (see the Rust crate's `CommandTemplate`).
#[pyfunction]
#[pyo3(name = "CommandTemplate", signature = (
    name, submit, *, cancel = None, status = None, job_id_regex = None, prologue = Vec::new()
))]
fn command_template(
    name: String,
    submit: String,
    cancel: Option<String>,
    status: Option<String>,
    job_id_regex: Option<String>,
    prologue: Vec<String>,
) -> PyResult<PyLauncher> {
    let e = |e: blockwise::launch::LaunchError| ConfigError::new_err(e.to_string());
    let mut t = CommandTemplate::new(name, submit).map_err(e)?;
    if let Some(c) = cancel {
        t = t.cancel_command(c).map_err(e)?;
    }
    if let Some(s) = status {
        t = t.status_command(s).map_err(e)?;
    }
    if let Some(r) = job_id_regex {
        t = t.job_id_regex(&r).map_err(e)?;
    }
    if !prologue.is_empty() {
        t = t.prologue(prologue);
    }
    Ok(PyLauncher { inner: Arc::new(t) })
}

/// A task's counters (daisy's `TaskState`).
#[pyclass(module = "blockwise", name = "TaskState", frozen, from_py_object)]
#[derive(Clone)]
pub struct PyTaskState {
    pub inner: TaskState,
}

#[pymethods]
impl PyTaskState {
    #[getter]
    fn started(&self) -> bool {
        self.inner.started
    }
    #[getter]
    fn total(&self) -> u64 {
        self.inner.total
    }
    #[getter]
    fn ready(&self) -> u64 {
        self.inner.ready
    }
    #[getter]
    fn pending(&self) -> u64 {
        self.inner.pending
    }
    #[getter]
    fn processing(&self) -> u64 {
        self.inner.processing
    }
    /// Blocks finished successfully, skipped ones included.
    #[getter]
    fn completed(&self) -> u64 {
        self.inner.completed
    }
    /// Blocks skipped without running (done before, by the check function or the run
    /// directory, or masked out), masked ones included.
    #[getter]
    fn skipped(&self) -> u64 {
        self.inner.skipped
    }
    /// Of the skipped blocks, those the task's mask left out (never recorded as done: a rerun
    /// reports them again).
    #[getter]
    fn masked(&self) -> u64 {
        self.inner.masked
    }
    #[getter]
    fn failed(&self) -> u64 {
        self.inner.failed
    }
    #[getter]
    fn orphaned(&self) -> u64 {
        self.inner.orphaned
    }
    /// Why the task was abandoned (its failure budget ran out, or an upstream task's did), or
    /// None.
    #[getter]
    fn abandoned(&self) -> Option<String> {
        self.inner.abandoned.clone()
    }
    /// Whether every block reached a final state.
    fn is_done(&self) -> bool {
        self.inner.is_done()
    }
    fn __str__(&self) -> String {
        self.inner.to_string()
    }
    fn __repr__(&self) -> String {
        format!(
            "TaskState(total={}, completed={}, skipped={}, masked={}, failed={}, orphaned={})",
            self.inner.total,
            self.inner.completed,
            self.inner.skipped,
            self.inner.masked,
            self.inner.failed,
            self.inner.orphaned
        )
    }
}

/// A block that failed: its ids, the worker, the error text (with the Python traceback), the
/// kind and the attempt.
#[pyclass(module = "blockwise", name = "BlockFailure", frozen)]
pub struct PyBlockFailure {
    #[pyo3(get)]
    block_id: u64,
    #[pyo3(get)]
    grid_index: u64,
    #[pyo3(get)]
    worker_id: u64,
    #[pyo3(get)]
    message: String,
    /// 'error', 'panic', 'timeout', 'lost_worker' or 'output_too_large'.
    #[pyo3(get)]
    kind: &'static str,
    #[pyo3(get)]
    attempt: u32,
}

fn kind_name(k: FailureKind) -> &'static str {
    match k {
        FailureKind::Error => "error",
        FailureKind::Panic => "panic",
        FailureKind::Timeout => "timeout",
        FailureKind::LostWorker => "lost_worker",
        FailureKind::OutputTooLarge => "output_too_large",
        _ => "other",
    }
}

impl From<&BlockFailure> for PyBlockFailure {
    fn from(f: &BlockFailure) -> Self {
        PyBlockFailure {
            block_id: f.block_id,
            grid_index: f.grid_index,
            worker_id: f.worker_id,
            message: f.message.clone(),
            kind: kind_name(f.kind),
            attempt: f.attempt,
        }
    }
}

#[pymethods]
impl PyBlockFailure {
    fn __repr__(&self) -> String {
        format!(
            "BlockFailure(block_id={}, kind={:?}, attempt={}, message={:?})",
            self.block_id, self.kind, self.attempt, self.message
        )
    }
}

/// What a run did: per task counters, failures and outputs; `str()` is the execution summary.
#[pyclass(module = "blockwise", name = "RunSummary", frozen)]
pub struct PyRunSummary {
    pub inner: RunSummary,
}

#[pymethods]
impl PyRunSummary {
    /// True when every block of every task completed (or was skipped).
    fn is_success(&self) -> bool {
        self.inner.is_success()
    }

    fn __bool__(&self) -> bool {
        self.inner.is_success()
    }

    /// The ids of the run's tasks, in order.
    #[getter]
    fn task_ids(&self) -> Vec<String> {
        self.inner
            .tasks()
            .iter()
            .map(|t| t.task_id.clone())
            .collect()
    }

    /// `{task_id: TaskState}` for every task of the run, in the run's order.
    #[getter]
    fn tasks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        for t in self.inner.tasks() {
            d.set_item(
                &t.task_id,
                PyTaskState {
                    inner: t.state.clone(),
                },
            )?;
        }
        Ok(d)
    }

    /// The counters of one task.
    fn task(&self, task_id: &str) -> PyResult<PyTaskState> {
        self.inner
            .task(task_id)
            .map(|s| PyTaskState { inner: s.clone() })
            .ok_or_else(|| PyKeyError::new_err(format!("no task {task_id:?} in this run")))
    }

    /// The failed blocks of a task (the first ones; see the run directory for all).
    fn failures(&self, task_id: &str) -> Vec<PyBlockFailure> {
        self.inner
            .failures(task_id)
            .iter()
            .map(PyBlockFailure::from)
            .collect()
    }

    /// The outputs of a task with `outputs=True`: a list of `(block_id, value)`, one per done
    /// block, in the order they were recorded.
    fn outputs<'py>(&self, py: Python<'py>, task_id: &str) -> PyResult<Bound<'py, PyList>> {
        let json = py.import("json")?;
        let loads = json.getattr("loads")?;
        let out = PyList::empty(py);
        let records = self
            .inner
            .outputs::<serde_json::Value>(task_id)
            .map_err(to_py)?;
        for r in records {
            let r = r.map_err(to_py)?;
            let text = serde_json::to_string(&r.value)
                .map_err(|e| BlockwiseError::new_err(e.to_string()))?;
            out.append((r.block_id, loads.call1((text,))?))?;
        }
        Ok(out)
    }

    /// `{task_id: reason}` for every abandoned task.
    #[getter]
    fn abandoned(&self) -> std::collections::BTreeMap<String, String> {
        self.inner
            .abandoned()
            .map(|(t, r)| (t.to_owned(), r.to_owned()))
            .collect()
    }

    /// Seconds the run took.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.inner.elapsed().as_secs_f64()
    }

    /// Blocks completed across tasks (skipped ones included).
    #[getter]
    fn completed(&self) -> u64 {
        self.inner.completed()
    }

    /// Blocks skipped across tasks.
    #[getter]
    fn skipped(&self) -> u64 {
        self.inner.skipped()
    }

    /// Blocks masked out across tasks (included in `skipped`).
    #[getter]
    fn masked(&self) -> u64 {
        self.inner.tasks().iter().map(|t| t.state.masked).sum()
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "RunSummary(success={}, tasks={:?}, elapsed={:.3}s)",
            self.inner.is_success(),
            self.task_ids(),
            self.inner.elapsed().as_secs_f64()
        )
    }
}

/// Runs the tasks; the Python wrapper `blockwise.run_blockwise` documents the arguments.
#[pyfunction]
#[pyo3(signature = (
    tasks, *, processes = false, launcher = None, worker_command = None, run_dir = None,
    fresh = false, progress = None, print_summary = None, log_dir = None, worker_lifetime = None,
    max_worker_restarts = None, max_output_bytes = None, prefetch = None, on_progress = None,
    resources = None, devices = None, idle_timeout = None
))]
#[allow(clippy::too_many_arguments)]
pub fn _run(
    py: Python<'_>,
    tasks: &Bound<'_, PyAny>,
    processes: bool,
    launcher: Option<PyRef<'_, PyLauncher>>,
    worker_command: Option<(PathBuf, Vec<String>)>,
    run_dir: Option<PathBuf>,
    fresh: bool,
    progress: Option<bool>,
    print_summary: Option<bool>,
    log_dir: Option<PathBuf>,
    worker_lifetime: Option<&Bound<'_, PyAny>>,
    max_worker_restarts: Option<u32>,
    max_output_bytes: Option<usize>,
    prefetch: Option<usize>,
    on_progress: Option<Py<PyAny>>,
    resources: Option<&Bound<'_, PyAny>>,
    devices: Option<&Bound<'_, PyAny>>,
    idle_timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyRunSummary> {
    let tasks = tasks_of(tasks)?;
    let cancel = Cancel::new();
    let mut runner = Runner::new()
        .progress(match progress {
            None => Progress::Auto,
            Some(true) => Progress::Always,
            Some(false) => Progress::Never,
        })
        .cancel_with(&cancel)
        .fresh(fresh);
    if let Some(p) = print_summary {
        runner = runner.print_summary(p);
    }
    if let Some(d) = run_dir {
        runner = runner.run_dir(d);
    }
    if let Some(n) = max_worker_restarts {
        runner = runner.max_worker_restarts(n);
    }
    if let Some(n) = max_output_bytes {
        runner = runner.max_output_bytes(n);
    }
    if let Some(n) = prefetch {
        runner = runner.prefetch(n);
    }
    if let Some(r) = resources.filter(|r| !r.is_none()) {
        runner = runner.resources(units_of(r, "resources")?);
    }
    for (resource, ids) in device_ids_of(devices)? {
        runner = runner.devices(resource, ids);
    }
    if let Some(f) = on_progress {
        runner = runner.on_progress(Duration::from_millis(100), move |tasks| {
            Python::attach(|py| {
                let d = pyo3::types::PyDict::new(py);
                for (id, state) in tasks {
                    let s = PyTaskState {
                        inner: (*state).clone(),
                    };
                    if d.set_item(*id, s).is_err() {
                        return;
                    }
                }
                if let Err(e) = f.call1(py, (d,)) {
                    // An observer's exception must not stop the run: it is shown, not raised.
                    e.display(py);
                }
            });
        });
    }
    if processes || launcher.is_some() {
        let mut workers = match launcher {
            Some(l) => WorkerOptions::launcher(Arc::clone(&l.inner)),
            None => WorkerOptions::new(),
        }
        .handle_signals(false);
        if let Some((program, args)) = worker_command {
            workers = workers.worker_command(program, args);
        }
        if let Some(d) = log_dir {
            workers = workers.log_dir(d);
        }
        if let Some(l) = worker_lifetime {
            workers = workers.worker_lifetime(duration(l, "worker_lifetime")?);
        }
        if let Some(t) = idle_timeout.filter(|t| !t.is_none()) {
            workers = workers.idle_timeout(idle(t)?);
        }
        runner = runner.workers(workers);
    }
    let summary = run_interruptibly(py, &cancel, move || runner.run(tasks))?;
    Ok(PyRunSummary { inner: summary })
}

/// Runs `f` on its own thread with the GIL released, so that other Python threads go on and
/// Ctrl-C reaches the main thread: the first cancels `f`'s run (it returns once its jobs are
/// cancelled), then `KeyboardInterrupt` is raised; a second one raises at once.
pub fn run_interruptibly<T: Send + 'static>(
    py: Python<'_>,
    cancel: &Cancel,
    f: impl FnOnce() -> Result<T, blockwise::Error> + Send + 'static,
) -> PyResult<T> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("blockwise-run".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| BlockwiseError::new_err(format!("starting the run's thread: {e}")))?;
    let mut interrupt: Option<PyErr> = None;
    loop {
        match py.detach(|| rx.recv_timeout(Duration::from_millis(50))) {
            Ok(result) => {
                if let Some(e) = interrupt {
                    return Err(e);
                }
                return result.map_err(to_py);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    if interrupt.is_some() {
                        return Err(e); // a second Ctrl-C: give up waiting
                    }
                    cancel.cancel("KeyboardInterrupt");
                    interrupt = Some(e);
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(BlockwiseError::new_err(
                    "the run's thread ended without a result",
                ));
            }
        }
    }
}

/// In a worker process started by a process runner: serves the context's task among `tasks`
/// and returns the number of blocks processed; None outside worker processes.
#[pyfunction]
pub fn serve_worker(py: Python<'_>, tasks: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    let tasks = tasks_of(tasks)?;
    py.detach(|| blockwise::serve_worker(&tasks)).map_err(to_py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLauncher>()?;
    m.add_class::<PyTaskState>()?;
    m.add_class::<PyBlockFailure>()?;
    m.add_class::<PyRunSummary>()?;
    m.add_function(wrap_pyfunction!(local, m)?)?;
    m.add_function(wrap_pyfunction!(slurm, m)?)?;
    m.add_function(wrap_pyfunction!(lsf, m)?)?;
    m.add_function(wrap_pyfunction!(pbs, m)?)?;
    m.add_function(wrap_pyfunction!(sge, m)?)?;
    m.add_function(wrap_pyfunction!(command_template, m)?)?;
    m.add_function(wrap_pyfunction!(_run, m)?)?;
    m.add_function(wrap_pyfunction!(serve_worker, m)?)?;
    Ok(())
}
