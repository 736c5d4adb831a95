//! `ufm regress`: the regression UFM (closed form vs L-BFGS) and NRC1-3 (`ufm regress metrics`,
//! also reached as `ufm metrics --targets`).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::{Path, PathBuf};
use ufm::metrics::nrc::{nrc3, nrc_metrics, NrcReport};
use ufm::regression::{self, RegressionOptimum, RegressionProblem};
use ufm::solver::{Executor, Lbfgs};

/// Arguments of `ufm regress`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Minimises (1/2N)||W H + b 1^T - Y||^2 + lW/2 ||W||^2 + lH/2 ||H||^2 \
(Andriopoulos et al., arXiv 2409.04180) by L-BFGS from a random start and compares it with the \
closed form by singular-value thresholding of the centred targets; reports NRC1-3.\n\
Examples:\n  ufm regress --samples 200 --outputs 3 --dim 8 --lambda-w 1e-3 --lambda-h 1e-3\n  \
ufm regress --targets Y.npy --dim 16 --json --save reg.npz\n  \
ufm regress metrics --targets Y.npy --features H.npy --weights W.npy\n  \
ufm metrics --targets Y.npy --features H.npy --weights W.npy"
)]
pub struct RegressArgs {
    #[command(subcommand)]
    pub sub: Option<RegressSub>,
    /// Targets (N x n .npy, one row per sample); default: seeded synthetic targets.
    #[arg(long, value_name = "Y.npy")]
    pub targets: Option<PathBuf>,
    /// Synthetic targets: number of samples N.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Synthetic targets: target dimension n.
    #[arg(long, default_value_t = 3)]
    pub outputs: usize,
    /// Synthetic targets: correlation rho between neighbouring outputs (covariance rho^|i-j|, output i scaled by i+1).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub correlation: f64,
    /// Synthetic targets: seed.
    #[arg(long, default_value_t = 0)]
    pub target_seed: u64,
    /// Feature dimension d.
    #[arg(long, default_value_t = 8)]
    pub dim: usize,
    /// Weight decay on W.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lambda_w: f64,
    /// Weight decay on H.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lambda_h: f64,
    /// Model without a bias (then the targets are not centred).
    #[arg(long)]
    pub no_bias: bool,
    /// Seed of the random start.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop L-BFGS when the gradient norm is at most this.
    #[arg(long, default_value_t = 1e-10)]
    pub tol: f64,
    /// Maximum L-BFGS iterations.
    #[arg(long, default_value_t = 20_000)]
    pub max_iter: usize,
    /// Save the L-BFGS solution (W, H, b, targets) to FILE.npz.
    #[arg(long, value_name = "FILE.npz")]
    pub save: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum RegressSub {
    /// NRC1-3 of features (and a head W) against regression targets.
    Metrics(MetricsArgs),
}

/// Arguments of `ufm regress metrics`.
#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// A bundle (.npz from `ufm regress --save`: `H` or `features`, `W`, `targets`).
    #[arg(value_name = "FILE.npz")]
    pub bundle: Option<PathBuf>,
    /// Targets (N x n .npy).
    #[arg(long, value_name = "Y.npy")]
    pub targets: Option<PathBuf>,
    /// Features (N x d .npy).
    #[arg(long, value_name = "H.npy")]
    pub features: Option<PathBuf>,
    /// Head W (n x d .npy).
    #[arg(long, value_name = "W.npy")]
    pub weights: Option<PathBuf>,
    /// Fix gamma in NRC3 instead of minimising over [0, lambda_min(Sigma)].
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Output {
    n_samples: usize,
    n_outputs: usize,
    feature_dim: usize,
    lambda_w: f64,
    lambda_h: f64,
    bias: bool,
    objective: f64,
    global_min_objective: f64,
    relative_gap: f64,
    grad_norm: f64,
    iterations: usize,
    converged: bool,
    closed_form: RegressionOptimum,
    /// ||W W^T - G*|| / ||G*|| with G* the closed-form Gram sqrt(lH/lW) sqrt(N) (Sigma^1/2 - gamma^1/2 I)_+.
    gram_error: f64,
    nrc: NrcReport,
    nrc3_at_theory_gamma: Option<f64>,
    nrc_closed_form: NrcReport,
}

/// NRC metrics from files (shared with `ufm metrics --targets`).
pub fn metrics_from_files(
    targets: Option<&Path>,
    features: Option<&Path>,
    bundle: Option<&Path>,
    weights: Option<&Path>,
    gamma: Option<f64>,
    json: bool,
) -> Result<()> {
    let (mut h, mut w, mut y) = (None, None, None);
    if let Some(b) = bundle {
        let rb = regression::read_bundle(b).with_context(|| format!("reading {}", b.display()))?;
        h = Some(rb.features);
        w = rb.w;
        y = rb.targets;
    }
    if let Some(f) = features {
        if bundle.is_some() {
            bail!("give either a bundle FILE.npz or --features, not both");
        }
        h = Some(regression::read_npy_matrix(f, "the features")?);
    }
    if let Some(p) = weights {
        w = Some(regression::read_npy_matrix(p, "the head W")?);
    }
    if let Some(t) = targets {
        y = Some(regression::read_npy_matrix(t, "the targets")?);
    }
    let Some(h) = h else {
        bail!("no features: pass --features H.npy (N x d) or a bundle FILE.npz");
    };
    let Some(mut y) = y else {
        bail!("no targets: pass --targets Y.npy (N x n)");
    };
    if y.nrows() != h.nrows() && y.ncols() == h.nrows() {
        eprintln!(
            "note: the targets are {}x{}; using their transpose (one row per sample)",
            y.nrows(),
            y.ncols()
        );
        y = y.t().to_owned();
    }
    let r = nrc_metrics(h.view(), y.view(), w.as_ref().map(|w| w.view()), gamma)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    print_nrc("NRC", &r);
    Ok(())
}

fn print_nrc(label: &str, r: &NrcReport) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3e}"));
    println!(
        "{label:<18} nrc1 {:.3e}  nrc2 {}  nrc3 {} (gamma {})   [N={} d={} n={}]",
        r.nrc1,
        opt(r.nrc2),
        opt(r.nrc3),
        opt(r.nrc3_gamma),
        r.n_samples,
        r.feature_dim,
        r.n_outputs
    );
}

pub fn run(args: RegressArgs) -> Result<()> {
    if let Some(RegressSub::Metrics(m)) = args.sub {
        return metrics_from_files(
            m.targets.as_deref(),
            m.features.as_deref(),
            m.bundle.as_deref(),
            m.weights.as_deref(),
            m.gamma,
            m.json,
        );
    }
    let y = match &args.targets {
        Some(p) => regression::read_npy_matrix(p, "the targets")?,
        None => regression::random_targets(
            args.samples,
            args.outputs,
            args.correlation,
            args.target_seed,
        )?,
    };
    let p = RegressionProblem::new(y, args.dim, args.lambda_w, args.lambda_h, !args.no_bias)?;
    let cf = regression::closed_form(&p)?;
    let mut x = p.random_point(args.seed, 1.0);
    let exec = Executor {
        tol: args.tol,
        max_iter: args.max_iter,
        ..Default::default()
    };
    let rep = exec.run(&p, &mut Lbfgs::new(10)?, &mut x, &mut [])?;
    let f = p.value(&x);
    let (w, ht, _) = p.split(&x);
    let nrc = nrc_metrics(ht, p.targets(), Some(w), None)?;
    let at_theory = nrc3(w, p.targets(), Some(cf.gamma)).ok().map(|r| r.value);
    let xc = cf.point(&p)?;
    let (wc, htc, _) = p.split(&xc);
    let nrc_cf = nrc_metrics(htc, p.targets(), Some(wc), Some(cf.gamma))?;
    let gram = w.dot(&w.t());
    let gram_cf = wc.dot(&wc.t());
    let nrm = |a: &ndarray::Array2<f64>| a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let gram_error = nrm(&(&gram - &gram_cf)) / nrm(&gram_cf);
    if let Some(path) = &args.save {
        regression::save_npz(path, &p, &x)?;
    }
    let rel_gap = (f - cf.objective) / cf.objective.abs().max(f64::MIN_POSITIVE);
    if args.json {
        let out = Output {
            n_samples: p.n_samples(),
            n_outputs: p.n_outputs(),
            feature_dim: p.feature_dim(),
            lambda_w: p.lambda_w(),
            lambda_h: p.lambda_h(),
            bias: p.has_bias(),
            objective: f,
            global_min_objective: cf.objective,
            relative_gap: rel_gap,
            grad_norm: rep.grad_norm,
            iterations: rep.iterations,
            converged: rep.converged,
            closed_form: cf,
            gram_error,
            nrc,
            nrc3_at_theory_gamma: at_theory,
            nrc_closed_form: nrc_cf,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "regression UFM: N={} n={} d={} lambda_W={} lambda_H={}, {}",
        p.n_samples(),
        p.n_outputs(),
        p.feature_dim(),
        p.lambda_w(),
        p.lambda_h(),
        if p.has_bias() {
            "unregularised bias"
        } else {
            "no bias"
        }
    );
    println!(
        "L-BFGS (seed {}): {} iterations, |grad f| = {:.2e}, {}",
        args.seed,
        rep.iterations,
        rep.grad_norm,
        if rep.converged {
            "converged"
        } else {
            "NOT converged"
        }
    );
    println!("objective          {f:.15}");
    println!(
        "closed form        {:.15}  (SVT of the targets, centred when there is a bias: threshold c = N sqrt(lW lH) = {:.4e}, rank {})",
        cf.objective, cf.threshold, cf.rank
    );
    println!("relative gap       {rel_gap:.3e}");
    println!(
        "W W^T vs sqrt(lH/lW) sqrt(N) (Sigma^1/2 - gamma^1/2 I)_+, gamma = N lW lH = {:.4e}: relative error {gram_error:.3e}",
        cf.gamma
    );
    print_nrc("NRC (L-BFGS)", &nrc);
    if let Some(v) = at_theory {
        println!("NRC3 at gamma = N lW lH: {v:.3e}");
    }
    print_nrc("NRC (closed form)", &nrc_cf);
    if let Some(path) = &args.save {
        println!("solution saved to {}", path.display());
    }
    Ok(())
}
