//! The blocks of a task that wait for some of their upstream blocks, with how many they still
//! wait for: the scheduler's largest structure for tasks with read/write conflicts and for
//! chained tasks (about a plane of the sweep's blocks, see `tests.rs`'s frontier tests).
//!
//! An entry is one `u64`: the block's grid index in the low [`KEY_BITS`] bits and its count
//! of unmet upstream blocks above them, in a hash table of `u64`s (8 bytes and a control byte
//! a slot, half of a `HashMap<u64, u64>`'s). Entries that do not fit (grid indices of 2^40 or
//! more, counts of 2^24 or more: blocks reading far more context than they write) go to a
//! plain map beside it, so every task works and the common ones take half the memory.
//!
//! In front of the table sits a window of one byte per grid index over the most recent few
//! planes of the grid (a ring of [`Window::cap`] counts): a block sweep's waiting blocks are
//! the neighbours of the blocks just done, so nearly all of them fall in the window, where a
//! count is an array access next to its neighbours' instead of a hash probe. The window
//! follows the highest index inserted; blocks it leaves behind that still wait move to the
//! table. With more than about a tenth of its slots waiting, it takes less memory than the table
//! too.

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

/// The fewest and most counts a [`Window`] holds.
const WINDOW_MIN: u64 = 1 << 6;
const WINDOW_MAX: u64 = 1 << 23;

/// Counts of the grid indices `base..base + cap`, at `index % cap` (0: not waiting here).
#[derive(Default, Clone)]
struct Window {
    /// Allocated at the first insert.
    counts: Vec<u8>,
    /// A power of two (0: no window).
    cap: u64,
    base: u64,
    /// Non-zero counts.
    live: usize,
}

impl Window {
    fn slot(&self, key: u64) -> Option<usize> {
        // `cap` is at most `WINDOW_MAX`, so the slot fits a usize.
        (key >= self.base && key - self.base < self.cap).then(|| (key & (self.cap - 1)) as usize)
    }
}

/// Blocks waiting for upstream blocks: grid index → number of upstream blocks not yet done
/// (always at least 1). A key is in exactly one of the window, the packed table and the wide
/// map.
#[derive(Default, Clone)]
pub(super) struct Waiting {
    window: Window,
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
    /// The waiting blocks of a task of `num_blocks` blocks whose grid planes (all axes but the
    /// first) hold `plane` blocks: a window over about four planes.
    pub(super) fn for_grid(num_blocks: u64, plane: u64) -> Waiting {
        let want = plane.saturating_mul(4).min(num_blocks);
        let cap = want.clamp(WINDOW_MIN, WINDOW_MAX).next_power_of_two();
        Waiting {
            window: Window {
                cap,
                ..Window::default()
            },
            ..Waiting::default()
        }
    }

    /// Number of waiting blocks.
    pub(super) fn len(&self) -> usize {
        self.window.live + self.packed.len() + self.wide.len()
    }

    /// Counts one more done upstream block of `key`, if it waits.
    pub(super) fn count_one(&mut self, key: u64) -> Counted {
        if let Some(slot) = self.window.slot(key)
            && let Some(count) = self.window.counts.get_mut(slot)
            && *count > 0
        {
            *count -= 1;
            if *count > 0 {
                return Counted::StillWaiting;
            }
            self.window.live -= 1;
            return Counted::Released;
        }
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
        if let Ok(small) = u8::try_from(count)
            && small > 0
            && self.window.cap > 0
        {
            if self.window.counts.is_empty() {
                // `cap` is at most `WINDOW_MAX`.
                self.window.counts = vec![0; self.window.cap as usize];
            }
            // The window ending at `key`: where an empty window moves, and where a key above
            // the window moves it.
            let ending_here = key.saturating_add(1).saturating_sub(self.window.cap);
            if self.window.live == 0 && self.window.slot(key).is_none() {
                self.window.base = ending_here;
            } else if key >= self.window.base && key - self.window.base >= self.window.cap {
                self.advance(ending_here);
            }
            if let Some(slot) = self.window.slot(key) {
                self.window.counts[slot] = small;
                self.window.live += 1;
                return;
            }
        }
        self.insert_table(key, count);
    }

    /// Moves the window to start at `base` (above its start): the counts it leaves behind go
    /// to the table.
    fn advance(&mut self, base: u64) {
        let w = &mut self.window;
        let leaving = (base - w.base).min(w.cap);
        if w.live > 0 {
            let mut left = Vec::new();
            for key in w.base..w.base + leaving {
                let slot = (key & (w.cap - 1)) as usize;
                let count = std::mem::take(&mut w.counts[slot]);
                if count > 0 {
                    left.push((key, count));
                    w.live -= 1;
                    if w.live == 0 {
                        break;
                    }
                }
            }
            for (key, count) in left {
                self.insert_table(key, u64::from(count));
            }
        }
        self.window.base = base;
    }

    /// Records `key` in the packed table, or the wide map if it does not fit.
    fn insert_table(&mut self, key: u64, count: u64) {
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
        if let Some(slot) = self.window.slot(key)
            && let Some(count) = self.window.counts.get_mut(slot)
            && *count > 0
        {
            *count = 0;
            self.window.live -= 1;
            return;
        }
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
        if let Some(slot) = self.window.slot(key)
            && let Some(&count) = self.window.counts.get(slot)
            && count > 0
        {
            return Some(u64::from(count));
        }
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

    #[test]
    fn the_window_follows_the_highest_key_and_leaves_what_still_waits_to_the_table() {
        let mut w = Waiting::for_grid(1 << 20, 16);
        assert_eq!(w.window.cap, 64);
        w.insert(100, 2);
        w.insert(90, 1);
        assert_eq!((w.window.live, w.packed.len()), (2, 0));
        // 200 moves the window past 90 and 100: both move to the table, still waiting.
        w.insert(200, 3);
        assert_eq!((w.window.live, w.packed.len()), (1, 2));
        assert_eq!(
            (w.get(90), w.get(100), w.get(200)),
            (Some(1), Some(2), Some(3))
        );
        // Below the window while it holds counts: the table.
        w.insert(10, 1);
        assert_eq!(w.packed.len(), 3);
        assert_eq!(w.count_one(200), Counted::StillWaiting);
        assert_eq!(w.count_one(200), Counted::StillWaiting);
        assert_eq!(w.count_one(200), Counted::Released);
        // An empty window moves to any key, also back over keys in the table.
        w.insert(95, 1);
        assert_eq!((w.window.live, w.packed.len()), (1, 3));
        assert_eq!(w.count_one(100), Counted::StillWaiting);
        assert_eq!(w.count_one(100), Counted::Released);
        assert_eq!(w.count_one(95), Counted::Released);
        assert_eq!(w.count_one(90), Counted::Released);
        w.remove(10);
        assert_eq!(w.len(), 0);
        // Counts over 255 never go to the window.
        w.insert(96, 300);
        assert_eq!((w.window.live, w.packed.len()), (0, 1));
        assert_eq!(w.get(96), Some(300));
    }

    proptest! {
        /// The window, the table and the wide map together behave as a map of counts: inserts
        /// of absent keys, counts and removals in any order give what a `HashMap<u64, u64>`
        /// gives, with windows small enough to move often.
        #[test]
        fn behaves_like_a_map(
            plane in prop_oneof![Just(0u64), 1u64..64],
            ops in proptest::collection::vec(
                (0u8..3, prop_oneof![0u64..512, (KEY_MASK - 4)..(KEY_MASK + 4)], prop_oneof![1u64..5, 250u64..260]),
                0..600,
            ),
        ) {
            let mut w = if plane == 0 { Waiting::default() } else { Waiting::for_grid(u64::MAX, plane) };
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
