//! blockwise: process huge n-dimensional volumes block by block.
//!
//! A [`Task`] tiles its total region of interest ([`Roi`]) with [`Block`]s — a write ROI and a
//! read ROI with context around it — and [`run_blockwise`] runs the task's function on every
//! block on worker threads. Blocks whose reads overlap another block's writes never run together
//! (`read_write_conflict`), chained tasks wait for exactly the upstream blocks they read, failed
//! blocks are retried and orphan what depends on them, and the result is a [`RunSummary`] that
//! prints daisy's execution summary. Block ids, hand-out order, levels, retries, skips and orphan
//! counts are those of the Python library daisy 1.x.
//!
//! # Example: two chained tasks
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicI64, Ordering};
//! use blockwise::{Block, BlockError, Roi, Task, run_blockwise};
//!
//! # fn main() -> Result<(), blockwise::Error> {
//! // A 1D "volume" of 1000 values, shared by the workers.
//! let data: Arc<Vec<AtomicI64>> = Arc::new((0..1000).map(AtomicI64::new).collect());
//!
//! // Task 1: negate every value, 100 values per block.
//! let d = Arc::clone(&data);
//! let negate = Task::builder("negate", Roi::new([0], [1000]), Roi::new([0], [100]), Roi::new([0], [100]))
//!     .process(move |block: &Block| -> Result<(), BlockError> {
//!         let w = block.write_roi();
//!         for i in w.begin()[0]..w.end()[0] {
//!             d[i as usize].store(-i, Ordering::SeqCst);
//!         }
//!         Ok(())
//!     })
//!     .num_workers(2)
//!     .build()?;
//!
//! // Task 2: sum 250-value blocks; each block waits for the `negate` blocks it reads.
//! let total = Arc::new(AtomicI64::new(0));
//! let (d, t) = (Arc::clone(&data), Arc::clone(&total));
//! let sum = Task::builder("sum", Roi::new([0], [1000]), Roi::new([0], [250]), Roi::new([0], [250]))
//!     .process(move |block: &Block| -> Result<(), BlockError> {
//!         let r = block.read_roi();
//!         let s: i64 = (r.begin()[0]..r.end()[0]).map(|i| d[i as usize].load(Ordering::SeqCst)).sum();
//!         t.fetch_add(s, Ordering::SeqCst);
//!         Ok(())
//!     })
//!     .upstream(&negate)
//!     .build()?;
//!
//! let summary = run_blockwise([sum])?; // `negate` runs too: upstream tasks are added
//! assert!(summary.is_success());
//! assert_eq!(summary.task("negate").map(|s| s.completed), Some(10));
//! assert_eq!(total.load(Ordering::SeqCst), -(999 * 1000 / 2));
//! # Ok(())
//! # }
//! ```
//!
//! # Crate layout
//!
//! * [`geometry`]: [`Coordinate`], [`Roi`], [`Snap`] (funlib.geometry semantics).
//! * [`blocks`]: [`Block`], [`BlockStatus`], [`Fit`], daisy's Cantor block ids.
//! * [`Task`] and [`TaskBuilder`]: what to run and how blocks tile the volume.
//! * [`Scheduler`] and [`TaskState`]: the pure acquire/release state machine every runner drives.
//! * [`run_blockwise`] and [`Runner`]: run tasks on worker threads.
//! * [`mask`] (feature `zarr`): [`mask::Mask`], skip blocks where a mask array is empty.
//! * [`RunSummary`]: per-task counters and failures, printed as daisy's execution summary.
//!
//! The scheduler keeps no per-block table: block ROIs, ids and dependencies are computed
//! arithmetically on demand, and its memory follows the frontier of the run (the ready queue,
//! stored as runs of block keys, the blocks some of whose dependencies are done, and the blocks
//! in flight). With read/write conflicts or chained tasks that frontier is about a plane of
//! the block grid, a byte a waiting block in a window over the grid's last four planes and 9
//! bytes for the few outside it: measured with 2 worker threads, a 3-D task with conflicts
//! peaks at 13.9 MiB of process RSS at 10^8 blocks and 37.4 MiB at 10^9, and two chained tasks
//! of 10^8 blocks each at 13.5 MiB, or 10.9 MiB with conflicts downstream (the runners hold an
//! upstream task back while its downstream task works through its lead; the README's "Memory
//! at scale" has the table).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod blocks;
mod error;
pub mod exec;
mod fleet;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod geometry;
mod graph;
pub mod journal;
pub mod launch;
#[cfg(feature = "zarr")]
pub mod mask;
mod observe;
pub mod ops;
mod run;
pub mod sample;
mod scheduler;
pub mod store;
mod task;
mod util;
pub mod workload;

/// The `ndarray` crate blockwise's arrays are made of, re-exported so that users need not
/// guess the matching version.
pub use ndarray;

pub use blocks::{Block, BlockStatus, Fit};
pub use error::{BlockError, Error, ResourceError, WorkerError, WorkerErrorKind};
pub use fleet::WorkerOptions;
pub use geometry::{Coordinate, GeometryError, Roi, Snap};
pub use observe::summary::TaskSummary;
pub use observe::{BlockFailure, FailureKind, Progress, RunSummary};
pub use run::{
    CONTEXT_ENV, Cancel, Client, Runner, is_worker, run_blockwise, serve_worker, worker_main,
};
pub use scheduler::{Scheduler, TaskState};
/// Following HDF5 files written in SWMR mode (feature `hdf5`): [`store::swmr`], also at this
/// path (where it stood before it moved under `store`).
#[cfg(feature = "hdf5")]
pub use store::swmr;
pub use store::{Pad, RoiArray};
pub use task::{Task, TaskBuilder, WorkerContext};
