//! Neural-collapse metrics.
//!
//! Features $h_i\in\mathbb R^d$ with labels $y_i\in\{0,\dots,K-1\}$ are summarised once by a
//! streaming, mergeable [`ClassStats`] accumulator (counts, class means, pooled within-class
//! scatter; see [`stats`]); every metric is then a function of that summary and, where it
//! involves the classifier, of $W\in\mathbb R^{K\times d}$ and $b\in\mathbb R^K$.
//!
//! Notation: $\mu_k$ class means, $\mu_G$ the global mean (sample-weighted as in the original
//! code, or the mean of class means as in Papyan et al. 2020: see [`GlobalMean`]),
//! $\bar M=[\mu_1-\mu_G,\dots,\mu_K-\mu_G]\in\mathbb R^{d\times K}$,
//! $\Sigma_W=\frac1N\sum_i(h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top$,
//! $\Sigma_B=\frac1K\bar M\bar M^\top$, and the centred simplex target
//! $E=\frac1{\sqrt{K-1}}\big(I_K-\frac1K\mathbf 1\mathbf 1^\top\big)$.
//!
//! | metric | formula | source |
//! |---|---|---|
//! | [`nc1`](nc1::nc1_pinv) | $\frac1K\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)$ | original `validate_NC.py` (`collapse_metric`) |
//! | [`nc2_w`](nc2::nc2_w) | $\big\lVert\frac{WW^\top}{\lVert WW^\top\rVert_F}-E\big\rVert_F$ ($W$ uncentred) | original (`ETF_metric`) |
//! | [`nc2_h`](nc2::nc2_h) | the same on $\bar M^\top\bar M$ (class means) | rhubarbwu `simplex_etf_error` |
//! | [`nc3`](nc3::nc3) | $\big\lVert\frac{W\bar M}{\lVert W\bar M\rVert_F}-E\big\rVert_F$ | original (`WH_relation_metric`) |
//! | [`bias`](nc4::bias_collapse) | $\lVert W\mu_G+b\rVert_2$ | original (`Wh_b_relation_metric`, sign as fixed in 71e0c53) |
//! | [`nc1_papyan`](nc1::nc1_papyan) | $\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)$, top $\min(K-1,\text{rank})$, no $\frac1K$ | Papyan, Han & Donoho (PNAS 2020) |
//! | [`nc1_trace_ratio`](nc1::nc1_trace_ratio) | $\operatorname{tr}\Sigma_W/\operatorname{tr}\Sigma_B$ | Tirer, Huang & Niles-Weed (ICML 2023) |
//! | [`cdnv`](nc1::cdnv) | $\binom K2^{-1}\sum_{k<l}\frac{(V_k+V_l)/2}{\lVert\mu_k-\mu_l\rVert^2}$ | Galanti, György & Hutter (ICLR 2022) |
//! | [`nc2_w_centered`](nc2::nc2_w_centered) | ETF error of $\tilde W\tilde W^\top$, $\tilde W=W-\mathbf 1\bar w^\top$ | Zhou et al. (ICML 2022) MSE repo, `nc_loss` |
//! | [`equinorm_h`/`_w`](nc2::equinorm) | $\operatorname{std}_k\lVert v_k\rVert/\operatorname{mean}_k\lVert v_k\rVert$ | Papyan et al. (2020) |
//! | [`equiangular_h`/`_w`](nc2::equiangular) | $\frac1{K(K-1)}\sum_{k\ne l}\lvert\cos\angle(v_k,v_l)+\frac1{K-1}\rvert$ | Papyan et al. (2020) |
//! | [`nc3_papyan`](nc3::nc3_papyan) | $\lVert W/\lVert W\rVert_F-\bar M^\top/\lVert\bar M\rVert_F\rVert_F^2$ | Papyan et al. (2020) |
//! | [`nrc1`/`nrc2`/`nrc3`](nrc) | regression collapse: features in the top-$n$ PCA subspace / row space of $W$; $WW^\top\propto(\Sigma^{1/2}-\gamma^{1/2}I)_+$ | Andriopoulos et al. (NeurIPS 2024) |
//! | [`ncc_agreement`](compute) | $\frac1N\#\{i:\arg\min_k\lVert h_i-\mu_k\rVert=\arg\max_k(Wh_i+b)_k\}$ | Papyan et al. (2020) NC4; rhubarbwu |
//!
//! [`compute::compute_metrics`] computes any selection of them by name from a feature stream
//! (in memory or a file, see [`crate::features`]);
//! [`from_stats::metrics_from_stats`] computes them (all but `ncc_agreement`) from a
//! [`ClassStats`] accumulator fed batch by batch (small batches gathered into blocks by
//! [`BufferedStats`]), merged across shards, or saved and restored ([`stats::persist`]).

pub mod buffered;
pub mod compute;
pub mod distance;
pub mod from_stats;
mod kernels;
pub mod nc1;
pub mod nc2;
pub mod nc3;
pub mod nc4;
pub mod nrc;
pub mod stats;

pub use buffered::BufferedStats;
pub use compute::{
    compute_metrics, FeatureChunk, FeatureStream, InMemory, Metric, MetricsConfig, MetricsReport,
    Strategy,
};
pub use from_stats::metrics_from_stats;
pub use stats::{ClassStats, FeatureStats};

use crate::error::Result;
use crate::real::Real;
use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

/// Which global mean $\mu_G$ to centre the class means with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalMean {
    /// $\mu_G=\frac1N\sum_ih_i$ (the original code, the MSE repo).
    #[default]
    Weighted,
    /// $\mu_G=\frac1K\sum_k\mu_k$ (Papyan et al.'s notebook, rhubarbwu's default).
    ClassMean,
}

/// The original code's four metrics plus NC2 on the class means. `None` where the metric
/// needs a classifier that was not given; `NaN` (JSON `null`) where it is undefined (e.g. all
/// class means equal).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NcSummary {
    /// $\frac1K\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)$.
    pub nc1: f64,
    /// ETF error of $WW^\top$.
    pub nc2_w: Option<f64>,
    /// ETF error of the centred class means' Gram matrix.
    pub nc2_h: f64,
    /// ETF error of $W\bar M$.
    pub nc3: Option<f64>,
    /// $\lVert W\mu_G+b\rVert$.
    pub bias: Option<f64>,
}

/// Computes [`NcSummary`] from feature statistics and an optional classifier.
pub fn nc_summary(
    stats: &FeatureStats,
    w: Option<ArrayView2<f64>>,
    b: Option<ArrayView1<f64>>,
) -> Result<NcSummary> {
    let gm = GlobalMean::Weighted;
    let nc1 = nc1::nc1_pinv(stats, gm, None)?;
    let nc2_h = nc2::nc2_h(stats, gm)?;
    let (mut nc2_w, mut nc3, mut bias) = (None, None, None);
    if let Some(w) = w {
        nc2_w = Some(nc2::nc2_w(w)?);
        nc3 = Some(nc3::nc3(stats, w, gm)?);
        bias = Some(nc4::bias_collapse(stats, w, b)?);
    }
    Ok(NcSummary {
        nc1,
        nc2_w,
        nc2_h,
        nc3,
        bias,
    })
}

/// NC metrics of a UFM point: the features are the rows of $H^\top$, the labels the problem's.
pub fn ufm_nc<T: Real>(p: &crate::ufm::UfmProblem, x: &[T]) -> Result<NcSummary> {
    let (w, ht, b) = p.split(x);
    let mut acc = ClassStats::new(p.n_classes(), p.feature_dim());
    acc.push(ht, p.labels())?;
    let stats = acc.finish()?;
    let w64 = w.mapv(|v| v.to_f64_());
    let b64 = b.map(|b| b.mapv(|v| v.to_f64_()));
    nc_summary(&stats, Some(w64.view()), b64.as_ref().map(|b| b.view()))
}
