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
//! order (rayon tasks over images or `H × W` planes); per-channel sums are taken per image in
//! f64 and added over images in a fixed order, so results do not depend on scheduling.

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
        .map(|(xi, di)| {
            xi.chunks(l)
                .zip(di.chunks(l))
                .enumerate()
                .map(|(ci, (xp, dp))| sum2_f64(xp, dp, f(ci)))
                .collect()
        })
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

/// $\sum_i$ of the two terms of `f(x_i, d_i)` in f64, eight lanes each (vectorises).
#[inline]
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
            let sums = channel_sums(xs, xs, (c, l), |_| |v: T, _| (v.to_f64_(), 0.0));
            let mus: Vec<f64> = sums.iter().map(|s| s.0 / m).collect();
            let sq = channel_sums(xs, xs, (c, l), |ci| {
                let mu = mus[ci];
                move |v: T, _| {
                    let d = v.to_f64_() - mu;
                    (d * d, 0.0)
                }
            });
            let stats: Vec<(f64, f64)> =
                mus.iter().zip(&sq).map(|(&mu, s)| (mu, s.0 / m)).collect();
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
        y.as_slice_mut()
            .expect("fresh")
            .par_chunks_mut(l.max(1))
            .zip(xs.par_chunks(l.max(1)))
            .enumerate()
            .for_each(|(pl, (dst, src))| {
                let ci = pl % c;
                let (mu, iv, g, b) = (mean[ci], inv[ci], gw[ci], bw[ci]);
                for (d, &v) in dst.iter_mut().zip(src) {
                    let z = affine(v, mu, iv, g, b);
                    *d = if relu && !(z > T::zero()) {
                        T::zero()
                    } else {
                        z
                    };
                }
            });
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
                if relu && !(affine(v, mu, iv, g, b) > T::zero()) {
                    T::zero()
                } else {
                    d
                }
            }
        };
        // Σδ and Σδx̂ per channel
        let sums = channel_sums(xs, ds, (c, l), |ci| {
            let (mu, iv, e) = (mean[ci], inv[ci], eff(ci));
            move |v: T, d: T| {
                let d = e(v, d);
                (d.to_f64_(), (d * ((v - mu) * iv)).to_f64_())
            }
        });
        let m = T::of((n * l) as f64);
        let mut dx = Array3::<T>::zeros((n, c, l));
        dx.as_slice_mut()
            .expect("fresh")
            .par_chunks_mut(l.max(1))
            .zip(xs.par_chunks(l.max(1)).zip(ds.par_chunks(l.max(1))))
            .enumerate()
            .for_each(|(pl, (dst, (xp, dp)))| {
                let ci = pl % c;
                let (mu, iv, g) = (mean[ci], inv[ci], gw[ci]);
                let (tsd, tsdh) = (T::of(sums[ci].0), T::of(sums[ci].1));
                let e = eff(ci);
                for ((o, &v), &d) in dst.iter_mut().zip(xp).zip(dp) {
                    let d = e(v, d);
                    *o = if train {
                        g * iv / m * (m * d - tsd - (v - mu) * iv * tsdh)
                    } else {
                        g * iv * d
                    };
                }
            });
        for (ci, &(sd, sdh)) in sums.iter().enumerate() {
            self.bias.grad[ci] += T::of(sd);
            self.weight.grad[ci] += T::of(sdh);
        }
        dx.into_shape_with_order(dy.raw_dim()).expect("same size")
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
