//! [`ConnectedComponents`]: connected components of a zarr volume as three blockwise tasks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::ArrayD;
use tracing::info;

use super::files;
use super::label::{Connectivity, check_dims};
use super::{MergeTable, UnionFind, block_pairs, label_block};
use crate::error::{BlockError, Error};
use crate::geometry::{Coordinate, Roi};
use crate::store::{DataType, StoreError, ZarrArray};
use crate::{Block, Fit, RunSummary, Runner, Task, TaskBuilder, WorkerContext};

type Foreground = Arc<dyn Fn(f64) -> bool + Send + Sync>;

/// Connected components of a zarr volume, computed block by block.
///
/// Three tasks, run in two runs with a merge step in between:
///
/// 1. `<name>-label` labels each block's foreground (see [`label_block`]) and writes the
///    block-unique ids to `output`;
/// 2. `<name>-pairs` (upstream: `<name>-label`) reads each block's labels grown by one voxel
///    (see [`Connectivity::pair_context`]) and returns the label pairs that touch across its
///    lower boundaries ([`block_pairs`]) as its block output
///    ([`TaskBuilder::process_with_output`](crate::TaskBuilder::process_with_output));
/// 3. the driver merges all pairs in a [`UnionFind`] and writes the [`MergeTable`] to the work
///    directory ([`resolve`](Self::resolve));
/// 4. `<name>-relabel` maps every block of `output` through the table, in place. Its per-worker
///    set-up loads the table from the work directory, so worker processes need none of the
///    driver's memory.
///
/// Every voxel of a component ends up with the component's smallest block-unique id (ids are
/// not consecutive); background is 0. Relabelling is idempotent (a label maps to its
/// component's smallest label, which maps to itself), so a rerun after a crash in the relabel
/// run is safe; with a [`Runner::run_dir`] a rerun skips what was done, the pairs of finished
/// blocks being kept in the run directory with their done-markers.
///
/// # Work directory
///
/// The merge table lives in the work directory, by default
/// `.<name>.blockwise-cc` inside the output array's directory: it is removed with the output
/// when the output is recreated, and worker processes, which rebuild the tasks with
/// [`tasks`](Self::tasks), find it without being told. [`work_dir`](Self::work_dir) puts it
/// elsewhere (e.g. inside your run directory). Files are written atomically.
///
/// ```
/// use blockwise::ops::{ConnectedComponents, Connectivity};
/// use blockwise::store::{ArraySpec, DataType, ZarrArray};
/// use blockwise::{Progress, Roi, Runner};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let roi = Roi::new([0, 0], [8, 8]);
/// let raw = ZarrArray::create(dir.path(), "raw", &ArraySpec::new(roi.clone(), [1, 1], DataType::U8, vec![4, 4]))?;
/// // A ring crossing all four 4×4 blocks.
/// let mut data = ndarray::ArrayD::zeros(ndarray::IxDyn(&[8, 8]));
/// for i in 1..7 {
///     for (y, x) in [(1, i), (6, i), (i, 1), (i, 6)] {
///         data[[y, x]] = 200u8;
///     }
/// }
/// raw.write(&roi, data.view())?;
/// let labels = ZarrArray::create(dir.path(), "labels", &ArraySpec::new(roi.clone(), [1, 1], DataType::U64, vec![4, 4]))?;
///
/// let report = ConnectedComponents::new(&raw, &labels)
///     .threshold(100.0)
///     .connectivity(Connectivity::Faces)
///     .run(&Runner::new().progress(Progress::Never))?;
/// assert!(report.is_success());
/// let out = labels.read::<u64>(&roi)?;
/// assert_eq!(out[[1, 1]], out[[6, 6]]); // one component
/// assert_eq!(out[[0, 0]], 0);
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until `.run(..)` or `.tasks()`"]
pub struct ConnectedComponents {
    input: Result<Arc<ZarrArray>, String>,
    output: Result<Arc<ZarrArray>, String>,
    foreground: Foreground,
    connectivity: Connectivity,
    block_shape: Option<Coordinate>,
    num_workers: usize,
    name: String,
    work_dir: Option<PathBuf>,
}

impl fmt::Debug for ConnectedComponents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectedComponents")
            .field("name", &self.name)
            .field("connectivity", &self.connectivity)
            .field("block_shape", &self.block_shape)
            .field("num_workers", &self.num_workers)
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

/// What [`ConnectedComponents::run`] did.
#[derive(Debug, Clone, Default)]
pub struct ComponentsReport {
    /// The first run: `<name>-label` and `<name>-pairs`.
    pub label: RunSummary,
    /// The relabel run (`None` if the first run failed, or in a worker process).
    pub relabel: Option<RunSummary>,
    /// The number of cross-block label pairs found (distinct within each block).
    pub pairs: u64,
    /// The number of labels merged into a smaller one (entries of the merge table).
    pub merged: u64,
}

impl ComponentsReport {
    /// Whether both runs completed every block.
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.label.is_success() && self.relabel.as_ref().is_some_and(RunSummary::is_success)
    }
}

/// The three tasks and what they share, validated.
struct Plan {
    label: Task,
    pairs: Task,
    relabel: Task,
    work_dir: PathBuf,
}

/// Opens the array `a` again (the tasks own their arrays).
fn reopen(a: &ZarrArray) -> Result<Arc<ZarrArray>, String> {
    let store = a
        .chunk_grid()
        .path
        .ok_or_else(|| format!("{}: the array has no store path", a.name()))?;
    let prefix = store.display().to_string();
    let dataset = a
        .name()
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("{}: cannot tell the dataset from the name", a.name()))?;
    ZarrArray::open(&store, dataset)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

impl ConnectedComponents {
    /// Connected components of the foreground of `input` (by default: values > 0), written to
    /// `output`: a `u64` array with the same ROI and voxel size. The arrays are opened again by
    /// path, so the tasks own them.
    pub fn new(input: &ZarrArray, output: &ZarrArray) -> ConnectedComponents {
        ConnectedComponents {
            input: reopen(input),
            output: reopen(output),
            foreground: Arc::new(|v| v > 0.0),
            connectivity: Connectivity::default(),
            block_shape: None,
            num_workers: 1,
            name: "cc".into(),
            work_dir: None,
        }
    }

    /// Foreground is `value > t` (values of any data type are compared as `f64`).
    pub fn threshold(mut self, t: f64) -> Self {
        self.foreground = Arc::new(move |v| v > t);
        self
    }

    /// Foreground is where `f(value)` is true (values of any data type are passed as `f64`).
    pub fn foreground(mut self, f: impl Fn(f64) -> bool + Send + Sync + 'static) -> Self {
        self.foreground = Arc::new(f);
        self
    }

    /// Which voxels touch (default [`Connectivity::Faces`]).
    pub fn connectivity(mut self, connectivity: Connectivity) -> Self {
        self.connectivity = connectivity;
        self
    }

    /// The block shape in world units (default: the output's write-chunk shape). It must be a
    /// multiple of the output's chunks (the tasks declare that they write the output).
    pub fn block_shape(mut self, shape: impl Into<Coordinate>) -> Self {
        self.block_shape = Some(shape.into());
        self
    }

    /// Workers per task (default 1).
    pub fn num_workers(mut self, n: usize) -> Self {
        self.num_workers = n;
        self
    }

    /// The prefix of the task ids (default `cc`): `<name>-label`, `<name>-pairs`,
    /// `<name>-relabel`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Where the pairs and the merge table are kept (see the [type docs](Self)).
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::invalid(&format!("{}-label", self.name), reason)
    }

    /// All tasks, in order `[<name>-label, <name>-pairs, <name>-relabel]`: for worker
    /// processes, which rebuild them, and for running them by hand (run `pairs`, which
    /// includes `label` as upstream; then [`resolve`](Self::resolve); then `relabel`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`] (named `<name>-label`) naming what is wrong: arrays that could
    /// not be opened again, an output that is not `u64`, is the input, or differs from the input in ROI or
    /// voxel size, 0 or more than 3 dimensions, a block shape that is not positive, not a
    /// multiple of the voxel size or not aligned to the output's chunks, or label ids that
    /// would overflow a `u64`.
    pub fn tasks(&self) -> Result<Vec<Task>, Error> {
        let plan = self.plan()?;
        Ok(vec![plan.label, plan.pairs, plan.relabel])
    }

    fn arrays(&self) -> Result<(Arc<ZarrArray>, Arc<ZarrArray>), Error> {
        let input = self.input.clone().map_err(|e| self.invalid(e))?;
        let output = self.output.clone().map_err(|e| self.invalid(e))?;
        Ok((input, output))
    }

    fn default_work_dir(&self, output: &ZarrArray) -> PathBuf {
        Path::new(output.name()).join(format!(".{}.blockwise-cc", self.name))
    }

    fn plan(&self) -> Result<Plan, Error> {
        let (input, output) = self.arrays()?;
        if output.data_type() != DataType::U64 {
            return Err(self.invalid(format!(
                "the output {} holds {}; labels need uint64",
                output.name(),
                output.data_type()
            )));
        }
        if input.name() == output.name() {
            return Err(self.invalid(format!(
                "the input and the output are the same array {}",
                output.name()
            )));
        }
        let roi = output.roi();
        let dims = roi.dims();
        check_dims(dims).map_err(|e| self.invalid(e.to_string()))?;
        if input.roi() != roi || input.voxel_size() != output.voxel_size() {
            return Err(self.invalid(format!(
                "the input {} (ROI {}, voxel size {}) and the output {} (ROI {roi}, voxel size {}) must have the same ROI and voxel size",
                input.name(),
                input.roi(),
                input.voxel_size(),
                output.name(),
                output.voxel_size()
            )));
        }
        let vs = output.voxel_size().clone();
        let block = self
            .block_shape
            .clone()
            .unwrap_or_else(|| output.chunk_grid().chunk);
        if block.dims() != dims {
            return Err(self.invalid(format!(
                "the block shape {block} has {} dims, the arrays {dims}",
                block.dims()
            )));
        }
        if block.iter().any(|b| b <= 0) || !block.is_multiple_of(&vs) {
            return Err(self.invalid(format!(
                "the block shape {block} must be positive and a multiple of the voxel size {vs}"
            )));
        }
        let block_voxels: Vec<u64> = (0..dims).map(|d| (block[d] / vs[d]) as u64).collect();
        let overflow = || {
            self.invalid(format!(
                "label ids of blocks of {block_voxels:?} voxels over {:?} voxels overflow u64",
                output.shape()
            ))
        };
        let v = block_voxels
            .iter()
            .try_fold(1u64, |acc, &b| acc.checked_mul(b))
            .ok_or_else(overflow)?;
        let num_blocks = output
            .shape()
            .iter()
            .zip(&block_voxels)
            .try_fold(1u64, |acc, (&s, &b)| acc.checked_mul(s.div_ceil(b)))
            .ok_or_else(overflow)?;
        num_blocks.checked_mul(v).ok_or_else(overflow)?;

        let work_dir = self
            .work_dir
            .clone()
            .unwrap_or_else(|| self.default_work_dir(&output));
        let block_roi = Roi::new(Coordinate::zeros(dims), block.clone());
        let (below, above) = self.connectivity.pair_context(dims);
        let world = |n: &[u64]| -> Coordinate { (0..dims).map(|d| n[d] as i64 * vs[d]).collect() };
        let (below_w, above_w) = (world(&below), world(&above));
        let grow = |r: &Roi| {
            r.try_grow(below_w.clone(), above_w.clone())
                .map_err(|e| self.invalid(format!("growing {r} by the pair context: {e}")))
        };
        let common = |b: TaskBuilder| {
            b.fit(Fit::Shrink)
                .read_write_conflict(false)
                .num_workers(self.num_workers)
        };

        let (inp, out, fg, conn) = (
            Arc::clone(&input),
            Arc::clone(&output),
            Arc::clone(&self.foreground),
            self.connectivity,
        );
        let label = common(Task::builder(
            format!("{}-label", self.name),
            roi.clone(),
            block_roi.clone(),
            block_roi.clone(),
        ))
        .writes(output.as_ref())
        .process(move |b: &Block| {
            let mask = read_mask(&inp, b.write_roi(), fg.as_ref())?;
            let (labels, _) = label_block(mask.view(), conn, b.grid_index(), v)?;
            out.write(b.write_roi(), labels.view())?;
            Ok(())
        })
        .build()?;

        let out = Arc::clone(&output);
        let (bw, aw) = (below_w.clone(), above_w.clone());
        let pairs = common(Task::builder(
            format!("{}-pairs", self.name),
            grow(&roi)?,
            grow(&block_roi)?,
            block_roi.clone(),
        ))
        .upstream(&label);
        let pairs = pair_outputs(pairs, move |b: &Block| {
            let ctx = b.write_roi().try_grow(bw.clone(), aw.clone())?;
            let labels = out.read_with_fill::<u64>(&ctx, 0)?;
            let shape = voxel_shape(b.write_roi(), out.voxel_size());
            Ok(block_pairs(labels.view(), &shape, conn)?)
        })
        .build()?;

        let out = Arc::clone(&output);
        let table_path = work_dir.join(TABLE_FILE);
        let relabel = common(Task::builder(
            format!("{}-relabel", self.name),
            roi,
            block_roi.clone(),
            block_roi,
        ))
        .writes(output.as_ref())
        .process_per_worker(move |_: &WorkerContext| {
            let table = load_table(&table_path)?;
            let out = Arc::clone(&out);
            Ok(move |b: &Block| -> Result<(), BlockError> {
                let mut labels = out.read::<u64>(b.write_roi())?;
                if table.relabel(labels.data_mut().view_mut()) > 0 {
                    out.write_array(&labels)?;
                }
                Ok(())
            })
        })
        .build()?;
        Ok(Plan {
            label,
            pairs,
            relabel,
            work_dir,
        })
    }

    /// The merge step between the runs: reads the pairs of every block (the block outputs of
    /// `<name>-pairs`, from `summary`, the summary of the run of `<name>-label` and
    /// `<name>-pairs`), merges them, and writes the merge table (atomically) to the work
    /// directory, where `<name>-relabel` loads it. Returns the table.
    ///
    /// # Errors
    ///
    /// As [`tasks`](Self::tasks); the errors of [`RunSummary::outputs`]; [`Error::Io`] if not
    /// every block of the pairs task has its pairs (the run did not complete) or the table
    /// cannot be written.
    pub fn resolve(&self, summary: &RunSummary) -> Result<MergeTable, Error> {
        let plan = self.plan()?;
        self.resolve_plan(&plan, summary).map(|(table, _)| table)
    }

    fn resolve_plan(&self, plan: &Plan, summary: &RunSummary) -> Result<(MergeTable, u64), Error> {
        let mut uf = UnionFind::new();
        let (mut count, mut blocks) = (0u64, 0u64);
        for output in summary.outputs::<Vec<(u64, u64)>>(plan.pairs.task_id())? {
            for (a, b) in output?.value {
                uf.union(a, b);
                count += 1;
            }
            blocks += 1;
        }
        if blocks != plan.pairs.num_blocks() {
            return Err(Error::Io {
                context: format!(
                    "merging the label pairs of task {:?}: {blocks} of its {} blocks recorded their pairs; did the pairs run complete?",
                    plan.pairs.task_id(),
                    plan.pairs.num_blocks()
                ),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let table = uf.merge_table();
        let path = plan.work_dir.join(TABLE_FILE);
        files::write_atomic(&path, &files::encode(files::TABLE_MAGIC, table.entries())).map_err(
            |source| Error::Io {
                context: format!("writing the merge table {}", path.display()),
                source,
            },
        )?;
        info!(
            pairs = count,
            labels = uf.len(),
            merged = table.len(),
            path = %path.display(),
            "connected components: merge table written"
        );
        Ok((table, count))
    }

    /// Runs everything: `<name>-label` and `<name>-pairs`, the merge step
    /// ([`resolve`](Self::resolve)), then `<name>-relabel`, all with `runner`. If the first
    /// run fails (see [`RunSummary::is_success`]), nothing more is done and
    /// [`ComponentsReport::relabel`] is `None`.
    ///
    /// In a worker process ([`is_worker`](crate::is_worker)) this serves the worker's task and
    /// exits, as [`Runner::run`] does.
    ///
    /// # Errors
    ///
    /// As [`tasks`](Self::tasks), [`resolve`](Self::resolve) and [`Runner::run`].
    pub fn run(&self, runner: &Runner) -> Result<ComponentsReport, Error> {
        let plan = self.plan()?;
        if crate::is_worker() {
            // Serves (and exits) if the worker's task is in one of the runs.
            let label = runner.run([plan.pairs.clone()])?;
            let relabel = runner.run([plan.relabel.clone()])?;
            return Ok(ComponentsReport {
                label,
                relabel: Some(relabel),
                ..ComponentsReport::default()
            });
        }
        let label = runner.run([plan.pairs.clone()])?;
        if !label.is_success() {
            return Ok(ComponentsReport {
                label,
                ..ComponentsReport::default()
            });
        }
        let (table, pairs) = self.resolve_plan(&plan, &label)?;
        let relabel = runner.run([plan.relabel.clone()])?;
        Ok(ComponentsReport {
            label,
            relabel: Some(relabel),
            pairs,
            merged: table.len() as u64,
        })
    }
}

const TABLE_FILE: &str = "merge-table.bin";

fn load_table(path: &Path) -> Result<MergeTable, BlockError> {
    let entries = files::read(path, files::TABLE_MAGIC).map_err(|e| {
        format!(
            "cannot load the merge table {} (written by the driver between the runs): {e}",
            path.display()
        )
    })?;
    Ok(MergeTable::from_entries(entries).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// A block's shape in voxels.
fn voxel_shape(roi: &Roi, voxel_size: &Coordinate) -> Vec<usize> {
    (0..roi.dims())
        .map(|d| usize::try_from(roi.shape()[d] / voxel_size[d]).unwrap_or(0))
        .collect()
}

/// Reads `roi` of `input` (any data type) and applies `fg` to every value.
fn read_mask(
    input: &ZarrArray,
    roi: &Roi,
    fg: &(dyn Fn(f64) -> bool + Send + Sync),
) -> Result<ArrayD<bool>, StoreError> {
    macro_rules! mask {
        ($($d:ident => $t:ty),*) => {
            match input.data_type() {
                $(DataType::$d => {
                    let data = input.read::<$t>(roi)?;
                    Ok(data.mapv(|x| fg(x as f64)).into_inner())
                })*
            }
        };
    }
    mask!(U8 => u8, U16 => u16, U32 => u32, U64 => u64, I8 => i8, I16 => i16, I32 => i32,
        I64 => i64, F32 => f32, F64 => f64)
}

/// Attaches `compute` to the pairs task: each block's pairs are its block output, recorded
/// with its done-marker (so a rerun with a run directory, which skips finished blocks, keeps
/// them, and worker processes send them with their results).
fn pair_outputs<F>(builder: TaskBuilder, compute: F) -> TaskBuilder
where
    F: Fn(&Block) -> Result<Vec<(u64, u64)>, BlockError> + Send + Sync + 'static,
{
    builder.process_with_output(compute)
}
