//! A real pipeline: smooth → connected components across blocks → a voxel count per component.
//!
//! `cargo run --release --example segment [-- --workdir DIR --size N --workers W --fresh] [processes]`
//! writes an `N`³ sample volume (if missing), smooths it (3×3×3 mean, context reflected at the
//! border), labels the foreground (`> 100`, 6-connected) across blocks into `DIR/labels.zarr`
//! and counts every component's voxels as block outputs (`DIR/sizes.json`). Resumable (rerun
//! it after a crash; `--fresh` starts over); `processes` runs blocks in worker processes.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use blockwise::ops::{ConnectedComponents, Connectivity};
use blockwise::sample::{SampleSpec, open_or_write_zarr};
use blockwise::store::{ArraySpec, DataType, Pad, ZarrArray};
use blockwise::workload::box_mean_block;
use blockwise::{Error, Fit, Roi, Runner, Task, WorkerOptions};

type Sizes = BTreeMap<u64, u64>;

#[derive(clap::Parser)]
struct Options {
    #[arg(long, default_value = "blockwise-segment")]
    workdir: PathBuf,
    #[arg(long, default_value_t = 256)]
    size: u64,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long)]
    fresh: bool,
    #[arg(default_value = "threads", value_parser = ["threads", "processes"])]
    runner: String,
}

/// The tasks; the driver and every worker build them the same way.
fn pipeline(dir: &Path, workers: usize) -> Result<(Task, ConnectedComponents, Task), Error> {
    let raw = ZarrArray::open(dir.join("sample.zarr"), "raw")?;
    let (roi, voxel) = (raw.roi(), raw.voxel_size().clone());
    let spec = |t| ArraySpec::new(roi.clone(), voxel.clone(), t, vec![64; 3]);
    let smoothed = ZarrArray::prepare(dir.join("smoothed.zarr"), "smoothed", &spec(DataType::U8))?;
    let labels = ZarrArray::prepare(dir.join("labels.zarr"), "labels", &spec(DataType::U64))?;
    let write = Roi::new([0; 3], [64; 3]);
    let (r, s) = (raw.clone(), smoothed.clone());
    let smooth = Task::builder("smooth", roi.grow_by(1), write.grow_by(1), write.clone())
        .fit(Fit::Shrink)
        .read_write_conflict(false)
        .writes(&smoothed)
        .num_workers(workers)
        .process(move |block| {
            let data = r.read_padded::<u8>(block.read_roi(), Pad::Reflect)?;
            let [z, y, x] = [0, 1, 2].map(|d| data.shape()[d] - 2);
            let mean = box_mean_block(data.view(), 1, [z, y, x])?;
            Ok(s.write(block.write_roi(), &mean)?)
        })
        .build()?;
    let components = ConnectedComponents::new(&smoothed, &labels)
        .threshold(100.0)
        .connectivity(Connectivity::Faces)
        .num_workers(workers);
    let count = Task::builder("count", roi, write.clone(), write)
        .fit(Fit::Shrink)
        .read_write_conflict(false)
        .num_workers(workers)
        .process_with_output(move |block| {
            let mut sizes = Sizes::new();
            for &v in labels.read::<u64>(block.write_roi())?.iter() {
                *sizes.entry(v).or_default() += u64::from(v != 0);
            }
            sizes.remove(&0);
            Ok(sizes)
        })
        .build()?;
    Ok((smooth, components, count))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = tracing_subscriber::fmt() // logs to stderr as RUST_LOG says
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let opts = <Options as clap::Parser>::parse();
    let dir = opts.workdir.clone();
    blockwise::worker_main(|| {
        let (smooth, components, count) = pipeline(&dir, opts.workers)?;
        Ok([vec![smooth, count], components.tasks()?].concat())
    });
    std::fs::create_dir_all(&dir)?;
    let sample = SampleSpec::cube(opts.size);
    open_or_write_zarr(&sample, &dir.join("sample.zarr"), "raw", 64, opts.workers)?;
    let (smooth, components, count) = pipeline(&dir, opts.workers)?;
    let mut runner = Runner::new().run_dir(dir.join("run")).fresh(opts.fresh);
    if opts.runner == "processes" {
        runner = runner.workers(WorkerOptions::new().log_dir(dir.join("logs")));
    }
    let start = Instant::now();
    let mut ok = runner.run([smooth])?.is_success();
    let smoothed = Instant::now();
    ok &= components.run(&runner)?.is_success();
    let (s, c) = (smoothed - start, smoothed.elapsed());
    println!("smooth: {s:.2?}, connected components: {c:.2?}");
    let summary = runner.run([count])?;
    let mut sizes = Sizes::new();
    for output in summary.outputs::<Sizes>("count")? {
        for (label, n) in output?.value {
            *sizes.entry(label).or_default() += n;
        }
    }
    std::fs::write(dir.join("sizes.json"), serde_json::to_string(&sizes)?)?;
    let (total, largest) = (
        sizes.values().sum::<u64>(),
        sizes.values().max().unwrap_or(&0),
    );
    println!(
        "components: {}, foreground voxels: {total}, largest: {largest}",
        sizes.len()
    );
    if !(ok && summary.is_success()) {
        std::process::exit(1);
    }
    Ok(())
}
