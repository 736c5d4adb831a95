//! `ufm train --optimizer LBFGS` keeps `torch.optim.LBFGS`'s state across batches and across
//! `--resume` (the optimizer itself is checked against PyTorch in `tests/nn_torch_parity.rs`),
//! on a synthetic MNIST written by the test (`tests/common`).

mod common;

use std::path::Path;
use ufm::nn::checkpoint::Checkpoint;
use ufm::nn::data::DatasetName;
use ufm::nn::layers::{LossKind, Module, TensorMut};
use ufm::nn::models::{Arch, ModelConfig, Net};
use ufm::nn::optim::{OptimizerKind, Schedule};
use ufm::nn::train::{checkpoint_path, train, Existing, Silent, TrainConfig};

fn lbfgs_config(data_dir: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        dataset: DatasetName::Mnist,
        data_dir: data_dir.to_path_buf(),
        model: ModelConfig {
            arch: Arch::Mlp,
            width: 16,
            depth: 2,
            n_classes: 10,
            bias: true,
            etf_classifier: false,
            fixdim: 0,
            sota: false,
        },
        optimizer: OptimizerKind::Lbfgs,
        lr: 0.1,
        batch_size: 64,
        epochs,
        weight_decay: 5e-4,
        schedule: Schedule::Constant,
        seed: 11,
        history_size: 3,
        sample_size: Some(20),
        loss: LossKind::CrossEntropy,
        sep_decay: false,
        feature_decay_rate: 1e-4,
        sota: false,
        label_file: None,
    }
}

fn all_tensors(p: &Path, net: &mut Net<f32>) -> Vec<f32> {
    Checkpoint::open(p).unwrap().load_into(net).unwrap();
    let mut v = vec![];
    net.visit("", &mut |_, t| match t {
        TensorMut::Param(p) => v.extend(p.value.iter().copied()),
        TensorMut::Buffer(b) => v.extend(b.iter().copied()),
        TensorMut::Count(c) => v.push(*c as f32),
    });
    v
}

/// Two epochs in one go and one epoch + `--resume` give bit-identical checkpoints with
/// L-BFGS (4 batches per epoch, history 3): the history, direction, step and counters travel
/// through `resume.safetensors`. After 8 steps the history is full (3 pairs stored).
#[test]
fn lbfgs_resume_reproduces_an_uninterrupted_run() {
    let data = tempfile::tempdir().unwrap();
    let cfg = lbfgs_config(&common::synthetic_mnist(data.path(), 20, 5, 7), 2);
    let a = tempfile::tempdir().unwrap();
    let logs = train(&cfg, a.path(), Existing::Refuse, &mut Silent).unwrap();
    assert!(logs[1].loss < logs[0].loss, "{logs:?}");
    let b = tempfile::tempdir().unwrap();
    let mut c1 = cfg.clone();
    c1.epochs = 1;
    train(&c1, b.path(), Existing::Refuse, &mut Silent).unwrap();
    train(&cfg, b.path(), Existing::Resume, &mut Silent).unwrap();
    let mut net = Net::new(&cfg.model, 0).unwrap();
    let ta = all_tensors(&checkpoint_path(a.path(), 2), &mut net);
    let tb = all_tensors(&checkpoint_path(b.path(), 2), &mut net);
    assert_eq!(ta, tb);
    let ck = Checkpoint::open(&a.path().join("resume.safetensors")).unwrap();
    let n = net.n_trainable();
    for k in [
        "lbfgs.d",
        "lbfgs.prev_flat_grad",
        "lbfgs.old_dirs.2",
        "lbfgs.old_stps.2",
    ] {
        assert_eq!(ck.tensor(k).unwrap().len(), n, "{k}");
    }
    assert!(ck.tensor("lbfgs.old_dirs.3").is_none(), "history_size 3");
    let meta: serde_json::Value = serde_json::from_str(&ck.metadata()["lbfgs"]).unwrap();
    let n_iter = meta["n_iter"].as_u64().unwrap();
    // 8 steps of at most 20 iterations, more than one iteration per step on average
    assert!(n_iter > 8 && n_iter <= 160, "n_iter {n_iter}");
    // a resume file without the L-BFGS state is refused with a clear message
    let mut meta_map = ck.metadata();
    meta_map.remove("lbfgs");
    Checkpoint::open(&b.path().join("resume.safetensors"))
        .unwrap()
        .load_into(&mut net)
        .unwrap();
    ufm::nn::checkpoint::save(
        &b.path().join("resume.safetensors"),
        &mut net,
        &[],
        meta_map,
    )
    .unwrap();
    let mut c3 = cfg.clone();
    c3.epochs = 3;
    let e = train(&c3, b.path(), Existing::Resume, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("L-BFGS state"), "{e}");
}
