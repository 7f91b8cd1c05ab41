//! [`Runner::on_progress`](super::Runner::on_progress): a callback with every task's counters
//! while a run goes.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::scheduler::{Scheduler, TaskState};

/// An observer's callback: every task's id and counters.
pub(crate) type ObserveFn = dyn Fn(&[(&str, &TaskState)]) + Send + Sync;

/// The callback and how often it may be called.
#[derive(Clone)]
pub(crate) struct Observer {
    pub(crate) every: Duration,
    pub(crate) f: Arc<ObserveFn>,
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// A runner's view of its observer: when it last called it and with what.
pub(crate) struct Watch<'a> {
    observer: Option<&'a Observer>,
    last: Instant,
    seen: Vec<TaskState>,
}

impl<'a> Watch<'a> {
    pub(crate) fn new(observer: Option<&'a Observer>) -> Watch<'a> {
        Watch {
            observer,
            last: Instant::now(),
            seen: Vec::new(),
        }
    }

    /// The longest a runner's loop may sleep so that the observer is called on time.
    pub(crate) fn tick(&self) -> Option<Duration> {
        self.observer.map(|o| o.every)
    }

    /// Calls the observer if its interval passed (or `now`) and a counter changed since its
    /// last call.
    pub(crate) fn maybe_call(&mut self, sched: &Scheduler, now: bool) {
        let Some(o) = self.observer else {
            return;
        };
        if !now && self.last.elapsed() < o.every {
            return;
        }
        self.last = Instant::now();
        let states: Vec<(&str, &TaskState)> = sched
            .tasks()
            .filter_map(|t| sched.task_state(t.task_id()).map(|s| (t.task_id(), s)))
            .collect();
        let changed = states.len() != self.seen.len()
            || states
                .iter()
                .zip(&self.seen)
                .any(|((_, s), seen)| *s != seen);
        if changed {
            self.seen = states.iter().map(|(_, s)| (*s).clone()).collect();
            (o.f)(&states);
        }
    }
}
