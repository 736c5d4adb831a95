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
//!
//! Variants (each a function below):
//!
//! | name | formula | source |
//! |---|---|---|
//! | `nc1` ([`nc1_pinv`]) | $\frac1K\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)$, pinv rank rule | original `validate_NC.py`; rhubarbwu `covariance_ratio(metric="pinv")` |
//! | `nc1_papyan` ([`nc1_papyan`]) | $\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)$ from the top $\min(K-1,r)$ eigenpairs of $\Sigma_B$, $r$ its numerical rank (the notebook's `scipy.sparse.linalg.svds(k=K-1)` when $r=K-1$), **no** $\frac1K$ | Papyan, Han & Donoho (PNAS 2020) notebook `Sw_invSb` |
//! | `nc1_trace_ratio` ([`nc1_trace_ratio`]) | $\operatorname{tr}\Sigma_W/\operatorname{tr}\Sigma_B$ | Tirer, Huang & Niles-Weed (ICML 2023); rhubarbwu `"quotient"` |
//! | `cdnv` ([`cdnv`]) | $\frac{2}{K(K-1)}\sum_{k<l}\frac{(V_k+V_l)/2}{\lVert\mu_k-\mu_l\rVert^2}$, $V_k=\frac1{n_k}\sum_{y_i=k}\lVert h_i-\mu_k\rVert^2$ | Galanti, György & Hutter (ICLR 2022, arXiv 2112.15121); rhubarbwu `variability_cdnv` |

use super::{FeatureStats, GlobalMean};
use crate::error::{Error, Result};
use crate::linalg::sym_eigen;
use ndarray::Array2;

/// Default relative rank tolerance: $\max(d,K)\,\varepsilon$.
pub fn default_rtol(stats: &FeatureStats) -> f64 {
    stats.feature_dim().max(stats.n_classes()) as f64 * f64::EPSILON
}

/// $\bar M^\top\Sigma_W\bar M$ ($K\times K$) and $G=\bar M^\top\bar M$, from the $d\times d$
/// scatter (one-pass statistics). [`crate::metrics::compute`] obtains the same $K\times K$ matrix
/// without the scatter, by a second pass over the data.
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

/// $\frac1K\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)$ from a precomputed $P=\bar M^\top\Sigma_W\bar M$
/// and $G=\bar M^\top\bar M$ (see [`trace_pinv_sq`]); `rtol` as in [`nc1_pinv`].
pub fn nc1_from_projection(p: &Array2<f64>, g: &Array2<f64>, rtol: f64) -> Result<f64> {
    let k = g.nrows();
    trace_pinv_sq(p, g, rtol, k.saturating_sub(1))
}

/// Papyan et al.'s NC1: $\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)$, no $\frac1K$ factor.
///
/// The paper defines $\Sigma_B^\dagger$ as the Moore–Penrose pseudo-inverse; its notebook
/// builds it from the top $K-1$ singular triplets of $\Sigma_B$ (`svds(Sigma_B, k=K-1)`), which
/// is that pseudo-inverse when the centred class means span $K-1$ dimensions. They cannot when
/// $K-1>d$ (e.g. $K=100$, $d=64$: `svds` refuses $k\ge d$) or when the means are degenerate,
/// and "the top $K-1$" would then include round-off eigenvalues and return about $\pm10^{16}$.
/// So the pseudo-inverse keeps the top $\min(K-1,r)$ eigenpairs, $r$ the numerical rank: the
/// eigenvalues above `rtol`·λ_max, the same rule as [`nc1_pinv`] (default
/// [`default_rtol`]). Hence `nc1_papyan` $=K\cdot$`nc1` at equal tolerances, and equals the
/// notebook's value whenever the notebook's is defined and not dominated by round-off.
/// Papyan's notebook centres with the mean of class means: pass [`GlobalMean::ClassMean`] to
/// reproduce it exactly.
pub fn nc1_papyan_from_projection(p: &Array2<f64>, g: &Array2<f64>, rtol: f64) -> Result<f64> {
    let k = g.nrows();
    // Σ_B = M̄M̄ᵀ/K, so tr(Σ_W Σ_B^†) = K tr(G^{†2} P).
    Ok(k as f64 * trace_pinv_sq(p, g, rtol, k.saturating_sub(1))?)
}

/// [`nc1_papyan_from_projection`] from one-pass statistics (needs the scatter), with the
/// default tolerance [`default_rtol`].
pub fn nc1_papyan(stats: &FeatureStats, gm: GlobalMean) -> Result<f64> {
    let (p, g) = projected_within(stats, gm)?;
    nc1_papyan_from_projection(&p, &g, default_rtol(stats))
}

/// $\operatorname{tr}\Sigma_W/\operatorname{tr}\Sigma_B$ with
/// $\operatorname{tr}\Sigma_B=\frac1K\sum_k\lVert\mu_k-\mu_G\rVert^2$; needs no scatter. `NaN` when all
/// class means coincide.
pub fn nc1_trace_ratio(stats: &FeatureStats, gm: GlobalMean) -> f64 {
    let mt = stats.centred_means(gm);
    let k = stats.n_classes() as f64;
    let tr_b = mt.iter().map(|v| v * v).sum::<f64>() / k;
    if !(tr_b > 0.0) {
        return f64::NAN;
    }
    stats.trace_sigma_w() / tr_b
}

/// Class-distance normalised variance (Galanti et al. 2022), averaged over the
/// $\binom K2$ pairs; $V_k$ is the class's mean squared distance to its mean (trace of the class
/// covariance). The pairwise distances are formed from differences, not from a Gram matrix,
/// so nearly equal means do not cancel. Independent of the global mean. `Inf` if two class
/// means coincide.
pub fn cdnv(stats: &FeatureStats) -> f64 {
    let k = stats.n_classes();
    let v: Vec<f64> = stats
        .class_ss
        .iter()
        .zip(&stats.counts)
        .map(|(&ss, &n)| ss / n as f64)
        .collect();
    let m = &stats.means;
    let mut total = 0.0;
    for a in 0..k {
        for b in a + 1..k {
            let dist2: f64 = m
                .row(a)
                .iter()
                .zip(m.row(b).iter())
                .map(|(x, y)| (x - y) * (x - y))
                .sum();
            total += 0.5 * (v[a] + v[b]) / dist2;
        }
    }
    total / (k * (k - 1) / 2) as f64
}
