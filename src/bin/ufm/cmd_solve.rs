//! `ufm solve`.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use ufm::backend::Device;
use ufm::solver::{OptimizerSpec, Precision, SolveSpec};
use ufm::ufm::{Loss, UfmConfig};

/// Problem flags shared by every subcommand that builds a UFM instance.
#[derive(Args, Debug, Clone)]
pub struct ProblemArgs {
    /// Number of classes K.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Feature dimension d.
    #[arg(long, default_value_t = 12)]
    pub dim: usize,
    /// Samples per class n (balanced classes).
    #[arg(long, default_value_t = 20)]
    pub per_class: usize,
    /// Per-class sizes, e.g. 500,500,50,50 (imbalanced; overrides --classes and --per-class).
    #[arg(long, value_delimiter = ',')]
    pub class_sizes: Option<Vec<usize>>,
    /// Weight decay on W (λ_W).
    #[arg(long, default_value_t = 5e-4, allow_negative_numbers = true)]
    pub lambda_w: f64,
    /// Weight decay on H (λ_H).
    #[arg(long, default_value_t = 5e-4, allow_negative_numbers = true)]
    pub lambda_h: f64,
    /// Weight decay on b (λ_b).
    #[arg(long, default_value_t = 5e-4, allow_negative_numbers = true)]
    pub lambda_b: f64,
    /// Model without a bias b.
    #[arg(long)]
    pub no_bias: bool,
    /// Loss: ce, mse, ls[:alpha] (label smoothing, default 0.1), focal[:gamma] (default 2).
    #[arg(long, default_value = "ce")]
    pub loss: String,
}

impl ProblemArgs {
    /// The (unvalidated) configuration.
    pub fn config(&self) -> Result<UfmConfig> {
        let base = match &self.class_sizes {
            Some(s) => UfmConfig::with_class_sizes(s.clone(), self.dim),
            // checks K, K n and the memory before `vec![n; K]` is allocated
            None => UfmConfig::try_balanced(self.classes, self.per_class, self.dim)?,
        };
        let loss: Loss = self.loss.parse()?;
        Ok(base
            .lambdas(self.lambda_w, self.lambda_h, self.lambda_b)
            .loss(loss)
            .bias(!self.no_bias))
    }
}

/// Solver flags shared by every subcommand that runs an optimizer.
#[derive(Args, Debug, Clone)]
pub struct SolverArgs {
    /// Optimizer: gd (fixed step), gd-backtracking, lbfgs, newton (trust-region Newton-CG).
    #[arg(long, default_value = "lbfgs")]
    pub optimizer: String,
    /// Step size for gd / initial step for gd-backtracking.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub lr: f64,
    /// L-BFGS memory.
    #[arg(long, default_value_t = 10)]
    pub history_size: usize,
    /// Precision: f64 or f32.
    #[arg(long, default_value = "f64")]
    pub precision: String,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Standard deviation of the Gaussian initialisation of W and H.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub init_scale: f64,
    /// Stop when the gradient norm is at most this (default 1e-9 in f64, 1e-4 in f32).
    #[arg(long, allow_negative_numbers = true)]
    pub tol: Option<f64>,
    /// Maximum iterations.
    #[arg(long, default_value_t = 10_000)]
    pub max_iter: usize,
    /// Time limit for the solver, in seconds (>= 0; `inf` means no limit).
    #[arg(long)]
    pub time_limit: Option<f64>,
    /// Where the objective is evaluated: cpu, cuda (an error naming what is missing when no
    /// GPU is usable), or auto (CUDA when usable, otherwise the CPU with a note on stderr).
    /// CUDA supports the ce and mse losses; the answer is always checked on the CPU in f64.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// `--device` values.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// CUDA if usable, else the CPU.
    Auto,
    /// The CPU (reference implementation).
    Cpu,
    /// CUDA device 0.
    Cuda,
}

impl From<DeviceArg> for Device {
    fn from(d: DeviceArg) -> Device {
        match d {
            DeviceArg::Auto => Device::Auto,
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => Device::Cuda,
        }
    }
}

impl SolverArgs {
    /// The solver specification.
    pub fn spec(&self) -> Result<SolveSpec> {
        let precision: Precision = self.precision.parse()?;
        ufm::solver::time_limit("time-limit", self.time_limit)?;
        let default_tol = match precision {
            Precision::F64 => 1e-9,
            Precision::F32 => 1e-4,
        };
        Ok(SolveSpec {
            optimizer: OptimizerSpec::parse(&self.optimizer, self.lr, self.history_size)?,
            precision,
            seed: self.seed,
            init_scale: self.init_scale,
            tol: self.tol.unwrap_or(default_tol),
            max_iter: self.max_iter,
            time_limit: self.time_limit,
            gap_tol: match precision {
                Precision::F64 => 1e-8,
                Precision::F32 => 1e-4,
            },
            ..SolveSpec::default()
        })
    }
}

/// Arguments of `ufm solve`.
#[derive(Args, Debug)]
pub struct SolveArgs {
    #[command(flatten)]
    pub problem: ProblemArgs,
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Write a trace (f, |grad|, gap, NC metrics) to FILE (.csv, else JSON).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Trace every this many iterations.
    #[arg(long, default_value_t = 10)]
    pub trace_every: usize,
    /// Save the solution (W, H, b, labels) to FILE.npz.
    #[arg(long, value_name = "FILE.npz")]
    pub save: Option<PathBuf>,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SolveArgs) -> Result<()> {
    let problem = args.problem.config()?.build()?;
    let mut spec = args.solver.spec()?;
    if args.trace.is_some() {
        spec.trace_every = args.trace_every.max(1);
    }
    let (out, device, fallback) =
        ufm::backend::solve(&problem, &spec, None, args.solver.device.into())?;
    if let Some(reason) = fallback {
        eprintln!("note: --device auto: {reason}; running on the CPU");
    }
    if let Some(path) = &args.trace {
        out.trace
            .as_ref()
            .expect("trace requested")
            .write(path)
            .with_context(|| "writing the trace")?;
    }
    if let Some(path) = &args.save {
        match &out.x_f32 {
            Some(x) => ufm::io::save_ufm_npz(path, &problem, x)?,
            None => ufm::io::save_ufm_npz(path, &problem, &out.x)?,
        }
    }
    let s = &out.summary;
    // Generalized NC (K > d+1): one-vs-rest margins of the normalised classifier rows.
    let margins = crate::cmd_margin::ufm_margins_if_many_classes(&problem, &out.x)?;
    if args.json {
        match &margins {
            None => println!("{}", serde_json::to_string_pretty(s)?),
            Some(m) => {
                let mut v = serde_json::to_value(s)?;
                v["margins"] = serde_json::to_value(m)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
        }
        return Ok(());
    }
    println!("{}", problem.describe());
    let r = &s.report;
    if device != "cpu" {
        println!("device             {device}");
    }
    println!(
        "solver {} ({:?}, seed {}): {} iterations ({} evaluations{}{}) in {:.4} s, {} (|grad f| = {:.3e}, tol {:.0e}){}",
        r.solver,
        spec.precision,
        spec.seed,
        r.iterations,
        s.evals,
        s.evals_per_iter
            .map(|e| format!(", {e:.2} per iteration"))
            .unwrap_or_default(),
        if s.hvps > 0 {
            format!(", {} Hessian-vector products", s.hvps)
        } else {
            String::new()
        },
        r.seconds,
        if r.converged {
            "converged"
        } else {
            "NOT converged"
        },
        s.grad_norm,
        spec.tol,
        r.message
            .as_deref()
            .map(|m| format!("; {m}"))
            .unwrap_or_default()
    );
    println!("objective          {:.12}", s.objective);
    match (&s.closed_form, s.gap, s.is_global_min) {
        (Some(cf), Some(gap), Some(ok)) => {
            println!("global minimum     {:.12}  ({})", cf.objective, cf.source);
            println!(
                "gap f - f*         {gap:.3e}  => {}",
                if ok {
                    "global minimum reached"
                } else {
                    "NOT at the global minimum"
                }
            );
            println!(
                "closed form        frame {:?}, |w_k| = {:.6}, h = {:.6} w_k, K sqrt(n lW lH) = {:.4}",
                cf.frame, cf.row_norm, cf.feature_scale, cf.zero_threshold
            );
            if let Some(d) = &s.distance {
                println!(
                    "distance to the minimizer set (up to rotation): (W,H) {:.3e} relative, W {:.3e}, b {:.3e}",
                    d.wh_relative, d.w_relative, d.bias
                );
            }
        }
        _ => println!("global minimum     no closed form for this instance (see `ufm certify`)"),
    }
    let nc = &s.nc;
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3e}"));
    println!(
        "NC metrics         nc1 {:.3e}  nc2_w {}  nc2_h {:.3e}  nc3 {}  bias {}",
        nc.nc1,
        opt(nc.nc2_w),
        nc.nc2_h,
        opt(nc.nc3),
        opt(nc.bias)
    );
    if let Some(m) = &margins {
        println!("{}", crate::cmd_margin::margin_line(m));
    }
    if let Some(p) = &args.trace {
        println!("trace written to {}", p.display());
    }
    if let Some(p) = &args.save {
        println!("solution saved to {}", p.display());
    }
    Ok(())
}
