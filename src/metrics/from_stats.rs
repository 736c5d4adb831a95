//! NC metrics of accumulated statistics: [`metrics_from_stats`].
//!
//! Every metric of the [module table](super) except the nearest-centre agreement is a function
//! of the one-pass summary — counts $n_k$, means $\mu_k$, per-class sums of squares and, for
//! the NC1 family, the within-class scatter $S=N\Sigma_W$ — and of the classifier $(W,b)$. The
//! NC1 family uses
//! $$P=\bar M^\top\Sigma_W\bar M,\qquad G=\bar M^\top\bar M,\qquad
//! \mathrm{NC1}=\tfrac1K\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)=\operatorname{tr}(G^{\dagger2}P)$$
//! (see [`super::nc1`]), here with $P$ formed from $S$ — the one-pass route of
//! [`super::compute`]. So a [`ClassStats`](super::ClassStats) accumulator fed batch by batch
//! (and merged across processes) gives the metrics [`compute_metrics`](super::compute_metrics)
//! gives on the whole array with [`Strategy::OnePass`](super::Strategy::OnePass), up to
//! rounding. `ncc_agreement` ($\arg\min_k\lVert h_i-\mu_k\rVert$ with the *final* means) needs a
//! second pass over the features and is not available here.

use super::nc2::{self, equiangular, equinorm};
use super::{nc1, nc3, nc4, FeatureStats, Metric, MetricsConfig, MetricsReport};
use crate::error::{Error, Result};
use ndarray::{ArrayView1, ArrayView2};

/// Computes the metrics selected in `cfg` (all the statistics allow when `cfg.metrics` is
/// `None`: those needing $W$ only when it is given, `nc1`/`nc1_papyan` only when the scatter
/// was tracked, never `ncc_agreement`) from finished statistics and the classifier `w`
/// ($K\times d$) and bias `b` ($K$). `cfg.global_mean` and `cfg.rtol` apply; `cfg.n_classes`,
/// when given, must equal the statistics' $K$; the other settings concern reading features
/// and are ignored. The report has `passes = 0` and `device = "cpu"`.
pub fn metrics_from_stats(
    stats: &FeatureStats,
    w: Option<ArrayView2<f64>>,
    b: Option<ArrayView1<f64>>,
    cfg: &MetricsConfig,
) -> Result<MetricsReport> {
    let (k, d) = (stats.n_classes(), stats.feature_dim());
    if let Some(kc) = cfg.n_classes {
        if kc != k {
            return Err(Error::param(
                "--classes",
                format!("{kc} classes requested, but the statistics have K = {k}"),
            ));
        }
    }
    if k < 2 {
        return Err(Error::param("--classes", "need at least 2 classes"));
    }
    super::compute::check_classifier(w.as_ref(), b.as_ref(), k, d)?;
    let has_scatter = stats.scatter.is_some();
    let metrics: Vec<Metric> = match &cfg.metrics {
        Some(ms) => {
            for &m in ms {
                if m == Metric::NccAgreement {
                    return Err(Error::param(
                        "--metrics",
                        "`ncc_agreement` needs a second pass over the features (the nearest \
                         final class mean of every sample); it cannot be computed from \
                         accumulated statistics",
                    ));
                }
                if m.needs_classifier() && w.is_none() {
                    return Err(Error::param(
                        "--metrics",
                        format!("metric `{m}` needs the classifier W"),
                    ));
                }
                if m.needs_bias() && b.is_none() {
                    return Err(Error::param(
                        "--metrics",
                        format!("metric `{m}` needs the bias b (zeros for a network without bias)"),
                    ));
                }
                if m.needs_projection() && !has_scatter {
                    return Err(Error::param(
                        "--metrics",
                        format!(
                            "metric `{m}` needs the d x d within-class scatter, which these \
                             statistics do not track (accumulate with the scatter on)"
                        ),
                    ));
                }
            }
            ms.clone()
        }
        None => Metric::ALL
            .iter()
            .copied()
            .filter(|&m| {
                (w.is_some() || !m.needs_classifier())
                    && (b.is_some() || !m.needs_bias())
                    && m != Metric::NccAgreement
                    && (has_scatter || !m.needs_projection())
            })
            .collect(),
    };
    let gm = cfg.global_mean;
    let mt = stats.centred_means(gm);
    let g = mt.dot(&mt.t());
    let p_mat = if metrics.iter().any(|m| m.needs_projection()) {
        Some(nc1::projected_within(stats, gm)?.0)
    } else {
        None
    };
    let mut r = MetricsReport {
        device: "cpu".into(),
        n_classes: k,
        n_samples: stats.n_samples(),
        feature_dim: d,
        class_counts: stats.counts.clone(),
        global_mean: gm,
        passes: 0,
        ..Default::default()
    };
    let rtol = cfg.rtol.unwrap_or_else(|| nc1::default_rtol(stats));
    // Checked above: W is present for classifier metrics, P for the NC1 family.
    let need_w = || w.ok_or_else(|| Error::param("--metrics", "needs the classifier W"));
    let need_p = || {
        p_mat
            .as_ref()
            .ok_or_else(|| Error::param("--metrics", "needs the within-class scatter"))
    };
    for &m in &metrics {
        let v = match m {
            Metric::Nc1 => nc1::nc1_from_projection(need_p()?, &g, rtol)?,
            Metric::Nc1Papyan => nc1::nc1_papyan_from_projection(need_p()?, &g, rtol)?,
            Metric::Nc1TraceRatio => nc1::nc1_trace_ratio(stats, gm),
            Metric::Cdnv => nc1::cdnv(stats),
            Metric::Nc2W => nc2::nc2_w(need_w()?)?,
            Metric::Nc2WCentered => nc2::nc2_w_centered(need_w()?)?,
            Metric::Nc2H => nc2::etf_error(g.view())?,
            Metric::EquinormH => equinorm(mt.view()),
            Metric::EquinormW => equinorm(need_w()?),
            Metric::EquiangularH => equiangular(mt.view()),
            Metric::EquiangularW => equiangular(need_w()?),
            Metric::Nc3 => nc3::nc3(stats, need_w()?, gm)?,
            Metric::Nc3Papyan => nc3::nc3_papyan(stats, need_w()?, gm)?,
            Metric::Bias => nc4::bias_collapse_with(stats, need_w()?, b, gm)?,
            Metric::NccAgreement => {
                return Err(Error::param(
                    "--metrics",
                    "`ncc_agreement` needs a second pass over the features",
                ))
            }
        };
        *r.slot(m) = Some(v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{compute_metrics, ClassStats, GlobalMean, InMemory, Strategy};
    use ndarray::{Array1, Array2, Axis};
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    /// Batches pushed into an accumulator and finished give every metric `compute_metrics`
    /// gives on the whole array (one-pass strategy) to 1e-12 relative, for both global means.
    #[test]
    fn accumulated_metrics_equal_compute_metrics_on_the_whole_array() {
        let (n, d, k) = (1500, 9, 4);
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let y: Vec<u32> = (0..n).map(|i| ((i * 3 + i / 11) % k) as u32).collect();
        // Class centres in general position, features offset from the origin.
        let centres = Array2::from_shape_fn((k, d), |_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            3.0 * z
        });
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            let z: f64 = StandardNormal.sample(&mut rng);
            5.0 + z + centres[[y[i] as usize, j]]
        });
        let w = Array2::from_shape_fn((k, d), |_| StandardNormal.sample(&mut rng));
        let b = Array1::from_shape_fn(k, |_| StandardNormal.sample(&mut rng));
        let mut acc = ClassStats::new(k, d);
        for (xc, yc) in x.axis_chunks_iter(Axis(0), 128).zip(y.chunks(128)) {
            acc.push(xc, yc).unwrap();
        }
        let stats = acc.statistics().unwrap();
        for gm in [GlobalMean::Weighted, GlobalMean::ClassMean] {
            let cfg = MetricsConfig {
                global_mean: gm,
                strategy: Strategy::OnePass,
                ..Default::default()
            };
            let whole = compute_metrics(
                &InMemory::from(x.view()),
                &y,
                Some(w.view()),
                Some(b.view()),
                &cfg,
            )
            .unwrap();
            let ours = metrics_from_stats(&stats, Some(w.view()), Some(b.view()), &cfg).unwrap();
            assert_eq!(ours.class_counts, whole.class_counts);
            assert!(ours.ncc_agreement.is_none());
            for &m in Metric::ALL {
                if m == Metric::NccAgreement {
                    continue;
                }
                let (a, e) = (ours.get(m).unwrap(), whole.get(m).unwrap());
                assert!(
                    (a - e).abs() <= 1e-12 * e.abs().max(1e-3),
                    "{m} ({gm:?}): {a} vs {e}"
                );
            }
        }
    }

    #[test]
    fn unavailable_metrics_are_errors_and_left_out_by_default() {
        let x = Array2::from_shape_fn((40, 3), |(i, j)| (i % 4) as f64 + 0.1 * (i * j) as f64);
        let y: Vec<u32> = (0..40).map(|i| (i % 4) as u32).collect();
        let mut acc = ClassStats::with_scatter(4, 3, false);
        acc.push(x.view(), &y).unwrap();
        let st = acc.statistics().unwrap();
        let r = metrics_from_stats(&st, None, None, &MetricsConfig::default()).unwrap();
        assert!(r.nc1.is_none() && r.nc2_w.is_none() && r.ncc_agreement.is_none());
        assert!(r.nc2_h.is_some() && r.cdnv.is_some() && r.nc1_trace_ratio.is_some());
        let ask = |m: Metric| {
            let cfg = MetricsConfig {
                metrics: Some(vec![m]),
                ..Default::default()
            };
            metrics_from_stats(&st, None, None, &cfg)
                .unwrap_err()
                .to_string()
        };
        assert!(ask(Metric::Nc1).contains("scatter"));
        assert!(ask(Metric::Nc3).contains("classifier W"));
        assert!(ask(Metric::NccAgreement).contains("second pass"));
        let w = Array2::<f64>::zeros((3, 3));
        let e = metrics_from_stats(&st, Some(w.view()), None, &MetricsConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("4x3"), "{e}");
    }
}
