//! The fused single-pass kernel behind [`UfmProblem::value`](crate::ufm::UfmProblem::value),
//! [`value_grad`](crate::ufm::UfmProblem::value_grad) and
//! [`gd_step_fused`](crate::ufm::UfmProblem::gd_step_fused).
//!
//! For a group of $R$ consecutive samples $h_i$ (rows of $H^\top$) it computes, while the rows
//! sit in L1:
//!
//! 1. the logits $z_i=Wh_i+b$ by a register tile of $R\times K_c$ dot products ($R$ rows times
//!    $K_c$ classes, one SIMD accumulator each, $W$ streamed from L1/L2);
//! 2. $\ell(z_i,y_i)$ and $g_i=\nabla\ell(z_i,y_i)/N$ (the per-sample loss code of
//!    [`Loss::value_grad_inplace`]);
//! 3. in one sweep over the feature index $j$:
//!    $(\nabla_Wf)_{:,j}\mathrel{+}=\sum_ig_i\,h_{ij}$ (a per-chunk partial),
//!    $(\nabla_{h_i}f)_j=\lambda_Hh_{ij}+\sum_cg_{ic}W_{cj}$, the sums
//!    $\lVert h_i\rVert^2$ and $\lVert\nabla_{h_i}f\rVert^2$, and either the gradient row
//!    ([`value_grad`](crate::ufm::UfmProblem::value_grad)) or the updated
//!    $h_i-\eta\nabla_{h_i}f$ (the fused gradient-descent step) written back.
//!
//! So $H$ is read from memory once and (for the step) written once: $8Nd$ bytes in f32 and
//! $6KdN$ flops per step, against three GEMM passes over $H$ in the textbook form
//! $Z=WH$, $\nabla_W=GH^\top$, $\nabla_H=W^\top G$.
//!
//! **Instruction sets.** The same generic body is instantiated for AVX-512F (16 f32 / 8 f64
//! lanes, tiles of $4\times4$), AVX2 + FMA (8 / 4 lanes, tiles of $2\times5$) and a portable
//! four-lane fallback without fused multiply-add, picked once at run time with
//! `is_x86_feature_detected!`. They differ only in rounding.
//!
//! **Determinism.** The samples are cut into chunks whose size depends only on $(N, K, d)$ and
//! the precision ([`chunk_rows`]), never on the number of threads. Each chunk is processed sequentially into
//! its own partial sums (of $\nabla_Wf$, $\nabla_bf$, the loss, $\lVert H\rVert^2$ and
//! $\lVert\nabla_Hf\rVert^2$); the partials are added in chunk order. The result is therefore
//! the same bytes for any thread count.

use crate::real::Real;
use crate::ufm::loss::Loss;
use num_traits::Zero;
use rayon::prelude::*;
use std::any::TypeId;

/// Rows per chunk for $N$ samples: at least 512, a multiple of 4 (the register tile's row
/// count), and at most 32 chunks, fewer (down to 4) when their partial $\nabla_W f$
/// ($K\times d$ values of `elem` bytes each) would take more than
/// [`LANE_BUDGET`](crate::ufm::objective::LANE_BUDGET) bytes together. Depends on
/// $(N, K, d)$ and the precision only, so results do not depend on the thread count.
pub(crate) fn chunk_rows(n: usize, k: usize, d: usize, elem: usize) -> usize {
    let chunks = crate::par::lanes_within(
        crate::ufm::objective::MAX_LANES,
        4,
        k.saturating_mul(d).saturating_mul(elem),
        crate::ufm::objective::LANE_BUDGET,
    );
    let rows = n.div_ceil(chunks).max(512);
    rows.div_ceil(4) * 4
}

/// What one pass does with $H$.
pub(crate) enum Pass<'a, T> {
    /// $f$ only: loss and $\lVert H\rVert^2$.
    Value(&'a [T]),
    /// $f$ and $\nabla f$: the rows of $\nabla_Hf$ are written into `gh` (the layout of $H^\top$).
    Grad {
        /// $H^\top$ ($N\times d$ row-major).
        h: &'a [T],
        /// $\nabla_{H^\top}f$, written.
        gh: &'a mut [T],
    },
    /// The fused step: $H\leftarrow H-\eta\nabla_Hf$ in place.
    Step {
        /// $H^\top$, updated in place.
        h: &'a mut [T],
        /// Step size $\eta$.
        lr: T,
    },
}

/// Sums over all samples returned by [`pass`] (each added in chunk order).
pub(crate) struct Sums<T> {
    /// $\sum_i\ell(z_i,y_i)$.
    pub loss: f64,
    /// $\lVert H\rVert_F^2$.
    pub h_sq: f64,
    /// $\lVert\nabla_Hf\rVert_F^2$ (0 for [`Pass::Value`]).
    pub gh_sq: f64,
    /// $\sum_i g_ih_i^\top$ ($K\times d$ row-major, $g_i=\nabla\ell_i/N$; empty for
    /// [`Pass::Value`]).
    pub gw: Vec<T>,
    /// $\sum_ig_i$ (empty for [`Pass::Value`]).
    pub gb: Vec<T>,
}

/// The fixed inputs of a pass.
pub(crate) struct Model<'a, T> {
    /// $W$ ($K\times d$ row-major).
    pub w: &'a [T],
    /// $b$, if the model has a bias.
    pub b: Option<&'a [T]>,
    /// Label of every sample.
    pub labels: &'a [u32],
    /// $K$.
    pub k: usize,
    /// $d$.
    pub d: usize,
    /// The loss.
    pub loss: Loss,
    /// $1/N$.
    pub inv_n: T,
    /// $\lambda_H$.
    pub lambda_h: T,
}

/// One pass over all samples (in parallel on the current rayon pool; see the module docs for
/// why the result does not depend on the thread count).
pub(crate) fn pass<T: Real>(m: &Model<'_, T>, h: Pass<'_, T>) -> Sums<T> {
    pass_with(m, h, Isa::detect())
}

/// [`pass`] with a given instruction set (tests compare them).
pub(crate) fn pass_with<T: Real>(m: &Model<'_, T>, h: Pass<'_, T>, isa: Isa) -> Sums<T> {
    let (k, d) = (m.k, m.d);
    let n = m.labels.len();
    let (src, dst, lr, grad) = match h {
        Pass::Value(h) => {
            assert_eq!(h.len(), n * d, "H has the wrong length");
            (h.as_ptr(), std::ptr::null_mut(), None, false)
        }
        Pass::Grad { h, gh } => {
            assert_eq!(h.len(), n * d, "H has the wrong length");
            assert_eq!(gh.len(), n * d, "grad H has the wrong length");
            (h.as_ptr(), gh.as_mut_ptr(), None, true)
        }
        Pass::Step { h, lr } => {
            assert_eq!(h.len(), n * d, "H has the wrong length");
            let p = h.as_mut_ptr();
            (p as *const T, p, Some(lr), true)
        }
    };
    assert_eq!(m.w.len(), k * d, "W has the wrong length");
    let isa = if isa.supported() { isa } else { Isa::Portable };
    // W (and each chunk's partial ∇_W) packed in panels of L features (the SIMD width):
    // entry (c, j) at j_0·K + c·L + (j − j_0) with j_0 = L⌊j/L⌋, so the K vectors one step of
    // the kernel needs are contiguous (one stream for the prefetchers instead of K rows that,
    // for d a multiple of 512, would also share a few L1 sets). The padding is zero.
    let lanes = isa.lanes::<T>();
    let dp = d.next_multiple_of(lanes);
    let mut wp = vec![T::zero(); k * dp];
    for c in 0..k {
        for j in 0..d {
            wp[panel_index(j, c, k, lanes)] = m.w[c * d + j];
        }
    }
    let rows = chunk_rows(n, k, d, std::mem::size_of::<T>());
    let n_chunks = n.div_ceil(rows);
    let (src, dst) = (SendPtr(src as *mut T), SendPtr(dst));
    let partials: Vec<Partial<T>> = (0..n_chunks)
        .into_par_iter()
        .map(|ci| {
            let first = ci * rows;
            let r = rows.min(n - first);
            let mut part = Partial {
                loss: 0.0,
                h_sq: 0.0,
                gh_sq: 0.0,
                gw: if grad {
                    vec![T::zero(); k * dp]
                } else {
                    Vec::new()
                },
                gb: if grad { vec![T::zero(); k] } else { Vec::new() },
            };
            let (s, t) = (&src, &dst);
            // SAFETY: chunk `ci` covers rows first..first+r of H (and of grad H), disjoint
            // from every other chunk's rows; `src`/`dst` point to n·d valid elements (checked
            // above) and outlive this call. In a step, `dst == src` and each element is read
            // before it is overwritten, by the same thread.
            let job = unsafe {
                Job {
                    src: s.0.add(first * d),
                    dst: if t.0.is_null() {
                        t.0
                    } else {
                        t.0.add(first * d)
                    },
                    rows: r,
                    labels: &m.labels[first..first + r],
                    lr,
                    w: &wp,
                    lanes,
                }
            };
            // SAFETY: as above.
            unsafe { run_chunk(m, &job, &mut part, isa) };
            part
        })
        .collect();
    let mut out = Sums {
        loss: 0.0,
        h_sq: 0.0,
        gh_sq: 0.0,
        gw: if grad {
            vec![T::zero(); k * d]
        } else {
            Vec::new()
        },
        gb: if grad { vec![T::zero(); k] } else { Vec::new() },
    };
    for p in &partials {
        out.loss += p.loss;
        out.h_sq += p.h_sq;
        out.gh_sq += p.gh_sq;
        if grad {
            for c in 0..k {
                for j in 0..d {
                    out.gw[c * d + j] += p.gw[panel_index(j, c, k, lanes)];
                }
            }
        }
        for (a, &b) in out.gb.iter_mut().zip(&p.gb) {
            *a += b;
        }
    }
    out
}

/// The instruction set a kernel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Four lanes, separate multiply and add (any CPU).
    Portable,
    /// AVX2 + FMA (x86-64).
    Avx2,
    /// AVX-512F (x86-64).
    Avx512,
}

impl Isa {
    /// The best one this CPU supports.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Whether this CPU can run it.
    fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// SIMD lanes of its kernel for `T`.
    fn lanes<T>(self) -> usize {
        let bytes = match self {
            Isa::Portable => 4 * std::mem::size_of::<T>(),
            Isa::Avx2 => 32,
            Isa::Avx512 => 64,
        };
        bytes / std::mem::size_of::<T>()
    }

    /// Every instruction set this CPU can run (for tests).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: the pointer is only dereferenced on disjoint row ranges (see `pass_with`).
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for SendPtr<T> {}

/// Partial sums of one chunk.
struct Partial<T> {
    loss: f64,
    h_sq: f64,
    gh_sq: f64,
    gw: Vec<T>,
    gb: Vec<T>,
}

/// One chunk of rows.
struct Job<'a, T> {
    /// First row of the chunk in $H^\top$.
    src: *const T,
    /// Where the rows of $\nabla_Hf$ (or, in a step, the updated rows) go; null for a value
    /// pass.
    dst: *mut T,
    rows: usize,
    labels: &'a [u32],
    /// `Some(η)`: a step (`dst == src`).
    lr: Option<T>,
    /// $W$ packed in panels of `lanes` features ([`panel_index`]); the partial
    /// $\nabla_Wf$ has the same layout.
    w: &'a [T],
    /// The SIMD width the panels were packed for.
    lanes: usize,
}

/// Where entry $(c, j)$ of a $K\times d$ matrix packed in panels of `lanes` features lives.
#[inline]
fn panel_index(j: usize, c: usize, k: usize, lanes: usize) -> usize {
    let j0 = j - j % lanes;
    j0 * k + c * lanes + (j - j0)
}

/// Runs one chunk with the instruction set `isa` (falling back to the portable kernel if the
/// CPU lacks it).
///
/// # Safety
/// `job.src` must point to `job.rows·d` readable elements and `job.dst` (if not null) to as
/// many writable ones, not accessed by anyone else meanwhile (`dst` may equal `src`).
unsafe fn run_chunk<T: Real>(m: &Model<'_, T>, job: &Job<'_, T>, part: &mut Partial<T>, isa: Isa) {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32, so these are the same types.
        let (m, job, part) = unsafe {
            (
                &*(m as *const Model<'_, T> as *const Model<'_, f32>),
                &*(job as *const Job<'_, T> as *const Job<'_, f32>),
                &mut *(part as *mut Partial<T> as *mut Partial<f32>),
            )
        };
        // SAFETY: forwarded contract.
        unsafe { run_typed::<f32>(m, job, part, isa) }
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        // SAFETY: T is f64, so these are the same types.
        let (m, job, part) = unsafe {
            (
                &*(m as *const Model<'_, T> as *const Model<'_, f64>),
                &*(job as *const Job<'_, T> as *const Job<'_, f64>),
                &mut *(part as *mut Partial<T> as *mut Partial<f64>),
            )
        };
        // SAFETY: forwarded contract.
        unsafe { run_typed::<f64>(m, job, part, isa) }
    } else {
        // SAFETY: forwarded contract.
        unsafe { chunk_body::<Portable<T>, 2, 4>(m, job, part) }
    }
}

/// Scalars with SIMD kernels.
trait Lanes: Real {
    /// # Safety
    /// As [`run_chunk`].
    unsafe fn run(m: &Model<'_, Self>, job: &Job<'_, Self>, part: &mut Partial<Self>, isa: Isa);
}

unsafe fn run_typed<T: Lanes>(m: &Model<'_, T>, job: &Job<'_, T>, part: &mut Partial<T>, isa: Isa) {
    // SAFETY: forwarded contract.
    unsafe { T::run(m, job, part, isa) }
}

macro_rules! lanes_impl {
    ($t:ty, $v512:ident, $v256:ident) => {
        impl Lanes for $t {
            unsafe fn run(m: &Model<'_, $t>, job: &Job<'_, $t>, part: &mut Partial<$t>, isa: Isa) {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f")]
                    unsafe fn k512(m: &Model<'_, $t>, job: &Job<'_, $t>, part: &mut Partial<$t>) {
                        // SAFETY: forwarded contract; AVX-512F is enabled here.
                        unsafe { chunk_body::<x86::$v512, 4, 5>(m, job, part) }
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn k256(m: &Model<'_, $t>, job: &Job<'_, $t>, part: &mut Partial<$t>) {
                        // SAFETY: forwarded contract; AVX2 and FMA are enabled here.
                        unsafe { chunk_body::<x86::$v256, 2, 5>(m, job, part) }
                    }
                    match isa {
                        Isa::Avx512 if std::is_x86_feature_detected!("avx512f") => {
                            // SAFETY: the CPU has AVX-512F (checked just above).
                            return unsafe { k512(m, job, part) };
                        }
                        Isa::Avx2
                            if std::is_x86_feature_detected!("avx2")
                                && std::is_x86_feature_detected!("fma") =>
                        {
                            // SAFETY: the CPU has AVX2 and FMA (checked just above).
                            return unsafe { k256(m, job, part) };
                        }
                        _ => {}
                    }
                }
                let _ = isa;
                // SAFETY: forwarded contract.
                unsafe { chunk_body::<Portable<$t>, 2, 4>(m, job, part) }
            }
        }
    };
}

lanes_impl!(f32, F32x16, F32x8);
lanes_impl!(f64, F64x8, F64x4);

/// A SIMD vector of `L` reals. Only the methods the kernel needs.
trait Simd: Copy {
    type T: Real;
    const L: usize;
    /// # Safety
    /// `p` must point to `L` readable elements (no alignment needed).
    unsafe fn load(p: *const Self::T) -> Self;
    /// # Safety
    /// `p` must point to `L` writable elements (no alignment needed).
    unsafe fn store(self, p: *mut Self::T);
    fn splat(x: Self::T) -> Self;
    /// `a * b + c` (fused where the instruction set has it).
    fn fma(a: Self, b: Self, c: Self) -> Self;
    fn mul(a: Self, b: Self) -> Self;
    fn hsum(self) -> Self::T;
    /// $x\leftarrow e^x$ for arguments $\le 0$ (softmax after the max shift; others are
    /// clamped to the exponent range).
    fn exp_inplace(x: &mut [Self::T]);
    /// Hints the cache line holding `p` into L1 (no effect where unsupported; `p` need not
    /// be dereferenceable).
    fn prefetch(p: *const Self::T);
}

/// Four lanes in plain Rust (the compiler vectorises what it can); no fused multiply-add.
#[derive(Clone, Copy)]
struct Portable<T>([T; 4]);

impl<T: Real> Simd for Portable<T> {
    type T = T;
    const L: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const T) -> Self {
        // SAFETY: caller's contract.
        Portable(unsafe { [*p, *p.add(1), *p.add(2), *p.add(3)] })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut T) {
        for (i, &v) in self.0.iter().enumerate() {
            // SAFETY: caller's contract.
            unsafe { *p.add(i) = v };
        }
    }
    #[inline(always)]
    fn splat(x: T) -> Self {
        Portable([x; 4])
    }
    #[inline(always)]
    fn fma(a: Self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|i| a.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    fn mul(a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| a.0[i] * b.0[i]))
    }
    #[inline(always)]
    fn hsum(self) -> T {
        (self.0[0] + self.0[2]) + (self.0[1] + self.0[3])
    }
    #[inline(always)]
    fn prefetch(_: *const T) {}
    #[inline(always)]
    fn exp_inplace(x: &mut [T]) {
        for v in x {
            *v = v.exp();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX-512F and AVX2 + FMA vectors. The methods are `#[inline(always)]` and are only
    //! called from the `#[target_feature]` kernels in the parent module, after the CPU was
    //! checked for the feature.
    use super::Simd;
    use std::arch::x86_64::*;

    macro_rules! vec_impl {
        ($name:ident, $t:ty, $l:expr, $v:ty, $load:ident, $store:ident, $set1:ident,
         $fmadd:ident, $mul:ident, $exp:ident, |$x:ident| $hsum:expr) => {
            #[derive(Clone, Copy)]
            pub(super) struct $name($v);
            impl Simd for $name {
                type T = $t;
                const L: usize = $l;
                #[inline(always)]
                unsafe fn load(p: *const $t) -> Self {
                    // SAFETY: caller's contract; the feature is enabled in every caller.
                    $name(unsafe { $load(p) })
                }
                #[inline(always)]
                unsafe fn store(self, p: *mut $t) {
                    // SAFETY: caller's contract; the feature is enabled in every caller.
                    unsafe { $store(p, self.0) }
                }
                #[inline(always)]
                fn splat(x: $t) -> Self {
                    // SAFETY: the feature is enabled in every caller.
                    $name(unsafe { $set1(x) })
                }
                #[inline(always)]
                fn fma(a: Self, b: Self, c: Self) -> Self {
                    // SAFETY: the feature is enabled in every caller.
                    $name(unsafe { $fmadd(a.0, b.0, c.0) })
                }
                #[inline(always)]
                fn mul(a: Self, b: Self) -> Self {
                    // SAFETY: the feature is enabled in every caller.
                    $name(unsafe { $mul(a.0, b.0) })
                }
                #[inline(always)]
                fn hsum(self) -> $t {
                    let $x = self.0;
                    $hsum
                }
                #[inline(always)]
                fn exp_inplace(x: &mut [$t]) {
                    for v in x {
                        *v = $exp(*v);
                    }
                }
                #[inline(always)]
                fn prefetch(p: *const $t) {
                    // SAFETY: a prefetch never faults, whatever the address (SSE, part of
                    // x86-64).
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
                }
            }
        };
    }

    /// $e^x$ in f32 without branches, so that a loop of them vectorises: $x=n\ln2+r$ with
    /// $n=\operatorname{round}(x/\ln2)$ (Cody–Waite two-part $\ln2$), $e^r$ by its degree-7
    /// Taylor polynomial ($|r|\le\ln2/2$: truncation error $<10^{-8}$ relative), times $2^n$
    /// built in the exponent bits. $x$ is clamped to $[-87, 88]$ (below, the result is
    /// $\approx 2\cdot10^{-38}$ instead of a subnormal or 0). Fused multiply-adds: only
    /// called from the FMA-enabled kernels.
    #[inline(always)]
    pub(super) fn exp_f32(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        let x = x.clamp(-87.0, 88.0);
        let n = (x * LOG2E).round_ties_even();
        let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
        let mut p: f32 = 1.0 / 5040.0;
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = p.mul_add(r, c);
        }
        p * f32::from_bits(((n as i32 + 127) as u32) << 23)
    }

    /// $e^x$ in f64, as [`exp_f32`] with a degree-13 polynomial (truncation error
    /// $<10^{-17}$ relative) and $x$ clamped to $[-708, 709]$.
    #[inline(always)]
    pub(super) fn exp_f64(x: f64) -> f64 {
        const LOG2E: f64 = std::f64::consts::LOG2_E;
        const LN2_HI: f64 = 0.693_147_180_369_123_8;
        const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
        let x = x.clamp(-708.0, 709.0);
        let n = (x * LOG2E).round_ties_even();
        let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
        let mut p: f64 = 1.0 / 6_227_020_800.0;
        for c in [
            1.0 / 479_001_600.0,
            1.0 / 39_916_800.0,
            1.0 / 3_628_800.0,
            1.0 / 362_880.0,
            1.0 / 40_320.0,
            1.0 / 5_040.0,
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = p.mul_add(r, c);
        }
        p * f64::from_bits(((n as i64 + 1023) as u64) << 52)
    }

    vec_impl!(
        F32x16,
        f32,
        16,
        __m512,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_mul_ps,
        exp_f32,
        // SAFETY: the feature is enabled in every caller.
        |v| unsafe { _mm512_reduce_add_ps(v) }
    );
    vec_impl!(
        F64x8,
        f64,
        8,
        __m512d,
        _mm512_loadu_pd,
        _mm512_storeu_pd,
        _mm512_set1_pd,
        _mm512_fmadd_pd,
        _mm512_mul_pd,
        exp_f64,
        // SAFETY: the feature is enabled in every caller.
        |v| unsafe { _mm512_reduce_add_pd(v) }
    );
    vec_impl!(
        F32x8,
        f32,
        8,
        __m256,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_mul_ps,
        exp_f32,
        // SAFETY: the feature is enabled in every caller.
        |v| unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    );
    vec_impl!(
        F64x4,
        f64,
        4,
        __m256d,
        _mm256_loadu_pd,
        _mm256_storeu_pd,
        _mm256_set1_pd,
        _mm256_fmadd_pd,
        _mm256_mul_pd,
        exp_f64,
        // SAFETY: the feature is enabled in every caller.
        |v| unsafe {
            let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
            let s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
            _mm_cvtsd_f64(s)
        }
    );
}

/// One chunk: groups of `R` rows, logits in tiles of `R × KC`.
///
/// # Safety
/// As [`run_chunk`]; `V` must be runnable on this CPU.
#[inline(always)]
unsafe fn chunk_body<V: Simd, const R: usize, const KC: usize>(
    m: &Model<'_, V::T>,
    job: &Job<'_, V::T>,
    part: &mut Partial<V::T>,
) {
    let k = m.k;
    assert_eq!(job.lanes, V::L, "W packed for another SIMD width");
    let mut z = vec![V::T::zero(); R * k];
    let mut gt = vec![V::T::zero(); R * k];
    let full = job.rows / R * R;
    let mut i = 0;
    while i < full {
        // SAFETY: rows i..i+R of the chunk exist (i + R <= rows).
        unsafe { group::<V, R, KC>(m, job, part, i, &mut z, &mut gt) };
        i += R;
    }
    while i < job.rows {
        // SAFETY: row i of the chunk exists.
        unsafe { group::<V, 1, KC>(m, job, part, i, &mut z[..k], &mut gt[..k]) };
        i += 1;
    }
}

/// Rows `i..i+R` of the chunk: logits, loss gradients, then the $W$/$H$ sweep.
///
/// # Safety
/// As [`chunk_body`], with `i + R <= job.rows`.
#[inline(always)]
unsafe fn group<V: Simd, const R: usize, const KC: usize>(
    m: &Model<'_, V::T>,
    job: &Job<'_, V::T>,
    part: &mut Partial<V::T>,
    i: usize,
    z: &mut [V::T],
    gt: &mut [V::T],
) {
    let (k, d) = (m.k, m.d);
    // SAFETY: rows i..i+R are inside the chunk.
    let h = unsafe { job.src.add(i * d) };
    // 1. logits
    let w = job.w.as_ptr();
    // Tiles of KC or KC − 1 classes (K = 10, KC = 4: 4, 3, 3 rather than 4, 4, 2), since
    // narrow tiles load as much of H per FMA as wide ones.
    let tiles = k.div_ceil(KC);
    let (base, extra) = (k / tiles, k % tiles);
    let mut c0 = 0;
    for t in 0..tiles {
        let kc = base + usize::from(t < extra);
        // SAFETY: classes c0..c0+kc exist (the tile sizes add up to k); rows as above.
        unsafe {
            match kc {
                5 => logits_tile::<V, R, 5>(h, d, w, z, k, c0),
                4 => logits_tile::<V, R, 4>(h, d, w, z, k, c0),
                3 => logits_tile::<V, R, 3>(h, d, w, z, k, c0),
                2 => logits_tile::<V, R, 2>(h, d, w, z, k, c0),
                _ => {
                    for c in c0..c0 + kc {
                        logits_tile::<V, R, 1>(h, d, w, z, k, c);
                    }
                }
            }
        }
        c0 += kc;
    }
    // 2. loss and its gradient / N
    let labels = &job.labels[i..i + R];
    for r in 0..R {
        if let Some(b) = m.b {
            for (zj, &bj) in z[r * k..(r + 1) * k].iter_mut().zip(b) {
                *zj += bj;
            }
        }
    }
    if m.loss == Loss::CrossEntropy {
        part.loss += cross_entropy_rows::<V, R>(z, k, labels, m.inv_n);
    } else {
        for (r, zr) in z.chunks_exact_mut(k).enumerate() {
            part.loss += m.loss.value_grad_inplace(zr, labels[r] as usize).to_f64_();
            for zj in zr.iter_mut() {
                *zj *= m.inv_n;
            }
        }
    }
    for r in 0..R {
        let zr = &z[r * k..(r + 1) * k];
        if !part.gb.is_empty() {
            for (g, &v) in part.gb.iter_mut().zip(zr.iter()) {
                *g += v;
            }
        }
        for (c, &v) in zr.iter().enumerate() {
            gt[c * R + r] = v;
        }
    }
    // 3. the sweep over j
    if job.dst.is_null() {
        // SAFETY: rows i..i+R are inside the chunk.
        part.h_sq += unsafe { rows_sq::<V, R>(h, d) };
        return;
    }
    // SAFETY: rows i..i+R of dst are inside the chunk.
    let dst = unsafe { job.dst.add(i * d) };
    // The next group's rows, fetched during this group's sweep (one cache line per row per
    // step of the sweep) so that its logits do not wait for memory.
    let next = if i + 2 * R <= job.rows {
        h.wrapping_add(R * d)
    } else {
        std::ptr::null()
    };
    let (hsq, ghsq) = unsafe {
        match job.lr {
            Some(lr) => sweep::<V, R, true>(
                h,
                next,
                dst,
                (d, k),
                w,
                part.gw.as_mut_ptr(),
                gt,
                m.lambda_h,
                lr,
            ),
            None => sweep::<V, R, false>(
                h,
                next,
                dst,
                (d, k),
                w,
                part.gw.as_mut_ptr(),
                gt,
                m.lambda_h,
                V::T::zero(),
            ),
        }
    };
    part.h_sq += hsq;
    part.gh_sq += ghsq;
}

/// Cross-entropy of `R` rows of logits `z` (`R × k`): replaces each row by
/// $(\operatorname{softmax}(z_r)-e_{y_r})/N$ and returns $\sum_r\big(\log\sum_je^{z_{rj}}-z_{ry_r}\big)$.
/// The formula of [`Loss::value_grad_inplace`], with the $R\cdot K$ exponentials in one
/// vectorised batch ([`Simd::exp_inplace`]).
#[inline(always)]
fn cross_entropy_rows<V: Simd, const R: usize>(
    z: &mut [V::T],
    k: usize,
    labels: &[u32],
    inv_n: V::T,
) -> f64 {
    let z = &mut z[..R * k];
    let mut mx = [V::T::zero(); R];
    let mut zy = [V::T::zero(); R];
    for (r, zr) in z.chunks_exact_mut(k).enumerate() {
        zy[r] = zr[labels[r] as usize];
        let mut m = zr[0];
        for &v in &zr[1..] {
            if v > m {
                m = v;
            }
        }
        for v in zr.iter_mut() {
            *v -= m;
        }
        mx[r] = m;
    }
    V::exp_inplace(z);
    let mut loss = 0.0;
    for (r, zr) in z.chunks_exact_mut(k).enumerate() {
        let s: V::T = zr.iter().copied().sum();
        let scale = inv_n / s;
        for v in zr.iter_mut() {
            *v *= scale;
        }
        zr[labels[r] as usize] -= inv_n;
        loss += ((mx[r] + num_traits::Float::ln(s)) - zy[r]).to_f64_();
    }
    loss
}

/// `z[r·k + c0 + c] = h_r · w_c` for `r < R`, `c < KC`.
///
/// # Safety
/// `h` points to `R` rows of `d` elements, `w` to the packed $W$ ([`panel_index`], panels
/// of `V::L`) with classes `c0..c0+KC`; `z` has `R·k` entries.
#[inline(always)]
unsafe fn logits_tile<V: Simd, const R: usize, const KC: usize>(
    h: *const V::T,
    d: usize,
    w: *const V::T,
    z: &mut [V::T],
    k: usize,
    c0: usize,
) {
    let mut acc = [[V::splat(V::T::zero()); KC]; R];
    let dm = d - d % V::L;
    let mut j = 0;
    while j < dm {
        // SAFETY: j + L <= d.
        let hv: [V; R] = std::array::from_fn(|r| unsafe { V::load(h.add(r * d + j)) });
        for c in 0..KC {
            // SAFETY: j + L <= d.
            let wv = unsafe { V::load(w.add(j * k + (c0 + c) * V::L)) };
            for r in 0..R {
                acc[r][c] = V::fma(hv[r], wv, acc[r][c]);
            }
        }
        j += V::L;
    }
    for r in 0..R {
        for c in 0..KC {
            let mut s = acc[r][c].hsum();
            for jj in dm..d {
                // SAFETY: jj < d.
                unsafe { s += *h.add(r * d + jj) * *w.add(dm * k + (c0 + c) * V::L + jj - dm) };
            }
            z[r * k + c0 + c] = s;
        }
    }
}

/// $\sum_r\lVert h_r\rVert^2$ of `R` rows, summed in exactly the order of [`sweep`] (so $f$
/// from a value pass and from a gradient pass are the same bits).
///
/// # Safety
/// `h` points to `R` rows of `d` elements.
#[inline(always)]
unsafe fn rows_sq<V: Simd, const R: usize>(h: *const V::T, d: usize) -> f64 {
    let mut hsq = V::splat(V::T::zero());
    let dm = d - d % V::L;
    let mut j = 0;
    while j < dm {
        for r in 0..R {
            // SAFETY: j + L <= d.
            let hv = unsafe { V::load(h.add(r * d + j)) };
            hsq = V::fma(hv, hv, hsq);
        }
        j += V::L;
    }
    let mut hs = 0.0f64;
    hs += hsq.hsum().to_f64_();
    for jj in dm..d {
        for r in 0..R {
            // SAFETY: jj < d.
            let hv = unsafe { *h.add(r * d + jj) };
            hs += (hv * hv).to_f64_();
        }
    }
    hs
}

/// The sweep over $j$ for `R` rows with loss gradients `g` (`k × R`, class-major): accumulates
/// $\sum_rg_{rc}h_{rj}$ into `gw`, forms $\nabla_{h_r}f$ and writes it (or, when `STEP`,
/// $h_r-\eta\nabla_{h_r}f$) to `dst`. Returns $\sum_r\lVert h_r\rVert^2$ and
/// $\sum_r\lVert\nabla_{h_r}f\rVert^2$.
///
/// # Safety
/// `h` and `dst` point to `R` rows of `d` elements (`dst` may equal `h`), `w` and `gw` to `k`
/// classes packed in panels of `V::L` ([`panel_index`]); `g` has `R·k` entries.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn sweep<V: Simd, const R: usize, const STEP: bool>(
    h: *const V::T,
    next: *const V::T,
    dst: *mut V::T,
    (d, k): (usize, usize),
    w: *const V::T,
    gw: *mut V::T,
    g: &[V::T],
    lambda_h: V::T,
    lr: V::T,
) -> (f64, f64) {
    let zero = V::splat(V::T::zero());
    let (lam, neg_lr) = (V::splat(lambda_h), V::splat(-lr));
    // One accumulator each for Σ_r |h_r|² and Σ_r |∇h_r|² (registers are better spent on
    // rows; the R-long dependency chain per step is hidden behind the 2RK FMAs).
    let mut hsq = zero;
    let mut ghsq = zero;
    assert!(g.len() >= R * k);
    let gp = g.as_ptr();
    let dm = d - d % V::L;
    let mut j = 0;
    while j < dm {
        // SAFETY: j + L <= d for every row.
        let hv: [V; R] = std::array::from_fn(|r| unsafe { V::load(h.add(r * d + j)) });
        if !next.is_null() {
            for r in 0..R {
                V::prefetch(next.wrapping_add(r * d + j));
            }
        }
        let mut gh: [V; R] = std::array::from_fn(|r| V::mul(lam, hv[r]));
        for r in 0..R {
            hsq = V::fma(hv[r], hv[r], hsq);
        }
        for c in 0..k {
            // SAFETY: c < k, j + L <= d.
            let o = j * k + c * V::L;
            let (wp, gwp) = unsafe { (w.add(o), gw.add(o)) };
            // SAFETY: as above.
            let wv = unsafe { V::load(wp) };
            // SAFETY: as above.
            let mut gwv = unsafe { V::load(gwp) };
            for r in 0..R {
                // SAFETY: c·R + r < R·k <= g.len() (asserted above).
                let gs = V::splat(unsafe { *gp.add(c * R + r) });
                gh[r] = V::fma(gs, wv, gh[r]);
                gwv = V::fma(gs, hv[r], gwv);
            }
            // SAFETY: as above.
            unsafe { gwv.store(gwp) };
        }
        for r in 0..R {
            ghsq = V::fma(gh[r], gh[r], ghsq);
            // SAFETY: j + L <= d; this row's elements j..j+L were read above.
            unsafe {
                if STEP {
                    V::fma(neg_lr, gh[r], hv[r]).store(dst.add(r * d + j));
                } else {
                    gh[r].store(dst.add(r * d + j));
                }
            }
        }
        j += V::L;
    }
    let (mut hs, mut gs) = (0.0f64, 0.0f64);
    hs += hsq.hsum().to_f64_();
    gs += ghsq.hsum().to_f64_();
    for jj in dm..d {
        for r in 0..R {
            // SAFETY: jj < d, c < k; the element is read before it is overwritten.
            unsafe {
                let hv = *h.add(r * d + jj);
                let mut ghv = lambda_h * hv;
                for c in 0..k {
                    let gc = g[c * R + r];
                    let o = dm * k + c * V::L + jj - dm;
                    ghv += gc * *w.add(o);
                    *gw.add(o) += gc * hv;
                }
                hs += (hv * hv).to_f64_();
                gs += (ghv * ghv).to_f64_();
                *dst.add(r * d + jj) = if STEP { hv - lr * ghv } else { ghv };
            }
        }
    }
    (hs, gs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow, obviously correct sums in f64: explicit loops over samples, classes and features.
    struct Naive {
        loss: f64,
        h_sq: f64,
        gh_sq: f64,
        gw: Vec<f64>,
        gb: Vec<f64>,
        gh: Vec<f64>,
    }

    fn naive(m: &Model<'_, f64>, h: &[f64]) -> Naive {
        let (k, d) = (m.k, m.d);
        let n = m.labels.len();
        let mut out = Naive {
            loss: 0.0,
            h_sq: 0.0,
            gh_sq: 0.0,
            gw: vec![0.0; k * d],
            gb: vec![0.0; k],
            gh: vec![0.0; n * d],
        };
        for i in 0..n {
            let hi = &h[i * d..(i + 1) * d];
            let mut z: Vec<f64> = (0..k)
                .map(|c| {
                    (0..d).map(|j| m.w[c * d + j] * hi[j]).sum::<f64>() + m.b.map_or(0.0, |b| b[c])
                })
                .collect();
            out.loss += m.loss.value_grad_inplace(&mut z, m.labels[i] as usize);
            for c in 0..k {
                let g = z[c] * m.inv_n;
                out.gb[c] += g;
                for j in 0..d {
                    out.gw[c * d + j] += g * hi[j];
                }
            }
            for j in 0..d {
                let mut v = m.lambda_h * hi[j];
                for c in 0..k {
                    v += z[c] * m.inv_n * m.w[c * d + j];
                }
                out.gh[i * d + j] = v;
                out.gh_sq += v * v;
                out.h_sq += hi[j] * hi[j];
            }
        }
        out
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1.0)
    }

    fn max_rel(a: &[f64], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0.0f64, |s, v| s.max(v.abs())).max(1e-300);
        a.iter()
            .zip(b)
            .fold(0.0f64, |s, (x, y)| s.max((x - y).abs() / scale))
    }

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// Sizes that exercise every tail: K not a multiple of the class tile, d not a multiple
    /// of any lane count, N spanning several chunks with a ragged row group at the end.
    const SIZES: [(usize, usize, usize); 3] = [(7, 37, 1203), (10, 64, 530), (3, 5, 9)];

    #[test]
    fn every_isa_matches_naive_loops_f64_and_f32() {
        for &(k, d, n) in &SIZES {
            for (li, loss) in [
                Loss::CrossEntropy,
                Loss::Mse,
                Loss::LabelSmoothing { alpha: 0.1 },
                Loss::Focal { gamma: 2.0 },
            ]
            .into_iter()
            .enumerate()
            {
                let w: Vec<f64> = values(k * d, 1 + li as u64)
                    .iter()
                    .map(|v| 0.5 * v)
                    .collect();
                let b = values(k, 2);
                let h = values(n * d, 3);
                let labels: Vec<u32> = (0..n).map(|i| ((i * 7 + i / 3) % k) as u32).collect();
                let m = Model {
                    w: &w,
                    b: Some(&b),
                    labels: &labels,
                    k,
                    d,
                    loss,
                    inv_n: 1.0 / n as f64,
                    lambda_h: 3e-2,
                };
                let want = naive(&m, &h);
                let (w32, b32, h32): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                    w.iter().map(|&v| v as f32).collect(),
                    b.iter().map(|&v| v as f32).collect(),
                    h.iter().map(|&v| v as f32).collect(),
                );
                let m32 = Model {
                    w: &w32,
                    b: Some(&b32),
                    labels: &labels,
                    k,
                    d,
                    loss,
                    inv_n: 1.0 / n as f32,
                    lambda_h: 3e-2,
                };
                for isa in Isa::available() {
                    let ctx = format!("{isa:?} {loss} K={k} d={d} N={n}");
                    // f64: agreement to round-off.
                    let mut gh = vec![f64::NAN; n * d];
                    let s = pass_with(&m, Pass::Grad { h: &h, gh: &mut gh }, isa);
                    assert!(rel(s.loss, want.loss) < 1e-12, "{ctx}: loss");
                    assert!(rel(s.h_sq, want.h_sq) < 1e-12, "{ctx}: |H|^2");
                    assert!(rel(s.gh_sq, want.gh_sq) < 1e-12, "{ctx}: |grad H|^2");
                    assert!(max_rel(&s.gw, &want.gw) < 1e-12, "{ctx}: grad W");
                    assert!(max_rel(&s.gb, &want.gb) < 1e-12, "{ctx}: grad b");
                    assert!(max_rel(&gh, &want.gh) < 1e-12, "{ctx}: grad H");
                    let v = pass_with(&m, Pass::Value(&h), isa);
                    assert_eq!(v.loss, s.loss, "{ctx}: value pass loss");
                    assert!(rel(v.h_sq, want.h_sq) < 1e-12, "{ctx}: value pass |H|^2");
                    // The step writes h − η ∇_H f (one fused multiply-add per entry).
                    let lr = 0.7;
                    let mut hs = h.clone();
                    let st = pass_with(&m, Pass::Step { h: &mut hs, lr }, isa);
                    assert_eq!(st.gw, s.gw, "{ctx}: step grad W");
                    assert_eq!(st.gh_sq, s.gh_sq, "{ctx}: step |grad H|^2");
                    let expect: Vec<f64> = h.iter().zip(&gh).map(|(a, g)| a - lr * g).collect();
                    assert!(max_rel(&hs, &expect) < 1e-14, "{ctx}: step H");
                    // f32: agreement to single-precision round-off.
                    let mut gh32 = vec![f32::NAN; n * d];
                    let s32 = pass_with(
                        &m32,
                        Pass::Grad {
                            h: &h32,
                            gh: &mut gh32,
                        },
                        isa,
                    );
                    let up = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
                    assert!(rel(s32.loss, want.loss) < 1e-4, "{ctx}: f32 loss");
                    assert!(rel(s32.h_sq, want.h_sq) < 1e-5, "{ctx}: f32 |H|^2");
                    assert!(max_rel(&up(&s32.gw), &want.gw) < 1e-4, "{ctx}: f32 grad W");
                    assert!(max_rel(&up(&gh32), &want.gh) < 1e-4, "{ctx}: f32 grad H");
                }
            }
        }
    }

    /// The branch-free exponentials of the SIMD kernels against the standard library's, on
    /// the softmax range and past the clamps.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn polynomial_exp_is_accurate_to_a_few_ulp() {
        // x from -120 to 30
        for i in 0..=115_000 {
            let x = -120.0 + i as f64 * 1.3e-3;
            let want = x.exp();
            let got = x86::exp_f64(x);
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want,
                "f64 exp({x}) = {got}, want {want}"
            );
            let x32 = x as f32;
            let want32 = (x32 as f64).exp();
            let got32 = x86::exp_f32(x32) as f64;
            if x32 >= -87.0 {
                assert!(
                    (got32 - want32).abs() <= 4.0 * f32::EPSILON as f64 * want32,
                    "f32 exp({x32}) = {got32}, want {want32}"
                );
            } else {
                // clamped: e^-87 instead of a subnormal or 0, still negligible next to 1
                assert!(got32 <= 1.7e-38, "f32 exp({x32}) = {got32}");
            }
        }
        assert_eq!(x86::exp_f64(0.0), 1.0);
        assert_eq!(x86::exp_f32(0.0), 1.0);
        assert!(x86::exp_f64(-800.0) < 1e-307 && x86::exp_f64(-800.0) > 0.0);
    }

    #[test]
    fn result_bytes_do_not_depend_on_the_thread_count() {
        // 2,600 samples: 6 chunks of 512 (the last ragged), more chunks than threads.
        let (k, d, n) = (6, 70, 2600);
        let w: Vec<f32> = values(k * d, 5).iter().map(|&v| v as f32).collect();
        let h: Vec<f32> = values(n * d, 6).iter().map(|&v| v as f32).collect();
        let labels: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
        let m = Model {
            w: &w,
            b: None,
            labels: &labels,
            k,
            d,
            loss: Loss::CrossEntropy,
            inv_n: 1.0 / n as f32,
            lambda_h: 1e-3,
        };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut hs = h.clone();
                let s = pass(
                    &m,
                    Pass::Step {
                        h: &mut hs,
                        lr: 0.5,
                    },
                );
                (s.loss, s.h_sq, s.gh_sq, s.gw, hs)
            })
        };
        let one = run(1);
        for t in [2, 3, 5] {
            let other = run(t);
            assert_eq!(one.0.to_bits(), other.0.to_bits(), "{t} threads: loss");
            assert_eq!(one.1.to_bits(), other.1.to_bits(), "{t} threads: |H|^2");
            assert_eq!(
                one.2.to_bits(),
                other.2.to_bits(),
                "{t} threads: |grad H|^2"
            );
            assert_eq!(one.3, other.3, "{t} threads: grad W");
            assert_eq!(one.4, other.4, "{t} threads: H");
        }
    }
}
