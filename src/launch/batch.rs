//! Batch systems: SLURM, LSF, PBS and SGE.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use regex::Regex;

use super::command::substitute;
use super::units::{LsfUnit, format_memory, format_walltime};
use super::{
    CPU, GPU, JobId, JobState, LaunchError, Launcher, Resources, WorkerSpec, command_failed,
    find_job_id, requested, shell_quote, valid_resource_name,
};

/// A batch system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchSystem {
    /// SLURM: `sbatch`, `squeue`, `scancel`.
    Slurm,
    /// IBM Spectrum LSF: `bsub`, `bjobs`, `bkill`.
    Lsf,
    /// PBS Pro / OpenPBS / Torque: `qsub`, `qstat`, `qdel`.
    Pbs,
    /// (Son of) Grid Engine: `qsub`, `qstat`, `qdel`.
    Sge,
}

impl fmt::Display for BatchSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BatchSystem::Slurm => "slurm",
            BatchSystem::Lsf => "lsf",
            BatchSystem::Pbs => "pbs",
            BatchSystem::Sge => "sge",
        })
    }
}

impl BatchSystem {
    fn prefix(self) -> &'static str {
        match self {
            BatchSystem::Slurm => "#SBATCH",
            BatchSystem::Lsf => "#BSUB",
            BatchSystem::Pbs => "#PBS",
            BatchSystem::Sge => "#$",
        }
    }

    fn default_id_regex(self) -> &'static str {
        match self {
            BatchSystem::Slurm => r"^\s*(\d+)",
            BatchSystem::Lsf => r"Job <(\d+)>",
            BatchSystem::Pbs => r"^\s*(\S+)",
            BatchSystem::Sge => r"Your job(?:-array)? (\d+)",
        }
    }
}

/// Submits each worker as a batch job: a script with the system's directives for the
/// [`Resources`], the environment (including `BLOCKWISE_CONTEXT`) exported, and `exec` of the
/// worker command. `sbatch --parsable`, `bsub` (script on stdin), `qsub`; status from
/// `squeue`/`bjobs`/`qstat`; cancel with `scancel`/`bkill`/`qdel` (idempotent).
///
/// ```
/// use blockwise::launch::{Batch, Launcher, Resources, WorkerSpec};
/// use std::time::Duration;
///
/// let mut resources = Resources::default();
/// resources.cores = Some(4);
/// resources.memory = Some(8 << 30);
/// resources.walltime = Some(Duration::from_secs(2 * 3600));
/// resources.queue = Some("gpu".into());
/// resources.prologue = vec!["module load cuda".into()];
/// let slurm = Batch::slurm().resources(resources);
/// let mut spec = WorkerSpec::new(
///     "blockwise-predict-0",
///     "/home/me/pipeline",
///     "/shared/logs/predict/worker_0.out",
///     "/shared/logs/predict/worker_0.err",
/// );
/// spec.args = vec!["--config".into(), "run 1.toml".into()];
/// spec.env = vec![("BLOCKWISE_CONTEXT".into(), r#"{"task_id":"predict"}"#.into())];
/// assert_eq!(slurm.render(&spec).unwrap(), r#"#!/usr/bin/env bash
/// #SBATCH -J blockwise-predict-0
/// #SBATCH -o /shared/logs/predict/worker_0.out
/// #SBATCH -e /shared/logs/predict/worker_0.err
/// #SBATCH -p gpu
/// #SBATCH -n 1
/// #SBATCH -N 1
/// #SBATCH --cpus-per-task=4
/// #SBATCH --mem=8G
/// #SBATCH -t 02:00:00
/// module load cuda
/// export BLOCKWISE_CONTEXT='{"task_id":"predict"}'
/// exec /home/me/pipeline --config 'run 1.toml'
/// "#);
/// ```
///
/// # What one worker needs
///
/// [`WorkerSpec::resources`] (a task's per-worker requirement) adds directives to that job:
///
/// | resource | SLURM | LSF | PBS | SGE |
/// |---|---|---|---|---|
/// | `gpu` | `--gres=gpu:N` | `-gpu "num=N"` | `ngpus=N` in the `select` chunk | `-l gpu=N` |
/// | `cpu` | the job's cores (`--cpus-per-task=N`) | `-n N` | `ncpus=N` | `-pe <pe> N` |
/// | other | `--gres=<name>:N` | an error | an error | an error |
///
/// `cpu` replaces [`Resources::cores`] for that worker and is rendered exactly like it. Several
/// SLURM generic resources share one `--gres` line. [`Batch::resource_directive`] says how to
/// request any other name (or `gpu` differently, e.g. a site whose SGE complex is `cuda`);
/// without one, a worker needing it cannot be rendered or submitted and the error says what
/// to configure.
///
/// ```
/// use blockwise::launch::{Batch, Launcher, WorkerSpec};
///
/// let mut spec = WorkerSpec::new("blockwise-predict-0", "/opt/pipeline", "/logs/w0.out", "/logs/w0.err");
/// spec.resources = vec![("gpu".into(), 2), ("cpu".into(), 8)];
/// let script = Batch::slurm().render(&spec)?;
/// assert!(script.contains("#SBATCH --cpus-per-task=8\n#SBATCH --gres=gpu:2\n"), "{script}");
/// let script = Batch::pbs().render(&spec)?;
/// assert!(script.contains("#PBS -l select=1:ncpus=8:ngpus=2\n"), "{script}");
///
/// spec.resources.push(("fpga".into(), 1));
/// assert!(Batch::lsf().render(&spec).is_err()); // LSF has no generic syntax for it ...
/// let lsf = Batch::lsf().resource_directive("fpga", "-R \"rusage[fpga={n}]\"")?; // ... so say how
/// assert!(lsf.render(&spec)?.contains("#BSUB -R \"rusage[fpga=1]\"\n"));
/// # Ok::<(), blockwise::launch::LaunchError>(())
/// ```
///
/// The systems place the GPUs themselves ([`Launcher::assigns_devices`] is true for `gpu`):
/// SLURM, LSF and PBS (with its cgroups hook) set `CUDA_VISIBLE_DEVICES` in the job to the GPUs
/// they allocated. Stock SGE only counts its `gpu` complex; sites make it set
/// `CUDA_VISIBLE_DEVICES` with a prolog script or resource maps (Univa/Altair Grid Engine's
/// `RSMAP`, which exports `SGE_HGR_<name>`). Either way a batch job runs on a node the runner
/// does not see, so device ids of the runner's own would mean nothing there.
#[derive(Debug, Clone)]
pub struct Batch {
    system: BatchSystem,
    resources: Resources,
    bin_dir: Option<PathBuf>,
    job_id_regex: Regex,
    shebang: String,
    script_dir: Option<PathBuf>,
    poll_interval: Duration,
    lsf_unit: LsfUnit,
    submit_args: Vec<String>,
    /// Directive templates for resources by name (`{n}` = units per worker).
    resource_directives: Vec<(String, String)>,
}

impl Batch {
    /// A launcher for `system` with no resources set.
    #[must_use]
    pub fn new(system: BatchSystem) -> Batch {
        Batch {
            system,
            resources: Resources::default(),
            bin_dir: None,
            job_id_regex: default_regex(system),
            shebang: "#!/usr/bin/env bash".into(),
            script_dir: None,
            poll_interval: Duration::from_secs(2),
            lsf_unit: lsf_unit_from_conf().unwrap_or_default(),
            submit_args: Vec::new(),
            resource_directives: Vec::new(),
        }
    }

    /// SLURM (`sbatch`).
    #[must_use]
    pub fn slurm() -> Batch {
        Batch::new(BatchSystem::Slurm)
    }

    /// LSF (`bsub`).
    #[must_use]
    pub fn lsf() -> Batch {
        Batch::new(BatchSystem::Lsf)
    }

    /// PBS (`qsub`).
    #[must_use]
    pub fn pbs() -> Batch {
        Batch::new(BatchSystem::Pbs)
    }

    /// SGE (`qsub`).
    #[must_use]
    pub fn sge() -> Batch {
        Batch::new(BatchSystem::Sge)
    }

    /// The resources of every job.
    #[must_use]
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// A directory searched first for the system's commands (prepended to `PATH` for the
    /// commands this launcher runs).
    #[must_use]
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// The regex that finds the job id in the submit command's output (its first group, or the
    /// whole match).
    ///
    /// # Errors
    ///
    /// An invalid regex.
    pub fn job_id_regex(mut self, regex: &str) -> Result<Self, LaunchError> {
        self.job_id_regex =
            Regex::new(regex).map_err(|e| self.config(format!("job id regex: {e}")))?;
        Ok(self)
    }

    /// The script's first line (default `#!/usr/bin/env bash`).
    #[must_use]
    pub fn shebang(mut self, shebang: impl Into<String>) -> Self {
        self.shebang = shebang.into();
        self
    }

    /// Where job scripts are written (default: next to the worker's stderr log).
    #[must_use]
    pub fn script_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.script_dir = Some(dir.into());
        self
    }

    /// How often the runner may poll a job's status (default 2 s).
    #[must_use]
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// LSF memory units (default: `LSF_UNIT_FOR_LIMITS` from `$LSF_ENVDIR/lsf.conf`, else KB).
    #[must_use]
    pub fn lsf_unit(mut self, unit: LsfUnit) -> Self {
        self.lsf_unit = unit;
        self
    }

    /// Extra arguments for the submit command.
    #[must_use]
    pub fn submit_args(mut self, args: Vec<String>) -> Self {
        self.submit_args = args;
        self
    }

    /// How to request `resource` for a worker that needs it ([`WorkerSpec::resources`]): a
    /// directive line (without the `#SBATCH`-style prefix) in which `{n}` is the units per
    /// worker (`{{`/`}}` are literal braces). It replaces the built-in rendering of that name
    /// (see [what one worker needs](Batch#what-one-worker-needs)); setting a name again
    /// replaces its template. On PBS, a template starting with `:` is appended to the
    /// `select` chunk instead (a chunk-level resource, e.g. `":mic={n}"`).
    ///
    /// ```
    /// use blockwise::launch::{Batch, Launcher, WorkerSpec};
    ///
    /// let sge = Batch::sge().resource_directive("gpu", "-l cuda={n}")?;
    /// let mut spec = WorkerSpec::new("w", "/opt/pipeline", "/logs/w.out", "/logs/w.err");
    /// spec.resources = vec![("gpu".into(), 1)];
    /// assert!(sge.render(&spec)?.contains("#$ -l cuda=1\n"));
    /// assert!(Batch::sge().resource_directive("gpu", "-l cuda={count}").is_err());
    /// # Ok::<(), blockwise::launch::LaunchError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// An invalid resource name (ASCII letters, digits, `_`, `-`, `.`), `cpu` (which is always
    /// the job's cores, [`Resources::cores`]), a template with a line break, or a placeholder
    /// other than `{n}`.
    pub fn resource_directive(
        mut self,
        resource: &str,
        template: impl Into<String>,
    ) -> Result<Self, LaunchError> {
        let template = template.into();
        if !valid_resource_name(resource) {
            return Err(self.config(format!(
                "resource name {resource:?} is not valid (ASCII letters, digits, '_', '-', '.')"
            )));
        }
        if resource == CPU {
            return Err(self.config(
                "the cpu resource is the job's cores (rendered like Resources::cores); it takes no directive of its own".into(),
            ));
        }
        if template.contains(['\n', '\r']) || template.trim().is_empty() {
            return Err(self.config(format!(
                "the directive for {resource:?} must be one non-empty line: {template:?}"
            )));
        }
        substitute(&template, &["n"], &|_| String::new()).map_err(|e| self.config(e))?;
        self.resource_directives
            .retain(|(name, _)| name != resource);
        self.resource_directives
            .push((resource.to_owned(), template));
        Ok(self)
    }

    /// The batch system.
    #[must_use]
    pub fn system(&self) -> BatchSystem {
        self.system
    }

    fn config(&self, reason: String) -> LaunchError {
        LaunchError::Config {
            launcher: self.system.to_string(),
            reason,
        }
    }

    /// What `spec` needs, as this system asks for it.
    fn worker_needs(&self, spec: &WorkerSpec) -> Result<Needs, LaunchError> {
        let mut needs = Needs {
            cores: self.resources.cores,
            ..Needs::default()
        };
        for (name, n) in requested(self.name(), spec)? {
            if let Some((_, template)) = self.resource_directives.iter().find(|(r, _)| r == name) {
                let line =
                    substitute(template, &["n"], &|_| n.to_string()).map_err(|e| self.config(e))?;
                if self.system == BatchSystem::Pbs && line.starts_with(':') {
                    needs.chunk.push_str(&line);
                } else {
                    needs.lines.push(line);
                }
                continue;
            }
            match (name, self.system) {
                (CPU, _) => {
                    needs.cores = Some(u32::try_from(n).map_err(|_| {
                        self.config(format!(
                            "worker {:?}: {n} cores (cpu) per worker is more than a job can ask for",
                            spec.name
                        ))
                    })?);
                }
                (_, BatchSystem::Slurm) => {
                    needs.gres.push(format!("{name}:{n}"));
                }
                (GPU, _) => needs.gpus = Some(n),
                (other, system) => {
                    return Err(self.config(format!(
                        "worker {:?} needs {n} {other:?} per worker, and {system} has no generic way to ask for it; say how with Batch::resource_directive({other:?}, \"<directive with {{n}}>\")",
                        spec.name
                    )));
                }
            }
        }
        Ok(needs)
    }

    fn directives(&self, spec: &WorkerSpec) -> Result<Vec<String>, LaunchError> {
        let r = &self.resources;
        let needs = self.worker_needs(spec)?;
        let cores = needs.cores;
        let name = sanitize_name(&spec.name);
        let out = directive_path(&spec.stdout).map_err(|e| self.config(e))?;
        let err = directive_path(&spec.stderr).map_err(|e| self.config(e))?;
        let mem = r
            .memory
            .map(|m| format_memory(self.system, m, self.lsf_unit));
        let wall = r.walltime.map(|w| format_walltime(self.system, w));
        // Flags for the job name, the queue and the account, then the common header.
        let (name_flag, queue_flag, account_flag) = match self.system {
            BatchSystem::Slurm => ("-J", "-p", "-A"),
            BatchSystem::Lsf => ("-J", "-q", "-P"),
            BatchSystem::Pbs => ("-N", "-q", "-A"),
            BatchSystem::Sge => ("-N", "-q", "-P"),
        };
        let mut d = vec![
            format!("{name_flag} {name}"),
            format!("-o {out}"),
            format!("-e {err}"),
        ];
        if let Some(q) = &r.queue {
            d.push(format!("{queue_flag} {q}"));
        }
        if let Some(a) = &r.account {
            d.push(format!("{account_flag} {a}"));
        }
        match self.system {
            BatchSystem::Slurm => {
                d.push("-n 1".into());
                d.push("-N 1".into());
                d.extend(cores.map(|c| format!("--cpus-per-task={c}")));
                d.extend(mem.map(|m| format!("--mem={m}")));
                d.extend(wall.map(|w| format!("-t {w}")));
                // sbatch(1): `--gres=<list>`, a comma-separated list of `name[[:type]:count]`
                // (https://slurm.schedmd.com/gres.html, "Running Jobs").
                if !needs.gres.is_empty() {
                    d.push(format!("--gres={}", needs.gres.join(",")));
                }
            }
            BatchSystem::Lsf => {
                if let Some(c) = cores {
                    d.push(format!("-n {c}"));
                    if c > 1 {
                        d.push("-R \"span[hosts=1]\"".into());
                    }
                }
                if let Some(m) = mem {
                    d.push(format!("-M {m}"));
                    d.push(format!("-R \"rusage[mem={m}]\""));
                }
                d.extend(wall.map(|w| format!("-W {w}")));
                // bsub -gpu "num=N[/task|host]..." (IBM Spectrum LSF 10.1, "Submitting jobs
                // that require GPU resources"; needs LSB_GPU_NEW_SYNTAX=Y or extend): N GPUs
                // per host, and a worker job is on one host.
                d.extend(needs.gpus.map(|g| format!("-gpu \"num={g}\"")));
            }
            BatchSystem::Pbs => {
                if cores.is_some()
                    || mem.is_some()
                    || needs.gpus.is_some()
                    || !needs.chunk.is_empty()
                {
                    let mut select = format!("-l select=1:ncpus={}", cores.unwrap_or(1));
                    if let Some(m) = mem {
                        select.push_str(&format!(":mem={m}"));
                    }
                    // ngpus is a chunk-level resource of PBS Professional / OpenPBS
                    // (pbs_resources(7B): "select=1:ncpus=4:ngpus=2").
                    if let Some(g) = needs.gpus {
                        select.push_str(&format!(":ngpus={g}"));
                    }
                    select.push_str(&needs.chunk);
                    d.push(select);
                }
                d.extend(wall.map(|w| format!("-l walltime={w}")));
            }
            BatchSystem::Sge => {
                match (cores, &r.parallel_environment) {
                    (Some(c), Some(pe)) => d.push(format!("-pe {pe} {c}")),
                    (Some(c), None) if c > 1 => {
                        return Err(self.config(format!(
                            "{c} cores need a parallel environment on SGE (Resources::parallel_environment, e.g. \"smp\")"
                        )));
                    }
                    _ => {}
                }
                d.extend(mem.map(|m| format!("-l h_vmem={m}")));
                d.extend(wall.map(|w| format!("-l h_rt={w}")));
                // qsub(1) -l resource=value: `gpu` is the consumable complex sites define for
                // GPUs (qconf -mc; e.g. the sge-gpuprolog setup, "qsub -l gpu=1").
                d.extend(needs.gpus.map(|g| format!("-l gpu={g}")));
                d.push("-cwd".into());
            }
        }
        d.extend(needs.lines);
        d.extend(r.extra_directives.iter().cloned());
        d.retain(|line| !r.skip_directives.iter().any(|s| line.contains(s.as_str())));
        Ok(d)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if let Some(dir) = &self.bin_dir {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![dir.clone()];
            paths.extend(std::env::split_paths(&path));
            if let Ok(joined) = std::env::join_paths(paths) {
                cmd.env("PATH", joined);
            }
        }
        cmd
    }

    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<Output, LaunchError> {
        let line = std::iter::once(program.to_owned())
            .chain(args.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| LaunchError::Spawn {
            launcher: self.system.to_string(),
            command: line.clone(),
            source,
        };
        let mut child = super::spawn(&mut cmd).map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input).map_err(spawn_err)?;
        }
        child.wait_with_output().map_err(spawn_err)
    }

    fn failed(&self, command: &str, out: &Output) -> LaunchError {
        command_failed(self.name(), command, out)
    }

    /// Finds the job id in a submit command's output.
    fn parse_job_id(&self, command: &str, stdout: &str) -> Result<JobId, LaunchError> {
        find_job_id(self.name(), &self.job_id_regex, command, stdout)
    }
}

/// What one worker needs, as a system asks for it.
#[derive(Debug, Default)]
struct Needs {
    /// Cores: the worker's `cpu`, else [`Resources::cores`].
    cores: Option<u32>,
    /// GPUs per worker (LSF, PBS, SGE).
    gpus: Option<u64>,
    /// SLURM generic resources, `name:count`.
    gres: Vec<String>,
    /// PBS: `:resource=value` appended to the select chunk.
    chunk: String,
    /// Directive lines from [`Batch::resource_directive`].
    lines: Vec<String>,
}

#[allow(clippy::expect_used)] // constant patterns, covered by the tests
fn default_regex(system: BatchSystem) -> Regex {
    Regex::new(system.default_id_regex()).expect("valid default job id regex")
}

/// `LSF_UNIT_FOR_LIMITS` from `$LSF_ENVDIR/lsf.conf`, if set.
fn lsf_unit_from_conf() -> Option<LsfUnit> {
    let dir = std::env::var_os("LSF_ENVDIR")?;
    let conf = std::fs::read_to_string(Path::new(&dir).join("lsf.conf")).ok()?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("LSF_UNIT_FOR_LIMITS"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .find_map(LsfUnit::parse)
}

/// A job name every system accepts.
fn sanitize_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "blockwise".into() } else { s }
}

/// A path for a directive line (directives are not shell: no quoting, so no whitespace).
fn directive_path(p: &Path) -> Result<String, String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("log path {} is not valid UTF-8", p.display()))?;
    if s.chars().any(char::is_whitespace) {
        return Err(format!(
            "log path {s:?} contains whitespace, which batch directives cannot hold; choose a log directory without spaces"
        ));
    }
    Ok(s.to_owned())
}

/// The body shared by batch and template scripts: prologue, exports, cd, exec.
pub(super) fn script_body(spec: &WorkerSpec, prologue: &[String]) -> Result<String, String> {
    let mut s = String::new();
    for line in prologue {
        s.push_str(line);
        s.push('\n');
    }
    for (k, v) in &spec.env {
        let valid = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "environment variable name {k:?} is not valid in a shell"
            ));
        }
        if v.contains('\0') {
            return Err(format!("environment variable {k} holds a NUL byte"));
        }
        s.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    if let Some(dir) = &spec.workdir {
        let d = dir
            .to_str()
            .ok_or_else(|| format!("working directory {} is not valid UTF-8", dir.display()))?;
        s.push_str(&format!("cd {}\n", shell_quote(d)));
    }
    let program = spec
        .program
        .to_str()
        .ok_or_else(|| format!("program {} is not valid UTF-8", spec.program.display()))?;
    let mut words = vec![shell_quote(program)];
    for a in &spec.args {
        let a = a
            .to_str()
            .ok_or_else(|| format!("argument {a:?} is not valid UTF-8"))?;
        words.push(shell_quote(a));
    }
    s.push_str(&format!("exec {}\n", words.join(" ")));
    Ok(s)
}

/// Writes `script` as `<dir>/<name>.sh`, executable and readable by this user only (mode 0700:
/// it holds the run's token); creates the log directories too (mode 0700).
pub(super) fn write_script(
    launcher: &str,
    dir: Option<&Path>,
    spec: &WorkerSpec,
    script: &str,
) -> Result<PathBuf, LaunchError> {
    let io = |context: String| {
        let launcher = launcher.to_owned();
        move |source| LaunchError::Io {
            launcher,
            context,
            source,
        }
    };
    for p in [&spec.stdout, &spec.stderr] {
        if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            super::private_dir(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
    }
    let dir = dir
        .map(Path::to_path_buf)
        .or_else(|| spec.stderr.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    super::private_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let path = dir.join(format!("{}.sh", sanitize_name(&spec.name)));
    // The script holds the run's token: only this user may read it (0700, from creation on).
    super::write_private(&path, script.as_bytes(), 0o700)
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(path)
}

/// Reads a job's state from a status command's output.
fn parse_status(
    system: BatchSystem,
    job: &str,
    success: bool,
    stdout: &str,
    stderr: &str,
) -> Option<JobState> {
    let gone = || JobState::Finished {
        detail: "no longer in the queue".into(),
    };
    let text = format!("{stdout}\n{stderr}").to_ascii_lowercase();
    if text.contains("invalid job id")
        || text.contains("is not found")
        || text.contains("unknown job id")
        || text.contains("do not exist")
        || text.contains("does not exist")
    {
        return Some(gone());
    }
    match system {
        BatchSystem::Slurm => {
            if !success {
                return None;
            }
            let state = stdout.lines().map(str::trim).find(|l| !l.is_empty());
            Some(match state {
                None => gone(),
                Some("PENDING" | "CONFIGURING" | "REQUEUED" | "RESV_DEL_HOLD") => JobState::Pending,
                Some("RUNNING" | "COMPLETING" | "SUSPENDED" | "STAGE_OUT" | "SIGNALING") => {
                    JobState::Running
                }
                Some(other) => JobState::Finished {
                    detail: other.to_owned(),
                },
            })
        }
        BatchSystem::Lsf => {
            let state = stdout.lines().map(str::trim).find(|l| !l.is_empty());
            Some(match state {
                None if success => gone(),
                None => return None,
                Some("PEND" | "PSUSP" | "WAIT" | "PROV") => JobState::Pending,
                Some("RUN" | "USUSP" | "SSUSP") => JobState::Running,
                Some(other) => JobState::Finished {
                    detail: other.to_owned(),
                },
            })
        }
        BatchSystem::Pbs => {
            let row = stdout.lines().find(|l| {
                l.split_whitespace().next().is_some_and(|first| {
                    first == job
                        || first.starts_with(&format!("{job}."))
                        || job.starts_with(&format!("{first}."))
                })
            });
            let Some(row) = row else {
                return success.then(gone);
            };
            Some(match row.split_whitespace().nth(4) {
                Some("Q" | "H" | "W" | "T" | "S") => JobState::Pending,
                Some("R" | "E" | "B") => JobState::Running,
                Some(other) => JobState::Finished {
                    detail: format!("state {other}"),
                },
                None => JobState::Finished {
                    detail: row.trim().to_owned(),
                },
            })
        }
        BatchSystem::Sge => {
            if !success {
                return None;
            }
            let row = stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(job));
            let Some(row) = row else {
                return Some(gone());
            };
            let state = row.split_whitespace().nth(4).unwrap_or("");
            Some(if state.contains('E') {
                JobState::Finished {
                    detail: format!("error state {state}"),
                }
            } else if state.contains('r') || state.contains('t') {
                JobState::Running
            } else {
                JobState::Pending
            })
        }
    }
}

impl Launcher for Batch {
    fn name(&self) -> &str {
        match self.system {
            BatchSystem::Slurm => "slurm",
            BatchSystem::Lsf => "lsf",
            BatchSystem::Pbs => "pbs",
            BatchSystem::Sge => "sge",
        }
    }

    fn render(&self, spec: &WorkerSpec) -> Result<String, LaunchError> {
        let mut s = format!("{}\n", self.shebang);
        for d in self.directives(spec)? {
            s.push_str(&format!("{} {d}\n", self.system.prefix()));
        }
        s.push_str(&script_body(spec, &self.resources.prologue).map_err(|e| self.config(e))?);
        Ok(s)
    }

    fn submit(&self, spec: &WorkerSpec) -> Result<JobId, LaunchError> {
        let script = self.render(spec)?;
        let path = write_script(self.name(), self.script_dir.as_deref(), spec, &script)?;
        let path_str = path.to_string_lossy().into_owned();
        let (program, mut args, stdin) = match self.system {
            BatchSystem::Slurm => ("sbatch", vec!["--parsable".to_owned()], None),
            BatchSystem::Lsf => ("bsub", Vec::new(), Some(script.as_bytes())),
            BatchSystem::Pbs | BatchSystem::Sge => ("qsub", Vec::new(), None),
        };
        args.extend(self.submit_args.iter().cloned());
        if stdin.is_none() {
            args.push(path_str.clone());
        }
        let line = format!(
            "{program} {}{}",
            args.join(" "),
            if stdin.is_some() {
                format!(" < {path_str}")
            } else {
                String::new()
            }
        );
        let out = self.run(program, &args, stdin)?;
        if !out.status.success() {
            return Err(self.failed(&line, &out));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let id = self.parse_job_id(&line, &stdout)?;
        tracing::debug!(job = %id, script = %path.display(), "submitted {} job", self.system);
        Ok(id)
    }

    fn status(&self, job: &JobId) -> Result<JobState, LaunchError> {
        let (program, args): (&str, Vec<String>) = match self.system {
            BatchSystem::Slurm => (
                "squeue",
                vec![
                    "-h".into(),
                    "-j".into(),
                    job.0.clone(),
                    "-o".into(),
                    "%T".into(),
                ],
            ),
            BatchSystem::Lsf => (
                "bjobs",
                vec![
                    "-noheader".into(),
                    "-o".into(),
                    "stat".into(),
                    job.0.clone(),
                ],
            ),
            BatchSystem::Pbs => ("qstat", vec![job.0.clone()]),
            BatchSystem::Sge => ("qstat", Vec::new()),
        };
        let out = self.run(program, &args, None)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        parse_status(self.system, &job.0, out.status.success(), &stdout, &stderr)
            .ok_or_else(|| self.failed(&format!("{program} {}", args.join(" ")), &out))
    }

    fn cancel(&self, job: &JobId) -> Result<(), LaunchError> {
        let program = match self.system {
            BatchSystem::Slurm => "scancel",
            BatchSystem::Lsf => "bkill",
            BatchSystem::Pbs | BatchSystem::Sge => "qdel",
        };
        let out = self.run(program, std::slice::from_ref(&job.0), None)?;
        if out.status.success() {
            return Ok(());
        }
        // Already finished or unknown is not an error.
        match self.status(job) {
            Ok(state) if !state.is_alive() => Ok(()),
            _ => Err(self.failed(&format!("{program} {job}"), &out)),
        }
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// True for `gpu`: the batch system allocates the job's GPUs and sets
    /// `CUDA_VISIBLE_DEVICES` (see [what one worker needs](Batch#what-one-worker-needs)).
    fn assigns_devices(&self, resource: &str) -> bool {
        resource == GPU
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec() -> WorkerSpec {
        WorkerSpec {
            name: "blockwise-my task/3".into(),
            program: "/opt/bin/pipe line".into(),
            args: vec!["--x".into(), "it's".into()],
            env: vec![("BLOCKWISE_CONTEXT".into(), "{\"a\": 1}".into())],
            workdir: Some("/work dir".into()),
            stdout: "/logs/t/worker_3.out".into(),
            stderr: "/logs/t/worker_3.err".into(),
            resources: Vec::new(),
        }
    }

    fn full() -> Resources {
        Resources {
            cores: Some(4),
            memory: Some(16 << 30),
            walltime: Some(Duration::from_secs(3600 + 61)),
            queue: Some("short".into()),
            account: Some("lab".into()),
            parallel_environment: Some("smp".into()),
            extra_directives: vec!["--gres=gpu:1".into()],
            skip_directives: Vec::new(),
            prologue: vec!["source env.sh".into()],
        }
    }

    const BODY: &str = "export BLOCKWISE_CONTEXT='{\"a\": 1}'\ncd '/work dir'\nexec '/opt/bin/pipe line' --x 'it'\\''s'\n";

    #[test]
    fn slurm_script() {
        let s = Batch::slurm().resources(full()).render(&spec()).unwrap();
        assert_eq!(
            s,
            format!(
                "#!/usr/bin/env bash\n#SBATCH -J blockwise-my_task_3\n#SBATCH -o /logs/t/worker_3.out\n#SBATCH -e /logs/t/worker_3.err\n#SBATCH -p short\n#SBATCH -A lab\n#SBATCH -n 1\n#SBATCH -N 1\n#SBATCH --cpus-per-task=4\n#SBATCH --mem=16G\n#SBATCH -t 01:01:01\n#SBATCH --gres=gpu:1\nsource env.sh\n{BODY}"
            )
        );
        let bare = Batch::slurm().render(&spec()).unwrap();
        assert_eq!(
            bare,
            format!(
                "#!/usr/bin/env bash\n#SBATCH -J blockwise-my_task_3\n#SBATCH -o /logs/t/worker_3.out\n#SBATCH -e /logs/t/worker_3.err\n#SBATCH -n 1\n#SBATCH -N 1\n{BODY}"
            )
        );
    }

    #[test]
    fn lsf_script() {
        let s = Batch::lsf()
            .lsf_unit(LsfUnit::MB)
            .resources(full())
            .render(&spec())
            .unwrap();
        assert_eq!(
            s,
            format!(
                "#!/usr/bin/env bash\n#BSUB -J blockwise-my_task_3\n#BSUB -o /logs/t/worker_3.out\n#BSUB -e /logs/t/worker_3.err\n#BSUB -q short\n#BSUB -P lab\n#BSUB -n 4\n#BSUB -R \"span[hosts=1]\"\n#BSUB -M 17180\n#BSUB -R \"rusage[mem=17180]\"\n#BSUB -W 01:02\n#BSUB --gres=gpu:1\nsource env.sh\n{BODY}"
            )
        );
    }

    #[test]
    fn pbs_script() {
        let mut r = full();
        r.extra_directives = vec!["-l place=scatter".into()];
        let s = Batch::pbs().resources(r).render(&spec()).unwrap();
        assert_eq!(
            s,
            format!(
                "#!/usr/bin/env bash\n#PBS -N blockwise-my_task_3\n#PBS -o /logs/t/worker_3.out\n#PBS -e /logs/t/worker_3.err\n#PBS -q short\n#PBS -A lab\n#PBS -l select=1:ncpus=4:mem=16GB\n#PBS -l walltime=01:01:01\n#PBS -l place=scatter\nsource env.sh\n{BODY}"
            )
        );
    }

    #[test]
    fn sge_script_and_its_parallel_environment_rule() {
        let mut r = full();
        r.extra_directives.clear();
        let s = Batch::sge().resources(r.clone()).render(&spec()).unwrap();
        assert_eq!(
            s,
            format!(
                "#!/usr/bin/env bash\n#$ -N blockwise-my_task_3\n#$ -o /logs/t/worker_3.out\n#$ -e /logs/t/worker_3.err\n#$ -q short\n#$ -P lab\n#$ -pe smp 4\n#$ -l h_vmem=16G\n#$ -l h_rt=01:01:01\n#$ -cwd\nsource env.sh\n{BODY}"
            )
        );
        r.parallel_environment = None;
        let e = Batch::sge().resources(r).render(&spec()).unwrap_err();
        assert!(e.to_string().contains("parallel environment"), "{e}");
    }

    #[test]
    fn skipped_directives_and_bad_paths_and_names() {
        let mut r = full();
        r.skip_directives = vec!["--mem".into(), "-A ".into()];
        let s = Batch::slurm().resources(r).render(&spec()).unwrap();
        assert!(!s.contains("--mem") && !s.contains("-A lab"), "{s}");
        assert!(s.contains("--cpus-per-task=4"));
        let mut bad = spec();
        bad.stderr = "/my logs/w.err".into();
        let e = Batch::slurm().render(&bad).unwrap_err();
        assert!(e.to_string().contains("whitespace"), "{e}");
        let mut bad = spec();
        bad.env.push(("NOT-VALID".into(), "x".into()));
        let e = Batch::pbs().render(&bad).unwrap_err();
        assert!(e.to_string().contains("NOT-VALID"), "{e}");
        assert_eq!(sanitize_name("a b/c:d"), "a_b_c_d");
        assert_eq!(sanitize_name(""), "blockwise");
    }

    /// A worker needing 2 GPUs and 8 cores (the job's cores come from `cpu`, not from
    /// `Resources::cores = 4`), with the common header and body around it.
    fn needy() -> WorkerSpec {
        let mut s = spec();
        s.resources = vec![("gpu".into(), 2), ("cpu".into(), 8)];
        s
    }

    fn script(prefix: &str, lines: &[&str]) -> String {
        let mut s = "#!/usr/bin/env bash\n".to_owned();
        for l in lines {
            s.push_str(&format!("{prefix} {l}\n"));
        }
        s.push_str(BODY);
        s
    }

    const HEAD: [&str; 3] = [
        "-J blockwise-my_task_3",
        "-o /logs/t/worker_3.out",
        "-e /logs/t/worker_3.err",
    ];

    #[test]
    fn slurm_requests_gpus_cores_and_generic_resources() {
        let r = Resources {
            cores: Some(4),
            ..Resources::default()
        };
        let s = Batch::slurm()
            .resources(r.clone())
            .render(&needy())
            .unwrap();
        let want = [
            &HEAD[..],
            &["-n 1", "-N 1", "--cpus-per-task=8", "--gres=gpu:2"],
        ]
        .concat();
        assert_eq!(s, script("#SBATCH", &want));
        // Other names are generic resources too, on the same line, in the spec's order.
        let mut w = needy();
        w.resources.push(("nvme".into(), 1));
        w.resources.insert(0, ("bandwidth".into(), 4));
        let s = Batch::slurm().resources(r.clone()).render(&w).unwrap();
        assert!(
            s.contains("#SBATCH --cpus-per-task=8\n#SBATCH --gres=bandwidth:4,gpu:2,nvme:1\n"),
            "{s}"
        );
        // No resources: today's script, cores from Resources.
        let s = Batch::slurm().resources(r).render(&spec()).unwrap();
        assert!(
            s.contains("--cpus-per-task=4\n") && !s.contains("--gres"),
            "{s}"
        );
        // A zero count asks for nothing.
        let mut w = spec();
        w.resources = vec![("gpu".into(), 0)];
        assert!(!Batch::slurm().render(&w).unwrap().contains("gres"));
    }

    #[test]
    fn lsf_pbs_and_sge_request_gpus_in_their_own_syntax() {
        let s = Batch::lsf().render(&needy()).unwrap();
        let want = [
            &HEAD[..],
            &["-n 8", "-R \"span[hosts=1]\"", "-gpu \"num=2\""],
        ]
        .concat();
        assert_eq!(s, script("#BSUB", &want));

        let r = Resources {
            memory: Some(16 << 30),
            ..Resources::default()
        };
        let s = Batch::pbs().resources(r).render(&needy()).unwrap();
        let want = [
            "-N blockwise-my_task_3",
            "-o /logs/t/worker_3.out",
            "-e /logs/t/worker_3.err",
            "-l select=1:ncpus=8:mem=16GB:ngpus=2",
        ];
        assert_eq!(s, script("#PBS", &want));
        // GPUs alone make a select chunk too (one core, as PBS's default).
        let mut g = spec();
        g.resources = vec![("gpu".into(), 1)];
        let s = Batch::pbs().render(&g).unwrap();
        assert!(s.contains("#PBS -l select=1:ncpus=1:ngpus=1\n"), "{s}");

        let r = Resources {
            parallel_environment: Some("smp".into()),
            ..Resources::default()
        };
        let s = Batch::sge().resources(r).render(&needy()).unwrap();
        let want = [
            "-N blockwise-my_task_3",
            "-o /logs/t/worker_3.out",
            "-e /logs/t/worker_3.err",
            "-pe smp 8",
            "-l gpu=2",
            "-cwd",
        ];
        assert_eq!(s, script("#$", &want));
        // cpu from the worker follows the cores rules: more than one needs a PE on SGE.
        let e = Batch::sge().render(&needy()).unwrap_err();
        assert!(
            e.to_string()
                .contains("8 cores need a parallel environment"),
            "{e}"
        );
    }

    #[test]
    fn other_resources_need_a_configured_directive_outside_slurm() {
        let mut w = spec();
        w.resources = vec![("fpga".into(), 3)];
        for b in [Batch::lsf(), Batch::pbs(), Batch::sge()] {
            let e = b.render(&w).unwrap_err().to_string();
            assert!(
                e.contains("\"fpga\"") && e.contains("Batch::resource_directive"),
                "{e}"
            );
            assert!(matches!(b.submit(&w), Err(LaunchError::Config { .. })));
        }
        let lsf = Batch::lsf()
            .resource_directive("fpga", "-R \"rusage[fpga={n}]\"")
            .unwrap();
        assert!(
            lsf.render(&w)
                .unwrap()
                .contains("#BSUB -R \"rusage[fpga=3]\"\n")
        );
        // On PBS, ':' templates join the select chunk; others are directive lines.
        let pbs = Batch::pbs()
            .resource_directive("fpga", ":fpga={n}")
            .unwrap();
        assert!(
            pbs.render(&w)
                .unwrap()
                .contains("#PBS -l select=1:ncpus=1:fpga=3\n"),
            "{}",
            pbs.render(&w).unwrap()
        );
        let pbs = Batch::pbs()
            .resource_directive("fpga", "-l fpga={n}")
            .unwrap();
        assert!(pbs.render(&w).unwrap().contains("#PBS -l fpga=3\n"));
        // A template replaces the built-in rendering, also for gpu; setting it again replaces it.
        let mut g = spec();
        g.resources = vec![("gpu".into(), 1)];
        let slurm = Batch::slurm()
            .resource_directive("gpu", "--gpus-per-task={n}")
            .unwrap()
            .resource_directive("gpu", "--gres=gpu:a100:{n}")
            .unwrap();
        let s = slurm.render(&g).unwrap();
        assert!(
            s.contains("#SBATCH --gres=gpu:a100:1\n") && !s.contains("gpus-per-task"),
            "{s}"
        );
        assert_eq!(s.matches("--gres").count(), 1, "{s}");
        // Bad templates and names are refused when configured.
        for (name, t, what) in [
            ("fpga", "--x={count}", "unknown placeholder {count}"),
            ("fpga", "--x={n", "unclosed"),
            ("fpga", "--x={n}\n--y", "one non-empty line"),
            ("fpga", " ", "one non-empty line"),
            ("cpu", "-c {n}", "job's cores"),
            ("a b", "--x={n}", "not valid"),
            ("", "--x={n}", "not valid"),
        ] {
            let e = Batch::slurm()
                .resource_directive(name, t)
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{name:?} {t:?}: {e}");
        }
    }

    #[test]
    fn bad_resource_lists_are_errors() {
        let mut w = spec();
        w.resources = vec![("gpu".into(), 1), ("gpu".into(), 2)];
        let e = Batch::slurm().render(&w).unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        w.resources = vec![("gpu;rm -rf".into(), 1)];
        let e = Batch::slurm().render(&w).unwrap_err().to_string();
        assert!(e.contains("not valid"), "{e}");
        w.resources = vec![("cpu".into(), u64::from(u32::MAX) + 1)];
        let e = Batch::slurm().render(&w).unwrap_err().to_string();
        assert!(e.contains("more than a job can ask for"), "{e}");
    }

    #[test]
    fn batch_systems_assign_gpus_themselves() {
        for b in [Batch::slurm(), Batch::lsf(), Batch::pbs(), Batch::sge()] {
            assert!(b.assigns_devices("gpu"), "{}", b.system());
            assert!(!b.assigns_devices("cpu"));
            assert!(!b.assigns_devices("fpga"));
            // Through a shared handle too.
            let shared: std::sync::Arc<dyn Launcher> = std::sync::Arc::new(b);
            assert!(std::sync::Arc::clone(&shared).assigns_devices("gpu"));
        }
    }

    #[test]
    fn job_ids_from_real_submit_output() {
        let id = |b: Batch, out: &str| b.parse_job_id("submit", out).map(|j| j.0);
        assert_eq!(id(Batch::slurm(), "12345\n").unwrap(), "12345");
        assert_eq!(id(Batch::slurm(), "12345;cluster2\n").unwrap(), "12345");
        assert_eq!(
            id(Batch::lsf(), "Job <4321> is submitted to queue <normal>.\n").unwrap(),
            "4321"
        );
        assert_eq!(
            id(Batch::pbs(), "987.pbs-server\n").unwrap(),
            "987.pbs-server"
        );
        assert_eq!(
            id(
                Batch::sge(),
                "Your job 55 (\"blockwise-t-0\") has been submitted\n"
            )
            .unwrap(),
            "55"
        );
        let e = id(Batch::lsf(), "Request aborted by esub.\n").unwrap_err();
        assert!(e.to_string().contains("no job id"), "{e}");
        assert!(id(Batch::slurm(), "").is_err());
        let custom = Batch::slurm().job_id_regex(r"id=(\w+)").unwrap();
        assert_eq!(id(custom, "ok id=ab12").unwrap(), "ab12");
        assert!(Batch::slurm().job_id_regex("(").is_err());
    }

    #[test]
    fn status_from_real_outputs() {
        use BatchSystem::*;
        let p = |s, out: &str, err: &str, ok| parse_status(s, "42", ok, out, err);
        assert_eq!(p(Slurm, "PENDING\n", "", true), Some(JobState::Pending));
        assert_eq!(p(Slurm, "RUNNING\n", "", true), Some(JobState::Running));
        assert!(matches!(
            p(Slurm, "", "", true),
            Some(JobState::Finished { .. })
        ));
        assert!(matches!(
            p(
                Slurm,
                "",
                "slurm_load_jobs error: Invalid job id specified",
                false
            ),
            Some(JobState::Finished { .. })
        ));
        assert_eq!(p(Slurm, "", "connection refused", false), None);
        assert_eq!(p(Lsf, "PEND\n", "", true), Some(JobState::Pending));
        assert_eq!(p(Lsf, "RUN\n", "", true), Some(JobState::Running));
        assert!(matches!(
            p(Lsf, "EXIT\n", "", true),
            Some(JobState::Finished { .. })
        ));
        assert!(matches!(
            p(Lsf, "", "Job <42> is not found", false),
            Some(JobState::Finished { .. })
        ));
        let pbs = "Job id            Name             User              Time Use S Queue\n----------------  ---------------- ----------------  -------- - -----\n42.server         blockwise-t-0    me                00:00:01 R workq\n";
        assert_eq!(p(Pbs, pbs, "", true), Some(JobState::Running));
        assert_eq!(
            p(Pbs, &pbs.replace(" R ", " Q "), "", true),
            Some(JobState::Pending)
        );
        assert!(matches!(
            p(Pbs, "", "qstat: Unknown Job Id 42.server", false),
            Some(JobState::Finished { .. })
        ));
        let sge = "job-ID  prior   name       user         state submit/start at     queue          slots ja-task-ID\n-----------------------------------------------------------------\n     42 0.55500 blockwise- root         r     11/24/2026 21:00:00 all.q@vm       1\n     7 0.55500 other      root         qw    11/24/2026 21:00:00                1\n";
        assert_eq!(p(Sge, sge, "", true), Some(JobState::Running));
        assert_eq!(
            parse_status(Sge, "7", true, sge, ""),
            Some(JobState::Pending)
        );
        assert!(matches!(
            parse_status(Sge, "8", true, sge, ""),
            Some(JobState::Finished { .. })
        ));
        assert!(matches!(
            p(Sge, &sge.replace(" r ", " Eqw "), "", true),
            Some(JobState::Finished { .. })
        ));
    }
}
