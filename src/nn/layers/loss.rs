//! Losses on logits $Z\in\mathbb R^{B\times K}$ with labels $y$, averaged over the batch:
//! cross-entropy $\ell=\frac1B\sum_i\big(\log\sum_je^{z_{ij}}-z_{iy_i}\big)$ with
//! $\partial_Z=\frac1B(\operatorname{softmax}(Z)-Y)$, and `nn.MSELoss()` against one-hot
//! targets $\ell=\frac1{BK}\sum_{i,j}(z_{ij}-Y_{ij})^2$ with $\partial_Z=\frac2{BK}(Z-Y)$.
//! The one-hot matrix always has $K$ columns (the original's `one_hot` without
//! `num_classes` breaks on batches that miss the largest label).

use crate::error::{Error, Result};
use crate::real::Real;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// Which loss to train with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LossKind {
    /// Softmax cross-entropy (`CrossEntropy`).
    CrossEntropy,
    /// Mean squared error against one-hot targets (`MSE`).
    Mse,
}

impl std::str::FromStr for LossKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "crossentropy" | "ce" | "cross-entropy" | "cross_entropy" => Ok(LossKind::CrossEntropy),
            "mse" => Ok(LossKind::Mse),
            _ => Err(Error::param(
                "loss",
                format!("unknown loss `{s}`; use CrossEntropy or MSE"),
            )),
        }
    }
}

impl LossKind {
    /// Loss value (f64) and $\partial\ell/\partial Z$.
    pub fn eval<T: Real>(self, logits: &Array2<T>, labels: &[u32]) -> Result<(f64, Array2<T>)> {
        match self {
            LossKind::CrossEntropy => cross_entropy(logits, labels),
            LossKind::Mse => mse_one_hot(logits, labels),
        }
    }
}

fn check<T>(logits: &Array2<T>, labels: &[u32]) -> Result<()> {
    let (b, k) = logits.dim();
    if labels.len() != b {
        return Err(Error::shape(
            "labels",
            format!("{b}"),
            format!("{}", labels.len()),
        ));
    }
    if let Some(y) = labels.iter().find(|&&y| y as usize >= k) {
        return Err(Error::Data(format!("label {y} outside 0..{k}")));
    }
    Ok(())
}

/// Mean softmax cross-entropy and its gradient.
pub fn cross_entropy<T: Real>(logits: &Array2<T>, labels: &[u32]) -> Result<(f64, Array2<T>)> {
    check(logits, labels)?;
    let b = logits.nrows();
    let mut g = Array2::<T>::zeros(logits.raw_dim());
    let mut loss = 0.0;
    for (i, (z, mut gi)) in logits.outer_iter().zip(g.outer_iter_mut()).enumerate() {
        let m = z.iter().fold(f64::NEG_INFINITY, |a, v| a.max(v.to_f64_()));
        let s: f64 = z.iter().map(|v| (v.to_f64_() - m).exp()).sum();
        let lse = m + s.ln();
        loss += lse - z[labels[i] as usize].to_f64_();
        for (j, gv) in gi.iter_mut().enumerate() {
            let p = (z[j].to_f64_() - lse).exp();
            let t = if j == labels[i] as usize { 1.0 } else { 0.0 };
            *gv = T::of((p - t) / b as f64);
        }
    }
    Ok((loss / b as f64, g))
}

/// `nn.MSELoss()(Z, one_hot(y, K))` and its gradient.
pub fn mse_one_hot<T: Real>(logits: &Array2<T>, labels: &[u32]) -> Result<(f64, Array2<T>)> {
    check(logits, labels)?;
    let (b, k) = logits.dim();
    let n = (b * k) as f64;
    let mut g = Array2::<T>::zeros((b, k));
    let mut loss = 0.0;
    for i in 0..b {
        for j in 0..k {
            let t = if j == labels[i] as usize { 1.0 } else { 0.0 };
            let r = logits[[i, j]].to_f64_() - t;
            loss += r * r;
            g[[i, j]] = T::of(2.0 * r / n);
        }
    }
    Ok((loss / n, g))
}

/// Top-1 and top-5 hit counts of `logits` against `labels` (ties broken by index).
pub fn topk_hits<T: Real>(logits: &Array2<T>, labels: &[u32]) -> (usize, usize) {
    let (mut t1, mut t5) = (0, 0);
    for (z, &y) in logits.outer_iter().zip(labels) {
        let zy = z[y as usize];
        // rank = number of classes that beat y (strictly larger, or equal with smaller index)
        let rank = z
            .iter()
            .enumerate()
            .filter(|&(j, &v)| v > zy || (v == zy && j < y as usize))
            .count();
        t1 += (rank < 1) as usize;
        t5 += (rank < 5) as usize;
    }
    (t1, t5)
}
