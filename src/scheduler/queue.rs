//! The ready queue of a task: block keys (grid indices) first in, first out, stored as runs of
//! keys with a constant step.
//!
//! Blocks become ready in sweeps: the roots of a task are handed out in product order, and the
//! blocks they release are released in that order too, so the keys pushed one after another
//! mostly differ by a constant (1 along a row without conflicts, 2 with them). A run
//! `start, start + step, …` of any length costs 24 bytes, so a queue holding a whole level of a
//! task (an eighth of a 3-D task's blocks while daisy's order hands out every root first) takes
//! a few bytes per row of blocks instead of 8 bytes per block.
//!
//! Blocks that finish on several workers come back slightly out of order, which would break
//! the runs. With a *window* of `w > 1` runs, a key that continues one of the last `w` runs
//! joins it instead of starting a new one: ready blocks released close together in time may
//! then be handed out in another order than they were released. The pure [`Scheduler`] keeps
//! a window of 1 (exact first in, first out: daisy's order); the runners, whose order depends
//! on which worker finishes first anyway, use a wider one.
//!
//! [`Scheduler`]: super::Scheduler

use std::collections::VecDeque;

/// Keys `start, start + step, …` (`len` of them; wrapping arithmetic, so a step may be
/// "negative").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: u64,
    step: u64,
    len: u64,
}

impl Run {
    fn single(key: u64) -> Run {
        Run {
            start: key,
            step: 0,
            len: 1,
        }
    }

    /// The key after the last one, if the run has a step.
    fn after_last(&self) -> u64 {
        self.start.wrapping_add(self.step.wrapping_mul(self.len))
    }

    /// Appends `key` if it continues the run (any key continues a run of one).
    fn try_push_back(&mut self, key: u64) -> bool {
        if self.len == 1 {
            self.step = key.wrapping_sub(self.start);
            self.len = 2;
            true
        } else if key == self.after_last() {
            self.len += 1;
            true
        } else {
            false
        }
    }

    /// Prepends `key` if the run continues backwards to it.
    fn try_push_front(&mut self, key: u64) -> bool {
        if self.len == 1 {
            self.step = self.start.wrapping_sub(key);
            self.start = key;
            self.len = 2;
            true
        } else if key == self.start.wrapping_sub(self.step) {
            self.start = key;
            self.len += 1;
            true
        } else {
            false
        }
    }
}

/// A task's ready blocks, first in, first out (up to the window), as runs of keys.
#[derive(Debug)]
pub(crate) struct ReadyQueue {
    runs: VecDeque<Run>,
    len: u64,
    window: usize,
}

impl Default for ReadyQueue {
    fn default() -> Self {
        ReadyQueue::new(1)
    }
}

impl ReadyQueue {
    /// An empty queue whose pushed keys may join any of the last `window` runs (at least 1:
    /// exact first in, first out).
    pub(crate) fn new(window: usize) -> ReadyQueue {
        ReadyQueue {
            runs: VecDeque::new(),
            len: 0,
            window: window.max(1),
        }
    }

    /// Changes the window for keys pushed from now on.
    pub(crate) fn set_window(&mut self, window: usize) {
        self.window = window.max(1);
    }

    /// Number of keys in the queue.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Number of runs the keys are stored in (what the queue's memory is proportional to).
    #[cfg(test)]
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Adds `key` at the back (or to one of the last `window` runs it continues).
    pub(crate) fn push_back(&mut self, key: u64) {
        self.len += 1;
        // The last run first: with a window of 1 only it, which keeps exact FIFO order.
        let n = self.runs.len();
        let first = n.saturating_sub(self.window);
        // A run of one takes any key, which would glue unrelated keys together in the middle
        // of the queue; only the last run may do that.
        for i in (first..n).rev() {
            let run = &mut self.runs[i];
            let fits = if run.len == 1 {
                i + 1 == n
            } else {
                key == run.after_last()
            };
            if fits && run.try_push_back(key) {
                return;
            }
        }
        self.runs.push_back(Run::single(key));
    }

    /// Adds `key` at the front (a block given back unused goes first).
    pub(crate) fn push_front(&mut self, key: u64) {
        self.len += 1;
        if let Some(run) = self.runs.front_mut()
            && run.try_push_front(key)
        {
            return;
        }
        self.runs.push_front(Run::single(key));
    }

    /// Takes the key at the front.
    pub(crate) fn pop_front(&mut self) -> Option<u64> {
        let run = self.runs.front_mut()?;
        let key = run.start;
        run.start = run.start.wrapping_add(run.step);
        run.len -= 1;
        if run.len == 0 {
            self.runs.pop_front();
        }
        self.len -= 1;
        Some(key)
    }

    /// Empties the queue and gives back its memory.
    pub(crate) fn clear(&mut self) {
        self.runs = VecDeque::new();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::ReadyQueue;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn drain(q: &mut ReadyQueue) -> Vec<u64> {
        std::iter::from_fn(|| q.pop_front()).collect()
    }

    #[test]
    fn a_sweep_with_a_constant_step_is_one_run() {
        let mut q = ReadyQueue::new(1);
        for k in (1..2001).step_by(2) {
            q.push_back(k);
        }
        assert_eq!(q.runs(), 1);
        assert_eq!(q.len(), 1000);
        assert_eq!(drain(&mut q), (1..2001).step_by(2).collect::<Vec<_>>());
        assert_eq!(q.runs(), 0);
    }

    #[test]
    fn rows_of_a_sweep_take_a_run_each() {
        let mut q = ReadyQueue::new(1);
        for row in 0..100u64 {
            for x in (1..50).step_by(2) {
                q.push_back(row * 1000 + x);
            }
        }
        // A row's first key may continue the previous row's run only when the step happens to
        // match; it does not here.
        assert!(q.runs() <= 100, "{}", q.runs());
        assert_eq!(q.len(), 2500);
    }

    #[test]
    fn a_window_absorbs_keys_finished_out_of_order() {
        // Two workers finishing alternately: 0, 1 | 2, 3 swapped.
        let keys = [0, 2, 6, 4, 8, 12, 10, 14, 16, 20, 18, 22];
        let mut strict = ReadyQueue::new(1);
        let mut relaxed = ReadyQueue::new(4);
        for &k in &keys {
            strict.push_back(k);
            relaxed.push_back(k);
        }
        assert!(
            relaxed.runs() < strict.runs(),
            "{} vs {}",
            relaxed.runs(),
            strict.runs()
        );
        assert_eq!(drain(&mut strict), keys);
        let mut got = drain(&mut relaxed);
        got.sort_unstable();
        let mut want = keys.to_vec();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn push_front_goes_first_and_negative_steps_work() {
        let mut q = ReadyQueue::new(1);
        q.push_back(10);
        q.push_back(7);
        q.push_back(4);
        q.push_front(13);
        q.push_front(3);
        assert_eq!(drain(&mut q), [3, 13, 10, 7, 4]);
        q.push_back(u64::MAX);
        q.push_back(0);
        q.push_back(1);
        assert_eq!(drain(&mut q), [u64::MAX, 0, 1]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Back(u64),
        Front(u64),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..64).prop_map(|k| Op::Back(k * 2)),
            1 => (0u64..64).prop_map(Op::Front),
            4 => Just(Op::Pop),
        ]
    }

    proptest! {
        /// With a window of 1 the queue is exactly a VecDeque.
        #[test]
        fn strict_queue_is_fifo(ops in proptest::collection::vec(op(), 0..300)) {
            let mut q = ReadyQueue::new(1);
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Op::Back(k) => { q.push_back(k); model.push_back(k); }
                    Op::Front(k) => { q.push_front(k); model.push_front(k); }
                    Op::Pop => prop_assert_eq!(q.pop_front(), model.pop_front()),
                }
                prop_assert_eq!(q.len(), model.len() as u64);
            }
            prop_assert_eq!(drain(&mut q), Vec::from(model));
        }

        /// With a wider window it holds the same keys (a multiset), in a different order at
        /// most, and never more runs than keys.
        #[test]
        fn relaxed_queue_keeps_every_key(ops in proptest::collection::vec(op(), 0..300), w in 1usize..9) {
            let mut q = ReadyQueue::new(w);
            let mut model: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Back(k) | Op::Front(k) => {
                        if matches!(op, Op::Back(_)) { q.push_back(k) } else { q.push_front(k) }
                        model.push(k);
                    }
                    Op::Pop => {
                        if let Some(k) = q.pop_front() {
                            let i = model.iter().position(|&m| m == k);
                            prop_assert!(i.is_some(), "popped {} never pushed", k);
                            if let Some(i) = i { model.swap_remove(i); }
                        } else {
                            prop_assert!(model.is_empty());
                        }
                    }
                }
                prop_assert_eq!(q.len(), model.len() as u64);
                prop_assert!(q.runs() as u64 <= q.len());
            }
            let mut rest = drain(&mut q);
            rest.sort_unstable();
            model.sort_unstable();
            prop_assert_eq!(rest, model);
        }
    }
}
