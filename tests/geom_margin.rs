//! One-vs-rest margins (generalized NC, Jiang et al. arXiv 2310.05351): closed forms of the exact
//! codes, invariance under rotations and permutations, a brute-force reference on random
//! instances, and the margin geometry of UFM solutions with K > d+1.

// Index loops mirror the formulas of the slow references.
#![allow(clippy::needless_range_loop)]

use ndarray::Array2;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use ufm::geometry::{margins, min_norm_point, reference_code, Code, MarginOptions};
use ufm::solver::{Executor, Lbfgs};
use ufm::ufm::UfmConfig;

fn all_codes() -> Vec<Code> {
    let mut v = Vec::new();
    for k in 2..=7 {
        v.push(Code::Simplex { k });
    }
    for k in 3..=9 {
        v.push(Code::Polygon { k });
    }
    for d in 1..=5 {
        v.push(Code::Cross { d });
    }
    v.extend([
        Code::Icosahedron,
        Code::E8,
        Code::HigmanSims,
        Code::McLaughlin,
    ]);
    v
}

#[test]
fn every_code_has_its_closed_form_margin_with_a_tight_certificate() {
    let opts = MarginOptions::default();
    for code in all_codes() {
        let w = code.build().unwrap();
        let (k, d) = code.dims();
        assert_eq!(w.dim(), (k, d), "{code}");
        for r in w.rows() {
            assert!((r.dot(&r) - 1.0).abs() < 1e-14, "{code}: row norm");
        }
        let rep = margins(w.view(), true, &opts).unwrap();
        let m = code.margin();
        for c in &rep.classes {
            assert!(
                (c.margin - m).abs() < 1e-12,
                "{code} class {}: {} vs {m}",
                c.class,
                c.margin
            );
            assert!(
                c.lower_bound <= c.margin && m - c.lower_bound < 1e-12,
                "{code}: bound"
            );
            assert!(c.fw_gap < 1e-12, "{code}: FW gap {}", c.fw_gap);
            let wsum: f64 = c.weights.iter().sum();
            assert!((wsum - 1.0).abs() < 1e-12 && c.weights.iter().all(|&a| a > 0.0));
            assert!(!c.support.contains(&c.class));
        }
        let t = rep.max_cosine.unwrap();
        assert!(
            (t - code.max_cosine()).abs() < 1e-12,
            "{code}: max cosine {t}"
        );
    }
}

/// The graph codes are two-distance sets: every off-diagonal inner product is one of the two
/// cosines, to rounding (a check that the constructions are exact, not approximately right).
#[test]
fn graph_codes_are_exact_two_distance_sets() {
    for (code, a, b, deg) in [
        (Code::HigmanSims, -4.0 / 11.0, 1.0 / 11.0, 22),
        (Code::McLaughlin, -2.0 / 7.0, 1.0 / 7.0, 56),
        (Code::E8, 0.0, 0.5, 56),
    ] {
        let w = code.build().unwrap();
        let g = w.dot(&w.t());
        let k = g.nrows();
        for i in 0..k {
            let mut near_b = 0;
            for j in 0..k {
                if i == j {
                    continue;
                }
                let v = g[[i, j]];
                if code == Code::E8 {
                    assert!(
                        [-1.0, -0.5, 0.0, 0.5].iter().any(|c| (v - c).abs() < 1e-14),
                        "{v}"
                    );
                } else {
                    assert!(
                        (v - a).abs() < 1e-13 || (v - b).abs() < 1e-13,
                        "{code}: {v}"
                    );
                }
                if (v - b).abs() < 1e-13 {
                    near_b += 1;
                }
            }
            // Nearest neighbours: E8 has 56 roots at cosine 1/2; HS/McL have k - 1 - degree.
            let want = if code == Code::E8 { deg } else { k - 1 - deg };
            assert_eq!(near_b, want, "{code} vertex {i}");
        }
    }
}

/// Random rotation (QR of a Gaussian), random row order and random positive row scales.
fn transform(w: &Array2<f64>, seed: u64) -> Array2<f64> {
    let (k, d) = w.dim();
    let q = ufm::ufm::etf::random_orthonormal(d, d, seed).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37);
    let mut perm: Vec<usize> = (0..k).collect();
    for i in (1..k).rev() {
        let u: f64 = rand_distr::Uniform::new(0.0, 1.0).unwrap().sample(&mut rng);
        perm.swap(i, ((u * (i + 1) as f64) as usize).min(i));
    }
    let rot = w.dot(&q);
    Array2::from_shape_fn((k, d), |(i, j)| {
        let s = 0.5 + (perm[i] as f64 * 0.37).sin().abs() * 3.0;
        s * rot[[perm[i], j]]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Margins of normalised rows are invariant under rotations, permutations and row scalings,
    /// so random transforms of the codes keep the closed form.
    #[test]
    fn transformed_codes_keep_the_closed_form(idx in 0usize..22, seed in 0u64..1_000_000) {
        let codes = all_codes();
        let code = codes[idx % codes.len()];
        let w = transform(&code.build().unwrap(), seed);
        let rep = margins(w.view(), true, &MarginOptions::default()).unwrap();
        prop_assert!((rep.min_margin - code.margin()).abs() < 1e-11, "{} {} {}", code, rep.min_margin, code.margin());
        prop_assert!((rep.max_margin - code.margin()).abs() < 1e-11);
        prop_assert!(rep.max_fw_gap < 1e-11);
    }

    /// Wolfe's answer equals a brute-force minimum over all affinely independent subsets of at
    /// most d+1 points (the minimum-norm point lies in the relative interior of such a face),
    /// and its certificate brackets it.
    #[test]
    fn wolfe_matches_brute_force_on_random_polytopes(m in 1usize..8, d in 1usize..4, seed in 0u64..1_000_000, shift in -1.0f64..2.0) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let p = Array2::from_shape_fn((m, d), |(_, j)| {
            let g: f64 = StandardNormal.sample(&mut rng);
            g + if j == 0 { shift } else { 0.0 }
        });
        let r = min_norm_point(p.view(), &MarginOptions::default()).unwrap();
        let reference = brute_force_distance(&p);
        prop_assert!((r.distance - reference).abs() <= 1e-10 * (1.0 + reference), "{} vs {}", r.distance, reference);
        prop_assert!(r.lower_bound <= reference + 1e-12);
        prop_assert!(r.fw_gap + 1e-12 >= r.distance * r.distance - reference * reference);
        // The returned weights reproduce the point.
        let x: Vec<f64> = (0..d).map(|j| (0..m).map(|i| r.weights[i] * p[[i, j]]).sum()).collect();
        for (a, b) in x.iter().zip(&r.point) {
            prop_assert!((a - b).abs() < 1e-12);
        }
    }
}

/// Solves the KKT system [G 1; 1ᵀ 0][α; μ] = [0; 1] by Gaussian elimination with partial
/// pivoting; `None` if singular.
fn affine_min(p: &Array2<f64>, s: &[usize]) -> Option<Vec<f64>> {
    let n = s.len();
    let mut a = vec![vec![0.0; n + 2]; n + 1];
    for i in 0..n {
        for j in 0..n {
            a[i][j] = p.row(s[i]).dot(&p.row(s[j]));
        }
        a[i][n] = 1.0;
        a[n][i] = 1.0;
    }
    a[n][n + 1] = 1.0;
    for col in 0..=n {
        let piv = (col..=n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        for r in 0..=n {
            if r != col {
                let f = a[r][col] / a[col][col];
                for c in col..n + 2 {
                    a[r][c] -= f * a[col][c];
                }
            }
        }
    }
    Some((0..n).map(|i| a[i][n + 1] / a[i][i]).collect())
}

fn brute_force_distance(p: &Array2<f64>) -> f64 {
    let (m, d) = p.dim();
    let mut best = f64::INFINITY;
    for mask in 1u32..(1 << m) {
        let s: Vec<usize> = (0..m).filter(|i| mask >> i & 1 == 1).collect();
        if s.len() > d + 1 {
            continue;
        }
        if let Some(alpha) = affine_min(p, &s) {
            if alpha.iter().all(|&a| a >= -1e-12) {
                let x: Vec<f64> = (0..d)
                    .map(|j| s.iter().zip(&alpha).map(|(&i, a)| a * p[[i, j]]).sum())
                    .collect();
                best = best.min(x.iter().map(|v| v * v).sum::<f64>().sqrt());
            }
        }
    }
    best
}

/// The CE UFM with K = 12 > d + 1 = 4 and small weight decay: L-BFGS from random starts ends
/// at a classifier whose normalised rows have the icosahedron's margin 1 - 1/sqrt(5).
#[test]
fn ufm_with_twelve_classes_in_three_dimensions_reaches_the_icosahedron_margin() {
    let p = UfmConfig::balanced(12, 2, 3)
        .lambdas(1e-4, 1e-4, 0.0)
        .bias(false)
        .build()
        .unwrap();
    let ico = reference_code(12, 3).unwrap();
    for seed in 0..2 {
        let mut x: Vec<f64> = p.random_point(seed, 1.0).unwrap();
        let exec = Executor {
            tol: 1e-10,
            max_iter: 20_000,
            ..Default::default()
        };
        exec.run(&p, &mut Lbfgs::new(10).unwrap(), &mut x, &mut [])
            .unwrap();
        let rep = ufm::geometry::margin::ufm_margins(&p, &x, &MarginOptions::default()).unwrap();
        assert!(
            (rep.min_margin / ico.margin() - 1.0).abs() < 1e-5,
            "seed {seed}: min margin {} vs {}",
            rep.min_margin,
            ico.margin()
        );
    }
}
