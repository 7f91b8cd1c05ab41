//! Interop with zarr-python: blockwise reads what zarr-python writes (v2 and v3, with
//! funlib.persistence attributes) and zarr-python reads what blockwise writes.
//!
//! Runs when `BLOCKWISE_PYTHON` names a Python with `zarr>=3` and numpy (CI sets it up);
//! otherwise it prints a note and passes.

use std::process::Command;

use blockwise::Roi;
use blockwise::store::{ArraySpec, DataType, ZarrArray, ZarrFormat};
use ndarray::{ArrayD, IxDyn};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn python() -> Option<String> {
    std::env::var("BLOCKWISE_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
}

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/zarr_python.py").to_owned()
}

fn run(py: &str, args: &[&str]) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let out = Command::new(py).arg(script()).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "zarr_python.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn zarr_python_reads_what_blockwise_writes_and_back() -> TestResult {
    let Some(py) = python() else {
        eprintln!("interop test skipped: set BLOCKWISE_PYTHON to a python with zarr>=3 and numpy");
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("blockwise-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    // blockwise → zarr-python, v3 and v2.
    let data = ArrayD::from_shape_vec(
        IxDyn(&[6, 8, 10]),
        (0..480u32).map(|i| (i % 200) as u8).collect(),
    )?;
    let expected_sum: i64 = data.iter().map(|&v| i64::from(v)).sum();
    for (name, format) in [("v3", ZarrFormat::V3), ("v2", ZarrFormat::V2)] {
        let mut spec = ArraySpec::new(
            Roi::new([0, 8, 20], [24, 32, 40]),
            [4, 4, 4],
            DataType::U8,
            vec![3, 4, 5],
        );
        spec.format = format;
        spec.axis_names = Some(vec!["z".into(), "y".into(), "x".into()]);
        let path = dir.join(format!("bw-{name}.zarr"));
        let a = ZarrArray::create(&path, "volume/raw", &spec)?;
        a.write(&a.roi(), data.view())?;
        let v = run(&py, &["read", path.to_str().ok_or("path")?, "volume/raw"])?;
        assert_eq!(v["shape"], serde_json::json!([6, 8, 10]), "{name}");
        assert_eq!(v["sum"], expected_sum, "{name}");
        assert_eq!(
            v["attributes"]["voxel_size"],
            serde_json::json!([4, 4, 4]),
            "{name}"
        );
        assert_eq!(
            v["attributes"]["offset"],
            serde_json::json!([0, 8, 20]),
            "{name}"
        );
        assert_eq!(
            v["attributes"]["axis_names"],
            serde_json::json!(["z", "y", "x"]),
            "{name}"
        );
    }

    // zarr-python → blockwise.
    let store = dir.join("py.zarr");
    let sums = run(&py, &["write", store.to_str().ok_or("path")?])?;
    for dataset in ["g2/raw", "g3/raw"] {
        let a = ZarrArray::open(&store, dataset)?;
        assert_eq!(a.roi(), Roi::new([4, 0, -2], [20, 24, 28]), "{dataset}");
        assert_eq!(a.axis_names(), ["z", "y", "x"]);
        assert_eq!(a.units(), ["nm", "nm", "nm"]);
        let all = a.read::<u8>(&a.roi())?;
        let sum: i64 = all.iter().map(|&v| i64::from(v)).sum();
        assert_eq!(serde_json::json!(sum), sums[dataset], "{dataset}");
        // A world-unit read of one voxel in the middle: voxel (5, 6, 7).
        let one = a.read::<u8>(&Roi::new([4 + 10, 12, -2 + 14], [2, 2, 2]))?;
        assert_eq!(
            one.iter().copied().next(),
            Some(((5 * 12 * 14 + 6 * 14 + 7) % 251) as u8)
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
