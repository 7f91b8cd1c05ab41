//! What the `pipeline` and `cluster` examples share: their two chained tasks, the outputs those
//! write (resumed or created), and logging. Included by both with `mod common;`.

use std::path::Path;
use std::sync::Arc;

use blockwise::store::{ArraySpec, DataType, StoreError, ZarrArray};
use blockwise::workload::box_mean_block;
use blockwise::{Block, BlockError, Fit, Roi, Task};

/// The block size, and the chunk size of every array.
pub const BLOCK: i64 = 64;
/// Voxels of context `smooth` reads on each side of a block.
pub const CONTEXT: i64 = 8;
/// `threshold`'s mask is `smoothed > THRESHOLD`.
pub const THRESHOLD: u8 = 100;

/// Logs to stderr, as `RUST_LOG` says (default: warnings), like the `blockwise` binary.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::WARN.into())
        .from_env_lossy();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// The outputs an earlier run left, to resume it: `smoothed` and `mask` when `run_dir` holds a
/// run and both arrays open with `raw`'s ROI. `None` (start over) with `fresh` or otherwise.
pub fn existing_outputs(
    fresh: bool,
    run_dir: &Path,
    smoothed: &Path,
    mask: &Path,
    raw: &ZarrArray,
) -> Option<(ZarrArray, ZarrArray)> {
    if fresh || !run_dir.join("run.json").is_file() {
        return None;
    }
    match (
        ZarrArray::open(smoothed, "smoothed"),
        ZarrArray::open(mask, "mask"),
    ) {
        (Ok(s), Ok(m)) if s.roi() == raw.roi() && m.roi() == raw.roi() => Some((s, m)),
        _ => None,
    }
}

/// Creates the outputs `smoothed` and `mask` (replacing what is there), uint8 over `raw`'s ROI
/// and voxel size, in `BLOCK`³ chunks.
pub fn create_outputs(
    smoothed: &Path,
    mask: &Path,
    raw: &ZarrArray,
) -> Result<(ZarrArray, ZarrArray), StoreError> {
    let mut spec = ArraySpec::new(
        raw.roi(),
        raw.voxel_size().clone(),
        DataType::U8,
        vec![BLOCK as u64; 3],
    );
    spec.overwrite = true;
    Ok((
        ZarrArray::create(smoothed, "smoothed", &spec)?,
        ZarrArray::create(mask, "mask", &spec)?,
    ))
}

/// The two chained tasks, `workers` workers each: `smooth` (the 3×3×3 box mean of every
/// `BLOCK`³ block of `raw`, reading `CONTEXT` voxels around it, zeros outside the volume, into
/// `smoothed`) and `threshold` (`smoothed > THRESHOLD` into `mask`), each of whose blocks waits
/// for the `smooth` blocks it reads. Returns `threshold`; running it runs `smooth` too.
pub fn pipeline(
    raw: &Arc<ZarrArray>,
    smoothed: &Arc<ZarrArray>,
    mask: &Arc<ZarrArray>,
    workers: usize,
) -> Result<Task, blockwise::Error> {
    let write = Roi::new([0; 3], [BLOCK; 3]);
    let (r, s) = (Arc::clone(raw), Arc::clone(smoothed));
    let smooth = Task::builder(
        "smooth",
        raw.roi().grow_by(CONTEXT),
        write.grow_by(CONTEXT),
        write.clone(),
    )
    .fit(Fit::Shrink)
    .read_write_conflict(false)
    .writes(smoothed.as_ref())
    .num_workers(workers)
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

    let (s, m) = (Arc::clone(smoothed), Arc::clone(mask));
    Task::builder("threshold", raw.roi(), write.clone(), write)
        .fit(Fit::Shrink)
        .read_write_conflict(false)
        .upstream(&smooth)
        .writes(mask.as_ref())
        .num_workers(workers)
        .process(move |block: &Block| -> Result<(), BlockError> {
            let smoothed = s.read::<u8>(block.read_roi())?;
            let mask = smoothed.mapv(|v| u8::from(v > THRESHOLD));
            m.write(block.write_roi(), &mask)?;
            Ok(())
        })
        .build()
}
