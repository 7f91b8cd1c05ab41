//! The layout of a task's blocks, stored beside its done-markers: if it changes, the markers
//! name other blocks and must not be used.
//!
//! The journal never sees a `Task` (with its functions): a run hands it a [`TaskLayout`] per
//! task, the plain facts it records and checks.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blocks::Fit;
use crate::geometry::Roi;
use crate::store::ChunkGrid;

/// What the journal needs to know of a task (`Task::layout` gives it): which block a grid
/// index is, and the arrays the task declares it writes.
#[derive(Debug, Clone)]
pub(crate) struct TaskLayout {
    pub(crate) task_id: String,
    pub(crate) total_roi: Roi,
    pub(crate) read_roi: Roi,
    pub(crate) write_roi: Roi,
    pub(crate) fit: Fit,
    pub(crate) read_write_conflict: bool,
    /// Blocks per axis (one entry per axis).
    pub(crate) grid_shape: Vec<i64>,
    pub(crate) num_blocks: u64,
    /// The arrays declared with `TaskBuilder::writes`.
    pub(crate) writes: Vec<ChunkGrid>,
}

/// Everything that decides which block a grid index is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Layout {
    pub(crate) task_id: String,
    pub(crate) total_roi: String,
    pub(crate) read_roi: String,
    pub(crate) write_roi: String,
    pub(crate) fit: String,
    pub(crate) read_write_conflict: bool,
    /// Blocks per axis.
    pub(crate) grid_shape: Vec<i64>,
    pub(crate) num_blocks: u64,
    /// SHA-256 (hex) of the fields above.
    #[serde(default)]
    pub(crate) sha256: String,
}

fn roi_text(roi: &Roi) -> String {
    roi.to_string()
}

impl Layout {
    /// The record of `task`'s layout, its hash computed.
    pub(crate) fn of(task: &TaskLayout) -> Layout {
        let mut layout = Layout {
            task_id: task.task_id.clone(),
            total_roi: roi_text(&task.total_roi),
            read_roi: roi_text(&task.read_roi),
            write_roi: roi_text(&task.write_roi),
            fit: task.fit.to_string(),
            read_write_conflict: task.read_write_conflict,
            grid_shape: task.grid_shape.clone(),
            num_blocks: task.num_blocks,
            sha256: String::new(),
        };
        layout.sha256 = layout.digest();
        layout
    }

    /// A stored layout (`layout.json`'s bytes), its SHA-256 checked; what is wrong with it
    /// otherwise.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Layout, String> {
        let stored: Layout =
            serde_json::from_slice(bytes).map_err(|e| format!("not a task layout ({e})"))?;
        if stored.digest() != stored.sha256 {
            return Err("its SHA-256 does not match its fields (edited by hand?)".into());
        }
        Ok(stored)
    }

    /// The hash of the fields (not of `sha256` itself).
    pub(crate) fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.task_id.as_str(),
            &self.total_roi,
            &self.read_roi,
            &self.write_roi,
            &self.fit,
            if self.read_write_conflict {
                "conflict"
            } else {
                "no-conflict"
            },
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        for n in &self.grid_shape {
            h.update(n.to_le_bytes());
        }
        h.update(self.num_blocks.to_le_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What differs between a stored layout and this one, for an error message.
    pub(crate) fn differences(&self, stored: &Layout) -> String {
        let mut out = Vec::new();
        let mut cmp = |name: &str, then: String, now: String| {
            if then != now {
                out.push(format!("{name} {then} then, {now} now"));
            }
        };
        cmp(
            "total ROI",
            stored.total_roi.clone(),
            self.total_roi.clone(),
        );
        cmp("read ROI", stored.read_roi.clone(), self.read_roi.clone());
        cmp(
            "write ROI",
            stored.write_roi.clone(),
            self.write_roi.clone(),
        );
        cmp("fit", stored.fit.clone(), self.fit.clone());
        cmp(
            "read_write_conflict",
            stored.read_write_conflict.to_string(),
            self.read_write_conflict.to_string(),
        );
        cmp(
            "blocks",
            format!("{:?}", stored.grid_shape),
            format!("{:?}", self.grid_shape),
        );
        if out.is_empty() {
            "the stored layout hash does not match its fields".to_owned()
        } else {
            out.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(write: i64, conflict: bool) -> TaskLayout {
        crate::Task::builder(
            "t",
            Roi::new([0, 0], [100, 100]),
            Roi::new([0, 0], [write, write]),
            Roi::new([0, 0], [write, write]),
        )
        .read_write_conflict(conflict)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .layout()
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = Layout::of(&task(10, true));
        assert_eq!(a, Layout::of(&task(10, true)));
        assert_eq!(a.sha256.len(), 64);
        let b = Layout::of(&task(20, true));
        assert_ne!(a.sha256, b.sha256);
        assert_eq!(
            b.differences(&a),
            "read ROI [0:10, 0:10] (10, 10) then, [0:20, 0:20] (20, 20) now; write ROI [0:10, 0:10] (10, 10) then, [0:20, 0:20] (20, 20) now; blocks [10, 10] then, [5, 5] now"
        );
        let text = serde_json::to_vec(&a).unwrap_or_default();
        assert_eq!(Layout::parse(&text), Ok(a.clone()));
        let edited =
            String::from_utf8_lossy(&text).replace("\"num_blocks\":100", "\"num_blocks\":101");
        assert_eq!(
            Layout::parse(edited.as_bytes()),
            Err("its SHA-256 does not match its fields (edited by hand?)".into())
        );
        assert!(Layout::parse(b"{").is_err_and(|e| e.starts_with("not a task layout")));
        let c = Layout::of(&task(10, false));
        assert_ne!(a.sha256, c.sha256);
        assert_eq!(
            c.differences(&a),
            "read_write_conflict true then, false now"
        );
    }
}
