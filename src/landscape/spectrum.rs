//! Spectrum of a symmetric matrix (the Hessian) and its summary: $\lambda_{\min}$,
//! $\lambda_{\max}$, the number of negative and of near-zero eigenvalues, and the eigenvector of
//! $\lambda_{\min}$.
//!
//! **Tolerance.** With $s=\max(|\lambda_{\min}|,|\lambda_{\max}|)$ and a relative tolerance
//! $\tau$ (default [`DEFAULT_REL_TOL`] $=10^{-7}$), an eigenvalue is *near zero* when
//! $|\lambda|\le\tau s$ and *negative* when $\lambda<-\tau s$. The full spectrum comes from faer's
//! self-adjoint eigensolver (pure Rust; eigenvalues only unless the eigenvector is requested).

use super::lanczos::LanczosOptions;
use crate::error::{Error, Result};
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

/// Default relative tolerance $\tau$ for "near zero" (see the module docs).
pub const DEFAULT_REL_TOL: f64 = 1e-7;

/// Summary of a spectrum.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpectrumSummary {
    /// Matrix dimension $P$.
    pub dim: usize,
    /// Smallest eigenvalue.
    pub lambda_min: f64,
    /// Largest eigenvalue.
    pub lambda_max: f64,
    /// Number of eigenvalues $<-\tau s$.
    pub negative_count: usize,
    /// Number of eigenvalues with $|\lambda|\le\tau s$.
    pub near_zero_count: usize,
    /// $\tau$.
    pub rel_tol: f64,
    /// $\tau s$, the absolute threshold used.
    pub abs_tol: f64,
    /// Smallest eigenvalue with $|\lambda|>\tau s$ in absolute value (the spectral gap above the
    /// near-zero cluster), if any.
    pub smallest_nonzero_abs: Option<f64>,
    /// Largest $|\lambda|$ inside the near-zero cluster, if any.
    pub largest_near_zero_abs: Option<f64>,
}

impl SpectrumSummary {
    /// Summarises eigenvalues (any order) with relative tolerance `rel_tol`.
    pub fn from_eigenvalues(vals: &[f64], rel_tol: f64) -> Result<Self> {
        if vals.is_empty() {
            return Err(Error::Data("empty spectrum".into()));
        }
        if !(rel_tol.is_finite() && rel_tol >= 0.0) {
            return Err(Error::param(
                "zero-tol",
                format!("must be finite and >= 0, got {rel_tol}"),
            ));
        }
        if vals.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "the eigenvalues".into(),
            });
        }
        let lmin = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let lmax = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let abs_tol = rel_tol * lmin.abs().max(lmax.abs());
        let near = |v: f64| v.abs() <= abs_tol;
        Ok(SpectrumSummary {
            dim: vals.len(),
            lambda_min: lmin,
            lambda_max: lmax,
            negative_count: vals.iter().filter(|&&v| v < -abs_tol).count(),
            near_zero_count: vals.iter().filter(|&&v| near(v)).count(),
            rel_tol,
            abs_tol,
            smallest_nonzero_abs: vals
                .iter()
                .filter(|&&v| !near(v))
                .map(|v| v.abs())
                .reduce(f64::min),
            largest_near_zero_abs: vals
                .iter()
                .filter(|&&v| near(v))
                .map(|v| v.abs())
                .reduce(f64::max),
        })
    }
}

/// A full spectrum: ascending eigenvalues, optionally the unit eigenvector of $\lambda_{\min}$.
#[derive(Clone, Debug)]
pub struct Spectrum {
    /// Eigenvalues, ascending.
    pub eigenvalues: Vec<f64>,
    /// Unit eigenvector of the smallest eigenvalue (when requested).
    pub min_eigenvector: Option<Vec<f64>>,
    /// Summary with the tolerance given.
    pub summary: SpectrumSummary,
}

/// Full spectrum of a symmetric matrix (lower triangle read). With `want_vector`, the
/// eigenvector of $\lambda_{\min}$ is returned too (a full eigendecomposition, slower).
pub fn spectrum(a: ArrayView2<f64>, rel_tol: f64, want_vector: bool) -> Result<Spectrum> {
    let (eigenvalues, min_eigenvector) = if want_vector {
        let (vals, vecs) = crate::linalg::sym_eigen(a)?;
        let v = vecs.column(0).to_vec();
        (vals, Some(v))
    } else {
        (crate::linalg::sym_eigenvalues(a)?, None)
    };
    let summary = SpectrumSummary::from_eigenvalues(&eigenvalues, rel_tol)?;
    Ok(Spectrum {
        eigenvalues,
        min_eigenvector,
        summary,
    })
}

/// How to analyse a Hessian: dense spectrum up to `dense_limit` parameters, Lanczos beyond.
#[derive(Clone, Debug)]
pub struct HessianOptions {
    /// Relative tolerance $\tau$ for near-zero eigenvalues.
    pub rel_tol: f64,
    /// Largest $P$ for which the dense Hessian and its full spectrum are computed.
    pub dense_limit: usize,
    /// Compute the eigenvector of $\lambda_{\min}$ (a full eigendecomposition on the dense path).
    pub want_vector: bool,
    /// Above `dense_limit`, use the exact class decomposition ([`collapsed`](super::collapsed))
    /// when the point's features are collapsed within classes to
    /// $\lVert x-\bar x\rVert\le10^{-6}\max(1,\lVert x\rVert)$ (true at every critical point of a
    /// convex loss); otherwise, or when false, Lanczos.
    pub use_collapsed: bool,
    /// Settings of the Lanczos path.
    pub lanczos: LanczosOptions,
}

impl Default for HessianOptions {
    fn default() -> Self {
        HessianOptions {
            rel_tol: DEFAULT_REL_TOL,
            dense_limit: 3000,
            want_vector: false,
            use_collapsed: true,
            lanczos: LanczosOptions::default(),
        }
    }
}

/// Spectral summary of $\nabla^2f(x)$, from the dense path or from Lanczos.
#[derive(Clone, Debug, Serialize)]
pub struct HessianAnalysis {
    /// `dense` (full spectrum), `collapsed` (full spectrum by the class decomposition) or
    /// `lanczos` (extreme eigenvalues only).
    pub method: &'static str,
    /// $\lVert x-\bar x\rVert$ on the collapsed path (the spectrum is that of $\bar x$).
    pub collapse_distance: Option<f64>,
    /// $P$.
    pub dim: usize,
    /// $\lambda_{\min}$.
    pub lambda_min: f64,
    /// $\lambda_{\max}$.
    pub lambda_max: f64,
    /// Eigenvalues $<-\tau s$ (dense path only; `null` with Lanczos).
    pub negative_count: Option<usize>,
    /// Eigenvalues with $|\lambda|\le\tau s$ (dense path only).
    pub near_zero_count: Option<usize>,
    /// $\tau$.
    pub rel_tol: f64,
    /// $\tau s$ (dense path only).
    pub abs_tol: Option<f64>,
    /// Smallest $|\lambda|$ outside the near-zero cluster (dense path only).
    pub smallest_nonzero_abs: Option<f64>,
    /// Largest $|\lambda|$ inside the near-zero cluster (dense path only).
    pub largest_near_zero_abs: Option<f64>,
    /// Relative asymmetry of the assembled Hessian before symmetrisation (dense path only).
    pub asymmetry: Option<f64>,
    /// Lanczos residual bounds $(r_{\min}, r_{\max})$ (Lanczos path only).
    pub lanczos_residuals: Option<(f64, f64)>,
    /// Seconds to assemble the dense Hessian (0 for Lanczos).
    pub seconds_assemble: f64,
    /// Seconds in the eigensolver (Lanczos: total).
    pub seconds_eigen: f64,
    /// All eigenvalues, ascending (dense path only).
    #[serde(skip)]
    pub eigenvalues: Option<Vec<f64>>,
    /// Unit eigenvector of $\lambda_{\min}$ (if requested, or always with Lanczos).
    #[serde(skip)]
    pub min_eigenvector: Option<Vec<f64>>,
}

/// Analyses $\nabla^2 f(x)$: dense assembly + full spectrum when $P\le$ `dense_limit`, else
/// Lanczos on HVPs for $\lambda_{\min},\lambda_{\max}$ (counts are then unavailable).
pub fn analyse_hessian(
    p: &crate::ufm::UfmProblem,
    x: &[f64],
    opts: &HessianOptions,
) -> Result<HessianAnalysis> {
    p.check_len("point", x)?;
    let dim = p.n_params();
    if dim <= opts.dense_limit {
        let t = std::time::Instant::now();
        let h = super::dense_hessian(p, x)?;
        let seconds_assemble = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let s = spectrum(h.matrix.view(), opts.rel_tol, opts.want_vector)?;
        let seconds_eigen = t.elapsed().as_secs_f64();
        let m = &s.summary;
        Ok(HessianAnalysis {
            method: "dense",
            collapse_distance: None,
            dim,
            lambda_min: m.lambda_min,
            lambda_max: m.lambda_max,
            negative_count: Some(m.negative_count),
            near_zero_count: Some(m.near_zero_count),
            rel_tol: m.rel_tol,
            abs_tol: Some(m.abs_tol),
            smallest_nonzero_abs: m.smallest_nonzero_abs,
            largest_near_zero_abs: m.largest_near_zero_abs,
            asymmetry: Some(h.asymmetry),
            lanczos_residuals: None,
            seconds_assemble,
            seconds_eigen,
            eigenvalues: Some(s.eigenvalues),
            min_eigenvector: s.min_eigenvector,
        })
    } else if opts.use_collapsed
        && super::collapsed::collapse(p, x)?.1 <= 1e-6 * crate::real::norm(x).max(1.0)
    {
        let t = std::time::Instant::now();
        let c = super::collapsed::collapsed_spectrum(p, x, opts.want_vector)?;
        let seconds_eigen = t.elapsed().as_secs_f64();
        let m = SpectrumSummary::from_eigenvalues(&c.eigenvalues, opts.rel_tol)?;
        Ok(HessianAnalysis {
            method: "collapsed",
            collapse_distance: Some(c.collapse_distance),
            dim,
            lambda_min: m.lambda_min,
            lambda_max: m.lambda_max,
            negative_count: Some(m.negative_count),
            near_zero_count: Some(m.near_zero_count),
            rel_tol: m.rel_tol,
            abs_tol: Some(m.abs_tol),
            smallest_nonzero_abs: m.smallest_nonzero_abs,
            largest_near_zero_abs: m.largest_near_zero_abs,
            asymmetry: None,
            lanczos_residuals: None,
            seconds_assemble: 0.0,
            seconds_eigen,
            eigenvalues: Some(c.eigenvalues),
            min_eigenvector: c.min_eigenvector,
        })
    } else {
        let t = std::time::Instant::now();
        let l = super::lanczos::hessian_extremes(p, x, &opts.lanczos)?;
        if !l.converged {
            return Err(Error::numerical(
                "Lanczos",
                format!(
                    "no convergence in {} steps (residuals {:.1e}, {:.1e}); raise --lanczos-steps",
                    l.iterations, l.residual_min, l.residual_max
                ),
            ));
        }
        Ok(HessianAnalysis {
            method: "lanczos",
            collapse_distance: None,
            dim,
            lambda_min: l.lambda_min,
            lambda_max: l.lambda_max,
            negative_count: None,
            near_zero_count: None,
            rel_tol: opts.rel_tol,
            abs_tol: None,
            smallest_nonzero_abs: None,
            largest_near_zero_abs: None,
            asymmetry: None,
            lanczos_residuals: Some((l.residual_min, l.residual_max)),
            seconds_assemble: 0.0,
            seconds_eigen: t.elapsed().as_secs_f64(),
            eigenvalues: None,
            min_eigenvector: Some(l.min_vector),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn summary_counts_follow_the_stated_tolerance() {
        let vals = [-2.0, -1e-9, 0.0, 5e-8, 1e-3, 10.0];
        let s = SpectrumSummary::from_eigenvalues(&vals, 1e-8).unwrap();
        // abs_tol = 1e-8 * 10 = 1e-7.
        assert_eq!((s.negative_count, s.near_zero_count), (1, 3));
        assert_eq!((s.lambda_min, s.lambda_max), (-2.0, 10.0));
        assert_eq!(s.smallest_nonzero_abs, Some(1e-3));
        assert_eq!(s.largest_near_zero_abs, Some(5e-8));
        assert!(SpectrumSummary::from_eigenvalues(&[], 1e-8).is_err());
        assert!(SpectrumSummary::from_eigenvalues(&[1.0, f64::NAN], 1e-8).is_err());
    }

    #[test]
    fn min_eigenvector_satisfies_the_eigen_equation() {
        // Symmetric matrix with a known spectrum: Q diag(-3, 1, 2, 4) Qᵀ with a Householder Q.
        let u = [0.5, -0.5, 0.5, 0.5];
        let q = Array2::from_shape_fn((4, 4), |(i, j)| {
            (if i == j { 1.0 } else { 0.0 }) - 2.0 * u[i] * u[j]
        });
        let d = Array2::from_diag(&ndarray::arr1(&[-3.0, 1.0, 2.0, 4.0]));
        let a = q.dot(&d).dot(&q.t());
        let s = spectrum(a.view(), 1e-10, true).unwrap();
        let v = s.min_eigenvector.unwrap();
        let av = a.dot(&ndarray::arr1(&v));
        for i in 0..4 {
            assert!((av[i] + 3.0 * v[i]).abs() < 1e-12);
        }
        assert!((s.summary.lambda_min + 3.0).abs() < 1e-12);
        assert_eq!(s.summary.negative_count, 1);
        let vals_only = spectrum(a.view(), 1e-10, false).unwrap();
        for (x, y) in vals_only.eigenvalues.iter().zip(&s.eigenvalues) {
            assert!((x - y).abs() < 1e-12);
        }
    }
}
