//! Worker mode: a process started with `BLOCKWISE_CONTEXT` serves blocks of its task, on one
//! thread or, with [`TaskBuilder::threads_per_worker`](crate::TaskBuilder::threads_per_worker),
//! on several.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crossbeam_channel::bounded;

use super::client::{Client, Reporter, Ticket};
use crate::blocks::{Block, BlockStatus};
use crate::error::{Error, WorkerErrorKind};
use crate::fleet::context::Context;
use crate::observe::FailureKind;
use crate::scheduler::Scheduler;
use crate::task::{BlockFn, Processor, Task, WorkerContext};
use crate::util::panic_message;

/// Finds the context's task among `tasks` (and their upstream tasks).
pub(super) fn find_task(tasks: &[Task], ctx: &Context) -> Result<Option<Task>, Error> {
    if let Some(t) = tasks.iter().find(|t| t.task_id() == ctx.task_id) {
        return Ok(Some(t.clone()));
    }
    let sched = Scheduler::new(tasks)?;
    Ok(sched.task(&ctx.task_id).cloned())
}

/// Why a worker's block function could not be built.
enum SetupError {
    Failed(String),
    Missing,
}

/// The block function of one thread of a worker: the task's function, or what its per-worker
/// set-up returns.
fn block_fn(task: &Task, wctx: &WorkerContext) -> Result<BlockFn, SetupError> {
    match task.inner.processor.clone() {
        Some(Processor::PerBlock(f)) => Ok(Box::new(move |b| f(b))),
        Some(Processor::PerWorker(init)) => match catch_unwind(AssertUnwindSafe(|| init(wctx))) {
            Ok(Ok(f)) => Ok(f),
            Ok(Err(e)) => Err(SetupError::Failed(e.to_string())),
            Err(panic) => Err(SetupError::Failed(format!(
                "panic: {}",
                panic_message(panic.as_ref())
            ))),
        },
        None => Err(SetupError::Missing),
    }
}

/// Runs one block: its output, or the kind of failure and its message.
fn run_block(f: &mut BlockFn, block: &Block) -> Result<Option<String>, (FailureKind, String)> {
    match catch_unwind(AssertUnwindSafe(|| f(block))) {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err((FailureKind::Error, e.to_string())),
        Err(panic) => Err((
            FailureKind::Panic,
            format!("panic: {}", panic_message(panic.as_ref())),
        )),
    }
}

/// Tells the scheduler that set-up failed and returns the error the worker exits with.
fn setup_failed(task: &Task, client: &mut Client, e: SetupError) -> Error {
    match e {
        SetupError::Failed(message) => {
            client.setup_failed(message.clone());
            Error::WorkerStartup {
                task: task.task_id().to_owned(),
                attempts: 1,
                message,
            }
        }
        SetupError::Missing => {
            client.setup_failed("the task has no process function in this program".to_owned());
            Error::MissingProcess {
                task: task.task_id().to_owned(),
            }
        }
    }
}

/// Connects, runs the task's per-worker set-up, then processes blocks until the scheduler has
/// no more for this worker. Returns the number of blocks processed.
pub(super) fn serve(task: &Task, ctx: Context) -> Result<u64, Error> {
    let devices = super::entry::devices_of(&ctx);
    let mut client = Client::connect(ctx)?;
    let wctx = WorkerContext {
        task_id: task.task_id().to_owned(),
        worker_id: client.worker_id(),
        devices,
    };
    let threads = task.threads_per_worker();
    if threads > 1 {
        return serve_on_threads(task, client, &wctx, threads);
    }
    let mut f = match block_fn(task, &wctx) {
        Ok(f) => f,
        Err(e) => return Err(setup_failed(task, &mut client, e)),
    };
    let mut processed = 0;
    while let Some(mut block) = client.acquire_block()? {
        match run_block(&mut f, &block) {
            Ok(None) => {
                block.set_status(BlockStatus::Success);
                client.release_block(block)?;
            }
            Ok(Some(output)) => client.release_output(&block, output)?,
            Err((kind, message)) => client.fail_block_kind(&block, kind, message)?,
        }
        processed += 1;
    }
    client.close()?;
    Ok(processed)
}

/// [`serve`] with `threads` blocks at once: the connection's thread reads blocks and hands
/// each to the next free thread, which runs it with its own block function and reports it.
fn serve_on_threads(
    task: &Task,
    mut client: Client,
    wctx: &WorkerContext,
    threads: usize,
) -> Result<u64, Error> {
    // A rendezvous: a block leaves the connection's thread only when a thread is free for it.
    let (work_tx, work_rx) = bounded::<(Block, Ticket)>(0);
    let (setup_tx, setup_rx) = bounded::<Result<(), SetupError>>(threads);
    let reporter: Reporter = client.reporter();
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let (work_rx, setup_tx, reporter) =
                (work_rx.clone(), setup_tx.clone(), reporter.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("blockwise-worker-{i}"))
                .spawn_scoped(scope, move || -> Result<u64, Error> {
                    let mut f = match block_fn(task, wctx) {
                        Ok(f) => {
                            let _ = setup_tx.send(Ok(()));
                            f
                        }
                        Err(e) => {
                            let _ = setup_tx.send(Err(e));
                            return Ok(0);
                        }
                    };
                    drop(setup_tx);
                    let mut processed = 0;
                    while let Ok((block, ticket)) = work_rx.recv() {
                        let result = run_block(&mut f, &block);
                        reporter.report(ticket, &block, result)?;
                        processed += 1;
                    }
                    Ok(processed)
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    let message = format!("starting worker thread {i} of {threads}: {e}");
                    drop(work_tx);
                    return Err(setup_failed(task, &mut client, SetupError::Failed(message)));
                }
            }
        }
        drop(setup_tx);
        drop(work_rx);
        for _ in 0..threads {
            match setup_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    drop(work_tx);
                    return Err(setup_failed(task, &mut client, e));
                }
                Err(_) => break,
            }
        }
        let mut read = Ok(());
        loop {
            let block = match client.acquire_block() {
                Ok(Some(block)) => block,
                Ok(None) => break,
                Err(e) => {
                    read = Err(e);
                    break;
                }
            };
            let ticket = client.hand_off(&block)?;
            if work_tx.send((block, ticket)).is_err() {
                // Every thread stopped: reporting failed, so the connection is gone.
                break;
            }
        }
        drop(work_tx);
        let mut processed = 0;
        for h in handles {
            match h.join() {
                Ok(Ok(n)) => processed += n,
                Ok(Err(e)) => read = read.and(Err(e)),
                Err(panic) => {
                    read = read.and(Err(Error::worker(
                        WorkerErrorKind::Thread,
                        format!(
                            "a worker thread panicked: {}",
                            panic_message(panic.as_ref())
                        ),
                    )));
                }
            }
        }
        read?;
        client.close()?;
        Ok(processed)
    })
}
