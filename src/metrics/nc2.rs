//! NC2, convergence to a simplex ETF.
//!
//! For a $K\times K$ matrix $A$ the *ETF error* is
//! $$\Big\lVert\frac{A}{\lVert A\rVert_F}-\frac{1}{\sqrt{K-1}}\big(I_K-\tfrac1K\mathbf 1\mathbf 1^\top\big)\Big\rVert_F,$$
//! which is $0$ exactly when $A$ is a positive multiple of the centred identity. Both terms
//! have unit Frobenius norm, so the error lies in $[0,2]$; for an orthogonal frame
//! ($A\propto I$) it is $\sqrt{2-2\sqrt{(K-1)/K}}$.
//!
//! * [`nc2_w`]: $A=WW^\top$ on the **uncentred** classifier (the original `ETF_metric`).
//! * [`nc2_h`]: $A=\bar M^\top\bar M$, the Gram matrix of the centred class means
//!   (rhubarbwu's `simplex_etf_error`).

use super::{FeatureStats, GlobalMean};
use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2};

/// ETF error of a square $K\times K$ matrix (see module docs); `NaN` when $A=0$.
pub fn etf_error(a: ArrayView2<f64>) -> Result<f64> {
    let k = a.nrows();
    if a.ncols() != k || k < 2 {
        return Err(Error::shape(
            "ETF error",
            "a KxK matrix with K >= 2",
            format!("{}x{}", a.nrows(), a.ncols()),
        ));
    }
    let nrm = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(nrm > 0.0) {
        return Ok(f64::NAN);
    }
    let s = 1.0 / ((k - 1) as f64).sqrt();
    let mut err = 0.0;
    for i in 0..k {
        for j in 0..k {
            let target = s * (if i == j { 1.0 } else { 0.0 } - 1.0 / k as f64);
            let e = a[[i, j]] / nrm - target;
            err += e * e;
        }
    }
    Ok(err.sqrt())
}

/// NC2 on the classifier: ETF error of $WW^\top$ ($W$ is $K\times d$, uncentred).
pub fn nc2_w(w: ArrayView2<f64>) -> Result<f64> {
    etf_error(w.dot(&w.t()).view())
}

/// NC2 on the class means: ETF error of $\bar M^\top\bar M$.
pub fn nc2_h(stats: &FeatureStats, gm: GlobalMean) -> Result<f64> {
    let mt: Array2<f64> = stats.centred_means(gm);
    etf_error(mt.dot(&mt.t()).view())
}
