//! The executor (`blockwise.exec`): `blockwise::exec::Executor` on threads or worker processes.
//!
//! On threads, items and results are Python objects handed over as they are. On processes,
//! the Python layer (`blockwise/exec.py`) pickles the function once (scattered to every
//! worker) and each item and result (base64 text), and the Rust executor carries them as JSON
//! strings to workers running `python -m blockwise._exec_worker`, which serve them with
//! [`ExecutorBuilder::serve`](blockwise::exec::ExecutorBuilder::serve).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use blockwise::exec::{Executor, Function, ItemError, MapOptions};
use blockwise::{Cancel, WorkerOptions};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyIterator;

use crate::errors::{BlockwiseError, format_exception, to_py};
use crate::run::PyLauncher;
use crate::task::{device_ids_of, duration, idle, units_of};

/// The name of the one function a Python executor's workers serve.
const PY_FN: &str = "python";

/// An item on processes: (the scattered function's name, the pickled item as base64).
type RemoteItem = (String, String);

/// The function items of a process executor run: `blockwise._exec_worker._handle(key, item)`
/// in this process (a worker, or the driver when the executor fell back to threads).
fn remote_function() -> Function<RemoteItem, String> {
    Function::new(PY_FN, |(key, item): RemoteItem| {
        Python::attach(|py| {
            let call = || -> PyResult<String> {
                py.import("blockwise._exec_worker")?
                    .getattr("_handle")?
                    .call1((key, item))?
                    .extract()
            };
            call().map_err(|e| format_exception(py, &e))
        })
    })
}

/// The executor behind `blockwise.exec.Executor`.
#[pyclass(module = "blockwise._native", name = "_Executor", frozen)]
pub struct PyExecutor {
    inner: Mutex<Option<Executor>>,
    cancel: Cancel,
    processes: bool,
    /// The maps started, for `shutdown` to stop and wait for.
    maps: Mutex<Vec<MapHandle>>,
}

/// What `shutdown` needs of a map: its results' channel, and its driving thread (which holds
/// a clone of the executor until it ends).
struct MapHandle {
    shared: Arc<MapShared>,
    thread: std::thread::JoinHandle<()>,
}

/// A map's state shared by its Python iterator and the executor.
struct MapShared {
    rx: Mutex<Option<Receiver<Msg>>>,
    /// Set by `shutdown`: the map was stopped before it ended.
    shut: std::sync::atomic::AtomicBool,
}

impl PyExecutor {
    fn executor(&self) -> PyResult<Executor> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("the executor was shut down"))
    }
}

impl Drop for PyExecutor {
    /// Stops the backend off the GIL: threads may be running Python items that need it.
    fn drop(&mut self) {
        let ex = self
            .inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if ex.is_some() {
            let _ = std::thread::Builder::new()
                .name("blockwise-executor-drop".into())
                .spawn(move || drop(ex));
        }
    }
}

/// A result or an item's failure, sent from a map's driving thread.
enum Msg {
    Ok(usize, Value),
    Failed {
        index: usize,
        message: String,
        cause: Option<Py<PyAny>>,
        /// The limit in seconds, when the item ran past its time limit.
        timed_out: Option<f64>,
    },
    /// Iterating over the input raised.
    Input(PyErr),
}

enum Value {
    Obj(Py<PyAny>),
    Text(String),
}

/// The input, pulled (with the GIL) as the map submits items; its exception ends it and is
/// kept for the consumer.
struct Source {
    it: Py<PyIterator>,
    next: usize,
    err: Arc<Mutex<Option<PyErr>>>,
}

impl Source {
    fn pull(&mut self) -> Option<(usize, Py<PyAny>)> {
        Python::attach(|py| {
            let mut it = self.it.bind(py).clone();
            match it.next()? {
                Ok(v) => {
                    let i = self.next;
                    self.next += 1;
                    Some((i, v.unbind()))
                }
                Err(e) => {
                    *self.err.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                    None
                }
            }
        })
    }
}

/// Exceptions raised by items on threads, by input index, for `raise ... from`.
type Causes = Arc<Mutex<HashMap<usize, Py<PyAny>>>>;

#[pymethods]
impl PyExecutor {
    /// `n` worker threads.
    #[staticmethod]
    fn threads(n: usize) -> PyExecutor {
        PyExecutor {
            inner: Mutex::new(Some(Executor::threads(n))),
            cancel: Cancel::new(),
            processes: false,
            maps: Mutex::default(),
        }
    }

    /// `n` worker processes running `worker_command` (program, args).
    #[staticmethod]
    #[pyo3(signature = (
        n, name, worker_command, *, launcher = None, log_dir = None, max_worker_restarts = None,
        idle_timeout = None, requires = None, resources = None, devices = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn processes(
        py: Python<'_>,
        n: usize,
        name: String,
        worker_command: (PathBuf, Vec<String>),
        launcher: Option<PyRef<'_, PyLauncher>>,
        log_dir: Option<PathBuf>,
        max_worker_restarts: Option<u32>,
        idle_timeout: Option<&Bound<'_, PyAny>>,
        requires: Option<&Bound<'_, PyAny>>,
        resources: Option<&Bound<'_, PyAny>>,
        devices: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyExecutor> {
        let cancel = Cancel::new();
        let mut workers = match launcher {
            Some(l) => WorkerOptions::launcher(Arc::clone(&l.inner)),
            None => WorkerOptions::new(),
        }
        .worker_command(worker_command.0, worker_command.1)
        .handle_signals(false);
        if let Some(d) = log_dir {
            workers = workers.log_dir(d);
        }
        if let Some(t) = idle_timeout.filter(|t| !t.is_none()) {
            workers = workers.idle_timeout(idle(t)?);
        }
        let mut b = Executor::processes(n)
            .workers(workers)
            .name(name)
            .function(&remote_function())
            .cancel_with(&cancel);
        if let Some(m) = max_worker_restarts {
            b = b.max_worker_restarts(m);
        }
        if let Some(r) = requires.filter(|r| !r.is_none()) {
            b = b.requires(units_of(r, "requires")?);
        }
        if let Some(r) = resources.filter(|r| !r.is_none()) {
            b = b.resources(units_of(r, "resources")?);
        }
        for (resource, ids) in device_ids_of(devices)? {
            b = b.devices(resource, ids);
        }
        let ex = py.detach(|| b.start()).map_err(to_py)?;
        Ok(PyExecutor {
            inner: Mutex::new(Some(ex)),
            cancel,
            processes: true,
            maps: Mutex::default(),
        })
    }

    /// How many items run at once (threads or worker processes).
    #[getter]
    fn slots(&self) -> PyResult<usize> {
        Ok(self.executor()?.slots())
    }

    /// Whether items go to worker processes (and must be pickled text).
    #[getter]
    fn is_processes(&self) -> bool {
        self.processes
    }

    /// Shares `data` under `name` with every worker (once each).
    fn _scatter(&self, name: &str, data: String) -> PyResult<()> {
        self.executor()?.scatter(name, data).map_err(to_py)?;
        Ok(())
    }

    /// Maps over `items`: in input order and failing fast (`ordered`), or as completed and
    /// running every item, with at most `window` in flight, each item for at most `timeout`
    /// (None: no limit). On threads `f` is the function; on processes the name its pickle was
    /// scattered under, and items are pickled text.
    #[pyo3(signature = (f, items, window, ordered, timeout = None))]
    fn _map(
        &self,
        f: Py<PyAny>,
        items: &Bound<'_, PyAny>,
        window: Option<usize>,
        ordered: bool,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyMapIter> {
        let mut ex = self.executor()?;
        if let Some(t) = timeout.filter(|t| !t.is_none()) {
            ex = ex.with_timeout(duration(t, "timeout")?);
        }
        let size = window.unwrap_or_else(|| ex.slots()).max(1);
        // In order, fail fast; holding at most `size` finished results behind a slow one.
        let opts = MapOptions::new(size).reorder_limit(size);
        let err = Arc::new(Mutex::new(None));
        let mut source = Source {
            it: items.try_iter()?.unbind(),
            next: 0,
            err: Arc::clone(&err),
        };
        let (tx, rx) = crossbeam_channel::bounded::<Msg>(0);
        let processes = self.processes;
        let key: Option<String> = if processes {
            Some(f.extract(items.py())?)
        } else {
            None
        };
        let spawned = std::thread::Builder::new()
            .name("blockwise-py-map".into())
            .spawn(move || {
                if let Some(key) = key {
                    let items = std::iter::from_fn(move || {
                        let (_, v) = source.pull()?;
                        // The Python layer sends pickles as text; anything else ends the input.
                        match Python::attach(|py| v.bind(py).extract::<String>()) {
                            Ok(text) => Some((key.clone(), text)),
                            Err(e) => {
                                let mut slot =
                                    source.err.lock().unwrap_or_else(PoisonError::into_inner);
                                *slot = Some(e);
                                None
                            }
                        }
                    });
                    let f = remote_function();
                    let text = |(i, r): (usize, Result<String, ItemError>)| (i, r.map(Value::Text));
                    if ordered {
                        drive(
                            ex.bounded_map(f, items, opts).enumerate().map(text),
                            &tx,
                            &Causes::default(),
                        );
                    } else {
                        drive(ex.as_completed(f, items).map(text), &tx, &Causes::default());
                    }
                } else {
                    let causes: Causes = Arc::default();
                    let c = Arc::clone(&causes);
                    let work = move |(i, item): (usize, Py<PyAny>)| -> Result<Py<PyAny>, String> {
                        Python::attach(|py| match f.bind(py).call1((item,)) {
                            Ok(v) => Ok(v.unbind()),
                            Err(e) => {
                                let text = format_exception(py, &e);
                                c.lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .insert(i, e.into_value(py).into_any());
                                Err(text)
                            }
                        })
                    };
                    let items = std::iter::from_fn(move || source.pull());
                    let obj =
                        |(i, r): (usize, Result<Py<PyAny>, ItemError>)| (i, r.map(Value::Obj));
                    if ordered {
                        drive(
                            ex.bounded_map(work, items, opts).enumerate().map(obj),
                            &tx,
                            &causes,
                        );
                    } else {
                        drive(ex.as_completed(work, items).map(obj), &tx, &causes);
                    }
                }
                let input_err = err.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(e) = input_err {
                    let _ = tx.send(Msg::Input(e));
                }
            });
        let thread = spawned
            .map_err(|e| BlockwiseError::new_err(format!("starting a map's thread: {e}")))?;
        let shared = Arc::new(MapShared {
            rx: Mutex::new(Some(rx)),
            shut: std::sync::atomic::AtomicBool::new(false),
        });
        let mut maps = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        maps.retain(|m| !m.thread.is_finished());
        maps.push(MapHandle {
            shared: Arc::clone(&shared),
            thread,
        });
        Ok(PyMapIter {
            shared,
            cancel: self.processes.then(|| self.cancel.clone()),
        })
    }

    /// Stops the workers: processes are cancelled at once (items waiting or running fail);
    /// threads finish the items already running.
    fn _cancel(&self, reason: &str) {
        self.cancel.cancel(reason);
    }

    /// Stops the maps still going (their running items finish; their iterators then raise),
    /// lets submitted items finish, and stops the threads or the worker processes; returns
    /// when they are stopped (a cancelled process executor's jobs are killed by then).
    fn shutdown(&self, py: Python<'_>) {
        let maps = std::mem::take(&mut *self.maps.lock().unwrap_or_else(PoisonError::into_inner));
        for m in &maps {
            if !m.thread.is_finished() {
                m.shared
                    .shut
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            m.shared
                .rx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        let ex = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Map threads and pool threads may be running Python code, which needs the GIL.
        py.detach(move || {
            for m in maps {
                let _ = m.thread.join();
            }
            drop(ex);
        });
    }
}

/// Runs a map's `(index, result)`s into `tx`, one at a time as they are consumed (the
/// channel is a rendezvous, so at most one result waits).
fn drive(
    results: impl Iterator<Item = (usize, Result<Value, ItemError>)>,
    tx: &Sender<Msg>,
    causes: &Causes,
) {
    for (pos, r) in results {
        let msg = match r {
            Ok(v) => Msg::Ok(pos, v),
            Err(e) => {
                let index = e.index().unwrap_or(pos);
                let (message, timed_out) = match e {
                    ItemError::Failed { message, .. } => (message, None),
                    ItemError::TimedOut { limit, .. } => (
                        format!("timed out after {} s", limit.as_secs_f64()),
                        Some(limit.as_secs_f64()),
                    ),
                    other => (other.to_string(), None),
                };
                let cause = causes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&index);
                Msg::Failed {
                    index,
                    message,
                    cause,
                    timed_out,
                }
            }
        };
        if tx.send(msg).is_err() {
            return; // the consumer is gone: stop (in-flight items finish, nothing more starts)
        }
    }
}

/// The results of one map, pulled by the Python generator.
#[pyclass(module = "blockwise._native", name = "_MapIter", frozen)]
pub struct PyMapIter {
    shared: Arc<MapShared>,
    cancel: Option<Cancel>,
}

impl PyMapIter {
    fn end(&self) -> PyErr {
        if self.shared.shut.load(std::sync::atomic::Ordering::SeqCst) {
            PyRuntimeError::new_err("the executor was shut down before this map ended")
        } else {
            PyStopIteration::new_err(())
        }
    }
}

#[pymethods]
impl PyMapIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// `(index, True, value)` or `(index, False, (message, cause, timed_out))` (`timed_out`:
    /// the time limit in seconds the item ran past, else None); raises the input's
    /// exception, `KeyboardInterrupt` on Ctrl-C (a process executor is then cancelled).
    fn __next__(&self, py: Python<'_>) -> PyResult<(usize, bool, Py<PyAny>)> {
        let Some(rx) = self
            .shared
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return Err(self.end());
        };
        loop {
            match py.detach(|| rx.recv_timeout(Duration::from_millis(50))) {
                Ok(Msg::Ok(i, v)) => {
                    let v = match v {
                        Value::Obj(o) => o,
                        Value::Text(t) => t.into_pyobject(py)?.into_any().unbind(),
                    };
                    return Ok((i, true, v));
                }
                Ok(Msg::Failed {
                    index,
                    message,
                    cause,
                    timed_out,
                }) => {
                    let detail = (message, cause, timed_out)
                        .into_pyobject(py)?
                        .into_any()
                        .unbind();
                    return Ok((index, false, detail));
                }
                Ok(Msg::Input(e)) => {
                    self.close();
                    return Err(e);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.shared.shut.load(std::sync::atomic::Ordering::SeqCst) {
                        return Err(self.end());
                    }
                    if let Err(e) = py.check_signals() {
                        if let Some(c) = &self.cancel {
                            c.cancel("KeyboardInterrupt");
                        }
                        self.close();
                        return Err(e);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.close();
                    return Err(self.end());
                }
            }
        }
    }

    /// Stops the map: no more items start; those in flight finish in the background.
    fn close(&self) {
        self.shared
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// In a worker process of the executor `name`: serves its items (each calls
/// `blockwise._exec_worker._handle`) and returns how many; None in other processes.
#[pyfunction]
pub fn _exec_serve(py: Python<'_>, name: String) -> PyResult<Option<u64>> {
    let b = Executor::processes(1)
        .name(name)
        .function(&remote_function());
    py.detach(|| b.serve()).map_err(to_py)
}

/// The text scattered under `name` to this process (None if nothing was).
#[pyfunction]
pub fn _exec_scattered(name: &str) -> Option<String> {
    blockwise::exec::scattered::<String>(name).map(|s| (*s).clone())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyExecutor>()?;
    m.add_class::<PyMapIter>()?;
    m.add_function(wrap_pyfunction!(_exec_serve, m)?)?;
    m.add_function(wrap_pyfunction!(_exec_scattered, m)?)?;
    Ok(())
}
