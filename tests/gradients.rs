//! Claim: the analytic gradient and Hessian-vector product of the UFM objective match central
//! differences, for every loss, with and without bias, at random points (proptest).

use proptest::prelude::*;
use ufm::ufm::{Loss, UfmConfig, UfmProblem};

fn loss_strategy() -> impl Strategy<Value = Loss> {
    prop_oneof![
        Just(Loss::CrossEntropy),
        Just(Loss::Mse),
        (0.0f64..0.9).prop_map(|alpha| Loss::LabelSmoothing { alpha }),
        (0.0f64..3.0).prop_map(|gamma| Loss::Focal { gamma }),
    ]
}

fn problem_strategy() -> impl Strategy<Value = (UfmProblem, u64)> {
    (
        prop::collection::vec(1usize..4, 2..5),
        1usize..5,
        (1e-4f64..0.1, 1e-4f64..0.1, 0.0f64..0.1),
        loss_strategy(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(sizes, d, (lw, lh, lb), loss, bias, seed)| {
            let p = UfmConfig::with_class_sizes(sizes, d)
                .lambdas(lw, lh, lb)
                .loss(loss)
                .bias(bias)
                .build()
                .unwrap();
            (p, seed)
        })
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den = b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-3);
    num / den
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Central differences with h = 1e-6 have truncation error O(h²)·f''' and round-off
    /// O(ε/h); 1e-6 relative is comfortably above both for these O(1) problems.
    #[test]
    fn gradient_matches_central_difference((p, seed) in problem_strategy()) {
        let mut x: Vec<f64> = p.random_point(seed, 0.8).unwrap();
        if p.has_bias() {
            let n = x.len();
            for (i, v) in x[n - p.n_classes()..].iter_mut().enumerate() { *v = 0.3 * (i as f64) - 0.2; }
        }
        let mut g = vec![0.0; x.len()];
        p.value_grad(&x, &mut g);
        let h = 1e-6;
        let fd: Vec<f64> = (0..x.len()).map(|i| {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            (p.value(&xp) - p.value(&xm)) / (2.0 * h)
        }).collect();
        let e = rel_err(&g, &fd);
        prop_assert!(e < 1e-6, "loss {} rel err {e}", p.loss());
    }

    /// The exact HVP against central differences of the analytic gradient (h = 1e-5).
    #[test]
    fn hvp_matches_central_difference_of_gradient((p, seed) in problem_strategy()) {
        let x: Vec<f64> = p.random_point(seed, 0.8).unwrap();
        let v: Vec<f64> = p.random_point(seed.wrapping_add(1), 1.0).unwrap()
            .iter().enumerate().map(|(i, &a)| if i + p.n_classes() >= x.len() && p.has_bias() { 0.5 } else { a }).collect();
        let mut hv = vec![0.0; x.len()];
        p.hvp(&x, &v, &mut hv);
        let h = 1e-5;
        let xp: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + h * b).collect();
        let xm: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a - h * b).collect();
        let (mut gp, mut gm) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        p.value_grad(&xp, &mut gp);
        p.value_grad(&xm, &mut gm);
        let fd: Vec<f64> = gp.iter().zip(&gm).map(|(a, b)| (a - b) / (2.0 * h)).collect();
        let e = rel_err(&hv, &fd);
        prop_assert!(e < 1e-6, "loss {} rel err {e}", p.loss());
    }
}

/// The Hessian is symmetric: uᵀ(∇²f v) = vᵀ(∇²f u) for random u, v.
#[test]
fn hvp_is_symmetric() {
    for loss in [
        Loss::CrossEntropy,
        Loss::Mse,
        Loss::LabelSmoothing { alpha: 0.2 },
        Loss::Focal { gamma: 2.0 },
    ] {
        let p = UfmConfig::with_class_sizes(vec![5, 3, 4], 4)
            .lambdas(1e-2, 2e-2, 3e-2)
            .loss(loss)
            .build()
            .unwrap();
        let x: Vec<f64> = p.random_point(1, 1.0).unwrap();
        let u: Vec<f64> = p.random_point(2, 1.0).unwrap();
        let v: Vec<f64> = p.random_point(3, 1.0).unwrap();
        let (mut hu, mut hv) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        p.hvp(&x, &u, &mut hu);
        p.hvp(&x, &v, &mut hv);
        let a: f64 = v.iter().zip(&hu).map(|(a, b)| a * b).sum();
        let b: f64 = u.iter().zip(&hv).map(|(a, b)| a * b).sum();
        assert!(
            (a - b).abs() < 1e-12 * a.abs().max(1.0),
            "{loss}: {a} vs {b}"
        );
    }
}

/// f32 evaluation agrees with f64 to single-precision accuracy (large N exercises the
/// blocked, parallel reduction).
#[test]
fn f32_gradient_agrees_with_f64() {
    let p = UfmConfig::balanced(10, 300, 32).build().unwrap();
    let x: Vec<f64> = p.random_point(5, 0.5).unwrap();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let (mut g, mut g32) = (vec![0.0f64; x.len()], vec![0.0f32; x.len()]);
    let f = p.value_grad(&x, &mut g);
    let f32v = p.value_grad(&x32, &mut g32);
    assert!(((f32v as f64) - f).abs() < 1e-5 * f.abs());
    let g32: Vec<f64> = g32.iter().map(|&v| v as f64).collect();
    assert!(rel_err(&g32, &g) < 1e-5);
}
