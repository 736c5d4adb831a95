//! All NC metrics of a labelled feature stream in one call: [`compute_metrics`].
//!
//! The features $h_i\in\mathbb R^d$ (rows of an $N\times d$ matrix, streamed in row chunks
//! through a [`FeatureStream`]) and labels $y_i$ are read once into a [`ClassStats`] summary
//! (counts $n_k$, means $\mu_k$, per-class sums of squares); every metric of the
//! [module table](super) is a function of that summary, the classifier $(W,b)$, and, for the
//! NC1 family, the $K\times K$ matrix
//! $$P=\bar M^\top\Sigma_W\bar M=\frac1N\sum_i\big(\bar M^\top(h_i-\mu_{y_i})\big)\big(\bar M^\top(h_i-\mu_{y_i})\big)^\top$$
//! (`nc1` and `nc1_papyan` need only $P$ and $G=\bar M^\top\bar M$, see [`super::nc1`]).
//!
//! **Strategies** for $P$ ([`Strategy`]):
//! * *one pass*: accumulate the $d\times d$ within-class scatter in the same pass
//!   ($\approx Nd^2/2$ multiply-adds, $O(d^2)$ memory), then $P=\bar M^\top\Sigma_W\bar M$;
//! * *two passes*: first the means, then a second read of the features accumulating $P$
//!   directly from the exactly centred $h_i-\mu_{y_i}$ ($NdK$ multiply-adds, $O(Kd+K^2)$
//!   memory, no $d\times d$ matrix at all). This is cheaper whenever $2K<d$ and is what
//!   [`Strategy::Auto`] picks then. Both are exact up to rounding and agree to $10^{-10}$
//!   (tests).
//!
//! **`ncc_agreement` needs a second pass** in either strategy: the nearest-class-centre rule
//! $\arg\min_k\lVert h_i-\mu_k\rVert$ uses the final means, which are known only after the
//! first pass. It is the fraction of samples on which that rule agrees with the network's
//! decision $\arg\max_k(Wh_i+b)_k$ (Papyan et al. 2020's NC4, reported there as the mismatch
//! $1-$agreement; rhubarbwu's `clf_ncc_agreement` drops the bias, we use it when given).
//! Ties go to the smaller class index in both rules.

use super::nc2::{self, equiangular, equinorm};
use super::{nc1, nc3, nc4, stats, ClassStats, FeatureStats, GlobalMean};
use crate::backend::Device;
use crate::error::{Error, Result};
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A chunk of consecutive feature rows in the precision it was stored in.
#[derive(Clone, Copy, Debug)]
pub enum FeatureChunk<'a> {
    /// Single precision (accumulated in `f64`).
    F32(ArrayView2<'a, f32>),
    /// Double precision.
    F64(ArrayView2<'a, f64>),
}

impl FeatureChunk<'_> {
    /// Rows in the chunk.
    pub fn nrows(&self) -> usize {
        match self {
            FeatureChunk::F32(a) => a.nrows(),
            FeatureChunk::F64(a) => a.nrows(),
        }
    }
}

/// An $N\times d$ feature matrix that can be read (possibly several times) as consecutive
/// row chunks: an in-memory array ([`InMemory`]) or a file ([`crate::features::FeatureSource`]).
pub trait FeatureStream: Sync {
    /// A name for error messages (the file, or "features").
    fn name(&self) -> String;
    /// Whether the rows already live in memory (then a second pass costs no I/O).
    fn in_memory(&self) -> bool {
        false
    }
    /// The whole matrix as one chunk, when it is in memory (or memory-mapped); `None` for a
    /// stream read in chunks.
    fn whole(&self) -> Result<Option<FeatureChunk<'_>>> {
        Ok(None)
    }
    /// $N$.
    fn n_rows(&self) -> usize;
    /// $d$.
    fn feature_dim(&self) -> usize;
    /// Calls `f(first_row, chunk)` for consecutive chunks of about `chunk_rows` rows covering
    /// all rows in order.
    fn for_each_chunk(
        &self,
        chunk_rows: usize,
        f: &mut dyn FnMut(usize, FeatureChunk<'_>) -> Result<()>,
    ) -> Result<()>;
}

/// An in-memory feature matrix (any memory layout).
#[derive(Clone, Copy, Debug)]
pub struct InMemory<'a>(pub FeatureChunk<'a>);

impl<'a> From<ArrayView2<'a, f64>> for InMemory<'a> {
    fn from(a: ArrayView2<'a, f64>) -> Self {
        InMemory(FeatureChunk::F64(a))
    }
}
impl<'a> From<ArrayView2<'a, f32>> for InMemory<'a> {
    fn from(a: ArrayView2<'a, f32>) -> Self {
        InMemory(FeatureChunk::F32(a))
    }
}

impl FeatureStream for InMemory<'_> {
    fn name(&self) -> String {
        "features".into()
    }
    fn in_memory(&self) -> bool {
        true
    }
    fn whole(&self) -> Result<Option<FeatureChunk<'_>>> {
        Ok(Some(match &self.0 {
            FeatureChunk::F32(a) => FeatureChunk::F32(a.view()),
            FeatureChunk::F64(a) => FeatureChunk::F64(a.view()),
        }))
    }
    fn n_rows(&self) -> usize {
        self.0.nrows()
    }
    fn feature_dim(&self) -> usize {
        match self.0 {
            FeatureChunk::F32(a) => a.ncols(),
            FeatureChunk::F64(a) => a.ncols(),
        }
    }
    fn for_each_chunk(
        &self,
        chunk_rows: usize,
        f: &mut dyn FnMut(usize, FeatureChunk<'_>) -> Result<()>,
    ) -> Result<()> {
        let n = self.n_rows();
        let step = chunk_rows.max(1);
        let mut r = 0;
        while r < n {
            let e = (r + step).min(n);
            let c = match self.0 {
                FeatureChunk::F32(a) => FeatureChunk::F32(a.slice_move(s![r..e, ..])),
                FeatureChunk::F64(a) => FeatureChunk::F64(a.slice_move(s![r..e, ..])),
            };
            f(r, c)?;
            r = e;
        }
        Ok(())
    }
}

macro_rules! metrics {
    ($($var:ident => $name:literal, $w:literal, $p:literal, $doc:literal;)*) => {
        /// A metric, selectable by name (its JSON key).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Metric { $(#[doc = $doc] $var,)* }

        impl Metric {
            /// Every metric, in report order.
            pub const ALL: &'static [Metric] = &[$(Metric::$var,)*];
            /// The name (JSON key, `--metrics` value).
            pub fn name(self) -> &'static str { match self { $(Metric::$var => $name,)* } }
            /// Whether the metric needs the classifier $W$.
            pub fn needs_classifier(self) -> bool { match self { $(Metric::$var => $w,)* } }
            /// Whether the metric needs the bias $b$ (`bias`: without $b$ it would be
            /// $\lVert W\mu_G\rVert$, a different number, so it is left out or refused).
            pub fn needs_bias(self) -> bool { matches!(self, Metric::Bias) }
            /// Whether the metric needs $P=\bar M^\top\Sigma_W\bar M$ (scatter or second pass).
            pub fn needs_projection(self) -> bool { match self { $(Metric::$var => $p,)* } }
            /// One-line definition for tables and `--help`.
            pub fn description(self) -> &'static str { match self { $(Metric::$var => $doc,)* } }
        }
    };
}

metrics! {
    Nc1 => "nc1", false, true, "tr(Sw Sb^+)/K, pinv with rank tolerance (original code)";
    Nc1Papyan => "nc1_papyan", false, true, "tr(Sw Sb^+) over the top min(K-1, rank) eigenpairs, no 1/K (Papyan et al. 2020)";
    Nc1TraceRatio => "nc1_trace_ratio", false, false, "tr Sw / tr Sb (Tirer et al. 2023)";
    Cdnv => "cdnv", false, false, "mean over k<l of ((V_k+V_l)/2)/|mu_k-mu_l|^2 (Galanti et al. 2022)";
    Nc2W => "nc2_w", true, false, "ETF error of W W^T, W uncentred (original code)";
    Nc2WCentered => "nc2_w_centered", true, false, "ETF error of W W^T, W minus its mean row (Zhou et al. 2022)";
    Nc2H => "nc2_h", false, false, "ETF error of the centred class means' Gram matrix";
    EquinormH => "equinorm_h", false, false, "std/mean of |mu_k - mu_G| (Papyan et al. 2020)";
    EquinormW => "equinorm_w", true, false, "std/mean of |w_k| (Papyan et al. 2020)";
    EquiangularH => "equiangular_h", false, false, "mean |cos(mu_k-mu_G, mu_l-mu_G) + 1/(K-1)| (Papyan et al. 2020)";
    EquiangularW => "equiangular_w", true, false, "mean |cos(w_k, w_l) + 1/(K-1)| (Papyan et al. 2020)";
    Nc3 => "nc3", true, false, "ETF error of W Mbar (original code)";
    Nc3Papyan => "nc3_papyan", true, false, "|W/|W| - Mbar^T/|Mbar||_F^2 (Papyan et al. 2020)";
    Bias => "bias", true, false, "|W mu_G + b| (original code's NC4, bias collapse)";
    NccAgreement => "ncc_agreement", true, false, "fraction with argmin_k |h-mu_k| = argmax_k (Wh+b)_k (second pass)";
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        Metric::ALL
            .iter()
            .copied()
            .find(|m| m.name() == t)
            .ok_or_else(|| {
                let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                Error::param(
                    "--metrics",
                    format!("unknown metric `{t}`; known: {}", names.join(", ")),
                )
            })
    }
}

/// How to obtain $P=\bar M^\top\Sigma_W\bar M$ (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Two passes when $2K\le d$ or a second pass is needed anyway (`ncc_agreement`), else one.
    #[default]
    Auto,
    /// One pass with the $d\times d$ scatter.
    OnePass,
    /// Means first, then $P$ in a second pass ($O(Kd+K^2)$ memory).
    TwoPass,
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Strategy::Auto),
            "one-pass" => Ok(Strategy::OnePass),
            "two-pass" => Ok(Strategy::TwoPass),
            _ => Err(Error::param(
                "--strategy",
                format!("unknown strategy `{s}`; use auto, one-pass or two-pass"),
            )),
        }
    }
}

impl FromStr for GlobalMean {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "weighted" => Ok(GlobalMean::Weighted),
            "class-mean" => Ok(GlobalMean::ClassMean),
            _ => Err(Error::param(
                "--global-mean",
                format!("unknown global mean `{s}`; use weighted or class-mean"),
            )),
        }
    }
}

/// Settings of [`compute_metrics`].
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// The metrics to compute; `None`: every metric the inputs allow (those needing $W$ only
    /// when it is given).
    pub metrics: Option<Vec<Metric>>,
    /// $K$; `None`: the largest label plus one.
    pub n_classes: Option<usize>,
    /// Which $\mu_G$ centres the class means (every metric that uses $\mu_G$).
    pub global_mean: GlobalMean,
    /// Relative rank tolerance of `nc1` and `nc1_papyan` (default $\max(d,K)\varepsilon$, see
    /// [`nc1`]).
    pub rtol: Option<f64>,
    /// How $P$ is obtained.
    pub strategy: Strategy,
    /// Rows per chunk requested from the stream; `0`: about 16 MiB of `f64` per chunk
    /// (between 256 and 8192 rows).
    pub chunk_rows: usize,
    /// When a second pass is needed and the stream is not in memory, keep up to this many
    /// bytes of features from the first pass in memory instead of reading the file again
    /// (default 1 GiB; `0` always re-reads, so memory stays $O(d^2+Kd)$ plus one chunk).
    pub cache_bytes: usize,
    /// Where the class statistics are accumulated: [`Device::Cpu`] (default, the streaming
    /// passes above), [`Device::Cuda`] (counts, means, per-class sums of squares and the
    /// $d\times d$ within-class scatter on GPU 0 with `f64` accumulation, then the one-pass
    /// route for $P$; needs the features in memory or memory-mapped) or [`Device::Auto`]
    /// (CUDA when usable, else the CPU, with the reason in [`MetricsReport::device_note`]).
    /// The nearest-centre agreement's pass always runs on the CPU.
    pub device: Device,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            metrics: None,
            n_classes: None,
            global_mean: GlobalMean::Weighted,
            rtol: None,
            strategy: Strategy::Auto,
            chunk_rows: 0,
            cache_bytes: 1 << 30,
            device: Device::Cpu,
        }
    }
}

/// The result of [`compute_metrics`]: sizes plus one optional value per metric (absent when not
/// requested or not computable from the inputs, `NaN` / JSON `null` when undefined, e.g. all
/// class means equal).
#[derive(Clone, Debug, Default, Serialize)]
pub struct MetricsReport {
    /// $K$.
    pub n_classes: usize,
    /// $N$.
    pub n_samples: u64,
    /// $d$.
    pub feature_dim: usize,
    /// $n_k$ as counted.
    pub class_counts: Vec<u64>,
    /// `weighted` or `class_mean`.
    pub global_mean: GlobalMean,
    /// Whether $K$ was inferred as the largest label plus one.
    #[serde(skip)]
    pub n_classes_inferred: bool,
    /// Passes over the features (1, or 2 for the two-pass strategy or `ncc_agreement`).
    #[serde(skip)]
    pub passes: usize,
    /// The device that accumulated the class statistics (`cpu`, or the GPU's name).
    pub device: String,
    /// Why [`Device::Auto`] stayed on the CPU, if it did.
    #[serde(skip)]
    pub device_note: Option<String>,
    /// Messages for the user about the selection (e.g. a metric left out for a missing
    /// input); not part of the JSON.
    #[serde(skip)]
    pub notes: Vec<String>,
    /// See [`Metric::Nc1`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nc1: Option<f64>,
    /// See [`Metric::Nc1Papyan`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nc1_papyan: Option<f64>,
    /// See [`Metric::Nc1TraceRatio`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nc1_trace_ratio: Option<f64>,
    /// See [`Metric::Cdnv`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdnv: Option<f64>,
    /// See [`Metric::Nc2W`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nc2_w: Option<f64>,
    /// See [`Metric::Nc2WCentered`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nc2_w_centered: Option<f64>,
    /// See [`Metric::Nc2H`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nc2_h: Option<f64>,
    /// See [`Metric::EquinormH`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equinorm_h: Option<f64>,
    /// See [`Metric::EquinormW`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equinorm_w: Option<f64>,
    /// See [`Metric::EquiangularH`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equiangular_h: Option<f64>,
    /// See [`Metric::EquiangularW`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equiangular_w: Option<f64>,
    /// See [`Metric::Nc3`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nc3: Option<f64>,
    /// See [`Metric::Nc3Papyan`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nc3_papyan: Option<f64>,
    /// See [`Metric::Bias`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bias: Option<f64>,
    /// See [`Metric::NccAgreement`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ncc_agreement: Option<f64>,
}

impl MetricsReport {
    /// The value of `m`, if computed.
    pub fn get(&self, m: Metric) -> Option<f64> {
        match m {
            Metric::Nc1 => self.nc1,
            Metric::Nc1Papyan => self.nc1_papyan,
            Metric::Nc1TraceRatio => self.nc1_trace_ratio,
            Metric::Cdnv => self.cdnv,
            Metric::Nc2W => self.nc2_w,
            Metric::Nc2WCentered => self.nc2_w_centered,
            Metric::Nc2H => self.nc2_h,
            Metric::EquinormH => self.equinorm_h,
            Metric::EquinormW => self.equinorm_w,
            Metric::EquiangularH => self.equiangular_h,
            Metric::EquiangularW => self.equiangular_w,
            Metric::Nc3 => self.nc3,
            Metric::Nc3Papyan => self.nc3_papyan,
            Metric::Bias => self.bias,
            Metric::NccAgreement => self.ncc_agreement,
        }
    }

    pub(crate) fn slot(&mut self, m: Metric) -> &mut Option<f64> {
        match m {
            Metric::Nc1 => &mut self.nc1,
            Metric::Nc1Papyan => &mut self.nc1_papyan,
            Metric::Nc1TraceRatio => &mut self.nc1_trace_ratio,
            Metric::Cdnv => &mut self.cdnv,
            Metric::Nc2W => &mut self.nc2_w,
            Metric::Nc2WCentered => &mut self.nc2_w_centered,
            Metric::Nc2H => &mut self.nc2_h,
            Metric::EquinormH => &mut self.equinorm_h,
            Metric::EquinormW => &mut self.equinorm_w,
            Metric::EquiangularH => &mut self.equiangular_h,
            Metric::EquiangularW => &mut self.equiangular_w,
            Metric::Nc3 => &mut self.nc3,
            Metric::Nc3Papyan => &mut self.nc3_papyan,
            Metric::Bias => &mut self.bias,
            Metric::NccAgreement => &mut self.ncc_agreement,
        }
    }
}

/// Largest $K$ inferred from the labels (the largest label plus one) without `--classes`: a
/// larger one is almost always a corrupt or outlier label, and would cost $K\times d$ (and
/// $K\times K$) memory before failing.
pub const MAX_INFERRED_CLASSES: usize = 100_000;

/// Checks labels against $K$ (given or inferred) and returns $K$ and whether it was inferred.
/// $K$ may not exceed $N$ (every class needs a sample), and an inferred $K$ may not exceed
/// [`MAX_INFERRED_CLASSES`]; both are refused before anything $K$-sized is allocated.
pub fn resolve_classes(labels: &[u32], n_classes: Option<usize>) -> Result<(usize, bool)> {
    let max = labels.iter().copied().max();
    let n = labels.len();
    let at = |m: u32| labels.iter().position(|&y| y == m).unwrap_or(0);
    match (n_classes, max) {
        (_, None) => Err(Error::Data("no samples (the labels are empty)".into())),
        (Some(k), Some(m)) => {
            if k < 2 {
                return Err(Error::param("--classes", "need at least 2 classes"));
            }
            // every class needs a sample (checked before K x d statistics are allocated)
            if k > labels.len() {
                return Err(Error::param(
                    "--classes",
                    format!(
                        "K = {k} classes but only {} samples: every class needs at least one",
                        labels.len()
                    ),
                ));
            }
            if m as usize >= k {
                return Err(Error::Data(format!(
                    "label {m} at index {} is outside 0..{k} (K = {k} from --classes)",
                    at(m)
                )));
            }
            Ok((k, false))
        }
        (None, Some(m)) => {
            let k = m as usize + 1;
            if k < 2 {
                return Err(Error::Data(
                    "all labels are 0: NC metrics need at least 2 classes".into(),
                ));
            }
            if k > MAX_INFERRED_CLASSES || k > n {
                return Err(Error::Data(format!(
                    "the largest label, {m} at index {}, would make K = {k} classes but there are only {n} samples \
                     (K is inferred as the largest label + 1, at most {MAX_INFERRED_CLASSES} and at \
                     most N); check the labels for an outlier, or pass --classes K",
                    at(m)
                )));
            }
            Ok((k, true))
        }
    }
}

fn rename_stream_error(e: Error, name: &str) -> Error {
    match e {
        Error::NonFinite { what } => Error::NonFinite {
            what: format!("{what} of {name}"),
        },
        Error::Data(m) => Error::Data(format!("{name}: {m}")),
        other => other,
    }
}

/// Checks a classifier `w` ($K\times d$, finite) and bias `b` ($K$, finite, only with `w`).
pub(crate) fn check_classifier(
    w: Option<&ArrayView2<f64>>,
    b: Option<&ArrayView1<f64>>,
    k: usize,
    d: usize,
) -> Result<()> {
    if let Some(w) = w {
        if w.dim() != (k, d) {
            return Err(Error::shape(
                "classifier W",
                format!("{k}x{d} (classes x feature dim)"),
                format!("{}x{}", w.nrows(), w.ncols()),
            ));
        }
        if w.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "classifier W".into(),
            });
        }
    }
    if let Some(b) = b {
        if w.is_none() {
            return Err(Error::param(
                "--bias",
                "a bias b was given without the classifier W",
            ));
        }
        if b.len() != k {
            return Err(Error::shape(
                "bias b",
                format!("{k} entries (one per class)"),
                format!("{}", b.len()),
            ));
        }
        if b.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "bias b".into(),
            });
        }
    }
    Ok(())
}

/// Computes the selected metrics (see the [module docs](self)) of the features streamed from
/// `features` with `labels`, and of the classifier `w` ($K\times d$) and bias `b` ($K$) when
/// given.
pub fn compute_metrics(
    features: &dyn FeatureStream,
    labels: &[u32],
    w: Option<ArrayView2<f64>>,
    b: Option<ArrayView1<f64>>,
    cfg: &MetricsConfig,
) -> Result<MetricsReport> {
    let name = features.name();
    let (n, d) = (features.n_rows(), features.feature_dim());
    if labels.len() != n {
        return Err(Error::shape(
            format!("labels of {name}"),
            format!("{n} labels (one per feature row)"),
            format!("{}", labels.len()),
        ));
    }
    if d == 0 {
        return Err(Error::Data(format!("{name} has zero feature columns")));
    }
    let (k, inferred) = resolve_classes(labels, cfg.n_classes)?;
    check_classifier(w.as_ref(), b.as_ref(), k, d)?;
    let mut notes = Vec::new();
    let metrics: Vec<Metric> = match &cfg.metrics {
        Some(ms) => {
            if let Some(m) = ms.iter().find(|m| m.needs_classifier() && w.is_none()) {
                return Err(Error::param(
                    "--metrics",
                    format!(
                        "metric `{m}` needs the classifier W: pass --weights W.npy (or store `W` in the file)"
                    ),
                ));
            }
            if let Some(m) = ms.iter().find(|m| m.needs_bias() && b.is_none()) {
                return Err(Error::param(
                    "--metrics",
                    format!(
                        "metric `{m}` needs the bias b: pass --bias b.npy (or store `b` in the file; a file of zeros for a network without bias)"
                    ),
                ));
            }
            ms.clone()
        }
        None => {
            if w.is_some() && b.is_none() {
                notes.push(
                    "`bias` (|W mu_G + b|) left out: no bias b was given; pass --bias b.npy (zeros for a network without bias)"
                        .to_string(),
                );
            }
            Metric::ALL
                .iter()
                .copied()
                .filter(|m| w.is_some() || !m.needs_classifier())
                .filter(|m| b.is_some() || !m.needs_bias())
                .collect()
        }
    };
    let wants = |m: Metric| metrics.contains(&m);
    let need_p = metrics.iter().any(|m| m.needs_projection());
    let need_ncc = wants(Metric::NccAgreement);
    let two_pass = need_p
        && match cfg.strategy {
            Strategy::OnePass => false,
            Strategy::TwoPass => true,
            Strategy::Auto => need_ncc || 2 * k <= d,
        };
    let scatter = need_p && !two_pass;
    let chunk_rows = match cfg.chunk_rows {
        // One-pass: CHUNK-row syrk pieces, about 64 MiB of f64 rows per chunk (1 to 16
        // pieces). Else about 16 MiB per chunk, but at least 64 K rows, so that the
        // accumulator's per-piece K x d means stay few (at K = 100, d = 2048 each is 1.6 MB;
        // with 256-row pieces their page faults and the scattered class sums took 20% of the
        // time). Both depend on the shape only, never on the thread count: the chunks decide
        // the order of the partial sums (see `crate::par`).
        0 if scatter => stats::CHUNK * ((64 << 20) / (8 * d * stats::CHUNK)).clamp(1, 16),
        0 => ((16 << 20) / (8 * d)).clamp(256, 8192).max(64 * k),
        r => r,
    };

    // The statistics on a GPU, when asked for and possible.
    let (mut device, mut device_note) = ("cpu".to_string(), None);
    let mut from_device = None;
    if cfg.device != Device::Cpu {
        let whole = features
            .whole()
            .map_err(|e| rename_stream_error(e, &name))?;
        let res = match whole {
            Some(FeatureChunk::F32(x)) => crate::backend::class_stats(x, labels, k, Device::Cuda),
            Some(FeatureChunk::F64(x)) => crate::backend::class_stats(x, labels, k, Device::Cuda),
            None => Err(Error::Unsupported(format!(
                "{name} is streamed in chunks (Fortran order, foreign byte order or --no-mmap); the GPU path needs it in memory or memory-mapped"
            ))),
        };
        match res {
            Ok((st, dev, _)) => {
                device = dev;
                from_device = Some(st);
            }
            Err(e @ (Error::CudaUnavailable(_) | Error::Unsupported(_)))
                if cfg.device == Device::Auto =>
            {
                device_note = Some(e.to_string());
            }
            Err(e) => return Err(rename_stream_error(e, &name)),
        }
    }
    let on_device = from_device.is_some();
    // With the scatter from the device, P comes from it (the one-pass route).
    let two_pass = two_pass && !on_device;
    let second = two_pass || need_ncc;

    // Pass 1 (keeping the rows for pass 2 when they fit the cache budget).
    let mut cache: Option<(Vec<f32>, Vec<f64>)> =
        (!on_device && second && !features.in_memory() && n * d * 8 <= cfg.cache_bytes)
            .then(|| (Vec::new(), Vec::new()));
    let stats = match from_device {
        Some(st) => st,
        None => {
            let mut acc = ClassStats::with_scatter(k, d, scatter);
            features.for_each_chunk(chunk_rows, &mut |r0, chunk| {
                let ys = labels.get(r0..r0 + chunk.nrows()).ok_or_else(|| {
                    Error::shape(
                        format!("chunk of {name}"),
                        format!("rows within 0..{n}"),
                        format!("{}..{}", r0, r0 + chunk.nrows()),
                    )
                })?;
                if let Some((c32, c64)) = cache.as_mut() {
                    match chunk {
                        FeatureChunk::F32(x) => {
                            c32.reserve_exact((n * d).saturating_sub(c32.len()));
                            c32.extend(x.iter());
                        }
                        FeatureChunk::F64(x) => {
                            c64.reserve_exact((n * d).saturating_sub(c64.len()));
                            c64.extend(x.iter());
                        }
                    }
                }
                match chunk {
                    FeatureChunk::F32(x) => acc.push_at(x, ys, r0),
                    FeatureChunk::F64(x) => acc.push_at(x, ys, r0),
                }
                .map_err(|e| rename_stream_error(e, &name))
            })?;
            if acc.n_samples() != n as u64 {
                return Err(Error::format(
                    &name,
                    format!(
                        "the stream gave {} rows, the header says {n}",
                        acc.n_samples()
                    ),
                ));
            }
            acc.finish().map_err(|e| rename_stream_error(e, &name))?
        }
    };
    let gm = cfg.global_mean;
    let mt = stats.centred_means(gm);
    // G = M̄ᵀM̄ (K x K) only when a metric uses it, so that a large K costs K x K memory only
    // then.
    let need_g = need_p || need_ncc || wants(Metric::Nc2H);
    let g = if need_g {
        mt.dot(&mt.t())
    } else {
        Array2::zeros((0, 0))
    };

    // Pass 2 (if needed). `passes` counts the passes over the features on the CPU.
    let mut passes = if on_device { 0 } else { 1 };
    let mut p_mat: Option<Array2<f64>> = None;
    let mut agreement = None;
    if second {
        passes += 1;
        let cls = if need_ncc {
            w.map(|w| (w, classifier_offsets(&stats, w, b)))
        } else {
            None
        };
        // Rows cached in pass 1 (all in one precision, in order) replace the file.
        let cached: Option<Result<InMemory<'_>>> = cache.as_ref().and_then(|(c32, c64)| {
            if c32.len() == n * d {
                Some(ArrayView2::from_shape((n, d), c32.as_slice()).map(InMemory::from))
            } else if c64.len() == n * d {
                Some(ArrayView2::from_shape((n, d), c64.as_slice()).map(InMemory::from))
            } else {
                None
            }
            .map(|r| r.map_err(|e| Error::numerical("feature cache", e.to_string())))
        });
        let cached = cached.transpose()?;
        let source: &dyn FeatureStream = match &cached {
            Some(c) => c,
            None => features,
        };
        let (p, agree) = second_pass(
            source,
            labels,
            &stats,
            &mt,
            &g,
            two_pass,
            cls.as_ref().map(|(w, c)| (w.view(), c.view())),
            chunk_rows,
        )
        .map_err(|e| rename_stream_error(e, &name))?;
        if two_pass {
            p_mat = Some(p);
        }
        agreement = agree.map(|a| a as f64 / n as f64);
    }
    if need_p && p_mat.is_none() {
        p_mat = Some(nc1::projected_within(&stats, gm)?.0);
    }

    let mut r = MetricsReport {
        device,
        device_note,
        n_classes: k,
        n_samples: stats.n_samples(),
        feature_dim: d,
        class_counts: stats.counts.clone(),
        global_mean: gm,
        n_classes_inferred: inferred,
        passes,
        notes,
        ..Default::default()
    };
    let rtol = cfg.rtol.unwrap_or_else(|| nc1::default_rtol(&stats));
    for &m in &metrics {
        let v = match m {
            Metric::Nc1 => nc1::nc1_from_projection(p_mat.as_ref().expect("P"), &g, rtol)?,
            Metric::Nc1Papyan => {
                nc1::nc1_papyan_from_projection(p_mat.as_ref().expect("P"), &g, rtol)?
            }
            Metric::Nc1TraceRatio => nc1::nc1_trace_ratio(&stats, gm),
            Metric::Cdnv => nc1::cdnv(&stats),
            Metric::Nc2W => nc2::nc2_w(w.expect("W"))?,
            Metric::Nc2WCentered => nc2::nc2_w_centered(w.expect("W"))?,
            Metric::Nc2H => nc2::etf_error(g.view())?,
            Metric::EquinormH => equinorm(mt.view()),
            Metric::EquinormW => equinorm(w.expect("W")),
            Metric::EquiangularH => equiangular(mt.view()),
            Metric::EquiangularW => equiangular(w.expect("W")),
            Metric::Nc3 => nc3::nc3(&stats, w.expect("W"), gm)?,
            Metric::Nc3Papyan => nc3::nc3_papyan(&stats, w.expect("W"), gm)?,
            Metric::Bias => nc4::bias_collapse_with(&stats, w.expect("W"), b, gm)?,
            Metric::NccAgreement => agreement.expect("second pass"),
        };
        *r.slot(m) = Some(v);
    }
    Ok(r)
}

/// $c_{k}=W\mu_k+b$ for each class $k$ (rows), so that $Wh+b=W(h-\mu_k)+c_k$.
fn classifier_offsets(
    stats: &FeatureStats,
    w: ArrayView2<f64>,
    b: Option<ArrayView1<f64>>,
) -> Array2<f64> {
    let mut c = stats.means.dot(&w.t()); // K x K: row y = W mu_y
    if let Some(b) = b {
        c += &b.insert_axis(Axis(0));
    }
    c
}

/// Rows per parallel work item of the second pass: the centred `f64` block (`sub · d · 8`
/// bytes, at most 4 MiB) is large enough that the GEMM's packing of $[\bar M^\top;W]$
/// ($d\times 2K$) is amortised over many rows (with 16-row blocks at $d=2048$, $K=100$ the pass
/// took 1.7× as long).
fn sub_rows(d: usize) -> usize {
    ((4 << 20) / (8 * d)).clamp(64, 512)
}

/// Second pass: $P=\frac1N\sum_i z_iz_i^\top$ with $z_i=\bar M^\top(h_i-\mu_{y_i})$ (when
/// `want_p`), and the number of samples on which the nearest-centre rule agrees with
/// $\arg\max(Wh+b)$ (when a classifier is given).
#[allow(clippy::too_many_arguments)]
fn second_pass(
    features: &dyn FeatureStream,
    labels: &[u32],
    stats: &FeatureStats,
    mt: &Array2<f64>,
    g: &Array2<f64>,
    want_p: bool,
    cls: Option<(ArrayView2<f64>, ArrayView2<f64>)>,
    chunk_rows: usize,
) -> Result<(Array2<f64>, Option<u64>)> {
    let (k, d) = (stats.n_classes(), stats.feature_dim());
    // One GEMM against [M̄ᵀ; W] (K or 2K rows).
    let proj: Array2<f64> = match cls {
        Some((w, _)) => ndarray::concatenate(Axis(0), &[mt.view(), w]).expect("same width"),
        None => mt.clone(),
    };
    let gdiag: Array1<f64> = g.diag().to_owned();
    let mut p = Array2::<f64>::zeros((k, k));
    let mut agree = 0u64;
    features.for_each_chunk(chunk_rows, &mut |r0, chunk| {
        let ys = &labels[r0..r0 + chunk.nrows()];
        let sub = sub_rows(d);
        let n_sub = chunk.nrows().div_ceil(sub);
        // Four tasks per thread, so that a thread slowed by another process does not hold the
        // pass back.
        let per_thread = n_sub.div_ceil(4 * rayon::current_num_threads()).max(1);
        let work = |buf: &mut Vec<f64>, i: usize| -> (Array2<f64>, u64) {
            let (a, e) = (i * sub, ((i + 1) * sub).min(chunk.nrows()));
            buf.resize((e - a) * d, 0.0);
            match chunk {
                FeatureChunk::F32(x) => centre(x.slice(s![a..e, ..]), &ys[a..e], &stats.means, buf),
                FeatureChunk::F64(x) => centre(x.slice(s![a..e, ..]), &ys[a..e], &stats.means, buf),
            }
            let xc = ArrayView2::from_shape((e - a, d), &buf[..]).expect("block shape");
            let z = matmul_t(xc, proj.view()); // B x K (or B x 2K)
            let mut pp = Array2::<f64>::zeros((k, k));
            let zk = z.slice(s![.., ..k]);
            if want_p {
                ndarray::linalg::general_mat_mul(1.0, &zk.t(), &zk, 1.0, &mut pp);
            }
            let mut agr = 0u64;
            if let Some((_, off)) = cls {
                for (i, &y) in ys[a..e].iter().enumerate() {
                    let y = y as usize;
                    // NCC: argmin_k |h-mu_k|^2 = argmin_k G_kk - 2 (h-mu_G)·(mu_k-mu_G),
                    // with (h-mu_G)·(mu_k-mu_G) = z_ik + G_yk.
                    let mut best = (f64::INFINITY, 0usize);
                    for c in 0..k {
                        let dist = gdiag[c] - 2.0 * (z[[i, c]] + g[[y, c]]);
                        if dist < best.0 {
                            best = (dist, c);
                        }
                    }
                    let mut top = (f64::NEG_INFINITY, 0usize);
                    for c in 0..k {
                        let logit = z[[i, k + c]] + off[[y, c]];
                        if logit > top.0 {
                            top = (logit, c);
                        }
                    }
                    agr += u64::from(best.1 == top.1);
                }
            }
            (pp, agr)
        };
        // One K x K partial per block, added in block order: the same bits on any number
        // of threads (`crate::par`).
        let parts: Vec<(Array2<f64>, u64)> = (0..n_sub)
            .into_par_iter()
            .with_min_len(per_thread)
            .map_init(Vec::new, work)
            .collect();
        for (pp, agr) in parts {
            p += &pp;
            agree += agr;
        }
        Ok(())
    })?;
    p /= stats.n_samples() as f64;
    Ok((p, cls.map(|_| agree)))
}

/// $AB^\top$ through faer's GEMM (sequential: callers parallelise over blocks), which picks
/// AVX-512 or AVX2 kernels at run time.
fn matmul_t(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Array2<f64> {
    use faer_ext::IntoFaer;
    let mut c = Array2::<f64>::zeros((a.nrows(), b.nrows()));
    faer::linalg::matmul::matmul(
        c.view_mut().into_faer(),
        faer::Accum::Replace,
        a.into_faer(),
        b.into_faer().transpose(),
        1.0,
        faer::Par::Seq,
    );
    c
}

/// $h_i-\mu_{y_i}$ in `f64`, written row-major into `out` (`x.nrows() · d` long).
fn centre<T: crate::Real>(x: ArrayView2<T>, ys: &[u32], means: &Array2<f64>, out: &mut [f64]) {
    match (x.as_slice(), means.as_slice()) {
        (Some(rows), Some(m)) => super::kernels::centre_rows(rows, x.ncols(), ys, m, out),
        _ => {
            for ((o, r), &y) in out.chunks_exact_mut(x.ncols()).zip(x.outer_iter()).zip(ys) {
                let m = means.row(y as usize);
                for ((o, &v), &mu) in o.iter_mut().zip(r.iter()).zip(m.iter()) {
                    *o = v.to_f64_() - mu;
                }
            }
        }
    }
}
