//! UFM objective benchmarks: one objective + gradient evaluation, one fused gradient-descent
//! step, and one Hessian-vector product, in f32 and f64, at the sizes named in issue 2.
//!
//! Run: `cargo bench --bench bench` (results in target/criterion). The comparison with
//! PyTorch and NumPy is `python3 benches/compare_torch.py`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ufm::ufm::{UfmConfig, UfmProblem};
use ufm::Real;

const SIZES: [(usize, usize, usize); 4] = [
    (10, 64, 100),
    (10, 512, 1000),
    (10, 512, 5000),
    (100, 512, 500),
];

fn problem(k: usize, d: usize, n: usize) -> UfmProblem {
    UfmConfig::balanced(k, n, d).build().expect("valid")
}

fn bench_precision<T: Real>(c: &mut Criterion) {
    let mut g = c.benchmark_group(format!("ufm_{}", T::NAME));
    for &(k, d, n) in &SIZES {
        let p = problem(k, d, n);
        let x: Vec<T> = p.random_point(0, 0.1).unwrap();
        let id = format!("K{k}_d{d}_n{n}");
        // Bytes of H read once: the floor of any full-batch gradient.
        g.throughput(Throughput::Bytes(
            (p.n_samples() * d * std::mem::size_of::<T>()) as u64,
        ));
        let mut grad = vec![T::zero(); x.len()];
        g.bench_function(BenchmarkId::new("value_grad", &id), |b| {
            b.iter(|| p.value_grad(&x, &mut grad))
        });
        let mut xs = x.clone();
        g.bench_function(BenchmarkId::new("gd_step_fused", &id), |b| {
            b.iter(|| p.gd_step_fused(&mut xs, T::of(1e-6)))
        });
        if n <= 1000 {
            let v: Vec<T> = p.random_point(1, 1.0).unwrap();
            let mut out = vec![T::zero(); x.len()];
            g.bench_function(BenchmarkId::new("hvp", &id), |b| {
                b.iter(|| p.hvp(&x, &v, &mut out))
            });
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_precision::<f32>(c);
    bench_precision::<f64>(c);
}

criterion_group! {
    name = ufm_objective;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(ufm_objective);
