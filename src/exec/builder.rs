//! [`ExecutorBuilder`]: an executor on worker processes.

use super::*;
use crate::fleet::budget::{Budget, Requirement};
use crate::fleet::budget::{id_list, unit_list};

/// Configures an executor on worker processes ([`Executor::processes`],
/// [`Executor::launcher`]); [`start`](Self::start) starts it.
///
/// # How workers find the functions
///
/// Each worker re-executes the current program (same arguments) with a `BLOCKWISE_CONTEXT`
/// environment variable, like the block runner's workers. There, the program's own call to
/// [`start`](Self::start) for this executor recognises the context, runs the items it is sent
/// with the [`Function`]s registered on the builder, and **exits the process**. So:
///
/// * register every function the executor will run before `start`, under names unique in the
///   executor;
/// * build the executor early in `main`: what runs before `start` runs again in every worker
///   (guard one-time work such as writing files with [`is_worker`](crate::is_worker));
/// * in a worker of *another* executor (or of a block task), `start` returns a thread
///   executor, so that the program carries on to the call its context is for.
///
/// Several executors in one program need distinct [`name`](Self::name)s. Workers log to
/// `<log dir>/executor-<name>/worker_<id>.out/.err` (see [`WorkerOptions::log_dir`]; the
/// worker processes' settings are one [`WorkerOptions`] value, given with
/// [`workers`](Self::workers)).
///
/// # Behaviour
///
/// Items and results travel as JSON (16 MiB at most each; put bulk data in storage and pass
/// where it is). A worker runs one item at a time and holds a few (enough for about 2 ms of
/// work), so [`slots`](Executor::slots) is the number of workers. Workers start when the
/// executor starts and stay until it is dropped; one that dies or hangs is replaced, the item
/// it was running is retried on another (3 attempts in all) and the items it held go back to
/// the queue. Workers that fail before finishing an item are replaced at most
/// [`max_worker_restarts`](Self::max_worker_restarts) times in a row; after that, and after
/// Ctrl-C or SIGTERM, every waiting item fails with the reason and every job is cancelled.
/// Dropping the last clone of the executor lets submitted items finish, then tells the workers
/// to leave and cancels their jobs.
///
/// ```no_run
/// use blockwise::exec::{Executor, Function};
///
/// fn main() -> Result<(), blockwise::Error> {
///     let inc = Function::new("inc", |x: u64| Ok::<u64, String>(x + 1));
///     // Workers re-run main up to here, then serve items of `inc` and exit.
///     let ex = Executor::processes(2).function(&inc).start()?;
///     assert_eq!(ex.map(inc, [1, 2, 3])?, vec![2, 3, 4]);
///     Ok(())
/// }
/// ```
#[must_use]
pub struct ExecutorBuilder {
    name: String,
    workers: usize,
    prefetch: usize,
    max_worker_restarts: u32,
    options: WorkerOptions,
    functions: HashMap<String, work::ErasedFn>,
    duplicate: Option<String>,
    cancel: Option<crate::Cancel>,
    timeout: Option<Duration>,
    requires: Vec<(String, u64)>,
    resources: Vec<(String, u64)>,
    devices: Vec<(String, Vec<String>)>,
}

impl fmt::Debug for ExecutorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.functions.keys().collect();
        names.sort();
        f.debug_struct("ExecutorBuilder")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .field("launcher", &self.options.process.launcher)
            .field("functions", &names)
            .finish_non_exhaustive()
    }
}

impl ExecutorBuilder {
    pub(super) fn new(launcher: Arc<dyn Launcher>, workers: usize) -> ExecutorBuilder {
        ExecutorBuilder {
            name: "executor".into(),
            workers: workers.max(1),
            prefetch: 32,
            max_worker_restarts: 3,
            options: WorkerOptions {
                process: ProcessOptions::new(launcher),
            },
            functions: HashMap::new(),
            duplicate: None,
            cancel: None,
            timeout: None,
            requires: Vec::new(),
            resources: Vec::new(),
            devices: Vec::new(),
        }
    }

    /// What one worker process of the pool needs, as a task's
    /// [`requires`](crate::TaskBuilder::requires): with a budget
    /// ([`resources`](Self::resources)) the pool runs on as many of its workers as the budget
    /// holds, each with its own `gpu` ids (in `CUDA_VISIBLE_DEVICES`); the task is refused at
    /// [`start`](Self::start) if one worker can never fit.
    ///
    /// ```no_run
    /// use blockwise::exec::{Executor, Function};
    ///
    /// fn main() -> Result<(), blockwise::Error> {
    ///     let predict = Function::new("predict", |x: u64| {
    ///         let gpu = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
    ///         Ok::<String, String>(format!("{x} on GPU {gpu}"))
    ///     });
    ///     // Four workers wanted, two GPUs: two workers, one GPU each.
    ///     let ex = Executor::processes(4)
    ///         .requires([("gpu", 1)])
    ///         .resources([("gpu", 2)])
    ///         .function(&predict)
    ///         .start()?;
    ///     let out = ex.map(predict, 0..8u64)?;
    ///     assert_eq!(out.len(), 8);
    ///     Ok(())
    /// }
    /// ```
    pub fn requires(mut self, units: impl IntoIterator<Item = (impl Into<String>, u64)>) -> Self {
        self.requires = unit_list(units);
        self
    }

    /// The pool's resource budget, as [`Runner::resources`](crate::Runner::resources).
    pub fn resources(mut self, units: impl IntoIterator<Item = (impl Into<String>, u64)>) -> Self {
        self.resources = unit_list(units);
        self
    }

    /// Names the units of a resource of the budget, as
    /// [`Runner::devices`](crate::Runner::devices).
    pub fn devices(
        mut self,
        resource: impl Into<String>,
        ids: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.devices.push(id_list(resource, ids));
        self
    }

    /// A time limit for each item (default none): an item running longer on a worker fails
    /// with [`ItemError::TimedOut`] and the worker running it is replaced; see [time
    /// limits](Executor#time-limits). [`MapOptions::timeout`] overrides it per map.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Makes `f` runnable on the workers (register every function before
    /// [`start`](Self::start)).
    pub fn function<T, R>(mut self, f: &Function<T, R>) -> Self
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        if self
            .functions
            .insert(f.name().to_owned(), f.erased())
            .is_some()
        {
            self.duplicate = Some(f.name().to_owned());
        }
        self
    }

    /// The executor's name, which tells its workers apart from other executors' in the same
    /// program (default `"executor"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many items a worker may hold at most (default 32); it holds fewer when items are
    /// slow.
    pub fn prefetch(mut self, items: usize) -> Self {
        self.prefetch = items.max(1);
        self
    }

    /// How often a worker that fails before finishing an item is replaced before the executor
    /// gives up (default 3); see [`Runner::max_worker_restarts`](crate::Runner::max_worker_restarts).
    pub fn max_worker_restarts(mut self, n: u32) -> Self {
        self.max_worker_restarts = n;
        self
    }

    /// Everything about the worker processes: launcher, log directory, command, address,
    /// TLS, heartbeats and time-outs (see [`WorkerOptions`], the value
    /// [`Runner::workers`](crate::Runner::workers) takes too). It replaces the options the
    /// builder had, its launcher included: `Executor::processes(n).workers(options)` runs `n`
    /// workers started by `options`' launcher.
    ///
    /// ```no_run
    /// use blockwise::WorkerOptions;
    /// use blockwise::exec::{Executor, Function};
    /// use blockwise::launch::Batch;
    ///
    /// # fn main() -> Result<(), blockwise::Error> {
    /// let inc = Function::new("inc", |x: u64| Ok::<u64, String>(x + 1));
    /// let ex = Executor::processes(16)
    ///     .workers(WorkerOptions::launcher(Batch::slurm()).log_dir("/shared/logs"))
    ///     .function(&inc)
    ///     .start()?;
    /// assert_eq!(ex.map(inc, [1, 2, 3])?, vec![2, 3, 4]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn workers(mut self, options: WorkerOptions) -> Self {
        self.options = options;
        self
    }

    /// Stops the executor when `cancel` is cancelled, as Ctrl-C does (see
    /// [`WorkerOptions::handle_signals`]): waiting and running items fail with the
    /// reason and every worker job is cancelled. For programs that handle signals themselves
    /// (e.g. an embedding interpreter).
    pub fn cancel_with(mut self, cancel: &crate::Cancel) -> Self {
        self.cancel = Some(cancel.clone());
        self
    }

    /// The worker side without the exit: in a worker process of this executor (one it
    /// started, recognised by its `BLOCKWISE_CONTEXT` and [`name`](Self::name)), serves the
    /// items it is sent with the registered functions until the executor lets it go, and
    /// returns how many it ran; `None` in any other process (nothing is started). For worker
    /// programs that are not the driving program (see
    /// [`WorkerOptions::worker_command`]) or must clean up before exiting.
    ///
    /// ```no_run
    /// use blockwise::exec::{Executor, Function};
    ///
    /// let inc = Function::new("inc", |x: u64| Ok::<u64, String>(x + 1));
    /// if let Some(n) = Executor::processes(2).function(&inc).serve()? {
    ///     eprintln!("served {n} items");
    ///     return Ok(());
    /// }
    /// # Ok::<(), blockwise::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ExecutorError::DuplicateFunction`] when two functions share a name; a
    /// [`WorkerError`](crate::WorkerError) for a malformed worker context, and for connection
    /// and protocol errors while serving.
    pub fn serve(self) -> Result<Option<u64>, crate::Error> {
        if let Some(name) = self.duplicate {
            return Err(ExecutorError::DuplicateFunction { name }.into());
        }
        remote::serve_if_worker(&self.name, &self.functions)
    }

    /// Starts the workers and returns the executor. In a worker process of this executor it
    /// serves items instead and never returns (see [how workers find the
    /// functions](ExecutorBuilder#how-workers-find-the-functions)).
    ///
    /// # Errors
    ///
    /// [`ExecutorError::DuplicateFunction`] when two functions share a name; I/O and
    /// launcher errors starting the server.
    pub fn start(self) -> Result<Executor, crate::Error> {
        if let Some(name) = self.duplicate {
            return Err(ExecutorError::DuplicateFunction { name }.into());
        }
        let workers = self.workers;
        let need = Requirement::new(self.requires).map_err(|reason| crate::Error::InvalidTask {
            task: self.name.clone(),
            reason: format!("requires: {reason}"),
        })?;
        let budget = Budget::new(&self.resources, &self.devices)?;
        budget.check(&self.name, &need)?;
        let started = remote::RemotePool::start(remote::PoolOptions {
            need,
            budget,
            name: self.name,
            workers,
            prefetch: self.prefetch,
            max_worker_restarts: self.max_worker_restarts,
            process: self.options.process,
            functions: self.functions,
            cancel: self.cancel,
        })?;
        let timeout = self.timeout;
        Ok(match started {
            remote::Started::Pool(pool) => Executor {
                backend: Arc::new(Backend::Remote(pool)),
                timeout,
            },
            remote::Started::OtherWorker => Executor {
                timeout,
                ..Executor::threads(workers)
            },
        })
    }
}
