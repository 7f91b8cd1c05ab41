//! Deterministic synthetic volumes: smooth Gaussian blobs plus noise, as 3D `u8`.
//!
//! Every voxel's value is a pure function of its position and the [`SampleSpec`], so any block
//! of the volume can be generated independently (and in parallel) and always gives the same
//! bytes, whatever the chunking. The examples and `blockwise sample` use this to create test
//! volumes on the fly instead of committing data.
//!
//! The value at `p = (z, y, x)` is
//! `clamp(round(background + Σ_i amplitude_i · exp(-|p - c_i|² / (2 σ_i²)) + noise(p)), 0, 255)`,
//! with blob centres `c_i`, widths `σ_i` and amplitudes drawn from a SplitMix64 stream seeded by
//! `seed`, and `noise(p)` uniform in `[-noise, noise]` from a hash of `(seed, p)`.

use crate::geometry::Roi;

/// Parameters of a synthetic volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSpec {
    /// Shape in voxels `(z, y, x)`.
    pub shape: [u64; 3],
    /// Seed of the blob parameters and the noise.
    pub seed: u64,
    /// Number of blobs.
    pub blobs: u32,
    /// Noise amplitude (uniform in `[-noise, noise]`).
    pub noise: u8,
    /// Background value.
    pub background: u8,
}

/// One Gaussian blob.
#[derive(Debug, Clone, Copy)]
struct Blob {
    center: [f64; 3],
    sigma: f64,
    amplitude: f64,
}

impl SampleSpec {
    /// A cube of `size` voxels per axis with the default parameters: one blob (σ of 2 to 8
    /// voxels) per 32³ voxels (at least 8), noise ±12, background 30, seed 1.
    #[must_use]
    pub fn cube(size: u64) -> SampleSpec {
        let blobs = (size / 32).saturating_pow(3).clamp(8, 4096) as u32;
        SampleSpec {
            shape: [size; 3],
            seed: 1,
            blobs,
            noise: 12,
            background: 30,
        }
    }

    /// The ROI of the whole volume in voxels (offset 0).
    #[must_use]
    pub fn roi(&self) -> Roi {
        Roi::new([0i64; 3], self.shape.map(|s| s as i64))
    }

    fn blob_params(&self) -> Vec<Blob> {
        let mut state = self.seed ^ 0x5EED_B10B_5EED_B10B;
        let mut next = move || splitmix64(&mut state) as f64 / u64::MAX as f64;
        (0..self.blobs)
            .map(|_| {
                let center = [
                    next() * self.shape[0] as f64,
                    next() * self.shape[1] as f64,
                    next() * self.shape[2] as f64,
                ];
                let sigma = 2.0 + 6.0 * next();
                let amplitude = 60.0 + 140.0 * next();
                Blob {
                    center,
                    sigma,
                    amplitude,
                }
            })
            .collect()
    }

    /// The voxels of `roi` (in voxel units, any position: outside the volume the formula simply
    /// continues) in C order, `z` slowest.
    ///
    /// # Panics
    ///
    /// If `roi` is not 3-dimensional.
    #[must_use]
    pub fn generate(&self, roi: &Roi) -> Vec<u8> {
        assert_eq!(roi.dims(), 3, "sample volumes are 3D, got ROI {roi}");
        let begin = [roi.begin()[0], roi.begin()[1], roi.begin()[2]];
        let shape = [
            roi.shape()[0].max(0) as usize,
            roi.shape()[1].max(0) as usize,
            roi.shape()[2].max(0) as usize,
        ];
        let n = shape.iter().product::<usize>();
        let mut acc = vec![f64::from(self.background); n];
        // Separable Gaussians: per blob and axis a 1D profile; blobs farther than 4σ are skipped.
        for blob in self.blob_params() {
            let reach = 4.0 * blob.sigma;
            let profile = |axis: usize| -> Option<Vec<f64>> {
                let lo = begin[axis] as f64;
                let hi = lo + shape[axis] as f64;
                if blob.center[axis] + reach < lo || blob.center[axis] - reach > hi {
                    return None;
                }
                Some(
                    (0..shape[axis])
                        .map(|i| {
                            let d = begin[axis] as f64 + i as f64 - blob.center[axis];
                            // Exactly zero beyond the reach, so that skipping far blobs above
                            // gives the same bytes for every block.
                            if d.abs() > reach {
                                0.0
                            } else {
                                (-d * d / (2.0 * blob.sigma * blob.sigma)).exp()
                            }
                        })
                        .collect(),
                )
            };
            let (Some(pz), Some(py), Some(px)) = (profile(0), profile(1), profile(2)) else {
                continue;
            };
            let mut i = 0;
            for &gz in &pz {
                for &gy in &py {
                    let gzy = blob.amplitude * gz * gy;
                    if gzy < 1e-3 {
                        i += shape[2];
                        continue;
                    }
                    for &gx in &px {
                        acc[i] += gzy * gx;
                        i += 1;
                    }
                }
            }
        }
        let noise = i64::from(self.noise);
        let mut out = Vec::with_capacity(n);
        let mut i = 0;
        for z in 0..shape[0] as i64 {
            for y in 0..shape[1] as i64 {
                for x in 0..shape[2] as i64 {
                    let p = [begin[0] + z, begin[1] + y, begin[2] + x];
                    let h = hash(self.seed, p);
                    let jitter = if noise == 0 {
                        0
                    } else {
                        (h % (2 * noise as u64 + 1)) as i64 - noise
                    };
                    let v = acc[i].round() as i64 + jitter;
                    out.push(v.clamp(0, 255) as u8);
                    i += 1;
                }
            }
        }
        out
    }
}

/// A sample volume (or a benchmark on one) that would exceed a limit of this machine or escape
/// its store, found before anything is allocated or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// A dataset name that does not name a node inside its store.
    #[error("dataset {dataset:?}: {reason}")]
    Dataset {
        /// The dataset name as given.
        dataset: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More memory than this process may allocate.
    #[error("{what} needs {} of memory, but only {} is available", bytes(*needed), bytes(*available))]
    Memory {
        /// What needs the memory, with the sizes it follows from.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes available ([`available_memory`]).
        available: u64,
    },
    /// A size whose byte count does not fit in 64 bits.
    #[error("{what} is too large: its size in bytes overflows 64 bits")]
    Overflow {
        /// The offending sizes.
        what: String,
    },
}

/// `n` bytes for messages: exact, plus binary units from KiB up.
#[must_use]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{n} bytes ({v:.1} {})", UNITS[unit])
}

/// Checks that `dataset` names a node inside its store: `""` (the root) or `/`-separated names
/// none of which is empty, `.` or `..` (leading and trailing `/` are ignored), so that creating
/// or replacing it can never touch anything outside the store.
///
/// # Errors
///
/// [`LimitError::Dataset`] naming the dataset.
pub fn check_dataset(dataset: &str) -> Result<(), LimitError> {
    match crate::store::dataset_problem(dataset) {
        None => Ok(()),
        Some(reason) => Err(LimitError::Dataset {
            dataset: dataset.to_owned(),
            reason,
        }),
    }
}

/// The memory this process may still allocate, in bytes: `MemAvailable` of `/proc/meminfo`,
/// lowered to the cgroup (v2) limit minus current usage when one is set. `None` where neither
/// is known (then no memory check is made).
#[must_use]
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let cgroup =
        read("memory.max").map(|max| max.saturating_sub(read("memory.current").unwrap_or(0)));
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Bytes each voxel of a block takes while [`write_zarr`] generates it (an `f64` accumulator
/// plus the `u8` result, see [`SampleSpec::generate`]).
pub const GENERATE_BYTES_PER_VOXEL: u64 = 9;

/// Bytes each voxel of a whole write chunk takes while it is written: the zarr library fills a
/// partial chunk to its full shape and encodes it.
pub const WRITE_BYTES_PER_VOXEL: u64 = 2;

/// The peak memory of one block of [`write_zarr`] for a volume of shape `volume` written in
/// chunks (or shards) of shape `write_chunk`: [`GENERATE_BYTES_PER_VOXEL`] for every voxel of
/// the chunk clipped to the volume, plus [`WRITE_BYTES_PER_VOXEL`] for every voxel of the whole
/// chunk.
///
/// # Errors
///
/// [`LimitError::Overflow`] if that does not fit in `u64`.
pub fn block_memory(volume: &[u64], write_chunk: &[u64]) -> Result<u64, LimitError> {
    let overflow = || LimitError::Overflow {
        what: format!("a chunk of shape {write_chunk:?}"),
    };
    let product = |it: &mut dyn Iterator<Item = u64>| {
        let mut acc = 1u64;
        for v in it {
            acc = acc.checked_mul(v).ok_or_else(overflow)?;
        }
        Ok::<u64, LimitError>(acc)
    };
    let clipped = product(&mut volume.iter().zip(write_chunk).map(|(v, c)| *v.min(c)))?;
    let whole = product(&mut write_chunk.iter().copied())?;
    clipped
        .checked_mul(GENERATE_BYTES_PER_VOXEL)
        .and_then(|g| whole.checked_mul(WRITE_BYTES_PER_VOXEL)?.checked_add(g))
        .ok_or_else(overflow)
}

/// Checks `needed` bytes of memory for `what` against [`available_memory`].
///
/// # Errors
///
/// [`LimitError::Memory`] if more is needed than available (never when unknown).
pub fn check_memory(what: impl FnOnce() -> String, needed: u64) -> Result<(), LimitError> {
    match available_memory() {
        Some(available) if needed > available => Err(LimitError::Memory {
            what: what(),
            needed,
            available,
        }),
        _ => Ok(()),
    }
}

/// Writes the volume of `spec` as a zarr array (`u8`, voxel size 1, offset 0, axes `z, y, x`),
/// one chunk (or shard) per block on `workers` threads, and returns it.
///
/// Before anything is created it checks that `dataset` stays inside the store
/// ([`check_dataset`]) and that the blocks in flight fit in memory ([`block_memory`] per
/// worker, at most one worker per block, against [`available_memory`]).
///
/// # Errors
///
/// A dataset outside the store or blocks larger than the available memory (as
/// [`StoreError::Open`](crate::store::StoreError::Open) naming the limit), storage errors, or a
/// failed block (reported with its message).
#[cfg(feature = "zarr")]
pub fn write_zarr(
    spec: &SampleSpec,
    path: &std::path::Path,
    dataset: &str,
    options: &crate::store::ArraySpec,
    workers: usize,
) -> Result<crate::store::ZarrArray, crate::Error> {
    use crate::store::{DataType, ZarrArray};
    use crate::{Block, BlockError, Progress, Runner, Task};
    use std::sync::Arc;

    let limit = |e: LimitError| {
        crate::Error::Store(crate::store::StoreError::Open {
            path: format!("{}/{}", path.display(), dataset.trim_matches('/')),
            message: e.to_string(),
        })
    };
    check_dataset(dataset).map_err(limit)?;
    let write_chunk = options.shard_shape.as_ref().unwrap_or(&options.chunk_shape);
    if write_chunk.len() == 3 && !write_chunk.contains(&0) {
        let blocks: u64 = spec
            .shape
            .iter()
            .zip(write_chunk)
            .map(|(s, c)| s.div_ceil(*c))
            .try_fold(1u64, |acc, n| acc.checked_mul(n))
            .unwrap_or(u64::MAX);
        let in_flight = blocks.min(workers.max(1) as u64);
        let needed = block_memory(&spec.shape, write_chunk)
            .and_then(|b| {
                b.checked_mul(in_flight).ok_or(LimitError::Overflow {
                    what: format!("{in_flight} blocks of shape {write_chunk:?}"),
                })
            })
            .map_err(limit)?;
        check_memory(
            || {
                format!(
                    "writing {in_flight} chunks of shape {write_chunk:?} at once ({} each)",
                    bytes(needed / in_flight.max(1))
                )
            },
            needed,
        )
        .map_err(limit)?;
    }
    let mut array_spec = options.clone();
    array_spec.roi = spec.roi();
    array_spec.voxel_size = [1i64, 1, 1].into();
    array_spec.data_type = DataType::U8;
    if array_spec.axis_names.is_none() {
        array_spec.axis_names = Some(vec!["z".into(), "y".into(), "x".into()]);
    }
    let array = Arc::new(ZarrArray::create(path, dataset, &array_spec)?);
    let block: Vec<i64> = array
        .write_chunk_shape()
        .iter()
        .map(|&c| c as i64)
        .collect();
    let (a, s) = (Arc::clone(&array), spec.clone());
    let task = Task::builder(
        "sample",
        spec.roi(),
        Roi::new([0i64; 3], block.clone()),
        Roi::new([0i64; 3], block),
    )
    .fit(crate::Fit::Shrink)
    .read_write_conflict(false)
    .writes(array.as_ref())
    .num_workers(workers.max(1))
    .process(move |b: &Block| -> Result<(), BlockError> {
        let roi = b.write_roi();
        let shape: Vec<usize> = roi.shape().iter().map(|v| v as usize).collect();
        let data = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), s.generate(roi))?;
        a.write(roi, data.view())?;
        Ok(())
    })
    .build()?;
    let summary = Runner::new()
        .progress(Progress::Never)
        .print_summary(false)
        .run([task])?;
    if let Some(f) = summary.failures("sample").first() {
        return Err(crate::Error::Store(crate::store::StoreError::Backend {
            path: array.name().to_owned(),
            message: format!("writing block {} failed: {}", f.block_id, f.message),
        }));
    }
    drop(summary);
    ZarrArray::open(path, dataset).map_err(crate::Error::Store)
}

/// Opens the sample volume `dataset` of the zarr store at `path`, writing it first (with
/// [`write_zarr`]: blosc-zstd chunks of `chunk`³ voxels, on `workers` threads) if the store
/// does not exist. The store is written under `<path>.partial` and renamed into place when
/// complete, so an interrupted generation is never mistaken for a volume (the next call
/// starts it again).
///
/// ```
/// use blockwise::sample::{SampleSpec, open_or_write_zarr};
///
/// # fn main() -> Result<(), blockwise::Error> {
/// let dir = std::env::temp_dir().join(format!("blockwise-doc-sample-{}", std::process::id()));
/// let path = dir.join("sample.zarr");
/// let raw = open_or_write_zarr(&SampleSpec::cube(32), &path, "raw", 16, 2)?;
/// assert_eq!(raw.shape(), &[32, 32, 32]);
/// let again = open_or_write_zarr(&SampleSpec::cube(32), &path, "raw", 16, 2)?; // opened
/// assert_eq!(again.array_id(), raw.array_id());
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// The store exists but holds no such array or one of another shape (it is never
/// overwritten), and the errors of [`write_zarr`].
#[cfg(feature = "zarr")]
pub fn open_or_write_zarr(
    spec: &SampleSpec,
    path: &std::path::Path,
    dataset: &str,
    chunk: u64,
    workers: usize,
) -> Result<crate::store::ZarrArray, crate::Error> {
    use crate::store::{ArraySpec, DataType, StoreError, ZarrArray};
    let refuse = |message: String| {
        crate::Error::Store(StoreError::Open {
            path: format!("{}/{}", path.display(), dataset.trim_matches('/')),
            message,
        })
    };
    if std::fs::symlink_metadata(path).is_ok() {
        let array = ZarrArray::open(path, dataset).map_err(|e| {
            refuse(format!(
                "the store exists but its sample volume cannot be opened ({e}); remove it to generate it again"
            ))
        })?;
        if array.shape() != spec.shape {
            return Err(refuse(format!(
                "the store holds a volume of shape {:?}, not the requested {:?}; remove it or use another path",
                array.shape(),
                spec.shape
            )));
        }
        return Ok(array);
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    if std::fs::symlink_metadata(&partial).is_ok() {
        std::fs::remove_dir_all(&partial).map_err(|e| crate::Error::Io {
            context: format!("removing the interrupted sample {}", partial.display()),
            source: e,
        })?;
    }
    let mut options = ArraySpec::new(spec.roi(), [1, 1, 1], DataType::U8, vec![chunk; 3]);
    options.overwrite = true;
    write_zarr(spec, &partial, dataset, &options, workers)?;
    std::fs::rename(&partial, path).map_err(|e| crate::Error::Io {
        context: format!("renaming {} to {}", partial.display(), path.display()),
        source: e,
    })?;
    ZarrArray::open(path, dataset).map_err(crate::Error::Store)
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(seed: u64, p: [i64; 3]) -> u64 {
    let mut s = seed;
    let mut h = splitmix64(&mut s);
    for v in p {
        s = h ^ (v as u64);
        h = splitmix64(&mut s);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_agree_with_the_whole_volume() {
        let mut spec = SampleSpec::cube(40);
        spec.seed = 7;
        let whole = spec.generate(&spec.roi());
        assert_eq!(whole.len(), 40 * 40 * 40);
        // Every 16³ block (shrunk at the end) of the 40³ volume.
        for (bz, by, bx) in
            (0..3).flat_map(|z| (0..3).flat_map(move |y| (0..3).map(move |x| (z, y, x))))
        {
            let begin = [bz * 16, by * 16, bx * 16];
            let shape = begin.map(|b| (40 - b).min(16));
            let part = spec.generate(&Roi::new(begin.map(|b| b as i64), shape.map(|s| s as i64)));
            let mut i = 0;
            for z in 0..shape[0] {
                for y in 0..shape[1] {
                    for x in 0..shape[2] {
                        let w = whole[((begin[0] + z) * 40 + begin[1] + y) * 40 + begin[2] + x];
                        assert_eq!(part[i], w, "block {begin:?} voxel {:?}", (z, y, x));
                        i += 1;
                    }
                }
            }
        }
    }

    #[test]
    fn datasets_must_stay_inside_the_store() {
        for ok in ["", "/", "raw", "/a/b/", "s0"] {
            assert_eq!(check_dataset(ok), Ok(()), "{ok:?}");
        }
        for bad in ["..", "../x", "a/../../b", "a//b", "./a", "a\\b"] {
            assert!(
                matches!(check_dataset(bad), Err(LimitError::Dataset { ref dataset, .. }) if dataset == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn block_memory_counts_the_whole_chunk_and_reports_overflow() {
        assert_eq!(block_memory(&[8, 8, 8], &[4, 4, 4]), Ok(64 * 11));
        assert_eq!(
            block_memory(&[8, 8, 8], &[1 << 16; 3]),
            Ok(512 * 9 + (1u64 << 48) * 2)
        );
        assert!(matches!(
            block_memory(&[8, 8, 8], &[1 << 30; 3]),
            Err(LimitError::Overflow { .. })
        ));
        assert_eq!(bytes(1023), "1023 bytes");
        assert_eq!(bytes(3 << 30), "3221225472 bytes (3.0 GiB)");
    }

    /// A chunk far larger than memory is refused before the array is created (it used to
    /// abort the process allocating the chunk).
    #[cfg(feature = "zarr")]
    #[test]
    fn write_zarr_refuses_chunks_larger_than_memory() -> Result<(), Box<dyn std::error::Error>> {
        use crate::store::{ArraySpec, DataType};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.zarr");
        let spec = SampleSpec::cube(8);
        let options = ArraySpec::new(spec.roi(), [1, 1, 1], DataType::U8, vec![1 << 20; 3]);
        let Err(e) = write_zarr(&spec, &path, "raw", &options, 2) else {
            return Err("a 2^60-voxel chunk was accepted".into());
        };
        let message = e.to_string();
        assert!(message.contains("of memory, but only"), "{message}");
        assert!(message.contains("[1048576, 1048576, 1048576]"), "{message}");
        assert!(!path.exists(), "nothing is created");
        let Err(e) = write_zarr(&spec, &path, "../escape", &options, 2) else {
            return Err("a dataset outside the store was accepted".into());
        };
        assert!(e.to_string().contains("\"../escape\""), "{e}");
        assert!(!path.exists());
        Ok(())
    }

    #[test]
    fn deterministic_and_seeded() {
        let a = SampleSpec::cube(16);
        let mut b = a.clone();
        assert_eq!(a.generate(&a.roi()), b.generate(&b.roi()));
        b.seed = 2;
        assert_ne!(a.generate(&a.roi()), b.generate(&b.roi()));
    }

    #[test]
    fn has_structure_and_noise() {
        let spec = SampleSpec::cube(64);
        let v = spec.generate(&spec.roi());
        let max = v.iter().copied().max().unwrap_or(0);
        let min = v.iter().copied().min().unwrap_or(0);
        assert!(max > 150, "blobs reach high values: max {max}");
        assert!(min < 45, "background stays low: min {min}");
        let distinct = v.iter().collect::<std::collections::HashSet<_>>().len();
        assert!(distinct > 100, "{distinct} distinct values");
    }
}
