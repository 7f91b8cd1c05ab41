//! OME-Zarr (NGFF) multiscale images: NGFF 0.4 on zarr v2 and 0.5 on zarr v3.
//!
//! The metadata is read and written through the `ome_zarr_metadata` crate's types and checked
//! with its validation. Each level's `scale` and `translation` become the level's voxel size and
//! offset in world units. World units are integers in blockwise, so every scale and translation
//! (after composing a level's transformations with the image's own) must be a whole number; a
//! fractional one is an error naming the level and axis, never rounded.
//!
//! Offsets are voxel corners (funlib's), and blockwise writes every level with level 0's
//! translation. Images whose coarser levels are placed by their voxel centres (as ngff-zarr
//! and ome-zarr-py write them) are recognised and read with level 0's translation for every
//! level ([`OmeZarr::pixel_centres`]), so their levels line up.
//!
//! Every axis of the image is an axis of its arrays, channel and time axes included: they keep
//! the voxel size and offset the metadata gives them (ome-zarr-py writes scale 1 and no
//! translation for them), so a ROI over a 4-D `c, z, y, x` level has four axes and reading all
//! channels means spanning the channel axis.

use std::path::{Path, PathBuf};

use ome_zarr_metadata::v0_4::{
    self, Axis, AxisType, AxisUnit, CoordinateTransform, CoordinateTransformScale,
    CoordinateTransformTranslation, MultiscaleImageDataset,
};
use ome_zarr_metadata::v0_5;
use ome_zarr_metadata::{Validate, pep440_rs};
use serde_json::{Map, Value, json};

use super::{ArraySpec, DataType, StoreError, ZarrArray, ZarrFormat};
use crate::geometry::{Coordinate, Roi};

/// The NGFF version of an OME-Zarr image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NgffVersion {
    /// NGFF 0.4: zarr v2, `multiscales` in the group's `.zattrs`.
    V0_4,
    /// NGFF 0.5: zarr v3, `ome.multiscales` in the group's `zarr.json` attributes.
    V0_5,
}

impl NgffVersion {
    /// The version for arrays of a zarr format (0.4 for v2, 0.5 for v3).
    pub fn for_format(format: ZarrFormat) -> NgffVersion {
        match format {
            ZarrFormat::V2 => NgffVersion::V0_4,
            ZarrFormat::V3 => NgffVersion::V0_5,
        }
    }

    /// The zarr format of this version's arrays.
    pub fn format(self) -> ZarrFormat {
        match self {
            NgffVersion::V0_4 => ZarrFormat::V2,
            NgffVersion::V0_5 => ZarrFormat::V3,
        }
    }
}

/// The type of an OME-Zarr axis.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AxisKind {
    /// A space axis (`z`, `y`, `x`).
    Space,
    /// A time axis.
    Time,
    /// A channel axis.
    Channel,
    /// Another type, by name.
    Other(String),
}

/// One axis of an OME-Zarr image: its name, type and unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OmeAxis {
    /// The axis name (e.g. `"z"`).
    pub name: String,
    /// The axis type, if the metadata gives one.
    pub kind: Option<AxisKind>,
    /// The unit (e.g. `"nanometer"`), if the metadata gives one.
    pub unit: Option<String>,
}

impl OmeAxis {
    /// A space axis with a unit (an NGFF unit name like `"nanometer"`, or another string).
    pub fn space(name: impl Into<String>, unit: impl Into<String>) -> OmeAxis {
        OmeAxis {
            name: name.into(),
            kind: Some(AxisKind::Space),
            unit: Some(unit.into()),
        }
    }

    /// A channel axis (no unit).
    pub fn channel(name: impl Into<String>) -> OmeAxis {
        OmeAxis {
            name: name.into(),
            kind: Some(AxisKind::Channel),
            unit: None,
        }
    }

    /// A time axis with a unit (e.g. `"second"`).
    pub fn time(name: impl Into<String>, unit: impl Into<String>) -> OmeAxis {
        OmeAxis {
            name: name.into(),
            kind: Some(AxisKind::Time),
            unit: Some(unit.into()),
        }
    }

    fn from_ngff(axis: &Axis) -> OmeAxis {
        let kind = axis.r#type.as_ref().map(|t| match t {
            AxisType::Space => AxisKind::Space,
            AxisType::Time => AxisKind::Time,
            AxisType::Channel => AxisKind::Channel,
            AxisType::Custom(s) => AxisKind::Other(s.clone()),
            // `AxisType` is non-exhaustive: keep a future type by its name.
            other => AxisKind::Other(
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ),
        });
        let unit = axis.unit.as_ref().and_then(|u| {
            serde_json::to_value(u)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        });
        OmeAxis {
            name: axis.name.clone(),
            kind,
            unit,
        }
    }

    fn to_ngff(&self, path: &str) -> Result<Axis, StoreError> {
        let bad = |e: serde_json::Error| StoreError::Open {
            path: path.to_owned(),
            message: format!("axis {:?}: {e}", self.name),
        };
        let r#type: Option<AxisType> = match &self.kind {
            None => None,
            Some(AxisKind::Space) => Some(AxisType::Space),
            Some(AxisKind::Time) => Some(AxisType::Time),
            Some(AxisKind::Channel) => Some(AxisType::Channel),
            Some(AxisKind::Other(s)) => Some(AxisType::Custom(s.clone())),
        };
        // An untagged enum: a known space or time unit, else a custom string.
        let unit: Option<AxisUnit> = match &self.unit {
            None => None,
            Some(u) => Some(serde_json::from_value(Value::String(u.clone())).map_err(bad)?),
        };
        Ok(Axis {
            name: self.name.clone(),
            r#type,
            unit,
        })
    }
}

/// One resolution level of an OME-Zarr image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OmeLevel {
    /// The level's array, relative to the image group (e.g. `"s0"` or `"0"`).
    pub path: String,
    /// The level's voxel size in world units (its `scale`), one value per axis.
    pub voxel_size: Coordinate,
    /// The level's offset in world units (its `translation`, 0 if absent), one value per axis.
    pub offset: Coordinate,
}

/// An OME-Zarr multiscale image: a zarr group whose metadata lists its resolution levels.
///
/// ```
/// use blockwise::store::{ArraySpec, DataType, OmeAxis, OmeZarr, ZarrArray};
/// use blockwise::Roi;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("image.zarr");
/// let s0 = ArraySpec::new(Roi::new([40, 0], [320, 320]), [4, 4], DataType::U8, vec![16, 16]);
/// let s1 = ArraySpec::new(Roi::new([40, 0], [320, 320]), [8, 8], DataType::U8, vec![16, 16]);
/// let image = OmeZarr::builder(&path)
///     .axes([OmeAxis::space("y", "nanometer"), OmeAxis::space("x", "nanometer")])
///     .level("s0", s0)
///     .level("s1", s1)
///     .create()?;
/// assert_eq!(image.levels().len(), 2);
///
/// // NGFF 0.5 (zarr v3), read back from the metadata.
/// let s1 = ZarrArray::open_ome(&path, 1)?;
/// assert_eq!(s1.voxel_size().as_slice(), &[8, 8]);
/// assert_eq!(s1.offset().as_slice(), &[40, 0]);
/// assert_eq!(s1.shape(), &[40, 40]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OmeZarr {
    path: PathBuf,
    /// Whether the levels' translations are pixel centres (see [`OmeZarr::pixel_centres`]).
    centred: bool,
    version: NgffVersion,
    name: Option<String>,
    axes: Vec<OmeAxis>,
    levels: Vec<OmeLevel>,
}

fn open_err(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn read_json(file: &Path) -> Result<Option<Map<String, Value>>, StoreError> {
    match std::fs::read(file) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(open_err(file, "not a JSON object")),
            Err(e) => Err(open_err(file, format!("invalid JSON: {e}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(open_err(file, e.to_string())),
    }
}

fn write_json(file: &Path, value: &Map<String, Value>) -> Result<(), StoreError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let io = |e: std::io::Error| open_err(file, e.to_string());
    std::fs::create_dir_all(dir).map_err(io)?;
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| open_err(file, e.to_string()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(io)?;
    tmp.persist(file).map_err(|e| io(e.error))?;
    Ok(())
}

/// The group attributes of the zarr group at `path` and its NGFF version (from the zarr format:
/// `zarr.json` is v3, `.zattrs`/`.zgroup` v2).
fn group_attributes(path: &Path) -> Result<(NgffVersion, Map<String, Value>), StoreError> {
    if let Some(meta) = read_json(&path.join("zarr.json"))? {
        if meta.get("node_type").and_then(Value::as_str) != Some("group") {
            return Err(open_err(path, "zarr.json is not a group's metadata"));
        }
        let attrs = match meta.get("attributes") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        return Ok((NgffVersion::V0_5, attrs));
    }
    let attrs = read_json(&path.join(".zattrs"))?;
    if attrs.is_none() && !path.join(".zgroup").is_file() {
        return Err(open_err(
            path,
            "no zarr group here (neither zarr.json nor .zgroup/.zattrs)",
        ));
    }
    Ok((NgffVersion::V0_4, attrs.unwrap_or_default()))
}

/// A whole number of world units from an NGFF value.
fn whole(path: &Path, what: &str, v: f64) -> Result<i64, StoreError> {
    // 2^53: every integer below is exact in f64.
    if v.is_finite() && v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_992.0 {
        Ok(v as i64)
    } else {
        Err(open_err(
            path,
            format!(
                "{what} = {v} is not a whole number (blockwise's world units are integers: give scale and translation in a unit that makes them whole, e.g. nanometer)"
            ),
        ))
    }
}

/// Whether the levels' translations (world units, per level: what, scale, translation) place
/// their voxels by their centres: every level `k` is translated by half of the growth of its
/// voxels over level 0's, `t_k = t_0 + (s_k - s_0) / 2` on every axis, and some level is
/// translated differently from level 0 (as ngff-zarr and ome-zarr-py's `Scaler` write coarser
/// levels, whose voxel centres lie at the centres of the windows they reduce). Voxel corners
/// (funlib's offsets, and what blockwise writes) give every level level 0's translation.
fn pixel_centred(world: &[(String, Vec<f64>, Vec<f64>)]) -> bool {
    let Some((_, s0, t0)) = world.first() else {
        return false;
    };
    let mut shifted = false;
    for (_, s, t) in &world[1..] {
        for d in 0..s0.len() {
            if t[d] != t0[d] + (s[d] - s0[d]) / 2.0 {
                return false;
            }
            shifted |= t[d] != t0[d];
        }
    }
    shifted
}

/// The scale and translation of a list of transformations (identity where absent).
fn transforms(
    path: &Path,
    what: &str,
    list: &[CoordinateTransform],
    dims: usize,
) -> Result<(Vec<f64>, Vec<f64>), StoreError> {
    let mut scale = vec![1.0; dims];
    let mut translation = vec![0.0; dims];
    let check = |kind: &str, v: &[f32]| -> Result<Vec<f64>, StoreError> {
        if v.len() == dims {
            Ok(v.iter().map(|&x| f64::from(x)).collect())
        } else {
            Err(open_err(
                path,
                format!("{what}: the {kind} has {} values for {dims} axes", v.len()),
            ))
        }
    };
    for t in list {
        match t {
            CoordinateTransform::Identity => {}
            CoordinateTransform::Scale(CoordinateTransformScale::List { scale: s }) => {
                scale = check("scale", s)?;
            }
            CoordinateTransform::Translation(CoordinateTransformTranslation::List {
                translation: s,
            }) => {
                translation = check("translation", s)?;
            }
            CoordinateTransform::Scale(CoordinateTransformScale::Path { .. })
            | CoordinateTransform::Translation(CoordinateTransformTranslation::Path { .. }) => {
                return Err(open_err(
                    path,
                    format!("{what}: transformations stored in a file are not supported"),
                ));
            }
        }
    }
    Ok((scale, translation))
}

fn ngff_list(values: &Coordinate, what: &str, path: &Path) -> Result<Vec<f32>, StoreError> {
    // 2^24: every integer below is exact in f32, the metadata crate's number type.
    values
        .iter()
        .map(|v| {
            if v.unsigned_abs() <= 1 << 24 {
                Ok(v as f32)
            } else {
                Err(open_err(
                    path,
                    format!("{what} {values} has a value beyond 2^24, which NGFF's f32 cannot hold exactly"),
                ))
            }
        })
        .collect()
}

impl OmeZarr {
    /// Opens the OME-Zarr image at `path` (a zarr group with `multiscales` metadata: NGFF 0.5
    /// in `zarr.json`, or 0.4 in `.zattrs`). The first multiscale image of the group is used.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] naming what is wrong: no group, no `multiscales` metadata, metadata
    /// the NGFF schema rejects (wrong number or order of axes, a level without a scale, ...), a
    /// transformation whose length is not the number of axes, or a scale or translation that is
    /// not a whole number.
    pub fn open(path: impl AsRef<Path>) -> Result<OmeZarr, StoreError> {
        let path = path.as_ref();
        let (version, attrs) = group_attributes(path)?;
        let invalid = |e: &dyn std::fmt::Display| open_err(path, format!("invalid NGFF {e}"));
        let multiscales: Vec<v0_5::MultiscaleImage> = match version {
            NgffVersion::V0_5 => {
                let ome = attrs.get("ome").ok_or_else(|| {
                    open_err(
                        path,
                        "no OME-Zarr metadata: the group attributes have no `ome`",
                    )
                })?;
                let fields: v0_5::OmeFields = serde_json::from_value(ome.clone())
                    .map_err(|e| invalid(&format!("0.5 metadata: {e}")))?;
                fields
                    .validate()
                    .map_err(|e| invalid(&format!("0.5 metadata: {e}")))?;
                fields.multiscales.unwrap_or_default()
            }
            NgffVersion::V0_4 => {
                if !attrs.contains_key("multiscales") {
                    return Err(open_err(
                        path,
                        "no OME-Zarr metadata: the group attributes (.zattrs) have no `multiscales`",
                    ));
                }
                let fields: v0_4::OmeNgffGroupAttributes =
                    serde_json::from_value(Value::Object(attrs))
                        .map_err(|e| invalid(&format!("0.4 metadata: {e}")))?;
                fields
                    .validate()
                    .map_err(|e| invalid(&format!("0.4 metadata: {e}")))?;
                fields
                    .multiscales
                    .unwrap_or_default()
                    .into_iter()
                    .map(Into::into)
                    .collect()
            }
        };
        let image = multiscales.into_iter().next().ok_or_else(|| {
            open_err(
                path,
                "no OME-Zarr metadata: `multiscales` is missing or empty",
            )
        })?;
        let dims = image.axes.len();
        let (gs, gt) = transforms(
            path,
            "the image's coordinateTransformations",
            image.coordinate_transformations.as_deref().unwrap_or(&[]),
            dims,
        )?;
        // Every level's scale and translation in world units, before the whole-number check.
        let mut world = Vec::with_capacity(image.datasets.len());
        for ds in &image.datasets {
            let what = format!("level {:?}", ds.path);
            let (ls, lt) = transforms(path, &what, &ds.coordinate_transformations, dims)?;
            let scale: Vec<f64> = (0..dims).map(|d| gs[d] * ls[d]).collect();
            let translation: Vec<f64> = (0..dims).map(|d| gs[d] * lt[d] + gt[d]).collect();
            world.push((what, scale, translation));
        }
        let centred = pixel_centred(&world);
        let mut levels = Vec::with_capacity(world.len());
        for (ds, (what, scale, translation)) in image.datasets.iter().zip(&world) {
            let mut voxel_size = Vec::with_capacity(dims);
            let mut offset = Vec::with_capacity(dims);
            for d in 0..dims {
                let axis = &image.axes[d].name;
                let vs = whole(path, &format!("{what}: scale of axis {axis}"), scale[d])?;
                if vs <= 0 {
                    return Err(open_err(
                        path,
                        format!("{what}: scale of axis {axis} is {vs}, not positive"),
                    ));
                }
                voxel_size.push(vs);
                // Pixel centres: every level's voxels start where level 0's do.
                let t = if centred {
                    world[0].2[d]
                } else {
                    translation[d]
                };
                offset.push(whole(
                    path,
                    &format!("{what}: translation of axis {axis}"),
                    t,
                )?);
            }
            levels.push(OmeLevel {
                path: ds.path.clone(),
                voxel_size: voxel_size.into(),
                offset: offset.into(),
            });
        }
        Ok(OmeZarr {
            path: path.to_owned(),
            centred,
            version,
            name: image.name,
            axes: image.axes.iter().map(OmeAxis::from_ngff).collect(),
            levels,
        })
    }

    /// Starts the creation of an OME-Zarr image at `path`.
    pub fn builder(path: impl Into<PathBuf>) -> OmeZarrBuilder {
        OmeZarrBuilder {
            path: path.into(),
            name: None,
            axes: Vec::new(),
            levels: Vec::new(),
        }
    }

    /// Whether the image's levels are placed by their voxel centres: every coarser level is
    /// translated by half the growth of its voxels over level 0's (`t_k = t_0 + (s_k - s_0) / 2`
    /// on every axis, as ngff-zarr and ome-zarr-py write pyramids). blockwise's offsets are
    /// voxel corners (funlib's), so such an image's levels all get level 0's translation as
    /// their offset: the same voxels line up across levels as the writer meant, with the whole
    /// image placed by its corners. Images whose levels all share level 0's translation (as
    /// blockwise and funlib write them), and any other translations, are read as corners.
    pub fn pixel_centres(&self) -> bool {
        self.centred
    }

    /// The image group's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The NGFF version of the metadata.
    pub fn version(&self) -> NgffVersion {
        self.version
    }

    /// The multiscale image's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The axes, in the arrays' order.
    pub fn axes(&self) -> &[OmeAxis] {
        &self.axes
    }

    /// The levels, finest first as NGFF requires.
    pub fn levels(&self) -> &[OmeLevel] {
        &self.levels
    }

    /// Opens level `k` as a [`ZarrArray`] whose voxel size, offset, axis names and units are
    /// the OME-Zarr metadata's (not the array's funlib attributes).
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] if there is no level `k`, its array cannot be opened, or its number
    /// of dimensions is not the number of axes.
    pub fn level(&self, k: usize) -> Result<ZarrArray, StoreError> {
        let level = self.levels.get(k).ok_or_else(|| {
            open_err(
                &self.path,
                format!("no level {k}: the image has {} levels", self.levels.len()),
            )
        })?;
        let array = ZarrArray::open(&self.path, &level.path)?;
        let names = self.axes.iter().map(|a| a.name.clone()).collect();
        let units = self
            .axes
            .iter()
            .map(|a| a.unit.clone().unwrap_or_default())
            .collect();
        array.with_world(level.offset.clone(), level.voxel_size.clone(), names, units)
    }

    /// The indices of the space axes.
    fn space_axes(&self) -> Vec<usize> {
        (0..self.axes.len())
            .filter(|&d| self.axes[d].kind == Some(AxisKind::Space))
            .collect()
    }

    /// Level `k`'s ROI over its space axes only: the total ROI of a task over space whose
    /// blocks read and write every channel and time point with
    /// [`ZarrArray::read_spatial`] and [`ZarrArray::write_spatial`] (or
    /// [`ZarrArray::spatial_roi`]).
    ///
    /// # Errors
    ///
    /// As [`level`](Self::level).
    pub fn space_roi(&self, k: usize) -> Result<Roi, StoreError> {
        let roi = self.level(k)?.roi();
        let space = self.space_axes();
        Ok(Roi::new(
            space
                .iter()
                .map(|&d| roi.offset()[d])
                .collect::<Coordinate>(),
            space
                .iter()
                .map(|&d| roi.shape()[d])
                .collect::<Coordinate>(),
        ))
    }

    /// The names of the image's label images (the `labels` group's `labels` list; empty if the
    /// image has no `labels` group).
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] if the `labels` group's metadata is malformed.
    pub fn labels(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.path.join("labels");
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let (version, attrs) = group_attributes(&dir)?;
        let list = match version {
            NgffVersion::V0_5 => attrs.get("ome").and_then(|o| o.get("labels")),
            NgffVersion::V0_4 => attrs.get("labels"),
        };
        match list {
            None => Err(open_err(&dir, "the labels group has no `labels` list")),
            Some(v) => serde_json::from_value::<v0_5::Labels>(v.clone())
                .map_err(|e| open_err(&dir, format!("`labels` is not a list of names: {e}"))),
        }
    }

    /// Opens the label image `name` (a multiscale image in the `labels` group).
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] if the name is not in [`labels`](Self::labels) or the label image
    /// does not open as [`open`](Self::open).
    pub fn label(&self, name: &str) -> Result<OmeZarr, StoreError> {
        let names = self.labels()?;
        if !names.iter().any(|n| n == name) {
            return Err(open_err(
                &self.path.join("labels"),
                format!("no label image {name:?} (the labels are {names:?})"),
            ));
        }
        OmeZarr::open(self.path.join("labels").join(name))
    }
}

/// Creates an OME-Zarr image: its level arrays and the multiscales metadata (NGFF 0.5 for
/// zarr v3 levels, 0.4 for v2). From [`OmeZarr::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.create()`"]
pub struct OmeZarrBuilder {
    path: PathBuf,
    name: Option<String>,
    axes: Vec<OmeAxis>,
    levels: Vec<(String, ArraySpec)>,
}

impl OmeZarrBuilder {
    /// The multiscale image's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The axes, one per array dimension (NGFF: optional time, optional channel, then 2 or 3
    /// space axes).
    pub fn axes(mut self, axes: impl IntoIterator<Item = OmeAxis>) -> Self {
        self.axes = axes.into_iter().collect();
        self
    }

    /// Adds a level (finest first): its array path in the group and spec. The spec's voxel size
    /// and ROI offset become the level's `scale` and `translation`; its axis names and units
    /// default to the axes'.
    pub fn level(mut self, path: impl Into<String>, spec: ArraySpec) -> Self {
        self.levels.push((path.into(), spec));
        self
    }

    /// Creates the level arrays and writes the metadata, then opens the image.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] if there is no level, the levels mix zarr formats, a spec's number
    /// of dimensions is not the number of axes, the metadata is not valid NGFF (e.g. no space
    /// axis); and the errors of [`ZarrArray::create`].
    pub fn create(self) -> Result<OmeZarr, StoreError> {
        let path = self.path.as_path();
        let Some((_, first)) = self.levels.first() else {
            return Err(open_err(path, "an OME-Zarr image needs at least one level"));
        };
        let format = first.format;
        let mut levels = Vec::with_capacity(self.levels.len());
        for (p, spec) in &self.levels {
            if spec.format != format {
                return Err(open_err(
                    path,
                    format!(
                        "level {p:?} is zarr {:?}, the first level {format:?}",
                        spec.format
                    ),
                ));
            }
            if spec.roi.dims() != self.axes.len() {
                return Err(open_err(
                    path,
                    format!(
                        "level {p:?} has {} dimensions for {} axes",
                        spec.roi.dims(),
                        self.axes.len()
                    ),
                ));
            }
            levels.push(OmeLevel {
                path: p.clone(),
                voxel_size: spec.voxel_size.clone(),
                offset: spec.roi.offset().clone(),
            });
        }
        let version = NgffVersion::for_format(format);
        // Check the metadata before creating any array.
        let metadata = multiscales(path, version, self.name.as_deref(), &self.axes, &levels)?;
        for (p, spec) in &self.levels {
            let mut spec = spec.clone();
            spec.axis_names
                .get_or_insert_with(|| self.axes.iter().map(|a| a.name.clone()).collect());
            spec.units.get_or_insert_with(|| {
                self.axes
                    .iter()
                    .map(|a| a.unit.clone().unwrap_or_default())
                    .collect()
            });
            ZarrArray::create(path, p, &spec)?;
        }
        let shape: Vec<u64> = (0..first.roi.dims())
            .map(|d| u64::try_from(first.roi.shape()[d] / first.voxel_size[d].max(1)).unwrap_or(0))
            .collect();
        let omero = omero(&self.axes, &shape, first.data_type);
        store_multiscales(path, version, metadata, omero)?;
        OmeZarr::open(path)
    }
}

/// The validated multiscales metadata (the value of `multiscales`).
fn multiscales(
    path: &Path,
    version: NgffVersion,
    name: Option<&str>,
    axes: &[OmeAxis],
    levels: &[OmeLevel],
) -> Result<Value, StoreError> {
    let axes: Vec<Axis> = axes
        .iter()
        .map(|a| a.to_ngff(&path.display().to_string()))
        .collect::<Result<_, _>>()?;
    let mut datasets = Vec::with_capacity(levels.len());
    for level in levels {
        let what = format!("level {:?}", level.path);
        let mut transforms = vec![CoordinateTransform::Scale(
            ngff_list(&level.voxel_size, &format!("{what}: voxel size"), path)?.into(),
        )];
        if level.offset.iter().any(|o| o != 0) {
            transforms.push(CoordinateTransform::Translation(
                ngff_list(&level.offset, &format!("{what}: offset"), path)?.into(),
            ));
        }
        datasets.push(MultiscaleImageDataset {
            path: level.path.clone(),
            coordinate_transformations: transforms,
        });
    }
    let invalid = |e: &dyn std::fmt::Display| {
        open_err(path, format!("the image's metadata is not valid NGFF: {e}"))
    };
    let image = v0_5::MultiscaleImage {
        name: name.map(str::to_owned),
        axes,
        datasets,
        coordinate_transformations: None,
        r#type: None,
        metadata: None,
    };
    image.validate().map_err(|e| invalid(&e))?;
    let value = match version {
        NgffVersion::V0_5 => serde_json::to_value(vec![image]),
        NgffVersion::V0_4 => {
            let version = pep440_rs::Version::new([0, 4])
                .try_into()
                .map_err(|e| invalid(&e))?;
            serde_json::to_value(vec![v0_4::MultiscaleImage {
                version,
                name: image.name,
                axes: image.axes,
                datasets: image.datasets,
                coordinate_transformations: None,
                r#type: None,
                metadata: None,
            }])
        }
    };
    value.map_err(|e| invalid(&e))
}

/// The transitional `omero` rendering metadata for an image of `axes` whose first level has
/// `shape` and `data_type`: one channel per index of the channel axis (one channel if there is
/// none), white, windowed over the type's range. iohub (and funlib.persistence's
/// `open_ome_ds`, through it) needs it to open an image.
fn omero(axes: &[OmeAxis], shape: &[u64], data_type: DataType) -> Value {
    let channels = axes
        .iter()
        .position(|a| a.kind == Some(AxisKind::Channel))
        .and_then(|d| shape.get(d).copied())
        .unwrap_or(1);
    #[allow(clippy::cast_precision_loss)]
    let (min, max) = match data_type {
        DataType::U8 => (0.0, f64::from(u8::MAX)),
        DataType::U16 => (0.0, f64::from(u16::MAX)),
        DataType::U32 => (0.0, f64::from(u32::MAX)),
        DataType::U64 => (0.0, u64::MAX as f64),
        DataType::I8 => (f64::from(i8::MIN), f64::from(i8::MAX)),
        DataType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        DataType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        DataType::I64 => (i64::MIN as f64, i64::MAX as f64),
        DataType::F32 | DataType::F64 => (0.0, 1.0),
    };
    let omero = v0_4::Omero {
        channels: (0..channels.min(4096))
            .map(|c| {
                let mut other = Map::new();
                other.insert("label".into(), json!(c.to_string()));
                other.insert("active".into(), json!(true));
                v0_4::Channel {
                    color: v0_4::Color {
                        r: 255,
                        g: 255,
                        b: 255,
                    },
                    window: v0_4::Window {
                        min,
                        max,
                        start: min,
                        end: max,
                    },
                    other,
                }
            })
            .collect(),
        other: Map::new(),
    };
    serde_json::to_value(omero).unwrap_or(Value::Null)
}

/// Writes `multiscales` into the group at `path`, and `omero` unless the group has one,
/// keeping its other attributes.
fn store_multiscales(
    path: &Path,
    version: NgffVersion,
    value: Value,
    omero: Value,
) -> Result<(), StoreError> {
    match version {
        NgffVersion::V0_5 => {
            let file = path.join("zarr.json");
            let mut meta = read_json(&file)?.unwrap_or_else(|| {
                let mut m = Map::new();
                m.insert("zarr_format".into(), json!(3));
                m.insert("node_type".into(), json!("group"));
                m
            });
            let attrs = meta
                .entry("attributes")
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(attrs) = attrs else {
                return Err(open_err(&file, "`attributes` is not an object"));
            };
            let fields = v0_5::OmeFields::default();
            let mut ome = match serde_json::to_value(fields) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            };
            if let Some(Value::Object(old)) = attrs.get("ome") {
                for (k, v) in old {
                    ome.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            ome.insert("multiscales".into(), value);
            if !omero.is_null() {
                ome.entry("omero").or_insert(omero);
            }
            attrs.insert("ome".into(), Value::Object(ome));
            write_json(&file, &meta)
        }
        NgffVersion::V0_4 => {
            let zgroup = path.join(".zgroup");
            if read_json(&zgroup)?.is_none() {
                let mut m = Map::new();
                m.insert("zarr_format".into(), json!(2));
                write_json(&zgroup, &m)?;
            }
            let file = path.join(".zattrs");
            let mut attrs = read_json(&file)?.unwrap_or_default();
            attrs.insert("multiscales".into(), value);
            if !omero.is_null() {
                attrs.entry("omero").or_insert(omero);
            }
            write_json(&file, &attrs)
        }
    }
}

/// The NGFF name of a unit abbreviation funlib arrays often carry (`nm` is `nanometer`);
/// other units unchanged.
fn ngff_unit(unit: &str) -> &str {
    match unit {
        "nm" => "nanometer",
        "um" | "µm" | "μm" => "micrometer",
        "mm" => "millimeter",
        "cm" => "centimeter",
        "m" => "meter",
        "pm" => "picometer",
        "A" | "Å" => "angstrom",
        "s" => "second",
        "ms" => "millisecond",
        "us" | "µs" | "μs" => "microsecond",
        "ns" => "nanosecond",
        "min" => "minute",
        "h" => "hour",
        other => other,
    }
}

/// Writes the multiscales metadata of levels that already exist in the group at `path` (NGFF
/// 0.5 for zarr v3, 0.4 for v2). The axes come from the arrays' funlib axis names and units: a
/// name ending in `^` (funlib's channel marker) or named `c`, `channel` or `channels` is a
/// channel axis, one named `t` or `time` a time axis, the others space axes; unit
/// abbreviations like `nm` are written as NGFF's names (`nanometer`).
///
/// Returns `Ok(false)` without writing if those axes are not valid NGFF (fewer than 2 or more
/// than 3 space axes, more than 5 axes, a channel axis after a space axis).
pub(crate) fn write_levels(
    path: &Path,
    format: ZarrFormat,
    axis_names: &[String],
    units: &[String],
    levels: &[OmeLevel],
    (shape, data_type): (&[u64], DataType),
) -> Result<bool, StoreError> {
    let axes: Vec<OmeAxis> = axis_names
        .iter()
        .enumerate()
        .map(|(d, n)| {
            let unit = units
                .get(d)
                .filter(|u| !u.is_empty())
                .map(|u| ngff_unit(u).to_owned());
            // funlib's channel marker, or the names NGFF images give their channel and time
            // axes (an OME-Zarr level opened with `open_ome` keeps them).
            let kind = if n.ends_with('^') || matches!(n.as_str(), "c" | "channel" | "channels") {
                AxisKind::Channel
            } else if matches!(n.as_str(), "t" | "time") {
                AxisKind::Time
            } else {
                AxisKind::Space
            };
            let unit = if kind == AxisKind::Channel {
                None
            } else {
                unit
            };
            OmeAxis {
                name: n.clone(),
                kind: Some(kind),
                unit,
            }
        })
        .collect();
    let version = NgffVersion::for_format(format);
    match multiscales(path, version, None, &axes, levels) {
        Ok(value) => {
            store_multiscales(path, version, value, omero(&axes, shape, data_type))?;
            Ok(true)
        }
        Err(e) => {
            tracing::info!(
                path = %path.display(),
                "no OME-Zarr metadata written: {e}"
            );
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::store::DataType;

    fn spec(vs: [i64; 3], format: ZarrFormat) -> ArraySpec {
        let mut s = ArraySpec::new(
            Roi::new([0, 8, 16], [64, 64, 64]),
            vs,
            DataType::U16,
            vec![8, 8, 8],
        );
        s.format = format;
        s
    }

    fn zyx() -> Vec<OmeAxis> {
        ["z", "y", "x"]
            .into_iter()
            .map(|n| OmeAxis::space(n, "nanometer"))
            .collect()
    }

    #[test]
    fn whole_numbers_only() {
        let p = Path::new("p");
        assert_eq!(whole(p, "s", 4.0).ok(), Some(4));
        assert_eq!(whole(p, "s", -8.0).ok(), Some(-8));
        for bad in [0.5, f64::NAN, f64::INFINITY, 1e300] {
            let e = whole(p, "scale", bad).err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains("not a whole number")), "{bad}");
        }
    }

    #[test]
    fn f32_range_checked_on_write() {
        let p = Path::new("p");
        let ok: Coordinate = vec![1 << 24, -(1 << 24)].into();
        assert_eq!(
            ngff_list(&ok, "o", p).ok(),
            Some(vec![16_777_216.0, -16_777_216.0])
        );
        let big: Coordinate = vec![(1 << 24) + 1].into();
        assert!(ngff_list(&big, "offset", p).is_err());
    }

    #[test]
    fn axes_map_both_ways() {
        let axes = [
            OmeAxis::time("t", "second"),
            OmeAxis::channel("c"),
            OmeAxis::space("x", "nm"),
            OmeAxis {
                name: "q".into(),
                kind: Some(AxisKind::Other("quux".into())),
                unit: None,
            },
        ];
        for a in axes {
            let back = OmeAxis::from_ngff(&a.to_ngff("p").unwrap());
            assert_eq!(back, a);
        }
    }

    #[test]
    fn round_trip_both_versions() {
        for (format, version, file) in [
            (ZarrFormat::V3, NgffVersion::V0_5, "zarr.json"),
            (ZarrFormat::V2, NgffVersion::V0_4, ".zattrs"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("img.zarr");
            let image = OmeZarr::builder(&path)
                .name("img")
                .axes(zyx())
                .level("0", spec([4, 4, 4], format))
                .level("1", spec([8, 8, 8], format))
                .create()
                .unwrap();
            assert_eq!(image.version(), version);
            assert!(path.join(file).is_file());
            let image = OmeZarr::open(&path).unwrap();
            assert_eq!(image.name(), Some("img"));
            assert_eq!(image.axes(), zyx().as_slice());
            assert_eq!(image.levels()[1].voxel_size.as_slice(), &[8, 8, 8]);
            assert_eq!(image.levels()[1].offset.as_slice(), &[0, 8, 16]);
            let a = image.level(1).unwrap();
            assert_eq!(a.shape(), &[8, 8, 8]);
            assert_eq!(a.axis_names(), ["z", "y", "x"]);
            assert_eq!(a.units(), ["nanometer"; 3]);
            assert!(image.level(2).is_err());
        }
    }

    #[test]
    fn builder_rejects_bad_images() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.zarr");
        let err = |b: OmeZarrBuilder| b.create().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(OmeZarr::builder(&path).axes(zyx())).contains("at least one level"));
        let two = OmeZarr::builder(&path)
            .axes(zyx().into_iter().take(2))
            .level("0", spec([1, 1, 1], ZarrFormat::V3));
        assert!(err(two).contains("3 dimensions for 2 axes"));
        let mixed = OmeZarr::builder(&path)
            .axes(zyx())
            .level("0", spec([1, 1, 1], ZarrFormat::V3))
            .level("1", spec([2, 2, 2], ZarrFormat::V2));
        assert!(err(mixed).contains("zarr"));
        let channels = OmeZarr::builder(&path)
            .axes(["a", "b", "c"].map(OmeAxis::channel))
            .level("0", spec([1, 1, 1], ZarrFormat::V3));
        assert!(err(channels).contains("not valid NGFF"));
        // Nothing was created by the failed attempts.
        assert!(!path.join("0").exists());
    }

    #[test]
    fn funlib_axes_for_pyramids() {
        let dir = tempfile::tempdir().unwrap();
        let levels = [OmeLevel {
            path: "s0".into(),
            voxel_size: vec![1, 2, 2].into(),
            offset: vec![0, 0, 0].into(),
        }];
        let names: Vec<String> = ["c^", "y", "x"].map(String::from).to_vec();
        let units: Vec<String> = ["", "nm", "nm"].map(String::from).to_vec();
        let shape = (&[3u64, 10, 10][..], DataType::U16);
        let wrote =
            write_levels(dir.path(), ZarrFormat::V3, &names, &units, &levels, shape).unwrap();
        assert!(wrote);
        let (_, attrs) = group_attributes(dir.path()).unwrap();
        // One omero channel per index of the channel axis, windowed over the type's range.
        let channels = attrs["ome"]["omero"]["channels"].as_array().unwrap();
        assert_eq!(channels.len(), 3);
        assert_eq!(channels[2]["label"], "2");
        assert_eq!(channels[0]["window"]["max"], 65535.0);
        let axes = &attrs["ome"]["multiscales"][0]["axes"];
        assert_eq!(axes[0], json!({"name": "c^", "type": "channel"}));
        assert_eq!(
            axes[1],
            json!({"name": "y", "type": "space", "unit": "nanometer"})
        );
        assert_eq!(ngff_unit("µm"), "micrometer");
        assert_eq!(ngff_unit("parsec"), "parsec");
        // One space axis is not an NGFF image: nothing is written.
        let one = write_levels(
            &dir.path().join("one"),
            ZarrFormat::V3,
            &names[..2],
            &units[..2],
            &[OmeLevel {
                path: "s0".into(),
                voxel_size: vec![1, 1].into(),
                offset: vec![0, 0].into(),
            }],
            (&[3, 10], DataType::U8),
        )
        .unwrap();
        assert!(!one);
        assert!(!dir.path().join("one").exists());
    }
}
