//! How to create an array: [`ArraySpec`], [`Codec`], [`ZarrFormat`].

use serde_json::{Value, json};

use super::{DataType, WorldMeta};
use crate::geometry::{Coordinate, Roi};

/// The zarr format version of a new array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZarrFormat {
    /// Zarr v2 (`.zarray`, `.zattrs`).
    V2,
    /// Zarr v3 (`zarr.json`), the default.
    #[default]
    V3,
}

/// The compression of a new array's chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Uncompressed.
    None,
    /// Zstandard at `level`.
    Zstd {
        /// Compression level.
        level: i32,
    },
    /// Gzip at `level` (0–9).
    Gzip {
        /// Compression level.
        level: u32,
    },
    /// Blosc with its zstd compressor (zarr-python's usual choice for image volumes).
    BloscZstd {
        /// Compression level (0–9).
        level: u8,
        /// Byte shuffle before compression.
        shuffle: bool,
    },
    /// Blosc with lz4 (zarr-python's default v2 compressor).
    BloscLz4 {
        /// Compression level (0–9).
        level: u8,
        /// Byte shuffle before compression.
        shuffle: bool,
    },
}

impl Default for Codec {
    fn default() -> Self {
        Codec::BloscZstd {
            level: 5,
            shuffle: true,
        }
    }
}

impl Codec {
    pub(crate) fn v3(self, typesize: usize) -> Option<Value> {
        let blosc = |cname: &str, level: u8, shuffle: bool| {
            json!({"name": "blosc", "configuration": {"cname": cname, "clevel": level,
                "shuffle": if shuffle { "shuffle" } else { "noshuffle" }, "typesize": typesize, "blocksize": 0}})
        };
        match self {
            Codec::None => None,
            Codec::Zstd { level } => {
                Some(json!({"name": "zstd", "configuration": {"level": level, "checksum": false}}))
            }
            Codec::Gzip { level } => {
                Some(json!({"name": "gzip", "configuration": {"level": level}}))
            }
            Codec::BloscZstd { level, shuffle } => Some(blosc("zstd", level, shuffle)),
            Codec::BloscLz4 { level, shuffle } => Some(blosc("lz4", level, shuffle)),
        }
    }

    pub(crate) fn v2(self) -> Value {
        match self {
            Codec::None => Value::Null,
            Codec::Zstd { level } => json!({"id": "zstd", "level": level}),
            Codec::Gzip { level } => json!({"id": "gzip", "level": level}),
            Codec::BloscZstd { level, shuffle } => {
                json!({"id": "blosc", "cname": "zstd", "clevel": level, "shuffle": u8::from(shuffle), "blocksize": 0})
            }
            Codec::BloscLz4 { level, shuffle } => {
                json!({"id": "blosc", "cname": "lz4", "clevel": level, "shuffle": u8::from(shuffle), "blocksize": 0})
            }
        }
    }
}

/// How to create a zarr array: its place in world units, element type, chunking and codec.
#[derive(Debug, Clone, PartialEq)]
pub struct ArraySpec {
    /// The array's ROI in world units; offset and shape must be multiples of the voxel size.
    pub roi: Roi,
    /// The size of one voxel in world units.
    pub voxel_size: Coordinate,
    /// The element type.
    pub data_type: DataType,
    /// Chunk shape in voxels.
    pub chunk_shape: Vec<u64>,
    /// Shard shape in voxels (v3 only; a multiple of the chunk shape): chunks are stored in
    /// shards, and the shard becomes the unit a writer rewrites.
    pub shard_shape: Option<Vec<u64>>,
    /// Chunk compression.
    pub codec: Codec,
    /// Zarr format version.
    pub format: ZarrFormat,
    /// Axis names (default `d0, d1, ...`).
    pub axis_names: Option<Vec<String>>,
    /// Axis units (default empty strings).
    pub units: Option<Vec<String>>,
    /// The value of voxels never written.
    pub fill_value: f64,
    /// Replace an existing array at the same path (default: refuse).
    pub overwrite: bool,
}

impl ArraySpec {
    /// A v3 array with blosc-zstd chunks, fill value 0, default axis names and units.
    #[must_use]
    pub fn new(
        roi: Roi,
        voxel_size: impl Into<Coordinate>,
        data_type: DataType,
        chunk_shape: Vec<u64>,
    ) -> Self {
        ArraySpec {
            roi,
            voxel_size: voxel_size.into(),
            data_type,
            chunk_shape,
            shard_shape: None,
            codec: Codec::default(),
            format: ZarrFormat::V3,
            axis_names: None,
            units: None,
            fill_value: 0.0,
            overwrite: false,
        }
    }
}

impl ArraySpec {
    /// Validates the spec and derives the array's world metadata.
    pub(crate) fn world_meta(&self) -> Result<WorldMeta, String> {
        let dims = self.roi.dims();
        if self.voxel_size.dims() != dims || self.chunk_shape.len() != dims {
            return Err(format!(
                "ROI {} has {dims} dims but the voxel size {} has {} and the chunk shape {:?} has {}",
                self.roi,
                self.voxel_size,
                self.voxel_size.dims(),
                self.chunk_shape,
                self.chunk_shape.len()
            ));
        }
        if self.voxel_size.iter().any(|v| v <= 0) {
            return Err(format!("voxel size {} must be positive", self.voxel_size));
        }
        if self.roi.shape().iter().any(|s| s < 0)
            || !self.roi.offset().is_multiple_of(&self.voxel_size)
            || !self.roi.shape().is_multiple_of(&self.voxel_size)
        {
            return Err(format!(
                "ROI {} is not a non-negative multiple of the voxel size {}",
                self.roi, self.voxel_size
            ));
        }
        if self.chunk_shape.contains(&0) {
            return Err(format!("chunk shape {:?} has a zero", self.chunk_shape));
        }
        if let Some(shard) = &self.shard_shape {
            if self.format == ZarrFormat::V2 {
                return Err("sharding needs zarr v3".into());
            }
            if shard.len() != dims
                || shard
                    .iter()
                    .zip(&self.chunk_shape)
                    .any(|(&s, &c)| s == 0 || s % c != 0)
            {
                return Err(format!(
                    "shard shape {shard:?} is not a multiple of the chunk shape {:?}",
                    self.chunk_shape
                ));
            }
        }
        let axis_names = self
            .axis_names
            .clone()
            .unwrap_or_else(|| (0..dims).map(|d| format!("d{d}")).collect());
        let units = self
            .units
            .clone()
            .unwrap_or_else(|| vec![String::new(); dims]);
        if axis_names.len() != dims || units.len() != dims {
            return Err(format!(
                "{} axis names and {} units for {dims} dims",
                axis_names.len(),
                units.len()
            ));
        }
        let shape: Vec<u64> = (0..dims)
            .map(|d| (self.roi.shape()[d] / self.voxel_size[d]) as u64)
            .collect();
        Ok(WorldMeta {
            offset: self.roi.offset().clone(),
            voxel_size: self.voxel_size.clone(),
            axis_names,
            units,
            shape,
        })
    }
}
