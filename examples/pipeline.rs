//! The main example: a chained two-task pipeline on a zarr volume.
//!
//! ```text
//! cargo run --release --example pipeline [-- --workdir DIR --size N --workers W --fresh]
//! ```
//!
//! 1. If `DIR/sample.zarr` is missing, writes a deterministic synthetic volume there
//!    (`N`³ uint8, smooth blobs plus noise, 64³ chunks, blosc-zstd; see `blockwise::sample`).
//!    It is written under another name and renamed when complete, so an interrupted
//!    generation is never mistaken for a volume.
//! 2. Task `smooth`: the 3×3×3 box mean of every 64³ block, reading 8 voxels of context around
//!    it (zeros outside the volume), written to `DIR/smoothed.zarr`.
//! 3. Task `threshold`: thresholds each smoothed block (> 100), writes the mask to
//!    `DIR/mask.zarr` and counts foreground voxels; the counts are reduced to a total. Each
//!    `threshold` block waits for the `smooth` blocks it reads. The total is counted from the
//!    mask at the end, so it is right however many runs the blocks took.
//!
//! The run directory `DIR/run` records finished blocks: running the example again after an
//! interruption (Ctrl-C, a crash, a killed machine) finishes the job without redoing finished
//! blocks, and running it after it finished does nothing but count. `--fresh` starts over
//! (new outputs, markers discarded); `blockwise status DIR/run` shows where a run stands.
//!
//! Progress bars and daisy's execution summary are shown on a terminal.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use blockwise::sample::{SampleSpec, write_zarr};
use blockwise::store::{ArraySpec, DataType, ZarrArray};
use blockwise::{Roi, Runner};

use common::{BLOCK, THRESHOLD, init_logging};

struct Options {
    workdir: PathBuf,
    size: u64,
    workers: usize,
    fresh: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        workdir: PathBuf::from("blockwise-example"),
        size: 256,
        workers: 2,
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
                    .map_err(|e| format!("--size: {e}"))?;
            }
            "--workers" => {
                o.workers = value("--workers")?
                    .parse()
                    .map_err(|e| format!("--workers: {e}"))?;
            }
            "--fresh" => o.fresh = true,
            "-h" | "--help" => {
                println!("usage: pipeline [--workdir DIR] [--size N] [--workers W] [--fresh]");
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
    std::fs::create_dir_all(&opts.workdir)?;
    let raw_path = opts.workdir.join("sample.zarr");
    let raw = match ZarrArray::open(&raw_path, "raw") {
        Ok(a) => a,
        Err(_) => {
            println!(
                "generating a {}³ sample volume in {}",
                opts.size,
                raw_path.display()
            );
            let spec = SampleSpec::cube(opts.size);
            let mut options =
                ArraySpec::new(spec.roi(), [1, 1, 1], DataType::U8, vec![BLOCK as u64; 3]);
            options.overwrite = true;
            let partial = opts.workdir.join("sample.zarr.partial");
            write_zarr(&spec, &partial, "raw", &options, opts.workers)?;
            std::fs::rename(&partial, &raw_path)?;
            ZarrArray::open(&raw_path, "raw")?
        }
    };
    // Resume when an earlier run left its run directory and outputs; otherwise start over.
    let run_dir = opts.workdir.join("run");
    let (smoothed_path, mask_path) = (
        opts.workdir.join("smoothed.zarr"),
        opts.workdir.join("mask.zarr"),
    );
    let existing = common::existing_outputs(opts.fresh, &run_dir, &smoothed_path, &mask_path, &raw);
    let fresh = existing.is_none();
    let (smoothed, mask) = match existing {
        Some(outputs) => {
            println!("resuming the run recorded in {}", run_dir.display());
            outputs
        }
        None => common::create_outputs(&smoothed_path, &mask_path, &raw)?,
    };
    let (raw, smoothed, mask) = (Arc::new(raw), Arc::new(smoothed), Arc::new(mask));
    let threshold = common::pipeline(&raw, &smoothed, &mask, opts.workers)?;

    let start = Instant::now();
    let summary = Runner::new()
        .run_dir(&run_dir)
        .fresh(fresh)
        .run([threshold])?;
    let elapsed = start.elapsed();
    // Count the foreground from the mask, one slab of blocks at a time.
    let mut fg = 0u64;
    let roi = mask.roi();
    let (begin, end) = (roi.begin()[0], roi.end()[0]);
    let mut z = begin;
    while z < end {
        let dz = BLOCK.min(end - z);
        let mut off = roi.offset().clone();
        let mut shape = roi.shape().clone();
        off[0] = z;
        shape[0] = dz;
        fg += mask
            .read::<u8>(&Roi::new(off, shape))?
            .iter()
            .map(|&v| u64::from(v))
            .sum::<u64>();
        z += dz;
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        print!("{summary}");
    }
    println!();
    println!("input:    {}", raw.name());
    println!("smoothed: {}", smoothed.name());
    println!("mask:     {}", mask.name());
    let total: u64 = raw.shape().iter().product();
    println!(
        "foreground voxels (smoothed > {THRESHOLD}): {fg} of {total} ({:.2}%), in {:.2?}",
        100.0 * fg as f64 / total as f64,
        elapsed
    );
    if !summary.is_success() {
        std::process::exit(1);
    }
    Ok(())
}
