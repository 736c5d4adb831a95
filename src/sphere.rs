//! The normalized UFM: features and classifiers on spheres, solved on the Riemannian manifold.
//!
//! Yaras, Wang, Zhu, Balzano & Qu, *Neural Collapse with Normalized Features: A Geometric
//! Analysis over the Riemannian Manifold* (NeurIPS 2022, arXiv 2209.09211), study
//! $$\min_{W,H}\ g(W,H)=\frac1N\sum_{i=1}^N\mathrm{CE}\big(\tau\,Wh_i,\ y_i\big)
//! \quad\text{s.t.}\quad\lVert w_k\rVert_2=1,\ \lVert h_i\rVert_2=1,$$
//! with $W\in\mathbb R^{K\times d}$ (rows $w_k$), features $h_i\in\mathbb R^d$ and temperature
//! $\tau>0$: a problem on the product of spheres $\mathcal M=(\mathbb S^{d-1})^{K+N}$. For balanced
//! classes and $d\ge K-1$ the global minimizers are $W^\top$ a simplex ETF with $h_i=w_{y_i}$, so
//! the logits are $\tau$ for the true class and $-\tau/(K-1)$ otherwise and
//! $$g^\star=\log\!\Big(1+(K-1)\,e^{-\tau K/(K-1)}\Big),$$
//! and the landscape is benign: every critical point is a global minimizer or a strict saddle
//! (Yaras et al., Thm. 1). Here $g(W,H)=f_{\mathrm{UFM}}(\sqrt\tau W,\sqrt\tau H)$ with the crate's
//! CE UFM at $\lambda_W=\lambda_H=0$ and no bias, whose exact gradient and Hessian-vector product
//! are reused.
//!
//! # Riemannian calculus on a product of spheres
//! The parameter vector $x=(W,H^\top)$ is a stack of $K+N$ unit blocks $x_b\in\mathbb R^d$
//! (same layout as [`crate::ufm::UfmProblem`] without bias). With the Euclidean gradient
//! $\nabla g$ and Hessian $\nabla^2g$, per block:
//! * tangent projection $P_{x_b}v=v-\langle x_b,v\rangle x_b$;
//! * Riemannian gradient $\operatorname{grad}g(x)_b=P_{x_b}\nabla_bg(x)$;
//! * Riemannian Hessian (projected Euclidean Hessian minus the Weingarten term)
//!   $\operatorname{Hess}g(x)[\xi]_b=P_{x_b}\big(\nabla^2g(x)\,\xi\big)_b-\langle x_b,\nabla_bg(x)\rangle\,\xi_b$
//!   (Absil, Mahony & Sepulchre, *Optimization Algorithms on Matrix Manifolds*, 2008, §5.5;
//!   Absil, Mahony & Trumpf 2013);
//! * retraction $R_x(\xi)_b=(x_b+\xi_b)/\lVert x_b+\xi_b\rVert$ (second order, so
//!   $\frac{d^2}{dt^2}g(R_x(t\xi))|_0=\langle\operatorname{Hess}g(x)[\xi],\xi\rangle$) and the exponential
//!   map $\operatorname{Exp}_x(\xi)_b=\cos\lVert\xi_b\rVert\,x_b+\sin\lVert\xi_b\rVert\,\xi_b/\lVert\xi_b\rVert$.
//!
//! # Solver
//! Riemannian trust region with truncated conjugate gradients (Absil, Baker & Gallivan, Found.
//! Comput. Math. 2007): the Steihaug–Toint tCG solves the model
//! $g+\langle\operatorname{grad}g,\eta\rangle+\frac12\langle\operatorname{Hess}g[\eta],\eta\rangle$ in the tangent space
//! and follows negative curvature to the trust-region boundary, so it leaves strict saddles;
//! steps are retracted. Convergence is superlinear near a minimizer.
//!
//! # Certificates
//! [`SphereProblem::riemannian_hessian`] assembles the Riemannian Hessian in an orthonormal
//! tangent basis (Householder per block). At the ETF it is PSD and its null space has the
//! dimension of the rotation orbit $\{(WQ,HQ):Q\in O(d)\}$,
//! $\frac{d(d-1)}2-\frac{(d-K+1)(d-K)}2$ (the stabiliser of a configuration spanning
//! $K-1$ dimensions is $O(d-K+1)$); [`SphereProblem::antipodal_point`] ($W$ an ETF,
//! $h_i=-w_{y_i}$) is a critical point with a negative Hessian eigenvalue, a strict saddle.

use crate::error::{Error, Result};
use crate::ufm::{UfmConfig, UfmProblem};
use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use std::time::Instant;

/// A validated normalized-UFM instance.
#[derive(Clone, Debug)]
pub struct SphereProblem {
    inner: UfmProblem,
    tau: f64,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

impl SphereProblem {
    /// Classes of the given sizes, features in $\mathbb R^d$ ($d\ge2$), temperature $\tau>0$.
    pub fn new(class_sizes: Vec<usize>, feature_dim: usize, tau: f64) -> Result<Self> {
        if !(tau.is_finite() && tau > 0.0) {
            return Err(Error::param(
                "tau",
                format!("the temperature must be finite and > 0, got {tau}"),
            ));
        }
        if feature_dim < 2 {
            return Err(Error::param(
                "dim",
                format!("the sphere S^(d-1) needs d >= 2, got {feature_dim}"),
            ));
        }
        let inner = UfmConfig::with_class_sizes(class_sizes, feature_dim)
            .lambdas(0.0, 0.0, 0.0)
            .bias(false)
            .build()?;
        Ok(SphereProblem { inner, tau })
    }

    /// $K$.
    pub fn n_classes(&self) -> usize {
        self.inner.n_classes()
    }
    /// $N$.
    pub fn n_samples(&self) -> usize {
        self.inner.n_samples()
    }
    /// $d$.
    pub fn feature_dim(&self) -> usize {
        self.inner.feature_dim()
    }
    /// $\tau$.
    pub fn tau(&self) -> f64 {
        self.tau
    }
    /// Class sizes.
    pub fn class_sizes(&self) -> &[usize] {
        self.inner.class_sizes()
    }
    /// Labels of the samples (grouped by class).
    pub fn labels(&self) -> &[u32] {
        self.inner.labels()
    }
    /// Number of unit blocks $K+N$.
    pub fn n_blocks(&self) -> usize {
        self.n_classes() + self.n_samples()
    }
    /// Length of a point, $(K+N)d$.
    pub fn n_params(&self) -> usize {
        self.inner.n_params()
    }
    /// Dimension of the manifold, $(K+N)(d-1)$.
    pub fn manifold_dim(&self) -> usize {
        self.n_blocks() * (self.feature_dim() - 1)
    }
    /// The unconstrained UFM whose value at $\sqrt\tau x$ is $g(x)$.
    pub fn ufm(&self) -> &UfmProblem {
        &self.inner
    }

    /// Views $(W, H^\top)$ of a point.
    pub fn split<'a>(&self, x: &'a [f64]) -> (ArrayView2<'a, f64>, ArrayView2<'a, f64>) {
        let (w, ht, _) = self.inner.split(x);
        (w, ht)
    }

    /// Checks that `x` is a point of $\mathcal M$ (length, finite, unit blocks to `1e-8`).
    pub fn check_point(&self, x: &[f64]) -> Result<()> {
        self.inner.check_len("point", x)?;
        let d = self.feature_dim();
        for (b, blk) in x.chunks(d).enumerate() {
            let n = norm(blk);
            if !((n - 1.0).abs() <= 1e-8) {
                let what = if b < self.n_classes() {
                    format!("row {b} of W")
                } else {
                    format!("feature {}", b - self.n_classes())
                };
                return Err(Error::Data(format!(
                    "{what} has norm {n}, but the normalized UFM needs unit vectors"
                )));
            }
        }
        Ok(())
    }

    fn scaled(&self, x: &[f64]) -> Vec<f64> {
        let s = self.tau.sqrt();
        x.iter().map(|v| v * s).collect()
    }

    /// $g(x)$.
    pub fn value(&self, x: &[f64]) -> f64 {
        self.inner.value(&self.scaled(x))
    }

    /// $g(x)$ and the Euclidean gradient $\nabla g(x)$.
    pub fn euclidean_grad(&self, x: &[f64]) -> (f64, Vec<f64>) {
        let mut g = vec![0.0; x.len()];
        let f = self.inner.value_grad(&self.scaled(x), &mut g);
        let s = self.tau.sqrt();
        g.iter_mut().for_each(|v| *v *= s);
        (f, g)
    }

    /// Euclidean Hessian-vector product $\nabla^2g(x)\,v$.
    pub fn euclidean_hvp(&self, x: &[f64], v: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        self.inner.hvp(&self.scaled(x), v, &mut out);
        out.iter_mut().for_each(|o| *o *= self.tau);
        out
    }

    /// Tangent projection $P_x v$ (blockwise).
    pub fn project(&self, x: &[f64], v: &[f64]) -> Vec<f64> {
        let d = self.feature_dim();
        let mut out = v.to_vec();
        for (o, xb) in out.chunks_mut(d).zip(x.chunks(d)) {
            let c = dot(o, xb);
            o.iter_mut().zip(xb).for_each(|(ov, xv)| *ov -= c * xv);
        }
        out
    }

    /// Retraction $R_x(\xi)$: blockwise normalisation of $x+\xi$.
    pub fn retract(&self, x: &[f64], xi: &[f64]) -> Vec<f64> {
        let d = self.feature_dim();
        let mut out: Vec<f64> = x.iter().zip(xi).map(|(a, b)| a + b).collect();
        for o in out.chunks_mut(d) {
            let n = norm(o);
            o.iter_mut().for_each(|v| *v /= n);
        }
        out
    }

    /// Exponential map $\operatorname{Exp}_x(\xi)$ (blockwise great circles; `xi` tangent).
    pub fn exp_map(&self, x: &[f64], xi: &[f64]) -> Vec<f64> {
        let d = self.feature_dim();
        let mut out = vec![0.0; x.len()];
        for ((o, xb), vb) in out.chunks_mut(d).zip(x.chunks(d)).zip(xi.chunks(d)) {
            let t = norm(vb);
            if t == 0.0 {
                o.copy_from_slice(xb);
            } else {
                let (c, s) = (t.cos(), t.sin() / t);
                for ((ov, xv), vv) in o.iter_mut().zip(xb).zip(vb) {
                    *ov = c * xv + s * vv;
                }
            }
        }
        out
    }

    /// $g(x)$, the Riemannian gradient and the Euclidean gradient (needed by the Hessian).
    pub fn riemannian_grad(&self, x: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
        let (f, eg) = self.euclidean_grad(x);
        let rg = self.project(x, &eg);
        (f, rg, eg)
    }

    /// Riemannian Hessian-vector product
    /// $P_x(\nabla^2g\,\xi)-\langle x_b,\nabla_bg\rangle\xi_b$ for a tangent $\xi$, given the
    /// Euclidean gradient `egrad` at $x$.
    pub fn riemannian_hvp(&self, x: &[f64], egrad: &[f64], xi: &[f64]) -> Vec<f64> {
        let d = self.feature_dim();
        let mut h = self.project(x, &self.euclidean_hvp(x, xi));
        for ((hb, xb), (gb, vb)) in h
            .chunks_mut(d)
            .zip(x.chunks(d))
            .zip(egrad.chunks(d).zip(xi.chunks(d)))
        {
            let c = dot(xb, gb);
            hb.iter_mut().zip(vb).for_each(|(hv, vv)| *hv -= c * vv);
        }
        h
    }

    /// A random point: i.i.d. Gaussian blocks, normalised (seeded).
    pub fn random_point(&self, seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut x: Vec<f64> = (0..self.n_params())
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        for b in x.chunks_mut(self.feature_dim()) {
            let n = norm(b);
            b.iter_mut().for_each(|v| *v /= n);
        }
        x
    }

    /// $g^\star=\log(1+(K-1)e^{-\tau K/(K-1)})$ for balanced classes and $d\ge K-1$, else `None`.
    pub fn global_minimum(&self) -> Option<f64> {
        let k = self.n_classes() as f64;
        (self.inner.balanced_size().is_some() && self.feature_dim() + 1 >= self.n_classes())
            .then(|| ((k - 1.0) * (-self.tau * k / (k - 1.0)).exp()).ln_1p())
    }

    /// Dimension of the rotation orbit of a minimizer whose vectors span $K-1$ dimensions:
    /// $\frac{d(d-1)}2-\frac{(d-K+1)(d-K)}2$ (for $d\ge K-1$).
    pub fn rotation_orbit_dim(&self) -> usize {
        let (k, d) = (self.n_classes(), self.feature_dim());
        let r = d + 1 - k.min(d + 1);
        d * (d - 1) / 2 - r * r.saturating_sub(1) / 2
    }

    fn etf_with(&self, sign: f64, seed: u64) -> Result<Vec<f64>> {
        let (k, d) = (self.n_classes(), self.feature_dim());
        let m = crate::ufm::etf::simplex_etf(k, d, crate::ufm::EtfEmbedding::Random { seed })?;
        let mut x = Vec::with_capacity(self.n_params());
        x.extend(m.iter().copied());
        for &y in self.labels() {
            x.extend(m.row(y as usize).iter().map(|v| sign * v));
        }
        Ok(x)
    }

    /// The collapsed point with classifier rows `w` ($K\times d$, normalised here) and every
    /// feature equal to its class's row, $h_i=w_{y_i}$ (e.g. a spherical code to start from).
    pub fn collapsed_point(&self, w: ArrayView2<f64>) -> Result<Vec<f64>> {
        let (k, d) = (self.n_classes(), self.feature_dim());
        if w.dim() != (k, d) {
            return Err(Error::shape(
                "W",
                format!("{k}x{d}"),
                format!("{}x{}", w.nrows(), w.ncols()),
            ));
        }
        let mut rows: Vec<Vec<f64>> = Vec::with_capacity(k);
        for (c, r) in w.rows().into_iter().enumerate() {
            let n = r.dot(&r).sqrt();
            if !(n > 0.0 && n.is_finite()) {
                return Err(Error::Data(format!(
                    "row {c} of W has norm {n}; it needs a direction"
                )));
            }
            rows.push(r.iter().map(|v| v / n).collect());
        }
        let mut x = Vec::with_capacity(self.n_params());
        for r in &rows {
            x.extend_from_slice(r);
        }
        for &y in self.labels() {
            x.extend_from_slice(&rows[y as usize]);
        }
        Ok(x)
    }

    /// The global minimizer: $W$ a (seeded, randomly embedded) simplex ETF, $h_i=w_{y_i}$.
    pub fn etf_point(&self, seed: u64) -> Result<Vec<f64>> {
        self.etf_with(1.0, seed)
    }

    /// A constructed critical point that is not a minimizer: $W$ a simplex ETF and
    /// $h_i=-w_{y_i}$. Its Riemannian gradient vanishes by symmetry: each Euclidean gradient
    /// block is parallel to its own point.
    pub fn antipodal_point(&self, seed: u64) -> Result<Vec<f64>> {
        self.etf_with(-1.0, seed)
    }

    /// The Riemannian Hessian at `x` as a dense symmetric matrix in an orthonormal tangent
    /// basis (size $(K+N)(d-1)$; each block's basis from a Householder reflection).
    pub fn riemannian_hessian(&self, x: &[f64]) -> Result<Array2<f64>> {
        self.check_point(x)?;
        let d = self.feature_dim();
        let basis = tangent_basis(x, d);
        let m = basis.len();
        let (_, eg) = self.euclidean_grad(x);
        let mut h = Array2::zeros((m, m));
        let cols: Vec<Vec<f64>> = basis
            .iter()
            .map(|(b, v)| {
                let mut e = vec![0.0; x.len()];
                e[b * d..(b + 1) * d].copy_from_slice(v);
                self.riemannian_hvp(x, &eg, &e)
            })
            .collect();
        for (j, hv) in cols.iter().enumerate() {
            for (i, (b, v)) in basis.iter().enumerate() {
                h[[i, j]] = dot(&hv[b * d..(b + 1) * d], v);
            }
        }
        let sym = (&h + &h.t()) * 0.5;
        Ok(sym)
    }
}

/// Orthonormal bases of the tangent spaces of every block: `(block, vector)` pairs.
fn tangent_basis(x: &[f64], d: usize) -> Vec<(usize, Vec<f64>)> {
    let mut out = Vec::with_capacity(x.len() / d * (d - 1));
    for (b, xb) in x.chunks(d).enumerate() {
        // Householder H = I - 2uuᵀ/uᵀu with u = x + s e_j maps x to -s e_j; its columns other
        // than j span x^⊥ orthonormally.
        let j = (0..d)
            .max_by(|&a, &c| xb[a].abs().total_cmp(&xb[c].abs()))
            .expect("d >= 1");
        let s = if xb[j] >= 0.0 { 1.0 } else { -1.0 };
        let mut u = xb.to_vec();
        u[j] += s;
        let uu = dot(&u, &u);
        for i in (0..d).filter(|&i| i != j) {
            let col: Vec<f64> = (0..d)
                .map(|r| (if r == i { 1.0 } else { 0.0 }) - 2.0 * u[r] * u[i] / uu)
                .collect();
            out.push((b, col));
        }
    }
    out
}

/// Settings of [`riemannian_trust_region`].
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RtrOptions {
    /// Stop when $\lVert\operatorname{grad}g\rVert\le$ `grad_tol`.
    pub grad_tol: f64,
    /// Maximum outer iterations.
    pub max_iter: usize,
    /// Maximum tCG iterations per step.
    pub max_inner: usize,
}

impl Default for RtrOptions {
    fn default() -> Self {
        RtrOptions {
            grad_tol: 1e-10,
            max_iter: 1000,
            max_inner: 1000,
        }
    }
}

/// What [`riemannian_trust_region`] reports.
#[derive(Clone, Debug, Serialize)]
pub struct RtrReport {
    /// $g$ at the returned point.
    pub objective: f64,
    /// $\lVert\operatorname{grad}g\rVert$ there.
    pub grad_norm: f64,
    /// Outer iterations.
    pub iterations: usize,
    /// Hessian-vector products.
    pub hvps: usize,
    /// Whether `grad_norm <= grad_tol`.
    pub converged: bool,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Riemannian trust region with truncated CG from `x` (updated in place; see the
/// [module docs](self)).
pub fn riemannian_trust_region(
    p: &SphereProblem,
    x: &mut Vec<f64>,
    opts: &RtrOptions,
) -> Result<RtrReport> {
    p.check_point(x)?;
    if !(opts.grad_tol >= 0.0) {
        return Err(Error::param(
            "tol",
            format!("must be >= 0, got {}", opts.grad_tol),
        ));
    }
    let t0 = Instant::now();
    let delta_bar = std::f64::consts::PI * (p.n_blocks() as f64).sqrt();
    let mut delta = delta_bar / 8.0;
    let (mut f, mut g, mut eg) = p.riemannian_grad(x);
    let mut hvps = 0;
    let mut iterations = 0;
    let mut gn = norm(&g);
    while gn > opts.grad_tol && iterations < opts.max_iter {
        iterations += 1;
        // tCG (Steihaug-Toint) on the model in the tangent space.
        let n = x.len();
        let mut eta = vec![0.0; n];
        let mut h_eta = vec![0.0; n];
        let mut r = g.clone();
        let mut delta_dir: Vec<f64> = r.iter().map(|v| -v).collect();
        let mut rr = dot(&r, &r);
        let stop = gn * gn.min(0.1);
        for _ in 0..opts.max_inner {
            let hd = p.riemannian_hvp(x, &eg, &delta_dir);
            hvps += 1;
            let kappa = dot(&delta_dir, &hd);
            let alpha = rr / kappa;
            let ee: Vec<f64> = eta
                .iter()
                .zip(&delta_dir)
                .map(|(e, dd)| e + alpha * dd)
                .collect();
            if !(kappa > 0.0) || norm(&ee) >= delta {
                // To the boundary: ‖η + t δ‖ = Δ, t > 0.
                let (a, b, c) = (
                    dot(&delta_dir, &delta_dir),
                    2.0 * dot(&eta, &delta_dir),
                    dot(&eta, &eta) - delta * delta,
                );
                let t = (-b + (b * b - 4.0 * a * c).max(0.0).sqrt()) / (2.0 * a);
                eta.iter_mut()
                    .zip(&delta_dir)
                    .for_each(|(e, dd)| *e += t * dd);
                h_eta.iter_mut().zip(&hd).for_each(|(h, v)| *h += t * v);
                break;
            }
            eta = ee;
            h_eta.iter_mut().zip(&hd).for_each(|(h, v)| *h += alpha * v);
            r.iter_mut().zip(&hd).for_each(|(rv, v)| *rv += alpha * v);
            r = p.project(x, &r);
            let rr_new = dot(&r, &r);
            if rr_new.sqrt() <= stop {
                break;
            }
            let beta = rr_new / rr;
            rr = rr_new;
            delta_dir = delta_dir
                .iter()
                .zip(&r)
                .map(|(dd, rv)| -rv + beta * dd)
                .collect();
            delta_dir = p.project(x, &delta_dir);
        }
        let model_decrease = -(dot(&g, &eta) + 0.5 * dot(&eta, &h_eta));
        let x_new = p.retract(x, &eta);
        let f_new = p.value(&x_new);
        let eps = 1e-15 * f.abs().max(1.0);
        let rho = (f - f_new + eps) / (model_decrease + eps);
        let eta_norm = norm(&eta);
        if !(rho >= 0.25) {
            delta *= 0.25;
        } else if rho > 0.75 && eta_norm >= 0.99 * delta {
            delta = (2.0 * delta).min(delta_bar);
        }
        if rho > 0.1 && f_new.is_finite() {
            *x = x_new;
            let (fv, gv, egv) = p.riemannian_grad(x);
            f = fv;
            g = gv;
            eg = egv;
            gn = norm(&g);
        }
        if delta < 1e-14 * delta_bar {
            break;
        }
    }
    Ok(RtrReport {
        objective: f,
        grad_norm: gn,
        iterations,
        hvps,
        converged: gn <= opts.grad_tol,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Summary of a Riemannian Hessian spectrum.
#[derive(Clone, Debug, Serialize)]
pub struct SpectrumSummary {
    /// Smallest eigenvalue.
    pub lambda_min: f64,
    /// Largest eigenvalue.
    pub lambda_max: f64,
    /// Eigenvalues below $-$`zero_tol`$\cdot\max|\lambda|$.
    pub n_negative: usize,
    /// Eigenvalues with $|\lambda|\le$ `zero_tol`$\cdot\max|\lambda|$.
    pub n_zero: usize,
    /// The relative tolerance used.
    pub zero_tol: f64,
    /// Manifold dimension (number of eigenvalues).
    pub dim: usize,
}

/// Eigenvalues of the Riemannian Hessian at `x`, summarised.
pub fn hessian_spectrum(p: &SphereProblem, x: &[f64], zero_tol: f64) -> Result<SpectrumSummary> {
    let h = p.riemannian_hessian(x)?;
    let vals = crate::linalg::sym_eigenvalues(h.view())?;
    let scale = vals.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = zero_tol * scale;
    Ok(SpectrumSummary {
        lambda_min: vals[0],
        lambda_max: *vals.last().expect("nonempty"),
        n_negative: vals.iter().filter(|&&v| v < -tol).count(),
        n_zero: vals.iter().filter(|&&v| v.abs() <= tol).count(),
        zero_tol,
        dim: vals.len(),
    })
}

/// One random start of [`code_study`].
#[derive(Clone, Debug, Serialize)]
pub struct StartResult {
    /// Seed of the start.
    pub seed: u64,
    /// $g$ at the end.
    pub objective: f64,
    /// $\lVert\operatorname{grad}g\rVert$ at the end.
    pub grad_norm: f64,
    /// Whether the trust region converged.
    pub converged: bool,
    /// $\min_km_k$ of the classifier.
    pub min_margin: f64,
    /// Largest cosine between classifier rows.
    pub max_cosine: f64,
}

/// The normalized UFM with one sample per class at a spherical code's $(K,d)$: the code itself
/// (as the collapsed point $h_k=w_k$, polished by trust region) against random starts.
#[derive(Clone, Debug, Serialize)]
pub struct CodeStudy {
    /// The code.
    pub code: String,
    /// $K$.
    pub n_classes: usize,
    /// $d$.
    pub dim: usize,
    /// $\tau$.
    pub tau: f64,
    /// Closed-form margin of the code.
    pub code_margin: f64,
    /// $g$ at the code (after polishing; a critical point stays put).
    pub code_objective: f64,
    /// $\lVert\operatorname{grad}g\rVert$ at the code before polishing.
    pub code_grad_norm: f64,
    /// $\min_km_k$ after polishing from the code.
    pub code_point_margin: f64,
    /// The random starts.
    pub starts: Vec<StartResult>,
}

/// Runs [`CodeStudy`] for `code` with `starts` random starts (seeds `seed..seed+starts`).
pub fn code_study(
    code: crate::geometry::Code,
    tau: f64,
    starts: usize,
    seed: u64,
    opts: &RtrOptions,
) -> Result<CodeStudy> {
    let (k, d) = code.dims();
    let p = SphereProblem::new(vec![1; k], d, tau)?;
    let mopts = crate::geometry::MarginOptions::default();
    let margin_of = |x: &[f64]| -> Result<(f64, f64)> {
        let (w, _) = p.split(x);
        let m = crate::geometry::margins(w, true, &mopts)?;
        Ok((m.min_margin, m.max_cosine.unwrap_or(f64::NAN)))
    };
    let mut x = p.collapsed_point(code.build()?.view())?;
    let (_, g0, _) = p.riemannian_grad(&x);
    let r = riemannian_trust_region(&p, &mut x, opts)?;
    let (code_point_margin, _) = margin_of(&x)?;
    let mut out = Vec::with_capacity(starts);
    for s in 0..starts as u64 {
        let mut x = p.random_point(seed + s);
        let rs = riemannian_trust_region(&p, &mut x, opts)?;
        let (min_margin, max_cosine) = margin_of(&x)?;
        out.push(StartResult {
            seed: seed + s,
            objective: rs.objective,
            grad_norm: rs.grad_norm,
            converged: rs.converged,
            min_margin,
            max_cosine,
        });
    }
    Ok(CodeStudy {
        code: code.to_string(),
        n_classes: k,
        dim: d,
        tau,
        code_margin: code.margin(),
        code_objective: r.objective,
        code_grad_norm: norm(&g0),
        code_point_margin,
        starts: out,
    })
}
