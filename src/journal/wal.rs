//! The write-ahead log that makes a batch of markers all-or-nothing.
//!
//! A batch's markers are written here first (one record per marker, in the order blocks were
//! released, all tasks together), synced, and only then applied to the marker arrays. If the
//! process dies while the arrays are being written, the next run replays the batch. A batch cut
//! short fails its checksum and is ignored, and the arrays were not touched for it. So what
//! survives a crash is always the markers of a prefix of the release order: a block is never
//! marked done while a block it depends on is not.
//!
//! The file holds one batch (each flush overwrites the previous one, which was applied):
//!
//! ```text
//! "BWAL" | u32 version = 2 | u64 payload length | u32 crc32 of payload | payload
//! payload: per task: u32 name length | name (task directory name) | u64 n | n × u64 record
//!          | u64 outputs end
//! record: grid index × 4 + marker value
//! ```
//!
//! `outputs end` is the committed length of the task's `outputs.bin` after this batch
//! (`u64::MAX`: the task recorded no outputs in this run; see outputs.rs). A task that has
//! outputs has a section in every batch, even one without its markers, so that the logged
//! batch always holds its latest committed length. Version 1 logs (no `outputs end`) are still
//! read.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::JournalError;

const MAGIC: &[u8; 4] = b"BWAL";
const VERSION: u32 = 2;
/// The version before block outputs, still read.
const VERSION_1: u32 = 1;
/// `outputs end` of a task without outputs.
const NO_OUTPUTS: u64 = u64::MAX;
const HEADER: usize = 4 + 4 + 8 + 4;

/// One task's part of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) task_dir: String,
    /// `(grid index, marker value)` in release order.
    pub(crate) records: Vec<(u64, u8)>,
    /// The committed length of the task's `outputs.bin` after this batch, if it has outputs.
    pub(crate) outputs_end: Option<u64>,
}

fn io(action: &str, path: &Path, source: std::io::Error) -> JournalError {
    JournalError::Io {
        action: action.to_owned(),
        path: path.to_owned(),
        source,
    }
}

/// The log file of a run directory.
#[derive(Debug)]
pub(crate) struct Wal {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

impl Wal {
    pub(crate) fn open(path: &Path) -> Result<Wal, JournalError> {
        let file = super::files::open_regular(
            path,
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true),
            "open",
        )?;
        Ok(Wal {
            path: path.to_owned(),
            file,
            buf: Vec::new(),
        })
    }

    /// Writes a batch and syncs it (tasks without outputs).
    #[cfg(test)]
    pub(crate) fn write<'a>(
        &mut self,
        sections: impl Iterator<Item = (&'a str, &'a [u64])>,
    ) -> Result<(), JournalError> {
        self.write_with_outputs(sections.map(|(n, r)| (n, r, None)))
    }

    /// Writes a batch, with each task's committed outputs end, and syncs it. A section is
    /// written if it has records or an outputs end.
    pub(crate) fn write_with_outputs<'a>(
        &mut self,
        sections: impl Iterator<Item = (&'a str, &'a [u64], Option<u64>)>,
    ) -> Result<(), JournalError> {
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&[0u8; 12]);
        for (name, records, outputs_end) in sections {
            if records.is_empty() && outputs_end.is_none() {
                continue;
            }
            buf.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_le_bytes());
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(&(records.len() as u64).to_le_bytes());
            for r in records {
                buf.extend_from_slice(&r.to_le_bytes());
            }
            buf.extend_from_slice(&outputs_end.unwrap_or(NO_OUTPUTS).to_le_bytes());
        }
        let payload_len = (buf.len() - HEADER) as u64;
        let crc = crc32fast::hash(&buf[HEADER..]);
        buf[8..16].copy_from_slice(&payload_len.to_le_bytes());
        buf[16..20].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(buf, 0)
            .map_err(|e| io("write", &self.path, e))?;
        self.file.sync_data().map_err(|e| io("sync", &self.path, e))
    }

    /// Empties the log (after its batch was applied).
    pub(crate) fn clear(&mut self) -> Result<(), JournalError> {
        self.file
            .set_len(0)
            .map_err(|e| io("truncate", &self.path, e))?;
        self.file.sync_all().map_err(|e| io("sync", &self.path, e))
    }

    /// The batch in the log, if it is complete (see [`decode`]).
    pub(crate) fn read(&self) -> Result<Option<Vec<Section>>, JournalError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| io("stat", &self.path, e))?
            .len();
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.file
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| io("read", &self.path, e))?;
        decode(&bytes).map_err(|reason| JournalError::Corrupt {
            path: self.path.clone(),
            reason,
        })
    }
}

/// The batch of a log file, read without writing anything (for `blockwise status`); `None`
/// if there is no log or no complete batch in it.
pub(crate) fn read_only(path: &Path) -> Result<Option<Vec<Section>>, JournalError> {
    if !super::files::exists(path)? {
        return Ok(None);
    }
    let mut file = super::files::open_read(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io("read", path, e))?;
    decode(&bytes).map_err(|reason| JournalError::Corrupt {
        path: path.to_owned(),
        reason,
    })
}

/// The batch of a log file's bytes: `Ok(None)` if there is none or it is incomplete (empty,
/// cut short, or failing its checksum: a crash while it was written, and the arrays were not
/// touched for it); an error saying what is wrong for a batch whose checksum is good but whose
/// contents are not (a damaged or crafted log), such as a task directory name that is not one
/// (see [`task_id_of_dir_name`](super::task_id_of_dir_name)).
pub(crate) fn decode(bytes: &[u8]) -> Result<Option<Vec<Section>>, String> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Ok(None);
    }
    let with_outputs = if bytes[4..8] == VERSION.to_le_bytes() {
        true
    } else if bytes[4..8] == VERSION_1.to_le_bytes() {
        false
    } else {
        return Ok(None);
    };
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(&bytes[8..16]);
    let payload_len = u64::from_le_bytes(n8);
    if payload_len > (bytes.len() - HEADER) as u64 {
        return Ok(None);
    }
    let payload = &bytes[HEADER..HEADER + payload_len as usize];
    let mut c4 = [0u8; 4];
    c4.copy_from_slice(&bytes[16..20]);
    if crc32fast::hash(payload) != u32::from_le_bytes(c4) {
        return Ok(None);
    }
    let sections = parse(payload, with_outputs)
        .ok_or("its batch has a valid checksum but cannot be parsed")?;
    for s in &sections {
        if super::task_id_of_dir_name(&s.task_dir).is_none() {
            return Err(format!(
                "its batch names {:?}, which is not a task directory name (a task's id, percent-escaped); a log only names directories in the run directory's tasks/",
                s.task_dir
            ));
        }
    }
    Ok(Some(sections))
}

/// The sections of a batch's payload; `None` if it is not made of whole sections.
fn parse(mut p: &[u8], with_outputs: bool) -> Option<Vec<Section>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if p.len() < n {
            return None;
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Some(a)
    }
    let mut out = Vec::new();
    while !p.is_empty() {
        let name_len = u32::from_le_bytes(take(&mut p, 4)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(take(&mut p, name_len)?)
            .ok()?
            .to_owned();
        let n = u64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?);
        let bytes = take(&mut p, usize::try_from(n).ok()?.checked_mul(8)?)?;
        let records = bytes
            .chunks_exact(8)
            .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
            .map(|r| (r >> 2, (r & 3) as u8))
            .collect();
        let outputs_end = if with_outputs {
            Some(u64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?)).filter(|&e| e != NO_OUTPUTS)
        } else {
            None
        };
        out.push(Section {
            task_dir: name,
            records,
            outputs_end,
        });
    }
    Some(out)
}

/// A record of the log: `index × 4 + value`.
pub(crate) fn record(index: u64, value: u8) -> u64 {
    (index << 2) | u64::from(value & 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_batches() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("wal");
        let mut wal = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wal.read().ok().flatten(), None);
        let a = [record(5, 1), record(7, 2)];
        let b = [record(1 << 40, 1)];
        wal.write([("a", &a[..]), ("empty", &[][..]), ("b%2F", &b[..])].into_iter())
            .unwrap_or_else(|e| panic!("{e}"));
        let got = wal.read().ok().flatten().unwrap_or_default();
        assert_eq!(
            got,
            vec![
                Section {
                    task_dir: "a".into(),
                    records: vec![(5, 1), (7, 2)],
                    outputs_end: None,
                },
                Section {
                    task_dir: "b%2F".into(),
                    records: vec![(1 << 40, 1)],
                    outputs_end: None,
                },
            ]
        );
        // Cut short or damaged: ignored.
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        f.set_len(len - 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wal.read().ok().flatten(), None);
        f.set_len(len).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wal.read().ok().flatten(), None, "zeros instead of the tail");
        wal.clear().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wal.read().ok().flatten(), None);
    }

    #[test]
    fn a_good_checksum_over_bad_contents_is_damage() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("wal");
        let mut wal = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        for name in ["../x", "a/b", ".hidden", "%2e."] {
            wal.write([(name, &[record(1, 1)][..])].into_iter())
                .unwrap_or_else(|e| panic!("{e}"));
            let e = match wal.read() {
                Ok(s) => panic!("{name}: read as {s:?}"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.contains(&format!(
                    "its batch names {name:?}, which is not a task directory name"
                )),
                "{e}"
            );
            assert!(read_only(&path).is_err());
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(decode(&bytes).is_err());
        // Sections that do not add up, under a good checksum.
        let payload = [1u8, 0, 0, 0, b'a', 9];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION_1.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert_eq!(
            decode(&bytes),
            Err("its batch has a valid checksum but cannot be parsed".into())
        );
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Ok(None));
        assert_eq!(read_only(&dir.path().join("none")).ok(), Some(None));
    }

    #[test]
    fn outputs_ends_are_logged_even_without_markers_and_version_1_logs_are_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("wal");
        let mut wal = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let a = [record(3, 1)];
        wal.write_with_outputs(
            [
                ("a", &a[..], Some(120)),
                ("b", &[][..], Some(7)),
                ("c", &[][..], None),
            ]
            .into_iter(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let got = wal.read().ok().flatten().unwrap_or_default();
        let ends: Vec<(String, Option<u64>)> = got
            .into_iter()
            .map(|s| (s.task_dir, s.outputs_end))
            .collect();
        assert_eq!(ends, vec![("a".into(), Some(120)), ("b".into(), Some(7))]);
        // A version 1 batch (an older run that crashed) is replayed too.
        let mut payload = Vec::new();
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.push(b'a');
        payload.extend_from_slice(&1u64.to_le_bytes());
        payload.extend_from_slice(&record(9, 1).to_le_bytes());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION_1.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let sections = decode(&bytes).ok().flatten().unwrap_or_default();
        assert_eq!(
            sections,
            vec![Section {
                task_dir: "a".into(),
                records: vec![(9, 1)],
                outputs_end: None
            }]
        );
    }
}
