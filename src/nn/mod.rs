//! Network training with hand-written layers (no PyTorch), to check neural collapse on real
//! networks as the original code does (Zhu et al., NeurIPS 2021, *A Geometric Analysis of
//! Neural Collapse with Unconstrained Features*; code `tding1/Neural-Collapse`).
//!
//! A network is a feature map and a linear classifier, trained on
//! $$\min_{\Theta,W,b}\ \frac1N\sum_{i=1}^N\ell\big(W\phi_\Theta(x_i)+b,\,y_i\big)+\frac\lambda2\big(\lVert\Theta\rVert^2+\lVert W\rVert_F^2+\lVert b\rVert^2\big),$$
//! whose last-layer features $h_i=\phi_\Theta(x_i)$ the UFM treats as free variables.
//!
//! | module | what it holds |
//! |---|---|
//! | [`data`] | MNIST (IDX), CIFAR-10 (binary), random labels, preprocessing, augmentation |
//! | [`download`] | `--download`: official files over HTTP(S), md5-verified, moved into place atomically |
//! | [`layers`] | linear, conv2d, batch norm, ReLU, pooling, losses: forward + backward |
//! | [`models`] | MLP, ResNet-18 (torchvision / CIFAR stem / fixdim), `ResNet18_adapt`, ETF classifier |
//! | [`optim`] | SGD, Adam (coupled weight decay), L-BFGS as `torch.optim.LBFGS`, StepLR / MultiStepLR |
//! | [`checkpoint`] | safetensors state dicts with PyTorch names |
//! | [`cuda`] | the same layers as CUDA kernels: `ufm train/validate --device cuda` |
//! | [`train`] | the training loop behind `ufm train` |
//! | [`validate`] | NC metrics and accuracies per checkpoint (`ufm validate`) |

pub mod checkpoint;
pub mod cuda;
pub mod data;
pub mod download;
pub mod layers;
pub mod models;
pub mod optim;
pub mod train;
pub mod validate;

/// Asks the C allocator to keep freed memory for reuse instead of returning it to the
/// operating system; returns whether it took the settings (glibc on Linux only; elsewhere it
/// does nothing and returns `false`). Process-wide: `ufm train`, `ufm validate` and the
/// training benchmarks call it at start-up; the library never calls it by itself.
///
/// A training step allocates and frees tensors of tens of MiB (a CIFAR ResNet-18 batch of 128
/// at 64 × 32 × 32 is 32 MiB per activation). glibc serves blocks above its mmap threshold
/// (at most 32 MiB) with a fresh `mmap` and unmaps them on `free`, so every step page-faults
/// and zeroes them again: 15 % of a CIFAR-stem ResNet-18 step on this project's 2-core test
/// machine. With `M_MMAP_MAX = 0` (large blocks from the heap), `M_TRIM_THRESHOLD` at its
/// maximum (the heap is not trimmed) and `M_TOP_PAD` of 64 MiB (fewer heap extensions), freed
/// blocks are reused. The cost: the process keeps its peak memory until it exits.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// On glibc the allocator accepts the settings (elsewhere the call is a documented no-op),
    /// and allocations still work afterwards, large ones included.
    #[test]
    fn keep_freed_memory_takes_on_glibc() {
        let took = super::keep_freed_memory();
        assert_eq!(took, cfg!(all(target_os = "linux", target_env = "gnu")));
        for _ in 0..3 {
            let v = vec![1u8; 48 << 20];
            assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 48 << 20);
        }
    }
}
