//! Resource budgets on worker threads (`Runner::resources`, `Runner::devices`,
//! `TaskBuilder::requires`, `WorkerContext::devices`).
//!
//! Every worker writes what it does to an event log (its start with its device ids, each
//! block's start and stop, its exit), and the checks replay the log: live workers are those
//! started and not yet stopped, so the log's counts are a lower bound of the grants the runner
//! holds (a worker starts after its grant is taken and stops before it is given back). Waits
//! for a condition (a barrier, a gate) are on the log's condition variable with a timeout; a
//! wait that times out is logged and fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use blockwise::{
    Block, BlockError, Error, Progress, ResourceError, Roi, Runner, Task, TaskBuilder,
    WorkerContext,
};

/// How long any wait of these tests may take before it counts as a failure.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
enum What {
    /// The per-worker set-up ran (the worker holds its grant).
    WorkerStart,
    /// The worker's state was dropped (its thread is ending).
    WorkerStop,
    /// The per-worker set-up failed.
    InitFailed,
    BlockStart(u64),
    BlockStop(u64),
    /// A wait of a test hook timed out.
    Timeout(&'static str),
}

#[derive(Debug, Clone)]
struct Event {
    task: String,
    worker: u64,
    what: What,
    devices: Vec<String>,
}

/// The event log shared by the workers of a run.
#[derive(Clone, Default)]
struct Log(Arc<(Mutex<Vec<Event>>, Condvar)>);

impl Log {
    fn push(&self, task: &str, worker: u64, what: What, devices: &[String]) {
        let (events, changed) = &*self.0;
        events.lock().unwrap().push(Event {
            task: task.to_owned(),
            worker,
            what,
            devices: devices.to_vec(),
        });
        changed.notify_all();
    }

    fn events(&self) -> Vec<Event> {
        self.0.0.lock().unwrap().clone()
    }

    /// Waits until `until` holds for the log (at most [`WAIT`]); logs a timeout under `label`
    /// (as `task`/`worker`) if it never does.
    fn wait(&self, label: &'static str, task: &str, worker: u64, until: impl Fn(&[Event]) -> bool) {
        let (events, changed) = &*self.0;
        let deadline = Instant::now() + WAIT;
        let mut guard = events.lock().unwrap();
        while !until(&guard) {
            let now = Instant::now();
            if now >= deadline {
                drop(guard);
                self.push(task, worker, What::Timeout(label), &[]);
                return;
            }
            guard = changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }
}

/// Logs the worker's stop when its state is dropped.
struct Alive {
    log: Log,
    task: String,
    worker: u64,
    devices: Vec<String>,
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.log
            .push(&self.task, self.worker, What::WorkerStop, &self.devices);
    }
}

/// What a block of a logged task does between its start and stop events.
type Hook = Arc<dyn Fn(&Log, &WorkerContext, &Block) + Send + Sync>;

/// A 1D task `id` of `n` independent blocks of size 1 whose workers log to `log`; `init`
/// may fail a worker's set-up, `hook` runs in every block.
fn logged(
    id: &str,
    n: i64,
    log: &Log,
    init: impl Fn(&WorkerContext) -> Result<(), BlockError> + Send + Sync + 'static,
    hook: Hook,
) -> TaskBuilder {
    let log = log.clone();
    Task::builder(
        id,
        Roi::new([0], [n]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .read_write_conflict(false)
    .max_retries(0)
    .process_per_worker(move |ctx: &WorkerContext| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init(ctx))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log.push(&ctx.task_id, ctx.worker_id, What::InitFailed, ctx.devices());
                return Err(e);
            }
            Err(panic) => {
                log.push(&ctx.task_id, ctx.worker_id, What::InitFailed, ctx.devices());
                std::panic::resume_unwind(panic);
            }
        }
        log.push(
            &ctx.task_id,
            ctx.worker_id,
            What::WorkerStart,
            ctx.devices(),
        );
        let alive = Alive {
            log: log.clone(),
            task: ctx.task_id.clone(),
            worker: ctx.worker_id,
            devices: ctx.devices().to_vec(),
        };
        let (log, hook, ctx) = (log.clone(), Arc::clone(&hook), ctx.clone());
        Ok(move |block: &Block| {
            let me = &alive;
            log.push(
                &me.task,
                me.worker,
                What::BlockStart(block.grid_index()),
                &me.devices,
            );
            hook(&log, &ctx, block);
            log.push(
                &me.task,
                me.worker,
                What::BlockStop(block.grid_index()),
                &me.devices,
            );
            Ok(())
        })
    })
}

fn no_init(_: &WorkerContext) -> Result<(), BlockError> {
    Ok(())
}

fn no_hook() -> Hook {
    Arc::new(|_, _, _| {})
}

fn runner() -> Runner {
    Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .prefetch(1)
}

/// The live workers after each event: `(task, worker) → devices`.
fn live_after_each(events: &[Event]) -> Vec<BTreeMap<(String, u64), Vec<String>>> {
    let mut live = BTreeMap::new();
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        match e.what {
            What::WorkerStart => {
                assert!(
                    live.insert((e.task.clone(), e.worker), e.devices.clone())
                        .is_none(),
                    "worker {} started twice",
                    e.worker
                );
            }
            What::WorkerStop => {
                assert!(
                    live.remove(&(e.task.clone(), e.worker)).is_some(),
                    "worker {} stopped before it started",
                    e.worker
                );
            }
            _ => {}
        }
        out.push(live.clone());
    }
    out
}

/// The most workers live at once, of the tasks `tasks`.
fn peak(events: &[Event], tasks: &[&str]) -> usize {
    live_after_each(events)
        .iter()
        .map(|live| {
            live.keys()
                .filter(|(t, _)| tasks.contains(&t.as_str()))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Every block ran between its worker's start and stop, and no wait timed out.
fn check_log(events: &[Event]) {
    let timeouts: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.what, What::Timeout(_)))
        .collect();
    assert!(timeouts.is_empty(), "waits timed out: {timeouts:?}");
    let lives = live_after_each(events);
    for (e, live) in events.iter().zip(&lives) {
        if let What::BlockStart(_) | What::BlockStop(_) = e.what {
            assert!(
                live.contains_key(&(e.task.clone(), e.worker)),
                "a block ran outside its worker's life: {e:?}"
            );
        }
    }
    assert!(
        lives.last().is_some_and(BTreeMap::is_empty),
        "workers still live at the end"
    );
}

/// Runs on another thread with a timeout, so a hang fails the test.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WAIT * 4)
        .unwrap_or_else(|e| panic!("the run did not end in time: {e}"))
}

#[test]
fn two_tasks_sharing_two_cpus_never_have_more_than_two_live_workers() {
    let log = Log::default();
    // Block 0 waits for a second live worker, so the budget is used in full whatever the
    // timing (a worker could otherwise run all of `a` before the second one starts).
    let second_worker: Hook = Arc::new(|log: &Log, ctx: &WorkerContext, block: &Block| {
        if block.grid_index() == 0 {
            log.wait("a second worker", &ctx.task_id, ctx.worker_id, |events| {
                live_after_each(events)
                    .last()
                    .is_some_and(|live| live.len() >= 2)
            });
        }
    });
    let a = logged("a", 30, &log, no_init, second_worker)
        .requires([("cpu", 1)])
        .num_workers(3)
        .build()
        .unwrap();
    let b = logged("b", 30, &log, no_init, no_hook())
        .requires([("cpu", 1)])
        .num_workers(3)
        .build()
        .unwrap();
    let summary = within(move || runner().resources([("cpu", 2)]).run([a, b]).unwrap());
    assert!(summary.is_success(), "{summary}");
    let events = log.events();
    check_log(&events);
    assert_eq!(peak(&events, &["a", "b"]), 2, "{events:#?}");
    // Both tasks had workers, and each block ran once.
    for t in ["a", "b"] {
        let blocks: Vec<u64> = events
            .iter()
            .filter(|e| e.task == t)
            .filter_map(|e| match e.what {
                What::BlockStop(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(blocks.len(), 30, "task {t}");
        assert_eq!(blocks.iter().collect::<BTreeSet<_>>().len(), 30);
    }
}

#[test]
fn tasks_with_disjoint_resources_run_at_full_width_together() {
    let log = Log::default();
    // Every worker's first block waits until four workers (both tasks, at full width) are in a
    // block at the same time; a runner that kept them apart would time out here.
    let barrier: Hook = Arc::new(|log: &Log, ctx: &WorkerContext, _: &Block| {
        log.wait("four at once", &ctx.task_id, ctx.worker_id, |events| {
            let mut inside: BTreeMap<(&str, u64), i64> = BTreeMap::new();
            let mut most = 0;
            for e in events {
                let d = match e.what {
                    What::BlockStart(_) => 1,
                    What::BlockStop(_) => -1,
                    _ => continue,
                };
                *inside.entry((&e.task, e.worker)).or_default() += d;
                most = most.max(inside.values().filter(|&&n| n > 0).count());
            }
            most >= 4
        });
    });
    let cpu = logged("cpu", 8, &log, no_init, Arc::clone(&barrier))
        .requires([("cpu", 2)])
        .num_workers(2)
        .build()
        .unwrap();
    let gpu = logged("gpu", 8, &log, no_init, barrier)
        .requires([("gpu", 1)])
        .num_workers(2)
        .build()
        .unwrap();
    let summary = within(move || {
        runner()
            .resources([("cpu", 4), ("gpu", 2)])
            .run([cpu, gpu])
            .unwrap()
    });
    assert!(summary.is_success(), "{summary}");
    let events = log.events();
    check_log(&events);
    assert_eq!(peak(&events, &["cpu"]), 2);
    assert_eq!(peak(&events, &["gpu"]), 2);
    // The GPU workers have one device each, the CPU workers none.
    for e in events.iter().filter(|e| e.what == What::WorkerStart) {
        match e.task.as_str() {
            "gpu" => assert!(e.devices == ["0"] || e.devices == ["1"], "{e:?}"),
            _ => assert!(e.devices.is_empty(), "{e:?}"),
        }
    }
}

#[test]
fn a_requirement_the_budget_cannot_meet_is_an_error_before_any_block_runs() {
    let calls = Arc::new(AtomicU64::new(0));
    let counting = |id: &str, upstream: Option<&Task>| {
        let c = Arc::clone(&calls);
        let mut b = Task::builder(
            id,
            Roi::new([0], [10]),
            Roi::new([0], [1]),
            Roi::new([0], [1]),
        )
        .process(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        if let Some(u) = upstream {
            b = b.upstream(u);
        }
        b
    };
    // The upstream task fits; the downstream one needs 3 GPUs of 2.
    let fits = counting("fits", None)
        .requires([("gpu", 1)])
        .build()
        .unwrap();
    let greedy = counting("greedy", Some(&fits))
        .requires([("gpu", 3), ("cpu", 1)])
        .build()
        .unwrap();
    let budget = || runner().resources([("gpu", 2), ("cpu", 8)]);
    let err = budget().run([greedy.clone()]).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Resources(ResourceError::Exceeds { task, resource, need: 3, have: 2 })
                if task == "greedy" && resource == "gpu"
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("\"greedy\"") && text.contains("\"gpu\"") && text.contains("only 2"),
        "{text}"
    );
    // The worker processes' runner checks the same, before it starts any worker.
    let err = budget().processes().run([greedy]).unwrap_err();
    assert!(
        matches!(err, Error::Resources(ResourceError::Exceeds { .. })),
        "{err:?}"
    );
    // A resource the budget does not have is most likely a typo: an error naming the budget's.
    let typo = counting("typo", None)
        .requires([("gpus", 1)])
        .build()
        .unwrap();
    let err = budget().run([typo.clone()]).unwrap_err();
    assert!(
        matches!(&err, Error::Resources(ResourceError::UnknownResource { resource, .. }) if resource == "gpus"),
        "{err:?}"
    );
    assert!(err.to_string().contains("it has: cpu, gpu"), "{err}");
    // An invalid budget is refused too.
    let err = runner()
        .resources([("gpu", 2)])
        .devices("gpu", ["0", "1", "2"])
        .run([fits.clone()])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Resources(ResourceError::DeviceCount {
                total: 2,
                ids: 3,
                ..
            })
        ),
        "{err:?}"
    );
    let err = runner()
        .devices("gpu", ["0", "0"])
        .run([fits.clone()])
        .unwrap_err();
    assert!(
        matches!(err, Error::Resources(ResourceError::DuplicateDevice { .. })),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a block ran");
    // Without a budget requirements are ignored.
    let summary = runner().run([typo]).unwrap();
    assert!(summary.is_success());
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    // Requirements are checked when the task is built.
    let err = counting("twice", None)
        .requires([("cpu", 1), ("cpu", 2)])
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidTask { reason, .. } if reason.contains("\"cpu\" is required twice")),
        "{err}"
    );
}

#[test]
fn a_chained_tasks_workers_grow_as_its_upstream_drains() {
    const N: i64 = 6;
    let log = Log::default();
    let started = Arc::new(AtomicU64::new(0));
    // The last upstream block to start holds on until a downstream block has started: the
    // downstream task got a worker while the upstream one was still running.
    let s = Arc::clone(&started);
    let up_hook: Hook = Arc::new(move |log: &Log, ctx: &WorkerContext, _: &Block| {
        if s.fetch_add(1, Ordering::SeqCst) + 1 == N as u64 {
            log.wait(
                "a downstream block",
                &ctx.task_id,
                ctx.worker_id,
                |events| {
                    events
                        .iter()
                        .any(|e| e.task == "down" && matches!(e.what, What::BlockStart(_)))
                },
            );
        }
    });
    // Downstream blocks but the first wait until the upstream task is drained, then until two
    // downstream workers are in a block at once: its workers grew to full width after it.
    let down_hook: Hook = Arc::new(|log: &Log, ctx: &WorkerContext, block: &Block| {
        if block.grid_index() == 0 {
            return;
        }
        log.wait("upstream drained", &ctx.task_id, ctx.worker_id, |events| {
            events
                .iter()
                .filter(|e| e.task == "up" && matches!(e.what, What::BlockStop(_)))
                .count()
                == N as usize
        });
        log.wait(
            "two downstream workers",
            &ctx.task_id,
            ctx.worker_id,
            |events| {
                let mut inside: BTreeMap<u64, i64> = BTreeMap::new();
                let mut most = 0;
                for e in events.iter().filter(|e| e.task == "down") {
                    let d = match e.what {
                        What::BlockStart(_) => 1,
                        What::BlockStop(_) => -1,
                        _ => continue,
                    };
                    *inside.entry(e.worker).or_default() += d;
                    most = most.max(inside.values().filter(|&&n| n > 0).count());
                }
                most >= 2
            },
        );
    });
    let up = logged("up", N, &log, no_init, up_hook)
        .requires([("cpu", 1)])
        .num_workers(2)
        .build()
        .unwrap();
    let down = logged("down", N, &log, no_init, down_hook)
        .requires([("cpu", 1)])
        .num_workers(2)
        .upstream(&up)
        .build()
        .unwrap();
    let summary = within(move || runner().resources([("cpu", 2)]).run([down]).unwrap());
    assert!(summary.is_success(), "{summary}");
    let events = log.events();
    check_log(&events);
    assert_eq!(peak(&events, &["up", "down"]), 2, "{events:#?}");
    assert_eq!(peak(&events, &["down"]), 2);
    let pos = |f: &dyn Fn(&Event) -> bool| events.iter().position(f);
    let first_down = pos(&|e| e.task == "down" && e.what == What::WorkerStart).unwrap();
    let last_up = events
        .iter()
        .rposition(|e| e.task == "up" && e.what == What::WorkerStop)
        .unwrap();
    assert!(
        first_down < last_up,
        "the downstream task started only after the upstream one ended"
    );
    // While an upstream worker lived, at most one downstream worker did.
    for live in live_after_each(&events) {
        let ups = live.keys().filter(|(t, _)| t == "up").count();
        let downs = live.keys().filter(|(t, _)| t == "down").count();
        assert!(ups + downs <= 2);
    }
}

#[test]
fn four_gpu_workers_on_two_gpus_never_share_a_device() {
    let log = Log::default();
    let predict = logged("predict", 40, &log, no_init, no_hook())
        .requires([("gpu", 1)])
        .num_workers(4)
        .build()
        .unwrap();
    // A second GPU task downstream: workers retire and devices are handed out again.
    let refine = logged("refine", 40, &log, no_init, no_hook())
        .requires([("gpu", 1), ("cpu", 1)])
        .num_workers(4)
        .upstream(&predict)
        .build()
        .unwrap();
    let summary = within(move || {
        runner()
            .resources([("gpu", 2), ("cpu", 4)])
            .run([refine])
            .unwrap()
    });
    assert!(summary.is_success(), "{summary}");
    let events = log.events();
    check_log(&events);
    for live in live_after_each(&events) {
        assert!(live.len() <= 2);
        let mut held = BTreeSet::new();
        for devices in live.values() {
            assert_eq!(devices.len(), 1, "{devices:?}");
            for d in devices {
                assert!(d == "0" || d == "1", "{d}");
                assert!(held.insert(d.clone()), "device {d} held twice: {live:?}");
            }
        }
    }
    // Each block saw its worker's device.
    for e in &events {
        if let What::BlockStart(_) = e.what {
            assert_eq!(e.devices.len(), 1);
        }
    }
}

/// A worker whose set-up fails (panics, or returns an error) gives its device back, and its
/// replacement gets it.
fn init_failure_gives_the_device_to_the_replacement(panic: bool) {
    let log = Log::default();
    let inits = Arc::new(AtomicU64::new(0));
    let i = Arc::clone(&inits);
    let init = move |_: &WorkerContext| -> Result<(), BlockError> {
        if i.fetch_add(1, Ordering::SeqCst) == 0 {
            if panic {
                panic!("the first worker's model does not load");
            }
            return Err("no such model file".into());
        }
        Ok(())
    };
    // Blocks wait until two workers started, so the worker holding the other device lives on
    // until the replacement has started: it can only get the failed worker's device.
    let hook: Hook = Arc::new(|log: &Log, ctx: &WorkerContext, _: &Block| {
        log.wait("two workers", &ctx.task_id, ctx.worker_id, |events| {
            events
                .iter()
                .filter(|e| e.what == What::WorkerStart)
                .count()
                >= 2
        });
    });
    let task = logged("predict", 10, &log, init, hook)
        .requires([("gpu", 1)])
        .num_workers(2)
        .build()
        .unwrap();
    let summary = within(move || runner().devices("gpu", ["a", "b"]).run([task]).unwrap());
    assert!(summary.is_success(), "{summary}");
    assert_eq!(inits.load(Ordering::SeqCst), 3);
    let events = log.events();
    check_log(&events);
    assert_eq!(peak(&events, &["predict"]), 2);
    let failed = events
        .iter()
        .position(|e| e.what == What::InitFailed)
        .unwrap();
    let lost = &events[failed].devices;
    assert_eq!(lost.len(), 1);
    // Two workers started: the other first one, and the replacement (the worker started last,
    // so the one with the highest id). The replacement got the failed worker's device; the
    // other one was held all along.
    let mut starts: Vec<&Event> = events
        .iter()
        .filter(|e| e.what == What::WorkerStart)
        .collect();
    assert_eq!(starts.len(), 2, "{events:#?}");
    starts.sort_by_key(|e| e.worker);
    let (other, replacement) = (starts[0], starts[1]);
    assert!(replacement.worker > events[failed].worker);
    assert_eq!(&replacement.devices, lost, "{events:#?}");
    assert_ne!(&other.devices, lost, "{events:#?}");
}

#[test]
fn a_worker_whose_init_panics_gives_its_device_to_its_replacement() {
    init_failure_gives_the_device_to_the_replacement(true);
}

#[test]
fn a_worker_whose_init_fails_gives_its_device_to_its_replacement() {
    init_failure_gives_the_device_to_the_replacement(false);
}

#[test]
fn without_a_budget_requirements_are_ignored_and_workers_have_no_devices() {
    let log = Log::default();
    let task = logged("t", 20, &log, no_init, no_hook())
        .requires([("gpu", 8)])
        .num_workers(3)
        .build()
        .unwrap();
    assert_eq!(task.requirements(), [("gpu".to_owned(), 8)]);
    let summary = within(move || runner().run([task]).unwrap());
    assert!(summary.is_success());
    let events = log.events();
    check_log(&events);
    let starts: Vec<&Event> = events
        .iter()
        .filter(|e| e.what == What::WorkerStart)
        .collect();
    // All of the task's workers start, as before budgets.
    assert_eq!(starts.len(), 3);
    assert!(starts.iter().all(|e| e.devices.is_empty()));
}
