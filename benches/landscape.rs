//! Landscape benchmarks: the exact HVP at the sizes the dense and Lanczos paths use, dense
//! Hessian assembly, the faer spectrum (eigenvalues only, and with vectors), and Lanczos.
//!
//! Run: `cargo bench --bench landscape` (release; about 5 minutes on 2 cores). The spectrum of a
//! 5,000-dimensional Hessian is timed once by the CLI instead (criterion would repeat it 10×):
//! `cargo run --release -- hessian --classes 10 --per-class 40 --dim 12 --lambda-w 5e-3
//! --lambda-h 5e-3 --lambda-b 5e-3 --dense-limit 6000` (dense path) or `--collapsed` (class
//! decomposition) prints the assembly and eigensolver seconds.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use ufm::landscape::{dense_hessian, hessian_extremes, spectrum, LanczosOptions};
use ufm::ufm::{UfmConfig, UfmProblem};

fn problem(k: usize, n: usize, d: usize) -> UfmProblem {
    UfmConfig::balanced(k, n, d)
        .lambdas(5e-3, 5e-3, 5e-3)
        .build()
        .unwrap()
}

fn bench_hvp(c: &mut Criterion) {
    let mut g = c.benchmark_group("hvp");
    for (k, n, d) in [(10, 8, 11), (10, 40, 12), (10, 500, 64)] {
        let p = problem(k, n, d);
        let x: Vec<f64> = p.random_point(1, 1.0).unwrap();
        let v: Vec<f64> = p.random_point(2, 1.0).unwrap();
        let mut out = vec![0.0; p.n_params()];
        g.bench_with_input(BenchmarkId::new("cpu-f64/P", p.n_params()), &p, |b, p| {
            b.iter(|| p.hvp(black_box(&x), black_box(&v), &mut out))
        });
    }
    g.finish();
}

fn bench_dense(c: &mut Criterion) {
    let mut g = c.benchmark_group("dense");
    g.sample_size(10);
    for (k, n, d) in [(10, 8, 11), (10, 16, 11)] {
        let p = problem(k, n, d);
        let x: Vec<f64> = p.random_point(1, 1.0).unwrap();
        let h = dense_hessian(&p, &x).unwrap();
        let dim = p.n_params();
        g.bench_function(BenchmarkId::new("assemble/P", dim), |b| {
            b.iter(|| dense_hessian(&p, black_box(&x)).unwrap())
        });
        g.bench_function(BenchmarkId::new("eigenvalues/P", dim), |b| {
            b.iter(|| spectrum(black_box(h.matrix.view()), 1e-7, false).unwrap())
        });
        g.bench_function(BenchmarkId::new("eigen+vectors/P", dim), |b| {
            b.iter(|| spectrum(black_box(h.matrix.view()), 1e-7, true).unwrap())
        });
    }
    g.finish();
}

fn bench_lanczos(c: &mut Criterion) {
    let mut g = c.benchmark_group("lanczos");
    g.sample_size(10);
    for (k, n, d) in [(10, 40, 12), (10, 500, 64)] {
        let p = problem(k, n, d);
        let x: Vec<f64> = p.random_point(1, 1.0).unwrap();
        let opts = LanczosOptions {
            max_iter: 300,
            tol: 1e-8,
            seed: 0,
        };
        g.bench_function(BenchmarkId::new("extremes/P", p.n_params()), |b| {
            b.iter(|| hessian_extremes(&p, black_box(&x), &opts).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_hvp, bench_dense, bench_lanczos);
criterion_main!(benches);
