//! Ready-made operations: connected components (`blockwise.ops.connected_components`) and
//! resolution pyramids (`blockwise.ops.pyramid`), over the Rust crate's
//! `blockwise::ops::ConnectedComponents` and `blockwise::ops::Pyramid`.

use std::path::PathBuf;
use std::sync::Arc;

use blockwise::ops::{ComponentsReport, ConnectedComponents, Connectivity, Downsample, Pyramid};
use blockwise::store::ZarrArray;
use blockwise::{Cancel, Coordinate, Progress, Runner, WorkerOptions};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde_json::{Value, json};

use crate::errors::{ConfigError, store_err, to_py};
use crate::geometry::coord;
use crate::run::{PyRunSummary, run_interruptibly};
use crate::store::zarr_of;

/// What a worker process rebuilds the operation from (JSON on its command line).
struct Spec {
    input: (PathBuf, String),
    output: (PathBuf, String),
    threshold: Option<f64>,
    connectivity: Connectivity,
    block_shape: Option<Coordinate>,
    num_workers: usize,
    name: String,
    work_dir: Option<PathBuf>,
}

impl Spec {
    fn to_json(&self) -> Value {
        json!({
            "input": [self.input.0, self.input.1],
            "output": [self.output.0, self.output.1],
            "threshold": self.threshold,
            "connectivity": self.connectivity,
            "block_shape": self.block_shape.as_ref().map(|c| c.as_slice().to_vec()),
            "num_workers": self.num_workers,
            "name": self.name,
            "work_dir": self.work_dir,
        })
    }

    fn from_json(text: &str) -> Result<Spec, String> {
        #[derive(serde::Deserialize)]
        struct Raw {
            input: (PathBuf, String),
            output: (PathBuf, String),
            threshold: Option<f64>,
            connectivity: Connectivity,
            block_shape: Option<Vec<i64>>,
            num_workers: usize,
            name: String,
            work_dir: Option<PathBuf>,
        }
        let r: Raw = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Ok(Spec {
            input: r.input,
            output: r.output,
            threshold: r.threshold,
            connectivity: r.connectivity,
            block_shape: r.block_shape.map(Coordinate::new),
            num_workers: r.num_workers,
            name: r.name,
            work_dir: r.work_dir,
        })
    }

    fn build(&self, input: &ZarrArray, output: &ZarrArray) -> ConnectedComponents {
        let mut cc = ConnectedComponents::new(input, output)
            .connectivity(self.connectivity)
            .num_workers(self.num_workers)
            .name(self.name.clone());
        if let Some(t) = self.threshold {
            cc = cc.threshold(t);
        }
        if let Some(b) = &self.block_shape {
            cc = cc.block_shape(b.clone());
        }
        if let Some(w) = &self.work_dir {
            cc = cc.work_dir(w.clone());
        }
        cc
    }
}

/// A connectivity: `"faces"`, `"edges"`, `"vertices"`, or scipy's rank 1, 2, 3.
fn connectivity(obj: &Bound<'_, PyAny>) -> PyResult<Connectivity> {
    if let Ok(n) = obj.extract::<i64>() {
        return match n {
            1 => Ok(Connectivity::Faces),
            2 => Ok(Connectivity::Edges),
            3 => Ok(Connectivity::Vertices),
            _ => Err(ConfigError::new_err(format!(
                "connectivity {n}: use 1 (faces), 2 (edges) or 3 (vertices)"
            ))),
        };
    }
    let s: String = obj.extract().map_err(|_| {
        ConfigError::new_err("connectivity: 'faces', 'edges', 'vertices' or 1, 2, 3")
    })?;
    s.parse().map_err(ConfigError::new_err)
}

/// What `connected_components` did: the two runs' summaries and the merge's counts.
#[pyclass(module = "blockwise.ops", name = "ComponentsResult", frozen)]
pub struct PyComponentsResult {
    report: ComponentsReport,
}

#[pymethods]
impl PyComponentsResult {
    /// Whether both runs completed every block.
    fn is_success(&self) -> bool {
        self.report.is_success()
    }

    fn __bool__(&self) -> bool {
        self.report.is_success()
    }

    /// The summary of the first run (`<name>-label` and `<name>-pairs`).
    #[getter]
    fn label(&self) -> PyRunSummary {
        PyRunSummary {
            inner: self.report.label.clone(),
        }
    }

    /// The summary of the relabel run (None if the first run failed).
    #[getter]
    fn relabel(&self) -> Option<PyRunSummary> {
        self.report
            .relabel
            .clone()
            .map(|inner| PyRunSummary { inner })
    }

    /// The number of cross-block label pairs found.
    #[getter]
    fn pairs(&self) -> u64 {
        self.report.pairs
    }

    /// The number of block labels merged into a smaller one.
    #[getter]
    fn merged(&self) -> u64 {
        self.report.merged
    }

    fn __repr__(&self) -> String {
        format!(
            "ComponentsResult(success={}, pairs={}, merged={})",
            self.report.is_success(),
            self.report.pairs,
            self.report.merged
        )
    }
}

/// Runs connected components; `blockwise.ops.connected_components` documents the arguments.
#[pyfunction]
#[pyo3(signature = (
    input, output, *, threshold = None, connectivity = None, block_shape = None,
    num_workers = 1, name = "cc".to_owned(), work_dir = None, run_dir = None, fresh = false,
    progress = None, worker_python = None, log_dir = None
))]
#[allow(clippy::too_many_arguments)]
fn _connected_components(
    py: Python<'_>,
    input: &Bound<'_, PyAny>,
    output: &Bound<'_, PyAny>,
    threshold: Option<f64>,
    connectivity: Option<&Bound<'_, PyAny>>,
    block_shape: Option<&Bound<'_, PyAny>>,
    num_workers: i64,
    name: String,
    work_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    fresh: bool,
    progress: Option<bool>,
    worker_python: Option<PathBuf>,
    log_dir: Option<PathBuf>,
) -> PyResult<PyComponentsResult> {
    let (inp, in_store, in_ds) = zarr_of(input, "input")?;
    let (out, out_store, out_ds) = zarr_of(output, "output")?;
    let num_workers = usize::try_from(num_workers)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| {
            ConfigError::new_err(format!("num_workers must be at least 1, got {num_workers}"))
        })?;
    let spec = Spec {
        input: (in_store, in_ds),
        output: (out_store, out_ds),
        threshold,
        connectivity: connectivity
            .map(self::connectivity)
            .transpose()?
            .unwrap_or_default(),
        block_shape: block_shape
            .filter(|b| !b.is_none())
            .map(|b| coord(b, "block_shape"))
            .transpose()?,
        num_workers,
        name,
        work_dir,
    };
    let cc = spec.build(&inp, &out);
    let cancel = Cancel::new();
    let mut runner = Runner::new()
        .progress(progress_of(progress))
        .cancel_with(&cancel)
        .fresh(fresh);
    if let Some(d) = run_dir {
        runner = runner.run_dir(d);
    }
    if let Some(python) = worker_python {
        let args = vec![
            "-m".to_owned(),
            "blockwise._ops_worker".to_owned(),
            spec.to_json().to_string(),
        ];
        let mut workers = WorkerOptions::new()
            .handle_signals(false)
            .worker_command(python, args);
        if let Some(d) = log_dir {
            workers = workers.log_dir(d);
        }
        runner = runner.workers(workers);
    }
    let cc = Arc::new(cc);
    let report = run_interruptibly(py, &cancel, move || cc.run(&runner))?;
    Ok(PyComponentsResult { report })
}

/// A progress setting: None is "auto".
fn progress_of(progress: Option<bool>) -> Progress {
    match progress {
        None => Progress::Auto,
        Some(true) => Progress::Always,
        Some(false) => Progress::Never,
    }
}

/// Builds and runs a pyramid on worker threads; `blockwise.ops.pyramid` documents the
/// arguments.
#[pyfunction]
#[pyo3(signature = (
    source, output, *, levels = None, factor = None, method = "mean".to_owned(),
    block_shape = None, num_workers = 1, name = "pyramid".to_owned(), run_dir = None,
    fresh = false, progress = None
))]
#[allow(clippy::too_many_arguments)]
fn _pyramid(
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    output: PathBuf,
    levels: Option<i64>,
    factor: Option<Vec<i64>>,
    method: String,
    block_shape: Option<Vec<i64>>,
    num_workers: i64,
    name: String,
    run_dir: Option<PathBuf>,
    fresh: bool,
    progress: Option<bool>,
) -> PyResult<PyRunSummary> {
    let (source, _, _) = zarr_of(source, "source")?;
    let positive = |what: &str, v: &[i64]| -> PyResult<Vec<u64>> {
        v.iter()
            .map(|&x| u64::try_from(x).ok().filter(|&x| x >= 1))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| {
                ConfigError::new_err(format!("{what} {v:?}: every value must be at least 1"))
            })
    };
    let method: Downsample = method.parse().map_err(ConfigError::new_err)?;
    let num_workers = usize::try_from(num_workers)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| {
            ConfigError::new_err(format!("num_workers must be at least 1, got {num_workers}"))
        })?;
    let mut pyramid = Pyramid::builder(&source, output)
        .method(method)
        .num_workers(num_workers)
        .name(name);
    pyramid = match levels {
        None => pyramid.until_one_chunk(),
        Some(n) => pyramid
            .levels(usize::try_from(n).map_err(|_| {
                ConfigError::new_err(format!("levels must be at least 1, got {n}"))
            })?),
    };
    if let Some(f) = factor {
        pyramid = pyramid.factor(positive("factor", &f)?);
    }
    if let Some(b) = block_shape {
        pyramid = pyramid.block_shape(positive("block_shape", &b)?);
    }
    let cancel = Cancel::new();
    let mut runner = Runner::new()
        .progress(progress_of(progress))
        .cancel_with(&cancel)
        .fresh(fresh);
    if let Some(d) = run_dir {
        runner = runner.run_dir(d);
    }
    let pyramid = Arc::new(pyramid);
    let inner = run_interruptibly(py, &cancel, move || pyramid.run(&runner))?;
    Ok(PyRunSummary { inner })
}

/// In a worker process of `connected_components(runner="processes")`: rebuilds the operation's
/// tasks from `spec` and serves this worker's task; returns the blocks processed.
#[pyfunction]
fn _cc_serve_worker(py: Python<'_>, spec: &str) -> PyResult<Option<u64>> {
    let spec = Spec::from_json(spec)
        .map_err(|e| PyValueError::new_err(format!("connected components worker spec: {e}")))?;
    py.detach(|| {
        let input = ZarrArray::open(&spec.input.0, &spec.input.1).map_err(store_err)?;
        let output = ZarrArray::open(&spec.output.0, &spec.output.1).map_err(store_err)?;
        let tasks = spec.build(&input, &output).tasks().map_err(to_py)?;
        blockwise::serve_worker(&tasks).map_err(to_py)
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyComponentsResult>()?;
    m.add_function(wrap_pyfunction!(_connected_components, m)?)?;
    m.add_function(wrap_pyfunction!(_cc_serve_worker, m)?)?;
    m.add_function(wrap_pyfunction!(_pyramid, m)?)?;
    Ok(())
}
