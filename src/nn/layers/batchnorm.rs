//! Batch normalisation (Ioffe & Szegedy 2015) over the channel axis of `N × C` or
//! `N × C × H × W` inputs, with PyTorch's conventions:
//! $$y=\gamma\,\frac{x-\mu_B}{\sqrt{\sigma_B^2+\epsilon}}+\beta,\qquad \epsilon=10^{-5},$$
//! batch statistics in training ($\sigma_B^2$ biased), running statistics in evaluation,
//! updated as $r\leftarrow(1-m)\,r+m\,s$ with momentum $m=0.1$ and the **unbiased** batch
//! variance $\frac{M}{M-1}\sigma_B^2$ ($M=N\cdot H\cdot W$).
//! Training backward: $\partial_x=\frac{\gamma}{M\sqrt{\sigma_B^2+\epsilon}}\big(M\delta-\sum\delta-\hat x\sum\delta\hat x\big)$.
//!
//! [`BatchNorm::forward_relu`] fuses the ReLU that follows: $y=\max(\mathrm{BN}(x),0)$, whose
//! backward masks $\delta$ with $\mathbb 1[\mathrm{BN}(x)>0]$ recomputed from the cached input
//! (the same floating-point expression as the forward pass, so the same mask).
//! Only the input and two numbers per channel are cached. Every pass sweeps the batch in memory
//! order (rayon tasks over images); per-channel sums are taken per image in f64 and added over
//! images in a fixed order (`N × C` inputs: one sequential sweep over the rows), so results do
//! not depend on scheduling or on the number of threads. The `N × C` loops (an MLP's batch
//! norms) run as kernels compiled for AVX-512F or AVX2 + FMA where the CPU has them (picked at
//! run time; the same IEEE operations in the same order, so the same bits): their baseline
//! (SSE2) build took 14 % of an MLP training step, the wide one about 1 %.

use super::{join, Module, Param, TensorMut};
use crate::real::Real;
use ndarray::{Array, Array3, ArrayD, Dimension, IxDyn};
use rayon::prelude::*;

/// What the backward pass needs: the input as `N × C × L`, per-channel $\mu$ and
/// $1/\sqrt{\sigma^2+\epsilon}$, train mode, fused ReLU.
type BnCache<T> = (Array3<T>, Vec<T>, Vec<T>, bool, bool);

/// `nn.BatchNorm1d` / `nn.BatchNorm2d` (affine, tracking running statistics).
#[derive(Clone, Debug)]
pub struct BatchNorm<T> {
    /// $\gamma$ (initialised to 1).
    pub weight: Param<T>,
    /// $\beta$ (initialised to 0).
    pub bias: Param<T>,
    /// Running mean (initialised to 0).
    pub running_mean: ArrayD<T>,
    /// Running (unbiased) variance (initialised to 1).
    pub running_var: ArrayD<T>,
    /// Number of training batches seen.
    pub num_batches_tracked: i64,
    /// Momentum $m$ (0.1).
    pub momentum: f64,
    /// $\epsilon$ (1e-5).
    pub eps: f64,
    cache: Option<BnCache<T>>,
}

/// $\gamma(x-\mu)/\sigma+\beta$, written once so that forward and backward agree bit for bit.
#[inline(always)]
fn affine<T: Real>(v: T, mu: T, inv: T, g: T, b: T) -> T {
    (v - mu) * inv * g + b
}

/// $\max(z,0)$ as the fused ReLU computes it (zero unless $z>0$, so NaN maps to 0), written
/// as a select so that it vectorises.
#[inline(always)]
fn relu_of<T: Real>(z: T) -> T {
    if z > T::zero() {
        z
    } else {
        T::zero()
    }
}

/// $\delta\,\mathbb 1[z>0]$, the fused ReLU's backward mask, as a select.
#[inline(always)]
fn mask_by<T: Real>(z: T, d: T) -> T {
    if z > T::zero() {
        d
    } else {
        T::zero()
    }
}

/// Per-channel sums over a batch `N × C × L` (slice `xs`, and `ds` of the same shape):
/// `f(c)(x_i, d_i)` returns two terms; image sums run in parallel, then add up in image order.
fn channel_sums<T: Real, G: Fn(T, T) -> (f64, f64)>(
    xs: &[T],
    ds: &[T],
    (c, l): (usize, usize),
    f: impl Fn(usize) -> G + Sync,
) -> Vec<(f64, f64)> {
    let per_image: Vec<Vec<(f64, f64)>> = xs
        .par_chunks(c * l)
        .zip(ds.par_chunks(c * l))
        .map(|(xi, di)| image_sums(xi, di, l, &f))
        .collect();
    let mut tot = vec![(0.0, 0.0); c];
    for img in &per_image {
        for (t, &(a, b)) in tot.iter_mut().zip(img) {
            t.0 += a;
            t.1 += b;
        }
    }
    tot
}

/// `out[i] = f(c)(x[i], d[i])` elementwise over a batch `N × C × L` (channel `c` of each
/// element), images in parallel.
fn per_image<T: Real, G: Fn(T, T) -> T>(
    out: &mut [T],
    xs: &[T],
    ds: &[T],
    (c, l): (usize, usize),
    f: impl Fn(usize) -> G + Sync,
) {
    let per = (c * l).max(1);
    out.par_chunks_mut(per)
        .zip(xs.par_chunks(per).zip(ds.par_chunks(per)))
        .for_each(|(oi, (xi, di))| image_map(oi, xi, di, l, &f));
}

wide_fn!(
    /// [`channel_sums`] of one image (`C × L`), on the CPU's widest vectors.
    fn image_sums[T: Real, G: Fn(T, T) -> (f64, f64), F: Fn(usize) -> G]<T, G, F>(
        xi: &[T],
        di: &[T],
        l: usize,
        f: &F,
    ) -> Vec<(f64, f64)> = image_sums_body
);

#[inline(always)]
fn image_sums_body<T: Real, G: Fn(T, T) -> (f64, f64), F: Fn(usize) -> G>(
    xi: &[T],
    di: &[T],
    l: usize,
    f: &F,
) -> Vec<(f64, f64)> {
    // A plain loop, not an iterator chain: `collect` would run the sums inside `Map::fold`,
    // a separate function compiled without this copy's target features.
    let mut out = Vec::with_capacity(xi.len() / l.max(1));
    for (ci, (xp, dp)) in xi.chunks(l).zip(di.chunks(l)).enumerate() {
        out.push(sum2_f64(xp, dp, f(ci)));
    }
    out
}

wide_fn!(
    /// [`per_image`] of one image (`C × L`), on the CPU's widest vectors.
    fn image_map[T: Real, G: Fn(T, T) -> T, F: Fn(usize) -> G]<T, G, F>(
        oi: &mut [T],
        xi: &[T],
        di: &[T],
        l: usize,
        f: &F,
    ) -> () = image_map_body
);

#[inline(always)]
fn image_map_body<T: Real, G: Fn(T, T) -> T, F: Fn(usize) -> G>(
    oi: &mut [T],
    xi: &[T],
    di: &[T],
    l: usize,
    f: &F,
) {
    for (ci, (op, (xp, dp))) in oi
        .chunks_mut(l)
        .zip(xi.chunks(l).zip(di.chunks(l)))
        .enumerate()
    {
        let g = f(ci);
        for (o, (&v, &d)) in op.iter_mut().zip(xp.iter().zip(dp)) {
            *o = g(v, d);
        }
    }
}

/// $\sum_i$ of the two terms of `f(x_i, d_i)` in f64, eight lanes each (vectorises).
#[inline(always)]
fn sum2_f64<T: Real>(xs: &[T], ds: &[T], f: impl Fn(T, T) -> (f64, f64)) -> (f64, f64) {
    let (mut a8, mut b8) = ([0.0f64; 8], [0.0f64; 8]);
    let (xc, dc) = (xs.chunks_exact(8), ds.chunks_exact(8));
    let (mut a, mut b) = (0.0, 0.0);
    for (&v, &d) in xc.remainder().iter().zip(dc.remainder()) {
        let (p, q) = f(v, d);
        a += p;
        b += q;
    }
    for (x8, d8) in xc.zip(dc) {
        for k in 0..8 {
            let (p, q) = f(x8[k], d8[k]);
            a8[k] += p;
            b8[k] += q;
        }
    }
    (a + a8.iter().sum::<f64>(), b + b8.iter().sum::<f64>())
}

impl<T: Real> BatchNorm<T> {
    /// A layer over `c` channels.
    pub fn new(c: usize) -> Self {
        BatchNorm {
            weight: Param::new(ArrayD::ones(IxDyn(&[c]))),
            bias: Param::new(ArrayD::zeros(IxDyn(&[c]))),
            running_mean: ArrayD::zeros(IxDyn(&[c])),
            running_var: ArrayD::ones(IxDyn(&[c])),
            num_batches_tracked: 0,
            momentum: 0.1,
            eps: 1e-5,
            cache: None,
        }
    }

    /// Normalises `x` (`N × C` or `N × C × H × W`); `train` selects batch statistics.
    pub fn forward<D: Dimension>(&mut self, x: Array<T, D>, train: bool) -> Array<T, D> {
        self.forward_impl(x, train, false)
    }

    /// $\max(\mathrm{BN}(x),0)$: batch norm followed by a ReLU, in one pass.
    pub fn forward_relu<D: Dimension>(&mut self, x: Array<T, D>, train: bool) -> Array<T, D> {
        self.forward_impl(x, train, true)
    }

    fn forward_impl<D: Dimension>(
        &mut self,
        x: Array<T, D>,
        train: bool,
        relu: bool,
    ) -> Array<T, D> {
        let shape = x.raw_dim();
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let l = x.len() / (n * c).max(1);
        let x3 = super::standard(x)
            .into_shape_with_order((n, c, l))
            .expect("contiguous");
        let xs = x3.as_slice().expect("standard layout");
        let m = (n * l) as f64;
        let (mean, inv): (Vec<T>, Vec<T>) = if train {
            assert!(
                n * l > 1,
                "batch norm in training mode needs more than one value per channel"
            );
            let (mus, sq): (Vec<f64>, Vec<f64>) = if l == 1 {
                // `N × C`: sweeps over the rows, vectorised across the channels
                rows_stats(xs, c, m)
            } else {
                let sums = channel_sums(xs, xs, (c, l), |_| |v: T, _| (v.to_f64_(), 0.0));
                let mus: Vec<f64> = sums.iter().map(|s| s.0 / m).collect();
                let sq = channel_sums(xs, xs, (c, l), |ci| {
                    let mu = mus[ci];
                    move |v: T, _| {
                        let d = v.to_f64_() - mu;
                        (d * d, 0.0)
                    }
                });
                (mus, sq.iter().map(|s| s.0).collect())
            };
            let stats: Vec<(f64, f64)> = mus.iter().zip(&sq).map(|(&mu, s)| (mu, s / m)).collect();
            let mo = self.momentum;
            for (ci, &(mu, var)) in stats.iter().enumerate() {
                let rm = &mut self.running_mean[ci];
                *rm = T::of((1.0 - mo) * rm.to_f64_() + mo * mu);
                let rv = &mut self.running_var[ci];
                *rv = T::of((1.0 - mo) * rv.to_f64_() + mo * var * m / (m - 1.0));
            }
            self.num_batches_tracked += 1;
            stats
                .iter()
                .map(|&(mu, var)| (T::of(mu), T::of(1.0 / (var + self.eps).sqrt())))
                .unzip()
        } else {
            (0..c)
                .map(|ci| {
                    (
                        self.running_mean[ci],
                        T::of(1.0 / (self.running_var[ci].to_f64_() + self.eps).sqrt()),
                    )
                })
                .unzip()
        };
        let mut y = Array3::<T>::zeros((n, c, l));
        let gw: Vec<T> = self.weight.value.iter().copied().collect();
        let bw: Vec<T> = self.bias.value.iter().copied().collect();
        if l == 1 {
            let bn = RowsBn {
                c,
                mu: &mean,
                iv: &inv,
                g: &gw,
                b: &bw,
            };
            rows_forward(&bn, xs, y.as_slice_mut().expect("fresh"), relu);
        } else {
            per_image(y.as_slice_mut().expect("fresh"), xs, xs, (c, l), |ci| {
                let (mu, iv, g, b) = (mean[ci], inv[ci], gw[ci], bw[ci]);
                move |v: T, _| {
                    let z = affine(v, mu, iv, g, b);
                    if relu {
                        relu_of(z)
                    } else {
                        z
                    }
                }
            });
        }
        self.cache = Some((x3, mean, inv, train, relu));
        y.into_shape_with_order(shape).expect("same size")
    }

    /// Accumulates $\partial_\gamma,\partial_\beta$ and returns $\partial_x$ (through the
    /// fused ReLU when the forward pass was [`BatchNorm::forward_relu`]).
    pub fn backward<D: Dimension>(&mut self, dy: &Array<T, D>) -> Array<T, D> {
        let (x3, mean, inv, train, relu) = self
            .cache
            .take()
            .expect("BatchNorm::backward called before forward");
        let (n, c, l) = x3.dim();
        let xs = x3.as_slice().expect("standard layout");
        let dy3 = dy
            .view()
            .into_shape_with_order((n, c, l))
            .expect("contiguous");
        let dy3 = dy3.as_standard_layout();
        let ds = dy3.as_slice().expect("standard layout");
        let gw: Vec<T> = self.weight.value.iter().copied().collect();
        let bw: Vec<T> = self.bias.value.iter().copied().collect();
        // δ after the fused ReLU's mask, for channel ci
        let eff = |ci: usize| {
            let (mu, iv, g, b) = (mean[ci], inv[ci], gw[ci], bw[ci]);
            move |v: T, d: T| {
                if relu {
                    mask_by(affine(v, mu, iv, g, b), d)
                } else {
                    d
                }
            }
        };
        let m = T::of((n * l) as f64);
        let mut dx = Array3::<T>::zeros((n, c, l));
        if l == 1 {
            // `N × C`: sweeps over the rows, vectorised across the channels
            let (mut sd, mut sdh) = (vec![0.0; c], vec![0.0; c]);
            let out = dx.as_slice_mut().expect("fresh");
            let bn = RowsBn {
                c,
                mu: &mean,
                iv: &inv,
                g: &gw,
                b: &bw,
            };
            rows_backward(&bn, xs, ds, out, relu, train, m, &mut sd, &mut sdh);
            for (ci, (&a, &b)) in sd.iter().zip(&sdh).enumerate() {
                self.bias.grad[ci] += T::of(a);
                self.weight.grad[ci] += T::of(b);
            }
            return dx.into_shape_with_order(dy.raw_dim()).expect("same size");
        }
        // Σδ and Σδx̂ per channel
        let sums = channel_sums(xs, ds, (c, l), |ci| {
            let (mu, iv, e) = (mean[ci], inv[ci], eff(ci));
            move |v: T, d: T| {
                let d = e(v, d);
                (d.to_f64_(), (d * ((v - mu) * iv)).to_f64_())
            }
        });
        per_image(dx.as_slice_mut().expect("fresh"), xs, ds, (c, l), |ci| {
            let (mu, iv, g) = (mean[ci], inv[ci], gw[ci]);
            let (tsd, tsdh) = (T::of(sums[ci].0), T::of(sums[ci].1));
            let e = eff(ci);
            move |v: T, d: T| {
                let d = e(v, d);
                if train {
                    g * iv / m * (m * d - tsd - (v - mu) * iv * tsdh)
                } else {
                    g * iv * d
                }
            }
        });
        for (ci, &(sd, sdh)) in sums.iter().enumerate() {
            self.bias.grad[ci] += T::of(sd);
            self.weight.grad[ci] += T::of(sdh);
        }
        dx.into_shape_with_order(dy.raw_dim()).expect("same size")
    }
}

/// Per-channel constants of an `N × C` batch norm: $\mu$, $1/\sqrt{\sigma^2+\epsilon}$,
/// $\gamma$, $\beta$ (each of length `c`).
struct RowsBn<'a, T> {
    c: usize,
    mu: &'a [T],
    iv: &'a [T],
    g: &'a [T],
    b: &'a [T],
}

wide_fn!(fn rows_stats_wide[T: Real]<T>(xs: &[T], c: usize, m: f64) -> (Vec<f64>, Vec<f64>) = rows_stats_body);
wide_fn!(fn rows_forward_wide[T: Real, const RELU: bool]<T, RELU>(bn: &RowsBn<'_, T>, xs: &[T], y: &mut [T]) -> () = rows_forward_body);
wide_fn!(fn rows_backward_wide[T: Real, const RELU: bool, const TRAIN: bool]<T, RELU, TRAIN>(
    bn: &RowsBn<'_, T>,
    xs: &[T],
    ds: &[T],
    out: &mut [T],
    m: T,
    sd: &mut [f64],
    sdh: &mut [f64],
) -> () = rows_backward_body);

/// Per-channel mean and sum of squared deviations of the rows of `xs` (`N × c`, `m = N`), in
/// `f64`, each summed over the rows in order.
fn rows_stats<T: Real>(xs: &[T], c: usize, m: f64) -> (Vec<f64>, Vec<f64>) {
    rows_stats_wide::<T>(xs, c, m)
}

#[inline(always)]
fn rows_stats_body<T: Real>(xs: &[T], c: usize, m: f64) -> (Vec<f64>, Vec<f64>) {
    let mut sum = vec![0.0; c];
    for row in xs.chunks_exact(c) {
        for (a, &v) in sum.iter_mut().zip(row) {
            *a += v.to_f64_();
        }
    }
    let mus: Vec<f64> = sum.iter().map(|s| s / m).collect();
    let mut sq = vec![0.0; c];
    for row in xs.chunks_exact(c) {
        for ((a, &v), &mu) in sq.iter_mut().zip(row).zip(&mus) {
            let d = v.to_f64_() - mu;
            *a += d * d;
        }
    }
    (mus, sq)
}

/// $y=\gamma(x-\mu)\,\mathrm{inv}+\beta$ (then $\max(\cdot,0)$ when `relu`) for the rows of `xs`.
fn rows_forward<T: Real>(bn: &RowsBn<'_, T>, xs: &[T], y: &mut [T], relu: bool) {
    if relu {
        rows_forward_wide::<T, true>(bn, xs, y)
    } else {
        rows_forward_wide::<T, false>(bn, xs, y)
    }
}

#[inline(always)]
fn rows_forward_body<T: Real, const RELU: bool>(bn: &RowsBn<'_, T>, xs: &[T], y: &mut [T]) {
    let c = bn.c;
    let (mu, iv, g, b) = (&bn.mu[..c], &bn.iv[..c], &bn.g[..c], &bn.b[..c]);
    for (yr, xr) in y.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
        let (yr, xr) = (&mut yr[..c], &xr[..c]);
        for i in 0..c {
            let z = affine(xr[i], mu[i], iv[i], g[i], b[i]);
            yr[i] = if RELU { relu_of(z) } else { z };
        }
    }
}

/// The `N × C` backward pass: $\sum\delta$ and $\sum\delta\hat x$ per channel into `sd`,
/// `sdh` (f64, over the rows in order), then $\partial_x$ into `out`; $\delta$ is masked by the
/// fused ReLU when `relu`.
#[allow(clippy::too_many_arguments)]
fn rows_backward<T: Real>(
    bn: &RowsBn<'_, T>,
    xs: &[T],
    ds: &[T],
    out: &mut [T],
    relu: bool,
    train: bool,
    m: T,
    sd: &mut [f64],
    sdh: &mut [f64],
) {
    match (relu, train) {
        (true, true) => rows_backward_wide::<T, true, true>(bn, xs, ds, out, m, sd, sdh),
        (true, false) => rows_backward_wide::<T, true, false>(bn, xs, ds, out, m, sd, sdh),
        (false, true) => rows_backward_wide::<T, false, true>(bn, xs, ds, out, m, sd, sdh),
        (false, false) => rows_backward_wide::<T, false, false>(bn, xs, ds, out, m, sd, sdh),
    }
}

#[inline(always)]
fn rows_backward_body<T: Real, const RELU: bool, const TRAIN: bool>(
    bn: &RowsBn<'_, T>,
    xs: &[T],
    ds: &[T],
    out: &mut [T],
    m: T,
    sd: &mut [f64],
    sdh: &mut [f64],
) {
    let c = bn.c;
    let (mu, iv, g, b) = (&bn.mu[..c], &bn.iv[..c], &bn.g[..c], &bn.b[..c]);
    // δ through the fused ReLU's mask
    let eff = |v: T, d: T, i: usize| {
        if RELU {
            mask_by(affine(v, mu[i], iv[i], g[i], b[i]), d)
        } else {
            d
        }
    };
    {
        let (sd, sdh) = (&mut sd[..c], &mut sdh[..c]);
        for (xr, dr) in xs.chunks_exact(c).zip(ds.chunks_exact(c)) {
            let (xr, dr) = (&xr[..c], &dr[..c]);
            for i in 0..c {
                let (v, d) = (xr[i], eff(xr[i], dr[i], i));
                sd[i] += d.to_f64_();
                sdh[i] += (d * ((v - mu[i]) * iv[i])).to_f64_();
            }
        }
    }
    let k1: Vec<T> = g.iter().zip(iv).map(|(&g, &iv)| g * iv / m).collect();
    let k0: Vec<T> = g.iter().zip(iv).map(|(&g, &iv)| g * iv).collect();
    let (tsd, tsdh): (Vec<T>, Vec<T>) = sd
        .iter()
        .zip(sdh.iter())
        .map(|(&a, &b)| (T::of(a), T::of(b)))
        .unzip();
    let (k1, k0, tsd, tsdh) = (&k1[..c], &k0[..c], &tsd[..c], &tsdh[..c]);
    for ((o, xr), dr) in out
        .chunks_exact_mut(c)
        .zip(xs.chunks_exact(c))
        .zip(ds.chunks_exact(c))
    {
        let (o, xr, dr) = (&mut o[..c], &xr[..c], &dr[..c]);
        for i in 0..c {
            let (v, d) = (xr[i], eff(xr[i], dr[i], i));
            o[i] = if TRAIN {
                k1[i] * (m * d - tsd[i] - (v - mu[i]) * iv[i] * tsdh[i])
            } else {
                k0[i] * d
            };
        }
    }
}

impl<T: Real> Module<T> for BatchNorm<T> {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, TensorMut<'_, T>)) {
        f(&join(prefix, "weight"), TensorMut::Param(&mut self.weight));
        f(&join(prefix, "bias"), TensorMut::Param(&mut self.bias));
        f(
            &join(prefix, "running_mean"),
            TensorMut::Buffer(&mut self.running_mean),
        );
        f(
            &join(prefix, "running_var"),
            TensorMut::Buffer(&mut self.running_var),
        );
        f(
            &join(prefix, "num_batches_tracked"),
            TensorMut::Count(&mut self.num_batches_tracked),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `N × C` kernels give the same bits through the run-time dispatch (AVX-512F or AVX2
    /// where present) as the baseline build of the same code, for every flag combination and a
    /// channel count that leaves a remainder for every vector width.
    #[test]
    fn wide_rows_kernels_equal_the_baseline_bit_for_bit() {
        let (n, c) = (37, 45);
        let val = |i: usize, s: f32| ((i * 7919 + 13) % 211) as f32 / 50.0 - 2.0 + s;
        let xs: Vec<f32> = (0..n * c).map(|i| val(i, 0.0)).collect();
        let ds: Vec<f32> = (0..n * c).map(|i| val(i * 3, 0.1)).collect();
        let par = |s: f32| (0..c).map(|i| val(i * 5, s)).collect::<Vec<f32>>();
        let (mu, iv, g, b) = (par(0.0), par(2.5), par(0.3), par(-0.2));
        let bn = RowsBn {
            c,
            mu: &mu,
            iv: &iv,
            g: &g,
            b: &b,
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let bits64 = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            rows_stats(&xs, c, n as f64),
            rows_stats_body(&xs, c, n as f64)
        );
        for relu in [false, true] {
            let (mut y1, mut y2) = (vec![0.0f32; n * c], vec![0.0f32; n * c]);
            rows_forward(&bn, &xs, &mut y1, relu);
            if relu {
                rows_forward_body::<f32, true>(&bn, &xs, &mut y2);
            } else {
                rows_forward_body::<f32, false>(&bn, &xs, &mut y2);
            }
            assert_eq!(bits(&y1), bits(&y2));
            for train in [false, true] {
                let m = n as f32;
                let (mut o1, mut o2) = (vec![0.0f32; n * c], vec![0.0f32; n * c]);
                let (mut s1, mut h1, mut s2, mut h2) =
                    (vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![0.0; c]);
                rows_backward(&bn, &xs, &ds, &mut o1, relu, train, m, &mut s1, &mut h1);
                let args = (
                    &bn,
                    &xs[..],
                    &ds[..],
                    &mut o2[..],
                    m,
                    &mut s2[..],
                    &mut h2[..],
                );
                match (relu, train) {
                    (true, true) => rows_backward_body::<f32, true, true>(
                        args.0, args.1, args.2, args.3, args.4, args.5, args.6,
                    ),
                    (true, false) => rows_backward_body::<f32, true, false>(
                        args.0, args.1, args.2, args.3, args.4, args.5, args.6,
                    ),
                    (false, true) => rows_backward_body::<f32, false, true>(
                        args.0, args.1, args.2, args.3, args.4, args.5, args.6,
                    ),
                    (false, false) => rows_backward_body::<f32, false, false>(
                        args.0, args.1, args.2, args.3, args.4, args.5, args.6,
                    ),
                }
                assert_eq!(bits(&o1), bits(&o2), "relu={relu} train={train}");
                assert_eq!(bits64(&s1), bits64(&s2));
                assert_eq!(bits64(&h1), bits64(&h2));
            }
        }
    }
}
