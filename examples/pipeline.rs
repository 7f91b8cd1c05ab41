//! The main example: a chained two-task pipeline on a zarr volume.
//!
//! ```text
//! cargo run --release --example pipeline [-- --workdir DIR --size N --workers W]
//! ```
//!
//! 1. If `DIR/sample.zarr` is missing, writes a deterministic synthetic volume there
//!    (`N`³ uint8, smooth blobs plus noise, 64³ chunks, blosc-zstd; see `blockwise::sample`).
//! 2. Task `smooth`: the 3×3×3 box mean of every 64³ block, reading 8 voxels of context around
//!    it (zeros outside the volume), written to `DIR/smoothed.zarr`.
//! 3. Task `threshold`: thresholds each smoothed block (> 100), writes the mask to
//!    `DIR/mask.zarr` and counts foreground voxels; the counts are reduced to a total. Each
//!    `threshold` block waits for the `smooth` blocks it reads.
//!
//! Progress bars and daisy's execution summary are shown on a terminal.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use blockwise::sample::{SampleSpec, write_zarr};
use blockwise::store::{ArraySpec, DataType, ZarrArray};
use blockwise::workload::box_mean_block;
use blockwise::{Block, BlockError, Fit, Roi, Runner, Task};

const BLOCK: i64 = 64;
const CONTEXT: i64 = 8;
const THRESHOLD: u8 = 100;

struct Options {
    workdir: PathBuf,
    size: u64,
    workers: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        workdir: PathBuf::from("blockwise-example"),
        size: 256,
        workers: 2,
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
            "-h" | "--help" => {
                println!("usage: pipeline [--workdir DIR] [--size N] [--workers W]");
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
            let options =
                ArraySpec::new(spec.roi(), [1, 1, 1], DataType::U8, vec![BLOCK as u64; 3]);
            write_zarr(&spec, &raw_path, "raw", &options, opts.workers)?
        }
    };
    let mut out_spec = ArraySpec::new(
        raw.roi(),
        raw.voxel_size().clone(),
        DataType::U8,
        vec![BLOCK as u64; 3],
    );
    out_spec.overwrite = true;
    let smoothed = Arc::new(ZarrArray::create(
        opts.workdir.join("smoothed.zarr"),
        "smoothed",
        &out_spec,
    )?);
    let mask = Arc::new(ZarrArray::create(
        opts.workdir.join("mask.zarr"),
        "mask",
        &out_spec,
    )?);
    let raw = Arc::new(raw);

    let write = Roi::new([0; 3], [BLOCK; 3]);
    let (r, s) = (Arc::clone(&raw), Arc::clone(&smoothed));
    let smooth = Task::builder(
        "smooth",
        raw.roi().grow_by(CONTEXT),
        write.grow_by(CONTEXT),
        write.clone(),
    )
    .fit(Fit::Shrink)
    .read_write_conflict(false)
    .writes(smoothed.as_ref())
    .num_workers(opts.workers)
    .process(move |block: &Block| -> Result<(), BlockError> {
        let data = r.read_with_fill::<u8>(block.read_roi(), 0)?;
        let w = block.write_roi().shape();
        let ws = [w[0] as usize, w[1] as usize, w[2] as usize];
        s.write(
            block.write_roi(),
            box_mean_block(data.view(), CONTEXT as usize, ws)?.view(),
        )?;
        Ok(())
    })
    .build()?;

    let foreground = Arc::new(AtomicU64::new(0));
    let (s, m, f) = (
        Arc::clone(&smoothed),
        Arc::clone(&mask),
        Arc::clone(&foreground),
    );
    let threshold = Task::builder("threshold", raw.roi(), write.clone(), write)
        .fit(Fit::Shrink)
        .read_write_conflict(false)
        .upstream(&smooth)
        .writes(mask.as_ref())
        .num_workers(opts.workers)
        .process(move |block: &Block| -> Result<(), BlockError> {
            let smoothed = s.read::<u8>(block.read_roi())?;
            let mask = smoothed.mapv(|v| u8::from(v > THRESHOLD));
            f.fetch_add(mask.iter().map(|&v| u64::from(v)).sum(), Ordering::Relaxed);
            m.write(block.write_roi(), mask.view())?;
            Ok(())
        })
        .build()?;

    let start = Instant::now();
    let summary = Runner::new().run([threshold])?;
    let elapsed = start.elapsed();
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        print!("{summary}");
    }
    println!();
    println!("input:    {}", raw.name());
    println!("smoothed: {}", smoothed.name());
    println!("mask:     {}", mask.name());
    let total: u64 = raw.shape().iter().product();
    let fg = foreground.load(Ordering::Relaxed);
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
