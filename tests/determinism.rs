//! Bit-reproducibility: the same input gives the same bytes, run to run and on any number of
//! threads. Every parallel reduction combines its partial sums over a partition of the data
//! that depends only on the problem's shape, in a fixed order (see `ufm::par`), so the thread
//! count changes only which core computes a partial sum, never the arithmetic.
//!
//! Checked on the library (objective, gradient, fused step, Hessian-vector product, class
//! statistics and every metric, in rayon pools of 1, 2, 3 and 8 threads) and end to end on
//! `ufm solve --json` and `ufm metrics --json` with N > 10^5 samples, run twice and with
//! `RAYON_NUM_THREADS=1` vs `2`. The only fields that may differ are wall-clock times
//! (`seconds`), which are removed before comparing.

use assert_cmd::Command;
use ndarray::{Array1, Array2};
use ndarray_npy::write_npy;
use ufm::metrics::{compute_metrics, InMemory, MetricsConfig, Strategy};
use ufm::ufm::UfmConfig;

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Value, gradient, fused GD step and HVP of a 23-block problem (ragged last block) have the
/// same bits in pools of 1, 2, 3 and 8 threads, in f64 and f32.
#[test]
fn objective_gradient_step_and_hvp_are_bitwise_independent_of_threads() {
    let p = UfmConfig::with_class_sizes(vec![4000, 3500, 4321], 6)
        .lambdas(1e-3, 2e-3, 1e-3)
        .build()
        .unwrap();
    let x: Vec<f64> = p.random_point(5, 1.0).unwrap();
    let v: Vec<f64> = p.random_point(6, 1.0).unwrap();
    let run = |t: usize| {
        in_pool(t, || {
            let mut g = vec![0.0; x.len()];
            let f = p.value(&x);
            let f2 = p.value_grad(&x, &mut g);
            let mut hv = vec![0.0; x.len()];
            p.hvp(&x, &v, &mut hv);
            let mut xs = x.clone();
            let (f3, gn) = p.gd_step_fused(&mut xs, 0.1);
            let x32: Vec<f32> = x.iter().map(|&a| a as f32).collect();
            let mut g32 = vec![0.0f32; x.len()];
            let f32v = p.value_grad(&x32, &mut g32);
            let mut out = vec![f, f2, f3, gn, f32v as f64];
            out.extend(g);
            out.extend(hv);
            out.extend(xs);
            out.extend(g32.iter().map(|&a| a as f64));
            bits(&out)
        })
    };
    let one = run(1);
    for t in [2, 3, 8] {
        assert!(run(t) == one, "{t} threads differ from 1 thread");
    }
    assert!(run(2) == run(2), "two runs on 2 threads differ");
}

/// Every metric (one-pass and two-pass strategies, with the nearest-centre pass) has the same
/// bits in pools of 1, 2, 3 and 8 threads.
#[test]
fn metrics_are_bitwise_independent_of_threads() {
    let (h, y, w, b) = features(30_011, 12, 7, 3);
    for strategy in [Strategy::OnePass, Strategy::TwoPass] {
        let run = |t: usize| {
            in_pool(t, || {
                let cfg = MetricsConfig {
                    strategy,
                    ..Default::default()
                };
                let r = compute_metrics(
                    &InMemory::from(h.view()),
                    &y,
                    Some(w.view()),
                    Some(b.view()),
                    &cfg,
                )
                .unwrap();
                serde_json::to_string(&r).unwrap()
            })
        };
        let one = run(1);
        assert!(one.contains("\"nc1\"") && one.contains("\"ncc_agreement\""));
        for t in [2, 3, 8] {
            assert_eq!(run(t), one, "{strategy:?}: {t} threads vs 1");
        }
    }
}

/// Seeded features `n × d` (f32) in `k` imbalanced classes, a classifier and a bias.
fn features(
    n: usize,
    d: usize,
    k: usize,
    seed: u64,
) -> (Array2<f32>, Vec<u32>, Array2<f64>, Array1<f64>) {
    let mut s = seed;
    let mut next = move || {
        // SplitMix64 -> uniform in [-1, 1)
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    };
    let mu = Array2::from_shape_fn((k, d), |_| 3.0 * next());
    let y: Vec<u32> = (0..n).map(|i| (i % (k + 2)).min(k - 1) as u32).collect();
    let h = Array2::from_shape_fn((n, d), |(i, j)| {
        (mu[[y[i] as usize, j]] + next() + 10.0) as f32
    });
    let w = Array2::from_shape_fn((k, d), |_| next());
    let b = Array1::from_shape_fn(k, |_| next());
    (h, y, w, b)
}

/// Removes every `seconds` field (wall-clock times) from a JSON value.
fn without_times(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("seconds");
            m.values_mut().for_each(without_times);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_times),
        _ => {}
    }
}

fn run_json(args: &[&str], threads: &str) -> String {
    let out = Command::cargo_bin("ufm")
        .unwrap()
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    without_times(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

/// `ufm solve --json` with N = 120,000 samples: identical output (times removed) on two runs
/// and on 1 vs 2 threads.
#[test]
fn cli_solve_json_is_reproducible_on_any_thread_count() {
    let args = [
        "solve",
        "--classes",
        "10",
        "--dim",
        "6",
        "--per-class",
        "12000",
        "--max-iter",
        "25",
        "--json",
    ];
    let a = run_json(&args, "2");
    assert!(a.contains("\"objective\""), "{a}");
    assert!(!a.contains("\"seconds\""));
    assert_eq!(a, run_json(&args, "2"), "two runs on 2 threads");
    assert_eq!(a, run_json(&args, "1"), "1 thread vs 2 threads");
}

/// `ufm metrics --json` on N = 150,000 f32 feature rows with a classifier and bias (every
/// metric, the one-pass scatter route and the two-pass route): identical output on two runs
/// and on 1 vs 2 threads.
#[test]
fn cli_metrics_json_is_reproducible_on_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, y, w, b) = features(150_000, 16, 10, 9);
    let p = |n: &str| tmp.path().join(n);
    write_npy(p("h.npy"), &h).unwrap();
    write_npy(
        p("y.npy"),
        &Array1::from(y.iter().map(|&v| v as i64).collect::<Vec<_>>()),
    )
    .unwrap();
    write_npy(p("w.npy"), &w).unwrap();
    write_npy(p("b.npy"), &b).unwrap();
    let s = |n: &str| p(n).display().to_string();
    let (hf, yf, wf, bf) = (s("h.npy"), s("y.npy"), s("w.npy"), s("b.npy"));
    for strategy in ["one-pass", "two-pass"] {
        let args = [
            "metrics",
            "--json",
            "--features",
            &hf,
            "--labels",
            &yf,
            "--weights",
            &wf,
            "--bias",
            &bf,
            "--strategy",
            strategy,
        ];
        let a = run_json(&args, "2");
        assert!(a.contains("\"nc1\"") && a.contains("\"bias\""), "{a}");
        assert_eq!(a, run_json(&args, "2"), "{strategy}: two runs on 2 threads");
        assert_eq!(a, run_json(&args, "1"), "{strategy}: 1 thread vs 2 threads");
    }
}

/// A training step of small networks (every gradient, the logits and the features) has the
/// same bits in pools of 1, 2, 3 and 8 threads: the convolutions' weight gradients are summed
/// over lanes fixed by the shape ([`ufm::nn::layers::conv::LANES`]), batch norm sums per image
/// in image order, and every GEMM entry is one dot product whatever the split.
#[test]
fn network_training_step_is_bitwise_independent_of_threads() {
    use ndarray::Array4;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use ufm::nn::layers::conv::ConvInit;
    use ufm::nn::layers::{cross_entropy, Module, TensorMut};
    use ufm::nn::models::{Body, Mlp, Net, ResNet, ResNetSpec, Stem};

    let step = |which: usize, threads: usize| -> Vec<u32> {
        in_pool(threads, || {
            let mut rng = StdRng::seed_from_u64(11);
            let (body, hw) = match which {
                0 => (Body::Mlp(Mlp::new(3 * 8 * 8, 40, 3, &mut rng)), 8),
                _ => {
                    let stem = if which == 1 {
                        Stem::ImageNet
                    } else {
                        Stem::Cifar
                    };
                    let spec = ResNetSpec {
                        stem,
                        widths: [4, 6, 8, 8],
                        blocks: [1, 1, 1, 1],
                        fixdim: 0,
                        init: ConvInit::KaimingFanOut,
                        shortcut_name: "downsample",
                        in_channels: 3,
                    };
                    let hw = if stem == Stem::ImageNet { 16 } else { 8 };
                    (Body::ResNet(Box::new(ResNet::new(&spec, &mut rng))), hw)
                }
            };
            let mut net = Net::<f32>::with_body(body, 5, true, false, &mut rng).unwrap();
            let x =
                Array4::from_shape_simple_fn((12, 3, hw, hw), || rng.random_range(-1.0f32..1.0));
            let y: Vec<u32> = (0..12).map(|i| i % 5).collect();
            net.zero_grad();
            let out = net.forward(x, true).unwrap();
            let (_, g) = cross_entropy(&out.logits, &y).unwrap();
            net.backward(&g, None);
            let mut v: Vec<u32> = out.logits.iter().map(|a| a.to_bits()).collect();
            v.extend(out.features.iter().map(|a| a.to_bits()));
            net.visit("", &mut |_, t| match t {
                TensorMut::Param(p) => v.extend(p.grad.iter().map(|a| a.to_bits())),
                TensorMut::Buffer(b) => v.extend(b.iter().map(|a| a.to_bits())),
                TensorMut::Count(_) => {}
            });
            v
        })
    };
    for which in 0..3 {
        let one = step(which, 1);
        for t in [2, 3, 8] {
            assert!(
                one == step(which, t),
                "network {which}: {t} threads differ from 1"
            );
        }
    }
}
