//! Block outputs (`TaskBuilder::process_with_output`) and typed block failures.
//!
//! Worker-process tests re-execute this test binary (see support.rs); the crash test
//! re-executes it as the scheduler (`outputs::zz_crash_child`) and SIGKILLs it, as resume.rs
//! does; the memory test reads outputs back in a child (`outputs::zz_memory_child`) and
//! measures its peak memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blockwise::{Block, FailureKind, Progress, Roi, Runner, Task};

use crate::support::{child_main, in_worker, runner, scratch};

/// The value block `grid_index` returns.
fn value(grid_index: u64) -> (u64, String) {
    (grid_index * 7 + 1, format!("block {grid_index}"))
}

fn quiet() -> Runner {
    Runner::new().progress(Progress::Never).print_summary(false)
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("outputs")
        .join(name);
    if !in_worker() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
    }
    dir
}

/// A 1D task of `n` one-voxel blocks returning [`value`].
fn task(id: &str, n: i64) -> Task {
    Task::builder(
        id,
        Roi::new([0], [n]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process_with_output(|block| Ok(value(block.grid_index())))
    .num_workers(2)
    .build()
    .unwrap()
}

/// The outputs of a task, by grid index; panics on a duplicate.
fn collect(outputs: blockwise::journal::Outputs<(u64, String)>) -> BTreeMap<u64, (u64, String)> {
    let mut out = BTreeMap::new();
    for o in outputs {
        let o = o.unwrap();
        let prev = out.insert(o.grid_index, o.value);
        assert!(prev.is_none(), "block {} has two outputs", o.grid_index);
    }
    out
}

fn expected(n: u64) -> BTreeMap<u64, (u64, String)> {
    (0..n).map(|g| (g, value(g))).collect()
}

#[test]
fn threads_give_one_output_per_block_and_the_temporary_directory_goes_with_the_summary() {
    let t = task("vals", 300);
    let ids: BTreeMap<u64, u64> = (0..300)
        .map(|g| (g, t.block(g).unwrap().block_id()))
        .collect();
    let summary = quiet().run([t]).unwrap();
    assert!(summary.is_success(), "{summary}");
    let dir = summary.outputs_dir().unwrap().to_owned();
    assert!(dir.is_dir());
    for o in summary.outputs::<(u64, String)>("vals").unwrap() {
        let o = o.unwrap();
        assert_eq!(ids[&o.grid_index], o.block_id);
    }
    assert_eq!(collect(summary.outputs("vals").unwrap()), expected(300));
    // The iterator keeps the directory alive after the summary is gone.
    let outputs = summary.outputs::<(u64, String)>("vals").unwrap();
    drop(summary);
    assert!(dir.is_dir());
    assert_eq!(collect(outputs), expected(300));
    assert!(
        !dir.exists(),
        "the temporary run directory outlived its summary"
    );
}

#[test]
fn unknown_tasks_and_wrong_types_are_clear_errors() {
    let summary = quiet().run([task("typed", 5)]).unwrap();
    let e = summary.outputs::<u64>("nope").unwrap_err().to_string();
    assert!(e.contains("no task \"nope\""), "{e}");
    let e = summary
        .outputs::<Vec<String>>("typed")
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(e.contains("outputs.bin") && e.contains("is not a"), "{e}");
    // A run without outputs has no outputs directory.
    let plain = Task::builder(
        "plain",
        Roi::new([0], [5]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(|_| Ok(()))
    .build()
    .unwrap();
    let summary = quiet().run([plain]).unwrap();
    assert!(summary.outputs_dir().is_none());
    assert!(summary.outputs::<u64>("plain").is_err());
}

#[test]
fn a_rerun_keeps_exactly_one_output_per_done_block() {
    let dir = tmp("rerun");
    let fail = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU64::new(0));
    let make = || {
        let (fail, calls) = (Arc::clone(&fail), Arc::clone(&calls));
        Task::builder(
            "r",
            Roi::new([0], [50]),
            Roi::new([0], [1]),
            Roi::new([0], [1]),
        )
        .process_with_output(move |block| {
            calls.fetch_add(1, Ordering::SeqCst);
            if block.grid_index() % 10 == 3 && fail.load(Ordering::SeqCst) {
                return Err("not yet".into());
            }
            Ok(value(block.grid_index()))
        })
        .max_retries(0)
        .build()
        .unwrap()
    };
    let first = quiet().run_dir(&dir).run([make()]).unwrap();
    assert_eq!(first.task("r").unwrap().failed, 5);
    let got = collect(blockwise::journal::read_outputs(&dir, "r").unwrap());
    assert_eq!(got.len(), 45);
    assert!(got.keys().all(|g| g % 10 != 3));
    fail.store(false, Ordering::SeqCst);
    calls.store(0, Ordering::SeqCst);
    let second = quiet().run_dir(&dir).run([make()]).unwrap();
    assert!(second.is_success(), "{second}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "only the failed blocks ran again"
    );
    assert_eq!(collect(second.outputs("r").unwrap()), expected(50));
    // A third run skips everything and still has each output once.
    let third = quiet().run_dir(&dir).run([make()]).unwrap();
    assert_eq!(third.task("r").unwrap().skipped, 50);
    assert_eq!(collect(third.outputs("r").unwrap()), expected(50));
    // Starting fresh discards them with the markers.
    calls.store(0, Ordering::SeqCst);
    let fresh = quiet().run_dir(&dir).fresh(true).run([make()]).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 50);
    assert_eq!(collect(fresh.outputs("r").unwrap()), expected(50));
}

#[test]
fn an_output_over_the_cap_fails_its_block_with_the_sizes_and_how_to_raise_it() {
    let t = Task::builder(
        "big",
        Roi::new([0], [4]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process_with_output(|block| Ok("x".repeat(if block.grid_index() == 2 { 500 } else { 10 })))
    .max_retries(1)
    .build()
    .unwrap();
    let summary = quiet().max_output_bytes(100).run([t]).unwrap();
    assert_eq!(summary.task("big").unwrap().failed, 1);
    let failures = summary.failures("big");
    assert_eq!(failures.len(), 2, "{failures:?}");
    for (i, f) in failures.iter().enumerate() {
        assert_eq!(f.kind, FailureKind::OutputTooLarge);
        assert_eq!(f.attempt, i as u32 + 1);
        assert_eq!(f.grid_index, 2);
        for part in [
            "big/",
            "502 bytes",
            "limit of 100 bytes",
            "Runner::max_output_bytes",
        ] {
            assert!(f.message.contains(part), "{part:?} not in {}", f.message);
        }
    }
    let outputs: Vec<String> = summary
        .outputs::<String>("big")
        .unwrap()
        .map(|o| o.unwrap().value)
        .collect();
    assert_eq!(outputs.len(), 3);
}

#[test]
fn failures_say_their_kind_and_attempt_with_threads() {
    let dir = tmp("kinds");
    let slow_once = Arc::new(AtomicBool::new(true));
    let s = Arc::clone(&slow_once);
    let t = Task::builder(
        "k",
        Roi::new([0], [6]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |block| match block.grid_index() {
        0 => Err("bad input".into()),
        1 => panic!("boom"),
        2 if s.swap(false, Ordering::SeqCst) => {
            std::thread::sleep(Duration::from_secs(6));
            Ok(())
        }
        _ => Ok(()),
    })
    .timeout(Duration::from_millis(1500))
    .max_retries(1)
    .num_workers(2)
    .build()
    .unwrap();
    let summary = quiet().run_dir(&dir).run([t]).unwrap();
    let mut got: Vec<(u64, FailureKind, u32)> = summary
        .failures("k")
        .iter()
        .map(|f| (f.grid_index, f.kind, f.attempt))
        .collect();
    got.sort_by_key(|(g, _, a)| (*g, *a));
    assert_eq!(
        got,
        vec![
            (0, FailureKind::Error, 1),
            (0, FailureKind::Error, 2),
            (1, FailureKind::Panic, 1),
            (1, FailureKind::Panic, 2),
            (2, FailureKind::Timeout, 1),
        ],
        "{summary}"
    );
    assert_eq!(FailureKind::LostWorker.to_string(), "lost worker");
    // The failure log says the same.
    let log = std::fs::read_to_string(dir.join("tasks/k/failures.jsonl")).unwrap();
    let mut lines: Vec<(u64, String, u64)> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["grid_index"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_owned(),
                v["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    lines.sort();
    assert_eq!(lines[0], (0, "error".into(), 1));
    assert_eq!(lines[2], (1, "panic".into(), 1));
    assert_eq!(lines[4], (2, "timeout".into(), 1));
    // Status still reads the log.
    let st = blockwise::journal::status(&dir).unwrap();
    assert_eq!(st.tasks[0].failed, 2);
}

#[test]
fn worker_processes_send_outputs_and_lost_workers_are_typed() {
    let dir = scratch("outputs-processes");
    let d = dir.clone();
    let t = Task::builder(
        "p",
        Roi::new([0], [40]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process_with_output(move |block| {
        let g = block.grid_index();
        if g == 7 && std::fs::File::create_new(d.join("aborted")).is_ok() {
            std::process::abort();
        }
        if g == 9 {
            return Ok((0, "y".repeat(5000)));
        }
        Ok(value(g))
    })
    .num_workers(2)
    .max_retries(1)
    .build()
    .unwrap();
    let summary = runner(
        "outputs::worker_processes_send_outputs_and_lost_workers_are_typed",
        &dir,
    )
    .max_output_bytes(1000)
    .max_worker_restarts(5)
    .run([t])
    .unwrap();
    let failures = summary.failures("p");
    // The block the worker was running as far as the scheduler knows (the aborting worker
    // may not have reported the blocks it finished just before).
    let lost: Vec<_> = failures
        .iter()
        .filter(|f| f.kind == FailureKind::LostWorker)
        .collect();
    assert_eq!(lost.len(), 1, "{summary}");
    assert_eq!(lost[0].attempt, 1);
    assert!(
        lost[0].message.contains("lost while processing"),
        "{}",
        lost[0].message
    );
    let big: Vec<_> = failures.iter().filter(|f| f.grid_index == 9).collect();
    assert_eq!(big.len(), 2, "{summary}");
    assert!(big.iter().all(
        |f| f.kind == FailureKind::OutputTooLarge && f.message.contains("limit of 1000 bytes")
    ));
    let mut want = expected(40);
    want.remove(&9);
    assert_eq!(collect(summary.outputs("p").unwrap()), want);
}

#[test]
fn large_outputs_travel_from_worker_processes_in_several_reports() {
    let dir = scratch("outputs-large");
    let t = Task::builder(
        "l",
        Roi::new([0], [24]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    // ~600 KB of quotes each: twice that once escaped in a report.
    .process_with_output(|block| {
        Ok(vec![
            "\"".repeat(300_000);
            1 + block.grid_index() as usize % 2
        ])
    })
    .num_workers(2)
    .build()
    .unwrap();
    let summary = runner(
        "outputs::large_outputs_travel_from_worker_processes_in_several_reports",
        &dir,
    )
    .max_output_bytes(2 << 20)
    .prefetch(8)
    .run([t])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    let mut n = 0;
    for o in summary.outputs::<Vec<String>>("l").unwrap() {
        let o = o.unwrap();
        assert_eq!(o.value.len(), 1 + o.grid_index as usize % 2);
        assert!(o.value.iter().all(|s| s.len() == 300_000));
        n += 1;
    }
    assert_eq!(n, 24);
}

// ---- crash test ----------------------------------------------------------------------------

const CRASH_BLOCKS: i64 = 2000;

fn log_line(dir: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("processed.log"))
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

fn kill_self() {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    std::thread::sleep(Duration::from_secs(60));
}

child_main!(zz_crash_child: "BLOCKWISE_OUTPUTS_CRASH_DIR" => crash_child);

/// The scheduler of a crash run.
fn crash_child(dir: String) {
    let dir = PathBuf::from(dir);
    let num = |name: &str| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let delay_us = num("BLOCKWISE_OUTPUTS_CRASH_DELAY_US");
    if delay_us > 0 {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(delay_us));
            kill_self();
        });
    }
    let kill_at = num("BLOCKWISE_OUTPUTS_CRASH_KILL_AT_BLOCK");
    let count = Arc::new(AtomicU64::new(0));
    let d = dir.clone();
    let t = Task::builder(
        "c",
        Roi::new([0], [CRASH_BLOCKS]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process_with_output(move |block: &Block| {
        log_line(&d, &format!("{}\n", block.grid_index()));
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if kill_at > 0 && n == kill_at {
            kill_self();
        }
        // Long enough for several batches per run (one every 100 ms).
        std::thread::sleep(Duration::from_micros(250));
        Ok(value(block.grid_index()))
    })
    .num_workers(2)
    .build()
    .unwrap();
    let summary = quiet().run_dir(dir.join("run")).run([t]).unwrap();
    assert!(summary.is_success(), "{summary}");
}

fn done_markers(run: &Path) -> BTreeSet<u64> {
    match std::fs::read(run.join("tasks/c/done.zarr/c/0")) {
        // Two bits per block, four blocks per byte (one chunk: few blocks).
        Ok(bytes) => bytes
            .iter()
            .flat_map(|b| [0, 2, 4, 6].map(|s| (b >> s) & 3))
            .enumerate()
            .filter(|(_, v)| *v == 1)
            .map(|(i, _)| i as u64)
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the crash child hung: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn outputs_survive_a_scheduler_killed_at_random_points_exactly_once() {
    let mut kills = 0;
    for seed in 1..7u64 {
        let dir = tmp(&format!("crash-{seed}"));
        let run = dir.join("run");
        let mut rng = xorshift(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
        let mut log_offset = 0;
        let crashes = 2 + seed % 2;
        // Blocks whose outputs were readable before this run (they must not run again).
        let mut had_output: BTreeSet<u64> = BTreeSet::new();
        let mut finished = false;
        for attempt in 0..crashes + 3 {
            rng = xorshift(rng);
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "outputs::zz_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BLOCKWISE_OUTPUTS_CRASH_DIR", &dir)
            .env_remove(blockwise::CONTEXT_ENV)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
            if attempt < crashes {
                if rng.is_multiple_of(2) {
                    let us = 5_000 + (rng >> 8) % 400_000;
                    cmd.env("BLOCKWISE_OUTPUTS_CRASH_DELAY_US", us.to_string());
                } else {
                    let at = 1 + (rng >> 8) % CRASH_BLOCKS as u64;
                    cmd.env("BLOCKWISE_OUTPUTS_CRASH_KILL_AT_BLOCK", at.to_string());
                }
            }
            let out = wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(120));
            let log = std::fs::read_to_string(dir.join("processed.log")).unwrap_or_default();
            for line in log[log_offset..].lines() {
                let g: u64 = line.parse().unwrap();
                assert!(
                    !had_output.contains(&g),
                    "seed {seed}, run {attempt}: block {g} had a recorded output and ran again"
                );
            }
            log_offset = log.len();
            // Read back as a reader without the lock would, before any rerun.
            let got = match blockwise::journal::read_outputs::<(u64, String)>(&run, "c") {
                Ok(o) => collect(o),
                Err(blockwise::journal::JournalError::NoOutputs { .. }) => BTreeMap::new(),
                Err(e) => panic!("seed {seed}: {e}"),
            };
            for (g, v) in &got {
                assert_eq!(*v, value(*g), "seed {seed}: block {g}");
            }
            let done = done_markers(&run);
            assert!(
                done.iter().all(|g| got.contains_key(g)),
                "seed {seed}, run {attempt}: a block marked done has no output"
            );
            eprintln!(
                "seed {seed}, run {attempt}: {} outputs, {} blocks marked done",
                got.len(),
                done.len()
            );
            had_output = got.keys().copied().collect();
            if out.status.success() {
                let st = blockwise::journal::status(&run).unwrap();
                assert_eq!(st.tasks[0].done, CRASH_BLOCKS as u64, "{st}");
                assert_eq!(got, expected(CRASH_BLOCKS as u64), "seed {seed}");
                finished = true;
                break;
            }
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                out.status.signal(),
                Some(9),
                "seed {seed}: the child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            kills += 1;
        }
        assert!(finished, "seed {seed}: never finished");
    }
    assert!(kills > 0);
}

// ---- bounded memory ------------------------------------------------------------------------

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

child_main!(zz_memory_child: "BLOCKWISE_OUTPUTS_MEMORY_DIR" => memory_child);

/// Reads the outputs of a run directory and prints its peak memory growth while doing so.
fn memory_child(dir: String) {
    let mut outputs = blockwise::journal::read_outputs::<String>(Path::new(&dir), "m").unwrap();
    // The first record pages in the code that reads records; then the baseline.
    let first = outputs.next().unwrap().unwrap();
    assert_eq!(first.value.len(), 200);
    let before = status_kib("VmHWM:");
    let mut n = 1u64;
    let mut max_buf = 0;
    while let Some(o) = outputs.next() {
        let o = o.unwrap();
        assert_eq!(o.value.len(), 200);
        max_buf = max_buf.max(outputs.buffer_capacity());
        n += 1;
    }
    let after = status_kib("VmHWM:");
    println!(
        "MEMORY n={n} grew_kib={} max_buf={max_buf}",
        after.saturating_sub(before)
    );
}

fn bounded_memory(blocks: i64) {
    let dir = tmp(&format!("memory-{blocks}"));
    let t = Task::builder(
        "m",
        Roi::new([0], [blocks]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process_with_output(|block| Ok(format!("{:0>200}", block.grid_index())))
    .read_write_conflict(false)
    .num_workers(2)
    .build()
    .unwrap();
    let summary = quiet().prefetch(256).run_dir(&dir).run([t]).unwrap();
    assert!(summary.is_success(), "{summary}");
    let file = std::fs::metadata(dir.join("tasks/m/outputs.bin"))
        .unwrap()
        .len();
    assert!(file > blocks as u64 * 200);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "outputs::zz_memory_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BLOCKWISE_OUTPUTS_MEMORY_DIR", &dir)
        .env_remove(blockwise::CONTEXT_ENV)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest may print the test's name on the same line.
    let line = text
        .lines()
        .find_map(|l| l.find("MEMORY").map(|i| &l[i..]))
        .unwrap();
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("n="), blocks as u64);
    assert!(field("max_buf=") <= 64 << 10, "{line}");
    // Far below the file's size: records are read one at a time.
    let grew = field("grew_kib=") * 1024;
    assert!(
        grew < (4 << 20).min(file / 4),
        "{line} for a file of {file} bytes"
    );
}

#[test]
fn many_small_outputs_are_read_back_with_bounded_memory() {
    bounded_memory(100_000);
}

#[test]
#[ignore = "a million blocks: slow in debug builds"]
fn a_million_small_outputs_are_read_back_with_bounded_memory() {
    bounded_memory(1_000_000);
}
