//! The worker jobs a driver submitted (the process runner's, or an executor pool's): which are
//! alive, which are connected, which ended before connecting, and stopping them all.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::launch::{JobId, Launcher};

/// One submitted worker, by its launch id (the worker id in its context).
pub(crate) struct Job<K> {
    /// What the worker serves (a task's index, or nothing for an executor pool).
    pub(crate) key: K,
    pub(crate) job: JobId,
    pub(crate) stderr: PathBuf,
    /// The connection it made, while connected.
    pub(crate) conn: Option<u64>,
    ever_connected: bool,
    /// The job may still be running.
    pub(crate) alive: bool,
    /// The worker announced it retires (it no longer counts towards the live workers).
    pub(crate) retiring: bool,
    last_poll: Instant,
}

/// Every job a driver submitted.
pub(crate) struct Jobs<K> {
    launcher: Arc<dyn Launcher>,
    jobs: FxHashMap<u64, Job<K>>,
    /// Jobs given up on (disconnected, killed, cancelled) whose end [`Jobs::take_ended`] has
    /// not yet seen.
    exiting: Vec<u64>,
}

impl<K: Copy + PartialEq> Jobs<K> {
    pub(crate) fn new(launcher: Arc<dyn Launcher>) -> Jobs<K> {
        Jobs {
            launcher,
            jobs: FxHashMap::default(),
            exiting: Vec::new(),
        }
    }

    pub(crate) fn insert(&mut self, id: u64, key: K, job: JobId, stderr: PathBuf) {
        self.jobs.insert(
            id,
            Job {
                key,
                job,
                stderr,
                conn: None,
                ever_connected: false,
                alive: true,
                retiring: false,
                last_poll: Instant::now(),
            },
        );
    }

    /// Jobs serving `key` that are alive and not retiring.
    /// The jobs given up on that are now gone (each once): what they held can be reused. A job
    /// that was told to leave, killed or cancelled may still run for a moment (exiting, or
    /// until the batch system acts); it is polled, at most once per the launcher's poll
    /// interval, until its launcher says it no longer runs (or cannot say).
    pub(crate) fn take_ended(&mut self) -> Vec<u64> {
        let every = self.launcher.poll_interval();
        let mut gone = Vec::new();
        self.exiting.retain(|id| {
            let Some(j) = self.jobs.get_mut(id) else {
                gone.push(*id);
                return false;
            };
            if j.last_poll.elapsed() < every {
                return true;
            }
            j.last_poll = Instant::now();
            match self.launcher.status(&j.job) {
                Ok(state) if state.is_alive() => true,
                Ok(_) => {
                    gone.push(*id);
                    false
                }
                Err(e) => {
                    tracing::warn!("status of job {}: {e}; counting it as ended", j.job);
                    gone.push(*id);
                    false
                }
            }
        });
        gone
    }

    pub(crate) fn live(&self, key: K) -> usize {
        self.jobs
            .values()
            .filter(|j| j.key == key && j.alive && !j.retiring)
            .count()
    }

    /// The worker of launch `id` (if any) retires: it no longer counts as live.
    pub(crate) fn retiring(&mut self, id: Option<u64>) {
        if let Some(j) = id.and_then(|id| self.jobs.get_mut(&id)) {
            j.retiring = true;
        }
    }

    /// A worker announcing launch id `id` for `key` connected as `conn`: returns `Some(id)` if
    /// it is a job of ours waiting for its connection.
    pub(crate) fn attach(&mut self, id: u64, key: K, conn: u64) -> Option<u64> {
        match self.jobs.get_mut(&id) {
            Some(j) if j.key == key && j.conn.is_none() && j.alive => {
                j.conn = Some(conn);
                j.ever_connected = true;
                Some(id)
            }
            _ => None,
        }
    }

    /// Job `id`'s connection ended. Unless the worker left gracefully, its job is stopped (a
    /// worker that hung or broke the connection may still run). Returns the job's state for
    /// messages (`"; job <id>: <state>"`, empty when graceful) and its stderr file.
    pub(crate) fn detach(&mut self, id: u64, graceful: bool) -> (String, Option<PathBuf>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return (String::new(), None);
        };
        j.conn = None;
        let mut detail = String::new();
        if !graceful {
            if j.alive
                && let Err(e) = self.launcher.cancel(&j.job)
            {
                tracing::warn!("cancelling job {}: {e}", j.job);
            }
            if let Ok(state) = self.launcher.status(&j.job) {
                detail = format!("; job {}: {state:?}", j.job);
            }
        }
        if j.alive {
            self.exiting.push(id);
        }
        j.alive = false;
        (detail, Some(j.stderr.clone()))
    }

    /// Stops job `id` (a worker past its timeout) and says what happened.
    pub(crate) fn kill(&mut self, id: u64, who: &str) -> String {
        let Some(j) = self.jobs.get_mut(&id) else {
            return format!("{who} disconnected (not started by this run, so not killed)");
        };
        j.conn = None;
        if j.alive {
            self.exiting.push(id);
        }
        j.alive = false;
        match self.launcher.cancel(&j.job) {
            Ok(()) => format!("{who} killed ({} job {})", self.launcher.name(), j.job),
            Err(e) => format!("{who} could not be killed: {e}"),
        }
    }

    /// Cancels the jobs of `key` that have not connected (nothing is left for them).
    pub(crate) fn cancel_unconnected(&mut self, key: K) {
        for (id, j) in &mut self.jobs {
            if j.key == key && j.alive && j.conn.is_none() {
                j.alive = false;
                self.exiting.push(*id);
                if let Err(e) = self.launcher.cancel(&j.job) {
                    tracing::warn!("cancelling job {}: {e}", j.job);
                }
            }
        }
    }

    /// Polls the jobs that are alive but not connected (each at most once per the launcher's
    /// poll interval) and returns those that ended without ever connecting, with a message
    /// carrying the tail of their stderr.
    pub(crate) fn ended_without_connecting(&mut self) -> Vec<(K, String)> {
        let every = self.launcher.poll_interval();
        let mut ended = Vec::new();
        for (id, j) in &mut self.jobs {
            if !j.alive || j.conn.is_some() || j.last_poll.elapsed() < every {
                continue;
            }
            j.last_poll = Instant::now();
            match self.launcher.status(&j.job) {
                Ok(state) if state.is_alive() => {}
                Ok(state) => {
                    j.alive = false;
                    self.exiting.push(*id);
                    if !j.ever_connected {
                        ended.push((
                            j.key,
                            format!(
                                "worker {id} ({} job {}) exited without connecting ({state:?}); {}",
                                self.launcher.name(),
                                j.job,
                                tail(&j.stderr, 20)
                            ),
                        ));
                    }
                }
                Err(e) => tracing::warn!("status of job {}: {e}", j.job),
            }
        }
        ended
    }

    /// Cancels every job (idempotent for jobs that already ended).
    pub(crate) fn cancel_all(&mut self) {
        let mut jobs: Vec<&JobId> = self.jobs.values().map(|j| &j.job).collect();
        jobs.sort();
        for job in jobs {
            if let Err(e) = self.launcher.cancel(job) {
                tracing::warn!("cancelling job {job}: {e}");
            }
        }
        for j in self.jobs.values_mut() {
            j.alive = false;
        }
    }

    /// At the end: with `wait`, gives local workers (told to leave) up to 2 s to exit on their
    /// own; then cancels every job.
    pub(crate) fn stop(&mut self, wait: bool) {
        if wait && self.launcher.poll_interval() <= Duration::from_millis(100) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let mut alive = 0;
                for j in self.jobs.values_mut().filter(|j| j.alive) {
                    match self.launcher.status(&j.job) {
                        Ok(s) if s.is_alive() => alive += 1,
                        _ => j.alive = false,
                    }
                }
                if alive == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.cancel_all();
    }
}

/// Takes the units a retiring worker gave back (hand-out numbers in `unstarted`) out of what
/// it holds, in order.
pub(crate) fn take_unstarted<U>(inflight: &mut VecDeque<(u64, U)>, unstarted: &[u64]) -> Vec<U> {
    let mut back = Vec::new();
    let mut keep = VecDeque::with_capacity(inflight.len());
    for (seq, unit) in inflight.drain(..) {
        if unstarted.contains(&seq) {
            back.push(unit);
        } else {
            keep.push_back((seq, unit));
        }
    }
    *inflight = keep;
    back
}

/// Puts `units` back at the front of `queue`, keeping their order.
pub(crate) fn requeue_front<U>(queue: &mut VecDeque<U>, units: Vec<U>) {
    for u in units.into_iter().rev() {
        queue.push_front(u);
    }
}

/// The last `lines` lines of a file (for start-up errors).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            let t = all[from..].join("\n");
            if t.trim().is_empty() {
                format!("{} is empty", path.display())
            } else {
                format!("stderr ({}):\n{t}", path.display())
            }
        }
        Err(e) => format!("could not read {}: {e}", path.display()),
    }
}

/// Whether starting a worker failed for a reason that may pass (out of file descriptors,
/// processes or memory for a moment): then it is retried after a pause and counts as a start-up
/// failure, instead of ending the run.
pub(crate) fn transient(error: &(dyn std::error::Error + 'static)) -> bool {
    use nix::errno::Errno;
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = e {
        if let Some(code) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return [
                Errno::EMFILE,
                Errno::ENFILE,
                Errno::EAGAIN,
                Errno::ENOMEM,
                Errno::EINTR,
            ]
            .iter()
            .any(|t| *t as i32 == code);
        }
        e = err.source();
    }
    false
}

/// The pause before the next attempt to start a worker after transient failures: 250 ms,
/// doubling up to 10 s, back to none after a success.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    not_before: Option<Instant>,
    failures: u32,
}

impl Backoff {
    /// Whether a worker may be started now.
    pub(crate) fn ready(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    /// A start failed: returns the pause before the next try.
    pub(crate) fn failed(&mut self) -> Duration {
        let pause = Duration::from_millis(250)
            .saturating_mul(1 << self.failures.min(6))
            .min(Duration::from_secs(10));
        self.failures += 1;
        self.not_before = Some(Instant::now() + pause);
        pause
    }

    /// A start succeeded.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resource_exhaustion_is_transient() {
        let emfile = std::io::Error::from_raw_os_error(nix::errno::Errno::EMFILE as i32);
        let launch = crate::launch::LaunchError::Io {
            launcher: "local".into(),
            context: "creating a log".into(),
            source: emfile,
        };
        let wrapped = crate::Error::from(launch);
        assert!(transient(&wrapped));
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(!transient(&missing));
        let eacces = std::io::Error::from_raw_os_error(nix::errno::Errno::EACCES as i32);
        assert!(!transient(&eacces));
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let mut b = Backoff::default();
        assert!(b.ready());
        assert_eq!(b.failed(), Duration::from_millis(250));
        assert!(!b.ready());
        assert_eq!(b.failed(), Duration::from_millis(500));
        for _ in 0..10 {
            b.failed();
        }
        assert_eq!(b.failed(), Duration::from_secs(10));
        b.succeeded();
        assert!(b.ready());
    }
}
