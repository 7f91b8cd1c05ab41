//! The worker side of the protocol: [`Client`].

use std::collections::VecDeque;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::blocks::{Block, BlockStatus};
use crate::error::{Error, WorkerErrorKind};
use crate::fleet::context::{CONTEXT_ENV, Context};
use crate::fleet::protocol::{
    FrameError, ItemOutcome, OUTPUT_BATCH, Outcome, PROTOCOL_VERSION, ServerMsg, WireBlock,
    WireItem, WorkerMsg, read_frame, session_limit, to_frame_limited,
};
use crate::fleet::tls::{self, TlsReader, TlsWriter};
use crate::observe::FailureKind;

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
struct Writer {
    stream: WriteHalf,
    last_sent: Instant,
    pending: Vec<Outcome>,
    /// Bytes of block outputs in `pending`.
    pending_output: usize,
    pending_items: Vec<ItemOutcome>,
    first_pending: Option<Instant>,
    stop: bool,
    /// The largest frame the scheduler accepts from this worker.
    limit: usize,
}

impl Writer {
    fn send(&mut self, msg: &WorkerMsg) -> Result<(), Error> {
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

    fn flush(&mut self) -> Result<(), Error> {
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

struct Shared {
    writer: Mutex<Writer>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What an executor worker receives.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// An item to run.
    Item(WireItem),
    /// Shared data to keep under a name.
    Data {
        name: String,
        value: serde_json::Value,
    },
}

/// A block handed from the connection's thread to another thread of the worker, which
/// reports it through a [`Reporter`].
#[derive(Debug)]
pub(crate) struct Ticket {
    seq: u64,
}

/// Reports blocks from the threads of a worker with several (see
/// [`TaskBuilder::threads_per_worker`](crate::TaskBuilder::threads_per_worker)), while the
/// connection's thread keeps reading.
#[derive(Clone)]
pub(crate) struct Reporter {
    shared: Arc<Shared>,
    max_output: usize,
}

impl Reporter {
    /// Reports the block of `ticket`: `Ok(output)` succeeds (an output over the run's cap
    /// fails it instead), `Err((kind, message))` fails it. Sent at once.
    pub(crate) fn report(
        &self,
        ticket: Ticket,
        block: &Block,
        result: Result<Option<String>, (FailureKind, String)>,
    ) -> Result<(), Error> {
        let outcome = match result {
            Ok(Some(output)) if output.len() > self.max_output => Outcome {
                seq: ticket.seq,
                error: Some(super::output_too_large(
                    block,
                    output.len(),
                    self.max_output,
                )),
                kind: Some(FailureKind::OutputTooLarge),
                output: None,
            },
            Ok(output) => Outcome {
                seq: ticket.seq,
                error: None,
                kind: None,
                output,
            },
            Err((kind, message)) => Outcome {
                seq: ticket.seq,
                error: Some(message),
                kind: Some(kind),
                output: None,
            },
        };
        let mut w = self.shared.lock();
        w.pending_output += outcome.output.as_ref().map_or(0, String::len);
        w.pending.push(outcome);
        w.flush()
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

/// A worker's connection to the scheduler: acquire blocks, process them, release them.
///
/// Worker processes started by a process runner find the scheduler in the `BLOCKWISE_CONTEXT`
/// environment variable. A program that is a task's process function does not need this type
/// (its own call to [`run_blockwise`](crate::run_blockwise) serves blocks); a separate worker
/// binary uses it directly:
///
/// ```no_run
/// use blockwise::{BlockStatus, Client};
///
/// fn main() -> Result<(), blockwise::Error> {
///     let mut client = Client::from_env()?;
///     while let Some(mut block) = client.acquire_block()? {
///         // ... read block.read_roi(), write block.write_roi() ...
///         block.set_status(BlockStatus::Success);
///         client.release_block(block)?;
///     }
///     Ok(())
/// }
/// ```
///
/// The client keeps a few blocks prefetched so that round trips do not limit throughput, sends
/// heartbeats from a background thread (so a long block does not look like a dead worker), and
/// gives up with an error when the scheduler has been silent or unreachable for the context's
/// death timeout. Blocks must be released in the order they were acquired.
pub struct Client {
    ctx: Context,
    task_id: Arc<str>,
    reader: BufReader<ReadHalf>,
    read_buf: Vec<u8>,
    shared: Arc<Shared>,
    queue: VecDeque<WireBlock>,
    /// Executor items and datasets received and not yet handed out, in arrival order.
    items: VecDeque<Incoming>,
    /// `(grid_index, seq)` of blocks handed to the user and not yet released.
    handed: VecDeque<(u64, u64)>,
    batch: usize,
    started: Instant,
    shutdown: bool,
    retired: bool,
    said_bye: bool,
    said_ready: bool,
    /// Blocks reported so far.
    reported: u64,
    connection: u64,
    heartbeat: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("task_id", &self.task_id)
            .field("worker_id", &self.ctx.worker_id)
            .field("scheduler", &self.ctx.addr)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the scheduler named in `BLOCKWISE_CONTEXT`.
    ///
    /// # Errors
    ///
    /// [`Error::Worker`] if the variable is missing or malformed, the scheduler cannot be
    /// reached within the death timeout, or it refuses this worker (wrong token or version).
    pub fn from_env() -> Result<Client, Error> {
        match Context::from_env()? {
            Some(ctx) => Client::connect(ctx),
            None => Err(worker_err(
                WorkerErrorKind::BadContext,
                format!(
                    "{CONTEXT_ENV} is not set: this program was not started as a blockwise worker"
                ),
            )),
        }
    }

    /// Connects, retrying for up to the death timeout while the scheduler cannot be reached or
    /// closes the connection before welcoming this worker (it may be busy refusing a flood of
    /// other peers: it closes connections beyond its bound at once). A refusal (wrong token or
    /// version) or a certificate that does not match is final.
    pub(crate) fn connect(ctx: Context) -> Result<Client, Error> {
        let deadline = Instant::now() + ctx.death_timeout();
        let mut delay = Duration::from_millis(20);
        loop {
            let failed = match Client::attempt(&ctx) {
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
    fn attempt(ctx: &Context) -> Result<Client, Attempt> {
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
        let prefetch = ctx.prefetch.unwrap_or(32).max(1) as usize;
        let mut client = Client {
            task_id: Arc::from(ctx.task_id.as_str()),
            reader: BufReader::with_capacity(64 << 10, read_half),
            read_buf: Vec::new(),
            shared,
            queue: VecDeque::new(),
            items: VecDeque::new(),
            handed: VecDeque::new(),
            batch: (prefetch / 4).max(1),
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

    /// The task this worker serves.
    #[must_use]
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The worker's id (its log files are `worker_<id>.out/.err`).
    #[must_use]
    pub fn worker_id(&self) -> u64 {
        self.ctx.worker_id
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

    fn flush(&mut self) -> Result<(), Error> {
        self.shared.lock().flush()
    }

    /// Past its lifetime, a worker retires; but only after it completed a block, so that even a
    /// lifetime shorter than the set-up makes progress.
    fn lifetime_over(&self) -> bool {
        self.reported > 0
            && self
                .ctx
                .lifetime_ms
                .is_some_and(|ms| self.started.elapsed() >= Duration::from_millis(ms))
    }

    /// The next block to process, or `None` when the task has no more blocks for this worker
    /// (the task is done, or the worker reached its lifetime). Waits while blocks exist but none
    /// is ready yet.
    ///
    /// # Errors
    ///
    /// The scheduler closed the connection, was silent for the death timeout, or broke the
    /// protocol.
    pub fn acquire_block(&mut self) -> Result<Option<Block>, Error> {
        if !self.may_take()? {
            return Ok(None);
        }
        loop {
            if let Some(w) = self.queue.pop_front() {
                self.handed.push_back((w.grid_index, w.seq));
                return Ok(Some(Block {
                    task_id: Arc::clone(&self.task_id),
                    block_id: w.block_id,
                    read_roi: w.read_roi,
                    write_roi: w.write_roi,
                    status: BlockStatus::Processing,
                    grid_index: w.grid_index,
                }));
            }
            if !self.receive()? {
                return Ok(None);
            }
        }
    }

    /// Whether the worker takes more: false once it retired or reached its lifetime (then it
    /// retires). The first call tells the scheduler that set-up (whatever ran between connecting
    /// and the first acquire) is over: it times work from here.
    fn may_take(&mut self) -> Result<bool, Error> {
        if self.retired {
            return Ok(false);
        }
        if !self.said_ready {
            self.said_ready = true;
            self.shared.lock().send(&WorkerMsg::Ready)?;
        }
        if self.lifetime_over() {
            self.retire()?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Sends waiting reports, then reads one message into the queues; false when the
    /// scheduler has said there is nothing more.
    fn receive(&mut self) -> Result<bool, Error> {
        self.flush()?;
        if self.shutdown {
            return Ok(false);
        }
        match self.read()? {
            ServerMsg::Blocks { blocks } => self.queue.extend(blocks),
            ServerMsg::Items { items } => self.items.extend(items.into_iter().map(Incoming::Item)),
            ServerMsg::Data { name, value } => self.items.push_back(Incoming::Data { name, value }),
            ServerMsg::Ping => {}
            ServerMsg::Shutdown => self.shutdown = true,
            other => {
                return Err(worker_err(
                    WorkerErrorKind::Protocol,
                    format!("protocol error: unexpected {other:?}"),
                ));
            }
        }
        Ok(true)
    }

    /// Executor workers: the next item to run or dataset to keep, or `None` when the executor
    /// has no more work for this worker (it shut down, or the worker reached its lifetime).
    pub(crate) fn acquire_item(&mut self) -> Result<Option<Incoming>, Error> {
        if !self.may_take()? {
            return Ok(None);
        }
        loop {
            if let Some(incoming) = self.items.pop_front() {
                return Ok(Some(incoming));
            }
            if !self.receive()? {
                return Ok(None);
            }
        }
    }

    /// Reports an executor item's result, at once: the worker holds more items than the one
    /// it runs, and a result still waiting when a later item kills the worker would be lost
    /// with it (and the finished item counted as the one that was running).
    pub(crate) fn report_item(
        &mut self,
        seq: u64,
        result: Result<serde_json::Value, String>,
    ) -> Result<(), Error> {
        self.reported += 1;
        let mut w = self.shared.lock();
        w.pending_items.push(ItemOutcome { seq, result });
        w.flush()
    }

    /// Gives back the unstarted blocks (or items) and stops taking new ones.
    fn retire(&mut self) -> Result<(), Error> {
        if self.retired {
            return Ok(());
        }
        self.retired = true;
        tracing::info!(worker = self.ctx.worker_id, "lifetime reached; retiring");
        self.flush()?;
        let unstarted: Vec<u64> = self
            .queue
            .drain(..)
            .map(|w| w.seq)
            .chain(self.items.drain(..).filter_map(|i| match i {
                Incoming::Item(item) => Some(item.seq),
                Incoming::Data { .. } => None,
            }))
            .collect();
        self.shared.lock().send(&WorkerMsg::Retire { unstarted })
    }

    /// Hands `block` (acquired from this client) to another thread of the worker, which
    /// reports it through [`Client::reporter`].
    pub(crate) fn hand_off(&mut self, block: &Block) -> Result<Ticket, Error> {
        let Some(pos) = self
            .handed
            .iter()
            .position(|&(g, _)| g == block.grid_index())
        else {
            return Err(worker_err(
                WorkerErrorKind::NotAcquired,
                format!(
                    "block {block} was not acquired from this client (or was already released)"
                ),
            ));
        };
        let (_, seq) = self.handed.remove(pos).unwrap_or_default();
        self.reported += 1;
        Ok(Ticket { seq })
    }

    /// Reports blocks from other threads (see [`Client::hand_off`]).
    pub(crate) fn reporter(&self) -> Reporter {
        Reporter {
            shared: Arc::clone(&self.shared),
            max_output: self.ctx.max_output(),
        }
    }

    /// Reports a block as done: [`BlockStatus::Success`] succeeds, anything else fails the
    /// block (use [`Client::fail_block`] to say why).
    ///
    /// # Errors
    ///
    /// The block was not acquired from this client, or sending failed.
    pub fn release_block(&mut self, block: Block) -> Result<(), Error> {
        let error = match block.status() {
            BlockStatus::Success => None,
            BlockStatus::Failed => Some("marked failed by the worker".to_owned()),
            other => Some(format!("released with status {other:?}")),
        };
        self.report(&block, error, None, None)
    }

    /// Reports a block as done with its output, for a task whose blocks return outputs (see
    /// [`TaskBuilder::process_with_output`](crate::TaskBuilder::process_with_output)): the
    /// value is serialized (compact JSON) and sent with the report. An output that cannot be
    /// serialized, or is larger than the run's
    /// [`Runner::max_output_bytes`](crate::Runner::max_output_bytes), fails the block instead
    /// (with a message saying so), and this still returns `Ok`.
    ///
    /// # Errors
    ///
    /// The block was not acquired from this client, or sending failed.
    pub fn release_block_with_output<T: serde::Serialize>(
        &mut self,
        block: Block,
        output: &T,
    ) -> Result<(), Error> {
        match serde_json::to_string(output) {
            Ok(json) => self.release_output(&block, json),
            Err(e) => self.report(
                &block,
                Some(format!(
                    "the block's output cannot be serialized as JSON: {e}"
                )),
                None,
                None,
            ),
        }
    }

    /// Reports a block as done with its serialized output, or failed if it is over the cap.
    pub(crate) fn release_output(&mut self, block: &Block, output: String) -> Result<(), Error> {
        let cap = self.ctx.max_output();
        if output.len() > cap {
            let message = super::output_too_large(block, output.len(), cap);
            return self.report(
                block,
                Some(message),
                Some(FailureKind::OutputTooLarge),
                None,
            );
        }
        self.report(block, None, None, Some(output))
    }

    /// Reports a block as failed with the kind of failure.
    pub(crate) fn fail_block_kind(
        &mut self,
        block: &Block,
        kind: FailureKind,
        error: String,
    ) -> Result<(), Error> {
        self.report(block, Some(error), Some(kind), None)
    }

    /// Reports a block as failed, with the error text shown in the run's summary.
    ///
    /// # Errors
    ///
    /// The block was not acquired from this client, or sending failed.
    pub fn fail_block(&mut self, block: Block, error: impl std::fmt::Display) -> Result<(), Error> {
        self.report(&block, Some(error.to_string()), None, None)
    }

    fn report(
        &mut self,
        block: &Block,
        error: Option<String>,
        kind: Option<FailureKind>,
        output: Option<String>,
    ) -> Result<(), Error> {
        let Some(pos) = self
            .handed
            .iter()
            .position(|&(g, _)| g == block.grid_index())
        else {
            return Err(worker_err(
                WorkerErrorKind::NotAcquired,
                format!(
                    "block {block} was not acquired from this client (or was already released)"
                ),
            ));
        };
        let (_, seq) = self.handed.remove(pos).unwrap_or_default();
        self.reported += 1;
        let mut w = self.shared.lock();
        let size = output.as_ref().map_or(0, String::len);
        if !w.pending.is_empty() && w.pending_output + size > OUTPUT_BATCH {
            // Keeps a report's frame within what the scheduler reads.
            w.flush()?;
        }
        w.pending_output += size;
        w.pending.push(Outcome {
            seq,
            error,
            kind,
            output,
        });
        if w.first_pending.is_none() {
            // The background thread sends it within FLUSH_LATENCY unless more follow.
            w.first_pending = Some(Instant::now());
            self.shared.wake.notify_one();
        }
        if self.queue.is_empty()
            || w.pending.len() >= self.batch
            || w.pending_output >= OUTPUT_BATCH
        {
            w.flush()?;
        }
        Ok(())
    }

    /// Tells the scheduler that this worker's set-up failed (it exits after this).
    pub(crate) fn setup_failed(&mut self, message: String) {
        let _ = self.shared.lock().send(&WorkerMsg::SetupFailed { message });
    }

    /// Flushes reports and says goodbye.
    fn bye(&mut self) -> Result<(), Error> {
        if self.said_bye {
            return Ok(());
        }
        self.said_bye = true;
        let mut w = self.shared.lock();
        w.flush()?;
        w.send(&WorkerMsg::Bye)
    }

    /// Sends outstanding reports and leaves. Dropping the client does the same, ignoring
    /// errors.
    ///
    /// # Errors
    ///
    /// Sending failed.
    pub fn close(mut self) -> Result<(), Error> {
        self.bye()
    }
}

impl Drop for Client {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fleet::protocol::{read_frame, to_frame};
    use std::net::TcpListener;

    fn ctx(addr: String, death_ms: u64) -> Context {
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

    #[test]
    fn an_unreachable_scheduler_makes_the_worker_give_up_after_the_death_timeout() {
        // A port that was just free: nobody listens there.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let started = Instant::now();
        let e = Client::connect(ctx(addr.to_string(), 300)).unwrap_err();
        assert!(
            e.to_string().contains("could not reach the scheduler"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_silent_scheduler_makes_the_worker_give_up_and_heartbeats_flow_meanwhile() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let hello: WorkerMsg = read_frame(&mut s, &mut buf).unwrap().unwrap();
            assert!(matches!(hello, WorkerMsg::Hello { .. }));
            s.write_all(&to_frame(&ServerMsg::Welcome { connection: 0 }).unwrap())
                .unwrap();
            // Then say nothing; count what the worker sends until it leaves.
            let mut heartbeats = 0;
            while let Ok(Some(msg)) = read_frame::<WorkerMsg, _>(&mut s, &mut buf) {
                if msg == WorkerMsg::Heartbeat {
                    heartbeats += 1;
                }
            }
            heartbeats
        });
        let mut client = Client::connect(ctx(addr.to_string(), 400)).unwrap();
        let e = client.acquire_block().unwrap_err();
        assert!(e.to_string().contains("silent"), "{e}");
        drop(client);
        let heartbeats = server.join().unwrap();
        assert!(
            heartbeats >= 2,
            "{heartbeats} heartbeats in 400 ms at 20 ms intervals"
        );
    }

    #[test]
    fn a_worker_shut_out_before_its_welcome_tries_again_but_not_after_a_refusal() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            // The first connection is closed at once, as a server full of idle peers does.
            drop(listener.accept().unwrap());
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let _hello: WorkerMsg = read_frame(&mut s, &mut buf).unwrap().unwrap();
            s.write_all(&to_frame(&ServerMsg::Welcome { connection: 5 }).unwrap())
                .unwrap();
            while let Ok(Some(_)) = read_frame::<WorkerMsg, _>(&mut s, &mut buf) {}
            // Then a refusal, which is final.
            let (mut s, _) = listener.accept().unwrap();
            let _hello: WorkerMsg = read_frame(&mut s, &mut buf).unwrap().unwrap();
            let refused = ServerMsg::Refused {
                reason: "wrong token".into(),
            };
            s.write_all(&to_frame(&refused).unwrap()).unwrap();
        });
        let client = Client::connect(ctx(addr.to_string(), 20_000)).unwrap();
        assert_eq!(client.connection, 5);
        drop(client);
        let started = Instant::now();
        let e = Client::connect(ctx(addr.to_string(), 20_000)).unwrap_err();
        assert!(
            e.to_string().contains("refused this worker: wrong token"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        server.join().unwrap();
    }

    #[test]
    fn blocks_released_out_of_thin_air_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let _hello: WorkerMsg = read_frame(&mut s, &mut buf).unwrap().unwrap();
            s.write_all(&to_frame(&ServerMsg::Welcome { connection: 0 }).unwrap())
                .unwrap();
            while let Ok(Some(_)) = read_frame::<WorkerMsg, _>(&mut s, &mut buf) {}
        });
        let mut client = Client::connect(ctx(addr.to_string(), 5000)).unwrap();
        let block = Block::new(
            "task",
            1,
            1,
            crate::Roi::new([0], [1]),
            crate::Roi::new([0], [1]),
        );
        let e = client.release_block(block).unwrap_err();
        assert!(e.to_string().contains("was not acquired"), "{e}");
        drop(client);
        server.join().unwrap();
    }
}
