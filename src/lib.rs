//! # `ufm`: the unconstrained feature model and neural collapse
//!
//! The unconstrained feature model (UFM) treats the last-layer features of a network as free
//! variables. With $K$ classes of $n_k$ samples ($N=\sum_kn_k$), classifier
//! $W\in\mathbb R^{K\times d}$, features $H=[h_1,\dots,h_N]\in\mathbb R^{d\times N}$ and bias
//! $b\in\mathbb R^K$ it minimises
//! $$f(W,H,b)=\frac1N\sum_{i=1}^N\ell(Wh_i+b,y_i)+\frac{\lambda_W}2\lVert W\rVert_F^2+\frac{\lambda_H}2\lVert H\rVert_F^2+\frac{\lambda_b}2\lVert b\rVert_2^2 .$$
//! Zhu et al. (NeurIPS 2021, *A Geometric Analysis of Neural Collapse with Unconstrained
//! Features*) show that for cross-entropy every global minimizer is a simplex ETF with
//! collapsed features (neural collapse) and every other critical point is a strict saddle.
//!
//! This crate solves UFM instances fast, certifies answers against the closed forms, and
//! measures neural-collapse metrics.
//!
//! | module | what it holds |
//! |---|---|
//! | [`ufm`] | problem definition, losses, objective/gradient/Hessian-vector product, closed forms, ETFs |
//! | [`solver`] | gradient descent, L-BFGS, trust-region Newton-CG, executor and trace observers |
//! | [`landscape`] | Hessian spectra, strict saddles, saddle escape, random-init sweeps |
//! | [`deep`] | deep linear UFM (certified closed-form optimum) and deep ReLU UFM (DNC vs low-rank SRG configuration) |
//! | [`certify`] | convex nuclear-norm reformulation, FISTA + SVT with a certified duality gap, balanced factorization, minority-collapse sweep |
//! | [`metrics`] | streaming class statistics and the NC metrics |
//! | [`features`] | reading features, labels and classifiers from `.npy` (streamed), `.npz`, `.safetensors` |
//! | [`npy`] | strict `.npy` header parser and checked `.npz` (zip) reader: sizes, names, CRC-32 |
//! | [`backend`] | `Backend` trait: CPU reference and CUDA (NVRTC kernels in `kernels/`, cuBLAS), `--device` |
//! | [`nn`] | network training with hand-written layers (MLP, ResNet-18), data sets, `ufm train`/`validate` |
//! | [`linalg`] | faer-backed symmetric eigensolver and SVD |
//! | [`limits`] | memory estimates checked before large allocations |
//! | [`par`] | deterministic parallel reductions (fixed partition, partial sums combined in order) |
//! | [`io`] | atomic writes (exclusive temporary files, stale-temp cleanup), run-directory locks, `.npz` export and import of UFM points |
//! | [`plot`] | PNG + SVG figures with an embedded font |
//! | [`geometry`] | one-vs-rest margins for $K>d+1$ (Wolfe's exact min-norm point, certified) and exact spherical codes (icosahedron, $E_8$, Higman–Sims, McLaughlin) |
//! | [`seli`] | the SELI geometry of imbalanced classes and the distance of certified optima to it |
//! | [`regression`] | the regression UFM and its closed form (NRC metrics in [`metrics::nrc`]) |
//! | [`sphere`] | the normalized UFM on spheres: Riemannian gradient/Hessian, trust region, certificates |
//!
//! Everything numerical is generic over [`Real`] (`f64` for theory checks, `f32` for speed).
//!
//! Feature `cuda` (on by default) adds the CUDA backend. It needs nothing CUDA to build: the
//! driver, NVRTC and cuBLAS are loaded at run time, and their absence is an error value
//! ([`Error::CudaUnavailable`]), never a panic.
//!
//! ```
//! use ufm::solver::{Executor, Lbfgs};
//! use ufm::ufm::{global_minimum, UfmConfig};
//!
//! let p = UfmConfig::balanced(4, 10, 8).lambdas(5e-3, 5e-3, 5e-3).build()?;
//! let mut x: Vec<f64> = p.random_point(0, 1.0)?;
//! let report = Executor { tol: 1e-9, ..Default::default() }.run(&p, &mut Lbfgs::new(10)?, &mut x, &mut [])?;
//! let fstar = global_minimum(&p).unwrap().objective;
//! assert!((report.objective - fstar).abs() < 1e-8 * fstar);
//! # Ok::<(), ufm::Error>(())
//! ```

#![warn(missing_docs)]
// Numeric code: `!(x > 0.0)` deliberately treats NaN as failing; index loops mirror the formulas.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::needless_range_loop)]

pub mod backend;
pub mod certify;
pub mod deep;
pub mod error;
pub mod features;
pub mod geometry;
pub mod io;
pub mod landscape;
pub mod limits;
pub mod linalg;
pub mod metrics;
pub mod nn;
pub mod npy;
pub mod par;
pub mod plot;
pub mod real;
pub mod regression;
pub mod seli;
pub mod solver;
pub mod sphere;
pub mod ufm;

pub use error::{Error, Result};
pub use real::Real;
