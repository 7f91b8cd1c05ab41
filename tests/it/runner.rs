//! The threaded runner: results, failures, panics, per-worker set-up, timeouts, chaining.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blockwise::{Block, BlockError, Error, Progress, Roi, Runner, Task, WorkerContext};

fn quiet() -> Runner {
    Runner::new().progress(Progress::Never).print_summary(false)
}

type TestResult = Result<(), Box<dyn std::error::Error>>;
type BlockFn = fn(&Block) -> Result<(), BlockError>;

/// daisy's README example: square 4,096,000 values in 250 blocks, then sum them in 16 blocks.
#[test]
fn square_then_reduce() -> TestResult {
    let n: usize = 4_096_000;
    let b: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let sums: Arc<Vec<AtomicU64>> = Arc::new((0..16).map(|_| AtomicU64::new(0)).collect());
    let bw = Arc::clone(&b);
    let square = Task::builder(
        "square",
        Roi::new([0], [n as i64]),
        Roi::new([0], [16384]),
        Roi::new([0], [16384]),
    )
    .process(move |block: &Block| -> Result<(), BlockError> {
        let r = block.write_roi();
        for i in r.begin()[0]..r.end()[0] {
            bw[i as usize].store((i * i) as u64, Ordering::Relaxed);
        }
        Ok(())
    })
    .num_workers(2)
    .build()?;
    assert_eq!(square.num_blocks(), 250);
    let (br, sw) = (Arc::clone(&b), Arc::clone(&sums));
    let reduce = Task::builder(
        "reduce",
        Roi::new([0], [n as i64]),
        Roi::new([0], [256_000]),
        Roi::new([0], [256_000]),
    )
    .process(move |block: &Block| -> Result<(), BlockError> {
        let r = block.write_roi();
        let s: u64 = (r.begin()[0]..r.end()[0])
            .map(|i| br[i as usize].load(Ordering::Relaxed))
            .sum();
        sw[(r.begin()[0] / 256_000) as usize].store(s, Ordering::Relaxed);
        Ok(())
    })
    .upstream(&square)
    .num_workers(2)
    .build()?;
    let summary = quiet().run([reduce])?;
    assert!(summary.is_success(), "{summary}");
    assert_eq!(summary.task("square").map(|s| s.completed), Some(250));
    assert_eq!(summary.task("reduce").map(|s| s.completed), Some(16));
    let total: u128 = sums
        .iter()
        .map(|s| u128::from(s.load(Ordering::Relaxed)))
        .sum();
    let n = n as u128;
    assert_eq!(total, (n - 1) * n * (2 * n - 1) / 6);
    Ok(())
}

#[test]
fn failing_block_is_retried_then_orphans_downstream() -> TestResult {
    let attempts = Arc::new(AtomicU64::new(0));
    let a = Arc::clone(&attempts);
    // 1D, blocks of 10: block with write [30, 40) always fails.
    let up = Task::builder(
        "up",
        Roi::new([0], [100]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .process(move |block: &Block| -> Result<(), BlockError> {
        if block.write_roi().begin()[0] == 30 {
            a.fetch_add(1, Ordering::SeqCst);
            return Err("no data here".into());
        }
        Ok(())
    })
    .max_retries(2)
    .build()?;
    // Downstream reads 5 voxels of context each side: blocks touching [30, 40) are orphaned.
    let down = Task::builder(
        "down",
        Roi::new([0], [100]),
        Roi::new([-5], [20]),
        Roi::new([0], [10]),
    )
    .process(|_: &Block| Ok::<(), BlockError>(()))
    .upstream(&up)
    .build()?;
    let summary = quiet().run([down])?;
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let up_state = summary.task("up").ok_or("no up")?;
    assert_eq!(
        (up_state.completed, up_state.failed, up_state.orphaned),
        (9, 1, 0)
    );
    let down_state = summary.task("down").ok_or("no down")?;
    // down has 9 blocks (valid fit over [5, 95)); writes [25,35) and [35,45) read [30,40), and
    // with read/write conflicts the level-1 block writing [45,55) waits for [35,45): 3 orphans.
    assert_eq!(down_state.total, 9);
    assert_eq!(
        (down_state.completed, down_state.failed, down_state.orphaned),
        (6, 0, 3)
    );
    assert!(!summary.is_success());
    let failures = summary.failures("up");
    assert_eq!(failures.len(), 3);
    assert!(
        failures
            .iter()
            .all(|f| f.block_id == 3 && f.message == "no data here")
    );
    let text = summary.to_string();
    assert!(text.contains("    failed    ✗: 1\n"), "{text}");
    assert!(text.contains("with exception no data here"), "{text}");
    Ok(())
}

#[test]
fn panics_fail_the_block_and_the_run_goes_on() -> TestResult {
    let task = Task::builder(
        "p",
        Roi::new([0], [50]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .process(|block: &Block| -> Result<(), BlockError> {
        assert!(block.block_id() != 2, "block two is cursed");
        Ok(())
    })
    .max_retries(0)
    .num_workers(2)
    .build()?;
    let summary = quiet().run([task])?;
    let s = summary.task("p").ok_or("no p")?;
    assert_eq!((s.completed, s.failed), (4, 1));
    assert_eq!(
        summary.failures("p")[0].message,
        "panic: block two is cursed"
    );
    Ok(())
}

#[test]
fn per_worker_setup_runs_once_per_worker() -> TestResult {
    let inits = Arc::new(AtomicU64::new(0));
    let processed = Arc::new(AtomicU64::new(0));
    let (i, p) = (Arc::clone(&inits), Arc::clone(&processed));
    let task = Task::builder(
        "w",
        Roi::new([0, 0], [100, 100]),
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
    )
    .process_per_worker(move |ctx: &WorkerContext| {
        assert_eq!(ctx.task_id, "w");
        i.fetch_add(1, Ordering::SeqCst);
        let p = Arc::clone(&p);
        let mut mine = 0u64; // state owned by this worker
        Ok::<_, BlockError>(move |_: &Block| {
            mine += 1;
            p.fetch_add(1, Ordering::SeqCst);
            assert!(mine <= 100);
            Ok::<(), BlockError>(())
        })
    })
    .num_workers(3)
    .build()?;
    let summary = quiet().run([task])?;
    assert!(summary.is_success());
    assert_eq!(inits.load(Ordering::SeqCst), 3);
    assert_eq!(processed.load(Ordering::SeqCst), 100);
    Ok(())
}

#[test]
fn failing_setup_stops_the_run_with_an_error() -> TestResult {
    let task = Task::builder(
        "bad",
        Roi::new([0], [10]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .process_per_worker(|_: &WorkerContext| -> Result<BlockFn, BlockError> {
        Err("model file missing".into())
    })
    .build()?;
    match quiet().max_worker_restarts(2).run([task]) {
        Err(Error::WorkerStartup {
            task,
            attempts,
            message,
        }) => {
            assert_eq!(
                (task.as_str(), attempts, message.as_str()),
                ("bad", 3, "model file missing")
            );
        }
        other => panic!("expected a start-up error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn missing_process_function_is_an_error() -> TestResult {
    let task = Task::builder(
        "np",
        Roi::new([0], [10]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .build()?;
    let err = quiet().run([task]).err().ok_or("expected an error")?;
    assert!(
        err.to_string()
            .starts_with("task \"np\": no process function"),
        "{err}"
    );
    Ok(())
}

/// A block stuck in user code is failed after the timeout and retried on a fresh worker; the
/// stuck thread is released at the end of the test.
#[test]
fn timeout_fails_and_retries_on_a_fresh_worker() -> TestResult {
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let attempts = Arc::new(AtomicU64::new(0));
    let workers = Arc::new(Mutex::new(Vec::new()));
    let (a, w) = (Arc::clone(&attempts), Arc::clone(&workers));
    let task = Task::builder(
        "slow",
        Roi::new([0], [10]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .process_per_worker(move |ctx: &WorkerContext| {
        let (a, w, rx) = (Arc::clone(&a), Arc::clone(&w), Arc::clone(&release_rx));
        let id = ctx.worker_id;
        Ok::<_, BlockError>(move |_: &Block| -> Result<(), BlockError> {
            w.lock().map_err(|e| e.to_string())?.push(id);
            if a.fetch_add(1, Ordering::SeqCst) == 0 {
                // First attempt: stuck until the test releases it (bounded wait).
                let rx = rx.lock().map_err(|e| e.to_string())?;
                let _ = rx.recv_timeout(Duration::from_secs(60));
            }
            Ok(())
        })
    })
    .timeout(Duration::from_millis(200))
    .build()?;
    let summary = quiet().run([task])?;
    release_tx.send(())?;
    let s = summary.task("slow").ok_or("no task")?;
    assert_eq!((s.completed, s.failed), (1, 0));
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let ids = workers.lock().map_err(|e| e.to_string())?.clone();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "the retry must run on a fresh worker");
    let failures = summary.failures("slow");
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].message.starts_with("timed out after 200ms"),
        "{}",
        failures[0].message
    );
    Ok(())
}

/// Every downstream block runs after the upstream blocks it reads from, and tasks overlap in time.
#[test]
fn chained_tasks_respect_dependencies() -> TestResult {
    let finished: Arc<Vec<AtomicU64>> = Arc::new((0..100).map(|_| AtomicU64::new(0)).collect());
    let f = Arc::clone(&finished);
    let up = Task::builder(
        "up",
        Roi::new([0], [100]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        f[b.write_roi().begin()[0] as usize].store(1, Ordering::SeqCst);
        Ok(())
    })
    .read_write_conflict(false)
    .num_workers(2)
    .build()?;
    let f = Arc::clone(&finished);
    let violations = Arc::new(AtomicU64::new(0));
    let v = Arc::clone(&violations);
    let down = Task::builder(
        "down",
        Roi::new([0], [100]),
        Roi::new([-2], [7]),
        Roi::new([0], [3]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        let r = b.read_roi();
        for x in r.begin()[0]..r.end()[0] {
            if f[x as usize].load(Ordering::SeqCst) == 0 {
                v.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    })
    .fit(blockwise::Fit::Shrink)
    .upstream(&up)
    .num_workers(2)
    .build()?;
    let summary = quiet().run([down])?;
    assert!(summary.is_success(), "{summary}");
    assert_eq!(violations.load(Ordering::SeqCst), 0);
    Ok(())
}

/// `fresh` starts a multi-step program over as a whole: the first run of a fresh runner
/// discards the records of every task of the run directory, so a later step that was done
/// before the fresh start runs again after the program was stopped between its steps.
#[test]
fn fresh_discards_every_step_once_per_runner() -> TestResult {
    let dir = tempfile::tempdir()?;
    let runs = Arc::new(AtomicU64::new(0));
    let step = |id: &str| {
        let r = Arc::clone(&runs);
        Task::builder(
            id,
            Roi::new([0], [10]),
            Roi::new([0], [1]),
            Roi::new([0], [1]),
        )
        .process(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .build()
    };
    let runner = || quiet().run_dir(dir.path());
    // A complete run of both steps.
    assert!(runner().run([step("first")?])?.is_success());
    assert!(runner().run([step("second")?])?.is_success());
    assert_eq!(runs.swap(0, Ordering::SeqCst), 20);
    // Started fresh, stopped after the first step.
    assert!(runner().fresh(true).run([step("first")?])?.is_success());
    assert_eq!(runs.swap(0, Ordering::SeqCst), 10);
    // The rerun (not fresh) must not skip the second step: its records predate the fresh start.
    let second = runner().run([step("second")?])?;
    assert_eq!(second.task("second").map(|s| s.skipped), Some(0));
    assert_eq!(runs.swap(0, Ordering::SeqCst), 10);
    // One fresh runner for both steps: the second run resumes what the first recorded.
    let fresh = runner().fresh(true);
    assert!(fresh.run([step("first")?])?.is_success());
    let again = fresh.run([step("first")?, step("second")?])?;
    assert_eq!(again.task("first").map(|s| s.skipped), Some(10));
    assert_eq!(runs.swap(0, Ordering::SeqCst), 20);
    Ok(())
}
