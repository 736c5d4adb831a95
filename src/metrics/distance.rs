//! Distances between solutions up to the model's symmetry.
//!
//! The UFM objective is invariant under $W\mapsto WR$, $H\mapsto R^\top H$ for $R\in O(d)$, so
//! solutions are compared modulo a shared rotation (orthogonal Procrustes, Schönemann 1966):
//! $$\min_{R\in O(d)}\lVert XR-Y\rVert_F^2=\lVert X\rVert_F^2+\lVert Y\rVert_F^2-2\lVert X^\top Y\rVert_*,$$
//! with $X=[W;H^\top]$ and $Y$ the same for the reference.

use crate::error::{Error, Result};
use crate::linalg::thin_svd;
use crate::real::Real;
use crate::ufm::{GlobalMinimum, UfmProblem};
use ndarray::{concatenate, Array2, ArrayView2, Axis};
use serde::Serialize;

/// $\min_{R\in O(d)}\lVert XR-Y\rVert_F$ for two $m\times d$ matrices. The optimal rotation is
/// $R=UV^\top$ from the SVD $X^\top Y=U\Sigma V^\top$; the residual is formed explicitly (the
/// closed-form expression above cancels catastrophically near zero).
pub fn procrustes_distance(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<f64> {
    if x.dim() != y.dim() {
        return Err(Error::shape(
            "Procrustes",
            format!("{:?}", y.dim()),
            format!("{:?}", x.dim()),
        ));
    }
    let c = x.t().dot(&y);
    let (u, _, v) = thin_svd(c.view())?;
    let r = u.dot(&v.t());
    let res = x.dot(&r) - y;
    Ok(res.iter().map(|v| v * v).sum::<f64>().sqrt())
}

/// How far a UFM point is from the closed-form minimizer set.
#[derive(Clone, Debug, Serialize)]
pub struct MinimizerDistance {
    /// $\min_R\lVert[W;H^\top]R-[W^\star;H^{\star\top}]\rVert_F/\lVert[W^\star;H^{\star\top}]\rVert_F$
    /// (absolute when the minimizer is zero).
    pub wh_relative: f64,
    /// The same for $W$ alone.
    pub w_relative: f64,
    /// Distance of $b$ to the optimal bias set ($b^\star$, or the line $\beta\mathbf 1$ when any
    /// constant bias is optimal).
    pub bias: f64,
}

/// Distance of `x` to the closed-form minimizer set `gm` of problem `p`.
pub fn distance_to_minimizer<T: Real>(
    p: &UfmProblem,
    x: &[T],
    gm: &GlobalMinimum,
) -> Result<MinimizerDistance> {
    p.check_len("point", x)?;
    let star = gm.point(p, crate::ufm::EtfEmbedding::Random { seed: 0 })?;
    let (w, ht, b) = p.split(x);
    let (ws, hs, _) = p.split(&star);
    let w = w.mapv(|v| v.to_f64_());
    let ht = ht.mapv(|v| v.to_f64_());
    let xs: Array2<f64> = concatenate(Axis(0), &[w.view(), ht.view()]).expect("same width");
    let ys: Array2<f64> = concatenate(Axis(0), &[ws, hs]).expect("same width");
    let rel = |num: f64, den: f64| if den > 0.0 { num / den } else { num };
    let fro = |a: ArrayView2<f64>| a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let wh_relative = rel(procrustes_distance(xs.view(), ys.view())?, fro(ys.view()));
    let w_relative = rel(procrustes_distance(w.view(), ws)?, fro(ws));
    let bias = match b {
        None => 0.0,
        Some(b) => {
            let b: Vec<f64> = b.iter().map(|v| v.to_f64_()).collect();
            let target = if gm.bias_free_along_ones {
                b.iter().sum::<f64>() / b.len() as f64
            } else {
                gm.bias
            };
            b.iter().map(|v| (v - target).powi(2)).sum::<f64>().sqrt()
        }
    };
    Ok(MinimizerDistance {
        wh_relative,
        w_relative,
        bias,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ufm::etf::random_orthonormal;

    #[test]
    fn procrustes_is_zero_for_rotated_copies_and_positive_otherwise() {
        let x = Array2::from_shape_fn((6, 4), |(i, j)| ((i * 3 + j * 5) % 7) as f64 - 3.0);
        let r = random_orthonormal(4, 4, 5).unwrap();
        let y = x.dot(&r);
        assert!(procrustes_distance(x.view(), y.view()).unwrap() < 1e-12);
        let mut z = y.clone();
        z[[0, 0]] += 1.0;
        let dist = procrustes_distance(x.view(), z.view()).unwrap();
        assert!(dist > 0.1 && dist <= 1.0 + 1e-12);
    }
}
