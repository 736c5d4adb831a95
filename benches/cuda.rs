//! One full-batch gradient step of the UFM, f32, at K = 10, d = 512, N = 10^6 (override with
//! `UFM_BENCH_K`, `UFM_BENCH_D`, `UFM_BENCH_N`): the CPU (fused, blocked, rayon), the CUDA
//! three-GEMM cuBLAS path and the fused CUDA kernels; plus the device's measured ceilings
//! (device-to-device copy bandwidth, a large cuBLAS SGEMM) to report against.
//!
//! ```text
//! cargo bench --bench cuda                 # skips (with the reason) when no GPU is usable
//! bash scripts/gpu-check.sh build && bash scripts/gpu-check.sh run   # on the GPU machine
//! ```
//!
//! Every CUDA timing synchronises the stream before the clock stops; the device name is part
//! of each benchmark id. The step's throughput is counted as the minimum traffic of a step,
//! $3\cdot4Nd$ bytes ($H$ read twice, written once), so criterion's GB/s compares directly with
//! the copy bandwidth (counted as $2\cdot4Nd$: read + write). A step is $6NdK$ flops.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

#[cfg(feature = "cuda")]
fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(feature = "cuda")]
fn bench_cuda(c: &mut Criterion) {
    use criterion::Throughput;
    use std::time::Instant;
    use ufm::backend::cuda::CudaBackend;
    use ufm::backend::Backend;
    use ufm::ufm::UfmConfig;

    let g = match CudaBackend::shared(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("benches/cuda.rs: skipped: {e}");
            return;
        }
    };
    let (k, d, n) = (
        env_usize("UFM_BENCH_K", 10),
        env_usize("UFM_BENCH_D", 512),
        env_usize("UFM_BENCH_N", 1_000_000),
    );
    let dev = <CudaBackend as Backend<f32>>::name(&g)
        .replace(' ', "_")
        .replace(['(', ')'], "");
    g.warm_up().expect("NVRTC compile of the kernels");
    let st = g.stream().clone();
    let sync = || st.synchronize().expect("synchronize");
    let elems = n * d;
    let bytes = (elems * 4) as u64;

    // Ceiling 1: device-to-device copy of an H-sized buffer.
    {
        let src = st.alloc_zeros::<f32>(elems).expect("alloc");
        let mut dst = st.alloc_zeros::<f32>(elems).expect("alloc");
        let mut grp = c.benchmark_group(format!("copy_d2d_{}MB", bytes >> 20));
        grp.throughput(Throughput::Bytes(2 * bytes));
        grp.bench_function(dev.as_str(), |b| {
            b.iter_custom(|iters| {
                sync();
                let t = Instant::now();
                for _ in 0..iters {
                    st.memcpy_dtod(&src, &mut dst).expect("copy");
                }
                sync();
                t.elapsed()
            })
        });
        grp.finish();
    }
    // Ceiling 2: a large SGEMM (TFLOP/s = criterion's elements/s).
    if let Ok(blas) = g.blas() {
        use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig};
        let m = 8192usize;
        let a = st.alloc_zeros::<f32>(m * m).expect("alloc");
        let bm = st.alloc_zeros::<f32>(m * m).expect("alloc");
        let mut cm = st.alloc_zeros::<f32>(m * m).expect("alloc");
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_N,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: m as i32,
            n: m as i32,
            k: m as i32,
            alpha: 1.0f32,
            lda: m as i32,
            ldb: m as i32,
            beta: 0.0f32,
            ldc: m as i32,
        };
        let mut grp = c.benchmark_group("sgemm_8192");
        grp.throughput(Throughput::Elements(2 * (m as u64).pow(3)));
        grp.bench_function(dev.as_str(), |b| {
            b.iter_custom(|iters| {
                sync();
                let t = Instant::now();
                for _ in 0..iters {
                    // SAFETY: three m x m buffers, leading dimension m.
                    unsafe { blas.gemm(cfg, &a, &bm, &mut cm) }.expect("sgemm");
                }
                sync();
                t.elapsed()
            })
        });
        grp.finish();
    }

    let p = UfmConfig::balanced(k, n / k, d)
        .lambdas(5e-4, 5e-4, 5e-4)
        .build()
        .expect("problem");
    let x0: Vec<f32> = p.random_point(0, 0.1).expect("start");
    let lr = 1e-6f32; // tiny: the state stays put over thousands of timed steps
    let mut grp = c.benchmark_group(format!("gd_step_f32_K{k}_d{d}_N{}", p.n_samples()));
    grp.throughput(Throughput::Bytes(3 * (p.n_samples() * d * 4) as u64));
    if std::env::var_os("UFM_BENCH_SKIP_CPU").is_none() {
        let mut x = x0.clone();
        grp.bench_function("cpu", |b| b.iter(|| p.gd_step_fused(&mut x, lr)));
    }
    let mut xd = g.upload(&x0).expect("upload");
    grp.bench_function(format!("cuda-cublas/{dev}"), |b| {
        b.iter_custom(|iters| {
            sync();
            let t = Instant::now();
            for _ in 0..iters {
                g.gd_step_gemm(&p, &mut xd, lr).expect("GEMM step");
            }
            sync();
            t.elapsed()
        })
    });
    let mut xd = g.upload(&x0).expect("upload");
    grp.bench_function(format!("cuda-fused/{dev}"), |b| {
        b.iter_custom(|iters| {
            sync();
            let t = Instant::now();
            for _ in 0..iters {
                g.gd_step(&p, &mut xd, lr).expect("fused step");
            }
            sync();
            t.elapsed()
        })
    });
    grp.finish();
}

#[cfg(not(feature = "cuda"))]
fn bench_cuda(_c: &mut Criterion) {
    eprintln!("benches/cuda.rs: skipped: built without the `cuda` feature");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_cuda
}
criterion_main!(benches);
