//! Fully connected layer $y=xW^\top+b$ ($x\in\mathbb R^{B\times n}$, $W\in\mathbb R^{m\times n}$),
//! with $\partial_W=\delta^\top x$, $\partial_b=\mathbf 1^\top\delta$, $\partial_x=\delta W$.

use super::{gemm, init, join, Module, Param, TensorMut};
use crate::real::Real;
use ndarray::{Array2, ArrayView2, Axis, Ix2};
use rand::rngs::StdRng;

/// `nn.Linear(in, out, bias)`.
#[derive(Clone, Debug)]
pub struct Linear<T> {
    /// $W$, shape `out × in`.
    pub weight: Param<T>,
    /// $b$, shape `out` (None with `bias=False`).
    pub bias: Option<Param<T>>,
    x: Option<Array2<T>>,
}

impl<T: Real> Linear<T> {
    /// PyTorch's default initialisation: $W,b\sim\mathcal U(\pm1/\sqrt{\text{in}})$.
    pub fn new(n_in: usize, n_out: usize, bias: bool, rng: &mut StdRng) -> Self {
        let a = init::torch_default_bound(n_in);
        let weight = Param::new(init::uniform(&[n_out, n_in], a, rng));
        let bias = bias.then(|| Param::new(init::uniform(&[n_out], a, rng)));
        Linear {
            weight,
            bias,
            x: None,
        }
    }

    /// Input and output sizes.
    pub fn dims(&self) -> (usize, usize) {
        (self.weight.value.shape()[1], self.weight.value.shape()[0])
    }

    fn w(&self) -> ArrayView2<'_, T> {
        self.weight
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("linear weight is 2-D")
    }

    /// $y=xW^\top+b$; caches $x$ for `backward`.
    pub fn forward(&mut self, x: Array2<T>) -> Array2<T> {
        let mut y = Array2::zeros((x.nrows(), self.weight.value.shape()[0]));
        if let Some(b) = &self.bias {
            y += &b
                .value
                .view()
                .into_dimensionality::<ndarray::Ix1>()
                .expect("bias is 1-D");
        }
        let beta = if self.bias.is_some() {
            T::one()
        } else {
            T::zero()
        };
        gemm(T::one(), x.view(), self.w().t(), beta, y.view_mut());
        self.x = Some(x);
        y
    }

    /// Accumulates $\partial_W,\partial_b$ and returns $\partial_x$ when `need_dx`.
    pub fn backward(&mut self, dy: &Array2<T>, need_dx: bool) -> Option<Array2<T>> {
        let x = self
            .x
            .take()
            .expect("Linear::backward called before forward");
        {
            let mut gw = self
                .weight
                .grad
                .view_mut()
                .into_dimensionality::<Ix2>()
                .expect("2-D");
            if self.weight.trainable {
                gemm(T::one(), dy.t(), x.view(), T::one(), gw.view_mut());
            }
        }
        if let Some(b) = &mut self.bias {
            b.grad += &dy.sum_axis(Axis(0)).into_dyn();
        }
        need_dx.then(|| {
            let mut dx = Array2::zeros(x.raw_dim());
            gemm(T::one(), dy.view(), self.w(), T::zero(), dx.view_mut());
            dx
        })
    }
}

impl<T: Real> Module<T> for Linear<T> {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, TensorMut<'_, T>)) {
        f(&join(prefix, "weight"), TensorMut::Param(&mut self.weight));
        if let Some(b) = &mut self.bias {
            f(&join(prefix, "bias"), TensorMut::Param(b));
        }
    }
}
