//! First-order optimizers and learning-rate schedules as in PyTorch, with **coupled** weight
//! decay ($g\leftarrow\nabla\ell+\lambda\theta$, not AdamW), applied to every trainable tensor.
//!
//! * SGD with momentum $\mu$ (no dampening, no Nesterov): $v\leftarrow\mu v+g$ ($v=g$ on the
//!   first step), $\theta\leftarrow\theta-\eta v$.
//! * Adam: $m\leftarrow\beta_1m+(1-\beta_1)g$, $v\leftarrow\beta_2v+(1-\beta_2)g^2$,
//!   $\theta\leftarrow\theta-\frac{\eta}{1-\beta_1^t}\,\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t}+\epsilon}$.
//! * `StepLR(step, γ)`: $\eta_e=\eta_0\gamma^{\lfloor e/\text{step}\rfloor}$; `MultiStepLR(milestones, γ)`:
//!   $\eta_e=\eta_0\gamma^{\#\{m\le e\}}$ ($e$ = number of finished epochs).

use crate::error::{Error, Result};
use crate::nn::layers::{Module, TensorMut};
use crate::real::Real;
use ndarray::{ArrayD, Zip};
use serde::{Deserialize, Serialize};

/// Which optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// SGD, momentum 0.9.
    Sgd,
    /// Adam, betas (0.9, 0.999), eps 1e-8.
    Adam,
    /// L-BFGS (strong Wolfe), run per batch by the training loop (not by this type).
    Lbfgs,
}

impl std::str::FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adam" => Ok(OptimizerKind::Adam),
            "lbfgs" | "l-bfgs" => Ok(OptimizerKind::Lbfgs),
            _ => Err(Error::param(
                "optimizer",
                format!("unknown optimizer `{s}`; use SGD, Adam or LBFGS"),
            )),
        }
    }
}

/// SGD or Adam with their per-parameter state.
#[derive(Clone, Debug)]
pub struct Optimizer<T> {
    /// Which update.
    pub kind: OptimizerKind,
    /// Coupled L2 weight decay $\lambda$.
    pub weight_decay: f64,
    /// SGD momentum $\mu$ (0.9).
    pub momentum: f64,
    /// Adam $(\beta_1,\beta_2)$.
    pub betas: (f64, f64),
    /// Adam $\epsilon$.
    pub eps: f64,
    /// Number of steps taken.
    pub steps: u64,
    buf1: Vec<ArrayD<T>>,
    buf2: Vec<ArrayD<T>>,
}

impl<T: Real> Optimizer<T> {
    /// A fresh optimizer (state is created on the first step).
    pub fn new(kind: OptimizerKind, weight_decay: f64) -> Result<Self> {
        if kind == OptimizerKind::Lbfgs {
            return Err(Error::Unsupported(
                "L-BFGS is not a first-order `Optimizer`; the training loop runs crate::solver::Lbfgs per batch".into(),
            ));
        }
        if !(weight_decay >= 0.0) {
            return Err(Error::param(
                "weight-decay",
                format!("must be >= 0, got {weight_decay}"),
            ));
        }
        Ok(Optimizer {
            kind,
            weight_decay,
            momentum: 0.9,
            betas: (0.9, 0.999),
            eps: 1e-8,
            steps: 0,
            buf1: vec![],
            buf2: vec![],
        })
    }

    /// One update of every trainable parameter of `net` with learning rate `lr`.
    pub fn step(&mut self, net: &mut dyn Module<T>, lr: f64) {
        self.steps += 1;
        let t = self.steps;
        let (kind, wd, mu, (b1, b2), eps) = (
            self.kind,
            T::of(self.weight_decay),
            T::of(self.momentum),
            self.betas,
            self.eps,
        );
        let (buf1, buf2) = (&mut self.buf1, &mut self.buf2);
        let mut i = 0;
        net.visit("", &mut |_, tm| {
            let TensorMut::Param(p) = tm else { return };
            if !p.trainable {
                return;
            }
            if buf1.len() <= i {
                buf1.push(ArrayD::zeros(p.value.raw_dim()));
                buf2.push(ArrayD::zeros(p.value.raw_dim()));
            }
            let (m, v) = (&mut buf1[i], &mut buf2[i]);
            match kind {
                OptimizerKind::Sgd => {
                    let lr = T::of(lr);
                    let first = t == 1;
                    Zip::from(&mut p.value)
                        .and(&p.grad)
                        .and(m)
                        .par_for_each(|w, &g, mb| {
                            let d = g + wd * *w;
                            *mb = if first { d } else { mu * *mb + d };
                            *w -= lr * *mb;
                        });
                }
                OptimizerKind::Adam => {
                    let bc1 = 1.0 - b1.powi(t as i32);
                    let bc2 = (1.0 - b2.powi(t as i32)).sqrt();
                    let (b1t, b2t) = (T::of(b1), T::of(b2));
                    let (step, bc2t, epst) = (T::of(lr / bc1), T::of(bc2), T::of(eps));
                    Zip::from(&mut p.value)
                        .and(&p.grad)
                        .and(m)
                        .and(v)
                        .par_for_each(|w, &g, mb, vb| {
                            let d = g + wd * *w;
                            *mb = b1t * *mb + (T::one() - b1t) * d;
                            *vb = b2t * *vb + (T::one() - b2t) * d * d;
                            *w -= step * *mb / (vb.sqrt() / bc2t + epst);
                        });
                }
                OptimizerKind::Lbfgs => unreachable!("rejected in new()"),
            }
            i += 1;
        });
    }

    /// State tensors for checkpoints (`momentum_buffer` / `exp_avg`, `exp_avg_sq`).
    pub fn state(&self) -> Vec<(String, ArrayD<T>)> {
        let mut out = Vec::new();
        for (i, (a, b)) in self.buf1.iter().zip(&self.buf2).enumerate() {
            match self.kind {
                OptimizerKind::Sgd => out.push((format!("optim.{i}.momentum_buffer"), a.clone())),
                _ => {
                    out.push((format!("optim.{i}.exp_avg"), a.clone()));
                    out.push((format!("optim.{i}.exp_avg_sq"), b.clone()));
                }
            }
        }
        out
    }

    /// Restores [`Optimizer::state`] (`steps` is set by the caller).
    pub fn load_state(&mut self, mut get: impl FnMut(&str) -> Option<ArrayD<T>>) {
        self.buf1.clear();
        self.buf2.clear();
        for i in 0.. {
            let (a, b) = match self.kind {
                OptimizerKind::Sgd => match get(&format!("optim.{i}.momentum_buffer")) {
                    Some(a) => {
                        let z = ArrayD::zeros(a.raw_dim());
                        (a, z)
                    }
                    None => break,
                },
                _ => match (
                    get(&format!("optim.{i}.exp_avg")),
                    get(&format!("optim.{i}.exp_avg_sq")),
                ) {
                    (Some(a), Some(b)) => (a, b),
                    _ => break,
                },
            };
            self.buf1.push(a);
            self.buf2.push(b);
        }
    }
}

/// A learning-rate schedule, stepped once per epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// `StepLR(step_size, gamma)`.
    Step {
        /// Epochs between decays (`--patience`).
        step: usize,
        /// Factor.
        gamma: f64,
    },
    /// `MultiStepLR(milestones, gamma)`.
    MultiStep {
        /// Epochs at which the rate is multiplied by `gamma`.
        milestones: Vec<usize>,
        /// Factor.
        gamma: f64,
    },
    /// Constant rate.
    Constant,
}

impl Schedule {
    /// From the original's `--decay_type` (`step`, or `step_a_b_c` / `multistep_a_b_c` for
    /// milestones), `--patience` and `--gamma`.
    pub fn parse(decay_type: &str, patience: usize, gamma: f64) -> Result<Self> {
        let dt = decay_type.to_ascii_lowercase();
        if dt == "step" {
            if patience == 0 {
                return Err(Error::param("patience", "must be positive"));
            }
            return Ok(Schedule::Step {
                step: patience,
                gamma,
            });
        }
        if dt == "none" || dt == "constant" {
            return Ok(Schedule::Constant);
        }
        let rest = dt
            .strip_prefix("multistep_")
            .or_else(|| dt.strip_prefix("step_"));
        if let Some(rest) = rest {
            let milestones: std::result::Result<Vec<usize>, _> =
                rest.split('_').map(str::parse).collect();
            if let Ok(mut m) = milestones {
                m.sort_unstable();
                return Ok(Schedule::MultiStep {
                    milestones: m,
                    gamma,
                });
            }
        }
        Err(Error::param(
            "decay-type",
            format!("`{decay_type}`: use step, step_A_B_C (milestones) or none"),
        ))
    }

    /// The rate after `epochs_done` scheduler steps.
    pub fn lr(&self, base: f64, epochs_done: usize) -> f64 {
        match self {
            Schedule::Step { step, gamma } => base * gamma.powi((epochs_done / step) as i32),
            Schedule::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| m <= epochs_done).count() as i32)
            }
            Schedule::Constant => base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_pytorch() {
        let s = Schedule::parse("step", 40, 0.1).unwrap();
        assert_eq!(s.lr(1.0, 39), 1.0);
        assert!((s.lr(1.0, 40) - 0.1).abs() < 1e-15);
        assert!((s.lr(0.05, 80) - 0.0005).abs() < 1e-15);
        let m = Schedule::parse("step_3_5", 40, 0.5).unwrap();
        assert_eq!(m.lr(1.0, 2), 1.0);
        assert_eq!(m.lr(1.0, 3), 0.5);
        assert_eq!(m.lr(1.0, 5), 0.25);
        assert!(Schedule::parse("cosine", 1, 0.1).is_err());
    }
}
