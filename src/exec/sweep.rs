//! Parameter sweeps (daskify's `run`, done right): a function over the cartesian product of
//! parameter lists, repeated, with live status counts, cancellation, a progress monitor that
//! always ends, results gathered in order or by parameters, and named runs whose results stay
//! available.
//!
//! ```
//! use blockwise::exec::{Executor, Sweeps};
//!
//! let ex = Executor::threads(2);
//! let mut sweeps = Sweeps::new();
//! // Read-only data every call sees, sent to each worker once (shared in place on threads).
//! ex.scatter("offset", 100i64)?;
//! let f = |p: Vec<i64>| {
//!     let offset = blockwise::exec::scattered::<i64>("offset").ok_or("no offset")?;
//!     Ok::<_, String>(*offset + p[0] * 10 + p[1])
//! };
//! let run = sweeps.run(&ex, "grid", f, vec![vec![1, 2], vec![1, 2, 3]], 1);
//! assert_eq!(run.combos(), &[vec![1, 1], vec![1, 2], vec![1, 3], vec![2, 1], vec![2, 2], vec![2, 3]]);
//! let results: Vec<i64> = run.gather().into_iter().map(|r| r.unwrap()).collect();
//! assert_eq!(results, [111, 112, 113, 121, 122, 123]);
//! assert_eq!(sweeps.get("grid").map(|r| r.status().finished), Some(6));
//! # Ok::<(), blockwise::Error>(())
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{CallError, Executor, ItemError, Work};
use crate::util::{self, lock};

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const FINISHED: u8 = 2;
const ERROR: u8 = 3;
const CANCELLED: u8 = 4;

/// How many calls of a sweep are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SweepStatus {
    /// Submitted, not started.
    pub pending: usize,
    /// Running now (on worker processes: sent to a worker, which may hold a few calls at a
    /// time when calls are short).
    pub running: usize,
    /// Returned a value.
    pub finished: usize,
    /// Returned an error or panicked.
    pub error: usize,
    /// Cancelled before they started.
    pub cancelled: usize,
}

impl SweepStatus {
    /// Calls in a final state (finished, error, cancelled).
    #[must_use]
    pub fn done(&self) -> usize {
        self.finished + self.error + self.cancelled
    }

    /// All calls.
    #[must_use]
    pub fn total(&self) -> usize {
        self.done() + self.pending + self.running
    }
}

impl fmt::Display for SweepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pending: {}, running: {}, finished: {}, error: {}, cancelled: {}",
            self.pending, self.running, self.finished, self.error, self.cancelled
        )
    }
}

struct Shared<R> {
    states: Vec<AtomicU8>,
    results: Mutex<Vec<Option<Result<R, CallError>>>>,
    changed: Condvar,
}

/// One sweep: `repeat × Π len(params)` calls, in submission order (repeat-major, then the
/// cartesian product with the first list varying slowest).
pub struct Sweep<P, R> {
    name: String,
    combos: Arc<Vec<Vec<P>>>,
    repeat: usize,
    shared: Arc<Shared<R>>,
}

impl<P, R> Clone for Sweep<P, R> {
    fn clone(&self) -> Self {
        Sweep {
            name: self.name.clone(),
            combos: Arc::clone(&self.combos),
            repeat: self.repeat,
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<P: fmt::Debug, R> fmt::Debug for Sweep<P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sweep")
            .field("name", &self.name)
            .field("combos", &self.combos.len())
            .field("repeat", &self.repeat)
            .field("status", &self.status())
            .finish()
    }
}

/// The cartesian product of `lists`, the first list varying slowest (`[[]]` for no lists).
fn product<P: Clone>(lists: &[Vec<P>]) -> Vec<Vec<P>> {
    let mut out: Vec<Vec<P>> = vec![Vec::new()];
    for list in lists {
        out = out
            .iter()
            .flat_map(|prefix| {
                list.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push(v.clone());
                    c
                })
            })
            .collect();
    }
    out
}

impl<P, R> Sweep<P, R> {
    /// The run's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parameter combinations (once, not per repeat), first list varying slowest.
    #[must_use]
    pub fn combos(&self) -> &[Vec<P>] {
        &self.combos
    }

    /// Number of calls: `repeat × combos().len()`.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.states.len()
    }

    /// Whether the sweep has no calls (`repeat` 0 or an empty parameter list).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `(repeat index, parameters)` of call `i`.
    #[must_use]
    pub fn call(&self, i: usize) -> Option<(usize, &[P])> {
        (i < self.len()).then(|| {
            (
                i / self.combos.len(),
                self.combos[i % self.combos.len()].as_slice(),
            )
        })
    }

    /// Counts of calls per state, now.
    #[must_use]
    pub fn status(&self) -> SweepStatus {
        let mut s = SweepStatus::default();
        for st in &self.shared.states {
            match st.load(Ordering::SeqCst) {
                PENDING => s.pending += 1,
                RUNNING => s.running += 1,
                FINISHED => s.finished += 1,
                ERROR => s.error += 1,
                _ => s.cancelled += 1,
            }
        }
        s
    }
}

impl<P, R> Sweep<P, R>
where
    P: Clone + Send + Sync + 'static,
    R: Send + 'static,
{
    fn start<W: Work<Vec<P>, R>>(
        ex: &Executor,
        name: &str,
        f: W,
        params: Vec<Vec<P>>,
        repeat: usize,
    ) -> Sweep<P, R> {
        let combos = Arc::new(product(&params));
        let n = combos.len() * repeat;
        let shared = Arc::new(Shared {
            states: (0..n).map(|_| AtomicU8::new(PENDING)).collect(),
            results: Mutex::new((0..n).map(|_| None).collect()),
            changed: Condvar::new(),
        });
        let f = Arc::new(f);
        for i in 0..n {
            let combo = combos[i % combos.len()].clone();
            let starting = Arc::clone(&shared);
            // A call cancelled before it starts never runs.
            let start: Box<dyn FnOnce() -> bool + Send> = Box::new(move || {
                starting.states[i]
                    .compare_exchange(PENDING, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            });
            let sh = Arc::clone(&shared);
            ex.call(&f, combo, Some(start), move |r: Result<R, CallError>| {
                let state = if r.is_ok() { FINISHED } else { ERROR };
                let mut results = lock(&sh.results);
                results[i] = Some(r);
                sh.states[i].store(state, Ordering::SeqCst);
                drop(results);
                sh.changed.notify_all();
            });
        }
        Sweep {
            name: name.to_owned(),
            combos,
            repeat,
            shared,
        }
    }

    /// Cancels call `i` if it has not started; returns whether it was cancelled.
    pub fn cancel(&self, i: usize) -> bool {
        let cancelled = self.shared.states.get(i).is_some_and(|s| {
            s.compare_exchange(PENDING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if cancelled {
            // Take the lock so that a waiter cannot miss the change.
            drop(lock(&self.shared.results));
            self.shared.changed.notify_all();
        }
        cancelled
    }

    /// Cancels every call that has not started; returns how many.
    pub fn cancel_all(&self) -> usize {
        (0..self.len()).filter(|&i| self.cancel(i)).count()
    }

    /// Waits until every call is finished, failed or cancelled, or `timeout` passes; returns
    /// whether all are done.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&self.shared.results);
        loop {
            if self.status().done() == self.len() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = util::wait_timeout(&self.shared.changed, guard, deadline - now);
        }
    }

    /// Waits for every call, showing a progress bar when `progress` says so, and returns the
    /// final counts. It ends on every final state (cancelled calls count as done).
    pub fn monitor(
        &self,
        progress: crate::observe::Progress,
        mut on_change: impl FnMut(&SweepStatus),
    ) -> SweepStatus {
        let bar = crate::observe::ItemProgress::new(
            progress.enabled(),
            &self.name,
            Some(self.len() as u64),
        );
        let mut shown = 0;
        let mut last: Option<SweepStatus> = None;
        loop {
            let s = self.status();
            for _ in shown..s.done() {
                bar.inc();
            }
            shown = s.done();
            if last != Some(s) {
                on_change(&s);
                last = Some(s);
            }
            if s.done() == s.total() {
                bar.finish();
                return s;
            }
            let guard = lock(&self.shared.results);
            if self.status() == s {
                // Woken by every change; the timeout only bounds a missed wake-up.
                drop(util::wait_timeout(
                    &self.shared.changed,
                    guard,
                    Duration::from_millis(200),
                ));
            }
        }
    }
}

impl<P, R> Sweep<P, R>
where
    P: Clone + Send + Sync + 'static,
    R: Clone + Send + 'static,
{
    /// Waits for every call and returns the results in submission order; a cancelled call is
    /// an error saying so.
    pub fn gather(&self) -> Vec<Result<R, ItemError>> {
        while !self.wait(Duration::from_secs(3600)) {}
        let results = lock(&self.shared.results);
        results
            .iter()
            .enumerate()
            .map(|(index, r)| match r {
                Some(Ok(v)) => Ok(v.clone()),
                Some(Err(e)) => Err(ItemError::of(index, e.clone())),
                None => Err(ItemError::Failed {
                    index,
                    message: "cancelled".into(),
                }),
            })
            .collect()
    }

    /// Waits for every call and returns `(repeat index, parameters, result)` per call.
    pub fn gather_by_params(&self) -> Vec<(usize, Vec<P>, Result<R, ItemError>)> {
        self.gather()
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let (rep, p) = self
                    .call(i)
                    .map_or((0, Vec::new()), |(r, p)| (r, p.to_vec()));
                (rep, p, r)
            })
            .collect()
    }
}

/// Named sweeps: the latest run and every earlier one stay available by name. Shared
/// read-only data goes to the executor once with [`Executor::scatter`]; functions read it with
/// [`scattered`](super::scattered).
pub struct Sweeps<P, R> {
    runs: Vec<Sweep<P, R>>,
}

impl<P, R> Default for Sweeps<P, R> {
    fn default() -> Self {
        Sweeps { runs: Vec::new() }
    }
}

impl<P: fmt::Debug, R> fmt::Debug for Sweeps<P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sweeps").field("runs", &self.runs).finish()
    }
}

impl<P, R> Sweeps<P, R>
where
    P: Clone + Send + Sync + 'static,
    R: Send + 'static,
{
    /// No runs yet.
    #[must_use]
    pub fn new() -> Self {
        Sweeps::default()
    }

    /// Starts a run named `name` of `f` over the cartesian product of `params`, `repeat`
    /// times, on `ex`, and returns it (it is also kept here; an earlier run with the same name
    /// stays reachable through [`runs`](Self::runs)). `f` gets one combination as a `Vec`; on a
    /// process executor it is a [`Function`](super::Function) (and `P`, `R` serde types).
    pub fn run<W: Work<Vec<P>, R>>(
        &mut self,
        ex: &Executor,
        name: &str,
        f: W,
        params: Vec<Vec<P>>,
        repeat: usize,
    ) -> Sweep<P, R> {
        let run = Sweep::start(ex, name, f, params, repeat);
        self.runs.push(run.clone());
        run
    }

    /// The latest run named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Sweep<P, R>> {
        self.runs.iter().rev().find(|r| r.name == name)
    }

    /// The latest run.
    #[must_use]
    pub fn current(&self) -> Option<&Sweep<P, R>> {
        self.runs.last()
    }

    /// Every run, oldest first.
    #[must_use]
    pub fn runs(&self) -> &[Sweep<P, R>] {
        &self.runs
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn cartesian_product_repeated_in_submission_order() {
        let ex = Executor::threads(2);
        let mut sweeps = Sweeps::new();
        let s = 1i64;
        let f = move |p: Vec<i64>| Ok::<_, String>(s * 100 + p[0] * 10 + p[1]);
        let run = sweeps.run(&ex, "a", f, vec![vec![1, 2], vec![1, 2, 3]], 2);
        assert_eq!(run.len(), 12);
        assert_eq!(
            run.combos(),
            &[
                vec![1, 1],
                vec![1, 2],
                vec![1, 3],
                vec![2, 1],
                vec![2, 2],
                vec![2, 3]
            ]
        );
        let once = [111, 112, 113, 121, 122, 123];
        let got: Vec<i64> = run.gather().into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(got, once.iter().chain(&once).copied().collect::<Vec<_>>());
        let by = run.gather_by_params();
        assert_eq!(by[7], (1, vec![1, 2], Ok(112)));
        // No parameter lists: one call per repeat.
        let calls = Arc::new(Mutex::new(0));
        let c = Arc::clone(&calls);
        let empty = sweeps.run(
            &ex,
            "b",
            move |p: Vec<i64>| {
                assert!(p.is_empty());
                *c.lock().unwrap() += 1;
                Ok::<_, String>(s)
            },
            vec![],
            5,
        );
        assert_eq!(empty.gather().len(), 5);
        assert_eq!(*calls.lock().unwrap(), 5);
        // The earlier run is still there, by name.
        assert_eq!(sweeps.current().map(Sweep::name), Some("b"));
        assert_eq!(sweeps.get("a").unwrap().gather()[0], Ok(111));
        assert_eq!(sweeps.runs().len(), 2);
        // Scattered data: one copy, shared by every call, retrievable by name.
        let table = ex.scatter("sweep-table", vec![5i64, 7]).unwrap();
        let run = sweeps.run(
            &ex,
            "c",
            |p: Vec<i64>| {
                let t = crate::exec::scattered::<Vec<i64>>("sweep-table").ok_or("missing")?;
                Ok::<_, String>(t[p[0] as usize])
            },
            vec![vec![0, 1]],
            3,
        );
        assert_eq!(
            run.gather()
                .into_iter()
                .map(|r| r.unwrap())
                .collect::<Vec<_>>(),
            [5, 7, 5, 7, 5, 7]
        );
        assert!(Arc::ptr_eq(
            &crate::exec::scattered::<Vec<i64>>("sweep-table").unwrap(),
            &table
        ));
        assert!(crate::exec::scattered::<String>("sweep-table").is_none());
        assert!(crate::exec::scattered::<Vec<i64>>("missing").is_none());
    }

    #[test]
    fn status_counts_and_a_monitor_that_ends_on_cancelled_calls() {
        // One thread; call 0 waits until call 9 is cancelled, so 9 is still pending then.
        let ex = Executor::threads(1);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g = Arc::clone(&gate);
        let f = move |p: Vec<i64>| -> Result<i64, String> {
            let x = p[0];
            if x == 0 {
                let (lock, cv) = &*g;
                let guard = lock.lock().unwrap();
                let (_guard, t) = cv
                    .wait_timeout_while(guard, Duration::from_secs(20), |open| !*open)
                    .unwrap();
                if t.timed_out() {
                    return Err("gate never opened".into());
                }
            }
            if x == 3 || x == 6 {
                return Err(format!("bad {x}"));
            }
            Ok(x)
        };
        let mut sweeps = Sweeps::new();
        let run = sweeps.run(&ex, "s", f, vec![(0..10).collect()], 1);
        assert!(run.cancel(9));
        assert!(!run.cancel(42));
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
        let mut events = Vec::new();
        let last = run.monitor(crate::observe::Progress::Never, |s| events.push(*s));
        assert_eq!(
            last,
            SweepStatus {
                pending: 0,
                running: 0,
                finished: 7,
                error: 2,
                cancelled: 1
            }
        );
        assert_eq!(events.last().map(SweepStatus::done), Some(10));
        assert_eq!(
            last.to_string(),
            "pending: 0, running: 0, finished: 7, error: 2, cancelled: 1"
        );
        let results = run.gather();
        assert_eq!(
            results[3].as_ref().unwrap_err().to_string(),
            "item 3 failed: bad 3"
        );
        assert_eq!(
            results[9].as_ref().unwrap_err().to_string(),
            "item 9 failed: cancelled"
        );
    }
}
