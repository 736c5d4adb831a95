//! The hot loops of the metric passes over the features, each compiled twice: for the
//! portable baseline (x86-64 means SSE2: two `f64` lanes, no fused multiply-add) and, on
//! x86-64, with AVX2 + FMA (four `f64` lanes, fused multiply-add), picked at run time with
//! `is_x86_feature_detected!`. Both versions run the same Rust code (an `#[inline(always)]`
//! body instantiated inside a `#[target_feature]` wrapper), so they differ only in rounding
//! (fused multiply-add), never in the formula.
//!
//! * [`class_sums`]: $s_{y_i}\mathrel{+}=h_i$, $n_{y_i}\mathrel{+}=1$ in `f64` (the class means
//!   of a batch);
//! * [`sq_dev`]: $\sum_j(h_j-\mu_j)^2$ with eight independent accumulators;
//! * [`centre_rows`]: $h_i-\mu_{y_i}$ in `f64` into a caller's buffer (the second pass);
//! * [`widen_finite`]: a copy into `f64` that also screens for NaN and infinities.

use crate::real::Real;

/// Whether the AVX2 + FMA versions can run on this CPU (detected once, then cached by std).
#[inline]
fn fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `pub(crate) fn $name` dispatching to an AVX2 + FMA instantiation of `$body` when the
/// CPU has it, else to the portable one.
macro_rules! dispatched {
    ($(#[$doc:meta])* fn $name:ident<$t:ident>($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident;) => {
        $(#[$doc])*
        pub(crate) fn $name<$t: Real>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide<$t: Real>($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if fast() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

dispatched! {
    /// Adds each row of the row-major `rows` ($m\times d$) to the `f64` sum of its class
    /// (`sums` is $K\times d$ row-major) and counts it. Labels must be below $K$.
    fn class_sums<T>(rows: &[T], d: usize, labels: &[u32], sums: &mut [f64], counts: &mut [u64]) -> () = class_sums_body;
}

#[inline(always)]
fn class_sums_body<T: Real>(
    rows: &[T],
    d: usize,
    labels: &[u32],
    sums: &mut [f64],
    counts: &mut [u64],
) {
    for (r, &y) in rows.chunks_exact(d).zip(labels) {
        let y = y as usize;
        counts[y] += 1;
        for (a, &v) in sums[y * d..(y + 1) * d].iter_mut().zip(r) {
            *a += v.to_f64_();
        }
    }
}

dispatched! {
    /// $\sum_j(r_j-\mu_j)^2$ in `f64` with eight independent accumulators, so the reduction
    /// vectorises (a single running sum is bound by the latency of one add per element).
    fn sq_dev<T>(r: &[T], mu: &[f64]) -> f64 = sq_dev_body;
}

#[inline(always)]
fn sq_dev_body<T: Real>(r: &[T], mu: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (rc, mc) = (r.chunks_exact(8), mu.chunks_exact(8));
    let (rr, mr) = (rc.remainder(), mc.remainder());
    for (a, b) in rc.zip(mc) {
        for j in 0..8 {
            let t = a[j].to_f64_() - b[j];
            acc[j] += t * t;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (&a, &b) in rr.iter().zip(mr) {
        let t = a.to_f64_() - b;
        s += t * t;
    }
    s
}

dispatched! {
    /// Writes $h_i-\mu_{y_i}$ (in `f64`) for each row of the row-major `rows` ($m\times d$)
    /// into `out` ($m\times d$ row-major); `means` is $K\times d$ row-major.
    fn centre_rows<T>(rows: &[T], d: usize, labels: &[u32], means: &[f64], out: &mut [f64]) -> () = centre_rows_body;
}

#[inline(always)]
fn centre_rows_body<T: Real>(rows: &[T], d: usize, labels: &[u32], means: &[f64], out: &mut [f64]) {
    for ((o, r), &y) in out
        .chunks_exact_mut(d)
        .zip(rows.chunks_exact(d))
        .zip(labels)
    {
        let m = &means[y as usize * d..(y as usize + 1) * d];
        for ((o, &v), &mu) in o.iter_mut().zip(r).zip(m) {
            *o = v.to_f64_() - mu;
        }
    }
}

dispatched! {
    /// Appends `src` to `dst` as `f64` and says whether every value is finite ($\sum 0\cdot v$
    /// in eight lanes over the appended values, still in cache, is NaN exactly when some $v$
    /// is NaN or infinite).
    fn widen_finite<T>(src: &[T], dst: &mut Vec<f64>) -> bool = widen_finite_body;
}

#[inline(always)]
fn widen_finite_body<T: Real>(src: &[T], dst: &mut Vec<f64>) -> bool {
    let start = dst.len();
    dst.extend(src.iter().map(|v| v.to_f64_()));
    let new = &dst[start..];
    let mut acc = [0.0f64; 8];
    let c = new.chunks_exact(8);
    let ok = c.remainder().iter().all(|v| v.is_finite());
    for b in c {
        for j in 0..8 {
            acc[j] += b[j] * 0.0;
        }
    }
    ok && acc.iter().all(|v| *v == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both instantiations (when the CPU has AVX2) agree with a plain loop.
    #[test]
    fn dispatched_loops_match_plain_loops() {
        let (m, d, k) = (37, 19, 3);
        let rows: Vec<f32> = (0..m * d)
            .map(|i| ((i * 7919) % 113) as f32 * 0.37 - 20.0)
            .collect();
        let labels: Vec<u32> = (0..m).map(|i| (i * 5 % k) as u32).collect();
        let mut sums = vec![0.0; k * d];
        let mut counts = vec![0u64; k];
        class_sums(&rows, d, &labels, &mut sums, &mut counts);
        let mut s2 = vec![0.0; k * d];
        let mut c2 = vec![0u64; k];
        class_sums_body(&rows, d, &labels, &mut s2, &mut c2);
        assert_eq!(counts, c2);
        assert_eq!(
            sums, s2,
            "class sums: additions only, so no rounding difference"
        );
        let mut plain = vec![0.0f64; k * d];
        for i in 0..m {
            for j in 0..d {
                plain[labels[i] as usize * d + j] += rows[i * d + j] as f64;
            }
        }
        assert_eq!(sums, plain);

        let mu: Vec<f64> = (0..d).map(|j| j as f64 * 0.5 - 3.0).collect();
        let r = &rows[..d];
        let want: f64 = r
            .iter()
            .zip(&mu)
            .map(|(&a, &b)| (a as f64 - b).powi(2))
            .sum();
        assert!((sq_dev(r, &mu) - want).abs() <= 1e-12 * want);

        let means: Vec<f64> = (0..k * d).map(|i| i as f64 * 0.25).collect();
        let mut out = vec![f64::NAN; m * d];
        centre_rows(&rows, d, &labels, &means, &mut out);
        for i in 0..m {
            for j in 0..d {
                let want = rows[i * d + j] as f64 - means[labels[i] as usize * d + j];
                assert_eq!(out[i * d + j], want);
            }
        }
    }
}
