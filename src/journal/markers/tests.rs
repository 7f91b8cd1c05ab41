#![allow(clippy::unwrap_used)]
use super::*;
use proptest::prelude::*;

/// Chunks of 16 KiB: 65,536 blocks each, so chunk boundaries are reached with few blocks.
const SMALL: u64 = ALIGN;

fn grid(n: u64) -> Vec<i64> {
    vec![n as i64]
}

#[test]
fn geometry_splits_at_chunk_boundaries() {
    let g = Geometry::new(10_000_000_000, CHUNK_BYTES);
    assert_eq!(g.bytes, 2_500_000_000);
    assert_eq!(g.chunks, 10);
    assert_eq!(g.chunk_blocks(0), 1 << 30);
    assert_eq!(g.chunk_blocks(9), 10_000_000_000 - 9 * (1 << 30));
    assert_eq!(g.chunk_used(9), 2_500_000_000 - 9 * CHUNK_BYTES);
    let g = Geometry::new(5, CHUNK_BYTES);
    assert_eq!((g.bytes, g.chunk_bytes, g.chunks), (2, 2, 1));
    let g = Geometry::new(0, CHUNK_BYTES);
    assert_eq!((g.bytes, g.chunks), (0, 0));
    let g = Geometry::new(2 * 65536 + 1, SMALL);
    assert_eq!((g.chunk_bytes, g.chunks), (SMALL, 3));
    assert_eq!(g.chunk_blocks(2), 1);
}

#[test]
fn packing_and_counting() {
    let mut c = Counts::default();
    // Blocks 0..4: done, failed, not done, done.
    assert_eq!(count_bytes(&[0b01_00_10_01], 4, &mut c), Ok(()));
    assert_eq!((c.done, c.failed), (2, 1));
    assert_eq!(value_at(&[0b01_00_10_01], 1), FAILED);
    assert_eq!(value_at(&[0b01_00_10_01], 3), DONE);
    // A 3, and bits past the last block, are damage.
    assert_eq!(count_bytes(&[0, 0b11], 8, &mut c), Err(1));
    assert_eq!(count_bytes(&[0b0100], 1, &mut c), Err(0));
    assert_eq!(count_bytes(&[0b01, 1], 3, &mut c), Err(1));
}

#[test]
fn markers_across_chunks_are_written_counted_and_loaded() {
    // Uniform chunks are trusted whatever their size.
    TRUST.with(|t| t.set(0));
    let dir = tempfile::tempdir().unwrap();
    let array = dir.path().join("done.zarr");
    let n = 3 * 65536 + 10;
    create_with(&array, &grid(n), n, SMALL).unwrap();
    for c in 0..4 {
        assert_eq!(
            fs::metadata(array.join("c").join(c.to_string()))
                .unwrap()
                .len(),
            SMALL
        );
    }
    assert!(!array.join("c/4").exists());
    assert!(load(&array, &grid(n), n).unwrap().is_none_done());
    let mut w = MarkerWriter::open(&array, &grid(n), n).unwrap();
    // All of chunk 1, the edges of chunks 0 and 2, the last block.
    for i in 65536..2 * 65536 {
        w.set(i, DONE).unwrap();
    }
    for i in [65535, 2 * 65536, n - 1] {
        w.set(i, DONE).unwrap();
    }
    w.set(5, FAILED).unwrap();
    w.flush().unwrap();
    drop(w);
    let set = load(&array, &grid(n), n).unwrap();
    assert_eq!(set.count(), 65536 + 3);
    assert!(set.contains(65535) && set.contains(65536) && set.contains(2 * 65536));
    assert!(!set.contains(5) && !set.contains(2 * 65536 + 1) && set.contains(n - 1));
    assert_eq!(set.next_not_done(65535), Some(2 * 65536 + 1));
    let (counts, failed) = count(&array, &grid(n), n, 10, Some(&HashSet::new())).unwrap();
    assert_eq!(
        (counts.done, counts.failed, failed),
        (65536 + 3, 1, vec![5])
    );
    let (_, s) = parse_summary(
        &fs::read(summary_path(&array)).unwrap(),
        &Geometry::new(n, SMALL),
    )
    .unwrap();
    assert_eq!(
        s,
        [
            Counts { done: 1, failed: 1 },
            Counts {
                done: 65536,
                failed: 0
            },
            Counts { done: 1, failed: 0 },
            Counts { done: 1, failed: 0 },
        ]
    );
    // A bit flip in the full chunk 1 is not seen on open (the summary is trusted) ...
    let c1 = array.join("c/1");
    let mut bytes = fs::read(&c1).unwrap();
    bytes[100] ^= 1;
    fs::write(&c1, &bytes).unwrap();
    assert_eq!(load(&array, &grid(n), n).unwrap().count(), 65536 + 3);
    // (unless it is small)
    TRUST.with(|t| t.set(SMALL + 1));
    let e = load(&array, &grid(n), n).unwrap_err().to_string();
    assert!(
        e.contains("checksum mismatch in bytes 0 to 4095 (page 4"),
        "{e}"
    );
    TRUST.with(|t| t.set(0));
    // ... but when the writer reads its page.
    let mut w = MarkerWriter::open(&array, &grid(n), n).unwrap();
    let e = w.set(65536 + 400, FAILED).unwrap_err().to_string();
    assert!(
        e.contains("checksum mismatch in bytes 0 to 4095 (page 4"),
        "{e}"
    );
    assert!(e.contains(&c1.display().to_string()), "{e}");
    // In a mixed chunk, on open.
    bytes[100] ^= 1;
    fs::write(&c1, &bytes).unwrap();
    let c0 = array.join("c/0");
    let mut bytes = fs::read(&c0).unwrap();
    bytes[3000] ^= 1;
    fs::write(&c0, &bytes).unwrap();
    let e = load(&array, &grid(n), n).unwrap_err().to_string();
    assert!(
        e.contains("checksum mismatch in bytes 0 to 4095 (page 0"),
        "{e}"
    );
}

#[test]
fn a_torn_summary_falls_back_to_the_other_slot() {
    let dir = tempfile::tempdir().unwrap();
    let array = dir.path().join("done.zarr");
    let n = 2 * 65536;
    create_with(&array, &grid(n), n, SMALL).unwrap();
    let mut w = MarkerWriter::open(&array, &grid(n), n).unwrap();
    w.set(1, DONE).unwrap();
    w.flush().unwrap();
    w.set(2, DONE).unwrap();
    w.flush().unwrap();
    drop(w);
    let g = Geometry::new(n, SMALL);
    let path = summary_path(&array);
    let mut bytes = fs::read(&path).unwrap();
    assert_eq!(parse_summary(&bytes, &g).unwrap().0, 2);
    // The slot of sequence 2 (slot 0) torn: sequence 1 (block 1 only) is the summary.
    bytes[SUMMARY_HEADER as usize + 9] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let (seq, counts) = parse_summary(&bytes, &g).unwrap();
    assert_eq!((seq, counts[0].done), (1, 1));
    // The markers disagree with it (block 2): damage, unless a logged batch explains it.
    let e = load(&array, &grid(n), n).unwrap_err().to_string();
    assert!(
        e.contains("holds 2 done and 0 failed markers, its summary"),
        "{e}"
    );
    MarkerWriter::replay(&array, &grid(n), n, &[(2, DONE)]).unwrap();
    assert_eq!(load(&array, &grid(n), n).unwrap().count(), 2);
}

#[test]
fn a_finished_task_is_loaded_from_its_summary() {
    TRUST.with(|t| t.set(0));
    let dir = tempfile::tempdir().unwrap();
    let array = dir.path().join("done.zarr");
    let n = 3 * 65536 + 7;
    create_with(&array, &grid(n), n, SMALL).unwrap();
    let mut w = MarkerWriter::open(&array, &grid(n), n).unwrap();
    w.mark_all_done().unwrap();
    drop(w);
    let set = load(&array, &grid(n), n).unwrap();
    assert!(set.is_all_done());
    // The fast path wrote what set() would have: every chunk checks out when read.
    let (counts, _) = count(&array, &grid(n), n, 0, None).unwrap();
    assert_eq!(counts.done, n);
    fs::remove_file(summary_path(&array)).unwrap();
    assert!(load(&array, &grid(n), n).unwrap().is_all_done());
    // Nothing past the last block.
    let last = fs::read(array.join("c/3")).unwrap();
    assert_eq!(last[0], 0b0101_0101);
    assert_eq!(last[1], 0b0001_0101);
    assert!(last[2..].iter().all(|&b| b == 0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Random marker writes, flushed in batches, some applied by a replay, reopened: the
    /// same done set and counts as a plain vector.
    #[test]
    fn writes_and_reopens_match_a_plain_vector(
        n in 1u64..(3 * 65536 + 100),
        batches in proptest::collection::vec(
            (proptest::collection::vec((0u64..(3 * 65536 + 100), 0u8..3, 0u64..300), 0..8), any::<bool>()),
            0..6,
        ),
        trust in any::<bool>(),
    ) {
        TRUST.with(|t| t.set(if trust { 0 } else { u64::MAX }));
        let dir = tempfile::tempdir().unwrap();
        let array = dir.path().join("done.zarr");
        create_with(&array, &grid(n), n, SMALL).unwrap();
        let mut model = vec![NOT_DONE; n as usize];
        for (runs, as_replay) in batches {
            let mut records = Vec::new();
            for (start, value, len) in runs {
                for i in start..(start + len).min(n) {
                    records.push((i, value));
                    model[i as usize] = value;
                }
            }
            if as_replay {
                MarkerWriter::replay(&array, &grid(n), n, &records).unwrap();
            } else {
                let mut w = MarkerWriter::open(&array, &grid(n), n).unwrap();
                for &(i, v) in &records {
                    w.set(i, v).unwrap();
                }
                w.flush().unwrap();
            }
            let set = load(&array, &grid(n), n).unwrap();
            let done = model.iter().filter(|&&v| v == DONE).count() as u64;
            prop_assert_eq!(set.count(), done);
            for (i, &v) in model.iter().enumerate() {
                prop_assert_eq!(set.contains(i as u64), v == DONE);
            }
            let expected = model.iter().position(|&v| v != DONE).map(|i| i as u64);
            prop_assert_eq!(set.next_not_done(0), expected);
            let (counts, failed) = count(&array, &grid(n), n, usize::MAX, Some(&HashSet::new())).unwrap();
            let want_failed: Vec<u64> = model.iter().enumerate().filter(|(_, v)| **v == FAILED).map(|(i, _)| i as u64).collect();
            prop_assert_eq!(counts.done, done);
            prop_assert_eq!(counts.failed, want_failed.len() as u64);
            prop_assert_eq!(failed, want_failed);
        }
    }
}
