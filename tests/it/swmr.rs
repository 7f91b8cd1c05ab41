//! The SWMR follower against other_seeds.md §7 behaviours 9–15. Files written in full come from
//! this process; growth while following and the live end-to-end test use a writer process (this
//! test binary re-executed as `swmr::zz_swmr_writer`), which tells the reader on stdout when the
//! file is in SWMR mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use blockwise::exec::{Executor, MapOptions};
use blockwise::swmr::{
    DataSource, Frame, KeyFollower, RowKeyFollower, ScanWriter, StopReason, SwmrError,
};
use hdf5::File;
use ndarray::{Array, ArrayD, IxDyn};

use crate::support::{child_main, fresh_file};

fn create(path: &Path) -> File {
    File::with_options()
        .with_fapl(|p| p.libver_latest())
        .create(path)
        .unwrap()
}

/// A fixed-size i64 key of `shape` with the given values (row-major).
fn key(file: &File, name: &str, shape: &[usize], values: &[i64]) {
    let ds = file
        .new_dataset::<i64>()
        .shape(shape.to_vec())
        .fill_value(0i64)
        .create(name)
        .unwrap();
    let a = ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).unwrap();
    ds.write(&a).unwrap();
}

fn follow(path: &Path, keys: &[&str], timeout_ms: u64, finished: Option<&str>) -> KeyFollower {
    KeyFollower::open(path, keys, Duration::from_millis(timeout_ms), finished).unwrap()
}

/// Rows 0–1 complete, and row 2 with `row2` non-zero, in a 5×10 scan stored as (5, 10, 1, 1).
fn scan_5x10(path: &Path, row2: std::ops::Range<usize>) {
    let mut v = vec![0i64; 50];
    for (i, x) in v.iter_mut().enumerate() {
        if i < 20 || ((20..30).contains(&i) && row2.contains(&(i - 20))) {
            *x = 1;
        }
    }
    let f = create(path);
    key(&f, "key", &[5, 10, 1, 1], &v);
}

#[test]
fn the_contiguous_prefix_is_yielded_then_a_timeout() {
    let p = fresh_file("swmr", "prefix.h5");
    scan_5x10(&p, 0..5);
    let mut f = follow(&p, &["key"], 100, None);
    assert_eq!(f.scan_rank(), 2);
    assert_eq!(f.maxshape(), &[Some(5), Some(10)]);
    let got: Vec<u64> = f.by_ref().collect();
    assert_eq!(got, (0..25).collect::<Vec<_>>());
    assert_eq!(f.stop_reason(), Some(&StopReason::TimedOut));
    // Frames completed after a gap are held back.
    let p = fresh_file("swmr", "gap.h5");
    scan_5x10(&p, 1..10);
    let got: Vec<u64> = follow(&p, &["key"], 100, None).collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

#[test]
fn every_key_must_be_complete_and_jagged_keys_pad_with_zero() {
    let p = fresh_file("swmr", "multi.h5");
    {
        let f = create(&p);
        key(&f, "a", &[10], &[1; 10]);
        key(&f, "b", &[10], &[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]);
    }
    let got: Vec<u64> = follow(&p, &["a", "b"], 100, None).collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);

    let p = fresh_file("swmr", "jagged.h5");
    {
        let f = create(&p);
        key(&f, "a", &[2], &[1, 1]);
        key(&f, "b", &[2], &[1, 1]);
        let c = f
            .new_dataset::<i64>()
            .chunk(1)
            .shape([1..=2])
            .fill_value(0i64)
            .create("c")
            .unwrap();
        c.write(&ndarray::arr1(&[0i64])).unwrap();
    }
    let got: Vec<u64> = follow(&p, &["a", "b", "c"], 100, None).collect();
    assert!(got.is_empty(), "{got:?}");
    {
        let f = File::open_rw(&p).unwrap();
        let c = f.dataset("c").unwrap();
        c.write(&ndarray::arr1(&[1i64])).unwrap();
        drop(c);
        f.close().unwrap();
    }
    let got: Vec<u64> = follow(&p, &["a", "b", "c"], 100, None).collect();
    assert_eq!(got, [0]);
    // Keys of different scan ranks are refused.
    let e = KeyFollower::open(&p, &["a", "missing"], Duration::from_millis(10), None).unwrap_err();
    assert!(e.to_string().starts_with("missing: "), "{e}");
}

#[test]
fn the_finished_flag_stops_after_every_frame_was_yielded() {
    let p = fresh_file("swmr", "finished.h5");
    {
        let f = create(&p);
        key(&f, "key", &[40], &[1; 40]);
        key(&f, "finished", &[1], &[1]);
        key(&f, "bad_finished", &[4], &[1; 4]);
    }
    // A 10 s timeout, but the flag ends the iteration after all 40 frames (30+ still unconsumed
    // when the flag was first read).
    let start = std::time::Instant::now();
    let mut f = follow(&p, &["key"], 10_000, Some("finished"));
    assert_eq!(f.by_ref().count(), 40);
    assert_eq!(f.stop_reason(), Some(&StopReason::Finished));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // A finished dataset of 4 elements is ignored: the timeout ends it.
    let mut f = follow(&p, &["key"], 100, Some("bad_finished"));
    assert_eq!(f.by_ref().count(), 40);
    assert_eq!(f.stop_reason(), Some(&StopReason::TimedOut));
    // After a stop, next() waits again (resumable).
    assert_eq!(f.next(), None);
    f.reset();
    assert_eq!(f.next(), Some(0));
}

#[test]
fn rows() {
    let p = fresh_file("swmr", "rows.h5");
    scan_5x10(&p, 0..5);
    let rows: Vec<u64> = RowKeyFollower::new(follow(&p, &["key"], 100, None), None)
        .unwrap()
        .collect();
    assert_eq!(rows, [9, 19]);
    let p = fresh_file("swmr", "rows-all.h5");
    scan_5x10(&p, 0..10);
    {
        // Complete the scan.
        let f = File::open_rw(&p).unwrap();
        f.dataset("key")
            .unwrap()
            .write(&ArrayD::from_elem(IxDyn(&[5, 10, 1, 1]), 1i64))
            .unwrap();
    }
    let rows: Vec<u64> = RowKeyFollower::new(follow(&p, &["key"], 100, None), None)
        .unwrap()
        .collect();
    assert_eq!(rows, [9, 19, 29, 39, 49]);
    let p = fresh_file("swmr", "rows-unlimited.h5");
    {
        let f = create(&p);
        let ds = f
            .new_dataset::<i64>()
            .chunk((1, 10))
            .shape((5, 10..))
            .fill_value(0i64)
            .create("key")
            .unwrap();
        ds.write(&Array::from_elem((5, 10), 1i64)).unwrap();
    }
    let e = RowKeyFollower::new(follow(&p, &["key"], 100, None), None).unwrap_err();
    assert_eq!(e, SwmrError::NoRowSize);
    let rows: Vec<u64> = RowKeyFollower::new(follow(&p, &["key"], 100, None), Some(25))
        .unwrap()
        .collect();
    assert_eq!(rows, [24, 49]);
}

#[test]
fn frames_and_their_scan_positions() {
    let p = fresh_file("swmr", "frames.h5");
    {
        let f = create(&p);
        let data = f
            .new_dataset::<i64>()
            .shape((2, 3, 4, 5))
            .create("data")
            .unwrap();
        data.write(&Array::from_shape_vec((2, 3, 4, 5), (0..120).collect()).unwrap())
            .unwrap();
        key(&f, "key", &[2, 3], &[1; 6]);
    }
    let source = DataSource::<i64>::new(follow(&p, &["key"], 100, None), &["data"]).unwrap();
    let frames: Vec<Frame<i64>> = source.map(Result::unwrap).collect();
    assert_eq!(frames.len(), 6);
    for (k, fr) in frames.iter().enumerate() {
        assert_eq!(fr.index, k as u64);
        assert_eq!(fr.position, vec![k / 3, k % 3]);
        let (name, d) = &fr.data[0];
        assert_eq!(name, "data");
        assert_eq!(d.shape(), &[1, 1, 4, 5]);
        let want: Vec<i64> = (20 * k as i64..20 * k as i64 + 20).collect();
        assert_eq!(d.iter().copied().collect::<Vec<_>>(), want);
    }
    // The sum over each frame's axis 1, at [1, 2, 3]: 115 + … + 119.
    let last = &frames[5].data[0].1;
    let sum: i64 = last.iter().skip(15).take(5).sum(); // row 3 of the 4×5 frame
    assert_eq!(sum, 585);
    assert!(matches!(
        DataSource::<i64>::new(follow(&p, &["key"], 100, None), &[]),
        Err(SwmrError::NoData)
    ));
    // Each frame's sum over its axis 1, written in the scan's layout: shape (2, 3, 4).
    let out = fresh_file("swmr", "frames-out.h5");
    {
        let f = create(&out);
        let w = ScanWriter::create::<i64>(&f, "sums", &[Some(2), Some(3)], &[4]).unwrap();
        for fr in &frames {
            let sums = fr.data[0].1.sum_axis(ndarray::Axis(3));
            w.write(&fr.position, &sums.into_dyn()).unwrap();
        }
        let e = w
            .write(&[0], &ArrayD::<i64>::zeros(IxDyn(&[4])))
            .unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }
    let f = File::open(&out).unwrap();
    let sums: ArrayD<i64> = f.dataset("sums").unwrap().read_dyn().unwrap();
    assert_eq!(sums.shape(), &[2, 3, 4]);
    assert_eq!(sums[[1, 2, 3]], 585);
}

#[test]
fn interleaved_writers_and_a_growing_scan_writer() {
    // Two writers in turn: global frame 5 is frame 2 of B.
    let p = fresh_file("swmr", "interleaved.h5");
    {
        let f = create(&p);
        for (name, base) in [("a", 0i64), ("b", 100)] {
            let ds = f.new_dataset::<i64>().shape((4, 2)).create(name).unwrap();
            ds.write(&Array::from_shape_fn((4, 2), |(i, j)| {
                base + 10 * i as i64 + j as i64
            }))
            .unwrap();
        }
        key(&f, "key", &[8], &[1; 8]);
    }
    let source = DataSource::<i64>::new(follow(&p, &["key"], 100, None), &["key"])
        .unwrap()
        .interleaved("stack", &["a", "b"])
        .unwrap();
    let frames: Vec<Frame<i64>> = source.map(Result::unwrap).collect();
    assert_eq!(frames.len(), 8);
    let (name, d) = &frames[5].data[1];
    assert_eq!(name, "stack");
    assert_eq!(d.iter().copied().collect::<Vec<_>>(), [120, 121]);
    assert_eq!(
        frames[4].data[1].1.iter().copied().collect::<Vec<_>>(),
        [20, 21]
    );
    // A scan writer over an unlimited scan grows as results arrive.
    let out = fresh_file("swmr", "grow-out.h5");
    let f = create(&out);
    let w = ScanWriter::create::<u8>(&f, "r", &[None], &[2]).unwrap();
    w.write(&[3], &ArrayD::from_elem(IxDyn(&[2]), 7u8)).unwrap();
    assert_eq!(f.dataset("r").unwrap().shape(), vec![4, 2]);
}

child_main!(zz_swmr_writer: "BLOCKWISE_SWMR_WRITER" => swmr_writer);

/// The writer process of the tests below.
fn swmr_writer(spec: String) {
    let (mode, path) = spec.split_once(':').unwrap();
    let file = create(Path::new(path));
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    match mode {
        "grow" => {
            let k = file
                .new_dataset::<i64>()
                .chunk((1, 10, 1, 1))
                .shape((2.., 10, 1, 1))
                .fill_value(0i64)
                .create("key")
                .unwrap();
            k.write(&Array::from_elem((2, 10, 1, 1), 1i64)).unwrap();
            file.start_swmr().unwrap();
            println!("<ready>");
            assert_eq!(lines.next().unwrap().unwrap(), "grow");
            k.resize((5, 10, 1, 1)).unwrap();
            k.write(&Array::from_elem((5, 10, 1, 1), 1i64)).unwrap();
            k.flush().unwrap();
            println!("<grown>");
            let _ = lines.next();
        }
        "frames" => {
            let data = file
                .new_dataset::<u16>()
                .chunk((1, 9, 10))
                .shape((0.., 9, 10))
                .create("data")
                .unwrap();
            let k = file
                .new_dataset::<i64>()
                .chunk(16)
                .shape(0..)
                .fill_value(0i64)
                .create("key")
                .unwrap();
            let fin = file
                .new_dataset::<i64>()
                .shape(1)
                .fill_value(0i64)
                .create("finished")
                .unwrap();
            file.start_swmr().unwrap();
            println!("<ready>");
            for i in 0..10usize {
                let mut frame = Array::from_elem((1, 9, 10), i as u16);
                frame[[0, 0, 0]] = i as u16 + 1;
                data.resize((i + 1, 9, 10)).unwrap();
                data.write_slice(&frame, (i..i + 1, .., ..)).unwrap();
                data.flush().unwrap();
                k.resize(i + 1).unwrap();
                k.write_slice(&ndarray::arr1(&[1i64]), i..i + 1).unwrap();
                k.flush().unwrap();
                // A detector's pace (this is the writer's cadence, not a synchronisation).
                std::thread::sleep(Duration::from_millis(20));
            }
            fin.write(&ndarray::arr1(&[1i64])).unwrap();
            fin.flush().unwrap();
            println!("<done>");
        }
        other => panic!("unknown writer mode {other}"),
    }
}

struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Writer {
    fn start(mode: &str, path: &Path) -> Writer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "swmr::zz_swmr_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "BLOCKWISE_SWMR_WRITER",
                format!("{mode}:{}", path.display()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Writer {
            child,
            stdin,
            lines: rx,
        }
    }

    fn expect(&self, line: &str) {
        loop {
            let got = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("the writer never said {line:?}"));
            // libtest may print its own text on the same line.
            if got.contains(&format!("<{line}>")) {
                return;
            }
        }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn finish(mut self) {
        self.stdin = None;
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

#[test]
fn keys_that_grow_while_followed() {
    let p = fresh_file("swmr", "grow.h5");
    let mut w = Writer::start("grow", &p);
    w.expect("ready");
    let mut f = follow(&p, &["key"], 2_000, None);
    let first: Vec<u64> = f.by_ref().take(20).collect();
    assert_eq!(first, (0..20).collect::<Vec<_>>());
    w.say("grow");
    w.expect("grown");
    let rest: Vec<u64> = f.by_ref().collect();
    assert_eq!(rest, (20..50).collect::<Vec<_>>());
    assert_eq!(f.stop_reason(), Some(&StopReason::TimedOut));
    w.finish();
}

#[test]
fn live_frames_feed_an_executor_while_the_writer_writes() {
    let p = fresh_file("swmr", "live.h5");
    let w = Writer::start("frames", &p);
    w.expect("ready");
    let keys = KeyFollower::open(&p, &["key"], Duration::from_secs(30), Some("finished")).unwrap();
    let mut frames = DataSource::<u16>::new(keys, &["data"]).unwrap();
    let ex = Executor::threads(2);
    // One unit of work per frame, as each appears; its result is the frame's first value.
    let firsts: Vec<u16> = ex
        .bounded_map(
            |f: Result<Frame<u16>, SwmrError>| f.map(|f| f.data[0].1[[0, 0, 0]]),
            &mut frames,
            MapOptions::new(4),
        )
        .map(Result::unwrap)
        .collect();
    assert_eq!(firsts, (1..=10).collect::<Vec<u16>>());
    // Ended by the finished flag, not the 30 s timeout.
    assert_eq!(frames.keys().stop_reason(), Some(&StopReason::Finished));
    w.expect("done");
    w.finish();
}
