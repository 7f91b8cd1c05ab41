//! Version 1 of the done-marker array, read to migrate it to version 2 (markers.rs) and by
//! `blockwise status`: a zarr v3 array over the task's block grid, one `uint8` per block in a
//! single uncompressed chunk (`done.zarr/c/0/0/…`), values 0 (not done), 1 (done), 2 (failed),
//! with `done.crc32` holding a CRC-32 of every 4 KiB page of the chunk:
//!
//! ```text
//! "BWCK" | u32 version = 1 | u32 page size = 4096 | u64 blocks | one u32 CRC-32 per page
//! ```
//!
//! Its writer is kept for tests (to build version 1 run directories).

use std::collections::HashSet;
#[cfg(test)]
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[cfg(test)]
use rustc_hash::FxHashMap;

use super::JournalError;
use super::done::CHUNK;
#[cfg(test)]
use super::done::{DoneSet, DoneSetBuilder};
#[cfg(test)]
use super::files::open_regular;
use super::files::{open_read, read_small};

use super::markers::{Counts, DONE, FAILED, NOT_DONE};

/// Markers per page: the unit of the writer's cache and of the checksums.
pub(crate) const PAGE: u64 = 4096;
const _: () = assert!(CHUNK.is_multiple_of(PAGE), "a read chunk holds whole pages");

const SUMS_MAGIC: &[u8; 4] = b"BWCK";
const SUMS_VERSION: u32 = 1;
const SUMS_HEADER: u64 = 4 + 4 + 4 + 8;

/// The checksum file of a marker array (`done.crc32` beside `done.zarr`).
pub(crate) fn sums_path(array: &Path) -> PathBuf {
    array.with_file_name("done.crc32")
}

fn pages(num_blocks: u64) -> u64 {
    num_blocks.div_ceil(PAGE)
}

fn sums_len(num_blocks: u64) -> u64 {
    SUMS_HEADER + 4 * pages(num_blocks)
}

/// The checksum file's bytes for these page CRCs.
#[cfg(test)]
fn encode_sums(num_blocks: u64, sums: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(sums_len(num_blocks)).unwrap_or(0));
    out.extend_from_slice(SUMS_MAGIC);
    out.extend_from_slice(&SUMS_VERSION.to_le_bytes());
    out.extend_from_slice(&(PAGE as u32).to_le_bytes());
    out.extend_from_slice(&num_blocks.to_le_bytes());
    for s in sums {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// The page CRCs of a checksum file's bytes, for an array of `num_blocks` markers; what is
/// wrong with the file otherwise.
pub(crate) fn parse_sums(bytes: &[u8], num_blocks: u64) -> Result<Vec<u32>, String> {
    let expected = sums_len(num_blocks);
    if bytes.len() < SUMS_HEADER as usize || &bytes[..4] != SUMS_MAGIC {
        return Err("not a blockwise checksum file".into());
    }
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(w)
    };
    if word(4) != SUMS_VERSION {
        return Err(format!("version {}, expected {SUMS_VERSION}", word(4)));
    }
    if u64::from(word(8)) != PAGE {
        return Err(format!("page size {}, expected {PAGE}", word(8)));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[12..20]);
    let blocks = u64::from_le_bytes(n);
    if blocks != num_blocks {
        return Err(format!(
            "it is for {blocks} markers, the array has {num_blocks}"
        ));
    }
    if bytes.len() as u64 != expected {
        return Err(format!(
            "{} bytes, expected {expected} (a CRC for each of {} pages)",
            bytes.len(),
            pages(num_blocks)
        ));
    }
    Ok(bytes[SUMS_HEADER as usize..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The stored page CRCs of a marker array; `None` if it has no checksum file.
fn read_sums(array: &Path, num_blocks: u64) -> Result<Option<Vec<u32>>, JournalError> {
    let path = sums_path(array);
    if !super::files::exists(&path)? {
        return Ok(None);
    }
    let bytes = read_small(&path, sums_len(num_blocks))?;
    parse_sums(&bytes, num_blocks)
        .map(Some)
        .map_err(|reason| JournalError::Corrupt { path, reason })
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

#[cfg(test)]
/// Creates an empty marker array (every block not done) with its checksum file, with its
/// space reserved up front so that a full disk shows now rather than in the middle of a run.
/// The caller creates it in a directory of its own and removes that if this fails, so a
/// failed reservation leaves nothing behind.
pub(crate) fn create(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
) -> Result<(), JournalError> {
    let chunk = chunk_path(array, grid_shape.len());
    let parent = chunk.parent().unwrap_or(array);
    fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    let file = open_regular(
        &chunk,
        OpenOptions::new().write(true).create(true).truncate(true),
        "create",
    )?;
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
    // Every page is zeros: one CRC for the full pages, one for a short last page.
    let zeros = vec![0u8; PAGE as usize];
    let full = crc32fast::hash(&zeros);
    let sums: Vec<u32> = (0..pages(num_blocks))
        .map(|p| {
            let n = (num_blocks - p * PAGE).min(PAGE);
            if n == PAGE {
                full
            } else {
                crc32fast::hash(&zeros[..n as usize])
            }
        })
        .collect();
    super::write_atomic(&sums_path(array), &encode_sums(num_blocks, &sums))?;
    super::write_atomic(
        &array.join("zarr.json"),
        serde_json::to_string_pretty(&metadata(grid_shape))
            .unwrap_or_default()
            .as_bytes(),
    )?;
    // The directories' entries are durable before the caller renames them into place.
    let mut d = parent;
    loop {
        super::files::sync_dir(d);
        if d == array {
            break;
        }
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    Ok(())
}

/// Checks the metadata of an existing marker array against the grid.
fn check_metadata(array: &Path, grid_shape: &[i64]) -> Result<(), JournalError> {
    let path = array.join("zarr.json");
    let text = read_small(&path, super::files::MAX_JSON)?;
    let found: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| JournalError::Corrupt {
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

/// Reads a marker array, checking every byte, and feeds `visit` each chunk of values;
/// returns the CRC of every page (see the module docs).
fn scan(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    mut visit: impl FnMut(u64, &[u8]),
) -> Result<Vec<u32>, JournalError> {
    check_metadata(array, grid_shape)?;
    let chunk = chunk_path(array, grid_shape.len());
    let mut file = open_read(&chunk)?;
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
    let mut sums = Vec::with_capacity(usize::try_from(pages(num_blocks)).unwrap_or(0));
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
        sums.extend(buf[..n].chunks(PAGE as usize).map(crc32fast::hash));
        visit(offset, &buf[..n]);
        offset += n as u64;
    }
    Ok(sums)
}

/// Compares the CRCs of a scan with the stored ones, but for the pages `skip` names.
fn verify(
    array: &Path,
    dims: usize,
    num_blocks: u64,
    stored: &[u32],
    computed: &[u32],
    skip: Option<&HashSet<u64>>,
) -> Result<(), JournalError> {
    let bad = stored
        .iter()
        .zip(computed)
        .enumerate()
        .map(|(p, (a, b))| (p as u64, a, b))
        .find(|&(p, a, b)| a != b && !skip.is_some_and(|s| s.contains(&p)));
    if let Some((page, _, _)) = bad {
        let start = page * PAGE;
        let end = (start + PAGE).min(num_blocks);
        return Err(JournalError::Corrupt {
            path: chunk_path(array, dims),
            reason: format!(
                "checksum mismatch in bytes {start} to {} (page {page}; its CRC-32 is in {}): the markers changed after they were written (a disk or memory error, or an edit)",
                end - 1,
                sums_path(array).display()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
/// The done blocks of a marker array, its checksums verified (or, for an array without a
/// checksum file, created).
pub(crate) fn load(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
) -> Result<DoneSet, JournalError> {
    let stored = read_sums(array, num_blocks)?;
    let mut builder = DoneSetBuilder::new(num_blocks);
    let computed = scan(array, grid_shape, num_blocks, |_, values| {
        builder.push_chunk(values.iter().map(|&v| v == DONE));
    })?;
    match stored {
        Some(stored) => verify(
            array,
            grid_shape.len(),
            num_blocks,
            &stored,
            &computed,
            None,
        )?,
        None => {
            let path = sums_path(array);
            super::write_atomic(&path, &encode_sums(num_blocks, &computed))?;
            tracing::info!(path = %path.display(), "created the checksums of done-markers written by an older version");
        }
    }
    Ok(builder.finish())
}

/// Counts of a marker array, and the grid indices of its failed blocks (at most `keep`).
/// With `check`, its checksums (if it has them) are verified but for the pages `check`
/// names.
pub(crate) fn count(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    keep: usize,
    check: Option<&HashSet<u64>>,
) -> Result<(Counts, Vec<u64>), JournalError> {
    let stored = match check {
        Some(_) => read_sums(array, num_blocks)?,
        None => None,
    };
    let mut counts = Counts::default();
    let mut failed = Vec::new();
    let computed = scan(array, grid_shape, num_blocks, |offset, values| {
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
    if let Some(stored) = stored {
        verify(
            array,
            grid_shape.len(),
            num_blocks,
            &stored,
            &computed,
            check,
        )?;
    }
    Ok((counts, failed))
}

/// Reads a version 1 array, checking every value and (if it has a checksum file) every page's
/// CRC but those of the pages in `skip`, and feeds `visit` each chunk of 65,536 values
/// (its first grid index and the values).
pub(crate) fn read(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    skip: &HashSet<u64>,
    visit: impl FnMut(u64, &[u8]),
) -> Result<(), JournalError> {
    let stored = read_sums(array, num_blocks)?;
    let computed = scan(array, grid_shape, num_blocks, visit)?;
    if let Some(stored) = stored {
        verify(
            array,
            grid_shape.len(),
            num_blocks,
            &stored,
            &computed,
            Some(skip),
        )?;
    }
    Ok(())
}

/// The values of some markers of a version 1 array as its chunk holds them now.
pub(crate) fn values_at(
    array: &Path,
    dims: usize,
    indices: impl Iterator<Item = u64>,
) -> Result<Vec<u8>, JournalError> {
    let chunk = chunk_path(array, dims);
    let file = open_read(&chunk)?;
    let mut out = Vec::new();
    for index in indices {
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, index)
            .map_err(|e| io("read", &chunk, e))?;
        out.push(byte[0]);
    }
    Ok(out)
}

/// The page of a marker (for the pages a logged batch touches).
pub(crate) fn page_of(index: u64) -> u64 {
    index / PAGE
}

/// Writes markers, and the CRCs of their pages, through a cache of dirty pages.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct MarkerWriter {
    path: PathBuf,
    file: File,
    len: u64,
    pages: FxHashMap<u64, Box<[u8]>>,
    /// The checksum file; `None` for an array of an older version (before its first load).
    sums: Option<(PathBuf, File)>,
    buf: Vec<u8>,
}

#[cfg(test)]
impl MarkerWriter {
    pub(crate) fn open(
        array: &Path,
        dims: usize,
        num_blocks: u64,
    ) -> Result<MarkerWriter, JournalError> {
        let path = chunk_path(array, dims);
        let rw = OpenOptions::new().read(true).write(true).clone();
        let file = open_regular(&path, &rw, "open")?;
        let sums_path = sums_path(array);
        let sums = if super::files::exists(&sums_path)? {
            let f = open_regular(&sums_path, &rw, "open")?;
            Some((sums_path, f))
        } else {
            None
        };
        Ok(MarkerWriter {
            path,
            file,
            len: num_blocks,
            pages: FxHashMap::default(),
            sums,
            buf: Vec::new(),
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

    /// Writes the cached pages and their CRCs, and syncs both files.
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
        if let Some((sums_path, sums)) = &self.sums {
            // One write per run of consecutive pages.
            let mut i = 0;
            while i < pages.len() {
                let first = pages[i].0;
                self.buf.clear();
                while i < pages.len() && pages[i].0 == first + (self.buf.len() / 4) as u64 {
                    self.buf
                        .extend_from_slice(&crc32fast::hash(&pages[i].1).to_le_bytes());
                    i += 1;
                }
                sums.write_all_at(&self.buf, SUMS_HEADER + 4 * first)
                    .map_err(|e| io("write", sums_path, e))?;
            }
        }
        self.file
            .sync_data()
            .map_err(|e| io("sync", &self.path, e))?;
        if let Some((sums_path, sums)) = &self.sums {
            sums.sync_data().map_err(|e| io("sync", sums_path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn checksum_files_are_parsed_strictly() {
        let n = 2 * PAGE + 5;
        let bytes = encode_sums(n, &[1, 2, 3]);
        assert_eq!(bytes.len() as u64, sums_len(n));
        assert_eq!(parse_sums(&bytes, n), Ok(vec![1, 2, 3]));
        assert!(
            parse_sums(&bytes, n + PAGE)
                .unwrap_err()
                .contains("for 8197 markers")
        );
        assert!(
            parse_sums(&bytes[..bytes.len() - 1], n)
                .unwrap_err()
                .contains("bytes, expected")
        );
        assert!(
            parse_sums(b"BWCK", n)
                .unwrap_err()
                .contains("not a blockwise checksum file")
        );
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert!(parse_sums(&v2, n).unwrap_err().contains("version 2"));
        assert_eq!(parse_sums(&encode_sums(0, &[]), 0), Ok(vec![]));
    }

    #[test]
    fn pages_and_their_checksums_are_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let array = dir.path().join("done.zarr");
        let n = 3 * PAGE + 10;
        create(&array, &[n as i64], n).unwrap();
        assert!(load(&array, &[n as i64], n).unwrap().is_none_done());
        let mut w = MarkerWriter::open(&array, 1, n).unwrap();
        for i in [0, 1, PAGE + 7, 3 * PAGE + 9] {
            w.set(i, DONE).unwrap();
        }
        w.set(2 * PAGE, FAILED).unwrap();
        w.flush().unwrap();
        let set = load(&array, &[n as i64], n).unwrap();
        assert_eq!(set.count(), 4);
        let (counts, failed) = count(&array, &[n as i64], n, 10, Some(&HashSet::new())).unwrap();
        assert_eq!((counts.done, counts.failed, failed), (4, 1, vec![2 * PAGE]));
        // A bit flip in the last page.
        let chunk = chunk_path(&array, 1);
        let mut bytes = fs::read(&chunk).unwrap();
        bytes[(3 * PAGE + 2) as usize] ^= 1;
        fs::write(&chunk, &bytes).unwrap();
        let e = load(&array, &[n as i64], n).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "checksum mismatch in bytes {} to {} (page 3",
                3 * PAGE,
                n - 1
            )),
            "{e}"
        );
        assert!(e.contains(&chunk.display().to_string()), "{e}");
        // Skipped where a logged batch will rewrite the page.
        count(&array, &[n as i64], n, 10, Some(&HashSet::from([3]))).unwrap();
        count(&array, &[n as i64], n, 10, None).unwrap();
        assert!(count(&array, &[n as i64], n, 10, Some(&HashSet::from([2]))).is_err());
        // Rewriting the page (as a replay does) makes its CRC good again.
        let mut w = MarkerWriter::open(&array, 1, n).unwrap();
        w.set(3 * PAGE + 2, NOT_DONE).unwrap();
        w.flush().unwrap();
        assert_eq!(load(&array, &[n as i64], n).unwrap().count(), 4);
    }

    #[test]
    fn a_checksum_file_is_created_for_old_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let array = dir.path().join("done.zarr");
        let n = PAGE + 1;
        create(&array, &[n as i64], n).unwrap();
        let mut w = MarkerWriter::open(&array, 1, n).unwrap();
        w.set(PAGE, DONE).unwrap();
        w.flush().unwrap();
        let good = fs::read(sums_path(&array)).unwrap();
        fs::remove_file(sums_path(&array)).unwrap();
        // An old array: written without checksums.
        let mut w = MarkerWriter::open(&array, 1, n).unwrap();
        w.set(3, DONE).unwrap();
        w.flush().unwrap();
        assert_eq!(load(&array, &[n as i64], n).unwrap().count(), 2);
        let made = fs::read(sums_path(&array)).unwrap();
        assert_eq!(made.len(), good.len());
        assert_eq!(
            made[SUMS_HEADER as usize + 4..],
            good[SUMS_HEADER as usize + 4..]
        );
        assert_ne!(made, good, "page 0 changed");
        assert_eq!(load(&array, &[n as i64], n).unwrap().count(), 2);
    }
}
