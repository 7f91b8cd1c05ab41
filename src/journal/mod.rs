//! Done-markers and resumable runs.
//!
//! With a run directory ([`Runner::run_dir`](crate::Runner::run_dir)), the runner records
//! every block whose process function returned successfully, durably, so that a rerun after a
//! crash (of the scheduler, a worker or the machine) skips what finished and does the rest:
//! nothing lost and nothing done twice.
//!
//! # What is stored
//!
//! ```text
//! <run dir>/
//!   run.json                    tasks of the last run, when it started and ended, how it ended
//!   lock                        held (flock) by the run using the directory
//!   journal.wal                 the last batch of markers, written before the arrays
//!   tasks/<task id>/
//!     layout.json               the task's block layout and its SHA-256
//!     arrays.json               the arrays the task writes: name, path, array id; SHA-256
//!     done.zarr/                zarr v3 1-D uint8 array: 2 bits per block, 4 blocks per byte,
//!       zarr.json                 in grid-index (row-major) order; 0 = not done, 1 = done,
//!       c/0, c/1, ...             2 = failed on its last attempt; chunks of <= 256 MiB
//!     done.crc32                a CRC-32 per 4 KiB page of the markers
//!     done.summary              done and failed counts per marker chunk (see markers.rs)
//!     failures.jsonl            one line per failed attempt: block, worker, kind, attempt,
//!                                 error, time
//!     mask.json                 only if the task has a mask (TaskBuilder::mask): its path,
//!                                 array id, ROI, voxel size, data type, predicate and
//!                                 the SHA-256 of its stored chunks under the task
//!     masked.json               only if the task's last run had a mask: {"masked": N, "time":
//!                                 ...}, the blocks it left out (not done); written at the end
//!     abandoned.json            only if the task's last run abandoned it (failure budget):
//!                                 {"reason": ..., "time": ...}; removed when a run opens it
//!     outputs.bin               block outputs (TaskBuilder::process_with_output), appended:
//!                                 per block grid index, block id, length, CRC-32, JSON value
//!     outputs.committed         the committed length of outputs.bin (8 bytes)
//! ```
//!
//! # Block outputs
//!
//! The value a block's function returns with
//! [`TaskBuilder::process_with_output`](crate::TaskBuilder::process_with_output) is recorded in
//! the same batch as the block's done-marker, and a crash keeps both or neither: the batch's
//! outputs are appended to `outputs.bin` and synced first, the write-ahead log then commits
//! the new length of `outputs.bin` together with the markers, and the next run cuts
//! `outputs.bin` back to the committed length (dropping the records of a batch that never
//! reached the log, whose blocks run again). Done blocks are skipped on reruns, so every done
//! block has exactly one output; [`Runner::fresh`](crate::Runner::fresh) discards a task's
//! outputs with its markers. Records are read back lazily, one at a time, with
//! [`RunSummary::outputs`](crate::RunSummary::outputs) or [`read_outputs`]; each record's CRC
//! is checked when it is read (not when a run opens the directory: outputs may be large), and
//! a mismatch, or a committed length past the end of the file, is [`JournalError::Corrupt`]
//! naming the file.
//!
//! A block is marked done after its process function returned (so its outputs were written)
//! and its release reached the scheduler; before a batch of markers is written, the file
//! systems of the arrays the tasks declare with [`TaskBuilder::writes`](crate::TaskBuilder::writes)
//! are synced (`syncfs`), so marked outputs outlive a machine crash; markers are written in batches (every 100 ms, or
//! every 65,536 blocks) followed by `fdatasync`, and at the end of the run. A batch is first
//! written to a write-ahead log, then to the arrays, so it survives whole or not at all, and
//! what survives is always the markers of a prefix of the order in which blocks finished: a
//! block is never marked done while a block it depends on is not. A crash loses at most the
//! markers of the last batch: those blocks run again, which is why a block's
//! function must be idempotent (write the same output when run twice), as with daisy. Outputs
//! not declared with `writes`, and outputs written by worker processes on other machines, must
//! be durable when the function returns if a machine may crash (network file systems flush on
//! close); a killed process loses nothing the kernel already has.
//!
//! # Reruns
//!
//! Done blocks are counted as completed and skipped without calling the process or check
//! function; failed, orphaned and never-run blocks run. A task whose blocks are all done is
//! finished without visiting its blocks, and opening it reads the per-chunk summary of its
//! markers, not the markers, so rerunning a finished run of 10^10 blocks starts at once. A rerun whose task has a different layout (total, read or write ROI, fit,
//! conflicts) is refused with [`JournalError::LayoutMismatch`] unless
//! [`Runner::fresh`](crate::Runner::fresh) discards the old markers.
//!
//! A rerun whose task writes an array that was recreated since blocks were recorded done (its
//! [array id](crate::store::ChunkGrid::array_id) differs from the one recorded in
//! `arrays.json`) is refused with [`JournalError::OutputReplaced`], before any block runs and
//! before anything is modified: the recreated array lost the data of those blocks, and
//! skipping them would leave holes reported as success. Open existing outputs instead of
//! recreating them, or start fresh. An array that had an id and has none now (made by another
//! tool) is a warning; arrays newly declared, or in a run directory of an older version without
//! `arrays.json`, are recorded.
//!
//! # Damage
//!
//! Every file is checked when a run opens the directory, and damage is
//! [`JournalError::Corrupt`] naming the file, before any block runs (unless
//! [`Runner::fresh`](crate::Runner::fresh) discards the task's markers): a marker that is not
//! 0, 1 or 2, a marker page whose CRC-32 does not match (a bit flip; in a chunk of 16 MiB or more
//! that the per-chunk summary says is all done or all not done, only when a run changes a
//! marker of that page, see markers.rs), a chunk of the wrong length, a summary that disagrees
//! with the markers it was read with, a `layout.json` or `zarr.json` that is not what was written, or missing beside the
//! markers, a write-ahead log whose batch has a good checksum but names something that is not
//! a task directory (it can never make the run write outside `tasks/`), and a FIFO, socket,
//! device or directory where a file belongs (never a hang). Symbolic links are followed; what
//! they point to must be of the right type.
//!
//! A task directory is created under `tasks/.creating/` and renamed into place when complete,
//! so a crash while it is created leaves nothing that looks like markers (the next run removes
//! it). The space its markers need is checked before anything is created: too little is
//! [`JournalError::NoSpace`] with the bytes needed and available, and a reservation that fails
//! anyway leaves nothing behind either (nor a run directory this run created).
//!
//! [`status`] and [`RunDir`] read a run directory without writing to it (the CLI's
//! `blockwise status`); after a crash, they count the blocks of the write-ahead log's last
//! batch as recorded, as the next run applies it before it looks at any block.

mod arrays;
mod bench;
pub(crate) mod done;
mod files;
pub(crate) mod layout;
pub(crate) mod markers;
pub(crate) mod outputs;
mod rundir;
mod status;
mod v1;
pub(crate) mod wal;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[doc(hidden)]
pub use bench::{MarkerBench, bench_markers, marker_bench_task};
pub(crate) use done::DoneSet;
use layout::Layout;
pub(crate) use layout::TaskLayout;
pub use outputs::{BlockOutput, Outputs, read_outputs};
pub use rundir::{RunDir, RunProgress, TaskProgress};
pub use status::{FailedBlock, RunState, RunStatus, TaskStatus, status};

use crate::blocks::Block;
use crate::util::lock;

/// Errors of a run directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A file of the run directory could not be read or written.
    #[error("run directory: cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("create", "write", ...).
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another run holds the run directory.
    #[error("run directory {dir} is in use by another run (its lock file is held)")]
    Locked {
        /// The run directory.
        dir: PathBuf,
    },
    /// The done-markers of a task were recorded for another block layout.
    #[error(
        "task {task:?}: run directory {dir} holds done-markers for a different block layout ({differences}); use another run directory, or start fresh to discard them"
    )]
    LayoutMismatch {
        /// The task.
        task: String,
        /// The run directory.
        dir: PathBuf,
        /// What changed.
        differences: String,
    },
    /// A file of the run directory is damaged.
    #[error(
        "run directory file {path} is damaged: {reason}; move the run directory away or start fresh (its finished blocks will run again)"
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An output array of a task was recreated (its [array id](crate::store::ChunkGrid::array_id)
    /// differs from the one recorded) after blocks of the task were recorded done: their data
    /// is gone, and resuming would skip them. Checked before any block runs and before
    /// anything in the run directory is modified.
    #[error(
        "task {task:?}: output array {array} was recreated after {done} of the task's blocks were recorded done in run directory {dir} (its array id was {recorded_id}, now {current_id}): the data of those finished blocks is gone, and resuming would skip them and leave holes; start fresh (`Runner::fresh(true)`) to run every block again, or open the existing array with `ZarrArray::prepare` instead of recreating it so that a rerun keeps its data"
    )]
    OutputReplaced {
        /// The task.
        task: String,
        /// The array (its name, [`ChunkGrid::name`](crate::store::ChunkGrid::name)).
        array: String,
        /// The run directory.
        dir: PathBuf,
        /// Blocks of the task recorded done.
        done: u64,
        /// The array id recorded when the blocks were done.
        recorded_id: Box<str>,
        /// The array's id now.
        current_id: Box<str>,
    },
    /// The directory is not a run directory.
    #[error("{dir} is not a blockwise run directory (it has no run.json)")]
    NotARunDir {
        /// The directory.
        dir: PathBuf,
    },
    /// The file system of the run directory has too little free space for the done-markers of
    /// the tasks (checked before anything is created).
    #[error(
        "run directory {path}: not enough free space for the done-markers: {needed} bytes needed, {available} bytes available on its file system"
    )]
    NoSpace {
        /// The run directory.
        path: PathBuf,
        /// Bytes the done-markers need.
        needed: u64,
        /// Bytes available (to unprivileged users) on the file system.
        available: u64,
    },
    /// The run directory has no task of that id, so no outputs for it.
    #[error(
        "run directory {dir} has no task {task:?}, so no block outputs for it (is it a task of the run?)"
    )]
    NoOutputs {
        /// The task asked for.
        task: String,
        /// The run directory.
        dir: PathBuf,
    },
    /// A recorded block output is not a value of the type it was read as.
    #[error(
        "run directory file {path}: the output of block {grid_index} is not a {type_name}: {reason}"
    )]
    OutputType {
        /// The task's `outputs.bin`.
        path: PathBuf,
        /// The block's grid index.
        grid_index: u64,
        /// The type asked for.
        type_name: String,
        /// What serde said.
        reason: String,
    },
}

/// How the last run of a directory ended, as stored in `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunMeta {
    pub(crate) version: u32,
    pub(crate) tasks: Vec<String>,
    pub(crate) pid: u32,
    pub(crate) started: u64,
    pub(crate) ended: Option<u64>,
    /// "running", "finished", "finished with failures", or "stopped: <error>".
    pub(crate) outcome: String,
}

/// Markers flushed at least this often while blocks finish.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// ... or after this many records.
const FLUSH_RECORDS: u64 = 1 << 16;
/// ... or once this many bytes of block outputs wait.
const FLUSH_OUTPUT_BYTES: usize = 64 << 20;

/// The files of one task, owned by the writer thread.
struct TaskFiles {
    /// The task's directory name (in the write-ahead log).
    dir_name: String,
    markers: markers::MarkerWriter,
    failures_path: PathBuf,
    failures: Option<File>,
}

/// Markers and failure lines recorded since the last flush, per task.
#[derive(Default)]
struct Batch {
    records: Vec<Vec<u64>>,
    failures: Vec<String>,
    /// Encoded output records (see outputs.rs), per task.
    outputs: Vec<Vec<u8>>,
    output_bytes: usize,
}

impl Batch {
    fn new(tasks: usize) -> Batch {
        Batch {
            records: vec![Vec::new(); tasks],
            failures: vec![String::new(); tasks],
            outputs: vec![Vec::new(); tasks],
            output_bytes: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.records.iter().all(Vec::is_empty) && self.failures.iter().all(String::is_empty)
    }
}

enum ToWriter {
    Batch(Batch),
    /// The run ended: record the committed outputs lengths, then empty the log.
    Close,
    /// A temporary run directory: skip syncing the file systems of declared outputs.
    NotDurable,
}

/// Writes batches in order, on its own thread: failure lines, then the log, then the arrays,
/// each synced.
struct Writer {
    wal: wal::Wal,
    tasks: Vec<TaskFiles>,
    /// One open file on each file system holding declared outputs, synced before markers.
    outputs: Vec<(PathBuf, File)>,
    /// The block-outputs file of each task (outputs.rs).
    task_outputs: Vec<outputs::OutputsWriter>,
}

impl Writer {
    fn write(&mut self, batch: &Batch) -> Result<(), JournalError> {
        for (t, lines) in self.tasks.iter_mut().zip(&batch.failures) {
            if lines.is_empty() {
                continue;
            }
            if t.failures.is_none() {
                t.failures = Some(files::open_regular(
                    &t.failures_path,
                    OpenOptions::new().create(true).append(true),
                    "open",
                )?);
            }
            if let Some(f) = &mut t.failures {
                f.write_all(lines.as_bytes())
                    .map_err(|e| io("write", &t.failures_path, e))?;
                f.sync_data().map_err(|e| io("sync", &t.failures_path, e))?;
            }
        }
        if batch.records.iter().all(Vec::is_empty) {
            return Ok(());
        }
        // The outputs of the blocks about to be marked done reach the disk first.
        for (path, file) in &self.outputs {
            nix::unistd::syncfs(file).map_err(|e| io("sync the file system of", path, e.into()))?;
        }
        // Block outputs are appended and synced before the log that commits them.
        for (w, bytes) in self.task_outputs.iter_mut().zip(&batch.outputs) {
            if !bytes.is_empty() {
                w.append(bytes)?;
            }
        }
        // All or nothing: the batch goes to the log first, then to the arrays.
        self.wal.write_with_outputs(
            self.tasks
                .iter()
                .zip(&batch.records)
                .zip(&self.task_outputs)
                .map(|((t, r), o)| (t.dir_name.as_str(), r.as_slice(), o.logged_end())),
        )?;
        for (t, records) in self.tasks.iter_mut().zip(&batch.records) {
            for &r in records {
                t.markers.set(r >> 2, (r & 3) as u8)?;
            }
            t.markers.flush()?;
        }
        Ok(())
    }

    /// Writes batches until the channel closes; after an error, keeps it and drops the rest.
    fn run(
        mut self,
        rx: &crossbeam_channel::Receiver<ToWriter>,
        error: &Mutex<Option<JournalError>>,
    ) {
        let mut failed = false;
        while let Ok(msg) = rx.recv() {
            if failed {
                continue;
            }
            let result = match msg {
                ToWriter::Batch(batch) => self.write(&batch),
                ToWriter::Close => self
                    .task_outputs
                    .iter()
                    .try_for_each(outputs::OutputsWriter::commit)
                    .and_then(|()| self.wal.clear()),
                ToWriter::NotDurable => {
                    self.outputs.clear();
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::error!("recording done-markers failed: {e}");
                *lock(error) = Some(e);
                failed = true;
            }
        }
    }
}

/// The open journal of a run: holds the directory's lock and records markers. Records are
/// collected here (cheaply, on the runner's thread) and written by a writer thread in batches.
pub(crate) struct Journal {
    dir: PathBuf,
    _lock: File,
    done: Vec<Option<DoneSet>>,
    meta: RunMeta,
    batch: Batch,
    unflushed: u64,
    last_flush: Instant,
    tx: Option<crossbeam_channel::Sender<ToWriter>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The writer's first error; the run stops when it sees it.
    error: Arc<Mutex<Option<JournalError>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

fn io(action: &str, path: &Path, source: std::io::Error) -> JournalError {
    JournalError::Io {
        action: action.to_owned(),
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The file of a task directory recording that the task was abandoned.
pub(crate) const ABANDONED: &str = "abandoned.json";
/// How many blocks the task's mask left out in its last run (see [`Journal::record_masked`]).
#[cfg_attr(not(feature = "zarr"), allow(dead_code))]
pub(crate) const MASKED: &str = "masked.json";
/// What the task's mask was in its last run (see [`Journal::record_mask`]).
#[cfg_attr(not(feature = "zarr"), allow(dead_code))]
pub(crate) const MASK: &str = "mask.json";

/// Writes a file atomically: a temporary file, synced, renamed over the target.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let tmp = path.with_extension("tmp");
    let mut f = files::open_regular(
        &tmp,
        OpenOptions::new().write(true).create(true).truncate(true),
        "create",
    )?;
    f.write_all(bytes).map_err(|e| io("write", &tmp, e))?;
    f.sync_all().map_err(|e| io("sync", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io("rename", path, e))?;
    if let Some(parent) = path.parent() {
        // Make the rename durable.
        files::sync_dir(parent);
    }
    Ok(())
}

/// The directory name of a task: its id with anything but `[A-Za-z0-9_.-]` (and a leading
/// dot) percent-escaped.
pub(crate) fn task_dir_name(task_id: &str) -> String {
    let mut out = String::with_capacity(task_id.len());
    for (i, b) in task_id.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

/// The task id whose directory name ([`task_dir_name`]) is `name`; `None` if `name` is not
/// exactly such a name (so it has no `/`, is not `.` or `..`, has no leading dot, and escapes
/// with `%XX` only what `task_dir_name` escapes). What the write-ahead log names is checked
/// with this before it is used as a path.
pub(crate) fn task_id_of_dir_name(name: &str) -> Option<String> {
    if name == "%" {
        return Some(String::new());
    }
    // NAME_MAX: no longer name can be a directory.
    if name.is_empty() || name.len() > 255 {
        return None;
    }
    let b = name.as_bytes();
    let mut id = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex
                .iter()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
            {
                return None;
            }
            id.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            id.push(b[i]);
            i += 1;
        }
    }
    let id = String::from_utf8(id).ok()?;
    (task_dir_name(&id) == name).then_some(id)
}

/// What is at a task's directory.
pub(crate) enum TaskDir {
    /// Nothing (or an empty directory, which is removed): the task has no markers.
    Absent,
    /// A task directory with its layout.
    Present,
}

/// Looks at a task directory: a directory with `layout.json`, or nothing. A directory with
/// other contents but no `layout.json` lost it (a task directory is renamed into place only
/// when complete), and anything but a directory is not a task directory: both damage.
fn task_dir_state(tdir: &Path) -> Result<TaskDir, JournalError> {
    let state = task_dir_state_read_only(tdir)?;
    if let TaskDir::Absent = state
        && files::exists(tdir)?
    {
        // Made by an older version that was stopped before it wrote anything in it.
        fs::remove_dir(tdir).map_err(|e| io("remove", tdir, e))?;
    }
    Ok(state)
}

/// [`task_dir_state`] without removing an empty directory.
pub(crate) fn task_dir_state_read_only(tdir: &Path) -> Result<TaskDir, JournalError> {
    if !files::exists(tdir)? {
        return Ok(TaskDir::Absent);
    }
    let m = fs::metadata(tdir).map_err(|e| io("inspect", tdir, e))?;
    if !m.is_dir() {
        return Err(JournalError::Corrupt {
            path: tdir.to_owned(),
            reason: format!(
                "it is a {}, not a task directory",
                files::kind(m.file_type())
            ),
        });
    }
    let layout_path = tdir.join("layout.json");
    if files::exists(&layout_path)? {
        return Ok(TaskDir::Present);
    }
    let mut entries = fs::read_dir(tdir).map_err(|e| io("list", tdir, e))?;
    if entries.next().is_none() {
        return Ok(TaskDir::Absent);
    }
    Err(JournalError::Corrupt {
        path: layout_path,
        reason: "it is missing, but its task directory holds done-markers (it was deleted?); without the layout they cannot be used".into(),
    })
}

/// Reads a task's `layout.json` and checks its SHA-256.
pub(crate) fn read_layout(path: &Path) -> Result<Layout, JournalError> {
    let bytes = files::read_small(path, files::MAX_JSON)?;
    let layout = Layout::parse(&bytes).map_err(|reason| JournalError::Corrupt {
        path: path.to_owned(),
        reason,
    })?;
    Ok(layout)
}

impl Journal {
    /// Opens (creating if needed) the run directory for `tasks` (the scheduler's tasks, in its
    /// order), takes its lock, checks every task's layout and loads its done-markers. With
    /// `fresh`, the markers of these tasks are discarded first.
    pub(crate) fn open(
        dir: &Path,
        tasks: &[TaskLayout],
        fresh: bool,
    ) -> Result<Journal, JournalError> {
        Journal::open_with(dir, tasks, fresh, false)
    }

    /// [`open`](Journal::open), starting over: the records of **every** task of the directory
    /// (not only of `tasks`) are discarded first, so that no task of a later run resumes from
    /// records older than what this run redoes.
    pub(crate) fn open_fresh_all(
        dir: &Path,
        tasks: &[TaskLayout],
    ) -> Result<Journal, JournalError> {
        Journal::open_with(dir, tasks, true, true)
    }

    fn open_with(
        dir: &Path,
        tasks: &[TaskLayout],
        fresh: bool,
        all: bool,
    ) -> Result<Journal, JournalError> {
        let new_dir = fs::symlink_metadata(dir).is_err();
        fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let lock_path = dir.join("lock");
        let lock = files::open_regular(
            &lock_path,
            OpenOptions::new().create(true).truncate(false).write(true),
            "create",
        )?;
        // `status` (and `RunDir`) probe the lock with a shared lock for a moment: a few
        // attempts, 200 ms at most, before the directory counts as held by another run.
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(JournalError::Locked {
                        dir: dir.to_owned(),
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path, e)),
            }
        }
        // Shares the lock (a duplicate of its descriptor) until a failed open cleaned up.
        let guard = lock.try_clone().ok();
        let result = Journal::open_locked(dir, tasks, fresh, all, lock);
        if result.is_err()
            && new_dir
            && let Some(_guard) = guard
        {
            // Leave nothing behind: remove what this call created, holding the lock (so no
            // other run uses it), and only if nothing else appeared in it.
            for f in ["journal.wal", "run.json", "lock"] {
                let _ = fs::remove_file(dir.join(f));
            }
            let _ = fs::remove_dir(dir.join("tasks"));
            if fs::remove_dir(dir).is_ok() {
                tracing::debug!(dir = %dir.display(), "removed the run directory this run created");
            }
        }
        result
    }

    fn open_locked(
        dir: &Path,
        tasks: &[TaskLayout],
        fresh: bool,
        all: bool,
        lock: File,
    ) -> Result<Journal, JournalError> {
        let names: Vec<String> = tasks.iter().map(|t| task_dir_name(&t.task_id)).collect();
        if all {
            discard_other_tasks(dir, &names)?;
        }
        let wal_path = dir.join("journal.wal");
        let mut wal = wal::Wal::open(&wal_path)?;
        let logged = match wal.read() {
            // Starting fresh discards a damaged log (its batch is lost: its blocks run again).
            Err(e @ JournalError::Corrupt { .. }) if fresh => {
                tracing::warn!("starting fresh: discarding the write-ahead log: {e}");
                wal.clear()?;
                None
            }
            other => other?,
        };
        // Before anything is modified (the log's batch counts as recorded).
        arrays::check(dir, tasks, &names, logged.as_deref(), fresh)?;
        if let Some(sections) = logged {
            for section in &sections {
                if fresh && names.contains(&section.task_dir) {
                    // Its markers are discarded below.
                    continue;
                }
                replay(dir, &wal_path, section)?;
            }
            wal.clear()?;
        }
        let tasks_dir = dir.join("tasks");
        // A task directory whose creation was interrupted (we hold the lock: no other run
        // is creating one).
        let staging = tasks_dir.join(".creating");
        if files::exists(&staging)? {
            tracing::info!(path = %staging.display(), "removing task directories whose creation was interrupted");
            fs::remove_dir_all(&staging).map_err(|e| io("remove", &staging, e))?;
        }
        let mut present = Vec::with_capacity(tasks.len());
        for name in &names {
            let tdir = tasks_dir.join(name);
            if fresh && files::exists(&tdir)? {
                let removed = if fs::symlink_metadata(&tdir).is_ok_and(|m| m.is_dir()) {
                    fs::remove_dir_all(&tdir)
                } else {
                    fs::remove_file(&tdir)
                };
                removed.map_err(|e| io("remove", &tdir, e))?;
            }
            let is_present = matches!(task_dir_state(&tdir)?, TaskDir::Present);
            if is_present {
                outputs::recover(&tdir)?;
            }
            present.push(is_present);
        }
        // Room for the markers still to create, before anything is created.
        if present.iter().any(|p| !p) {
            let (_, unit) = files::free_space(dir)?;
            let needed = tasks
                .iter()
                .zip(&present)
                .filter(|(_, p)| !**p)
                .map(|(t, _)| markers::space_needed(t.num_blocks, unit))
                .fold(0u64, u64::saturating_add);
            files::check_space(dir, needed)?;
        }
        let mut files = Vec::with_capacity(tasks.len());
        let mut done = Vec::with_capacity(tasks.len());
        for ((task, name), present) in tasks.iter().zip(&names).zip(present) {
            let tdir = tasks_dir.join(name);
            if !present {
                create_task(&tasks_dir, name, task)?;
            }
            let (task_files, set) = open_task(dir, &tdir, name, task, present)?;
            files.push(task_files);
            done.push(Some(set));
        }
        let meta = RunMeta {
            version: 1,
            tasks: tasks.iter().map(|t| t.task_id.clone()).collect(),
            pid: std::process::id(),
            started: unix_now(),
            ended: None,
            outcome: "running".into(),
        };
        let writer = Writer {
            wal,
            tasks: files,
            outputs: output_file_systems(tasks),
            task_outputs: names
                .iter()
                .map(|n| outputs::OutputsWriter::new(&tasks_dir.join(n)))
                .collect(),
        };
        // Two batches in flight at most: a writer that falls behind slows the run down.
        let (tx, rx) = crossbeam_channel::bounded::<ToWriter>(2);
        let error = Arc::new(Mutex::new(None));
        let e = Arc::clone(&error);
        let handle = std::thread::Builder::new()
            .name("blockwise-journal".into())
            .spawn(move || writer.run(&rx, &e))
            .map_err(|e| io("start a writer thread for", dir, e))?;
        let journal = Journal {
            dir: dir.to_owned(),
            _lock: lock,
            done,
            batch: Batch::new(tasks.len()),
            meta,
            unflushed: 0,
            last_flush: Instant::now(),
            tx: Some(tx),
            writer: Some(handle),
            error,
        };
        journal.write_meta()?;
        Ok(journal)
    }

    /// The done sets loaded at open, one per task (taken once, for the scheduler).
    pub(crate) fn take_done(&mut self) -> Vec<DoneSet> {
        self.done
            .iter_mut()
            .map(|d| d.take().unwrap_or_else(|| DoneSet::empty(0)))
            .collect()
    }

    fn write_meta(&self) -> Result<(), JournalError> {
        let text = serde_json::to_string_pretty(&self.meta).unwrap_or_default();
        write_atomic(&self.dir.join("run.json"), text.as_bytes())
    }

    /// Records that a block finished.
    pub(crate) fn record_done(&mut self, task: usize, grid_index: u64) {
        if let Some(r) = self.batch.records.get_mut(task) {
            r.push(wal::record(grid_index, markers::DONE));
            self.unflushed += 1;
        }
    }

    /// Records that a block finished with an output (compact JSON): its marker and its output
    /// go to disk in the same batch.
    pub(crate) fn record_done_with_output(
        &mut self,
        task: usize,
        grid_index: u64,
        block_id: u64,
        output: &[u8],
    ) {
        if let Some(o) = self.batch.outputs.get_mut(task) {
            outputs::encode_record(o, grid_index, block_id, output);
            self.batch.output_bytes += outputs::HEADER + output.len();
            self.record_done(task, grid_index);
        }
    }

    /// The journal of a temporary run directory: declared outputs' file systems are not
    /// synced before markers (nothing resumes from it).
    pub(crate) fn not_durable(&mut self) -> Result<(), JournalError> {
        self.send(ToWriter::NotDurable)
    }

    /// Records a failed attempt; `last` marks the block failed (it will not be retried in this
    /// run).
    #[cfg(test)]
    pub(crate) fn record_failure(
        &mut self,
        task: usize,
        block: &Block,
        worker: u64,
        message: &str,
        last: bool,
    ) {
        let failure = crate::observe::BlockFailure {
            block_id: block.block_id(),
            grid_index: block.grid_index,
            worker_id: worker,
            message: message.to_owned(),
            kind: crate::observe::FailureKind::Error,
            attempt: 1,
        };
        self.record_block_failure(task, block, &failure, last);
    }

    /// Records a failed attempt (with its kind and attempt number); `last` marks the block
    /// failed (it will not be retried in this run).
    pub(crate) fn record_block_failure(
        &mut self,
        task: usize,
        block: &Block,
        failure: &crate::observe::BlockFailure,
        last: bool,
    ) {
        let Some(lines) = self.batch.failures.get_mut(task) else {
            return;
        };
        let line = serde_json::json!({
            "block_id": block.block_id(),
            "grid_index": block.grid_index,
            "write_roi": block.write_roi().to_string(),
            "worker": failure.worker_id,
            "kind": failure.kind,
            "attempt": failure.attempt,
            "last_attempt": last,
            "error": failure.message,
            "time": unix_now(),
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
        if last && let Some(r) = self.batch.records.get_mut(task) {
            r.push(wal::record(block.grid_index, markers::FAILED));
        }
        self.unflushed += 1;
    }

    /// Records that the run abandoned task `task_id` (see
    /// [`TaskBuilder::max_consecutive_failures`](crate::TaskBuilder::max_consecutive_failures)):
    /// `tasks/<task>/abandoned.json`, written atomically, read by `blockwise status`.
    pub(crate) fn record_abandoned(&self, task_id: &str, reason: &str) -> Result<(), JournalError> {
        let tdir = self.dir.join("tasks").join(task_dir_name(task_id));
        let record = serde_json::json!({ "reason": reason, "time": unix_now() });
        write_atomic(&tdir.join(ABANDONED), record.to_string().as_bytes())
    }

    /// Records what the task's mask is (`tasks/<task>/mask.json`, written atomically; removed
    /// when the task has no mask) and logs a warning when it differs from the last run's.
    /// Returns whether it changed (a task without a record before counts as unchanged).
    ///
    /// The mask is not part of the task's layout: blocks it skipped were never marked done,
    /// so a changed mask needs nothing discarded (see [`crate::mask`]).
    #[cfg_attr(not(feature = "zarr"), allow(dead_code))]
    pub(crate) fn record_mask(
        &self,
        task_id: &str,
        identity: Option<&serde_json::Value>,
    ) -> Result<bool, JournalError> {
        let path = self
            .dir
            .join("tasks")
            .join(task_dir_name(task_id))
            .join(MASK);
        let before = if files::exists(&path)? {
            // Only a regular file of bounded length is read (never a hang on a FIFO).
            let text = files::read_small(&path, files::MAX_JSON)?;
            // A record that does not parse is replaced (it is informative only).
            serde_json::from_slice::<serde_json::Value>(&text).ok()
        } else {
            None
        };
        let changed = match (&before, identity) {
            (Some(old), Some(new)) => old != new,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if changed {
            tracing::warn!(
                task = task_id,
                before = %before.as_ref().map_or_else(|| "none".to_owned(), ToString::to_string),
                now = %identity.map_or_else(|| "none".to_owned(), ToString::to_string),
                "the task's mask changed since the last run: blocks it now opens run, blocks done before stay done"
            );
        }
        match identity {
            Some(id) => write_atomic(&path, id.to_string().as_bytes())?,
            None if files::exists(&path)? => {
                fs::remove_file(&path).map_err(|e| io("remove", &path, e))?;
            }
            None => {}
        }
        Ok(changed)
    }

    /// Records how many blocks of task `task_id` its mask left out in this run
    /// (`tasks/<task>/masked.json`, written atomically when the run ends, removed when a run
    /// opens the task), for `blockwise status`: those blocks have no done-marker.
    #[cfg_attr(not(feature = "zarr"), allow(dead_code))]
    pub(crate) fn record_masked(&self, task_id: &str, masked: u64) -> Result<(), JournalError> {
        let tdir = self.dir.join("tasks").join(task_dir_name(task_id));
        let record = serde_json::json!({ "masked": masked, "time": unix_now() });
        write_atomic(&tdir.join(MASKED), record.to_string().as_bytes())
    }

    fn writer_error(&self) -> Option<JournalError> {
        lock(&self.error).take()
    }

    /// Hands the batch to the writer if it is full or old enough; returns how long until the
    /// next hand-over is due (`None` if nothing waits), or the writer's error.
    pub(crate) fn maybe_flush(&mut self) -> Result<Option<Duration>, JournalError> {
        if let Some(e) = self.writer_error() {
            return Err(e);
        }
        if self.unflushed == 0 {
            return Ok(None);
        }
        let age = self.last_flush.elapsed();
        if self.unflushed >= FLUSH_RECORDS
            || age >= FLUSH_INTERVAL
            || self.batch.output_bytes >= FLUSH_OUTPUT_BYTES
        {
            self.flush()?;
            return Ok(None);
        }
        Ok(Some(FLUSH_INTERVAL - age))
    }

    /// Hands every pending record to the writer (which writes and syncs it in the background).
    pub(crate) fn flush(&mut self) -> Result<(), JournalError> {
        let batch = std::mem::replace(&mut self.batch, Batch::new(self.done.len()));
        self.send(ToWriter::Batch(batch))?;
        self.unflushed = 0;
        self.last_flush = Instant::now();
        Ok(())
    }

    fn send(&mut self, msg: ToWriter) -> Result<(), JournalError> {
        if let ToWriter::Batch(b) = &msg
            && b.is_empty()
        {
            return Ok(());
        }
        if let Some(tx) = &self.tx
            && tx.send(msg).is_err()
        {
            return Err(self.writer_error().unwrap_or_else(|| JournalError::Io {
                action: "record done-markers in".into(),
                path: self.dir.clone(),
                source: std::io::Error::other("the journal's writer thread stopped"),
            }));
        }
        Ok(())
    }

    /// Writes everything recorded, waits for the writer, and records how the run ended.
    pub(crate) fn finish(&mut self, outcome: &str) -> Result<(), JournalError> {
        let sent = self.flush().and_then(|()| self.send(ToWriter::Close));
        self.tx = None;
        if let Some(h) = self.writer.take()
            && h.join().is_err()
        {
            tracing::error!("the journal's writer thread panicked");
        }
        let flushed = sent.and_then(|()| match self.writer_error() {
            Some(e) => Err(e),
            None => Ok(()),
        });
        self.meta.ended = Some(unix_now());
        self.meta.outcome = match &flushed {
            Ok(()) => outcome.to_owned(),
            Err(e) => format!("stopped: {e}"),
        };
        let meta = self.write_meta();
        flushed.and(meta)
    }
}

impl Drop for Journal {
    /// Without [`finish`](Journal::finish) (an error path): write what was recorded.
    fn drop(&mut self) {
        if self.tx.is_some() {
            let _ = self.flush();
            self.tx = None;
        }
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// Removes the task directories of `dir` other than `keep` (whose records `open_locked`
/// discards itself), and the write-ahead log's sections of those tasks go with them (a
/// section of a task directory that is gone is ignored on replay).
fn discard_other_tasks(dir: &Path, keep: &[String]) -> Result<(), JournalError> {
    let tasks_dir = dir.join("tasks");
    let entries = match fs::read_dir(&tasks_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("list", &tasks_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io("list", &tasks_dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if keep.contains(&name) || task_id_of_dir_name(&name).is_none() {
            continue;
        }
        let path = entry.path();
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            tracing::info!(task_dir = %path.display(), "starting fresh: discarding the records of a task of an earlier run");
            fs::remove_dir_all(&path).map_err(|e| io("remove", &path, e))?;
        }
    }
    files::sync_dir(&tasks_dir);
    Ok(())
}

/// One open file per file system holding the arrays the tasks declare they write.
fn output_file_systems(tasks: &[TaskLayout]) -> Vec<(PathBuf, File)> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for grid in tasks.iter().flat_map(|t| &t.writes) {
        let Some(path) = &grid.path else { continue };
        // Non-blocking: a FIFO at an output's path must not hang the run.
        let opened = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .read(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(path)
        };
        match opened.and_then(|f| f.metadata().map(|m| (f, m.dev()))) {
            Ok((file, dev)) => {
                if seen.insert(dev) {
                    out.push((path.clone(), file));
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot open an output to sync it before marking blocks done: {e}")
            }
        }
    }
    out
}

/// Applies one task's part of a logged batch to its marker array (rewriting the pages, and
/// their checksums, that it touches: see markers.rs).
fn replay(dir: &Path, wal_path: &Path, section: &wal::Section) -> Result<(), JournalError> {
    // `wal::decode` checked this; a path made of anything else is never built.
    if task_id_of_dir_name(&section.task_dir).is_none() {
        return Err(JournalError::Corrupt {
            path: wal_path.to_owned(),
            reason: format!(
                "it names {:?}, which is not a task directory",
                section.task_dir
            ),
        });
    }
    let tdir = dir.join("tasks").join(&section.task_dir);
    if let TaskDir::Absent = task_dir_state(&tdir)? {
        tracing::warn!(task_dir = %tdir.display(), "logged markers of a task directory that is gone; ignored");
        return Ok(());
    }
    let layout_path = tdir.join("layout.json");
    let layout = read_layout(&layout_path)?;
    if task_dir_name(&layout.task_id) != section.task_dir {
        return Err(JournalError::Corrupt {
            path: layout_path,
            reason: format!(
                "it is the layout of task {:?}, whose directory is not {}",
                layout.task_id, section.task_dir
            ),
        });
    }
    let array = tdir.join("done.zarr");
    for &(index, value) in &section.records {
        if index >= layout.num_blocks || value > markers::FAILED {
            return Err(JournalError::Corrupt {
                path: wal_path.to_owned(),
                reason: format!(
                    "a record for block {index} (value {value}) of {}, which has {} blocks",
                    section.task_dir, layout.num_blocks
                ),
            });
        }
    }
    markers::MarkerWriter::replay(
        &array,
        &layout.grid_shape,
        layout.num_blocks,
        &section.records,
    )?;
    if let Some(end) = section.outputs_end {
        outputs::write_committed(&tdir, end)?;
    }
    tracing::info!(task_dir = %section.task_dir, markers = section.records.len(), "replayed logged done-markers");
    Ok(())
}

/// Creates a task's directory, with empty markers and its layout: built in
/// `tasks/.creating/<name>` and renamed into place when complete, so that a task directory
/// is always whole. On failure, what was built is removed.
fn create_task(tasks_dir: &Path, name: &str, task: &TaskLayout) -> Result<(), JournalError> {
    let parent = tasks_dir.join(".creating");
    let staging = parent.join(name);
    let tdir = tasks_dir.join(name);
    let new_tasks_dir = !files::exists(tasks_dir)?;
    let built = (|| {
        fs::create_dir_all(&staging).map_err(|e| io("create", &staging, e))?;
        markers::create(
            &staging.join("done.zarr"),
            &task.grid_shape,
            task.num_blocks,
        )?;
        let text = serde_json::to_string_pretty(&Layout::of(task)).unwrap_or_default();
        write_atomic(&staging.join("layout.json"), text.as_bytes())?;
        arrays::record(&staging, task)?;
        fs::rename(&staging, &tdir).map_err(|e| io("rename", &tdir, e))?;
        files::sync_dir(tasks_dir);
        if new_tasks_dir && let Some(run_dir) = tasks_dir.parent() {
            files::sync_dir(run_dir);
        }
        Ok(())
    })();
    if built.is_err()
        && let Err(e) = fs::remove_dir_all(&staging)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %staging.display(), "cannot remove a task directory whose creation failed: {e}");
    }
    let _ = fs::remove_dir(&parent);
    built
}

/// Opens one task's journal (its directory exists) and loads its done set.
fn open_task(
    dir: &Path,
    tdir: &Path,
    name: &str,
    task: &TaskLayout,
    existed: bool,
) -> Result<(TaskFiles, DoneSet), JournalError> {
    let array = tdir.join("done.zarr");
    let set = if existed {
        let layout = Layout::of(task);
        let stored = read_layout(&tdir.join("layout.json"))?;
        if stored.sha256 != layout.sha256 {
            return Err(JournalError::LayoutMismatch {
                task: task.task_id.clone(),
                dir: dir.to_owned(),
                differences: layout.differences(&stored),
            });
        }
        let set = markers::load(&array, &task.grid_shape, task.num_blocks)?;
        arrays::record(tdir, task)?;
        set
    } else {
        DoneSet::empty(task.num_blocks)
    };
    let markers = markers::MarkerWriter::open(&array, &task.grid_shape, task.num_blocks)?;
    // An abandonment recorded by an earlier run: this run gives the task another chance.
    let abandoned = tdir.join(ABANDONED);
    if files::exists(&abandoned)? {
        fs::remove_file(&abandoned).map_err(|e| io("remove", &abandoned, e))?;
    }
    // The count of an earlier run's mask: this run counts again.
    let masked = tdir.join(MASKED);
    if files::exists(&masked)? {
        fs::remove_file(&masked).map_err(|e| io("remove", &masked, e))?;
    }
    Ok((
        TaskFiles {
            dir_name: name.to_owned(),
            markers,
            failures_path: tdir.join("failures.jsonl"),
            failures: None,
        },
        set,
    ))
}

#[cfg(test)]
mod tests;
