//! The scheduler's TCP server: accepts workers, checks their token, turns frames into events for
//! the driver and writes the driver's frames back. All socket I/O runs on one tokio thread; the
//! driver (which owns the scheduler) talks to it through channels only.
//!
//! # What an unauthenticated peer can cost
//!
//! Anyone who can reach the port can connect, so everything before a valid hello is bounded:
//! at most [`ServerOptions::max_unauthenticated`] connections wait for their hello at once
//! (further ones are closed at once and counted in the log); each must complete its TLS
//! handshake (if any) and hello within [`Timing::hello`]; its frames are limited to
//! [`HELLO_MAX`] bytes (a larger announced length closes it at once); and no buffer is sized
//! from an announced length, before or after authentication: buffers grow as bytes arrive.
//!
//! # Silence
//!
//! A connection that sends nothing (not even a heartbeat) for [`Timing::silence`] is closed as
//! dead. A watchdog checks this on a short tick. If the tick comes far later than asked, the
//! scheduler itself did not run (it was stopped with SIGSTOP, swapped out, or its machine
//! suspended): its workers could not be heard meanwhile, so the silence timers restart instead
//! of declaring healthy workers dead. Frames that arrived are always read before silence is
//! judged again.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{
    FrameError, HELLO_MAX, PROTOCOL_VERSION, ServerMsg, WorkerMsg, frame_len, reset_buffer,
    to_frame,
};
use crate::error::Error;

/// Who connected, from its hello.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub task_id: String,
    pub worker_id: u64,
    pub pid: u32,
    pub host: String,
    pub peer: SocketAddr,
}

/// What the server tells the driver.
#[derive(Debug)]
pub(crate) enum Event {
    /// A worker with the right token connected; frames for it go to `tx`.
    Connected {
        conn: u64,
        hello: Hello,
        tx: mpsc::UnboundedSender<Vec<u8>>,
    },
    /// A message from a connected worker.
    Message { conn: u64, msg: WorkerMsg },
    /// A connection ended (closed, broken, or silent past the heartbeat timeout).
    Closed { conn: u64, reason: String },
    /// A peer was refused (wrong token or protocol version, no hello in time); logged.
    Refused { peer: SocketAddr, reason: String },
}

/// Timing of the server's side of the protocol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Idle connections get a ping this often.
    pub ping: Duration,
    /// A connection silent for this long is closed as dead.
    pub silence: Duration,
    /// A new connection must complete its TLS handshake and hello within this long.
    pub hello: Duration,
}

impl Timing {
    /// How often the silence watchdog looks.
    fn tick(&self) -> Duration {
        (self.silence / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    /// A watchdog tick later than this means the process did not run meanwhile. A healthy
    /// worker is heard every heartbeat interval, so only a pause longer than about the silence
    /// timeout could make it look dead; half of it is a safe threshold.
    fn jump(&self) -> Duration {
        self.tick() + self.silence / 2
    }
}

/// How the server accepts connections.
#[derive(Clone)]
pub(crate) struct ServerOptions {
    /// The run's token.
    pub token: String,
    pub timing: Timing,
    /// Connections waiting for their hello at once; more are closed at once.
    pub max_unauthenticated: usize,
    /// TLS, if the transport is encrypted.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The largest frame of an authenticated session (see `protocol::session_limit`).
    pub max_frame: usize,
}

/// A running server; stopping (or dropping) it closes every connection.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `bind` and serves on a background thread.
    pub(crate) fn start(
        bind: SocketAddr,
        options: ServerOptions,
        events: crossbeam_channel::Sender<Event>,
    ) -> Result<Server, Error> {
        let io = |context: String| move |source| Error::Io { context, source };
        let listener = StdListener::bind(bind).map_err(io(format!("binding {bind}")))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the server's address".into()))?;
        listener
            .set_nonblocking(true)
            .map_err(io("configuring the listener".into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting the server runtime".into()))?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("blockwise-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => accept_loop(listener, options, events, stop_rx).await,
                        Err(e) => tracing::error!("server listener: {e}"),
                    }
                });
                // Dropping the runtime cancels every connection task and closes the sockets.
                drop(runtime);
            })
            .map_err(io("starting the server thread".into()))?;
        tracing::debug!(%addr, "scheduler listening");
        Ok(Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the accept loop shares with the connections.
struct Shared {
    options: ServerOptions,
    events: crossbeam_channel::Sender<Event>,
    next_conn: AtomicU64,
    /// Connections that have not yet been accepted or refused.
    unauthenticated: AtomicUsize,
    /// Refusals reported in the current second, and those left out.
    refusals: std::sync::Mutex<Refusals>,
}

/// At most [`Refusals::PER_SECOND`] refused peers are reported to the driver (and so logged)
/// each second; the rest are counted and reported as one line, so a flood of bad peers cannot
/// flood the log.
struct Refusals {
    since: Instant,
    reported: u32,
    left_out: u64,
}

impl Refusals {
    const PER_SECOND: u32 = 10;
}

/// Releases a connection's unauthenticated slot when dropped (however its hello ends).
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept_loop(
    listener: TcpListener,
    options: ServerOptions,
    events: crossbeam_channel::Sender<Event>,
    mut stop: oneshot::Receiver<()>,
) {
    let max = options.max_unauthenticated.max(1);
    let shared = Arc::new(Shared {
        options,
        events,
        next_conn: AtomicU64::new(0),
        unauthenticated: AtomicUsize::new(0),
        refusals: std::sync::Mutex::new(Refusals {
            since: Instant::now(),
            reported: 0,
            left_out: 0,
        }),
    });
    // Connections closed because too many were waiting for their hello: counted, and logged at
    // most once a second.
    let mut shed = 0u64;
    let mut last_report: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if shared.unauthenticated.load(Ordering::Acquire) >= max {
                        drop(stream);
                        shed += 1;
                        if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            tracing::warn!(
                                "closed {shed} connections at once: {max} connections were already waiting for their hello (the limit); last from {peer}"
                            );
                            shed = 0;
                            last_report = Some(Instant::now());
                        }
                        continue;
                    }
                    shared.unauthenticated.fetch_add(1, Ordering::AcqRel);
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        accept(stream, peer, shared).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors (or another transient error): the connection
                    // waits in the backlog; try again shortly.
                    tracing::warn!("accepting a worker connection: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Reads one frame of at most `limit` bytes. `Ok(None)` on a clean end before a frame.
pub(crate) async fn read_msg<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<Option<WorkerMsg>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut header[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            n => got += n,
        }
    }
    let len = frame_len(&header, limit)?;
    reset_buffer(buf);
    let read = r.take(len as u64).read_to_end(buf).await?;
    if read < len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Some(serde_json::from_slice(buf)?))
}

/// Token comparison that does not stop at the first difference.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A new connection: TLS (if configured), then the session.
async fn accept(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let slot = Slot(&shared.unauthenticated);
    let _ = stream.set_nodelay(true);
    let timing = shared.options.timing;
    let deadline = tokio::time::Instant::now() + timing.hello;
    match shared.options.tls.clone() {
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let (rd, wr) = tokio::io::split(tls);
                    session(rd, wr, peer, &shared, slot, deadline).await;
                }
                Ok(Err(e)) => refuse(&shared, peer, format!("TLS handshake failed: {e}")),
                Err(_) => refuse(
                    &shared,
                    peer,
                    format!("no TLS handshake within {:?}", timing.hello),
                ),
            }
        }
        None => {
            let (rd, wr) = stream.into_split();
            session(rd, wr, peer, &shared, slot, deadline).await;
        }
    }
}

fn refuse(shared: &Shared, peer: SocketAddr, reason: String) {
    let mut r = shared
        .refusals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if r.since.elapsed() >= Duration::from_secs(1) {
        if r.left_out > 0 {
            let _ = shared.events.send(Event::Refused {
                peer,
                reason: format!(
                    "{} more peers were refused in the last {:?} (not logged one by one)",
                    r.left_out,
                    r.since.elapsed()
                ),
            });
        }
        *r = Refusals {
            since: Instant::now(),
            reported: 0,
            left_out: 0,
        };
    }
    if r.reported < Refusals::PER_SECOND {
        r.reported += 1;
        let _ = shared.events.send(Event::Refused { peer, reason });
    } else {
        r.left_out += 1;
    }
}

async fn send_now<W: AsyncWrite + Unpin>(w: &mut W, msg: &ServerMsg) {
    if let Ok(frame) = to_frame(msg) {
        let _ = w.write_all(&frame).await;
        let _ = w.flush().await;
    }
}

/// Checks the hello; `Ok` with who it is, or `Err` with the reason and whether to tell the peer.
pub(crate) fn check_hello(
    hello: Result<Result<Option<WorkerMsg>, FrameError>, tokio::time::error::Elapsed>,
    token: &str,
    peer: SocketAddr,
    timing: Timing,
) -> Result<Hello, (String, Option<String>)> {
    match hello {
        Ok(Ok(Some(WorkerMsg::Hello {
            protocol,
            version,
            token: given,
            task_id,
            worker_id,
            pid,
            host,
        }))) => {
            if protocol != PROTOCOL_VERSION {
                let reason = format!(
                    "protocol version {protocol} (blockwise {version}) does not match the scheduler's {PROTOCOL_VERSION} (blockwise {})",
                    env!("CARGO_PKG_VERSION")
                );
                return Err((reason.clone(), Some(reason)));
            }
            if !same_token(&given, token) {
                let reason = "wrong token".to_owned();
                return Err((
                    format!(
                        "{reason} (worker {worker_id} of task {task_id:?}, pid {pid} on {host:?})"
                    ),
                    Some(reason),
                ));
            }
            Ok(Hello {
                task_id,
                worker_id,
                pid,
                host,
                peer,
            })
        }
        Ok(Ok(Some(other))) => {
            let reason = format!("expected a hello, got {}", kind(&other));
            Err((reason.clone(), Some(reason)))
        }
        Ok(Ok(None)) => Err(("closed before saying hello".into(), None)),
        Ok(Err(e)) => Err((format!("bad hello: {e}"), None)),
        Err(_) => Err((format!("no hello within {:?}", timing.hello), None)),
    }
}

/// The name of a message's type (unauthenticated peers' messages are not echoed whole).
fn kind(msg: &WorkerMsg) -> &'static str {
    match msg {
        WorkerMsg::Hello { .. } => "hello",
        WorkerMsg::Done { .. } => "done",
        WorkerMsg::Results { .. } => "results",
        WorkerMsg::SetupFailed { .. } => "setup_failed",
        WorkerMsg::Ready => "ready",
        WorkerMsg::Heartbeat => "heartbeat",
        WorkerMsg::Retire { .. } => "retire",
        WorkerMsg::Bye => "bye",
    }
}

/// One connection: the hello (small frames, a deadline), then messages until it ends.
async fn session<R, W>(
    mut rd: R,
    mut wr: W,
    peer: SocketAddr,
    shared: &Shared,
    slot: Slot<'_>,
    deadline: tokio::time::Instant,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let timing = shared.options.timing;
    let mut buf = Vec::new();
    let hello = tokio::time::timeout_at(deadline, read_msg(&mut rd, &mut buf, HELLO_MAX)).await;
    let hello = match check_hello(hello, &shared.options.token, peer, timing) {
        Ok(hello) => hello,
        Err((logged, told)) => {
            if let Some(reason) = told {
                send_now(&mut wr, &ServerMsg::Refused { reason }).await;
            }
            refuse(shared, peer, logged);
            return;
        }
    };
    drop(slot);
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let events = &shared.events;
    if events.send(Event::Connected { conn, hello, tx }).is_err() {
        return;
    }
    tokio::spawn(writer(wr, rx, timing.ping));
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let base = Instant::now();
    let ms = |t: Instant| u64::try_from(t.duration_since(base).as_millis()).unwrap_or(u64::MAX);
    let heard = AtomicU64::new(0);
    let reader = async {
        loop {
            match read_msg(&mut rd, &mut buf, shared.options.max_frame).await {
                Ok(Some(msg)) => {
                    heard.store(ms(Instant::now()), Ordering::Relaxed);
                    if events.send(Event::Message { conn, msg }).is_err() {
                        return None;
                    }
                }
                Ok(None) => return Some("connection closed".to_owned()),
                Err(e) => return Some(format!("connection broken: {e}")),
            }
        }
    };
    let watchdog = async {
        let tick = timing.tick();
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let now = Instant::now();
            let late = now.duration_since(last);
            last = now;
            if late > timing.jump() {
                // This process did not run for a while: nobody could be heard meanwhile.
                tracing::warn!(
                    peer = %peer,
                    "the scheduler did not run for {late:?} (stopped, swapped out or suspended); restarting the silence timer of the connection instead of presuming its worker dead"
                );
                heard.store(ms(now), Ordering::Relaxed);
                continue;
            }
            let quiet =
                Duration::from_millis(ms(now).saturating_sub(heard.load(Ordering::Relaxed)));
            if quiet > timing.silence {
                return Some(format!(
                    "no message or heartbeat for {:?}; presumed dead",
                    timing.silence
                ));
            }
        }
    };
    let reason = tokio::select! {
        biased;
        r = reader => r,
        r = watchdog => r,
    };
    if let Some(reason) = reason {
        let _ = events.send(Event::Closed { conn, reason });
    }
}

async fn writer<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    ping: Duration,
) {
    let mut w = BufWriter::with_capacity(64 << 10, wr);
    let ping_frame = to_frame(&ServerMsg::Ping).unwrap_or_default();
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                if w.write_all(&frame).await.is_err() {
                    return;
                }
                while let Ok(more) = rx.try_recv() {
                    if w.write_all(&more).await.is_err() {
                        return;
                    }
                }
                if w.flush().await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(ping) => {
                if w.write_all(&ping_frame).await.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use crate::fleet::protocol::{MAX_FRAME, read_frame};
    use std::io::Write;

    fn hello(token: &str, protocol: u32) -> Vec<u8> {
        to_frame(&WorkerMsg::Hello {
            protocol,
            version: "test".into(),
            token: token.into(),
            task_id: "t".into(),
            worker_id: 0,
            pid: 1,
            host: "h".into(),
        })
        .unwrap()
    }

    fn options(max_unauthenticated: usize) -> ServerOptions {
        ServerOptions {
            token: "right".into(),
            timing: Timing {
                ping: Duration::from_secs(1),
                silence: Duration::from_secs(5),
                hello: Duration::from_secs(5),
            },
            max_unauthenticated,
            tls: None,
            max_frame: MAX_FRAME,
        }
    }

    fn start() -> (Server, crossbeam_channel::Receiver<Event>) {
        start_with(options(64))
    }

    fn start_with(options: ServerOptions) -> (Server, crossbeam_channel::Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let server = Server::start("127.0.0.1:0".parse().unwrap(), options, tx).unwrap();
        (server, rx)
    }

    fn next_event(events: &crossbeam_channel::Receiver<Event>) -> Event {
        events.recv_timeout(Duration::from_secs(20)).unwrap()
    }

    /// Whether the server closed `s` (EOF or reset) within the read timeout.
    fn closed_by_server(s: &mut std::net::TcpStream) -> bool {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        }
    }

    #[test]
    fn frames_over_a_few_kib_before_the_hello_close_the_connection_at_once() {
        let (server, events) = start();
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.write_all(&u32::try_from(HELLO_MAX + 1).unwrap().to_be_bytes())
            .unwrap();
        assert!(closed_by_server(&mut s));
        match next_event(&events) {
            Event::Refused { reason, .. } => {
                assert!(
                    reason.contains("exceeds the limit of 4096 bytes"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_peer_without_a_hello_is_dropped_after_the_hello_deadline() {
        let mut o = options(64);
        o.timing.hello = Duration::from_millis(200);
        o.timing.silence = Duration::from_secs(600);
        let (server, events) = start_with(o);
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.write_all(&[0, 0]).unwrap(); // half a header, then nothing
        assert!(closed_by_server(&mut s));
        match next_event(&events) {
            Event::Refused { reason, .. } => {
                assert!(reason.contains("no hello within"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connections_beyond_the_unauthenticated_bound_are_closed_at_once() {
        let mut o = options(2);
        o.timing.hello = Duration::from_secs(2);
        let (server, events) = start_with(o);
        let idle: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(server.addr()).unwrap())
            .collect();
        // Both are accepted and wait for their hello (a hello-less peer is refused only after
        // the deadline); a third is closed at once, long before that deadline.
        let mut third = std::net::TcpStream::connect(server.addr()).unwrap();
        let started = std::time::Instant::now();
        assert!(closed_by_server(&mut third));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Once the idle ones are gone, workers get in again.
        for _ in 0..2 {
            assert!(matches!(next_event(&events), Event::Refused { .. }));
        }
        drop(idle);
        let mut ok = std::net::TcpStream::connect(server.addr()).unwrap();
        ok.write_all(&hello("right", PROTOCOL_VERSION)).unwrap();
        assert!(matches!(next_event(&events), Event::Connected { .. }));
    }

    #[test]
    fn a_frame_buffer_grows_with_the_bytes_not_with_the_announced_length() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut input = (16u32 << 20).to_be_bytes().to_vec();
        input.extend_from_slice(b"{\"type\":");
        let mut buf = Vec::new();
        let e = runtime
            .block_on(read_msg(&mut &input[..], &mut buf, MAX_FRAME))
            .unwrap_err();
        assert!(matches!(e, FrameError::Io(_)), "{e}");
        assert!(
            buf.capacity() < 1 << 20,
            "{} bytes reserved",
            buf.capacity()
        );
    }

    #[test]
    fn tls_workers_pin_the_runs_certificate() {
        let tls = crate::fleet::tls::ServerTls::generate().unwrap();
        let mut o = options(64);
        o.tls = Some(Arc::clone(&tls.config));
        let (server, events) = start_with(o);
        // The right fingerprint: the hello goes through the encrypted session.
        let s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut session = crate::fleet::tls::connect(&s, &tls.fingerprint).unwrap();
        session
            .writer
            .write_all(&hello("right", PROTOCOL_VERSION))
            .unwrap();
        let Event::Connected { tx, .. } = next_event(&events) else {
            panic!("not connected")
        };
        tx.send(to_frame(&ServerMsg::Welcome { connection: 7 }).unwrap())
            .unwrap();
        let reply: ServerMsg = read_frame(&mut session.reader, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(reply, ServerMsg::Welcome { connection: 7 });
        // Another certificate's fingerprint: the worker refuses the scheduler.
        let other = crate::fleet::tls::ServerTls::generate().unwrap();
        let s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let e = crate::fleet::tls::connect(&s, &other.fingerprint)
            .err()
            .unwrap();
        assert!(e.to_string().contains("does not match"), "{e}");
        assert!(matches!(next_event(&events), Event::Refused { .. }));
        // A plain-text peer gets nowhere.
        let mut plain = std::net::TcpStream::connect(server.addr()).unwrap();
        plain.write_all(&hello("right", PROTOCOL_VERSION)).unwrap();
        assert!(closed_by_server(&mut plain));
        match next_event(&events) {
            Event::Refused { reason, .. } => assert!(reason.contains("TLS"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    fn refused(hello_frame: &[u8]) -> (String, String) {
        let (server, events) = start();
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(hello_frame).unwrap();
        let reply: ServerMsg = read_frame(&mut s, &mut Vec::new()).unwrap().unwrap();
        let ServerMsg::Refused { reason } = reply else {
            panic!("{reply:?}")
        };
        // Then the server closes the connection.
        assert!(
            read_frame::<ServerMsg, _>(&mut s, &mut Vec::new())
                .unwrap()
                .is_none()
        );
        match events.recv_timeout(Duration::from_secs(10)).unwrap() {
            Event::Refused { reason: logged, .. } => (reason, logged),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wrong_token_is_refused_and_reported() {
        let (reason, logged) = refused(&hello("wrong", PROTOCOL_VERSION));
        assert_eq!(reason, "wrong token");
        assert!(
            logged.contains("wrong token") && logged.contains("task \"t\""),
            "{logged}"
        );
    }

    #[test]
    fn another_protocol_version_is_refused() {
        let (reason, _) = refused(&hello("right", PROTOCOL_VERSION + 1));
        let other = format!("protocol version {}", PROTOCOL_VERSION + 1);
        assert!(reason.contains(&other), "{reason}");
    }

    #[test]
    fn garbage_instead_of_a_hello_is_refused_without_harm() {
        let (server, events) = start();
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
        match events.recv_timeout(Duration::from_secs(10)).unwrap() {
            Event::Refused { reason, .. } => {
                assert!(reason.contains("exceeds the limit"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // The server still serves others.
        let mut ok = std::net::TcpStream::connect(server.addr()).unwrap();
        ok.write_all(&hello("right", PROTOCOL_VERSION)).unwrap();
        match events.recv_timeout(Duration::from_secs(10)).unwrap() {
            Event::Connected { hello, .. } => assert_eq!(hello.task_id, "t"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_flood_of_bad_peers_is_logged_in_summary() {
        let (server, events) = start();
        let started = std::time::Instant::now();
        for _ in 0..100 {
            let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
            s.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
            assert!(closed_by_server(&mut s));
        }
        let seconds = started.elapsed().as_secs() + 1;
        let n = events.try_iter().count() as u64;
        assert!(n >= 10, "{n} refusals reported");
        assert!(
            n <= seconds * (u64::from(Refusals::PER_SECOND) + 1),
            "{n} refusals reported in {seconds} s"
        );
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("", "a"));
    }
}
