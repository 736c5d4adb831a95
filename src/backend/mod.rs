//! Compute backends: the few operations the UFM solver and the NC metrics need, on the CPU
//! (the reference) or on an NVIDIA GPU through CUDA.
//!
//! For the UFM objective (Zhu et al., NeurIPS 2021, eq. (4); layout as in
//! [`crate::ufm::problem`])
//! $$f(W,H,b)=\frac1N\sum_{i=1}^N\ell(Wh_i+b,y_i)+\frac{\lambda_W}2\lVert W\rVert_F^2+\frac{\lambda_H}2\lVert H\rVert_F^2+\frac{\lambda_b}2\lVert b\rVert_2^2$$
//! a [`Backend`] evaluates $f$, $\nabla f$, the fused step $x\leftarrow x-\eta\nabla f(x)$ and the
//! Hessian-vector product $\nabla^2f(x)\,v$ on vectors it holds ([`Backend::Buffer`]), and the
//! class statistics behind the NC metrics ([`crate::metrics::stats`]): counts $n_k$, means
//! $\mu_k$, $\sum_{y_i=k}\lVert h_i-\mu_k\rVert^2$ and the within-class scatter
//! $\sum_i(h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top$.
//!
//! * [`CpuBackend`] delegates to [`UfmProblem`]'s fused, blocked CPU code and to
//!   [`ClassStats`](crate::metrics::ClassStats): it is the reference every other backend is
//!   tested against (`tests/cuda_parity.rs`).
//! * `cuda::CudaBackend` (feature `cuda`, on by default) runs the kernels in `kernels/`,
//!   compiled by NVRTC at run time, and cuBLAS GEMMs. It supports the cross-entropy and MSE
//!   losses, any $K$ for value/gradient/step (fused kernels for $K\le32$, cuBLAS above) and
//!   $K\le32$ for the Hessian-vector product. Building needs no CUDA; at run time a missing
//!   driver, NVRTC or GPU is an [`Error::CudaUnavailable`] naming what is missing, never a
//!   panic.
//!
//! [`BackendObjective`] turns a backend into a solver [`Objective`], so every optimizer
//! (fixed-step GD with the fused step, backtracking GD, L-BFGS, trust-region Newton) runs on it
//! through the usual [`Executor`](crate::solver::Executor). The executor owns the iterate on
//! the host, so each objective call copies $x$ to the device (and the gradient or the new $x$
//! back): on a GPU the PCIe transfer, not the kernels, bounds an end-to-end iteration.
//! [`solve`] is [`crate::solver::solve`] with a [`Device`] choice.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod kernels;

mod cpu;
pub use cpu::CpuBackend;

use crate::error::{Error, Result};
use crate::metrics::FeatureStats;
use crate::real::Real;
use crate::solver::driver::{SolveOutcome, SolveSpec};
use crate::solver::Objective;
use crate::ufm::UfmProblem;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::Mutex;

/// The operations the UFM solver and the metrics need. Every method returns `Result`.
///
/// Vectors live in [`Buffer`](Self::Buffer)s (host `Vec`s on the CPU, device memory on a GPU);
/// UFM vectors have the layout $x=(W,H^\top,b)$ of [`UfmProblem::split`].
pub trait Backend<T: Real>: Sync {
    /// A vector held by the backend.
    type Buffer: Send;
    /// Human-readable name, e.g. `cpu` or `cuda:0 (NVIDIA H200)`.
    fn name(&self) -> String;
    /// A zero-filled buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buffer>;
    /// Copies `src` into `dst` (lengths must agree).
    fn upload_into(&self, src: &[T], dst: &mut Self::Buffer) -> Result<()>;
    /// Copies `src` into `dst` (lengths must agree).
    fn download(&self, src: &Self::Buffer, dst: &mut [T]) -> Result<()>;
    /// A new buffer holding `src`.
    fn upload(&self, src: &[T]) -> Result<Self::Buffer> {
        let mut b = self.alloc(src.len())?;
        self.upload_into(src, &mut b)?;
        Ok(b)
    }
    /// Waits until queued work has finished.
    fn synchronize(&self) -> Result<()>;
    /// Checks that the backend implements `p` (its loss, its number of classes), and with
    /// `hvp` also the Hessian-vector product.
    fn supports(&self, p: &UfmProblem, hvp: bool) -> Result<()>;
    /// $f(x)$.
    fn value(&self, p: &UfmProblem, x: &Self::Buffer) -> Result<f64>;
    /// $f(x)$, with $\nabla f(x)$ written into `grad`.
    fn value_grad(&self, p: &UfmProblem, x: &Self::Buffer, grad: &mut Self::Buffer) -> Result<f64>;
    /// One step $x\leftarrow x-\eta\nabla f(x)$; returns $f$ and $\lVert\nabla f\rVert$ at the
    /// point before the step.
    fn gd_step(&self, p: &UfmProblem, x: &mut Self::Buffer, lr: T) -> Result<(f64, f64)>;
    /// $\nabla^2f(x)\,v$ into `out`.
    fn hvp(
        &self,
        p: &UfmProblem,
        x: &Self::Buffer,
        v: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()>;
    /// Class statistics (with the $d\times d$ scatter) of `rows` features of dimension `d`
    /// stored row-major in `features`, with `labels` in `0..k`.
    fn class_stats(
        &self,
        features: &Self::Buffer,
        rows: usize,
        d: usize,
        labels: &[u32],
        k: usize,
    ) -> Result<FeatureStats>;
}

/// Where to compute: `--device auto|cpu|cuda`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when a usable GPU is found and the problem is supported, else the CPU.
    Auto,
    /// The CPU (reference implementation).
    #[default]
    Cpu,
    /// CUDA device 0; an error when unavailable.
    Cuda,
}

impl FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            o => Err(Error::param(
                "device",
                format!("unknown device `{o}`; expected auto, cpu or cuda"),
            )),
        }
    }
}

/// A solver [`Objective`] evaluated by a [`Backend`] (see the [module docs](self) for the
/// transfer cost). The first backend error is kept: [`take_error`](Self::take_error) returns
/// it, and the objective reports NaN so that the executor stops.
pub struct BackendObjective<'a, T: Real, B: Backend<T>> {
    p: &'a UfmProblem,
    backend: &'a B,
    bufs: Mutex<Option<Bufs<B::Buffer>>>,
    error: Mutex<Option<Error>>,
}

struct Bufs<Buf> {
    x: Buf,
    a: Buf,
    b: Buf,
}

impl<'a, T: Real, B: Backend<T>> BackendObjective<'a, T, B> {
    /// Wraps `backend` for problem `p`.
    pub fn new(p: &'a UfmProblem, backend: &'a B) -> Self {
        BackendObjective {
            p,
            backend,
            bufs: Mutex::new(None),
            error: Mutex::new(None),
        }
    }

    /// The first error a backend call returned, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }

    fn record(&self, e: Error) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
    }

    /// Runs `f` on the device buffers, with `x` uploaded first when given.
    fn with_bufs<R>(
        &self,
        x: Option<&[T]>,
        f: impl FnOnce(&mut Bufs<B::Buffer>) -> Result<R>,
    ) -> Result<R> {
        if let Some(x) = x {
            self.p.check_len("point", x)?;
        }
        let mut guard = self.bufs.lock().map_err(|_| Error::Cuda {
            context: "backend objective".into(),
            reason: "buffer lock poisoned".into(),
        })?;
        if guard.is_none() {
            let n = self.p.n_params();
            *guard = Some(Bufs {
                x: self.backend.alloc(n)?,
                a: self.backend.alloc(n)?,
                b: self.backend.alloc(n)?,
            });
        }
        let bufs = guard.as_mut().expect("allocated above");
        if let Some(x) = x {
            self.backend.upload_into(x, &mut bufs.x)?;
        }
        f(bufs)
    }
}

impl<T: Real, B: Backend<T>> Objective<T> for BackendObjective<'_, T, B> {
    fn dim(&self) -> usize {
        self.p.n_params()
    }
    fn value(&self, x: &[T]) -> T {
        match self.with_bufs(Some(x), |b| self.backend.value(self.p, &b.x)) {
            Ok(f) => T::of(f),
            Err(e) => {
                self.record(e);
                T::nan()
            }
        }
    }
    fn value_grad(&self, x: &[T], grad: &mut [T]) -> T {
        let r = self.with_bufs(Some(x), |b| {
            let f = self.backend.value_grad(self.p, &b.x, &mut b.a)?;
            self.backend.download(&b.a, grad)?;
            Ok(f)
        });
        match r {
            Ok(f) => T::of(f),
            Err(e) => {
                self.record(e);
                grad.fill(T::nan());
                T::nan()
            }
        }
    }
    fn hvp(&self, x: &[T], v: &[T], out: &mut [T]) -> Result<()> {
        self.p.check_len("direction", v)?;
        self.p.check_len("output", out)?;
        self.with_bufs(Some(x), |b| {
            self.backend.upload_into(v, &mut b.a)?;
            self.backend.hvp(self.p, &b.x, &b.a, &mut b.b)?;
            self.backend.download(&b.b, out)
        })
    }
    fn fused_gd_step(&self, x: &mut [T], lr: T) -> Option<(T, f64)> {
        let r = self
            .with_bufs(Some(&*x), |b| self.backend.gd_step(self.p, &mut b.x, lr))
            .and_then(|fg| {
                self.with_bufs(None, |b| self.backend.download(&b.x, x))?;
                Ok(fg)
            });
        match r {
            Ok((f, gn)) => Some((T::of(f), gn)),
            Err(e) => {
                self.record(e);
                Some((T::nan(), f64::NAN))
            }
        }
    }
}

/// [`crate::solver::solve`] on a chosen device. Returns the outcome (the same summary, JSON
/// and trace as on the CPU), the name of the device that ran, and, for [`Device::Auto`] when it
/// fell back to the CPU, the reason (the caller prints it once).
pub fn solve(
    p: &UfmProblem,
    spec: &SolveSpec,
    start: Option<Vec<f64>>,
    device: Device,
) -> Result<(SolveOutcome, String, Option<String>)> {
    let needs_hvp = matches!(spec.optimizer, crate::solver::OptimizerSpec::Newton { .. });
    match device {
        Device::Cpu => Ok((crate::solver::solve(p, spec, start)?, "cpu".into(), None)),
        Device::Cuda => {
            let out = solve_cuda(p, spec, start, needs_hvp)?;
            Ok((out.0, out.1, None))
        }
        Device::Auto => match cuda_usable(p, needs_hvp) {
            Ok(()) => {
                let out = solve_cuda(p, spec, start, needs_hvp)?;
                Ok((out.0, out.1, None))
            }
            Err(e) => Ok((
                crate::solver::solve(p, spec, start)?,
                "cpu".into(),
                Some(e.to_string()),
            )),
        },
    }
}

/// An element type the CUDA kernels exist for (`f32`, `f64`).
pub trait DeviceReal: Real {
    /// Class statistics on CUDA device 0; returns them and the device name.
    fn cuda_class_stats(
        x: &[Self],
        rows: usize,
        d: usize,
        labels: &[u32],
        k: usize,
    ) -> Result<(FeatureStats, String)>;
}

macro_rules! device_real {
    ($t:ty) => {
        impl DeviceReal for $t {
            #[cfg(feature = "cuda")]
            fn cuda_class_stats(
                x: &[Self],
                rows: usize,
                d: usize,
                labels: &[u32],
                k: usize,
            ) -> Result<(FeatureStats, String)> {
                let b = cuda::CudaBackend::shared(0)?;
                let buf = Backend::<$t>::upload(b.as_ref(), x)?;
                let st = Backend::<$t>::class_stats(b.as_ref(), &buf, rows, d, labels, k)?;
                Ok((st, Backend::<$t>::name(b.as_ref())))
            }
            #[cfg(not(feature = "cuda"))]
            fn cuda_class_stats(
                _x: &[Self],
                _rows: usize,
                _d: usize,
                _labels: &[u32],
                _k: usize,
            ) -> Result<(FeatureStats, String)> {
                Err(no_cuda_feature())
            }
        }
    };
}
device_real!(f32);
device_real!(f64);

/// Class statistics (counts, means, per-class sums of squares, the within-class scatter) of
/// the rows of `features` on a chosen device: the entry point for `ufm metrics --device`.
/// Returns the statistics, the device that computed them and, for [`Device::Auto`] when it
/// fell back to the CPU, the reason.
pub fn class_stats<T: DeviceReal>(
    features: ndarray::ArrayView2<T>,
    labels: &[u32],
    k: usize,
    device: Device,
) -> Result<(FeatureStats, String, Option<String>)> {
    let (rows, d) = features.dim();
    let cpu = || -> Result<FeatureStats> {
        let mut acc = crate::metrics::ClassStats::new(k, d);
        acc.push(features, labels)?;
        acc.finish()
    };
    let on_cuda = || -> Result<(FeatureStats, String)> {
        if let Some(i) = features
            .outer_iter()
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            return Err(Error::NonFinite {
                what: format!("feature row {i}"),
            });
        }
        match features.as_slice() {
            Some(x) => T::cuda_class_stats(x, rows, d, labels, k),
            None => {
                let owned = features.as_standard_layout().into_owned();
                T::cuda_class_stats(
                    owned.as_slice().expect("standard layout"),
                    rows,
                    d,
                    labels,
                    k,
                )
            }
        }
    };
    match device {
        Device::Cpu => Ok((cpu()?, "cpu".into(), None)),
        Device::Cuda => on_cuda().map(|(s, n)| (s, n, None)),
        Device::Auto => match on_cuda() {
            Ok((s, n)) => Ok((s, n, None)),
            Err(e @ (Error::CudaUnavailable(_) | Error::Unsupported(_))) => {
                Ok((cpu()?, "cpu".into(), Some(e.to_string())))
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(feature = "cuda")]
fn cuda_usable(p: &UfmProblem, hvp: bool) -> Result<()> {
    let b = cuda::CudaBackend::shared(0)?;
    <cuda::CudaBackend as Backend<f64>>::supports(&b, p, hvp)
}

#[cfg(not(feature = "cuda"))]
fn cuda_usable(_p: &UfmProblem, _hvp: bool) -> Result<()> {
    Err(no_cuda_feature())
}

#[cfg(not(feature = "cuda"))]
fn no_cuda_feature() -> Error {
    Error::CudaUnavailable(
        "this build of ufm has no CUDA support (rebuild with the default `cuda` feature)".into(),
    )
}

#[cfg(feature = "cuda")]
fn solve_cuda(
    p: &UfmProblem,
    spec: &SolveSpec,
    start: Option<Vec<f64>>,
    hvp: bool,
) -> Result<(SolveOutcome, String)> {
    let b = cuda::CudaBackend::shared(0)?;
    <cuda::CudaBackend as Backend<f64>>::supports(&b, p, hvp)?;
    let o64 = BackendObjective::<f64, _>::new(p, b.as_ref());
    let o32 = BackendObjective::<f32, _>::new(p, b.as_ref());
    let r = crate::solver::driver::solve_with(
        p,
        spec,
        start,
        crate::solver::driver::Objectives {
            f64: &o64,
            f32: &o32,
        },
    );
    // A device error surfaces as a NaN objective; report the device error, not "diverged".
    if let Some(e) = o64.take_error().or_else(|| o32.take_error()) {
        return Err(e);
    }
    Ok((r?, <cuda::CudaBackend as Backend<f64>>::name(&b)))
}

#[cfg(not(feature = "cuda"))]
fn solve_cuda(
    _p: &UfmProblem,
    _spec: &SolveSpec,
    _start: Option<Vec<f64>>,
    _hvp: bool,
) -> Result<(SolveOutcome, String)> {
    Err(no_cuda_feature())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_stats_on_cpu_and_auto_agree_with_the_accumulator() {
        let x =
            ndarray::Array2::from_shape_fn((30, 4), |(i, j)| ((i * 7 + j * 3) % 11) as f64 - 5.0);
        let labels: Vec<u32> = (0..30).map(|i| (i % 3) as u32).collect();
        let (cpu, name, fb) = class_stats(x.view(), &labels, 3, Device::Cpu).unwrap();
        assert_eq!((name.as_str(), fb), ("cpu", None));
        let (auto, name, fb) = class_stats(x.view(), &labels, 3, Device::Auto).unwrap();
        // Without a GPU `auto` falls back and says why; with one the GPU must agree.
        assert!(name != "cpu" || fb.is_some());
        let scale = cpu
            .scatter
            .as_ref()
            .unwrap()
            .iter()
            .fold(0.0f64, |a, v| a.max(v.abs()));
        let diff = (cpu.scatter.as_ref().unwrap() - auto.scatter.as_ref().unwrap())
            .iter()
            .fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(diff <= 1e-10 * scale, "{diff}");
        assert_eq!(cpu.counts, auto.counts);
        // A label out of range is a data error on every device.
        let mut bad = labels.clone();
        bad[4] = 7;
        for dev in [Device::Cpu, Device::Auto] {
            let e = class_stats(x.view(), &bad, 3, dev).unwrap_err().to_string();
            assert!(e.contains("label 7"), "{e}");
        }
    }

    #[test]
    fn device_names_parse_and_unknown_is_an_error() {
        assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda);
        let e = "tpu".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("device") && e.contains("tpu"), "{e}");
    }
}
