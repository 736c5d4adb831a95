//! The convex reformulation and its certificate: closed forms, agreement with the non-convex
//! solvers, validity of the lower bound (weak duality), rank reporting, refusal of focal loss.

use rand::{RngExt, SeedableRng};
use ufm::certify::imbalance::{imbalance_sweep, log_grid, read_csv, write_csv, ImbalanceSpec};
use ufm::certify::{
    certify, nonconvex_dual_bound, solve_convex, CertifySpec, ConvexOptions, ConvexProblem,
    Representation,
};
use ufm::solver::{OptimizerSpec, SolveSpec};
use ufm::ufm::{global_minimum, Loss, UfmConfig, UfmProblem};

fn convex(p: &UfmProblem, repr: Representation) -> ufm::certify::ConvexSolution {
    let cp = ConvexProblem::new(p, repr).unwrap();
    solve_convex(&cp, &ConvexOptions::default(), None).unwrap()
}

#[test]
fn convex_optimum_equals_closed_form_on_balanced_instances() {
    // (loss, lambda_W, lambda_H, lambda_b, bias, K, n, d): CE with and without λ_b, the zero
    // regime K sqrt(n λW λH) >= 1, MSE with a free bias and without bias.
    let cases = [
        (Loss::CrossEntropy, 5e-3, 5e-3, 5e-3, true, 4, 10, 8),
        (Loss::CrossEntropy, 1e-3, 2e-3, 0.0, true, 10, 5, 16),
        (Loss::CrossEntropy, 5e-4, 5e-4, 5e-4, true, 10, 20, 12),
        (Loss::CrossEntropy, 0.1, 0.1, 0.1, true, 4, 10, 8),
        (Loss::Focal { gamma: 0.0 }, 1e-2, 1e-3, 0.0, true, 3, 20, 3),
        (Loss::Mse, 5e-3, 5e-3, 0.0, true, 4, 10, 8),
        (Loss::Mse, 1e-3, 4e-3, 0.0, true, 10, 5, 12),
        (Loss::Mse, 5e-3, 5e-3, 0.0, false, 4, 10, 8),
        (Loss::Mse, 0.05, 0.05, 0.0, true, 4, 10, 8),
    ];
    for (loss, lw, lh, lb, bias, k, n, d) in cases {
        let p = UfmConfig::balanced(k, n, d)
            .lambdas(lw, lh, lb)
            .loss(loss)
            .bias(bias)
            .build()
            .unwrap();
        let fstar = global_minimum(&p).unwrap().objective;
        for repr in [Representation::ClassCollapsed, Representation::PerSample] {
            let s = convex(&p, repr);
            assert!(s.converged, "{loss} {repr:?}: gap {}", s.gap);
            let tol = 1e-9 * fstar;
            assert!(
                (s.primal - fstar).abs() <= tol,
                "{loss} lb={lb} bias={bias} {repr:?}: P {} vs closed form {fstar}",
                s.primal
            );
            // The certified bound is below the true optimum (up to rounding) and within 1e-9.
            assert!(
                s.lower_bound <= fstar * (1.0 + 1e-13),
                "{loss}: D {} > f* {fstar}",
                s.lower_bound
            );
            assert!(
                fstar - s.lower_bound <= tol,
                "{loss}: D {} vs {fstar}",
                s.lower_bound
            );
        }
    }
}

/// Random imbalanced instance: K in 3..=5, class sizes 1..=60, λ log-uniform, d = K + 1.
fn random_instance(seed: u64, loss: Loss, bias: bool) -> UfmProblem {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let k = rng.random_range(3..=5usize);
    let sizes: Vec<usize> = (0..k).map(|_| rng.random_range(1..=60usize)).collect();
    let mut lam = || 10f64.powf(rng.random_range(-3.0..-1.7));
    let (lw, lh) = (lam(), lam());
    let lb = if seed.is_multiple_of(3) { 0.0 } else { lam() };
    UfmConfig::with_class_sizes(sizes, k + 1)
        .lambdas(lw, lh, lb)
        .loss(loss)
        .bias(bias)
        .build()
        .unwrap()
}

#[test]
fn nonconvex_solvers_agree_with_the_certified_convex_optimum_on_imbalanced_instances() {
    let losses = [
        (Loss::CrossEntropy, true),
        (Loss::LabelSmoothing { alpha: 0.1 }, true),
        (Loss::Mse, true),
        (Loss::Mse, false),
        (Loss::CrossEntropy, false),
    ];
    for seed in 0..10u64 {
        let (loss, bias) = losses[seed as usize % losses.len()];
        let p = random_instance(seed, loss, bias);
        for optimizer in [
            OptimizerSpec::Lbfgs { memory: 10 },
            OptimizerSpec::Newton {
                radius: 1.0,
                max_cg: 500,
            },
        ] {
            let spec = CertifySpec {
                solve: SolveSpec {
                    optimizer,
                    seed,
                    tol: 1e-10,
                    ..SolveSpec::default()
                },
                ..CertifySpec::default()
            };
            let out = certify(&p, &spec).unwrap();
            let r = &out.report;
            let what = format!(
                "seed {seed} {loss} bias={bias} {:?} {}",
                p.class_sizes(),
                optimizer.short_name()
            );
            assert!(r.convex.converged, "{what}: convex gap {}", r.convex_gap);
            assert!(r.attained, "{what}: rank {} > d", r.rank);
            let rel = (r.nonconvex_objective - r.convex_objective).abs() / r.convex_objective;
            assert!(
                rel <= 1e-8,
                "{what}: f {} vs P {} (rel {rel:e})",
                r.nonconvex_objective,
                r.convex_objective
            );
            // Weak duality: the bound never exceeds any objective value found.
            let best = r.nonconvex_objective.min(r.convex_objective);
            assert!(
                r.lower_bound <= best * (1.0 + 1e-14),
                "{what}: D {} > {best}",
                r.lower_bound
            );
            assert!(
                r.certified_gap <= 1e-8 * r.lower_bound,
                "{what}: certified gap {}",
                r.certified_gap
            );
            assert!(r.certified_optimal, "{what}");
            // The factored convex optimum is a UFM point attaining P (balanced factorization).
            let ff = r.factored_objective.unwrap();
            assert!(
                (ff - r.convex_objective).abs() <= 1e-11 * ff,
                "{what}: factored {ff} vs P {}",
                r.convex_objective
            );
            // Solutions agree up to rotation (flat directions limit this to ~ |grad| / curvature).
            assert!(
                r.distance.wh_relative < 1e-4,
                "{what}: distance {:?}",
                r.distance
            );
        }
    }
}

#[test]
fn lower_bound_never_exceeds_the_objective_at_any_point() {
    // Weak duality checked directly: bounds built from arbitrary (also far from optimal)
    // iterates, against the convex objective at other arbitrary points and the UFM objective at
    // random parameters (any d, including d < rank Z*).
    for seed in 0..12u64 {
        let loss = [
            Loss::CrossEntropy,
            Loss::LabelSmoothing { alpha: 0.3 },
            Loss::Mse,
        ][seed as usize % 3];
        let bias = seed % 4 != 1;
        let p0 = random_instance(seed, loss, bias);
        let cfg = p0.config().clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(100 + seed);
        for repr in [Representation::ClassCollapsed, Representation::PerSample] {
            let cp = ConvexProblem::new(&p0, repr).unwrap();
            let (m, k) = (cp.n_columns(), cp.n_classes());
            let mut rand_point = |scale: f64| {
                let z =
                    ndarray::Array2::from_shape_fn((m, k), |_| scale * rng.random_range(-1.0..1.0));
                let b: Vec<f64> = (0..k)
                    .map(|_| {
                        if bias {
                            scale * rng.random_range(-1.0..1.0)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                (z, b)
            };
            let mut bounds = vec![];
            let mut values = vec![];
            for scale in [0.1, 1.0, 10.0] {
                let (z, b) = rand_point(scale);
                bounds.push(cp.dual_bound(z.view(), &b).unwrap().value);
                values.push(cp.objective(z.view(), &b).unwrap());
            }
            let best = convex(&p0, repr);
            bounds.push(best.lower_bound);
            values.push(best.primal);
            for d in [1, 2, k + 1] {
                let p = UfmConfig {
                    feature_dim: d,
                    ..cfg.clone()
                }
                .build()
                .unwrap();
                for s in 0..3 {
                    let x: Vec<f64> = p.random_point(s, 0.5 + s as f64).unwrap();
                    values.push(p.value(&x));
                    bounds.push(nonconvex_dual_bound(&p, &x).unwrap());
                }
            }
            let max_d = bounds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min_p = values.iter().copied().fold(f64::INFINITY, f64::min);
            assert!(
                max_d <= min_p * (1.0 + 1e-14),
                "seed {seed} {loss} {repr:?}: D {max_d} > {min_p}"
            );
            assert!((best.primal - best.lower_bound) <= 1e-9 * best.primal);
        }
    }
}

#[test]
fn early_duality_gap_bounds_the_suboptimality() {
    // Stopped after a few iterations, the reported gap P - D must still bound P - P*.
    let p = UfmConfig::with_class_sizes(vec![200, 80, 20, 5], 4)
        .lambdas(1e-3, 2e-3, 1e-3)
        .build()
        .unwrap();
    let cp = ConvexProblem::new(&p, Representation::ClassCollapsed).unwrap();
    let star = solve_convex(&cp, &ConvexOptions::default(), None).unwrap();
    for iters in [1, 5, 20, 60] {
        let opts = ConvexOptions {
            max_iter: iters,
            gap_every: 1,
            ..ConvexOptions::default()
        };
        let s = solve_convex(&cp, &opts, None).unwrap();
        assert!(!s.converged || iters >= 20);
        let subopt = s.primal - star.primal;
        assert!(
            s.gap >= subopt - 1e-12,
            "{iters} iterations: gap {} < P - P* {subopt}",
            s.gap
        );
        assert!(s.lower_bound <= star.primal * (1.0 + 1e-14));
    }
}

#[test]
fn rank_above_d_is_reported_as_a_bound_not_attained() {
    // Balanced CE with K = 6: Z* is a rank-5 ETF, but d = 2.
    let p = UfmConfig::balanced(6, 10, 2)
        .lambdas(5e-3, 5e-3, 5e-4)
        .build()
        .unwrap();
    let out = certify(&p, &CertifySpec::default()).unwrap();
    let r = &out.report;
    assert_eq!(r.rank, 5, "singular values {:?}", r.singular_values);
    assert!(!r.attained && r.factored_objective.is_none());
    assert!(!r.certified_optimal);
    // Still a valid bound, and strictly below what a 2-dimensional UFM can reach here.
    assert!(r.lower_bound < r.nonconvex_objective - 1e-3);
    assert_eq!(r.distance.width, 5);
    // At d = K the same bound is attained and equals the closed form.
    let p6 = UfmConfig::balanced(6, 10, 6)
        .lambdas(5e-3, 5e-3, 5e-4)
        .build()
        .unwrap();
    let fstar = global_minimum(&p6).unwrap().objective;
    assert!((r.lower_bound - fstar).abs() <= 1e-9 * fstar);
}

#[test]
fn focal_loss_is_refused_with_the_reason_and_gamma_zero_is_accepted() {
    let p = UfmConfig::balanced(3, 5, 3)
        .loss(Loss::Focal { gamma: 2.0 })
        .build()
        .unwrap();
    let e = ConvexProblem::new(&p, Representation::ClassCollapsed)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not convex in the logits"), "{e}");
    let e = certify(&p, &CertifySpec::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not convex"), "{e}");
    let p0 = UfmConfig::balanced(3, 5, 3)
        .loss(Loss::Focal { gamma: 0.0 })
        .build()
        .unwrap();
    assert!(ConvexProblem::new(&p0, Representation::ClassCollapsed).is_ok());
    let pz = UfmConfig::balanced(3, 5, 3)
        .lambdas(0.0, 1e-3, 1e-3)
        .build()
        .unwrap();
    let e = ConvexProblem::new(&pz, Representation::ClassCollapsed)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lambda-w"), "{e}");
}

#[test]
fn minority_classifiers_collapse_as_the_imbalance_grows() {
    let spec = ImbalanceSpec {
        ratios: vec![1.0, 4.0, 10.0, 100.0],
        ..ImbalanceSpec::default()
    };
    let rows = imbalance_sweep(&spec).unwrap();
    // Balanced: a simplex ETF, all cosines -1/(K-1) and equal norms.
    let r0 = &rows[0];
    for c in [r0.cos_major, r0.cos_minor, r0.cos_cross] {
        assert!((c + 1.0 / 3.0).abs() < 1e-6, "{r0:?}");
    }
    assert!((r0.w_norm_major - r0.w_norm_minor).abs() < 1e-6 * r0.w_norm_major);
    // Growing imbalance: minority rows turn towards each other and shrink, then vanish.
    assert!(rows[1].cos_minor > r0.cos_minor + 0.1 && rows[1].w_norm_minor < r0.w_norm_minor);
    assert!((rows[2].cos_minor - 1.0).abs() < 1e-6, "{:?}", rows[2]);
    assert!(rows[3].w_norm_minor < 1e-6 * rows[3].w_norm_major && rows[3].cos_minor.is_nan());
    // Every point is a certified optimum.
    for r in &rows {
        assert!(r.objective - r.lower_bound <= 1e-9 * r.objective);
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("imb.csv");
    write_csv(&csv, &rows).unwrap();
    let back = read_csv(&csv).unwrap();
    assert_eq!(back.len(), rows.len());
    assert!((back[2].cos_minor - rows[2].cos_minor).abs() < 1e-15 && back[3].cos_minor.is_nan());
    std::fs::write(&csv, "ratio,oops\n1,2\n").unwrap();
    assert!(read_csv(&csv).unwrap_err().to_string().contains("header"));
    assert_eq!(
        log_grid(1.0, 100.0, 3),
        vec![1.0, 10.000000000000002, 100.00000000000004]
    );
}

#[test]
fn newton_polish_certifies_ill_conditioned_instances_where_fista_stalls() {
    // Tiny λ and strong imbalance: confident logits, nearly flat directions. FISTA's own
    // duality gap stays far above 1e-10 after a few thousand iterations; the dual point at the
    // Newton-polished factored optimum certifies to ~1e-11 relative.
    let p = UfmConfig::with_class_sizes(vec![100, 50, 20, 10, 5, 2, 1], 8)
        .lambdas(1e-5, 1e-5, 1e-5)
        .build()
        .unwrap();
    let spec = CertifySpec {
        convex: ConvexOptions {
            max_iter: 3000,
            ..ConvexOptions::default()
        },
        solve: SolveSpec {
            optimizer: OptimizerSpec::Newton {
                radius: 1.0,
                max_cg: 500,
            },
            ..SolveSpec::default()
        },
        ..CertifySpec::default()
    };
    let r = certify(&p, &spec).unwrap().report;
    let pl = r.polished.as_ref().unwrap();
    assert!(
        r.convex_gap > 1e-10 * r.convex_objective,
        "FISTA gap {}",
        r.convex_gap
    );
    assert_eq!(r.lower_bound, pl.dual_bound);
    let best = r
        .nonconvex_objective
        .min(r.convex_objective)
        .min(pl.objective);
    assert!(r.lower_bound <= best * (1.0 + 1e-14));
    assert!(
        best - r.lower_bound <= 1e-10 * best,
        "gap {}",
        best - r.lower_bound
    );
    assert!(r.certified_optimal && r.attained);
    // Without the polish the bound is the weaker one.
    let r2 = certify(
        &p,
        &CertifySpec {
            polish: false,
            ..spec
        },
    )
    .unwrap()
    .report;
    assert!(r2.polished.is_none() && r2.lower_bound <= r.lower_bound);
}
