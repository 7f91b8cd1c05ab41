//! Differential tests against daisy 1.x itself.
//!
//! `tests/fixtures/daisy_scenarios.jsonl` holds scenarios daisy 1.x ran to a normal end, with
//! everything it did (see `tests/fixtures/README.md`; the generator is
//! `tests/fixtures/gen_daisy_scenarios.py`). For each one, blockwise runs the same serial loop as
//! daisy's oracle and must hand out exactly the same blocks, in the same order, with the same
//! final counters.
//!
//! `tests/fixtures/daisy_divergent.jsonl` holds scenarios where daisy 1.x is wrong (it crashes,
//! leaves blocks unscheduled, counts a negative total or runs a block twice). There blockwise must
//! behave correctly instead: every task finishes, nothing succeeds twice, and without permanent
//! failures every block completes.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use blockwise::{Block, BlockStatus, Fit, Roi, Scheduler, Task};
use serde_json::Value;

const EXACT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/daisy_scenarios.jsonl"
);
const DIVERGENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/daisy_divergent.jsonl"
);

/// How many exact scenarios the fixture must hold at least.
const MIN_EXACT: usize = 250;
/// How many failing scenarios are described in full in the final assertion message.
const MAX_DETAILS: usize = 25;

type BoxError = Box<dyn Error>;

// ---------------------------------------------------------------------------------------------
// The scenario format (shared/tools/daisy_oracle.py)

/// An `[offset, shape]` pair as written in the fixtures.
type RoiJson = (Vec<i64>, Vec<i64>);

struct TaskSpec {
    id: String,
    total: RoiJson,
    read: RoiJson,
    write: RoiJson,
    fit: Fit,
    conflict: bool,
    max_retries: u32,
    upstream: Vec<String>,
    /// block id -> how many attempts fail
    fail: HashMap<u64, u32>,
    skip: HashSet<u64>,
}

struct Scenario {
    name: String,
    tasks: Vec<TaskSpec>,
    priority: Vec<String>,
}

/// One block handed out: `(task, block_id, read_roi, write_roi, status)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    task: String,
    block_id: u64,
    read: RoiJson,
    write: RoiJson,
    success: bool,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} read {:?}+{:?} write {:?}+{:?} {}",
            self.task,
            self.block_id,
            self.read.0,
            self.read.1,
            self.write.0,
            self.write.1,
            if self.success { "success" } else { "failed" }
        )
    }
}

/// A task's final counters. Signed, because daisy 1.x can report a negative total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    total: i64,
    completed: i64,
    skipped: i64,
    failed: i64,
    orphaned: i64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "total {}, completed {}, skipped {}, failed {}, orphaned {}",
            self.total, self.completed, self.skipped, self.failed, self.orphaned
        )
    }
}

struct Expected {
    acquired: Vec<Step>,
    states: Vec<(String, Counters)>,
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("missing field {key:?}"))
}

fn int(v: &Value) -> Result<i64, String> {
    v.as_i64().ok_or_else(|| format!("not an integer: {v}"))
}

fn uint(v: &Value) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("not a non-negative integer: {v}"))
}

fn string(v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("not a string: {v}"))
}

fn array(v: &Value) -> Result<&Vec<Value>, String> {
    v.as_array().ok_or_else(|| format!("not an array: {v}"))
}

fn ints(v: &Value) -> Result<Vec<i64>, String> {
    array(v)?.iter().map(int).collect()
}

fn roi_json(v: &Value) -> Result<RoiJson, String> {
    match array(v)?.as_slice() {
        [offset, shape] => Ok((ints(offset)?, ints(shape)?)),
        _ => Err(format!("not an [offset, shape] pair: {v}")),
    }
}

fn parse_task(v: &Value) -> Result<TaskSpec, String> {
    let id = string(field(v, "id")?)?;
    let fit = match v.get("fit").and_then(Value::as_str).unwrap_or("valid") {
        "valid" => Fit::Valid,
        "overhang" => Fit::Overhang,
        "shrink" => Fit::Shrink,
        other => return Err(format!("task {id}: unknown fit {other:?}")),
    };
    let mut fail = HashMap::new();
    if let Some(map) = v.get("fail").and_then(Value::as_object) {
        for (k, n) in map {
            let block: u64 = k.parse().map_err(|e| format!("fail id {k:?}: {e}"))?;
            let n = u32::try_from(uint(n)?).map_err(|e| e.to_string())?;
            fail.insert(block, n);
        }
    }
    let skip = match v.get("skip") {
        Some(s) => array(s)?.iter().map(uint).collect::<Result<_, _>>()?,
        None => HashSet::new(),
    };
    let upstream = match v.get("upstream") {
        Some(u) => array(u)?.iter().map(string).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let max_retries = match v.get("max_retries") {
        Some(m) => u32::try_from(uint(m)?).map_err(|e| e.to_string())?,
        None => 2,
    };
    Ok(TaskSpec {
        total: roi_json(field(v, "total_roi")?)?,
        read: roi_json(field(v, "read_roi")?)?,
        write: roi_json(field(v, "write_roi")?)?,
        fit,
        conflict: v
            .get("read_write_conflict")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        max_retries,
        upstream,
        fail,
        skip,
        id,
    })
}

fn parse_scenario(name: &str, v: &Value) -> Result<Scenario, String> {
    let tasks = array(field(v, "tasks")?)?
        .iter()
        .map(parse_task)
        .collect::<Result<Vec<_>, _>>()?;
    let priority = match v.get("priority") {
        Some(p) => array(p)?.iter().map(string).collect::<Result<_, _>>()?,
        None => tasks.iter().map(|t| t.id.clone()).collect(),
    };
    Ok(Scenario {
        name: name.to_owned(),
        tasks,
        priority,
    })
}

fn parse_expected(v: &Value) -> Result<Expected, String> {
    let mut acquired = Vec::new();
    for entry in array(field(v, "acquired")?)? {
        let [task, block_id, read, write, status] = array(entry)?.as_slice() else {
            return Err(format!("bad acquired entry: {entry}"));
        };
        acquired.push(Step {
            task: string(task)?,
            block_id: uint(block_id)?,
            read: roi_json(read)?,
            write: roi_json(write)?,
            success: match status.as_str() {
                Some("success") => true,
                Some("failed") => false,
                _ => return Err(format!("bad status in {entry}")),
            },
        });
    }
    let mut states = Vec::new();
    let map = field(v, "states")?
        .as_object()
        .ok_or("states is not an object")?;
    for (tid, st) in map {
        let get = |k: &str| field(st, k).and_then(int);
        states.push((
            tid.clone(),
            Counters {
                total: get("total")?,
                completed: get("completed")?,
                skipped: get("skipped")?,
                failed: get("failed")?,
                orphaned: get("orphaned")?,
            },
        ));
    }
    Ok(Expected { acquired, states })
}

/// The fixture lines of one file: `(name, whole line)`.
fn load(path: &str) -> Result<Vec<(String, Value)>, BoxError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{path}:{}: {e}", i + 1))?;
        let name = string(field(&v, "name")?)?;
        out.push((name, v));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Running a scenario through blockwise

fn roi(r: &RoiJson) -> Roi {
    Roi::new(r.0.clone(), r.1.clone())
}

fn roi_back(r: &Roi) -> RoiJson {
    (
        r.offset().as_slice().to_vec(),
        r.shape().as_slice().to_vec(),
    )
}

/// Builds the tasks in scenario order (upstream tasks always come first).
fn build_tasks(sc: &Scenario) -> Result<Vec<Task>, String> {
    let mut built: Vec<Task> = Vec::new();
    for spec in &sc.tasks {
        let mut b = Task::builder(
            spec.id.as_str(),
            roi(&spec.total),
            roi(&spec.read),
            roi(&spec.write),
        )
        .fit(spec.fit)
        .read_write_conflict(spec.conflict)
        .max_retries(spec.max_retries);
        for up in &spec.upstream {
            let up = built
                .iter()
                .find(|t| t.task_id() == up)
                .ok_or_else(|| format!("task {}: upstream {up} is not an earlier task", spec.id))?;
            b = b.upstream(up);
        }
        if !spec.skip.is_empty() {
            let skip = spec.skip.clone();
            b = b.check(move |blk: &Block| skip.contains(&blk.block_id()));
        }
        built.push(
            b.build()
                .map_err(|e| format!("building task {}: {e}", spec.id))?,
        );
    }
    Ok(built)
}

struct Outcome {
    steps: Vec<Step>,
    /// The loop was stopped by the step limit (blockwise kept handing out blocks).
    hit_limit: bool,
    states: Vec<(String, Counters)>,
}

/// How the serial loop ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Like daisy's oracle (and its `SerialServer`): at the first pass over the tasks that hands
    /// out no block.
    FirstEmptyPass,
    /// Only when no task has a ready block left. (A check function can skip every ready block of
    /// a late task inside `acquire_block` and so make an earlier task ready during a pass that
    /// hands out nothing.)
    NothingReady,
}

/// The oracle's serial loop: repeatedly take the first task in priority order that hands out a
/// block, fail it while its id has failing attempts left, else succeed it, and release it.
fn run_serial(sc: &Scenario, max_steps: usize, stop: Stop) -> Result<Outcome, String> {
    let tasks = build_tasks(sc)?;
    let mut scheduler = Scheduler::new(&tasks).map_err(|e| format!("Scheduler::new: {e}"))?;
    let mut fails: HashMap<(String, u64), u32> = sc
        .tasks
        .iter()
        .flat_map(|t| t.fail.iter().map(|(&b, &n)| ((t.id.clone(), b), n)))
        .collect();
    let mut steps = Vec::new();
    let mut hit_limit = false;
    let mut passes = 0usize;
    loop {
        passes += 1;
        if steps.len() >= max_steps || passes > max_steps {
            hit_limit = true;
            break;
        }
        let Some(mut block) = sc
            .priority
            .iter()
            .find_map(|tid| scheduler.acquire_block(tid))
        else {
            let ready = |t: &String| scheduler.task_state(t).is_some_and(|st| st.ready > 0);
            if stop == Stop::NothingReady && sc.priority.iter().any(ready) {
                continue;
            }
            break;
        };
        let key = (block.task_id().to_owned(), block.block_id());
        let success = match fails.get_mut(&key) {
            Some(left) if *left > 0 => {
                *left -= 1;
                false
            }
            _ => true,
        };
        steps.push(Step {
            task: key.0,
            block_id: key.1,
            read: roi_back(block.read_roi()),
            write: roi_back(block.write_roi()),
            success,
        });
        block.set_status(if success {
            BlockStatus::Success
        } else {
            BlockStatus::Failed
        });
        scheduler.release_block(block);
    }
    let mut states = Vec::new();
    for t in &sc.tasks {
        let st = scheduler
            .task_state(&t.id)
            .ok_or_else(|| format!("no task state for {}", t.id))?;
        let signed = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        states.push((
            t.id.clone(),
            Counters {
                total: signed(st.total),
                completed: signed(st.completed),
                skipped: signed(st.skipped),
                failed: signed(st.failed),
                orphaned: signed(st.orphaned),
            },
        ));
    }
    Ok(Outcome {
        steps,
        hit_limit,
        states,
    })
}

/// Runs `f`, turning a panic into an error message so one bad scenario cannot hide the others.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            Err(format!("panicked: {msg}"))
        }
    }
}

/// A step limit generous enough for any correct run: every block at most `max_retries + 1`
/// times, and the totals come from the task geometry.
fn step_limit(sc: &Scenario) -> usize {
    let blocks: u64 = build_tasks(sc)
        .map(|ts| ts.iter().map(Task::num_blocks).sum())
        .unwrap_or(0);
    usize::try_from(blocks)
        .unwrap_or(usize::MAX / 20)
        .saturating_mul(10)
        .saturating_add(100)
}

// ---------------------------------------------------------------------------------------------
// The exact comparison

/// Compares one exact scenario; `Err` describes the first difference.
fn check_exact(sc: &Scenario, expected: &Expected) -> Result<(), String> {
    let limit = step_limit(sc).max(expected.acquired.len() + 100);
    let got = guarded(|| run_serial(sc, limit, Stop::FirstEmptyPass))?;

    let first_diff = expected
        .acquired
        .iter()
        .zip(&got.steps)
        .position(|(e, g)| e != g);
    let n = expected.acquired.len().min(got.steps.len());
    if let Some(i) = first_diff.or((expected.acquired.len() != got.steps.len()).then_some(n)) {
        let mut msg = format!(
            "acquired sequences differ at step {i} (daisy handed out {} blocks, blockwise {}{})",
            expected.acquired.len(),
            got.steps.len(),
            if got.hit_limit {
                ", stopped by the step limit"
            } else {
                ""
            }
        );
        if i > 0 {
            msg += &format!("\n      step {}: {}", i - 1, expected.acquired[i - 1]);
        }
        let show = |s: Option<&Step>| s.map_or_else(|| "(nothing)".to_owned(), Step::to_string);
        msg += &format!(
            "\n      daisy:     {}\n      blockwise: {}",
            show(expected.acquired.get(i)),
            show(got.steps.get(i))
        );
        return Err(msg);
    }

    for (tid, want) in &expected.states {
        let have = got
            .states
            .iter()
            .find(|(t, _)| t == tid)
            .map(|(_, c)| *c)
            .ok_or_else(|| format!("blockwise has no task {tid}"))?;
        if have != *want {
            return Err(format!(
                "final counters of task {tid} differ\n      daisy:     {want}\n      blockwise: {have}"
            ));
        }
    }
    Ok(())
}

#[test]
fn blockwise_matches_daisy_on_every_exact_scenario() -> Result<(), BoxError> {
    let lines = load(EXACT)?;
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut checked = 0usize;
    for (name, v) in &lines {
        let context = |e: String| format!("{EXACT}: scenario {name}: {e}");
        let sc = field(v, "scenario")
            .and_then(|s| parse_scenario(name, s))
            .map_err(context)?;
        let expected = field(v, "expected")
            .and_then(parse_expected)
            .map_err(context)?;
        checked += 1;
        if let Err(why) = check_exact(&sc, &expected) {
            failures.push((sc.name, why));
        }
    }
    assert!(
        checked >= MIN_EXACT,
        "only {checked} exact scenarios in {EXACT}, expected at least {MIN_EXACT}"
    );
    assert!(
        failures.is_empty(),
        "{}",
        failure_report("differ from daisy 1.x", checked, &failures)
    );
    Ok(())
}

fn failure_report(what: &str, checked: usize, failures: &[(String, String)]) -> String {
    let mut msg = format!(
        "{} of {checked} scenarios {what}: {}\n",
        failures.len(),
        failures
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, why) in failures.iter().take(MAX_DETAILS) {
        msg += &format!("  {name}: {why}\n");
    }
    if failures.len() > MAX_DETAILS {
        msg += &format!("  ... and {} more\n", failures.len() - MAX_DETAILS);
    }
    msg
}

// ---------------------------------------------------------------------------------------------
// Where daisy 1.x is wrong: blockwise must be correct

/// Whether some block of the scenario may fail permanently (more failing attempts than tries).
fn may_fail_permanently(sc: &Scenario) -> bool {
    sc.tasks
        .iter()
        .any(|t| t.fail.values().any(|&n| n > t.max_retries))
}

/// A task whose total write ROI is empty in some dimension has no blocks.
fn has_empty_write_region(t: &TaskSpec) -> bool {
    (0..t.total.1.len()).any(|d| {
        let ctx_lo = t.write.0[d] - t.read.0[d];
        let ctx_hi = (t.read.0[d] + t.read.1[d]) - (t.write.0[d] + t.write.1[d]);
        t.total.1[d] - ctx_lo - ctx_hi <= 0
    })
}

/// The total write ROI of a task: its total ROI shrunk by the block context.
fn total_write_roi(t: &TaskSpec) -> RoiJson {
    let dims = t.total.0.len();
    let ctx_lo: Vec<i64> = (0..dims).map(|d| t.write.0[d] - t.read.0[d]).collect();
    let ctx_hi: Vec<i64> = (0..dims)
        .map(|d| (t.read.0[d] + t.read.1[d]) - (t.write.0[d] + t.write.1[d]))
        .collect();
    (
        (0..dims).map(|d| t.total.0[d] + ctx_lo[d]).collect(),
        (0..dims)
            .map(|d| t.total.1[d] - ctx_lo[d] - ctx_hi[d])
            .collect(),
    )
}

/// The intersection of two boxes, `None` when they do not overlap (touching is no overlap).
fn intersect(a: &RoiJson, b: &RoiJson) -> Option<RoiJson> {
    let begin: Vec<i64> = a.0.iter().zip(&b.0).map(|(x, y)| *x.max(y)).collect();
    let end: Vec<i64> = (0..a.0.len())
        .map(|d| (a.0[d] + a.1[d]).min(b.0[d] + b.1[d]))
        .collect();
    let shape: Vec<i64> = end.iter().zip(&begin).map(|(e, b)| e - b).collect();
    shape.iter().all(|&s| s > 0).then_some((begin, shape))
}

/// daisy's ordering guarantee across tasks: a block runs only after every block of an
/// upstream task that writes into its read ROI (within that task's total write ROI) has
/// succeeded. Checked for the upstream blocks that were handed out; upstream tasks with a
/// check function are left out (their skipped blocks are not in the sequence).
fn upstream_order_violation(sc: &Scenario, steps: &[Step]) -> Option<String> {
    let mut first_success: HashMap<(&str, u64), usize> = HashMap::new();
    for (i, s) in steps.iter().enumerate().filter(|(_, s)| s.success) {
        first_success
            .entry((s.task.as_str(), s.block_id))
            .or_insert(i);
    }
    for (i, step) in steps.iter().enumerate() {
        let spec = sc.tasks.iter().find(|t| t.id == step.task)?;
        for up in sc.tasks.iter().filter(|t| spec.upstream.contains(&t.id)) {
            if !up.skip.is_empty() {
                continue;
            }
            let up_tw = total_write_roi(up);
            for other in steps.iter().filter(|s| s.task == up.id) {
                let writes_into_read = intersect(&other.write, &up_tw)
                    .and_then(|w| intersect(&w, &step.read))
                    .is_some();
                let done_before = first_success
                    .get(&(other.task.as_str(), other.block_id))
                    .is_some_and(|&j| j < i);
                if writes_into_read && !done_before {
                    return Some(format!(
                        "step {i}: {step} ran before upstream block {}/{}, which writes into \
                         its read ROI, had succeeded",
                        other.task, other.block_id
                    ));
                }
            }
        }
    }
    None
}

fn check_correct(sc: &Scenario) -> Result<(), String> {
    let got = guarded(|| run_serial(sc, step_limit(sc), Stop::NothingReady))?;
    if got.hit_limit {
        return Err(format!("did not finish within {} steps", got.steps.len()));
    }
    let mut problems = Vec::new();
    let mut successes: HashMap<(&str, u64), usize> = HashMap::new();
    for s in got.steps.iter().filter(|s| s.success) {
        *successes.entry((s.task.as_str(), s.block_id)).or_default() += 1;
    }
    let mut twice: Vec<_> = successes.iter().filter(|&(_, &n)| n > 1).collect();
    twice.sort();
    if let Some(((t, b), n)) = twice.first() {
        problems.push(format!(
            "block {t}/{b} succeeded {n} times ({} blocks succeeded more than once)",
            twice.len()
        ));
    }
    if let Some(v) = upstream_order_violation(sc, &got.steps) {
        problems.push(v);
    }
    let no_permanent_failure = !may_fail_permanently(sc);
    for (spec, (tid, c)) in sc.tasks.iter().zip(&got.states) {
        if c.completed + c.failed + c.orphaned != c.total {
            problems.push(format!(
                "task {tid} did not finish: {c} (completed + failed + orphaned != total)"
            ));
        }
        if no_permanent_failure && (c.completed != c.total || c.failed != 0 || c.orphaned != 0) {
            problems.push(format!(
                "task {tid}: no block can fail permanently, yet {c}"
            ));
        }
        let ran = successes
            .iter()
            .filter(|((t, _), _)| t == tid)
            .map(|(_, &n)| n)
            .sum::<usize>();
        let ran = i64::try_from(ran).unwrap_or(i64::MAX);
        if ran + c.skipped != c.completed {
            problems.push(format!(
                "task {tid}: {ran} blocks succeeded and {} were skipped, but completed is {}",
                c.skipped, c.completed
            ));
        }
        if has_empty_write_region(spec) && c.total != 0 {
            problems.push(format!(
                "task {tid}: its total write ROI is empty, yet it has {} blocks",
                c.total
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn blockwise_is_correct_where_daisy_is_not() -> Result<(), BoxError> {
    let lines = load(DIVERGENT)?;
    let mut failures: Vec<(String, String)> = Vec::new();
    for (name, v) in &lines {
        let sc = field(v, "scenario")
            .and_then(|s| parse_scenario(name, s))
            .map_err(|e| format!("{DIVERGENT}: scenario {name}: {e}"))?;
        if let Err(why) = check_correct(&sc) {
            let daisy = v.get("reason").and_then(Value::as_str).unwrap_or("?");
            failures.push((sc.name, format!("{why}\n      (daisy 1.x: {daisy})")));
        }
    }
    assert!(!lines.is_empty(), "{DIVERGENT} holds no scenarios");
    assert!(
        failures.is_empty(),
        "{}",
        failure_report("are handled incorrectly", lines.len(), &failures)
    );
    Ok(())
}
