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
//! Only the input and two numbers per channel are cached; each channel is one rayon task that
//! reads its planes for the statistics and writes them while they are still in cache.

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

/// A raw pointer that rayon tasks may share; each task writes a disjoint set of planes.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: only used for writes to disjoint index sets (one channel's planes per task).
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    fn get(&self) -> *mut T {
        self.0
    }
}

/// $\gamma(x-\mu)/\sigma+\beta$, written once so that forward and backward agree bit for bit.
#[inline(always)]
fn affine<T: Real>(v: T, mu: T, inv: T, g: T, b: T) -> T {
    (v - mu) * inv * g + b
}

/// $\sum_i$ of `f(x_i)` in f64 with eight accumulators (vectorises).
#[inline]
fn sum_f64<T: Real>(xs: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut it = xs.chunks_exact(8);
    for ch in &mut it {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += f(v);
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &v in it.remainder() {
        s += f(v);
    }
    s
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
            let stats: Vec<(f64, f64)> = (0..c)
                .into_par_iter()
                .map(|ci| {
                    let planes = (0..n).map(|ni| &xs[(ni * c + ci) * l..(ni * c + ci + 1) * l]);
                    let mu = planes
                        .clone()
                        .map(|p| sum_f64(p, |v| v.to_f64_()))
                        .sum::<f64>()
                        / m;
                    let var = planes
                        .map(|p| {
                            sum_f64(p, |v| {
                                let d = v.to_f64_() - mu;
                                d * d
                            })
                        })
                        .sum::<f64>()
                        / m;
                    (mu, var)
                })
                .collect();
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
        let yp = SharedMut(y.as_mut_ptr());
        let (gw, bw) = (&self.weight.value, &self.bias.value);
        (0..c).into_par_iter().for_each(|ci| {
            let (mu, iv, g, b) = (mean[ci], inv[ci], gw[ci], bw[ci]);
            for ni in 0..n {
                let off = (ni * c + ci) * l;
                // SAFETY: planes (ni, ci) for this ci are written by this task only, inside y.
                let dst = unsafe { std::slice::from_raw_parts_mut(yp.get().add(off), l) };
                for (d, &v) in dst.iter_mut().zip(&xs[off..off + l]) {
                    let z = affine(v, mu, iv, g, b);
                    *d = if relu && !(z > T::zero()) {
                        T::zero()
                    } else {
                        z
                    };
                }
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
        let (gw, bw) = (&self.weight.value, &self.bias.value);
        let mut dx = Array3::<T>::zeros((n, c, l));
        let dxp = SharedMut(dx.as_mut_ptr());
        let m = T::of((n * l) as f64);
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ci| {
                let (mu, iv, g, b) = (mean[ci], inv[ci], gw[ci], bw[ci]);
                // δ after the fused ReLU's mask
                let eff = |v: T, d: T| {
                    if relu && !(affine(v, mu, iv, g, b) > T::zero()) {
                        T::zero()
                    } else {
                        d
                    }
                };
                // Σδ and Σδx̂ in f64, eight lanes each so that the loop vectorises
                let (mut sd8, mut sdh8) = ([0.0f64; 8], [0.0f64; 8]);
                let (mut sd, mut sdh) = (0.0f64, 0.0f64);
                for ni in 0..n {
                    let off = (ni * c + ci) * l;
                    let (xp, dp) = (&xs[off..off + l], &ds[off..off + l]);
                    let (xc, dc) = (xp.chunks_exact(8), dp.chunks_exact(8));
                    for (&v, &d) in xc.remainder().iter().zip(dc.remainder()) {
                        let d = eff(v, d);
                        sd += d.to_f64_();
                        sdh += (d * ((v - mu) * iv)).to_f64_();
                    }
                    for (x8, d8) in xc.zip(dc) {
                        for k in 0..8 {
                            let d = eff(x8[k], d8[k]);
                            sd8[k] += d.to_f64_();
                            sdh8[k] += (d * ((x8[k] - mu) * iv)).to_f64_();
                        }
                    }
                }
                sd += sd8.iter().sum::<f64>();
                sdh += sdh8.iter().sum::<f64>();
                let (tsd, tsdh) = (T::of(sd), T::of(sdh));
                for ni in 0..n {
                    let off = (ni * c + ci) * l;
                    // SAFETY: planes (ni, ci) for this ci are written by this task only.
                    let dst = unsafe { std::slice::from_raw_parts_mut(dxp.get().add(off), l) };
                    for ((o, &v), &d) in
                        dst.iter_mut().zip(&xs[off..off + l]).zip(&ds[off..off + l])
                    {
                        let d = eff(v, d);
                        *o = if train {
                            g * iv / m * (m * d - tsd - (v - mu) * iv * tsdh)
                        } else {
                            g * iv * d
                        };
                    }
                }
                (sd, sdh)
            })
            .collect();
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
