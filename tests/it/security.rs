//! Hardening of the worker transport (issue 12): what unauthenticated peers can cost the
//! scheduler, file descriptors, who can read the token, TLS, and a paused scheduler.
//!
//! Scenarios that measure or limit the scheduler's own process run it as a child: the test
//! binary re-executes itself with `BLOCKWISE_TEST_ROLE=driver` (`--exact <this test>`), and the
//! driver's workers re-execute it once more (with `BLOCKWISE_CONTEXT`). The test itself plays
//! the attacker (or the operator sending SIGSTOP) and checks the driver from outside.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blockwise::launch::{BatchSystem, JobId, JobState, LaunchError, Launcher, Local, WorkerSpec};
use blockwise::{Block, BlockError, Progress, Roi, Task, WorkerOptions};

use crate::support::{assert_exactly_once, in_worker, mark, marks, runner_on};

const ROLE: &str = "BLOCKWISE_TEST_ROLE";

fn is_driver() -> bool {
    std::env::var(ROLE).as_deref() == Ok("driver")
}

/// A scratch directory, emptied by the test itself only (not by its driver or workers).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("security")
        .join(name);
    if !in_worker() && !is_driver() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("markers")).unwrap();
    }
    dir
}

/// The driver's process; killed if the test fails before it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Driver {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

/// Starts this test again as the driver (the scheduler), optionally under `prlimit` limits.
fn spawn_driver(test: &str, dir: &Path, prlimit: Option<&str>) -> Driver {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match prlimit {
        Some(limits) => {
            let mut c = Command::new("prlimit");
            c.arg(limits).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE, "driver")
        .env("RUST_LOG", "blockwise=info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("driver.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("driver.err")).unwrap());
    Driver(cmd.spawn().unwrap())
}

/// Waits (bounded) for `f`.
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(driver: &mut Driver, dir: &Path) -> String {
    let child = &mut driver.0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = std::fs::read_to_string(dir.join("driver.out")).unwrap_or_default();
            let err = std::fs::read_to_string(dir.join("driver.err")).unwrap_or_default();
            assert!(status.success(), "driver failed ({status}):\n{out}\n{err}");
            return format!("{out}\n{err}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let err = std::fs::read_to_string(dir.join("driver.err")).unwrap_or_default();
            panic!("the driver did not finish:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// In a worker: the scheduler's address, from the context.
fn scheduler_addr() -> String {
    let ctx: serde_json::Value =
        serde_json::from_str(&std::env::var(blockwise::CONTEXT_ENV).unwrap()).unwrap();
    ctx["addr"].as_str().unwrap().to_owned()
}

/// The worker that runs the first block publishes the scheduler's address and holds that block
/// until the test opens `gate`, so the run is in flight while the test attacks it.
fn gated_task(dir: &Path, blocks: i64, workers: usize, die_after_gate: bool) -> Task {
    let d = dir.to_path_buf();
    Task::builder(
        "gated",
        Roi::new([0], [blocks]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        if b.grid_index() == 0 {
            std::fs::write(d.join("addr.tmp"), scheduler_addr())?;
            std::fs::rename(d.join("addr.tmp"), d.join("addr"))?;
            let deadline = Instant::now() + Duration::from_secs(90);
            while !d.join("gate").exists() {
                if Instant::now() > deadline {
                    return Err("the test never opened the gate".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if die_after_gate && std::fs::File::create_new(d.join("killed")).is_ok() {
                let me = nix::unistd::getpid();
                let _ = nix::sys::signal::kill(me, nix::sys::signal::Signal::SIGKILL);
            }
        }
        Ok(mark(&d, b)?)
    })
    .num_workers(workers)
    .build()
    .unwrap()
}

fn read_addr(dir: &Path) -> String {
    wait_for("the scheduler's address", Duration::from_secs(60), || {
        dir.join("addr").exists()
    });
    std::fs::read_to_string(dir.join("addr")).unwrap()
}

fn driver_runs(
    test: &str,
    dir: &Path,
    task: Task,
    workers: impl Fn(WorkerOptions) -> WorkerOptions,
) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let summary = runner_on(test, dir, workers(WorkerOptions::new()))
        .run([task.clone()])
        .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_exactly_once(dir, &task);
    println!("DRIVER OK");
}

#[test]
fn two_hundred_connections_announcing_16_mib_cost_the_scheduler_little_memory() {
    const TEST: &str =
        "security::two_hundred_connections_announcing_16_mib_cost_the_scheduler_little_memory";
    let dir = scratch("flood");
    let task = gated_task(&dir, 50, 2, false);
    if in_worker() || is_driver() {
        return driver_runs(TEST, &dir, task, |r| r);
    }
    let mut driver = spawn_driver(TEST, &dir, None);
    let addr = read_addr(&dir);
    let before = status_kib(driver.id(), "VmHWM:");
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(&(16u32 << 20).to_be_bytes()).unwrap();
        // The server may already have closed it.
        let _ = s.write_all(b"{");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        conns.push(s);
    }
    // Each is closed at once: its announced frame is over the limit before a hello.
    for mut s in conns {
        let mut buf = [0u8; 16];
        let closed = match s.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(
            closed,
            "a connection announcing 16 MiB before its hello stayed open"
        );
    }
    let after = status_kib(driver.id(), "VmHWM:");
    let grown_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "scheduler peak RSS {before} KiB before, {after} KiB after 200 connections: +{grown_mib:.1} MiB"
    );
    assert!(grown_mib < 32.0, "the scheduler grew by {grown_mib:.1} MiB");
    std::fs::write(dir.join("gate"), "").unwrap();
    let out = wait_exit(&mut driver, &dir);
    assert!(out.contains("DRIVER OK"), "{out}");
    assert!(out.contains("exceeds the limit of 4096 bytes"), "{out}");
}

#[test]
fn idle_connections_filling_the_fd_limit_do_not_stop_a_worker_replacement() {
    const TEST: &str =
        "security::idle_connections_filling_the_fd_limit_do_not_stop_a_worker_replacement";
    let dir = scratch("fds");
    // After the gate, the worker that held block 0 dies once (SIGKILL of itself): its block is
    // retried and a replacement worker must start while idle peers hold connections.
    let task = gated_task(&dir, 40, 2, true);
    if in_worker() || is_driver() {
        // Idle peers hold their slots for the hello deadline; workers shut out meanwhile keep
        // trying. A short deadline keeps the test short.
        return driver_runs(TEST, &dir, task, |w| {
            w.hello_timeout(Duration::from_secs(2))
        });
    }
    let mut driver = spawn_driver(TEST, &dir, Some("--nofile=64:64"));
    let addr = read_addr(&dir);
    // 100 idle peers: they say nothing.
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::fs::write(dir.join("gate"), "").unwrap();
    let out = wait_exit(&mut driver, &dir);
    drop(idle);
    assert!(out.contains("DRIVER OK"), "{out}");
    assert!(
        out.contains("connections at once"),
        "shed connections are logged:\n{out}"
    );
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert!(
        jobs.lines().count() >= 3,
        "the killed worker was replaced:\n{jobs}"
    );
}

/// A launcher that fails its first `failures` submissions as a process out of file
/// descriptors would, then starts local workers.
#[derive(Debug)]
struct Exhausted {
    inner: Local,
    failures: std::sync::atomic::AtomicU32,
}

impl Launcher for Exhausted {
    fn name(&self) -> &str {
        "exhausted"
    }
    fn render(&self, spec: &WorkerSpec) -> Result<String, LaunchError> {
        self.inner.render(spec)
    }
    fn submit(&self, spec: &WorkerSpec) -> Result<JobId, LaunchError> {
        use std::sync::atomic::Ordering;
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(LaunchError::Io {
                launcher: "exhausted".into(),
                context: format!("creating {}", spec.stdout.display()),
                source: std::io::Error::from_raw_os_error(nix::errno::Errno::EMFILE as i32),
            });
        }
        self.inner.submit(spec)
    }
    fn status(&self, job: &JobId) -> Result<JobState, LaunchError> {
        self.inner.status(job)
    }
    fn cancel(&self, job: &JobId) -> Result<(), LaunchError> {
        self.inner.cancel(job)
    }
    fn poll_interval(&self) -> Duration {
        self.inner.poll_interval()
    }
    fn runs_locally(&self) -> bool {
        true
    }
}

#[test]
fn a_worker_that_cannot_start_for_lack_of_file_descriptors_is_retried() {
    let dir = scratch("emfile");
    let d = dir.clone();
    let task = Task::builder(
        "t",
        Roi::new([0], [20]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .build()
    .unwrap();
    let summary = runner_on(
        "security::a_worker_that_cannot_start_for_lack_of_file_descriptors_is_retried",
        &dir,
        WorkerOptions::launcher(Exhausted {
            inner: Local::new(),
            failures: std::sync::atomic::AtomicU32::new(2),
        }),
    )
    .run([task.clone()])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_exactly_once(&dir, &task);
}

#[test]
fn a_paused_scheduler_keeps_its_healthy_workers() {
    const TEST: &str = "security::a_paused_scheduler_keeps_its_healthy_workers";
    let dir = scratch("sigstop");
    let d = dir.clone();
    let task = Task::builder(
        "slow",
        Roi::new([0], [60]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        std::thread::sleep(Duration::from_millis(40));
        Ok(mark(&d, b)?)
    })
    .num_workers(2)
    .build()
    .unwrap();
    if in_worker() || is_driver() {
        return driver_runs(TEST, &dir, task, |w| {
            w.heartbeat(Duration::from_millis(100), Duration::from_secs(2))
                .death_timeout(Duration::from_secs(60))
        });
    }
    let mut driver = spawn_driver(TEST, &dir, None);
    wait_for("a few blocks", Duration::from_secs(60), || {
        marks(&dir).len() >= 4
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(driver.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // The pause is the scenario: twice the silence timeout.
    std::thread::sleep(Duration::from_secs(4));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out = wait_exit(&mut driver, &dir);
    assert!(out.contains("DRIVER OK"), "{out}");
    let jobs = std::fs::read_to_string(dir.join("logs/jobs.txt")).unwrap();
    assert_eq!(
        jobs.lines().count(),
        2,
        "no worker is replaced:\n{jobs}\n{out}"
    );
    assert!(!out.contains("lost"), "no attempt is lost:\n{out}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir` (and `dir` itself and its subdirectories).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            for e in std::fs::read_dir(&out[i]).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}

#[test]
fn job_scripts_and_logs_are_private_and_cluster_traffic_is_encrypted() {
    let dir = scratch("private");
    let d = dir.clone();
    let task = Task::builder(
        "t",
        Roi::new([0], [30]),
        Roi::new([0], [3]),
        Roi::new([0], [3]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .num_workers(2)
    .build()
    .unwrap();
    let bin = if in_worker() {
        dir.join("fake-slurm")
    } else {
        crate::launchers::fake_bin(&dir, BatchSystem::Slurm)
    };
    let summary = runner_on(
        "security::job_scripts_and_logs_are_private_and_cluster_traffic_is_encrypted",
        &dir,
        WorkerOptions::launcher(
            blockwise::launch::Batch::slurm()
                .bin_dir(&bin)
                .poll_interval(Duration::from_millis(100)),
        )
        .advertise_host("127.0.0.1"),
    )
    .run([task.clone()])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_exactly_once(&dir, &task);
    let logs = dir.join("logs");
    let mut scripts = 0;
    for path in tree(&logs) {
        let m = mode(&path);
        if path.is_dir() {
            assert_eq!(m, 0o700, "{} is mode {m:o}", path.display());
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("BLOCKWISE_CONTEXT") {
            scripts += 1;
            assert_eq!(
                m,
                0o700,
                "{} holds the token and is mode {m:o}",
                path.display()
            );
            // Cluster launchers encrypt: the context carries the certificate's fingerprint.
            assert!(text.contains(r#""tls":""#), "{text}");
        }
    }
    assert_eq!(scripts, 2, "one script per worker");
}

#[test]
fn local_worker_logs_are_private_and_tls_can_be_forced_on_loopback() {
    let dir = scratch("local-tls");
    let d = dir.clone();
    let a = Task::builder(
        "a",
        Roi::new([0, 0], [24, 24]),
        Roi::new([0, 0], [4, 4]),
        Roi::new([0, 0], [4, 4]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .num_workers(2)
    .build()
    .unwrap();
    let d = dir.clone();
    let b = Task::builder(
        "b",
        Roi::new([0, 0], [24, 24]),
        Roi::new([-2, -2], [12, 12]),
        Roi::new([0, 0], [8, 8]),
    )
    .fit(blockwise::Fit::Shrink)
    .process(move |b: &Block| -> Result<(), BlockError> { Ok(mark(&d, b)?) })
    .upstream(&a)
    .num_workers(2)
    .build()
    .unwrap();
    let summary = runner_on(
        "security::local_worker_logs_are_private_and_tls_can_be_forced_on_loopback",
        &dir,
        WorkerOptions::new().tls(true),
    )
    .progress(Progress::Never)
    .run([b.clone()])
    .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_exactly_once(&dir, &a);
    assert_exactly_once(&dir, &b);
    let logs = dir.join("logs");
    assert_eq!(mode(&logs), 0o700);
    for path in tree(&logs).iter().filter(|p| p.is_file()) {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
}
