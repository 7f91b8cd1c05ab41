//! The done-marker array of one task (format version 2): two bits per block, four blocks per
//! byte, stored as a 1-D zarr v3 `uint8` array `done.zarr` of `ceil(blocks / 4)` bytes in
//! uncompressed chunks of at most 256 MiB (2^30 blocks) each (`done.zarr/c/0`, `c/1`, …), so
//! that every chunk file is raw bytes any zarr reader can open, and none reaches the 2 GiB
//! limits of zarr readers and codecs. Block `i` (its grid index, row-major over the block
//! grid) is bits `2·(i mod 4)` and `2·(i mod 4) + 1` of byte `i / 4`. Values: [`NOT_DONE`] (0),
//! [`DONE`] (1), [`FAILED`] (2); 3 is damage. 10^10 blocks take 2.5 GB in 10 chunk files.
//!
//! The array's attributes (`attributes.blockwise`) name the packing, the block grid's shape
//! (`grid_shape`) and the number of blocks. From Python:
//!
//! ```python
//! import numpy as np, zarr
//! a = zarr.open_array("run/tasks/t/done.zarr", mode="r")
//! meta = a.attrs["blockwise"]
//! packed = a[:]
//! values = ((packed[:, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 3).reshape(-1)
//! markers = values[: meta["blocks"]].reshape(meta["grid_shape"])  # 0, 1 or 2 per block
//! ```
//!
//! Zarr stores the last chunk at full size: its file is sparse past the last block (the
//! holes cost no disk). A new array is created with `set_len` (holes) and `posix_fallocate`
//! of the bytes that hold markers (so a full disk shows when the task is created, not half
//! way through a run); every byte is 0 (not done) without being written.
//!
//! Writes go through a write-back cache of 4 KiB pages (16,384 blocks), flushed in batches
//! followed by `fdatasync`.
//!
//! # Checksums
//!
//! Beside the array, in the task directory, `done.crc32` holds a CRC-32 of every 4 KiB page
//! of the packed bytes (page `p` is bytes `4096·p ..`; chunks hold whole pages):
//!
//! ```text
//! "BWCK" | u32 version = 2 | u32 page size = 4096 | u64 blocks | one u32 CRC-32 per page
//! ```
//!
//! (little-endian). The CRCs of a new array are all the CRC of a page of zeros, computed
//! once. The writer updates a page's CRC in the same flush as the page, before `fdatasync`.
//!
//! # Summary
//!
//! `done.summary`, also beside the array, holds the number of done and of failed blocks of
//! every chunk, so that opening a finished task, or `blockwise status`, does not read the
//! markers:
//!
//! ```text
//! "BWSM" | u32 version = 1 | u64 blocks | u64 blocks per chunk | u64 chunks | slot | slot
//! slot: u64 sequence | per chunk: u64 done, u64 failed | u32 CRC-32 of the slot before it
//! ```
//!
//! A flush writes the summary after the pages and CRCs were synced, into the slot its new
//! sequence number selects (`sequence mod 2`), and syncs it; the slot with a good CRC and
//! the higher sequence is the summary. So a write torn by a crash leaves the other slot, the
//! summary after the previous batch. It differs from the markers, after a crash, only in the
//! chunks of the batch that was being written, and that batch is in the write-ahead log
//! (wal.rs): the next open replays it, and then counts the chunks it touches again from
//! their markers. The summary is derived data: when it is missing or damaged, opening
//! counts every chunk from its markers (verifying them) and writes it again.
//!
//! # What opening checks
//!
//! A chunk of at least 16 MiB (64 Mi blocks) whose summary says all its blocks are done, or
//! none is done or failed, is taken from the summary without reading it (only its length is
//! checked): a finished task of 10^10 blocks opens without reading its 2.5 GB. Smaller
//! chunks, and chunks with a mix, are read whole, every page checked against its CRC,
//! every value checked, and their counts against the summary, as before version 2: a page
//! that changed after it was written is [`JournalError::Corrupt`] naming the chunk file, the
//! byte range and "checksum mismatch". The price of trusting the summary: a bit flip in a
//! large uniform chunk is not detected when the task is opened. It is detected lazily: the writer
//! checks the CRC of every page it reads before it changes a marker of it, so a flipped page
//! a run touches stops the run with the same error. A flip that makes a block of a finished
//! chunk look not done changes nothing (the summary says done, and the block is skipped); a
//! flip that makes a block of an untouched chunk look done is found when the run marks that
//! block (its page's CRC does not match). `blockwise status` checks the chunks it reads
//! (mixed ones, or ones with failed blocks) the same way.
//!
//! After a crash a page and its CRC may disagree, for the pages of the batch being written,
//! and only for those: a batch is first written whole to the write-ahead log and synced, and
//! the next batch is logged only after this one's pages, CRCs and summary were synced. The
//! next open replays the logged batch before it checks anything, and a replay rewrites every
//! page the batch touches: it reads the page (without checking its CRC), sets the batch's
//! markers (the bits a batch does not name are the same before and after it, so the page
//! comes out the same whatever of it reached the disk) and writes it with a CRC computed
//! from the whole page. (The price: a bit flip in a page of the batch that was being written
//! when the machine crashed is made good rather than reported.) `blockwise status`, which
//! does not write, skips the pages a logged batch touches, and does not check while a run
//! holds the directory (its writer may be half way through a flush).
//!
//! # Version 1
//!
//! Run directories of earlier versions hold one `uint8` per block in a single chunk
//! (v1.rs). Opening one migrates it: the version 2 files are built in
//! `done.v2.tmp/` beside the array and synced, then `done.zarr` is renamed to
//! `done.v1.zarr`, the new files are renamed into place, and the old array is removed. A
//! crash before the first rename leaves `done.v2.tmp/` (removed, and the migration starts
//! again); after it, `done.v1.zarr` says the new files are complete, and the next open
//! finishes moving them. `blockwise status` reads version 1 arrays without migrating them.
//!
//! With the `crash-points` cargo feature (tests only, off by default) the migration has named
//! crash points after each of these steps (`CRASH_POINTS`: the chunks written, the checksums
//! written, the new files built and synced, the old array moved aside, each file renamed
//! into place, the directory synced, `done.v2.tmp/` removed); the environment variable
//! `BLOCKWISE_CRASH_POINT` naming one makes the process SIGKILL itself there. The test
//! `journal::tests::a_process_killed_during_the_migration_loses_no_done_marker` kills a
//! child process at each, and again at each later point of the resumed migration. Without the
//! feature the crash points compile to nothing (no environment variable is read).

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;

use super::JournalError;
use super::done::{CHUNK, DoneSet, DoneSetBuilder};
use super::files::{open_read, open_regular, read_small};

/// The block has not finished (never run, orphaned, or interrupted).
pub(crate) const NOT_DONE: u8 = 0;
/// The block's process function returned successfully.
pub(crate) const DONE: u8 = 1;
/// The block failed on its last attempt.
pub(crate) const FAILED: u8 = 2;

/// Bytes per page: the unit of the writer's cache and of the checksums.
pub(crate) const PAGE: u64 = 4096;
/// Blocks per page.
pub(crate) const PAGE_BLOCKS: u64 = 4 * PAGE;
/// Bytes per chunk file (2^30 blocks).
pub(crate) const CHUNK_BYTES: u64 = 1 << 28;
/// A chunk of several holds a whole number of the done set's chunks (and so of pages).
const ALIGN: u64 = CHUNK / 4;
const _: () = assert!(ALIGN.is_multiple_of(PAGE) && CHUNK_BYTES.is_multiple_of(ALIGN));

/// Uniform chunks (per their summary) with at least this many bytes of markers are not read
/// when a task is opened; smaller ones are read and checked like mixed ones (reading 16 MiB
/// costs milliseconds).
const TRUST_FROM: u64 = 16 << 20;

#[cfg(test)]
thread_local! {
    /// [`TRUST_FROM`] for the tests of this thread.
    pub(crate) static TRUST: std::cell::Cell<u64> = const { std::cell::Cell::new(TRUST_FROM) };
}

fn trust_from() -> u64 {
    #[cfg(test)]
    {
        TRUST.with(std::cell::Cell::get)
    }
    #[cfg(not(test))]
    {
        TRUST_FROM
    }
}

const SUMS_MAGIC: &[u8; 4] = b"BWCK";
const SUMS_VERSION: u32 = 2;
const SUMS_HEADER: u64 = 4 + 4 + 4 + 8;
const SUMMARY_MAGIC: &[u8; 4] = b"BWSM";
const SUMMARY_VERSION: u32 = 1;
const SUMMARY_HEADER: u64 = 4 + 4 + 8 + 8 + 8;

/// Counts of done and failed markers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) done: u64,
    pub(crate) failed: u64,
}

impl Counts {
    fn add(&mut self, value: u8) {
        match value {
            DONE => self.done += 1,
            FAILED => self.failed += 1,
            _ => {}
        }
    }

    fn remove(&mut self, value: u8) {
        match value {
            DONE => self.done = self.done.saturating_sub(1),
            FAILED => self.failed = self.failed.saturating_sub(1),
            _ => {}
        }
    }
}

/// The checksum file of a marker array (`done.crc32` beside `done.zarr`).
pub(crate) fn sums_path(array: &Path) -> PathBuf {
    array.with_file_name("done.crc32")
}

/// The summary file of a marker array (`done.summary` beside `done.zarr`).
pub(crate) fn summary_path(array: &Path) -> PathBuf {
    array.with_file_name("done.summary")
}

/// Where the bytes of a marker array are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) blocks: u64,
    /// Packed bytes (the zarr array's shape).
    pub(crate) bytes: u64,
    /// Bytes per chunk (its chunk shape; the size of every chunk file).
    pub(crate) chunk_bytes: u64,
    /// Chunk files.
    pub(crate) chunks: u64,
}

impl Geometry {
    /// The geometry of `blocks` markers in chunks of at most `chunk_bytes` (a multiple of
    /// 16 KiB).
    pub(crate) fn new(blocks: u64, chunk_bytes: u64) -> Geometry {
        let bytes = blocks.div_ceil(4);
        let chunk_bytes = if bytes <= chunk_bytes {
            bytes.max(1)
        } else {
            chunk_bytes
        };
        Geometry {
            blocks,
            bytes,
            chunk_bytes,
            chunks: bytes.div_ceil(chunk_bytes),
        }
    }

    fn pages(&self) -> u64 {
        self.bytes.div_ceil(PAGE)
    }

    fn chunk_blocks_max(&self) -> u64 {
        self.chunk_bytes * 4
    }

    /// Blocks in chunk `c`.
    pub(crate) fn chunk_blocks(&self, c: u64) -> u64 {
        let start = c * self.chunk_blocks_max();
        self.blocks
            .saturating_sub(start)
            .min(self.chunk_blocks_max())
    }

    /// Marker bytes in chunk `c` (the rest of its file is padding).
    fn chunk_used(&self, c: u64) -> u64 {
        let start = c * self.chunk_bytes;
        self.bytes.saturating_sub(start).min(self.chunk_bytes)
    }

    fn chunk_of_block(&self, index: u64) -> u64 {
        index / self.chunk_blocks_max()
    }

    fn chunk_path(&self, array: &Path, c: u64) -> PathBuf {
        array.join("c").join(c.to_string())
    }
}

fn sums_len(g: &Geometry) -> u64 {
    SUMS_HEADER + 4 * g.pages()
}

fn slot_len(g: &Geometry) -> u64 {
    8 + 16 * g.chunks + 4
}

fn summary_len(g: &Geometry) -> u64 {
    SUMMARY_HEADER + 2 * slot_len(g)
}

fn encode_sums_header(g: &Geometry, out: &mut Vec<u8>) {
    out.extend_from_slice(SUMS_MAGIC);
    out.extend_from_slice(&SUMS_VERSION.to_le_bytes());
    out.extend_from_slice(&(PAGE as u32).to_le_bytes());
    out.extend_from_slice(&g.blocks.to_le_bytes());
}

/// The page CRCs of a checksum file's bytes; what is wrong with the file otherwise.
pub(crate) fn parse_sums(bytes: &[u8], g: &Geometry) -> Result<Vec<u32>, String> {
    let expected = sums_len(g);
    if bytes.len() < SUMS_HEADER as usize || &bytes[..4] != SUMS_MAGIC {
        return Err("not a blockwise checksum file".into());
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if word(4) != SUMS_VERSION {
        return Err(format!("version {}, expected {SUMS_VERSION}", word(4)));
    }
    if u64::from(word(8)) != PAGE {
        return Err(format!("page size {}, expected {PAGE}", word(8)));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[12..20]);
    let blocks = u64::from_le_bytes(n);
    if blocks != g.blocks {
        return Err(format!(
            "it is for {blocks} markers, the array has {}",
            g.blocks
        ));
    }
    if bytes.len() as u64 != expected {
        return Err(format!(
            "{} bytes, expected {expected} (a CRC for each of {} pages)",
            bytes.len(),
            g.pages()
        ));
    }
    Ok(bytes[SUMS_HEADER as usize..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_sums(array: &Path, g: &Geometry) -> Result<Vec<u32>, JournalError> {
    let path = sums_path(array);
    let bytes = read_small(&path, sums_len(g))?;
    parse_sums(&bytes, g).map_err(|reason| JournalError::Corrupt { path, reason })
}

/// One slot of a summary file.
fn encode_slot(seq: u64, counts: &[Counts]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 16 * counts.len());
    out.extend_from_slice(&seq.to_le_bytes());
    for c in counts {
        out.extend_from_slice(&c.done.to_le_bytes());
        out.extend_from_slice(&c.failed.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn encode_summary(g: &Geometry, counts: &[Counts]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(SUMMARY_MAGIC);
    out.extend_from_slice(&SUMMARY_VERSION.to_le_bytes());
    out.extend_from_slice(&g.blocks.to_le_bytes());
    out.extend_from_slice(&g.chunk_blocks_max().to_le_bytes());
    out.extend_from_slice(&g.chunks.to_le_bytes());
    // Slot 0 holds sequence 0; slot 1 is empty (its CRC fails) until the first flush.
    out.extend_from_slice(&encode_slot(0, counts));
    out.resize(summary_len(g) as usize, 0);
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The summary in a summary file's bytes (its sequence number and counts); what is wrong
/// with it otherwise.
pub(crate) fn parse_summary(bytes: &[u8], g: &Geometry) -> Result<(u64, Vec<Counts>), String> {
    if bytes.len() as u64 != summary_len(g) || &bytes[..4] != SUMMARY_MAGIC {
        return Err("not a blockwise summary of these markers".into());
    }
    if bytes[4..8] != SUMMARY_VERSION.to_le_bytes()
        || u64_at(bytes, 8) != g.blocks
        || u64_at(bytes, 16) != g.chunk_blocks_max()
        || u64_at(bytes, 24) != g.chunks
    {
        return Err("its header does not match the markers".into());
    }
    let slot = slot_len(g) as usize;
    let mut best: Option<(u64, Vec<Counts>)> = None;
    for s in 0..2 {
        let at = SUMMARY_HEADER as usize + s * slot;
        let b = &bytes[at..at + slot];
        let crc = u32::from_le_bytes([b[slot - 4], b[slot - 3], b[slot - 2], b[slot - 1]]);
        if crc32fast::hash(&b[..slot - 4]) != crc {
            continue;
        }
        let seq = u64_at(b, 0);
        let counts: Vec<Counts> = (0..g.chunks as usize)
            .map(|c| Counts {
                done: u64_at(b, 8 + 16 * c),
                failed: u64_at(b, 16 + 16 * c),
            })
            .collect();
        let fits = counts
            .iter()
            .enumerate()
            .all(|(c, n)| n.done.saturating_add(n.failed) <= g.chunk_blocks(c as u64));
        if fits && best.as_ref().is_none_or(|(s, _)| seq > *s) {
            best = Some((seq, counts));
        }
    }
    best.ok_or_else(|| "no slot has a good checksum".into())
}

/// The summary of a marker array; `None` (with a warning) if it is missing or damaged.
fn read_summary(array: &Path, g: &Geometry) -> Result<Option<(u64, Vec<Counts>)>, JournalError> {
    let path = summary_path(array);
    if !super::files::exists(&path)? {
        return Ok(None);
    }
    let bytes = read_small(&path, summary_len(g))?;
    match parse_summary(&bytes, g) {
        Ok(s) => Ok(Some(s)),
        Err(reason) => {
            tracing::warn!(path = %path.display(), "the summary of the done-markers is unusable ({reason}); counting the markers");
            Ok(None)
        }
    }
}

/// Bytes a new marker array of `num_blocks` takes on a file system allocating in `unit`s:
/// the marker bytes, the checksum and summary files, and a few units for the metadata and
/// directories.
pub(crate) fn space_needed(num_blocks: u64, unit: u64) -> u64 {
    let unit = unit.max(1);
    let g = Geometry::new(num_blocks, CHUNK_BYTES);
    let round = |n: u64| n.div_ceil(unit).saturating_mul(unit);
    round(g.bytes)
        .saturating_add(g.chunks.saturating_mul(unit))
        .saturating_add(round(sums_len(&g)))
        .saturating_add(round(summary_len(&g)))
        .saturating_add(6 * unit)
}

/// The zarr metadata of a marker array over `grid_shape`.
fn metadata(grid_shape: &[i64], g: &Geometry) -> serde_json::Value {
    serde_json::json!({
        "zarr_format": 3,
        "node_type": "array",
        "shape": [g.bytes],
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [g.chunk_bytes]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
        "attributes": {
            "blockwise": {
                "kind": "done-markers",
                "version": 2,
                "grid_shape": grid_shape,
                "blocks": g.blocks,
                "packing": "2 bits per block, 4 blocks per byte: block i is (byte[i // 4] >> (2 * (i % 4))) & 3",
                "order": "grid index (row-major over the block grid)",
                "values": {"0": "not done", "1": "done", "2": "failed"}
            }
        }
    })
}

fn io(action: &str, path: &Path, source: std::io::Error) -> JournalError {
    JournalError::Io {
        action: action.to_owned(),
        path: path.to_owned(),
        source,
    }
}

fn corrupt(path: &Path, reason: String) -> JournalError {
    JournalError::Corrupt {
        path: path.to_owned(),
        reason,
    }
}

/// Creates an empty marker array (every block not done) with its checksum and summary files
/// (see the module docs). The caller creates it in a directory of its own and removes that
/// if this fails, so a failed reservation leaves nothing behind.
pub(crate) fn create(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
) -> Result<(), JournalError> {
    create_with(array, grid_shape, num_blocks, CHUNK_BYTES)
}

/// [`create`] with chunks of `chunk_bytes` (a multiple of 16 KiB; tests use small ones).
pub(crate) fn create_with(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    chunk_bytes: u64,
) -> Result<(), JournalError> {
    let g = Geometry::new(num_blocks, chunk_bytes.max(ALIGN) / ALIGN * ALIGN);
    let cdir = array.join("c");
    fs::create_dir_all(&cdir).map_err(|e| io("create", &cdir, e))?;
    for c in 0..g.chunks {
        let path = g.chunk_path(array, c);
        let file = open_regular(
            &path,
            OpenOptions::new().write(true).create(true).truncate(true),
            "create",
        )?;
        let used = i64::try_from(g.chunk_used(c))
            .map_err(|_| corrupt(&path, format!("{num_blocks} blocks do not fit in files")))?;
        match nix::fcntl::posix_fallocate(&file, 0, used) {
            Ok(()) | Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(io("reserve space for", &path, e.into())),
        }
        // The padding of the last chunk is a hole.
        file.set_len(g.chunk_bytes)
            .map_err(|e| io("size", &path, e))?;
        file.sync_all().map_err(|e| io("sync", &path, e))?;
    }
    // Every page is zeros: one CRC for the full pages, one for a short last page.
    let zeros = vec![0u8; PAGE as usize];
    let full = crc32fast::hash(&zeros).to_le_bytes();
    let pages = g.pages();
    let mut sums = Vec::with_capacity(usize::try_from(sums_len(&g)).unwrap_or(0));
    encode_sums_header(&g, &mut sums);
    for _ in 0..pages.saturating_sub(1) {
        sums.extend_from_slice(&full);
    }
    if pages > 0 {
        let n = g.bytes - (pages - 1) * PAGE;
        sums.extend_from_slice(&crc32fast::hash(&zeros[..n as usize]).to_le_bytes());
    }
    super::write_atomic(&sums_path(array), &sums)?;
    let counts = vec![Counts::default(); g.chunks as usize];
    super::write_atomic(&summary_path(array), &encode_summary(&g, &counts))?;
    super::write_atomic(
        &array.join("zarr.json"),
        serde_json::to_string_pretty(&metadata(grid_shape, &g))
            .unwrap_or_default()
            .as_bytes(),
    )?;
    // The directories' entries are durable before the caller renames them into place.
    super::files::sync_dir(&cdir);
    super::files::sync_dir(array);
    Ok(())
}

fn read_metadata(array: &Path) -> Result<serde_json::Value, JournalError> {
    let path = array.join("zarr.json");
    let text = read_small(&path, super::files::MAX_JSON)?;
    serde_json::from_slice(&text).map_err(|e| corrupt(&path, format!("not valid JSON ({e})")))
}

/// Whether `value` (a zarr.json) is of a version 1 marker array.
fn is_v1_metadata(value: &serde_json::Value) -> bool {
    value.pointer("/attributes/blockwise/version") == Some(&serde_json::json!(1))
}

/// Checks the metadata of an existing version 2 marker array against the grid; its
/// geometry.
fn check_metadata(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
) -> Result<Geometry, JournalError> {
    let path = array.join("zarr.json");
    let found = read_metadata(array)?;
    let chunk_bytes = found
        .pointer("/chunk_grid/configuration/chunk_shape/0")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let bytes = num_blocks.div_ceil(4);
    if found.get("shape") != Some(&serde_json::json!([bytes])) {
        return Err(corrupt(
            &path,
            format!(
                "shape is {}, expected [{bytes}] (the packed bytes of {num_blocks} blocks)",
                found
                    .get("shape")
                    .map_or("missing".into(), ToString::to_string)
            ),
        ));
    }
    let g = Geometry::new(num_blocks, chunk_bytes.max(1));
    if chunk_bytes == 0 || (g.chunks > 1 && !chunk_bytes.is_multiple_of(ALIGN)) {
        return Err(corrupt(
            &path,
            format!("chunk_shape is {chunk_bytes}, expected a multiple of {ALIGN} bytes"),
        ));
    }
    let expected = metadata(grid_shape, &g);
    for key in ["zarr_format", "shape", "data_type", "chunk_grid", "codecs"] {
        if found.get(key) != expected.get(key) {
            return Err(corrupt(
                &path,
                format!(
                    "{key} is {}, expected {}",
                    found.get(key).map_or("missing".into(), ToString::to_string),
                    expected.get(key).map_or(String::new(), ToString::to_string)
                ),
            ));
        }
    }
    for key in ["version", "grid_shape", "blocks"] {
        let p = format!("/attributes/blockwise/{key}");
        if found.pointer(&p) != expected.pointer(&p) {
            return Err(corrupt(
                &path,
                format!(
                    "attributes.blockwise.{key} is {}, expected {}",
                    found
                        .pointer(&p)
                        .map_or("missing".into(), ToString::to_string),
                    expected
                        .pointer(&p)
                        .map_or(String::new(), ToString::to_string)
                ),
            ));
        }
    }
    Ok(g)
}

fn open_chunk(array: &Path, g: &Geometry, c: u64, write: bool) -> Result<File, JournalError> {
    let path = g.chunk_path(array, c);
    let file = if write {
        open_regular(&path, OpenOptions::new().read(true).write(true), "open")?
    } else {
        open_read(&path)?
    };
    let len = file.metadata().map_err(|e| io("stat", &path, e))?.len();
    if len != g.chunk_bytes {
        return Err(corrupt(
            &path,
            format!(
                "{len} bytes, expected {} (a chunk of the marker array){}",
                g.chunk_bytes,
                if len < g.chunk_bytes {
                    "; it was truncated"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(file)
}

/// The 2-bit value of block `i` in packed bytes starting at block `base` (a multiple of 4).
fn value_at(bytes: &[u8], i: u64) -> u8 {
    (bytes[(i / 4) as usize] >> (2 * (i % 4))) & 3
}

/// Counts the values of packed bytes holding `blocks` markers; the first byte holding a 3,
/// or bits set past the last block.
fn count_bytes(bytes: &[u8], blocks: u64, counts: &mut Counts) -> Result<(), u64> {
    let full = (blocks / 4) as usize;
    for (i, &b) in bytes[..full].iter().enumerate() {
        if b == 0 {
            continue;
        }
        // Bit pairs: the low bit of each is done, the high bit failed; 3 is both.
        let lo = b & 0x55;
        let hi = (b >> 1) & 0x55;
        if lo & hi != 0 {
            return Err(i as u64);
        }
        counts.done += u64::from(lo.count_ones());
        counts.failed += u64::from(hi.count_ones());
    }
    if full < bytes.len() {
        let rest = blocks % 4;
        let b = bytes[full];
        for k in 0..4 {
            let v = (b >> (2 * k)) & 3;
            if v == 3 || (k >= rest && v != 0) {
                return Err(full as u64);
            }
            counts.add(v);
        }
        if bytes[full + 1..].iter().any(|&b| b != 0) {
            return Err(full as u64 + 1);
        }
    }
    Ok(())
}

/// Reads chunk `c` piece by piece (16 KiB: a chunk of the done set), checking its values and
/// (if `sums`) its pages' CRCs but those in `skip`; feeds `visit` each piece (its first
/// block, its bytes, its number of blocks) and returns its counts.
#[allow(clippy::too_many_arguments)]
fn scan_chunk(
    array: &Path,
    g: &Geometry,
    c: u64,
    sums: Option<&[u32]>,
    skip: Option<&HashSet<u64>>,
    mut visit: impl FnMut(u64, &[u8], u64),
) -> Result<Counts, JournalError> {
    let file = open_chunk(array, g, c, false)?;
    let path = g.chunk_path(array, c);
    let used = g.chunk_used(c);
    let chunk_start_byte = c * g.chunk_bytes;
    let mut counts = Counts::default();
    let piece = (1u64 << 20).min(used.max(1));
    let mut buf = vec![0u8; piece as usize];
    let mut off = 0u64;
    while off < used {
        let n = (used - off).min(piece) as usize;
        file.read_exact_at(&mut buf[..n], off)
            .map_err(|e| io("read", &path, e))?;
        let first_byte = chunk_start_byte + off;
        let first_block = first_byte * 4;
        let blocks = (g.blocks - first_block).min(n as u64 * 4);
        if let Err(bad) = count_bytes(&buf[..n], blocks, &mut counts) {
            let at = off + bad;
            return Err(corrupt(
                &path,
                format!(
                    "byte {at} is {}; markers are 2-bit values 0 (not done), 1 (done) or 2 (failed), and 0 past the last block",
                    buf[bad as usize]
                ),
            ));
        }
        if let Some(sums) = sums {
            for (k, page) in buf[..n].chunks(PAGE as usize).enumerate() {
                let p = first_byte / PAGE + k as u64;
                if skip.is_some_and(|s| s.contains(&p)) {
                    continue;
                }
                if sums.get(p as usize).copied() != Some(crc32fast::hash(page)) {
                    let start = off + k as u64 * PAGE;
                    return Err(corrupt(
                        &path,
                        format!(
                            "checksum mismatch in bytes {start} to {} (page {p}; its CRC-32 is in {}): the markers changed after they were written (a disk or memory error, or an edit)",
                            start + page.len() as u64 - 1,
                            sums_path(array).display()
                        ),
                    ));
                }
            }
        }
        for (k, sub) in buf[..n].chunks(ALIGN as usize).enumerate() {
            let b0 = first_block + k as u64 * ALIGN * 4;
            visit(b0, sub, (g.blocks - b0).min(sub.len() as u64 * 4));
        }
        off += n as u64;
    }
    Ok(counts)
}

/// Finishes an interrupted migration from version 1, then migrates a version 1 array (see
/// the module docs). `skip` names the version 1 pages (4,096 blocks) a logged batch touches,
/// whose checksums are not checked (the replay rewrites them).
pub(crate) fn prepare(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    skip: &HashSet<u64>,
) -> Result<(), JournalError> {
    finish_migration(array)?;
    let v1 = match read_metadata(array) {
        Ok(m) => is_v1_metadata(&m),
        // Reported by the version 2 checks.
        Err(_) => false,
    };
    if v1 {
        migrate(array, grid_shape, num_blocks, skip)?;
    }
    Ok(())
}

fn migration_dirs(array: &Path) -> (PathBuf, PathBuf) {
    (
        array.with_file_name("done.v2.tmp"),
        array.with_file_name("done.v1.zarr"),
    )
}

/// Completes the switch of an interrupted migration, or removes its unfinished new files.
pub(crate) fn finish_migration(array: &Path) -> Result<(), JournalError> {
    let (tmp, old) = migration_dirs(array);
    let tdir = array.parent().unwrap_or(array);
    let finishing = super::files::exists(&old)?;
    if finishing {
        // The new files were complete before the old array was moved aside.
        for (from, point) in [
            (tmp.join("done.zarr"), "migrate:renamed-array"),
            (sums_path(&tmp.join("done.zarr")), "migrate:renamed-crc32"),
            (
                summary_path(&tmp.join("done.zarr")),
                "migrate:renamed-summary",
            ),
        ] {
            if super::files::exists(&from)? {
                let to = tdir.join(from.file_name().unwrap_or_default());
                fs::rename(&from, &to).map_err(|e| io("rename", &to, e))?;
            }
            crash_point(point);
        }
        super::files::sync_dir(tdir);
        crash_point("migrate:synced");
        tracing::info!(path = %array.display(), "finished migrating the done-markers to version 2");
    }
    if super::files::exists(&tmp)? {
        fs::remove_dir_all(&tmp).map_err(|e| io("remove", &tmp, e))?;
    }
    if finishing {
        crash_point("migrate:removed-tmp");
    }
    if super::files::exists(&old)? {
        fs::remove_dir_all(&old).map_err(|e| io("remove", &old, e))?;
    }
    Ok(())
}

/// Builds the version 2 files of a version 1 array in `done.v2.tmp/`, synced; returns the
/// path of the new array.
pub(crate) fn build_v2(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    skip: &HashSet<u64>,
) -> Result<PathBuf, JournalError> {
    let (tmp, _) = migration_dirs(array);
    if super::files::exists(&tmp)? {
        fs::remove_dir_all(&tmp).map_err(|e| io("remove", &tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| io("create", &tmp, e))?;
    let new = tmp.join("done.zarr");
    create(&new, grid_shape, num_blocks)?;
    let g = Geometry::new(num_blocks, CHUNK_BYTES);
    let mut files = Vec::with_capacity(g.chunks as usize);
    for c in 0..g.chunks {
        files.push(open_chunk(&new, &g, c, true)?);
    }
    let mut counts = vec![Counts::default(); g.chunks as usize];
    let mut sums = read_sums(&new, &g)?;
    let mut packed = Vec::new();
    let mut failure = None;
    super::v1::read(array, grid_shape, num_blocks, skip, |offset, values| {
        if failure.is_some() {
            return;
        }
        // `offset` is a multiple of 65,536: whole bytes, whole pages.
        packed.clear();
        packed.resize(values.len().div_ceil(4), 0);
        for (i, &v) in values.iter().enumerate() {
            packed[i / 4] |= (v & 3) << (2 * (i % 4));
        }
        let c = g.chunk_of_block(offset);
        if let Some(n) = counts.get_mut(c as usize) {
            for &v in values {
                n.add(v);
            }
        }
        if packed.iter().all(|&b| b == 0) {
            return;
        }
        let byte = offset / 4;
        let at = byte - c * g.chunk_bytes;
        if let Some(f) = files.get(c as usize)
            && let Err(e) = f.write_all_at(&packed, at)
        {
            failure = Some(io("write", &g.chunk_path(&new, c), e));
            return;
        }
        for (k, page) in packed.chunks(PAGE as usize).enumerate() {
            if let Some(s) = sums.get_mut((byte / PAGE) as usize + k) {
                *s = crc32fast::hash(page);
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    for (c, f) in files.iter().enumerate() {
        f.sync_all()
            .map_err(|e| io("sync", &g.chunk_path(&new, c as u64), e))?;
    }
    crash_point("migrate:chunks-written");
    let mut bytes = Vec::with_capacity(usize::try_from(sums_len(&g)).unwrap_or(0));
    encode_sums_header(&g, &mut bytes);
    for s in &sums {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    super::write_atomic(&sums_path(&new), &bytes)?;
    crash_point("migrate:crc32-written");
    super::write_atomic(&summary_path(&new), &encode_summary(&g, &counts))?;
    super::files::sync_dir(&tmp);
    crash_point("migrate:built");
    Ok(new)
}

/// Migrates a version 1 array to version 2 (see the module docs).
fn migrate(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    skip: &HashSet<u64>,
) -> Result<(), JournalError> {
    build_v2(array, grid_shape, num_blocks, skip)?;
    let (_, old) = migration_dirs(array);
    fs::rename(array, &old).map_err(|e| io("rename", &old, e))?;
    crash_point("migrate:moved-aside");
    super::files::sync_dir(array.parent().unwrap_or(array));
    crash_point("migrate:moved-aside-synced");
    finish_migration(array)
}

/// The crash points of the migration, in the order a migration from version 1 passes them
/// (the `crash-points` feature's tests kill a process at each).
#[cfg(feature = "crash-points")]
pub(crate) const CRASH_POINTS: [&str; 10] = [
    "migrate:chunks-written",
    "migrate:crc32-written",
    "migrate:built",
    "migrate:moved-aside",
    "migrate:moved-aside-synced",
    "migrate:renamed-array",
    "migrate:renamed-crc32",
    "migrate:renamed-summary",
    "migrate:synced",
    "migrate:removed-tmp",
];

/// The environment variable naming the crash point (one of [`CRASH_POINTS`]) at which the
/// process kills itself with SIGKILL.
#[cfg(feature = "crash-points")]
pub(crate) const CRASH_POINT_VAR: &str = "BLOCKWISE_CRASH_POINT";

/// Kills the process with SIGKILL if [`CRASH_POINT_VAR`] names `point` (tests of the
/// migration's crash safety; compiled only with the `crash-points` feature).
#[cfg(feature = "crash-points")]
fn crash_point(point: &str) {
    debug_assert!(
        CRASH_POINTS.contains(&point),
        "unlisted crash point {point}"
    );
    if std::env::var_os(CRASH_POINT_VAR).is_some_and(|v| v == point) {
        tracing::warn!(point, "crash point reached: killing the process");
        // SIGKILL cannot be caught; if raising it fails, abort (no clean-up runs either way).
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// Without the `crash-points` feature a crash point is nothing.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
fn crash_point(_point: &str) {}

/// The done blocks of a marker array (see the module docs for what is checked).
pub(crate) fn load(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
) -> Result<DoneSet, JournalError> {
    prepare(array, grid_shape, num_blocks, &HashSet::new())?;
    let g = check_metadata(array, grid_shape, num_blocks)?;
    let summary = read_summary(array, &g)?;
    let mut sums: Option<Vec<u32>> = None;
    let mut builder = DoneSetBuilder::new(num_blocks);
    let mut counts = Vec::with_capacity(g.chunks as usize);
    for c in 0..g.chunks {
        let n = g.chunk_blocks(c);
        let stored = summary
            .as_ref()
            .and_then(|(_, s)| s.get(c as usize).copied());
        // Its length, at least, is checked (a stat).
        drop(open_chunk(array, &g, c, false)?);
        let trusted = g.chunk_used(c) >= trust_from();
        match stored {
            Some(s) if trusted && s.done == n => {
                builder.push_uniform(n, true);
                counts.push(s);
                continue;
            }
            Some(s) if trusted && s.done == 0 && s.failed == 0 => {
                builder.push_uniform(n, false);
                counts.push(s);
                continue;
            }
            _ => {}
        }
        if sums.is_none() {
            sums = Some(read_sums(array, &g)?);
        }
        let found = scan_chunk(array, &g, c, sums.as_deref(), None, |_, bytes, blocks| {
            builder.push_chunk((0..blocks).map(|i| value_at(bytes, i) == DONE));
        })?;
        if let Some(s) = stored
            && s != found
        {
            return Err(corrupt(
                &g.chunk_path(array, c),
                format!(
                    "it holds {} done and {} failed markers, its summary in {} says {} and {}: one of them changed after it was written",
                    found.done,
                    found.failed,
                    summary_path(array).display(),
                    s.done,
                    s.failed
                ),
            ));
        }
        counts.push(found);
    }
    if summary.is_none() {
        super::write_atomic(&summary_path(array), &encode_summary(&g, &counts))?;
    }
    Ok(builder.finish())
}

/// Counts of a marker array, and the grid indices of its failed blocks (at most `keep`),
/// without writing anything. With `check`, the chunks read have their checksums verified
/// but for the pages `check` names, whose chunks are counted from their markers.
pub(crate) fn count(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    keep: usize,
    check: Option<&HashSet<u64>>,
) -> Result<(Counts, Vec<u64>), JournalError> {
    if is_v1_metadata(&read_metadata(array)?) {
        return super::v1::count(array, grid_shape, num_blocks, keep, None);
    }
    let g = check_metadata(array, grid_shape, num_blocks)?;
    let summary = read_summary(array, &g)?;
    let touched: BTreeSet<u64> = check
        .into_iter()
        .flatten()
        .map(|&p| p * PAGE / g.chunk_bytes)
        .collect();
    let sums = match check {
        Some(_) => Some(read_sums(array, &g)?),
        None => None,
    };
    let mut total = Counts::default();
    let mut failed = Vec::new();
    for c in 0..g.chunks {
        let stored = summary
            .as_ref()
            .and_then(|(_, s)| s.get(c as usize).copied());
        let n = g.chunk_blocks(c);
        if let Some(s) = stored
            && !touched.contains(&c)
            && (s.failed == 0 || failed.len() >= keep)
            && (check.is_none()
                || (g.chunk_used(c) >= trust_from() && (s.done == n || s.done + s.failed == 0)))
        {
            total.done += s.done;
            total.failed += s.failed;
            continue;
        }
        let found = scan_chunk(array, &g, c, sums.as_deref(), check, |b0, bytes, blocks| {
            if failed.len() >= keep {
                return;
            }
            for (k, &b) in bytes.iter().enumerate() {
                if b & 0xaa == 0 {
                    continue;
                }
                for j in 0..4u64 {
                    let i = k as u64 * 4 + j;
                    if i < blocks && (b >> (2 * j)) & 3 == FAILED && failed.len() < keep {
                        failed.push(b0 + i);
                    }
                }
            }
        })?;
        total.done += found.done;
        total.failed += found.failed;
    }
    Ok((total, failed))
}

/// The values of some markers as the files hold them now (for `blockwise status`).
pub(crate) fn values_at(
    array: &Path,
    grid_shape: &[i64],
    num_blocks: u64,
    indices: impl Iterator<Item = u64>,
) -> Result<Vec<u8>, JournalError> {
    if is_v1_metadata(&read_metadata(array)?) {
        return super::v1::values_at(array, grid_shape.len(), indices);
    }
    let g = check_metadata(array, grid_shape, num_blocks)?;
    let mut files: FxHashMap<u64, File> = FxHashMap::default();
    let mut out = Vec::new();
    for index in indices {
        let c = g.chunk_of_block(index);
        let file = match files.entry(c) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(open_chunk(array, &g, c, false)?)
            }
        };
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, index / 4 - c * g.chunk_bytes)
            .map_err(|e| io("read", &g.chunk_path(array, c), e))?;
        out.push(value_at(&byte, index % 4));
    }
    Ok(out)
}

/// The page of a marker (for the pages a logged batch touches).
pub(crate) fn page_of(index: u64) -> u64 {
    index / PAGE_BLOCKS
}

/// When a marker array was last written (its checksum file changes with every flush).
pub(crate) fn modified(array: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(sums_path(array))
        .and_then(|m| m.modified())
        .ok()
}

/// Writes markers, the CRCs of their pages and the summary, through a cache of dirty pages.
#[derive(Debug)]
pub(crate) struct MarkerWriter {
    array: PathBuf,
    g: Geometry,
    files: Vec<File>,
    sums_path: PathBuf,
    sums: File,
    summary_path: PathBuf,
    summary: File,
    seq: u64,
    counts: Vec<Counts>,
    counts_changed: bool,
    pages: FxHashMap<u64, Box<[u8]>>,
    /// Whether the CRC of a page is checked when it is read (not in a replay).
    check: bool,
    buf: Vec<u8>,
}

impl MarkerWriter {
    /// Opens the array for writing (after [`load`], which migrates and checks it).
    pub(crate) fn open(
        array: &Path,
        grid_shape: &[i64],
        num_blocks: u64,
    ) -> Result<MarkerWriter, JournalError> {
        let g = check_metadata(array, grid_shape, num_blocks)?;
        let mut files = Vec::with_capacity(g.chunks as usize);
        for c in 0..g.chunks {
            files.push(open_chunk(array, &g, c, true)?);
        }
        let rw = OpenOptions::new().read(true).write(true).clone();
        let sums_path = sums_path(array);
        let sums = open_regular(&sums_path, &rw, "open")?;
        let len = sums
            .metadata()
            .map_err(|e| io("stat", &sums_path, e))?
            .len();
        if len != sums_len(&g) {
            return Err(corrupt(
                &sums_path,
                format!("{len} bytes, expected {}", sums_len(&g)),
            ));
        }
        let (seq, counts) = match read_summary(array, &g)? {
            Some(s) => s,
            None => {
                // Counted again (load does this for a run; a replay recounts what it touches
                // and, for a missing summary, everything).
                (0, vec![Counts::default(); g.chunks as usize])
            }
        };
        let summary_path = summary_path(array);
        if !super::files::exists(&summary_path)? {
            super::write_atomic(&summary_path, &encode_summary(&g, &counts))?;
        }
        let summary = open_regular(&summary_path, &rw, "open")?;
        Ok(MarkerWriter {
            array: array.to_owned(),
            g,
            files,
            sums_path,
            sums,
            summary_path,
            summary,
            seq,
            counts,
            counts_changed: false,
            pages: FxHashMap::default(),
            check: true,
            buf: Vec::new(),
        })
    }

    /// Replays a logged batch (see the module docs): prepares the array (a migration skips
    /// the checksums of the pages the batch touches), sets its markers without checking the
    /// CRCs of their pages, flushes, and counts the chunks it touched again.
    pub(crate) fn replay(
        array: &Path,
        grid_shape: &[i64],
        num_blocks: u64,
        records: &[(u64, u8)],
    ) -> Result<(), JournalError> {
        let v1_pages: HashSet<u64> = records
            .iter()
            .map(|&(i, _)| super::v1::page_of(i))
            .collect();
        prepare(array, grid_shape, num_blocks, &v1_pages)?;
        let g = check_metadata(array, grid_shape, num_blocks)?;
        let whole = read_summary(array, &g)?.is_none();
        let mut w = MarkerWriter::open(array, grid_shape, num_blocks)?;
        w.check = false;
        for &(index, value) in records {
            w.set(index, value)?;
        }
        w.flush()?;
        let chunks: BTreeSet<u64> = if whole {
            (0..w.g.chunks).collect()
        } else {
            records
                .iter()
                .map(|&(i, _)| w.g.chunk_of_block(i))
                .collect()
        };
        for c in chunks {
            let n = scan_chunk(array, &w.g, c, None, None, |_, _, _| {})?;
            if let Some(slot) = w.counts.get_mut(c as usize) {
                *slot = n;
            }
        }
        w.counts_changed = true;
        w.write_summary()
    }

    /// Sets one marker (in the cache; [`flush`](Self::flush) writes it).
    pub(crate) fn set(&mut self, index: u64, value: u8) -> Result<(), JournalError> {
        if index >= self.g.blocks {
            return Ok(());
        }
        let page = index / PAGE_BLOCKS;
        let buf = match self.pages.entry(page) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let start = page * PAGE;
                let n = (self.g.bytes - start).min(PAGE) as usize;
                let c = start / self.g.chunk_bytes;
                let mut buf = vec![0u8; n].into_boxed_slice();
                let path = || self.g.chunk_path(&self.array, c);
                let file = self
                    .files
                    .get(c as usize)
                    .ok_or_else(|| corrupt(&path(), "missing chunk".into()))?;
                file.read_exact_at(&mut buf, start - c * self.g.chunk_bytes)
                    .map_err(|e| io("read", &path(), e))?;
                if self.check {
                    let mut stored = [0u8; 4];
                    self.sums
                        .read_exact_at(&mut stored, SUMS_HEADER + 4 * page)
                        .map_err(|e| io("read", &self.sums_path, e))?;
                    if u32::from_le_bytes(stored) != crc32fast::hash(&buf) {
                        let at = start - c * self.g.chunk_bytes;
                        return Err(corrupt(
                            &path(),
                            format!(
                                "checksum mismatch in bytes {at} to {} (page {page}; its CRC-32 is in {}): the markers changed after they were written (a disk or memory error, or an edit)",
                                at + n as u64 - 1,
                                self.sums_path.display()
                            ),
                        ));
                    }
                }
                v.insert(buf)
            }
        };
        let at = ((index % PAGE_BLOCKS) / 4) as usize;
        let shift = 2 * (index % 4);
        let old = (buf[at] >> shift) & 3;
        buf[at] = (buf[at] & !(3 << shift)) | ((value & 3) << shift);
        if old != value {
            if let Some(n) = self.counts.get_mut(self.g.chunk_of_block(index) as usize) {
                n.remove(old);
                n.add(value);
            }
            self.counts_changed = true;
        }
        Ok(())
    }

    /// Marks every block done, page by page (`bench markers`' fast path: the same pages,
    /// CRCs and summary as [`set`](Self::set) for each block and a flush, in big writes).
    pub(crate) fn mark_all_done(&mut self) -> Result<(), JournalError> {
        self.flush()?;
        let piece = (1u64 << 20).min(self.g.chunk_bytes);
        let ones = vec![0x55u8; piece as usize];
        let mut sums = Vec::with_capacity(usize::try_from(sums_len(&self.g)).unwrap_or(0));
        encode_sums_header(&self.g, &mut sums);
        let full = crc32fast::hash(&[0x55u8; PAGE as usize]).to_le_bytes();
        for c in 0..self.g.chunks {
            let used = self.g.chunk_used(c);
            let path = self.g.chunk_path(&self.array, c);
            let mut off = 0;
            while off < used {
                let n = (used - off).min(piece);
                let mut bytes = ones[..n as usize].to_vec();
                let end_block = (c * self.g.chunk_bytes + off + n) * 4;
                if off + n == used && end_block > self.g.blocks {
                    let keep = 4 - (end_block - self.g.blocks);
                    if let Some(last) = bytes.last_mut() {
                        *last &= (1u8 << (2 * keep)) - 1;
                    }
                }
                self.files[c as usize]
                    .write_all_at(&bytes, off)
                    .map_err(|e| io("write", &path, e))?;
                for page in bytes.chunks(PAGE as usize) {
                    if page.len() == PAGE as usize && page[page.len() - 1] == 0x55 {
                        sums.extend_from_slice(&full);
                    } else {
                        sums.extend_from_slice(&crc32fast::hash(page).to_le_bytes());
                    }
                }
                off += n;
            }
            self.files[c as usize]
                .sync_data()
                .map_err(|e| io("sync", &path, e))?;
            self.counts[c as usize] = Counts {
                done: self.g.chunk_blocks(c),
                failed: 0,
            };
        }
        self.sums
            .write_all_at(&sums, 0)
            .map_err(|e| io("write", &self.sums_path, e))?;
        self.sums
            .sync_data()
            .map_err(|e| io("sync", &self.sums_path, e))?;
        self.counts_changed = true;
        self.write_summary()
    }

    /// Writes the cached pages and their CRCs, syncs them, then writes the summary and syncs
    /// it.
    pub(crate) fn flush(&mut self) -> Result<(), JournalError> {
        if self.pages.is_empty() {
            return self.write_summary();
        }
        let mut pages: Vec<(u64, Box<[u8]>)> = self.pages.drain().collect();
        pages.sort_unstable_by_key(|(p, _)| *p);
        let mut touched: Vec<u64> = Vec::new();
        for (page, buf) in &pages {
            let start = page * PAGE;
            let c = start / self.g.chunk_bytes;
            let path = || self.g.chunk_path(&self.array, c);
            let file = self
                .files
                .get(c as usize)
                .ok_or_else(|| corrupt(&path(), "missing chunk".into()))?;
            file.write_all_at(buf, start - c * self.g.chunk_bytes)
                .map_err(|e| io("write", &path(), e))?;
            if touched.last() != Some(&c) {
                touched.push(c);
            }
        }
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
            self.sums
                .write_all_at(&self.buf, SUMS_HEADER + 4 * first)
                .map_err(|e| io("write", &self.sums_path, e))?;
        }
        for c in touched {
            if let Some(f) = self.files.get(c as usize) {
                f.sync_data()
                    .map_err(|e| io("sync", &self.g.chunk_path(&self.array, c), e))?;
            }
        }
        self.sums
            .sync_data()
            .map_err(|e| io("sync", &self.sums_path, e))?;
        self.write_summary()
    }

    /// Writes the counts, if they changed, to the summary's other slot, and syncs it.
    fn write_summary(&mut self) -> Result<(), JournalError> {
        if !self.counts_changed {
            return Ok(());
        }
        self.seq += 1;
        let slot = encode_slot(self.seq, &self.counts);
        let at = SUMMARY_HEADER + (self.seq % 2) * slot_len(&self.g);
        self.summary
            .write_all_at(&slot, at)
            .map_err(|e| io("write", &self.summary_path, e))?;
        self.summary
            .sync_data()
            .map_err(|e| io("sync", &self.summary_path, e))?;
        self.counts_changed = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
