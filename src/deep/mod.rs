//! Deep unconstrained feature models: $L$ layers on top of free features.
//!
//! With $K$ classes of $n_k$ samples ($N=\sum_kn_k$, samples grouped by class), free features
//! $H\in\mathbb R^{d_0\times N}$, weights $W_l\in\mathbb R^{d_l\times d_{l-1}}$ ($d_L=K$) and an
//! activation $\sigma$ (identity or ReLU), the deep UFM minimises
//! $$f(H,W_1,\dots,W_L)=\frac1N\sum_{i=1}^N\ell\big((W_L\,\sigma(W_{L-1}\cdots\sigma(W_1H)))_{:,i},\,y_i\big)+\sum_{l=1}^L\frac{\lambda_l}2\lVert W_l\rVert_F^2+\frac{\lambda_H}2\lVert H\rVert_F^2 .$$
//! With the MSE loss $\ell(z,y)=\frac12\lVert z-e_y\rVert^2$ the data term is
//! $\frac1{2N}\lVert W_L\cdots W_1H-Y\rVert_F^2$.
//!
//! * **Deep linear UFM** ($\sigma=\mathrm{id}$): Dang, Tran, Osher, Tran-The, Ho & Nguyen,
//!   *Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data* (ICML 2023,
//!   arXiv 2301.00437); Súkeník, Mondelli & Lampert, *Deep Neural Collapse Is Provably Optimal
//!   for the Deep Unconstrained Features Model* (NeurIPS 2023, arXiv 2305.13165). For bias-free
//!   MSE [`linear`] certifies the global minimum in closed form for any depth and class sizes.
//! * **Deep ReLU UFM** ($\sigma=\max(\cdot,0)$, the "$L$-DUFM" of Súkeník et al. 2023 and of
//!   Súkeník, Lampert & Mondelli, *Neural Collapse versus Low-rank Bias: Is Deep Neural Collapse
//!   Really Optimal?*, NeurIPS 2024, arXiv 2405.14468): the ReLU follows each of
//!   $W_1,\dots,W_{L-1}$, never $H$ or the output. [`relu`] gives the loss of the best deep
//!   neural collapse (DNC) configuration exactly and [`srg`] a lower-loss low-rank
//!   configuration built on the triangular strongly regular graph.
//!
//! # Parameter layout
//! One flat vector $x=(H,W_1,\dots,W_L)$, each matrix row-major; $H$ is $d_0\times N$ (the
//! papers' orientation: column $i$ is the feature of sample $i$).
//!
//! # Gradient
//! Forward: $A_0=H$, $Z_l=W_lA_{l-1}$, $A_l=\sigma(Z_l)$ for $l<L$, output $Z_L$. With
//! $G_L=\frac1N\big\lbrack\nabla\ell(Z_{L,:,i},y_i)\big\rbrack_i$ and, going down, $G_{l-1}=(W_l^\top G_l)\odot\sigma'(Z_{l-1})$:
//! $$\nabla_{W_l}f=G_lA_{l-1}^\top+\lambda_lW_l,\qquad \nabla_Hf=W_1^\top G_1+\lambda_HH .$$
//! (ReLU's derivative is taken as $\mathbf 1\lbrack z>0\rbrack$; $f$ is not differentiable where a pre-activation
//! is exactly $0$, a set of measure zero.)

pub mod figures;
pub mod linear;
pub mod relu;
pub mod srg;

use crate::error::{Error, Result};
use crate::metrics::{nc1, nc2, nc3, ClassStats, GlobalMean};
use crate::solver::Objective;
use crate::ufm::Loss;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

/// The activation between layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// $\sigma(z)=z$: the deep linear UFM.
    #[default]
    Linear,
    /// $\sigma(z)=\max(z,0)$ after $W_1,\dots,W_{L-1}$: the deep ReLU UFM.
    Relu,
}

/// Unchecked description of a deep UFM instance; [`build`](Self::build) validates it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeepUfmConfig {
    /// Samples per class $n_k$ (length $K$).
    pub class_sizes: Vec<usize>,
    /// $d_0$, the dimension of the free features $H$.
    pub feature_dim: usize,
    /// Hidden widths $d_1,\dots,d_{L-1}$ (so the depth is $L$ = length + 1).
    pub hidden_widths: Vec<usize>,
    /// $\lambda_1,\dots,\lambda_L$, weight decay of each $W_l$.
    pub lambda_w: Vec<f64>,
    /// $\lambda_H$, weight decay of $H$.
    pub lambda_h: f64,
    /// The loss on the output logits.
    pub loss: Loss,
    /// Identity (deep linear) or ReLU.
    pub activation: Activation,
}

impl DeepUfmConfig {
    /// `n_layers` ($L\ge1$) weight matrices, every hidden width and $d_0$ equal to `width`,
    /// the given class sizes, MSE, linear, all $\lambda=10^{-3}$.
    pub fn new(class_sizes: Vec<usize>, n_layers: usize, width: usize) -> Self {
        DeepUfmConfig {
            class_sizes,
            feature_dim: width,
            hidden_widths: vec![width; n_layers.saturating_sub(1)],
            lambda_w: vec![1e-3; n_layers],
            lambda_h: 1e-3,
            loss: Loss::Mse,
            activation: Activation::Linear,
        }
    }

    /// Sets every $\lambda_l$ to `lambda_w` and $\lambda_H$ to `lambda_h`.
    pub fn lambdas(mut self, lambda_w: f64, lambda_h: f64) -> Self {
        self.lambda_w.iter_mut().for_each(|l| *l = lambda_w);
        self.lambda_h = lambda_h;
        self
    }

    /// Sets the loss.
    pub fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the activation.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<DeepUfm> {
        let k = crate::ufm::problem::check_class_sizes(&self.class_sizes)?;
        let n_layers = self.hidden_widths.len() + 1;
        if self.lambda_w.len() != n_layers {
            return Err(Error::param(
                "lambda",
                format!(
                    "{} weight decays for {n_layers} layers; give one per layer",
                    self.lambda_w.len()
                ),
            ));
        }
        if self.feature_dim == 0 || self.hidden_widths.contains(&0) {
            return Err(Error::param(
                "dim",
                "the feature dimension and every hidden width must be at least 1",
            ));
        }
        for &v in self.lambda_w.iter().chain(std::iter::once(&self.lambda_h)) {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::param(
                    "lambda",
                    format!("weight decays must be finite and >= 0, got {v}"),
                ));
            }
        }
        self.loss.validate()?;
        let n: usize = self.class_sizes.iter().sum();
        let mut dims = vec![self.feature_dim];
        dims.extend(&self.hidden_widths);
        dims.push(k);
        let mut offsets = vec![0usize];
        let mut total = self.feature_dim.checked_mul(n);
        for l in 1..=n_layers {
            offsets.push(total.unwrap_or(0));
            total = total.and_then(|t| {
                dims[l]
                    .checked_mul(dims[l - 1])
                    .and_then(|m| t.checked_add(m))
            });
        }
        let n_params =
            total.ok_or_else(|| Error::param("per-class", "problem too large to index"))?;
        let mut labels = Vec::with_capacity(n);
        for (c, &nk) in self.class_sizes.iter().enumerate() {
            labels.extend(std::iter::repeat_n(c as u32, nk));
        }
        Ok(DeepUfm {
            cfg: self,
            labels,
            dims,
            offsets,
            n_params,
        })
    }
}

/// A validated deep UFM instance (layout in the [module docs](self)).
#[derive(Clone, Debug)]
pub struct DeepUfm {
    cfg: DeepUfmConfig,
    labels: Vec<u32>,
    /// $d_0,\dots,d_L$.
    dims: Vec<usize>,
    /// Offset of $H$ (0) and of each $W_l$ in the flat vector.
    offsets: Vec<usize>,
    n_params: usize,
}

/// The forward pass at a point: $A_0=H,\dots,A_{L-1}$ and the pre-activations $Z_1,\dots,Z_L$.
#[derive(Clone, Debug)]
pub struct Forward {
    /// $A_0=H$, $A_l=\sigma(Z_l)$ for $l=1,\dots,L-1$ (the features entering $W_{l+1}$).
    pub features: Vec<Array2<f64>>,
    /// $Z_l=W_lA_{l-1}$ for $l=1,\dots,L$; $Z_L$ holds the logits.
    pub pre: Vec<Array2<f64>>,
}

impl DeepUfm {
    /// The configuration.
    pub fn config(&self) -> &DeepUfmConfig {
        &self.cfg
    }
    /// $L$, the number of weight matrices.
    pub fn n_layers(&self) -> usize {
        self.dims.len() - 1
    }
    /// $K$.
    pub fn n_classes(&self) -> usize {
        self.cfg.class_sizes.len()
    }
    /// $N$.
    pub fn n_samples(&self) -> usize {
        self.labels.len()
    }
    /// $n_k$.
    pub fn class_sizes(&self) -> &[usize] {
        &self.cfg.class_sizes
    }
    /// Labels, grouped by class.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
    /// $d_0,\dots,d_L$ ($d_L=K$).
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }
    /// $\lambda_l$ for $l=1..L$ (index 0 is $\lambda_1$).
    pub fn lambda_w(&self) -> &[f64] {
        &self.cfg.lambda_w
    }
    /// $\lambda_H$.
    pub fn lambda_h(&self) -> f64 {
        self.cfg.lambda_h
    }
    /// The loss.
    pub fn loss(&self) -> Loss {
        self.cfg.loss
    }
    /// The activation.
    pub fn activation(&self) -> Activation {
        self.cfg.activation
    }
    /// Length of the flat parameter vector.
    pub fn n_params(&self) -> usize {
        self.n_params
    }

    /// One line describing the instance.
    pub fn describe(&self) -> String {
        let sizes = &self.cfg.class_sizes;
        let balanced = sizes.iter().all(|&n| n == sizes[0]);
        let classes = if balanced {
            format!("K = {}, n = {} per class", sizes.len(), sizes[0])
        } else {
            format!("K = {}, class sizes {:?}", sizes.len(), sizes)
        };
        let lw = &self.cfg.lambda_w;
        let lam = if lw.iter().all(|&l| l == lw[0]) {
            format!("lambda_W = {:e}", lw[0])
        } else {
            format!("lambda_W = {lw:?}")
        };
        format!(
            "deep {} UFM: L = {} layers, widths {:?}, {classes}, {}, {lam}, lambda_H = {:e}",
            match self.cfg.activation {
                Activation::Linear => "linear",
                Activation::Relu => "ReLU",
            },
            self.n_layers(),
            &self.dims,
            self.cfg.loss,
            self.cfg.lambda_h
        )
    }

    /// Checks the length of a parameter vector.
    pub fn check_len(&self, what: &str, x: &[f64]) -> Result<()> {
        if x.len() != self.n_params {
            return Err(Error::shape(
                what,
                format!("{} parameters", self.n_params),
                format!("{}", x.len()),
            ));
        }
        Ok(())
    }

    /// Views $H$ ($d_0\times N$) and $W_1,\dots,W_L$ into `x` (length [`n_params`](Self::n_params)).
    pub fn split<'a>(&self, x: &'a [f64]) -> (ArrayView2<'a, f64>, Vec<ArrayView2<'a, f64>>) {
        assert_eq!(x.len(), self.n_params, "parameter vector length");
        let n = self.n_samples();
        let h = ArrayView2::from_shape((self.dims[0], n), &x[..self.offsets[1]]).expect("H");
        let ws = (1..=self.n_layers())
            .map(|l| {
                let end = if l == self.n_layers() {
                    self.n_params
                } else {
                    self.offsets[l + 1]
                };
                ArrayView2::from_shape((self.dims[l], self.dims[l - 1]), &x[self.offsets[l]..end])
                    .expect("W_l")
            })
            .collect();
        (h, ws)
    }

    fn split_mut<'a>(
        &self,
        x: &'a mut [f64],
    ) -> (ArrayViewMut2<'a, f64>, Vec<ArrayViewMut2<'a, f64>>) {
        assert_eq!(x.len(), self.n_params, "parameter vector length");
        let n = self.n_samples();
        let (h, mut rest) = x.split_at_mut(self.offsets[1]);
        let h = ArrayViewMut2::from_shape((self.dims[0], n), h).expect("H");
        let mut ws = Vec::with_capacity(self.n_layers());
        for l in 1..=self.n_layers() {
            let len = self.dims[l] * self.dims[l - 1];
            let (w, r) = rest.split_at_mut(len);
            rest = r;
            ws.push(ArrayViewMut2::from_shape((self.dims[l], self.dims[l - 1]), w).expect("W_l"));
        }
        (h, ws)
    }

    /// Packs $H$ and $W_1,\dots,W_L$ into a flat vector, checking every shape.
    pub fn join(&self, h: ArrayView2<f64>, ws: &[ArrayView2<f64>]) -> Result<Vec<f64>> {
        let n = self.n_samples();
        if h.dim() != (self.dims[0], n) {
            return Err(Error::shape(
                "H",
                format!("{}x{n}", self.dims[0]),
                format!("{}x{}", h.nrows(), h.ncols()),
            ));
        }
        if ws.len() != self.n_layers() {
            return Err(Error::shape(
                "weights",
                format!("{} matrices", self.n_layers()),
                format!("{}", ws.len()),
            ));
        }
        let mut x = Vec::with_capacity(self.n_params);
        x.extend(h.iter());
        for (l, w) in ws.iter().enumerate() {
            let want = (self.dims[l + 1], self.dims[l]);
            if w.dim() != want {
                return Err(Error::shape(
                    format!("W_{}", l + 1),
                    format!("{}x{}", want.0, want.1),
                    format!("{}x{}", w.nrows(), w.ncols()),
                ));
            }
            x.extend(w.iter());
        }
        Ok(x)
    }

    /// A random point: entries of $H$ are $\mathcal N(0,\text{scale}^2)$ and entries of $W_l$
    /// are $\mathcal N(0,\text{scale}^2/d_{l-1})$ (fan-in scaling, so that the product does not
    /// grow with the width), from `seed`.
    pub fn random_point(&self, seed: u64, scale: f64) -> Result<Vec<f64>> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::param(
                "init-scale",
                format!("must be finite and > 0, got {scale}"),
            ));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let normal =
            Normal::new(0.0, 1.0).map_err(|e| Error::param("init-scale", e.to_string()))?;
        let mut x = Vec::with_capacity(self.n_params);
        let nh = self.offsets[1];
        x.extend((0..nh).map(|_| scale * normal.sample(&mut rng)));
        for l in 1..=self.n_layers() {
            let s = scale / (self.dims[l - 1] as f64).sqrt();
            let len = self.dims[l] * self.dims[l - 1];
            x.extend((0..len).map(|_| s * normal.sample(&mut rng)));
        }
        Ok(x)
    }

    /// The forward pass at `x`.
    pub fn forward(&self, x: &[f64]) -> Forward {
        let (h, ws) = self.split(x);
        let l_count = self.n_layers();
        let mut features = Vec::with_capacity(l_count);
        let mut pre = Vec::with_capacity(l_count);
        features.push(h.to_owned());
        for (l, w) in ws.iter().enumerate() {
            let z = w.dot(&features[l]);
            if l + 1 < l_count {
                let a = match self.cfg.activation {
                    Activation::Linear => z.clone(),
                    Activation::Relu => z.mapv(|v| v.max(0.0)),
                };
                features.push(a);
            }
            pre.push(z);
        }
        Forward { features, pre }
    }

    /// The data term $\frac1N\sum_i\ell(z_i,y_i)$ and its gradient $G_L$ with respect to the
    /// logits (already divided by $N$).
    fn data_term(&self, logits: &Array2<f64>) -> (f64, Array2<f64>) {
        let (k, n) = logits.dim();
        let mut g = Array2::zeros((k, n));
        let mut z = vec![0.0; k];
        let mut total = 0.0;
        for i in 0..n {
            for c in 0..k {
                z[c] = logits[[c, i]];
            }
            total += self
                .cfg
                .loss
                .value_grad_inplace(&mut z, self.labels[i] as usize);
            for c in 0..k {
                g[[c, i]] = z[c] / n as f64;
            }
        }
        (total / n as f64, g)
    }

    fn regulariser(&self, x: &[f64]) -> f64 {
        let (h, ws) = self.split(x);
        let mut r = 0.5 * self.cfg.lambda_h * h.iter().map(|v| v * v).sum::<f64>();
        for (w, &lam) in ws.iter().zip(&self.cfg.lambda_w) {
            r += 0.5 * lam * w.iter().map(|v| v * v).sum::<f64>();
        }
        r
    }

    /// $f(x)$.
    pub fn value(&self, x: &[f64]) -> f64 {
        let fw = self.forward(x);
        let (data, _) = self.data_term(fw.pre.last().expect("L >= 1"));
        data + self.regulariser(x)
    }

    /// The data term $\frac1N\sum_i\ell$ alone (the objective without the weight decay).
    pub fn data_loss(&self, x: &[f64]) -> f64 {
        let fw = self.forward(x);
        self.data_term(fw.pre.last().expect("L >= 1")).0
    }

    /// $f(x)$, with $\nabla f(x)$ written into `grad` (formulas in the module docs).
    pub fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        assert_eq!(grad.len(), self.n_params, "gradient length");
        let fw = self.forward(x);
        let (data, mut g) = self.data_term(fw.pre.last().expect("L >= 1"));
        let value = data + self.regulariser(x);
        let (h, ws) = self.split(x);
        let (mut gh, mut gws) = self.split_mut(grad);
        for l in (0..self.n_layers()).rev() {
            // ∇W_{l+1} = G A_lᵀ + λ W_{l+1}
            let mut gw = g.dot(&fw.features[l].t());
            gw.scaled_add(self.cfg.lambda_w[l], &ws[l]);
            gws[l].assign(&gw);
            let mut down = ws[l].t().dot(&g);
            if l > 0 && self.cfg.activation == Activation::Relu {
                ndarray::Zip::from(&mut down)
                    .and(&fw.pre[l - 1])
                    .for_each(|d, &z| {
                        if !(z > 0.0) {
                            *d = 0.0;
                        }
                    });
            }
            g = down;
        }
        g.scaled_add(self.cfg.lambda_h, &h);
        gh.assign(&g);
        value
    }

    /// NC metrics of every layer's features at `x` (see [`LayerNc`]); `rank_tol` is the
    /// relative threshold for the numerical rank of the class-mean matrices.
    pub fn layer_nc(&self, x: &[f64], rank_tol: f64) -> Result<Vec<LayerNc>> {
        self.check_len("point", x)?;
        let fw = self.forward(x);
        let (_, ws) = self.split(x);
        let k = self.n_classes();
        let mut out = Vec::with_capacity(self.n_layers());
        for (l, a) in fw.features.iter().enumerate() {
            let d = a.nrows();
            let mut acc = ClassStats::new(k, d);
            acc.push(a.t(), &self.labels)?;
            let stats = acc.finish()?;
            let nc1 = nc1::nc1_pinv(&stats, GlobalMean::Weighted, None)?;
            let nc2_etf = nc2::nc2_h(&stats, GlobalMean::Weighted)?;
            let means = &stats.means; // K x d, uncentred
            let gram = means.dot(&means.t());
            // NaN as soon as one pair is undefined (a zero class mean): f64::max would skip it.
            let mut max_cos: f64 = 0.0;
            for i in 0..k {
                for j in 0..i {
                    let c = gram[[i, j]] / (gram[[i, i]] * gram[[j, j]]).sqrt();
                    max_cos = if c.is_nan() || max_cos.is_nan() {
                        f64::NAN
                    } else {
                        max_cos.max(c.abs())
                    };
                }
            }
            let norms: Vec<f64> = (0..k).map(|i| gram[[i, i]].sqrt()).collect();
            let sv = crate::linalg::singular_values(means.view())?;
            let rank = crate::certify::factor::numerical_rank(&sv, rank_tol);
            // Energy of W_{l+1}'s rows outside the span of the class means of A_l.
            let w = &ws[l];
            let nc3_span = span_residual(w, means.view(), rank_tol)?;
            let nc3_etf = if l + 1 == self.n_layers() {
                Some(nc3::nc3(&stats, w.view(), GlobalMean::Weighted)?)
            } else {
                None
            };
            out.push(LayerNc {
                layer: l,
                dim: d,
                nc1,
                nc2_etf,
                max_cos,
                mean_norms: norms,
                rank,
                nc3_span,
                nc3_etf,
            });
        }
        Ok(out)
    }
}

/// $\lVert(I-P)W^\top\rVert_F/\lVert W\rVert_F$ with $P$ the orthogonal projector onto the span
/// of the rows of `means` (directions with singular value above `rank_tol` times the largest).
fn span_residual(w: &ArrayView2<f64>, means: ArrayView2<f64>, rank_tol: f64) -> Result<f64> {
    let wn = w.iter().map(|v| v * v).sum::<f64>();
    if !(wn > 0.0) {
        return Ok(f64::NAN);
    }
    // Mᵀ (d x K) = U S Vᵀ: the class means span the leading columns of U.
    let (u, sv, _) = crate::linalg::thin_svd(means.t())?;
    let r = crate::certify::factor::numerical_rank(&sv, rank_tol);
    // Rows of W projected onto span(U_r): W U_r U_rᵀ.
    let ur = u.slice(ndarray::s![.., ..r]);
    let proj = w.dot(&ur);
    let inside = proj.iter().map(|v| v * v).sum::<f64>();
    Ok(((wn - inside).max(0.0) / wn).sqrt())
}

/// NC metrics of the features $A_l$ entering $W_{l+1}$ ($l=0$ is $H$).
#[derive(Clone, Debug, Serialize)]
pub struct LayerNc {
    /// $l$ ($0=H$, $L-1$ = penultimate features).
    pub layer: usize,
    /// $d_l$.
    pub dim: usize,
    /// NC1 $=\frac1K\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)$ ([`nc1::nc1_pinv`]); NaN when all
    /// class means coincide.
    pub nc1: f64,
    /// ETF error of the centred class means' Gram matrix ([`nc2::nc2_h`]): 0 for a simplex
    /// ETF and for an equal-norm orthogonal frame (centring turns one into the other).
    pub nc2_etf: f64,
    /// $\max_{k\ne l}\lvert\cos\angle(\mu_k,\mu_l)\rvert$ of the uncentred class means: 0 for an
    /// orthogonal frame; NaN if a class mean is zero.
    pub max_cos: f64,
    /// $\lVert\mu_k\rVert$ (uncentred).
    pub mean_norms: Vec<f64>,
    /// Numerical rank of the class-mean matrix.
    pub rank: usize,
    /// NC3-style alignment $\lVert(I-P_M)W_{l+1}^\top\rVert_F/\lVert W_{l+1}\rVert_F$: the share of
    /// $W_{l+1}$'s rows outside the span of the class means (0 when aligned).
    pub nc3_span: f64,
    /// For the last layer only: the crate's NC3, ETF error of $W_L\bar M$ ([`nc3::nc3`]).
    pub nc3_etf: Option<f64>,
}

impl Objective<f64> for DeepUfm {
    fn dim(&self) -> usize {
        self.n_params
    }
    fn value(&self, x: &[f64]) -> f64 {
        DeepUfm::value(self, x)
    }
    fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        DeepUfm::value_grad(self, x, grad)
    }
}

/// How to run the non-convex solver from random starts.
#[derive(Clone, Debug, Serialize)]
pub struct StartSpec {
    /// Number of random starts (seeds `seed`, `seed+1`, ...).
    pub starts: usize,
    /// First seed.
    pub seed: u64,
    /// Scale of the random initialisation ([`DeepUfm::random_point`]).
    pub init_scale: f64,
    /// `lbfgs` (memory 10) or `gd` (fixed step `lr`).
    pub optimizer: String,
    /// Step size for `gd`.
    pub lr: f64,
    /// Iteration limit per start.
    pub max_iter: usize,
    /// Gradient-norm tolerance.
    pub tol: f64,
    /// Record $(\text{iteration}, f)$ every this many iterations (`None`: no trace).
    pub trace_every: Option<usize>,
}

impl Default for StartSpec {
    fn default() -> Self {
        StartSpec {
            starts: 5,
            seed: 0,
            init_scale: 1.0,
            optimizer: "lbfgs".into(),
            lr: 0.5,
            max_iter: 20_000,
            tol: 1e-10,
            trace_every: None,
        }
    }
}

/// One run from a random start.
#[derive(Clone, Debug, Serialize)]
pub struct StartResult {
    /// The seed.
    pub seed: u64,
    /// Final objective.
    pub objective: f64,
    /// Final gradient norm.
    pub grad_norm: f64,
    /// Iterations.
    pub iterations: usize,
    /// Why it stopped.
    pub stop: crate::solver::StopReason,
    /// The final point.
    #[serde(skip)]
    pub x: Vec<f64>,
    /// $(\text{iteration}, f)$ rows when [`StartSpec::trace_every`] is set.
    #[serde(skip)]
    pub trace: Vec<(usize, f64)>,
}

struct LossTrace(Vec<(usize, f64)>);

impl crate::solver::Observer<f64> for LossTrace {
    fn observe(
        &mut self,
        iter: usize,
        progress: &crate::solver::Progress,
        _x: &[f64],
        _seconds: f64,
    ) -> Result<()> {
        self.0.push((iter, progress.f));
        Ok(())
    }
}

/// Runs the solver of `spec` from `spec.starts` seeded random starts, in seed order.
pub fn solve_from_random_starts(p: &DeepUfm, spec: &StartSpec) -> Result<Vec<StartResult>> {
    if spec.starts == 0 {
        return Err(Error::param("starts", "need at least one random start"));
    }
    let exec = crate::solver::Executor {
        max_iter: spec.max_iter,
        tol: spec.tol,
        time_limit: None,
        observe_every: spec.trace_every.unwrap_or(usize::MAX).max(1),
    };
    let mut out = Vec::with_capacity(spec.starts);
    for s in 0..spec.starts as u64 {
        let seed = spec.seed.wrapping_add(s);
        let mut x = p.random_point(seed, spec.init_scale)?;
        let mut trace = LossTrace(Vec::new());
        let mut obs: Vec<&mut dyn crate::solver::Observer<f64>> = Vec::new();
        if spec.trace_every.is_some() {
            obs.push(&mut trace);
        }
        let report = match spec.optimizer.as_str() {
            "lbfgs" => exec.run(p, &mut crate::solver::Lbfgs::new(10)?, &mut x, &mut obs)?,
            "gd" => exec.run(
                p,
                &mut crate::solver::GradientDescent::fixed(spec.lr)?,
                &mut x,
                &mut obs,
            )?,
            other => {
                return Err(Error::param(
                    "optimizer",
                    format!("unknown optimizer `{other}`; use lbfgs or gd"),
                ))
            }
        };
        out.push(StartResult {
            seed,
            objective: report.objective,
            grad_norm: report.grad_norm,
            iterations: report.iterations,
            stop: report.stop,
            x,
            trace: trace.0,
        });
    }
    Ok(out)
}

/// Index of the run with the lowest objective (first on ties).
pub fn best_run(runs: &[StartResult]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, r) in runs.iter().enumerate() {
        if best.is_none_or(|b| r.objective < runs[b].objective) {
            best = Some(i);
        }
    }
    best
}
