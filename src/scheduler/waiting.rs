//! The blocks of a task that wait for some of their upstream blocks, with how many they still
//! wait for: the scheduler's largest structure for tasks with read/write conflicts and for
//! chained tasks (about a plane of the sweep's blocks, see `tests.rs`'s frontier tests).
//!
//! An entry is one `u64`: the block's grid index in the low [`KEY_BITS`] bits and its count
//! of unmet upstream blocks above them, in a hash table of `u64`s (8 bytes and a control byte
//! a slot, half of a `HashMap<u64, u64>`'s). Entries that do not fit (grid indices of 2^40 or
//! more, counts of 2^24 or more: blocks reading far more context than they write) go to a
//! plain map beside it, so every task works and the common ones take half the memory.

use hashbrown::HashTable;
use rustc_hash::FxHashMap;
use std::hash::BuildHasher;

/// Bits of an entry that hold the grid index.
const KEY_BITS: u32 = 40;
const KEY_MASK: u64 = (1 << KEY_BITS) - 1;
/// The largest count a packed entry holds.
const MAX_PACKED_COUNT: u64 = (1 << (64 - KEY_BITS)) - 1;

fn hash(key: u64) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(key)
}

/// Blocks waiting for upstream blocks: grid index → number of upstream blocks not yet done
/// (always at least 1).
#[derive(Default, Clone)]
pub(super) struct Waiting {
    packed: HashTable<u64>,
    wide: FxHashMap<u64, u64>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// What [`Waiting::count_one`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counted {
    /// The block was not waiting.
    Absent,
    /// It still waits for other upstream blocks.
    StillWaiting,
    /// That was the last upstream block it waited for: it no longer waits.
    Released,
}

impl Waiting {
    /// Number of waiting blocks.
    pub(super) fn len(&self) -> usize {
        self.packed.len() + self.wide.len()
    }

    /// Counts one more done upstream block of `key`, if it waits.
    pub(super) fn count_one(&mut self, key: u64) -> Counted {
        if key <= KEY_MASK
            && let Ok(entry) = self.packed.find_entry(hash(key), |&e| e & KEY_MASK == key)
        {
            let count = *entry.get() >> KEY_BITS;
            if count > 1 {
                *entry.into_mut() -= 1 << KEY_BITS;
                return Counted::StillWaiting;
            }
            entry.remove();
            return Counted::Released;
        }
        if self.wide.is_empty() {
            return Counted::Absent;
        }
        match self.wide.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                Counted::StillWaiting
            }
            Some(_) => {
                self.wide.remove(&key);
                Counted::Released
            }
            None => Counted::Absent,
        }
    }

    /// Records that `key` (not waiting yet) waits for `count` (at least 1) upstream blocks.
    pub(super) fn insert(&mut self, key: u64, count: u64) {
        if key <= KEY_MASK && (1..=MAX_PACKED_COUNT).contains(&count) {
            self.packed
                .insert_unique(hash(key), key | (count << KEY_BITS), |&e| {
                    hash(e & KEY_MASK)
                });
        } else {
            self.wide.insert(key, count);
        }
    }

    /// Forgets `key` (it was orphaned).
    pub(super) fn remove(&mut self, key: u64) {
        if key <= KEY_MASK
            && let Ok(entry) = self.packed.find_entry(hash(key), |&e| e & KEY_MASK == key)
        {
            entry.remove();
            return;
        }
        self.wide.remove(&key);
    }

    /// The count of `key`, if it waits (tests).
    #[cfg(test)]
    pub(super) fn get(&self, key: u64) -> Option<u64> {
        if key <= KEY_MASK
            && let Some(&e) = self.packed.find(hash(key), |&e| e & KEY_MASK == key)
        {
            return Some(e >> KEY_BITS);
        }
        self.wide.get(&key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packed_and_wide_entries_count_down_and_release() {
        let mut w = Waiting::default();
        let far = KEY_MASK + 5;
        w.insert(3, 2);
        w.insert(far, 2);
        w.insert(7, MAX_PACKED_COUNT + 1);
        assert_eq!(w.len(), 3);
        assert_eq!((w.wide.len(), w.packed.len()), (2, 1));
        assert_eq!(w.count_one(3), Counted::StillWaiting);
        assert_eq!(w.get(3), Some(1));
        assert_eq!(w.count_one(3), Counted::Released);
        assert_eq!(w.count_one(3), Counted::Absent);
        assert_eq!(w.count_one(far), Counted::StillWaiting);
        assert_eq!(w.count_one(far), Counted::Released);
        assert_eq!(w.get(7), Some(MAX_PACKED_COUNT + 1));
        w.remove(7);
        assert_eq!(w.len(), 0);
        assert_eq!(w.count_one(7), Counted::Absent);
    }

    proptest! {
        /// The table behaves as a map of counts: inserts of absent keys, counts and removals
        /// in any order give what a `HashMap<u64, u64>` gives.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(
            (0u8..3, prop_oneof![0u64..64, (KEY_MASK - 4)..(KEY_MASK + 4)], 1u64..5),
            0..400,
        )) {
            let mut w = Waiting::default();
            let mut model: std::collections::HashMap<u64, u64> = Default::default();
            for (op, key, count) in ops {
                match op {
                    0 if !model.contains_key(&key) => {
                        w.insert(key, count);
                        model.insert(key, count);
                    }
                    1 => {
                        let want = match model.get_mut(&key) {
                            Some(n) if *n > 1 => { *n -= 1; Counted::StillWaiting }
                            Some(_) => { model.remove(&key); Counted::Released }
                            None => Counted::Absent,
                        };
                        prop_assert_eq!(w.count_one(key), want);
                    }
                    2 => {
                        w.remove(key);
                        model.remove(&key);
                    }
                    _ => {}
                }
                prop_assert_eq!(w.len(), model.len());
            }
            for (k, n) in model {
                prop_assert_eq!(w.get(k), Some(n));
            }
        }
    }
}
