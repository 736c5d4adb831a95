//! Deep ReLU UFM: the exact loss of the best deep-neural-collapse (DNC) configuration, the
//! low-rank SRG configuration ([`super::srg`]), and solver runs from random starts.
//!
//! Model (Súkeník, Mondelli & Lampert, NeurIPS 2023, arXiv 2305.13165; Súkeník, Lampert &
//! Mondelli, NeurIPS 2024, arXiv 2405.14468, which uses MSE and equal $\lambda$ everywhere):
//! $$\min\ \frac1{2N}\lVert W_L\sigma(W_{L-1}\sigma(\cdots\sigma(W_1H)))-Y\rVert_F^2+\sum_{l=1}^L\frac{\lambda_l}2\lVert W_l\rVert_F^2+\frac{\lambda_H}2\lVert H\rVert_F^2,\qquad\sigma=\max(\cdot,0).$$
//!
//! **DNC loss, exactly.** A DNC configuration (balanced classes; features collapsed to their
//! class means in every layer, class means forming an orthogonal frame, $W_LM_L\propto I$) has
//! non-negative features after every ReLU, so the ReLUs act as the identity and its loss is the
//! deep **linear** UFM's objective at a class-aligned $Z=tY$. Conversely the deep linear
//! minimum is attained at exactly such a point ([`super::linear`], step 2, with every width
//! $\ge K$), realised with non-negative features by
//! [`super::linear::class_aligned_point`]. Hence
//! $$\mathcal L_{\rm DNC}=K\min_{s\ge0}\Big\lbrack\frac{(s-\sqrt n)^2}{2N}+\frac{L+1}2\bar c\,s^{2/(L+1)}\Big\rbrack,\qquad\bar c=\Big(\lambda_H\prod_l\lambda_l\Big)^{1/(L+1)},$$
//! with the 1-D minimum certified as in [`super::linear`] (including the zero solution).
//! This is the best DNC loss; the global minimum of the ReLU model can be lower, and for
//! $L\ge3$ it is: [`super::srg`] builds a configuration with lower loss.

use super::linear::{certify, class_aligned_point};
use super::srg::{self, SrgOptimum, SrgOptions, SrgSpec};
use super::{
    best_run, solve_from_random_starts, Activation, DeepUfm, LayerNc, StartResult, StartSpec,
};
use crate::error::{Error, Result};
use crate::ufm::Loss;
use serde::Serialize;

/// The best DNC configuration.
#[derive(Clone, Debug, Serialize)]
pub struct DncOptimum {
    /// $\mathcal L_{\rm DNC}$.
    pub loss: f64,
    /// The common singular value $s^\star$ of $Z=W_L\cdots$ per class (0: the zero network).
    pub s: f64,
    /// $t=s^\star/\sqrt n$: each sample's logit for its own class.
    pub logit: f64,
    /// $\bar c$.
    pub c_bar: f64,
}

/// $\mathcal L_{\rm DNC}$ of `p` (balanced classes, MSE, every width $\ge K$, every $\lambda>0$).
pub fn dnc(p: &DeepUfm) -> Result<DncOptimum> {
    let sizes = p.class_sizes();
    if sizes.iter().any(|&n| n != sizes[0]) {
        return Err(Error::Unsupported(
            "DNC is defined here for equal class sizes".into(),
        ));
    }
    if p.loss() != Loss::Mse {
        return Err(Error::Unsupported(format!(
            "the DNC loss is derived for MSE, not {}",
            p.loss()
        )));
    }
    let k = p.n_classes();
    if p.dims()[..p.n_layers()].iter().any(|&d| d < k) {
        return Err(Error::param(
            "width",
            format!("a DNC configuration needs every width >= K = {k}"),
        ));
    }
    let mut cfg = p.config().clone();
    cfg.activation = Activation::Linear;
    let cert = certify(&cfg.build()?)?;
    let c = &cert.classes[0];
    Ok(DncOptimum {
        loss: cert.objective,
        s: c.s,
        logit: c.logit,
        c_bar: cert.c_bar,
    })
}

/// The DNC optimum as a parameter vector of `p` (non-negative features; its ReLU objective is
/// [`DncOptimum::loss`]).
pub fn dnc_point(p: &DeepUfm, d: &DncOptimum) -> Result<Vec<f64>> {
    class_aligned_point(p, &vec![d.s; p.n_classes()])
}

/// Solver runs against the DNC and SRG losses.
#[derive(Clone, Debug, Serialize)]
pub struct ReluComparison {
    /// The instance.
    pub problem: String,
    /// The best DNC configuration.
    pub dnc: DncOptimum,
    /// The best SRG configuration, when $K=\binom r2$ (else `None`).
    pub srg: Option<SrgOptimum>,
    /// `srg.loss / dnc.loss`.
    pub srg_over_dnc: Option<f64>,
    /// Every run, in seed order.
    pub runs: Vec<StartResult>,
    /// Index of the best run.
    pub best: usize,
    /// Runs ending strictly below $\mathcal L_{\rm DNC}$.
    pub runs_below_dnc: usize,
    /// NC metrics per layer at the best run's point.
    pub best_nc: Vec<LayerNc>,
}

/// Runs the solver and computes the DNC and (when $K$ is triangular) SRG losses for `p`
/// (ReLU, MSE, balanced).
pub fn compare(p: &DeepUfm, starts: &StartSpec, srg_opts: &SrgOptions) -> Result<ReluComparison> {
    if p.activation() != Activation::Relu {
        return Err(Error::Unsupported(
            "`compare` is for the deep ReLU UFM".into(),
        ));
    }
    let d = dnc(p)?;
    let srg = match srg::r_for(p.n_classes()) {
        Some(r) if p.n_layers() >= 2 => {
            let spec = SrgSpec {
                r,
                layers: p.n_layers(),
                n_per_class: p.class_sizes()[0],
                lambda_w: p.lambda_w().to_vec(),
                lambda_h: p.lambda_h(),
            };
            Some(srg::optimise(&spec, srg_opts)?)
        }
        _ => None,
    };
    let runs = solve_from_random_starts(p, starts)?;
    let best = best_run(&runs).expect("at least one run");
    let best_nc = p.layer_nc(&runs[best].x, 1e-3)?;
    let runs_below_dnc = runs.iter().filter(|r| r.objective < d.loss).count();
    Ok(ReluComparison {
        problem: p.describe(),
        srg_over_dnc: srg.as_ref().map(|s| s.loss / d.loss),
        dnc: d,
        srg,
        runs,
        best,
        runs_below_dnc,
        best_nc,
    })
}
