//! Neural regression collapse (NRC1–NRC3) of features $h_i\in\mathbb R^d$, targets
//! $y_i\in\mathbb R^n$ and a linear head $W\in\mathbb R^{n\times d}$.
//!
//! Andriopoulos, Dong, Guo, Zhao & Ross, *The Prevalence of Neural Collapse in Neural
//! Multivariate Regression* (NeurIPS 2024, arXiv 2409.04180), §2. With centred, unit-normalised
//! features $\hat h_i=(h_i-\bar h)/\lVert h_i-\bar h\rVert$ (a zero row stays zero and counts as
//! collapsed):
//! $$\mathrm{NRC1}=\frac1N\sum_i\big\lVert\hat h_i-P_{\mathrm{PCA}_n}\hat h_i\big\rVert^2,\qquad
//! \mathrm{NRC2}=\frac1N\sum_i\big\lVert\hat h_i-P_{\mathrm{row}(W)}\hat h_i\big\rVert^2,$$
//! where $P_{\mathrm{PCA}_n}$ projects onto the top-$n$ principal directions of the centred
//! features (eigenvectors of $\frac1N\sum_i(h_i-\bar h)(h_i-\bar h)^\top$) and $P_{\mathrm{row}(W)}$
//! onto the span of the rows of $W$ (rank tolerance $10^{-12}\sigma_1$); and with the target
//! covariance $\Sigma=\frac1N\sum_i(y_i-\bar y)(y_i-\bar y)^\top$,
//! $$\mathrm{NRC3}(\gamma)=\Big\lVert\frac{WW^\top}{\lVert WW^\top\rVert_F}-\frac{(\Sigma^{1/2}-\gamma^{1/2}I)_+}{\lVert(\Sigma^{1/2}-\gamma^{1/2}I)_+\rVert_F}\Big\rVert_F^2,
//! \qquad\mathrm{NRC3}=\min_{0\le\gamma\le\lambda_{\min}(\Sigma)}\mathrm{NRC3}(\gamma),$$
//! the positive part taken on eigenvalues (it is the identity map on $[0,\lambda_{\min}]$, the
//! paper's range, where $\Sigma^{1/2}-\gamma^{1/2}I\succeq0$). The minimum over $\gamma$ is found by a
//! 201-point grid and golden-section refinement; [`nrc3`] also evaluates a given $\gamma$ (for the
//! UFM, $\gamma=N\lambda_W\lambda_H$: see [`crate::regression`]). The centring and the squared norms
//! follow the paper's definitions as restated by the public `nc_toolbox` implementation
//! (`nrc1_collapse`, `nrc2_duality`, `nrc3_structure`); the paper's own text was not available to
//! us, so these choices are documented rather than quoted. All three vanish at the UFM optimum
//! when $d\ge n$ and $\gamma\le\lambda_{\min}(\Sigma)$.

use crate::error::{Error, Result};
use crate::linalg::{sym_eigen, thin_svd};
use ndarray::{Array2, ArrayView2, Axis};
use serde::Serialize;

/// NRC1–NRC3 and the sizes they were computed from.
#[derive(Clone, Debug, Serialize)]
pub struct NrcReport {
    /// Samples $N$.
    pub n_samples: usize,
    /// Feature dimension $d$.
    pub feature_dim: usize,
    /// Target dimension $n$.
    pub n_outputs: usize,
    /// Feature collapse onto the top-$n$ principal subspace.
    pub nrc1: f64,
    /// Feature collapse onto the row space of $W$ (needs $W$).
    pub nrc2: Option<f64>,
    /// Gram of $W$ against $(\Sigma^{1/2}-\gamma^{1/2}I)_+$ (needs $W$).
    pub nrc3: Option<f64>,
    /// The $\gamma$ used for NRC3 (given, or the minimiser over $[0,\lambda_{\min}(\Sigma)]$).
    pub nrc3_gamma: Option<f64>,
}

fn check_finite(a: &ArrayView2<f64>, what: &str) -> Result<()> {
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        let c = a.ncols().max(1);
        return Err(Error::NonFinite {
            what: format!("{what} (row {}, column {})", i / c, i % c),
        });
    }
    Ok(())
}

/// $\hat h_i=(h_i-\bar h)/\lVert h_i-\bar h\rVert$ for the rows of `h` ($N\times d$), and the
/// centred rows.
pub fn centred_unit_rows(h: ArrayView2<f64>) -> Result<(Array2<f64>, Array2<f64>)> {
    if h.nrows() < 2 || h.ncols() == 0 {
        return Err(Error::shape(
            "features",
            "N x d with N >= 2 and d >= 1",
            format!("{}x{}", h.nrows(), h.ncols()),
        ));
    }
    check_finite(&h, "the features")?;
    let mean = h.mean_axis(Axis(0)).expect("N >= 2");
    let centred = &h - &mean;
    let mut unit = centred.clone();
    for mut r in unit.rows_mut() {
        let n = r.dot(&r).sqrt();
        if n > 0.0 {
            r.mapv_inplace(|v| v / n);
        }
    }
    Ok((centred, unit))
}

/// $\frac1N\sum_i\lVert u_i-QQ^\top u_i\rVert^2$ for the rows $u_i$ and orthonormal columns $Q$.
fn mean_residual(unit: &Array2<f64>, q: &Array2<f64>) -> f64 {
    let rec = unit.dot(q).dot(&q.t());
    let diff = unit - &rec;
    diff.iter().map(|v| v * v).sum::<f64>() / unit.nrows() as f64
}

/// NRC1 of the rows of `h` ($N\times d$) for target dimension `n_out`.
pub fn nrc1(h: ArrayView2<f64>, n_out: usize) -> Result<f64> {
    if n_out == 0 {
        return Err(Error::param(
            "outputs",
            "the target dimension n must be >= 1",
        ));
    }
    let (centred, unit) = centred_unit_rows(h)?;
    let d = centred.ncols();
    let cov = centred.t().dot(&centred) / centred.nrows() as f64;
    let (_, vecs) = sym_eigen(cov.view())?;
    let k = n_out.min(d);
    let q = vecs.slice(ndarray::s![.., d - k..]).to_owned();
    Ok(mean_residual(&unit, &q))
}

/// Orthonormal basis (columns, $d\times r$) of the row space of `w` ($n\times d$).
fn row_space(w: ArrayView2<f64>) -> Result<Array2<f64>> {
    check_finite(&w, "W")?;
    let (u, s, _) = thin_svd(w.t())?;
    let top = s.first().copied().unwrap_or(0.0);
    if !(top > 0.0) {
        return Err(Error::Data(
            "W is zero, so its rows span nothing (NRC2 is undefined)".into(),
        ));
    }
    let r = s.iter().filter(|&&v| v > 1e-12 * top).count();
    Ok(u.slice(ndarray::s![.., ..r]).to_owned())
}

/// NRC2 of the rows of `h` ($N\times d$) against the rows of `w` ($n\times d$).
pub fn nrc2(h: ArrayView2<f64>, w: ArrayView2<f64>) -> Result<f64> {
    if w.ncols() != h.ncols() {
        return Err(Error::shape(
            "W (n x d, the features' d)",
            format!("{} columns", h.ncols()),
            format!("{}x{}", w.nrows(), w.ncols()),
        ));
    }
    let (_, unit) = centred_unit_rows(h)?;
    let q = row_space(w)?;
    Ok(mean_residual(&unit, &q))
}

/// $\Sigma=\frac1N\sum_i(y_i-\bar y)(y_i-\bar y)^\top$ of the rows of `y` ($N\times n$).
pub fn target_covariance(y: ArrayView2<f64>) -> Result<Array2<f64>> {
    if y.nrows() < 2 || y.ncols() == 0 {
        return Err(Error::shape(
            "targets",
            "N x n with N >= 2 and n >= 1",
            format!("{}x{}", y.nrows(), y.ncols()),
        ));
    }
    check_finite(&y, "the targets")?;
    let mean = y.mean_axis(Axis(0)).expect("N >= 2");
    let c = &y - &mean;
    Ok(c.t().dot(&c) / y.nrows() as f64)
}

/// NRC3 and the $\gamma$ it used.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Nrc3 {
    /// $\mathrm{NRC3}(\gamma)$.
    pub value: f64,
    /// $\gamma$.
    pub gamma: f64,
    /// $\lambda_{\min}(\Sigma)$, the top of the search range.
    pub gamma_max: f64,
}

struct Nrc3Eval {
    a: Array2<f64>,
    vals: Vec<f64>,
    vecs: Array2<f64>,
}

impl Nrc3Eval {
    fn new(w: ArrayView2<f64>, sigma: ArrayView2<f64>) -> Result<Self> {
        let n = sigma.nrows();
        if w.nrows() != n {
            return Err(Error::shape(
                "W (n x d with n the target dimension)",
                format!("{n} rows"),
                format!("{}x{}", w.nrows(), w.ncols()),
            ));
        }
        check_finite(&w, "W")?;
        let ww = w.dot(&w.t());
        let nn = ww.iter().map(|v| v * v).sum::<f64>().sqrt();
        if !(nn > 0.0) {
            return Err(Error::Data("W is zero, so NRC3 is undefined".into()));
        }
        let (vals, vecs) = sym_eigen(sigma)?;
        // Eigenvalues at the rounding level of zero (rank-deficient targets) are zero: their
        // square roots (~1e-8) would otherwise enter Σ^{1/2}.
        let top = vals.iter().fold(0.0f64, |m, v| m.max(*v));
        Ok(Nrc3Eval {
            a: ww / nn,
            vals: vals
                .into_iter()
                .map(|v| if v > 1e-14 * top { v } else { 0.0 })
                .collect(),
            vecs,
        })
    }

    fn at(&self, gamma: f64) -> f64 {
        let g = gamma.max(0.0).sqrt();
        let coef: Vec<f64> = self.vals.iter().map(|&v| (v.sqrt() - g).max(0.0)).collect();
        let nt = coef.iter().map(|c| c * c).sum::<f64>().sqrt();
        if !(nt > 0.0) {
            return f64::NAN;
        }
        let n = self.vals.len();
        let t = Array2::from_shape_fn((n, n), |(i, j)| {
            (0..n)
                .map(|k| coef[k] * self.vecs[[i, k]] * self.vecs[[j, k]])
                .sum::<f64>()
                / nt
        });
        (&self.a - &t).iter().map(|v| v * v).sum()
    }
}

/// NRC3 of `w` ($n\times d$) against the covariance of the targets `y` ($N\times n$), at the
/// given $\gamma$ or minimised over $[0,\lambda_{\min}(\Sigma)]$.
pub fn nrc3(w: ArrayView2<f64>, y: ArrayView2<f64>, gamma: Option<f64>) -> Result<Nrc3> {
    let sigma = target_covariance(y)?;
    let e = Nrc3Eval::new(w, sigma.view())?;
    let gamma_max = e.vals[0];
    if let Some(g) = gamma {
        if !(g.is_finite() && g >= 0.0) {
            return Err(Error::param(
                "gamma",
                format!("must be finite and >= 0, got {g}"),
            ));
        }
        return Ok(Nrc3 {
            value: e.at(g),
            gamma: g,
            gamma_max,
        });
    }
    // Grid, then golden section around the best grid point. γ = λ_min exactly can zero the
    // target when Σ ∝ I, so the top is pulled in by a relative 1e-12.
    let hi = gamma_max * (1.0 - 1e-12);
    let m = 200;
    let grid: Vec<f64> = (0..=m).map(|i| hi * i as f64 / m as f64).collect();
    let vals: Vec<f64> = grid.iter().map(|&g| e.at(g)).collect();
    let best = (0..=m)
        .filter(|&i| vals[i].is_finite())
        .min_by(|&a, &b| vals[a].total_cmp(&vals[b]))
        .ok_or_else(|| Error::numerical("NRC3", "the target matrix vanishes on the whole range"))?;
    let (mut a, mut b) = (grid[best.saturating_sub(1)], grid[(best + 1).min(m)]);
    let r = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - r * (b - a);
    let mut d = a + r * (b - a);
    let (mut fc, mut fd) = (e.at(c), e.at(d));
    for _ in 0..100 {
        if fc <= fd || fd.is_nan() {
            b = d;
            d = c;
            fd = fc;
            c = b - r * (b - a);
            fc = e.at(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + r * (b - a);
            fd = e.at(d);
        }
    }
    let mut best_g = grid[best];
    let mut best_v = vals[best];
    for g in [a, b, c, d] {
        let v = e.at(g);
        if v < best_v {
            best_v = v;
            best_g = g;
        }
    }
    Ok(Nrc3 {
        value: best_v,
        gamma: best_g,
        gamma_max,
    })
}

/// All three metrics: features `h` ($N\times d$), targets `y` ($N\times n$), optional head `w`
/// ($n\times d$) and optional fixed $\gamma$ for NRC3.
pub fn nrc_metrics(
    h: ArrayView2<f64>,
    y: ArrayView2<f64>,
    w: Option<ArrayView2<f64>>,
    gamma: Option<f64>,
) -> Result<NrcReport> {
    if h.nrows() != y.nrows() {
        return Err(Error::shape(
            "targets (one row per sample, like the features)",
            format!("{} rows", h.nrows()),
            format!("{}x{}", y.nrows(), y.ncols()),
        ));
    }
    let n_out = y.ncols();
    let nrc1 = nrc1(h, n_out)?;
    let (nrc2, nrc3v, g) = match w {
        Some(w) => {
            let r3 = nrc3(w, y, gamma)?;
            (Some(nrc2(h, w)?), Some(r3.value), Some(r3.gamma))
        }
        None => (None, None, None),
    };
    Ok(NrcReport {
        n_samples: h.nrows(),
        feature_dim: h.ncols(),
        n_outputs: n_out,
        nrc1,
        nrc2,
        nrc3: nrc3v,
        nrc3_gamma: g,
    })
}
