//! The regularised UFM objective, its gradient and its exact Hessian-vector product.
//!
//! $$f(W,H,b)=\frac1N\sum_{i=1}^N\ell(Wh_i+b,\,y_i)+\frac{\lambda_W}2\lVert W\rVert_F^2+\frac{\lambda_H}2\lVert H\rVert_F^2+\frac{\lambda_b}2\lVert b\rVert_2^2$$
//! (Zhu et al., *A Geometric Analysis of Neural Collapse with Unconstrained Features*,
//! NeurIPS 2021, eq. (4)). With $z_i=Wh_i+b$, $g_i=\nabla\ell(z_i,y_i)$ and
//! $G=[g_1,\dots,g_N]/N$:
//!
//! $$\nabla_Wf=GH^\top+\lambda_WW,\qquad \nabla_{h_i}f=W^\top G_{:,i}+\lambda_Hh_i,\qquad \nabla_bf=G\mathbf 1+\lambda_bb.$$
//!
//! **Hessian-vector product** in the direction $(V_W,V_H,v_b)$: with
//! $\dot z_i=V_Wh_i+Wv_i+v_b$ and $q_i=\nabla^2\ell(z_i,y_i)\,\dot z_i$, $Q=[q_1,\dots,q_N]/N$,
//!
//! $$\nabla^2f\lbrack V\rbrack_W=QH^\top+GV_H^\top+\lambda_WV_W,\quad
//! \nabla^2f\lbrack V\rbrack_{h_i}=W^\top Q_{:,i}+V_W^\top G_{:,i}+\lambda_Hv_i,\quad
//! \nabla^2f\lbrack V\rbrack_b=Q\mathbf 1+\lambda_bv_b .$$
//!
//! It costs seven skinny GEMMs against the gradient's three, i.e. about two gradients, and is
//! exact (no finite differences).
//!
//! **Implementation.** $f$, $(f,\nabla f)$ and the fused gradient step run the single-pass
//! kernel of the private module `ufm::fused`: for a few samples at a time it computes the
//! logits, the loss gradients, their contribution to $\nabla_W f$ and (for the step) the updated
//! $h_i$, while the rows are in L1, so $H$ is streamed from memory once per evaluation (the
//! textbook three-GEMM form reads it three times). [`UfmProblem::gd_step_fused`] applies the
//! update in the same pass. The Hessian-vector product works on blocks of [`BLOCK`] rows with
//! GEMMs.
//!
//! **Determinism.** Samples are cut into chunks (the fused kernel) or lanes of blocks (the
//! Hessian-vector product, at most [`MAX_LANES`]) by rules that depend only on $(K, d, N)$;
//! chunks run in parallel, each summing into its own partial $\nabla_W f$, $\nabla_b f$, loss
//! and $\lVert H\rVert^2$, and the partials are added in order ([`crate::par`]). So every
//! evaluation returns the same bits on every run and on any number of threads, and $f$ from
//! [`UfmProblem::value`], [`UfmProblem::value_grad`] and [`UfmProblem::gd_step_fused`] agree
//! bit for bit.

use crate::par;
use crate::real::Real;
use crate::ufm::fused;
use crate::ufm::problem::UfmProblem;
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Rows of $H^\top$ per block of the Hessian-vector product (a block of $512\times512$ f32 is
/// 1 MiB, an L2-sized tile).
pub const BLOCK: usize = 512;

/// Most lanes (independent partial sums) of one evaluation; fewer when the $K\times d$
/// partials would take more than [`LANE_BUDGET`] bytes together (but at least 4).
pub const MAX_LANES: usize = 32;

/// Bytes that the lanes' partial $\nabla_W f$ may take together.
pub const LANE_BUDGET: usize = 64 << 20;

fn sq_norm<T: Real>(a: &[T]) -> f64 {
    crate::real::dot(a, a)
}

impl UfmProblem {
    /// Rows of $H^\top$ per lane: a whole number of blocks, from $(K, d, N)$ and the precision
    /// only (see the module docs).
    pub fn lane_rows<T: Real>(&self) -> usize {
        let (k, d, n) = (self.n_classes(), self.feature_dim(), self.n_samples());
        let lanes = par::lanes_within(MAX_LANES, 4, k * d * std::mem::size_of::<T>(), LANE_BUDGET);
        par::lane_len(n.div_ceil(BLOCK), lanes) * BLOCK
    }

    /// Logits of a block, $Z_b=H_bW^\top+\mathbf 1b^\top$, into `z` (rows × K).
    fn block_logits<T: Real>(
        &self,
        hb: &ArrayView2<T>,
        w: &ArrayView2<T>,
        b: Option<&ndarray::ArrayView1<T>>,
        z: &mut ArrayViewMut2<T>,
    ) {
        general_mat_mul(T::one(), hb, &w.t(), T::zero(), z);
        if let Some(b) = b {
            z.axis_iter_mut(Axis(0)).for_each(|mut r| r += b);
        }
    }

    /// The summed loss of a block's logits, which are replaced by $\nabla\ell/N$.
    fn block_loss_grad<T: Real>(&self, first: usize, z: &mut ArrayViewMut2<T>, inv_n: T) -> f64 {
        let loss = self.loss();
        let labels = &self.labels()[first..first + z.nrows()];
        let mut total = 0.0;
        for (mut row, &y) in z.axis_iter_mut(Axis(0)).zip(labels) {
            let zr = row.as_slice_mut().expect("contiguous logits");
            total += loss.value_grad_inplace(zr, y as usize).to_f64_();
            for v in zr.iter_mut() {
                *v *= inv_n;
            }
        }
        total
    }

    /// $f(x)$.
    pub fn value<T: Real>(&self, x: &[T]) -> T {
        let (w, ht, b) = self.split(x);
        let sums = fused::pass(
            &self.fused_model(&w, b.as_ref()),
            fused::Pass::Value(ht.to_slice().expect("contiguous H")),
        );
        let n = self.n_samples() as f64;
        T::of(self.regularised(sums.loss / n, &w, sums.h_sq, b.as_ref()))
    }

    /// The fixed inputs of a [`fused`] pass at $(W, b)$.
    fn fused_model<'a, T: Real>(
        &'a self,
        w: &'a ArrayView2<'a, T>,
        b: Option<&'a ndarray::ArrayView1<'a, T>>,
    ) -> fused::Model<'a, T> {
        fused::Model {
            w: w.to_slice().expect("contiguous W"),
            b: b.map(|b| b.to_slice().expect("contiguous b")),
            labels: self.labels(),
            k: self.n_classes(),
            d: self.feature_dim(),
            loss: self.loss(),
            inv_n: T::of(1.0 / self.n_samples() as f64),
            lambda_h: T::of(self.lambda_h()),
        }
    }

    fn regularised<T: Real>(
        &self,
        mean_loss: f64,
        w: &ArrayView2<T>,
        h_sq: f64,
        b: Option<&ndarray::ArrayView1<T>>,
    ) -> f64 {
        let w_sq = sq_norm(w.as_slice().expect("W"));
        let b_sq = b.map_or(0.0, |b| sq_norm(b.as_slice().expect("b")));
        mean_loss + 0.5 * (self.lambda_w() * w_sq + self.lambda_h() * h_sq + self.lambda_b() * b_sq)
    }

    /// $f(x)$ and $\nabla f(x)$ (written into `grad`).
    pub fn value_grad<T: Real>(&self, x: &[T], grad: &mut [T]) -> T {
        let n = self.n_samples();
        let (w, ht, b) = self.split(x);
        let (mut gw, mut ght, gb) = self.split_mut(grad);
        let acc = fused::pass(
            &self.fused_model(&w, b.as_ref()),
            fused::Pass::Grad {
                h: ht.to_slice().expect("H"),
                gh: ght.as_slice_mut().expect("grad H"),
            },
        );
        let lam_w = T::of(self.lambda_w());
        for ((g, &a), &wv) in gw
            .as_slice_mut()
            .expect("grad W")
            .iter_mut()
            .zip(&acc.gw)
            .zip(w.to_slice().expect("W"))
        {
            *g = a + lam_w * wv;
        }
        if let (Some(mut gb), Some(b)) = (gb, b.as_ref()) {
            let lam_b = T::of(self.lambda_b());
            for ((g, &a), &bv) in gb.iter_mut().zip(&acc.gb).zip(b.iter()) {
                *g = a + lam_b * bv;
            }
        }
        T::of(self.regularised(acc.loss / n as f64, &w, acc.h_sq, b.as_ref()))
    }

    /// One fused full-batch gradient-descent step $x\leftarrow x-\eta\nabla f(x)$ that streams
    /// $H$ once: each block of $H$ is read, its gradient formed and the block overwritten in
    /// place while it is in cache. Returns $\big(f(x),\lVert\nabla f(x)\rVert\big)$ at the point
    /// *before* the step.
    pub fn gd_step_fused<T: Real>(&self, x: &mut [T], lr: T) -> (T, f64) {
        let n = self.n_samples();
        let (mut w, mut ht, b) = self.split_mut(x);
        let b_ro = b.as_ref().map(|b| b.view());
        let w_ro = w.view();
        let acc = fused::pass(
            &self.fused_model(&w_ro, b_ro.as_ref()),
            fused::Pass::Step {
                h: ht.as_slice_mut().expect("H"),
                lr,
            },
        );
        let f = self.regularised(acc.loss / n as f64, &w_ro, acc.h_sq, b_ro.as_ref());
        let lam_w = T::of(self.lambda_w());
        let mut g_sq = acc.gh_sq;
        for (wv, &a) in w.as_slice_mut().expect("W").iter_mut().zip(&acc.gw) {
            let g = a + lam_w * *wv;
            g_sq += g.to_f64_() * g.to_f64_();
            *wv -= lr * g;
        }
        if let Some(mut b) = b {
            let lam_b = T::of(self.lambda_b());
            for (bv, &a) in b.iter_mut().zip(&acc.gb) {
                let g = a + lam_b * *bv;
                g_sq += g.to_f64_() * g.to_f64_();
                *bv -= lr * g;
            }
        }
        (T::of(f), g_sq.sqrt())
    }

    /// Exact Hessian-vector product $\nabla^2f(x)\,v$ written into `out`.
    pub fn hvp<T: Real>(&self, x: &[T], v: &[T], out: &mut [T]) {
        let (k, d, n) = (self.n_classes(), self.feature_dim(), self.n_samples());
        let (w, ht, b) = self.split(x);
        let (vw, vht, vb) = self.split(v);
        let (mut ow, mut oht, ob) = self.split_mut(out);
        let inv_n = T::of(1.0 / n as f64);
        let lam_h = T::of(self.lambda_h());
        let loss = self.loss();
        let labels = self.labels();
        let lane = self.lane_rows::<T>();
        /// Per-thread scratch: logits, their directional derivative, two K-vectors.
        struct Scratch<T> {
            z: Array2<T>,
            dz: Array2<T>,
            p: Vec<T>,
            q: Vec<T>,
        }
        let parts: Vec<(Array2<T>, Vec<T>)> = ht
            .as_slice()
            .expect("H")
            .par_chunks(lane * d)
            .zip(vht.as_slice().expect("V_H").par_chunks(lane * d))
            .zip(oht.as_slice_mut().expect("out H").par_chunks_mut(lane * d))
            .enumerate()
            .map_init(
                || Scratch {
                    z: Array2::zeros((BLOCK, k)),
                    dz: Array2::zeros((BLOCK, k)),
                    p: vec![T::zero(); k],
                    q: vec![T::zero(); k],
                },
                |sc, (li, ((hl, vhl), ohl))| {
                    let mut acc_w = Array2::<T>::zeros((k, d));
                    let mut acc_b = vec![T::zero(); k];
                    for (j, ((hb, vhb), ohb)) in hl
                        .chunks(BLOCK * d)
                        .zip(vhl.chunks(BLOCK * d))
                        .zip(ohl.chunks_mut(BLOCK * d))
                        .enumerate()
                    {
                        let first = li * lane + j * BLOCK;
                        let rows = hb.len() / d;
                        let hb = ArrayView2::from_shape((rows, d), hb).expect("block");
                        let vhb = ArrayView2::from_shape((rows, d), vhb).expect("block");
                        let mut ohb = ArrayViewMut2::from_shape((rows, d), ohb).expect("block");
                        let mut z = sc.z.slice_mut(s![..rows, ..]);
                        let mut dz = sc.dz.slice_mut(s![..rows, ..]);
                        self.block_logits(&hb, &w, b.as_ref(), &mut z);
                        // ż = H_b V_Wᵀ + V_Hb Wᵀ + 1 v_bᵀ
                        self.block_logits(&vhb, &w, vb.as_ref(), &mut dz);
                        general_mat_mul(T::one(), &hb, &vw.t(), T::one(), &mut dz);
                        // q_i = ∇²ℓ ż_i (into dz), g_i = ∇ℓ (into z), both / N
                        for r in 0..rows {
                            let y = labels[first + r] as usize;
                            {
                                let (zr, dzr) = (z.row(r), dz.row(r));
                                let (zs, dzs) =
                                    (zr.as_slice().expect("row"), dzr.as_slice().expect("row"));
                                loss.hvp(zs, y, dzs, &mut sc.q, &mut sc.p);
                            }
                            for (dst, &qv) in dz.row_mut(r).iter_mut().zip(&sc.q) {
                                *dst = qv * inv_n;
                            }
                        }
                        self.block_loss_grad(first, &mut z, inv_n);
                        // out_W += Qᵀ H_b + Gᵀ V_Hb
                        general_mat_mul(T::one(), &dz.t(), &hb, T::one(), &mut acc_w);
                        general_mat_mul(T::one(), &z.t(), &vhb, T::one(), &mut acc_w);
                        for row in dz.axis_iter(Axis(0)) {
                            for (o, &qv) in acc_b.iter_mut().zip(row.iter()) {
                                *o += qv;
                            }
                        }
                        // out_Hb = λ_H V_Hb + Q W + G V_W
                        ohb.zip_mut_with(&vhb, |o, &vv| *o = lam_h * vv);
                        general_mat_mul(T::one(), &dz, &w, T::one(), &mut ohb);
                        general_mat_mul(T::one(), &z, &vw, T::one(), &mut ohb);
                    }
                    (acc_w, acc_b)
                },
            )
            .collect();
        let (acc_w, acc_b) = par::combine_in_order(parts, |a, o| {
            a.0 += &o.0;
            for (x, y) in a.1.iter_mut().zip(&o.1) {
                *x += *y;
            }
        })
        .unwrap_or_else(|| (Array2::zeros((k, d)), vec![T::zero(); k]));
        let lam_w = T::of(self.lambda_w());
        ndarray::Zip::from(&mut ow)
            .and(&acc_w)
            .and(&vw)
            .for_each(|o, &a, &vv| *o = a + lam_w * vv);
        if let (Some(mut ob), Some(vb)) = (ob, vb) {
            let lam_b = T::of(self.lambda_b());
            for ((o, &a), &vv) in ob.iter_mut().zip(&acc_b).zip(vb.iter()) {
                *o = a + lam_b * vv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ufm::{Loss, UfmConfig};

    /// Slow, obviously correct objective: explicit loops over samples and classes.
    fn naive_value(p: &crate::ufm::UfmProblem, x: &[f64]) -> f64 {
        let (w, h, b) = p.split(x);
        let k = p.n_classes();
        let mut total = 0.0;
        for (i, &y) in p.labels().iter().enumerate() {
            let mut z: Vec<f64> = (0..k)
                .map(|c| w.row(c).dot(&h.row(i)) + b.as_ref().map_or(0.0, |b| b[c]))
                .collect();
            total += p.loss().value_grad_inplace(&mut z, y as usize);
        }
        let sq = |a: &[f64]| a.iter().map(|v| v * v).sum::<f64>();
        total / p.n_samples() as f64
            + 0.5 * p.lambda_w() * sq(w.as_slice().unwrap())
            + 0.5 * p.lambda_h() * sq(h.as_slice().unwrap())
            + 0.5 * p.lambda_b() * b.map_or(0.0, |b| sq(b.as_slice().unwrap()))
    }

    #[test]
    fn blocked_parallel_objective_matches_naive_loops() {
        // N = 1200 > 2·BLOCK so several blocks (and a ragged last one) are exercised.
        for loss in [
            Loss::CrossEntropy,
            Loss::Mse,
            Loss::LabelSmoothing { alpha: 0.1 },
            Loss::Focal { gamma: 2.0 },
        ] {
            let p = UfmConfig::with_class_sizes(vec![400, 420, 380], 7)
                .lambdas(1e-2, 2e-2, 3e-3)
                .loss(loss)
                .build()
                .unwrap();
            let mut x: Vec<f64> = p.random_point(3, 0.7).unwrap();
            let nb = x.len();
            x[nb - 3..].copy_from_slice(&[0.1, -0.2, 0.3]);
            let f = p.value(&x);
            let mut g = vec![0.0; nb];
            let f2 = p.value_grad(&x, &mut g);
            let fr = naive_value(&p, &x);
            assert!(
                (f - fr).abs() < 1e-12 * fr.abs().max(1.0),
                "{loss}: {f} vs {fr}"
            );
            assert!((f2 - fr).abs() < 1e-12 * fr.abs().max(1.0));
            // the same partial sums in the same order: the same bits
            assert_eq!(f.to_bits(), f2.to_bits(), "{loss}");
            let (f3, _) = p.gd_step_fused(&mut x.clone(), 0.1);
            assert_eq!(f.to_bits(), f3.to_bits(), "{loss}");
        }
    }

    #[test]
    fn fused_gd_step_equals_gradient_step() {
        let p = UfmConfig::with_class_sizes(vec![700, 600], 5)
            .lambdas(1e-2, 1e-3, 1e-2)
            .build()
            .unwrap();
        let x0: Vec<f64> = p.random_point(11, 1.0).unwrap();
        let mut g = vec![0.0; x0.len()];
        let f = p.value_grad(&x0, &mut g);
        let lr = 0.3;
        let expect: Vec<f64> = x0.iter().zip(&g).map(|(a, b)| a - lr * b).collect();
        let mut x = x0.clone();
        let (f2, gn) = p.gd_step_fused(&mut x, lr);
        assert!((f - f2).abs() < 1e-13);
        assert!((gn - crate::real::norm(&g)).abs() < 1e-12);
        for (a, b) in x.iter().zip(&expect) {
            assert!((a - b).abs() < 1e-13);
        }
    }
}
