//! `ufm seli` and `ufm seli figure`: distance of the certified UFM optimum to the SELI
//! geometry of imbalanced classes (Thrampoulidis et al., arXiv 2208.05512).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use ufm::certify::ConvexOptions;
use ufm::seli::{self, SeliSpec};

/// Arguments of `ufm seli`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Solves the CE UFM (lambda_W = lambda_H = lambda, no bias unless --bias) \
to a certified global optimum through the convex reformulation (as `ufm certify`), factors it in \
balance, polishes it by Newton, and prints its normalised distances to the SELI geometry: \
W W^T vs (Zhat Zhat^T)^(1/2), the class-mean Gram vs D^(-1/2)(D^(1/2) C D^(1/2))^(1/2) D^(-1/2), \
the class-mean logits W M vs C = I - 11^T/K.\n\
Examples:\n  ufm seli --class-sizes 100,100,10,10 --lambda 1e-5\n  ufm seli figure --out paper_figs/seli"
)]
pub struct SeliArgs {
    #[command(subcommand)]
    pub sub: Option<SeliSub>,
    /// Class sizes, e.g. 100,100,10,10.
    #[arg(long, value_delimiter = ',', default_value = "100,100,10,10")]
    pub class_sizes: Vec<usize>,
    /// lambda = lambda_W = lambda_H.
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    pub lambda: f64,
    /// Add an unregularised bias.
    #[arg(long)]
    pub bias: bool,
    /// Maximum FISTA iterations of the convex solve (its answer is then polished by Newton).
    #[arg(long, default_value_t = 20_000)]
    pub convex_max_iter: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum SeliSub {
    /// Sweep lambda for several imbalance ratios; write STEM.csv, STEM.png, STEM.svg.
    Figure(FigureArgs),
}

/// Arguments of `ufm seli figure`.
#[derive(Args, Debug)]
pub struct FigureArgs {
    /// Output stem.
    #[arg(long, default_value = "paper_figs/seli")]
    pub out: PathBuf,
    /// Redraw from an existing CSV instead of recomputing.
    #[arg(long, value_name = "FILE.csv")]
    pub from_csv: Option<PathBuf>,
    /// Imbalance ratios R (majority classes have R times the minority size).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub ratios: Vec<f64>,
    /// Number of classes K.
    #[arg(long, default_value_t = 4)]
    pub classes: usize,
    /// Number of minority classes (the last ones).
    #[arg(long, default_value_t = 2)]
    pub minor_classes: usize,
    /// Samples in a minority class.
    #[arg(long, default_value_t = 10)]
    pub minority_size: usize,
    /// Largest lambda of the log-spaced grid.
    #[arg(long, default_value_t = 1e-2)]
    pub lambda_max: f64,
    /// Smallest lambda.
    #[arg(long, default_value_t = 1e-12)]
    pub lambda_min: f64,
    /// Number of lambdas.
    #[arg(long, default_value_t = 11)]
    pub points: usize,
    /// Add an unregularised bias.
    #[arg(long)]
    pub bias: bool,
    /// Maximum FISTA iterations per instance.
    #[arg(long, default_value_t = 20_000)]
    pub convex_max_iter: usize,
}

fn convex(max_iter: usize) -> ConvexOptions {
    ConvexOptions {
        max_iter,
        ..ConvexOptions::default()
    }
}

pub fn run(args: SeliArgs) -> Result<()> {
    if let Some(SeliSub::Figure(f)) = args.sub {
        return figure(f);
    }
    let pt = seli::seli_point(
        &args.class_sizes,
        args.lambda,
        args.bias,
        &convex(args.convex_max_iter),
        1e-6,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&pt)?);
        return Ok(());
    }
    println!(
        "CE UFM, class sizes {:?}, lambda_W = lambda_H = {}, {}",
        pt.class_sizes,
        pt.lambda,
        if args.bias {
            "unregularised bias"
        } else {
            "no bias"
        }
    );
    println!(
        "certified optimum  f = {:.12}, lower bound {:.12}, gap {:.2e} (rank Z* = {}, |grad| = {:.1e} after {} FISTA + {} Newton iterations)",
        pt.objective,
        pt.lower_bound,
        pt.certified_gap,
        pt.rank,
        pt.grad_norm,
        pt.convex_iterations,
        pt.newton_iterations
    );
    let d = &pt.distance;
    println!(
        "distance to SELI   W W^T {:.4e}   class-mean Gram {:.4e}   logits W M {:.4e}",
        d.w, d.means, d.logits
    );
    println!("distance to ETF    W W^T {:.4e}", d.w_to_etf);
    Ok(())
}

fn figure(f: FigureArgs) -> Result<()> {
    let csv = f.out.with_extension("csv");
    let rows = match &f.from_csv {
        Some(path) => seli::read_csv(path)?,
        None => {
            if !(f.lambda_min > 0.0 && f.lambda_max >= f.lambda_min) {
                bail!(
                    "--lambda-min and --lambda-max must satisfy 0 < min <= max, got {} and {}",
                    f.lambda_min,
                    f.lambda_max
                );
            }
            let spec = SeliSpec {
                n_classes: f.classes,
                minor_classes: f.minor_classes,
                minority_size: f.minority_size,
                ratios: f.ratios.clone(),
                lambdas: ufm::certify::imbalance::log_grid(
                    f.lambda_max,
                    f.lambda_min,
                    f.points.max(2),
                ),
                bias: f.bias,
                convex: convex(f.convex_max_iter),
                ..SeliSpec::default()
            };
            let rows = seli::seli_sweep(&spec)?;
            seli::write_csv(&csv, &rows)?;
            println!("data written to {}", csv.display());
            rows
        }
    };
    println!("ratio  lambda     cert.gap   dist W      dist means  dist logits  W vs ETF");
    for r in &rows {
        println!(
            "{:5}  {:.2e}  {:.1e}  {:.4e}  {:.4e}  {:.4e}   {:.4e}",
            r.ratio, r.lambda, r.certified_gap, r.dist_w, r.dist_means, r.dist_logits, r.w_to_etf
        );
    }
    let (png, svg) = seli::plot(&f.out, &rows)?;
    println!("figure written to {} and {}", png.display(), svg.display());
    Ok(())
}
