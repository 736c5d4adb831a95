//! End-to-end training: on the real MNIST (`UFM_DATA_DIR`, default `../shared/data`; the
//! `real_data` test, ignored by default) and on a synthetic MNIST written by each test
//! (`tests/common`): resume, checkpoints, non-finite training, CLI.

mod common;

use assert_cmd::Command;
use std::path::Path;
use ufm::nn::checkpoint::Checkpoint;
use ufm::nn::data::DatasetName;
use ufm::nn::layers::{LossKind, Module};
use ufm::nn::models::{Arch, ModelConfig, Net};
use ufm::nn::optim::{OptimizerKind, Schedule};
use ufm::nn::train::{checkpoint_path, train, Existing, Silent, TrainConfig};
use ufm::nn::validate::validate_run;

/// A synthetic MNIST with `per_class` training images per class (and 10 test images per
/// class) in a fresh temporary folder (kept alive by the returned guard).
fn synthetic(per_class: usize) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    common::synthetic_mnist(t.path(), per_class, 10, per_class as u64);
    t
}

fn mlp_config(
    data_dir: &Path,
    width: usize,
    depth: usize,
    per_class: usize,
    epochs: usize,
    lr: f64,
) -> TrainConfig {
    TrainConfig {
        dataset: DatasetName::Mnist,
        data_dir: data_dir.to_path_buf(),
        model: ModelConfig {
            arch: Arch::Mlp,
            width,
            depth,
            n_classes: 10,
            bias: true,
            etf_classifier: false,
            fixdim: 0,
            sota: false,
        },
        optimizer: OptimizerKind::Sgd,
        lr,
        batch_size: 128,
        epochs,
        weight_decay: 5e-4,
        schedule: Schedule::Step {
            step: 40,
            gamma: 0.1,
        },
        seed: 6,
        history_size: 10,
        sample_size: Some(per_class),
        loss: LossKind::CrossEntropy,
        sep_decay: false,
        feature_decay_rate: 1e-4,
        sota: false,
        label_file: None,
    }
}

/// CI-sized version of the full run documented in the README: an MLP (width 128, depth 2)
/// on 4,000 MNIST images per class for 3 epochs (SGD lr 0.05, x0.1 after epoch 2) reaches
/// at least 97% on the full 10,000-image test set, and NC1 of the training features decreases
/// from epoch 1 to epoch 3.
#[test]
#[ignore = "needs the real data (UFM_DATA_DIR or ../shared/data)"]
fn real_data_mlp_on_mnist_reaches_97_percent_and_nc1_falls() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = mlp_config(&common::real_data_dir(), 128, 2, 4000, 3, 0.05);
    cfg.schedule = Schedule::MultiStep {
        milestones: vec![2],
        gamma: 0.1,
    };
    let logs = train(&cfg, tmp.path(), Existing::Refuse, &mut Silent).unwrap();
    assert_eq!(logs.len(), 3);
    assert!(logs[2].loss < logs[0].loss);
    let rows = validate_run(tmp.path(), None, 1000, |_| {}).unwrap();
    assert_eq!(rows.len(), 3);
    let last = rows.last().unwrap();
    assert!(last.test_acc1 >= 97.0, "test accuracy {}", last.test_acc1);
    assert!(last.test_acc5 >= last.test_acc1);
    assert!(
        rows[2].nc1 < rows[0].nc1,
        "NC1 {} -> {}",
        rows[0].nc1,
        rows[2].nc1
    );
    assert!(tmp.path().join("info.json").is_file() && tmp.path().join("nc_metrics.csv").is_file());
    let csv = std::fs::read_to_string(tmp.path().join("nc_metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
}

fn tensors(p: &Path, net: &mut Net<f32>) -> Vec<f32> {
    Checkpoint::open(p).unwrap().load_into(net).unwrap();
    let mut v = vec![];
    net.visit("", &mut |_, t| match t {
        ufm::nn::layers::TensorMut::Param(p) => v.extend(p.value.iter().copied()),
        ufm::nn::layers::TensorMut::Buffer(b) => v.extend(b.iter().copied()),
        ufm::nn::layers::TensorMut::Count(c) => v.push(*c as f32),
    });
    v
}

/// Two epochs in one go and one epoch + `--resume` give bit-identical checkpoints
/// (same shuffles, same optimizer state), for SGD and Adam.
#[test]
fn resume_reproduces_an_uninterrupted_run() {
    let data = synthetic(20);
    for opt in [OptimizerKind::Sgd, OptimizerKind::Adam] {
        let mut cfg = mlp_config(data.path(), 16, 2, 20, 2, 0.01);
        cfg.optimizer = opt;
        cfg.batch_size = 32;
        let a = tempfile::tempdir().unwrap();
        train(&cfg, a.path(), Existing::Refuse, &mut Silent).unwrap();
        let b = tempfile::tempdir().unwrap();
        let mut c1 = cfg.clone();
        c1.epochs = 1;
        train(&c1, b.path(), Existing::Refuse, &mut Silent).unwrap();
        // a run dir that already holds a run is refused without --force/--resume
        let e = train(&c1, b.path(), Existing::Refuse, &mut Silent)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--force") && e.contains("--resume"), "{e}");
        train(&cfg, b.path(), Existing::Resume, &mut Silent).unwrap();
        let mut net = Net::new(&cfg.model, 0).unwrap();
        let ta = tensors(&checkpoint_path(a.path(), 2), &mut net);
        let tb = tensors(&checkpoint_path(b.path(), 2), &mut net);
        assert_eq!(ta, tb, "{opt:?}");
        // changing a flag other than --epochs on resume is refused
        let mut c3 = cfg.clone();
        c3.lr = 0.5;
        c3.epochs = 3;
        assert!(train(&c3, b.path(), Existing::Resume, &mut Silent).is_err());
    }
}

#[test]
fn checkpoint_of_another_model_is_rejected_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic(10);
    let cfg = mlp_config(data.path(), 16, 2, 10, 1, 0.01);
    train(&cfg, tmp.path(), Existing::Refuse, &mut Silent).unwrap();
    let mut other: Net<f32> = Net::new(
        &ModelConfig {
            width: 32,
            ..cfg.model.clone()
        },
        0,
    )
    .unwrap();
    let e = Checkpoint::open(&checkpoint_path(tmp.path(), 1))
        .unwrap()
        .load_into(&mut other)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layers.0.weight") && e.contains("another model"),
        "{e}"
    );
    // a truncated checkpoint (as after a crash without atomic writes) is reported, not loaded
    let p = tmp.path().join("epoch_002.safetensors");
    let bytes = std::fs::read(checkpoint_path(tmp.path(), 1)).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = Checkpoint::open(&p).err().unwrap().to_string();
    assert!(e.contains("epoch_002") && e.contains("incomplete"), "{e}");
}

#[test]
fn checkpoint_uses_pytorch_state_dict_names() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ModelConfig {
        arch: Arch::Resnet18,
        width: 0,
        depth: 0,
        n_classes: 10,
        bias: true,
        etf_classifier: false,
        fixdim: 0,
        sota: false,
    };
    let mut net: Net<f32> = Net::new(&cfg, 1).unwrap();
    let p = tmp.path().join("x.safetensors");
    ufm::nn::checkpoint::save(&p, &mut net, &[], Default::default()).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    // torchvision resnet18 state_dict: 122 entries (62 params + 60 BN buffers)
    assert_eq!(names.len(), 122);
    for n in [
        "conv1.weight",
        "bn1.running_mean",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer4.1.bn2.running_var",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    assert_eq!(
        st.tensor("layer3.0.downsample.1.num_batches_tracked")
            .unwrap()
            .dtype(),
        safetensors::Dtype::I64
    );
    assert_eq!(
        st.tensor("layer4.1.conv2.weight").unwrap().shape(),
        &[512, 512, 3, 3]
    );
}

#[test]
fn print_params_reproduces_the_originals_counts() {
    for (flags, want) in [
        (vec![], "11181642"),
        (vec!["--fixdim", "10"], "8867542"),
        (vec!["--fixdim", "10", "--etf-classifier"], "8867442"),
        (vec!["--model", "mlp"], "8417290"),
    ] {
        let mut args = vec!["train", "--print-params"];
        args.extend(flags);
        let out = Command::cargo_bin("ufm")
            .unwrap()
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "{args:?}"
        );
    }
}

#[test]
fn cli_reports_bad_input_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("ufm")
        .unwrap()
        .args(["train", "--model", "vgg", "--print-params"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model `vgg`"));
    let out = Command::cargo_bin("ufm")
        .unwrap()
        .args(["train", "--download", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MNIST/raw") && err.contains("t10k-labels-idx1-ubyte.gz"),
        "{err}"
    );
}

/// `--optimizer LBFGS` (20 strong-Wolfe iterations per batch on loss + λ/2‖θ‖²) drives the
/// training loss down on a small MNIST subset, and `--sep-decay` trains without errors.
#[test]
fn lbfgs_and_sep_decay_train() {
    let data = synthetic(30);
    let mut cfg = mlp_config(data.path(), 16, 1, 30, 2, 0.1);
    cfg.optimizer = OptimizerKind::Lbfgs;
    cfg.batch_size = 300;
    let tmp = tempfile::tempdir().unwrap();
    let logs = train(&cfg, tmp.path(), Existing::Refuse, &mut Silent).unwrap();
    assert!(
        logs[1].loss < 0.8 * logs[0].loss,
        "{} -> {}",
        logs[0].loss,
        logs[1].loss
    );
    let mut cfg = mlp_config(data.path(), 16, 1, 30, 2, 0.05);
    cfg.sep_decay = true;
    cfg.feature_decay_rate = 1e-2;
    let tmp = tempfile::tempdir().unwrap();
    let logs = train(&cfg, tmp.path(), Existing::Refuse, &mut Silent).unwrap();
    assert!(logs[1].loss.is_finite() && logs[1].loss < logs[0].loss);
}

/// With `--etf-classifier` the classifier stays the simplex ETF through training (NC2 of W is
/// zero to round-off), while its bias trains.
#[test]
fn etf_classifier_stays_frozen() {
    let data = synthetic(20);
    let mut cfg = mlp_config(data.path(), 16, 1, 20, 1, 0.05);
    cfg.model.etf_classifier = true;
    let tmp = tempfile::tempdir().unwrap();
    train(&cfg, tmp.path(), Existing::Refuse, &mut Silent).unwrap();
    let rows = validate_run(tmp.path(), None, 500, |_| {}).unwrap();
    assert!(rows[0].nc2 < 1e-6, "NC2 of a frozen ETF: {}", rows[0].nc2);
    let ck = Checkpoint::open(&checkpoint_path(tmp.path(), 1)).unwrap();
    let w = ck.tensor("fc.weight").unwrap();
    let etf = ufm::ufm::simplex_etf(10, 16, ufm::ufm::EtfEmbedding::Identity).unwrap();
    let err = w
        .iter()
        .zip(etf.iter())
        .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
    assert!(err < 1e-6, "{err}");
    let mut net: Net<f32> = Net::new(&cfg.model, cfg.seed).unwrap();
    assert_eq!(net.n_trainable(), 3072 * 16 + 16 + 2 * 16 + 10);
    let b0 = net.fc.bias.as_ref().unwrap().value.clone();
    assert_ne!(ck.tensor("fc.bias").unwrap(), b0, "the bias must train");
}

fn train_cli(
    data: &Path,
    out: &Path,
    lr: &str,
    epochs: &str,
    extra: &[&str],
) -> std::process::Output {
    Command::cargo_bin("ufm")
        .unwrap()
        .args([
            "train",
            "--dataset",
            "mnist",
            "--model",
            "mlp",
            "--width",
            "16",
            "--depth",
            "1",
            "--sample-size",
            "10",
            "--batch-size",
            "20",
            "--uid",
            "run",
            "--lr",
            lr,
            "--epochs",
            epochs,
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .arg("--out-dir")
        .arg(out)
        .output()
        .unwrap()
}

/// A learning rate of 1e30 makes the weights or the loss non-finite in the first epoch:
/// `ufm train` exits 1 with an error naming the epoch, the batch and `--lr`, and writes no
/// checkpoint (nothing non-finite is ever saved).
#[test]
fn huge_learning_rate_stops_training_with_a_non_finite_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::synthetic_mnist(&tmp.path().join("data"), 10, 2, 4);
    let out = train_cli(&data, tmp.path(), "1e30", "2", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("non-finite") || err.contains("diverged"),
        "{err}"
    );
    assert!(err.contains("epoch 1") && err.contains("batch"), "{err}");
    assert!(err.contains("--lr"), "{err}");
    let run = tmp.path().join("run");
    assert!(!checkpoint_path(&run, 1).exists() && !run.join("resume.safetensors").exists());
}

/// A NaN written into `resume.safetensors` (ReLU would map it to 0 and training would go on
/// with a dead layer): `--resume` refuses it with an error naming the tensor and the file,
/// exits 1, and the last good checkpoint stays as it was.
#[test]
fn resume_from_a_checkpoint_with_nan_weights_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::synthetic_mnist(&tmp.path().join("data"), 10, 2, 4);
    let out = train_cli(&data, tmp.path(), "0.01", "1", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = tmp.path().join("run");
    let good = std::fs::read(checkpoint_path(&run, 1)).unwrap();
    let rp = run.join("resume.safetensors");
    let mut bytes = std::fs::read(&rp).unwrap();
    let at = {
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("layers.0.weight").unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        t.data().as_ptr() as usize - bytes.as_ptr() as usize + 4 * 5
    };
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&rp, &bytes).unwrap();
    let out = train_cli(&data, tmp.path(), "0.01", "2", &["--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("non-finite")
            && err.contains("layers.0.weight")
            && err.contains("resume.safetensors"),
        "{err}"
    );
    assert_eq!(std::fs::read(checkpoint_path(&run, 1)).unwrap(), good);
    assert!(!checkpoint_path(&run, 2).exists());
}
