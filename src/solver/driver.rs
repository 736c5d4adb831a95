//! One call that solves a UFM instance and evaluates the answer against theory: the library
//! behind `ufm solve` (and the building block of `landscape`, `certify`).

use super::{
    Executor, GradientDescent, Lbfgs, Objective, Observer, Report, Solver, Trace, TraceRecorder,
    TrustRegionNewton,
};
use crate::error::{Error, Result};
use crate::metrics::distance::{distance_to_minimizer, MinimizerDistance};
use crate::metrics::{ufm_nc, NcSummary};
use crate::real::{norm, Real};
use crate::ufm::{global_minimum, GlobalMinimum, UfmProblem};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which optimizer to run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum OptimizerSpec {
    /// Gradient descent with a fixed step (fused single-pass update).
    Gd {
        /// Step size.
        lr: f64,
    },
    /// Gradient descent with Armijo backtracking.
    GdBacktracking {
        /// Initial step size.
        lr: f64,
    },
    /// L-BFGS with strong-Wolfe line search.
    Lbfgs {
        /// Number of correction pairs.
        memory: usize,
    },
    /// Trust-region Newton-CG (Steihaug) on exact Hessian-vector products.
    Newton {
        /// Initial trust radius.
        radius: f64,
        /// Maximum CG iterations per step.
        max_cg: usize,
    },
}

impl OptimizerSpec {
    /// Parses `gd`, `gd-backtracking`, `lbfgs`, `newton` with the given step size / memory.
    pub fn parse(name: &str, lr: f64, memory: usize) -> Result<Self> {
        Ok(match name {
            "gd" => OptimizerSpec::Gd { lr },
            "gd-backtracking" | "gd-bt" => OptimizerSpec::GdBacktracking { lr },
            "lbfgs" | "l-bfgs" => OptimizerSpec::Lbfgs { memory },
            "newton" | "newton-tr" => OptimizerSpec::Newton {
                radius: 1.0,
                max_cg: 500,
            },
            other => {
                return Err(Error::param(
                    "optimizer",
                    format!(
                    "unknown optimizer `{other}`; expected gd, gd-backtracking, lbfgs or newton"
                ),
                ))
            }
        })
    }

    /// Short name (`gd`, `gd-backtracking`, `lbfgs`, `newton`).
    pub fn short_name(&self) -> &'static str {
        match self {
            OptimizerSpec::Gd { .. } => "gd",
            OptimizerSpec::GdBacktracking { .. } => "gd-backtracking",
            OptimizerSpec::Lbfgs { .. } => "lbfgs",
            OptimizerSpec::Newton { .. } => "newton",
        }
    }

    /// Builds the solver.
    pub fn build<T: Real, O: Objective<T> + ?Sized>(&self) -> Result<Box<dyn Solver<T, O>>> {
        Ok(match *self {
            OptimizerSpec::Gd { lr } => Box::new(GradientDescent::fixed(lr)?),
            OptimizerSpec::GdBacktracking { lr } => Box::new(GradientDescent::backtracking(lr)?),
            OptimizerSpec::Lbfgs { memory } => Box::new(Lbfgs::new(memory)?),
            OptimizerSpec::Newton { radius, max_cg } => {
                Box::new(TrustRegionNewton::new(radius, max_cg)?)
            }
        })
    }
}

/// Floating-point precision of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Double precision (default; theory checks).
    #[default]
    F64,
    /// Single precision (speed).
    F32,
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f64" | "double" => Ok(Precision::F64),
            "f32" | "single" => Ok(Precision::F32),
            o => Err(Error::param(
                "precision",
                format!("unknown precision `{o}`; expected f64 or f32"),
            )),
        }
    }
}

/// How to run the solver.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SolveSpec {
    /// Optimizer.
    pub optimizer: OptimizerSpec,
    /// Precision.
    pub precision: Precision,
    /// Seed of the random initialisation.
    pub seed: u64,
    /// Standard deviation of the Gaussian initialisation of $W$ and $H$.
    pub init_scale: f64,
    /// Gradient-norm tolerance.
    pub tol: f64,
    /// Iteration limit.
    pub max_iter: usize,
    /// Optional time limit (seconds, $\ge0$; $+\infty$ means none; see [`super::time_limit`]).
    pub time_limit: Option<f64>,
    /// Record a trace every this many iterations (0: no trace).
    pub trace_every: usize,
    /// Include NC metrics and the gap in the trace.
    pub trace_nc: bool,
    /// Relative gap $|f-f^\star|/\max(1,|f^\star|)$ under which a solution counts as a global minimum.
    pub gap_tol: f64,
}

impl Default for SolveSpec {
    fn default() -> Self {
        SolveSpec {
            optimizer: OptimizerSpec::Lbfgs { memory: 10 },
            precision: Precision::F64,
            seed: 0,
            init_scale: 1.0,
            tol: 1e-9,
            max_iter: 10_000,
            time_limit: None,
            trace_every: 0,
            trace_nc: true,
            gap_tol: 1e-8,
        }
    }
}

/// Everything `ufm solve --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct SolveSummary {
    /// $f$ at the solution (evaluated in f64).
    pub objective: f64,
    /// $f^\star$ from the closed form, if theory gives one.
    pub global_min_objective: Option<f64>,
    /// $f-f^\star$.
    pub gap: Option<f64>,
    /// $\lVert\nabla f\rVert$ at the solution (evaluated in f64).
    pub grad_norm: f64,
    /// Iterations.
    pub iterations: usize,
    /// Objective evaluations by the solver: $f$, $(f,\nabla f)$ or a fused gradient step,
    /// each one pass over $H$. The one at the starting point is included; the executor's
    /// final re-evaluation of the answer is not.
    pub evals: usize,
    /// `(evals - 1) / iterations`: evaluations per iteration after the starting point (for
    /// L-BFGS, the line search's cost; 1 means every unit step was accepted). `None` after
    /// zero iterations.
    pub evals_per_iter: Option<f64>,
    /// Hessian-vector products (Newton-CG; 0 for the other optimizers).
    pub hvps: usize,
    /// Solver seconds (observers and setup excluded).
    pub seconds: f64,
    /// Whether the gradient tolerance was met (in the run's precision).
    pub converged: bool,
    /// Whether $|f-f^\star|\le$ gap_tol $\cdot\max(1,|f^\star|)$; `None` without a closed form.
    pub is_global_min: Option<bool>,
    /// NC metrics of the solution.
    pub nc: NcSummary,
    /// Distance to the closed-form minimizer set (up to rotation).
    pub distance: Option<MinimizerDistance>,
    /// The closed form, if any.
    pub closed_form: Option<GlobalMinimum>,
    /// Solver report (stop reason, message).
    pub report: Report,
    /// The problem.
    pub problem: crate::ufm::UfmConfig,
    /// The run settings.
    pub spec: SolveSpec,
}

/// Result of [`solve`]: the summary, the solution in f64, and the trace if requested.
pub struct SolveOutcome {
    /// Summary (JSON output).
    pub summary: SolveSummary,
    /// The solution $x=(W,H^\top,b)$ in f64.
    pub x: Vec<f64>,
    /// The solution in f32 when the run was in f32.
    pub x_f32: Option<Vec<f32>>,
    /// Trace, if `trace_every > 0`.
    pub trace: Option<Trace>,
}

/// The objectives a run evaluates, one per precision (the problem itself on the CPU; a
/// [`crate::backend::BackendObjective`] on another device). The answer is always evaluated
/// against theory on the CPU in f64.
#[derive(Clone, Copy)]
pub struct Objectives<'a> {
    /// Used for [`Precision::F64`] runs.
    pub f64: &'a dyn Objective<f64>,
    /// Used for [`Precision::F32`] runs.
    pub f32: &'a dyn Objective<f32>,
}

/// Solves `p` from a random start (or `start`) and evaluates the answer.
pub fn solve(p: &UfmProblem, spec: &SolveSpec, start: Option<Vec<f64>>) -> Result<SolveOutcome> {
    solve_with(p, spec, start, Objectives { f64: p, f32: p })
}

/// [`solve`] with the objective evaluated by `obj` (which must describe `p`).
pub fn solve_with(
    p: &UfmProblem,
    spec: &SolveSpec,
    start: Option<Vec<f64>>,
    obj: Objectives<'_>,
) -> Result<SolveOutcome> {
    if obj.f64.dim() != p.n_params() || obj.f32.dim() != p.n_params() {
        return Err(Error::shape(
            "objective",
            format!("{} parameters", p.n_params()),
            format!("{} / {}", obj.f64.dim(), obj.f32.dim()),
        ));
    }
    let x0 = match start {
        Some(x) => {
            p.check_len("starting point", &x)?;
            x
        }
        None => p.random_point::<f64>(spec.seed, spec.init_scale)?,
    };
    let gm = global_minimum(p);
    match spec.precision {
        Precision::F64 => {
            let (report, x, trace, counts) = run_in::<f64, _>(p, obj.f64, spec, x0, gm.as_ref())?;
            finish(p, spec, gm, (report, counts), x, None, trace)
        }
        Precision::F32 => {
            let x0: Vec<f32> = x0.iter().map(|&v| v as f32).collect();
            let (report, x32, trace, counts) = run_in::<f32, _>(p, obj.f32, spec, x0, gm.as_ref())?;
            let x = x32.iter().map(|&v| v as f64).collect();
            finish(p, spec, gm, (report, counts), x, Some(x32), trace)
        }
    }
}

/// Evaluation counts of a run.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    evals: usize,
    hvps: usize,
}

/// An objective that counts the calls made to it (one counter per kind; atomics because
/// objectives are shared with parallel code).
struct Counting<'a, O: ?Sized> {
    inner: &'a O,
    evals: AtomicUsize,
    hvps: AtomicUsize,
}

impl<T: Real, O: Objective<T> + ?Sized> Objective<T> for Counting<'_, O> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn value(&self, x: &[T]) -> T {
        self.evals.fetch_add(1, Ordering::Relaxed);
        self.inner.value(x)
    }
    fn value_grad(&self, x: &[T], grad: &mut [T]) -> T {
        self.evals.fetch_add(1, Ordering::Relaxed);
        self.inner.value_grad(x, grad)
    }
    fn hvp(&self, x: &[T], v: &[T], out: &mut [T]) -> Result<()> {
        self.hvps.fetch_add(1, Ordering::Relaxed);
        self.inner.hvp(x, v, out)
    }
    fn fused_gd_step(&self, x: &mut [T], lr: T) -> Option<(T, f64)> {
        let r = self.inner.fused_gd_step(x, lr);
        if r.is_some() {
            self.evals.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

type RunOut<T> = (Report, Vec<T>, Option<Trace>, Counts);

fn run_in<T: Real, O: Objective<T> + ?Sized>(
    p: &UfmProblem,
    obj: &O,
    spec: &SolveSpec,
    x: Vec<T>,
    gm: Option<&GlobalMinimum>,
) -> Result<RunOut<T>> {
    let counting = Counting {
        inner: obj,
        evals: AtomicUsize::new(0),
        hvps: AtomicUsize::new(0),
    };
    let (report, x, trace) = run_counted(p, &counting, spec, x, gm)?;
    // The executor re-evaluates the answer once at the end; that one is not the solver's.
    let counts = Counts {
        evals: counting.evals.load(Ordering::Relaxed).saturating_sub(1),
        hvps: counting.hvps.load(Ordering::Relaxed),
    };
    Ok((report, x, trace, counts))
}

fn run_counted<T: Real, O: Objective<T> + ?Sized>(
    p: &UfmProblem,
    obj: &O,
    spec: &SolveSpec,
    mut x: Vec<T>,
    gm: Option<&GlobalMinimum>,
) -> Result<(Report, Vec<T>, Option<Trace>)> {
    let mut solver = spec.optimizer.build::<T, O>()?;
    let exec = Executor {
        max_iter: spec.max_iter,
        tol: spec.tol,
        time_limit: super::time_limit("time-limit", spec.time_limit)?,
        observe_every: spec.trace_every.max(1),
    };
    if spec.trace_every == 0 {
        let report = exec.run(obj, solver.as_mut(), &mut x, &mut [])?;
        return Ok((report, x, None));
    }
    let fstar = gm.map(|g| g.objective);
    let with_nc = spec.trace_nc;
    let mut rec = TraceRecorder::<T>::new().with_metrics(move |x: &[T]| {
        let mut m = BTreeMap::new();
        if let Some(fs) = fstar {
            m.insert("gap".to_string(), p.value(x).to_f64_() - fs);
        }
        if with_nc {
            let nc = ufm_nc(p, x)?;
            m.insert("nc1".into(), nc.nc1);
            m.insert("nc2_h".into(), nc.nc2_h);
            if let (Some(a), Some(b), Some(c)) = (nc.nc2_w, nc.nc3, nc.bias) {
                m.insert("nc2_w".into(), a);
                m.insert("nc3".into(), b);
                m.insert("bias".into(), c);
            }
        }
        Ok(m)
    });
    let report = {
        let mut obs: [&mut dyn Observer<T>; 1] = [&mut rec];
        exec.run(obj, solver.as_mut(), &mut x, &mut obs)?
    };
    Ok((report, x, Some(rec.trace)))
}

fn finish(
    p: &UfmProblem,
    spec: &SolveSpec,
    gm: Option<GlobalMinimum>,
    (report, counts): (Report, Counts),
    x: Vec<f64>,
    x_f32: Option<Vec<f32>>,
    trace: Option<Trace>,
) -> Result<SolveOutcome> {
    let mut g = vec![0.0; x.len()];
    let objective = p.value_grad(&x, &mut g);
    let grad_norm = norm(&g);
    let nc = ufm_nc(p, &x)?;
    let (gap, is_global_min, distance) = match gm.as_ref() {
        Some(gm) => {
            let gap = objective - gm.objective;
            let ok = gap.abs() <= spec.gap_tol * gm.objective.abs().max(1.0);
            (Some(gap), Some(ok), Some(distance_to_minimizer(p, &x, gm)?))
        }
        None => (None, None, None),
    };
    let summary = SolveSummary {
        objective,
        global_min_objective: gm.as_ref().map(|g| g.objective),
        gap,
        grad_norm,
        iterations: report.iterations,
        evals: counts.evals,
        evals_per_iter: (report.iterations > 0)
            .then(|| counts.evals.saturating_sub(1) as f64 / report.iterations as f64),
        hvps: counts.hvps,
        seconds: report.seconds,
        converged: report.converged,
        is_global_min,
        nc,
        distance,
        closed_form: gm,
        report,
        problem: p.config().clone(),
        spec: spec.clone(),
    };
    Ok(SolveOutcome {
        summary,
        x,
        x_f32,
        trace,
    })
}
