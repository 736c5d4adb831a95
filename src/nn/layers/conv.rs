//! 2-D convolution without bias (every convolution of the ResNets has `bias=False`):
//! $$y_{n,o,i,j}=\sum_{c,p,q}W_{o,c,p,q}\,x_{n,c,\,si+p-\pi,\,sj+q-\pi}$$
//! (stride $s$, zero padding $\pi$). Stride-1 "same" 3×3 convolutions with at least 16 input
//! channels on even maps run by Winograd's $F(2\times2,3\times3)$ ([`super::winograd`], all
//! three products; [`Conv2d::winograd`] turns it off); the others are
//! computed as im2col + GEMM on groups of $G$ images:
//! $Y_g=W_{[o,(c,p,q)]}\,X_{\text{col},g}$ with $X_{\text{col},g}\in\mathbb R^{Ck^2\times GH'W'}$.
//! Backward: $\partial_W=\sum_g\delta_g\,X_{\text{col},g}^\top$ and
//! $\partial_x=\operatorname{col2im}(W^\top\delta_g)$; im2col is recomputed rather than stored.
//!
//! $G$ is the smallest group with at least [`GROUP_COLS`] output pixels (one image from
//! 16×16 up), capped so that the batch makes at least [`LANES`] groups; it depends on the
//! shape only. Groups run in parallel on the rayon pool, each with single-threaded GEMMs
//! ([`super::gemm_seq`]); $\partial_W$ is summed over at most [`LANES`] contiguous runs of
//! groups, each in order, and the runs' partials in order, so every result is the same bits
//! on any number of threads. With $G=1$ the product lands directly in the image's
//! `out × H'W'` slice of $y$, and a 1×1 stride-1 convolution without padding uses the image
//! itself as $X_\text{col}$. For a "same" stride-1 convolution each row of $X_\text{col}$ is
//! one contiguous copy of the image plane (plus zeroed borders). Kernel taps that can only
//! ever see the zero padding (all but the centre of a 3×3 kernel on a 1×1 map, as in
//! resnet18's last stage on 32×32 inputs) are left out of $X_\text{col}$ and of the GEMMs:
//! their rows would be zero, and their weight gradient is exactly zero.

use super::{gemm_seq, init, join, Module, Param, TensorMut};
use crate::real::Real;
use ndarray::{Array2, Array4, ArrayView2, Ix2};
use rand::rngs::StdRng;
use rayon::prelude::*;

/// The kernel taps that reach the image: rows `p0..p0+kp`, columns `q0..q0+kq`.
#[derive(Clone, Copy, Debug)]
struct Taps {
    p0: usize,
    kp: usize,
    q0: usize,
    kq: usize,
}

/// One backward task: its images' input, output gradient and (when wanted) input gradient.
type Job<'a, T> = (&'a [T], &'a [T], Option<&'a mut [T]>);

/// Minimum output pixels per GEMM group (see the module docs).
pub const GROUP_COLS: usize = 256;

/// Lanes of the weight-gradient reduction: the batch is cut into at most this many
/// contiguous runs of groups, each summed in order into its own partial, and the partials are
/// added in lane order ([`crate::par`]). A constant, so the weight gradient is the same bits
/// on any number of threads.
pub const LANES: usize = 4;

/// How to initialise a convolution's weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvInit {
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")` (torchvision ResNet).
    KaimingFanOut,
    /// PyTorch's default `kaiming_uniform_(a=√5)`: $\mathcal U(\pm1/\sqrt{Ck^2})$
    /// (`ResNet18_adapt`, which has no custom init).
    TorchDefault,
}

/// `nn.Conv2d(in, out, k, stride, padding, bias=False)` with a square kernel.
#[derive(Clone, Debug)]
pub struct Conv2d<T> {
    /// Weight, shape `out × in × k × k`.
    pub weight: Param<T>,
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Whether stride-1 "same" 3×3 convolutions run by Winograd's $F(2\times2,3\times3)$
    /// ([`super::winograd`], 2.25× fewer flops for the output and the input gradient) where it
    /// [applies](super::winograd::applies); `false` forces im2col + GEMM. On by default.
    pub winograd: bool,
    x: Option<Array4<T>>,
}

impl<T: Real> Conv2d<T> {
    /// A seeded convolution.
    pub fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        how: ConvInit,
        rng: &mut StdRng,
    ) -> Self {
        let shape = [c_out, c_in, k, k];
        let value = match how {
            ConvInit::KaimingFanOut => {
                init::normal(&shape, init::kaiming_fan_out_std(c_out, k, k), rng)
            }
            ConvInit::TorchDefault => {
                init::uniform(&shape, init::torch_default_bound(c_in * k * k), rng)
            }
        };
        Conv2d {
            weight: Param::new(value),
            k,
            stride,
            padding,
            winograd: true,
            x: None,
        }
    }

    /// The input cached by the last `forward` (until `backward` consumes it).
    pub fn input(&self) -> Option<&Array4<T>> {
        self.x.as_ref()
    }

    /// Output spatial size for an input of size `h`.
    pub fn out_size(&self, h: usize) -> usize {
        (h + 2 * self.padding - self.k) / self.stride + 1
    }

    fn w2(&self) -> ArrayView2<'_, T> {
        let s = self.weight.value.shape();
        self.weight
            .value
            .view()
            .into_shape_with_order((s[0], s[1] * s[2] * s[3]))
            .expect("contiguous weight")
            .into_dimensionality::<Ix2>()
            .expect("2-D")
    }

    /// Images per GEMM group for `n` images of `ohw` output pixels: at least [`GROUP_COLS`]
    /// columns, but at least one group per lane ([`LANES`]) when the batch allows. A function
    /// of the shape only (the grouping decides the order of the weight-gradient sums).
    fn group_size(n: usize, ohw: usize) -> usize {
        let want = GROUP_COLS.div_ceil(ohw.max(1));
        let cap = n.div_ceil(LANES).max(1);
        want.min(cap).clamp(1, n.max(1))
    }

    /// The rectangle `p0..p0+kp` × `q0..q0+kq` of kernel taps that can touch the image: tap
    /// row $p$ is left out when $s(H'-1)+p<\pi$ or $p\ge h+\pi$ (then $si+p-\pi$ is outside
    /// $[0,h)$ for every output row $i$), and likewise for columns. Taps outside it only ever
    /// see the zero padding (e.g. all but the centre of a 3×3 kernel on a 1×1 map), so their
    /// im2col rows are zero: they are left out of the GEMMs and their weight gradient is
    /// exactly zero.
    fn taps(&self, h: usize, w: usize) -> Taps {
        let (k, s, pd) = (self.k, self.stride, self.padding);
        let range = |size: usize| {
            let out = self.out_size(size);
            let lo = pd.saturating_sub((out - 1) * s).min(k);
            let hi = (size + pd).min(k).max(lo);
            (lo, hi - lo)
        };
        let ((p0, kp), (q0, kq)) = (range(h), range(w));
        Taps { p0, kp, q0, kq }
    }

    /// The weight as `out × (c, p, q)` over the taps `t` only: a view of the weight when `t`
    /// is the whole kernel, else a compact copy.
    fn weight_on(&self, t: Taps) -> ndarray::CowArray<'_, T, Ix2> {
        let (oc, c, k) = (
            self.weight.value.shape()[0],
            self.weight.value.shape()[1],
            self.k,
        );
        if t.kp == k && t.kq == k {
            return self.w2().into();
        }
        let ws = self.weight.value.as_slice().expect("contiguous weight");
        let mut wc = Vec::with_capacity(oc * c * t.kp * t.kq);
        for kernel in ws.chunks_exact(k * k) {
            for p in t.p0..t.p0 + t.kp {
                wc.extend_from_slice(&kernel[p * k + t.q0..p * k + t.q0 + t.kq]);
            }
        }
        Array2::from_shape_vec((oc, c * t.kp * t.kq), wc)
            .expect("taps of every kernel")
            .into()
    }

    /// Whether the image itself is its im2col matrix (1×1, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.padding == 0
    }

    /// Valid output columns `j0..j1` for kernel column `q`: those with $0\le sj+q-\pi<w$.
    fn col_range(&self, q: usize, w: usize, ow: usize) -> (usize, usize) {
        let (s, pd) = (self.stride, self.padding);
        let j0 = if pd > q { (pd - q).div_ceil(s) } else { 0 };
        let j1 = if w + pd > q {
            ((w + pd - q - 1) / s + 1).min(ow)
        } else {
            0
        };
        (j0.min(j1), j1)
    }

    /// [`im2col_body`] on the CPU's widest vectors (`wide_fn!` in `layers`).
    fn im2col(&self, xs: &[T], g: usize, dims: (usize, usize, usize), t: Taps, cols: &mut [T]) {
        im2col_wide(self, xs, g, dims, t, cols)
    }

    /// [`col2im_body`] on the CPU's widest vectors.
    fn col2im(
        &self,
        dcols: &mut [T],
        g: usize,
        dims: (usize, usize, usize),
        t: Taps,
        dx: &mut [T],
    ) {
        col2im_wide(self, dcols, g, dims, t, dx)
    }

    /// Whether an input of `c` channels and `h × w` pixels goes through the Winograd path.
    fn uses_winograd(&self, c: usize, h: usize, w: usize) -> bool {
        self.winograd && super::winograd::applies(self.k, self.stride, self.padding, c, h, w)
    }

    /// Convolves; caches the input.
    pub fn forward(&mut self, x: Array4<T>) -> Array4<T> {
        let x = super::standard(x);
        let y = self.forward_uncached(&x);
        self.x = Some(x);
        y
    }

    /// Convolves without caching the input: the caller hands the same input to
    /// [`Conv2d::backward_with_input`] (a projection shortcut shares its block's input).
    pub fn forward_uncached(&self, x: &Array4<T>) -> Array4<T> {
        let (n, c, h, w) = x.dim();
        assert_eq!(c, self.weight.value.shape()[1], "conv input channels");
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let ohw = oh * ow;
        let oc = self.weight.value.shape()[0];
        let t = self.taps(h, w);
        let ck2 = c * t.kp * t.kq;
        let gsz = Self::group_size(n, ohw);
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let mut y = Array4::<T>::zeros((n, oc, oh, ow));
        if self.uses_winograd(c, h, w) {
            let ws = self.weight.value.as_slice().expect("contiguous weight");
            let u = super::winograd::transform_weight(ws, oc, c, false);
            let ys = y.as_slice_mut().expect("fresh array");
            super::winograd::conv(xs, n, c, h, w, &u, oc, ys);
            return y;
        }
        let wc = self.weight_on(t);
        let wm = wc.view();
        let this = self;
        y.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(gsz * oc * ohw)
            .zip(xs.par_chunks(gsz * c * h * w))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(cols, tmp): &mut (Vec<T>, Vec<T>), (yg, xg)| {
                    let g = xg.len() / (c * h * w);
                    let b = if this.is_pointwise() && g == 1 {
                        ArrayView2::from_shape((c, h * w), xg).expect("image")
                    } else {
                        cols.resize(ck2 * g * ohw, T::zero());
                        this.im2col(xg, g, (c, h, w), t, cols);
                        ArrayView2::from_shape((ck2, g * ohw), &cols[..]).expect("cols")
                    };
                    if g == 1 {
                        let yv = ndarray::ArrayViewMut2::from_shape((oc, ohw), yg).expect("y");
                        gemm_seq(T::one(), wm, b, false, yv);
                    } else {
                        tmp.resize(oc * g * ohw, T::zero());
                        let tv = ndarray::ArrayViewMut2::from_shape((oc, g * ohw), &mut tmp[..])
                            .expect("tmp");
                        gemm_seq(T::one(), wm, b, false, tv);
                        // (oc, g, ohw) -> (g, oc, ohw)
                        for (o, src) in tmp.chunks_exact(g * ohw).enumerate() {
                            for gi in 0..g {
                                yg[(gi * oc + o) * ohw..(gi * oc + o + 1) * ohw]
                                    .copy_from_slice(&src[gi * ohw..(gi + 1) * ohw]);
                            }
                        }
                    }
                },
            );
        y
    }

    /// Accumulates $\partial_W$; returns $\partial_x$ when `need_dx`.
    pub fn backward(&mut self, dy: &Array4<T>, need_dx: bool) -> Option<Array4<T>> {
        let x = self
            .x
            .take()
            .expect("Conv2d::backward called before forward");
        self.backward_with_input(&x, dy, need_dx)
    }

    /// [`Conv2d::backward`] after [`Conv2d::forward_uncached`] on `x`.
    pub fn backward_with_input(
        &mut self,
        x: &Array4<T>,
        dy: &Array4<T>,
        need_dx: bool,
    ) -> Option<Array4<T>> {
        let x = x.as_standard_layout();
        let (n, c, h, w) = x.dim();
        let (_, oc, oh, ow) = dy.dim();
        let ohw = oh * ow;
        let t = self.taps(h, w);
        let ck2 = c * t.kp * t.kq;
        let dy = dy.as_standard_layout();
        let dys = dy.as_slice().expect("standard layout");
        let xs = x.as_slice().expect("cached input is contiguous");
        let train_w = self.weight.trainable;
        let gsz = Self::group_size(n, ohw);
        let n_groups = n.div_ceil(gsz);
        // Contiguous runs of groups, one per lane; partial weight gradients are summed in lane
        // order, so the result depends neither on scheduling nor on the number of threads.
        let n_tasks = n_groups.clamp(1, LANES);
        let per = n_groups.div_ceil(n_tasks) * gsz; // images per task
        if self.uses_winograd(c, h, w) {
            // Both gradients by Winograd: ∂x as a convolution of dy with the rotated kernel,
            // ∂W by the adjoint transforms (`winograd` module docs).
            if train_w {
                let gw = self.weight.grad.as_slice_mut().expect("contiguous grad");
                super::winograd::weight_grad(xs, dys, n, c, h, w, oc, gw);
            }
            return need_dx.then(|| {
                let ws = self.weight.value.as_slice().expect("contiguous weight");
                let u = super::winograd::transform_weight(ws, oc, c, true);
                let mut d = Array4::<T>::zeros((n, c, h, w));
                let ds = d.as_slice_mut().expect("fresh array");
                super::winograd::conv(dys, n, oc, h, w, &u, c, ds);
                d
            });
        }
        let mut dx = need_dx.then(|| Array4::<T>::zeros((n, c, h, w)));
        let mut jobs: Vec<Job<'_, T>> = Vec::new();
        {
            let mut dxs = dx.as_mut().map(|d| d.as_slice_mut().expect("fresh"));
            let (mut xr, mut dyr) = (xs, dys);
            while !xr.is_empty() {
                let m = per.min(xr.len() / (c * h * w));
                let (xa, xb) = xr.split_at(m * c * h * w);
                let (da, db) = dyr.split_at(m * oc * ohw);
                let dxa = dxs.take().map(|d| {
                    let (a, b) = d.split_at_mut(m * c * h * w);
                    dxs = Some(b);
                    a
                });
                jobs.push((xa, da, dxa));
                (xr, dyr) = (xb, db);
            }
        }
        let wc = self.weight_on(t);
        let wm = wc.view();
        let this = &*self;
        let partials: Vec<Option<Array2<T>>> = jobs
            .into_par_iter()
            .map(|(xt, dyt, mut dxt)| {
                let mut gw = train_w.then(|| Array2::<T>::zeros((oc, ck2)));
                let (mut cols, mut dcols, mut tmp) = (Vec::new(), Vec::new(), Vec::new());
                let imgs = xt.len() / (c * h * w);
                let mut i0 = 0;
                while i0 < imgs {
                    let g = gsz.min(imgs - i0);
                    let xg = &xt[i0 * c * h * w..(i0 + g) * c * h * w];
                    let dyg = &dyt[i0 * oc * ohw..(i0 + g) * oc * ohw];
                    // δ_g as oc × (g·ohw)
                    let d = if g == 1 {
                        ArrayView2::from_shape((oc, ohw), dyg).expect("dy")
                    } else {
                        tmp.resize(oc * g * ohw, T::zero());
                        for (o, dst) in tmp.chunks_exact_mut(g * ohw).enumerate() {
                            for gi in 0..g {
                                dst[gi * ohw..(gi + 1) * ohw].copy_from_slice(
                                    &dyg[(gi * oc + o) * ohw..(gi * oc + o + 1) * ohw],
                                );
                            }
                        }
                        ArrayView2::from_shape((oc, g * ohw), &tmp[..]).expect("tmp")
                    };
                    if let Some(gw) = gw.as_mut() {
                        let b = if this.is_pointwise() && g == 1 {
                            ArrayView2::from_shape((c, h * w), xg).expect("image")
                        } else {
                            cols.resize(ck2 * g * ohw, T::zero());
                            this.im2col(xg, g, (c, h, w), t, &mut cols);
                            ArrayView2::from_shape((ck2, g * ohw), &cols[..]).expect("cols")
                        };
                        gemm_seq(T::one(), d, b.t(), true, gw.view_mut());
                    }
                    if let Some(dxt) = dxt.as_mut() {
                        let dxg = &mut dxt[i0 * c * h * w..(i0 + g) * c * h * w];
                        if this.is_pointwise() && g == 1 {
                            let dv =
                                ndarray::ArrayViewMut2::from_shape((c, h * w), dxg).expect("dx");
                            gemm_seq(T::one(), wm.t(), d, false, dv);
                        } else {
                            dcols.resize(ck2 * g * ohw, T::zero());
                            let dv =
                                ndarray::ArrayViewMut2::from_shape((ck2, g * ohw), &mut dcols[..])
                                    .expect("dcols");
                            gemm_seq(T::one(), wm.t(), d, false, dv);
                            this.col2im(&mut dcols, g, (c, h, w), t, dxg);
                        }
                    }
                    i0 += g;
                }
                gw
            })
            .collect();
        drop(wc);
        if train_w {
            let k = self.k;
            let s = self.weight.grad.shape().to_vec();
            let mut gw = self
                .weight
                .grad
                .view_mut()
                .into_shape_with_order((s[0], s[1] * s[2] * s[3]))
                .expect("contiguous grad");
            let sum =
                crate::par::combine_in_order(partials.into_iter().flatten().collect(), |a, b| {
                    *a += &b;
                });
            if let Some(sum) = sum {
                if t.kp == k && t.kq == k {
                    gw += &sum;
                } else {
                    // scatter the taps back; the other taps' gradient is zero
                    let gs = gw.as_slice_mut().expect("contiguous grad");
                    let ss = sum.as_slice().expect("fresh");
                    for (kernel, part) in
                        gs.chunks_exact_mut(k * k).zip(ss.chunks_exact(t.kp * t.kq))
                    {
                        for (pp, src) in part.chunks_exact(t.kq).enumerate() {
                            let at = (t.p0 + pp) * k + t.q0;
                            for (d, &v) in kernel[at..at + t.kq].iter_mut().zip(src) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
        dx
    }
}

impl<T: Real> Module<T> for Conv2d<T> {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, TensorMut<'_, T>)) {
        f(&join(prefix, "weight"), TensorMut::Param(&mut self.weight));
    }
}

/// im2col of `g` consecutive images `xs` (each `c × h × w`) into `cols`: rows $(c,p,q)$
/// over the taps `t`, columns $(g,i,j)$; every entry is written.
#[inline(always)]
fn im2col_body<T: Real>(
    conv: &Conv2d<T>,
    xs: &[T],
    g: usize,
    (c, h, w): (usize, usize, usize),
    t: Taps,
    cols: &mut [T],
) {
    let (oh, ow) = (conv.out_size(h), conv.out_size(w));
    let (s, pd) = (conv.stride, conv.padding);
    let gcols = g * oh * ow;
    debug_assert_eq!(cols.len(), c * t.kp * t.kq * gcols);
    for (r, row) in cols.chunks_exact_mut(gcols).enumerate() {
        let (ci, p, q) = (r / (t.kp * t.kq), t.p0 + (r / t.kq) % t.kp, t.q0 + r % t.kq);
        let (j0, j1) = conv.col_range(q, w, ow);
        if s == 1 && (oh, ow) == (h, w) {
            // "Same" stride-1 convolution: output (i, j) reads input (i + p - pd,
            // j + q - pd), one fixed offset, so the valid block is one contiguous copy;
            // then the k - 1 entries per row that wrapped around from a neighbouring row
            // (they belong to the padding) are zeroed.
            let (i0, i1) = (pd.saturating_sub(p), oh.min((h + pd).saturating_sub(p)));
            for (gi, dst) in row.chunks_exact_mut(oh * ow).enumerate() {
                if i0 >= i1 || j0 >= j1 {
                    dst.fill(T::zero());
                    continue;
                }
                let plane = &xs[(gi * c + ci) * h * w..(gi * c + ci + 1) * h * w];
                let (s0, s1) = (i0 * ow + j0, (i1 - 1) * ow + j1);
                let d0 = (i0 + p - pd) * w + (j0 + q - pd);
                dst[..s0].fill(T::zero());
                dst[s0..s1].copy_from_slice(&plane[d0..d0 + (s1 - s0)]);
                dst[s1..].fill(T::zero());
                for i in i0..i1 {
                    dst[i * ow..i * ow + j0].fill(T::zero());
                    dst[i * ow + j1..(i + 1) * ow].fill(T::zero());
                }
            }
            continue;
        }
        for gi in 0..g {
            let plane = &xs[(gi * c + ci) * h * w..(gi * c + ci + 1) * h * w];
            for i in 0..oh {
                let dst = &mut row[(gi * oh + i) * ow..(gi * oh + i + 1) * ow];
                let yy = i * s + p;
                if yy < pd || yy - pd >= h {
                    dst.fill(T::zero());
                    continue;
                }
                let src = &plane[(yy - pd) * w..(yy - pd + 1) * w];
                dst[..j0].fill(T::zero());
                dst[j1..].fill(T::zero());
                if s == 1 {
                    dst[j0..j1].copy_from_slice(&src[j0 + q - pd..j1 + q - pd]);
                } else {
                    for (j, d) in dst[j0..j1].iter_mut().enumerate() {
                        *d = src[(j0 + j) * s + q - pd];
                    }
                }
            }
        }
    }
}

/// col2im: adds each entry of `dcols` (rows $(c,p,q)$ over the taps `t`, columns
/// $(g,i,j)$) back onto the input pixel it was copied from, into the `g` images `dx`.
/// `dcols` is scratch: entries that fall in the padding may be zeroed.
#[inline(always)]
fn col2im_body<T: Real>(
    conv: &Conv2d<T>,
    dcols: &mut [T],
    g: usize,
    (c, h, w): (usize, usize, usize),
    t: Taps,
    dx: &mut [T],
) {
    let (oh, ow) = (conv.out_size(h), conv.out_size(w));
    let (s, pd) = (conv.stride, conv.padding);
    let tt = t.kp * t.kq;
    let row_of = |ci: usize, p: usize, q: usize| ci * tt + (p - t.p0) * t.kq + (q - t.q0);
    let gcols = g * oh * ow;
    if s == 1 && (oh, ow) == (h, w) {
        // "Same" stride-1 convolution: for each (p, q) the valid entries of a row of dcols
        // land at one fixed offset, so after zeroing the entries that belong to the padding
        // (k - 1 per image row), one contiguous add covers the whole plane.
        let ohw = oh * ow;
        for (pl, plane) in dx.chunks_exact_mut(h * w).enumerate() {
            let (gi, ci) = (pl / c, pl % c);
            for p in t.p0..t.p0 + t.kp {
                let (i0, i1) = (pd.saturating_sub(p), oh.min((h + pd).saturating_sub(p)));
                for q in t.q0..t.q0 + t.kq {
                    let (j0, j1) = conv.col_range(q, w, ow);
                    if i0 >= i1 || j0 >= j1 {
                        continue;
                    }
                    let r = row_of(ci, p, q);
                    let row = &mut dcols[r * gcols + gi * ohw..r * gcols + (gi + 1) * ohw];
                    for i in i0..i1 {
                        row[i * ow..i * ow + j0].fill(T::zero());
                        row[i * ow + j1..(i + 1) * ow].fill(T::zero());
                    }
                    let (s0, s1) = (i0 * ow + j0, (i1 - 1) * ow + j1);
                    // source (i, j) -> input (i + p - pd, j + q - pd)
                    let d0 = (i0 + p - pd) * w + (j0 + q - pd);
                    for (d, &v) in plane[d0..d0 + (s1 - s0)].iter_mut().zip(&row[s0..s1]) {
                        *d += v;
                    }
                }
            }
        }
        return;
    }
    for (pl, plane) in dx.chunks_exact_mut(h * w).enumerate() {
        let (gi, ci) = (pl / c, pl % c);
        for p in t.p0..t.p0 + t.kp {
            for q in t.q0..t.q0 + t.kq {
                let (j0, j1) = conv.col_range(q, w, ow);
                let r = row_of(ci, p, q);
                let row = &dcols[r * gcols + gi * oh * ow..r * gcols + (gi + 1) * oh * ow];
                for i in 0..oh {
                    let yy = i * s + p;
                    if yy < pd || yy - pd >= h {
                        continue;
                    }
                    let src = &row[i * ow + j0..i * ow + j1];
                    let dst = &mut plane[(yy - pd) * w..(yy - pd + 1) * w];
                    if s == 1 {
                        for (d, &v) in dst[j0 + q - pd..j1 + q - pd].iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        for (j, &v) in src.iter().enumerate() {
                            dst[(j0 + j) * s + q - pd] += v;
                        }
                    }
                }
            }
        }
    }
}

wide_fn!(fn im2col_wide[T: Real]<T>(
    conv: &Conv2d<T>,
    xs: &[T],
    g: usize,
    dims: (usize, usize, usize),
    t: Taps,
    cols: &mut [T],
) -> () = im2col_body);

wide_fn!(fn col2im_wide[T: Real]<T>(
    conv: &Conv2d<T>,
    dcols: &mut [T],
    g: usize,
    dims: (usize, usize, usize),
    t: Taps,
    dx: &mut [T],
) -> () = col2im_body);
