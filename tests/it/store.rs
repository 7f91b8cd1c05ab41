//! Arrays in world units: zarr v2/v3/sharded round trips, alignment, fill values, metadata,
//! atomic chunk writes across processes, partial-chunk writes from threads and processes, stale
//! temporary files, and HDF5 (feature `hdf5`).

use std::path::PathBuf;

use blockwise::Roi;
use blockwise::store::{ArraySpec, Codec, DataType, StoreError, ZarrArray, ZarrFormat};
use ndarray::{ArrayD, IxDyn};

use crate::support::child_main;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "blockwise-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ramp(shape: &[usize]) -> ArrayD<u8> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| (i * 7 % 251) as u8).collect())
        .unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)))
}

fn round_trip(spec: &ArraySpec) -> TestResult {
    let dir = TempDir::new("rt");
    let a = ZarrArray::create(&dir.0, "volume/raw", spec)?;
    // A region not aligned to chunks: voxels [3, 45) × [5, 30) × [0, 17).
    let vs = spec.voxel_size.clone();
    let roi = Roi::new(
        [3 * vs[0], 5 * vs[1], 0],
        [42 * vs[0], 25 * vs[1], 17 * vs[2]],
    )
    .shift(spec.roi.offset().clone());
    let data = ramp(&[42, 25, 17]);
    a.write(&roi, data.view())?;
    let b = ZarrArray::open(&dir.0, "volume/raw")?;
    assert_eq!(b.roi(), spec.roi);
    assert_eq!(b.voxel_size(), &spec.voxel_size);
    assert_eq!(b.read::<u8>(&roi)?, data);
    // Untouched voxels hold the fill value.
    let corner = Roi::new(spec.roi.offset().clone(), vs.clone());
    assert_eq!(
        b.read::<u8>(&corner)?.iter().copied().collect::<Vec<_>>(),
        vec![0]
    );
    Ok(())
}

fn spec() -> ArraySpec {
    ArraySpec::new(
        Roi::new([8, -4, 0], [64 * 4, 32 * 2, 20]),
        [4, 2, 1],
        DataType::U8,
        vec![16, 8, 10],
    )
}

#[test]
fn zarr_v3_round_trips_with_every_codec() -> TestResult {
    for codec in [
        Codec::None,
        Codec::Zstd { level: 3 },
        Codec::Gzip { level: 5 },
        Codec::BloscZstd {
            level: 5,
            shuffle: true,
        },
        Codec::BloscLz4 {
            level: 5,
            shuffle: false,
        },
    ] {
        let mut s = spec();
        s.codec = codec;
        round_trip(&s)?;
    }
    Ok(())
}

#[test]
fn zarr_v2_and_sharded_round_trip() -> TestResult {
    let mut v2 = spec();
    v2.format = ZarrFormat::V2;
    round_trip(&v2)?;
    let mut sharded = spec();
    sharded.shard_shape = Some(vec![32, 16, 20]);
    round_trip(&sharded)?;
    let dir = TempDir::new("sh");
    let a = ZarrArray::create(&dir.0, "s", &sharded)?;
    // Writers rewrite whole shards: the chunk grid for alignment checks is the shard grid.
    assert_eq!(a.write_chunk_shape(), &[32, 16, 20]);
    assert_eq!(a.chunk_grid().chunk, [128, 32, 20].into());
    Ok(())
}

#[test]
fn metadata_is_stored_like_funlib_persistence() -> TestResult {
    let dir = TempDir::new("meta");
    let mut s = spec();
    s.axis_names = Some(vec!["z".into(), "y".into(), "x".into()]);
    s.units = Some(vec!["nm".into(), "nm".into(), "nm".into()]);
    ZarrArray::create(&dir.0, "raw", &s)?;
    let v3: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("raw/zarr.json"))?)?;
    assert_eq!(v3["attributes"]["voxel_size"], serde_json::json!([4, 2, 1]));
    assert_eq!(v3["attributes"]["offset"], serde_json::json!([8, -4, 0]));
    assert_eq!(
        v3["attributes"]["axis_names"],
        serde_json::json!(["z", "y", "x"])
    );
    assert_eq!(
        v3["attributes"]["units"],
        serde_json::json!(["nm", "nm", "nm"])
    );
    assert_eq!(v3["dimension_names"], serde_json::json!(["z", "y", "x"]));
    assert!(dir.0.join("zarr.json").exists(), "root group metadata");
    s.format = ZarrFormat::V2;
    ZarrArray::create(&dir.0, "raw2", &s)?;
    let attrs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("raw2/.zattrs"))?)?;
    assert_eq!(attrs["voxel_size"], serde_json::json!([4, 2, 1]));
    let a = ZarrArray::open(&dir.0, "raw2")?;
    assert_eq!(a.axis_names(), ["z", "y", "x"]);
    assert_eq!(a.units(), ["nm", "nm", "nm"]);
    assert_eq!(a.offset(), &[8, -4, 0].into());
    Ok(())
}

#[test]
fn bad_rois_and_types_are_errors() -> TestResult {
    let dir = TempDir::new("bad");
    let a = ZarrArray::create(&dir.0, "raw", &spec())?;
    let msg = |e: StoreError| e.to_string();
    // Not on voxel boundaries (voxel size 4 in axis 0).
    let e = a
        .read::<u8>(&Roi::new([10, -4, 0], [8, 2, 1]))
        .map_err(msg)
        .err()
        .unwrap_or_default();
    assert!(e.ends_with("ROI [10:18, -4:-2, 0:1] (8, 2, 1) is not aligned to the voxel size (4, 2, 1) from offset (8, -4, 0) (axis 0)"), "{e}");
    // Outside the array.
    let e = a
        .read::<u8>(&Roi::new([0, -4, 0], [8, 2, 1]))
        .map_err(msg)
        .err()
        .unwrap_or_default();
    assert!(
        e.contains("is not inside the array's ROI [8:264, -4:60, 0:20]"),
        "{e}"
    );
    // Wrong element type.
    let e = a
        .read::<u16>(&Roi::new([8, -4, 0], [4, 2, 1]))
        .map_err(msg)
        .err()
        .unwrap_or_default();
    assert!(e.ends_with("the array holds uint8, not uint16"), "{e}");
    // Shape mismatch on write.
    let e = a
        .write(
            &Roi::new([8, -4, 0], [8, 2, 1]),
            ArrayD::<u8>::zeros(IxDyn(&[1, 1, 1])).view(),
        )
        .map_err(msg)
        .err()
        .unwrap_or_default();
    assert!(
        e.contains("data of shape [1, 1, 1] does not match ROI"),
        "{e}"
    );
    // Creating over an existing array needs `overwrite`.
    let e = ZarrArray::create(&dir.0, "raw", &spec())
        .map_err(msg)
        .err()
        .unwrap_or_default();
    assert!(e.contains("already exists"), "{e}");
    let mut again = spec();
    again.overwrite = true;
    ZarrArray::create(&dir.0, "raw", &again)?;
    // A dataset name that leads out of the store is refused before anything is deleted:
    // `overwrite` removes what the name points at.
    let outside = dir.0.with_extension("victim");
    ZarrArray::create(&outside, "raw", &spec())?;
    let escape = format!(
        "../{}/raw",
        outside.file_name().unwrap_or_default().to_string_lossy()
    );
    for name in [escape.as_str(), "a/./b", "a//b"] {
        let e = ZarrArray::create(&dir.0, name, &again)
            .map_err(msg)
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("must stay inside its store") || e.contains("empty path component"),
            "{name}: {e}"
        );
        assert!(ZarrArray::open(&dir.0, name).is_err());
    }
    assert!(
        outside.join("raw").join("zarr.json").exists(),
        "the array outside is intact"
    );
    let _ = std::fs::remove_dir_all(&outside);
    // Invalid specs.
    let mut bad = spec();
    bad.roi = Roi::new([9, -4, 0], [256, 64, 20]);
    let e = ZarrArray::create(&dir.0, "other", &bad)
        .map_err(msg)
        .err()
        .unwrap_or_default();
    assert!(
        e.contains("is not a non-negative multiple of the voxel size (4, 2, 1)"),
        "{e}"
    );
    let mut bad = spec();
    bad.format = ZarrFormat::V2;
    bad.shard_shape = Some(vec![32, 16, 20]);
    let e = ZarrArray::create(&dir.0, "other", &bad)
        .map_err(msg)
        .err()
        .unwrap_or_default();
    assert!(e.ends_with("sharding needs zarr v3"), "{e}");
    let e = ZarrArray::open(&dir.0, "missing")
        .map_err(msg)
        .err()
        .unwrap_or_default();
    assert!(!e.is_empty());
    let e = ZarrArray::open(dir.0.join("nope"), "raw")
        .map_err(msg)
        .err()
        .unwrap_or_default();
    assert!(e.contains("no such zarr store"), "{e}");
    Ok(())
}

#[test]
fn read_with_fill_pads_outside_the_array() -> TestResult {
    let dir = TempDir::new("fill");
    let s = ArraySpec::new(Roi::new([0, 0], [4, 4]), [1, 1], DataType::U8, vec![2, 2]);
    let a = ZarrArray::create(&dir.0, "", &s)?;
    a.write(
        &Roi::new([0, 0], [4, 4]),
        ArrayD::from_elem(IxDyn(&[4, 4]), 5u8).view(),
    )?;
    let r = a.read_with_fill::<u8>(&Roi::new([-1, 2], [3, 4]), 9)?;
    let expected = vec![9, 9, 9, 9, 5, 5, 9, 9, 5, 5, 9, 9];
    assert_eq!(r.iter().copied().collect::<Vec<_>>(), expected);
    let far = a.read_with_fill::<u8>(&Roi::new([10, 10], [2, 2]), 1)?;
    assert!(far.iter().all(|&v| v == 1));
    Ok(())
}

child_main!(atomic_writer_child: "BLOCKWISE_TEST_ATOMIC_WRITER" => atomic_writer);

/// A child process (started by `atomic_chunk_writes_across_processes`) that rewrites one chunk
/// many times.
fn atomic_writer(dir: String) -> TestResult {
    let a = ZarrArray::open(&dir, "raw")?;
    for k in 1..=300u32 {
        let data: Vec<u8> = (0..64 * 64 * 64u32)
            .map(|i| ((i + k) % 251) as u8)
            .collect();
        let data = ArrayD::from_shape_vec(IxDyn(&[64, 64, 64]), data)?;
        a.write(&Roi::new([0, 0, 0], [64, 64, 64]), data.view())?;
    }
    Ok(())
}

#[test]
fn atomic_chunk_writes_across_processes() -> TestResult {
    let dir = TempDir::new("atomic");
    let s = ArraySpec::new(
        Roi::new([0, 0, 0], [64, 64, 64]),
        [1, 1, 1],
        DataType::U8,
        vec![64, 64, 64],
    );
    let a = ZarrArray::create(&dir.0, "raw", &s)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "store::atomic_writer_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("BLOCKWISE_TEST_ATOMIC_WRITER", &dir.0)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let roi = Roi::new([0, 0, 0], [64, 64, 64]);
    let mut versions = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut reads = 0;
    let status = loop {
        // Every read decodes to a complete version: the fill value or one of the writer's.
        let data = a.read::<u8>(&roi)?;
        let v = data.as_slice().ok_or("not contiguous")?;
        if v.iter().all(|&x| x == 0) {
            versions.insert(0);
        } else {
            let k = u32::from(v[0]);
            for (i, &x) in v.iter().enumerate() {
                assert_eq!(
                    u32::from(x),
                    (i as u32 + k) % 251,
                    "torn chunk at voxel {i}"
                );
            }
            versions.insert(k);
        }
        reads += 1;
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            return Err("the writer did not finish within 60 s".into());
        }
    };
    assert!(status.success(), "writer failed: {status}");
    assert!(reads > 1);
    // After the writer finished, the last version is there.
    let last = a.read::<u8>(&roi)?;
    assert_eq!(last.as_slice().map(|v| v[0]), Some((300 % 251) as u8));
    Ok(())
}

/// The value every test of partial-chunk writes stores at voxel `(i, j)`: never zero (the fill
/// value), so a lost voxel shows.
fn voxel_value(i: usize, j: usize) -> u32 {
    (i * 256 + j + 1) as u32
}

/// A 256×256 `uint32` array in 64×64 chunks.
fn partial_spec() -> ArraySpec {
    ArraySpec::new(
        Roi::new([0, 0], [256, 256]),
        [1, 1],
        DataType::U32,
        vec![64, 64],
    )
}

/// Writes the 16×16 block `(bi, bj)` of voxel values: one sixteenth of a 64×64 chunk.
fn write_block(a: &ZarrArray, bi: usize, bj: usize) -> Result<(), StoreError> {
    let data = ArrayD::from_shape_fn(IxDyn(&[16, 16]), |ix| {
        voxel_value(bi * 16 + ix[0], bj * 16 + ix[1])
    });
    let roi = Roi::new([bi as i64 * 16, bj as i64 * 16], [16, 16]);
    a.write(&roi, data.view())
}

/// How many voxels of the array do not hold their value.
fn lost_voxels(a: &ZarrArray) -> Result<usize, StoreError> {
    let all = a.read::<u32>(&Roi::new([0, 0], [256, 256]))?;
    Ok(all
        .indexed_iter()
        .filter(|(ix, v)| **v != voxel_value(ix[0], ix[1]))
        .count())
}

#[test]
fn partial_chunk_writes_from_threads_lose_no_voxel() -> TestResult {
    for iteration in 0..4 {
        let dir = TempDir::new("partial-threads");
        let a = ZarrArray::create(&dir.0, "raw", &partial_spec())?;
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| -> TestResult {
            let handles: Vec<_> = (0..8usize)
                .map(|t| {
                    let (a, barrier) = (&a, &barrier);
                    scope.spawn(move || -> Result<(), StoreError> {
                        barrier.wait();
                        // Thread t writes block columns t and t + 8: four threads share every
                        // chunk column, and they write the same chunks at the same time.
                        for k in (t..256).step_by(8) {
                            write_block(a, k / 16, k % 16)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| "a writer thread panicked")??;
            }
            Ok(())
        })?;
        let lost = lost_voxels(&ZarrArray::open(&dir.0, "raw")?)?;
        assert_eq!(
            lost, 0,
            "iteration {iteration}: {lost} of 65536 voxels lost"
        );
    }
    Ok(())
}

const PARTIAL_ROUNDS: usize = 6;

child_main!(partial_writer_child: "BLOCKWISE_TEST_PARTIAL_WRITER" => partial_writer);

/// A child process (started by `partial_chunk_writes_from_two_processes_lose_no_voxel`) that
/// writes the odd blocks of a checkerboard into arrays `r0`, `r1`, ... once told to start on its
/// stdin.
fn partial_writer(dir: String) -> TestResult {
    let arrays: Vec<ZarrArray> = (0..PARTIAL_ROUNDS)
        .map(|r| ZarrArray::open(&dir, &format!("r{r}")))
        .collect::<Result<_, _>>()?;
    println!("blockwise-partial-writer-ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    for a in &arrays {
        checkerboard(a, 1)?;
    }
    Ok(())
}

/// Writes the blocks `(bi, bj)` with `(bi + bj) % 2 == parity`, row by row.
fn checkerboard(a: &ZarrArray, parity: usize) -> Result<(), StoreError> {
    for bi in 0..16 {
        for bj in 0..16 {
            if (bi + bj) % 2 == parity {
                write_block(a, bi, bj)?;
            }
        }
    }
    Ok(())
}

#[test]
fn partial_chunk_writes_from_two_processes_lose_no_voxel() -> TestResult {
    use std::io::{BufRead, Write};
    use std::time::Duration;
    let dir = TempDir::new("partial-procs");
    let arrays: Vec<ZarrArray> = (0..PARTIAL_ROUNDS)
        .map(|r| ZarrArray::create(&dir.0, &format!("r{r}"), &partial_spec()))
        .collect::<Result<_, _>>()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "store::partial_writer_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("BLOCKWISE_TEST_PARTIAL_WRITER", &dir.0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let result = (|| -> TestResult {
        // Start together: wait (at most 60 s) for the child to have opened the arrays.
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("blockwise-partial-writer-ready") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| "the child writer did not start within 60 s")?;
        let mut stdin = child.stdin.take().ok_or("no child stdin")?;
        stdin.write_all(b"go\n")?;
        drop(stdin);
        for a in &arrays {
            checkerboard(a, 0)?;
        }
        Ok(())
    })();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        (child, status)
    });
    let done = rx.recv_timeout(Duration::from_secs(120));
    let (mut child, status) = waiter.join().map_err(|_| "waiter panicked")?;
    if done.is_err() {
        let _ = child.kill();
        return Err("the child writer did not finish within 120 s".into());
    }
    result?;
    let status = status?;
    assert!(status.success(), "child writer failed: {status}");
    for (r, a) in arrays.iter().enumerate() {
        let lost = lost_voxels(a)?;
        assert_eq!(lost, 0, "array r{r}: {lost} of 65536 voxels lost");
    }
    Ok(())
}

/// This host's name as the store puts it in temporary file names.
fn host_tag() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[test]
fn stale_temporaries_of_dead_writers_are_removed() -> TestResult {
    use zarrs::storage::ListableStorageTraits;
    let dir = TempDir::new("stale");
    let s = ArraySpec::new(
        Roi::new([0, 0], [64, 64]),
        [1, 1],
        DataType::U8,
        vec![16, 16],
    );
    let a = ZarrArray::create(&dir.0, "raw", &s)?;
    let one = ArrayD::from_elem(IxDyn(&[16, 16]), 3u8);
    a.write(&Roi::new([0, 0], [16, 16]), one.view())?;
    drop(a);
    // A pid that is dead: a child that ran and was reaped.
    let dead = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "store::no_such_test"])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait()?;
    let host = host_tag();
    let me = std::process::id();
    let node = dir.0.join("raw");
    let chunks = node.join("c").join("0");
    assert!(chunks.join("0").is_file(), "chunk (0, 0) written");
    let file = |d: &std::path::Path, name: String| -> std::io::Result<PathBuf> {
        let p = d.join(name);
        std::fs::write(&p, b"partial")?;
        Ok(p)
    };
    let dead_tmp = file(
        &node,
        format!(".zarr.json.blockwise-tmp-{host}-{dead_pid}-0"),
    )?;
    let live_tmp = file(&node, format!(".zarr.json.blockwise-tmp-{host}-{me}-1"))?;
    let other_host = file(
        &node,
        format!(".zarr.json.blockwise-tmp-x{host}-{dead_pid}-2"),
    )?;
    let old_fresh = file(&node, format!(".zarr.json.blockwise-tmp-{dead_pid}-3"))?;
    let old_stale = file(&node, format!(".zarr.json.blockwise-tmp-{dead_pid}-4"))?;
    std::fs::File::options()
        .write(true)
        .open(&old_stale)?
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))?;
    let chunk_tmp = file(&chunks, format!(".1.blockwise-tmp-{host}-{dead_pid}-5"))?;
    let chunk_lock = file(&chunks, ".1.blockwise-lock".to_owned())?;

    // The store's own files are not keys.
    let store = blockwise::store::AtomicFilesystemStore::new(&dir.0)?;
    let keys: Vec<String> = store.list()?.iter().map(|k| k.to_string()).collect();
    assert!(keys.iter().all(|k| !k.contains("blockwise")), "{keys:?}");
    assert!(keys.contains(&"raw/c/0/0".to_owned()), "{keys:?}");

    // Opening removes the array directory's temporaries of dead writers on this host.
    let a = ZarrArray::open(&dir.0, "raw")?;
    assert!(!dead_tmp.exists(), "a dead writer's temporary is removed");
    assert!(
        !old_stale.exists(),
        "an old-style temporary of a dead pid, 2 h old, is removed"
    );
    assert!(live_tmp.exists(), "a live writer's temporary is kept");
    assert!(other_host.exists(), "another host's temporary is kept");
    assert!(old_fresh.exists(), "a recent old-style temporary is kept");
    // Chunk directories are cleaned when first written to.
    assert!(chunk_tmp.exists() && chunk_lock.exists());
    a.write(&Roi::new([0, 16], [16, 16]), one.view())?;
    assert!(
        !chunk_tmp.exists(),
        "a dead writer's chunk temporary is removed"
    );
    assert!(!chunk_lock.exists(), "an unheld lock file is removed");
    assert!(
        a.read::<u8>(&Roi::new([0, 0], [16, 32]))?
            .iter()
            .all(|&v| v == 3)
    );
    // A partial write leaves no lock file behind.
    let small = ArrayD::from_elem(IxDyn(&[2, 2]), 4u8);
    a.write(&Roi::new([20, 20], [2, 2]), small.view())?;
    let left: Vec<_> = std::fs::read_dir(node.join("c").join("1"))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("1")]);
    Ok(())
}

#[cfg(feature = "hdf5")]
mod hdf5 {
    use super::*;
    use blockwise::store::Hdf5Array;

    #[test]
    fn hdf5_round_trip_in_world_units() -> TestResult {
        let dir = TempDir::new("h5");
        std::fs::create_dir_all(&dir.0)?;
        let file = dir.0.join("vol.h5");
        let mut s = spec();
        s.codec = Codec::Gzip { level: 4 };
        s.axis_names = Some(vec!["z".into(), "y".into(), "x".into()]);
        let a = Hdf5Array::create(&file, "volume/raw", &s)?;
        let roi = Roi::new([8 + 12, -4 + 10, 0], [42 * 4, 25 * 2, 17]);
        let data = ramp(&[42, 25, 17]);
        a.write(&roi, data.view())?;
        a.flush()?;
        drop(a);
        let b = Hdf5Array::open(&file, "volume/raw")?;
        assert_eq!(b.roi(), s.roi);
        assert_eq!(b.axis_names(), ["z", "y", "x"]);
        assert_eq!(b.read::<u8>(&roi)?, data);
        let padded = b.read_with_fill::<u8>(&Roi::new([4, -4, 0], [8, 2, 1]), 3)?;
        assert_eq!(padded.iter().copied().collect::<Vec<_>>(), vec![3, 0]);
        assert!(b.read::<f32>(&roi).is_err());
        let e = Hdf5Array::create(&file, "x", &spec())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not available in HDF5"), "{e}");
        Ok(())
    }

    #[test]
    fn hdf5_padding_writes_ids_and_prepare() -> TestResult {
        let dir = TempDir::new("h5-prepare");
        std::fs::create_dir_all(&dir.0)?;
        let file = dir.0.join("vol.h5");
        let mut s = ArraySpec::new(Roi::new([100], [30]), [10], DataType::U8, vec![2]);
        s.codec = Codec::None;
        let a = Hdf5Array::prepare(&file, "line", &s)?;
        let id = a.array_id().map(str::to_owned);
        assert!(id.as_deref().is_some_and(|i| i.len() == 32), "{id:?}");
        assert_eq!(a.chunk_grid().array_id, id);
        a.write(&a.roi(), &ndarray::arr1(&[1u8, 2, 3]).into_dyn())?;
        let roi = Roi::new([50], [130]);
        let read = |pad| -> Result<Vec<u8>, StoreError> {
            Ok(a.read_padded::<u8>(&roi, pad)?.iter().copied().collect())
        };
        assert_eq!(read(Pad::Reflect)?, [2, 3, 3, 2, 1, 1, 2, 3, 3, 2, 1, 1, 2]);
        assert_eq!(read(Pad::Nearest)?, [1, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3]);
        assert_eq!(
            read(Pad::Constant(9))?,
            [9, 9, 9, 9, 9, 1, 2, 3, 9, 9, 9, 9, 9]
        );
        let r = a.read::<u8>(&Roi::new([110], [20]))?;
        assert_eq!(r.roi(), &Roi::new([110], [20]));
        a.write_array(&r.mapv(|v| v + 10))?;
        let b = a.clone();
        assert_eq!(
            b.read::<u8>(&b.roi())?.iter().copied().collect::<Vec<_>>(),
            [1, 12, 13]
        );
        let tmp = RoiArray::from_elem(Roi::new([100], [10]), [10], 7u8)?;
        b.write_array(&tmp)?;
        a.flush()?;
        drop((a, b));
        // Reopened by prepare: data and id kept.
        let c = Hdf5Array::prepare(&file, "line", &s)?;
        assert_eq!(c.array_id().map(str::to_owned), id);
        assert_eq!(
            c.read::<u8>(&c.roi())?.iter().copied().collect::<Vec<_>>(),
            [7, 12, 13]
        );
        // Mismatches named; overwrite replaces with a new id.
        let mut other = s.clone();
        other.data_type = DataType::U16;
        other.fill_value = 2.0;
        other.chunk_shape = vec![3];
        let e = Hdf5Array::prepare(&file, "line", &other).failure()?;
        let StoreError::Mismatch { differences, .. } = &e else {
            return Err(format!("expected a mismatch, got {e}").into());
        };
        assert_eq!(
            differences,
            &[
                "data type: the array has uint8, the spec uint16".to_owned(),
                "chunk shape: the array has [2], the spec [3]".to_owned(),
                "fill value: the array has 0, the spec 2".to_owned(),
            ]
        );
        other.overwrite = true;
        drop(c);
        let d = Hdf5Array::prepare(&file, "line", &other)?;
        assert!(d.array_id().is_some());
        assert_ne!(d.array_id().map(str::to_owned), id);
        assert_eq!(d.data_type(), DataType::U16);
        Ok(())
    }
}

/// Arrays are shared by worker threads (`Arc<ZarrArray>` in a process closure).
#[test]
fn arrays_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ZarrArray>();
    #[cfg(feature = "hdf5")]
    assert_send_sync::<blockwise::store::Hdf5Array>();
}

// ---------------------------------------------------------------------------------------------
// ROI-aware reads, padding modes, writes of `RoiArray`s, clones, identity and `prepare`.

use blockwise::store::{Pad, RoiArray};

/// The error of a call that must fail.
trait Failing {
    fn failure(self) -> Result<StoreError, Box<dyn std::error::Error>>;
}

impl<T: std::fmt::Debug> Failing for Result<T, StoreError> {
    fn failure(self) -> Result<StoreError, Box<dyn std::error::Error>> {
        match self {
            Ok(v) => Err(format!("expected an error, got {v:?}").into()),
            Err(e) => Ok(e),
        }
    }
}

/// A 1-D u8 array `values` of voxels of `voxel` world units from `offset`.
fn line(dir: &TempDir, values: &[u8], offset: i64, voxel: i64) -> Result<ZarrArray, StoreError> {
    let n = values.len() as i64;
    let spec = ArraySpec::new(
        Roi::new([offset], [n * voxel]),
        [voxel],
        DataType::U8,
        vec![2],
    );
    let a = ZarrArray::create(&dir.0, "line", &spec)?;
    a.write(&a.roi(), &ndarray::arr1(values).into_dyn())?;
    Ok(a)
}

fn values(a: &RoiArray<u8>) -> Vec<u8> {
    a.iter().copied().collect()
}

#[test]
fn reads_return_roi_arrays_addressed_in_world_units() -> TestResult {
    let dir = TempDir::new("roiarray");
    let spec = ArraySpec::new(Roi::new([8, 0], [64, 32]), [4, 2], DataType::U8, vec![4, 4]);
    let a = ZarrArray::create(&dir.0, "raw", &spec)?;
    let data = ramp(&[16, 16]);
    a.write(&a.roi(), &data)?;
    // A block's read ROI, and its write ROI inside it.
    let read_roi = Roi::new([16, 4], [24, 12]);
    let write_roi = Roi::new([20, 6], [16, 8]);
    let block = a.read::<u8>(&read_roi)?;
    assert_eq!(block.roi(), &read_roi);
    assert_eq!(block.voxel_size(), a.voxel_size());
    assert_eq!(block.shape(), &[6, 6]);
    let core = block.view_roi(&write_roi)?;
    assert_eq!(core.shape(), &[4, 4]);
    // Voxel (1, 1) of the block is voxel (3, 3) of the array.
    assert_eq!(core[[0, 0]], data[[3, 3]]);
    assert_eq!(a.read::<u8>(&write_roi)?, core.to_owned());
    // A ROI off the block's voxel grid, or outside it, is an error naming the ROIs.
    let e = block
        .view_roi(&Roi::new([18, 6], [16, 8]))
        .failure()?
        .to_string();
    assert!(e.contains("not on the voxel grid"), "{e}");
    let e = block
        .view_roi(&Roi::new([20, 6], [40, 8]))
        .failure()?
        .to_string();
    assert!(
        e.contains("not inside the array's ROI [16:40, 4:16]"),
        "{e}"
    );
    Ok(())
}

#[test]
fn read_padded_matches_scipy_modes_in_one_dimension() -> TestResult {
    let dir = TempDir::new("pad1");
    // [1, 2, 3] in voxels of 10 from 100; five voxels of padding on each side.
    let a = line(&dir, &[1, 2, 3], 100, 10)?;
    let roi = Roi::new([50], [130]);
    // scipy.ndimage modes (numpy.pad 'symmetric', 'edge', 'constant'), written out:
    let reflect = a.read_padded::<u8>(&roi, Pad::Reflect)?;
    assert_eq!(values(&reflect), [2, 3, 3, 2, 1, 1, 2, 3, 3, 2, 1, 1, 2]);
    assert_eq!(reflect.roi(), &roi);
    let nearest = a.read_padded::<u8>(&roi, Pad::Nearest)?;
    assert_eq!(values(&nearest), [1, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3]);
    let constant = a.read_padded::<u8>(&roi, Pad::Constant(9))?;
    assert_eq!(values(&constant), [9, 9, 9, 9, 9, 1, 2, 3, 9, 9, 9, 9, 9]);
    assert_eq!(a.read_with_fill::<u8>(&roi, 9)?, constant.into_inner());
    // Entirely outside: voxels 7..10 and -4..-2.
    let right = Roi::new([170], [30]);
    assert_eq!(
        values(&a.read_padded::<u8>(&right, Pad::Reflect)?),
        [2, 3, 3]
    );
    assert_eq!(
        values(&a.read_padded::<u8>(&right, Pad::Nearest)?),
        [3, 3, 3]
    );
    assert_eq!(
        values(&a.read_padded::<u8>(&right, Pad::Constant(4))?),
        [4, 4, 4]
    );
    let left = Roi::new([60], [20]);
    assert_eq!(values(&a.read_padded::<u8>(&left, Pad::Reflect)?), [3, 3]);
    // Inside: the plain read.
    let inside = Roi::new([110], [20]);
    assert_eq!(values(&a.read_padded::<u8>(&inside, Pad::Reflect)?), [2, 3]);
    // Misaligned ROIs and wrong types are errors in every mode.
    assert!(
        a.read_padded::<u8>(&Roi::new([55], [10]), Pad::Reflect)
            .is_err()
    );
    assert!(a.read_padded::<u16>(&roi, Pad::Nearest).is_err());
    Ok(())
}

#[test]
fn read_padded_combines_axes_in_two_dimensions() -> TestResult {
    let dir = TempDir::new("pad2");
    let spec = ArraySpec::new(Roi::new([0, 0], [2, 3]), [1, 1], DataType::U8, vec![2, 2]);
    let a = ZarrArray::create(&dir.0, "a", &spec)?;
    // [[1, 2, 3], [4, 5, 6]]
    a.write(
        &a.roi(),
        &ndarray::arr2(&[[1u8, 2, 3], [4, 5, 6]]).into_dyn(),
    )?;
    let roi = Roi::new([-2, -1], [5, 5]);
    // np.pad(a, ((2, 1), (1, 1)), 'symmetric')
    #[rustfmt::skip]
    let reflect = [
        4, 4, 5, 6, 6,
        1, 1, 2, 3, 3,
        1, 1, 2, 3, 3,
        4, 4, 5, 6, 6,
        4, 4, 5, 6, 6,
    ];
    assert_eq!(values(&a.read_padded::<u8>(&roi, Pad::Reflect)?), reflect);
    // np.pad(a, ((2, 1), (1, 1)), 'edge')
    #[rustfmt::skip]
    let nearest = [
        1, 1, 2, 3, 3,
        1, 1, 2, 3, 3,
        1, 1, 2, 3, 3,
        4, 4, 5, 6, 6,
        4, 4, 5, 6, 6,
    ];
    assert_eq!(values(&a.read_padded::<u8>(&roi, Pad::Nearest)?), nearest);
    // Padding wider than the array, reflected repeatedly: axis 1 voxels -4..0 read 3 3 2 1.
    let wide = a.read_padded::<u8>(&Roi::new([0, -4], [1, 4]), Pad::Reflect)?;
    assert_eq!(values(&wide), [3, 3, 2, 1]);
    Ok(())
}

#[test]
fn read_padded_of_an_empty_array_says_why() -> TestResult {
    let dir = TempDir::new("pad-empty");
    let spec = ArraySpec::new(Roi::new([0, 0], [0, 4]), [1, 1], DataType::U8, vec![2, 2]);
    let a = ZarrArray::create(&dir.0, "a", &spec)?;
    let e = a
        .read_padded::<u8>(&Roi::new([0, 0], [2, 2]), Pad::Reflect)
        .failure()?
        .to_string();
    assert!(
        e.contains("cannot pad with mode reflect: the array has no voxels in axis 0"),
        "{e}"
    );
    let c = a.read_padded::<u8>(&Roi::new([0, 0], [2, 2]), Pad::Constant(5))?;
    assert_eq!(values(&c), [5; 4]);
    Ok(())
}

#[test]
fn writes_take_views_arrays_and_roi_arrays() -> TestResult {
    let dir = TempDir::new("write-into");
    let spec = ArraySpec::new(Roi::new([0, 0], [16, 16]), [2, 2], DataType::U8, vec![4, 4]);
    let a = ZarrArray::create(&dir.0, "a", &spec)?;
    let ones = ArrayD::from_elem(IxDyn(&[2, 2]), 1u8);
    a.write(&Roi::new([0, 0], [4, 4]), ones.view())?;
    a.write(&Roi::new([4, 0], [4, 4]), &ones)?;
    // A RoiArray: at any ROI of its shape, or at its own with write_array.
    let block = RoiArray::from_elem(Roi::new([8, 8], [8, 8]), [2, 2], 7u8)?;
    a.write(&Roi::new([0, 8], [8, 8]), &block)?;
    a.write_array(&block)?;
    let all = a.read::<u8>(&a.roi())?;
    assert_eq!(all.view_roi(&Roi::new([0, 0], [8, 4]))?.sum(), 8);
    assert!(
        all.view_roi(&Roi::new([0, 8], [8, 8]))?
            .iter()
            .all(|&v| v == 7)
    );
    assert!(
        all.view_roi(&Roi::new([8, 8], [8, 8]))?
            .iter()
            .all(|&v| v == 7)
    );
    assert!(
        all.view_roi(&Roi::new([8, 0], [8, 8]))?
            .iter()
            .all(|&v| v == 0)
    );
    // A read, processed, written back where it came from.
    let doubled = a.read::<u8>(&Roi::new([8, 8], [4, 4]))?.mapv(|v| v * 2);
    a.write_array(&doubled)?;
    assert_eq!(values(&a.read::<u8>(doubled.roi())?), [14; 4]);
    // Another voxel size is refused, naming both.
    let coarse = RoiArray::from_elem(Roi::new([0, 0], [8, 8]), [4, 4], 1u8)?;
    let e = a.write_array(&coarse).failure()?.to_string();
    assert!(e.contains("has voxel size (4, 4), the array (2, 2)"), "{e}");
    Ok(())
}

#[test]
fn clones_share_the_array() -> TestResult {
    let dir = TempDir::new("clone");
    let a = line(&dir, &[1, 2, 3, 4], 0, 1)?;
    let b = a.clone();
    b.write(&Roi::new([1], [2]), &ndarray::arr1(&[9u8, 9]).into_dyn())?;
    assert_eq!(values(&a.read::<u8>(&a.roi())?), [1, 9, 9, 4]);
    assert_eq!(a.array_id(), b.array_id());
    assert_eq!(a.chunk_grid(), b.chunk_grid());
    // Clones write from threads, like Arcs.
    std::thread::scope(|s| {
        for i in 0..4i64 {
            let c = a.clone();
            s.spawn(move || c.write(&Roi::new([i], [1]), &ndarray::arr1(&[i as u8]).into_dyn()));
        }
    });
    assert_eq!(values(&b.read::<u8>(&b.roi())?), [0, 1, 2, 3]);
    Ok(())
}

#[test]
fn task_writes_takes_an_arc_and_checks_alignment() -> TestResult {
    use std::sync::Arc;
    let dir = TempDir::new("writes-arc");
    let spec = ArraySpec::new(
        Roi::new([0, 0], [64, 64]),
        [1, 1],
        DataType::U8,
        vec![16, 16],
    );
    let out = Arc::new(ZarrArray::create(&dir.0, "out", &spec)?);
    let total = Roi::new([0, 0], [64, 64]);
    let aligned = blockwise::Task::builder(
        "aligned",
        total.clone(),
        Roi::new([0, 0], [32, 32]),
        Roi::new([0, 0], [32, 32]),
    )
    .writes(&out)
    .process(|_: &blockwise::Block| Ok(()))
    .build()?;
    assert_eq!(aligned.writes()[0].array_id.as_deref(), out.array_id());
    let e = blockwise::Task::builder(
        "misaligned",
        total,
        Roi::new([0, 0], [24, 24]),
        Roi::new([0, 0], [24, 24]),
    )
    .writes(&out)
    .process(|_: &blockwise::Block| Ok(()))
    .build()
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("not a multiple of the chunk shape"), "{e}");
    Ok(())
}

/// The `blockwise_array_id` attribute of a zarr v3 array's metadata.
fn stored_id(
    dir: &TempDir,
    dataset: &str,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.0.join(dataset).join("zarr.json"),
    )?)?;
    Ok(meta["attributes"]["blockwise_array_id"].clone())
}

fn is_id(id: Option<&str>) -> bool {
    id.is_some_and(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn created_arrays_have_fresh_ids() -> TestResult {
    let dir = TempDir::new("ids");
    let a = ZarrArray::create(&dir.0, "a", &spec())?;
    assert!(is_id(a.array_id()), "{:?}", a.array_id());
    assert_eq!(stored_id(&dir, "a")?.as_str(), a.array_id());
    assert_eq!(a.chunk_grid().array_id.as_deref(), a.array_id());
    assert_eq!(
        blockwise::store::ChunkGrid::from(&a).array_id.as_deref(),
        a.array_id()
    );
    // Reopened: the same id. create_like: a new one, never `like`'s.
    assert_eq!(ZarrArray::open(&dir.0, "a")?.array_id(), a.array_id());
    let b = ZarrArray::create_like(&dir.0, "b", &a, false)?;
    assert!(is_id(b.array_id()));
    assert_ne!(b.array_id(), a.array_id());
    assert_eq!(ZarrArray::open(&dir.0, "b")?.array_id(), b.array_id());
    // Recreated at the same path: a new id.
    let mut again = spec();
    again.overwrite = true;
    let c = ZarrArray::create(&dir.0, "a", &again)?;
    assert_ne!(c.array_id(), a.array_id());
    // v2 arrays keep it in .zattrs.
    let mut v2 = spec();
    v2.format = ZarrFormat::V2;
    let d = ZarrArray::create(&dir.0, "d", &v2)?;
    let attrs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("d/.zattrs"))?)?;
    assert_eq!(attrs["blockwise_array_id"].as_str(), d.array_id());
    assert!(is_id(ZarrArray::open(&dir.0, "d")?.array_id()));
    Ok(())
}

#[test]
fn arrays_of_other_tools_have_no_id() -> TestResult {
    let dir = TempDir::new("no-id");
    ZarrArray::create(&dir.0, "a", &spec())?;
    let path = dir.0.join("a/zarr.json");
    let mut meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    // No id: None. A non-string id: ignored (with a warning).
    if let Some(attrs) = meta["attributes"].as_object_mut() {
        attrs.remove("blockwise_array_id");
    }
    std::fs::write(&path, serde_json::to_vec(&meta)?)?;
    let a = ZarrArray::open(&dir.0, "a")?;
    assert_eq!(a.array_id(), None);
    assert_eq!(a.chunk_grid().array_id, None);
    meta["attributes"]["blockwise_array_id"] = serde_json::json!(42);
    std::fs::write(&path, serde_json::to_vec(&meta)?)?;
    assert_eq!(ZarrArray::open(&dir.0, "a")?.array_id(), None);
    Ok(())
}

#[test]
fn sample_volumes_get_an_id() -> TestResult {
    let dir = TempDir::new("sample-id");
    let spec = blockwise::sample::SampleSpec::cube(16);
    let options = ArraySpec::new(spec.roi(), [1, 1, 1], DataType::U8, vec![8, 8, 8]);
    let a = blockwise::sample::write_zarr(&spec, &dir.0, "raw", &options, 1)?;
    assert!(is_id(a.array_id()));
    Ok(())
}

#[test]
fn prepare_creates_then_reopens_keeping_data_and_id() -> TestResult {
    let dir = TempDir::new("prepare");
    // The store and its parents do not exist yet.
    let store = dir.0.join("deep/er/out.zarr");
    let s = spec();
    let a = ZarrArray::prepare(&store, "volume/seg", &s)?;
    assert!(is_id(a.array_id()));
    let roi = Roi::new([8, -4, 0], [16, 4, 2]);
    a.write(&roi, &ArrayD::from_elem(IxDyn(&[4, 2, 2]), 6u8))?;
    let b = ZarrArray::prepare(&store, "volume/seg", &s)?;
    assert_eq!(b.array_id(), a.array_id());
    assert!(b.read::<u8>(&roi)?.iter().all(|&v| v == 6));
    // Axis names and units the spec does not give are not compared; a different codec is
    // not a difference; `overwrite` keeps a matching array.
    let mut same = s.clone();
    same.codec = Codec::Gzip { level: 1 };
    same.overwrite = true;
    let c = ZarrArray::prepare(&store, "volume/seg", &same)?;
    assert_eq!(c.array_id(), a.array_id());
    assert!(c.read::<u8>(&roi)?.iter().all(|&v| v == 6));
    // Sharded and v2 arrays match their own specs too.
    let mut sharded = s.clone();
    sharded.shard_shape = Some(vec![32, 16, 20]);
    let d = ZarrArray::prepare(&store, "sharded", &sharded)?;
    assert_eq!(
        ZarrArray::prepare(&store, "sharded", &sharded)?.array_id(),
        d.array_id()
    );
    let mut v2 = s.clone();
    v2.format = ZarrFormat::V2;
    v2.fill_value = 3.0;
    let e = ZarrArray::prepare(&store, "v2", &v2)?;
    assert_eq!(
        ZarrArray::prepare(&store, "v2", &v2)?.array_id(),
        e.array_id()
    );
    let mut float = s.clone();
    float.data_type = DataType::F32;
    float.fill_value = f64::NAN;
    let f = ZarrArray::prepare(&store, "float", &float)?;
    assert_eq!(
        ZarrArray::prepare(&store, "float", &float)?.array_id(),
        f.array_id()
    );
    // NaN is stored as zarr spells it, and unwritten voxels read as NaN.
    let corner = Roi::new([8, -4, 0], [4, 2, 1]);
    assert!(f.read::<f32>(&corner)?.iter().all(|v| v.is_nan()));
    Ok(())
}

/// The differences `prepare` reports for `other` against an array made from `spec()`.
fn mismatches(other: &ArraySpec) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let dir = TempDir::new("mismatch");
    let a = ZarrArray::prepare(&dir.0, "a", &spec())?;
    match ZarrArray::prepare(&dir.0, "a", other) {
        Err(StoreError::Mismatch { path, differences }) => {
            assert!(path.ends_with("/a"), "{path}");
            // The array is untouched.
            assert_eq!(ZarrArray::open(&dir.0, "a")?.array_id(), a.array_id());
            Ok(differences)
        }
        other => Err(format!("expected a mismatch, got {other:?}").into()),
    }
}

#[test]
fn prepare_names_each_mismatch_with_both_values() -> TestResult {
    let one = |f: &dyn Fn(&mut ArraySpec)| -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let mut s = spec();
        f(&mut s);
        mismatches(&s)
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            one(&|s| s.roi = Roi::new([0, -4, 0], [256, 64, 20]))?,
            "ROI: the array has [8:264, -4:60, 0:20] (256, 64, 20), the spec [0:256, -4:60, 0:20] (256, 64, 20)",
        ),
        (
            one(&|s| {
                s.voxel_size = [4, 4, 1].into();
                s.roi = Roi::new([8, -4, 0], [256, 64, 20]);
            })?,
            "voxel size: the array has (4, 2, 1), the spec (4, 4, 1)",
        ),
        (
            one(&|s| s.data_type = DataType::U16)?,
            "data type: the array has uint8, the spec uint16",
        ),
        (
            one(&|s| s.chunk_shape = vec![16, 8, 5])?,
            "chunk shape: the array has [16, 8, 10], the spec [16, 8, 5]",
        ),
        (
            one(&|s| s.shard_shape = Some(vec![32, 16, 20]))?,
            "shard shape: the array has none, the spec [32, 16, 20]",
        ),
        (
            one(&|s| s.format = ZarrFormat::V2)?,
            "zarr format: the array has v3, the spec v2",
        ),
        (
            one(&|s| s.axis_names = Some(vec!["z".into(), "y".into(), "x".into()]))?,
            r#"axis names: the array has ["d0", "d1", "d2"], the spec ["z", "y", "x"]"#,
        ),
        (
            one(&|s| s.units = Some(vec!["nm".into(); 3]))?,
            r#"units: the array has ["", "", ""], the spec ["nm", "nm", "nm"]"#,
        ),
        (
            one(&|s| s.fill_value = 255.0)?,
            "fill value: the array has 0, the spec 255",
        ),
    ];
    for (differences, want) in cases {
        assert_eq!(differences, vec![want.to_owned()]);
    }
    Ok(())
}

#[test]
fn prepare_names_every_mismatch_at_once() -> TestResult {
    let mut s = spec();
    s.roi = Roi::new([0, 0, 0], [128, 32, 10]);
    s.data_type = DataType::I32;
    s.chunk_shape = vec![8, 8, 10];
    s.fill_value = -1.0;
    s.units = Some(vec!["nm".into(); 3]);
    let differences = mismatches(&s)?;
    let kinds: Vec<&str> = differences
        .iter()
        .filter_map(|d| d.split(':').next())
        .collect();
    assert_eq!(
        kinds,
        ["ROI", "data type", "units", "chunk shape", "fill value"]
    );
    let dir = TempDir::new("mismatch-msg");
    ZarrArray::prepare(&dir.0, "a", &spec())?;
    let e = ZarrArray::prepare(&dir.0, "a", &s).failure()?.to_string();
    assert!(
        e.contains("an array exists there that differs from the spec"),
        "{e}"
    );
    assert!(
        e.contains("data type: the array has uint8, the spec int32; units:"),
        "{e}"
    );
    assert!(
        e.contains("fill value: the array has 0, the spec -1"),
        "{e}"
    );
    assert!(e.contains("set `overwrite` to replace it"), "{e}");
    Ok(())
}

#[test]
fn prepare_with_overwrite_replaces_a_differing_array() -> TestResult {
    let dir = TempDir::new("prepare-overwrite");
    let a = ZarrArray::prepare(&dir.0, "a", &spec())?;
    let roi = Roi::new([8, -4, 0], [4, 2, 1]);
    a.write(&roi, &ArrayD::from_elem(IxDyn(&[1, 1, 1]), 5u8))?;
    let mut s = spec();
    s.chunk_shape = vec![8, 8, 10];
    s.overwrite = true;
    let b = ZarrArray::prepare(&dir.0, "a", &s)?;
    assert!(is_id(b.array_id()));
    assert_ne!(b.array_id(), a.array_id());
    assert_eq!(b.write_chunk_shape(), &[8, 8, 10]);
    assert_eq!(values(&b.read::<u8>(&roi)?), [0]);
    // An invalid spec is refused before anything is touched.
    let mut bad = spec();
    bad.chunk_shape = vec![0, 8, 10];
    bad.overwrite = true;
    assert!(ZarrArray::prepare(&dir.0, "a", &bad).is_err());
    assert_eq!(ZarrArray::open(&dir.0, "a")?.array_id(), b.array_id());
    Ok(())
}

/// A task over the space axes reads and writes all channels of its blocks of a `c, z, y, x`
/// array (`read_spatial` / `write_spatial`); a ROI with more dims than the array is an error.
#[test]
#[allow(clippy::unwrap_used)]
fn a_task_over_space_axes_reads_and_writes_every_channel() {
    use blockwise::{Block, BlockError, Fit, Progress, Runner, Task};
    let dir = crate::support::empty_dir("store", "spatial");
    let roi = Roi::new([0, 0, 0, 0], [3, 16, 24, 20]);
    let mut spec = ArraySpec::new(roi.clone(), [1, 2, 2, 2], DataType::U16, vec![1, 4, 4, 4]);
    spec.axis_names = Some(["c^", "z", "y", "x"].map(String::from).to_vec());
    let input = ZarrArray::create(&dir, "in", &spec).unwrap();
    let output = ZarrArray::create(&dir, "out", &spec).unwrap();
    let data = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[3, 8, 12, 10]), |i| {
        (i[0] * 1000 + i[1] * 100 + i[2] * 10 + i[3]) as u16
    });
    input.write(&roi, data.view()).unwrap();
    let (src, dst) = (input.clone(), output.clone());
    let block = Roi::new([0, 0, 0], [8, 8, 8]);
    let task = Task::builder(
        "per-channel",
        Roi::new([0, 0, 0], [16, 24, 20]),
        block.clone(),
        block,
    )
    .fit(Fit::Shrink)
    .read_write_conflict(false)
    .process(move |b: &Block| -> Result<(), BlockError> {
        let d = src.read_spatial::<u16>(b.read_roi())?;
        assert_eq!(d.shape()[0], 3);
        dst.write_spatial(b.write_roi(), d.data().mapv(|v| v * 2).view())?;
        Ok(())
    })
    .build()
    .unwrap();
    let summary = Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .run([task])
        .unwrap();
    assert!(summary.is_success());
    assert!(*output.read::<u16>(&roi).unwrap().data() == data.mapv(|v| v * 2));
    let e = input
        .read_spatial::<u16>(&Roi::new([0, 0, 0, 0, 0], [1, 1, 2, 2, 2]))
        .unwrap_err();
    assert!(
        e.to_string().contains("has 5 dims, the array only 4"),
        "{e}"
    );
}
