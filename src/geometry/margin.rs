//! One-vs-rest margins as exact minimum-norm-point problems, with certificates.
//!
//! For class vectors $w_1,\dots,w_K\in\mathbb R^d$ the one-vs-rest margin of class $k$
//! (Jiang et al., arXiv 2310.05351, Def. 2.1: the distance from $w_k$ to the convex hull of the
//! other classes) is
//! $$m_k=\min_{\alpha\in\Delta_{K-1}}\Big\lVert w_k-\sum_{j\ne k}\alpha_jw_j\Big\rVert_2
//! =\min_{\alpha\in\Delta_{K-1}}\Big\lVert\sum_{j\ne k}\alpha_j\,(w_k-w_j)\Big\rVert_2 ,$$
//! the norm of the minimum-norm point of the polytope $\operatorname{conv}\{p_j=w_k-w_j\}_{j\ne k}$.
//! It is a **distance, not its square**. For unit vectors:
//!
//! | configuration | $m_k$ | why |
//! |---|---|---|
//! | simplex ETF, $K\le d+1$ | $\frac K{K-1}$ | $\sum_jw_j=0$, so the nearest hull point is the centroid $-w_k/(K-1)$ |
//! | regular $K$-gon ($d=2$) | $1-\cos\frac{2\pi}K$ | nearest point: the midpoint of the chord of the two neighbours |
//! | cross-polytope $\{\pm e_i\}$ ($K=2d$) | $1$ | every other point has $\langle w_k,\cdot\rangle\le0$ and $0$ is in the hull |
//! | code with largest cosine $t$ whose nearest neighbours have centroid $t\,w_k$ | $1-t$ | the hull lies in $\{\langle w_k,\cdot\rangle\le t\}$ and touches it at $t\,w_k$ |
//!
//! The last row covers the icosahedron ($t=1/\sqrt5$), the $E_8$ roots ($t=\tfrac12$), the
//! Higman–Sims code ($t=\tfrac1{11}$) and the McLaughlin code ($t=\tfrac17$): see
//! [`super::codes`].
//!
//! # Algorithm
//! Wolfe's minimum-norm-point algorithm (P. Wolfe, *Finding the nearest point in a polytope*,
//! Math. Programming 11, 1976): an active-set method that keeps an affinely independent
//! "corral" $S$ and the point $x=\sum_{i\in S}\lambda_ip_i$, $\lambda>0$. A major cycle adds
//! $p_j$, $j=\arg\min_j\langle x,p_j\rangle$; minor cycles move to the affine minimiser of
//! $\operatorname{aff}(S)$, $\alpha=v/\mathbf 1^\top v$ with $(\mathbf 1\mathbf 1^\top+P_S^\top P_S)v=\mathbf 1$
//! (Cholesky; positive definite exactly when $S$ is affinely independent), cutting back to the
//! boundary of the simplex and dropping points whose weight vanishes. It terminates finitely
//! in exact arithmetic; in `f64` it stops when $\lVert x\rVert^2-\min_j\langle x,p_j\rangle\le$
//! `tol`$\cdot\max_j\lVert p_j\rVert^2$, or when the chosen point is already in $S$ (optimal to
//! rounding). Not projected gradient: the answer is a vertex-face solution, exact to rounding.
//!
//! # Certificates
//! With $f(\alpha)=\lVert P\alpha\rVert^2$ and $x=P\alpha$, the **Frank–Wolfe duality gap**
//! $$g=\max_j\langle\nabla f(\alpha),\alpha-e_j\rangle=2\big(\lVert x\rVert^2-\min_j\langle x,p_j\rangle\big)\ \ge\ f(\alpha)-f^\star$$
//! bounds the error in the *squared* distance, and the separating hyperplane
//! $\{q:\langle x,q\rangle=\min_j\langle x,p_j\rangle\}$ gives the certified interval
//! $$\frac{\max(0,\min_j\langle x,p_j\rangle)}{\lVert x\rVert}\ \le\ m_k\ \le\ \lVert x\rVert .$$

use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use serde::Serialize;

/// Settings of the minimum-norm-point solver.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MarginOptions {
    /// Stop when $\lVert x\rVert^2-\min_j\langle x,p_j\rangle\le$ `tol`$\cdot\max_j\lVert p_j\rVert^2$.
    pub tol: f64,
    /// Maximum number of (major + minor) cycles.
    pub max_iter: usize,
}

impl Default for MarginOptions {
    fn default() -> Self {
        MarginOptions {
            tol: 1e-14,
            max_iter: 100_000,
        }
    }
}

/// The minimum-norm point of $\operatorname{conv}\{p_1,\dots,p_m\}$ and its certificate.
#[derive(Clone, Debug, Serialize)]
pub struct MinNormPoint {
    /// $x=\sum_j\alpha_jp_j$.
    pub point: Vec<f64>,
    /// $\alpha$ (length $m$, zero off the support).
    pub weights: Vec<f64>,
    /// Indices $j$ with $\alpha_j>0$ (increasing).
    pub support: Vec<usize>,
    /// $\lVert x\rVert$: an upper bound on the distance (attained by $x$).
    pub distance: f64,
    /// Certified lower bound $\max(0,\min_j\langle x,p_j\rangle)/\lVert x\rVert$ on the distance.
    pub lower_bound: f64,
    /// Frank–Wolfe gap $2(\lVert x\rVert^2-\min_j\langle x,p_j\rangle)\ge\lVert x\rVert^2-\mathrm{dist}^2$.
    pub fw_gap: f64,
    /// Major plus minor cycles.
    pub iterations: usize,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Affine minimiser of the corral `s`: $\alpha=v/\mathbf 1^\top v$ with
/// $(\mathbf 1\mathbf 1^\top+G)v=\mathbf 1$. `None` when the system is numerically singular
/// (the corral is affinely dependent to rounding).
fn affine_minimizer(q: &[Vec<f64>], s: &[usize]) -> Option<Vec<f64>> {
    let n = s.len();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = 1.0 + dot(&q[s[i]], &q[s[j]]);
            a[i * n + j] = v;
            a[j * n + i] = v;
        }
    }
    // Cholesky A = L Lᵀ in place (lower triangle).
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if !(d > 1e-13) {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut v = a[i * n + j];
            for k in 0..j {
                v -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = v / d;
        }
    }
    let mut v = vec![1.0; n];
    for i in 0..n {
        let mut t = v[i];
        for k in 0..i {
            t -= a[i * n + k] * v[k];
        }
        v[i] = t / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut t = v[i];
        for k in i + 1..n {
            t -= a[k * n + i] * v[k];
        }
        v[i] = t / a[i * n + i];
    }
    let sum: f64 = v.iter().sum();
    if !(sum.abs() > 0.0) || !sum.is_finite() {
        return None;
    }
    Some(v.iter().map(|x| x / sum).collect())
}

fn combination(q: &[Vec<f64>], s: &[usize], lam: &[f64], d: usize) -> Vec<f64> {
    let mut x = vec![0.0; d];
    for (&i, &l) in s.iter().zip(lam) {
        for (xv, qv) in x.iter_mut().zip(&q[i]) {
            *xv += l * qv;
        }
    }
    x
}

/// The minimum-norm point of the convex hull of the rows of `points` ($m\times d$), by Wolfe's
/// algorithm, with its certificate (see the [module docs](self)).
pub fn min_norm_point(points: ArrayView2<f64>, opts: &MarginOptions) -> Result<MinNormPoint> {
    let (m, d) = points.dim();
    if m == 0 || d == 0 {
        return Err(Error::shape(
            "points of the polytope",
            "at least one point of dimension >= 1",
            format!("{m}x{d}"),
        ));
    }
    if points.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "the points of the polytope".into(),
        });
    }
    if !(opts.tol >= 0.0) {
        return Err(Error::param(
            "tol",
            format!("must be >= 0, got {}", opts.tol),
        ));
    }
    let raw: Vec<Vec<f64>> = points.rows().into_iter().map(|r| r.to_vec()).collect();
    let sq: Vec<f64> = raw.iter().map(|p| dot(p, p)).collect();
    let scale = sq.iter().copied().fold(0.0, f64::max);
    let j0 = (0..m)
        .min_by(|&a, &b| sq[a].total_cmp(&sq[b]).then(a.cmp(&b)))
        .expect("m >= 1");
    let mut s = vec![j0];
    let mut lam = vec![1.0];
    let mut iterations = 0;
    if scale > 0.0 {
        // Work with points scaled to max norm 1 so that the Cholesky threshold is absolute.
        let r = scale.sqrt();
        let q: Vec<Vec<f64>> = raw
            .iter()
            .map(|p| p.iter().map(|v| v / r).collect())
            .collect();
        let mut x = q[j0].clone();
        'major: loop {
            iterations += 1;
            if iterations > opts.max_iter {
                return Err(Error::numerical(
                    "minimum-norm point (Wolfe)",
                    format!("no convergence in {} cycles; raise max_iter", opts.max_iter),
                ));
            }
            let xx = dot(&x, &x);
            let (j, xpj) = (0..m)
                .map(|j| (j, dot(&x, &q[j])))
                .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
                .expect("m >= 1");
            if xx - xpj <= opts.tol || s.contains(&j) {
                break;
            }
            s.push(j);
            lam.push(0.0);
            loop {
                iterations += 1;
                if iterations > opts.max_iter {
                    return Err(Error::numerical(
                        "minimum-norm point (Wolfe)",
                        format!("no convergence in {} cycles; raise max_iter", opts.max_iter),
                    ));
                }
                let Some(alpha) = affine_minimizer(&q, &s) else {
                    // The new point is affinely dependent on the corral to rounding: x is
                    // optimal to working precision.
                    let last = s.len() - 1;
                    s.remove(last);
                    lam.remove(last);
                    break 'major;
                };
                if alpha.iter().all(|&a| a > 0.0) {
                    lam = alpha;
                    x = combination(&q, &s, &lam, d);
                    break;
                }
                // Move from lam towards alpha until the first weight reaches zero.
                let mut theta = 1.0;
                let mut out = usize::MAX;
                for i in 0..s.len() {
                    if alpha[i] <= 0.0 {
                        let t = lam[i] / (lam[i] - alpha[i]);
                        if t < theta || out == usize::MAX {
                            theta = t.min(theta);
                            out = i;
                        }
                    }
                }
                for i in 0..s.len() {
                    lam[i] = (1.0 - theta) * lam[i] + theta * alpha[i];
                }
                lam[out] = 0.0;
                let mut keep_s = Vec::with_capacity(s.len());
                let mut keep_l = Vec::with_capacity(s.len());
                for (&i, &l) in s.iter().zip(&lam) {
                    if l > 0.0 {
                        keep_s.push(i);
                        keep_l.push(l);
                    }
                }
                if keep_s.is_empty() {
                    return Err(Error::numerical(
                        "minimum-norm point (Wolfe)",
                        "the corral became empty (degenerate input)",
                    ));
                }
                let total: f64 = keep_l.iter().sum();
                keep_l.iter_mut().for_each(|l| *l /= total);
                let new_dropped = *s.last().expect("nonempty") != *keep_s.last().expect("nonempty");
                s = keep_s;
                lam = keep_l;
                if new_dropped && theta == 0.0 {
                    // No progress is possible from the new point: optimal to rounding.
                    break 'major;
                }
            }
        }
    }
    // Certificate in the original units.
    let mut weights = vec![0.0; m];
    for (&i, &l) in s.iter().zip(&lam) {
        weights[i] = l;
    }
    let x = combination(&raw, &s, &lam, d);
    let xx = dot(&x, &x);
    let xp_min = raw.iter().map(|p| dot(&x, p)).fold(f64::INFINITY, f64::min);
    let distance = xx.sqrt();
    let lower_bound = if distance > 0.0 {
        (xp_min.max(0.0) / distance).min(distance)
    } else {
        0.0
    };
    let mut support = s.clone();
    support.sort_unstable();
    Ok(MinNormPoint {
        point: x,
        weights,
        support,
        distance,
        lower_bound,
        fw_gap: (2.0 * (xx - xp_min)).max(0.0),
        iterations,
    })
}

/// The one-vs-rest margin of one class.
#[derive(Clone, Debug, Serialize)]
pub struct ClassMargin {
    /// The class $k$.
    pub class: usize,
    /// $m_k$ (an upper bound attained by `weights`; exact to the certificate).
    pub margin: f64,
    /// Certified lower bound on $m_k$.
    pub lower_bound: f64,
    /// Frank–Wolfe gap on $m_k^2$.
    pub fw_gap: f64,
    /// Classes $j\ne k$ with $\alpha_j>0$ at the optimum (the active constraints).
    pub support: Vec<usize>,
    /// $\alpha_j$ for the classes in `support`.
    pub weights: Vec<f64>,
    /// Wolfe cycles.
    pub iterations: usize,
}

/// $m_k$ of the rows of `w` ($K\times d$) as given (no normalisation).
pub fn one_vs_rest_margin(
    w: ArrayView2<f64>,
    k: usize,
    opts: &MarginOptions,
) -> Result<ClassMargin> {
    let (kk, d) = w.dim();
    if kk < 2 {
        return Err(Error::param(
            "classes",
            format!("a one-vs-rest margin needs K >= 2 class vectors, got {kk}"),
        ));
    }
    if k >= kk {
        return Err(Error::param(
            "class",
            format!("class {k} out of range 0..{kk}"),
        ));
    }
    let others: Vec<usize> = (0..kk).filter(|&j| j != k).collect();
    let p = Array2::from_shape_fn((kk - 1, d), |(r, c)| w[[k, c]] - w[[others[r], c]]);
    let mnp = min_norm_point(p.view(), opts)?;
    let support: Vec<usize> = mnp.support.iter().map(|&r| others[r]).collect();
    let weights: Vec<f64> = mnp.support.iter().map(|&r| mnp.weights[r]).collect();
    Ok(ClassMargin {
        class: k,
        margin: mnp.distance,
        lower_bound: mnp.lower_bound,
        fw_gap: mnp.fw_gap,
        support,
        weights,
        iterations: mnp.iterations,
    })
}

/// Margins of all classes and summary statistics.
#[derive(Clone, Debug, Serialize)]
pub struct MarginReport {
    /// $K$.
    pub n_classes: usize,
    /// $d$.
    pub dim: usize,
    /// Whether the rows were scaled to unit norm first.
    pub normalized: bool,
    /// $\min_km_k$.
    pub min_margin: f64,
    /// The class attaining it (smallest index on ties).
    pub argmin_class: usize,
    /// $\frac1K\sum_km_k$.
    pub mean_margin: f64,
    /// $\max_km_k$.
    pub max_margin: f64,
    /// Certified lower bound on $\min_km_k$ (the smallest per-class lower bound).
    pub min_margin_lower_bound: f64,
    /// Largest Frank–Wolfe gap over the classes.
    pub max_fw_gap: f64,
    /// $\max_{j\ne k}\cos\angle(w_j,w_k)$ (the Tammes objective); `None` if a row is zero.
    pub max_cosine: Option<f64>,
    /// $\min_{j\ne k}\lVert w_j-w_k\rVert$ of the rows used.
    pub min_pairwise_distance: f64,
    /// Per-class results.
    pub classes: Vec<ClassMargin>,
}

/// Checks `w` and returns the rows to use (unit-normalised when `normalize`).
fn prepare(w: ArrayView2<f64>, normalize: bool) -> Result<Array2<f64>> {
    let (k, d) = w.dim();
    if k < 2 || d == 0 {
        return Err(Error::shape(
            "class vectors W",
            "K x d with K >= 2 and d >= 1",
            format!("{k}x{d}"),
        ));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("W (row {}, column {})", i / d, i % d),
        });
    }
    let mut out = w.to_owned();
    if normalize {
        for (r, mut row) in out.rows_mut().into_iter().enumerate() {
            let n = row.dot(&row).sqrt();
            if !(n > 0.0) {
                return Err(Error::Data(format!(
                    "row {r} of W is zero, so it has no direction; pass unnormalised margins or drop the class"
                )));
            }
            row.mapv_inplace(|v| v / n);
        }
    }
    Ok(out)
}

/// One-vs-rest margins of every class of `w` ($K\times d$, one row per class), after scaling
/// the rows to unit norm when `normalize` (the softmax-code setting of Jiang et al.).
pub fn margins(w: ArrayView2<f64>, normalize: bool, opts: &MarginOptions) -> Result<MarginReport> {
    let u = prepare(w, normalize)?;
    let (k, d) = u.dim();
    let classes: Vec<ClassMargin> = (0..k)
        .into_par_iter()
        .map(|c| one_vs_rest_margin(u.view(), c, opts))
        .collect::<Result<_>>()?;
    let (argmin_class, min_margin) = classes
        .iter()
        .map(|c| (c.class, c.margin))
        .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    let mean_margin = classes.iter().map(|c| c.margin).sum::<f64>() / k as f64;
    let max_margin = classes.iter().map(|c| c.margin).fold(0.0, f64::max);
    let min_margin_lower_bound = classes
        .iter()
        .map(|c| c.lower_bound)
        .fold(f64::INFINITY, f64::min);
    let max_fw_gap = classes.iter().map(|c| c.fw_gap).fold(0.0, f64::max);
    let norms: Vec<f64> = u.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect();
    let mut max_cos = f64::NEG_INFINITY;
    let mut min_dist = f64::INFINITY;
    for i in 0..k {
        for j in i + 1..k {
            let ip = u.row(i).dot(&u.row(j));
            max_cos = max_cos.max(ip / (norms[i] * norms[j]));
            let dist = (norms[i] * norms[i] + norms[j] * norms[j] - 2.0 * ip)
                .max(0.0)
                .sqrt();
            min_dist = min_dist.min(dist);
        }
    }
    let max_cosine = norms.iter().all(|&n| n > 0.0).then_some(max_cos);
    Ok(MarginReport {
        n_classes: k,
        dim: d,
        normalized: normalize,
        min_margin,
        argmin_class,
        mean_margin,
        max_margin,
        min_margin_lower_bound,
        max_fw_gap,
        max_cosine,
        min_pairwise_distance: min_dist,
        classes,
    })
}

/// Margins of the (normalised) classifier rows of a UFM point $x=(W,H^\top,b)$.
pub fn ufm_margins(
    p: &crate::ufm::UfmProblem,
    x: &[f64],
    opts: &MarginOptions,
) -> Result<MarginReport> {
    p.check_len("point", x)?;
    let (w, _, _) = p.split(x);
    margins(w, true, opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn segment_and_triangle() {
        // Nearest point of the segment [(1,1),(1,-1)] is (1,0).
        let p = array![[1.0, 1.0], [1.0, -1.0]];
        let r = min_norm_point(p.view(), &MarginOptions::default()).unwrap();
        assert!((r.distance - 1.0).abs() < 1e-15, "{r:?}");
        assert!((r.lower_bound - 1.0).abs() < 1e-15);
        assert_eq!(r.support, vec![0, 1]);
        // Origin inside a triangle.
        let t = array![[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]];
        let r = min_norm_point(t.view(), &MarginOptions::default()).unwrap();
        assert!(r.distance < 1e-15, "{r:?}");
        // Nearest point is a vertex.
        let v = array![[2.0, 0.5], [3.0, 0.0], [2.5, 2.0]];
        let r = min_norm_point(v.view(), &MarginOptions::default()).unwrap();
        assert_eq!(r.support, vec![0]);
        assert!((r.distance - (4.25f64).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn bad_input_is_an_error() {
        let z = Array2::<f64>::zeros((0, 3));
        assert!(min_norm_point(z.view(), &MarginOptions::default()).is_err());
        let w = array![[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]];
        let e = margins(w.view(), true, &MarginOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1"), "{e}");
        let w = array![[1.0, f64::NAN], [0.0, 1.0]];
        assert!(margins(w.view(), false, &MarginOptions::default()).is_err());
    }
}
