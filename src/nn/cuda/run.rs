//! The GPU training loop (the CPU loop's batches, logs and checkpoints, see
//! [`crate::nn::train`]), the data-loader thread with pinned buffers, and evaluation for
//! `ufm validate --device cuda`.

use super::gpu::{drv, Act, Gpu};
use super::model::{loss_launch, loss_value, GNet, GOpt};
use crate::backend::cuda::CudaBackend;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::metrics::FeatureStats;
use crate::nn::data::{self, Dataset, DatasetName, ImageSet};
use crate::nn::layers::loss::topk_hits;
use crate::nn::models::{ModelConfig, Net};
use crate::nn::optim::{Optimizer, OptimizerKind};
use crate::nn::train::{
    epoch_batches, epoch_order, EpochLog, Existing, RunState, TrainConfig, TrainObserver,
};
use crate::nn::validate::EvalResult;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, PinnedHostSlice};
use ndarray::Array2;
use rand::rngs::StdRng;
use std::rc::Rc;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Instant;

/// Pinned host buffers in flight between the loader thread and the device.
const PINNED_BUFFERS: usize = 3;

/// A pinned host buffer with the event recorded after the last copy out of it; dropping it
/// waits for that copy (pinned memory must not be freed under a transfer).
struct PinnedBuf {
    buf: PinnedHostSlice<f32>,
    ev: CudaEvent,
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        let _ = self.ev.synchronize();
    }
}

/// Runs `f(batch index, images on the device, labels, batch size)` over `batches` of `set`,
/// in order. A background thread normalises (and with `aug` augments, drawing from the
/// generator in batch order exactly as the CPU loop) each batch into a pinned host buffer
/// while the device works on the previous ones.
pub(crate) fn for_each_batch(
    g: &Gpu,
    set: &ImageSet,
    name: DatasetName,
    batches: &[Vec<usize>],
    aug: Option<StdRng>,
    mut f: impl FnMut(usize, Act, &[u32], usize) -> Result<()>,
) -> Result<()> {
    let cap = batches.iter().map(Vec::len).max().unwrap_or(0);
    if cap == 0 {
        return Ok(());
    }
    if (set.height, set.width) != (32, 32) {
        return Err(Error::Data(format!(
            "the GPU networks take 3 x 32 x 32 images, the data set has {} x {}",
            set.height, set.width
        )));
    }
    let per = 3 * set.height * set.width;
    let ctx = g.be.context().clone();
    // Each pinned buffer travels with an event recorded after the copy out of it: cudarc only
    // records its own events in multi-stream mode with event tracking, which this backend does
    // not use, so the loader waits on ours before overwriting a buffer.
    std::thread::scope(|s| -> Result<()> {
        let (pool_tx, pool_rx) = sync_channel::<PinnedBuf>(PINNED_BUFFERS);
        for _ in 0..PINNED_BUFFERS {
            // SAFETY: the buffer is written by the loader before it is copied to the device.
            let b = unsafe { ctx.alloc_pinned::<f32>(cap * per) }
                .map_err(drv("allocating pinned host memory"))?;
            let ev = ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .map_err(drv("creating an event"))?;
            pool_tx
                .send(PinnedBuf { buf: b, ev })
                .map_err(|_| Error::numerical("data loader", "buffer pool closed"))?;
        }
        type Filled = (PinnedBuf, Vec<u32>, usize);
        let (tx, rx) = sync_channel::<Filled>(PINNED_BUFFERS - 1);
        let lctx = ctx.clone();
        let loader = s.spawn(move || -> Result<()> {
            lctx.bind_to_thread()
                .map_err(drv("binding the loader thread"))?;
            let mut aug = aug;
            for idx in batches {
                let (x, y) = data::make_batch::<f32>(set, idx, name, aug.as_mut());
                let Ok(mut pb) = pool_rx.recv() else {
                    return Ok(()); // the consumer stopped
                };
                // Waits until the previous copy out of this buffer has finished.
                pb.ev
                    .synchronize()
                    .map_err(drv("waiting for a batch copy"))?;
                let dst = pb.buf.as_mut_slice().map_err(drv("pinned buffer"))?;
                let src = x.as_slice().expect("fresh batch is contiguous");
                dst[..src.len()].copy_from_slice(src);
                if tx.send((pb, y, idx.len())).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        });
        let mut result = Ok(());
        for bi in 0..batches.len() {
            let Ok((pb, y, n)) = rx.recv() else {
                break; // the loader failed: its error is returned below
            };
            let step = (|| -> Result<()> {
                let mut xd = g.uninit::<f32>(cap * per)?;
                g.stream
                    .memcpy_htod(&pb.buf, &mut xd.s)
                    .map_err(drv("copying a batch to the device"))?;
                pb.ev.record(&g.stream).map_err(drv("recording an event"))?;
                let _ = pool_tx.send(pb);
                f(bi, Rc::new(xd), &y, n)
            })();
            if step.is_err() {
                result = step;
                break;
            }
        }
        drop(rx);
        drop(pool_tx);
        let lr = loader.join().unwrap_or_else(|_| {
            Err(Error::numerical(
                "data loader",
                "the loader thread panicked",
            ))
        });
        result.and(lr)
    })
}

/// A batch whose loss and logits are on their way to the host.
struct Pending {
    bi: usize,
    slot: usize,
    n: usize,
    labels: Vec<u32>,
}

/// Two slots of pinned host memory for the per-row losses and the logits of a batch.
struct HostResults {
    rows: [PinnedHostSlice<f64>; 2],
    logits: [PinnedHostSlice<f32>; 2],
    /// Recorded after the copies into each slot (cudarc records none on a single stream).
    done: [CudaEvent; 2],
}

impl Drop for HostResults {
    fn drop(&mut self) {
        for e in &self.done {
            let _ = e.synchronize();
        }
    }
}

impl HostResults {
    fn new(g: &Gpu, batch: usize, k: usize) -> Result<Self> {
        let ctx = g.be.context();
        let b = batch.max(1);
        // SAFETY: the buffers are only read after a device-to-host copy into them completed
        // (the pinned slice's event orders the read after the copy).
        let pin = |len: usize| unsafe { ctx.alloc_pinned_with_flags::<f64>(len, 0) };
        // SAFETY: as above.
        let pin32 = |len: usize| unsafe { ctx.alloc_pinned_with_flags::<f32>(len, 0) };
        let e = drv("allocating pinned host memory");
        let ev = || {
            ctx.new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .map_err(drv("creating an event"))
        };
        Ok(HostResults {
            done: [ev()?, ev()?],
            rows: [pin(b).map_err(drv("pinned"))?, pin(b).map_err(e)?],
            logits: [
                pin32(b * k).map_err(drv("pinned"))?,
                pin32(b * k).map_err(drv("pinned"))?,
            ],
        })
    }

    /// Enqueues the copies of `rows` (n) and `logits` (n × k) into `slot`.
    fn copy(
        &mut self,
        g: &Gpu,
        slot: usize,
        rows: &super::gpu::DBuf<f64>,
        logits: &super::gpu::DBuf<f32>,
        n: usize,
        k: usize,
    ) -> Result<()> {
        g.stream
            .memcpy_dtoh(&rows.s.slice(0..n), &mut self.rows[slot])
            .map_err(drv("copying losses to the host"))?;
        g.stream
            .memcpy_dtoh(&logits.s.slice(0..n * k), &mut self.logits[slot])
            .map_err(drv("copying logits to the host"))?;
        self.done[slot]
            .record(&g.stream)
            .map_err(drv("recording an event"))
    }

    /// Waits for the copies into `slot` and returns the losses and the logits.
    fn read(&mut self, slot: usize, n: usize, k: usize) -> Result<(Vec<f64>, Array2<f32>)> {
        self.done[slot]
            .synchronize()
            .map_err(drv("waiting for the losses"))?;
        let rows = self.rows[slot].as_slice().map_err(drv("reading losses"))?[..n].to_vec();
        let lg = self.logits[slot]
            .as_slice()
            .map_err(drv("reading logits"))?[..n * k]
            .to_vec();
        let lg = Array2::from_shape_vec((n, k), lg)
            .map_err(|e| Error::numerical("logits", e.to_string()))?;
        Ok((rows, lg))
    }
}

/// [`crate::nn::train::train`] on the GPU: same run directory, batches, logs and checkpoints.
pub(crate) fn train_cuda(
    cfg: &TrainConfig,
    run_dir: &std::path::Path,
    existing: Existing,
    obs: &mut dyn TrainObserver,
    be: &Arc<CudaBackend>,
) -> Result<Vec<EpochLog>> {
    cfg.validate()?;
    if cfg.optimizer == OptimizerKind::Lbfgs {
        return Err(Error::Unsupported(
            "--optimizer LBFGS runs on the CPU only (use --device cpu)".into(),
        ));
    }
    let g = Gpu::new(be.clone())?;
    let mut net: Net<f32> = Net::new(&cfg.model, cfg.seed)?;
    let mut opt = Optimizer::<f32>::new(
        cfg.optimizer,
        if cfg.sep_decay { 0.0 } else { cfg.weight_decay },
    )?;
    let mut run = RunState::open(cfg, run_dir, existing, obs, &mut net, &mut opt, None)?;
    let mut gnet = GNet::new(&g, &cfg.model)?;
    gnet.upload(&g, &mut net)?;
    let mut gopt = GOpt::from_cpu(&g, &opt, &mut gnet)?;
    let k = cfg.model.n_classes;
    obs.note(&format!(
        "device {}",
        <CudaBackend as Backend<f32>>::name(be)
    ));
    for epoch in run.start_epoch..cfg.epochs {
        let t0 = Instant::now();
        g.reset_peak();
        let lr = cfg.schedule.lr(cfg.lr, epoch);
        let (order, aug_rng) = epoch_order(cfg, &run.train_idx, epoch);
        let batches: Vec<Vec<usize>> = epoch_batches(&order, cfg.batch_size)
            .into_iter()
            .map(<[usize]>::to_vec)
            .collect();
        obs.epoch_start(epoch + 1, batches.len(), lr);
        let (mut loss_sum, mut h1, mut h5, mut seen) = (0.0, 0usize, 0usize, 0usize);
        let aug = run.augment.then_some(aug_rng);
        // Loss rows and logits of batch i are copied into pinned host buffers behind the
        // batch's work and read while batch i+1 runs, so the host never drains the queue.
        // sized by the largest batch, not --batch-size (which may exceed the data set)
        let largest = batches.iter().map(Vec::len).max().unwrap_or(1);
        let mut host = HostResults::new(&g, largest, k)?;
        let mut pending: Option<Pending> = None;
        let mut account = |p: Pending, host: &mut HostResults| -> Result<()> {
            let (rows, logits) = host.read(p.slot, p.n, k)?;
            let l = loss_value(cfg.loss, rows.iter().sum(), p.n, k);
            if !l.is_finite() {
                return Err(Error::Diverged {
                    solver: format!("{:?}", cfg.optimizer),
                    iter: p.bi + 1,
                    value: l,
                    hint: crate::nn::train::non_finite_loss_hint(cfg, epoch, p.bi),
                });
            }
            let (a, b) = topk_hits(&logits, &p.labels);
            loss_sum += l * p.n as f64;
            h1 += a;
            h5 += b;
            seen += p.n;
            obs.batch(
                p.bi + 1,
                loss_sum / seen as f64,
                100.0 * h1 as f64 / seen as f64,
            );
            Ok(())
        };
        for_each_batch(
            &g,
            &run.data.train,
            cfg.dataset,
            &batches,
            aug,
            |bi, x, y, n| {
                let yd = g.upload(y)?;
                let out = gnet.forward(&g, x, n, true)?;
                let (rows, dz) = loss_launch(&g, cfg.loss, &out.logits, &yd, n, k)?;
                let slot = bi % 2;
                host.copy(&g, slot, &rows, &out.logits, n, k)?;
                drop(out);
                let fd = (cfg.sep_decay && cfg.feature_decay_rate > 0.0)
                    .then(|| cfg.feature_decay_rate as f32 / n as f32);
                gnet.backward(&g, &dz, fd)?;
                if cfg.sep_decay {
                    gnet.classifier_decay(&g, cfg.weight_decay as f32)?;
                }
                gopt.step(&g, &mut gnet, lr)?;
                let now = Pending {
                    bi,
                    slot,
                    n,
                    labels: y.to_vec(),
                };
                if let Some(p) = pending.replace(now) {
                    account(p, &mut host)?;
                }
                Ok(())
            },
        )?;
        if let Some(p) = pending.take() {
            account(p, &mut host)?;
        }
        g.stream.synchronize().map_err(drv("synchronize"))?;
        let seconds = t0.elapsed().as_secs_f64();
        let log = EpochLog {
            epoch: epoch + 1,
            lr,
            loss: loss_sum / seen.max(1) as f64,
            top1: 100.0 * h1 as f64 / seen.max(1) as f64,
            top5: 100.0 * h5 as f64 / seen.max(1) as f64,
            seconds,
        };
        obs.note(&format!(
            "cuda epoch {}: {:.0} images/s, peak device memory {:.1} MiB (tensors)",
            epoch + 1,
            seen as f64 / seconds.max(1e-9),
            g.peak_bytes() as f64 / (1024.0 * 1024.0)
        ));
        gnet.download(&g, &mut net)?;
        gopt.to_cpu(&g, &gnet, &mut opt)?;
        run.end_epoch(log, &mut net, &opt, None, obs)?;
    }
    Ok(run.logs)
}

/// Evaluation on the GPU for `ufm validate --device cuda`.
pub(crate) struct CudaEval {
    g: Gpu,
    gnet: GNet,
}

impl CudaEval {
    /// Compiles the kernels and builds the network of `cfg` on `be`.
    pub(crate) fn new(be: &Arc<CudaBackend>, cfg: &ModelConfig) -> Result<Self> {
        let g = Gpu::new(be.clone())?;
        let gnet = GNet::new(&g, cfg)?;
        Ok(CudaEval { g, gnet })
    }

    /// Eval-mode accuracies of `net` over `idx` of `set`; with `stats`, the class statistics
    /// of the features, accumulated on the device.
    pub(crate) fn evaluate(
        &mut self,
        net: &mut Net<f32>,
        set: &ImageSet,
        idx: &[usize],
        name: DatasetName,
        batch_size: usize,
        stats: bool,
    ) -> Result<(EvalResult, Option<FeatureStats>)> {
        let g = &self.g;
        self.gnet.upload(g, net)?;
        let (k, d) = (self.gnet.n_classes(), self.gnet.feature_dim());
        let batches: Vec<Vec<usize>> = idx
            .chunks(batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect();
        let mut feats = if stats {
            Some(g.uninit::<f32>(idx.len() * d)?)
        } else {
            None
        };
        let mut labels: Vec<u32> = Vec::with_capacity(idx.len());
        let (mut h1, mut h5, mut at) = (0usize, 0usize, 0usize);
        let gnet = &mut self.gnet;
        for_each_batch(g, set, name, &batches, None, |_, x, y, n| {
            let out = gnet.forward(g, x, n, false)?;
            let logits = Array2::from_shape_vec((n, k), g.download(&out.logits, n * k)?)
                .map_err(|e| Error::numerical("logits", e.to_string()))?;
            let (a, b) = topk_hits(&logits, y);
            h1 += a;
            h5 += b;
            if let Some(f) = feats.as_mut() {
                g.stream
                    .memcpy_dtod(
                        &out.features.s.slice(0..n * d),
                        &mut f.s.slice_mut(at * d..(at + n) * d),
                    )
                    .map_err(drv("collecting features"))?;
                labels.extend_from_slice(y);
            }
            at += n;
            Ok(())
        })?;
        gnet.features = None;
        let m = idx.len().max(1) as f64;
        let res = EvalResult {
            top1: 100.0 * h1 as f64 / m,
            top5: 100.0 * h5 as f64 / m,
        };
        let fs = match feats {
            Some(f) => Some(Backend::<f32>::class_stats(
                g.be.as_ref(),
                &f.s,
                idx.len(),
                d,
                &labels,
                k,
            )?),
            None => None,
        };
        Ok((res, fs))
    }

    /// Train statistics + train and test accuracies of one loaded checkpoint.
    pub(crate) fn checkpoint_stats(
        &mut self,
        net: &mut Net<f32>,
        d: &Dataset,
        train_idx: &[usize],
        batch_size: usize,
    ) -> Result<(FeatureStats, EvalResult, EvalResult)> {
        let (tr, fs) = self.evaluate(net, &d.train, train_idx, d.name, batch_size, true)?;
        let test_idx: Vec<usize> = (0..d.test.len()).collect();
        let (te, _) = self.evaluate(net, &d.test, &test_idx, d.name, batch_size, false)?;
        Ok((fs.expect("statistics requested"), tr, te))
    }
}
