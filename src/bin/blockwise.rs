//! The `blockwise` command line: benchmarks, sample data, the status of a run directory and
//! resolution pyramids.
//!
//! Exit codes: 0 success, 1 some blocks failed, 2 error.
//!
//! Log lines of the library (refused workers, worker deaths and restarts, ...) go to stderr:
//! warnings by default, more with `-v` (info), `-vv` (debug), `-vvv` (trace), or as `RUST_LOG`
//! says when it is set.

#[cfg(feature = "zarr")]
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use blockwise::{Block, BlockError, Progress, Roi, Runner, Task, WorkerOptions};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

/// Writes to standard output; a closed pipe (`blockwise status | head`) ends the program
/// quietly instead of panicking as `print!` does.
fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(2);
    }
}

macro_rules! out {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*)) };
}

macro_rules! outln {
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

#[derive(Parser, Debug)]
#[command(
    name = "blockwise",
    version,
    about = "Process huge n-dimensional volumes block by block"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output on stderr: `-v` info, `-vv` debug, `-vvv` trace (default: warnings
    /// only). `RUST_LOG` (e.g. `RUST_LOG=blockwise=debug`), when set, takes precedence.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a benchmark scenario and report throughput, wall time and peak memory.
    Bench {
        #[command(subcommand)]
        scenario: Scenario,
    },
    /// Write a deterministic synthetic 3D uint8 volume (smooth blobs plus noise) as zarr.
    ///
    /// A `--chunk` (or `--shard`) larger than the volume is clamped to it, with a note on
    /// stderr. Nothing is written unless the chunks being written at once fit in the available
    /// memory and the output's file system has room: with `--codec none` for every chunk whole
    /// (rounded up to the file system's blocks); with a compressing codec for half the raw
    /// volume (its ±12 noise cannot be compressed further), with a warning when the raw volume
    /// does not fit. Free files (inodes) are checked too; an array replaced by `--overwrite`
    /// counts as free.
    Sample(SampleArgs),
    /// Show what a run directory records: per task the blocks done, failed and never run, the
    /// failed blocks with their last error, and when the run last made progress.
    Status(StatusArgs),
    /// Build a resolution pyramid of a zarr array or OME-Zarr image: zarr arrays `s0` (a copy),
    /// `s1`, … in an OME-Zarr output group, each level downsampled from the one below, one task
    /// (and progress bar) per level.
    Pyramid(PyramidArgs),
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// The run directory (`--run-dir` of a run).
    run_dir: std::path::PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SampleArgs {
    /// The zarr store to write (a directory, e.g. `sample.zarr`).
    #[arg(long)]
    output: std::path::PathBuf,
    /// The array's path inside the store (no `.` or `..` components).
    #[arg(long, default_value = "raw")]
    dataset: String,
    /// Edge length of the cubic volume in voxels.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65536))]
    size: u64,
    /// Edge length of the cubic chunks in voxels (clamped to `--size`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    chunk: u64,
    /// Edge length of cubic shards in voxels (zarr v3 only; a multiple of the chunk; clamped to
    /// the smallest multiple of the chunk that covers `--size`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    shard: Option<u64>,
    /// Chunk compression.
    #[arg(long, value_enum, default_value_t = CodecArg::BloscZstd)]
    codec: CodecArg,
    /// Zarr format.
    #[arg(long, value_enum, default_value_t = FormatArg::V3)]
    format: FormatArg,
    /// Seed of the blobs and the noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4096))]
    workers: u64,
    /// Replace an existing array.
    #[arg(long)]
    overwrite: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CodecArg {
    None,
    Zstd,
    Gzip,
    BloscZstd,
    BloscLz4,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    V2,
    V3,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// No-op blocks of one voxel in one task: measures scheduling and hand-off overhead end
    /// to end. Without `--context` the read ROI is the write ROI and there are no conflicts;
    /// `--chain` runs two chained tasks.
    Noop(NoopArgs),
    /// The 3×3×3 box mean of a 3D uint8 zarr volume, one input chunk per block, with context
    /// (zeros outside the volume), written to a new array with the input's chunks and codec,
    /// on worker threads or (`--runner processes`) local worker processes.
    ///
    /// The output must be a different store from the input, neither inside the other. Nothing
    /// is written unless the blocks in flight, the chunk cache and the checksum fit in the
    /// available memory; when the output (stored like the input) may not fit on its file
    /// system, a warning is printed, and the run is refused if the input is stored uncompressed.
    Zarr(ZarrArgs),
    /// A resolution pyramid of a 3D uint8 zarr array (as `blockwise pyramid`), written to a
    /// fresh output group; reports the wall time, the level-0 megabytes per second, peak
    /// memory and every level's sha256 (of its voxels in C order). `--codec-only` measures the
    /// limit instead: one read of level 0 (its chunks copied as stored bytes, and decoded) plus
    /// encoding the levels above it, through the same runner.
    Pyramid(PyramidBenchArgs),
    /// The done-markers of one synthetic task of `--blocks` blocks: creates them in a new run
    /// directory, marks every block done (the first 2^24 one by one through the journal's
    /// writer in synced batches of 65,536, the rest through its fast path, which writes whole
    /// pages with their CRCs and the summary), then times `blockwise status` and a reopen that
    /// loads the finished task, then reruns the run directory with a new downstream task of
    /// `--downstream` blocks (the finished task skipped whole, its blocks never processed again)
    /// and times the start of its first block; prints one JSON line (blocks, create_s,
    /// mark_all_s, status_s, reopen_s, disk_bytes, downstream_start_s, rerun_s, ...). The run
    /// directory is removed afterwards unless `--keep`.
    Markers(MarkersBenchArgs),
}

#[derive(Args, Debug)]
struct MarkersBenchArgs {
    /// Number of blocks (at most 10^12).
    #[arg(long, default_value_t = 100_000_000, value_parser = clap::value_parser!(u64).range(1..=MAX_NOOP_BLOCKS))]
    blocks: u64,
    /// The run directory to create (it must not exist); a directory in the system's temporary
    /// directory by default.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Keep the run directory.
    #[arg(long)]
    keep: bool,
    /// Blocks of a downstream task run after the markers are made: the rerun opens the run
    /// directory with the finished task and this new task (one voxel blocks reading the
    /// finished task's), skips the finished one whole, and runs these; 0 leaves it out.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    downstream: u64,
}

#[derive(Args, Debug)]
struct PyramidBenchArgs {
    /// The input zarr store.
    #[arg(long)]
    input: std::path::PathBuf,
    /// The array's path inside the input store.
    #[arg(long, default_value = "raw")]
    dataset: String,
    /// The output zarr group (replaced if it exists; not inside the input, nor containing it).
    #[arg(long)]
    output: std::path::PathBuf,
    /// The number of levels, `s0` included.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    levels: u64,
    /// The factor: one number for every axis (`2`) or one per axis (`1,2,2`).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    factor: Vec<u64>,
    /// How windows are reduced (as `blockwise pyramid`).
    #[arg(long, default_value = "mean")]
    method: blockwise::ops::Downsample,
    /// Worker threads, all levels together.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4096))]
    workers: u64,
    /// Measure the limit (one read of level 0 plus encoding the levels above it) instead of
    /// the pyramid. The levels to encode are computed first, outside the timing.
    #[arg(long)]
    codec_only: bool,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ZarrArgs {
    /// The input zarr store.
    #[arg(long)]
    input: std::path::PathBuf,
    /// The output zarr store (its array is replaced if it exists; not the input, not inside it,
    /// and not containing it).
    #[arg(long)]
    output: std::path::PathBuf,
    /// The array's path inside both stores (no `.` or `..` components).
    #[arg(long, default_value = "raw")]
    dataset: String,
    /// Worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4096))]
    workers: u64,
    /// Voxels of context read around each block (at least 1).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    context: u64,
    /// Only decode and re-encode every chunk (no context, no filter): what the codec alone
    /// can do through the same runner, the yardstick for the full workload.
    #[arg(long)]
    codec_only: bool,
    /// Where blocks run: worker threads, or worker processes on this machine (this program,
    /// re-executed, each opening the arrays itself) connected over loopback TCP.
    #[arg(long, value_enum, default_value_t = RunnerKind::Threads)]
    runner: RunnerKind,
    /// Worker logs (with `--runner processes`).
    #[arg(long, default_value = "blockwise_logs")]
    log_dir: std::path::PathBuf,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct NoopArgs {
    /// Number of blocks (at most 10^12).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=MAX_NOOP_BLOCKS))]
    blocks: u64,
    /// Number of worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4096))]
    workers: u64,
    /// Number of dimensions of the volume (the blocks are spread over a near-cubic grid).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=4))]
    dims: u64,
    /// Blocks per worker that may wait in the task's queue.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    prefetch: u64,
    /// Split the blocks over this many independent tasks (each with `--workers` workers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    tasks: u64,
    /// Voxels of context read around every 1-voxel block: the read ROI is the write ROI grown
    /// by this on every side (the total ROI too, so the block grid stays `--blocks`), with
    /// read/write conflicts when it is more than 0 (with `--chain`: the downstream task only).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_NOOP_CONTEXT))]
    context: u64,
    /// Two chained tasks per task, `noop_up` and `noop_down` (which has `noop_up` upstream and
    /// reads `--context` voxels around its blocks), each with `--blocks` blocks (split over
    /// `--tasks` chains): `blocks` and blocks/s count the blocks of both.
    #[arg(long)]
    chain: bool,
    /// With `--context`: no read/write conflicts (the blocks read context but never wait for
    /// their neighbours, as a filter writing to another array).
    #[arg(long, requires = "context")]
    no_conflicts: bool,
    /// Give the run a budget of this many `cpu` units, each worker needing one (all tasks
    /// share it); without it, no budget.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    budget_cpus: Option<u64>,
    /// Where blocks run: worker threads, or worker processes connected over TCP.
    #[arg(long, value_enum, default_value_t = RunnerKind::Threads)]
    runner: RunnerKind,
    /// How worker processes are started (with `--runner processes`).
    #[arg(long, value_enum, default_value_t = LauncherKind::Local)]
    launcher: LauncherKind,
    /// Worker logs (with `--runner processes`).
    #[arg(long, default_value = "blockwise_logs")]
    log_dir: std::path::PathBuf,
    /// Encrypt the traffic with worker processes (TLS 1.3; default: on for SLURM workers, off
    /// for local workers on loopback).
    #[arg(long, overrides_with = "no_tls")]
    tls: bool,
    /// Do not encrypt the traffic with worker processes.
    #[arg(long, overrides_with = "tls")]
    no_tls: bool,
    /// Record done-markers in this run directory; a second run with it skips every block.
    #[arg(long)]
    run_dir: Option<std::path::PathBuf>,
    /// With `--run-dir`: discard its done-markers first.
    #[arg(long, requires = "run_dir")]
    fresh: bool,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RunnerKind {
    /// In-process worker threads.
    Threads,
    /// Worker processes (this program, re-executed) connected over TCP.
    Processes,
}

impl RunnerKind {
    /// The `runner` of the report.
    fn name(self) -> &'static str {
        match self {
            RunnerKind::Threads => "threads",
            RunnerKind::Processes => "processes",
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LauncherKind {
    /// Child processes of the scheduler.
    Local,
    /// SLURM jobs (`sbatch`), for a cluster reachable from here.
    Slurm,
}

/// The most blocks `bench noop` takes: days of scheduling at millions of blocks per second, and
/// small enough to factor instantly and to index with `i64`.
const MAX_NOOP_BLOCKS: u64 = 1_000_000_000_000;

/// The most context `bench noop` takes: a 1-voxel block with `N` voxels of context has a level
/// stride of `N + 1` blocks, so `(N + 1)^dims` levels (83,521 in 4-D at 16), each with its own
/// conflict offsets held in memory.
const MAX_NOOP_CONTEXT: u64 = 16;

/// The result line shared by all benchmark scenarios.
#[derive(Serialize, Debug)]
struct BenchReport {
    scenario: &'static str,
    runner: &'static str,
    workers: u64,
    blocks: u64,
    completed: u64,
    /// Blocks done by an earlier run (only with a run directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<u64>,
    /// Whether the traffic with worker processes was encrypted (only with worker processes).
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<bool>,
    wall_s: f64,
    blocks_per_s: f64,
    peak_rss_mib: Option<f64>,
    /// Voxels of context around every block (`bench noop` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<u64>,
    /// Whether the blocks ran in chained pairs of tasks (`bench noop` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<bool>,
    /// Whether blocks with context wait for their neighbours (`bench noop` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    read_write_conflict: Option<bool>,
}

impl BenchReport {
    fn print(&self, json: bool) -> Result<()> {
        if json {
            outln!("{}", serde_json::to_string(self)?);
        } else {
            outln!(
                "{} blocks ({} completed{}) on {} {} workers in {:.3} s: {:.0} blocks/s, peak RSS {}",
                self.blocks,
                self.completed,
                self.skipped
                    .map_or_else(String::new, |s| format!(", {s} skipped as done")),
                self.workers,
                self.runner,
                self.wall_s,
                self.blocks_per_s,
                self.peak_rss_mib
                    .map_or_else(|| "n/a".to_owned(), |m| format!("{m:.1} MiB"))
            );
        }
        Ok(())
    }
}

/// Per-axis block counts whose product is exactly `n`, as close to a cube as the factors of `n`
/// allow: prime factors, largest first, each multiplied onto the axis with the fewest blocks.
fn grid_shape(n: u64, dims: usize) -> Vec<i64> {
    let mut factors = Vec::new();
    let mut rest = n;
    let mut p = 2;
    while p * p <= rest {
        while rest.is_multiple_of(p) {
            factors.push(p);
            rest /= p;
        }
        p += 1;
    }
    if rest > 1 {
        factors.push(rest);
    }
    let mut axes = vec![1u64; dims];
    for f in factors.into_iter().rev() {
        if let Some(smallest) = axes.iter_mut().min() {
            *smallest *= f;
        }
    }
    axes.sort_unstable_by(|a, b| b.cmp(a));
    axes.into_iter().map(|a| a as i64).collect()
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The tasks of `bench noop`, built the same way in the driver and in its worker processes:
/// `--tasks` independent tasks (or, with `--chain`, pairs of chained tasks), each with
/// `--blocks / --tasks` blocks of one voxel on a near-cubic grid.
fn noop_tasks(args: &NoopArgs) -> Result<Vec<Task>> {
    let dims = usize::try_from(args.dims)?;
    if !args.blocks.is_multiple_of(args.tasks) {
        bail!(
            "--blocks {} is not a multiple of --tasks {}",
            args.blocks,
            args.tasks
        );
    }
    let per_task = args.blocks / args.tasks;
    let shape = grid_shape(per_task, dims);
    let n = i64::try_from(args.context)?;
    // One task; `context` voxels of context (and conflicts when there are any).
    let one = |id: String, context: i64, upstream: Option<&Task>| -> Result<Task> {
        let total = Roi::new(
            vec![-context; dims],
            shape.iter().map(|&s| s + 2 * context).collect::<Vec<_>>(),
        );
        let write = Roi::new(vec![0i64; dims], vec![1i64; dims]);
        let read = Roi::new(vec![-context; dims], vec![1 + 2 * context; dims]);
        let mut builder = Task::builder(id, total, read, write)
            .read_write_conflict(context > 0 && !args.no_conflicts)
            .process(|_: &Block| Ok::<(), BlockError>(()))
            .num_workers(usize::try_from(args.workers)?);
        if let Some(up) = upstream {
            builder = builder.upstream(up);
        }
        if args.budget_cpus.is_some() {
            builder = builder.requires([("cpu", 1)]);
        }
        let task = builder.build().context("building a no-op task")?;
        if task.num_blocks() != per_task {
            bail!(
                "internal: {} blocks instead of {per_task}",
                task.num_blocks()
            );
        }
        Ok(task)
    };
    let mut tasks = Vec::new();
    for t in 0..args.tasks {
        let id = if args.tasks == 1 {
            "noop".to_owned()
        } else {
            format!("noop{t}")
        };
        if args.chain {
            // The upstream task has no context of its own: every downstream block waits for
            // the upstream blocks its read ROI overlaps, (2N + 1)^dims of them.
            let up = one(format!("{id}_up"), 0, None)?;
            tasks.push(one(format!("{id}_down"), n, Some(&up))?);
        } else {
            tasks.push(one(id, n, None)?);
        }
    }
    Ok(tasks)
}

fn bench_noop(args: &NoopArgs) -> Result<bool> {
    let tasks = noop_tasks(args)?;
    let start = Instant::now();
    let mut runner = Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .prefetch(usize::try_from(args.prefetch)?);
    if args.runner == RunnerKind::Processes {
        let mut workers = match args.launcher {
            LauncherKind::Local => WorkerOptions::new(),
            LauncherKind::Slurm => WorkerOptions::launcher(blockwise::launch::Batch::slurm()),
        }
        .log_dir(&args.log_dir);
        if args.tls || args.no_tls {
            workers = workers.tls(args.tls);
        }
        runner = runner.workers(workers);
    }
    if let Some(dir) = &args.run_dir {
        runner = runner.run_dir(dir).fresh(args.fresh);
    }
    if let Some(cpus) = args.budget_cpus {
        runner = runner.resources([("cpu", cpus)]);
    }
    let summary = runner.run(tasks).context("running the no-op tasks")?;
    let wall = start.elapsed().as_secs_f64();
    let completed = summary.completed();
    BenchReport {
        scenario: "noop",
        runner: args.runner.name(),
        workers: args.workers,
        blocks: if args.chain {
            2 * args.blocks
        } else {
            args.blocks
        },
        completed,
        skipped: args
            .run_dir
            .as_ref()
            .map(|_| summary.tasks().iter().map(|s| s.state.skipped).sum()),
        // The runner's default: on for cluster launchers, off for local workers on loopback.
        tls: (args.runner == RunnerKind::Processes)
            .then_some(args.tls || (!args.no_tls && args.launcher == LauncherKind::Slurm)),
        wall_s: wall,
        blocks_per_s: completed as f64 / wall.max(f64::EPSILON),
        peak_rss_mib: peak_rss_mib(),
        context: Some(args.context),
        chain: Some(args.chain),
        read_write_conflict: Some(args.context > 0 && !args.no_conflicts),
    }
    .print(args.json)?;
    Ok(summary.is_success())
}

#[cfg(not(feature = "zarr"))]
fn sample(_args: &SampleArgs) -> Result<bool> {
    bail!("this build has no zarr support (build with the `zarr` feature)")
}

#[cfg(not(feature = "zarr"))]
fn bench_zarr(_args: &ZarrArgs) -> Result<bool> {
    bail!("this build has no zarr support (build with the `zarr` feature)")
}

#[cfg(feature = "zarr")]
/// `path` absolute with symlinks resolved, also when it (or some parents) do not exist yet: its
/// longest existing prefix is canonicalised and the rest appended (`.` dropped, `..` popping).
fn resolve(path: &Path) -> Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("finding the current directory")?
            .join(path)
    };
    let comps: Vec<Component<'_>> = abs.components().collect();
    for k in (1..=comps.len()).rev() {
        let prefix: PathBuf = comps[..k].iter().collect();
        if let Ok(mut out) = prefix.canonicalize() {
            for c in &comps[k..] {
                match c {
                    Component::Normal(n) => out.push(n),
                    Component::ParentDir => {
                        out.pop();
                    }
                    _ => {}
                }
            }
            return Ok(out);
        }
    }
    Ok(abs)
}

#[cfg(feature = "zarr")]
/// Refuses an output that is the input, lies inside it or contains it.
fn check_separate(input: &Path, output: &Path) -> Result<()> {
    let (i, o) = (resolve(input)?, resolve(output)?);
    let same_file = {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&i), std::fs::metadata(&o)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    };
    if i == o || same_file {
        bail!(
            "--input {} and --output {} are the same store ({}): the output would overwrite its input",
            input.display(),
            output.display(),
            i.display()
        );
    }
    if o.starts_with(&i) {
        bail!(
            "--output {} is inside --input {}: writing it would change the input",
            o.display(),
            i.display()
        );
    }
    if i.starts_with(&o) {
        bail!(
            "--input {} is inside --output {}: writing the output could replace the input",
            i.display(),
            o.display()
        );
    }
    Ok(())
}

#[cfg(feature = "zarr")]
/// Free space on the file system that holds (or will hold) `path`.
struct FreeSpace {
    /// Where it was measured: the nearest existing ancestor of `path`.
    at: PathBuf,
    bytes: u64,
    /// The file system's allocation unit.
    block: u64,
    /// Free files, if the file system counts them.
    files: Option<u64>,
}

#[cfg(feature = "zarr")]
// statvfs field types differ between platforms (u32 on some): keep the conversions.
#[allow(clippy::useless_conversion)]
fn free_space(path: &Path) -> Result<FreeSpace> {
    let abs = resolve(path)?;
    let at = abs
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let st = nix::sys::statvfs::statvfs(&at)
        .with_context(|| format!("measuring the free space at {}", at.display()))?;
    let block = u64::from(st.fragment_size()).max(1);
    Ok(FreeSpace {
        bytes: u64::from(st.blocks_available()).saturating_mul(block),
        block,
        files: (st.files() > 0).then(|| u64::from(st.files_available())),
        at,
    })
}

#[cfg(feature = "zarr")]
/// Bytes and files taken by the zarr array at `dir` (0 if there is none).
fn array_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path, acc: &mut (u64, u64)) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            acc.0 = acc.0.saturating_add(m.blocks().saturating_mul(512));
            acc.1 = acc.1.saturating_add(1);
            if m.is_dir() {
                walk(&e.path(), acc);
            }
        }
    }
    let mut acc = (0, 0);
    if dir.join("zarr.json").is_file() || dir.join(".zarray").is_file() {
        walk(dir, &mut acc);
    }
    acc
}

#[cfg(feature = "zarr")]
/// The node directory of `dataset` in the store at `store`.
fn node_dir(store: &Path, dataset: &str) -> PathBuf {
    store.join(dataset.trim_matches('/'))
}

#[cfg(feature = "zarr")]
fn sample(args: &SampleArgs) -> Result<bool> {
    use blockwise::sample::{SampleSpec, bytes, check_dataset, write_zarr};
    use blockwise::store::{ArraySpec, Codec, DataType, ZarrFormat};
    check_dataset(&args.dataset)?;
    let size = args.size;
    if let Some(shard) = args.shard {
        if matches!(args.format, FormatArg::V2) {
            bail!("--shard {shard} needs --format v3 (zarr v2 has no shards)");
        }
        if !shard.is_multiple_of(args.chunk) {
            bail!(
                "--shard {shard} is not a multiple of --chunk {}",
                args.chunk
            );
        }
    }
    let mut chunk = args.chunk;
    if chunk > size {
        eprintln!(
            "note: --chunk {chunk} is larger than the volume (--size {size}); using chunks of {size}"
        );
        chunk = size;
    }
    let shard = args.shard.map(|s| {
        let cover = size.div_ceil(chunk) * chunk;
        if s > cover {
            eprintln!(
                "note: --shard {s} is larger than the volume (--size {size}); using shards of {cover}"
            );
            cover
        } else {
            s
        }
    });

    // Disk: every chunk file (or shard: its chunks plus a 16-byte index entry each and a
    // checksum) whole, rounded up to the file system's blocks, plus the metadata files.
    let free = free_space(&args.output)?;
    let grid = shard.unwrap_or(chunk);
    let per_axis = u128::from(size.div_ceil(grid));
    let files = per_axis.pow(3);
    let chunk_bytes = u128::from(chunk).pow(3);
    let file_bytes = match shard {
        None => chunk_bytes,
        Some(s) => {
            let inner = u128::from(s / chunk).pow(3);
            inner * (chunk_bytes + 16) + 4
        }
    };
    let block = u128::from(free.block);
    let raw = files * file_bytes.div_ceil(block) * block + 4 * block;
    let dirs = 3 + per_axis + per_axis * per_axis;
    let voxels = u128::from(size).pow(3);
    let to_u64 = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
    let (freed_bytes, freed_files) = if args.overwrite {
        array_usage(&node_dir(&args.output, &args.dataset))
    } else {
        (0, 0)
    };
    let available = free.bytes.saturating_add(freed_bytes);
    let compressed = !matches!(args.codec, CodecArg::None);
    let needed = if compressed { voxels / 2 } else { raw };
    if needed > u128::from(available) {
        bail!(
            "{}: a {size}³ volume in chunks of {chunk}{} needs {}{} but only {} is free at {}",
            args.output.display(),
            shard.map_or_else(String::new, |s| format!(" (shards of {s})")),
            bytes(to_u64(needed)),
            if compressed {
                " even compressed (half the raw size: the noise does not compress)"
            } else {
                ""
            },
            bytes(available),
            free.at.display()
        );
    }
    if compressed && raw > u128::from(available) {
        eprintln!(
            "warning: {}: the raw volume ({}) is larger than the free space ({}); the write fails unless {:?} compresses it enough",
            args.output.display(),
            bytes(to_u64(raw)),
            bytes(available),
            args.codec
        );
    }
    if let Some(free_files) = free.files {
        let needed = files + dirs;
        let available = u128::from(free_files) + u128::from(freed_files);
        if needed > available {
            bail!(
                "{}: {size}³ voxels in chunks of {grid} make {needed} files and directories, but the file system at {} has only {available} free inodes",
                args.output.display(),
                free.at.display()
            );
        }
    }

    let mut spec = SampleSpec::cube(size);
    spec.seed = args.seed;
    let mut options = ArraySpec::new(spec.roi(), [1, 1, 1], DataType::U8, vec![chunk; 3]);
    options.codec = match args.codec {
        CodecArg::None => Codec::None,
        CodecArg::Zstd => Codec::Zstd { level: 3 },
        CodecArg::Gzip => Codec::Gzip { level: 5 },
        CodecArg::BloscZstd => Codec::BloscZstd {
            level: 5,
            shuffle: true,
        },
        CodecArg::BloscLz4 => Codec::BloscLz4 {
            level: 5,
            shuffle: true,
        },
    };
    options.format = match args.format {
        FormatArg::V2 => ZarrFormat::V2,
        FormatArg::V3 => ZarrFormat::V3,
    };
    options.shard_shape = shard.map(|s| vec![s; 3]);
    options.overwrite = args.overwrite;
    let start = Instant::now();
    let array = write_zarr(
        &spec,
        &args.output,
        &args.dataset,
        &options,
        usize::try_from(args.workers)?,
    )
    .with_context(|| format!("writing the sample volume to {}", args.output.display()))?;
    outln!(
        "wrote {} ({}³ uint8, chunks {:?}) in {:.2} s",
        array.name(),
        size,
        array.write_chunk_shape(),
        start.elapsed().as_secs_f64()
    );
    Ok(true)
}

/// Bytes of the output `bench zarr` reads back at once for its checksum (at least one plane).
#[cfg(feature = "zarr")]
const CHECKSUM_SLAB: u128 = 64 << 20;

/// Output of `bench zarr`: the shared keys plus throughput and the output checksum.
#[cfg(feature = "zarr")]
#[derive(Serialize, Debug)]
struct ZarrReport {
    #[serde(flatten)]
    base: BenchReport,
    mb_per_s: f64,
    output_sha256: String,
}

/// The decoded-chunk cache of `bench zarr`'s input: blocks with context read each chunk up to
/// 27 times, so it is decoded once and kept for about three planes of chunks (the reuse
/// distance in block order), between 64 MiB and 1 GiB.
#[cfg(feature = "zarr")]
fn input_cache_bytes(shape: &[u64], chunk: &[u64]) -> u64 {
    let prod = |v: &mut dyn Iterator<Item = u128>| v.fold(1u128, u128::saturating_mul);
    let chunk_voxels = prod(&mut chunk.iter().map(|&c| u128::from(c)));
    let plane_chunks = prod(
        &mut shape
            .iter()
            .zip(chunk)
            .skip(1)
            .map(|(s, c)| u128::from(s.div_ceil(*c))),
    );
    u64::try_from(
        plane_chunks
            .saturating_mul(3)
            .saturating_mul(chunk_voxels)
            .clamp(64 << 20, 1 << 30),
    )
    .unwrap_or(1 << 30)
}

/// `bench zarr`'s input, checked to be a 3D uint8 array, through a chunk cache of
/// `cache` bytes (none for 0).
#[cfg(feature = "zarr")]
fn open_input(args: &ZarrArgs, cache: u64) -> Result<blockwise::store::ZarrArray> {
    use blockwise::store::ZarrArray;
    let input = if cache == 0 {
        ZarrArray::open(&args.input, &args.dataset)
    } else {
        ZarrArray::open_cached(&args.input, &args.dataset, cache)
    }
    .with_context(|| format!("opening the input {}", args.input.display()))?;
    if input.data_type() != blockwise::store::DataType::U8 || input.shape().len() != 3 {
        bail!(
            "{}: expected a 3D uint8 array, found {:?} {}",
            input.name(),
            input.shape(),
            input.data_type()
        );
    }
    Ok(input)
}

/// The box-mean task of `bench zarr` from `input` to `output`, built the same way in the
/// driver and in its worker processes.
#[cfg(feature = "zarr")]
fn box_mean_task(
    args: &ZarrArgs,
    input: &std::sync::Arc<blockwise::store::ZarrArray>,
    output: &std::sync::Arc<blockwise::store::ZarrArray>,
) -> Result<Task> {
    use blockwise::Fit;
    use blockwise::workload::box_mean_block;
    use std::sync::Arc;

    let ctx = if args.codec_only { 0 } else { args.context };
    let vs = input.voxel_size().clone();
    let chunk = input
        .write_chunk_shape()
        .iter()
        .map(|&c| i64::try_from(c))
        .collect::<Result<Vec<i64>, _>>()?;
    let ctx = i64::try_from(ctx)?;
    let codec_only = args.codec_only;
    let write = Roi::new([0i64; 3], blockwise::Coordinate::from(chunk) * &vs);
    let read = write.grow(&vs * ctx, &vs * ctx);
    let total = input.roi().grow(&vs * ctx, &vs * ctx);
    let (inp, out) = (Arc::clone(input), Arc::clone(output));
    let c = usize::try_from(ctx)?;
    Task::builder("box_mean", total, read, write)
        .read_write_conflict(false)
        .fit(Fit::Shrink)
        .writes(output.as_ref())
        .num_workers(usize::try_from(args.workers)?)
        .process(move |b: &Block| -> Result<(), BlockError> {
            let data = inp.read_with_fill::<u8>(b.read_roi(), 0)?;
            if codec_only {
                out.write(b.write_roi(), &data)?;
                return Ok(());
            }
            let w = b.write_roi();
            let ws = [0, 1, 2].map(|d| (w.shape()[d] / vs[d]) as usize);
            out.write(w, box_mean_block(data.view(), c, ws)?.view())?;
            Ok(())
        })
        .build()
        .context("building the box-mean task")
}

/// The task of a `bench zarr` worker process: the driver checked the arrays and created the
/// output; the worker opens both (the input through its own chunk cache).
#[cfg(feature = "zarr")]
fn zarr_worker_tasks(args: &ZarrArgs) -> Result<Vec<Task>> {
    use blockwise::store::ZarrArray;
    use std::sync::Arc;

    blockwise::sample::check_dataset(&args.dataset)?;
    let probe = open_input(args, 0)?;
    let cache = input_cache_bytes(probe.shape(), probe.write_chunk_shape());
    drop(probe);
    let input = Arc::new(open_input(args, cache)?);
    let output = Arc::new(
        ZarrArray::open(&args.output, &args.dataset)
            .with_context(|| format!("opening the output {}", args.output.display()))?,
    );
    Ok(vec![box_mean_task(args, &input, &output)?])
}

#[cfg(not(feature = "zarr"))]
fn zarr_worker_tasks(_args: &ZarrArgs) -> Result<Vec<Task>> {
    bail!("this build has no zarr support (build with the `zarr` feature)")
}

#[cfg(feature = "zarr")]
fn bench_zarr(args: &ZarrArgs) -> Result<bool> {
    use blockwise::store::ZarrArray;
    use sha2::Digest;
    use std::sync::Arc;

    use blockwise::sample::{LimitError, bytes, check_dataset, check_memory};

    check_dataset(&args.dataset)?;
    check_separate(&args.input, &args.output)?;
    let probe = open_input(args, 0)?;
    let (shape, chunk) = (probe.shape().to_vec(), probe.write_chunk_shape().to_vec());
    let ctx = if args.codec_only { 0 } else { args.context };
    // Memory, all in u128 (no overflow): per block in flight (one per chunk of the volume) the
    // read region (write region plus context, 1 byte per voxel), the filter's temporaries over
    // the write region plus one voxel per side (6 bytes per voxel: the core copy, two u16 sums,
    // the result) and a decoded and a re-encoded whole chunk (3 bytes per voxel); the chunk
    // cache; the checksum's slab of whole planes.
    let prod = |v: &mut dyn Iterator<Item = u128>| v.fold(1u128, u128::saturating_mul);
    let chunk_voxels = prod(&mut chunk.iter().map(|&c| u128::from(c)));
    let write = |grow: u64| {
        prod(
            &mut shape
                .iter()
                .zip(&chunk)
                .map(|(&s, &c)| u128::from(c.min(s).saturating_add(grow))),
        )
    };
    let (read_voxels, core_voxels) = (write(2 * ctx), write(2));
    let blocks = prod(
        &mut shape
            .iter()
            .zip(&chunk)
            .map(|(&s, &c)| u128::from(s.div_ceil(c))),
    );
    let in_flight = blocks.min(u128::from(args.workers));
    let cache = input_cache_bytes(&shape, &chunk);
    // Worker processes each keep a chunk cache of their own; the driver keeps none.
    let per_process = args.runner == RunnerKind::Processes;
    let caches = if per_process { in_flight } else { 1 };
    let plane_bytes = u128::from(shape[1]) * u128::from(shape[2]);
    let slab_planes = (CHECKSUM_SLAB / plane_bytes.max(1)).max(1);
    let needed = in_flight * (read_voxels + 6 * core_voxels + 3 * chunk_voxels)
        + caches * u128::from(cache)
        + slab_planes * plane_bytes;
    let what = || {
        format!(
            "{}: {in_flight} blocks at once (chunks {chunk:?}, {ctx} voxels of context), {} of {} chunk cache and a {} checksum slab",
            probe.name(),
            if per_process {
                format!("{caches} worker processes each with a")
            } else {
                "a".to_owned()
            },
            bytes(cache),
            bytes(u64::try_from(slab_planes * plane_bytes).unwrap_or(u64::MAX))
        )
    };
    let needed = u64::try_from(needed).map_err(|_| LimitError::Overflow { what: what() })?;
    check_memory(what, needed)?;

    // Disk: the output is stored like the input. If the input is stored uncompressed (it takes
    // at least one whole chunk per chunk), the output needs as much: refuse; otherwise warn.
    let (input_bytes_on_disk, _) = array_usage(&node_dir(&args.input, &args.dataset));
    let free = free_space(&args.output)?;
    let (freed, _) = array_usage(&node_dir(&args.output, &args.dataset));
    let available = free.bytes.saturating_add(freed);
    if input_bytes_on_disk > available {
        let message = format!(
            "{}: the output is stored like the input {}, which takes {}, but only {} is free at {}",
            args.output.display(),
            probe.name(),
            bytes(input_bytes_on_disk),
            bytes(available),
            free.at.display()
        );
        if u128::from(input_bytes_on_disk) >= blocks * chunk_voxels {
            bail!("{message} (the input is not compressed)");
        }
        eprintln!("warning: {message}; the run fails unless the output compresses better");
    }
    drop(probe);

    // Worker processes read the input themselves: the driver needs no chunk cache.
    let input = Arc::new(open_input(args, if per_process { 0 } else { cache })?);
    let output = Arc::new(
        ZarrArray::create_like(&args.output, &args.dataset, &input, true)
            .with_context(|| format!("creating the output {}", args.output.display()))?,
    );
    let task = box_mean_task(args, &input, &output)?;
    let blocks = task.num_blocks();
    let start = Instant::now();
    let mut runner = Runner::new().progress(Progress::Never).print_summary(false);
    if args.runner == RunnerKind::Processes {
        runner = runner.workers(WorkerOptions::new().log_dir(&args.log_dir));
    }
    let summary = runner.run([task]).context("running the box-mean task")?;
    let wall = start.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    if let Some(f) = summary.failures("box_mean").first() {
        eprintln!("block {} failed: {}", f.block_id, f.message);
    }
    // The checksum of the whole output in C order, read in slabs of whole planes.
    let mut hasher = sha2::Sha256::new();
    let (begin, vs0) = (output.roi().begin().clone(), output.voxel_size()[0]);
    let (mut z, planes) = (0i64, i64::try_from(output.shape()[0])?);
    let step = i64::try_from(slab_planes).unwrap_or(planes).max(1);
    while z < planes {
        let n = step.min(planes - z);
        let mut slab_begin = begin.clone();
        slab_begin[0] += z * vs0;
        let mut slab_shape = output.roi().shape().clone();
        slab_shape[0] = n * vs0;
        let slab = output
            .read::<u8>(&Roi::new(slab_begin, slab_shape))
            .context("reading the output back")?;
        let slab = slab.as_standard_layout();
        hasher.update(slab.as_slice().unwrap_or(&[]));
        z += n;
    }
    let sha: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let input_bytes: u64 = input.shape().iter().product();
    let completed = summary.completed();
    let report = ZarrReport {
        base: BenchReport {
            scenario: if args.codec_only {
                "zarr_codec"
            } else {
                "zarr"
            },
            runner: args.runner.name(),
            workers: args.workers,
            blocks,
            completed,
            skipped: None,
            // Local worker processes talk over loopback, unencrypted (the runner's default).
            tls: (args.runner == RunnerKind::Processes).then_some(false),
            wall_s: wall,
            blocks_per_s: completed as f64 / wall.max(f64::EPSILON),
            peak_rss_mib: peak,
            context: None,
            chain: None,
            read_write_conflict: None,
        },
        mb_per_s: input_bytes as f64 / 1e6 / wall.max(f64::EPSILON),
        output_sha256: sha,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        report.base.print(false)?;
        outln!(
            "input {:.1} MB at {:.1} MB/s; output {} sha256 {}",
            input_bytes as f64 / 1e6,
            report.mb_per_s,
            output.name(),
            report.output_sha256
        );
    }
    Ok(summary.is_success())
}

#[derive(serde::Serialize)]
struct PyramidReport {
    #[serde(flatten)]
    base: BenchReport,
    levels: u64,
    method: String,
    /// Megabytes of level 0 (the source) per second of wall time.
    mb_per_s: f64,
    /// Per level, the sha256 of its voxels in C order (empty with `--codec-only`).
    level_sha256: Vec<String>,
}

#[cfg(feature = "zarr")]
fn bench_pyramid(args: &PyramidBenchArgs) -> Result<bool> {
    use blockwise::ops::Pyramid;
    use blockwise::store::ZarrArray;
    use sha2::Digest;
    use std::sync::Arc;

    blockwise::sample::check_dataset(&args.dataset)?;
    check_separate(&args.input, &args.output)?;
    let source = ZarrArray::open(&args.input, &args.dataset)
        .with_context(|| format!("opening the input {}", args.input.display()))?;
    if source.data_type() != blockwise::store::DataType::U8 || source.shape().len() != 3 {
        bail!(
            "{}: expected a 3D uint8 array, found {:?} {}",
            source.name(),
            source.shape(),
            source.data_type()
        );
    }
    if args.output.exists() {
        std::fs::remove_dir_all(&args.output)
            .with_context(|| format!("removing the old output {}", args.output.display()))?;
    }
    let workers = usize::try_from(args.workers)?;
    let pyramid = Pyramid::builder(&source, &args.output)
        .levels(usize::try_from(args.levels)?)
        .factor(&args.factor)
        .method(args.method)
        .num_workers(workers);
    let runner = Runner::new().progress(Progress::Never).print_summary(false);
    let level_names: Vec<String> = (0..args.levels).map(|k| format!("s{k}")).collect();
    let (summary, wall, blocks) = if args.codec_only {
        // The levels above 0, computed first and held in memory (outside the timing).
        let first = pyramid
            .run(&runner)
            .context("computing the levels to encode")?;
        if !first.is_success() {
            bail!("computing the levels to encode failed: {first}");
        }
        let scratch = args.output.join("limit");
        let mut tasks = Vec::new();
        for (k, name) in level_names.iter().enumerate() {
            let level = ZarrArray::open(&args.output, name)?;
            let out = Arc::new(ZarrArray::create_like(&scratch, name, &level, true)?);
            let cs: Vec<i64> = level
                .write_chunk_shape()
                .iter()
                .map(|&c| i64::try_from(c))
                .collect::<Result<_, _>>()?;
            let block = Roi::new(
                [0i64; 3],
                blockwise::Coordinate::from(cs) * level.voxel_size(),
            );
            let builder = Task::builder(format!("limit-{name}"), level.roi(), block.clone(), block)
                .fit(blockwise::Fit::Shrink)
                .read_write_conflict(false)
                .num_workers(workers)
                .writes(out.as_ref());
            let task = if k == 0 {
                let src = Arc::new(ZarrArray::open(&args.input, &args.dataset)?);
                builder.process(move |b: &Block| -> Result<(), BlockError> {
                    out.copy_chunks_from(&src, b.write_roi())?;
                    drop(src.read::<u8>(b.write_roi())?);
                    Ok(())
                })
            } else {
                let data = Arc::new(level.read::<u8>(&level.roi())?);
                builder.process(move |b: &Block| -> Result<(), BlockError> {
                    out.write(b.write_roi(), data.view_roi(b.write_roi())?)?;
                    Ok(())
                })
            };
            tasks.push(task.build()?);
        }
        let blocks = tasks.iter().map(Task::num_blocks).sum::<u64>();
        let start = Instant::now();
        let summary = runner.run(tasks).context("running the limit")?;
        (summary, start.elapsed().as_secs_f64(), blocks)
    } else {
        let tasks = pyramid.tasks()?;
        let blocks = tasks.iter().map(Task::num_blocks).sum::<u64>();
        let start = Instant::now();
        let summary = runner
            .run(tasks.last().cloned())
            .context("running the pyramid")?;
        (summary, start.elapsed().as_secs_f64(), blocks)
    };
    let peak = peak_rss_mib();
    let mut level_sha256 = Vec::new();
    if !args.codec_only {
        for name in &level_names {
            let level = ZarrArray::open(&args.output, name)?;
            let data = level.read::<u8>(&level.roi())?;
            let data = data.as_standard_layout();
            level_sha256.push(
                sha2::Sha256::digest(data.as_slice().unwrap_or(&[]))
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            );
        }
    }
    let input_bytes: u64 = source.shape().iter().product();
    let completed = summary.completed();
    let report = PyramidReport {
        base: BenchReport {
            scenario: if args.codec_only {
                "pyramid_limit"
            } else {
                "pyramid"
            },
            runner: RunnerKind::Threads.name(),
            workers: args.workers,
            blocks,
            completed,
            skipped: None,
            tls: None,
            wall_s: wall,
            blocks_per_s: completed as f64 / wall.max(f64::EPSILON),
            peak_rss_mib: peak,
            context: None,
            chain: None,
            read_write_conflict: None,
        },
        levels: args.levels,
        method: args.method.to_string(),
        mb_per_s: input_bytes as f64 / 1e6 / wall.max(f64::EPSILON),
        level_sha256,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        report.base.print(false)?;
        outln!(
            "level 0: {:.1} MB at {:.1} MB/s; levels {:?}",
            input_bytes as f64 / 1e6,
            report.mb_per_s,
            report.level_sha256
        );
    }
    Ok(summary.is_success())
}

#[cfg(not(feature = "zarr"))]
fn bench_pyramid(_args: &PyramidBenchArgs) -> Result<bool> {
    bail!("this build has no zarr support (build with the `zarr` feature)")
}

/// A worker process of a bench (started by `--runner processes` with `BLOCKWISE_CONTEXT`):
/// builds the bench's tasks the way the driver does, minus the driver's checks and side
/// effects (creating the output), serves its task's blocks and exits: 0 when done, 1 with the
/// error on stderr (the worker's log, which the scheduler reports).
fn serve_worker(cli: &Cli) -> ExitCode {
    let tasks = match &cli.command {
        Command::Bench { scenario } => match scenario {
            Scenario::Noop(args) => noop_tasks(args),
            Scenario::Zarr(args) => zarr_worker_tasks(args),
            Scenario::Pyramid(_) => Err(anyhow::anyhow!("bench pyramid runs no worker processes")),
            Scenario::Markers(_) => Err(anyhow::anyhow!("bench markers runs no worker processes")),
        },
        Command::Sample(_) | Command::Status(_) | Command::Pyramid(_) => {
            Err(anyhow::anyhow!("this subcommand runs no worker processes"))
        }
    };
    let served = tasks
        .context("blockwise worker: building the tasks")
        .and_then(|tasks| Ok(blockwise::serve_worker(&tasks)?));
    match served {
        Ok(blocks) => {
            tracing::info!(blocks, "worker done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<bool> {
    match &cli.command {
        Command::Bench { scenario } => match scenario {
            Scenario::Noop(args) => bench_noop(args),
            Scenario::Zarr(args) => bench_zarr(args),
            Scenario::Pyramid(args) => bench_pyramid(args),
            Scenario::Markers(args) => bench_markers(args),
        },
        Command::Sample(args) => sample(args),
        Command::Status(args) => status(args),
        Command::Pyramid(args) => pyramid(args),
    }
}

fn bench_markers(args: &MarkersBenchArgs) -> Result<bool> {
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("blockwise-bench-markers-{}", std::process::id()))
    });
    if dir.exists() {
        bail!(
            "{} exists; bench markers creates a new run directory",
            dir.display()
        );
    }
    let result = blockwise::journal::bench_markers(&dir, args.blocks)
        .map_err(anyhow::Error::from)
        .and_then(|bench| {
            let rerun = (args.downstream > 0)
                .then(|| rerun_downstream(&dir, args.blocks, args.downstream))
                .transpose()?;
            Ok(MarkersOut { bench, rerun })
        });
    if !args.keep
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        eprintln!("warning: cannot remove {}: {e}", dir.display());
    }
    outln!("{}", serde_json::to_string(&result?)?);
    Ok(true)
}

/// The JSON line of `bench markers`: the markers' figures, then the rerun's.
#[derive(Serialize)]
struct MarkersOut {
    #[serde(flatten)]
    bench: blockwise::journal::MarkerBench,
    #[serde(flatten)]
    rerun: Option<DownstreamRerun>,
}

/// What [`rerun_downstream`] measured.
#[derive(Serialize)]
struct DownstreamRerun {
    /// Blocks of the downstream task.
    downstream_blocks: u64,
    /// Seconds from the start of the rerun to its first downstream block.
    downstream_start_s: f64,
    /// Seconds of the whole rerun (the downstream task included).
    rerun_s: f64,
}

/// Reruns `bench markers`' finished run directory with a downstream task of `blocks`
/// one-voxel blocks that read the finished task's: times the start of the downstream task and
/// checks that the finished task was skipped whole.
fn rerun_downstream(dir: &Path, upstream_blocks: u64, blocks: u64) -> Result<DownstreamRerun> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, OnceLock};
    let up_calls = Arc::new(AtomicU64::new(0));
    let calls = Arc::clone(&up_calls);
    let upstream = blockwise::journal::marker_bench_task(upstream_blocks)
        .process(move |_: &Block| {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .build()?;
    let first = Arc::new(OnceLock::new());
    let first_block = Arc::clone(&first);
    let n = i64::try_from(blocks.min(upstream_blocks))?;
    let downstream = Task::builder(
        "downstream",
        Roi::new([0], [n]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .upstream(&upstream)
    .num_workers(2)
    .process(move |_: &Block| {
        first_block.get_or_init(Instant::now);
        Ok(())
    })
    .build()?;
    let start = Instant::now();
    let summary = Runner::new()
        .run_dir(dir)
        .progress(Progress::Never)
        .print_summary(false)
        .run([upstream, downstream])?;
    let rerun_s = start.elapsed().as_secs_f64();
    let skipped = summary.task("markers").map_or(0, |t| t.skipped);
    let done = summary.task("downstream").map_or(0, |t| t.completed);
    let calls = up_calls.load(Ordering::Relaxed);
    if !summary.is_success() || skipped != upstream_blocks || done != n as u64 || calls != 0 {
        bail!(
            "the rerun did not skip the finished task and run the downstream one: {skipped} of {upstream_blocks} skipped, {calls} processed again, {done} of {n} downstream blocks done\n{summary}"
        );
    }
    let started = first
        .get()
        .map(|t| t.duration_since(start).as_secs_f64())
        .context("no downstream block ran")?;
    Ok(DownstreamRerun {
        downstream_blocks: n as u64,
        downstream_start_s: started,
        rerun_s,
    })
}

fn status(args: &StatusArgs) -> Result<bool> {
    let status = blockwise::journal::status(&args.run_dir)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        out!("{status}");
    }
    Ok(true)
}

#[derive(Args, Debug)]
struct PyramidArgs {
    /// The source: a zarr array (its directory, e.g. `sample.zarr/raw`) or an OME-Zarr image
    /// (its level 0).
    input: std::path::PathBuf,
    /// The output zarr group, an OME-Zarr image; levels go to `OUT/s0`, `OUT/s1`, ….
    output: std::path::PathBuf,
    /// The number of levels, `s0` included.
    #[arg(long, default_value_t = 4)]
    levels: usize,
    /// The factor: one number for every axis (`2`) or one per axis (`1,2,2`).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    factor: Vec<u64>,
    /// How windows are reduced: mean (integers: rounded half to even), mode (ties to the
    /// smallest value), max, min or first_non_zero.
    #[arg(long, default_value = "mean")]
    method: blockwise::ops::Downsample,
    /// Worker threads, all levels together.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// A run directory: done-markers, so a rerun resumes.
    #[arg(long)]
    run_dir: Option<std::path::PathBuf>,
}

#[cfg(feature = "zarr")]
fn pyramid(args: &PyramidArgs) -> Result<bool> {
    // A zarr array, or an OME-Zarr image (its level 0).
    let source = match blockwise::store::ZarrArray::open(&args.input, "") {
        Ok(a) => a,
        Err(as_array) => match blockwise::store::OmeZarr::open(&args.input) {
            Ok(image) => image
                .level(0)
                .with_context(|| format!("opening level 0 of {}", args.input.display()))?,
            Err(as_image) => bail!(
                "{} is neither a zarr array ({as_array}) nor an OME-Zarr image ({as_image})",
                args.input.display()
            ),
        },
    };
    let mut runner = Runner::new();
    if let Some(dir) = &args.run_dir {
        runner = runner.run_dir(dir);
    }
    let summary = blockwise::ops::Pyramid::builder(&source, &args.output)
        .levels(args.levels)
        .factor(&args.factor)
        .method(args.method)
        .num_workers(args.workers)
        .run(&runner)?;
    Ok(summary.is_success())
}

#[cfg(not(feature = "zarr"))]
fn pyramid(_args: &PyramidArgs) -> Result<bool> {
    bail!("this build has no zarr support (build with the `zarr` feature)")
}

/// Installs the log subscriber: stderr (worker processes: their `.err` log file), filtered by
/// `RUST_LOG` if set, else warnings plus one level per `-v`; colours only on a terminal.
fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    let level = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.verbose);
    if blockwise::is_worker() {
        return serve_worker(&cli);
    }
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command, Scenario, grid_shape, noop_tasks};
    use clap::Parser;
    use proptest::prelude::*;

    proptest! {
        /// `bench noop`'s tasks keep `--blocks` blocks per task whatever the context, the
        /// dimensions, the split and the chaining; the write ROIs tile the same grid; the
        /// context is in the read ROI, with conflicts exactly when asked for.
        #[test]
        fn noop_tasks_keep_the_block_count(
            per_task in 1u64..300,
            tasks in 1u64..4,
            dims in 1u64..=4,
            context in 0u64..=3,
            chain: bool,
            no_conflicts: bool,
        ) {
            let blocks = (per_task * tasks).to_string();
            let (tasks_s, dims_s, context_s) =
                (tasks.to_string(), dims.to_string(), context.to_string());
            let mut argv = vec![
                "blockwise", "bench", "noop", "--blocks", &blocks, "--tasks", &tasks_s,
                "--dims", &dims_s, "--context", &context_s,
            ];
            if chain {
                argv.push("--chain");
            }
            if no_conflicts {
                argv.push("--no-conflicts");
            }
            let cli = Cli::try_parse_from(argv).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let Command::Bench { scenario: Scenario::Noop(args) } = &cli.command else {
                return Err(TestCaseError::fail("not bench noop"));
            };
            let built = noop_tasks(args).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
            prop_assert_eq!(built.len() as u64, tasks);
            let n = i64::try_from(context).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for t in &built {
                prop_assert_eq!(t.num_blocks(), per_task);
                prop_assert_eq!(t.read_roi().begin()[0], -n);
                prop_assert_eq!(t.read_roi().shape()[0], 1 + 2 * n);
                prop_assert_eq!(t.total_write_roi().begin()[0], 0);
                prop_assert_eq!(t.read_write_conflict(), context > 0 && !no_conflicts);
                let up = t.upstream_tasks();
                prop_assert_eq!(up.len(), usize::from(chain));
                if let Some(u) = up.first() {
                    prop_assert!(t.task_id().ends_with("_down"));
                    prop_assert_eq!(format!("{}_down", u.task_id().trim_end_matches("_up")), t.task_id());
                    prop_assert_eq!(u.num_blocks(), per_task);
                    prop_assert_eq!(u.read_roi(), u.write_roi());
                    prop_assert!(!u.read_write_conflict());
                    prop_assert_eq!(u.total_write_roi(), t.total_write_roi());
                }
            }
        }
    }

    #[test]
    fn grid_shapes_multiply_to_n() {
        for (n, dims) in [
            (1, 3),
            (1000, 3),
            (1_000_000, 3),
            (97, 2),
            (100_000_000, 3),
            (12, 4),
        ] {
            let s = grid_shape(n, dims);
            assert_eq!(s.len(), dims);
            assert_eq!(s.iter().product::<i64>(), n as i64, "{n} {dims}");
        }
        assert_eq!(grid_shape(1_000_000, 3), vec![100, 100, 100]);
    }
}
