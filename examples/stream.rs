//! A streaming pipeline: frames arrive one at a time, are reduced in parallel on an executor
//! (at most 4 in flight, the source waiting beyond that), come back in order, and feed a
//! running total and a sliding mean; `close()` returns only when every frame is through.
//!
//! ```text
//! cargo run --release --example stream [-- threads|processes]
//! ```
//!
//! The parallel section runs on 2 threads (default) or 2 worker processes.

use blockwise::exec::{Executor, Function, Source};
use blockwise::sample::SampleSpec;
use blockwise::{Roi, WorkerOptions};

/// Logs to stderr, as `RUST_LOG` says (default: warnings), like the `blockwise` binary.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::WARN.into())
        .from_env_lossy();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    // A "frame" is the index of a 64×64 slice of the sample volume.
    let slice_sum = Function::new("slice_sum", |z: i64| -> Result<u64, String> {
        let spec = SampleSpec::cube(64);
        let slice = spec.generate(&Roi::new([z, 0, 0], [1, 64, 64]));
        Ok(slice.iter().map(|&v| u64::from(v)).sum())
    });
    let ex = match std::env::args().nth(1).as_deref() {
        None | Some("threads") => Executor::threads(2),
        Some("processes") => Executor::processes(2)
            .workers(
                WorkerOptions::new().log_dir(std::env::temp_dir().join("blockwise-stream-logs")),
            )
            .function(&slice_sum)
            .start()?,
        Some(other) => return Err(format!("unknown backend {other:?} (threads, processes)").into()),
    };
    let source = Source::<i64>::new();
    let sums = source
        .stream()
        .scatter(&ex)
        .map(slice_sum)
        .buffer(4)
        .gather();
    let totals = sums
        .accumulate(|a, b| Ok::<_, String>(a + b))
        .sink_to_list();
    let means = sums
        .sliding_window(8)
        .map(|w: Vec<u64>| Ok::<_, String>(w.iter().sum::<u64>() as f64 / w.len() as f64))
        .sink_to_list();
    let groups = sums.partition(10).sink_to_list();
    for z in 0..64 {
        source.emit(z)?;
    }
    source.close()?;
    let totals = totals.lock().map_err(|e| e.to_string())?;
    let means = means.lock().map_err(|e| e.to_string())?;
    let groups = groups.lock().map_err(|e| e.to_string())?;
    println!(
        "64 slices: running total {:?} ... {:?}",
        totals.first(),
        totals.last()
    );
    println!(
        "sliding mean over 8 slices: {} values, last {:.1}",
        means.len(),
        means.last().copied().unwrap_or(0.0)
    );
    println!(
        "groups of 10: {} (the last one, flushed at close, has {})",
        groups.len(),
        groups.last().map_or(0, Vec::len)
    );
    Ok(())
}
