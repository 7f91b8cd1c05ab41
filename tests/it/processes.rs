//! Worker processes: the test binary re-executes itself as the worker (`--exact <this test>`),
//! so each test below runs twice: as the scheduler, and (with `BLOCKWISE_CONTEXT` set) as its
//! workers, where `Runner::run` serves blocks and exits the process.
//!
//! Blocks leave marker files in a scratch directory (see `support`), so the scheduler side can
//! check that every block ran exactly once (or, where workers were killed, once outside the
//! killed workers).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blockwise::{Block, BlockError, Error, Progress, Roi, Runner, Task, WorkerOptions};

use crate::support::{
    alive, assert_exactly_once, child_main, in_worker, mark, marks, runner, runner_on, scratch,
};

fn worker_pids(dir: &Path) -> BTreeSet<u32> {
    marks(dir).values().flatten().copied().collect()
}

fn chain(dir: &Path, workers: usize) -> (Task, Task) {
    let d = dir.to_path_buf();
    let a = Task::builder(
        "a",
        Roi::new([0, 0], [40, 40]),
        Roi::new([0, 0], [4, 4]),
        Roi::new([0, 0], [4, 4]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .num_workers(workers)
    .build()
    .unwrap();
    let d = dir.to_path_buf();
    let b = Task::builder(
        "b",
        Roi::new([0, 0], [40, 40]),
        Roi::new([-2, -2], [12, 12]),
        Roi::new([0, 0], [8, 8]),
    )
    .fit(blockwise::Fit::Shrink)
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .upstream(&a)
    .num_workers(workers)
    .build()
    .unwrap();
    (a, b)
}

#[test]
fn chained_tasks_run_every_block_once_in_worker_processes() {
    let dir = scratch("chain");
    let (a, b) = chain(&dir, 2);
    let summary = runner(
        "processes::chained_tasks_run_every_block_once_in_worker_processes",
        &dir,
    )
    .run([b.clone()])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_eq!(summary.task("a").unwrap().completed, 100);
    assert_eq!(summary.task("b").unwrap().completed, b.num_blocks());
    assert_exactly_once(&dir, &a);
    assert_exactly_once(&dir, &b);
    // The blocks ran in other processes, whose logs and job ids are in the log directory.
    let pids = worker_pids(&dir);
    assert!(!pids.contains(&std::process::id()));
    assert!((2..=4).contains(&pids.len()), "{pids:?}");
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert_eq!(jobs.lines().count(), 4, "{jobs}");
    assert!(jobs.lines().all(|l| l.starts_with("local ")), "{jobs}");
    assert!(dir.join("logs/a/worker_0.err").exists());
    assert!(dir.join("logs/b/worker_3.out").exists());
    // The summary points at the worker logs when blocks fail; here none did.
    assert!(
        summary
            .to_string()
            .contains("all blocks processed successfully")
    );
}

#[test]
fn failing_blocks_are_retried_and_reported_with_their_error_text() {
    let dir = scratch("failing");
    let d = dir.clone();
    let task = Task::builder(
        "flaky",
        Roi::new([0], [20]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        mark(&d, b)?;
        match b.grid_index() {
            // Fails on every attempt: 3 attempts, then failed for good.
            7 => Err(format!("cannot process block {}", b.block_id()).into()),
            // Panics on its first attempt only.
            11 if marks(&d)
                .get(&("flaky".to_owned(), 11))
                .is_some_and(|p| p.len() == 1) =>
            {
                panic!("first attempt of 11 panics")
            }
            _ => Ok(()),
        }
    })
    .num_workers(2)
    .build()
    .unwrap();
    let summary = runner(
        "processes::failing_blocks_are_retried_and_reported_with_their_error_text",
        &dir,
    )
    .run([task])
    .unwrap();
    let state = summary.task("flaky").unwrap();
    assert_eq!((state.completed, state.failed), (19, 1), "{summary}");
    let m = marks(&dir);
    assert_eq!(m[&("flaky".to_owned(), 7)].len(), 3);
    assert_eq!(m[&("flaky".to_owned(), 11)].len(), 2);
    let failures = summary.failures("flaky");
    assert_eq!(failures.len(), 4);
    assert!(
        failures
            .iter()
            .any(|f| f.message == "cannot process block 7"),
        "{failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|f| f.message.contains("panic: first attempt of 11 panics")),
        "{failures:?}"
    );
    let text = summary.to_string();
    assert!(text.contains("See worker logs for details:"), "{text}");
    assert!(text.contains("logs/flaky/worker_"), "{text}");
}

#[test]
fn workers_that_crash_at_start_up_fail_the_run_with_their_stderr() {
    let dir = scratch("startup-crash");
    let task = Task::builder(
        "t",
        Roi::new([0], [10]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(|_: &Block| Ok::<(), BlockError>(()))
    .build()
    .unwrap();
    let started = Instant::now();
    let err = Runner::new()
        .progress(Progress::Never)
        .workers(
            WorkerOptions::new()
                .worker_command(
                    "/bin/sh",
                    ["-c", "echo 'libfoo.so: cannot open' >&2; exit 3"],
                )
                .log_dir(dir.join("logs"))
                .handle_signals(false),
        )
        .max_worker_restarts(2)
        .run([task])
        .unwrap_err();
    match &err {
        Error::WorkerStartup {
            task,
            attempts,
            message,
        } => {
            assert_eq!(task, "t");
            assert_eq!(*attempts, 3);
            assert!(message.contains("libfoo.so: cannot open"), "{message}");
            assert!(message.contains("exit code 3"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // Three workers were started, no more (daisy#64: no endless resubmission).
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert_eq!(jobs.lines().count(), 3, "{jobs}");
}

#[test]
fn per_worker_setup_failures_are_reported_and_bounded() {
    let dir = scratch("setup-fails");
    let task = Task::builder(
        "t",
        Roi::new([0], [10]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process_per_worker(|ctx: &blockwise::WorkerContext| {
        Err::<fn(&Block) -> Result<(), BlockError>, BlockError>(
            format!("worker {}: model weights not found", ctx.worker_id).into(),
        )
    })
    .build()
    .unwrap();
    let err = runner(
        "processes::per_worker_setup_failures_are_reported_and_bounded",
        &dir,
    )
    .max_worker_restarts(1)
    .run([task])
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("set-up failed") && text.contains("model weights not found"),
        "{text}"
    );
    assert!(
        matches!(err, Error::WorkerStartup { attempts: 2, .. }),
        "{err}"
    );
}

/// A tiny deterministic generator for the chaos schedule.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn chaos_worker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("chaos_sigkill_of_workers"))
}

#[test]
fn chaos_sigkill_of_workers_still_completes_every_block_exactly_once() {
    let dir = scratch("chaos");
    let d = dir.clone();
    std::fs::create_dir_all(dir.join("pids")).ok();
    let task = Task::builder(
        "chaos",
        Roi::new([0], [300]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        std::fs::write(d.join("pids").join(std::process::id().to_string()), "")?;
        // Simulated work, so that kills land in the middle of blocks.
        std::thread::sleep(Duration::from_millis(3));
        Ok(mark(&d, b)?)
    })
    .num_workers(2)
    .max_retries(50)
    .build()
    .unwrap();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let pids_dir = dir.join("pids");
    // Only the scheduler side kills (workers run this function too, up to `run`).
    let killer = (!in_worker()).then(|| {
        std::thread::spawn(move || {
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
            let mut killed: BTreeSet<u32> = BTreeSet::new();
            while killed.len() < 8 {
                let wait = Duration::from_millis(30 + rng.next() % 90);
                if stop_rx.recv_timeout(wait) != Err(crossbeam_channel::RecvTimeoutError::Timeout) {
                    break;
                }
                let Ok(entries) = std::fs::read_dir(&pids_dir) else {
                    continue;
                };
                let live: Vec<u32> = entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse().ok())
                    // Only this test's workers: a recorded pid may have been reused since.
                    .filter(|p| !killed.contains(p) && alive(*p) && chaos_worker(*p))
                    .collect();
                if live.is_empty() {
                    continue;
                }
                let pid = live[(rng.next() % live.len() as u64) as usize];
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                killed.insert(pid);
            }
            killed
        })
    });
    let summary = runner(
        "processes::chaos_sigkill_of_workers_still_completes_every_block_exactly_once",
        &dir,
    )
    .max_worker_restarts(100)
    .run([task.clone()])
    .unwrap();
    drop(stop_tx);
    let killed = killer.unwrap().join().unwrap();
    assert!(summary.is_success(), "{summary}");
    let state = summary.task("chaos").unwrap();
    assert_eq!((state.completed, state.failed), (300, 0));
    assert!(killed.len() >= 3, "only {} kills happened", killed.len());
    let m = marks(&dir);
    for g in 0..task.num_blocks() {
        let pids = m
            .get(&("chaos".to_owned(), g))
            .unwrap_or_else(|| panic!("block {g} never ran"));
        let survivors = pids.iter().filter(|p| !killed.contains(p)).count();
        assert!(
            survivors <= 1,
            "block {g} ran {pids:?} (killed: {killed:?})"
        );
    }
    // Every killed worker's running block was retried, each kill counting as an attempt.
    let lost = summary
        .failures("chaos")
        .iter()
        .filter(|f| f.message.contains("lost while processing"))
        .count();
    assert!(
        lost >= 1 && lost <= killed.len(),
        "{lost} lost blocks for {} kills",
        killed.len()
    );
}

fn first_attempt(dir: &Path, block: &Block) -> bool {
    marks(dir)
        .get(&(block.task_id().to_owned(), block.grid_index()))
        .is_some_and(|p| p.len() == 1)
}

#[test]
fn a_block_past_its_timeout_gets_its_worker_process_killed_and_is_retried() {
    let dir = scratch("timeout");
    let d = dir.clone();
    let task = Task::builder(
        "slow",
        Roi::new([0], [10]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        mark(&d, b)?;
        if b.grid_index() == 4 && first_attempt(&d, b) {
            std::fs::write(d.join("hung.pid"), std::process::id().to_string())?;
            // Hangs "for ever": only the kill ends it.
            std::thread::sleep(Duration::from_secs(600));
        }
        Ok(())
    })
    .timeout(Duration::from_secs(2))
    .num_workers(2)
    .build()
    .unwrap();
    let summary = runner(
        "processes::a_block_past_its_timeout_gets_its_worker_process_killed_and_is_retried",
        &dir,
    )
    .run([task])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    let failures = summary.failures("slow");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].grid_index, 4);
    assert!(
        failures[0].message.contains("timed out after 2s")
            && failures[0].message.contains("killed"),
        "{}",
        failures[0].message
    );
    let hung: u32 = std::fs::read_to_string(dir.join("hung.pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(!alive(hung), "the hung worker {hung} still runs");
}

#[test]
fn a_frozen_worker_is_detected_by_its_missing_heartbeats() {
    let dir = scratch("frozen");
    let d = dir.clone();
    let task = Task::builder(
        "t",
        Roi::new([0], [10]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        mark(&d, b)?;
        if b.grid_index() == 3 && first_attempt(&d, b) {
            std::fs::write(d.join("frozen.pid"), std::process::id().to_string())?;
            // The whole process stops, heartbeat thread included.
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP)?;
        }
        Ok(())
    })
    .build()
    .unwrap();
    let summary = runner_on(
        "processes::a_frozen_worker_is_detected_by_its_missing_heartbeats",
        &dir,
        WorkerOptions::new().heartbeat(Duration::from_millis(50), Duration::from_secs(2)),
    )
    .run([task])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    let failures = summary.failures("t");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].message.contains("presumed dead"),
        "{}",
        failures[0].message
    );
    let frozen: u32 = std::fs::read_to_string(dir.join("frozen.pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(!alive(frozen), "the frozen worker {frozen} was not stopped");
}

#[test]
fn workers_retire_after_their_lifetime_and_are_replaced() {
    let dir = scratch("lifetime");
    let d = dir.clone();
    let task = Task::builder(
        "t",
        Roi::new([0], [60]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        std::thread::sleep(Duration::from_millis(10));
        Ok(mark(&d, b)?)
    })
    .build()
    .unwrap();
    let summary = runner_on(
        "processes::workers_retire_after_their_lifetime_and_are_replaced",
        &dir,
        WorkerOptions::new().worker_lifetime(Duration::from_millis(150)),
    )
    .prefetch(4)
    .run([task.clone()])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert!(summary.failures("t").is_empty(), "{summary}");
    assert_exactly_once(&dir, &task);
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert!(jobs.lines().count() >= 3, "{jobs}");
    assert!(worker_pids(&dir).len() >= 3);
}

child_main!(zz_child_intruder: "BLOCKWISE_TEST_ROLE" = "intruder" => child_intruder);

/// The intruder process of the next test.
fn child_intruder() {
    let err = blockwise::Client::from_env().unwrap_err().to_string();
    assert!(
        err.contains("refused") && err.contains("wrong token"),
        "{err}"
    );
}

#[test]
fn a_worker_with_a_wrong_token_is_refused_and_the_run_goes_on() {
    let dir = scratch("auth");
    let d = dir.clone();
    let task = Task::builder(
        "t",
        Roi::new([0], [4]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        mark(&d, b)?;
        if b.grid_index() == 0 {
            // From inside a real worker: start an intruder with this worker's context but
            // a forged token.
            let ctx = std::env::var(blockwise::CONTEXT_ENV)?;
            let mut v: serde_json::Value = serde_json::from_str(&ctx)?;
            v["token"] = "0123456789abcdef0123456789abcdef".into();
            let out = std::process::Command::new(std::env::current_exe()?)
                .args(["--exact", "processes::zz_child_intruder", "--nocapture"])
                .env(blockwise::CONTEXT_ENV, v.to_string())
                .env("BLOCKWISE_TEST_ROLE", "intruder")
                .output()?;
            if !out.status.success() {
                return Err(format!(
                    "intruder was not refused: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            }
        }
        Ok(())
    })
    .build()
    .unwrap();
    let summary = runner(
        "processes::a_worker_with_a_wrong_token_is_refused_and_the_run_goes_on",
        &dir,
    )
    .run([task.clone()])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_exactly_once(&dir, &task);
}

child_main!(
    zz_child_interrupted_driver: "BLOCKWISE_TEST_ROLE" = "driver"
        => child_interrupted_driver
);

/// The scheduler process of the next test.
fn child_interrupted_driver() {
    let dir = PathBuf::from(std::env::var("BLOCKWISE_TEST_DIR").unwrap());
    let d = dir.clone();
    let task = Task::builder(
        "t",
        Roi::new([0], [10]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |_: &Block| -> Result<(), BlockError> {
        std::fs::write(d.join("pids").join(std::process::id().to_string()), "")?;
        std::thread::sleep(Duration::from_secs(600));
        Ok(())
    })
    .num_workers(2)
    .build()
    .unwrap();
    let result = Runner::new()
        .progress(Progress::Never)
        .workers(
            WorkerOptions::new()
                .worker_command(
                    std::env::current_exe().unwrap(),
                    [
                        "--exact",
                        "processes::zz_child_interrupted_driver",
                        "--nocapture",
                    ],
                )
                .log_dir(dir.join("logs")),
        )
        .run([task]);
    let text = match result {
        Err(Error::Interrupted { signal }) => format!("interrupted by {signal}"),
        other => format!("unexpected: {other:?}"),
    };
    std::fs::write(dir.join("result"), text).unwrap();
}

#[test]
fn sigterm_cancels_every_worker_job_and_returns_interrupted() {
    let dir = scratch("interrupt");
    std::fs::create_dir_all(dir.join("pids")).unwrap();
    let mut driver = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "processes::zz_child_interrupted_driver",
            "--nocapture",
        ])
        .env("BLOCKWISE_TEST_ROLE", "driver")
        .env("BLOCKWISE_TEST_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pids = loop {
        let pids: Vec<u32> = std::fs::read_dir(dir.join("pids"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse().ok())
            .collect();
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "workers did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(driver.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = driver.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the driver did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let result = std::fs::read_to_string(dir.join("result")).unwrap();
    assert_eq!(result, "interrupted by SIGTERM");
    for pid in pids {
        assert!(!alive(pid), "worker {pid} survived the interrupted run");
    }
}

#[test]
fn a_worker_program_that_never_runs_the_task_is_a_clear_start_up_error() {
    let dir = scratch("no-task");
    // The worker side builds a different task, as a program with other arguments might.
    let name = if in_worker() { "renamed" } else { "t" };
    let task = Task::builder(
        name,
        Roi::new([0], [4]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(|_: &Block| Ok::<(), BlockError>(()))
    .build()
    .unwrap();
    let result = runner(
        "processes::a_worker_program_that_never_runs_the_task_is_a_clear_start_up_error",
        &dir,
    )
    .max_worker_restarts(0)
    .run([task]);
    if in_worker() {
        // The worker's run had no task "t": it returned at once, and the program ends here.
        assert!(result.unwrap().tasks().is_empty());
        return;
    }
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("exited without connecting")
            && err.contains("a run without task \"t\" (its tasks: \"renamed\")"),
        "{err}"
    );
}

#[test]
fn a_cancel_handle_stops_a_process_run_and_cancels_its_workers() {
    let name = "processes::a_cancel_handle_stops_a_process_run_and_cancels_its_workers";
    let dir = scratch("cancel");
    let d = dir.clone();
    // Each block leaves its marker, then works for much longer than the test may take.
    let task = Task::builder(
        "slow",
        Roi::new([0], [100]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b| {
        mark(&d, b)?;
        std::thread::sleep(Duration::from_secs(600));
        Ok(())
    })
    .num_workers(2)
    .build()
    .unwrap();
    let cancel = blockwise::Cancel::new();
    let c = cancel.clone();
    let d = dir.clone();
    let watcher = (!in_worker()).then(|| {
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while marks(&d).is_empty() {
                assert!(Instant::now() < deadline, "no block started");
                std::thread::sleep(Duration::from_millis(10));
            }
            c.cancel("the test's cancel");
        })
    });
    let start = Instant::now();
    let result = runner(name, &dir).cancel_with(&cancel).run([task]);
    if let Some(w) = watcher {
        w.join().unwrap();
    }
    match result {
        Err(Error::Interrupted { signal }) => assert_eq!(signal, "the test's cancel"),
        other => panic!("expected Interrupted, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(120));
    // The workers were stopped: no worker process is left running its block.
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker_pids(&dir).into_iter().any(alive) {
        assert!(
            Instant::now() < deadline,
            "a worker outlived the cancelled run"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(marks(&dir).len() < 100);
}

#[test]
fn an_observer_sees_the_counters_of_a_process_run_grow_to_the_end() {
    let name = "processes::an_observer_sees_the_counters_of_a_process_run_grow_to_the_end";
    let dir = scratch("observer");
    let (a, b) = chain(&dir, 2);
    type Seen = Vec<(blockwise::TaskState, blockwise::TaskState)>;
    let seen: std::sync::Arc<std::sync::Mutex<Seen>> = Default::default();
    let s = std::sync::Arc::clone(&seen);
    let summary = runner(name, &dir)
        .on_progress(Duration::from_millis(1), move |tasks| {
            let ids: Vec<&str> = tasks.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, ["a", "b"]);
            s.lock()
                .unwrap()
                .push((tasks[0].1.clone(), tasks[1].1.clone()));
        })
        .run([b.clone()])
        .unwrap();
    assert!(summary.is_success(), "{summary}");
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    // Calls are made only on change (of any counter), completed counts only grow, and the
    // last call is the end state.
    assert!(seen.windows(2).all(|w| w[0] != w[1]
        && w[0].0.completed <= w[1].0.completed
        && w[0].1.completed <= w[1].1.completed));
    let last = seen.last().unwrap();
    assert_eq!(
        (last.0.completed, last.1.completed),
        (a.num_blocks(), b.num_blocks())
    );
}
