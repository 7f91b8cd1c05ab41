//! The done-marker array of one task: a zarr v3 array over the task's block grid, one `uint8`
//! per block in a single uncompressed chunk (`done.zarr/c/0/0/…`), so that the chunk file is
//! the raw bytes in grid-index order and any zarr reader can open it.
//!
//! Values: [`NOT_DONE`], [`DONE`], [`FAILED`]. Writes go through a write-back cache of 4 KiB
//! pages, flushed in batches followed by `fdatasync`.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;

use super::JournalError;
use super::done::{CHUNK, DoneSet, DoneSetBuilder};

/// The block has not finished (never run, orphaned, or interrupted).
pub(crate) const NOT_DONE: u8 = 0;
/// The block's process function returned successfully.
pub(crate) const DONE: u8 = 1;
/// The block failed on its last attempt.
pub(crate) const FAILED: u8 = 2;

const PAGE: u64 = 4096;

/// Counts of one marker file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) done: u64,
    pub(crate) failed: u64,
}

/// The zarr metadata of a marker array over `grid_shape`.
fn metadata(grid_shape: &[i64]) -> serde_json::Value {
    let chunk: Vec<i64> = grid_shape.iter().map(|&n| n.max(1)).collect();
    serde_json::json!({
        "zarr_format": 3,
        "node_type": "array",
        "shape": grid_shape,
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
        "attributes": {
            "blockwise": {
                "kind": "done-markers",
                "version": 1,
                "order": "grid index (row-major over the block grid)",
                "values": {"0": "not done", "1": "done", "2": "failed"}
            }
        }
    })
}

fn chunk_path(array: &Path, dims: usize) -> PathBuf {
    let mut p = array.join("c");
    for _ in 0..dims.max(1) {
        p.push("0");
    }
    p
}

fn io(action: &str, path: &Path, source: std::io::Error) -> JournalError {
    JournalError::Io {
        action: action.to_owned(),
        path: path.to_owned(),
        source,
    }
}

/// Creates an empty marker array (every block not done), with its space reserved up front so
/// that a full disk shows now rather than in the middle of a run.
pub(crate) fn create(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
) -> Result<(), JournalError> {
    let chunk = chunk_path(array, grid_shape.len());
    let parent = chunk.parent().unwrap_or(array);
    fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    let file = File::create(&chunk).map_err(|e| io("create", &chunk, e))?;
    if num_blocks > 0 {
        let len = i64::try_from(num_blocks).map_err(|_| JournalError::Corrupt {
            path: chunk.clone(),
            reason: format!("{num_blocks} blocks do not fit in a file"),
        })?;
        match nix::fcntl::posix_fallocate(&file, 0, len) {
            Ok(()) => {}
            Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL) => {
                file.set_len(num_blocks)
                    .map_err(|e| io("size", &chunk, e))?;
            }
            Err(e) => return Err(io("reserve space for", &chunk, e.into())),
        }
    }
    file.sync_all().map_err(|e| io("sync", &chunk, e))?;
    super::write_atomic(
        &array.join("zarr.json"),
        serde_json::to_string_pretty(&metadata(grid_shape))
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(())
}

/// Checks the metadata of an existing marker array against the grid.
fn check_metadata(array: &Path, grid_shape: &[i64]) -> Result<(), JournalError> {
    let path = array.join("zarr.json");
    let text = fs::read_to_string(&path).map_err(|e| io("read", &path, e))?;
    let found: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| JournalError::Corrupt {
            path: path.clone(),
            reason: format!("not valid JSON ({e})"),
        })?;
    let expected = metadata(grid_shape);
    for key in ["zarr_format", "shape", "data_type", "chunk_grid", "codecs"] {
        if found.get(key) != expected.get(key) {
            return Err(JournalError::Corrupt {
                path,
                reason: format!(
                    "{key} is {}, expected {}",
                    found.get(key).map_or("missing".into(), ToString::to_string),
                    expected.get(key).map_or(String::new(), ToString::to_string)
                ),
            });
        }
    }
    Ok(())
}

/// Reads a marker array, checking every byte, and feeds `visit` each chunk of values.
fn scan(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    mut visit: impl FnMut(u64, &[u8]),
) -> Result<(), JournalError> {
    check_metadata(array, grid_shape)?;
    let chunk = chunk_path(array, grid_shape.len());
    let mut file = File::open(&chunk).map_err(|e| io("open", &chunk, e))?;
    let len = file.metadata().map_err(|e| io("stat", &chunk, e))?.len();
    if len != num_blocks {
        return Err(JournalError::Corrupt {
            path: chunk,
            reason: format!(
                "{len} bytes, expected {num_blocks} (one per block){}",
                if len < num_blocks {
                    "; it was truncated"
                } else {
                    ""
                }
            ),
        });
    }
    let mut buf = vec![0u8; CHUNK as usize];
    let mut offset = 0u64;
    while offset < num_blocks {
        let n = (num_blocks - offset).min(CHUNK) as usize;
        file.read_exact(&mut buf[..n])
            .map_err(|e| io("read", &chunk, e))?;
        if let Some(bad) = buf[..n].iter().position(|&b| b > FAILED) {
            return Err(JournalError::Corrupt {
                path: chunk,
                reason: format!(
                    "byte {} is {}; markers are 0 (not done), 1 (done) or 2 (failed)",
                    offset + bad as u64,
                    buf[bad]
                ),
            });
        }
        visit(offset, &buf[..n]);
        offset += n as u64;
    }
    Ok(())
}

/// The done blocks of a marker array.
pub(crate) fn load(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
) -> Result<DoneSet, JournalError> {
    let mut builder = DoneSetBuilder::new(num_blocks);
    scan(array, grid_shape, num_blocks, |_, values| {
        builder.push_chunk(values.iter().map(|&v| v == DONE));
    })?;
    Ok(builder.finish())
}

/// Counts of a marker array, and the grid indices of its failed blocks (at most `keep`).
pub(crate) fn count(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    keep: usize,
) -> Result<(Counts, Vec<u64>), JournalError> {
    let mut counts = Counts::default();
    let mut failed = Vec::new();
    scan(array, grid_shape, num_blocks, |offset, values| {
        for (i, &v) in values.iter().enumerate() {
            match v {
                DONE => counts.done += 1,
                FAILED => {
                    counts.failed += 1;
                    if failed.len() < keep {
                        failed.push(offset + i as u64);
                    }
                }
                NOT_DONE => {}
                _ => {}
            }
        }
    })?;
    Ok((counts, failed))
}

/// The modification time of a marker array's chunk (when it was last written).
pub(crate) fn modified(array: &Path, dims: usize) -> Option<std::time::SystemTime> {
    fs::metadata(chunk_path(array, dims))
        .and_then(|m| m.modified())
        .ok()
}

/// Writes markers through a cache of dirty pages.
#[derive(Debug)]
pub(crate) struct MarkerWriter {
    path: PathBuf,
    file: File,
    len: u64,
    pages: FxHashMap<u64, Box<[u8]>>,
}

impl MarkerWriter {
    pub(crate) fn open(
        array: &Path,
        dims: usize,
        num_blocks: u64,
    ) -> Result<MarkerWriter, JournalError> {
        let path = chunk_path(array, dims);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        Ok(MarkerWriter {
            path,
            file,
            len: num_blocks,
            pages: FxHashMap::default(),
        })
    }

    /// Sets one marker (in the cache; [`flush`](Self::flush) writes it).
    pub(crate) fn set(&mut self, index: u64, value: u8) -> Result<(), JournalError> {
        if index >= self.len {
            return Ok(());
        }
        let page = index / PAGE;
        let buf = match self.pages.entry(page) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let start = page * PAGE;
                let n = (self.len - start).min(PAGE) as usize;
                let mut buf = vec![0u8; n].into_boxed_slice();
                self.file
                    .read_exact_at(&mut buf, start)
                    .map_err(|e| io("read", &self.path, e))?;
                v.insert(buf)
            }
        };
        buf[(index % PAGE) as usize] = value;
        Ok(())
    }

    /// Writes the cached pages and syncs the file.
    pub(crate) fn flush(&mut self) -> Result<(), JournalError> {
        if self.pages.is_empty() {
            return Ok(());
        }
        let mut pages: Vec<(u64, Box<[u8]>)> = self.pages.drain().collect();
        pages.sort_unstable_by_key(|(p, _)| *p);
        for (page, buf) in &pages {
            self.file
                .write_all_at(buf, page * PAGE)
                .map_err(|e| io("write", &self.path, e))?;
        }
        self.file
            .sync_data()
            .map_err(|e| io("sync", &self.path, e))?;
        Ok(())
    }
}
