//! The convex (nuclear-norm) reformulation of the UFM, solved by accelerated proximal gradient
//! with singular-value thresholding, and its Fenchel-dual optimality certificate.
//!
//! # The problem
//! With logits $u_i=z_i+b$, the smooth part and the full objective are
//! $$F(Z,b)=\frac1N\sum_{i=1}^N\ell(z_i+b,y_i)+\frac{\lambda_b}2\lVert b\rVert^2,\qquad
//! P(Z,b)=F(Z,b)+\tau\lVert Z\rVert_*,\qquad \tau=\sqrt{\lambda_W\lambda_H},$$
//! over $Z\in\mathbb R^{K\times N}$ (and $b\in\mathbb R^K$ when the model has a bias).
//!
//! # Column representations
//! $Z$ is stored by *distinct* columns $z_c$ with multiplicities $\omega_c$ ($\sum_c\omega_c=N$):
//! [`Representation::PerSample`] keeps all $N$ columns ($\omega_c=1$);
//! [`Representation::ClassCollapsed`] keeps one column per class ($\omega_k=n_k$), i.e. the
//! subspace $Z=[z_1\mathbf 1_{n_1}^\top,\dots,z_K\mathbf 1_{n_K}^\top]$. Every quantity below is
//! the one of the full $K\times N$ matrix: $\langle A,B\rangle=\sum_c\omega_c\,a_c^\top b_c$,
//! $ZZ^\top=\sum_c\omega_cz_cz_c^\top$, $\lVert Z\rVert_*=\sum_j\sigma_j$ with $\sigma_j^2$ the
//! eigenvalues of that Gram matrix. Proximal-gradient steps keep the collapsed subspace invariant
//! (equal columns get equal gradients, and thresholding $Z\mapsto PZ$ acts on the left), and by
//! convexity and the symmetry of $P$ under permutations of the samples of a class, averaging any
//! minimizer over those permutations gives a collapsed minimizer, so the collapsed solve reaches
//! $P^\star$ of the full problem. The certificate never relies on that argument: its primal point
//! is a point of the full problem and its dual point is a feasible dual point of the full problem.
//!
//! # Algorithm
//! FISTA (Beck & Teboulle 2009) in the metric
//! $\lVert(\Delta Z,\Delta b)\rVert_M^2=\lVert\Delta Z\rVert_F^2/N+\lVert\Delta b\rVert^2$
//! (which makes the Lipschitz constant of $\nabla F$ at most $2c_\ell+\lambda_b$, $c_\ell=\tfrac12$ for
//! softmax losses, $1$ for MSE), with backtracking on $L$ and function-value adaptive restart
//! (O'Donoghue & Candès 2015). The step is
//! $$Z^+=\operatorname{SVT}_{\tau N/L}\!\Big(Y-\tfrac NL\nabla_ZF(Y,b_Y)\Big),\qquad b^+=b_Y-\tfrac1L\nabla_bF(Y,b_Y),$$
//! and singular-value thresholding (Cai, Candès & Shen 2010) is computed from the $K\times K$
//! Gram matrix $ZZ^\top=U\operatorname{diag}(\sigma^2)U^\top$:
//! $\operatorname{SVT}_\theta(Z)=U\operatorname{diag}\big((\sigma_j-\theta)_+/\sigma_j\big)U^\top Z$.
//!
//! # Duality gap (the certificate)
//! Write $\mathcal L(U)=\frac1N\sum_i\ell(u_i,y_i)$, so $\mathcal L^*(\Theta)=\frac1N\sum_i\ell^*(N\theta_i,y_i)$.
//! For any $\Theta\in\mathbb R^{K\times N}$, Fenchel–Young ($\mathcal L(U)\ge\langle\Theta,U\rangle-\mathcal L^*(\Theta)$)
//! with $U=Z+b\mathbf 1^\top$ gives
//! $$P(Z,b)\ \ge\ -\mathcal L^*(\Theta)+\big[\langle\Theta,Z\rangle+\tau\lVert Z\rVert_*\big]+\big[\langle\Theta\mathbf 1,b\rangle+\tfrac{\lambda_b}2\lVert b\rVert^2\big].$$
//! Minimising each bracket over its variable: the first is $\ge0$ for all $Z$ exactly when
//! $\lVert\Theta\rVert_2\le\tau$ (the spectral norm is the dual norm of the nuclear norm); the second
//! is $\ge-\lVert\Theta\mathbf 1\rVert^2/(2\lambda_b)$ if $\lambda_b>0$, is $\ge0$ exactly when
//! $\Theta\mathbf 1=0$ if $\lambda_b=0$, and is absent without a bias. Hence for every
//! *dual-feasible* $\Theta$ (spectral-norm ball, $\Theta\mathbf 1=0$ when $\lambda_b=0$,
//! $\mathcal L^*(\Theta)<\infty$)
//! $$P^\star\ \ge\ D(\Theta)=-\mathcal L^*(\Theta)-\frac{\lVert\Theta\mathbf 1\rVert^2}{2\lambda_b}\quad(\text{last term only with a bias and }\lambda_b>0),$$
//! and $P(Z,b)-D(\Theta)\ge P(Z,b)-P^\star\ge0$ is a certified bound on the suboptimality.
//!
//! **The dual point.** At the optimum $\Theta^\star=\nabla\mathcal L(U^\star)$ (that is
//! $\nabla_ZF$), so from an iterate we take $G=\nabla\mathcal L(U)$, i.e. $N\theta_i=\nabla\ell(u_i,y_i)$, and
//! 1. if there is a bias and $\lambda_b=0$, make $\Theta\mathbf 1=0$: for MSE subtract the mean
//!    column; for softmax losses, where $N\theta_i+q_i=p_i$ must stay in the simplex ($q_i$ the
//!    target), mix $p_i\leftarrow(1-\beta)p_i+\beta r$ with the one distribution $r$ and smallest
//!    $\beta$ that restore $\sum_ip_i=\sum_iq_i$ (see `center_softmax`);
//! 2. clip the singular values of $\Theta$ at $\tau$: $\Delta=(P-I)\Theta$ with
//!    $P=U\operatorname{diag}(\min(1,\tau/\sigma_j))U^\top$ from the $K\times K$ Gram matrix of $\Theta$, and
//!    $\Theta\leftarrow\Theta+s\Delta$ with the largest $s\le1$ that keeps every $p_i$ nonnegative
//!    (softmax losses; $s=1$ for MSE). Left multiplication keeps $\Theta\mathbf 1=0$, and keeps the
//!    columns summing to zero for softmax losses (their left singular vectors are $\perp\mathbf 1$);
//! 3. scale $\Theta\leftarrow\alpha\Theta$, $\alpha=\min\big(1,\tau(1-10^{-13})/\lVert\Theta\rVert_2\big)$: scaling keeps
//!    $\Theta\mathbf 1=0$ and the conjugate's domain (it mixes $p_i$ with $q_i$); the factor
//!    $1-10^{-13}$ absorbs the rounding of the computed spectral norm.
//!
//! Scaling alone (step 3) loses *first order* in $\lVert\Theta-\Theta^\star\rVert$, because it moves
//! $\Theta$ off the boundary of the spectral ball along the normal that $Z^\star$ pairs with; clipping
//! (step 2) stays on the boundary, so the gap is second order in the distance of the iterate to the
//! optimum. That matters: along directions where $P$ is flat (e.g. cross-entropy without bias)
//! $P$ reaches machine precision while $Z$ is only accurate to $\sim10^{-8}$, and the scaled
//! point alone then stalls at a relative gap near $10^{-10}$ where the clipped one reaches $10^{-13}$.
//!
//! Conjugates used ($v=N\theta_i$): cross-entropy and label smoothing with target $q$:
//! $\ell^*(v)=\sum_jp_j\log p_j$ for $p=v+q$ in the simplex ($+\infty$ otherwise); MSE:
//! $\ell^*(v)=v_y+\tfrac12\lVert v\rVert^2$. The focal loss with $\gamma>0$ is not convex in the
//! logits, so neither the reformulation nor the certificate applies to it.
//!
//! Near the optimum $\alpha\to1$, $\beta\to0$, $s\to1$ and the gap tends to zero, so it is also the
//! stopping rule. All quantities are evaluated in
//! `f64`; the bound is certified up to floating-point rounding (relative $\sim10^{-15}$).

use crate::error::{Error, Result};
use crate::linalg::{singular_values, sym_eigen};
use crate::ufm::{Loss, UfmProblem};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::Serialize;
use std::time::Instant;

/// How the columns of $Z$ are stored (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Representation {
    /// One column per class with multiplicity $n_k$ (exact for $P^\star$; $O(K^3)$ per step).
    #[default]
    ClassCollapsed,
    /// All $N$ columns ($O(K^2N)$ per step): the literal $K\times N$ problem.
    PerSample,
}

/// The convex reformulation of a UFM instance (validated: convex loss, $\lambda_W,\lambda_H>0$).
#[derive(Clone, Debug)]
pub struct ConvexProblem {
    k: usize,
    n: usize,
    labels: Vec<u32>,
    weights: Vec<f64>,
    loss: Loss,
    tau: f64,
    lambda_b: f64,
    bias: bool,
    repr: Representation,
}

impl ConvexProblem {
    /// The convex reformulation of `p`.
    ///
    /// Errors for the focal loss with $\gamma>0$ (not convex in the logits) and for
    /// $\lambda_W=0$ or $\lambda_H=0$ (then $\tau=0$: no nuclear-norm term, and the balanced
    /// factorization $W=(\lambda_H/\lambda_W)^{1/4}US^{1/2}$ is undefined).
    pub fn new(p: &UfmProblem, repr: Representation) -> Result<Self> {
        let loss = p.loss();
        if !loss.is_convex() {
            return Err(Error::param(
                "loss",
                format!(
                    "{loss} is not convex in the logits (its logit Hessian can be indefinite for \
                     gamma > 0), so the nuclear-norm reformulation gives no lower bound; use ce, \
                     mse, ls[:alpha] or focal:0"
                ),
            ));
        }
        for (name, v) in [("lambda-w", p.lambda_w()), ("lambda-h", p.lambda_h())] {
            if !(v > 0.0) {
                return Err(Error::param(
                    name,
                    format!(
                        "the convex reformulation needs lambda-w > 0 and lambda-h > 0 (got {v}): \
                         its regulariser is sqrt(lambda_W lambda_H) ||Z||_*"
                    ),
                ));
            }
        }
        let k = p.n_classes();
        let (labels, weights) = match repr {
            Representation::ClassCollapsed => (
                (0..k as u32).collect(),
                p.class_sizes().iter().map(|&n| n as f64).collect(),
            ),
            Representation::PerSample => (p.labels().to_vec(), vec![1.0; p.n_samples()]),
        };
        Ok(ConvexProblem {
            k,
            n: p.n_samples(),
            labels,
            weights,
            loss,
            tau: (p.lambda_w() * p.lambda_h()).sqrt(),
            lambda_b: p.lambda_b(),
            bias: p.has_bias(),
            repr,
        })
    }

    /// $\tau=\sqrt{\lambda_W\lambda_H}$.
    pub fn tau(&self) -> f64 {
        self.tau
    }
    /// $K$.
    pub fn n_classes(&self) -> usize {
        self.k
    }
    /// Number of stored columns $m$ ($K$ or $N$).
    pub fn n_columns(&self) -> usize {
        self.labels.len()
    }
    /// The representation.
    pub fn representation(&self) -> Representation {
        self.repr
    }
    /// Multiplicity $\omega_c$ of each stored column.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
    /// Label of each stored column.
    pub fn column_labels(&self) -> &[u32] {
        &self.labels
    }
    /// The stored column holding sample $i$ (samples grouped by class, as in [`UfmProblem`]).
    pub fn column_of_sample(&self, p: &UfmProblem, i: usize) -> usize {
        match self.repr {
            Representation::ClassCollapsed => p.labels()[i] as usize,
            Representation::PerSample => i,
        }
    }

    fn check(&self, zt: &ArrayView2<f64>, b: &[f64]) -> Result<()> {
        if zt.dim() != (self.n_columns(), self.k) {
            return Err(Error::shape(
                "Z^T (stored columns x classes)",
                format!("{}x{}", self.n_columns(), self.k),
                format!("{}x{}", zt.nrows(), zt.ncols()),
            ));
        }
        if b.len() != self.k {
            return Err(Error::shape(
                "b",
                format!("{}", self.k),
                format!("{}", b.len()),
            ));
        }
        if zt.iter().chain(b).any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "the convex iterate (Z, b)".into(),
            });
        }
        Ok(())
    }

    /// $F(Z,b)$; when `grad` is given, fills it with $\nabla\ell(z_c+b,y_c)$ per stored column
    /// (the logit-scale gradient: $\nabla_ZF$ has columns $\nabla\ell/N$) and returns also
    /// $\nabla_bF=\sum_c\omega_c\nabla\ell_c/N+\lambda_bb$ (zero without a bias).
    fn smooth(
        &self,
        zt: &ArrayView2<f64>,
        b: &[f64],
        grad: Option<&mut Array2<f64>>,
    ) -> (f64, Vec<f64>) {
        let inv_n = 1.0 / self.n as f64;
        let mut total = 0.0;
        let mut gb = vec![0.0; self.k];
        let mut u = vec![0.0; self.k];
        let mut grad = grad;
        for (c, row) in zt.axis_iter(Axis(0)).enumerate() {
            for (j, uj) in u.iter_mut().enumerate() {
                *uj = row[j] + if self.bias { b[j] } else { 0.0 };
            }
            let w = self.weights[c];
            total += w * self
                .loss
                .value_grad_inplace(&mut u, self.labels[c] as usize);
            if let Some(g) = grad.as_deref_mut() {
                for j in 0..self.k {
                    g[[c, j]] = u[j];
                    gb[j] += w * u[j] * inv_n;
                }
            }
        }
        let b_sq: f64 = if self.bias {
            b.iter().map(|v| v * v).sum()
        } else {
            0.0
        };
        if self.bias {
            for (g, &bv) in gb.iter_mut().zip(b) {
                *g += self.lambda_b * bv;
            }
        } else {
            gb.iter_mut().for_each(|g| *g = 0.0);
        }
        (total * inv_n + 0.5 * self.lambda_b * b_sq, gb)
    }

    /// The weighted Gram matrix $ZZ^\top=\sum_c\omega_cz_cz_c^\top$ ($K\times K$).
    fn gram(&self, zt: &ArrayView2<f64>) -> Array2<f64> {
        let scaled = self.weighted(zt);
        scaled.t().dot(&scaled)
    }

    /// Rows $\sqrt{\omega_c}\,z_c^\top$: an $m\times K$ matrix with the singular values of $Z$.
    fn weighted(&self, zt: &ArrayView2<f64>) -> Array2<f64> {
        let mut s = zt.to_owned();
        for (mut row, &w) in s.axis_iter_mut(Axis(0)).zip(&self.weights) {
            row *= w.sqrt();
        }
        s
    }

    /// Singular values of the full $K\times N$ matrix $Z$ (descending), from a direct SVD
    /// (accurate also for the small ones, unlike the square roots of Gram eigenvalues).
    pub fn singular_values(&self, zt: ArrayView2<f64>) -> Result<Vec<f64>> {
        self.check(&zt, &vec![0.0; self.k])?;
        singular_values(self.weighted(&zt).view())
    }

    /// $P(Z,b)=F(Z,b)+\tau\lVert Z\rVert_*$. `zt` is $m\times K$ (row $c$ is $z_c^\top$).
    pub fn objective(&self, zt: ArrayView2<f64>, b: &[f64]) -> Result<f64> {
        self.check(&zt, b)?;
        let (f, _) = self.smooth(&zt, b, None);
        Ok(f + self.tau * self.singular_values(zt)?.iter().sum::<f64>())
    }

    /// Singular-value thresholding of the full matrix: returns $\operatorname{SVT}_\theta(Z)$ and
    /// its nuclear norm $\sum_j(\sigma_j-\theta)_+$.
    fn svt(&self, zt: &Array2<f64>, theta: f64) -> Result<(Array2<f64>, f64)> {
        let (vals, u) = sym_eigen(self.gram(&zt.view()).view())?;
        let mut phi = Array1::<f64>::zeros(self.k);
        let mut nuc = 0.0;
        for (j, &l) in vals.iter().enumerate() {
            let s = l.max(0.0).sqrt();
            if s > theta {
                phi[j] = (s - theta) / s;
                nuc += s - theta;
            }
        }
        // Z ← U diag(φ) Uᵀ Z, i.e. Zᵀ ← Zᵀ U diag(φ) Uᵀ.
        let m = &u * &phi.view().insert_axis(Axis(0));
        let proj = m.dot(&u.t());
        Ok((zt.dot(&proj), nuc))
    }

    /// A certified lower bound $D(\Theta)\le P^\star$ from the dual point built at $(Z,b)$ (see
    /// the [module docs](self)), with the scalings used.
    pub fn dual_bound(&self, zt: ArrayView2<f64>, b: &[f64]) -> Result<DualBound> {
        Ok(self.dual_point(zt, b)?.1)
    }

    /// The dual-feasible point $\Theta$ built at $(Z,b)$, stored like $Z$ ($m\times K$, row $c$ is
    /// $\theta_c^\top$, the column of every sample in stored column $c$), and its bound.
    pub fn dual_point(&self, zt: ArrayView2<f64>, b: &[f64]) -> Result<(Array2<f64>, DualBound)> {
        self.check(&zt, b)?;
        let mut v = Array2::<f64>::zeros(zt.dim());
        self.smooth(&zt, b, Some(&mut v));
        let n = self.n as f64;
        let mut beta = 0.0;
        if self.bias && self.lambda_b == 0.0 {
            beta = match self.loss {
                Loss::Mse => {
                    let mean = self.column_sum(&v) / n;
                    for mut row in v.axis_iter_mut(Axis(0)) {
                        row -= &mean;
                    }
                    0.0
                }
                _ => self.center_softmax(&mut v),
            };
        }
        // Clip the singular values of Θ = V/N to τ: Δ = (P − I)V with P = U diag(min(1, Nτ/σ)) Uᵀ,
        // then step V ← V + sΔ with the largest s ≤ 1 that keeps the conjugate's domain.
        let (vals, u) = sym_eigen(self.gram(&v.view()).view())?;
        let tau_v = self.tau * n;
        let shrink = Array1::from_iter(vals.iter().map(|&l| {
            let sig = l.max(0.0).sqrt();
            if sig > tau_v {
                tau_v / sig - 1.0
            } else {
                0.0
            }
        }));
        let mut clip = 0.0;
        if shrink.iter().any(|&x| x < 0.0) {
            let pm = (&u * &shrink.view().insert_axis(Axis(0))).dot(&u.t());
            let delta = v.dot(&pm);
            clip = self.domain_step(&v, &delta);
            v.scaled_add(clip, &delta);
        }
        // ‖Θ‖₂ = ‖V‖₂ / N with V the logit-scale columns.
        let spec = sym_eigen(self.gram(&v.view()).view())?
            .0
            .last()
            .copied()
            .unwrap_or(0.0)
            .max(0.0)
            .sqrt()
            / n;
        let alpha = if spec > 0.0 {
            (self.tau * (1.0 - 1e-13) / spec).min(1.0)
        } else {
            1.0
        };
        v *= alpha;
        let mut conj = 0.0;
        for (c, row) in v.axis_iter(Axis(0)).enumerate() {
            conj += self.weights[c]
                * self.conjugate(row.as_slice().expect("row"), self.labels[c] as usize)?;
        }
        let mut value = -conj / n;
        if self.bias && self.lambda_b > 0.0 {
            let s = self.column_sum(&v) / n;
            value -= s.dot(&s) / (2.0 * self.lambda_b);
        }
        let bound = DualBound {
            value,
            alpha,
            beta,
            clip,
            spectral_norm: spec,
        };
        Ok((v / n, bound))
    }

    /// Largest $s\le1$ (times 0.99 when limited) with $v_c+s\delta_c+q_c\ge0$ for softmax
    /// losses (the softmax $p_c=v_c+q_c$ is strictly positive); 1 for MSE.
    fn domain_step(&self, v: &Array2<f64>, delta: &Array2<f64>) -> f64 {
        if matches!(self.loss, Loss::Mse) {
            return 1.0;
        }
        let mut q = vec![0.0; self.k];
        let mut s = 1.0f64;
        for (c, (vr, dr)) in v
            .axis_iter(Axis(0))
            .zip(delta.axis_iter(Axis(0)))
            .enumerate()
        {
            self.target(self.labels[c] as usize, &mut q);
            for j in 0..self.k {
                if dr[j] < 0.0 {
                    let p = (vr[j] + q[j]).max(0.0);
                    s = s.min(0.99 * p / -dr[j]);
                }
            }
        }
        s.max(0.0)
    }

    /// $\sum_c\omega_cv_c$.
    fn column_sum(&self, v: &Array2<f64>) -> Array1<f64> {
        let w = ndarray::ArrayView1::from(&self.weights[..]);
        v.t().dot(&w)
    }

    /// Target distribution $q$ of a softmax loss for label `y`.
    fn target(&self, y: usize, q: &mut [f64]) {
        let alpha = match self.loss {
            Loss::LabelSmoothing { alpha } => alpha,
            _ => 0.0,
        };
        let k = self.k as f64;
        q.iter_mut().for_each(|v| *v = alpha / k);
        q[y] += 1.0 - alpha;
    }

    /// For softmax losses with a free bias: replaces the columns $p_c=v_c+q_c$ by
    /// $(1-\beta)p_c+\beta r$ so that $\sum_c\omega_cp_c=\sum_c\omega_cq_c=:C$. With
    /// $\varepsilon=(\sum_c\omega_cp_c-C)/N$ (which sums to zero), $r=C/N-\tfrac{1-\beta}\beta\varepsilon$ is a
    /// distribution as soon as $\beta/(1-\beta)\ge\kappa=\max_j N\varepsilon_j/C_j$; take equality.
    /// Returns $\beta$.
    fn center_softmax(&self, v: &mut Array2<f64>) -> f64 {
        let n = self.n as f64;
        let mut q = vec![0.0; self.k];
        let mut c_sum = Array1::<f64>::zeros(self.k);
        for (c, &y) in self.labels.iter().enumerate() {
            self.target(y as usize, &mut q);
            for j in 0..self.k {
                c_sum[j] += self.weights[c] * q[j];
            }
        }
        let eps = self.column_sum(v) / n;
        let kappa = (0..self.k)
            .map(|j| {
                if c_sum[j] > 0.0 {
                    n * eps[j] / c_sum[j]
                } else {
                    0.0
                }
            })
            .fold(0.0f64, f64::max);
        if kappa == 0.0 {
            return 0.0;
        }
        let beta = kappa / (1.0 + kappa);
        let r: Vec<f64> = (0..self.k)
            .map(|j| (c_sum[j] / n - eps[j] / kappa).max(0.0))
            .collect();
        for (c, mut row) in v.axis_iter_mut(Axis(0)).enumerate() {
            self.target(self.labels[c] as usize, &mut q);
            for j in 0..self.k {
                let p = row[j] + q[j];
                row[j] = (1.0 - beta) * p + beta * r[j] - q[j];
            }
        }
        beta
    }

    /// $\ell^*(v,y)$ (see the [module docs](self)); errors if $v$ is outside the domain by more
    /// than rounding.
    fn conjugate(&self, v: &[f64], y: usize) -> Result<f64> {
        match self.loss {
            Loss::Mse => Ok(v[y] + 0.5 * v.iter().map(|a| a * a).sum::<f64>()),
            _ => {
                let mut q = vec![0.0; self.k];
                self.target(y, &mut q);
                let mut ent = 0.0;
                let mut total = 0.0;
                for j in 0..self.k {
                    let p = v[j] + q[j];
                    if p < -1e-12 {
                        return Err(Error::numerical(
                            "duality gap",
                            format!("dual point left the simplex (p = {p:e})"),
                        ));
                    }
                    let p = p.max(0.0);
                    total += p;
                    if p > 0.0 {
                        ent += p * p.ln();
                    }
                }
                if (total - 1.0).abs() > 1e-9 {
                    return Err(Error::numerical(
                        "duality gap",
                        format!("dual point left the simplex (sum p = {total})"),
                    ));
                }
                Ok(ent)
            }
        }
    }
}

/// A certified lower bound on the convex optimum and how its dual point was made feasible.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DualBound {
    /// $D(\Theta)\le P^\star$.
    pub value: f64,
    /// Scaling $\alpha\le1$ into the spectral-norm ball.
    pub alpha: f64,
    /// Mixing weight $\beta$ that enforced $\Theta\mathbf 1=0$ (free bias, softmax losses).
    pub beta: f64,
    /// Fraction $s$ (between 0 and 1) of the singular-value clipping step that was taken.
    pub clip: f64,
    /// $\lVert\nabla_ZF\rVert_2$ after centring, before scaling (equals $\tau$ at a nonzero optimum).
    pub spectral_norm: f64,
}

/// Settings of [`solve_convex`].
#[derive(Clone, Debug, Serialize)]
pub struct ConvexOptions {
    /// Stop when the duality gap is at most `rel_tol`$\cdot|P|$ ...
    pub rel_tol: f64,
    /// ... or at most `abs_tol`.
    pub abs_tol: f64,
    /// Maximum number of proximal-gradient iterations.
    pub max_iter: usize,
    /// Evaluate the duality gap every this many iterations.
    pub gap_every: usize,
    /// Optional wall-clock limit in seconds.
    pub time_limit: Option<f64>,
}

impl Default for ConvexOptions {
    fn default() -> Self {
        ConvexOptions {
            rel_tol: 1e-10,
            abs_tol: 1e-15,
            max_iter: 50_000,
            gap_every: 10,
            time_limit: None,
        }
    }
}

/// The convex solution with its certificate.
#[derive(Clone, Debug, Serialize)]
pub struct ConvexSolution {
    /// $Z^\top$ in the problem's representation ($m\times K$, row $c$ is $z_c^\top$).
    #[serde(skip)]
    pub z_t: Array2<f64>,
    /// $b$ (zeros without a bias).
    pub b: Vec<f64>,
    /// $P(Z,b)$ at the returned point (an upper bound on $P^\star$).
    pub primal: f64,
    /// The best certified lower bound $D\le P^\star$ found.
    pub lower_bound: f64,
    /// `primal - lower_bound` $\ge P(Z,b)-P^\star$.
    pub gap: f64,
    /// Whether the gap met the tolerance.
    pub converged: bool,
    /// Iterations.
    pub iterations: usize,
    /// Momentum restarts.
    pub restarts: usize,
    /// Final Lipschitz estimate $L$.
    pub lipschitz: f64,
    /// Singular values of the full $Z$, descending.
    pub singular_values: Vec<f64>,
    /// Seconds.
    pub seconds: f64,
    /// The representation used.
    pub representation: Representation,
}

/// One iterate.
#[derive(Clone)]
struct Point {
    z: Array2<f64>,
    b: Vec<f64>,
}

/// Accelerated proximal gradient (FISTA with backtracking and adaptive restart) from $Z=0$,
/// $b=0$ (or `start`), until the certified duality gap meets the tolerance.
pub fn solve_convex(
    cp: &ConvexProblem,
    opts: &ConvexOptions,
    start: Option<(Array2<f64>, Vec<f64>)>,
) -> Result<ConvexSolution> {
    for (name, v) in [("rel-tol", opts.rel_tol), ("abs-tol", opts.abs_tol)] {
        if !(v >= 0.0) {
            return Err(Error::param(name, format!("must be >= 0, got {v}")));
        }
    }
    let t0 = Instant::now();
    let (m, k) = (cp.n_columns(), cp.k);
    let n = cp.n as f64;
    let mut x = match start {
        Some((z, b)) => {
            cp.check(&z.view(), &b)?;
            Point { z, b }
        }
        None => Point {
            z: Array2::zeros((m, k)),
            b: vec![0.0; k],
        },
    };
    let c_loss: f64 = match cp.loss {
        Loss::Mse => 1.0,
        _ => 0.5,
    };
    let mut lip = c_loss;
    let mut px = cp.objective(x.z.view(), &x.b)?;
    let mut y = x.clone();
    let mut t = 1.0f64;
    let mut grad = Array2::<f64>::zeros((m, k));
    let mut best_dual = f64::NEG_INFINITY;
    let mut restarts = 0;
    let mut iterations = 0;
    let mut converged = false;
    let limit = crate::solver::time_limit("time-limit", opts.time_limit)?;
    let every = opts.gap_every.max(1);
    let done = |p: f64, d: f64| p - d <= (opts.rel_tol * p.abs()).max(opts.abs_tol);
    while iterations < opts.max_iter {
        if iterations % every == 0 {
            best_dual = best_dual.max(cp.dual_bound(x.z.view(), &x.b)?.value);
            px = cp.objective(x.z.view(), &x.b)?;
            if done(px, best_dual) {
                converged = true;
                break;
            }
            if limit.is_some_and(|l| t0.elapsed() >= l) {
                break;
            }
        }
        iterations += 1;
        let (fy, gb) = cp.smooth(&y.z.view(), &y.b, Some(&mut grad));
        lip = (lip * 0.9).max(1e-300);
        let (next, pnext) = loop {
            // Z⁺ = SVT(Y − ∇ℓ/L, τN/L), b⁺ = b_Y − ∇_bF/L.
            let v = &y.z - &(&grad / lip);
            let (z, nuc) = cp.svt(&v, cp.tau * n / lip)?;
            let b: Vec<f64> = if cp.bias {
                y.b.iter().zip(&gb).map(|(a, g)| a - g / lip).collect()
            } else {
                vec![0.0; k]
            };
            let (f, _) = cp.smooth(&z.view(), &b, None);
            let dz = &z - &y.z;
            let mut lin = 0.0;
            let mut sq = 0.0;
            for (c, (dr, gr)) in dz
                .axis_iter(Axis(0))
                .zip(grad.axis_iter(Axis(0)))
                .enumerate()
            {
                lin += cp.weights[c] * dr.dot(&gr) / n;
                sq += cp.weights[c] * dr.dot(&dr) / n;
            }
            for j in 0..k {
                let db = b[j] - y.b[j];
                lin += gb[j] * db;
                sq += db * db;
            }
            let model = fy + lin + 0.5 * lip * sq;
            if f <= model + 1e-13 * fy.abs().max(1e-300) || lip > 1e300 {
                break (Point { z, b }, f + cp.tau * nuc);
            }
            lip *= 2.0;
        };
        if !pnext.is_finite() {
            return Err(Error::Diverged {
                solver: "FISTA (convex UFM)".into(),
                iter: iterations,
                value: pnext,
                hint: "the convex iterate blew up; report this instance".into(),
            });
        }
        if pnext > px && t > 1.0 {
            // Function-value restart: drop the momentum and step again from x.
            restarts += 1;
            t = 1.0;
            y = x.clone();
            continue;
        }
        let t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
        let mom = (t - 1.0) / t_next;
        y = Point {
            z: &next.z + &((&next.z - &x.z) * mom),
            b: next
                .b
                .iter()
                .zip(&x.b)
                .map(|(a, o)| a + mom * (a - o))
                .collect(),
        };
        x = next;
        px = pnext;
        t = t_next;
    }
    if !converged {
        best_dual = best_dual.max(cp.dual_bound(x.z.view(), &x.b)?.value);
        px = cp.objective(x.z.view(), &x.b)?;
        converged = done(px, best_dual);
    }
    let singular_values = cp.singular_values(x.z.view())?;
    Ok(ConvexSolution {
        b: x.b,
        z_t: x.z,
        primal: px,
        lower_bound: best_dual,
        gap: px - best_dual,
        converged,
        iterations,
        restarts,
        lipschitz: lip,
        singular_values,
        seconds: t0.elapsed().as_secs_f64(),
        representation: cp.repr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ufm::UfmConfig;
    use rand::{RngExt, SeedableRng};

    fn random_z(m: usize, k: usize, seed: u64, scale: f64) -> (Array2<f64>, Vec<f64>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let z = Array2::from_shape_fn((m, k), |_| scale * rng.random_range(-1.0..1.0));
        let b = (0..k).map(|_| rng.random_range(-1.0..1.0)).collect();
        (z, b)
    }

    #[test]
    fn gram_svt_matches_thresholding_a_direct_svd_of_the_full_matrix() {
        let p = UfmConfig::with_class_sizes(vec![3, 1, 4, 2], 4)
            .build()
            .unwrap();
        let cp = ConvexProblem::new(&p, Representation::ClassCollapsed).unwrap();
        let (z, _) = random_z(4, 4, 1, 2.0);
        // Slow reference: expand to the K×N matrix, SVD, threshold, rebuild.
        let full =
            Array2::from_shape_fn((4, p.n_samples()), |(j, i)| z[[p.labels()[i] as usize, j]]);
        let (u, sv, v) = crate::linalg::thin_svd(full.view()).unwrap();
        let theta = 0.8 * sv[1];
        let mut expect = Array2::<f64>::zeros(full.dim());
        for j in 0..sv.len() {
            let s = (sv[j] - theta).max(0.0);
            for a in 0..4 {
                for c in 0..p.n_samples() {
                    expect[[a, c]] += s * u[[a, j]] * v[[c, j]];
                }
            }
        }
        let (got, nuc) = cp.svt(&z, theta).unwrap();
        for i in 0..p.n_samples() {
            for j in 0..4 {
                let g = got[[p.labels()[i] as usize, j]];
                assert!(
                    (g - expect[[j, i]]).abs() < 1e-12,
                    "{g} vs {}",
                    expect[[j, i]]
                );
            }
        }
        let nuc_ref: f64 = sv.iter().map(|s| (s - theta).max(0.0)).sum();
        assert!((nuc - nuc_ref).abs() < 1e-12);
        assert!((cp.singular_values(z.view()).unwrap()[0] - sv[0]).abs() < 1e-12);
    }

    #[test]
    fn conjugate_satisfies_fenchel_young_equality_at_gradients() {
        // ℓ*(∇ℓ(u)) = ⟨∇ℓ(u), u⟩ − ℓ(u) for a convex differentiable ℓ.
        for loss in [
            Loss::CrossEntropy,
            Loss::LabelSmoothing { alpha: 0.3 },
            Loss::Mse,
        ] {
            let p = UfmConfig::balanced(4, 2, 4).loss(loss).build().unwrap();
            let cp = ConvexProblem::new(&p, Representation::ClassCollapsed).unwrap();
            for y in 0..4 {
                let u = [0.4, -1.3, 2.2, 0.1];
                let mut g = u.to_vec();
                let l = loss.value_grad_inplace(&mut g, y);
                let fy: f64 = g.iter().zip(&u).map(|(a, b)| a * b).sum::<f64>() - l;
                let c = cp.conjugate(&g, y).unwrap();
                assert!((c - fy).abs() < 1e-13, "{loss} y={y}: {c} vs {fy}");
            }
        }
    }

    #[test]
    fn dual_point_is_feasible_at_arbitrary_iterates() {
        for (loss, lb, bias) in [
            (Loss::CrossEntropy, 0.0, true),
            (Loss::CrossEntropy, 1e-2, true),
            (Loss::CrossEntropy, 0.0, false),
            (Loss::LabelSmoothing { alpha: 0.2 }, 0.0, true),
            (Loss::Mse, 0.0, true),
            (Loss::Mse, 1e-2, false),
        ] {
            let p = UfmConfig::with_class_sizes(vec![7, 2, 5], 3)
                .lambdas(2e-3, 5e-3, lb)
                .loss(loss)
                .bias(bias)
                .build()
                .unwrap();
            for repr in [Representation::ClassCollapsed, Representation::PerSample] {
                let cp = ConvexProblem::new(&p, repr).unwrap();
                for (seed, scale) in [(1, 0.1), (2, 3.0), (3, 30.0)] {
                    let (z, b) = random_z(cp.n_columns(), 3, seed, scale);
                    let (theta, db) = cp.dual_point(z.view(), &b).unwrap();
                    // Spectral-norm ball.
                    let spec = crate::linalg::singular_values(cp.weighted(&theta.view()).view())
                        .unwrap()[0];
                    assert!(
                        spec <= cp.tau() * (1.0 + 1e-12),
                        "{loss}: {spec} > {}",
                        cp.tau()
                    );
                    // Θ1 = 0 when the bias is free.
                    if bias && lb == 0.0 {
                        let s = cp.column_sum(&theta);
                        assert!(s.iter().all(|v| v.abs() < 1e-14), "{loss}: Θ1 = {s}");
                    }
                    // The conjugate's domain (checked inside) and the value it reports.
                    let n = p.n_samples() as f64;
                    let mut conj = 0.0;
                    for (c, row) in theta.axis_iter(Axis(0)).enumerate() {
                        let v: Vec<f64> = row.iter().map(|t| t * n).collect();
                        conj += cp.weights()[c]
                            * cp.conjugate(&v, cp.column_labels()[c] as usize).unwrap();
                    }
                    let mut d = -conj / n;
                    if bias && lb > 0.0 {
                        let s = cp.column_sum(&theta);
                        d -= s.dot(&s) / (2.0 * lb);
                    }
                    assert!(
                        (d - db.value).abs() < 1e-12 * d.abs().max(1.0),
                        "{loss}: {d} vs {}",
                        db.value
                    );
                }
            }
        }
    }
}
