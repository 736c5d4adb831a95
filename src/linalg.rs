//! Thin wrappers over faer (pure-Rust dense linear algebra) on ndarray matrices.
//!
//! **Determinism.** faer's convenience methods split their work into as many tasks as the
//! current rayon pool has threads, and the split changes the rounding (a Hessian spectrum came
//! out different in the last digits on 1 and 2 threads). These wrappers call faer's
//! decompositions with a fixed [`PAR_TASKS`] instead, so the same matrix gives the same bits
//! on any number of threads (the tasks still run on whatever threads the pool has).

use crate::error::{Error, Result};
use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::{evd, svd};
use faer::{Mat, Par};
use faer_ext::{IntoFaer, IntoNdarray};
use ndarray::{Array2, ArrayView2};

/// Tasks faer splits each decomposition into, whatever the number of threads.
pub const PAR_TASKS: usize = 4;

fn par() -> Par {
    Par::rayon(PAR_TASKS)
}

/// Eigen-decomposition of a symmetric matrix: eigenvalues ascending and the eigenvectors as
/// the columns of the returned matrix. Only the lower triangle is read.
pub fn sym_eigen(a: ArrayView2<f64>) -> Result<(Vec<f64>, Array2<f64>)> {
    check_square("sym_eigen", &a)?;
    let n = a.nrows();
    let mut u = Mat::<f64>::zeros(n, n);
    let mut s = Diag::<f64>::zeros(n);
    let req = evd::self_adjoint_evd_scratch::<f64>(
        n,
        evd::ComputeEigenvectors::Yes,
        par(),
        Default::default(),
    );
    evd::self_adjoint_evd(
        a.into_faer(),
        s.as_mut(),
        Some(u.as_mut()),
        par(),
        MemStack::new(&mut MemBuffer::new(req)),
        Default::default(),
    )
    .map_err(|e| Error::numerical("symmetric eigensolver", format!("{e:?}")))?;
    let vals: Vec<f64> = s.column_vector().iter().copied().collect();
    Ok((vals, u.as_ref().into_ndarray().to_owned()))
}

/// Eigenvalues (ascending) of a symmetric matrix; only the lower triangle is read.
pub fn sym_eigenvalues(a: ArrayView2<f64>) -> Result<Vec<f64>> {
    check_square("sym_eigenvalues", &a)?;
    let n = a.nrows();
    let mut s = Diag::<f64>::zeros(n);
    let req = evd::self_adjoint_evd_scratch::<f64>(
        n,
        evd::ComputeEigenvectors::No,
        par(),
        Default::default(),
    );
    evd::self_adjoint_evd(
        a.into_faer(),
        s.as_mut(),
        None,
        par(),
        MemStack::new(&mut MemBuffer::new(req)),
        Default::default(),
    )
    .map_err(|e| Error::numerical("symmetric eigensolver", format!("{e:?}")))?;
    Ok(s.column_vector().iter().copied().collect())
}

/// Singular values (descending).
pub fn singular_values(a: ArrayView2<f64>) -> Result<Vec<f64>> {
    let (m, n) = a.dim();
    let mut s = Diag::<f64>::zeros(m.min(n));
    let req = svd::svd_scratch::<f64>(
        m,
        n,
        svd::ComputeSvdVectors::No,
        svd::ComputeSvdVectors::No,
        par(),
        Default::default(),
    );
    svd::svd(
        a.into_faer(),
        s.as_mut(),
        None,
        None,
        par(),
        MemStack::new(&mut MemBuffer::new(req)),
        Default::default(),
    )
    .map_err(|e| Error::numerical("SVD", format!("{e:?}")))?;
    Ok(s.column_vector().iter().copied().collect())
}

/// Thin SVD $A=U\Sigma V^\top$: returns $(U, \sigma, V)$ with $\sigma$ descending.
pub fn thin_svd(a: ArrayView2<f64>) -> Result<(Array2<f64>, Vec<f64>, Array2<f64>)> {
    let (m, n) = a.dim();
    let r = m.min(n);
    let (mut u, mut v) = (Mat::<f64>::zeros(m, r), Mat::<f64>::zeros(n, r));
    let mut s = Diag::<f64>::zeros(r);
    let req = svd::svd_scratch::<f64>(
        m,
        n,
        svd::ComputeSvdVectors::Thin,
        svd::ComputeSvdVectors::Thin,
        par(),
        Default::default(),
    );
    svd::svd(
        a.into_faer(),
        s.as_mut(),
        Some(u.as_mut()),
        Some(v.as_mut()),
        par(),
        MemStack::new(&mut MemBuffer::new(req)),
        Default::default(),
    )
    .map_err(|e| Error::numerical("SVD", format!("{e:?}")))?;
    let sv: Vec<f64> = s.column_vector().iter().copied().collect();
    Ok((
        u.as_ref().into_ndarray().to_owned(),
        sv,
        v.as_ref().into_ndarray().to_owned(),
    ))
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
