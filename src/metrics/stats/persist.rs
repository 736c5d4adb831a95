//! Inspecting, saving and restoring a [`ClassStats`] accumulator, so that shards accumulated
//! by several processes or nodes can be written, moved and merged.
//!
//! The accumulator's state is the stream's sufficient statistics for every NC metric but the
//! nearest-centre agreement: per class $k$ the count $n_k$, the mean $\mu_k$ and the sum of
//! squared deviations $s_k=\sum_{y_i=k}\lVert h_i-\mu_k\rVert^2$, and (optionally) the pooled
//! within-class scatter
//! $$S=\sum_i(h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top\in\mathbb R^{d\times d}.$$
//! Restoring a saved state and merging it (Chan, Golub & LeVeque 1979, see [`super`]) gives
//! the statistics of the union of the streams, as if one accumulator had seen every batch.
//!
//! **File format, version [`CLASS_STATS_VERSION`]**: an uncompressed `.npz` archive (NumPy
//! reads it with `np.load`) with the members
//!
//! | member | dtype | shape |
//! |---|---|---|
//! | `ufm_class_stats_version` | uint64 | $()$, the value 1 |
//! | `counts` | uint64 | $(K)$ |
//! | `means` | float64 | $(K, d)$ |
//! | `class_ss` | float64 | $(K)$ |
//! | `scatter` | float64 | $(d, d)$, symmetric; absent when the scatter is not tracked |
//!
//! Loading validates everything: the version, the presence, dtype and shape of every member
//! (shapes must agree with each other), finiteness, $s_k\ge0$, $n_k=0\Rightarrow\mu_k=0,
//! s_k=0$, exact symmetry of $S$ and $\operatorname{tr}S=\sum_ks_k$ (to $10^{-8}$ relative).

use super::ClassStats;
use crate::error::{Error, Result};
use ndarray::{Array0, Array1, Array2, ArrayView2};
use std::io::{Cursor, Read, Seek, Write};
use std::path::Path;

/// Version of the saved-state format written by [`ClassStats::save`].
pub const CLASS_STATS_VERSION: u64 = 1;

const VERSION_KEY: &str = "ufm_class_stats_version";

impl ClassStats {
    /// Whether the $d\times d$ within-class scatter is tracked (see [`ClassStats::with_scatter`]).
    pub fn tracks_scatter(&self) -> bool {
        self.scatter.is_some()
    }

    /// $n_k$ so far.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// $\mu_k$ so far, as the rows of a $K\times d$ matrix (zero rows for classes not seen yet).
    pub fn means(&self) -> ArrayView2<'_, f64> {
        self.means.view()
    }

    /// $s_k=\sum_{y_i=k}\lVert h_i-\mu_k\rVert^2$ so far.
    pub fn class_sums_of_squares(&self) -> &[f64] {
        &self.class_ss
    }

    /// The pooled within-class scatter $S$ so far (a symmetric copy), if tracked.
    pub fn scatter(&self) -> Option<Array2<f64>> {
        self.scatter.as_ref().map(|s| {
            let mut s = s.clone();
            super::mirror_lower(&mut s);
            s
        })
    }

    /// The finished statistics of everything seen so far, leaving the accumulator as it is
    /// (so that it can keep accumulating). Errors like [`ClassStats::finish`] when a class has
    /// no sample yet.
    pub fn statistics(&self) -> Result<super::FeatureStats> {
        self.clone().finish()
    }

    /// An accumulator holding the given state (as [`counts`](Self::counts),
    /// [`means`](Self::means), [`class_sums_of_squares`](Self::class_sums_of_squares) and
    /// [`scatter`](Self::scatter) return it), validated as described in the
    /// [module docs](self). $K$ and $d$ are the shape of `means`.
    pub fn from_parts(
        counts: Vec<u64>,
        means: Array2<f64>,
        class_ss: Vec<f64>,
        scatter: Option<Array2<f64>>,
    ) -> Result<Self> {
        let (k, d) = means.dim();
        if k == 0 || d == 0 {
            return Err(Error::shape(
                "accumulator means",
                "K x d with K >= 1 and d >= 1",
                format!("{k}x{d}"),
            ));
        }
        if counts.len() != k {
            return Err(Error::shape(
                "accumulator counts",
                format!("{k} entries (one per row of the means)"),
                format!("{}", counts.len()),
            ));
        }
        if class_ss.len() != k {
            return Err(Error::shape(
                "accumulator class_ss",
                format!("{k} entries (one per row of the means)"),
                format!("{}", class_ss.len()),
            ));
        }
        if means.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "accumulator means".into(),
            });
        }
        if class_ss.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(Error::Data(
                "accumulator class_ss must be finite and non-negative".into(),
            ));
        }
        for c in 0..k {
            if counts[c] == 0 && (class_ss[c] != 0.0 || means.row(c).iter().any(|&v| v != 0.0)) {
                return Err(Error::Data(format!(
                    "accumulator class {c} has no samples but a non-zero mean or sum of squares"
                )));
            }
        }
        let scatter = match scatter {
            None => None,
            Some(s) => {
                if s.dim() != (d, d) {
                    return Err(Error::shape(
                        "accumulator scatter",
                        format!("{d}x{d} (d = columns of the means)"),
                        format!("{}x{}", s.nrows(), s.ncols()),
                    ));
                }
                if s.iter().any(|v| !v.is_finite()) {
                    return Err(Error::NonFinite {
                        what: "accumulator scatter".into(),
                    });
                }
                if (0..d).any(|i| (0..i).any(|j| s[[i, j]] != s[[j, i]])) {
                    return Err(Error::Data("accumulator scatter is not symmetric".into()));
                }
                let tr: f64 = s.diag().sum();
                let ss: f64 = class_ss.iter().sum();
                if (tr - ss).abs() > 1e-8 * tr.abs().max(ss.abs()) {
                    return Err(Error::Data(format!(
                        "accumulator scatter has trace {tr:e} but the class sums of squares add up to {ss:e}"
                    )));
                }
                Some(s)
            }
        };
        Ok(ClassStats {
            k,
            d,
            counts,
            means,
            scatter,
            class_ss,
        })
    }

    /// Writes the state as an `.npz` archive (format in the [module docs](self)) to `w`.
    pub fn write_npz<W: Write + Seek>(&self, w: W) -> Result<()> {
        let err = |e: ndarray_npy::WriteNpzError| {
            Error::numerical("writing the accumulator state", e.to_string())
        };
        let mut npz = ndarray_npy::NpzWriter::new(w);
        npz.add_array(VERSION_KEY, &Array0::from_elem((), CLASS_STATS_VERSION))
            .map_err(err)?;
        npz.add_array("counts", &Array1::from(self.counts.clone()))
            .map_err(err)?;
        npz.add_array("means", &self.means).map_err(err)?;
        npz.add_array("class_ss", &Array1::from(self.class_ss.clone()))
            .map_err(err)?;
        if let Some(s) = self.scatter() {
            npz.add_array("scatter", &s).map_err(err)?;
        }
        npz.finish().map_err(err)?;
        Ok(())
    }

    /// The state as the bytes of an `.npz` archive (what [`save`](Self::save) writes).
    pub fn to_npz_bytes(&self) -> Result<Vec<u8>> {
        let mut buf = Cursor::new(Vec::new());
        self.write_npz(&mut buf)?;
        Ok(buf.into_inner())
    }

    /// Saves the state to `path` (atomically; format in the [module docs](self)).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_npz_bytes()?;
        crate::io::write_atomic(path, &bytes)
    }

    /// Reads a state written by [`write_npz`](Self::write_npz); `name` (a file name) is used
    /// in error messages.
    pub fn read_npz<R: Read + Seek>(r: R, name: &str) -> Result<Self> {
        let bad = |reason: String| Error::format(name, reason);
        let mut npz =
            ndarray_npy::NpzReader::new(r).map_err(|e| bad(format!("not an .npz archive: {e}")))?;
        let members = npz
            .names()
            .map_err(|e| bad(format!("cannot list the archive's members: {e}")))?;
        let has = |m: &str| members.iter().any(|n| n == m);
        if !has(VERSION_KEY) {
            return Err(bad(format!(
                "no `{VERSION_KEY}` member: not an accumulator state saved by ufm (members: {members:?})"
            )));
        }
        let version: Array0<u64> = npz
            .by_name(VERSION_KEY)
            .map_err(|e| bad(format!("`{VERSION_KEY}` is not a uint64 scalar: {e}")))?;
        let version = version.into_scalar();
        if version != CLASS_STATS_VERSION {
            return Err(bad(format!(
                "accumulator state version {version}; this ufm reads version {CLASS_STATS_VERSION}"
            )));
        }
        for m in ["counts", "means", "class_ss"] {
            if !has(m) {
                return Err(bad(format!("no `{m}` member")));
            }
        }
        let counts: Array1<u64> =
            match npz.by_name::<ndarray::OwnedRepr<u64>, ndarray::Ix1>("counts") {
                Ok(c) => c,
                Err(_) => {
                    let c: Array1<i64> = npz.by_name("counts").map_err(|e| {
                        bad(format!("`counts` is not a 1-D uint64/int64 array: {e}"))
                    })?;
                    if c.iter().any(|&v| v < 0) {
                        return Err(bad("`counts` has negative entries".into()));
                    }
                    c.mapv(|v| v as u64)
                }
            };
        let means: Array2<f64> = npz
            .by_name("means")
            .map_err(|e| bad(format!("`means` is not a 2-D float64 array: {e}")))?;
        let class_ss: Array1<f64> = npz
            .by_name("class_ss")
            .map_err(|e| bad(format!("`class_ss` is not a 1-D float64 array: {e}")))?;
        let scatter: Option<Array2<f64>> = if has("scatter") {
            Some(
                npz.by_name("scatter")
                    .map_err(|e| bad(format!("`scatter` is not a 2-D float64 array: {e}")))?,
            )
        } else {
            None
        };
        let mut st = ClassStats::from_parts(counts.to_vec(), means, class_ss.to_vec(), scatter)
            .map_err(|e| bad(e.to_string()))?;
        // The running scatter keeps only its lower triangle (see `syrk_lower`): restore that
        // invariant so that later updates and merges stay valid.
        if let Some(s) = st.scatter.as_mut() {
            for i in 0..s.nrows() {
                for j in i + 1..s.ncols() {
                    s[[i, j]] = 0.0;
                }
            }
        }
        Ok(st)
    }

    /// [`read_npz`](Self::read_npz) from bytes.
    pub fn from_npz_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        Self::read_npz(Cursor::new(bytes), name)
    }

    /// Loads a state saved by [`save`](Self::save), validated (see the [module docs](self)).
    pub fn load(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        Self::read_npz(std::io::BufReader::new(f), &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn data(n: usize, d: usize, k: usize, seed: u64) -> (Array2<f64>, Vec<u32>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let labels: Vec<u32> = (0..n).map(|i| ((i * 5 + i / 7) % k) as u32).collect();
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            let z: f64 = StandardNormal.sample(&mut rng);
            3.0 + z + labels[i] as f64 * (j as f64 * 0.2 - 0.5)
        });
        (x, labels)
    }

    fn same(a: &ClassStats, b: &ClassStats) {
        assert_eq!(a.counts, b.counts);
        assert_eq!(a.means, b.means);
        assert_eq!(a.class_ss, b.class_ss);
        assert_eq!(a.scatter(), b.scatter());
    }

    /// Save, load, keep accumulating: bit-identical to never having saved; merging a restored
    /// shard equals merging the live one.
    #[test]
    fn saved_state_round_trips_and_keeps_accumulating() {
        let (x, y) = data(900, 7, 4, 3);
        let dir = tempfile::tempdir().unwrap();
        for sc in [true, false] {
            let mut a = ClassStats::with_scatter(4, 7, sc);
            a.push(x.slice(ndarray::s![..500, ..]), &y[..500]).unwrap();
            let path = dir.path().join(format!("acc-{sc}.npz"));
            a.save(&path).unwrap();
            let mut b = ClassStats::load(&path).unwrap();
            same(&a, &b);
            assert_eq!(b.tracks_scatter(), sc);
            a.push(x.slice(ndarray::s![500.., ..]), &y[500..]).unwrap();
            b.push(x.slice(ndarray::s![500.., ..]), &y[500..]).unwrap();
            same(&a, &b);
            let bytes = b.to_npz_bytes().unwrap();
            let c = ClassStats::from_npz_bytes(&bytes, "bytes").unwrap();
            let (mut m1, mut m2) = (a.clone(), a.clone());
            m1.merge(b).unwrap();
            m2.merge(c).unwrap();
            same(&m1, &m2);
        }
    }

    /// Four shards pushed separately and merged equal one accumulator over everything (the
    /// scatter to 1e-12 relative).
    #[test]
    fn merged_shards_equal_the_whole_stream() {
        let (x, y) = data(2000, 5, 3, 4);
        let mut whole = ClassStats::new(3, 5);
        whole.push(x.view(), &y).unwrap();
        let mut merged = ClassStats::new(3, 5);
        for (xs, ys) in x.axis_chunks_iter(ndarray::Axis(0), 500).zip(y.chunks(500)) {
            let mut shard = ClassStats::new(3, 5);
            shard.push(xs, ys).unwrap();
            let restored = ClassStats::from_npz_bytes(&shard.to_npz_bytes().unwrap(), "s").unwrap();
            merged.merge(restored).unwrap();
        }
        let (sw, sm) = (whole.scatter().unwrap(), merged.scatter().unwrap());
        let scale = sw.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!((&sw - &sm).iter().all(|v| v.abs() <= 1e-12 * scale));
        assert!((&whole.means - &merged.means)
            .iter()
            .all(|v| v.abs() <= 1e-12 * 10.0));
        assert_eq!(whole.counts, merged.counts);
    }

    #[test]
    fn bad_states_are_errors() {
        let (x, y) = data(60, 3, 3, 5);
        let mut a = ClassStats::new(3, 3);
        a.push(x.view(), &y).unwrap();
        let (c, m, ss, s) = (
            a.counts().to_vec(),
            a.means().to_owned(),
            a.class_sums_of_squares().to_vec(),
            a.scatter(),
        );
        assert!(ClassStats::from_parts(c.clone(), m.clone(), ss.clone(), s.clone()).is_ok());
        let e = |r: Result<ClassStats>| r.unwrap_err().to_string();
        assert!(e(ClassStats::from_parts(
            c[..2].to_vec(),
            m.clone(),
            ss.clone(),
            s.clone()
        ))
        .contains("counts"));
        assert!(e(ClassStats::from_parts(
            c.clone(),
            m.clone(),
            ss.clone(),
            Some(Array2::zeros((2, 2)))
        ))
        .contains("scatter"));
        let mut asym = s.clone().unwrap();
        asym[[0, 1]] += 1.0;
        assert!(e(ClassStats::from_parts(
            c.clone(),
            m.clone(),
            ss.clone(),
            Some(asym)
        ))
        .contains("symmetric"));
        let mut nan = m.clone();
        nan[[1, 1]] = f64::NAN;
        assert!(e(ClassStats::from_parts(
            c.clone(),
            nan,
            ss.clone(),
            s.clone()
        ))
        .contains("NaN"));
        let mut wrong_ss = ss.clone();
        wrong_ss[0] *= 2.0;
        assert!(e(ClassStats::from_parts(
            c.clone(),
            m.clone(),
            wrong_ss,
            s.clone()
        ))
        .contains("trace"));
        let mut empty = c.clone();
        empty[2] = 0;
        assert!(e(ClassStats::from_parts(
            empty,
            m.clone(),
            ss.clone(),
            s.clone()
        ))
        .contains("no samples"));

        // Files: not an archive, another archive, another version.
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.npz");
        std::fs::write(&junk, b"not a zip").unwrap();
        assert!(e(ClassStats::load(&junk)).contains("junk.npz"));
        assert!(e(ClassStats::load(&dir.path().join("missing.npz"))).contains("cannot open"));
        let other = dir.path().join("other.npz");
        let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&other).unwrap());
        w.add_array("W", &Array2::<f64>::zeros((2, 2))).unwrap();
        w.finish().unwrap();
        assert!(e(ClassStats::load(&other)).contains("ufm_class_stats_version"));
        let v2 = dir.path().join("v2.npz");
        let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&v2).unwrap());
        w.add_array(VERSION_KEY, &Array0::from_elem((), 2u64))
            .unwrap();
        w.finish().unwrap();
        assert!(e(ClassStats::load(&v2)).contains("version 2"));
    }
}
