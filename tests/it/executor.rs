//! The executor on worker processes: the test binary re-executes itself as each worker
//! (`--exact <this test>`), where `ExecutorBuilder::start` serves items and exits. The same
//! calls run on threads and on processes and must give the same results (other_seeds.md §7
//! behaviour 1, and behaviours 5–8 and 16–18 on processes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blockwise::WorkerOptions;
use blockwise::exec::{
    Executor, ExecutorBuilder, ExecutorError, Function, ItemError, MapOptions, Mode, OnError,
    Source, Sweeps, scattered,
};

use crate::support::{in_worker, scratch};

/// An executor of 2 worker processes re-running `test` of this binary.
fn processes(test: &str, dir: &Path) -> ExecutorBuilder {
    Executor::processes(2).workers(
        WorkerOptions::new()
            .worker_command(
                std::env::current_exe().unwrap(),
                ["--exact", test, "--nocapture", "--test-threads=1"],
            )
            .log_dir(dir.join("logs"))
            .handle_signals(false),
    )
}

fn inc() -> Function<u64, u64> {
    Function::new("inc", |x: u64| Ok::<u64, String>(x + 1))
}

/// `1 / (x - 5)` in integers: fails at 5.
fn inverse() -> Function<i64, i64> {
    Function::new("inverse", |x: i64| {
        if x == 5 {
            Err("division by zero".to_owned())
        } else {
            Ok(100 / (x - 5))
        }
    })
}

fn add() -> Function<(i64, i64), i64> {
    Function::new("add", |(a, b): (i64, i64)| Ok::<i64, String>(a + b))
}

/// Everything the map API does, on one executor: results must not depend on the backend.
fn map_behaviours(ex: &Executor) {
    // Behaviour 1.
    assert_eq!(ex.map(inc(), [1, 2, 3]).unwrap(), vec![2, 3, 4]);
    // as_completed yields every item once.
    let mut done: Vec<(usize, u64)> = ex
        .as_completed(inc(), 0..20u64)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    done.sort_unstable();
    assert_eq!(done, (0..20).map(|i| (i, i as u64 + 1)).collect::<Vec<_>>());
    // A bounded map folded as it goes, both modes.
    for mode in [Mode::Window, Mode::Barrier] {
        let mut m = ex.bounded_map(inc(), 0..2_000u64, MapOptions::new(8).mode(mode));
        let sum: u64 = m.by_ref().map(Result::unwrap).sum();
        assert_eq!(sum, 2_000 * 2_001 / 2);
        assert!(m.peak_in_flight() <= 8, "{}", m.peak_in_flight());
    }
    // Behaviour 5: fail-fast reports index 5; collect gives every result.
    let opts = MapOptions::new(3).mode(Mode::Barrier);
    let e = ex
        .bounded_map(inverse(), 0..10i64, opts)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err();
    assert_eq!(e.index(), Some(5));
    assert_eq!(e.to_string(), "item 5 failed: division by zero");
    let all: Vec<Result<i64, ItemError>> = ex
        .bounded_map(inverse(), 0..10i64, opts.on_error(OnError::Collect))
        .collect();
    assert_eq!(all.len(), 10);
    assert_eq!(all[5].as_ref().unwrap_err().index(), Some(5));
    assert_eq!(all[4], Ok(-100));
    assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 9);
    // Behaviour 6.
    assert_eq!(
        ex.map_zip(add(), [1, 2, 3], [10, 20, 30]),
        Ok(vec![11, 22, 33])
    );
    assert_eq!(
        ex.map_zip(add(), [1, 2, 3], [10, 20]),
        Err(ItemError::LengthMismatch {
            first: 3,
            second: 2
        })
    );
}

#[test]
fn the_map_api_gives_the_same_results_on_threads_and_processes() {
    let dir = scratch("executor-parity");
    map_behaviours(&Executor::threads(2));
    let ex = processes(
        "executor::the_map_api_gives_the_same_results_on_threads_and_processes",
        &dir,
    )
    .function(&inc())
    .function(&inverse())
    .function(&add())
    .start()
    .unwrap();
    assert!(
        !in_worker(),
        "a worker never gets here: start() served and exited"
    );
    assert_eq!(ex.slots(), 2);
    map_behaviours(&ex);
    assert!(ex.wait_for_workers(2, Duration::from_secs(60)));
    // What cannot run in another process says so, per item.
    let e = ex
        .map(|x: u64| Ok::<u64, String>(x), [1])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a closure cannot run in a worker process"),
        "{e}"
    );
    let unknown = Function::new("not-registered", |x: u64| Ok::<u64, String>(x));
    let e = ex.map(unknown, [1]).unwrap_err().to_string();
    assert!(e.contains("is not registered with this executor"), "{e}");
    // Workers logged where they were told to.
    drop(ex);
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert!(jobs.lines().count() >= 2, "{jobs}");
    assert!(dir.join("logs/executor-executor").is_dir());
}

/// A sweep (behaviour 7) with data scattered to the workers once, and a streaming pipeline
/// (behaviours 16–18) whose parallel section runs on the worker processes.
#[test]
fn sweeps_scatter_and_streams_run_on_worker_processes() {
    let dir = scratch("executor-sweeps");
    let sweep_fn = Function::new("sweep", |p: Vec<i64>| {
        let s = scattered::<i64>("s").ok_or("s was not scattered")?;
        Ok::<i64, String>(if p.is_empty() {
            *s
        } else {
            *s * 100 + p[0] * 10 + p[1]
        })
    });
    // Each item returns its worker's pid and where that worker keeps the scattered table.
    let table_at = Function::new("table_at", |i: usize| {
        let t = scattered::<Vec<u64>>("table").ok_or("no table")?;
        Ok::<(u32, usize, u64), String>((std::process::id(), Arc::as_ptr(&t) as usize, t[i]))
    });
    let even = Function::new("even", |x: i64| Ok::<bool, String>(x % 2 == 0));
    let inverse_f = inverse();
    let ex = processes(
        "executor::sweeps_scatter_and_streams_run_on_worker_processes",
        &dir,
    )
    .function(&sweep_fn)
    .function(&table_at)
    .function(&even)
    .function(&inverse_f)
    .function(&inc())
    .start()
    .unwrap();
    ex.scatter("s", 1i64).unwrap();
    let mut sweeps = Sweeps::new();
    let run = sweeps.run(
        &ex,
        "a",
        sweep_fn.clone(),
        vec![vec![1, 2], vec![1, 2, 3]],
        2,
    );
    assert_eq!(run.len(), 12);
    let once = [111, 112, 113, 121, 122, 123];
    let got: Vec<i64> = run.gather().into_iter().map(Result::unwrap).collect();
    assert_eq!(got, once.iter().chain(&once).copied().collect::<Vec<_>>());
    let empty = sweeps.run(&ex, "b", sweep_fn, vec![], 5);
    assert_eq!(empty.gather(), vec![Ok(1); 5]);
    assert_eq!(sweeps.get("a").unwrap().status().finished, 12);
    // A table of 100,000 numbers, scattered once: every item of a worker sees the same copy.
    let table: Vec<u64> = (0..100_000).map(|i| i * 3).collect();
    ex.scatter("table", table).unwrap();
    let seen = ex.map(table_at, (0..200).map(|i| i * 500)).unwrap();
    let mut copies: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, (pid, at, v)) in seen.into_iter().enumerate() {
        assert_eq!(v, i as u64 * 500 * 3);
        copies.entry(pid).or_default().push(at);
    }
    for (pid, at) in &copies {
        assert!(
            at.windows(2).all(|w| w[0] == w[1]),
            "worker {pid} decoded the table twice"
        );
    }
    assert_ne!(copies.keys().next(), Some(&std::process::id()));
    // Streams: scatter -> map on the workers -> buffer -> gather keeps input order.
    let src = Source::new();
    let out = src
        .stream()
        .scatter(&ex)
        .map(inc())
        .buffer(4)
        .gather()
        .sink_to_list();
    for i in 0..20u64 {
        src.emit(i).unwrap();
    }
    src.close().unwrap();
    assert_eq!(*out.lock().unwrap(), (1..=20).collect::<Vec<u64>>());
    // A parallel filter, and an error that reaches the emitter.
    let src = Source::new();
    let evens = src
        .stream()
        .scatter(&ex)
        .filter(even)
        .gather()
        .sink_to_list();
    for i in 0..5i64 {
        src.emit(i).unwrap();
    }
    src.close().unwrap();
    assert_eq!(*evens.lock().unwrap(), vec![0, 2, 4]);
    let src = Source::new();
    let _ = src
        .stream()
        .scatter(&ex)
        .map(inverse_f)
        .gather()
        .sink_to_list();
    let e = src.emit(5i64).unwrap_err();
    assert!(e.to_string().contains("division by zero"), "{e}");
}

/// Items whose worker dies are retried on another worker; an item that kills every worker
/// fails after 3 attempts, and the rest of the map still completes.
#[test]
fn items_survive_dying_workers() {
    let dir = scratch("executor-chaos");
    let flags = dir.join("flags");
    let f = flags.clone();
    let fragile = Function::new("fragile", move |x: u64| {
        // Items 3 and 7 kill their worker the first time they run.
        if (x == 3 || x == 7) && std::fs::File::create_new(f.join(x.to_string())).is_ok() {
            std::process::abort();
        }
        if x == 11 {
            std::process::abort(); // every time
        }
        Ok::<u64, String>(x * 2)
    });
    let ex = processes("executor::items_survive_dying_workers", &dir)
        .function(&fragile)
        .max_worker_restarts(10)
        .start()
        .unwrap();
    std::fs::create_dir_all(&flags).unwrap();
    let out: Vec<Result<u64, ItemError>> = ex
        .bounded_map(
            fragile,
            0..16u64,
            MapOptions::new(2).on_error(OnError::Collect),
        )
        .collect();
    for (i, r) in out.iter().enumerate() {
        if i == 11 {
            let e = r.as_ref().unwrap_err().to_string();
            assert!(e.contains("lost while running this item"), "{e}");
            assert!(e.contains("tried 3 times"), "{e}");
        } else {
            assert_eq!(r, &Ok(i as u64 * 2), "item {i}");
        }
    }
    assert!(flags.join("3").exists() && flags.join("7").exists());
}

/// Workers that cannot start make every item fail with their error, instead of a hang.
#[test]
fn workers_that_cannot_start_fail_the_items_with_their_stderr() {
    let dir = scratch("executor-startup");
    let ex = Executor::processes(2)
        .workers(
            WorkerOptions::new()
                .worker_command("/bin/sh", ["-c", "echo 'no GPU on this node' >&2; exit 3"])
                .log_dir(dir.join("logs"))
                .handle_signals(false),
        )
        .max_worker_restarts(2)
        .function(&inc())
        .start()
        .unwrap();
    let e = ex.map(inc(), [1, 2, 3]).unwrap_err().to_string();
    assert!(e.contains("failed to start 3 times"), "{e}");
    assert!(e.contains("no GPU on this node"), "{e}");
    // Later calls fail at once with the same reason.
    let e = ex.map(inc(), [4]).unwrap_err().to_string();
    assert!(e.contains("no GPU on this node"), "{e}");
}

#[test]
fn two_functions_under_one_name_are_refused() {
    let e = Executor::processes(1)
        .function(&inc())
        .function(&Function::new("inc", |x: i64| Ok::<i64, String>(x)))
        .start()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "executor: two functions are registered under the name \"inc\""
    );
    assert!(
        matches!(&e, blockwise::Error::Executor(ExecutorError::DuplicateFunction { name }) if name == "inc"),
        "{e:?}"
    );
}

/// `ExecutorBuilder::serve` is the worker side without the exit: in this test's workers it
/// serves the items and returns their count (the test function then returns normally); in the
/// driver it returns `None`. `cancel_with` stops the pool: a waiting item fails with the reason.
#[test]
fn serve_returns_in_workers_and_cancel_stops_the_pool() {
    let dir = scratch("executor-serve");
    let slow = Function::new("slow", |x: u64| {
        if x == 99 {
            std::thread::sleep(Duration::from_secs(60));
        }
        Ok::<u64, String>(x)
    });
    let builder = || {
        processes(
            "executor::serve_returns_in_workers_and_cancel_stops_the_pool",
            &dir,
        )
        .function(&inc())
        .function(&slow)
    };
    if let Some(n) = builder().serve().unwrap() {
        eprintln!("served {n} items");
        return;
    }
    assert!(!in_worker());
    let cancel = blockwise::Cancel::new();
    let ex = builder().cancel_with(&cancel).start().unwrap();
    assert_eq!(ex.map(inc(), [1, 2, 3]).unwrap(), vec![2, 3, 4]);
    let c = cancel.clone();
    // Whenever it comes (before the item is sent or while it runs), the item fails.
    let t = std::thread::spawn(move || c.cancel("stop"));
    let e = ex.map(slow, [99]).unwrap_err().to_string();
    t.join().unwrap();
    assert!(e.contains("cancelled (stop)"), "{e}");
}

/// `?` turns an executor's item error into `blockwise::Error` (`Error::Item`).
#[test]
fn an_item_error_converts_with_the_question_mark() {
    fn doubled(ex: &Executor) -> Result<Vec<u64>, blockwise::Error> {
        let f = |x: u64| {
            if x == 2 {
                Err(format!("no {x}"))
            } else {
                Ok(x * 2)
            }
        };
        Ok(ex.map(f, [1, 2, 3])?)
    }
    let e = doubled(&Executor::threads(2)).unwrap_err();
    assert_eq!(e.to_string(), "item 1 failed: no 2");
    assert!(
        matches!(
            &e,
            blockwise::Error::Item(ItemError::Failed { index: 1, .. })
        ),
        "{e:?}"
    );
}

/// A function whose item 0 hangs (until `gate` is released, or for a minute in a worker
/// process when `gate` is `None`); the others return `x + 1` at once.
fn hangs_on_zero(
    gate: Option<Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>>,
) -> Function<u64, u64> {
    Function::new("hangs_on_zero", move |x: u64| {
        if x == 0 {
            match &gate {
                Some(g) => {
                    let _ = g.lock().unwrap().recv_timeout(Duration::from_secs(60));
                }
                None => std::thread::sleep(Duration::from_secs(60)),
            }
        }
        Ok::<u64, String>(x + 1)
    })
}

/// Per-item time limits on threads, through the public API: the stuck item fails with the
/// limit (fail-fast and collect), the others succeed, the pool keeps its width, and a map
/// without a limit is as before.
#[test]
fn a_stuck_item_times_out_on_threads() {
    let limit = Duration::from_millis(500);
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let f = hangs_on_zero(Some(Arc::new(std::sync::Mutex::new(gate))));
    let ex = Executor::threads(2).with_timeout(limit);
    assert_eq!(
        ex.map(f.clone(), 0..4u64),
        Err(ItemError::TimedOut { index: 0, limit })
    );
    let out: Vec<Result<u64, ItemError>> = ex
        .bounded_map(
            f.clone(),
            0..8u64,
            MapOptions::new(2).on_error(OnError::Collect),
        )
        .collect();
    assert_eq!(out[0], Err(ItemError::TimedOut { index: 0, limit }));
    assert_eq!(out[1..], (2..9).map(Ok).collect::<Vec<_>>());
    // Two stuck threads are abandoned; two fresh ones run two items at once.
    let arrived = Arc::new((std::sync::Mutex::new(0usize), std::sync::Condvar::new()));
    let meet = move |x: u64| {
        // Items 2k and 2k+1 wait for each other (at most 20 s).
        let (count, cv) = &*arrived;
        let mut n = count.lock().unwrap();
        *n += 1;
        cv.notify_all();
        let pair = (x / 2 + 1) as usize * 2;
        let (n, t) = cv
            .wait_timeout_while(n, Duration::from_secs(20), |n| *n < pair)
            .unwrap();
        drop(n);
        if t.timed_out() {
            Err(format!("item {x} waited alone: the pool lost width"))
        } else {
            Ok::<u64, String>(x)
        }
    };
    assert_eq!(
        ex.bounded_map(meet, 0..4u64, MapOptions::new(2).no_timeout())
            .collect::<Result<Vec<_>, _>>(),
        Ok(vec![0, 1, 2, 3])
    );
    assert_eq!(
        ItemError::TimedOut { index: 0, limit }.to_string(),
        "item 0 timed out after 500ms"
    );
    drop(release);
}

/// The same on worker processes: the worker running the late item is killed and replaced,
/// the item fails with the limit, and later items still succeed.
#[test]
fn a_worker_whose_item_overruns_its_timeout_is_replaced() {
    let dir = scratch("executor-timeout");
    let limit = Duration::from_secs(2);
    let f = hangs_on_zero(None);
    let test = "executor::a_worker_whose_item_overruns_its_timeout_is_replaced";
    let ex = processes(test, &dir)
        .function(&f)
        .timeout(limit)
        .start()
        .unwrap();
    assert_eq!(ex.timeout(), Some(limit));
    let out: Vec<Result<u64, ItemError>> = ex
        .bounded_map(
            f.clone(),
            0..8u64,
            MapOptions::new(2).on_error(OnError::Collect),
        )
        .collect();
    assert_eq!(out[0], Err(ItemError::TimedOut { index: 0, limit }));
    assert_eq!(out[1..], (2..9).map(Ok).collect::<Vec<_>>());
    // The pool is at full width again afterwards.
    assert!(ex.wait_for_workers(2, Duration::from_secs(60)));
    assert_eq!(ex.map(f, 1..5u64), Ok(vec![2, 3, 4, 5]));
}

/// A pool with a budget: four workers wanted, two GPUs; two workers run, each with its own.
#[test]
fn a_pool_with_a_gpu_budget_runs_one_worker_per_gpu() {
    let dir = scratch("executor-budget");
    let gpu = Function::new("gpu", |x: u64| {
        let gpu = std::env::var("CUDA_VISIBLE_DEVICES").map_err(|e| e.to_string())?;
        Ok::<(u64, u32, String), String>((x, std::process::id(), gpu))
    });
    let test = "executor::a_pool_with_a_gpu_budget_runs_one_worker_per_gpu";
    let builder = |workers: usize| {
        Executor::processes(workers)
            .workers(
                WorkerOptions::new()
                    .worker_command(
                        std::env::current_exe().unwrap(),
                        ["--exact", test, "--nocapture", "--test-threads=1"],
                    )
                    .log_dir(dir.join("logs"))
                    .handle_signals(false),
            )
            .requires([("gpu", 1)])
            .resources([("gpu", 2)])
            .devices("gpu", ["4", "6"])
            .function(&gpu)
    };
    // A worker needing more than the budget has is refused at start.
    let too_big = builder(1).requires([("gpu", 3)]).start();
    assert!(
        matches!(too_big, Err(blockwise::Error::Resources(_))),
        "{too_big:?}"
    );
    let ex = builder(4).start().unwrap();
    assert!(ex.wait_for_workers(2, Duration::from_secs(60)));
    let out = ex.map(gpu, 0..40u64).unwrap();
    let mut by_pid: std::collections::BTreeMap<u32, std::collections::BTreeSet<String>> =
        Default::default();
    for (_, pid, gpu) in &out {
        by_pid.entry(*pid).or_default().insert(gpu.clone());
    }
    let devices: std::collections::BTreeSet<String> = by_pid.values().flatten().cloned().collect();
    assert!(by_pid.len() <= 2, "{by_pid:?}");
    assert!(by_pid.values().all(|d| d.len() == 1), "{by_pid:?}");
    assert!(devices.iter().all(|d| d == "4" || d == "6"), "{devices:?}");
    assert_eq!(by_pid.len(), devices.len(), "{by_pid:?}");
}
