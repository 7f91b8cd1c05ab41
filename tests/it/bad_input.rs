//! Invalid tasks are errors that name the task and the offending values, never panics.

use std::time::Duration;

use blockwise::{Error, Roi, Scheduler, Task};

fn err_text(r: Result<Task, Error>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn dims_mismatch() {
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0, 0], [10, 10]),
            Roi::new([0], [5]),
            Roi::new([0], [5]),
        )
        .build(),
    );
    assert_eq!(
        e,
        "task \"t\": dimension mismatch: total ROI [0:10, 0:10] (10, 10) has 2 dims, read ROI [0:5] (5) has 1, write ROI [0:5] (5) has 1"
    );
}

#[test]
fn empty_and_negative_shapes() {
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0], [10]),
            Roi::new([0], [5]),
            Roi::new([0], [0]),
        )
        .build(),
    );
    assert_eq!(
        e,
        "task \"t\": write ROI [empty ROI] has a non-positive shape in axis 0"
    );
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0], [10]),
            Roi::new([0], [-5]),
            Roi::new([0], [1]),
        )
        .build(),
    );
    assert_eq!(
        e,
        "task \"t\": read ROI [empty ROI] has a non-positive shape in axis 0"
    );
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0, 0], [10, -1]),
            Roi::new([0, 0], [5, 5]),
            Roi::new([0, 0], [5, 5]),
        )
        .build(),
    );
    assert_eq!(
        e,
        "task \"t\": total ROI [empty ROI] has a negative shape in axis 1"
    );
}

#[test]
fn write_outside_read_with_conflicts() {
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0], [100]),
            Roi::new([0], [10]),
            Roi::new([5], [10]),
        )
        .build(),
    );
    assert_eq!(
        e,
        "task \"t\": with read_write_conflict the read ROI must contain the write ROI, but read ROI [0:10] (10) does not contain write ROI [5:15] (10)"
    );
    // Without conflicts it is allowed (daisy does not check it either).
    let t = Task::builder(
        "t",
        Roi::new([0], [100]),
        Roi::new([0], [10]),
        Roi::new([5], [10]),
    )
    .read_write_conflict(false)
    .build();
    assert!(t.is_ok());
}

#[test]
fn bad_ids_workers_and_timeouts() {
    let roi = || Roi::new([0], [10]);
    assert_eq!(
        err_text(Task::builder("", roi(), roi(), roi()).build()),
        "task \"\": the task id is empty"
    );
    assert!(
        err_text(Task::builder("a/b", roi(), roi(), roi()).build())
            .contains("must not contain '/'")
    );
    assert_eq!(
        err_text(
            Task::builder("t", roi(), roi(), roi())
                .num_workers(0)
                .build()
        ),
        "task \"t\": num_workers is 0; it must be at least 1"
    );
    assert_eq!(
        err_text(
            Task::builder("t", roi(), roi(), roi())
                .timeout(Duration::ZERO)
                .build()
        ),
        "task \"t\": timeout is zero; it must be positive"
    );
}

#[test]
fn duplicate_ids() -> Result<(), Error> {
    let roi = || Roi::new([0], [10]);
    let a = Task::builder("same", roi(), roi(), roi()).build()?;
    let b = Task::builder("same", roi(), roi(), roi()).build()?;
    let e = Scheduler::new(&[a.clone(), b]).err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("duplicate task id \"same\": two different tasks use it")
    );
    // The same task given twice (or reachable twice) is fine.
    let c = Task::builder("c", roi(), roi(), roi())
        .upstream(&a)
        .build()?;
    assert!(Scheduler::new(&[a, c]).is_ok());
    Ok(())
}

#[test]
fn unknown_upstream_and_cycles() -> Result<(), Error> {
    let roi = || Roi::new([0], [10]);
    let a = Task::builder("a", roi(), roi(), roi())
        .upstream_id("ghost")
        .build()?;
    let e = Scheduler::new(&[a]).err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("task \"a\": unknown upstream task \"ghost\"")
    );

    let a = Task::builder("a", roi(), roi(), roi())
        .upstream_id("c")
        .build()?;
    let b = Task::builder("b", roi(), roi(), roi())
        .upstream(&a)
        .build()?;
    let c = Task::builder("c", roi(), roi(), roi())
        .upstream(&b)
        .build()?;
    let e = Scheduler::new(&[c]).err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("task dependencies form a cycle through [\"a\", \"b\", \"c\"]")
    );
    let selfloop = Task::builder("s", roi(), roi(), roi())
        .upstream_id("s")
        .build()?;
    assert!(matches!(
        Scheduler::new(&[selfloop]),
        Err(Error::Cycle { .. })
    ));
    Ok(())
}

#[test]
fn chained_tasks_of_different_dims() -> Result<(), Error> {
    let a = Task::builder(
        "a",
        Roi::new([0], [10]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .build()?;
    let b = Task::builder(
        "b",
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
        Roi::new([0, 0], [10, 10]),
    )
    .upstream(&a)
    .build()?;
    let e = Scheduler::new(&[b]).err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("task \"b\": its ROIs have 2 dims but its upstream task \"a\" has 1")
    );
    Ok(())
}

#[test]
fn negative_block_ids_are_refused() {
    // Without conflicts the write ROI may leave the read ROI, but not so far that ids go negative.
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0], [100]),
            Roi::new([20], [10]),
            Roi::new([0], [10]),
        )
        .read_write_conflict(false)
        .build(),
    );
    assert!(e.contains("would give negative block ids"), "{e}");
}

#[test]
fn run_blockwise_reports_invalid_graphs() -> Result<(), Error> {
    let roi = || Roi::new([0], [10]);
    let a = Task::builder("a", roi(), roi(), roi())
        .process(|_| Ok::<(), blockwise::BlockError>(()))
        .upstream_id("nope")
        .build()?;
    assert!(matches!(
        blockwise::run_blockwise([a]),
        Err(Error::UnknownUpstream { .. })
    ));
    Ok(())
}

#[test]
fn writes_must_cover_whole_chunks() {
    use blockwise::store::ChunkGrid;
    let grid = || ChunkGrid {
        name: "out.zarr/smoothed".into(),
        path: None,
        offset: [0, 0].into(),
        chunk: [64, 64].into(),
        array_id: None,
    };
    // Blocks write 64×64 with 8 voxels of context: aligned.
    let ok = Task::builder(
        "t",
        Roi::new([-8, -8], [528, 528]),
        Roi::new([-8, -8], [80, 80]),
        Roi::new([0, 0], [64, 64]),
    )
    .writes(grid())
    .build();
    assert!(ok.is_ok());
    // Blocks of 32: two blocks would share each chunk.
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0, 0], [512, 512]),
            Roi::new([0, 0], [32, 32]),
            Roi::new([0, 0], [32, 32]),
        )
        .writes(grid())
        .build(),
    );
    assert!(e.starts_with("task \"t\": array out.zarr/smoothed (chunks of (64, 64) world units from (0, 0)): the write shape (32, 32)"), "{e}");
    // Total ROI starting off the grid.
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([4, 0], [512, 512]),
            Roi::new([0, 0], [64, 64]),
            Roi::new([0, 0], [64, 64]),
        )
        .writes(grid())
        .build(),
    );
    assert!(
        e.contains("begins at (4, 0), which is not on the chunk grid"),
        "{e}"
    );
}

/// A task whose ROIs or blocks would leave the i64 range is refused, naming the overflow.
#[test]
fn overflowing_total_roi_is_refused() {
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([i64::MAX - 5], [100]),
            Roi::new([0], [10]),
            Roi::new([0], [10]),
        )
        .build(),
    );
    assert!(e.starts_with("task \"t\": the total ROI: the end of the ROI with offset (9223372036854775802,) and shape (100,) overflows i64 in axis 0"), "{e}");
    // Display of the overflowing ROI is exact too (no wrapped negative end).
    assert_eq!(
        Roi::new([i64::MAX - 5], [100]).to_string(),
        "[9223372036854775802:9223372036854775902] (100)"
    );
    // The same for the read and write ROIs, in any axis.
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0, 0], [100, 100]),
            Roi::new([0, i64::MAX - 1], [10, 10]),
            Roi::new([0, 0], [10, 10]),
        )
        .read_write_conflict(false)
        .build(),
    );
    assert!(
        e.starts_with("task \"t\": the read ROI: the end of the ROI") && e.contains("axis 1"),
        "{e}"
    );
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0, 0], [100, 100]),
            Roi::new([0, 0], [10, 10]),
            Roi::new([0, i64::MAX], [10, 10]),
        )
        .read_write_conflict(false)
        .build(),
    );
    assert!(
        e.starts_with("task \"t\": the write ROI: the end of the ROI") && e.contains("axis 1"),
        "{e}"
    );
}

#[test]
fn huge_contexts_near_the_limits_are_refused() {
    // The total write ROI begins past i64::MAX.
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([i64::MAX - 10], [10]),
            Roi::new([0], [1 << 62]),
            Roi::new([1 << 61], [1]),
        )
        .build(),
    );
    assert!(
        e.contains("the begin of the total write ROI") && e.contains("overflows i64"),
        "{e}"
    );
    // The context itself overflows (write ROI near the top, read ROI near the bottom).
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0], [100]),
            Roi::new([i64::MIN], [10]),
            Roi::new([i64::MAX - 10], [5]),
        )
        .read_write_conflict(false)
        .build(),
    );
    assert!(
        e.contains("the context below the write ROI") && e.contains("overflows i64"),
        "{e}"
    );
    // A write ROI starting before the read ROI grows the total write ROI past i64::MAX.
    let e = err_text(
        Task::builder(
            "t",
            Roi::new([0], [i64::MAX]),
            Roi::new([0], [1]),
            Roi::new([-4], [5]),
        )
        .read_write_conflict(false)
        .build(),
    );
    assert!(e.contains("the shape of the total write ROI"), "{e}");
}

#[test]
fn blocks_past_the_limit_are_refused() {
    let builder = |fit| {
        Task::builder(
            "t",
            Roi::new([i64::MAX - 100], [100]),
            Roi::new([0], [10]),
            Roi::new([1], [8]),
        )
        .fit(fit)
    };
    // Valid blocks stay inside the total ROI, which ends at i64::MAX.
    assert!(builder(blockwise::Fit::Valid).build().is_ok());
    // The last overhanging block would read and write past i64::MAX; shrinking happens only after
    // the unclipped ROI is computed, so it is refused too.
    for fit in [blockwise::Fit::Overhang, blockwise::Fit::Shrink] {
        let e = err_text(builder(fit).build());
        assert!(
            e.contains("the end of the last block's read ROI is 9223372036854775813 in axis 0, which overflows i64"),
            "{fit}: {e}"
        );
    }
}

#[test]
fn blocks_that_exactly_fit_build_and_run() -> Result<(), Error> {
    use std::sync::{Arc, Mutex};
    // Axis 0 starts at i64::MIN, axis 1 ends at i64::MAX; the last read ROI ends exactly there.
    let total = Roi::new([i64::MIN, i64::MAX - 102], [102, 102]);
    let seen: Arc<Mutex<Vec<(Roi, Roi)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let task = Task::builder(
        "edge",
        total.clone(),
        Roi::new([0, 0], [12, 12]),
        Roi::new([1, 1], [10, 10]),
    )
    .process(move |b| {
        record
            .lock()
            .map_err(|e| e.to_string())?
            .push((b.read_roi().clone(), b.write_roi().clone()));
        Ok::<(), blockwise::BlockError>(())
    })
    .build()?;
    assert_eq!(task.num_blocks(), 100);
    let last = task.block(99).ok_or_else(|| Error::Io {
        context: "block 99".into(),
        source: std::io::Error::other("no block 99"),
    })?;
    assert_eq!(
        last.read_roi(),
        &Roi::new([i64::MIN + 90, i64::MAX - 12], [12, 12])
    );
    assert_eq!(last.read_roi().end()[1], i64::MAX);
    let summary = blockwise::run_blockwise([task])?;
    assert!(summary.is_success());
    let seen = seen.lock().map_err(|e| Error::Io {
        context: "the record of blocks".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    assert_eq!(seen.len(), 100);
    let inner = Roi::new([i64::MIN + 1, i64::MAX - 101], [100, 100]);
    for (read, write) in seen.iter() {
        assert!(total.contains(read), "{read} outside {total}");
        assert!(inner.contains(write), "{write} outside {inner}");
        assert!(read.contains(write));
    }
    Ok(())
}

#[test]
fn chained_tasks_at_opposite_limits_do_not_overflow() -> Result<(), Error> {
    // Each task fits on its own; the distance between them does not fit in an i64.
    let low = Task::builder(
        "low",
        Roi::new([i64::MIN], [100]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .process(|_| Ok::<(), blockwise::BlockError>(()))
    .build()?;
    let high = Task::builder(
        "high",
        Roi::new([i64::MAX - 100], [100]),
        Roi::new([0], [10]),
        Roi::new([0], [10]),
    )
    .process(|_| Ok::<(), blockwise::BlockError>(()))
    .upstream(&low)
    .build()?;
    let mut scheduler = Scheduler::new(std::slice::from_ref(&high))?;
    // No block of `high` reads what `low` writes, so all of them are ready at once.
    let mut ready = 0;
    while scheduler.acquire_block("high").is_some() {
        ready += 1;
    }
    assert_eq!(ready, 10);
    let summary = blockwise::run_blockwise([high])?;
    assert!(summary.is_success());
    Ok(())
}

#[test]
fn chunk_grids_far_from_the_task_do_not_overflow() {
    use blockwise::store::ChunkGrid;
    let builder = |chunk_offset: i64| {
        Task::builder(
            "t",
            Roi::new([i64::MAX - 128], [128]),
            Roi::new([0], [64]),
            Roi::new([0], [64]),
        )
        .writes(ChunkGrid {
            name: "far.zarr/a".into(),
            path: None,
            offset: [chunk_offset].into(),
            chunk: [64].into(),
            array_id: None,
        })
        .build()
    };
    // i64::MAX - 128 - i64::MIN = 2^64 - 129 does not fit in an i64; 2^64 - 129 - 63 = 2^64 - 192
    // is a multiple of 64, so the grid at i64::MIN + 63 is aligned and the one at i64::MIN is not.
    assert!(builder(i64::MIN + 63).is_ok());
    let e = err_text(builder(i64::MIN));
    assert!(e.contains("which is not on the chunk grid"), "{e}");
}
