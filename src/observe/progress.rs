//! One indicatif progress bar per task, with daisy's counters.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::scheduler::TaskState;

/// Progress bars for the tasks of a run, created when a task first shows activity.
#[derive(Debug)]
pub(crate) struct ProgressBars {
    multi: MultiProgress,
    task_ids: Vec<String>,
    bars: Vec<Option<ProgressBar>>,
}

impl ProgressBars {
    pub(crate) fn new(task_ids: &[String]) -> Self {
        ProgressBars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            task_ids: task_ids.to_vec(),
            bars: vec![None; task_ids.len()],
        }
    }

    fn bar(&mut self, i: usize, state: &TaskState) -> &ProgressBar {
        let multi = &self.multi;
        let id = &self.task_ids[i];
        self.bars[i].get_or_insert_with(|| {
            let style = ProgressStyle::with_template(
                "{prefix} {percent:>3}%|{bar:30}| {pos}/{len} [{elapsed}<{eta}, {rate}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1} blocks/s", state.per_sec());
                },
            );
            let bar = multi.add(ProgressBar::new(state.total).with_style(style));
            bar.set_prefix(format!("{id} ▶"));
            bar
        })
    }

    /// Shows the task's counters (daisy's postfix `⧗ ▶ ✔ ✗ ∅`).
    pub(crate) fn update(&mut self, i: usize, state: &TaskState) {
        let bar = self.bar(i, state);
        bar.set_position(state.completed);
        bar.set_message(format!(
            "⧗={}, ▶={}, ✔={}, ✗={}, ∅={}",
            state.pending, state.processing, state.completed, state.failed, state.orphaned
        ));
    }

    /// Leaves the bars on screen and moves the cursor below them.
    pub(crate) fn close(&mut self) {
        if self.bars.iter().any(Option::is_some) {
            println!();
        }
    }

    /// Marks the task done: `✗` if blocks failed, else `∅` if some were orphaned (or the task
    /// was abandoned), else `✔`.
    pub(crate) fn finish(&mut self, i: usize, state: &TaskState) {
        self.update(i, state);
        let symbol = if state.failed > 0 {
            "✗"
        } else if state.orphaned > 0 || state.abandoned.is_some() {
            "∅"
        } else {
            "✔"
        };
        let id = self.task_ids[i].clone();
        if let Some(bar) = &self.bars[i] {
            bar.set_prefix(format!("{id} {symbol}"));
            // `abandon` keeps the position (completed blocks), unlike `finish`.
            bar.abandon();
        }
    }
}
