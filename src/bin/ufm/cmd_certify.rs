//! `ufm certify` and `ufm certify figure`.

use crate::cmd_solve::{ProblemArgs, SolverArgs};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use ufm::certify::imbalance::{self, ImbalanceSpec};
use ufm::certify::{certify, CertifySpec, ConvexOptions, Representation};
use ufm::ufm::Loss;

/// Arguments of `ufm certify`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CertifyArgs {
    #[command(subcommand)]
    pub sub: Option<CertifySub>,
    #[command(flatten)]
    pub problem: ProblemArgs,
    #[command(flatten)]
    pub solver: SolverArgs,
    #[command(flatten)]
    pub convex: ConvexArgs,
    /// Singular values at most this times the largest count as zero in the rank of Z*.
    #[arg(long, default_value_t = 1e-6)]
    pub rank_tol: f64,
    /// The non-convex solution counts as certified optimal when objective - lower bound is at
    /// most this times max(1, |lower bound|).
    #[arg(long, default_value_t = 1e-8)]
    pub gap_tol: f64,
    /// Solve the literal K x N convex problem (one column per sample) instead of one column
    /// per class (same optimum; slower; a self-check).
    #[arg(long)]
    pub per_sample: bool,
    /// Skip the Newton polish of the factored convex optimum (its dual point usually gives the
    /// sharpest bound on ill-conditioned instances).
    #[arg(long)]
    pub no_polish: bool,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    pub json: bool,
}

/// Convex-solver flags.
#[derive(Args, Debug, Clone)]
pub struct ConvexArgs {
    /// Stop the convex solver when its certified duality gap is at most this times |objective|.
    #[arg(long, default_value_t = 1e-10)]
    pub convex_tol: f64,
    /// Maximum iterations of the convex solver.
    #[arg(long, default_value_t = 50_000)]
    pub convex_max_iter: usize,
}

impl ConvexArgs {
    fn options(&self) -> ConvexOptions {
        ConvexOptions {
            rel_tol: self.convex_tol,
            max_iter: self.convex_max_iter,
            ..ConvexOptions::default()
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum CertifySub {
    /// Figure: geometry of the certified optimum as the class imbalance grows (minority collapse).
    Figure(FigureArgs),
}

/// Arguments of `ufm certify figure`.
#[derive(Args, Debug)]
pub struct FigureArgs {
    /// Output stem: writes STEM.csv (data), STEM.png and STEM.svg.
    #[arg(long, default_value = "paper_figs/imbalance")]
    pub out: PathBuf,
    /// Redraw from an existing CSV instead of recomputing.
    #[arg(long, value_name = "FILE.csv")]
    pub from_csv: Option<PathBuf>,
    /// Class sizes at R = 1 (the last --minor-classes of them are divided by R).
    #[arg(long, value_delimiter = ',', default_value = "1000,1000,1000,1000")]
    pub class_sizes: Vec<usize>,
    /// Number of minority classes (the last ones).
    #[arg(long, default_value_t = 2)]
    pub minor_classes: usize,
    /// Largest imbalance ratio R (the grid is log-spaced from 1).
    #[arg(long, default_value_t = 100.0)]
    pub max_ratio: f64,
    /// Number of ratios (2 to 10000).
    #[arg(long, default_value_t = 41, value_parser = clap::value_parser!(u16).range(2..=10000))]
    pub points: u16,
    /// Weight decay on W.
    #[arg(long, default_value_t = 5e-3)]
    pub lambda_w: f64,
    /// Weight decay on H.
    #[arg(long, default_value_t = 5e-3)]
    pub lambda_h: f64,
    /// Weight decay on b.
    #[arg(long, default_value_t = 5e-3)]
    pub lambda_b: f64,
    /// Loss (convex in the logits): ce, mse, ls[:alpha].
    #[arg(long, default_value = "ce")]
    pub loss: String,
    /// Model without a bias.
    #[arg(long)]
    pub no_bias: bool,
    #[command(flatten)]
    pub convex: ConvexArgs,
}

pub fn run(args: CertifyArgs) -> Result<()> {
    if let Some(CertifySub::Figure(f)) = args.sub {
        return figure(f);
    }
    let problem = args.problem.config()?.build()?;
    let spec = CertifySpec {
        solve: args.solver.spec()?,
        convex: args.convex.options(),
        representation: if args.per_sample {
            Representation::PerSample
        } else {
            Representation::ClassCollapsed
        },
        rank_tol: args.rank_tol,
        gap_tol: args.gap_tol,
        polish: !args.no_polish,
    };
    let out = certify(&problem, &spec)?;
    let r = &out.report;
    if args.json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!("{}", problem.describe());
    let nc = &r.nonconvex;
    println!(
        "non-convex  {} (seed {}): f = {:.12}  |grad f| = {:.3e}, {} iterations, {}",
        nc.report.solver,
        spec.solve.seed,
        r.nonconvex_objective,
        nc.grad_norm,
        nc.iterations,
        if nc.converged {
            "converged"
        } else {
            "NOT converged"
        }
    );
    let cv = &r.convex;
    println!(
        "convex      FISTA + SVT ({:?}): P = {:.12}, {} iterations in {:.3} s, {}",
        cv.representation,
        r.convex_objective,
        cv.iterations,
        cv.seconds,
        if cv.converged {
            "converged".to_string()
        } else {
            format!(
                "stopped at --convex-max-iter with its own duality gap {:.1e}",
                cv.gap
            )
        }
    );
    let source = if r.lower_bound == r.convex_lower_bound {
        "the convex solver's dual point".to_string()
    } else if r.lower_bound == r.nonconvex_dual_bound {
        "the dual point at the non-convex solution".to_string()
    } else {
        "the dual point at the Newton-polished convex optimum".to_string()
    };
    println!(
        "lower bound D = {:.12}  (certified, from {source}); P - D = {:.3e}",
        r.lower_bound,
        r.convex_objective - r.lower_bound
    );
    if let Some(pl) = &r.polished {
        println!(
            "polish      Newton at d = rank = {}: f = {:.12}, |grad f| = {:.1e}, {} iterations",
            pl.dim, pl.objective, pl.grad_norm, pl.iterations
        );
    }
    let sv: Vec<String> = r
        .singular_values
        .iter()
        .map(|s| format!("{s:.4e}"))
        .collect();
    println!(
        "rank of Z*  {} (singular values > {:.0e} x largest: [{}]) vs d = {}",
        r.rank,
        r.rank_tol,
        sv.join(", "),
        r.feature_dim
    );
    if r.attained {
        println!(
            "            rank <= d: the bound is attained, D <= min UFM <= {:.12} (factored convex optimum)",
            r.factored_objective.unwrap_or(f64::NAN)
        );
    } else {
        println!(
            "            rank > d: the bound is NOT attained by a d-dimensional UFM point; D is a lower bound only"
        );
    }
    println!(
        "certified gap of the non-convex solution f - D = {:.3e} => {}",
        r.certified_gap,
        if r.certified_optimal {
            format!("global minimum (tolerance {:.0e})", spec.gap_tol)
        } else if r.attained {
            "NOT certified optimal".to_string()
        } else {
            "not certified (the bound is not attained at this d)".to_string()
        }
    );
    let d = &r.distance;
    println!(
        "distance to the factored convex optimum (up to rotation, width {}): (W,H) {:.3e} relative, W {:.3e}, b {:.3e}",
        d.width, d.wh_relative, d.w_relative, d.bias
    );
    Ok(())
}

fn figure(f: FigureArgs) -> Result<()> {
    let csv = f.out.with_extension("csv");
    let rows = match &f.from_csv {
        Some(path) => imbalance::read_csv(path)?,
        None => {
            if !(f.max_ratio.is_finite() && f.max_ratio >= 1.0) {
                bail!("--max-ratio must be finite and >= 1, got {}", f.max_ratio);
            }
            let loss: Loss = f.loss.parse()?;
            let spec = ImbalanceSpec {
                class_sizes: f.class_sizes.clone(),
                minor_classes: f.minor_classes,
                ratios: imbalance::log_grid(1.0, f.max_ratio, usize::from(f.points)),
                lambda_w: f.lambda_w,
                lambda_h: f.lambda_h,
                lambda_b: f.lambda_b,
                loss,
                bias: !f.no_bias,
                convex: f.convex.options(),
                ..ImbalanceSpec::default()
            };
            let rows = imbalance::imbalance_sweep(&spec)?;
            imbalance::write_csv(&csv, &rows)?;
            println!("data written to {}", csv.display());
            rows
        }
    };
    let (png, svg) = imbalance::plot(&f.out, &rows)?;
    println!("figure written to {} and {}", png.display(), svg.display());
    Ok(())
}
