//! Small batches into large summaries: [`BufferedStats`].
//!
//! [`ClassStats::push`] summarises a batch $X$ ($B\times d$) with one symmetric rank-$B$ update
//! of the $d\times d$ scatter, $S\mathrel{+}=X_c^\top X_c$ with $X_c$ the rows centred on the
//! batch's class means, and splits batches of more than 2048 rows across threads. A training
//! loop feeds batches of 64–512 rows: each then costs a full read and write of $S$ for only
//! $Bd^2/2$ multiply-adds, on one thread. [`BufferedStats`] copies such batches (as `f64`) into a
//! block of [`default_block_rows`] rows and summarises the block when it is full — the same
//! statistics (the Chan et al. merge is exact in exact arithmetic for any grouping of the rows,
//! see [`super::stats`]), with each block split across the threads.
//!
//! A batch is validated when it arrives (shape, labels in $0..K$, finite values), so a bad batch
//! is an error that leaves the statistics as they were; batches of at least a block go straight
//! to [`ClassStats::push`] without a copy.

use super::kernels;
use super::stats::first_non_finite_row;
use super::ClassStats;
use crate::error::{Error, Result};
use crate::real::Real;
use ndarray::ArrayView2;

/// Rows per block: at most [`PACKED_PIECE`](super::stats::PACKED_PIECE) (8192, the piece
/// [`ClassStats::push`] centres at once) and 16 MiB of `f64` rows, at least 256 rows (4096 rows
/// at $d=512$, 2048 at $d=1024$). A function of $d$ only, so that the statistics do not depend
/// on the number of threads. The cap keeps the first filling of the buffer, page faults
/// included, cheap next to the summaries.
pub fn default_block_rows(feature_dim: usize) -> usize {
    let by_memory = (16 << 20) / (8 * feature_dim.max(1));
    super::stats::PACKED_PIECE.min(by_memory).max(256)
}

/// A [`ClassStats`] accumulator that gathers small batches into blocks (see the
/// [module docs](self)).
#[derive(Clone, Debug)]
pub struct BufferedStats {
    stats: ClassStats,
    rows: Vec<f64>,
    labels: Vec<u32>,
    block_rows: usize,
}

impl BufferedStats {
    /// Buffers updates of `stats` (a new or a restored accumulator) in blocks of
    /// [`default_block_rows`] rows.
    pub fn new(stats: ClassStats) -> Self {
        let block = default_block_rows(stats.feature_dim());
        Self::with_block_rows(stats, block)
    }

    /// Buffers updates of `stats` in blocks of `block_rows` rows (at least 1).
    pub fn with_block_rows(stats: ClassStats, block_rows: usize) -> Self {
        BufferedStats {
            stats,
            rows: Vec::new(),
            labels: Vec::new(),
            block_rows: block_rows.max(1),
        }
    }

    /// $K$.
    pub fn n_classes(&self) -> usize {
        self.stats.n_classes()
    }

    /// $d$.
    pub fn feature_dim(&self) -> usize {
        self.stats.feature_dim()
    }

    /// Whether the $d\times d$ scatter is tracked.
    pub fn tracks_scatter(&self) -> bool {
        self.stats.tracks_scatter()
    }

    /// Rows per block.
    pub fn block_rows(&self) -> usize {
        self.block_rows
    }

    /// Rows waiting in the buffer.
    pub fn pending_rows(&self) -> usize {
        self.labels.len()
    }

    /// Samples seen so far, buffered ones included.
    pub fn n_samples(&self) -> u64 {
        self.stats.n_samples() + self.labels.len() as u64
    }

    /// Adds a batch (rows of `x`, $B\times d$, any layout) with its labels; errors for a
    /// wrong shape, a label outside $0..K$ or a non-finite value, leaving everything as it was.
    pub fn push<T: Real>(&mut self, x: ArrayView2<T>, labels: &[u32]) -> Result<()> {
        let (k, d) = (self.stats.n_classes(), self.stats.feature_dim());
        if x.ncols() != d {
            return Err(Error::shape(
                "features",
                format!("{d} columns (feature dimension)"),
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
        if x.nrows() >= self.block_rows {
            // Large enough on its own: no copy. Summarise what is pending first, so that the
            // order of the rows does not matter for anything but rounding.
            self.flush()?;
            return self.stats.push(x, labels);
        }
        if let Some((i, &y)) = labels.iter().enumerate().find(|(_, &y)| y as usize >= k) {
            return Err(Error::Data(format!(
                "label {y} at row {i} is outside 0..{k} (K = {k})"
            )));
        }
        if self.labels.len() + x.nrows() > self.block_rows {
            // Summarising what is pending changes no statistic, even if this batch is bad.
            self.flush()?;
        }
        self.rows.reserve(self.block_rows * d - self.rows.len());
        // Copied as f64 and screened for NaN/infinity in one pass; a bad batch is taken out
        // again and located by the slower scan.
        let start = self.rows.len();
        let mut finite = true;
        for r in x.outer_iter() {
            finite &= match r.as_slice() {
                Some(r) => kernels::widen_finite(r, &mut self.rows),
                None => r.iter().fold(true, |ok, &v| {
                    self.rows.push(v.to_f64_());
                    ok && v.is_finite()
                }),
            };
        }
        if !finite {
            self.rows.truncate(start);
            let i = first_non_finite_row(x).unwrap_or(0);
            return Err(Error::NonFinite {
                what: format!("feature row {i}"),
            });
        }
        self.labels.extend_from_slice(labels);
        if self.labels.len() == self.block_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Summarises the buffered rows into the statistics. The rows were checked on arrival, so
    /// this fails only if their sums overflow `f64` (features beyond about $10^{150}$); the
    /// buffered rows are then dropped and the statistics keep what they had before them.
    pub fn flush(&mut self) -> Result<()> {
        if self.labels.is_empty() {
            return Ok(());
        }
        let d = self.stats.feature_dim();
        let n = self.labels.len();
        let res = match ArrayView2::from_shape((n, d), &self.rows[..]) {
            Ok(x) => self.stats.push(x, &self.labels),
            Err(e) => Err(Error::numerical("row buffer", e.to_string())),
        };
        self.rows.clear();
        self.labels.clear();
        res
    }

    /// Merges another accumulator's statistics into these (after a [`flush`](Self::flush)).
    pub fn merge(&mut self, other: ClassStats) -> Result<()> {
        self.flush()?;
        self.stats.merge(other)
    }

    /// The statistics after a [`flush`](Self::flush).
    pub fn stats(&mut self) -> Result<&ClassStats> {
        self.flush()?;
        Ok(&self.stats)
    }

    /// A copy of the statistics with the buffered rows summarised in, leaving `self` as it is.
    pub fn snapshot(&self) -> Result<ClassStats> {
        let mut c = self.clone();
        c.flush()?;
        Ok(c.stats)
    }

    /// The statistics, buffered rows included.
    pub fn into_stats(mut self) -> Result<ClassStats> {
        self.flush()?;
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn data(n: usize, d: usize, k: usize, seed: u64) -> (Array2<f64>, Vec<u32>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let labels: Vec<u32> = (0..n).map(|i| ((i * 7 + i / 5) % k) as u32).collect();
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            let z: f64 = StandardNormal.sample(&mut rng);
            20.0 + z + (labels[i] as f64 + 1.0) * ((j % 3) as f64 - 1.0)
        });
        (x, labels)
    }

    /// Small and large batches through a buffer (blocks of 100 rows) give the statistics of
    /// one push of everything: scatter and means to 1e-12 relative, counts exactly.
    #[test]
    fn buffered_batches_equal_one_push() {
        let (x, y) = data(1234, 6, 4, 31);
        let mut whole = ClassStats::new(4, 6);
        whole.push(x.view(), &y).unwrap();
        let mut buf = BufferedStats::with_block_rows(ClassStats::new(4, 6), 100);
        let mut start = 0;
        for (i, size) in [1, 37, 64, 99, 100, 250, 3].iter().cycle().enumerate() {
            if start >= 1234 {
                break;
            }
            let end = (start + size).min(1234);
            let xb = x.slice(s![start..end, ..]);
            // Every third batch as f32 values widened back, in Fortran order.
            if i % 3 == 2 {
                let f = xb.t().to_owned();
                buf.push(f.t(), &y[start..end]).unwrap();
            } else {
                buf.push(xb, &y[start..end]).unwrap();
            }
            assert_eq!(buf.n_samples(), end as u64);
            start = end;
        }
        assert!(buf.pending_rows() < 100);
        let snap = buf.snapshot().unwrap();
        let got = buf.into_stats().unwrap();
        for st in [&snap, &got] {
            assert_eq!(st.counts(), whole.counts());
            let (a, b) = (st.scatter().unwrap(), whole.scatter().unwrap());
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!((&a - &b).iter().all(|v| v.abs() <= 1e-12 * scale));
            assert!((&st.means() - &whole.means())
                .iter()
                .all(|v| v.abs() <= 1e-12 * 30.0));
        }
    }

    /// A bad batch is refused before it is buffered; what was buffered survives.
    #[test]
    fn bad_batches_change_nothing() {
        let (x, y) = data(50, 3, 3, 32);
        let mut buf = BufferedStats::with_block_rows(ClassStats::new(3, 3), 1000);
        buf.push(x.slice(s![..20, ..]), &y[..20]).unwrap();
        let before = buf.snapshot().unwrap();
        let mut bad = x.slice(s![20..30, ..]).to_owned();
        bad[[4, 1]] = f64::NAN;
        let e = buf.push(bad.view(), &y[20..30]).unwrap_err().to_string();
        assert!(e.contains("feature row 4"), "{e}");
        // the same batch in column-major order (rows not contiguous: the element-wise copy)
        let bad_f = bad.t().as_standard_layout().into_owned();
        let e = buf.push(bad_f.t(), &y[20..30]).unwrap_err().to_string();
        assert!(e.contains("feature row 4"), "{e}");
        let e = buf
            .push(x.slice(s![..2, ..]), &[0, 7])
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 7 at row 1"), "{e}");
        assert!(buf.push(x.slice(s![..2, ..2]), &[0, 1]).is_err());
        assert!(buf.push(x.slice(s![..2, ..]), &[0]).is_err());
        assert_eq!(buf.pending_rows(), 20);
        let after = buf.snapshot().unwrap();
        assert_eq!(after.counts(), before.counts());
        assert_eq!(after.means(), before.means());
        assert_eq!(after.scatter(), before.scatter());
        // Merging flushes first and keeps every row.
        let mut other = ClassStats::new(3, 3);
        other.push(x.slice(s![30.., ..]), &y[30..]).unwrap();
        buf.merge(other).unwrap();
        assert_eq!(buf.pending_rows(), 0);
        assert_eq!(buf.n_samples(), 40);
        let mut want = ClassStats::new(3, 3);
        want.push(x.slice(s![..20, ..]), &y[..20]).unwrap();
        want.push(x.slice(s![30.., ..]), &y[30..]).unwrap();
        assert_eq!(buf.stats().unwrap().counts(), want.counts());
    }
}
