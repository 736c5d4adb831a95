//! The original `MLP(hidden, depth)`: $h=\big(\operatorname{ReLU}\circ\operatorname{BN}\circ L_\text{depth}\big)\circ\dots\circ\big(\operatorname{ReLU}\circ\operatorname{BN}\circ L_1\big)(\operatorname{vec}x)$,
//! parameters named `layers.{3i}` (Linear) and `layers.{3i+1}` (BatchNorm1d) as in its
//! `nn.Sequential`.

use crate::error::{Error, Result};
use crate::nn::layers::{join, BatchNorm, Linear, Module, TensorMut};
use crate::real::Real;
use ndarray::{Array2, Array4};
use rand::rngs::StdRng;

/// One hidden layer: Linear, then BatchNorm1d with the ReLU fused into it
/// ([`BatchNorm::forward_relu`]).
type Hidden<T> = (Linear<T>, BatchNorm<T>);

/// Multi-layer perceptron with batch norm.
#[derive(Clone, Debug)]
pub struct Mlp<T> {
    layers: Vec<Hidden<T>>,
    n_in: usize,
}

impl<T: Real> Mlp<T> {
    /// `depth` hidden layers of `width` on `n_in` inputs.
    pub fn new(n_in: usize, width: usize, depth: usize, rng: &mut StdRng) -> Self {
        let layers = (0..depth)
            .map(|i| {
                let a = if i == 0 { n_in } else { width };
                (Linear::new(a, width, true, rng), BatchNorm::new(width))
            })
            .collect();
        Mlp { layers, n_in }
    }

    /// Output width.
    pub fn feature_dim(&self) -> usize {
        self.layers.last().map_or(self.n_in, |l| l.0.dims().1)
    }

    /// Flattens and applies the layers.
    pub fn forward(&mut self, x: Array4<T>, train: bool) -> Result<Array2<T>> {
        let n = x.shape()[0];
        let per = x.len() / n.max(1);
        if per != self.n_in {
            return Err(Error::shape(
                "MLP input",
                format!("{} values per image", self.n_in),
                format!("{per}"),
            ));
        }
        let mut h = x.into_shape_with_order((n, per)).expect("contiguous batch");
        for (lin, bn) in &mut self.layers {
            h = bn.forward_relu(lin.forward(h), train);
        }
        Ok(h)
    }

    /// Backward from $\partial\ell/\partial h$.
    pub fn backward(&mut self, mut dh: Array2<T>) {
        for (i, (lin, bn)) in self.layers.iter_mut().enumerate().rev() {
            let d = bn.backward(&dh);
            match lin.backward(&d, i > 0) {
                Some(dx) => dh = dx,
                None => return,
            }
        }
    }
}

impl<T: Real> Module<T> for Mlp<T> {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, TensorMut<'_, T>)) {
        for (i, (lin, bn)) in self.layers.iter_mut().enumerate() {
            lin.visit(&join(prefix, &format!("layers.{}", 3 * i)), f);
            bn.visit(&join(prefix, &format!("layers.{}", 3 * i + 1)), f);
        }
    }
}
