//! The `blockwise` command line: benchmarks, sample data and the status of a run directory.
//!
//! Exit codes: 0 success, 1 some blocks failed, 2 error.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use blockwise::{Block, BlockError, Progress, Roi, Runner, Task};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "blockwise",
    version,
    about = "Process huge n-dimensional volumes block by block"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a benchmark scenario and report throughput, wall time and peak memory.
    Bench {
        #[command(subcommand)]
        scenario: Scenario,
    },
    /// Write a deterministic synthetic 3D uint8 volume (smooth blobs plus noise) as zarr.
    Sample(SampleArgs),
    /// Show what a run directory records: per task the blocks done, failed and never run, the
    /// failed blocks with their last error, and when the run last made progress.
    Status(StatusArgs),
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
    /// The array's path inside the store.
    #[arg(long, default_value = "raw")]
    dataset: String,
    /// Edge length of the cubic volume in voxels.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65536))]
    size: u64,
    /// Edge length of the cubic chunks in voxels.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    chunk: u64,
    /// Edge length of cubic shards in voxels (zarr v3 only; a multiple of the chunk).
    #[arg(long)]
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
    /// No-op blocks (read ROI = write ROI, no conflicts) in one task: measures scheduling and
    /// hand-off overhead end to end.
    Noop(NoopArgs),
    /// The 3×3×3 box mean of a 3D uint8 zarr volume, one input chunk per block, with context
    /// (zeros outside the volume), written to a new array with the input's chunks and codec.
    Zarr(ZarrArgs),
}

#[derive(Args, Debug)]
struct ZarrArgs {
    /// The input zarr store.
    #[arg(long)]
    input: std::path::PathBuf,
    /// The output zarr store (its array is replaced if it exists).
    #[arg(long)]
    output: std::path::PathBuf,
    /// The array's path inside both stores.
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
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct NoopArgs {
    /// Number of blocks.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
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

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LauncherKind {
    /// Child processes of the scheduler.
    Local,
    /// SLURM jobs (`sbatch`), for a cluster reachable from here.
    Slurm,
}

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
}

impl BenchReport {
    fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
        } else {
            println!(
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

fn bench_noop(args: &NoopArgs) -> Result<bool> {
    let dims = usize::try_from(args.dims)?;
    let shape = grid_shape(args.blocks, dims);
    let ones = vec![1i64; dims];
    let zeros = vec![0i64; dims];
    let task = Task::builder(
        "noop",
        Roi::new(zeros.clone(), shape),
        Roi::new(zeros.clone(), ones.clone()),
        Roi::new(zeros, ones),
    )
    .read_write_conflict(false)
    .process(|_: &Block| Ok::<(), BlockError>(()))
    .num_workers(usize::try_from(args.workers)?)
    .build()
    .context("building the no-op task")?;
    if task.num_blocks() != args.blocks {
        bail!(
            "internal: {} blocks instead of {}",
            task.num_blocks(),
            args.blocks
        );
    }
    let start = Instant::now();
    let mut runner = Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .prefetch(usize::try_from(args.prefetch)?);
    if args.runner == RunnerKind::Processes {
        runner = match args.launcher {
            LauncherKind::Local => runner.processes(),
            LauncherKind::Slurm => runner.launcher(blockwise::launch::Batch::slurm()),
        }
        .log_dir(&args.log_dir);
        if args.tls || args.no_tls {
            runner = runner.tls(args.tls);
        }
    }
    if let Some(dir) = &args.run_dir {
        runner = runner.run_dir(dir).fresh(args.fresh);
    }
    let summary = runner.run([task]).context("running the no-op task")?;
    let wall = start.elapsed().as_secs_f64();
    let completed = summary.completed();
    BenchReport {
        scenario: "noop",
        runner: match args.runner {
            RunnerKind::Threads => "threads",
            RunnerKind::Processes => "processes",
        },
        workers: args.workers,
        blocks: args.blocks,
        completed,
        skipped: args
            .run_dir
            .as_ref()
            .map(|_| summary.task("noop").map_or(0, |s| s.skipped)),
        // The runner's default: on for cluster launchers, off for local workers on loopback.
        tls: (args.runner == RunnerKind::Processes)
            .then_some(args.tls || (!args.no_tls && args.launcher == LauncherKind::Slurm)),
        wall_s: wall,
        blocks_per_s: completed as f64 / wall.max(f64::EPSILON),
        peak_rss_mib: peak_rss_mib(),
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
fn sample(args: &SampleArgs) -> Result<bool> {
    use blockwise::sample::{SampleSpec, write_zarr};
    use blockwise::store::{ArraySpec, Codec, DataType, ZarrFormat};
    let mut spec = SampleSpec::cube(args.size);
    spec.seed = args.seed;
    let mut options = ArraySpec::new(spec.roi(), [1, 1, 1], DataType::U8, vec![args.chunk; 3]);
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
    options.shard_shape = args.shard.map(|s| vec![s; 3]);
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
    println!(
        "wrote {} ({}³ uint8, chunks {:?}) in {:.2} s",
        array.name(),
        args.size,
        array.write_chunk_shape(),
        start.elapsed().as_secs_f64()
    );
    Ok(true)
}

/// Output of `bench zarr`: the shared keys plus throughput and the output checksum.
#[cfg(feature = "zarr")]
#[derive(Serialize, Debug)]
struct ZarrReport {
    #[serde(flatten)]
    base: BenchReport,
    mb_per_s: f64,
    output_sha256: String,
}

#[cfg(feature = "zarr")]
fn bench_zarr(args: &ZarrArgs) -> Result<bool> {
    use blockwise::Fit;
    use blockwise::store::ZarrArray;
    use blockwise::workload::box_mean_block;
    use sha2::Digest;
    use std::sync::Arc;

    let probe = ZarrArray::open(&args.input, &args.dataset)
        .with_context(|| format!("opening the input {}", args.input.display()))?;
    // Blocks with context read each chunk up to 27 times: decode it once, keeping about three
    // planes of chunks (the reuse distance in block order), never more than 1 GiB.
    let (shape, chunk) = (probe.shape().to_vec(), probe.write_chunk_shape().to_vec());
    let chunk_bytes: u64 = chunk.iter().product();
    let plane: u64 = shape
        .iter()
        .zip(&chunk)
        .skip(1)
        .map(|(s, c)| s.div_ceil(*c))
        .product();
    let cache = (3 * plane * chunk_bytes).clamp(64 << 20, 1 << 30);
    let input = Arc::new(
        ZarrArray::open_cached(&args.input, &args.dataset, cache)
            .with_context(|| format!("opening the input {}", args.input.display()))?,
    );
    if input.data_type() != blockwise::store::DataType::U8 || input.shape().len() != 3 {
        bail!(
            "{}: expected a 3D uint8 array, found {:?} {}",
            input.name(),
            input.shape(),
            input.data_type()
        );
    }
    let output = Arc::new(
        ZarrArray::create_like(&args.output, &args.dataset, &input, true)
            .with_context(|| format!("creating the output {}", args.output.display()))?,
    );
    let vs = input.voxel_size().clone();
    let chunk: Vec<i64> = input
        .write_chunk_shape()
        .iter()
        .map(|&c| c as i64)
        .collect();
    let ctx = if args.codec_only {
        0
    } else {
        i64::try_from(args.context)?
    };
    let codec_only = args.codec_only;
    let write = Roi::new([0i64; 3], blockwise::Coordinate::from(chunk.clone()) * &vs);
    let read = write.grow(&vs * ctx, &vs * ctx);
    let total = input.roi().grow(&vs * ctx, &vs * ctx);
    let (inp, out) = (Arc::clone(&input), Arc::clone(&output));
    let c = usize::try_from(ctx)?;
    let task = Task::builder("box_mean", total, read, write)
        .read_write_conflict(false)
        .fit(Fit::Shrink)
        .writes(output.as_ref())
        .num_workers(usize::try_from(args.workers)?)
        .process(move |b: &Block| -> Result<(), BlockError> {
            let data = inp.read_with_fill::<u8>(b.read_roi(), 0)?;
            if codec_only {
                out.write(b.write_roi(), data.view())?;
                return Ok(());
            }
            let w = b.write_roi();
            let ws = [0, 1, 2].map(|d| (w.shape()[d] / vs[d]) as usize);
            out.write(w, box_mean_block(data.view(), c, ws)?.view())?;
            Ok(())
        })
        .build()
        .context("building the box-mean task")?;
    let blocks = task.num_blocks();
    let start = Instant::now();
    let summary = Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .run([task])
        .context("running the box-mean task")?;
    let wall = start.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    if let Some(f) = summary.failures("box_mean").first() {
        eprintln!("block {} failed: {}", f.block_id, f.message);
    }
    let all = output
        .read::<u8>(&output.roi())
        .context("reading the output back")?;
    let bytes = all.as_standard_layout();
    let digest = sha2::Sha256::digest(bytes.as_slice().unwrap_or(&[]));
    let sha: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let input_bytes: u64 = input.shape().iter().product();
    let completed = summary.completed();
    let report = ZarrReport {
        base: BenchReport {
            scenario: if codec_only { "zarr_codec" } else { "zarr" },
            runner: "threads",
            workers: args.workers,
            blocks,
            completed,
            skipped: None,
            tls: None,
            wall_s: wall,
            blocks_per_s: completed as f64 / wall.max(f64::EPSILON),
            peak_rss_mib: peak,
        },
        mb_per_s: input_bytes as f64 / 1e6 / wall.max(f64::EPSILON),
        output_sha256: sha,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.base.print(false)?;
        println!(
            "input {:.1} MB at {:.1} MB/s; output {} sha256 {}",
            input_bytes as f64 / 1e6,
            report.mb_per_s,
            output.name(),
            report.output_sha256
        );
    }
    Ok(summary.is_success())
}

fn run(cli: &Cli) -> Result<bool> {
    match &cli.command {
        Command::Bench { scenario } => match scenario {
            Scenario::Noop(args) => bench_noop(args),
            Scenario::Zarr(args) => bench_zarr(args),
        },
        Command::Sample(args) => sample(args),
        Command::Status(args) => status(args),
    }
}

fn status(args: &StatusArgs) -> Result<bool> {
    let status = blockwise::journal::status(&args.run_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(true)
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
    use super::grid_shape;

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
