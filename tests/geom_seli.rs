//! SELI geometry (Thrampoulidis et al., arXiv 2208.05512): the closed-form targets against the
//! SVD of the SEL matrix, and the certified CE optimum approaching SELI as lambda -> 0 for
//! imbalance ratios 1, 10 and 100.

// Index loops mirror the formulas of the slow references.
#![allow(clippy::needless_range_loop)]

use ndarray::Array2;
use ufm::certify::ConvexOptions;
use ufm::seli::{normalized_distance, seli_geometry, seli_point, step_sizes};

/// (Ẑ Ẑᵀ)^{1/2} = V Λ Vᵀ and (ẐᵀẐ)^{1/2} = U Λ Uᵀ computed from a thin SVD of the explicit
/// K x N matrix Ẑ agree with the closed forms (the latter on the class blocks).
#[test]
fn seli_targets_equal_the_svd_of_the_sel_matrix() {
    for sizes in [vec![5, 3, 2], vec![4, 4, 1, 1], vec![7, 1]] {
        let k = sizes.len();
        let labels: Vec<usize> = sizes
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c, n))
            .collect();
        let n = labels.len();
        let z = Array2::from_shape_fn((k, n), |(c, i)| {
            (if labels[i] == c { 1.0 } else { 0.0 }) - 1.0 / k as f64
        });
        let (v, s, u) = ufm::linalg::thin_svd(z.view()).unwrap();
        let vlv = Array2::from_shape_fn((k, k), |(a, b)| {
            (0..s.len())
                .map(|j| v[[a, j]] * s[j] * v[[b, j]])
                .sum::<f64>()
        });
        let ulu = Array2::from_shape_fn((n, n), |(a, b)| {
            (0..s.len())
                .map(|j| u[[a, j]] * s[j] * u[[b, j]])
                .sum::<f64>()
        });
        let g = seli_geometry(&sizes).unwrap();
        let err = (&vlv - &g.w_gram)
            .iter()
            .map(|x| x.abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-13, "{sizes:?}: W gram {err}");
        for a in 0..n {
            for b in 0..n {
                let want = g.mean_gram[[labels[a], labels[b]]];
                assert!(
                    (ulu[[a, b]] - want).abs() < 1e-13,
                    "{sizes:?}: H gram ({a},{b})"
                );
            }
        }
    }
}

/// The certified optimum's distance to SELI: zero (to solver accuracy) for balanced classes at
/// every lambda; for R = 10 and 100 it decreases monotonically and at least like
/// O(1/log(1/lambda)) (the rate of the regularisation path to its max-margin limit: the product
/// distance x log(1/lambda) does not grow), while the distance to the simplex ETF stays bounded
/// away from zero (SELI is not an ETF there). lambda starts at 1e-3: at 1e-2 and R = 100 the
/// minority classifiers have already collapsed (rank 2, Fang et al. 2021).
#[test]
fn certified_optimum_approaches_seli_as_lambda_vanishes() {
    let convex = ConvexOptions {
        max_iter: 5_000,
        ..ConvexOptions::default()
    };
    let lambdas = [1e-3, 1e-5, 1e-7, 1e-9];
    for ratio in [1.0, 10.0, 100.0] {
        let sizes = step_sizes(4, 2, 10, ratio).unwrap();
        let mut prev = f64::INFINITY;
        let mut first = f64::NAN;
        for &lambda in &lambdas {
            let pt = seli_point(&sizes, lambda, false, &convex, 1e-6).unwrap();
            assert_eq!(pt.rank, 3, "R={ratio} lambda={lambda}");
            assert!(
                pt.certified_gap.abs() <= 1e-13 + 1e-9 * pt.objective,
                "R={ratio} lambda={lambda}: gap {}",
                pt.certified_gap
            );
            let d = pt.distance;
            if ratio == 1.0 {
                assert!(d.w < 1e-8 && d.logits < 1e-8 && d.means < 1e-6, "{d:?}");
            } else {
                assert!(d.w < prev, "R={ratio} lambda={lambda}: {} !< {prev}", d.w);
                assert!(d.means < 1.0 && d.logits < 1.0, "{d:?}");
                assert!(d.w_to_etf > 0.1, "{d:?}");
                let rate = d.w * (1.0 / lambda).ln();
                if first.is_nan() {
                    first = rate;
                }
                assert!(
                    rate <= 1.05 * first,
                    "R={ratio} lambda={lambda}: {rate} vs {first}"
                );
                prev = d.w;
            }
        }
        if ratio > 1.0 {
            assert!(prev < 0.5 * (first / (1e3f64).ln()), "R={ratio}: {prev}");
        }
    }
}

#[test]
fn distances_are_scale_invariant_and_reject_bad_input() {
    let g = seli_geometry(&[9, 9, 1]).unwrap();
    let a = &g.w_gram * 3.7;
    assert!(normalized_distance(a.view(), g.w_gram.view()) < 1e-15);
    assert!(normalized_distance(Array2::zeros((3, 3)).view(), g.w_gram.view()).is_nan());
    assert!(step_sizes(4, 0, 3, 10.0).is_err());
    assert!(step_sizes(4, 2, 3, 0.5).is_err());
    assert!(seli_point(&[3, 3], -1.0, false, &ConvexOptions::default(), 1e-6).is_err());
}
