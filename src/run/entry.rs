//! The explicit worker entry: [`worker_main`].

use std::io::Write;

use super::worker;
use crate::error::{Error, WorkerErrorKind};
use crate::fleet::context::Context;
use crate::task::{Task, WorkerContext};

/// Makes a program safe to run on worker processes: **call it first in `main`**, with the
/// function that builds the program's tasks.
///
/// A process runner ([`Runner::processes`](crate::Runner::processes),
/// [`Runner::workers`](crate::Runner::workers)) starts its workers by running the current
/// program again with a `BLOCKWISE_CONTEXT` environment variable. Without an entry point a
/// worker re-runs the whole `main`, side effects included (generating data, deleting folders,
/// creating outputs), until it reaches the `run` call of its task. With `worker_main`:
///
/// * in the **driver** (no `BLOCKWISE_CONTEXT`), it returns at once without calling `build`:
///   the program goes on and does its work, calling `build` itself when it needs the tasks;
/// * in a **worker**, it calls `build`, finds the task named in its context among the returned
///   tasks (or their upstream tasks), serves that task's blocks, and **exits the process**
///   (code 0, or 1 with the error on stderr, which the scheduler reports). Nothing after the
///   call runs in a worker, so the driver's side effects run exactly once.
///
/// `build` must return every task the program runs on worker processes, across all its `run`
/// calls, built the same way the driver builds them; it runs in the worker after the driver
/// started it, so it may open arrays the driver created. A worker whose task is not among
/// them exits with an error naming the task and the ones `build` returned.
///
/// Workers of an [`Executor`](crate::exec::Executor) pool are left alone: for them
/// `worker_main` returns, so that the program reaches the executor's `start`.
///
/// ```no_run
/// use blockwise::{Roi, Runner, Task};
///
/// fn tasks() -> Result<Vec<Task>, blockwise::Error> {
///     let t = Task::builder("t", Roi::new([0], [1000]), Roi::new([0], [10]), Roi::new([0], [10]))
///         .process(|_block| Ok(()))
///         .num_workers(2)
///         .build()?;
///     Ok(vec![t])
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     blockwise::worker_main(tasks); // a worker never returns from here
///     println!("the driver: runs once"); // side effects are safe from here on
///     let summary = Runner::new().processes().run(tasks()?)?;
///     assert!(summary.is_success());
///     Ok(())
/// }
/// ```
pub fn worker_main<F>(build: F)
where
    F: FnOnce() -> Result<Vec<Task>, Error>,
{
    let ctx = match Context::from_env() {
        Ok(None) => return,
        Ok(Some(ctx)) => ctx,
        Err(e) => exit_with(&format!("blockwise worker: {e}")),
    };
    if ctx.task_id.starts_with(crate::exec::POOL_PREFIX) {
        return;
    }
    let worker_id = ctx.worker_id;
    let tasks = match build() {
        Ok(tasks) => tasks,
        Err(e) => exit_with(&format!(
            "blockwise worker {worker_id} of task {:?}: building the tasks failed: {e}",
            ctx.task_id
        )),
    };
    match serve(&tasks, ctx) {
        Ok(n) => {
            tracing::info!(worker = worker_id, blocks = n, "worker done");
            std::process::exit(0)
        }
        Err(e) => exit_with(&e.to_string()),
    }
}

/// The worker half of [`worker_main`] without the exit, for hosts that must shut down their
/// own way (an embedding interpreter flushing its buffers, say): in a worker process of a
/// process runner, finds the context's task among `tasks` (or their upstream tasks), serves
/// its blocks until the scheduler has no more for this worker, and returns the number of
/// blocks it processed. Outside a worker process it returns `Ok(None)` without doing anything.
///
/// # Errors
///
/// [`Error::Worker`] when the context is unreadable
/// ([`BadContext`](crate::WorkerErrorKind::BadContext)) or its task is not among `tasks`
/// ([`UnknownTask`](crate::WorkerErrorKind::UnknownTask), the message names the task and the
/// ones given; [`InvalidTasks`](crate::WorkerErrorKind::InvalidTasks) when they are invalid),
/// or when something ends the worker's connection early: the scheduler going away (the
/// connection's own kind), the task's per-worker set-up failing
/// ([`Setup`](crate::WorkerErrorKind::Setup)).
///
/// ```
/// # fn main() -> Result<(), blockwise::Error> {
/// // Not a worker process: nothing to serve.
/// assert_eq!(blockwise::serve_worker(&[])?, None);
/// # Ok(())
/// # }
/// ```
pub fn serve_worker(tasks: &[Task]) -> Result<Option<u64>, Error> {
    match Context::from_env()? {
        None => Ok(None),
        Some(ctx) => serve(tasks, ctx).map(Some),
    }
}

/// Serves the context's task among `tasks`; errors name the worker and the task.
fn serve(tasks: &[Task], ctx: Context) -> Result<u64, Error> {
    let worker_id = ctx.worker_id;
    let task_id = ctx.task_id.clone();
    let fail = Error::worker;
    let task = match worker::find_task(tasks, &ctx) {
        Ok(Some(task)) => task,
        Ok(None) => {
            return Err(fail(
                WorkerErrorKind::UnknownTask,
                format!(
                    "blockwise worker {worker_id}: task {task_id:?} is not among the tasks the worker built ({}); it must build every task the program runs on worker processes",
                    task_list(tasks)
                ),
            ));
        }
        Err(e) => {
            return Err(fail(
                WorkerErrorKind::InvalidTasks,
                format!(
                    "blockwise worker {worker_id} of task {task_id:?}: the tasks the worker built are invalid: {e}"
                ),
            ));
        }
    };
    worker::serve(&task, ctx).map_err(|e| {
        // The connection's own failures keep their kind; the rest are the task's set-up.
        let kind = match &e {
            Error::Worker(w) => w.kind(),
            _ => WorkerErrorKind::Setup,
        };
        fail(
            kind,
            format!("blockwise worker {worker_id} of task {task_id:?}: {e}"),
        )
    })
}

pub(super) fn task_list(tasks: &[Task]) -> String {
    if tasks.is_empty() {
        return "none".into();
    }
    tasks
        .iter()
        .map(|t| format!("{:?}", t.task_id()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Worker mode's stderr is the worker's log, which the scheduler reports when a worker fails
/// before completing a block.
fn exit_with(message: &str) -> ! {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{message}");
    let _ = err.flush();
    std::process::exit(1)
}

impl WorkerContext {
    /// The task, worker id and devices of this process, if a process runner started it as a worker
    /// (it has [`CONTEXT_ENV`](crate::CONTEXT_ENV)); `None` in any other process. A worker that runs its own loop
    /// with [`Client::from_env`](crate::Client::from_env) can use it to pick its task's
    /// function first.
    ///
    /// # Errors
    ///
    /// [`Error::Worker`] when the variable is set but not a valid context.
    ///
    /// ```
    /// # fn main() -> Result<(), blockwise::Error> {
    /// assert_eq!(blockwise::WorkerContext::from_env()?, None); // not a worker process
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_env() -> Result<Option<WorkerContext>, Error> {
        Ok(Context::from_env()?.map(|c| WorkerContext {
            devices: devices_of(&c),
            task_id: c.task_id,
            worker_id: c.worker_id,
        }))
    }
}

/// A worker's `gpu` ids: those the run's budget gave it, or, where the batch system placed its
/// devices itself, what the system put in `CUDA_VISIBLE_DEVICES`.
pub(super) fn devices_of(ctx: &Context) -> Vec<String> {
    if !ctx.devices_from_env {
        return ctx.devices.clone();
    }
    std::env::var(crate::fleet::budget::CUDA_VISIBLE_DEVICES)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
