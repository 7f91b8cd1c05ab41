//! Ctrl-C and SIGTERM during a process run: the driver notices, cancels every job it submitted
//! and returns [`Error::Interrupted`](crate::Error::Interrupted).
//!
//! The handlers are installed once per process, the first time a process run starts. While no
//! run is active they do what the default action does (terminate); during a run the first
//! signal is recorded for the driver, and a second one terminates at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::{Error, WorkerErrorKind};

struct Handlers {
    /// True while no run is active: signals take their default action.
    idle: Arc<AtomicBool>,
    /// Set by the first signal during a run; a second signal then terminates.
    got: Arc<AtomicBool>,
    got_int: Arc<AtomicBool>,
    got_term: Arc<AtomicBool>,
    /// How many runs are active (runs may run in several threads).
    active: AtomicUsize,
}

static HANDLERS: OnceLock<Result<Handlers, String>> = OnceLock::new();

fn install_handlers() -> Result<Handlers, String> {
    let idle = Arc::new(AtomicBool::new(true));
    let got = Arc::new(AtomicBool::new(false));
    let got_int = Arc::new(AtomicBool::new(false));
    let got_term = Arc::new(AtomicBool::new(false));
    for (sig, which) in [(SIGINT, &got_int), (SIGTERM, &got_term)] {
        let err = |e: std::io::Error| format!("installing a handler for signal {sig}: {e}");
        // Actions run in registration order: a second signal during a run terminates, a
        // signal outside a run takes the default action, a first signal during a run is
        // recorded.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&got))
            .map_err(err)?;
        signal_hook::flag::register_conditional_default(sig, Arc::clone(&idle)).map_err(err)?;
        signal_hook::flag::register(sig, Arc::clone(&got)).map_err(err)?;
        signal_hook::flag::register(sig, Arc::clone(which)).map_err(err)?;
    }
    Ok(Handlers {
        idle,
        got,
        got_int,
        got_term,
        active: AtomicUsize::new(0),
    })
}

/// Registration of one run; dropping it ends the run's claim on the signals.
pub(crate) struct Interrupts {
    handlers: &'static Handlers,
}

impl Interrupts {
    pub(crate) fn install() -> Result<Interrupts, Error> {
        let handlers = HANDLERS
            .get_or_init(install_handlers)
            .as_ref()
            .map_err(|message| Error::worker(WorkerErrorKind::Signals, message.clone()))?;
        if handlers.active.fetch_add(1, Ordering::SeqCst) == 0 {
            handlers.got.store(false, Ordering::SeqCst);
            handlers.got_int.store(false, Ordering::SeqCst);
            handlers.got_term.store(false, Ordering::SeqCst);
            handlers.idle.store(false, Ordering::SeqCst);
        }
        Ok(Interrupts { handlers })
    }

    /// The signal received during the run, if any.
    pub(crate) fn received(&self) -> Option<String> {
        let h = self.handlers;
        if h.got_int.load(Ordering::SeqCst) {
            Some("SIGINT".to_owned())
        } else if h.got_term.load(Ordering::SeqCst) {
            Some("SIGTERM".to_owned())
        } else {
            None
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        if self.handlers.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.handlers.idle.store(true, Ordering::SeqCst);
            self.handlers.got.store(false, Ordering::SeqCst);
        }
    }
}
