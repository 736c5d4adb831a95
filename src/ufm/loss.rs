//! Per-sample losses on a logit vector $z\in\mathbb R^K$ with label $y$: value, gradient with
//! respect to the logits, and the logit-Hessian-vector product.
//!
//! With $p=\operatorname{softmax}(z)$ and $e_y$ the $y$-th basis vector:
//!
//! | loss | $\ell(z,y)$ | $\nabla_z\ell$ | $\nabla_z^2\ell\,v$ |
//! |---|---|---|---|
//! | cross-entropy | $\log\sum_j e^{z_j}-z_y$ | $p-e_y$ | $p\odot v-p\,(p^\top v)$ |
//! | MSE | $\tfrac12\lVert z-e_y\rVert^2$ | $z-e_y$ | $v$ |
//! | label smoothing ($\alpha$) | $-q^\top\log p$, $q=(1-\alpha)e_y+\tfrac{\alpha}{K}\mathbf 1$ | $p-q$ | as cross-entropy |
//! | focal ($\gamma$) | $-(1-p_y)^\gamma\log p_y$ | $a(p_y)\,(e_y-p)$ | $a'(p_y)\,p_y\,\big((e_y-p)^\top v\big)(e_y-p)-a(p_y)\big(p\odot v-p\,(p^\top v)\big)$ |
//!
//! where, for the focal loss, $u=1-p_y$,
//! $a(p_y)=\gamma\,p_y\,u^{\gamma-1}\log p_y-u^\gamma$ and
//! $a'(p_y)=\gamma u^{\gamma-1}(\log p_y+2)-\gamma(\gamma-1)\,p_y\,u^{\gamma-2}\log p_y$.
//!
//! **Normalisation.** The UFM objective averages these over the $N$ samples, so MSE enters as
//! $\frac1{2N}\lVert WH+b\mathbf 1^\top-Y\rVert_F^2$, the theory's normalisation (Zhou et al.
//! 2022). PyTorch's `nn.MSELoss()` used by the original code is
//! $\frac1{NK}\lVert\cdot\rVert_F^2$, i.e. $2/K$ times ours.
//!
//! **Convexity in the logits.** Cross-entropy, label smoothing and MSE are convex in $z$; the
//! focal loss with $\gamma>0$ is not (its logit Hessian can be indefinite), so theorems that rely
//! on convexity of the loss (Zhu et al. 2021, Thm 3.2; the convex reformulation) do not cover it.
//!
//! Softmax is computed stably (max-shifted) and $1-p_y$ as $\sum_{j\ne y}p_j$ so that it stays
//! accurate when $p_y\to1$.

use crate::error::{Error, Result};
use crate::real::Real;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A classification loss on logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy (the paper's loss).
    #[default]
    CrossEntropy,
    /// Squared error against the one-hot target, $\tfrac12\lVert z-e_y\rVert^2$.
    Mse,
    /// Cross-entropy against the smoothed target $(1-\alpha)e_y+\alpha/K$.
    LabelSmoothing {
        /// Smoothing weight $\alpha\in[0,1)$.
        alpha: f64,
    },
    /// Focal loss $-(1-p_y)^\gamma\log p_y$ (Lin et al. 2017).
    Focal {
        /// Focusing parameter $\gamma\ge0$ ($\gamma=0$ is cross-entropy).
        gamma: f64,
    },
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::CrossEntropy => write!(f, "ce"),
            Loss::Mse => write!(f, "mse"),
            Loss::LabelSmoothing { alpha } => write!(f, "ls(alpha={alpha})"),
            Loss::Focal { gamma } => write!(f, "focal(gamma={gamma})"),
        }
    }
}

impl FromStr for Loss {
    type Err = Error;
    /// Parses `ce`, `mse`, `ls` (α = 0.1), `ls:0.2`, `focal` (γ = 2), `focal:1.5`.
    fn from_str(s: &str) -> Result<Self> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let num = |default: f64| -> Result<f64> {
            match arg {
                None => Ok(default),
                Some(a) => a.parse::<f64>().map_err(|_| {
                    Error::param("loss", format!("cannot parse `{a}` as a number in `{s}`"))
                }),
            }
        };
        let loss = match name.to_ascii_lowercase().as_str() {
            "ce" | "cross-entropy" | "crossentropy" => Loss::CrossEntropy,
            "mse" => Loss::Mse,
            "ls" | "label-smoothing" => Loss::LabelSmoothing { alpha: num(0.1)? },
            "focal" => Loss::Focal { gamma: num(2.0)? },
            other => {
                return Err(Error::param(
                    "loss",
                    format!(
                    "unknown loss `{other}`; expected one of ce, mse, ls[:alpha], focal[:gamma]"
                ),
                ))
            }
        };
        loss.validate()?;
        Ok(loss)
    }
}

impl Loss {
    /// Checks the loss parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Loss::LabelSmoothing { alpha } if !(0.0..1.0).contains(&alpha) => Err(Error::param(
                "loss",
                format!("label smoothing alpha must be in [0, 1), got {alpha}"),
            )),
            Loss::Focal { gamma } if !(gamma >= 0.0 && gamma.is_finite()) => Err(Error::param(
                "loss",
                format!("focal gamma must be finite and >= 0, got {gamma}"),
            )),
            _ => Ok(()),
        }
    }

    /// Short name used in file names and JSON (`ce`, `mse`, `ls`, `focal`).
    pub fn short_name(&self) -> &'static str {
        match self {
            Loss::CrossEntropy => "ce",
            Loss::Mse => "mse",
            Loss::LabelSmoothing { .. } => "ls",
            Loss::Focal { .. } => "focal",
        }
    }

    /// Whether the loss is convex in the logits (needed by the convex reformulation).
    pub fn is_convex(&self) -> bool {
        match *self {
            Loss::Focal { gamma } => gamma == 0.0,
            _ => true,
        }
    }

    /// Replaces `z` (length $K$) by $\nabla_z\ell(z,y)$ and returns $\ell(z,y)$.
    ///
    /// `y < z.len()` is the caller's contract (checked when the problem is built).
    #[inline]
    pub fn value_grad_inplace<T: Real>(&self, z: &mut [T], y: usize) -> T {
        match *self {
            Loss::Mse => {
                let mut l = T::zero();
                for (j, zj) in z.iter_mut().enumerate() {
                    let r = if j == y { *zj - T::one() } else { *zj };
                    l += r * r;
                    *zj = r;
                }
                l * T::of(0.5)
            }
            Loss::CrossEntropy => {
                let (lse, zy) = softmax_inplace(z, y);
                z[y] -= T::one();
                lse - zy
            }
            Loss::LabelSmoothing { alpha } => {
                let k = T::of(z.len() as f64);
                let a = T::of(alpha);
                let mean_z = z.iter().copied().sum::<T>() / k;
                let (lse, zy) = softmax_inplace(z, y);
                // q = (1-α) e_y + α/K 1;  ℓ = lse − qᵀz
                let off = a / k;
                for zj in z.iter_mut() {
                    *zj -= off;
                }
                z[y] -= T::one() - a;
                lse - (T::one() - a) * zy - a * mean_z
            }
            Loss::Focal { gamma } => {
                let (lse, zy) = softmax_inplace(z, y);
                let log_py = zy - lse;
                let u = one_minus_py(z, y);
                let g = T::of(gamma);
                let (a, _) = focal_a(g, u, log_py);
                let value = -u.powf(g) * log_py;
                // ∇ = a (e_y − p)
                for zj in z.iter_mut() {
                    *zj = -a * *zj;
                }
                z[y] += a;
                value
            }
        }
    }

    /// Writes $\nabla_z^2\ell(z,y)\,v$ into `out`; `p` is scratch of length $K$.
    #[inline]
    pub fn hvp<T: Real>(&self, z: &[T], y: usize, v: &[T], out: &mut [T], p: &mut [T]) {
        match *self {
            Loss::Mse => out.copy_from_slice(v),
            Loss::CrossEntropy | Loss::LabelSmoothing { .. } => {
                p.copy_from_slice(z);
                softmax_inplace(p, y);
                softmax_hvp(p, v, out);
            }
            Loss::Focal { gamma } => {
                p.copy_from_slice(z);
                let (lse, zy) = softmax_inplace(p, y);
                let log_py = zy - lse;
                let u = one_minus_py(p, y);
                let (a, da) = focal_a(T::of(gamma), u, log_py);
                let py = p[y];
                softmax_hvp(p, v, out);
                // c = (e_y − p)ᵀ v
                let c = v[y] - p.iter().zip(v).map(|(&pj, &vj)| pj * vj).sum::<T>();
                let s = da * py * c;
                for (j, o) in out.iter_mut().enumerate() {
                    let e = if j == y { T::one() } else { T::zero() };
                    *o = s * (e - p[j]) - a * *o;
                }
            }
        }
    }
}

/// In place $z\leftarrow\operatorname{softmax}(z)$; returns $(\log\sum_j e^{z_j},\ z_y)$.
#[inline]
fn softmax_inplace<T: Real>(z: &mut [T], y: usize) -> (T, T) {
    let zy = z[y];
    let m = z.iter().copied().fold(T::neg_infinity(), T::max);
    let mut s = T::zero();
    for zj in z.iter_mut() {
        *zj = (*zj - m).exp();
        s += *zj;
    }
    let inv = T::one() / s;
    for zj in z.iter_mut() {
        *zj *= inv;
    }
    (m + s.ln(), zy)
}

/// $1-p_y$ computed as $\sum_{j\ne y}p_j$ (accurate when $p_y\approx1$).
#[inline]
fn one_minus_py<T: Real>(p: &[T], y: usize) -> T {
    p.iter()
        .enumerate()
        .filter(|&(j, _)| j != y)
        .map(|(_, &pj)| pj)
        .sum()
}

/// `out = p ⊙ v − p (pᵀv)`: the softmax Jacobian $\operatorname{diag}(p)-pp^\top$ times $v$.
#[inline]
fn softmax_hvp<T: Real>(p: &[T], v: &[T], out: &mut [T]) {
    let pv: T = p.iter().zip(v).map(|(&a, &b)| a * b).sum();
    for ((o, &pj), &vj) in out.iter_mut().zip(p).zip(v) {
        *o = pj * (vj - pv);
    }
}

/// Focal-loss scalars $a(p_y)$ and $a'(p_y)$ (see the module docs), from $u=1-p_y$ and
/// $\log p_y$, stable as $u\to0$.
#[inline]
fn focal_a<T: Real>(g: T, u: T, log_py: T) -> (T, T) {
    let one = T::one();
    if g == T::zero() {
        return (-one, T::zero());
    }
    if u <= T::zero() {
        // p = e_y exactly: the gradient and the curvature terms vanish with (e_y − p).
        return (T::zero(), T::zero());
    }
    let py = one - u;
    // r = log(p_y)/u → −1 as u → 0, so u^{γ−1} log p_y = u^γ r stays finite.
    let r = if u > T::of(1e-6) {
        log_py / u
    } else {
        -one - u / T::of(2.0)
    };
    let ug = u.powf(g);
    let a = ug * (g * py * r - one);
    let u_gm1 = ug / u;
    let da = g * u_gm1 * (log_py + T::of(2.0) - (g - one) * py * r);
    (a, da)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn central_grad(loss: Loss, z: &[f64], y: usize) -> Vec<f64> {
        let h = 1e-6;
        (0..z.len())
            .map(|j| {
                let mut zp = z.to_vec();
                let mut zm = z.to_vec();
                zp[j] += h;
                zm[j] -= h;
                (loss.value_grad_inplace(&mut zp, y) - loss.value_grad_inplace(&mut zm, y))
                    / (2.0 * h)
            })
            .collect()
    }

    const LOSSES: [Loss; 6] = [
        Loss::CrossEntropy,
        Loss::Mse,
        Loss::LabelSmoothing { alpha: 0.2 },
        Loss::Focal { gamma: 0.0 },
        Loss::Focal { gamma: 1.0 },
        Loss::Focal { gamma: 2.5 },
    ];

    #[test]
    fn logit_grad_and_hvp_match_central_differences() {
        let z = [0.3f64, -1.2, 2.0, 0.7];
        let v = [0.5, -0.25, 1.0, -2.0];
        for loss in LOSSES {
            for y in 0..4 {
                let mut g = z.to_vec();
                loss.value_grad_inplace(&mut g, y);
                let fd = central_grad(loss, &z, y);
                for j in 0..4 {
                    assert!(
                        (g[j] - fd[j]).abs() < 1e-7,
                        "{loss} grad {j}: {} vs {}",
                        g[j],
                        fd[j]
                    );
                }
                // HVP against the central difference of the gradient.
                let h = 1e-5;
                let zp: Vec<f64> = z.iter().zip(&v).map(|(a, b)| a + h * b).collect();
                let zm: Vec<f64> = z.iter().zip(&v).map(|(a, b)| a - h * b).collect();
                let (mut gp, mut gm) = (zp.clone(), zm.clone());
                loss.value_grad_inplace(&mut gp, y);
                loss.value_grad_inplace(&mut gm, y);
                let mut hv = [0.0; 4];
                let mut p = [0.0; 4];
                loss.hvp(&z, y, &v, &mut hv, &mut p);
                for j in 0..4 {
                    let fd = (gp[j] - gm[j]) / (2.0 * h);
                    assert!(
                        (hv[j] - fd).abs() < 1e-6,
                        "{loss} hvp {j}: {} vs {fd}",
                        hv[j]
                    );
                }
            }
        }
    }

    #[test]
    fn focal_with_gamma_zero_is_cross_entropy() {
        let z = [0.1f64, 0.9, -0.4];
        let (mut a, mut b) = (z.to_vec(), z.to_vec());
        let la = Loss::CrossEntropy.value_grad_inplace(&mut a, 1);
        let lb = Loss::Focal { gamma: 0.0 }.value_grad_inplace(&mut b, 1);
        assert!((la - lb).abs() < 1e-15);
        for j in 0..3 {
            assert!((a[j] - b[j]).abs() < 1e-15);
        }
    }

    #[test]
    fn focal_is_stable_when_confident() {
        // p_y ≈ 1 − 1e-17: no NaN, gradient tiny.
        for gamma in [0.5, 1.0, 1.5, 2.0] {
            let mut z = [40.0f64, 0.0, 0.0];
            let l = Loss::Focal { gamma }.value_grad_inplace(&mut z, 0);
            assert!(l.is_finite() && z.iter().all(|v| v.is_finite()));
            let mut hv = [0.0f64; 3];
            let mut p = [0.0f64; 3];
            Loss::Focal { gamma }.hvp(&[40.0, 0.0, 0.0], 0, &[1.0, -1.0, 0.5], &mut hv, &mut p);
            assert!(hv.iter().all(|v| v.is_finite()), "gamma {gamma}: {hv:?}");
        }
    }

    #[test]
    fn parse_names_and_reject_unknown() {
        assert_eq!("ce".parse::<Loss>().unwrap(), Loss::CrossEntropy);
        assert_eq!(
            "ls:0.3".parse::<Loss>().unwrap(),
            Loss::LabelSmoothing { alpha: 0.3 }
        );
        assert_eq!("focal".parse::<Loss>().unwrap(), Loss::Focal { gamma: 2.0 });
        let e = "hinge".parse::<Loss>().unwrap_err().to_string();
        assert!(e.contains("unknown loss `hinge`"), "{e}");
        assert!("ls:1.5".parse::<Loss>().is_err());
        assert!("focal:-1".parse::<Loss>().is_err());
    }
}
