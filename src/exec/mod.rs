//! An executor for mapping a function over items (aics_dask_utils' `map`/`batched_map`, done
//! right): results in input order or as they complete, a bounded number of items in flight over
//! an iterator of any length, barrier batches or a sliding window, and a choice of failing fast
//! or collecting every item's result.
//!
//! [`Sweeps`] run a function over the cartesian product of parameter lists.
//!
//! This release runs items on in-process worker threads ([`Executor::threads`]); worker processes
//! and cluster workers are not available to the executor yet (use [`Runner`](crate::Runner) for
//! blocks in worker processes).
//!
//! ```
//! use blockwise::exec::{Executor, MapOptions, Mode};
//!
//! let ex = Executor::threads(4);
//! // In input order, whatever order they finish in.
//! let out = ex.map(|x: u64| Ok::<_, String>(x + 1), [1, 2, 3]).unwrap();
//! assert_eq!(out, vec![2, 3, 4]);
//! // A lazy range of any length with at most 64 items in flight, folded as results arrive.
//! let sum: u64 = ex
//!     .bounded_map(|x: u64| Ok::<_, String>(x + 1), 0..1_000_000u64, MapOptions::new(64).mode(Mode::Window))
//!     .map(|r| r.unwrap())
//!     .sum();
//! assert_eq!(sum, 500_000_500_000);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::scheduler::panic_message;

mod stream;
mod sweep;
pub use stream::{ParStream, Source, Stream, StreamError};
pub use sweep::{Sweep, SweepStatus, Sweeps};

/// An item that failed, with its index in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// The function returned an error (or panicked) for the item at `index`.
    #[error("item {index} failed: {message}")]
    Failed {
        /// The item's position in the input (from 0).
        index: usize,
        /// The error's text.
        message: String,
    },
    /// [`Executor::map_zip`] got inputs of different lengths.
    #[error(
        "inputs of different lengths: the first ended after {first} items, the second after {second}"
    )]
    LengthMismatch {
        /// Items the first input had (at least, when it did not end).
        first: usize,
        /// Items the second input had.
        second: usize,
    },
}

impl ItemError {
    /// The index of the failed item (`None` for a length mismatch).
    #[must_use]
    pub fn index(&self) -> Option<usize> {
        match self {
            ItemError::Failed { index, .. } => Some(*index),
            ItemError::LengthMismatch { .. } => None,
        }
    }
}

/// How items are submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Keep `size` items in flight, submitting the next one as soon as one finishes (default).
    #[default]
    Window,
    /// aics_dask_utils' `batched_map`: submit `size` items, wait for all of them, then the next
    /// batch. The slowest item of a batch holds up the next.
    Barrier,
}

/// What an error does to the rest of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Submit nothing more; deliver the results before the failed item, then its error, then
    /// end (items already in flight are waited for and dropped) (default).
    #[default]
    FailFast,
    /// Run every item and deliver each one's result.
    Collect,
}

/// Options of [`Executor::bounded_map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct MapOptions {
    size: usize,
    mode: Mode,
    on_error: OnError,
    ordered: bool,
    reorder_limit: usize,
    progress: crate::Progress,
}

impl MapOptions {
    /// At most `size` items in flight (at least 1).
    pub fn new(size: usize) -> MapOptions {
        let size = size.max(1);
        MapOptions {
            size,
            mode: Mode::Window,
            on_error: OnError::FailFast,
            ordered: true,
            reorder_limit: size.saturating_mul(16),
            progress: crate::Progress::Never,
        }
    }

    /// Whether to show a progress bar counting finished items, with a total when the input's
    /// length is known (default [`Progress::Never`](crate::Progress::Never);
    /// [`Progress::Auto`](crate::Progress::Auto) shows it on a terminal).
    pub fn progress(mut self, progress: crate::Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Window (default) or barrier batches.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Fail fast (default) or collect every result.
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Deliver results in input order (default) or as they complete.
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// In order, at most this many finished results wait for an earlier slow item before
    /// submission pauses (default 16 × size); bounds memory when one item is very slow.
    pub fn reorder_limit(mut self, limit: usize) -> Self {
        self.reorder_limit = limit.max(1);
        self
    }
}

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A pool of worker threads that runs items. Cloning is cheap and shares the pool, which stops
/// (waiting for running items) when the last clone is dropped.
#[derive(Clone)]
pub struct Executor {
    pool: Arc<Pool>,
}

struct Pool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Pool {
    /// Lets queued and running items finish, then joins the threads.
    fn drop(&mut self) {
        self.tx = None;
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            // The last handle may be dropped by an item running on the pool itself.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("threads", &self.pool.threads.len())
            .finish()
    }
}

impl Executor {
    /// An executor with `n` worker threads (at least 1).
    #[must_use]
    pub fn threads(n: usize) -> Executor {
        let (tx, rx) = unbounded::<Job>();
        let threads = (0..n.max(1))
            .filter_map(|i| {
                let rx: Receiver<Job> = rx.clone();
                std::thread::Builder::new()
                    .name(format!("blockwise-exec-{i}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    })
                    .map_err(|e| tracing::error!("cannot start an executor thread: {e}"))
                    .ok()
            })
            .collect();
        Executor {
            pool: Arc::new(Pool {
                tx: Some(tx),
                threads,
            }),
        }
    }

    /// Queues a job on the pool; false if the pool is shut down.
    pub(crate) fn submit(&self, job: Job) -> bool {
        self.pool.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// The number of items that can run at once: the default batch or window size.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.pool.threads.len().max(1)
    }

    /// Maps `f` over `items` and returns the results in input order, or the first error (by
    /// input order) with its item's index. At most [`slots`](Self::slots) items are in flight.
    ///
    /// # Errors
    ///
    /// [`ItemError::Failed`] for the first failing item; nothing after it is submitted.
    pub fn map<T, R, E, F>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
    ) -> Result<Vec<R>, ItemError>
    where
        T: Send + 'static,
        R: Send + 'static,
        E: fmt::Display,
        F: Fn(T) -> Result<R, E> + Send + Sync + 'static,
    {
        self.bounded_map(f, items, MapOptions::new(self.slots()))
            .collect()
    }

    /// Maps `f` over pairs from two inputs, which must have the same length.
    ///
    /// # Errors
    ///
    /// [`ItemError::LengthMismatch`] if one input ends before the other (the pairs before it
    /// run first); [`ItemError::Failed`] as for [`map`](Self::map).
    pub fn map_zip<A, B, R, E, F>(
        &self,
        f: F,
        a: impl IntoIterator<Item = A>,
        b: impl IntoIterator<Item = B>,
    ) -> Result<Vec<R>, ItemError>
    where
        A: Send + 'static,
        B: Send + 'static,
        R: Send + 'static,
        E: fmt::Display,
        F: Fn(A, B) -> Result<R, E> + Send + Sync + 'static,
    {
        let mut a = a.into_iter();
        let mut b = b.into_iter();
        let mut n = 0usize;
        let mut mismatch: Option<(usize, usize)> = None;
        let pairs = std::iter::from_fn(|| match (a.next(), b.next()) {
            (Some(x), Some(y)) => {
                n += 1;
                Some((x, y))
            }
            (None, None) => None,
            (Some(_), None) => {
                mismatch = Some((n + 1 + a.by_ref().count(), n));
                None
            }
            (None, Some(_)) => {
                mismatch = Some((n, n + 1 + b.by_ref().count()));
                None
            }
        });
        let out: Result<Vec<R>, ItemError> = self
            .bounded_map(move |(x, y)| f(x, y), pairs, MapOptions::new(self.slots()))
            .collect();
        let out = out?;
        match mismatch {
            Some((first, second)) => Err(ItemError::LengthMismatch { first, second }),
            None => Ok(out),
        }
    }

    /// Maps `f` lazily over `items` (an iterator of any length, consumed as items are
    /// submitted) with at most `opts.size` items in flight; the returned iterator yields each
    /// item's result, in input order unless [`MapOptions::ordered`] is false.
    pub fn bounded_map<T, R, E, F, I>(
        &self,
        f: F,
        items: I,
        opts: MapOptions,
    ) -> BoundedMap<R, I::IntoIter, T>
    where
        T: Send + 'static,
        R: Send + 'static,
        E: fmt::Display,
        F: Fn(T) -> Result<R, E> + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
    {
        let f = Arc::new(f);
        let run: RunFn<T, R> =
            Arc::new(move |x: T| match catch_unwind(AssertUnwindSafe(|| f(x))) {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(e.to_string()),
                Err(p) => Err(format!("panic: {}", panic_message(p.as_ref()))),
            });
        let (done_tx, done_rx) = unbounded();
        let items = items.into_iter();
        let total = match items.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo as u64),
            _ => None,
        };
        BoundedMap {
            progress: crate::observe::ItemProgress::new(opts.progress.enabled(), "map", total),
            jobs: self.clone(),
            run,
            items,
            opts,
            next_index: 0,
            next_out: 0,
            in_flight: 0,
            exhausted: false,
            stopped: false,
            failed_at: None,
            finished: false,
            buffer: BTreeMap::new(),
            done_tx,
            done_rx,
            peak: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Like [`bounded_map`](Self::bounded_map) with `size` = [`slots`](Self::slots), yielding
    /// `(index, result)` as items complete.
    pub fn as_completed<T, R, E, F, I>(
        &self,
        f: F,
        items: I,
    ) -> impl Iterator<Item = (usize, Result<R, ItemError>)>
    where
        T: Send + 'static,
        R: Send + 'static,
        E: fmt::Display,
        F: Fn(T) -> Result<R, E> + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
    {
        let opts = MapOptions::new(self.slots())
            .ordered(false)
            .on_error(OnError::Collect);
        let mut m = self.bounded_map(f, items, opts);
        std::iter::from_fn(move || m.next_indexed())
    }
}

type RunFn<T, R> = Arc<dyn Fn(T) -> Result<R, String> + Send + Sync>;

/// The lazy result iterator of [`Executor::bounded_map`].
pub struct BoundedMap<R, I, T> {
    jobs: Executor,
    run: RunFn<T, R>,
    items: I,
    opts: MapOptions,
    next_index: usize,
    next_out: usize,
    in_flight: usize,
    exhausted: bool,
    /// No more submissions (fail-fast error seen).
    stopped: bool,
    failed_at: Option<usize>,
    finished: bool,
    buffer: BTreeMap<usize, Result<R, String>>,
    done_tx: Sender<(usize, Result<R, String>)>,
    done_rx: Receiver<(usize, Result<R, String>)>,
    peak: Arc<AtomicUsize>,
    progress: crate::observe::ItemProgress,
}

impl<R, I, T> fmt::Debug for BoundedMap<R, I, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedMap")
            .field("options", &self.opts)
            .field("submitted", &self.next_index)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl<R, I, T> BoundedMap<R, I, T>
where
    T: Send + 'static,
    R: Send + 'static,
    I: Iterator<Item = T>,
{
    /// The most items that were in flight (submitted, result not yet received) at once so far.
    #[must_use]
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn submit(&mut self) -> bool {
        let Some(item) = self.items.next() else {
            self.exhausted = true;
            return false;
        };
        let index = self.next_index;
        self.next_index += 1;
        self.in_flight += 1;
        self.peak.fetch_max(self.in_flight, Ordering::Relaxed);
        let (run, tx) = (Arc::clone(&self.run), self.done_tx.clone());
        let job: Job = Box::new(move || {
            let r = run(item);
            let _ = tx.send((index, r));
        });
        if !self.jobs.submit(job) {
            // The executor is gone: report the item as failed.
            self.in_flight -= 1;
            self.buffer
                .insert(index, Err("the executor was shut down".into()));
        }
        true
    }

    fn refill(&mut self) {
        if self.stopped || self.exhausted {
            return;
        }
        match self.opts.mode {
            Mode::Window => {
                // Stop pulling when a result comes in, so that it is delivered before the
                // input is asked again (it may block until its next item exists).
                while self.in_flight < self.opts.size
                    && (!self.opts.ordered || self.buffer.len() < self.opts.reorder_limit)
                    && (self.in_flight == 0 || self.done_rx.is_empty())
                    && self.submit()
                {}
            }
            Mode::Barrier => {
                // The next batch starts when the last one has finished.
                if self.in_flight == 0 {
                    for _ in 0..self.opts.size {
                        if !self.submit() {
                            break;
                        }
                    }
                }
            }
        }
    }

    fn error(index: usize, message: String) -> ItemError {
        ItemError::Failed { index, message }
    }

    /// The next `(index, result)`, in the order the options ask for.
    fn next_indexed(&mut self) -> Option<(usize, Result<R, ItemError>)> {
        loop {
            if self.finished {
                self.progress.finish();
                return None;
            }
            // Results that are already here go out before the input is asked for more (the
            // input may block, e.g. a follower waiting for the next frame).
            while let Ok(done) = self.done_rx.try_recv() {
                self.receive(done);
            }
            if let Some(out) = self.deliverable() {
                return Some(out);
            }
            self.refill();
            if let Some(out) = self.deliverable() {
                return Some(out);
            }
            if self.in_flight == 0 && (self.exhausted || self.stopped) {
                self.finished = true;
                self.progress.finish();
                return None;
            }
            match self.done_rx.recv() {
                Ok(done) => self.receive(done),
                Err(_) => {
                    self.finished = true;
                    return None;
                }
            }
        }
    }

    fn receive(&mut self, (index, r): (usize, Result<R, String>)) {
        self.in_flight -= 1;
        if r.is_err() && self.opts.on_error == OnError::FailFast {
            self.stopped = true;
            self.failed_at = Some(self.failed_at.map_or(index, |f| f.min(index)));
        }
        if self.failed_at.is_some_and(|f| index > f) {
            return; // after the failure: dropped
        }
        self.buffer.insert(index, r);
    }

    fn deliverable(&mut self) -> Option<(usize, Result<R, ItemError>)> {
        if self.opts.ordered {
            let r = self.buffer.remove(&self.next_out)?;
            let index = self.next_out;
            self.next_out += 1;
            Some(self.deliver(index, r))
        } else {
            let (index, r) = self.buffer.pop_first()?;
            Some(self.deliver(index, r))
        }
    }

    fn deliver(&mut self, index: usize, r: Result<R, String>) -> (usize, Result<R, ItemError>) {
        self.progress.inc();
        match r {
            Ok(v) => (index, Ok(v)),
            Err(message) => {
                if self.opts.on_error == OnError::FailFast {
                    // The failure ends the map; wait for what is still running.
                    self.drain();
                    self.finished = true;
                }
                (index, Err(Self::error(index, message)))
            }
        }
    }

    fn drain(&mut self) {
        self.stopped = true;
        while self.in_flight > 0 {
            if self.done_rx.recv().is_err() {
                break;
            }
            self.in_flight -= 1;
        }
        self.buffer.clear();
    }
}

impl<R, I, T> Iterator for BoundedMap<R, I, T>
where
    T: Send + 'static,
    R: Send + 'static,
    I: Iterator<Item = T>,
{
    type Item = Result<R, ItemError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_indexed().map(|(_, r)| r)
    }
}

impl<R, I, T> Drop for BoundedMap<R, I, T> {
    /// Items in flight finish (their results are dropped); nothing more is submitted.
    fn drop(&mut self) {
        while self.in_flight > 0 {
            if self.done_rx.recv().is_err() {
                break;
            }
            self.in_flight -= 1;
        }
    }
}

#[cfg(test)]
mod tests;
