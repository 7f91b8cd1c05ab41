//! The worker fleet across tasks: idle workers released and started again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::time::{Duration, Instant};

use blockwise::{Block, BlockError, Roi, Task, WorkerOptions};

use super::processes::{in_worker, mark, marks, runner, runner_on, scratch};

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

/// The pid that ran block `grid` of `task`, once its marker exists.
fn ran(dir: &Path, task: &str, grid: u64) -> Option<u32> {
    marks(dir)
        .get(&(task.to_owned(), grid))
        .and_then(|p| p.first().copied())
}

/// Polls `what` every few milliseconds for up to 60 s.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Result<(), BlockError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("gave up waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[test]
fn an_idle_worker_is_released_and_its_task_gets_a_new_one_when_blocks_are_ready() {
    // `down` depends on `up` block by block. Block 1 of `up` waits until the worker that ran
    // block 0 of `down` has exited: that worker had nothing to do meanwhile (its task's next
    // block waits on `up`), so only the idle timeout can make it leave. Block 1 of `down` then
    // needs a new worker.
    let dir = scratch("idle_release");
    let d = dir.clone();
    let up = Task::builder(
        "up",
        Roi::new([0], [2]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        if b.grid_index() == 1 {
            let mut first = None;
            wait_for("down's first worker to leave", || {
                first = first.or_else(|| ran(&d, "down", 0));
                first.is_some_and(|pid| !alive(pid))
            })?;
        }
        Ok(mark(&d, b)?)
    })
    .read_write_conflict(false)
    .build()
    .unwrap();
    let d = dir.clone();
    let down = Task::builder(
        "down",
        Roi::new([0], [2]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .read_write_conflict(false)
    .upstream(&up)
    .build()
    .unwrap();
    let summary = runner_on(
        "fleet::an_idle_worker_is_released_and_its_task_gets_a_new_one_when_blocks_are_ready",
        &dir,
        WorkerOptions::new().idle_timeout(Duration::from_millis(100)),
    )
    .run([down])
    .unwrap();
    if in_worker() {
        return;
    }
    assert!(summary.is_success(), "{summary}");
    let first = ran(&dir, "down", 0).unwrap();
    let second = ran(&dir, "down", 1).unwrap();
    assert_ne!(first, second, "block 1 of down ran on a new worker");
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert_eq!(
        jobs.lines().filter(|l| l.contains(" down ")).count(),
        2,
        "{jobs}"
    );
}

/// Blocks running at once in this process, and the most seen.
static RUNNING: std::sync::Mutex<(usize, usize)> = std::sync::Mutex::new((0, 0));
static CHANGED: std::sync::Condvar = std::sync::Condvar::new();

#[test]
fn a_worker_with_four_threads_runs_four_blocks_at_once() {
    // Each block waits (up to 60 s) until four blocks of its process have been running at
    // once: with fewer threads the first blocks would wait in vain and fail.
    let dir = scratch("threads_per_worker");
    let d = dir.clone();
    let task = Task::builder(
        "wide",
        Roi::new([0], [12]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        let mut g = RUNNING.lock().unwrap();
        g.0 += 1;
        g.1 = g.1.max(g.0);
        CHANGED.notify_all();
        let (mut g, timeout) = CHANGED
            .wait_timeout_while(g, Duration::from_secs(60), |g| g.1 < 4)
            .unwrap();
        g.0 -= 1;
        drop(g);
        if timeout.timed_out() {
            return Err("never saw 4 blocks running at once".into());
        }
        Ok(mark(&d, b)?)
    })
    .read_write_conflict(false)
    .threads_per_worker(4)
    .max_retries(0)
    .build()
    .unwrap();
    let summary = runner(
        "fleet::a_worker_with_four_threads_runs_four_blocks_at_once",
        &dir,
    )
    .run([task])
    .unwrap();
    if in_worker() {
        return;
    }
    assert!(summary.is_success(), "{summary}");
    let m = marks(&dir);
    assert_eq!(m.len(), 12);
    let pids: std::collections::BTreeSet<u32> = m.values().flatten().copied().collect();
    assert_eq!(pids.len(), 1, "one worker ran them all: {pids:?}");
}
