//! `blockwise bench markers`: the done-markers of one synthetic task of many blocks, timed.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::{Journal, JournalError, io, markers, status, task_dir_name};
use crate::geometry::Roi;

/// Blocks marked through the writer's per-block path (`set` and a flush every 65,536
/// blocks, as a run's batches) before the rest are marked by its fast path.
const PER_BLOCK: u64 = 1 << 24;

/// The figures of `blockwise bench markers` (see [`bench_markers`]).
#[doc(hidden)]
#[derive(Debug, Clone, Serialize)]
pub struct MarkerBench {
    /// Blocks of the task.
    pub blocks: u64,
    /// Seconds to open a new run directory with the task (its markers created).
    pub create_s: f64,
    /// Blocks marked done one by one through the writer (batches of 65,536, synced).
    pub per_block_marked: u64,
    /// Blocks per second of that.
    pub per_block_rate: f64,
    /// Seconds to mark every block done (the per-block part and the writer's fast path).
    pub mark_all_s: f64,
    /// Seconds of `status` of the finished run directory.
    pub status_s: f64,
    /// Seconds to open the finished run directory again and load its done set (what a rerun
    /// does before it starts the task's downstream tasks).
    pub reopen_s: f64,
    /// Bytes the run directory takes on disk (allocated blocks).
    pub disk_bytes: u64,
    /// Chunk files of the marker array.
    pub chunk_files: u64,
    /// The largest chunk file's length.
    pub largest_chunk_bytes: u64,
}

fn disk_usage(path: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut chunks = 0;
    let mut largest = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if p.parent().and_then(Path::file_name) == Some("c".as_ref()) {
            chunks += 1;
            largest = largest.max(m.len());
        }
    }
    (total, chunks, largest)
}

/// The task whose markers [`bench_markers`] creates: `blocks` 1-D blocks of one voxel, with
/// the id `markers` (a rerun of the bench's run directory builds it with this, adding its
/// process function).
#[doc(hidden)]
pub fn marker_bench_task(blocks: u64) -> crate::task::TaskBuilder {
    let n = i64::try_from(blocks).unwrap_or(i64::MAX);
    crate::Task::builder(
        "markers",
        Roi::new([0], [n]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
}

/// Creates a run directory in `dir` (which must not hold one) with one task of `blocks`
/// blocks, marks them all done, and times `status` and a reopen (see [`MarkerBench`]).
#[doc(hidden)]
pub fn bench_markers(dir: &Path, blocks: u64) -> Result<MarkerBench, JournalError> {
    let task = marker_bench_task(blocks)
        .build()
        .map_err(|e| JournalError::Corrupt {
            path: dir.to_owned(),
            reason: format!("cannot build the bench task: {e}"),
        })?;
    let layout = task.layout();
    let layouts = std::slice::from_ref(&layout);
    let start = Instant::now();
    let mut j = Journal::open(dir, layouts, true)?;
    let create_s = start.elapsed().as_secs_f64();
    j.finish("finished")?;
    drop(j);
    let array = dir
        .join("tasks")
        .join(task_dir_name(&layout.task_id))
        .join("done.zarr");
    let start = Instant::now();
    let mut w = markers::MarkerWriter::open(&array, &layout.grid_shape, layout.num_blocks)?;
    let per_block = blocks.min(PER_BLOCK);
    for i in 0..per_block {
        w.set(i, markers::DONE)?;
        if (i + 1) % (1 << 16) == 0 {
            w.flush()?;
        }
    }
    w.flush()?;
    let per_block_s = start.elapsed().as_secs_f64();
    w.mark_all_done()?;
    drop(w);
    let mark_all_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let s = status(dir)?;
    let status_s = start.elapsed().as_secs_f64();
    let done: u64 = s.tasks.iter().map(|t| t.done).sum();
    if done != blocks {
        return Err(io(
            "count",
            dir,
            std::io::Error::other(format!("status counts {done} done of {blocks}")),
        ));
    }
    let start = Instant::now();
    let mut j = Journal::open(dir, layouts, false)?;
    let sets = j.take_done();
    let reopen_s = start.elapsed().as_secs_f64();
    j.finish("finished")?;
    if !sets.first().is_some_and(super::DoneSet::is_all_done) {
        return Err(io(
            "load",
            dir,
            std::io::Error::other("the reopened task is not all done"),
        ));
    }
    let (disk_bytes, chunk_files, largest_chunk_bytes) = disk_usage(dir);
    Ok(MarkerBench {
        blocks,
        create_s,
        per_block_marked: per_block,
        per_block_rate: per_block as f64 / per_block_s.max(1e-9),
        mark_all_s,
        status_s,
        reopen_s,
        disk_bytes,
        chunk_files,
        largest_chunk_bytes,
    })
}
