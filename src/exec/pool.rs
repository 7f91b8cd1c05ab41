//! The thread backend: worker threads taking jobs from one queue, and the per-item time limit.
//!
//! An item with a limit registers itself while it runs. A watchdog thread (started with the
//! first such item) resolves an item that runs past its limit with a timeout, abandons the
//! thread running it (a thread cannot be killed: it runs on until the item's function returns,
//! then exits, and that late result is dropped) and starts a replacement, so that the pool keeps
//! its width. Whether the item or the watchdog got there first is decided under one lock, so an
//! item resolves exactly once. Items without a limit take no lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use rustc_hash::FxHashMap;

use crate::util::{self, lock};

/// A job for a pool thread; it gets the thread it runs on (for time limits).
pub(crate) type Job = Box<dyn FnOnce(&Worker) + Send>;

/// Worker threads and their queue. Dropping it lets queued and running items finish and waits
/// for the threads, except threads abandoned to timed-out items.
pub(super) struct Pool {
    tx: Option<Sender<Job>>,
    shared: Arc<Shared>,
    width: usize,
}

struct Shared {
    rx: Receiver<Job>,
    state: Mutex<State>,
    /// Signalled when a thread exits, an item with a limit starts or returns late, and when
    /// the pool closes.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Live threads (not abandoned), by id.
    threads: FxHashMap<u64, Thread>,
    /// Threads that left the pool after the queue closed, to join.
    exited: Vec<JoinHandle<()>>,
    next_thread: u64,
    /// Items with a time limit running now, by token.
    running: FxHashMap<u64, Running>,
    next_token: u64,
    watchdog: Option<JoinHandle<()>>,
    /// The pool was dropped: no more jobs come.
    closed: bool,
    /// Results that came after their item's limit (and were dropped).
    late: u64,
}

struct Thread {
    join: JoinHandle<()>,
    abandoned: Arc<AtomicBool>,
}

struct Running {
    thread: u64,
    deadline: Instant,
    /// Resolves the item with its timeout.
    expire: Box<dyn FnOnce() + Send>,
}

/// The pool thread a job runs on.
pub(crate) struct Worker {
    id: u64,
    abandoned: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Pool {
    /// A pool of `n` threads (at least 1; fewer if the system refuses to start more).
    pub(super) fn new(n: usize) -> Pool {
        let (tx, rx) = unbounded::<Job>();
        let shared = Arc::new(Shared {
            rx,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let mut state = lock(&shared.state);
        for _ in 0..n.max(1) {
            if let Err(e) = spawn(&shared, &mut state) {
                tracing::error!("cannot start an executor thread: {e}");
            }
        }
        let width = state.threads.len();
        drop(state);
        Pool {
            tx: Some(tx),
            shared,
            width,
        }
    }

    /// The threads the pool was started with.
    pub(super) fn width(&self) -> usize {
        self.width
    }

    /// Queues `job`; false if the pool is shut down.
    pub(super) fn submit(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Live threads now (the abandoned ones not counted).
    #[cfg(test)]
    pub(super) fn live(&self) -> usize {
        lock(&self.shared.state).threads.len()
    }

    /// Whether the watchdog was started (an item with a limit ran).
    #[cfg(test)]
    pub(super) fn has_watchdog(&self) -> bool {
        lock(&self.shared.state).watchdog.is_some()
    }

    /// Waits until `n` late results were dropped, for at most `timeout`; returns whether they
    /// were.
    #[cfg(test)]
    pub(super) fn wait_late(&self, n: u64, timeout: Duration) -> bool {
        let state = lock(&self.shared.state);
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.late < n)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.late >= n
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None;
        let me = std::thread::current().id();
        let mut state = lock(&self.shared.state);
        state.closed = true;
        self.shared.changed.notify_all();
        let on_pool = state.threads.values().any(|t| t.join.thread().id() == me)
            || state
                .watchdog
                .as_ref()
                .is_some_and(|w| w.thread().id() == me);
        if on_pool {
            // The last handle was dropped by an item (or a result callback) on the pool
            // itself: the threads finish the queue and exit on their own.
            return;
        }
        while !state.threads.is_empty() {
            state = util::wait(&self.shared.changed, state);
        }
        let exited = std::mem::take(&mut state.exited);
        let watchdog = state.watchdog.take();
        drop(state);
        for t in exited {
            if t.join().is_err() {
                tracing::error!("an executor thread panicked outside an item");
            }
        }
        if let Some(w) = watchdog {
            let _ = w.join();
        }
    }
}

/// Starts a pool thread.
fn spawn(shared: &Arc<Shared>, state: &mut State) -> std::io::Result<()> {
    let id = state.next_thread;
    state.next_thread += 1;
    let abandoned = Arc::new(AtomicBool::new(false));
    let worker = Worker {
        id,
        abandoned: Arc::clone(&abandoned),
        shared: Arc::clone(shared),
    };
    let join = std::thread::Builder::new()
        .name(format!("blockwise-exec-{id}"))
        .spawn(move || worker.run())?;
    state.threads.insert(id, Thread { join, abandoned });
    Ok(())
}

impl Worker {
    fn run(self) {
        while let Ok(job) = self.shared.rx.recv() {
            job(&self);
            if self.abandoned.load(Ordering::SeqCst) {
                // Replaced while this job overran its limit: leave without a trace.
                return;
            }
        }
        let mut state = lock(&self.shared.state);
        if let Some(t) = state.threads.remove(&self.id) {
            state.exited.push(t.join);
        }
        self.shared.changed.notify_all();
    }

    /// Registers an item that must return within `limit`; `expire` resolves it if it does not.
    /// Returns the token for [`end`](Self::end).
    pub(crate) fn begin(&self, limit: Duration, expire: Box<dyn FnOnce() + Send>) -> u64 {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        let token = state.next_token;
        state.next_token += 1;
        let deadline = Instant::now().checked_add(limit);
        match deadline {
            Some(deadline) => {
                state.running.insert(
                    token,
                    Running {
                        thread: self.id,
                        deadline,
                        expire,
                    },
                );
            }
            // A limit beyond the clock's range never passes.
            None => return token,
        }
        if state.watchdog.is_none() {
            let s = Arc::clone(shared);
            match std::thread::Builder::new()
                .name("blockwise-exec-watchdog".into())
                .spawn(move || watchdog(&s))
            {
                Ok(w) => state.watchdog = Some(w),
                Err(e) => tracing::error!(
                    "cannot start the executor's watchdog thread; item time limits are not enforced: {e}"
                ),
            }
        }
        shared.changed.notify_all();
        token
    }

    /// The item of `token` returned: true if it is still the one to resolve it, false if it
    /// already timed out (its result is to be dropped).
    pub(crate) fn end(&self, token: u64) -> bool {
        let mut state = lock(&self.shared.state);
        if state.running.remove(&token).is_some() {
            return true;
        }
        if self.abandoned.load(Ordering::SeqCst) {
            state.late += 1;
            self.shared.changed.notify_all();
            false
        } else {
            // Never registered (a limit beyond the clock's range).
            true
        }
    }
}

/// Times out items that passed their deadline: each is resolved with its timeout, its thread
/// abandoned and replaced. Runs until the pool is closed and its threads are gone.
fn watchdog(shared: &Arc<Shared>) {
    let mut state = lock(&shared.state);
    loop {
        if state.closed && state.threads.is_empty() {
            return;
        }
        let now = Instant::now();
        let expired: Vec<u64> = state
            .running
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(token, _)| *token)
            .collect();
        if expired.is_empty() {
            let next = state.running.values().map(|r| r.deadline).min();
            state = match next {
                Some(deadline) => util::wait_timeout(
                    &shared.changed,
                    state,
                    deadline.saturating_duration_since(now),
                ),
                None => util::wait(&shared.changed, state),
            };
            continue;
        }
        let mut resolve = Vec::with_capacity(expired.len());
        let mut stranded = false;
        for token in expired {
            let Some(r) = state.running.remove(&token) else {
                continue;
            };
            if let Some(t) = state.threads.remove(&r.thread) {
                t.abandoned.store(true, Ordering::SeqCst);
                tracing::warn!(
                    thread = r.thread,
                    "an executor item ran past its time limit: its thread is abandoned (it runs on until the item's function returns) and replaced"
                );
                if let Err(e) = spawn(shared, &mut state) {
                    tracing::error!("cannot replace an executor thread: {e}");
                    stranded = state.threads.is_empty();
                }
            }
            resolve.push(r.expire);
        }
        drop(state);
        for expire in resolve {
            expire();
        }
        if stranded {
            // No thread is left to run what is queued: fail it rather than leave it waiting.
            while let Ok(job) = shared.rx.try_recv() {
                drop(job);
            }
        }
        state = lock(&shared.state);
    }
}
