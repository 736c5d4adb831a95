//! Layers with hand-written forward and backward passes.
//!
//! Each layer maps its input $x$ to $y=f_\theta(x)$ in `forward`, caching what the backward
//! pass needs, and `backward` turns $\partial\ell/\partial y$ into $\partial\ell/\partial x$
//! while **accumulating** $\partial\ell/\partial\theta$ into each [`Param::grad`] (zero them
//! with [`Module::zero_grad`] between steps). Layers are generic over [`Real`]: `f32` for
//! training, `f64` for the central-difference gradient checks in `tests/nn_gradcheck.rs`.
//!
//! Parameters and buffers are reached through [`Module::visit`] with PyTorch's `state_dict`
//! names (`conv1.weight`, `layer1.0.bn1.running_mean`, `fc.bias`, ...), which is what the
//! optimizers and the safetensors checkpoints use.

/// `fn $name<decl..>(args) -> ret` that runs `$body::<names..>(args)` (an `#[inline(always)]`
/// function) compiled for AVX-512F, else AVX2 + FMA, else the baseline x86-64 (SSE2), picked at
/// run time. The element-wise loops of the layers vectorise only as wide as the build target
/// allows; these copies give them the CPU's widest vectors. Rust never contracts `a * b + c`
/// into a fused multiply-add, so every copy performs the same IEEE operations in the same
/// order: the same bits on every CPU path.
macro_rules! wide_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident[$($decl:tt)*]<$($gn:ident),*>($($a:ident: $t:ty),* $(,)?) -> $ret:ty = $body:ident) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$($decl)*>($($a: $t),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f")]
                unsafe fn w512<$($decl)*>($($a: $t),*) -> $ret {
                    $body::<$($gn),*>($($a),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                unsafe fn w256<$($decl)*>($($a: $t),*) -> $ret {
                    $body::<$($gn),*>($($a),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: AVX-512F is present (checked just above).
                    return unsafe { w512::<$($gn),*>($($a),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: AVX2 and FMA are present (checked just above).
                    return unsafe { w256::<$($gn),*>($($a),*) };
                }
            }
            $body::<$($gn),*>($($a),*)
        }
    };
}

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod winograd;

pub use activation::Relu;
pub use batchnorm::BatchNorm;
pub use conv::Conv2d;
pub use linear::Linear;
pub use loss::{cross_entropy, mse_one_hot, LossKind};
pub use pool::{GlobalAvgPool, MaxPool2d};

use crate::real::Real;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, Axis};

/// A learnable tensor with its gradient. `trainable == false` freezes it (PyTorch's
/// `requires_grad=False`): optimizers skip it and it does not count in the parameter total.
#[derive(Clone, Debug)]
pub struct Param<T> {
    /// The value.
    pub value: ArrayD<T>,
    /// $\partial\ell/\partial\,$value, accumulated by `backward`.
    pub grad: ArrayD<T>,
    /// Whether the optimizer updates it.
    pub trainable: bool,
}

impl<T: Real> Param<T> {
    /// A trainable parameter with zero gradient.
    pub fn new(value: ArrayD<T>) -> Self {
        let grad = ArrayD::zeros(value.raw_dim());
        Param {
            value,
            grad,
            trainable: true,
        }
    }
    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.value.len()
    }
    /// True for an empty tensor.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

/// A mutable handle on one entry of a module's state, as seen by [`Module::visit`].
pub enum TensorMut<'a, T> {
    /// A parameter (`weight`, `bias`).
    Param(&'a mut Param<T>),
    /// A floating-point buffer (`running_mean`, `running_var`).
    Buffer(&'a mut ArrayD<T>),
    /// An integer buffer (`num_batches_tracked`, stored as int64 by PyTorch).
    Count(&'a mut i64),
}

/// Anything that owns parameters or buffers.
pub trait Module<T: Real> {
    /// Calls `f` on every parameter and buffer with its full PyTorch name (`prefix` + local
    /// name), in `state_dict` order.
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, TensorMut<'_, T>));

    /// Sets every gradient to zero.
    fn zero_grad(&mut self) {
        self.visit("", &mut |_, t| {
            if let TensorMut::Param(p) = t {
                // One memset over contiguous storage (ndarray's `fill` goes element by element).
                match p.grad.as_slice_memory_order_mut() {
                    Some(s) => s.fill(T::zero()),
                    None => p.grad.fill(T::zero()),
                }
            }
        });
    }

    /// Number of trainable scalars (PyTorch's `sum(p.numel() for p in parameters() if
    /// p.requires_grad)`).
    fn n_trainable(&mut self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, t| {
            if let TensorMut::Param(p) = t {
                if p.trainable {
                    n += p.len();
                }
            }
        });
        n
    }
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// $C\leftarrow\alpha AB+\beta C$ through [`gemm_seq`] (faer's kernels), split into independent
/// blocks of $C$ over the rayon pool when the product is large (the GEMMs of a network are big
/// enough that two cores give close to 2×). Every entry of $C$ is one dot product over the
/// whole inner dimension, summed in the same order however $C$ is split, so the result does
/// not depend on the number of threads.
pub fn gemm<T: Real>(alpha: T, a: ArrayView2<T>, b: ArrayView2<T>, beta: T, c: ArrayViewMut2<T>) {
    let depth = (rayon::current_num_threads().max(1) as f64).log2().ceil() as u32 + 1;
    gemm_rec(alpha, a, b, beta, c, depth);
}

fn gemm_rec<T: Real>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    beta: T,
    mut c: ArrayViewMut2<T>,
    depth: u32,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    if depth == 0 || m * n * k < (1 << 20) || (m < 16 && n < 16) {
        if beta == T::zero() {
            gemm_seq(alpha, a, b, false, c);
        } else {
            if beta != T::one() {
                c.mapv_inplace(|v| v * beta);
            }
            gemm_seq(alpha, a, b, true, c);
        }
        return;
    }
    if n >= m {
        let h = n / 2;
        let (b0, b1) = b.split_at(Axis(1), h);
        let (c0, c1) = c.split_at(Axis(1), h);
        rayon::join(
            || gemm_rec(alpha, a, b0, beta, c0, depth - 1),
            || gemm_rec(alpha, a, b1, beta, c1, depth - 1),
        );
    } else {
        let h = m / 2;
        let (a0, a1) = a.split_at(Axis(0), h);
        let (c0, c1) = c.split_at(Axis(0), h);
        rayon::join(
            || gemm_rec(alpha, a0, b, beta, c0, depth - 1),
            || gemm_rec(alpha, a1, b, beta, c1, depth - 1),
        );
    }
}

/// `x` itself when it is in standard (row-major, contiguous) layout, else a standard copy.
pub fn standard<T: Clone, D: ndarray::Dimension>(x: ndarray::Array<T, D>) -> ndarray::Array<T, D> {
    if x.is_standard_layout() {
        x
    } else {
        x.as_standard_layout().into_owned()
    }
}

/// $C\leftarrow\alpha AB$ (`accumulate == false`) or $C\leftarrow C+\alpha AB$ on the calling
/// thread, for any strides. `f32` and `f64` go through faer's matrix-multiply kernels (run-time
/// AVX-512 / AVX2 / NEON dispatch; 1.1–1.7× matrixmultiply on the convolution shapes here), other
/// types through ndarray. The convolutions call it from inside their own rayon tasks.
pub fn gemm_seq<T: Real>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    accumulate: bool,
    mut c: ArrayViewMut2<T>,
) {
    use std::any::TypeId;
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "gemm inner dimensions");
    assert_eq!(c.dim(), (m, n), "gemm output shape");
    if m == 0 || n == 0 {
        return;
    }
    let raw = |v: &ArrayView2<T>| (v.strides()[0], v.strides()[1]);
    let (sa, sb, sc) = (raw(&a), raw(&b), (c.strides()[0], c.strides()[1]));
    let acc = if accumulate {
        faer::Accum::Add
    } else {
        faer::Accum::Replace
    };
    // SAFETY (both branches): T is exactly the type cast to (checked through TypeId), the
    // pointers and strides come from live ndarray views of the stated shapes, and `c` is a
    // unique borrow, so it aliases neither `a` nor `b`.
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        unsafe {
            let av = faer::MatRef::from_raw_parts(a.as_ptr() as *const f32, m, k, sa.0, sa.1);
            let bv = faer::MatRef::from_raw_parts(b.as_ptr() as *const f32, k, n, sb.0, sb.1);
            let cv = faer::MatMut::from_raw_parts_mut(c.as_mut_ptr() as *mut f32, m, n, sc.0, sc.1);
            faer::linalg::matmul::matmul(cv, acc, av, bv, alpha.to_f64_() as f32, faer::Par::Seq);
        }
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        unsafe {
            let av = faer::MatRef::from_raw_parts(a.as_ptr() as *const f64, m, k, sa.0, sa.1);
            let bv = faer::MatRef::from_raw_parts(b.as_ptr() as *const f64, k, n, sb.0, sb.1);
            let cv = faer::MatMut::from_raw_parts_mut(c.as_mut_ptr() as *mut f64, m, n, sc.0, sc.1);
            faer::linalg::matmul::matmul(cv, acc, av, bv, alpha.to_f64_(), faer::Par::Seq);
        }
    } else {
        let beta = if accumulate { T::one() } else { T::zero() };
        general_mat_mul(alpha, &a, &b, beta, &mut c);
    }
}

/// Parameter initialisers (PyTorch's, seeded).
pub mod init {
    use super::*;
    use rand::rngs::StdRng;
    use rand::RngExt;
    use rand_distr::{Distribution, Normal};

    /// $\mathcal U(-a,a)$ entries.
    pub fn uniform<T: Real>(shape: &[usize], a: f64, rng: &mut StdRng) -> ArrayD<T> {
        ArrayD::from_shape_simple_fn(shape, || T::of(rng.random_range(-a..a)))
    }

    /// $\mathcal N(0,\sigma^2)$ entries.
    pub fn normal<T: Real>(shape: &[usize], sigma: f64, rng: &mut StdRng) -> ArrayD<T> {
        let d = Normal::new(0.0, sigma).expect("sigma is finite and positive");
        ArrayD::from_shape_simple_fn(shape, || T::of(d.sample(rng)))
    }

    /// PyTorch's default for `nn.Linear` and `nn.Conv2d`: `kaiming_uniform_(a=√5)` on the
    /// weight, i.e. $\mathcal U(\pm1/\sqrt{\text{fan\_in}})$, and the same bound for the bias.
    pub fn torch_default_bound(fan_in: usize) -> f64 {
        1.0 / (fan_in as f64).sqrt()
    }

    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`: $\sigma=\sqrt{2/\text{fan\_out}}$
    /// with $\text{fan\_out}=C_\text{out}k_hk_w$ (torchvision's ResNet convolutions).
    pub fn kaiming_fan_out_std(out_channels: usize, kh: usize, kw: usize) -> f64 {
        (2.0 / (out_channels * kh * kw) as f64).sqrt()
    }
}
