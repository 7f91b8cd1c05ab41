//! Following a detector file while it is written: a writer process appends 9×10 frames to an
//! HDF5 file in SWMR mode (data first, then the frame's key, then a finished flag at the end);
//! this process follows the keys, reads each completed frame and reduces it on an executor as
//! it arrives.
//!
//! ```text
//! cargo run --release --features hdf5 --example swmr [-- FRAMES]
//! ```
//!
//! The program starts itself again as the writer (`--writer FILE FRAMES`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blockwise::exec::{Executor, MapOptions};
use blockwise::store::swmr::{DataSource, Frame, KeyFollower, SwmrError};
use ndarray::Array;

fn writer(path: &Path, frames: usize) -> Result<(), Box<dyn std::error::Error>> {
    let file = hdf5::File::with_options()
        .with_fapl(|p| p.libver_latest())
        .create(path)?;
    let data = file
        .new_dataset::<u16>()
        .chunk((1, 9, 10))
        .shape((0.., 9, 10))
        .create("data")?;
    let key = file
        .new_dataset::<i64>()
        .chunk(64)
        .shape(0..)
        .fill_value(0i64)
        .create("key")?;
    let finished = file
        .new_dataset::<i64>()
        .shape(1)
        .fill_value(0i64)
        .create("finished")?;
    file.start_swmr()?;
    println!("ready");
    for i in 0..frames {
        let frame = Array::from_shape_fn((1, 9, 10), |(_, y, x)| (i * 100 + y * 10 + x) as u16);
        data.resize((i + 1, 9, 10))?;
        data.write_slice(&frame, (i..i + 1, .., ..))?;
        data.flush()?;
        key.resize(i + 1)?;
        key.write_slice(&ndarray::arr1(&[1i64]), i..i + 1)?;
        key.flush()?;
        std::thread::sleep(Duration::from_millis(50)); // the detector's frame rate
    }
    finished.write(&ndarray::arr1(&[1i64]))?;
    finished.flush()?;
    Ok(())
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--writer") {
        let frames = args.get(2).map_or(Ok(20), |f| f.parse())?;
        return writer(Path::new(&args[1]), frames);
    }
    let frames: usize = args.first().map_or(Ok(20), |f| f.parse())?;
    let dir = std::env::temp_dir().join(format!("blockwise-swmr-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("scan.h5");
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--writer", &path.display().to_string(), &frames.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    // The file can be followed once the writer has switched to SWMR mode.
    match lines.next() {
        Some(Ok(l)) if l == "ready" => {}
        other => return Err(format!("the writer did not start: {other:?}").into()),
    }
    let start = Instant::now();
    let keys = KeyFollower::open(&path, &["key"], Duration::from_secs(10), Some("finished"))?
        .poll_interval(Duration::from_millis(10));
    let mut source = DataSource::<u16>::new(keys, &["data"])?;
    let ex = Executor::threads(2);
    let sums = ex.bounded_map(
        |f: Result<Frame<u16>, SwmrError>| {
            f.map(|f| {
                (
                    f.index,
                    f.data[0].1.iter().map(|&v| u64::from(v)).sum::<u64>(),
                )
            })
        },
        &mut source,
        MapOptions::new(4),
    );
    for r in sums {
        let (index, sum) = r?;
        println!(
            "frame {index:>3}: sum {sum:>7} (at {:.2?})",
            start.elapsed()
        );
    }
    println!(
        "stopped: {:?}, {} frames in {:.2?}",
        source.keys().stop_reason(),
        source.keys().current_max() + 1,
        start.elapsed()
    );
    child.wait()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
