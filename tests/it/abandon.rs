//! The failure budget (`TaskBuilder::max_consecutive_failures`): a task whose blocks keep
//! failing is abandoned after N permanent failures in a row, its downstream tasks with it,
//! in the threads runner and in worker processes; the reason is in the summary and in the
//! run directory's status.
//!
//! Counts are deterministic: with one worker and `prefetch(1)` exactly one block is in flight
//! at a time, so no block runs after the N-th failure. Every wait has a timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use blockwise::journal::RunDir;
use blockwise::{Block, BlockError, FailureKind, Progress, Roi, RunSummary, Runner, Task};

use crate::support::{in_worker, mark, marks, runner, scratch};

/// Runs `f` on another thread and waits for it at most `secs` seconds.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|e| panic!("the run did not end within {secs} s: {e}"))
}

/// A fresh run directory for a threads test.
fn run_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("abandon")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

/// A 1D task of `n` independent blocks of size 1, handed out in grid order.
fn builder(id: &str, n: i64) -> blockwise::TaskBuilder {
    Task::builder(
        id,
        Roi::new([0], [n]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
}

fn threads() -> Runner {
    Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .prefetch(1)
}

/// A task failing every block, counting calls, and a task downstream of it.
fn broken_chain(calls: &Arc<AtomicU64>, n: i64, budget: u32) -> (Task, Task) {
    let c = Arc::clone(calls);
    let bad = builder("bad", n)
        .process(move |b: &Block| -> Result<(), BlockError> {
            c.fetch_add(1, Ordering::SeqCst);
            Err(format!("cannot open the model for block {}", b.block_id()).into())
        })
        .max_retries(0)
        .max_consecutive_failures(budget)
        .build()
        .unwrap();
    let after = builder("after", n)
        .process(|_: &Block| Ok::<(), BlockError>(()))
        .upstream(&bad)
        .build()
        .unwrap();
    (bad, after)
}

fn assert_abandoned_chain(summary: &RunSummary, n: u64, budget: u64) {
    assert!(!summary.is_success());
    let bad = summary.task("bad").unwrap();
    assert_eq!(
        (bad.completed, bad.failed, bad.orphaned),
        (0, budget, n - budget),
        "{summary}"
    );
    assert_eq!((bad.ready, bad.pending, bad.processing), (0, 0, 0));
    let reason = bad.abandoned.as_deref().unwrap();
    let last = budget - 1; // grid index = block id for independent 1D blocks
    assert_eq!(
        reason,
        format!(
            "abandoned after {budget} consecutive failed blocks (last: block {last}: cannot open the model for block {last})"
        )
    );
    let after = summary.task("after").unwrap();
    assert_eq!((after.completed, after.orphaned), (0, n), "{summary}");
    assert_eq!(
        after.abandoned.as_deref(),
        Some("upstream task bad was abandoned")
    );
    let text = summary.to_string();
    assert!(
        text.contains(&format!("    abandoned  : {reason}\n")),
        "{text}"
    );
    assert!(
        text.contains("    abandoned  : upstream task bad was abandoned\n"),
        "{text}"
    );
    let listed: Vec<_> = summary.abandoned().map(|(t, _)| t).collect();
    assert_eq!(listed, ["bad", "after"]);
}

fn assert_status(dir: &Path, n: u64, budget: u64) {
    let status = RunDir::open(dir).unwrap().status().unwrap();
    assert_eq!(
        status.state,
        blockwise::journal::RunState::FinishedWithFailures
    );
    let bad = status.tasks.iter().find(|t| t.task_id == "bad").unwrap();
    assert_eq!(
        (bad.total, bad.done, bad.failed, bad.never_run),
        (n, 0, budget, n - budget)
    );
    let reason = bad.abandoned.as_deref().unwrap();
    assert!(
        reason.starts_with(&format!(
            "abandoned after {budget} consecutive failed blocks (last: block {}",
            budget - 1
        )),
        "{reason}"
    );
    let after = status.tasks.iter().find(|t| t.task_id == "after").unwrap();
    assert_eq!(after.never_run, n);
    assert_eq!(
        after.abandoned.as_deref(),
        Some("upstream task bad was abandoned")
    );
    let text = status.to_string();
    assert!(
        text.contains(&format!("task bad was abandoned: {reason}")),
        "{text}"
    );
    assert!(
        text.contains("task after was abandoned: upstream task bad was abandoned"),
        "{text}"
    );
}

#[test]
fn threads_abandon_after_exactly_n_failures_and_orphan_downstream() {
    let dir = run_dir("threads-chain");
    let calls = Arc::new(AtomicU64::new(0));
    let (_, after) = broken_chain(&calls, 50, 3);
    let d = dir.clone();
    let summary = within(60, move || threads().run_dir(&d).run([after]).unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_abandoned_chain(&summary, 50, 3);
    assert_status(&dir, 50, 3);
    // The JSON of the status has the reason; tasks not abandoned have no such field.
    let json = serde_json::to_value(blockwise::journal::status(&dir).unwrap()).unwrap();
    let tasks = json["tasks"].as_array().unwrap();
    assert!(tasks.iter().all(|t| t["abandoned"].is_string()), "{json}");
}

#[cfg(feature = "cli")]
#[test]
fn blockwise_status_shows_the_abandonment_in_text_and_json() {
    let dir = run_dir("cli-status");
    let calls = Arc::new(AtomicU64::new(0));
    let (_, after) = broken_chain(&calls, 20, 2);
    let d = dir.clone();
    let _ = within(60, move || threads().run_dir(&d).run([after]).unwrap());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blockwise"))
        .arg("status")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("last run: finished with failures"), "{text}");
    assert!(
        text.contains("task bad was abandoned: abandoned after 2 consecutive failed blocks (last: block 1: cannot open the model for block 1)"),
        "{text}"
    );
    assert!(
        text.contains("task after was abandoned: upstream task bad was abandoned"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blockwise"))
        .arg("status")
        .arg("--json")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let after = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == "after")
        .unwrap();
    assert_eq!(after["abandoned"], "upstream task bad was abandoned");
}

#[test]
fn a_rerun_gives_the_task_another_chance_and_clears_the_record() {
    let dir = run_dir("rerun");
    let calls = Arc::new(AtomicU64::new(0));
    let (_, after) = broken_chain(&calls, 10, 2);
    let d = dir.clone();
    let _ = within(60, move || threads().run_dir(&d).run([after]).unwrap());
    assert!(
        blockwise::journal::status(&dir).unwrap().tasks[0]
            .abandoned
            .is_some()
    );
    // Fixed: the rerun does the rest, and the status no longer says abandoned.
    let fixed = builder("bad", 10)
        .process(|_: &Block| Ok::<(), BlockError>(()))
        .max_retries(0)
        .max_consecutive_failures(2)
        .build()
        .unwrap();
    let after = builder("after", 10)
        .process(|_: &Block| Ok::<(), BlockError>(()))
        .upstream(&fixed)
        .build()
        .unwrap();
    let d = dir.clone();
    let summary = within(60, move || threads().run_dir(&d).run([after]).unwrap());
    assert!(summary.is_success(), "{summary}");
    let status = blockwise::journal::status(&dir).unwrap();
    assert!(
        status.tasks.iter().all(|t| t.abandoned.is_none()),
        "{status}"
    );
    assert!(!status.to_string().contains("abandoned"), "{status}");
}

#[test]
fn a_success_resets_the_count() {
    let run = |budget: u32| {
        let calls = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&calls);
        // Fails, fails, succeeds, over and over.
        let task = builder("t", 12)
            .process(move |b: &Block| -> Result<(), BlockError> {
                c.fetch_add(1, Ordering::SeqCst);
                if b.grid_index() % 3 == 2 {
                    Ok(())
                } else {
                    Err("flaky".into())
                }
            })
            .max_retries(0)
            .max_consecutive_failures(budget)
            .build()
            .unwrap();
        let summary = within(60, move || threads().run([task]).unwrap());
        (summary, calls.load(Ordering::SeqCst))
    };
    let (summary, calls) = run(3);
    let t = summary.task("t").unwrap();
    assert_eq!(calls, 12);
    assert_eq!((t.completed, t.failed, t.orphaned), (4, 8, 0));
    assert!(t.abandoned.is_none(), "{summary}");
    assert_eq!(summary.abandoned().count(), 0);
    let (summary, calls) = run(2);
    let t = summary.task("t").unwrap();
    assert_eq!(calls, 2);
    assert_eq!((t.completed, t.failed, t.orphaned), (0, 2, 10));
    assert!(t.abandoned.is_some());
}

#[test]
fn only_permanent_failures_count() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&calls);
    // Retries go to the back of the queue (daisy's order): every block is tried once before
    // the first one fails for good on its second attempt.
    let task = builder("t", 10)
        .process(move |_: &Block| -> Result<(), BlockError> {
            c.fetch_add(1, Ordering::SeqCst);
            Err("always".into())
        })
        .max_retries(1)
        .max_consecutive_failures(3)
        .build()
        .unwrap();
    let summary = within(60, move || threads().run([task]).unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 13);
    let t = summary.task("t").unwrap();
    assert_eq!((t.failed, t.orphaned), (3, 7), "{summary}");
    assert_eq!(summary.failures("t").len(), 13);
}

#[test]
fn panics_and_timeouts_count() {
    let panicking = builder("p", 10)
        .process(|_: &Block| -> Result<(), BlockError> { panic!("index out of bounds") })
        .max_retries(0)
        .max_consecutive_failures(2)
        .build()
        .unwrap();
    // Blocks of "slow" hang (until released after the run) and time out.
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let g = Arc::clone(&gate);
    let calls = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&calls);
    let slow = builder("slow", 10)
        .process(move |_: &Block| -> Result<(), BlockError> {
            c.fetch_add(1, Ordering::SeqCst);
            let (lock, cv) = &*g;
            let open = lock.lock().unwrap();
            let _ = cv
                .wait_timeout_while(open, Duration::from_secs(60), |open| !*open)
                .unwrap();
            Ok(())
        })
        .timeout(Duration::from_millis(50))
        .max_retries(0)
        .max_consecutive_failures(2)
        .build()
        .unwrap();
    let summary = within(60, move || threads().run([panicking, slow]).unwrap());
    {
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    let p = summary.task("p").unwrap();
    assert_eq!((p.failed, p.orphaned), (2, 8), "{summary}");
    assert_eq!(
        p.abandoned.as_deref(),
        Some(
            "abandoned after 2 consecutive failed blocks (last: block 1: panic: index out of bounds)"
        )
    );
    let s = summary.task("slow").unwrap();
    assert_eq!((s.failed, s.orphaned), (2, 8), "{summary}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let reason = s.abandoned.as_deref().unwrap();
    assert!(
        reason.starts_with(
            "abandoned after 2 consecutive failed blocks (last: block 1: timed out after 50ms"
        ),
        "{reason}"
    );
    assert!(
        summary
            .failures("slow")
            .iter()
            .all(|f| f.kind == FailureKind::Timeout)
    );
}

#[test]
fn blocks_queued_for_workers_go_back_and_the_run_ends() {
    // Many workers, deep prefetch: blocks queued for the workers when the task is abandoned
    // are never run; those that ran count as failed, the rest as orphaned.
    let calls = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&calls);
    let task = builder("t", 10_000)
        .process(move |_: &Block| -> Result<(), BlockError> {
            c.fetch_add(1, Ordering::SeqCst);
            Err("no".into())
        })
        .num_workers(4)
        .max_retries(0)
        .max_consecutive_failures(5)
        .build()
        .unwrap();
    let summary = within(60, move || {
        Runner::new()
            .progress(Progress::Never)
            .print_summary(false)
            .prefetch(32)
            .run([task])
            .unwrap()
    });
    let ran = calls.load(Ordering::SeqCst);
    let t = summary.task("t").unwrap();
    assert!(t.abandoned.is_some(), "{summary}");
    assert_eq!(t.failed, ran, "{summary}");
    assert_eq!(t.orphaned, 10_000 - ran);
    // At most what the workers held: 4 workers × 32 blocks.
    assert!((5..=5 + 4 * 32).contains(&ran), "{ran}");
    assert!(t.is_done());
}

#[test]
fn processes_abandon_after_exactly_n_failures_and_orphan_downstream() {
    let name = "processes_abandon_after_exactly_n_failures_and_orphan_downstream";
    let dir = scratch(name);
    let d = dir.clone();
    let bad = builder("bad", 30)
        .process(move |b: &Block| -> Result<(), BlockError> {
            mark(&d, b)?;
            Err(format!("cannot open the model for block {}", b.block_id()).into())
        })
        .max_retries(0)
        .max_consecutive_failures(3)
        .build()
        .unwrap();
    let after = builder("after", 30)
        .process(|_: &Block| Ok::<(), BlockError>(()))
        .upstream(&bad)
        .build()
        .unwrap();
    let r = runner(&format!("abandon::{name}"), &dir)
        .prefetch(1)
        .run_dir(dir.join("run"));
    if in_worker() {
        let _ = r.run([after]);
        return;
    }
    let summary = within(120, move || r.run([after]).unwrap());
    let m = marks(&dir);
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(
        (0..3).all(|g| m.contains_key(&("bad".to_owned(), g))),
        "{m:?}"
    );
    // They ran in a worker process, not here.
    assert!(m.values().flatten().all(|&pid| pid != std::process::id()));
    assert_abandoned_chain(&summary, 30, 3);
    assert_status(&dir.join("run"), 30, 3);
    // One worker served the task, none was started for the task downstream.
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert_eq!(jobs.lines().count(), 1, "{jobs}");
    assert!(jobs.contains(" bad worker_"), "{jobs}");
}

#[test]
fn processes_lost_workers_count_toward_the_budget() {
    let name = "processes_lost_workers_count_toward_the_budget";
    let dir = scratch(name);
    let d = dir.clone();
    let task = builder("crashy", 20)
        .process(move |b: &Block| -> Result<(), BlockError> {
            mark(&d, b)?;
            std::process::exit(3)
        })
        .max_retries(0)
        .max_consecutive_failures(2)
        .build()
        .unwrap();
    let r = runner(&format!("abandon::{name}"), &dir).prefetch(1);
    if in_worker() {
        let _ = r.run([task]);
        return;
    }
    // Two lost workers abandon the task before the restart cap (3) stops the run.
    let summary = within(120, move || r.run([task]).unwrap());
    let t = summary.task("crashy").unwrap();
    assert_eq!((t.failed, t.orphaned), (2, 18), "{summary}");
    let reason = t.abandoned.as_deref().unwrap();
    assert!(
        reason.starts_with("abandoned after 2 consecutive failed blocks (last: block 1: worker "),
        "{reason}"
    );
    assert!(reason.contains("lost"), "{reason}");
    assert!(
        summary
            .failures("crashy")
            .iter()
            .all(|f| f.kind == FailureKind::LostWorker),
        "{summary}"
    );
    assert_eq!(marks(&dir).len(), 2);
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert_eq!(jobs.lines().count(), 2, "{jobs}");
}

#[test]
fn processes_finish_the_blocks_they_hold_and_leave() {
    let name = "processes_finish_the_blocks_they_hold_and_leave";
    let dir = scratch(name);
    let d = dir.clone();
    let task = builder("t", 2000)
        .process(move |b: &Block| -> Result<(), BlockError> {
            mark(&d, b)?;
            Err("no".into())
        })
        .num_workers(2)
        .max_retries(0)
        .max_consecutive_failures(5)
        .build()
        .unwrap();
    // Default prefetch: workers may hold several blocks when the task is abandoned.
    let r = runner(&format!("abandon::{name}"), &dir);
    if in_worker() {
        let _ = r.run([task]);
        return;
    }
    let summary = within(120, move || r.run([task]).unwrap());
    let ran = marks(&dir).len() as u64;
    let t = summary.task("t").unwrap();
    assert!(t.abandoned.is_some(), "{summary}");
    // Every block that ran came back and counts as failed; the rest are orphaned.
    assert_eq!(t.failed, ran, "{summary}");
    assert_eq!(t.orphaned, 2000 - ran);
    assert!((5..=5 + 2 * 32).contains(&ran), "{ran}");
    // The two workers left; none replaced them.
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert_eq!(jobs.lines().count(), 2, "{jobs}");
}
