//! The failure budget (`TaskBuilder::max_consecutive_failures`): abandonment, pure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;
use crate::geometry::Roi;

/// A 1D task of `n` independent blocks of size 1 (handed out in grid order).
fn task(id: &str, n: i64, retries: u32, budget: Option<u32>, upstream: &[&Task]) -> Task {
    let mut b = Task::builder(
        id,
        Roi::new([0], [n]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .max_retries(retries);
    if let Some(k) = budget {
        b = b.max_consecutive_failures(k);
    }
    for u in upstream {
        b = b.upstream(u);
    }
    b.build().unwrap()
}

fn release(s: &mut Scheduler, mut b: Block, ok: bool) {
    b.set_status(if ok {
        BlockStatus::Success
    } else {
        BlockStatus::Failed
    });
    s.try_release_block(b).unwrap();
}

/// The counters' invariant, exactly (no saturation hides a miscount).
fn check_invariant(st: &TaskState) {
    assert_eq!(
        st.pending + st.ready + st.completed + st.failed + st.orphaned + st.processing,
        st.total,
        "{st:?}"
    );
}

#[test]
fn zero_is_a_configuration_error() {
    let err = Task::builder(
        "t",
        Roi::new([0], [4]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .max_consecutive_failures(0)
    .build()
    .unwrap_err();
    assert!(matches!(err, Error::InvalidTask { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("\"t\"") && text.contains("max_consecutive_failures is 0"),
        "{text}"
    );
    assert_eq!(
        task("t", 4, 0, Some(1), &[]).max_consecutive_failures(),
        Some(1)
    );
    assert_eq!(task("t", 4, 0, None, &[]).max_consecutive_failures(), None);
}

#[test]
fn n_failures_in_a_row_abandon_the_task_and_a_success_resets_the_count() {
    let t = task("t", 20, 0, Some(3), &[]);
    let mut s = Scheduler::new(&[t]).unwrap();
    // F F S F F S F F F: abandoned at the 9th block, not before.
    let pattern = [false, false, true, false, false, true, false, false, false];
    for (i, ok) in pattern.into_iter().enumerate() {
        let b = s.acquire_block("t").unwrap();
        assert_eq!(b.grid_index(), i as u64);
        assert!(s.task_state("t").unwrap().abandoned.is_none());
        release(&mut s, b, ok);
        check_invariant(s.task_state("t").unwrap());
    }
    let st = s.task_state("t").unwrap().clone();
    assert_eq!(
        st.abandoned.as_deref(),
        Some("abandoned after 3 consecutive failed blocks (last: block 8)")
    );
    assert_eq!((st.completed, st.failed, st.orphaned), (2, 7, 11));
    assert_eq!((st.ready, st.pending, st.processing), (0, 0, 0));
    assert!(s.acquire_block("t").is_none());
    assert!(s.is_done());
    assert_eq!(s.ready_tasks().count(), 0);
}

#[test]
fn retried_attempts_count_only_once_the_block_fails_for_good() {
    let t = task("t", 10, 1, Some(2), &[]);
    let mut s = Scheduler::new(&[t]).unwrap();
    // Block 0 fails once (retried at the back), block 1 fails once: nothing failed for good.
    for _ in 0..2 {
        let b = s.acquire_block("t").unwrap();
        release(&mut s, b, false);
    }
    assert!(s.task_state("t").unwrap().abandoned.is_none());
    assert_eq!(s.task_state("t").unwrap().failed, 0);
    // Blocks 2..9 succeed, then the retries of 0 and 1 fail: two failures in a row.
    for _ in 2..10 {
        let b = s.acquire_block("t").unwrap();
        release(&mut s, b, true);
    }
    let b = s.acquire_block("t").unwrap();
    assert_eq!(b.grid_index(), 0);
    release(&mut s, b, false);
    assert!(s.task_state("t").unwrap().abandoned.is_none());
    let b = s.acquire_block("t").unwrap();
    assert_eq!(b.grid_index(), 1);
    s.release_failed(b, "boom\nwith a traceback");
    let st = s.task_state("t").unwrap();
    assert_eq!(
        st.abandoned.as_deref(),
        Some("abandoned after 2 consecutive failed blocks (last: block 1: boom)")
    );
    assert_eq!((st.completed, st.failed, st.orphaned), (8, 2, 0));
    assert!(s.is_done());
}

#[test]
fn a_long_error_is_cut_in_the_reason() {
    let t = task("t", 3, 0, Some(1), &[]);
    let mut s = Scheduler::new(&[t]).unwrap();
    let b = s.acquire_block("t").unwrap();
    s.release_failed(b, &"é".repeat(1000));
    let reason = s.task_state("t").unwrap().abandoned.clone().unwrap();
    assert!(reason.ends_with("…)"), "{reason}");
    assert!(reason.chars().count() < 300, "{reason}");
}

#[test]
fn skipped_blocks_do_not_reset_the_count() {
    // Odd blocks are found done by the check; even ones fail.
    let t = Task::builder(
        "t",
        Roi::new([0], [10]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .check(|b| b.grid_index() % 2 == 1)
    .max_retries(0)
    .max_consecutive_failures(2)
    .build()
    .unwrap();
    let mut s = Scheduler::new(&[t]).unwrap();
    let b = s.acquire_block("t").unwrap();
    assert_eq!(b.grid_index(), 0);
    release(&mut s, b, false);
    let b = s.acquire_block("t").unwrap();
    assert_eq!(b.grid_index(), 2); // 1 was skipped in between
    release(&mut s, b, false);
    let st = s.task_state("t").unwrap();
    assert!(st.abandoned.is_some(), "{st:?}");
    assert_eq!(
        (st.completed, st.skipped, st.failed, st.orphaned),
        (1, 1, 2, 7)
    );
    check_invariant(st);
    assert!(s.is_done());
}

#[test]
fn blocks_in_flight_still_count_when_they_come_back() {
    let t = task("t", 10, 1, Some(2), &[]);
    let mut s = Scheduler::new(&[t]).unwrap();
    // Blocks 0..4 in flight; 0 and 1 fail (retried at the back of the queue).
    let blocks: Vec<Block> = (0..5).map(|_| s.acquire_block("t").unwrap()).collect();
    let mut blocks = blocks.into_iter();
    for _ in 0..2 {
        release(&mut s, blocks.next().unwrap(), false);
    }
    // 5..9, then the retries of 0 and 1; the retries fail for good: abandoned.
    let taken: Vec<Block> = std::iter::from_fn(|| s.acquire_block("t")).collect();
    let order: Vec<u64> = taken.iter().map(Block::grid_index).collect();
    assert_eq!(order, [5, 6, 7, 8, 9, 0, 1]);
    let (first_tries, retries): (Vec<Block>, Vec<Block>) =
        taken.into_iter().partition(|b| b.grid_index() > 1);
    for b in retries {
        release(&mut s, b, false);
    }
    let st = s.task_state("t").unwrap().clone();
    assert!(st.abandoned.is_some());
    assert_eq!((st.failed, st.processing, st.orphaned), (2, 8, 0));
    check_invariant(&st);
    assert!(!s.is_done());
    assert!(s.acquire_block("t").is_none());
    // A success counts, but does not undo the abandonment; a failure with retries left is
    // not retried: orphaned; a failure on the last attempt counts as failed.
    let mut rest = blocks.chain(first_tries);
    release(&mut s, rest.next().unwrap(), true);
    release(&mut s, rest.next().unwrap(), false);
    let st = s.task_state("t").unwrap().clone();
    assert_eq!(
        (st.completed, st.failed, st.orphaned, st.processing),
        (1, 2, 1, 6)
    );
    assert!(st.abandoned.is_some());
    check_invariant(&st);
    for b in rest {
        release(&mut s, b, true);
    }
    let st = s.task_state("t").unwrap();
    assert_eq!(
        (st.completed, st.failed, st.orphaned, st.processing),
        (7, 2, 1, 0)
    );
    check_invariant(st);
    assert!(s.is_done());
}

#[test]
fn abandonment_spreads_down_a_chain() {
    let a = task("a", 6, 0, Some(2), &[]);
    let b = task("b", 6, 0, None, &[&a]);
    let c = task("c", 6, 0, None, &[&b]);
    let mut s = Scheduler::new(&[c]).unwrap();
    // a/0 succeeds and makes b/0 ready; b/0 is taken (in flight) when a abandons.
    let x = s.acquire_block("a").unwrap();
    release(&mut s, x, true);
    let b0 = s.acquire_block("b").unwrap();
    for _ in 0..2 {
        let x = s.acquire_block("a").unwrap();
        release(&mut s, x, false);
    }
    let sa = s.task_state("a").unwrap().clone();
    assert_eq!(
        sa.abandoned.as_deref(),
        Some("abandoned after 2 consecutive failed blocks (last: block 2)")
    );
    assert_eq!((sa.completed, sa.failed, sa.orphaned), (1, 2, 3));
    let sb = s.task_state("b").unwrap().clone();
    assert_eq!(
        sb.abandoned.as_deref(),
        Some("upstream task a was abandoned")
    );
    assert_eq!((sb.processing, sb.orphaned, sb.ready), (1, 5, 0));
    let sc = s.task_state("c").unwrap().clone();
    assert_eq!(
        sc.abandoned.as_deref(),
        Some("upstream task a was abandoned")
    );
    assert_eq!(sc.orphaned, 6);
    for st in [&sa, &sb, &sc] {
        check_invariant(st);
    }
    assert!(!s.is_done());
    assert!(s.acquire_block("b").is_none() && s.acquire_block("c").is_none());
    // b/0 comes back: it counts, and releases nothing in c.
    release(&mut s, b0, true);
    assert_eq!(s.task_state("b").unwrap().completed, 1);
    assert_eq!(s.task_state("c").unwrap().ready, 0);
    assert!(s.is_done());
}

#[test]
fn a_task_independent_of_the_abandoned_one_runs_on() {
    let a = task("a", 4, 0, Some(1), &[]);
    let other = task("other", 4, 0, None, &[]);
    let mut s = Scheduler::new(&[a, other]).unwrap();
    let x = s.acquire_block("a").unwrap();
    release(&mut s, x, false);
    assert!(s.task_state("a").unwrap().abandoned.is_some());
    let mut n = 0;
    while let Some(b) = s.acquire_block("other") {
        release(&mut s, b, true);
        n += 1;
    }
    assert_eq!(n, 4);
    assert!(s.task_state("other").unwrap().abandoned.is_none());
    assert!(s.is_done());
}

#[test]
fn returned_blocks_are_orphaned_when_abandoned_and_ready_again_otherwise() {
    let t = task("t", 5, 0, Some(1), &[]);
    let mut s = Scheduler::new(&[t]).unwrap();
    let b0 = s.acquire_block("t").unwrap();
    s.unacquire(&b0);
    assert_eq!(s.task_state("t").unwrap().ready, 5);
    // Handed out again (after the roots, which come first).
    let mut seen: Vec<Block> = std::iter::from_fn(|| s.acquire_block("t")).collect();
    let mut order: Vec<u64> = seen.iter().map(Block::grid_index).collect();
    assert_eq!(order, [1, 2, 3, 4, 0]);
    order.clear();
    let again = seen.remove(4);
    let b1 = seen.remove(0);
    release(&mut s, again, false);
    for b in &seen {
        s.unacquire(b);
    }
    assert!(!s.is_done());
    s.unacquire(&b1);
    // Not in flight any more: ignored.
    s.unacquire(&b1);
    let st = s.task_state("t").unwrap();
    assert_eq!((st.failed, st.orphaned, st.processing), (1, 4, 0));
    check_invariant(st);
    assert!(s.is_done());
}

#[test]
fn abandoning_a_billion_blocks_costs_nothing_per_block() {
    let a = task("a", 1_000_000_000, 0, Some(1), &[]);
    let b = task("b", 1_000_000_000, 0, None, &[&a]);
    let mut s = Scheduler::new(&[b]).unwrap();
    let x = s.acquire_block("a").unwrap();
    release(&mut s, x, false);
    assert_eq!(s.task_state("a").unwrap().orphaned, 999_999_999);
    assert_eq!(s.task_state("b").unwrap().orphaned, 1_000_000_000);
    assert!(s.is_done());
}

#[test]
fn the_daisy_text_gets_a_tenth_line_only_when_abandoned() {
    let mut st = TaskState {
        total: 3,
        failed: 1,
        orphaned: 2,
        ..TaskState::default()
    };
    let daisy = "Started: False\nTotal Blocks: 3\nReady: 0\nProcessing: 0\nPending: 0\nCompleted: 0\nSkipped: 0\nFailed: 1\nOrphaned: 2\n";
    assert_eq!(st.to_string(), daisy);
    st.abandoned = Some("upstream task a was abandoned".into());
    assert_eq!(
        st.to_string(),
        format!("{daisy}Abandoned: upstream task a was abandoned\n")
    );
    // Records without the field still read.
    let json = r#"{"started":true,"total":1,"ready":0,"pending":0,"processing":0,"completed":1,"skipped":0,"failed":0,"orphaned":0}"#;
    let read: TaskState = serde_json::from_str(json).unwrap();
    assert_eq!(read.abandoned, None);
    assert!(!serde_json::to_string(&read).unwrap().contains("abandoned"));
}

fn geom_task(
    id: &str,
    n: i64,
    ws: i64,
    ctx: i64,
    retries: u32,
    budget: Option<u32>,
    up: &[&Task],
) -> Task {
    let mut b = Task::builder(
        id,
        Roi::new([0], [n]),
        Roi::new([0], [ws + 2 * ctx]),
        Roi::new([ctx], [ws]),
    )
    .max_retries(retries);
    if let Some(k) = budget {
        b = b.max_consecutive_failures(k);
    }
    for u in up {
        b = b.upstream(u);
    }
    b.build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random interleavings with random failures on a chain of three tasks with budgets: the
    /// counters' invariant holds after every step, an abandoned task hands out nothing, the
    /// first abandoned task failed at least its budget, and the run ends done.
    #[test]
    fn random_failures_keep_the_counters_and_end_done(
        sizes in proptest::collection::vec((4i64..30, 1i64..4, 0i64..2), 3),
        budgets in proptest::collection::vec(proptest::option::of(1u32..4), 3),
        retries in 0u32..3,
        seed in any::<u64>(),
        fail_rate in 0u64..4,
    ) {
        let a = geom_task("a", sizes[0].0, sizes[0].1, sizes[0].2, retries, budgets[0], &[]);
        let b = geom_task("b", sizes[1].0, sizes[1].1, sizes[1].2, retries, budgets[1], &[&a]);
        let c = geom_task("c", sizes[2].0, sizes[2].1, sizes[2].2, retries, budgets[2], &[&b]);
        let tasks = [a, b, c];
        let mut s = Scheduler::new(&tasks).unwrap();
        let mut rng = seed | 1;
        let mut next = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
        let mut in_flight: Vec<Block> = Vec::new();
        let mut steps = 0;
        loop {
            steps += 1;
            prop_assert!(steps < 100_000, "run does not end");
            let mut got = None;
            if in_flight.is_empty() || next() % 2 == 0 {
                let first = (next() % 3) as usize;
                for k in 0..3 {
                    let t = &tasks[(first + k) % 3];
                    if let Some(blk) = s.acquire_block(t.task_id()) {
                        got = Some(blk);
                        break;
                    }
                }
            }
            match got {
                Some(blk) => {
                    prop_assert!(s.task_state(blk.task_id()).unwrap().abandoned.is_none());
                    in_flight.push(blk);
                }
                None if in_flight.is_empty() => break,
                None => {
                    let i = (next() % in_flight.len() as u64) as usize;
                    let mut blk = in_flight.swap_remove(i);
                    let fail = fail_rate > 0 && next() % (fail_rate + 1) != 0;
                    blk.set_status(if fail { BlockStatus::Failed } else { BlockStatus::Success });
                    s.try_release_block(blk).unwrap();
                }
            }
            for t in &tasks {
                let st = s.task_state(t.task_id()).unwrap();
                prop_assert_eq!(
                    st.pending + st.ready + st.completed + st.failed + st.orphaned + st.processing,
                    st.total,
                    "{}: {:?}", t.task_id(), st
                );
                if st.abandoned.is_some() {
                    prop_assert_eq!(st.ready, 0);
                    prop_assert_eq!(st.pending, 0);
                }
            }
        }
        prop_assert!(s.is_done());
        // Tasks abandoned on their own budget, and whether the task just above (the chain is
        // a -> b -> c) was abandoned: abandonment spreads down only through tasks it reaches.
        let mut abandoned_above: Vec<&str> = Vec::new();
        let mut upstream_abandoned = false;
        for (t, budget) in tasks.iter().zip(&budgets) {
            let st = s.task_state(t.task_id()).unwrap();
            prop_assert_eq!(st.completed + st.failed + st.orphaned, st.total, "{:?}", st);
            prop_assert_eq!(st.ready + st.processing + st.pending, 0);
            match &st.abandoned {
                // Because of a task above it that was abandoned on its own.
                Some(r) if r.starts_with("upstream") => {
                    prop_assert!(upstream_abandoned, "{}: {} with its upstream not abandoned", t.task_id(), r);
                    prop_assert!(
                        abandoned_above.iter().any(|up| r == &format!("upstream task {up} was abandoned")),
                        "{}: {} (above: {:?})", t.task_id(), r, abandoned_above
                    );
                }
                Some(r) => {
                    let n = budget.unwrap();
                    prop_assert!(st.failed >= u64::from(n), "{:?}", st);
                    prop_assert!(r.starts_with(&format!("abandoned after {n} consecutive failed blocks")), "{}", r);
                    abandoned_above.push(t.task_id());
                }
                // Below an abandoned task, only a task whose blocks all completed before is left
                // alone (and the spread stops there: a task below it runs on its own).
                None if upstream_abandoned => {
                    prop_assert_eq!(st.completed, st.total, "{} not abandoned below {:?}", t.task_id(), abandoned_above);
                }
                None => {}
            }
            upstream_abandoned = st.abandoned.is_some();
            if fail_rate == 0 {
                prop_assert_eq!(st.completed, st.total);
                prop_assert!(st.abandoned.is_none());
            }
        }
    }
}
