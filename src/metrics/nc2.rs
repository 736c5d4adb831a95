//! NC2, convergence to a simplex ETF.
//!
//! For a $K\times K$ matrix $A$ the *ETF error* is
//! $$\Big\lVert\frac{A}{\lVert A\rVert_F}-\frac{1}{\sqrt{K-1}}\big(I_K-\tfrac1K\mathbf 1\mathbf 1^\top\big)\Big\rVert_F,$$
//! which is $0$ exactly when $A$ is a positive multiple of the centred identity. Both terms
//! have unit Frobenius norm, so the error lies in $\lbrack 0,2\rbrack$; for an orthogonal frame
//! ($A\propto I$) it is $\sqrt{2-2\sqrt{(K-1)/K}}$.
//!
//! * [`nc2_w`]: $A=WW^\top$ on the **uncentred** classifier (the original `ETF_metric`).
//! * [`nc2_h`]: $A=\bar M^\top\bar M$, the Gram matrix of the centred class means
//!   (rhubarbwu's `simplex_etf_error`).
//! * [`nc2_w_centered`]: $A=\tilde W\tilde W^\top$ with $\tilde W=W-\frac1K\mathbf 1\mathbf 1^\top W$ (the
//!   mean row removed), as in Zhou et al.'s MSE repository and `nc_loss`.
//!
//! Papyan, Han & Donoho (PNAS 2020) split NC2 in two, for the rows $v_k$ of $V=\bar M^\top$
//! (`_h`) or of $V=W$ (`_w`, uncentred, as in their notebook):
//! * [`equinorm`]: the coefficient of variation $\operatorname{std}_k\lVert v_k\rVert/\operatorname{mean}_k\lVert v_k\rVert$,
//!   with the sample (Bessel, $K-1$) standard deviation of `torch.std`;
//! * [`equiangular`]: $\frac1{K(K-1)}\sum_{k\ne l}\big|\cos\angle(v_k,v_l)+\frac1{K-1}\big|$.
//!
//! Both are $0$ for a simplex ETF.

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

/// NC2 on the centred classifier: ETF error of $\tilde W\tilde W^\top$, $\tilde W=W-\mathbf 1\bar w^\top$
/// with $\bar w$ the mean row of $W$.
pub fn nc2_w_centered(w: ArrayView2<f64>) -> Result<f64> {
    let wc = centre_rows(w);
    etf_error(wc.dot(&wc.t()).view())
}

/// $W$ minus its mean row.
pub(crate) fn centre_rows(w: ArrayView2<f64>) -> Array2<f64> {
    let mean = w.mean_axis(ndarray::Axis(0));
    match mean {
        Some(m) => &w - &m.insert_axis(ndarray::Axis(0)),
        None => w.to_owned(),
    }
}

/// Coefficient of variation of the row norms of `v` (sample standard deviation over mean);
/// `NaN` if all rows are zero or there is a single row.
pub fn equinorm(v: ArrayView2<f64>) -> f64 {
    let k = v.nrows();
    if k < 2 {
        return f64::NAN;
    }
    let norms: Vec<f64> = v
        .outer_iter()
        .map(|r| r.iter().map(|x| x * x).sum::<f64>().sqrt())
        .collect();
    let mean = norms.iter().sum::<f64>() / k as f64;
    let var = norms.iter().map(|n| (n - mean) * (n - mean)).sum::<f64>() / (k - 1) as f64;
    var.sqrt() / mean
}

/// Mean over ordered pairs $k\ne l$ of $\lvert\cos\angle(v_k,v_l)+\frac1{K-1}\rvert$ for the rows
/// of `v`; `NaN` if a row is zero or there is a single row.
pub fn equiangular(v: ArrayView2<f64>) -> f64 {
    let k = v.nrows();
    if k < 2 {
        return f64::NAN;
    }
    let g = v.dot(&v.t());
    let shift = 1.0 / (k - 1) as f64;
    let mut total = 0.0;
    for a in 0..k {
        for b in 0..k {
            if a != b {
                let c = g[[a, b]] / (g[[a, a]] * g[[b, b]]).sqrt();
                total += (c + shift).abs();
            }
        }
    }
    total / (k * (k - 1)) as f64
}

/// [`equinorm`] of the centred class means $\mu_k-\mu_G$.
pub fn equinorm_h(stats: &FeatureStats, gm: GlobalMean) -> f64 {
    equinorm(stats.centred_means(gm).view())
}

/// [`equiangular`] of the centred class means $\mu_k-\mu_G$.
pub fn equiangular_h(stats: &FeatureStats, gm: GlobalMean) -> f64 {
    equiangular(stats.centred_means(gm).view())
}
