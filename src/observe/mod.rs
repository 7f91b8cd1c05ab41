//! What a run shows and reports: the execution summary and per-task progress bars.

#[cfg(feature = "progress")]
mod progress;
pub(crate) mod summary;

#[cfg(feature = "progress")]
pub(crate) use progress::ProgressBars;
pub use summary::{BlockFailure, RunSummary};

/// A no-op stand-in when the `progress` feature is off.
#[cfg(not(feature = "progress"))]
#[derive(Debug)]
pub(crate) struct ProgressBars;

#[cfg(not(feature = "progress"))]
impl ProgressBars {
    pub(crate) fn new(_task_ids: &[String]) -> Self {
        ProgressBars
    }
    pub(crate) fn update(&mut self, _i: usize, _state: &crate::TaskState) {}
    pub(crate) fn finish(&mut self, _i: usize, _state: &crate::TaskState) {}
    pub(crate) fn close(&mut self) {}
}
