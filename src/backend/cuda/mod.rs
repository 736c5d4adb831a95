//! The CUDA backend: context and probe, NVRTC module cache, scratch buffers, kernel launches
//! and cuBLAS GEMMs (cudarc with run-time library loading: nothing CUDA is needed to build).
//!
//! One fused gradient step at $K\le32$ runs three kernels (see `kernels/ufm.cu`):
//! $Z=HW^\top+\mathbf1b^\top$, the loss and $G=\nabla_Z\ell/N$ (reads $H$ once); then
//! $\nabla_{h_i}f=\lambda_Hh_i+W^\top g_i$ applied in place with the per-block partials of
//! $\nabla_Wf=G^\top H$ and $\nabla_bf=G^\top\mathbf 1$ (reads $H$ again, writes it once); then
//! the reduction of the partials and the $W$, $b$ update. Above $K=32$ (and as the benchmark
//! baseline, [`CudaBackend::gd_step_gemm`]) the textbook form runs: three cuBLAS GEMMs
//! ($HW^\top$, $G^\top H$, $GW$) plus small kernels.
//!
//! Probing: cudarc *panics* when a CUDA library is missing, so [`CudaBackend::new`] first
//! asks the dynamic loader (`is_culib_present`) for `libcuda.so.1` and `libnvrtc.so.13` and
//! turns absence, or a driver without devices, into [`Error::CudaUnavailable`].

pub mod nvrtc;

use super::kernels::{self, KernelModule};
use super::Backend;
use crate::error::{Error, Result};
use crate::metrics::FeatureStats;
use crate::real::Real;
use crate::ufm::{Loss, UfmProblem};
use cudarc::cublas::result::CublasError;
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr,
    DevicePtrMut, DeviceRepr, DriverError, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Threads per block of every 1-D launch (8 warps).
const THREADS: u32 = 256;

/// An element type with device kernels: `f32` or `f64`.
pub trait GpuReal: Real + DeviceRepr + ValidAsZeroBits + Unpin {
    /// This type's scratch slot in the backend.
    #[doc(hidden)]
    fn scratch(b: &CudaBackend) -> &Mutex<Option<Scratch<Self>>>;
    /// cuBLAS `gemm` for this type (column-major).
    ///
    /// # Safety
    /// Sizes and leading dimensions in `cfg` must fit the buffers.
    #[doc(hidden)]
    unsafe fn gemm<A: DevicePtr<Self>, B: DevicePtr<Self>, C: DevicePtrMut<Self>>(
        blas: &CudaBlas,
        cfg: GemmConfig<Self>,
        a: &A,
        b: &B,
        c: &mut C,
    ) -> std::result::Result<(), CublasError>;
}

/// `GpuReal` for one precision: its scratch slot in the backend and cuBLAS's GEMM for it.
macro_rules! gpu_real {
    ($t:ty, $slot:ident) => {
        impl GpuReal for $t {
            fn scratch(b: &CudaBackend) -> &Mutex<Option<Scratch<$t>>> {
                &b.$slot
            }
            unsafe fn gemm<A: DevicePtr<$t>, B: DevicePtr<$t>, C: DevicePtrMut<$t>>(
                blas: &CudaBlas,
                cfg: GemmConfig<$t>,
                a: &A,
                b: &B,
                c: &mut C,
            ) -> std::result::Result<(), CublasError> {
                // SAFETY: forwarded contract (sizes checked by the caller).
                unsafe { Gemm::<$t>::gemm(blas, cfg, a, b, c) }
            }
        }
    };
}
gpu_real!(f32, s32);
gpu_real!(f64, s64);

/// Per-problem device buffers (labels and scratch), reused across calls.
#[doc(hidden)]
pub struct Scratch<T> {
    key: (Vec<usize>, usize),
    labels: CudaSlice<u32>,
    /// $G$ (or the logits on the GEMM path), $N\times K$.
    g: CudaSlice<T>,
    /// $Q$ for the HVP, $N\times K$.
    q: Option<CudaSlice<T>>,
    /// Per-block partial $\nabla_W$ rows: `rb x K x d`.
    part_w: CudaSlice<T>,
    /// Per-block partial $\nabla_b$ rows: `rb x K`.
    part_b: CudaSlice<T>,
    /// Per-block f64 partial sums of every launch of one pass.
    partials: CudaSlice<f64>,
    /// Copy of $W$ read by the in-place step kernel ($K\times d$).
    w_copy: CudaSlice<T>,
    /// $\nabla_H$ for the GEMM step ($N\times d$), allocated on first use.
    gh: Option<CudaSlice<T>>,
    /// $\mathbf 1\in\mathbb R^N$ for $G^\top\mathbf 1$ on the GEMM path.
    ones: Option<CudaSlice<T>>,
}

/// A CUDA device with its stream, compiled modules and cuBLAS handle.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    arch: String,
    sms: usize,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    funcs: Mutex<HashMap<String, CudaFunction>>,
    blas: Mutex<Option<Arc<CudaBlas>>>,
    s32: Mutex<Option<Scratch<f32>>>,
    s64: Mutex<Option<Scratch<f64>>>,
}

fn drv(context: impl Into<String>) -> impl FnOnce(DriverError) -> Error {
    let context = context.into();
    move |e| Error::Cuda {
        context,
        reason: format!("{e:?}"),
    }
}

fn blas_err(context: &str) -> impl FnOnce(CublasError) -> Error + '_ {
    move |e| Error::Cuda {
        context: context.to_string(),
        reason: format!("{e:?}"),
    }
}

fn lock<'a, X>(m: &'a Mutex<X>, what: &str) -> Result<MutexGuard<'a, X>> {
    m.lock().map_err(|_| Error::Cuda {
        context: what.into(),
        reason: "lock poisoned by a panicking thread".into(),
    })
}

/// Whether the driver library `libcuda.so.1` can be loaded (never panics).
pub fn driver_present() -> bool {
    // SAFETY: only asks the dynamic loader whether the library exists; no CUDA call is made.
    std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false)
}

/// Whether cuBLAS (`libcublas.so.13`) can be loaded (never panics).
pub fn cublas_present() -> bool {
    // SAFETY: as for `driver_present`.
    std::panic::catch_unwind(|| unsafe { cudarc::cublas::sys::is_culib_present() }).unwrap_or(false)
}

/// Checks that a CUDA device can be used: driver library, NVRTC, at least `ordinal + 1`
/// devices. Returns the device count.
pub fn probe(ordinal: usize) -> Result<usize> {
    if !driver_present() {
        return Err(Error::CudaUnavailable(
            "the NVIDIA driver library libcuda.so.1 was not found by the dynamic loader (no NVIDIA driver installed on this machine?)".into(),
        ));
    }
    if !nvrtc::nvrtc_present() {
        return Err(nvrtc::nvrtc_missing());
    }
    let count = std::panic::catch_unwind(CudaContext::device_count)
        .map_err(|_| {
            Error::CudaUnavailable(
                "the CUDA driver library could not be used (too old for CUDA 13? driver >= 580 is required)".into(),
            )
        })?
        .map_err(|e| {
            Error::CudaUnavailable(format!(
                "no usable CUDA device: the driver reports {e:?} (no GPU, or no permission to use it)"
            ))
        })?;
    let count = count.max(0) as usize;
    if count == 0 {
        return Err(Error::CudaUnavailable(
            "no CUDA device found (the driver reports 0 devices)".into(),
        ));
    }
    if ordinal >= count {
        return Err(Error::CudaUnavailable(format!(
            "CUDA device {ordinal} requested but only {count} device(s) exist"
        )));
    }
    Ok(count)
}

fn as_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::Unsupported(format!(
            "{what} = {v} exceeds the CUDA kernels' 32-bit index range"
        ))
    })
}

/// Sums of the even and odd entries of per-block `(a, b)` pairs.
fn pair_sums(v: &[f64]) -> (f64, f64) {
    v.chunks_exact(2)
        .fold((0.0, 0.0), |(a, b), c| (a + c[0], b + c[1]))
}

/// The point of a pass: read only (gradient, value) or updated in place by a step.
enum X<'a, T> {
    Read(&'a CudaSlice<T>),
    Step(&'a mut CudaSlice<T>, T),
}

impl<'a, T: GpuReal> X<'a, T> {
    fn is_step(&self) -> bool {
        matches!(self, X::Step(..))
    }
    fn lr(&self) -> T {
        match self {
            X::Step(_, lr) => *lr,
            X::Read(_) => T::zero(),
        }
    }
    fn len(&self) -> usize {
        match self {
            X::Read(x) => x.len(),
            X::Step(x, _) => x.len(),
        }
    }
    /// A read-only view of `range`.
    fn view(&self, range: std::ops::Range<usize>) -> CudaView<'_, T> {
        match self {
            X::Read(x) => x.slice(range),
            X::Step(x, _) => x.slice(range),
        }
    }
}

/// Launch geometry of one UFM pass.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    /// Blocks of the forward kernels.
    fwd: usize,
    /// Row blocks of the backward kernels (grid `(rb, yt)`).
    rb: usize,
    /// Column tiles of 32 (`ceil(d / 32)`).
    yt: usize,
    /// Blocks of the finish kernel for $W$ and for $b$.
    fin_w: usize,
    fin_b: usize,
}

impl Geometry {
    fn new(sms: usize, n: usize, d: usize, k: usize, rows_per_warp: usize) -> Self {
        let warps = THREADS as usize / 32;
        let yt = d.div_ceil(32);
        Geometry {
            fwd: n.div_ceil(warps * rows_per_warp).clamp(1, 16 * sms),
            // About one wave: 4 blocks of 8 warps per multiprocessor, each warp taking 4 rows
            // per iteration.
            rb: n
                .div_ceil(4 * warps)
                .clamp(1, (4 * sms).div_ceil(yt).max(1)),
            yt,
            fin_w: (k * d).div_ceil(THREADS as usize).clamp(1, 2 * sms),
            fin_b: k.div_ceil(THREADS as usize).clamp(1, 2 * sms),
        }
    }
    /// Offsets of the partial-sum sections: fwd (2 per block), bwd (1 per block),
    /// finish W (2 per block), finish b (2 per block); and the total.
    fn offsets(&self) -> [usize; 5] {
        let a = 2 * self.fwd;
        let b = a + self.rb * self.yt;
        let c = b + 2 * self.fin_w;
        let d = c + 2 * self.fin_b;
        [0, a, b, c, d]
    }
    /// Rows per warp of the forward kernels (mirrors `UfmRows` in kernels/ufm.cu).
    fn rows_per_warp(elem_bytes: usize, kb: usize, hvp: bool) -> usize {
        let base = if elem_bytes == 4 { 64 } else { 32 };
        (base / if hvp { 2 } else { 1 } / kb).max(1)
    }
}

impl CudaBackend {
    /// Opens CUDA device `ordinal` after probing for the driver, NVRTC and the device.
    pub fn new(ordinal: usize) -> Result<Self> {
        probe(ordinal)?;
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| Error::CudaUnavailable("creating a CUDA context panicked".into()))?
            .map_err(drv(format!("creating a context on device {ordinal}")))?;
        // SAFETY: every buffer of this backend is used on its single stream only, so the
        // cross-stream event tracking cudarc does by default is unnecessary.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let dev_name = ctx.name().map_err(drv("device name"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(drv("compute capability"))?;
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(drv("multiprocessor count"))?
            .max(1) as usize;
        Ok(CudaBackend {
            ctx,
            stream,
            name: format!("cuda:{ordinal} ({dev_name})"),
            arch: format!("compute_{major}{minor}"),
            sms,
            modules: Mutex::new(HashMap::new()),
            funcs: Mutex::new(HashMap::new()),
            blas: Mutex::new(None),
            s32: Mutex::new(None),
            s64: Mutex::new(None),
        })
    }

    /// The process-wide backend for device `ordinal` (created on first use, so kernels are
    /// compiled once per process).
    pub fn shared(ordinal: usize) -> Result<Arc<CudaBackend>> {
        static ALL: OnceLock<Mutex<HashMap<usize, Arc<CudaBackend>>>> = OnceLock::new();
        let all = ALL.get_or_init(|| Mutex::new(HashMap::new()));
        let mut g = lock(all, "device table")?;
        if let Some(b) = g.get(&ordinal) {
            return Ok(b.clone());
        }
        let b = Arc::new(CudaBackend::new(ordinal)?);
        g.insert(ordinal, b.clone());
        Ok(b)
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    /// The stream every launch of this backend goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    /// The device's NVRTC architecture (`compute_90` on an H100/H200).
    pub fn arch(&self) -> &str {
        &self.arch
    }
    /// Number of streaming multiprocessors.
    pub fn multiprocessors(&self) -> usize {
        self.sms
    }

    fn module(&self, m: &'static KernelModule) -> Result<Arc<CudaModule>> {
        let mut mods = lock(&self.modules, "module cache")?;
        if let Some(md) = mods.get(m.file) {
            return Ok(md.clone());
        }
        let ptx = nvrtc::compile_module(m, &self.arch)?;
        let md = self
            .ctx
            .load_module(Ptx::from_src(ptx))
            .map_err(drv(format!(
                "loading the PTX of {} for {}",
                m.file, self.arch
            )))?;
        mods.insert(m.file, md.clone());
        Ok(md)
    }

    /// The kernel `entry` (compiling and loading its module on first use).
    pub fn function(&self, entry: &str) -> Result<CudaFunction> {
        if let Some(f) = lock(&self.funcs, "function cache")?.get(entry) {
            return Ok(f.clone());
        }
        let m = kernels::module_of(entry).ok_or_else(|| Error::Cuda {
            context: entry.into(),
            reason: "no kernels/*.cu module registers this entry point (src/backend/kernels.rs)"
                .into(),
        })?;
        let f = self
            .module(m)?
            .load_function(entry)
            .map_err(drv(format!("loading {entry} from {}", m.file)))?;
        lock(&self.funcs, "function cache")?.insert(entry.to_string(), f.clone());
        Ok(f)
    }

    /// The cuBLAS handle (created on first use; an error if libcublas.so.13 is missing).
    pub fn blas(&self) -> Result<Arc<CudaBlas>> {
        let mut g = lock(&self.blas, "cuBLAS handle")?;
        if let Some(b) = g.as_ref() {
            return Ok(b.clone());
        }
        if !cublas_present() {
            return Err(Error::CudaUnavailable(
                "cuBLAS (libcublas.so.13) was not found by the dynamic loader; it is needed for K > 32 and for the GEMM baseline".into(),
            ));
        }
        let b = Arc::new(
            CudaBlas::new(self.stream.clone()).map_err(blas_err("creating a cuBLAS handle"))?,
        );
        *g = Some(b.clone());
        Ok(b)
    }

    /// Compiles and loads every kernel module now (otherwise done on first use).
    pub fn warm_up(&self) -> Result<()> {
        for m in kernels::MODULES.iter() {
            self.module(m)?;
        }
        Ok(())
    }

    fn loss_name(p: &UfmProblem) -> Result<&'static str> {
        match p.loss() {
            Loss::CrossEntropy => Ok("ce"),
            Loss::Mse => Ok("mse"),
            other => Err(Error::Unsupported(format!(
                "the CUDA backend implements the ce and mse losses, not {other}; use --device cpu"
            ))),
        }
    }

    /// The scratch for `p`, (re)allocated when the problem changes.
    fn scratch<'a, T: GpuReal>(
        &'a self,
        p: &UfmProblem,
    ) -> Result<MutexGuard<'a, Option<Scratch<T>>>> {
        let mut g = lock(T::scratch(self), "scratch buffers")?;
        let (n, d, k) = (p.n_samples(), p.feature_dim(), p.n_classes());
        let key = (p.class_sizes().to_vec(), d);
        if g.as_ref().is_none_or(|s| s.key != key) {
            *g = None; // free the old buffers first
            let geo = Geometry::new(self.sms, n, d, k, 1);
            let st = &self.stream;
            let alloc = |len: usize, what: &str| -> Result<CudaSlice<T>> {
                st.alloc_zeros::<T>(len.max(1))
                    .map_err(drv(format!("allocating {what} ({len} elements)")))
            };
            *g = Some(Scratch {
                key,
                labels: st
                    .clone_htod(p.labels())
                    .map_err(drv("uploading the labels"))?,
                g: alloc(n * k, "G")?,
                q: None,
                part_w: alloc(geo.rb.max(1) * k * d, "grad_W partials")?,
                w_copy: alloc(k * d, "W copy")?,
                part_b: alloc(geo.rb.max(1) * k, "grad_b partials")?,
                partials: st
                    .alloc_zeros::<f64>(geo.offsets()[4] + 64 * self.sms + 64)
                    .map_err(drv("allocating partial sums"))?,
                gh: None,
                ones: None,
            });
        }
        Ok(g)
    }

    fn launch_cfg(grid: (usize, usize, usize), block: (u32, u32, u32), smem: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (grid.0 as u32, grid.1 as u32, grid.2 as u32),
            block_dim: block,
            shared_mem_bytes: smem,
        }
    }

    /// Launches a forward kernel `f` (logits, loss, $G$ into `g`, two f64 partial sums per
    /// block into `pf`) over `blocks` blocks: shared by the fused pass and the value pass.
    #[allow(clippy::too_many_arguments)]
    fn launch_fwd<T: GpuReal>(
        &self,
        f: &CudaFunction,
        name: String,
        (h, w, b): (&CudaView<'_, T>, &CudaView<'_, T>, &CudaView<'_, T>),
        has_b: i32,
        labels: &CudaSlice<u32>,
        (ni, di, ki): (i32, i32, i32),
        inv_n: T,
        g: &mut CudaSlice<T>,
        pf: &mut CudaViewMut<'_, f64>,
        blocks: usize,
    ) -> Result<()> {
        let mut lb = self.stream.launch_builder(f);
        lb.arg(h)
            .arg(w)
            .arg(b)
            .arg(&has_b)
            .arg(labels)
            .arg(&ni)
            .arg(&di)
            .arg(&ki)
            .arg(&inv_n)
            .arg(g)
            .arg(pf);
        // SAFETY: callers pass h N*d, w K*d, b K (or empty with has_b = 0: never read), labels
        // N values < K (validated by UfmProblem), g N*K, pf 2 values per block of `blocks`
        // blocks; the kernel grid-strides within n, d, k.
        unsafe { lb.launch(Self::launch_cfg((blocks, 1, 1), (THREADS, 1, 1), 0)) }
            .map_err(drv(name))?;
        Ok(())
    }

    /// The fused pass (K <= 32): with [`X::Step`] `x` is updated in place, with [`X::Read`]
    /// the gradient goes to `grad`. Returns $(f,\lVert\nabla f\rVert)$ at the input point.
    fn fused_pass<T: GpuReal>(
        &self,
        p: &UfmProblem,
        x: X<'_, T>,
        mut grad: Option<&mut CudaSlice<T>>,
    ) -> Result<(f64, f64)> {
        let (n, d, k) = (p.n_samples(), p.feature_dim(), p.n_classes());
        let loss = Self::loss_name(p)?;
        let kb = kernels::class_bucket(k).ok_or_else(|| Error::Unsupported("K > 32".into()))?;
        let (ni, di, ki) = (as_i32("N", n)?, as_i32("d", d)?, as_i32("K", k)?);
        let (kd, nd) = (k * d, n * d);
        let has_b = i32::from(p.has_bias());
        let rt = Geometry::rows_per_warp(std::mem::size_of::<T>(), kb, false);
        let geo = Geometry::new(self.sms, n, d, k, rt);
        let off = geo.offsets();
        let inv_n = T::of(1.0 / n as f64);
        let (lam_w, lam_h, lam_b) = (
            T::of(p.lambda_w()),
            T::of(p.lambda_h()),
            T::of(p.lambda_b()),
        );
        let step = x.is_step();
        let lr = x.lr();
        let rb_i = as_i32("blocks", geo.rb)?;
        let f_fwd = self.function(&kernels::fwd(loss, kb, T::NAME))?;
        let f_bwd = self.function(&kernels::bwd(step, kb, T::NAME))?;
        let f_fin = self.function(&kernels::finish(step, T::NAME))?;
        let mut sg = self.scratch::<T>(p)?;
        let s = sg.as_mut().expect("scratch allocated");
        if off[4] > s.partials.len() {
            return Err(Error::numerical(
                "CUDA fused pass",
                "partial-sum buffer too small",
            ));
        }
        let mut x = x;
        if step {
            // The backward kernel updates H in place while reading W, and both live in `x`:
            // it reads a copy of W (K*d elements) instead.
            self.stream
                .memcpy_dtod(&x.view(0..kd), &mut s.w_copy.slice_mut(0..kd))
                .map_err(drv("copying W"))?;
        }
        {
            let (wv, hv, bv) = (x.view(0..kd), x.view(kd..kd + nd), x.view(kd + nd..x.len()));
            let mut pf = s.partials.slice_mut(off[0]..off[1]);
            self.launch_fwd(
                &f_fwd,
                kernels::fwd(loss, kb, T::NAME),
                (&hv, &wv, &bv),
                has_b,
                &s.labels,
                (ni, di, ki),
                inv_n,
                &mut s.g,
                &mut pf,
                geo.fwd,
            )?;
        }
        {
            let mut pb = s.partials.slice_mut(off[1]..off[2]);
            macro_rules! bwd_launch {
                ($h:expr, $w:expr) => {{
                    let mut out_h;
                    let mut lb = self.stream.launch_builder(&f_bwd);
                    lb.arg($h).arg($w).arg(&s.g);
                    match grad.as_deref_mut() {
                        Some(gbuf) if !step => {
                            out_h = gbuf.slice_mut(kd..kd + nd);
                            lb.arg(&mut out_h);
                        }
                        _ => {
                            lb.arg(&s.g); // `out` is not written in step mode
                        }
                    }
                    lb.arg(&ni)
                        .arg(&di)
                        .arg(&ki)
                        .arg(&lam_h)
                        .arg(&lr)
                        .arg(&mut s.part_w)
                        .arg(&mut s.part_b)
                        .arg(&mut pb);
                    // SAFETY: h (read, or updated in place in step mode) and out_h are N*d, w
                    // K*d, g N*K, part_w holds rb*K*d and part_b rb*K (allocated for this
                    // problem's rb), pb rb*yt values; grid (rb, yt) with yt = ceil(d/32)
                    // covers every column once.
                    unsafe { lb.launch(Self::launch_cfg((geo.rb, geo.yt, 1), (THREADS, 1, 1), 0)) }
                        .map_err(drv(kernels::bwd(step, kb, T::NAME)))?;
                }};
            }
            match &mut x {
                X::Step(xs, _) => {
                    let mut hm = xs.slice_mut(kd..kd + nd);
                    let wv = s.w_copy.slice(0..kd);
                    bwd_launch!(&mut hm, &wv);
                }
                X::Read(xr) => {
                    let (hv, wv) = (xr.slice(kd..kd + nd), xr.slice(0..kd));
                    bwd_launch!(&hv, &wv);
                }
            }
        }
        // Finish W and b (after the backward pass has read the old W).
        for t in 0..2 {
            if t == 1 && !p.has_bias() {
                continue;
            }
            let (start, m, blocks, lam, o0, o1, rows_part) = if t == 0 {
                (
                    0,
                    kd,
                    geo.fin_w,
                    lam_w,
                    off[2],
                    off[3],
                    s.part_w.slice(0..geo.rb * kd),
                )
            } else {
                (
                    kd + nd,
                    k,
                    geo.fin_b,
                    lam_b,
                    off[3],
                    off[4],
                    s.part_b.slice(0..geo.rb * k),
                )
            };
            let m_i = as_i32("finish length", m)?;
            self.launch_finish(
                &f_fin,
                &mut x,
                start,
                m,
                &rows_part,
                rb_i,
                m_i,
                lam,
                lr,
                grad.as_deref_mut().filter(|_| !step),
                &s.g,
                &mut s.partials.slice_mut(o0..o1),
                blocks,
            )?;
        }
        let parts = self
            .stream
            .clone_dtoh(&s.partials.slice(0..off[4]))
            .map_err(drv("reading the partial sums"))?;
        let (loss_sum, h_sq) = pair_sums(&parts[off[0]..off[1]]);
        let gh_sq: f64 = parts[off[1]..off[2]].iter().sum();
        let (w_sq, gw_sq) = pair_sums(&parts[off[2]..off[3]]);
        let (b_sq, gb_sq) = if p.has_bias() {
            pair_sums(&parts[off[3]..off[4]])
        } else {
            (0.0, 0.0)
        };
        let f = loss_sum / n as f64
            + 0.5 * (p.lambda_w() * w_sq + p.lambda_h() * h_sq + p.lambda_b() * b_sq);
        Ok((f, (gh_sq + gw_sq + gb_sq).sqrt()))
    }

    /// Launches `ufm_finish_<grad|step>` on `x[start..start + m]` with the partial rows
    /// `part`; in gradient mode the result goes to `grad[start..start + m]`.
    #[allow(clippy::too_many_arguments)]
    fn launch_finish<T: GpuReal>(
        &self,
        f: &CudaFunction,
        x: &mut X<'_, T>,
        start: usize,
        m: usize,
        part: &CudaView<'_, T>,
        rows: i32,
        m_i: i32,
        lam: T,
        lr: T,
        grad: Option<&mut CudaSlice<T>>,
        dummy: &CudaSlice<T>,
        partials: &mut CudaViewMut<'_, f64>,
        blocks: usize,
    ) -> Result<()> {
        let step = x.is_step();
        let mut xm;
        let xv;
        let mut gslice;
        let mut lb = self.stream.launch_builder(f);
        match x {
            X::Step(xs, _) => {
                xm = xs.slice_mut(start..start + m);
                lb.arg(&mut xm);
            }
            X::Read(xr) => {
                xv = xr.slice(start..start + m);
                lb.arg(&xv);
            }
        }
        lb.arg(part).arg(&rows).arg(&m_i).arg(&lam).arg(&lr);
        match grad {
            Some(g) => {
                gslice = g.slice_mut(start..start + m);
                lb.arg(&mut gslice);
            }
            None => {
                lb.arg(dummy); // `grad` is not written in step mode
            }
        }
        lb.arg(partials);
        // SAFETY: the x part and the gradient slice hold m elements (the kernel writes x only
        // in step mode and grad only in gradient mode), part holds `rows` rows of m, partials
        // 2 values per block of `blocks`; the kernel grid-strides over m.
        unsafe { lb.launch(Self::launch_cfg((blocks, 1, 1), (THREADS, 1, 1), 0)) }
            .map_err(drv(kernels::finish(step, T::NAME)))?;
        Ok(())
    }

    /// Launches `ufm_sumsq` on `v` into `partials` (one value per block); returns the block
    /// count.
    fn sumsq<T: GpuReal>(
        &self,
        v: &CudaView<'_, T>,
        len: usize,
        partials: &mut cudarc::driver::CudaViewMut<'_, f64>,
    ) -> Result<usize> {
        let f = self.function(&kernels::sumsq(T::NAME))?;
        let blocks = len
            .div_ceil(THREADS as usize)
            .clamp(1, (4 * self.sms).min(partials.len()));
        let n = len as i64;
        let mut lb = self.stream.launch_builder(&f);
        lb.arg(v).arg(&n).arg(partials);
        // SAFETY: v holds `len` elements, partials at least `blocks` values; grid-stride loop.
        unsafe { lb.launch(Self::launch_cfg((blocks, 1, 1), (THREADS, 1, 1), 0)) }
            .map_err(drv(kernels::sumsq(T::NAME)))?;
        Ok(blocks)
    }

    /// The textbook GEMM pass: cuBLAS $Z=HW^\top$, the loss kernel, cuBLAS $G^\top H$,
    /// $G^\top\mathbf 1$ and $GW+\lambda_HH$, then the finish kernels (any $K$).
    fn gemm_pass<T: GpuReal>(
        &self,
        p: &UfmProblem,
        x: X<'_, T>,
        mut grad: Option<&mut CudaSlice<T>>,
    ) -> Result<(f64, f64)> {
        let (n, d, k) = (p.n_samples(), p.feature_dim(), p.n_classes());
        let loss = Self::loss_name(p)?;
        let (ni, ki) = (as_i32("N", n)?, as_i32("K", k)?);
        let (kd, nd) = (k * d, n * d);
        let blas = self.blas()?;
        let step = x.is_step();
        let lr = x.lr();
        let inv_n = T::of(1.0 / n as f64);
        let has_b = i32::from(p.has_bias());
        let (lam_w, lam_h, lam_b) = (
            T::of(p.lambda_w()),
            T::of(p.lambda_h()),
            T::of(p.lambda_b()),
        );
        let f_loss = self.function(&kernels::loss(loss, T::NAME))?;
        let f_fin = self.function(&kernels::finish(step, T::NAME))?;
        let f_axpy = self.function(&kernels::axpy(T::NAME))?;
        let mut sg = self.scratch::<T>(p)?;
        let s = sg.as_mut().expect("scratch allocated");
        if s.ones.is_none() {
            let ones = vec![T::one(); n];
            s.ones = Some(
                self.stream
                    .clone_htod(&ones)
                    .map_err(drv("allocating ones"))?,
            );
        }
        if step && s.gh.is_none() {
            s.gh = Some(
                self.stream
                    .alloc_zeros::<T>(nd)
                    .map_err(drv(format!("allocating grad_H ({nd} elements)")))?,
            );
        }
        let loss_blocks = n.div_ceil(8).clamp(1, 16 * self.sms);
        let fin_w = kd.div_ceil(THREADS as usize).clamp(1, 2 * self.sms);
        let fin_b = k.div_ceil(THREADS as usize).clamp(1, 2 * self.sms);
        let sq = 4 * self.sms;
        // partial sections: loss | ||H||^2 | ||grad_H||^2 | finish W | finish b
        let off = [
            0,
            loss_blocks,
            loss_blocks + sq,
            loss_blocks + 2 * sq,
            loss_blocks + 2 * sq + 2 * fin_w,
            loss_blocks + 2 * sq + 2 * fin_w + 2 * fin_b,
        ];
        if off[5] > s.partials.len() {
            return Err(Error::numerical(
                "CUDA GEMM pass",
                "partial-sum buffer too small",
            ));
        }
        let (op_n, op_t) = (
            cublasOperation_t::CUBLAS_OP_N,
            cublasOperation_t::CUBLAS_OP_T,
        );
        #[allow(clippy::too_many_arguments)]
        let cfg = |transa,
                   transb,
                   m: usize,
                   nn: usize,
                   kk: usize,
                   lda: usize,
                   ldb: usize,
                   beta: T,
                   ldc: usize| GemmConfig {
            transa,
            transb,
            m: m as i32,
            n: nn as i32,
            k: kk as i32,
            alpha: T::one(),
            lda: lda as i32,
            ldb: ldb as i32,
            beta,
            ldc: ldc as i32,
        };
        let mut x = x;
        let (hsq_blocks, ghsq_blocks);
        {
            let (wv, hv, bv) = (x.view(0..kd), x.view(kd..kd + nd), x.view(kd + nd..x.len()));
            // Row-major X (r x c) is column-major X^T (c x r, leading dimension c):
            // Z^T (K x N) = (W^T)^T (K x d) * H^T (d x N).
            // SAFETY: W is K*d, H N*d, g N*K: the sizes of the column-major operands.
            unsafe {
                T::gemm(
                    &blas,
                    cfg(op_t, op_n, k, n, d, d, d, T::zero(), k),
                    &wv,
                    &hv,
                    &mut s.g,
                )
            }
            .map_err(blas_err("cuBLAS Z = H W^T"))?;
            let mut pl = s.partials.slice_mut(off[0]..off[1]);
            let mut lb = self.stream.launch_builder(&f_loss);
            lb.arg(&mut s.g)
                .arg(&bv)
                .arg(&has_b)
                .arg(&s.labels)
                .arg(&ni)
                .arg(&ki)
                .arg(&inv_n)
                .arg(&mut pl);
            // SAFETY: g is N*K, b is K (unread when has_b = 0), labels N values < K, pl holds
            // one value per block; warp-per-row grid-stride loop.
            unsafe { lb.launch(Self::launch_cfg((loss_blocks, 1, 1), (THREADS, 1, 1), 0)) }
                .map_err(drv(kernels::loss(loss, T::NAME)))?;
            // grad_W^T (d x K) = H^T (d x N) * (G^T)^T (N x K)  -> part_w row 0
            let mut pw = s.part_w.slice_mut(0..kd);
            // SAFETY: H N*d, g N*K, part_w >= K*d.
            unsafe {
                T::gemm(
                    &blas,
                    cfg(op_n, op_t, d, k, n, d, k, T::zero(), d),
                    &hv,
                    &s.g,
                    &mut pw,
                )
            }
            .map_err(blas_err("cuBLAS G^T H"))?;
            // grad_b (K x 1) = G^T (K x N) * 1 (N x 1)  -> part_b row 0
            let mut pbv = s.part_b.slice_mut(0..k);
            let ones = s.ones.as_ref().expect("allocated above");
            // SAFETY: g N*K, ones N, part_b >= K.
            unsafe {
                T::gemm(
                    &blas,
                    cfg(op_n, op_n, k, 1, n, k, n, T::zero(), k),
                    &s.g,
                    ones,
                    &mut pbv,
                )
            }
            .map_err(blas_err("cuBLAS G^T 1"))?;
            let mut ph = s.partials.slice_mut(off[1]..off[2]);
            hsq_blocks = self.sumsq::<T>(&hv, nd, &mut ph)?;
            // grad_H^T (d x N) = (W^T) (d x K) * G^T (K x N) + lambda_H H^T
            let mut ghv = if step {
                s.gh.as_mut().expect("allocated above").slice_mut(0..nd)
            } else {
                grad.as_deref_mut()
                    .ok_or_else(|| Error::numerical("CUDA GEMM pass", "no gradient buffer"))?
                    .slice_mut(kd..kd + nd)
            };
            self.stream
                .memcpy_dtod(&hv, &mut ghv)
                .map_err(drv("copying H"))?;
            // SAFETY: W K*d, g N*K, ghv N*d.
            unsafe {
                T::gemm(
                    &blas,
                    cfg(op_n, op_n, d, n, k, d, k, lam_h, d),
                    &wv,
                    &s.g,
                    &mut ghv,
                )
            }
            .map_err(blas_err("cuBLAS G W + lambda_H H"))?;
            let mut pg = s.partials.slice_mut(off[2]..off[3]);
            ghsq_blocks = self.sumsq::<T>(&ghv.as_view(), nd, &mut pg)?;
        }
        if let (X::Step(xs, _), Some(gh)) = (&mut x, s.gh.as_ref()) {
            let neg = T::zero() - lr;
            let len = nd as i64;
            let blocks = nd.div_ceil(THREADS as usize).clamp(1, 16 * self.sms);
            let ghv = gh.slice(0..nd);
            let mut hm = xs.slice_mut(kd..kd + nd);
            let mut lb = self.stream.launch_builder(&f_axpy);
            lb.arg(&mut hm).arg(&ghv).arg(&neg).arg(&len);
            // SAFETY: h and gh both hold N*d elements; grid-stride loop.
            unsafe { lb.launch(Self::launch_cfg((blocks, 1, 1), (THREADS, 1, 1), 0)) }
                .map_err(drv(kernels::axpy(T::NAME)))?;
        }
        let one = 1i32;
        for t in 0..2 {
            if t == 1 && !p.has_bias() {
                continue;
            }
            let (start, m, blocks, lam, o0, o1, part) = if t == 0 {
                (0, kd, fin_w, lam_w, off[3], off[4], s.part_w.slice(0..kd))
            } else {
                (
                    kd + nd,
                    k,
                    fin_b,
                    lam_b,
                    off[4],
                    off[5],
                    s.part_b.slice(0..k),
                )
            };
            let m_i = as_i32("finish length", m)?;
            self.launch_finish(
                &f_fin,
                &mut x,
                start,
                m,
                &part,
                one,
                m_i,
                lam,
                lr,
                grad.as_deref_mut().filter(|_| !step),
                &s.g,
                &mut s.partials.slice_mut(o0..o1),
                blocks,
            )?;
        }
        let parts = self
            .stream
            .clone_dtoh(&s.partials.slice(0..off[5]))
            .map_err(drv("reading the partial sums"))?;
        let loss_sum: f64 = parts[off[0]..off[1]].iter().sum();
        let h_sq: f64 = parts[off[1]..off[1] + hsq_blocks].iter().sum();
        let gh_sq: f64 = parts[off[2]..off[2] + ghsq_blocks].iter().sum();
        let (w_sq, gw_sq) = pair_sums(&parts[off[3]..off[4]]);
        let (b_sq, gb_sq) = if p.has_bias() {
            pair_sums(&parts[off[4]..off[5]])
        } else {
            (0.0, 0.0)
        };
        let f = loss_sum / n as f64
            + 0.5 * (p.lambda_w() * w_sq + p.lambda_h() * h_sq + p.lambda_b() * b_sq);
        Ok((f, (gh_sq + gw_sq + gb_sq).sqrt()))
    }

    /// One gradient step by the three-GEMM cuBLAS path (the benchmark baseline); same result
    /// as [`Backend::gd_step`].
    pub fn gd_step_gemm<T: GpuReal>(
        &self,
        p: &UfmProblem,
        x: &mut CudaSlice<T>,
        lr: T,
    ) -> Result<(f64, f64)> {
        self.check_point(p, x.len())?;
        self.gemm_pass(p, X::Step(x, lr), None)
    }

    /// $f$ and $\nabla f$ by the three-GEMM cuBLAS path.
    pub fn value_grad_gemm<T: GpuReal>(
        &self,
        p: &UfmProblem,
        x: &CudaSlice<T>,
        grad: &mut CudaSlice<T>,
    ) -> Result<f64> {
        self.check_point(p, x.len())?;
        self.check_point(p, grad.len())?;
        Ok(self.gemm_pass(p, X::Read(x), Some(grad))?.0)
    }

    fn check_point(&self, p: &UfmProblem, len: usize) -> Result<()> {
        if len != p.n_params() {
            return Err(Error::shape(
                "device vector",
                format!("{} parameters", p.n_params()),
                format!("{len}"),
            ));
        }
        Self::loss_name(p)?;
        Ok(())
    }
}

impl<T: GpuReal> Backend<T> for CudaBackend {
    type Buffer = CudaSlice<T>;

    fn name(&self) -> String {
        self.name.clone()
    }
    fn alloc(&self, len: usize) -> Result<CudaSlice<T>> {
        if len == 0 {
            return Err(Error::param(
                "length",
                "cannot allocate an empty device buffer",
            ));
        }
        self.stream
            .alloc_zeros::<T>(len)
            .map_err(drv(format!("allocating {len} elements")))
    }
    fn upload_into(&self, src: &[T], dst: &mut CudaSlice<T>) -> Result<()> {
        if src.len() != dst.len() {
            return Err(Error::shape(
                "upload",
                format!("{}", dst.len()),
                format!("{}", src.len()),
            ));
        }
        self.stream
            .memcpy_htod(src, dst)
            .map_err(drv("host-to-device copy"))
    }
    fn download(&self, src: &CudaSlice<T>, dst: &mut [T]) -> Result<()> {
        if src.len() != dst.len() {
            return Err(Error::shape(
                "download",
                format!("{}", dst.len()),
                format!("{}", src.len()),
            ));
        }
        self.stream
            .memcpy_dtoh(src, dst)
            .map_err(drv("device-to-host copy"))?;
        self.stream.synchronize().map_err(drv("synchronize"))
    }
    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(drv("synchronize"))
    }
    fn supports(&self, p: &UfmProblem, hvp: bool) -> Result<()> {
        Self::loss_name(p)?;
        as_i32("N", p.n_samples())?;
        if hvp && p.n_classes() > kernels::MAX_FUSED_CLASSES {
            return Err(Error::Unsupported(format!(
                "the CUDA Hessian-vector product supports K <= {} classes (K = {}); use --device cpu",
                kernels::MAX_FUSED_CLASSES,
                p.n_classes()
            )));
        }
        if p.n_classes() > kernels::MAX_FUSED_CLASSES && !cublas_present() {
            return Err(Error::CudaUnavailable(format!(
                "K = {} > {} needs cuBLAS (libcublas.so.13), which was not found",
                p.n_classes(),
                kernels::MAX_FUSED_CLASSES
            )));
        }
        Ok(())
    }
    fn value(&self, p: &UfmProblem, x: &CudaSlice<T>) -> Result<f64> {
        self.check_point(p, x.len())?;
        let (n, d, k) = (p.n_samples(), p.feature_dim(), p.n_classes());
        let Some(kb) = kernels::class_bucket(k) else {
            let mut g = Backend::<T>::alloc(self, x.len())?;
            return self.value_grad_gemm(p, x, &mut g);
        };
        let loss = Self::loss_name(p)?;
        let (ni, di, ki) = (as_i32("N", n)?, as_i32("d", d)?, as_i32("K", k)?);
        let (kd, nd) = (k * d, n * d);
        let rt = Geometry::rows_per_warp(std::mem::size_of::<T>(), kb, false);
        let geo = Geometry::new(self.sms, n, d, k, rt);
        let has_b = i32::from(p.has_bias());
        let inv_n = T::of(1.0 / n as f64);
        let f_fwd = self.function(&kernels::fwd(loss, kb, T::NAME))?;
        let mut sg = self.scratch::<T>(p)?;
        let s = sg.as_mut().expect("scratch allocated");
        let (w, h, b) = (x.slice(0..kd), x.slice(kd..kd + nd), x.slice(kd + nd..));
        let fwd_end = 2 * geo.fwd;
        let sq = 4 * self.sms;
        if fwd_end + 2 * sq > s.partials.len() {
            return Err(Error::numerical(
                "CUDA value",
                "partial-sum buffer too small",
            ));
        }
        {
            let mut pf = s.partials.slice_mut(0..fwd_end);
            self.launch_fwd(
                &f_fwd,
                kernels::fwd(loss, kb, T::NAME),
                (&h, &w, &b),
                has_b,
                &s.labels,
                (ni, di, ki),
                inv_n,
                &mut s.g,
                &mut pf,
                geo.fwd,
            )?;
        }
        let mut pw = s.partials.slice_mut(fwd_end..fwd_end + sq);
        let wb = self.sumsq::<T>(&w, kd, &mut pw)?;
        let mut bb = 0;
        if p.has_bias() {
            let mut pb = s.partials.slice_mut(fwd_end + sq..fwd_end + 2 * sq);
            bb = self.sumsq::<T>(&b, k, &mut pb)?;
        }
        let parts = self
            .stream
            .clone_dtoh(&s.partials.slice(0..fwd_end + 2 * sq))
            .map_err(drv("reading the partial sums"))?;
        let (loss_sum, h_sq) = pair_sums(&parts[..fwd_end]);
        let w_sq: f64 = parts[fwd_end..fwd_end + wb].iter().sum();
        let b_sq: f64 = parts[fwd_end + sq..fwd_end + sq + bb].iter().sum();
        Ok(loss_sum / n as f64
            + 0.5 * (p.lambda_w() * w_sq + p.lambda_h() * h_sq + p.lambda_b() * b_sq))
    }
    fn value_grad(&self, p: &UfmProblem, x: &CudaSlice<T>, grad: &mut CudaSlice<T>) -> Result<f64> {
        self.check_point(p, x.len())?;
        self.check_point(p, grad.len())?;
        if kernels::class_bucket(p.n_classes()).is_none() {
            return self.value_grad_gemm(p, x, grad);
        }
        Ok(self.fused_pass(p, X::Read(x), Some(grad))?.0)
    }
    fn gd_step(&self, p: &UfmProblem, x: &mut CudaSlice<T>, lr: T) -> Result<(f64, f64)> {
        self.check_point(p, x.len())?;
        if kernels::class_bucket(p.n_classes()).is_none() {
            return self.gemm_pass(p, X::Step(x, lr), None);
        }
        self.fused_pass(p, X::Step(x, lr), None)
    }
    fn hvp(
        &self,
        p: &UfmProblem,
        x: &CudaSlice<T>,
        v: &CudaSlice<T>,
        out: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.check_point(p, x.len())?;
        self.check_point(p, v.len())?;
        self.check_point(p, out.len())?;
        Backend::<T>::supports(self, p, true)?;
        let (n, d, k) = (p.n_samples(), p.feature_dim(), p.n_classes());
        let loss = Self::loss_name(p)?;
        let kb = kernels::class_bucket(k).ok_or_else(|| Error::Unsupported("K > 32".into()))?;
        let (ni, di, ki) = (as_i32("N", n)?, as_i32("d", d)?, as_i32("K", k)?);
        let (kd, nd) = (k * d, n * d);
        let rt = Geometry::rows_per_warp(std::mem::size_of::<T>(), kb, true);
        let geo = Geometry::new(self.sms, n, d, k, rt);
        let off = geo.offsets();
        let has_b = i32::from(p.has_bias());
        let inv_n = T::of(1.0 / n as f64);
        let lam_h = T::of(p.lambda_h());
        let f_fwd = self.function(&kernels::hvp_fwd(loss, kb, T::NAME))?;
        let f_bwd = self.function(&kernels::hvp_bwd(kb, T::NAME))?;
        let f_fin = self.function(&kernels::finish(false, T::NAME))?;
        let mut sg = self.scratch::<T>(p)?;
        let s = sg.as_mut().expect("scratch allocated");
        if s.q.is_none() {
            s.q = Some(
                self.stream
                    .alloc_zeros::<T>((n * k).max(1))
                    .map_err(drv("allocating Q"))?,
            );
        }
        let q = s.q.as_mut().expect("allocated above");
        let (w, h, b) = (x.slice(0..kd), x.slice(kd..kd + nd), x.slice(kd + nd..));
        let (vw, vh, vb) = (v.slice(0..kd), v.slice(kd..kd + nd), v.slice(kd + nd..));
        {
            let mut lb = self.stream.launch_builder(&f_fwd);
            lb.arg(&h)
                .arg(&w)
                .arg(&b)
                .arg(&vh)
                .arg(&vw)
                .arg(&vb)
                .arg(&has_b)
                .arg(&s.labels)
                .arg(&ni)
                .arg(&di)
                .arg(&ki)
                .arg(&inv_n)
                .arg(&mut s.g)
                .arg(&mut *q);
            // SAFETY: x and v split into W (K*d), H (N*d), b (K or empty, unread when
            // has_b = 0); labels N values < K; g and q N*K.
            unsafe { lb.launch(Self::launch_cfg((geo.fwd, 1, 1), (THREADS, 1, 1), 0)) }
                .map_err(drv(kernels::hvp_fwd(loss, kb, T::NAME)))?;
        }
        {
            let mut oh = out.slice_mut(kd..kd + nd);
            let mut pb = s.partials.slice_mut(off[1]..off[2]);
            let mut lb = self.stream.launch_builder(&f_bwd);
            lb.arg(&h)
                .arg(&w)
                .arg(&s.g)
                .arg(&vh)
                .arg(&vw)
                .arg(&*q)
                .arg(&mut oh)
                .arg(&ni)
                .arg(&di)
                .arg(&ki)
                .arg(&lam_h)
                .arg(&mut s.part_w)
                .arg(&mut s.part_b)
                .arg(&mut pb);
            // SAFETY: h, vh, oh N*d; w, vw K*d; g, q N*K; part_w rb*K*d, part_b rb*K, pb rb*yt.
            unsafe { lb.launch(Self::launch_cfg((geo.rb, geo.yt, 1), (THREADS, 1, 1), 0)) }
                .map_err(drv(kernels::hvp_bwd(kb, T::NAME)))?;
        }
        let rb_i = as_i32("blocks", geo.rb)?;
        let zero = T::zero();
        for (t, &(start, m, blocks, lam, o0, o1)) in [
            (0usize, kd, geo.fin_w, T::of(p.lambda_w()), off[2], off[3]),
            (kd + nd, k, geo.fin_b, T::of(p.lambda_b()), off[3], off[4]),
        ]
        .iter()
        .enumerate()
        {
            if t == 1 && !p.has_bias() {
                continue;
            }
            let m_i = as_i32("finish length", m)?;
            let vs = v.slice(start..start + m);
            let mut os = out.slice_mut(start..start + m);
            let part = if t == 0 {
                s.part_w.slice(0..geo.rb * kd)
            } else {
                s.part_b.slice(0..geo.rb * k)
            };
            let mut pf = s.partials.slice_mut(o0..o1);
            let mut lb = self.stream.launch_builder(&f_fin);
            lb.arg(&vs)
                .arg(&part)
                .arg(&rb_i)
                .arg(&m_i)
                .arg(&lam)
                .arg(&zero)
                .arg(&mut os)
                .arg(&mut pf);
            // SAFETY: vs and os hold m elements (x is read only in gradient mode), part rb rows
            // of m, pf two values per block.
            unsafe { lb.launch(Self::launch_cfg((blocks, 1, 1), (THREADS, 1, 1), 0)) }
                .map_err(drv(kernels::finish(false, T::NAME)))?;
        }
        self.stream
            .synchronize()
            .map_err(drv("synchronize after the HVP"))
    }

    fn class_stats(
        &self,
        features: &CudaSlice<T>,
        rows: usize,
        d: usize,
        labels: &[u32],
        k: usize,
    ) -> Result<FeatureStats> {
        if rows.checked_mul(d) != Some(features.len()) {
            return Err(Error::shape(
                "features",
                format!("{rows} x {d} elements"),
                format!("{}", features.len()),
            ));
        }
        if labels.len() != rows {
            return Err(Error::shape(
                "labels",
                format!("{rows} labels (one per feature row)"),
                format!("{}", labels.len()),
            ));
        }
        if let Some((i, &y)) = labels.iter().enumerate().find(|(_, &y)| y as usize >= k) {
            return Err(Error::Data(format!(
                "label {y} at row {i} is outside 0..{k} (K = {k})"
            )));
        }
        let (ni, di, ki) = (as_i32("rows", rows)?, as_i32("d", d)?, as_i32("K", k)?);
        if k * 8 > 48 * 1024 {
            return Err(Error::Unsupported(format!(
                "the CUDA class statistics support K <= 6144 classes (K = {k}); use --device cpu"
            )));
        }
        let st = &self.stream;
        let lab = st.clone_htod(labels).map_err(drv("uploading labels"))?;
        let mut sums = st
            .alloc_zeros::<f64>(k * d)
            .map_err(drv("allocating class sums"))?;
        let mut counts = st.alloc_zeros::<u64>(k).map_err(drv("allocating counts"))?;
        let f_sums = self.function(&kernels::class_stat("sums", T::NAME))?;
        let yt = d.div_ceil(32);
        let rb = rows
            .div_ceil(8)
            .clamp(1, (8 * self.sms).div_ceil(yt).max(1));
        let mut c0 = 0usize;
        while c0 < k {
            let kc = (k - c0).min(128);
            let (c0_i, kc_i) = (c0 as i32, kc as i32);
            let smem = (kc * 32 * 8 + kc * 8) as u32;
            let mut lb = st.launch_builder(&f_sums);
            lb.arg(features)
                .arg(&lab)
                .arg(&ni)
                .arg(&di)
                .arg(&c0_i)
                .arg(&kc_i)
                .arg(&mut sums)
                .arg(&mut counts);
            // SAFETY: features rows*d, labels rows values < K, sums K*d, counts K; dynamic
            // shared memory kc*32 doubles + kc u64 (<= 33 KiB) as the kernel expects.
            unsafe { lb.launch(Self::launch_cfg((rb, yt, 1), (THREADS, 1, 1), smem)) }
                .map_err(drv(kernels::class_stat("sums", T::NAME)))?;
            c0 += kc;
        }
        let sums_h = st.clone_dtoh(&sums).map_err(drv("reading class sums"))?;
        let counts_h = st.clone_dtoh(&counts).map_err(drv("reading counts"))?;
        if let Some(i) = sums_h.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!(
                    "features of class {} (found on the GPU; row not located)",
                    i / d.max(1)
                ),
            });
        }
        let empty: Vec<usize> = (0..k).filter(|&c| counts_h[c] == 0).collect();
        if !empty.is_empty() {
            return Err(Error::Data(format!(
                "class(es) {empty:?} have no samples; every class 0..{k} needs at least one (or pass the right number of classes)"
            )));
        }
        let mut means = ndarray::Array2::<f64>::zeros((k, d));
        for c in 0..k {
            for j in 0..d {
                means[[c, j]] = sums_h[c * d + j] / counts_h[c] as f64;
            }
        }
        let means_d = st
            .clone_htod(means.as_slice().expect("standard layout"))
            .map_err(drv("uploading means"))?;
        let mut ss = st
            .alloc_zeros::<f64>(k)
            .map_err(drv("allocating class_ss"))?;
        let mut scatter = st
            .alloc_zeros::<f64>(d * d)
            .map_err(drv("allocating the scatter"))?;
        let f_ss = self.function(&kernels::class_stat("ss", T::NAME))?;
        {
            let blocks = rows.div_ceil(8).clamp(1, 16 * self.sms);
            let mut lb = st.launch_builder(&f_ss);
            lb.arg(features)
                .arg(&lab)
                .arg(&ni)
                .arg(&di)
                .arg(&ki)
                .arg(&means_d)
                .arg(&mut ss);
            // SAFETY: features rows*d, labels < K, means K*d, ss K; dynamic shared memory K
            // doubles (<= 48 KiB, checked above).
            unsafe {
                lb.launch(Self::launch_cfg(
                    (blocks, 1, 1),
                    (THREADS, 1, 1),
                    (k * 8) as u32,
                ))
            }
            .map_err(drv(kernels::class_stat("ss", T::NAME)))?;
        }
        let f_sc = self.function(&kernels::class_stat("scatter", T::NAME))?;
        {
            let tiles = d.div_ceil(64);
            let slabs = (4 * self.sms)
                .div_ceil(tiles * tiles)
                .clamp(1, rows.div_ceil(16).max(1));
            let mut lb = st.launch_builder(&f_sc);
            lb.arg(features)
                .arg(&lab)
                .arg(&ni)
                .arg(&di)
                .arg(&means_d)
                .arg(&mut scatter);
            // SAFETY: features rows*d, labels < K, means K*d, scatter d*d; grid covers the d x d
            // output in 64 x 64 tiles and the rows in `slabs` slabs; block 16 x 16.
            unsafe { lb.launch(Self::launch_cfg((tiles, tiles, slabs), (16, 16, 1), 0)) }
                .map_err(drv(kernels::class_stat("scatter", T::NAME)))?;
        }
        let class_ss = st.clone_dtoh(&ss).map_err(drv("reading class_ss"))?;
        let sc = st
            .clone_dtoh(&scatter)
            .map_err(drv("reading the scatter"))?;
        Ok(FeatureStats {
            counts: counts_h,
            means,
            scatter: Some(
                ndarray::Array2::from_shape_vec((d, d), sc)
                    .map_err(|e| Error::numerical("CUDA scatter", e.to_string()))?,
            ),
            class_ss,
        })
    }
}
