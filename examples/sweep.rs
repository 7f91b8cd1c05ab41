//! A parameter sweep: the foreground fraction of the sample volume for every pair of smoothing
//! radius and threshold, with a progress monitor, live status and results keyed by parameters.
//!
//! ```text
//! cargo run --release --example sweep [-- processes]
//! ```
//!
//! The volume (64³, generated once) is scattered: every call reads it, but each worker gets
//! it once (on threads it is shared in place). The same code runs on 2 threads (default) or 2
//! worker processes (`processes`), which re-run this program up to `start()` and then serve
//! calls of the registered function.

use blockwise::exec::{Executor, Function, Sweeps, scattered};
use blockwise::sample::SampleSpec;
use blockwise::{Progress, WorkerOptions};

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
    // Parameters: [radius, threshold]; the first list varies slowest.
    let foreground = Function::new("foreground", |p: Vec<u32>| -> Result<f64, String> {
        let v = scattered::<Vec<u8>>("volume").ok_or("the volume was not scattered")?;
        {
            let (radius, threshold) = (p[0] as usize, p[1] as u8);
            let n = 64usize;
            let at = |z: usize, y: usize, x: usize| u32::from(v[(z * n + y) * n + x]);
            let mut fg = 0u64;
            for z in radius..n - radius {
                for y in radius..n - radius {
                    for x in radius..n - radius {
                        // A box mean along x only: cheap, but depends on both parameters.
                        let sum: u32 = (x - radius..=x + radius).map(|xx| at(z, y, xx)).sum();
                        if sum / (2 * radius as u32 + 1) > u32::from(threshold) {
                            fg += 1;
                        }
                    }
                }
            }
            let inner = (n - 2 * radius).pow(3) as f64;
            Ok(fg as f64 / inner)
        }
    });
    let count = Function::new("count", |p: Vec<u32>| Ok::<_, String>(p.len() as f64));
    let ex = match std::env::args().nth(1).as_deref() {
        Some("processes") => Executor::processes(2)
            .workers(
                WorkerOptions::new().log_dir(std::env::temp_dir().join("blockwise-sweep-logs")),
            )
            .function(&foreground)
            .function(&count)
            .start()?,
        None | Some("threads") => Executor::threads(2),
        Some(other) => return Err(format!("unknown backend {other:?} (threads, processes)").into()),
    };
    println!("backend: {ex:?}");
    let spec = SampleSpec::cube(64);
    ex.scatter("volume", spec.generate(&spec.roi()))?;
    let mut sweeps = Sweeps::new();
    let run = sweeps.run(
        &ex,
        "smooth-threshold",
        foreground,
        vec![vec![1, 2, 4], vec![60, 100, 140]],
        2,
    );
    println!(
        "{} calls ({} combinations × 2 repeats)",
        run.len(),
        run.combos().len()
    );
    let last = run.monitor(Progress::Auto, |s| eprintln!("status: {s}"));
    println!("final: {last}");
    for (repeat, params, result) in run.gather_by_params().into_iter().filter(|r| r.0 == 0) {
        println!(
            "radius {:>2}, threshold {:>3}: foreground {:.4} (repeat {repeat})",
            params[0], params[1], result?
        );
    }
    // The run stays available by name after others start.
    let again = sweeps.run(&ex, "single", count, vec![], 3);
    again.gather();
    println!(
        "runs: {:?}; \"smooth-threshold\" still has {} results",
        sweeps.runs().iter().map(|r| r.name()).collect::<Vec<_>>(),
        sweeps
            .get("smooth-threshold")
            .map_or(0, |r| r.gather().len())
    );
    Ok(())
}
