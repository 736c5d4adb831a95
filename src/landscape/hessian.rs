//! The dense Hessian $\nabla^2 f(x)\in\mathbb R^{P\times P}$ of a UFM objective, assembled column
//! by column from the exact Hessian-vector product,
//! $$\big[\nabla^2f(x)\big]_{:,j}=\nabla^2f(x)\,e_j ,\qquad P=Kd+Nd\,(+K),$$
//! and symmetrised as $\tfrac12(A+A^\top)$ (the HVP is exact, so the asymmetry it removes is
//! round-off, reported as [`DenseHessian::asymmetry`]). Suitable for $P$ up to a few thousand
//! (memory $8P^2$ bytes); beyond that use [`lanczos`](super::lanczos) on the HVP directly.

use crate::error::{Error, Result};
use crate::ufm::UfmProblem;
use ndarray::Array2;
use rayon::prelude::*;

/// Largest dimension [`dense_hessian`] accepts (8 · 20000² bytes = 3.2 GB).
pub const MAX_DENSE_DIM: usize = 20_000;

/// A symmetrised dense Hessian.
#[derive(Clone, Debug)]
pub struct DenseHessian {
    /// $\tfrac12(A+A^\top)$ with $A_{:,j}=\nabla^2f(x)e_j$.
    pub matrix: Array2<f64>,
    /// $\max_{ij}|A_{ij}-A_{ji}|/\max(1,\max_{ij}|A_{ij}|)$ before symmetrisation.
    pub asymmetry: f64,
}

/// Assembles $\nabla^2 f(x)$ from $P$ Hessian-vector products (columns in parallel).
pub fn dense_hessian(p: &UfmProblem, x: &[f64]) -> Result<DenseHessian> {
    p.check_len("point", x)?;
    if !crate::real::all_finite(x) {
        return Err(Error::NonFinite {
            what: "the point given to the Hessian".into(),
        });
    }
    let n = p.n_params();
    if n > MAX_DENSE_DIM {
        return Err(Error::param(
            "dim",
            format!(
                "a dense Hessian of dimension {n} needs {:.1} GB; the limit is {MAX_DENSE_DIM}: \
                 use the Lanczos path (`--lanczos`) for extreme eigenvalues instead",
                8.0 * (n * n) as f64 / 1e9
            ),
        ));
    }
    // Column j of A is row j of Aᵀ: fill rows of a row-major matrix, then symmetrise.
    let mut at = Array2::<f64>::zeros((n, n));
    at.as_slice_mut()
        .expect("contiguous")
        .par_chunks_mut(n)
        .enumerate()
        .for_each_init(
            || vec![0.0; n],
            |e, (j, row)| {
                e[j] = 1.0;
                p.hvp(x, e, row);
                e[j] = 0.0;
            },
        );
    let scale = at.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let mut asym = 0.0f64;
    for i in 0..n {
        for j in 0..i {
            let (a, b) = (at[[i, j]], at[[j, i]]);
            asym = asym.max((a - b).abs());
            let m = 0.5 * (a + b);
            at[[i, j]] = m;
            at[[j, i]] = m;
        }
    }
    Ok(DenseHessian {
        matrix: at,
        asymmetry: asym / scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ufm::{Loss, UfmConfig};

    #[test]
    fn dense_hessian_is_symmetric_and_equals_hvp_on_unit_vectors() {
        for (loss, bias) in [
            (Loss::CrossEntropy, true),
            (Loss::Mse, false),
            (Loss::Focal { gamma: 2.0 }, true),
        ] {
            let p = UfmConfig::with_class_sizes(vec![3, 2, 4], 3)
                .lambdas(1e-2, 2e-2, 3e-3)
                .loss(loss)
                .bias(bias)
                .build()
                .unwrap();
            let x: Vec<f64> = p.random_point(5, 0.8).unwrap();
            let h = dense_hessian(&p, &x).unwrap();
            let n = p.n_params();
            assert!(h.asymmetry < 1e-12, "{loss}: asymmetry {}", h.asymmetry);
            let mut out = vec![0.0; n];
            for j in 0..n {
                let mut e = vec![0.0; n];
                e[j] = 1.0;
                p.hvp(&x, &e, &mut out);
                for i in 0..n {
                    assert_eq!(h.matrix[[i, j]], h.matrix[[j, i]]);
                    assert!(
                        (h.matrix[[i, j]] - out[i]).abs() < 1e-12,
                        "{loss}: ({i},{j}) {} vs {}",
                        h.matrix[[i, j]],
                        out[i]
                    );
                }
            }
            // And against central differences of the gradient (independent of the HVP code).
            let eps = 1e-6;
            let mut gp = vec![0.0; n];
            let mut gm = vec![0.0; n];
            for j in [0, n / 2, n - 1] {
                let mut xp = x.clone();
                let mut xm = x.clone();
                xp[j] += eps;
                xm[j] -= eps;
                p.value_grad(&xp, &mut gp);
                p.value_grad(&xm, &mut gm);
                for i in 0..n {
                    let fd = (gp[i] - gm[i]) / (2.0 * eps);
                    assert!((fd - h.matrix[[i, j]]).abs() < 1e-6, "{loss}: fd ({i},{j})");
                }
            }
        }
    }
}
