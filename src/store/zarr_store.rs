//! A zarr filesystem store whose writes are atomic for readers in other processes, with
//! per-key locks for read-modify-write and removal of stale temporary files of dead writers.

use std::collections::HashSet;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rustc_hash::{FxBuildHasher, FxHashSet};
use zarrs::filesystem::FilesystemStore;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytes, MaybeBytesIterator, OffsetBytesIterator,
    ReadableStorageTraits, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix,
    WritableStorageTraits,
};

use crate::util::{self, lock};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The part of temporary file names between the value's name and the writer's id.
const TMP_MARK: &str = ".blockwise-tmp-";
/// The suffix of lock file names.
const LOCK_SUFFIX: &str = ".blockwise-lock";
/// Temporaries named without a host (older versions) are removed only when at least this old.
const HOSTLESS_TMP_AGE: Duration = Duration::from_secs(3600);

/// This host's name as it appears in temporary file names: bytes other than ASCII letters,
/// digits, `.`, `_` and `-` become `_`.
static HOST: LazyLock<String> = LazyLock::new(|| {
    let name = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "unknown-host".to_owned()
    } else {
        name
    }
});

/// zarrs' [`FilesystemStore`] with atomic writes: a value is written to a temporary file in the
/// same directory and renamed over the target, so a reader in another process sees the old or
/// the new value, never a truncated one (zarrs' own store rewrites files in place).
///
/// Partial writes are done as read, modify, write-and-rename of the whole value. Values are not
/// fsynced: the rename makes them atomic for concurrent readers, not durable across a power loss.
///
/// A read-modify-write of a value by several writers (zarrs reading a chunk, updating part of
/// it and writing it back, or [`set_partial_many`](WritableStorageTraits::set_partial_many))
/// needs [`lock_key`](Self::lock_key) around it: [`ZarrArray::write`] takes it for every chunk
/// it writes in part.
///
/// Files of its own that the store puts next to values, all hidden (leading `.`) and left out
/// of [`list`](ListableStorageTraits::list), `list_prefix` and `list_dir`:
///
/// - `.{name}.blockwise-tmp-{host}-{pid}-{n}`: a value being written, renamed over `{name}`
///   when complete. A writer killed mid-write leaves it behind.
/// - `.{name}.blockwise-lock`: the advisory lock of a read-modify-write of `{name}`, which
///   exists while the lock is held and is removed by its holder.
///
/// The first write (or lock) of a store into a directory removes the stale ones there: the
/// temporaries of this host whose writer pid is dead (`kill(pid, 0)` fails with `ESRCH`), and
/// the lock files nobody holds. Temporaries of other hosts are left to their host; those of
/// older blockwise versions, named `.{name}.blockwise-tmp-{pid}-{n}` without the host, are
/// removed when the pid is dead here and the file is more than an hour old. This is done once
/// per directory and store, so its cost is one directory listing per directory written, not a
/// walk of the whole array.
///
/// [`ZarrArray::write`]: super::ZarrArray::write
#[derive(Debug)]
pub struct AtomicFilesystemStore {
    inner: FilesystemStore,
    base: PathBuf,
    /// Hashes of the directories whose stale files were removed.
    swept: Mutex<FxHashSet<u64>>,
    /// Whether the "no file locks here" warning was logged.
    warned_no_lock: AtomicBool,
}

impl AtomicFilesystemStore {
    /// Opens (creating the directory if needed) a store rooted at `base`.
    ///
    /// # Errors
    ///
    /// If the directory cannot be created or opened.
    pub fn new(base: impl AsRef<Path>) -> Result<Self, StorageError> {
        let base = base.as_ref().to_path_buf();
        std::fs::create_dir_all(&base)?;
        // Canonical, so that two stores of one directory share the in-process locks.
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        let inner = FilesystemStore::new(&base).map_err(|e| StorageError::Other(e.to_string()))?;
        Ok(AtomicFilesystemStore {
            inner,
            base,
            swept: Mutex::new(FxHashSet::default()),
            warned_no_lock: AtomicBool::new(false),
        })
    }

    fn path_of(&self, key: &StoreKey) -> PathBuf {
        self.inner.key_to_fspath(key)
    }

    fn dir_of(&self, target: &Path) -> PathBuf {
        target
            .parent()
            .map_or_else(|| self.base.clone(), Path::to_path_buf)
    }

    /// Locks `key` against other writers of it in this process (a mutex per key) and in other
    /// processes (an advisory `flock` on `.{name}.blockwise-lock` next to the value), until the
    /// returned guard is dropped. Hold it around a read-modify-write of the value.
    ///
    /// Locks of different keys are independent. The file lock holds among processes of one
    /// machine; on network file systems `flock` may lock only locally or not at all. Where the
    /// file system does not support locks, the lock is taken in this process only and a warning
    /// is logged once.
    ///
    /// # Errors
    ///
    /// If the lock file cannot be created or locked.
    pub fn lock_key(&self, key: &StoreKey) -> Result<KeyLock, StorageError> {
        let target = self.path_of(key);
        let dir = self.dir_of(&target);
        std::fs::create_dir_all(&dir)?;
        self.sweep_once(&dir);
        let path = lock_path(&target);
        let local = LocalLock::acquire(path.clone());
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            match file.lock() {
                Ok(()) => {}
                Err(e) if lock_unsupported(&e) => {
                    if !self.warned_no_lock.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "{}: the file system does not support file locks ({e}): partial \
                             chunk writes are safe among threads of this process only",
                            self.base.display()
                        );
                    }
                    drop(file);
                    let _ = std::fs::remove_file(&path);
                    return Ok(KeyLock {
                        file: None,
                        path,
                        _local: local,
                    });
                }
                Err(e) => return Err(e.into()),
            }
            // The previous holder removes the file before unlocking it: lock the file that is
            // at the path now, not one removed while we waited.
            if same_file(&file, &path) {
                return Ok(KeyLock {
                    file: Some(file),
                    path,
                    _local: local,
                });
            }
        }
    }

    /// Removes stale temporary and lock files in `dir`, once per directory and store.
    fn sweep_once(&self, dir: &Path) {
        let first = lock(&self.swept).insert(FxBuildHasher.hash_one(dir));
        if first {
            sweep_dir(dir);
        }
    }

    /// Removes stale temporary and lock files in `dir` (relative to the store's root), once per
    /// store: the array directory when an array is opened.
    pub(crate) fn sweep_prefix_dir(&self, dir: &str) {
        let dir = self.base.join(dir.trim_matches('/'));
        self.sweep_once(&dir);
    }

    fn write_atomic(&self, key: &StoreKey, value: &[u8]) -> Result<(), StorageError> {
        let target = self.path_of(key);
        let dir = self.dir_of(&target);
        std::fs::create_dir_all(&dir)?;
        self.sweep_once(&dir);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}{TMP_MARK}{}-{}-{}",
            *HOST,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(value)?;
            drop(f);
            std::fs::rename(&tmp, &target)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(StorageError::from)
    }
}

/// A held lock on one key of an [`AtomicFilesystemStore`], from
/// [`lock_key`](AtomicFilesystemStore::lock_key); dropping it unlocks.
#[derive(Debug)]
#[must_use = "the key is unlocked when the guard is dropped"]
pub struct KeyLock {
    /// The locked lock file (`None` where the file system has no locks).
    file: Option<File>,
    path: PathBuf,
    _local: LocalLock,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // Remove the lock file while still holding it (waiters then find it gone and retry), so
        // that no lock file stays next to the chunk; then `file` unlocks and `_local` releases.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `.{name}.blockwise-lock` next to `target`.
fn lock_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}{LOCK_SUFFIX}"))
}

/// Whether `file` is the file at `path` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Lock errors meaning "this file system has no locks" (e.g. NFS mounted with `nolock`).
fn lock_unsupported(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error().map(nix::errno::Errno::from_raw),
            Some(
                nix::errno::Errno::ENOLCK
                    | nix::errno::Errno::EOPNOTSUPP
                    | nix::errno::Errno::ENOSYS
            )
        )
}

/// The in-process half of a key lock: a set of held lock paths, sharded so that unrelated keys
/// rarely share a mutex.
struct Shard {
    held: Mutex<HashSet<PathBuf, FxBuildHasher>>,
    freed: Condvar,
}

const SHARDS: usize = 32;

static LOCAL_LOCKS: [Shard; SHARDS] = [const {
    Shard {
        held: Mutex::new(HashSet::with_hasher(FxBuildHasher)),
        freed: Condvar::new(),
    }
}; SHARDS];

fn shard_of(path: &Path) -> &'static Shard {
    &LOCAL_LOCKS[(FxBuildHasher.hash_one(path) % SHARDS as u64) as usize]
}

/// A held in-process lock on a lock path.
#[derive(Debug)]
struct LocalLock {
    path: PathBuf,
}

impl LocalLock {
    fn held(shard: &Shard) -> MutexGuard<'_, HashSet<PathBuf, FxBuildHasher>> {
        lock(&shard.held)
    }

    /// Waits until no thread of this process holds `path`, then holds it.
    fn acquire(path: PathBuf) -> LocalLock {
        let shard = shard_of(&path);
        let mut held = Self::held(shard);
        while held.contains(&path) {
            held = util::wait(&shard.freed, held);
        }
        held.insert(path.clone());
        LocalLock { path }
    }

    /// Holds `path` if no thread of this process does.
    fn try_acquire(path: &Path) -> Option<LocalLock> {
        let mut held = Self::held(shard_of(path));
        if held.contains(path) {
            return None;
        }
        held.insert(path.to_owned());
        Some(LocalLock {
            path: path.to_owned(),
        })
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        let shard = shard_of(&self.path);
        Self::held(shard).remove(&self.path);
        shard.freed.notify_all();
    }
}

/// The writer of a temporary file, from its name.
#[derive(Debug, PartialEq, Eq)]
struct TmpWriter<'a> {
    /// `None` for names of older versions, which had no host.
    host: Option<&'a str>,
    pid: i32,
}

/// Parses `.{name}.blockwise-tmp-{host}-{pid}-{n}` (or `...-tmp-{pid}-{n}`).
fn parse_tmp(file_name: &str) -> Option<TmpWriter<'_>> {
    if !file_name.starts_with('.') {
        return None;
    }
    let at = file_name.rfind(TMP_MARK)?;
    let id = &file_name[at + TMP_MARK.len()..];
    let mut parts = id.rsplitn(3, '-');
    let n = parts.next()?;
    let pid = parts.next()?;
    let host = parts.next();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid: i32 = pid.parse().ok().filter(|&p| p > 0)?;
    Some(TmpWriter { host, pid })
}

/// Whether a process `pid` exists on this host (`kill(pid, 0)`; only ESRCH means it does not).
fn alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Whether a file name is one of the store's own (temporary or lock file).
pub(crate) fn is_internal_name(file_name: &str) -> bool {
    file_name.starts_with('.')
        && (file_name.ends_with(LOCK_SUFFIX) || parse_tmp(file_name).is_some())
}

/// Removes the temporary files of dead writers on this host and unheld lock files in `dir`.
/// Best effort: errors (a directory that does not exist yet, a read-only file system) are
/// ignored.
fn sweep_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut removed = 0usize;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if !name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if let Some(writer) = parse_tmp(name) {
            let stale = match writer.host {
                Some(host) => host == HOST.as_str() && !alive(writer.pid),
                None => {
                    !alive(writer.pid)
                        && entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| SystemTime::now().duration_since(t).ok())
                            .is_some_and(|age| age >= HOSTLESS_TMP_AGE)
                }
            };
            if stale && std::fs::remove_file(&path).is_ok() {
                tracing::debug!("removed stale temporary file {}", path.display());
                removed += 1;
            }
        } else if name.ends_with(LOCK_SUFFIX) && remove_unheld_lock(&path) {
            tracing::debug!("removed stale lock file {}", path.display());
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            "removed {removed} stale temporary or lock files of dead writers in {}",
            dir.display()
        );
    }
}

/// Removes a lock file that nobody holds, following the holders' protocol (lock, check it is
/// still the file at the path, remove, unlock).
fn remove_unheld_lock(path: &Path) -> bool {
    let Some(_local) = LocalLock::try_acquire(path) else {
        return false;
    };
    let Ok(file) = File::open(path) else {
        return false;
    };
    if file.try_lock().is_err() || !same_file(&file, path) {
        return false;
    }
    std::fs::remove_file(path).is_ok()
}

fn without_internal(keys: StoreKeys) -> StoreKeys {
    keys.into_iter()
        .filter(|k| !is_internal_name(k.as_str().rsplit('/').next().unwrap_or("")))
        .collect()
}

impl ReadableStorageTraits for AtomicFilesystemStore {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.inner.get_partial_many(key, byte_ranges)
    }

    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, StorageError> {
        self.inner.get(key)
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.inner.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

impl WritableStorageTraits for AtomicFilesystemStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.write_atomic(key, &value)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        let mut data: Vec<u8> = self.inner.get(key)?.map(|b| b.to_vec()).unwrap_or_default();
        for (offset, bytes) in offset_values {
            let start = usize::try_from(offset).map_err(|e| StorageError::Other(e.to_string()))?;
            let end = start + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(&bytes);
        }
        self.write_atomic(key, &data)
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.inner.erase(key)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.inner.erase_prefix(prefix)
    }

    fn supports_set_partial(&self) -> bool {
        false
    }
}

impl ListableStorageTraits for AtomicFilesystemStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        Ok(without_internal(self.inner.list()?))
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        Ok(without_internal(self.inner.list_prefix(prefix)?))
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        let listed = self.inner.list_dir(prefix)?;
        Ok(StoreKeysPrefixes::new(
            without_internal(listed.keys().clone()),
            listed.prefixes().clone(),
        ))
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        let mut size = 0;
        for key in self.list_prefix(prefix)? {
            size += self.size_key(&key)?.unwrap_or(0);
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_parse_with_and_without_host() {
        assert_eq!(
            parse_tmp(".0.blockwise-tmp-node-12.cluster-4242-7"),
            Some(TmpWriter {
                host: Some("node-12.cluster"),
                pid: 4242
            })
        );
        assert_eq!(
            parse_tmp(".zarr.json.blockwise-tmp-4242-7"),
            Some(TmpWriter {
                host: None,
                pid: 4242
            })
        );
        assert_eq!(parse_tmp("0.blockwise-tmp-4242-7"), None);
        assert_eq!(parse_tmp(".0.blockwise-tmp-h-0-7"), None);
        assert_eq!(parse_tmp(".0.blockwise-tmp-h-12-x"), None);
        assert!(is_internal_name(".3.blockwise-lock"));
        assert!(!is_internal_name("zarr.json"));
        assert!(!is_internal_name(".zarray"));
    }
}
