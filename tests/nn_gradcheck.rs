//! Every layer's backward pass, and whole networks, against central differences in f64.
//!
//! Claim: for a scalar test function $\ell(\theta,x)$ the analytic gradient agrees with
//! $\frac{\ell(\theta+\epsilon e_i)-\ell(\theta-\epsilon e_i)}{2\epsilon}$ ($\epsilon=10^{-6}$)
//! to a relative error below `TOL` (error scale $\max(|a|,|b|,10^{-2})$).

use ndarray::{Array2, Array4, ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ufm::nn::layers::conv::ConvInit;
use ufm::nn::layers::{
    cross_entropy, mse_one_hot, BatchNorm, Conv2d, GlobalAvgPool, Linear, MaxPool2d, Module, Relu,
    TensorMut,
};
use ufm::nn::models::{Body, Mlp, Net, ResNet, ResNetSpec, Stem};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

fn rand4(rng: &mut StdRng, s: (usize, usize, usize, usize)) -> Array4<f64> {
    Array4::from_shape_simple_fn(s, || rng.random_range(-1.0..1.0))
}
fn rand2(rng: &mut StdRng, s: (usize, usize)) -> Array2<f64> {
    Array2::from_shape_simple_fn(s, || rng.random_range(-1.0..1.0))
}

fn close(a: f64, b: f64, what: &str) {
    let scale = a.abs().max(b.abs()).max(1e-2);
    assert!(
        (a - b).abs() / scale < TOL,
        "{what}: analytic {a} vs numeric {b}"
    );
}

/// Indices to probe: all if small, else a seeded sample.
fn probe(n: usize, k: usize, seed: u64) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    let mut r = StdRng::seed_from_u64(seed);
    (0..k).map(|_| r.random_range(0..n)).collect()
}

/// Checks the analytic parameter gradients of `m` (left by `run_backward`) against central
/// differences of `loss`.
fn check_params<M: Module<f64>>(m: &mut M, loss: &mut dyn FnMut(&mut M) -> f64, per_tensor: usize) {
    let mut grads: Vec<(String, ArrayD<f64>)> = vec![];
    m.visit("", &mut |n, t| {
        if let TensorMut::Param(p) = t {
            if p.trainable {
                grads.push((n.to_string(), p.grad.clone()));
            }
        }
    });
    assert!(!grads.is_empty());
    for (gi, (name, g)) in grads.iter().enumerate() {
        for i in probe(g.len(), per_tensor, gi as u64) {
            let bump = |m: &mut M, d: f64| {
                m.visit("", &mut |n, t| {
                    if let TensorMut::Param(p) = t {
                        if n == name {
                            p.value.as_slice_mut().unwrap()[i] += d;
                        }
                    }
                })
            };
            bump(m, EPS);
            let lp = loss(m);
            bump(m, -2.0 * EPS);
            let lm = loss(m);
            bump(m, EPS);
            close(
                g.as_slice().unwrap()[i],
                (lp - lm) / (2.0 * EPS),
                &format!("{name}[{i}]"),
            );
        }
    }
}

fn check_input<D: ndarray::Dimension>(
    x: &ndarray::Array<f64, D>,
    dx: &ndarray::Array<f64, D>,
    loss: &mut dyn FnMut(&ndarray::Array<f64, D>) -> f64,
    k: usize,
) {
    for i in probe(x.len(), k, 99) {
        let mut xp = x.clone();
        xp.as_slice_mut().unwrap()[i] += EPS;
        let mut xm = x.clone();
        xm.as_slice_mut().unwrap()[i] -= EPS;
        close(
            dx.as_slice().unwrap()[i],
            (loss(&xp) - loss(&xm)) / (2.0 * EPS),
            &format!("input[{i}]"),
        );
    }
}

#[test]
fn linear_backward_matches_central_difference() {
    let mut rng = StdRng::seed_from_u64(1);
    for bias in [true, false] {
        let mut lin = Linear::<f64>::new(5, 4, bias, &mut rng);
        let x = rand2(&mut rng, (3, 5));
        let r = rand2(&mut rng, (3, 4));
        let y = lin.forward(x.clone());
        let dx = lin.backward(&r, true).unwrap();
        let _ = y;
        let r2 = r.clone();
        check_params(
            &mut lin,
            &mut |l: &mut Linear<f64>| (l.forward(x.clone()) * &r2).sum(),
            100,
        );
        let mut l2 = lin.clone();
        check_input(&x, &dx, &mut |xx| (l2.forward(xx.clone()) * &r).sum(), 100);
    }
}

/// One convolution `2 → 3` channels, kernel `k`, stride `s`, padding `p` on `n` images of
/// `h × h`: the forward pass against the definition, the weight and input gradients against
/// central differences.
fn check_conv(rng: &mut StdRng, (k, s, p, h, n): (usize, usize, usize, usize, usize)) {
    let mut conv = Conv2d::<f64>::new(2, 3, k, s, p, ConvInit::TorchDefault, rng);
    let x = rand4(rng, (n, 2, h, h));
    let oh = conv.out_size(h);
    let r = rand4(rng, (n, 3, oh, oh));
    let y = conv.forward(x.clone());
    assert_eq!(y.dim(), (n, 3, oh, oh));
    // forward against the definition
    for &(ni, o, i, j) in &[
        (0, 0, 0, 0),
        (n - 1, 2, oh - 1, oh / 2),
        (n / 2, 1, oh / 2, oh - 1),
    ] {
        let mut acc = 0.0;
        for c in 0..2 {
            for a in 0..k {
                for b in 0..k {
                    let (yy, xx) = (
                        (i * s + a) as isize - p as isize,
                        (j * s + b) as isize - p as isize,
                    );
                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < h {
                        acc +=
                            conv.weight.value[[o, c, a, b]] * x[[ni, c, yy as usize, xx as usize]];
                    }
                }
            }
        }
        assert!((acc - y[[ni, o, i, j]]).abs() < 1e-12);
    }
    let dx = conv.backward(&r, true).unwrap();
    let r2 = r.clone();
    check_params(
        &mut conv,
        &mut |c: &mut Conv2d<f64>| (c.forward(x.clone()) * &r2).sum(),
        60,
    );
    let mut c2 = conv.clone();
    check_input(&x, &dx, &mut |xx| (c2.forward(xx.clone()) * &r).sum(), 60);
}

#[test]
fn conv2d_backward_matches_central_difference_for_strides_and_paddings() {
    let mut rng = StdRng::seed_from_u64(2);
    for &(k, s, p, h) in &[
        (3, 1, 1, 5),
        (3, 2, 1, 6),
        (1, 2, 0, 5),
        (7, 2, 3, 9),
        (3, 1, 0, 4),
    ] {
        check_conv(&mut rng, (k, s, p, h, 2));
    }
}

/// The convolution's code paths: on one rayon thread, 5 images of small maps go through
/// im2col in groups of 2, 2 and 1 images (gathered / scattered GEMM columns; three
/// weight-gradient lanes); a 1×1 stride-1 convolution on 16×16 maps (256 pixels, one image
/// per group) uses the image itself as the im2col matrix; on 16×16 3×3 convolutions run one
/// image per group. "Same" stride-1 convolutions (3×3 and 5×5) take the contiguous-copy
/// im2col; maps smaller than the kernel (1×1 and 2×2 under a 3×3 or 7×7 kernel) leave the
/// taps that only see padding out of the GEMMs, whose weight gradient must come out zero.
#[test]
fn conv2d_grouped_and_pointwise_paths_match_central_difference() {
    let mut rng = StdRng::seed_from_u64(12);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for case in [
            (3, 1, 1, 6, 5),
            (3, 2, 1, 7, 5),
            (1, 1, 0, 6, 5),
            (1, 1, 0, 16, 3),
            (3, 1, 1, 16, 3),
            (3, 2, 1, 16, 3),
            (5, 1, 2, 6, 3),
            (3, 1, 1, 1, 5),
            (3, 2, 1, 2, 5),
            (7, 2, 3, 2, 3),
        ] {
            check_conv(&mut rng, case);
        }
    });
}

#[test]
fn batchnorm_train_and_eval_backward_match_central_difference() {
    let mut rng = StdRng::seed_from_u64(3);
    for train in [true, false] {
        let mut bn = BatchNorm::<f64>::new(3);
        bn.weight.value = ArrayD::from_shape_simple_fn(IxDyn(&[3]), || rng.random_range(0.5..1.5));
        bn.bias.value = ArrayD::from_shape_simple_fn(IxDyn(&[3]), || rng.random_range(-0.5..0.5));
        bn.running_mean = ArrayD::from_shape_simple_fn(IxDyn(&[3]), || rng.random_range(-0.5..0.5));
        bn.running_var = ArrayD::from_shape_simple_fn(IxDyn(&[3]), || rng.random_range(0.5..1.5));
        // 2-D (N, C, H, W)
        let x = rand4(&mut rng, (4, 3, 2, 3));
        let r = rand4(&mut rng, (4, 3, 2, 3));
        bn.forward(x.clone(), train);
        let dx = bn.backward(&r);
        let r2 = r.clone();
        check_params(
            &mut bn,
            &mut |b: &mut BatchNorm<f64>| (b.forward(x.clone(), train) * &r2).sum(),
            10,
        );
        let mut b2 = bn.clone();
        check_input(
            &x,
            &dx,
            &mut |xx| (b2.forward(xx.clone(), train) * &r).sum(),
            72,
        );
        // 1-D (N, C)
        let x = rand2(&mut rng, (5, 3));
        let r = rand2(&mut rng, (5, 3));
        bn.forward(x.clone(), train);
        let dx = bn.backward(&r);
        let mut b3 = bn.clone();
        check_input(
            &x,
            &dx,
            &mut |xx| (b3.forward(xx.clone(), train) * &r).sum(),
            15,
        );
    }
}

#[test]
fn batchnorm_running_statistics_follow_pytorch_momentum_and_unbiased_variance() {
    let mut bn = BatchNorm::<f64>::new(1);
    let x = Array2::from_shape_vec((4, 1), vec![1.0, 2.0, 3.0, 6.0]).unwrap();
    let y = bn.forward(x.clone(), true);
    // mean 3, biased var 3.5, unbiased 14/3
    assert!((bn.running_mean[0] - 0.3).abs() < 1e-12);
    assert!((bn.running_var[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-12);
    assert_eq!(bn.num_batches_tracked, 1);
    assert!((y[[3, 0]] - 3.0 / (3.5f64 + 1e-5).sqrt()).abs() < 1e-12);
    let ye = bn.forward(x, false);
    assert!((ye[[0, 0]] - (1.0 - 0.3) / (bn.running_var[0] + 1e-5).sqrt()).abs() < 1e-12);
}

#[test]
fn relu_maxpool_avgpool_backward_match_central_difference() {
    let mut rng = StdRng::seed_from_u64(4);
    let x = rand4(&mut rng, (2, 2, 7, 7));
    let mut relu = Relu::<f64, ndarray::Ix4>::new();
    let r = rand4(&mut rng, (2, 2, 7, 7));
    relu.forward(x.clone());
    let dx = relu.backward(r.clone());
    check_input(
        &x,
        &dx,
        &mut |xx| (Relu::new().forward(xx.clone()) * &r).sum(),
        98,
    );

    let mut mp = MaxPool2d::new(3, 2, 1);
    let y = mp.forward(&x);
    assert_eq!(y.dim(), (2, 2, 4, 4));
    let r = rand4(&mut rng, (2, 2, 4, 4));
    let dx = mp.backward(&r);
    check_input(
        &x,
        &dx,
        &mut |xx| (MaxPool2d::new(3, 2, 1).forward(xx) * &r).sum(),
        98,
    );

    let mut ap = GlobalAvgPool::new();
    let y = ap.forward(&x);
    assert!((y[[1, 1]] - x.slice(ndarray::s![1, 1, .., ..]).mean().unwrap()).abs() < 1e-12);
    let r = rand2(&mut rng, (2, 2));
    let dx = ap.backward(&r);
    check_input(
        &x,
        &dx,
        &mut |xx| (GlobalAvgPool::new().forward(xx) * &r).sum(),
        98,
    );
}

#[test]
fn losses_match_central_difference_and_definitions() {
    let mut rng = StdRng::seed_from_u64(5);
    let z = rand2(&mut rng, (4, 5)) * 3.0;
    let y = [0u32, 4, 2, 4];
    let (l, g) = cross_entropy(&z, &y).unwrap();
    // definition
    let mut want = 0.0;
    for i in 0..4 {
        let s: f64 = z.row(i).iter().map(|v| v.exp()).sum();
        want += s.ln() - z[[i, y[i] as usize]];
    }
    assert!((l - want / 4.0).abs() < 1e-12);
    check_input(&z, &g, &mut |zz| cross_entropy(zz, &y).unwrap().0, 20);
    // MSE: K columns even when the batch lacks the last class
    let y2 = [0u32, 1, 1, 0];
    let (l, g) = mse_one_hot(&z, &y2).unwrap();
    let mut want = 0.0;
    for i in 0..4 {
        for j in 0..5 {
            let t = if j == y2[i] as usize { 1.0 } else { 0.0 };
            want += (z[[i, j]] - t) * (z[[i, j]] - t);
        }
    }
    assert!((l - want / 20.0).abs() < 1e-12);
    check_input(&z, &g, &mut |zz| mse_one_hot(zz, &y2).unwrap().0, 20);
    assert!(cross_entropy(&z, &[0, 1, 2, 5]).is_err());
}

fn net_loss(net: &mut Net<f64>, x: &Array4<f64>, y: &[u32]) -> f64 {
    let o = net.forward(x.clone(), true).unwrap();
    cross_entropy(&o.logits, y).unwrap().0 + 0.3 * (&o.features * &o.features).sum()
}

fn net_grad(net: &mut Net<f64>, x: &Array4<f64>, y: &[u32]) {
    net.zero_grad();
    let o = net.forward(x.clone(), true).unwrap();
    let (_, g) = cross_entropy(&o.logits, y).unwrap();
    let df = &o.features * 0.6;
    net.backward(&g, Some(&df));
}

#[test]
fn whole_mlp_gradient_matches_central_difference() {
    let mut rng = StdRng::seed_from_u64(6);
    let body = Body::Mlp(Mlp::new(12, 6, 3, &mut rng));
    let mut net = Net::with_body(body, 4, true, false, &mut rng).unwrap();
    let x = rand4(&mut rng, (5, 3, 2, 2));
    let y = [0u32, 1, 2, 3, 1];
    net_grad(&mut net, &x, &y);
    check_params(&mut net, &mut |n: &mut Net<f64>| net_loss(n, &x, &y), 25);
}

#[test]
fn tiny_resnets_gradient_matches_central_difference() {
    let mut rng = StdRng::seed_from_u64(7);
    for (stem, fixdim, etf) in [(Stem::ImageNet, 0, false), (Stem::Cifar, 3, true)] {
        let spec = ResNetSpec {
            stem,
            widths: [2, 3, 4, 4],
            blocks: [2, 1, 1, 1],
            fixdim,
            init: ConvInit::KaimingFanOut,
            shortcut_name: "downsample",
            in_channels: 3,
        };
        let body = Body::ResNet(Box::new(ResNet::new(&spec, &mut rng)));
        let mut net = Net::with_body(body, 3, true, etf, &mut rng).unwrap();
        let hw = if stem == Stem::ImageNet { 16 } else { 8 };
        let x = rand4(&mut rng, (3, 3, hw, hw));
        let y = [0u32, 1, 2];
        net_grad(&mut net, &x, &y);
        check_params(&mut net, &mut |n: &mut Net<f64>| net_loss(n, &x, &y), 12);
    }
}
