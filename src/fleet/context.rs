//! `BLOCKWISE_CONTEXT`: what a worker process needs to find its scheduler.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, WorkerErrorKind};

/// The environment variable holding a worker's context.
pub const CONTEXT_ENV: &str = "BLOCKWISE_CONTEXT";

/// A context longer than this is refused unread.
const MAX_CONTEXT: usize = 64 << 10;

/// A worker's context: JSON in [`CONTEXT_ENV`], so paths and ids may hold any character.
///
/// It holds the run's secret token: its `Debug` form leaves the token out, and nothing prints
/// the encoded form.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Context {
    /// The scheduler's address, `host:port`.
    pub addr: String,
    /// The run's secret token.
    pub token: String,
    /// The SHA-256 (hex) of the scheduler's TLS certificate, if the transport is encrypted.
    #[serde(default)]
    pub tls: Option<String>,
    /// The task this worker serves.
    pub task_id: String,
    /// The worker's id (its log files are `worker_<id>.out/.err`).
    pub worker_id: u64,
    /// The run's log directory.
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    /// How often the worker must show a sign of life, in milliseconds.
    pub heartbeat_ms: u64,
    /// How long the worker waits for an unreachable scheduler before it exits, in milliseconds.
    pub death_timeout_ms: u64,
    /// After this many milliseconds the worker retires (finishing its current block first).
    #[serde(default)]
    pub lifetime_ms: Option<u64>,
    /// How many blocks the worker may hold (also told by the scheduler).
    #[serde(default)]
    pub prefetch: Option<u32>,
    /// The largest block output in bytes (default 1 MiB); it also sizes the frames.
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
    /// The `gpu` ids the worker holds (from the run's resource budget).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// The batch system placed the worker's `gpu` devices itself: they are what it put in
    /// `CUDA_VISIBLE_DEVICES`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub devices_from_env: bool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("addr", &self.addr)
            .field("token", &"<secret>")
            .field("tls", &self.tls)
            .field("task_id", &self.task_id)
            .field("worker_id", &self.worker_id)
            .field("log_dir", &self.log_dir)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn encode(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes a context. The error names what is wrong but never echoes the text, which may
    /// hold the token.
    pub(crate) fn decode(s: &str) -> Result<Context, Error> {
        if s.len() > MAX_CONTEXT {
            return Err(Error::worker(
                WorkerErrorKind::BadContext,
                format!(
                    "{CONTEXT_ENV} is not a valid worker context: {} bytes, more than {MAX_CONTEXT}",
                    s.len()
                ),
            ));
        }
        serde_json::from_str(s).map_err(|e| {
            Error::worker(
                WorkerErrorKind::BadContext,
                format!(
                    "{CONTEXT_ENV} is not a valid worker context ({e}; {} bytes)",
                    s.len()
                ),
            )
        })
    }

    /// The context of this process, if it was started as a worker.
    pub(crate) fn from_env() -> Result<Option<Context>, Error> {
        match std::env::var(CONTEXT_ENV) {
            Ok(s) => Context::decode(&s).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::worker(
                WorkerErrorKind::BadContext,
                format!("{CONTEXT_ENV} is not valid UTF-8"),
            )),
        }
    }

    pub(crate) fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(1))
    }

    pub(crate) fn death_timeout(&self) -> Duration {
        Duration::from_millis(self.death_timeout_ms.max(1))
    }

    /// The run's output cap (see `Runner::max_output_bytes`).
    pub(crate) fn max_output(&self) -> usize {
        self.max_output_bytes
            .map_or(crate::run::DEFAULT_MAX_OUTPUT, |n| {
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(crate::run::MAX_OUTPUT_LIMIT)
            })
    }
}

#[cfg(test)]
impl Context {
    /// A context for worker-side unit tests: task `task`, worker 0, token `t`, heartbeats every
    /// 20 ms, giving up after `death_ms`.
    pub(crate) fn for_test(addr: String, death_ms: u64) -> Context {
        Context {
            addr,
            token: "t".into(),
            tls: None,
            task_id: "task".into(),
            worker_id: 0,
            log_dir: None,
            heartbeat_ms: 20,
            death_timeout_ms: death_ms,
            lifetime_ms: None,
            prefetch: None,
            max_output_bytes: None,
            devices: Vec::new(),
            devices_from_env: false,
        }
    }
}

/// A fresh random token (128 bits from the OS, hex).
pub(crate) fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::Io {
            context: "reading /dev/urandom for the run's token".into(),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_with_any_characters() {
        let c = Context {
            addr: "127.0.0.1:4000".into(),
            token: new_token().unwrap(),
            tls: Some("ab".repeat(32)),
            task_id: "a:b=c \"d\" é".into(),
            worker_id: 7,
            log_dir: Some(PathBuf::from("/tmp/with:colon=and space")),
            heartbeat_ms: 1000,
            death_timeout_ms: 60_000,
            lifetime_ms: Some(5),
            prefetch: Some(3),
            max_output_bytes: Some(1 << 20),
            devices: vec!["1".into()],
            devices_from_env: false,
        };
        assert_eq!(c.token.len(), 32);
        assert_eq!(Context::decode(&c.encode()).unwrap(), c);
        let e = Context::decode("hostname=x:port=1").unwrap_err();
        assert!(e.to_string().contains(CONTEXT_ENV), "{e}");
        // Neither errors nor Debug show the token.
        let mut broken = c.encode();
        broken.push('x');
        let e = Context::decode(&broken).unwrap_err().to_string();
        assert!(!e.contains(&c.token), "{e}");
        assert!(!format!("{c:?}").contains(&c.token));
        assert!(Context::decode(&" ".repeat(MAX_CONTEXT + 1)).is_err());
    }
}
