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
//! "BWAL" | u32 version = 1 | u64 payload length | u32 crc32 of payload | payload
//! payload: per task: u32 name length | name (task directory name) | u64 n | n × u64 record
//! record: grid index × 4 + marker value
//! ```

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::JournalError;

const MAGIC: &[u8; 4] = b"BWAL";
const VERSION: u32 = 1;
const HEADER: usize = 4 + 4 + 8 + 4;

/// One task's part of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) task_dir: String,
    /// `(grid index, marker value)` in release order.
    pub(crate) records: Vec<(u64, u8)>,
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

    /// Writes a batch and syncs it.
    pub(crate) fn write<'a>(
        &mut self,
        sections: impl Iterator<Item = (&'a str, &'a [u64])>,
    ) -> Result<(), JournalError> {
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&[0u8; 12]);
        for (name, records) in sections {
            if records.is_empty() {
                continue;
            }
            buf.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_le_bytes());
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(&(records.len() as u64).to_le_bytes());
            for r in records {
                buf.extend_from_slice(&r.to_le_bytes());
            }
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
    if bytes.len() < HEADER || &bytes[..4] != MAGIC || bytes[4..8] != VERSION.to_le_bytes() {
        return Ok(None);
    }
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
    let sections = parse(payload).ok_or("its batch has a valid checksum but cannot be parsed")?;
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
fn parse(mut p: &[u8]) -> Option<Vec<Section>> {
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
        out.push(Section {
            task_dir: name,
            records,
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
                    records: vec![(5, 1), (7, 2)]
                },
                Section {
                    task_dir: "b%2F".into(),
                    records: vec![(1 << 40, 1)]
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
        bytes.extend_from_slice(&VERSION.to_le_bytes());
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
}
