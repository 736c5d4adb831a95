//! Parity with PyTorch 2.x (CPU, float64) on fixtures written by
//! `scripts/make_torch_fixtures.py`: every layer's output and gradients, and a torchvision-layout
//! ResNet-18 forward/backward on 2 images.
//!
//! **Relative error** means, per tensor, $\max_i|a_i-b_i|\,/\,\max_i|b_i|$ (the
//! $\ell_\infty$ error relative to the largest reference entry, so near-zero entries of a tensor
//! do not blow it up). For the gradient of every ResNet parameter tensor the fixture keeps two
//! summaries, compared as $|\,\|g\|-\|g_{\rm ref}\|\,|/\|g_{\rm ref}\|$ and
//! $|\langle g-g_{\rm ref},p\rangle|/\|g_{\rm ref}\|$ with the probe $p_j=\cos(0.3j)$.
//!
//! Tolerances: 1e-9 in f64 and 1e-4 in f32 (the target) for every layer, and for the
//! ResNet-18 at 64×64 (`resnet18_64`, every quantity, plus the full gradients of all 1-D
//! parameters). At the original's 32×32 (`resnet18`) layer4 runs at 1×1, so its batch norm
//! normalises over 2 samples and is ill-conditioned: PyTorch's own float32 lands 3e-4 (features)
//! to 1e-2 (stem gradient) from its float64; there the f32 check only asks for
//! max(1e-4, 4 × PyTorch's own float32 error) per quantity (the fixture stores that error),
//! while the f64 check holds 1e-9.

use ndarray::{Array2, Array4, ArrayD, Ix2, Ix4, IxDyn};
use ndarray_npy::NpzReader;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::PathBuf;
use ufm::nn::layers::conv::ConvInit;
use ufm::nn::layers::{
    cross_entropy, mse_one_hot, BatchNorm, Conv2d, Linear, MaxPool2d, Module, TensorMut,
};
use ufm::nn::models::{Arch, ModelConfig, Net};
use ufm::Real;

struct Fx(NpzReader<std::fs::File>);

impl Fx {
    fn open(name: &str) -> Fx {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{name}.npz"));
        Fx(NpzReader::new(
            std::fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap())
    }
    fn get(&mut self, k: &str) -> ArrayD<f64> {
        self.0
            .by_name(&format!("{k}.npy"))
            .or_else(|_| self.0.by_name(k))
            .unwrap_or_else(|e| panic!("{k}: {e}"))
    }
    fn get_t<T: Real>(&mut self, k: &str) -> ArrayD<T> {
        self.get(k).mapv(T::of)
    }
}

/// max |a - b| / max |b| (0-safe).
fn rel<T: Real>(a: &ArrayD<T>, b: &ArrayD<f64>, what: &str, tol: f64) {
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x.to_f64_() - y).abs()));
    eprintln!("{what}: relative error {:.2e}", err / scale);
    assert!(
        err / scale < tol,
        "{what} ({}): relative error {:.3e} > {tol:e}",
        T::NAME,
        err / scale
    );
}

fn tol<T: Real>() -> f64 {
    if T::NAME == "f64" {
        1e-9
    } else {
        1e-4
    }
}

fn labels(a: &ArrayD<f64>) -> Vec<u32> {
    a.iter().map(|&v| v as u32).collect()
}

fn layers_match<T: Real>() {
    let t = tol::<T>();
    let mut rng = StdRng::seed_from_u64(0);
    // linear
    let mut f = Fx::open("linear");
    let mut lin = Linear::<T>::new(5, 3, true, &mut rng);
    lin.weight.value = f.get_t("w");
    lin.bias.as_mut().unwrap().value = f.get_t("b");
    let y = lin.forward(f.get_t::<T>("x").into_dimensionality::<Ix2>().unwrap());
    rel(&y.into_dyn(), &f.get("y"), "linear y", t);
    let dx = lin
        .backward(
            &f.get_t::<T>("dy").into_dimensionality::<Ix2>().unwrap(),
            true,
        )
        .unwrap();
    rel(&dx.into_dyn(), &f.get("dx"), "linear dx", t);
    rel(&lin.weight.grad, &f.get("dw"), "linear dw", t);
    rel(
        &lin.bias.as_ref().unwrap().grad,
        &f.get("db"),
        "linear db",
        t,
    );
    // conv
    for (k, s, p) in [(3, 1, 1), (3, 2, 1), (7, 2, 3), (1, 2, 0)] {
        let mut f = Fx::open(&format!("conv_k{k}_s{s}_p{p}"));
        let mut conv = Conv2d::<T>::new(3, 4, k, s, p, ConvInit::TorchDefault, &mut rng);
        conv.weight.value = f.get_t("w");
        let y = conv.forward(f.get_t::<T>("x").into_dimensionality::<Ix4>().unwrap());
        rel(&y.into_dyn(), &f.get("y"), &format!("conv k{k} s{s} y"), t);
        let dx = conv
            .backward(
                &f.get_t::<T>("dy").into_dimensionality::<Ix4>().unwrap(),
                true,
            )
            .unwrap();
        rel(
            &dx.into_dyn(),
            &f.get("dx"),
            &format!("conv k{k} s{s} dx"),
            t,
        );
        rel(
            &conv.weight.grad,
            &f.get("dw"),
            &format!("conv k{k} s{s} dw"),
            t,
        );
    }
    // batch norm: train step, then eval step (parameter gradients accumulate over both)
    for name in ["bn2d", "bn1d"] {
        let mut f = Fx::open(name);
        let mut bn = BatchNorm::<T>::new(3);
        bn.weight.value = f.get_t("gamma");
        bn.bias.value = f.get_t("beta");
        let x = f.get_t::<T>("x");
        let dy = f.get_t::<T>("dy");
        let y = bn.forward(x.clone(), true);
        rel(&y, &f.get("y"), &format!("{name} y"), t);
        rel(&bn.backward(&dy), &f.get("dx"), &format!("{name} dx"), t);
        rel(
            &bn.running_mean,
            &f.get("running_mean"),
            &format!("{name} running_mean"),
            t,
        );
        rel(
            &bn.running_var,
            &f.get("running_var"),
            &format!("{name} running_var"),
            t,
        );
        let ye = bn.forward(x, false);
        rel(&ye, &f.get("y_eval"), &format!("{name} y eval"), t);
        rel(
            &bn.backward(&dy),
            &f.get("dx_eval"),
            &format!("{name} dx eval"),
            t,
        );
        rel(
            &bn.weight.grad,
            &f.get("dgamma"),
            &format!("{name} dgamma"),
            t,
        );
        rel(&bn.bias.grad, &f.get("dbeta"), &format!("{name} dbeta"), t);
    }
    // max pool
    let mut f = Fx::open("maxpool");
    let mut mp = MaxPool2d::new(3, 2, 1);
    let y = mp.forward(&f.get_t::<T>("x").into_dimensionality::<Ix4>().unwrap());
    rel(&y.into_dyn(), &f.get("y"), "maxpool y", t);
    let dx = mp.backward(&f.get_t::<T>("dy").into_dimensionality::<Ix4>().unwrap());
    rel(&dx.into_dyn(), &f.get("dx"), "maxpool dx", t);
    // losses
    for (name, mse) in [("cross_entropy", false), ("mse", true)] {
        let mut f = Fx::open(name);
        let z: Array2<T> = f.get_t::<T>("z").into_dimensionality().unwrap();
        let y = labels(&f.get("labels"));
        let (l, g) = if mse {
            mse_one_hot(&z, &y).unwrap()
        } else {
            cross_entropy(&z, &y).unwrap()
        };
        let lref = f.get("loss");
        rel(
            &ArrayD::from_elem(IxDyn(&[]), l),
            &lref,
            &format!("{name} loss"),
            t,
        );
        rel(&g.into_dyn(), &f.get("dz"), &format!("{name} dz"), t);
    }
}

#[test]
fn layers_match_pytorch_f64() {
    layers_match::<f64>();
}

#[test]
fn layers_match_pytorch_f32() {
    layers_match::<f32>();
}

fn name_hash(n: &str) -> u32 {
    n.bytes().map(|b| b as u32).sum::<u32>() % 997
}

/// The closed-form weights of the fixture script (`det_value`).
fn det_value(name: &str, shape: &[usize]) -> ArrayD<f64> {
    let h = name_hash(name) as f64;
    let amp_lin = |j: usize| (0.7 * j as f64 + 0.013 * h).sin();
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|j| {
            let s = amp_lin(j);
            match shape.len() {
                4 => 2f64.sqrt() * (2.0 / (shape[0] * shape[2] * shape[3]) as f64).sqrt() * s,
                2 => s / (shape[1] as f64).sqrt(),
                _ if name.ends_with("weight") => 1.0 + 0.1 * s,
                _ => 0.1 * s,
            }
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// `strict`: f32 tolerance 1e-4 on everything (the 64×64 fixture, whose input is rebuilt from
/// its formula); otherwise max(1e-4, 4 × PyTorch's own float32 error) in f32.
fn resnet18_matches<T: Real>(fixture: &str, res: usize, strict: bool) {
    let mut f = Fx::open(fixture);
    if strict {
        // the fixture is only a fair 1e-4 test if PyTorch's own float32 meets it comfortably
        for q in [
            "features",
            "logits",
            "grad_conv1",
            "grad_summaries",
            "grad_vectors",
        ] {
            let e = f
                .get(&format!("f32_err_{q}"))
                .iter()
                .next()
                .copied()
                .unwrap();
            assert!(
                e < 2e-5,
                "{fixture}: PyTorch's own f32 error on {q} is {e:e}"
            );
        }
    }
    let mut tq = |q: &str| {
        if T::NAME == "f64" {
            1e-9
        } else if strict {
            1e-4
        } else {
            f.get(&format!("f32_err_{q}"))
                .iter()
                .next()
                .copied()
                .unwrap()
                .mul_add(4.0, 0.0)
                .max(1e-4)
        }
    };
    let (t_feat, t_logit, t_loss, t_c1, t_fcw, t_fcb, t_sum, t_rv) = (
        tq("features"),
        tq("logits"),
        tq("loss"),
        tq("grad_conv1"),
        tq("grad_fc_weight"),
        tq("grad_fc_bias"),
        tq("grad_summaries"),
        tq("running_var"),
    );
    let cfg = ModelConfig {
        arch: Arch::Resnet18,
        width: 0,
        depth: 0,
        n_classes: 10,
        bias: true,
        etf_classifier: false,
        fixdim: 0,
        sota: false,
    };
    let mut net: Net<T> = Net::new(&cfg, 0).unwrap();
    let mut names = vec![];
    net.visit("", &mut |n, tm| {
        if let TensorMut::Param(p) = tm {
            p.value = det_value(n, p.value.shape()).mapv(T::of);
            names.push(n.to_string());
        }
    });
    let want = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet18_param_names.txt"),
    )
    .unwrap();
    assert_eq!(
        names,
        want.lines().collect::<Vec<_>>(),
        "parameter names and order = torchvision's"
    );
    let x: Array4<T> = if strict {
        // x = 1.5 sin(0.05 j) over the flattened (2, 3, res, res) batch, as the script builds it
        Array4::from_shape_fn((2, 3, res, res), |(n, c, i, k)| {
            let j = ((n * 3 + c) * res + i) * res + k;
            T::of(1.5 * (0.05 * j as f64).sin())
        })
    } else {
        f.get_t::<T>("x").into_dimensionality().unwrap()
    };
    assert_eq!(x.shape(), &[2, 3, res, res]);
    let y = labels(&f.get("labels"));
    let out = net.forward(x, true).unwrap();
    rel(
        &out.features.clone().into_dyn(),
        &f.get("features"),
        &format!("{fixture} features [{}]", T::NAME),
        t_feat,
    );
    rel(
        &out.logits.clone().into_dyn(),
        &f.get("logits"),
        &format!("{fixture} logits [{}]", T::NAME),
        t_logit,
    );
    let (l, g) = cross_entropy(&out.logits, &y).unwrap();
    rel(
        &ArrayD::from_elem(IxDyn(&[]), l),
        &f.get("loss"),
        &format!("{fixture} loss [{}]", T::NAME),
        t_loss,
    );
    net.zero_grad();
    net.backward(&g, None);
    let (norms, dots) = (f.get("grad_norms"), f.get("grad_dots"));
    let mut i = 0;
    let (mut mine_n, mut mine_d) = (vec![], vec![]);
    let mut rm = None;
    let mut vectors: Vec<f64> = vec![];
    net.visit("", &mut |n, tm| match tm {
        TensorMut::Param(p) => {
            if p.grad.ndim() == 1 {
                vectors.extend(p.grad.iter().map(|v| v.to_f64_()));
            }
            let gv: Vec<f64> = p.grad.iter().map(|v| v.to_f64_()).collect();
            mine_n.push(gv.iter().map(|v| v * v).sum::<f64>().sqrt());
            mine_d.push(
                gv.iter()
                    .enumerate()
                    .map(|(j, v)| v * (0.3 * j as f64).cos())
                    .sum::<f64>(),
            );
            if n == "conv1.weight" {
                rel(
                    &p.grad,
                    &f.get("grad_conv1"),
                    &format!("{fixture} grad conv1 [{}]", T::NAME),
                    t_c1,
                );
            }
            if n == "fc.weight" {
                rel(
                    &p.grad,
                    &f.get("grad_fc_weight"),
                    &format!("{fixture} grad fc.weight [{}]", T::NAME),
                    t_fcw,
                );
            }
            if n == "fc.bias" {
                rel(
                    &p.grad,
                    &f.get("grad_fc_bias"),
                    &format!("{fixture} grad fc.bias [{}]", T::NAME),
                    t_fcb,
                );
            }
            i += 1;
        }
        TensorMut::Buffer(b) if n == "layer4.1.bn2.running_var" => rm = Some(b.clone()),
        _ => {}
    });
    assert_eq!(i, norms.len());
    let mut worst_summary = 0.0f64;
    for (k, name) in names.iter().enumerate() {
        let tol_k = if T::NAME == "f64" { 1e-8 } else { t_sum };
        let en = (mine_n[k] - norms[k]).abs() / norms[k].abs().max(1e-12);
        assert!(
            en < tol_k,
            "grad norm of {name}: {} vs {} ({})",
            mine_n[k],
            norms[k],
            T::NAME
        );
        let ed = (mine_d[k] - dots[k]).abs() / norms[k].abs().max(1e-12);
        worst_summary = worst_summary.max(en).max(ed);
        assert!(
            ed < tol_k,
            "grad probe of {name}: {} vs {} ({})",
            mine_d[k],
            dots[k],
            T::NAME
        );
    }
    eprintln!(
        "{fixture} gradient summaries ({}): worst {worst_summary:.2e}",
        T::NAME
    );
    rel(
        &rm.unwrap(),
        &f.get("running_var_l4"),
        &format!("{fixture} running_var [{}]", T::NAME),
        t_rv,
    );
    if strict {
        let t_vec = if T::NAME == "f64" { 1e-9 } else { 1e-4 };
        rel(
            &ArrayD::from_shape_vec(IxDyn(&[vectors.len()]), vectors).unwrap(),
            &f.get("grad_vectors"),
            &format!("{fixture} gradients of all 1-D parameters [{}]", T::NAME),
            t_vec,
        );
    }
}

#[test]
fn resnet18_forward_backward_matches_pytorch_f64() {
    resnet18_matches::<f64>("resnet18", 32, false);
}

#[test]
fn resnet18_forward_backward_matches_pytorch_f32() {
    resnet18_matches::<f32>("resnet18", 32, false);
}

/// The target: 2 images, every quantity within 1e-4 relative in f32 (64×64 input, so
/// layer4's batch norm sees 2×2×2 values per channel).
#[test]
fn resnet18_64_forward_backward_matches_pytorch_f32_1e4() {
    resnet18_matches::<f32>("resnet18_64", 64, true);
}

#[test]
fn resnet18_64_forward_backward_matches_pytorch_f64() {
    resnet18_matches::<f64>("resnet18_64", 64, true);
}

/// Three steps of SGD (momentum 0.9, coupled weight decay) and Adam (coupled weight decay) on
/// a linear classifier land where `torch.optim` lands.
#[test]
fn optimizers_match_torch_optim() {
    use ufm::nn::optim::{Optimizer, OptimizerKind};
    for (name, kind, lr) in [
        ("sgd", OptimizerKind::Sgd, 0.1),
        ("adam", OptimizerKind::Adam, 0.01),
    ] {
        let mut f = Fx::open(&format!("optim_{name}"));
        let mut lin = Linear::<f64>::new(4, 3, true, &mut StdRng::seed_from_u64(0));
        lin.weight.value = f.get("w0");
        lin.bias.as_mut().unwrap().value = f.get("b0");
        let xs = f.get("xs");
        let ys = f.get("ys");
        let mut opt = Optimizer::<f64>::new(kind, 5e-2).unwrap();
        for t in 0..3 {
            lin.zero_grad();
            let x = xs
                .index_axis(ndarray::Axis(0), t)
                .to_owned()
                .into_dimensionality::<Ix2>()
                .unwrap();
            let y: Vec<u32> = ys
                .index_axis(ndarray::Axis(0), t)
                .iter()
                .map(|&v| v as u32)
                .collect();
            let z = lin.forward(x);
            let (_, g) = cross_entropy(&z, &y).unwrap();
            lin.backward(&g, false);
            opt.step(&mut lin, lr);
        }
        rel(
            &lin.weight.value,
            &f.get("w"),
            &format!("{name} weight"),
            1e-12,
        );
        rel(
            &lin.bias.as_ref().unwrap().value,
            &f.get("b"),
            &format!("{name} bias"),
            1e-12,
        );
    }
}

/// `nn::optim::Lbfgs` against `torch.optim.LBFGS(history_size=5, line_search_fn="strong_wolfe")`
/// (max_iter 20) over 3 batches of a linear classifier with the original's closure
/// CE + wd/2‖θ‖²: the curvature history persists across the 3 `step()` calls, and after each
/// step the parameters match to 1e-10 (relative to the largest entry) and the counters
/// `n_iter` / `func_evals` match exactly. Run with lr 1 (PyTorch's default; every step runs
/// its 20 iterations) and lr 0.1 (the original's; steps end on the evaluation limit). The
/// fixture also holds PyTorch's own sensitivity (its spread under a 1e-14 relative change of
/// the initial weights: up to 2e-11 after step 3), the floor for any agreement. Saving the
/// state after step 1 and restoring it into a fresh optimizer gives bit-identical steps 2 and 3.
#[test]
fn lbfgs_matches_torch_optim_lbfgs_across_batches() {
    use ufm::nn::optim::Lbfgs;
    for name in ["lbfgs", "lbfgs_lr01"] {
        let mut f = Fx::open(name);
        let scalar = |f: &mut Fx, k: &str| f.get(k).iter().next().copied().unwrap();
        let (wd, lr) = (scalar(&mut f, "wd"), scalar(&mut f, "lr"));
        let max_iter = scalar(&mut f, "max_iter") as usize;
        let (xs, ys) = (f.get("xs"), f.get("ys"));
        let (w_ref, b_ref) = (f.get("w"), f.get("b"));
        let (n_iter, evals) = (f.get("n_iter"), f.get("func_evals"));
        let sens = f.get("sensitivity");
        let (w0, b0) = (f.get("w0"), f.get("b0"));
        let (k, nin) = (w0.shape()[0], w0.shape()[1]);
        let mut x: Vec<f64> = w0.iter().chain(b0.iter()).copied().collect();
        let mut lin = Linear::<f64>::new(nin, k, true, &mut StdRng::seed_from_u64(0));
        let closure_for = |t: usize| {
            let xb = xs
                .index_axis(ndarray::Axis(0), t)
                .to_owned()
                .into_dimensionality::<Ix2>()
                .unwrap();
            let yb: Vec<u32> = ys
                .index_axis(ndarray::Axis(0), t)
                .iter()
                .map(|&v| v as u32)
                .collect();
            move |lin: &mut Linear<f64>, th: &[f64], g: &mut [f64]| {
                lin.weight
                    .value
                    .iter_mut()
                    .chain(lin.bias.as_mut().unwrap().value.iter_mut())
                    .zip(th)
                    .for_each(|(p, &v)| *p = v);
                lin.zero_grad();
                let z = lin.forward(xb.clone());
                let (l, dz) = cross_entropy(&z, &yb).unwrap();
                lin.backward(&dz, false);
                let grads = lin
                    .weight
                    .grad
                    .iter()
                    .chain(lin.bias.as_ref().unwrap().grad.iter());
                for ((gi, &gv), &v) in g.iter_mut().zip(grads).zip(th) {
                    *gi = gv + wd * v;
                }
                Ok(l + 0.5 * wd * th.iter().map(|v| v * v).sum::<f64>())
            }
        };
        let mut opt = Lbfgs::<f64>::new(lr, 5).unwrap();
        opt.max_iter = max_iter;
        opt.max_eval = max_iter * 5 / 4;
        let mut saved = None;
        for t in 0..3 {
            let c = closure_for(t);
            opt.step(&mut x, |th, g| c(&mut lin, th, g)).unwrap();
            let w = ArrayD::from_shape_vec(IxDyn(&[k, nin]), x[..k * nin].to_vec()).unwrap();
            let b = ArrayD::from_shape_vec(IxDyn(&[k]), x[k * nin..].to_vec()).unwrap();
            let what = format!("{name} step {}", t + 1);
            eprintln!("{what}: PyTorch's own sensitivity {:.1e}", sens[t]);
            rel(
                &w,
                &w_ref.index_axis(ndarray::Axis(0), t).to_owned(),
                &format!("{what} weight"),
                1e-10,
            );
            rel(
                &b,
                &b_ref.index_axis(ndarray::Axis(0), t).to_owned(),
                &format!("{what} bias"),
                1e-10,
            );
            assert_eq!(opt.state.n_iter as f64, n_iter[t], "{what}: n_iter");
            assert_eq!(opt.state.func_evals as f64, evals[t], "{what}: func_evals");
            if t == 0 {
                let tensors = opt.state_tensors();
                saved = Some((opt.state_json(), tensors, x.clone()));
            }
        }
        assert_eq!(opt.state.old_dirs.len(), 5, "{name}: a full history");
        // resume from the state saved after step 1: bit-identical steps 2 and 3
        let (json, tensors, mut x2) = saved.unwrap();
        let mut opt2 = Lbfgs::<f64>::new(lr, 5).unwrap();
        opt2.max_iter = max_iter;
        opt2.max_eval = max_iter * 5 / 4;
        opt2.load_state(
            &json,
            x2.len(),
            |k| Ok(tensors.iter().find(|(n, _)| n == k).map(|(_, a)| a.clone())),
            std::path::Path::new("memory"),
        )
        .unwrap();
        for t in 1..3 {
            let c = closure_for(t);
            opt2.step(&mut x2, |th, g| c(&mut lin, th, g)).unwrap();
        }
        assert_eq!(x2, x, "{name}: resumed run");
        assert_eq!(opt2.state, opt.state, "{name}: resumed state");
    }
}
