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
            .for_each(|(xc, mc)| relu_wide(xc, mc));
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
            .for_each(|((xc, mc), sc)| add_relu_wide(xc, mc, sc));
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
            .for_each(|(dc, mc)| mask_wide(dc, mc));
        dy
    }
}

// Branch-free bodies (a select instead of a conditional store, so that they vectorise),
// compiled for the CPU's widest vectors (`wide_fn!`); the same values as the plain loops.

/// `m = x > 0; x = m ? x : 0`.
#[inline(always)]
fn relu_body<T: Real>(x: &mut [T], m: &mut [bool]) {
    for (v, mk) in x.iter_mut().zip(m) {
        let pos = *v > T::zero();
        *mk = pos;
        *v = if pos { *v } else { T::zero() };
    }
}

/// `x += s; m = x > 0; x = m ? x : 0`.
#[inline(always)]
fn add_relu_body<T: Real>(x: &mut [T], m: &mut [bool], s: &[T]) {
    for ((v, mk), &a) in x.iter_mut().zip(m).zip(s) {
        let y = *v + a;
        let pos = y > T::zero();
        *mk = pos;
        *v = if pos { y } else { T::zero() };
    }
}

/// `d = m ? d : 0`.
#[inline(always)]
fn mask_body<T: Real>(d: &mut [T], m: &[bool]) {
    for (v, &mk) in d.iter_mut().zip(m) {
        *v = if mk { *v } else { T::zero() };
    }
}

wide_fn!(fn relu_wide[T: Real]<T>(x: &mut [T], m: &mut [bool]) -> () = relu_body);
wide_fn!(fn add_relu_wide[T: Real]<T>(x: &mut [T], m: &mut [bool], s: &[T]) -> () = add_relu_body);
wide_fn!(fn mask_wide[T: Real]<T>(d: &mut [T], m: &[bool]) -> () = mask_body);
