//! Reading a run directory: what finished, what failed and why, when the run last made
//! progress (`blockwise status`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::layout::Layout;
use super::{
    JournalError, RunMeta, TaskDir, files, io, markers, read_layout, task_dir_state_read_only,
    task_id_of_dir_name, wal,
};

/// Failed blocks listed per task (the counts cover all).
const MAX_LISTED: usize = 100;

/// How the last run of a directory ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunState {
    /// A run holds the directory now.
    Running,
    /// Every block finished.
    Finished,
    /// The run ended with failed or orphaned blocks.
    FinishedWithFailures,
    /// The run stopped with an error (the message).
    Stopped(String),
    /// The run ended without recording its end: the scheduler was killed or crashed (or the
    /// disk was too full to record it).
    Crashed,
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunState::Running => f.write_str("running"),
            RunState::Finished => f.write_str("finished"),
            RunState::FinishedWithFailures => f.write_str("finished with failures"),
            RunState::Stopped(e) => write!(f, "stopped: {e}"),
            RunState::Crashed => f.write_str(
                "ended without recording its end (killed, crashed, or out of disk space)",
            ),
        }
    }
}

/// A block whose last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedBlock {
    /// daisy's block id.
    pub block_id: u64,
    /// The block's dense grid index.
    pub grid_index: u64,
    /// The block's write ROI (funlib text), if recorded.
    pub write_roi: String,
    /// The error of its last attempt.
    pub error: String,
}

/// One task of a run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskStatus {
    /// The task's id.
    pub task_id: String,
    /// Blocks of the task.
    pub total: u64,
    /// Blocks recorded as done (after a crash, those of the write-ahead log's last batch
    /// included: the next run applies it first).
    pub done: u64,
    /// Blocks whose last attempt failed.
    pub failed: u64,
    /// Blocks never run, orphaned or interrupted: `total - done - failed`.
    pub never_run: u64,
    /// The failed blocks with their last error (at most 100; `failed` counts all).
    pub failed_blocks: Vec<FailedBlock>,
    /// Why the task's last run abandoned it (see
    /// [`TaskBuilder::max_consecutive_failures`](crate::TaskBuilder::max_consecutive_failures)),
    /// if it did; its blocks that were not run count in `never_run`. Recorded when the run
    /// ends, so not shown while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<String>,
    /// How many blocks the task's [mask](crate::TaskBuilder::mask) left out in its last run:
    /// they are never marked done, so they count in `never_run` (or in `failed`, for a block
    /// that failed in an earlier run and is masked out now). `None` without a mask. Recorded
    /// when the run ends, so not shown while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masked: Option<u64>,
}

/// What a run directory says (see [`status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunStatus {
    /// The run directory.
    pub run_dir: PathBuf,
    /// How the last run ended.
    pub state: RunState,
    /// When the last run started (seconds since the Unix epoch).
    pub started: u64,
    /// When it ended, if it recorded its end.
    pub ended: Option<u64>,
    /// When done-markers were last written (seconds since the Unix epoch).
    pub last_progress: Option<u64>,
    /// Every task with done-markers, those of the last run first.
    pub tasks: Vec<TaskStatus>,
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn time_text(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Reads a run directory, without writing anything (see also [`RunDir`](super::RunDir)).
/// After a crash, the blocks of the write-ahead log's last batch, which the next run applies
/// before it looks at any block, count as recorded; while a run holds the directory, the
/// counts are those it has written so far.
///
/// ```
/// use blockwise::{Progress, Roi, Runner, Task};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("blockwise-doc-status-{}", std::process::id()));
/// let task = Task::builder("t", Roi::new([0], [100]), Roi::new([0], [10]), Roi::new([0], [10]))
///     .process(|b| if b.block_id() == 3 { Err("bad block".into()) } else { Ok(()) })
///     .max_retries(0)
///     .build()?;
/// let summary = Runner::new().progress(Progress::Never).run_dir(&dir).run([task])?;
/// assert!(!summary.is_success());
/// let status = blockwise::journal::status(&dir)?;
/// let t = &status.tasks[0];
/// assert_eq!((t.total, t.done, t.failed, t.never_run), (10, 9, 1, 0));
/// assert_eq!(t.failed_blocks[0].error, "bad block");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`JournalError::NotARunDir`] without a `run.json`; [`JournalError::Corrupt`] for damaged
/// files; I/O errors.
pub fn status(run_dir: &Path) -> Result<RunStatus, JournalError> {
    read_status(run_dir, MAX_LISTED)
}

/// [`status`], listing at most `keep` failed blocks per task (none: the failure logs are not
/// read).
pub(super) fn read_status(run_dir: &Path, keep: usize) -> Result<RunStatus, JournalError> {
    let meta_path = run_dir.join("run.json");
    if !run_dir.is_dir() || !files::exists(&meta_path)? {
        return Err(JournalError::NotARunDir {
            dir: run_dir.to_owned(),
        });
    }
    let text = files::read_small(&meta_path, files::MAX_JSON)?;
    let meta: RunMeta = serde_json::from_slice(&text).map_err(|e| JournalError::Corrupt {
        path: meta_path.clone(),
        reason: format!("not a run record ({e})"),
    })?;
    let locked = is_locked(run_dir)?;
    let state = match meta.outcome.as_str() {
        "running" if locked => RunState::Running,
        "running" => RunState::Crashed,
        "finished" => RunState::Finished,
        "finished with failures" => RunState::FinishedWithFailures,
        other => RunState::Stopped(other.strip_prefix("stopped: ").unwrap_or(other).to_owned()),
    };
    // The pages a logged batch touches: the next run replays it, and their checksums may
    // not match until then (see markers.rs).
    // Its markers count as recorded: the next run applies them before it looks at any block.
    // (While a run holds the directory, the log is its batch in flight; it is not read.)
    let wal_path = run_dir.join("journal.wal");
    let logged = if locked {
        Vec::new()
    } else {
        wal::read_only(&wal_path)?.unwrap_or_default()
    };
    let pending = Pending::of(&logged);
    let mut dirs: Vec<(String, PathBuf, Layout)> = Vec::new();
    let tasks_dir = run_dir.join("tasks");
    if tasks_dir.is_dir() {
        for entry in fs::read_dir(&tasks_dir).map_err(|e| io("list", &tasks_dir, e))? {
            let entry = entry.map_err(|e| io("list", &tasks_dir, e))?;
            // Task directories only (not `.creating`, nor anything else put there).
            let name = entry.file_name();
            if name.to_str().and_then(task_id_of_dir_name).is_none() {
                continue;
            }
            let tdir = entry.path();
            if let TaskDir::Absent = task_dir_state_read_only(&tdir)? {
                continue;
            }
            let layout = read_layout(&tdir.join("layout.json"))?;
            dirs.push((layout.task_id.clone(), tdir, layout));
        }
    }
    let rank = |id: &str| {
        meta.tasks
            .iter()
            .position(|t| t == id)
            .unwrap_or(usize::MAX)
    };
    dirs.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.0.cmp(&b.0)));
    let mut last_progress: Option<SystemTime> = None;
    let mut tasks = Vec::with_capacity(dirs.len());
    for (task_id, tdir, layout) in dirs {
        let array = tdir.join("done.zarr");
        // Damage in the record of its output arrays is reported like any other.
        super::arrays::read(&tdir, &layout.task_id)?;
        let name = tdir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // While a run holds the directory, its writer may be half way through a flush: the
        // checksums are not checked.
        let (counts, failed_indices) = if locked {
            markers::count(&array, &layout.grid_shape, layout.num_blocks, keep, None)?
        } else {
            pending.counts(&tdir, name, &layout, &wal_path, keep)?
        };
        for t in [
            markers::modified(&array),
            fs::metadata(tdir.join("failures.jsonl"))
                .and_then(|m| m.modified())
                .ok(),
        ]
        .into_iter()
        .flatten()
        {
            last_progress = Some(last_progress.map_or(t, |l| l.max(t)));
        }
        let failed_blocks = failed_blocks(&tdir.join("failures.jsonl"), &failed_indices)?;
        let abandoned = abandoned(&tdir.join(super::ABANDONED))?;
        let masked = masked(&tdir.join(super::MASKED))?;
        tasks.push(TaskStatus {
            task_id,
            total: layout.num_blocks,
            done: counts.done,
            failed: counts.failed,
            never_run: layout
                .num_blocks
                .saturating_sub(counts.done + counts.failed),
            failed_blocks,
            abandoned,
            masked,
        });
    }
    Ok(RunStatus {
        run_dir: run_dir.to_owned(),
        state,
        started: meta.started,
        ended: meta.ended,
        last_progress: last_progress.map(seconds),
        tasks,
    })
}

/// The batch of a run directory's write-ahead log, per task directory: not yet applied (or
/// not all) to the marker arrays, which the next run does first.
pub(super) struct Pending {
    /// The pages of each task's markers the batch touches: their checksums may not match
    /// until the batch is applied (see markers.rs).
    pages: HashMap<String, HashSet<u64>>,
    /// Each task's records, in order.
    records: HashMap<String, Vec<(u64, u8)>>,
}

impl Pending {
    pub(super) fn of(sections: &[wal::Section]) -> Pending {
        let mut pending = Pending {
            pages: HashMap::new(),
            records: HashMap::new(),
        };
        for section in sections {
            pending
                .pages
                .entry(section.task_dir.clone())
                .or_default()
                .extend(section.records.iter().map(|&(i, _)| markers::page_of(i)));
            pending
                .records
                .entry(section.task_dir.clone())
                .or_default()
                .extend_from_slice(&section.records);
        }
        pending
    }

    /// The counts of one task's markers (task directory `tdir`, named `name`) as the next
    /// run will see them, the logged batch applied, and the grid indices of its failed blocks
    /// (at most `keep`), read without writing anything; the checksums of the pages outside the
    /// batch are checked.
    pub(super) fn counts(
        &self,
        tdir: &Path,
        name: &str,
        layout: &Layout,
        wal_path: &Path,
        keep: usize,
    ) -> Result<(markers::Counts, Vec<u64>), JournalError> {
        let no_pages = HashSet::new();
        let array = tdir.join("done.zarr");
        let (mut counts, mut failed) = markers::count(
            &array,
            &layout.grid_shape,
            layout.num_blocks,
            keep,
            Some(self.pages.get(name).unwrap_or(&no_pages)),
        )?;
        let Some(records) = self.records.get(name).filter(|r| !r.is_empty()) else {
            return Ok((counts, failed));
        };
        // The last record of each block wins, as in the replay.
        let mut last: BTreeMap<u64, u8> = BTreeMap::new();
        for &(index, value) in records {
            if index >= layout.num_blocks || value > markers::FAILED {
                return Err(JournalError::Corrupt {
                    path: wal_path.to_owned(),
                    reason: format!(
                        "a record for block {index} (value {value}) of {name}, which has {} blocks",
                        layout.num_blocks
                    ),
                });
            }
            last.insert(index, value);
        }
        // The batch's blocks as the arrays hold them now (before, after or part way through
        // the batch: each marker is either).
        let now = markers::values_at(
            &array,
            &layout.grid_shape,
            layout.num_blocks,
            last.keys().copied(),
        )?;
        for ((_, &value), old) in last.iter().zip(now) {
            match old {
                markers::DONE => counts.done = counts.done.saturating_sub(1),
                markers::FAILED => counts.failed = counts.failed.saturating_sub(1),
                _ => {}
            }
            match value {
                markers::DONE => counts.done += 1,
                markers::FAILED => counts.failed += 1,
                _ => {}
            }
        }
        failed.retain(|i| last.get(i).is_none_or(|&v| v == markers::FAILED));
        for (&index, &value) in &last {
            if value == markers::FAILED && failed.len() < keep && !failed.contains(&index) {
                failed.push(index);
            }
        }
        failed.sort_unstable();
        Ok((counts, failed))
    }
}

/// Whether a run holds the directory's lock.
pub(super) fn is_locked(dir: &Path) -> Result<bool, JournalError> {
    let path = dir.join("lock");
    if !files::exists(&path)? {
        return Ok(false);
    }
    let f = files::open_read(&path)?;
    Ok(match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(_) => true,
    })
}

/// The reason recorded in a task's `abandoned.json`, if it has one (run directories of
/// versions without failure budgets have none).
fn abandoned(path: &Path) -> Result<Option<String>, JournalError> {
    if !files::exists(path)? {
        return Ok(None);
    }
    let text = files::read_small(path, files::MAX_JSON)?;
    let reason = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
        // The file says the task was abandoned even if its text was damaged.
        .unwrap_or_else(|| "abandoned (the reason could not be read)".to_owned());
    Ok(Some(reason))
}

/// The count recorded in a task's `masked.json`, if it has one; a damaged record counts as
/// none (it is informative only).
fn masked(path: &Path) -> Result<Option<u64>, JournalError> {
    if !files::exists(path)? {
        return Ok(None);
    }
    let text = files::read_small(path, files::MAX_JSON)?;
    Ok(serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("masked")?.as_u64()))
}

/// The last recorded error of each of `indices`, from the failure log.
fn failed_blocks(log: &Path, indices: &[u64]) -> Result<Vec<FailedBlock>, JournalError> {
    let mut wanted: HashMap<u64, Option<FailedBlock>> =
        indices.iter().map(|&i| (i, None)).collect();
    if !wanted.is_empty() && files::exists(log)? {
        let f = files::open_read(log)?;
        for line in BufReader::new(f).lines() {
            let line = line.map_err(|e| io("read", log, e))?;
            // A line cut short by a crash is skipped; the next run appends after it.
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let Some(index) = v.get("grid_index").and_then(serde_json::Value::as_u64) else {
                continue;
            };
            if let Some(slot) = wanted.get_mut(&index) {
                *slot = Some(FailedBlock {
                    block_id: v
                        .get("block_id")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0),
                    grid_index: index,
                    write_roi: v
                        .get("write_roi")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    error: v
                        .get("error")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                });
            }
        }
    }
    Ok(indices
        .iter()
        .map(|&i| {
            wanted.remove(&i).flatten().unwrap_or(FailedBlock {
                block_id: 0,
                grid_index: i,
                write_roi: String::new(),
                error: "(no error recorded)".into(),
            })
        })
        .collect())
}

impl fmt::Display for RunStatus {
    /// A table of the tasks, then the failed blocks with their last error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = seconds(SystemTime::now());
        writeln!(f, "run directory: {}", self.run_dir.display())?;
        writeln!(
            f,
            "last run: {} (started {})",
            self.state,
            time_text(self.started)
        )?;
        match self.last_progress {
            Some(t) => writeln!(
                f,
                "last progress: {} ({} ago)",
                time_text(t),
                humantime::format_duration(Duration::from_secs(now.saturating_sub(t)))
            )?,
            None => writeln!(f, "last progress: never")?,
        }
        let width = self
            .tasks
            .iter()
            .map(|t| t.task_id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "\n{:<width$}  {:>12}  {:>12}  {:>12}  {:>12}",
            "task", "total", "done", "failed", "never run"
        )?;
        for t in &self.tasks {
            writeln!(
                f,
                "{:<width$}  {:>12}  {:>12}  {:>12}  {:>12}",
                t.task_id, t.total, t.done, t.failed, t.never_run
            )?;
        }
        for t in &self.tasks {
            if let Some(n) = t.masked.filter(|&n| n > 0) {
                writeln!(
                    f,
                    "\ntask {}: {n} blocks were masked out (empty in its mask) in the last run and are not done",
                    t.task_id
                )?;
            }
        }
        for t in &self.tasks {
            if let Some(reason) = &t.abandoned {
                writeln!(f, "\ntask {} was abandoned: {reason}", t.task_id)?;
            }
        }
        for t in self.tasks.iter().filter(|t| t.failed > 0) {
            writeln!(f, "\nfailed blocks of {}:", t.task_id)?;
            for b in &t.failed_blocks {
                writeln!(
                    f,
                    "  block {} (grid index {}, write ROI {}): {}",
                    b.block_id, b.grid_index, b.write_roi, b.error
                )?;
            }
            let listed = t.failed_blocks.len() as u64;
            if t.failed > listed {
                writeln!(f, "  (and {} more)", t.failed - listed)?;
            }
        }
        Ok(())
    }
}
