//! The class-centred scatter update
//! $$S\mathrel{+}=X_c^\top X_c,\qquad (X_c)_{r\cdot}=x_r-\nu_{y_r},$$
//! lower triangle only, by a packed AVX-512 kernel that splits the work across threads without
//! changing a bit of the result.
//!
//! The structure is that of a BLAS `syrk` (Goto & van de Geijn, *Anatomy of high-performance
//! matrix multiplication*, ACM TOMS 2008): the rows are cut into blocks of [`KC`] rows; each
//! block is centred, converted to `f64` and packed into panels of 8 columns (one 512-bit
//! register of `f64`), each panel $KC\times 8$ contiguous; then every $8\times24$ tile of the
//! lower triangle of $S$ is computed by a register-resident micro-kernel (24 accumulators;
//! per row, three loads, eight broadcasts and 24 fused multiply-adds) and added to $S$.
//! Compared with a general product it skips the strictly upper tiles, so it does about half
//! the flops of $X_c^\top X_c$, and the centring costs no extra pass over the rows.
//!
//! **Determinism.** Each tile of $S$ belongs to one band of 8 rows, bands are the parallel
//! tasks, and each entry sums its rows in row order within a block and the blocks in order: the
//! same bits on any number of threads (they differ in rounding from the portable path, which
//! runs on CPUs without AVX-512; see [`available`]).

use crate::real::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Rows per packed block.
pub const KC: usize = 1024;
/// Columns per panel (one 512-bit vector of `f64`).
const W: usize = 8;
/// Panels per packing task.
const GROUP: usize = 8;
/// Panels per tile along the columns of $S$ (a tile is $8\times 24$).
const TJ: usize = 3;

/// One cache line of `f64`, so that panels start on a 64-byte boundary.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f64; W]);

/// Whether the packed kernel runs on this CPU (x86-64 with AVX-512F); otherwise callers use the
/// portable triangular product.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Adds the lower triangle of $X_c^\top X_c$ to `s` ($d\times d$, standard layout) and each
/// row's $\lVert x_r-\nu_{y_r}\rVert^2$ to `class_ss[y_r]` (in row order), where `means` holds
/// the centres $\nu_k$ as rows. The strictly upper triangle of `s` is left untouched. Returns
/// `false` (and does nothing) when the packed kernel is not [`available`] or `s` is not in
/// standard layout; labels must be in range (callers validate them).
pub fn add_centred<T: Real>(
    s: &mut ArrayViewMut2<f64>,
    x: ArrayView2<T>,
    labels: &[u32],
    means: ArrayView2<f64>,
    class_ss: &mut [f64],
) -> bool {
    let d = x.ncols();
    if !available() || s.as_slice().is_none() || s.dim() != (d, d) || means.ncols() != d {
        return false;
    }
    if x.nrows() == 0 || d == 0 {
        return true;
    }
    let n_panels = d.div_ceil(W);
    // Panels past the last are zero, so that every tile reads three real or zero panels.
    let padded = n_panels.div_ceil(TJ) * TJ;
    let mut packed = vec![Line::default(); padded * KC];
    let n_groups = n_panels.div_ceil(GROUP);
    let mut group_ss = vec![0.0f64; n_groups * KC];
    let s = s.as_slice_mut().expect("checked above");
    for (xb, lb) in x
        .axis_chunks_iter(ndarray::Axis(0), KC)
        .zip(labels.chunks(KC))
    {
        let kb = lb.len();
        // Centre and pack, in parallel over groups of GROUP panels (each task reads its
        // columns of every row, contiguous, and writes its own panels); each task also sums its
        // columns' share of every row's squares in 8 lanes, and the groups' shares are added
        // in group order: a function of d only, like everything else here.
        packed[..n_panels * KC]
            .par_chunks_mut(GROUP * KC)
            .zip(group_ss.par_chunks_mut(KC))
            .enumerate()
            .for_each(|(g, (panels, ss))| {
                // SAFETY: this path runs only when `available()` found AVX-512F.
                unsafe { pack_group_avx512(panels, ss, g, xb, lb, means) }
            });
        for (r, &y) in lb.iter().enumerate() {
            let mut acc = 0.0;
            for g in 0..n_groups {
                acc += group_ss[g * KC + r];
            }
            class_ss[y as usize] += acc;
        }
        let packed = &packed[..];
        s.par_chunks_mut(W * d)
            .enumerate()
            .for_each(|(band, rows)| band_update(rows, band, d, packed, kb));
    }
    true
}

/// [`pack_group`] compiled for AVX-512 (the same IEEE operations, so the same bits, only wider).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn pack_group_avx512<T: Real>(
    panels: &mut [Line],
    ss: &mut [f64],
    g: usize,
    xb: ArrayView2<T>,
    lb: &[u32],
    means: ArrayView2<f64>,
) {
    pack_group(panels, ss, g, xb, lb, means)
}

/// Centres and packs the columns of group `g` (panels $8g'..$, [`GROUP`] of them) of the rows
/// `xb`, writing each row's share of its sum of squares to `ss[r]` (8 lanes, then added).
#[inline(always)]
fn pack_group<T: Real>(
    panels: &mut [Line],
    ss: &mut [f64],
    g: usize,
    xb: ArrayView2<T>,
    lb: &[u32],
    means: ArrayView2<f64>,
) {
    let d = xb.ncols();
    let c0 = g * GROUP * W;
    let c1 = (c0 + GROUP * W).min(d);
    for (r, &y) in lb.iter().enumerate() {
        let row = xb.row(r);
        let mu = means.row(y as usize);
        let mut lanes = [0.0f64; W];
        // Column q (absolute) of row r, outside whole 8-column chunks.
        let put = |q: usize, v: f64, panels: &mut [Line], lanes: &mut [f64; W]| {
            let c = q - c0;
            panels[(c / W) * KC + r].0[c % W] = v;
            lanes[c % W] += v * v;
        };
        match (row.as_slice(), mu.as_slice()) {
            (Some(xr), Some(m)) => {
                let (xr, m) = (&xr[c0..c1], &m[c0..c1]);
                let mut xs = xr.chunks_exact(W);
                let mut ms = m.chunks_exact(W);
                for (p, (xc, mc)) in (&mut xs).zip(&mut ms).enumerate() {
                    let line = &mut panels[p * KC + r].0;
                    for q in 0..W {
                        let v = xc[q].to_f64_() - mc[q];
                        line[q] = v;
                        lanes[q] += v * v;
                    }
                }
                let done = c0 + (c1 - c0) / W * W;
                for (i, (&v, &c)) in xs.remainder().iter().zip(ms.remainder()).enumerate() {
                    put(done + i, v.to_f64_() - c, panels, &mut lanes);
                }
            }
            _ => {
                for q in c0..c1 {
                    put(q, row[q].to_f64_() - mu[q], panels, &mut lanes);
                }
            }
        }
        ss[r] = lanes.iter().sum::<f64>();
    }
}

/// The sums of columns `c0..c1` per class, as a $K\times(c_1-c_0)$ row-major vector; compiled
/// for AVX-512 (the same additions in the same order as a plain loop).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn column_group_sums<T: Real>(
    x: ArrayView2<T>,
    labels: &[u32],
    k: usize,
    c0: usize,
    c1: usize,
) -> Vec<f64> {
    let w = c1 - c0;
    let mut local = vec![0.0f64; k * w];
    for (row, &y) in x.outer_iter().zip(labels) {
        let dst = &mut local[y as usize * w..(y as usize + 1) * w];
        match row.as_slice() {
            Some(r) => {
                for (a, &v) in dst.iter_mut().zip(&r[c0..c1]) {
                    *a += v.to_f64_();
                }
            }
            None => {
                for (j, a) in dst.iter_mut().enumerate() {
                    *a += row[c0 + j].to_f64_();
                }
            }
        }
    }
    local
}

/// Per-class counts and sums $\sum_{y_r=k}x_r$ (`f64`, $K\times d$), in parallel over groups of
/// 64 columns: each column is summed in row order, so the result is the same bits as a
/// sequential loop on any number of threads. Only where [`available`] (compiled for AVX-512).
pub fn class_sums<T: Real>(x: ArrayView2<T>, labels: &[u32], k: usize) -> (Vec<u64>, Array2<f64>) {
    const COLS: usize = 64;
    let d = x.ncols();
    let mut counts = vec![0u64; k];
    for &y in labels {
        counts[y as usize] += 1;
    }
    let groups: Vec<Vec<f64>> = (0..d.div_ceil(COLS))
        .into_par_iter()
        .map(|g| {
            let (c0, c1) = (g * COLS, ((g + 1) * COLS).min(d));
            // SAFETY: callers use this only where `available()` found AVX-512F.
            unsafe { column_group_sums(x, labels, k, c0, c1) }
        })
        .collect();
    let mut sums = Array2::<f64>::zeros((k, d));
    for (g, local) in groups.iter().enumerate() {
        let c0 = g * COLS;
        let w = local.len() / k.max(1);
        for c in 0..k {
            sums.row_mut(c)
                .slice_mut(ndarray::s![c0..c0 + w])
                .assign(&ndarray::ArrayView1::from(&local[c * w..(c + 1) * w]));
        }
    }
    (counts, sums)
}

/// Adds the tiles of band `band` (rows $8b..8b+8$ of $S$, given as `rows`) from one packed
/// block of `kb` rows.
fn band_update(rows: &mut [f64], band: usize, d: usize, packed: &[Line], kb: usize) {
    let i0 = band * W;
    let n_rows = rows.len() / d;
    let i_last = i0 + n_rows - 1;
    let bcast = &packed[band * KC..band * KC + kb];
    let mut acc = [[0.0f64; W * TJ]; W];
    let mut t = 0;
    while t * TJ * W <= i_last {
        let j0 = t * TJ * W;
        let a = &packed[t * TJ * KC..(t * TJ + TJ) * KC];
        tile(a, bcast, kb, &mut acc);
        let full = j0 + TJ * W <= d && j0 + TJ * W - 1 <= i0;
        for (ii, acc_row) in acc.iter().enumerate().take(n_rows) {
            let row = &mut rows[ii * d..(ii + 1) * d];
            if full {
                for (sv, &av) in row[j0..j0 + TJ * W].iter_mut().zip(acc_row) {
                    *sv += av;
                }
            } else {
                let j_end = (i0 + ii + 1).min(d).min(j0 + TJ * W);
                for j in j0..j_end.max(j0) {
                    row[j] += acc_row[j - j0];
                }
            }
        }
        t += 1;
    }
}

/// One $8\times24$ tile: `out[ii][j] = Σ_r bcast[r][ii] · a[(j/8)·KC + r][j%8]`.
fn tile(a: &[Line], bcast: &[Line], kb: usize, out: &mut [[f64; W * TJ]; W]) {
    debug_assert!(a.len() >= (TJ - 1) * KC + kb && bcast.len() >= kb);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `add_centred` runs only when `available()` said AVX-512F is present, and the
        // slices hold the `kb` rows of each panel read below (checked above).
        unsafe { tile_avx512(a, bcast, kb, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, bcast, kb, out);
        unreachable!("the packed scatter kernel runs only on x86-64 with AVX-512F")
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(a: &[Line], bcast: &[Line], kb: usize, out: &mut [[f64; W * TJ]; W]) {
    use std::arch::x86_64::{
        __m512d, _mm512_fmadd_pd, _mm512_load_pd, _mm512_set1_pd, _mm512_setzero_pd,
        _mm512_storeu_pd,
    };
    let mut c: [[__m512d; TJ]; W] = [[_mm512_setzero_pd(); TJ]; W];
    let a0 = a.as_ptr() as *const f64;
    let a1 = a0.add(KC * W);
    let a2 = a0.add(2 * KC * W);
    let b = bcast.as_ptr() as *const f64;
    for r in 0..kb {
        let o = r * W;
        let v0 = _mm512_load_pd(a0.add(o));
        let v1 = _mm512_load_pd(a1.add(o));
        let v2 = _mm512_load_pd(a2.add(o));
        for (ii, ci) in c.iter_mut().enumerate() {
            let bb = _mm512_set1_pd(*b.add(o + ii));
            ci[0] = _mm512_fmadd_pd(v0, bb, ci[0]);
            ci[1] = _mm512_fmadd_pd(v1, bb, ci[1]);
            ci[2] = _mm512_fmadd_pd(v2, bb, ci[2]);
        }
    }
    for (ci, oi) in c.iter().zip(out.iter_mut()) {
        for (v, chunk) in ci.iter().zip(oi.chunks_exact_mut(W)) {
            _mm512_storeu_pd(chunk.as_mut_ptr(), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{RngExt, SeedableRng};

    /// Against a direct double loop, for sizes around the panel, tile and block edges: lower
    /// triangle to 1e-13 relative, upper triangle untouched, class sums of squares to 1e-13.
    #[test]
    fn packed_scatter_matches_a_direct_sum() {
        if !available() {
            // Without AVX-512F the kernel must decline, leaving the portable path
            // (`stats::tests::packed_and_portable_paths_both_equal_two_pass`) to the caller.
            let mut s = Array2::zeros((2, 2));
            let x = Array2::<f64>::ones((3, 2));
            let m = Array2::zeros((1, 2));
            assert!(!add_centred(
                &mut s.view_mut(),
                x.view(),
                &[0, 0, 0],
                m.view(),
                &mut [0.0]
            ));
            assert!(s.iter().all(|&v| v == 0.0));
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for &(n, d, k) in &[
            (1, 1, 1),
            (5, 7, 2),
            (300, 8, 3),
            (257, 25, 4),
            (513, 49, 5),
            (40, 96, 3),
        ] {
            let x = Array2::from_shape_fn((n, d), |_| rng.random::<f64>() * 4.0 - 1.0);
            let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..k as u32)).collect();
            let means = Array2::from_shape_fn((k, d), |_| rng.random::<f64>());
            let mut s = Array2::from_elem((d, d), -7.0);
            let mut ss = vec![0.5; k];
            assert!(add_centred(
                &mut s.view_mut(),
                x.view(),
                &labels,
                means.view(),
                &mut ss
            ));
            let mut want_ss = vec![0.5; k];
            for i in 0..d {
                for j in 0..d {
                    let mut want = -7.0;
                    if j <= i {
                        for r in 0..n {
                            let m = means.row(labels[r] as usize);
                            want += (x[[r, i]] - m[i]) * (x[[r, j]] - m[j]);
                        }
                    }
                    let tol = 1e-13 * (n as f64 * 16.0 + 7.0);
                    assert!(
                        (s[[i, j]] - want).abs() <= tol,
                        "n={n} d={d} ({i},{j}): {} vs {want}",
                        s[[i, j]]
                    );
                }
            }
            for r in 0..n {
                let m = means.row(labels[r] as usize);
                want_ss[labels[r] as usize] +=
                    (0..d).map(|c| (x[[r, c]] - m[c]).powi(2)).sum::<f64>();
            }
            for (a, b) in ss.iter().zip(&want_ss) {
                assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
            }
        }
    }

    /// The same bits on 1, 2 and 3 threads.
    #[test]
    fn packed_scatter_is_the_same_on_any_number_of_threads() {
        if !available() {
            return; // nothing to run: the kernel declines (tested just above)
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (n, d, k) = (700, 70, 4);
        let x = Array2::from_shape_fn((n, d), |_| rng.random::<f32>());
        let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..k as u32)).collect();
        let means = Array2::from_shape_fn((k, d), |_| rng.random::<f64>() * 0.5);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut s = Array2::zeros((d, d));
                let mut ss = vec![0.0; k];
                add_centred(&mut s.view_mut(), x.view(), &labels, means.view(), &mut ss);
                (s, ss)
            })
        };
        let (s1, ss1) = run(1);
        for t in [2, 3] {
            let (s, ss) = run(t);
            assert!(s
                .iter()
                .zip(s1.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            assert!(ss.iter().zip(&ss1).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
