//! Geometry of the certified UFM optimum as the class imbalance grows: minority collapse.
//!
//! Base class sizes $(n_1,\dots,n_K)$ (default four classes of 1000): the last $K_{\text{min}}$
//! classes are the minority and shrink to $\max(1,\operatorname{round}(n_k/R))$ samples, the first
//! $K-K_{\text{min}}$ (majority) keep their size. For each imbalance ratio $R$ the convex
//! reformulation is solved to a certified gap ([`super::convex`]), factored into balanced $(W,H)$
//! with $d=K$ (so the bound is attained), and we record the cosines between classifier rows
//! $$\cos(w_k,w_l)=\frac{w_k^\top w_l}{\lVert w_k\rVert\lVert w_l\rVert}$$
//! averaged over majority–majority, minority–minority and majority–minority pairs (undefined,
//! `NaN`, once a row has vanished: norm below $10^{-6}$ of the largest), and the norms of the
//! classifier rows and of the class means $\mu_k$. Fang, He, Long & Su (PNAS 2021,
//! *Exploring deep neural networks via layer-peeled model: minority collapse in imbalanced
//! training*) show that beyond a finite ratio the minority classifiers collapse onto one direction
//! (minority–minority cosine $\to1$) and shrink.

use super::convex::{solve_convex, ConvexOptions, ConvexProblem, Representation};
use super::factor::{balanced_factors, numerical_rank};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::metrics::ClassStats;
use crate::plot::{save_line_panels, LineChart, Series};
use crate::ufm::{Loss, UfmConfig};
use ndarray::Array2;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Settings of the imbalance sweep.
#[derive(Clone, Debug, Serialize)]
pub struct ImbalanceSpec {
    /// Class sizes at $R=1$.
    pub class_sizes: Vec<usize>,
    /// Number of minority classes (the last ones), divided by $R$.
    pub minor_classes: usize,
    /// Imbalance ratios $R\ge1$.
    pub ratios: Vec<f64>,
    /// $\lambda_W$.
    pub lambda_w: f64,
    /// $\lambda_H$.
    pub lambda_h: f64,
    /// $\lambda_b$.
    pub lambda_b: f64,
    /// The loss (convex in the logits).
    pub loss: Loss,
    /// Whether the model has a bias.
    pub bias: bool,
    /// Convex solver settings.
    pub convex: ConvexOptions,
    /// Relative rank tolerance.
    pub rank_tol: f64,
}

/// `n` ratios log-spaced in $[lo, hi]$.
pub fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![lo];
    }
    (0..n)
        .map(|i| (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

impl Default for ImbalanceSpec {
    fn default() -> Self {
        ImbalanceSpec {
            class_sizes: vec![1000; 4],
            minor_classes: 2,
            ratios: log_grid(1.0, 100.0, 41),
            lambda_w: 5e-3,
            lambda_h: 5e-3,
            lambda_b: 5e-3,
            loss: Loss::CrossEntropy,
            bias: true,
            convex: ConvexOptions::default(),
            rank_tol: 1e-6,
        }
    }
}

/// One point of the sweep (one CSV row).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImbalanceRow {
    /// Imbalance ratio $R$.
    pub ratio: f64,
    /// Size of the first minority class at this ratio.
    pub n_minor: usize,
    /// Convex objective $P$ (= UFM optimum, attained at $d=K$).
    pub objective: f64,
    /// Certified lower bound.
    pub lower_bound: f64,
    /// Numerical rank of $Z^\star$.
    pub rank: usize,
    /// Mean cosine between majority classifier rows.
    pub cos_major: f64,
    /// Mean cosine between minority classifier rows.
    pub cos_minor: f64,
    /// Mean cosine between majority and minority classifier rows.
    pub cos_cross: f64,
    /// Mean $\lVert w_k\rVert$ over majority classes.
    pub w_norm_major: f64,
    /// Mean $\lVert w_k\rVert$ over minority classes.
    pub w_norm_minor: f64,
    /// Mean $\lVert\mu_k\rVert$ over majority classes.
    pub mean_norm_major: f64,
    /// Mean $\lVert\mu_k\rVert$ over minority classes.
    pub mean_norm_minor: f64,
}

const HEADER: &str = "ratio,n_minor,objective,lower_bound,rank,cos_major,cos_minor,cos_cross,w_norm_major,w_norm_minor,mean_norm_major,mean_norm_minor";

/// Runs the sweep.
pub fn imbalance_sweep(spec: &ImbalanceSpec) -> Result<Vec<ImbalanceRow>> {
    let k = spec.class_sizes.len();
    if spec.minor_classes == 0 || spec.minor_classes >= k {
        return Err(Error::param(
            "minor-classes",
            format!(
                "need at least one majority and one minority class: got {} minority classes of {k}",
                spec.minor_classes
            ),
        ));
    }
    if let Some(r) = spec.ratios.iter().find(|r| !(r.is_finite() && **r >= 1.0)) {
        return Err(Error::param(
            "ratios",
            format!("imbalance ratios must be >= 1, got {r}"),
        ));
    }
    let a = k - spec.minor_classes;
    let mut rows = Vec::with_capacity(spec.ratios.len());
    for &ratio in &spec.ratios {
        let sizes: Vec<usize> = spec
            .class_sizes
            .iter()
            .enumerate()
            .map(|(c, &n)| {
                if c < a {
                    n
                } else {
                    ((n as f64 / ratio).round() as usize).max(1)
                }
            })
            .collect();
        let n_minor = sizes[a];
        let p = UfmConfig::with_class_sizes(sizes, k)
            .lambdas(spec.lambda_w, spec.lambda_h, spec.lambda_b)
            .loss(spec.loss)
            .bias(spec.bias)
            .build()?;
        let cp = ConvexProblem::new(&p, Representation::ClassCollapsed)?;
        let sol = solve_convex(&cp, &spec.convex, None)?;
        let rank = numerical_rank(&sol.singular_values, spec.rank_tol);
        let f = balanced_factors(&p, &cp, &sol.z_t, rank, k)?;
        let mut acc = ClassStats::new(k, k);
        acc.push(f.ht.view(), p.labels())?;
        let stats = acc.finish()?;
        let row_norm = |w: &Array2<f64>, i: usize| w.row(i).dot(&w.row(i)).sqrt();
        // A row at the round-off level of the solve (relative 1e-6) has no direction.
        let tiny = 1e-6 * (0..k).map(|i| row_norm(&f.w, i)).fold(0.0, f64::max);
        let cos = |i: usize, j: usize| {
            let (ni, nj) = (row_norm(&f.w, i), row_norm(&f.w, j));
            if ni > tiny && nj > tiny {
                f.w.row(i).dot(&f.w.row(j)) / (ni * nj)
            } else {
                f64::NAN
            }
        };
        let mean_cos =
            |set_i: std::ops::Range<usize>, set_j: std::ops::Range<usize>, same: bool| {
                let mut s = 0.0;
                let mut c = 0;
                for i in set_i.clone() {
                    for j in set_j.clone() {
                        if !same || j > i {
                            s += cos(i, j);
                            c += 1;
                        }
                    }
                }
                if c == 0 {
                    f64::NAN
                } else {
                    s / c as f64
                }
            };
        let mean = |v: &dyn Fn(usize) -> f64, r: std::ops::Range<usize>| {
            let len = r.len() as f64;
            r.map(v).sum::<f64>() / len
        };
        let mu_norm = |i: usize| stats.means.row(i).dot(&stats.means.row(i)).sqrt();
        let wn = |i: usize| row_norm(&f.w, i);
        rows.push(ImbalanceRow {
            ratio,
            n_minor,
            objective: sol.primal,
            lower_bound: sol.lower_bound,
            rank,
            cos_major: mean_cos(0..a, 0..a, true),
            cos_minor: mean_cos(a..k, a..k, true),
            cos_cross: mean_cos(0..a, a..k, false),
            w_norm_major: mean(&wn, 0..a),
            w_norm_minor: mean(&wn, a..k),
            mean_norm_major: mean(&mu_norm, 0..a),
            mean_norm_minor: mean(&mu_norm, a..k),
        });
    }
    Ok(rows)
}

/// Writes the rows as CSV (atomically).
pub fn write_csv(path: &Path, rows: &[ImbalanceRow]) -> Result<()> {
    let mut s = String::from(HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(&format!(
            "{},{},{:.17e},{:.17e},{},{:.17e},{:.17e},{:.17e},{:.17e},{:.17e},{:.17e},{:.17e}\n",
            r.ratio,
            r.n_minor,
            r.objective,
            r.lower_bound,
            r.rank,
            r.cos_major,
            r.cos_minor,
            r.cos_cross,
            r.w_norm_major,
            r.w_norm_minor,
            r.mean_norm_major,
            r.mean_norm_minor
        ));
    }
    write_atomic(path, s.as_bytes())
}

/// Reads rows written by [`write_csv`].
pub fn read_csv(path: &Path) -> Result<Vec<ImbalanceRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(HEADER) {
        return Err(Error::format(
            path,
            format!("expected the header `{HEADER}` (a file written by `ufm certify figure`)"),
        ));
    }
    let mut rows = Vec::new();
    for (ln, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = |what: &str| Error::format(path, format!("line {}: {what}", ln + 2));
        if f.len() != 12 {
            return Err(bad(&format!("expected 12 fields, got {}", f.len())));
        }
        let num = |i: usize| -> Result<f64> {
            f[i].trim()
                .parse::<f64>()
                .map_err(|_| bad(&format!("cannot parse `{}` as a number", f[i])))
        };
        let int = |i: usize| -> Result<usize> {
            f[i].trim()
                .parse::<usize>()
                .map_err(|_| bad(&format!("cannot parse `{}` as an integer", f[i])))
        };
        rows.push(ImbalanceRow {
            ratio: num(0)?,
            n_minor: int(1)?,
            objective: num(2)?,
            lower_bound: num(3)?,
            rank: int(4)?,
            cos_major: num(5)?,
            cos_minor: num(6)?,
            cos_cross: num(7)?,
            w_norm_major: num(8)?,
            w_norm_minor: num(9)?,
            mean_norm_major: num(10)?,
            mean_norm_minor: num(11)?,
        });
    }
    if rows.is_empty() {
        return Err(Error::format(path, "no data rows"));
    }
    Ok(rows)
}

/// Draws the two-panel figure against $\log_{10}R$ into `<stem>.png/.svg`: the mean cosines,
/// and the mean norms relative to the first row (the least imbalanced ratio).
pub fn plot(stem: &Path, rows: &[ImbalanceRow]) -> Result<(PathBuf, PathBuf)> {
    let series = |name: &str, get: fn(&ImbalanceRow) -> f64| Series {
        name: name.into(),
        points: rows.iter().map(|r| (r.ratio.log10(), get(r))).collect(),
    };
    let angles = LineChart {
        title: "Classifier geometry vs imbalance".into(),
        x_label: "log10 R (minority classes have n_k / R samples)".into(),
        y_label: "mean cosine between classifier rows".into(),
        log_y: false,
        series: vec![
            series("majority-majority", |r| r.cos_major),
            series("minority-minority", |r| r.cos_minor),
            series("majority-minority", |r| r.cos_cross),
        ],
    };
    // Norms relative to the first (least imbalanced) row, so W rows and class means share an axis.
    let first = &rows[0];
    let rel = |name: &str, get: fn(&ImbalanceRow) -> f64| {
        let base = get(first);
        Series {
            name: name.into(),
            points: rows
                .iter()
                .map(|r| (r.ratio.log10(), get(r) / base))
                .collect(),
        }
    };
    let norms = LineChart {
        title: "Norms vs imbalance".into(),
        x_label: "log10 R (minority classes have n_k / R samples)".into(),
        y_label: format!("mean norm / its value at R = {:.3}", first.ratio),
        log_y: false,
        series: vec![
            rel("|w_k| majority", |r| r.w_norm_major),
            rel("|w_k| minority", |r| r.w_norm_minor),
            rel("|mu_k| majority", |r| r.mean_norm_major),
            rel("|mu_k| minority", |r| r.mean_norm_minor),
        ],
    };
    save_line_panels(stem, &[angles, norms])
}
