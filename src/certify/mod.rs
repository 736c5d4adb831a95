//! Certified global optimality for any UFM instance with a loss convex in the logits, through
//! the convex (nuclear-norm) reformulation.
//!
//! For every inner dimension $d$ and every $Z\in\mathbb R^{K\times N}$ of rank at most $d$,
//! $$\min_{W\in\mathbb R^{K\times d},\,H\in\mathbb R^{d\times N}:\ WH=Z}\ \frac{\lambda_W}2\lVert W\rVert_F^2+\frac{\lambda_H}2\lVert H\rVert_F^2=\sqrt{\lambda_W\lambda_H}\,\lVert Z\rVert_*$$
//! (Srebro, Rennie & Jaakkola 2005; Recht, Fazel & Parrilo 2010, Lemma 5.1), and for rank $>d$
//! no factorization exists. Hence the convex problem
//! $$P^\star=\min_{Z\in\mathbb R^{K\times N},\,b}\ \frac1N\sum_{i=1}^N\ell(z_i+b,y_i)+\sqrt{\lambda_W\lambda_H}\,\lVert Z\rVert_*+\frac{\lambda_b}2\lVert b\rVert^2$$
//! is a **lower bound on the UFM optimum for every $d$**, with equality when it has a minimizer of
//! rank $\le d$ (always when $d\ge K$). This is the convexification behind Zhu et al. (NeurIPS 2021)
//! §3 and the ground-truth oracle of Hong & Ling (arXiv 2309.09725, via cvxpy). It needs
//! $\ell(\cdot,y)$ convex: cross-entropy, MSE, label smoothing and focal with $\gamma=0$ are; focal
//! with $\gamma>0$ is not and is refused.
//!
//! [`certify`] solves the non-convex UFM with [`crate::solver::driver::solve`] and the convex
//! problem with [`convex::solve_convex`] (FISTA + singular-value thresholding, stopped by a
//! certified Fenchel duality gap), factors the convex optimum into balanced $(W,H)$
//! ([`factor`]), evaluates dual points also at the non-convex solution's logits
//! ([`nonconvex_dual_bound`]) and at a Newton polish of the factored optimum ([`polish`]), and
//! reports the largest certified lower bound $D\le P^\star\le f^\star_{\text{UFM}}$ and the certified
//! gap $f(x_{\text{non-convex}})-D\ge f(x_{\text{non-convex}})-f^\star_{\text{UFM}}$. Every bound is a
//! Fenchel dual value at a dual-feasible point, so it is valid however the points were found.
//! [`imbalance`] sweeps the imbalance ratio to show minority collapse (Fang et al., PNAS 2021).

pub mod convex;
pub mod factor;
pub mod imbalance;

pub use convex::{
    solve_convex, ConvexOptions, ConvexProblem, ConvexSolution, DualBound, Representation,
};
pub use factor::{balanced_factors, numerical_rank, BalancedFactors};

use crate::error::Result;
use crate::metrics::distance::procrustes_distance;
use crate::solver::{solve, SolveSpec, SolveSummary};
use crate::ufm::{Loss, UfmProblem};
use ndarray::{concatenate, s, Array1, Array2, ArrayView2, Axis};
use serde::Serialize;

/// Settings of [`certify`].
#[derive(Clone, Debug, Serialize)]
pub struct CertifySpec {
    /// How to solve the non-convex UFM.
    pub solve: SolveSpec,
    /// How to solve the convex problem.
    pub convex: ConvexOptions,
    /// Column representation of the convex problem.
    pub representation: Representation,
    /// Singular values $\le$ `rank_tol`$\cdot\sigma_1$ count as zero in the numerical rank.
    pub rank_tol: f64,
    /// Polish the factored convex optimum with trust-region Newton (see [`polish`]).
    pub polish: bool,
    /// The non-convex solution is certified optimal when its certified gap is at most
    /// `gap_tol`$\cdot\max(1,|D|)$.
    pub gap_tol: f64,
}

impl Default for CertifySpec {
    fn default() -> Self {
        CertifySpec {
            solve: SolveSpec::default(),
            convex: ConvexOptions::default(),
            representation: Representation::ClassCollapsed,
            rank_tol: 1e-6,
            gap_tol: 1e-8,
            polish: true,
        }
    }
}

/// Distance between the non-convex solution and the factored convex optimum, up to rotation.
#[derive(Clone, Debug, Serialize)]
pub struct SolutionDistance {
    /// $\min_{R\in O(m)}\lVert[W;H^\top]R-[W_c;H_c^\top]\rVert_F/\lVert[W_c;H_c^\top]\rVert_F$ with both
    /// padded by zero columns to $m=\max(d,r)$ (absolute when the convex optimum is zero).
    pub wh_relative: f64,
    /// The same for $W$ alone.
    pub w_relative: f64,
    /// $\lVert b-b_c\rVert$, modulo constant vectors for softmax losses with $\lambda_b=0$
    /// (the loss is invariant under $b\mapsto b+\beta\mathbf 1$ there).
    pub bias: f64,
    /// The common width $m$ of the comparison.
    pub width: usize,
}

/// Everything `ufm certify --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct CertifyReport {
    /// $f$ at the non-convex solver's point.
    pub nonconvex_objective: f64,
    /// $P$ at the convex solver's point ($\ge P^\star$).
    pub convex_objective: f64,
    /// Certified $D\le P^\star\le f^\star_{\text{UFM}}$ (valid for every $d$): the larger of the two
    /// bounds below.
    pub lower_bound: f64,
    /// The bound from the convex solver's dual point.
    pub convex_lower_bound: f64,
    /// The bound from the dual point built at the non-convex solution's $Z=WH$, $b$ (see
    /// [`nonconvex_dual_bound`]).
    pub nonconvex_dual_bound: f64,
    /// The Newton polish of the factored convex optimum, if run.
    pub polished: Option<Polish>,
    /// `convex_objective - convex_lower_bound`: certified accuracy of the convex solve alone.
    pub convex_gap: f64,
    /// `nonconvex_objective - lower_bound` $\ge f-f^\star_{\text{UFM}}$ (tight only when attained).
    pub certified_gap: f64,
    /// Whether `certified_gap` $\le$ `gap_tol`$\cdot\max(1,|D|)$: the non-convex point is a global
    /// minimizer to that tolerance.
    pub certified_optimal: bool,
    /// Numerical rank $r$ of the convex optimum.
    pub rank: usize,
    /// The relative tolerance that defines `rank`.
    pub rank_tol: f64,
    /// Singular values of the convex optimum $Z$ (descending).
    pub singular_values: Vec<f64>,
    /// The UFM's feature dimension $d$.
    pub feature_dim: usize,
    /// $r\le d$: the bound is attained by the factored convex optimum (then $P^\star=f^\star_{\text{UFM}}$).
    /// When false the lower bound is a bound only.
    pub attained: bool,
    /// UFM objective of the factored convex optimum (a UFM point; only when `attained`):
    /// an upper bound on $f^\star_{\text{UFM}}$.
    pub factored_objective: Option<f64>,
    /// Distance between the two solutions up to rotation.
    pub distance: SolutionDistance,
    /// The non-convex solve (objective, gradient norm, NC metrics, ...).
    pub nonconvex: SolveSummary,
    /// The convex solve.
    pub convex: ConvexSolution,
    /// The settings.
    pub spec: CertifySpec,
}

/// [`certify`]'s result: the report and the two solutions.
pub struct CertifyOutcome {
    /// The report.
    pub report: CertifyReport,
    /// Non-convex solution $x=(W,H^\top,b)$.
    pub x_nonconvex: Vec<f64>,
    /// The factored convex optimum, $W$ ($K\times m$) and $H^\top$ ($N\times m$), $m=\max(d,r)$.
    pub factors: BalancedFactors,
}

/// Solves `p` non-convexly and convexly and certifies the non-convex answer (see the
/// [module docs](self)).
pub fn certify(p: &UfmProblem, spec: &CertifySpec) -> Result<CertifyOutcome> {
    let cp = ConvexProblem::new(p, spec.representation)?;
    let cvx = solve_convex(&cp, &spec.convex, None)?;
    let nc = solve(p, &spec.solve, None)?;
    let d = p.feature_dim();
    let rank = numerical_rank(&cvx.singular_values, spec.rank_tol);
    let attained = rank <= d;
    let width = d.max(rank);
    let factors = balanced_factors(p, &cp, &cvx.z_t, rank, width)?;
    let factored_objective = if attained {
        Some(p.value(&factored_point(p, &factors, &cvx.b)?))
    } else {
        None
    };
    let distance = solution_distance(p, &nc.x, &factors, &cvx.b)?;
    let nonconvex_dual_bound = nonconvex_dual_bound(p, &nc.x)?;
    let polished = if spec.polish && rank > 0 {
        Some(polish(p, &cp, &cvx, rank)?)
    } else {
        None
    };
    let lower_bound = [
        Some(cvx.lower_bound),
        Some(nonconvex_dual_bound),
        polished.as_ref().map(|x| x.dual_bound),
    ]
    .into_iter()
    .flatten()
    .fold(f64::NEG_INFINITY, f64::max);
    let nonconvex_objective = nc.summary.objective;
    let certified_gap = nonconvex_objective - lower_bound;
    let report = CertifyReport {
        nonconvex_objective,
        convex_objective: cvx.primal,
        lower_bound,
        convex_lower_bound: cvx.lower_bound,
        nonconvex_dual_bound,
        polished,
        convex_gap: cvx.gap,
        certified_gap,
        certified_optimal: certified_gap <= spec.gap_tol * lower_bound.abs().max(1.0),
        rank,
        rank_tol: spec.rank_tol,
        singular_values: cvx.singular_values.clone(),
        feature_dim: d,
        attained,
        factored_objective,
        distance,
        nonconvex: nc.summary,
        convex: cvx,
        spec: spec.clone(),
    };
    Ok(CertifyOutcome {
        report,
        x_nonconvex: nc.x,
        factors,
    })
}

/// Result of [`polish`].
#[derive(Clone, Debug, Serialize)]
pub struct Polish {
    /// Inner dimension $r$ of the polished UFM point.
    pub dim: usize,
    /// Its UFM objective (a point of the UFM with $d=r$: an upper bound on $P^\star$).
    pub objective: f64,
    /// $\lVert\nabla f\rVert$ at the polished point.
    pub grad_norm: f64,
    /// Newton iterations.
    pub iterations: usize,
    /// The certified bound from the dual point at the polished point.
    pub dual_bound: f64,
}

/// Polishes the factored convex optimum: the rank-$r$ balanced factorization is (near) a
/// critical point of the UFM with inner dimension $d=r$, where trust-region Newton converges
/// quadratically; the dual point at the polished logits ([`nonconvex_dual_bound`]) then has a gap
/// of the order of $\tfrac12|\langle\nabla f,x\rangle|$. This sharpens the certificate on
/// ill-conditioned instances (tiny $\lambda$, very confident logits) where FISTA's iterates stall
/// in flat directions long before the duality gap reaches $10^{-10}$.
pub fn polish(
    p: &UfmProblem,
    cp: &ConvexProblem,
    cvx: &ConvexSolution,
    rank: usize,
) -> Result<Polish> {
    let pr = crate::ufm::UfmConfig {
        feature_dim: rank,
        ..p.config().clone()
    }
    .build()?;
    let f = balanced_factors(p, cp, &cvx.z_t, rank, rank)?;
    let b = Array1::from(cvx.b.clone());
    let mut x = pr.join(f.w.view(), f.ht.view(), Some(b.view()))?;
    let exec = crate::solver::Executor {
        tol: 1e-13,
        max_iter: 200,
        ..Default::default()
    };
    let mut newton = crate::solver::TrustRegionNewton::new(1.0, 1000)?;
    let report = exec.run(&pr, &mut newton, &mut x, &mut [])?;
    Ok(Polish {
        dim: rank,
        objective: report.objective,
        grad_norm: report.grad_norm,
        iterations: report.iterations,
        dual_bound: nonconvex_dual_bound(&pr, &x)?,
    })
}

/// A certified lower bound on $P^\star$ (hence on the UFM optimum for every $d$) from the dual
/// point built at the logits of a UFM point $x=(W,H,b)$, i.e. at $Z=WH$ in the per-sample
/// representation.
///
/// At a critical point of the UFM, $\nabla_W f=GH^\top+\lambda_WW=0$ and
/// $\nabla_Hf=W^\top G+\lambda_HH=0$ with $G=\nabla\mathcal L(WH+b\mathbf 1^\top)$ force the singular values
/// of $G$ on the range of $W$ to equal $\tau$, so when in addition $\lVert G\rVert_2\le\tau$ this dual
/// point is (near) optimal and the bound is tight: the classical global-optimality test for
/// Burer–Monteiro factorizations. It inherits the accuracy of the non-convex solver, which is
/// useful on ill-conditioned instances where first-order convex solvers converge slowly.
pub fn nonconvex_dual_bound(p: &UfmProblem, x: &[f64]) -> Result<f64> {
    p.check_len("point", x)?;
    let cp = ConvexProblem::new(p, Representation::PerSample)?;
    let (w, ht, b) = p.split(x);
    let zt = ht.dot(&w.t());
    let b: Vec<f64> = b.map_or_else(|| vec![0.0; p.n_classes()], |b| b.to_vec());
    Ok(cp.dual_bound(zt.view(), &b)?.value)
}

/// The factored convex optimum as a UFM parameter vector (requires width $=d$).
pub fn factored_point(p: &UfmProblem, f: &BalancedFactors, b: &[f64]) -> Result<Vec<f64>> {
    let b = Array1::from(b.to_vec());
    let d = p.feature_dim();
    p.join(
        f.w.slice(s![.., ..d.min(f.w.ncols())]),
        f.ht.slice(s![.., ..d.min(f.ht.ncols())]),
        Some(b.view()),
    )
}

fn pad(a: ArrayView2<f64>, width: usize) -> Array2<f64> {
    let mut out = Array2::zeros((a.nrows(), width));
    out.slice_mut(s![.., ..a.ncols()]).assign(&a);
    out
}

/// Distance between a UFM point and the factored convex optimum, up to rotation.
pub fn solution_distance(
    p: &UfmProblem,
    x: &[f64],
    f: &BalancedFactors,
    b_convex: &[f64],
) -> Result<SolutionDistance> {
    p.check_len("point", x)?;
    let (w, ht, b) = p.split(x);
    let width = f.w.ncols().max(w.ncols());
    let (w, ht) = (pad(w, width), pad(ht, width));
    let (wc, hc) = (pad(f.w.view(), width), pad(f.ht.view(), width));
    let xs = concatenate(Axis(0), &[w.view(), ht.view()]).expect("same width");
    let ys = concatenate(Axis(0), &[wc.view(), hc.view()]).expect("same width");
    let fro = |a: ArrayView2<f64>| a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let rel = |num: f64, den: f64| if den > 0.0 { num / den } else { num };
    let wh_relative = rel(procrustes_distance(xs.view(), ys.view())?, fro(ys.view()));
    let w_relative = rel(procrustes_distance(w.view(), wc.view())?, fro(wc.view()));
    let bias = match b {
        None => 0.0,
        Some(b) => {
            let mut diff: Vec<f64> = b.iter().zip(b_convex).map(|(a, c)| a - c).collect();
            let free_shift = p.lambda_b() == 0.0 && !matches!(p.loss(), Loss::Mse);
            if free_shift {
                let mean = diff.iter().sum::<f64>() / diff.len() as f64;
                diff.iter_mut().for_each(|v| *v -= mean);
            }
            diff.iter().map(|v| v * v).sum::<f64>().sqrt()
        }
    };
    Ok(SolutionDistance {
        wh_relative,
        w_relative,
        bias,
        width,
    })
}
