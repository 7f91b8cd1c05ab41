//! Where daisy 1.x is wrong, blockwise is right (daisy.md §3.11 and acceptance case 30).

use blockwise::{Block, BlockError, BlockStatus, Progress, Roi, Runner, Scheduler, Task};

fn run_all(s: &mut Scheduler, order: &[&str]) -> usize {
    let mut n = 0;
    loop {
        let mut any = false;
        for id in order {
            if let Some(mut b) = s.acquire_block(id) {
                b.set_status(BlockStatus::Success);
                s.release_block(b);
                n += 1;
                any = true;
                break;
            }
        }
        if !any {
            return n;
        }
    }
}

/// daisy reports -1 blocks (and its server never finishes); here: 0 blocks, done at once.
#[test]
fn volume_smaller_than_read_roi_has_zero_blocks() -> Result<(), blockwise::Error> {
    let t = Task::builder(
        "small",
        Roi::new([0], [5]),
        Roi::new([0], [20]),
        Roi::new([5], [10]),
    )
    .read_write_conflict(false)
    .process(|_: &Block| Ok::<(), BlockError>(()))
    .build()?;
    assert_eq!(t.num_blocks(), 0);
    let mut s = Scheduler::new(std::slice::from_ref(&t))?;
    assert!(s.is_done());
    assert!(s.acquire_block("small").is_none());
    let summary = Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .run([t])?;
    assert!(summary.is_success());
    assert_eq!(summary.task("small").map(|s| s.total), Some(0));
    Ok(())
}

/// The valid-gap chain: daisy never schedules downstream block [90, 100) and hangs.
#[test]
fn downstream_block_without_upstream_runs() -> Result<(), Box<dyn std::error::Error>> {
    let up = Task::builder(
        "up",
        Roi::new([0], [100]),
        Roi::new([0], [30]),
        Roi::new([0], [30]),
    )
    .build()?;
    let down = Task::builder(
        "down",
        Roi::new([0], [100]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .upstream(&up)
    .build()?;
    assert_eq!(up.num_blocks(), 3);
    let mut s = Scheduler::new(&[up, down])?;
    // The gap block is a root of `down` from the start.
    assert_eq!(s.task_state("down").map(|st| st.ready), Some(1));
    let first = s.acquire_block("down").ok_or("no gap block")?;
    assert_eq!(first.write_roi(), &Roi::new([90], [10]));
    let mut first = first;
    first.set_status(BlockStatus::Success);
    s.release_block(first);
    assert_eq!(run_all(&mut s, &["up", "down"]), 12);
    let st = s.task_state("down").ok_or("no state")?;
    assert_eq!((st.total, st.completed), (10, 10));
    assert!(s.is_done());
    Ok(())
}

/// A read ROI disjoint from the upstream task's total write ROI crashes daisy (TypeError);
/// here those blocks simply have no upstream blocks.
#[test]
fn disjoint_upstream_does_not_crash() -> Result<(), blockwise::Error> {
    let up = Task::builder(
        "up",
        Roi::new([0, 0], [20, 20]),
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
    )
    .build()?;
    let down = Task::builder(
        "down",
        Roi::new([100, 100], [20, 20]),
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
    )
    .upstream(&up)
    .build()?;
    let mut s = Scheduler::new(&[up, down])?;
    assert_eq!(s.task_state("down").map(|st| st.ready), Some(4));
    assert_eq!(run_all(&mut s, &["down", "up"]), 8);
    assert!(s.is_done());
    Ok(())
}

/// Asymmetric context on a chained task: daisy grows the upstream write ROI the wrong way when
/// looking for dependents; here every downstream block runs exactly once, after its inputs.
#[test]
fn asymmetric_context_chain_completes_exactly_once() -> Result<(), blockwise::Error> {
    let up = Task::builder(
        "up",
        Roi::new([0], [40]),
        Roi::new([0], [1]),
        Roi::new([0], [1]),
    )
    .read_write_conflict(false)
    .build()?;
    let down = Task::builder(
        "down",
        Roi::new([0], [40]),
        Roi::new([0], [6]),
        Roi::new([5], [1]),
    )
    .read_write_conflict(false)
    .upstream(&up)
    .build()?;
    let mut s = Scheduler::new(&[up, down])?;
    let mut seen = std::collections::HashSet::new();
    let mut up_done = std::collections::HashSet::new();
    loop {
        let Some(mut b) = s.acquire_block("up").or_else(|| s.acquire_block("down")) else {
            break;
        };
        if b.task_id() == "down" {
            assert!(seen.insert(b.block_id()), "{b} handed out twice");
            let r = b.read_roi();
            for x in r.begin()[0]..r.end()[0] {
                assert!(up_done.contains(&x), "{b} before up block {x}");
            }
        } else {
            up_done.insert(b.write_roi().begin()[0]);
        }
        b.set_status(BlockStatus::Success);
        s.release_block(b);
    }
    assert_eq!(seen.len(), 35);
    assert!(s.is_done());
    Ok(())
}
