//! What a run shows and reports: the execution summary and per-task progress bars.

#[cfg(feature = "progress")]
mod progress;
pub(crate) mod summary;

#[cfg(feature = "progress")]
pub(crate) use progress::ProgressBars;
pub use summary::{BlockFailure, FailureKind, RunSummary};

use std::io::IsTerminal;

/// Whether to show progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Show them when stdout is a terminal.
    #[default]
    Auto,
    /// Always show them.
    Always,
    /// Never show them.
    Never,
}

impl Progress {
    pub(crate) fn enabled(self) -> bool {
        match self {
            Progress::Auto => std::io::stdout().is_terminal(),
            Progress::Always => true,
            Progress::Never => false,
        }
    }
}

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

/// A progress bar over items (executor maps, sweeps): a count, with a total when known.
#[derive(Debug)]
pub(crate) struct ItemProgress {
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
}

impl ItemProgress {
    /// A bar labelled `label` when `show`; `total` items if known.
    pub(crate) fn new(show: bool, label: &str, total: Option<u64>) -> ItemProgress {
        #[cfg(feature = "progress")]
        {
            let bar = show.then(|| {
                let bar = match total {
                    Some(n) => indicatif::ProgressBar::new(n),
                    None => indicatif::ProgressBar::no_length(),
                };
                let template = if total.is_some() {
                    "{prefix} {wide_bar} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]"
                } else {
                    "{prefix} {spinner} {pos} [{elapsed_precise}, {per_sec}]"
                };
                if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                    bar.set_style(style);
                }
                bar.set_prefix(label.to_owned());
                bar
            });
            ItemProgress { bar }
        }
        #[cfg(not(feature = "progress"))]
        {
            let _ = (show, label, total);
            ItemProgress {}
        }
    }

    /// One more item done.
    pub(crate) fn inc(&self) {
        #[cfg(feature = "progress")]
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    /// The end: the bar shows its final count and stops.
    pub(crate) fn finish(&self) {
        #[cfg(feature = "progress")]
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
