//! Full-batch gradient descent $x_{t+1}=x_t-\eta_t\nabla f(x_t)$.
//!
//! * Fixed step $\eta_t=\eta$: uses the objective's fused single-pass update when it has one
//!   (the UFM does), so one iteration streams $H$ once.
//! * Backtracking (Armijo): start from $2\eta_{t-1}$ and halve until
//!   $f(x-\eta\nabla f)\le f(x)-c\,\eta\lVert\nabla f\rVert^2$ with $c=10^{-4}$.

use super::{Objective, Progress, Solver};
use crate::error::{Error, Result};
use crate::real::{norm, Real};

/// Gradient descent, fixed step or Armijo backtracking.
#[derive(Clone, Debug)]
pub struct GradientDescent<T> {
    lr: f64,
    backtracking: bool,
    grad: Vec<T>,
    trial: Vec<T>,
    f: f64,
}

impl<T: Real> GradientDescent<T> {
    /// Fixed step size `lr`.
    pub fn fixed(lr: f64) -> Result<Self> {
        Self::new(lr, false)
    }
    /// Armijo backtracking starting from `lr`.
    pub fn backtracking(lr: f64) -> Result<Self> {
        Self::new(lr, true)
    }
    fn new(lr: f64, backtracking: bool) -> Result<Self> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::param(
                "lr",
                format!("the step size must be finite and > 0, got {lr}"),
            ));
        }
        Ok(GradientDescent {
            lr,
            backtracking,
            grad: Vec::new(),
            trial: Vec::new(),
            f: f64::NAN,
        })
    }
    /// Current step size.
    pub fn lr(&self) -> f64 {
        self.lr
    }
}

impl<T: Real, O: Objective<T> + ?Sized> Solver<T, O> for GradientDescent<T> {
    fn name(&self) -> String {
        if self.backtracking {
            "gd-backtracking".into()
        } else {
            format!("gd(lr={})", self.lr)
        }
    }

    fn init(&mut self, obj: &O, x: &mut [T]) -> Result<Progress> {
        self.grad = vec![T::zero(); x.len()];
        self.f = obj.value_grad(x, &mut self.grad).to_f64_();
        Ok(Progress {
            f: self.f,
            grad_norm: norm(&self.grad),
            stalled: None,
        })
    }

    fn step(&mut self, obj: &O, x: &mut [T]) -> Result<Progress> {
        if !self.backtracking {
            if let Some((f, gn)) = obj.fused_gd_step(x, T::of(self.lr)) {
                // f and |∇f| belong to the point before the step; the executor re-evaluates at the end.
                return Ok(Progress {
                    f: f.to_f64_(),
                    grad_norm: gn,
                    stalled: None,
                });
            }
            let lr = T::of(self.lr);
            for (xi, &gi) in x.iter_mut().zip(&self.grad) {
                *xi -= lr * gi;
            }
            self.f = obj.value_grad(x, &mut self.grad).to_f64_();
            return Ok(Progress {
                f: self.f,
                grad_norm: norm(&self.grad),
                stalled: None,
            });
        }
        let g2 = crate::real::dot(&self.grad, &self.grad);
        self.trial.resize(x.len(), T::zero());
        let mut lr = self.lr * 2.0;
        loop {
            let l = T::of(lr);
            for ((t, &xi), &gi) in self.trial.iter_mut().zip(x.iter()).zip(&self.grad) {
                *t = xi - l * gi;
            }
            let ft = obj.value(&self.trial).to_f64_();
            if ft.is_finite() && ft <= self.f - 1e-4 * lr * g2 {
                break;
            }
            lr *= 0.5;
            if lr < 1e-30 * self.lr.max(1.0) {
                return Ok(Progress {
                    f: self.f,
                    grad_norm: g2.sqrt(),
                    stalled: Some(
                        "backtracking found no decrease (round-off level reached)".into(),
                    ),
                });
            }
        }
        self.lr = lr;
        x.copy_from_slice(&self.trial);
        self.f = obj.value_grad(x, &mut self.grad).to_f64_();
        Ok(Progress {
            f: self.f,
            grad_norm: norm(&self.grad),
            stalled: None,
        })
    }

    fn divergence_hint(&self) -> String {
        if self.backtracking {
            "backtracking gradient descent diverged; check the problem's regularisation".into()
        } else {
            format!(
                "the step size is too large: lower --lr (now {}), e.g. to {}, or use --optimizer gd-backtracking or lbfgs",
                self.lr,
                self.lr / 10.0
            )
        }
    }
}
