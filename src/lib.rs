//! blockwise: process huge n-dimensional volumes block by block.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blocks;
mod error;
pub mod geometry;
mod graph;
mod observe;
mod run;
mod scheduler;
mod task;

pub use blocks::{Block, BlockStatus, Fit};
pub use error::{BlockError, Error};
pub use geometry::{Coordinate, GeometryError, Roi, Snap};
pub use observe::{BlockFailure, RunSummary};
pub use observe::summary::TaskSummary;
pub use run::{Progress, Runner, run_blockwise};
pub use scheduler::{Scheduler, TaskState};
pub use task::{Task, TaskBuilder, WorkerContext};
