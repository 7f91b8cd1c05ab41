//! The block-run loop both runners share: cancel, hand out, finish tasks, wait, flush the
//! journal, call the observer, draw progress. A runner says how blocks go out and how results
//! come back ([`Runs`]); the loop says when.

use std::time::{Duration, Instant};

use super::observer::Watch;
use crate::error::Error;
use crate::journal::Journal;
use crate::observe::ProgressBars;
use crate::scheduler::Scheduler;

/// What a runner does in the shared loop.
pub(super) trait Runs {
    /// The scheduler.
    fn sched(&self) -> &Scheduler;
    /// The run directory's journal, if any.
    fn journal(&mut self) -> Option<&mut Journal>;
    /// How many tasks the run has (in the scheduler's order).
    fn tasks(&self) -> usize;
    /// Task `i`: its id, whether it started (has had a ready block), whether it was seen
    /// finished.
    fn lane(&self, i: usize) -> (&str, bool, bool);
    /// Task `i` is done: mark it and let its workers go.
    fn finish(&mut self, i: usize);
    /// Why the run stops now (a signal, a cancel handle), if it does.
    fn cancelled(&mut self) -> Option<String>;
    /// One turn before waiting: abandoned tasks, new workers, blocks to hand out.
    fn prepare(&mut self) -> Result<(), Error>;
    /// Waits up to `timeout` (for ever without one) for results and takes them; false when no
    /// more can come.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, Error>;
    /// After waiting: timeouts and other checks.
    fn maintain(&mut self) -> Result<(), Error>;
    /// Records the failed attempts of blocks whose mask could not be read (the scheduler
    /// released them when it was about to hand them out).
    fn record_mask_failures(&mut self);
}

/// Runs the loop until every task is done (or nothing can progress), the runner's results
/// stop, or the run is cancelled. `tick` bounds each wait.
pub(super) fn drive<R: Runs>(
    runs: &mut R,
    tick: Option<Duration>,
    mut progress: Option<&mut ProgressBars>,
    watch: &mut Watch<'_>,
) -> Result<(), Error> {
    let tick = [tick, watch.tick()].into_iter().flatten().min();
    let mut last_draw = Instant::now();
    let mut flush_in: Option<Duration> = None;
    loop {
        if let Some(signal) = runs.cancelled() {
            return Err(Error::Interrupted { signal });
        }
        runs.prepare()?;
        runs.record_mask_failures();
        finish_tasks(runs, progress.as_deref_mut());
        if runs.sched().is_done() {
            return Ok(());
        }
        if stalled(runs.sched()) {
            tracing::error!("no block is ready or in flight but tasks are not done; stopping");
            return Ok(());
        }
        let wait = [tick, flush_in].into_iter().flatten().min();
        let more = runs.wait(wait)?;
        runs.record_mask_failures();
        if !more {
            return Ok(());
        }
        runs.maintain()?;
        runs.record_mask_failures();
        if let Some(j) = runs.journal() {
            flush_in = j.maybe_flush()?;
        }
        watch.maybe_call(runs.sched(), false);
        if let Some(p) = progress.as_deref_mut()
            && last_draw.elapsed() >= Duration::from_millis(100)
        {
            last_draw = Instant::now();
            for i in 0..runs.tasks() {
                let (id, started, finished) = runs.lane(i);
                if started
                    && !finished
                    && let Some(state) = runs.sched().task_state(id)
                {
                    p.update(i, state);
                }
            }
        }
    }
}

/// Tasks whose blocks are all done are finished (their bars too).
fn finish_tasks<R: Runs>(runs: &mut R, mut progress: Option<&mut ProgressBars>) {
    for i in 0..runs.tasks() {
        let (id, _, finished) = runs.lane(i);
        if finished {
            continue;
        }
        let Some(state) = runs.sched().task_state(id).cloned() else {
            continue;
        };
        if !state.is_done() {
            continue;
        }
        runs.finish(i);
        if let Some(p) = progress.as_deref_mut() {
            p.finish(i, &state);
        }
    }
}

/// No block is ready or in flight anywhere.
fn stalled(sched: &Scheduler) -> bool {
    sched.tasks().all(|t| {
        sched
            .task_state(t.task_id())
            .is_none_or(|s| s.processing == 0 && s.ready == 0)
    })
}
