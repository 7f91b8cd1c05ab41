//! What the executor runs: closures (on threads) or named [`Function`]s (on any backend), and
//! data scattered to every worker.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::util::{lock, panic_message};

/// A function the executor can run on items of type `T`, giving `R`: a closure
/// `Fn(T) -> Result<R, E>` (in-process threads only) or a [`Function`] (every backend).
///
/// The trait is sealed: it is implemented for those two and nothing else.
pub trait Work<T, R>: private::Sealed<T, R> + Send + Sync + 'static {}

impl<T, R, S: private::Sealed<T, R> + Send + Sync + 'static> Work<T, R> for S {}

pub(crate) mod private {
    /// The methods behind [`Work`](super::Work); not nameable outside the crate.
    pub trait Sealed<T, R> {
        /// Runs the function here (panics are the caller's to catch).
        fn run_here(&self, item: T) -> Result<R, String>;
        /// The registered name, if the function can run in a worker process.
        fn remote_name(&self) -> Option<&str>;
        /// The item as JSON, for a worker process.
        fn encode(&self, item: T) -> Result<serde_json::Value, String>;
        /// A worker's JSON result.
        fn decode(&self, value: serde_json::Value) -> Result<R, String>;
    }
}

impl<T, R, E, F> private::Sealed<T, R> for F
where
    E: fmt::Display,
    F: Fn(T) -> Result<R, E>,
{
    fn run_here(&self, item: T) -> Result<R, String> {
        self(item).map_err(|e| e.to_string())
    }

    fn remote_name(&self) -> Option<&str> {
        None
    }

    fn encode(&self, _: T) -> Result<serde_json::Value, String> {
        Err(CLOSURE_REMOTE.into())
    }

    fn decode(&self, _: serde_json::Value) -> Result<R, String> {
        Err(CLOSURE_REMOTE.into())
    }
}

pub(crate) const CLOSURE_REMOTE: &str = "a closure cannot run in a worker process: wrap it in \
     exec::Function::new(name, f) and register it with ExecutorBuilder::function";

/// Runs `work` on `item` here, turning a panic into an error.
pub(crate) fn run_guarded<T, R, W: Work<T, R> + ?Sized>(work: &W, item: T) -> Result<R, String> {
    match catch_unwind(AssertUnwindSafe(|| work.run_here(item))) {
        Ok(r) => r,
        Err(p) => Err(format!("panic: {}", panic_message(p.as_ref()))),
    }
}

type LocalFn<T, R> = dyn Fn(T) -> Result<R, String> + Send + Sync;

/// A function registered under a name, so that worker processes (which run the same program)
/// can find it: items and results travel as JSON, so `T` and `R` are serde types.
///
/// Build every `Function` before starting the executor (see
/// [`ExecutorBuilder::function`](super::ExecutorBuilder::function)); on threads it runs like the
/// closure it wraps.
///
/// ```
/// use blockwise::exec::{Executor, Function};
///
/// let inc = Function::new("inc", |x: u64| Ok::<u64, String>(x + 1));
/// let ex = Executor::threads(2); // or Executor::processes(2).function(&inc).start()?
/// assert_eq!(ex.map(inc.clone(), [1, 2, 3]).unwrap(), vec![2, 3, 4]);
/// # Ok::<(), blockwise::Error>(())
/// ```
pub struct Function<T, R> {
    name: Arc<str>,
    f: Arc<LocalFn<T, R>>,
}

impl<T, R> Clone for Function<T, R> {
    fn clone(&self) -> Self {
        Function {
            name: Arc::clone(&self.name),
            f: Arc::clone(&self.f),
        }
    }
}

impl<T, R> fmt::Debug for Function<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T, R> Function<T, R>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// `f` under `name` (unique among the functions of an executor).
    pub fn new<E, F>(name: &str, f: F) -> Function<T, R>
    where
        E: fmt::Display,
        F: Fn(T) -> Result<R, E> + Send + Sync + 'static,
    {
        Function {
            name: Arc::from(name),
            f: Arc::new(move |x| f(x).map_err(|e| e.to_string())),
        }
    }

    /// The name it is registered under.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The function on JSON values, as a worker process runs it.
    pub(crate) fn erased(&self) -> ErasedFn {
        let f = Arc::clone(&self.f);
        Arc::new(move |v: serde_json::Value| {
            let item: T = serde_json::from_value(v)
                .map_err(|e| format!("the item does not decode as the function's input: {e}"))?;
            let r = match catch_unwind(AssertUnwindSafe(|| f(item))) {
                Ok(r) => r?,
                Err(p) => return Err(format!("panic: {}", panic_message(p.as_ref()))),
            };
            serde_json::to_value(r).map_err(|e| format!("the result does not encode: {e}"))
        })
    }
}

/// A registered function on JSON values.
pub(crate) type ErasedFn =
    Arc<dyn Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync>;

impl<T, R> private::Sealed<T, R> for Function<T, R>
where
    T: Serialize,
    R: DeserializeOwned,
{
    fn run_here(&self, item: T) -> Result<R, String> {
        (self.f)(item)
    }

    fn remote_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn encode(&self, item: T) -> Result<serde_json::Value, String> {
        serde_json::to_value(item).map_err(|e| format!("the item does not encode: {e}"))
    }

    fn decode(&self, value: serde_json::Value) -> Result<R, String> {
        serde_json::from_value(value)
            .map_err(|e| format!("the worker's result does not decode: {e}"))
    }
}

/// Data scattered under a name: decoded on first use in worker processes.
enum Scattered {
    Raw(serde_json::Value),
    Ready(Arc<dyn Any + Send + Sync>),
}

fn registry() -> &'static Mutex<HashMap<String, Scattered>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Scattered>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

pub(crate) fn store_ready(name: &str, data: Arc<dyn Any + Send + Sync>) {
    lock(registry()).insert(name.to_owned(), Scattered::Ready(data));
}

pub(crate) fn store_raw(name: String, value: serde_json::Value) {
    lock(registry()).insert(name, Scattered::Raw(value));
}

/// The data scattered under `name` with [`Executor::scatter`](super::Executor::scatter), from
/// inside a function running on any backend: in a worker process it arrived once (before the
/// first item that could use it) and is decoded on first use; later calls share it.
///
/// `None` if nothing was scattered under that name or it is not a `D`. Names are global to
/// the process: scattering again under a name replaces the data for later items.
#[must_use]
pub fn scattered<D>(name: &str) -> Option<Arc<D>>
where
    D: DeserializeOwned + Send + Sync + 'static,
{
    let mut reg = lock(registry());
    let entry = reg.get_mut(name)?;
    if let Scattered::Raw(v) = entry {
        let value = std::mem::take(v);
        match serde_json::from_value::<D>(value.clone()) {
            Ok(d) => *entry = Scattered::Ready(Arc::new(d)),
            Err(e) => {
                tracing::warn!(
                    "scattered data {name:?} is not a {}: {e}",
                    std::any::type_name::<D>()
                );
                *v = value;
                return None;
            }
        }
    }
    match entry {
        Scattered::Ready(a) => Arc::clone(a).downcast::<D>().ok(),
        Scattered::Raw(_) => None,
    }
}
