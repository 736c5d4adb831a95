//! Limited-memory BFGS (Nocedal 1980; Liu & Nocedal 1989).
//!
//! The direction is $d=-H_k\nabla f$ with $H_k$ the L-BFGS inverse-Hessian approximation from
//! the last $m$ pairs $s_i=x_{i+1}-x_i$, $y_i=\nabla f_{i+1}-\nabla f_i$, applied by the
//! two-loop recursion with initial scaling $H_k^0=\frac{s^\top y}{y^\top y}I$. The step length
//! satisfies the strong Wolfe conditions ($c_1=10^{-4}$, $c_2=0.9$). Pairs with
//! $s^\top y\le10^{-12}\lVert s\rVert\lVert y\rVert$ are skipped, which keeps $H_k$ positive
//! definite; a non-descent direction resets the memory.

use super::linesearch::{strong_wolfe, WolfeParams};
use super::{Objective, Progress, Solver};
use crate::error::{Error, Result};
use crate::real::{axpy, dot, norm, Real};
use std::collections::VecDeque;

/// L-BFGS with a strong-Wolfe line search.
#[derive(Clone, Debug)]
pub struct Lbfgs<T> {
    memory: usize,
    s: VecDeque<Vec<T>>,
    y: VecDeque<Vec<T>>,
    rho: VecDeque<f64>,
    g: Vec<T>,
    d: Vec<T>,
    xt: Vec<T>,
    gt: Vec<T>,
    f: f64,
    first: bool,
    /// Function/gradient evaluations so far.
    pub evals: usize,
}

impl<T: Real> Lbfgs<T> {
    /// L-BFGS keeping `memory` correction pairs (PyTorch's and the original code's default is 10).
    pub fn new(memory: usize) -> Result<Self> {
        if memory == 0 {
            return Err(Error::param(
                "history-size",
                "the L-BFGS memory must be at least 1",
            ));
        }
        Ok(Lbfgs {
            memory,
            s: VecDeque::new(),
            y: VecDeque::new(),
            rho: VecDeque::new(),
            g: Vec::new(),
            d: Vec::new(),
            xt: Vec::new(),
            gt: Vec::new(),
            f: f64::NAN,
            first: true,
            evals: 0,
        })
    }

    /// $d=-H_k g$ by the two-loop recursion.
    fn direction(&mut self) {
        let m = self.s.len();
        self.d.copy_from_slice(&self.g);
        let mut alpha = vec![0.0; m];
        for i in (0..m).rev() {
            alpha[i] = self.rho[i] * dot(&self.s[i], &self.d);
            axpy(T::of(-alpha[i]), &self.y[i], &mut self.d);
        }
        if m > 0 {
            let gamma = dot(&self.s[m - 1], &self.y[m - 1]) / dot(&self.y[m - 1], &self.y[m - 1]);
            let gm = T::of(gamma);
            self.d.iter_mut().for_each(|v| *v *= gm);
        }
        for i in 0..m {
            let beta = self.rho[i] * dot(&self.y[i], &self.d);
            axpy(T::of(alpha[i] - beta), &self.s[i], &mut self.d);
        }
        self.d.iter_mut().for_each(|v| *v = -*v);
    }
}

impl<T: Real, O: Objective<T> + ?Sized> Solver<T, O> for Lbfgs<T> {
    fn name(&self) -> String {
        format!("lbfgs(m={})", self.memory)
    }

    fn init(&mut self, obj: &O, x: &mut [T]) -> Result<Progress> {
        let n = x.len();
        self.g = vec![T::zero(); n];
        self.d = vec![T::zero(); n];
        self.xt = vec![T::zero(); n];
        self.gt = vec![T::zero(); n];
        self.s.clear();
        self.y.clear();
        self.rho.clear();
        self.first = true;
        self.f = obj.value_grad(x, &mut self.g).to_f64_();
        self.evals = 1;
        Ok(Progress {
            f: self.f,
            grad_norm: norm(&self.g),
            stalled: None,
        })
    }

    fn step(&mut self, obj: &O, x: &mut [T]) -> Result<Progress> {
        self.direction();
        let mut d0 = dot(&self.g, &self.d);
        if !(d0 < 0.0) {
            // Not a descent direction (can happen in f32 round-off): restart from steepest descent.
            self.s.clear();
            self.y.clear();
            self.rho.clear();
            self.direction();
            d0 = dot(&self.g, &self.d);
        }
        let gn = norm(&self.g);
        let alpha0 = if self.first { (1.0 / gn).min(1.0) } else { 1.0 };
        let res = strong_wolfe(
            obj,
            x,
            &self.d,
            self.f,
            d0,
            alpha0,
            &mut self.xt,
            &mut self.gt,
            &WolfeParams::default(),
        );
        let Some(res) = res else {
            if !self.s.is_empty() {
                // Drop the memory and let the next step try steepest descent.
                self.s.clear();
                self.y.clear();
                self.rho.clear();
                return Ok(Progress {
                    f: self.f,
                    grad_norm: gn,
                    stalled: None,
                });
            }
            return Ok(Progress {
                f: self.f,
                grad_norm: gn,
                stalled: Some(
                    "line search found no acceptable step (round-off level reached)".into(),
                ),
            });
        };
        self.evals += res.evals;
        self.first = false;
        // s = α d, y = g_new − g
        let mut s = if self.s.len() == self.memory {
            self.s.pop_front().expect("s")
        } else {
            vec![T::zero(); x.len()]
        };
        let mut y = if self.y.len() == self.memory {
            self.y.pop_front().expect("y")
        } else {
            vec![T::zero(); x.len()]
        };
        if self.rho.len() == self.memory {
            self.rho.pop_front();
        }
        for i in 0..x.len() {
            s[i] = self.xt[i] - x[i];
            y[i] = self.gt[i] - self.g[i];
        }
        let sy = dot(&s, &y);
        if sy > 1e-12 * norm(&s) * norm(&y) {
            self.rho.push_back(1.0 / sy);
            self.s.push_back(s);
            self.y.push_back(y);
        }
        let _ = res.alpha;
        x.copy_from_slice(&self.xt);
        std::mem::swap(&mut self.g, &mut self.gt);
        self.f = res.f;
        Ok(Progress {
            f: self.f,
            grad_norm: norm(&self.g),
            stalled: None,
        })
    }
}
