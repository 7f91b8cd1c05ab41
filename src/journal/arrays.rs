//! The identity of the arrays a task writes, recorded in its task directory (`arrays.json`),
//! so that a rerun notices an output that was recreated after blocks were recorded as done.
//!
//! A program that creates its output arrays at start (instead of opening them when they
//! exist) deletes, on a rerun, the data of every block the run directory records as done,
//! and the rerun then skips those blocks: holes, reported as success. Arrays blockwise creates
//! carry a random id in their attributes ([`ChunkGrid::array_id`]); the run directory records
//! the id of every array a task declares with [`TaskBuilder::writes`](crate::TaskBuilder::writes),
//! and a run that finds a different id for an array of a task with blocks recorded done
//! refuses to start ([`JournalError::OutputReplaced`]), before any block runs and before
//! anything in the run directory is modified.
//!
//! - An array is matched to its record by name and path, else by name, else by path (if one
//!   recorded array and one declared array have it: the same store reached by another name).
//! - A different id is refused (unless starting fresh, which re-records). An array that had
//!   an id and has none now (opened through something that does not read it, or replaced by
//!   an array made by another tool) is a warning, and its recorded id is kept.
//! - Arrays without a record (newly declared, or a run directory of an older version without
//!   `arrays.json`) are recorded. A task with no block done or failed records the current ids,
//!   whatever was recorded before.
//!
//! ```text
//! {"version": 1, "task_id": "...", "arrays": [{"name": ..., "path": ..., "array_id": ...}],
//!  "sha256": "<SHA-256 of the fields above>"}
//! ```
//!
//! The file is written atomically; one whose SHA-256 does not match its fields is
//! [`JournalError::Corrupt`], like the other files of a run directory.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::layout::{Layout, TaskLayout};
use super::status::Pending;
use super::{JournalError, TaskDir, files, read_layout, task_dir_state_read_only, write_atomic};
use crate::store::ChunkGrid;

/// The file name, in a task directory.
const FILE: &str = "arrays.json";
const VERSION: u32 = 1;

/// One array a task writes, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedArray {
    /// [`ChunkGrid::name`].
    pub(crate) name: String,
    /// [`ChunkGrid::path`], made absolute (symbolic links resolved) where it exists.
    pub(crate) path: Option<String>,
    /// [`ChunkGrid::array_id`].
    pub(crate) array_id: Option<String>,
}

impl RecordedArray {
    fn of(grid: &ChunkGrid) -> RecordedArray {
        RecordedArray {
            name: grid.name.clone(),
            path: grid.path.as_ref().map(|p| {
                std::fs::canonicalize(p)
                    .unwrap_or_else(|_| p.clone())
                    .to_string_lossy()
                    .into_owned()
            }),
            array_id: grid.array_id.clone(),
        }
    }
}

/// The contents of `arrays.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Arrays {
    version: u32,
    task_id: String,
    pub(crate) arrays: Vec<RecordedArray>,
    #[serde(default)]
    sha256: String,
}

impl Arrays {
    fn new(task_id: &str, arrays: Vec<RecordedArray>) -> Arrays {
        let mut a = Arrays {
            version: VERSION,
            task_id: task_id.to_owned(),
            arrays,
            sha256: String::new(),
        };
        a.sha256 = a.digest();
        a
    }

    /// The SHA-256 (hex) of the fields but `sha256`.
    fn digest(&self) -> String {
        let fields =
            serde_json::to_vec(&(self.version, &self.task_id, &self.arrays)).unwrap_or_default();
        Sha256::digest(&fields)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A stored record's bytes, checked; what is wrong with them otherwise.
    fn parse(bytes: &[u8], task_id: &str) -> Result<Arrays, String> {
        let a: Arrays = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a record of a task's output arrays ({e})"))?;
        if a.digest() != a.sha256 {
            return Err("its SHA-256 does not match its fields (edited by hand?)".into());
        }
        if a.version != VERSION {
            return Err(format!(
                "version {} is not one this version of blockwise reads ({VERSION})",
                a.version
            ));
        }
        if a.task_id != task_id {
            return Err(format!(
                "it records the arrays of task {:?}, but its directory is task {task_id:?}'s",
                a.task_id
            ));
        }
        Ok(a)
    }
}

/// The recorded arrays of a task directory (whose task is `task_id`); `None` without a record
/// (a task directory of an older version).
pub(crate) fn read(tdir: &Path, task_id: &str) -> Result<Option<Arrays>, JournalError> {
    let path = tdir.join(FILE);
    if !files::exists(&path)? {
        return Ok(None);
    }
    let bytes = files::read_small(&path, files::MAX_JSON)?;
    Arrays::parse(&bytes, task_id)
        .map(Some)
        .map_err(|reason| JournalError::Corrupt { path, reason })
}

/// The recorded array `current` is, among `recorded`, where `declared` are all the arrays
/// the task declares now (see the module docs).
fn matching(
    recorded: &[RecordedArray],
    current: &RecordedArray,
    declared: &[RecordedArray],
) -> Option<usize> {
    if let Some(i) = recorded
        .iter()
        .position(|r| r.name == current.name && r.path == current.path)
    {
        return Some(i);
    }
    if let Some(i) = recorded.iter().position(|r| r.name == current.name) {
        return Some(i);
    }
    let path = current.path.as_ref()?;
    let same = |list: &[RecordedArray]| {
        list.iter()
            .filter(|r| r.path.as_ref() == Some(path))
            .count()
    };
    if same(recorded) == 1 && same(declared) == 1 {
        return recorded.iter().position(|r| r.path.as_ref() == Some(path));
    }
    None
}

/// An array whose id changed: (name, recorded id, current id).
type Replaced = (String, String, String);

/// What changed between the record and the declared arrays: arrays with another id, and
/// arrays that had an id and have none now.
fn changes(
    recorded: &[RecordedArray],
    declared: &[RecordedArray],
) -> (Vec<Replaced>, Vec<(String, String)>) {
    let mut replaced = Vec::new();
    let mut lost = Vec::new();
    for current in declared {
        let Some(r) = matching(recorded, current, declared).map(|i| &recorded[i]) else {
            continue;
        };
        match (&r.array_id, &current.array_id) {
            (Some(then), Some(now)) if then != now => {
                replaced.push((current.name.clone(), then.clone(), now.clone()));
            }
            (Some(then), None) => lost.push((current.name.clone(), then.clone())),
            _ => {}
        }
    }
    (replaced, lost)
}

/// Refuses to resume a task whose output arrays were recreated after blocks were recorded
/// done (see the module docs). Reads only: runs before the write-ahead log (`logged`, its
/// batch) is replayed and before anything is modified, and counts the log's batch as
/// recorded. With `fresh`, checks nothing (the markers are discarded).
pub(crate) fn check(
    dir: &Path,
    tasks: &[TaskLayout],
    names: &[String],
    logged: Option<&[super::wal::Section]>,
    fresh: bool,
) -> Result<(), JournalError> {
    if fresh {
        return Ok(());
    }
    let pending = Pending::of(logged.unwrap_or_default());
    let wal_path = dir.join("journal.wal");
    for (task, name) in tasks.iter().zip(names) {
        let tdir = dir.join("tasks").join(name);
        if !matches!(task_dir_state_read_only(&tdir)?, TaskDir::Present) {
            continue;
        }
        let Some(stored) = read(&tdir, &task.task_id)? else {
            continue;
        };
        let declared: Vec<RecordedArray> = task.writes.iter().map(RecordedArray::of).collect();
        let (replaced, lost) = changes(&stored.arrays, &declared);
        if replaced.is_empty() && lost.is_empty() {
            continue;
        }
        let layout = read_layout(&tdir.join("layout.json"))?;
        if layout.sha256 != Layout::of(task).sha256 {
            // Refused as a layout mismatch when the task directory is opened.
            continue;
        }
        let (counts, _) = pending.counts(&tdir, name, &layout, &wal_path, 0)?;
        if counts.done == 0 {
            continue;
        }
        if let Some((array, recorded_id, current_id)) = replaced.into_iter().next() {
            return Err(JournalError::OutputReplaced {
                task: task.task_id.clone(),
                array,
                dir: dir.to_owned(),
                done: counts.done,
                recorded_id: recorded_id.into(),
                current_id: current_id.into(),
            });
        }
        for (array, then) in lost {
            tracing::warn!(
                task = %task.task_id,
                array = %array,
                recorded_id = %then,
                done = counts.done,
                "an output array of a task with blocks recorded done has no array id now (it had one): if it was recreated, the data of those blocks is gone and resuming leaves holes; start fresh if so"
            );
        }
    }
    Ok(())
}

/// Records the arrays `task` declares in its task directory `tdir` (written only if the
/// record changes): their current ids, the recorded id of an array that has none now, and
/// the records of arrays no longer declared. Runs after [`check`].
pub(crate) fn record(tdir: &Path, task: &TaskLayout) -> Result<(), JournalError> {
    let stored = read(tdir, &task.task_id)?;
    let recorded = stored.as_ref().map_or(&[][..], |a| a.arrays.as_slice());
    let declared: Vec<RecordedArray> = task.writes.iter().map(RecordedArray::of).collect();
    let mut used = vec![false; recorded.len()];
    let mut out = Vec::with_capacity(declared.len() + recorded.len());
    for current in &declared {
        let mut entry = current.clone();
        if let Some(i) = matching(recorded, current, &declared) {
            used[i] = true;
            if entry.array_id.is_none() {
                entry.array_id.clone_from(&recorded[i].array_id);
            }
        }
        out.push(entry);
    }
    out.extend(
        recorded
            .iter()
            .zip(&used)
            .filter(|(_, u)| !**u)
            .map(|(r, _)| r.clone()),
    );
    if stored.as_ref().is_some_and(|a| a.arrays == out) {
        return Ok(());
    }
    let text = serde_json::to_string_pretty(&Arrays::new(&task.task_id, out)).unwrap_or_default();
    write_atomic(&tdir.join(FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, path: Option<&str>, id: Option<&str>) -> RecordedArray {
        RecordedArray {
            name: name.into(),
            path: path.map(Into::into),
            array_id: id.map(Into::into),
        }
    }

    #[test]
    fn arrays_are_matched_by_name_and_path_then_name_then_a_unique_path() {
        let recorded = [
            rec("/a.zarr/x", Some("/a.zarr"), Some("1")),
            rec("/a.zarr/y", Some("/a.zarr"), Some("2")),
            rec("/b.zarr", Some("/b.zarr"), Some("3")),
        ];
        let y = rec("/a.zarr/y", Some("/a.zarr"), Some("9"));
        assert_eq!(matching(&recorded, &y, std::slice::from_ref(&y)), Some(1));
        let moved = rec("/a.zarr/x", Some("/elsewhere"), None);
        assert_eq!(matching(&recorded, &moved, &[]), Some(0));
        let renamed = rec("b.zarr", Some("/b.zarr"), None);
        assert_eq!(
            matching(&recorded, &renamed, std::slice::from_ref(&renamed)),
            Some(2)
        );
        // Two recorded arrays in that store: which one is not known.
        let other = rec("a.zarr/z", Some("/a.zarr"), None);
        assert_eq!(
            matching(&recorded, &other, std::slice::from_ref(&other)),
            None
        );
        let (replaced, lost) = changes(&recorded, &[y, moved, rec("new", None, Some("5"))]);
        assert_eq!(replaced, [("/a.zarr/y".into(), "2".into(), "9".into())]);
        assert_eq!(lost, [("/a.zarr/x".into(), "1".into())]);
    }

    #[test]
    fn a_record_is_checked() {
        let a = Arrays::new("t", vec![rec("n", Some("/p"), Some("id"))]);
        let text = serde_json::to_vec(&a).unwrap_or_default();
        assert_eq!(Arrays::parse(&text, "t"), Ok(a));
        assert!(Arrays::parse(&text, "u").is_err_and(|e| e.contains("records the arrays of task")));
        let edited = String::from_utf8_lossy(&text).replace("\"id\"", "\"di\"");
        assert_eq!(
            Arrays::parse(edited.as_bytes(), "t"),
            Err("its SHA-256 does not match its fields (edited by hand?)".into())
        );
        assert!(
            Arrays::parse(b"[]", "t")
                .is_err_and(|e| e.starts_with("not a record of a task's output arrays"))
        );
    }
}
