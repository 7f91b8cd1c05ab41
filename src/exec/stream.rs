//! Streaming pipelines (rapidz/streamz, done right): a push-based graph of typed nodes with
//! backpressure, parallel sections on an [`Executor`] that keep input order, errors that reach
//! the emitter, and a [`Source::close`] that flushes everything in flight before it returns.
//!
//! ```
//! use blockwise::exec::{Executor, Source};
//!
//! # fn main() -> Result<(), blockwise::exec::StreamError> {
//! let ex = Executor::threads(4);
//! let source = Source::<u64>::new();
//! let out = source
//!     .stream()
//!     .scatter(&ex)                                 // to the executor
//!     .map(|x| Ok::<_, String>(x * x))              // runs on its threads
//!     .buffer(8)                                    // up to 8 items in flight
//!     .gather()                                     // back, in input order
//!     .accumulate(|sum, x| Ok::<_, String>(sum + x))
//!     .sink_to_list();
//! for x in 0..5 {
//!     source.emit(x)?;                              // blocks when the buffer is full
//! }
//! source.close()?;                                  // flushes everything in flight
//! assert_eq!(*out.lock().unwrap(), vec![0, 1, 5, 14, 30]);
//! # Ok(())
//! # }
//! ```
//!
//! # Semantics
//!
//! * `emit` pushes an item through every node synchronously, depth first, to sibling nodes in
//!   the order they were attached; it returns when the item has passed every synchronous node,
//!   or has been queued by a [`buffer`](Stream::buffer) (which blocks while full).
//! * An error of a node's function is returned to the emitter: at once for synchronous nodes,
//!   and from the next `emit` (or `close`) for nodes behind a buffer. A failed item goes no
//!   further; the stream keeps working.
//! * `close` is the end of the stream: [`partition`](Stream::partition) emits its last, shorter
//!   group (policy: flush, not drop), buffers drain, parallel items are waited for, and then
//!   `close` returns.
//! * A node with several inputs ([`zip`](Stream::zip), [`combine_latest`](Stream::combine_latest))
//!   closes when all its inputs have closed.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::{Executor, Work};
use crate::util::{self, lock, panic_message};

/// An error of a stream node, delivered to the emitter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream node {node}: {message}")]
pub struct StreamError {
    /// The node's kind (`map`, `filter`, ...).
    pub node: &'static str,
    /// The error's text.
    pub message: String,
}

fn node_error(node: &'static str, message: impl fmt::Display) -> StreamError {
    StreamError {
        node,
        message: message.to_string(),
    }
}

/// What flows along an edge.
enum Event<T> {
    Item(T),
    Close,
}

type Push<T> = Box<dyn FnMut(Event<T>) -> Result<(), StreamError> + Send>;

struct Node<T> {
    downstream: Vec<Push<T>>,
}

/// A node of a pipeline that emits items of type `T`; attach downstream nodes to it.
pub struct Stream<T> {
    node: Arc<Mutex<Node<T>>>,
    /// The sources whose emits reach this node (to tell whether a zip may wait).
    roots: Arc<Vec<u64>>,
}

impl<T> Clone for Stream<T> {
    fn clone(&self) -> Self {
        Stream {
            node: Arc::clone(&self.node),
            roots: Arc::clone(&self.roots),
        }
    }
}

static NEXT_SOURCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn union(a: &[u64], b: &[u64]) -> Arc<Vec<u64>> {
    let mut v: Vec<u64> = a.iter().chain(b).copied().collect();
    v.sort_unstable();
    v.dedup();
    Arc::new(v)
}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("downstream", &lock(&self.node).downstream.len())
            .finish()
    }
}

/// The entry point of a pipeline: [`emit`](Source::emit) items, then [`close`](Source::close).
pub struct Source<T> {
    stream: Stream<T>,
}

impl<T> fmt::Debug for Source<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source").finish()
    }
}

impl<T: Clone + Send + 'static> Default for Source<T> {
    fn default() -> Self {
        Source::new()
    }
}

impl<T: Clone + Send + 'static> Source<T> {
    /// A source with no downstream nodes yet.
    #[must_use]
    pub fn new() -> Source<T> {
        Source {
            stream: Stream::empty(Arc::new(vec![
                NEXT_SOURCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ])),
        }
    }

    /// The source's stream, to attach nodes to.
    #[must_use]
    pub fn stream(&self) -> Stream<T> {
        self.stream.clone()
    }

    /// Pushes an item through the pipeline (see the module docs for when it returns).
    ///
    /// # Errors
    ///
    /// The first error of a node this item reached synchronously, or one raised behind a buffer
    /// since the last call.
    pub fn emit(&self, item: T) -> Result<(), StreamError> {
        self.stream.push(Event::Item(item))
    }

    /// Ends the stream: flushes partial groups, drains buffers, waits for parallel items, and
    /// returns when everything emitted has been through the pipeline.
    ///
    /// # Errors
    ///
    /// The first error raised while flushing (or left over from behind a buffer).
    pub fn close(&self) -> Result<(), StreamError> {
        self.stream.push(Event::Close)
    }
}

fn guarded<R>(node: &'static str, f: impl FnOnce() -> Result<R, String>) -> Result<R, StreamError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|m| node_error(node, m)),
        Err(p) => Err(node_error(
            node,
            format!("panic: {}", panic_message(p.as_ref())),
        )),
    }
}

impl<T: Clone + Send + 'static> Stream<T> {
    fn empty(roots: Arc<Vec<u64>>) -> Stream<T> {
        Stream {
            node: Arc::new(Mutex::new(Node {
                downstream: Vec::new(),
            })),
            roots,
        }
    }

    fn push(&self, event: Event<T>) -> Result<(), StreamError> {
        let mut node = lock(&self.node);
        let n = node.downstream.len();
        let mut event = Some(event);
        let mut first_error = None;
        for (i, d) in node.downstream.iter_mut().enumerate() {
            let e = if i + 1 == n {
                event.take()
            } else {
                match &event {
                    Some(Event::Item(x)) => Some(Event::Item(x.clone())),
                    Some(Event::Close) => Some(Event::Close),
                    None => None,
                }
            };
            if let Some(e) = e {
                let closing = matches!(e, Event::Close);
                if let Err(err) = d(e) {
                    if !closing {
                        return Err(err);
                    }
                    // Closing goes on through every branch; the first error is returned.
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Attaches a node: `f` gets each event and the new node's stream to push to.
    fn attach<U: Clone + Send + 'static>(
        &self,
        mut f: impl FnMut(Event<T>, &Stream<U>) -> Result<(), StreamError> + Send + 'static,
    ) -> Stream<U> {
        let out = Stream::<U>::empty(Arc::clone(&self.roots));
        let o = out.clone();
        lock(&self.node)
            .downstream
            .push(Box::new(move |e| f(e, &o)));
        out
    }

    /// `f(x)` for every item.
    pub fn map<U, E, F>(&self, f: F) -> Stream<U>
    where
        U: Clone + Send + 'static,
        E: fmt::Display,
        F: Fn(T) -> Result<U, E> + Send + 'static,
    {
        self.attach(move |e, out| match e {
            Event::Item(x) => {
                let y = guarded("map", || f(x).map_err(|e| e.to_string()))?;
                out.push(Event::Item(y))
            }
            Event::Close => out.push(Event::Close),
        })
    }

    /// The items for which `pred` is true.
    pub fn filter<F>(&self, pred: F) -> Stream<T>
    where
        F: Fn(&T) -> bool + Send + 'static,
    {
        self.attach(move |e, out| match e {
            Event::Item(x) => {
                if guarded("filter", || Ok(pred(&x)))? {
                    out.push(Event::Item(x))
                } else {
                    Ok(())
                }
            }
            Event::Close => out.push(Event::Close),
        })
    }

    /// Running fold without a start value: the first item is the state (and is emitted as
    /// is), then `state = f(state, x)` is emitted for every item.
    pub fn accumulate<E, F>(&self, f: F) -> Stream<T>
    where
        E: fmt::Display,
        F: Fn(T, T) -> Result<T, E> + Send + 'static,
    {
        let mut state: Option<T> = None;
        self.attach(move |e, out| match e {
            Event::Item(x) => {
                let next = match state.take() {
                    None => x,
                    Some(s) => guarded("accumulate", || f(s, x).map_err(|e| e.to_string()))?,
                };
                state = Some(next.clone());
                out.push(Event::Item(next))
            }
            Event::Close => out.push(Event::Close),
        })
    }

    /// Running fold from `start`: `state = f(state, x)`, emitted for every item.
    pub fn scan<S, E, F>(&self, start: S, f: F) -> Stream<S>
    where
        S: Clone + Send + 'static,
        E: fmt::Display,
        F: Fn(S, T) -> Result<S, E> + Send + 'static,
    {
        let mut state = Some(start);
        self.attach(move |e, out| match e {
            Event::Item(x) => {
                let s = state
                    .take()
                    .ok_or_else(|| node_error("scan", "state lost after a panic"))?;
                match guarded("scan", || f(s.clone(), x).map_err(|e| e.to_string())) {
                    Ok(next) => {
                        state = Some(next.clone());
                        out.push(Event::Item(next))
                    }
                    Err(err) => {
                        state = Some(s);
                        Err(err)
                    }
                }
            }
            Event::Close => out.push(Event::Close),
        })
    }

    /// Groups of `n` consecutive items; at the end of the stream a last, shorter group is
    /// emitted if items are left.
    pub fn partition(&self, n: usize) -> Stream<Vec<T>> {
        let n = n.max(1);
        let mut group: Vec<T> = Vec::with_capacity(n);
        self.attach(move |e, out| match e {
            Event::Item(x) => {
                group.push(x);
                if group.len() == n {
                    out.push(Event::Item(std::mem::replace(
                        &mut group,
                        Vec::with_capacity(n),
                    )))
                } else {
                    Ok(())
                }
            }
            Event::Close => {
                if !group.is_empty() {
                    out.push(Event::Item(std::mem::take(&mut group)))?;
                }
                out.push(Event::Close)
            }
        })
    }

    /// Once `n` items have been seen, the last `n` on every item.
    pub fn sliding_window(&self, n: usize) -> Stream<Vec<T>> {
        let n = n.max(1);
        let mut window: VecDeque<T> = VecDeque::with_capacity(n);
        self.attach(move |e, out| match e {
            Event::Item(x) => {
                if window.len() == n {
                    window.pop_front();
                }
                window.push_back(x);
                if window.len() == n {
                    out.push(Event::Item(window.iter().cloned().collect()))
                } else {
                    Ok(())
                }
            }
            Event::Close => out.push(Event::Close),
        })
    }

    /// Calls `f` for every item (the end of a branch).
    pub fn sink<E, F>(&self, f: F)
    where
        E: fmt::Display,
        F: FnMut(T) -> Result<(), E> + Send + 'static,
    {
        let f = Mutex::new(f);
        let _: Stream<()> = self.attach(move |e, _out| match e {
            Event::Item(x) => guarded("sink", || (lock(&f))(x).map_err(|e| e.to_string())),
            Event::Close => Ok(()),
        });
    }

    /// Collects every item into a shared list.
    #[must_use]
    pub fn sink_to_list(&self) -> Arc<Mutex<Vec<T>>> {
        let list = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&list);
        self.sink(move |x| {
            lock(&l).push(x);
            Ok::<(), String>(())
        });
        list
    }

    /// A bounded queue of `n` items with its own thread pushing them on: the emitter only
    /// waits while it is full. Errors downstream of it reach the emitter on its next call.
    pub fn buffer(&self, n: usize) -> Stream<T> {
        let out = Stream::<T>::empty(Arc::clone(&self.roots));
        // One item is held by the thread, so the queue keeps n − 1 more.
        let (tx, rx) = crossbeam_channel::bounded::<Event<T>>(n.max(1) - 1);
        let errors: Arc<Mutex<Option<StreamError>>> = Arc::new(Mutex::new(None));
        let (o, errs) = (out.clone(), Arc::clone(&errors));
        let thread: Option<JoinHandle<()>> = std::thread::Builder::new()
            .name("blockwise-stream-buffer".into())
            .spawn(move || {
                while let Ok(e) = rx.recv() {
                    let closing = matches!(e, Event::Close);
                    if let Err(err) = o.push(e) {
                        lock(&errs).get_or_insert(err);
                    }
                    if closing {
                        break;
                    }
                }
            })
            .map_err(|e| tracing::error!("cannot start a stream buffer thread: {e}"))
            .ok();
        let thread = Mutex::new(thread);
        let tx = Mutex::new(Some(tx));
        lock(&self.node).downstream.push(Box::new(move |e| {
            let closing = matches!(e, Event::Close);
            let sent = lock(&tx).as_ref().is_some_and(|tx| tx.send(e).is_ok());
            if closing {
                *lock(&tx) = None;
                if let Some(t) = lock(&thread).take() {
                    let _ = t.join();
                }
            } else if !sent {
                return Err(node_error("buffer", "the buffer is closed"));
            }
            lock(&errors).take().map_or(Ok(()), Err)
        }));
        out
    }

    /// Pairs items of this stream and `other` in order (a FIFO per input); an input holding
    /// `bound` unpaired items makes its emitter wait until the other input catches up. (When
    /// both inputs come from the same source, one emitter feeds both and cannot wait for
    /// itself: the zip then holds unpaired items without a bound.)
    pub fn zip<U>(&self, other: &Stream<U>, bound: usize) -> Stream<(T, U)>
    where
        U: Clone + Send + 'static,
    {
        struct Zip<T, U> {
            a: VecDeque<T>,
            b: VecDeque<U>,
            closed: (bool, bool),
        }
        let out = Stream::<(T, U)>::empty(union(&self.roots, &other.roots));
        let state = Arc::new((
            Mutex::new(Zip {
                a: VecDeque::new(),
                b: VecDeque::new(),
                closed: (false, false),
            }),
            Condvar::new(),
        ));
        // Inputs fed by the same source are fed by the same emitter: waiting for the other
        // input there would wait for ever, so such a zip holds what it must instead.
        let bound = if self.roots.iter().any(|r| other.roots.contains(r)) {
            usize::MAX
        } else {
            bound.max(1)
        };
        let (s, o) = (Arc::clone(&state), out.clone());
        lock(&self.node).downstream.push(Box::new(move |e| {
            let (m, cv) = &*s;
            let mut z = lock(m);
            match e {
                Event::Item(x) => {
                    while z.a.len() >= bound && !z.closed.1 {
                        z = util::wait(cv, z);
                    }
                    z.a.push_back(x);
                }
                Event::Close => z.closed.0 = true,
            }
            zip_drain(z, cv, &o)
        }));
        let (s, o) = (state, out.clone());
        lock(&other.node).downstream.push(Box::new(move |e| {
            let (m, cv) = &*s;
            let mut z = lock(m);
            match e {
                Event::Item(x) => {
                    while z.b.len() >= bound && !z.closed.0 {
                        z = util::wait(cv, z);
                    }
                    z.b.push_back(x);
                }
                Event::Close => z.closed.1 = true,
            }
            zip_drain(z, cv, &o)
        }));

        fn zip_drain<T: Clone + Send + 'static, U: Clone + Send + 'static>(
            mut z: std::sync::MutexGuard<'_, Zip<T, U>>,
            cv: &Condvar,
            out: &Stream<(T, U)>,
        ) -> Result<(), StreamError> {
            let mut pairs = Vec::new();
            while !z.a.is_empty() && !z.b.is_empty() {
                if let (Some(a), Some(b)) = (z.a.pop_front(), z.b.pop_front()) {
                    pairs.push((a, b));
                }
            }
            let close = z.closed.0 && z.closed.1;
            drop(z);
            cv.notify_all();
            for p in pairs {
                out.push(Event::Item(p))?;
            }
            if close {
                out.push(Event::Close)?;
            }
            Ok(())
        }
        out
    }

    /// The latest item of each input as a pair, once both have emitted; emitted on items of
    /// this stream only, or (with `emit_on_both`) of either.
    pub fn combine_latest<U>(&self, other: &Stream<U>, emit_on_both: bool) -> Stream<(T, U)>
    where
        U: Clone + Send + 'static,
    {
        type Latest<T, U> = (Option<T>, Option<U>, (bool, bool));
        let out = Stream::<(T, U)>::empty(union(&self.roots, &other.roots));
        let state: Arc<Mutex<Latest<T, U>>> = Arc::new(Mutex::new((None, None, (false, false))));
        let (s, o) = (Arc::clone(&state), out.clone());
        lock(&self.node).downstream.push(Box::new(move |e| {
            let mut st = lock(&s);
            match e {
                Event::Item(x) => {
                    st.0 = Some(x);
                    let pair = st.0.clone().zip(st.1.clone());
                    drop(st);
                    pair.map_or(Ok(()), |p| o.push(Event::Item(p)))
                }
                Event::Close => {
                    st.2.0 = true;
                    let both = st.2.1;
                    drop(st);
                    if both { o.push(Event::Close) } else { Ok(()) }
                }
            }
        }));
        let (s, o) = (state, out.clone());
        lock(&other.node).downstream.push(Box::new(move |e| {
            let mut st = lock(&s);
            match e {
                Event::Item(x) => {
                    st.1 = Some(x);
                    let pair = if emit_on_both {
                        st.0.clone().zip(st.1.clone())
                    } else {
                        None
                    };
                    drop(st);
                    pair.map_or(Ok(()), |p| o.push(Event::Item(p)))
                }
                Event::Close => {
                    st.2.1 = true;
                    let both = st.2.0;
                    drop(st);
                    if both { o.push(Event::Close) } else { Ok(()) }
                }
            }
        }));
        out
    }

    /// Sends items to `ex`: the nodes after this run their functions on its threads until
    /// [`ParStream::gather`].
    pub fn scatter(&self, ex: &Executor) -> ParStream<T> {
        let ex2 = ex.clone();
        let inner = self.attach(move |e, out: &Stream<Fut<T>>| match e {
            Event::Item(x) => out.push(Event::Item(Fut::ready(Some(x)))),
            Event::Close => out.push(Event::Close),
        });
        ParStream { inner, ex: ex2 }
    }
}

type FutResult<T> = Result<Option<T>, StreamError>;
type Continuation<T> = Box<dyn FnOnce(FutResult<T>) + Send>;

/// The result of an item on the executor once set, and what runs when it is set.
type FutState<T> = (Option<FutResult<T>>, Vec<Continuation<T>>);

/// The result of an item on the executor: a value, filtered out (`None`), or an error.
struct FutInner<T> {
    state: Mutex<FutState<T>>,
    ready: Condvar,
}

/// A handle on an item's result.
struct Fut<T> {
    inner: Arc<FutInner<T>>,
}

impl<T> Clone for Fut<T> {
    fn clone(&self) -> Self {
        Fut {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Clone> Fut<T> {
    fn pending() -> Fut<T> {
        Fut {
            inner: Arc::new(FutInner {
                state: Mutex::new((None, Vec::new())),
                ready: Condvar::new(),
            }),
        }
    }

    fn ready(v: Option<T>) -> Fut<T> {
        let f = Fut::pending();
        f.set(Ok(v));
        f
    }

    fn set(&self, r: FutResult<T>) {
        let then = {
            let mut state = lock(&self.inner.state);
            state.0 = Some(r.clone());
            std::mem::take(&mut state.1)
        };
        self.inner.ready.notify_all();
        for f in then {
            f(r.clone());
        }
    }

    /// Runs `f` with the result once it is set (at once if it is).
    fn on_ready(&self, f: impl FnOnce(FutResult<T>) + Send + 'static) {
        let mut state = lock(&self.inner.state);
        match state.0.clone() {
            Some(r) => {
                drop(state);
                f(r);
            }
            None => state.1.push(Box::new(f)),
        }
    }

    fn wait(&self) -> FutResult<T> {
        let mut state = lock(&self.inner.state);
        loop {
            if let Some(r) = state.0.as_ref() {
                return r.clone();
            }
            state = util::wait(&self.inner.ready, state);
        }
    }
}

/// Completes a future with an error if its job is dropped without running (executor gone).
struct Promise<T: Clone> {
    fut: Option<Fut<T>>,
}

impl<T: Clone> Promise<T> {
    fn fulfil(mut self, r: Result<Option<T>, StreamError>) {
        if let Some(f) = self.fut.take() {
            f.set(r);
        }
    }
}

impl<T: Clone> Drop for Promise<T> {
    fn drop(&mut self) {
        if let Some(f) = self.fut.take() {
            f.set(Err(node_error(
                "executor",
                "the executor was shut down before the item ran",
            )));
        }
    }
}

/// The parallel part of a pipeline (after [`Stream::scatter`]): functions run on the
/// executor; [`buffer`](ParStream::buffer) lets several items run at once;
/// [`gather`](ParStream::gather) brings results back in input order.
pub struct ParStream<T> {
    inner: Stream<Fut<T>>,
    ex: Executor,
}

impl<T> fmt::Debug for ParStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParStream").finish()
    }
}

impl<T: Clone + Send + 'static> ParStream<T> {
    /// A node that runs `work` on each item on the executor once the item is there;
    /// `finish(kept input, output)` makes the node's result (the input is kept only when
    /// `keep_input`).
    fn then<U, V, W>(
        &self,
        node: &'static str,
        work: W,
        keep_input: bool,
        finish: fn(Option<T>, V) -> Option<U>,
    ) -> ParStream<U>
    where
        U: Clone + Send + 'static,
        V: Send + 'static,
        W: Work<T, V>,
    {
        let work = Arc::new(work);
        let ex = self.ex.clone();
        let inner = self.inner.attach(move |e, out: &Stream<Fut<U>>| match e {
            Event::Item(input) => {
                let result = Fut::<U>::pending();
                let promise = Promise {
                    fut: Some(result.clone()),
                };
                let (work, ex) = (Arc::clone(&work), ex.clone());
                // Submitted when the input is there (at once after scatter), from whichever
                // thread set it; nothing blocks a pool thread.
                input.on_ready(move |r| match r {
                    Ok(Some(x)) => {
                        let kept = keep_input.then(|| x.clone());
                        ex.call(&work, x, None, move |v: Result<V, super::CallError>| {
                            promise.fulfil(
                                v.map(|v| finish(kept, v)).map_err(|e| node_error(node, e)),
                            );
                        });
                    }
                    Ok(None) => promise.fulfil(Ok(None)),
                    Err(e) => promise.fulfil(Err(e)),
                });
                out.push(Event::Item(result))
            }
            Event::Close => out.push(Event::Close),
        });
        ParStream {
            inner,
            ex: self.ex.clone(),
        }
    }

    /// `f(x)` for every item, on the executor (a closure on threads, a
    /// [`Function`](super::Function) on any backend).
    pub fn map<U, W>(&self, f: W) -> ParStream<U>
    where
        U: Clone + Send + 'static,
        W: Work<T, U>,
    {
        self.then("map", f, false, |_, v| Some(v))
    }

    /// The items for which `pred` returns true; the predicate runs on the executor and the
    /// other items are dropped at [`gather`](ParStream::gather).
    pub fn filter<W>(&self, pred: W) -> ParStream<T>
    where
        W: Work<T, bool>,
    {
        self.then("filter", pred, true, |x, keep| if keep { x } else { None })
    }

    /// Lets up to `n` items be on the executor at once (the emitter waits beyond that).
    pub fn buffer(&self, n: usize) -> ParStream<T> {
        ParStream {
            inner: self.inner.buffer(n),
            ex: self.ex.clone(),
        }
    }

    /// Back to local nodes: each item's result, in input order (filtered items dropped); an
    /// item's error goes to the emitter.
    pub fn gather(&self) -> Stream<T> {
        self.inner.attach(move |e, out: &Stream<T>| match e {
            Event::Item(f) => match f.wait() {
                Ok(Some(x)) => out.push(Event::Item(x)),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            Event::Close => out.push(Event::Close),
        })
    }
}

#[cfg(test)]
mod tests {
    //! other_seeds.md §7 behaviours 16–18, deterministic: slow items wait on gates, not clocks.
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    fn list<T: Clone>(l: &Arc<Mutex<Vec<T>>>) -> Vec<T> {
        lock(l).clone()
    }

    /// A log to order events from several threads, and a gate items wait on.
    #[derive(Default)]
    struct Log {
        events: Mutex<Vec<String>>,
        cv: Condvar,
        open: Mutex<bool>,
        gate: Condvar,
    }

    impl Log {
        fn push(&self, e: impl Into<String>) {
            lock(&self.events).push(e.into());
            self.cv.notify_all();
        }
        fn wait_for(&self, e: &str) {
            let g = lock(&self.events);
            let (_g, t) = self
                .cv
                .wait_timeout_while(g, Duration::from_secs(20), |l| !l.iter().any(|x| x == e))
                .unwrap();
            assert!(!t.timed_out(), "never saw {e}");
        }
        fn pos(&self, e: &str) -> usize {
            lock(&self.events)
                .iter()
                .position(|x| x == e)
                .unwrap_or_else(|| panic!("no {e}"))
        }
        fn open_gate(&self) {
            *lock(&self.open) = true;
            self.gate.notify_all();
        }
        fn pass_gate(&self) -> Result<(), String> {
            let g = lock(&self.open);
            let (_g, t) = self
                .gate
                .wait_timeout_while(g, Duration::from_secs(20), |o| !*o)
                .unwrap();
            if t.timed_out() {
                Err("gate never opened".into())
            } else {
                Ok(())
            }
        }
    }

    type Build<'a> = &'a dyn Fn(&Stream<i64>) -> Arc<Mutex<Vec<i64>>>;

    #[test]
    fn core_nodes() {
        let run = |build: Build<'_>, items: std::ops::Range<i64>| {
            let s = Source::new();
            let out = build(&s.stream());
            for x in items {
                s.emit(x).unwrap();
            }
            s.close().unwrap();
            list(&out)
        };
        assert_eq!(
            run(&|s| s.map(|x| Ok::<_, String>(x + 1)).sink_to_list(), 0..5),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            run(
                &|s| s.accumulate(|a, b| Ok::<_, String>(a + b)).sink_to_list(),
                0..5
            ),
            [0, 1, 3, 6, 10]
        );
        assert_eq!(
            run(
                &|s| s
                    .map(|x| Ok::<_, String>(x + 1))
                    .accumulate(|a, b| Ok::<_, String>(a + b))
                    .sink_to_list(),
                0..5
            ),
            [1, 3, 6, 10, 15]
        );
        assert_eq!(
            run(
                &|s| s.scan(100, |a, b| Ok::<_, String>(a + b)).sink_to_list(),
                0..3
            ),
            [100, 101, 103]
        );
        assert_eq!(
            run(&|s| s.filter(|x| x % 2 == 0).sink_to_list(), 0..5),
            [0, 2, 4]
        );

        let s = Source::new();
        let groups = s.stream().partition(3).sink_to_list();
        for x in 0..10 {
            s.emit(x).unwrap();
        }
        assert_eq!(list(&groups), [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8]]);
        s.close().unwrap();
        assert_eq!(
            list(&groups).last(),
            Some(&vec![9]),
            "the end of the stream flushes the rest"
        );

        let s = Source::new();
        let windows = s.stream().sliding_window(3).sink_to_list();
        for x in 0..8 {
            s.emit(x).unwrap();
        }
        let w = list(&windows);
        assert_eq!(w.len(), 6);
        assert_eq!((w[0].clone(), w[5].clone()), (vec![0, 1, 2], vec![5, 6, 7]));
    }

    #[test]
    fn zip_and_combine_latest() {
        let (a, b) = (Source::<i64>::new(), Source::<char>::new());
        let zipped = a.stream().zip(&b.stream(), 10).sink_to_list();
        a.emit(1).unwrap();
        b.emit('a').unwrap();
        a.emit(2).unwrap();
        b.emit('b').unwrap();
        assert_eq!(list(&zipped), [(1, 'a'), (2, 'b')]);

        let (a, b) = (Source::<i64>::new(), Source::<char>::new());
        let latest = a.stream().combine_latest(&b.stream(), false).sink_to_list();
        a.emit(1).unwrap();
        b.emit('a').unwrap();
        a.emit(2).unwrap();
        a.emit(3).unwrap();
        b.emit('b').unwrap();
        a.emit(4).unwrap();
        assert_eq!(list(&latest), [(2, 'a'), (3, 'a'), (4, 'b')]);
    }

    #[test]
    fn zip_bound_makes_the_faster_input_wait() {
        let (a, b) = (Arc::new(Source::<i64>::new()), Source::<i64>::new());
        let zipped = a.stream().zip(&b.stream(), 2).sink_to_list();
        let log = Arc::new(Log::default());
        let (a2, l2) = (Arc::clone(&a), Arc::clone(&log));
        let t = std::thread::spawn(move || {
            for x in 1..=3 {
                a2.emit(x).unwrap();
                l2.push(format!("emitted a{x}"));
            }
        });
        log.wait_for("emitted a2");
        log.push("emit b");
        b.emit(10).unwrap();
        t.join().unwrap();
        assert!(
            log.pos("emitted a3") > log.pos("emit b"),
            "{:?}",
            lock(&log.events)
        );
        assert_eq!(list(&zipped), [(1, 10)]);
    }

    #[test]
    fn zipping_two_branches_of_one_source_never_waits_for_itself() {
        let s = Source::<i64>::new();
        let evens = s.stream().filter(|x| x % 2 == 0);
        let zipped = evens.zip(&s.stream(), 2).sink_to_list();
        for x in 0..10 {
            s.emit(x).unwrap(); // would wait for ever if the bound applied
        }
        s.close().unwrap();
        assert_eq!(list(&zipped), [(0, 0), (2, 1), (4, 2), (6, 3), (8, 4)]);
    }

    #[test]
    fn a_parallel_buffer_applies_backpressure_and_keeps_order() {
        let ex = Executor::threads(5);
        let source = Arc::new(Source::<i64>::new());
        let log = Arc::new(Log::default());
        let l = Arc::clone(&log);
        let out = source
            .stream()
            .scatter(&ex)
            .map(move |x| {
                l.pass_gate()?;
                Ok::<_, String>(x + 1)
            })
            .buffer(5)
            .gather()
            .sink_to_list();
        let (s2, l2) = (Arc::clone(&source), Arc::clone(&log));
        let emitter = std::thread::spawn(move || {
            for x in 0..10 {
                s2.emit(x).unwrap();
                l2.push(format!("emitted {x}"));
            }
        });
        // Five emits return while every item is still waiting at the gate ...
        log.wait_for("emitted 4");
        log.push("gate open");
        log.open_gate();
        emitter.join().unwrap();
        // ... the sixth only after items could finish.
        assert!(
            log.pos("emitted 5") > log.pos("gate open"),
            "{:?}",
            lock(&log.events)
        );
        source.close().unwrap();
        assert_eq!(list(&out), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn parallel_filter_errors_and_a_close_that_flushes() {
        let ex = Executor::threads(3);
        let s = Source::<i64>::new();
        let evens = s
            .stream()
            .scatter(&ex)
            .filter(|x: i64| Ok::<_, String>(x % 2 == 0))
            .buffer(4)
            .gather()
            .sink_to_list();
        for x in 0..5 {
            s.emit(x).unwrap();
        }
        s.close().unwrap();
        assert_eq!(list(&evens), [0, 2, 4]);

        // An error on the executor reaches the emitter: at once without a buffer ...
        let s = Source::<i64>::new();
        let inv = |x: i64| {
            if x == 0 {
                Err("division by zero".to_owned())
            } else {
                Ok(100 / x)
            }
        };
        let out = s.stream().scatter(&ex).map(inv).gather().sink_to_list();
        let e = s.emit(0).unwrap_err();
        assert_eq!(e.to_string(), "stream node map: division by zero");
        s.emit(4).unwrap();
        assert_eq!(list(&out), [25]);
        // ... and from a later call behind one.
        let s = Source::<i64>::new();
        let _out = s
            .stream()
            .scatter(&ex)
            .map(inv)
            .buffer(2)
            .gather()
            .sink_to_list();
        s.emit(0).unwrap();
        let e = s.close().unwrap_err();
        assert_eq!(e.node, "map");
        // A synchronous node's error too.
        let s = Source::<i64>::new();
        let _l = s.stream().map(inv).sink_to_list();
        assert_eq!(s.emit(0).unwrap_err().message, "division by zero");

        // close() returns after all 100 results were delivered (streamz#449).
        let s = Source::<i64>::new();
        let all = s
            .stream()
            .scatter(&ex)
            .map(|x| Ok::<_, String>(x * 2))
            .buffer(10)
            .gather()
            .sink_to_list();
        for x in 0..100 {
            s.emit(x).unwrap();
        }
        s.close().unwrap();
        assert_eq!(list(&all), (0..100).map(|x| x * 2).collect::<Vec<_>>());
    }
}
