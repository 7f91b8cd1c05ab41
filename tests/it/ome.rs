//! OME-Zarr images: creation and opening for NGFF 0.4 (zarr v2) and 0.5 (zarr v3), pyramids'
//! multiscales metadata, a fixture as ome-zarr-py writes it, and malformed metadata.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::Path;

use blockwise::ops::{Downsample, Pyramid};
use blockwise::store::{
    ArraySpec, AxisKind, DataType, NgffVersion, OmeAxis, OmeZarr, ZarrArray, ZarrFormat,
};
use blockwise::{Progress, Roi, Runner};
use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};

use crate::support::empty_dir;

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn open_err(path: &Path) -> String {
    OmeZarr::open(path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn create_and_open_both_versions_with_data() {
    for (format, version) in [
        (ZarrFormat::V2, NgffVersion::V0_4),
        (ZarrFormat::V3, NgffVersion::V0_5),
    ] {
        let dir = empty_dir("ome", &format!("roundtrip-{format:?}"));
        let path = dir.join("image.zarr");
        let mut levels = Vec::new();
        for k in 0..3u32 {
            let vs = 2i64.pow(k);
            let mut spec = ArraySpec::new(
                Roi::new([-80, 32, 64], [320, 64, 64]),
                [vs * 5, vs * 2, vs * 2],
                DataType::U16,
                vec![4, 8, 8],
            );
            spec.format = format;
            levels.push(spec);
        }
        let mut builder = OmeZarr::builder(&path).name("em").axes([
            OmeAxis::space("z", "nanometer"),
            OmeAxis::space("y", "nanometer"),
            OmeAxis::space("x", "nanometer"),
        ]);
        for (k, spec) in levels.iter().enumerate() {
            builder = builder.level(format!("s{k}"), spec.clone());
        }
        let created = builder.create().unwrap();
        assert_eq!(created.version(), version);

        let image = OmeZarr::open(&path).unwrap();
        assert_eq!(image.version(), version);
        assert_eq!(image.name(), Some("em"));
        assert_eq!(image.levels().len(), 3);
        for (k, level) in image.levels().iter().enumerate() {
            assert_eq!(level.path, format!("s{k}"));
            assert_eq!(level.voxel_size, levels[k].voxel_size, "level {k}");
            assert_eq!(level.offset.as_slice(), &[-80, 32, 64], "level {k}");
        }
        // Data written through one level's OME view reads back through another open.
        let s1 = image.level(1).unwrap();
        assert_eq!(s1.roi(), levels[1].roi);
        assert_eq!(s1.units(), ["nanometer"; 3]);
        let data = ArrayD::from_shape_fn(IxDyn(&[32, 16, 16]), |i| {
            (i[0] * 256 + i[1] * 16 + i[2]) as u16
        });
        s1.write(&s1.roi(), data.view()).unwrap();
        let again = ZarrArray::open_ome(&path, 1).unwrap();
        assert_eq!(again.read::<u16>(&again.roi()).unwrap().data(), &data);
        // NGFF 0.5 lives in zarr.json, 0.4 in .zattrs.
        match version {
            NgffVersion::V0_5 => {
                let meta = read_json(&path.join("zarr.json"));
                assert_eq!(meta["attributes"]["ome"]["version"], json!("0.5"));
                assert_eq!(
                    meta["attributes"]["ome"]["multiscales"][0]["datasets"][2]["coordinateTransformations"],
                    json!([
                        {"type": "scale", "scale": [20.0, 8.0, 8.0]},
                        {"type": "translation", "translation": [-80.0, 32.0, 64.0]}
                    ])
                );
            }
            _ => {
                let attrs = read_json(&path.join(".zattrs"));
                assert_eq!(attrs["multiscales"][0]["version"], json!("0.4"));
                assert!(path.join(".zgroup").is_file());
            }
        }
    }
}

#[test]
fn pyramid_output_is_an_ome_zarr_image() {
    for format in [ZarrFormat::V2, ZarrFormat::V3] {
        let dir = empty_dir("ome", &format!("pyramid-{format:?}"));
        let roi = Roi::new([40, 0, 8], [128, 128, 64]);
        let mut spec = ArraySpec::new(roi.clone(), [4, 2, 2], DataType::U8, vec![8, 16, 8]);
        spec.format = format;
        spec.axis_names = Some(vec!["z".into(), "y".into(), "x".into()]);
        spec.units = Some(vec!["nm".into(); 3]); // written as NGFF's "nanometer"
        let raw = ZarrArray::create(&dir, "raw", &spec).unwrap();
        let data =
            ArrayD::from_shape_fn(IxDyn(&[32, 64, 32]), |i| (i[0] * 7 + i[1] * 3 + i[2]) as u8);
        raw.write(&roi, data.view()).unwrap();
        let out = dir.join("pyramid.zarr");
        let summary = Pyramid::builder(&raw, &out)
            .levels(3)
            .factor([1, 2, 2])
            .method(Downsample::Max)
            .run(&Runner::new().progress(Progress::Never))
            .unwrap();
        assert!(summary.is_success());

        let image = OmeZarr::open(&out).unwrap();
        // NGFF 0.4 for zarr v2 levels, 0.5 for v3 (the levels' format, which need not be the
        // source's).
        let (version, group_file) = if out.join("s1/.zarray").is_file() {
            (NgffVersion::V0_4, ".zattrs")
        } else {
            assert!(out.join("s1/zarr.json").is_file());
            (NgffVersion::V0_5, "zarr.json")
        };
        assert_eq!(image.version(), version);
        assert!(out.join(group_file).is_file());
        let kinds: Vec<_> = image.axes().iter().map(|a| a.kind.clone()).collect();
        assert_eq!(kinds, vec![Some(AxisKind::Space); 3]);
        assert_eq!(image.axes()[2].unit.as_deref(), Some("nanometer"));
        let want = [[4, 2, 2], [4, 4, 4], [4, 8, 8]];
        for (k, level) in image.levels().iter().enumerate() {
            assert_eq!(level.path, format!("s{k}"));
            assert_eq!(level.voxel_size.as_slice(), &want[k], "level {k}");
            assert_eq!(level.offset.as_slice(), &[40, 0, 8], "level {k}");
            // The OME view and the funlib attributes agree.
            let ome = image.level(k).unwrap();
            let plain = ZarrArray::open(&out, &format!("s{k}")).unwrap();
            assert_eq!(ome.roi(), plain.roi(), "level {k}");
            assert_eq!(ome.voxel_size(), plain.voxel_size(), "level {k}");
            assert_eq!(
                ome.read::<u8>(&ome.roi()).unwrap().data(),
                plain.read::<u8>(&plain.roi()).unwrap().data()
            );
        }
    }
}

#[test]
fn pyramid_of_one_axis_has_no_ome_metadata() {
    let dir = empty_dir("ome", "pyramid-1d");
    let roi = Roi::new([0], [64]);
    let raw = ZarrArray::create(
        &dir,
        "raw",
        &ArraySpec::new(roi.clone(), [1], DataType::U8, vec![8]),
    )
    .unwrap();
    raw.write(&roi, ArrayD::from_elem(IxDyn(&[64]), 3u8).view())
        .unwrap();
    let out = dir.join("p.zarr");
    let summary = Pyramid::builder(&raw, &out)
        .levels(2)
        .factor([2])
        .run(&Runner::new().progress(Progress::Never))
        .unwrap();
    assert!(summary.is_success());
    assert_eq!(ZarrArray::open(&out, "s1").unwrap().shape(), &[32]);
    assert!(
        open_err(&out).contains("no OME-Zarr metadata"),
        "{}",
        open_err(&out)
    );
}

/// A 3-level NGFF 0.5 image (voxels [4, 2, 2], [8, 4, 4], [16, 8, 8], level 0 at [16, 0, 0])
/// whose levels' translations are then set to `translations`.
fn image_with_translations(path: &Path, translations: [[f64; 3]; 3]) {
    let mut builder = OmeZarr::builder(path).axes([
        OmeAxis::space("z", "nanometer"),
        OmeAxis::space("y", "nanometer"),
        OmeAxis::space("x", "nanometer"),
    ]);
    for k in 0..3u32 {
        let f = 2i64.pow(k);
        let spec = ArraySpec::new(
            Roi::new([16, 0, 0], [128, 64, 64]),
            [4 * f, 2 * f, 2 * f],
            DataType::U8,
            vec![8, 8, 8],
        );
        builder = builder.level(format!("s{k}"), spec);
    }
    builder.create().unwrap();
    let mut meta = read_json(&path.join("zarr.json"));
    for (k, t) in translations.iter().enumerate() {
        meta["attributes"]["ome"]["multiscales"][0]["datasets"][k]["coordinateTransformations"]
            [1]["translation"] = json!(t);
    }
    write_json(&path.join("zarr.json"), &meta);
}

#[test]
fn pyramids_placed_by_voxel_centres_line_up_by_their_corners() {
    let dir = empty_dir("ome", "centres");
    // As ngff-zarr 0.50 writes a pyramid of a level 0 at [16, 0, 0] with voxels [4, 2, 2]:
    // every coarser level moved by half the growth of its voxels.
    let path = dir.join("centres.zarr");
    image_with_translations(
        &path,
        [[16.0, 0.0, 0.0], [18.0, 1.0, 1.0], [22.0, 3.0, 3.0]],
    );
    let image = OmeZarr::open(&path).unwrap();
    assert!(image.pixel_centres());
    for (k, level) in image.levels().iter().enumerate() {
        assert_eq!(level.offset.as_slice(), &[16, 0, 0], "level {k}");
    }
    assert_eq!(
        ZarrArray::open_ome(&path, 2).unwrap().roi(),
        Roi::new([16, 0, 0], [128, 64, 64])
    );
    // As blockwise and funlib write: every level at level 0's corner.
    let path = dir.join("corners.zarr");
    image_with_translations(&path, [[16.0, 0.0, 0.0]; 3]);
    let image = OmeZarr::open(&path).unwrap();
    assert!(!image.pixel_centres());
    assert!(
        image
            .levels()
            .iter()
            .all(|l| l.offset.as_slice() == [16, 0, 0])
    );
    // Any other translations are corners, level by level.
    let path = dir.join("other.zarr");
    image_with_translations(
        &path,
        [[16.0, 0.0, 0.0], [24.0, 0.0, 0.0], [22.0, 3.0, 3.0]],
    );
    let image = OmeZarr::open(&path).unwrap();
    assert!(!image.pixel_centres());
    let offsets: Vec<&[i64]> = image.levels().iter().map(|l| l.offset.as_slice()).collect();
    assert_eq!(offsets, [&[16, 0, 0][..], &[24, 0, 0], &[22, 3, 3]]);
}

/// Multiscales metadata as ome-zarr-py 0.4 writes it: float scales, a channel axis first.
fn ome_zarr_py_image(path: &Path, scale0: Value, translation: Value) {
    write_json(&path.join(".zgroup"), &json!({"zarr_format": 2}));
    write_json(
        &path.join(".zattrs"),
        &json!({
            "multiscales": [{
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "z", "type": "space", "unit": "nanometer"},
                    {"name": "y", "type": "space", "unit": "nanometer"},
                    {"name": "x", "type": "space", "unit": "nanometer"}
                ],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [
                        {"type": "scale", "scale": scale0},
                        {"type": "translation", "translation": translation}
                    ]},
                    {"path": "1", "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0, 8.0, 8.0, 8.0]},
                        {"type": "translation", "translation": translation}
                    ]}
                ],
                "name": "image",
                "version": "0.4"
            }],
            "omero": {"channels": [{"label": "DAPI", "color": "0000FF", "active": true,
                                    "window": {"start": 0, "end": 255, "min": 0, "max": 255}}],
                      "rdefs": {"model": "color"}}
        }),
    );
    for (p, n) in [("0", 16), ("1", 8)] {
        let mut spec = ArraySpec::new(
            Roi::new([0, 0, 0, 0], [2, n, n, n]),
            [1, 1, 1, 1],
            DataType::U8,
            vec![1, 8, 8, 8],
        );
        spec.format = ZarrFormat::V2;
        let a = ZarrArray::create(path, p, &spec).unwrap();
        let data = ArrayD::from_shape_fn(IxDyn(&[2, n as usize, n as usize, n as usize]), |i| {
            (i[0] * 100 + i[3]) as u8
        });
        a.write(&a.roi(), data.view()).unwrap();
        // ome-zarr-py writes no funlib attributes.
        write_json(&path.join(p).join(".zattrs"), &json!({}));
    }
}

#[test]
fn ome_zarr_py_fixture_with_channels_and_labels() {
    let dir = empty_dir("ome", "fixture");
    let path = dir.join("image.zarr");
    ome_zarr_py_image(
        &path,
        json!([1.0, 4.0, 4.0, 4.0]),
        json!([0.0, 40.0, 0.0, -8.0]),
    );
    // A labels group with one label image, itself a multiscale image.
    write_json(&path.join("labels/.zgroup"), &json!({"zarr_format": 2}));
    write_json(&path.join("labels/.zattrs"), &json!({"labels": ["cells"]}));
    ome_zarr_py_image(
        &path.join("labels/cells"),
        json!([1.0, 4.0, 4.0, 4.0]),
        json!([0.0, 40.0, 0.0, -8.0]),
    );
    let mut attrs = read_json(&path.join("labels/cells/.zattrs"));
    attrs["image-label"] =
        json!({"version": "0.4", "colors": [{"label-value": 1, "rgba": [255, 0, 0, 255]}]});
    write_json(&path.join("labels/cells/.zattrs"), &attrs);

    let image = OmeZarr::open(&path).unwrap();
    assert_eq!(image.version(), NgffVersion::V0_4);
    assert_eq!(image.axes()[0], OmeAxis::channel("c"));
    assert_eq!(image.axes()[1], OmeAxis::space("z", "nanometer"));
    assert_eq!(image.levels()[0].voxel_size.as_slice(), &[1, 4, 4, 4]);
    assert_eq!(image.levels()[1].voxel_size.as_slice(), &[1, 8, 8, 8]);
    assert_eq!(image.levels()[1].offset.as_slice(), &[0, 40, 0, -8]);

    // Level 0 in world units: a ROI spanning both channels reads all of them.
    let s0 = ZarrArray::open_ome(&path, 0).unwrap();
    assert_eq!(s0.roi(), Roi::new([0, 40, 0, -8], [2, 64, 64, 64]));
    assert_eq!(s0.axis_names(), ["c", "z", "y", "x"]);
    assert_eq!(s0.units(), ["", "nanometer", "nanometer", "nanometer"]);
    let part = s0
        .read::<u8>(&Roi::new([0, 40, 0, 0], [2, 4, 4, 8]))
        .unwrap();
    assert_eq!(part.shape(), &[2, 1, 1, 2]);
    assert_eq!(
        part.data().iter().copied().collect::<Vec<u8>>(),
        vec![2, 3, 102, 103]
    );

    // A block of a task over the space axes reads both channels.
    assert_eq!(
        image.space_roi(1).unwrap(),
        Roi::new([40, 0, -8], [64, 64, 64])
    );
    let block = Roi::new([40, 0, 0], [4, 4, 8]);
    let full = s0.spatial_roi(&block).unwrap();
    assert_eq!(full, Roi::new([0, 40, 0, 0], [2, 4, 4, 8]));
    assert_eq!(s0.read_spatial::<u8>(&block).unwrap().data(), part.data());
    let e = s0
        .spatial_roi(&Roi::new([0, 0, 0, 0, 0], [1, 1, 1, 1, 1]))
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("5 dims, the array only 4")));

    assert_eq!(image.labels().unwrap(), vec!["cells".to_string()]);
    let cells = image.label("cells").unwrap();
    assert_eq!(cells.levels()[1].voxel_size.as_slice(), &[1, 8, 8, 8]);
    assert_eq!(cells.level(1).unwrap().shape(), &[2, 8, 8, 8]);
    let missing = image
        .label("nuclei")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(missing.contains("no label image \"nuclei\""), "{missing}");
    // An image without a labels group has no labels.
    assert!(cells.labels().unwrap().is_empty());
}

#[test]
fn bad_metadata_is_an_error_naming_the_problem() {
    let dir = empty_dir("ome", "bad");

    let none = dir.join("none.zarr");
    assert!(
        open_err(&none).contains("no zarr group"),
        "{}",
        open_err(&none)
    );

    let plain = dir.join("plain.zarr");
    ZarrArray::create(
        &plain,
        "s0",
        &ArraySpec::new(Roi::new([0, 0], [8, 8]), [1, 1], DataType::U8, vec![8, 8]),
    )
    .unwrap();
    let e = open_err(&plain);
    assert!(
        e.contains("no OME-Zarr metadata") && e.contains("`ome`"),
        "{e}"
    );

    let v2 = dir.join("v2.zarr");
    write_json(&v2.join(".zgroup"), &json!({"zarr_format": 2}));
    write_json(&v2.join(".zattrs"), &json!({"voxel_size": [1, 1]}));
    let e = open_err(&v2);
    assert!(e.contains("no `multiscales`"), "{e}");

    let half = dir.join("half.zarr");
    ome_zarr_py_image(
        &half,
        json!([1.0, 0.5, 4.0, 4.0]),
        json!([0.0, 0.0, 0.0, 0.0]),
    );
    let e = open_err(&half);
    assert!(
        e.contains("level \"0\": scale of axis z") && e.contains("not a whole number"),
        "{e}"
    );

    let shifted = dir.join("shifted.zarr");
    ome_zarr_py_image(
        &shifted,
        json!([1.0, 4.0, 4.0, 4.0]),
        json!([0.0, 0.0, 2.5, 0.0]),
    );
    let e = open_err(&shifted);
    assert!(
        e.contains("translation of axis y") && e.contains("not a whole number"),
        "{e}"
    );

    let short = dir.join("short.zarr");
    ome_zarr_py_image(&short, json!([4.0, 4.0, 4.0]), json!([0.0, 0.0, 0.0, 0.0]));
    let e = open_err(&short);
    assert!(e.contains("invalid NGFF"), "{e}");

    // Axes the NGFF schema rejects: a single space axis.
    let one = dir.join("one.zarr");
    write_json(
        &one.join("zarr.json"),
        &json!({
            "zarr_format": 3, "node_type": "group",
            "attributes": {"ome": {"version": "0.5", "multiscales": [{
                "axes": [{"name": "x", "type": "space"}],
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0]}]}]
            }]}}
        }),
    );
    let e = open_err(&one);
    assert!(
        e.contains("invalid NGFF 0.5") && e.contains("space axes"),
        "{e}"
    );

    // The metadata has more axes than the level's array.
    let dims = dir.join("dims.zarr");
    ome_zarr_py_image(
        &dims,
        json!([1.0, 4.0, 4.0, 4.0]),
        json!([0.0, 0.0, 0.0, 0.0]),
    );
    let mut spec = ArraySpec::new(
        Roi::new([0, 0, 0], [8, 8, 8]),
        [1, 1, 1],
        DataType::U8,
        vec![8, 8, 8],
    );
    spec.format = ZarrFormat::V2;
    spec.overwrite = true;
    ZarrArray::create(&dims, "1", &spec).unwrap();
    let e = ZarrArray::open_ome(&dims, 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("3 dimensions") && e.contains("4 axes"), "{e}");
    let e = ZarrArray::open_ome(&dims, 5)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("no level 5"), "{e}");
}

#[test]
fn time_and_channel_axes_are_carried_through_writes_and_reads() {
    let dir = empty_dir("ome", "tczyx");
    let path = dir.join("movie.zarr");
    let roi = Roi::new([0, 0, 0, 0, 0], [3, 2, 8, 16, 16]);
    let spec = ArraySpec::new(
        roi.clone(),
        [1, 1, 2, 2, 2],
        DataType::F32,
        vec![1, 2, 4, 8, 8],
    );
    let image = OmeZarr::builder(&path)
        .axes([
            OmeAxis::time("t", "second"),
            OmeAxis::channel("c"),
            OmeAxis::space("z", "micrometer"),
            OmeAxis::space("y", "micrometer"),
            OmeAxis::space("x", "micrometer"),
        ])
        .level("0", spec)
        .create()
        .unwrap();
    let kinds: Vec<_> = image
        .axes()
        .iter()
        .map(|a| a.kind.clone().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            AxisKind::Time,
            AxisKind::Channel,
            AxisKind::Space,
            AxisKind::Space,
            AxisKind::Space
        ]
    );
    assert_eq!(image.axes()[0].unit.as_deref(), Some("second"));
    let level = image.level(0).unwrap();
    assert_eq!(level.axis_names(), ["t", "c", "z", "y", "x"]);
    // One time point, both channels of a space ROI, written and read back in world units.
    let block = Roi::new([1, 0, 4, 8, 0], [1, 2, 4, 8, 16]);
    let data = ArrayD::from_shape_fn(IxDyn(&[1, 2, 2, 4, 8]), |i| {
        (i[1] * 1000 + i[2] * 100 + i[3] * 10 + i[4]) as f32
    });
    level.write(&block, data.view()).unwrap();
    let back = ZarrArray::open_ome(&path, 0)
        .unwrap()
        .read::<f32>(&block)
        .unwrap();
    assert_eq!(back.data(), &data);
    // Other time points were not written.
    let t0 = level
        .read::<f32>(&Roi::new([0, 0, 4, 8, 0], [1, 2, 4, 8, 16]))
        .unwrap();
    assert!(t0.iter().all(|&v| v == 0.0));
}

#[test]
fn a_task_over_space_reads_all_channels_of_its_blocks() {
    let dir = empty_dir("ome", "space-task");
    let path = dir.join("cyx.zarr");
    let spec = ArraySpec::new(
        Roi::new([0, 16, 0], [3, 64, 64]),
        [1, 2, 2],
        DataType::U16,
        vec![3, 8, 8],
    );
    let image = OmeZarr::builder(&path)
        .axes([
            OmeAxis::channel("c"),
            OmeAxis::space("y", "nanometer"),
            OmeAxis::space("x", "nanometer"),
        ])
        .level("0", spec)
        .create()
        .unwrap();
    let input = image.level(0).unwrap();
    let data = ArrayD::from_shape_fn(IxDyn(&[3, 32, 32]), |i| {
        (i[0] * 1000 + i[1] * 32 + i[2]) as u16
    });
    input.write(&input.roi(), data.view()).unwrap();

    let total = image.space_roi(0).unwrap();
    assert_eq!(total, Roi::new([16, 0], [64, 64]));
    let out = ZarrArray::create(
        &dir,
        "sum",
        &ArraySpec::new(total.clone(), [2, 2], DataType::U16, vec![8, 8]),
    )
    .unwrap();
    let block = Roi::new([0, 0], [16, 16]);
    let (inp, dst) = (input.clone(), out.clone());
    let task = blockwise::Task::builder("channel-sum", total, block.clone(), block)
        .writes(&out)
        .process(move |b: &blockwise::Block| {
            let all = inp.read_spatial::<u16>(b.read_roi())?;
            let sum = all.data().sum_axis(ndarray::Axis(0));
            dst.write(b.write_roi(), sum.view())?;
            Ok(())
        })
        .build()
        .unwrap();
    let summary = Runner::new().progress(Progress::Never).run([task]).unwrap();
    assert!(summary.is_success());
    let got = out.read::<u16>(&out.roi()).unwrap();
    let want = data.sum_axis(ndarray::Axis(0));
    assert_eq!(got.data(), &want);
}

/// The Python side of the interop tests: `tests/interop/ome_python.py` run by the Python in
/// the environment variable `var` (CI sets `BLOCKWISE_OME04_PYTHON` to a virtualenv with
/// ome-zarr-py < 0.12, iohub and funlib.persistence on zarr 2, and `BLOCKWISE_OME05_PYTHON`
/// to one with ome-zarr-py >= 0.12 on zarr 3); None (the test prints a note and passes)
/// when it is not set.
fn ome_python(var: &str, args: &[&str]) -> Option<Value> {
    let py = std::env::var(var).ok().filter(|p| !p.is_empty())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/ome_python.py");
    let out = std::process::Command::new(&py)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ome_python.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn level_sum(a: &ZarrArray) -> i64 {
    a.read::<u8>(&a.roi())
        .unwrap()
        .iter()
        .map(|&v| i64::from(v))
        .sum()
}

/// A pyramid blockwise writes opens in ome-zarr-py, iohub and funlib.persistence (NGFF 0.4, zarr
/// v2) and in ome-zarr-py (NGFF 0.5, zarr v3) with every level's shape, voxel size (`scale`),
/// offset (`translation`) and voxels.
#[test]
fn pyramids_open_in_ome_zarr_py_iohub_and_funlib_persistence() {
    for (format, var, want_libs) in [
        (
            ZarrFormat::V2,
            "BLOCKWISE_OME04_PYTHON",
            &["ome-zarr", "iohub", "funlib.persistence"][..],
        ),
        (ZarrFormat::V3, "BLOCKWISE_OME05_PYTHON", &["ome-zarr"][..]),
    ] {
        let dir = empty_dir("ome", &format!("interop-{format:?}"));
        let roi = Roi::new([64, 32, 32], [160, 96, 112]);
        let mut spec = ArraySpec::new(roi.clone(), [4, 2, 2], DataType::U8, vec![8, 16, 16]);
        spec.format = format;
        spec.axis_names = Some(vec!["z".into(), "y".into(), "x".into()]);
        spec.units = Some(vec!["nm".into(); 3]);
        let raw = ZarrArray::create(&dir, "raw", &spec).unwrap();
        let data = ArrayD::from_shape_fn(IxDyn(&[40, 48, 56]), |i| {
            ((i[0] * 7919 + i[1] * 104_729 + i[2] * 31) % 251) as u8
        });
        raw.write(&roi, data.view()).unwrap();
        let out = dir.join("pyramid.zarr");
        let summary = Pyramid::builder(&raw, &out)
            .levels(3)
            .method(Downsample::Mean)
            .run(&Runner::new().progress(Progress::Never))
            .unwrap();
        assert!(summary.is_success());
        let Some(got) = ome_python(var, &["read", out.to_str().unwrap()]) else {
            eprintln!("OME-Zarr interop ({format:?}) skipped: set {var}");
            continue;
        };
        for lib in want_libs {
            let report = &got[*lib];
            assert!(report.get("error").is_none(), "{lib}: {}", report["error"]);
            let levels = report["levels"]
                .as_array()
                .unwrap_or_else(|| panic!("{lib}: {got}"));
            assert_eq!(levels.len(), 3, "{lib}: {report}");
            for (k, level) in levels.iter().enumerate() {
                let a = ZarrArray::open(&out, &format!("s{k}")).unwrap();
                let f = |v: &Value| -> Vec<i64> {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as i64)
                        .collect()
                };
                assert_eq!(level["path"], format!("s{k}"), "{lib} s{k}");
                assert_eq!(
                    f(&level["shape"]),
                    a.shape().iter().map(|&s| s as i64).collect::<Vec<_>>(),
                    "{lib} s{k}"
                );
                assert_eq!(
                    f(&level["scale"]),
                    a.voxel_size().as_slice(),
                    "{lib} s{k}: scale"
                );
                assert_eq!(
                    f(&level["translation"]),
                    a.offset().as_slice(),
                    "{lib} s{k}: translation"
                );
                assert_eq!(
                    level["sum"].as_i64().unwrap(),
                    level_sum(&a),
                    "{lib} s{k}: voxels"
                );
            }
        }
    }
}

/// A pyramid ome-zarr-py downsamples itself opens with every level at level 0's offset:
/// ome-zarr-py >= 0.12 (NGFF 0.5) places coarser levels by their voxel centres (translations
/// 0.5, 1.5 for voxels 2 and 4), older versions write no translations.
#[test]
fn pyramids_ome_zarr_py_downsamples_line_up_here() {
    for (version, var) in [
        ("0.4", "BLOCKWISE_OME04_PYTHON"),
        ("0.5", "BLOCKWISE_OME05_PYTHON"),
    ] {
        let dir = empty_dir("ome", &format!("scaled-by-ome-zarr-py-{version}"));
        let path = dir.join("image.zarr");
        let Some(written) = ome_python(var, &["write-scaled", path.to_str().unwrap(), version])
        else {
            eprintln!("OME-Zarr interop ({version}) skipped: set {var}");
            continue;
        };
        let image = OmeZarr::open(&path).unwrap();
        let levels = written["ome-zarr"]["levels"].as_array().unwrap();
        assert_eq!(image.levels().len(), 3);
        let numbers = |v: &Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let shifted = levels
            .iter()
            .any(|l| numbers(&l["translation"]) != numbers(&levels[0]["translation"]));
        assert_eq!(image.pixel_centres(), shifted, "{version}: {written}");
        for (k, level) in levels.iter().enumerate() {
            let ours = &image.levels()[k];
            let scale: Vec<i64> = numbers(&level["scale"]).iter().map(|&v| v as i64).collect();
            assert_eq!(ours.voxel_size.as_slice(), scale, "{version} level {k}");
            assert_eq!(ours.offset.as_slice(), &[0, 0, 0], "{version} level {k}");
            let a = image.level(k).unwrap();
            assert_eq!(
                a.roi(),
                image.level(0).unwrap().roi(),
                "{version} level {k}"
            );
            assert_eq!(
                level_sum(&a),
                level["sum"].as_i64().unwrap(),
                "{version} level {k}"
            );
        }
    }
}

/// An image ome-zarr-py writes (NGFF 0.4 and 0.5) opens here with its levels' shapes, voxel
/// sizes, offsets and voxels.
#[test]
fn images_written_by_ome_zarr_py_open_here() {
    for (version, var) in [
        ("0.4", "BLOCKWISE_OME04_PYTHON"),
        ("0.5", "BLOCKWISE_OME05_PYTHON"),
    ] {
        let dir = empty_dir("ome", &format!("from-ome-zarr-py-{version}"));
        let path = dir.join("image.zarr");
        let Some(written) = ome_python(var, &["write", path.to_str().unwrap(), version]) else {
            eprintln!("OME-Zarr interop ({version}) skipped: set {var}");
            continue;
        };
        let image = OmeZarr::open(&path).unwrap();
        let want = if version == "0.4" {
            NgffVersion::V0_4
        } else {
            NgffVersion::V0_5
        };
        assert_eq!(image.version(), want);
        let levels = written["ome-zarr"]["levels"].as_array().unwrap();
        assert_eq!(image.levels().len(), levels.len());
        for (k, level) in levels.iter().enumerate() {
            let f = |v: &Value| -> Vec<i64> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as i64)
                    .collect()
            };
            let ours = &image.levels()[k];
            assert_eq!(ours.path, level["path"].as_str().unwrap());
            assert_eq!(
                ours.voxel_size.as_slice(),
                f(&level["scale"]),
                "{version} level {k}"
            );
            assert_eq!(
                ours.offset.as_slice(),
                f(&level["translation"]),
                "{version} level {k}"
            );
            let a = image.level(k).unwrap();
            assert_eq!(
                a.shape().iter().map(|&s| s as i64).collect::<Vec<_>>(),
                f(&level["shape"])
            );
            assert_eq!(
                level_sum(&a),
                level["sum"].as_i64().unwrap(),
                "{version} level {k}"
            );
            assert_eq!(a.axis_names(), ["z", "y", "x"]);
        }
    }
}

/// A pyramid of an OME-Zarr level as ome-zarr-py writes it (no funlib attributes, a channel
/// axis): the levels take the OME voxel size and offset, the channel axis stays whole, and the
/// output is an OME-Zarr image with the same axis types.
#[test]
fn a_pyramid_of_an_ome_zarr_level_keeps_its_world_metadata_and_axes() {
    let dir = empty_dir("ome", "pyramid-of-ome");
    let image = dir.join("image.zarr");
    ome_zarr_py_image(
        &image,
        json!([1.0, 4.0, 4.0, 4.0]),
        json!([0.0, 64.0, 32.0, 0.0]),
    );
    let s0 = ZarrArray::open_ome(&image, 0).unwrap();
    assert_eq!(s0.voxel_size().as_slice(), &[1, 4, 4, 4]);
    let out = dir.join("pyramid.zarr");
    let summary = Pyramid::builder(&s0, &out)
        .levels(2)
        .factor([1, 2, 2, 2])
        .run(&Runner::new().progress(Progress::Never))
        .unwrap();
    assert!(summary.is_success(), "{summary}");
    let made = OmeZarr::open(&out).unwrap();
    let kinds: Vec<_> = made.axes().iter().map(|a| a.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            AxisKind::Channel,
            AxisKind::Space,
            AxisKind::Space,
            AxisKind::Space
        ]
        .map(Some)
    );
    assert_eq!(made.levels()[1].voxel_size.as_slice(), &[1, 8, 8, 8]);
    assert_eq!(made.levels()[1].offset.as_slice(), &[0, 64, 32, 0]);
    let s1 = made.level(1).unwrap();
    assert_eq!(s1.shape(), &[2, 8, 8, 8]);
    // Channel 1, x = 2k and 2k + 1 averaged: 100 + 2k + 0.5, rounded half to even.
    let v = s1.read::<u8>(&s1.roi()).unwrap();
    assert_eq!(v.data()[[1, 0, 0, 3]], 106);
}
