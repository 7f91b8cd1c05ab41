//! The explicit worker entry, `blockwise::worker_main`: a program with side effects before,
//! between and after two `run` calls on worker processes runs them exactly once (in the
//! driver), while its workers build the tasks and serve them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blockwise::{Progress, Roi, Runner, Task, WorkerOptions};

use crate::support::child_main;

const PROGRAM: &str = "entry::zz_child_program_with_side_effects";

/// Appends one line to `path` (one `write` of a short line on an `O_APPEND` file: lines of
/// concurrent writers never interleave).
fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// The tasks of the program: `first` (8 blocks) and `second` (6 blocks), each block logging
/// its task, block id and process id.
fn tasks(dir: &Path) -> Result<Vec<Task>, blockwise::Error> {
    let task = |id: &'static str, n: i64| {
        let log = dir.join("blocks.log");
        Task::builder(
            id,
            Roi::new([0], [n]),
            Roi::new([0], [1]),
            Roi::new([0], [1]),
        )
        .process(move |block| {
            append(
                &log,
                &format!("{id} {} {}", block.block_id(), std::process::id()),
            );
            Ok(())
        })
        .num_workers(2)
        .build()
    };
    Ok(vec![task("first", 8)?, task("second", 6)?])
}

child_main!(
    zz_child_program_with_side_effects: "BLOCKWISE_TEST_ROLE" = "entry-program"
        => child_program_with_side_effects
);

/// The program run by the next test.
fn child_program_with_side_effects() {
    let dir = PathBuf::from(std::env::var("BLOCKWISE_TEST_DIR").unwrap());
    blockwise::worker_main(|| tasks(&dir));
    // From here on, only the driver runs.
    let effects = dir.join("effects.log");
    append(&effects, &format!("before {}", std::process::id()));
    let runner = Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .workers(
            WorkerOptions::new()
                .worker_command(
                    std::env::current_exe().unwrap(),
                    ["--exact", PROGRAM, "--nocapture", "--test-threads=1"],
                )
                .log_dir(dir.join("logs"))
                .handle_signals(false),
        );
    let [first, second]: [Task; 2] = tasks(&dir).unwrap().try_into().unwrap();
    let a = runner.run([first]).unwrap();
    append(&effects, &format!("between {}", std::process::id()));
    let b = runner.run([second]).unwrap();
    append(&effects, &format!("after {}", std::process::id()));
    assert!(a.is_success() && b.is_success(), "{a}\n{b}");
}

#[test]
fn worker_main_runs_side_effects_once_in_the_driver() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("entry/side-effects");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", PROGRAM, "--nocapture", "--test-threads=1"])
        .env("BLOCKWISE_TEST_ROLE", "entry-program")
        .env("BLOCKWISE_TEST_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the program did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the program failed: {status}");

    // Side effects: exactly once each, in order, all in the driver.
    let effects = std::fs::read_to_string(dir.join("effects.log")).unwrap();
    let lines: Vec<(&str, &str)> = effects
        .lines()
        .map(|l| l.split_once(' ').unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["before", "between", "after"], "{effects}");
    let driver = lines[0].1;
    assert!(lines.iter().all(|(_, pid)| *pid == driver), "{effects}");

    // Every block ran once, in a worker process (not the driver).
    let blocks = std::fs::read_to_string(dir.join("blocks.log")).unwrap();
    let mut seen: Vec<(String, u64)> = Vec::new();
    for line in blocks.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_ne!(parts[2], driver, "a block ran in the driver: {line}");
        seen.push((parts[0].to_owned(), parts[1].parse().unwrap()));
    }
    seen.sort();
    let mut expected: Vec<(String, u64)> = Vec::new();
    for (id, n) in [("first", 8), ("second", 6)] {
        let t = Task::builder(
            id,
            Roi::new([0], [n]),
            Roi::new([0], [1]),
            Roi::new([0], [1]),
        )
        .process(|_| Ok(()))
        .build()
        .unwrap();
        expected
            .extend((0..t.num_blocks()).map(|i| (id.to_owned(), t.block(i).unwrap().block_id())));
    }
    expected.sort();
    assert_eq!(seen, expected, "{blocks}");
}

child_main!(
    zz_child_worker_main_without_the_task: "BLOCKWISE_TEST_ROLE" = "entry-missing"
        => child_worker_main_without_the_task
);

/// A worker program whose `worker_main` does not build its task.
fn child_worker_main_without_the_task() {
    blockwise::worker_main(|| Ok(Vec::new()));
    let task = Task::builder(
        "lonely",
        Roi::new([0], [4]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(|_| Ok(()))
    .build()
    .unwrap();
    let dir = PathBuf::from(std::env::var("BLOCKWISE_TEST_DIR").unwrap());
    let err = Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .max_worker_restarts(0)
        .workers(
            WorkerOptions::new()
                .worker_command(
                    std::env::current_exe().unwrap(),
                    [
                        "--exact",
                        "entry::zz_child_worker_main_without_the_task",
                        "--nocapture",
                    ],
                )
                .log_dir(dir.join("logs"))
                .handle_signals(false),
        )
        .run([task])
        .unwrap_err();
    std::fs::write(dir.join("error"), err.to_string()).unwrap();
}

#[test]
fn a_worker_whose_task_worker_main_does_not_build_says_so() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("entry/missing");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "entry::zz_child_worker_main_without_the_task",
            "--nocapture",
        ])
        .env("BLOCKWISE_TEST_ROLE", "entry-missing")
        .env("BLOCKWISE_TEST_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the program did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = std::fs::read_to_string(dir.join("error")).unwrap();
    assert!(
        err.contains("task \"lonely\" is not among the tasks the worker built (none)"),
        "{err}"
    );
}
