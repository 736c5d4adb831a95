//! NC4 as *bias collapse* (the original `Wh_b_relation_metric`):
//! $$\lVert W\mu_G+b\rVert_2,$$
//! with the sample-weighted $\mu_G$. Commit 71e0c53 of the original repository fixed the sign
//! (earlier runs computed $\lVert W\mu_G-b\rVert$); we use the corrected `+`.

use super::{nc3::check_w, FeatureStats, GlobalMean};
use crate::error::{Error, Result};
use ndarray::{ArrayView1, ArrayView2};

/// $\lVert W\mu_G+b\rVert_2$ ($b=0$ when `None`) with the sample-weighted $\mu_G$ (the original).
pub fn bias_collapse(
    stats: &FeatureStats,
    w: ArrayView2<f64>,
    b: Option<ArrayView1<f64>>,
) -> Result<f64> {
    bias_collapse_with(stats, w, b, GlobalMean::Weighted)
}

/// $\lVert W\mu_G+b\rVert_2$ with the chosen global mean.
pub fn bias_collapse_with(
    stats: &FeatureStats,
    w: ArrayView2<f64>,
    b: Option<ArrayView1<f64>>,
    gm: GlobalMean,
) -> Result<f64> {
    check_w(stats, &w)?;
    let mut v = w.dot(&stats.global_mean(gm));
    if let Some(b) = b {
        if b.len() != v.len() {
            return Err(Error::shape(
                "bias b",
                format!("{}", v.len()),
                format!("{}", b.len()),
            ));
        }
        v += &b;
    }
    Ok(v.dot(&v).sqrt())
}
