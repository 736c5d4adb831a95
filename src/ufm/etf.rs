//! Simplex equiangular tight frames.
//!
//! A $K$-simplex ETF is $M=\sqrt{\tfrac{K}{K-1}}\,P\,\big(I_K-\tfrac1K\mathbf 1\mathbf 1^\top\big)$
//! with $P\in\mathbb R^{d\times K}$, $P^\top P=I_K$ (Zhu et al. 2021, Def. 2.1; Papyan et al.
//! 2020). Its columns $m_k$ have unit norm and pairwise inner products $-1/(K-1)$. The functions
//! here return $M^\top$ ($K\times d$, one unit-norm row per class), the shape of a classifier $W$.
//!
//! Two embeddings $P$:
//! * [`EtfEmbedding::Identity`]: $P$ = the first $K$ columns of $I_d$, exactly the original
//!   code's `--ETF_fc` weight (requires $d\ge K$);
//! * [`EtfEmbedding::Random`]: a seeded random orthonormal embedding of the $(K-1)$-dimensional
//!   simplex (requires only $d\ge K-1$), as in the imbalanced-learning repositories.

use crate::error::{Error, Result};
use ndarray::Array2;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// How the simplex is placed in $\mathbb R^d$.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EtfEmbedding {
    /// $P=I_{d\times K}$ (first $K$ coordinates), as in the original code. Needs $d\ge K$.
    Identity,
    /// A random orthonormal embedding from a seeded Gaussian matrix. Needs $d\ge K-1$.
    Random {
        /// Seed of the Gaussian matrix.
        seed: u64,
    },
}

/// Orthonormal basis of $\mathbf 1^\perp\subset\mathbb R^K$ as the columns of a $K\times(K-1)$
/// matrix (Helmert contrasts).
pub fn centred_basis(k: usize) -> Array2<f64> {
    let mut u = Array2::zeros((k, k.saturating_sub(1)));
    for j in 1..k {
        let norm = ((j * (j + 1)) as f64).sqrt();
        for i in 0..j {
            u[[i, j - 1]] = 1.0 / norm;
        }
        u[[j, j - 1]] = -(j as f64) / norm;
    }
    u
}

/// A $d\times r$ matrix with orthonormal columns from a seeded Gaussian (modified Gram-Schmidt,
/// applied twice for orthogonality to working precision).
pub fn random_orthonormal(d: usize, r: usize, seed: u64) -> Result<Array2<f64>> {
    if r > d {
        return Err(Error::param(
            "dim",
            format!("cannot embed {r} orthonormal columns in dimension {d}"),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut q: Array2<f64> = Array2::from_shape_fn((d, r), |_| StandardNormal.sample(&mut rng));
    for j in 0..r {
        for _ in 0..2 {
            for i in 0..j {
                let proj: f64 = q.column(i).dot(&q.column(j));
                let qi = q.column(i).to_owned();
                q.column_mut(j).scaled_add(-proj, &qi);
            }
        }
        let nrm = q.column(j).dot(&q.column(j)).sqrt();
        if nrm < 1e-12 {
            return Err(Error::numerical(
                "random_orthonormal",
                "degenerate Gaussian draw; try another seed",
            ));
        }
        q.column_mut(j).mapv_inplace(|v| v / nrm);
    }
    Ok(q)
}

/// Rows of a unit-norm simplex ETF: a $K\times d$ matrix whose rows $m_k$ satisfy
/// $\lVert m_k\rVert=1$ and $\langle m_k,m_l\rangle=-\tfrac1{K-1}$.
pub fn simplex_etf(k: usize, d: usize, embedding: EtfEmbedding) -> Result<Array2<f64>> {
    if k < 2 {
        return Err(Error::param(
            "classes",
            format!("a simplex ETF needs K >= 2, got {k}"),
        ));
    }
    let scale = (k as f64 / (k as f64 - 1.0)).sqrt();
    match embedding {
        EtfEmbedding::Identity => {
            if d < k {
                return Err(Error::param(
                    "dim",
                    format!("the identity-embedded ETF needs d >= K (got d = {d}, K = {k}); use a random embedding for d = K-1"),
                ));
            }
            let mut m = Array2::zeros((k, d));
            for i in 0..k {
                for j in 0..k {
                    m[[i, j]] = scale * (if i == j { 1.0 } else { 0.0 } - 1.0 / k as f64);
                }
            }
            Ok(m)
        }
        EtfEmbedding::Random { seed } => {
            if d + 1 < k {
                return Err(Error::param(
                    "dim",
                    format!("a simplex ETF needs d >= K-1 (got d = {d}, K = {k})"),
                ));
            }
            let u = centred_basis(k); // K × (K−1)
            let q = random_orthonormal(d, k - 1, seed)?; // d × (K−1)
            Ok(u.dot(&q.t()) * scale)
        }
    }
}

/// Rows of an orthogonal frame: $K$ orthonormal rows in $\mathbb R^d$ ($d\ge K$); the
/// minimizer's classifier for MSE without bias.
pub fn orthogonal_frame(k: usize, d: usize, embedding: EtfEmbedding) -> Result<Array2<f64>> {
    if d < k {
        return Err(Error::param(
            "dim",
            format!("an orthogonal frame of K = {k} rows needs d >= K, got d = {d}"),
        ));
    }
    match embedding {
        EtfEmbedding::Identity => {
            let mut m = Array2::zeros((k, d));
            for i in 0..k {
                m[[i, i]] = 1.0;
            }
            Ok(m)
        }
        EtfEmbedding::Random { seed } => Ok(random_orthonormal(d, k, seed)?.t().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_etf(m: &Array2<f64>) {
        let k = m.nrows();
        let g = m.dot(&m.t());
        for i in 0..k {
            for j in 0..k {
                let want = if i == j { 1.0 } else { -1.0 / (k as f64 - 1.0) };
                assert!(
                    (g[[i, j]] - want).abs() < 1e-12,
                    "G[{i},{j}] = {}",
                    g[[i, j]]
                );
            }
        }
    }

    #[test]
    fn etf_gram_is_equinorm_equiangular_for_both_embeddings() {
        for (k, d) in [(2, 2), (3, 3), (4, 8), (10, 10), (10, 9), (5, 4)] {
            if d >= k {
                check_etf(&simplex_etf(k, d, EtfEmbedding::Identity).unwrap());
            }
            check_etf(&simplex_etf(k, d, EtfEmbedding::Random { seed: 3 }).unwrap());
        }
    }

    #[test]
    fn identity_embedding_is_the_original_codes_weight() {
        // sqrt(K/(K-1)) (I - 11ᵀ/K) in the first K columns, zeros elsewhere.
        let m = simplex_etf(3, 5, EtfEmbedding::Identity).unwrap();
        let s = (1.5f64).sqrt();
        assert!((m[[0, 0]] - s * (2.0 / 3.0)).abs() < 1e-15);
        assert!((m[[0, 1]] + s / 3.0).abs() < 1e-15);
        assert_eq!(m[[2, 4]], 0.0);
    }

    #[test]
    fn etf_rejects_too_small_dimension() {
        assert!(simplex_etf(4, 3, EtfEmbedding::Identity).is_err());
        assert!(simplex_etf(4, 2, EtfEmbedding::Random { seed: 0 }).is_err());
        assert!(orthogonal_frame(4, 3, EtfEmbedding::Identity).is_err());
    }

    #[test]
    fn orthogonal_frame_rows_are_orthonormal() {
        let m = orthogonal_frame(4, 7, EtfEmbedding::Random { seed: 9 }).unwrap();
        let g = m.dot(&m.t());
        for i in 0..4 {
            for j in 0..4 {
                assert!((g[[i, j]] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }
}
