//! [`DoneSet`]: which blocks of a task earlier runs finished, as the scheduler sees it.
//!
//! A snapshot taken when a run starts, indexed by a block's dense grid index. It is stored per
//! chunk of 65,536 blocks: a chunk whose blocks are all done or all not done costs nothing, a
//! mixed chunk one bit per block. So a finished task, a task never run, and a task that
//! stopped part way through (done blocks form a prefix of the run order) cost a few bytes per
//! 65,536 blocks; only interleaved patterns (a crash half way through a level of a task with
//! read/write conflicts) cost a bit per block of the mixed region.

/// Blocks per chunk (log2).
const CHUNK_SHIFT: u32 = 16;
/// Blocks per chunk.
pub(crate) const CHUNK: u64 = 1 << CHUNK_SHIFT;
const WORDS: usize = (CHUNK / 64) as usize;

#[derive(Debug, Clone)]
enum Chunk {
    Empty,
    Full,
    Mixed(Box<[u64]>),
}

#[derive(Debug, Clone)]
enum Kind {
    Empty,
    Full,
    Chunked(Vec<Chunk>),
}

/// The set of done blocks of one task (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct DoneSet {
    len: u64,
    count: u64,
    kind: Kind,
}

impl DoneSet {
    /// No block of `len` is done.
    pub(crate) fn empty(len: u64) -> DoneSet {
        DoneSet {
            len,
            count: 0,
            kind: Kind::Empty,
        }
    }

    /// Every block of `len` is done.
    #[cfg(test)]
    pub(crate) fn full(len: u64) -> DoneSet {
        DoneSet {
            len,
            count: len,
            kind: Kind::Full,
        }
    }

    /// A set from an iterator over the done grid indices (tests and small sets).
    #[cfg(test)]
    pub(crate) fn from_indices(len: u64, indices: impl IntoIterator<Item = u64>) -> DoneSet {
        let mut bits = vec![false; usize::try_from(len).unwrap_or(0)];
        for i in indices {
            if let Some(b) = usize::try_from(i).ok().and_then(|i| bits.get_mut(i)) {
                *b = true;
            }
        }
        let mut builder = DoneSetBuilder::new(len);
        for chunk in bits.chunks(CHUNK as usize) {
            builder.push_chunk(chunk.iter().copied());
        }
        builder.finish()
    }

    /// Number of blocks.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Number of done blocks.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Whether no block is done.
    pub(crate) fn is_none_done(&self) -> bool {
        self.count == 0
    }

    /// Whether every block is done (and there is at least one).
    pub(crate) fn is_all_done(&self) -> bool {
        self.len > 0 && self.count == self.len
    }

    /// Whether the block with this grid index is done.
    pub(crate) fn contains(&self, index: u64) -> bool {
        if index >= self.len {
            return false;
        }
        match &self.kind {
            Kind::Empty => false,
            Kind::Full => true,
            Kind::Chunked(chunks) => match chunks.get((index >> CHUNK_SHIFT) as usize) {
                Some(Chunk::Full) => true,
                Some(Chunk::Mixed(bits)) => {
                    let bit = index & (CHUNK - 1);
                    bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
                }
                _ => false,
            },
        }
    }

    /// The first grid index at or after `from` that is not done; whole done chunks are skipped
    /// at once.
    pub(crate) fn next_not_done(&self, mut from: u64) -> Option<u64> {
        loop {
            if from >= self.len {
                return None;
            }
            let chunks = match &self.kind {
                Kind::Empty => return Some(from),
                Kind::Full => return None,
                Kind::Chunked(chunks) => chunks,
            };
            let c = (from >> CHUNK_SHIFT) as usize;
            let chunk_start = (c as u64) << CHUNK_SHIFT;
            match chunks.get(c) {
                None | Some(Chunk::Empty) => return Some(from),
                Some(Chunk::Full) => from = chunk_start + CHUNK,
                Some(Chunk::Mixed(bits)) => {
                    let mut bit = from - chunk_start;
                    while bit < CHUNK {
                        let word = bits[(bit / 64) as usize] | ((1u64 << (bit % 64)) - 1);
                        if word != u64::MAX {
                            let found =
                                chunk_start + (bit / 64) * 64 + u64::from(word.trailing_ones());
                            return (found < self.len).then_some(found);
                        }
                        bit = (bit / 64 + 1) * 64;
                    }
                    from = chunk_start + CHUNK;
                }
            }
        }
    }
}

/// Builds a [`DoneSet`] chunk by chunk, from the marker file read in order.
#[derive(Debug)]
pub(crate) struct DoneSetBuilder {
    len: u64,
    pushed: u64,
    count: u64,
    chunks: Vec<Chunk>,
}

impl DoneSetBuilder {
    pub(crate) fn new(len: u64) -> DoneSetBuilder {
        DoneSetBuilder {
            len,
            pushed: 0,
            count: 0,
            chunks: Vec::new(),
        }
    }

    /// Adds the next chunk: `CHUNK` flags (fewer for the last one), `true` for done.
    pub(crate) fn push_chunk(&mut self, done: impl Iterator<Item = bool>) {
        let mut bits = vec![0u64; WORDS].into_boxed_slice();
        let mut n = 0u64;
        let mut ones = 0u64;
        for d in done.take(CHUNK as usize) {
            if d {
                bits[(n / 64) as usize] |= 1 << (n % 64);
                ones += 1;
            }
            n += 1;
        }
        self.pushed += n;
        self.count += ones;
        self.chunks.push(if ones == 0 {
            Chunk::Empty
        } else if ones == n {
            Chunk::Full
        } else {
            Chunk::Mixed(bits)
        });
    }

    /// Adds `n` blocks all done or all not done, whole chunks at a time (`n` is a multiple of
    /// `CHUNK` unless these are the last blocks, and so are the blocks pushed before).
    pub(crate) fn push_uniform(&mut self, mut n: u64, done: bool) {
        while n > 0 {
            let k = n.min(CHUNK);
            self.pushed += k;
            if done {
                self.count += k;
                self.chunks.push(Chunk::Full);
            } else {
                self.chunks.push(Chunk::Empty);
            }
            n -= k;
        }
    }

    /// The set of the blocks pushed.
    pub(crate) fn finish(self) -> DoneSet {
        let kind = if self.count == 0 {
            Kind::Empty
        } else if self.count == self.len && self.pushed == self.len {
            Kind::Full
        } else {
            Kind::Chunked(self.chunks)
        };
        DoneSet {
            len: self.len,
            count: self.count,
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_full() {
        let e = DoneSet::empty(10);
        assert!(e.is_none_done() && !e.is_all_done());
        assert_eq!(e.next_not_done(3), Some(3));
        assert_eq!(e.next_not_done(10), None);
        let f = DoneSet::full(10);
        assert!(f.is_all_done() && f.contains(9) && !f.contains(10));
        assert_eq!(f.next_not_done(0), None);
        assert!(!DoneSet::full(0).is_all_done());
    }

    #[test]
    fn whole_chunks_are_skipped() {
        let len = 3 * CHUNK + 5;
        let set = DoneSet::from_indices(len, (0..2 * CHUNK).chain([2 * CHUNK + 1]));
        assert_eq!(set.count(), 2 * CHUNK + 1);
        assert_eq!(set.next_not_done(0), Some(2 * CHUNK));
        assert_eq!(set.next_not_done(2 * CHUNK + 1), Some(2 * CHUNK + 2));
        let all = DoneSet::from_indices(len, 0..len);
        assert!(all.is_all_done());
        assert_eq!(all.next_not_done(0), None);
    }

    proptest! {
        #[test]
        fn matches_a_plain_bitmap(
            len in 0u64..(2 * CHUNK + 300),
            runs in proptest::collection::vec((0u64..(2 * CHUNK + 300), 0u64..2000), 0..12),
            probes in proptest::collection::vec(0u64..(2 * CHUNK + 400), 1..40),
        ) {
            let mut plain = vec![false; len as usize];
            for (start, n) in runs {
                for i in start..(start + n).min(len) {
                    plain[i as usize] = true;
                }
            }
            let set = DoneSet::from_indices(
                len,
                plain.iter().enumerate().filter(|(_, d)| **d).map(|(i, _)| i as u64),
            );
            prop_assert_eq!(set.count(), plain.iter().filter(|d| **d).count() as u64);
            for p in probes {
                prop_assert_eq!(set.contains(p), plain.get(p as usize).copied().unwrap_or(false));
                let expected = (p..len).find(|&i| !plain[i as usize]);
                prop_assert_eq!(set.next_not_done(p), expected);
            }
        }
    }
}
