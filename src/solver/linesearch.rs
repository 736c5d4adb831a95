//! Strong-Wolfe line search (Nocedal & Wright, *Numerical Optimization*, Alg. 3.5–3.6, with
//! safeguarded cubic interpolation in the zoom phase), plus the approximate-Wolfe acceptance of
//! Hager & Zhang (2005) once $f$ differences fall below round-off.
//!
//! Find $\alpha$ with
//! $\phi(\alpha)\le\phi(0)+c_1\alpha\phi'(0)$ and $|\phi'(\alpha)|\le c_2|\phi'(0)|$, where
//! $\phi(\alpha)=f(x+\alpha d)$.

use super::Objective;
use crate::real::{dot, Real};

/// Result of a line search: the step, and $f$ and $\nabla f$ at the accepted point (the
/// point itself is left in `xt`, its gradient in `gt`).
pub(crate) struct LineSearchResult {
    pub alpha: f64,
    pub f: f64,
    pub evals: usize,
}

pub(crate) struct WolfeParams {
    pub c1: f64,
    pub c2: f64,
    pub max_evals: usize,
}

impl Default for WolfeParams {
    fn default() -> Self {
        WolfeParams {
            c1: 1e-4,
            c2: 0.9,
            max_evals: 40,
        }
    }
}

/// Evaluates $\phi$ and $\phi'$ at `alpha`, leaving $x+\alpha d$ in `xt` and its gradient in `gt`.
fn eval<T: Real, O: Objective<T> + ?Sized>(
    obj: &O,
    x: &[T],
    d: &[T],
    alpha: f64,
    xt: &mut [T],
    gt: &mut [T],
) -> (f64, f64) {
    let a = T::of(alpha);
    for ((t, &xi), &di) in xt.iter_mut().zip(x).zip(d) {
        *t = xi + a * di;
    }
    let f = obj.value_grad(xt, gt).to_f64_();
    (f, dot(gt, d))
}

/// Cubic interpolation minimiser of $\phi$ on $[a,b]$ from values and slopes at both ends,
/// safeguarded to the interior of the interval.
fn cubic_min(a: f64, fa: f64, da: f64, b: f64, fb: f64, db: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let d1 = da + db - 3.0 * (fa - fb) / (a - b);
    let disc = d1 * d1 - da * db;
    let mut t = if disc >= 0.0 {
        let d2 = (b - a).signum() * disc.sqrt();
        b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2)
    } else {
        f64::NAN
    };
    let width = hi - lo;
    if !t.is_finite() || t < lo + 0.1 * width || t > hi - 0.1 * width {
        t = 0.5 * (lo + hi);
    }
    t
}

/// Strong-Wolfe search along `d` from `x` (with $f(x)=f_0$, $\phi'(0)=$`d0 < 0`), starting at
/// `alpha0`. Returns `None` if no acceptable step was found.
#[allow(clippy::too_many_arguments)]
pub(crate) fn strong_wolfe<T: Real, O: Objective<T> + ?Sized>(
    obj: &O,
    x: &[T],
    d: &[T],
    f0: f64,
    d0: f64,
    alpha0: f64,
    xt: &mut [T],
    gt: &mut [T],
    prm: &WolfeParams,
) -> Option<LineSearchResult> {
    // Approximate Wolfe (Hager–Zhang): with ε = 1e-12|f0|, accept when
    // φ(α) ≤ φ(0) + ε and (2c1 − 1)φ'(0) ≥ φ'(α) ≥ c2 φ'(0). This only matters when the
    // decrease c1 α φ'(0) is below the round-off of f.
    let eps = 1e-12 * f0.abs();
    let accept = |f: f64, dphi: f64, alpha: f64| -> bool {
        let armijo = f <= f0 + prm.c1 * alpha * d0;
        let curvature = dphi.abs() <= -prm.c2 * d0;
        let approx = f <= f0 + eps && dphi >= prm.c2 * d0 && dphi <= (2.0 * prm.c1 - 1.0) * d0;
        (armijo && curvature) || approx
    };
    let mut evals = 0;
    let (mut a_prev, mut f_prev, mut d_prev) = (0.0, f0, d0);
    let mut alpha = alpha0;
    let mut first = true;
    loop {
        let (f, dphi) = eval(obj, x, d, alpha, xt, gt);
        evals += 1;
        if !f.is_finite() {
            // Overshoot into overflow: shrink.
            if evals >= prm.max_evals {
                return None;
            }
            alpha = 0.5 * (a_prev + alpha);
            continue;
        }
        if accept(f, dphi, alpha) {
            return Some(LineSearchResult { alpha, f, evals });
        }
        // In the round-off regime (f within ε of f0) trust the slope: while it is still
        // steeply negative, keep extrapolating instead of shrinking on noise in f.
        let noisy_descent = f <= f0 + eps && dphi < prm.c2 * d0;
        if !noisy_descent && (f > f0 + prm.c1 * alpha * d0 || (!first && f >= f_prev)) {
            return zoom(
                obj,
                x,
                d,
                f0,
                d0,
                (a_prev, f_prev, d_prev),
                (alpha, f, dphi),
                xt,
                gt,
                prm,
                evals,
                &accept,
            );
        }
        if dphi >= 0.0 {
            return zoom(
                obj,
                x,
                d,
                f0,
                d0,
                (alpha, f, dphi),
                (a_prev, f_prev, d_prev),
                xt,
                gt,
                prm,
                evals,
                &accept,
            );
        }
        if evals >= prm.max_evals {
            return None;
        }
        first = false;
        let next = (alpha * 4.0).min(cubic_extrapolate(a_prev, f_prev, d_prev, alpha, f, dphi));
        a_prev = alpha;
        f_prev = f;
        d_prev = dphi;
        alpha = next.max(alpha * 1.1);
    }
}

fn cubic_extrapolate(a: f64, fa: f64, da: f64, b: f64, fb: f64, db: f64) -> f64 {
    let d1 = da + db - 3.0 * (fa - fb) / (a - b);
    let disc = d1 * d1 - da * db;
    if disc < 0.0 {
        return 4.0 * b;
    }
    let d2 = (b - a).signum() * disc.sqrt();
    let t = b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2);
    if t.is_finite() && t > b {
        t
    } else {
        4.0 * b
    }
}

#[allow(clippy::too_many_arguments)]
fn zoom<T: Real, O: Objective<T> + ?Sized>(
    obj: &O,
    x: &[T],
    d: &[T],
    f0: f64,
    d0: f64,
    lo: (f64, f64, f64),
    hi: (f64, f64, f64),
    xt: &mut [T],
    gt: &mut [T],
    prm: &WolfeParams,
    mut evals: usize,
    accept: &dyn Fn(f64, f64, f64) -> bool,
) -> Option<LineSearchResult> {
    let (mut lo, mut hi) = (lo, hi);
    let mut best: Option<(f64, f64)> = None; // (alpha, f) with f < f0
    loop {
        if evals >= prm.max_evals || (hi.0 - lo.0).abs() <= 1e-16 * lo.0.abs().max(hi.0.abs()) {
            // Fall back to the best strictly decreasing point seen, if any.
            if let Some((a, f)) = best {
                let _ = f;
                let (fa, _) = eval(obj, x, d, a, xt, gt);
                return Some(LineSearchResult {
                    alpha: a,
                    f: fa,
                    evals: evals + 1,
                });
            }
            return None;
        }
        let alpha = cubic_min(lo.0, lo.1, lo.2, hi.0, hi.1, hi.2);
        let (f, dphi) = eval(obj, x, d, alpha, xt, gt);
        evals += 1;
        if f.is_finite() && f < f0 && best.is_none_or(|(_, fb)| f < fb) {
            best = Some((alpha, f));
        }
        let noisy_descent = f.is_finite() && f <= f0 + 1e-12 * f0.abs() && dphi < 0.0;
        if !f.is_finite() || (!noisy_descent && (f > f0 + prm.c1 * alpha * d0 || f >= lo.1)) {
            hi = (alpha, f, dphi);
            continue;
        }
        if accept(f, dphi, alpha) {
            return Some(LineSearchResult { alpha, f, evals });
        }
        if dphi * (hi.0 - lo.0) >= 0.0 {
            hi = lo;
        }
        lo = (alpha, f, dphi);
    }
}
