//! CUDA backend (placeholder while being written).
pub mod nvrtc;
