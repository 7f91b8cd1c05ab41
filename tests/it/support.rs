//! Helpers shared by the integration tests: scratch directories, runners whose workers are this
//! test binary, block markers, and [`child_main!`] for the child-process entry points.
//!
//! # Tests that run in worker processes
//!
//! A test that runs blocks in worker processes runs twice: as the scheduler, and (with
//! `BLOCKWISE_CONTEXT` set, see [`in_worker`]) as its workers, which re-execute this binary
//! with `--exact <the test>` ([`runner`]), where `Runner::run` serves blocks and exits the
//! process. Blocks leave marker files `<task>.<grid index>.<pid>.<n>` ([`mark`]) in a
//! [`scratch`] directory that both sides compute from the test's name, so the scheduler side
//! can check that every block ran exactly once ([`assert_exactly_once`]) or which process ran
//! what ([`marks`]).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use blockwise::{Block, Progress, Runner, Task, WorkerOptions};

/// Whether this process is a worker of a test's run (its context variable is set).
pub(crate) fn in_worker() -> bool {
    std::env::var_os(blockwise::CONTEXT_ENV).is_some()
}

/// `CARGO_TARGET_TMPDIR/<area>/<name>`, emptied and created: a test's own directory.
pub(crate) fn empty_dir(area: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(area).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `CARGO_TARGET_TMPDIR/<area>/<file>`, its directory created and an old file of that name
/// removed.
#[cfg_attr(not(feature = "hdf5"), allow(dead_code))] // swmr.rs only, for now
pub(crate) fn fresh_file(area: &str, file: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(area);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    let _ = std::fs::remove_file(&path);
    path
}

/// A scratch directory for a test whose blocks may run in worker processes, with a `markers`
/// directory for [`mark`]; emptied on the scheduler side only (its workers use it as it is).
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("processes")
        .join(name);
    if !in_worker() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("markers")).unwrap();
    }
    dir
}

/// A runner whose local workers re-execute this test binary, running only `test` (its full
/// name, `module::test`), with their logs in `dir/logs`.
pub(crate) fn runner(test: &str, dir: &Path) -> Runner {
    runner_on(test, dir, WorkerOptions::new())
}

/// [`runner`] on `workers` (a launcher and settings): its workers re-execute this test binary,
/// running only `test`, with their logs in `dir/logs`.
pub(crate) fn runner_on(test: &str, dir: &Path, workers: WorkerOptions) -> Runner {
    Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .workers(
            workers
                .worker_command(
                    std::env::current_exe().unwrap(),
                    ["--exact", test, "--nocapture", "--test-threads=1"],
                )
                .log_dir(dir.join("logs"))
                .handle_signals(false),
        )
}

static MARKS: AtomicU64 = AtomicU64::new(0);

/// Records that this process ran `block`, in the [`scratch`] directory `dir`.
pub(crate) fn mark(dir: &Path, block: &Block) -> std::io::Result<()> {
    let n = MARKS.fetch_add(1, Ordering::SeqCst);
    let name = format!(
        "{}.{}.{}.{n}",
        block.task_id(),
        block.grid_index(),
        std::process::id()
    );
    std::fs::File::create_new(dir.join("markers").join(name)).map(drop)
}

/// `(task, grid index) -> pids that ran it`, from the markers in `dir`.
pub(crate) fn marks(dir: &Path) -> BTreeMap<(String, u64), Vec<u32>> {
    let mut out: BTreeMap<(String, u64), Vec<u32>> = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("markers")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let parts: Vec<&str> = name.rsplitn(4, '.').collect();
        let (pid, grid, task) = (parts[1], parts[2], parts[3]);
        out.entry((task.to_owned(), grid.parse().unwrap()))
            .or_default()
            .push(pid.parse().unwrap());
    }
    out
}

/// Every block of `task` ran exactly once (one marker each, and no other).
pub(crate) fn assert_exactly_once(dir: &Path, task: &Task) {
    let m = marks(dir);
    for g in 0..task.num_blocks() {
        let pids = m.get(&(task.task_id().to_owned(), g));
        assert_eq!(
            pids.map(Vec::len),
            Some(1),
            "block {g} of {} ran {pids:?}",
            task.task_id()
        );
    }
    let n = m.keys().filter(|(t, _)| t == task.task_id()).count() as u64;
    assert_eq!(n, task.num_blocks());
}

/// Declares a child-process entry point: `name` is not a test of its own but the program of a
/// process that a test starts by running this binary again as `<exe> --exact <module>::<name>`
/// with the environment variable `VAR` set; it then runs the function `body`. `name` is a
/// `#[test]` only so that the harness can start it by name: in a normal test run the variable
/// is not set, and it returns at once, passing. (The names start with `zz_`, which lists them
/// last.)
///
/// ```ignore
/// // Runs `child_intruder()` when BLOCKWISE_TEST_ROLE is `intruder`.
/// child_main!(zz_child_intruder: "BLOCKWISE_TEST_ROLE" = "intruder" => child_intruder);
/// // Runs `crash_child(dir)` with the value of BLOCKWISE_CRASH_DIR when it is set.
/// child_main!(zz_crash_child: "BLOCKWISE_CRASH_DIR" => crash_child);
/// ```
///
/// `body` returns `()` or a `Result<(), E>`, whose error fails the child like a test's.
macro_rules! child_main {
    ($name:ident: $var:literal = $value:literal => $body:ident) => {
        #[test]
        fn $name() {
            if std::env::var($var).as_deref() == Ok($value) {
                $crate::support::ChildOutcome::check($body());
            }
        }
    };
    ($name:ident: $var:literal => $body:ident) => {
        #[test]
        fn $name() {
            if let Ok(value) = std::env::var($var) {
                $crate::support::ChildOutcome::check($body(value));
            }
        }
    };
}
pub(crate) use child_main;

/// What the body of a [`child_main!`] entry point returns: nothing, or a `Result` whose error
/// fails the child process.
pub(crate) trait ChildOutcome {
    /// Panics on an error, as the test harness fails a test that returns one.
    fn check(self);
}

impl ChildOutcome for () {
    fn check(self) {}
}

impl<E: std::fmt::Debug> ChildOutcome for Result<(), E> {
    fn check(self) {
        if let Err(e) = self {
            panic!("Error: {e:?}");
        }
    }
}

/// Whether process `pid` runs (exists and is not a zombie: an exited process whose entry
/// remains until it is reaped).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills this process with SIGKILL (a crash child's crash), never returning.
#[cfg_attr(not(feature = "zarr"), allow(dead_code))] // resume.rs and pyramid.rs only
pub(crate) fn kill_self() {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    std::thread::sleep(std::time::Duration::from_secs(60));
}

/// Waits for a child for at most `limit`; a child still running then is killed and the test
/// fails with its stderr.
#[cfg_attr(not(feature = "zarr"), allow(dead_code))] // resume.rs and pyramid.rs only
pub(crate) fn wait_with_timeout(
    mut child: std::process::Child,
    limit: std::time::Duration,
) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the crash child hung: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
