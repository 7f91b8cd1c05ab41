//! `blockwise::ops`: blockwise connected components against whole-volume labelling.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::{HashMap, VecDeque};

use blockwise::ops::{Connectivity, UnionFind, block_pairs, label, label_block};
use ndarray::{ArrayD, ArrayViewD, Dimension, IxDyn, Slice};
use proptest::prelude::*;

const ALL: [Connectivity; 3] = [
    Connectivity::Faces,
    Connectivity::Edges,
    Connectivity::Vertices,
];

/// Every block of a grid of `block`-shaped blocks over `shape` (row-major grid order; the last
/// block of an axis is cut at the volume's end), as `(begin, shape)` per block.
fn blocks(shape: &[usize], block: &[usize]) -> Vec<(Vec<usize>, Vec<usize>)> {
    let counts: Vec<usize> = shape
        .iter()
        .zip(block)
        .map(|(s, b)| s.div_ceil(*b))
        .collect();
    let total: usize = counts.iter().product();
    (0..total)
        .map(|mut g| {
            let mut cell = vec![0; shape.len()];
            for d in (0..shape.len()).rev() {
                cell[d] = g % counts[d];
                g /= counts[d];
            }
            let begin: Vec<usize> = cell.iter().zip(block).map(|(c, b)| c * b).collect();
            let size: Vec<usize> = (0..shape.len())
                .map(|d| block[d].min(shape[d] - begin[d]))
                .collect();
            (begin, size)
        })
        .collect()
}

/// `data[begin - below .. begin + size + above]`, 0 outside.
fn padded(
    data: &ArrayD<u64>,
    begin: &[usize],
    size: &[usize],
    below: &[u64],
    above: &[u64],
) -> ArrayD<u64> {
    let dims = begin.len();
    let out_shape: Vec<usize> = (0..dims)
        .map(|d| size[d] + below[d] as usize + above[d] as usize)
        .collect();
    let mut out = ArrayD::zeros(IxDyn(&out_shape));
    for (idx, v) in out.indexed_iter_mut() {
        let mut src = Vec::with_capacity(dims);
        for d in 0..dims {
            let p = (begin[d] + idx[d]) as isize - below[d] as isize;
            if p < 0 || p >= data.shape()[d] as isize {
                break;
            }
            src.push(p as usize);
        }
        if src.len() == dims {
            *v = data[IxDyn(&src)];
        }
    }
    out
}

/// Connected components the way `ConnectedComponents` computes them, in memory.
fn blockwise_labels(mask: &ArrayD<bool>, block: &[usize], c: Connectivity) -> ArrayD<u64> {
    let shape = mask.shape().to_vec();
    let v: u64 = block.iter().map(|&b| b as u64).product();
    let grid = blocks(&shape, block);
    let mut labels = ArrayD::zeros(IxDyn(&shape));
    let region = |begin: &[usize], size: &[usize]| {
        let (b, s) = (begin.to_vec(), size.to_vec());
        move |ax: ndarray::AxisDescription| {
            let d = ax.axis.index();
            Slice::from(b[d]..b[d] + s[d])
        }
    };
    for (g, (begin, size)) in grid.iter().enumerate() {
        let m = mask.slice_each_axis(region(begin, size));
        let (l, _) = label_block(m, c, g as u64, v).unwrap();
        labels.slice_each_axis_mut(region(begin, size)).assign(&l);
    }
    let (below, above) = c.pair_context(shape.len());
    let mut uf = UnionFind::new();
    for (begin, size) in &grid {
        let ctx = padded(&labels, begin, size, &below, &above);
        for (a, b) in block_pairs(ctx.view(), size, c).unwrap() {
            uf.union(a, b);
        }
    }
    let table = uf.merge_table();
    for (begin, size) in &grid {
        table.relabel(labels.slice_each_axis_mut(region(begin, size)));
    }
    labels
}

/// A breadth-first flood fill: the reference labelling, independent of ndarray-ndimage.
fn flood_fill(mask: &ArrayD<bool>, c: Connectivity) -> ArrayD<u64> {
    let shape = mask.shape().to_vec();
    let offsets = c.offsets(shape.len());
    let mut labels = ArrayD::zeros(IxDyn(&shape));
    let mut next = 0u64;
    let idx: Vec<Vec<usize>> = mask
        .indexed_iter()
        .map(|(i, _)| i.slice().to_vec())
        .collect();
    for start in idx {
        if !mask[IxDyn(&start)] || labels[IxDyn(&start)] != 0 {
            continue;
        }
        next += 1;
        labels[IxDyn(&start)] = next;
        let mut queue = VecDeque::from([start]);
        while let Some(p) = queue.pop_front() {
            'next: for delta in &offsets {
                let mut q = Vec::with_capacity(p.len());
                for d in 0..p.len() {
                    let x = p[d] as isize + isize::from(delta[d]);
                    if x < 0 || x >= shape[d] as isize {
                        continue 'next;
                    }
                    q.push(x as usize);
                }
                if mask[IxDyn(&q)] && labels[IxDyn(&q)] == 0 {
                    labels[IxDyn(&q)] = next;
                    queue.push_back(q);
                }
            }
        }
    }
    labels
}

/// Whether two labellings are the same partition: identical background and a bijection
/// between labels.
fn same_partition(a: ArrayViewD<'_, u64>, b: ArrayViewD<'_, u64>) -> Result<(), String> {
    if a.shape() != b.shape() {
        return Err(format!("shapes {:?} and {:?}", a.shape(), b.shape()));
    }
    let (mut ab, mut ba) = (HashMap::new(), HashMap::new());
    for ((i, &x), &y) in a.indexed_iter().zip(b.iter()) {
        if (x == 0) != (y == 0) {
            return Err(format!("background differs at {i:?}: {x} vs {y}"));
        }
        if x == 0 {
            continue;
        }
        if *ab.entry(x).or_insert(y) != y || *ba.entry(y).or_insert(x) != x {
            return Err(format!("labels {x} and {y} at {i:?} are not a bijection"));
        }
    }
    Ok(())
}

fn check_volume(mask: &ArrayD<bool>, block: &[usize]) -> Result<(), TestCaseError> {
    for c in ALL {
        let reference = flood_fill(mask, c);
        let (whole, n) = label(mask.view(), c).map_err(|e| TestCaseError::fail(e.to_string()))?;
        same_partition(whole.view(), reference.view())
            .map_err(|e| TestCaseError::fail(format!("{c}: ndimage vs flood fill: {e}")))?;
        prop_assert_eq!(n, reference.iter().copied().max().unwrap_or(0));
        let blockwise = blockwise_labels(mask, block, c);
        same_partition(blockwise.view(), whole.view()).map_err(|e| {
            TestCaseError::fail(format!("{c}, blocks {block:?}: blockwise vs whole: {e}"))
        })?;
    }
    Ok(())
}

/// A volume shape (1 to 3 dims, up to 16 per axis in 3-D), a block shape (1 up to past the
/// volume per axis), and a mask of random density.
fn volume() -> impl Strategy<Value = (ArrayD<bool>, Vec<usize>)> {
    (1usize..=3)
        .prop_flat_map(|dims| {
            let max = match dims {
                1 => 40,
                2 => 24,
                _ => 16,
            };
            (
                proptest::collection::vec(1usize..=max, dims),
                proptest::collection::vec(1usize..=18, dims),
                0.0f64..1.0,
            )
        })
        .prop_flat_map(|(shape, block, density)| {
            let n: usize = shape.iter().product();
            let block: Vec<usize> = block
                .iter()
                .zip(&shape)
                .map(|(b, s)| *b.min(&(s + 2)))
                .collect();
            (
                Just(shape),
                Just(block),
                proptest::collection::vec(proptest::bool::weighted(density), n),
            )
        })
        .prop_map(|(shape, block, bits)| {
            (
                ArrayD::from_shape_vec(IxDyn(&shape), bits)
                    .unwrap_or_else(|_| ArrayD::from_elem(IxDyn(&shape), false)),
                block,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn blockwise_matches_whole_volume((mask, block) in volume()) {
        check_volume(&mask, &block)?;
    }

    /// Tiny blocks (1 or 2 voxels per axis): nearly every adjacency crosses a block boundary.
    #[test]
    fn tiny_blocks_match_whole_volume(
        (mask, _) in volume(),
        small in proptest::collection::vec(1usize..=2, 3),
    ) {
        let block: Vec<usize> = small[..mask.ndim()].to_vec();
        check_volume(&mask, &block)?;
    }
}

/// A triangle wave: 0, 1, …, n-1, n-2, …, 0, 1, … (steps of ±1; 0 for `n == 1`).
fn tri(t: usize, n: usize) -> usize {
    if n < 2 {
        return 0;
    }
    let period = 2 * (n - 1);
    let r = t % period;
    if r < n { r } else { period - r }
}

/// One 1-voxel-wide path through the whole volume, joined by face steps only: every other row
/// of every other plane, filled along the last axis, joined to the next row at alternating
/// ends, and to the next plane at the end of the last row.
fn face_snake(shape: [usize; 3]) -> ArrayD<bool> {
    let [nz, ny, nx] = shape;
    let mut mask = ArrayD::from_elem(IxDyn(&shape), false);
    let rows: Vec<usize> = (0..ny).step_by(2).collect();
    let mut forward = true;
    for (plane, z) in (0..nz).step_by(2).enumerate() {
        let order: Vec<usize> = if plane % 2 == 0 {
            rows.clone()
        } else {
            rows.iter().rev().copied().collect()
        };
        for (i, &y) in order.iter().enumerate() {
            for x in 0..nx {
                mask[[z, y, x]] = true;
            }
            let end = if forward { nx - 1 } else { 0 };
            if let Some(&next) = order.get(i + 1) {
                mask[[z, y.min(next) + 1, end]] = true;
            } else if z + 2 < nz {
                mask[[z + 1, y, end]] = true;
            }
            forward = !forward;
        }
    }
    mask
}

/// A path whose steps within a plane are diagonal (edge neighbours): in every other plane a
/// triangle wave `y = tri(x)`, the planes joined by a face step at alternating ends.
fn edge_snake(shape: [usize; 3]) -> ArrayD<bool> {
    let [nz, ny, nx] = shape;
    let mut mask = ArrayD::from_elem(IxDyn(&shape), false);
    for (plane, z) in (0..nz).step_by(2).enumerate() {
        for x in 0..nx {
            mask[[z, tri(x, ny), x]] = true;
        }
        let end = if plane % 2 == 0 { nx - 1 } else { 0 };
        if z + 2 < nz {
            mask[[z + 1, tri(end, ny), end]] = true;
        }
    }
    mask
}

/// A path whose every step changes all three coordinates (corner neighbours only).
fn vertex_snake(shape: [usize; 3]) -> ArrayD<bool> {
    let [nz, ny, nx] = shape;
    let mut mask = ArrayD::from_elem(IxDyn(&shape), false);
    for x in 0..nx {
        mask[[tri(x, nz), tri(x, ny), x]] = true;
    }
    mask
}

#[test]
fn snakes_cross_every_block() {
    let shape = [7, 11, 13];
    let snakes = [
        ("face", face_snake(shape), Connectivity::Faces),
        ("edge", edge_snake(shape), Connectivity::Edges),
        ("vertex", vertex_snake([5, 4, 60]), Connectivity::Vertices),
    ];
    for (name, mask, joins) in &snakes {
        for block in [
            [2, 3, 4],
            [1, 1, 1],
            [7, 2, 5],
            [3, 11, 1],
            [4, 4, 4],
            [2, 2, 2],
        ] {
            for c in ALL {
                let (whole, n) = label(mask.view(), c).unwrap();
                if c as u8 >= *joins as u8 {
                    assert_eq!(n, 1, "the {name} snake is one component with {c}");
                } else {
                    assert!(n > 1, "the {name} snake falls apart with {c}");
                }
                let blockwise = blockwise_labels(mask, &block, c);
                same_partition(blockwise.view(), whole.view())
                    .unwrap_or_else(|e| panic!("{name} snake, {c}, blocks {block:?}: {e}"));
            }
        }
    }
}

#[test]
fn two_dimensional_diagonals_across_blocks() {
    // A diagonal line in 2-D crosses a block corner at every step with 1×1 blocks.
    let mut mask = ArrayD::from_elem(IxDyn(&[9, 9]), false);
    for i in 0..9 {
        mask[[i, i]] = true;
        mask[[i, 8 - i]] = true;
    }
    for c in ALL {
        let (whole, n) = label(mask.view(), c).unwrap();
        assert_eq!(n, if c == Connectivity::Faces { 17 } else { 1 });
        for block in [[1, 1], [2, 3], [4, 4]] {
            same_partition(blockwise_labels(&mask, &block, c).view(), whole.view()).unwrap();
        }
    }
}

#[cfg(feature = "zarr")]
mod tasks {
    use blockwise::ops::{ConnectedComponents, Connectivity, label};
    use blockwise::store::{ArraySpec, DataType, ZarrArray};
    use blockwise::{Error, Progress, Roi, Runner};
    use ndarray::{ArrayD, IxDyn};

    use super::same_partition;

    fn runner() -> Runner {
        Runner::new().progress(Progress::Never).print_summary(false)
    }

    /// Deterministic pseudo-random u8 values, smoothed a little along the last axis so that
    /// components are larger than single voxels.
    fn volume(shape: &[usize], seed: u64) -> ArrayD<u8> {
        let n: usize = shape.iter().product();
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut values: Vec<u8> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        for i in (1..n).rev() {
            values[i] = ((u16::from(values[i]) + u16::from(values[i - 1])) / 2) as u8;
        }
        ArrayD::from_shape_vec(IxDyn(shape), values).unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)))
    }

    struct Setup {
        _dir: tempfile::TempDir,
        raw: ZarrArray,
        labels: ZarrArray,
        data: ArrayD<u8>,
        roi: Roi,
    }

    /// `shape` voxels of `voxel` world units from offset `offset`, chunks of `chunk` voxels.
    fn setup(shape: &[usize], voxel: &[i64], offset: &[i64], chunk: &[u64], seed: u64) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let world: Vec<i64> = shape
            .iter()
            .zip(voxel)
            .map(|(&s, &v)| s as i64 * v)
            .collect();
        let roi = Roi::new(offset.to_vec(), world);
        let spec = |t| ArraySpec::new(roi.clone(), voxel.to_vec(), t, chunk.to_vec());
        let raw = ZarrArray::create(dir.path(), "raw", &spec(DataType::U8)).unwrap();
        let data = volume(shape, seed);
        raw.write(&roi, data.view()).unwrap();
        let labels = ZarrArray::create(dir.path(), "seg/labels", &spec(DataType::U64)).unwrap();
        Setup {
            _dir: dir,
            raw,
            labels,
            data,
            roi,
        }
    }

    fn check(s: &Setup, threshold: u8, c: Connectivity) {
        let mask = s.data.mapv(|v| v > threshold);
        let (whole, n) = label(mask.view(), c).unwrap();
        let out = s.labels.read::<u64>(&s.roi).unwrap();
        same_partition(out.view(), whole.view()).unwrap();
        assert!(n > 1, "a test volume with several components, not {n}");
    }

    #[test]
    fn components_across_many_blocks_match_whole_volume() {
        // 3-D, blocks of 4×5×6 voxels not dividing the volume, voxel size and offset.
        let s = setup(&[17, 19, 23], &[2, 1, 3], &[4, -5, 9], &[4, 5, 6], 1);
        for c in [
            Connectivity::Faces,
            Connectivity::Edges,
            Connectivity::Vertices,
        ] {
            let report = ConnectedComponents::new(&s.raw, &s.labels)
                .threshold(175.0)
                .connectivity(c)
                .num_workers(2)
                .run(&runner())
                .unwrap();
            assert!(report.is_success(), "{c}: {}", report.label);
            assert!(
                report.pairs > 0 && report.merged > 0,
                "{c}: components cross blocks"
            );
            assert_eq!(
                report.label.task("cc-label").map(|t| t.completed),
                Some(5 * 4 * 4)
            );
            check(&s, 175, c);
        }
    }

    #[test]
    fn sample_volume_matches_whole_volume() {
        use blockwise::sample::{SampleSpec, write_zarr};
        let dir = tempfile::tempdir().unwrap();
        let spec = SampleSpec::cube(48);
        let roi = spec.roi();
        let raw = write_zarr(
            &spec,
            dir.path(),
            "raw",
            &ArraySpec::new(roi.clone(), [1, 1, 1], DataType::U8, vec![16, 16, 16]),
            2,
        )
        .unwrap();
        let labels_spec = ArraySpec::new(roi.clone(), [1, 1, 1], DataType::U64, vec![8, 8, 8]);
        let labels = ZarrArray::create(dir.path(), "labels", &labels_spec).unwrap();
        let data = raw.read::<u8>(&roi).unwrap();
        for c in [Connectivity::Faces, Connectivity::Vertices] {
            let report = ConnectedComponents::new(&raw, &labels)
                .threshold(100.0)
                .connectivity(c)
                .block_shape([16, 8, 8])
                .num_workers(2)
                .run(&runner())
                .unwrap();
            assert!(report.is_success());
            let (whole, n) = label(data.mapv(|v| v > 100).view(), c).unwrap();
            assert!(n > 1);
            let out = labels.read::<u64>(&roi).unwrap();
            same_partition(out.view(), whole.view()).unwrap();
        }
    }

    #[test]
    fn two_dimensional_with_foreground_and_block_shape() {
        let s = setup(&[30, 41], &[1, 1], &[0, 0], &[3, 4], 2);
        let report = ConnectedComponents::new(&s.raw, &s.labels)
            .foreground(|v| v > 150.0)
            .connectivity(Connectivity::Vertices)
            .block_shape([6, 8])
            .name("seg")
            .run(&runner())
            .unwrap();
        assert!(report.is_success());
        assert!(
            report
                .relabel
                .as_ref()
                .and_then(|r| r.task("seg-relabel"))
                .is_some()
        );
        check(&s, 150, Connectivity::Vertices);
    }

    #[test]
    fn rerun_with_a_run_dir_resumes_after_the_first_run() {
        let s = setup(&[12, 13, 14], &[1, 1, 1], &[0, 0, 0], &[3, 3, 3], 3);
        let run_dir = s._dir.path().join("run");
        let cc = || {
            ConnectedComponents::new(&s.raw, &s.labels)
                .threshold(170.0)
                .connectivity(Connectivity::Edges)
                .work_dir(run_dir.join("cc"))
        };
        // "Crash" after the first run: label and pairs done, no merge, no relabel.
        let tasks = cc().tasks().unwrap();
        let ids: Vec<&str> = tasks.iter().map(|t| t.task_id()).collect();
        assert_eq!(ids, ["cc-label", "cc-pairs", "cc-relabel"]);
        let first = runner().run_dir(&run_dir).run([tasks[1].clone()]).unwrap();
        assert!(first.is_success());
        // The rerun skips label and pairs (their pairs are kept), then merges and relabels.
        let report = cc().run(&runner().run_dir(&run_dir)).unwrap();
        assert!(report.is_success());
        let skipped = |id| report.label.task(id).map(|t| t.skipped);
        assert_eq!(skipped("cc-label"), Some(4 * 5 * 5));
        assert_eq!(skipped("cc-pairs"), Some(4 * 5 * 5));
        assert!(report.merged > 0);
        check(&s, 170, Connectivity::Edges);
        // And again: everything is skipped, nothing changes.
        let again = cc().run(&runner().run_dir(&run_dir)).unwrap();
        assert!(again.is_success());
        assert_eq!(
            again
                .relabel
                .as_ref()
                .and_then(|r| r.task("cc-relabel"))
                .map(|t| t.skipped),
            Some(4 * 5 * 5)
        );
        check(&s, 170, Connectivity::Edges);
    }

    #[test]
    fn relabelling_twice_changes_nothing() {
        let s = setup(&[10, 11, 12], &[1, 1, 1], &[0, 0, 0], &[2, 3, 4], 4);
        let cc = || ConnectedComponents::new(&s.raw, &s.labels).threshold(115.0);
        assert!(cc().run(&runner()).unwrap().is_success());
        let once = s.labels.read::<u64>(&s.roi).unwrap();
        // A crash during the relabel run and a rerun: relabel again on relabelled blocks.
        let relabel = cc().tasks().unwrap().remove(2);
        assert!(runner().run([relabel]).unwrap().is_success());
        assert_eq!(s.labels.read::<u64>(&s.roi).unwrap(), once);
        check(&s, 115, Connectivity::Faces);
    }

    #[test]
    fn bad_configurations_are_clear_errors() {
        let s = setup(&[8, 8], &[1, 1], &[0, 0], &[4, 4], 5);
        let reason = |cc: ConnectedComponents| match cc.tasks() {
            Err(Error::InvalidTask { task, reason }) => {
                assert_eq!(task, "cc-label");
                reason
            }
            other => panic!("expected InvalidTask, got {other:?}"),
        };
        // Output not u64, or the input itself.
        let r = reason(ConnectedComponents::new(&s.labels, &s.labels));
        assert!(r.contains("same array"), "{r}");
        let r = reason(ConnectedComponents::new(&s.labels, &s.raw));
        assert!(r.contains("uint64"), "{r}");
        // Block shape not aligned to the output's chunks.
        let r = reason(ConnectedComponents::new(&s.raw, &s.labels).block_shape([3, 4]));
        assert!(r.contains("chunk"), "{r}");
        let r = reason(ConnectedComponents::new(&s.raw, &s.labels).block_shape([0, 4]));
        assert!(r.contains("positive"), "{r}");
        let r = reason(ConnectedComponents::new(&s.raw, &s.labels).block_shape([4, 4, 4]));
        assert!(r.contains("dims"), "{r}");
        // Different ROIs.
        let other = ZarrArray::create(
            s._dir.path(),
            "small",
            &ArraySpec::new(Roi::new([0, 0], [4, 8]), [1, 1], DataType::U64, vec![4, 4]),
        )
        .unwrap();
        let r = reason(ConnectedComponents::new(&s.raw, &other));
        assert!(r.contains("same ROI"), "{r}");
        // Relabel without a merge table: its workers cannot start.
        let relabel = ConnectedComponents::new(&s.raw, &s.labels)
            .tasks()
            .unwrap()
            .remove(2);
        match runner().run([relabel]) {
            Err(Error::WorkerStartup { message, .. }) => {
                assert!(message.contains("merge table"), "{message}");
            }
            other => panic!("expected WorkerStartup, got {other:?}"),
        }
    }
}

/// Worker processes rebuild the tasks and find the pairs and the merge table on disk.
#[cfg(feature = "zarr")]
#[test]
fn components_with_worker_processes() {
    use blockwise::Roi;
    use blockwise::ops::ConnectedComponents;
    use blockwise::store::{ArraySpec, DataType, ZarrArray};

    const TEST: &str = "ops::components_with_worker_processes";
    let dir = crate::support::scratch("ops-components");
    let roi = Roi::new([0, 0, 0], [10, 12, 14]);
    let store = dir.join("data.zarr");
    let (raw, labels) = if crate::support::in_worker() {
        (
            ZarrArray::open(&store, "raw").unwrap(),
            ZarrArray::open(&store, "labels").unwrap(),
        )
    } else {
        let spec = |t| ArraySpec::new(roi.clone(), [1, 1, 1], t, vec![4, 4, 4]);
        let raw = ZarrArray::create(&store, "raw", &spec(DataType::U8)).unwrap();
        let data = ArrayD::from_shape_fn(IxDyn(&[10, 12, 14]), |i| {
            // Planes of stripes that join at the edges of the volume.
            let (z, y, x) = (i[0], i[1], i[2]);
            u8::from(z % 3 == 0 && (y % 4 == 0 || x == 0 || x == 13)) * 200
        });
        raw.write(&roi, data.view()).unwrap();
        let labels = ZarrArray::create(&store, "labels", &spec(DataType::U64)).unwrap();
        (raw, labels)
    };
    let report = ConnectedComponents::new(&raw, &labels)
        .threshold(100.0)
        .num_workers(2)
        .run(&crate::support::runner(TEST, &dir).processes())
        .unwrap();
    assert!(report.is_success(), "{}", report.label);
    let mask = raw.read::<u8>(&roi).unwrap().mapv(|v| v > 100);
    let (whole, n) = label(mask.view(), Connectivity::Faces).unwrap();
    assert_eq!(n, 4); // one comb per plane z = 0, 3, 6, 9
    same_partition(labels.read::<u64>(&roi).unwrap().view(), whole.view()).unwrap();
}
