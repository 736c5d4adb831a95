//! CPU/GPU parity of the network layers (`ufm train --device cuda`): the PyTorch fixtures of
//! `tests/nn_torch_parity.rs` on the GPU layers (1e-4 relative, as the CPU layers), every GPU
//! layer of `ufm::nn::cuda` against the CPU layer of `ufm::nn::layers` on the same seeded
//! inputs (outputs and all gradients, normwise relative error `max|a - b| / max|b|` <= 1e-4 in f32),
//! one full training step of every model variant (the parameter *updates* agree to 1e-3:
//! gradients through up to 18 layers of f32 GEMMs summed in different orders), and a short
//! training run with the same seed and batch order (per-epoch loss within 1e-3 relative, top-1
//! within 2 points, validation NC metrics within 1e-2), on the real data in `$UFM_DATA_DIR`
//! (default `../shared/data`).
//!
//! The GPU comparisons (module `gpu`) are ignored by default; run them with
//! `cargo test --test nn_cuda_parity -- --ignored gpu`. Without a usable GPU they then print
//! `SKIPPED (no GPU)`, or fail under `UFM_REQUIRE_GPU=1` (see `tests/common`). The CLI tests
//! (`cli_*`: `--device cuda` is a clear error, `--device auto` falls back with one note) run
//! always, on a synthetic MNIST.

mod common;

use assert_cmd::Command;
use ufm::backend::Device;
use ufm::nn::cuda::NnDevice;

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;

    /// $\max|a-b|/\max|b|$ (NaN anywhere gives infinity).
    fn rel_err<'a>(
        a: impl IntoIterator<Item = &'a f32>,
        b: impl IntoIterator<Item = &'a f32>,
    ) -> f64 {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        let mut n = 0usize;
        for (&x, &y) in a.into_iter().zip(b) {
            let (x, y) = (x as f64, y as f64);
            if !x.is_finite() || !y.is_finite() {
                return f64::INFINITY;
            }
            num = num.max((x - y).abs());
            den = den.max(y.abs());
            n += 1;
        }
        assert!(n > 0, "empty comparison");
        num / den.max(f64::MIN_POSITIVE)
    }

    fn check(case: &str, what: &str, e: f64, tol: f64) {
        println!("{case:<44} {what:<16} rel err {e:.2e} (tol {tol:.0e})");
        assert!(
            e <= tol,
            "{case}: {what} relative error {e:.3e} > {tol:.0e}"
        );
    }

    /// The comparison itself: identical inputs pass, a perturbation or a NaN fails.
    #[test]
    fn rel_err_measures_what_the_tolerances_assume() {
        let a = [1.0f32, -2.0, 4.0];
        assert_eq!(rel_err(&a, &a), 0.0);
        let b = [1.0f32, -2.0, 4.004];
        assert!((rel_err(&b, &a) - 1e-3).abs() < 1e-6);
        assert_eq!(rel_err(&[f32::NAN, 0.0, 0.0], &a), f64::INFINITY);
    }
    use ndarray::{Array1, Array2, Array4, ArrayD, Ix2, IxDyn};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::BTreeMap;
    use ufm::nn::cuda::LayerGpu;
    use ufm::nn::data::DatasetName;
    use ufm::nn::layers::conv::ConvInit;
    use ufm::nn::layers::{
        cross_entropy, init, mse_one_hot, BatchNorm, Conv2d, GlobalAvgPool, Linear, LossKind,
        MaxPool2d, Module, Relu, TensorMut,
    };
    use ufm::nn::models::{Arch, ModelConfig, Net};
    use ufm::nn::optim::{Optimizer, OptimizerKind, Schedule};
    use ufm::nn::train::{train_on, Existing, Silent, TrainConfig};
    use ufm::nn::validate::validate_run_on;

    fn layers() -> Option<LayerGpu> {
        let g = common::gpu_or_skip(LayerGpu::new(0))?;
        println!("device: {}", g.name());
        Some(g)
    }

    fn rnd4(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
        let mut r = StdRng::seed_from_u64(seed);
        init::normal::<f32>(&[shape.0, shape.1, shape.2, shape.3], 1.0, &mut r)
            .into_dimensionality()
            .unwrap()
    }
    fn rnd2(shape: (usize, usize), seed: u64) -> Array2<f32> {
        let mut r = StdRng::seed_from_u64(seed);
        init::normal::<f32>(&[shape.0, shape.1], 1.0, &mut r)
            .into_dimensionality()
            .unwrap()
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn conv2d_matches_cpu() {
        let Some(g) = layers() else { return };
        // (n, c_in, c_out, h, k, stride, padding): the ResNet-18 convolutions, odd sizes.
        for (i, &(n, ci, co, h, k, s, p)) in [
            (2, 3, 8, 32, 7, 2, 3),
            (3, 5, 6, 9, 3, 1, 1),
            (2, 4, 7, 8, 3, 2, 1),
            (2, 6, 5, 7, 1, 2, 0),
        ]
        .iter()
        .enumerate()
        {
            let case = format!("conv n={n} {ci}->{co} h={h} k={k} s={s} p={p}");
            let mut rng = StdRng::seed_from_u64(10 + i as u64);
            let mut cpu = Conv2d::<f32>::new(ci, co, k, s, p, ConvInit::TorchDefault, &mut rng);
            let x = rnd4((n, ci, h, h), 20 + i as u64);
            let y = cpu.forward(x.clone());
            let dy = rnd4(y.dim(), 30 + i as u64);
            let dx = cpu.backward(&dy, true).unwrap();
            let w: Array4<f32> = cpu.weight.value.clone().into_dimensionality().unwrap();
            let (gy, gdw, gdx) = g.conv2d(&x, &w, s, p, &dy).unwrap();
            check(&case, "y", rel_err(&gy, &y), 1e-4);
            check(
                &case,
                "dW",
                rel_err(gdw.iter(), cpu.weight.grad.iter()),
                1e-4,
            );
            check(&case, "dx", rel_err(&gdx, &dx), 1e-4);
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn batch_norm_matches_cpu() {
        let Some(g) = layers() else { return };
        for (i, (shape, train)) in [
            (vec![4, 6, 5, 5], true),
            (vec![4, 6, 5, 5], false),
            (vec![9, 7], true),
            (vec![2, 3, 1, 1], true),
        ]
        .into_iter()
        .enumerate()
        {
            let case = format!("batch norm {shape:?} train={train}");
            let c = shape[1];
            let mut r = StdRng::seed_from_u64(40 + i as u64);
            let mut bn = BatchNorm::<f32>::new(c);
            bn.weight.value = init::uniform(&[c], 2.0, &mut r);
            bn.bias.value = init::uniform(&[c], 1.0, &mut r);
            bn.running_mean = init::uniform(&[c], 0.5, &mut r);
            bn.running_var = init::uniform::<f32>(&[c], 0.5, &mut r).mapv(|v| v + 1.0);
            let x: ArrayD<f32> = init::normal::<f32>(&shape, 2.0, &mut r).mapv(|v| v + 0.5);
            let dy: ArrayD<f32> = init::normal(&shape, 1.0, &mut r);
            let before = bn.clone();
            let gpu = g.batch_norm(&before, &x, train, &dy).unwrap();
            let y = bn.forward(x.clone(), train);
            let dx = bn.backward(&dy);
            check(&case, "y", rel_err(&gpu.y, &y), 1e-4);
            check(&case, "dx", rel_err(&gpu.dx, &dx), 1e-4);
            check(
                &case,
                "dgamma",
                rel_err(&gpu.dgamma, bn.weight.grad.iter()),
                1e-4,
            );
            check(
                &case,
                "dbeta",
                rel_err(&gpu.dbeta, bn.bias.grad.iter()),
                1e-4,
            );
            check(
                &case,
                "running mean",
                rel_err(&gpu.running_mean, bn.running_mean.iter()),
                1e-5,
            );
            check(
                &case,
                "running var",
                rel_err(&gpu.running_var, bn.running_var.iter()),
                1e-5,
            );
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn relu_pools_linear_losses_match_cpu() {
        let Some(g) = layers() else { return };
        // ReLU, with exact zeros in the input (zero gradient at 0, as PyTorch).
        let mut x = rnd4((2, 3, 5, 5), 50).into_dyn();
        x[[0, 0, 0, 0]] = 0.0;
        let dy = rnd4((2, 3, 5, 5), 51).into_dyn();
        let mut relu = Relu::<f32, IxDyn>::new();
        let y = relu.forward(x.clone());
        let dx = relu.backward(dy.clone());
        let (gy, gdx) = g.relu(&x, &dy).unwrap();
        check("relu", "y", rel_err(&gy, &y), 0.0);
        check("relu", "dx", rel_err(&gdx, &dx), 0.0);
        // Max pool 3x3/2 pad 1 (the ImageNet stem), odd and even sizes; ties from repeats.
        for (i, h) in [16usize, 7].into_iter().enumerate() {
            let mut x = rnd4((2, 3, h, h), 52 + i as u64);
            x[[0, 0, 1, 1]] = x[[0, 0, 1, 2]];
            let mut mp = MaxPool2d::new(3, 2, 1);
            let y = mp.forward(&x);
            let dy = rnd4(y.dim(), 60 + i as u64);
            let dx = mp.backward(&dy);
            let (gy, gdx) = g.max_pool(&x, (3, 2, 1), &dy).unwrap();
            check(&format!("max pool h={h}"), "y", rel_err(&gy, &y), 0.0);
            check(&format!("max pool h={h}"), "dx", rel_err(&gdx, &dx), 1e-6);
        }
        // Global average pool.
        let x = rnd4((3, 5, 4, 4), 70);
        let mut ap = GlobalAvgPool::new();
        let y = ap.forward(&x);
        let dy = rnd2(y.dim(), 71);
        let dx = ap.backward(&dy);
        let (gy, gdx) = g.avg_pool(&x, &dy).unwrap();
        check("avg pool", "y", rel_err(&gy, &y), 1e-6);
        check("avg pool", "dx", rel_err(&gdx, &dx), 1e-6);
        // Linear with and without bias.
        for bias in [true, false] {
            let case = format!("linear bias={bias}");
            let mut r = StdRng::seed_from_u64(80);
            let mut lin = Linear::<f32>::new(37, 11, bias, &mut r);
            let x = rnd2((6, 37), 81);
            let y = lin.forward(x.clone());
            let dy = rnd2(y.dim(), 82);
            let dx = lin.backward(&dy, true).unwrap();
            let w: Array2<f32> = lin
                .weight
                .value
                .clone()
                .into_dimensionality::<Ix2>()
                .unwrap();
            let b: Option<Array1<f32>> = lin
                .bias
                .as_ref()
                .map(|b| b.value.clone().into_dimensionality().unwrap());
            let (gy, gdw, gdb, gdx) = g.linear(&x, &w, b.as_ref(), &dy).unwrap();
            check(&case, "y", rel_err(&gy, &y), 1e-5);
            check(
                &case,
                "dW",
                rel_err(gdw.iter(), lin.weight.grad.iter()),
                1e-5,
            );
            check(&case, "dx", rel_err(&gdx, &dx), 1e-5);
            if let Some(pb) = &lin.bias {
                check(
                    &case,
                    "db",
                    rel_err(gdb.as_ref().unwrap(), pb.grad.iter()),
                    1e-5,
                );
            }
        }
        // Losses (mean over the batch), K = 10 and K = 40 (more than a warp).
        for k in [10usize, 40] {
            let z = rnd2((13, k), 90 + k as u64).mapv(|v| 3.0 * v);
            let labels: Vec<u32> = (0..13).map(|i| ((i * 7) % k) as u32).collect();
            for (name, kind) in [("ce", LossKind::CrossEntropy), ("mse", LossKind::Mse)] {
                let (l, dz) = match kind {
                    LossKind::CrossEntropy => cross_entropy(&z, &labels).unwrap(),
                    LossKind::Mse => mse_one_hot(&z, &labels).unwrap(),
                };
                let (gl, gdz) = g.loss(kind, &z, &labels).unwrap();
                let case = format!("loss {name} K={k}");
                check(&case, "value", ((gl - l) / l).abs(), 1e-12);
                check(&case, "dz", rel_err(&gdz, &dz), 1e-6);
            }
        }
    }

    /// The PyTorch fixtures of `tests/nn_torch_parity.rs` (written by
    /// `scripts/make_torch_fixtures.py`, float64 references) on the GPU layers, f32 tolerance
    /// 1e-4 relative to the largest reference entry, as the CPU layers must meet.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_layers_match_the_pytorch_fixtures() {
        use ndarray_npy::NpzReader;
        let Some(g) = layers() else { return };
        let dir = {
            let d = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
            if d.is_dir() {
                d
            } else {
                std::path::PathBuf::from("tests/fixtures") // a copy of the tree on a GPU machine
            }
        };
        let open = |name: &str| {
            let p = dir.join(format!("{name}.npz"));
            NpzReader::new(
                std::fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )
            .unwrap()
        };
        fn get(f: &mut NpzReader<std::fs::File>, k: &str) -> ArrayD<f64> {
            f.by_name(&format!("{k}.npy"))
                .or_else(|_| f.by_name(k))
                .unwrap_or_else(|e| panic!("{k}: {e}"))
        }
        let f32s = |a: &ArrayD<f64>| a.mapv(|v| v as f32);
        let cmp = |what: &str, a: &[f32], b: &ArrayD<f64>| {
            let b: Vec<f32> = b.iter().map(|&v| v as f32).collect();
            assert_eq!(a.len(), b.len(), "{what}: size");
            // the reference is f64; rounding it to f32 costs < 1e-7 relative
            check("pytorch fixture", what, rel_err(a, &b), 1e-4);
        };
        let mut f = open("linear");
        let x: Array2<f32> = f32s(&get(&mut f, "x")).into_dimensionality().unwrap();
        let w: Array2<f32> = f32s(&get(&mut f, "w")).into_dimensionality().unwrap();
        let b: Array1<f32> = f32s(&get(&mut f, "b")).into_dimensionality().unwrap();
        let dy: Array2<f32> = f32s(&get(&mut f, "dy")).into_dimensionality().unwrap();
        let (y, dw, db, dx) = g.linear(&x, &w, Some(&b), &dy).unwrap();
        cmp("linear y", y.as_slice().unwrap(), &get(&mut f, "y"));
        cmp("linear dx", dx.as_slice().unwrap(), &get(&mut f, "dx"));
        cmp("linear dw", dw.as_slice().unwrap(), &get(&mut f, "dw"));
        cmp(
            "linear db",
            db.unwrap().as_slice().unwrap(),
            &get(&mut f, "db"),
        );
        for (k, s, p) in [(3, 1, 1), (3, 2, 1), (7, 2, 3), (1, 2, 0)] {
            let mut f = open(&format!("conv_k{k}_s{s}_p{p}"));
            let x: Array4<f32> = f32s(&get(&mut f, "x")).into_dimensionality().unwrap();
            let w: Array4<f32> = f32s(&get(&mut f, "w")).into_dimensionality().unwrap();
            let dy: Array4<f32> = f32s(&get(&mut f, "dy")).into_dimensionality().unwrap();
            let (y, dw, dx) = g.conv2d(&x, &w, s, p, &dy).unwrap();
            cmp(
                &format!("conv k{k} s{s} y"),
                y.as_slice().unwrap(),
                &get(&mut f, "y"),
            );
            cmp(
                &format!("conv k{k} s{s} dx"),
                dx.as_slice().unwrap(),
                &get(&mut f, "dx"),
            );
            cmp(
                &format!("conv k{k} s{s} dw"),
                dw.as_slice().unwrap(),
                &get(&mut f, "dw"),
            );
        }
        for name in ["bn2d", "bn1d"] {
            let mut f = open(name);
            let mut bn = BatchNorm::<f32>::new(3);
            bn.weight.value = f32s(&get(&mut f, "gamma"));
            bn.bias.value = f32s(&get(&mut f, "beta"));
            let (x, dy) = (f32s(&get(&mut f, "x")), f32s(&get(&mut f, "dy")));
            let tr = g.batch_norm(&bn, &x, true, &dy).unwrap();
            cmp(
                &format!("{name} y"),
                tr.y.as_slice().unwrap(),
                &get(&mut f, "y"),
            );
            cmp(
                &format!("{name} dx"),
                tr.dx.as_slice().unwrap(),
                &get(&mut f, "dx"),
            );
            cmp(
                &format!("{name} running_mean"),
                &tr.running_mean,
                &get(&mut f, "running_mean"),
            );
            cmp(
                &format!("{name} running_var"),
                &tr.running_var,
                &get(&mut f, "running_var"),
            );
            // then eval mode with the updated running statistics; PyTorch's parameter
            // gradients accumulate over both calls
            bn.running_mean = ArrayD::from_shape_vec(IxDyn(&[3]), tr.running_mean.clone()).unwrap();
            bn.running_var = ArrayD::from_shape_vec(IxDyn(&[3]), tr.running_var.clone()).unwrap();
            let ev = g.batch_norm(&bn, &x, false, &dy).unwrap();
            cmp(
                &format!("{name} y eval"),
                ev.y.as_slice().unwrap(),
                &get(&mut f, "y_eval"),
            );
            cmp(
                &format!("{name} dx eval"),
                ev.dx.as_slice().unwrap(),
                &get(&mut f, "dx_eval"),
            );
            let dg: Vec<f32> = tr
                .dgamma
                .iter()
                .zip(&ev.dgamma)
                .map(|(a, b)| a + b)
                .collect();
            let dbt: Vec<f32> = tr.dbeta.iter().zip(&ev.dbeta).map(|(a, b)| a + b).collect();
            cmp(&format!("{name} dgamma"), &dg, &get(&mut f, "dgamma"));
            cmp(&format!("{name} dbeta"), &dbt, &get(&mut f, "dbeta"));
        }
        let mut f = open("maxpool");
        let x: Array4<f32> = f32s(&get(&mut f, "x")).into_dimensionality().unwrap();
        let dy: Array4<f32> = f32s(&get(&mut f, "dy")).into_dimensionality().unwrap();
        let (y, dx) = g.max_pool(&x, (3, 2, 1), &dy).unwrap();
        cmp("maxpool y", y.as_slice().unwrap(), &get(&mut f, "y"));
        cmp("maxpool dx", dx.as_slice().unwrap(), &get(&mut f, "dx"));
        for (name, kind) in [
            ("cross_entropy", LossKind::CrossEntropy),
            ("mse", LossKind::Mse),
        ] {
            let mut f = open(name);
            let z: Array2<f32> = f32s(&get(&mut f, "z")).into_dimensionality().unwrap();
            let labels: Vec<u32> = get(&mut f, "labels").iter().map(|&v| v as u32).collect();
            let (l, dz) = g.loss(kind, &z, &labels).unwrap();
            cmp(&format!("{name} loss"), &[l as f32], &get(&mut f, "loss"));
            cmp(
                &format!("{name} dz"),
                dz.as_slice().unwrap(),
                &get(&mut f, "dz"),
            );
        }
    }

    /// Every parameter, buffer and counter of a network by name.
    fn state(net: &mut Net<f32>) -> BTreeMap<String, (Vec<f32>, bool)> {
        let mut m = BTreeMap::new();
        net.visit("", &mut |name, t| {
            let v = match t {
                TensorMut::Param(p) => (p.value.iter().copied().collect(), p.trainable),
                TensorMut::Buffer(b) => (b.iter().copied().collect(), false),
                TensorMut::Count(c) => (vec![*c as f32], false),
            };
            m.insert(name.to_string(), v);
        });
        m
    }

    fn model(
        arch: Arch,
        width: usize,
        sota: bool,
        fixdim: usize,
        etf: bool,
        bias: bool,
    ) -> ModelConfig {
        ModelConfig {
            arch,
            width,
            depth: 2,
            n_classes: 10,
            bias,
            etf_classifier: etf,
            fixdim,
            sota,
        }
    }

    /// One training step of each model variant: logits, loss, and the update of every
    /// tensor (parameters, running statistics, counters) agree with the CPU step.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn one_training_step_of_every_model_matches_cpu() {
        let Some(g) = layers() else { return };
        let cases: Vec<(&str, ModelConfig, OptimizerKind, LossKind)> = vec![
            (
                "mlp sgd ce",
                model(Arch::Mlp, 64, false, 0, false, true),
                OptimizerKind::Sgd,
                LossKind::CrossEntropy,
            ),
            (
                "mlp adam mse",
                model(Arch::Mlp, 64, false, 0, false, true),
                OptimizerKind::Adam,
                LossKind::Mse,
            ),
            (
                "resnet18 imagenet stem sgd",
                model(Arch::Resnet18, 0, false, 0, false, true),
                OptimizerKind::Sgd,
                LossKind::CrossEntropy,
            ),
            (
                "resnet18 cifar stem adam",
                model(Arch::Resnet18, 0, true, 0, false, true),
                OptimizerKind::Adam,
                LossKind::CrossEntropy,
            ),
            (
                "resnet18 fixdim 10 etf",
                model(Arch::Resnet18, 0, false, 10, true, true),
                OptimizerKind::Sgd,
                LossKind::CrossEntropy,
            ),
            (
                "resnet18 no bias mse",
                model(Arch::Resnet18, 0, false, 0, false, false),
                OptimizerKind::Sgd,
                LossKind::Mse,
            ),
            (
                "resnet18-adapt width 8",
                model(Arch::Resnet18Adapt, 8, false, 0, false, true),
                OptimizerKind::Sgd,
                LossKind::CrossEntropy,
            ),
        ];
        for (i, (case, cfg, kind, loss)) in cases.into_iter().enumerate() {
            let mut cpu = Net::<f32>::new(&cfg, 100 + i as u64).unwrap();
            let mut dev = cpu.clone();
            let before = state(&mut cpu);
            let x = rnd4((6, 3, 32, 32), 200 + i as u64);
            let y: Vec<u32> = (0..6).map(|j| ((j * 3 + i) % 10) as u32).collect();
            let mut ocpu = Optimizer::<f32>::new(kind, 5e-4).unwrap();
            let mut odev = Optimizer::<f32>::new(kind, 5e-4).unwrap();
            let lr = 0.05;
            // Two steps, so that momentum / Adam state carried between steps is exercised.
            for step in 0..2 {
                cpu.zero_grad();
                let out = cpu.forward(x.clone(), true).unwrap();
                let (l, dz) = loss.eval(&out.logits, &y).unwrap();
                cpu.backward(&dz, None);
                ocpu.step(&mut cpu, lr);
                let (gl, glogits) = g
                    .train_step(&cfg, &mut dev, &mut odev, &x, &y, loss, lr)
                    .unwrap();
                let c = format!("{case} step {}", step + 1);
                check(&c, "loss", ((gl - l) / l).abs(), 1e-4);
                check(&c, "logits", rel_err(&glogits, &out.logits), 1e-3);
            }
            assert_eq!(ocpu.steps, odev.steps);
            let (sc, sd) = (state(&mut cpu), state(&mut dev));
            assert_eq!(sc.keys().collect::<Vec<_>>(), sd.keys().collect::<Vec<_>>());
            let mut worst = (0.0f64, String::new());
            for (name, (v0, trainable)) in &before {
                let dc: Vec<f32> = sc[name].0.iter().zip(v0).map(|(a, b)| a - b).collect();
                let dd: Vec<f32> = sd[name].0.iter().zip(v0).map(|(a, b)| a - b).collect();
                if dc.iter().all(|&v| v == 0.0) {
                    // frozen (ETF classifier) or unchanged: the GPU must not move it either
                    assert!(
                        dd.iter().all(|&v| v == 0.0),
                        "{case}: {name} moved on the GPU only"
                    );
                    continue;
                }
                let e = rel_err(&dd, &dc);
                if e > worst.0 {
                    worst = (e, name.clone());
                }
                let _ = trainable;
            }
            check(case, &format!("update {}", worst.1), worst.0, 1e-3);
            // optimizer state round trip: same names and values
            let (a, b): (BTreeMap<_, _>, BTreeMap<_, _>) = (
                ocpu.state().into_iter().collect(),
                odev.state().into_iter().collect(),
            );
            assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
            for (k, v) in &a {
                assert_eq!(v.shape(), b[k].shape(), "{case}: {k}");
                check(
                    case,
                    "optimizer state",
                    rel_err(b[k].iter(), v.iter()),
                    1e-3,
                );
            }
        }
    }

    fn train_cfg(
        data_dir: &std::path::Path,
        dataset: DatasetName,
        model: ModelConfig,
        per_class: usize,
        batch: usize,
        epochs: usize,
    ) -> TrainConfig {
        TrainConfig {
            dataset,
            data_dir: data_dir.to_path_buf(),
            model,
            optimizer: OptimizerKind::Sgd,
            lr: 0.05,
            batch_size: batch,
            epochs,
            weight_decay: 5e-4,
            schedule: Schedule::Constant,
            seed: 6,
            history_size: 10,
            sample_size: Some(per_class),
            loss: LossKind::CrossEntropy,
            sep_decay: false,
            feature_decay_rate: 1e-4,
            sota: false,
            label_file: None,
        }
    }

    /// The same short run on the CPU and the GPU (same seed, batches, augmentation):
    /// per-epoch losses and accuracies, and the NC metrics of `validate` on each device.
    #[test]
    #[ignore = "needs a CUDA GPU and the real data (UFM_DATA_DIR or ../shared/data)"]
    fn short_training_runs_on_real_data_match_cpu() {
        let Some(dev) =
            common::gpu_or_skip(NnDevice::select(Device::Cuda, Some(OptimizerKind::Sgd)))
        else {
            return;
        };
        let data_dir = common::real_data_dir();
        let mut sota = train_cfg(
            &data_dir,
            DatasetName::Cifar10,
            model(Arch::Resnet18Adapt, 4, false, 0, false, true),
            20,
            32,
            2,
        );
        sota.sota = true; // crop + flip augmentation drawn in the loader thread
        sota.sep_decay = true; // feature decay and classifier decay on the GPU
        let runs = [
            (
                "mlp mnist",
                train_cfg(
                    &data_dir,
                    DatasetName::Mnist,
                    model(Arch::Mlp, 64, false, 0, false, true),
                    50,
                    64,
                    2,
                ),
            ),
            (
                "resnet18 cifar10",
                train_cfg(
                    &data_dir,
                    DatasetName::Cifar10,
                    model(Arch::Resnet18, 0, false, 0, false, true),
                    20,
                    32,
                    2,
                ),
            ),
            ("resnet18-adapt cifar10 --sota --sep-decay", sota),
        ];
        for (case, cfg) in runs {
            let tmp = tempfile::tempdir().unwrap();
            let (a, b) = (tmp.path().join("cpu"), tmp.path().join("gpu"));
            let lc = train_on(&cfg, &a, Existing::Refuse, &mut Silent, &NnDevice::cpu()).unwrap();
            let lg = train_on(&cfg, &b, Existing::Refuse, &mut Silent, &dev).unwrap();
            assert_eq!(lc.len(), lg.len());
            for (c, d) in lc.iter().zip(&lg) {
                println!(
                    "{case} epoch {}: loss cpu {:.6} gpu {:.6}, top1 cpu {:.2} gpu {:.2}",
                    c.epoch, c.loss, d.loss, c.top1, d.top1
                );
                check(
                    case,
                    &format!("epoch {} loss", c.epoch),
                    ((d.loss - c.loss) / c.loss).abs(),
                    1e-3,
                );
                assert!(
                    (d.top1 - c.top1).abs() <= 2.0,
                    "{case}: top1 {} vs {}",
                    d.top1,
                    c.top1
                );
            }
            let vc = validate_run_on(&a, None, 100, &NnDevice::cpu(), |_| {}).unwrap();
            let vg = validate_run_on(&b, None, 100, &dev, |_| {}).unwrap();
            for (c, d) in vc.iter().zip(&vg) {
                for (what, x, y) in [
                    ("nc1", c.nc1, d.nc1),
                    ("nc2", c.nc2, d.nc2),
                    ("nc3", c.nc3, d.nc3),
                ] {
                    check(
                        case,
                        &format!("epoch {} {what}", c.epoch),
                        ((y - x) / x).abs(),
                        1e-2,
                    );
                }
                assert!((c.test_acc1 - d.test_acc1).abs() <= 2.0, "{case}: test acc");
            }
        }
    }
}

fn gpu_usable() -> bool {
    NnDevice::select(Device::Cuda, None).is_ok()
}

fn train_args(data: &std::path::Path, out: &std::path::Path, uid: &str) -> Vec<String> {
    [
        "train",
        "--dataset",
        "mnist",
        "--model",
        "mlp",
        "--width",
        "16",
        "--depth",
        "1",
        "--epochs",
        "1",
        "--sample-size",
        "10",
        "--batch-size",
        "32",
        "--uid",
        uid,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--data-dir".to_string(),
        data.display().to_string(),
        "--out-dir".to_string(),
        out.display().to_string(),
    ])
    .collect()
}

/// `ufm train --device cuda` without a GPU is a clear error (exit 1, nothing written);
/// `--device auto` trains on the CPU with one note on stderr (on a synthetic MNIST).
#[test]
fn cli_train_device_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::synthetic_mnist(&tmp.path().join("data"), 10, 2, 5);
    let usable = gpu_usable();
    let out = Command::cargo_bin("ufm")
        .unwrap()
        .args(train_args(&data, tmp.path(), "a"))
        .args(["--device", "cuda"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if usable {
        assert!(out.status.success(), "{err}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("Error: CUDA is not available"), "{err}");
        assert!(!tmp.path().join("a").exists(), "no run directory on error");
    }
    let out = Command::cargo_bin("ufm")
        .unwrap()
        .args(train_args(&data, tmp.path(), "b"))
        .args(["--device", "auto"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(tmp.path().join("b").join("epoch_001.safetensors").is_file());
    if !usable {
        assert_eq!(err.matches("running on the CPU").count(), 1, "{err}");
        // validate accepts the flag the same way
        let run = tmp.path().join("b");
        let out = Command::cargo_bin("ufm")
            .unwrap()
            .args(["validate", "--run"])
            .arg(&run)
            .args(["--device", "cuda"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let out = Command::cargo_bin("ufm")
            .unwrap()
            .args(["validate", "--run"])
            .arg(&run)
            .args(["--device", "auto"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.matches("running on the CPU").count(), 1, "{err}");
    }
    // L-BFGS has no GPU version: an error under cuda, the CPU under auto.
    let lb = NnDevice::select(Device::Cuda, Some(ufm::nn::optim::OptimizerKind::Lbfgs));
    assert!(lb.is_err());
    let auto = NnDevice::select(Device::Auto, Some(ufm::nn::optim::OptimizerKind::Lbfgs)).unwrap();
    assert!(auto.is_cpu() && auto.fallback().is_some());
}
