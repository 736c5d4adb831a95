//! `compute_metrics` against slow, obviously correct references (per-sample loops, two passes,
//! dense $d\times d$ pseudo-inverse from a faer eigendecomposition of $\Sigma_B$) on random data,
//! including imbalanced classes and $d>N$, and against theory (simplex ETF, orthogonal frame).

#![allow(clippy::needless_range_loop)] // the references loop over indices like the formulas

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use ufm::linalg::sym_eigen;
use ufm::metrics::{
    compute_metrics, GlobalMean, InMemory, Metric, MetricsConfig, MetricsReport, Strategy,
};

/// Relative tolerance for f64 comparisons against the references.
const RTOL: f64 = 1e-10;

struct Data {
    h: Array2<f64>,
    y: Vec<u32>,
    w: Array2<f64>,
    b: Array1<f64>,
    k: usize,
}

/// Random imbalanced data: class k has about `sizes[k]` samples, means spread by `sep`,
/// every feature offset by `offset`.
fn data(sizes: &[usize], d: usize, sep: f64, offset: f64, seed: u64) -> Data {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let k = sizes.len();
    let mut g = || -> f64 { StandardNormal.sample(&mut rng) };
    let mu = Array2::from_shape_fn((k, d), |_| sep * g());
    // Interleave the classes so that chunks mix them.
    let mut y = Vec::new();
    let mut left = sizes.to_vec();
    while left.iter().any(|&c| c > 0) {
        for c in 0..k {
            if left[c] > 0 {
                y.push(c as u32);
                left[c] -= 1;
            }
        }
    }
    let n = y.len();
    let mut h = Array2::zeros((n, d));
    for i in 0..n {
        for j in 0..d {
            h[[i, j]] = offset + mu[[y[i] as usize, j]] + g();
        }
    }
    let w = Array2::from_shape_fn((k, d), |_| g());
    let b = Array1::from_shape_fn(k, |_| g());
    Data { h, y, w, b, k }
}

/// Everything computed the slow way.
struct Reference {
    nc1: f64,
    nc1_papyan: f64,
    nc1_trace_ratio: f64,
    cdnv: f64,
    nc2_w: f64,
    nc2_w_centered: f64,
    nc2_h: f64,
    equinorm_h: f64,
    equinorm_w: f64,
    equiangular_h: f64,
    equiangular_w: f64,
    nc3: f64,
    nc3_papyan: f64,
    bias: f64,
    ncc_agreement: f64,
}

fn etf_error_ref(a: &Array2<f64>) -> f64 {
    let k = a.nrows();
    let nrm = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mut e = 0.0;
    for i in 0..k {
        for j in 0..k {
            let t = ((i == j) as u8 as f64 - 1.0 / k as f64) / ((k - 1) as f64).sqrt();
            e += (a[[i, j]] / nrm - t).powi(2);
        }
    }
    e.sqrt()
}

fn norm(v: ArrayView1<f64>) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn equinorm_ref(rows: ArrayView2<f64>) -> f64 {
    let k = rows.nrows() as f64;
    let ns: Vec<f64> = rows.outer_iter().map(norm).collect();
    let m = ns.iter().sum::<f64>() / k;
    (ns.iter().map(|n| (n - m).powi(2)).sum::<f64>() / (k - 1.0)).sqrt() / m
}

fn equiangular_ref(rows: ArrayView2<f64>) -> f64 {
    let k = rows.nrows();
    let mut t = 0.0;
    for a in 0..k {
        for b in 0..k {
            if a != b {
                let c = rows.row(a).dot(&rows.row(b)) / (norm(rows.row(a)) * norm(rows.row(b)));
                t += (c + 1.0 / (k as f64 - 1.0)).abs();
            }
        }
    }
    t / (k * (k - 1)) as f64
}

fn reference(dt: &Data, gm: GlobalMean) -> Reference {
    let (n, d, k) = (dt.h.nrows(), dt.h.ncols(), dt.k);
    // Pass 1: counts and means by loops.
    let mut cnt = vec![0.0; k];
    let mut mu = Array2::<f64>::zeros((k, d));
    for i in 0..n {
        let c = dt.y[i] as usize;
        cnt[c] += 1.0;
        for j in 0..d {
            mu[[c, j]] += dt.h[[i, j]];
        }
    }
    for c in 0..k {
        for j in 0..d {
            mu[[c, j]] /= cnt[c];
        }
    }
    let mg: Array1<f64> = match gm {
        GlobalMean::Weighted => {
            let mut g = Array1::zeros(d);
            for i in 0..n {
                g += &dt.h.row(i);
            }
            g / n as f64
        }
        _ => {
            let mut g = Array1::zeros(d);
            for c in 0..k {
                g += &mu.row(c);
            }
            g / k as f64
        }
    };
    let mbar = &mu - &mg.view().insert_axis(ndarray::Axis(0)); // K x d
                                                               // Pass 2: Sigma_W by per-sample outer products.
    let mut sw = Array2::<f64>::zeros((d, d));
    let mut ss = vec![0.0; k];
    for i in 0..n {
        let c = dt.y[i] as usize;
        let dv = &dt.h.row(i) - &mu.row(c);
        ss[c] += dv.dot(&dv);
        for a in 0..d {
            for b in 0..d {
                sw[[a, b]] += dv[a] * dv[b] / n as f64;
            }
        }
    }
    let mut sb = Array2::<f64>::zeros((d, d));
    for c in 0..k {
        for a in 0..d {
            for b in 0..d {
                sb[[a, b]] += mbar[[c, a]] * mbar[[c, b]] / k as f64;
            }
        }
    }
    // Dense pinv of Sigma_B (d x d) from its eigendecomposition, scipy's default tolerance.
    let (vals, vecs) = sym_eigen(sb.view()).unwrap();
    let lmax = vals.iter().cloned().fold(0.0, f64::max);
    let tol = d.max(k) as f64 * f64::EPSILON * lmax;
    let pinv_with = |keep: &dyn Fn(usize, f64) -> bool| {
        let mut p = Array2::<f64>::zeros((d, d));
        for (i, &l) in vals.iter().enumerate() {
            if keep(i, l) {
                let u = vecs.column(i);
                for a in 0..d {
                    for b in 0..d {
                        p[[a, b]] += u[a] * u[b] / l;
                    }
                }
            }
        }
        p
    };
    let trace_prod = |a: &Array2<f64>, b: &Array2<f64>| -> f64 {
        let mut t = 0.0;
        for i in 0..d {
            for j in 0..d {
                t += a[[i, j]] * b[[j, i]];
            }
        }
        t
    };
    let pinv = pinv_with(&|_, l| l > tol);
    let nc1 = trace_prod(&sw, &pinv) / k as f64;
    // Papyan's rank rule: the top min(K-1, rank) eigenpairs (vals ascending), rank counted
    // above the same tolerance (the top K-1 when the means span K-1 dimensions).
    let top = pinv_with(&|i, l| l > tol && i + (k - 1) >= d);
    let nc1_papyan = trace_prod(&sw, &top);
    let tr = |a: &Array2<f64>| (0..d).map(|i| a[[i, i]]).sum::<f64>();
    let nc1_trace_ratio = tr(&sw) / tr(&sb);
    let mut cd = 0.0;
    for a in 0..k {
        for b in a + 1..k {
            let dd = (&mu.row(a) - &mu.row(b)).mapv(|v| v * v).sum();
            cd += (ss[a] / cnt[a] + ss[b] / cnt[b]) / 2.0 / dd;
        }
    }
    let cdnv = cd / (k * (k - 1) / 2) as f64;
    let w = &dt.w;
    let nc2_w = etf_error_ref(&w.dot(&w.t()));
    let mut wc = w.clone();
    for j in 0..d {
        let m: f64 = (0..k).map(|c| w[[c, j]]).sum::<f64>() / k as f64;
        for c in 0..k {
            wc[[c, j]] -= m;
        }
    }
    let nc2_w_centered = etf_error_ref(&wc.dot(&wc.t()));
    let nc2_h = etf_error_ref(&mbar.dot(&mbar.t()));
    let nc3 = etf_error_ref(&w.dot(&mbar.t()));
    let (nw, nm) = (
        w.iter().map(|v| v * v).sum::<f64>().sqrt(),
        mbar.iter().map(|v| v * v).sum::<f64>().sqrt(),
    );
    let nc3_papyan = w
        .iter()
        .zip(mbar.iter())
        .map(|(a, b)| (a / nw - b / nm).powi(2))
        .sum();
    let bias = norm((w.dot(&mg) + &dt.b).view());
    let mut agree = 0;
    for i in 0..n {
        let h = dt.h.row(i);
        let ncc = (0..k)
            .min_by(|&a, &b| {
                let da = (&h - &mu.row(a)).mapv(|v| v * v).sum();
                let db = (&h - &mu.row(b)).mapv(|v| v * v).sum();
                da.partial_cmp(&db).unwrap()
            })
            .unwrap();
        let logits = w.dot(&h) + &dt.b;
        let net = (0..k)
            .max_by(|&a, &b| logits[a].partial_cmp(&logits[b]).unwrap())
            .unwrap();
        agree += (ncc == net) as usize;
    }
    Reference {
        nc1,
        nc1_papyan,
        nc1_trace_ratio,
        cdnv,
        nc2_w,
        nc2_w_centered,
        nc2_h,
        equinorm_h: equinorm_ref(mbar.view()),
        equinorm_w: equinorm_ref(w.view()),
        equiangular_h: equiangular_ref(mbar.view()),
        equiangular_w: equiangular_ref(w.view()),
        nc3,
        nc3_papyan,
        bias,
        ncc_agreement: agree as f64 / n as f64,
    }
}

fn assert_close(what: &str, got: Option<f64>, want: f64, rtol: f64) {
    let got = got.unwrap_or_else(|| panic!("{what} missing"));
    let err = (got - want).abs() / want.abs().max(1e-300);
    assert!(
        err <= rtol,
        "{what}: got {got:e}, reference {want:e}, relative error {err:e}"
    );
}

fn check(r: &MetricsReport, rf: &Reference, rtol: f64) {
    assert_close("nc1", r.nc1, rf.nc1, rtol);
    assert_close("nc1_papyan", r.nc1_papyan, rf.nc1_papyan, rtol);
    assert_close(
        "nc1_trace_ratio",
        r.nc1_trace_ratio,
        rf.nc1_trace_ratio,
        rtol,
    );
    assert_close("cdnv", r.cdnv, rf.cdnv, rtol);
    assert_close("nc2_w", r.nc2_w, rf.nc2_w, rtol);
    assert_close("nc2_w_centered", r.nc2_w_centered, rf.nc2_w_centered, rtol);
    assert_close("nc2_h", r.nc2_h, rf.nc2_h, rtol);
    assert_close("equinorm_h", r.equinorm_h, rf.equinorm_h, rtol);
    assert_close("equinorm_w", r.equinorm_w, rf.equinorm_w, rtol);
    assert_close("equiangular_h", r.equiangular_h, rf.equiangular_h, rtol);
    assert_close("equiangular_w", r.equiangular_w, rf.equiangular_w, rtol);
    assert_close("nc3", r.nc3, rf.nc3, rtol);
    assert_close("nc3_papyan", r.nc3_papyan, rf.nc3_papyan, rtol);
    assert_close("bias", r.bias, rf.bias, rtol);
    assert_eq!(r.ncc_agreement, Some(rf.ncc_agreement), "ncc_agreement");
}

fn run(dt: &Data, cfg: &MetricsConfig) -> MetricsReport {
    compute_metrics(
        &InMemory::from(dt.h.view()),
        &dt.y,
        Some(dt.w.view()),
        Some(dt.b.view()),
        cfg,
    )
    .unwrap()
}

fn cfg(strategy: Strategy, gm: GlobalMean, chunk_rows: usize) -> MetricsConfig {
    MetricsConfig {
        strategy,
        global_mean: gm,
        chunk_rows,
        ..Default::default()
    }
}

#[test]
fn every_metric_matches_slow_reference_on_imbalanced_data() {
    let dt = data(&[60, 7, 25, 140, 33], 9, 1.5, 0.3, 11);
    for gm in [GlobalMean::Weighted, GlobalMean::ClassMean] {
        let rf = reference(&dt, gm);
        for strategy in [Strategy::OnePass, Strategy::TwoPass, Strategy::Auto] {
            for chunk in [13, 100_000] {
                let r = run(&dt, &cfg(strategy, gm, chunk));
                assert_eq!(r.class_counts, vec![60, 7, 25, 140, 33]);
                assert_eq!((r.n_classes, r.n_samples, r.feature_dim), (5, 265, 9));
                check(&r, &rf, RTOL);
            }
        }
    }
}

#[test]
fn every_metric_matches_slow_reference_when_d_exceeds_n() {
    // d = 40 > N = 17: Sigma_W is singular, Sigma_B has rank K-1 = 3.
    let dt = data(&[3, 6, 2, 6], 40, 1.0, -2.0, 12);
    for gm in [GlobalMean::Weighted, GlobalMean::ClassMean] {
        let rf = reference(&dt, gm);
        for strategy in [Strategy::OnePass, Strategy::TwoPass] {
            check(&run(&dt, &cfg(strategy, gm, 5)), &rf, RTOL);
        }
    }
}

#[test]
fn far_from_origin_features_keep_their_digits() {
    // Offset 1e4 with unit spread: one-pass raw moments would lose ~8 digits.
    let dt = data(&[40, 55, 30], 5, 2.0, 1e4, 13);
    let rf = reference(&dt, GlobalMean::Weighted);
    for strategy in [Strategy::OnePass, Strategy::TwoPass] {
        let r = run(&dt, &cfg(strategy, GlobalMean::Weighted, 16));
        // The references themselves lose digits to the 1e4 offset in the mean; 1e-8 is tight.
        for (name, got, want) in [
            ("nc1", r.nc1, rf.nc1),
            ("nc1_trace_ratio", r.nc1_trace_ratio, rf.nc1_trace_ratio),
            ("cdnv", r.cdnv, rf.cdnv),
        ] {
            assert_close(name, got, want, 1e-8);
        }
    }
}

#[test]
fn f32_input_equals_f64_input_of_the_same_values() {
    let dt = data(&[20, 30, 25], 6, 1.0, 0.0, 14);
    let h32 = dt.h.mapv(|v| v as f32);
    let h64 = h32.mapv(|v| v as f64);
    let c = MetricsConfig::default();
    let a = compute_metrics(
        &InMemory::from(h32.view()),
        &dt.y,
        Some(dt.w.view()),
        None,
        &c,
    )
    .unwrap();
    let b = compute_metrics(
        &InMemory::from(h64.view()),
        &dt.y,
        Some(dt.w.view()),
        None,
        &c,
    )
    .unwrap();
    for &m in Metric::ALL {
        assert_eq!(a.get(m), b.get(m), "{m}");
    }
}

/// Simplex ETF in `d` dimensions, rotated off the axes by a Householder reflection.
fn simplex_etf(k: usize, d: usize) -> Array2<f64> {
    let mut m = Array2::<f64>::zeros((k, d));
    let s = (k as f64 / (k as f64 - 1.0)).sqrt();
    for a in 0..k {
        for b in 0..k {
            m[[a, b]] = s * ((a == b) as u8 as f64 - 1.0 / k as f64);
        }
    }
    let v = Array1::from_shape_fn(d, |j| 1.0 + j as f64 * 0.37);
    let v = &v / norm(v.view());
    let reflect = Array2::<f64>::eye(d)
        - 2.0
            * &v.view()
                .insert_axis(ndarray::Axis(1))
                .dot(&v.view().insert_axis(ndarray::Axis(0)));
    m.dot(&reflect)
}

#[test]
fn collapsed_simplex_etf_reaches_every_ideal_value() {
    let (k, d, n) = (5, 8, 7);
    let etf = simplex_etf(k, d);
    let y: Vec<u32> = (0..k * n).map(|i| (i % k) as u32).collect();
    let h = Array2::from_shape_fn((k * n, d), |(i, j)| 3.0 * etf[[y[i] as usize, j]]);
    let w = etf.mapv(|v| 0.7 * v);
    for strategy in [Strategy::OnePass, Strategy::TwoPass] {
        let b = Array1::<f64>::zeros(k);
        let r = compute_metrics(
            &InMemory::from(h.view()),
            &y,
            Some(w.view()),
            Some(b.view()),
            &cfg(strategy, GlobalMean::Weighted, 6),
        )
        .unwrap();
        for m in [
            Metric::Nc1,
            Metric::Nc1Papyan,
            Metric::Nc1TraceRatio,
            Metric::Cdnv,
            Metric::Nc2W,
            Metric::Nc2WCentered,
            Metric::Nc2H,
            Metric::EquinormH,
            Metric::EquinormW,
            Metric::EquiangularH,
            Metric::EquiangularW,
            Metric::Nc3,
            Metric::Nc3Papyan,
            Metric::Bias,
        ] {
            let v = r.get(m).unwrap();
            assert!(v.abs() < 1e-12, "{m} = {v:e} on an exact collapsed ETF");
        }
        assert_eq!(r.ncc_agreement, Some(1.0));
    }
}

#[test]
fn orthogonal_frame_has_the_closed_form_nc2() {
    for k in [4usize, 10] {
        let d = k + 3;
        let w = Array2::from_shape_fn((k, d), |(a, b)| 2.5 * (a == b) as u8 as f64);
        let y: Vec<u32> = (0..3 * k).map(|i| (i % k) as u32).collect();
        let h = Array2::from_shape_fn((3 * k, d), |(i, j)| {
            (y[i] as usize == j) as u8 as f64 + 0.01 * i as f64
        });
        let r = compute_metrics(
            &InMemory::from(h.view()),
            &y,
            Some(w.view()),
            None,
            &MetricsConfig::default(),
        )
        .unwrap();
        let want = (2.0 - 2.0 * ((k as f64 - 1.0) / k as f64).sqrt()).sqrt();
        assert_close("nc2_w", r.nc2_w, want, 1e-13);
        // The centred frame is a simplex ETF.
        assert!(r.nc2_w_centered.unwrap() < 1e-13);
        assert!(r.equinorm_w.unwrap() < 1e-15);
        // cos = 0 between rows: |0 + 1/(K-1)| for every pair.
        assert_close(
            "equiangular_w",
            r.equiangular_w,
            1.0 / (k as f64 - 1.0),
            1e-13,
        );
    }
    // The values quoted in nc-reference §1.2.
    let f = |k: f64| (2.0 - 2.0 * ((k - 1.0) / k).sqrt()).sqrt();
    assert!((f(10.0) - 0.320364).abs() < 1e-6 && (f(4.0) - 0.517638).abs() < 1e-6);
}

#[test]
fn default_selection_follows_the_inputs() {
    let dt = data(&[10, 12, 9], 4, 1.0, 0.0, 15);
    let r = compute_metrics(
        &InMemory::from(dt.h.view()),
        &dt.y,
        None,
        None,
        &MetricsConfig::default(),
    )
    .unwrap();
    for &m in Metric::ALL {
        assert_eq!(r.get(m).is_some(), !m.needs_classifier(), "{m}");
    }
    let only = MetricsConfig {
        metrics: Some(vec![Metric::Cdnv, Metric::Nc2H]),
        ..Default::default()
    };
    let r = compute_metrics(&InMemory::from(dt.h.view()), &dt.y, None, None, &only).unwrap();
    let got: Vec<Metric> = Metric::ALL
        .iter()
        .copied()
        .filter(|&m| r.get(m).is_some())
        .collect();
    assert_eq!(got, vec![Metric::Cdnv, Metric::Nc2H]);
    assert_eq!(r.passes, 1);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dt = data(&[5, 5, 5], 3, 1.0, 0.0, 16);
    let c = MetricsConfig::default();
    let f = InMemory::from(dt.h.view());
    let err = |r: ufm::Result<MetricsReport>| r.unwrap_err().to_string();
    // Labels outside 0..K-1 with --classes.
    let k2 = MetricsConfig {
        n_classes: Some(2),
        ..Default::default()
    };
    assert!(err(compute_metrics(&f, &dt.y, None, None, &k2)).contains("outside 0..2"));
    // A class without samples.
    let k4 = MetricsConfig {
        n_classes: Some(4),
        ..Default::default()
    };
    assert!(err(compute_metrics(&f, &dt.y, None, None, &k4)).contains("[3] have no samples"));
    // Length mismatch.
    assert!(err(compute_metrics(&f, &dt.y[1..], None, None, &c)).contains("one per feature row"));
    // W of the wrong shape; a metric that needs W without it.
    let w = Array2::<f64>::zeros((3, 4));
    assert!(err(compute_metrics(&f, &dt.y, Some(w.view()), None, &c)).contains("classifier W"));
    let need_w = MetricsConfig {
        metrics: Some(vec![Metric::Nc3]),
        ..Default::default()
    };
    assert!(err(compute_metrics(&f, &dt.y, None, None, &need_w)).contains("needs the classifier W"));
    // NaN in row 7, found in a later chunk: the absolute row is named.
    let mut h = dt.h.clone();
    h[[7, 1]] = f64::NAN;
    let small = MetricsConfig {
        chunk_rows: 4,
        ..Default::default()
    };
    let e = err(compute_metrics(
        &InMemory::from(h.view()),
        &dt.y,
        None,
        None,
        &small,
    ));
    assert!(
        e.contains("feature row 7") && e.contains("non-finite"),
        "{e}"
    );
    assert!("nc9"
        .parse::<Metric>()
        .unwrap_err()
        .to_string()
        .contains("known: nc1"));
}

/// K - 1 > d (K = 100 classes in d = 64): the class means span only d dimensions, so
/// $\Sigma_B$ has rank 64 < K - 1 and "the top K - 1 eigenpairs" would include 35 round-off
/// eigenvalues (the old code returned about ±1e16). `nc1_papyan` keeps the top min(K-1, rank)
/// eigenpairs above the pinv tolerance: it equals the dense reference (pinv of the d×d
/// $\Sigma_B$ with tolerance max(d,K)·eps·λ_max), is K·nc1, and every other metric still
/// matches its reference.
#[test]
fn nc1_papyan_uses_the_numerical_rank_when_k_minus_1_exceeds_d() {
    let (k, d) = (100, 64);
    let sizes: Vec<usize> = (0..k).map(|c| 4 + c % 3).collect();
    let dt = data(&sizes, d, 1.5, 0.5, 17);
    for gm in [GlobalMean::Weighted, GlobalMean::ClassMean] {
        let rf = reference(&dt, gm);
        assert!(rf.nc1_papyan.is_finite() && rf.nc1_papyan > 0.0);
        for strategy in [Strategy::OnePass, Strategy::TwoPass] {
            let r = run(&dt, &cfg(strategy, gm, 97));
            check(&r, &rf, 1e-9);
            let (p, n1) = (r.nc1_papyan.unwrap(), r.nc1.unwrap());
            assert!(p.abs() < 1e6, "{p:e}: round-off eigenvalues were inverted");
            assert!(
                (p - k as f64 * n1).abs() <= 1e-12 * p.abs(),
                "{p} vs K nc1 {n1}"
            );
        }
    }
}

/// Without a bias b the default selection leaves `bias` out (absent from the report and its
/// JSON, with a note saying why) instead of computing ‖Wμ_G‖ as if b were 0; asking for it
/// by name without b is an error naming `--bias`; with b it is computed.
#[test]
fn bias_metric_needs_the_bias() {
    let dt = data(&[10, 12, 9], 4, 1.0, 0.0, 18);
    let f = InMemory::from(dt.h.view());
    let c = MetricsConfig::default();
    let r = compute_metrics(&f, &dt.y, Some(dt.w.view()), None, &c).unwrap();
    assert_eq!(r.bias, None);
    assert!(r.nc3.is_some() && r.nc2_w.is_some());
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("\"bias\""), "{json}");
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(
        r.notes[0].contains("bias") && r.notes[0].contains("--bias"),
        "{:?}",
        r.notes
    );
    let only = MetricsConfig {
        metrics: Some(vec![Metric::Bias]),
        ..Default::default()
    };
    let e = compute_metrics(&f, &dt.y, Some(dt.w.view()), None, &only)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`bias`") && e.contains("--bias"), "{e}");
    let r = compute_metrics(&f, &dt.y, Some(dt.w.view()), Some(dt.b.view()), &c).unwrap();
    assert_close(
        "bias",
        r.bias,
        reference(&dt, GlobalMean::Weighted).bias,
        RTOL,
    );
    assert!(r.notes.is_empty());
}

/// One outlier label (4e9) does not make K = 4e9 + 1: an inferred K above the cap, or any K
/// above N (every class needs a sample), is refused at once with a short message that says to
/// pass `--classes`; messages that list classes list a few and count the rest.
#[test]
fn outlier_labels_and_huge_k_are_refused_with_short_messages() {
    let dt = data(&[5, 5, 5], 3, 1.0, 0.0, 19);
    let f = InMemory::from(dt.h.view());
    let mut y = dt.y.clone();
    y[4] = 4_000_000_000;
    let c = MetricsConfig::default();
    let t0 = std::time::Instant::now();
    let e = compute_metrics(&f, &y, None, None, &c)
        .unwrap_err()
        .to_string();
    assert!(t0.elapsed().as_secs_f64() < 1.0, "no K-sized allocation");
    assert!(e.contains("4000000000") && e.contains("--classes"), "{e}");
    assert!(e.contains("index 4"), "{e}");
    assert!(e.len() < 400, "{} bytes: {e}", e.len());
    // Explicit K larger than N: cannot give every class a sample.
    let huge = MetricsConfig {
        n_classes: Some(4_000_000_001),
        ..Default::default()
    };
    let e = compute_metrics(&f, &y, None, None, &huge)
        .unwrap_err()
        .to_string();
    assert!(e.contains("4000000001") && e.contains("15 samples"), "{e}");
    // A legitimate K above the inference cap works with --classes (given K <= N) ...
    let n = 120_010;
    let big_k = ufm::metrics::compute::MAX_INFERRED_CLASSES + 5;
    let yk: Vec<u32> = (0..n).map(|i| (i % big_k) as u32).collect();
    let h1 = Array2::from_shape_fn((n, 1), |(i, _)| (i % 7) as f64);
    let f1 = InMemory::from(h1.view());
    let only = |k: Option<usize>| MetricsConfig {
        n_classes: k,
        metrics: Some(vec![Metric::Nc1TraceRatio]),
        ..Default::default()
    };
    let e = compute_metrics(&f1, &yk, None, None, &only(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--classes"), "{e}");
    let r = compute_metrics(&f1, &yk, None, None, &only(Some(big_k))).unwrap();
    assert_eq!(r.n_classes, big_k);
    // ... and a K that leaves 90,000 classes empty lists a few of them and counts the rest.
    let yk: Vec<u32> = (0..n).map(|i| (i % 10_000) as u32).collect();
    let e = compute_metrics(&f1, &yk, None, None, &only(Some(100_000)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("10000, 10001") && e.contains("90000 classes"),
        "{e}"
    );
    assert!(e.len() < 400, "{} bytes: {e}", e.len());
}
