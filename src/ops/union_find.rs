//! Union-find over sparse `u64` labels, and the merge table it produces.

use ndarray::ArrayViewMutD;
use rustc_hash::FxHashMap;

#[derive(Debug, Clone, Copy)]
struct Node {
    parent: u64,
    /// Size of the set (meaningful at roots).
    size: u64,
    /// Smallest label of the set (meaningful at roots).
    min: u64,
}

/// Disjoint sets of `u64` labels, with path compression and union by size.
///
/// Only labels given to [`union`](Self::union) are stored, so memory grows with the labels
/// that appear in pairs, not with the label range. The representative reported by
/// [`find`](Self::find) is the smallest label of the set, so results do not depend on the
/// order of the unions. Label 0 (background) is never merged.
///
/// ```
/// use blockwise::ops::UnionFind;
///
/// let mut uf = UnionFind::new();
/// uf.union(7, 3);
/// uf.union(9, 7);
/// uf.union(20, 21);
/// assert_eq!(uf.find(9), 3);
/// assert_eq!(uf.find(21), 20);
/// assert_eq!(uf.find(100), 100); // never seen: its own set
/// let table = uf.merge_table();
/// assert_eq!(table.entries(), &[(7, 3), (9, 3), (21, 20)]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct UnionFind {
    nodes: FxHashMap<u64, Node>,
}

impl UnionFind {
    /// An empty union-find.
    #[must_use]
    pub fn new() -> UnionFind {
        UnionFind::default()
    }

    /// The number of labels stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no label is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn root(&mut self, label: u64) -> u64 {
        let mut root = label;
        while let Some(n) = self.nodes.get(&root) {
            if n.parent == root {
                break;
            }
            root = n.parent;
        }
        // Path compression.
        let mut at = label;
        while at != root {
            let Some(n) = self.nodes.get_mut(&at) else {
                break;
            };
            let next = n.parent;
            n.parent = root;
            at = next;
        }
        root
    }

    fn insert(&mut self, label: u64) {
        self.nodes.entry(label).or_insert(Node {
            parent: label,
            size: 1,
            min: label,
        });
    }

    /// Merges the sets of `a` and `b`. Pairs with a 0 (background) are ignored.
    pub fn union(&mut self, a: u64, b: u64) {
        if a == 0 || b == 0 {
            return;
        }
        self.insert(a);
        self.insert(b);
        let (ra, rb) = (self.root(a), self.root(b));
        if ra == rb {
            return;
        }
        let (Some(&na), Some(&nb)) = (self.nodes.get(&ra), self.nodes.get(&rb)) else {
            return;
        };
        let (big, small) = if na.size >= nb.size {
            (ra, rb)
        } else {
            (rb, ra)
        };
        let merged = Node {
            parent: big,
            size: na.size + nb.size,
            min: na.min.min(nb.min),
        };
        self.nodes.insert(big, merged);
        if let Some(s) = self.nodes.get_mut(&small) {
            s.parent = big;
        }
    }

    /// The smallest label of `label`'s set (`label` itself if it was never merged).
    pub fn find(&mut self, label: u64) -> u64 {
        let root = self.root(label);
        self.nodes.get(&root).map_or(label, |n| n.min)
    }

    /// The merge table: every stored label that is not the smallest of its set, with that
    /// smallest label, sorted by label.
    pub fn merge_table(&mut self) -> MergeTable {
        let labels: Vec<u64> = self.nodes.keys().copied().collect();
        let mut entries: Vec<(u64, u64)> = labels
            .into_iter()
            .filter_map(|l| {
                let rep = self.find(l);
                (rep != l).then_some((l, rep))
            })
            .collect();
        entries.sort_unstable();
        MergeTable { entries }
    }
}

/// Where labels go: `label → the smallest label of its component`, for the labels that are not
/// the smallest of their component. Other labels (and 0) map to themselves.
///
/// Applying a table is idempotent: a label maps to its component's smallest label, which is
/// not in the table and so maps to itself. Relabelling a block twice (a rerun after a crash)
/// therefore gives what relabelling it once gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeTable {
    /// Sorted by label; every value is smaller than its key and is not itself a key.
    entries: Vec<(u64, u64)>,
}

impl MergeTable {
    /// A table from `(label, representative)` entries.
    ///
    /// # Errors
    ///
    /// A message if the entries are not sorted by label without duplicates, if a
    /// representative is not smaller than its label, or if a representative is itself a label
    /// of the table (the table would not be idempotent).
    pub fn from_entries(entries: Vec<(u64, u64)>) -> Result<MergeTable, String> {
        for w in entries.windows(2) {
            if w[0].0 >= w[1].0 {
                return Err(format!(
                    "merge table entries are not sorted by label: {} before {}",
                    w[0].0, w[1].0
                ));
            }
        }
        for &(label, rep) in &entries {
            if rep >= label {
                return Err(format!(
                    "merge table maps {label} to {rep}, which is not smaller"
                ));
            }
            if entries.binary_search_by_key(&rep, |e| e.0).is_ok() {
                return Err(format!(
                    "merge table maps {label} to {rep}, which is itself mapped"
                ));
            }
        }
        Ok(MergeTable { entries })
    }

    /// The entries, sorted by label.
    #[must_use]
    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    /// The number of entries (labels merged into a smaller one).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is merged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `label` goes.
    #[must_use]
    pub fn get(&self, label: u64) -> u64 {
        match self.entries.binary_search_by_key(&label, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => label,
        }
    }

    /// Maps every label of `labels` through the table, in place; returns how many voxels
    /// changed.
    ///
    /// ```
    /// use blockwise::ops::UnionFind;
    /// use ndarray::{ArrayD, IxDyn};
    ///
    /// let mut uf = UnionFind::new();
    /// uf.union(4, 2);
    /// let table = uf.merge_table();
    /// let mut labels = ArrayD::from_shape_vec(IxDyn(&[4]), vec![0u64, 4, 2, 5]).unwrap();
    /// assert_eq!(table.relabel(labels.view_mut()), 1);
    /// assert_eq!(labels.as_slice(), Some(&[0u64, 2, 2, 5][..]));
    /// assert_eq!(table.relabel(labels.view_mut()), 0); // idempotent
    /// ```
    pub fn relabel(&self, mut labels: ArrayViewMutD<'_, u64>) -> u64 {
        if self.entries.is_empty() {
            return 0;
        }
        let mut changed = 0u64;
        // Neighbouring voxels mostly share a label: remember the last lookup.
        let mut last = (0u64, 0u64);
        labels.map_inplace(|l| {
            if *l == 0 {
                return;
            }
            let to = if *l == last.0 {
                last.1
            } else {
                let to = self.get(*l);
                last = (*l, to);
                to
            };
            if to != *l {
                *l = to;
                changed += 1;
            }
        });
        changed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn smallest_label_is_the_representative_in_any_order() {
        let pairs = [(10u64, 4u64), (4, 12), (30, 12), (2, 31), (31, 33)];
        let mut forward = UnionFind::new();
        for &(a, b) in &pairs {
            forward.union(a, b);
        }
        let mut backward = UnionFind::new();
        for &(a, b) in pairs.iter().rev() {
            backward.union(b, a);
        }
        assert_eq!(forward.merge_table(), backward.merge_table());
        assert_eq!(forward.find(30), 4);
        assert_eq!(forward.find(33), 2);
        assert_eq!(forward.len(), 7);
        let t = forward.merge_table();
        assert_eq!(MergeTable::from_entries(t.entries().to_vec()), Ok(t));
    }

    #[test]
    fn background_is_never_merged() {
        let mut uf = UnionFind::new();
        uf.union(0, 5);
        uf.union(5, 0);
        assert!(uf.is_empty());
        assert_eq!(uf.find(0), 0);
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(MergeTable::from_entries(vec![(5, 2), (3, 1)]).is_err());
        assert!(MergeTable::from_entries(vec![(5, 5)]).is_err());
        assert!(MergeTable::from_entries(vec![(3, 1), (5, 3)]).is_err());
        assert!(MergeTable::from_entries(vec![(3, 1), (5, 1)]).is_ok());
    }
}
