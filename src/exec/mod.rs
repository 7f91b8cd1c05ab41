//! An executor for mapping a function over items (aics_dask_utils' `map`/`batched_map`, done
//! right): results in input order or as they complete, a bounded number of items in flight over
//! an iterator of any length, barrier batches or a sliding window, and a choice of failing fast
//! or collecting every item's result.
//!
//! [`Sweeps`] run a function over the cartesian product of parameter lists.
//!
//! # Backends
//!
//! One API over three backends, chosen by the constructor:
//!
//! * [`Executor::threads`]: in-process worker threads; runs closures and [`Function`]s.
//! * [`Executor::processes`]: worker processes on this machine;
//! * [`Executor::launcher`]: worker processes started by a cluster's batch system (SLURM, LSF,
//!   PBS, SGE, a command template; [`crate::launch`]).
//!
//! Worker processes are the block runner's: they re-execute the program, connect back over TCP
//! with the run's token, send heartbeats, and are replaced when they die (see
//! [`ExecutorBuilder`]). Since code cannot travel between processes, they run [`Function`]s —
//! closures registered under a name before the executor starts — with items and results as
//! JSON. A program written with `Function`s runs unchanged on every backend:
//!
//! ```no_run
//! use blockwise::exec::{Executor, Function};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inc = Function::new("inc", |x: u64| Ok::<u64, String>(x + 1));
//! let ex = match std::env::args().nth(1).as_deref() {
//!     Some("processes") => Executor::processes(2).function(&inc).start()?,
//!     _ => Executor::threads(2),
//! };
//! assert_eq!(ex.map(inc, [1, 2, 3])?, vec![2, 3, 4]);
//! # Ok(())
//! # }
//! ```
//!
//! Shared read-only data goes to every worker once with [`Executor::scatter`]; functions read
//! it with [`scattered`].
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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, unbounded};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Mutex;

use crate::fleet::WorkerOptions;
use crate::fleet::protocol::MAX_FRAME;
use crate::launch::Launcher;
use crate::run::ProcessOptions;

mod builder;
mod pool;
mod remote;
pub(crate) use remote::POOL_PREFIX;
mod stream;
mod sweep;
mod work;
pub use builder::ExecutorBuilder;
pub use stream::{ParStream, Source, Stream, StreamError};
pub use sweep::{Sweep, SweepStatus, Sweeps};
pub use work::{Function, Work, scattered};

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
    /// The item at `index` ran longer than its time limit ([`MapOptions::timeout`],
    /// [`Executor::with_timeout`], [`ExecutorBuilder::timeout`]). On threads, its thread was
    /// abandoned and replaced and its result, if it ever comes, is dropped.
    #[error("item {index} timed out after {limit:?}")]
    TimedOut {
        /// The item's position in the input (from 0).
        index: usize,
        /// The limit it ran past.
        limit: Duration,
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
            ItemError::Failed { index, .. } | ItemError::TimedOut { index, .. } => Some(*index),
            ItemError::LengthMismatch { .. } => None,
        }
    }

    /// The error of item `index` that failed with `e`.
    fn of(index: usize, e: CallError) -> ItemError {
        match e {
            CallError::Failed(message) => ItemError::Failed { index, message },
            CallError::TimedOut(limit) => ItemError::TimedOut { index, limit },
        }
    }
}

/// Why one call of a function gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// It returned an error or panicked, or could not run (the text says why).
    Failed(String),
    /// It ran past this limit.
    TimedOut(Duration),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Failed(message) => f.write_str(message),
            CallError::TimedOut(limit) => write!(f, "timed out after {limit:?}"),
        }
    }
}

/// An executor that could not start or share data; in [`Error::Executor`](crate::Error::Executor).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// Two functions were registered under one name
    /// ([`ExecutorBuilder::function`]).
    #[error("executor: two functions are registered under the name {name:?}")]
    DuplicateFunction {
        /// The name.
        name: String,
    },
    /// Data given to [`Executor::scatter`] does not serialise.
    #[error("executor: scattering {name:?}: {message}")]
    ScatterEncode {
        /// The name it was scattered under.
        name: String,
        /// The serialiser's error.
        message: String,
    },
    /// Data given to [`Executor::scatter`] is larger than one message to a worker process
    /// can carry.
    #[error(
        "executor: scattering {name:?}: {bytes} bytes is more than a message can carry ({limit} bytes); store it and scatter where it is"
    )]
    ScatterTooLarge {
        /// The name it was scattered under.
        name: String,
        /// Its size as JSON.
        bytes: usize,
        /// The most a message carries.
        limit: usize,
    },
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
    progress: crate::observe::Progress,
    /// `None`: the executor's limit; `Some(None)`: none for this map.
    timeout: Option<Option<Duration>>,
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
            progress: crate::observe::Progress::Never,
            timeout: None,
        }
    }

    /// A time limit for each item of this map, instead of the executor's
    /// ([`Executor::with_timeout`], [`ExecutorBuilder::timeout`]): an item that runs longer
    /// resolves with [`ItemError::TimedOut`], like any failure (so [`OnError`] applies). The
    /// clock starts when the item starts running, not when it is queued.
    ///
    /// ```
    /// use blockwise::exec::{Executor, ItemError, MapOptions, OnError};
    /// use std::time::Duration;
    ///
    /// let ex = Executor::threads(2);
    /// let (stop, stuck) = std::sync::mpsc::channel::<()>();
    /// let stuck = std::sync::Mutex::new(stuck);
    /// let limit = Duration::from_millis(500);
    /// let f = move |x: u64| {
    ///     if x == 0 {
    ///         // Hangs (until the example ends); its thread is replaced.
    ///         let _ = stuck.lock().unwrap().recv_timeout(Duration::from_secs(60));
    ///     }
    ///     Ok::<_, String>(x * 2)
    /// };
    /// let opts = MapOptions::new(2).timeout(limit).on_error(OnError::Collect);
    /// let out: Vec<_> = ex.bounded_map(f, 0..4u64, opts).collect();
    /// assert_eq!(out[0], Err(ItemError::TimedOut { index: 0, limit }));
    /// assert_eq!(out[1..], [Ok(2), Ok(4), Ok(6)]);
    /// drop(stop);
    /// ```
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(Some(limit));
        self
    }

    /// No time limit for the items of this map, whatever the executor's.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Some(None);
        self
    }

    /// Whether to show a progress bar counting finished items, with a total when the input's
    /// length is known (default [`Progress::Never`](crate::Progress::Never);
    /// [`Progress::Auto`](crate::Progress::Auto) shows it on a terminal).
    pub fn progress(mut self, progress: crate::observe::Progress) -> Self {
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

/// Runs items: in-process worker threads ([`Executor::threads`]), or worker processes on this
/// machine ([`Executor::processes`]) or a cluster ([`Executor::launcher`]) that connect back
/// over TCP. Every method works the same on every backend.
///
/// Cloning is cheap and shares the backend, which stops when the last clone is dropped: queued
/// and running items finish first; then threads are joined, or workers are told to leave and
/// their jobs cancelled.
///
/// Closures run on threads only (Rust cannot send code to another process); a [`Function`]
/// (a closure registered under a name) runs on every backend, so code written with
/// `Function`s switches backend by changing one constructor.
///
/// # Time limits
///
/// With a time limit ([`Executor::with_timeout`], [`ExecutorBuilder::timeout`], or per map
/// [`MapOptions::timeout`]), an item that runs longer than the limit resolves with
/// [`ItemError::TimedOut`] (a stream node or a sweep call gets the same error), as blocks do
/// with [`TaskBuilder::timeout`](crate::TaskBuilder::timeout). On threads, a fresh thread takes
/// the stuck one's place, so the pool keeps its width; Rust cannot kill a thread, so the stuck
/// one is abandoned, runs on until the function returns (holding whatever it holds), and
/// exits; its result is dropped, and dropping the executor does not wait for it. An item that
/// can hang for ever or must be stopped hard belongs in a worker process. Without a limit (the
/// default), items run as long as they take.
#[derive(Clone)]
pub struct Executor {
    backend: Arc<Backend>,
    /// The time limit of each item this handle runs.
    timeout: Option<Duration>,
}

enum Backend {
    Threads(pool::Pool),
    Remote(remote::RemotePool),
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.backend {
            Backend::Threads(pool) => f
                .debug_struct("Executor")
                .field("threads", &pool.width())
                .field("timeout", &self.timeout)
                .finish(),
            Backend::Remote(pool) => f
                .debug_struct("Executor")
                .field("workers", &pool.workers)
                .field("launcher", &pool.launcher)
                .field("functions", &pool.functions)
                .field("timeout", &self.timeout)
                .finish(),
        }
    }
}

impl Executor {
    /// An executor with `n` worker threads (at least 1).
    #[must_use]
    pub fn threads(n: usize) -> Executor {
        Executor {
            backend: Arc::new(Backend::Threads(pool::Pool::new(n))),
            timeout: None,
        }
    }

    /// This executor (sharing its backend) with a time limit for each item it runs: see
    /// [time limits](Executor#time-limits). [`MapOptions::timeout`] overrides it per map.
    ///
    /// ```
    /// use blockwise::exec::{Executor, ItemError};
    /// use std::time::Duration;
    ///
    /// let limit = Duration::from_millis(50);
    /// let ex = Executor::threads(2).with_timeout(limit);
    /// assert_eq!(ex.timeout(), Some(limit));
    /// let (_keep, never) = std::sync::mpsc::channel::<()>();
    /// let never = std::sync::Mutex::new(never);
    /// let hang = move |_: u32| {
    ///     let _ = never.lock().unwrap().recv_timeout(Duration::from_secs(60));
    ///     Ok::<u32, String>(0)
    /// };
    /// assert_eq!(ex.map(hang, [7]), Err(ItemError::TimedOut { index: 0, limit }));
    /// ```
    #[must_use]
    pub fn with_timeout(&self, limit: Duration) -> Executor {
        Executor {
            backend: Arc::clone(&self.backend),
            timeout: Some(limit),
        }
    }

    /// The time limit of each item this executor runs (`None`: no limit).
    #[must_use]
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// `n` worker processes on this machine (a [`Local`](crate::launch::Local) launcher, the
    /// default [`WorkerOptions`]), configured by the returned builder (the worker processes'
    /// settings with [`ExecutorBuilder::workers`]) and started by [`ExecutorBuilder::start`].
    pub fn processes(n: usize) -> ExecutorBuilder {
        ExecutorBuilder::new(Arc::new(crate::launch::Local::new()), n)
    }

    /// `n` worker processes started by `launcher` (SLURM, LSF, PBS, SGE, a command template:
    /// see [`crate::launch`]), configured by the returned builder: the short form of
    /// `Executor::processes(n).workers(WorkerOptions::launcher(launcher))`.
    pub fn launcher(launcher: impl Launcher + 'static, n: usize) -> ExecutorBuilder {
        ExecutorBuilder::new(Arc::new(launcher), n)
    }

    /// Runs `work` on `item` on this executor's backend, within this handle's time limit, and
    /// hands the result to `done` (on a pool thread, the watchdog's thread for a timeout, or
    /// the worker pool's thread). `start`, if given, is asked right before the item starts
    /// (threads) or goes to a worker (processes); false drops the item without calling `done`.
    pub(crate) fn call<T, R, W>(
        &self,
        work: &Arc<W>,
        item: T,
        start: Option<Box<dyn FnOnce() -> bool + Send>>,
        done: impl FnOnce(Result<R, CallError>) + Send + 'static,
    ) where
        T: Send + 'static,
        R: Send + 'static,
        W: Work<T, R> + ?Sized,
    {
        let limit = self.timeout;
        match &*self.backend {
            Backend::Threads(pool) => {
                let work = Arc::clone(work);
                // Reports "shut down" if the job is dropped without running.
                let mut done = DoneGuard(Some(Box::new(done)));
                let job: pool::Job = Box::new(move |worker: &pool::Worker| {
                    if let Some(start) = start
                        && !start()
                    {
                        drop(done.0.take()); // cancelled: no result
                        return;
                    }
                    let Some(limit) = limit else {
                        if let Some(f) = done.0.take() {
                            f(work::run_guarded(&*work, item).map_err(CallError::Failed));
                        }
                        return;
                    };
                    // Whoever comes first resolves the item: this thread with its result, or
                    // the watchdog with the timeout.
                    let once = Arc::new(Mutex::new(done.0.take()));
                    let expire = Arc::clone(&once);
                    let token = worker.begin(
                        limit,
                        Box::new(move || {
                            let f = crate::util::lock(&expire).take();
                            if let Some(f) = f {
                                f(Err(CallError::TimedOut(limit)));
                            }
                        }),
                    );
                    let r = work::run_guarded(&*work, item);
                    if worker.end(token) {
                        let f = crate::util::lock(&once).take();
                        if let Some(f) = f {
                            f(r.map_err(CallError::Failed));
                        }
                    } else {
                        tracing::debug!(
                            "an item that timed out after {limit:?} returned; its result is dropped"
                        );
                    }
                });
                if !pool.submit(job) {
                    tracing::warn!("an item was submitted to an executor that was shut down");
                }
            }
            Backend::Remote(pool) => {
                let Some(name) = work.remote_name() else {
                    return done(Err(CallError::Failed(work::CLOSURE_REMOTE.into())));
                };
                if !pool.functions.iter().any(|f| f == name) {
                    return done(Err(CallError::Failed(format!(
                        "function {name:?} is not registered with this executor (registered: \
                         {:?}); add it with ExecutorBuilder::function before start()",
                        pool.functions
                    ))));
                }
                let input = match work.encode(item) {
                    Ok(v) => v,
                    Err(e) => return done(Err(CallError::Failed(e))),
                };
                let func: Arc<str> = Arc::from(name);
                let decoder = Arc::clone(work);
                pool.submit(remote::Call::new(
                    func,
                    input,
                    start,
                    limit,
                    Box::new(move |r| {
                        done(r.and_then(|v| decoder.decode(v).map_err(CallError::Failed)));
                    }),
                ));
            }
        }
    }

    /// The number of items that can run at once (threads, or worker processes): the default
    /// batch or window size.
    #[must_use]
    pub fn slots(&self) -> usize {
        match &*self.backend {
            Backend::Threads(pool) => pool.width().max(1),
            Backend::Remote(pool) => pool.workers,
        }
    }

    /// Worker processes connected now (for threads: the number of threads).
    #[must_use]
    pub fn connected_workers(&self) -> usize {
        match &*self.backend {
            Backend::Threads(pool) => pool.width(),
            Backend::Remote(pool) => pool.connected.get(),
        }
    }

    /// Waits until at least `n` workers are connected, for at most `timeout`; returns whether
    /// they are. Items do not need it (they wait in the queue until a worker takes them).
    #[must_use]
    pub fn wait_for_workers(&self, n: usize, timeout: Duration) -> bool {
        match &*self.backend {
            Backend::Threads(pool) => pool.width() >= n,
            Backend::Remote(pool) => pool.connected.wait_for(n, timeout),
        }
    }

    /// Shares read-only `data` under `name` with every function this executor runs, which
    /// reads it with [`scattered`]: each worker process receives it once (before its next
    /// item), on threads it is shared in place. Scattering again under a name replaces the
    /// data for later items. Returns the data, shared.
    ///
    /// # Errors
    ///
    /// [`Error::Executor`](crate::Error::Executor) ([`ExecutorError::ScatterEncode`]) if the
    /// data does not serialise, or ([`ExecutorError::ScatterTooLarge`]) is larger than one
    /// message (16 MiB) for a process backend: store such data and scatter its location.
    pub fn scatter<D>(&self, name: &str, data: D) -> Result<Arc<D>, crate::Error>
    where
        D: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let data = Arc::new(data);
        if let Backend::Remote(pool) = &*self.backend {
            let value = serde_json::to_value(&*data).map_err(|e| ExecutorError::ScatterEncode {
                name: name.to_owned(),
                message: e.to_string(),
            })?;
            let len = serde_json::to_vec(&value).map_or(0, |b| b.len());
            if len > MAX_FRAME - 4096 {
                return Err(ExecutorError::ScatterTooLarge {
                    name: name.to_owned(),
                    bytes: len,
                    limit: MAX_FRAME,
                }
                .into());
            }
            pool.scatter(name, value);
        }
        let any: Arc<dyn std::any::Any + Send + Sync> = data.clone();
        work::store_ready(name, any);
        Ok(data)
    }

    /// Maps `f` over `items` and returns the results in input order, or the first error (by
    /// input order) with its item's index. At most [`slots`](Self::slots) items are in flight.
    ///
    /// # Errors
    ///
    /// [`ItemError::Failed`] for the first failing item; nothing after it is submitted.
    pub fn map<T, R, W>(
        &self,
        f: W,
        items: impl IntoIterator<Item = T>,
    ) -> Result<Vec<R>, ItemError>
    where
        T: Send + 'static,
        R: Send + 'static,
        W: Work<T, R>,
    {
        self.bounded_map(f, items, MapOptions::new(self.slots()))
            .collect()
    }

    /// Maps `f` over pairs `(a, b)` from two inputs, which must have the same length.
    ///
    /// ```
    /// use blockwise::exec::{Executor, ItemError};
    ///
    /// let ex = Executor::threads(2);
    /// let add = |(a, b): (i64, i64)| Ok::<i64, String>(a + b);
    /// assert_eq!(ex.map_zip(add, [1, 2, 3], [10, 20, 30]), Ok(vec![11, 22, 33]));
    /// assert_eq!(
    ///     ex.map_zip(add, [1, 2, 3], [10, 20]),
    ///     Err(ItemError::LengthMismatch { first: 3, second: 2 })
    /// );
    /// ```
    ///
    /// # Errors
    ///
    /// [`ItemError::LengthMismatch`] if one input ends before the other (the pairs before it
    /// run first); [`ItemError::Failed`] as for [`map`](Self::map).
    pub fn map_zip<A, B, R, W>(
        &self,
        f: W,
        a: impl IntoIterator<Item = A>,
        b: impl IntoIterator<Item = B>,
    ) -> Result<Vec<R>, ItemError>
    where
        A: Send + 'static,
        B: Send + 'static,
        R: Send + 'static,
        W: Work<(A, B), R>,
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
            .bounded_map(f, pairs, MapOptions::new(self.slots()))
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
    pub fn bounded_map<T, R, W, I>(
        &self,
        f: W,
        items: I,
        opts: MapOptions,
    ) -> BoundedMap<R, I::IntoIter, T>
    where
        T: Send + 'static,
        R: Send + 'static,
        W: Work<T, R>,
        I: IntoIterator<Item = T>,
    {
        let run: Arc<dyn Work<T, R>> = Arc::new(f);
        let (done_tx, done_rx) = unbounded();
        let items = items.into_iter();
        let total = match items.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo as u64),
            _ => None,
        };
        let mut jobs = self.clone();
        if let Some(limit) = opts.timeout {
            jobs.timeout = limit;
        }
        BoundedMap {
            progress: crate::observe::ItemProgress::new(opts.progress.enabled(), "map", total),
            jobs,
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
    pub fn as_completed<T, R, W, I>(
        &self,
        f: W,
        items: I,
    ) -> impl Iterator<Item = (usize, Result<R, ItemError>)>
    where
        T: Send + 'static,
        R: Send + 'static,
        W: Work<T, R>,
        I: IntoIterator<Item = T>,
    {
        let opts = MapOptions::new(self.slots())
            .ordered(false)
            .on_error(OnError::Collect);
        let mut m = self.bounded_map(f, items, opts);
        std::iter::from_fn(move || m.next_indexed())
    }
}

type DoneFn<R> = Box<dyn FnOnce(Result<R, CallError>) + Send>;

/// A result callback that is told the executor shut down if its job never ran.
struct DoneGuard<R>(Option<DoneFn<R>>);

impl<R> Drop for DoneGuard<R> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(CallError::Failed(
                "the executor was shut down before the item ran".into(),
            )));
        }
    }
}

/// The lazy result iterator of [`Executor::bounded_map`].
pub struct BoundedMap<R, I, T> {
    jobs: Executor,
    run: Arc<dyn Work<T, R>>,
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
    buffer: BTreeMap<usize, Result<R, CallError>>,
    done_tx: Sender<(usize, Result<R, CallError>)>,
    done_rx: Receiver<(usize, Result<R, CallError>)>,
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
        let tx = self.done_tx.clone();
        self.jobs.call(&self.run, item, None, move |r| {
            let _ = tx.send((index, r));
        });
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

    fn receive(&mut self, (index, r): (usize, Result<R, CallError>)) {
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

    fn deliver(&mut self, index: usize, r: Result<R, CallError>) -> (usize, Result<R, ItemError>) {
        self.progress.inc();
        match r {
            Ok(v) => (index, Ok(v)),
            Err(e) => {
                if self.opts.on_error == OnError::FailFast {
                    // The failure ends the map; wait for what is still running.
                    self.drain();
                    self.finished = true;
                }
                (index, Err(ItemError::of(index, e)))
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
