//! The executor: a bounded map over a lazy range of 10^7 items in constant memory.
//!
//! ```text
//! cargo run --release --example map [-- N WINDOW [threads|processes]]
//! ```
//!
//! Maps `x ↦ x + 1` over `0..N` (default 10^7) with at most `WINDOW` (default 64) items in
//! flight on 2 worker threads (or 2 worker processes), folding the results into a sum as they
//! arrive, once with a sliding window and once with barrier batches, and prints the sum, the
//! most items that were in flight at once, and the peak resident memory (which does not grow
//! with N).

use blockwise::exec::{Executor, Function, MapOptions, Mode};
use blockwise::{Progress, WorkerOptions};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

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
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(10_000_000), |a| a.parse())?;
    let window: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let inc = Function::new("inc", |x: u64| Ok::<_, String>(x + 1));
    let ex = match args.next().as_deref() {
        None | Some("threads") => Executor::threads(2),
        // Each worker re-runs this program up to start(), then serves items of `inc`.
        Some("processes") => Executor::processes(2)
            .workers(WorkerOptions::new().log_dir(std::env::temp_dir().join("blockwise-map-logs")))
            .function(&inc)
            .start()?,
        Some(other) => return Err(format!("unknown backend {other:?} (threads, processes)").into()),
    };
    for mode in [Mode::Window, Mode::Barrier] {
        let start = std::time::Instant::now();
        let opts = MapOptions::new(window).mode(mode).progress(Progress::Auto);
        let mut results = ex.bounded_map(inc.clone(), 0..n, opts);
        let mut sum = 0u64;
        for r in results.by_ref() {
            sum += r?;
        }
        println!(
            "{mode:?}: sum of x+1 over 0..{n} = {sum} (expected {}), in {:.2?}; at most {} in flight (window {window}); peak RSS {:.1} MiB",
            n * (n + 1) / 2,
            start.elapsed(),
            results.peak_in_flight(),
            peak_rss_mib()
        );
        if sum != n * (n + 1) / 2 {
            return Err("wrong sum".into());
        }
    }
    Ok(())
}
