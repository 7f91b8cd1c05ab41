//! The worker side of the protocol: [`Client`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::blocks::{Block, BlockStatus};
use crate::error::{Error, WorkerErrorKind};
use crate::fleet::context::{CONTEXT_ENV, Context};
use crate::fleet::link::{Link, Shared};
use crate::fleet::protocol::{OUTPUT_BATCH, Outcome, ServerMsg, WireBlock};
use crate::observe::FailureKind;

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
    link: Link,
    task_id: Arc<str>,
    queue: VecDeque<WireBlock>,
    /// `(grid_index, seq)` of blocks handed to the user and not yet released.
    handed: VecDeque<(u64, u64)>,
    batch: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("task_id", &self.task_id)
            .field("worker_id", &self.link.ctx().worker_id)
            .field("scheduler", &self.link.ctx().addr)
            .field("connection", &self.link.connection())
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

    /// Connects, retrying for up to the death timeout (see [`Link::connect`]).
    pub(crate) fn connect(ctx: Context) -> Result<Client, Error> {
        let prefetch = ctx.prefetch.unwrap_or(32).max(1) as usize;
        let task_id = Arc::from(ctx.task_id.as_str());
        Ok(Client {
            link: Link::connect(ctx)?,
            task_id,
            queue: VecDeque::new(),
            handed: VecDeque::new(),
            batch: (prefetch / 4).max(1),
        })
    }

    /// The task this worker serves.
    #[must_use]
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The worker's id (its log files are `worker_<id>.out/.err`).
    #[must_use]
    pub fn worker_id(&self) -> u64 {
        self.link.ctx().worker_id
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

    /// Whether the worker takes more blocks (see [`Link::may_take`]); at its lifetime the
    /// blocks it holds go back.
    fn may_take(&mut self) -> Result<bool, Error> {
        let queue = &mut self.queue;
        self.link
            .may_take(|| queue.drain(..).map(|w| w.seq).collect())
    }

    /// Reads the next message into the queue; false when the scheduler has said there is
    /// nothing more.
    fn receive(&mut self) -> Result<bool, Error> {
        match self.link.receive()? {
            Some(ServerMsg::Blocks { blocks }) => self.queue.extend(blocks),
            Some(other) => {
                return Err(worker_err(
                    WorkerErrorKind::Protocol,
                    format!("protocol error: a block worker got {other:?}"),
                ));
            }
            None => return Ok(false),
        }
        Ok(true)
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
        self.link.reported();
        Ok(Ticket { seq })
    }

    /// Reports blocks from other threads (see [`Client::hand_off`]).
    pub(crate) fn reporter(&self) -> Reporter {
        Reporter {
            shared: Arc::clone(self.link.shared()),
            max_output: self.link.ctx().max_output(),
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
        let cap = self.link.ctx().max_output();
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
        let Ticket { seq } = self.hand_off(block)?;
        let mut w = self.link.shared().lock();
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
            self.link.shared().wake();
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
        self.link.setup_failed(message);
    }

    /// Sends outstanding reports and leaves. Dropping the client does the same, ignoring
    /// errors.
    ///
    /// # Errors
    ///
    /// Sending failed.
    pub fn close(mut self) -> Result<(), Error> {
        self.link.bye()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fleet::protocol::{WorkerMsg, read_frame, to_frame};
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    fn ctx(addr: String, death_ms: u64) -> Context {
        Context::for_test(addr, death_ms)
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
        assert_eq!(client.link.connection(), 5);
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
