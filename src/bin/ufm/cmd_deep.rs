//! `ufm deep linear`, `ufm deep relu`, `ufm deep figures`: deep unconstrained feature models.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use ufm::deep::figures::{self, FigureSpec};
use ufm::deep::{
    best_run, linear, relu, solve_from_random_starts, srg, Activation, DeepUfmConfig, LayerNc,
    StartSpec,
};
use ufm::ufm::Loss;

/// Arguments of `ufm deep`.
#[derive(Args, Debug)]
pub struct DeepArgs {
    #[command(subcommand)]
    pub sub: DeepSub,
}

#[derive(Subcommand, Debug)]
pub enum DeepSub {
    /// Deep linear UFM: certified closed-form optimum (MSE, no bias) vs the solver, per-layer NC.
    Linear(LinearArgs),
    /// Deep ReLU UFM: solver loss vs the best deep-neural-collapse loss and the low-rank SRG loss.
    Relu(ReluArgs),
    /// Data + figures for paper_figs/ (ReLU SRG/DNC ratios, training curves, the zero solution).
    Figures(FiguresArgs),
}

/// Model flags shared by `deep linear` and `deep relu`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Number of weight matrices L (the depth; L = 1 is the classical UFM without bias).
    #[arg(long, default_value_t = 3)]
    pub layers: usize,
    /// Number of classes K.
    #[arg(long, default_value_t = 4)]
    pub classes: usize,
    /// Samples per class n (balanced classes).
    #[arg(long, default_value_t = 10)]
    pub per_class: usize,
    /// Per-class sizes, e.g. 20,10,5,5 (overrides --classes and --per-class).
    #[arg(long, value_delimiter = ',')]
    pub class_sizes: Option<Vec<usize>>,
    /// Width of H and of every hidden layer (d_0 = d_1 = ... = d_{L-1}).
    #[arg(long, alias = "dim", default_value_t = 8)]
    pub width: usize,
    /// Weight decay of every W_l (and of H unless --lambda-h is given).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lambda: f64,
    /// Weight decay of H (default: --lambda).
    #[arg(long, allow_negative_numbers = true)]
    pub lambda_h: Option<f64>,
}

/// Solver flags.
#[derive(Args, Debug, Clone)]
pub struct StartArgs {
    /// Random starts (seeds --seed, --seed+1, ...).
    #[arg(long, default_value_t = 5)]
    pub starts: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Scale of the random start: H ~ N(0, s^2), W_l ~ N(0, s^2 / fan-in).
    #[arg(long, default_value_t = 1.0)]
    pub init_scale: f64,
    /// Optimizer: lbfgs or gd (fixed step --lr).
    #[arg(long, default_value = "lbfgs")]
    pub optimizer: String,
    /// Step size for gd.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub lr: f64,
    /// Iteration limit per start.
    #[arg(long, default_value_t = 20_000)]
    pub max_iter: usize,
    /// Gradient-norm tolerance.
    #[arg(long, default_value_t = 1e-10)]
    pub tol: f64,
}

impl StartArgs {
    fn spec(&self) -> StartSpec {
        StartSpec {
            starts: self.starts,
            seed: self.seed,
            init_scale: self.init_scale,
            optimizer: self.optimizer.clone(),
            lr: self.lr,
            max_iter: self.max_iter,
            tol: self.tol,
            trace_every: None,
        }
    }
}

/// Arguments of `ufm deep linear`.
#[derive(Args, Debug)]
pub struct LinearArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Loss: mse (certified closed form) or ce (solver + the best simplex-ETF configuration).
    #[arg(long, default_value = "mse")]
    pub loss: String,
    #[command(flatten)]
    pub start: StartArgs,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `ufm deep relu`.
#[derive(Args, Debug)]
pub struct ReluArgs {
    /// Number of weight matrices L.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Number of classes K (the SRG comparison needs K = r(r-1)/2: 3, 6, 10, 15, ...).
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Samples per class n.
    #[arg(long, default_value_t = 1)]
    pub per_class: usize,
    /// Width of H and of every hidden layer (at least K).
    #[arg(long, default_value_t = 30)]
    pub width: usize,
    /// Weight decay of every W_l and of H.
    #[arg(long, default_value_t = 0.004, allow_negative_numbers = true)]
    pub lambda: f64,
    #[command(flatten)]
    pub start: StartArgs,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `ufm deep figures`.
#[derive(Args, Debug)]
pub struct FiguresArgs {
    /// Output directory.
    #[arg(long, default_value = "paper_figs")]
    pub out: PathBuf,
    /// A small, fast version (fewer points and iterations) for a quick look.
    #[arg(long)]
    pub quick: bool,
    /// Only redraw the figures from the CSVs and deep_summary.json already in --out.
    #[arg(long)]
    pub replot: bool,
}

pub fn run(args: DeepArgs) -> Result<()> {
    match args.sub {
        DeepSub::Linear(a) => run_linear(a),
        DeepSub::Relu(a) => run_relu(a),
        DeepSub::Figures(a) => run_figures(a),
    }
}

fn config(m: &ModelArgs) -> DeepUfmConfig {
    let sizes = m
        .class_sizes
        .clone()
        .unwrap_or_else(|| vec![m.per_class; m.classes]);
    DeepUfmConfig::new(sizes, m.layers, m.width).lambdas(m.lambda, m.lambda_h.unwrap_or(m.lambda))
}

fn check_layers(layers: usize) -> Result<()> {
    if layers == 0 {
        bail!("--layers must be at least 1");
    }
    Ok(())
}

fn print_nc(nc: &[LayerNc]) {
    println!(
        "per-layer NC (features A_l entering W_(l+1); A_0 = H):\n  {:>5} {:>5} {:>10} {:>10} {:>10} {:>5} {:>10} {:>10}",
        "layer", "dim", "NC1", "NC2(ETF)", "max|cos|", "rank", "NC3(span)", "NC3(ETF)"
    );
    for l in nc {
        println!(
            "  {:>5} {:>5} {:>10.3e} {:>10.3e} {:>10.3e} {:>5} {:>10.3e} {:>10}",
            l.layer,
            l.dim,
            l.nc1,
            l.nc2_etf,
            l.max_cos,
            l.rank,
            l.nc3_span,
            l.nc3_etf.map_or("-".to_string(), |v| format!("{v:.3e}"))
        );
    }
}

fn run_linear(a: LinearArgs) -> Result<()> {
    check_layers(a.model.layers)?;
    let loss: Loss = a.loss.parse()?;
    if !matches!(loss, Loss::Mse | Loss::CrossEntropy) {
        bail!("--loss must be mse or ce for `deep linear`, got {}", a.loss);
    }
    let p = config(&a.model)
        .loss(loss)
        .activation(Activation::Linear)
        .build()?;
    let spec = a.start.spec();
    let runs = solve_from_random_starts(&p, &spec)?;
    let best = best_run(&runs).expect("at least one start");
    let nc = p.layer_nc(&runs[best].x, 1e-6)?;
    if loss == Loss::Mse {
        let cert = linear::certify(&p)?;
        let gaps: Vec<f64> = runs
            .iter()
            .map(|r| (r.objective - cert.objective) / cert.objective)
            .collect();
        if a.json {
            let v = serde_json::json!({
                "problem": p.describe(),
                "certificate": cert,
                "runs": runs,
                "relative_gaps": gaps,
                "best": best,
                "layer_nc": nc,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        println!("{}", p.describe());
        println!(
            "certified minimum f* = {:.12}  (c_bar = {:.6e}, rank of Z* {} of max {})",
            cert.objective, cert.c_bar, cert.rank, cert.max_rank
        );
        for c in &cert.classes {
            let roots: Vec<String> = c.roots.iter().map(|r| format!("{r:.6}")).collect();
            println!(
                "  class {:>2} (n = {:>4}): s* = {:.9}  logit t = {:.9}  stationary roots [{}]{}{}",
                c.class,
                c.n,
                c.s,
                c.logit,
                roots.join(", "),
                if c.zero_beats_root {
                    "  <- zero solution beats its root"
                } else if c.zero {
                    "  <- zero solution"
                } else {
                    ""
                },
                if c.rank_capped { " (rank cap)" } else { "" }
            );
        }
        if cert.largest_root_objective > cert.objective {
            println!(
                "the largest-stationary-root rule (never 0) would report {:.12} (+{:.3e})",
                cert.largest_root_objective,
                cert.largest_root_objective - cert.objective
            );
        }
        for (r, g) in runs.iter().zip(&gaps) {
            println!(
                "  {} seed {:>3}: f = {:.12}  (f - f*)/f* = {:+.2e}  |grad| = {:.1e}  {} it, {:?}",
                spec.optimizer, r.seed, r.objective, g, r.grad_norm, r.iterations, r.stop
            );
        }
        let reached = gaps.iter().filter(|&&g| g <= 1e-8).count();
        println!(
            "{reached}/{} starts reached f* to 1e-8 relative; best gap {:+.2e}",
            runs.len(),
            gaps[best]
        );
    } else {
        let etf = if p.class_sizes().iter().all(|&n| n == p.class_sizes()[0]) {
            Some(linear::etf_candidate(&p)?)
        } else {
            None
        };
        if a.json {
            let v = serde_json::json!({
                "problem": p.describe(),
                "etf_candidate": etf,
                "runs": runs,
                "best": best,
                "layer_nc": nc,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        println!("{}", p.describe());
        println!("cross-entropy: no closed form; nothing below is certified");
        if let Some(e) = &etf {
            println!(
                "best simplex-ETF configuration (upper bound): t = {:.9}, f = {:.12}",
                e.t, e.objective
            );
        }
        for r in &runs {
            println!(
                "  {} seed {:>3}: f = {:.12}  |grad| = {:.1e}  {} it, {:?}{}",
                spec.optimizer,
                r.seed,
                r.objective,
                r.grad_norm,
                r.iterations,
                r.stop,
                etf.as_ref().map_or(String::new(), |e| format!(
                    "  f - f_ETF = {:+.3e}",
                    r.objective - e.objective
                ))
            );
        }
    }
    println!("at the best run (seed {}):", runs[best].seed);
    print_nc(&nc);
    Ok(())
}

fn run_relu(a: ReluArgs) -> Result<()> {
    check_layers(a.layers)?;
    let p = DeepUfmConfig::new(vec![a.per_class; a.classes], a.layers, a.width)
        .lambdas(a.lambda, a.lambda)
        .activation(Activation::Relu)
        .build()?;
    let cmp = relu::compare(&p, &a.start.spec(), &srg::SrgOptions::default())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&cmp)?);
        return Ok(());
    }
    println!("{}", cmp.problem);
    println!(
        "DNC (best deep-neural-collapse configuration, exact): L_DNC = {:.10}  (logit t = {:.6})",
        cmp.dnc.loss, cmp.dnc.logit
    );
    match &cmp.srg {
        Some(s) => println!(
            "SRG (r = {}, rank {} before the last ReLU, {} after; kept entries: {}): L_SRG = {:.10}  L_SRG / L_DNC = {:.4}",
            s.spec.r,
            s.ranks.0,
            s.ranks.1,
            s.pattern,
            s.loss,
            cmp.srg_over_dnc.unwrap_or(f64::NAN)
        ),
        None => println!("SRG: K = {} is not r(r-1)/2, no SRG configuration", p.n_classes()),
    }
    for r in &cmp.runs {
        println!(
            "  {} seed {:>3}: f = {:.10}  (f / L_DNC = {:.4})  |grad| = {:.1e}  {} it, {:?}",
            a.start.optimizer,
            r.seed,
            r.objective,
            r.objective / cmp.dnc.loss,
            r.grad_norm,
            r.iterations,
            r.stop
        );
    }
    println!(
        "{}/{} runs end below L_DNC",
        cmp.runs_below_dnc,
        cmp.runs.len()
    );
    println!("at the best run (seed {}):", cmp.runs[cmp.best].seed);
    print_nc(&cmp.best_nc);
    Ok(())
}

fn run_figures(a: FiguresArgs) -> Result<()> {
    let spec = if a.quick {
        FigureSpec::quick()
    } else {
        FigureSpec::default()
    };
    let t = std::time::Instant::now();
    let written = if a.replot {
        figures::replot(&a.out)?
    } else {
        figures::write_all(&a.out, &spec)?
    };
    for w in &written {
        println!("wrote {}", w.display());
    }
    println!("done in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}
