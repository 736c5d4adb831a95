//! Data and figures for the deep UFMs (`ufm deep figures`): every figure is drawn from the
//! CSV written next to it.
//!
//! * `deep_relu_ratio.{csv,png,svg}`: $\mathcal L_{\rm SRG}/\mathcal L_{\rm DNC}$ against $r$
//!   ($K=\binom r2$) for $L=2,\dots,5$, all $\lambda$ equal, $n$ samples per class (the analogue
//!   of Súkeník et al. 2024, arXiv 2405.14468, Fig. 3 left; our SRG family is described in
//!   [`super::srg`]).
//! * `deep_relu_training.{csv,png,svg}`: the deep ReLU UFM loss along gradient descent from
//!   seeded random starts against $\mathcal L_{\rm DNC}$ and $\mathcal L_{\rm SRG}$ (the analogue
//!   of their Fig. 2, top left: $L=4$, $K=10$, $\lambda=0.004$, width 30, step 0.5), plus L-BFGS
//!   runs.
//! * `deep_linear_zero.{csv,png,svg}`: bias-free MSE deep linear UFM over a $\lambda$ sweep: the
//!   certified minimum ([`super::linear`]), the objective the "largest stationary root, never
//!   zero" rule reports, and the best of several solver runs.
//! * `deep_summary.json`: the headline numbers and the settings.

use super::linear;
use super::relu::dnc;
use super::srg::{self, SrgOptions, SrgSpec};
use super::{best_run, solve_from_random_starts, DeepUfmConfig, StartSpec};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::plot::{save_line_chart, save_panels, LineChart, Panel, Series};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Settings of `ufm deep figures`.
#[derive(Clone, Debug, Serialize)]
pub struct FigureSpec {
    /// Weight decay (all $\lambda$ equal) for the ReLU figures.
    pub lambda: f64,
    /// Samples per class $n$ for the ReLU figures.
    pub n_per_class: usize,
    /// Depths of the ratio figure.
    pub ratio_layers: Vec<usize>,
    /// $r$ values of the ratio figure.
    pub ratio_r: Vec<usize>,
    /// Depth of the training figure.
    pub train_layers: usize,
    /// $r$ of the training figure ($K=\binom r2$).
    pub train_r: usize,
    /// Width of every layer in the training figure.
    pub train_width: usize,
    /// Gradient-descent runs (seeds 0, 1, ...).
    pub gd_runs: usize,
    /// Step size of gradient descent.
    pub gd_lr: f64,
    /// Iterations per gradient-descent run.
    pub gd_iters: usize,
    /// L-BFGS runs (seeds 100, 101, ...).
    pub lbfgs_runs: usize,
    /// Iteration limit per L-BFGS run.
    pub lbfgs_iters: usize,
    /// Record the loss every this many iterations.
    pub trace_every: usize,
    /// Class sizes of the linear sweep.
    pub linear_sizes: Vec<usize>,
    /// Depth of the linear sweep.
    pub linear_layers: usize,
    /// Width of the linear sweep.
    pub linear_width: usize,
    /// $\lambda$ values of the linear sweep (all $\lambda$ equal).
    pub linear_lambdas: Vec<f64>,
    /// Solver starts per $\lambda$ in the linear sweep (L-BFGS, scales 0.5, 1, 2 in turn).
    pub linear_starts: usize,
    /// Search resolution of the SRG family.
    pub srg: SrgOptions,
}

impl Default for FigureSpec {
    fn default() -> Self {
        FigureSpec {
            lambda: 0.004,
            n_per_class: 1,
            ratio_layers: vec![2, 3, 4, 5],
            ratio_r: (3..=8).collect(),
            train_layers: 4,
            train_r: 5,
            train_width: 30,
            gd_runs: 5,
            gd_lr: 0.5,
            gd_iters: 50_000,
            lbfgs_runs: 5,
            lbfgs_iters: 20_000,
            trace_every: 100,
            linear_sizes: vec![20, 10, 5, 5],
            linear_layers: 3,
            linear_width: 8,
            linear_lambdas: log_grid(3e-3, 1.5e-1, 81),
            linear_starts: 6,
            srg: SrgOptions::default(),
        }
    }
}

impl FigureSpec {
    /// A much smaller run (for tests and a quick look).
    pub fn quick() -> Self {
        FigureSpec {
            ratio_layers: vec![2, 3, 4],
            ratio_r: vec![3, 4, 5],
            gd_runs: 1,
            gd_iters: 2_000,
            lbfgs_runs: 1,
            lbfgs_iters: 500,
            linear_lambdas: log_grid(1e-3, 1e-1, 5),
            linear_starts: 3,
            srg: SrgOptions {
                angles: 120,
                rho_grid: 61,
            },
            ..Self::default()
        }
    }
}

/// `n` log-spaced points from `a` to `b`.
pub fn log_grid(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n < 2 {
        return vec![a];
    }
    (0..n)
        .map(|i| (a.ln() + (b.ln() - a.ln()) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

/// One row of `deep_relu_ratio.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct RatioRow {
    /// $L$.
    pub layers: usize,
    /// $r$.
    pub r: usize,
    /// $K$.
    pub classes: usize,
    /// $\mathcal L_{\rm SRG}$.
    pub srg_loss: f64,
    /// $\mathcal L_{\rm DNC}$.
    pub dnc_loss: f64,
    /// Their ratio.
    pub ratio: f64,
    /// Entries of $\tilde M_L$ kept by the last ReLU.
    pub pattern: String,
}

/// $\mathcal L_{\rm SRG}/\mathcal L_{\rm DNC}$ for every $(L,r)$.
pub fn ratio_rows(spec: &FigureSpec) -> Result<Vec<RatioRow>> {
    let mut rows = Vec::new();
    for &l in &spec.ratio_layers {
        for &r in &spec.ratio_r {
            let s = SrgSpec::uniform(r, l, spec.n_per_class, spec.lambda);
            let opt = srg::optimise(&s, &spec.srg)?;
            let k = srg::n_classes_for(r);
            let p = DeepUfmConfig::new(vec![spec.n_per_class; k], l, k)
                .lambdas(spec.lambda, spec.lambda)
                .build()?;
            let d = dnc(&p)?;
            rows.push(RatioRow {
                layers: l,
                r,
                classes: k,
                srg_loss: opt.loss,
                dnc_loss: d.loss,
                ratio: opt.loss / d.loss,
                pattern: opt.pattern,
            });
        }
    }
    Ok(rows)
}

/// The training figure's data.
#[derive(Clone, Debug, Serialize)]
pub struct TrainingData {
    /// $\mathcal L_{\rm DNC}$.
    pub dnc_loss: f64,
    /// $\mathcal L_{\rm SRG}$.
    pub srg_loss: f64,
    /// `(optimizer, seed, iteration, loss)` rows.
    #[serde(skip)]
    pub rows: Vec<(String, u64, usize, f64)>,
    /// Final loss of every run, `(optimizer, seed, loss, gradient norm)`.
    pub finals: Vec<(String, u64, f64, f64)>,
    /// Numerical rank (relative tolerance $10^{-3}$) of the class means per layer at the best
    /// run, $A_0=H,\dots,A_{L-1}$.
    pub best_ranks: Vec<usize>,
}

/// Runs gradient descent and L-BFGS on the deep ReLU UFM of the training figure.
pub fn training_data(spec: &FigureSpec) -> Result<TrainingData> {
    let s = SrgSpec::uniform(
        spec.train_r,
        spec.train_layers,
        spec.n_per_class,
        spec.lambda,
    );
    let opt = srg::optimise(&s, &spec.srg)?;
    let p = srg::problem(&s, spec.train_width)?;
    let d = dnc(&p)?;
    let mut rows = Vec::new();
    let mut finals = Vec::new();
    let mut all = Vec::new();
    for (name, runs, iters, seed) in [
        ("gd", spec.gd_runs, spec.gd_iters, 0u64),
        ("lbfgs", spec.lbfgs_runs, spec.lbfgs_iters, 100u64),
    ] {
        if runs == 0 {
            continue;
        }
        let st = StartSpec {
            starts: runs,
            seed,
            init_scale: 1.0,
            optimizer: name.into(),
            lr: spec.gd_lr,
            max_iter: iters,
            tol: 1e-12,
            trace_every: Some(spec.trace_every),
        };
        for r in solve_from_random_starts(&p, &st)? {
            for &(it, f) in &r.trace {
                rows.push((name.to_string(), r.seed, it, f));
            }
            finals.push((name.to_string(), r.seed, r.objective, r.grad_norm));
            all.push(r);
        }
    }
    let best_ranks = match best_run(&all) {
        Some(b) => p
            .layer_nc(&all[b].x, 1e-3)?
            .iter()
            .map(|l| l.rank)
            .collect(),
        None => vec![],
    };
    Ok(TrainingData {
        dnc_loss: d.loss,
        srg_loss: opt.loss,
        rows,
        finals,
        best_ranks,
    })
}

/// One row of `deep_linear_zero.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct ZeroRow {
    /// $\lambda$ (all equal).
    pub lambda: f64,
    /// Certified minimum.
    pub certified: f64,
    /// What the largest-root rule reports.
    pub largest_root: f64,
    /// Best solver objective over the starts.
    pub solver_best: f64,
    /// How many starts reached the certified value (relative gap $\le10^{-8}$).
    pub solver_hits: usize,
    /// Starts.
    pub starts: usize,
    /// Classes at the zero solution in the certified optimum.
    pub zero_classes: usize,
    /// Classes whose stationary root loses to the zero solution.
    pub zero_beats_root: usize,
}

/// The linear sweep.
pub fn zero_rows(spec: &FigureSpec) -> Result<Vec<ZeroRow>> {
    let mut rows = Vec::new();
    for &lam in &spec.linear_lambdas {
        let p = DeepUfmConfig::new(
            spec.linear_sizes.clone(),
            spec.linear_layers,
            spec.linear_width,
        )
        .lambdas(lam, lam)
        .build()?;
        let c = linear::certify(&p)?;
        let mut best = f64::INFINITY;
        let mut hits = 0;
        for i in 0..spec.linear_starts {
            let st = StartSpec {
                starts: 1,
                seed: i as u64,
                init_scale: [0.5, 1.0, 2.0][i % 3],
                ..StartSpec::default()
            };
            let r = &solve_from_random_starts(&p, &st)?[0];
            best = best.min(r.objective);
            if r.objective - c.objective <= 1e-8 * c.objective {
                hits += 1;
            }
        }
        rows.push(ZeroRow {
            lambda: lam,
            certified: c.objective,
            largest_root: c.largest_root_objective,
            solver_best: best,
            solver_hits: hits,
            starts: spec.linear_starts,
            zero_classes: c.classes.iter().filter(|k| k.zero).count(),
            zero_beats_root: c.classes.iter().filter(|k| k.zero_beats_root).count(),
        });
    }
    Ok(rows)
}

fn csv_of<T: Serialize>(rows: &[T]) -> Result<String> {
    let mut out = String::new();
    let mut header_done = false;
    for r in rows {
        let v = serde_json::to_value(r)?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::Data("CSV row is not an object".into()))?;
        if !header_done {
            out.push_str(&obj.keys().cloned().collect::<Vec<_>>().join(","));
            out.push('\n');
            header_done = true;
        }
        let fields: Vec<String> = obj
            .values()
            .map(|x| match x {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => {
                    n.as_f64().map(fmt_num).unwrap_or_else(|| n.to_string())
                }
                other => other.to_string(),
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    Ok(out)
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.12e}")
    }
}

/// One CSV row, field by column name.
pub type CsvRow = BTreeMap<String, String>;

/// Parses a CSV written here: the header and the rows.
pub fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<CsvRow>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| Error::format(path, "empty CSV"))?
        .split(',')
        .map(|s| s.to_string())
        .collect();
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != header.len() {
            return Err(Error::format(
                path,
                format!(
                    "line {} has {} fields, the header {}",
                    i + 2,
                    f.len(),
                    header.len()
                ),
            ));
        }
        rows.push(
            header
                .iter()
                .cloned()
                .zip(f.iter().map(|s| s.to_string()))
                .collect(),
        );
    }
    Ok((header, rows))
}

fn num(row: &CsvRow, key: &str, path: &Path) -> Result<f64> {
    row.get(key)
        .ok_or_else(|| Error::format(path, format!("no column `{key}`")))?
        .parse::<f64>()
        .map_err(|e| Error::format(path, format!("column `{key}`: {e}")))
}

/// Draws `deep_relu_ratio.{png,svg}` from its CSV.
pub fn plot_ratio(csv: &Path) -> Result<(PathBuf, PathBuf)> {
    let (_, rows) = read_csv(csv)?;
    let mut by_l: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    let mut rs = Vec::new();
    for row in &rows {
        let l = num(row, "layers", csv)? as usize;
        let r = num(row, "r", csv)?;
        by_l.entry(l)
            .or_default()
            .push((r, num(row, "ratio", csv)?));
        rs.push(r);
    }
    let (lo, hi) = rs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &r| {
            (a.min(r), b.max(r))
        });
    let mut series: Vec<Series> = by_l
        .into_iter()
        .map(|(l, pts)| Series {
            name: format!("L = {l}"),
            points: pts,
        })
        .collect();
    series.push(Series {
        name: "DNC (ratio 1)".into(),
        points: vec![(lo, 1.0), (hi, 1.0)],
    });
    save_line_chart(
        &csv.with_extension(""),
        &LineChart {
            title: "SRG / DNC loss, deep ReLU UFM, K = r(r-1)/2".into(),
            x_label: "r".into(),
            y_label: "L_SRG / L_DNC".into(),
            log_y: false,
            series,
        },
    )
}

/// Draws `deep_relu_training.{png,svg}` from its CSV and the summary's DNC/SRG losses: one
/// panel per optimizer, loss on a linear axis (points above $1.25\,\mathcal L_{\rm DNC}$, the
/// initial transient, are left out of the picture but not of the CSV).
pub fn plot_training(csv: &Path, dnc_loss: f64, srg_loss: f64) -> Result<(PathBuf, PathBuf)> {
    let (_, rows) = read_csv(csv)?;
    let mut runs: BTreeMap<(String, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for row in &rows {
        let name = row
            .get("optimizer")
            .cloned()
            .ok_or_else(|| Error::format(csv, "no column `optimizer`"))?;
        let seed = num(row, "seed", csv)? as u64;
        let it = num(row, "iteration", csv)?;
        let f = num(row, "loss", csv)?;
        let pts = runs.entry((name, seed)).or_default();
        if f <= 1.25 * dnc_loss {
            pts.push((it, f));
        }
    }
    let mut panels = Vec::new();
    for (opt, title) in [
        ("gd", "gradient descent (step 0.5)"),
        ("lbfgs", "L-BFGS (memory 10)"),
    ] {
        let mut series: Vec<Series> = runs
            .iter()
            .filter(|((name, _), _)| name == opt)
            .map(|((_, seed), pts)| Series {
                name: format!("seed {seed}"),
                points: pts.clone(),
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let max_it = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0f64, f64::max);
        series.push(Series {
            name: format!("DNC {dnc_loss:.4}"),
            points: vec![(0.0, dnc_loss), (max_it, dnc_loss)],
        });
        series.push(Series {
            name: format!("SRG {srg_loss:.4}"),
            points: vec![(0.0, srg_loss), (max_it, srg_loss)],
        });
        panels.push(Panel::Lines(LineChart {
            title: title.into(),
            x_label: "iteration".into(),
            y_label: "loss".into(),
            log_y: false,
            series,
        }));
    }
    save_panels(
        &csv.with_extension(""),
        Some("Deep ReLU UFM from random starts vs the DNC and SRG losses"),
        &panels,
        2,
        (800, 600),
    )
}

/// Draws `deep_linear_zero.{png,svg}` from its CSV: the excess of the largest-root rule and of
/// the best solver run over the certified minimum, relative to it.
pub fn plot_zero(csv: &Path) -> Result<(PathBuf, PathBuf)> {
    let (_, rows) = read_csv(csv)?;
    let mut root = Vec::new();
    let mut solver = Vec::new();
    for row in &rows {
        let x = num(row, "lambda", csv)?.log10();
        let c = num(row, "certified", csv)?;
        root.push((x, (num(row, "largest_root", csv)? - c) / c));
        solver.push((x, (num(row, "solver_best", csv)? - c) / c));
    }
    save_line_chart(
        &csv.with_extension(""),
        &LineChart {
            title: "Deep linear UFM (MSE, no bias): excess over the certified minimum".into(),
            x_label: "log10 lambda".into(),
            y_label: "(f - f*) / f*".into(),
            log_y: false,
            series: vec![
                Series {
                    name: "largest stationary root, never 0".into(),
                    points: root,
                },
                Series {
                    name: "best solver run".into(),
                    points: solver,
                },
            ],
        },
    )
}

/// The summary written to `deep_summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The settings.
    pub spec: FigureSpec,
    /// The ratio rows.
    pub ratio: Vec<RatioRow>,
    /// The training runs (without the traces).
    pub training: TrainingData,
    /// The linear sweep.
    pub linear: Vec<ZeroRow>,
}

/// Computes everything, writes the CSVs and `deep_summary.json` under `dir`, then draws the
/// figures from the CSVs. Returns the written paths.
pub fn write_all(dir: &Path, spec: &FigureSpec) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let mut written = Vec::new();
    let ratio = ratio_rows(spec)?;
    let ratio_csv = dir.join("deep_relu_ratio.csv");
    write_atomic(&ratio_csv, csv_of(&ratio)?.as_bytes())?;
    written.push(ratio_csv.clone());

    let training = training_data(spec)?;
    let train_csv = dir.join("deep_relu_training.csv");
    let mut t = String::from("optimizer,seed,iteration,loss\n");
    for (name, seed, it, f) in &training.rows {
        let _ = writeln!(t, "{name},{seed},{it},{}", fmt_num(*f));
    }
    write_atomic(&train_csv, t.as_bytes())?;
    written.push(train_csv.clone());

    let linear = zero_rows(spec)?;
    let zero_csv = dir.join("deep_linear_zero.csv");
    write_atomic(&zero_csv, csv_of(&linear)?.as_bytes())?;
    written.push(zero_csv.clone());

    let summary = Summary {
        spec: spec.clone(),
        ratio,
        training,
        linear,
    };
    let json = dir.join("deep_summary.json");
    write_atomic(&json, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    written.push(json);

    for (png, svg) in [
        plot_ratio(&ratio_csv)?,
        plot_training(
            &train_csv,
            summary.training.dnc_loss,
            summary.training.srg_loss,
        )?,
        plot_zero(&zero_csv)?,
    ] {
        written.push(png);
        written.push(svg);
    }
    Ok(written)
}

/// Redraws the three figures from the CSVs and `deep_summary.json` already in `dir`.
pub fn replot(dir: &Path) -> Result<Vec<PathBuf>> {
    let json = dir.join("deep_summary.json");
    let text = std::fs::read_to_string(&json).map_err(|e| Error::io("read", &json, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let get = |k: &str| {
        v["training"][k]
            .as_f64()
            .ok_or_else(|| Error::format(&json, format!("no number training.{k}")))
    };
    let (dnc_loss, srg_loss) = (get("dnc_loss")?, get("srg_loss")?);
    let mut written = Vec::new();
    for (png, svg) in [
        plot_ratio(&dir.join("deep_relu_ratio.csv"))?,
        plot_training(&dir.join("deep_relu_training.csv"), dnc_loss, srg_loss)?,
        plot_zero(&dir.join("deep_linear_zero.csv"))?,
    ] {
        written.push(png);
        written.push(svg);
    }
    Ok(written)
}
