//! Launchers: how worker processes are started, watched and stopped.
//!
//! A process runner (see [`Runner::processes`](crate::Runner::processes)) never talks to a
//! cluster directly: it asks a [`Launcher`] to start one worker process per [`WorkerSpec`], polls
//! [`Launcher::status`] for workers that have not (or no longer) connected, and calls
//! [`Launcher::cancel`] for every job it submitted when the run ends, fails or is interrupted.
//! The started process finds everything else (the scheduler's address, the run's token, its task)
//! in the `BLOCKWISE_CONTEXT` environment variable of the spec and connects back over TCP.
//!
//! Backends:
//!
//! * [`Local`]: a child process of the scheduler (job id = PID, cancel = SIGKILL to its process
//!   group).
//! * [`Batch`]: a batch script submitted to SLURM (`sbatch`), LSF (`bsub`), PBS (`qsub`) or SGE
//!   (`qsub`), with [`Resources`] rendered as that system's directives and memory units;
//!   [`Launcher::render`] shows the exact script.
//! * [`CommandTemplate`]: user-given submit/status/cancel commands and a job-id regex, for any
//!   other system or site wrapper.

mod batch;
mod command;
mod local;
mod units;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use batch::{Batch, BatchSystem};
pub use command::CommandTemplate;
pub use local::Local;
pub use units::{LsfUnit, format_memory, format_walltime};

/// One worker process to start: what to run, with which environment, where its output goes,
/// and what it needs.
///
/// Build it with [`WorkerSpec::new`] and set the other fields; new fields may be added in later
/// versions (the struct is `#[non_exhaustive]`), with defaults that keep today's behaviour.
///
/// ```
/// use blockwise::launch::WorkerSpec;
///
/// let mut spec = WorkerSpec::new("blockwise-predict-0", "/opt/bin/pipeline", "logs/w0.out", "logs/w0.err");
/// spec.args = vec!["--config".into(), "run.toml".into()];
/// spec.resources = vec![("gpu".into(), 1), ("cpu".into(), 4)];
/// assert_eq!(spec.units("gpu"), 1);
/// assert_eq!(spec.units("fpga"), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerSpec {
    /// A job name (for the cluster's queue listing), e.g. `blockwise-smooth-3`.
    pub name: String,
    /// The program to run (by default the current executable).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment variables to set for it, in order (always includes `BLOCKWISE_CONTEXT`).
    pub env: Vec<(String, String)>,
    /// The working directory (default: the scheduler's).
    pub workdir: Option<PathBuf>,
    /// Where the worker's standard output goes (truncated at start).
    pub stdout: PathBuf,
    /// Where the worker's standard error goes (truncated at start).
    pub stderr: PathBuf,
    /// What this one worker needs, in integer units of named resources (its task's
    /// requirement, e.g. `[("gpu", 1), ("cpu", 4)]`); empty (the default) asks for nothing
    /// beyond the launcher's own settings. Each name at most once; an entry with 0 units asks
    /// for nothing. [`Batch`] requests them as the system's directives (`gpu` as GPUs, `cpu`
    /// as the job's cores), [`CommandTemplate`] through placeholders of its submit command,
    /// [`Local`] ignores them.
    pub resources: Vec<(String, u64)>,
}

impl WorkerSpec {
    /// A spec running `program` without arguments, environment, working directory or
    /// resources, logging to `stdout` and `stderr`.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        stdout: impl Into<PathBuf>,
        stderr: impl Into<PathBuf>,
    ) -> WorkerSpec {
        WorkerSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            workdir: None,
            stdout: stdout.into(),
            stderr: stderr.into(),
            resources: Vec::new(),
        }
    }

    /// The units of `resource` this worker needs (0 when it is not listed).
    #[must_use]
    pub fn units(&self, resource: &str) -> u64 {
        self.resources
            .iter()
            .filter(|(name, _)| name == resource)
            .map(|(_, n)| *n)
            .sum()
    }
}

/// The resource a launcher places on devices (ids in `CUDA_VISIBLE_DEVICES`).
pub(crate) const GPU: &str = "gpu";

/// The resource that is a worker's CPU cores.
pub(crate) const CPU: &str = "cpu";

/// Whether `name` can be a resource name in a directive or placeholder: ASCII letters, digits,
/// `_`, `-`, `.`, not empty.
fn valid_resource_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// The resources of `spec` with units (entries of 0 units dropped), in order; each name checked
/// (see [`valid_resource_name`]) and listed once.
fn requested<'a>(launcher: &str, spec: &'a WorkerSpec) -> Result<Vec<(&'a str, u64)>, LaunchError> {
    let config = |reason: String| LaunchError::Config {
        launcher: launcher.to_owned(),
        reason,
    };
    let mut out: Vec<(&str, u64)> = Vec::new();
    for (i, (name, n)) in spec.resources.iter().enumerate() {
        if !valid_resource_name(name) {
            return Err(config(format!(
                "worker {:?}: resource name {name:?} is not valid (ASCII letters, digits, '_', '-', '.')",
                spec.name
            )));
        }
        if spec.resources[..i].iter().any(|(m, _)| m == name) {
            return Err(config(format!(
                "worker {:?}: resource {name:?} is listed twice",
                spec.name
            )));
        }
        if *n > 0 {
            out.push((name.as_str(), *n));
        }
    }
    Ok(out)
}

/// An identifier a launcher gave a submitted job (a PID, a SLURM job id, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a launcher knows about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Submitted, waiting in the queue.
    Pending,
    /// Running (or about to).
    Running,
    /// No longer running: exited, failed, cancelled or gone from the queue. `detail` says how
    /// when the system tells (`"exit code 1"`, `"killed by signal 9"`, `"EXIT"`, `"no longer in
    /// the queue"`).
    Finished {
        /// How the job ended, as far as the system says.
        detail: String,
    },
}

impl JobState {
    /// Whether the job may still run (pending or running).
    #[must_use]
    pub fn is_alive(&self) -> bool {
        matches!(self, JobState::Pending | JobState::Running)
    }
}

/// Cluster resources for one worker job. Every field is optional; unset fields produce no
/// directive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resources {
    /// CPU cores per worker.
    pub cores: Option<u32>,
    /// Memory per worker, in bytes (rendered in each system's units, rounded up).
    pub memory: Option<u64>,
    /// Wall-clock limit per job.
    pub walltime: Option<Duration>,
    /// SLURM partition, LSF/PBS/SGE queue.
    pub queue: Option<String>,
    /// Account (SLURM `-A`, PBS `-A`) or project (LSF `-P`, SGE `-P`).
    pub account: Option<String>,
    /// SGE parallel environment used for `cores` (`-pe <name> <cores>`).
    pub parallel_environment: Option<String>,
    /// Extra directive lines, without the prefix (e.g. `--gres=gpu:1` for SLURM).
    pub extra_directives: Vec<String>,
    /// Generated directive lines containing any of these substrings are left out (for sites that
    /// reject, say, `--mem`).
    pub skip_directives: Vec<String>,
    /// Shell lines run before the worker starts (module loads, environment activation).
    pub prologue: Vec<String>,
}

/// Errors of a launcher: the command, its output, what went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// A command could not be started (not installed, not on `PATH`).
    #[error("{launcher}: could not run `{command}`: {source}")]
    Spawn {
        /// The launcher's name.
        launcher: String,
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A command exited with an error.
    #[error("{launcher}: `{command}` failed ({status}); stdout: {stdout:?}; stderr: {stderr:?}")]
    Command {
        /// The launcher's name.
        launcher: String,
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// Its standard output.
        stdout: String,
        /// Its standard error.
        stderr: String,
    },
    /// A submit command succeeded but its output has no job id.
    #[error(
        "{launcher}: no job id in the output of `{command}` (looked for /{regex}/): {stdout:?}"
    )]
    NoJobId {
        /// The launcher's name.
        launcher: String,
        /// The command line.
        command: String,
        /// The regex used.
        regex: String,
        /// The command's standard output.
        stdout: String,
    },
    /// The launcher's configuration is invalid.
    #[error("{launcher}: {reason}")]
    Config {
        /// The launcher's name.
        launcher: String,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error (writing a script, opening a log file).
    #[error("{launcher}: {context}: {source}")]
    Io {
        /// The launcher's name.
        launcher: String,
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Starts, watches and stops worker processes.
///
/// Implementations must be cheap to call from the scheduler's driver thread: `submit` returns as
/// soon as the job is queued (it never waits for the job to run), and `cancel` is idempotent (a
/// job that already finished or was never known is not an error).
pub trait Launcher: Send + Sync + fmt::Debug {
    /// A short name for messages and the job list (`local`, `slurm`, ...).
    fn name(&self) -> &str;

    /// The exact script or command line `submit` would use for `spec`, so that users can see
    /// and debug it.
    ///
    /// # Errors
    ///
    /// Invalid resources for this system (for example cores on SGE without a parallel
    /// environment).
    fn render(&self, spec: &WorkerSpec) -> Result<String, LaunchError>;

    /// Starts (submits) one worker; returns its job id.
    ///
    /// # Errors
    ///
    /// The submit command is missing or fails, or its output has no job id.
    fn submit(&self, spec: &WorkerSpec) -> Result<JobId, LaunchError>;

    /// The job's current state.
    ///
    /// # Errors
    ///
    /// The status command is missing or fails in a way that says nothing about the job.
    fn status(&self, job: &JobId) -> Result<JobState, LaunchError>;

    /// Stops the job (kills it if it runs, removes it from the queue if it waits). Idempotent.
    ///
    /// # Errors
    ///
    /// The cancel command is missing or fails for a job that still exists.
    fn cancel(&self, job: &JobId) -> Result<(), LaunchError>;

    /// How often the runner may call [`Launcher::status`] per job (cluster queues should not be
    /// polled in a tight loop).
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Whether workers run on this machine (then the scheduler listens on loopback only, unless
    /// told otherwise).
    fn runs_locally(&self) -> bool {
        false
    }

    /// Whether the system this launcher submits to places the devices of `resource` itself
    /// when a worker asks for them in [`WorkerSpec::resources`]: for `"gpu"`, it chooses the
    /// worker's GPUs and sets `CUDA_VISIBLE_DEVICES` in the job, so the runner must leave that
    /// variable alone. False (the default) means the runner gives each worker device ids from
    /// its own pool.
    ///
    /// [`Batch`] says true for `gpu` (SLURM, LSF and PBS set `CUDA_VISIBLE_DEVICES` for the
    /// GPUs they allocate; see [`Batch`] for SGE); a [`CommandTemplate`] whose submit command
    /// requests GPUs (`{gpus}`) says true; [`Local`] says false.
    ///
    /// ```
    /// use blockwise::launch::{Batch, Launcher, Local};
    ///
    /// assert!(Batch::slurm().assigns_devices("gpu"));
    /// assert!(!Batch::slurm().assigns_devices("cpu"));
    /// assert!(!Local::new().assigns_devices("gpu"));
    /// ```
    fn assigns_devices(&self, resource: &str) -> bool {
        let _ = resource;
        false
    }
}

/// Spawns `cmd`, retrying briefly while the program is "text file busy" (`ETXTBSY`): a
/// program (a wrapper script, a site's `sbatch` shim) that was just written can still be open
/// for writing in a child that another thread of this process forked before the file was
/// closed, until that child execs. The window is a few milliseconds; after about 0.3 s the
/// error is returned.
pub(crate) fn spawn(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    spawn_waiting(cmd, std::thread::sleep)
}

/// [`spawn`], with `wait` called for each pause between attempts (with the pause's length).
fn spawn_waiting(
    cmd: &mut std::process::Command,
    mut wait: impl FnMut(Duration),
) -> std::io::Result<std::process::Child> {
    let mut pause = Duration::from_millis(1);
    loop {
        match cmd.spawn() {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && pause < Duration::from_millis(200) =>
            {
                wait(pause);
                pause *= 2;
            }
            other => return other,
        }
    }
}

/// A shared launcher is a launcher: one configured launcher can serve several runners.
impl<L: Launcher + ?Sized> Launcher for std::sync::Arc<L> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn render(&self, spec: &WorkerSpec) -> Result<String, LaunchError> {
        (**self).render(spec)
    }

    fn submit(&self, spec: &WorkerSpec) -> Result<JobId, LaunchError> {
        (**self).submit(spec)
    }

    fn status(&self, job: &JobId) -> Result<JobState, LaunchError> {
        (**self).status(job)
    }

    fn cancel(&self, job: &JobId) -> Result<(), LaunchError> {
        (**self).cancel(job)
    }

    fn poll_interval(&self) -> Duration {
        (**self).poll_interval()
    }

    fn runs_locally(&self) -> bool {
        (**self).runs_locally()
    }

    fn assigns_devices(&self, resource: &str) -> bool {
        (**self).assigns_devices(resource)
    }
}

/// The error for a command that exited with a failure status.
fn command_failed(launcher: &str, command: &str, out: &std::process::Output) -> LaunchError {
    LaunchError::Command {
        launcher: launcher.to_owned(),
        command: command.to_owned(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}

/// The job id in a submit command's output: the regex's first group, or its whole match.
fn find_job_id(
    launcher: &str,
    regex: &regex::Regex,
    command: &str,
    stdout: &str,
) -> Result<JobId, LaunchError> {
    regex
        .captures(stdout)
        .and_then(|c| c.get(1).or_else(|| c.get(0)))
        .map(|m| JobId(m.as_str().to_owned()))
        .filter(|id| !id.0.is_empty())
        .ok_or_else(|| LaunchError::NoJobId {
            launcher: launcher.to_owned(),
            command: command.to_owned(),
            regex: regex.as_str().to_owned(),
            stdout: stdout.to_owned(),
        })
}

/// Creates `dir` and its missing parents with mode 0700 (private to this user); an existing
/// directory is left as it is.
pub(crate) fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates (or truncates) a file only this user can read and write: a worker's log.
pub(crate) fn private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Writes `bytes` to `path` with `mode`, atomically: a new file (created with that mode, so it
/// is never readable by others, not even for a moment) renamed over `path`.
pub(crate) fn write_private(
    path: &std::path::Path,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Quotes `s` for a POSIX shell (single quotes; embedded single quotes escaped).
#[must_use]
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_quotes_what_needs_it() {
        assert_eq!(shell_quote("abc/d-e_f.g"), "abc/d-e_f.g");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(r#"{"a":1}"#), r#"'{"a":1}'"#);
    }

    /// A script that is still open for writing (here by this process) cannot be executed:
    /// the spawn waits and tries again, and succeeds once the writer closes it.
    #[test]
    fn a_busy_program_is_spawned_once_its_writer_closes_it() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.sh");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        file.set_permissions(std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let mut writer = Some(file);
        let mut pauses = Vec::new();
        let mut child = spawn_waiting(&mut std::process::Command::new(&path), |pause| {
            pauses.push(pause);
            writer.take(); // the writer closes the file during the first pause
        })
        .unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(pauses, [Duration::from_millis(1)]);
    }

    /// A program that stays busy is an error after the last pause, not a hang.
    #[test]
    fn a_program_that_stays_busy_is_an_error_after_a_few_pauses() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.sh");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        file.set_permissions(std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let mut pauses = Vec::new();
        let err =
            spawn_waiting(&mut std::process::Command::new(&path), |p| pauses.push(p)).unwrap_err();
        drop(file);
        assert_eq!(err.kind(), std::io::ErrorKind::ExecutableFileBusy);
        assert_eq!(pauses.len(), 8); // 1, 2, 4, … 128 ms: about a quarter of a second in all
        assert_eq!(pauses.iter().sum::<Duration>(), Duration::from_millis(255));
    }
}
