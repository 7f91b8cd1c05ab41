//! Files of the connected-components tasks: the merge table, written atomically and checked on
//! reading (the label pairs travel as block outputs).
//!
//! Format: an 8-byte magic, a `u64` entry count, the entries as `(u64, u64)` little endian,
//! then the CRC-32 of everything before it (`u32` little endian).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) const TABLE_MAGIC: &[u8; 8] = b"BWCCMT01";

fn invalid(path: &Path, message: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {message}", path.display()),
    )
}

/// The bytes of a file of `entries`.
pub(crate) fn encode(magic: &[u8; 8], entries: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 + entries.len() * 16 + 4);
    out.extend_from_slice(magic);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for &(a, b) in entries {
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = bytes.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

/// The entries of a file's bytes (`path` is for messages).
pub(crate) fn decode(
    path: &Path,
    magic: &[u8; 8],
    bytes: &[u8],
) -> Result<Vec<(u64, u64)>, std::io::Error> {
    if bytes.len() < 20 || &bytes[..8] != magic {
        return Err(invalid(
            path,
            format!(
                "not a blockwise {} file (bad magic or too short)",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let body = bytes.len() - 4;
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[body..]);
    if crc32fast::hash(&bytes[..body]) != u32::from_le_bytes(crc) {
        return Err(invalid(path, "checksum mismatch (damaged file)".into()));
    }
    let count = u64_at(bytes, 8);
    let expected = count.checked_mul(16).and_then(|n| n.checked_add(16));
    if expected != Some(body as u64) {
        return Err(invalid(
            path,
            format!("{count} entries announced, {} bytes of entries", body - 16),
        ));
    }
    Ok((0..count as usize)
        .map(|i| (u64_at(bytes, 16 + 16 * i), u64_at(bytes, 24 + 16 * i)))
        .collect())
}

/// Reads and decodes a file.
pub(crate) fn read(path: &Path, magic: &[u8; 8]) -> Result<Vec<(u64, u64)>, std::io::Error> {
    let bytes = std::fs::read(path)?;
    decode(path, magic, &bytes)
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a temporary file of its own (per process and call) in
/// the same directory, synced, renamed over `path`, and the directory synced. Readers see the
/// old or the new file, never a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Make the rename durable; not every file system can sync a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let p = Path::new("x");
        let entries = vec![(1u64, 2u64), (u64::MAX, 0)];
        let bytes = encode(TABLE_MAGIC, &entries);
        assert_eq!(decode(p, TABLE_MAGIC, &bytes).unwrap(), entries);
        assert!(decode(p, b"BWCCXX01", &bytes).is_err()); // another kind of file
        for cut in [0, 5, 19, bytes.len() - 1] {
            assert!(decode(p, TABLE_MAGIC, &bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[17] ^= 1;
        assert!(decode(p, TABLE_MAGIC, &flipped).is_err());
        assert_eq!(
            decode(p, TABLE_MAGIC, &encode(TABLE_MAGIC, &[])).unwrap(),
            vec![]
        );
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("f.bin");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
