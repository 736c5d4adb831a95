//! Thin wrappers over faer (pure-Rust dense linear algebra) on ndarray matrices.

use crate::error::{Error, Result};
use faer_ext::{IntoFaer, IntoNdarray};
use ndarray::{Array2, ArrayView2};

/// Eigen-decomposition of a symmetric matrix: eigenvalues ascending and the eigenvectors as
/// the columns of the returned matrix. Only the lower triangle is read.
pub fn sym_eigen(a: ArrayView2<f64>) -> Result<(Vec<f64>, Array2<f64>)> {
    check_square("sym_eigen", &a)?;
    let m = a.into_faer();
    let e = m
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|e| Error::numerical("symmetric eigensolver", format!("{e:?}")))?;
    let vals: Vec<f64> = e.S().column_vector().iter().copied().collect();
    let vecs = e.U().into_ndarray().to_owned();
    Ok((vals, vecs))
}

/// Eigenvalues (ascending) of a symmetric matrix; only the lower triangle is read.
pub fn sym_eigenvalues(a: ArrayView2<f64>) -> Result<Vec<f64>> {
    check_square("sym_eigenvalues", &a)?;
    a.into_faer()
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .map_err(|e| Error::numerical("symmetric eigensolver", format!("{e:?}")))
}

/// Singular values (descending).
pub fn singular_values(a: ArrayView2<f64>) -> Result<Vec<f64>> {
    a.into_faer()
        .singular_values()
        .map_err(|e| Error::numerical("SVD", format!("{e:?}")))
}

/// Thin SVD $A=U\Sigma V^\top$: returns $(U, \sigma, V)$ with $\sigma$ descending.
pub fn thin_svd(a: ArrayView2<f64>) -> Result<(Array2<f64>, Vec<f64>, Array2<f64>)> {
    let s = a
        .into_faer()
        .thin_svd()
        .map_err(|e| Error::numerical("SVD", format!("{e:?}")))?;
    let u = s.U().into_ndarray().to_owned();
    let v = s.V().into_ndarray().to_owned();
    let sv: Vec<f64> = s.S().column_vector().iter().copied().collect();
    Ok((u, sv, v))
}

fn check_square(what: &str, a: &ArrayView2<f64>) -> Result<()> {
    if a.nrows() != a.ncols() {
        return Err(Error::shape(
            what,
            "a square matrix",
            format!("{}x{}", a.nrows(), a.ncols()),
        ));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("the matrix given to {what}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn eigen_reconstructs_and_svd_orders() {
        let a = array![[4.0, 1.0, 0.5], [1.0, 3.0, -0.2], [0.5, -0.2, 1.0]];
        let (vals, u) = sym_eigen(a.view()).unwrap();
        assert!(vals.windows(2).all(|w| w[0] <= w[1]));
        let d = Array2::from_diag(&ndarray::Array1::from(vals.clone()));
        let r = u.dot(&d).dot(&u.t());
        assert!((&r - &a).iter().all(|v| v.abs() < 1e-13));
        let sv = singular_values(a.view()).unwrap();
        assert!((sv[0] - vals[2]).abs() < 1e-12);
        let (uu, s, v) = thin_svd(array![[3.0, 0.0], [0.0, -2.0], [0.0, 0.0]].view()).unwrap();
        assert_eq!(uu.dim(), (3, 2));
        assert!((s[0] - 3.0).abs() < 1e-14 && (s[1] - 2.0).abs() < 1e-14);
        assert_eq!(v.dim(), (2, 2));
    }
}
