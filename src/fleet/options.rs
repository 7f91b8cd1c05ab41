//! Settings of worker processes, shared by the process runner and the executor's pools.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::context::Context;
use super::transport::Transport;
use crate::launch::Launcher;
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
