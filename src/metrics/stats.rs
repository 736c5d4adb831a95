//! Streaming class statistics: one pass, `f64` accumulation, mergeable across chunks and
//! threads.
//!
//! For each batch the accumulator forms the batch's class means $\nu_k$ and the batch's pooled
//! within-class scatter $\sum_i(h_i-\nu_{y_i})(h_i-\nu_{y_i})^\top$ **about the batch's own class
//! means**, then merges it into the running totals with the parallel-variance update of Chan,
//! Golub & LeVeque (1979), per class $k$ with running count $n_k$, mean $\mu_k$ and batch count
//! $m_k$:
//! $$S\leftarrow S+S_{\text{batch}}+\sum_k\frac{n_km_k}{n_k+m_k}(\nu_k-\mu_k)(\nu_k-\mu_k)^\top,\qquad
//! \mu_k\leftarrow\mu_k+\frac{m_k}{n_k+m_k}(\nu_k-\mu_k).$$
//!
//! **Why not $\Sigma_W=(S-\sum_kn_k\mu_k\mu_k^\top)/N$ with the raw second moment $S$?** That
//! one-pass formula subtracts two numbers of size $\lVert\mu\rVert^2$ to get one of size
//! $\sigma^2$, losing $\log_{10}(\lVert\mu\rVert^2/\sigma^2)$ digits; with features offset by
//! $10^4$ and unit spread it loses about eight of sixteen digits (the test
//! `scatter_is_accurate_far_from_the_origin` shows the raw formula failing where this one holds
//! to 1e-12). Centring each batch about its own class means keeps every summand of size
//! $\sigma^2$, at the same cost: one $d\times d$ GEMM per batch plus a rank-$K$ correction.
//!
//! Memory: $O(d^2+Kd)$ (the scatter, the class sums), independent of $N$.

use super::kernels;
use crate::error::{Error, Result};
use crate::par;
use crate::real::Real;
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

pub mod persist;
pub mod scatter;
pub use persist::CLASS_STATS_VERSION;

/// Rows per piece in [`ClassStats::push`] with the scatter (each piece is one `syrk`).
pub const CHUNK: usize = 2048;

/// Rows per piece with the scatter when the packed kernel ([`scatter`]) runs: it splits one
/// piece across the threads itself, so one lane of long pieces (each piece costs a rank-$K$
/// correction of the scatter).
pub const PACKED_PIECE: usize = 8192;

/// Most lanes (partial accumulators) of one [`ClassStats::push`] with the $d\times d$ scatter:
/// each lane merge costs a rank-$K$ update of the scatter, so few and long lanes.
pub const SCATTER_LANES: usize = 4;

/// Most lanes of one [`ClassStats::push`] without the scatter.
const MAX_LANES: usize = 16;

/// Bytes the lanes' partial accumulators of one push may take together.
const LANE_BUDGET: usize = 256 << 20;

/// Rows per piece of a push of `rows` rows: [`PACKED_PIECE`] on the packed scatter kernel,
/// [`CHUNK`] with the scatter otherwise; without it about an
/// eighth of the batch, at least $16K$ rows (so the $K\times d$ means of a piece cost little
/// next to its rows) and between 256 and [`CHUNK`]. A function of the shape only.
fn piece_rows(rows: usize, k: usize, scatter: bool, packed: bool) -> usize {
    if packed {
        PACKED_PIECE
    } else if scatter {
        CHUNK
    } else {
        rows.div_ceil(8).max(16 * k).clamp(256, CHUNK)
    }
}

/// Streaming, mergeable accumulator of per-class counts, means and the pooled within-class
/// scatter (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct ClassStats {
    k: usize,
    d: usize,
    counts: Vec<u64>,
    means: Array2<f64>,
    /// Pooled within-class scatter $\sum_i(h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top$, if tracked.
    scatter: Option<Array2<f64>>,
    /// Per-class sum of squared deviations $\sum_{y_i=k}\lVert h_i-\mu_k\rVert^2$.
    class_ss: Vec<f64>,
}

/// Finished statistics (all classes present).
#[derive(Clone, Debug)]
pub struct FeatureStats {
    /// $n_k$.
    pub counts: Vec<u64>,
    /// $\mu_k$ as the rows of a $K\times d$ matrix.
    pub means: Array2<f64>,
    /// Pooled within-class scatter $N\Sigma_W$ ($d\times d$), when it was tracked.
    pub scatter: Option<Array2<f64>>,
    /// $\sum_{y_i=k}\lVert h_i-\mu_k\rVert^2$.
    pub class_ss: Vec<f64>,
}

impl ClassStats {
    /// An empty accumulator for `k` classes in dimension `d`, tracking the $d\times d$ scatter.
    pub fn new(k: usize, d: usize) -> Self {
        Self::with_scatter(k, d, true)
    }

    /// An empty accumulator; with `scatter = false` only counts, means and per-class sums of
    /// squares are kept ($O(Kd)$ memory), which suffices for every metric but NC1.
    pub fn with_scatter(k: usize, d: usize, scatter: bool) -> Self {
        ClassStats {
            k,
            d,
            counts: vec![0; k],
            means: Array2::zeros((k, d)),
            scatter: scatter.then(|| Array2::zeros((d, d))),
            class_ss: vec![0.0; k],
        }
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.k
    }
    /// Feature dimension.
    pub fn feature_dim(&self) -> usize {
        self.d
    }
    /// Samples seen so far.
    pub fn n_samples(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds a batch of features (rows of `x`, $B\times d$) with their labels. Large batches
    /// are split into pieces summarised in parallel and merged in a fixed order, so the result
    /// does not depend on the number of threads (but it does, in the last bits, on how the
    /// stream is cut into batches).
    pub fn push<T: Real>(&mut self, x: ArrayView2<T>, labels: &[u32]) -> Result<()> {
        self.push_at(x, labels, 0)
    }

    /// [`push`](Self::push) for a batch whose first row is row `first_row` of a larger stream;
    /// only used to report the absolute row index of a non-finite value.
    pub fn push_at<T: Real>(
        &mut self,
        x: ArrayView2<T>,
        labels: &[u32],
        first_row: usize,
    ) -> Result<()> {
        let packed = self.scatter.is_some() && scatter::available();
        self.push_on(x, labels, first_row, packed)
    }

    /// [`push_at`](Self::push_at) on the packed scatter kernel (`packed`, only where it is
    /// [`available`](scatter::available)) or on the portable path: lanes of faer's triangular
    /// product. Decided once per push, so that tests can run both paths on one machine.
    fn push_on<T: Real>(
        &mut self,
        x: ArrayView2<T>,
        labels: &[u32],
        first_row: usize,
        packed: bool,
    ) -> Result<()> {
        if x.ncols() != self.d {
            return Err(Error::shape(
                "features",
                format!("{} columns (feature dimension)", self.d),
                format!("{}", x.ncols()),
            ));
        }
        if x.nrows() != labels.len() {
            return Err(Error::shape(
                "labels",
                format!("{} labels (one per feature row)", x.nrows()),
                format!("{}", labels.len()),
            ));
        }
        if let Some((i, &y)) = labels
            .iter()
            .enumerate()
            .find(|(_, &y)| y as usize >= self.k)
        {
            return Err(Error::Data(format!(
                "label {y} at row {} is outside 0..{} (K = {})",
                first_row + i,
                self.k,
                self.k
            )));
        }
        // The batch is cut into pieces and the pieces into lanes by its shape alone (never
        // the thread count); lanes are summarised in parallel, each absorbing its pieces in
        // order, and the lanes are merged in order (`crate::par`): the same bits on any number
        // of threads. The batch is summarised on its own, checked, and only then merged, so
        // that a batch with a NaN leaves the running totals untouched.
        let (k, d, sc) = (self.k, self.d, self.scatter.is_some());
        let piece = piece_rows(x.nrows(), k, sc, packed);
        let n_pieces = x.nrows().div_ceil(piece).max(1);
        let lanes = if packed {
            1
        } else if sc {
            par::lanes_within(SCATTER_LANES, 1, d * d * 8, LANE_BUDGET)
        } else {
            par::lanes_within(MAX_LANES, 1, 2 * k * d * 8, LANE_BUDGET)
        };
        let lane_rows = par::lane_len(n_pieces, lanes) * piece;
        let parts: Vec<ClassStats> = x
            .axis_chunks_iter(Axis(0), lane_rows)
            .into_par_iter()
            .zip(labels.par_chunks(lane_rows))
            .map(|(xl, ll)| {
                let mut acc = ClassStats::with_scatter(k, d, sc);
                for (xc, lc) in xl.axis_chunks_iter(Axis(0), piece).zip(ll.chunks(piece)) {
                    acc.absorb(xc, lc, packed);
                }
                acc
            })
            .collect();
        let part = par::combine_in_order(parts, |a, b| a.merge_unchecked(b))
            .unwrap_or_else(|| ClassStats::with_scatter(k, d, sc));
        // A NaN or an infinity anywhere in the batch reaches its class sum and so its mean and
        // sum of squares: checking those K(d+1) numbers replaces a screen of every value. Only
        // then is the offending row looked for.
        let finite =
            part.means.iter().all(|v| v.is_finite()) && part.class_ss.iter().all(|v| v.is_finite());
        if !finite {
            return Err(match first_non_finite_row(x) {
                Some(i) => Error::NonFinite {
                    what: format!("feature row {}", first_row + i),
                },
                None => Error::numerical(
                    "class statistics",
                    format!(
                        "sums of the finite feature rows {first_row}.. overflow f64; rescale the features"
                    ),
                ),
            });
        }
        self.merge_unchecked(part);
        Ok(())
    }

    /// Adds one batch (already validated) to the running totals: the batch's class means
    /// $\nu_k$, its scatter about them accumulated straight into the running scatter (lower
    /// triangle only), then the Chan et al. correction.
    fn absorb<T: Real>(&mut self, x: ArrayView2<T>, labels: &[u32], packed: bool) {
        let (k, d) = (self.k, self.d);
        let (mut counts, mut means) = (vec![0u64; k], Array2::<f64>::zeros((k, d)));
        if packed {
            // Summed in parallel by columns: the same bits as the loop below.
            (counts, means) = scatter::class_sums(x, labels, k);
        } else {
            match (x.as_slice(), means.as_slice_mut()) {
                (Some(rows), Some(sums)) => kernels::class_sums(rows, d, labels, sums, &mut counts),
                _ => {
                    for (row, &y) in x.outer_iter().zip(labels) {
                        let y = y as usize;
                        counts[y] += 1;
                        let mut m = means.row_mut(y);
                        for (a, &v) in m.iter_mut().zip(row.iter()) {
                            *a += v.to_f64_();
                        }
                    }
                }
            }
        }
        for (mut m, &c) in means.outer_iter_mut().zip(&counts) {
            if c > 0 {
                m /= c as f64;
            }
        }
        let mut class_ss = vec![0.0; k];
        match self.scatter.as_mut() {
            Some(s) => {
                if packed
                    && scatter::add_centred(
                        &mut s.view_mut(),
                        x,
                        labels,
                        means.view(),
                        &mut class_ss,
                    )
                {
                    self.merge_moments(&counts, &means, &class_ss);
                    return;
                }
                let mut xc = Array2::<f64>::zeros((x.nrows(), d));
                for ((mut r, row), &y) in xc.outer_iter_mut().zip(x.outer_iter()).zip(labels) {
                    let m = means.row(y as usize);
                    let mut ss = 0.0;
                    for ((a, &v), &mu) in r.iter_mut().zip(row.iter()).zip(m.iter()) {
                        *a = v.to_f64_() - mu;
                        ss += *a * *a;
                    }
                    class_ss[y as usize] += ss;
                }
                syrk_lower(s, xc.view());
            }
            None => {
                for (row, &y) in x.outer_iter().zip(labels) {
                    let m = means.row(y as usize);
                    let ss: f64 = match (row.as_slice(), m.as_slice()) {
                        (Some(r), Some(mu)) => kernels::sq_dev(r, mu),
                        _ => row
                            .iter()
                            .zip(m.iter())
                            .map(|(&v, &mu)| (v.to_f64_() - mu) * (v.to_f64_() - mu))
                            .sum(),
                    };
                    class_ss[y as usize] += ss;
                }
            }
        }
        self.merge_moments(&counts, &means, &class_ss);
    }

    /// Chan et al. update of counts, means, per-class sums of squares and (lower triangle of)
    /// the scatter with another summary's moments; the other scatter, if any, must already
    /// have been added.
    fn merge_moments(&mut self, counts: &[u64], means: &Array2<f64>, class_ss: &[f64]) {
        // Rows √(n m/(n+m)) (ν − μ) of the rank-K correction.
        let mut corr = Array2::<f64>::zeros((self.k, self.d));
        let mut any = false;
        for c in 0..self.k {
            let (n, m) = (self.counts[c] as f64, counts[c] as f64);
            if m == 0.0 {
                continue;
            }
            let delta: Array1<f64> = &means.row(c) - &self.means.row(c);
            let w = n * m / (n + m);
            if n > 0.0 {
                any = true;
                corr.row_mut(c).assign(&(&delta * w.sqrt()));
                self.class_ss[c] += w * delta.dot(&delta);
            }
            self.class_ss[c] += class_ss[c];
            self.means.row_mut(c).scaled_add(m / (n + m), &delta);
            self.counts[c] += counts[c];
        }
        if let (Some(s), true) = (self.scatter.as_mut(), any) {
            syrk_lower(s, corr.view());
        }
    }

    /// Merges another accumulator (same $K$, $d$) into this one (Chan et al. update).
    pub fn merge(&mut self, other: ClassStats) -> Result<()> {
        if other.k != self.k || other.d != self.d {
            return Err(Error::shape(
                "merged statistics",
                format!("K={}, d={}", self.k, self.d),
                format!("K={}, d={}", other.k, other.d),
            ));
        }
        if self.scatter.is_some() != other.scatter.is_some() {
            return Err(Error::Unsupported(
                "cannot merge statistics with and without the scatter matrix".into(),
            ));
        }
        self.merge_unchecked(other);
        Ok(())
    }

    fn merge_unchecked(&mut self, other: ClassStats) {
        if let (Some(s), Some(o)) = (self.scatter.as_mut(), other.scatter.as_ref()) {
            // Both hold valid lower triangles; adding the full matrices keeps that true.
            *s += o;
        }
        self.merge_moments(&other.counts, &other.means, &other.class_ss);
    }

    /// Finishes the accumulation; every class must have at least one sample.
    pub fn finish(self) -> Result<FeatureStats> {
        let empty = self.counts.iter().filter(|&&c| c == 0).count();
        if empty > 0 {
            let list = crate::error::capped_list((0..self.k).filter(|&c| self.counts[c] == 0), 8);
            let of = if empty > 1 {
                format!(" ({empty} classes of {})", self.k)
            } else {
                String::new()
            };
            return Err(Error::Data(format!(
                "class(es) {list} have no samples{of}; every class 0..{} needs at least one (or pass the right number of classes)",
                self.k
            )));
        }
        let mut scatter = self.scatter;
        if let Some(s) = scatter.as_mut() {
            mirror_lower(s);
        }
        Ok(FeatureStats {
            counts: self.counts,
            means: self.means,
            scatter,
            class_ss: self.class_ss,
        })
    }
}

/// Whether every entry is finite: $\sum_j 0\cdot r_j$ is NaN exactly when some entry is NaN or
/// infinite; eight independent accumulators let it vectorise.
#[inline]
fn lanes_all_finite<T: Real>(r: &[T]) -> bool {
    let mut acc = [T::zero(); 8];
    let c = r.chunks_exact(8);
    let rem = c.remainder();
    for a in c {
        for j in 0..8 {
            acc[j] += a[j] * T::zero();
        }
    }
    acc.iter()
        .chain(rem.iter())
        .all(|v| (*v * T::zero()) == T::zero())
}

/// Index of the first row of `x` holding a NaN or an infinity.
pub(crate) fn first_non_finite_row<T: Real>(x: ArrayView2<T>) -> Option<usize> {
    // Screen with a vectorisable sum of v * 0 (NaN for NaN or ±Inf, else 0); only on failure
    // locate the row.
    let clean = x.outer_iter().all(|r| match r.as_slice() {
        Some(r) => lanes_all_finite(r),
        None => r.iter().fold(T::zero(), |a, &v| a + v * T::zero()) == T::zero(),
    });
    if clean {
        return None;
    }
    x.outer_iter()
        .position(|r| r.iter().any(|v| !v.is_finite()))
}

/// Lower triangle of $S\mathrel{+}=X^\top X$ (the upper triangle is left untouched): a
/// symmetric rank-$B$ update (BLAS `syrk`), by the packed kernel of [`scatter`] (parallel, the
/// same bits on any number of threads) where it runs, else through faer's triangular matrix
/// product (sequential: callers parallelise across batches). Both skip the strictly upper
/// blocks and so do half the flops of a full GEMM.
pub(crate) fn syrk_lower(s: &mut Array2<f64>, x: ArrayView2<f64>) {
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    use faer_ext::IntoFaer;
    if x.nrows() == 0 {
        return;
    }
    let d = x.ncols();
    let (zero, labels, mut ss) = (Array2::zeros((1, d)), vec![0u32; x.nrows()], [0.0]);
    if scatter::add_centred(&mut s.view_mut(), x, &labels, zero.view(), &mut ss) {
        return;
    }
    let xf = x.into_faer();
    matmul(
        s.view_mut().into_faer(),
        BlockStructure::TriangularLower,
        faer::Accum::Add,
        xf.transpose(),
        BlockStructure::Rectangular,
        xf,
        BlockStructure::Rectangular,
        1.0,
        faer::Par::Seq,
    );
}

/// Copies the lower triangle of a square matrix onto its upper triangle.
pub(crate) fn mirror_lower(s: &mut Array2<f64>) {
    let n = s.nrows();
    for i in 0..n {
        for j in 0..i {
            s[[j, i]] = s[[i, j]];
        }
    }
}

impl FeatureStats {
    /// $K$.
    pub fn n_classes(&self) -> usize {
        self.counts.len()
    }
    /// $d$.
    pub fn feature_dim(&self) -> usize {
        self.means.ncols()
    }
    /// $N$.
    pub fn n_samples(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// $\mu_G$ of the chosen kind.
    pub fn global_mean(&self, kind: super::GlobalMean) -> Array1<f64> {
        match kind {
            super::GlobalMean::Weighted => {
                let n = self.n_samples() as f64;
                let mut g = Array1::zeros(self.feature_dim());
                for (m, &c) in self.means.outer_iter().zip(&self.counts) {
                    g.scaled_add(c as f64 / n, &m);
                }
                g
            }
            super::GlobalMean::ClassMean => self.means.mean_axis(Axis(0)).expect("K >= 1"),
        }
    }

    /// $\bar M^\top$: the centred class means as the rows of a $K\times d$ matrix.
    pub fn centred_means(&self, kind: super::GlobalMean) -> Array2<f64> {
        let g = self.global_mean(kind);
        &self.means - &g.insert_axis(Axis(0))
    }

    /// $\Sigma_W$ ($d\times d$), if the scatter was tracked.
    pub fn sigma_w(&self) -> Option<Array2<f64>> {
        let n = self.n_samples() as f64;
        self.scatter.as_ref().map(|s| s / n)
    }

    /// $\operatorname{tr}\Sigma_W=\frac1N\sum_k\sum_{y_i=k}\lVert h_i-\mu_k\rVert^2$.
    pub fn trace_sigma_w(&self) -> f64 {
        self.class_ss.iter().sum::<f64>() / self.n_samples() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::s;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn data(n: usize, d: usize, k: usize, offset: f64, seed: u64) -> (Array2<f64>, Vec<u32>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let labels: Vec<u32> = (0..n).map(|i| ((i * 7 + i / 3) % k) as u32).collect();
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            let z: f64 = StandardNormal.sample(&mut rng);
            offset + z + labels[i] as f64 * (j as f64 + 1.0) * 0.3
        });
        (x, labels)
    }

    /// Two-pass reference: exact means, then the scatter about them.
    fn two_pass(x: &Array2<f64>, labels: &[u32], k: usize) -> (Array2<f64>, Array2<f64>) {
        let d = x.ncols();
        let mut means = Array2::<f64>::zeros((k, d));
        let mut counts = vec![0.0; k];
        for (r, &y) in x.outer_iter().zip(labels) {
            means.row_mut(y as usize).scaled_add(1.0, &r);
            counts[y as usize] += 1.0;
        }
        for c in 0..k {
            means.row_mut(c).mapv_inplace(|v| v / counts[c]);
        }
        let mut s = Array2::<f64>::zeros((d, d));
        for (r, &y) in x.outer_iter().zip(labels) {
            let dv = &r - &means.row(y as usize);
            for a in 0..d {
                for b in 0..d {
                    s[[a, b]] += dv[a] * dv[b];
                }
            }
        }
        (means, s)
    }

    #[test]
    fn streaming_chunks_and_merges_equal_two_pass() {
        let (x, y) = data(5000, 6, 4, 0.5, 1);
        let (m_ref, s_ref) = two_pass(&x, &y, 4);
        // Uneven batches, and a parallel push of the rest.
        let mut acc = ClassStats::new(4, 6);
        acc.push(x.slice(ndarray::s![..7, ..]), &y[..7]).unwrap();
        acc.push(x.slice(ndarray::s![7..300, ..]), &y[7..300])
            .unwrap();
        acc.push(x.slice(ndarray::s![300.., ..]), &y[300..])
            .unwrap();
        let st = acc.finish().unwrap();
        let scale = s_ref.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!((&st.means - &m_ref).iter().all(|v| v.abs() < 1e-12));
        assert!((st.scatter.as_ref().unwrap() - &s_ref)
            .iter()
            .all(|v| v.abs() < 1e-12 * scale));
        let tr: f64 = (0..6).map(|i| s_ref[[i, i]]).sum();
        assert!((st.class_ss.iter().sum::<f64>() - tr).abs() < 1e-12 * tr);
    }

    /// The packed kernel (where this CPU has it) and the portable lanes both equal the
    /// two-pass reference to 1e-12 for features offset by 1e4, in batches of every size
    /// (pieces, lanes and the block tail), so the path a CPU without AVX-512 takes is tested
    /// on this one too.
    #[test]
    fn packed_and_portable_paths_both_equal_two_pass() {
        let (x, y) = data(5000, 37, 5, 1e4, 9);
        let (m_ref, s_ref) = two_pass(&x, &y, 5);
        let scale = s_ref.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let mut paths = vec![false];
        if scatter::available() {
            paths.push(true);
        }
        for packed in paths {
            for batch in [1, 700, 5000] {
                let mut acc = ClassStats::new(5, 37);
                for (xc, yc) in x.axis_chunks_iter(Axis(0), batch).zip(y.chunks(batch)) {
                    acc.push_on(xc, yc, 0, packed).unwrap();
                }
                let st = acc.finish().unwrap();
                let s = st.scatter.unwrap();
                let rel = (&s - &s_ref).iter().fold(0.0f64, |a, v| a.max(v.abs())) / scale;
                assert!(rel < 1e-12, "packed={packed} batch={batch}: scatter {rel}");
                let dm = (&st.means - &m_ref)
                    .iter()
                    .fold(0.0f64, |a, v| a.max(v.abs()));
                assert!(dm < 1e-9, "packed={packed} batch={batch}: means {dm}");
            }
        }
    }

    #[test]
    fn scatter_is_accurate_far_from_the_origin() {
        // Features offset by 1e4 with unit spread: the raw-moment formula loses ~8 digits.
        let (x, y) = data(3000, 3, 3, 1e4, 2);
        let (_, s_ref) = two_pass(&x, &y, 3);
        let mut acc = ClassStats::new(3, 3);
        for (xc, yc) in x.axis_chunks_iter(Axis(0), 100).zip(y.chunks(100)) {
            acc.push(xc, yc).unwrap();
        }
        let st = acc.finish().unwrap();
        let s = st.scatter.unwrap();
        let rel = (&s - &s_ref).iter().fold(0.0f64, |a, v| a.max(v.abs())) / s_ref[[0, 0]];
        assert!(rel < 1e-12, "streaming relative error {rel}");
        // The raw second-moment formula on the same data.
        let mut raw = Array2::<f64>::zeros((3, 3));
        let mut sums = Array2::<f64>::zeros((3, 3));
        let mut cnt = [0.0; 3];
        for (r, &c) in x.outer_iter().zip(&y) {
            for a in 0..3 {
                for b in 0..3 {
                    raw[[a, b]] += r[a] * r[b];
                }
            }
            sums.row_mut(c as usize).scaled_add(1.0, &r);
            cnt[c as usize] += 1.0;
        }
        for c in 0..3 {
            let m = sums.row(c).mapv(|v| v / cnt[c]);
            for a in 0..3 {
                for b in 0..3 {
                    raw[[a, b]] -= cnt[c] * m[a] * m[b];
                }
            }
        }
        let rel_raw = (&raw - &s_ref).iter().fold(0.0f64, |a, v| a.max(v.abs())) / s_ref[[0, 0]];
        assert!(
            rel_raw > 1e3 * rel.max(1e-16),
            "raw formula unexpectedly accurate: {rel_raw}"
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut acc = ClassStats::new(3, 2);
        let x = Array2::<f64>::zeros((2, 2));
        assert!(acc
            .push(x.view(), &[0, 3])
            .unwrap_err()
            .to_string()
            .contains("label 3"));
        assert!(acc.push(x.view(), &[0]).is_err());
        assert!(acc
            .push(Array2::<f64>::zeros((2, 3)).view(), &[0, 1])
            .is_err());
        let mut bad = x.clone();
        bad[[1, 1]] = f64::NAN;
        assert!(acc
            .push(bad.view(), &[0, 1])
            .unwrap_err()
            .to_string()
            .contains("row 1"));
        acc.push(x.view(), &[0, 1]).unwrap();
        assert!(acc.finish().unwrap_err().to_string().contains("[2]"));
    }

    /// A batch with a NaN or an infinity anywhere (found through its class sums, in a batch
    /// large enough to be split across threads) is an error naming the absolute row, and the
    /// running totals keep exactly what they had.
    #[test]
    fn a_non_finite_batch_is_rejected_and_loses_nothing() {
        let (x, y) = data(3000, 9, 4, 2.0, 11);
        for sc in [false, true] {
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let mut acc = ClassStats::with_scatter(4, 9, sc);
                acc.push(x.slice(s![..1000, ..]), &y[..1000]).unwrap();
                let before = acc.clone();
                let mut xb = x.slice(s![1000.., ..]).to_owned();
                xb[[1777, 8]] = bad;
                let e = acc
                    .push_at(xb.view(), &y[1000..], 1000)
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("feature row 2777"), "{e}");
                assert_eq!(acc.counts, before.counts);
                assert_eq!(acc.means, before.means);
                assert_eq!(acc.class_ss, before.class_ss);
                assert_eq!(acc.scatter, before.scatter);
            }
        }
        // Finite values whose squares overflow f64 are an error too, not an infinite metric.
        let mut acc = ClassStats::new(1, 2);
        let huge = Array2::from_shape_vec((2, 2), vec![1e200, 0.0, -1e200, 0.0]).unwrap();
        let e = acc.push(huge.view(), &[0, 0]).unwrap_err().to_string();
        assert!(e.contains("overflow"), "{e}");
    }

    #[test]
    fn non_finite_values_are_found_in_every_lane_and_the_remainder() {
        // d = 19: two full 8-lane chunks and a remainder of 3.
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for col in [0, 5, 8, 15, 16, 18] {
                let mut x = Array2::<f64>::from_elem((4, 19), 1.5);
                x[[2, col]] = bad;
                assert_eq!(
                    first_non_finite_row(x.view()),
                    Some(2),
                    "{bad} at column {col}"
                );
                let x32 = x.mapv(|v| v as f32);
                assert_eq!(
                    first_non_finite_row(x32.view()),
                    Some(2),
                    "f32 {bad} at column {col}"
                );
            }
        }
        let clean = Array2::<f64>::from_elem((3, 19), -2.0);
        assert_eq!(first_non_finite_row(clean.view()), None);
        // The lane-parallel sum of squared deviations equals the plain sum.
        let r: Vec<f64> = (0..19).map(|j| j as f64 * 0.7 - 3.0).collect();
        let mu: Vec<f64> = (0..19).map(|j| (j % 5) as f64).collect();
        let plain: f64 = r.iter().zip(&mu).map(|(a, b)| (a - b) * (a - b)).sum();
        assert!((super::super::kernels::sq_dev(&r, &mu) - plain).abs() < 1e-12 * plain);
    }
}
