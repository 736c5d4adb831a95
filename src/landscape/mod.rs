//! The optimisation landscape of the UFM: Hessians, spectra, critical points, saddle escape and
//! random-initialisation sweeps.
//!
//! Zhu et al. (NeurIPS 2021, *A Geometric Analysis of Neural Collapse with Unconstrained
//! Features*, Thm 3.2; $d=K$ by Gu & Shen 2024) show that for $d>K$ every critical point of the
//! regularised cross-entropy UFM is either a global minimizer (a simplex ETF) or a **strict
//! saddle**: $\lambda_{\min}\big(\nabla^2f\big)<0$. This module checks that claim on any instance.
//!
//! **Null space at a global minimizer.** $f(WR,R^\top H,b)=f(W,H,b)$ for every $R\in O(d)$, so the
//! minimizer set contains the $O(d)$-orbit of one minimizer. When $\operatorname{rank}W^\star=r$
//! the stabiliser is $O(d-r)$ and the orbit has dimension
//! $$\dim O(d)-\dim O(d-r)=\frac{d(d-1)}2-\frac{(d-r)(d-r-1)}2 ,$$
//! which for the simplex ETF ($r=K-1$, $d\ge K-1$) is $\frac{d(d-1)}2-\frac{(d-K+1)(d-K)}2$. Its
//! tangent space lies in the Hessian's null space. A softmax loss with an unregularised bias
//! ($\lambda_b=0$) is also invariant under $b\mapsto b+c\mathbf 1$: one more null direction
//! ([`bias_null_dim`]). [`HessianReport`] compares these with the measured near-zero count.
//!
//! | file | what |
//! |---|---|
//! | [`hessian`] | dense Hessian from exact HVPs |
//! | [`spectrum`](mod@spectrum) | full spectrum (faer), summary, dense-or-Lanczos analysis |
//! | [`lanczos`] | Lanczos with full reorthogonalisation for extreme eigenvalues |
//! | [`collapsed`] | exact spectrum at collapsed points (every critical point) from O(Kd) HVPs |
//! | [`critical`] | origin and rank-$r$ critical points, escape test |
//! | [`figures`] | convergence, spectra and success-rate figures from exported data |
//! | [`sweep`] | trials × optimizers × $(d,\lambda)$ grid, shards, merge, summary |

pub mod collapsed;
pub mod critical;
pub mod figures;
pub mod hessian;
pub mod lanczos;
pub mod spectrum;
pub mod sweep;

pub use critical::{analyse_saddle, catalogue, CriticalPoint, SaddleReport};
pub use hessian::{dense_hessian, DenseHessian};
pub use lanczos::{hessian_extremes, lanczos_extremes, LanczosOptions, LanczosResult};
pub use spectrum::{
    analyse_hessian, spectrum, HessianAnalysis, HessianOptions, Spectrum, SpectrumSummary,
};

use crate::error::Result;
use crate::ufm::{global_minimum, Frame, Loss, UfmProblem};
use serde::Serialize;

/// Dimension of the $O(d)$-orbit of the closed-form global minimizer,
/// $\frac{d(d-1)}2-\frac{(d-r)(d-r-1)}2$ with $r=\operatorname{rank}W^\star$ ($K-1$ for a simplex
/// ETF, $K$ for an orthogonal frame, $0$ at the zero solution). `None` without a closed form.
pub fn orbit_dim(p: &UfmProblem) -> Option<usize> {
    let g = global_minimum(p)?;
    let k = p.n_classes();
    let r = match g.frame {
        Frame::SimplexEtf => k - 1,
        Frame::Orthogonal => k,
        Frame::Zero => 0,
    };
    let d = p.feature_dim();
    (d >= r).then(|| d * (d - 1) / 2 - (d - r) * (d - r).saturating_sub(1) / 2)
}

/// $1$ when $f$ is invariant under $b\mapsto b+c\mathbf 1$ (softmax-based loss, bias present,
/// $\lambda_b=0$), else $0$.
pub fn bias_null_dim(p: &UfmProblem) -> usize {
    let shift_invariant = !matches!(p.loss(), Loss::Mse);
    usize::from(p.has_bias() && p.lambda_b() == 0.0 && shift_invariant)
}

/// What `ufm hessian` prints: the spectrum at a point next to the orbit dimension.
#[derive(Clone, Debug, Serialize)]
pub struct HessianReport {
    /// $f(x)$.
    pub objective: f64,
    /// $\lVert\nabla f(x)\rVert$.
    pub grad_norm: f64,
    /// $f^\star$ from the closed form, if any.
    pub global_min_objective: Option<f64>,
    /// $\lambda_{\min}$.
    pub lambda_min: f64,
    /// $\lambda_{\max}$.
    pub lambda_max: f64,
    /// Eigenvalues $<-\tau s$ (dense path).
    pub negative_count: Option<usize>,
    /// Eigenvalues with $|\lambda|\le\tau s$ (dense path).
    pub near_zero_count: Option<usize>,
    /// Dimension of the $O(d)$-orbit through the point: [`orbit_dim`] of the closed-form
    /// minimizer when theory gives one, otherwise $\frac{d(d-1)}2-\frac{(d-r)(d-r-1)}2$ with the
    /// measured rank $r$ of $W$ (see `orbit_source`).
    pub orbit_dim: Option<usize>,
    /// `closed-form` (rank of the theoretical minimizer) or `measured-rank` (numerical rank of
    /// $W$ at this point: singular values above $10^{-6}\sigma_{\max}$; a measurement, no theorem).
    pub orbit_source: &'static str,
    /// Rank of $W$ used for `orbit_dim`.
    pub orbit_rank: Option<usize>,
    /// Extra null direction from the bias shift ([`bias_null_dim`]).
    pub bias_null_dim: usize,
    /// Whether `near_zero_count == orbit_dim + bias_null_dim`.
    pub orbit_agrees: Option<bool>,
    /// Details of the spectrum.
    pub hessian: HessianAnalysis,
}

/// Spectrum of $\nabla^2 f(x)$ and the orbit comparison.
pub fn hessian_report(p: &UfmProblem, x: &[f64], opts: &HessianOptions) -> Result<HessianReport> {
    p.check_len("point", x)?;
    let mut g = vec![0.0; x.len()];
    let objective = p.value_grad(x, &mut g);
    let h = analyse_hessian(p, x, opts)?;
    let d = p.feature_dim();
    let orbit_of = |r: usize| d * (d - 1) / 2 - (d - r) * (d - r).saturating_sub(1) / 2;
    let (orbit, orbit_source, orbit_rank) = match orbit_dim(p) {
        Some(o) => {
            let r = (0..=d).find(|&r| orbit_of(r) == o);
            (Some(o), "closed-form", r)
        }
        None => {
            let (w, _, _) = p.split(x);
            let sv = crate::linalg::singular_values(w)?;
            let top = sv.first().copied().unwrap_or(0.0);
            let r = sv.iter().filter(|&&s| s > 1e-6 * top && top > 0.0).count();
            (Some(orbit_of(r)), "measured-rank", Some(r))
        }
    };
    let extra = bias_null_dim(p);
    Ok(HessianReport {
        objective,
        grad_norm: crate::real::norm(&g),
        global_min_objective: global_minimum(p).map(|g| g.objective),
        lambda_min: h.lambda_min,
        lambda_max: h.lambda_max,
        negative_count: h.negative_count,
        near_zero_count: h.near_zero_count,
        orbit_dim: orbit,
        orbit_source,
        orbit_rank,
        bias_null_dim: extra,
        orbit_agrees: match (orbit, h.near_zero_count) {
            (Some(o), Some(z)) => Some(o + extra == z),
            _ => None,
        },
        hessian: h,
    })
}

#[cfg(test)]
mod tests {
    use super::critical::newton_polish;
    use super::*;
    use crate::ufm::UfmConfig;

    /// Solves to ‖∇f‖ ≤ 1e-11 (L-BFGS then Newton) from a seeded random start.
    fn global_min_point(p: &UfmProblem, seed: u64) -> Vec<f64> {
        let mut x: Vec<f64> = p.random_point(seed, 1.0).unwrap();
        let g = newton_polish(p, &mut x, 1e-11).unwrap();
        assert!(g <= 1e-10, "not converged: {g}");
        x
    }

    #[test]
    fn global_min_hessian_null_space_is_rotation_orbit() {
        // (K, d, n, lambda_b): d = K-1, K, > K; lambda_b = 0 adds the bias-shift direction.
        for (k, d, n, lb) in [
            (3, 2, 4, 1e-3),
            (3, 3, 4, 1e-3),
            (4, 3, 3, 1e-3),
            (4, 4, 3, 1e-3),
            (4, 6, 2, 1e-3),
            (3, 5, 3, 0.0),
            (5, 7, 2, 2e-3),
        ] {
            let p = UfmConfig::balanced(k, n, d)
                .lambdas(5e-3, 1e-2, lb)
                .build()
                .unwrap();
            let x = global_min_point(&p, 11);
            let r = hessian_report(&p, &x, &HessianOptions::default()).unwrap();
            let fstar = r.global_min_objective.unwrap();
            assert!(
                (r.objective - fstar).abs() < 1e-10,
                "({k},{d},{n}) not global"
            );
            let tol = r.hessian.abs_tol.unwrap();
            assert!(
                r.lambda_min >= -tol,
                "({k},{d},{n}): lambda_min {}",
                r.lambda_min
            );
            assert_eq!(r.negative_count, Some(0));
            let s = d + 1 - k; // dim of the stabiliser O(d-K+1) is s(s-1)/2
            let expect = d * (d - 1) / 2 - s * s.saturating_sub(1) / 2 + usize::from(lb == 0.0);
            assert_eq!(
                r.near_zero_count,
                Some(expect),
                "({k},{d},{n},lb={lb}): near-zero {:?}, orbit {:?}; gap above the cluster {:?}, \
                 largest in cluster {:?}",
                r.near_zero_count,
                r.orbit_dim,
                r.hessian.smallest_nonzero_abs,
                r.hessian.largest_near_zero_abs
            );
            assert_eq!(r.orbit_agrees, Some(true));
            // The cluster is well separated from the rest of the spectrum.
            let (gap, inside) = (
                r.hessian.smallest_nonzero_abs.unwrap(),
                r.hessian.largest_near_zero_abs.unwrap_or(0.0),
            );
            assert!(gap > 1e3 * inside.max(1e-300) || inside == 0.0);
        }
    }

    #[test]
    fn measured_orbit_for_losses_without_a_closed_form() {
        // No theorem: we only check that the measured near-zero count equals the orbit dimension
        // for the measured rank of W (plus the bias shift), as observed for CE and MSE.
        for loss in [
            Loss::LabelSmoothing { alpha: 0.1 },
            Loss::Focal { gamma: 2.0 },
        ] {
            let p = UfmConfig::balanced(4, 3, 5)
                .lambdas(5e-3, 5e-3, 0.0)
                .loss(loss)
                .build()
                .unwrap();
            let x = global_min_point(&p, 2);
            let r = hessian_report(&p, &x, &HessianOptions::default()).unwrap();
            assert_eq!(r.orbit_source, "measured-rank");
            assert_eq!(r.orbit_rank, Some(3), "{loss}");
            assert_eq!(r.negative_count, Some(0), "{loss}");
            assert_eq!(
                r.orbit_agrees,
                Some(true),
                "{loss}: {:?} vs {:?}",
                r.near_zero_count,
                r.orbit_dim
            );
        }
    }

    #[test]
    fn measured_null_space_for_mse_and_other_losses() {
        // MSE with an unregularised bias has a closed form (an ETF); we measure its null space.
        for (k, d, n) in [(3, 3, 4), (4, 5, 2)] {
            let p = UfmConfig::balanced(k, n, d)
                .lambdas(5e-3, 1e-2, 0.0)
                .loss(Loss::Mse)
                .build()
                .unwrap();
            let x = global_min_point(&p, 3);
            let r = hessian_report(&p, &x, &HessianOptions::default()).unwrap();
            assert!((r.objective - r.global_min_objective.unwrap()).abs() < 1e-10);
            assert_eq!(r.negative_count, Some(0));
            assert_eq!(
                r.orbit_agrees,
                Some(true),
                "MSE ({k},{d},{n}): {:?} vs orbit {:?}",
                r.near_zero_count,
                r.orbit_dim
            );
        }
    }
}
