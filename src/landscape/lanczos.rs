//! Extreme eigenvalues of a symmetric operator $A$ (the Hessian, applied by exact HVPs) by the
//! Lanczos method with full reorthogonalisation (Lanczos 1950; Golub & Van Loan, §10.1).
//!
//! After $m$ steps from a seeded random unit vector $q_1$, $AQ_m=Q_mT_m+\beta_mq_{m+1}e_m^\top$
//! with $Q_m$ orthonormal (each new vector is orthogonalised twice against all previous ones) and
//! $T_m$ tridiagonal. A Ritz pair $(\theta,y=Q_ms)$ with $T_ms=\theta s$ has residual
//! $\lVert Ay-\theta y\rVert=|\beta_m s_m|$.
//!
//! **Accuracy.** Iteration stops when both extreme Ritz pairs have residual
//! $r\le\varepsilon\max(|\theta_{\min}|,|\theta_{\max}|)$. Returned residuals are recomputed
//! explicitly as $\lVert Ay-\theta y\rVert$. Then (Krylov–Bogoliubov) $A$ has an eigenvalue in
//! $[\theta-r,\theta+r]$, and by interlacing $\lambda_{\min}\le\theta_{\min}$,
//! $\theta_{\max}\le\lambda_{\max}$. If that eigenvalue is separated from the rest of the spectrum
//! by a gap $\delta$, the error is at most $r^2/\delta$. As with every Krylov method, an extreme
//! eigenvalue whose eigenvector is (numerically) orthogonal to $q_1$ can be missed; a random
//! $q_1$ makes this a probability-zero event in exact arithmetic.
//!
//! Memory: $m$ vectors of length $P$ ($8mP$ bytes).

use crate::error::{Error, Result};
use crate::real::{axpy, dot, norm};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

/// Settings of [`lanczos_extremes`].
#[derive(Clone, Debug)]
pub struct LanczosOptions {
    /// Maximum Lanczos steps $m$ (capped at the dimension).
    pub max_iter: usize,
    /// Relative residual tolerance $\varepsilon$.
    pub tol: f64,
    /// Seed of the starting vector.
    pub seed: u64,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        LanczosOptions {
            max_iter: 300,
            tol: 1e-8,
            seed: 0,
        }
    }
}

/// Result of [`lanczos_extremes`].
#[derive(Clone, Debug, Serialize)]
pub struct LanczosResult {
    /// Smallest Ritz value $\theta_{\min}\ge\lambda_{\min}$.
    pub lambda_min: f64,
    /// Largest Ritz value $\theta_{\max}\le\lambda_{\max}$.
    pub lambda_max: f64,
    /// $\lVert Ay_{\min}-\theta_{\min}y_{\min}\rVert$ (an eigenvalue lies within this of $\theta_{\min}$).
    pub residual_min: f64,
    /// $\lVert Ay_{\max}-\theta_{\max}y_{\max}\rVert$.
    pub residual_max: f64,
    /// Lanczos steps taken.
    pub iterations: usize,
    /// Whether the residual tolerance was met (or an invariant subspace was found).
    pub converged: bool,
    /// Unit Ritz vector of $\theta_{\min}$.
    #[serde(skip)]
    pub min_vector: Vec<f64>,
}

/// Extreme eigenpairs of the symmetric operator `apply` ($v\mapsto Av$, writing into `out`) of
/// dimension `dim`. See the module docs for the accuracy guarantee.
pub fn lanczos_extremes(
    dim: usize,
    mut apply: impl FnMut(&[f64], &mut [f64]) -> Result<()>,
    opts: &LanczosOptions,
) -> Result<LanczosResult> {
    if dim == 0 {
        return Err(Error::param("dim", "Lanczos needs a dimension >= 1"));
    }
    if !(opts.tol.is_finite() && opts.tol > 0.0) {
        return Err(Error::param(
            "lanczos-tol",
            format!("must be > 0, got {}", opts.tol),
        ));
    }
    let m_max = opts.max_iter.clamp(1, dim);
    // up to m_max basis vectors of length dim are kept (full reorthogonalisation), plus the
    // m x m tridiagonal matrix and its eigenvectors: refuse what cannot fit before starting
    let bytes = (m_max as u64)
        .checked_mul(dim as u64)
        .and_then(|v| v.checked_add((m_max as u64).checked_mul(m_max as u64)?.checked_mul(2)?))
        .and_then(|v| v.checked_mul(8));
    crate::limits::check_memory(
        "lanczos-steps",
        &format!("Lanczos with {m_max} steps on dimension {dim}"),
        bytes,
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let mut q0: Vec<f64> = (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect();
    let n0 = norm(&q0);
    q0.iter_mut().for_each(|v| *v /= n0);
    let mut qs: Vec<Vec<f64>> = vec![q0];
    let (mut alpha, mut beta) = (Vec::<f64>::new(), Vec::<f64>::new());
    let mut w = vec![0.0; dim];
    let mut ritz: Option<(Vec<f64>, ndarray::Array2<f64>)> = None;
    let mut converged = false;
    for j in 0..m_max {
        apply(&qs[j], &mut w)?;
        if w.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "a Hessian-vector product inside Lanczos".into(),
            });
        }
        let a = dot(&qs[j], &w);
        alpha.push(a);
        // Full reorthogonalisation, twice ("twice is enough", Parlett).
        for _ in 0..2 {
            for q in &qs {
                let c = dot(q, &w);
                axpy(-c, q, &mut w);
            }
        }
        let b = norm(&w);
        let steps = j + 1;
        let scale = alpha.iter().map(|v| v.abs()).fold(b, f64::max);
        let invariant = b <= 1e-13 * scale.max(f64::MIN_POSITIVE) || steps == dim;
        let check = invariant || steps == m_max || steps % 5 == 0 || steps < 5;
        if check {
            let t = tridiagonal(&alpha, &beta);
            let (vals, vecs) = crate::linalg::sym_eigen(t.view())?;
            let last = steps - 1;
            let r_min = (b * vecs[[last, 0]]).abs();
            let r_max = (b * vecs[[last, steps - 1]]).abs();
            let s = vals[0].abs().max(vals[steps - 1].abs());
            ritz = Some((vals, vecs));
            if invariant || (r_min <= opts.tol * s && r_max <= opts.tol * s) {
                converged = true;
                break;
            }
        }
        if steps == m_max {
            break;
        }
        beta.push(b);
        w.iter_mut().for_each(|v| *v /= b);
        qs.push(std::mem::replace(&mut w, vec![0.0; dim]));
    }
    let (vals, vecs) = ritz.expect("the last step always computes Ritz values");
    let steps = vals.len();
    let ritz_vector = |col: usize| -> Vec<f64> {
        let mut y = vec![0.0; dim];
        for (i, q) in qs.iter().take(steps).enumerate() {
            axpy(vecs[[i, col]], q, &mut y);
        }
        let ny = norm(&y);
        y.iter_mut().for_each(|v| *v /= ny);
        y
    };
    let mut residual = |y: &[f64], theta: f64| -> Result<f64> {
        let mut ay = vec![0.0; dim];
        apply(y, &mut ay)?;
        axpy(-theta, y, &mut ay);
        Ok(norm(&ay))
    };
    let y_min = ritz_vector(0);
    let y_max = ritz_vector(steps - 1);
    let residual_min = residual(&y_min, vals[0])?;
    let residual_max = residual(&y_max, vals[steps - 1])?;
    Ok(LanczosResult {
        lambda_min: vals[0],
        lambda_max: vals[steps - 1],
        residual_min,
        residual_max,
        iterations: steps,
        converged,
        min_vector: y_min,
    })
}

fn tridiagonal(alpha: &[f64], beta: &[f64]) -> ndarray::Array2<f64> {
    let m = alpha.len();
    let mut t = ndarray::Array2::zeros((m, m));
    for i in 0..m {
        t[[i, i]] = alpha[i];
        if i + 1 < m {
            t[[i + 1, i]] = beta[i];
            t[[i, i + 1]] = beta[i];
        }
    }
    t
}

/// Extreme eigenpairs of the UFM Hessian $\nabla^2f(x)$ by Lanczos on exact HVPs.
pub fn hessian_extremes(
    p: &crate::ufm::UfmProblem,
    x: &[f64],
    opts: &LanczosOptions,
) -> Result<LanczosResult> {
    p.check_len("point", x)?;
    lanczos_extremes(
        p.n_params(),
        |v, out| {
            p.hvp(x, v, out);
            Ok(())
        },
        opts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landscape::{dense_hessian, spectrum};
    use crate::ufm::{Loss, UfmConfig};

    /// A step count whose basis cannot fit is refused up front (no allocation, no call of the
    /// operator), naming the flag.
    #[test]
    fn lanczos_refuses_a_basis_that_cannot_fit() {
        let opts = LanczosOptions {
            max_iter: 1 << 40,
            ..LanczosOptions::default()
        };
        let e = lanczos_extremes(1 << 40, |_, _| panic!("never applied"), &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`lanczos-steps`"), "{e}");
    }

    #[test]
    fn lanczos_agrees_with_the_dense_spectrum() {
        for (loss, seed) in [
            (Loss::CrossEntropy, 1),
            (Loss::Mse, 2),
            (Loss::CrossEntropy, 3),
        ] {
            let p = UfmConfig::balanced(4, 6, 5)
                .lambdas(5e-3, 5e-3, 1e-3)
                .loss(loss)
                .build()
                .unwrap();
            let x: Vec<f64> = p.random_point(seed, 1.0).unwrap();
            let h = dense_hessian(&p, &x).unwrap();
            let s = spectrum(h.matrix.view(), 1e-9, true).unwrap();
            let opts = LanczosOptions {
                max_iter: 200,
                tol: 1e-10,
                seed: 7,
            };
            let l = hessian_extremes(&p, &x, &opts).unwrap();
            let scale = s.summary.lambda_max.abs().max(s.summary.lambda_min.abs());
            assert!(l.converged, "{loss}: {} steps", l.iterations);
            // Interlacing and the residual bound, both stated in the module docs.
            assert!(l.lambda_min >= s.summary.lambda_min - 1e-12 * scale);
            assert!(l.lambda_max <= s.summary.lambda_max + 1e-12 * scale);
            assert!((l.lambda_min - s.summary.lambda_min).abs() <= l.residual_min + 1e-12 * scale);
            assert!((l.lambda_max - s.summary.lambda_max).abs() <= l.residual_max + 1e-12 * scale);
            assert!(
                (l.lambda_min - s.summary.lambda_min).abs() < 1e-8 * scale,
                "{loss}"
            );
            assert!(
                (l.lambda_max - s.summary.lambda_max).abs() < 1e-8 * scale,
                "{loss}"
            );
            // The Ritz vector is an eigenvector of the dense matrix (up to the residual).
            let hv = h.matrix.dot(&ndarray::arr1(&l.min_vector));
            let r: f64 = hv
                .iter()
                .zip(&l.min_vector)
                .map(|(a, v)| (a - l.lambda_min * v).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!((r - l.residual_min).abs() < 1e-9 * scale);
        }
    }

    #[test]
    fn lanczos_finds_an_invariant_subspace_exactly() {
        // A = diag(1..=6): Krylov space from a random vector is all of R^6 after 6 steps.
        let l = lanczos_extremes(
            6,
            |v, out| {
                for i in 0..6 {
                    out[i] = (i + 1) as f64 * v[i];
                }
                Ok(())
            },
            &LanczosOptions::default(),
        )
        .unwrap();
        assert!(l.converged && l.iterations <= 6);
        assert!((l.lambda_min - 1.0).abs() < 1e-12 && (l.lambda_max - 6.0).abs() < 1e-12);
        assert!(lanczos_extremes(0, |_, _| Ok(()), &LanczosOptions::default()).is_err());
    }
}
