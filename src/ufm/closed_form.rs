//! Closed-form global minimizers of the balanced UFM.
//!
//! Let $t=\sqrt{n\lambda_W\lambda_H}$ and $c=\sqrt{\lambda_W/(n\lambda_H)}$.
//!
//! **Cross-entropy** (Zhu et al. 2021, Thm 3.1; $d\ge K-1$). Every global minimizer has
//! $W^\top$ a simplex ETF scaled to $\lVert W\rVert_F^2=\rho^\star$, $h_{k,i}=c\,w_k$ and $b=0$
//! (any constant vector $b\propto\mathbf 1$ when $\lambda_b=0$). Substituting this structure
//! leaves the convex function $f(\rho)=\log\big(1+(K-1)e^{-c\rho/(K-1)}\big)+\lambda_W\rho$, whose
//! minimizer is
//! $$\rho^\star=(K-1)\sqrt{\tfrac{n\lambda_H}{\lambda_W}}\,\log\!\Big(\tfrac1t-(K-1)\Big)\ \text{ if } Kt<1,\qquad \rho^\star=0\ \text{ otherwise},$$
//! so the minimizer is $(0,0,0)$ with $f^\star=\log K$ exactly when $K\sqrt{n\lambda_W\lambda_H}\ge1$.
//!
//! **MSE**, in the normalisation $\frac1{2N}\lVert WH+b\mathbf 1^\top-Y\rVert_F^2$ (Zhou et al.
//! 2022, via the nuclear-norm reformulation and singular-value thresholding), with
//! $s=(1-Kt)_+$:
//! * unregularised bias ($\lambda_b=0$, $d\ge K-1$): $WW^\top=\sqrt{n\lambda_H/\lambda_W}\,s\,(I-\tfrac1K\mathbf 1\mathbf 1^\top)$
//!   (an ETF), $h_{k,i}=c\,w_k$, $b=\tfrac1K\mathbf 1$, $f^\star=(K-1)\,t\,(1-\tfrac{Kt}2)$ if $Kt<1$, else $\tfrac{K-1}{2K}$;
//! * no bias ($d\ge K$): $WW^\top=\sqrt{n\lambda_H/\lambda_W}\,s\,I_K$ (an *orthogonal frame*),
//!   $h_{k,i}=c\,w_k$, $f^\star=Kt\,(1-\tfrac{Kt}2)$ if $Kt<1$, else $\tfrac12$.
//!
//! These values were checked against solvers in `tests/closed_form.rs`. No closed form is
//! returned for imbalanced classes, label smoothing, focal loss, MSE with $\lambda_b>0$, or
//! $d$ below the frame's dimension; `ufm certify` covers those numerically.

use crate::error::Result;
use crate::ufm::etf::{orthogonal_frame, simplex_etf, EtfEmbedding};
use crate::ufm::loss::Loss;
use crate::ufm::problem::UfmProblem;
use ndarray::{Array1, Array2};
use serde::Serialize;

/// The geometry of the classifier at the optimum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// Rows form a simplex ETF.
    SimplexEtf,
    /// Rows are orthogonal with equal norms.
    Orthogonal,
    /// $W=0$, $H=0$.
    Zero,
}

/// A closed-form global minimum of a balanced UFM.
#[derive(Clone, Debug, Serialize)]
pub struct GlobalMinimum {
    /// $f^\star$.
    pub objective: f64,
    /// $\rho^\star=\lVert W^\star\rVert_F^2$.
    pub w_norm_sq: f64,
    /// $\lVert w_k^\star\rVert$ (equal for all $k$).
    pub row_norm: f64,
    /// $c$ with $h_{k,i}=c\,w_k$.
    pub feature_scale: f64,
    /// $b^\star=\beta\mathbf 1$; this is $\beta$.
    pub bias: f64,
    /// When true, any $b=\beta\mathbf 1$ is optimal (cross-entropy with $\lambda_b=0$).
    pub bias_free_along_ones: bool,
    /// Classifier geometry.
    pub frame: Frame,
    /// $K\sqrt{n\lambda_W\lambda_H}$; the minimizer is zero when it is $\ge1$.
    pub zero_threshold: f64,
    /// Where the formula comes from.
    pub source: &'static str,
}

/// The closed-form global minimum of `p`, or `None` where theory gives none (see module docs).
pub fn global_minimum(p: &UfmProblem) -> Option<GlobalMinimum> {
    let n = p.balanced_size()? as f64;
    let k = p.n_classes() as f64;
    let d = p.feature_dim();
    let (lw, lh) = (p.lambda_w(), p.lambda_h());
    if !(lw > 0.0 && lh > 0.0) {
        return None;
    }
    let t = (n * lw * lh).sqrt();
    let c = (lw / (n * lh)).sqrt();
    let scale = (n * lh / lw).sqrt(); // 1/c
    let threshold = k * t;
    match p.loss() {
        Loss::CrossEntropy | Loss::Focal { gamma: 0.0 } => {
            if d + 1 < p.n_classes() {
                return None;
            }
            let (rho, f) = if threshold < 1.0 {
                let x = (1.0 / t - (k - 1.0)).ln();
                let rho = (k - 1.0) * scale * x;
                (rho, (1.0 + (k - 1.0) * (-x).exp()).ln() + lw * rho)
            } else {
                (0.0, k.ln())
            };
            Some(GlobalMinimum {
                objective: f,
                w_norm_sq: rho,
                row_norm: (rho / k).sqrt(),
                feature_scale: c,
                bias: 0.0,
                bias_free_along_ones: p.has_bias() && p.lambda_b() == 0.0,
                frame: if rho > 0.0 {
                    Frame::SimplexEtf
                } else {
                    Frame::Zero
                },
                zero_threshold: threshold,
                source: "Zhu et al. 2021, Thm 3.1; scale from the 1-D reduction f(rho)",
            })
        }
        Loss::Mse => {
            let s = (1.0 - threshold).max(0.0);
            if p.has_bias() {
                if p.lambda_b() != 0.0 || d + 1 < p.n_classes() {
                    return None;
                }
                let f = if threshold < 1.0 {
                    (k - 1.0) * t * (1.0 - threshold / 2.0)
                } else {
                    (k - 1.0) / (2.0 * k)
                };
                let row_sq = scale * s * (k - 1.0) / k;
                Some(GlobalMinimum {
                    objective: f,
                    w_norm_sq: row_sq * k,
                    row_norm: row_sq.sqrt(),
                    feature_scale: c,
                    bias: 1.0 / k,
                    bias_free_along_ones: false,
                    frame: if s > 0.0 { Frame::SimplexEtf } else { Frame::Zero },
                    zero_threshold: threshold,
                    source: "Zhou et al. 2022 (MSE UFM, unregularised bias), singular-value thresholding",
                })
            } else {
                if d < p.n_classes() {
                    return None;
                }
                let f = if threshold < 1.0 {
                    threshold * (1.0 - threshold / 2.0)
                } else {
                    0.5
                };
                let row_sq = scale * s;
                Some(GlobalMinimum {
                    objective: f,
                    w_norm_sq: row_sq * k,
                    row_norm: row_sq.sqrt(),
                    feature_scale: c,
                    bias: 0.0,
                    bias_free_along_ones: false,
                    frame: if s > 0.0 {
                        Frame::Orthogonal
                    } else {
                        Frame::Zero
                    },
                    zero_threshold: threshold,
                    source:
                        "MSE UFM without bias (Tirer & Bruna 2022), singular-value thresholding",
                })
            }
        }
        _ => None,
    }
}

impl GlobalMinimum {
    /// The classifier $W^\star$ ($K\times d$) with the given embedding of the frame.
    pub fn classifier(&self, p: &UfmProblem, embedding: EtfEmbedding) -> Result<Array2<f64>> {
        let (k, d) = (p.n_classes(), p.feature_dim());
        let unit = match self.frame {
            Frame::Orthogonal => orthogonal_frame(k, d, embedding)?,
            Frame::SimplexEtf => simplex_etf(k, d, embedding)?,
            Frame::Zero => return Ok(Array2::zeros((k, d))),
        };
        Ok(unit * self.row_norm)
    }

    /// A global minimizer as a flat parameter vector $(W^\star,H^{\star\top},b^\star)$.
    pub fn point(&self, p: &UfmProblem, embedding: EtfEmbedding) -> Result<Vec<f64>> {
        let w = self.classifier(p, embedding)?;
        let ht = Array2::from_shape_fn((p.n_samples(), p.feature_dim()), |(i, j)| {
            self.feature_scale * w[[p.labels()[i] as usize, j]]
        });
        let b = Array1::from_elem(p.n_classes(), self.bias);
        p.join(w.view(), ht.view(), Some(b.view()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ufm::UfmConfig;

    #[allow(clippy::too_many_arguments)]
    fn gm(
        k: usize,
        d: usize,
        n: usize,
        lw: f64,
        lh: f64,
        lb: f64,
        loss: Loss,
        bias: bool,
    ) -> GlobalMinimum {
        let p = UfmConfig::balanced(k, n, d)
            .lambdas(lw, lh, lb)
            .loss(loss)
            .bias(bias)
            .build()
            .unwrap();
        global_minimum(&p).unwrap()
    }

    #[test]
    fn reference_values_from_the_theory_notes() {
        // nc-reference §3.4, each verified there by L-BFGS to ~1e-9.
        let g = gm(4, 8, 10, 5e-3, 5e-3, 5e-3, Loss::CrossEntropy, true);
        assert!((g.w_norm_sq - 38.881109).abs() < 1e-5 && (g.objective - 0.24300160).abs() < 1e-8);
        let g = gm(10, 12, 20, 5e-4, 5e-4, 5e-4, Loss::CrossEntropy, true);
        assert!((g.w_norm_sq - 244.824212).abs() < 1e-5 && (g.row_norm - 4.947971).abs() < 1e-6);
        let g = gm(4, 8, 10, 0.1, 0.1, 0.1, Loss::CrossEntropy, true);
        assert_eq!(g.frame, Frame::Zero);
        assert!((g.objective - 4f64.ln()).abs() < 1e-15);
        let g = gm(4, 8, 10, 5e-3, 5e-3, 0.0, Loss::Mse, true);
        assert!(
            (g.row_norm.powi(2) - 2.221708).abs() < 1e-6 && (g.objective - 0.04593416).abs() < 1e-8
        );
        let g = gm(4, 8, 10, 5e-3, 5e-3, 0.0, Loss::Mse, false);
        assert!((g.row_norm.powi(2) - 2.962278).abs() < 1e-6);
    }

    #[test]
    fn closed_form_point_attains_the_closed_form_value_and_is_stationary() {
        for (loss, lb, bias, d) in [
            (Loss::CrossEntropy, 1e-3, true, 5),
            (Loss::CrossEntropy, 0.0, true, 4),
            (Loss::Mse, 0.0, true, 5),
            (Loss::Mse, 0.0, false, 6),
        ] {
            let p = UfmConfig::balanced(5, 3, d)
                .lambdas(2e-3, 1e-3, lb)
                .loss(loss)
                .bias(bias)
                .build()
                .unwrap();
            let g = global_minimum(&p).unwrap();
            let x = g.point(&p, EtfEmbedding::Random { seed: 1 }).unwrap();
            let mut grad = vec![0.0; x.len()];
            let f = p.value_grad(&x, &mut grad);
            assert!(
                (f - g.objective).abs() < 1e-12,
                "{loss}: {f} vs {}",
                g.objective
            );
            assert!(
                crate::real::norm(&grad) < 1e-10,
                "{loss}: grad {}",
                crate::real::norm(&grad)
            );
        }
    }

    #[test]
    fn no_closed_form_where_theory_has_none() {
        let none = |cfg: UfmConfig| global_minimum(&cfg.build().unwrap()).is_none();
        assert!(none(UfmConfig::with_class_sizes(vec![3, 4], 3)));
        assert!(none(UfmConfig::balanced(5, 3, 3)));
        assert!(none(UfmConfig::balanced(5, 3, 6).loss(Loss::Mse)));
        assert!(none(
            UfmConfig::balanced(5, 3, 6).loss(Loss::LabelSmoothing { alpha: 0.1 })
        ));
        assert!(none(
            UfmConfig::balanced(5, 3, 4)
                .loss(Loss::Mse)
                .lambdas(1e-3, 1e-3, 0.0)
                .bias(false)
        ));
    }
}
