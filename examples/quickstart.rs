//! daisy's README example, in blockwise: square 4,096,000 values in 250 blocks on worker
//! threads, then sum the squares in a chained reduce task of 16 blocks.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use blockwise::{Block, BlockError, Roi, Task, run_blockwise};

const N: i64 = 4_096_000;
const BLOCK: i64 = 16_384;
const REDUCE_BLOCK: i64 = N / 16;

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

fn main() -> Result<(), blockwise::Error> {
    init_logging();
    // `a` is 0..N; `b` receives the squares; `c` one partial sum per reduce block. Atomics let
    // workers write disjoint parts of one array without locks or unsafe code.
    let b: Arc<Vec<AtomicU64>> = Arc::new((0..N).map(|_| AtomicU64::new(0)).collect());
    let c: Arc<Vec<AtomicU64>> =
        Arc::new((0..N / REDUCE_BLOCK).map(|_| AtomicU64::new(0)).collect());

    let b_square = Arc::clone(&b);
    let square = Task::builder(
        "square",
        Roi::new([0], [N]),
        Roi::new([0], [BLOCK]),
        Roi::new([0], [BLOCK]),
    )
    .process(move |block: &Block| -> Result<(), BlockError> {
        let roi = block.write_roi();
        for x in roi.begin()[0]..roi.end()[0] {
            b_square[x as usize].store((x * x) as u64, Ordering::Relaxed);
        }
        Ok(())
    })
    .num_workers(2)
    .build()?;

    let (b_reduce, c_reduce) = (Arc::clone(&b), Arc::clone(&c));
    let reduce = Task::builder(
        "reduce",
        Roi::new([0], [N]),
        Roi::new([0], [REDUCE_BLOCK]),
        Roi::new([0], [REDUCE_BLOCK]),
    )
    .process(move |block: &Block| -> Result<(), BlockError> {
        let roi = block.write_roi();
        let sum: u64 = (roi.begin()[0]..roi.end()[0])
            .map(|x| b_reduce[x as usize].load(Ordering::Relaxed))
            .sum();
        c_reduce[(roi.begin()[0] / REDUCE_BLOCK) as usize].store(sum, Ordering::Relaxed);
        Ok(())
    })
    .upstream(&square) // each reduce block waits for the square blocks it reads
    .num_workers(2)
    .build()?;

    let start = Instant::now();
    // `square` is run too: upstream tasks are added automatically.
    let summary = run_blockwise([reduce])?;
    let elapsed = start.elapsed();
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        // run_blockwise prints the summary itself when stdout is a terminal.
        println!("{summary}");
    }

    let total: u128 = c
        .iter()
        .map(|s| u128::from(s.load(Ordering::Relaxed)))
        .sum();
    let n = N as u128;
    let expected = (n - 1) * n * (2 * n - 1) / 6;
    println!(
        "b = [0 1 4 ... {}]",
        b[(N - 1) as usize].load(Ordering::Relaxed)
    );
    println!("sum of squares = {total} (expected {expected}) in {elapsed:.2?}");
    if total != expected || !summary.is_success() {
        std::process::exit(1);
    }
    Ok(())
}
