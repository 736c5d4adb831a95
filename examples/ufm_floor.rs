//! The floor of one full-batch UFM gradient-descent step on this machine, and how close
//! `UfmProblem::gd_step_fused` gets to it.
//!
//! ```text
//! cargo run --release --example ufm_floor [-- --threads 2 --reps 15]
//! ```
//!
//! Measures, with the given number of threads (best of `--reps`):
//! * memory bandwidth of an in-place read-modify-write stream over 256 MiB (`a[i] = s·a[i] + t`,
//!   the access pattern of the fused step, which reads $H$ once and writes it once), and of a
//!   read-only sum;
//! * peak fused multiply-add throughput (16 independent accumulators in registers, AVX-512F
//!   when the CPU has it, else AVX2 + FMA), in f32 and f64;
//!
//! then, at (K, d, n) = (10, 512, 5000) and (100, 512, 500) in f32 and f64, the floor
//! $t_\text{floor}=\max(2\cdot Nd\cdot s/\text{BW},\ 6KdN/\text{peak})$ ($s$ bytes per real)
//! and the measured fused step (minimum and median over `--reps` steps), with the fraction
//! $t_\text{floor}/t_\text{step}$. On a shared machine wall times depend on the load; the last
//! two columns do not (much): the step's CPU seconds (all threads) and the fraction
//! $(6KdN/\text{peak per CPU second})/\text{CPU seconds}$, i.e. how close the step's
//! instruction stream comes to the FMA units' rate while it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use ufm::ufm::UfmConfig;
use ufm::Real;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// CPU seconds of this process (all threads), where the platform offers it.
fn cpu_now() -> f64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + 1e-9 * ts.tv_nsec as f64
    }
    #[cfg(not(unix))]
    {
        f64::NAN
    }
}

/// CPU seconds (minimum over repetitions) of the last `best_of`, as `f64` bits (set from
/// whichever thread ran it).
static LAST_CPU: AtomicU64 = AtomicU64::new(0);

/// Minimum and median wall seconds of `reps` calls (the minimum CPU time goes to `LAST_CPU`).
fn best_of<F: FnMut()>(reps: usize, mut f: F) -> (f64, f64) {
    let mut cpu = f64::INFINITY;
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let c = cpu_now();
            let s = Instant::now();
            f();
            let e = s.elapsed().as_secs_f64();
            cpu = cpu.min(cpu_now() - c);
            e
        })
        .collect();
    LAST_CPU.store(cpu.to_bits(), Ordering::Relaxed);
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[0], t[t.len() / 2])
}

thread_local! {
    /// Flop/s per CPU second of the last `peak` (load-independent).
    static PER_CORE: std::cell::Cell<f64> = const { std::cell::Cell::new(f64::NAN) };
}

fn last_cpu() -> f64 {
    f64::from_bits(LAST_CPU.load(Ordering::Relaxed))
}

/// Bytes per second of an in-place read-modify-write and of a read-only pass.
fn bandwidth(pool: &rayon::ThreadPool, reps: usize) -> (f64, f64) {
    use rayon::prelude::*;
    let n = 64 << 20; // 64 Mi f32 = 256 MiB
    let mut a = vec![1.0f32; n];
    let chunk = n / 64;
    let (rmw, _) = best_of(reps, || {
        pool.install(|| {
            a.par_chunks_mut(chunk).for_each(|c| {
                for v in c.iter_mut() {
                    *v = *v * 0.999 + 1e-3;
                }
            })
        })
    });
    let (ro, _) = best_of(reps, || {
        let s: f32 = pool.install(|| {
            a.par_chunks(chunk)
                .map(|c| {
                    let mut acc = [0.0f32; 16];
                    for b in c.chunks_exact(16) {
                        for j in 0..16 {
                            acc[j] += b[j];
                        }
                    }
                    acc.iter().sum::<f32>()
                })
                .sum()
        });
        std::hint::black_box(s);
    });
    let bytes = (n * 4) as f64;
    (2.0 * bytes / rmw, bytes / ro)
}

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;
    pub const ITERS: usize = 20_000_000;

    #[target_feature(enable = "avx512f")]
    unsafe fn f32_512() -> f32 {
        let a = _mm512_set1_ps(0.999_999);
        let b = _mm512_set1_ps(1e-7);
        let mut acc = [_mm512_set1_ps(1.0); 16];
        for _ in 0..ITERS {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for v in acc {
            s = _mm512_add_ps(s, v);
        }
        _mm512_reduce_add_ps(s)
    }
    #[target_feature(enable = "avx512f")]
    unsafe fn f64_512() -> f64 {
        let a = _mm512_set1_pd(0.999_999);
        let b = _mm512_set1_pd(1e-7);
        let mut acc = [_mm512_set1_pd(1.0); 16];
        for _ in 0..ITERS {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_pd(*v, a, b);
            }
        }
        let mut s = _mm512_setzero_pd();
        for v in acc {
            s = _mm512_add_pd(s, v);
        }
        _mm512_reduce_add_pd(s)
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn f32_256() -> f32 {
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(1.0); 12];
        for _ in 0..ITERS {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut s = [0.0f32; 8];
        let mut t = _mm256_setzero_ps();
        for v in acc {
            t = _mm256_add_ps(t, v);
        }
        _mm256_storeu_ps(s.as_mut_ptr(), t);
        s.iter().sum()
    }

    /// Flops per call and the kernel (`lanes · accumulators · 2 · ITERS`).
    pub fn kernel(f64_: bool) -> Option<(f64, fn() -> f64)> {
        if std::is_x86_feature_detected!("avx512f") {
            if f64_ {
                // SAFETY: AVX-512F checked above.
                Some(((8 * 16 * 2 * ITERS) as f64, || unsafe { f64_512() }))
            } else {
                // SAFETY: AVX-512F checked above.
                Some(((16 * 16 * 2 * ITERS) as f64, || unsafe { f32_512() as f64 }))
            }
        } else if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && !f64_
        {
            // SAFETY: AVX2 and FMA checked above.
            Some(((8 * 12 * 2 * ITERS) as f64, || unsafe { f32_256() as f64 }))
        } else {
            None
        }
    }
}

/// Peak flop/s with `threads` threads each running the FMA kernel.
fn peak(threads: usize, f64_: bool, reps: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let (flops, k) = peak::kernel(f64_)?;
        let (t, _) = best_of(reps.min(5), || {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads).map(|_| s.spawn(k)).collect();
                for h in hs {
                    std::hint::black_box(h.join().unwrap());
                }
            })
        });
        let cpu = last_cpu();
        PER_CORE.with(|c| c.set(threads as f64 * flops / cpu));
        Some(threads as f64 * flops / t)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (threads, f64_, reps);
        None
    }
}

fn step<T: Real>(
    pool: &rayon::ThreadPool,
    k: usize,
    d: usize,
    n: usize,
    reps: usize,
) -> (f64, f64) {
    let p = UfmConfig::balanced(k, n, d)
        .lambdas(5e-4, 5e-4, 5e-4)
        .build()
        .expect("valid");
    let mut x: Vec<T> = p.random_point(0, 0.1).expect("point");
    pool.install(|| {
        p.gd_step_fused(&mut x, T::of(1e-3));
        best_of(reps, || {
            std::hint::black_box(p.gd_step_fused(&mut x, T::of(1e-3)));
        })
    })
}

fn main() {
    let threads = arg("--threads", 2);
    let reps = arg("--reps", 15);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    // `--only-step K PREC`: just time the step (for profiling).
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == "--only-step") {
        let k: usize = argv[i + 1].parse().expect("K");
        let n = if k == 10 { 5000 } else { 500 };
        let (tmin, tmed) = match argv[i + 2].as_str() {
            "f32" => step::<f32>(&pool, k, 512, n, reps),
            _ => step::<f64>(&pool, k, 512, n, reps),
        };
        println!(
            "step min {:.2} ms, median {:.2} ms, min CPU time {:.2} ms",
            1e3 * tmin,
            1e3 * tmed,
            1e3 * last_cpu()
        );
        return;
    }
    let (bw, bw_ro) = bandwidth(&pool, reps);
    println!("threads: {threads}");
    println!(
        "memory bandwidth: {:.1} GB/s read+write in place, {:.1} GB/s read only",
        bw / 1e9,
        bw_ro / 1e9
    );
    let p32 = peak(threads, false, reps);
    let pc32 = PER_CORE.with(|c| c.get());
    let p64 = peak(threads, true, reps);
    let pc64 = PER_CORE.with(|c| c.get());
    let p32_1 = peak(1, false, reps);
    for (name, p, p1, pc) in [
        ("f32", p32, p32_1, pc32),
        ("f64", p64, peak(1, true, reps), pc64),
    ] {
        match (p, p1) {
            (Some(p), Some(p1)) => println!(
                "peak FMA throughput {name}: {:.1} GFLOP/s ({threads} threads), {:.1} GFLOP/s (1 thread), {:.1} GFLOP per CPU second",
                p / 1e9,
                p1 / 1e9,
                pc / 1e9
            ),
            _ => println!("peak FMA throughput {name}: not measured (no AVX2/AVX-512 kernel)"),
        }
    }
    println!();
    println!(
        "{:>16} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>9}",
        "(K, d, n)",
        "prec",
        "mem floor",
        "FMA floor",
        "floor",
        "step min",
        "step med",
        "floor/min",
        "step CPU",
        "FMA/CPU"
    );
    for (k, d, n) in [(10, 512, 5000), (100, 512, 500)] {
        for prec in ["f32", "f64"] {
            let nn = (k * n) as f64;
            let s = if prec == "f32" { 4.0 } else { 8.0 };
            let peak = if prec == "f32" { p32 } else { p64 };
            let mem = 2.0 * nn * d as f64 * s / bw;
            let fma = peak.map(|p| 6.0 * (k * d) as f64 * nn / p);
            let floor = fma.map_or(mem, |f| f.max(mem));
            let (tmin, tmed) = if prec == "f32" {
                step::<f32>(&pool, k, d, n, reps)
            } else {
                step::<f64>(&pool, k, d, n, reps)
            };
            // CPU seconds the FMAs need at the per-core peak, over the step's CPU seconds.
            let pc = if prec == "f32" { pc32 } else { pc64 };
            let cpu = last_cpu();
            let fma_cpu = 6.0 * (k * d) as f64 * nn / pc;
            println!(
                "{:>16} {:>5} {:>8.1}ms {:>8}ms {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>8.0}% {:>8.1}ms {:>8.0}%",
                format!("({k}, {d}, {n})"),
                prec,
                1e3 * mem,
                fma.map_or("-".into(), |f| format!("{:.1}", 1e3 * f)),
                1e3 * floor,
                1e3 * tmin,
                1e3 * tmed,
                100.0 * floor / tmin,
                1e3 * cpu,
                100.0 * fma_cpu / cpu
            );
        }
    }
}
