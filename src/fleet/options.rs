//! Settings of worker processes, shared by the process runner and the executor's pools:
//! [`WorkerOptions`] (public) and the [`ProcessOptions`] it carries to the fleet.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::context::Context;
use super::transport::Transport;
use crate::launch::{Launcher, Local};
use crate::run::DEFAULT_MAX_OUTPUT;

/// The default idle timeout of workers: 60 s.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of worker processes (a process run, or an executor's worker pool).
#[derive(Debug, Clone)]
pub(crate) struct ProcessOptions {
    pub(crate) launcher: Arc<dyn Launcher>,
    pub(crate) log_dir: PathBuf,
    pub(crate) command: Option<(PathBuf, Vec<OsString>)>,
    pub(crate) bind: Option<SocketAddr>,
    pub(crate) advertise: Option<String>,
    pub(crate) heartbeat: Duration,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) death_timeout: Duration,
    pub(crate) lifetime: Option<Duration>,
    /// A worker whose group has had no work for this long leaves (its job ends).
    pub(crate) idle_timeout: Duration,
    pub(crate) handle_signals: bool,
    /// `None`: on unless workers are local processes on loopback.
    pub(crate) tls: Option<bool>,
    pub(crate) hello_timeout: Duration,
    pub(crate) max_unauthenticated: usize,
    /// The block output cap of the run (set by the process runner; it sizes session frames).
    pub(crate) max_output: usize,
}

impl ProcessOptions {
    pub(crate) fn new(launcher: Arc<dyn Launcher>) -> ProcessOptions {
        ProcessOptions {
            launcher,
            log_dir: PathBuf::from("blockwise_logs"),
            command: None,
            bind: None,
            advertise: None,
            heartbeat: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(30),
            death_timeout: Duration::from_secs(60),
            lifetime: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            handle_signals: true,
            tls: None,
            hello_timeout: Duration::from_secs(10),
            max_unauthenticated: 64,
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }

    /// The context of worker `worker_id` serving `task_id` (a task, or an executor pool).
    pub(crate) fn context(
        &self,
        transport: &Transport,
        task_id: &str,
        worker_id: u64,
        prefetch: usize,
    ) -> Context {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Context {
            addr: transport.addr.clone(),
            token: transport.token.clone(),
            tls: transport.tls.clone(),
            task_id: task_id.to_owned(),
            worker_id,
            log_dir: Some(self.log_dir.clone()),
            heartbeat_ms: ms(self.heartbeat),
            death_timeout_ms: ms(self.death_timeout),
            lifetime_ms: self.lifetime.map(ms),
            prefetch: Some(u32::try_from(prefetch).unwrap_or(u32::MAX)),
            max_output_bytes: Some(self.max_output as u64),
            devices: Vec::new(),
            devices_from_env: false,
        }
    }
}

/// Everything about worker processes: which [`Launcher`] starts them, where their logs go, the
/// command they run, the address they connect to, TLS, heartbeats and time-outs. One value
/// serves both the block runner ([`Runner::workers`](crate::Runner::workers)) and the executor
/// ([`ExecutorBuilder::workers`](crate::exec::ExecutorBuilder::workers)).
///
/// A by-value builder: [`WorkerOptions::new`] is local processes (a [`Local`] launcher),
/// [`WorkerOptions::launcher`] workers started by a cluster's batch system; every setter keeps
/// the others. Values that cannot work are raised to the least that can, as each setter says
/// (a zero heartbeat interval is 1 ms, a heartbeat timeout below the interval is the interval,
/// and so on), so a value built here is always usable.
///
/// ```
/// use blockwise::exec::{Executor, Function};
/// use blockwise::launch::Batch;
/// use blockwise::{Runner, WorkerOptions};
/// use std::time::Duration;
///
/// // SLURM jobs that retire before the walltime and log to a shared folder.
/// let cluster = WorkerOptions::launcher(Batch::slurm())
///     .log_dir("/shared/logs/predict")
///     .worker_lifetime(Duration::from_secs(3 * 3600))
///     .heartbeat(Duration::from_secs(5), Duration::from_secs(120));
/// assert_eq!(cluster.launcher_name(), "slurm");
///
/// // The same value configures a block run and an executor's pool.
/// let runner = Runner::new().workers(cluster.clone()); // `.run(tasks)` starts the jobs
/// let inc = Function::new("inc", |x: u64| Ok::<u64, String>(x + 1));
/// let pool = Executor::processes(8).workers(cluster).function(&inc); // `.start()` starts them
/// # let _ = (runner, pool);
///
/// // Local worker processes: the defaults, with a shorter death timeout. Values that cannot
/// // work are raised: a heartbeat timeout below the interval is the interval.
/// let local = WorkerOptions::new()
///     .death_timeout(Duration::from_secs(30))
///     .heartbeat(Duration::from_secs(2), Duration::from_secs(1));
/// assert_eq!(local.launcher_name(), "local");
/// # let _ = Runner::new().workers(local);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct WorkerOptions {
    pub(crate) process: ProcessOptions,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions::new()
    }
}

impl WorkerOptions {
    /// Worker processes on this machine (a [`Local`] launcher), connecting back over loopback
    /// TCP, with the defaults below.
    pub fn new() -> WorkerOptions {
        WorkerOptions::launcher(Local::new())
    }

    /// Worker processes started by `launcher` (a cluster's batch system or a command template,
    /// see [`crate::launch`]), with the defaults below.
    pub fn launcher(launcher: impl Launcher + 'static) -> WorkerOptions {
        WorkerOptions {
            process: ProcessOptions::new(Arc::new(launcher)),
        }
    }

    /// The name of the launcher (`"local"`, `"slurm"`, ...).
    #[must_use]
    pub fn launcher_name(&self) -> &str {
        self.process.launcher.name()
    }

    /// Where worker logs go: `<dir>/<task>/worker_<id>.out/.err` (for an executor,
    /// `<dir>/executor-<name>/...`), and `<dir>/jobs.txt` lists every job submitted (default
    /// `./blockwise_logs`).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.process.log_dir = dir.into();
        self
    }

    /// The command a worker runs (default: the current executable with the current
    /// arguments). It must reach the same `run` call (or use
    /// [`Client::from_env`](crate::Client::from_env)); for an executor, the same
    /// [`ExecutorBuilder::start`](crate::exec::ExecutorBuilder::start) with the same name and
    /// functions.
    pub fn worker_command(
        mut self,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        self.process.command = Some((program.into(), args.into_iter().map(Into::into).collect()));
        self
    }

    /// The address the scheduler listens on (port 0 picks a free port). By default it listens
    /// on the one address it tells workers to connect to: `127.0.0.1` for local workers, and
    /// for cluster launchers the address of [`advertise_host`](Self::advertise_host) (default:
    /// this machine's host name, resolved, preferring a non-loopback IPv4 address). A wildcard
    /// such as `0.0.0.0:0` listens on every interface.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.process.bind = Some(addr);
        self
    }

    /// The host name or address workers connect to (default: the bound address, else
    /// `127.0.0.1` for local workers and this machine's address for cluster launchers). Without
    /// [`bind`](Self::bind), the scheduler listens on this host's address.
    pub fn advertise_host(mut self, host: impl Into<String>) -> Self {
        self.process.advertise = Some(host.into());
        self
    }

    /// Whether the traffic between the scheduler and its workers is encrypted with TLS 1.3
    /// (default: on for cluster launchers and whenever the scheduler listens beyond loopback,
    /// off for local worker processes on loopback). The scheduler makes a certificate for the
    /// run; workers find its SHA-256 fingerprint in their context, beside the token, and accept
    /// no other. See the README's *Security* section.
    pub fn tls(mut self, on: bool) -> Self {
        self.process.tls = Some(on);
        self
    }

    /// A new connection must complete its TLS handshake and present the run's token within
    /// this long, or it is closed (default 10 s; at least 1 ms).
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.process.hello_timeout = timeout.max(MIN_DURATION);
        self
    }

    /// At most this many connections may wait for their hello at once; further ones are
    /// closed at once and counted in the log (default 64, at least 1, and never more than a
    /// quarter of the process's open-file limit).
    pub fn max_unauthenticated(mut self, connections: usize) -> Self {
        self.process.max_unauthenticated = connections.max(1);
        self
    }

    /// Heartbeats: a worker sends one when it has sent nothing for `interval` (the scheduler
    /// pings idle workers as often); a worker silent for `timeout` is presumed dead, its process
    /// stopped, and its work retried (defaults 1 s and 30 s). The interval is at least 1 ms and
    /// the timeout at least the interval.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.process.heartbeat = interval.max(MIN_DURATION);
        self.process.heartbeat_timeout = timeout.max(self.process.heartbeat);
        self
    }

    /// A worker that cannot reach the scheduler (or hears nothing from it) for this long exits
    /// (default 60 s; at least 1 ms). Keep it above the heartbeat interval: the scheduler pings
    /// idle workers that often.
    pub fn death_timeout(mut self, timeout: Duration) -> Self {
        self.process.death_timeout = timeout.max(MIN_DURATION);
        self
    }

    /// Workers retire after this long: they finish their current block (or item), give back
    /// the ones they prefetched, exit, and are replaced (set it below the cluster's walltime).
    /// A worker retires only after it completed one, so even a lifetime shorter than its
    /// set-up (or zero) makes progress. Default: no limit.
    pub fn worker_lifetime(mut self, lifetime: Duration) -> Self {
        self.process.lifetime = Some(lifetime);
        self
    }

    /// A worker whose task (or executor) has had no ready work for this long (default 60 s)
    /// leaves and its job ends; workers start again when work becomes ready (up to the
    /// task's `num_workers`). Zero releases idle workers at once. A finished task's workers
    /// leave at once whatever this is.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.process.idle_timeout = timeout;
        self
    }

    /// Whether a run (or an executor, while it lives) catches Ctrl-C and SIGTERM to cancel its
    /// jobs and stop with [`Error::Interrupted`](crate::Error::Interrupted) (default true; a
    /// second signal terminates at once). Programs that handle signals themselves (an
    /// embedding interpreter) turn it off and stop runs with a [`Cancel`](crate::Cancel).
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.process.handle_signals = handle;
        self
    }
}

/// The least heartbeat interval, hello timeout and death timeout.
const MIN_DURATION: Duration = Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_local_processes() {
        let w = WorkerOptions::new();
        assert_eq!(w.launcher_name(), "local");
        let p = &w.process;
        assert_eq!(p.log_dir, PathBuf::from("blockwise_logs"));
        assert_eq!(p.command, None);
        assert_eq!(
            (p.heartbeat, p.heartbeat_timeout),
            (Duration::from_secs(1), Duration::from_secs(30))
        );
        assert_eq!(p.death_timeout, Duration::from_secs(60));
        assert_eq!(p.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(p.lifetime, None);
        assert_eq!(p.tls, None);
        assert!(p.handle_signals);
        assert_eq!(WorkerOptions::default().launcher_name(), "local");
    }

    #[test]
    fn setters_keep_each_other() {
        let w = WorkerOptions::launcher(crate::launch::Batch::slurm())
            .log_dir("logs")
            .worker_command("/bin/worker", ["--serve"])
            .advertise_host("node1")
            .tls(false)
            .worker_lifetime(Duration::from_secs(5))
            .idle_timeout(Duration::ZERO)
            .handle_signals(false);
        let p = &w.process;
        assert_eq!(w.launcher_name(), "slurm");
        assert_eq!(p.log_dir, PathBuf::from("logs"));
        assert_eq!(
            p.command,
            Some((
                PathBuf::from("/bin/worker"),
                vec![OsString::from("--serve")]
            ))
        );
        assert_eq!(p.advertise.as_deref(), Some("node1"));
        assert_eq!(p.tls, Some(false));
        assert_eq!(p.lifetime, Some(Duration::from_secs(5)));
        assert_eq!(p.idle_timeout, Duration::ZERO);
        assert!(!p.handle_signals);
    }

    #[test]
    fn zero_values_are_raised_to_the_least_that_works() {
        let w = WorkerOptions::new()
            .hello_timeout(Duration::ZERO)
            .death_timeout(Duration::ZERO)
            .max_unauthenticated(0)
            .heartbeat(Duration::ZERO, Duration::ZERO);
        let p = &w.process;
        assert_eq!(p.hello_timeout, MIN_DURATION);
        assert_eq!(p.death_timeout, MIN_DURATION);
        assert_eq!(p.max_unauthenticated, 1);
        assert_eq!(
            (p.heartbeat, p.heartbeat_timeout),
            (MIN_DURATION, MIN_DURATION)
        );
    }

    #[test]
    fn runner_processes_keeps_the_worker_options_it_has() {
        let w = || WorkerOptions::new().log_dir("kept-logs");
        let debug = |r: crate::Runner| format!("{r:?}");
        assert!(debug(crate::Runner::new().workers(w()).processes()).contains("kept-logs"));
        assert!(debug(crate::Runner::new().processes()).contains("blockwise_logs"));
        assert!(debug(crate::Runner::new()).contains("processes: None"));
    }

    proptest! {
        /// Whatever it is given, the heartbeat is at least 1 ms, the silence timeout at least
        /// the interval, and values that work are kept as given.
        #[test]
        fn heartbeat_timeout_is_never_below_the_interval(interval_us in 0u64..10_000_000, timeout_us in 0u64..10_000_000) {
            let (interval, timeout) = (Duration::from_micros(interval_us), Duration::from_micros(timeout_us));
            let p = WorkerOptions::new().heartbeat(interval, timeout).process;
            prop_assert!(p.heartbeat >= MIN_DURATION);
            prop_assert!(p.heartbeat_timeout >= p.heartbeat);
            if interval >= MIN_DURATION {
                prop_assert_eq!(p.heartbeat, interval);
                if timeout >= interval {
                    prop_assert_eq!(p.heartbeat_timeout, timeout);
                }
            }
        }
    }
}
