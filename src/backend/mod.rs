//! Compute backends (placeholder while being written).
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod kernels;
