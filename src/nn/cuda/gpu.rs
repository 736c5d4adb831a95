//! Device buffers with a byte count (peak device memory of the tensors), the `kernels/nn.cu`
//! function table, launch geometry and the SGEMM wrapper.

use crate::backend::cuda::CudaBackend;
use crate::backend::kernels;
use crate::error::{Error, Result};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, DriverError,
    LaunchConfig, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Threads per block of every 1-D launch.
pub(crate) const THREADS: u32 = 256;

/// Largest tensor (elements) the kernels index with 32-bit arithmetic, with room for the
/// grid-stride step.
pub(crate) const MAX_ELEMENTS: usize = (1 << 31) - (1 << 25);

fn check_len(len: usize) -> Result<()> {
    if len > MAX_ELEMENTS {
        return Err(Error::Unsupported(format!(
            "a device tensor of {len} elements exceeds the kernels' 32-bit index range ({MAX_ELEMENTS}); use a smaller --batch-size"
        )));
    }
    Ok(())
}

pub(crate) fn drv(context: impl Into<String>) -> impl FnOnce(DriverError) -> Error {
    let context = context.into();
    move |e| Error::Cuda {
        context,
        reason: format!("{e:?}"),
    }
}

/// Bytes of live device tensors and their peak.
#[derive(Debug, Default)]
pub(crate) struct MemTrack {
    cur: AtomicUsize,
    peak: AtomicUsize,
}

impl MemTrack {
    fn add(&self, b: usize) {
        let now = self.cur.fetch_add(b, Ordering::Relaxed) + b;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    fn sub(&self, b: usize) {
        self.cur.fetch_sub(b, Ordering::Relaxed);
    }
}

/// A device buffer counted in [`MemTrack`].
pub(crate) struct DBuf<T> {
    /// The memory.
    pub s: CudaSlice<T>,
    bytes: usize,
    mem: Arc<MemTrack>,
}

impl<T> DBuf<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.s.len()
    }
}

impl<T> Drop for DBuf<T> {
    fn drop(&mut self) {
        self.mem.sub(self.bytes);
    }
}

/// A shared activation (cached by the layer that needs it in the backward pass).
pub(crate) type Act = Rc<DBuf<f32>>;

/// The device, its stream, cuBLAS and the loaded `nn_*` kernels.
pub(crate) struct Gpu {
    pub be: Arc<CudaBackend>,
    pub stream: Arc<CudaStream>,
    pub blas: Arc<CudaBlas>,
    funcs: HashMap<&'static str, CudaFunction>,
    mem: Arc<MemTrack>,
    max_blocks: usize,
}

impl Gpu {
    /// Loads every `kernels/nn.cu` entry point (NVRTC-compiles the module once) and the
    /// backend's cuBLAS handle.
    pub fn new(be: Arc<CudaBackend>) -> Result<Self> {
        let mut funcs = HashMap::new();
        for op in kernels::NN_OPS {
            funcs.insert(op, be.function(&kernels::nn(op))?);
        }
        let blas = be.blas()?;
        keep_pool_memory(&be);
        let stream = be.stream().clone();
        let max_blocks = 32 * be.multiprocessors();
        Ok(Gpu {
            be,
            stream,
            blas,
            funcs,
            mem: Arc::new(MemTrack::default()),
            max_blocks,
        })
    }

    /// The kernel `nn_<op>_f32`.
    pub fn f(&self, op: &'static str) -> Result<&CudaFunction> {
        self.funcs.get(op).ok_or_else(|| Error::Cuda {
            context: format!("nn_{op}_f32"),
            reason: "not an entry point of kernels/nn.cu".into(),
        })
    }

    /// Peak bytes of live tensors since the last [`Gpu::reset_peak`].
    pub fn peak_bytes(&self) -> usize {
        self.mem.peak.load(Ordering::Relaxed)
    }
    /// Restarts the peak at the current live bytes.
    pub fn reset_peak(&self) {
        self.mem
            .peak
            .store(self.mem.cur.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn wrap<T>(&self, s: CudaSlice<T>) -> DBuf<T> {
        let bytes = s.len() * std::mem::size_of::<T>();
        self.mem.add(bytes);
        DBuf {
            s,
            bytes,
            mem: self.mem.clone(),
        }
    }

    /// A zero-filled buffer.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<DBuf<T>> {
        check_len(len)?;
        let s = self
            .stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(drv(format!("allocating {len} device elements")))?;
        Ok(self.wrap(s))
    }

    /// An uninitialised buffer, for outputs a kernel or GEMM writes completely.
    pub fn uninit<T: DeviceRepr>(&self, len: usize) -> Result<DBuf<T>> {
        check_len(len)?;
        // SAFETY: every caller passes the buffer as the output of a kernel or GEMM that writes
        // all `len` elements before anything reads them.
        let s = unsafe { self.stream.alloc::<T>(len.max(1)) }
            .map_err(drv(format!("allocating {len} device elements")))?;
        Ok(self.wrap(s))
    }

    /// A buffer holding `v`.
    pub fn upload<T: DeviceRepr>(&self, v: &[T]) -> Result<DBuf<T>> {
        check_len(v.len())?;
        let s = self
            .stream
            .clone_htod(v)
            .map_err(drv("host-to-device copy"))?;
        Ok(self.wrap(s))
    }

    /// Overwrites `dst` with `v` (same length).
    pub fn upload_into<T: DeviceRepr>(&self, v: &[T], dst: &mut DBuf<T>) -> Result<()> {
        if v.len() != dst.len() {
            return Err(Error::shape(
                "upload",
                format!("{}", dst.len()),
                format!("{}", v.len()),
            ));
        }
        self.stream
            .memcpy_htod(v, &mut dst.s)
            .map_err(drv("host-to-device copy"))
    }

    /// The first `len` elements of `b` (synchronises).
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        b: &DBuf<T>,
        len: usize,
    ) -> Result<Vec<T>> {
        let mut v = vec![T::default(); len];
        self.stream
            .memcpy_dtoh(&b.s.slice(0..len), &mut v)
            .map_err(drv("device-to-host copy"))?;
        self.stream
            .synchronize()
            .map_err(drv("synchronize after a copy"))?;
        Ok(v)
    }

    /// A 1-D grid-stride launch over `len` items.
    pub fn cfg1(&self, len: usize) -> LaunchConfig {
        let blocks = len.div_ceil(THREADS as usize).clamp(1, self.max_blocks) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
    /// One warp per item (8 items per block).
    pub fn cfg_warps(&self, items: usize) -> LaunchConfig {
        let blocks = items.div_ceil(8).clamp(1, self.max_blocks) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
    /// One block per channel.
    pub fn cfg_blocks(&self, blocks: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (blocks.max(1) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Column-major SGEMM $C\leftarrow\alpha\,\mathrm{op}(A)\mathrm{op}(B)+\beta C$
    /// (`ta`/`tb`: transpose), with $C$ of size $m\times n$ and inner size $k$.
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm<A: DevicePtr<f32>, B: DevicePtr<f32>, C: DevicePtrMut<f32>>(
        &self,
        what: &str,
        (ta, tb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        a: &A,
        lda: usize,
        b: &B,
        ldb: usize,
        beta: f32,
        c: &mut C,
        ldc: usize,
    ) -> Result<()> {
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (ra, ca) = if ta { (k, m) } else { (m, k) };
        let (rb, cb) = if tb { (n, k) } else { (k, n) };
        let fits = lda >= ra.max(1)
            && ldb >= rb.max(1)
            && ldc >= m.max(1)
            && a.len() >= lda * (ca - 1) + ra
            && b.len() >= ldb * (cb - 1) + rb
            && c.len() >= ldc * (n - 1) + m;
        let big = [m, n, k, lda, ldb, ldc]
            .iter()
            .any(|&v| v > i32::MAX as usize);
        if m == 0 || n == 0 || k == 0 || !fits || big {
            return Err(Error::Cuda {
                context: format!("SGEMM {what}"),
                reason: format!(
                    "operand sizes do not fit: m={m} n={n} k={k} lda={lda} ldb={ldb} ldc={ldc}, lengths {} {} {}",
                    a.len(),
                    b.len(),
                    c.len()
                ),
            });
        }
        let cfg = GemmConfig {
            transa: op(ta),
            transb: op(tb),
            m: m as i32,
            n: n as i32,
            k: k as i32,
            alpha: 1.0f32,
            lda: lda as i32,
            ldb: ldb as i32,
            beta,
            ldc: ldc as i32,
        };
        // SAFETY: the operand lengths were checked above against m, n, k and the leading
        // dimensions (column-major, as cuBLAS reads them); all buffers live on this stream.
        unsafe { Gemm::<f32>::gemm(self.blas.as_ref(), cfg, a, b, c) }.map_err(|e| Error::Cuda {
            context: format!("cuBLAS SGEMM {what}"),
            reason: format!("{e:?}"),
        })
    }
}

/// Launches `nn_<op>_f32` with the arguments pushed in order. Every use states its
/// `// SAFETY:` contract (buffer sizes against the kernel's indexing) at the call site.
macro_rules! launch {
    ($g:expr, $op:literal, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        use cudarc::driver::PushKernelArg;
        let cfg: cudarc::driver::LaunchConfig = $cfg;
        let f = $g.f($op)?;
        let mut lb = $g.stream.launch_builder(f);
        $( lb.arg($arg); )*
        // SAFETY: the call site states why every buffer holds what the kernel indexes.
        unsafe { lb.launch(cfg) }.map_err($crate::nn::cuda::gpu::drv(concat!("nn_", $op, "_f32")))?;
    }};
}
pub(crate) use launch;

/// Keeps freed device memory in the device's stream-ordered pool (release threshold = max),
/// as PyTorch's caching allocator does: every batch allocates and frees its activations, and
/// by default the pool returns memory to the driver at each synchronisation. Only speed
/// depends on it, so a failure is ignored.
fn keep_pool_memory(be: &CudaBackend) {
    use cudarc::driver::sys;
    let dev = be.context().cu_device();
    let _ = std::panic::catch_unwind(|| {
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: `pool` is a valid out-pointer; the call only reads the device's default pool.
        let r = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, dev) };
        if r == sys::cudaError_enum::CUDA_SUCCESS && !pool.is_null() {
            let mut threshold: u64 = u64::MAX;
            // SAFETY: RELEASE_THRESHOLD takes a pointer to a u64 (cuMemPoolSetAttribute docs).
            let _ = unsafe {
                sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    &mut threshold as *mut u64 as *mut std::ffi::c_void,
                )
            };
        }
    });
}

/// `i32` kernel argument, or an error naming what overflowed.
pub(crate) fn i32_of(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::Unsupported(format!(
            "{what} = {v} exceeds the CUDA kernels' 32-bit range"
        ))
    })
}
