//! `ufm train`: train a network (MLP / ResNet-18) on MNIST or CIFAR-10 with hand-written
//! layers, writing one safetensors checkpoint per epoch.

use crate::cmd_solve::DeviceArg;
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use ufm::nn::cuda::NnDevice;
use ufm::nn::data::{self, DatasetName};
use ufm::nn::layers::{LossKind, Module};
use ufm::nn::models::{Arch, ModelConfig, Net};
use ufm::nn::optim::Schedule;
use ufm::nn::train::{train_on, EpochLog, Existing, TrainConfig, TrainObserver};

/// Flags mirror the original `args.py` (dashes instead of underscores).
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Data set: mnist, cifar10, cifar10_random.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Folder with MNIST/raw/ or cifar-10-batches-bin/ (default ../shared/data if it exists, else ~/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Model: mlp, resnet18, resnet18-adapt.
    #[arg(long, default_value = "resnet18")]
    pub model: String,
    /// MLP hidden width / ResNet18_adapt channel multiplier k.
    #[arg(long, default_value_t = 1024)]
    pub width: usize,
    /// MLP depth (hidden layers).
    #[arg(long, default_value_t = 6)]
    pub depth: usize,
    /// Optimizer: SGD, Adam or LBFGS (20 strong-Wolfe iterations per batch, no schedule).
    #[arg(long, default_value = "SGD")]
    pub optimizer: String,
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Epochs.
    #[arg(long, default_value_t = 200)]
    pub epochs: usize,
    /// Weight decay λ (coupled L2 on all trainable tensors; with --sep-decay only on W, b).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// StepLR step size in epochs.
    #[arg(long, default_value_t = 40)]
    pub patience: usize,
    /// Learning-rate decay factor.
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// `step` (StepLR every --patience epochs), `step_A_B_C` (MultiStepLR milestones) or `none`.
    #[arg(long, default_value = "step")]
    pub decay_type: String,
    /// Seed of initialisation, shuffling, augmentation and random labels.
    #[arg(long, default_value_t = 6)]
    pub seed: u64,
    /// L-BFGS history size.
    #[arg(long, default_value_t = 10)]
    pub history_size: usize,
    /// Use only the first m training samples of each class.
    #[arg(long)]
    pub sample_size: Option<usize>,
    /// Run name: one folder name (no `/`, `..` or absolute path); the run lives in
    /// <out-dir>/<uid> (default: random 5 digits + timestamp).
    #[arg(long)]
    pub uid: Option<String>,
    /// Parent folder of runs.
    #[arg(long, default_value = "model_weights")]
    pub out_dir: PathBuf,
    /// Overwrite an existing run with the same uid (refused while another `ufm train` is
    /// using it).
    #[arg(long)]
    pub force: bool,
    /// Continue the run <out-dir>/<uid> from its last complete epoch (every saved tensor is
    /// checked against the model; refused while another `ufm train` is using the run).
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// CIFAR stem for resnet18 and crop/flip augmentation for CIFAR-10.
    #[arg(long)]
    pub sota: bool,
    /// Freeze the classifier to a simplex ETF (bias stays trainable).
    #[arg(long)]
    pub etf_classifier: bool,
    /// Feature dimension of resnet18's last block (0: 512).
    #[arg(long, default_value_t = 0)]
    pub fixdim: usize,
    /// Classifier without bias.
    #[arg(long)]
    pub no_bias: bool,
    /// Loss: CrossEntropy or MSE.
    #[arg(long, default_value = "CrossEntropy")]
    pub loss: String,
    /// Decay λ only on W, b and --feature-decay-rate on the raw features h (none on the backbone).
    #[arg(long)]
    pub sep_decay: bool,
    /// λ_H for --sep-decay.
    #[arg(long, default_value_t = 1e-4)]
    pub feature_decay_rate: f64,
    /// File for cifar10_random labels (default <run>/random_labels.json; the data folder may be read-only).
    #[arg(long)]
    pub label_file: Option<PathBuf>,
    /// Download the official data files into --data-dir (MNIST from torchvision's mirrors,
    /// CIFAR-10 binary from cs.toronto.edu), verify their md5, and exit; files already there
    /// are kept. UFM_DOWNLOAD_MIRROR=URL fetches the same file names from another server.
    /// Without network access the error says where to put the files by hand.
    #[arg(long)]
    pub download: bool,
    /// Print the number of trainable parameters and exit.
    #[arg(long)]
    pub print_params: bool,
    /// Where to train: cpu, cuda (the layers as CUDA kernels; an error naming what is missing
    /// when no GPU is usable) or auto (CUDA when usable, else the CPU with a note on stderr).
    /// Same batches, logs and checkpoints on every device; LBFGS runs on the CPU only.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// The default data folder: ../shared/data if it exists, else ~/data.
pub fn default_data_dir() -> PathBuf {
    let shared = PathBuf::from("../shared/data");
    if shared.is_dir() {
        return shared;
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join("data"))
        .unwrap_or_else(|| PathBuf::from("data"))
}

impl TrainArgs {
    fn model_config(&self) -> Result<ModelConfig> {
        let arch: Arch = self.model.parse()?;
        Ok(ModelConfig {
            arch,
            width: self.width,
            depth: self.depth,
            n_classes: 10,
            bias: !self.no_bias,
            etf_classifier: self.etf_classifier,
            fixdim: self.fixdim,
            sota: self.sota,
        })
    }

    fn config(&self) -> Result<TrainConfig> {
        Ok(TrainConfig {
            dataset: self.dataset.parse()?,
            data_dir: self.data_dir.clone().unwrap_or_else(default_data_dir),
            model: self.model_config()?,
            optimizer: self.optimizer.parse()?,
            lr: self.lr,
            batch_size: self.batch_size,
            epochs: self.epochs,
            weight_decay: self.weight_decay,
            schedule: Schedule::parse(&self.decay_type, self.patience, self.gamma)?,
            seed: self.seed,
            history_size: self.history_size,
            sample_size: self.sample_size,
            loss: self.loss.parse::<LossKind>()?,
            sep_decay: self.sep_decay,
            feature_decay_rate: self.feature_decay_rate,
            sota: self.sota,
            label_file: self.label_file.clone(),
        })
    }
}

struct Bar {
    bar: Option<ProgressBar>,
    epochs: usize,
}

impl TrainObserver for Bar {
    fn epoch_start(&mut self, epoch: usize, n: usize, lr: f64) {
        let b = ProgressBar::new(n as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_prefix(format!("epoch {epoch}/{} lr {lr:.2e}", self.epochs));
        self.bar = Some(b);
    }
    fn batch(&mut self, done: usize, loss: f64, top1: f64) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            b.set_message(format!("loss {loss:.4} top1 {top1:.2}%"));
        }
    }
    fn epoch_end(&mut self, l: &EpochLog) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        println!(
            "epoch {:3}/{} lr {:.2e} loss {:.4} top1 {:.2}% top5 {:.2}% ({:.1}s)",
            l.epoch, self.epochs, l.lr, l.loss, l.top1, l.top5, l.seconds
        );
    }
    fn note(&mut self, msg: &str) {
        println!("{msg}");
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    ufm::nn::keep_freed_memory();
    let cfg = args.config()?;
    if args.print_params {
        let mut net: Net<f32> = Net::new(&cfg.model, cfg.seed)?;
        println!("{}", net.n_trainable());
        return Ok(());
    }
    if args.download {
        let dn: DatasetName = cfg.dataset;
        let mirror = std::env::var("UFM_DOWNLOAD_MIRROR").ok();
        let rep = ufm::nn::download::download(dn, &cfg.data_dir, mirror.as_deref(), &mut |m| {
            eprintln!("{m}")
        })?;
        let d = data::load(
            dn,
            &cfg.data_dir,
            &std::env::temp_dir().join("ufm-label-probe.json"),
            cfg.seed,
        )?;
        println!(
            "data ready: {} train / {} test images in {} ({} fetched, {} already present)",
            d.train.len(),
            d.test.len(),
            cfg.data_dir.display(),
            rep.fetched.len(),
            rep.present.len()
        );
        return Ok(());
    }
    if let Some(u) = &args.uid {
        ufm::nn::train::validate_uid(u)?;
    }
    let uid = args.uid.clone().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!(
            "{:05}-{t}",
            (t.wrapping_mul(2654435761) ^ std::process::id() as u64) % 100000
        )
    });
    let device = NnDevice::select(args.device.into(), Some(cfg.optimizer))?;
    if let Some(reason) = device.fallback() {
        eprintln!("note: --device auto: {reason}; running on the CPU");
    }
    let run_dir = args.out_dir.join(&uid);
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let existing = if args.resume {
        Existing::Resume
    } else if args.force {
        Existing::Overwrite
    } else {
        Existing::Refuse
    };
    println!(
        "ufm train: {} {} -> {} (seed {}, {})",
        cfg.dataset.as_str(),
        args.model,
        run_dir.display(),
        cfg.seed,
        if device.is_cpu() {
            format!("{} threads", rayon::current_num_threads())
        } else {
            device.name()
        }
    );
    let mut bar = Bar {
        bar: None,
        epochs: cfg.epochs,
    };
    let logs = train_on(&cfg, &run_dir, existing, &mut bar, &device)?;
    let total: f64 = logs.iter().map(|l| l.seconds).sum();
    println!(
        "done: {} epochs in {:.1}s; checkpoints in {}",
        logs.len(),
        total,
        run_dir.display()
    );
    println!("next: ufm validate --run {}", run_dir.display());
    Ok(())
}
