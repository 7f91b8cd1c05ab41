//! [`Pyramid`]: a resolution pyramid of a zarr volume, one chained blockwise task per level.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::Downsample;
use super::downsample::{Downsampled, check_factor, downsample};
use crate::error::{BlockError, Error};
use crate::geometry::{Coordinate, Roi};
use crate::store::{ArraySpec, DataType, OmeLevel, RoiArray, ZarrArray, write_ome_levels};
use crate::{Block, Fit, RunSummary, Runner, Task};

/// How many levels a [`Pyramid`] has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Levels {
    Count(usize),
    UntilOneChunk,
}

/// A resolution pyramid of a zarr array, written as zarr arrays `s0`, `s1`, … in one output
/// group that is an OME-Zarr image: [`tasks`](Self::tasks) writes the group's multiscales
/// metadata (NGFF 0.5 for zarr v3, 0.4 for v2; open it with [`OmeZarr`](crate::store::OmeZarr)).
/// The axes are the source's axis names and units (abbreviations like `nm` written as NGFF's
/// `nanometer`); a name ending in `^` (funlib's channel marker), `c` or `channel` is a channel
/// axis, `t` or `time` a time axis, the others space axes. Axes that NGFF cannot describe
/// (fewer than 2 or more than 3 space axes) get no OME metadata (the levels remain plain zarr
/// arrays with funlib attributes). The source may be an OME-Zarr level
/// ([`ZarrArray::open_ome`]); its world metadata is used.
///
/// Level 0 is a copy of the source; level `k` is level `k - 1` [downsampled](super::downsample)
/// by the factor with the method. Every level keeps the source's offset, data type, chunk shape
/// (in voxels), axis names and units; its voxel size is the previous level's times the factor,
/// and its shape `floor(n / f)` of the previous level's (trailing voxels that fill no whole
/// window are dropped), so the levels stay aligned in world units.
///
/// There is one task per level, `<name>-s<k>` (default name `pyramid`), each upstream of the
/// next. All levels use the same block shape in voxels (default: the chunk shape), so a
/// level-`k` block covers exactly `factor` whole level-`(k - 1)` blocks per axis in world units:
/// it waits for exactly those, and the levels overlap in time. Blocks write whole chunks.
///
/// The arrays are created with [`ZarrArray::prepare`], so a rerun finds them and, with a
/// [`Runner::run_dir`], resumes where the last run stopped.
///
/// Level 0 is created like the source (the same chunks, shards, codecs and fill value), and
/// its chunks are copied as stored bytes ([`ZarrArray::copy_chunks_from`]), never decoded
/// and encoded again. A level 0 that exists from an earlier run with another encoding is
/// kept and written by decoding and encoding.
///
/// ```
/// use blockwise::ops::{Downsample, Pyramid};
/// use blockwise::store::{ArraySpec, DataType, ZarrArray};
/// use blockwise::{Progress, Roi, Runner};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let roi = Roi::new([0, 0], [16, 16]);
/// let raw = ZarrArray::create(dir.path(), "raw", &ArraySpec::new(roi.clone(), [1, 1], DataType::U8, vec![4, 4]))?;
/// let data = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[16, 16]), |i| (i[0] * 16 + i[1]) as u8);
/// raw.write(&roi, data.view())?;
///
/// let out = dir.path().join("pyramid.zarr");
/// let pyramid = Pyramid::builder(&raw, &out).levels(3).factor([2]).method(Downsample::Max);
/// let summary = pyramid.run(&Runner::new().progress(Progress::Never))?;
/// assert!(summary.is_success());
/// let s2 = ZarrArray::open(&out, "s2")?;
/// assert_eq!(s2.shape(), &[4, 4]);
/// assert_eq!((s2.voxel_size()[0], s2.voxel_size()[1]), (4, 4));
/// assert_eq!(s2.read::<u8>(&s2.roi())?[[0, 0]], 51); // max of raw[0..4, 0..4]
/// // The output is an OME-Zarr image (NGFF 0.5, as the arrays are zarr v3).
/// let image = blockwise::store::OmeZarr::open(&out)?;
/// assert_eq!(image.levels()[2].voxel_size.as_slice(), &[4, 4]);
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until `.run(..)` or `.tasks()`"]
pub struct Pyramid {
    source: Arc<ZarrArray>,
    output: PathBuf,
    levels: Levels,
    factor: Vec<u64>,
    method: Downsample,
    block_shape: Option<Vec<u64>>,
    num_workers: usize,
    name: String,
}

impl fmt::Debug for Pyramid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pyramid")
            .field("output", &self.output)
            .field("levels", &self.levels)
            .field("factor", &self.factor)
            .field("method", &self.method)
            .field("block_shape", &self.block_shape)
            .field("num_workers", &self.num_workers)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One level's plan: its array spec.
struct Level {
    spec: ArraySpec,
}

macro_rules! by_type {
    ($dt:expr, $f:ident, $($arg:expr),*) => {
        match $dt {
            DataType::U8 => $f::<u8>($($arg),*),
            DataType::U16 => $f::<u16>($($arg),*),
            DataType::U32 => $f::<u32>($($arg),*),
            DataType::U64 => $f::<u64>($($arg),*),
            DataType::I8 => $f::<i8>($($arg),*),
            DataType::I16 => $f::<i16>($($arg),*),
            DataType::I32 => $f::<i32>($($arg),*),
            DataType::I64 => $f::<i64>($($arg),*),
            DataType::F32 => $f::<f32>($($arg),*),
            DataType::F64 => $f::<f64>($($arg),*),
        }
    };
}

type Process = Box<dyn Fn(&Block) -> Result<(), BlockError> + Send + Sync>;

fn copy_fn<T: Downsampled>(src: Arc<ZarrArray>, dst: Arc<ZarrArray>) -> Process {
    Box::new(move |b: &Block| {
        let data = src.read::<T>(b.write_roi())?;
        dst.write(b.write_roi(), &data)?;
        Ok(())
    })
}

/// Level 0 stored like the source: its chunks are copied as stored bytes.
fn raw_copy_fn(src: Arc<ZarrArray>, dst: Arc<ZarrArray>) -> Process {
    Box::new(move |b: &Block| {
        dst.copy_chunks_from(&src, b.write_roi())?;
        Ok(())
    })
}

fn down_fn<T: Downsampled>(
    src: Arc<ZarrArray>,
    dst: Arc<ZarrArray>,
    factor: Vec<u64>,
    method: Downsample,
) -> Process {
    // When the factor divides the source's chunks, every window lies in one chunk: each chunk
    // is read (decoded) and reduced on its own, and only the reduced pieces are assembled.
    let per_chunk = src
        .write_chunk_shape()
        .iter()
        .zip(&factor)
        .all(|(&c, &f)| c % f == 0);
    Box::new(move |b: &Block| {
        if !per_chunk {
            let data = src.read::<T>(b.read_roi())?;
            let out = downsample(data.view(), &factor, method)?;
            dst.write(b.write_roi(), out.view())?;
            return Ok(());
        }
        let mut out = RoiArray::from_elem(
            b.write_roi().clone(),
            dst.voxel_size().clone(),
            T::default(),
        )?;
        let region = b.read_roi().intersect(&src.roi());
        let (vs, dvs) = (src.voxel_size(), dst.voxel_size());
        let dims = region.dims();
        let step: Vec<i64> = (0..dims)
            .map(|d| {
                i64::try_from(src.write_chunk_shape()[d])
                    .unwrap_or(i64::MAX)
                    .saturating_mul(vs[d])
            })
            .collect();
        // The chunks' origins in the region, in C order (the region starts on a chunk).
        let mut at: Vec<i64> = region.begin().as_slice().to_vec();
        loop {
            let end: Vec<i64> = (0..dims)
                .map(|d| (at[d] + step[d]).min(region.end()[d]))
                .collect();
            let chunk = Roi::new(
                Coordinate::from(at.clone()),
                Coordinate::from((0..dims).map(|d| end[d] - at[d]).collect::<Vec<i64>>()),
            );
            let data = src.read::<T>(&chunk)?;
            let piece = downsample(data.view(), &factor, method)?;
            let shape: Vec<i64> = (0..dims)
                .map(|d| {
                    i64::try_from(piece.shape()[d])
                        .unwrap_or(i64::MAX)
                        .saturating_mul(dvs[d])
                })
                .collect();
            let piece_roi = Roi::new(chunk.begin().clone(), Coordinate::from(shape));
            if !piece_roi.is_empty() {
                out.view_roi_mut(&piece_roi)?.assign(&piece);
            }
            // The next chunk origin in C order.
            let mut d = dims;
            loop {
                if d == 0 {
                    dst.write_array(&out)?;
                    return Ok(());
                }
                d -= 1;
                at[d] += step[d];
                if at[d] < region.end()[d] {
                    break;
                }
                at[d] = region.begin()[d];
            }
        }
    })
}

impl Pyramid {
    /// A pyramid of `source` written to the zarr group at `output` (levels `s0`, `s1`, …).
    /// Defaults: 4 levels, factor 2 on every axis, [`Downsample::Mean`], blocks of one chunk,
    /// one worker per level. The tasks share `source` (a clone: the same open array, with its
    /// world metadata, e.g. an OME-Zarr level's from [`ZarrArray::open_ome`]).
    pub fn builder(source: &ZarrArray, output: impl Into<PathBuf>) -> Pyramid {
        Pyramid {
            source: Arc::new(source.clone()),
            output: output.into(),
            levels: Levels::Count(4),
            factor: vec![2],
            method: Downsample::Mean,
            block_shape: None,
            num_workers: 1,
            name: "pyramid".into(),
        }
    }

    /// The number of levels, `s0` (the copy of the source) included.
    pub fn levels(mut self, n: usize) -> Self {
        self.levels = Levels::Count(n);
        self
    }

    /// As many levels as it takes for the last one to fit one chunk (at least `s0`), on every
    /// axis the factor shrinks (an axis of factor 1 keeps its size).
    pub fn until_one_chunk(mut self) -> Self {
        self.levels = Levels::UntilOneChunk;
        self
    }

    /// The downsampling factor per axis (`[1, 2, 2]`), or one number for every axis (`[2]`).
    pub fn factor(mut self, factor: impl AsRef<[u64]>) -> Self {
        self.factor = factor.as_ref().to_vec();
        self
    }

    /// How windows are reduced (default [`Downsample::Mean`]).
    pub fn method(mut self, method: Downsample) -> Self {
        self.method = method;
        self
    }

    /// The block shape in voxels, the same at every level (default: the source's write-chunk
    /// shape). It must be a multiple of the chunk shape.
    pub fn block_shape(mut self, shape: impl AsRef<[u64]>) -> Self {
        self.block_shape = Some(shape.as_ref().to_vec());
        self
    }

    /// Workers (default 1): at most `n` workers run at once over all levels when the pyramid
    /// is built with [`run`](Self::run). Each level's task may have `n` workers, each needing
    /// one unit of resource `"cpu"` ([`TaskBuilder::requires`](crate::TaskBuilder::requires)),
    /// and `run` gives the runner a budget of `n` `"cpu"` units unless its budget already has
    /// some ([`Runner::resources`]); idle workers of a level hand their units to the next
    /// level as it gets blocks. With [`tasks`](Self::tasks) and a runner without a budget,
    /// every level gets its `n` workers.
    pub fn num_workers(mut self, n: usize) -> Self {
        self.num_workers = n;
        self
    }

    /// The prefix of the task ids (default `pyramid`): `<name>-s0`, `<name>-s1`, ….
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::invalid(&format!("{}-s0", self.name), reason)
    }

    /// The specs of every level.
    fn plan(&self, source: &ZarrArray) -> Result<(Vec<Level>, Vec<u64>), Error> {
        let dims = source.roi().dims();
        let factor = match self.factor.as_slice() {
            [f] => vec![*f; dims],
            f => f.to_vec(),
        };
        check_factor(&factor, dims).map_err(|e| self.invalid(e.to_string()))?;
        let chunk = source.write_chunk_shape().to_vec();
        let mut spec = ArraySpec::new(
            source.roi(),
            source.voxel_size().clone(),
            source.data_type(),
            chunk.clone(),
        );
        spec.format = source.zarr_format();
        spec.axis_names = Some(source.axis_names().to_vec());
        spec.units = Some(source.units().to_vec());
        let mut shape = source.shape().to_vec();
        let mut levels = vec![Level { spec: spec.clone() }];
        let more = |levels: &Vec<Level>, shape: &[u64]| match self.levels {
            Levels::Count(n) => levels.len() < n,
            Levels::UntilOneChunk => shape
                .iter()
                .zip(&chunk)
                .zip(&factor)
                .any(|((s, c), &f)| s > c && f > 1),
        };
        if self.levels == Levels::Count(0) {
            return Err(self.invalid("a pyramid needs at least 1 level"));
        }
        if factor.iter().all(|&f| f == 1) && self.levels == Levels::UntilOneChunk {
            return Err(self.invalid(format!(
                "factor {factor:?} never shrinks the volume; until_one_chunk would not end"
            )));
        }
        while more(&levels, &shape) {
            let k = levels.len();
            shape = shape.iter().zip(&factor).map(|(s, f)| s / f).collect();
            if shape.contains(&0) {
                return Err(self.invalid(format!(
                    "level s{k} would be empty: the source's shape {:?} divided by {factor:?} {k} times is {shape:?}",
                    source.shape()
                )));
            }
            let vs: Coordinate = (0..dims)
                .map(|d| {
                    i64::try_from(factor[d])
                        .ok()
                        .and_then(|f| spec.voxel_size[d].checked_mul(f))
                })
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| self.invalid(format!("the voxel size of level s{k} overflows")))?
                .into();
            // At most the source's extent (floor(n / f) * f <= n), so it fits.
            let world: Coordinate = (0..dims)
                .map(|d| {
                    i64::try_from(shape[d])
                        .unwrap_or(i64::MAX)
                        .saturating_mul(vs[d])
                })
                .collect::<Vec<i64>>()
                .into();
            if !source.offset().is_multiple_of(&vs) {
                return Err(self.invalid(format!(
                    "the source's offset {} is not a multiple of the voxel size {vs} of level s{k} (zarr arrays in world units need that)",
                    source.offset()
                )));
            }
            spec.roi = Roi::new(source.offset().clone(), world);
            spec.voxel_size = vs;
            levels.push(Level { spec: spec.clone() });
        }
        Ok((levels, factor))
    }

    /// The tasks, one per level in order `[<name>-s0, <name>-s1, …]`, each upstream of the
    /// next (run the last one: it includes the others). Creates the level arrays that do not
    /// exist yet (and opens those that do).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`] (named `<name>-s0`) naming what is wrong: a factor of the wrong
    /// length or with a 0, zero levels, a level that would be empty, a block shape that is not a positive multiple of the chunk shape;
    /// [`Error::Store`] if a level array cannot be created or exists with another spec.
    pub fn tasks(&self) -> Result<Vec<Task>, Error> {
        let source = Arc::clone(&self.source);
        let (levels, factor) = self.plan(&source)?;
        let dims = factor.len();
        let chunk = source.write_chunk_shape().to_vec();
        let block = self.block_shape.clone().unwrap_or_else(|| chunk.clone());
        if block.len() != dims
            || block
                .iter()
                .zip(&chunk)
                .any(|(&b, &c)| b == 0 || b % c != 0)
        {
            return Err(self.invalid(format!(
                "the block shape {block:?} must be a positive multiple of the chunk shape {chunk:?}"
            )));
        }
        let dtype = source.data_type();
        let mut tasks: Vec<Task> = Vec::new();
        let mut prev: Arc<ZarrArray> = Arc::clone(&source);
        for (k, level) in levels.iter().enumerate() {
            let out = Arc::new(if k == 0 {
                self.level0(&source, &level.spec)?
            } else {
                ZarrArray::prepare(&self.output, &format!("s{k}"), &level.spec)?
            });
            let vs = &level.spec.voxel_size;
            let world: Coordinate = (0..dims)
                .map(|d| {
                    i64::try_from(block[d])
                        .ok()
                        .and_then(|b| b.checked_mul(vs[d]))
                })
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| {
                    self.invalid(format!(
                        "the block shape {block:?} times the voxel size {vs} of level s{k} overflows"
                    ))
                })?
                .into();
            let block_roi = Roi::new(Coordinate::zeros(dims), world);
            let process = if k == 0 && out.stores_like(&prev) {
                raw_copy_fn(Arc::clone(&prev), Arc::clone(&out))
            } else if k == 0 {
                by_type!(dtype, copy_fn, Arc::clone(&prev), Arc::clone(&out))
            } else {
                by_type!(
                    dtype,
                    down_fn,
                    Arc::clone(&prev),
                    Arc::clone(&out),
                    factor.clone(),
                    self.method
                )
            };
            let mut builder = Task::builder(
                format!("{}-s{k}", self.name),
                out.roi(),
                block_roi.clone(),
                block_roi,
            )
            .fit(Fit::Shrink)
            .read_write_conflict(false)
            .num_workers(self.num_workers)
            .requires([("cpu", 1)])
            .writes(out.as_ref())
            .process(move |b: &Block| process(b));
            if let Some(up) = tasks.last() {
                builder = builder.upstream(up);
            }
            tasks.push(builder.build()?);
            prev = out;
        }
        write_ome(&self.output, &levels, &source)?;
        Ok(tasks)
    }

    /// Level 0: created like the source (its chunks, shards, codecs and fill value) so that
    /// its chunks are copied as stored bytes; an existing level 0 is kept if it is stored like
    /// the source or matches `spec` (a level 0 written by another version or tool).
    fn level0(&self, source: &ZarrArray, spec: &ArraySpec) -> Result<ZarrArray, Error> {
        let dir = self.output.join("s0");
        if !dir.join("zarr.json").exists() && !dir.join(".zarray").exists() {
            return Ok(ZarrArray::create_like(&self.output, "s0", source, false)?);
        }
        let existing = ZarrArray::open(&self.output, "s0")?;
        if existing.stores_like(source)
            && existing.roi() == source.roi()
            && existing.voxel_size() == source.voxel_size()
        {
            return Ok(existing);
        }
        drop(existing);
        Ok(ZarrArray::prepare(&self.output, "s0", spec)?)
    }

    /// Builds the tasks ([`tasks`](Self::tasks)) and runs them all with `runner`, on at most
    /// [`num_workers`](Self::num_workers) workers at once (a `"cpu"` budget added to the
    /// runner's unless it has one).
    ///
    /// # Errors
    ///
    /// As [`tasks`](Self::tasks) and [`Runner::run`].
    pub fn run(&self, runner: &Runner) -> Result<RunSummary, Error> {
        let tasks = self.tasks()?;
        let units = u64::try_from(self.num_workers).unwrap_or(u64::MAX);
        runner.with_cpu_budget(units).run(tasks.last().cloned())
    }
}

/// Writes the output group's OME-Zarr multiscales metadata for the levels (NGFF 0.5 for zarr
/// v3, 0.4 for v2), if the source's axes make an NGFF image (see `write_ome_levels`).
fn write_ome(output: &std::path::Path, levels: &[Level], source: &ZarrArray) -> Result<(), Error> {
    let Some(first) = levels.first() else {
        return Ok(());
    };
    let ome: Vec<OmeLevel> = levels
        .iter()
        .enumerate()
        .map(|(k, l)| OmeLevel {
            path: format!("s{k}"),
            voxel_size: l.spec.voxel_size.clone(),
            offset: l.spec.roi.offset().clone(),
        })
        .collect();
    write_ome_levels(
        output,
        first.spec.format,
        source.axis_names(),
        source.units(),
        &ome,
        (source.shape(), source.data_type()),
    )?;
    Ok(())
}
