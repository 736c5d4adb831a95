//! CPU/CUDA parity: one test body ([`outputs`]) runs on the CPU reference backend and on the
//! CUDA backend, and every output (value, gradient, fused step, Hessian-vector product, class
//! statistics) must agree to a normwise relative error of 1e-4 in f32 and 1e-10 in f64
//! (`max |a - b| / max |b|`). Inputs are fresh seeded random draws per case; every output
//! buffer is filled with NaN before each run, so an output the device never writes fails.
//!
//! The CUDA comparisons (`gpu_*`) are ignored by default; run them with
//! `cargo test --test cuda_parity -- --ignored gpu`. Without a usable GPU they then print
//! `SKIPPED (no GPU)`, or fail under `UFM_REQUIRE_GPU=1` (see `tests/common`). The CPU-side
//! tests (the backend objective, the `--device` errors and fallbacks) always run.

mod common;

use ufm::backend::{Backend, BackendObjective, CpuBackend, Device};
use ufm::metrics::FeatureStats;
use ufm::solver::{solve, solve_with, Objectives, OptimizerSpec, SolveSpec};
use ufm::ufm::{Loss, UfmConfig, UfmProblem};
use ufm::Real;

/// Everything one body computes on one backend.
struct Outputs<T> {
    value: f64,
    grad_value: f64,
    grad: Vec<T>,
    step_f: f64,
    step_gn: f64,
    stepped: Vec<T>,
    hvp: Option<Vec<T>>,
    stats: FeatureStats,
}

/// The test body: the same calls on any backend, outputs poisoned with NaN first.
fn outputs<T: Real, B: Backend<T>>(
    b: &B,
    p: &UfmProblem,
    x: &[T],
    v: &[T],
    lr: T,
    with_hvp: bool,
) -> ufm::Result<Outputs<T>> {
    let n = p.n_params();
    let poison = vec![T::nan(); n];
    let xb = b.upload(x)?;
    let value = b.value(p, &xb)?;
    let mut gb = b.upload(&poison)?;
    let grad_value = b.value_grad(p, &xb, &mut gb)?;
    let mut grad = poison.clone();
    b.download(&gb, &mut grad)?;
    let mut xs = b.upload(x)?;
    let (step_f, step_gn) = b.gd_step(p, &mut xs, lr)?;
    let mut stepped = poison.clone();
    b.download(&xs, &mut stepped)?;
    let hvp = if with_hvp {
        let vb = b.upload(v)?;
        let mut ob = b.upload(&poison)?;
        b.hvp(p, &xb, &vb, &mut ob)?;
        let mut out = poison.clone();
        b.download(&ob, &mut out)?;
        Some(out)
    } else {
        None
    };
    let (k, d, nn) = (p.n_classes(), p.feature_dim(), p.n_samples());
    let feats = b.upload(&x[k * d..k * d + nn * d])?;
    let stats = b.class_stats(&feats, nn, d, p.labels(), k)?;
    Ok(Outputs {
        value,
        grad_value,
        grad,
        step_f,
        step_gn,
        stepped,
        hvp,
        stats,
    })
}

/// $\max|a-b|/\max|b|$ (NaN anywhere gives infinity).
fn rel_err<A: Copy + Into<f64>>(a: &[A], b: &[A]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let (x, y): (f64, f64) = (x.into(), y.into());
        if !x.is_finite() || !y.is_finite() {
            return f64::INFINITY;
        }
        num = num.max((x - y).abs());
        den = den.max(y.abs());
    }
    num / den.max(f64::MIN_POSITIVE)
}

fn rel_scalar(a: f64, b: f64) -> f64 {
    if !a.is_finite() || !b.is_finite() {
        return f64::INFINITY;
    }
    (a - b).abs() / b.abs().max(1e-300)
}

fn compare<T: Real + Into<f64>>(case: &str, gpu: &Outputs<T>, cpu: &Outputs<T>, tol: f64) {
    let checks: Vec<(&str, f64)> = vec![
        ("value", rel_scalar(gpu.value, cpu.value)),
        ("value_grad f", rel_scalar(gpu.grad_value, cpu.grad_value)),
        ("gradient", rel_err(&gpu.grad, &cpu.grad)),
        ("step f", rel_scalar(gpu.step_f, cpu.step_f)),
        ("step |grad|", rel_scalar(gpu.step_gn, cpu.step_gn)),
        ("stepped x", rel_err(&gpu.stepped, &cpu.stepped)),
        (
            "hvp",
            match (&gpu.hvp, &cpu.hvp) {
                (Some(a), Some(b)) => rel_err(a, b),
                _ => 0.0,
            },
        ),
        (
            "class means",
            rel_err(
                gpu.stats.means.as_slice().unwrap(),
                cpu.stats.means.as_slice().unwrap(),
            ),
        ),
        (
            "scatter",
            rel_err(
                gpu.stats.scatter.as_ref().unwrap().as_slice().unwrap(),
                cpu.stats.scatter.as_ref().unwrap().as_slice().unwrap(),
            ),
        ),
        (
            "class ss",
            rel_err(&gpu.stats.class_ss, &cpu.stats.class_ss),
        ),
    ];
    assert_eq!(gpu.stats.counts, cpu.stats.counts, "{case}: counts");
    for (what, e) in checks {
        println!("{case:<40} {what:<14} rel err {e:.2e} (tol {tol:.0e})");
        assert!(
            e <= tol,
            "{case}: {what} relative error {e:.3e} > {tol:.0e}"
        );
    }
}

/// The cases: both losses, with and without bias, every class bucket and the GEMM path,
/// feature dimensions that are not multiples of 32, imbalanced classes.
fn cases() -> Vec<(String, UfmProblem)> {
    let mut v = Vec::new();
    let shapes: [(usize, usize, usize); 5] = [
        (3, 37, 41),
        (10, 64, 23),
        (20, 33, 9),
        (32, 8, 5),
        (40, 19, 6),
    ];
    for (ci, &(k, d, per)) in shapes.iter().enumerate() {
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            for bias in [true, false] {
                if ci % 2 == 1 && !bias {
                    continue; // keep the test quick: no-bias only on every other shape
                }
                let sizes: Vec<usize> = (0..k).map(|c| per + (c * 7) % 5).collect();
                let p = UfmConfig::with_class_sizes(sizes, d)
                    .lambdas(3e-3, 2e-3, 1e-3)
                    .loss(loss)
                    .bias(bias)
                    .build()
                    .unwrap();
                v.push((format!("K={k} d={d} {} bias={bias}", loss.short_name()), p));
            }
        }
    }
    v
}

fn random_bias<T: Real>(p: &UfmProblem, x: &mut [T], seed: u64) {
    if p.has_bias() {
        let r: Vec<T> = p.random_point(seed, 0.5).unwrap();
        let k = p.n_classes();
        let n = x.len();
        x[n - k..].copy_from_slice(&r[..k]);
    }
}

#[cfg(feature = "cuda")]
fn gpu() -> Option<std::sync::Arc<ufm::backend::cuda::CudaBackend>> {
    common::gpu_or_skip(ufm::backend::cuda::CudaBackend::shared(0))
}

#[cfg(feature = "cuda")]
fn run_parity<T: ufm::backend::cuda::GpuReal + Into<f64>>(tol: f64, seed0: u64) {
    let Some(g) = gpu() else { return };
    println!(
        "device: {}",
        <ufm::backend::cuda::CudaBackend as Backend<T>>::name(&g)
    );
    for (i, (case, p)) in cases().into_iter().enumerate() {
        let seed = seed0 + i as u64;
        let mut x: Vec<T> = p.random_point(seed, 1.0).unwrap();
        random_bias(&p, &mut x, seed + 1000);
        let v: Vec<T> = p.random_point(seed + 2000, 1.0).unwrap();
        let with_hvp = p.n_classes() <= ufm::backend::kernels::MAX_FUSED_CLASSES;
        let lr = T::of(0.05);
        let cpu = outputs(&CpuBackend, &p, &x, &v, lr, with_hvp).unwrap();
        let dev = outputs(g.as_ref(), &p, &x, &v, lr, with_hvp)
            .unwrap_or_else(|e| panic!("{case}: CUDA backend failed: {e}"));
        compare(&format!("{} {case}", T::NAME), &dev, &cpu, tol);
    }
}

#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_matches_cpu_f32() {
    run_parity::<f32>(1e-4, 100);
}

#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_matches_cpu_f64() {
    run_parity::<f64>(1e-10, 200);
}

#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_solve_matches_cpu_solve() {
    let Some(_) = gpu() else { return };
    let p = UfmConfig::balanced(4, 30, 8)
        .lambdas(5e-3, 5e-3, 5e-3)
        .build()
        .unwrap();
    for optimizer in [
        OptimizerSpec::Gd { lr: 0.5 },
        OptimizerSpec::Lbfgs { memory: 10 },
    ] {
        let spec = SolveSpec {
            optimizer,
            max_iter: 300,
            tol: 1e-9,
            ..SolveSpec::default()
        };
        let cpu = solve(&p, &spec, None).unwrap();
        let (dev, name, fallback) = ufm::backend::solve(&p, &spec, None, Device::Cuda).unwrap();
        assert!(fallback.is_none() && name.starts_with("cuda"), "{name}");
        let e = (dev.summary.objective - cpu.summary.objective).abs();
        println!("{optimizer:?}: |f_gpu - f_cpu| = {e:.2e}");
        assert!(e <= 1e-10 * cpu.summary.objective.abs().max(1.0));
    }
}

/// The test body itself, on the CPU backend: every poisoned output is overwritten, the value
/// agrees between calls, the step equals $x-\eta\nabla f$, the HVP matches a central
/// difference of gradients, and `compare` accepts CPU vs CPU (so a GPU failure is the GPU's).
#[test]
fn parity_body_is_sound_on_the_cpu() {
    for (case, p) in cases() {
        let mut x: Vec<f64> = p.random_point(7, 1.0).unwrap();
        random_bias(&p, &mut x, 8);
        let v: Vec<f64> = p.random_point(9, 1.0).unwrap();
        let lr = 0.05;
        let o = outputs(&CpuBackend, &p, &x, &v, lr, true).unwrap();
        assert!(
            o.grad.iter().chain(&o.stepped).all(|g| g.is_finite()),
            "{case}"
        );
        assert!(rel_scalar(o.value, o.grad_value) < 1e-14, "{case}");
        assert!(rel_scalar(o.step_f, o.value) < 1e-14, "{case}");
        let expect: Vec<f64> = x.iter().zip(&o.grad).map(|(a, g)| a - lr * g).collect();
        assert!(rel_err(&o.stepped, &expect) < 1e-13, "{case}");
        let eps = 1e-6;
        let xp: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + eps * b).collect();
        let xm: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a - eps * b).collect();
        let (mut gp, mut gm) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        p.value_grad(&xp, &mut gp);
        p.value_grad(&xm, &mut gm);
        let fd: Vec<f64> = gp
            .iter()
            .zip(&gm)
            .map(|(a, b)| (a - b) / (2.0 * eps))
            .collect();
        assert!(rel_err(o.hvp.as_ref().unwrap(), &fd) < 1e-6, "{case}");
        compare(&format!("cpu-vs-cpu {case}"), &o, &o, 0.0);
    }
    // A NaN left in an output (an unwritten poisoned entry) fails the comparison.
    assert_eq!(rel_err(&[1.0, f64::NAN], &[1.0, 2.0]), f64::INFINITY);
}

/// The backend objective on the CPU reproduces the direct CPU solve exactly (the routing
/// `solve --device` uses, checked without a GPU).
#[test]
fn backend_objective_reproduces_the_cpu_solve() {
    let p = UfmConfig::with_class_sizes(vec![9, 12, 7], 5)
        .lambdas(1e-2, 1e-2, 1e-2)
        .build()
        .unwrap();
    for optimizer in [
        OptimizerSpec::Gd { lr: 0.5 },
        OptimizerSpec::Lbfgs { memory: 7 },
        OptimizerSpec::Newton {
            radius: 1.0,
            max_cg: 100,
        },
    ] {
        let spec = SolveSpec {
            optimizer,
            max_iter: 200,
            ..SolveSpec::default()
        };
        let direct = solve(&p, &spec, None).unwrap();
        let o64 = BackendObjective::<f64, _>::new(&p, &CpuBackend);
        let o32 = BackendObjective::<f32, _>::new(&p, &CpuBackend);
        let via = solve_with(
            &p,
            &spec,
            None,
            Objectives {
                f64: &o64,
                f32: &o32,
            },
        )
        .unwrap();
        assert!(o64.take_error().is_none());
        assert_eq!(
            direct.summary.iterations, via.summary.iterations,
            "{optimizer:?}"
        );
        assert_eq!(direct.x, via.x, "{optimizer:?}");
    }
}

/// `--device cuda` without a usable GPU is a clear error; `auto` falls back to the CPU and says
/// why; on a GPU machine both run on the GPU.
#[test]
fn device_choice_errors_or_falls_back_clearly() {
    let p = UfmConfig::balanced(3, 4, 3).build().unwrap();
    let spec = SolveSpec {
        max_iter: 50,
        ..SolveSpec::default()
    };
    let cuda = ufm::backend::solve(&p, &spec, None, Device::Cuda);
    let auto = ufm::backend::solve(&p, &spec, None, Device::Auto).unwrap();
    match cuda {
        Err(e) => {
            let msg = e.to_string();
            println!("--device cuda here: {msg}");
            assert!(msg.contains("CUDA is not available"), "{msg}");
            assert!(
                msg.contains("libcuda.so.1")
                    || msg.contains("libnvrtc.so.13")
                    || msg.contains("device")
                    || msg.contains("feature"),
                "{msg}"
            );
            assert_eq!(auto.1, "cpu");
            let why = auto.2.expect("auto must say why it fell back");
            assert!(why.contains("CUDA is not available"), "{why}");
        }
        Ok((_, name, _)) => {
            assert!(name.starts_with("cuda"));
            assert!(auto.1.starts_with("cuda") && auto.2.is_none());
        }
    }
    // Unsupported losses fall back under auto and are an error under cuda, never a panic.
    let focal = UfmConfig::balanced(3, 4, 3)
        .loss(Loss::Focal { gamma: 2.0 })
        .build()
        .unwrap();
    let r = ufm::backend::solve(&focal, &spec, None, Device::Auto).unwrap();
    assert_eq!(r.1, "cpu");
    assert!(ufm::backend::solve(&focal, &spec, None, Device::Cuda).is_err());
}

#[test]
fn cli_device_flag() {
    use assert_cmd::Command;
    let base = [
        "solve",
        "--classes",
        "3",
        "--dim",
        "4",
        "--per-class",
        "5",
        "--max-iter",
        "50",
    ];
    let gpu_usable = ufm::backend::solve(
        &UfmConfig::balanced(3, 5, 4).build().unwrap(),
        &SolveSpec {
            max_iter: 1,
            ..SolveSpec::default()
        },
        None,
        Device::Cuda,
    )
    .is_ok();
    let out = Command::cargo_bin("ufm")
        .unwrap()
        .args(base)
        .args(["--device", "cuda"])
        .output()
        .unwrap();
    if gpu_usable {
        assert!(out.status.success());
    } else {
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("Error: CUDA is not available"), "{err}");
    }
    let out = Command::cargo_bin("ufm")
        .unwrap()
        .args(base)
        .args(["--device", "auto"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    if !gpu_usable {
        assert_eq!(err.matches("running on the CPU").count(), 1, "{err}");
    }
    let out = Command::cargo_bin("ufm")
        .unwrap()
        .args(base)
        .args(["--device", "tpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2)); // clap usage error names the allowed values
    assert!(String::from_utf8_lossy(&out.stderr).contains("cuda"));
}

/// Imbalanced f64 / f32 features with a classifier (so the nearest-centre pass runs too).
fn metrics_case() -> (
    ndarray::Array2<f64>,
    ndarray::Array2<f32>,
    Vec<u32>,
    ndarray::Array2<f64>,
) {
    use ndarray::Array2;
    use rand::{RngExt, SeedableRng};
    let (n, d, k) = (700, 24, 5);
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    let y: Vec<u32> = (0..n).map(|i| (i % 7).min(k - 1) as u32).collect(); // imbalanced
    let mu = Array2::from_shape_fn((k, d), |_| 3.0 * (rng.random::<f64>() - 0.5));
    let h = Array2::from_shape_fn((n, d), |(i, j)| {
        mu[[y[i] as usize, j]] + rng.random::<f64>() - 0.5 + 50.0
    });
    let w = Array2::from_shape_fn((k, d), |_| rng.random::<f64>() - 0.5);
    let h32 = h.mapv(|v| v as f32);
    (h, h32, y, w)
}

/// `compute_metrics` with the class statistics on the GPU gives every metric of the CPU's
/// two-pass route to 1e-9 relative (f64 and f32 features, imbalanced classes, with a
/// classifier so the nearest-centre pass runs too), and `Device::Auto` picks the GPU.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_metrics_match_the_cpu() {
    use ufm::metrics::{compute_metrics, InMemory, MetricsConfig};
    let (h, h32, y, w) = metrics_case();
    for (name, feats) in [
        ("f64", InMemory::from(h.view())),
        ("f32", InMemory::from(h32.view())),
    ] {
        let run = |device| {
            let cfg = MetricsConfig {
                device,
                ..Default::default()
            };
            compute_metrics(&feats, &y, Some(w.view()), None, &cfg)
        };
        let Some(gpu) = common::gpu_or_skip(run(Device::Cuda)) else {
            return;
        };
        let cpu = run(Device::Cpu).unwrap();
        let auto = run(Device::Auto).unwrap();
        assert!(gpu.device.starts_with("cuda"), "{}", gpu.device);
        let mut compared = 0;
        for &m in ufm::metrics::Metric::ALL {
            assert_eq!(gpu.get(m).is_some(), cpu.get(m).is_some(), "{name} {m}");
            if let (Some(a), Some(b)) = (gpu.get(m), cpu.get(m)) {
                assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1e-12),
                    "{name} {m}: GPU {a} vs CPU {b}"
                );
                compared += 1;
            }
        }
        assert!(compared >= 14, "{name}: only {compared} metrics compared");
        assert!(auto.device.starts_with("cuda") && auto.device_note.is_none());
    }
}

/// Without a GPU, `Device::Cuda` is a clear error and `Device::Auto` gives the CPU's numbers
/// exactly and says why (on a GPU machine: `Auto` runs there, checked by the test above).
#[test]
fn metrics_auto_falls_back_to_the_cpu_exactly() {
    use ufm::metrics::{compute_metrics, InMemory, Metric, MetricsConfig};
    let (h, h32, y, w) = metrics_case();
    for (name, feats) in [
        ("f64", InMemory::from(h.view())),
        ("f32", InMemory::from(h32.view())),
    ] {
        let run = |device| {
            let cfg = MetricsConfig {
                device,
                ..Default::default()
            };
            compute_metrics(&feats, &y, Some(w.view()), None, &cfg)
        };
        let cpu = run(Device::Cpu).unwrap();
        let auto = run(Device::Auto).unwrap();
        let Err(e) = run(Device::Cuda) else {
            println!("a GPU is usable here: the fallback is not exercised");
            return;
        };
        let msg = e.to_string();
        assert!(msg.contains("CUDA is not available"), "{msg}");
        assert_eq!(auto.device, "cpu");
        assert!(auto
            .device_note
            .as_deref()
            .unwrap()
            .contains("CUDA is not available"));
        for &m in Metric::ALL {
            assert_eq!(auto.get(m), cpu.get(m), "{name} {m}");
        }
    }
}
