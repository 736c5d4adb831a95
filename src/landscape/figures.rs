//! The landscape figures for `paper_figs/`, each drawn from data this module exports first
//! (CSV/JSON next to the picture):
//!
//! * `convergence` — $f-f^\star$, $\lVert\nabla f\rVert$ and the NC metrics over iterations for
//!   GD, L-BFGS and trust-region Newton (the UFM analogue of Zhu et al. 2021, Fig. 3);
//! * `spectra` — $|\lambda|$ of the Hessian at a global minimum and at each catalogued saddle,
//!   negative eigenvalues marked;
//! * `success_heatmap` — fraction of random initialisations reaching the global optimum over
//!   $(d,\lambda)$, one panel per optimizer.

use super::critical::{catalogue, newton_polish};
use super::spectrum::{analyse_hessian, HessianOptions};
use super::sweep::{run_sweep, summarize, write_shard, write_summary, CellSummary, SweepSpec};
use crate::error::{Error, Result};
use crate::plot::{save_panels, Heatmap, LineChart, Panel, Series};
use crate::solver::{solve, OptimizerSpec, SolveSpec};
use crate::ufm::UfmProblem;
use std::path::{Path, PathBuf};

/// Minimal CSV reader for the files this crate writes (no quoting): header and rows.
pub fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| Error::format(path, "empty CSV file"))?
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(|s| s.trim().to_string()).collect())
        .collect();
    if let Some(i) = rows.iter().position(|r| r.len() != header.len()) {
        return Err(Error::format(
            path,
            format!(
                "row {} has {} fields, the header has {}",
                i + 2,
                rows[i].len(),
                header.len()
            ),
        ));
    }
    Ok((header, rows))
}

fn column(path: &Path, header: &[String], rows: &[Vec<String>], name: &str) -> Result<Vec<f64>> {
    let i = header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| Error::format(path, format!("no column `{name}`")))?;
    rows.iter()
        .map(|r| {
            if r[i].is_empty() {
                Ok(f64::NAN)
            } else {
                r[i].parse::<f64>().map_err(|_| {
                    Error::format(
                        path,
                        format!("`{}` in column `{name}` is not a number", r[i]),
                    )
                })
            }
        })
        .collect()
}

/// Runs GD (fixed step `gd_lr`), L-BFGS and Newton from the same seeded start with a trace
/// every iteration (GD: every 10), writes `convergence_<opt>.csv` into `dir`, then draws
/// `convergence.{png,svg}` from those files.
pub fn convergence_figure(dir: &Path, p: &UfmProblem, seed: u64, gd_lr: f64) -> Result<PathBuf> {
    let opts = [
        (OptimizerSpec::Gd { lr: gd_lr }, 10, 200_000),
        (OptimizerSpec::Lbfgs { memory: 10 }, 1, 20_000),
        (
            OptimizerSpec::Newton {
                radius: 1.0,
                max_cg: 500,
            },
            1,
            1_000,
        ),
    ];
    for (opt, every, max_iter) in opts {
        let spec = SolveSpec {
            optimizer: opt,
            seed,
            tol: 1e-10,
            max_iter,
            trace_every: every,
            ..SolveSpec::default()
        };
        let out = solve(p, &spec, None)?;
        let trace = out.trace.expect("trace requested");
        trace.write(&dir.join(format!("convergence_{}.csv", opt.short_name())))?;
    }
    plot_convergence(dir)
}

/// Draws `convergence.{png,svg}` from the `convergence_<opt>.csv` files in `dir`.
pub fn plot_convergence(dir: &Path) -> Result<PathBuf> {
    let mut panels = Vec::new();
    for (name, title) in [
        ("gd", "gradient descent"),
        ("lbfgs", "L-BFGS"),
        ("newton", "trust-region Newton"),
    ] {
        let path = dir.join(format!("convergence_{name}.csv"));
        let (h, rows) = read_csv(&path)?;
        let iter = column(&path, &h, &rows, "iter")?;
        let mut series = Vec::new();
        for (col, label) in [
            ("gap", "f - f*"),
            ("grad_norm", "|grad f|"),
            ("nc1", "NC1"),
            ("nc2_w", "NC2 (W)"),
            ("nc3", "NC3"),
        ] {
            if let Ok(v) = column(&path, &h, &rows, col) {
                series.push(Series {
                    name: label.into(),
                    points: iter.iter().copied().zip(v).collect(),
                });
            }
        }
        panels.push(Panel::Lines(LineChart {
            title: title.into(),
            x_label: "iteration".into(),
            y_label: "value (log scale)".into(),
            log_y: true,
            series,
        }));
    }
    let stem = dir.join("convergence");
    save_panels(
        &stem,
        Some("UFM convergence: objective gap and neural-collapse metrics"),
        &panels,
        3,
        (620, 520),
    )?;
    Ok(stem.with_extension("png"))
}

/// Computes the full Hessian spectrum at a global minimum (solver + Newton polish from `seed`)
/// and at every catalogued saddle, writes `spectra.csv` (`point,index,eigenvalue`) and
/// `spectra.json` (summaries), then draws `spectra.{png,svg}` from the CSV.
pub fn spectra_figure(dir: &Path, p: &UfmProblem, seed: u64) -> Result<PathBuf> {
    let opts = HessianOptions {
        dense_limit: usize::MAX,
        ..HessianOptions::default()
    };
    let mut xg: Vec<f64> = p.random_point(seed, 1.0)?;
    newton_polish(p, &mut xg, 1e-11)?;
    let mut points = vec![("global-min".to_string(), xg)];
    for c in catalogue(p, seed)? {
        points.push((c.kind.clone(), c.x));
    }
    let mut csv = String::from("point,index,eigenvalue\n");
    let mut summaries = Vec::new();
    for (name, x) in &points {
        let h = analyse_hessian(p, x, &opts)?;
        for (i, v) in h.eigenvalues.as_ref().expect("dense").iter().enumerate() {
            csv.push_str(&format!("{name},{i},{v:e}\n"));
        }
        summaries.push(serde_json::json!({ "point": name, "summary": h }));
    }
    crate::io::write_atomic(&dir.join("spectra.csv"), csv.as_bytes())?;
    let meta = serde_json::json!({ "problem": p.config(), "points": summaries });
    crate::io::write_atomic(
        &dir.join("spectra.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )?;
    plot_spectra(dir)
}

/// Draws `spectra.{png,svg}` from `spectra.csv` and `spectra.json` in `dir`.
pub fn plot_spectra(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("spectra.csv");
    let (h, rows) = read_csv(&path)?;
    if h.len() != 3 || h[0] != "point" || h[1] != "index" || h[2] != "eigenvalue" {
        return Err(Error::format(
            &path,
            format!(
                "the header must be `point,index,eigenvalue`, got `{}`",
                h.join(",")
            ),
        ));
    }
    let meta_path = dir.join("spectra.json");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&meta_path).map_err(|e| Error::io("read", &meta_path, e))?,
    )
    .map_err(|e| Error::format(&meta_path, e.to_string()))?;
    let mut names: Vec<String> = Vec::new();
    for r in &rows {
        if !names.contains(&r[0]) {
            names.push(r[0].clone());
        }
    }
    let mut panels = Vec::new();
    for name in &names {
        let abs_tol = meta["points"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["point"] == name.as_str()))
            .and_then(|v| v["summary"]["abs_tol"].as_f64())
            .unwrap_or(0.0);
        let vals: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| &r[0] == name)
            .filter_map(|r| Some((r[1].parse::<f64>().ok()?, r[2].parse::<f64>().ok()?)))
            .collect();
        let floor = 1e-16;
        let (mut pos, mut neg, mut zero) = (Vec::new(), Vec::new(), Vec::new());
        for &(i, v) in &vals {
            if v.abs() <= abs_tol {
                zero.push((i, v.abs().max(floor)));
            } else if v < 0.0 {
                neg.push((i, -v));
            } else {
                pos.push((i, v));
            }
        }
        let counts = format!("{} neg, {} near 0", neg.len(), zero.len());
        panels.push(Panel::Points(LineChart {
            title: format!("{name} ({counts})"),
            x_label: "eigenvalue index (ascending)".into(),
            y_label: "|eigenvalue|".into(),
            log_y: true,
            series: vec![
                Series {
                    name: "positive".into(),
                    points: pos,
                },
                Series {
                    name: "negative (|λ| shown)".into(),
                    points: neg,
                },
                Series {
                    name: format!("|λ| ≤ {abs_tol:.0e} (near 0)"),
                    points: zero,
                },
            ],
        }));
    }
    let stem = dir.join("spectra");
    let title = match meta["problem"].as_object() {
        Some(c) => format!(
            "Hessian spectra: global minimum vs saddles (K={}, d={}, n={}, λ={})",
            c["class_sizes"].as_array().map_or(0, |a| a.len()),
            c["feature_dim"],
            c["class_sizes"][0],
            c["lambda_w"]
        ),
        None => "Hessian spectra".into(),
    };
    save_panels(&stem, Some(&title), &panels, 2, (620, 460))?;
    Ok(stem.with_extension("png"))
}

/// Runs the sweep, writes `trials.{csv,json}` and `summary.{csv,json}` into `dir`, then draws
/// `success_heatmap.{png,svg}` from `summary.csv`.
pub fn heatmap_figure(
    dir: &Path,
    spec: &SweepSpec,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<PathBuf> {
    let out = run_sweep(spec, 0, 1, progress)?;
    write_shard(&dir.join("trials"), &out)?;
    let cells = summarize(spec, &out.rows);
    write_summary(dir, spec, &cells)?;
    plot_heatmap(&dir.join("summary.csv"), &dir.join("success_heatmap"))
}

/// Most cells (dims × lambdas) of one heatmap panel.
pub const MAX_HEATMAP_CELLS: usize = 10_000;

/// Draws a success-rate heatmap (one panel per optimizer) from a sweep's `summary.csv`.
pub fn plot_heatmap(summary_csv: &Path, stem: &Path) -> Result<PathBuf> {
    let (h, rows) = read_csv(summary_csv)?;
    let col = |name: &str| -> Result<usize> {
        h.iter()
            .position(|c| c == name)
            .ok_or_else(|| Error::format(summary_csv, format!("no column `{name}`")))
    };
    let (cd, cl, co, cs) = (
        col("d")?,
        col("lambda")?,
        col("optimizer")?,
        col("success_fraction")?,
    );
    let cref = col("reference_source")?;
    let parse = |s: &str| -> Result<f64> {
        s.parse::<f64>()
            .map_err(|_| Error::format(summary_csv, format!("`{s}` is not a number")))
    };
    let mut cells = Vec::new();
    for r in &rows {
        cells.push((
            parse(&r[cd])? as usize,
            parse(&r[cl])?,
            r[co].clone(),
            parse(&r[cs])?,
            r[cref].clone(),
        ));
    }
    let mut dims: Vec<usize> = cells.iter().map(|c| c.0).collect();
    dims.sort_unstable();
    dims.dedup();
    let mut lambdas: Vec<f64> = cells.iter().map(|c| c.1).collect();
    lambdas.sort_by(|a, b| a.total_cmp(b));
    lambdas.dedup();
    let mut opts: Vec<String> = Vec::new();
    for c in &cells {
        if !opts.contains(&c.2) {
            opts.push(c.2.clone());
        }
    }
    // a hand-edited summary could ask for millions of cells: keep the drawing bounded
    if dims.len().saturating_mul(lambdas.len()) > MAX_HEATMAP_CELLS || opts.len() > 30 {
        return Err(Error::format(
            summary_csv,
            format!(
                "{} dims x {} lambdas and {} optimizers: at most {MAX_HEATMAP_CELLS} cells per panel and 30 panels can be drawn",
                dims.len(),
                lambdas.len(),
                opts.len()
            ),
        ));
    }
    let empirical: Vec<String> = dims
        .iter()
        .filter(|&&d| cells.iter().any(|c| c.0 == d && c.4 == "empirical"))
        .map(|d| d.to_string())
        .collect();
    let panels: Vec<Panel> = opts
        .iter()
        .map(|o| {
            let values = lambdas
                .iter()
                .map(|&l| {
                    dims.iter()
                        .map(|&d| {
                            cells
                                .iter()
                                .find(|c| c.0 == d && c.1 == l && &c.2 == o)
                                .map_or(f64::NAN, |c| c.3)
                        })
                        .collect()
                })
                .collect();
            Panel::Heatmap(Heatmap {
                title: format!("{o}: success fraction"),
                x_label: "feature dimension d".into(),
                y_label: "λ = λ_W = λ_H".into(),
                x_ticks: dims.iter().map(|d| d.to_string()).collect(),
                y_ticks: lambdas.iter().map(|l| format!("{l:.0e}")).collect(),
                values,
                range: (0.0, 1.0),
                annotate: Some(2),
            })
        })
        .collect();
    let title = if empirical.is_empty() {
        "Random initialisations reaching the global optimum".to_string()
    } else {
        format!(
            "Random initialisations reaching the global optimum (d = {}: best value found, no closed form)",
            empirical.join(", ")
        )
    };
    let cols = panels.len().min(3);
    save_panels(stem, Some(&title), &panels, cols, (520, 440))?;
    Ok(stem.with_extension("png"))
}

/// Summary cells of a sweep read back (for callers that only have `summary.json`).
pub fn read_summary_json(path: &Path) -> Result<Vec<CellSummary>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(path, e.to_string()))?;
    serde_json::from_value(v["cells"].clone()).map_err(|e| Error::format(path, e.to_string()))
}
