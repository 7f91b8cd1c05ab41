//! Property tests of the block graph and the scheduler against brute-force definitions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;
use crate::TaskBuilder;
use crate::blocks::Fit;
use crate::geometry::Roi;
use std::collections::VecDeque;

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
            let mut keys = Vec::new();
            crate::graph::downstream_keys(ug, &ucell, dg, &mut keys);
            prop_assert_eq!(&keys, &got, "downstream keys of {}", u);
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

/// Runs a scheduler to the end (optionally failing some blocks) and returns the blocks that
/// succeeded, checking dependencies on the way: a block is handed out only when every upstream
/// block (intra- and inter-task) is done, before this run or in it.
fn run_checked(
    s: &mut Scheduler,
    tasks: &[Task],
    before: &std::collections::HashSet<(String, u64)>,
    seed: u64,
    fail_every: u64,
    stop_after: Option<usize>,
    check_conflicts: bool,
) -> Result<Vec<(String, u64)>, TestCaseError> {
    let mut rng = seed | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut in_flight: Vec<Block> = Vec::new();
    let mut succeeded: Vec<(String, u64)> = Vec::new();
    let mut done = before.clone();
    let mut steps = 0;
    loop {
        steps += 1;
        prop_assert!(steps < 100_000, "run does not end");
        if stop_after.is_some_and(|n| succeeded.len() >= n) {
            return Ok(succeeded);
        }
        let mut got = None;
        if in_flight.is_empty() || next() % 2 == 0 {
            let first = (next() % tasks.len() as u64) as usize;
            for k in 0..tasks.len() {
                let t = &tasks[(first + k) % tasks.len()];
                if let Some(b) = s.acquire_block(t.task_id()) {
                    got = Some(b);
                    break;
                }
            }
        }
        match got {
            Some(b) => {
                let key = (b.task_id().to_owned(), b.grid_index());
                prop_assert!(!done.contains(&key), "{} handed out but already done", b);
                let task = tasks.iter().find(|t| t.task_id() == b.task_id()).unwrap();
                // Intra-task: blocks of lower levels that write what this block reads.
                let grid = &task.inner.grid;
                let mut up = Vec::new();
                grid.intra_upstream(&grid.cell(b.grid_index()), &mut up);
                for c in up {
                    let k = (b.task_id().to_owned(), grid.linear(&c));
                    prop_assert!(done.contains(&k), "{} runs before its upstream {:?}", b, k);
                }
                for u in task.upstream_tasks() {
                    for ub in all_blocks(u).iter().filter(|ub| depends(&b, ub, u)) {
                        let k = (u.task_id().to_owned(), ub.grid_index());
                        prop_assert!(done.contains(&k), "{} runs before its upstream {:?}", b, k);
                    }
                }
                if check_conflicts && task.read_write_conflict() {
                    for o in in_flight.iter().filter(|o| o.task_id() == b.task_id()) {
                        prop_assert!(
                            !b.read_roi().intersects(o.write_roi())
                                && !o.read_roi().intersects(b.write_roi()),
                            "{} and {} conflict but run together",
                            b,
                            o
                        );
                    }
                }
                in_flight.push(b);
            }
            None if in_flight.is_empty() => return Ok(succeeded),
            None => {
                let i = (next() % in_flight.len() as u64) as usize;
                let mut b = in_flight.swap_remove(i);
                if fail_every > 0 && next() % fail_every == 0 {
                    b.set_status(BlockStatus::Failed);
                } else {
                    b.set_status(BlockStatus::Success);
                    let key = (b.task_id().to_owned(), b.grid_index());
                    prop_assert!(done.insert(key.clone()), "{} succeeded twice", b);
                    succeeded.push(key);
                }
                s.try_release_block(b).unwrap();
            }
        }
    }
}

fn done_sets(
    tasks: &[Task],
    s: &Scheduler,
    done: &std::collections::HashSet<(String, u64)>,
) -> Vec<DoneSet> {
    s.tasks()
        .map(|t| {
            let _ = tasks;
            DoneSet::from_indices(
                t.num_blocks(),
                done.iter()
                    .filter(|(id, _)| id == t.task_id())
                    .map(|(_, k)| *k),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A run resumed from done-markers hands out exactly the blocks not done, each once and
    /// only after its upstream blocks, whether the markers come from an interrupted run (a
    /// prefix of the release order) or are an arbitrary subset; done blocks count as skipped.
    #[test]
    fn resumed_runs_do_exactly_the_rest(
        gu in geom(2),
        gd in geom(2),
        seed in any::<u64>(),
        from_a_run in any::<bool>(),
        stop_at in 0usize..60,
        keep in proptest::collection::vec(any::<bool>(), 0..80),
        fail_every in prop_oneof![Just(0u64), 3u64..8],
    ) {
        let up = build("u", &gu, &[], None);
        let down = build("d", &gd, &[&up], None);
        let tasks = [up.clone(), down.clone()];
        let none = std::collections::HashSet::new();
        let before: std::collections::HashSet<(String, u64)> = if from_a_run {
            let mut first = Scheduler::new(&tasks).unwrap();
            run_checked(&mut first, &tasks, &none, seed, 0, Some(stop_at), true)?.into_iter().collect()
        } else {
            let mut i = 0;
            let mut set = std::collections::HashSet::new();
            for t in &tasks {
                for k in 0..t.num_blocks() {
                    if keep.get(i).copied().unwrap_or(false) {
                        set.insert((t.task_id().to_owned(), k));
                    }
                    i += 1;
                }
            }
            set
        };
        let mut s = Scheduler::new(&tasks).unwrap();
        let sets = done_sets(&tasks, &s, &before);
        s.resume(sets).unwrap();
        for t in &tasks {
            let st = s.task_state(t.task_id()).unwrap();
            let n = before.iter().filter(|(id, _)| id == t.task_id()).count() as u64;
            prop_assert_eq!((st.skipped, st.completed), (n, n));
        }
        // Markers from a run are closed under dependencies (the journal keeps them so), and then
        // conflicting blocks never run together; an arbitrary subset only keeps the order.
        let ran = run_checked(&mut s, &tasks, &before, seed ^ 0x5555, fail_every, None, from_a_run)?;
        for k in &ran {
            prop_assert!(!before.contains(k), "{:?} was done and ran again", k);
        }
        for t in &tasks {
            let st = s.task_state(t.task_id()).unwrap();
            prop_assert_eq!(st.completed + st.failed + st.orphaned, st.total, "{}: {:?}", t.task_id(), st);
            prop_assert_eq!(st.ready + st.processing + st.pending, 0);
            if fail_every == 0 {
                prop_assert_eq!(st.completed, st.total);
                let here = ran.iter().filter(|(id, _)| id == t.task_id()).count() as u64;
                prop_assert_eq!(here + st.skipped, st.total);
            }
        }
        prop_assert!(s.is_done());
    }
}

#[test]
fn a_finished_task_is_skipped_whole_and_releases_its_downstream() {
    let up = Task::builder(
        "u",
        Roi::new([0], [1000]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .build()
    .unwrap();
    let down = Task::builder(
        "d",
        Roi::new([0], [1000]),
        Roi::new([-10], [30]),
        Roi::new([0], [10]),
    )
    .upstream(&up)
    .build()
    .unwrap();
    let mut s = Scheduler::new(&[up.clone(), down.clone()]).unwrap();
    s.resume(vec![DoneSet::full(100), DoneSet::empty(down.num_blocks())])
        .unwrap();
    let st = s.task_state("u").unwrap().clone();
    assert_eq!(
        (st.total, st.completed, st.skipped, st.ready),
        (100, 100, 100, 0)
    );
    assert!(st.is_done());
    // The downstream task does not wait for anything: daisy's fresh order over its roots.
    let d = s.task_state("d").unwrap();
    assert_eq!(d.ready, down.inner.grid.level0_count());
    assert!(s.acquire_block("u").is_none());
    let mut n = 0;
    while let Some(mut b) = s.acquire_block("d") {
        b.set_status(BlockStatus::Success);
        s.release_block(b);
        n += 1;
    }
    assert_eq!(n, down.num_blocks());
    assert!(s.is_done());
}

#[test]
fn resume_is_refused_after_blocks_were_handed_out() {
    let t = Task::builder(
        "t",
        Roi::new([0], [100]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .build()
    .unwrap();
    let mut s = Scheduler::new(std::slice::from_ref(&t)).unwrap();
    let _b = s.acquire_block("t").unwrap();
    assert!(s.resume(vec![DoneSet::empty(10)]).is_err());
    let mut s = Scheduler::new(&[t]).unwrap();
    assert!(s.resume(vec![DoneSet::empty(11)]).is_err());
}

/// Drives a run the way the runners do: `workers` blocks in flight, handed out task by task,
/// released oldest first but with neighbours swapped when `swap` (two workers finishing in
/// turn); returns the peak number of queue runs and of waiting blocks over all tasks.
fn frontier_peaks(tasks: &[Task], workers: usize, swap: bool, window: usize) -> (usize, usize) {
    let mut s = Scheduler::new(tasks).unwrap();
    s.set_queue_window(window);
    let ids: Vec<String> = s.tasks().map(|t| t.task_id().to_owned()).collect();
    let mut in_flight: VecDeque<Block> = VecDeque::new();
    let (mut runs, mut waiting) = (0, 0);
    let mut flip = false;
    loop {
        for id in &ids {
            while in_flight.len() < workers {
                match s.acquire_block(id) {
                    Some(b) => in_flight.push_back(b),
                    None => break,
                }
            }
        }
        runs = runs.max(s.tasks.iter().map(|e| e.queue.runs()).sum());
        waiting = waiting.max(s.tasks.iter().map(|e| e.waiting.len()).sum());
        let next = if swap && in_flight.len() > 1 && flip {
            in_flight.remove(1)
        } else {
            in_flight.pop_front()
        };
        flip = !flip;
        let Some(mut b) = next else { break };
        b.set_status(BlockStatus::Success);
        s.release_block(b);
    }
    assert!(s.is_done());
    (runs, waiting)
}

fn conflict_task(id: &str, counts: [i64; 3], context: i64, conflict: bool) -> TaskBuilder {
    let total: Vec<i64> = counts.iter().map(|c| c + 2 * context).collect();
    let c = context;
    Task::builder(
        id,
        Roi::new([0, 0, 0], total),
        Roi::new([0, 0, 0], [1 + 2 * c, 1 + 2 * c, 1 + 2 * c]),
        Roi::new([c, c, c], [1, 1, 1]),
    )
    .read_write_conflict(conflict)
}

#[test]
fn a_conflict_tasks_queue_takes_a_run_per_row_and_its_wavefront_a_plane() {
    for n in [200, 800] {
        // Long rows (8 × 8 of them): daisy's order hands out every root first, so a whole
        // level (8·n blocks) waits in the queue; with the runners' window it takes a few runs
        // per row, however long the rows are.
        let long_rows = conflict_task("t", [8, 8, n], 1, true).build().unwrap();
        let (runs, _) = frontier_peaks(
            std::slice::from_ref(&long_rows),
            4,
            true,
            super::RUNNER_QUEUE_WINDOW,
        );
        assert!(runs <= 64, "[8, 8, {n}]: {runs} runs");
        // A long first axis: the blocks some of whose upstream blocks are done stay within
        // about a plane (8 × 8) of the sweep, in either order.
        let long_z = conflict_task("t", [n, 8, 8], 1, true).build().unwrap();
        for (swap, window) in [(false, 1), (true, super::RUNNER_QUEUE_WINDOW)] {
            let (_, waiting) = frontier_peaks(std::slice::from_ref(&long_z), 4, swap, window);
            assert!(waiting <= 64, "[{n}, 8, 8], swap {swap}: {waiting} waiting");
        }
    }
}

#[test]
fn a_chains_wavefront_is_a_plane_of_the_sweep() {
    for n in [200, 800] {
        let up = conflict_task("up", [n, 8, 8], 0, false).build().unwrap();
        // Each downstream block reads 1 voxel around it: 27 upstream blocks.
        let down = conflict_task("down", [n, 8, 8], 1, false)
            .upstream(&up)
            .build()
            .unwrap();
        let (_, waiting) = frontier_peaks(&[down], 4, true, super::RUNNER_QUEUE_WINDOW);
        assert!(waiting <= 3 * 64, "[{n}, 8, 8]: {waiting} waiting");
    }
}

/// Drives chained tasks the way the runners do: task `i` has `slots[i]` blocks in flight at
/// most (its own workers), the oldest block finishes first, and (if `hold`) a task the
/// scheduler holds back gets no new block; the scheduler holds back above 512 waiting blocks.
/// Returns the peak number of waiting blocks.
fn chain_waiting_peak(tasks: &[Task], slots: &[usize], hold: bool) -> usize {
    let mut s = Scheduler::new(tasks).unwrap();
    s.set_queue_window(super::RUNNER_QUEUE_WINDOW);
    s.hold_min = 512;
    let ids: Vec<String> = s.tasks().map(|t| t.task_id().to_owned()).collect();
    let mut in_flight: VecDeque<(usize, Block)> = VecDeque::new();
    let mut count = vec![0usize; ids.len()];
    let mut peak = 0;
    loop {
        for (i, id) in ids.iter().enumerate() {
            while count[i] < slots[i] && !(hold && s.is_held_back(id)) {
                match s.acquire_block(id) {
                    Some(b) => {
                        count[i] += 1;
                        in_flight.push_back((i, b));
                    }
                    None => break,
                }
            }
        }
        peak = peak.max(s.tasks.iter().map(|e| e.waiting.len()).sum());
        let Some((i, mut b)) = in_flight.pop_front() else {
            break;
        };
        count[i] -= 1;
        b.set_status(BlockStatus::Success);
        s.release_block(b);
    }
    assert!(s.is_done());
    for id in &ids {
        let st = s.task_state(id).unwrap();
        assert_eq!(st.completed, st.total, "{id}");
    }
    peak
}

#[test]
fn an_upstream_task_is_held_back_while_its_downstream_task_works_through_its_lead() {
    // The bench's chain: the upstream task without conflicts, four times as fast, runs ahead
    // of the downstream one, which reads 1 voxel of context and has conflicts.
    let chain = |n: i64| {
        let up = conflict_task("up", [n, 8, 8], 0, false).build().unwrap();
        let down = conflict_task("down", [n, 8, 8], 1, true)
            .upstream(&up)
            .build()
            .unwrap();
        [up, down]
    };
    for n in [100, 400] {
        let tasks = chain(n);
        let free = chain_waiting_peak(&tasks, &[8, 2], false);
        let held = chain_waiting_peak(&tasks, &[8, 2], true);
        // Without holding back, the upstream task's lead grows with the task.
        assert!(free as i64 > 8 * n, "{n}: {free} waiting");
        // Held back, the set stays at the limit (plus what the blocks in flight release).
        assert!(held <= 512 + 256, "{n}: {held} waiting");
    }
    // Under the limit, nothing is held back: the same run either way.
    let tasks = chain(4);
    assert_eq!(
        chain_waiting_peak(&tasks, &[8, 2], true),
        chain_waiting_peak(&tasks, &[8, 2], false)
    );
}
