//! Following an HDF5 file that another process is still writing in SWMR mode (swmr_tools):
//! which frames are complete, and their data, as they arrive. Feature `hdf5`.
//!
//! The writer flushes a frame's data, then writes a non-zero value into *key datasets* (integer
//! datasets over the scan, fill value 0), and may set a one-element *finished* dataset to a
//! non-zero value at the end. A [`KeyFollower`] yields the flat (row-major) indices of the
//! contiguous completed prefix: a frame counts once it is non-zero in every key, and a frame
//! completed after a gap is held back until the gap fills. It stops after `timeout` without
//! progress (measured from when the consumer caught up), or soon after the finished flag (every
//! available frame is still yielded first), and says which ([`StopReason`]). Keys may grow while
//! being followed; keys of different current lengths count missing elements as zero. Calling
//! `next` after a stop starts a new wait.
//!
//! [`RowKeyFollower`] yields the last index of every completed row; [`DataSource`] reads each
//! completed frame from data datasets (frames in the fastest dimensions) with its scan
//! position. Frames can be fed straight into an executor:
//!
//! ```no_run
//! use blockwise::exec::{Executor, MapOptions};
//! use blockwise::store::swmr::{DataSource, KeyFollower};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyFollower::open("scan.h5", &["/entry/keys/det"], Duration::from_secs(10), Some("/entry/finished"))?;
//! let frames = DataSource::<u16>::new(keys, &["/entry/data/det"])?;
//! let ex = Executor::threads(4);
//! let sums = ex.bounded_map(
//!     |f: Result<blockwise::store::swmr::Frame<u16>, blockwise::store::swmr::SwmrError>| {
//!         f.map(|f| f.data[0].1.iter().map(|&v| u64::from(v)).sum::<u64>())
//!     },
//!     frames,
//!     MapOptions::new(8),
//! );
//! for s in sums {
//!     println!("{}", s?);
//! }
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, Instant};

use hdf5::{Dataset, File, OpenMode};
use ndarray::{ArrayD, IxDyn, SliceInfo, SliceInfoElem};

/// Why a follower stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// No progress for the timeout.
    TimedOut,
    /// The finished dataset was set (and every complete frame was yielded).
    Finished,
    /// Reading the keys failed (the message).
    Error(String),
}

/// Errors of the SWMR followers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SwmrError {
    /// The file or a dataset could not be opened or read.
    #[error("{path}: {message}")]
    Hdf5 {
        /// The file or dataset path.
        path: String,
        /// What HDF5 said.
        message: String,
    },
    /// The keys do not describe one scan.
    #[error("key datasets: {0}")]
    Keys(String),
    /// A [`RowKeyFollower`] over an unlimited last scan dimension needs a row size.
    #[error(
        "the last scan dimension of the keys is unlimited: give RowKeyFollower an explicit row size"
    )]
    NoRowSize,
    /// A [`DataSource`] needs at least one data dataset.
    #[error("a DataSource needs at least one data dataset")]
    NoData,
    /// A frame index past the data dataset, even after a refresh.
    #[error("{path}: frame {index} is outside the data's scan shape {shape:?}")]
    FrameOutside {
        /// The data dataset.
        path: String,
        /// The frame's flat index.
        index: u64,
        /// The data's current scan shape.
        shape: Vec<usize>,
    },
}

fn h5(path: &str, e: impl std::fmt::Display) -> SwmrError {
    SwmrError::Hdf5 {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Follows key datasets (see the module docs); an iterator over completed flat indices.
#[derive(Debug)]
pub struct KeyFollower {
    _file: File,
    keys: Vec<(String, Dataset)>,
    finished: Option<Dataset>,
    timeout: Duration,
    poll: Duration,
    scan_rank: usize,
    maxshape: Vec<Option<usize>>,
    current_key: i64,
    current_max: i64,
    finished_seen: bool,
    stop: Option<StopReason>,
}

/// Scan rank of a dataset: its rank without trailing dimensions whose maximum size is 1.
fn scan_rank(maxdims: &[Option<usize>]) -> usize {
    let mut r = maxdims.len();
    while r > 0 && maxdims[r - 1] == Some(1) {
        r -= 1;
    }
    r
}

impl KeyFollower {
    /// Opens `path` for SWMR reading and follows the key datasets `keys`, stopping after
    /// `timeout` without progress or when the dataset `finished` (if given) becomes non-zero.
    ///
    /// # Errors
    ///
    /// The file or a dataset cannot be opened, or the keys have different scan ranks.
    pub fn open(
        path: impl AsRef<std::path::Path>,
        keys: &[&str],
        timeout: Duration,
        finished: Option<&str>,
    ) -> Result<KeyFollower, SwmrError> {
        let p = path.as_ref().display().to_string();
        let file = File::open_as(path.as_ref(), OpenMode::ReadSWMR).map_err(|e| h5(&p, e))?;
        KeyFollower::from_file(file, keys, timeout, finished)
    }

    /// Follows key datasets of an open file (see [`open`](Self::open)).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn from_file(
        file: File,
        keys: &[&str],
        timeout: Duration,
        finished: Option<&str>,
    ) -> Result<KeyFollower, SwmrError> {
        if keys.is_empty() {
            return Err(SwmrError::Keys("no key dataset given".into()));
        }
        let keys: Vec<(String, Dataset)> = keys
            .iter()
            .map(|k| Ok(((*k).to_owned(), file.dataset(k).map_err(|e| h5(k, e))?)))
            .collect::<Result<_, SwmrError>>()?;
        let mut rank = None;
        let mut maxshape = Vec::new();
        for (name, ds) in &keys {
            let maxdims = ds.space().map_err(|e| h5(name, e))?.maxdims();
            let r = scan_rank(&maxdims);
            match rank {
                None => {
                    rank = Some(r);
                    maxshape = maxdims[..r].to_vec();
                }
                Some(r0) if r0 != r => {
                    return Err(SwmrError::Keys(format!(
                        "{name} has scan rank {r}, {} has {r0}",
                        keys[0].0
                    )));
                }
                Some(_) => {
                    if maxdims[..r] != maxshape[..] {
                        tracing::warn!(key = %name, "key datasets have different maximum shapes");
                    }
                }
            }
        }
        let finished = match finished {
            None => None,
            Some(f) => {
                let ds = file.dataset(f).map_err(|e| h5(f, e))?;
                if ds.size() == 1 {
                    Some(ds)
                } else {
                    tracing::warn!(
                        dataset = f,
                        size = ds.size(),
                        "a finished dataset must have one element; ignored, stopping on the timeout only"
                    );
                    None
                }
            }
        };
        Ok(KeyFollower {
            _file: file,
            keys,
            finished,
            timeout,
            poll: (timeout / 20).clamp(Duration::from_millis(1), Duration::from_millis(500)),
            scan_rank: rank.unwrap_or(0),
            maxshape,
            current_key: -1,
            current_max: -1,
            finished_seen: false,
            stop: None,
        })
    }

    /// How often to poll the keys while waiting (default `timeout / 20`, as swmr_tools, within
    /// 1 ms–500 ms). SWMR has no notifications, so this is the latency of a new frame.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll = interval.max(Duration::from_micros(100));
        self
    }

    /// The scan rank (key rank without trailing size-1 dimensions).
    #[must_use]
    pub fn scan_rank(&self) -> usize {
        self.scan_rank
    }

    /// The scan's maximum shape (`None` for unlimited dimensions).
    #[must_use]
    pub fn maxshape(&self) -> &[Option<usize>] {
        &self.maxshape
    }

    /// The last index of the completed prefix seen so far (−1 before any).
    #[must_use]
    pub fn current_max(&self) -> i64 {
        self.current_max
    }

    /// Why the last iteration stopped (`None` while running or before the first stop).
    #[must_use]
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }

    /// Starts over from index 0 (the finished flag stays seen).
    pub fn reset(&mut self) {
        self.current_key = -1;
        self.current_max = -1;
        self.stop = None;
    }

    /// Polls the keys now; returns whether the completed prefix grew.
    ///
    /// # Errors
    ///
    /// Refreshing or reading a key failed.
    pub fn refresh(&mut self) -> Result<bool, SwmrError> {
        let mut product: Vec<bool> = Vec::new();
        for (i, (name, ds)) in self.keys.iter().enumerate() {
            ds.refresh().map_err(|e| h5(name, e))?;
            let values: Vec<i64> = ds.read_raw().map_err(|e| h5(name, e))?;
            if i == 0 {
                product = values.iter().map(|&v| v != 0).collect();
            } else {
                // Jagged keys: missing elements count as zero.
                if values.len() > product.len() {
                    product.resize(values.len(), false);
                }
                for (j, p) in product.iter_mut().enumerate() {
                    *p = *p && values.get(j).is_some_and(|&v| v != 0);
                }
            }
        }
        let first_zero = product.iter().position(|&p| !p).unwrap_or(product.len());
        let new_max = first_zero as i64 - 1;
        if new_max > self.current_max {
            self.current_max = new_max;
            return Ok(true);
        }
        Ok(false)
    }

    fn finished_flag(&self) -> bool {
        self.finished.as_ref().is_some_and(|ds| {
            ds.refresh().is_ok()
                && ds
                    .read_raw::<i64>()
                    .is_ok_and(|v| v.first().is_some_and(|&x| x != 0))
        })
    }

    fn is_finished(&mut self, end: Instant) -> bool {
        if self.current_key != self.current_max {
            return false;
        }
        if Instant::now() > end {
            self.stop = Some(StopReason::TimedOut);
            return true;
        }
        if !self.finished_seen {
            // One more poll of the keys after the flag is seen: the last keys may have been
            // flushed just before it.
            self.finished_seen = self.finished_flag();
            return false;
        }
        self.stop = Some(StopReason::Finished);
        true
    }
}

impl Iterator for KeyFollower {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.current_key < self.current_max {
            self.current_key += 1;
            return u64::try_from(self.current_key).ok();
        }
        self.stop = None;
        let end = Instant::now() + self.timeout;
        loop {
            match self.refresh() {
                Ok(_) if self.current_key < self.current_max => {
                    self.current_key += 1;
                    return u64::try_from(self.current_key).ok();
                }
                Ok(_) => {}
                Err(e) => {
                    self.stop = Some(StopReason::Error(e.to_string()));
                    return None;
                }
            }
            // SWMR has no notifications: readers poll.
            std::thread::sleep(self.poll);
            if self.is_finished(end) {
                return None;
            }
        }
    }
}

/// Yields the last flat index of every completed row of the scan.
#[derive(Debug)]
pub struct RowKeyFollower {
    inner: KeyFollower,
    row: u64,
}

impl RowKeyFollower {
    /// Rows of `row_size` frames, by default the last scan dimension's maximum size.
    ///
    /// # Errors
    ///
    /// [`SwmrError::NoRowSize`] when the last scan dimension is unlimited and no row size is
    /// given (or the scan has rank 0).
    pub fn new(inner: KeyFollower, row_size: Option<u64>) -> Result<RowKeyFollower, SwmrError> {
        let row = match row_size {
            Some(r) if r > 0 => r,
            _ => inner
                .maxshape
                .last()
                .copied()
                .flatten()
                .map(|r| r as u64)
                .filter(|&r| r > 0)
                .ok_or(SwmrError::NoRowSize)?,
        };
        Ok(RowKeyFollower { inner, row })
    }

    /// The underlying key follower (its stop reason).
    #[must_use]
    pub fn keys(&self) -> &KeyFollower {
        &self.inner
    }
}

impl Iterator for RowKeyFollower {
    type Item = u64;

    /// The last index of the next complete row; a partial row at the end is not yielded.
    fn next(&mut self) -> Option<u64> {
        let mut last = None;
        for _ in 0..self.row {
            last = Some(self.inner.next()?);
        }
        last
    }
}

/// One completed frame: its flat index, scan position and data from each data dataset (shaped
/// `[1; scan rank] + frame shape`).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<T> {
    /// Flat (row-major) index in the scan.
    pub index: u64,
    /// Position in the scan.
    pub position: Vec<usize>,
    /// `(dataset path, data)` per data dataset.
    pub data: Vec<(String, ArrayD<T>)>,
}

/// Reads each completed frame from data datasets (see the module docs).
#[derive(Debug)]
pub struct DataSource<T> {
    keys: KeyFollower,
    data: Vec<(String, Dataset)>,
    interleaved: Vec<(String, Vec<(String, Dataset)>)>,
    _t: std::marker::PhantomData<T>,
}

impl<T: hdf5::H5Type + Clone> DataSource<T> {
    /// Frames of the data datasets `data` (paths in the follower's file) for the indices the
    /// follower yields.
    ///
    /// # Errors
    ///
    /// No data dataset, or one that cannot be opened.
    pub fn new(keys: KeyFollower, data: &[&str]) -> Result<DataSource<T>, SwmrError> {
        if data.is_empty() {
            return Err(SwmrError::NoData);
        }
        let data = data
            .iter()
            .map(|p| {
                Ok((
                    (*p).to_owned(),
                    keys._file.dataset(p).map_err(|e| h5(p, e))?,
                ))
            })
            .collect::<Result<_, SwmrError>>()?;
        Ok(DataSource {
            keys,
            data,
            interleaved: Vec::new(),
            _t: std::marker::PhantomData,
        })
    }

    /// Adds a stack written by `n` writers in turn: global frame `i` is frame `i / n` of
    /// `datasets[i % n]` (each a stack of frames along its first axis), reported under `name`.
    ///
    /// # Errors
    ///
    /// No dataset given, or one that cannot be opened.
    pub fn interleaved(
        mut self,
        name: &str,
        datasets: &[&str],
    ) -> Result<DataSource<T>, SwmrError> {
        if datasets.is_empty() {
            return Err(SwmrError::NoData);
        }
        let list = datasets
            .iter()
            .map(|p| {
                Ok((
                    (*p).to_owned(),
                    self.keys._file.dataset(p).map_err(|e| h5(p, e))?,
                ))
            })
            .collect::<Result<_, SwmrError>>()?;
        self.interleaved.push((name.to_owned(), list));
        Ok(self)
    }

    /// The key follower (its stop reason, scan shape).
    #[must_use]
    pub fn keys(&self) -> &KeyFollower {
        &self.keys
    }

    fn read(&self, index: u64) -> Result<Frame<T>, SwmrError> {
        let rank = self.keys.scan_rank;
        let mut out = Vec::with_capacity(self.data.len() + self.interleaved.len());
        let mut position = Vec::new();
        for (path, ds) in &self.data {
            let (pos, frame) = read_frame::<T>(path, ds, index, rank)?;
            position = pos;
            out.push((path.clone(), frame));
        }
        for (name, list) in &self.interleaved {
            let n = list.len() as u64;
            let (path, ds) = &list[(index % n) as usize];
            let (_, frame) = read_frame::<T>(path, ds, index / n, 1)?;
            out.push((name.clone(), frame));
        }
        if position.is_empty() {
            position = vec![usize::try_from(index).unwrap_or(usize::MAX)];
        }
        Ok(Frame {
            index,
            position,
            data: out,
        })
    }
}

/// Frame `index` of `ds` (scan dimensions first, `rank` of them): its position and data.
fn read_frame<T: hdf5::H5Type>(
    path: &str,
    ds: &Dataset,
    index: u64,
    rank: usize,
) -> Result<(Vec<usize>, ArrayD<T>), SwmrError> {
    // New frames may lie past the cached shape until the dataset is refreshed.
    ds.refresh().map_err(|e| h5(path, e))?;
    let shape = ds.shape();
    let scan: Vec<usize> = shape.iter().take(rank).copied().collect();
    let total: u64 = scan.iter().map(|&s| s as u64).product();
    if scan.len() < rank || index >= total {
        return Err(SwmrError::FrameOutside {
            path: path.to_owned(),
            index,
            shape: scan,
        });
    }
    let position = unravel(index, &scan);
    let ranges: Vec<std::ops::Range<usize>> = shape
        .iter()
        .enumerate()
        .map(|(d, &n)| {
            if d < rank {
                position[d]..position[d] + 1
            } else {
                0..n
            }
        })
        .collect();
    let frame = ds
        .read_slice::<T, _, IxDyn>(slices(path, &ranges)?)
        .map_err(|e| h5(path, e))?;
    Ok((position, frame))
}

fn slices(
    path: &str,
    ranges: &[std::ops::Range<usize>],
) -> Result<SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>, SwmrError> {
    let ranges: Vec<std::ops::Range<i64>> = ranges
        .iter()
        .map(|r| r.start as i64..r.end as i64)
        .collect();
    super::hdf5_array::selection(&ranges).map_err(|e| h5(path, e))
}

/// Writes one result per frame into an output dataset laid out like the scan: its shape is
/// the scan's followed by the result's, growing along unlimited scan dimensions as results
/// arrive (swmr_tools' `create_dataset` and `append_data`).
#[derive(Debug)]
pub struct ScanWriter {
    path: String,
    ds: Dataset,
    scan_rank: usize,
    result_shape: Vec<usize>,
}

impl ScanWriter {
    /// Creates `path` in `file` for results of `result_shape` over a scan of `scan_maxshape`
    /// (`None`: unlimited), chunked one result per chunk.
    ///
    /// # Errors
    ///
    /// The dataset cannot be created.
    pub fn create<T: hdf5::H5Type>(
        file: &File,
        path: &str,
        scan_maxshape: &[Option<usize>],
        result_shape: &[usize],
    ) -> Result<ScanWriter, SwmrError> {
        let extents: Vec<hdf5::Extent> = scan_maxshape
            .iter()
            .map(|m| match m {
                Some(n) => hdf5::Extent::new(*n, Some(*n)),
                None => hdf5::Extent::new(0, None),
            })
            .chain(result_shape.iter().map(|&n| hdf5::Extent::fixed(n)))
            .collect();
        let chunk: Vec<usize> = scan_maxshape
            .iter()
            .map(|_| 1)
            .chain(result_shape.iter().map(|&n| n.max(1)))
            .collect();
        let ds = file
            .new_dataset::<T>()
            .chunk(chunk)
            .shape(hdf5::SimpleExtents::from_vec(extents))
            .create(path)
            .map_err(|e| h5(path, e))?;
        Ok(ScanWriter {
            path: path.to_owned(),
            ds,
            scan_rank: scan_maxshape.len(),
            result_shape: result_shape.to_vec(),
        })
    }

    /// Writes the result of the frame at scan `position`, growing the dataset if needed.
    ///
    /// # Errors
    ///
    /// A position of the wrong rank, a result of the wrong size, or an HDF5 error.
    pub fn write<T: hdf5::H5Type + Clone>(
        &self,
        position: &[usize],
        result: &ArrayD<T>,
    ) -> Result<(), SwmrError> {
        if position.len() != self.scan_rank
            || result.len() != self.result_shape.iter().product::<usize>()
        {
            return Err(h5(
                &self.path,
                format!(
                    "a result of shape {:?} at position {position:?} does not fit results of shape {:?} over a scan of rank {}",
                    result.shape(),
                    self.result_shape,
                    self.scan_rank
                ),
            ));
        }
        let mut shape = self.ds.shape();
        let mut grow = false;
        for (d, &p) in position.iter().enumerate() {
            if p >= shape[d] {
                shape[d] = p + 1;
                grow = true;
            }
        }
        if grow {
            self.ds.resize(shape).map_err(|e| h5(&self.path, e))?;
        }
        let full: Vec<usize> = std::iter::repeat_n(1, self.scan_rank)
            .chain(self.result_shape.iter().copied())
            .collect();
        let data = result
            .to_shape(IxDyn(&full))
            .map_err(|e| h5(&self.path, e))?;
        let ranges: Vec<std::ops::Range<usize>> = position
            .iter()
            .map(|&p| p..p + 1)
            .chain(self.result_shape.iter().map(|&n| 0..n))
            .collect();
        self.ds
            .write_slice(&data, slices(&self.path, &ranges)?)
            .map_err(|e| h5(&self.path, e))?;
        self.ds.flush().map_err(|e| h5(&self.path, e))
    }
}

/// The row-major position of flat `index` in `shape`.
fn unravel(mut index: u64, shape: &[usize]) -> Vec<usize> {
    let mut pos = vec![0usize; shape.len()];
    for d in (0..shape.len()).rev() {
        let n = shape[d].max(1) as u64;
        pos[d] = (index % n) as usize;
        index /= n;
    }
    pos
}

impl<T: hdf5::H5Type + Clone> Iterator for DataSource<T> {
    type Item = Result<Frame<T>, SwmrError>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.keys.next()?;
        Some(self.read(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_positions() {
        assert_eq!(scan_rank(&[Some(5), Some(10), Some(1), Some(1)]), 2);
        assert_eq!(scan_rank(&[None, Some(10)]), 2);
        assert_eq!(scan_rank(&[Some(1)]), 0);
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(0, &[2, 3]), vec![0, 0]);
    }
}
