//! Certified global minimum of the bias-free deep linear UFM with MSE, for any depth, widths
//! and class sizes.
//!
//! Problem (Dang et al. 2023, arXiv 2301.00437, bias-free MSE setting; Súkeník et al. 2023,
//! arXiv 2305.13165): with $Y\in\{0,1\}^{K\times N}$ one-hot, $Z=W_L\cdots W_1H$,
//! $$f=\frac1{2N}\lVert W_L\cdots W_1H-Y\rVert_F^2+\sum_{l=1}^L\frac{\lambda_l}2\lVert W_l\rVert_F^2+\frac{\lambda_H}2\lVert H\rVert_F^2 .$$
//!
//! # Derivation
//!
//! **1. The penalty over factorizations.** Let $c_0=\lambda_H$, $c_l=\lambda_l$ and
//! $\bar c=(\lambda_H\prod_l\lambda_l)^{1/(L+1)}$. For every factorization $Z=A_{L+1}\cdots A_1$
//! ($A_1=H$, $A_{l+1}=W_l$),
//! $$\sum_{i=1}^{L+1}\frac{c_{i-1}}2\lVert A_i\rVert_F^2\;\ge\;\frac{L+1}2\,\bar c\sum_j\sigma_j(Z)^{2/(L+1)},$$
//! with equality for the balanced factorization below. Proof: rescaling
//! $A_i=\sqrt{\bar c/c_{i-1}}\,B_i$ keeps the product ($\prod_i\sqrt{\bar c/c_{i-1}}=1$) and turns
//! the left side into $\frac{\bar c}2\sum_i\lVert B_i\rVert_F^2$. Horn's inequality
//! $\prod_{j\le k}\sigma_j(B_{L+1}\cdots B_1)\le\prod_{j\le k}\prod_i\sigma_j(B_i)$ (for every $k$) is
//! a weak log-majorization, so for $p=2/(L+1)$ (as $x\mapsto e^{px}$ is convex increasing)
//! $\sum_j\sigma_j(Z)^p\le\sum_j\prod_i\sigma_j(B_i)^p\le\prod_i\big(\sum_j\sigma_j(B_i)^2\big)^{p/2}$
//! by Hölder with $L+1$ exponents $2/p=L+1$; then AM–GM gives
//! $\prod_i\lVert B_i\rVert_F^{p}\le\frac1{L+1}\sum_i\lVert B_i\rVert_F^2$. Equality: with the thin SVD
//! $Z=USV^\top$ of rank $r$, $B_1=S^{1/(L+1)}V^\top$, $B_{l+1}=S^{1/(L+1)}$ (padded with zeros),
//! $B_{L+1}=US^{1/(L+1)}$; every $\lVert B_i\rVert_F^2=\sum_j\sigma_j^{2/(L+1)}$. This needs every
//! inner width $d_0,\dots,d_{L-1}\ge r$, and conversely $\operatorname{rank}Z\le r_{\max}=\min(K,d_0,\dots,d_{L-1})$.
//! So $\min f=\min_{\operatorname{rank}Z\le r_{\max}}\frac1{2N}\lVert Z-Y\rVert_F^2+\frac{L+1}2\bar c\sum_j\sigma_j(Z)^{2/(L+1)}$.
//!
//! **2. Alignment with the classes.** $YY^\top=\operatorname{diag}(n_k)$, so $\sigma(Y)=(\sqrt{n_k})$
//! with singular pairs $(e_k,\mathbf 1_k/\sqrt{n_k})$. By von Neumann's trace inequality
//! $\langle Z,Y\rangle\le\sum_j\sigma_j(Z)\sigma_j(Y)$ (both sorted decreasingly), hence
//! $\lVert Z-Y\rVert_F^2\ge\sum_j(\sigma_j(Z)-\sigma_j(Y))^2$, with equality iff $Z$ and $Y$ have a
//! simultaneous SVD. The penalty depends on $\sigma(Z)$ only, so
//! $$\min f=\min_{s_1\ge s_2\ge\dots\ge0,\ \#\{s_j>0\}\le r_{\max}}\ \sum_j\varphi_{y_j}(s_j),\qquad
//! \varphi_y(s)=\frac{(s-y)^2}{2N}+\frac{L+1}2\bar c\,s^{2/(L+1)},\quad y_j=\sqrt{n_{(j)}}$$
//! (class sizes sorted decreasingly). Dropping the ordering constraint can only lower the
//! minimum, and the per-class minimisers can be chosen ordered, because $\arg\min_s\varphi_y(s)$
//! is non-decreasing in $y$ ($-sy/N$ has decreasing differences; Topkis). With the rank cap,
//! the gain $\min_s\varphi_y(s)-\varphi_y(0)$ has derivative $-s^\star(y)/N\le0$ in $y$
//! (envelope theorem), so the $r_{\max}$ largest classes are the ones worth keeping. The
//! minimiser is $Z^\star=\operatorname{diag}(t_k)\,Y$, $t_k=s_k^\star/\sqrt{n_k}$: **the optimum is
//! aligned with the classes for every class-size profile** (when sizes tie the SVD of $Y$ is not
//! unique, but the tied classes get the same $s^\star$, so $Z^\star$ is the same matrix; the only
//! other freedom is at the measure-zero $\lambda$ where $\varphi_y(0)=\varphi_y(s_2)$ exactly, where
//! both are optimal). Features collapse to their class means in every layer and the means of
//! distinct classes are orthogonal in every layer (an orthogonal frame; for equal sizes its
//! centred version is a simplex ETF).
//!
//! **3. The 1-D problem, exactly.** For $s>0$, with $q=2/(L+1)$,
//! $\varphi'(s)=\frac{s^{q-1}}N\big(N\bar c-h(s)\big)$, $h(s)=s^{1-q}(y-s)$. For $L\ge2$ ($q<1$),
//! $h(0)=h(y)=0$, $h>0$ on $(0,y)$, $h'(s)=s^{-q}\big((1-q)y-(2-q)s\big)$: $h$ increases on
//! $\lbrack0,s_m\rbrack$ and decreases on $\lbrack s_m,y\rbrack$, $s_m=\frac{1-q}{2-q}y$. Hence the stationary points are
//! the roots of $h(s)=N\bar c$: none if $N\bar c>h(s_m)$ ($\varphi$ increasing, $s^\star=0$), else
//! $s_1\in(0,s_m\rbrack$ (a local maximum) and $s_2\in\lbrack s_m,y)$ (a local minimum), each found by
//! bisection on a monotone branch; $\varphi'(0^+)=+\infty$, so $s=0$ is always a local minimum
//! and $s^\star=\arg\min\{\varphi(0),\varphi(s_2)\}$. This enumerates every candidate, so the
//! value is a certified global minimum (up to floating-point rounding). For $L=1$ ($q=1$):
//! $s^\star=\max(y-N\bar c,0)$, the nuclear-norm soft threshold of the classical UFM.
//!
//! **The zero solution.** Because $\varphi$ is non-convex for $L\ge2$, a class can have a stationary
//! root $s_2>0$ and still be better off at $s=0$ (all its logits zero). The code published with
//! Dang et al. (`synthetic_experiment_*.py`, `compute_x`) takes the *largest* root of its
//! stationary equation (`max(solve(...))`) and never compares it with the zero solution; the
//! analogous rule here is [`ScalarMin::largest_root`], and [`LinearCertificate::largest_root_objective`]
//! is what it would report. See [`crate::deep::figures`] for where the two differ.

use super::{Activation, DeepUfm};
use crate::error::{Error, Result};
use crate::ufm::Loss;
use ndarray::{Array2, ArrayView2};
use serde::Serialize;

/// The per-class problem $\min_{s\ge0}\varphi_y(s)=\frac{(s-y)^2}{2N}+\frac{L+1}2\bar c\,s^{2/(L+1)}$.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ScalarProblem {
    /// $y=\sqrt{n_k}$.
    pub y: f64,
    /// $N$.
    pub n_total: f64,
    /// $\bar c=(\lambda_H\prod_l\lambda_l)^{1/(L+1)}$.
    pub c_bar: f64,
    /// $L$.
    pub layers: usize,
}

/// The exact solution of a [`ScalarProblem`].
#[derive(Clone, Debug, Serialize)]
pub struct ScalarMin {
    /// The global minimiser $s^\star$.
    pub s: f64,
    /// $\varphi(s^\star)$.
    pub value: f64,
    /// $\varphi(0)=y^2/(2N)$.
    pub zero_value: f64,
    /// Every stationary point in $(0,\infty)$, ascending (0, 1 or 2 of them).
    pub roots: Vec<f64>,
    /// The largest stationary point, if any (the published code's choice).
    pub largest_root: Option<f64>,
}

impl ScalarProblem {
    /// $q=2/(L+1)$.
    pub fn exponent(&self) -> f64 {
        2.0 / (self.layers as f64 + 1.0)
    }

    /// $\varphi(s)$.
    pub fn value(&self, s: f64) -> f64 {
        let q = self.exponent();
        (s - self.y).powi(2) / (2.0 * self.n_total)
            + 0.5 * (self.layers as f64 + 1.0) * self.c_bar * s.max(0.0).powf(q)
    }

    /// $\varphi'(s)$ for $s>0$.
    pub fn derivative(&self, s: f64) -> f64 {
        let q = self.exponent();
        (s - self.y) / self.n_total + self.c_bar * s.powf(q - 1.0)
    }

    fn h(&self, s: f64) -> f64 {
        s.powf(1.0 - self.exponent()) * (self.y - s)
    }

    /// Every stationary point in $(0,\infty)$, ascending, by bisection on the monotone branches of
    /// $h$ (module docs, step 3).
    pub fn stationary_points(&self) -> Vec<f64> {
        let (y, tau) = (self.y, self.n_total * self.c_bar);
        if self.layers == 1 {
            return if y - tau > 0.0 { vec![y - tau] } else { vec![] };
        }
        if !(tau > 0.0) {
            return vec![y];
        }
        let q = self.exponent();
        let sm = (1.0 - q) / (2.0 - q) * y;
        let hm = self.h(sm);
        if hm < tau {
            return vec![];
        }
        if hm == tau {
            return vec![sm];
        }
        // h - tau < 0 at 0, > 0 at sm (increasing branch); > 0 at sm, < 0 at y (decreasing).
        let s1 = bisect(|s| self.h(s) - tau, 0.0, sm);
        let s2 = bisect(|s| tau - self.h(s), sm, y);
        vec![s1, s2]
    }

    /// The global minimum over $s\ge0$: $s=0$ against every stationary point.
    pub fn solve(&self) -> ScalarMin {
        let roots = self.stationary_points();
        let zero_value = self.value(0.0);
        let (mut s, mut value) = (0.0, zero_value);
        for &r in &roots {
            let v = self.value(r);
            if v < value {
                s = r;
                value = v;
            }
        }
        ScalarMin {
            s,
            value,
            zero_value,
            largest_root: roots.last().copied(),
            roots,
        }
    }
}

/// Root of an increasing-through-zero function on $\lbrack a,b\rbrack$ ($g(a)\le0\le g(b)$), to the last bit.
fn bisect(g: impl Fn(f64) -> f64, mut a: f64, mut b: f64) -> f64 {
    for _ in 0..200 {
        let m = 0.5 * (a + b);
        if m <= a || m >= b {
            break;
        }
        if g(m) <= 0.0 {
            a = m;
        } else {
            b = m;
        }
    }
    0.5 * (a + b)
}

/// One class in the certificate.
#[derive(Clone, Debug, Serialize)]
pub struct ClassOptimum {
    /// The class index $k$.
    pub class: usize,
    /// $n_k$.
    pub n: usize,
    /// $s_k^\star$, the singular value of $Z^\star$ for this class.
    pub s: f64,
    /// $t_k=s_k^\star/\sqrt{n_k}$: every sample of class $k$ gets logits $t_ke_k$.
    pub logit: f64,
    /// $\varphi_k(s_k^\star)$, this class's share of the objective.
    pub value: f64,
    /// Stationary points of $\varphi_k$ in $(0,\infty)$.
    pub roots: Vec<f64>,
    /// Whether the class is collapsed to the zero solution ($s_k^\star=0$).
    pub zero: bool,
    /// Whether a stationary root exists but the zero solution is strictly better.
    pub zero_beats_root: bool,
    /// Whether the class was dropped by the rank cap $r_{\max}$.
    pub rank_capped: bool,
}

/// The certified global minimum of a bias-free MSE deep linear UFM.
#[derive(Clone, Debug, Serialize)]
pub struct LinearCertificate {
    /// $\min f$.
    pub objective: f64,
    /// $\bar c=(\lambda_H\prod_l\lambda_l)^{1/(L+1)}$.
    pub c_bar: f64,
    /// $r_{\max}=\min(K,d_0,\dots,d_{L-1})$.
    pub max_rank: usize,
    /// $\operatorname{rank}Z^\star$.
    pub rank: usize,
    /// Per class, in class order.
    pub classes: Vec<ClassOptimum>,
    /// The objective the "largest stationary root, never zero" rule would report (each class at
    /// its largest root when it has one, else at 0; same rank cap). $\ge$ `objective`.
    pub largest_root_objective: f64,
}

impl LinearCertificate {
    /// $Z^\star=\operatorname{diag}(t_k)Y$ ($K\times N$, samples grouped by class).
    pub fn optimal_logits(&self, p: &DeepUfm) -> Array2<f64> {
        let mut z = Array2::zeros((p.n_classes(), p.n_samples()));
        for (i, &y) in p.labels().iter().enumerate() {
            z[[y as usize, i]] = self.classes[y as usize].logit;
        }
        z
    }
}

/// The certificate for `p`, which must be linear, MSE, with every $\lambda>0$.
pub fn certify(p: &DeepUfm) -> Result<LinearCertificate> {
    if p.activation() != Activation::Linear {
        return Err(Error::Unsupported(
            "the closed-form certificate is for the deep linear UFM; for ReLU use `ufm deep relu`"
                .into(),
        ));
    }
    if p.loss() != Loss::Mse {
        return Err(Error::Unsupported(format!(
            "the closed-form certificate is for the MSE loss, not {}; with cross-entropy the solver \
             runs but nothing is certified",
            p.loss()
        )));
    }
    if p.lambda_h() <= 0.0 || p.lambda_w().iter().any(|&l| l <= 0.0) {
        return Err(Error::param(
            "lambda",
            "the certificate needs every weight decay > 0 (with a zero one the infimum is not attained)",
        ));
    }
    let l = p.n_layers();
    let n_total = p.n_samples() as f64;
    let log_c =
        (p.lambda_h().ln() + p.lambda_w().iter().map(|v| v.ln()).sum::<f64>()) / (l as f64 + 1.0);
    let c_bar = log_c.exp();
    let dims = p.dims();
    let max_rank = dims[..l]
        .iter()
        .copied()
        .min()
        .unwrap_or(0)
        .min(p.n_classes());
    let solved: Vec<ScalarMin> = p
        .class_sizes()
        .iter()
        .map(|&n| {
            ScalarProblem {
                y: (n as f64).sqrt(),
                n_total,
                c_bar,
                layers: l,
            }
            .solve()
        })
        .collect();
    // Rank cap: keep the r_max largest classes among those with s* > 0 (stable order).
    let mut order: Vec<usize> = (0..solved.len()).filter(|&k| solved[k].s > 0.0).collect();
    order.sort_by(|&a, &b| p.class_sizes()[b].cmp(&p.class_sizes()[a]));
    let kept: Vec<usize> = order.iter().copied().take(max_rank).collect();
    let mut root_order: Vec<usize> = (0..solved.len())
        .filter(|&k| solved[k].largest_root.is_some())
        .collect();
    root_order.sort_by(|&a, &b| p.class_sizes()[b].cmp(&p.class_sizes()[a]));
    let root_kept: Vec<usize> = root_order.iter().copied().take(max_rank).collect();
    let mut classes = Vec::with_capacity(solved.len());
    let (mut objective, mut largest_root_objective) = (0.0, 0.0);
    for (k, m) in solved.iter().enumerate() {
        let n = p.class_sizes()[k];
        let capped = m.s > 0.0 && !kept.contains(&k);
        let (s, value) = if capped {
            (0.0, m.zero_value)
        } else {
            (m.s, m.value)
        };
        objective += value;
        let sp = ScalarProblem {
            y: (n as f64).sqrt(),
            n_total,
            c_bar,
            layers: l,
        };
        largest_root_objective += match m.largest_root {
            Some(r) if root_kept.contains(&k) => sp.value(r),
            _ => m.zero_value,
        };
        classes.push(ClassOptimum {
            class: k,
            n,
            s,
            logit: s / (n as f64).sqrt(),
            value,
            roots: m.roots.clone(),
            zero: s == 0.0,
            zero_beats_root: m.largest_root.is_some() && m.s == 0.0,
            rank_capped: capped,
        });
    }
    let rank = classes.iter().filter(|c| !c.zero).count();
    Ok(LinearCertificate {
        objective,
        c_bar,
        max_rank,
        rank,
        classes,
        largest_root_objective,
    })
}

/// A parameter vector of `p` with $W_L\cdots W_1H=Z$ whose weight decay is the minimum over all
/// factorizations of $Z$ (the balanced factorization of step 1 in the module docs), and that
/// minimum $\frac{L+1}2\bar c\sum_j\sigma_j(Z)^{2/(L+1)}$, from a thin SVD of $Z$ (for the linear
/// model: the SVD's intermediate features may be negative). `p`'s widths must be at least
/// $\operatorname{rank}Z$.
pub fn balanced_point(p: &DeepUfm, z: ArrayView2<f64>) -> Result<(Vec<f64>, f64)> {
    let (k, n) = (p.n_classes(), p.n_samples());
    if z.dim() != (k, n) {
        return Err(Error::shape(
            "logits Z",
            format!("{k}x{n}"),
            format!("{}x{}", z.nrows(), z.ncols()),
        ));
    }
    let l = p.n_layers();
    let (u, sv, v) = crate::linalg::thin_svd(z)?; // Z = U diag(sv) Vᵀ, U: K x m, V: N x m
    let top = sv.first().copied().unwrap_or(0.0);
    let r = sv.iter().filter(|&&s| s > 1e-14 * top.max(1e-300)).count();
    let dims = p.dims();
    if dims[..l].iter().any(|&d| d < r) {
        return Err(Error::param(
            "dim",
            format!("rank(Z) = {r} exceeds a width in {:?}", &dims[..l]),
        ));
    }
    let lam: Vec<f64> = std::iter::once(p.lambda_h())
        .chain(p.lambda_w().iter().copied())
        .collect();
    if lam.iter().any(|&c| c <= 0.0) {
        return Err(Error::param(
            "lambda",
            "the balanced point needs every weight decay > 0",
        ));
    }
    let c_bar = (lam.iter().map(|c| c.ln()).sum::<f64>() / (l as f64 + 1.0)).exp();
    let e = 1.0 / (l as f64 + 1.0);
    let root: Vec<f64> = sv[..r].iter().map(|s| s.powf(e)).collect();
    // H = sqrt(c̄/λ_H) S^{1/(L+1)} Vᵀ (first r rows).
    let mut h = Array2::<f64>::zeros((dims[0], n));
    let a0 = (c_bar / lam[0]).sqrt();
    for j in 0..r {
        for i in 0..n {
            h[[j, i]] = a0 * root[j] * v[[i, j]];
        }
    }
    let mut ws = Vec::with_capacity(l);
    for li in 1..=l {
        let a = (c_bar / lam[li]).sqrt();
        let mut w = Array2::<f64>::zeros((dims[li], dims[li - 1]));
        for j in 0..r {
            if li < l {
                w[[j, j]] = a * root[j];
            } else {
                for c in 0..k {
                    w[[c, j]] = a * root[j] * u[[c, j]];
                }
            }
        }
        ws.push(w);
    }
    let views: Vec<ArrayView2<f64>> = ws.iter().map(|w| w.view()).collect();
    let x = p.join(h.view(), &views)?;
    let penalty =
        0.5 * (l as f64 + 1.0) * c_bar * sv[..r].iter().map(|s| s.powf(2.0 * e)).sum::<f64>();
    Ok((x, penalty))
}

/// The certified optimum as a parameter vector of `p` (its objective equals
/// [`LinearCertificate::objective`] up to rounding): [`class_aligned_point`] with the
/// certificate's $s_k^\star$.
pub fn optimal_point(p: &DeepUfm, cert: &LinearCertificate) -> Result<Vec<f64>> {
    let s: Vec<f64> = cert.classes.iter().map(|c| c.s).collect();
    class_aligned_point(p, &s)
}

/// The balanced factorization of $Z=\sum_ks_k\,e_k(\mathbf 1_k/\sqrt{n_k})^\top$ (one singular value
/// $s_k\ge0$ per class, singular vectors the classes'), built without an SVD: with $j$ running
/// over the classes $k_j$ with $s_{k_j}>0$, $\rho_j=s_{k_j}^{1/(L+1)}$ and $a_i=\sqrt{\bar c/c_i}$,
/// $H_{j,i}=a_0\rho_j/\sqrt{n_{k_j}}$ for $i$ in class $k_j$, $(W_l)_{jj}=a_l\rho_j$ ($l<L$),
/// $(W_L)_{k_j,j}=a_L\rho_j$. Every entry is $\ge0$, so the ReLU model has the same features and
/// objective as the linear one at this point (the deep neural collapse configuration).
pub fn class_aligned_point(p: &DeepUfm, s: &[f64]) -> Result<Vec<f64>> {
    let (k, n) = (p.n_classes(), p.n_samples());
    if s.len() != k || s.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(Error::param(
            "s",
            format!("need {k} finite singular values >= 0, one per class"),
        ));
    }
    let l = p.n_layers();
    let active: Vec<usize> = (0..k).filter(|&c| s[c] > 0.0).collect();
    let dims = p.dims();
    if dims[..l].iter().any(|&d| d < active.len()) {
        return Err(Error::param(
            "dim",
            format!(
                "{} non-zero classes need every width >= {}, got {:?}",
                active.len(),
                active.len(),
                &dims[..l]
            ),
        ));
    }
    let lam: Vec<f64> = std::iter::once(p.lambda_h())
        .chain(p.lambda_w().iter().copied())
        .collect();
    if lam.iter().any(|&c| c <= 0.0) {
        return Err(Error::param(
            "lambda",
            "the balanced point needs every weight decay > 0",
        ));
    }
    let c_bar = (lam.iter().map(|c| c.ln()).sum::<f64>() / (l as f64 + 1.0)).exp();
    let e = 1.0 / (l as f64 + 1.0);
    let mut h = Array2::<f64>::zeros((dims[0], n));
    let a0 = (c_bar / lam[0]).sqrt();
    for (j, &c) in active.iter().enumerate() {
        let v = a0 * s[c].powf(e) / (p.class_sizes()[c] as f64).sqrt();
        for (i, &y) in p.labels().iter().enumerate() {
            if y as usize == c {
                h[[j, i]] = v;
            }
        }
    }
    let mut ws = Vec::with_capacity(l);
    for li in 1..=l {
        let a = (c_bar / lam[li]).sqrt();
        let mut w = Array2::<f64>::zeros((dims[li], dims[li - 1]));
        for (j, &c) in active.iter().enumerate() {
            let row = if li < l { j } else { c };
            w[[row, j]] = a * s[c].powf(e);
        }
        ws.push(w);
    }
    let views: Vec<ArrayView2<f64>> = ws.iter().map(|w| w.view()).collect();
    p.join(h.view(), &views)
}

/// The best simplex-ETF configuration of a **balanced** deep linear UFM with cross-entropy: logits
/// $z_i=t\,(e_{y_i}-\frac1K\mathbf 1)$, i.e. $Z=t(I-\frac1KJ)Y$ with $K-1$ singular values $t\sqrt n$,
/// so that by step 1
/// $$g(t)=\log\big(1+(K-1)e^{-t}\big)+\frac{L+1}2\bar c\,(K-1)\,(t\sqrt n)^{2/(L+1)}$$
/// minimised over $t\ge0$ (dense grid on $\lbrack0,t_{\max}\rbrack$, where the penalty alone exceeds
/// $g(0)=\log K$, then golden-section refinement). An **upper bound** on the CE optimum (a
/// candidate, not a certificate: for $L\ge2$ the Schatten quasi-norm rewards lower rank, so the
/// ETF need not be optimal; compare with the solver).
#[derive(Clone, Debug, Serialize)]
pub struct EtfCandidate {
    /// The best scale $t^\star$ (0 means all logits zero).
    pub t: f64,
    /// $g(t^\star)$.
    pub objective: f64,
}

/// See [`EtfCandidate`]; needs equal class sizes, a linear model, cross-entropy, $\lambda>0$.
pub fn etf_candidate(p: &DeepUfm) -> Result<EtfCandidate> {
    let sizes = p.class_sizes();
    if sizes.iter().any(|&n| n != sizes[0]) {
        return Err(Error::Unsupported(
            "the ETF candidate is for equal class sizes".into(),
        ));
    }
    if p.activation() != Activation::Linear || p.loss() != Loss::CrossEntropy {
        return Err(Error::Unsupported(
            "the ETF candidate is for the deep linear UFM with cross-entropy".into(),
        ));
    }
    if p.lambda_h() <= 0.0 || p.lambda_w().iter().any(|&l| l <= 0.0) {
        return Err(Error::param("lambda", "needs every weight decay > 0"));
    }
    let l = p.n_layers() as f64;
    let k = p.n_classes() as f64;
    let n = sizes[0] as f64;
    let c_bar =
        ((p.lambda_h().ln() + p.lambda_w().iter().map(|v| v.ln()).sum::<f64>()) / (l + 1.0)).exp();
    let q = 2.0 / (l + 1.0);
    let pen = 0.5 * (l + 1.0) * c_bar * (k - 1.0);
    let g = |t: f64| ((k - 1.0) * (-t).exp()).ln_1p() + pen * (t * n.sqrt()).powf(q);
    let t_max = (k.ln() / pen).powf(1.0 / q) / n.sqrt();
    let m = 20_000;
    let (mut best_t, mut best) = (0.0, g(0.0));
    for i in 1..=m {
        let t = t_max * i as f64 / m as f64;
        let v = g(t);
        if v < best {
            best = v;
            best_t = t;
        }
    }
    if best_t > 0.0 {
        let h = t_max / m as f64;
        let (mut a, mut b) = ((best_t - h).max(0.0), best_t + h);
        let phi = 0.5 * (5f64.sqrt() - 1.0);
        for _ in 0..200 {
            let c = b - phi * (b - a);
            let d = a + phi * (b - a);
            if g(c) < g(d) {
                b = d;
            } else {
                a = c;
            }
        }
        let t = 0.5 * (a + b);
        if g(t) < best {
            best = g(t);
            best_t = t;
        }
    }
    Ok(EtfCandidate {
        t: best_t,
        objective: best,
    })
}

/// $Z=t(I-\frac1KJ)Y$ for [`EtfCandidate`] (balanced classes).
pub fn etf_logits(p: &DeepUfm, t: f64) -> Array2<f64> {
    let k = p.n_classes();
    let mut z = Array2::from_elem((k, p.n_samples()), -t / k as f64);
    for (i, &y) in p.labels().iter().enumerate() {
        z[[y as usize, i]] += t;
    }
    z
}
