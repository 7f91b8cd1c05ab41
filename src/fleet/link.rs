//! The worker end of a connection to the fleet: connecting (TCP, TLS, hello, welcome, with
//! retries), heartbeats and the delayed flushing of reports on a background thread, reading
//! the scheduler's messages, set-up failures, retiring and saying goodbye. The public block
//! [`Client`](crate::Client) and the executor's worker loop are both built on it.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::context::Context;
use super::protocol::{
    FrameError, ItemOutcome, Outcome, PROTOCOL_VERSION, ServerMsg, WorkerMsg, read_frame,
    session_limit, to_frame_limited,
};
use super::tls::{self, TlsReader, TlsWriter};
use crate::error::{Error, WorkerErrorKind};

/// Reports of finished blocks wait at most this long before they are sent (the scheduler
/// infers when a worker's next block started from them, for timeouts).
const FLUSH_LATENCY: Duration = Duration::from_millis(1);

/// The receiving half of the connection: plain TCP, or TLS.
enum ReadHalf {
    Plain(TcpStream),
    Tls(TlsReader),
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ReadHalf::Plain(s) => s.read(buf),
            ReadHalf::Tls(s) => s.read(buf),
        }
    }
}

/// The sending half of the connection.
enum WriteHalf {
    Plain(TcpStream),
    Tls(TlsWriter),
}

impl WriteHalf {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.write_all(bytes),
            WriteHalf::Tls(s) => s.write_all(bytes),
        }
    }

    fn shutdown(&mut self) {
        match self {
            WriteHalf::Plain(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            WriteHalf::Tls(s) => s.shutdown(),
        }
    }
}

/// The sending half, shared with the background thread that sends heartbeats and flushes
/// reports that waited [`FLUSH_LATENCY`].
pub(crate) struct Writer {
    stream: WriteHalf,
    last_sent: Instant,
    /// Block reports waiting to be sent.
    pub(crate) pending: Vec<Outcome>,
    /// Bytes of block outputs in `pending`.
    pub(crate) pending_output: usize,
    /// Executor results waiting to be sent.
    pub(crate) pending_items: Vec<ItemOutcome>,
    /// When the oldest waiting report was queued (the heartbeat thread sends it after
    /// [`FLUSH_LATENCY`]).
    pub(crate) first_pending: Option<Instant>,
    stop: bool,
    /// The largest frame the scheduler accepts from this worker.
    limit: usize,
}

impl Writer {
    /// Sends one message at once.
    pub(crate) fn send(&mut self, msg: &WorkerMsg) -> Result<(), Error> {
        let frame = to_frame_limited(msg, self.limit).map_err(|e| {
            worker_err(
                WorkerErrorKind::Protocol,
                format!("encoding a message: {e}"),
            )
        })?;
        self.stream.write_all(&frame).map_err(|e| {
            worker_err(
                WorkerErrorKind::ConnectionLost,
                format!("sending to the scheduler: {e}"),
            )
        })?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Sends the waiting reports.
    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        self.first_pending = None;
        if !self.pending.is_empty() {
            let results = std::mem::take(&mut self.pending);
            self.pending_output = 0;
            self.send(&WorkerMsg::Done { results })?;
        }
        if !self.pending_items.is_empty() {
            let results = std::mem::take(&mut self.pending_items);
            self.send(&WorkerMsg::Results { results })?;
        }
        Ok(())
    }
}

/// The writer and the condition variable that wakes the heartbeat thread.
pub(crate) struct Shared {
    writer: Mutex<Writer>,
    wake: Condvar,
}

impl Shared {
    /// Tells the heartbeat thread that a report waits.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The writer.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a connection attempt failed.
enum Attempt {
    /// Worth trying again (unreachable, or closed before the welcome).
    Again(String),
    /// Final: refused, a certificate that does not match, a broken protocol.
    Final(Error),
}

/// Connection failures a later attempt may not have.
fn retryable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionRefused
            | ErrorKind::UnexpectedEof
            | ErrorKind::BrokenPipe
            | ErrorKind::NotConnected
    )
}

fn worker_err(kind: WorkerErrorKind, message: String) -> Error {
    Error::worker(kind, message)
}

/// A worker's connection to its scheduler.
pub(crate) struct Link {
    ctx: Context,
    reader: BufReader<ReadHalf>,
    read_buf: Vec<u8>,
    shared: Arc<Shared>,
    started: Instant,
    shutdown: bool,
    retired: bool,
    said_bye: bool,
    said_ready: bool,
    /// Units reported so far.
    reported: u64,
    connection: u64,
    heartbeat: Option<JoinHandle<()>>,
}

impl Link {
    /// Connects, retrying for up to the death timeout while the scheduler cannot be reached or
    /// closes the connection before welcoming this worker (it may be busy refusing a flood of
    /// other peers: it closes connections beyond its bound at once). A refusal (wrong token or
    /// version) or a certificate that does not match is final.
    pub(crate) fn connect(ctx: Context) -> Result<Link, Error> {
        let deadline = Instant::now() + ctx.death_timeout();
        let mut delay = Duration::from_millis(20);
        loop {
            let failed = match Link::attempt(&ctx) {
                Ok(client) => return Ok(client),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Again(why)) => why,
            };
            if Instant::now() + delay >= deadline {
                return Err(worker_err(
                    WorkerErrorKind::Unreachable,
                    format!(
                        "could not reach the scheduler at {} within {:?}: {failed}",
                        ctx.addr,
                        ctx.death_timeout()
                    ),
                ));
            }
            tracing::debug!("connecting to {}: {failed}; retrying", ctx.addr);
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// One try: TCP, TLS, hello, welcome.
    fn attempt(ctx: &Context) -> Result<Link, Attempt> {
        let again = |what: &str, e: &dyn std::fmt::Display| Attempt::Again(format!("{what}: {e}"));
        let stream = ctx
            .addr
            .to_socket_addrs()
            .and_then(|mut addrs| {
                addrs.next().ok_or_else(|| {
                    std::io::Error::new(ErrorKind::NotFound, "address resolves to nothing")
                })
            })
            .and_then(|a| {
                TcpStream::connect_timeout(&a, ctx.death_timeout().min(Duration::from_secs(10)))
            })
            .map_err(|e| again("connecting", &e))?;
        let fatal = |what: &str, e: std::io::Error| {
            Attempt::Final(worker_err(
                WorkerErrorKind::ConnectionLost,
                format!("{what}: {e}"),
            ))
        };
        stream
            .set_nodelay(true)
            .map_err(|e| fatal("configuring the socket", e))?;
        stream
            .set_read_timeout(Some(ctx.death_timeout()))
            .map_err(|e| fatal("configuring the socket", e))?;
        let (read_half, write_half) = match &ctx.tls {
            Some(pin) => {
                let tls = tls::connect(&stream, pin).map_err(|e| {
                    if retryable(&e) {
                        again("TLS handshake", &e)
                    } else {
                        Attempt::Final(worker_err(
                            WorkerErrorKind::Tls,
                            format!("TLS handshake with the scheduler at {}: {e}", ctx.addr),
                        ))
                    }
                })?;
                (ReadHalf::Tls(tls.reader), WriteHalf::Tls(tls.writer))
            }
            None => {
                let write_half = stream
                    .try_clone()
                    .map_err(|e| fatal("cloning the socket", e))?;
                (ReadHalf::Plain(stream), WriteHalf::Plain(write_half))
            }
        };
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer {
                stream: write_half,
                last_sent: Instant::now(),
                pending: Vec::new(),
                pending_output: 0,
                pending_items: Vec::new(),
                first_pending: None,
                stop: false,
                limit: session_limit(ctx.max_output()),
            }),
            wake: Condvar::new(),
        });
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        shared
            .lock()
            .send(&WorkerMsg::Hello {
                protocol: PROTOCOL_VERSION,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                token: ctx.token.clone(),
                task_id: ctx.task_id.clone(),
                worker_id: ctx.worker_id,
                pid: std::process::id(),
                host,
            })
            .map_err(|e| again("sending the hello", &e))?;
        let mut client = Link {
            reader: BufReader::with_capacity(64 << 10, read_half),
            read_buf: Vec::new(),
            shared,
            started: Instant::now(),
            shutdown: false,
            retired: false,
            said_bye: false,
            said_ready: false,
            reported: 0,
            connection: 0,
            heartbeat: None,
            ctx: ctx.clone(),
        };
        let first = read_frame::<ServerMsg, _>(&mut client.reader, &mut client.read_buf);
        match first {
            Ok(Some(ServerMsg::Welcome { connection })) => client.connection = connection,
            Ok(Some(ServerMsg::Refused { reason })) => {
                return Err(Attempt::Final(worker_err(
                    WorkerErrorKind::Refused,
                    format!(
                        "the scheduler at {} refused this worker: {reason}",
                        ctx.addr
                    ),
                )));
            }
            Ok(Some(other)) => {
                return Err(Attempt::Final(worker_err(
                    WorkerErrorKind::Protocol,
                    format!("protocol error: expected a welcome, got {other:?}"),
                )));
            }
            Ok(None) => return Err(Attempt::Again("closed before the welcome".into())),
            Err(FrameError::Io(e)) if retryable(&e) => {
                return Err(again("waiting for the welcome", &e));
            }
            Err(e) => {
                return Err(Attempt::Final(worker_err(
                    WorkerErrorKind::ConnectionLost,
                    format!(
                        "reading the welcome from the scheduler at {}: {e}",
                        ctx.addr
                    ),
                )));
            }
        }
        client.start_heartbeat().map_err(Attempt::Final)?;
        Ok(client)
    }

    /// Starts the thread that sends heartbeats and flushes waiting reports.
    fn start_heartbeat(&mut self) -> Result<(), Error> {
        let shared = Arc::clone(&self.shared);
        let every = self.ctx.heartbeat();
        let join = std::thread::Builder::new()
            .name("blockwise-heartbeat".into())
            .spawn(move || {
                let mut w = shared.lock();
                while !w.stop {
                    let mut wait = every.saturating_sub(w.last_sent.elapsed());
                    if let Some(first) = w.first_pending {
                        let waited = first.elapsed();
                        if waited >= FLUSH_LATENCY {
                            if w.flush().is_err() {
                                return;
                            }
                            continue;
                        }
                        wait = wait.min(FLUSH_LATENCY - waited);
                    }
                    if wait.is_zero() {
                        if w.send(&WorkerMsg::Heartbeat).is_err() {
                            return;
                        }
                        continue;
                    }
                    w = shared
                        .wake
                        .wait_timeout(w, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            })
            .map_err(|e| {
                worker_err(
                    WorkerErrorKind::Thread,
                    format!("starting the heartbeat thread: {e}"),
                )
            })?;
        self.heartbeat = Some(join);
        Ok(())
    }

    /// The id the scheduler gave this connection.
    pub(crate) fn connection(&self) -> u64 {
        self.connection
    }

    /// The worker's context.
    pub(crate) fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// The writer, shared with the heartbeat thread (and other threads of the worker).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Counts a unit as reported (for the lifetime rule).
    pub(crate) fn reported(&mut self) {
        self.reported += 1;
    }

    /// Whether the worker takes more units: false once it retired, or when it reaches its
    /// lifetime (then it retires, giving back `unstarted`). The first call tells the scheduler
    /// that set-up (whatever ran between connecting and the first acquire) is over: it times
    /// work from here.
    pub(crate) fn may_take(&mut self, unstarted: impl FnOnce() -> Vec<u64>) -> Result<bool, Error> {
        if self.retired {
            return Ok(false);
        }
        if !self.said_ready {
            self.said_ready = true;
            self.shared.lock().send(&WorkerMsg::Ready)?;
        }
        if self.lifetime_over() {
            self.retired = true;
            tracing::info!(worker = self.ctx.worker_id, "lifetime reached; retiring");
            self.flush()?;
            let unstarted = unstarted();
            self.shared.lock().send(&WorkerMsg::Retire { unstarted })?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Sends waiting reports, then reads the next message with work (`Blocks`, `Items`,
    /// `Data`); `None` when the scheduler has said there is nothing more.
    pub(crate) fn receive(&mut self) -> Result<Option<ServerMsg>, Error> {
        loop {
            self.flush()?;
            if self.shutdown {
                return Ok(None);
            }
            match self.read()? {
                ServerMsg::Ping => {}
                ServerMsg::Shutdown => self.shutdown = true,
                msg @ (ServerMsg::Blocks { .. }
                | ServerMsg::Items { .. }
                | ServerMsg::Data { .. }) => {
                    return Ok(Some(msg));
                }
                other => {
                    return Err(worker_err(
                        WorkerErrorKind::Protocol,
                        format!("protocol error: unexpected {other:?}"),
                    ));
                }
            }
        }
    }

    fn read(&mut self) -> Result<ServerMsg, Error> {
        match read_frame::<ServerMsg, _>(&mut self.reader, &mut self.read_buf) {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(worker_err(
                WorkerErrorKind::ConnectionLost,
                format!("the scheduler at {} closed the connection", self.ctx.addr),
            )),
            Err(FrameError::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                Err(worker_err(
                    WorkerErrorKind::Silent,
                    format!(
                        "the scheduler at {} was silent for {:?} (death timeout); giving up",
                        self.ctx.addr,
                        self.ctx.death_timeout()
                    ),
                ))
            }
            Err(e) => Err(worker_err(
                WorkerErrorKind::ConnectionLost,
                format!("reading from the scheduler at {}: {e}", self.ctx.addr),
            )),
        }
    }

    /// Sends the waiting reports.
    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        self.shared.lock().flush()
    }

    /// Past its lifetime, a worker retires; but only after it completed a block, so that even a
    /// lifetime shorter than the set-up makes progress.
    pub(crate) fn lifetime_over(&self) -> bool {
        self.reported > 0
            && self
                .ctx
                .lifetime_ms
                .is_some_and(|ms| self.started.elapsed() >= Duration::from_millis(ms))
    }

    /// Tells the scheduler that this worker's set-up failed (it exits after this).
    pub(crate) fn setup_failed(&mut self, message: String) {
        let _ = self.shared.lock().send(&WorkerMsg::SetupFailed { message });
    }

    /// Flushes reports and says goodbye (once).
    pub(crate) fn bye(&mut self) -> Result<(), Error> {
        if self.said_bye {
            return Ok(());
        }
        self.said_bye = true;
        let mut w = self.shared.lock();
        w.flush()?;
        w.send(&WorkerMsg::Bye)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.bye();
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        self.shared.lock().stream.shutdown();
    }
}
