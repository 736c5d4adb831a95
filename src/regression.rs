//! The UFM for multivariate regression and its closed-form optimum (neural regression collapse).
//!
//! Andriopoulos, Dong, Guo, Zhao & Ross, *The Prevalence of Neural Collapse in Neural
//! Multivariate Regression* (NeurIPS 2024, arXiv 2409.04180): targets $y_i\in\mathbb R^n$
//! ($Y\in\mathbb R^{n\times N}$), free features $H\in\mathbb R^{d\times N}$, a linear head
//! $W\in\mathbb R^{n\times d}$ and an unregularised bias $b\in\mathbb R^n$. In this crate's
//! normalisation (the same as its MSE UFM),
//! $$f(W,H,b)=\frac1{2N}\lVert WH+b\mathbf 1^\top-Y\rVert_F^2+\frac{\lambda_W}2\lVert W\rVert_F^2+\frac{\lambda_H}2\lVert H\rVert_F^2 .$$
//!
//! # Closed form (derived here; checked against L-BFGS in `tests/geom_regress.rs`)
//! Minimising over $b$ centres the residual: $b=\bar y-W\bar h$; since $\lVert H\rVert_F\ge\lVert H(I-\frac1N\mathbf 1\mathbf 1^\top)\rVert_F$ the
//! optimal $H$ is centred and $b^\star=\bar y$. With $Z=WH$ and
//! $\min_{WH=Z}\frac{\lambda_W}2\lVert W\rVert^2+\frac{\lambda_H}2\lVert H\rVert^2=\sqrt{\lambda_W\lambda_H}\lVert Z\rVert_*$
//! (for $\operatorname{rank}Z\le d$) the problem becomes
//! $\min_{\operatorname{rank}Z\le d}\frac1{2N}\lVert Z-\tilde Y\rVert_F^2+\sqrt{\lambda_W\lambda_H}\lVert Z\rVert_*$ with
//! $\tilde Y=Y-\bar y\mathbf 1^\top=U\operatorname{diag}(s)V^\top$. By von Neumann's trace inequality the optimum
//! shares the singular vectors of $\tilde Y$ and thresholds the top $d$ singular values:
//! $$Z^\star=\sum_{i\le\min(d,n)}(s_i-c)_+\,u_iv_i^\top,\qquad c=N\sqrt{\lambda_W\lambda_H},$$
//! factored in balance as $W^\star=(\lambda_H/\lambda_W)^{1/4}U\operatorname{diag}(z)^{1/2}$,
//! $H^\star=(\lambda_W/\lambda_H)^{1/4}\operatorname{diag}(z)^{1/2}V^\top$ (up to a rotation $R\in O(d)$), so
//! $$f^\star=\frac1{2N}\sum_i(s_i-z_i)^2+\sqrt{\lambda_W\lambda_H}\sum_iz_i ,\qquad z_i=(s_i-c)_+\ (i\le d),\ 0\ (i>d).$$
//! With the target covariance $\Sigma=\frac1N\tilde Y\tilde Y^\top=U\operatorname{diag}(s^2/N)U^\top$, i.e. $s_i=\sqrt N\,\sigma_i(\Sigma^{1/2})$:
//! $$W^\star W^{\star\top}=\sqrt{\tfrac{\lambda_H}{\lambda_W}}\,\sqrt N\,\big(\Sigma^{1/2}-\gamma^{1/2}I\big)_+,\qquad\gamma=N\lambda_W\lambda_H$$
//! (top $d$ eigen-directions), the NRC3 form ([`crate::metrics::nrc`]); the features lie in the
//! span of the top $\min(d,n)$ principal directions (NRC1) and of the rows of $W$ (NRC2).
//! **Normalisation.** If the feature penalty is written per sample, $\frac{\lambda_H}{2N}\lVert H\rVert^2$,
//! then $c=\sqrt{N\lambda_W\lambda_H}$ and $\gamma=\lambda_W\lambda_H$ (the paper's $\gamma$ and the
//! $\sqrt{M\lambda_W\lambda_H}$ threshold of its Lemma in the un-normalised $\frac12\lVert\cdot\rVert^2$ form);
//! ours is $\gamma=N\lambda_W\lambda_H$. Without a bias the same holds with $\tilde Y=Y$.
//! With $\lambda_W\lambda_H=0$ there is no collapse (any interpolating factorization is optimal).

use crate::error::{Error, Result};
use crate::linalg::thin_svd;
use crate::solver::Objective;
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

/// A validated regression-UFM instance. Parameters are one flat vector
/// $x=(W, H^\top, b)$: $W$ ($n\times d$) row-major, $H^\top$ ($N\times d$, one feature per row),
/// then $b$ ($n$) when the model has a bias.
#[derive(Clone, Debug)]
pub struct RegressionProblem {
    y: Array2<f64>,
    dim: usize,
    lambda_w: f64,
    lambda_h: f64,
    bias: bool,
}

impl RegressionProblem {
    /// `targets` is $N\times n$ (one row per sample, $Y^\top$).
    pub fn new(
        targets: Array2<f64>,
        feature_dim: usize,
        lambda_w: f64,
        lambda_h: f64,
        bias: bool,
    ) -> Result<Self> {
        let (n_samples, n_out) = targets.dim();
        if n_samples < 2 || n_out == 0 {
            return Err(Error::shape(
                "targets",
                "N x n with N >= 2 samples and n >= 1 outputs",
                format!("{n_samples}x{n_out}"),
            ));
        }
        if let Some(i) = targets.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("the targets (sample {}, output {})", i / n_out, i % n_out),
            });
        }
        if feature_dim == 0 {
            return Err(Error::param("dim", "the feature dimension d must be >= 1"));
        }
        for (name, v) in [("lambda-w", lambda_w), ("lambda-h", lambda_h)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::param(
                    name,
                    format!("must be finite and >= 0, got {v}"),
                ));
            }
        }
        Ok(RegressionProblem {
            y: targets.as_standard_layout().to_owned(),
            dim: feature_dim,
            lambda_w,
            lambda_h,
            bias,
        })
    }

    /// $N$.
    pub fn n_samples(&self) -> usize {
        self.y.nrows()
    }
    /// $n$.
    pub fn n_outputs(&self) -> usize {
        self.y.ncols()
    }
    /// $d$.
    pub fn feature_dim(&self) -> usize {
        self.dim
    }
    /// $\lambda_W$.
    pub fn lambda_w(&self) -> f64 {
        self.lambda_w
    }
    /// $\lambda_H$.
    pub fn lambda_h(&self) -> f64 {
        self.lambda_h
    }
    /// Whether $b$ is a parameter.
    pub fn has_bias(&self) -> bool {
        self.bias
    }
    /// The targets, $N\times n$.
    pub fn targets(&self) -> ArrayView2<'_, f64> {
        self.y.view()
    }
    /// $nd+Nd\,(+n)$.
    pub fn n_params(&self) -> usize {
        (self.n_outputs() + self.n_samples()) * self.dim
            + if self.bias { self.n_outputs() } else { 0 }
    }

    /// Views $(W, H^\top, b)$ of a parameter vector (panics on a wrong length: check first).
    pub fn split<'a>(
        &self,
        x: &'a [f64],
    ) -> (
        ArrayView2<'a, f64>,
        ArrayView2<'a, f64>,
        Option<ArrayView1<'a, f64>>,
    ) {
        assert_eq!(
            x.len(),
            self.n_params(),
            "parameter vector has the wrong length"
        );
        let (n, m, d) = (self.n_outputs(), self.n_samples(), self.dim);
        let (w, rest) = x.split_at(n * d);
        let (h, b) = rest.split_at(m * d);
        (
            ArrayView2::from_shape((n, d), w).expect("shape"),
            ArrayView2::from_shape((m, d), h).expect("shape"),
            self.bias.then(|| ArrayView1::from(b)),
        )
    }

    /// Assembles $x$ from $W$ ($n\times d$), $H^\top$ ($N\times d$) and $b$.
    pub fn join(
        &self,
        w: ArrayView2<f64>,
        ht: ArrayView2<f64>,
        b: Option<ArrayView1<f64>>,
    ) -> Result<Vec<f64>> {
        let (n, m, d) = (self.n_outputs(), self.n_samples(), self.dim);
        if w.dim() != (n, d) {
            return Err(Error::shape(
                "W",
                format!("{n}x{d}"),
                format!("{:?}", w.dim()),
            ));
        }
        if ht.dim() != (m, d) {
            return Err(Error::shape(
                "H^T",
                format!("{m}x{d}"),
                format!("{:?}", ht.dim()),
            ));
        }
        let mut x: Vec<f64> = w.iter().chain(ht.iter()).copied().collect();
        if self.bias {
            match b {
                Some(b) if b.len() == n => x.extend(b.iter()),
                Some(b) => return Err(Error::shape("b", format!("{n}"), format!("{}", b.len()))),
                None => x.extend(std::iter::repeat_n(0.0, n)),
            }
        }
        Ok(x)
    }

    /// Seeded Gaussian start ($b=0$).
    pub fn random_point(&self, seed: u64, scale: f64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let k = (self.n_outputs() + self.n_samples()) * self.dim;
        let mut x: Vec<f64> = (0..k)
            .map(|_| {
                let e: f64 = StandardNormal.sample(&mut rng);
                scale * e
            })
            .collect();
        x.resize(self.n_params(), 0.0);
        x
    }

    /// Residual $R^\top=H^\top W^\top+\mathbf 1b^\top-Y^\top$ ($N\times n$).
    fn residual(&self, x: &[f64]) -> Array2<f64> {
        let (w, ht, b) = self.split(x);
        let mut r = ht.dot(&w.t()) - &self.y;
        if let Some(b) = b {
            r += &b;
        }
        r
    }

    fn reg(&self, x: &[f64]) -> f64 {
        let (w, ht, _) = self.split(x);
        0.5 * (self.lambda_w * w.iter().map(|v| v * v).sum::<f64>()
            + self.lambda_h * ht.iter().map(|v| v * v).sum::<f64>())
    }

    /// $f(x)$.
    pub fn value(&self, x: &[f64]) -> f64 {
        let r = self.residual(x);
        r.iter().map(|v| v * v).sum::<f64>() / (2.0 * self.n_samples() as f64) + self.reg(x)
    }

    /// $f(x)$ and $\nabla f(x)$: $\nabla_W=\frac1NRH^\top+\lambda_WW$,
    /// $\nabla_{H^\top}=\frac1NR^\top W+\lambda_HH^\top$, $\nabla_b=\frac1NR\mathbf 1$.
    pub fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let inv = 1.0 / self.n_samples() as f64;
        let r = self.residual(x);
        let (w, ht, _) = self.split(x);
        let gw = r.t().dot(&ht) * inv + &w * self.lambda_w;
        let gh = r.dot(&w) * inv + &ht * self.lambda_h;
        let mut k = 0;
        for v in gw.iter().chain(gh.iter()) {
            grad[k] = *v;
            k += 1;
        }
        if self.bias {
            for v in r.sum_axis(Axis(0)).iter() {
                grad[k] = v * inv;
                k += 1;
            }
        }
        r.iter().map(|v| v * v).sum::<f64>() * 0.5 * inv + self.reg(x)
    }

    /// Exact Hessian-vector product.
    pub fn hvp(&self, x: &[f64], v: &[f64], out: &mut [f64]) {
        let inv = 1.0 / self.n_samples() as f64;
        let r = self.residual(x);
        let (w, ht, _) = self.split(x);
        let (vw, vht, vb) = self.split(v);
        let mut dr = vht.dot(&w.t()) + ht.dot(&vw.t());
        if let Some(vb) = vb {
            dr += &vb;
        }
        let ow = (dr.t().dot(&ht) + r.t().dot(&vht)) * inv + &vw * self.lambda_w;
        let oh = (dr.dot(&w) + r.dot(&vw)) * inv + &vht * self.lambda_h;
        let mut k = 0;
        for val in ow.iter().chain(oh.iter()) {
            out[k] = *val;
            k += 1;
        }
        if self.bias {
            for val in dr.sum_axis(Axis(0)).iter() {
                out[k] = val * inv;
                k += 1;
            }
        }
    }

    /// Targets centred when the model has a bias, $\tilde Y^\top$ ($N\times n$).
    pub fn centred_targets(&self) -> Array2<f64> {
        if self.bias {
            let mean = self.y.mean_axis(Axis(0)).expect("N >= 2");
            &self.y - &mean
        } else {
            self.y.clone()
        }
    }
}

impl Objective<f64> for RegressionProblem {
    fn dim(&self) -> usize {
        self.n_params()
    }
    fn value(&self, x: &[f64]) -> f64 {
        RegressionProblem::value(self, x)
    }
    fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        RegressionProblem::value_grad(self, x, grad)
    }
    fn hvp(&self, x: &[f64], v: &[f64], out: &mut [f64]) -> Result<()> {
        RegressionProblem::hvp(self, x, v, out);
        Ok(())
    }
}

/// The closed-form global minimum (see the [module docs](self)).
#[derive(Clone, Debug, Serialize)]
pub struct RegressionOptimum {
    /// $f^\star$ from the formula.
    pub objective: f64,
    /// Singular values $s_i$ of $\tilde Y$ (descending).
    pub singular_values: Vec<f64>,
    /// $c=N\sqrt{\lambda_W\lambda_H}$.
    pub threshold: f64,
    /// Thresholded values $z_i$ (kept: top $\min(d,n)$).
    pub kept: Vec<f64>,
    /// $\operatorname{rank}Z^\star$.
    pub rank: usize,
    /// $\gamma=N\lambda_W\lambda_H$ of the NRC3 form.
    pub gamma: f64,
    /// $W^\star$ ($n\times d$).
    #[serde(skip)]
    pub w: Array2<f64>,
    /// $H^{\star\top}$ ($N\times d$).
    #[serde(skip)]
    pub ht: Array2<f64>,
    /// $b^\star$ ($\bar y$, or `None` without a bias).
    #[serde(skip)]
    pub b: Option<Array1<f64>>,
}

impl RegressionOptimum {
    /// The optimum as a parameter vector of `p`.
    pub fn point(&self, p: &RegressionProblem) -> Result<Vec<f64>> {
        p.join(
            self.w.view(),
            self.ht.view(),
            self.b.as_ref().map(|b| b.view()),
        )
    }
}

/// The global minimum by singular-value thresholding (needs $\lambda_W,\lambda_H>0$).
pub fn closed_form(p: &RegressionProblem) -> Result<RegressionOptimum> {
    let (lw, lh) = (p.lambda_w(), p.lambda_h());
    if !(lw > 0.0 && lh > 0.0) {
        return Err(Error::param(
            "lambda-w",
            format!(
                "the closed form needs lambda-w > 0 and lambda-h > 0 (got {lw}, {lh}); without \
                 regularisation every interpolating factorization is optimal and there is no collapse"
            ),
        ));
    }
    let (m, n, d) = (p.n_samples(), p.n_outputs(), p.feature_dim());
    let yt = p.centred_targets(); // N × n = Ỹᵀ = V S Uᵀ
    let (vmat, sv, umat) = thin_svd(yt.view())?; // V: N×r0, U: n×r0
    let c = m as f64 * (lw * lh).sqrt();
    let keep = d.min(sv.len());
    let kept: Vec<f64> = sv[..keep].iter().map(|&s| (s - c).max(0.0)).collect();
    let rank = kept.iter().filter(|&&z| z > 0.0).count();
    let (cw, ch) = ((lh / lw).powf(0.25), (lw / lh).powf(0.25));
    let mut w = Array2::zeros((n, d));
    let mut ht = Array2::zeros((m, d));
    for j in 0..rank {
        let z = kept[j].sqrt();
        w.slice_mut(s![.., j]).assign(&(&umat.column(j) * (cw * z)));
        ht.slice_mut(s![.., j])
            .assign(&(&vmat.column(j) * (ch * z)));
    }
    let mut sq = 0.0;
    let mut nuc = 0.0;
    for (i, &s) in sv.iter().enumerate() {
        let z = if i < keep { kept[i] } else { 0.0 };
        sq += (s - z) * (s - z);
        nuc += z;
    }
    let objective = sq / (2.0 * m as f64) + (lw * lh).sqrt() * nuc;
    let b = p
        .has_bias()
        .then(|| p.targets().mean_axis(Axis(0)).expect("N >= 2"));
    Ok(RegressionOptimum {
        objective,
        singular_values: sv,
        threshold: c,
        kept,
        rank,
        gamma: m as f64 * lw * lh,
        w,
        ht,
        b,
    })
}

/// Seeded Gaussian targets ($N\times n$) with covariance $\Sigma_{ij}=\rho^{|i-j|}$ scaled by
/// $s_i=1+i$ (distinct variances, correlated outputs) plus mean $(1,\dots,1)$.
pub fn random_targets(
    n_samples: usize,
    n_out: usize,
    correlation: f64,
    seed: u64,
) -> Result<Array2<f64>> {
    if !(correlation.abs() < 1.0) {
        return Err(Error::param(
            "correlation",
            format!("must be in (-1, 1), got {correlation}"),
        ));
    }
    if n_samples < 2 || n_out == 0 {
        return Err(Error::param(
            "samples",
            format!("need N >= 2 samples and n >= 1 outputs, got {n_samples} and {n_out}"),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // AR(1) construction: y_0 = e_0, y_j = ρ y_{j-1} + sqrt(1-ρ²) e_j gives corr ρ^{|i-j|}.
    let mut y = Array2::zeros((n_samples, n_out));
    let a = (1.0 - correlation * correlation).sqrt();
    for i in 0..n_samples {
        let mut prev = 0.0;
        for j in 0..n_out {
            let e: f64 = StandardNormal.sample(&mut rng);
            let v = if j == 0 {
                e
            } else {
                correlation * prev + a * e
            };
            prev = v;
            y[[i, j]] = 1.0 + (1.0 + j as f64) * v;
        }
    }
    Ok(y)
}

/// Reads a 2-D `f64` or `f32` `.npy` array (either memory order), naming `what` in errors.
pub fn read_npy_matrix(path: &std::path::Path, what: &str) -> Result<Array2<f64>> {
    use ndarray_npy::ReadNpyExt;
    let open = || std::fs::File::open(path).map_err(|e| Error::io("open", path, e));
    match Array2::<f64>::read_npy(open()?) {
        Ok(a) => Ok(a),
        Err(e64) => match Array2::<f32>::read_npy(open()?) {
            Ok(a) => Ok(a.mapv(f64::from)),
            Err(_) => Err(Error::format(
                path,
                format!("{what}: expected a 2-D f64 or f32 .npy array ({e64})"),
            )),
        },
    }
}

/// Arrays of a regression bundle (`ufm regress --save`): features as $N\times d$ rows (from
/// `H`, $d\times N$, or `features`, $N\times d$), and optionally `W` ($n\times d$) and
/// `targets` ($N\times n$).
#[derive(Clone, Debug)]
pub struct RegressionBundle {
    /// Features, one row per sample.
    pub features: Array2<f64>,
    /// $W$.
    pub w: Option<Array2<f64>>,
    /// Targets, one row per sample.
    pub targets: Option<Array2<f64>>,
}

/// Reads a regression bundle (`.npz`).
pub fn read_bundle(path: &std::path::Path) -> Result<RegressionBundle> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut npz = ndarray_npy::NpzReader::new(f)
        .map_err(|e| Error::format(path, format!("not an .npz file: {e}")))?;
    let names = npz
        .names()
        .map_err(|e| Error::format(path, format!("cannot list the arrays: {e}")))?;
    let has = |n: &str| names.iter().any(|m| m == n || m == &format!("{n}.npy"));
    let mut get = |n: &str| -> Result<Option<Array2<f64>>> {
        if !has(n) {
            return Ok(None);
        }
        let a: std::result::Result<Array2<f64>, _> = npz.by_name(n);
        match a {
            Ok(a) => Ok(Some(a)),
            Err(_) => {
                let a: Array2<f32> = npz.by_name(n).map_err(|e| {
                    Error::format(path, format!("array `{n}`: expected 2-D f64/f32 ({e})"))
                })?;
                Ok(Some(a.mapv(f64::from)))
            }
        }
    };
    let features = match (get("features")?, get("H")?) {
        (Some(f), _) => f,
        (None, Some(h)) => h.t().to_owned(),
        (None, None) => {
            return Err(Error::format(
                path,
                format!("no `features` (N x d) or `H` (d x N) array; the file holds {names:?}"),
            ))
        }
    };
    Ok(RegressionBundle {
        features,
        w: get("W")?,
        targets: get("targets")?,
    })
}

/// Saves a regression point as `.npz`: `W` ($n\times d$), `H` ($d\times N$), `b` ($n$, zeros
/// without a bias) and `targets` ($N\times n$).
pub fn save_npz(path: &std::path::Path, p: &RegressionProblem, x: &[f64]) -> Result<()> {
    if x.len() != p.n_params() {
        return Err(Error::shape(
            "point",
            format!("{} parameters", p.n_params()),
            format!("{}", x.len()),
        ));
    }
    let (w, ht, b) = p.split(x);
    let h = ht.t().to_owned();
    let b: Array1<f64> = b.map_or_else(|| Array1::zeros(p.n_outputs()), |b| b.to_owned());
    let y = p.targets().to_owned();
    let w = w.to_owned();
    crate::io::write_atomic_with(path, |f| {
        let mut npz = ndarray_npy::NpzWriter::new(f);
        let err = |e: ndarray_npy::WriteNpzError| std::io::Error::other(e.to_string());
        npz.add_array("W", &w).map_err(err)?;
        npz.add_array("H", &h).map_err(err)?;
        npz.add_array("b", &b).map_err(err)?;
        npz.add_array("targets", &y).map_err(err)?;
        npz.finish().map_err(err)?;
        Ok(())
    })
}
