//! A zarr filesystem store whose writes are atomic for readers in other processes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zarrs::filesystem::FilesystemStore;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytes, MaybeBytesIterator, OffsetBytesIterator,
    ReadableStorageTraits, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix,
    WritableStorageTraits,
};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// zarrs' [`FilesystemStore`] with atomic writes: a value is written to a temporary file in the
/// same directory and renamed over the target, so a reader in another process sees the old or
/// the new value, never a truncated one (zarrs' own store rewrites files in place).
///
/// Partial writes are done as read, modify, write-and-rename of the whole value. Values are not
/// fsynced: the rename makes them atomic for concurrent readers, not durable across a power loss.
#[derive(Debug)]
pub struct AtomicFilesystemStore {
    inner: FilesystemStore,
    base: PathBuf,
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
        let inner = FilesystemStore::new(&base).map_err(|e| StorageError::Other(e.to_string()))?;
        Ok(AtomicFilesystemStore { inner, base })
    }

    fn path_of(&self, key: &StoreKey) -> PathBuf {
        self.inner.key_to_fspath(key)
    }

    fn write_atomic(&self, key: &StoreKey, value: &[u8]) -> Result<(), StorageError> {
        let target = self.path_of(key);
        let dir = target
            .parent()
            .map_or_else(|| self.base.clone(), Path::to_path_buf);
        std::fs::create_dir_all(&dir)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.blockwise-tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
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
        self.inner.list()
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.inner.list_prefix(prefix)
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.inner.list_dir(prefix)
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.inner.size_prefix(prefix)
    }
}
