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
