//! `ufm sphere`: the normalized UFM (unit features and classifiers, temperature tau) solved by
//! Riemannian trust region, certified against the closed form and the Riemannian Hessian.

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use ufm::geometry::{margins, reference_code, MarginOptions, MarginReport};
use ufm::sphere::{
    hessian_spectrum, riemannian_trust_region, RtrOptions, RtrReport, SpectrumSummary,
    SphereProblem,
};

/// Arguments of `ufm sphere`.
#[derive(Args, Debug)]
#[command(
    after_help = "Minimises (1/N) sum_i CE(tau W h_i, y_i) over unit rows w_k and unit \
features h_i (Yaras et al., arXiv 2209.09211). For balanced classes and d >= K-1 the optimum is \
log(1 + (K-1) exp(-tau K/(K-1))); for K > d+1 the classifier's one-vs-rest margins are reported.\n\
Examples:\n  ufm sphere --classes 4 --dim 5 --per-class 3 --tau 5 --hessian --saddle\n  \
ufm sphere --classes 12 --dim 3 --per-class 1 --tau 30 --starts 8"
)]
pub struct SphereArgs {
    /// Number of classes K.
    #[arg(long, default_value_t = 4)]
    pub classes: usize,
    /// Feature dimension d (>= 2).
    #[arg(long, default_value_t = 5)]
    pub dim: usize,
    /// Samples per class n.
    #[arg(long, default_value_t = 3)]
    pub per_class: usize,
    /// Per-class sizes (overrides --classes and --per-class).
    #[arg(long, value_delimiter = ',')]
    pub class_sizes: Option<Vec<usize>>,
    /// Temperature tau (logits are tau w_k^T h_i).
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub tau: f64,
    /// Seed of the first random start (start s uses seed + s).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start 0 from a named code (simplex:K, icosahedron, e8, higman-sims, mclaughlin, ...)
    /// with h_i = w_{y_i}, instead of a random point.
    #[arg(long, value_name = "CONFIG")]
    pub init: Option<String>,
    /// Number of random starts; the best point is reported.
    #[arg(long, default_value_t = 1)]
    pub starts: usize,
    /// Stop when the Riemannian gradient norm is at most this.
    #[arg(long, default_value_t = 1e-10)]
    pub tol: f64,
    /// Maximum trust-region iterations per start.
    #[arg(long, default_value_t = 1000)]
    pub max_iter: usize,
    /// Also compute the full Riemannian Hessian spectrum at the solution (dimension (K+N)(d-1)).
    #[arg(long)]
    pub hessian: bool,
    /// Also certify the constructed critical point W = ETF, h_i = -w_{y_i} (a strict saddle).
    #[arg(long)]
    pub saddle: bool,
    /// Save the solution (W, H, labels) to FILE.npz.
    #[arg(long, value_name = "FILE.npz")]
    pub save: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Saddle {
    objective: f64,
    grad_norm: f64,
    spectrum: SpectrumSummary,
}

#[derive(Serialize)]
struct Output {
    n_classes: usize,
    feature_dim: usize,
    n_samples: usize,
    tau: f64,
    objective: f64,
    global_min_objective: Option<f64>,
    gap: Option<f64>,
    is_global_min: Option<bool>,
    best_start: usize,
    starts: Vec<RtrReport>,
    rotation_orbit_dim: usize,
    spectrum: Option<SpectrumSummary>,
    saddle: Option<Saddle>,
    margins: Option<MarginReport>,
    reference_margin: Option<f64>,
}

pub fn run(args: SphereArgs) -> Result<()> {
    let sizes = args
        .class_sizes
        .clone()
        .unwrap_or_else(|| vec![args.per_class; args.classes]);
    let p = SphereProblem::new(sizes, args.dim, args.tau)?;
    let opts = RtrOptions {
        grad_tol: args.tol,
        max_iter: args.max_iter,
        ..RtrOptions::default()
    };
    let mut best_x: Option<Vec<f64>> = None;
    let mut bi = 0;
    let mut reports: Vec<RtrReport> = Vec::new();
    for s in 0..args.starts.max(1) {
        let mut x = match (&args.init, s) {
            (Some(c), 0) => {
                let code: ufm::geometry::Code = c.parse()?;
                p.collapsed_point(code.build()?.view())?
            }
            _ => p.random_point(args.seed + s as u64),
        };
        let r = riemannian_trust_region(&p, &mut x, &opts)?;
        if best_x.is_none() || r.objective < reports[bi].objective {
            bi = reports.len();
            best_x = Some(x);
        }
        reports.push(r);
    }
    let x = best_x.expect("at least one start");
    let f = reports[bi].objective;
    let fstar = p.global_minimum();
    let gap = fstar.map(|fs| f - fs);
    let is_min = gap.map(|g| g.abs() <= 1e-8 * fstar.unwrap_or(1.0).abs().max(1e-300));
    let spectrum = if args.hessian {
        Some(hessian_spectrum(&p, &x, 1e-8)?)
    } else {
        None
    };
    let saddle = if args.saddle {
        let xs = p.antipodal_point(args.seed)?;
        let (fs, g, _) = p.riemannian_grad(&xs);
        Some(Saddle {
            objective: fs,
            grad_norm: g.iter().map(|v| v * v).sum::<f64>().sqrt(),
            spectrum: hessian_spectrum(&p, &xs, 1e-8)?,
        })
    } else {
        None
    };
    let (k, d) = (p.n_classes(), p.feature_dim());
    let margin_report = if k > d + 1 {
        let (w, _) = p.split(&x);
        Some(margins(w, true, &MarginOptions::default())?)
    } else {
        None
    };
    let reference_margin = reference_code(k, d).map(|c| c.margin());
    if let Some(path) = &args.save {
        ufm::io::save_ufm_npz(path, p.ufm(), &x)?;
    }
    if args.json {
        let mut m = margin_report;
        if let Some(m) = m.as_mut() {
            m.classes.clear();
        }
        let out = Output {
            n_classes: k,
            feature_dim: d,
            n_samples: p.n_samples(),
            tau: p.tau(),
            objective: f,
            global_min_objective: fstar,
            gap,
            is_global_min: is_min,
            best_start: bi,
            starts: reports,
            rotation_orbit_dim: p.rotation_orbit_dim(),
            spectrum,
            saddle,
            margins: m,
            reference_margin,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "normalized UFM: K={k} d={d} N={} tau={}, unit rows of W and unit features (manifold dimension {})",
        p.n_samples(),
        p.tau(),
        p.manifold_dim()
    );
    let r = &reports[bi];
    println!(
        "Riemannian trust region (best of {} starts, seed {}): {} iterations, {} Hessian-vector products, |grad| = {:.3e}, {}",
        reports.len(),
        args.seed + bi as u64,
        r.iterations,
        r.hvps,
        r.grad_norm,
        if r.converged { "converged" } else { "NOT converged" }
    );
    println!("objective          {f:.15}");
    match (fstar, gap, is_min) {
        (Some(fs), Some(g), Some(ok)) => {
            println!(
                "global minimum     {fs:.15}  log(1 + (K-1) exp(-tau K/(K-1))) (Yaras et al. 2022)"
            );
            println!(
                "gap g - g*         {g:.3e}  => {}",
                if ok {
                    "global minimum reached"
                } else {
                    "NOT at the global minimum"
                }
            );
        }
        _ => println!("global minimum     no closed form (imbalanced classes or d < K-1)"),
    }
    if let Some(s) = &spectrum {
        println!(
            "Riemannian Hessian lambda_min {:.3e}, lambda_max {:.3e}, {} negative, {} zero (|l| <= 1e-8 max) vs rotation orbit dimension {}",
            s.lambda_min,
            s.lambda_max,
            s.n_negative,
            s.n_zero,
            p.rotation_orbit_dim()
        );
    }
    if let Some(s) = &saddle {
        println!(
            "saddle h_i = -w_y: g = {:.9}, |grad| = {:.1e}, lambda_min = {:.4e} ({} negative) => {}",
            s.objective,
            s.grad_norm,
            s.spectrum.lambda_min,
            s.spectrum.n_negative,
            if s.grad_norm < 1e-9 && s.spectrum.lambda_min < 0.0 { "strict saddle" } else { "not a certified strict saddle" }
        );
    }
    if let Some(m) = &margin_report {
        print!(
            "margins (K > d+1) min {:.9}, mean {:.9}, max cosine {:.9}",
            m.min_margin,
            m.mean_margin,
            m.max_cosine.unwrap_or(f64::NAN)
        );
        match reference_margin {
            Some(rm) => println!(
                "; reference code margin {rm:.9} (ratio {:.6})",
                m.min_margin / rm
            ),
            None => println!(),
        }
    }
    if let Some(path) = &args.save {
        println!("solution saved to {}", path.display());
    }
    Ok(())
}
