//! Trust-region Newton method with the Steihaug–Toint truncated conjugate-gradient subproblem
//! solver (Steihaug 1983; Nocedal & Wright, Alg. 4.1 and 7.2), driven by exact
//! Hessian-vector products, so the Hessian is never formed.
//!
//! Each iteration approximately minimises the model
//! $m(p)=f+g^\top p+\tfrac12p^\top\nabla^2f\,p$ over $\lVert p\rVert\le\Delta$ by CG, stopping at
//! the boundary, on negative curvature, or when the residual falls below
//! $\lVert g\rVert\min(\tfrac12,\lVert g\rVert)$ (quadratic local convergence). The step is
//! accepted when $\rho=\frac{f(x)-f(x+p)}{m(0)-m(p)}>10^{-4}$; $\Delta$ shrinks for $\rho<\tfrac14$ and
//! grows for $\rho>\tfrac34$ at the boundary. Once the predicted decrease is below the round-off
//! of $f$ ($10^{-15}|f|$), $\rho$ is meaningless and a step is accepted iff it reduces
//! $\lVert\nabla f\rVert$; this is what lets the method reach $\lVert\nabla f\rVert\le10^{-10}$.

use super::{Objective, Progress, Solver};
use crate::error::{Error, Result};
use crate::real::{axpy, dot, norm, Real};

/// Trust-region Newton-CG (Steihaug).
#[derive(Clone, Debug)]
pub struct TrustRegionNewton<T> {
    radius: f64,
    max_radius: f64,
    max_cg: usize,
    g: Vec<T>,
    p: Vec<T>,
    r: Vec<T>,
    dir: Vec<T>,
    bd: Vec<T>,
    xt: Vec<T>,
    gt: Vec<T>,
    f: f64,
    /// Hessian-vector products performed so far.
    pub hvps: usize,
}

impl<T: Real> TrustRegionNewton<T> {
    /// A solver with initial trust radius `radius` and at most `max_cg` CG iterations per step.
    pub fn new(radius: f64, max_cg: usize) -> Result<Self> {
        if !(radius.is_finite() && radius > 0.0) {
            return Err(Error::param(
                "radius",
                format!("the trust radius must be > 0, got {radius}"),
            ));
        }
        Ok(TrustRegionNewton {
            radius,
            max_radius: 1e10,
            max_cg: max_cg.max(1),
            g: Vec::new(),
            p: Vec::new(),
            r: Vec::new(),
            dir: Vec::new(),
            bd: Vec::new(),
            xt: Vec::new(),
            gt: Vec::new(),
            f: f64::NAN,
            hvps: 0,
        })
    }

    /// Current trust radius.
    pub fn radius(&self) -> f64 {
        self.radius
    }
}

impl<T: Real> Default for TrustRegionNewton<T> {
    fn default() -> Self {
        Self::new(1.0, 500).expect("valid defaults")
    }
}

/// $\tau\ge0$ with $\lVert p+\tau d\rVert=\Delta$.
fn to_boundary<T: Real>(p: &[T], d: &[T], delta: f64) -> f64 {
    let (pp, pd, dd) = (dot(p, p), dot(p, d), dot(d, d));
    let disc = (pd * pd + dd * (delta * delta - pp)).max(0.0);
    (-pd + disc.sqrt()) / dd
}

impl<T: Real, O: Objective<T> + ?Sized> Solver<T, O> for TrustRegionNewton<T> {
    fn name(&self) -> String {
        "newton-tr".into()
    }

    fn init(&mut self, obj: &O, x: &mut [T]) -> Result<Progress> {
        let n = x.len();
        for v in [
            &mut self.g,
            &mut self.p,
            &mut self.r,
            &mut self.dir,
            &mut self.bd,
            &mut self.xt,
            &mut self.gt,
        ] {
            *v = vec![T::zero(); n];
        }
        self.f = obj.value_grad(x, &mut self.g).to_f64_();
        Ok(Progress {
            f: self.f,
            grad_norm: norm(&self.g),
            stalled: None,
        })
    }

    fn step(&mut self, obj: &O, x: &mut [T]) -> Result<Progress> {
        let n = x.len();
        let gnorm = norm(&self.g);
        // --- Steihaug-CG on the model, tracking m(p) − f incrementally (r = g + Bp). ---
        self.p.iter_mut().for_each(|v| *v = T::zero());
        self.r.copy_from_slice(&self.g);
        for i in 0..n {
            self.dir[i] = -self.g[i];
        }
        let tol = gnorm * gnorm.sqrt().min(0.5);
        let mut model = 0.0;
        let mut rr = dot(&self.r, &self.r);
        for _ in 0..self.max_cg {
            obj.hvp(x, &self.dir, &mut self.bd)?;
            self.hvps += 1;
            let kappa = dot(&self.dir, &self.bd);
            let rd = dot(&self.r, &self.dir);
            let step_to = |tau: f64, model: &mut f64| *model += tau * rd + 0.5 * tau * tau * kappa;
            if kappa <= 0.0 {
                let tau = to_boundary(&self.p, &self.dir, self.radius);
                step_to(tau, &mut model);
                axpy(T::of(tau), &self.dir, &mut self.p);
                break;
            }
            let alpha = rr / kappa;
            // ‖p + αd‖ ≥ Δ ?
            let (pp, pd, dd) = (
                dot(&self.p, &self.p),
                dot(&self.p, &self.dir),
                dot(&self.dir, &self.dir),
            );
            if pp + 2.0 * alpha * pd + alpha * alpha * dd >= self.radius * self.radius {
                let tau = to_boundary(&self.p, &self.dir, self.radius);
                step_to(tau, &mut model);
                axpy(T::of(tau), &self.dir, &mut self.p);
                break;
            }
            step_to(alpha, &mut model);
            axpy(T::of(alpha), &self.dir, &mut self.p);
            axpy(T::of(alpha), &self.bd, &mut self.r);
            let rr_new = dot(&self.r, &self.r);
            if rr_new.sqrt() <= tol {
                break;
            }
            let beta = rr_new / rr;
            rr = rr_new;
            for i in 0..n {
                self.dir[i] = -self.r[i] + T::of(beta) * self.dir[i];
            }
        }
        let pnorm = norm(&self.p);
        if pnorm == 0.0 {
            return Ok(Progress {
                f: self.f,
                grad_norm: gnorm,
                stalled: Some("zero Newton step".into()),
            });
        }
        // --- Evaluate the trial point. ---
        for i in 0..n {
            self.xt[i] = x[i] + self.p[i];
        }
        let ft = obj.value_grad(&self.xt, &mut self.gt).to_f64_();
        let pred = -model;
        let ared = self.f - ft;
        let roundoff = pred <= 1e-15 * self.f.abs().max(1e-300);
        let gtn = norm(&self.gt);
        let (rho, accept) = if !ft.is_finite() {
            (-1.0, false)
        } else if roundoff {
            let better = gtn < gnorm;
            (if better { 1.0 } else { -1.0 }, better)
        } else {
            let rho = ared / pred;
            (rho, rho > 1e-4)
        };
        if rho < 0.25 {
            self.radius = 0.25 * pnorm;
        } else if rho > 0.75 && pnorm >= 0.99 * self.radius {
            self.radius = (2.0 * self.radius).min(self.max_radius);
        }
        if accept {
            x.copy_from_slice(&self.xt);
            std::mem::swap(&mut self.g, &mut self.gt);
            self.f = ft;
        }
        let stalled = (self.radius < 1e-300)
            .then(|| "trust radius collapsed (round-off level reached)".to_string());
        Ok(Progress {
            f: self.f,
            grad_norm: norm(&self.g),
            stalled,
        })
    }
}
