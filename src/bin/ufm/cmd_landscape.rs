//! `ufm hessian`, `ufm saddles`, `ufm landscape` (+ `merge`, `figures`): thin layers over
//! `ufm::landscape`.

use crate::cmd_solve::{ProblemArgs, SolverArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Instant;
use ufm::landscape::critical::{catalogue, newton_polish, reference_optimum};
use ufm::landscape::sweep::{
    merge_shards, read_shard, run_sweep, summarize, write_shard, write_summary, CellSummary,
    SweepSpec,
};
use ufm::landscape::{analyse_saddle, hessian_report, HessianOptions, LanczosOptions};
use ufm::solver::{solve, OptimizerSpec};
use ufm::ufm::UfmProblem;

/// Spectrum flags shared by `hessian` and `saddles`.
#[derive(Args, Debug, Clone)]
pub struct SpectrumArgs {
    /// Relative tolerance tau: |lambda| <= tau * max|lambda| counts as zero.
    #[arg(long, default_value_t = ufm::landscape::spectrum::DEFAULT_REL_TOL)]
    pub zero_tol: f64,
    /// Largest parameter count for the dense Hessian + full spectrum; Lanczos above.
    #[arg(long, default_value_t = 3000)]
    pub dense_limit: usize,
    /// Always use Lanczos (extreme eigenvalues only; counts are then not available).
    #[arg(long, conflicts_with = "collapsed")]
    pub lanczos: bool,
    /// Always use the exact class decomposition (needs features collapsed within classes, as at
    /// every critical point; full spectrum from O(Kd) HVPs). By default it is used above --dense-limit.
    #[arg(long)]
    pub collapsed: bool,
    /// Maximum Lanczos steps.
    #[arg(long, default_value_t = 300)]
    pub lanczos_steps: usize,
    /// Relative residual tolerance of Lanczos.
    #[arg(long, default_value_t = 1e-8)]
    pub lanczos_tol: f64,
}

impl SpectrumArgs {
    fn options(&self, seed: u64) -> HessianOptions {
        HessianOptions {
            rel_tol: self.zero_tol,
            dense_limit: if self.lanczos || self.collapsed {
                0
            } else {
                self.dense_limit
            },
            want_vector: false,
            use_collapsed: !self.lanczos,
            lanczos: LanczosOptions {
                max_iter: self.lanczos_steps,
                tol: self.lanczos_tol,
                seed,
            },
        }
    }
}

/// Arguments of `ufm hessian`.
#[derive(Args, Debug)]
pub struct HessianArgs {
    #[command(flatten)]
    pub problem: ProblemArgs,
    #[command(flatten)]
    pub solver: SolverArgs,
    #[command(flatten)]
    pub spectrum: SpectrumArgs,
    /// Analyse this point (.npz from `ufm solve --save`) instead of solving.
    #[arg(long, value_name = "FILE.npz")]
    pub load: Option<PathBuf>,
    /// Do not polish the solver's answer with trust-region Newton (to |grad| <= 1e-11).
    #[arg(long)]
    pub no_polish: bool,
    /// Write all eigenvalues (dense path) to FILE as CSV `index,eigenvalue`.
    #[arg(long, value_name = "FILE")]
    pub eigenvalues: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn describe(p: &UfmProblem) -> String {
    let c = p.config();
    format!(
        "K={} d={} N={} loss {} lambda_W={} lambda_H={} lambda_b={} bias {} ({} parameters)",
        p.n_classes(),
        p.feature_dim(),
        p.n_samples(),
        c.loss,
        c.lambda_w,
        c.lambda_h,
        c.lambda_b,
        if c.bias { "yes" } else { "no" },
        p.n_params()
    )
}

fn opt_usize(v: Option<usize>) -> String {
    v.map_or("n/a (Lanczos)".into(), |v| v.to_string())
}

pub fn run_hessian(args: HessianArgs) -> Result<()> {
    let p = args.problem.config()?.build()?;
    let spec = args.solver.spec()?;
    let x = match &args.load {
        Some(path) => ufm::io::load_ufm_npz(path, &p)?,
        None => {
            let mut x = solve(&p, &spec, None)?.x;
            if !args.no_polish {
                newton_polish(&p, &mut x, 1e-11)?;
            }
            x
        }
    };
    let r = hessian_report(&p, &x, &args.spectrum.options(spec.seed))?;
    if let (Some(path), Some(vals)) = (&args.eigenvalues, &r.hessian.eigenvalues) {
        let mut s = String::from("index,eigenvalue\n");
        for (i, v) in vals.iter().enumerate() {
            s.push_str(&format!("{i},{v:e}\n"));
        }
        ufm::io::write_atomic(path, s.as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("UFM: {}", describe(&p));
    println!(
        "point: {}; f = {:.12}, |grad f| = {:.3e}{}",
        args.load.as_ref().map_or(
            format!(
                "solved ({}, seed {})",
                spec.optimizer.short_name(),
                spec.seed
            ),
            |l| { format!("loaded from {}", l.display()) }
        ),
        r.objective,
        r.grad_norm,
        r.global_min_objective
            .map(|f| format!(", f - f* = {:.3e}", r.objective - f))
            .unwrap_or_default()
    );
    let h = &r.hessian;
    println!(
        "Hessian ({}, dim {}): assembled in {:.3} s, eigensolver {:.3} s",
        h.method, h.dim, h.seconds_assemble, h.seconds_eigen
    );
    if let Some(c) = h.collapse_distance {
        println!(
            "class decomposition at the collapsed point x_bar, |x - x_bar| = {c:.1e} (spectrum exact at x_bar)"
        );
    }
    println!("lambda_min         {:.6e}", r.lambda_min);
    println!("lambda_max         {:.6e}", r.lambda_max);
    if let Some((a, b)) = h.lanczos_residuals {
        println!("Lanczos residuals  {a:.2e} (min), {b:.2e} (max): an eigenvalue lies within each");
    }
    match (r.negative_count, h.abs_tol) {
        (Some(neg), Some(tol)) => {
            println!(
                "negative count     {neg}  (lambda < -{tol:.1e} = -tau*max|lambda|, tau = {:.0e})",
                h.rel_tol
            );
            println!(
                "near-zero count    {}  (largest |lambda| inside {:.1e}, smallest outside {:.1e})",
                opt_usize(r.near_zero_count),
                h.largest_near_zero_abs.unwrap_or(0.0),
                h.smallest_nonzero_abs.unwrap_or(f64::NAN)
            );
        }
        _ => println!("negative / near-zero counts: n/a (Lanczos gives extreme eigenvalues only)"),
    }
    match r.orbit_dim {
        Some(o) => println!(
            "orbit dimension    {o} = d(d-1)/2 - (d-r)(d-r-1)/2{}  => {}",
            if r.bias_null_dim > 0 {
                " (+1 bias shift, lambda_b = 0)"
            } else {
                ""
            },
            match r.orbit_agrees {
                Some(true) => "agrees with the near-zero count",
                Some(false) => "DOES NOT agree with the near-zero count",
                None => "no count to compare (Lanczos)",
            }
        ),
        None => println!("orbit dimension    n/a (no closed-form minimizer for this problem)"),
    }
    Ok(())
}

/// Arguments of `ufm saddles`.
#[derive(Args, Debug)]
pub struct SaddlesArgs {
    #[command(flatten)]
    pub problem: ProblemArgs,
    /// Solver for the escape test (and for the reference optimum without a closed form).
    #[command(flatten)]
    pub solver: SolverArgs,
    #[command(flatten)]
    pub spectrum: SpectrumArgs,
    /// Step length along the unit eigenvector of lambda_min in the escape test.
    #[arg(long, default_value_t = 0.1)]
    pub escape_step: f64,
    /// Also write the JSON list to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the JSON list.
    #[arg(long)]
    pub json: bool,
}

pub fn run_saddles(args: SaddlesArgs) -> Result<()> {
    let p = args.problem.config()?.build()?;
    let spec = args.solver.spec()?;
    let hopts = args.spectrum.options(spec.seed);
    let reference = reference_optimum(&p, &spec, 5)?;
    let cat = catalogue(&p, spec.seed)?;
    let mut reports = Vec::new();
    for cp in &cat {
        if cp.grad_norm > 1e-9 {
            bail!(
                "{} could not be certified: |grad f| = {:.2e} > 1e-9 (Newton did not converge)",
                cp.kind,
                cp.grad_norm
            );
        }
        reports.push(analyse_saddle(
            &p,
            cp,
            &hopts,
            &spec,
            args.escape_step,
            reference,
        )?);
    }
    let json = serde_json::to_string_pretty(&reports)?;
    if let Some(path) = &args.out {
        ufm::io::write_atomic(path, json.as_bytes())?;
    }
    if args.json {
        println!("{json}");
        return Ok(());
    }
    println!("UFM: {}", describe(&p));
    println!("reference f* = {:.12} ({})", reference.0, reference.1);
    println!(
        "{:<8} {:>14} {:>9} {:>13} {:>13} {:>5} {:>6} {:>7} {:>11}",
        "point",
        "f",
        "|grad|",
        "lambda_min",
        "closed form",
        "#neg",
        "#zero",
        "rounds",
        "escape gap"
    );
    for r in &reports {
        println!(
            "{:<8} {:>14.10} {:>9.1e} {:>13.6e} {:>13} {:>5} {:>6} {:>7} {:>11.2e}",
            r.kind,
            r.objective,
            r.grad_norm,
            r.lambda_min,
            r.lambda_min_closed_form
                .map_or("-".into(), |v| format!("{v:.6e}")),
            r.negative_count.map_or("-".into(), |v| v.to_string()),
            r.near_zero_count.map_or("-".into(), |v| v.to_string()),
            r.escape.rounds.len(),
            r.escape_gap
        );
    }
    let t = p.n_classes() as f64
        * (p.balanced_size().unwrap_or(0) as f64 * p.lambda_w() * p.lambda_h()).sqrt();
    if p.balanced_size().is_some() && t >= 1.0 {
        println!("note: K sqrt(n lW lH) = {t:.3} >= 1, so the origin is the global minimizer here, not a saddle");
    }
    Ok(())
}

/// Arguments of `ufm landscape`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LandscapeArgs {
    #[command(subcommand)]
    pub action: Option<LandscapeAction>,
    #[command(flatten)]
    pub sweep: SweepArgs,
}

#[derive(Subcommand, Debug)]
pub enum LandscapeAction {
    /// Merge shard files (trials-shard-I-of-N.json) into trials + summary.
    Merge(MergeArgs),
    /// Regenerate the landscape figures (convergence, spectra, success heatmap) into a folder.
    Figures(FiguresArgs),
}

/// The sweep flags.
#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub problem: ProblemArgs,
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Feature dimensions d (default: K-2, K-1, K, K+2, 2K, i.e. below, at and above K-1).
    #[arg(long, value_delimiter = ',')]
    pub dims: Option<Vec<usize>>,
    /// Weight decays lambda = lambda_W = lambda_H (default: --lambda-w); lambda_b stays --lambda-b.
    #[arg(long, value_delimiter = ',')]
    pub lambdas: Option<Vec<f64>>,
    /// Optimizers (default: --optimizer), e.g. gd,lbfgs,newton.
    #[arg(long, value_delimiter = ',')]
    pub optimizers: Option<Vec<String>>,
    /// Trials per cell (seeds seed, seed+1, ...).
    #[arg(long, default_value_t = 8)]
    pub trials: usize,
    /// Relative gap tolerance for success: f - f* <= gap_tol * max(1, |f*|).
    #[arg(long, default_value_t = 1e-8)]
    pub gap_tol: f64,
    /// Run shard I of N (jobs j = I mod N), e.g. --shard 0/4; merge with `ufm landscape merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Output folder.
    #[arg(long, default_value = "landscape-out")]
    pub out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Shard files (.json) written by `ufm landscape --shard I/N`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output folder for trials.{csv,json} and summary.{csv,json}.
    #[arg(long, default_value = "landscape-out")]
    pub out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FiguresArgs {
    /// Output folder.
    #[arg(long, default_value = "paper_figs")]
    pub out: PathBuf,
    /// Only redraw the pictures from the data already in the folder.
    #[arg(long)]
    pub replot: bool,
    /// Trials per cell of the heatmap sweep.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
}

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .with_context(|| format!("--shard: expected I/N such as 0/4, got `{s}`"))?;
    let (i, n): (usize, usize) = (
        i.trim()
            .parse()
            .with_context(|| format!("--shard: bad index in `{s}`"))?,
        n.trim()
            .parse()
            .with_context(|| format!("--shard: bad count in `{s}`"))?,
    );
    if n == 0 || i >= n {
        bail!("--shard: need 0 <= I < N, got {i}/{n}");
    }
    Ok((i, n))
}

fn progress_printer(label: &'static str) -> impl Fn(usize, usize) + Sync {
    let t0 = Instant::now();
    move |done, total| {
        let step = (total / 20).max(1);
        if done % step == 0 || done == total {
            eprintln!(
                "[{label}] {done}/{total} trials ({:.0}%), {:.1} s",
                100.0 * done as f64 / total as f64,
                t0.elapsed().as_secs_f64()
            );
        }
    }
}

fn print_summary(cells: &[CellSummary], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(cells)?);
        return Ok(());
    }
    println!(
        "{:>4} {:>9} {:<16} {:>8} {:>10} {:>9} {:>10} {:>10}  reference",
        "d", "lambda", "optimizer", "success", "fraction", "med.iter", "med.sec", "max gap"
    );
    for c in cells {
        println!(
            "{:>4} {:>9.1e} {:<16} {:>4}/{:<3} {:>10.2} {:>9.0} {:>10.2e} {:>10.2e}  {}",
            c.d,
            c.lambda,
            c.optimizer,
            c.successes,
            c.trials,
            c.success_fraction,
            c.median_iterations,
            c.median_seconds,
            c.max_gap,
            c.reference_source
        );
    }
    Ok(())
}

fn sweep_spec(a: &SweepArgs) -> Result<SweepSpec> {
    let base = a.problem.config()?;
    let solver = a.solver.spec()?;
    let k = base.class_sizes.len();
    if k < 2 {
        bail!("invalid value for `classes`: need at least 2 classes, got {k}");
    }
    let dims = a.dims.clone().unwrap_or_else(|| {
        let mut v: Vec<usize> = [k - 2, k - 1, k, k.saturating_add(2), k.saturating_mul(2)]
            .into_iter()
            .filter(|&d| d >= 1)
            .collect();
        v.dedup();
        v
    });
    let optimizers = match &a.optimizers {
        Some(names) => names
            .iter()
            .map(|n| OptimizerSpec::parse(n.trim(), a.solver.lr, a.solver.history_size))
            .collect::<ufm::Result<Vec<_>>>()?,
        None => vec![solver.optimizer],
    };
    Ok(SweepSpec {
        lambdas: a.lambdas.clone().unwrap_or(vec![base.lambda_w]),
        base,
        dims,
        optimizers,
        trials: a.trials,
        seed: solver.seed,
        init_scale: solver.init_scale,
        tol: solver.tol,
        max_iter: solver.max_iter,
        time_limit: solver.time_limit,
        gap_tol: a.gap_tol,
    })
}

pub fn run_landscape(args: LandscapeArgs) -> Result<()> {
    match args.action {
        Some(LandscapeAction::Merge(m)) => run_merge(m),
        Some(LandscapeAction::Figures(f)) => run_figures(f),
        None => run_sweep_cmd(args.sweep),
    }
}

fn run_sweep_cmd(a: SweepArgs) -> Result<()> {
    let spec = sweep_spec(&a)?;
    let (i, n) = match &a.shard {
        Some(s) => parse_shard(s)?,
        None => (0, 1),
    };
    eprintln!(
        "[landscape] {} jobs in the sweep (dims {:?}, lambdas {:?}, {} optimizers, {} trials, seed {}); shard {i}/{n}",
        spec.n_jobs(),
        spec.dims,
        spec.lambdas,
        spec.optimizers.len(),
        spec.trials,
        spec.seed
    );
    let out = run_sweep(&spec, i, n, &progress_printer("landscape"))?;
    if n > 1 {
        let stem = a.out.join(format!("trials-shard-{i}-of-{n}"));
        write_shard(&stem, &out)?;
        eprintln!(
            "[landscape] wrote {}; merge all shards with `ufm landscape merge {}/trials-shard-*-of-{n}.json --out DIR`",
            stem.with_extension("json").display(),
            a.out.display()
        );
        return Ok(());
    }
    write_shard(&a.out.join("trials"), &out)?;
    let cells = summarize(&spec, &out.rows);
    write_summary(&a.out, &spec, &cells)?;
    eprintln!(
        "[landscape] wrote trials.{{csv,json}} and summary.{{csv,json}} in {}",
        a.out.display()
    );
    print_summary(&cells, a.json)
}

fn run_merge(m: MergeArgs) -> Result<()> {
    let parts = m
        .files
        .iter()
        .map(|f| read_shard(f))
        .collect::<ufm::Result<Vec<_>>>()?;
    let merged = merge_shards(parts)?;
    write_shard(&m.out.join("trials"), &merged)?;
    let cells = summarize(&merged.spec, &merged.rows);
    write_summary(&m.out, &merged.spec, &cells)?;
    eprintln!(
        "[landscape merge] {} trials from {} files; wrote trials and summary in {}",
        merged.rows.len(),
        m.files.len(),
        m.out.display()
    );
    print_summary(&cells, m.json)
}

fn run_figures(f: FiguresArgs) -> Result<()> {
    use ufm::landscape::figures::*;
    use ufm::ufm::UfmConfig;
    let dir = &f.out;
    if f.replot {
        for png in [
            plot_convergence(dir)?,
            plot_spectra(dir)?,
            plot_heatmap(&dir.join("summary.csv"), &dir.join("success_heatmap"))?,
        ] {
            eprintln!("[figures] redrew {}", png.display());
        }
        return Ok(());
    }
    let conv = UfmConfig::balanced(4, 10, 8)
        .lambdas(5e-3, 5e-3, 5e-3)
        .build()?;
    eprintln!("[figures] convergence: {}", describe(&conv));
    let png = convergence_figure(dir, &conv, 0, 1.0)?;
    eprintln!("[figures] wrote {}", png.display());
    let sp = UfmConfig::balanced(4, 5, 5)
        .lambdas(5e-3, 5e-3, 5e-3)
        .build()?;
    eprintln!("[figures] spectra: {}", describe(&sp));
    let png = spectra_figure(dir, &sp, 0)?;
    eprintln!("[figures] wrote {}", png.display());
    let spec = SweepSpec {
        base: UfmConfig::balanced(8, 4, 8).lambdas(1e-3, 1e-3, 1e-3),
        dims: vec![2, 3, 5, 6, 7, 8, 10, 16],
        lambdas: vec![1e-3, 5e-3, 2e-2, 5e-2],
        optimizers: vec![
            OptimizerSpec::Gd { lr: 1.0 },
            OptimizerSpec::Lbfgs { memory: 10 },
            OptimizerSpec::Newton {
                radius: 1.0,
                max_cg: 500,
            },
        ],
        trials: f.trials,
        seed: 0,
        init_scale: 1.0,
        tol: 1e-9,
        max_iter: 50_000,
        time_limit: None,
        gap_tol: 1e-6,
    };
    let png = heatmap_figure(dir, &spec, &progress_printer("figures: sweep"))?;
    eprintln!("[figures] wrote {}", png.display());
    Ok(())
}
