//! Zarr arrays (v2, v3, sharded v3) in world units, through `zarrs`.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};
use serde_json::{Value, json};

use zarrs::array::chunk_cache::{ChunkCache, ChunkCacheLruSizeLimit, ChunkCacheTypeDecoded};
use zarrs::array::{
    Array, ArrayBytes, ArrayMetadata, ArrayMetadataV2, ArrayMetadataV3, CodecOptions,
};
use zarrs::storage::ReadableStorageTraits;
use zarrs::storage::{ReadableWritableListableStorageTraits, StoreKey, WritableStorageTraits};

use super::{
    ARRAY_ID_KEY, ArraySpec, ChunkGrid, DataType, FillText, Pad, RoiArray, Scalar, ShapeText,
    StoreError, WorldMeta, ZarrFormat,
};
use crate::geometry::{Coordinate, Roi};

use super::zarr_store::AtomicFilesystemStore;

type Store = dyn ReadableWritableListableStorageTraits;
type ReadCache = ChunkCacheLruSizeLimit<ChunkCacheTypeDecoded>;

/// A zarr array in world units (funlib.persistence's `Array`).
///
/// ```
/// use blockwise::store::{ArraySpec, DataType, ZarrArray};
/// use blockwise::Roi;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("blockwise-doc-{}", std::process::id()));
/// // 40×40 voxels of 4×4 world units, starting at (8, 0).
/// let spec = ArraySpec::new(Roi::new([8, 0], [160, 160]), [4, 4], DataType::U8, vec![10, 10]);
/// let array = ZarrArray::create(&dir, "raw", &spec)?;
/// let block = ndarray::ArrayD::from_elem(ndarray::IxDyn(&[10, 10]), 7u8);
/// array.write(&Roi::new([48, 40], [40, 40]), block.view())?;
///
/// let reopened = ZarrArray::open(&dir, "raw")?;
/// assert_eq!(reopened.roi(), Roi::new([8, 0], [160, 160]));
/// let back = reopened.read::<u8>(&Roi::new([48, 40], [4, 8]))?;
/// assert_eq!(back.shape(), &[1, 2]);
/// assert!(back.iter().all(|&v| v == 7));
/// // Outside the array: the fill value.
/// let padded = reopened.read_with_fill::<u8>(&Roi::new([0, 0], [8, 4]), 9)?;
/// assert_eq!(padded.as_slice(), Some(&[9u8, 9][..]));
/// std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ZarrArray {
    inner: Arc<Inner>,
}

/// What a [`ZarrArray`] shares with its clones.
struct Inner {
    array: Array<Store>,
    /// The store of `array`, for per-chunk locks.
    atomic: Arc<AtomicFilesystemStore>,
    cache: Option<Arc<ReadCache>>,
    name: String,
    store: std::path::PathBuf,
    meta: WorldMeta,
    data_type: DataType,
    write_chunk: Vec<u64>,
    layout: Layout,
    array_id: Option<String>,
}

/// How an array is stored, from its metadata, for [`ZarrArray::prepare`].
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    format: ZarrFormat,
    /// The (inner) chunk shape.
    chunk: Vec<u64>,
    /// The shard shape, if sharded.
    shard: Option<Vec<u64>>,
    /// The fill value, if it is a number.
    fill: Option<f64>,
}

impl Layout {
    fn of(meta: &Value, data_type: DataType) -> Layout {
        let shape = |v: Option<&Value>| -> Vec<u64> {
            v.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default()
        };
        let fill = match meta.get("fill_value") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(t)) => match t.as_str() {
                "NaN" => Some(f64::NAN),
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                hex => hex.strip_prefix("0x").and_then(|h| match data_type {
                    DataType::F32 => u32::from_str_radix(h, 16)
                        .ok()
                        .map(|b| f64::from(f32::from_bits(b))),
                    DataType::F64 => u64::from_str_radix(h, 16).ok().map(f64::from_bits),
                    _ => None,
                }),
            },
            _ => None,
        };
        if meta.get("zarr_format").and_then(Value::as_u64) == Some(2) {
            return Layout {
                format: ZarrFormat::V2,
                chunk: shape(meta.get("chunks")),
                shard: None,
                fill,
            };
        }
        let grid = shape(meta.pointer("/chunk_grid/configuration/chunk_shape"));
        let sharding = meta
            .pointer("/codecs/0")
            .filter(|c| c.get("name").and_then(Value::as_str) == Some("sharding_indexed"));
        let (chunk, shard) = match sharding {
            Some(c) => (shape(c.pointer("/configuration/chunk_shape")), Some(grid)),
            None => (grid, None),
        };
        Layout {
            format: ZarrFormat::V3,
            chunk,
            shard,
            fill,
        }
    }
}

impl std::fmt::Debug for ZarrArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrArray")
            .field("name", &self.inner.name)
            .field("roi", &self.roi())
            .field("voxel_size", &self.inner.meta.voxel_size)
            .field("data_type", &self.inner.data_type)
            .field("chunk", &self.inner.write_chunk)
            .field("array_id", &self.inner.array_id)
            .finish_non_exhaustive()
    }
}

fn node_path(dataset: &str) -> String {
    let trimmed = dataset.trim_matches('/');
    format!("/{trimmed}")
}

/// The dataset name, checked ([`dataset_problem`](super::dataset_problem)).
fn checked_dataset(path: &Path, dataset: &str) -> Result<(), StoreError> {
    match super::dataset_problem(dataset) {
        None => Ok(()),
        Some(problem) => Err(StoreError::Open {
            path: format!("{}{}", path.display(), node_path(dataset)),
            message: format!("dataset name {dataset:?} {problem}"),
        }),
    }
}

fn open_atomic(path: &Path) -> Result<Arc<AtomicFilesystemStore>, StoreError> {
    let store = AtomicFilesystemStore::new(path).map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(Arc::new(store))
}

impl ZarrArray {
    /// Opens the array `dataset` (e.g. `"raw"`, or `""` for an array at the root) of the zarr
    /// store at `path`.
    ///
    /// The array is open for reading and writing. Opening it removes the temporary files that
    /// writers on this host killed mid-write left in the array's directory (its metadata), and
    /// the array's first write into each chunk directory removes those left there (a directory
    /// listing per chunk directory written, once, rather than a walk of every chunk at open).
    /// Temporaries of live processes and of other hosts are kept.
    ///
    /// # Errors
    ///
    /// If there is no readable array there, its data type is not supported, or its
    /// funlib.persistence attributes are malformed.
    pub fn open(path: impl AsRef<Path>, dataset: &str) -> Result<ZarrArray, StoreError> {
        let path = path.as_ref();
        checked_dataset(path, dataset)?;
        let name = format!("{}{}", path.display(), node_path(dataset));
        if !path.is_dir() {
            return Err(StoreError::Open {
                path: name,
                message: "no such zarr store (not a directory)".into(),
            });
        }
        let atomic = open_atomic(path)?;
        let store: Arc<Store> = atomic.clone();
        let array = Array::open(store, &node_path(dataset)).map_err(|e| StoreError::Open {
            path: name.clone(),
            message: e.to_string(),
        })?;
        atomic.sweep_prefix_dir(&node_path(dataset));
        Ok(ZarrArray {
            inner: Arc::new(Inner::from_array(array, name, path, atomic)?),
        })
    }

    /// Opens an array for reading through an LRU cache of decoded chunks holding at most
    /// `cache_bytes`: blocks with context read each chunk several times (a 64³ block with 8
    /// voxels of context touches 27 chunks), and the cache decodes it once. The array is then
    /// read-only: [`write`](Self::write) returns an error, since cached chunks would go stale.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_cached(
        path: impl AsRef<Path>,
        dataset: &str,
        cache_bytes: u64,
    ) -> Result<ZarrArray, StoreError> {
        let path = path.as_ref();
        let a = Self::open(path, dataset)?;
        let readable: Arc<dyn ReadableStorageTraits> = open_atomic(path)?;
        let reader = Array::open(readable, &node_path(dataset)).map_err(|e| a.backend(&e))?;
        let cache = Some(Arc::new(ChunkCacheLruSizeLimit::new(
            Arc::new(reader),
            cache_bytes,
        )));
        // `a` was just made: nothing else holds its internals.
        let mut inner = Arc::try_unwrap(a.inner).map_err(|_| StoreError::Open {
            path: path.display().to_string(),
            message: "the array is shared while opening it".into(),
        })?;
        inner.cache = cache;
        Ok(ZarrArray {
            inner: Arc::new(inner),
        })
    }

    /// Opens level `level` (0 the finest) of the OME-Zarr image at `path`, with the voxel size,
    /// offset, axis names and units of its multiscales metadata (NGFF 0.4 or 0.5); shorthand for
    /// [`OmeZarr::open`](super::OmeZarr::open) then [`level`](super::OmeZarr::level).
    ///
    /// # Errors
    ///
    /// As [`OmeZarr::open`](super::OmeZarr::open) and [`OmeZarr::level`](super::OmeZarr::level).
    pub fn open_ome(path: impl AsRef<Path>, level: usize) -> Result<ZarrArray, StoreError> {
        super::OmeZarr::open(path)?.level(level)
    }

    /// This array with other world metadata (from OME-Zarr rather than funlib attributes).
    pub(crate) fn with_world(
        self,
        offset: Coordinate,
        voxel_size: Coordinate,
        axis_names: Vec<String>,
        units: Vec<String>,
    ) -> Result<ZarrArray, StoreError> {
        let dims = self.inner.meta.shape.len();
        if [
            offset.dims(),
            voxel_size.dims(),
            axis_names.len(),
            units.len(),
        ]
        .iter()
        .any(|&n| n != dims)
        {
            return Err(StoreError::Open {
                path: self.inner.name.clone(),
                message: format!(
                    "the array has {dims} dimensions, its OME-Zarr metadata {} axes",
                    axis_names.len()
                ),
            });
        }
        let mut inner = Arc::try_unwrap(self.inner).map_err(|a| StoreError::Open {
            path: a.name.clone(),
            message: "the array is shared while opening it".into(),
        })?;
        inner.meta.offset = offset;
        inner.meta.voxel_size = voxel_size;
        inner.meta.axis_names = axis_names;
        inner.meta.units = units;
        Ok(ZarrArray {
            inner: Arc::new(inner),
        })
    }

    fn retrieve<T: Scalar>(
        &self,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<ArrayD<T>, StoreError> {
        let ranges = ranges.to_vec();
        match &self.inner.cache {
            Some(cache) => {
                let wanted: Vec<Range<i64>> = ranges
                    .iter()
                    .map(|r| {
                        Ok(i64::try_from(r.start).map_err(|e| self.backend(&e))?
                            ..i64::try_from(r.end).map_err(|e| self.backend(&e))?)
                    })
                    .collect::<Result<_, StoreError>>()?;
                self.retrieve_cached(cache, &wanted, T::default())
            }
            None => self
                .inner
                .array
                .retrieve_array_subset::<ArrayD<T>>(&ranges)
                .map_err(|e| self.backend(&e)),
        }
    }

    /// The voxels `wanted` (any ranges; `fill` outside the array) through the decoded-chunk
    /// cache, in one allocation: each chunk the region overlaps is taken from the cache once
    /// and its overlap copied row by row into the result
    /// ([`copy_chunk_overlap`](super::zarr_assemble::copy_chunk_overlap)). Chunks the store
    /// does not hold come from the cache as the array's fill value.
    fn retrieve_cached<T: Scalar>(
        &self,
        cache: &ReadCache,
        wanted: &[Range<i64>],
        fill: T,
    ) -> Result<ArrayD<T>, StoreError> {
        let array = &self.inner.array;
        if wanted.len() != array.dimensionality() {
            return Err(self.backend(&format!(
                "a read of {} dimensions from an array of {}",
                wanted.len(),
                array.dimensionality()
            )));
        }
        let too_large = || self.backend(&"the read region is too large to address");
        let shape: Vec<usize> = wanted
            .iter()
            .map(|r| usize::try_from(r.end.saturating_sub(r.start)).map_err(|_| too_large()))
            .collect::<Result<_, _>>()?;
        let len = shape
            .iter()
            .try_fold(1usize, |a, &s| a.checked_mul(s))
            .ok_or_else(too_large)?;
        let mut out = vec![fill; len];
        // The part inside the array, and all coordinates shifted by `-min(start, 0)` so that
        // they are non-negative.
        let mut inside = Vec::with_capacity(wanted.len());
        let mut shifted = Vec::with_capacity(wanted.len());
        let mut shift = Vec::with_capacity(wanted.len());
        let mut end = Vec::with_capacity(wanted.len());
        for (r, &n) in wanted.iter().zip(array.shape()) {
            let s = -i128::from(r.start.min(0));
            let to_u64 = |v: i128| u64::try_from(v).map_err(|_| too_large());
            let (lo, hi) = (i128::from(r.start), i128::from(r.end));
            inside.push(to_u64(lo.clamp(0, n.into()))?..to_u64(hi.clamp(0, n.into()))?);
            shifted.push(to_u64(lo + s)?..to_u64(hi.max(lo) + s)?);
            shift.push(to_u64(s)?);
            end.push(to_u64(i128::from(n) + s)?);
        }
        if len > 0 && inside.iter().all(|r| r.start < r.end) {
            let chunks = array
                .chunks_in_array_subset(&inside)
                .map_err(|e| self.backend(&e))?
                .ok_or_else(|| self.backend(&"no chunks found for the read region"))?;
            let options = CodecOptions::default();
            for chunk in &chunks.indices() {
                let subset = array.chunk_subset(&chunk).map_err(|e| self.backend(&e))?;
                let start: Vec<u64> = subset
                    .start()
                    .iter()
                    .zip(&shift)
                    .map(|(&c, &s)| c.checked_add(s).ok_or_else(too_large))
                    .collect::<Result<_, _>>()?;
                let decoded = cache
                    .retrieve_chunk_bytes(&chunk, &options)
                    .map_err(|e| self.backend(&e))?;
                let ArrayBytes::Fixed(bytes) = decoded.as_ref() else {
                    return Err(self.backend(&"a decoded chunk of variable-length elements"));
                };
                super::zarr_assemble::copy_chunk_overlap(
                    &mut out,
                    &shifted,
                    &start,
                    subset.shape(),
                    bytes,
                    &end,
                )
                .map_err(|e| self.backend(&e))?;
            }
        }
        ArrayD::from_shape_vec(shape, out).map_err(|e| self.backend(&e))
    }

    /// Creates the array `dataset` in the zarr store at `path` (created if missing), with the
    /// funlib.persistence attributes and a fresh identity (see [`array_id`](Self::array_id)).
    ///
    /// # Errors
    ///
    /// An invalid spec (misaligned ROI, dims mismatch, zero chunk, shards that are not a
    /// multiple of the chunk or shards in v2), an existing array without `overwrite`, or an
    /// I/O error.
    pub fn create(
        path: impl AsRef<Path>,
        dataset: &str,
        spec: &ArraySpec,
    ) -> Result<ZarrArray, StoreError> {
        let path = path.as_ref();
        checked_dataset(path, dataset)?;
        let node = node_path(dataset);
        let name = format!("{}{node}", path.display());
        let invalid = |message: String| StoreError::Open {
            path: name.clone(),
            message,
        };
        let meta = spec.world_meta().map_err(invalid)?;
        let names = meta.axis_names.clone();
        let shape = meta.shape.clone();

        let atomic = open_atomic(path)?;
        let store: Arc<Store> = atomic.clone();
        let backend = |e: &dyn std::fmt::Display| StoreError::Backend {
            path: name.clone(),
            message: e.to_string(),
        };
        let node_dir = path.join(node.trim_start_matches('/'));
        let exists = node_dir.join("zarr.json").exists() || node_dir.join(".zarray").exists();
        if exists {
            if !spec.overwrite {
                return Err(invalid(
                    "an array already exists there (set `overwrite` to replace it)".into(),
                ));
            }
            std::fs::remove_dir_all(&node_dir).map_err(|e| backend(&e))?;
        }
        write_groups(store.as_ref(), &node, spec.format).map_err(|e| backend(&e))?;

        let fill = if matches!(spec.data_type, DataType::F32 | DataType::F64) {
            // JSON has no NaN or infinities: zarr spells them as strings (v2 and v3).
            match spec.fill_value {
                v if v.is_nan() => json!("NaN"),
                v if v == f64::INFINITY => json!("Infinity"),
                v if v == f64::NEG_INFINITY => json!("-Infinity"),
                v => json!(v),
            }
        } else {
            json!(spec.fill_value as i64)
        };
        let metadata = match spec.format {
            ZarrFormat::V3 => {
                let bytes = json!({"name": "bytes", "configuration": {"endian": "little"}});
                let mut inner = vec![bytes.clone()];
                inner.extend(spec.codec.v3(spec.data_type.size()));
                let (grid_chunk, codecs) = match &spec.shard_shape {
                    None => (spec.chunk_shape.clone(), inner),
                    Some(shard) => (
                        shard.clone(),
                        vec![json!({"name": "sharding_indexed", "configuration": {
                            "chunk_shape": spec.chunk_shape,
                            "codecs": inner,
                            "index_codecs": [bytes, {"name": "crc32c"}],
                            "index_location": "end"}})],
                    ),
                };
                let v = json!({
                    "zarr_format": 3, "node_type": "array", "shape": shape,
                    "data_type": spec.data_type.zarr_v3_name(),
                    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid_chunk}},
                    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                    "fill_value": fill, "codecs": codecs, "dimension_names": names,
                    "attributes": {}});
                let m: ArrayMetadataV3 = serde_json::from_value(v).map_err(|e| backend(&e))?;
                ArrayMetadata::V3(m)
            }
            ZarrFormat::V2 => {
                let v = json!({
                    "zarr_format": 2, "shape": shape, "chunks": spec.chunk_shape,
                    "dtype": spec.data_type.zarr_v2_dtype(), "compressor": spec.codec.v2(),
                    "fill_value": fill, "order": "C", "filters": null, "dimension_separator": "/"});
                let m: ArrayMetadataV2 = serde_json::from_value(v).map_err(|e| backend(&e))?;
                ArrayMetadata::V2(m)
            }
        };
        let mut array =
            Array::new_with_metadata(store, &node, metadata).map_err(|e| backend(&e))?;
        let mut attributes = meta.attributes();
        attributes.insert(ARRAY_ID_KEY.into(), json!(super::new_array_id(&name)?));
        *array.attributes_mut() = attributes;
        array.store_metadata().map_err(|e| backend(&e))?;
        Ok(ZarrArray {
            inner: Arc::new(Inner::from_array(array, name, path, atomic)?),
        })
    }

    /// Creates the array `dataset` in the zarr store at `path` with the same metadata as
    /// `like` (shape, chunks or shards, codecs, data type, fill value, attributes) and its
    /// world metadata (ROI, voxel size, axis names and units, written as funlib attributes
    /// even where `like`'s come from elsewhere, as an OME-Zarr level's do), except its
    /// identity: the new array gets a fresh [`array_id`](Self::array_id).
    ///
    /// # Errors
    ///
    /// An existing array without `overwrite`, or an I/O error.
    pub fn create_like(
        path: impl AsRef<Path>,
        dataset: &str,
        like: &ZarrArray,
        overwrite: bool,
    ) -> Result<ZarrArray, StoreError> {
        let path = path.as_ref();
        checked_dataset(path, dataset)?;
        let node = node_path(dataset);
        let name = format!("{}{node}", path.display());
        let backend = |e: &dyn std::fmt::Display| StoreError::Backend {
            path: name.clone(),
            message: e.to_string(),
        };
        let atomic = open_atomic(path)?;
        let store: Arc<Store> = atomic.clone();
        let node_dir = path.join(node.trim_start_matches('/'));
        if node_dir.join("zarr.json").exists() || node_dir.join(".zarray").exists() {
            if !overwrite {
                return Err(StoreError::Open {
                    path: name,
                    message: "an array already exists there (pass overwrite to replace it)".into(),
                });
            }
            std::fs::remove_dir_all(&node_dir).map_err(|e| backend(&e))?;
        }
        let format = match like.inner.array.metadata() {
            ArrayMetadata::V2(_) => ZarrFormat::V2,
            ArrayMetadata::V3(_) => ZarrFormat::V3,
        };
        write_groups(store.as_ref(), &node, format).map_err(|e| backend(&e))?;
        let mut array = Array::new_with_metadata(store, &node, like.inner.array.metadata().clone())
            .map_err(|e| backend(&e))?;
        // `like`'s world metadata as funlib attributes (it may come from elsewhere, e.g. an
        // OME-Zarr image's multiscales), and a new identity, never `like`'s.
        let attributes = array.attributes_mut();
        attributes.extend(like.inner.meta.attributes());
        attributes.insert(ARRAY_ID_KEY.into(), json!(super::new_array_id(&name)?));
        array.store_metadata().map_err(|e| backend(&e))?;
        Ok(ZarrArray {
            inner: Arc::new(Inner::from_array(array, name, path, atomic)?),
        })
    }

    /// The array's ROI in world units.
    #[must_use]
    pub fn roi(&self) -> Roi {
        self.inner.meta.roi()
    }

    /// The world position of voxel 0.
    #[must_use]
    pub fn offset(&self) -> &Coordinate {
        &self.inner.meta.offset
    }

    /// The size of one voxel in world units.
    #[must_use]
    pub fn voxel_size(&self) -> &Coordinate {
        &self.inner.meta.voxel_size
    }

    /// Axis names.
    #[must_use]
    pub fn axis_names(&self) -> &[String] {
        &self.inner.meta.axis_names
    }

    /// Axis units.
    #[must_use]
    pub fn units(&self) -> &[String] {
        &self.inner.meta.units
    }

    /// Shape in voxels.
    #[must_use]
    pub fn shape(&self) -> &[u64] {
        &self.inner.meta.shape
    }

    /// The element type.
    #[must_use]
    pub fn data_type(&self) -> DataType {
        self.inner.data_type
    }

    /// The zarr format (v2 or v3) the array is stored in.
    #[must_use]
    pub fn zarr_format(&self) -> ZarrFormat {
        self.inner.layout.format
    }

    /// The unit a writer rewrites, in voxels: the chunk shape, or the shard shape if sharded.
    #[must_use]
    pub fn write_chunk_shape(&self) -> &[u64] {
        &self.inner.write_chunk
    }

    /// The write-chunk grid in world units, for [`TaskBuilder::writes`](crate::TaskBuilder::writes).
    #[must_use]
    pub fn chunk_grid(&self) -> ChunkGrid {
        self.inner.meta.chunk_grid(
            &self.inner.name,
            Some(&self.inner.store),
            &self.inner.write_chunk,
            self.array_id(),
        )
    }

    /// The store path and dataset, for messages.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn check_type<T: Scalar>(&self) -> Result<(), StoreError> {
        super::check_type::<T>(&self.inner.name, self.inner.data_type)
    }

    /// The voxel ranges of a ROI inside the array and on its voxel grid.
    fn voxel_ranges_u64(&self, roi: &Roi) -> Result<Vec<Range<u64>>, StoreError> {
        Ok(self
            .inner
            .meta
            .voxel_ranges(&self.inner.name, roi, false)?
            .into_iter()
            .map(|r| r.start as u64..r.end as u64)
            .collect())
    }

    /// The chunks (shards, if sharded) that hold the voxels of `ranges`, as a subset of the
    /// chunk grid.
    fn chunks_of(&self, ranges: &[Range<u64>]) -> Result<zarrs::array::ArraySubset, StoreError> {
        let subset = ranges.to_vec();
        self.inner
            .array
            .chunks_in_array_subset(&subset)
            .map_err(|e| self.backend(&e))?
            .ok_or_else(|| self.backend(&format!("cannot find the chunks of voxels {ranges:?}")))
    }

    fn backend(&self, e: &dyn std::fmt::Display) -> StoreError {
        StoreError::Backend {
            path: self.inner.name.clone(),
            message: e.to_string(),
        }
    }

    /// Reads a world ROI that lies inside the array and on voxel boundaries, as a
    /// [`RoiArray`] of that ROI (address its parts in world units with
    /// [`RoiArray::view_roi`]).
    ///
    /// # Errors
    ///
    /// A misaligned ROI or one outside the array, a `T` that is not the array's data type, or
    /// a read/decode error.
    pub fn read<T: Scalar>(&self, roi: &Roi) -> Result<RoiArray<T>, StoreError> {
        self.check_type::<T>()?;
        let ranges = self.inner.meta.inside_ranges(&self.inner.name, roi)?;
        let data = self.retrieve(&ranges)?;
        self.inner.meta.roi_array(roi, data)
    }

    /// The ROI over all of the array's axes for a ROI of its trailing axes: the leading axes
    /// (channels, time: funlib's channel dimensions, NGFF's order) whole. A task over the
    /// space axes of an OME-Zarr level ([`OmeZarr::space_roi`](super::OmeZarr::space_roi))
    /// reads and writes all channels of its blocks through it;
    /// [`read_spatial`](Self::read_spatial) and [`write_spatial`](Self::write_spatial) do.
    ///
    /// ```
    /// use blockwise::Roi;
    /// use blockwise::store::{ArraySpec, DataType, ZarrArray};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let spec = ArraySpec::new(Roi::new([0, 0, 0], [3, 32, 32]), [1, 4, 4], DataType::U8, vec![1, 4, 4]);
    /// let a = ZarrArray::create(dir.path(), "raw", &spec)?;
    /// assert_eq!(a.spatial_roi(&Roi::new([8, 16], [8, 8]))?, Roi::new([0, 8, 16], [3, 8, 8]));
    /// assert!(a.spatial_roi(&Roi::new([0, 0, 0, 0], [1, 1, 1, 1])).is_err());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Roi`] if `roi` has more dims than the array.
    pub fn spatial_roi(&self, roi: &Roi) -> Result<Roi, StoreError> {
        let all = self.roi();
        let dims = all.dims();
        let lead = dims
            .checked_sub(roi.dims())
            .ok_or_else(|| StoreError::Roi {
                path: self.inner.name.clone(),
                message: format!("ROI {roi} has {} dims, the array only {dims}", roi.dims()),
            })?;
        let pick = |whole: &Coordinate, part: &Coordinate| -> Coordinate {
            (0..dims)
                .map(|d| if d < lead { whole[d] } else { part[d - lead] })
                .collect()
        };
        Ok(Roi::new(
            pick(all.begin(), roi.begin()),
            pick(all.shape(), roi.shape()),
        ))
    }

    /// Reads a ROI of the array's trailing axes with every voxel of its leading axes: for a
    /// `c, z, y, x` array (an OME-Zarr level with a channel axis, say) a `z, y, x` ROI reads
    /// all channels, so a task over the space axes reads all channels of its blocks (funlib's
    /// channel dimensions). The result's ROI spans the leading axes whole. A ROI with as many
    /// dims as the array reads as [`read`](Self::read).
    ///
    /// ```
    /// use blockwise::store::{ArraySpec, DataType, ZarrArray};
    /// use blockwise::Roi;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// // 3 channels of 8 × 8 voxels of 4 nm.
    /// let spec = ArraySpec::new(Roi::new([0, 0, 0], [3, 32, 32]), [1, 4, 4], DataType::U8, vec![1, 4, 4]);
    /// let a = ZarrArray::create(dir.path(), "raw", &spec)?;
    /// let data = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[3, 8, 8]), |i| i[0] as u8 * 10);
    /// a.write(&a.roi(), data.view())?;
    /// let block = a.read_spatial::<u8>(&Roi::new([8, 16], [8, 8]))?; // a y, x ROI
    /// assert_eq!(block.shape(), &[3, 2, 2]);
    /// assert_eq!(block.data()[[2, 1, 1]], 20);
    /// a.write_spatial(&Roi::new([0, 0], [4, 4]), ndarray::ArrayD::from_elem(ndarray::IxDyn(&[3, 1, 1]), 7u8).view())?;
    /// assert_eq!(a.read::<u8>(&Roi::new([1, 0, 0], [1, 4, 4]))?.data()[[0, 0, 0]], 7);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), and a ROI with more dims than the array.
    pub fn read_spatial<T: Scalar>(&self, roi: &Roi) -> Result<RoiArray<T>, StoreError> {
        self.read(&self.spatial_roi(roi)?)
    }

    /// Writes a ROI of the array's trailing axes with every voxel of its leading axes (the
    /// counterpart of [`read_spatial`](Self::read_spatial)): `data` has the array's dims.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write), and a ROI with more dims than the array.
    pub fn write_spatial<'a, T: Scalar>(
        &self,
        roi: &Roi,
        data: impl Into<ArrayViewD<'a, T>>,
    ) -> Result<(), StoreError> {
        self.write(&self.spatial_roi(roi)?, data)
    }

    /// Reads any world ROI on voxel boundaries; voxels outside the array are `fill`
    /// (`read_padded(roi, Pad::Constant(fill))`).
    ///
    /// # Errors
    ///
    /// A misaligned ROI, a `T` that is not the array's data type, or a read/decode error.
    pub fn read_with_fill<T: Scalar>(&self, roi: &Roi, fill: T) -> Result<RoiArray<T>, StoreError> {
        self.read_padded(roi, Pad::Constant(fill))
    }

    /// Reads any world ROI on voxel boundaries, padding voxels outside the array as
    /// scipy.ndimage's boundary modes do (see [`Pad`]): a constant, the nearest edge voxel, or
    /// the array mirrored about its edges. Only the voxels inside the array that the result
    /// needs are read.
    ///
    /// ```
    /// use blockwise::store::{ArraySpec, DataType, Pad, ZarrArray};
    /// use blockwise::Roi;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = std::env::temp_dir().join(format!("blockwise-doc-pad-{}", std::process::id()));
    /// // Four voxels 1 2 3 4 of 10 world units each.
    /// let spec = ArraySpec::new(Roi::new([0], [40]), [10], DataType::U8, vec![4]);
    /// let a = ZarrArray::create(&dir, "a", &spec)?;
    /// a.write(&a.roi(), &ndarray::arr1(&[1u8, 2, 3, 4]).into_dyn())?;
    ///
    /// let roi = Roi::new([-20], [80]); // two voxels of padding each side
    /// let read = |pad| -> Result<Vec<u8>, blockwise::store::StoreError> {
    ///     Ok(a.read_padded::<u8>(&roi, pad)?.iter().copied().collect())
    /// };
    /// assert_eq!(read(Pad::Constant(0))?, [0, 0, 1, 2, 3, 4, 0, 0]);
    /// assert_eq!(read(Pad::Nearest)?, [1, 1, 1, 2, 3, 4, 4, 4]);
    /// assert_eq!(read(Pad::Reflect)?, [2, 1, 1, 2, 3, 4, 4, 3]);
    /// std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A misaligned ROI, a `T` that is not the array's data type, `Nearest` or `Reflect` on an
    /// array with no voxels in some axis, or a read/decode error.
    pub fn read_padded<T: Scalar>(
        &self,
        roi: &Roi,
        pad: Pad<T>,
    ) -> Result<RoiArray<T>, StoreError> {
        self.check_type::<T>()?;
        if let (Some(cache), Pad::Constant(fill)) = (&self.inner.cache, pad) {
            // Straight into the padded block, without a read of the inside and a copy.
            let wanted = self.inner.meta.voxel_ranges(&self.inner.name, roi, true)?;
            let data = self.retrieve_cached(cache, &wanted, fill)?;
            return self.inner.meta.roi_array(roi, data);
        }
        self.inner
            .meta
            .read_padded(&self.inner.name, roi, pad, |inside| {
                self.retrieve::<T>(inside)
            })
    }

    /// Writes `data` to a world ROI inside the array; `data`'s shape must be the ROI's shape in
    /// voxels.
    ///
    /// Writes are safe among threads and processes of one machine: zarr stores whole chunks
    /// (whole shards if sharded), so a write covering only part of a chunk reads the chunk,
    /// updates it and writes it back, and does so holding a lock on that chunk, in this process
    /// and (an advisory `flock` on a hidden lock file next to the chunk) among processes.
    /// Concurrent writes of disjoint ROIs then lose no voxel, whatever their alignment. Chunks
    /// the ROI covers entirely (inside the array) are written without a lock: a concurrent
    /// writer of such a chunk would overlap this ROI, and overlapping concurrent writes are
    /// not ordered.
    ///
    /// On network file systems (NFS, Lustre, GPFS) `flock` may lock only among processes of
    /// one client, or not at all (where the file system reports that it has no locks, the lock
    /// is taken within the process only and a warning is logged): there, declare the array
    /// with [`TaskBuilder::writes`](crate::TaskBuilder::writes), so that `build()` checks that
    /// blocks write whole chunks, which needs no lock.
    ///
    /// `data` is anything that converts to an [`ArrayViewD`]: a view, `&ArrayD` or a
    /// `&`[`RoiArray`] (whose own ROI is ignored here; [`write_array`](Self::write_array)
    /// writes at it).
    ///
    /// # Errors
    ///
    /// A misaligned ROI or one outside the array, a shape mismatch, a `T` that is not the array's
    /// data type, or an encode/write/lock error.
    pub fn write<'a, T: Scalar>(
        &self,
        roi: &Roi,
        data: impl Into<ArrayViewD<'a, T>>,
    ) -> Result<(), StoreError> {
        let data: ArrayViewD<'a, T> = data.into();
        self.check_type::<T>()?;
        if self.inner.cache.is_some() {
            return Err(StoreError::Backend {
                path: self.inner.name.clone(),
                message: "the array was opened with a read cache and is read-only".into(),
            });
        }
        let ranges = self
            .inner
            .meta
            .write_ranges(&self.inner.name, roi, data.shape())?;
        let ranges: Vec<Range<u64>> = ranges
            .into_iter()
            .map(|r| r.start as u64..r.end as u64)
            .collect();
        let (whole, partial) = self.split_by_chunks(&ranges)?;
        if partial.is_empty() {
            return self
                .inner
                .array
                .store_array_subset(&ranges, &data)
                .map_err(|e| self.backend(&e));
        }
        let view = |sub: &[Range<u64>]| {
            data.slice_each_axis(|ax| {
                let r = &sub[ax.axis.index()];
                let start = ranges[ax.axis.index()].start;
                ndarray::Slice::from((r.start - start) as usize..(r.end - start) as usize)
            })
        };
        if let Some(whole) = whole {
            self.inner
                .array
                .store_array_subset(&whole, &view(&whole))
                .map_err(|e| self.backend(&e))?;
        }
        for (chunk, overlap) in partial {
            let origin = self
                .inner
                .array
                .chunk_origin(&chunk)
                .map_err(|e| self.backend(&e))?;
            let in_chunk: Vec<Range<u64>> = overlap
                .iter()
                .zip(&origin)
                .map(|(r, &o)| r.start - o..r.end - o)
                .collect();
            let key = self.inner.array.chunk_key(&chunk);
            let _lock = self
                .inner
                .atomic
                .lock_key(&key)
                .map_err(|e| self.backend(&e))?;
            self.inner
                .array
                .store_chunk_subset(&chunk, &in_chunk, &view(&overlap))
                .map_err(|e| self.backend(&e))?;
        }
        Ok(())
    }

    /// Writes a [`RoiArray`] at its own ROI (as [`write`](Self::write)); its voxel size must
    /// be the array's.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write), and a voxel size that differs from the array's.
    pub fn write_array<T: Scalar>(&self, data: &RoiArray<T>) -> Result<(), StoreError> {
        self.inner.meta.check_voxel_size(&self.inner.name, data)?;
        self.write(data.roi(), data)
    }

    /// Whether the stored chunks of `other` are valid stored chunks of this array: the same
    /// zarr format, shape, data type, fill value, chunk (or shard) grid, codecs and storage
    /// transformers (none), so that [`copy_chunks_from`](Self::copy_chunks_from) can copy
    /// them as bytes. The chunk key encoding, dimension names and attributes may differ, and
    /// so may the world meta data: compare [`roi`](Self::roi) and
    /// [`voxel_size`](Self::voxel_size) for that.
    #[must_use]
    pub fn stores_like(&self, other: &ZarrArray) -> bool {
        fn encoding(a: &ZarrArray) -> Option<Value> {
            let mut meta = serde_json::to_value(a.inner.array.metadata()).ok()?;
            let object = meta.as_object_mut()?;
            for key in [
                "attributes",
                "chunk_key_encoding",
                "dimension_separator",
                "dimension_names",
            ] {
                object.remove(key);
            }
            let transformers = object.remove("storage_transformers");
            if transformers.is_some_and(|t| t.as_array().is_none_or(|t| !t.is_empty())) {
                return None;
            }
            Some(meta)
        }
        match (encoding(self), encoding(other)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// Copies the chunks of `src` in `roi` into this array as their stored bytes, without
    /// decoding or encoding them (a chunk that `src` does not store, all fill value, is
    /// removed here too). Returns the number of bytes copied.
    ///
    /// `roi` (in this array's world units, which must be `src`'s: the same ROI and voxel size)
    /// must cover whole write chunks ([`write_chunk_shape`](Self::write_chunk_shape)); the
    /// chunks at the array's upper end may be partial, as zarr stores them whole. Each chunk
    /// is replaced atomically (write and rename), so concurrent readers see the old or the new
    /// chunk.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotAlike`] if the arrays do not store alike ([`stores_like`]) or differ
    /// in ROI or voxel size; [`StoreError::Roi`] if `roi` is not inside the array or does not
    /// cover whole chunks; [`StoreError::Backend`] for a read-only (cached) array or an I/O
    /// error.
    ///
    /// [`stores_like`]: Self::stores_like
    ///
    /// ```
    /// use blockwise::store::{ArraySpec, DataType, ZarrArray};
    /// use blockwise::Roi;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let roi = Roi::new([0, 0], [8, 8]);
    /// let src = ZarrArray::create(dir.path(), "a", &ArraySpec::new(roi.clone(), [1, 1], DataType::U8, vec![4, 4]))?;
    /// src.write(&roi, ndarray::ArrayD::from_elem(ndarray::IxDyn(&[8, 8]), 5u8).view())?;
    /// let dst = ZarrArray::create_like(dir.path(), "b", &src, false)?;
    /// assert!(dst.stores_like(&src));
    /// let bytes = dst.copy_chunks_from(&src, &Roi::new([4, 0], [4, 8]))?; // 2 of the 4 chunks
    /// assert!(bytes > 0);
    /// assert_eq!(dst.read::<u8>(&Roi::new([4, 0], [4, 8]))?.iter().copied().max(), Some(5));
    /// assert_eq!(dst.read::<u8>(&Roi::new([0, 0], [4, 8]))?.iter().copied().max(), Some(0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn copy_chunks_from(&self, src: &ZarrArray, roi: &Roi) -> Result<u64, StoreError> {
        if self.inner.cache.is_some() {
            return Err(StoreError::Backend {
                path: self.inner.name.clone(),
                message: "the array was opened with a read cache and is read-only".into(),
            });
        }
        let mut differences = Vec::new();
        if !self.stores_like(src) {
            differences.push(
                "storage: the zarr format, shape, data type, fill value, chunks or codecs differ"
                    .to_owned(),
            );
        }
        if src.roi() != self.roi() {
            differences.push(format!("ROI: {} here, {} there", self.roi(), src.roi()));
        }
        if src.voxel_size() != self.voxel_size() {
            differences.push(format!(
                "voxel size: {} here, {} there",
                self.voxel_size(),
                src.voxel_size()
            ));
        }
        if !differences.is_empty() {
            return Err(StoreError::NotAlike {
                path: self.inner.name.clone(),
                other: src.name().to_owned(),
                differences,
            });
        }
        let ranges = self.voxel_ranges_u64(roi)?;
        let (_, partial) = self.split_by_chunks(&ranges)?;
        if let Some((chunk, _)) = partial.first() {
            return Err(StoreError::Roi {
                path: self.inner.name.clone(),
                message: format!(
                    "ROI {roi} covers chunk {chunk:?} (of {:?} voxels) only in part; raw chunk copies need whole chunks",
                    self.inner.write_chunk
                ),
            });
        }
        let chunks = self.chunks_of(&ranges)?;
        let mut copied = 0u64;
        for chunk in &chunks.indices() {
            let key = self.inner.array.chunk_key(&chunk);
            match src
                .inner
                .array
                .retrieve_encoded_chunk(&chunk)
                .map_err(|e| src.backend(&e))?
            {
                Some(bytes) => {
                    copied += bytes.len() as u64;
                    WritableStorageTraits::set(self.inner.atomic.as_ref(), &key, bytes.into())
                        .map_err(|e| self.backend(&e))?;
                }
                None => WritableStorageTraits::erase(self.inner.atomic.as_ref(), &key)
                    .map_err(|e| self.backend(&e))?,
            }
        }
        Ok(copied)
    }

    /// A SHA-256 digest (hex) of the chunks that hold the voxels of `roi`, as stored: their
    /// encoded bytes, read but not decoded, with each chunk's key, so that two arrays (or one
    /// array at two times) have the same digest there exactly when the same bytes are stored
    /// under the same keys (a chunk not stored, which reads as the fill value, counts as such).
    /// [`Mask`](crate::mask::Mask)s record it to tell a mask rewritten in place.
    ///
    /// Reading stored bytes costs one pass over the compressed chunks in `roi`, no decoding;
    /// for a sharded array, whole shards are read.
    ///
    /// ```
    /// use blockwise::Roi;
    /// use blockwise::store::{ArraySpec, DataType, ZarrArray};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let spec = ArraySpec::new(Roi::new([0], [8]), [1], DataType::U8, vec![4]);
    /// let a = ZarrArray::create(dir.path(), "a", &spec)?;
    /// let (left, right) = (Roi::new([0], [4]), Roi::new([4], [4]));
    /// let before = (a.stored_sha256(&left)?, a.stored_sha256(&right)?);
    /// a.write(&Roi::new([5], [1]), &ndarray::arr1(&[7u8]).into_dyn())?;
    /// assert_eq!(a.stored_sha256(&left)?, before.0); // chunk 0 is as it was
    /// assert_ne!(a.stored_sha256(&right)?, before.1); // chunk 1 was written
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `roi` is not on the voxel grid or not inside the array's ROI, or a chunk cannot be read.
    pub fn stored_sha256(&self, roi: &Roi) -> Result<String, StoreError> {
        use sha2::{Digest, Sha256};
        let ranges = self.voxel_ranges_u64(roi)?;
        let mut hasher = Sha256::new();
        if ranges.iter().any(|r| r.is_empty()) {
            return Ok(format!("{:x}", hasher.finalize()));
        }
        let chunks = self.chunks_of(&ranges)?;
        for chunk in &chunks.indices() {
            let key = self.inner.array.chunk_key(&chunk);
            hasher.update((key.as_str().len() as u64).to_le_bytes());
            hasher.update(key.as_str().as_bytes());
            match self
                .inner
                .array
                .retrieve_encoded_chunk(&chunk)
                .map_err(|e| self.backend(&e))?
            {
                Some(bytes) => {
                    hasher.update([1]);
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(&bytes);
                }
                None => hasher.update([0]),
            }
        }
        Ok(format!("{:x}", hasher.finalize()))
    }

    /// The array's identity: the random id (128 bits, hex) that [`create`](Self::create),
    /// [`create_like`](Self::create_like) and [`prepare`](Self::prepare) store in its
    /// attributes under [`ARRAY_ID_KEY`](super::ARRAY_ID_KEY) (`"blockwise_array_id"`).
    /// `None` for arrays made by other tools (or whose id is not a string, with a warning).
    /// Every new array gets a new id, so an array deleted and recreated at the same path is
    /// told apart from the old one; the [`chunk_grid`](Self::chunk_grid) carries it.
    #[must_use]
    pub fn array_id(&self) -> Option<&str> {
        self.inner.array_id.as_deref()
    }

    /// Opens the array `dataset` of the store at `path` if it matches `spec`, or creates it
    /// (and the store) if there is none: funlib.persistence's `prepare_ds`. Rerunning a
    /// pipeline then keeps its outputs (data and [`array_id`](Self::array_id)).
    ///
    /// An existing array matches if its ROI, voxel size, data type, chunk shape, shard shape,
    /// zarr format and fill value are the spec's, and so are its axis names and units if the
    /// spec gives them. Compression is not compared (an array written with another codec
    /// reads the same). If it differs, the error names every difference with both values,
    /// unless `spec.overwrite` is set: then it is replaced by a new, empty array with a new
    /// id. A matching array is kept even with `overwrite` (use [`create`](Self::create) to
    /// start over).
    ///
    /// ```
    /// use blockwise::store::{ArraySpec, DataType, StoreError, ZarrArray};
    /// use blockwise::Roi;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = std::env::temp_dir().join(format!("blockwise-doc-prep-{}", std::process::id()));
    /// let spec = ArraySpec::new(Roi::new([0, 0], [64, 64]), [1, 1], DataType::U8, vec![32, 32]);
    /// let first = ZarrArray::prepare(&dir, "out", &spec)?; // created
    /// let again = ZarrArray::prepare(&dir, "out", &spec)?; // opened: the same array
    /// assert_eq!(first.array_id(), again.array_id());
    ///
    /// let mut other = spec.clone();
    /// other.chunk_shape = vec![16, 16];
    /// let e = ZarrArray::prepare(&dir, "out", &other).unwrap_err();
    /// assert!(matches!(e, StoreError::Mismatch { .. }));
    /// assert!(e.to_string().contains("chunk shape: the array has [32, 32], the spec [16, 16]"), "{e}");
    ///
    /// other.overwrite = true;
    /// let replaced = ZarrArray::prepare(&dir, "out", &other)?;
    /// assert_ne!(replaced.array_id(), first.array_id());
    /// std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Mismatch`] as above; otherwise the errors of [`open`](Self::open) (an
    /// existing node that is not a readable array, without `overwrite`) and
    /// [`create`](Self::create).
    pub fn prepare(
        path: impl AsRef<Path>,
        dataset: &str,
        spec: &ArraySpec,
    ) -> Result<ZarrArray, StoreError> {
        let path = path.as_ref();
        checked_dataset(path, dataset)?;
        let node = node_path(dataset);
        let name = format!("{}{node}", path.display());
        // A bad spec is an error whether or not an array exists.
        spec.world_meta().map_err(|message| StoreError::Open {
            path: name.clone(),
            message,
        })?;
        let node_dir = path.join(node.trim_start_matches('/'));
        let exists = node_dir.join("zarr.json").exists() || node_dir.join(".zarray").exists();
        if !exists {
            return Self::create(path, dataset, spec);
        }
        let existing = match Self::open(path, dataset) {
            Ok(a) => a,
            Err(_) if spec.overwrite => return Self::create(path, dataset, spec),
            Err(e) => return Err(e),
        };
        let differences = existing.differences(spec);
        if differences.is_empty() {
            return Ok(existing);
        }
        if spec.overwrite {
            drop(existing);
            return Self::create(path, dataset, spec);
        }
        Err(StoreError::Mismatch {
            path: name,
            differences,
        })
    }

    /// How this array differs from `spec` (see [`prepare`](Self::prepare)).
    fn differences(&self, spec: &ArraySpec) -> Vec<String> {
        let mut out = super::world_differences(&self.inner.meta, self.inner.data_type, spec);
        let layout = &self.inner.layout;
        super::difference(
            &mut out,
            "chunk shape",
            ShapeText(Some(layout.chunk.clone())),
            ShapeText(Some(spec.chunk_shape.clone())),
        );
        super::difference(
            &mut out,
            "shard shape",
            ShapeText(layout.shard.clone()),
            ShapeText(spec.shard_shape.clone()),
        );
        let format = |f: ZarrFormat| match f {
            ZarrFormat::V2 => "v2",
            ZarrFormat::V3 => "v3",
        };
        super::difference(
            &mut out,
            "zarr format",
            format(layout.format),
            format(spec.format),
        );
        let wanted = FillText::new(spec.fill_value, spec.data_type);
        match layout.fill {
            Some(fill) => super::difference(
                &mut out,
                "fill value",
                FillText::new(fill, self.inner.data_type),
                wanted,
            ),
            None => out.push(format!(
                "fill value: the array has none (or not a number), the spec {wanted}"
            )),
        }
        out
    }

    /// Splits a voxel region into the box of the chunks it covers entirely (within the array),
    /// if any, and the chunks it covers in part, each with its overlap with the region.
    #[allow(clippy::type_complexity)]
    fn split_by_chunks(
        &self,
        ranges: &[Range<u64>],
    ) -> Result<(Option<Vec<Range<u64>>>, Vec<(Vec<u64>, Vec<Range<u64>>)>), StoreError> {
        let subset = ranges.to_vec();
        let Some(chunks) = self
            .inner
            .array
            .chunks_in_array_subset(&subset)
            .map_err(|e| self.backend(&e))?
        else {
            return Err(self.backend(&format!("cannot find the chunks of voxels {ranges:?}")));
        };
        let mut whole_box: Option<Vec<Range<u64>>> = None;
        let mut whole = Vec::new();
        let mut partial = Vec::new();
        for chunk in &chunks.indices() {
            let bounded = self
                .inner
                .array
                .chunk_subset_bounded(&chunk)
                .map_err(|e| self.backend(&e))?
                .to_ranges();
            let overlap: Vec<Range<u64>> = bounded
                .iter()
                .zip(ranges)
                .map(|(c, r)| c.start.max(r.start)..c.end.min(r.end))
                .collect();
            if overlap.iter().any(|r| r.start >= r.end) {
                continue;
            }
            if overlap == bounded {
                whole_box = Some(match whole_box {
                    None => bounded,
                    Some(b) => b
                        .iter()
                        .zip(&bounded)
                        .map(|(a, c)| a.start.min(c.start)..a.end.max(c.end))
                        .collect(),
                });
                whole.push((chunk.to_vec(), overlap));
            } else {
                partial.push((chunk.to_vec(), overlap));
            }
        }
        // On zarr's (rectilinear) grids the whole chunks form a box; if they did not, the box
        // would hold partial chunks too: then write every chunk on its own, with a lock.
        if let Some(b) = &whole_box {
            let in_box = self
                .inner
                .array
                .chunks_in_array_subset(b)
                .map_err(|e| self.backend(&e))?
                .map(|c| c.num_elements_usize());
            if in_box != Some(whole.len()) {
                partial.append(&mut whole);
                return Ok((None, partial));
            }
        }
        Ok((whole_box, partial))
    }
}

impl Inner {
    fn from_array(
        array: Array<Store>,
        name: String,
        store: &Path,
        atomic: Arc<AtomicFilesystemStore>,
    ) -> Result<Inner, StoreError> {
        let meta_json = serde_json::to_value(array.metadata()).unwrap_or(Value::Null);
        let dtype_name = meta_json
            .get("data_type")
            .or_else(|| meta_json.get("dtype"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let data_type = DataType::from_name(dtype_name).ok_or_else(|| StoreError::Open {
            path: name.clone(),
            message: format!("unsupported data type {dtype_name:?}"),
        })?;
        let shape = array.shape().to_vec();
        let zeros = vec![0u64; shape.len()];
        let write_chunk: Vec<u64> = array
            .chunk_shape(&zeros)
            .map_err(|e| StoreError::Open {
                path: name.clone(),
                message: e.to_string(),
            })?
            .iter()
            .map(|c| c.get())
            .collect();
        let meta = WorldMeta::from_attributes(&name, array.attributes(), shape)?;
        let layout = Layout::of(&meta_json, data_type);
        let array_id = super::array_id_of(&name, array.attributes().get(ARRAY_ID_KEY));
        Ok(Inner {
            array,
            atomic,
            cache: None,
            name,
            store: store.to_owned(),
            meta,
            data_type,
            write_chunk,
            layout,
            array_id,
        })
    }
}

impl From<&ZarrArray> for ChunkGrid {
    fn from(a: &ZarrArray) -> ChunkGrid {
        a.chunk_grid()
    }
}

impl From<&Arc<ZarrArray>> for ChunkGrid {
    fn from(a: &Arc<ZarrArray>) -> ChunkGrid {
        a.chunk_grid()
    }
}

/// Writes group metadata for the root and every parent group of `node`, where missing.
fn write_groups(store: &Store, node: &str, format: ZarrFormat) -> Result<(), String> {
    let parts: Vec<&str> = node
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let mut prefixes: Vec<String> = vec![String::new()];
    for i in 1..parts.len() {
        prefixes.push(parts[..i].join("/"));
    }
    for p in prefixes {
        let (key, body) = match format {
            ZarrFormat::V3 => (
                join_key(&p, "zarr.json"),
                json!({"zarr_format": 3, "node_type": "group", "attributes": {}}),
            ),
            ZarrFormat::V2 => (join_key(&p, ".zgroup"), json!({"zarr_format": 2})),
        };
        let key = StoreKey::new(key).map_err(|e| e.to_string())?;
        if zarrs::storage::ReadableStorageTraits::get(store, &key)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            let bytes = serde_json::to_vec_pretty(&body).map_err(|e| e.to_string())?;
            WritableStorageTraits::set(store, &key, bytes.into()).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}
