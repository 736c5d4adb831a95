//! A low-rank configuration of the deep ReLU UFM built on the triangular strongly regular graph,
//! with its loss minimised exactly over its free parameters.
//!
//! Source: Súkeník, Lampert & Mondelli, *Neural Collapse versus Low-rank Bias: Is Deep Neural
//! Collapse Really Optimal?* (NeurIPS 2024, arXiv 2405.14468), Fig. 1 and Fig. 3 (left): for
//! $K=\binom r2$ classes, a configuration whose class-mean matrices have rank $r$ in layers
//! $1,\dots,L-1$ ($M_{L-1}$'s rows have $r-1$ equal non-zero entries, the degree of the complete
//! graph $K_r$), whose last pre-activation $\tilde M_L$ has rank $r$ and whose last ReLU restores
//! rank $K$, has lower loss than deep neural collapse (DNC) once $L\ge3$ and $K$ is large
//! enough. **We could read the paper's abstract and figure captions but not its construction
//! or its numbers**, so the family below is our own derivation matching that description, and
//! its losses are not compared with published values.
//!
//! # The family
//!
//! Classes are the edges $e=\{a,b\}$ of $K_r$; $B\in\{0,1\}^{r\times K}$ is the vertex–edge incidence
//! matrix (rows: vertices, $r-1$ ones each). $B^\top B=2I+A$ where $A$ is the adjacency matrix of
//! the triangular graph $T(r)$ (edges adjacent when they share a vertex), a strongly regular
//! graph; $\bar A=J-I-A$ is the Kneser graph $K(r,2)$ (the Petersen graph for $r=5$). Matrices
//! $aI+bA+c\bar A$ share the eigenspaces $\mathbf 1$ (multiplicity 1), $E_1$ ($r-1$), $E_2$ ($K-r$),
//! where $A$ has eigenvalues $2(r-2),\ r-4,\ -2$ and $\bar A$ has $\binom{r-2}2,\ 3-r,\ 1$.
//!
//! With $n$ samples per class (collapsed), all $\lambda_l$ and $\lambda_H$ given, and $L\ge3$:
//! * $\tilde M_2=W_1M_1=u\,B$ (non-negative, so $M_2=uB$) with $(H,W_1)$ the balanced pair:
//!   weight decay $\sqrt{n\lambda_H\lambda_1}\,u\lVert B\rVert_*$;
//! * $M_l=a_lB$ for $l=2,\dots,L-1$ through $W_l=\frac{a_{l+1}}{a_l}I_r$: weight decay
//!   $\frac{\lambda_l}2r\big(\frac{a_{l+1}}{a_l}\big)^2$;
//! * $\tilde M_L=X=x_2I+x_1A+x_0\bar A$ with $x_2=2x_1-x_0$ (this makes the $E_2$ eigenvalue
//!   vanish, so $\operatorname{rank}X\le r$ and $X=W_{L-1}M_{L-1}$ with $W_{L-1}=XB^+/a_{L-1}$):
//!   weight decay $\frac{\lambda_{L-1}}{2a_{L-1}^2}\lVert XB^+\rVert_F^2=\frac{\lambda_{L-1}}{2a_{L-1}^2}\Big(\frac{\xi_{\mathbf 1}^2}{2r-2}+(r-1)\frac{\xi_{1}^2}{r-2}\Big)$;
//! * $M_L=\sigma(X)=\max(x_2,0)I+\max(x_1,0)A+\max(x_0,0)\bar A$ with eigenvalues $g_j$ (rank $K$ in
//!   general), and the optimal $W_L=M_L(M_L^2+K\lambda_LI)^{-1}$: fit plus weight decay
//!   $\frac1{2K}\sum_jm_j\frac{K\lambda_L}{g_j^2+K\lambda_L}$.
//!
//! For $L=2$ the pair $(H,W_1)$ produces $X$ directly (weight decay $\sqrt{n\lambda_H\lambda_1}\lVert X\rVert_*$).
//! The symmetric rank-$r$ pre-activations are exactly $X$ above: the family covers
//! $M_L\propto I$ (for $x_1,x_0\le0$), $M_L\propto\bar A$ (the Kneser/Petersen adjacency, for
//! $x_1\le0<x_0$) and mixtures.
//!
//! **Exact minimisation of the chain.** Write $X=\rho\hat X$ with $(x_1,x_0)=(\cos\omega,\sin\omega)$.
//! The layer scales multiply to $\rho$ ($u\cdot\prod\frac{a_{l+1}}{a_l}\cdot\frac\rho{a_{L-1}}=\rho$)
//! and each costs $c_it_i^{p_i}$ ($p=1$ for the pair, $2$ for the others), so by weighted AM–GM
//! their minimum total is $C(\omega)\rho^{1/P}$ with $P=\sum_i1/p_i=L/2$,
//! $C=\prod_i(c_i/w_i)^{w_i}$, $w_i=\frac{1/p_i}P$, attained at $t_i=(w_iC\rho^{1/P}/c_i)^{1/p_i}$. The
//! loss is then $F(\omega,\rho)=C(\omega)\rho^{2/L}+\frac1{2K}\sum_jm_j\frac{K\lambda_L}{\rho^2\hat g_j(\omega)^2+K\lambda_L}$,
//! minimised over $\rho$ on a log grid with golden-section refinement for each of
//! [`SrgOptions::angles`] angles, then over $\omega$ by golden section around the best angle.
//! $F(\cdot,0)=\frac12$ (the zero network) is always a candidate. The result is the loss of an
//! explicit point ([`srg_point`] builds it; the tests evaluate the full objective there).

use super::{Activation, DeepUfm, DeepUfmConfig};
use crate::error::{Error, Result};
use crate::ufm::Loss;
use ndarray::{Array2, ArrayView2};
use serde::Serialize;

/// $K=\binom r2$.
pub fn n_classes_for(r: usize) -> usize {
    r * r.saturating_sub(1) / 2
}

/// The $r$ of $K=\binom r2$, if $K$ is a triangular number with $r\ge3$.
pub fn r_for(k: usize) -> Option<usize> {
    (3..=k + 1).find(|&r| n_classes_for(r) == k)
}

/// The edges of $K_r$ in lexicographic order $(0,1),(0,2),\dots,(r-2,r-1)$: class $c$ is edge `edges(r)[c]`.
pub fn edges(r: usize) -> Vec<(usize, usize)> {
    let mut e = Vec::with_capacity(n_classes_for(r));
    for a in 0..r {
        for b in a + 1..r {
            e.push((a, b));
        }
    }
    e
}

/// The vertex–edge incidence matrix $B\in\{0,1\}^{r\times K}$.
pub fn incidence(r: usize) -> Array2<f64> {
    let e = edges(r);
    let mut b = Array2::zeros((r, e.len()));
    for (c, &(u, v)) in e.iter().enumerate() {
        b[[u, c]] = 1.0;
        b[[v, c]] = 1.0;
    }
    b
}

/// $aI+bA+c\bar A$ as a dense $K\times K$ matrix ($A$: triangular graph $T(r)$, $\bar A$: its complement).
pub fn association_matrix(r: usize, a: f64, b: f64, c: f64) -> Array2<f64> {
    let e = edges(r);
    let k = e.len();
    Array2::from_shape_fn((k, k), |(i, j)| {
        if i == j {
            a
        } else {
            let (p, q) = (e[i], e[j]);
            let share = p.0 == q.0 || p.0 == q.1 || p.1 == q.0 || p.1 == q.1;
            if share {
                b
            } else {
                c
            }
        }
    })
}

/// Eigenvalues of $aI+bA+c\bar A$ on $(\mathbf 1, E_1, E_2)$ and their multiplicities $(1,r-1,K-r)$.
pub fn association_eigenvalues(r: usize, a: f64, b: f64, c: f64) -> ([f64; 3], [usize; 3]) {
    let rf = r as f64;
    let k = n_classes_for(r) as f64;
    let theta = [2.0 * (rf - 2.0), rf - 4.0, -2.0];
    let theta_bar = [k - 1.0 - 2.0 * (rf - 2.0), 3.0 - rf, 1.0];
    let ev = [0, 1, 2].map(|j| a + b * theta[j] + c * theta_bar[j]);
    (ev, [1, r - 1, n_classes_for(r) - r])
}

/// Parameters of the family (module docs).
#[derive(Clone, Debug, Serialize)]
pub struct SrgSpec {
    /// $r$ ($K=\binom r2$), at least 3.
    pub r: usize,
    /// $L\ge2$.
    pub layers: usize,
    /// Samples per class $n$.
    pub n_per_class: usize,
    /// $\lambda_1,\dots,\lambda_L$.
    pub lambda_w: Vec<f64>,
    /// $\lambda_H$.
    pub lambda_h: f64,
}

impl SrgSpec {
    /// All $\lambda$ equal (the paper's setting).
    pub fn uniform(r: usize, layers: usize, n_per_class: usize, lambda: f64) -> Self {
        SrgSpec {
            r,
            layers,
            n_per_class,
            lambda_w: vec![lambda; layers],
            lambda_h: lambda,
        }
    }

    fn check(&self) -> Result<()> {
        if self.r < 3 {
            return Err(Error::param("r", format!("need r >= 3, got {}", self.r)));
        }
        if self.layers < 2 {
            return Err(Error::param(
                "layers",
                "the SRG construction needs L >= 2 (a ReLU between two layers)",
            ));
        }
        if self.n_per_class == 0 {
            return Err(Error::param(
                "per-class",
                "need at least one sample per class",
            ));
        }
        if self.lambda_w.len() != self.layers {
            return Err(Error::param("lambda", "give one weight decay per layer"));
        }
        if std::iter::once(self.lambda_h)
            .chain(self.lambda_w.iter().copied())
            .any(|l| !(l.is_finite() && l > 0.0))
        {
            return Err(Error::param(
                "lambda",
                "every weight decay must be finite and > 0",
            ));
        }
        Ok(())
    }

    /// The chain factors $(c_i,p_i)$ for the unit-$\rho$ shape at angle $\omega$ (module docs).
    fn chain(&self, omega: f64) -> Vec<(f64, f64)> {
        let r = self.r;
        let (x1, x0) = (omega.cos(), omega.sin());
        let x2 = 2.0 * x1 - x0;
        let (xi, mult) = association_eigenvalues(r, x2, x1, x0);
        let n = self.n_per_class as f64;
        let pair = (n * self.lambda_h * self.lambda_w[0]).sqrt();
        if self.layers == 2 {
            let nuc: f64 = (0..3).map(|j| mult[j] as f64 * xi[j].abs()).sum();
            return vec![(pair * nuc, 1.0)];
        }
        let rf = r as f64;
        let b_nuc = (2.0 * rf - 2.0).sqrt() + (rf - 1.0) * (rf - 2.0).sqrt();
        let mut f = vec![(pair * b_nuc, 1.0)];
        for l in 2..self.layers - 1 {
            f.push((0.5 * self.lambda_w[l - 1] * rf, 2.0));
        }
        let xb = xi[0] * xi[0] / (2.0 * rf - 2.0) + (rf - 1.0) * xi[1] * xi[1] / (rf - 2.0);
        f.push((0.5 * self.lambda_w[self.layers - 2] * xb, 2.0));
        f
    }

    /// $C(\omega)$ and the weights $w_i$ of the AM–GM minimum.
    fn chain_constant(&self, omega: f64) -> (f64, Vec<(f64, f64)>, Vec<f64>) {
        let f = self.chain(omega);
        let p_sum: f64 = f.iter().map(|&(_, p)| 1.0 / p).sum();
        let w: Vec<f64> = f.iter().map(|&(_, p)| (1.0 / p) / p_sum).collect();
        let log_c: f64 = f
            .iter()
            .zip(&w)
            .map(|(&(c, _), &wi)| wi * (c / wi).ln())
            .sum();
        (log_c.exp(), f, w)
    }

    /// Fit + last-layer weight decay for $M_L=\sigma(\rho\hat X)$.
    fn head(&self, omega: f64, rho: f64) -> f64 {
        let (x1, x0) = (omega.cos(), omega.sin());
        let x2 = 2.0 * x1 - x0;
        let (g, mult) = association_eigenvalues(
            self.r,
            rho * x2.max(0.0),
            rho * x1.max(0.0),
            rho * x0.max(0.0),
        );
        let k = n_classes_for(self.r) as f64;
        let mu = k * self.lambda_w[self.layers - 1];
        (0..3)
            .map(|j| mult[j] as f64 * mu / (g[j] * g[j] + mu))
            .sum::<f64>()
            / (2.0 * k)
    }

    /// $F(\omega,\rho)$.
    pub fn loss(&self, omega: f64, rho: f64) -> f64 {
        let (c, _, _) = self.chain_constant(omega);
        c * rho.max(0.0).powf(2.0 / self.layers as f64) + self.head(omega, rho)
    }

    fn best_rho(&self, omega: f64, grid: usize) -> (f64, f64) {
        let (mut best_rho, mut best) = (0.0, 0.5);
        let (lo, hi) = (-12.0f64, 6.0f64);
        let mut best_i = None;
        for i in 0..grid {
            let rho = (lo + (hi - lo) * i as f64 / (grid - 1) as f64).exp();
            let v = self.loss(omega, rho);
            if v < best {
                best = v;
                best_rho = rho;
                best_i = Some(i);
            }
        }
        if let Some(i) = best_i {
            let step = (hi - lo) / (grid - 1) as f64;
            let centre = lo + step * i as f64;
            let (a, b) = golden(|t| self.loss(omega, t.exp()), centre - step, centre + step);
            let t = 0.5 * (a + b);
            let v = self.loss(omega, t.exp());
            if v < best {
                best = v;
                best_rho = t.exp();
            }
        }
        (best_rho, best)
    }
}

/// Golden-section search on $\lbrack a,b\rbrack$; returns the final bracket.
fn golden(f: impl Fn(f64) -> f64, mut a: f64, mut b: f64) -> (f64, f64) {
    let phi = 0.5 * (5f64.sqrt() - 1.0);
    for _ in 0..120 {
        let c = b - phi * (b - a);
        let d = a + phi * (b - a);
        if f(c) < f(d) {
            b = d;
        } else {
            a = c;
        }
    }
    (a, b)
}

/// Search resolution.
#[derive(Clone, Debug, Serialize)]
pub struct SrgOptions {
    /// Angles $\omega$ on the grid over $\lbrack0,2\pi)$.
    pub angles: usize,
    /// Points of the $\log\rho$ grid on $\lbrack-12,6\rbrack$.
    pub rho_grid: usize,
}

impl Default for SrgOptions {
    fn default() -> Self {
        SrgOptions {
            angles: 720,
            rho_grid: 181,
        }
    }
}

/// The best member of the family.
#[derive(Clone, Debug, Serialize)]
pub struct SrgOptimum {
    /// The specification.
    pub spec: SrgSpec,
    /// $K=\binom r2$.
    pub n_classes: usize,
    /// The minimum loss found (the loss of the explicit point [`srg_point`]).
    pub loss: f64,
    /// $\omega$.
    pub omega: f64,
    /// $\rho$.
    pub rho: f64,
    /// $(x_2,x_1,x_0)=\rho(2\cos\omega-\sin\omega,\cos\omega,\sin\omega)$: diagonal, adjacent and
    /// non-adjacent entries of $\tilde M_L$.
    pub x: [f64; 3],
    /// Which entries survive the last ReLU: e.g. `I` ($M_L\propto I$), `Kneser` ($M_L\propto\bar A$).
    pub pattern: String,
    /// Rank of $\tilde M_L$ (pre-activation) and of $M_L=\sigma(\tilde M_L)$.
    pub ranks: (usize, usize),
}

/// Minimises the family's loss (module docs).
pub fn optimise(spec: &SrgSpec, opts: &SrgOptions) -> Result<SrgOptimum> {
    spec.check()?;
    if opts.angles < 8 || opts.rho_grid < 16 {
        return Err(Error::param(
            "angles",
            "use at least 8 angles and 16 rho points",
        ));
    }
    let two_pi = 2.0 * std::f64::consts::PI;
    let (mut best_w, mut best) = (0.0, (0.0, 0.5));
    let mut best_i = None;
    for i in 0..opts.angles {
        let w = two_pi * i as f64 / opts.angles as f64;
        let (rho, v) = spec.best_rho(w, opts.rho_grid);
        if v < best.1 {
            best = (rho, v);
            best_w = w;
            best_i = Some(i);
        }
    }
    if best_i.is_some() {
        let h = two_pi / opts.angles as f64;
        let (a, b) = golden(
            |w| spec.best_rho(w, opts.rho_grid).1,
            best_w - h,
            best_w + h,
        );
        let w = 0.5 * (a + b);
        let cand = spec.best_rho(w, opts.rho_grid);
        if cand.1 < best.1 {
            best = cand;
            best_w = w;
        }
    }
    // The ReLU pattern changes where x2, x1 or x0 vanishes; the optimum often sits on such a
    // kink, so evaluate the kinks exactly and prefer one within 1e-12 of the best.
    let kinks = [
        0.0,
        0.5 * std::f64::consts::PI,
        std::f64::consts::PI,
        1.5 * std::f64::consts::PI,
        2f64.atan(),
        2f64.atan() + std::f64::consts::PI,
    ];
    for w in kinks {
        let cand = spec.best_rho(w, opts.rho_grid);
        if cand.1 <= best.1 + 1e-12 * best.1.abs() {
            best = cand;
            best_w = w;
        }
    }
    let (rho, loss) = best;
    let (x1, x0) = (rho * best_w.cos(), rho * best_w.sin());
    let x2 = 2.0 * x1 - x0;
    let names = [(x2, "I"), (x1, "A"), (x0, "Kneser")];
    let kept: Vec<&str> = names
        .iter()
        .filter(|(v, _)| *v > 1e-9 * rho)
        .map(|(_, n)| *n)
        .collect();
    let pattern = if rho == 0.0 {
        "zero".to_string()
    } else if kept.is_empty() {
        "none".to_string()
    } else {
        kept.join("+")
    };
    let rank_of = |a: f64, b: f64, c: f64| {
        let (ev, m) = association_eigenvalues(spec.r, a, b, c);
        let top = ev.iter().fold(0.0f64, |t, v| t.max(v.abs()));
        (0..3)
            .filter(|&j| ev[j].abs() > 1e-12 * top.max(1e-300))
            .map(|j| m[j])
            .sum::<usize>()
    };
    let ranks = (
        rank_of(x2, x1, x0),
        rank_of(x2.max(0.0), x1.max(0.0), x0.max(0.0)),
    );
    Ok(SrgOptimum {
        spec: spec.clone(),
        n_classes: n_classes_for(spec.r),
        loss,
        omega: best_w,
        rho,
        x: [x2, x1, x0],
        pattern,
        ranks,
    })
}

/// The deep ReLU UFM instance of the family: $K=\binom r2$, $n$ per class, MSE, every width
/// `width` (at least $K$).
pub fn problem(spec: &SrgSpec, width: usize) -> Result<DeepUfm> {
    spec.check()?;
    let k = n_classes_for(spec.r);
    if width < k {
        return Err(Error::param(
            "width",
            format!("the construction needs width >= K = {k}, got {width}"),
        ));
    }
    let mut cfg = DeepUfmConfig::new(vec![spec.n_per_class; k], spec.layers, width)
        .loss(Loss::Mse)
        .activation(Activation::Relu);
    cfg.lambda_w = spec.lambda_w.clone();
    cfg.lambda_h = spec.lambda_h;
    cfg.build()
}

/// Balanced pair $(W,H)$ with $WH=M$ and $\frac{\lambda_W}2\lVert W\rVert^2+\frac{\lambda_H}2\lVert H\rVert^2=\sqrt{\lambda_W\lambda_H}\lVert M\rVert_*$.
fn balanced_pair(m: ArrayView2<f64>, lw: f64, lh: f64) -> Result<(Array2<f64>, Array2<f64>)> {
    let (u, sv, v) = crate::linalg::thin_svd(m)?;
    let top = sv.first().copied().unwrap_or(0.0);
    let r = sv.iter().filter(|&&s| s > 1e-13 * top.max(1e-300)).count();
    let (cw, ch) = ((lh / lw).powf(0.25), (lw / lh).powf(0.25));
    let w = Array2::from_shape_fn((m.nrows(), r), |(i, j)| cw * sv[j].sqrt() * u[[i, j]]);
    let h = Array2::from_shape_fn((r, m.ncols()), |(j, i)| ch * sv[j].sqrt() * v[[i, j]]);
    Ok((w, h))
}

/// Repeats each column of a $\cdot\times K$ class matrix $n$ times (samples grouped by class).
fn expand(m: &Array2<f64>, n: usize) -> Array2<f64> {
    Array2::from_shape_fn((m.nrows(), m.ncols() * n), |(i, j)| m[[i, j / n]])
}

/// The explicit parameter vector of the optimum in `p` (from [`problem`]); its objective is
/// `opt.loss` up to rounding.
pub fn srg_point(p: &DeepUfm, opt: &SrgOptimum) -> Result<Vec<f64>> {
    let spec = &opt.spec;
    let (r, l, n) = (spec.r, spec.layers, spec.n_per_class);
    let k = n_classes_for(r);
    if p.n_classes() != k || p.n_layers() != l || p.class_sizes().iter().any(|&c| c != n) {
        return Err(Error::param(
            "problem",
            "the problem does not match the SRG specification (K, L, n)",
        ));
    }
    if opt.rho == 0.0 {
        return Ok(vec![0.0; p.n_params()]);
    }
    let dims = p.dims().to_vec();
    let ws_lam = &spec.lambda_w;
    let omega = opt.omega;
    let rho = opt.rho;
    let xhat = {
        let (x1, x0) = (omega.cos(), omega.sin());
        association_matrix(r, 2.0 * x1 - x0, x1, x0)
    };
    let x = &xhat * rho;
    let g = x.mapv(|v| v.max(0.0));
    // W_L = G (G² + Kλ_L I)^{-1} (G symmetric).
    let mu = k as f64 * ws_lam[l - 1];
    let g2 = g.dot(&g) + &(Array2::<f64>::eye(k) * mu);
    let (ev, vecs) = crate::linalg::sym_eigen(g2.view())?;
    let inv = {
        let mut d = Array2::<f64>::zeros((k, k));
        for i in 0..k {
            d[[i, i]] = 1.0 / ev[i];
        }
        vecs.dot(&d).dot(&vecs.t())
    };
    let w_last = g.dot(&inv);
    let mut mats: Vec<Array2<f64>> = Vec::with_capacity(l);
    let h_full;
    if l == 2 {
        let (w1, h) = balanced_pair(expand(&x, n).view(), ws_lam[0], spec.lambda_h)?;
        h_full = place(&h, dims[0], n * k)?;
        mats.push(place(&w1, dims[1], dims[0])?);
    } else {
        let (_, f, w) = spec.chain_constant(omega);
        let total = spec.chain_constant(omega).0 * rho.powf(2.0 / l as f64);
        let t: Vec<f64> = f
            .iter()
            .zip(&w)
            .map(|(&(c, pw), &wi)| (wi * total / c).powf(1.0 / pw))
            .collect();
        let b = incidence(r);
        let u = t[0];
        let (w1, h) = balanced_pair(expand(&(&b * u), n).view(), ws_lam[0], spec.lambda_h)?;
        h_full = place(&h, dims[0], n * k)?;
        mats.push(place(&w1, dims[1], dims[0])?);
        let mut a = u;
        for ti in &t[1..t.len() - 1] {
            let wl = Array2::<f64>::eye(r) * *ti;
            a *= ti;
            let li = mats.len() + 1; // this is W_li
            mats.push(place(&wl, dims[li], dims[li - 1])?);
        }
        // W_{L-1} = X B⁺ / a_{L-1}; B⁺ = Bᵀ (B Bᵀ)^{-1}.
        let bbt = b.dot(&b.t());
        let (ev, vecs) = crate::linalg::sym_eigen(bbt.view())?;
        let mut d = Array2::<f64>::zeros((r, r));
        for i in 0..r {
            d[[i, i]] = 1.0 / ev[i];
        }
        let bplus = b.t().dot(&vecs.dot(&d).dot(&vecs.t()));
        let wlm1 = x.dot(&bplus) / a;
        let li = l - 1;
        mats.push(place(&wlm1, dims[li], dims[li - 1])?);
    }
    mats.push(place(&w_last, dims[l], dims[l - 1])?);
    let views: Vec<ArrayView2<f64>> = mats.iter().map(|m| m.view()).collect();
    p.join(h_full.view(), &views)
}

/// `m` in the top-left corner of a zero `rows x cols` matrix.
fn place(m: &Array2<f64>, rows: usize, cols: usize) -> Result<Array2<f64>> {
    if m.nrows() > rows || m.ncols() > cols {
        return Err(Error::param(
            "width",
            format!(
                "a {}x{} block does not fit a {rows}x{cols} layer; increase --width",
                m.nrows(),
                m.ncols()
            ),
        ));
    }
    let mut out = Array2::zeros((rows, cols));
    out.slice_mut(ndarray::s![..m.nrows(), ..m.ncols()])
        .assign(m);
    Ok(out)
}
