//! The pipeline example in worker processes: on this machine, or as SLURM jobs.
//!
//! ```text
//! cargo run --release --example cluster [-- --launcher local|slurm --workers W --workdir DIR --size N --fresh]
//! ```
//!
//! The same two chained tasks as `examples/pipeline.rs` (3×3×3 box mean with context, then a
//! threshold; both build them with `examples/common/mod.rs`), but every block runs in a worker
//! process that connects back to this program over TCP. Workers are this program, re-executed:
//! `blockwise::is_worker()` tells the two apart, so only the driver creates the output arrays; the
//! driver then counts the foreground voxels from the mask on disk. With `--launcher slurm`, workers
//! are `sbatch` jobs (1 core, 1 GiB, 10 minutes each); their logs and scripts are in
//! `DIR/logs/<task>/`, their job ids in `DIR/logs/jobs.txt`. `--launcher local` needs no cluster.
//! Finished blocks are recorded in `DIR/run` (as in the pipeline example, whose outputs and markers
//! it shares when given the same directory): a rerun resumes, `--fresh` starts over.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockwise::launch::{Batch, Resources};
use blockwise::sample::{SampleSpec, write_zarr};
use blockwise::store::{ArraySpec, DataType, ZarrArray};
use blockwise::{Runner, WorkerOptions, is_worker};

use common::{BLOCK, THRESHOLD, init_logging};

struct Options {
    workdir: PathBuf,
    size: u64,
    workers: usize,
    slurm: bool,
    fresh: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        workdir: PathBuf::from("blockwise-example"),
        size: 256,
        workers: 2,
        slurm: false,
        fresh: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--workdir" => o.workdir = PathBuf::from(value("--workdir")?),
            "--size" => {
                o.size = value("--size")?
                    .parse()
                    .map_err(|e| format!("--size: {e}"))?
            }
            "--workers" => {
                o.workers = value("--workers")?
                    .parse()
                    .map_err(|e| format!("--workers: {e}"))?;
            }
            "--fresh" => o.fresh = true,
            "--launcher" => match value("--launcher")?.as_str() {
                "local" => o.slurm = false,
                "slurm" => o.slurm = true,
                other => return Err(format!("--launcher: {other:?} is not local or slurm")),
            },
            "-h" | "--help" => {
                println!(
                    "usage: cluster [--launcher local|slurm] [--workers W] [--workdir DIR] [--size N] [--fresh]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.size == 0 || o.workers == 0 {
        return Err("--size and --workers must be positive".into());
    }
    Ok(o)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let opts = parse_args()?;
    let workdir = std::path::absolute(&opts.workdir)?;
    let raw_path = workdir.join("sample.zarr");
    let (smoothed_path, mask_path) = (workdir.join("smoothed.zarr"), workdir.join("mask.zarr"));
    let run_dir = workdir.join("run");
    let mut fresh = false;
    // One-time set-up in the driver only; workers open what it made.
    let (raw, smoothed, mask) = if is_worker() {
        (
            ZarrArray::open(&raw_path, "raw")?,
            ZarrArray::open(&smoothed_path, "smoothed")?,
            ZarrArray::open(&mask_path, "mask")?,
        )
    } else {
        std::fs::create_dir_all(&workdir)?;
        let raw = match ZarrArray::open(&raw_path, "raw") {
            Ok(a) => a,
            Err(_) => {
                println!(
                    "generating a {}³ sample volume in {}",
                    opts.size,
                    raw_path.display()
                );
                let spec = SampleSpec::cube(opts.size);
                let options =
                    ArraySpec::new(spec.roi(), [1, 1, 1], DataType::U8, vec![BLOCK as u64; 3]);
                write_zarr(&spec, &raw_path, "raw", &options, opts.workers)?
            }
        };
        // Resume when an earlier run left its run directory and outputs; otherwise start over.
        match common::existing_outputs(opts.fresh, &run_dir, &smoothed_path, &mask_path, &raw) {
            Some((smoothed, mask)) => {
                println!("resuming the run recorded in {}", run_dir.display());
                (raw, smoothed, mask)
            }
            None => {
                fresh = true;
                let (smoothed, mask) = common::create_outputs(&smoothed_path, &mask_path, &raw)?;
                (raw, smoothed, mask)
            }
        }
    };
    let (raw, smoothed, mask) = (Arc::new(raw), Arc::new(smoothed), Arc::new(mask));
    let threshold = common::pipeline(&raw, &smoothed, &mask, opts.workers)?;

    let runner = Runner::new().run_dir(&run_dir).fresh(fresh);
    let workers = if opts.slurm {
        let mut resources = Resources::default();
        resources.cores = Some(1);
        resources.memory = Some(1 << 30);
        resources.walltime = Some(Duration::from_secs(600));
        WorkerOptions::launcher(Batch::slurm().resources(resources))
    } else {
        WorkerOptions::new()
    };
    let runner = runner.workers(workers.log_dir(workdir.join("logs")));
    let start = Instant::now();
    // In a worker process this call serves blocks and exits.
    let summary = runner.run([threshold])?;
    let elapsed = start.elapsed();
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        print!("{summary}");
    }
    let fg: u64 = mask
        .read::<u8>(&mask.roi())?
        .iter()
        .map(|&v| u64::from(v))
        .sum();
    let total: u64 = raw.shape().iter().product();
    println!(
        "foreground voxels (smoothed > {THRESHOLD}): {fg} of {total} ({:.2}%), in {elapsed:.2?} with {} worker processes per task ({})",
        100.0 * fg as f64 / total as f64,
        opts.workers,
        if opts.slurm { "SLURM jobs" } else { "local" },
    );
    if !summary.is_success() {
        std::process::exit(1);
    }
    Ok(())
}
