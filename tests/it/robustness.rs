//! Bad inputs around run directories and arrays, through the API and the CLI: each gives a clear
//! error, runs no block it should not, and loses nothing already done.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use blockwise::journal::JournalError;
use blockwise::{Block, BlockError, Error, Progress, Roi, Runner, Task};

use crate::support::empty_dir;

/// A 1D task of `n` blocks that counts its calls.
fn counting(n: i64, calls: &Arc<AtomicU64>) -> Task {
    let c = Arc::clone(calls);
    Task::builder(
        "t",
        Roi::new([0], [n]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |_: &Block| {
        c.fetch_add(1, Ordering::SeqCst);
        Ok::<(), BlockError>(())
    })
    .build()
    .unwrap()
}

fn runner(dir: &Path) -> Runner {
    Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .run_dir(dir)
}

/// Every file of a directory tree with its bytes (to show nothing changed).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n != "lock" && n != "run.json")
            {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let page = [0u8; 4096];
    while f.write_all(&page).and_then(|()| f.sync_data()).is_ok() {}
}

fn journal_error(r: Result<blockwise::RunSummary, Error>) -> JournalError {
    match r {
        Err(Error::Journal(e)) => e,
        other => panic!("expected a run directory error, got {other:?}"),
    }
}

#[test]
fn damaged_markers_stop_the_run_before_any_block_and_are_left_alone() {
    let dir = empty_dir("robustness", "damaged");
    let calls = Arc::new(AtomicU64::new(0));
    let summary = runner(&dir).run([counting(50, &calls)]).unwrap();
    assert_eq!(summary.task("t").unwrap().completed, 50);
    let chunk = dir.join("tasks/t/done.zarr/c/0");
    let layout = dir.join("tasks/t/layout.json");
    let good_chunk = std::fs::read(&chunk).unwrap();
    let good_layout = std::fs::read(&layout).unwrap();

    type Damage = (&'static str, Box<dyn Fn()>, &'static str);
    let cases: Vec<Damage> = vec![
        (
            "truncated marker chunk",
            Box::new({
                let chunk = chunk.clone();
                let good = good_chunk.clone();
                move || std::fs::write(&chunk, &good[..5]).unwrap()
            }),
            "5 bytes, expected 13 (a chunk of the marker array); it was truncated",
        ),
        (
            "a marker that is not 0, 1 or 2",
            Box::new({
                let chunk = chunk.clone();
                let good = good_chunk.clone();
                move || {
                    let mut bad = good.clone();
                    bad[7] = 0xff;
                    std::fs::write(&chunk, bad).unwrap();
                }
            }),
            "byte 7 is 255; markers are 2-bit values 0 (not done), 1 (done) or 2 (failed)",
        ),
        (
            "a missing marker chunk",
            Box::new({
                let chunk = chunk.clone();
                move || std::fs::remove_file(&chunk).unwrap()
            }),
            "run directory: cannot open",
        ),
        (
            "a bit flip that leaves a valid marker",
            Box::new({
                let chunk = chunk.clone();
                let good = good_chunk.clone();
                move || {
                    let mut bad = good.clone();
                    assert_eq!(bad[7], 0b0101_0101, "four done blocks");
                    bad[7] ^= 1;
                    std::fs::write(&chunk, bad).unwrap();
                }
            }),
            "checksum mismatch in bytes 0 to 12 (page 0",
        ),
        (
            "a deleted layout",
            Box::new({
                let layout = layout.clone();
                move || std::fs::remove_file(&layout).unwrap()
            }),
            "layout.json is damaged: it is missing, but its task directory holds done-markers",
        ),
        (
            "a layout edited by hand",
            Box::new({
                let layout = layout.clone();
                let good = String::from_utf8(good_layout.clone()).unwrap();
                move || {
                    let edited = good.replace("\"num_blocks\": 50", "\"num_blocks\": 51");
                    assert_ne!(edited, good);
                    std::fs::write(&layout, edited).unwrap();
                }
            }),
            "its SHA-256 does not match its fields",
        ),
    ];
    for (what, damage, message) in cases {
        std::fs::write(&chunk, &good_chunk).unwrap();
        std::fs::write(&layout, &good_layout).unwrap();
        damage();
        let before = snapshot(&dir);
        calls.store(0, Ordering::SeqCst);
        let e = journal_error(runner(&dir).run([counting(50, &calls)]));
        let text = e.to_string();
        assert!(text.contains(message), "{what}: {text}");
        assert!(
            text.contains("move the run directory away or start fresh")
                || text.contains("cannot open"),
            "{what}: {text}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{what}: blocks ran");
        assert_eq!(snapshot(&dir), before, "{what}: the run directory changed");
    }
    // A garbage write-ahead log is a batch cut short: ignored, nothing lost.
    std::fs::write(&chunk, &good_chunk).unwrap();
    std::fs::write(&layout, &good_layout).unwrap();
    std::fs::write(dir.join("journal.wal"), b"BWAL\x01\0\0\0garbage").unwrap();
    calls.store(0, Ordering::SeqCst);
    let s = runner(&dir).run([counting(50, &calls)]).unwrap();
    assert_eq!(
        (s.task("t").unwrap().skipped, calls.load(Ordering::SeqCst)),
        (50, 0)
    );
    // Starting fresh recovers from damage (and redoes the blocks).
    std::fs::write(&chunk, b"junk").unwrap();
    std::fs::remove_file(&layout).unwrap();
    let s = runner(&dir)
        .fresh(true)
        .run([counting(50, &calls)])
        .unwrap();
    assert_eq!(
        (s.task("t").unwrap().skipped, calls.load(Ordering::SeqCst)),
        (0, 50)
    );
}

#[test]
fn a_run_directory_of_another_layout_is_refused() {
    let dir = empty_dir("robustness", "layout");
    let calls = Arc::new(AtomicU64::new(0));
    assert!(
        runner(&dir)
            .run([counting(50, &calls)])
            .unwrap()
            .is_success()
    );
    let before = snapshot(&dir);
    let e = journal_error(runner(&dir).run([counting(60, &calls)]));
    assert!(matches!(e, JournalError::LayoutMismatch { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "task \"t\": run directory {} holds done-markers for a different block layout (total ROI [0:50] (50) then, [0:60] (60) now; blocks [50] then, [60] now); use another run directory, or start fresh to discard them",
            dir.display()
        )
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        50,
        "no block of the refused run ran"
    );
    assert_eq!(snapshot(&dir), before);
    let s = runner(&dir)
        .fresh(true)
        .run([counting(60, &calls)])
        .unwrap();
    assert_eq!(s.task("t").unwrap().completed, 60);
}

#[test]
fn an_unusable_run_directory_is_an_error_before_any_block() {
    let dir = empty_dir("robustness", "unwritable");
    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    for bad in [file.join("run"), PathBuf::from("/proc/blockwise-run")] {
        let e = journal_error(runner(&bad).run([counting(5, &calls)]));
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("run directory: cannot create {}", bad.display())),
            "{text}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

#[test]
fn a_run_directory_in_use_is_refused() {
    let dir = empty_dir("robustness", "locked");
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let holder_dir = dir.clone();
    let holder = std::thread::spawn(move || {
        let task = Task::builder(
            "t",
            Roi::new([0], [1]),
            Roi::new([0], [1]),
            Roi::new([0], [1]),
        )
        .process(move |_: &Block| -> Result<(), BlockError> {
            started_tx.send(()).map_err(|e| e.to_string())?;
            release_rx
                .recv_timeout(Duration::from_secs(60))
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .build()
        .unwrap();
        runner(&holder_dir).run([task])
    });
    started_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let e = journal_error(runner(&dir).run([counting(1, &calls)]));
    assert_eq!(
        e.to_string(),
        format!(
            "run directory {} is in use by another run (its lock file is held)",
            dir.display()
        )
    );
    let st = blockwise::journal::status(&dir).unwrap();
    assert_eq!(st.state, blockwise::journal::RunState::Running);
    release_tx.send(()).unwrap();
    assert!(holder.join().unwrap().unwrap().is_success());
    assert_eq!(
        blockwise::journal::status(&dir).unwrap().state,
        blockwise::journal::RunState::Finished
    );
}

/// Mounts a tmpfs of `size` at `dir` (root only); `None` where that is not possible.
fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    std::fs::create_dir_all(dir).ok()?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mount(dir.to_owned()))
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_with_an_error_and_a_rerun_finishes() {
    let dir = empty_dir("robustness", "disk-full");
    let mnt = dir.join("mnt");
    let Some(mount) = tmpfs(&mnt, "64k") else {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the ulimit test covers disk-full"
        );
        return;
    };
    let calls = Arc::new(AtomicU64::new(0));
    let free = || {
        let s = nix::sys::statvfs::statvfs(&mnt).unwrap();
        s.blocks_available() * s.fragment_size()
    };
    let free_before = free();
    // Too many blocks for the markers: refused at the start, before any block, naming the
    // bytes needed and available, and leaving nothing behind (the disk is not left full).
    let big = mnt.join("big");
    let e = journal_error(runner(&big).run([counting(1_000_000, &calls)]));
    assert!(matches!(e, JournalError::NoSpace { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "run directory {}: not enough free space for the done-markers: ",
            big.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(" bytes needed, ") && text.contains(" bytes available"),
        "{text}"
    );
    if let JournalError::NoSpace {
        needed, available, ..
    } = e
    {
        // Two bits per block.
        assert!(needed >= 250_000 && available < needed, "{text}");
        assert_eq!(available, free_before, "{text}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(!big.exists(), "a run directory was left behind");
    assert_eq!(free(), free_before);
    // In a run directory that exists, the same: nothing of the refused task is created.
    std::fs::create_dir(&big).unwrap();
    let e = journal_error(runner(&big).run([counting(1_000_000, &calls)]));
    assert!(matches!(e, JournalError::NoSpace { .. }), "{e}");
    assert!(
        std::fs::read_dir(big.join("tasks"))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            || std::fs::read_dir(big.join("tasks"))
                .unwrap()
                .next()
                .is_none(),
        "a task directory was left behind"
    );
    assert_eq!(free(), free_before);
    std::fs::remove_dir_all(&big).unwrap();
    // The markers fit, their log does not: the first block fills the disk (whatever the
    // timing, no batch of the log fits then), and the run stops with an error at its first
    // flush.
    let run_dir = mnt.join("run");
    let filler = mnt.join("filler");
    let filled = Arc::new(std::sync::Once::new());
    let c = Arc::clone(&calls);
    let filling = Task::builder(
        "t",
        Roi::new([0], [20_000]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(move |_: &Block| {
        filled.call_once(|| fill(&filler));
        c.fetch_add(1, Ordering::SeqCst);
        Ok::<(), BlockError>(())
    })
    .build()
    .unwrap();
    let e = journal_error(runner(&run_dir).run([filling]));
    assert!(e.to_string().contains("No space left on device"), "{e}");
    assert!(e.to_string().contains("journal.wal"), "{e}");
    // Nothing is marked that was not flushed; with room again, the rerun finishes the rest.
    let st = blockwise::journal::status(&run_dir).unwrap();
    // Recording the end needs room too: the run is shown as stopped, or (when even that
    // could not be written) as ended without finishing.
    assert!(
        matches!(
            st.state,
            blockwise::journal::RunState::Stopped(_) | blockwise::journal::RunState::Crashed
        ),
        "{st}"
    );
    eprintln!("{e}\n{st}");
    let done = st.tasks[0].done;
    let ok = Command::new("mount")
        .args(["-o", "remount,size=8m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success());
    calls.store(0, Ordering::SeqCst);
    let s = runner(&run_dir).run([counting(20_000, &calls)]).unwrap();
    assert!(s.is_success());
    assert_eq!(s.task("t").unwrap().skipped, done);
    assert_eq!(calls.load(Ordering::SeqCst), 20_000 - done);
    drop(mount);
}

#[cfg(feature = "cli")]
#[test]
fn a_file_size_limit_is_a_clear_cli_error() {
    // `ulimit -f` makes writes past the limit fail (EFBIG; SIGXFSZ ignored), like a full disk.
    let dir = empty_dir("robustness", "ulimit");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 256; exec {} bench noop --blocks 2000000 --run-dir {}",
            env!("CARGO_BIN_EXE_blockwise"),
            dir.join("run").display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .starts_with("error: running the no-op tasks: run directory: cannot reserve space for"),
        "{stderr}"
    );
    assert!(stderr.contains("File too large"), "{stderr}");
    // The reservation failed after the free-space check passed: nothing is left behind.
    assert!(
        !dir.join("run").exists(),
        "left behind: {:?}",
        snapshot(&dir.join("run"))
    );
}

#[cfg(feature = "zarr")]
#[test]
fn a_damaged_input_chunk_fails_its_block_only_and_a_rerun_after_repair_does_the_rest() {
    use blockwise::store::{ArraySpec, DataType, ZarrArray};
    let dir = empty_dir("robustness", "input");
    let spec = ArraySpec::new(
        Roi::new([0, 0], [40, 40]),
        [1, 1],
        DataType::U8,
        vec![10, 10],
    );
    let input = ZarrArray::create(dir.join("in.zarr"), "in", &spec).unwrap();
    input
        .write(
            &input.roi(),
            ndarray::ArrayD::<u8>::from_elem(ndarray::IxDyn(&[40, 40]), 7).view(),
        )
        .unwrap();
    let output = Arc::new(ZarrArray::create(dir.join("out.zarr"), "out", &spec).unwrap());
    let input = Arc::new(ZarrArray::open(dir.join("in.zarr"), "in").unwrap());
    // Damage one chunk of the input.
    let chunk = dir.join("in.zarr/in/c/1/2");
    assert!(chunk.is_file(), "chunk layout changed?");
    let good = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, b"\x01\x02garbage").unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let task = |calls: &Arc<AtomicU64>| {
        let (i, o, c) = (Arc::clone(&input), Arc::clone(&output), Arc::clone(calls));
        Task::builder(
            "copy",
            input.roi(),
            Roi::new([0, 0], [10, 10]),
            Roi::new([0, 0], [10, 10]),
        )
        .writes(output.as_ref())
        .max_retries(0)
        .process(move |b: &Block| -> Result<(), BlockError> {
            c.fetch_add(1, Ordering::SeqCst);
            let data = i.read::<u8>(b.write_roi())?;
            o.write(b.write_roi(), &data)?;
            Ok(())
        })
        .build()
        .unwrap()
    };
    let run_dir = dir.join("run");
    let s = runner(&run_dir).run([task(&calls)]).unwrap();
    let st = s.task("copy").unwrap();
    assert_eq!((st.completed, st.failed), (15, 1));
    let status = blockwise::journal::status(&run_dir).unwrap();
    let t = &status.tasks[0];
    assert_eq!((t.done, t.failed, t.never_run), (15, 1, 0));
    assert_eq!(t.failed_blocks[0].write_roi, "[10:20, 20:30] (10, 10)");
    assert!(
        t.failed_blocks[0].error.contains("in.zarr"),
        "{}",
        t.failed_blocks[0].error
    );
    // Repair the input: only the failed block runs again.
    std::fs::write(&chunk, good).unwrap();
    calls.store(0, Ordering::SeqCst);
    let s = runner(&run_dir).run([task(&calls)]).unwrap();
    assert!(s.is_success());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let out = output.read::<u8>(&output.roi()).unwrap();
    assert!(out.iter().all(|&v| v == 7));
}

#[test]
fn a_task_without_blocks_and_a_task_added_later() {
    let dir = empty_dir("robustness", "empty-task");
    let empty = Task::builder(
        "empty",
        Roi::new([0], [5]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .process(|_: &Block| Ok::<(), BlockError>(()))
    .build()
    .unwrap();
    assert_eq!(empty.num_blocks(), 0);
    for _ in 0..2 {
        let s = runner(&dir).run([empty.clone()]).unwrap();
        assert!(s.is_success());
    }
    // A task that was not in the first run gets its own markers; the old ones stay.
    let calls = Arc::new(AtomicU64::new(0));
    let s = runner(&dir).run([counting(7, &calls)]).unwrap();
    assert_eq!(s.task("t").unwrap().completed, 7);
    let st = blockwise::journal::status(&dir).unwrap();
    let ids: Vec<&str> = st.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["t", "empty"]);
}

/// Runs `f` on a thread and waits at most a minute for it: a regression that hangs (a FIFO
/// opened for reading waits for a writer) fails the test instead of the whole suite.
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what}: hung (no answer within a minute)"))
}

#[test]
fn a_fifo_or_directory_in_place_of_a_run_directory_file_is_an_error_not_a_hang() {
    let dir = empty_dir("robustness", "fifo");
    let calls = Arc::new(AtomicU64::new(0));
    let failing = || {
        Task::builder(
            "t",
            Roi::new([0], [50]),
            Roi::new([0], [1]),
            Roi::new([0], [1]),
        )
        .process(|b: &Block| {
            if b.block_id() == 3 {
                Err::<(), BlockError>("bad block".into())
            } else {
                Ok(())
            }
        })
        .max_retries(0)
        .build()
        .unwrap()
    };
    let summary = runner(&dir).run([failing()]).unwrap();
    assert_eq!(summary.task("t").unwrap().failed, 1);
    let files = [
        ("tasks/t/done.zarr/c/0", true),
        ("tasks/t/done.zarr/zarr.json", true),
        ("tasks/t/layout.json", true),
        ("tasks/t/done.crc32", true),
        ("tasks/t/done.summary", true),
        ("journal.wal", true),
        ("lock", true),
        // A run replaces run.json and appends to failures.jsonl only when a block fails.
        ("run.json", false),
        ("tasks/t/failures.jsonl", false),
    ];
    for (file, a_run_opens_it) in files {
        let path = dir.join(file);
        let good = std::fs::read(&path).unwrap();
        for kind in ["FIFO (named pipe)", "directory"] {
            std::fs::remove_file(&path).unwrap();
            if kind == "directory" {
                std::fs::create_dir(&path).unwrap();
            } else {
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
            }
            let expected = format!(
                "run directory file {} is damaged: it is a {kind}, not a regular file",
                path.display()
            );
            if a_run_opens_it {
                let (d, c) = (dir.clone(), Arc::clone(&calls));
                let e = within_a_minute(file, move || {
                    journal_error(runner(&d).run([counting(50, &c)])).to_string()
                });
                assert!(e.starts_with(&expected), "{file}: {e}");
                assert_eq!(calls.load(Ordering::SeqCst), 0, "{file}: blocks ran");
            }
            let d = dir.clone();
            let e = within_a_minute(file, move || {
                blockwise::journal::status(&d)
                    .map(|_| ())
                    .unwrap_err()
                    .to_string()
            });
            assert!(e.starts_with(&expected), "status, {file}: {e}");
            if kind == "directory" {
                std::fs::remove_dir(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
            std::fs::write(&path, &good).unwrap();
        }
        // A symbolic link to the file is followed; one to a FIFO is refused.
        let elsewhere = dir.join("elsewhere");
        std::fs::rename(&path, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let d = dir.clone();
        within_a_minute(file, move || blockwise::journal::status(&d).map(|_| ()))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        std::fs::remove_file(&path).unwrap();
        std::fs::rename(&elsewhere, &path).unwrap();
    }
    let fifo = dir.join("a-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let layout = dir.join("tasks/t/layout.json");
    let good = std::fs::read(&layout).unwrap();
    std::fs::remove_file(&layout).unwrap();
    std::os::unix::fs::symlink(&fifo, &layout).unwrap();
    let (d, c) = (dir.clone(), Arc::clone(&calls));
    let e = within_a_minute("a link to a FIFO", move || {
        journal_error(runner(&d).run([counting(50, &c)])).to_string()
    });
    assert!(
        e.contains("it is a FIFO (named pipe), not a regular file"),
        "{e}"
    );
    std::fs::remove_file(&layout).unwrap();
    std::fs::write(&layout, good).unwrap();
    // Undamaged again: the run skips what finished (the failed block runs again).
    let s = runner(&dir).run([counting(50, &calls)]).unwrap();
    assert_eq!(
        (s.task("t").unwrap().skipped, calls.load(Ordering::SeqCst)),
        (49, 1)
    );
}

/// A write-ahead log with a good checksum whose one section names `task_dir`.
fn crafted_log(task_dir: &str, records: &[u64]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&(task_dir.len() as u32).to_le_bytes());
    payload.extend_from_slice(task_dir.as_bytes());
    payload.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for r in records {
        payload.extend_from_slice(&r.to_le_bytes());
    }
    let mut out = b"BWAL".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

#[test]
fn a_crafted_write_ahead_log_cannot_write_outside_the_run_directory() {
    let dir = empty_dir("robustness", "crafted-wal");
    let calls = Arc::new(AtomicU64::new(0));
    let other = dir.join("other-run");
    let run = dir.join("runs/a/run");
    // Another run directory with markers of a task `x`, none done.
    let x = Task::builder(
        "x",
        Roi::new([0], [50]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .process(|_: &Block| Err::<(), BlockError>("not now".into()))
    .max_retries(0)
    .build()
    .unwrap();
    assert_eq!(
        runner(&other).run([x]).unwrap().task("x").unwrap().failed,
        50
    );
    assert!(
        runner(&run)
            .run([counting(50, &calls)])
            .unwrap()
            .is_success()
    );
    let other_before = snapshot(&other);
    for name in [
        "../../../other-run/tasks/x",
        "../../../../other-run/tasks/x",
        "/tmp",
        "..",
    ] {
        // "Mark" block 5 of x done (value 1).
        std::fs::write(run.join("journal.wal"), crafted_log(name, &[5 << 2 | 1])).unwrap();
        let before = snapshot(&run);
        calls.store(0, Ordering::SeqCst);
        let e = journal_error(runner(&run).run([counting(50, &calls)]));
        assert!(matches!(e, JournalError::Corrupt { .. }), "{e}");
        assert!(
            e.to_string().starts_with(&format!(
                "run directory file {} is damaged: its batch names {name:?}, which is not a task directory name",
                run.join("journal.wal").display()
            )),
            "{e}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(
            snapshot(&other),
            other_before,
            "{name}: the other run directory changed"
        );
        assert_eq!(snapshot(&run), before, "{name}: the run directory changed");
    }
    // A damaged log can be discarded by starting fresh.
    let s = runner(&run)
        .fresh(true)
        .run([counting(50, &calls)])
        .unwrap();
    assert!(s.is_success());
    assert_eq!(snapshot(&other), other_before);
}
