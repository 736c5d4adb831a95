//! NC1, within-class variability collapse.
//!
//! $$\mathcal{NC}_1=\frac1K\operatorname{tr}\big(\Sigma_W\Sigma_B^\dagger\big)$$
//! (Papyan, Han & Donoho 2020; the original code's `collapse_metric`), computed without any
//! $d\times d$ pseudo-inverse through the $K\times K$ identity
//! $$\frac1K\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)=\operatorname{tr}\big(G^{\dagger2}\,\bar M^\top\Sigma_W\bar M\big),\qquad G=\bar M^\top\bar M,$$
//! which holds because $(\bar M\bar M^\top)^\dagger=\bar MG^{\dagger2}\bar M^\top$. With
//! $G=\sum_i\lambda_iu_iu_i^\top$ this is $\sum_{i\in\mathcal R}u_i^\top(\bar M^\top\Sigma_W\bar M)u_i/\lambda_i^2$.
//!
//! **Rank.** $\bar M$ has rank at most $K-1$ by construction ($\sum_kn_k(\mu_k-\mu_G)=0$ for
//! the weighted mean, $\sum_k(\mu_k-\mu_G)=0$ for the mean of class means), so $G$'s smallest
//! eigenvalue is structurally zero and is always dropped; among the rest, $\mathcal R$ keeps
//! $\lambda_i>\text{rtol}\cdot\lambda_{\max}$ with default $\text{rtol}=\max(d,K)\,\varepsilon$,
//! scipy's `pinv` default on the $d\times d$ matrix $\Sigma_B$ (whose nonzero eigenvalues are
//! $\lambda_i/K$).

use super::{FeatureStats, GlobalMean};
use crate::error::{Error, Result};
use crate::linalg::sym_eigen;
use ndarray::Array2;

/// Default relative rank tolerance: $\max(d,K)\,\varepsilon$.
pub fn default_rtol(stats: &FeatureStats) -> f64 {
    stats.feature_dim().max(stats.n_classes()) as f64 * f64::EPSILON
}

/// $\bar M^\top\Sigma_W\bar M$ ($K\times K$) and $G=\bar M^\top\bar M$.
pub fn projected_within(
    stats: &FeatureStats,
    gm: GlobalMean,
) -> Result<(Array2<f64>, Array2<f64>)> {
    let sw = stats.sigma_w().ok_or_else(|| {
        Error::Unsupported(
            "NC1 needs the within-class scatter; accumulate with ClassStats::new (scatter on)"
                .into(),
        )
    })?;
    let mt = stats.centred_means(gm); // K × d
    let g = mt.dot(&mt.t());
    let p = mt.dot(&sw).dot(&mt.t());
    Ok((p, g))
}

/// $\operatorname{tr}(G^{\dagger 2}P)$ over the kept eigenpairs of $G$ (at most `max_rank` of
/// them, largest first, each above `rtol`·λ_max).
pub fn trace_pinv_sq(p: &Array2<f64>, g: &Array2<f64>, rtol: f64, max_rank: usize) -> Result<f64> {
    let (vals, vecs) = sym_eigen(g.view())?;
    let lmax = vals.last().copied().unwrap_or(0.0);
    if !(lmax > 0.0) {
        return Ok(f64::NAN); // all class means coincide: NC1 undefined
    }
    let k = vals.len();
    let mut total = 0.0;
    for i in (0..k).rev().take(max_rank) {
        let l = vals[i];
        if l <= rtol * lmax {
            break;
        }
        let u = vecs.column(i);
        total += u.dot(&p.dot(&u)) / (l * l);
    }
    Ok(total)
}

/// $\frac1K\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)$ with the pinv rank rule above;
/// `rtol = None` uses [`default_rtol`].
pub fn nc1_pinv(stats: &FeatureStats, gm: GlobalMean, rtol: Option<f64>) -> Result<f64> {
    let (p, g) = projected_within(stats, gm)?;
    let k = stats.n_classes();
    trace_pinv_sq(&p, &g, rtol.unwrap_or_else(|| default_rtol(stats)), k - 1)
}
