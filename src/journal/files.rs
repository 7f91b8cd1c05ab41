//! Opening the files of a run directory safely, and checking free space.
//!
//! Every file of a run directory is opened through [`open_regular`]: its type is checked
//! before it is opened (a FIFO, socket, device or directory where a file is expected is
//! [`JournalError::Corrupt`] naming the file and what it is), it is opened with `O_NONBLOCK`
//! (so a FIFO swapped in after the check cannot make `open` wait for a writer or reader) and
//! `O_NOCTTY`, and the opened file is checked again with `fstat`. Symbolic links are
//! followed: a link to a regular file is used like the file, a link to anything else is
//! refused like that thing.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use super::{JournalError, io};

/// The largest JSON file of a run directory that is read (`layout.json`, `zarr.json`,
/// `run.json`); real ones are a few hundred bytes.
pub(crate) const MAX_JSON: u64 = 16 << 20;

/// What a file is, for an error message.
pub(crate) fn kind(ft: fs::FileType) -> &'static str {
    if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO (named pipe)"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_symlink() {
        "symbolic link"
    } else {
        "file of unknown type"
    }
}

fn not_regular(path: &Path, ft: fs::FileType) -> JournalError {
    JournalError::Corrupt {
        path: path.to_owned(),
        reason: format!("it is a {}, not a regular file", kind(ft)),
    }
}

/// Opens a file of the run directory with `options`, refusing anything but a regular file
/// (see the module docs). A missing file is created if `options` say so, else it is an
/// [`JournalError::Io`] error with `action`.
pub(crate) fn open_regular(
    path: &Path,
    options: &OpenOptions,
    action: &str,
) -> Result<File, JournalError> {
    match fs::metadata(path) {
        Ok(m) if !m.is_file() => return Err(not_regular(path, m.file_type())),
        Ok(_) => {}
        // Missing (or a dangling link): `open` creates it or reports it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspect", path, e)),
    }
    let mut options = options.clone();
    options.custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits());
    let file = options.open(path).map_err(|e| io(action, path, e))?;
    let m = file.metadata().map_err(|e| io("inspect", path, e))?;
    if !m.is_file() {
        return Err(not_regular(path, m.file_type()));
    }
    // Regular files ignore O_NONBLOCK on Linux; clear it anyway so no file system sees it.
    let flags = fcntl(&file, FcntlArg::F_GETFL).map_err(|e| io("inspect", path, e.into()))?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(&file, FcntlArg::F_SETFL(flags)).map_err(|e| io("inspect", path, e.into()))?;
    Ok(file)
}

/// Opens a file of the run directory for reading (see [`open_regular`]).
pub(crate) fn open_read(path: &Path) -> Result<File, JournalError> {
    open_regular(path, OpenOptions::new().read(true), "open")
}

/// Reads a small file of the run directory whole, refusing anything but a regular file and
/// anything longer than `limit` bytes.
pub(crate) fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>, JournalError> {
    let file = open_read(path)?;
    let mut out = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| io("read", path, e))?;
    if out.len() as u64 > limit {
        return Err(JournalError::Corrupt {
            path: path.to_owned(),
            reason: format!("it is longer than {limit} bytes, the most such a file can hold"),
        });
    }
    Ok(out)
}

/// Whether something (of any type, a dangling link included) is at `path`.
pub(crate) fn exists(path: &Path) -> Result<bool, JournalError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("inspect", path, e)),
    }
}

/// Syncs a directory, so that the entries created or renamed in it are durable; not every
/// file system supports it, so failures are ignored.
pub(crate) fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(path) {
        let _ = d.sync_all();
    }
}

/// Bytes available to unprivileged users on the file system holding `path`, and its
/// fragment size (the unit in which space is allocated).
pub(crate) fn free_space(path: &Path) -> Result<(u64, u64), JournalError> {
    let s = nix::sys::statvfs::statvfs(path)
        .map_err(|e| io("check the free space of", path, e.into()))?;
    // `c_ulong` and `fsblkcnt_t` are u64 here, narrower on some targets.
    #[allow(clippy::useless_conversion)]
    let (unit, blocks) = (
        u64::from(s.fragment_size()).max(1),
        u64::from(s.blocks_available()),
    );
    Ok((blocks.saturating_mul(unit), unit))
}

/// Checks that `needed` bytes are free on the file system of `path` (a directory that
/// exists), before anything is created there.
pub(crate) fn check_space(path: &Path, needed: u64) -> Result<(), JournalError> {
    let (available, _) = free_space(path)?;
    if needed > available {
        return Err(JournalError::NoSpace {
            path: path.to_owned(),
            needed,
            available,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn space_is_checked_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let (available, unit) = free_space(dir.path()).unwrap();
        assert!(unit > 0);
        check_space(dir.path(), 0).unwrap();
        let needed = available + 1;
        match check_space(dir.path(), needed) {
            Err(JournalError::NoSpace {
                path,
                needed: n,
                available: a,
            }) => {
                assert_eq!(path, dir.path());
                assert_eq!(n, needed);
                // Other processes share the file system: its free space moves a little.
                assert!(a.abs_diff(available) < 1 << 30, "{a} vs {available}");
            }
            other => panic!("expected NoSpace, got {other:?}"),
        }
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert_eq!(read_small(&file, 10).unwrap(), b"x");
        let e = read_small(&file, 0).unwrap_err();
        assert!(e.to_string().contains("longer than 0 bytes"), "{e}");
        let e = open_read(dir.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains("it is a directory, not a regular file"),
            "{e}"
        );
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for options in [
            OpenOptions::new().read(true).clone(),
            OpenOptions::new().write(true).clone(),
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .clone(),
        ] {
            let e = open_regular(&fifo, &options, "open").unwrap_err();
            assert!(
                e.to_string()
                    .contains("it is a FIFO (named pipe), not a regular file"),
                "{e}"
            );
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let e = open_read(&link).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        std::os::unix::fs::symlink(&file, dir.path().join("ok")).unwrap();
        assert_eq!(read_small(&dir.path().join("ok"), 10).unwrap(), b"x");
        let e = open_read(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
    }
}
