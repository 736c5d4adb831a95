//! Benchmarks of `compute_metrics` (every metric, classifier and bias given) on synthetic,
//! seeded `f32` features held in memory, for the two sizes of issue 3:
//! N = 50,000, d = 512, K = 10 and N = 50,000, d = 2,048, K = 100, each with the two-pass
//! ($K\times K$ projection, the default there) and the one-pass ($d\times d$ scatter)
//! strategy.
//!
//! Run on 2 threads (the target of the issue):
//! `RAYON_NUM_THREADS=2 cargo bench --bench metrics`
//! (`UFM_BENCH_QUICK=1` runs only the d = 512 case). The end-to-end comparison with NumPy on
//! files is `benches/compare_metrics_numpy.py`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::time::Duration;
use ufm::metrics::{compute_metrics, InMemory, MetricsConfig, Strategy};

struct Case {
    h: Array2<f32>,
    y: Vec<u32>,
    w: Array2<f64>,
    b: Array1<f64>,
}

/// Class means of scale 3, unit Gaussian noise, balanced classes, W = means + noise.
fn case(n: usize, d: usize, k: usize, seed: u64) -> Case {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut g = move || -> f64 { StandardNormal.sample(&mut rng) };
    let mu = Array2::from_shape_fn((k, d), |_| 3.0 * g());
    let y: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    let h = Array2::from_shape_fn((n, d), |(i, j)| (mu[[y[i] as usize, j]] + g()) as f32);
    let w = Array2::from_shape_fn((k, d), |(a, j)| mu[[a, j]] + g());
    let b = Array1::from_shape_fn(k, |_| g());
    Case { h, y, w, b }
}

fn bench(c: &mut Criterion) {
    let quick = std::env::var_os("UFM_BENCH_QUICK").is_some();
    let threads = rayon::current_num_threads();
    let mut sizes = vec![(50_000, 512, 10)];
    if !quick {
        sizes.push((50_000, 2048, 100));
    }
    let mut group = c.benchmark_group("metrics");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for (n, d, k) in sizes {
        let cs = case(n, d, k, 7);
        for (label, strategy) in [
            ("two-pass", Strategy::TwoPass),
            ("one-pass", Strategy::OnePass),
        ] {
            let cfg = MetricsConfig {
                strategy,
                ..Default::default()
            };
            let id = BenchmarkId::new(format!("cpu{threads}/{label}"), format!("N{n}_d{d}_K{k}"));
            group.bench_function(id, |bch| {
                bch.iter(|| {
                    compute_metrics(
                        &InMemory::from(cs.h.view()),
                        &cs.y,
                        Some(cs.w.view()),
                        Some(cs.b.view()),
                        &cfg,
                    )
                    .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
