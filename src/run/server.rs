//! The scheduler's TCP server: accepts workers, checks their token, turns frames into events for
//! the driver and writes the driver's frames back. All socket I/O runs on one tokio thread; the
//! driver (which owns the scheduler) talks to it through channels only.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{FrameError, PROTOCOL_VERSION, ServerMsg, WorkerMsg, frame_len, to_frame};
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
    /// A peer was refused (wrong token or protocol version); logged.
    Refused { peer: SocketAddr, reason: String },
}

/// Timing of the server's side of the protocol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Idle connections get a ping this often.
    pub ping: Duration,
    /// A connection silent for this long is closed as dead.
    pub silence: Duration,
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
        token: String,
        timing: Timing,
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
                        Ok(listener) => accept_loop(listener, token, timing, events, stop_rx).await,
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

async fn accept_loop(
    listener: TcpListener,
    token: String,
    timing: Timing,
    events: crossbeam_channel::Sender<Event>,
    mut stop: oneshot::Receiver<()>,
) {
    let token: Arc<str> = Arc::from(token);
    let next_conn = Arc::new(AtomicU64::new(0));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let token = Arc::clone(&token);
                    let events = events.clone();
                    let next_conn = Arc::clone(&next_conn);
                    tokio::spawn(async move {
                        connection(stream, peer, token, timing, events, next_conn).await;
                    });
                }
                Err(e) => {
                    tracing::warn!("accepting a worker connection: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

async fn read_msg<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<WorkerMsg>, FrameError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(&header)?;
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(Some(serde_json::from_slice(buf)?))
}

async fn send_now(w: &mut OwnedWriteHalf, msg: &ServerMsg) {
    if let Ok(frame) = to_frame(msg) {
        let _ = w.write_all(&frame).await;
        let _ = w.flush().await;
    }
}

/// Token comparison that does not stop at the first difference.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    token: Arc<str>,
    timing: Timing,
    events: crossbeam_channel::Sender<Event>,
    next_conn: Arc<AtomicU64>,
) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let mut buf = Vec::new();
    // The hello must come soon; a peer that says nothing is dropped.
    let hello = tokio::time::timeout(timing.silence, read_msg(&mut rd, &mut buf)).await;
    let refuse = |reason: String| Event::Refused { peer, reason };
    let hello = match hello {
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
                send_now(
                    &mut wr,
                    &ServerMsg::Refused {
                        reason: reason.clone(),
                    },
                )
                .await;
                let _ = events.send(refuse(reason));
                return;
            }
            if !same_token(&given, &token) {
                let reason = "wrong token".to_owned();
                send_now(
                    &mut wr,
                    &ServerMsg::Refused {
                        reason: reason.clone(),
                    },
                )
                .await;
                let _ = events.send(refuse(format!(
                    "{reason} (worker {worker_id} of task {task_id:?}, pid {pid} on {host:?})"
                )));
                return;
            }
            Hello {
                task_id,
                worker_id,
                pid,
                host,
                peer,
            }
        }
        Ok(Ok(Some(other))) => {
            let reason = format!("expected a hello, got {other:?}");
            send_now(
                &mut wr,
                &ServerMsg::Refused {
                    reason: reason.clone(),
                },
            )
            .await;
            let _ = events.send(refuse(reason));
            return;
        }
        Ok(Ok(None)) => {
            let _ = events.send(refuse("closed before saying hello".into()));
            return;
        }
        Ok(Err(e)) => {
            let _ = events.send(refuse(format!("bad hello: {e}")));
            return;
        }
        Err(_) => {
            let _ = events.send(refuse(format!("no hello within {:?}", timing.silence)));
            return;
        }
    };
    let conn = next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    if events.send(Event::Connected { conn, hello, tx }).is_err() {
        return;
    }
    tokio::spawn(writer(wr, rx, timing.ping));
    let reason = loop {
        match tokio::time::timeout(timing.silence, read_msg(&mut rd, &mut buf)).await {
            Ok(Ok(Some(msg))) => {
                if events.send(Event::Message { conn, msg }).is_err() {
                    return;
                }
            }
            Ok(Ok(None)) => break "connection closed".to_owned(),
            Ok(Err(e)) => break format!("connection broken: {e}"),
            Err(_) => {
                break format!(
                    "no message or heartbeat for {:?}; presumed dead",
                    timing.silence
                );
            }
        }
    };
    let _ = events.send(Event::Closed { conn, reason });
}

async fn writer(wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>, ping: Duration) {
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

    use crate::run::protocol::read_frame;
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

    fn start() -> (Server, crossbeam_channel::Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let timing = Timing {
            ping: Duration::from_secs(1),
            silence: Duration::from_secs(5),
        };
        let server =
            Server::start("127.0.0.1:0".parse().unwrap(), "right".into(), timing, tx).unwrap();
        (server, rx)
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
        assert!(reason.contains("protocol version 2"), "{reason}");
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
    fn tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("", "a"));
    }
}
