//! A real pipeline: smooth → connected components across blocks → a voxel count per component.
//!
//! ```text
//! cargo run --release --example segment [-- --workdir DIR --size N --workers W --fresh] [processes]
//! ```
//!
//! Writes a deterministic `N`³ sample volume to `DIR/sample.zarr` if missing, smooths it (the
//! 3×3×3 mean, reading one voxel of context, reflected at the border), labels the connected
//! foreground (`smoothed > 100`, 6-connected) across blocks into `DIR/labels.zarr`, and counts
//! the voxels of every component as block outputs. Resumable: run it again after a crash and it
//! does only what is left (`--fresh` starts over). With `processes`, blocks run in worker
//! processes; `blockwise::worker_main` keeps them out of the driver's code.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use blockwise::ops::{ConnectedComponents, Connectivity};
use blockwise::sample::{SampleSpec, open_or_write_zarr};
use blockwise::store::{ArraySpec, DataType, Pad, ZarrArray};
use blockwise::workload::box_mean_block;
use blockwise::{Fit, Roi, Runner, Task};

const BLOCK: i64 = 64;

struct Options {
    dir: PathBuf,
    size: u64,
    workers: usize,
    fresh: bool,
    processes: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options { dir: "blockwise-segment".into(), size: 256, workers: 2, fresh: false, processes: false };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--workdir" => o.dir = value()?.into(),
            "--size" => o.size = value()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--workers" => o.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--fresh" => o.fresh = true,
            "processes" => o.processes = true,
            _ => return Err(format!("unknown argument {a:?}; see the example's docs")),
        }
    }
    Ok(o)
}

/// The arrays and tasks; the driver and every worker build them the same way.
struct Pipeline {
    smooth: Task,
    components: ConnectedComponents,
    count: Task,
}

fn pipeline(dir: &Path, workers: usize) -> Result<Pipeline, blockwise::Error> {
    let raw = ZarrArray::open(dir.join("sample.zarr"), "raw")?;
    let spec = |t| ArraySpec::new(raw.roi(), raw.voxel_size().clone(), t, vec![BLOCK as u64; 3]);
    let smoothed = ZarrArray::prepare(dir.join("smoothed.zarr"), "smoothed", &spec(DataType::U8))?;
    let labels = ZarrArray::prepare(dir.join("labels.zarr"), "labels", &spec(DataType::U64))?;
    let write = Roi::new([0; 3], [BLOCK; 3]);
    let (r, s) = (raw.clone(), smoothed.clone());
    let smooth = Task::builder("smooth", raw.roi().grow_by(1), write.grow_by(1), write.clone())
        .fit(Fit::Shrink)
        .read_write_conflict(false)
        .writes(&smoothed)
        .num_workers(workers)
        .process(move |block| {
            let data = r.read_padded::<u8>(block.read_roi(), Pad::Reflect)?;
            let w = block.write_roi().to_voxels(s.voxel_size())?.shape().clone();
            let mean = box_mean_block(data.view(), 1, [w[0] as usize, w[1] as usize, w[2] as usize])?;
            Ok(s.write(block.write_roi(), &mean)?)
        })
        .build()?;
    let components = ConnectedComponents::new(&smoothed, &labels)
        .threshold(100.0)
        .connectivity(Connectivity::Faces)
        .num_workers(workers)
        .upstream(&smooth);
    let l = labels.clone();
    let count = Task::builder("count", raw.roi(), write.clone(), write)
        .fit(Fit::Shrink)
        .read_write_conflict(false)
        .num_workers(workers)
        .process_with_output(move |block| {
            let mut sizes = BTreeMap::<u64, u64>::new();
            for &v in l.read::<u64>(block.write_roi())?.iter().filter(|&&v| v != 0) {
                *sizes.entry(v).or_default() += 1;
            }
            Ok(sizes)
        })
        .build()?;
    Ok(Pipeline { smooth, components, count })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opts = options()?;
    blockwise::worker_main(|| {
        let p = pipeline(&opts.dir, opts.workers)?;
        Ok([vec![p.smooth, p.count], p.components.tasks()?].concat())
    });
    std::fs::create_dir_all(&opts.dir)?;
    open_or_write_zarr(&SampleSpec::cube(opts.size), &opts.dir.join("sample.zarr"), "raw", BLOCK as u64, opts.workers)?;
    let p = pipeline(&opts.dir, opts.workers)?;
    let mut runner = Runner::new().run_dir(opts.dir.join("run")).fresh(opts.fresh);
    if opts.processes {
        runner = runner.processes().log_dir(opts.dir.join("logs"));
    }
    let mut ok = runner.run([p.smooth])?.is_success();
    ok &= p.components.run(&runner)?.is_success();
    let summary = runner.run([p.count])?;
    let mut sizes = BTreeMap::<u64, u64>::new();
    for output in summary.outputs::<BTreeMap<u64, u64>>("count")? {
        for (label, n) in output?.value {
            *sizes.entry(label).or_default() += n;
        }
    }
    std::fs::write(opts.dir.join("sizes.json"), serde_json::to_string(&sizes)?)?;
    let total: u64 = sizes.values().sum();
    let largest = sizes.values().max().copied().unwrap_or(0);
    println!("components: {}, foreground voxels: {total}, largest: {largest}", sizes.len());
    if !(ok && summary.is_success()) {
        std::process::exit(1);
    }
    Ok(())
}
