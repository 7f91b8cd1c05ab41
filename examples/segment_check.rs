//! Checks what `examples/segment.rs` wrote against the same computation done on the whole
//! volume in memory (CI runs it after the example, on threads and on worker processes).
//!
//! ```text
//! cargo run --release --example segment_check [-- DIR]
//! ```
//!
//! The smoothed volume must be bit-identical, the labels must be the same partition of the
//! voxels as a whole-volume labelling (background identical, a one-to-one map between the
//! labels), and `sizes.json` must hold exactly the voxel count of every component.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use blockwise::ops::{Connectivity, label};
use blockwise::store::{Pad, ZarrArray};
use blockwise::workload::box_mean_block;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "blockwise-segment".into()),
    );
    let raw = ZarrArray::open(dir.join("sample.zarr"), "raw")?;
    let roi = raw.roi();
    let shape: Vec<usize> = raw.shape().iter().map(|&s| s as usize).collect();
    let padded = raw.read_padded::<u8>(&roi.grow_by(1), Pad::Reflect)?;
    let smoothed = box_mean_block(padded.view(), 1, [shape[0], shape[1], shape[2]])?;
    let stored = ZarrArray::open(dir.join("smoothed.zarr"), "smoothed")?.read::<u8>(&roi)?;
    if *stored != smoothed {
        return Err("smoothed.zarr differs from the whole-volume 3×3×3 mean".into());
    }
    let mask = smoothed.mapv(|v| v > 100);
    let (reference, n) = label(mask.view(), Connectivity::Faces)?;
    let labels = ZarrArray::open(dir.join("labels.zarr"), "labels")?.read::<u64>(&roi)?;
    let (mut forward, mut back) = (HashMap::new(), HashMap::new());
    let mut sizes = BTreeMap::<u64, u64>::new();
    for (&r, &l) in reference.iter().zip(labels.iter()) {
        if (r == 0) != (l == 0) {
            return Err(format!("foreground differs: reference {r}, labels.zarr {l}").into());
        }
        if r == 0 {
            continue;
        }
        if *forward.entry(r).or_insert(l) != l || *back.entry(l).or_insert(r) != r {
            return Err(format!(
                "not the same partition: reference component {r} and label {l} disagree"
            )
            .into());
        }
        *sizes.entry(l).or_default() += 1;
    }
    if forward.len() as u64 != n {
        return Err(format!("{} of the {n} reference components found", forward.len()).into());
    }
    let recorded: BTreeMap<u64, u64> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sizes.json"))?)?;
    if recorded != sizes {
        return Err("sizes.json does not hold the voxel counts of the components".into());
    }
    println!(
        "segment output matches the whole-volume reference: {n} components, {} foreground voxels",
        sizes.values().sum::<u64>()
    );
    Ok(())
}
