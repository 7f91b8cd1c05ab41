//! The local launcher: worker processes as children of the scheduler's process.

use std::collections::HashMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{JobId, JobState, LaunchError, Launcher, WorkerSpec, shell_quote};

/// Starts each worker as a child process of the scheduler, in its own process group, with its
/// standard output and error written to the spec's log files. The job id is the PID; cancelling
/// sends SIGKILL to the worker's process group (so whatever the worker started goes too) and
/// reaps it.
///
/// ```
/// use blockwise::launch::{Launcher, Local, WorkerSpec};
///
/// let mut spec = WorkerSpec::new(
///     "blockwise-demo-0",
///     "/usr/bin/my-pipeline",
///     "logs/demo/worker_0.out",
///     "logs/demo/worker_0.err",
/// );
/// spec.args = vec!["--fast".into()];
/// spec.env = vec![("BLOCKWISE_CONTEXT".into(), r#"{"task_id":"demo"}"#.into())];
/// assert_eq!(
///     Local::new().render(&spec).unwrap(),
///     r#"BLOCKWISE_CONTEXT='{"task_id":"demo"}' /usr/bin/my-pipeline --fast > logs/demo/worker_0.out 2> logs/demo/worker_0.err"#
/// );
/// ```
///
/// What a worker needs ([`WorkerSpec::resources`]) is not requested from anything: a local
/// worker shares this machine (the runner's resource budget is what limits them).
///
/// [`Local::wrapped`] starts each worker under a wrapper command instead, such as `srun` inside
/// a SLURM allocation ([`Local::srun`]): the job id is the wrapper's PID, and cancelling sends it
/// SIGTERM (which `srun` forwards to its job step), then SIGKILL after a grace period.
#[derive(Debug, Default)]
pub struct Local {
    children: Mutex<HashMap<u32, Child>>,
    wrapper: Vec<String>,
}

/// How long a wrapped worker gets to stop after SIGTERM.
const GRACE: Duration = Duration::from_secs(3);

impl Local {
    /// A local launcher.
    #[must_use]
    pub fn new() -> Local {
        Local::default()
    }

    /// Starts every worker as `wrapper... program args...`; the first word names the launcher.
    ///
    /// ```
    /// use blockwise::launch::{Launcher, Local};
    ///
    /// let l = Local::wrapped(["nice", "-n", "10"]);
    /// assert_eq!(l.name(), "nice");
    /// ```
    #[must_use]
    pub fn wrapped<S: Into<String>>(wrapper: impl IntoIterator<Item = S>) -> Local {
        Local {
            children: Mutex::default(),
            wrapper: wrapper.into_iter().map(Into::into).collect(),
        }
    }

    /// Workers as SLURM job steps, `srun --nodes=1 --ntasks=1 --kill-on-bad-exit=1 ...`, for a
    /// program that already runs inside an allocation (`salloc`, or a batch script); outside one,
    /// each `srun` makes its own one-step job. Steps may run on any node of the allocation, so
    /// the scheduler listens on all interfaces.
    #[must_use]
    pub fn srun() -> Local {
        Local::wrapped(["srun", "--nodes=1", "--ntasks=1", "--kill-on-bad-exit=1"])
    }

    fn io(context: String, source: std::io::Error) -> LaunchError {
        LaunchError::Io {
            launcher: "local".into(),
            context,
            source,
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("killed by signal {signal} ({s})"),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => status.to_string(),
    }
}

impl Launcher for Local {
    fn name(&self) -> &str {
        self.wrapper.first().map_or("local", String::as_str)
    }

    fn render(&self, spec: &WorkerSpec) -> Result<String, LaunchError> {
        let mut words: Vec<String> = Vec::new();
        if let Some(dir) = &spec.workdir {
            words.push(format!("cd {} &&", shell_quote(&dir.to_string_lossy())));
        }
        for (k, v) in &spec.env {
            words.push(format!("{k}={}", shell_quote(v)));
        }
        words.extend(self.wrapper.iter().map(|w| shell_quote(w)));
        words.push(shell_quote(&spec.program.to_string_lossy()));
        words.extend(spec.args.iter().map(|a| shell_quote(&a.to_string_lossy())));
        words.push(format!(
            "> {} 2> {}",
            shell_quote(&spec.stdout.to_string_lossy()),
            shell_quote(&spec.stderr.to_string_lossy())
        ));
        Ok(words.join(" "))
    }

    fn submit(&self, spec: &WorkerSpec) -> Result<JobId, LaunchError> {
        for path in [&spec.stdout, &spec.stderr] {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                super::private_dir(dir)
                    .map_err(|e| Local::io(format!("creating {}", dir.display()), e))?;
            }
        }
        let out = super::private_file(&spec.stdout)
            .map_err(|e| Local::io(format!("creating {}", spec.stdout.display()), e))?;
        let err = super::private_file(&spec.stderr)
            .map_err(|e| Local::io(format!("creating {}", spec.stderr.display()), e))?;
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&spec.program);
                c
            }
            None => Command::new(&spec.program),
        };
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        if let Some(dir) = &spec.workdir {
            cmd.current_dir(dir);
        }
        let child = super::spawn(&mut cmd).map_err(|source| LaunchError::Spawn {
            launcher: "local".into(),
            command: self
                .wrapper
                .first()
                .cloned()
                .unwrap_or_else(|| spec.program.display().to_string()),
            source,
        })?;
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pid, child);
        tracing::debug!(pid, name = %spec.name, "started local worker");
        Ok(JobId(pid.to_string()))
    }

    fn status(&self, job: &JobId) -> Result<JobState, LaunchError> {
        let Ok(pid) = job.0.parse::<u32>() else {
            return Ok(JobState::Finished {
                detail: format!("unknown job {job}"),
            });
        };
        let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(child) = children.get_mut(&pid) else {
            return Ok(JobState::Finished {
                detail: "not a child of this launcher (already reaped)".into(),
            });
        };
        match child.try_wait() {
            Ok(None) => Ok(JobState::Running),
            Ok(Some(status)) => Ok(JobState::Finished {
                detail: describe(status),
            }),
            Err(e) => Err(Local::io(format!("waiting for process {pid}"), e)),
        }
    }

    fn cancel(&self, job: &JobId) -> Result<(), LaunchError> {
        let Ok(pid) = job.0.parse::<u32>() else {
            return Ok(());
        };
        let child = self
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pid);
        let Some(mut child) = child else {
            return Ok(());
        };
        if let Ok(Some(_)) = child.try_wait() {
            // Already exited and now reaped: its PID may be reused, so signal nothing.
            return Ok(());
        }
        if !self.wrapper.is_empty()
            && let Ok(raw) = i32::try_from(pid)
        {
            // Let the wrapper (srun) stop what it started.
            let _ = killpg(Pid::from_raw(raw), Signal::SIGTERM);
            let deadline = std::time::Instant::now() + GRACE;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Ok(raw) = i32::try_from(pid) {
            match killpg(Pid::from_raw(raw), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => tracing::warn!(pid, "killing process group {pid}: {e}"),
            }
        }
        // The group leader is our child: kill it directly too (in case it left its group),
        // then reap it so it does not linger as a zombie.
        let _ = child.kill();
        child
            .wait()
            .map_err(|e| Local::io(format!("reaping process {pid}"), e))?;
        Ok(())
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(50)
    }

    fn runs_locally(&self) -> bool {
        self.wrapper.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn spec(dir: &std::path::Path, script: &str) -> WorkerSpec {
        WorkerSpec {
            name: "t".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("BLOCKWISE_TEST_VAR".into(), "hello world".into())],
            workdir: None,
            stdout: dir.join("logs/t/worker_0.out"),
            stderr: dir.join("logs/t/worker_0.err"),
            resources: Vec::new(),
        }
    }

    fn wait_finished(l: &Local, job: &JobId) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match l.status(job) {
                Ok(JobState::Finished { detail }) => return detail,
                Ok(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => panic!("job did not finish: {other:?}"),
            }
        }
    }

    #[test]
    fn runs_with_env_and_log_files_and_reports_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let l = Local::new();
        let job = l
            .submit(&spec(
                dir.path(),
                "echo out:$BLOCKWISE_TEST_VAR; echo err >&2; exit 3",
            ))
            .unwrap();
        assert_eq!(wait_finished(&l, &job), "exit code 3");
        let out = std::fs::read_to_string(dir.path().join("logs/t/worker_0.out")).unwrap();
        assert_eq!(out, "out:hello world\n");
        let err = std::fs::read_to_string(dir.path().join("logs/t/worker_0.err")).unwrap();
        assert_eq!(err, "err\n");
        l.cancel(&job).unwrap();
        l.cancel(&job).unwrap();
    }

    #[test]
    fn cancel_kills_the_process_group_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let l = Local::new();
        // A child that starts a grandchild; both must die.
        let job = l.submit(&spec(dir.path(), "sleep 300 & wait")).unwrap();
        assert_eq!(l.status(&job).unwrap(), JobState::Running);
        l.cancel(&job).unwrap();
        assert!(!l.status(&job).unwrap().is_alive());
        l.cancel(&job).unwrap();
        l.cancel(&JobId("not a pid".into())).unwrap();
    }

    #[test]
    fn reports_signals() {
        let dir = tempfile::tempdir().unwrap();
        let l = Local::new();
        let job = l.submit(&spec(dir.path(), "kill -9 $$")).unwrap();
        assert_eq!(wait_finished(&l, &job), "killed by signal 9 (SIGKILL)");
    }

    #[test]
    fn wrapped_workers_run_under_the_wrapper_and_stop_on_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        // A wrapper that traps SIGTERM to clean up, runs the worker, and then records it ran (after
        // the trap is set: a SIGTERM before it would end the wrapper without its clean-up).
        let wrapper = dir.path().join("wrap.sh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\ntrap 'echo term > {0}/term; kill $child; exit 143' TERM\n\"$@\" & child=$!\necho wrapped > {0}/wrapped\nwait $child\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let l = Local::wrapped(["/bin/sh".to_owned(), wrapper.display().to_string()]);
        assert_eq!(l.name(), "/bin/sh");
        assert!(!l.runs_locally());
        let job = l.submit(&spec(dir.path(), "exec sleep 300")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.path().join("wrapped").exists() {
            assert!(Instant::now() < deadline, "the wrapper did not run");
            std::thread::sleep(Duration::from_millis(10));
        }
        l.cancel(&job).unwrap();
        assert!(!l.status(&job).unwrap().is_alive());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("term")).unwrap(),
            "term\n"
        );
        let rendered = l.render(&spec(dir.path(), "x")).unwrap();
        assert!(
            rendered.contains(&format!("/bin/sh {} /bin/sh -c x", wrapper.display())),
            "{rendered}"
        );
    }

    #[test]
    fn resources_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let l = Local::new();
        let plain = spec(dir.path(), "echo ran");
        let mut needy = plain.clone();
        needy.resources = vec![("gpu".into(), 2), ("fpga".into(), 1)];
        assert_eq!(l.render(&needy).unwrap(), l.render(&plain).unwrap());
        assert!(!l.assigns_devices("gpu"));
        let job = l.submit(&needy).unwrap();
        assert_eq!(wait_finished(&l, &job), "exit code 0");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), "");
        s.program = dir.path().join("no-such-program");
        let e = Local::new().submit(&s).unwrap_err();
        assert!(e.to_string().contains("no-such-program"), "{e}");
    }
}
