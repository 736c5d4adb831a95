//! The training loop behind `ufm train`: minibatch SGD/Adam on
//! $$\frac1B\sum_{i\in\text{batch}}\ell(Wh_i+b,y_i)\;+\;\text{(regulariser)},\qquad h_i=\phi_\Theta(x_i),$$
//! with the regulariser either the optimizer's coupled weight decay $\frac\lambda2\lVert(\Theta,W,b)\rVert^2$
//! (default, as the original), or with `--sep-decay`
//! $$\frac\lambda2\big(\lVert W\rVert_F^2+\lVert b\rVert^2\big)+\frac{\lambda_H}2\cdot\frac1B\sum_{i\in\text{batch}}\lVert h_i\rVert^2$$
//! and no decay on $\Theta$. The feature term acts on the **raw** features; the original code
//! applied it to `F.normalize(h)`, whose norm is 1, so its gradient was zero (and it crashed
//! with `--no-bias`). In UFM terms the feature penalty is $\frac{\lambda_H}{2N}\lVert H\rVert_F^2$.
//!
//! Per epoch the training indices are shuffled with a generator seeded by `(seed, epoch)`, so
//! a resumed run draws the same batches as an uninterrupted one. After each epoch the model
//! is written to `epoch_NNN.safetensors` (PyTorch names) and the model + optimizer state to
//! `resume.safetensors`, both atomically. Resuming checks every tensor of that file against the
//! model (shape, dtype, finite values; none missing, none extra) and refuses anything else. A
//! run holds an exclusive lock on its folder ([`crate::io::DirLock`]) while it trains, so a
//! second run into the same folder is refused instead of mixing the two.
//!
//! With `--optimizer LBFGS` each batch is one `torch.optim.LBFGS(lr, history_size,
//! line_search_fn="strong_wolfe")` step ([`crate::nn::optim::Lbfgs`]: up to 20 iterations,
//! 25 evaluations) on $\frac1B\sum\ell+\frac\lambda2\lVert(\Theta,W,b)\rVert^2$, the original
//! `train_2nd_order.py` closure, with no schedule. As in PyTorch the curvature history, last
//! direction and step persist across batches (and across `--resume`: they are stored in
//! `resume.safetensors`), `--lr` scales the initial step of every line search, and every
//! closure evaluation is a train-mode forward pass, so it also updates the batch-norm running
//! statistics. The logged loss and accuracy are those of the closure's first evaluation.
//!
//! Differences from the original, on purpose: the logged training accuracy comes from the
//! train-mode logits before the step (the original re-runs the batch in eval mode after the
//! step, one extra forward pass).

use crate::error::{Error, Result};
use crate::nn::checkpoint::{self, Checkpoint};
use crate::nn::cuda::NnDevice;
use crate::nn::data::{self, Dataset, DatasetName};
use crate::nn::layers::loss::topk_hits;
use crate::nn::layers::{LossKind, Module, TensorMut};
use crate::nn::models::{ModelConfig, Net};
use crate::nn::optim::{Lbfgs, Optimizer, OptimizerKind, Schedule};
use ndarray::{Array2, Array4};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A training run's full configuration (saved as `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Data set.
    pub dataset: DatasetName,
    /// Folder holding `MNIST/raw/` or `cifar-10-batches-bin/`.
    pub data_dir: PathBuf,
    /// Network.
    pub model: ModelConfig,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Initial learning rate.
    pub lr: f64,
    /// Minibatch size.
    pub batch_size: usize,
    /// Number of epochs.
    pub epochs: usize,
    /// $\lambda$.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed of initialisation, shuffling, augmentation and random labels.
    pub seed: u64,
    /// L-BFGS history size (`--history-size`).
    pub history_size: usize,
    /// First `m` training samples per class (`--sample-size`).
    pub sample_size: Option<usize>,
    /// Loss.
    pub loss: LossKind,
    /// Separate decay on $(W,b)$ and the features, none on $\Theta$.
    pub sep_decay: bool,
    /// $\lambda_H$ for `--sep-decay`.
    pub feature_decay_rate: f64,
    /// Random crop + flip augmentation (`--sota`, CIFAR only; also the CIFAR stem).
    pub sota: bool,
    /// Where `cifar10_random` keeps its labels.
    pub label_file: Option<PathBuf>,
}

impl TrainConfig {
    /// Checks values that are not checked elsewhere.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        if !(self.lr > 0.0) || !self.lr.is_finite() {
            return Err(Error::param(
                "lr",
                format!("must be positive, got {}", self.lr),
            ));
        }
        if self.batch_size < 2 {
            return Err(Error::param(
                "batch-size",
                "must be at least 2 (batch norm needs 2 samples)",
            ));
        }
        if self.epochs == 0 {
            return Err(Error::param("epochs", "must be positive"));
        }
        if !(self.weight_decay >= 0.0) || !(self.feature_decay_rate >= 0.0) {
            return Err(Error::param("weight-decay", "decay rates must be >= 0"));
        }
        if self.sample_size == Some(0) {
            return Err(Error::param("sample-size", "must be positive"));
        }
        if self.history_size == 0 {
            return Err(Error::param("history-size", "must be at least 1"));
        }
        // config.json files are input too: the schedule must not divide by zero
        match &self.schedule {
            Schedule::Step { step: 0, .. } => {
                return Err(Error::param("patience", "must be positive"))
            }
            Schedule::Step { gamma, .. } | Schedule::MultiStep { gamma, .. }
                if !(gamma.is_finite() && *gamma >= 0.0) =>
            {
                return Err(Error::param(
                    "gamma",
                    format!("must be finite and >= 0, got {gamma}"),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// Loads the data set (random labels into `label_file`, or `<run_dir>/random_labels.json`).
    pub fn load_data(&self, run_dir: &Path) -> Result<Dataset> {
        let lf = self
            .label_file
            .clone()
            .unwrap_or_else(|| run_dir.join("random_labels.json"));
        data::load(self.dataset, &self.data_dir, &lf, self.seed)
    }

    /// Indices of the training samples used (all, or the first `m` per class).
    pub fn train_indices(&self, d: &Dataset) -> Result<Vec<usize>> {
        match self.sample_size {
            Some(m) => data::first_per_class(&d.train.labels, d.n_classes, m),
            None => Ok((0..d.train.len()).collect()),
        }
    }
}

/// One epoch's summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss (data term).
    pub loss: f64,
    /// Training top-1 accuracy in percent (train-mode logits, before each step).
    pub top1: f64,
    /// Training top-5 accuracy in percent.
    pub top5: f64,
    /// Wall-clock seconds of the epoch.
    pub seconds: f64,
}

/// Callbacks for progress display.
pub trait TrainObserver {
    /// An epoch starts with `n_batches` batches.
    fn epoch_start(&mut self, _epoch: usize, _n_batches: usize, _lr: f64) {}
    /// A batch finished; running means so far.
    fn batch(&mut self, _done: usize, _loss: f64, _top1: f64) {}
    /// An epoch finished and its checkpoint is on disk.
    fn epoch_end(&mut self, _log: &EpochLog) {}
    /// A message for the user (data notes, resume point).
    fn note(&mut self, _msg: &str) {}
}

/// No output.
pub struct Silent;
impl TrainObserver for Silent {}

/// Checkpoint file of epoch `e` (1-based).
pub fn checkpoint_path(run_dir: &Path, epoch: usize) -> PathBuf {
    run_dir.join(format!("epoch_{epoch:03}.safetensors"))
}

/// Epoch numbers of the checkpoints present in `run_dir`, sorted.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<usize>> {
    let rd = std::fs::read_dir(run_dir).map_err(|e| Error::io("read directory", run_dir, e))?;
    let mut v: Vec<usize> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("epoch_")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// Reads `config.json` of a run and validates it ([`TrainConfig::validate`]: absurd sizes are
/// an error naming the file before anything is allocated).
pub fn read_config(run_dir: &Path) -> Result<TrainConfig> {
    let p = run_dir.join("config.json");
    let s = std::fs::read_to_string(&p).map_err(|e| Error::io("read", &p, e))?;
    let cfg: TrainConfig = serde_json::from_str(&s)
        .map_err(|e| Error::format(&p, format!("not a ufm train config: {e}")))?;
    cfg.validate()
        .map_err(|e| Error::format(&p, format!("not a usable ufm train config: {e}")))?;
    Ok(cfg)
}

/// Checks a run name (`--uid`): the run lives in `<out-dir>/<uid>`, so the name must be one
/// plain path component: not empty, not `.` or `..`, no `/` or `\`, no NUL or other control
/// character (and so never an absolute path or a way out of `<out-dir>`).
pub fn validate_uid(uid: &str) -> Result<()> {
    let why = if uid.is_empty() {
        Some("is empty")
    } else if uid == "." || uid == ".." {
        Some("is `.` or `..`")
    } else if uid.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if uid.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match why {
        Some(w) => Err(Error::param(
            "uid",
            format!(
                "`{}` {w}; a run name is one folder name inside --out-dir, e.g. mnist-mlp-1",
                uid.escape_debug()
            ),
        )),
        None => Ok(()),
    }
}

/// How to treat an existing run directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Fail if it holds a run.
    Refuse,
    /// Start over, deleting its checkpoints (`--force`).
    Overwrite,
    /// Continue from `resume.safetensors` (`--resume`).
    Resume,
}

fn epoch_seed(seed: u64, epoch: usize, salt: u64) -> u64 {
    // splitmix64 of (seed, epoch, salt): independent streams per epoch and purpose
    let mut z = seed
        ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Adds $\lambda W$ and $\lambda b$ to the classifier's gradients and returns
/// $\frac\lambda2(\lVert W\rVert^2+\lVert b\rVert^2)$ (frozen tensors are skipped).
fn classifier_decay(net: &mut Net<f32>, lambda: f64) -> f64 {
    let mut pen = 0.0;
    net.fc.visit("", &mut |_, t| {
        if let TensorMut::Param(p) = t {
            if p.trainable {
                pen += p
                    .value
                    .iter()
                    .map(|&v| (v as f64) * (v as f64))
                    .sum::<f64>()
                    * lambda
                    / 2.0;
                p.grad.scaled_add(lambda as f32, &p.value);
            }
        }
    });
    pen
}

/// Whether every entry is finite: $\sum_j 0\cdot v_j$ is NaN exactly when some entry is NaN or
/// infinite; eight independent sums let it vectorise (a scan at memory speed).
fn all_finite(v: &[f32]) -> bool {
    let mut acc = [0.0f32; 8];
    let c = v.chunks_exact(8);
    let rem = c.remainder();
    for a in c {
        for j in 0..8 {
            acc[j] += a[j] * 0.0;
        }
    }
    acc.iter().chain(rem).all(|x| *x * 0.0 == 0.0)
}

/// The name of the first parameter or floating-point buffer of `net` holding a NaN or an
/// infinity, if any. ReLU maps NaN to 0, so non-finite weights need not show in the loss:
/// training checks the parameters themselves after every step, and before anything is saved.
pub fn first_non_finite_tensor(net: &mut Net<f32>) -> Option<String> {
    let mut bad: Option<String> = None;
    net.visit("", &mut |name, t| {
        if bad.is_some() {
            return;
        }
        let ok = match t {
            TensorMut::Param(p) => p
                .value
                .as_slice()
                .map_or_else(|| p.value.iter().all(|v| v.is_finite()), all_finite),
            TensorMut::Buffer(b) => b
                .as_slice()
                .map_or_else(|| b.iter().all(|v| v.is_finite()), all_finite),
            TensorMut::Count(_) => true,
        };
        if !ok {
            bad = Some(name.to_string());
        }
    });
    bad
}

/// [`first_non_finite_tensor`] as an error: `when` says where training stood.
pub(crate) fn check_finite_tensors(
    net: &mut Net<f32>,
    when: impl FnOnce() -> String,
) -> Result<()> {
    match first_non_finite_tensor(net) {
        None => Ok(()),
        Some(name) => Err(Error::NonFinite {
            what: format!("`{name}` {}", when()),
        }),
    }
}

/// What to tell the user after a non-finite value at batch `batch` of `epoch` (0-based).
fn stopped_at(cfg: &TrainConfig, epoch: usize, batch: usize) -> String {
    format!(
        "at batch {} of epoch {}; lower --lr (now {:?}). Nothing of this epoch was saved: the checkpoints of earlier epochs are intact",
        batch + 1,
        epoch + 1,
        cfg.lr
    )
}

/// The error of a step that left a non-finite parameter: names the tensor, the batch, the
/// epoch and the flag to change.
fn check_step(net: &mut Net<f32>, cfg: &TrainConfig, epoch: usize, batch: usize) -> Result<()> {
    check_finite_tensors(net, || {
        format!("after the update {}", stopped_at(cfg, epoch, batch))
    })
}

/// The hint of the error for a non-finite loss at batch `batch` of `epoch` (0-based).
pub(crate) fn non_finite_loss_hint(cfg: &TrainConfig, epoch: usize, batch: usize) -> String {
    format!(
        "the loss became non-finite {}",
        stopped_at(cfg, epoch, batch)
    )
}

/// Trains `cfg` into `run_dir`. Returns the per-epoch logs (all epochs, including resumed ones).
pub fn train(
    cfg: &TrainConfig,
    run_dir: &Path,
    existing: Existing,
    obs: &mut dyn TrainObserver,
) -> Result<Vec<EpochLog>> {
    cfg.validate()?;
    let mut net: Net<f32> = Net::new(&cfg.model, cfg.seed)?;
    let lbfgs = cfg.optimizer == OptimizerKind::Lbfgs;
    // with L-BFGS an unused SGD shell keeps the code paths uniform
    let mut opt = Optimizer::<f32>::new(
        if lbfgs {
            OptimizerKind::Sgd
        } else {
            cfg.optimizer
        },
        if cfg.sep_decay { 0.0 } else { cfg.weight_decay },
    )?;
    if lbfgs && cfg.sep_decay {
        return Err(Error::param(
            "sep-decay",
            "is not supported with --optimizer LBFGS",
        ));
    }
    let mut lb: Option<Lbfgs<f32>> = if lbfgs {
        Some(Lbfgs::new(cfg.lr, cfg.history_size)?)
    } else {
        None
    };
    let mut run = RunState::open(cfg, run_dir, existing, obs, &mut net, &mut opt, lb.as_mut())?;
    for epoch in run.start_epoch..cfg.epochs {
        let t0 = Instant::now();
        let lr = if lbfgs {
            cfg.lr
        } else {
            cfg.schedule.lr(cfg.lr, epoch)
        };
        let (order, mut aug_rng) = epoch_order(cfg, &run.train_idx, epoch);
        let batches = epoch_batches(&order, cfg.batch_size);
        let (d, augment) = (&run.data, run.augment);
        obs.epoch_start(epoch + 1, batches.len(), lr);
        let (mut loss_sum, mut h1, mut h5, mut seen) = (0.0, 0usize, 0usize, 0usize);
        for (bi, idx) in batches.iter().enumerate() {
            let (x, y) = data::make_batch::<f32>(
                &d.train,
                idx,
                cfg.dataset,
                augment.then_some(&mut aug_rng),
            );
            if let Some(lb) = lb.as_mut() {
                let (loss, a, b) = lbfgs_step(lb, &mut net, x, &y, cfg, (epoch, bi))?;
                check_step(&mut net, cfg, epoch, bi)?;
                loss_sum += loss * idx.len() as f64;
                h1 += a;
                h5 += b;
                seen += idx.len();
                obs.batch(
                    bi + 1,
                    loss_sum / seen as f64,
                    100.0 * h1 as f64 / seen as f64,
                );
                continue;
            }
            net.zero_grad();
            let out = net.forward(x, true)?;
            let (loss, dz) = cfg.loss.eval(&out.logits, &y)?;
            if !loss.is_finite() {
                return Err(Error::Diverged {
                    solver: format!("{:?}", cfg.optimizer),
                    iter: bi + 1,
                    value: loss,
                    hint: non_finite_loss_hint(cfg, epoch, bi),
                });
            }
            let (a, b) = topk_hits(&out.logits, &y);
            let df: Option<Array2<f32>> = (cfg.sep_decay && cfg.feature_decay_rate > 0.0)
                .then(|| &out.features * (cfg.feature_decay_rate as f32 / idx.len() as f32));
            net.backward(&dz, df.as_ref());
            if cfg.sep_decay {
                classifier_decay(&mut net, cfg.weight_decay);
            }
            opt.step(&mut net, lr);
            check_step(&mut net, cfg, epoch, bi)?;
            loss_sum += loss * idx.len() as f64;
            h1 += a;
            h5 += b;
            seen += idx.len();
            obs.batch(
                bi + 1,
                loss_sum / seen as f64,
                100.0 * h1 as f64 / seen as f64,
            );
        }
        let log = EpochLog {
            epoch: epoch + 1,
            lr,
            loss: loss_sum / seen.max(1) as f64,
            top1: 100.0 * h1 as f64 / seen.max(1) as f64,
            top5: 100.0 * h5 as f64 / seen.max(1) as f64,
            seconds: t0.elapsed().as_secs_f64(),
        };
        run.end_epoch(log, &mut net, &opt, lb.as_ref(), obs)?;
    }
    Ok(run.logs)
}

/// [`train`] on `device` (from [`NnDevice::select`]): the CPU layers, or the CUDA kernels of
/// [`crate::nn::cuda`] with the same batches, logs and checkpoints.
pub fn train_on(
    cfg: &TrainConfig,
    run_dir: &Path,
    existing: Existing,
    obs: &mut dyn TrainObserver,
    device: &NnDevice,
) -> Result<Vec<EpochLog>> {
    match device {
        NnDevice::Cpu { .. } => train(cfg, run_dir, existing, obs),
        #[cfg(feature = "cuda")]
        NnDevice::Cuda(b) => crate::nn::cuda::train_cuda(cfg, run_dir, existing, obs, b),
    }
}

/// The shuffled training indices of `epoch` (seeded by `(seed, epoch)`) and the generator of
/// that epoch's augmentation.
pub(crate) fn epoch_order(
    cfg: &TrainConfig,
    train_idx: &[usize],
    epoch: usize,
) -> (Vec<usize>, StdRng) {
    let mut order = train_idx.to_vec();
    order.shuffle(&mut StdRng::seed_from_u64(epoch_seed(cfg.seed, epoch, 1)));
    (order, StdRng::seed_from_u64(epoch_seed(cfg.seed, epoch, 2)))
}

/// Minibatches of `order` (a last batch of one sample is dropped: batch norm needs two).
pub(crate) fn epoch_batches(order: &[usize], batch_size: usize) -> Vec<&[usize]> {
    order.chunks(batch_size).filter(|b| b.len() > 1).collect()
}

/// A run directory being trained: the resume point, the logs so far and the data; shared by
/// the CPU loop and the CUDA loop (`crate::nn::cuda`).
pub(crate) struct RunState {
    /// Held while the run trains: a second `ufm train` into the same folder is refused.
    _lock: crate::io::DirLock,
    pub(crate) run_dir: PathBuf,
    pub(crate) start_epoch: usize,
    pub(crate) logs: Vec<EpochLog>,
    log_text: String,
    pub(crate) data: Dataset,
    pub(crate) train_idx: Vec<usize>,
    pub(crate) augment: bool,
}

impl RunState {
    /// Prepares `run_dir` per `existing` (refuse / overwrite / resume into `net` and `opt`),
    /// writes `config.json` and loads the data.
    pub(crate) fn open(
        cfg: &TrainConfig,
        run_dir: &Path,
        existing: Existing,
        obs: &mut dyn TrainObserver,
        net: &mut Net<f32>,
        opt: &mut Optimizer<f32>,
        lb: Option<&mut Lbfgs<f32>>,
    ) -> Result<Self> {
        std::fs::create_dir_all(run_dir).map_err(|e| Error::io("create directory", run_dir, e))?;
        let lock = crate::io::DirLock::acquire(
            run_dir,
            "`ufm train`",
            "wait for it to finish (or stop it) before --resume or --force, or pick another --uid",
        )?;
        let cfg_path = run_dir.join("config.json");
        let resume_path = run_dir.join("resume.safetensors");
        let mut start_epoch = 0;
        let mut logs: Vec<EpochLog> = vec![];
        let has_run = cfg_path.is_file();
        match existing {
            Existing::Refuse if has_run => {
                return Err(Error::param(
                    "uid",
                    format!(
                    "{} already holds a run; pass --force to overwrite it or --resume to continue it",
                    run_dir.display()
                ),
                ))
            }
            Existing::Overwrite if has_run => {
                for e in list_checkpoints(run_dir)? {
                    let p = checkpoint_path(run_dir, e);
                    std::fs::remove_file(&p).map_err(|er| Error::io("remove", &p, er))?;
                }
                let _ = std::fs::remove_file(&resume_path);
            }
            Existing::Resume => {
                if !resume_path.is_file() {
                    return Err(Error::param(
                        "resume",
                        format!(
                            "{} has no resume.safetensors to continue from",
                            run_dir.display()
                        ),
                    ));
                }
                let old = read_config(run_dir)?;
                let mut a = old.clone();
                a.epochs = cfg.epochs;
                if a != *cfg {
                    return Err(Error::param(
                        "resume",
                        format!(
                            "the flags differ from {} (only --epochs may change on resume)",
                            cfg_path.display()
                        ),
                    ));
                }
                // Every tensor is checked against the model (shape and dtype) and a missing one
                // is an error: a resumed run continues exactly or not at all.
                let ck = Checkpoint::open(&resume_path)?;
                ck.load_into(net)?;
                check_finite_tensors(net, || {
                    format!(
                        "of {}: the run cannot continue from it; start again with --force, or restore a good copy",
                        resume_path.display()
                    )
                })?;
                let meta = ck.metadata();
                let count = |key: &str| -> Result<u64> {
                    meta.get(key).and_then(|s| s.parse().ok()).ok_or_else(|| {
                        Error::format(
                            &resume_path,
                            format!("no `{key}` in the metadata; start the run again with --force"),
                        )
                    })
                };
                let steps = count("steps")?;
                let shapes = crate::nn::optim::trainable_shapes(net);
                opt.load_state(&shapes, steps, |n| ck.tensor_f32(n), &resume_path)?;
                if let Some(lb) = lb {
                    let json = meta.get("lbfgs").ok_or_else(|| {
                        Error::format(
                            &resume_path,
                            "no L-BFGS state in the metadata (written by an older ufm?); start the run again with --force",
                        )
                    })?;
                    let n_params = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
                    lb.load_state(json, n_params, |n| ck.tensor_f32(n), &resume_path)?;
                }
                start_epoch = usize::try_from(count("epoch")?)
                    .map_err(|_| Error::format(&resume_path, "the epoch in the metadata is too large"))?;
                if let Some(l) = meta.get("logs") {
                    logs = serde_json::from_str(l).map_err(|e| {
                        Error::format(&resume_path, format!("bad `logs` in the metadata ({e})"))
                    })?;
                }
                if logs.len() != start_epoch {
                    return Err(Error::format(
                        &resume_path,
                        format!(
                            "the metadata says epoch {start_epoch} but logs {} epochs; start the run again with --force",
                            logs.len()
                        ),
                    ));
                }
                obs.note(&format!(
                    "resuming {} after epoch {start_epoch}",
                    run_dir.display()
                ));
            }
            _ => {}
        }
        crate::io::write_atomic(&cfg_path, serde_json::to_string_pretty(cfg)?.as_bytes())?;
        let d = cfg.load_data(run_dir)?;
        for n in &d.notes {
            obs.note(n);
        }
        let train_idx = cfg.train_indices(&d)?;
        let augment = cfg.sota && cfg.dataset != DatasetName::Mnist;
        let mut log_text = logs
            .iter()
            .map(|l| {
                format!(
                    "epoch {:3} lr {:.6} loss {:.6} top1 {:.3} top5 {:.3} time {:.1}s\n",
                    l.epoch, l.lr, l.loss, l.top1, l.top5, l.seconds
                )
            })
            .collect::<String>();
        if start_epoch == 0 {
            log_text = format!(
                "ufm train: {} {:?} params {} seed {}\n",
                cfg.dataset.as_str(),
                cfg.model.arch,
                net.n_trainable(),
                cfg.seed
            );
        }
        Ok(RunState {
            _lock: lock,
            run_dir: run_dir.to_path_buf(),
            start_epoch,
            logs,
            log_text,
            data: d,
            train_idx,
            augment,
        })
    }

    /// Records an epoch: checkpoint, resume file (model + optimizer state), `log.txt` and
    /// `train_history.json`, all atomically; then tells `obs`.
    pub(crate) fn end_epoch(
        &mut self,
        log: EpochLog,
        net: &mut Net<f32>,
        opt: &Optimizer<f32>,
        lb: Option<&Lbfgs<f32>>,
        obs: &mut dyn TrainObserver,
    ) -> Result<()> {
        let (run_dir, epoch) = (&self.run_dir, log.epoch - 1);
        // Never save a non-finite model (the CPU loop checks every step already; this also
        // covers the CUDA loop, which checks here once per epoch).
        check_finite_tensors(net, || {
            format!(
                "at the end of epoch {}: lower --lr. Nothing of this epoch was saved: the checkpoints of earlier epochs are intact",
                log.epoch
            )
        })?;
        if !log.loss.is_finite() {
            return Err(Error::NonFinite {
                what: format!(
                    "the mean training loss of epoch {} ({})",
                    log.epoch, log.loss
                ),
            });
        }
        let resume_path = run_dir.join("resume.safetensors");
        let logs = &mut self.logs;
        let log_text = &mut self.log_text;
        logs.push(log.clone());
        *log_text += &format!(
            "epoch {:3} lr {:.6} loss {:.6} top1 {:.3} top5 {:.3} time {:.1}s\n",
            log.epoch, log.lr, log.loss, log.top1, log.top5, log.seconds
        );
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        meta.insert("epoch".to_string(), (epoch + 1).to_string());
        checkpoint::save(&checkpoint_path(run_dir, epoch + 1), net, &[], meta.clone())?;
        meta.insert("steps".to_string(), opt.steps.to_string());
        meta.insert("logs".to_string(), serde_json::to_string(&logs)?);
        let extra = match lb {
            Some(lb) => {
                meta.insert("lbfgs".to_string(), lb.state_json());
                lb.state_tensors()
            }
            None => opt.state(),
        };
        checkpoint::save(&resume_path, net, &extra, meta)?;
        crate::io::write_atomic(&run_dir.join("log.txt"), log_text.as_bytes())?;
        crate::io::write_atomic(
            &run_dir.join("train_history.json"),
            serde_json::to_string_pretty(&logs)?.as_bytes(),
        )?;
        obs.epoch_end(&log);
        Ok(())
    }
}

/// Trainable parameters of `net` as one flat vector (visit order).
pub fn flatten_params(net: &mut Net<f32>) -> Vec<f32> {
    let mut v = Vec::new();
    net.visit("", &mut |_, t| {
        if let TensorMut::Param(p) = t {
            if p.trainable {
                v.extend(p.value.iter().copied());
            }
        }
    });
    v
}

fn set_params(net: &mut Net<f32>, x: &[f32]) {
    let mut at = 0;
    net.visit("", &mut |_, t| {
        if let TensorMut::Param(p) = t {
            if p.trainable {
                let n = p.len();
                p.value
                    .iter_mut()
                    .zip(&x[at..at + n])
                    .for_each(|(w, &v)| *w = v);
                at += n;
            }
        }
    });
}

/// One `optimizer.step(closure)` of [`Lbfgs`] on a batch with the original
/// `train_2nd_order.py` closure $\frac1B\sum_i\ell(z_i,y_i)+\frac\lambda2\lVert\theta\rVert^2$
/// over the trainable parameters (train mode). Returns the data loss and the top-1/top-5 hits
/// of the closure's first evaluation (the parameters before the step).
fn lbfgs_step(
    lb: &mut Lbfgs<f32>,
    net: &mut Net<f32>,
    x: Array4<f32>,
    y: &[u32],
    cfg: &TrainConfig,
    (epoch, batch): (usize, usize),
) -> Result<(f64, usize, usize)> {
    let mut theta = flatten_params(net);
    let mut first: Option<(f64, usize, usize)> = None;
    let wd = cfg.weight_decay;
    lb.step(&mut theta, |th, g| {
        set_params(net, th);
        net.zero_grad();
        let out = net.forward(x.clone(), true)?;
        let (l, dz) = cfg.loss.eval(&out.logits, y)?;
        if first.is_none() {
            if !l.is_finite() {
                return Err(Error::Diverged {
                    solver: "LBFGS".into(),
                    iter: batch + 1,
                    value: l,
                    hint: non_finite_loss_hint(cfg, epoch, batch),
                });
            }
            let (a, b) = topk_hits(&out.logits, y);
            first = Some((l, a, b));
        }
        net.backward(&dz, None);
        let mut at = 0;
        let wdf = wd as f32;
        net.visit("", &mut |_, t| {
            if let TensorMut::Param(p) = t {
                if p.trainable {
                    for (k, &gv) in p.grad.iter().enumerate() {
                        g[at + k] = gv + wdf * th[at + k];
                    }
                    at += p.len();
                }
            }
        });
        let sq: f64 = th.iter().map(|&v| (v as f64) * (v as f64)).sum();
        Ok(l + 0.5 * wd * sq)
    })?;
    set_params(net, &theta);
    Ok(first.expect("the closure runs at least once"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::models::Arch;

    /// A NaN or an infinity in any parameter or buffer is found and named; a clean network
    /// passes; the vectorised screen agrees with a plain scan on every position.
    #[test]
    fn non_finite_tensors_are_found_by_name() {
        let cfg = ModelConfig {
            arch: Arch::Mlp,
            width: 8,
            depth: 2,
            n_classes: 3,
            bias: true,
            etf_classifier: false,
            fixdim: 0,
            sota: false,
        };
        let mut net: Net<f32> = Net::new(&cfg, 1).unwrap();
        assert_eq!(first_non_finite_tensor(&mut net), None);
        let mut names = vec![];
        net.visit("", &mut |n, t| {
            if !matches!(t, TensorMut::Count(_)) {
                names.push(n.to_string());
            }
        });
        let last = names.last().unwrap().clone();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            net.visit("", &mut |n, t| {
                if n == last {
                    if let TensorMut::Param(p) = t {
                        let i = p.value.len() - 1;
                        p.value.as_slice_mut().unwrap()[i] = bad;
                    } else if let TensorMut::Buffer(b) = t {
                        let i = b.len() - 1;
                        b.as_slice_mut().unwrap()[i] = bad;
                    }
                }
            });
            assert_eq!(
                first_non_finite_tensor(&mut net).as_deref(),
                Some(last.as_str())
            );
            let e = check_finite_tensors(&mut net, || "after batch 3".into())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("non-finite") && e.contains(&last) && e.contains("batch 3"),
                "{e}"
            );
            net = Net::new(&cfg, 1).unwrap();
        }
        for n in 0..20 {
            for at in 0..n {
                let mut v = vec![1.5f32; n];
                v[at] = f32::NAN;
                assert!(!all_finite(&v), "{n} {at}");
            }
            assert!(all_finite(&vec![-3.0f32; n]));
        }
    }
}
