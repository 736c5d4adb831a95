//! Winograd's minimal filtering $F(2\times2,3\times3)$ for the stride-1, padding-1 $3\times3$
//! convolutions (Lavin & Gray, *Fast Algorithms for Convolutional Neural Networks*, CVPR 2016).
//!
//! Each $2\times2$ output tile $Y$ of channel $o$ is computed from the $4\times4$ input patch
//! $d_c$ around it (rows and columns $2t-1..2t+2$, zero outside the image) as
//! $$Y=A^\top\Big[\sum_c U_{o,c}\odot V_c\Big]A,\qquad U_{o,c}=G\,g_{o,c}\,G^\top,\qquad
//! V_c=B^\top d_c\,B,$$
//! with $g_{o,c}$ the $3\times3$ kernel and
//! $$B^\top=\begin{pmatrix}1&0&-1&0\\0&1&1&0\\0&-1&1&0\\0&1&0&-1\end{pmatrix},\quad
//! G=\begin{pmatrix}1&0&0\\\frac12&\frac12&\frac12\\\frac12&-\frac12&\frac12\\0&0&1\end{pmatrix},\quad
//! A^\top=\begin{pmatrix}1&1&1&0\\0&1&-1&-1\end{pmatrix}.$$
//! The sum over $c$ is, for each of the 16 positions $\xi$ of the $4\times4$ transform, one GEMM
//! $M_\xi=U_\xi V_\xi$ ($O\times C$ by $C\times T$, $T$ tiles): 16 multiplications per tile and
//! channel pair where the direct convolution (and im2col + GEMM) needs 36, i.e. 2.25× fewer
//! flops. The transforms are additions only (and halvings in $G$).
//!
//! The input gradient of the same convolution is again a stride-1, padding-1 $3\times3$
//! convolution, of $\partial y$ with the kernel rotated by 180° and its channels swapped,
//! $\partial x_{c}=\sum_o \operatorname{rot}(g_{o,c})\star\partial y_o$, so it runs through the
//! same code ([`transform_weight`] with `transpose = true`).
//!
//! The weight gradient is the adjoint of the same algorithm in $g$:
//! $$\partial g_{o,c}=G^\top\Big[\sum_{\text{tiles}}\partial M_o\odot V_c\Big]G,\qquad
//! \partial M_o=A\,\partial Y_o\,A^\top,$$
//! i.e. per position $\xi$ one GEMM $\partial U_\xi\mathrel{+}=\partial M_\xi V_\xi^\top$ ($O\times T$
//! by $T\times C$), again 16 products where im2col needs 36 ([`weight_grad`]); the sums over
//! the batch run in [`LANES`](super::conv::LANES) contiguous runs of groups, added in order.
//!
//! Images are taken in groups of at least [`WINO_COLS`] tiles (a function of the shape only);
//! groups are independent (no reduction across them), so the result is the same bits on any
//! number of threads. It differs from im2col + GEMM in rounding only (the tests bound the
//! difference).

use super::gemm_seq;
use crate::real::Real;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Minimum tiles (columns of the 16 GEMMs) per group of images.
pub const WINO_COLS: usize = 256;

/// Fewest input channels for which [`applies`] picks Winograd (the first convolution of a
/// network, on 3 colour channels, gains nothing: its GEMMs are too thin).
pub const MIN_CHANNELS: usize = 16;

/// Whether the Winograd path computes a convolution of kernel `k`, stride `s`, padding `p`
/// with `c` input channels on `h × w` images: $3\times3$, stride 1, padding 1, even sides,
/// at least [`MIN_CHANNELS`] channels.
pub fn applies(k: usize, s: usize, p: usize, c: usize, h: usize, w: usize) -> bool {
    k == 3
        && s == 1
        && p == 1
        && c >= MIN_CHANNELS
        && h >= 2
        && w >= 2
        && h.is_multiple_of(2)
        && w.is_multiple_of(2)
}

/// $U_\xi$ for the 16 positions $\xi$, as 16 row-major matrices `rows × cols`: with
/// `transpose = false` rows are the output channels `o` and columns the input channels `c`
/// ($G g_{o,c} G^\top$); with `transpose = true` rows are `c` and columns `o`, of the rotated
/// kernel ($G\,\operatorname{rot}(g_{o,c})\,G^\top$), for the input gradient. `w` is the
/// `o × c × 3 × 3` weight. The taps are first laid out as 9 planes of $OC$ entries (in the
/// output's row order), so that both products with $G$ are loops over whole planes.
pub fn transform_weight<T: Real>(w: &[T], o: usize, c: usize, transpose: bool) -> Vec<T> {
    assert_eq!(
        w.len(),
        o * c * 9,
        "winograd::transform_weight: an o x c x 3 x 3 weight"
    );
    weight_wide(w, o, c, transpose)
}

#[inline(always)]
fn weight_body<T: Real>(w: &[T], o: usize, c: usize, transpose: bool) -> Vec<T> {
    let half = T::of(0.5);
    let oc = o * c;
    let mut taps = vec![T::zero(); 9 * oc];
    for (i, kernel) in w.chunks_exact(9).enumerate() {
        let (dest, rot) = if transpose {
            ((i % c) * o + i / c, true)
        } else {
            (i, false)
        };
        for (pq, &v) in kernel.iter().enumerate() {
            let at = if rot { 8 - pq } else { pq };
            taps[at * oc + dest] = v;
        }
    }
    let plane = |p: usize, q: usize| &taps[(p * 3 + q) * oc..(p * 3 + q + 1) * oc];
    let mut u = vec![T::zero(); 16 * oc];
    let mut gg = vec![T::zero(); 3 * oc];
    for xi in 0..4 {
        // Row ξ of G g: for each tap column q, a plane.
        for q in 0..3 {
            let out = &mut gg[q * oc..(q + 1) * oc];
            let (a, b, e) = (plane(0, q), plane(1, q), plane(2, q));
            match xi {
                0 => out.copy_from_slice(a),
                1 => out
                    .iter_mut()
                    .zip(a.iter().zip(b).zip(e))
                    .for_each(|(d, ((&a, &b), &e))| *d = (a + b + e) * half),
                2 => out
                    .iter_mut()
                    .zip(a.iter().zip(b).zip(e))
                    .for_each(|(d, ((&a, &b), &e))| *d = (a - b + e) * half),
                _ => out.copy_from_slice(e),
            }
        }
        let (a, b, e) = (&gg[..oc], &gg[oc..2 * oc], &gg[2 * oc..]);
        for nu in 0..4 {
            let out = &mut u[(xi * 4 + nu) * oc..(xi * 4 + nu + 1) * oc];
            match nu {
                0 => out.copy_from_slice(a),
                1 => out
                    .iter_mut()
                    .zip(a.iter().zip(b).zip(e))
                    .for_each(|(d, ((&a, &b), &e))| *d = (a + b + e) * half),
                2 => out
                    .iter_mut()
                    .zip(a.iter().zip(b).zip(e))
                    .for_each(|(d, ((&a, &b), &e))| *d = (a - b + e) * half),
                _ => out.copy_from_slice(e),
            }
        }
    }
    u
}

wide_fn!(fn weight_wide[T: Real]<T>(w: &[T], o: usize, c: usize, transpose: bool) -> Vec<T> = weight_body);

/// Images per group: enough for [`WINO_COLS`] tiles of `tpi` each, at most the batch. A
/// function of the shape only.
fn group_images(n: usize, tpi: usize) -> usize {
    WINO_COLS.div_ceil(tpi).clamp(1, n)
}

/// The convolution of `n` images `x` (`n × c × h × w`, standard layout) with the transformed
/// weight `u` (from [`transform_weight`], `16 × o × c`), written to `y` (`n × o × h × w`, every
/// entry overwritten). Groups of images run in parallel; see the module docs.
///
/// # Panics
/// If `h` or `w` is odd or a slice's length does not match the sizes.
#[allow(clippy::too_many_arguments)]
pub fn conv<T: Real>(
    x: &[T],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    u: &[T],
    o: usize,
    y: &mut [T],
) {
    assert!(
        h.is_multiple_of(2) && w.is_multiple_of(2),
        "winograd::conv: even sides only"
    );
    assert_eq!(x.len(), n * c * h * w, "winograd::conv: input size");
    assert_eq!(y.len(), n * o * h * w, "winograd::conv: output size");
    assert_eq!(
        u.len(),
        16 * o * c,
        "winograd::conv: transformed weight size"
    );
    if n == 0 {
        return;
    }
    let tpi = (h / 2) * (w / 2);
    let g = group_images(n, tpi);
    y.par_chunks_mut(g * o * h * w)
        .zip(x.par_chunks(g * c * h * w))
        .for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(v, m, cb): &mut (Vec<T>, Vec<T>, Vec<T>), (yg, xg)| {
                let gi = xg.len() / (c * h * w);
                let t = gi * tpi;
                v.resize(16 * c * t, T::zero());
                m.resize(16 * o * t, T::zero());
                cb.resize(8 * (h / 2 + 1) * (w / 2), T::zero());
                input_wide(xg, gi, c, h, w, cb, v);
                for xi in 0..16 {
                    let a = ArrayView2::from_shape((o, c), &u[xi * o * c..(xi + 1) * o * c])
                        .expect("U_xi");
                    let b = ArrayView2::from_shape((c, t), &v[xi * c * t..(xi + 1) * c * t])
                        .expect("V_xi");
                    let mv =
                        ArrayViewMut2::from_shape((o, t), &mut m[xi * o * t..(xi + 1) * o * t])
                            .expect("M_xi");
                    gemm_seq(T::one(), a, b, false, mv);
                }
                output_wide(m, gi, o, h, w, yg);
            },
        );
}

/// Accumulates into `gw` (`o × c × 3 × 3`) the weight gradient of the convolution of `x`
/// (`n × c × h × w`) whose output gradient is `dy` (`n × o × h × w`); see the module docs.
/// Groups are those of [`conv`]; the batch is cut into at most
/// [`LANES`](super::conv::LANES) contiguous runs of groups, each summed in order, and the
/// runs' partial $\partial U$ are added in order: the same bits on any number of threads.
///
/// # Panics
/// If `h` or `w` is odd or a slice's length does not match the sizes.
#[allow(clippy::too_many_arguments)]
pub fn weight_grad<T: Real>(
    x: &[T],
    dy: &[T],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    gw: &mut [T],
) {
    assert!(
        h.is_multiple_of(2) && w.is_multiple_of(2),
        "winograd::weight_grad: even sides only"
    );
    assert_eq!(x.len(), n * c * h * w, "winograd::weight_grad: input size");
    assert_eq!(
        dy.len(),
        n * o * h * w,
        "winograd::weight_grad: output gradient size"
    );
    assert_eq!(
        gw.len(),
        o * c * 9,
        "winograd::weight_grad: 3x3 weight gradient size"
    );
    if n == 0 {
        return;
    }
    let tpi = (h / 2) * (w / 2);
    let g = group_images(n, tpi);
    let n_groups = n.div_ceil(g);
    let lanes = n_groups.clamp(1, super::conv::LANES);
    let per = n_groups.div_ceil(lanes) * g; // images per lane
    let partials: Vec<Vec<T>> = x
        .par_chunks(per * c * h * w)
        .zip(dy.par_chunks(per * o * h * w))
        .map(|(xl, dl)| {
            let mut du = vec![T::zero(); 16 * o * c];
            let (mut v, mut dm, mut cb) = (Vec::new(), Vec::new(), Vec::new());
            for (xg, dg) in xl.chunks(g * c * h * w).zip(dl.chunks(g * o * h * w)) {
                let gi = xg.len() / (c * h * w);
                let t = gi * tpi;
                v.resize(16 * c * t, T::zero());
                dm.resize(16 * o * t, T::zero());
                cb.resize(8 * (h / 2 + 1) * (w / 2), T::zero());
                input_wide(xg, gi, c, h, w, &mut cb, &mut v);
                output_adjoint_wide(dg, gi, o, h, w, &mut dm);
                for xi in 0..16 {
                    let a = ArrayView2::from_shape((o, t), &dm[xi * o * t..(xi + 1) * o * t])
                        .expect("dM_xi");
                    let b = ArrayView2::from_shape((c, t), &v[xi * c * t..(xi + 1) * c * t])
                        .expect("V_xi");
                    let d =
                        ArrayViewMut2::from_shape((o, c), &mut du[xi * o * c..(xi + 1) * o * c])
                            .expect("dU_xi");
                    gemm_seq(T::one(), a, b.t(), true, d);
                }
            }
            du
        })
        .collect();
    let du = crate::par::combine_in_order(partials, |a, b| {
        a.iter_mut().zip(&b).for_each(|(p, &q)| *p += q);
    })
    .expect("at least one lane");
    // ∂g = Gᵀ ∂U G, with Gᵀ = [[1, ½, ½, 0], [0, ½, -½, 0], [0, ½, ½, 1]].
    let half = T::of(0.5);
    let gt = |p: usize, u: [T; 4]| match p {
        0 => u[0] + (u[1] + u[2]) * half,
        1 => (u[1] - u[2]) * half,
        _ => (u[1] + u[2]) * half + u[3],
    };
    let oc = o * c;
    for (i, kernel) in gw.chunks_exact_mut(9).enumerate() {
        let at = |xi: usize, nu: usize| du[(xi * 4 + nu) * oc + i];
        // Gᵀ over ξ for each ν, then over ν.
        let mut col = [[T::zero(); 4]; 3];
        for nu in 0..4 {
            let u = [at(0, nu), at(1, nu), at(2, nu), at(3, nu)];
            for (p, row) in col.iter_mut().enumerate() {
                row[nu] = gt(p, u);
            }
        }
        for (p, row) in col.iter().enumerate() {
            for q in 0..3 {
                kernel[p * 3 + q] += gt(q, *row);
            }
        }
    }
}

/// $\partial M=A\,\partial Y A^\top$ for every output channel and tile of `g` images:
/// `dm[ξ][o][tile]`, the adjoint of [`output_body`]. Each output row is split into its even
/// and odd columns, by tile-row parity, so that both transforms are loops over all the
/// image's tiles.
#[inline(always)]
fn output_adjoint_body<T: Real>(dy: &[T], g: usize, o: usize, h: usize, w: usize, dm: &mut [T]) {
    let (th, tw) = (h / 2, w / 2);
    let tpi = th * tw;
    let t = g * tpi;
    // Top/bottom row of each tile, even/odd column: te, to, be, bo (tpi each); then the
    // column transform of the top and bottom rows: tc[ν], bc[ν].
    let mut split = vec![T::zero(); 4 * tpi];
    let mut cols = vec![T::zero(); 8 * tpi];
    for img in 0..g {
        for oc in 0..o {
            let plane = &dy[(img * o + oc) * h * w..(img * o + oc + 1) * h * w];
            {
                let (top, bottom) = split.split_at_mut(2 * tpi);
                let (te, to) = top.split_at_mut(tpi);
                let (be, bo) = bottom.split_at_mut(tpi);
                for (row, src) in plane.chunks_exact(w).enumerate() {
                    let (ti, i) = (row / 2, row % 2);
                    let (e, od) = if i == 0 {
                        (&mut *te, &mut *to)
                    } else {
                        (&mut *be, &mut *bo)
                    };
                    let (e, od) = (
                        &mut e[ti * tw..(ti + 1) * tw],
                        &mut od[ti * tw..(ti + 1) * tw],
                    );
                    for ((a, b), pair) in e.iter_mut().zip(od.iter_mut()).zip(src.chunks_exact(2)) {
                        *a = pair[0];
                        *b = pair[1];
                    }
                }
            }
            // Column transform of the top and bottom rows, then the row transform.
            for half in 0..2 {
                let e = &split[2 * half * tpi..(2 * half + 1) * tpi];
                let od = &split[(2 * half + 1) * tpi..(2 * half + 2) * tpi];
                a_runs(e, od, &mut cols, |nu| (4 * half + nu) * tpi);
            }
            let col = oc * t + img * tpi;
            for nu in 0..4 {
                let tr = &cols[nu * tpi..(nu + 1) * tpi];
                let br = &cols[(4 + nu) * tpi..(5 + nu) * tpi];
                a_runs(tr, br, dm, |xi| (xi * 4 + nu) * o * t + col);
            }
        }
    }
}

/// $B^\top$ applied across four runs of equal length, elementwise: writes $d_0-d_2$,
/// $d_1+d_2$, $d_2-d_1$, $d_1-d_3$ to the runs of `out` starting at `at(0..4)`.
#[inline(always)]
fn bt_runs<T: Real>(d: [&[T]; 4], out: &mut [T], at: impl Fn(usize) -> usize) {
    let n = d[0].len();
    for (k, (i, j, add)) in [(0, 2, false), (1, 2, true), (2, 1, false), (1, 3, false)]
        .into_iter()
        .enumerate()
    {
        let (o, p, q) = (&mut out[at(k)..at(k) + n], &d[i][..n], &d[j][..n]);
        if add {
            o.iter_mut()
                .zip(p.iter().zip(q))
                .for_each(|(a, (&p, &q))| *a = p + q);
        } else {
            o.iter_mut()
                .zip(p.iter().zip(q))
                .for_each(|(a, (&p, &q))| *a = p - q);
        }
    }
}

/// $A$ ($4\times2$) applied across two runs of equal length, elementwise: writes $t$, $t+b$,
/// $t-b$, $-b$ to the runs of `out` starting at `at(0..4)` (the adjoint of $A^\top$).
#[inline(always)]
fn a_runs<T: Real>(t: &[T], b: &[T], out: &mut [T], at: impl Fn(usize) -> usize) {
    let n = t.len();
    let run = |k: usize| at(k)..at(k) + n;
    out[run(0)].copy_from_slice(t);
    let o = &mut out[run(1)];
    o.iter_mut()
        .zip(t.iter().zip(b))
        .for_each(|(a, (&p, &q))| *a = p + q);
    let o = &mut out[run(2)];
    o.iter_mut()
        .zip(t.iter().zip(b))
        .for_each(|(a, (&p, &q))| *a = p - q);
    out[run(3)].iter_mut().zip(b).for_each(|(a, &q)| *a = -q);
}

/// $V_\xi$ for every channel and tile of `g` images: `v[ξ][c][tile]`, tiles in image, row,
/// column order. Written as loops that vectorise: each padded image row is split into its
/// even and odd columns $E,O$ (tile column $t$ covers columns $E_t,O_t,E_{t+1},O_{t+1}$) and
/// its column transform $d\,B$ is formed once (`cb`, shared by the two tile rows that overlap
/// it), stored by row parity, so that the row transform $B^\top(\cdot)$ is one loop over all
/// the image's tiles for each of the 16 outputs.
#[inline(always)]
fn input_body<T: Real>(
    xg: &[T],
    g: usize,
    c: usize,
    h: usize,
    w: usize,
    cb: &mut [T],
    v: &mut [T],
) {
    let (th, tw) = (h / 2, w / 2);
    let tpi = th * tw;
    let t = g * tpi;
    let (mut even, mut odd) = (vec![T::zero(); tw + 1], vec![T::zero(); tw + 1]);
    // cb[parity][ν][padded row / 2][tile column], for the h + 2 padded rows (th + 1 of each
    // parity); the first even and the last odd padded row are the zero border.
    let half = (th + 1) * tw;
    let (cbe, cbo) = cb[..8 * half].split_at_mut(4 * half);
    for nu in 0..4 {
        cbe[nu * half..nu * half + tw].fill(T::zero());
        cbo[nu * half + th * tw..(nu + 1) * half].fill(T::zero());
    }
    for img in 0..g {
        for ch in 0..c {
            let plane = &xg[(img * c + ch) * h * w..(img * c + ch + 1) * h * w];
            for (r, src) in plane.chunks_exact(w).enumerate() {
                // Padded row p = (0, src, 0): E_k = p[2k] = src[2k-1], O_k = p[2k+1] = src[2k].
                even[0] = T::zero();
                odd[tw] = T::zero();
                for ((o, e), pair) in odd[..tw]
                    .iter_mut()
                    .zip(&mut even[1..])
                    .zip(src.chunks_exact(2))
                {
                    *o = pair[0];
                    *e = pair[1];
                }
                // Padded row r + 1: odd rows come from even r.
                let (dst, slot) = if r % 2 == 0 {
                    (&mut *cbo, r / 2)
                } else {
                    (&mut *cbe, r / 2 + 1)
                };
                let d = [&even[..tw], &odd[..tw], &even[1..], &odd[1..]];
                bt_runs(d, dst, |nu| nu * half + slot * tw);
            }
            // Tile (ti, tj) reads padded rows 2ti..2ti+3: even rows ti, ti+1 and odd rows ti,
            // ti+1 of each parity, i.e. the runs [0, tpi) and [tw, tw + tpi).
            let col = ch * t + img * tpi;
            for nu in 0..4 {
                let (e, o) = (
                    &cbe[nu * half..(nu + 1) * half],
                    &cbo[nu * half..(nu + 1) * half],
                );
                let d = [&e[..tpi], &o[..tpi], &e[tw..tw + tpi], &o[tw..tw + tpi]];
                bt_runs(d, v, |xi| (xi * 4 + nu) * c * t + col);
            }
        }
    }
}

/// $Y=A^\top M A$ for every output channel and tile of `g` images, into `yg` (`g × o × h × w`):
/// the row transform in one loop over all the image's tiles (contiguous in `m`), then the
/// column transform per output row, interleaving the even and odd output columns.
#[inline(always)]
fn output_body<T: Real>(m: &[T], g: usize, o: usize, h: usize, w: usize, yg: &mut [T]) {
    let (th, tw) = (h / 2, w / 2);
    let tpi = th * tw;
    let t = g * tpi;
    // ar[i][ν][tile]: the two rows of Aᵀ M.
    let mut ar = vec![T::zero(); 8 * tpi];
    for img in 0..g {
        for oc in 0..o {
            let col = oc * t + img * tpi;
            let (a0s, a1s) = ar.split_at_mut(4 * tpi);
            for nu in 0..4 {
                let at = |xi: usize| {
                    let s = (xi * 4 + nu) * o * t + col;
                    &m[s..s + tpi]
                };
                let (m0, m1, m2, m3) = (at(0), at(1), at(2), at(3));
                let a0 = &mut a0s[nu * tpi..(nu + 1) * tpi];
                for (a, ((&p, &q), &r)) in a0.iter_mut().zip(m0.iter().zip(m1).zip(m2)) {
                    *a = p + q + r;
                }
                let a1 = &mut a1s[nu * tpi..(nu + 1) * tpi];
                for (a, ((&p, &q), &r)) in a1.iter_mut().zip(m1.iter().zip(m2).zip(m3)) {
                    *a = p - q - r;
                }
            }
            let plane = &mut yg[(img * o + oc) * h * w..(img * o + oc + 1) * h * w];
            for (row, out) in plane.chunks_exact_mut(w).enumerate() {
                let (ti, i) = (row / 2, row % 2);
                let r = &ar[i * 4 * tpi..(i + 1) * 4 * tpi];
                let run = |nu: usize| &r[nu * tpi + ti * tw..nu * tpi + (ti + 1) * tw];
                let (r0, r1, r2, r3) = (run(0), run(1), run(2), run(3));
                for (pair, (((&p, &q), &s), &u)) in out
                    .chunks_exact_mut(2)
                    .zip(r0.iter().zip(r1).zip(r2).zip(r3))
                {
                    pair[0] = p + q + s;
                    pair[1] = q - s - u;
                }
            }
        }
    }
}

wide_fn!(fn input_wide[T: Real]<T>(
    xg: &[T],
    g: usize,
    c: usize,
    h: usize,
    w: usize,
    cb: &mut [T],
    v: &mut [T],
) -> () = input_body);

wide_fn!(fn output_adjoint_wide[T: Real]<T>(
    dy: &[T],
    g: usize,
    o: usize,
    h: usize,
    w: usize,
    dm: &mut [T],
) -> () = output_adjoint_body);

wide_fn!(fn output_wide[T: Real]<T>(
    m: &[T],
    g: usize,
    o: usize,
    h: usize,
    w: usize,
    yg: &mut [T],
) -> () = output_body);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// Calls `f(x index, y index, weight index)` for every term
    /// $W_{o,c,p,q}\,x_{n,c,i+p-1,j+q-1}$ of $y_{n,o,i,j}$ (stride 1, padding 1, 3×3) whose
    /// input pixel is inside the image: the direct convolution and both its adjoints.
    fn each_term(
        (n, c, o, h, w): (usize, usize, usize, usize, usize),
        mut f: impl FnMut(usize, usize, usize),
    ) {
        for img in 0..n {
            for oc in 0..o {
                for i in 0..h {
                    for j in 0..w {
                        let yi = ((img * o + oc) * h + i) * w + j;
                        for ch in 0..c {
                            for p in 0..3 {
                                for q in 0..3 {
                                    let (a, b) = ((i + p).wrapping_sub(1), (j + q).wrapping_sub(1));
                                    if a < h && b < w {
                                        let xi = ((img * c + ch) * h + a) * w + b;
                                        f(xi, yi, ((oc * c + ch) * 3 + p) * 3 + q);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Largest |a - b| relative to the largest |b|.
    fn rel_err<A: Copy + Into<f64>>(a: &[A], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(b)
            .fold(0.0f64, |m, (&p, q)| m.max((p.into() - q).abs()));
        err / scale
    }

    /// Forward, input-gradient and weight-gradient transforms against the direct sums, in f64
    /// (to 1e-12 relative to the largest entry) and, forward, f32 (to 1e-5), on shapes with one
    /// and several images per group, several lanes, and non-square images.
    #[test]
    fn winograd_matches_the_direct_convolution() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // (7, 4, 3, 32, 32): one image per group, 7 groups in 4 lanes of 2, 2, 2 and 1.
        for &dims in &[
            (1, 2, 3, 2, 2),
            (3, 5, 4, 4, 6),
            (5, 16, 8, 8, 8),
            (2, 3, 2, 32, 30),
            (7, 4, 3, 32, 32),
        ] {
            let (n, c, o, h, w) = dims;
            let mut uniform = |len: usize| -> Vec<f64> {
                (0..len).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect()
            };
            let (x, wt, dy) = (
                uniform(n * c * h * w),
                uniform(o * c * 9),
                uniform(n * o * h * w),
            );
            let (mut want_y, mut want_dx, mut want_gw) = (
                vec![0.0; n * o * h * w],
                vec![0.0; n * c * h * w],
                vec![0.25; o * c * 9],
            );
            each_term(dims, |xi, yi, wi| {
                want_y[yi] += wt[wi] * x[xi];
                want_dx[xi] += wt[wi] * dy[yi];
                want_gw[wi] += dy[yi] * x[xi];
            });

            let u = transform_weight(&wt, o, c, false);
            let mut y = vec![f64::NAN; n * o * h * w];
            conv(&x, n, c, h, w, &u, o, &mut y);
            let err = rel_err(&y, &want_y);
            assert!(err <= 1e-12, "f64 forward {dims:?}: {err}");

            let (x32, w32): (Vec<f32>, Vec<f32>) = (
                x.iter().map(|&v| v as f32).collect(),
                wt.iter().map(|&v| v as f32).collect(),
            );
            let u32_ = transform_weight(&w32, o, c, false);
            let mut y32 = vec![f32::NAN; n * o * h * w];
            conv(&x32, n, c, h, w, &u32_, o, &mut y32);
            let err = rel_err(&y32, &want_y);
            assert!(err <= 1e-5, "f32 forward {dims:?}: {err}");

            // The input gradient is the convolution of dy with the rotated, transposed kernel.
            let ut = transform_weight(&wt, o, c, true);
            let mut dx = vec![f64::NAN; n * c * h * w];
            conv(&dy, n, o, h, w, &ut, c, &mut dx);
            let err = rel_err(&dx, &want_dx);
            assert!(err <= 1e-12, "f64 input gradient {dims:?}: {err}");

            // The weight gradient, accumulated onto 0.25.
            let mut gw = vec![0.25; o * c * 9];
            weight_grad(&x, &dy, n, c, h, w, o, &mut gw);
            let err = rel_err(&gw, &want_gw);
            assert!(err <= 1e-12, "f64 weight gradient {dims:?}: {err}");
        }
    }

    /// `Conv2d` with and without Winograd on an eligible layer (16 → 24 channels, 8×8, 9
    /// images: several groups and lanes): output, input gradient and accumulated weight
    /// gradient agree to 1e-12 relative in f64; a frozen weight gets no gradient either way.
    #[test]
    fn conv2d_winograd_and_im2col_paths_agree() {
        use super::super::conv::{Conv2d, ConvInit};
        use ndarray::Array4;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut wino = Conv2d::<f64>::new(16, 24, 3, 1, 1, ConvInit::TorchDefault, &mut rng);
        let mut gemm = wino.clone();
        gemm.winograd = false;
        assert!(applies(3, 1, 1, 16, 8, 8));
        let x = Array4::from_shape_fn((9, 16, 8, 8), |_| rng.random::<f64>() - 0.5);
        let dy = Array4::from_shape_fn((9, 24, 8, 8), |_| rng.random::<f64>() - 0.5);
        for conv in [&mut wino, &mut gemm] {
            conv.weight.grad.fill(0.125);
        }
        let close = |a: &[f64], b: &[f64], what: &str| {
            let err = rel_err(a, b);
            assert!(err <= 1e-12, "{what}: {err}");
        };
        let (yw, yg) = (wino.forward(x.clone()), gemm.forward(x.clone()));
        close(yw.as_slice().unwrap(), yg.as_slice().unwrap(), "output");
        let (dw, dg) = (
            wino.backward(&dy, true).unwrap(),
            gemm.backward(&dy, true).unwrap(),
        );
        close(
            dw.as_slice().unwrap(),
            dg.as_slice().unwrap(),
            "input gradient",
        );
        close(
            wino.weight.grad.as_slice().unwrap(),
            gemm.weight.grad.as_slice().unwrap(),
            "weight gradient",
        );
        wino.weight.trainable = false;
        wino.weight.grad.fill(0.0);
        wino.forward(x);
        assert!(wino.backward(&dy, false).is_none());
        assert!(wino.weight.grad.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn applies_only_to_same_3x3_stride_1_even_maps() {
        assert!(applies(3, 1, 1, 64, 32, 32));
        assert!(!applies(3, 2, 1, 64, 32, 32));
        assert!(!applies(3, 1, 0, 64, 32, 32));
        assert!(!applies(1, 1, 0, 64, 32, 32));
        assert!(!applies(3, 1, 1, 3, 32, 32));
        assert!(!applies(3, 1, 1, 64, 7, 8));
        assert!(!applies(3, 1, 1, 64, 1, 1));
    }
}
