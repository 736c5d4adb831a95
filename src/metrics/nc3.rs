//! NC3, self-duality of classifier and class means.
//!
//! $$\mathcal{NC}_3=\Big\lVert\frac{W\bar M}{\lVert W\bar M\rVert_F}-\frac{1}{\sqrt{K-1}}\big(I_K-\tfrac1K\mathbf 1\mathbf 1^\top\big)\Big\rVert_F$$
//! (the original `WH_relation_metric`; identical to rhubarbwu's `self_duality_error`).
//!
//! [`nc3_papyan`] is Papyan, Han & Donoho's (PNAS 2020) form
//! $$\Big\lVert\frac{W}{\lVert W\rVert_F}-\frac{\bar M^\top}{\lVert\bar M\rVert_F}\Big\rVert_F^2$$
//! (their notebook's `W_M_dist`, with $W$ uncentred), which lies in $\lbrack 0,4\rbrack$ and is $0$ exactly
//! when the classifier rows are a positive multiple of the centred class means.

use super::{nc2::etf_error, FeatureStats, GlobalMean};
use crate::error::{Error, Result};
use ndarray::ArrayView2;

/// ETF error of $W\bar M$ ($K\times K$).
pub fn nc3(stats: &FeatureStats, w: ArrayView2<f64>, gm: GlobalMean) -> Result<f64> {
    check_w(stats, &w)?;
    let mt = stats.centred_means(gm);
    etf_error(w.dot(&mt.t()).view())
}

/// Papyan's NC3 (module docs); `NaN` if $W=0$ or $\bar M=0$.
pub fn nc3_papyan(stats: &FeatureStats, w: ArrayView2<f64>, gm: GlobalMean) -> Result<f64> {
    check_w(stats, &w)?;
    let mt = stats.centred_means(gm);
    let nw = w.iter().map(|v| v * v).sum::<f64>().sqrt();
    let nm = mt.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(nw > 0.0 && nm > 0.0) {
        return Ok(f64::NAN);
    }
    Ok(w.iter()
        .zip(mt.iter())
        .map(|(a, b)| (a / nw - b / nm).powi(2))
        .sum())
}

pub(crate) fn check_w(stats: &FeatureStats, w: &ArrayView2<f64>) -> Result<()> {
    let (k, d) = (stats.n_classes(), stats.feature_dim());
    if w.dim() != (k, d) {
        return Err(Error::shape(
            "classifier W",
            format!("{k}x{d} (classes x feature dim)"),
            format!("{}x{}", w.nrows(), w.ncols()),
        ));
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "classifier W".into(),
        });
    }
    Ok(())
}
