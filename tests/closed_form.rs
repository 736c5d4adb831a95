//! Claims (Zhu et al. 2021 Thm 3.1; MSE closed forms): from random starts the solvers reach the
//! closed-form optimal value to 1e-8 relative, and the solution has the predicted geometry:
//! a simplex ETF (orthogonal frame for MSE without bias), features h_{k,i} = c w_k with
//! c = sqrt(λ_W/(nλ_H)), and the predicted bias. Above K√(nλ_Wλ_H) ≥ 1 they go to zero.

use ufm::metrics::ufm_nc;
use ufm::solver::{solve, OptimizerSpec, SolveSpec};
use ufm::ufm::{global_minimum, Loss, UfmConfig, UfmProblem};

struct Case {
    k: usize,
    d: usize,
    n: usize,
    lw: f64,
    lh: f64,
    lb: f64,
    loss: Loss,
    bias: bool,
}

fn case(
    k: usize,
    d: usize,
    n: usize,
    (lw, lh, lb): (f64, f64, f64),
    loss: Loss,
    bias: bool,
) -> Case {
    Case {
        k,
        d,
        n,
        lw,
        lh,
        lb,
        loss,
        bias,
    }
}

fn problem(c: &Case) -> UfmProblem {
    UfmConfig::balanced(c.k, c.n, c.d)
        .lambdas(c.lw, c.lh, c.lb)
        .loss(c.loss)
        .bias(c.bias)
        .build()
        .unwrap()
}

fn optimizers() -> [OptimizerSpec; 2] {
    [
        OptimizerSpec::Lbfgs { memory: 10 },
        OptimizerSpec::Newton {
            radius: 1.0,
            max_cg: 500,
        },
    ]
}

/// Checks value, frame, self-duality and bias of a solved instance.
fn check_solution(c: &Case, opt: OptimizerSpec, seed: u64) {
    let p = problem(c);
    let gm = global_minimum(&p).expect("closed form exists");
    let spec = SolveSpec {
        optimizer: opt,
        seed,
        tol: 1e-10,
        max_iter: 20_000,
        ..SolveSpec::default()
    };
    let out = solve(&p, &spec, None).unwrap();
    let s = &out.summary;
    let tag = format!(
        "K={} d={} n={} loss={} bias={} {} seed {seed}",
        c.k,
        c.d,
        c.n,
        c.loss,
        c.bias,
        opt.short_name()
    );
    assert!(
        s.converged && s.grad_norm <= 1e-10,
        "{tag}: not converged to |grad| <= 1e-10: {:?}",
        s.report
    );
    let rel = (s.objective - gm.objective).abs() / gm.objective.abs();
    assert!(
        rel <= 1e-8,
        "{tag}: f = {} vs f* = {} (rel {rel:e})",
        s.objective,
        gm.objective
    );
    assert_eq!(s.is_global_min, Some(true), "{tag}");

    let nc = ufm_nc(&p, &out.x).unwrap();
    let (nc2_w, nc3) = (nc.nc2_w.unwrap(), nc.nc3.unwrap());
    if c.loss == Loss::Mse && !c.bias {
        // Orthogonal frame: ETF error of W Wᵀ ∝ I is sqrt(2 − 2 sqrt((K−1)/K)).
        let k = c.k as f64;
        let want = (2.0 - 2.0 * ((k - 1.0) / k).sqrt()).sqrt();
        assert!(
            (nc2_w - want).abs() < 1e-6,
            "{tag}: nc2_w {nc2_w} vs orthogonal-frame value {want}"
        );
    } else {
        assert!(
            nc2_w <= 1e-6 && nc3 <= 1e-6,
            "{tag}: nc2_w {nc2_w} nc3 {nc3}"
        );
    }
    assert!(nc.nc1 <= 1e-10, "{tag}: nc1 {}", nc.nc1);

    // h_{k,i} = c w_k and ‖w_k‖ as predicted.
    let (w, ht, b) = p.split(&out.x);
    let cscale = (c.lw / (c.n as f64 * c.lh)).sqrt();
    let mut worst = 0.0f64;
    for (i, &y) in p.labels().iter().enumerate() {
        for j in 0..c.d {
            worst = worst.max((ht[[i, j]] - cscale * w[[y as usize, j]]).abs());
        }
    }
    assert!(
        worst <= 1e-6 * gm.row_norm.max(1.0),
        "{tag}: max |h - c w| = {worst}"
    );
    for row in w.outer_iter() {
        let nrm = row.dot(&row).sqrt();
        assert!(
            (nrm - gm.row_norm).abs() <= 1e-6 * gm.row_norm,
            "{tag}: |w_k| = {nrm} vs {}",
            gm.row_norm
        );
    }
    if let Some(b) = b {
        let mean = b.sum() / c.k as f64;
        let spread = b.iter().map(|v| (v - mean).abs()).fold(0.0, f64::max);
        assert!(spread <= 1e-6, "{tag}: bias not constant: {b}");
        if !gm.bias_free_along_ones {
            assert!(
                (mean - gm.bias).abs() <= 1e-6,
                "{tag}: bias {mean} vs {}",
                gm.bias
            );
        }
    }
}

#[test]
fn cross_entropy_solvers_reach_the_etf_global_minimum() {
    let cases = [
        case(4, 3, 10, (5e-3, 5e-3, 5e-3), Loss::CrossEntropy, true), // d = K − 1
        case(4, 4, 10, (5e-3, 5e-3, 5e-3), Loss::CrossEntropy, true), // d = K
        case(4, 8, 10, (5e-3, 5e-3, 5e-3), Loss::CrossEntropy, true), // d > K
        case(10, 16, 5, (1e-3, 2e-3, 1e-3), Loss::CrossEntropy, true),
        case(10, 12, 20, (5e-4, 5e-4, 5e-4), Loss::CrossEntropy, true),
        case(3, 3, 20, (1e-2, 1e-3, 0.0), Loss::CrossEntropy, true), // λ_b = 0: any constant bias
        case(5, 6, 8, (2e-3, 1e-3, 1e-3), Loss::CrossEntropy, false), // no bias
    ];
    for c in &cases {
        for opt in optimizers() {
            for seed in [1, 2] {
                check_solution(c, opt, seed);
            }
        }
    }
}

#[test]
fn mse_solvers_reach_the_closed_form() {
    let cases = [
        case(4, 8, 10, (5e-3, 5e-3, 0.0), Loss::Mse, true),
        case(10, 12, 5, (1e-3, 4e-3, 0.0), Loss::Mse, true),
        case(4, 3, 10, (5e-3, 5e-3, 0.0), Loss::Mse, true), // d = K − 1
        case(4, 8, 10, (5e-3, 5e-3, 0.0), Loss::Mse, false), // orthogonal frame
        case(4, 4, 10, (2e-3, 5e-3, 0.0), Loss::Mse, false), // d = K
    ];
    for c in &cases {
        for opt in optimizers() {
            check_solution(c, opt, 3);
        }
    }
}

#[test]
fn gradient_descent_variants_reach_the_global_minimum() {
    let c = case(4, 6, 10, (5e-3, 5e-3, 5e-3), Loss::CrossEntropy, true);
    let p = problem(&c);
    let fstar = global_minimum(&p).unwrap().objective;
    for opt in [
        OptimizerSpec::GdBacktracking { lr: 1.0 },
        OptimizerSpec::Gd { lr: 2.0 },
    ] {
        let spec = SolveSpec {
            optimizer: opt,
            seed: 4,
            tol: 1e-9,
            max_iter: 200_000,
            ..SolveSpec::default()
        };
        let s = solve(&p, &spec, None).unwrap().summary;
        assert!(
            (s.objective - fstar).abs() <= 1e-8 * fstar,
            "{}: {} vs {fstar}",
            opt.short_name(),
            s.objective
        );
    }
}

#[test]
fn above_the_threshold_the_solvers_go_to_zero() {
    // K sqrt(n λ_W λ_H) = 4 · sqrt(10 · 0.01) = 1.26 ≥ 1.
    for (loss, lb) in [(Loss::CrossEntropy, 0.1), (Loss::Mse, 0.0)] {
        let p = UfmConfig::balanced(4, 10, 6)
            .lambdas(0.1, 0.1, lb)
            .loss(loss)
            .build()
            .unwrap();
        let gm = global_minimum(&p).unwrap();
        assert!(gm.zero_threshold >= 1.0 && gm.w_norm_sq == 0.0);
        for opt in optimizers() {
            let spec = SolveSpec {
                optimizer: opt,
                seed: 7,
                tol: 1e-10,
                ..SolveSpec::default()
            };
            let out = solve(&p, &spec, None).unwrap();
            let (w, ht, _) = p.split(&out.x);
            let wn = w.iter().map(|v| v * v).sum::<f64>().sqrt();
            let hn = ht.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(
                wn < 1e-6 && hn < 1e-6,
                "{loss} {}: |W| {wn} |H| {hn}",
                opt.short_name()
            );
            assert!((out.summary.objective - gm.objective).abs() < 1e-10);
        }
    }
}

#[test]
fn f32_solver_reaches_the_optimum_to_single_precision() {
    let c = case(10, 12, 20, (5e-4, 5e-4, 5e-4), Loss::CrossEntropy, true);
    let p = problem(&c);
    let fstar = global_minimum(&p).unwrap().objective;
    let spec = SolveSpec {
        precision: ufm::solver::Precision::F32,
        tol: 1e-4,
        ..SolveSpec::default()
    };
    let s = solve(&p, &spec, None).unwrap().summary;
    assert!(s.converged);
    assert!(
        (s.objective - fstar).abs() <= 1e-4 * fstar,
        "{} vs {fstar}",
        s.objective
    );
}
