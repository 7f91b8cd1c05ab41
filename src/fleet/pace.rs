//! How much work a worker may hold at once.

use std::time::Duration;

/// A worker holds enough work to stay busy for about this long, so that round trips do not
/// idle it, but no more, so that slow blocks (or executor items) spread over all workers.
const QUEUE_TIME: Duration = Duration::from_millis(2);

/// How many blocks or items a worker may hold, from the smoothed time per unit its workers
/// report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pace {
    per_unit: Option<Duration>,
}

impl Pace {
    /// One until unit times are known, then enough for [`QUEUE_TIME`], at most `limit`.
    pub(crate) fn window(&self, limit: usize) -> usize {
        match self.per_unit {
            None => 1,
            Some(t) if t.is_zero() => limit,
            Some(t) => usize::try_from(QUEUE_TIME.as_nanos().div_ceil(t.as_nanos()))
                .unwrap_or(limit)
                .clamp(1, limit),
        }
    }

    /// Folds in a measured time per unit.
    pub(crate) fn observe(&mut self, per_unit: Duration) {
        self.per_unit = Some(match self.per_unit {
            None => per_unit,
            Some(old) => (old * 3 + per_unit) / 4,
        });
    }
}
