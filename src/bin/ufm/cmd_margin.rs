//! `ufm margin`: one-vs-rest margins (generalized neural collapse, K > d+1) of a classifier
//! or of a named spherical code.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use ufm::geometry::{margins, reference_code, Code, MarginOptions, MarginReport};

/// Arguments of `ufm margin`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[command(
    after_help = "The margin of class k is the distance from w_k to the convex hull of the \
other classes (Jiang et al., arXiv 2310.05351), computed exactly by Wolfe's minimum-norm-point \
algorithm and certified by the Frank-Wolfe duality gap and a separating hyperplane.\n\
Examples:\n  ufm margin --config icosahedron\n  ufm margin --config e8 --json\n  \
ufm margin --weights W.npy --per-class\n  ufm solve --classes 12 --dim 3 --save s.npz && ufm margin --weights s.npz"
)]
pub struct MarginArgs {
    #[command(subcommand)]
    pub sub: Option<MarginSub>,
    /// Classifier W (K x d, one row per class) as .npy, or an .npz holding `W` (as written by
    /// `ufm solve --save` and `ufm sphere --save`).
    #[arg(
        long,
        value_name = "W.npy",
        conflicts_with = "config",
        required_unless_present = "config"
    )]
    pub weights: Option<PathBuf>,
    /// A named configuration: simplex:K, polygon:K, cross:d, icosahedron, e8, higman-sims, mclaughlin.
    #[arg(long)]
    pub config: Option<String>,
    /// Use the rows as given instead of scaling them to unit norm first.
    #[arg(long)]
    pub no_normalize: bool,
    /// Stopping tolerance of Wolfe's algorithm (relative to the largest squared point norm).
    #[arg(long, default_value_t = 1e-14)]
    pub tol: f64,
    /// Print (and put in the JSON) every class's margin, certificate and support.
    #[arg(long)]
    pub per_class: bool,
    /// Write the rows of the --config configuration to FILE.npy.
    #[arg(long, value_name = "FILE.npy", requires = "config")]
    pub save: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum MarginSub {
    /// The normalized UFM at the (K, d) of each code (one sample per class): the code as a
    /// start against random starts; writes STEM.csv and STEM.json.
    Table(TableArgs),
}

/// Arguments of `ufm margin table`.
#[derive(Args, Debug)]
pub struct TableArgs {
    /// Output stem.
    #[arg(long, default_value = "paper_figs/gnc_codes")]
    pub out: PathBuf,
    /// Codes to study.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "icosahedron,e8,higman-sims,mclaughlin"
    )]
    pub codes: Vec<String>,
    /// Temperature tau of the normalized UFM.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub tau: f64,
    /// Random starts per code.
    #[arg(long, default_value_t = 4)]
    pub starts: usize,
    /// Seed of the first random start.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximum trust-region iterations per start.
    #[arg(long, default_value_t = 300)]
    pub max_iter: usize,
}

fn table(t: TableArgs) -> Result<()> {
    let opts = ufm::sphere::RtrOptions {
        max_iter: t.max_iter,
        ..Default::default()
    };
    let mut studies = Vec::new();
    let mut csv = String::from(
        "code,K,d,tau,code_margin,code_objective,code_grad_norm,start_seed,objective,grad_norm,converged,min_margin,margin_ratio,max_cosine\n",
    );
    println!("code            K    d  tau   margin     g(code)       seed  g(start)      min margin  ratio");
    for name in &t.codes {
        let code: Code = name.parse()?;
        let s = ufm::sphere::code_study(code, t.tau, t.starts, t.seed, &opts)?;
        for r in &s.starts {
            csv.push_str(&format!(
                "{},{},{},{},{:.17e},{:.17e},{:.3e},{},{:.17e},{:.3e},{},{:.17e},{:.17e},{:.17e}\n",
                s.code,
                s.n_classes,
                s.dim,
                s.tau,
                s.code_margin,
                s.code_objective,
                s.code_grad_norm,
                r.seed,
                r.objective,
                r.grad_norm,
                r.converged,
                r.min_margin,
                r.min_margin / s.code_margin,
                r.max_cosine
            ));
            println!(
                "{:<14} {:4} {:3} {:4} {:.7} {:.6e}  {:5}  {:.6e}  {:.7}  {:.6}",
                s.code,
                s.n_classes,
                s.dim,
                s.tau,
                s.code_margin,
                s.code_objective,
                r.seed,
                r.objective,
                r.min_margin,
                r.min_margin / s.code_margin
            );
        }
        studies.push(s);
    }
    let csv_path = t.out.with_extension("csv");
    let json_path = t.out.with_extension("json");
    ufm::io::write_atomic(&csv_path, csv.as_bytes())?;
    ufm::io::write_atomic(
        &json_path,
        serde_json::to_string_pretty(&studies)?.as_bytes(),
    )?;
    println!(
        "data written to {} and {}",
        csv_path.display(),
        json_path.display()
    );
    Ok(())
}

/// A closed-form or best-known value to compare with.
#[derive(Serialize)]
struct Reference {
    code: String,
    margin: f64,
    max_cosine: f64,
    source: &'static str,
}

#[derive(Serialize)]
struct Output<'a> {
    input: String,
    report: &'a MarginReport,
    /// The closed form of the --config configuration.
    closed_form: Option<Reference>,
    /// The code of `ufm::geometry::codes` with the same (K, d), if any.
    reference: Option<Reference>,
}

fn reference(c: Code) -> Reference {
    Reference {
        code: c.to_string(),
        margin: c.margin(),
        max_cosine: c.max_cosine(),
        source: c.source(),
    }
}

/// Reads W from .npy or from an .npz bundle's `W`.
pub fn read_weights(path: &Path) -> Result<ndarray::Array2<f64>> {
    let is_npz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz") || e.eq_ignore_ascii_case("safetensors"));
    if is_npz {
        let b = ufm::features::open_bundle(path)?;
        match b.w {
            Some(w) => Ok(w),
            None => bail!("{} holds no classifier array `W`", path.display()),
        }
    } else {
        Ok(ufm::features::read_matrix(path)?)
    }
}

pub fn run(args: MarginArgs) -> Result<()> {
    if let Some(MarginSub::Table(t)) = args.sub {
        return table(t);
    }
    let opts = MarginOptions {
        tol: args.tol,
        ..MarginOptions::default()
    };
    let (input, w, code) = match (&args.config, &args.weights) {
        (Some(c), _) => {
            let code: Code = c.parse()?;
            (code.to_string(), code.build()?, Some(code))
        }
        (None, Some(p)) => (
            p.display().to_string(),
            read_weights(p).with_context(|| format!("reading {}", p.display()))?,
            None,
        ),
        (None, None) => bail!("give --weights W.npy or --config NAME"),
    };
    if let (Some(path), Some(_)) = (&args.save, &code) {
        let wc = w.clone();
        ufm::io::write_atomic_with(path, |f| {
            use ndarray_npy::WriteNpyExt;
            wc.write_npy(f)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })?;
    }
    let mut report = margins(w.view(), !args.no_normalize, &opts)?;
    let (k, d) = (report.n_classes, report.dim);
    let closed_form = code.filter(|_| !args.no_normalize).map(reference);
    let reference = reference_code(k, d).map(reference);
    if args.json {
        if !args.per_class {
            report.classes.clear();
        }
        let out = Output {
            input,
            report: &report,
            closed_form,
            reference,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{input}: K={k} d={d}{}, rows {}",
        if k > d + 1 {
            " (K > d+1: generalized NC regime)"
        } else {
            ""
        },
        if report.normalized {
            "normalised to unit norm"
        } else {
            "as given"
        }
    );
    println!(
        "min margin      {:.12}  (class {}), certified >= {:.12}",
        report.min_margin, report.argmin_class, report.min_margin_lower_bound
    );
    println!(
        "mean margin     {:.12}   max {:.12}",
        report.mean_margin, report.max_margin
    );
    println!(
        "max FW gap      {:.3e}  (bounds the error of m_k^2)",
        report.max_fw_gap
    );
    if let Some(c) = report.max_cosine {
        println!(
            "max cosine      {c:.12}  (Tammes objective), min pairwise distance {:.12}",
            report.min_pairwise_distance
        );
    }
    if let Some(r) = &closed_form {
        println!(
            "closed form     {:.12}  (|min - closed form| = {:.1e}; max cosine {:.12})",
            r.margin,
            (report.min_margin - r.margin).abs(),
            r.max_cosine
        );
    } else if let Some(r) = &reference {
        println!(
            "reference       {} has margin {:.12}: min margin / reference = {:.6} ({})",
            r.code,
            r.margin,
            report.min_margin / r.margin,
            r.source
        );
    }
    if args.per_class {
        println!("class      margin    lower bound   FW gap   support");
        for c in &report.classes {
            println!(
                "{:5}  {:.10}  {:.10}  {:.1e}  {:?}",
                c.class, c.margin, c.lower_bound, c.fw_gap, c.support
            );
        }
    }
    Ok(())
}

/// Margins of a UFM solution's normalised classifier when $K>d+1$ (per-class details dropped).
pub fn ufm_margins_if_many_classes(
    p: &ufm::ufm::UfmProblem,
    x: &[f64],
) -> Result<Option<MarginReport>> {
    if p.n_classes() <= p.feature_dim() + 1 {
        return Ok(None);
    }
    let mut m = ufm::geometry::margin::ufm_margins(p, x, &MarginOptions::default())?;
    m.classes.clear();
    Ok(Some(m))
}

/// One summary line: min/mean margin, max cosine and the reference code's margin.
pub fn margin_line(m: &MarginReport) -> String {
    let mut s = format!(
        "margins (K > d+1) min {:.9}, mean {:.9}, max cosine {:.9}",
        m.min_margin,
        m.mean_margin,
        m.max_cosine.unwrap_or(f64::NAN)
    );
    if let Some(c) = reference_code(m.n_classes, m.dim) {
        s.push_str(&format!(
            "; {c} has margin {:.9} (ratio {:.6})",
            c.margin(),
            m.min_margin / c.margin()
        ));
    }
    s
}
