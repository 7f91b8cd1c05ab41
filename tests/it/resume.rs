//! Crash tests: a chained zarr pipeline with a run directory, whose scheduler process is
//! killed with SIGKILL at random points (and, with worker processes, whose workers are killed
//! too), then rerun until it finishes. The output must be bit-identical to an uninterrupted
//! run, and no block recorded as done may be processed again.
//!
//! The scheduler is this test binary re-executed (`resume::zz_crash_child`), configured through
//! environment variables. Every call of a process function appends `<task> <grid index>` to
//! `processed.log` (one `write` on a file opened for appending, so lines never interleave).
//!
//! Seeds: `BLOCKWISE_CRASH_SEEDS` (`a..b`, default `1..7`); `scripts/crash-seeds.sh` runs many.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blockwise::sample::{SampleSpec, write_zarr};
use blockwise::store::{ArraySpec, ChunkGrid, DataType, ZarrArray};
use blockwise::workload::box_mean_block;
use blockwise::{Block, BlockError, Fit, Progress, Roi, Runner, Task};

use crate::support::{alive, child_main, kill_self, wait_with_timeout};

const SIZE: u64 = 48;
const BLOCK: i64 = 8;
const CONTEXT: i64 = 2;
const THRESHOLD: u8 = 100;

fn seeds() -> std::ops::Range<u64> {
    let spec = std::env::var("BLOCKWISE_CRASH_SEEDS").unwrap_or_else(|_| "1..7".into());
    let (a, b) = spec
        .split_once("..")
        .expect("BLOCKWISE_CRASH_SEEDS is a..b");
    a.parse().unwrap()..b.parse().unwrap()
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn log_line(dir: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("processed.log"))
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

/// Creates the input volume and the (empty) outputs of a pipeline directory.
fn prepare(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let spec = SampleSpec::cube(SIZE);
    let options = ArraySpec::new(spec.roi(), [1, 1, 1], DataType::U8, vec![BLOCK as u64; 3]);
    write_zarr(&spec, &dir.join("raw.zarr"), "raw", &options, 2).unwrap();
    let out = ArraySpec::new(spec.roi(), [1, 1, 1], DataType::U8, vec![BLOCK as u64; 3]);
    ZarrArray::create(dir.join("smoothed.zarr"), "smoothed", &out).unwrap();
    ZarrArray::create(dir.join("mask.zarr"), "mask", &out).unwrap();
}

/// The pipeline: `smooth` (box mean with context, read/write conflicts on, so its blocks
/// come in levels) and `threshold` (reads the smoothed blocks around its own).
/// `on_block` runs at the start of every process call. With `array_id`, the outputs are
/// declared with the ids `<array_id>-smoothed` and `<array_id>-mask` (instead of their own).
fn tasks(dir: &Path, on_block: Arc<dyn Fn(&Block) + Send + Sync>, array_id: Option<&str>) -> Task {
    let raw = Arc::new(ZarrArray::open(dir.join("raw.zarr"), "raw").unwrap());
    let smoothed = Arc::new(ZarrArray::open(dir.join("smoothed.zarr"), "smoothed").unwrap());
    let mask = Arc::new(ZarrArray::open(dir.join("mask.zarr"), "mask").unwrap());
    let write = Roi::new([0; 3], [BLOCK; 3]);
    let grid = |a: &ZarrArray, name: &str| ChunkGrid {
        array_id: array_id
            .map(|id| format!("{id}-{name}"))
            .or(a.chunk_grid().array_id),
        ..a.chunk_grid()
    };
    let (smoothed_grid, mask_grid) = (grid(&smoothed, "smoothed"), grid(&mask, "mask"));
    let (r, s, hook) = (
        Arc::clone(&raw),
        Arc::clone(&smoothed),
        Arc::clone(&on_block),
    );
    let smooth = Task::builder(
        "smooth",
        raw.roi().grow_by(CONTEXT),
        write.grow_by(CONTEXT),
        write.clone(),
    )
    .fit(Fit::Shrink)
    .writes(smoothed_grid)
    .num_workers(2)
    .max_retries(5)
    .process(move |block: &Block| -> Result<(), BlockError> {
        hook(block);
        let data = r.read_with_fill::<u8>(block.read_roi(), 0)?;
        let w = block.write_roi().shape();
        let ws = [w[0] as usize, w[1] as usize, w[2] as usize];
        s.write(
            block.write_roi(),
            box_mean_block(data.view(), CONTEXT as usize, ws)?.view(),
        )?;
        Ok(())
    })
    .build()
    .unwrap();
    let (s, m, hook) = (Arc::clone(&smoothed), Arc::clone(&mask), on_block);
    Task::builder(
        "threshold",
        raw.roi().grow_by(BLOCK),
        write.grow_by(BLOCK),
        write,
    )
    .fit(Fit::Shrink)
    .read_write_conflict(false)
    .upstream(&smooth)
    .writes(mask_grid)
    .num_workers(2)
    .max_retries(5)
    .process(move |block: &Block| -> Result<(), BlockError> {
        hook(block);
        // The smoothed neighbourhood must be complete: its blocks ran before this one.
        let around = s.read_with_fill::<u8>(block.read_roi(), 0)?;
        let w = block.write_roi().shape();
        let lo: Vec<usize> = (0..3)
            .map(|d| (block.write_roi().begin()[d] - block.read_roi().begin()[d]) as usize)
            .collect();
        let core = around.slice_each_axis(|ax| {
            let d = ax.axis.index();
            ndarray::Slice::from(lo[d]..lo[d] + w[d] as usize)
        });
        let out = core.mapv(|v| u8::from(v > THRESHOLD));
        m.write(block.write_roi(), out.view())?;
        Ok(())
    })
    .build()
    .unwrap()
}

/// The whole content of an output array.
fn contents(dir: &Path, name: &str) -> Vec<u8> {
    let a = ZarrArray::open(dir.join(format!("{name}.zarr")), name).unwrap();
    a.read::<u8>(&a.roi()).unwrap().iter().copied().collect()
}

/// The done grid indices of a task, from its marker array.
fn done_markers(dir: &Path, task: &str) -> BTreeSet<u64> {
    let chunk = dir.join("run/tasks").join(task).join("done.zarr/c/0");
    match std::fs::read(&chunk) {
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

fn reference() -> &'static (Vec<u8>, Vec<u8>) {
    static REF: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("resume/reference");
        prepare(&dir);
        let task = tasks(&dir, Arc::new(|_: &Block| {}), None);
        let summary = Runner::new().progress(Progress::Never).run([task]).unwrap();
        assert!(summary.is_success(), "{summary}");
        (contents(&dir, "smoothed"), contents(&dir, "mask"))
    })
}

child_main!(zz_crash_child: "BLOCKWISE_CRASH_DIR" => crash_child);

/// The scheduler (and, re-executed, the worker) of a crash run.
fn crash_child(dir: String) {
    let dir = PathBuf::from(dir);
    let worker = blockwise::is_worker();
    let num = |name: &str| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let processes = std::env::var("BLOCKWISE_CRASH_RUNNER").as_deref() == Ok("processes");
    // Scheduler side: kill this process after a delay (any point: a block, a flush, ...) or
    // at the start of the n-th block (threads only).
    let delay_us = num("BLOCKWISE_CRASH_DELAY_US");
    if !worker && delay_us > 0 {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(delay_us));
            kill_self();
        });
    }
    let kill_at = num("BLOCKWISE_CRASH_KILL_AT_BLOCK");
    // After this many blocks, every further block stalls until the process is killed.
    let stall_after = num("BLOCKWISE_CRASH_STALL_AFTER");
    let array_id = std::env::var("BLOCKWISE_CRASH_ARRAY_ID").ok();
    // What the program does with its outputs at start: recreate them (`create`, overwriting:
    // the natural thing to write, and the resume hazard) or `prepare` them (open if present).
    if !worker {
        let out = ArraySpec::new(
            SampleSpec::cube(SIZE).roi(),
            [1, 1, 1],
            DataType::U8,
            vec![BLOCK as u64; 3],
        );
        match std::env::var("BLOCKWISE_CRASH_OUTPUTS").as_deref() {
            Ok("create") => {
                let mut out = out;
                out.overwrite = true;
                ZarrArray::create(dir.join("smoothed.zarr"), "smoothed", &out).unwrap();
                ZarrArray::create(dir.join("mask.zarr"), "mask", &out).unwrap();
            }
            Ok("prepare") => {
                ZarrArray::prepare(dir.join("smoothed.zarr"), "smoothed", &out).unwrap();
                ZarrArray::prepare(dir.join("mask.zarr"), "mask", &out).unwrap();
            }
            _ => {}
        }
    }
    // Worker side: each worker process may die at its n-th block.
    let worker_seed = num("BLOCKWISE_CRASH_WORKER_SEED");
    let worker_kill_at = if worker && worker_seed > 0 {
        let x = xorshift(worker_seed ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9));
        2 + x % 40
    } else {
        0
    };
    if worker {
        std::fs::create_dir_all(dir.join("pids")).unwrap();
        std::fs::write(dir.join("pids").join(std::process::id().to_string()), "").unwrap();
    }
    let count = Arc::new(AtomicU64::new(0));
    let d = dir.clone();
    let hook = Arc::new(move |block: &Block| {
        log_line(&d, &format!("{} {}\n", block.task_id(), block.grid_index()));
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if (!worker && kill_at > 0 && n == kill_at) || (worker_kill_at > 0 && n == worker_kill_at) {
            kill_self();
        }
        if stall_after > 0 && n > stall_after {
            // The parent kills this process (wait_with_timeout bounds the wait).
            std::thread::sleep(Duration::from_secs(300));
        }
    });
    let task = tasks(&dir, hook, array_id.as_deref());
    let mut runner = Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .run_dir(dir.join("run"));
    if processes {
        let workers = blockwise::WorkerOptions::new()
            .worker_command(
                std::env::current_exe().unwrap(),
                [
                    "--exact",
                    "resume::zz_crash_child",
                    "--nocapture",
                    "--test-threads=1",
                ],
            )
            .log_dir(dir.join("logs"))
            .death_timeout(Duration::from_secs(10));
        runner = runner.workers(workers).max_worker_restarts(10);
    }
    match runner.run([task]) {
        Ok(summary) => assert!(summary.is_success(), "{summary}"),
        Err(e) => {
            // For the parent: the error's message, and an exit code of its own.
            eprintln!("the run failed: {e}");
            std::process::exit(3);
        }
    }
}

struct Outcome {
    crashes: u32,
    processed: u64,
}

/// Runs the crash child until it finishes, killing it on its first `crashes` runs, and checks
/// every run against the markers left by the one before.
fn crash_and_resume(name: &str, seed: u64, processes: bool, crashes: u32) -> Outcome {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("resume")
        .join(format!("{name}-{seed}"));
    prepare(&dir);
    let mut rng = xorshift(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let mut log_offset = 0usize;
    let mut done_before: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut processed = 0u64;
    for run in 0..(crashes + 3) {
        rng = xorshift(rng);
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "resume::zz_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BLOCKWISE_CRASH_DIR", &dir)
        .env_remove(blockwise::CONTEXT_ENV)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        if processes {
            cmd.env("BLOCKWISE_CRASH_RUNNER", "processes");
            cmd.env("BLOCKWISE_CRASH_WORKER_SEED", (rng | 1).to_string());
        }
        // With worker processes, this process kills the scheduler once the log shows that
        // many more blocks.
        let mut kill_after_lines = None;
        if run < crashes {
            if processes {
                kill_after_lines = Some(1 + (rng >> 8) % 300);
            } else if rng.is_multiple_of(2) {
                // At a random moment (in a block, a flush, between blocks, ...).
                let us = 1_000 + (rng >> 8) % 150_000;
                cmd.env("BLOCKWISE_CRASH_DELAY_US", us.to_string());
            } else {
                // At the start of a random block.
                cmd.env(
                    "BLOCKWISE_CRASH_KILL_AT_BLOCK",
                    (1 + (rng >> 8) % 300).to_string(),
                );
            }
        }
        let child = cmd.spawn().unwrap();
        if let Some(lines) = kill_after_lines {
            let log = dir.join("processed.log");
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let seen = std::fs::read(&log)
                    .map(|b| {
                        b[log_offset.min(b.len())..]
                            .iter()
                            .filter(|&&c| c == b'\n')
                            .count()
                    })
                    .unwrap_or(0);
                if seen as u64 >= lines || Instant::now() > deadline {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(child.id() as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    break;
                }
                if std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                    .map_or(true, |s| s.contains(") Z"))
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let out = wait_with_timeout(child, Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // Workers of a killed scheduler exit once they lose it; wait before going on.
        let deadline = Instant::now() + Duration::from_secs(60);
        if let Ok(entries) = std::fs::read_dir(dir.join("pids")) {
            for e in entries.flatten() {
                let pid: u32 = e.file_name().to_string_lossy().parse().unwrap();
                while alive(pid) {
                    assert!(
                        Instant::now() < deadline,
                        "worker {pid} outlived its scheduler"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        // What ran in this run must not have been done before it.
        let log = std::fs::read_to_string(dir.join("processed.log")).unwrap_or_default();
        for line in log[log_offset..].lines() {
            let (task, index) = line.split_once(' ').unwrap();
            let index: u64 = index.parse().unwrap();
            processed += 1;
            assert!(
                !done_before.get(task).is_some_and(|s| s.contains(&index)),
                "seed {seed}, run {run}: {task} block {index} was recorded as done and ran again"
            );
        }
        log_offset = log.len();
        done_before = ["smooth", "threshold"]
            .into_iter()
            .map(|t| (t, done_markers(&dir, t)))
            .collect();
        if out.status.success() {
            let st = blockwise::journal::status(&dir.join("run")).unwrap();
            for t in &st.tasks {
                assert_eq!((t.done, t.failed), (t.total, 0), "seed {seed}: {st}");
            }
            let (smoothed, mask) = reference();
            assert!(
                contents(&dir, "smoothed") == *smoothed,
                "seed {seed}: smoothed differs from an uninterrupted run"
            );
            assert!(
                contents(&dir, "mask") == *mask,
                "seed {seed}: mask differs from an uninterrupted run"
            );
            // Every run before this one was killed.
            return Outcome {
                crashes: run,
                processed,
            };
        }
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(9),
            "seed {seed}, run {run}: the child failed without being killed: {}\n{stderr}",
            out.status
        );
        assert!(
            run < crashes,
            "seed {seed}: run {run} was killed but should not be"
        );
    }
    panic!("seed {seed}: the pipeline did not finish");
}

#[test]
fn scheduler_killed_at_random_points_then_rerun_matches_an_uninterrupted_run() {
    let total_blocks = 2 * 216;
    let mut crashes = 0;
    for seed in seeds() {
        let o = crash_and_resume("threads", seed, false, 2 + (seed % 2) as u32);
        crashes += o.crashes;
        assert!(
            o.processed >= total_blocks,
            "seed {seed}: only {} blocks processed",
            o.processed
        );
        eprintln!(
            "seed {seed}: {} crashes, {} block calls",
            o.crashes, o.processed
        );
    }
    assert!(crashes > 0);
}

#[test]
fn scheduler_and_workers_killed_then_rerun_matches_an_uninterrupted_run() {
    // Three seeds by default (each run starts worker processes); every seed when given.
    let n = if std::env::var_os("BLOCKWISE_CRASH_SEEDS").is_some() {
        usize::MAX
    } else {
        3
    };
    for seed in seeds().take(n) {
        let o = crash_and_resume("processes", seed, true, 1 + (seed % 2) as u32);
        eprintln!(
            "seed {seed} (processes): {} crashes, {} block calls",
            o.crashes, o.processed
        );
    }
}

/// The crash child for `dir`, declaring its outputs with ids made from `array_id` (without,
/// with the ids the arrays have).
fn child(dir: &Path, array_id: Option<&str>) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "resume::zz_crash_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("BLOCKWISE_CRASH_DIR", dir)
    .env_remove(blockwise::CONTEXT_ENV)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    if let Some(id) = array_id {
        cmd.env("BLOCKWISE_CRASH_ARRAY_ID", id);
    }
    cmd
}

/// Runs the pipeline of `dir` (prepared) with outputs of id `array_id` and kills it once the
/// run directory records blocks done (its blocks stall after the 20th, so it cannot finish
/// first); returns the done markers it left.
fn kill_mid_run(dir: &Path, array_id: Option<&str>) -> BTreeMap<&'static str, BTreeSet<u64>> {
    let child = child(dir, array_id)
        .env("BLOCKWISE_CRASH_STALL_AFTER", "20")
        .spawn()
        .unwrap();
    let run = dir.join("run");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = blockwise::journal::RunDir::open(&run)
            .and_then(|r| r.progress())
            .map_or(0, |p| p.done());
        if done > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run recorded no block done in 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let out = wait_with_timeout(child, Duration::from_secs(120));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    let markers: BTreeMap<_, _> = ["smooth", "threshold"]
        .into_iter()
        .map(|t| (t, done_markers(dir, t)))
        .collect();
    assert!(!markers["smooth"].is_empty(), "blocks were recorded done");
    markers
}

/// Kills a run mid-way; a rerun whose outputs have other ids (recreated arrays) is refused
/// with `OutputReplaced` and changes nothing; a rerun with the same outputs resumes, running
/// no block recorded done, and its outputs are those of an uninterrupted run. (The ids are
/// set through the task's declared chunk grids; with ids stored by `ZarrArray::create`, the
/// same helper serves a test that really recreates the arrays.)
#[test]
fn a_rerun_with_recreated_outputs_is_refused_and_with_the_same_outputs_resumes() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("resume/replaced");
    prepare(&dir);
    let done = kill_mid_run(&dir, Some("first"));
    let log_len = std::fs::read(dir.join("processed.log")).map_or(0, |b| b.len());
    let st = blockwise::journal::status(&dir.join("run")).unwrap();
    let recorded: u64 = st.tasks.iter().map(|t| t.done).sum();
    // The markers, and the write-ahead log's batch if the kill came between the two.
    let smooth_done = st
        .tasks
        .iter()
        .find(|t| t.task_id == "smooth")
        .unwrap()
        .done;
    assert!(smooth_done >= done["smooth"].len() as u64);

    let out = wait_with_timeout(
        child(&dir, Some("second")).spawn().unwrap(),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let smoothed = dir.join("smoothed.zarr");
    assert!(
        stderr.contains(&format!(
            "the run failed: task \"smooth\": output array {}",
            smoothed.display()
        )) && stderr.contains(&format!(
            "was recreated after {smooth_done} of the task's blocks were recorded done"
        )) && stderr.contains("(its array id was first-smoothed, now second-smoothed)")
            && stderr.contains("start fresh (`Runner::fresh(true)`)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dir.join("processed.log")).map_or(0, |b| b.len()),
        log_len,
        "no block ran"
    );
    let st = blockwise::journal::status(&dir.join("run")).unwrap();
    assert_eq!(st.tasks.iter().map(|t| t.done).sum::<u64>(), recorded);

    let out = wait_with_timeout(
        child(&dir, Some("first")).spawn().unwrap(),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.join("processed.log")).unwrap();
    for line in log[log_len..].lines() {
        let (task, index) = line.split_once(' ').unwrap();
        let index: u64 = index.parse().unwrap();
        assert!(
            !done.get(task).is_some_and(|s| s.contains(&index)),
            "{task} block {index} was recorded as done and ran again"
        );
    }
    let (smoothed, mask) = reference();
    assert!(contents(&dir, "smoothed") == *smoothed);
    assert!(contents(&dir, "mask") == *mask);
}

/// The resume hazard end to end, with the arrays' own ids: a program that recreates its
/// outputs at start (`ZarrArray::create` with `overwrite`), killed part way and rerun, gets
/// `OutputReplaced` (never a silent skip over the lost blocks); the same program opening them
/// with `ZarrArray::prepare` resumes, to output bit-identical to an uninterrupted run.
#[test]
fn recreating_outputs_is_refused_and_prepare_resumes_bit_identically() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("resume/recreate-vs-prepare");
    prepare(&dir);
    let spawn = |outputs: &str| {
        let mut cmd = child(&dir, None);
        cmd.env("BLOCKWISE_CRASH_OUTPUTS", outputs);
        wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(120))
    };
    let done = kill_mid_run(&dir, None);
    assert!(!done.is_empty());
    let out = spawn("create");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("output array") && stderr.contains("was recreated after"),
        "{stderr}"
    );

    // Again, with prepare: the kill, then a rerun that resumes.
    prepare(&dir);
    let done = kill_mid_run(&dir, None);
    let log_len = std::fs::read(dir.join("processed.log")).map_or(0, |b| b.len());
    let out = spawn("prepare");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.join("processed.log")).unwrap();
    for line in log[log_len..].lines() {
        let (task, index) = line.split_once(' ').unwrap();
        let index: u64 = index.parse().unwrap();
        assert!(
            !done.get(task).is_some_and(|s| s.contains(&index)),
            "{task} block {index} was recorded as done and ran again"
        );
    }
    let (smoothed, mask) = reference();
    assert!(contents(&dir, "smoothed") == *smoothed);
    assert!(contents(&dir, "mask") == *mask);
}
