//! The GPU network: the layers of [`crate::nn::layers`] on device buffers (same formulas, same
//! parameter names and layouts), the MLP and ResNet bodies, the classifier, the losses and the
//! fused optimizer updates. Parameters live in a [`Store`] in `state_dict` order, so a model is
//! uploaded from and downloaded to a CPU [`Net`] by name.

use super::gpu::{i32_of, launch, Act, DBuf, Gpu};
use crate::error::{Error, Result};
use crate::nn::layers::{LossKind, Module, TensorMut};
use crate::nn::models::{Arch, ModelConfig, Net, ResNetSpec, Stem};
use crate::nn::optim::{Optimizer, OptimizerKind};
use ndarray::ArrayD;
use std::collections::HashMap;
use std::rc::Rc;

/// `src` ($n\cdot c\cdot$`plane` values) permuted NCHW → CNHW (`to_cnhw`) or CNHW → NCHW, into
/// a new buffer: the layouts of the convolution's GEMM output and of the layers around it.
fn permute(
    g: &Gpu,
    src: &DBuf<f32>,
    [n, c, plane]: [usize; 3],
    to_cnhw: bool,
) -> Result<DBuf<f32>> {
    let mut dst = g.uninit::<f32>(n * c * plane)?;
    let (ni, ci, li) = (
        i32_of("batch", n)?,
        i32_of("channels", c)?,
        i32_of("plane", plane)?,
    );
    let cfg = g.cfg1(dst.len());
    if to_cnhw {
        // SAFETY: src and dst hold n*c*plane values (NCHW -> CNHW); dst is fully written.
        launch!(g, "nchw_to_cnhw", cfg, [&src.s, &ni, &ci, &li, &mut dst.s]);
    } else {
        // SAFETY: src and dst hold n*c*plane values (CNHW -> NCHW); dst is fully written.
        launch!(g, "cnhw_to_nchw", cfg, [&src.s, &ni, &ci, &li, &mut dst.s]);
    }
    Ok(dst)
}

/// One parameter: value, gradient (written by every backward pass) and optimizer state.
pub(crate) struct GParam {
    pub name: String,
    pub shape: Vec<usize>,
    pub w: DBuf<f32>,
    pub g: DBuf<f32>,
    pub m: Option<DBuf<f32>>,
    pub v: Option<DBuf<f32>>,
    pub trainable: bool,
}

/// Every parameter and buffer of a network, in `state_dict` order.
#[derive(Default)]
pub(crate) struct Store {
    pub params: Vec<GParam>,
    pub bufs: Vec<(String, DBuf<f32>)>,
    pub counts: Vec<(String, i64)>,
}

impl Store {
    fn param(&mut self, g: &Gpu, name: String, shape: &[usize]) -> Result<usize> {
        let len = shape.iter().product();
        self.params.push(GParam {
            name,
            shape: shape.to_vec(),
            w: g.zeros(len)?,
            g: g.zeros(len)?,
            m: None,
            v: None,
            trainable: true,
        });
        Ok(self.params.len() - 1)
    }
    fn buffer(&mut self, g: &Gpu, name: String, len: usize) -> Result<usize> {
        self.bufs.push((name, g.zeros(len)?));
        Ok(self.bufs.len() - 1)
    }
    fn count(&mut self, name: String) -> usize {
        self.counts.push((name, 0));
        self.counts.len() - 1
    }
}

fn join(prefix: &str, name: &str) -> String {
    crate::nn::layers::join(prefix, name)
}

/// Two distinct entries of a slice, mutably.
fn two_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert_ne!(i, j, "two_mut needs distinct indices");
    if i < j {
        let (a, b) = v.split_at_mut(j);
        (&mut a[i], &mut b[0])
    } else {
        let (a, b) = v.split_at_mut(i);
        (&mut b[0], &mut a[j])
    }
}

/// NCHW shape.
pub(crate) type Shape = [usize; 4];

// ---------------------------------------------------------------------------------------------
// Convolution

/// `Conv2d(cin, cout, k, stride, padding, bias=False)` by im2col + SGEMM.
pub(crate) struct Conv {
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
    x: Option<(Act, Shape)>,
}

impl Conv {
    pub fn new(
        g: &Gpu,
        st: &mut Store,
        name: &str,
        (cin, cout, k, s, p): (usize, usize, usize, usize, usize),
    ) -> Result<Self> {
        let w = st.param(g, join(name, "weight"), &[cout, cin, k, k])?;
        Ok(Conv {
            w,
            cin,
            cout,
            k,
            s,
            p,
            x: None,
        })
    }

    pub fn out_size(&self, h: usize) -> usize {
        (h + 2 * self.p - self.k) / self.s + 1
    }

    fn im2col(&self, g: &Gpu, x: &DBuf<f32>, sh: Shape) -> Result<(DBuf<f32>, usize, usize)> {
        let [n, c, h, w] = sh;
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let rows = c * self.k * self.k;
        let total = rows * n * oh * ow;
        let mut cols = g.uninit::<f32>(total)?;
        let a = [n, c, h, w, self.k, self.s, self.p, oh, ow]
            .iter()
            .map(|&v| i32_of("convolution size", v))
            .collect::<Result<Vec<i32>>>()?;
        // SAFETY: x holds n*c*h*w values (NCHW), cols c*k*k * n*oh*ow values, all written; the
        // kernel reads x only inside the image (padding gives 0) and grid-strides over `total`.
        launch!(
            g,
            "im2col",
            g.cfg1(total),
            [
                &x.s,
                &a[0],
                &a[1],
                &a[2],
                &a[3],
                &a[4],
                &a[5],
                &a[6],
                &a[7],
                &a[8],
                &mut cols.s
            ]
        );
        Ok((cols, oh, ow))
    }

    /// $Y=W\,X_\text{col}$, returned in NCHW; caches the input.
    pub fn forward(&mut self, g: &Gpu, st: &Store, x: Act, sh: Shape) -> Result<(Act, Shape)> {
        if sh[1] != self.cin {
            return Err(Error::shape(
                "convolution input channels",
                format!("{}", self.cin),
                format!("{}", sh[1]),
            ));
        }
        let n = sh[0];
        let (cols, oh, ow) = self.im2col(g, &x, sh)?;
        let (nl, ckk) = (n * oh * ow, self.cin * self.k * self.k);
        let mut yt = g.uninit::<f32>(self.cout * nl)?;
        // Y^T (row-major cout x NL) = W (cout x CKK) cols (CKK x NL); column-major:
        // yt (NL x cout) = cols (NL x CKK) * W^T-as-stored (CKK x cout).
        g.sgemm(
            "conv forward",
            (false, false),
            (nl, self.cout, ckk),
            &cols.s,
            nl,
            &st.params[self.w].w.s,
            ckk,
            0.0,
            &mut yt.s,
            nl,
        )?;
        drop(cols);
        let y = permute(g, &yt, [n, self.cout, oh * ow], false)?;
        self.x = Some((x, sh));
        Ok((Rc::new(y), [n, self.cout, oh, ow]))
    }

    /// Writes $\partial_W$ and returns $\partial_x$ when `need_dx`.
    pub fn backward(
        &mut self,
        g: &Gpu,
        st: &mut Store,
        dy: &DBuf<f32>,
        need_dx: bool,
    ) -> Result<Option<DBuf<f32>>> {
        let (x, sh) = self.x.take().ok_or_else(|| Error::Cuda {
            context: "Conv backward".into(),
            reason: "called before forward".into(),
        })?;
        let n = sh[0];
        let (oh, ow) = (self.out_size(sh[2]), self.out_size(sh[3]));
        let (nl, ckk) = (n * oh * ow, self.cin * self.k * self.k);
        let dyt = permute(g, dy, [n, self.cout, oh * ow], true)?;
        let (cols, _, _) = self.im2col(g, &x, sh)?;
        drop(x);
        {
            let p = &mut st.params[self.w];
            // dW (row-major cout x CKK) = dY^T (cout x NL) cols^T; column-major:
            // dW (CKK x cout) = cols^T (CKK x NL) * dyt (NL x cout).
            g.sgemm(
                "conv dW",
                (true, false),
                (ckk, self.cout, nl),
                &cols.s,
                nl,
                &dyt.s,
                nl,
                0.0,
                &mut p.g.s,
                ckk,
            )?;
        }
        drop(cols);
        if !need_dx {
            return Ok(None);
        }
        let mut dcols = g.uninit::<f32>(ckk * nl)?;
        // dcols (row-major CKK x NL) = W^T dY^T; column-major: dcols (NL x CKK) =
        // dyt (NL x cout) * (W stored CKK x cout)^T.
        g.sgemm(
            "conv dcols",
            (false, true),
            (nl, ckk, self.cout),
            &dyt.s,
            nl,
            &st.params[self.w].w.s,
            ckk,
            0.0,
            &mut dcols.s,
            nl,
        )?;
        drop(dyt);
        let [_, c, h, w] = sh;
        let mut dx = g.uninit::<f32>(n * c * h * w)?;
        let a = [n, c, h, w, self.k, self.s, self.p, oh, ow]
            .iter()
            .map(|&v| i32_of("convolution size", v))
            .collect::<Result<Vec<i32>>>()?;
        // SAFETY: dcols holds c*k*k * n*oh*ow values, dx n*c*h*w values, each written once
        // (gather over the windows that contain it).
        launch!(
            g,
            "col2im",
            g.cfg1(dx.len()),
            [&dcols.s, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6], &a[7], &a[8], &mut dx.s]
        );
        Ok(Some(dx))
    }
}

// ---------------------------------------------------------------------------------------------
// Batch normalisation

type BnCache = (Act, DBuf<f32>, DBuf<f32>, bool, [usize; 3]);

/// `BatchNorm1d/2d(c)`: batch statistics in training (running statistics updated), running
/// statistics in evaluation; optional fused residual add and ReLU on the output.
pub(crate) struct Bn {
    pub w: usize,
    pub b: usize,
    pub rm: usize,
    pub rv: usize,
    pub cnt: usize,
    pub c: usize,
    pub momentum: f64,
    pub eps: f64,
    cache: Option<BnCache>,
}

impl Bn {
    pub fn new(g: &Gpu, st: &mut Store, name: &str, c: usize) -> Result<Self> {
        let w = st.param(g, join(name, "weight"), &[c])?;
        let b = st.param(g, join(name, "bias"), &[c])?;
        g.upload_into(&vec![1.0f32; c], &mut st.params[w].w)?;
        let rm = st.buffer(g, join(name, "running_mean"), c)?;
        let rv = st.buffer(g, join(name, "running_var"), c)?;
        g.upload_into(&vec![1.0f32; c], &mut st.bufs[rv].1)?;
        let cnt = st.count(join(name, "num_batches_tracked"));
        Ok(Bn {
            w,
            b,
            rm,
            rv,
            cnt,
            c,
            momentum: 0.1,
            eps: 1e-5,
            cache: None,
        })
    }

    /// $y=\gamma\hat x+\beta\,[+\,r]\,[\to\max(\cdot,0)]$ on `x` of shape `n × c × l`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        g: &Gpu,
        st: &mut Store,
        x: Act,
        (n, c, l): (usize, usize, usize),
        train: bool,
        res: Option<&DBuf<f32>>,
        relu: bool,
    ) -> Result<DBuf<f32>> {
        if c != self.c {
            return Err(Error::shape(
                "batch-norm channels",
                format!("{}", self.c),
                format!("{c}"),
            ));
        }
        if train && n * l < 2 {
            return Err(Error::param(
                "batch-size",
                "batch norm in training mode needs more than one value per channel",
            ));
        }
        let (ni, ci, li) = (
            i32_of("batch", n)?,
            i32_of("channels", c)?,
            i32_of("plane", l)?,
        );
        let mut mean = g.uninit::<f32>(c)?;
        let mut inv = g.uninit::<f32>(c)?;
        if train {
            let (rm, rv) = two_mut(&mut st.bufs, self.rm, self.rv);
            // SAFETY: x holds n*c*l values; mean, invstd, running_mean, running_var hold c
            // values; one block per channel writes its own entries.
            launch!(
                g,
                "bn_stats",
                g.cfg_blocks(c),
                [
                    &x.s,
                    &ni,
                    &ci,
                    &li,
                    &self.momentum,
                    &self.eps,
                    &mut mean.s,
                    &mut inv.s,
                    &mut rm.1.s,
                    &mut rv.1.s
                ]
            );
            st.counts[self.cnt].1 += 1;
        } else {
            // SAFETY: running stats, mean and invstd hold c values; grid-stride over c.
            launch!(
                g,
                "bn_eval_stats",
                g.cfg1(c),
                [
                    &st.bufs[self.rm].1.s,
                    &st.bufs[self.rv].1.s,
                    &ci,
                    &self.eps,
                    &mut mean.s,
                    &mut inv.s
                ]
            );
        }
        let total = n * c * l;
        let mut y = g.uninit::<f32>(total)?;
        let has_res = i32::from(res.is_some());
        let relu_i = i32::from(relu);
        let res_s = res.map(|r| &r.s).unwrap_or(&x.s);
        if let Some(r) = res {
            if r.len() < total {
                return Err(Error::shape(
                    "residual",
                    format!("{total}"),
                    format!("{}", r.len()),
                ));
            }
        }
        // SAFETY: x, y (and res when has_res) hold n*c*l values; mean, invstd, gamma, beta c
        // values; res is not read when has_res = 0.
        launch!(
            g,
            "bn_fwd",
            g.cfg1(total),
            [
                &x.s,
                &mean.s,
                &inv.s,
                &st.params[self.w].w.s,
                &st.params[self.b].w.s,
                res_s,
                &has_res,
                &relu_i,
                &ni,
                &ci,
                &li,
                &mut y.s
            ]
        );
        self.cache = Some((x, mean, inv, train, [n, c, l]));
        Ok(y)
    }

    /// Writes $\partial_\gamma,\partial_\beta$ and returns $\partial_x$.
    pub fn backward(&mut self, g: &Gpu, st: &mut Store, dy: &DBuf<f32>) -> Result<DBuf<f32>> {
        let (x, mean, inv, train, [n, c, l]) = self.cache.take().ok_or_else(|| Error::Cuda {
            context: "BatchNorm backward".into(),
            reason: "called before forward".into(),
        })?;
        let (ni, ci, li) = (
            i32_of("batch", n)?,
            i32_of("channels", c)?,
            i32_of("plane", l)?,
        );
        let mut sums = g.uninit::<f32>(2 * c)?;
        {
            let (pw, pb) = two_mut(&mut st.params, self.w, self.b);
            // SAFETY: dy and x hold n*c*l values; mean, invstd, dgamma, dbeta c values, sums
            // 2c; one block per channel writes its own entries.
            launch!(
                g,
                "bn_bwd_reduce",
                g.cfg_blocks(c),
                [
                    &dy.s,
                    &x.s,
                    &mean.s,
                    &inv.s,
                    &ni,
                    &ci,
                    &li,
                    &mut pw.g.s,
                    &mut pb.g.s,
                    &mut sums.s
                ]
            );
        }
        let total = n * c * l;
        let mut dx = g.uninit::<f32>(total)?;
        let train_i = i32::from(train);
        // SAFETY: dy, x, dx hold n*c*l values; mean, invstd, gamma c values, sums 2c.
        launch!(
            g,
            "bn_bwd_dx",
            g.cfg1(total),
            [
                &dy.s,
                &x.s,
                &mean.s,
                &inv.s,
                &st.params[self.w].w.s,
                &sums.s,
                &train_i,
                &ni,
                &ci,
                &li,
                &mut dx.s
            ]
        );
        Ok(dx)
    }
}

/// $\delta\odot\mathbb 1[y>0]$ (out of place).
pub(crate) fn relu_bwd(g: &Gpu, dy: &DBuf<f32>, y: &DBuf<f32>, len: usize) -> Result<DBuf<f32>> {
    let mut dx = g.uninit::<f32>(len)?;
    let n = len as i64;
    // SAFETY: dy, y and dx hold `len` values.
    launch!(g, "relu_bwd", g.cfg1(len), [&dy.s, &y.s, &n, &mut dx.s]);
    Ok(dx)
}

/// $\max(x,0)$ (out of place).
pub(crate) fn relu_fwd(g: &Gpu, x: &DBuf<f32>, len: usize) -> Result<DBuf<f32>> {
    let mut y = g.uninit::<f32>(len)?;
    let n = len as i64;
    // SAFETY: x and y hold `len` values.
    launch!(g, "relu_fwd", g.cfg1(len), [&x.s, &n, &mut y.s]);
    Ok(y)
}

/// $y\mathrel{+}=a\,x$.
pub(crate) fn axpy(g: &Gpu, y: &mut DBuf<f32>, x: &DBuf<f32>, a: f32, len: usize) -> Result<()> {
    if y.len() < len || x.len() < len {
        return Err(Error::shape(
            "axpy",
            format!("{len}"),
            format!("{}", x.len().min(y.len())),
        ));
    }
    let n = len as i64;
    // SAFETY: x and y hold at least `len` values (checked).
    launch!(g, "axpy", g.cfg1(len), [&mut y.s, &x.s, &a, &n]);
    Ok(())
}

/// $y\mathrel{+}=x$.
pub(crate) fn add(g: &Gpu, y: &mut DBuf<f32>, x: &DBuf<f32>, len: usize) -> Result<()> {
    if y.len() < len || x.len() < len {
        return Err(Error::shape(
            "add",
            format!("{len}"),
            format!("{}", x.len().min(y.len())),
        ));
    }
    let n = len as i64;
    // SAFETY: x and y hold at least `len` values (checked).
    launch!(g, "add", g.cfg1(len), [&mut y.s, &x.s, &n]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pooling

/// `MaxPool2d(k, s, p)` with arg-max indices.
pub(crate) struct MaxPool {
    pub k: usize,
    pub s: usize,
    pub p: usize,
    cache: Option<(DBuf<i32>, Shape, usize, usize)>,
}

impl MaxPool {
    pub fn new(k: usize, s: usize, p: usize) -> Self {
        MaxPool {
            k,
            s,
            p,
            cache: None,
        }
    }
    fn args(&self, sh: Shape, oh: usize, ow: usize) -> Result<Vec<i32>> {
        [sh[0] * sh[1], sh[2], sh[3], self.k, self.s, self.p, oh, ow]
            .iter()
            .map(|&v| i32_of("pooling size", v))
            .collect()
    }
    pub fn forward(&mut self, g: &Gpu, x: &DBuf<f32>, sh: Shape) -> Result<(DBuf<f32>, Shape)> {
        let oh = (sh[2] + 2 * self.p - self.k) / self.s + 1;
        let ow = (sh[3] + 2 * self.p - self.k) / self.s + 1;
        let total = sh[0] * sh[1] * oh * ow;
        let mut y = g.uninit::<f32>(total)?;
        let mut arg = g.uninit::<i32>(total)?;
        let a = self.args(sh, oh, ow)?;
        // SAFETY: x holds planes*h*w values, y and arg planes*oh*ow (all written); windows
        // are clipped to the image.
        launch!(
            g,
            "maxpool_fwd",
            g.cfg1(total),
            [&x.s, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6], &a[7], &mut y.s, &mut arg.s]
        );
        self.cache = Some((arg, sh, oh, ow));
        Ok((y, [sh[0], sh[1], oh, ow]))
    }
    pub fn backward(&mut self, g: &Gpu, dy: &DBuf<f32>) -> Result<DBuf<f32>> {
        let (arg, sh, oh, ow) = self.cache.take().ok_or_else(|| Error::Cuda {
            context: "MaxPool backward".into(),
            reason: "called before forward".into(),
        })?;
        let total = sh.iter().product::<usize>();
        let mut dx = g.uninit::<f32>(total)?;
        let a = self.args(sh, oh, ow)?;
        // SAFETY: dy and arg hold planes*oh*ow values, dx planes*h*w (each written once).
        launch!(
            g,
            "maxpool_bwd",
            g.cfg1(total),
            [&dy.s, &arg.s, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6], &a[7], &mut dx.s]
        );
        Ok(dx)
    }
}

/// Global average pooling `N × C × H × W → N × C`.
pub(crate) fn avgpool_fwd(g: &Gpu, x: &DBuf<f32>, sh: Shape) -> Result<DBuf<f32>> {
    let planes = sh[0] * sh[1];
    let mut y = g.uninit::<f32>(planes)?;
    let (pi, li) = (i32_of("planes", planes)?, i32_of("plane", sh[2] * sh[3])?);
    // SAFETY: x holds planes*l values, y planes values (one warp per plane).
    launch!(
        g,
        "avgpool_fwd",
        g.cfg_warps(planes),
        [&x.s, &pi, &li, &mut y.s]
    );
    Ok(y)
}

/// Gradient of [`avgpool_fwd`].
pub(crate) fn avgpool_bwd(g: &Gpu, dy: &DBuf<f32>, sh: Shape) -> Result<DBuf<f32>> {
    let planes = sh[0] * sh[1];
    let l = sh[2] * sh[3];
    let mut dx = g.uninit::<f32>(planes * l)?;
    let (pi, li) = (i32_of("planes", planes)?, i32_of("plane", l)?);
    // SAFETY: dy holds planes values, dx planes*l (all written).
    launch!(
        g,
        "avgpool_bwd",
        g.cfg1(planes * l),
        [&dy.s, &pi, &li, &mut dx.s]
    );
    Ok(dx)
}

// ---------------------------------------------------------------------------------------------
// Linear

/// `Linear(n_in, n_out, bias)`: $y=xW^\top+b$.
pub(crate) struct Lin {
    pub w: usize,
    pub b: Option<usize>,
    pub n_in: usize,
    pub n_out: usize,
    x: Option<(Act, usize)>,
}

impl Lin {
    pub fn new(
        g: &Gpu,
        st: &mut Store,
        name: &str,
        n_in: usize,
        n_out: usize,
        bias: bool,
    ) -> Result<Self> {
        let w = st.param(g, join(name, "weight"), &[n_out, n_in])?;
        let b = if bias {
            Some(st.param(g, join(name, "bias"), &[n_out])?)
        } else {
            None
        };
        Ok(Lin {
            w,
            b,
            n_in,
            n_out,
            x: None,
        })
    }

    pub fn forward(&mut self, g: &Gpu, st: &Store, x: Act, rows: usize) -> Result<DBuf<f32>> {
        let mut y = g.uninit::<f32>(rows * self.n_out)?;
        // y^T (n_out x rows) = W (stored col-major n_in x n_out)^T x^T (n_in x rows).
        g.sgemm(
            "linear forward",
            (true, false),
            (self.n_out, rows, self.n_in),
            &st.params[self.w].w.s,
            self.n_in,
            &x.s,
            self.n_in,
            0.0,
            &mut y.s,
            self.n_out,
        )?;
        if let Some(b) = self.b {
            let (ri, ci) = (i32_of("rows", rows)?, i32_of("outputs", self.n_out)?);
            // SAFETY: y holds rows*n_out values, b n_out.
            launch!(
                g,
                "bias_rows",
                g.cfg1(rows * self.n_out),
                [&mut y.s, &st.params[b].w.s, &ri, &ci]
            );
        }
        self.x = Some((x, rows));
        Ok(y)
    }

    pub fn backward(
        &mut self,
        g: &Gpu,
        st: &mut Store,
        dy: &DBuf<f32>,
        need_dx: bool,
    ) -> Result<Option<DBuf<f32>>> {
        let (x, rows) = self.x.take().ok_or_else(|| Error::Cuda {
            context: "Linear backward".into(),
            reason: "called before forward".into(),
        })?;
        if st.params[self.w].trainable {
            let p = &mut st.params[self.w];
            // dW (col-major n_in x n_out) = x^T-as-stored (n_in x rows) * dy^T... i.e.
            // x (col-major n_in x rows) * (dy col-major n_out x rows)^T.
            g.sgemm(
                "linear dW",
                (false, true),
                (self.n_in, self.n_out, rows),
                &x.s,
                self.n_in,
                &dy.s,
                self.n_out,
                0.0,
                &mut p.g.s,
                self.n_in,
            )?;
        }
        if let Some(b) = self.b {
            let (ri, ci) = (i32_of("rows", rows)?, i32_of("outputs", self.n_out)?);
            // SAFETY: dy holds rows*n_out values, the bias gradient n_out (thread per column).
            launch!(
                g,
                "colsum",
                g.cfg1(self.n_out),
                [&dy.s, &ri, &ci, &mut st.params[b].g.s]
            );
        }
        if !need_dx {
            return Ok(None);
        }
        let mut dx = g.uninit::<f32>(rows * self.n_in)?;
        // dx^T (n_in x rows) = W-as-stored (n_in x n_out) * dy^T (n_out x rows).
        g.sgemm(
            "linear dx",
            (false, false),
            (self.n_in, rows, self.n_out),
            &st.params[self.w].w.s,
            self.n_in,
            &dy.s,
            self.n_out,
            0.0,
            &mut dx.s,
            self.n_in,
        )?;
        Ok(Some(dx))
    }
}

// ---------------------------------------------------------------------------------------------
// Networks

struct Block {
    conv1: Conv,
    bn1: Bn,
    conv2: Conv,
    bn2: Bn,
    down: Option<(Conv, Bn)>,
    y1: Option<Act>,
    y2: Option<(Act, Shape)>,
}

impl Block {
    fn forward(
        &mut self,
        g: &Gpu,
        st: &mut Store,
        x: Act,
        sh: Shape,
        train: bool,
    ) -> Result<(Act, Shape)> {
        let sc: Act = match &mut self.down {
            Some((c, b)) => {
                let (h, s2) = c.forward(g, st, x.clone(), sh)?;
                Rc::new(b.forward(g, st, h, (s2[0], s2[1], s2[2] * s2[3]), train, None, false)?)
            }
            None => x.clone(),
        };
        let (h, s1) = self.conv1.forward(g, st, x, sh)?;
        let y1 = Rc::new(self.bn1.forward(
            g,
            st,
            h,
            (s1[0], s1[1], s1[2] * s1[3]),
            train,
            None,
            true,
        )?);
        self.y1 = Some(y1.clone());
        let (h, s2) = self.conv2.forward(g, st, y1, s1)?;
        let y2 = Rc::new(self.bn2.forward(
            g,
            st,
            h,
            (s2[0], s2[1], s2[2] * s2[3]),
            train,
            Some(&sc),
            true,
        )?);
        self.y2 = Some((y2.clone(), s2));
        Ok((y2, s2))
    }

    fn backward(&mut self, g: &Gpu, st: &mut Store, dy: &DBuf<f32>) -> Result<DBuf<f32>> {
        let err = || Error::Cuda {
            context: "ResNet block backward".into(),
            reason: "called before forward".into(),
        };
        let (y2, s2) = self.y2.take().ok_or_else(err)?;
        let len2: usize = s2.iter().product();
        let d = relu_bwd(g, dy, &y2, len2)?;
        drop(y2);
        let d_sc = match &mut self.down {
            Some((c, b)) => {
                let t = b.backward(g, st, &d)?;
                Some(c.backward(g, st, &t, true)?.expect("dx requested"))
            }
            None => None,
        };
        let gr = self.bn2.backward(g, st, &d)?;
        let gr = self
            .conv2
            .backward(g, st, &gr, true)?
            .expect("dx requested");
        let y1 = self.y1.take().ok_or_else(err)?;
        let gr = relu_bwd(g, &gr, &y1, y1.len().min(gr.len()))?;
        drop(y1);
        let gr = self.bn1.backward(g, st, &gr)?;
        let mut dx = self
            .conv1
            .backward(g, st, &gr, true)?
            .expect("dx requested");
        let n = dx.len();
        match d_sc {
            Some(s) => add(g, &mut dx, &s, n)?,
            None => add(g, &mut dx, &d, n)?,
        }
        Ok(dx)
    }
}

struct ResNetG {
    conv1: Conv,
    bn1: Bn,
    pool: Option<MaxPool>,
    stages: Vec<Block>,
    feat: usize,
    y0: Option<(Act, usize)>,
    last: Option<Shape>,
}

struct MlpG {
    layers: Vec<(Lin, Bn, Option<Act>)>,
}

enum BodyG {
    Mlp(MlpG),
    ResNet(Box<ResNetG>),
}

/// The GPU network (body + classifier `fc`), parameters in a [`Store`].
pub(crate) struct GNet {
    pub st: Store,
    body: BodyG,
    fc: Lin,
    n_classes: usize,
    feat: usize,
    /// Features of the last forward pass (`B × d`), kept for the feature decay.
    pub features: Option<Act>,
}

/// Logits and features of a batch, on the device.
pub(crate) struct GOut {
    pub logits: DBuf<f32>,
    pub features: Act,
}

impl GNet {
    /// The network of `cfg` with zero parameters (upload a CPU [`Net`] with [`GNet::upload`]).
    pub fn new(g: &Gpu, cfg: &ModelConfig) -> Result<Self> {
        cfg.validate()?;
        let mut st = Store::default();
        let (body, feat) = match cfg.arch {
            Arch::Mlp => {
                let mut layers = Vec::new();
                for i in 0..cfg.depth {
                    let a = if i == 0 { 3 * 32 * 32 } else { cfg.width };
                    let lin =
                        Lin::new(g, &mut st, &format!("layers.{}", 3 * i), a, cfg.width, true)?;
                    let bn = Bn::new(g, &mut st, &format!("layers.{}", 3 * i + 1), cfg.width)?;
                    layers.push((lin, bn, None));
                }
                (BodyG::Mlp(MlpG { layers }), cfg.width)
            }
            Arch::Resnet18 | Arch::Resnet18Adapt => {
                let spec = if cfg.arch == Arch::Resnet18 {
                    ResNetSpec::resnet18(cfg.sota, cfg.fixdim)
                } else {
                    ResNetSpec::resnet18_adapt(cfg.width)
                };
                let r = Self::resnet(g, &mut st, &spec)?;
                let f = r.feat;
                (BodyG::ResNet(Box::new(r)), f)
            }
        };
        let fc = Lin::new(g, &mut st, "fc", feat, cfg.n_classes, cfg.bias)?;
        if cfg.etf_classifier {
            st.params[fc.w].trainable = false;
        }
        Ok(GNet {
            st,
            body,
            fc,
            n_classes: cfg.n_classes,
            feat,
            features: None,
        })
    }

    fn resnet(g: &Gpu, st: &mut Store, spec: &ResNetSpec) -> Result<ResNetG> {
        let w0 = spec.widths[0];
        let (conv1, pool) = match spec.stem {
            Stem::ImageNet => (
                Conv::new(g, st, "conv1", (spec.in_channels, w0, 7, 2, 3))?,
                Some(MaxPool::new(3, 2, 1)),
            ),
            Stem::Cifar => (
                Conv::new(g, st, "conv1", (spec.in_channels, w0, 3, 1, 1))?,
                None,
            ),
        };
        let bn1 = Bn::new(g, st, "bn1", w0)?;
        let mut c_in = w0;
        let mut stages = Vec::new();
        for s in 0..4 {
            let planes = spec.widths[s];
            for b in 0..spec.blocks[s] {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let last = s == 3 && b + 1 == spec.blocks[s];
                let out = if last && spec.fixdim > 0 {
                    spec.fixdim
                } else {
                    planes
                };
                let pre = format!("layer{}.{b}", s + 1);
                let conv1 = Conv::new(g, st, &join(&pre, "conv1"), (c_in, planes, 3, stride, 1))?;
                let bn1 = Bn::new(g, st, &join(&pre, "bn1"), planes)?;
                let conv2 = Conv::new(g, st, &join(&pre, "conv2"), (planes, out, 3, 1, 1))?;
                let bn2 = Bn::new(g, st, &join(&pre, "bn2"), out)?;
                let down = if stride != 1 || c_in != out {
                    let sc = spec.shortcut_name;
                    Some((
                        Conv::new(
                            g,
                            st,
                            &join(&pre, &format!("{sc}.0")),
                            (c_in, out, 1, stride, 0),
                        )?,
                        Bn::new(g, st, &join(&pre, &format!("{sc}.1")), out)?,
                    ))
                } else {
                    None
                };
                stages.push(Block {
                    conv1,
                    bn1,
                    conv2,
                    bn2,
                    down,
                    y1: None,
                    y2: None,
                });
                c_in = out;
            }
        }
        Ok(ResNetG {
            conv1,
            bn1,
            pool,
            stages,
            feat: c_in,
            y0: None,
            last: None,
        })
    }

    /// Feature dimension $d$.
    pub fn feature_dim(&self) -> usize {
        self.feat
    }
    /// Number of classes $K$.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Copies every parameter, buffer and counter of `net` (matched by name) to the device.
    pub fn upload(&mut self, g: &Gpu, net: &mut Net<f32>) -> Result<()> {
        self.transfer(g, net, true)
    }
    /// Copies every parameter, buffer and counter back into `net`.
    pub fn download(&mut self, g: &Gpu, net: &mut Net<f32>) -> Result<()> {
        self.transfer(g, net, false)
    }

    fn transfer(&mut self, g: &Gpu, net: &mut Net<f32>, up: bool) -> Result<()> {
        let pidx: HashMap<String, usize> = self
            .st
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let bidx: HashMap<String, usize> = self
            .st
            .bufs
            .iter()
            .enumerate()
            .map(|(i, b)| (b.0.clone(), i))
            .collect();
        let cidx: HashMap<String, usize> = self
            .st
            .counts
            .iter()
            .enumerate()
            .map(|(i, b)| (b.0.clone(), i))
            .collect();
        let mut err: Option<Error> = None;
        let mut seen = 0usize;
        let st = &mut self.st;
        net.visit("", &mut |name, t| {
            if err.is_some() {
                return;
            }
            seen += 1;
            let r = (|| -> Result<()> {
                let missing = || Error::Cuda {
                    context: "GPU model".into(),
                    reason: format!("the GPU network has no tensor `{name}`"),
                };
                match t {
                    TensorMut::Param(p) => {
                        let i = *pidx.get(name).ok_or_else(missing)?;
                        let gp = &mut st.params[i];
                        if up {
                            let v = p.value.as_standard_layout().into_owned();
                            g.upload_into(v.as_slice().expect("standard layout"), &mut gp.w)?;
                            gp.trainable = p.trainable;
                        } else {
                            let v = g.download(&gp.w, p.value.len())?;
                            p.value = ArrayD::from_shape_vec(p.value.raw_dim(), v)
                                .map_err(|e| Error::numerical("GPU download", e.to_string()))?;
                        }
                    }
                    TensorMut::Buffer(b) => {
                        let i = *bidx.get(name).ok_or_else(missing)?;
                        if up {
                            let v = b.as_standard_layout().into_owned();
                            g.upload_into(
                                v.as_slice().expect("standard layout"),
                                &mut st.bufs[i].1,
                            )?;
                        } else {
                            let v = g.download(&st.bufs[i].1, b.len())?;
                            *b = ArrayD::from_shape_vec(b.raw_dim(), v)
                                .map_err(|e| Error::numerical("GPU download", e.to_string()))?;
                        }
                    }
                    TensorMut::Count(c) => {
                        let i = *cidx.get(name).ok_or_else(missing)?;
                        if up {
                            st.counts[i].1 = *c;
                        } else {
                            *c = st.counts[i].1;
                        }
                    }
                }
                Ok(())
            })();
            if let Err(e) = r {
                err = Some(e);
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        let total = st.params.len() + st.bufs.len() + st.counts.len();
        if seen != total {
            return Err(Error::Cuda {
                context: "GPU model".into(),
                reason: format!(
                    "the CPU network has {seen} tensors, the GPU network {total} (architectures differ)"
                ),
            });
        }
        Ok(())
    }

    /// Forward pass on an NCHW batch of `n` images (`3 × 32 × 32`) held in `x`.
    pub fn forward(&mut self, g: &Gpu, x: Act, n: usize, train: bool) -> Result<GOut> {
        let st = &mut self.st;
        let features: Act = match &mut self.body {
            BodyG::Mlp(m) => {
                let mut h = x;
                for (lin, bn, y) in &mut m.layers {
                    let z = Rc::new(lin.forward(g, st, h, n)?);
                    let a = Rc::new(bn.forward(g, st, z, (n, lin.n_out, 1), train, None, true)?);
                    *y = Some(a.clone());
                    h = a;
                }
                h
            }
            BodyG::ResNet(r) => {
                let (h, s) = r.conv1.forward(g, st, x, [n, 3, 32, 32])?;
                let y0 = Rc::new(r.bn1.forward(
                    g,
                    st,
                    h,
                    (s[0], s[1], s[2] * s[3]),
                    train,
                    None,
                    true,
                )?);
                r.y0 = Some((y0.clone(), s.iter().product()));
                let (mut h, mut s) = (y0, s);
                if let Some(p) = &mut r.pool {
                    let (y, s2) = p.forward(g, &h, s)?;
                    h = Rc::new(y);
                    s = s2;
                }
                for b in &mut r.stages {
                    let (y, s2) = b.forward(g, st, h, s, train)?;
                    h = y;
                    s = s2;
                }
                r.last = Some(s);
                Rc::new(avgpool_fwd(g, &h, s)?)
            }
        };
        let logits = self.fc.forward(g, st, features.clone(), n)?;
        self.features = Some(features.clone());
        Ok(GOut { logits, features })
    }

    /// Backward pass from $\partial\ell/\partial z$ (plus $c\,h$ added to $\partial\ell/\partial h$
    /// when `feature_decay = Some(c)`); writes every gradient.
    pub fn backward(&mut self, g: &Gpu, dz: &DBuf<f32>, feature_decay: Option<f32>) -> Result<()> {
        let st = &mut self.st;
        let mut dh = self.fc.backward(g, st, dz, true)?.expect("dx requested");
        if let (Some(c), Some(f)) = (feature_decay, self.features.take()) {
            let n = f.len().min(dh.len());
            axpy(g, &mut dh, &f, c, n)?;
        }
        self.features = None;
        match &mut self.body {
            BodyG::Mlp(m) => {
                let nl = m.layers.len();
                for (i, (lin, bn, y)) in m.layers.iter_mut().enumerate().rev() {
                    let y = y.take().ok_or_else(|| Error::Cuda {
                        context: "MLP backward".into(),
                        reason: "called before forward".into(),
                    })?;
                    let d = relu_bwd(g, &dh, &y, y.len().min(dh.len()))?;
                    let d = bn.backward(g, st, &d)?;
                    match lin.backward(g, st, &d, i > 0)? {
                        Some(dx) => dh = dx,
                        None => break,
                    }
                }
                let _ = nl;
            }
            BodyG::ResNet(r) => {
                let s = r.last.take().ok_or_else(|| Error::Cuda {
                    context: "ResNet backward".into(),
                    reason: "called before forward".into(),
                })?;
                let mut d = avgpool_bwd(g, &dh, s)?;
                for b in r.stages.iter_mut().rev() {
                    d = b.backward(g, st, &d)?;
                }
                if let Some(p) = &mut r.pool {
                    d = p.backward(g, &d)?;
                }
                let (y0, len) = r.y0.take().ok_or_else(|| Error::Cuda {
                    context: "ResNet backward".into(),
                    reason: "called before forward".into(),
                })?;
                let d = relu_bwd(g, &d, &y0, len)?;
                drop(y0);
                let d = r.bn1.backward(g, st, &d)?;
                r.conv1.backward(g, st, &d, false)?;
            }
        }
        Ok(())
    }

    /// Adds $\lambda W$, $\lambda b$ to the trainable classifier gradients (`--sep-decay`).
    pub fn classifier_decay(&mut self, g: &Gpu, lambda: f32) -> Result<()> {
        let idx: Vec<usize> = std::iter::once(self.fc.w).chain(self.fc.b).collect();
        for i in idx {
            let p = &mut self.st.params[i];
            if p.trainable {
                let n = p.w.len();
                axpy(g, &mut p.g, &p.w, lambda, n)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Loss and optimizer

/// Launches the loss kernel on `logits` (`b × k`, labels on the device): per-row losses
/// (f64) and $\partial\ell/\partial Z$, without waiting; [`loss_value`] turns the row sum
/// into the mean loss.
pub(crate) fn loss_launch(
    g: &Gpu,
    kind: LossKind,
    logits: &DBuf<f32>,
    labels: &DBuf<u32>,
    b: usize,
    k: usize,
) -> Result<(DBuf<f64>, DBuf<f32>)> {
    let mut dz = g.uninit::<f32>(b * k)?;
    let mut rows = g.uninit::<f64>(b)?;
    let (bi, ki) = (i32_of("batch", b)?, i32_of("classes", k)?);
    match kind {
        // SAFETY: logits and dz hold b*k values, labels b values < k (checked by the data
        // loader), rows b values (one warp per row writes its own).
        LossKind::CrossEntropy => launch!(
            g,
            "ce",
            g.cfg_warps(b),
            [&logits.s, &labels.s, &bi, &ki, &mut dz.s, &mut rows.s]
        ),
        // SAFETY: as for the cross-entropy.
        LossKind::Mse => launch!(
            g,
            "mse",
            g.cfg_warps(b),
            [&logits.s, &labels.s, &bi, &ki, &mut dz.s, &mut rows.s]
        ),
    }
    Ok((rows, dz))
}

/// The mean loss from the sum of the per-row values of [`loss_launch`] (as the CPU: cross-entropy
/// over $B$, MSE over $BK$).
pub(crate) fn loss_value(kind: LossKind, row_sum: f64, b: usize, k: usize) -> f64 {
    match kind {
        LossKind::CrossEntropy => row_sum / b as f64,
        LossKind::Mse => row_sum / (b * k) as f64,
    }
}

/// Mean loss (f64, as the CPU) and $\partial\ell/\partial Z$ (waits for the result).
pub(crate) fn loss(
    g: &Gpu,
    kind: LossKind,
    logits: &DBuf<f32>,
    labels: &DBuf<u32>,
    b: usize,
    k: usize,
) -> Result<(f64, DBuf<f32>)> {
    let (rows, dz) = loss_launch(g, kind, logits, labels, b, k)?;
    let r = g.download(&rows, b)?;
    Ok((loss_value(kind, r.iter().sum(), b, k), dz))
}

/// The fused SGD / Adam update of [`Optimizer`] on the device; `steps` counts as the CPU.
pub(crate) struct GOpt {
    pub kind: OptimizerKind,
    pub weight_decay: f64,
    pub momentum: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub steps: u64,
}

impl GOpt {
    /// The device twin of `opt`, with its state uploaded into `net`'s parameters.
    pub fn from_cpu(g: &Gpu, opt: &Optimizer<f32>, net: &mut GNet) -> Result<Self> {
        if opt.kind == OptimizerKind::Lbfgs {
            return Err(Error::Unsupported(
                "--optimizer LBFGS is not implemented on the GPU; use --device cpu".into(),
            ));
        }
        let state: HashMap<String, ArrayD<f32>> = opt.state().into_iter().collect();
        for (i, p) in net.st.params.iter_mut().filter(|p| p.trainable).enumerate() {
            let n = p.w.len();
            let (a, b) = match opt.kind {
                OptimizerKind::Sgd => (state.get(&format!("optim.{i}.momentum_buffer")), None),
                _ => (
                    state.get(&format!("optim.{i}.exp_avg")),
                    state.get(&format!("optim.{i}.exp_avg_sq")),
                ),
            };
            let mut m = g.zeros::<f32>(n)?;
            // SGD keeps one buffer per parameter, Adam two
            let mut v = if opt.kind == OptimizerKind::Adam {
                Some(g.zeros::<f32>(n)?)
            } else {
                None
            };
            let pairs: Vec<(Option<&ArrayD<f32>>, &mut DBuf<f32>)> = match v.as_mut() {
                Some(vb) => vec![(a, &mut m), (b, vb)],
                None => vec![(a, &mut m)],
            };
            for (src, dst) in pairs {
                if let Some(t) = src {
                    if t.len() != n {
                        return Err(Error::shape(
                            "optimizer state",
                            format!("{n}"),
                            format!("{}", t.len()),
                        ));
                    }
                    let t = t.as_standard_layout().into_owned();
                    g.upload_into(t.as_slice().expect("standard layout"), dst)?;
                }
            }
            p.m = Some(m);
            p.v = v;
        }
        Ok(GOpt {
            kind: opt.kind,
            weight_decay: opt.weight_decay,
            momentum: opt.momentum,
            betas: opt.betas,
            eps: opt.eps,
            steps: opt.steps,
        })
    }

    /// Writes the state (and `steps`) back into `opt` in its checkpoint names.
    pub fn to_cpu(&self, g: &Gpu, net: &GNet, opt: &mut Optimizer<f32>) -> Result<()> {
        let mut map: HashMap<String, ArrayD<f32>> = HashMap::new();
        // The CPU optimizer creates its state on the first step: none before that.
        if self.steps > 0 {
            for (i, p) in net.st.params.iter().filter(|p| p.trainable).enumerate() {
                let n = p.w.len();
                let shape = p.shape.clone();
                let dl = |b: &Option<DBuf<f32>>| -> Result<ArrayD<f32>> {
                    let b = b.as_ref().ok_or_else(|| Error::Cuda {
                        context: "GPU optimizer".into(),
                        reason: "state not allocated".into(),
                    })?;
                    ArrayD::from_shape_vec(ndarray::IxDyn(&shape), g.download(b, n)?)
                        .map_err(|e| Error::numerical("GPU download", e.to_string()))
                };
                match self.kind {
                    OptimizerKind::Sgd => {
                        map.insert(format!("optim.{i}.momentum_buffer"), dl(&p.m)?);
                    }
                    _ => {
                        map.insert(format!("optim.{i}.exp_avg"), dl(&p.m)?);
                        map.insert(format!("optim.{i}.exp_avg_sq"), dl(&p.v)?);
                    }
                }
            }
        }
        let shapes: Vec<Vec<usize>> = net
            .st
            .params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.clone())
            .collect();
        opt.load_state(
            &shapes,
            self.steps,
            |name| Ok(map.remove(name)),
            std::path::Path::new("the GPU optimizer state"),
        )
    }

    /// One update of every trainable parameter with learning rate `lr`.
    pub fn step(&mut self, g: &Gpu, net: &mut GNet, lr: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps;
        let wd = self.weight_decay as f32;
        for p in net.st.params.iter_mut().filter(|p| p.trainable) {
            let n = p.w.len();
            let len = n as i64;
            let no_state = || Error::Cuda {
                context: "GPU optimizer".into(),
                reason: format!("no state for {}", p.name),
            };
            let m = p.m.as_mut().ok_or_else(no_state)?;
            match self.kind {
                OptimizerKind::Sgd => {
                    let (lr, mu, first) = (lr as f32, self.momentum as f32, i32::from(t == 1));
                    // SAFETY: w, g and the momentum buffer hold `len` values each.
                    launch!(
                        g,
                        "sgd",
                        g.cfg1(n),
                        [&mut p.w.s, &p.g.s, &mut m.s, &len, &lr, &wd, &mu, &first]
                    );
                }
                OptimizerKind::Adam => {
                    let v = p.v.as_mut().ok_or_else(no_state)?;
                    let (b1, b2) = self.betas;
                    let bc1 = 1.0 - b1.powi(t as i32);
                    let bc2 = (1.0 - b2.powi(t as i32)).sqrt();
                    let (step, bc2f, b1f, b2f, epsf) = (
                        (lr / bc1) as f32,
                        bc2 as f32,
                        b1 as f32,
                        b2 as f32,
                        self.eps as f32,
                    );
                    // SAFETY: w, g, m and v hold `len` values each.
                    launch!(
                        g,
                        "adam",
                        g.cfg1(n),
                        [
                            &mut p.w.s, &p.g.s, &mut m.s, &mut v.s, &len, &step, &bc2f, &b1f, &b2f,
                            &epsf, &wd
                        ]
                    );
                }
                OptimizerKind::Lbfgs => {
                    return Err(Error::Unsupported(
                        "--optimizer LBFGS is not implemented on the GPU; use --device cpu".into(),
                    ))
                }
            }
        }
        Ok(())
    }
}
