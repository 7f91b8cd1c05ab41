//! Opening the scheduler's end of the worker transport, shared by the process runner and the
//! executor's worker pools: the log directory (private), the address to listen on and to
//! advertise (one and the same), the run's token, TLS, the server, and file-descriptor
//! headroom.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;

use super::ProcessOptions;
use super::context::new_token;
use super::server::{Event, Server, ServerOptions, Timing};
use super::tls::ServerTls;
use crate::error::{Error, WorkerErrorKind};
use crate::launch::{Launcher, private_dir};

/// The scheduler's end, listening.
pub(crate) struct Transport {
    /// Kept for its `Drop`: dropping the transport stops the server.
    _server: Server,
    /// What workers connect to, `host:port` (the address the server listens on).
    pub(crate) addr: String,
    /// The run's secret.
    pub(crate) token: String,
    /// The SHA-256 of the run's certificate, if the transport is encrypted.
    pub(crate) tls: Option<String>,
}

/// Raises this process's soft limit on open files to its hard limit, once: a scheduler holds a
/// socket per worker and a log file per worker start.
pub(crate) fn raise_fd_limit() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            {
                Ok(()) => {
                    tracing::debug!(from = soft, to = hard, "raised the open-file limit");
                    hard
                }
                Err(e) => {
                    tracing::warn!(
                        "could not raise the open-file limit from {soft} to {hard}: {e}"
                    );
                    soft
                }
            },
            Ok((soft, _)) => soft,
            Err(e) => {
                tracing::warn!("could not read the open-file limit: {e}");
                1024
            }
        }
    })
}

/// Connections allowed to wait for their hello at once: the configured bound, but never more
/// than a quarter of the open-file limit, so that idle peers cannot take the descriptors that
/// workers, their log files and the run directory need.
fn unauthenticated_bound(configured: usize, fd_limit: u64) -> usize {
    let quarter = usize::try_from(fd_limit / 4).unwrap_or(usize::MAX);
    configured.min(quarter).max(1)
}

/// `host:port`, with brackets for IPv6 literals.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The address of `host` to listen on: a non-loopback IPv4 address if it has one, else a
/// non-loopback IPv6 one, else its loopback address.
fn resolve(host: &str) -> Result<IpAddr, String> {
    let addrs: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .map(|a| a.ip())
        .collect();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .or_else(|| addrs.iter().find(|ip| !ip.is_loopback()))
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

impl ProcessOptions {
    /// Where the server listens and what workers are told: `(bind, advertised host)`.
    ///
    /// * An explicit [`bind`](crate::WorkerOptions::bind) is used as given; workers are told the
    ///   advertised host if set, else the bound IP (or, for a wildcard bind, this machine's host
    ///   name, or `127.0.0.1` for local workers).
    /// * Local workers: loopback, unless an advertised host is set.
    /// * Otherwise the advertised host (default: this machine's host name) is resolved and the
    ///   server listens on that one address, which is what workers are told.
    pub(crate) fn endpoint(&self, launcher: &dyn Launcher) -> Result<(SocketAddr, String), Error> {
        let config = |message: String| Error::worker(WorkerErrorKind::Address, message);
        if let Some(bind) = self.bind {
            let host = match &self.advertise {
                Some(h) => h.clone(),
                None if !bind.ip().is_unspecified() => bind.ip().to_string(),
                None if launcher.runs_locally() => "127.0.0.1".into(),
                None => host_name(),
            };
            return Ok((bind, host));
        }
        if self.advertise.is_none() && launcher.runs_locally() {
            return Ok((
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                "127.0.0.1".into(),
            ));
        }
        let host = self.advertise.clone().unwrap_or_else(host_name);
        let ip = resolve(&host).map_err(|e| {
            config(format!(
                "the scheduler listens on the address workers connect to, but {e}; set WorkerOptions::advertise_host (the name or address workers reach this machine by) or WorkerOptions::bind"
            ))
        })?;
        if ip.is_loopback() && !launcher.runs_locally() {
            tracing::warn!(
                host,
                %ip,
                "this machine's host name resolves to a loopback address: workers on other machines cannot connect; set WorkerOptions::advertise_host or WorkerOptions::bind to an address they can reach"
            );
        }
        Ok((SocketAddr::new(ip, 0), ip.to_string()))
    }

    /// Whether the transport is encrypted: as configured, else whenever workers may run on
    /// other machines (any launcher but plain local processes, or a server reachable beyond
    /// loopback).
    pub(crate) fn tls_enabled(&self, launcher: &dyn Launcher, bind: SocketAddr) -> bool {
        self.tls
            .unwrap_or(!launcher.runs_locally() || !bind.ip().is_loopback())
    }

    /// Creates the log directory (private to this user), listens, and says where.
    pub(crate) fn open_transport(
        &self,
        events: crossbeam_channel::Sender<Event>,
    ) -> Result<Transport, Error> {
        let fd_limit = raise_fd_limit();
        private_dir(&self.log_dir).map_err(|source| Error::Io {
            context: format!("creating the log directory {}", self.log_dir.display()),
            source,
        })?;
        let launcher = self.launcher.as_ref();
        let (bind, host) = self.endpoint(launcher)?;
        let tls = if self.tls_enabled(launcher, bind) {
            Some(ServerTls::generate()?)
        } else {
            None
        };
        let token = new_token()?;
        let server = Server::start(
            bind,
            ServerOptions {
                token: token.clone(),
                timing: Timing {
                    ping: self.heartbeat,
                    silence: self.heartbeat_timeout,
                    hello: self.hello_timeout,
                },
                max_unauthenticated: unauthenticated_bound(self.max_unauthenticated, fd_limit),
                tls: tls.as_ref().map(|t| std::sync::Arc::clone(&t.config)),
                max_frame: super::protocol::session_limit(self.max_output),
            },
            events,
        )?;
        let addr = join_host_port(&host, server.addr().port());
        Ok(Transport {
            _server: server,
            addr,
            token,
            tls: tls.map(|t| t.fingerprint),
        })
    }
}

/// This machine's host name (`127.0.0.1` if it has none).
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::launch::{Batch, Local};
    use std::sync::Arc;

    #[test]
    fn the_unauthenticated_bound_keeps_file_descriptors_free() {
        assert_eq!(unauthenticated_bound(64, 1 << 20), 64);
        assert_eq!(unauthenticated_bound(64, 64), 16);
        assert_eq!(unauthenticated_bound(64, 2), 1);
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(join_host_port("::1", 5), "[::1]:5");
        assert_eq!(join_host_port("[::1]", 5), "[::1]:5");
        assert_eq!(join_host_port("node-1", 5), "node-1:5");
    }

    #[test]
    fn cluster_launchers_listen_where_they_advertise_and_encrypt() {
        let batch = ProcessOptions::new(Arc::new(Batch::slurm()));
        let (bind, host) = batch.endpoint(batch.launcher.as_ref()).unwrap();
        assert!(!bind.ip().is_unspecified(), "{bind}");
        assert_eq!(host, bind.ip().to_string());
        assert!(batch.tls_enabled(batch.launcher.as_ref(), bind));

        let local = ProcessOptions::new(Arc::new(Local::new()));
        let (bind, host) = local.endpoint(local.launcher.as_ref()).unwrap();
        assert!(bind.ip().is_loopback());
        assert_eq!(host, "127.0.0.1");
        assert!(!local.tls_enabled(local.launcher.as_ref(), bind));

        let mut forced = ProcessOptions::new(Arc::new(Local::new()));
        forced.tls = Some(true);
        assert!(forced.tls_enabled(forced.launcher.as_ref(), bind));
        let mut advertised = ProcessOptions::new(Arc::new(Batch::slurm()));
        advertised.advertise = Some("127.0.0.1".into());
        let (bind, host) = advertised.endpoint(advertised.launcher.as_ref()).unwrap();
        assert_eq!(
            (bind.ip().to_string(), host.as_str()),
            ("127.0.0.1".into(), "127.0.0.1")
        );
        advertised.advertise = Some("no-such-host.invalid".into());
        let e = advertised
            .endpoint(advertised.launcher.as_ref())
            .unwrap_err();
        assert!(e.to_string().contains("advertise_host"), "{e}");
    }
}
