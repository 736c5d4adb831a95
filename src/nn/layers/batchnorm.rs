//! Batch normalisation (Ioffe & Szegedy 2015) over the channel axis of `N × C` or
//! `N × C × H × W` inputs, with PyTorch's conventions:
//! $$y=\gamma\,\frac{x-\mu_B}{\sqrt{\sigma_B^2+\epsilon}}+\beta,\qquad \epsilon=10^{-5},$$
//! batch statistics in training ($\sigma_B^2$ biased), running statistics in evaluation,
//! updated as $r\leftarrow(1-m)\,r+m\,s$ with momentum $m=0.1$ and the **unbiased** batch
//! variance $\frac{M}{M-1}\sigma_B^2$ ($M=N\cdot H\cdot W$).
//! Training backward: $\partial_x=\frac{\gamma}{M\sqrt{\sigma_B^2+\epsilon}}\big(M\delta-\sum\delta-\hat x\sum\delta\hat x\big)$.

use super::{join, Module, Param, TensorMut};
use crate::real::Real;
use ndarray::{Array, Array3, ArrayD, ArrayView3, Axis, Dimension, IxDyn, Zip};
use rayon::prelude::*;

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
    cache: Option<(Array3<T>, Vec<T>, bool)>,
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
        let shape = x.raw_dim();
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let l = x.len() / (n * c).max(1);
        let x3 = x.into_shape_with_order((n, c, l)).expect("contiguous");
        let (y, xhat, inv) = self.forward3(x3.view(), train);
        self.cache = Some((xhat, inv, train));
        y.into_shape_with_order(shape).expect("same size")
    }

    fn forward3(&mut self, x: ArrayView3<T>, train: bool) -> (Array3<T>, Array3<T>, Vec<T>) {
        let (n, c, l) = x.dim();
        let m = (n * l) as f64;
        let (mean, inv): (Vec<T>, Vec<T>) = if train {
            assert!(
                n * l > 1,
                "batch norm in training mode needs more than one value per channel"
            );
            let stats: Vec<(f64, f64)> = (0..c)
                .into_par_iter()
                .map(|ci| {
                    let xc = x.index_axis(Axis(1), ci);
                    let mu = xc.iter().map(|v| v.to_f64_()).sum::<f64>() / m;
                    let var = xc.iter().map(|v| (v.to_f64_() - mu).powi(2)).sum::<f64>() / m;
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
        let mut xhat = Array3::<T>::zeros((n, c, l));
        let mut y = Array3::<T>::zeros((n, c, l));
        Zip::indexed(&mut xhat)
            .and(&mut y)
            .and(&x)
            .par_for_each(|(_, ci, _), h, yv, &v| {
                *h = (v - mean[ci]) * inv[ci];
                *yv = *h * self.weight.value[ci] + self.bias.value[ci];
            });
        (y, xhat, inv)
    }

    /// Accumulates $\partial_\gamma,\partial_\beta$ and returns $\partial_x$.
    pub fn backward<D: Dimension>(&mut self, dy: &Array<T, D>) -> Array<T, D> {
        let (xhat, inv, train) = self
            .cache
            .take()
            .expect("BatchNorm::backward called before forward");
        let (n, c, l) = xhat.dim();
        let dy3 = dy
            .view()
            .into_shape_with_order((n, c, l))
            .expect("contiguous");
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ci| {
                let d = dy3.index_axis(Axis(1), ci);
                let h = xhat.index_axis(Axis(1), ci);
                let mut s = (0.0, 0.0);
                Zip::from(&d).and(&h).for_each(|&a, &b| {
                    s.0 += a.to_f64_();
                    s.1 += (a * b).to_f64_();
                });
                s
            })
            .collect();
        for (ci, &(sd, sdh)) in sums.iter().enumerate() {
            self.bias.grad[ci] += T::of(sd);
            self.weight.grad[ci] += T::of(sdh);
        }
        let m = T::of((n * l) as f64);
        let mut dx = Array3::<T>::zeros((n, c, l));
        let g = &self.weight.value;
        Zip::indexed(&mut dx)
            .and(&dy3)
            .and(&xhat)
            .par_for_each(|(_, ci, _), o, &d, &h| {
                *o = if train {
                    g[ci] * inv[ci] / m * (m * d - T::of(sums[ci].0) - h * T::of(sums[ci].1))
                } else {
                    g[ci] * inv[ci] * d
                };
            });
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
