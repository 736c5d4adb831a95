//! The CUDA kernel registry: every `kernels/*.cu` file embedded as text, with the entry points
//! the Rust side launches, and the one place that spells their names.
//!
//! Compiled with or without the `cuda` feature, so `tests/kernel_manifest.rs` and the NVRTC
//! compile check (`examples/nvrtc_check.rs`) can inspect it on machines without a GPU. Names
//! follow `<op>_<variant>_<dtype>`; the fused UFM kernels carry a class bucket `k8`/`k16`/`k32`
//! (the number of classes they hold in registers, $K\le$ bucket).

/// `kernels/common.cuh`, prepended as text to every module.
pub const COMMON: &str = include_str!("../../kernels/common.cuh");

/// One `.cu` file.
#[derive(Clone, Copy, Debug)]
pub struct KernelModule {
    /// Path relative to the repository root; also the NVRTC program name, so compiler messages
    /// read `kernels/ufm.cu(42): error ...`.
    pub file: &'static str,
    /// The file's text.
    pub source: &'static str,
    /// Every `extern "C"` entry point the Rust side may launch from this file.
    pub entries: &'static [&'static str],
}

impl KernelModule {
    /// The text handed to NVRTC: `common.cuh`, then this file, each behind a `#line` directive
    /// so that errors name the right file and line.
    pub fn full_source(&self) -> String {
        format!(
            "#line 1 \"kernels/common.cuh\"\n{}\n#line 1 \"{}\"\n{}",
            COMMON, self.file, self.source
        )
    }
}

/// Class buckets of the fused kernels.
pub const CLASS_BUCKETS: [usize; 3] = [8, 16, 32];
/// Largest $K$ the fused kernels handle; above it the GEMM path runs.
pub const MAX_FUSED_CLASSES: usize = 32;
/// Losses with GPU kernels (short names as in [`crate::ufm::Loss::short_name`]).
pub const GPU_LOSSES: [&str; 2] = ["ce", "mse"];
/// Element types (`"f32"`, `"f64"`).
pub const DTYPES: [&str; 2] = ["f32", "f64"];

/// The smallest bucket holding `k` classes, if any.
pub fn class_bucket(k: usize) -> Option<usize> {
    CLASS_BUCKETS.iter().copied().find(|&b| k <= b)
}

/// `ufm_fwd_<loss>_k<kb>_<dtype>`: logits, loss and $G$ (one read of $H$).
pub fn fwd(loss: &str, kb: usize, dtype: &str) -> String {
    format!("ufm_fwd_{loss}_k{kb}_{dtype}")
}
/// `ufm_bwd_<grad|step>_k<kb>_<dtype>`: $\nabla_H$ rows (written or applied) and partial $\nabla_W,\nabla_b$.
pub fn bwd(step: bool, kb: usize, dtype: &str) -> String {
    let mode = if step { "step" } else { "grad" };
    format!("ufm_bwd_{mode}_k{kb}_{dtype}")
}
/// `ufm_hvpfwd_<loss>_k<kb>_<dtype>`: $G$ and $Q$ for the Hessian-vector product.
pub fn hvp_fwd(loss: &str, kb: usize, dtype: &str) -> String {
    format!("ufm_hvpfwd_{loss}_k{kb}_{dtype}")
}
/// `ufm_hvpbwd_k<kb>_<dtype>`: Hessian-vector product rows and partials.
pub fn hvp_bwd(kb: usize, dtype: &str) -> String {
    format!("ufm_hvpbwd_k{kb}_{dtype}")
}
/// `ufm_finish_<grad|step>_<dtype>`: reduce partials, add $\lambda x$, write or apply.
pub fn finish(step: bool, dtype: &str) -> String {
    let mode = if step { "step" } else { "grad" };
    format!("ufm_finish_{mode}_{dtype}")
}
/// `ufm_loss_<loss>_<dtype>`: any-$K$ loss on a logit matrix (GEMM path).
pub fn loss(loss: &str, dtype: &str) -> String {
    format!("ufm_loss_{loss}_{dtype}")
}
/// `ufm_axpy_<dtype>`.
pub fn axpy(dtype: &str) -> String {
    format!("ufm_axpy_{dtype}")
}
/// `ufm_sumsq_<dtype>`.
pub fn sumsq(dtype: &str) -> String {
    format!("ufm_sumsq_{dtype}")
}
/// `reduce_class_<sums|ss|scatter>_<dtype>`.
pub fn class_stat(what: &str, dtype: &str) -> String {
    format!("reduce_class_{what}_{dtype}")
}

/// The network-layer kernels of `kernels/nn.cu` (f32 only), by operation.
pub const NN_OPS: [&str; 23] = [
    "im2col",
    "col2im",
    "nchw_to_cnhw",
    "cnhw_to_nchw",
    "bn_stats",
    "bn_eval_stats",
    "bn_fwd",
    "bn_bwd_reduce",
    "bn_bwd_dx",
    "relu_fwd",
    "relu_bwd",
    "axpy",
    "add",
    "bias_rows",
    "colsum",
    "maxpool_fwd",
    "maxpool_bwd",
    "avgpool_fwd",
    "avgpool_bwd",
    "ce",
    "mse",
    "sgd",
    "adam",
];

/// `nn_<op>_f32`: a network-layer kernel of `kernels/nn.cu` (`op` from [`NN_OPS`]).
pub fn nn(op: &str) -> String {
    format!("nn_{op}_f32")
}

/// Every entry-point name the builders above can produce, in module order.
pub fn all_named_entries() -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    for dt in DTYPES {
        for kb in CLASS_BUCKETS {
            for l in GPU_LOSSES {
                v.push((UFM.file, fwd(l, kb, dt)));
                v.push((UFM.file, hvp_fwd(l, kb, dt)));
            }
            v.push((UFM.file, bwd(false, kb, dt)));
            v.push((UFM.file, bwd(true, kb, dt)));
            v.push((UFM.file, hvp_bwd(kb, dt)));
        }
        v.push((UFM.file, finish(false, dt)));
        v.push((UFM.file, finish(true, dt)));
        for l in GPU_LOSSES {
            v.push((UFM.file, loss(l, dt)));
        }
        v.push((UFM.file, axpy(dt)));
        v.push((UFM.file, sumsq(dt)));
        for what in ["sums", "ss", "scatter"] {
            v.push((REDUCE.file, class_stat(what, dt)));
        }
    }
    for op in NN_OPS {
        v.push((NN.file, nn(op)));
    }
    v
}

/// `kernels/ufm.cu`.
pub const UFM: KernelModule = KernelModule {
    file: "kernels/ufm.cu",
    source: include_str!("../../kernels/ufm.cu"),
    entries: &[
        "ufm_fwd_ce_k8_f32",
        "ufm_fwd_ce_k16_f32",
        "ufm_fwd_ce_k32_f32",
        "ufm_fwd_mse_k8_f32",
        "ufm_fwd_mse_k16_f32",
        "ufm_fwd_mse_k32_f32",
        "ufm_fwd_ce_k8_f64",
        "ufm_fwd_ce_k16_f64",
        "ufm_fwd_ce_k32_f64",
        "ufm_fwd_mse_k8_f64",
        "ufm_fwd_mse_k16_f64",
        "ufm_fwd_mse_k32_f64",
        "ufm_bwd_grad_k8_f32",
        "ufm_bwd_grad_k16_f32",
        "ufm_bwd_grad_k32_f32",
        "ufm_bwd_step_k8_f32",
        "ufm_bwd_step_k16_f32",
        "ufm_bwd_step_k32_f32",
        "ufm_bwd_grad_k8_f64",
        "ufm_bwd_grad_k16_f64",
        "ufm_bwd_grad_k32_f64",
        "ufm_bwd_step_k8_f64",
        "ufm_bwd_step_k16_f64",
        "ufm_bwd_step_k32_f64",
        "ufm_hvpfwd_ce_k8_f32",
        "ufm_hvpfwd_ce_k16_f32",
        "ufm_hvpfwd_ce_k32_f32",
        "ufm_hvpfwd_mse_k8_f32",
        "ufm_hvpfwd_mse_k16_f32",
        "ufm_hvpfwd_mse_k32_f32",
        "ufm_hvpfwd_ce_k8_f64",
        "ufm_hvpfwd_ce_k16_f64",
        "ufm_hvpfwd_ce_k32_f64",
        "ufm_hvpfwd_mse_k8_f64",
        "ufm_hvpfwd_mse_k16_f64",
        "ufm_hvpfwd_mse_k32_f64",
        "ufm_hvpbwd_k8_f32",
        "ufm_hvpbwd_k16_f32",
        "ufm_hvpbwd_k32_f32",
        "ufm_hvpbwd_k8_f64",
        "ufm_hvpbwd_k16_f64",
        "ufm_hvpbwd_k32_f64",
        "ufm_finish_grad_f32",
        "ufm_finish_step_f32",
        "ufm_finish_grad_f64",
        "ufm_finish_step_f64",
        "ufm_loss_ce_f32",
        "ufm_loss_mse_f32",
        "ufm_loss_ce_f64",
        "ufm_loss_mse_f64",
        "ufm_axpy_f32",
        "ufm_axpy_f64",
        "ufm_sumsq_f32",
        "ufm_sumsq_f64",
    ],
};

/// `kernels/reduce.cu`.
pub const REDUCE: KernelModule = KernelModule {
    file: "kernels/reduce.cu",
    source: include_str!("../../kernels/reduce.cu"),
    entries: &[
        "reduce_class_sums_f32",
        "reduce_class_sums_f64",
        "reduce_class_ss_f32",
        "reduce_class_ss_f64",
        "reduce_class_scatter_f32",
        "reduce_class_scatter_f64",
    ],
};

/// `kernels/nn.cu`: the network layers for `ufm train --device cuda`.
pub const NN: KernelModule = KernelModule {
    file: "kernels/nn.cu",
    source: include_str!("../../kernels/nn.cu"),
    entries: &[
        "nn_im2col_f32",
        "nn_col2im_f32",
        "nn_nchw_to_cnhw_f32",
        "nn_cnhw_to_nchw_f32",
        "nn_bn_stats_f32",
        "nn_bn_eval_stats_f32",
        "nn_bn_fwd_f32",
        "nn_bn_bwd_reduce_f32",
        "nn_bn_bwd_dx_f32",
        "nn_relu_fwd_f32",
        "nn_relu_bwd_f32",
        "nn_axpy_f32",
        "nn_add_f32",
        "nn_bias_rows_f32",
        "nn_colsum_f32",
        "nn_maxpool_fwd_f32",
        "nn_maxpool_bwd_f32",
        "nn_avgpool_fwd_f32",
        "nn_avgpool_bwd_f32",
        "nn_ce_f32",
        "nn_mse_f32",
        "nn_sgd_f32",
        "nn_adam_f32",
    ],
};

/// All modules.
pub const MODULES: [KernelModule; 3] = [UFM, REDUCE, NN];

/// The module that registers `entry`, if any.
pub fn module_of(entry: &str) -> Option<&'static KernelModule> {
    MODULES.iter().find(|m| m.entries.contains(&entry))
}
