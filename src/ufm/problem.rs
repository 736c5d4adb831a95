//! A validated UFM instance: class sizes, feature dimension, regularisation and loss.
//!
//! The unchecked [`UfmConfig`] (public fields, builder setters) becomes a [`UfmProblem`] through
//! [`UfmConfig::build`], which checks every value once; solvers and metrics trust a
//! `UfmProblem`.
//!
//! # Parameter layout
//! Solvers work on one flat vector $x=(W, H^\top, b)$:
//! $W\in\mathbb R^{K\times d}$ row-major, then $H^\top\in\mathbb R^{N\times d}$ row-major (row $i$
//! is the feature $h_i$ of sample $i$, samples grouped by class in class order), then
//! $b\in\mathbb R^K$ when the model has a bias. Storing $H^\top$ keeps each feature contiguous,
//! which is what the fused, cache-blocked objective streams over.

use crate::error::{Error, Result};
use crate::real::Real;
use crate::ufm::loss::Loss;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// Unchecked description of a UFM instance; turn it into a [`UfmProblem`] with [`build`](Self::build).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UfmConfig {
    /// Samples per class $n_k$ (length $K$).
    pub class_sizes: Vec<usize>,
    /// Feature dimension $d$.
    pub feature_dim: usize,
    /// $\lambda_W$, weight decay on the classifier.
    pub lambda_w: f64,
    /// $\lambda_H$, weight decay on the features.
    pub lambda_h: f64,
    /// $\lambda_b$, weight decay on the bias.
    pub lambda_b: f64,
    /// The loss.
    pub loss: Loss,
    /// Whether the classifier has a bias $b$ (when false, $b\equiv0$ is not a parameter).
    pub bias: bool,
}

impl UfmConfig {
    /// `n_classes` classes of `n_per_class` samples, features in $\mathbb R^{d}$, cross-entropy,
    /// $\lambda_W=\lambda_H=\lambda_b=5\cdot10^{-4}$ (the original code's weight decay), with bias.
    pub fn balanced(n_classes: usize, n_per_class: usize, feature_dim: usize) -> Self {
        Self::with_class_sizes(vec![n_per_class; n_classes], feature_dim)
    }

    /// Like [`balanced`](Self::balanced), but checks the sizes first: $K\le2^{32}-1$,
    /// $N=Kn$ and the memory of a point $\approx 8K+4N+24\,((K+N)d+K)$ bytes must fit
    /// ([`crate::limits::check_memory`]); otherwise an error names the sizes, before anything
    /// is allocated (`vec![n; K]` with $K$ near `usize::MAX` would abort the process).
    pub fn try_balanced(n_classes: usize, n_per_class: usize, feature_dim: usize) -> Result<Self> {
        if n_classes > u32::MAX as usize {
            return Err(Error::param(
                "classes",
                format!("{n_classes} classes are too many (at most {})", u32::MAX),
            ));
        }
        let n = n_classes.checked_mul(n_per_class);
        check_sizes(
            "per-class",
            &format!("K = {n_classes} classes of n = {n_per_class} samples, d = {feature_dim}"),
            n_classes,
            n,
            feature_dim,
            true,
        )?;
        Ok(Self::balanced(n_classes, n_per_class, feature_dim))
    }

    /// Classes of the given sizes (imbalanced allowed).
    pub fn with_class_sizes(class_sizes: Vec<usize>, feature_dim: usize) -> Self {
        UfmConfig {
            class_sizes,
            feature_dim,
            lambda_w: 5e-4,
            lambda_h: 5e-4,
            lambda_b: 5e-4,
            loss: Loss::CrossEntropy,
            bias: true,
        }
    }

    /// Sets $(\lambda_W,\lambda_H,\lambda_b)$.
    pub fn lambdas(mut self, lambda_w: f64, lambda_h: f64, lambda_b: f64) -> Self {
        self.lambda_w = lambda_w;
        self.lambda_h = lambda_h;
        self.lambda_b = lambda_b;
        self
    }

    /// Sets the loss.
    pub fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// Sets whether the model has a bias.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<UfmProblem> {
        let k = check_class_sizes(&self.class_sizes)?;
        if self.feature_dim == 0 {
            return Err(Error::param(
                "dim",
                "the feature dimension d must be at least 1",
            ));
        }
        for (name, v) in [
            ("lambda-w", self.lambda_w),
            ("lambda-h", self.lambda_h),
            ("lambda-b", self.lambda_b),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::param(
                    name,
                    format!("must be finite and >= 0, got {v}"),
                ));
            }
        }
        self.loss.validate()?;
        let n: Option<usize> = self
            .class_sizes
            .iter()
            .try_fold(0usize, |a, &b| a.checked_add(b));
        let d = self.feature_dim;
        let (flag, what) = match self.class_sizes.iter().all(|&c| c == self.class_sizes[0]) {
            true => (
                "per-class",
                format!(
                    "K = {k} classes of n = {} samples, d = {d}",
                    self.class_sizes[0]
                ),
            ),
            false => (
                "class-sizes",
                format!(
                    "K = {k} classes of {} samples in all, d = {d}",
                    n.map_or("more than 2^64".to_string(), |n| n.to_string())
                ),
            ),
        };
        let (n, n_params) = check_sizes(flag, &what, k, n, d, self.bias)?;
        let mut labels = Vec::new();
        labels.try_reserve_exact(n).map_err(|e| {
            Error::param(
                flag,
                format!("{what}: cannot allocate the {n} labels ({e})"),
            )
        })?;
        for (c, &nk) in self.class_sizes.iter().enumerate() {
            labels.extend(std::iter::repeat_n(c as u32, nk));
        }
        Ok(UfmProblem {
            cfg: self,
            labels,
            n_params,
        })
    }
}

/// Checks that $N$ (`None`: it overflowed), the parameter count $(K+N)d\,(+K)$ and the memory
/// of a point ($8K+4N+24P$ bytes: class sizes, labels, and the point, its gradient and one work
/// vector in f64) fit; returns $(N, P)$. `flag` and `what` name the sizes in the error.
fn check_sizes(
    flag: &'static str,
    what: &str,
    k: usize,
    n: Option<usize>,
    d: usize,
    bias: bool,
) -> Result<(usize, usize)> {
    let n = n.ok_or_else(|| {
        Error::param(
            flag,
            format!(
                "{what}: the number of samples N overflows {} bits",
                usize::BITS
            ),
        )
    })?;
    let n_params = k
        .checked_add(n)
        .and_then(|kn| kn.checked_mul(d))
        .and_then(|p| p.checked_add(if bias { k } else { 0 }))
        .ok_or_else(|| {
            Error::param(
                flag,
                format!(
                    "{what}, N = {n}: the parameter count (K + N) d overflows {} bits",
                    usize::BITS
                ),
            )
        })?;
    let bytes = (k as u64)
        .checked_mul(8)
        .and_then(|a| a.checked_add((n as u64).checked_mul(4)?))
        .and_then(|a| a.checked_add((n_params as u64).checked_mul(24)?));
    crate::limits::check_memory(
        flag,
        &format!("{what} (N = {n}, {n_params} parameters)"),
        bytes,
    )?;
    Ok((n, n_params))
}

/// A validated UFM instance (see the [module docs](self) for the parameter layout).
#[derive(Clone, Debug)]
pub struct UfmProblem {
    cfg: UfmConfig,
    labels: Vec<u32>,
    n_params: usize,
}

/// Borrowed views of a parameter vector: $(W, H^\top, b)$.
pub type PointView<'a, T> = (
    ArrayView2<'a, T>,
    ArrayView2<'a, T>,
    Option<ArrayView1<'a, T>>,
);
/// Mutable views of a parameter vector.
pub type PointViewMut<'a, T> = (
    ArrayViewMut2<'a, T>,
    ArrayViewMut2<'a, T>,
    Option<ArrayViewMut1<'a, T>>,
);

impl UfmProblem {
    /// The configuration this problem was built from.
    pub fn config(&self) -> &UfmConfig {
        &self.cfg
    }
    /// $K$.
    pub fn n_classes(&self) -> usize {
        self.cfg.class_sizes.len()
    }
    /// $d$.
    pub fn feature_dim(&self) -> usize {
        self.cfg.feature_dim
    }
    /// $N=\sum_k n_k$.
    pub fn n_samples(&self) -> usize {
        self.labels.len()
    }
    /// $(n_1,\dots,n_K)$.
    pub fn class_sizes(&self) -> &[usize] {
        &self.cfg.class_sizes
    }
    /// $n$ when all classes have the same size.
    pub fn balanced_size(&self) -> Option<usize> {
        let n0 = self.cfg.class_sizes[0];
        self.cfg.class_sizes.iter().all(|&n| n == n0).then_some(n0)
    }
    /// $\lambda_W$.
    pub fn lambda_w(&self) -> f64 {
        self.cfg.lambda_w
    }
    /// $\lambda_H$.
    pub fn lambda_h(&self) -> f64 {
        self.cfg.lambda_h
    }
    /// $\lambda_b$.
    pub fn lambda_b(&self) -> f64 {
        self.cfg.lambda_b
    }
    /// The loss.
    pub fn loss(&self) -> Loss {
        self.cfg.loss
    }
    /// Whether $b$ is a parameter.
    pub fn has_bias(&self) -> bool {
        self.cfg.bias
    }
    /// Label of every sample (grouped by class).
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
    /// Length of the flat parameter vector: $Kd+Nd\,(+K)$.
    pub fn n_params(&self) -> usize {
        self.n_params
    }

    /// One-line description, e.g. `UFM: K=10 d=12 n=20 per class (N=200), loss ce, ...`.
    pub fn describe(&self) -> String {
        let c = &self.cfg;
        let sizes = match self.balanced_size() {
            Some(n) => format!("n={n} per class"),
            None => format!("class sizes {:?}", c.class_sizes),
        };
        format!(
            "UFM: K={} d={} {} (N={}), loss {}, lambda_W={} lambda_H={} lambda_b={}, bias {}",
            self.n_classes(),
            self.feature_dim(),
            sizes,
            self.n_samples(),
            c.loss,
            c.lambda_w,
            c.lambda_h,
            c.lambda_b,
            if c.bias { "yes" } else { "no" }
        )
    }

    /// Checks that `x` has the right length.
    pub fn check_len<T>(&self, what: &str, x: &[T]) -> Result<()> {
        if x.len() != self.n_params {
            return Err(Error::shape(
                what,
                format!("{} parameters", self.n_params),
                format!("{}", x.len()),
            ));
        }
        Ok(())
    }

    /// Splits a parameter vector into views $(W, H^\top, b)$.
    ///
    /// # Panics
    /// If `x.len() != self.n_params()` (a programming error; use [`check_len`](Self::check_len)
    /// on external input).
    pub fn split<'a, T>(&self, x: &'a [T]) -> PointView<'a, T> {
        assert_eq!(
            x.len(),
            self.n_params,
            "parameter vector has the wrong length"
        );
        let (k, d, n) = (self.n_classes(), self.feature_dim(), self.n_samples());
        let (w, rest) = x.split_at(k * d);
        let (h, b) = rest.split_at(n * d);
        (
            ArrayView2::from_shape((k, d), w).expect("shape"),
            ArrayView2::from_shape((n, d), h).expect("shape"),
            self.cfg.bias.then(|| ArrayView1::from(b)),
        )
    }

    /// Mutable version of [`split`](Self::split).
    pub fn split_mut<'a, T>(&self, x: &'a mut [T]) -> PointViewMut<'a, T> {
        assert_eq!(
            x.len(),
            self.n_params,
            "parameter vector has the wrong length"
        );
        let (k, d, n) = (self.n_classes(), self.feature_dim(), self.n_samples());
        let (w, rest) = x.split_at_mut(k * d);
        let (h, b) = rest.split_at_mut(n * d);
        (
            ArrayViewMut2::from_shape((k, d), w).expect("shape"),
            ArrayViewMut2::from_shape((n, d), h).expect("shape"),
            self.cfg.bias.then(|| ArrayViewMut1::from(b)),
        )
    }

    /// Assembles a parameter vector from $W$ ($K\times d$), $H^\top$ ($N\times d$) and $b$.
    pub fn join<T: Real>(
        &self,
        w: ArrayView2<T>,
        ht: ArrayView2<T>,
        b: Option<ArrayView1<T>>,
    ) -> Result<Vec<T>> {
        let (k, d, n) = (self.n_classes(), self.feature_dim(), self.n_samples());
        if w.dim() != (k, d) {
            return Err(Error::shape(
                "W",
                format!("{k}x{d}"),
                format!("{:?}", w.dim()),
            ));
        }
        if ht.dim() != (n, d) {
            return Err(Error::shape(
                "H^T",
                format!("{n}x{d}"),
                format!("{:?}", ht.dim()),
            ));
        }
        let mut x = Vec::with_capacity(self.n_params);
        x.extend(w.iter().copied());
        x.extend(ht.iter().copied());
        match (self.cfg.bias, b) {
            (true, Some(b)) if b.len() == k => x.extend(b.iter().copied()),
            (true, Some(b)) => {
                return Err(Error::shape("b", format!("{k}"), format!("{}", b.len())))
            }
            (true, None) => x.extend(std::iter::repeat_n(T::zero(), k)),
            (false, _) => {}
        }
        Ok(x)
    }

    /// A random starting point: every entry of $W$ and $H$ i.i.d. $\mathcal N(0,\sigma^2)$,
    /// $b=0$, from a seeded generator.
    pub fn random_point<T: Real>(&self, seed: u64, scale: f64) -> Result<Vec<T>> {
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(Error::param(
                "init-scale",
                format!("must be finite and >= 0, got {scale}"),
            ));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0, scale.max(f64::MIN_POSITIVE))
            .map_err(|e| Error::param("init-scale", e.to_string()))?;
        let kd_nd = (self.n_classes() + self.n_samples()) * self.feature_dim();
        let mut x: Vec<T> = (0..kd_nd)
            .map(|_| {
                if scale == 0.0 {
                    T::zero()
                } else {
                    T::of(normal.sample(&mut rng))
                }
            })
            .collect();
        x.resize(self.n_params, T::zero());
        Ok(x)
    }
}

/// Checks a list of class sizes (at least 2 classes, at most `u32::MAX`, none empty) and
/// returns $K$.
pub(crate) fn check_class_sizes(class_sizes: &[usize]) -> Result<usize> {
    let k = class_sizes.len();
    if k < 2 {
        return Err(Error::param(
            "classes",
            format!("need at least 2 classes, got {k}"),
        ));
    }
    if k > u32::MAX as usize {
        return Err(Error::param("classes", "too many classes"));
    }
    if let Some(c) = class_sizes.iter().position(|&n| n == 0) {
        return Err(Error::param(
            "class-sizes",
            format!("class {c} has no samples; every class needs at least one"),
        ));
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_rejects_bad_values_with_named_flags() {
        let e = UfmConfig::balanced(1, 5, 3)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("classes"), "{e}");
        let e = UfmConfig::balanced(3, 5, 0)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("dim"), "{e}");
        let e = UfmConfig::balanced(3, 5, 2)
            .lambdas(-1.0, 0.1, 0.1)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("lambda-w"), "{e}");
        let e = UfmConfig::balanced(3, 5, 2)
            .lambdas(0.1, f64::NAN, 0.1)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("lambda-h"), "{e}");
        let e = UfmConfig::with_class_sizes(vec![3, 0, 2], 4)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("class 1 has no samples"), "{e}");
    }

    /// Sizes near `usize::MAX` are errors naming the sizes (no capacity-overflow panic, no
    /// allocation), and so is a problem whose point cannot fit in memory.
    #[test]
    fn absurd_sizes_are_errors_that_name_them() {
        let e = UfmConfig::try_balanced(usize::MAX, 2, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`classes`") && e.contains("too many"), "{e}");
        let e = UfmConfig::try_balanced(10, usize::MAX / 4, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`per-class`") && e.contains("overflows"), "{e}");
        let e = UfmConfig::try_balanced(10, 1 << 40, 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overflows"), "{e}");
        // 10^6 x 10^6 samples of d = 1000: about 2.4e16 bytes, more than any machine has
        let e = UfmConfig::try_balanced(1_000_000, 1_000_000, 1000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs at least") && e.contains("PiB") && e.contains("d = 1000"),
            "{e}"
        );
        let e = UfmConfig::with_class_sizes(vec![usize::MAX, 5], 2)
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`class-sizes`") && e.contains("overflows"),
            "{e}"
        );
        let e = UfmConfig::with_class_sizes(vec![usize::MAX / 2, usize::MAX / 2], 2)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`per-class`") && e.contains("overflows"), "{e}");
        // ordinary sizes still build
        let p = UfmConfig::try_balanced(3, 4, 5).unwrap().build().unwrap();
        assert_eq!(p.n_params(), (3 + 12) * 5 + 3);
    }

    #[test]
    fn split_join_roundtrip() {
        let p = UfmConfig::with_class_sizes(vec![2, 3], 4).build().unwrap();
        assert_eq!(p.n_params(), 2 * 4 + 5 * 4 + 2);
        assert_eq!(p.labels(), &[0, 0, 1, 1, 1]);
        let x: Vec<f64> = (0..p.n_params()).map(|i| i as f64).collect();
        let (w, h, b) = p.split(&x);
        assert_eq!(w[[1, 0]], 4.0);
        assert_eq!(h[[0, 0]], 8.0);
        assert_eq!(b.unwrap()[1], 29.0);
        let y = p.join(w, h, b).unwrap();
        assert_eq!(x, y);
        let nb = UfmConfig::with_class_sizes(vec![2, 3], 4)
            .bias(false)
            .build()
            .unwrap();
        assert_eq!(nb.n_params(), 28);
        assert!(nb.split(&x[..28]).2.is_none());
    }

    #[test]
    fn random_point_is_seeded() {
        let p = UfmConfig::balanced(3, 4, 5).build().unwrap();
        let a: Vec<f64> = p.random_point(7, 0.5).unwrap();
        let b: Vec<f64> = p.random_point(7, 0.5).unwrap();
        let c: Vec<f64> = p.random_point(8, 0.5).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a[p.n_params() - 3..].iter().all(|&v| v == 0.0));
    }
}
