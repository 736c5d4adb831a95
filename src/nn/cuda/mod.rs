//! Network training and evaluation on an NVIDIA GPU: the layers of [`crate::nn::layers`] as
//! the hand-written kernels of `kernels/nn.cu` (NVRTC) plus cuBLAS SGEMM, no cuDNN.
//!
//! The same objective as the CPU trainer ([`crate::nn::train`]),
//! $$\frac1B\sum_{i\in\text{batch}}\ell(W\phi_\Theta(x_i)+b,\,y_i)+\frac\lambda2\lVert(\Theta,W,b)\rVert^2,$$
//! with the same layers (Zhu et al., NeurIPS 2021, *A Geometric Analysis of Neural Collapse
//! with Unconstrained Features*; torchvision ResNet-18): convolution as im2col + one SGEMM
//! $Y^\top=W X_\text{col}$ per layer (backward $\partial_W=\delta X_\text{col}^\top$,
//! $\partial_X=\operatorname{col2im}(W^\top\delta)$), batch norm with batch statistics and
//! PyTorch's running-statistics update (momentum 0.1, unbiased running variance), ReLU, max and
//! global average pooling, softmax cross-entropy or one-hot MSE, and fused SGD / Adam updates.
//! Parameters keep the CPU model's names and layouts: a [`Net`](crate::nn::models::Net) is
//! uploaded at the start, downloaded for every checkpoint (the CPU safetensors format), and the
//! data (same seed, same batch order, same augmentation draws as the CPU) is produced by a
//! background thread into pinned host buffers while the GPU computes.
//!
//! [`NnDevice::select`] turns `--device auto|cpu|cuda` into a device: `cuda` without a usable
//! GPU is [`Error::CudaUnavailable`]; `auto` falls back to the CPU and says why (the caller
//! prints it once). L-BFGS runs on the CPU only.
//!
//! Without the `cuda` feature the module still compiles: `cuda` is an error, `auto` the CPU.

#[cfg(feature = "cuda")]
mod check;
#[cfg(feature = "cuda")]
pub(crate) mod gpu;
#[cfg(feature = "cuda")]
mod model;
#[cfg(feature = "cuda")]
mod run;

#[cfg(feature = "cuda")]
pub use check::{BnGrads, LayerGpu};
#[cfg(feature = "cuda")]
pub(crate) use run::{train_cuda, CudaEval};

use crate::backend::Device;
use crate::error::{Error, Result};
use crate::nn::optim::OptimizerKind;

/// Where `ufm train` / `ufm validate` run.
#[derive(Clone)]
pub enum NnDevice {
    /// The CPU layers; `fallback` says why `--device auto` did not pick the GPU.
    Cpu {
        /// The reason `auto` fell back (None when the CPU was asked for).
        fallback: Option<String>,
    },
    /// CUDA device 0.
    #[cfg(feature = "cuda")]
    Cuda(std::sync::Arc<crate::backend::cuda::CudaBackend>),
}

impl NnDevice {
    /// The CPU.
    pub fn cpu() -> Self {
        NnDevice::Cpu { fallback: None }
    }

    /// Resolves `--device`: `cuda` probes the driver, NVRTC, cuBLAS and a device (and rejects
    /// L-BFGS, which has no GPU version); `auto` returns the CPU with the reason when any of
    /// that fails. `optimizer` is None for evaluation.
    pub fn select(device: Device, optimizer: Option<OptimizerKind>) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self::cpu()),
            Device::Cuda => Self::cuda(optimizer),
            Device::Auto => match Self::cuda(optimizer) {
                Ok(d) => Ok(d),
                Err(e) => Ok(NnDevice::Cpu {
                    fallback: Some(e.to_string()),
                }),
            },
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda(optimizer: Option<OptimizerKind>) -> Result<Self> {
        if optimizer == Some(OptimizerKind::Lbfgs) {
            return Err(Error::Unsupported(
                "--optimizer LBFGS runs on the CPU only (use --device cpu)".into(),
            ));
        }
        let b = crate::backend::cuda::CudaBackend::shared(0)?;
        b.blas()?;
        Ok(NnDevice::Cuda(b))
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda(_optimizer: Option<OptimizerKind>) -> Result<Self> {
        Err(Error::CudaUnavailable(
            "this build of ufm has no CUDA support (rebuild with the default `cuda` feature)"
                .into(),
        ))
    }

    /// Why `--device auto` fell back to the CPU, if it did.
    pub fn fallback(&self) -> Option<&str> {
        match self {
            NnDevice::Cpu { fallback } => fallback.as_deref(),
            #[cfg(feature = "cuda")]
            NnDevice::Cuda(_) => None,
        }
    }

    /// `cpu` or `cuda:0 (<device name>)`.
    pub fn name(&self) -> String {
        match self {
            NnDevice::Cpu { .. } => "cpu".into(),
            #[cfg(feature = "cuda")]
            NnDevice::Cuda(b) => {
                <crate::backend::cuda::CudaBackend as crate::backend::Backend<f32>>::name(b)
            }
        }
    }

    /// True on the CPU.
    pub fn is_cpu(&self) -> bool {
        matches!(self, NnDevice::Cpu { .. })
    }
}
