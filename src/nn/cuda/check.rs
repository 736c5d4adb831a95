//! Host-in, host-out access to each GPU layer and to one whole training step, for the
//! parity tests against the CPU layers (`tests/nn_cuda_parity.rs`).

use super::gpu::Gpu;
use super::model::{self, Bn, Conv, GNet, GOpt, Lin, MaxPool, Store};
use crate::backend::cuda::CudaBackend;
use crate::error::{Error, Result};
use crate::nn::layers::{BatchNorm, LossKind};
use crate::nn::models::{ModelConfig, Net};
use crate::nn::optim::Optimizer;
use ndarray::{Array1, Array2, Array4, ArrayD, Dimension, IxDyn};
use std::rc::Rc;

/// Outputs of one batch-norm forward + backward on the GPU.
#[derive(Clone, Debug)]
pub struct BnGrads {
    /// $y$.
    pub y: ArrayD<f32>,
    /// $\partial_x$.
    pub dx: ArrayD<f32>,
    /// $\partial_\gamma$.
    pub dgamma: Vec<f32>,
    /// $\partial_\beta$.
    pub dbeta: Vec<f32>,
    /// Running mean after the call.
    pub running_mean: Vec<f32>,
    /// Running variance after the call.
    pub running_var: Vec<f32>,
}

/// The GPU layers one at a time (each call uploads its inputs and downloads its outputs).
pub struct LayerGpu {
    g: Gpu,
}

fn flat<D: Dimension>(a: &ndarray::Array<f32, D>) -> Vec<f32> {
    a.iter().copied().collect()
}

fn shaped<D: Dimension, S: Into<ndarray::StrideShape<D>>>(
    shape: S,
    v: Vec<f32>,
) -> Result<ndarray::Array<f32, D>> {
    ndarray::Array::from_shape_vec(shape, v)
        .map_err(|e| Error::numerical("GPU download", e.to_string()))
}

impl LayerGpu {
    /// CUDA device `ordinal` ([`Error::CudaUnavailable`] without one).
    pub fn new(ordinal: usize) -> Result<Self> {
        let be = CudaBackend::shared(ordinal)?;
        Ok(LayerGpu { g: Gpu::new(be)? })
    }

    /// The device name.
    pub fn name(&self) -> String {
        <CudaBackend as crate::backend::Backend<f32>>::name(&self.g.be)
    }

    /// Convolution (`w`: `out × in × k × k`, no bias): returns $y$, $\partial_W$, $\partial_x$
    /// for the output gradient `dy`.
    pub fn conv2d(
        &self,
        x: &Array4<f32>,
        w: &Array4<f32>,
        stride: usize,
        padding: usize,
        dy: &Array4<f32>,
    ) -> Result<(Array4<f32>, Array4<f32>, Array4<f32>)> {
        let g = &self.g;
        let mut st = Store::default();
        let (o, i, k, _) = w.dim();
        let mut c = Conv::new(g, &mut st, "conv", (i, o, k, stride, padding))?;
        g.upload_into(&flat(w), &mut st.params[c.w].w)?;
        let sh = {
            let d = x.dim();
            [d.0, d.1, d.2, d.3]
        };
        let (y, ys) = c.forward(g, &st, Rc::new(g.upload(&flat(x))?), sh)?;
        if dy.dim() != (ys[0], ys[1], ys[2], ys[3]) {
            return Err(Error::shape(
                "dy",
                format!("{ys:?}"),
                format!("{:?}", dy.dim()),
            ));
        }
        let dyd = g.upload(&flat(dy))?;
        let dx = c.backward(g, &mut st, &dyd, true)?.expect("dx requested");
        let y = shaped((ys[0], ys[1], ys[2], ys[3]), g.download(&y, y.len())?)?;
        let dw = shaped(w.raw_dim(), g.download(&st.params[c.w].g, w.len())?)?;
        let dx = shaped(x.raw_dim(), g.download(&dx, x.len())?)?;
        Ok((y, dw, dx))
    }

    /// Batch norm of `x` (`N × C` or `N × C × H × W`) with the parameters and running
    /// statistics of `bn` (not modified), forward in `train` or eval mode, then backward of `dy`.
    pub fn batch_norm(
        &self,
        bn: &BatchNorm<f32>,
        x: &ArrayD<f32>,
        train: bool,
        dy: &ArrayD<f32>,
    ) -> Result<BnGrads> {
        let g = &self.g;
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let l = x.len() / (n * c).max(1);
        let mut st = Store::default();
        let mut b = Bn::new(g, &mut st, "bn", c)?;
        g.upload_into(&flat(&bn.weight.value), &mut st.params[b.w].w)?;
        g.upload_into(&flat(&bn.bias.value), &mut st.params[b.b].w)?;
        g.upload_into(&flat(&bn.running_mean), &mut st.bufs[b.rm].1)?;
        g.upload_into(&flat(&bn.running_var), &mut st.bufs[b.rv].1)?;
        let y = b.forward(
            g,
            &mut st,
            Rc::new(g.upload(&flat(x))?),
            (n, c, l),
            train,
            None,
            false,
        )?;
        let dx = b.backward(g, &mut st, &g.upload(&flat(dy))?)?;
        Ok(BnGrads {
            y: shaped(IxDyn(x.shape()), g.download(&y, x.len())?)?,
            dx: shaped(IxDyn(x.shape()), g.download(&dx, x.len())?)?,
            dgamma: g.download(&st.params[b.w].g, c)?,
            dbeta: g.download(&st.params[b.b].g, c)?,
            running_mean: g.download(&st.bufs[b.rm].1, c)?,
            running_var: g.download(&st.bufs[b.rv].1, c)?,
        })
    }

    /// ReLU forward of `x` and backward of `dy`.
    pub fn relu(&self, x: &ArrayD<f32>, dy: &ArrayD<f32>) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        let g = &self.g;
        let n = x.len();
        let y = model::relu_fwd(g, &g.upload(&flat(x))?, n)?;
        let dx = model::relu_bwd(g, &g.upload(&flat(dy))?, &y, n)?;
        Ok((
            shaped(IxDyn(x.shape()), g.download(&y, n)?)?,
            shaped(IxDyn(x.shape()), g.download(&dx, n)?)?,
        ))
    }

    /// Max pooling `k × k`, stride `s`, padding `p`: $y$ and $\partial_x$ of `dy`.
    pub fn max_pool(
        &self,
        x: &Array4<f32>,
        (k, s, p): (usize, usize, usize),
        dy: &Array4<f32>,
    ) -> Result<(Array4<f32>, Array4<f32>)> {
        let g = &self.g;
        let d = x.dim();
        let mut mp = MaxPool::new(k, s, p);
        let (y, ys) = mp.forward(g, &g.upload(&flat(x))?, [d.0, d.1, d.2, d.3])?;
        let dx = mp.backward(g, &g.upload(&flat(dy))?)?;
        Ok((
            shaped(
                (ys[0], ys[1], ys[2], ys[3]),
                g.download(&y, ys.iter().product())?,
            )?,
            shaped(x.raw_dim(), g.download(&dx, x.len())?)?,
        ))
    }

    /// Global average pooling: $y$ (`N × C`) and $\partial_x$ of `dy`.
    pub fn avg_pool(
        &self,
        x: &Array4<f32>,
        dy: &Array2<f32>,
    ) -> Result<(Array2<f32>, Array4<f32>)> {
        let g = &self.g;
        let d = x.dim();
        let sh = [d.0, d.1, d.2, d.3];
        let y = model::avgpool_fwd(g, &g.upload(&flat(x))?, sh)?;
        let dx = model::avgpool_bwd(g, &g.upload(&flat(dy))?, sh)?;
        Ok((
            shaped((d.0, d.1), g.download(&y, d.0 * d.1)?)?,
            shaped(x.raw_dim(), g.download(&dx, x.len())?)?,
        ))
    }

    /// Linear layer $y=xW^\top+b$: $y$, $\partial_W$, $\partial_b$, $\partial_x$ of `dy`.
    #[allow(clippy::type_complexity)]
    pub fn linear(
        &self,
        x: &Array2<f32>,
        w: &Array2<f32>,
        b: Option<&Array1<f32>>,
        dy: &Array2<f32>,
    ) -> Result<(Array2<f32>, Array2<f32>, Option<Array1<f32>>, Array2<f32>)> {
        let g = &self.g;
        let (rows, n_in) = x.dim();
        let n_out = w.nrows();
        let mut st = Store::default();
        let mut lin = Lin::new(g, &mut st, "fc", n_in, n_out, b.is_some())?;
        g.upload_into(&flat(w), &mut st.params[lin.w].w)?;
        if let (Some(bi), Some(bv)) = (lin.b, b) {
            g.upload_into(&flat(bv), &mut st.params[bi].w)?;
        }
        let y = lin.forward(g, &st, Rc::new(g.upload(&flat(x))?), rows)?;
        let dx = lin
            .backward(g, &mut st, &g.upload(&flat(dy))?, true)?
            .expect("dx requested");
        let db = match lin.b {
            Some(bi) => Some(shaped(n_out, g.download(&st.params[bi].g, n_out)?)?),
            None => None,
        };
        Ok((
            shaped((rows, n_out), g.download(&y, rows * n_out)?)?,
            shaped(
                (n_out, n_in),
                g.download(&st.params[lin.w].g, n_out * n_in)?,
            )?,
            db,
            shaped((rows, n_in), g.download(&dx, rows * n_in)?)?,
        ))
    }

    /// Mean loss and $\partial\ell/\partial Z$.
    pub fn loss(
        &self,
        kind: LossKind,
        z: &Array2<f32>,
        labels: &[u32],
    ) -> Result<(f64, Array2<f32>)> {
        let g = &self.g;
        let (b, k) = z.dim();
        if labels.len() != b || labels.iter().any(|&y| y as usize >= k) {
            return Err(Error::Data(format!("labels must be {b} values in 0..{k}")));
        }
        let (l, dz) = model::loss(g, kind, &g.upload(&flat(z))?, &g.upload(labels)?, b, k)?;
        Ok((l, shaped((b, k), g.download(&dz, b * k)?)?))
    }

    /// One training step of `net` on the GPU (forward in train mode, loss, backward, update
    /// by `opt` with `lr`), written back into `net` and `opt`; returns the loss and the logits.
    /// The CPU equivalent is `net.forward`, `loss.eval`, `net.backward`, `opt.step`.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &self,
        cfg: &ModelConfig,
        net: &mut Net<f32>,
        opt: &mut Optimizer<f32>,
        x: &Array4<f32>,
        y: &[u32],
        kind: LossKind,
        lr: f64,
    ) -> Result<(f64, Array2<f32>)> {
        let g = &self.g;
        let mut gnet = GNet::new(g, cfg)?;
        gnet.upload(g, net)?;
        let mut gopt = GOpt::from_cpu(g, opt, &mut gnet)?;
        let n = x.shape()[0];
        let k = gnet.n_classes();
        let out = gnet.forward(g, Rc::new(g.upload(&flat(x))?), n, true)?;
        let (l, dz) = model::loss(g, kind, &out.logits, &g.upload(y)?, n, k)?;
        let logits = shaped((n, k), g.download(&out.logits, n * k)?)?;
        drop(out);
        gnet.backward(g, &dz, None)?;
        gopt.step(g, &mut gnet, lr)?;
        gnet.download(g, net)?;
        gopt.to_cpu(g, &gnet, opt)?;
        Ok((l, logits))
    }

    /// Peak bytes of the device tensors allocated through this handle.
    pub fn peak_bytes(&self) -> usize {
        self.g.peak_bytes()
    }
}
