//! Block outputs: the values returned by the process functions of
//! [`TaskBuilder::process_with_output`](crate::TaskBuilder::process_with_output), recorded in
//! the same batch as the blocks' done-markers.
//!
//! Per task, `tasks/<dir>/outputs.bin` is an append-only sequence of records:
//!
//! ```text
//! u64 grid index | u64 block id | u32 payload length | u32 CRC-32 of the 20 bytes before and the payload | payload
//! ```
//!
//! (little-endian; the payload is the value as compact JSON). `outputs.committed` holds the
//! committed length of `outputs.bin` (8 bytes, little-endian, written atomically).
//!
//! # All or nothing
//!
//! The journal's writer, for a batch: appends the batch's records to `outputs.bin` and syncs
//! it; then writes the write-ahead log, whose batch carries, for every task with outputs, the
//! end of `outputs.bin` after this batch (the commit point); then the done-markers. At the end
//! of a run (and when a logged batch is replayed) the committed lengths go to
//! `outputs.committed` before the log is emptied. The committed length is therefore the one in
//! the log's complete batch if there is one, else the one in `outputs.committed`: records past
//! it belong to a batch that did not reach the log, whose markers were never written either,
//! and the next run truncates them away. So a block's output is kept exactly when its
//! done-marker is, and a done block is skipped on reruns: its output is recorded once.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{JournalError, files, io, task_dir_name, wal, write_atomic};
use crate::error::Error;

/// The records file of a task directory.
pub(crate) const RECORDS: &str = "outputs.bin";
/// The committed length of the records file.
pub(crate) const COMMITTED: &str = "outputs.committed";
/// Bytes before a record's payload.
pub(crate) const HEADER: usize = 8 + 8 + 4 + 4;
/// A buffer larger than this (after a large record) is shrunk back.
const KEEP_BUFFER: usize = 64 << 10;

/// Appends one record to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, grid_index: u64, block_id: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&grid_index.to_le_bytes());
    out.extend_from_slice(&block_id.to_le_bytes());
    // Payloads are capped well below 4 GiB (see `Runner::max_output_bytes`).
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start..start + 20]);
    h.update(payload);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads `outputs.committed` of a task directory: `None` if there is none.
fn read_committed(tdir: &Path) -> Result<Option<u64>, JournalError> {
    let path = tdir.join(COMMITTED);
    if !files::exists(&path)? {
        return Ok(None);
    }
    let bytes = files::read_small(&path, 8)?;
    let arr: [u8; 8] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| JournalError::Corrupt {
            path: path.clone(),
            reason: format!("it holds {} bytes, not 8", bytes.len()),
        })?;
    Ok(Some(u64::from_le_bytes(arr)))
}

/// Writes `outputs.committed` of a task directory.
pub(crate) fn write_committed(tdir: &Path, end: u64) -> Result<(), JournalError> {
    write_atomic(&tdir.join(COMMITTED), &end.to_le_bytes())
}

/// After the log was replayed (so `outputs.committed` is up to date): cuts `outputs.bin` back
/// to its committed length, dropping the records of a batch that never committed.
pub(crate) fn recover(tdir: &Path) -> Result<(), JournalError> {
    let path = tdir.join(RECORDS);
    if !files::exists(&path)? {
        return Ok(());
    }
    let committed = read_committed(tdir)?.unwrap_or(0);
    let file = files::open_regular(&path, OpenOptions::new().write(true), "open")?;
    let len = file.metadata().map_err(|e| io("inspect", &path, e))?.len();
    if len < committed {
        return Err(JournalError::Corrupt {
            path,
            reason: format!(
                "it holds {len} bytes, less than the {committed} bytes recorded as committed"
            ),
        });
    }
    if len > committed {
        tracing::info!(path = %path.display(), dropped = len - committed, "dropping block outputs of a batch that did not commit");
        file.set_len(committed)
            .map_err(|e| io("truncate", &path, e))?;
        file.sync_all().map_err(|e| io("sync", &path, e))?;
    }
    Ok(())
}

/// The records file of one task, appended to by the journal's writer.
pub(crate) struct OutputsWriter {
    tdir: PathBuf,
    path: PathBuf,
    file: Option<File>,
    /// The end of the records written (synced) so far.
    end: u64,
    /// Whether anything was written this run.
    touched: bool,
}

impl OutputsWriter {
    /// The writer of task directory `tdir` (nothing is opened until the first record).
    pub(crate) fn new(tdir: &Path) -> OutputsWriter {
        OutputsWriter {
            tdir: tdir.to_owned(),
            path: tdir.join(RECORDS),
            file: None,
            end: 0,
            touched: false,
        }
    }

    /// Appends a batch's records and syncs them; returns the new end.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<u64, JournalError> {
        if self.file.is_none() {
            let file = files::open_regular(
                &self.path,
                OpenOptions::new().create(true).truncate(false).write(true),
                "open",
            )?;
            self.end = file
                .metadata()
                .map_err(|e| io("inspect", &self.path, e))?
                .len();
            self.file = Some(file);
            files::sync_dir(&self.tdir);
        }
        if let Some(file) = &self.file {
            file.write_all_at(bytes, self.end)
                .map_err(|e| io("write", &self.path, e))?;
            file.sync_data().map_err(|e| io("sync", &self.path, e))?;
            self.end += bytes.len() as u64;
            self.touched = true;
        }
        Ok(self.end)
    }

    /// The committed end to log with every batch, once this run wrote outputs.
    pub(crate) fn logged_end(&self) -> Option<u64> {
        self.touched.then_some(self.end)
    }

    /// Records the committed length (before the log is emptied).
    pub(crate) fn commit(&self) -> Result<(), JournalError> {
        if self.touched {
            write_committed(&self.tdir, self.end)?;
        }
        Ok(())
    }
}

/// The value one block returned, read back from a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutput<T> {
    /// daisy's block id.
    pub block_id: u64,
    /// The block's dense grid index.
    pub grid_index: u64,
    /// What the block's function returned.
    pub value: T,
}

/// The recorded outputs of a task, read one record at a time (see
/// [`RunSummary::outputs`](crate::RunSummary::outputs) and [`read_outputs`]).
///
/// Memory stays bounded whatever the number of blocks: a 64 KiB read buffer and one record.
/// Records come in the order blocks finished. After an error the iterator ends.
pub struct Outputs<T> {
    reader: Option<BufReader<File>>,
    path: PathBuf,
    remaining: u64,
    buf: Vec<u8>,
    /// Keeps a temporary run directory alive while its outputs are read.
    _keep: Option<Arc<tempfile::TempDir>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Outputs<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("path", &self.path)
            .field("remaining_bytes", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl<T> Outputs<T> {
    /// The capacity of the buffer holding the current record (for tests of bounded memory).
    #[doc(hidden)]
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub(crate) fn keep(mut self, dir: Option<Arc<tempfile::TempDir>>) -> Self {
        self._keep = dir;
        self
    }

    fn corrupt(&mut self, reason: String) -> Error {
        self.reader = None;
        Error::Journal(JournalError::Corrupt {
            path: self.path.clone(),
            reason,
        })
    }

    fn next_record(&mut self) -> Result<Option<(u64, u64)>, Error> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        if self.remaining == 0 {
            self.reader = None;
            return Ok(None);
        }
        let offset_hint = self.remaining;
        if self.remaining < HEADER as u64 {
            return Err(self.corrupt(format!(
                "a record header runs past the committed end ({offset_hint} bytes left)"
            )));
        }
        let mut header = [0u8; HEADER];
        if let Err(e) = reader.read_exact(&mut header) {
            self.reader = None;
            return Err(Error::Journal(io("read", &self.path, e)));
        }
        let word = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[r]);
            u64::from_le_bytes(b)
        };
        let grid_index = word(0..8);
        let block_id = word(8..16);
        let mut l = [0u8; 4];
        l.copy_from_slice(&header[16..20]);
        let len = u64::from(u32::from_le_bytes(l));
        let mut c = [0u8; 4];
        c.copy_from_slice(&header[20..24]);
        let crc = u32::from_le_bytes(c);
        self.remaining -= HEADER as u64;
        if len > self.remaining {
            return Err(self.corrupt(format!(
                "the record of block {grid_index} holds {len} bytes, past the committed end ({} bytes left)",
                self.remaining
            )));
        }
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf.shrink_to(KEEP_BUFFER);
        }
        let got = reader
            .by_ref()
            .take(len)
            .read_to_end(&mut self.buf)
            .map_err(|e| io("read", &self.path, e));
        match got {
            Ok(n) if n as u64 == len => {}
            Ok(n) => {
                return Err(self.corrupt(format!(
                    "the record of block {grid_index} is cut short ({n} of {len} bytes)"
                )));
            }
            Err(e) => {
                self.reader = None;
                return Err(Error::Journal(e));
            }
        }
        self.remaining -= len;
        let mut h = crc32fast::Hasher::new();
        h.update(&header[..20]);
        h.update(&self.buf);
        if h.finalize() != crc {
            return Err(self.corrupt(format!(
                "checksum mismatch in the record of block {grid_index}"
            )));
        }
        Ok(Some((grid_index, block_id)))
    }
}

impl<T: DeserializeOwned> Iterator for Outputs<T> {
    type Item = Result<BlockOutput<T>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_record() {
            Ok(None) => None,
            Err(e) => Some(Err(e)),
            Ok(Some((grid_index, block_id))) => Some(
                serde_json::from_slice::<T>(&self.buf)
                    .map(|value| BlockOutput {
                        block_id,
                        grid_index,
                        value,
                    })
                    .map_err(|e| {
                        self.reader = None;
                        Error::Journal(JournalError::OutputType {
                            path: self.path.clone(),
                            grid_index,
                            type_name: std::any::type_name::<T>().to_owned(),
                            reason: e.to_string(),
                        })
                    }),
            ),
        }
    }
}

/// Reads the recorded outputs of task `task_id` from a run directory, without a run summary
/// and without taking the directory's lock (it writes nothing).
///
/// Exactly the outputs of the blocks recorded as done are read, also after a crash: the
/// committed length comes from the write-ahead log's complete batch if it has one (the next
/// run replays it), else from `outputs.committed`; records past it are ignored. A task that
/// ran without outputs (or none of whose blocks finished) has none.
///
/// ```
/// use blockwise::{Progress, Roi, Runner, Task};
///
/// # fn main() -> Result<(), blockwise::Error> {
/// let dir = std::env::temp_dir().join(format!("blockwise-doc-read-outputs-{}", std::process::id()));
/// let task = Task::builder("count", Roi::new([0], [40]), Roi::new([0], [10]), Roi::new([0], [10]))
///     .process_with_output(|block| Ok(block.write_roi().begin()[0]))
///     .build()?;
/// let summary = Runner::new().progress(Progress::Never).run_dir(&dir).run([task])?;
/// assert!(summary.is_success());
/// let mut begins: Vec<i64> = blockwise::journal::read_outputs::<i64>(&dir, "count")?
///     .map(|o| o.map(|o| o.value))
///     .collect::<Result<_, _>>()?;
/// begins.sort();
/// assert_eq!(begins, [0, 10, 20, 30]);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`JournalError::NoOutputs`] if the run directory has no task `task_id`;
/// [`JournalError::Corrupt`] for a damaged log or committed length; I/O errors. Each record
/// is checked as it is read: a CRC mismatch or a record past the committed end is
/// [`JournalError::Corrupt`] naming `outputs.bin`, and a value that is not a `T` is
/// [`JournalError::OutputType`] (both as [`Error::Journal`]).
pub fn read_outputs<T: DeserializeOwned>(
    run_dir: &Path,
    task_id: &str,
) -> Result<Outputs<T>, JournalError> {
    let name = task_dir_name(task_id);
    let tdir = run_dir.join("tasks").join(&name);
    if !tdir.join("layout.json").is_file() {
        return Err(JournalError::NoOutputs {
            task: task_id.to_owned(),
            dir: run_dir.to_owned(),
        });
    }
    let logged = wal::read_only(&run_dir.join("journal.wal"))?
        .unwrap_or_default()
        .into_iter()
        .find(|s| s.task_dir == name)
        .and_then(|s| s.outputs_end);
    let committed = match logged {
        Some(end) => Some(end),
        None => read_committed(&tdir)?,
    };
    let path = tdir.join(RECORDS);
    let reader = match committed {
        Some(end) if end > 0 => {
            let file = files::open_read(&path)?;
            let len = file.metadata().map_err(|e| io("inspect", &path, e))?.len();
            if len < end {
                return Err(JournalError::Corrupt {
                    path,
                    reason: format!(
                        "it holds {len} bytes, less than the {end} bytes recorded as committed"
                    ),
                });
            }
            Some(BufReader::with_capacity(64 << 10, file))
        }
        _ => None,
    };
    Ok(Outputs {
        reader,
        path,
        remaining: committed.unwrap_or(0),
        buf: Vec::new(),
        _keep: None,
        _t: PhantomData,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn setup(records: &[(u64, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let tdir = dir.path().join("tasks").join("t");
        std::fs::create_dir_all(&tdir).unwrap();
        std::fs::write(tdir.join("layout.json"), "{}").unwrap();
        let mut w = OutputsWriter::new(&tdir);
        let mut bytes = Vec::new();
        for (g, p) in records {
            encode_record(&mut bytes, *g, g * 10, p.as_bytes());
        }
        w.append(&bytes).unwrap();
        w.commit().unwrap();
        (dir, tdir)
    }

    fn read(dir: &Path) -> Result<Vec<(u64, u64, Vec<u32>)>, Error> {
        read_outputs::<Vec<u32>>(dir, "t")?
            .map(|o| o.map(|o| (o.grid_index, o.block_id, o.value)))
            .collect()
    }

    #[test]
    fn records_round_trip_and_uncommitted_tails_are_dropped() {
        let (dir, tdir) = setup(&[(1, "[1,2]"), (4, "[]")]);
        assert_eq!(
            read(dir.path()).unwrap(),
            vec![(1, 10, vec![1, 2]), (4, 40, vec![])]
        );
        // A torn tail past the committed length is not read, and recovery cuts it off.
        let mut f = OpenOptions::new()
            .append(true)
            .open(tdir.join(RECORDS))
            .unwrap();
        std::io::Write::write_all(&mut f, b"garbage").unwrap();
        assert_eq!(read(dir.path()).unwrap().len(), 2);
        recover(&tdir).unwrap();
        let len = std::fs::metadata(tdir.join(RECORDS)).unwrap().len();
        assert_eq!(Some(len), read_committed(&tdir).unwrap());
        // Not a task: an error naming it.
        let e = read_outputs::<u32>(dir.path(), "nope").unwrap_err();
        assert!(e.to_string().contains("\"nope\""), "{e}");
    }

    #[test]
    fn a_crash_keeps_outputs_exactly_with_their_markers() {
        use crate::geometry::Roi;
        let dir = tempfile::tempdir().unwrap();
        let task = crate::Task::builder(
            "t",
            Roi::new([0], [10]),
            Roi::new([0], [1]),
            Roi::new([0], [1]),
        )
        .process_with_output(|b| Ok(b.grid_index()))
        .build()
        .unwrap();
        let read = |d: &Path| -> Vec<(u64, u64)> {
            read_outputs::<u64>(d, "t")
                .unwrap()
                .map(|o| o.map(|o| (o.grid_index, o.value)).unwrap())
                .collect()
        };
        {
            let mut j = super::super::Journal::open(dir.path(), &[task.layout()], false).unwrap();
            for g in 0..3 {
                j.record_done_with_output(0, g, g + 100, (g * 2).to_string().as_bytes());
            }
            j.flush().unwrap();
            // Dropped without finishing (a crash after the batch was logged): the log keeps
            // the batch and its committed length; outputs.committed was never written.
        }
        let tdir = dir.path().join("tasks/t");
        assert!(!tdir.join(COMMITTED).exists());
        assert_eq!(read(dir.path()), [(0, 0), (1, 2), (2, 4)]);
        // The outputs of a later batch that never reached the log (a crash before it).
        let mut extra = Vec::new();
        encode_record(&mut extra, 5, 105, b"10");
        let mut f = OpenOptions::new()
            .append(true)
            .open(tdir.join(RECORDS))
            .unwrap();
        std::io::Write::write_all(&mut f, &extra).unwrap();
        assert_eq!(
            read(dir.path()).len(),
            3,
            "uncommitted records are never read"
        );
        // The next open replays the log (recording the committed length) and drops the tail.
        {
            let mut j = super::super::Journal::open(dir.path(), &[task.layout()], false).unwrap();
            let done = j.take_done();
            assert_eq!(
                (done[0].len(), done[0].count()),
                (10, 3),
                "the logged markers were replayed"
            );
            j.record_done_with_output(0, 7, 107, b"14");
            j.finish("finished").unwrap();
        }
        assert_eq!(read(dir.path()), [(0, 0), (1, 2), (2, 4), (7, 14)]);
        let len = std::fs::metadata(tdir.join(RECORDS)).unwrap().len();
        assert_eq!(read_committed(&tdir).unwrap(), Some(len));
        // Starting fresh discards them.
        drop(super::super::Journal::open(dir.path(), &[task.layout()], true).unwrap());
        assert!(read(dir.path()).is_empty());
    }

    #[test]
    fn damage_is_corrupt_naming_the_file() {
        let (dir, tdir) = setup(&[(1, "[1,2]"), (2, "[3]")]);
        let path = tdir.join(RECORDS);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("outputs.bin") && e.contains("checksum mismatch"),
            "{e}"
        );
        // A committed length past the end of the file.
        write_committed(&tdir, bytes.len() as u64 + 5).unwrap();
        let e = read_outputs::<u32>(dir.path(), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("less than"), "{e}");
        assert!(recover(&tdir).is_err());
        // A length field past the committed end.
        let mut short = Vec::new();
        encode_record(&mut short, 3, 30, b"[1]");
        short[16] = 200;
        std::fs::write(&path, &short).unwrap();
        write_committed(&tdir, short.len() as u64).unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("past the committed end"), "{e}");
        // The wrong type.
        let (dir, _) = setup(&[(1, "\"text\"")]);
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("block 1") && e.contains("Vec<u32>"), "{e}");
    }
}
