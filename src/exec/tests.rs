//! other_seeds.md §7 behaviours 1–6 on the thread backend, made deterministic: instead of
//! sleeping, slow items wait for the events that must happen first (with a timeout that fails
//! the item).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::*;

/// A log of events and a way to wait for a condition on it.
#[derive(Default)]
struct Events {
    log: Mutex<Vec<String>>,
    cv: Condvar,
}

impl Events {
    fn push(&self, e: String) {
        self.log.lock().unwrap().push(e);
        self.cv.notify_all();
    }

    fn wait_for(&self, what: impl Fn(&[String]) -> bool) -> Result<(), String> {
        let log = self.log.lock().unwrap();
        let (_log, timeout) = self
            .cv
            .wait_timeout_while(log, Duration::from_secs(20), |l| !what(l))
            .unwrap();
        if timeout.timed_out() {
            Err("timed out waiting for other items".into())
        } else {
            Ok(())
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn has(log: &[String], e: &str) -> bool {
    log.iter().any(|x| x == e)
}

#[test]
fn map_gathers_in_input_order() {
    let ex = Executor::threads(2);
    assert_eq!(
        ex.map(|x: i32| Ok::<_, String>(x + 1), [1, 2, 3]),
        Ok(vec![2, 3, 4])
    );
    assert_eq!(ex.map(|x: i32| Ok::<_, String>(x), Vec::new()), Ok(vec![]));
    assert_eq!(ex.slots(), 2);
}

#[test]
fn order_despite_completion_order_and_as_completed() {
    let ex = Executor::threads(10);
    let ev = Arc::new(Events::default());
    let e = Arc::clone(&ev);
    // Every item but 9 waits until 9 is done: 9 finishes first.
    let f = move |x: usize| -> Result<usize, String> {
        if x != 9 {
            e.wait_for(|l| has(l, "done 9"))?;
        }
        e.push(format!("done {x}"));
        Ok(x)
    };
    let out = ex
        .bounded_map(f, 0..10usize, MapOptions::new(10))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(out, (0..10).collect::<Vec<_>>());
    assert_eq!(ev.snapshot()[0], "done 9");
    // As completed: every item but 9 waits until the consumer has received 9.
    ev.log.lock().unwrap().clear();
    let e = Arc::clone(&ev);
    let g = move |x: usize| -> Result<usize, String> {
        if x != 9 {
            e.wait_for(|l| has(l, "got 9"))?;
        }
        Ok(x)
    };
    let completed: Vec<(usize, usize)> = ex
        .as_completed(g, 0..10usize)
        .map(|(i, r)| {
            ev.push(format!("got {i}"));
            (i, r.unwrap())
        })
        .collect();
    assert_eq!(completed.len(), 10);
    assert_eq!(completed[0], (9, 9));
    let mut indices: Vec<usize> = completed.iter().map(|c| c.0).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..10).collect::<Vec<_>>());
}

#[test]
fn a_bounded_map_over_a_huge_lazy_range_keeps_64_in_flight() {
    let ex = Executor::threads(4);
    for mode in [Mode::Window, Mode::Barrier] {
        let n = 1_000_000u64;
        let mut m = ex.bounded_map(
            |x: u64| Ok::<_, String>(x + 1),
            0..n,
            MapOptions::new(64).mode(mode),
        );
        let sum: u64 = m.by_ref().map(|r| r.unwrap()).sum();
        assert_eq!(sum, n * (n + 1) / 2, "{mode:?}");
        assert!(m.peak_in_flight() <= 64, "{mode:?}: {}", m.peak_in_flight());
        assert!(m.peak_in_flight() >= 1);
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn windowed_sum(ex: &Executor, n: u64) -> u64 {
    let mut m = ex.bounded_map(|x: u64| Ok::<_, String>(x + 1), 0..n, MapOptions::new(64));
    let sum = m.by_ref().map(|r| r.unwrap()).sum();
    assert!(m.peak_in_flight() <= 64);
    sum
}

/// Behaviour 3 at full size (slow in debug builds: `cargo test --release -- --ignored`):
/// 10^7 items give 50_000_005_000_000 and the peak resident memory after 10^7 items is within
/// 10% of the peak after 10^6.
#[test]
#[ignore = "10^7 items; run with --release --ignored"]
fn ten_million_items_in_the_memory_of_one_million() {
    let ex = Executor::threads(4);
    assert_eq!(windowed_sum(&ex, 1_000_000), 500_000_500_000);
    let after_1e6 = peak_rss_kib();
    assert_eq!(windowed_sum(&ex, 10_000_000), 50_000_005_000_000);
    let after_1e7 = peak_rss_kib();
    assert!(
        after_1e7 * 10 <= after_1e6 * 11,
        "peak RSS grew from {after_1e6} KiB to {after_1e7} KiB"
    );
}

/// Behaviour 3's slow variant: 10^9 items (about 10 minutes in release on 2 cores).
#[test]
#[ignore = "10^9 items; run with --release --ignored"]
fn a_billion_items() {
    let ex = Executor::threads(4);
    let before = peak_rss_kib();
    assert_eq!(windowed_sum(&ex, 1_000_000_000), 500_000_000_500_000_000);
    let after = peak_rss_kib();
    assert!(
        after < before + 64 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}

/// 12 items, batch 4; item 0 is the slow one.
fn barrier_or_window(mode: Mode) -> Vec<String> {
    let ex = Executor::threads(4);
    let ev = Arc::new(Events::default());
    let (e, s) = (Arc::clone(&ev), Arc::clone(&ev));
    let f = move |x: usize| -> Result<usize, String> {
        if x == 0 {
            match mode {
                // Window: item 0 finishes only after every other item has.
                Mode::Window => e.wait_for(|l| (1..12).all(|i| has(l, &format!("done {i}"))))?,
                // Barrier: after the rest of its batch.
                Mode::Barrier => e.wait_for(|l| (1..4).all(|i| has(l, &format!("done {i}"))))?,
            }
        }
        e.push(format!("done {x}"));
        Ok(x * 10)
    };
    let items = (0..12usize).inspect(move |i| s.push(format!("submit {i}")));
    let out: Vec<usize> = ex
        .bounded_map(f, items, MapOptions::new(4).mode(mode))
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(out, (0..12).map(|x| x * 10).collect::<Vec<_>>(), "{mode:?}");
    ev.snapshot()
}

#[test]
fn barrier_batches_wait_for_their_slowest_item() {
    let log = barrier_or_window(Mode::Barrier);
    let pos = |e: &str| log.iter().position(|x| x == e).unwrap();
    // Three batches: {0-3}, {4-7}, {8-11}; each submitted after the previous one finished.
    for b in 1..3 {
        let first_submit = pos(&format!("submit {}", 4 * b));
        for i in 4 * (b - 1)..4 * b {
            assert!(pos(&format!("done {i}")) < first_submit, "{log:?}");
        }
    }
}

#[test]
fn a_window_keeps_going_past_a_slow_item() {
    let log = barrier_or_window(Mode::Window);
    let done0 = log.iter().position(|x| x == "done 0").unwrap();
    for i in 4..12 {
        assert!(log.iter().position(|x| *x == format!("done {i}")).unwrap() < done0);
    }
}

fn inverse(x: i64) -> Result<i64, String> {
    if x == 5 {
        Err("division by zero".into())
    } else {
        Ok(100 / (x - 5))
    }
}

#[test]
fn fail_fast_and_collect() {
    let ex = Executor::threads(3);
    for mode in [Mode::Barrier, Mode::Window] {
        let submitted = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&submitted);
        let items = (0..10i64).inspect(move |i| s.lock().unwrap().push(*i));
        let out: Result<Vec<i64>, ItemError> = ex
            .bounded_map(inverse, items, MapOptions::new(3).mode(mode))
            .collect();
        let e = out.unwrap_err();
        assert_eq!(e.index(), Some(5), "{mode:?}");
        assert_eq!(e.to_string(), "item 5 failed: division by zero");
        if mode == Mode::Barrier {
            // The batches after {3, 4, 5} are never started.
            assert!(
                submitted.lock().unwrap().iter().all(|&i| i <= 5),
                "{submitted:?}"
            );
        }
    }
    let all: Vec<Result<i64, ItemError>> = ex
        .bounded_map(
            inverse,
            0..10i64,
            MapOptions::new(3).on_error(OnError::Collect),
        )
        .collect();
    assert_eq!(all.len(), 10);
    assert_eq!(all[5].as_ref().unwrap_err().index(), Some(5));
    assert_eq!(all[4], Ok(-100));
    assert_eq!(all[6], Ok(100));
    assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 9);
    // A panic fails its item like an error.
    let e = ex
        .map(
            |x: i32| {
                if x == 2 {
                    panic!("boom {x}")
                } else {
                    Ok::<_, String>(x)
                }
            },
            0..4,
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "item 2 failed: panic: boom 2");
}

#[test]
fn map_zip_needs_equal_lengths() {
    let ex = Executor::threads(2);
    let add = |(a, b): (i32, i32)| Ok::<_, String>(a + b);
    assert_eq!(
        ex.map_zip(add, [1, 2, 3], [10, 20, 30]),
        Ok(vec![11, 22, 33])
    );
    assert_eq!(
        ex.map_zip(add, [1, 2, 3], [10, 20]),
        Err(ItemError::LengthMismatch {
            first: 3,
            second: 2
        })
    );
    assert_eq!(
        ex.map_zip(add, [1], [10, 20, 30]).unwrap_err().to_string(),
        "inputs of different lengths: the first ended after 1 items, the second after 3"
    );
}

#[test]
fn dropping_a_map_early_waits_for_its_items_and_submits_no_more() {
    let ex = Executor::threads(2);
    let submitted = Arc::new(Mutex::new(0usize));
    let s = Arc::clone(&submitted);
    let items = (0..1_000_000u64).inspect(move |_| *s.lock().unwrap() += 1);
    let mut m = ex.bounded_map(|x: u64| Ok::<_, String>(x), items, MapOptions::new(8));
    assert_eq!(m.next(), Some(Ok(0)));
    drop(m);
    // At most the window plus the reorder buffer (16 × 8) were pulled from the input.
    let n = *submitted.lock().unwrap();
    assert!(n <= 8 + 16 * 8, "{n}");
}

// Time limits on the thread backend: stuck items wait on events (released at the end of each
// test), never on clocks; the only clock is the limit under test.

fn thread_pool(ex: &Executor) -> &pool::Pool {
    match &*ex.backend {
        Backend::Threads(p) => p,
        Backend::Remote(_) => panic!("not a thread executor"),
    }
}

type Outcome = (usize, Result<u64, CallError>);

/// Calls `f(x)` on `ex` and sends `(x, result)` to `tx`.
fn call_with<F>(ex: &Executor, f: &Arc<F>, x: usize, tx: &crossbeam_channel::Sender<Outcome>)
where
    F: Fn(usize) -> Result<u64, String> + Send + Sync + 'static,
{
    let tx = tx.clone();
    ex.call(f, x, None, move |r: Result<u64, CallError>| {
        let _ = tx.send((x, r));
    });
}

fn recv(rx: &crossbeam_channel::Receiver<Outcome>) -> Outcome {
    rx.recv_timeout(Duration::from_secs(20))
        .expect("no result within 20 s")
}

#[test]
fn a_stuck_item_times_out_its_thread_is_replaced_and_its_late_result_dropped() {
    let ex = Executor::threads(2);
    let limit = Duration::from_millis(100);
    let ev = Arc::new(Events::default());
    let e = Arc::clone(&ev);
    // Item 0 hangs until released; items 1 and 2 each wait until both have started, which
    // only happens if two threads are free besides the stuck one.
    let f = Arc::new(move |x: usize| -> Result<u64, String> {
        e.push(format!("started {x}"));
        if x == 0 {
            e.wait_for(|l| has(l, "release"))?;
            e.push("0 returned".into());
        } else {
            e.wait_for(|l| has(l, "started 1") && has(l, "started 2"))?;
        }
        Ok(x as u64 * 10)
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    call_with(&ex.with_timeout(limit), &f, 0, &tx);
    assert_eq!(recv(&rx), (0, Err(CallError::TimedOut(limit))));
    assert_eq!(thread_pool(&ex).live(), 2, "the stuck thread was replaced");
    // Full width: both items meet at their barrier (no limit for them).
    call_with(&ex, &f, 1, &tx);
    call_with(&ex, &f, 2, &tx);
    let mut got = vec![recv(&rx), recv(&rx)];
    got.sort_by_key(|o| o.0);
    assert_eq!(got, vec![(1, Ok(10)), (2, Ok(20))]);
    assert!(!has(&ev.snapshot(), "0 returned"), "item 0 was still stuck");
    // The stuck item returns: its result is dropped, nothing more is delivered.
    ev.push("release".into());
    assert!(thread_pool(&ex).wait_late(1, Duration::from_secs(20)));
    assert!(has(&ev.snapshot(), "0 returned"));
    assert!(rx.try_recv().is_err(), "a late result was delivered");
    // The pool still works at full width and keeps two threads.
    assert_eq!(
        ex.map(|x: u64| Ok::<_, String>(x + 1), 0..10),
        Ok((1..11).collect())
    );
    assert_eq!(thread_pool(&ex).live(), 2);
}

#[test]
fn without_a_limit_items_run_as_long_as_they_take() {
    // No limit anywhere: no watchdog, no lock per item.
    let ex = Executor::threads(2);
    assert_eq!(ex.timeout(), None);
    assert_eq!(
        ex.map(|x: u64| Ok::<_, String>(x), 0..100).map(|v| v.len()),
        Ok(100)
    );
    assert!(!thread_pool(&ex).has_watchdog());
    // An item without a limit outlives another item's limit: X starts, then W starts and times
    // out after `limit`, so X has run longer than `limit` when it is released, and succeeds.
    let limit = Duration::from_millis(50);
    let ev = Arc::new(Events::default());
    let e = Arc::clone(&ev);
    let f = Arc::new(move |x: usize| -> Result<u64, String> {
        e.push(format!("started {x}"));
        e.wait_for(|l| has(l, "release"))?;
        Ok(x as u64)
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    call_with(&ex, &f, 1, &tx);
    ev.wait_for(|l| has(l, "started 1")).unwrap();
    call_with(&ex.with_timeout(limit), &f, 2, &tx);
    assert_eq!(recv(&rx), (2, Err(CallError::TimedOut(limit))));
    ev.push("release".into());
    assert_eq!(recv(&rx), (1, Ok(1)));
    assert!(thread_pool(&ex).wait_late(1, Duration::from_secs(20)));
    // MapOptions::no_timeout lifts the executor's limit for one map.
    let limited = ex.with_timeout(limit);
    let e = Arc::clone(&ev);
    let g = move |x: u64| -> Result<u64, String> {
        if x == 0 {
            // Waits for a witness item to time out, i.e. runs longer than the limit.
            e.push("g started".into());
            e.wait_for(|l| has(l, "witness timed out"))?;
        }
        Ok(x)
    };
    let (wtx, wrx) = crossbeam_channel::unbounded();
    let consumer = {
        let limited = limited.clone();
        std::thread::spawn(move || {
            limited
                .bounded_map(g, 0..2u64, MapOptions::new(2).no_timeout())
                .collect::<Result<Vec<_>, _>>()
        })
    };
    ev.wait_for(|l| has(l, "g started")).unwrap();
    let e = Arc::clone(&ev);
    let witness = Arc::new(move |_: usize| -> Result<u64, String> {
        e.wait_for(|l| has(l, "end"))?;
        Ok(0)
    });
    call_with(&limited, &witness, 9, &wtx);
    assert_eq!(recv(&wrx), (9, Err(CallError::TimedOut(limit))));
    ev.push("witness timed out".into());
    assert_eq!(consumer.join().unwrap(), Ok(vec![0, 1]));
    ev.push("end".into());
    assert!(thread_pool(&ex).wait_late(2, Duration::from_secs(20)));
}

#[test]
fn timeouts_are_failures_for_maps_sweeps_and_streams() {
    // Long enough for the items that return at once never to reach it.
    let limit = Duration::from_millis(500);
    let ex = Executor::threads(2).with_timeout(limit);
    let ev = Arc::new(Events::default());
    let e = Arc::clone(&ev);
    // Item 3 hangs until the end of the test; the others return at once.
    let f = move |x: u64| -> Result<u64, String> {
        if x == 3 {
            e.wait_for(|l| has(l, "release"))?;
        }
        Ok(x * 2)
    };
    // Fail-fast: the timed-out item is the map's error.
    assert_eq!(
        ex.map(f.clone(), 0..6u64),
        Err(ItemError::TimedOut { index: 3, limit })
    );
    // Collect: every other item gives its result.
    let all: Vec<Result<u64, ItemError>> = ex
        .bounded_map(
            f.clone(),
            0..6u64,
            MapOptions::new(2).on_error(OnError::Collect),
        )
        .collect();
    assert_eq!(all[3], Err(ItemError::TimedOut { index: 3, limit }));
    assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 5);
    assert_eq!(
        all[3].as_ref().unwrap_err().to_string(),
        "item 3 timed out after 500ms"
    );
    // As completed, with the executor's limit.
    let mut done: Vec<(usize, bool)> = ex
        .as_completed(f.clone(), 0..6u64)
        .map(|(i, r)| (i, r.is_ok()))
        .collect();
    done.sort_unstable();
    assert_eq!(done[3], (3, false));
    // A per-map limit replaces the executor's.
    let longer = Duration::from_millis(600);
    let e = ex
        .bounded_map(f.clone(), [3u64], MapOptions::new(1).timeout(longer))
        .next();
    assert_eq!(
        e,
        Some(Err(ItemError::TimedOut {
            index: 0,
            limit: longer
        }))
    );
    // A sweep call and a stream node time out alike.
    let mut sweeps = crate::exec::Sweeps::new();
    let g = f.clone();
    let run = sweeps.run(&ex, "t", move |p: Vec<u64>| g(p[0]), vec![vec![2, 3]], 1);
    let results = run.gather();
    assert_eq!(results[0], Ok(4));
    assert_eq!(results[1], Err(ItemError::TimedOut { index: 1, limit }));
    let source = Source::<u64>::new();
    let _out = source.stream().scatter(&ex).map(f).gather().sink_to_list();
    source.emit(1).unwrap();
    let err = source.emit(3).unwrap_err();
    assert_eq!(err.to_string(), "stream node map: timed out after 500ms");
    ev.push("release".into());
    // Six stuck items were abandoned (map, bounded map, as completed, per-map limit, sweep,
    // stream), their late results dropped, and the pool kept its two threads.
    assert!(thread_pool(&ex).wait_late(6, Duration::from_secs(20)));
    assert_eq!(thread_pool(&ex).live(), 2);
}

#[test]
fn dropping_the_executor_does_not_wait_for_an_abandoned_thread() {
    let limit = Duration::from_millis(50);
    let ev = Arc::new(Events::default());
    let e = Arc::clone(&ev);
    let ex = Executor::threads(1).with_timeout(limit);
    let hang = move |_: u64| -> Result<u64, String> {
        e.wait_for(|l| has(l, "release"))?;
        Ok(0)
    };
    assert_eq!(
        ex.map(hang, [0u64]),
        Err(ItemError::TimedOut { index: 0, limit })
    );
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        drop(ex);
        let _ = tx.send(());
    });
    let dropped = rx.recv_timeout(Duration::from_secs(20));
    ev.push("release".into());
    assert!(
        dropped.is_ok(),
        "dropping the executor waited for the stuck item"
    );
}
