//! OME-Zarr, a pyramid and a mask: build a resolution pyramid of a sample volume as an OME-Zarr
//! image, threshold its coarsest level into a mask, and run a task over the full-resolution
//! level that skips the blocks where the mask is empty.
//!
//! `cargo run --release --example ome_pyramid [-- --workdir DIR --size N --workers W]` writes
//! `DIR/sample.zarr` (if missing), the image `DIR/image.ome.zarr` (levels `s0` … `s3`, NGFF
//! 0.5), the mask `DIR/mask.zarr` (at the voxel size of `s3`) and counts the foreground voxels
//! of the blocks the mask keeps. Resumable with its run directory `DIR/run`: a rerun does
//! nothing that is done.
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use blockwise::ops::{Downsample, Pyramid};
use blockwise::sample::{SampleSpec, open_or_write_zarr};
use blockwise::store::{ArraySpec, DataType, OmeZarr, ZarrArray};
use blockwise::{Fit, Roi, Runner, Task};

#[derive(clap::Parser)]
struct Options {
    #[arg(long, default_value = "blockwise-ome")]
    workdir: PathBuf,
    #[arg(long, default_value_t = 256)]
    size: u64,
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// Foreground: brighter than this.
const THRESHOLD: u8 = 160;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let o: Options = clap::Parser::parse();
    let dir = &o.workdir;
    std::fs::create_dir_all(dir)?;
    let runner = Runner::new().run_dir(dir.join("run"));

    // 1. The pyramid: one chained task per level, written as an OME-Zarr image.
    open_or_write_zarr(
        &SampleSpec::cube(o.size),
        &dir.join("sample.zarr"),
        "raw",
        64,
        o.workers,
    )?;
    let raw = ZarrArray::open(dir.join("sample.zarr"), "raw")?;
    let pyramid = Pyramid::builder(&raw, dir.join("image.ome.zarr"))
        .levels(4)
        .factor([2])
        .method(Downsample::Mean)
        .num_workers(o.workers);
    assert!(pyramid.run(&runner)?.is_success(), "the pyramid failed");
    let image = OmeZarr::open(dir.join("image.ome.zarr"))?;
    for (k, level) in image.levels().iter().enumerate() {
        println!(
            "level {k} ({}): voxel size {}, offset {}",
            level.path, level.voxel_size, level.offset
        );
    }

    // 2. The mask: the coarsest level thresholded (small: read whole), at its voxel size.
    let coarse = image.level(image.levels().len() - 1)?;
    let spec = ArraySpec::new(
        coarse.roi(),
        coarse.voxel_size().clone(),
        DataType::U8,
        vec![32; 3],
    );
    let mask = ZarrArray::prepare(dir.join("mask.zarr"), "mask", &spec)?; // kept on a rerun
    let above = coarse
        .read::<u8>(&coarse.roi())?
        .mapv(|v| u8::from(v > THRESHOLD));
    mask.write_array(&above)?;

    // 3. A task over full resolution that skips the blocks the mask says are empty.
    let s0 = image.level(0)?;
    let (found, ran) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (f, r, input) = (Arc::clone(&found), Arc::clone(&ran), s0.clone());
    let block = Roi::new([0; 3], [64; 3]);
    let count = Task::builder("count", s0.roi(), block.clone(), block)
        .fit(Fit::Shrink)
        .read_write_conflict(false)
        .num_workers(o.workers)
        .mask(&mask)
        .process(move |b| {
            let data = input.read::<u8>(b.write_roi())?;
            f.fetch_add(
                data.iter().filter(|&&v| v > THRESHOLD).count() as u64,
                Ordering::Relaxed,
            );
            r.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .build()?;
    let total = count.num_blocks();
    let summary = runner.run([count])?;
    assert!(summary.is_success(), "the count failed");
    let (skipped, masked) = summary
        .task("count")
        .map_or((0, 0), |t| (t.skipped, t.masked));
    println!(
        "count: {} of {total} blocks ran, {masked} masked out, {} done before; {} foreground voxels in the blocks that ran",
        ran.load(Ordering::Relaxed),
        skipped - masked,
        found.load(Ordering::Relaxed)
    );
    Ok(())
}
