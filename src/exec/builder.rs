//! [`ExecutorBuilder`]: an executor on worker processes.

use super::*;

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
/// `<log dir>/executor-<name>/worker_<id>.out/.err`.
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
///     assert_eq!(ex.map(inc, [1, 2, 3]).map_err(|e| blockwise::Error::Executor {
///         message: e.to_string(),
///     })?, vec![2, 3, 4]);
///     Ok(())
/// }
/// ```
#[must_use]
pub struct ExecutorBuilder {
    name: String,
    workers: usize,
    prefetch: usize,
    max_worker_restarts: u32,
    process: ProcessOptions,
    functions: HashMap<String, work::ErasedFn>,
    duplicate: Option<String>,
    cancel: Option<crate::Cancel>,
    timeout: Option<Duration>,
}

impl fmt::Debug for ExecutorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.functions.keys().collect();
        names.sort();
        f.debug_struct("ExecutorBuilder")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .field("launcher", &self.process.launcher)
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
            process: ProcessOptions::new(launcher),
            functions: HashMap::new(),
            duplicate: None,
            cancel: None,
            timeout: None,
        }
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

    /// Where worker logs go (default `./blockwise_logs`); `<dir>/jobs.txt` lists every job.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.process.log_dir = dir.into();
        self
    }

    /// The command a worker runs (default: this program with its arguments); it must reach
    /// this executor's [`start`](Self::start) with the same name and functions.
    pub fn worker_command(
        mut self,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        self.process.command = Some((program.into(), args.into_iter().map(Into::into).collect()));
        self
    }

    /// The address to listen on; see [`Runner::bind`](crate::Runner::bind).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.process.bind = Some(addr);
        self
    }

    /// The host workers connect to; see [`Runner::advertise_host`](crate::Runner::advertise_host).
    pub fn advertise_host(mut self, host: impl Into<String>) -> Self {
        self.process.advertise = Some(host.into());
        self
    }

    /// Whether traffic with the workers is encrypted (TLS 1.3, a per-run certificate pinned by
    /// the workers); see [`Runner::tls`](crate::Runner::tls) for the default.
    pub fn tls(mut self, on: bool) -> Self {
        self.process.tls = Some(on);
        self
    }

    /// How long a new connection has for its TLS handshake and hello (default 10 s); see
    /// [`Runner::hello_timeout`](crate::Runner::hello_timeout).
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.process.hello_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many connections may wait for their hello at once (default 64); see
    /// [`Runner::max_unauthenticated`](crate::Runner::max_unauthenticated).
    pub fn max_unauthenticated(mut self, connections: usize) -> Self {
        self.process.max_unauthenticated = connections.max(1);
        self
    }

    /// Heartbeat interval and the silence after which a worker is presumed dead (defaults 1 s
    /// and 30 s); see [`Runner::heartbeat`](crate::Runner::heartbeat).
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.process.heartbeat = interval.max(Duration::from_millis(1));
        self.process.heartbeat_timeout = timeout.max(self.process.heartbeat);
        self
    }

    /// A worker that cannot reach the executor for this long exits (default 60 s).
    pub fn death_timeout(mut self, timeout: Duration) -> Self {
        self.process.death_timeout = timeout;
        self
    }

    /// Workers retire after this long (finishing their item, giving back the rest) and are
    /// replaced; set it below a cluster's walltime.
    pub fn worker_lifetime(mut self, lifetime: Duration) -> Self {
        self.process.lifetime = Some(lifetime);
        self
    }

    /// A worker that has had no item to run for this long (default 60 s) leaves and its job
    /// ends; workers start again when items are submitted.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.process.idle_timeout = timeout;
        self
    }

    /// Whether Ctrl-C and SIGTERM stop the executor (fail waiting items, cancel every job)
    /// while it lives (default true; the next signal then takes its default action).
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.process.handle_signals = handle;
        self
    }

    /// Stops the executor when `cancel` is cancelled, as Ctrl-C does (see
    /// [`handle_signals`](Self::handle_signals)): waiting and running items fail with the
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
    /// [`worker_command`](Self::worker_command)) or must clean up before exiting.
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
    /// [`Error::Executor`](crate::Error::Executor) when two functions share a name; a malformed
    /// worker context; connection and protocol errors while serving.
    pub fn serve(self) -> Result<Option<u64>, crate::Error> {
        if let Some(name) = self.duplicate {
            return Err(crate::Error::Executor {
                message: format!("two functions are registered under the name {name:?}"),
            });
        }
        remote::serve_if_worker(&self.name, &self.functions)
    }

    /// Starts the workers and returns the executor. In a worker process of this executor it
    /// serves items instead and never returns (see [how workers find the
    /// functions](ExecutorBuilder#how-workers-find-the-functions)).
    ///
    /// # Errors
    ///
    /// [`Error::Executor`](crate::Error::Executor) when two functions share a name; I/O and
    /// launcher errors starting the server.
    pub fn start(self) -> Result<Executor, crate::Error> {
        if let Some(name) = self.duplicate {
            return Err(crate::Error::Executor {
                message: format!("two functions are registered under the name {name:?}"),
            });
        }
        let workers = self.workers;
        let started = remote::RemotePool::start(remote::PoolOptions {
            name: self.name,
            workers,
            prefetch: self.prefetch,
            max_worker_restarts: self.max_worker_restarts,
            process: self.process,
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
