//! Starting one worker process: its log files, its context, its job.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::context::{CONTEXT_ENV, Context};
use crate::error::Error;
use crate::launch::{JobId, Launcher, WorkerSpec};

/// What one worker runs and needs.
pub(crate) struct Worker<'a> {
    /// The program and its arguments.
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [std::ffi::OsString],
    /// Environment variables besides its context.
    pub(crate) env: Vec<(String, String)>,
    /// What the launcher must request for it.
    pub(crate) resources: Vec<(String, u64)>,
}

/// Submits a worker with context `ctx` through `launcher`: it runs `program args` with
/// [`CONTEXT_ENV`] (and `env`) set, requesting `resources` from the launcher, logs to `<log_dir>/<group>/worker_<id>.out/.err`, and is listed in
/// `<log_dir>/jobs.txt`. Returns the job and the worker's stderr file.
pub(crate) fn submit_worker(
    launcher: &dyn Launcher,
    log_dir: &Path,
    group: &str,
    ctx: &Context,
    worker: Worker<'_>,
) -> Result<(JobId, PathBuf), Error> {
    let Worker {
        program,
        args,
        env,
        resources,
    } = worker;
    let id = ctx.worker_id;
    let dir = log_dir.join(group);
    let spec = WorkerSpec {
        name: format!("blockwise-{group}-{id}"),
        program: program.to_path_buf(),
        args: args.to_vec(),
        env: std::iter::once((CONTEXT_ENV.to_owned(), ctx.encode()))
            .chain(env)
            .collect(),
        workdir: None,
        stdout: dir.join(format!("worker_{id}.out")),
        stderr: dir.join(format!("worker_{id}.err")),
        resources,
    };
    let job = launcher.submit(&spec)?;
    tracing::debug!(group, worker = id, job = %job, "worker submitted");
    let line = format!("{} {job} {group} worker_{id}\n", launcher.name());
    let jobs = log_dir.join("jobs.txt");
    if let Err(e) = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&jobs)
        .and_then(|mut f| f.write_all(line.as_bytes()))
    {
        tracing::warn!("could not record job {job} in {}: {e}", jobs.display());
    }
    Ok((job, spec.stderr))
}

/// The current executable and arguments, or the configured worker command.
pub(crate) fn worker_program(
    command: Option<&(PathBuf, Vec<std::ffi::OsString>)>,
) -> Result<(PathBuf, Vec<std::ffi::OsString>), Error> {
    match command {
        Some((p, a)) => Ok((p.clone(), a.clone())),
        None => {
            let exe = std::env::current_exe().map_err(|source| Error::Io {
                context: "finding the current executable to start workers".into(),
                source,
            })?;
            Ok((exe, std::env::args_os().skip(1).collect()))
        }
    }
}
