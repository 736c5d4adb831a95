//! Pooling. Max pooling $y_{n,c,i,j}=\max_{(p,q)\in\text{window}(i,j)}x_{n,c,p,q}$ (padding
//! counts as $-\infty$; the gradient goes to the first maximum, as in PyTorch), and global
//! average pooling $y_{n,c}=\frac1{HW}\sum_{p,q}x_{n,c,p,q}$ (`AdaptiveAvgPool2d(1)` + flatten;
//! also `avg_pool2d(4)` on the 4×4 maps of `ResNet18_adapt` with 32×32 inputs).

use crate::real::Real;
use ndarray::{Array2, Array4, Axis};
use rayon::prelude::*;

/// Arg-max indices and the input shape.
type PoolCache = (Vec<u32>, (usize, usize, usize, usize));

/// `nn.MaxPool2d(k, stride, padding)`.
#[derive(Clone, Debug)]
pub struct MaxPool2d {
    /// Window size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub padding: usize,
    cache: Option<PoolCache>,
}

impl MaxPool2d {
    /// A max-pooling layer.
    pub fn new(k: usize, stride: usize, padding: usize) -> Self {
        MaxPool2d {
            k,
            stride,
            padding,
            cache: None,
        }
    }

    /// Pools; remembers the arg-max of each window.
    pub fn forward<T: Real>(&mut self, x: &Array4<T>) -> Array4<T> {
        let (n, c, h, w) = x.dim();
        let oh = (h + 2 * self.padding - self.k) / self.stride + 1;
        let ow = (w + 2 * self.padding - self.k) / self.stride + 1;
        let xs = x.as_slice().expect("contiguous");
        let mut y = Array4::<T>::zeros((n, c, oh, ow));
        let mut arg = vec![0u32; n * c * oh * ow];
        let (k, s, pd) = (self.k, self.stride, self.padding as isize);
        y.as_slice_mut()
            .expect("fresh")
            .par_chunks_mut(oh * ow)
            .zip(arg.par_chunks_mut(oh * ow))
            .enumerate()
            .for_each(|(pl, (yp, ap))| {
                let plane = &xs[pl * h * w..(pl + 1) * h * w];
                for i in 0..oh {
                    for j in 0..ow {
                        let mut best = T::neg_infinity();
                        let mut bi = 0usize;
                        for p in 0..k {
                            let yy = (i * s + p) as isize - pd;
                            if yy < 0 || yy >= h as isize {
                                continue;
                            }
                            for q in 0..k {
                                let xx = (j * s + q) as isize - pd;
                                if xx < 0 || xx >= w as isize {
                                    continue;
                                }
                                let idx = yy as usize * w + xx as usize;
                                let v = plane[idx];
                                if v > best || v.is_nan() {
                                    best = v;
                                    bi = idx;
                                }
                            }
                        }
                        yp[i * ow + j] = best;
                        ap[i * ow + j] = bi as u32;
                    }
                }
            });
        self.cache = Some((arg, (n, c, h, w)));
        y
    }

    /// Routes each output gradient to its window's arg-max.
    pub fn backward<T: Real>(&mut self, dy: &Array4<T>) -> Array4<T> {
        let (arg, (n, c, h, w)) = self
            .cache
            .take()
            .expect("MaxPool2d::backward called before forward");
        let (_, _, oh, ow) = dy.dim();
        let ds = dy.as_slice().expect("contiguous");
        let mut dx = Array4::<T>::zeros((n, c, h, w));
        dx.as_slice_mut()
            .expect("fresh")
            .par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(pl, xp)| {
                for o in 0..oh * ow {
                    xp[arg[pl * oh * ow + o] as usize] += ds[pl * oh * ow + o];
                }
            });
        dx
    }
}

/// Global average pooling `N × C × H × W → N × C`.
#[derive(Clone, Debug, Default)]
pub struct GlobalAvgPool {
    hw: (usize, usize),
}

impl GlobalAvgPool {
    /// A pooling layer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Channel means.
    pub fn forward<T: Real>(&mut self, x: &Array4<T>) -> Array2<T> {
        let (n, c, h, w) = x.dim();
        self.hw = (h, w);
        let x3 = x
            .view()
            .into_shape_with_order((n, c, h * w))
            .expect("contiguous");
        x3.sum_axis(Axis(2)) / T::of((h * w) as f64)
    }
    /// Spreads each gradient evenly over its map.
    pub fn backward<T: Real>(&self, dy: &Array2<T>) -> Array4<T> {
        let (n, c) = dy.dim();
        let (h, w) = self.hw;
        let s = T::of(1.0 / (h * w) as f64);
        Array4::from_shape_fn((n, c, h, w), |(a, b, _, _)| dy[[a, b]] * s)
    }
}
