//! Masks that skip empty space (`TaskBuilder::mask`): masked-out blocks are skipped without
//! calling the process or check function, release their downstream blocks, are never marked
//! done, and a changed mask on a rerun runs exactly the blocks it opens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use blockwise::mask::Mask;
use blockwise::ndarray::ArrayD;
use blockwise::store::{ArraySpec, DataType, StoreError, ZarrArray};
use blockwise::{Block, BlockError, Progress, Roi, RoiArray, Runner, Task, TaskBuilder};

use crate::support::empty_dir;

type Seen = Arc<Mutex<BTreeSet<u64>>>;

/// A 2D u8 mask over `roi` with voxel size `voxel`, 1 where `set(voxel index)` holds.
fn mask_array(
    dir: &Path,
    name: &str,
    roi: Roi,
    voxel: i64,
    set: impl Fn(usize, usize) -> bool,
) -> ZarrArray {
    let shape = [
        usize::try_from(roi.shape()[0] / voxel).unwrap(),
        usize::try_from(roi.shape()[1] / voxel).unwrap(),
    ];
    let spec = ArraySpec::new(roi, [voxel, voxel], DataType::U8, vec![4, 4]);
    let a = ZarrArray::create(dir, name, &spec).unwrap();
    let data = ArrayD::from_shape_fn(shape.to_vec(), |i| u8::from(set(i[0], i[1])));
    a.write(&a.roi(), &data).unwrap();
    a
}

/// A 2D task over `[0, size)²` with `block`-sized blocks that records the grid index of every
/// block its process function and its check function see.
fn recording_task(id: &str, size: i64, block: i64, seen: &Seen, checked: &Seen) -> TaskBuilder {
    let (s, c) = (Arc::clone(seen), Arc::clone(checked));
    Task::builder(
        id,
        Roi::new([0, 0], [size, size]),
        Roi::new([0, 0], [block, block]),
        Roi::new([0, 0], [block, block]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        s.lock().unwrap().insert(b.grid_index());
        Ok(())
    })
    .check(move |b: &Block| {
        c.lock().unwrap().insert(b.grid_index());
        false
    })
    .num_workers(2)
}

fn runner() -> Runner {
    Runner::new().progress(Progress::Never).print_summary(false)
}

fn set() -> Seen {
    Arc::new(Mutex::new(BTreeSet::new()))
}

fn taken(s: &Seen) -> BTreeSet<u64> {
    std::mem::take(&mut *s.lock().unwrap())
}

/// The grid indices of the blocks of `task` whose write ROI touches a voxel of `mask` that is
/// set, found voxel by voxel (independently of the mask's own region arithmetic).
fn expected_blocks(task: &Task, mask: &ZarrArray) -> BTreeSet<u64> {
    let data = mask.read::<u8>(&mask.roi()).unwrap();
    let (off, vs) = (mask.offset().clone(), mask.voxel_size().clone());
    let mut out = BTreeSet::new();
    for g in 0..task.num_blocks() {
        let w = task.block(g).unwrap().write_roi().clone();
        let hit = data.indexed_iter().any(|(i, &v)| {
            let voxel = Roi::new(
                [off[0] + i[0] as i64 * vs[0], off[1] + i[1] as i64 * vs[1]],
                [vs[0], vs[1]],
            );
            v != 0 && voxel.intersects(&w)
        });
        if hit {
            out.insert(g);
        }
    }
    out
}

#[test]
fn a_mask_empty_over_90_percent_runs_only_the_other_blocks() {
    let dir = empty_dir("mask", "ninety");
    // 100 blocks of 10x10; the mask (same resolution as the blocks' voxels) is set in the
    // first block row only, one voxel per block.
    let m = mask_array(&dir, "m", Roi::new([0, 0], [100, 100]), 1, |x, y| {
        x < 10 && y % 10 == 7 && x == 3
    });
    let (seen, checked) = (set(), set());
    let task = recording_task("t", 100, 10, &seen, &checked)
        .mask(&m)
        .build()
        .unwrap();
    let expected: BTreeSet<u64> = expected_blocks(&task, &m);
    assert_eq!(expected.len(), 10);
    let summary = runner().run([task]).unwrap();
    assert!(summary.is_success(), "{summary}");
    let state = summary.task("t").unwrap();
    assert_eq!(
        (state.total, state.completed, state.skipped, state.masked),
        (100, 100, 90, 90)
    );
    assert_eq!(taken(&seen), expected, "process function");
    assert_eq!(
        taken(&checked),
        expected,
        "the check function is not called for masked blocks"
    );
}

#[test]
fn a_changed_mask_on_a_rerun_runs_only_the_blocks_it_opens() {
    let dir = empty_dir("mask", "changed");
    let run_dir = dir.join("run");
    let roi = Roi::new([0, 0], [80, 80]);
    let (seen, checked) = (set(), set());
    let build = |m: &ZarrArray| {
        recording_task("t", 80, 10, &seen, &checked)
            .mask(m)
            .build()
            .unwrap()
    };
    // First run: the mask opens x in [0, 20) (the first two block rows: 16 blocks).
    let first = mask_array(&dir, "m", roi.clone(), 10, |x, _| x < 2);
    let task = build(&first);
    let opened_first = expected_blocks(&task, &first);
    assert_eq!(opened_first.len(), 16);
    let summary = runner().run_dir(&run_dir).run([task]).unwrap();
    let state = summary.task("t").unwrap();
    assert_eq!((state.completed, state.skipped, state.masked), (64, 48, 48));
    assert_eq!(taken(&seen), opened_first);
    assert_eq!(taken(&checked), opened_first);
    let record = std::fs::read_to_string(run_dir.join("tasks/t/mask.json")).unwrap();
    assert!(record.contains("\"predicate\":\"nonzero\""), "{record}");

    // The mask is rewritten (recreated: a new array id) to open x in [10, 40): one block
    // row stays open, two rows are new.
    std::fs::remove_dir_all(dir.join("m")).unwrap();
    let second = mask_array(&dir, "m", roi.clone(), 10, |x, _| (1..4).contains(&x));
    let task = build(&second);
    let opened_second = expected_blocks(&task, &second);
    let new: BTreeSet<u64> = opened_second.difference(&opened_first).copied().collect();
    assert_eq!(new.len(), 16);
    let summary = runner().run_dir(&run_dir).run([task]).unwrap();
    assert!(summary.is_success(), "{summary}");
    let state = summary.task("t").unwrap();
    // 16 done before + 16 new = 32 completed by a run; the other 32 are masked.
    assert_eq!((state.completed, state.skipped, state.masked), (64, 48, 32));
    assert_eq!(taken(&seen), new, "only the newly opened blocks run");
    assert_eq!(taken(&checked), new);
    // `blockwise status`: the masked blocks are not done, and said to be masked.
    let status = blockwise::journal::status(&run_dir).unwrap();
    let t = &status.tasks[0];
    assert_eq!((t.done, t.never_run, t.masked), (32, 32, Some(32)));
    assert!(
        status
            .to_string()
            .contains("task t: 32 blocks were masked out"),
        "{status}"
    );
    let changed = std::fs::read_to_string(run_dir.join("tasks/t/mask.json")).unwrap();
    assert_ne!(record, changed, "the record follows the mask");

    // The same mask again: every block it opens is done.
    let task = build(&ZarrArray::open(&dir, "m").unwrap());
    let summary = runner().run_dir(&run_dir).run([task]).unwrap();
    let state = summary.task("t").unwrap();
    assert_eq!((state.completed, state.skipped), (64, 64));
    assert!(taken(&seen).is_empty());
}

#[test]
fn a_mask_rewritten_in_place_is_recorded_as_changed_and_opens_its_new_blocks() {
    let dir = empty_dir("mask", "in-place");
    let run_dir = dir.join("run");
    let roi = Roi::new([0, 0], [80, 80]);
    let (seen, checked) = (set(), set());
    let first = mask_array(&dir, "m", roi.clone(), 10, |x, _| x < 2);
    let task = recording_task("t", 80, 10, &seen, &checked)
        .mask(&first)
        .build()
        .unwrap();
    let opened_first = expected_blocks(&task, &first);
    let summary = runner().run_dir(&run_dir).run([task]).unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_eq!(taken(&seen), opened_first);
    let record = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p.join("tasks/t/mask.json")).unwrap()).unwrap()
    };
    let before = record(&run_dir);

    // The same array (same id, path and metadata) with one more voxel row set, in place.
    let m = ZarrArray::open(&dir, "m").unwrap();
    m.write(
        &Roi::new([20, 0], [10, 80]),
        &ArrayD::from_elem(vec![1, 8], 1u8),
    )
    .unwrap();
    let task = recording_task("t", 80, 10, &seen, &checked)
        .mask(&m)
        .build()
        .unwrap();
    let opened_second = expected_blocks(&task, &m);
    let new: BTreeSet<u64> = opened_second.difference(&opened_first).copied().collect();
    assert_eq!(new.len(), 8);
    let summary = runner().run_dir(&run_dir).run([task]).unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_eq!(taken(&seen), new, "only the newly opened blocks run");
    let after = record(&run_dir);
    assert_eq!(before["array_id"], after["array_id"]);
    assert_eq!(before["roi"], after["roi"]);
    let (b, a) = (
        before["chunks_sha256"].as_str().unwrap(),
        after["chunks_sha256"].as_str().unwrap(),
    );
    assert_eq!(b.len(), 64, "{before}");
    assert_ne!(
        b, a,
        "the digest of the mask's stored chunks follows an in-place rewrite"
    );

    // Unchanged since: the same record, nothing runs.
    let task = recording_task("t", 80, 10, &seen, &checked)
        .mask(&m)
        .build()
        .unwrap();
    let summary = runner().run_dir(&run_dir).run([task]).unwrap();
    assert!(summary.is_success(), "{summary}");
    assert!(taken(&seen).is_empty());
    assert_eq!(record(&run_dir), after);
}

#[test]
fn a_mask_coarser_than_the_blocks_selects_the_blocks_under_its_set_voxels() {
    let dir = empty_dir("mask", "coarse");
    // Blocks of 12 world units straddle the mask's voxels of 32; the task reaches past the
    // mask (voxels outside it count as empty).
    let m = mask_array(&dir, "m", Roi::new([0, 0], [64, 64]), 32, |x, y| {
        (x, y) == (1, 0)
    });
    let (seen, checked) = (set(), set());
    let task = recording_task("t", 72, 12, &seen, &checked)
        .mask(&m)
        .build()
        .unwrap();
    let expected = expected_blocks(&task, &m);
    // Rows of blocks whose x range touches [32, 64), columns touching [0, 32).
    assert_eq!(expected.len(), 4 * 3, "{expected:?}");
    let summary = runner().run([task.clone()]).unwrap();
    let state = summary.task("t").unwrap();
    assert_eq!(
        (state.completed, state.masked),
        (task.num_blocks(), task.num_blocks() - 12)
    );
    assert_eq!(taken(&seen), expected);
}

#[test]
fn a_custom_predicate_sees_the_mask_region_at_its_own_resolution() {
    let dir = empty_dir("mask", "predicate");
    // A 1D f32 "foreground probability" at voxel size 5 under blocks of 10.
    let spec = ArraySpec::new(Roi::new([0], [100]), [5], DataType::F32, vec![8]);
    let a = ZarrArray::create(&dir, "p", &spec).unwrap();
    let values: Vec<f32> = (0..20).map(|i| i as f32 / 20.0).collect();
    a.write(&a.roi(), &ArrayD::from_shape_vec(vec![20], values).unwrap())
        .unwrap();
    let regions = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&regions);
    // Run blocks whose mean probability is over 0.5.
    let mask = Mask::with_predicate(&a, move |v: &RoiArray<f32>| {
        r.lock().unwrap().push((v.roi().clone(), v.len()));
        v.iter().sum::<f32>() / v.len() as f32 > 0.5
    })
    .unwrap();
    let seen = set();
    let s = Arc::clone(&seen);
    let task = Task::builder(
        "t",
        Roi::new([0], [100]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        s.lock().unwrap().insert(b.grid_index());
        Ok(())
    })
    .mask(mask)
    .build()
    .unwrap();
    let summary = runner().run([task]).unwrap();
    assert_eq!(summary.task("t").unwrap().masked, 5);
    // Block g covers voxels 2g, 2g+1: mean (4g+1)/40 > 0.5 from g = 5.
    assert_eq!(taken(&seen), (5..10).collect());
    let regions = regions.lock().unwrap();
    assert_eq!(regions.len(), 10);
    assert!(
        regions
            .iter()
            .all(|(roi, n)| roi.shape()[0] == 10 && *n == 2)
    );
}

#[test]
fn blocks_downstream_of_masked_blocks_are_released_and_run() {
    let dir = empty_dir("mask", "downstream");
    let m = mask_array(&dir, "m", Roi::new([0, 0], [40, 40]), 10, |x, y| x == y);
    let (seen, checked) = (set(), set());
    let up = recording_task("up", 40, 10, &seen, &checked)
        .mask(&m)
        .build()
        .unwrap();
    let down_seen = set();
    let d = Arc::clone(&down_seen);
    // Reads 5 world units of context around each block of `up`.
    let down = Task::builder(
        "down",
        Roi::new([-5, -5], [50, 50]),
        Roi::new([0, 0], [20, 20]),
        Roi::new([5, 5], [10, 10]),
    )
    .process(move |b: &Block| -> Result<(), BlockError> {
        d.lock().unwrap().insert(b.grid_index());
        Ok(())
    })
    .upstream(&up)
    .build()
    .unwrap();
    let n = down.num_blocks();
    let summary = runner().run([down]).unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_eq!(summary.task("up").unwrap().masked, 12);
    let state = summary.task("down").unwrap();
    assert_eq!((state.completed, state.skipped, state.orphaned), (n, 0, 0));
    assert_eq!(taken(&down_seen).len() as u64, n);
    assert_eq!(taken(&seen).len(), 4);
}

#[test]
fn bad_masks_are_clear_errors() {
    let dir = empty_dir("mask", "bad");
    let m = mask_array(&dir, "m", Roi::new([0, 0], [40, 40]), 10, |_, _| true);
    let one_d = |id: &str| {
        Task::builder(
            id,
            Roi::new([0], [40]),
            Roi::new([0], [10]),
            Roi::new([0], [10]),
        )
        .process(|_| Ok(()))
    };
    let e = one_d("dims").mask(&m).build().unwrap_err().to_string();
    assert!(
        e.contains("dims") && e.contains("2 dimensions") && e.contains(m.name()),
        "{e}"
    );
    let e = Task::builder(
        "far",
        Roi::new([1000, 1000], [40, 40]),
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
    )
    .process(|_| Ok(()))
    .mask(&m)
    .build()
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not overlap"), "{e}");
    let e = Mask::with_predicate(&m, |_: &RoiArray<f64>| true).unwrap_err();
    assert!(matches!(e, StoreError::DataType { .. }), "{e}");
    assert!(e.to_string().contains(m.name()), "{e}");
}

#[test]
fn a_mask_that_cannot_be_read_fails_the_block_and_it_is_retried() {
    let dir = empty_dir("mask", "unreadable");
    let m = mask_array(&dir, "m", Roi::new([0, 0], [40, 40]), 10, |_, _| true);
    // Damage every chunk of the mask: decoding it fails.
    let mut damaged = 0;
    for entry in walk(&dir.join("m")) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with('.') && name != "zarr.json" {
            std::fs::write(&entry, b"not a chunk").unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    let (seen, checked) = (set(), set());
    let task = recording_task("t", 40, 20, &seen, &checked)
        .mask(&m)
        .max_retries(1)
        .build()
        .unwrap();
    let run_dir = dir.join("run");
    let summary = runner().run_dir(&run_dir).run([task]).unwrap();
    assert!(!summary.is_success());
    let state = summary.task("t").unwrap();
    assert_eq!((state.failed, state.completed), (4, 0));
    let logged = std::fs::read_to_string(run_dir.join("tasks/t/failures.jsonl")).unwrap();
    assert_eq!(logged.lines().count(), 8, "{logged}");
    assert!(
        logged.lines().all(|l| l.contains("reading the mask")),
        "{logged}"
    );
    let failures = summary.failures("t");
    assert_eq!(failures.len(), 8, "two attempts per block: {failures:?}");
    assert!(
        failures
            .iter()
            .all(|f| f.message.contains("reading the mask") && f.message.contains(m.name())),
        "{failures:?}"
    );
    assert!(taken(&seen).is_empty() && taken(&checked).is_empty());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The 1D u8 mask `name` in `dir` (voxels of 5 world units over [0, 100)), 1 at the voxels
/// `set`; created by the scheduler's process only (workers open it).
fn shared_mask(dir: &Path, name: &str, set: &[usize]) -> ZarrArray {
    if !crate::support::in_worker() {
        let spec = ArraySpec::new(Roi::new([0], [100]), [5], DataType::U8, vec![4]);
        let a = ZarrArray::create(dir, name, &spec).unwrap();
        let mut data = ArrayD::<u8>::zeros(vec![20]);
        for &i in set {
            data[[i]] = 1;
        }
        a.write(&a.roi(), &data).unwrap();
    }
    ZarrArray::open(dir, name).unwrap()
}

#[test]
fn masks_work_on_worker_processes_and_unreadable_masks_fail_there_too() {
    let dir = crate::support::scratch("mask_processes");
    let good = shared_mask(&dir, "good", &[0, 7, 19]);
    // Every voxel set, so that every chunk is stored (and damaged below).
    let all: Vec<usize> = (0..20).collect();
    let bad = shared_mask(&dir, "bad", &all);
    if !crate::support::in_worker() {
        for entry in walk(&dir.join("bad")) {
            let name = entry.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with('.') && name != "zarr.json" {
                std::fs::write(&entry, b"not a chunk").unwrap();
            }
        }
    }
    let task = |id: &str, mask: &ZarrArray| {
        let d = dir.clone();
        Task::builder(
            id,
            Roi::new([0], [100]),
            Roi::new([0], [10]),
            Roi::new([0], [10]),
        )
        .process(move |b: &Block| -> Result<(), BlockError> {
            crate::support::mark(&d, b)?;
            Ok(())
        })
        .mask(mask)
        .max_retries(0)
        .build()
        .unwrap()
    };
    let (g, b) = (task("good", &good), task("bad", &bad));
    let summary = crate::support::runner(
        "mask::masks_work_on_worker_processes_and_unreadable_masks_fail_there_too",
        &dir,
    )
    .run([g, b])
    .unwrap();
    // Voxels 0, 7 and 19 lie under blocks 0, 3 and 9.
    let good = summary.task("good").unwrap();
    assert_eq!((good.completed, good.masked, good.failed), (10, 7, 0));
    let ran: BTreeSet<u64> = crate::support::marks(&dir)
        .into_iter()
        .map(|((task, g), pids)| {
            assert_eq!(task, "good");
            assert_eq!(pids.len(), 1);
            assert!(!pids.contains(&std::process::id()), "ran in a worker");
            g
        })
        .collect();
    assert_eq!(ran, BTreeSet::from([0, 3, 9]));
    let bad = summary.task("bad").unwrap();
    assert_eq!((bad.failed, bad.completed), (10, 0));
    let failures = summary.failures("bad");
    assert_eq!(failures.len(), 10);
    assert!(
        failures
            .iter()
            .all(|f| f.message.contains("reading the mask"))
    );
}
