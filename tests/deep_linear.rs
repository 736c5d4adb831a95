//! Claims about the deep linear UFM (`ufm::deep`, `ufm::deep::linear`):
//! the closed-form certificate is attained by an explicit point that is stationary, no solver
//! run beats it, L-BFGS from random starts reaches it (also where the zero solution is the
//! optimum), the optimum is class-aligned for imbalanced classes, the largest-root rule misses
//! the zero solution, and the analytic gradient matches central differences.

use proptest::prelude::*;
use ufm::deep::linear::{self, ScalarProblem};
use ufm::deep::{solve_from_random_starts, Activation, DeepUfm, DeepUfmConfig, StartSpec};
use ufm::ufm::Loss;

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

fn grad_norm(p: &DeepUfm, x: &[f64]) -> f64 {
    let mut g = vec![0.0; x.len()];
    p.value_grad(x, &mut g);
    g.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Best objective over L-BFGS runs from init scales 0.5, 1, 2 (two seeds each).
fn best_of_starts(p: &DeepUfm) -> (f64, Vec<f64>) {
    let mut best = (f64::INFINITY, vec![]);
    for (i, scale) in [0.5, 1.0, 2.0].into_iter().enumerate() {
        let st = StartSpec {
            starts: 2,
            seed: 10 * i as u64,
            init_scale: scale,
            ..StartSpec::default()
        };
        for r in solve_from_random_starts(p, &st).unwrap() {
            if r.objective < best.0 {
                best = (r.objective, r.x);
            }
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The exact 1-D minimum against a dense grid on [0, y] (the minimiser lies there: φ
    /// increases beyond y). At an interior minimum φ'' ≤ 1/N (the penalty is concave), so the
    /// nearest grid point exceeds the minimum by at most δ²/(2N), δ = y/2e5; a minimum at 0 is
    /// a grid point. The exact value may not exceed the grid minimum by more than rounding.
    #[test]
    fn scalar_minimum_matches_a_dense_grid(
        y in 0.3f64..6.0,
        extra in 0.0f64..40.0,
        log_c in -9.0f64..0.0,
        layers in 1usize..7,
    ) {
        let sp = ScalarProblem { y, n_total: y * y + extra + 1.0, c_bar: 10f64.powf(log_c), layers };
        let m = sp.solve();
        let grid = 200_000;
        let gmin = (0..=grid).map(|i| sp.value(y * i as f64 / grid as f64)).fold(f64::INFINITY, f64::min);
        prop_assert!(m.value <= gmin + 1e-14 * gmin.max(1e-300), "exact {} grid {}", m.value, gmin);
        let delta = y / grid as f64;
        let slack = delta * delta / (2.0 * sp.n_total) + 1e-13 * m.zero_value;
        prop_assert!(gmin - m.value <= slack, "exact {} grid {} slack {slack}", m.value, gmin);
        prop_assert!(m.value <= m.zero_value);
        for &r in &m.roots {
            let scale = (y / sp.n_total).max(sp.c_bar * r.powf(sp.exponent() - 1.0));
            prop_assert!(sp.derivative(r).abs() <= 1e-9 * scale, "phi'({r}) = {}", sp.derivative(r));
        }
    }

    /// The certificate is attained by the explicit balanced, class-aligned point, and that point
    /// is stationary, for random depths, widths (including widths below K: the rank cap),
    /// class sizes and per-layer weight decays.
    #[test]
    fn certificate_is_attained_by_a_stationary_point(
        sizes in prop::collection::vec(1usize..7, 2..6),
        layers in 1usize..5,
        width_seed in prop::collection::vec(1usize..7, 5),
        lams in prop::collection::vec(-4.0f64..-1.0, 6),
    ) {
        let mut cfg = DeepUfmConfig::new(sizes, layers, width_seed[0]);
        cfg.hidden_widths = width_seed[1..layers].to_vec();
        cfg.lambda_w = lams[..layers].iter().map(|l| 10f64.powf(*l)).collect();
        cfg.lambda_h = 10f64.powf(lams[5]);
        let p = cfg.build().unwrap();
        let cert = linear::certify(&p).unwrap();
        let x = linear::optimal_point(&p, &cert).unwrap();
        let f = p.value(&x);
        prop_assert!((f - cert.objective).abs() <= 1e-12 * cert.objective, "f {f} cert {}", cert.objective);
        let gn = grad_norm(&p, &x);
        prop_assert!(gn <= 1e-9, "|grad| = {gn} at the certified point");
        prop_assert!(cert.largest_root_objective >= cert.objective - 1e-15);
        prop_assert!(cert.rank <= cert.max_rank);
    }

    /// Analytic gradient against central differences: linear and ReLU, MSE and CE, random
    /// depths and widths (h = 1e-6; points with a ReLU pre-activation within 1e-4 of 0 are
    /// skipped so that no difference straddles a kink).
    #[test]
    fn gradient_matches_central_difference(
        sizes in prop::collection::vec(1usize..4, 2..4),
        layers in 1usize..5,
        widths in prop::collection::vec(1usize..5, 5),
        relu in any::<bool>(),
        ce in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut cfg = DeepUfmConfig::new(sizes, layers, widths[0])
            .lambdas(3e-2, 2e-2)
            .activation(if relu { Activation::Relu } else { Activation::Linear })
            .loss(if ce { Loss::CrossEntropy } else { Loss::Mse });
        cfg.hidden_widths = widths[1..layers].to_vec();
        let p = cfg.build().unwrap();
        let x = p.random_point(seed, 1.0).unwrap();
        if relu {
            let fw = p.forward(&x);
            let closest = fw.pre[..layers - 1].iter().flat_map(|z| z.iter()).fold(f64::INFINITY, |m, v| m.min(v.abs()));
            prop_assume!(closest > 1e-4);
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
        prop_assert!(e < 1e-6, "rel err {e}");
    }
}

/// No solver run ends below the certificate (it is a lower bound), and the best of six L-BFGS
/// runs reaches it to 1e-8 relative: tiny λ (every class non-zero), moderate λ, and large λ
/// where the zero solution is optimal for some or all classes; L = 2 and 3; balanced and
/// imbalanced.
#[test]
fn lbfgs_from_random_starts_reaches_the_certified_minimum() {
    let cases: &[(&[usize], usize, f64)] = &[
        (&[10, 10, 10, 10], 2, 1e-4),
        (&[10, 10, 10, 10], 3, 1e-3),
        (&[20, 10, 5, 5], 2, 5e-3),
        (&[20, 10, 5, 5], 3, 1e-3),
        (&[20, 10, 5, 5], 3, 2e-2),
        (&[20, 10, 5, 5], 3, 5e-2), // classes 1-3 at the zero solution (class 1 has a root)
        (&[10, 10, 10, 10], 3, 5e-2), // every class at zero although each has a root
        (&[10, 10, 10, 10], 2, 0.2), // no stationary root at all
    ];
    for &(sizes, layers, lam) in cases {
        let p = DeepUfmConfig::new(sizes.to_vec(), layers, 8)
            .lambdas(lam, lam)
            .build()
            .unwrap();
        let cert = linear::certify(&p).unwrap();
        for scale in [0.5, 1.0, 2.0] {
            let st = StartSpec {
                starts: 2,
                init_scale: scale,
                ..StartSpec::default()
            };
            for r in solve_from_random_starts(&p, &st).unwrap() {
                assert!(
                    r.objective >= cert.objective * (1.0 - 1e-12),
                    "{sizes:?} L={layers} λ={lam}: run {} below the certificate {}",
                    r.objective,
                    cert.objective
                );
            }
        }
        let (best, _) = best_of_starts(&p);
        assert!(
            best - cert.objective <= 1e-8 * cert.objective,
            "{sizes:?} L={layers} λ={lam}: best run {best} vs certified {}",
            cert.objective
        );
    }
}

/// With imbalanced classes the optimum found by the solver is Z* = diag(t_k) Y (aligned with
/// the classes) and every layer's class means are orthogonal (an orthogonal frame with
/// class-dependent lengths), not a simplex ETF.
#[test]
fn imbalanced_optimum_is_class_aligned_with_orthogonal_means() {
    let p = DeepUfmConfig::new(vec![20, 10, 5, 5], 3, 8)
        .lambdas(1e-3, 1e-3)
        .build()
        .unwrap();
    let cert = linear::certify(&p).unwrap();
    let (best, x) = best_of_starts(&p);
    assert!(best - cert.objective <= 1e-8 * cert.objective);
    let z = p.forward(&x).pre.pop().unwrap();
    let zstar = cert.optimal_logits(&p);
    let err = (&z - &zstar).iter().map(|v| v * v).sum::<f64>().sqrt()
        / zstar.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(err < 1e-4, "logits differ from diag(t) Y by {err}");
    let nc = p.layer_nc(&x, 1e-6).unwrap();
    for l in &nc {
        assert!(l.nc1 < 1e-8, "layer {}: NC1 {}", l.layer, l.nc1);
        assert!(
            l.max_cos < 1e-4,
            "layer {}: max |cos| {}",
            l.layer,
            l.max_cos
        );
        assert!(
            l.nc3_span < 1e-4,
            "layer {}: NC3 span {}",
            l.layer,
            l.nc3_span
        );
        assert!(
            l.nc2_etf > 1e-2,
            "layer {}: imbalanced means should not be an ETF",
            l.layer
        );
    }
}

/// Balanced optimum: every layer collapsed, means an equal-norm orthogonal frame (so the
/// centred means are a simplex ETF), weights aligned with the means.
#[test]
fn balanced_optimum_has_deep_neural_collapse_in_every_layer() {
    let p = DeepUfmConfig::new(vec![6; 4], 3, 6)
        .lambdas(2e-3, 1e-3)
        .build()
        .unwrap();
    let cert = linear::certify(&p).unwrap();
    let x = linear::optimal_point(&p, &cert).unwrap();
    for l in p.layer_nc(&x, 1e-8).unwrap() {
        assert!(l.nc1 < 1e-20 && l.nc2_etf < 1e-10 && l.max_cos < 1e-12 && l.nc3_span < 1e-12);
        assert_eq!(l.rank, 4);
        let (lo, hi) = l
            .mean_norms
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi - lo < 1e-12 * hi);
    }
}

/// The "largest stationary root, never zero" rule of the code published with Dang et al.
/// reports a configuration whose objective exceeds the certified one: evaluate both explicit
/// points.
#[test]
fn largest_root_rule_misses_the_zero_solution() {
    let p = DeepUfmConfig::new(vec![20, 10, 5, 5], 3, 8)
        .lambdas(5e-2, 5e-2)
        .build()
        .unwrap();
    let cert = linear::certify(&p).unwrap();
    let c1 = &cert.classes[1];
    assert!(c1.zero && c1.zero_beats_root && c1.roots.len() == 2);
    let s_root: Vec<f64> = cert
        .classes
        .iter()
        .map(|c| c.roots.last().copied().unwrap_or(0.0))
        .collect();
    let x_root = linear::class_aligned_point(&p, &s_root).unwrap();
    let x_opt = linear::optimal_point(&p, &cert).unwrap();
    let (f_root, f_opt) = (p.value(&x_root), p.value(&x_opt));
    assert!((f_root - cert.largest_root_objective).abs() < 1e-12 * f_root);
    assert!((f_opt - cert.objective).abs() < 1e-12 * f_opt);
    assert!(
        f_root > f_opt * (1.0 + 1e-2),
        "root {f_root} vs zero {f_opt}"
    );
}

/// L = 1 is the classical bias-free UFM: the certificate is the nuclear-norm soft threshold
/// s = max(√n − N√(λ_W λ_H), 0).
#[test]
fn one_layer_certificate_is_the_soft_threshold() {
    let p = DeepUfmConfig::new(vec![9, 4, 1], 1, 5)
        .lambdas(4e-2, 1e-2)
        .build()
        .unwrap();
    let cert = linear::certify(&p).unwrap();
    let n_total = 14.0;
    for (c, n) in cert.classes.iter().zip([9.0f64, 4.0, 1.0]) {
        let want = (n.sqrt() - n_total * (4e-2f64 * 1e-2).sqrt()).max(0.0);
        assert!((c.s - want).abs() < 1e-14, "{} vs {want}", c.s);
    }
}

/// Cross-entropy: the best simplex-ETF configuration's value is attained by an explicit point;
/// for L = 1 (bias-free classical UFM) the solver's optimum is that ETF, while for L = 3 the
/// solver finds a lower objective whose logits have rank 2 < K - 1 (the ETF is not optimal).
#[test]
fn cross_entropy_etf_is_optimal_for_one_layer_but_not_for_three() {
    for (layers, expect_etf) in [(1usize, true), (3, false)] {
        let p = DeepUfmConfig::new(vec![10; 4], layers, 8)
            .lambdas(5e-3, 5e-3)
            .loss(Loss::CrossEntropy)
            .build()
            .unwrap();
        let etf = linear::etf_candidate(&p).unwrap();
        let z = linear::etf_logits(&p, etf.t);
        let (xe, _) = linear::balanced_point(&p, z.view()).unwrap();
        assert!((p.value(&xe) - etf.objective).abs() < 1e-10 * etf.objective);
        let (best, x) = best_of_starts(&p);
        let logits = p.forward(&x).pre.pop().unwrap();
        let sv = ufm::linalg::singular_values(logits.view()).unwrap();
        let rank = sv.iter().filter(|&&s| s > 1e-6 * sv[0]).count();
        if expect_etf {
            assert!(
                (best - etf.objective).abs() < 1e-8 * etf.objective,
                "{best} vs {}",
                etf.objective
            );
            assert_eq!(rank, 3);
        } else {
            assert!(
                best < etf.objective * (1.0 - 1e-2),
                "{best} vs ETF {}",
                etf.objective
            );
            assert_eq!(rank, 2);
        }
    }
}

/// Misuse is an error that names the problem.
#[test]
fn certificate_refuses_what_it_does_not_cover() {
    let relu = DeepUfmConfig::new(vec![2, 2], 2, 3)
        .activation(Activation::Relu)
        .build()
        .unwrap();
    assert!(linear::certify(&relu)
        .unwrap_err()
        .to_string()
        .contains("linear"));
    let ce = DeepUfmConfig::new(vec![2, 2], 2, 3)
        .loss(Loss::CrossEntropy)
        .build()
        .unwrap();
    assert!(linear::certify(&ce)
        .unwrap_err()
        .to_string()
        .contains("MSE"));
    let zero = DeepUfmConfig::new(vec![2, 2], 2, 3)
        .lambdas(0.0, 1e-3)
        .build()
        .unwrap();
    assert!(linear::certify(&zero)
        .unwrap_err()
        .to_string()
        .contains("lambda"));
    let mut bad = DeepUfmConfig::new(vec![2, 2], 2, 3);
    bad.lambda_w.pop();
    assert!(bad
        .build()
        .unwrap_err()
        .to_string()
        .contains("one per layer"));
    assert!(DeepUfmConfig::new(vec![2, 0], 2, 3).build().is_err());
}
