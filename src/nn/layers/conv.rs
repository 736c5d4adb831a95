//! 2-D convolution without bias (every convolution of the ResNets has `bias=False`):
//! $$y_{n,o,i,j}=\sum_{c,p,q}W_{o,c,p,q}\,x_{n,c,\,si+p-\pi,\,sj+q-\pi}$$
//! (stride $s$, zero padding $\pi$), computed as im2col + one GEMM per batch:
//! $Y=W_{[o,(c,p,q)]}\,X_\text{col}$ with $X_\text{col}\in\mathbb R^{Ck^2\times NHW'}$.
//! Backward: $\partial_W=\delta\,X_\text{col}^\top$ and $\partial_x=\operatorname{col2im}(W^\top\delta)$;
//! im2col is recomputed rather than stored.

use super::{gemm, init, join, Module, Param, TensorMut};
use crate::real::Real;
use ndarray::{Array2, Array4, ArrayView2, Ix2};
use rand::rngs::StdRng;
use rayon::prelude::*;

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
            x: None,
        }
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

    /// im2col: rows $(c,p,q)$, columns $(n,i,j)$.
    fn im2col(&self, x: &Array4<T>) -> Array2<T> {
        let (n, c, h, w) = x.dim();
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let (k, s, pd) = (self.k, self.stride, self.padding as isize);
        let xs = x.as_slice().expect("contiguous input");
        let mut cols = Array2::<T>::zeros((c * k * k, n * oh * ow));
        cols.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(n * oh * ow)
            .enumerate()
            .for_each(|(r, row)| {
                let (ci, p, q) = (r / (k * k), (r / k) % k, r % k);
                for ni in 0..n {
                    let plane = &xs[(ni * c + ci) * h * w..(ni * c + ci + 1) * h * w];
                    for i in 0..oh {
                        let yy = (i * s + p) as isize - pd;
                        let dst = &mut row[(ni * oh + i) * ow..(ni * oh + i + 1) * ow];
                        if yy < 0 || yy >= h as isize {
                            continue;
                        }
                        let src = &plane[yy as usize * w..(yy as usize + 1) * w];
                        for (j, d) in dst.iter_mut().enumerate() {
                            let xx = (j * s + q) as isize - pd;
                            if xx >= 0 && xx < w as isize {
                                *d = src[xx as usize];
                            }
                        }
                    }
                }
            });
        cols
    }

    /// Convolves; caches the input.
    pub fn forward(&mut self, x: Array4<T>) -> Array4<T> {
        let (n, c, h, w) = x.dim();
        assert_eq!(c, self.weight.value.shape()[1], "conv input channels");
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let oc = self.weight.value.shape()[0];
        let cols = self.im2col(&x);
        let mut y2 = Array2::<T>::zeros((oc, n * oh * ow));
        gemm(T::one(), self.w2(), cols.view(), T::zero(), y2.view_mut());
        // (oc, n, oh*ow) -> (n, oc, oh, ow)
        let y = y2
            .into_shape_with_order((oc, n, oh, ow))
            .expect("shape")
            .permuted_axes([1, 0, 2, 3])
            .as_standard_layout()
            .into_owned();
        self.x = Some(x);
        y
    }

    /// Accumulates $\partial_W$; returns $\partial_x$ when `need_dx`.
    pub fn backward(&mut self, dy: &Array4<T>, need_dx: bool) -> Option<Array4<T>> {
        let x = self
            .x
            .take()
            .expect("Conv2d::backward called before forward");
        let (n, c, h, w) = x.dim();
        let (_, oc, oh, ow) = dy.dim();
        let dy2 = dy
            .view()
            .permuted_axes([1, 0, 2, 3])
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((oc, n * oh * ow))
            .expect("shape");
        let cols = self.im2col(&x);
        if self.weight.trainable {
            let s = self.weight.grad.shape().to_vec();
            let mut gw = self
                .weight
                .grad
                .view_mut()
                .into_shape_with_order((s[0], s[1] * s[2] * s[3]))
                .expect("contiguous grad");
            gemm(T::one(), dy2.view(), cols.t(), T::one(), gw.view_mut());
        }
        drop(cols);
        if !need_dx {
            return None;
        }
        let mut dcols = Array2::<T>::zeros((c * self.k * self.k, n * oh * ow));
        gemm(
            T::one(),
            self.w2().t(),
            dy2.view(),
            T::zero(),
            dcols.view_mut(),
        );
        // col2im: each (n, c) plane of dx only receives rows c*k*k.. of dcols.
        let (k, s, pd) = (self.k, self.stride, self.padding as isize);
        let dc = dcols.as_slice().expect("fresh");
        let cols_n = n * oh * ow;
        let mut dx = Array4::<T>::zeros((n, c, h, w));
        dx.as_slice_mut()
            .expect("fresh")
            .par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(pl, plane)| {
                let (ni, ci) = (pl / c, pl % c);
                for p in 0..k {
                    for q in 0..k {
                        let row = &dc[(ci * k * k + p * k + q) * cols_n
                            ..(ci * k * k + p * k + q + 1) * cols_n];
                        for i in 0..oh {
                            let yy = (i * s + p) as isize - pd;
                            if yy < 0 || yy >= h as isize {
                                continue;
                            }
                            let src = &row[(ni * oh + i) * ow..(ni * oh + i + 1) * ow];
                            let dst = &mut plane[yy as usize * w..(yy as usize + 1) * w];
                            for (j, &g) in src.iter().enumerate() {
                                let xx = (j * s + q) as isize - pd;
                                if xx >= 0 && xx < w as isize {
                                    dst[xx as usize] += g;
                                }
                            }
                        }
                    }
                }
            });
        Some(dx)
    }
}

impl<T: Real> Module<T> for Conv2d<T> {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, TensorMut<'_, T>)) {
        f(&join(prefix, "weight"), TensorMut::Param(&mut self.weight));
    }
}
