//! Worker mode: a process started with `BLOCKWISE_CONTEXT` serves blocks of its task.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::client::Client;
use super::context::Context;
use crate::blocks::BlockStatus;
use crate::error::Error;
use crate::observe::FailureKind;
use crate::scheduler::{Scheduler, panic_message};
use crate::task::{BlockFn, Processor, Task, WorkerContext};

/// Finds the context's task among `tasks` (and their upstream tasks).
pub(super) fn find_task(tasks: &[Task], ctx: &Context) -> Result<Option<Task>, Error> {
    if let Some(t) = tasks.iter().find(|t| t.task_id() == ctx.task_id) {
        return Ok(Some(t.clone()));
    }
    let sched = Scheduler::new(tasks)?;
    Ok(sched.task(&ctx.task_id).cloned())
}

/// Connects, runs the task's per-worker set-up, then processes blocks until the scheduler has
/// no more for this worker. Returns the number of blocks processed.
pub(super) fn serve(task: &Task, ctx: Context) -> Result<u64, Error> {
    let mut client = Client::connect(ctx)?;
    let wctx = WorkerContext {
        task_id: task.task_id().to_owned(),
        worker_id: client.worker_id(),
        devices: Vec::new(),
    };
    let mut f: BlockFn = match task.inner.processor.clone() {
        Some(Processor::PerBlock(f)) => Box::new(move |b| f(b)),
        Some(Processor::PerWorker(init)) => {
            let failed = |message: String, client: &mut Client| {
                client.setup_failed(message.clone());
                Error::WorkerStartup {
                    task: task.task_id().to_owned(),
                    attempts: 1,
                    message,
                }
            };
            match catch_unwind(AssertUnwindSafe(|| init(&wctx))) {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => return Err(failed(e.to_string(), &mut client)),
                Err(panic) => {
                    let message = format!("panic: {}", panic_message(panic.as_ref()));
                    return Err(failed(message, &mut client));
                }
            }
        }
        None => {
            let message = "the task has no process function in this program".to_owned();
            client.setup_failed(message.clone());
            return Err(Error::MissingProcess {
                task: task.task_id().to_owned(),
            });
        }
    };
    let mut processed = 0;
    while let Some(mut block) = client.acquire_block()? {
        match catch_unwind(AssertUnwindSafe(|| f(&block))) {
            Ok(Ok(None)) => {
                block.set_status(BlockStatus::Success);
                client.release_block(block)?;
            }
            Ok(Ok(Some(output))) => client.release_output(&block, output)?,
            Ok(Err(e)) => client.fail_block_kind(&block, FailureKind::Error, e.to_string())?,
            Err(panic) => {
                let message = format!("panic: {}", panic_message(panic.as_ref()));
                client.fail_block_kind(&block, FailureKind::Panic, message)?;
            }
        }
        processed += 1;
    }
    client.close()?;
    Ok(processed)
}
