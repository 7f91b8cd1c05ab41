//! Property tests of the block graph and the scheduler against brute-force definitions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;
use crate::blocks::Fit;
use crate::geometry::Roi;

/// A random single-task geometry with a small number of blocks.
#[derive(Debug, Clone)]
struct Geom {
    dims: usize,
    total_offset: Vec<i64>,
    total_shape: Vec<i64>,
    ws: Vec<i64>,
    lo: Vec<i64>,
    hi: Vec<i64>,
    fit: Fit,
    conflict: bool,
}

fn geom(dims: usize) -> impl Strategy<Value = Geom> {
    (
        proptest::collection::vec(-3i64..4, dims),
        proptest::collection::vec(1i64..4, dims),
        proptest::collection::vec(0i64..4, dims),
        proptest::collection::vec(0i64..4, dims),
        proptest::collection::vec(0i64..7, dims),
        proptest::collection::vec(0i64..4, dims),
        prop_oneof![Just(Fit::Valid), Just(Fit::Overhang), Just(Fit::Shrink)],
        any::<bool>(),
    )
        .prop_map(move |(off, ws, lo, hi, cells, rem, fit, conflict)| {
            let total_shape = (0..dims)
                .map(|d| lo[d] + hi[d] + cells[d] * ws[d] + rem[d] % ws[d])
                .collect();
            Geom {
                dims,
                total_offset: off,
                total_shape,
                ws,
                lo,
                hi,
                fit,
                conflict,
            }
        })
}

fn build(id: &str, g: &Geom, upstream: &[&Task], fail: Option<u64>) -> Task {
    let zeros = vec![0i64; g.dims];
    let read_shape: Vec<i64> = (0..g.dims).map(|d| g.lo[d] + g.ws[d] + g.hi[d]).collect();
    let mut b = Task::builder(
        id,
        Roi::new(g.total_offset.clone(), g.total_shape.clone()),
        Roi::new(zeros, read_shape),
        Roi::new(g.lo.clone(), g.ws.clone()),
    )
    .fit(g.fit)
    .read_write_conflict(g.conflict)
    .max_retries(1);
    for u in upstream {
        b = b.upstream(u);
    }
    let _ = fail;
    b.build().expect("valid geometry")
}

fn all_blocks(task: &Task) -> Vec<Block> {
    (0..task.num_blocks())
        .map(|i| task.block(i).unwrap())
        .collect()
}

/// daisy's definition: `u` is upstream of `d` iff `u`'s write ROI, within `u`'s total write
/// ROI, meets `d`'s read ROI.
fn depends(d: &Block, u: &Block, up: &Task) -> bool {
    let w = u.write_roi().intersect(up.total_write_roi());
    !w.is_empty() && w.intersects(d.read_roi())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn intra_graph_is_symmetric_and_levels_have_upstream(g in (1usize..4).prop_flat_map(geom)) {
        let task = build("t", &g, &[], None);
        let grid = &task.inner.grid;
        let blocks = all_blocks(&task);
        let mut ids = std::collections::HashSet::new();
        for b in &blocks {
            prop_assert!(ids.insert(b.block_id()), "duplicate id {}", b.block_id());
            let cell = grid.cell(b.grid_index());
            let mut up = Vec::new();
            grid.intra_upstream(&cell, &mut up);
            prop_assert_eq!(up.len() as u64, grid.intra_upstream_count(&cell));
            if grid.level(&cell) > 0 {
                prop_assert!(!up.is_empty(), "level {} block {} has no upstream", grid.level(&cell), b);
            }
            for u in &up {
                let mut down = Vec::new();
                grid.intra_downstream(u, &mut down);
                prop_assert!(down.contains(&cell));
            }
        }
        // Roots are exactly the level-0 blocks.
        let level0 = blocks.iter().filter(|b| grid.level(&grid.cell(b.grid_index())) == 0).count() as u64;
        prop_assert_eq!(level0, grid.level0_count());
    }

    #[test]
    fn inter_graph_matches_definition(gu in geom(2), gd in geom(2), shift in proptest::collection::vec(-4i64..5, 2)) {
        let up = build("u", &gu, &[], None);
        let mut gd = gd;
        for (o, s) in gd.total_offset.iter_mut().zip(&shift) { *o += s; }
        let down = build("d", &gd, &[&up], None);
        let (ug, dg) = (&up.inner.grid, &down.inner.grid);
        let ublocks = all_blocks(&up);
        for d in all_blocks(&down) {
            let dcell = dg.cell(d.grid_index());
            let mut cells = Vec::new();
            crate::graph::upstream_cells(dg, &dcell, ug, &mut cells);
            let mut got: Vec<u64> = cells.iter().map(|c| ug.linear(c)).collect();
            got.sort_unstable();
            let want: Vec<u64> = ublocks.iter().filter(|u| depends(&d, u, &up)).map(Block::grid_index).collect();
            prop_assert_eq!(&got, &want, "upstream of {}", d);
            prop_assert_eq!(got.len() as u64, crate::graph::upstream_count(dg, &dcell, ug));
        }
        for u in &ublocks {
            let ucell = ug.cell(u.grid_index());
            let mut cells = Vec::new();
            crate::graph::downstream_cells(ug, &ucell, dg, &mut cells);
            let mut got: Vec<u64> = cells.iter().map(|c| dg.linear(c)).collect();
            got.sort_unstable();
            let want: Vec<u64> = all_blocks(&down).iter().filter(|d| depends(d, u, &up)).map(Block::grid_index).collect();
            prop_assert_eq!(&got, &want, "downstream of {}", u);
        }
    }

    /// Random interleavings of acquire and release (with failures) on chained tasks: conflicting
    /// blocks are never in flight together, a block runs only after everything it reads from is
    /// done, nothing succeeds twice, and every block ends completed, failed or orphaned.
    #[test]
    fn random_runs_keep_invariants(
        gu in geom(2),
        gd in geom(2),
        seed in any::<u64>(),
        fail_rate in 0u64..4,
    ) {
        let up = build("u", &gu, &[], None);
        let down = build("d", &gd, &[&up], None);
        let tasks = [up.clone(), down.clone()];
        let mut s = Scheduler::new(&tasks).unwrap();
        let mut rng = seed;
        let mut next = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
        let mut in_flight: Vec<Block> = Vec::new();
        let mut done: std::collections::HashSet<(String, u64)> = Default::default();
        let ublocks = all_blocks(&up);
        let mut steps = 0;
        loop {
            steps += 1;
            prop_assert!(steps < 100_000, "run does not end");
            let acquire = in_flight.is_empty() || next() % 2 == 0;
            let mut got = None;
            if acquire {
                let first = (next() % 2) as usize;
                for t in [first, 1 - first] {
                    if let Some(b) = s.acquire_block(tasks[t].task_id()) { got = Some(b); break; }
                }
            }
            match got {
                Some(b) => {
                    let task = if b.task_id() == "u" { &up } else { &down };
                    if task.read_write_conflict() {
                        for o in in_flight.iter().filter(|o| o.task_id() == b.task_id()) {
                            prop_assert!(!b.read_roi().intersects(o.write_roi()) && !o.read_roi().intersects(b.write_roi()),
                                "{} and {} conflict but run together", b, o);
                        }
                    }
                    if b.task_id() == "d" {
                        for u in ublocks.iter().filter(|u| depends(&b, u, &up)) {
                            prop_assert!(done.contains(&("u".to_owned(), u.grid_index())), "{} runs before its upstream {}", b, u);
                        }
                    }
                    in_flight.push(b);
                }
                None if in_flight.is_empty() => break,
                None => {
                    let i = (next() % in_flight.len() as u64) as usize;
                    let mut b = in_flight.swap_remove(i);
                    let fail = fail_rate > 0 && next() % (4 * fail_rate + 4) == 0;
                    if fail {
                        b.set_status(BlockStatus::Failed);
                    } else {
                        b.set_status(BlockStatus::Success);
                        prop_assert!(done.insert((b.task_id().to_owned(), b.grid_index())), "{} succeeded twice", b);
                    }
                    s.try_release_block(b).unwrap();
                }
            }
        }
        for t in &tasks {
            let st = s.task_state(t.task_id()).unwrap();
            prop_assert_eq!(st.completed + st.failed + st.orphaned, st.total, "{}: {:?}", t.task_id(), st);
            prop_assert_eq!(st.ready + st.processing + st.pending, 0);
            if fail_rate == 0 {
                prop_assert_eq!(st.completed, st.total);
            }
        }
        prop_assert!(s.is_done());
    }
}

#[test]
fn release_of_unknown_or_duplicate_block_is_refused() {
    let task = Task::builder(
        "t",
        Roi::new([0], [20]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .build()
    .unwrap();
    let mut s = Scheduler::new(&[task]).unwrap();
    let mut b = s.acquire_block("t").unwrap();
    let mut copy = b.clone();
    b.set_status(BlockStatus::Success);
    s.try_release_block(b).unwrap();
    copy.set_status(BlockStatus::Success);
    let err = s.try_release_block(copy).unwrap_err().to_string();
    assert_eq!(
        err,
        "cannot release block t/0 with read ROI [0:10] (10) and write ROI [0:10] (10): the block is not in flight"
    );
    let mut c = s.acquire_block("t").unwrap();
    c.set_status(BlockStatus::Processing);
    assert!(
        s.try_release_block(c)
            .unwrap_err()
            .to_string()
            .contains("status Processing")
    );
}
