#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::Task;
use crate::geometry::Roi;
use std::path::PathBuf;

/// [`Journal::open`] for `tasks`' layouts.
fn open(dir: &Path, tasks: &[Task], fresh: bool) -> Result<Journal, JournalError> {
    let layouts: Vec<TaskLayout> = tasks.iter().map(Task::layout).collect();
    Journal::open(dir, &layouts, fresh)
}

fn task(id: &str, n: i64) -> Task {
    Task::builder(
        id,
        Roi::new([0, 0], [10 * n, 10]),
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
    )
    .build()
    .unwrap()
}

fn block(t: &Task, i: u64) -> Block {
    t.block(i).unwrap()
}

fn err(r: Result<Journal, JournalError>) -> JournalError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn markers_survive_reopening_and_count_as_done() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("a b", 5);
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    assert!(dir.path().join("tasks/a%20b/done.zarr/c/0").is_file());
    assert!(dir.path().join("tasks/a%20b/done.summary").is_file());
    let done = j.take_done();
    assert!(done[0].is_none_done());
    j.record_done(0, 1);
    j.record_done(0, 3);
    j.record_failure(0, &block(&t, 4), 7, "boom", true);
    j.record_failure(0, &block(&t, 2), 7, "retried", false);
    j.finish("finished with failures").unwrap();
    drop(j);
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    let done = j.take_done();
    assert_eq!(done[0].count(), 2);
    assert!(done[0].contains(1) && done[0].contains(3) && !done[0].contains(4));
    drop(j);
    let s = status(dir.path()).unwrap();
    assert_eq!(s.state, RunState::Crashed, "the second open never finished");
    let ts = &s.tasks[0];
    assert_eq!(
        (
            ts.task_id.as_str(),
            ts.total,
            ts.done,
            ts.failed,
            ts.never_run
        ),
        ("a b", 5, 2, 1, 2)
    );
    assert_eq!(ts.failed_blocks[0].grid_index, 4);
    assert_eq!(ts.failed_blocks[0].error, "boom");
    assert!(s.last_progress.is_some());
    let text = s.to_string();
    assert!(text.contains("failed blocks of a b:"), "{text}");
    assert!(
        text.contains("(grid index 4, write ROI [40:50, 0:10] (10, 10)): boom"),
        "{text}"
    );
}

#[test]
fn a_second_run_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("t", 3);
    let _held = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    let e = err(open(dir.path(), &[t], false));
    assert!(matches!(e, JournalError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("is in use by another run"), "{e}");
    assert_eq!(status(dir.path()).unwrap().state, RunState::Running);
}

#[test]
fn another_layout_is_refused_unless_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(dir.path(), &[task("t", 3)], false).unwrap();
    j.record_done(0, 0);
    j.finish("finished").unwrap();
    drop(j);
    let e = err(open(dir.path(), &[task("t", 4)], false));
    assert_eq!(
        e.to_string(),
        format!(
            "task \"t\": run directory {} holds done-markers for a different block layout (total ROI [0:30, 0:10] (30, 10) then, [0:40, 0:10] (40, 10) now; blocks [3, 1] then, [4, 1] now); use another run directory, or start fresh to discard them",
            dir.path().display()
        )
    );
    let mut j = open(dir.path(), &[task("t", 4)], true).unwrap();
    assert!(j.take_done()[0].is_none_done());
}

#[test]
fn damaged_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("t", 4);
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    j.record_done(0, 2);
    j.finish("finished").unwrap();
    drop(j);
    let chunk = dir.path().join("tasks/t/done.zarr/c/0");
    let original = std::fs::read(&chunk).unwrap();
    // Block 2 done: bits 4 and 5 of the one byte.
    assert_eq!(original, [0b0001_0000]);

    std::fs::write(&chunk, []).unwrap();
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert!(
        e.to_string()
            .contains("0 bytes, expected 1 (a chunk of the marker array); it was truncated"),
        "{e}"
    );
    assert!(e.to_string().contains(&chunk.display().to_string()), "{e}");

    // Block 3 is 3.
    std::fs::write(&chunk, [0b1101_0000]).unwrap();
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert!(e.to_string().contains("byte 0 is 208"), "{e}");

    std::fs::write(&chunk, &original).unwrap();
    let meta = dir.path().join("tasks/t/done.zarr/zarr.json");
    std::fs::write(&meta, "{\"zarr_format\": 3").unwrap();
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert!(
        e.to_string()
            .contains("zarr.json is damaged: not valid JSON"),
        "{e}"
    );

    std::fs::write(&meta, "{\"zarr_format\": 3, \"shape\": [5, 1]}").unwrap();
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert!(
        e.to_string()
            .contains("shape is [5,1], expected [1] (the packed bytes of 4 blocks)"),
        "{e}"
    );

    let layout = dir.path().join("tasks/t/layout.json");
    let text = std::fs::read_to_string(&layout).unwrap();
    std::fs::write(
        &layout,
        text.replace("\"fit\": \"valid\"", "\"fit\": \"shrink\""),
    )
    .unwrap();
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert!(
        e.to_string()
            .contains("its SHA-256 does not match its fields"),
        "{e}"
    );
    std::fs::write(&layout, "garbage").unwrap();
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert!(
        e.to_string()
            .contains("layout.json is damaged: not a task layout"),
        "{e}"
    );
    assert!(matches!(e, JournalError::Corrupt { .. }));

    // Starting fresh recovers.
    let mut j = open(dir.path(), std::slice::from_ref(&t), true).unwrap();
    assert!(j.take_done()[0].is_none_done());
}

#[test]
fn a_logged_batch_is_replayed_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("t", 6);
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    j.record_done(0, 0);
    j.flush().unwrap();
    drop(j);
    // A crash after the log was written but before the array was.
    let mut wal = wal::Wal::open(&dir.path().join("journal.wal")).unwrap();
    let records = [wal::record(4, 1), wal::record(5, 2)];
    wal.write([("t", &records[..])].into_iter()).unwrap();
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    let done = j.take_done();
    assert_eq!(done[0].count(), 2);
    assert!(done[0].contains(0) && done[0].contains(4) && !done[0].contains(5));
    drop(j);
    let s = status(dir.path()).unwrap();
    assert_eq!(s.tasks[0].failed, 1);
    assert_eq!(s.tasks[0].failed_blocks[0].error, "(no error recorded)");
}

#[test]
fn task_directory_names_are_safe() {
    assert_eq!(task_dir_name("smooth"), "smooth");
    assert_eq!(task_dir_name("a/b c"), "a%2Fb%20c");
    assert_eq!(task_dir_name(".."), "%2E.");
    assert_eq!(task_dir_name(""), "%");
    assert_eq!(task_dir_name("x.y-z_1"), "x.y-z_1");
}

#[test]
fn status_of_a_directory_that_is_not_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let e = status(dir.path()).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("is not a blockwise run directory (it has no run.json)")
    );
}

#[cfg(feature = "zarr")]
#[test]
fn markers_are_a_zarr_array() {
    use zarrs::array::Array;
    use zarrs::filesystem::FilesystemStore;
    let dir = tempfile::tempdir().unwrap();
    let t = Task::builder(
        "t",
        Roi::new([0, 0, 0], [20, 30, 40]),
        Roi::new([0, 0, 0], [10, 10, 10]),
        Roi::new([0, 0, 0], [10, 10, 10]),
    )
    .build()
    .unwrap();
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    j.record_done(0, 0);
    j.record_done(0, 23);
    j.record_failure(0, &t.block(5).unwrap(), 0, "x", true);
    j.finish("finished").unwrap();
    let store = std::sync::Arc::new(FilesystemStore::new(dir.path().join("tasks/t")).unwrap());
    let array = Array::open(store, "/done.zarr").unwrap();
    assert_eq!(array.shape(), &[6]);
    let attrs = &array.attributes()["blockwise"];
    assert_eq!(attrs["grid_shape"], serde_json::json!([2, 3, 4]));
    assert_eq!(attrs["blocks"], serde_json::json!(24));
    let packed: Vec<u8> = array.retrieve_array_subset(&array.subset_all()).unwrap();
    // As numpy unpacks it: (a[:, None] >> [0, 2, 4, 6]) & 3, flattened.
    let values: Vec<u8> = packed
        .iter()
        .flat_map(|b| [0, 2, 4, 6].map(|s| (b >> s) & 3))
        .collect();
    let mut want = vec![0u8; 24];
    want[0] = 1;
    want[23] = 1;
    want[5] = 2;
    assert_eq!(values, want);
}

fn finished_run(dir: &Path, t: &Task, done: &[u64]) {
    let mut j = open(dir, std::slice::from_ref(t), false).unwrap();
    for &i in done {
        j.record_done(0, i);
    }
    j.finish("finished").unwrap();
}

#[test]
fn a_missing_layout_beside_markers_is_an_error_unless_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("t", 6);
    finished_run(dir.path(), &t, &[0, 1, 2]);
    let layout = dir.path().join("tasks/t/layout.json");
    std::fs::remove_file(&layout).unwrap();
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert!(matches!(e, JournalError::Corrupt { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "run directory file {} is damaged: it is missing, but its task directory holds done-markers",
            layout.display()
        )),
        "{e}"
    );
    let se = status(dir.path()).unwrap_err();
    assert_eq!(se.to_string(), e.to_string());
    assert!(dir.path().join("tasks/t/done.zarr").is_dir(), "left alone");
    let mut j = open(dir.path(), std::slice::from_ref(&t), true).unwrap();
    assert!(j.take_done()[0].is_none_done());
}

#[test]
fn an_interrupted_creation_is_recovered_silently() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("t", 6);
    finished_run(dir.path(), &t, &[]);
    // A crash while a task directory was built, in the new way (under tasks/.creating) ...
    let staging = dir.path().join("tasks/.creating/t");
    std::fs::create_dir_all(staging.parent().unwrap()).unwrap();
    std::fs::rename(dir.path().join("tasks/t"), &staging).unwrap();
    std::fs::remove_file(staging.join("layout.json")).unwrap();
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    assert!(j.take_done()[0].is_none_done());
    j.finish("finished").unwrap();
    drop(j);
    assert!(!dir.path().join("tasks/.creating").exists());
    assert!(dir.path().join("tasks/t/layout.json").is_file());
    assert!(dir.path().join("tasks/t/done.crc32").is_file());
    // ... and in the old way, before anything was written in the task directory.
    std::fs::remove_dir_all(dir.path().join("tasks/t")).unwrap();
    std::fs::create_dir(dir.path().join("tasks/t")).unwrap();
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    assert!(j.take_done()[0].is_none_done());
}

#[test]
fn a_log_naming_a_path_outside_the_tasks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let other = dir.path().join("other-run");
    let t = task("x", 4);
    finished_run(&other, &t, &[]);
    let victim = other.join("tasks/x/done.zarr/c/0");
    let before = std::fs::read(&victim).unwrap();
    finished_run(&run, &task("t", 4), &[]);
    for name in [
        "../../other-run/tasks/x",
        "../other-run",
        "..",
        ".",
        "a/b",
        "%2e.",
        "x%2f",
        "",
    ] {
        let mut wal = wal::Wal::open(&run.join("journal.wal")).unwrap();
        wal.write([(name, &[wal::record(1, 1)][..])].into_iter())
            .unwrap();
        drop(wal);
        let e = err(open(&run, &[task("t", 4)], false));
        assert!(
            e.to_string().starts_with(&format!(
                "run directory file {} is damaged: its batch names {name:?}, which is not a task directory name",
                run.join("journal.wal").display()
            )),
            "{e}"
        );
        assert!(
            status(&run)
                .unwrap_err()
                .to_string()
                .contains("not a task directory name")
        );
        assert_eq!(std::fs::read(&victim).unwrap(), before, "{name}");
    }
    // A valid name whose directory is gone is ignored (its markers were discarded).
    let mut wal = wal::Wal::open(&run.join("journal.wal")).unwrap();
    wal.write([("gone", &[wal::record(1, 1)][..])].into_iter())
        .unwrap();
    drop(wal);
    open(&run, &[task("t", 4)], false).unwrap();
}

#[test]
fn task_directory_names_are_recognised_exactly() {
    for id in [
        "smooth", "a/b c", "..", ".", "", "x.y-z_1", "ü/%", ".hidden", "a..b",
    ] {
        let name = task_dir_name(id);
        assert_eq!(task_id_of_dir_name(&name).as_deref(), Some(id), "{name}");
    }
    for name in [
        "",
        ".",
        "..",
        ".creating",
        "a/b",
        "%2e.",
        "%2E%2E",
        "%%",
        "%4",
        "%zz",
        "a%2fb",
        "%41",
        "../x",
        "a\0b",
        "%FF",
    ] {
        assert_eq!(task_id_of_dir_name(name), None, "{name:?}");
    }
    assert_eq!(task_id_of_dir_name(&"a".repeat(256)), None);
}

/// Flips one bit of a file.
fn flip(path: &Path, byte: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[byte] ^= 1;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_bit_flip_in_the_markers_is_an_error_unless_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("t", 20000);
    finished_run(dir.path(), &t, &[0, 16385]);
    let chunk = dir.path().join("tasks/t/done.zarr/c/0");
    // Block 16385 + 8 (byte 4098) looks done.
    flip(&chunk, 4098);
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert!(
        e.to_string().starts_with(&format!(
            "run directory file {} is damaged: checksum mismatch in bytes 4096 to 4999 (page 1",
            chunk.display()
        )),
        "{e}"
    );
    assert_eq!(status(dir.path()).unwrap_err().to_string(), e.to_string());
    // The checksum file itself damaged.
    flip(&chunk, 4098);
    let sums = dir.path().join("tasks/t/done.crc32");
    flip(&sums, 20);
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert!(
        e.to_string()
            .contains("checksum mismatch in bytes 0 to 4095 (page 0"),
        "{e}"
    );
    let mut j = open(dir.path(), std::slice::from_ref(&t), true).unwrap();
    assert!(j.take_done()[0].is_none_done());
    j.record_done(0, 3);
    j.finish("finished").unwrap();
    drop(j);
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    assert_eq!(j.take_done()[0].count(), 1);
}

#[test]
fn a_crash_between_pages_and_checksums_is_repaired_by_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("t", 36000);
    finished_run(dir.path(), &t, &[1, 20000]);
    let chunk = dir.path().join("tasks/t/done.zarr/c/0");
    let sums = dir.path().join("tasks/t/done.crc32");
    let good_sums = std::fs::read(&sums).unwrap();
    // The batch was logged; then page 0 reached the disk and its CRC did not, and page 2
    // (blocks 32768 ..) got its new CRC but not its bytes (page 1 is not in the batch).
    let records = [wal::record(2, 1), wal::record(34000, 2)];
    let mut wal = wal::Wal::open(&dir.path().join("journal.wal")).unwrap();
    wal.write([("t", &records[..])].into_iter()).unwrap();
    drop(wal);
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[0] |= 1 << 4;
    let mut page2 = bytes[8192..].to_vec();
    // Block 34000 is the first of its byte.
    page2[34000 / 4 - 8192] |= 2;
    std::fs::write(&chunk, &bytes).unwrap();
    let mut new_sums = good_sums.clone();
    new_sums[20 + 8..20 + 12].copy_from_slice(&crc32fast::hash(&page2).to_le_bytes());
    std::fs::write(&sums, &new_sums).unwrap();
    // `status` does not write: it skips the pages of the logged batch.
    let s = status(dir.path()).unwrap();
    assert_eq!(s.tasks[0].done, 3);
    // ... and counts the batch's markers (block 34000 failed) as the replay will write them.
    assert_eq!(s.tasks[0].failed, 1);
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    let done = j.take_done();
    assert_eq!(done[0].count(), 3);
    assert!(done[0].contains(1) && done[0].contains(2) && done[0].contains(20000));
    drop(j);
    assert_eq!(status(dir.path()).unwrap().tasks[0].failed, 1);
    // Without the log, the same damage is reported.
    std::fs::write(&chunk, &bytes).unwrap();
    std::fs::write(&sums, &good_sums).unwrap();
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert!(
        e.to_string()
            .contains("checksum mismatch in bytes 0 to 4095"),
        "{e}"
    );
}

#[test]
fn too_little_space_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // 2^50 blocks (2^48 bytes of markers): no file system here has 256 TiB free.
    let huge = Task::builder(
        "huge",
        Roi::new([0], [1 << 50]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .build()
    .unwrap();
    let e = err(open(&run, &[task("small", 3), huge.clone()], false));
    match &e {
        JournalError::NoSpace {
            path,
            needed,
            available,
        } => {
            assert_eq!(path, &run);
            assert!(*needed > 1 << 48 && needed > available, "{e}");
        }
        other => panic!("expected NoSpace, got {other}"),
    }
    assert!(
        e.to_string().contains(" bytes needed, ") && e.to_string().contains(" bytes available"),
        "{e}"
    );
    assert!(!run.exists(), "the run directory this open created is gone");
    // In an existing run directory: its files stay, no task directory is made.
    finished_run(&run, &task("small", 3), &[1]);
    let e = err(open(&run, &[task("small", 3), huge], false));
    assert!(matches!(e, JournalError::NoSpace { .. }), "{e}");
    let names: Vec<_> = std::fs::read_dir(run.join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["small"]);
    let mut j = open(&run, &[task("small", 3)], false).unwrap();
    assert_eq!(j.take_done()[0].count(), 1);
}

#[test]
fn a_missing_or_damaged_summary_is_counted_again() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("t", 5);
    finished_run(dir.path(), &t, &[0, 4]);
    let summary = dir.path().join("tasks/t/done.summary");
    let made = std::fs::read(&summary).unwrap();
    std::fs::remove_file(&summary).unwrap();
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    assert_eq!(j.take_done()[0].count(), 2);
    j.finish("finished").unwrap();
    drop(j);
    assert_eq!(status(dir.path()).unwrap().tasks[0].done, 2);
    // Both slots damaged: counted again too.
    let mut bytes = std::fs::read(&summary).unwrap();
    assert_eq!(bytes.len(), made.len());
    for b in &mut bytes[32..] {
        *b ^= 0xff;
    }
    std::fs::write(&summary, &bytes).unwrap();
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    assert_eq!(j.take_done()[0].count(), 2);
}

/// A task of `n` blocks writing one array with this id.
fn writing(id: &str, n: i64, array_id: Option<&str>) -> Task {
    Task::builder(
        id,
        Roi::new([0, 0], [10 * n, 10]),
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
    )
    .writes(crate::store::ChunkGrid {
        name: "out.zarr/seg".into(),
        offset: [0, 0].into(),
        chunk: [10, 10].into(),
        path: None,
        array_id: array_id.map(Into::into),
    })
    .build()
    .unwrap()
}

/// Every file under `dir` with its bytes (but the lock file), for "nothing was modified".
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n != "lock") {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

fn recorded_ids(dir: &Path, task: &str) -> Vec<Option<String>> {
    arrays::read(&dir.join("tasks").join(task), task)
        .unwrap()
        .unwrap()
        .arrays
        .into_iter()
        .map(|a| a.array_id)
        .collect()
}

#[test]
fn an_output_recreated_after_blocks_were_done_is_refused_unless_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(dir.path(), &[writing("t", 5, Some("aaa"))], false).unwrap();
    j.record_done(0, 0);
    j.record_done(0, 3);
    j.finish("finished").unwrap();
    drop(j);
    assert_eq!(recorded_ids(dir.path(), "t"), [Some("aaa".into())]);
    let before = snapshot(dir.path());
    let e = err(open(dir.path(), &[writing("t", 5, Some("bbb"))], false));
    match &e {
        JournalError::OutputReplaced {
            task,
            array,
            dir: d,
            done,
            recorded_id,
            current_id,
        } => {
            assert_eq!((task.as_str(), array.as_str()), ("t", "out.zarr/seg"));
            assert_eq!(d, dir.path());
            assert_eq!(*done, 2);
            assert_eq!((&**recorded_id, &**current_id), ("aaa", "bbb"));
        }
        other => panic!("expected OutputReplaced, got {other}"),
    }
    assert_eq!(
        e.to_string(),
        format!(
            "task \"t\": output array out.zarr/seg was recreated after 2 of the task's blocks were recorded done in run directory {} (its array id was aaa, now bbb): the data of those finished blocks is gone, and resuming would skip them and leave holes; start fresh (`Runner::fresh(true)`) to run every block again, or open the existing array with `ZarrArray::prepare` instead of recreating it so that a rerun keeps its data",
            dir.path().display()
        )
    );
    assert_eq!(snapshot(dir.path()), before, "nothing was modified");
    // The same array resumes.
    let mut j = open(dir.path(), &[writing("t", 5, Some("aaa"))], false).unwrap();
    assert_eq!(j.take_done()[0].count(), 2);
    drop(j);
    // Starting fresh records the new one.
    let mut j = open(dir.path(), &[writing("t", 5, Some("bbb"))], true).unwrap();
    assert!(j.take_done()[0].is_none_done());
    j.record_done(0, 1);
    j.finish("finished").unwrap();
    drop(j);
    assert_eq!(recorded_ids(dir.path(), "t"), [Some("bbb".into())]);
    open(dir.path(), &[writing("t", 5, Some("bbb"))], false).unwrap();
}

#[test]
fn an_output_recreated_before_any_block_was_done_is_recorded_again() {
    let dir = tempfile::tempdir().unwrap();
    let t = writing("t", 5, Some("aaa"));
    let mut j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    // A failed block does not count: it runs again.
    j.record_failure(0, &block(&t, 2), 0, "boom", true);
    j.finish("finished with failures").unwrap();
    drop(j);
    let mut j = open(dir.path(), &[writing("t", 5, Some("bbb"))], false).unwrap();
    j.record_done(0, 2);
    j.finish("finished").unwrap();
    drop(j);
    assert_eq!(recorded_ids(dir.path(), "t"), [Some("bbb".into())]);
    let e = err(open(dir.path(), &[writing("t", 5, Some("ccc"))], false));
    assert!(
        matches!(&e, JournalError::OutputReplaced { recorded_id, done: 1, .. } if &**recorded_id == "bbb"),
        "{e}"
    );
}

#[test]
fn an_output_without_an_id_now_is_a_warning_and_its_id_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    finished_run(dir.path(), &writing("t", 5, Some("aaa")), &[0]);
    // Made by another tool, or opened by something that does not read the id: resumes.
    let mut j = open(dir.path(), &[writing("t", 5, None)], false).unwrap();
    assert_eq!(j.take_done()[0].count(), 1);
    drop(j);
    assert_eq!(recorded_ids(dir.path(), "t"), [Some("aaa".into())]);
    let e = err(open(dir.path(), &[writing("t", 5, Some("bbb"))], false));
    assert!(matches!(e, JournalError::OutputReplaced { .. }), "{e}");
    // Arrays without ids throughout: nothing to compare.
    let other = tempfile::tempdir().unwrap();
    finished_run(other.path(), &writing("t", 5, None), &[0]);
    assert_eq!(recorded_ids(other.path(), "t"), [None]);
    let mut j = open(other.path(), &[writing("t", 5, Some("new"))], false).unwrap();
    assert_eq!(j.take_done()[0].count(), 1);
    drop(j);
    assert_eq!(recorded_ids(other.path(), "t"), [Some("new".into())]);
}

#[test]
fn the_logged_batch_counts_for_the_output_check() {
    let dir = tempfile::tempdir().unwrap();
    finished_run(dir.path(), &writing("t", 5, Some("aaa")), &[]);
    // A crash after the log was written, before the markers were.
    let mut wal = wal::Wal::open(&dir.path().join("journal.wal")).unwrap();
    wal.write([("t", &[wal::record(4, markers::DONE)][..])].into_iter())
        .unwrap();
    drop(wal);
    let before = snapshot(dir.path());
    let e = err(open(dir.path(), &[writing("t", 5, Some("bbb"))], false));
    assert!(
        matches!(e, JournalError::OutputReplaced { done: 1, .. }),
        "{e}"
    );
    assert_eq!(snapshot(dir.path()), before, "the log was not replayed");
    let mut j = open(dir.path(), &[writing("t", 5, Some("aaa"))], false).unwrap();
    assert!(j.take_done()[0].contains(4));
}

#[test]
fn a_run_directory_without_a_record_of_the_outputs_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    finished_run(dir.path(), &writing("t", 5, Some("aaa")), &[0, 1]);
    let record = dir.path().join("tasks/t/arrays.json");
    // An older version wrote none.
    std::fs::remove_file(&record).unwrap();
    let mut j = open(dir.path(), &[writing("t", 5, Some("bbb"))], false).unwrap();
    assert_eq!(j.take_done()[0].count(), 2);
    drop(j);
    assert_eq!(recorded_ids(dir.path(), "t"), [Some("bbb".into())]);
    // A task that declares no arrays records an empty list; declaring one later records it.
    finished_run(dir.path(), &task("u", 3), &[0]);
    let u = arrays::read(&dir.path().join("tasks/u"), "u")
        .unwrap()
        .unwrap();
    assert!(u.arrays.is_empty());
}

#[test]
fn a_damaged_record_of_the_outputs_is_an_error_unless_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let t = writing("t", 5, Some("aaa"));
    finished_run(dir.path(), &t, &[0]);
    let record = dir.path().join("tasks/t/arrays.json");
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replace("aaa", "aab")).unwrap();
    let e = err(open(dir.path(), std::slice::from_ref(&t), false));
    assert_eq!(
        e.to_string(),
        format!(
            "run directory file {} is damaged: its SHA-256 does not match its fields (edited by hand?); move the run directory away or start fresh (its finished blocks will run again)",
            record.display()
        )
    );
    assert_eq!(status(dir.path()).unwrap_err().to_string(), e.to_string());
    let mut j = open(dir.path(), std::slice::from_ref(&t), true).unwrap();
    assert!(j.take_done()[0].is_none_done());
    drop(j);
    assert_eq!(recorded_ids(dir.path(), "t"), [Some("aaa".into())]);
}

#[test]
fn status_and_progress_count_the_logged_batch_and_a_rerun_skips_its_blocks() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let t = task("t", 6);
    finished_run(dir.path(), &t, &[0]);
    // A crash after the log was written, before the markers were: blocks 2 and 3 done
    // (3 after failing once), block 5 failed.
    let records = [
        wal::record(2, markers::DONE),
        wal::record(3, markers::FAILED),
        wal::record(5, markers::FAILED),
        wal::record(3, markers::DONE),
    ];
    let mut wal = wal::Wal::open(&dir.path().join("journal.wal")).unwrap();
    wal.write([("t", &records[..])].into_iter()).unwrap();
    drop(wal);
    let before = snapshot(dir.path());
    let s = status(dir.path()).unwrap();
    let ts = &s.tasks[0];
    assert_eq!((ts.total, ts.done, ts.failed, ts.never_run), (6, 3, 1, 2));
    assert_eq!(ts.failed_blocks.len(), 1);
    assert_eq!(ts.failed_blocks[0].grid_index, 5);
    let p = RunDir::open(dir.path()).unwrap().progress().unwrap();
    assert_eq!((p.done(), p.failed()), (3, 1));
    assert!(p.has_progress());
    assert_eq!(p.task("t").map(TaskProgress::never_run), Some(2));
    assert_eq!(snapshot(dir.path()), before, "status wrote nothing");
    // Half way through applying the batch (block 2's marker reached the disk): the same.
    let chunk = dir.path().join("tasks/t/done.zarr/c/0");
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[0] |= markers::DONE << 4;
    std::fs::write(&chunk, &bytes).unwrap();
    let ts = status(dir.path()).unwrap().tasks.remove(0);
    assert_eq!((ts.done, ts.failed), (3, 1));
    // A rerun skips the done blocks (0, 2, 3) and runs the others.
    let calls = std::sync::Arc::new(AtomicU64::new(0));
    let c = std::sync::Arc::clone(&calls);
    let rerun = Task::builder(
        "t",
        Roi::new([0, 0], [60, 10]),
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
    )
    .process(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
    .build()
    .unwrap();
    let summary = crate::Runner::new()
        .progress(crate::Progress::Never)
        .print_summary(false)
        .run_dir(dir.path())
        .run([rerun])
        .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(summary.task("t").unwrap().skipped, 3);
    let ts = status(dir.path()).unwrap().tasks.remove(0);
    assert_eq!((ts.done, ts.failed), (6, 0));
}

#[test]
fn a_run_directory_is_read_without_a_lock_or_a_write() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!RunDir::exists(dir.path()));
    let e = RunDir::open(dir.path()).unwrap_err();
    assert!(matches!(e, JournalError::NotARunDir { .. }), "{e}");
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        RunDir::open(&file),
        Err(JournalError::NotARunDir { .. })
    ));
    // A run directory whose run has recorded nothing yet.
    let held = open(dir.path(), &[task("t", 3)], false).unwrap();
    assert!(RunDir::exists(dir.path()));
    let rd = RunDir::open(dir.path()).unwrap();
    assert_eq!(rd.path(), dir.path());
    let p = rd.progress().unwrap();
    assert!(!p.has_progress());
    assert_eq!(p.task("t").map(|t| (t.total, t.done)), Some((3, 0)));
    assert_eq!(rd.status().unwrap().state, RunState::Running);
    drop(held);
    finished_run(dir.path(), &task("t", 3), &[1]);
    let p = rd.progress().unwrap();
    assert!(p.has_progress());
    assert_eq!(p.done(), 1);
    assert!(!p.tasks[0].is_complete());
}

#[test]
fn the_mask_record_follows_the_mask_and_says_when_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let t = task("m", 2);
    let j = open(dir.path(), std::slice::from_ref(&t), false).unwrap();
    let path = dir.path().join("tasks/m").join(MASK);
    let a = serde_json::json!({"path": "a.zarr/mask", "predicate": "nonzero"});
    let b = serde_json::json!({"path": "b.zarr/mask", "predicate": "nonzero"});
    // The first record is no change; the same again neither.
    assert!(!j.record_mask("m", Some(&a)).unwrap());
    assert!(!j.record_mask("m", Some(&a)).unwrap());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), a.to_string());
    assert!(j.record_mask("m", Some(&b)).unwrap());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), b.to_string());
    // Dropping the mask is a change, and removes the record.
    assert!(j.record_mask("m", None).unwrap());
    assert!(!path.exists());
    assert!(!j.record_mask("m", None).unwrap());
    // A damaged record is replaced without an error.
    std::fs::write(&path, b"{not json").unwrap();
    assert!(!j.record_mask("m", Some(&a)).unwrap());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), a.to_string());
}

/// Replaces task `t`'s markers in `dir` by version 1 ones (one `uint8` per block in one
/// chunk, with `done.crc32` version 1 and no summary: what earlier versions wrote).
fn make_v1(dir: &Path, t: &Task, values: &[(u64, u8)]) {
    let layout = t.layout();
    let tdir = dir.join("tasks").join(task_dir_name(&layout.task_id));
    let array = tdir.join("done.zarr");
    std::fs::remove_dir_all(&array).unwrap();
    std::fs::remove_file(tdir.join("done.summary")).unwrap();
    std::fs::remove_file(tdir.join("done.crc32")).unwrap();
    v1::create(&array, &layout.grid_shape, layout.num_blocks).unwrap();
    let mut w = v1::MarkerWriter::open(&array, layout.grid_shape.len(), layout.num_blocks).unwrap();
    for &(i, v) in values {
        w.set(i, v).unwrap();
    }
    w.flush().unwrap();
}

/// A run directory of version 1 with task `t` of 9,000 blocks (three v1 pages): done blocks
/// 1, 3, 4 and 8,999, failed 6.
fn v1_fixture(dir: &Path) -> Task {
    let t = task("t", 9000);
    finished_run(dir, &t, &[]);
    make_v1(
        dir,
        &t,
        &[
            (1, markers::DONE),
            (3, markers::DONE),
            (4, markers::DONE),
            (8999, markers::DONE),
            (6, markers::FAILED),
        ],
    );
    t
}

const V1_DONE: [u64; 4] = [1, 3, 4, 8999];

fn assert_v2_with(dir: &Path, t: &Task, done: &[u64]) {
    let mut j = open(dir, std::slice::from_ref(t), false).unwrap();
    let set = j.take_done().remove(0);
    j.finish("finished").unwrap();
    drop(j);
    assert_eq!(set.count(), done.len() as u64);
    for i in 0..9000 {
        assert_eq!(set.contains(i), done.contains(&i), "block {i}");
    }
    let tdir = dir.join("tasks/t");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tdir.join("done.zarr/zarr.json")).unwrap()).unwrap();
    assert_eq!(meta["attributes"]["blockwise"]["version"], 2);
    assert!(tdir.join("done.zarr/c/0").is_file() && tdir.join("done.summary").is_file());
    assert!(!tdir.join("done.v1.zarr").exists() && !tdir.join("done.v2.tmp").exists());
    let ts = status(dir).unwrap().tasks.remove(0);
    assert_eq!((ts.done, ts.failed), (done.len() as u64, 1));
}

#[test]
fn a_version_1_run_directory_is_migrated_and_the_rerun_skips_exactly_its_done_blocks() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    v1_fixture(dir.path());
    // `status` reads version 1 without migrating it.
    let ts = status(dir.path()).unwrap().tasks.remove(0);
    assert_eq!((ts.done, ts.failed, ts.never_run), (4, 1, 8995));
    assert!(dir.path().join("tasks/t/done.zarr/c/0/0").is_file());
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let count = std::sync::Arc::new(AtomicU64::new(0));
    let (c, k) = (std::sync::Arc::clone(&calls), std::sync::Arc::clone(&count));
    let rerun = Task::builder(
        "t",
        Roi::new([0, 0], [90000, 10]),
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
    )
    .process(move |b| {
        k.fetch_add(1, Ordering::SeqCst);
        if b.grid_index < 10 {
            crate::util::lock(&c).push(b.grid_index);
        }
        Ok(())
    })
    .build()
    .unwrap();
    let summary = crate::Runner::new()
        .progress(crate::Progress::Never)
        .print_summary(false)
        .run_dir(dir.path())
        .run([rerun])
        .unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_eq!(count.load(Ordering::SeqCst), 9000 - 4);
    assert_eq!(summary.task("t").unwrap().skipped, 4);
    let mut first: Vec<u64> = crate::util::lock(&calls).clone();
    first.sort_unstable();
    assert_eq!(first, [0, 2, 5, 6, 7, 8, 9]);
    let ts = status(dir.path()).unwrap().tasks.remove(0);
    assert_eq!((ts.done, ts.failed), (9000, 0));
    assert!(!dir.path().join("tasks/t/done.zarr/c/0/0").exists());
}

#[test]
fn a_crash_during_the_migration_loses_no_done_marker() {
    let tdir = |d: &Path| d.join("tasks/t");
    let stage = |d: &Path| {
        let t = task("t", 9000);
        let layout = t.layout();
        markers::build_v2(
            &tdir(d).join("done.zarr"),
            &layout.grid_shape,
            layout.num_blocks,
            &std::collections::HashSet::new(),
        )
        .unwrap();
    };
    // The new files half written.
    let dir = tempfile::tempdir().unwrap();
    let t = v1_fixture(dir.path());
    stage(dir.path());
    let tmp = tdir(dir.path()).join("done.v2.tmp");
    std::fs::remove_file(tmp.join("done.summary")).unwrap();
    std::fs::write(tmp.join("done.zarr/c/0"), b"half").unwrap();
    assert_v2_with(dir.path(), &t, &V1_DONE);
    // Complete, and the old array moved aside.
    let dir = tempfile::tempdir().unwrap();
    let t = v1_fixture(dir.path());
    stage(dir.path());
    let d = tdir(dir.path());
    std::fs::rename(d.join("done.zarr"), d.join("done.v1.zarr")).unwrap();
    assert_v2_with(dir.path(), &t, &V1_DONE);
    // ... and the new array moved into place, not its checksums (the old ones are there).
    let dir = tempfile::tempdir().unwrap();
    let t = v1_fixture(dir.path());
    stage(dir.path());
    let d = tdir(dir.path());
    std::fs::rename(d.join("done.zarr"), d.join("done.v1.zarr")).unwrap();
    std::fs::rename(d.join("done.v2.tmp/done.zarr"), d.join("done.zarr")).unwrap();
    assert_v2_with(dir.path(), &t, &V1_DONE);
    // Everything moved; the old array not yet removed.
    let dir = tempfile::tempdir().unwrap();
    let t = v1_fixture(dir.path());
    stage(dir.path());
    let d = tdir(dir.path());
    std::fs::rename(d.join("done.zarr"), d.join("done.v1.zarr")).unwrap();
    for f in ["done.zarr", "done.crc32", "done.summary"] {
        std::fs::rename(d.join("done.v2.tmp").join(f), d.join(f)).unwrap();
    }
    std::fs::remove_dir(d.join("done.v2.tmp")).unwrap();
    assert_v2_with(dir.path(), &t, &V1_DONE);
}

#[test]
fn a_logged_batch_of_a_version_1_run_directory_is_replayed_into_the_migrated_markers() {
    let dir = tempfile::tempdir().unwrap();
    let t = v1_fixture(dir.path());
    // The run crashed while applying a logged batch: block 8's byte reached the disk, its
    // page's CRC did not.
    let records = [
        wal::record(8, markers::DONE),
        wal::record(5000, markers::DONE),
    ];
    let mut wal = wal::Wal::open(&dir.path().join("journal.wal")).unwrap();
    wal.write([("t", &records[..])].into_iter()).unwrap();
    drop(wal);
    let chunk = dir.path().join("tasks/t/done.zarr/c/0/0");
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[8] = markers::DONE;
    std::fs::write(&chunk, &bytes).unwrap();
    let ts = status(dir.path()).unwrap().tasks.remove(0);
    assert_eq!(ts.done, 6);
    assert_v2_with(dir.path(), &t, &[1, 3, 4, 8, 5000, 8999]);
}

/// The environment variable that makes [`zz_migration_crash_child`] open the run directory it
/// names.
#[cfg(feature = "crash-points")]
const MIGKILL_DIR: &str = "BLOCKWISE_MIGKILL_DIR";

/// The child of [`a_process_killed_during_the_migration_loses_no_done_marker`]: opens the run
/// directory (migrating its markers) and finishes; does nothing when run as a test.
#[cfg(feature = "crash-points")]
#[test]
fn zz_migration_crash_child() {
    let Some(dir) = std::env::var_os(MIGKILL_DIR) else {
        return;
    };
    let t = task("t", 9000);
    let mut j = open(Path::new(&dir), std::slice::from_ref(&t), false).unwrap();
    j.finish("finished").unwrap();
}

/// Runs [`zz_migration_crash_child`] on `dir` with the crash point `point`; returns whether it
/// was killed by SIGKILL (otherwise it must have succeeded).
#[cfg(feature = "crash-points")]
fn migrate_in_child(dir: &Path, point: &str) -> bool {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "journal::tests::zz_migration_crash_child",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(MIGKILL_DIR, dir)
        .env(markers::CRASH_POINT_VAR, point)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the migration child hung at {point}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = child.wait_with_output().unwrap();
    let killed = status.signal() == Some(nix::sys::signal::Signal::SIGKILL as i32);
    assert!(
        killed || status.success(),
        "the migration child at {point}: {status}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    killed
}

/// A rerun of [`v1_fixture`]'s task through [`crate::Runner`]: it must process exactly the
/// blocks not done in the fixture, and leave valid version 2 markers with every block done.
#[cfg(feature = "crash-points")]
fn rerun_processes_exactly_the_not_done_blocks(dir: &Path, context: &str) {
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let c = std::sync::Arc::clone(&calls);
    let rerun = Task::builder(
        "t",
        Roi::new([0, 0], [90000, 10]),
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
    )
    .process(move |b| {
        crate::util::lock(&c).push(b.grid_index);
        Ok(())
    })
    .build()
    .unwrap();
    let summary = crate::Runner::new()
        .progress(crate::Progress::Never)
        .print_summary(false)
        .run_dir(dir)
        .run([rerun])
        .unwrap();
    assert!(summary.is_success(), "{context}: {summary}");
    assert_eq!(summary.task("t").unwrap().skipped, 4, "{context}");
    let mut done: Vec<u64> = crate::util::lock(&calls).clone();
    done.sort_unstable();
    let expected: Vec<u64> = (0..9000).filter(|i| !V1_DONE.contains(i)).collect();
    assert!(
        done == expected,
        "{context}: the rerun processed other blocks"
    );
    let tdir = dir.join("tasks/t");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tdir.join("done.zarr/zarr.json")).unwrap()).unwrap();
    assert_eq!(meta["attributes"]["blockwise"]["version"], 2, "{context}");
    assert!(
        !tdir.join("done.v1.zarr").exists() && !tdir.join("done.v2.tmp").exists(),
        "{context}"
    );
    let ts = status(dir).unwrap().tasks.remove(0);
    assert_eq!((ts.done, ts.failed), (9000, 0), "{context}");
}

/// A child process SIGKILLed at every crash point of the migration from version 1, then at
/// every later point of the resumed migration: reopening loses no done marker, invents none,
/// and leaves valid version 2 markers (`status` and a rerun agree).
#[cfg(feature = "crash-points")]
#[test]
fn a_process_killed_during_the_migration_loses_no_done_marker() {
    let points = markers::CRASH_POINTS;
    let moved_aside = points
        .iter()
        .position(|&p| p == "migrate:moved-aside")
        .unwrap();
    for (k, &first) in points.iter().enumerate() {
        // Killed once, then opened by the journal.
        let dir = tempfile::tempdir().unwrap();
        let t = v1_fixture(dir.path());
        assert!(migrate_in_child(dir.path(), first), "{first} not reached");
        assert_v2_with(dir.path(), &t, &V1_DONE);
        // Killed once, then at a later point of the resumed migration, then rerun.
        for (j, &second) in points.iter().enumerate().skip(k + 1) {
            let dir = tempfile::tempdir().unwrap();
            v1_fixture(dir.path());
            assert!(migrate_in_child(dir.path(), first), "{first} not reached");
            // A migration resumed after the old array was moved aside only finishes the
            // moves: it does not pass the point between the move and its directory sync.
            let reachable = !(k >= moved_aside && j == moved_aside + 1);
            assert_eq!(
                migrate_in_child(dir.path(), second),
                reachable,
                "{second} after {first}"
            );
            rerun_processes_exactly_the_not_done_blocks(dir.path(), &format!("{first}, {second}"));
        }
    }
}
