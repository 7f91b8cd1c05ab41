//! `blockwise::ops::Pyramid`: every level of a pyramid against a naive reference applied
//! level after level.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use blockwise::ops::{Downsample, Pyramid};
use blockwise::store::{ArraySpec, DataType, ZarrArray};
use blockwise::{Error, Progress, Roi, Runner};
use ndarray::{ArrayD, IxDyn};

use crate::support::empty_dir;

const METHODS: [Downsample; 5] = [
    Downsample::Mean,
    Downsample::Mode,
    Downsample::Max,
    Downsample::Min,
    Downsample::FirstNonZero,
];

/// The reference for 3-D arrays, with index loops: floor(n / f) per axis, windows in C order.
fn naive<T: Copy + Default + PartialOrd + Into<f64>>(
    a: &ArrayD<T>,
    f: [usize; 3],
    m: Downsample,
    from_f64: impl Fn(f64) -> T,
) -> ArrayD<T> {
    let s = a.shape();
    let o = [s[0] / f[0], s[1] / f[1], s[2] / f[2]];
    let mut out = ArrayD::from_elem(IxDyn(&o), T::default());
    for z in 0..o[0] {
        for y in 0..o[1] {
            for x in 0..o[2] {
                let mut w = Vec::new();
                for dz in 0..f[0] {
                    for dy in 0..f[1] {
                        for dx in 0..f[2] {
                            w.push(a[[z * f[0] + dz, y * f[1] + dy, x * f[2] + dx]]);
                        }
                    }
                }
                let v = match m {
                    Downsample::Mean => {
                        let sum: f64 = w.iter().map(|&v| v.into()).sum();
                        from_f64((sum / w.len() as f64).round_ties_even())
                    }
                    Downsample::Max => w
                        .iter()
                        .copied()
                        .fold(w[0], |a, b| if b > a { b } else { a }),
                    Downsample::Min => w
                        .iter()
                        .copied()
                        .fold(w[0], |a, b| if b < a { b } else { a }),
                    Downsample::FirstNonZero => w
                        .iter()
                        .copied()
                        .find(|&v| v.into() != 0.0)
                        .unwrap_or_default(),
                    Downsample::Mode => {
                        let mut best = (0, w[0]);
                        for &c in &w {
                            let n = w.iter().filter(|&&v| v == c).count();
                            if n > best.0 || (n == best.0 && c < best.1) {
                                best = (n, c);
                            }
                        }
                        best.1
                    }
                };
                out[[z, y, x]] = v;
            }
        }
    }
    out
}

fn runner() -> Runner {
    Runner::new().progress(Progress::Never).print_summary(false)
}

/// A volume with few distinct values (so modes tie and means hit halves), zeros included.
fn volume(shape: &[usize]) -> ArrayD<u8> {
    ArrayD::from_shape_fn(IxDyn(shape), |i| {
        let h = (i[0] * 7919 + i[1] * 104_729 + i[2] * 1_299_709) % 9973;
        [0u8, 0, 3, 4, 200, 255][h % 6]
    })
}

fn source(dir: &std::path::Path, shape: [usize; 3], data_type: DataType) -> ZarrArray {
    let roi = Roi::new(
        [32, 16, 16],
        [
            shape[0] as i64 * 4,
            shape[1] as i64 * 2,
            shape[2] as i64 * 2,
        ],
    );
    let spec = ArraySpec::new(roi, [4, 2, 2], data_type, vec![8, 8, 8]);
    ZarrArray::create(dir, "raw", &spec).unwrap()
}

#[test]
fn num_workers_caps_the_workers_of_all_levels_together() {
    let dir = empty_dir("pyramid", "workers");
    let shape = [64, 64, 64];
    let raw = source(&dir, shape, DataType::U8);
    raw.write(&raw.roi(), volume(&shape).view()).unwrap();
    let pyramid = Pyramid::builder(&raw, dir.join("out.zarr"))
        .levels(4)
        .factor([2])
        .block_shape([8, 8, 8])
        .num_workers(2);
    let tasks = pyramid.tasks().unwrap();
    for t in &tasks {
        assert_eq!(t.requirements(), [("cpu".to_owned(), 1)], "{}", t.task_id());
    }
    // `run` adds a budget of 2 "cpu" units to the runner's (the runners' tests check that a
    // budget caps the live workers of all tasks together): a budget without "cpu" would
    // otherwise refuse tasks that need it.
    let summary = pyramid.run(&runner().resources([("gpu", 1)])).unwrap();
    assert!(summary.is_success(), "{summary}");
    let e = runner()
        .resources([("gpu", 1)])
        .run(tasks.last().cloned())
        .unwrap_err();
    assert!(e.to_string().contains("\"cpu\""), "{e}");
    // A runner whose budget has "cpu" keeps it.
    let summary = pyramid
        .run(&runner().resources([("cpu", 1)]).run_dir(dir.join("run")))
        .unwrap();
    assert!(summary.is_success(), "{summary}");
}

#[test]
fn every_level_of_every_method_matches_the_reference_on_a_non_multiple_volume() {
    let dir = empty_dir("pyramid", "methods");
    let shape = [44, 38, 50]; // not multiples of 2, 4 or the chunks
    let raw = source(&dir, shape, DataType::U8);
    let data = volume(&shape);
    raw.write(&raw.roi(), data.view()).unwrap();
    for m in METHODS {
        let out = dir.join(format!("{m}.zarr"));
        let summary = Pyramid::builder(&raw, &out)
            .levels(3)
            .factor([2])
            .method(m)
            .num_workers(2)
            .run(&runner())
            .unwrap();
        assert!(summary.is_success(), "{m}: {summary:?}");
        let mut want = data.clone();
        let mut vs = [4i64, 2, 2];
        for k in 0..3 {
            if k > 0 {
                want = naive(&want, [2, 2, 2], m, |v| v as u8);
                vs = vs.map(|v| v * 2);
            }
            let level = ZarrArray::open(&out, &format!("s{k}")).unwrap();
            assert_eq!(level.voxel_size().clone(), vs.into(), "{m} s{k}");
            assert_eq!(level.offset().clone(), [32i64, 16, 16].into(), "{m} s{k}");
            assert_eq!(level.axis_names(), raw.axis_names());
            let got = level.read::<u8>(&level.roi()).unwrap();
            assert_eq!(got.shape(), want.shape(), "{m} s{k}");
            assert!(
                *got.data() == want,
                "{m}: level s{k} differs from the reference"
            );
        }
    }
}

#[test]
fn an_anisotropic_factor_on_u16_and_a_rerun_with_a_run_dir_resumes() {
    let dir = empty_dir("pyramid", "anisotropic");
    let shape = [9, 40, 36];
    let raw = source(&dir, shape, DataType::U16);
    let data = volume(&shape).mapv(|v| u16::from(v) * 250);
    raw.write(&raw.roi(), data.view()).unwrap();
    let out = dir.join("out.zarr");
    let pyramid = Pyramid::builder(&raw, &out)
        .until_one_chunk()
        .factor([1, 2, 2])
        .method(Downsample::Mean);
    let tasks = pyramid.tasks().unwrap();
    // y, x: 40x36 -> 20x18 -> 10x9 -> 5x4, which fits a chunk of 8; z (factor 1) stays 9.
    assert_eq!(
        tasks.len(),
        4,
        "{:?}",
        tasks.iter().map(|t| t.task_id()).collect::<Vec<_>>()
    );
    let run_dir = dir.join("run");
    let summary = pyramid.run(&runner().run_dir(&run_dir)).unwrap();
    assert!(summary.is_success(), "{summary:?}");
    let mut want = data.clone();
    for k in 1..4 {
        want = naive(&want, [1, 2, 2], Downsample::Mean, |v| v as u16);
        let level = ZarrArray::open(&out, &format!("s{k}")).unwrap();
        assert_eq!(level.voxel_size().clone(), [4i64, 2 << k, 2 << k].into());
        let got = level.read::<u16>(&level.roi()).unwrap();
        assert!(*got.data() == want, "level s{k} differs from the reference");
    }
    // A rerun finds the arrays and the done blocks: nothing runs again.
    let again = pyramid.run(&runner().run_dir(&run_dir)).unwrap();
    assert!(again.is_success());
    for k in 0..4 {
        let s = again.task(&format!("pyramid-s{k}")).unwrap();
        assert_eq!(s.skipped, s.total, "s{k}: {s:?}");
    }
}

#[test]
fn bad_factors_and_level_counts_are_errors_naming_them() {
    let dir = empty_dir("pyramid", "bad");
    let raw = source(&dir, [8, 8, 8], DataType::U8);
    let out = dir.join("out.zarr");
    let e = Pyramid::builder(&raw, &out)
        .factor([2, 0, 2])
        .tasks()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidTask { .. }), "{e}");
    assert!(e.to_string().contains("is 0 on axis 1"), "{e}");
    let e = Pyramid::builder(&raw, &out)
        .factor([2, 2])
        .tasks()
        .unwrap_err();
    assert!(
        e.to_string().contains("has 2 axes but the array has 3"),
        "{e}"
    );
    let e = Pyramid::builder(&raw, &out).levels(5).tasks().unwrap_err();
    assert!(e.to_string().contains("level s4 would be empty"), "{e}");
    let e = Pyramid::builder(&raw, &out)
        .block_shape([12, 8, 8])
        .tasks()
        .unwrap_err();
    assert!(e.to_string().contains("multiple of the chunk shape"), "{e}");
    let e = Pyramid::builder(&raw, &out)
        .factor([1])
        .until_one_chunk()
        .tasks()
        .unwrap_err();
    assert!(e.to_string().contains("never shrinks"), "{e}");
}

/// The voxels (world volume) of `roi` covered by the disjoint ROIs `done`.
fn covered(done: &[Roi], roi: &Roi) -> i64 {
    done.iter()
        .filter(|d| d.intersects(roi))
        .map(|d| d.intersect(roi).size())
        .sum()
}

/// The write ROIs of a task's blocks: its block grid over its total ROI, cut at the end.
fn write_rois(task: &blockwise::Task) -> Vec<Roi> {
    let total = task.total_roi();
    let b = task.write_roi().shape();
    let dims = total.dims();
    let counts: Vec<i64> = (0..dims)
        .map(|d| (total.shape()[d] + b[d] - 1) / b[d])
        .collect();
    let n: i64 = counts.iter().product();
    (0..n)
        .map(|mut g| {
            let mut begin = vec![0i64; dims];
            for d in (0..dims).rev() {
                begin[d] = total.offset()[d] + (g % counts[d]) * b[d];
                g /= counts[d];
            }
            let shape: Vec<i64> = (0..dims)
                .map(|d| b[d].min(total.offset()[d] + total.shape()[d] - begin[d]))
                .collect();
            Roi::new(begin, shape)
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// A level-k block is handed out only when every level-(k-1) block it reads is done, and as
    /// soon as they are: never waiting for a whole level.
    #[test]
    fn a_level_waits_for_exactly_the_blocks_it_reads(
        shape in proptest::collection::vec(4usize..=30, 3),
        factor in proptest::collection::vec(1u64..=3, 3),
    ) {
        use blockwise::{BlockStatus, Scheduler};
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CASE: AtomicUsize = AtomicUsize::new(0);
        let dir = empty_dir("pyramid", &format!("deps-{}", CASE.fetch_add(1, Ordering::Relaxed)));
        let roi = Roi::new([0, 0, 0], shape.iter().map(|&s| s as i64).collect::<Vec<_>>());
        let spec = ArraySpec::new(roi, [1, 1, 1], DataType::U8, vec![4, 4, 4]);
        let raw = ZarrArray::create(&dir, "raw", &spec).unwrap();
        let levels = (0..3)
            .take_while(|&k| shape.iter().zip(&factor).all(|(&s, &f)| s as u64 / f.pow(k) > 0))
            .count();
        let tasks = Pyramid::builder(&raw, dir.join("out.zarr"))
            .levels(levels)
            .factor(&factor)
            .tasks()
            .unwrap();
        let rois: Vec<Vec<Roi>> = tasks.iter().map(write_rois).collect();
        let mut done: Vec<Vec<Roi>> = vec![Vec::new(); tasks.len()];
        let mut s = Scheduler::new(&tasks[tasks.len() - 1..]).unwrap();
        loop {
            // Drain the upper levels, then one block of the lowest level that has one.
            let mut progressed = false;
            let mut again = true;
            while again {
            again = false;
            for k in (1..tasks.len()).rev() {
                while let Some(mut b) = s.acquire_block(tasks[k].task_id()) {
                    let need = b.read_roi().size();
                    proptest::prop_assert_eq!(covered(&done[k - 1], b.read_roi()), need, "s{} {}", k, b.write_roi());
                    done[k].push(b.write_roi().clone());
                    b.set_status(BlockStatus::Success);
                    s.release_block(b);
                    progressed = true;
                    again = true;
                }
            }
            }
            // Every upper block whose reads are done was handed out.
            for k in 1..tasks.len() {
                for w in &rois[k] {
                    if covered(&done[k - 1], w) == w.size() {
                        proptest::prop_assert!(done[k].contains(w), "s{} {} waits too long", k, w);
                    }
                }
            }
            let lowest = (0..tasks.len()).find_map(|k| s.acquire_block(tasks[k].task_id()));
            match lowest {
                Some(mut b) => {
                    let k = tasks.iter().position(|t| t.task_id() == b.task_id()).unwrap();
                    if k > 0 {
                        let need = b.read_roi().size();
                        proptest::prop_assert_eq!(covered(&done[k - 1], b.read_roi()), need);
                    }
                    done[k].push(b.write_roi().clone());
                    b.set_status(BlockStatus::Success);
                    s.release_block(b);
                }
                None if !progressed => break,
                None => {}
            }
        }
        proptest::prop_assert!(s.is_done());
        for k in 0..tasks.len() {
            proptest::prop_assert_eq!(done[k].len(), rois[k].len(), "s{}", k);
        }
    }
}

/// Every stored file of the array `dataset` below `root`, by its path relative to the array,
/// with its bytes (metadata files left out).
fn chunk_files(
    root: &std::path::Path,
    dataset: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let base = root.join(dataset);
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![base.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                dirs.push(p);
            } else if !name.starts_with('.') && name != "zarr.json" {
                let rel = p
                    .strip_prefix(&base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Level 0 is stored like the source and its chunks are the source's bytes, for a sharded v3
/// source with another codec and fill value and for a v2 source; chunks the source does not
/// store (all fill value) are not stored either.
#[test]
fn level_0_copies_the_sources_chunks_as_stored_bytes() {
    use blockwise::store::{Codec, ZarrFormat};
    for (name, format, shard) in [
        ("v3-sharded", ZarrFormat::V3, Some(vec![16u64, 16, 16])),
        ("v2", ZarrFormat::V2, None),
    ] {
        let dir = empty_dir("pyramid", &format!("raw-copy-{name}"));
        let shape = [40usize, 32, 36];
        let roi = Roi::new([0, 0, 0], [40, 32, 36]);
        let mut spec = ArraySpec::new(roi.clone(), [1, 1, 1], DataType::U8, vec![8, 8, 8]);
        spec.format = format;
        spec.shard_shape = shard;
        spec.codec = Codec::Zstd { level: 1 };
        spec.fill_value = 7.0;
        let raw = ZarrArray::create(&dir, "raw", &spec).unwrap();
        let mut data = volume(&shape);
        // One corner all fill value: that chunk (or shard) is not stored.
        data.slice_each_axis_mut(|a| ndarray::Slice::from(0..16.min(shape[a.axis.index()])))
            .fill(7);
        raw.write(&roi, data.view()).unwrap();
        // The chunks are zstd level 1; the metadata now says level 19 (which reads the same).
        // A decode and encode would write level-19 bytes, which differ (checked here).
        spec.codec = Codec::Zstd { level: 19 };
        let at_19 = ZarrArray::create(&dir, "at19", &spec).unwrap();
        at_19.write(&roi, data.view()).unwrap();
        assert!(chunk_files(&dir, "at19") != chunk_files(&dir, "raw"));
        let meta = dir.join("raw").join(if format == ZarrFormat::V2 {
            ".zarray"
        } else {
            "zarr.json"
        });
        let text = std::fs::read_to_string(&meta).unwrap();
        let at19_text =
            std::fs::read_to_string(dir.join("at19").join(meta.file_name().unwrap())).unwrap();
        let codecs = |t: &str| {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            v.get("codecs")
                .or_else(|| v.get("compressor"))
                .cloned()
                .unwrap()
        };
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let key = if format == ZarrFormat::V2 {
            "compressor"
        } else {
            "codecs"
        };
        v[key] = codecs(&at19_text);
        std::fs::write(&meta, serde_json::to_vec(&v).unwrap()).unwrap();
        let raw = ZarrArray::open(&dir, "raw").unwrap();
        let out = dir.join("pyramid.zarr");
        let summary = Pyramid::builder(&raw, &out)
            .levels(2)
            .block_shape(raw.write_chunk_shape())
            .run(&runner())
            .unwrap();
        assert!(summary.is_success(), "{name}: {summary:?}");
        let s0 = ZarrArray::open(&out, "s0").unwrap();
        assert!(s0.stores_like(&raw), "{name}");
        assert_eq!(s0.zarr_format(), format, "{name}");
        let want = chunk_files(&dir, "raw");
        let got = chunk_files(&out, "s0");
        assert!(!want.is_empty());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name}"
        );
        assert!(
            got == want,
            "{name}: level 0's chunks are not the source's bytes"
        );
        assert!(*s0.read::<u8>(&roi).unwrap().data() == data, "{name}");
        let s1 = ZarrArray::open(&out, "s1").unwrap();
        assert_eq!(
            s1.zarr_format(),
            format,
            "{name}: every level in the source's format"
        );
    }
}

/// A level 0 left by an earlier run with another codec is kept (it matches the level's spec)
/// and written by decoding and encoding; the result is the same data.
#[test]
fn an_existing_level_0_with_another_codec_is_kept_and_filled() {
    use blockwise::store::Codec;
    let dir = empty_dir("pyramid", "raw-copy-fallback");
    let shape = [24usize, 24, 24];
    let raw = source(&dir, shape, DataType::U8);
    let data = volume(&shape);
    raw.write(&raw.roi(), data.view()).unwrap();
    let out = dir.join("pyramid.zarr");
    let mut spec = ArraySpec::new(
        raw.roi(),
        raw.voxel_size().clone(),
        DataType::U8,
        vec![8, 8, 8],
    );
    spec.codec = Codec::None;
    spec.axis_names = Some(raw.axis_names().to_vec());
    spec.units = Some(raw.units().to_vec());
    let old = ZarrArray::create(&out, "s0", &spec).unwrap();
    assert!(!old.stores_like(&raw));
    let id = old.array_id().map(str::to_owned);
    drop(old);
    let summary = Pyramid::builder(&raw, &out)
        .levels(2)
        .run(&runner())
        .unwrap();
    assert!(summary.is_success(), "{summary:?}");
    let s0 = ZarrArray::open(&out, "s0").unwrap();
    assert_eq!(
        s0.array_id().map(str::to_owned),
        id,
        "the existing level 0 is kept"
    );
    assert!(*s0.read::<u8>(&s0.roi()).unwrap().data() == data);
}

/// A raw copy between arrays that are not stored alike, or of part of a chunk, is an error
/// naming what differs.
#[test]
fn raw_chunk_copies_of_unlike_arrays_or_partial_chunks_are_errors() {
    use blockwise::store::{Codec, StoreError};
    let dir = empty_dir("pyramid", "raw-copy-errors");
    let roi = Roi::new([0, 0], [16, 16]);
    let a = ZarrArray::create(
        &dir,
        "a",
        &ArraySpec::new(roi.clone(), [1, 1], DataType::U8, vec![8, 8]),
    )
    .unwrap();
    let mut spec = ArraySpec::new(roi.clone(), [1, 1], DataType::U8, vec![8, 8]);
    spec.codec = Codec::None;
    let b = ZarrArray::create(&dir, "b", &spec).unwrap();
    let e = b.copy_chunks_from(&a, &roi).unwrap_err();
    assert!(matches!(e, StoreError::NotAlike { .. }), "{e}");
    assert!(e.to_string().contains("codecs"), "{e}");
    let c = ZarrArray::create_like(&dir, "c", &a, false).unwrap();
    let e = c
        .copy_chunks_from(&a, &Roi::new([0, 0], [4, 16]))
        .unwrap_err();
    assert!(matches!(e, StoreError::Roi { .. }), "{e}");
    assert!(e.to_string().contains("only in part"), "{e}");
    let e = c
        .copy_chunks_from(&a, &Roi::new([0, 0], [32, 16]))
        .unwrap_err();
    assert!(e.to_string().contains("not inside"), "{e}");
    let shifted = ZarrArray::create(
        &dir,
        "d",
        &ArraySpec::new(Roi::new([8, 0], [16, 16]), [1, 1], DataType::U8, vec![8, 8]),
    )
    .unwrap();
    let e = c.copy_chunks_from(&shifted, &roi).unwrap_err();
    assert!(e.to_string().contains("ROI"), "{e}");
}

/// The pyramid of a crash run: `DIR/raw.zarr` to `DIR/out.zarr` with the run directory
/// `DIR/run`, killed after `BLOCKWISE_CRASH_DELAY_US` microseconds if that is set.
fn crash_pyramid(dir: &std::path::Path) -> Result<blockwise::RunSummary, Error> {
    let raw = ZarrArray::open(dir.join("raw.zarr"), "raw").unwrap();
    Pyramid::builder(&raw, dir.join("out.zarr"))
        .levels(4)
        .factor([2])
        .method(Downsample::Mean)
        .num_workers(2)
        .run(&runner().run_dir(dir.join("run")))
}

crate::support::child_main!(zz_pyramid_crash_child: "BLOCKWISE_PYRAMID_CRASH_DIR" => pyramid_crash_child);

fn pyramid_crash_child(dir: String) {
    if let Some(us) = std::env::var("BLOCKWISE_CRASH_DELAY_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_micros(us));
            crate::support::kill_self();
        });
    }
    match crash_pyramid(std::path::Path::new(&dir)) {
        Ok(summary) if summary.is_success() => {}
        Ok(summary) => {
            eprintln!("{summary}");
            std::process::exit(3);
        }
        Err(e) => {
            eprintln!("the run failed: {e}");
            std::process::exit(3);
        }
    }
}

/// A pyramid run killed with SIGKILL at random moments (in a block, between blocks, while
/// done-markers are written), then rerun with its run directory until it finishes: every
/// level's stored chunks are byte for byte those of an uninterrupted run.
#[test]
fn a_pyramid_killed_at_random_moments_and_rerun_is_bit_identical() {
    use std::os::unix::process::ExitStatusExt;
    let base = empty_dir("pyramid", "crash");
    let shape = [64usize, 64, 64];
    let setup = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir).unwrap();
        let raw = ZarrArray::create(
            dir.join("raw.zarr"),
            "raw",
            &ArraySpec::new(
                Roi::new([0, 0, 0], [64, 64, 64]),
                [1, 1, 1],
                DataType::U8,
                vec![8, 8, 8],
            ),
        )
        .unwrap();
        raw.write(&raw.roi(), volume(&shape).view()).unwrap();
    };
    let reference = base.join("reference");
    setup(&reference);
    let started = std::time::Instant::now();
    assert!(crash_pyramid(&reference).unwrap().is_success());
    // Kills spread over about one uninterrupted run (at least 20 ms of it).
    let span = (started.elapsed().as_micros() as u64).max(20_000);
    let levels = ["s0", "s1", "s2", "s3"];
    let want: Vec<_> = levels
        .iter()
        .map(|l| chunk_files(&reference.join("out.zarr"), l))
        .collect();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut killed = 0;
    for seed in 0..4u64 {
        let dir = base.join(format!("seed-{seed}"));
        setup(&dir);
        let mut finished = false;
        for run in 0..8 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "pyramid::zz_pyramid_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BLOCKWISE_PYRAMID_CRASH_DIR", &dir)
            .env_remove(blockwise::CONTEXT_ENV)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
            if run < 3 {
                cmd.env("BLOCKWISE_CRASH_DELAY_US", (rng % span).to_string());
            }
            let out = crate::support::wait_with_timeout(
                cmd.spawn().unwrap(),
                std::time::Duration::from_secs(120),
            );
            if out.status.success() {
                finished = true;
                break;
            }
            assert_eq!(
                out.status.signal(),
                Some(9),
                "seed {seed}, run {run}: failed without being killed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                run < 3,
                "seed {seed}: run {run} was killed but should not be"
            );
            killed += 1;
        }
        assert!(finished, "seed {seed}: the pyramid did not finish");
        for (l, want) in levels.iter().zip(&want) {
            let got = chunk_files(&dir.join("out.zarr"), l);
            assert!(
                got == *want,
                "seed {seed}: level {l} differs from an uninterrupted run"
            );
        }
    }
    assert!(killed > 0, "no run was killed: the test checked nothing");
}

/// A factor that does not divide the chunks (3 on chunks of 8): windows span chunks, and the
/// levels still match the reference.
#[test]
fn a_factor_that_does_not_divide_the_chunks_matches_the_reference() {
    let dir = empty_dir("pyramid", "factor-3");
    let shape = [40usize, 29, 35];
    let roi = Roi::new([0, 0, 0], [40, 29, 35]);
    let spec = ArraySpec::new(roi, [1, 1, 1], DataType::U8, vec![8, 8, 8]);
    let raw = ZarrArray::create(&dir, "raw", &spec).unwrap();
    let data = volume(&shape);
    raw.write(&raw.roi(), data.view()).unwrap();
    for m in [Downsample::Mean, Downsample::Mode] {
        let out = dir.join(format!("{m}.zarr"));
        let summary = Pyramid::builder(&raw, &out)
            .levels(3)
            .factor([3, 1, 3])
            .method(m)
            .run(&runner())
            .unwrap();
        assert!(summary.is_success(), "{m}: {summary:?}");
        let mut want = data.clone();
        for k in 1..3 {
            want = naive(&want, [3, 1, 3], m, |v| v as u8);
            let level = ZarrArray::open(&out, &format!("s{k}")).unwrap();
            assert!(
                *level.read::<u8>(&level.roi()).unwrap().data() == want,
                "{m} s{k}"
            );
        }
    }
}
