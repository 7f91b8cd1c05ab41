//! Criterion benches of the scheduler: enumeration at daisy's benchmark sizes, acquire/release
//! throughput on a large task, and a small end-to-end threaded run.

use std::hint::black_box;
use std::time::Duration;

use blockwise::{Block, BlockError, BlockStatus, Progress, Roi, Runner, Scheduler, Task};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn task(total: Roi, read: Roi, write: Roi, conflict: bool) -> Task {
    match Task::builder("t", total, read, write)
        .read_write_conflict(conflict)
        .process(|_: &Block| Ok::<(), BlockError>(()))
        .num_workers(2)
        .build()
    {
        Ok(t) => t,
        Err(e) => panic!("bench task: {e}"),
    }
}

/// Builds a scheduler and runs every block serially (acquire, succeed, release).
fn serial_run(t: &Task) -> u64 {
    let Ok(mut s) = Scheduler::new(std::slice::from_ref(t)) else {
        return 0;
    };
    let mut n = 0;
    while let Some(mut b) = s.acquire_block("t") {
        b.set_status(BlockStatus::Success);
        s.release_block(b);
        n += 1;
    }
    n
}

fn enumeration(c: &mut Criterion) {
    let mut group = c.benchmark_group("serial_run");
    group
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    // daisy's benchmark_dep_graph.py geometries: 64, 729 and 2744 blocks in 8 levels.
    for (offset, size) in [(10, 10), (5, 20), (0, 30)] {
        let t = task(
            Roi::new([offset; 3], [size; 3]),
            Roi::new([0; 3], [4; 3]),
            Roi::new([1; 3], [2; 3]),
            true,
        );
        group.throughput(Throughput::Elements(t.num_blocks()));
        group.bench_with_input(
            BenchmarkId::new("conflict_3d", t.num_blocks()),
            &t,
            |b, t| {
                b.iter(|| black_box(serial_run(t)));
            },
        );
    }
    let t = task(
        Roi::new([0; 3], [100; 3]),
        Roi::new([0; 3], [2; 3]),
        Roi::new([0; 3], [2; 3]),
        false,
    );
    group.throughput(Throughput::Elements(t.num_blocks()));
    group.bench_with_input(
        BenchmarkId::new("no_conflict_3d", t.num_blocks()),
        &t,
        |b, t| {
            b.iter(|| black_box(serial_run(t)));
        },
    );
    group.finish();
}

fn acquire_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("acquire_release");
    group
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    let t = task(
        Roi::new([0; 3], [1000; 3]),
        Roi::new([0; 3], [1; 3]),
        Roi::new([0; 3], [1; 3]),
        false,
    );
    const BATCH: u64 = 100_000;
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("1e9_block_task_batch_1e5", |b| {
        let Ok(mut s) = Scheduler::new(std::slice::from_ref(&t)) else {
            return;
        };
        b.iter(|| {
            for _ in 0..BATCH {
                if let Some(mut blk) = s.acquire_block("t") {
                    blk.set_status(BlockStatus::Success);
                    s.release_block(blk);
                }
            }
        });
    });
    group.finish();
}

fn end_to_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("run_blockwise");
    group
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    for blocks in [1_000i64, 10_000] {
        let t = task(
            Roi::new([0], [blocks]),
            Roi::new([0], [1]),
            Roi::new([0], [1]),
            false,
        );
        group.throughput(Throughput::Elements(blocks as u64));
        group.bench_with_input(BenchmarkId::new("noop_2_threads", blocks), &t, |b, t| {
            b.iter(|| {
                let runner = Runner::new().progress(Progress::Never).print_summary(false);
                black_box(runner.run([t.clone()]).map(|s| s.completed()).unwrap_or(0))
            });
        });
    }
    group.finish();
}

/// Done-markers: a run recording them against one without (target: under 5% slower), and the
/// rerun of a finished 10^6-block task (target: under 1 s).
fn resume(c: &mut Criterion) {
    let mut group = c.benchmark_group("resume");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    let dir = std::env::temp_dir().join(format!("blockwise-bench-resume-{}", std::process::id()));
    let blocks = 200_000i64;
    let t = task(
        Roi::new([0, 0], [blocks / 500, 500]),
        Roi::new([0, 0], [1, 1]),
        Roi::new([0, 0], [1, 1]),
        false,
    );
    group.throughput(Throughput::Elements(blocks as u64));
    let quiet = || Runner::new().progress(Progress::Never).print_summary(false);
    group.bench_function("noop_2e5_without_markers", |b| {
        b.iter(|| black_box(quiet().run([t.clone()]).map(|s| s.completed()).unwrap_or(0)));
    });
    group.bench_function("noop_2e5_with_markers", |b| {
        b.iter(|| {
            let runner = quiet().run_dir(dir.join("markers")).fresh(true);
            black_box(runner.run([t.clone()]).map(|s| s.completed()).unwrap_or(0))
        });
    });
    let million = task(
        Roi::new([0, 0, 0], [100, 100, 100]),
        Roi::new([0, 0, 0], [1, 1, 1]),
        Roi::new([0, 0, 0], [1, 1, 1]),
        true,
    );
    let finished = dir.join("finished");
    let _ = quiet()
        .run_dir(&finished)
        .fresh(true)
        .run([million.clone()]);
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("rerun_finished_1e6", |b| {
        b.iter(|| {
            let runner = quiet().run_dir(&finished);
            black_box(
                runner
                    .run([million.clone()])
                    .map(|s| s.skipped())
                    .unwrap_or(0),
            )
        });
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, enumeration, acquire_release, end_to_end, resume);
criterion_main!(benches);
