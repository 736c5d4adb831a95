//! The SELI geometry of imbalanced classes and the distance of a UFM optimum to it.
//!
//! Thrampoulidis, Kini, Vakilian & Behnia, *Imbalance Trouble: Revisiting Neural-Collapse
//! Geometry* (NeurIPS 2022, arXiv 2208.05512). With one-hot labels $Y\in\{0,1\}^{K\times N}$,
//! class sizes $D=\operatorname{diag}(n_k)=YY^\top$ and the centring $C=I_K-\frac1K\mathbf 1\mathbf 1^\top$,
//! the **simplex-encoded label (SEL) matrix** is
//! $$\hat Z=CY\in\mathbb R^{K\times N},\qquad \hat Z_{ci}=\mathbb 1[c=y_i]-\tfrac1K,$$
//! with SVD $\hat Z=V\Lambda U^\top$. $(W,H)$ follow the **SELI geometry** (SEL-matrix
//! interpolation) when, up to one positive scale,
//! $$WW^\top\propto V\Lambda V^\top=(\hat Z\hat Z^\top)^{1/2}=(CDC)^{1/2},\qquad
//! H^\top H\propto U\Lambda U^\top=(\hat Z^\top\hat Z)^{1/2},\qquad WH\propto\hat Z .$$
//! These are the balanced factors of $\hat Z$, the solution of the unconstrained-features SVM
//! $\min\lVert W\rVert_F^2+\lVert H\rVert_F^2$ s.t. $(WH)_{y_ii}-(WH)_{ci}\ge1$, which the
//! paper shows is the limit of the regularised CE UFM (no bias) as $\lambda\to0$ for every
//! imbalance; for balanced classes SELI is the simplex ETF at every $\lambda$.
//!
//! **On class means** (derived here): writing $Y=D^{1/2}Q$ with $QQ^\top=I_K$,
//! $\hat Z^\top\hat Z=Q^\top(D^{1/2}CD^{1/2})Q$, so $(\hat Z^\top\hat Z)^{1/2}=Q^\top(D^{1/2}CD^{1/2})^{1/2}Q$; for collapsed
//! features $H=MY$ ($M=[\mu_1,\dots,\mu_K]$) this is the statement
//! $$M^\top M\propto D^{-1/2}\big(D^{1/2}CD^{1/2}\big)^{1/2}D^{-1/2},$$
//! and $WH\propto\hat Z$ reads $WM\propto C$ (the class-mean logits are those of an ETF).
//!
//! **Distance.** For symmetric targets we use the normalised Frobenius distance
//! $\operatorname{dist}(A,B)=\lVert A/\lVert A\rVert_F-B/\lVert B\rVert_F\rVert_F$ (invariant to the scale the
//! geometry leaves free): [`SeliDistance`] reports it for $WW^\top$, $M^\top M$ and $WM$, plus
//! $\operatorname{dist}(WW^\top,C)$ (the distance to an ETF) for contrast.
//!
//! **The experiment** ([`seli_sweep`], `ufm seli figure`): for imbalance ratios $R$ (the first
//! $K-K_{\min}$ classes have $Rn_{\min}$ samples, the rest $n_{\min}$) and a grid of
//! $\lambda=\lambda_W=\lambda_H$ (no bias, CE), the global optimum is computed by the convex
//! reformulation of [`crate::certify`] (FISTA + SVT, certified duality gap), factored in balance,
//! and polished by trust-region Newton at $d=\operatorname{rank}Z^\star$; the certificate is the
//! larger of the convex solver's dual bound and the dual bound at the polished point.

use crate::certify::convex::{solve_convex, ConvexOptions, ConvexProblem, Representation};
use crate::certify::factor::{balanced_factors, numerical_rank};
use crate::certify::nonconvex_dual_bound;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::linalg::sym_eigen;
use crate::plot::{save_panels, LineChart, Panel, Series};
use crate::solver::{Executor, TrustRegionNewton};
use crate::ufm::{Loss, UfmConfig};
use ndarray::{Array1, Array2, ArrayView2};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Square root of a symmetric positive semidefinite matrix. Eigenvalues below
/// $10^{-12}\lambda_{\max}$ are rounding of exact zeros (the SELI matrices have rank $K-1$) and
/// are set to zero: their square roots, $\sim10^{-8}$, would otherwise pollute the result.
fn psd_sqrt(a: ArrayView2<f64>) -> Result<Array2<f64>> {
    let (vals, vecs) = sym_eigen(a)?;
    let top = vals.iter().fold(0.0f64, |m, v| m.max(*v));
    let s: Vec<f64> = vals
        .iter()
        .map(|&v| if v > 1e-12 * top { v.sqrt() } else { 0.0 })
        .collect();
    let n = vals.len();
    Ok(Array2::from_shape_fn((n, n), |(i, j)| {
        (0..n).map(|k| s[k] * vecs[[i, k]] * vecs[[j, k]]).sum()
    }))
}

/// $\lVert A/\lVert A\rVert_F-B/\lVert B\rVert_F\rVert_F$; NaN when either matrix is zero.
pub fn normalized_distance(a: ArrayView2<f64>, b: ArrayView2<f64>) -> f64 {
    let na = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let nb = b.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(na > 0.0 && nb > 0.0) {
        return f64::NAN;
    }
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x / na - y / nb).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The SELI targets for given class sizes ($K\times K$ each).
#[derive(Clone, Debug, Serialize)]
pub struct SeliGeometry {
    /// Class sizes $n_k$.
    pub class_sizes: Vec<usize>,
    /// $(\hat Z\hat Z^\top)^{1/2}=(CDC)^{1/2}$, the target of $WW^\top$.
    pub w_gram: Array2<f64>,
    /// $D^{-1/2}(D^{1/2}CD^{1/2})^{1/2}D^{-1/2}$, the target of the class-mean Gram $M^\top M$.
    pub mean_gram: Array2<f64>,
    /// $C=I-\frac1K\mathbf 1\mathbf 1^\top$, the target of the class-mean logits $WM$.
    pub logits: Array2<f64>,
}

/// The SELI geometry of `class_sizes` (see the [module docs](self)).
pub fn seli_geometry(class_sizes: &[usize]) -> Result<SeliGeometry> {
    let k = class_sizes.len();
    if k < 2 {
        return Err(Error::param(
            "class-sizes",
            format!("need K >= 2 classes, got {k}"),
        ));
    }
    if let Some(c) = class_sizes.iter().position(|&n| n == 0) {
        return Err(Error::param(
            "class-sizes",
            format!("class {c} has no samples"),
        ));
    }
    let kf = k as f64;
    let c = Array2::from_shape_fn((k, k), |(i, j)| if i == j { 1.0 } else { 0.0 } - 1.0 / kf);
    let n: Vec<f64> = class_sizes.iter().map(|&v| v as f64).collect();
    let cdc = Array2::from_shape_fn((k, k), |(i, j)| {
        (0..k).map(|l| c[[i, l]] * n[l] * c[[l, j]]).sum()
    });
    let w_gram = psd_sqrt(cdc.view())?;
    let dcd = Array2::from_shape_fn((k, k), |(i, j)| n[i].sqrt() * c[[i, j]] * n[j].sqrt());
    let r = psd_sqrt(dcd.view())?;
    let mean_gram = Array2::from_shape_fn((k, k), |(i, j)| r[[i, j]] / (n[i] * n[j]).sqrt());
    Ok(SeliGeometry {
        class_sizes: class_sizes.to_vec(),
        w_gram,
        mean_gram,
        logits: c,
    })
}

/// Distances of a point to the SELI geometry (normalised Frobenius; NaN where undefined).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SeliDistance {
    /// $\operatorname{dist}(WW^\top,(\hat Z\hat Z^\top)^{1/2})$.
    pub w: f64,
    /// $\operatorname{dist}(M^\top M,D^{-1/2}(D^{1/2}CD^{1/2})^{1/2}D^{-1/2})$ (uncentred class means).
    pub means: f64,
    /// $\operatorname{dist}(WM,C)$ (class-mean logits against the SEL matrix).
    pub logits: f64,
    /// $\operatorname{dist}(WW^\top,C)$: the distance to a simplex ETF, for contrast.
    pub w_to_etf: f64,
}

/// Distances of $(W,H)$ to SELI: `w` is $K\times d$, `ht` is $H^\top$ ($N\times d$), `labels` in
/// $0..K$ (every class present).
pub fn seli_distance(
    w: ArrayView2<f64>,
    ht: ArrayView2<f64>,
    labels: &[u32],
) -> Result<SeliDistance> {
    let (k, d) = w.dim();
    if ht.ncols() != d || ht.nrows() != labels.len() {
        return Err(Error::shape(
            "H^T (one row per labelled sample, W's d columns)",
            format!("{}x{d}", labels.len()),
            format!("{}x{}", ht.nrows(), ht.ncols()),
        ));
    }
    let mut sizes = vec![0usize; k];
    let mut means = Array2::<f64>::zeros((k, d));
    for (row, &y) in ht.rows().into_iter().zip(labels) {
        let y = y as usize;
        if y >= k {
            return Err(Error::Data(format!("label {y} outside 0..{k}")));
        }
        sizes[y] += 1;
        let mut m = means.row_mut(y);
        m += &row;
    }
    for (c, &n) in sizes.iter().enumerate() {
        if n == 0 {
            return Err(Error::Data(format!("class {c} has no samples")));
        }
        means.row_mut(c).mapv_inplace(|v| v / n as f64);
    }
    let g = seli_geometry(&sizes)?;
    let ww = w.dot(&w.t());
    let mm = means.dot(&means.t());
    let wm = w.dot(&means.t());
    Ok(SeliDistance {
        w: normalized_distance(ww.view(), g.w_gram.view()),
        means: normalized_distance(mm.view(), g.mean_gram.view()),
        logits: normalized_distance(wm.view(), g.logits.view()),
        w_to_etf: normalized_distance(ww.view(), g.logits.view()),
    })
}

/// The certified optimum of one instance and its distance to SELI.
#[derive(Clone, Debug, Serialize)]
pub struct SeliPoint {
    /// Class sizes.
    pub class_sizes: Vec<usize>,
    /// $\lambda=\lambda_W=\lambda_H$.
    pub lambda: f64,
    /// UFM objective of the polished point.
    pub objective: f64,
    /// Certified lower bound on the UFM optimum (every $d$).
    pub lower_bound: f64,
    /// `objective - lower_bound`.
    pub certified_gap: f64,
    /// Numerical rank of $Z^\star$ (the polish runs at $d$ = rank).
    pub rank: usize,
    /// $\lVert\nabla f\rVert$ at the polished point.
    pub grad_norm: f64,
    /// FISTA iterations.
    pub convex_iterations: usize,
    /// Newton iterations of the polish.
    pub newton_iterations: usize,
    /// Distances to SELI.
    pub distance: SeliDistance,
    /// $W$ ($K\times$ rank).
    #[serde(skip)]
    pub w: Array2<f64>,
    /// $H^\top$ ($N\times$ rank).
    #[serde(skip)]
    pub ht: Array2<f64>,
}

/// Solves the CE UFM with $\lambda_W=\lambda_H=\lambda$ ($\lambda_b=0$; `bias` adds an
/// unregularised bias) to a certified optimum and measures its distance to SELI.
pub fn seli_point(
    class_sizes: &[usize],
    lambda: f64,
    bias: bool,
    convex: &ConvexOptions,
    rank_tol: f64,
) -> Result<SeliPoint> {
    if !(lambda.is_finite() && lambda > 0.0) {
        return Err(Error::param(
            "lambda",
            format!("must be finite and > 0, got {lambda}"),
        ));
    }
    let k = class_sizes.len();
    let p = UfmConfig::with_class_sizes(class_sizes.to_vec(), k)
        .lambdas(lambda, lambda, 0.0)
        .loss(Loss::CrossEntropy)
        .bias(bias)
        .build()?;
    let cp = ConvexProblem::new(&p, Representation::ClassCollapsed)?;
    let cvx = solve_convex(&cp, convex, None)?;
    let rank = numerical_rank(&cvx.singular_values, rank_tol);
    if rank == 0 {
        let nan = f64::NAN;
        return Ok(SeliPoint {
            class_sizes: class_sizes.to_vec(),
            lambda,
            objective: cvx.primal,
            lower_bound: cvx.lower_bound,
            certified_gap: cvx.primal - cvx.lower_bound,
            rank,
            grad_norm: nan,
            convex_iterations: cvx.iterations,
            newton_iterations: 0,
            distance: SeliDistance {
                w: nan,
                means: nan,
                logits: nan,
                w_to_etf: nan,
            },
            w: Array2::zeros((k, 0)),
            ht: Array2::zeros((p.n_samples(), 0)),
        });
    }
    let pr = UfmConfig {
        feature_dim: rank,
        ..p.config().clone()
    }
    .build()?;
    let f = balanced_factors(&p, &cp, &cvx.z_t, rank, rank)?;
    let b = Array1::from(cvx.b.clone());
    let mut x = pr.join(f.w.view(), f.ht.view(), Some(b.view()))?;
    let exec = Executor {
        tol: 1e-13,
        max_iter: 200,
        ..Default::default()
    };
    let mut newton = TrustRegionNewton::new(1.0, 1000)?;
    let report = exec.run(&pr, &mut newton, &mut x, &mut [])?;
    let objective: f64 = pr.value(&x);
    let lower_bound = cvx.lower_bound.max(nonconvex_dual_bound(&pr, &x)?);
    let (w, ht, _) = pr.split(&x);
    let distance = seli_distance(w, ht, pr.labels())?;
    Ok(SeliPoint {
        class_sizes: class_sizes.to_vec(),
        lambda,
        objective,
        lower_bound,
        certified_gap: objective - lower_bound,
        rank,
        grad_norm: report.grad_norm,
        convex_iterations: cvx.iterations,
        newton_iterations: report.iterations,
        distance,
        w: w.to_owned(),
        ht: ht.to_owned(),
    })
}

/// Settings of [`seli_sweep`].
#[derive(Clone, Debug, Serialize)]
pub struct SeliSpec {
    /// $K$.
    pub n_classes: usize,
    /// Number of minority classes (the last ones).
    pub minor_classes: usize,
    /// $n_{\min}$, the size of a minority class; majority classes have $Rn_{\min}$.
    pub minority_size: usize,
    /// Imbalance ratios $R\ge1$.
    pub ratios: Vec<f64>,
    /// $\lambda$ values.
    pub lambdas: Vec<f64>,
    /// Unregularised bias.
    pub bias: bool,
    /// Convex solver settings.
    pub convex: ConvexOptions,
    /// Relative rank tolerance.
    pub rank_tol: f64,
}

impl Default for SeliSpec {
    fn default() -> Self {
        SeliSpec {
            n_classes: 4,
            minor_classes: 2,
            minority_size: 10,
            ratios: vec![1.0, 10.0, 100.0],
            lambdas: crate::certify::imbalance::log_grid(1e-2, 1e-12, 11),
            bias: false,
            convex: ConvexOptions {
                max_iter: 20_000,
                ..ConvexOptions::default()
            },
            rank_tol: 1e-6,
        }
    }
}

/// One CSV row of the sweep.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeliRow {
    /// $R$.
    pub ratio: f64,
    /// $\lambda$.
    pub lambda: f64,
    /// Majority class size.
    pub n_major: usize,
    /// Minority class size.
    pub n_minor: usize,
    /// Polished UFM objective.
    pub objective: f64,
    /// Certified lower bound.
    pub lower_bound: f64,
    /// Certified gap.
    pub certified_gap: f64,
    /// Rank of $Z^\star$.
    pub rank: usize,
    /// $\operatorname{dist}(WW^\top,\text{SELI})$.
    pub dist_w: f64,
    /// $\operatorname{dist}(M^\top M,\text{SELI})$.
    pub dist_means: f64,
    /// $\operatorname{dist}(WM,C)$.
    pub dist_logits: f64,
    /// $\operatorname{dist}(WW^\top,\text{ETF})$.
    pub w_to_etf: f64,
}

/// Class sizes for ratio $R$.
pub fn step_sizes(n_classes: usize, minor: usize, n_min: usize, ratio: f64) -> Result<Vec<usize>> {
    if minor == 0 || minor >= n_classes {
        return Err(Error::param(
            "minor-classes",
            format!(
                "need at least one majority and one minority class: got {minor} of {n_classes}"
            ),
        ));
    }
    if !(ratio.is_finite() && ratio >= 1.0) {
        return Err(Error::param(
            "ratios",
            format!("imbalance ratios must be >= 1, got {ratio}"),
        ));
    }
    if n_min == 0 {
        return Err(Error::param("minority-size", "must be >= 1"));
    }
    let major = (ratio * n_min as f64).round() as usize;
    Ok((0..n_classes)
        .map(|c| if c < n_classes - minor { major } else { n_min })
        .collect())
}

/// Runs the sweep over ratios × lambdas (row order: ratio-major).
pub fn seli_sweep(spec: &SeliSpec) -> Result<Vec<SeliRow>> {
    let mut rows = Vec::new();
    for &ratio in &spec.ratios {
        let sizes = step_sizes(
            spec.n_classes,
            spec.minor_classes,
            spec.minority_size,
            ratio,
        )?;
        for &lambda in &spec.lambdas {
            let pt = seli_point(&sizes, lambda, spec.bias, &spec.convex, spec.rank_tol)?;
            rows.push(SeliRow {
                ratio,
                lambda,
                n_major: sizes[0],
                n_minor: *sizes.last().expect("K >= 2"),
                objective: pt.objective,
                lower_bound: pt.lower_bound,
                certified_gap: pt.certified_gap,
                rank: pt.rank,
                dist_w: pt.distance.w,
                dist_means: pt.distance.means,
                dist_logits: pt.distance.logits,
                w_to_etf: pt.distance.w_to_etf,
            });
        }
    }
    Ok(rows)
}

const HEADER: &str = "ratio,lambda,n_major,n_minor,objective,lower_bound,certified_gap,rank,dist_w,dist_means,dist_logits,w_to_etf";

/// Writes the rows as CSV (atomically).
pub fn write_csv(path: &Path, rows: &[SeliRow]) -> Result<()> {
    let mut s = String::from(HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(&format!(
            "{},{:e},{},{},{:.17e},{:.17e},{:.6e},{},{:.17e},{:.17e},{:.17e},{:.17e}\n",
            r.ratio,
            r.lambda,
            r.n_major,
            r.n_minor,
            r.objective,
            r.lower_bound,
            r.certified_gap,
            r.rank,
            r.dist_w,
            r.dist_means,
            r.dist_logits,
            r.w_to_etf
        ));
    }
    write_atomic(path, s.as_bytes())
}

/// Reads rows written by [`write_csv`].
pub fn read_csv(path: &Path) -> Result<Vec<SeliRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(HEADER) {
        return Err(Error::format(
            path,
            format!("expected the header `{HEADER}` (a file written by `ufm seli figure`)"),
        ));
    }
    let mut rows = Vec::new();
    for (ln, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |what: String| Error::format(path, format!("line {}: {what}", ln + 2));
        if f.len() != 12 {
            return Err(bad(format!("expected 12 fields, got {}", f.len())));
        }
        let num = |i: usize| -> Result<f64> {
            f[i].parse::<f64>()
                .map_err(|_| bad(format!("cannot parse `{}` as a number", f[i])))
        };
        let int = |i: usize| -> Result<usize> {
            f[i].parse::<usize>()
                .map_err(|_| bad(format!("cannot parse `{}` as an integer", f[i])))
        };
        rows.push(SeliRow {
            ratio: num(0)?,
            lambda: num(1)?,
            n_major: int(2)?,
            n_minor: int(3)?,
            objective: num(4)?,
            lower_bound: num(5)?,
            certified_gap: num(6)?,
            rank: int(7)?,
            dist_w: num(8)?,
            dist_means: num(9)?,
            dist_logits: num(10)?,
            w_to_etf: num(11)?,
        });
    }
    if rows.is_empty() {
        return Err(Error::format(path, "no data rows"));
    }
    Ok(rows)
}

/// Draws five panels against $\log_{10}(1/\lambda)$, one curve per ratio, into
/// `<stem>.png/.svg`: the distances to SELI of $WW^\top$, $M^\top M$ and $WM$, the distance of
/// $WW^\top$ to a simplex ETF, and $\operatorname{dist}(WW^\top,\text{SELI})\cdot\ln(1/\lambda)$ (bounded when
/// the distance decays like $1/\log(1/\lambda)$). Linear axes: the approach is logarithmically slow.
pub fn plot(stem: &Path, rows: &[SeliRow]) -> Result<(PathBuf, PathBuf)> {
    let mut ratios: Vec<f64> = Vec::new();
    for r in rows {
        if !ratios.contains(&r.ratio) {
            ratios.push(r.ratio);
        }
    }
    let panel = |title: &str, y: &str, get: &dyn Fn(&SeliRow) -> f64| {
        Panel::Lines(LineChart {
            title: title.into(),
            x_label: "log10(1/lambda)".into(),
            y_label: y.into(),
            log_y: false,
            series: ratios
                .iter()
                .map(|&ratio| Series {
                    name: format!("R = {ratio}"),
                    points: rows
                        .iter()
                        .filter(|r| r.ratio == ratio)
                        .map(|r| (-r.lambda.log10(), get(r)))
                        .collect(),
                })
                .collect(),
        })
    };
    let dist = "normalised Frobenius distance";
    save_panels(
        stem,
        Some("CE UFM optimum (certified) vs SELI geometry as lambda -> 0"),
        &[
            panel("W W^T vs (Zhat Zhat^T)^1/2", dist, &|r| r.dist_w),
            panel("class-mean Gram vs SELI", dist, &|r| r.dist_means),
            panel("class-mean logits W M vs C", dist, &|r| r.dist_logits),
            panel("W W^T vs simplex ETF", dist, &|r| r.w_to_etf),
            panel(
                "rate: dist(W W^T, SELI) x ln(1/lambda)",
                "distance x ln(1/lambda)",
                &|r| r.dist_w * (1.0 / r.lambda).ln(),
            ),
        ],
        3,
        (700, 500),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_seli_is_the_etf() {
        let g = seli_geometry(&[5, 5, 5]).unwrap();
        assert!(normalized_distance(g.w_gram.view(), g.logits.view()) < 1e-14);
        assert!(normalized_distance(g.mean_gram.view(), g.logits.view()) < 1e-14);
        let g = seli_geometry(&[50, 5, 5]).unwrap();
        assert!(normalized_distance(g.w_gram.view(), g.logits.view()) > 1e-2);
        assert!(seli_geometry(&[3]).is_err());
        assert!(seli_geometry(&[3, 0]).is_err());
    }
}
