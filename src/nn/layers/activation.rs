//! $\operatorname{ReLU}(x)=\max(x,0)$, with $\partial_x=\delta\odot\mathbb 1\lbrack y>0\rbrack$ (PyTorch's
//! convention: zero gradient at $x=0$). A ReLU right after a batch norm is fused into it
//! instead ([`super::BatchNorm::forward_relu`]).

use crate::real::Real;
use ndarray::{Array, Dimension};
use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// ReLU that remembers where its output is positive (one byte per element).
#[derive(Clone, Debug, Default)]
pub struct Relu<T, D: Dimension> {
    mask: Option<(Vec<bool>, D)>,
    _t: std::marker::PhantomData<T>,
}

impl<T: Real, D: Dimension> Relu<T, D> {
    /// A fresh layer.
    pub fn new() -> Self {
        Relu {
            mask: None,
            _t: std::marker::PhantomData,
        }
    }
    /// $\max(x,0)$ in place; keeps the mask $y>0$.
    pub fn forward(&mut self, x: Array<T, D>) -> Array<T, D> {
        let mut x = super::standard(x);
        let mut mask = vec![false; x.len()];
        x.as_slice_mut()
            .expect("standard layout")
            .par_chunks_mut(CHUNK)
            .zip(mask.par_chunks_mut(CHUNK))
            .for_each(|(xc, mc)| {
                for (v, m) in xc.iter_mut().zip(mc) {
                    *m = *v > T::zero();
                    if !*m {
                        *v = T::zero();
                    }
                }
            });
        self.mask = Some((mask, x.raw_dim()));
        x
    }
    /// $\max(x+s,0)$ in place (a residual add fused into the ReLU, one sweep); keeps the
    /// mask $y>0$.
    pub fn forward_add(&mut self, x: Array<T, D>, s: &Array<T, D>) -> Array<T, D> {
        assert_eq!(x.raw_dim(), s.raw_dim(), "Relu::forward_add: shapes");
        let mut x = super::standard(x);
        let s = s.as_standard_layout();
        let mut mask = vec![false; x.len()];
        x.as_slice_mut()
            .expect("standard layout")
            .par_chunks_mut(CHUNK)
            .zip(mask.par_chunks_mut(CHUNK))
            .zip(s.as_slice().expect("standard layout").par_chunks(CHUNK))
            .for_each(|((xc, mc), sc)| {
                for ((v, m), &a) in xc.iter_mut().zip(mc).zip(sc) {
                    *v += a;
                    *m = *v > T::zero();
                    if !*m {
                        *v = T::zero();
                    }
                }
            });
        self.mask = Some((mask, x.raw_dim()));
        x
    }
    /// $\delta\odot\mathbb 1\lbrack y>0\rbrack$ in place.
    pub fn backward(&mut self, dy: Array<T, D>) -> Array<T, D> {
        let (mask, dim) = self
            .mask
            .take()
            .expect("Relu::backward called before forward");
        assert_eq!(dy.raw_dim(), dim, "Relu::backward: gradient shape");
        let mut dy = super::standard(dy);
        dy.as_slice_mut()
            .expect("standard layout")
            .par_chunks_mut(CHUNK)
            .zip(mask.par_chunks(CHUNK))
            .for_each(|(dc, mc)| {
                for (d, &m) in dc.iter_mut().zip(mc) {
                    if !m {
                        *d = T::zero();
                    }
                }
            });
        dy
    }
}
