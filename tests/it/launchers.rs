//! Batch launchers against fake `sbatch`/`bsub`/`qsub` (and their status and cancel commands)
//! on `PATH`: the fakes start the job script in the background, answer status queries from
//! `kill -0`, and record every call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blockwise::launch::{Batch, BatchSystem, JobState, LaunchError, Launcher, WorkerSpec};
use blockwise::{Block, BlockError, Roi, Task, WorkerOptions};

use crate::support::{assert_exactly_once, mark, runner_on, scratch};

const COMMON: &str = r#"#!/bin/bash
here="$(cd "$(dirname "$0")" && pwd)"
echo "$(basename "$0") $*" >> "$here/calls.log"
# Running, and not a zombie waiting to be reaped.
alive() { kill -0 "$1" 2>/dev/null && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; }
# Starts a job script in its own session, its output where the script's directives say.
start() { # $1 script, $2 directive prefix
  out=$(sed -n "s|^$2 -o ||p" "$1"); err=$(sed -n "s|^$2 -e ||p" "$1")
  setsid bash "$1" > "${out:-/dev/null}" 2> "${err:-/dev/null}" < /dev/null &
  echo $! >> "$here/jobs"
  job=$!
}
"#;

fn fakes(system: BatchSystem) -> Vec<(&'static str, &'static str)> {
    match system {
        BatchSystem::Slurm => vec![
            ("sbatch", r#"start "${@: -1}" '#SBATCH'; echo "$job""#),
            (
                "squeue",
                r#"id=$3; if alive "$id"; then echo RUNNING; else echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; fi"#,
            ),
            (
                "scancel",
                r#"if alive "$1"; then kill -9 -- "-$1"; else echo "scancel: error: Kill job error on job id $1: Invalid job id specified" >&2; exit 1; fi"#,
            ),
        ],
        BatchSystem::Lsf => vec![
            (
                "bsub",
                r#"script=$(mktemp "$here/stdin.XXXXXX"); cat > "$script"; start "$script" '#BSUB'; echo "Job <$job> is submitted to queue <normal>.""#,
            ),
            (
                "bjobs",
                r#"id=${@: -1}; if alive "$id"; then echo RUN; else echo "Job <$id> is not found" >&2; exit 255; fi"#,
            ),
            (
                "bkill",
                r#"if alive "$1"; then kill -9 -- "-$1"; echo "Job <$1> is being terminated"; else echo "Job <$1>: Job has already finished" >&2; exit 255; fi"#,
            ),
        ],
        BatchSystem::Pbs => vec![
            ("qsub", r#"start "${@: -1}" '#PBS'; echo "$job.fakeserver""#),
            (
                "qstat",
                r#"id=${1%%.*}; if alive "$id"; then printf 'Job id            Name             User              Time Use S Queue\n----------------  ---------------- ----------------  -------- - -----\n%s  blockwise        root              00:00:00 R workq\n' "$1"; else echo "qstat: Unknown Job Id $1" >&2; exit 153; fi"#,
            ),
            (
                "qdel",
                r#"id=${1%%.*}; if alive "$id"; then kill -9 -- "-$id"; else echo "qdel: Unknown Job Id $1" >&2; exit 153; fi"#,
            ),
        ],
        BatchSystem::Sge => vec![
            (
                "qsub",
                r#"start "${@: -1}" '#\$'; echo "Your job $job (\"blockwise\") has been submitted""#,
            ),
            (
                "qstat",
                r#"echo 'job-ID  prior   name       user         state submit/start at     queue          slots ja-task-ID'; echo '-----------------------------------------------------------------'; for id in $(cat "$here/jobs" 2>/dev/null); do if alive "$id"; then echo "  $id 0.55500 blockwise  root         r     11/24/2026 21:00:00 all.q@vm       1"; fi; done"#,
            ),
            (
                "qdel",
                r#"if alive "$1"; then kill -9 -- "-$1"; echo "root has deleted job $1"; else echo "denied: job \"$1\" does not exist" >&2; exit 1; fi"#,
            ),
        ],
    }
}

/// A directory with the system's fake commands.
pub(crate) fn fake_bin(dir: &Path, system: BatchSystem) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join(format!("fake-{system}"));
    std::fs::create_dir_all(&bin).unwrap();
    for (name, body) in fakes(system) {
        let path = bin.join(name);
        std::fs::write(&path, format!("{COMMON}{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn submit_status_cancel(system: BatchSystem) {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_bin(dir.path(), system);
    let launcher = Batch::new(system).bin_dir(&bin);
    let ran = dir.path().join("ran");
    let mut spec = WorkerSpec::new(
        format!("blockwise-{system}-0"),
        "/bin/sh",
        dir.path().join("logs/w.out"),
        dir.path().join("logs/w.err"),
    );
    spec.args = vec![
        "-c".into(),
        format!(
            "printf '%s\\n' \"$BLOCKWISE_TEST\" > {}; exec sleep 300",
            ran.display()
        )
        .into(),
    ];
    spec.env = vec![(
        "BLOCKWISE_TEST".into(),
        r#"it's a "test" $HOME `x` \n"#.into(),
    )];
    let job = launcher.submit(&spec).unwrap();
    wait_for("the job to run", || {
        std::fs::read_to_string(&ran).is_ok_and(|s| !s.is_empty())
    });
    // The environment reached the job literally, whatever its quotes and dollars.
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap(),
        "it's a \"test\" $HOME `x` \\n\n"
    );
    assert_eq!(launcher.status(&job).unwrap(), JobState::Running);
    launcher.cancel(&job).unwrap();
    wait_for("the job to end", || {
        !launcher.status(&job).unwrap().is_alive()
    });
    // Idempotent: cancelling a finished job is not an error.
    launcher.cancel(&job).unwrap();
    let calls = std::fs::read_to_string(bin.join("calls.log")).unwrap();
    let cancels = calls
        .lines()
        .filter(|l| {
            ["scancel", "bkill", "qdel"]
                .iter()
                .any(|c| l.starts_with(c))
                && l.ends_with(&job.0)
        })
        .count();
    assert_eq!(cancels, 2, "{calls}");
    // The script the system got is the one `render` shows.
    let script = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "sh"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(script.path()).unwrap(),
        launcher.render(&spec).unwrap()
    );
}

#[test]
fn slurm_submit_status_cancel_with_fake_commands() {
    submit_status_cancel(BatchSystem::Slurm);
}

#[test]
fn lsf_submit_status_cancel_with_fake_commands() {
    submit_status_cancel(BatchSystem::Lsf);
}

#[test]
fn pbs_submit_status_cancel_with_fake_commands() {
    submit_status_cancel(BatchSystem::Pbs);
}

#[test]
fn sge_submit_status_cancel_with_fake_commands() {
    submit_status_cancel(BatchSystem::Sge);
}

#[test]
fn a_failing_submit_command_reports_its_output() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        "#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = WorkerSpec::new(
        "w",
        "/bin/true",
        dir.path().join("w.out"),
        dir.path().join("w.err"),
    );
    let e = Batch::slurm().bin_dir(&bin).submit(&spec).unwrap_err();
    assert!(matches!(e, LaunchError::Command { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("invalid partition specified: gpu"), "{text}");
    assert!(text.contains("sbatch --parsable"), "{text}");
    // And a run whose workers cannot be submitted fails with that error, at once.
    let task = Task::builder(
        "t",
        Roi::new([0], [4]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(|_: &Block| Ok::<(), BlockError>(()))
    .build()
    .unwrap();
    let err = blockwise::Runner::new()
        .progress(blockwise::Progress::Never)
        .workers(
            WorkerOptions::launcher(Batch::slurm().bin_dir(&bin))
                .log_dir(dir.path().join("logs"))
                .handle_signals(false),
        )
        .run([task])
        .unwrap_err();
    assert!(err.to_string().contains("invalid partition"), "{err}");
}

#[test]
fn a_chained_run_through_a_fake_lsf_runs_every_block_once() {
    let dir = scratch("fake-lsf");
    let d = dir.clone();
    let a = Task::builder(
        "a",
        Roi::new([0], [30]),
        Roi::new([0], [3]),
        Roi::new([0], [3]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .num_workers(2)
    .build()
    .unwrap();
    let d = dir.clone();
    let b = Task::builder(
        "b",
        Roi::new([0], [30]),
        Roi::new([-3], [12]),
        Roi::new([0], [6]),
    )
    .fit(blockwise::Fit::Shrink)
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .upstream(&a)
    .build()
    .unwrap();
    // Only the scheduler side writes the fakes: its workers run this function too (up to
    // `run`), and rewriting a script while the scheduler runs it would break that submission.
    let bin = if crate::support::in_worker() {
        dir.join("fake-lsf")
    } else {
        fake_bin(&dir, BatchSystem::Lsf)
    };
    let summary = runner_on(
        "launchers::a_chained_run_through_a_fake_lsf_runs_every_block_once",
        &dir,
        WorkerOptions::launcher(
            Batch::lsf()
                .bin_dir(&bin)
                .poll_interval(Duration::from_millis(100)),
        )
        .advertise_host("127.0.0.1"),
    )
    .run([b.clone()])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_exactly_once(&dir, &a);
    assert_exactly_once(&dir, &b);
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert!(jobs.lines().all(|l| l.starts_with("lsf ")), "{jobs}");
    assert_eq!(jobs.lines().count(), 3, "{jobs}");
    // Every job the run submitted was cancelled or had ended by the time it returned.
    for line in jobs.lines() {
        let pid: i32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        wait_for("the worker to be reaped", || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
        });
    }
}
