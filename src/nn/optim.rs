//! First-order optimizers and learning-rate schedules as in PyTorch, with **coupled** weight
//! decay ($g\leftarrow\nabla\ell+\lambda\theta$, not AdamW), applied to every trainable tensor.
//!
//! * SGD with momentum $\mu$ (no dampening, no Nesterov): $v\leftarrow\mu v+g$ ($v=g$ on the
//!   first step), $\theta\leftarrow\theta-\eta v$.
//! * Adam: $m\leftarrow\beta_1m+(1-\beta_1)g$, $v\leftarrow\beta_2v+(1-\beta_2)g^2$,
//!   $\theta\leftarrow\theta-\frac{\eta}{1-\beta_1^t}\,\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t}+\epsilon}$.
//! * `StepLR(step, γ)`: $\eta_e=\eta_0\gamma^{\lfloor e/\text{step}\rfloor}$; `MultiStepLR(milestones, γ)`:
//!   $\eta_e=\eta_0\gamma^{\#\{m\le e\}}$ ($e$ = number of finished epochs).
//! * [`Lbfgs`]: `torch.optim.LBFGS(lr, max_iter=20, history_size, line_search_fn="strong_wolfe")`
//!   step for step (Nocedal & Wright, *Numerical Optimization*, Alg. 7.4 two-loop recursion with
//!   $H_0=\frac{s^\top y}{y^\top y}I$, Alg. 3.5/3.6 strong-Wolfe line search with
//!   $c_1=10^{-4}$, $c_2=0.9$), including PyTorch's choice to keep the curvature pairs
//!   $(s,y)$, the last direction and step across `step()` calls, so that the first pair of a new
//!   batch is $s=x_k-x_{k-1}$, $y=\nabla f_{\text{new batch}}(x_k)-\nabla f_{\text{old batch}}(x_{k-1})$.

use crate::error::{Error, Result};
use crate::nn::layers::{Module, TensorMut};
use crate::real::Real;
use crate::real::{axpy, dot};
use ndarray::{ArrayD, IxDyn, Zip};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Which optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// SGD, momentum 0.9.
    Sgd,
    /// Adam, betas (0.9, 0.999), eps 1e-8.
    Adam,
    /// L-BFGS (strong Wolfe) as `torch.optim.LBFGS`: see [`Lbfgs`] (not this type).
    Lbfgs,
}

impl std::str::FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adam" => Ok(OptimizerKind::Adam),
            "lbfgs" | "l-bfgs" => Ok(OptimizerKind::Lbfgs),
            _ => Err(Error::param(
                "optimizer",
                format!("unknown optimizer `{s}`; use SGD, Adam or LBFGS"),
            )),
        }
    }
}

/// SGD or Adam with their per-parameter state.
#[derive(Clone, Debug)]
pub struct Optimizer<T> {
    /// Which update.
    pub kind: OptimizerKind,
    /// Coupled L2 weight decay $\lambda$.
    pub weight_decay: f64,
    /// SGD momentum $\mu$ (0.9).
    pub momentum: f64,
    /// Adam $(\beta_1,\beta_2)$.
    pub betas: (f64, f64),
    /// Adam $\epsilon$.
    pub eps: f64,
    /// Number of steps taken.
    pub steps: u64,
    buf1: Vec<ArrayD<T>>,
    buf2: Vec<ArrayD<T>>,
}

impl<T: Real> Optimizer<T> {
    /// A fresh optimizer (state is created on the first step).
    pub fn new(kind: OptimizerKind, weight_decay: f64) -> Result<Self> {
        if kind == OptimizerKind::Lbfgs {
            return Err(Error::Unsupported(
                "L-BFGS is not a first-order `Optimizer`; use `nn::optim::Lbfgs`".into(),
            ));
        }
        if !(weight_decay >= 0.0) {
            return Err(Error::param(
                "weight-decay",
                format!("must be >= 0, got {weight_decay}"),
            ));
        }
        Ok(Optimizer {
            kind,
            weight_decay,
            momentum: 0.9,
            betas: (0.9, 0.999),
            eps: 1e-8,
            steps: 0,
            buf1: vec![],
            buf2: vec![],
        })
    }

    /// One update of every trainable parameter of `net` with learning rate `lr`.
    pub fn step(&mut self, net: &mut dyn Module<T>, lr: f64) {
        self.steps += 1;
        let t = self.steps;
        let (kind, wd, mu, (b1, b2), eps) = (
            self.kind,
            T::of(self.weight_decay),
            T::of(self.momentum),
            self.betas,
            self.eps,
        );
        let (buf1, buf2) = (&mut self.buf1, &mut self.buf2);
        let mut i = 0;
        net.visit("", &mut |_, tm| {
            let TensorMut::Param(p) = tm else { return };
            if !p.trainable {
                return;
            }
            if buf1.len() <= i {
                buf1.push(ArrayD::zeros(p.value.raw_dim()));
                buf2.push(ArrayD::zeros(p.value.raw_dim()));
            }
            let (m, v) = (&mut buf1[i], &mut buf2[i]);
            match kind {
                OptimizerKind::Sgd => {
                    let lr = T::of(lr);
                    let first = t == 1;
                    Zip::from(&mut p.value)
                        .and(&p.grad)
                        .and(m)
                        .par_for_each(|w, &g, mb| {
                            let d = g + wd * *w;
                            *mb = if first { d } else { mu * *mb + d };
                            *w -= lr * *mb;
                        });
                }
                OptimizerKind::Adam => {
                    let bc1 = 1.0 - b1.powi(t as i32);
                    let bc2 = (1.0 - b2.powi(t as i32)).sqrt();
                    let (b1t, b2t) = (T::of(b1), T::of(b2));
                    let (step, bc2t, epst) = (T::of(lr / bc1), T::of(bc2), T::of(eps));
                    Zip::from(&mut p.value)
                        .and(&p.grad)
                        .and(m)
                        .and(v)
                        .par_for_each(|w, &g, mb, vb| {
                            let d = g + wd * *w;
                            *mb = b1t * *mb + (T::one() - b1t) * d;
                            *vb = b2t * *vb + (T::one() - b2t) * d * d;
                            *w -= step * *mb / (vb.sqrt() / bc2t + epst);
                        });
                }
                OptimizerKind::Lbfgs => unreachable!("rejected in new()"),
            }
            i += 1;
        });
    }

    /// State tensors for checkpoints (`momentum_buffer` / `exp_avg`, `exp_avg_sq`).
    pub fn state(&self) -> Vec<(String, ArrayD<T>)> {
        let mut out = Vec::new();
        for (i, (a, b)) in self.buf1.iter().zip(&self.buf2).enumerate() {
            match self.kind {
                OptimizerKind::Sgd => out.push((format!("optim.{i}.momentum_buffer"), a.clone())),
                _ => {
                    out.push((format!("optim.{i}.exp_avg"), a.clone()));
                    out.push((format!("optim.{i}.exp_avg_sq"), b.clone()));
                }
            }
        }
        out
    }

    /// Restores [`Optimizer::state`] and `steps` for a network whose trainable parameters
    /// have `shapes` (visit order; [`trainable_shapes`]). `get(name)` returns a stored tensor,
    /// `None` when absent, or an error (e.g. of another dtype). After `steps > 0` steps every
    /// parameter must have its buffers (`optim.{i}.momentum_buffer` for SGD,
    /// `optim.{i}.exp_avg` and `optim.{i}.exp_avg_sq` for Adam) of exactly its shape and with
    /// finite values, and no buffer past the last parameter may exist; before the first step
    /// (`steps == 0`) there must be none. Anything else is an error naming the tensor and
    /// `what` (the file), and leaves `self` unchanged: a missing or misshapen buffer is never
    /// silently reset.
    pub fn load_state(
        &mut self,
        shapes: &[Vec<usize>],
        steps: u64,
        mut get: impl FnMut(&str) -> Result<Option<ArrayD<T>>>,
        what: &std::path::Path,
    ) -> Result<()> {
        let names: &[&str] = match self.kind {
            OptimizerKind::Sgd => &["momentum_buffer"],
            OptimizerKind::Adam => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Lbfgs => unreachable!("rejected in new()"),
        };
        let bad = |m: String| Error::format(what, format!("optimizer state: {m}"));
        let (mut b1, mut b2) = (Vec::new(), Vec::new());
        for (i, shape) in shapes.iter().enumerate() {
            for (slot, n) in names.iter().enumerate() {
                let name = format!("optim.{i}.{n}");
                let t = get(&name)?;
                let t = match (t, steps) {
                    (None, 0) => continue,
                    (Some(_), 0) => {
                        return Err(bad(format!(
                            "`{name}` is present but the metadata says no step was taken"
                        )))
                    }
                    (None, _) => {
                        return Err(bad(format!(
                            "`{name}` is missing after {steps} steps (the file is incomplete or \
                             from another optimizer); start the run again with --force"
                        )))
                    }
                    (Some(t), _) => t,
                };
                if t.shape() != shape.as_slice() {
                    return Err(bad(format!(
                        "`{name}` has shape {:?} but parameter {i} of the model has shape {shape:?}",
                        t.shape()
                    )));
                }
                if !t.iter().all(|v| v.to_f64_().is_finite()) {
                    return Err(bad(format!("`{name}` holds NaN or infinite values")));
                }
                if slot == 0 {
                    b1.push(t);
                } else {
                    b2.push(t);
                }
            }
            if steps > 0 && names.len() == 1 {
                b2.push(ArrayD::zeros(IxDyn(shape)));
            }
        }
        for n in names {
            let name = format!("optim.{}.{n}", shapes.len());
            if get(&name)?.is_some() {
                return Err(bad(format!(
                    "`{name}` has no parameter: the model has {} trainable tensors (a state of \
                     another model)",
                    shapes.len()
                )));
            }
        }
        self.buf1 = b1;
        self.buf2 = b2;
        self.steps = steps;
        Ok(())
    }
}

/// Shapes of the trainable parameters of `net`, in visit order (the order of the optimizer's
/// buffers).
pub fn trainable_shapes<T: Real>(net: &mut dyn Module<T>) -> Vec<Vec<usize>> {
    let mut v = Vec::new();
    net.visit("", &mut |_, t| {
        if let TensorMut::Param(p) = t {
            if p.trainable {
                v.push(p.value.shape().to_vec());
            }
        }
    });
    v
}

/// The state `torch.optim.LBFGS` keeps across `step()` calls (`state[...]` in PyTorch).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LbfgsState<T> {
    /// Inner iterations over all steps (`n_iter`).
    pub n_iter: u64,
    /// Function evaluations over all steps (`func_evals`).
    pub func_evals: u64,
    /// Last search direction `d` (empty before the first step).
    pub d: Vec<T>,
    /// Last step length `t`.
    pub t: f64,
    /// Curvature pairs: gradient differences $y$ (`old_dirs`), oldest first.
    pub old_dirs: VecDeque<Vec<T>>,
    /// Curvature pairs: steps $s$ (`old_stps`), oldest first.
    pub old_stps: VecDeque<Vec<T>>,
    /// $1/(y^\top s)$ per pair (`ro`).
    pub ro: VecDeque<f64>,
    /// Initial Hessian scale $s^\top y/y^\top y$ (`H_diag`).
    pub h_diag: f64,
    /// Gradient at the start of the last inner iteration (`prev_flat_grad`; empty before).
    pub prev_flat_grad: Vec<T>,
    /// Loss at the start of the last inner iteration (`prev_loss`).
    pub prev_loss: f64,
}

/// L-BFGS with a strong-Wolfe line search, ported from `torch.optim.LBFGS` (PyTorch 2.x,
/// `line_search_fn="strong_wolfe"`) on a flat parameter vector: each [`Lbfgs::step`] runs up
/// to `max_iter` inner iterations (at most `max_eval` closure evaluations) on the closure of
/// the current batch and keeps [`LbfgsState`] for the next call. Scalars ($t$, $\rho$,
/// `H_diag`, dot products) are kept in f64; the vectors are `T`.
#[derive(Clone, Debug)]
pub struct Lbfgs<T> {
    /// Initial step of every line search (`lr`); the very first one is
    /// $\min(1,1/\lVert g\rVert_1)\cdot$`lr`.
    pub lr: f64,
    /// Inner iterations per step (`max_iter`, 20).
    pub max_iter: usize,
    /// Closure evaluations per step (`max_eval`, `max_iter * 5 / 4`).
    pub max_eval: usize,
    /// Stop when $\max_i|g_i|\le$ this (`tolerance_grad`, 1e-7).
    pub tolerance_grad: f64,
    /// Stop on tiny steps or loss changes (`tolerance_change`, 1e-9).
    pub tolerance_change: f64,
    /// Curvature pairs kept (`history_size`).
    pub history_size: usize,
    /// The persistent state.
    pub state: LbfgsState<T>,
}

fn max_abs<T: Real>(v: &[T]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.to_f64_().abs()))
}

/// PyTorch's `_cubic_interpolate`: minimiser of the cubic through two points with slopes,
/// clamped to `bounds` (default: the interval), or the midpoint when it has none.
fn cubic_interpolate(
    (x1, f1, g1): (f64, f64, f64),
    (x2, f2, g2): (f64, f64, f64),
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

impl<T: Real> Lbfgs<T> {
    /// PyTorch's defaults with `lr` and `history_size` (`max_iter` 20, `max_eval` 25,
    /// `tolerance_grad` 1e-7, `tolerance_change` 1e-9).
    pub fn new(lr: f64, history_size: usize) -> Result<Self> {
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::param("lr", format!("must be positive, got {lr}")));
        }
        if history_size == 0 {
            return Err(Error::param("history-size", "must be at least 1"));
        }
        Ok(Lbfgs {
            lr,
            max_iter: 20,
            max_eval: 25,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size,
            state: LbfgsState::default(),
        })
    }

    /// One `optimizer.step(closure)`: `closure(x, grad)` returns the loss at `x` and writes its
    /// gradient; `x` is updated in place. Returns the loss at the entry point (PyTorch's
    /// `orig_loss`). Errors of the closure are passed on.
    pub fn step(
        &mut self,
        x: &mut [T],
        mut closure: impl FnMut(&[T], &mut [T]) -> Result<f64>,
    ) -> Result<f64> {
        let n = x.len();
        let (lr, max_iter, max_eval, tol_grad, tol_change, hist) = (
            self.lr,
            self.max_iter,
            self.max_eval,
            self.tolerance_grad,
            self.tolerance_change,
            self.history_size,
        );
        let st = &mut self.state;
        let mut g = vec![T::zero(); n];
        let orig_loss = closure(x, &mut g)?;
        let mut loss = orig_loss;
        let mut current_evals = 1usize;
        st.func_evals += 1;
        if max_abs(&g) <= tol_grad {
            return Ok(orig_loss);
        }
        let mut n_iter = 0;
        while n_iter < max_iter {
            n_iter += 1;
            st.n_iter += 1;
            if st.n_iter == 1 {
                st.d = g.iter().map(|&v| -v).collect();
                st.old_dirs.clear();
                st.old_stps.clear();
                st.ro.clear();
                st.h_diag = 1.0;
            } else {
                let tt = T::of(st.t);
                let y: Vec<T> = g
                    .iter()
                    .zip(&st.prev_flat_grad)
                    .map(|(&a, &b)| a - b)
                    .collect();
                let s: Vec<T> = st.d.iter().map(|&v| v * tt).collect();
                let ys = dot(&y, &s);
                if ys > 1e-10 {
                    if st.old_dirs.len() == hist {
                        st.old_dirs.pop_front();
                        st.old_stps.pop_front();
                        st.ro.pop_front();
                    }
                    st.h_diag = ys / dot(&y, &y);
                    st.old_dirs.push_back(y);
                    st.old_stps.push_back(s);
                    st.ro.push_back(1.0 / ys);
                }
                // two-loop recursion
                let m = st.old_dirs.len();
                let mut al = vec![0.0f64; m];
                let mut q: Vec<T> = g.iter().map(|&v| -v).collect();
                for i in (0..m).rev() {
                    al[i] = dot(&st.old_stps[i], &q) * st.ro[i];
                    axpy(T::of(-al[i]), &st.old_dirs[i], &mut q);
                }
                let hd = T::of(st.h_diag);
                q.iter_mut().for_each(|v| *v *= hd);
                for i in 0..m {
                    let be_i = dot(&st.old_dirs[i], &q) * st.ro[i];
                    axpy(T::of(al[i] - be_i), &st.old_stps[i], &mut q);
                }
                st.d = q;
            }
            st.prev_flat_grad.clone_from(&g);
            st.prev_loss = loss;
            st.t = if st.n_iter == 1 {
                let l1: f64 = g.iter().map(|v| v.to_f64_().abs()).sum();
                (1.0f64).min(1.0 / l1) * lr
            } else {
                lr
            };
            let gtd = dot(&g, &st.d);
            if gtd > -tol_change {
                break;
            }
            let (f_new, g_new, t, evals) = strong_wolfe(
                &mut closure,
                x,
                st.t,
                &st.d,
                loss,
                &g,
                gtd,
                max_eval.saturating_sub(current_evals),
            )?;
            loss = f_new;
            g = g_new;
            st.t = t;
            let tt = T::of(t);
            x.iter_mut().zip(&st.d).for_each(|(p, &dv)| *p += tt * dv);
            let opt_cond = max_abs(&g) <= tol_grad;
            current_evals += evals;
            st.func_evals += evals as u64;
            if n_iter == max_iter || current_evals >= max_eval || opt_cond {
                break;
            }
            if max_abs(&st.d) * t.abs() <= tol_change {
                break;
            }
            if (loss - st.prev_loss).abs() < tol_change {
                break;
            }
        }
        Ok(orig_loss)
    }

    /// Vector state for a checkpoint: `lbfgs.d`, `lbfgs.prev_flat_grad`, `lbfgs.old_dirs.{i}`,
    /// `lbfgs.old_stps.{i}` (1-D, oldest pair first).
    pub fn state_tensors(&self) -> Vec<(String, ArrayD<T>)> {
        let v = |x: &Vec<T>| ArrayD::from_shape_vec(IxDyn(&[x.len()]), x.clone()).expect("1-D");
        let st = &self.state;
        let mut out = vec![
            ("lbfgs.d".to_string(), v(&st.d)),
            ("lbfgs.prev_flat_grad".to_string(), v(&st.prev_flat_grad)),
        ];
        for (i, (y, s)) in st.old_dirs.iter().zip(&st.old_stps).enumerate() {
            out.push((format!("lbfgs.old_dirs.{i}"), v(y)));
            out.push((format!("lbfgs.old_stps.{i}"), v(s)));
        }
        out
    }

    /// Scalar state as JSON (floats as their IEEE bit patterns, so a round trip is exact).
    pub fn state_json(&self) -> String {
        let st = &self.state;
        serde_json::json!({
            "n_iter": st.n_iter,
            "func_evals": st.func_evals,
            "t": st.t.to_bits(),
            "h_diag": st.h_diag.to_bits(),
            "prev_loss": st.prev_loss.to_bits(),
            "ro": st.ro.iter().map(|r| r.to_bits()).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// Restores [`Lbfgs::state_tensors`] + [`Lbfgs::state_json`] for `n_params` parameters;
    /// `what` names the file in errors. `get(name)` returns a stored tensor, `None` when absent,
    /// or an error (e.g. of another dtype). Every vector must be 1-D of length `n_params`
    /// (`lbfgs.d` and `lbfgs.prev_flat_grad` are empty before the first iteration), the number
    /// of curvature pairs at most `history_size`, every $\rho$ finite and positive and no
    /// pair past the last may exist; otherwise an error, and `self` is unchanged.
    pub fn load_state(
        &mut self,
        json: &str,
        n_params: usize,
        mut get: impl FnMut(&str) -> Result<Option<ArrayD<T>>>,
        what: &std::path::Path,
    ) -> Result<()> {
        let bad = |m: &str| Error::format(what, format!("L-BFGS state: {m}"));
        let j: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(&format!("metadata is not JSON ({e})")))?;
        let int = |k: &str| j[k].as_u64().ok_or_else(|| bad(&format!("`{k}` missing")));
        let float = |k: &str| {
            int(k).map(f64::from_bits).and_then(|v| {
                if v.is_finite() {
                    Ok(v)
                } else {
                    Err(bad(&format!("`{k}` is not finite")))
                }
            })
        };
        let ro: Vec<f64> = j["ro"]
            .as_array()
            .ok_or_else(|| bad("`ro` missing"))?
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(f64::from_bits)
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| bad("bad `ro` (each entry must be finite and > 0)"))
            })
            .collect::<Result<_>>()?;
        if ro.len() > self.history_size {
            return Err(bad(&format!(
                "{} curvature pairs, more than the history size {}",
                ro.len(),
                self.history_size
            )));
        }
        let n_iter = int("n_iter")?;
        let mut vec = |k: &str, len: usize| -> Result<Vec<T>> {
            let a = get(k)?.ok_or_else(|| bad(&format!("tensor `{k}` missing")))?;
            if a.ndim() != 1 || a.len() != len {
                return Err(bad(&format!(
                    "tensor `{k}` has shape {:?}, expected [{len}] (one entry per parameter)",
                    a.shape()
                )));
            }
            if !a.iter().all(|v| v.to_f64_().is_finite()) {
                return Err(bad(&format!("tensor `{k}` holds NaN or infinite values")));
            }
            Ok(a.iter().copied().collect())
        };
        let len = if n_iter == 0 { 0 } else { n_params };
        let mut st = LbfgsState {
            n_iter,
            func_evals: int("func_evals")?,
            d: vec("lbfgs.d", len)?,
            t: float("t")?,
            old_dirs: VecDeque::new(),
            old_stps: VecDeque::new(),
            ro: ro.iter().copied().collect(),
            h_diag: float("h_diag")?,
            prev_flat_grad: vec("lbfgs.prev_flat_grad", len)?,
            prev_loss: float("prev_loss")?,
        };
        for i in 0..ro.len() {
            st.old_dirs
                .push_back(vec(&format!("lbfgs.old_dirs.{i}"), n_params)?);
            st.old_stps
                .push_back(vec(&format!("lbfgs.old_stps.{i}"), n_params)?);
        }
        for k in ["old_dirs", "old_stps"] {
            let name = format!("lbfgs.{k}.{}", ro.len());
            if get(&name)?.is_some() {
                return Err(bad(&format!(
                    "tensor `{name}` has no `ro` entry (the metadata lists {} pairs)",
                    ro.len()
                )));
            }
        }
        self.state = st;
        Ok(())
    }
}

/// PyTorch's `_strong_wolfe` (c1 1e-4, c2 0.9, tolerance_change 1e-9) along `d` from `x`
/// (loss `f`, gradient `g`, slope `gtd`), trying `t` first. Returns the accepted loss,
/// gradient, step and the number of closure evaluations. `x` is left unchanged.
#[allow(clippy::too_many_arguments)]
fn strong_wolfe<T: Real>(
    closure: &mut impl FnMut(&[T], &mut [T]) -> Result<f64>,
    x: &[T],
    mut t: f64,
    d: &[T],
    f: f64,
    g: &[T],
    gtd: f64,
    max_ls: usize,
) -> Result<(f64, Vec<T>, f64, usize)> {
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    const TOL_CHANGE: f64 = 1e-9;
    let d_norm = max_abs(d);
    let mut xt = vec![T::zero(); x.len()];
    let mut eval = |t: f64, xt: &mut Vec<T>| -> Result<(f64, Vec<T>, f64)> {
        let tt = T::of(t);
        xt.iter_mut()
            .zip(x.iter().zip(d))
            .for_each(|(o, (&p, &dv))| *o = p + tt * dv);
        let mut gn = vec![T::zero(); x.len()];
        let fv = closure(xt, &mut gn)?;
        let gtd_new = dot(&gn, d);
        Ok((fv, gn, gtd_new))
    };
    let (mut f_new, mut g_new, mut gtd_new) = eval(t, &mut xt)?;
    let mut ls_func_evals = 1usize;
    let (mut t_prev, mut f_prev, mut g_prev, mut gtd_prev) = (0.0f64, f, g.to_vec(), gtd);
    let mut done = false;
    let mut ls_iter = 0usize;
    // bracket: (step, loss, gradient, slope)
    let mut br: Vec<(f64, f64, Vec<T>, f64)> = vec![];
    let mut broke = false;
    while ls_iter < max_ls {
        if f_new > f + C1 * t * gtd || (ls_iter > 1 && f_new >= f_prev) {
            br = vec![
                (t_prev, f_prev, std::mem::take(&mut g_prev), gtd_prev),
                (t, f_new, std::mem::take(&mut g_new), gtd_new),
            ];
            broke = true;
            break;
        }
        if gtd_new.abs() <= -C2 * gtd {
            br = vec![(t, f_new, std::mem::take(&mut g_new), gtd_new)];
            done = true;
            broke = true;
            break;
        }
        if gtd_new >= 0.0 {
            br = vec![
                (t_prev, f_prev, std::mem::take(&mut g_prev), gtd_prev),
                (t, f_new, std::mem::take(&mut g_new), gtd_new),
            ];
            broke = true;
            break;
        }
        let min_step = t + 0.01 * (t - t_prev);
        let max_step = t * 10.0;
        let tmp = t;
        t = cubic_interpolate(
            (t_prev, f_prev, gtd_prev),
            (t, f_new, gtd_new),
            Some((min_step, max_step)),
        );
        t_prev = tmp;
        f_prev = f_new;
        g_prev = g_new;
        gtd_prev = gtd_new;
        (f_new, g_new, gtd_new) = eval(t, &mut xt)?;
        ls_func_evals += 1;
        ls_iter += 1;
    }
    if !broke {
        // reached max_ls: PyTorch keeps no slopes here, and the zoom below does not run
        br = vec![(0.0, f, g.to_vec(), f64::NAN), (t, f_new, g_new, f64::NAN)];
    }
    let order = |br: &Vec<(f64, f64, Vec<T>, f64)>| {
        if br[0].1 <= br[br.len() - 1].1 {
            (0, 1)
        } else {
            (1, 0)
        }
    };
    let mut insuf_progress = false;
    let (mut low, mut high) = order(&br);
    while !done && ls_iter < max_ls {
        if (br[1].0 - br[0].0).abs() * d_norm < TOL_CHANGE {
            break;
        }
        t = cubic_interpolate(
            (br[0].0, br[0].1, br[0].3),
            (br[1].0, br[1].1, br[1].3),
            None,
        );
        let (bmax, bmin) = (br[0].0.max(br[1].0), br[0].0.min(br[1].0));
        let eps = 0.1 * (bmax - bmin);
        if (bmax - t).min(t - bmin) < eps {
            if insuf_progress || t >= bmax || t <= bmin {
                t = if (t - bmax).abs() < (t - bmin).abs() {
                    bmax - eps
                } else {
                    bmin + eps
                };
                insuf_progress = false;
            } else {
                insuf_progress = true;
            }
        } else {
            insuf_progress = false;
        }
        let (fv, gv, gtdv) = eval(t, &mut xt)?;
        ls_func_evals += 1;
        ls_iter += 1;
        if fv > f + C1 * t * gtd || fv >= br[low].1 {
            br[high] = (t, fv, gv, gtdv);
            (low, high) = order(&br);
        } else {
            if gtdv.abs() <= -C2 * gtd {
                done = true;
            } else if gtdv * (br[high].0 - br[low].0) >= 0.0 {
                br[high] = br[low].clone();
            }
            br[low] = (t, fv, gv, gtdv);
        }
    }
    let (t, f_new, g_new, _) = br.swap_remove(low);
    Ok((f_new, g_new, t, ls_func_evals))
}

/// A learning-rate schedule, stepped once per epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// `StepLR(step_size, gamma)`.
    Step {
        /// Epochs between decays (`--patience`).
        step: usize,
        /// Factor.
        gamma: f64,
    },
    /// `MultiStepLR(milestones, gamma)`.
    MultiStep {
        /// Epochs at which the rate is multiplied by `gamma`.
        milestones: Vec<usize>,
        /// Factor.
        gamma: f64,
    },
    /// Constant rate.
    Constant,
}

impl Schedule {
    /// From the original's `--decay_type` (`step`, or `step_a_b_c` / `multistep_a_b_c` for
    /// milestones), `--patience` and `--gamma`.
    pub fn parse(decay_type: &str, patience: usize, gamma: f64) -> Result<Self> {
        let dt = decay_type.to_ascii_lowercase();
        if dt == "step" {
            if patience == 0 {
                return Err(Error::param("patience", "must be positive"));
            }
            return Ok(Schedule::Step {
                step: patience,
                gamma,
            });
        }
        if dt == "none" || dt == "constant" {
            return Ok(Schedule::Constant);
        }
        let rest = dt
            .strip_prefix("multistep_")
            .or_else(|| dt.strip_prefix("step_"));
        if let Some(rest) = rest {
            let milestones: std::result::Result<Vec<usize>, _> =
                rest.split('_').map(str::parse).collect();
            if let Ok(mut m) = milestones {
                m.sort_unstable();
                return Ok(Schedule::MultiStep {
                    milestones: m,
                    gamma,
                });
            }
        }
        Err(Error::param(
            "decay-type",
            format!("`{decay_type}`: use step, step_A_B_C (milestones) or none"),
        ))
    }

    /// The rate after `epochs_done` scheduler steps.
    pub fn lr(&self, base: f64, epochs_done: usize) -> f64 {
        match self {
            Schedule::Step { step, gamma } => base * gamma.powi((epochs_done / step) as i32),
            Schedule::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| m <= epochs_done).count() as i32)
            }
            Schedule::Constant => base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::models::{Arch, ModelConfig, Net};
    use std::collections::HashMap;
    use std::path::Path;

    fn tiny_net() -> Net<f32> {
        let cfg = ModelConfig {
            arch: Arch::Mlp,
            width: 4,
            depth: 1,
            n_classes: 3,
            bias: true,
            etf_classifier: false,
            fixdim: 0,
            sota: false,
        };
        Net::new(&cfg, 1).unwrap()
    }

    fn stepped(kind: OptimizerKind) -> (Net<f32>, Optimizer<f32>, HashMap<String, ArrayD<f32>>) {
        let mut net = tiny_net();
        let mut opt = Optimizer::<f32>::new(kind, 1e-3).unwrap();
        opt.step(&mut net, 0.1);
        opt.step(&mut net, 0.1);
        let state = opt.state().into_iter().collect();
        (net, opt, state)
    }

    fn load(
        opt: &mut Optimizer<f32>,
        net: &mut Net<f32>,
        steps: u64,
        map: &HashMap<String, ArrayD<f32>>,
    ) -> Result<()> {
        let shapes = trainable_shapes(net);
        opt.load_state(
            &shapes,
            steps,
            |n| Ok(map.get(n).cloned()),
            Path::new("resume.safetensors"),
        )
    }

    /// A saved state loads back exactly; a buffer of another shape, a missing one, one too
    /// many, NaN values, or buffers before any step are errors naming the tensor, and the
    /// optimizer keeps its previous state (nothing is silently reset).
    #[test]
    fn resume_state_is_validated_against_the_model() {
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
            let (mut net, opt, state) = stepped(kind);
            let mut fresh = Optimizer::<f32>::new(kind, 1e-3).unwrap();
            load(&mut fresh, &mut net, 2, &state).unwrap();
            assert_eq!(fresh.state(), opt.state());
            assert_eq!(fresh.steps, 2);
            let first = match kind {
                OptimizerKind::Sgd => "optim.0.momentum_buffer",
                _ => "optim.0.exp_avg_sq",
            };
            let mut bad = state.clone();
            bad.insert(first.into(), ArrayD::zeros(IxDyn(&[4, 3])));
            let before = fresh.state();
            let e = load(&mut fresh, &mut net, 2, &bad).unwrap_err().to_string();
            assert!(
                e.contains(first) && e.contains("[4, 3]") && e.contains("[4, 3072]"),
                "{e}"
            );
            assert_eq!(fresh.state(), before, "unchanged after an error");
            let mut missing = state.clone();
            missing.remove("optim.2.exp_avg_sq");
            missing.remove("optim.2.momentum_buffer");
            let e = load(&mut fresh, &mut net, 2, &missing)
                .unwrap_err()
                .to_string();
            assert!(e.contains("optim.2.") && e.contains("missing"), "{e}");
            let mut extra = state.clone();
            let n = trainable_shapes(&mut net).len();
            for nm in ["momentum_buffer", "exp_avg", "exp_avg_sq"] {
                extra.insert(format!("optim.{n}.{nm}"), ArrayD::zeros(IxDyn(&[1])));
            }
            let e = load(&mut fresh, &mut net, 2, &extra)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("optim.{n}.")) && e.contains("another model"),
                "{e}"
            );
            let mut nan = state.clone();
            nan.get_mut(first).unwrap()[[0, 0]] = f32::NAN;
            let e = load(&mut fresh, &mut net, 2, &nan).unwrap_err().to_string();
            assert!(e.contains("NaN"), "{e}");
            let e = load(&mut fresh, &mut net, 0, &state)
                .unwrap_err()
                .to_string();
            assert!(e.contains("no step"), "{e}");
            // before the first step an empty state is right
            load(&mut fresh, &mut net, 0, &HashMap::new()).unwrap();
            assert!(fresh.state().is_empty() && fresh.steps == 0);
            let e = load(&mut fresh, &mut net, 3, &HashMap::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains("missing after 3 steps"), "{e}");
        }
    }

    /// The L-BFGS state round-trips, and vectors of another length (another model), too many
    /// pairs, a pair without its `ro` or a non-finite `ro` are errors.
    #[test]
    fn lbfgs_resume_state_is_validated() {
        let n = 5;
        let mut lb = Lbfgs::<f64>::new(1.0, 3).unwrap();
        let mut x = vec![1.0f64; n];
        let quad = |x: &[f64], g: &mut [f64]| -> Result<f64> {
            let mut f = 0.0;
            for (i, (&xi, gi)) in x.iter().zip(g.iter_mut()).enumerate() {
                let a = (i + 1) as f64;
                *gi = a * xi;
                f += 0.5 * a * xi * xi;
            }
            Ok(f)
        };
        lb.step(&mut x, quad).unwrap();
        assert!(!lb.state.old_dirs.is_empty());
        let json = lb.state_json();
        let map: HashMap<String, ArrayD<f64>> = lb.state_tensors().into_iter().collect();
        let what = Path::new("resume.safetensors");
        let get = |m: &HashMap<String, ArrayD<f64>>| {
            let m = m.clone();
            move |k: &str| Ok(m.get(k).cloned())
        };
        let mut back = Lbfgs::<f64>::new(1.0, 3).unwrap();
        back.load_state(&json, n, get(&map), what).unwrap();
        assert_eq!(back.state, lb.state);
        let e = back
            .load_state(&json, n + 1, get(&map), what)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lbfgs.d") && e.contains(&format!("[{}]", n + 1)),
            "{e}"
        );
        let mut short = map.clone();
        short.insert("lbfgs.old_dirs.0".into(), ArrayD::zeros(IxDyn(&[n - 1])));
        let e = back
            .load_state(&json, n, get(&short), what)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lbfgs.old_dirs.0"), "{e}");
        let pairs = lb.state.ro.len();
        let mut extra = map.clone();
        extra.insert(
            format!("lbfgs.old_dirs.{pairs}"),
            ArrayD::zeros(IxDyn(&[n])),
        );
        let e = back
            .load_state(&json, n, get(&extra), what)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `ro` entry"), "{e}");
        let mut small = Lbfgs::<f64>::new(1.0, pairs - 1).unwrap();
        if pairs > 1 {
            let e = small
                .load_state(&json, n, get(&map), what)
                .unwrap_err()
                .to_string();
            assert!(e.contains("history size"), "{e}");
        }
        let nan_ro = json.replacen("\"ro\":[", &format!("\"ro\":[{},", f64::NAN.to_bits()), 1);
        let e = back
            .load_state(&nan_ro, n, get(&map), what)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ro`"), "{e}");
        let _ = &mut small;
    }

    #[test]
    fn schedules_match_pytorch() {
        let s = Schedule::parse("step", 40, 0.1).unwrap();
        assert_eq!(s.lr(1.0, 39), 1.0);
        assert!((s.lr(1.0, 40) - 0.1).abs() < 1e-15);
        assert!((s.lr(0.05, 80) - 0.0005).abs() < 1e-15);
        let m = Schedule::parse("step_3_5", 40, 0.5).unwrap();
        assert_eq!(m.lr(1.0, 2), 1.0);
        assert_eq!(m.lr(1.0, 3), 0.5);
        assert_eq!(m.lr(1.0, 5), 0.25);
        assert!(Schedule::parse("cosine", 1, 0.1).is_err());
    }
}
