//! The exact Hessian spectrum at a point with **collapsed features** ($h_i=\bar h_k$ for every
//! sample $i$ of class $k$), from $O(Kd)$ Hessian-vector products instead of $P=(K+N)d+K$.
//!
//! At such a point the logits, $\nabla\ell$ and $\nabla^2\ell$ are equal within a class. Let
//! $V_0$ be the within-class zero-sum feature directions ($v$ on $H$ only, with
//! $\sum_{i\in k}v_i=0$ for each class). On $V_0$ the Hessian acts sample-wise as
//! $$D_k=\tfrac1N W^\top\nabla^2\ell(z_k)\,W+\lambda_HI_d ,$$
//! and every cross term to $W$ and $b$ ($\tfrac1N\sum_i[\nabla^2\ell_i(Wv_i)h_i^\top+g_iv_i^\top]$,
//! $\tfrac1N\sum_i\nabla^2\ell_iWv_i$) vanishes because $\sum_{i\in k}v_i=0$. So $V_0$ and its
//! orthogonal complement $V_1$ (all of $W$, $b$ and the class-mean feature directions
//! $u_{k,a}=n_k^{-1/2}\sum_{i\in k}e_{i,a}$; dimension $2Kd+K$) are invariant, and
//! $$\operatorname{spec}\nabla^2f=\operatorname{spec}\big(Q^\top\nabla^2f\,Q\big)\ \cup\ \bigcup_k\operatorname{spec}(D_k)^{\times(n_k-1)} ,$$
//! with $Q$ an orthonormal basis of $V_1$. Both pieces are assembled from exact HVPs.
//!
//! **When it applies.** For a loss convex in the logits (CE, MSE, label smoothing), $\nabla_{h_i}f=0$
//! says $h_i$ minimises the strongly convex $\frac1N\ell(Wh+b,y_i)+\frac{\lambda_H}2\lVert h\rVert^2$,
//! whose minimiser depends only on the class; so **every critical point has collapsed
//! features** and this is exact there. A computed point is collapsed only up to round-off: the
//! spectrum is then that of the collapsed point $\bar x$ (each $h_i$ replaced by its class
//! mean), and by Weyl's inequality it differs from the spectrum at $x$ by at most
//! $\lVert\nabla^2f(x)-\nabla^2f(\bar x)\rVert_2=O(\lVert x-\bar x\rVert)$; the distance
//! $\lVert x-\bar x\rVert$ is reported.

use crate::error::{Error, Result};
use crate::ufm::UfmProblem;
use ndarray::Array2;
use rayon::prelude::*;

/// Spectrum at a collapsed point.
#[derive(Clone, Debug)]
pub struct CollapsedSpectrum {
    /// All $P$ eigenvalues, ascending (with multiplicities).
    pub eigenvalues: Vec<f64>,
    /// $\lVert x-\bar x\rVert$, the distance to the exactly collapsed point used.
    pub collapse_distance: f64,
    /// $\dim V_1=2Kd+K$.
    pub reduced_dim: usize,
    /// Unit eigenvector of $\lambda_{\min}$ in $\mathbb R^P$ (if requested).
    pub min_eigenvector: Option<Vec<f64>>,
}

/// $\bar x$: every feature replaced by its class mean, and $\lVert x-\bar x\rVert$.
pub fn collapse(p: &UfmProblem, x: &[f64]) -> Result<(Vec<f64>, f64)> {
    p.check_len("point", x)?;
    let d = p.feature_dim();
    let mut xb = x.to_vec();
    let (_, mut h, _) = p.split_mut(&mut xb);
    let mut start = 0;
    for &nk in p.class_sizes() {
        let mut block = h.slice_mut(ndarray::s![start..start + nk, ..]);
        let mean = block
            .mean_axis(ndarray::Axis(0))
            .expect("class has samples");
        for mut row in block.rows_mut() {
            row.assign(&mean);
        }
        start += nk;
    }
    debug_assert_eq!(h.ncols(), d);
    let dist = x
        .iter()
        .zip(&xb)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    Ok((xb, dist))
}

/// The exact spectrum of $\nabla^2f(\bar x)$ by the class decomposition (module docs).
pub fn collapsed_spectrum(
    p: &UfmProblem,
    x: &[f64],
    want_vector: bool,
) -> Result<CollapsedSpectrum> {
    let (xb, collapse_distance) = collapse(p, x)?;
    if !crate::real::all_finite(&xb) {
        return Err(Error::NonFinite {
            what: "the point given to the Hessian".into(),
        });
    }
    let (k, d, n) = (p.n_classes(), p.feature_dim(), p.n_samples());
    let dim = p.n_params();
    let kd = k * d;
    let nb = if p.has_bias() { k } else { 0 };
    let m = 2 * kd + nb;
    let starts: Vec<usize> = p
        .class_sizes()
        .iter()
        .scan(0, |s, &nk| {
            let a = *s;
            *s += nk;
            Some(a)
        })
        .collect();
    let h_off = kd;
    let b_off = kd + n * d;
    // Basis vector c of V1 as a full vector.
    let basis = |c: usize, out: &mut [f64]| {
        out.iter_mut().for_each(|v| *v = 0.0);
        if c < kd {
            out[c] = 1.0;
        } else if c < 2 * kd {
            let (cls, a) = ((c - kd) / d, (c - kd) % d);
            let s = 1.0 / (p.class_sizes()[cls] as f64).sqrt();
            for i in starts[cls]..starts[cls] + p.class_sizes()[cls] {
                out[h_off + i * d + a] = s;
            }
        } else {
            out[b_off + (c - 2 * kd)] = 1.0;
        }
    };
    // Qᵀ v for a full vector v.
    let project = |v: &[f64], out: &mut [f64]| {
        out[..kd].copy_from_slice(&v[..kd]);
        for cls in 0..k {
            let s = 1.0 / (p.class_sizes()[cls] as f64).sqrt();
            for a in 0..d {
                let mut acc = 0.0;
                for i in starts[cls]..starts[cls] + p.class_sizes()[cls] {
                    acc += v[h_off + i * d + a];
                }
                out[kd + cls * d + a] = s * acc;
            }
        }
        out[2 * kd..].copy_from_slice(&v[b_off..b_off + nb]);
    };
    let mut rt = Array2::<f64>::zeros((m, m));
    rt.as_slice_mut()
        .expect("contiguous")
        .par_chunks_mut(m)
        .enumerate()
        .for_each_init(
            || (vec![0.0; dim], vec![0.0; dim]),
            |(q, hq), (c, row)| {
                basis(c, q);
                p.hvp(&xb, q, hq);
                project(hq, row);
            },
        );
    let mut r = rt.clone();
    for i in 0..m {
        for j in 0..m {
            r[[i, j]] = 0.5 * (rt[[i, j]] + rt[[j, i]]);
        }
    }
    // D_k from v = (e_{i0,a} - e_{i1,a})/√2 for two samples of class k.
    let blocks: Vec<Option<Array2<f64>>> = (0..k)
        .into_par_iter()
        .map(|cls| {
            if p.class_sizes()[cls] < 2 {
                return None;
            }
            let (i0, i1) = (starts[cls], starts[cls] + 1);
            let s = std::f64::consts::FRAC_1_SQRT_2;
            let mut dk = Array2::<f64>::zeros((d, d));
            let (mut v, mut hv) = (vec![0.0; dim], vec![0.0; dim]);
            for a in 0..d {
                v[h_off + i0 * d + a] = s;
                v[h_off + i1 * d + a] = -s;
                p.hvp(&xb, &v, &mut hv);
                v[h_off + i0 * d + a] = 0.0;
                v[h_off + i1 * d + a] = 0.0;
                for t in 0..d {
                    dk[[t, a]] = s * (hv[h_off + i0 * d + t] - hv[h_off + i1 * d + t]);
                }
            }
            let dt = dk.t().to_owned();
            Some((dk + dt) * 0.5)
        })
        .collect();
    let (rvals, rvecs) = if want_vector {
        let (v, u) = crate::linalg::sym_eigen(r.view())?;
        (v, Some(u))
    } else {
        (crate::linalg::sym_eigenvalues(r.view())?, None)
    };
    let mut eigenvalues = rvals.clone();
    let mut best_block: Option<(f64, usize, Vec<f64>)> = None;
    for (cls, b) in blocks.iter().enumerate() {
        let Some(b) = b else { continue };
        let (vals, vecs) = crate::linalg::sym_eigen(b.view())?;
        for &v in &vals {
            eigenvalues.extend(std::iter::repeat_n(v, p.class_sizes()[cls] - 1));
        }
        if best_block.as_ref().is_none_or(|bb| vals[0] < bb.0) {
            best_block = Some((vals[0], cls, vecs.column(0).to_vec()));
        }
    }
    eigenvalues.sort_by(|a, b| a.total_cmp(b));
    debug_assert_eq!(eigenvalues.len(), dim);
    let min_eigenvector = if want_vector {
        let mut y = vec![0.0; dim];
        match best_block {
            Some((lam, cls, u)) if lam < rvals[0] => {
                let s = std::f64::consts::FRAC_1_SQRT_2;
                let (i0, i1) = (starts[cls], starts[cls] + 1);
                for a in 0..d {
                    y[h_off + i0 * d + a] = s * u[a];
                    y[h_off + i1 * d + a] = -s * u[a];
                }
            }
            _ => {
                let u = rvecs.as_ref().expect("vectors requested");
                let mut q = vec![0.0; dim];
                for c in 0..m {
                    basis(c, &mut q);
                    crate::real::axpy(u[[c, 0]], &q, &mut y);
                }
            }
        }
        Some(y)
    } else {
        None
    };
    Ok(CollapsedSpectrum {
        eigenvalues,
        collapse_distance,
        reduced_dim: m,
        min_eigenvector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landscape::critical::{catalogue, newton_polish};
    use crate::landscape::{dense_hessian, spectrum};
    use crate::ufm::{Loss, UfmConfig};

    #[test]
    fn class_decomposition_reproduces_the_dense_spectrum_at_critical_points() {
        for (loss, sizes, lb) in [
            (Loss::CrossEntropy, vec![3, 3, 3, 3], 1e-3),
            (Loss::CrossEntropy, vec![2, 4, 3, 1], 0.0),
            (Loss::Mse, vec![3, 2, 4, 3], 0.0),
            (Loss::LabelSmoothing { alpha: 0.1 }, vec![3, 3, 3, 3], 1e-3),
        ] {
            let p = UfmConfig::with_class_sizes(sizes, 5)
                .lambdas(5e-3, 1e-2, lb)
                .loss(loss)
                .build()
                .unwrap();
            let mut x: Vec<f64> = p.random_point(4, 1.0).unwrap();
            newton_polish(&p, &mut x, 1e-11).unwrap();
            let mut points = vec![x];
            points.extend(catalogue(&p, 1).unwrap().into_iter().map(|c| c.x));
            for x in &points {
                let dense =
                    spectrum(dense_hessian(&p, x).unwrap().matrix.view(), 1e-7, false).unwrap();
                let c = collapsed_spectrum(&p, x, true).unwrap();
                assert!(
                    c.collapse_distance < 1e-8,
                    "{loss}: not collapsed {}",
                    c.collapse_distance
                );
                let scale = dense
                    .summary
                    .lambda_max
                    .abs()
                    .max(dense.summary.lambda_min.abs());
                assert_eq!(c.eigenvalues.len(), dense.eigenvalues.len());
                for (a, b) in c.eigenvalues.iter().zip(&dense.eigenvalues) {
                    assert!((a - b).abs() < 1e-9 * scale, "{loss}: {a} vs {b}");
                }
                // The returned vector is a unit eigenvector of the smallest eigenvalue.
                let y = c.min_eigenvector.unwrap();
                let mut hy = vec![0.0; y.len()];
                p.hvp(x, &y, &mut hy);
                let lam = c.eigenvalues[0];
                let r: f64 = hy
                    .iter()
                    .zip(&y)
                    .map(|(a, b)| (a - lam * b).powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!(r < 1e-8 * scale, "{loss}: residual {r}");
                assert!((crate::real::norm(&y) - 1.0).abs() < 1e-12);
            }
        }
    }
}
