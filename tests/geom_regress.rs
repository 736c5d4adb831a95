//! Regression UFM and neural regression collapse (Andriopoulos et al., arXiv 2409.04180): exact
//! derivatives, the singular-value-thresholding closed form against L-BFGS from random starts,
//! NRC1-3 at and away from the optimum, and NRC against a slow reference written here.

// Index loops mirror the formulas of the slow references.
#![allow(clippy::needless_range_loop)]

use ndarray::{Array1, Array2};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use ufm::metrics::nrc::{nrc1, nrc2, nrc3, nrc_metrics};
use ufm::regression::{closed_form, random_targets, RegressionProblem};
use ufm::solver::{Executor, Lbfgs};

fn gaussian(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |_| StandardNormal.sample(&mut rng))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn gradient_and_hvp_match_central_differences(
        n_s in 3usize..12, n in 1usize..4, d in 1usize..5, bias: bool, seed in 0u64..1_000_000,
        lw in 1e-3f64..1.0, lh in 1e-3f64..1.0,
    ) {
        let y = gaussian(n_s, n, seed);
        let p = RegressionProblem::new(y, d, lw, lh, bias).unwrap();
        let x = p.random_point(seed + 1, 1.0);
        let v = p.random_point(seed + 2, 1.0);
        let mut g = vec![0.0; x.len()];
        p.value_grad(&x, &mut g);
        let h = 1e-6;
        for i in 0..x.len() {
            let mut xp = x.clone();
            xp[i] += h;
            let mut xm = x.clone();
            xm[i] -= h;
            let fd = (p.value(&xp) - p.value(&xm)) / (2.0 * h);
            prop_assert!((fd - g[i]).abs() < 1e-6 * (1.0 + g[i].abs()), "coordinate {i}: {fd} vs {}", g[i]);
        }
        let mut hv = vec![0.0; x.len()];
        p.hvp(&x, &v, &mut hv);
        let xp: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + h * b).collect();
        let xm: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a - h * b).collect();
        let (mut gp, mut gm) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        p.value_grad(&xp, &mut gp);
        p.value_grad(&xm, &mut gm);
        for i in 0..x.len() {
            let fd = (gp[i] - gm[i]) / (2.0 * h);
            prop_assert!((fd - hv[i]).abs() < 1e-6 * (1.0 + hv[i].abs()), "{fd} vs {}", hv[i]);
        }
    }

    /// L-BFGS from random starts reaches the closed-form optimum to a relative 1e-8, on random
    /// targets, dimensions (d below, at and above n) and weight decays, with and without bias.
    #[test]
    fn closed_form_matches_lbfgs_from_random_starts(
        n_s in 5usize..40, n in 1usize..5, d in 1usize..7, bias: bool, seed in 0u64..1_000_000,
        log_lw in -3.5f64..-1.0, log_lh in -3.5f64..-1.0, rho in -0.8f64..0.8,
    ) {
        let y = random_targets(n_s, n, rho, seed).unwrap();
        let (lw, lh) = (10f64.powf(log_lw), 10f64.powf(log_lh));
        let p = RegressionProblem::new(y, d, lw, lh, bias).unwrap();
        let cf = closed_form(&p).unwrap();
        // The closed-form point attains the formula and is a critical point.
        let xc = cf.point(&p).unwrap();
        prop_assert!((p.value(&xc) - cf.objective).abs() <= 1e-12 * cf.objective.abs().max(1e-12));
        let mut g = vec![0.0; xc.len()];
        p.value_grad(&xc, &mut g);
        prop_assert!(g.iter().map(|v| v * v).sum::<f64>().sqrt() < 1e-9 * (1.0 + cf.objective));
        for s in 0..2 {
            let mut x = p.random_point(seed + 10 + s, 1.0);
            let exec = Executor { tol: 1e-11, max_iter: 50_000, ..Default::default() };
            exec.run(&p, &mut Lbfgs::new(10).unwrap(), &mut x, &mut []).unwrap();
            let f = p.value(&x);
            prop_assert!((f - cf.objective).abs() <= 1e-8 * cf.objective.abs(), "start {s}: {f} vs {}", cf.objective);
        }
    }
}

/// At the closed form (d >= n, bias) NRC1-3 vanish (NRC3 both at the optimal gamma and at the
/// theory's gamma = N lambda_W lambda_H); W W^T has the NRC3 form with its exact scale; away
/// from the optimum all three are positive.
#[test]
fn nrc_vanishes_at_the_closed_form_and_is_positive_away_from_it() {
    for (seed, n_s, n, d) in [(1u64, 60, 3, 5), (2, 80, 2, 2), (3, 50, 4, 9)] {
        let y = random_targets(n_s, n, 0.6, seed).unwrap();
        let p = RegressionProblem::new(y, d, 2e-3, 1e-3, true).unwrap();
        let cf = closed_form(&p).unwrap();
        assert_eq!(cf.rank, n, "every direction kept at this weight decay");
        let x = cf.point(&p).unwrap();
        let (w, ht, _) = p.split(&x);
        let r = nrc_metrics(ht, p.targets(), Some(w), None).unwrap();
        assert!(r.nrc1 < 1e-20 && r.nrc2.unwrap() < 1e-20, "{r:?}");
        assert!(r.nrc3.unwrap() < 1e-12, "{r:?}");
        assert!(
            (r.nrc3_gamma.unwrap() - cf.gamma).abs() < 1e-6 * cf.gamma,
            "{r:?} vs {}",
            cf.gamma
        );
        let at = nrc3(w, p.targets(), Some(cf.gamma)).unwrap();
        assert!(at.value < 1e-20, "{at:?}");
        // W W^T = sqrt(lH/lW) sqrt(N) (Sigma^1/2 - gamma^1/2 I).
        let sigma = ufm::metrics::nrc::target_covariance(p.targets()).unwrap();
        let s_half = sqrtm(&sigma);
        let c = (p.lambda_h() / p.lambda_w()).sqrt() * (n_s as f64).sqrt();
        let want = Array2::from_shape_fn((n, n), |(i, j)| {
            c * (s_half[[i, j]] - if i == j { cf.gamma.sqrt() } else { 0.0 })
        });
        let ww = w.dot(&w.t());
        let err = (&ww - &want).iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(
            err < 1e-10 * want.iter().map(|v| v * v).sum::<f64>().sqrt(),
            "{err}"
        );
        // Away from the optimum: a random point.
        let xr = p.random_point(seed, 1.0);
        let (w, ht, _) = p.split(&xr);
        let r = nrc_metrics(ht, p.targets(), Some(w), None).unwrap();
        if d > n {
            assert!(r.nrc1 > 1e-3 && r.nrc2.unwrap() > 1e-3, "{r:?}");
        }
        assert!(r.nrc3.unwrap() > 1e-3, "{r:?}");
    }
}

// ----- slow reference (loops, Jacobi eigenvalues, explicit projectors) -----

/// Cyclic Jacobi eigendecomposition of a symmetric matrix: (eigenvalues, eigenvectors as columns).
fn jacobi(a: &Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let n = a.nrows();
    let mut a = a.clone();
    let mut v = Array2::<f64>::eye(n);
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[[i, j]] * a[[i, j]])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[[p, q]].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * a[[p, q]]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[[k, p]], a[[k, q]]);
                    a[[k, p]] = c * akp - s * akq;
                    a[[k, q]] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[[p, k]], a[[q, k]]);
                    a[[p, k]] = c * apk - s * aqk;
                    a[[q, k]] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[[k, p]], v[[k, q]]);
                    v[[k, p]] = c * vkp - s * vkq;
                    v[[k, q]] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[[i, i]]).collect(), v)
}

fn sqrtm(a: &Array2<f64>) -> Array2<f64> {
    let (vals, v) = jacobi(a);
    let n = vals.len();
    Array2::from_shape_fn((n, n), |(i, j)| {
        (0..n)
            .map(|k| vals[k].max(0.0).sqrt() * v[[i, k]] * v[[j, k]])
            .sum()
    })
}

fn unit_centred(h: &Array2<f64>) -> Array2<f64> {
    let (m, d) = h.dim();
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..m).map(|i| h[[i, j]]).sum::<f64>() / m as f64)
        .collect();
    let mut u = Array2::zeros((m, d));
    for i in 0..m {
        let nrm: f64 = (0..d)
            .map(|j| (h[[i, j]] - mean[j]).powi(2))
            .sum::<f64>()
            .sqrt();
        for j in 0..d {
            u[[i, j]] = (h[[i, j]] - mean[j]) / nrm;
        }
    }
    u
}

fn residual_with_projector(u: &Array2<f64>, proj: &Array2<f64>) -> f64 {
    let (m, d) = u.dim();
    let mut total = 0.0;
    for i in 0..m {
        for a in 0..d {
            let pa: f64 = (0..d).map(|b| proj[[a, b]] * u[[i, b]]).sum();
            total += (u[[i, a]] - pa).powi(2);
        }
    }
    total / m as f64
}

fn inverse(a: &Array2<f64>) -> Array2<f64> {
    let n = a.nrows();
    let mut m = Array2::zeros((n, 2 * n));
    for i in 0..n {
        for j in 0..n {
            m[[i, j]] = a[[i, j]];
        }
        m[[i, n + i]] = 1.0;
    }
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&x, &y| m[[x, c]].abs().total_cmp(&m[[y, c]].abs()))
            .unwrap();
        for j in 0..2 * n {
            let t = m[[c, j]];
            m[[c, j]] = m[[piv, j]];
            m[[piv, j]] = t;
        }
        let pv = m[[c, c]];
        for j in 0..2 * n {
            m[[c, j]] /= pv;
        }
        for r in 0..n {
            if r != c {
                let f = m[[r, c]];
                for j in 0..2 * n {
                    m[[r, j]] -= f * m[[c, j]];
                }
            }
        }
    }
    Array2::from_shape_fn((n, n), |(i, j)| m[[i, n + j]])
}

fn nrc1_ref(h: &Array2<f64>, n: usize) -> f64 {
    let (m, d) = h.dim();
    let mean: Array1<f64> = (0..d)
        .map(|j| (0..m).map(|i| h[[i, j]]).sum::<f64>() / m as f64)
        .collect();
    let cov = Array2::from_shape_fn((d, d), |(a, b)| {
        (0..m)
            .map(|i| (h[[i, a]] - mean[a]) * (h[[i, b]] - mean[b]))
            .sum::<f64>()
            / m as f64
    });
    let (vals, v) = jacobi(&cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
    let top = &order[..n.min(d)];
    let proj = Array2::from_shape_fn((d, d), |(a, b)| {
        top.iter().map(|&k| v[[a, k]] * v[[b, k]]).sum()
    });
    residual_with_projector(&unit_centred(h), &proj)
}

fn nrc2_ref(h: &Array2<f64>, w: &Array2<f64>) -> f64 {
    // P = Wᵀ (W Wᵀ)^{-1} W (W has full row rank here).
    let p = w.t().dot(&inverse(&w.dot(&w.t()))).dot(w);
    residual_with_projector(&unit_centred(h), &p)
}

fn nrc3_ref(w: &Array2<f64>, y: &Array2<f64>, gamma: f64) -> f64 {
    let (m, n) = y.dim();
    let mean: Vec<f64> = (0..n)
        .map(|j| (0..m).map(|i| y[[i, j]]).sum::<f64>() / m as f64)
        .collect();
    let sigma = Array2::from_shape_fn((n, n), |(a, b)| {
        (0..m)
            .map(|i| (y[[i, a]] - mean[a]) * (y[[i, b]] - mean[b]))
            .sum::<f64>()
            / m as f64
    });
    let t = sqrtm(&sigma) - Array2::<f64>::eye(n) * gamma.sqrt();
    let ww = w.dot(&w.t());
    let fro = |a: &Array2<f64>| a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let diff = &ww / fro(&ww) - &t / fro(&t);
    diff.iter().map(|v| v * v).sum()
}

#[test]
fn nrc_matches_a_slow_reference() {
    for seed in 0..4u64 {
        let (m, d, n) = (
            30 + 5 * seed as usize,
            5 + seed as usize,
            2 + seed as usize % 3,
        );
        let h = gaussian(m, d, seed) + gaussian(1, d, seed + 100).row(0);
        let y = random_targets(m, n, 0.4, seed + 7).unwrap();
        let w = gaussian(n, d, seed + 3);
        let a = nrc1(h.view(), n).unwrap();
        let b = nrc1_ref(&h, n);
        assert!((a - b).abs() < 1e-12 * (1.0 + b), "nrc1 {a} vs {b}");
        let a = nrc2(h.view(), w.view()).unwrap();
        let b = nrc2_ref(&h, &w);
        assert!((a - b).abs() < 1e-11 * (1.0 + b), "nrc2 {a} vs {b}");
        // Fixed gamma: equal to rounding; minimised: equal to a 20001-point grid search.
        let sigma = ufm::metrics::nrc::target_covariance(y.view()).unwrap();
        let lmin = jacobi(&sigma).0.into_iter().fold(f64::INFINITY, f64::min);
        let g = 0.3 * lmin;
        let a = nrc3(w.view(), y.view(), Some(g)).unwrap().value;
        let b = nrc3_ref(&w, &y, g);
        assert!((a - b).abs() < 1e-12 * (1.0 + b), "nrc3(gamma) {a} vs {b}");
        let opt = nrc3(w.view(), y.view(), None).unwrap();
        let grid = (0..=20_000)
            .map(|i| nrc3_ref(&w, &y, lmin * (1.0 - 1e-12) * i as f64 / 20_000.0))
            .fold(f64::INFINITY, f64::min);
        assert!(
            opt.value <= grid + 1e-12,
            "nrc3 {} vs grid {grid}",
            opt.value
        );
        assert!(
            grid - opt.value < 1e-6 * (1.0 + grid),
            "nrc3 {} vs grid {grid}",
            opt.value
        );
        assert!((opt.gamma_max - lmin).abs() < 1e-12 * (1.0 + lmin));
    }
}

#[test]
fn bad_input_is_an_error() {
    let y = gaussian(10, 2, 0);
    assert!(RegressionProblem::new(y.clone(), 0, 1e-3, 1e-3, true).is_err());
    assert!(RegressionProblem::new(y.clone(), 3, -1.0, 1e-3, true).is_err());
    let mut bad = y.clone();
    bad[[3, 1]] = f64::NAN;
    let e = RegressionProblem::new(bad, 3, 1e-3, 1e-3, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sample 3"), "{e}");
    let p = RegressionProblem::new(y.clone(), 3, 0.0, 1e-3, true).unwrap();
    assert!(closed_form(&p).is_err());
    let h = gaussian(9, 3, 1);
    assert!(nrc_metrics(h.view(), y.view(), None, None).is_err());
    let w = Array2::<f64>::zeros((2, 3));
    let h = gaussian(10, 3, 1);
    assert!(nrc2(h.view(), w.view()).is_err());
}
