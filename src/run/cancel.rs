//! [`Cancel`]: stopping a run from another thread.

use std::sync::{Arc, Mutex};

use crate::util::lock;

/// A handle that stops a run from another thread (a GUI, a service's shutdown, an embedding
/// interpreter's Ctrl-C): give a clone to [`Runner::cancel_with`](crate::Runner::cancel_with)
/// and call [`cancel`](Cancel::cancel). The run hands out no more blocks and returns
/// [`Error::Interrupted`](crate::Error::Interrupted) with the given reason:
///
/// * on worker threads, once the blocks already running have returned (blocks queued for a
///   worker but not started are dropped); a thread stuck in a block is left behind, as for a
///   timeout;
/// * on worker processes, at once: every job of the run is cancelled, like on Ctrl-C.
///
/// With a [run directory](crate::Runner::run_dir), every block that finished is recorded, so
/// a rerun resumes. A handle stays cancelled: a run started with a cancelled handle returns
/// at once.
///
/// ```
/// use blockwise::{Cancel, Error, Progress, Roi, Runner, Task};
///
/// # fn main() -> Result<(), Error> {
/// let cancel = Cancel::new();
/// let c = cancel.clone();
/// let task = Task::builder("t", Roi::new([0], [1000]), Roi::new([0], [10]), Roi::new([0], [10]))
///     .process(move |_block| {
///         c.cancel("enough"); // from anywhere: here, the first block stops the run
///         Ok(())
///     })
///     .build()?;
/// let result = Runner::new().progress(Progress::Never).cancel_with(&cancel).run([task]);
/// assert!(matches!(result, Err(Error::Interrupted { signal }) if signal == "enough"));
/// assert!(cancel.is_cancelled());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    reason: Arc<Mutex<Option<String>>>,
}

impl Cancel {
    /// A handle that is not cancelled.
    #[must_use]
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels the runs that use this handle, with `reason` (reported in
    /// [`Error::Interrupted`](crate::Error::Interrupted)). The first reason stays.
    pub fn cancel(&self, reason: impl Into<String>) {
        let mut r = lock(&self.reason);
        if r.is_none() {
            *r = Some(reason.into());
        }
    }

    /// Whether [`cancel`](Cancel::cancel) was called.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }

    /// The reason given to [`cancel`](Cancel::cancel), if it was called.
    #[must_use]
    pub fn reason(&self) -> Option<String> {
        lock(&self.reason).clone()
    }
}
