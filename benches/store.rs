//! Criterion benches of the array read and write paths (zarr v3, 64³ uint8 chunks) and of
//! downsampling one chunk.

use std::hint::black_box;
use std::time::Duration;

use blockwise::Roi;
use blockwise::sample::SampleSpec;
use blockwise::store::{ArraySpec, Codec, DataType, ZarrArray};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{ArrayD, IxDyn};

fn setup(codec: Codec, tag: &str) -> Option<(std::path::PathBuf, ZarrArray)> {
    let dir = std::env::temp_dir().join(format!("blockwise-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ArraySpec::new(
        Roi::new([0, 0, 0], [256, 256, 256]),
        [1, 1, 1],
        DataType::U8,
        vec![64, 64, 64],
    );
    spec.codec = codec;
    let sample = SampleSpec::cube(256);
    let array = blockwise::sample::write_zarr(&sample, &dir, "raw", &spec, 2).ok()?;
    Some((dir, array))
}

fn reads_and_writes(c: &mut Criterion) {
    let mut group = c.benchmark_group("zarr");
    group
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    for (name, codec) in [("none", Codec::None), ("blosc_zstd", Codec::default())] {
        let Some((dir, array)) = setup(codec, name) else {
            continue;
        };
        let chunk = Roi::new([64, 64, 64], [64, 64, 64]);
        let with_context = chunk.grow_by(8);
        group.throughput(Throughput::Bytes(64 * 64 * 64));
        group.bench_function(BenchmarkId::new("read_chunk", name), |b| {
            b.iter(|| black_box(array.read::<u8>(&chunk).map(|a| a.len()).unwrap_or(0)));
        });
        group.bench_function(BenchmarkId::new("read_chunk_with_context_8", name), |b| {
            b.iter(|| {
                black_box(
                    array
                        .read_with_fill::<u8>(&with_context, 0)
                        .map(|a| a.len())
                        .unwrap_or(0),
                )
            });
        });
        if let Ok(cached) = ZarrArray::open_cached(&dir, "raw", 256 << 20) {
            group.bench_function(
                BenchmarkId::new("read_chunk_with_context_8_cached", name),
                |b| {
                    b.iter(|| {
                        black_box(
                            cached
                                .read_with_fill::<u8>(&with_context, 0)
                                .map(|a| a.len())
                                .unwrap_or(0),
                        )
                    });
                },
            );
        }
        let data = ArrayD::from_shape_vec(
            IxDyn(&[64, 64, 64]),
            SampleSpec::cube(64).generate(&Roi::new([0; 3], [64; 3])),
        )
        .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&[64, 64, 64])));
        group.bench_function(BenchmarkId::new("write_chunk", name), |b| {
            b.iter(|| black_box(array.write(&chunk, data.view()).is_ok()));
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    group.finish();
}

/// `ops::downsample` of one 64³ chunk of the sample (a pyramid level's block of work), by
/// method, factor 2.
fn downsampling(c: &mut Criterion) {
    use blockwise::ops::{Downsample, downsample};
    let mut group = c.benchmark_group("downsample");
    group
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    let data = ArrayD::from_shape_fn(IxDyn(&[64, 64, 64]), |i| {
        ((i[0] * 7 + i[1] * 13 + i[2] * 31) % 251) as u8
    });
    group.throughput(Throughput::Bytes(64 * 64 * 64));
    for (name, method) in [("mean", Downsample::Mean), ("max", Downsample::Max)] {
        group.bench_function(BenchmarkId::new("u8_64cubed_factor2", name), |b| {
            b.iter(|| {
                black_box(
                    downsample(data.view(), &[2, 2, 2], method)
                        .map(|a| a.len())
                        .unwrap_or(0),
                )
            });
        });
    }
    group.finish();
}

criterion_group!(benches, reads_and_writes, downsampling);
criterion_main!(benches);
