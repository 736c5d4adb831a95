//! Solvers for smooth unconstrained problems, argmin-style: a [`Solver`] performs one step, an
//! [`Executor`] owns the loop (tolerances, iteration and time limits, divergence checks) and
//! calls [`Observer`]s on a cadence to record traces.
//!
//! Solvers: [`GradientDescent`] (fixed step, fused single-pass update for the UFM; or Armijo
//! backtracking), [`Lbfgs`] (two-loop recursion with a strong-Wolfe line search) and
//! [`TrustRegionNewton`] (Steihaug-CG on exact Hessian-vector products).
//!
//! **Why our own L-BFGS rather than argmin's.** The design card names argmin, and
//! `tests/lbfgs_vs_argmin.rs` checks our L-BFGS against argmin's on the same UFM instance. The
//! solvers here are generic over [`Real`] (argmin's `Vec` math is `f64`-oriented and its
//! ndarray backend does not support the ndarray 0.17 we use), work in place on one flat buffer
//! with no per-iteration allocation, share one executor, stopping rule and observers with the
//! gradient-descent and Newton solvers, and accept steps by an approximate-Wolfe test once
//! round-off dominates, which is what lets them reach $\lVert\nabla f\rVert\le10^{-10}$.

pub mod driver;
mod gd;
mod lbfgs;
mod linesearch;
mod newton;
mod observe;

pub use driver::{
    solve, solve_with, Objectives, OptimizerSpec, Precision, SolveOutcome, SolveSpec, SolveSummary,
};
pub use gd::GradientDescent;
pub use lbfgs::Lbfgs;
pub use newton::TrustRegionNewton;
pub use observe::{Observer, Trace, TraceRecorder, TraceRow};

use crate::error::{Error, Result};
use crate::real::{all_finite, Real};
use serde::Serialize;
use std::time::{Duration, Instant};

/// A smooth objective on a flat parameter vector.
pub trait Objective<T: Real>: Sync {
    /// Number of parameters.
    fn dim(&self) -> usize;
    /// $f(x)$.
    fn value(&self, x: &[T]) -> T;
    /// $f(x)$, with $\nabla f(x)$ written into `grad`.
    fn value_grad(&self, x: &[T], grad: &mut [T]) -> T;
    /// $\nabla^2 f(x)\,v$ into `out`.
    fn hvp(&self, _x: &[T], _v: &[T], _out: &mut [T]) -> Result<()> {
        Err(Error::Unsupported(
            "this objective has no Hessian-vector product".into(),
        ))
    }
    /// Optionally, one fused step $x\leftarrow x-\eta\nabla f(x)$ returning $f$ and
    /// $\lVert\nabla f\rVert$ at the old point. `None` means "not available".
    fn fused_gd_step(&self, _x: &mut [T], _lr: T) -> Option<(T, f64)> {
        None
    }
}

impl<T: Real> Objective<T> for crate::ufm::UfmProblem {
    fn dim(&self) -> usize {
        self.n_params()
    }
    fn value(&self, x: &[T]) -> T {
        crate::ufm::UfmProblem::value(self, x)
    }
    fn value_grad(&self, x: &[T], grad: &mut [T]) -> T {
        crate::ufm::UfmProblem::value_grad(self, x, grad)
    }
    fn hvp(&self, x: &[T], v: &[T], out: &mut [T]) -> Result<()> {
        crate::ufm::UfmProblem::hvp(self, x, v, out);
        Ok(())
    }
    fn fused_gd_step(&self, x: &mut [T], lr: T) -> Option<(T, f64)> {
        Some(self.gd_step_fused(x, lr))
    }
}

/// What a solver reports after each step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Progress {
    /// Objective at the solver's current point.
    pub f: f64,
    /// Gradient norm at that point.
    pub grad_norm: f64,
    /// Set when the solver cannot make further progress (e.g. a line search failed in round-off).
    pub stalled: Option<String>,
}

/// Why the executor stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// $\lVert\nabla f\rVert\le$ tolerance.
    Converged,
    /// Iteration limit reached.
    MaxIterations,
    /// Time limit reached.
    TimeLimit,
    /// The solver could not make progress.
    Stalled,
}

/// One optimisation step.
pub trait Solver<T: Real, O: Objective<T> + ?Sized> {
    /// Name for traces and messages.
    fn name(&self) -> String;
    /// Prepares the solver at the starting point.
    fn init(&mut self, obj: &O, x: &mut [T]) -> Result<Progress>;
    /// Performs one iteration, updating `x` in place.
    fn step(&mut self, obj: &O, x: &mut [T]) -> Result<Progress>;
    /// Advice printed when the iterates diverge.
    fn divergence_hint(&self) -> String {
        "the iterates blew up; try another optimizer or a smaller initialisation".into()
    }
}

/// A time limit in seconds as a [`Duration`]: `None` and $+\infty$ (and finite values beyond
/// `Duration`'s range, about $1.8\cdot10^{19}$ s) mean no limit; NaN and negative values are an
/// error naming `flag`. (`Duration::from_secs_f64` would panic on all of those.)
pub fn time_limit(flag: &'static str, seconds: Option<f64>) -> Result<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_nan() || s < 0.0 => Err(Error::param(
            flag,
            format!("must be a number of seconds >= 0 (or inf for no limit), got {s}"),
        )),
        Some(s) => Ok(Duration::try_from_secs_f64(s).ok()),
    }
}

/// Runs a solver: stopping rules, divergence checks, observers, timing.
#[derive(Clone, Debug)]
pub struct Executor {
    /// Maximum number of iterations.
    pub max_iter: usize,
    /// Stop when $\lVert\nabla f\rVert\le$ `tol`.
    pub tol: f64,
    /// Optional wall-clock limit for the solver.
    pub time_limit: Option<Duration>,
    /// Observers are called every `observe_every` iterations (and at the first and last).
    pub observe_every: usize,
}

impl Default for Executor {
    fn default() -> Self {
        Executor {
            max_iter: 10_000,
            tol: 1e-9,
            time_limit: None,
            observe_every: 10,
        }
    }
}

/// Summary of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Solver name.
    pub solver: String,
    /// Iterations performed.
    pub iterations: usize,
    /// $f$ at the returned point (re-evaluated).
    pub objective: f64,
    /// $\lVert\nabla f\rVert$ at the returned point (re-evaluated).
    pub grad_norm: f64,
    /// $\lVert\nabla f\rVert\le$ tol at the returned point.
    pub converged: bool,
    /// Why the loop ended.
    pub stop: StopReason,
    /// Message from a stalled solver.
    pub message: Option<String>,
    /// Seconds spent in the solver (observers excluded).
    pub seconds: f64,
}

impl Executor {
    /// Runs `solver` from `x` (updated in place) until a stopping rule fires.
    pub fn run<T, O, S>(
        &self,
        obj: &O,
        solver: &mut S,
        x: &mut [T],
        observers: &mut [&mut dyn Observer<T>],
    ) -> Result<Report>
    where
        T: Real,
        O: Objective<T> + ?Sized,
        S: Solver<T, O> + ?Sized,
    {
        if x.len() != obj.dim() {
            return Err(Error::shape(
                "starting point",
                format!("{} parameters", obj.dim()),
                format!("{}", x.len()),
            ));
        }
        if !all_finite(x) {
            return Err(Error::NonFinite {
                what: "the starting point".into(),
            });
        }
        if self.tol.is_nan() || self.tol < 0.0 {
            return Err(Error::param(
                "tol",
                format!("must be >= 0, got {}", self.tol),
            ));
        }
        let every = self.observe_every.max(1);
        let mut solver_time = Duration::ZERO;
        let t0 = Instant::now();
        let mut p = solver.init(obj, x)?;
        solver_time += t0.elapsed();
        let f0 = p.f;
        let mut iter = 0;
        let check =
            |p: &Progress, x: &[T], iter: usize, name: String, hint: String| -> Result<()> {
                let exploded = p.f.abs() > 1e12 * f0.abs().max(1.0);
                if !p.f.is_finite() || !p.grad_norm.is_finite() || exploded || !all_finite(x) {
                    return Err(Error::Diverged {
                        solver: name,
                        iter,
                        value: p.f,
                        hint,
                    });
                }
                Ok(())
            };
        check(&p, x, 0, solver.name(), solver.divergence_hint())?;
        for o in observers.iter_mut() {
            o.observe(0, &p, x, solver_time.as_secs_f64())?;
        }
        let mut message = None;
        let stop = loop {
            if p.grad_norm <= self.tol {
                break StopReason::Converged;
            }
            if let Some(msg) = p.stalled.take() {
                message = Some(msg);
                break StopReason::Stalled;
            }
            if iter >= self.max_iter {
                break StopReason::MaxIterations;
            }
            if self.time_limit.is_some_and(|l| solver_time >= l) {
                break StopReason::TimeLimit;
            }
            let t = Instant::now();
            p = solver.step(obj, x)?;
            solver_time += t.elapsed();
            iter += 1;
            check(&p, x, iter, solver.name(), solver.divergence_hint())?;
            if iter % every == 0 {
                for o in observers.iter_mut() {
                    o.observe(iter, &p, x, solver_time.as_secs_f64())?;
                }
            }
        };
        // Re-evaluate at the returned point: the report never relies on a solver's bookkeeping.
        let t = Instant::now();
        let mut g = vec![T::zero(); x.len()];
        let f = obj.value_grad(x, &mut g).to_f64_();
        let gn = crate::real::norm(&g);
        solver_time += t.elapsed();
        let last = Progress {
            f,
            grad_norm: gn,
            stalled: None,
        };
        check(&last, x, iter, solver.name(), solver.divergence_hint())?;
        if iter % every != 0 {
            for o in observers.iter_mut() {
                o.observe(iter, &last, x, solver_time.as_secs_f64())?;
            }
        }
        Ok(Report {
            solver: solver.name(),
            iterations: iter,
            objective: f,
            grad_norm: gn,
            converged: gn <= self.tol,
            stop,
            message,
            seconds: solver_time.as_secs_f64(),
        })
    }
}
