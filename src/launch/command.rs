//! A launcher driven by user-given command templates.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use regex::Regex;

use super::batch::{script_body, write_script};
use super::{
    CPU, GPU, JobId, JobState, LaunchError, Launcher, WorkerSpec, command_failed, find_job_id,
    requested, shell_quote,
};

/// Any other system or site wrapper: the worker script (prologue, exports, `exec` of the
/// worker) is written to a file, and the submit template is run with `sh -c` after its
/// placeholders are replaced (shell-quoted): `{script}`, `{name}`, `{stdout}`, `{stderr}`.
/// The cancel and status templates ([`CommandTemplate::cancel_command`],
/// [`CommandTemplate::status_command`]) get `{job_id}`. The job id is the first group (or the
/// whole match) of a regex on the submit command's output (default `(\d+)`).
///
/// What one worker needs ([`WorkerSpec::resources`]) goes into the submit command through
/// `{gpus}` (units of `gpu`), `{cpus}` (units of `cpu`) and `{resource:NAME}` (units of any
/// resource), each `0` when the worker needs none. A worker that needs a resource the submit
/// command has no placeholder for is an error (from [`render`](Launcher::render) and
/// [`submit`](Launcher::submit)), not a job without it. A template that asks for GPUs leaves
/// their placement to the system ([`Launcher::assigns_devices`]).
///
/// ```
/// use blockwise::launch::{CommandTemplate, Launcher, WorkerSpec};
///
/// let flux = CommandTemplate::new("flux", "flux batch -N1 -c {cpus} -g {gpus} --output={stdout} --error={stderr} {script}")?
///     .cancel_command("flux cancel {job_id}")?
///     .status_command("flux jobs -n -o '{{status}}' {job_id}")?
///     .running_regex("RUN")?
///     .pending_regex("SCHED|DEPEND|PRIORITY")?
///     .job_id_regex(r"(ƒ\w+)")?;
/// let mut spec = WorkerSpec::new("blockwise-t-0", "/usr/bin/pipeline", "logs/t/worker_0.out", "logs/t/worker_0.err");
/// spec.env = vec![("BLOCKWISE_CONTEXT".into(), "{}".into())];
/// spec.resources = vec![("gpu".into(), 1), ("cpu".into(), 4)];
/// assert_eq!(
///     flux.render(&spec)?,
///     "#!/usr/bin/env bash\nexport BLOCKWISE_CONTEXT='{}'\nexec /usr/bin/pipeline\n"
/// );
/// assert!(flux.assigns_devices("gpu"));
/// // A worker needing what the command cannot ask for is an error.
/// spec.resources.push(("fpga".into(), 1));
/// assert!(flux.render(&spec).unwrap_err().to_string().contains("{resource:fpga}"));
/// # Ok::<(), blockwise::launch::LaunchError>(())
/// ```
///
/// Literal braces in a template are written `{{` and `}}`; any other placeholder is an error.
#[derive(Debug)]
pub struct CommandTemplate {
    name: String,
    submit: String,
    cancel: Option<String>,
    status: Option<String>,
    job_id_regex: Regex,
    pending: Option<Regex>,
    running: Option<Regex>,
    prologue: Vec<String>,
    script_dir: Option<std::path::PathBuf>,
    poll_interval: Duration,
    shebang: String,
    warned: AtomicBool,
}

const SUBMIT_KEYS: &[&str] = &[
    "script",
    "name",
    "stdout",
    "stderr",
    "gpus",
    "cpus",
    RESOURCE_KEY,
];
const JOB_KEYS: &[&str] = &["job_id"];
/// `{resource:NAME}`: the units of any resource (an allowed key ending in `:` is a prefix).
const RESOURCE_KEY: &str = "resource:";

/// Splits a template into literal text and `{key}` placeholders (`{{`/`}}` are literal
/// braces); every key must be in `allowed` (or start with an allowed prefix, a key ending in
/// `:`, and go on with a valid resource name).
fn placeholders<'t>(template: &'t str, allowed: &[&str]) -> Result<Vec<Piece<'t>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push(Piece::Text(&rest[..i]));
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push(Piece::Text(&tail[..1]));
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!("unmatched '}}' in template {template:?}"));
        }
        let Some(end) = tail.find('}') else {
            return Err(format!("unclosed '{{' in template {template:?}"));
        };
        let key = &tail[1..end];
        let known = allowed.iter().any(|a| match a.strip_suffix(':') {
            Some(_) => key.strip_prefix(a).is_some_and(super::valid_resource_name),
            None => *a == key,
        });
        if !known {
            return Err(format!(
                "unknown placeholder {{{key}}} in template {template:?} (allowed: {})",
                allowed
                    .iter()
                    .map(|k| if k.ends_with(':') {
                        format!("{{{k}NAME}}")
                    } else {
                        format!("{{{k}}}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.push(Piece::Key(key));
        rest = &tail[end + 1..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// A part of a template.
enum Piece<'t> {
    Text(&'t str),
    Key(&'t str),
}

/// Replaces `{key}` placeholders with `value(key)` (`{{`/`}}` are literal braces); unknown
/// keys are an error.
pub(super) fn substitute(
    template: &str,
    allowed: &[&str],
    value: &dyn Fn(&str) -> String,
) -> Result<String, String> {
    let mut out = String::new();
    for piece in placeholders(template, allowed)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Key(k) => out.push_str(&value(k)),
        }
    }
    Ok(out)
}

/// The resource a submit placeholder stands for (`{gpus}`, `{cpus}`, `{resource:NAME}`).
fn placeholder_resource(key: &str) -> Option<&str> {
    match key {
        "gpus" => Some(GPU),
        "cpus" => Some(CPU),
        _ => key.strip_prefix(RESOURCE_KEY),
    }
}

impl CommandTemplate {
    /// A launcher named `name` that submits with `submit` (see the type's docs).
    ///
    /// # Errors
    ///
    /// The template has unknown placeholders or unbalanced braces.
    pub fn new(name: impl Into<String>, submit: impl Into<String>) -> Result<Self, LaunchError> {
        let name = name.into();
        let submit = submit.into();
        let t = CommandTemplate {
            job_id_regex: default_regex(),
            name,
            submit,
            cancel: None,
            status: None,
            pending: None,
            running: None,
            prologue: Vec::new(),
            script_dir: None,
            poll_interval: Duration::from_secs(2),
            shebang: "#!/usr/bin/env bash".into(),
            warned: AtomicBool::new(false),
        };
        substitute(&t.submit, SUBMIT_KEYS, &|_| String::new()).map_err(|e| t.config(e))?;
        Ok(t)
    }

    fn config(&self, reason: String) -> LaunchError {
        LaunchError::Config {
            launcher: self.name.clone(),
            reason,
        }
    }

    /// The command that cancels a job (`{job_id}`).
    ///
    /// # Errors
    ///
    /// The template has unknown placeholders.
    pub fn cancel_command(mut self, template: impl Into<String>) -> Result<Self, LaunchError> {
        let t = template.into();
        substitute(&t, JOB_KEYS, &|_| String::new()).map_err(|e| self.config(e))?;
        self.cancel = Some(t);
        Ok(self)
    }

    /// The command that prints a job's state (`{job_id}`); without it jobs count as running
    /// until their worker disconnects.
    ///
    /// # Errors
    ///
    /// The template has unknown placeholders.
    pub fn status_command(mut self, template: impl Into<String>) -> Result<Self, LaunchError> {
        let t = template.into();
        substitute(&t, JOB_KEYS, &|_| String::new()).map_err(|e| self.config(e))?;
        self.status = Some(t);
        Ok(self)
    }

    /// The regex that finds the job id in the submit output.
    ///
    /// # Errors
    ///
    /// An invalid regex.
    pub fn job_id_regex(mut self, regex: &str) -> Result<Self, LaunchError> {
        self.job_id_regex =
            Regex::new(regex).map_err(|e| self.config(format!("job id regex: {e}")))?;
        Ok(self)
    }

    /// Status output matching this regex means pending.
    ///
    /// # Errors
    ///
    /// An invalid regex.
    pub fn pending_regex(mut self, regex: &str) -> Result<Self, LaunchError> {
        self.pending =
            Some(Regex::new(regex).map_err(|e| self.config(format!("pending regex: {e}")))?);
        Ok(self)
    }

    /// Status output matching this regex means running.
    ///
    /// # Errors
    ///
    /// An invalid regex.
    pub fn running_regex(mut self, regex: &str) -> Result<Self, LaunchError> {
        self.running =
            Some(Regex::new(regex).map_err(|e| self.config(format!("running regex: {e}")))?);
        Ok(self)
    }

    /// Shell lines run before the worker starts.
    #[must_use]
    pub fn prologue(mut self, lines: Vec<String>) -> Self {
        self.prologue = lines;
        self
    }

    /// Where scripts are written (default: next to the worker's stderr log).
    #[must_use]
    pub fn script_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.script_dir = Some(dir.into());
        self
    }

    /// How often the runner may poll a job's status (default 2 s).
    #[must_use]
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// The script's first line (default `#!/usr/bin/env bash`).
    #[must_use]
    pub fn shebang(mut self, shebang: impl Into<String>) -> Self {
        self.shebang = shebang.into();
        self
    }

    fn sh(&self, line: &str) -> Result<std::process::Output, LaunchError> {
        Command::new("sh")
            .arg("-c")
            .arg(line)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LaunchError::Spawn {
                launcher: self.name.clone(),
                command: line.to_owned(),
                source,
            })
    }

    fn failed(&self, line: &str, out: &std::process::Output) -> LaunchError {
        command_failed(&self.name, line, out)
    }

    /// Whether the submit template asks for `resource` (through one of its placeholders).
    fn requests(&self, resource: &str) -> bool {
        placeholders(&self.submit, SUBMIT_KEYS).is_ok_and(|pieces| {
            pieces
                .iter()
                .any(|p| matches!(p, Piece::Key(k) if placeholder_resource(k) == Some(resource)))
        })
    }

    /// What `spec` needs, checked against the submit template: a worker that needs a resource
    /// the template never asks for is an error rather than a job without it.
    fn needs<'a>(&self, spec: &'a WorkerSpec) -> Result<Vec<(&'a str, u64)>, LaunchError> {
        let needs = requested(&self.name, spec)?;
        if let Some((name, n)) = needs.iter().find(|(name, _)| !self.requests(name)) {
            let hint = match *name {
                GPU => "{gpus} or {resource:gpu}".to_owned(),
                CPU => "{cpus} or {resource:cpu}".to_owned(),
                other => format!("{{resource:{other}}}"),
            };
            return Err(self.config(format!(
                "worker {:?} needs {n} {name:?} per worker, but the submit command {:?} does not ask for it: add {hint} where the system takes that count",
                spec.name, self.submit
            )));
        }
        Ok(needs)
    }
}

#[allow(clippy::expect_used)] // a constant, valid pattern
fn default_regex() -> Regex {
    Regex::new(r"(\d+)").expect("valid default job id regex")
}

impl Launcher for CommandTemplate {
    fn name(&self) -> &str {
        &self.name
    }

    fn render(&self, spec: &WorkerSpec) -> Result<String, LaunchError> {
        self.needs(spec)?;
        let body = script_body(spec, &self.prologue).map_err(|e| self.config(e))?;
        Ok(format!("{}\n{body}", self.shebang))
    }

    fn submit(&self, spec: &WorkerSpec) -> Result<JobId, LaunchError> {
        let script = self.render(spec)?;
        let needs = self.needs(spec)?;
        let path = write_script(&self.name, self.script_dir.as_deref(), spec, &script)?;
        let q = |p: &std::path::Path| shell_quote(&p.to_string_lossy());
        let value = |key: &str| match key {
            "script" => q(&path),
            "name" => shell_quote(&spec.name),
            "stdout" => q(&spec.stdout),
            "stderr" => q(&spec.stderr),
            other => {
                let units = placeholder_resource(other)
                    .and_then(|r| needs.iter().find(|(name, _)| *name == r))
                    .map_or(0, |(_, n)| *n);
                units.to_string()
            }
        };
        let line = substitute(&self.submit, SUBMIT_KEYS, &value).map_err(|e| self.config(e))?;
        let out = self.sh(&line)?;
        if !out.status.success() {
            return Err(self.failed(&line, &out));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        find_job_id(&self.name, &self.job_id_regex, &line, &stdout)
    }

    fn status(&self, job: &JobId) -> Result<JobState, LaunchError> {
        let Some(t) = &self.status else {
            return Ok(JobState::Running);
        };
        let line = substitute(t, JOB_KEYS, &|_| shell_quote(&job.0)).map_err(|e| self.config(e))?;
        let out = self.sh(&line)?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || text.is_empty() {
            return Ok(JobState::Finished {
                detail: format!("status command printed nothing ({})", out.status),
            });
        }
        if self.running.as_ref().is_some_and(|r| r.is_match(&text)) {
            return Ok(JobState::Running);
        }
        if self.pending.as_ref().is_some_and(|r| r.is_match(&text)) {
            return Ok(JobState::Pending);
        }
        if self.running.is_none() && self.pending.is_none() {
            return Ok(JobState::Running);
        }
        Ok(JobState::Finished { detail: text })
    }

    fn cancel(&self, job: &JobId) -> Result<(), LaunchError> {
        let Some(t) = &self.cancel else {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(launcher = %self.name, "no cancel command: jobs are left to end by themselves");
            }
            return Ok(());
        };
        let line = substitute(t, JOB_KEYS, &|_| shell_quote(&job.0)).map_err(|e| self.config(e))?;
        let out = self.sh(&line)?;
        if out.status.success() {
            return Ok(());
        }
        match self.status(job) {
            Ok(state) if !state.is_alive() => Ok(()),
            _ => Err(self.failed(&line, &out)),
        }
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// True for a resource the submit command requests (`{gpus}` or `{resource:gpu}` for
    /// `gpu`): the system then allocates the devices and says which.
    fn assigns_devices(&self, resource: &str) -> bool {
        resource == GPU && self.requests(GPU)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_substituted_and_checked() {
        let v = |_: &str| "'42'".to_owned();
        let v = &v;
        assert_eq!(
            substitute("kill {job_id} {{x}}", JOB_KEYS, v).unwrap(),
            "kill '42' {x}"
        );
        assert!(
            substitute("kill {jobid}", JOB_KEYS, v)
                .unwrap_err()
                .contains("unknown placeholder {jobid}")
        );
        assert!(
            substitute("kill {job_id", JOB_KEYS, v)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            substitute("kill }", JOB_KEYS, v)
                .unwrap_err()
                .contains("unmatched")
        );
        assert!(CommandTemplate::new("x", "sub {scrpt}").is_err());
        assert!(
            CommandTemplate::new("x", "sub {script}")
                .unwrap()
                .cancel_command("c {script}")
                .is_err()
        );
    }

    #[test]
    fn resources_go_into_the_submit_command() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // The "system" records what it was asked for and prints a job id.
        let t = CommandTemplate::new(
            "fake",
            format!("echo gpus={{gpus}} cpus={{cpus}} fpga={{resource:fpga}} gpu={{resource:gpu}} > {d}/asked; echo 7"),
        )
        .unwrap();
        let mut spec = WorkerSpec::new(
            "w",
            "/bin/true",
            dir.path().join("w.out"),
            dir.path().join("w.err"),
        );
        spec.resources = vec![("gpu".into(), 2), ("fpga".into(), 1), ("cpu".into(), 0)];
        assert_eq!(t.submit(&spec).unwrap().0, "7");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("asked")).unwrap(),
            "gpus=2 cpus=0 fpga=1 gpu=2\n"
        );
        assert!(t.assigns_devices("gpu"));
        assert!(!t.assigns_devices("fpga"));
        // What the command does not ask for is an error, at render and at submit.
        spec.resources.push(("nvme".into(), 1));
        for e in [t.render(&spec).unwrap_err(), t.submit(&spec).unwrap_err()] {
            let e = e.to_string();
            assert!(
                e.contains("\"nvme\"") && e.contains("{resource:nvme}"),
                "{e}"
            );
        }
        let plain = CommandTemplate::new("plain", "sbatch {script}").unwrap();
        assert!(!plain.assigns_devices("gpu"));
        let mut g = spec.clone();
        g.resources = vec![("gpu".into(), 1)];
        let e = plain.render(&g).unwrap_err().to_string();
        assert!(e.contains("{gpus} or {resource:gpu}"), "{e}");
        g.resources = vec![("gpu".into(), 0)];
        assert!(plain.render(&g).is_ok(), "0 units ask for nothing");
        // Placeholders are checked when the template is given.
        for bad in [
            "x {resource:}",
            "x {resource:a b}",
            "x {gpu}",
            "x {resources}",
        ] {
            let e = CommandTemplate::new("x", bad).unwrap_err().to_string();
            assert!(e.contains("unknown placeholder"), "{bad}: {e}");
            assert!(e.contains("{resource:NAME}"), "{e}");
        }
    }

    #[test]
    fn submit_status_cancel_through_shell_commands() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // A "system" whose jobs are background processes and whose queue is a directory.
        let t = CommandTemplate::new(
            "fake",
            format!("setsid sh {{script}} >/dev/null 2>&1 & echo submitted as job $! > {d}/submitted; cat {d}/submitted"),
        )
        .unwrap()
        .status_command("kill -0 {job_id} 2>/dev/null && echo RUNNING")
        .unwrap()
        .running_regex("RUNNING")
        .unwrap()
        .cancel_command("kill {job_id}")
        .unwrap()
        .job_id_regex(r"job (\d+)")
        .unwrap();
        let spec = WorkerSpec {
            name: "w".into(),
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!("echo \"$MSG\" > {d}/ran; exec sleep 300").into(),
            ],
            env: vec![("MSG".into(), "it's \"quoted\" $HOME".into())],
            workdir: None,
            stdout: dir.path().join("logs/w.out"),
            stderr: dir.path().join("logs/w.err"),
            resources: Vec::new(),
        };
        let job = t.submit(&spec).unwrap();
        let ran = dir.path().join("ran");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ran.exists() || std::fs::read_to_string(&ran).unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the job did not run");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            std::fs::read_to_string(&ran).unwrap(),
            "it's \"quoted\" $HOME\n"
        );
        assert_eq!(t.status(&job).unwrap(), JobState::Running);
        t.cancel(&job).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while t.status(&job).unwrap().is_alive() {
            assert!(
                std::time::Instant::now() < deadline,
                "the job survived cancel"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Cancelling again is fine: the job is gone.
        t.cancel(&job).unwrap();
    }

    #[test]
    fn a_failing_submit_reports_command_and_output() {
        let t = CommandTemplate::new("fake", "echo 'quota exceeded' >&2; exit 7").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spec = WorkerSpec {
            name: "w".into(),
            program: "/bin/true".into(),
            args: vec![],
            env: vec![],
            workdir: None,
            stdout: dir.path().join("w.out"),
            stderr: dir.path().join("w.err"),
            resources: Vec::new(),
        };
        let e = t.submit(&spec).unwrap_err().to_string();
        assert!(
            e.contains("quota exceeded") && e.contains("exit status: 7"),
            "{e}"
        );
    }
}
