//! $\operatorname{ReLU}(x)=\max(x,0)$, with $\partial_x=\delta\odot\mathbb 1\lbrack y>0\rbrack$ (PyTorch's
//! convention: zero gradient at $x=0$).

use crate::real::Real;
use ndarray::{Array, Dimension, Zip};

/// ReLU that remembers its output for the backward pass.
#[derive(Clone, Debug, Default)]
pub struct Relu<T, D: Dimension> {
    y: Option<Array<T, D>>,
}

impl<T: Real, D: Dimension> Relu<T, D> {
    /// A fresh layer.
    pub fn new() -> Self {
        Relu { y: None }
    }
    /// $\max(x,0)$ in place; keeps a copy of the output.
    pub fn forward(&mut self, mut x: Array<T, D>) -> Array<T, D> {
        x.par_mapv_inplace(|v| if v > T::zero() { v } else { T::zero() });
        self.y = Some(x.clone());
        x
    }
    /// $\delta\odot\mathbb 1\lbrack y>0\rbrack$ in place.
    pub fn backward(&mut self, mut dy: Array<T, D>) -> Array<T, D> {
        let y = self.y.take().expect("Relu::backward called before forward");
        Zip::from(&mut dy).and(&y).par_for_each(|d, &v| {
            if !(v > T::zero()) {
                *d = T::zero();
            }
        });
        dy
    }
}
