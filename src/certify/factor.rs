//! From a convex optimum $Z$ back to UFM parameters: numerical rank and the balanced
//! factorization.
//!
//! With the thin SVD $Z=U_rS_rV_r^\top$ (the $r$ singular values above the rank tolerance),
//! $$W=(\lambda_H/\lambda_W)^{1/4}\,U_rS_r^{1/2},\qquad H=(\lambda_W/\lambda_H)^{1/4}\,S_r^{1/2}V_r^\top=(\lambda_W/\lambda_H)^{1/4}\,S_r^{-1/2}U_r^\top Z,$$
//! so that $WH=U_rU_r^\top Z$ and $\frac{\lambda_W}2\lVert W\rVert_F^2+\frac{\lambda_H}2\lVert H\rVert_F^2=\sqrt{\lambda_W\lambda_H}\sum_{j\le r}\sigma_j$:
//! the factorization attains the variational characterization of the nuclear norm
//! (Srebro, Rennie & Jaakkola 2005; Recht, Fazel & Parrilo 2010, Lemma 5.1), and it needs inner
//! dimension $r$, so it is a UFM point exactly when $r\le d$ (padded with zero columns).

use super::convex::ConvexProblem;
use crate::error::{Error, Result};
use crate::linalg::thin_svd;
use crate::ufm::UfmProblem;
use ndarray::{s, Array2, Axis};

/// Numerical rank: the number of singular values above `rel_tol`$\cdot\sigma_1$ (0 when $Z=0$).
pub fn numerical_rank(singular_values: &[f64], rel_tol: f64) -> usize {
    let top = singular_values.iter().copied().fold(0.0f64, f64::max);
    if !(top > 0.0) {
        return 0;
    }
    singular_values
        .iter()
        .filter(|&&s| s > rel_tol * top)
        .count()
}

/// The balanced factors of a convex solution.
#[derive(Clone, Debug)]
pub struct BalancedFactors {
    /// $W$, $K\times\max(r,\cdot)$ (see [`balanced_factors`]).
    pub w: Array2<f64>,
    /// $H^\top$, $N\times$ the same width, one row per sample (samples grouped by class).
    pub ht: Array2<f64>,
    /// The rank $r$ used.
    pub rank: usize,
}

/// Balanced factorization of the convex iterate `z_t` ($m\times K$, in `cp`'s representation)
/// keeping the top `rank` singular triplets, padded with zero columns to `width` (which must be
/// at least `rank`).
pub fn balanced_factors(
    p: &UfmProblem,
    cp: &ConvexProblem,
    z_t: &Array2<f64>,
    rank: usize,
    width: usize,
) -> Result<BalancedFactors> {
    let k = p.n_classes();
    if rank > width || rank > k {
        return Err(Error::param(
            "rank",
            format!("cannot factor rank {rank} into width {width} with K = {k}"),
        ));
    }
    // Rows √ω_c z_cᵀ = A S Bᵀ, so Z_ω = B S Aᵀ and the left singular vectors of Z are B.
    let mut scaled = z_t.clone();
    for (mut row, &w) in scaled.axis_iter_mut(Axis(0)).zip(cp.weights()) {
        row *= w.sqrt();
    }
    let (_, sv, bmat) = thin_svd(scaled.view())?;
    let (lw, lh) = (p.lambda_w(), p.lambda_h());
    let cw = (lh / lw).powf(0.25);
    let ch = (lw / lh).powf(0.25);
    let mut w = Array2::<f64>::zeros((k, width));
    // Per stored column c: h_c = ch S^{-1/2} Uᵀ z_c.
    let mut hcols = Array2::<f64>::zeros((cp.n_columns(), width));
    for j in 0..rank {
        let s = sv[j];
        if !(s > 0.0) {
            return Err(Error::numerical(
                "balanced factorization",
                format!("singular value {j} is {s}; lower the rank"),
            ));
        }
        let u = bmat.column(j);
        for i in 0..k {
            w[[i, j]] = cw * s.sqrt() * u[i];
        }
        let proj = z_t.dot(&u);
        hcols.slice_mut(s![.., j]).assign(&(proj * (ch / s.sqrt())));
    }
    let ht = Array2::from_shape_fn((p.n_samples(), width), |(i, j)| {
        hcols[[cp.column_of_sample(p, i), j]]
    });
    Ok(BalancedFactors { w, ht, rank })
}
