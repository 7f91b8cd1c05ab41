//! The `blockwise` command line: benchmarks (and, as they arrive, sample data and run status).
//!
//! Exit codes: 0 success, 1 some blocks failed, 2 error.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use blockwise::{Block, BlockError, Progress, Roi, Runner, Task};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "blockwise",
    version,
    about = "Process huge n-dimensional volumes block by block"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a benchmark scenario and report throughput, wall time and peak memory.
    Bench {
        #[command(subcommand)]
        scenario: Scenario,
    },
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// No-op blocks (read ROI = write ROI, no conflicts) in one task: measures scheduling and
    /// hand-off overhead end to end.
    Noop(NoopArgs),
}

#[derive(Args, Debug)]
struct NoopArgs {
    /// Number of blocks.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    blocks: u64,
    /// Number of worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4096))]
    workers: u64,
    /// Number of dimensions of the volume (the blocks are spread over a near-cubic grid).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=4))]
    dims: u64,
    /// Blocks per worker that may wait in the task's queue.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    prefetch: u64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

/// The result line shared by all benchmark scenarios.
#[derive(Serialize, Debug)]
struct BenchReport {
    scenario: &'static str,
    runner: &'static str,
    workers: u64,
    blocks: u64,
    completed: u64,
    wall_s: f64,
    blocks_per_s: f64,
    peak_rss_mib: Option<f64>,
}

impl BenchReport {
    fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
        } else {
            println!(
                "{} blocks ({} completed) on {} {} workers in {:.3} s: {:.0} blocks/s, peak RSS {}",
                self.blocks,
                self.completed,
                self.workers,
                self.runner,
                self.wall_s,
                self.blocks_per_s,
                self.peak_rss_mib
                    .map_or_else(|| "n/a".to_owned(), |m| format!("{m:.1} MiB"))
            );
        }
        Ok(())
    }
}

/// Per-axis block counts whose product is exactly `n`, as close to a cube as the factors of `n`
/// allow: prime factors, largest first, each multiplied onto the axis with the fewest blocks.
fn grid_shape(n: u64, dims: usize) -> Vec<i64> {
    let mut factors = Vec::new();
    let mut rest = n;
    let mut p = 2;
    while p * p <= rest {
        while rest.is_multiple_of(p) {
            factors.push(p);
            rest /= p;
        }
        p += 1;
    }
    if rest > 1 {
        factors.push(rest);
    }
    let mut axes = vec![1u64; dims];
    for f in factors.into_iter().rev() {
        if let Some(smallest) = axes.iter_mut().min() {
            *smallest *= f;
        }
    }
    axes.sort_unstable_by(|a, b| b.cmp(a));
    axes.into_iter().map(|a| a as i64).collect()
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn bench_noop(args: &NoopArgs) -> Result<bool> {
    let dims = usize::try_from(args.dims)?;
    let shape = grid_shape(args.blocks, dims);
    let ones = vec![1i64; dims];
    let zeros = vec![0i64; dims];
    let task = Task::builder(
        "noop",
        Roi::new(zeros.clone(), shape),
        Roi::new(zeros.clone(), ones.clone()),
        Roi::new(zeros, ones),
    )
    .read_write_conflict(false)
    .process(|_: &Block| Ok::<(), BlockError>(()))
    .num_workers(usize::try_from(args.workers)?)
    .build()
    .context("building the no-op task")?;
    if task.num_blocks() != args.blocks {
        bail!(
            "internal: {} blocks instead of {}",
            task.num_blocks(),
            args.blocks
        );
    }
    let start = Instant::now();
    let summary = Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .prefetch(usize::try_from(args.prefetch)?)
        .run([task])
        .context("running the no-op task")?;
    let wall = start.elapsed().as_secs_f64();
    let completed = summary.completed();
    BenchReport {
        scenario: "noop",
        runner: "threads",
        workers: args.workers,
        blocks: args.blocks,
        completed,
        wall_s: wall,
        blocks_per_s: completed as f64 / wall.max(f64::EPSILON),
        peak_rss_mib: peak_rss_mib(),
    }
    .print(args.json)?;
    Ok(summary.is_success())
}

fn run(cli: &Cli) -> Result<bool> {
    match &cli.command {
        Command::Bench { scenario } => match scenario {
            Scenario::Noop(args) => bench_noop(args),
        },
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::grid_shape;

    #[test]
    fn grid_shapes_multiply_to_n() {
        for (n, dims) in [
            (1, 3),
            (1000, 3),
            (1_000_000, 3),
            (97, 2),
            (100_000_000, 3),
            (12, 4),
        ] {
            let s = grid_shape(n, dims);
            assert_eq!(s.len(), dims);
            assert_eq!(s.iter().product::<i64>(), n as i64, "{n} {dims}");
        }
        assert_eq!(grid_shape(1_000_000, 3), vec![100, 100, 100]);
    }
}
