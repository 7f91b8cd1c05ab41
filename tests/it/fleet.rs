//! The worker fleet across tasks: idle workers released and started again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::time::{Duration, Instant};

use blockwise::{Block, BlockError, Roi, Task, WorkerOptions};

use crate::support::{alive, in_worker, mark, marks, runner, runner_on, scratch};

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

/// The worker processes of the run of test `test` that are alive now, with their
/// `CUDA_VISIBLE_DEVICES`: a snapshot from `/proc` (their command line names the test, their
/// environment has a worker context).
fn live_workers(test: &str) -> Vec<(u32, Option<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(test) || !alive(pid) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.iter().any(|v| v.starts_with("BLOCKWISE_CONTEXT=")) {
            continue;
        }
        let cuda = vars
            .iter()
            .find_map(|v| v.strip_prefix("CUDA_VISIBLE_DEVICES=").map(str::to_owned));
        out.push((pid, cuda));
    }
    out
}

/// Records, as a file in `<dir>/seen`, a snapshot of the live workers taken by a block.
fn record_snapshot(dir: &Path, test: &str, block: &Block) -> std::io::Result<()> {
    let live = live_workers(test);
    let me = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let line = format!(
        "{} {} {} {:?} {:?}\n",
        block.task_id(),
        block.grid_index(),
        std::process::id(),
        me,
        live
    );
    std::fs::create_dir_all(dir.join("seen"))?;
    std::fs::write(
        dir.join("seen")
            .join(format!("{}.{}", block.task_id(), block.grid_index())),
        line,
    )
}

fn snapshots(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("seen"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn two_tasks_sharing_two_cpus_never_have_more_than_two_live_worker_processes() {
    let test = "fleet::two_tasks_sharing_two_cpus_never_have_more_than_two_live_worker_processes";
    let dir = scratch("budget_cpu");
    let task = |id: &str, upstream: Option<&Task>| {
        let d = dir.clone();
        let mut b = Task::builder(
            id,
            Roi::new([0], [12]),
            Roi::new([0], [1]),
            Roi::new([0], [1]),
        )
        .process(move |b: &Block| -> Result<(), BlockError> {
            let live = live_workers(test);
            if live.len() > 2 {
                return Err(format!("{} live workers: {live:?}", live.len()).into());
            }
            record_snapshot(&d, test, b)?;
            std::thread::sleep(Duration::from_millis(20));
            Ok(mark(&d, b)?)
        })
        .read_write_conflict(false)
        .num_workers(2)
        .requires([("cpu", 1)])
        .max_retries(0);
        if let Some(u) = upstream {
            b = b.upstream(u);
        }
        b.build().unwrap()
    };
    let a = task("a", None);
    let b = task("b", None);
    let summary = runner(test, &dir)
        .resources([("cpu", 2)])
        .run([a, b])
        .unwrap();
    if in_worker() {
        return;
    }
    assert!(summary.is_success(), "{summary}");
    assert_eq!(marks(&dir).len(), 24);
    for s in snapshots(&dir) {
        let live: usize = s.matches("), (").count() + 1;
        assert!(live <= 2, "{s}");
    }
}

#[test]
fn four_gpu_workers_on_two_gpus_never_share_a_device_and_a_killed_workers_device_is_reused() {
    let test = "fleet::four_gpu_workers_on_two_gpus_never_share_a_device_and_a_killed_workers_device_is_reused";
    let dir = scratch("budget_gpu");
    let d = dir.clone();
    let task = Task::builder(
        "predict",
        Roi::new([0], [16]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process_per_worker(move |ctx: &blockwise::WorkerContext| {
        let d = d.clone();
        let devices = ctx.devices().to_vec();
        Ok(move |b: &Block| -> Result<(), BlockError> {
            let me = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
            if devices.join(",") != me || devices.len() != 1 {
                return Err(format!("devices {devices:?} but CUDA_VISIBLE_DEVICES={me:?}").into());
            }
            let live = live_workers(test);
            let mut seen: Vec<&String> = live.iter().filter_map(|(_, c)| c.as_ref()).collect();
            seen.sort();
            let n = seen.len();
            seen.dedup();
            if seen.len() != n || live.len() > 2 {
                return Err(format!("live workers share a device: {live:?}").into());
            }
            record_snapshot(&d, test, b)?;
            // After the kill, blocks (block 5's retry at least) wait for the killed worker's
            // device to be back in a live worker.
            if let Ok(killed) = std::fs::read_to_string(d.join("killed")) {
                let (device, pid) = killed.split_once('\n').unwrap_or_default();
                let back = || {
                    live_workers(test)
                        .iter()
                        .any(|(p, c)| p.to_string() != pid && c.as_deref() == Some(device))
                };
                wait_for("the killed worker's device in a new worker", back)?;
                std::fs::write(d.join(format!("back.{}", b.grid_index())), "")?;
            }
            // The first worker to run block 5 dies with it: its device goes to another.
            if b.grid_index() == 5 && !d.join("killed").exists() {
                std::fs::write(d.join("killed"), format!("{me}\n{}", std::process::id()))?;
                nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL)?;
            }
            Ok(mark(&d, b)?)
        })
    })
    .read_write_conflict(false)
    .num_workers(4)
    .requires([("gpu", 1)])
    .build()
    .unwrap();
    let summary = runner(test, &dir)
        .resources([("gpu", 2)])
        .devices("gpu", ["3", "5"])
        .run([task])
        .unwrap();
    if in_worker() {
        return;
    }
    assert!(summary.is_success(), "{summary}");
    assert_eq!(marks(&dir).len(), 16);
    let killed = std::fs::read_to_string(dir.join("killed")).unwrap();
    let (device, pid) = killed.split_once('\n').unwrap();
    // Its device went to a new worker while the run went on.
    assert!(dir.join("back.5").exists());
    assert!(device == "3" || device == "5", "{pid}");
}
