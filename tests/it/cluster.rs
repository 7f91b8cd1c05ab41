//! A real SLURM cluster (single node, started by `.ci/slurm.sh`): workers are `sbatch` jobs that
//! connect back over TCP. Runs when `BLOCKWISE_SLURM=1` (CI sets it after starting the cluster);
//! without it the test says so and passes, as there is no cluster to talk to.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::time::Duration;

use blockwise::launch::Batch;
use blockwise::{Block, BlockError, Roi, Task, WorkerOptions};

use crate::support::{assert_exactly_once, mark, runner_on, scratch};

fn slurm_requested() -> bool {
    match std::env::var("BLOCKWISE_SLURM").as_deref() {
        Ok("1") => true,
        _ => {
            eprintln!(
                "BLOCKWISE_SLURM is not 1: no SLURM cluster to test against (see .ci/slurm.sh)"
            );
            false
        }
    }
}

/// Every job listed in `jobs` (a `jobs.txt`) leaves the SLURM queue within 30 s.
fn assert_left_the_queue(jobs: &str) {
    let ids: Vec<&str> = jobs
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let q = std::process::Command::new("squeue")
            .args(["-h", "-o", "%i"])
            .output()
            .unwrap();
        let queued = String::from_utf8_lossy(&q.stdout).into_owned();
        if !queued.lines().any(|l| ids.contains(&l.trim())) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs still queued: {queued}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_chained_pipeline_runs_every_block_once_on_slurm_workers() {
    if !slurm_requested() {
        return;
    }
    let dir = scratch("slurm");
    let d = dir.clone();
    let a = Task::builder(
        "smooth",
        Roi::new([0, 0], [64, 64]),
        Roi::new([0, 0], [8, 8]),
        Roi::new([0, 0], [8, 8]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .num_workers(2)
    .build()
    .unwrap();
    let d = dir.clone();
    let b = Task::builder(
        "segment",
        Roi::new([0, 0], [64, 64]),
        Roi::new([-4, -4], [24, 24]),
        Roi::new([0, 0], [16, 16]),
    )
    .fit(blockwise::Fit::Shrink)
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .upstream(&a)
    .num_workers(2)
    .build()
    .unwrap();
    let launcher = Batch::slurm().poll_interval(Duration::from_millis(500));
    // What the jobs run, for the log of this test.
    let summary = runner_on(
        "cluster::a_chained_pipeline_runs_every_block_once_on_slurm_workers",
        &dir,
        // One node: the scheduler is on the same machine as the jobs.
        WorkerOptions::launcher(launcher).advertise_host("127.0.0.1"),
    )
    .run([b.clone()])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_exactly_once(&dir, &a);
    assert_exactly_once(&dir, &b);
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert_eq!(jobs.lines().count(), 4, "{jobs}");
    assert!(jobs.lines().all(|l| l.starts_with("slurm ")), "{jobs}");
    // The blocks ran in the SLURM jobs (their logs say so). Not necessarily in worker 0: a job
    // still pending when its task is done is cancelled before it runs.
    let outs: Vec<String> = (0..2)
        .map(|i| {
            std::fs::read_to_string(dir.join(format!("logs/smooth/worker_{i}.out")))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        outs.iter().any(|o| o.contains("running 1 test")),
        "{outs:?}"
    );
    // No job of the run is left in the queue.
    assert_left_the_queue(&jobs);
}

#[test]
fn workers_can_be_srun_job_steps() {
    if !slurm_requested() {
        return;
    }
    let dir = scratch("srun");
    let d = dir.clone();
    let task = Task::builder(
        "t",
        Roi::new([0], [40]),
        Roi::new([0], [4]),
        Roi::new([0], [4]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        // Only a SLURM step has these.
        std::env::var("SLURM_STEP_ID").map_err(|_| "not in a SLURM job step")?;
        Ok(mark(&d, b)?)
    })
    .num_workers(2)
    .build()
    .unwrap();
    let summary = runner_on(
        "cluster::workers_can_be_srun_job_steps",
        &dir,
        WorkerOptions::launcher(blockwise::launch::Local::srun()).advertise_host("127.0.0.1"),
    )
    .run([task.clone()])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_exactly_once(&dir, &task);
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert!(jobs.lines().all(|l| l.starts_with("srun ")), "{jobs}");
}

/// other_seeds.md §7 behaviour 1 on a cluster: an executor of 2 `sbatch` workers maps
/// `x ↦ x + 1` over `[1, 2, 3]` to `[2, 3, 4]`, the items run inside SLURM jobs, and dropping the
/// executor leaves no job in the queue.
#[test]
fn an_executor_of_two_slurm_workers_maps_in_order() {
    if !slurm_requested() {
        return;
    }
    let dir = scratch("slurm-executor");
    let inc = blockwise::exec::Function::new("inc", |x: u64| {
        // Only a SLURM job has this.
        std::env::var("SLURM_JOB_ID").map_err(|_| "not in a SLURM job")?;
        Ok::<u64, String>(x + 1)
    });
    let test = "cluster::an_executor_of_two_slurm_workers_maps_in_order";
    let ex = blockwise::exec::Executor::processes(2)
        .workers(
            WorkerOptions::launcher(Batch::slurm().poll_interval(Duration::from_millis(500)))
                .worker_command(
                    std::env::current_exe().unwrap(),
                    ["--exact", test, "--nocapture", "--test-threads=1"],
                )
                .log_dir(dir.join("logs"))
                .advertise_host("127.0.0.1")
                .handle_signals(false),
        )
        .function(&inc)
        .start()
        .unwrap();
    assert_eq!(ex.map(inc.clone(), [1, 2, 3]).unwrap(), vec![2, 3, 4]);
    let many: u64 = ex.map(inc, 0..200u64).unwrap().into_iter().sum();
    assert_eq!(many, 200 * 201 / 2);
    assert!(ex.wait_for_workers(2, Duration::from_secs(120)));
    drop(ex);
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert!(jobs.lines().all(|l| l.starts_with("slurm ")), "{jobs}");
    assert_eq!(jobs.lines().count(), 2, "{jobs}");
    assert_left_the_queue(&jobs);
}

/// The SLURM job ids of `task`'s workers, from the run's `jobs.txt`.
fn jobs_of(dir: &std::path::Path, task: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join("logs/jobs.txt"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(task))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

fn queued(ids: &[String]) -> bool {
    let q = std::process::Command::new("squeue")
        .args(["-h", "-o", "%i"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    q.lines().any(|l| ids.iter().any(|id| id == l.trim()))
}

#[test]
fn a_finished_tasks_slurm_jobs_leave_the_queue_while_the_next_task_runs() {
    if !slurm_requested() {
        return;
    }
    // `down` follows `up` block by block, so its last block becomes ready only when `up` is
    // done; that block then waits (up to 60 s) until no job of `up` is in the queue.
    let dir = scratch("slurm_release");
    let d = dir.clone();
    let up = Task::builder(
        "up",
        Roi::new([0], [4]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .read_write_conflict(false)
    .build()
    .unwrap();
    let d = dir.clone();
    let down = Task::builder(
        "down",
        Roi::new([0], [4]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        if b.grid_index() == 3 {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let ids = jobs_of(&d, "up");
                if !ids.is_empty() && !queued(&ids) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(format!("the jobs of up ({ids:?}) stayed in the queue").into());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(mark(&d, b)?)
    })
    .read_write_conflict(false)
    .upstream(&up)
    .max_retries(0)
    .build()
    .unwrap();
    let summary = runner_on(
        "cluster::a_finished_tasks_slurm_jobs_leave_the_queue_while_the_next_task_runs",
        &dir,
        WorkerOptions::launcher(Batch::slurm().poll_interval(Duration::from_millis(500)))
            .advertise_host("127.0.0.1"),
    )
    .run([down.clone()])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_exactly_once(&dir, &up);
    assert_exactly_once(&dir, &down);
}
