//! Neural-collapse measurements of a trained run, checkpoint by checkpoint, as the original
//! `validate_NC.py`: the raw penultimate features $h_i$ of the **un-augmented training set**
//! in eval mode (running batch-norm statistics) are summarised by
//! [`ClassStats`] and fed to [`nc_summary`]:
//! $\mathcal{NC}_1=\frac1K\operatorname{tr}(\Sigma_W\Sigma_B^\dagger)$, $\mathcal{NC}_2$ on
//! $W$, $\mathcal{NC}_3$ on $W\bar M$, $\mathcal{NC}_4=\lVert W\mu_G+b\rVert$, plus top-1/top-5
//! accuracy on the train and test sets.
//!
//! Unlike the original (hard-coded full-data-set class counts), the statistics use the
//! samples actually trained on, so they are right with `--sample-size` too.

use crate::error::{Error, Result};
use crate::metrics::{nc_summary, ClassStats};
use crate::nn::checkpoint::Checkpoint;
use crate::nn::cuda::NnDevice;
use crate::nn::data::{self, DatasetName, ImageSet};
use crate::nn::layers::loss::topk_hits;
use crate::nn::models::Net;
use crate::nn::train::{checkpoint_path, list_checkpoints, read_config};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Accuracy and (optionally) class statistics of features over a set.
pub struct EvalResult {
    /// Top-1 accuracy, percent.
    pub top1: f64,
    /// Top-5 accuracy, percent.
    pub top5: f64,
}

/// Runs `net` in eval mode over `idx` of `set` in batches; pushes features into `stats`.
pub fn evaluate(
    net: &mut Net<f32>,
    set: &ImageSet,
    idx: &[usize],
    name: DatasetName,
    batch_size: usize,
    mut stats: Option<&mut ClassStats>,
) -> Result<EvalResult> {
    let (mut h1, mut h5) = (0, 0);
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, y) = data::make_batch::<f32>(set, chunk, name, None);
        let out = net.forward(x, false)?;
        let (a, b) = topk_hits(&out.logits, &y);
        h1 += a;
        h5 += b;
        if let Some(s) = stats.as_deref_mut() {
            s.push(out.features.view(), &y)?;
        }
    }
    let n = idx.len().max(1) as f64;
    Ok(EvalResult {
        top1: 100.0 * h1 as f64 / n,
        top5: 100.0 * h5 as f64 / n,
    })
}

/// Metrics of one checkpoint (one CSV row).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch (1-based).
    pub epoch: usize,
    /// $\mathcal{NC}_1$ (`collapse_metric`).
    pub nc1: f64,
    /// $\mathcal{NC}_2$ of $W$ (`ETF_metric`).
    pub nc2: f64,
    /// ETF error of the centred class means.
    pub nc2_h: f64,
    /// $\mathcal{NC}_3$ (`WH_relation_metric`).
    pub nc3: f64,
    /// $\mathcal{NC}_4=\lVert W\mu_G+b\rVert$ (`Wh_b_relation_metric`).
    pub nc4: f64,
    /// Train top-1, percent.
    pub train_acc1: f64,
    /// Train top-5, percent.
    pub train_acc5: f64,
    /// Test top-1, percent.
    pub test_acc1: f64,
    /// Test top-5, percent.
    pub test_acc5: f64,
}

/// Metrics of checkpoint `epoch` of a run whose data set is already loaded.
pub fn validate_checkpoint(
    run_dir: &Path,
    epoch: usize,
    net: &mut Net<f32>,
    d: &data::Dataset,
    train_idx: &[usize],
    batch_size: usize,
) -> Result<EpochMetrics> {
    Checkpoint::open(&checkpoint_path(run_dir, epoch))?.load_into(net)?;
    let mut stats = ClassStats::new(d.n_classes, net.feature_dim());
    let tr = evaluate(
        net,
        &d.train,
        train_idx,
        d.name,
        batch_size,
        Some(&mut stats),
    )?;
    let test_idx: Vec<usize> = (0..d.test.len()).collect();
    let te = evaluate(net, &d.test, &test_idx, d.name, batch_size, None)?;
    epoch_metrics(epoch, &stats.finish()?, net, tr, te)
}

/// One CSV row from the class statistics of the training features and the accuracies.
fn epoch_metrics(
    epoch: usize,
    fs: &crate::metrics::FeatureStats,
    net: &Net<f32>,
    tr: EvalResult,
    te: EvalResult,
) -> Result<EpochMetrics> {
    let (w, b) = net.classifier();
    let w64 = w.mapv(|v| v as f64);
    let b64 = b.map(|b| b.mapv(|v| v as f64));
    let s = nc_summary(fs, Some(w64.view()), b64.as_ref().map(|b| b.view()))?;
    Ok(EpochMetrics {
        epoch,
        nc1: s.nc1,
        nc2: s.nc2_w.unwrap_or(f64::NAN),
        nc2_h: s.nc2_h,
        nc3: s.nc3.unwrap_or(f64::NAN),
        nc4: s.bias.unwrap_or(f64::NAN),
        train_acc1: tr.top1,
        train_acc5: tr.top5,
        test_acc1: te.top1,
        test_acc5: te.top5,
    })
}

/// Reads a list of numbers in which `null` stands for a value that is not defined (NaN), as
/// `serde_json` writes NaN and infinities.
fn nullable_f64s<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<f64>, D::Error> {
    let v: Vec<Option<f64>> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// The original `info.pkl` layout as JSON: one list per key, one entry per epoch.
///
/// A metric that is not defined at an epoch (NaN, e.g. NC4 of a classifier without bias) is
/// written as JSON `null` and read back as NaN, so `ufm validate` → `ufm plot` round-trips;
/// plots leave such points out.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Info {
    /// Epochs.
    pub epoch: Vec<usize>,
    /// NC1.
    #[serde(deserialize_with = "nullable_f64s")]
    pub collapse_metric: Vec<f64>,
    /// NC2.
    #[serde(rename = "ETF_metric", deserialize_with = "nullable_f64s")]
    pub etf_metric: Vec<f64>,
    /// NC3.
    #[serde(rename = "WH_relation_metric", deserialize_with = "nullable_f64s")]
    pub wh_relation_metric: Vec<f64>,
    /// NC4.
    #[serde(rename = "Wh_b_relation_metric", deserialize_with = "nullable_f64s")]
    pub whb_relation_metric: Vec<f64>,
    /// NC2 on class means.
    #[serde(deserialize_with = "nullable_f64s")]
    pub nc2_class_means: Vec<f64>,
    /// Train top-1.
    #[serde(deserialize_with = "nullable_f64s")]
    pub train_acc1: Vec<f64>,
    /// Train top-5.
    #[serde(deserialize_with = "nullable_f64s")]
    pub train_acc5: Vec<f64>,
    /// Test top-1.
    #[serde(deserialize_with = "nullable_f64s")]
    pub test_acc1: Vec<f64>,
    /// Test top-5.
    #[serde(deserialize_with = "nullable_f64s")]
    pub test_acc5: Vec<f64>,
}

impl Info {
    /// Collects rows into lists.
    pub fn from_rows(rows: &[EpochMetrics]) -> Self {
        let mut i = Info::default();
        for r in rows {
            i.epoch.push(r.epoch);
            i.collapse_metric.push(r.nc1);
            i.etf_metric.push(r.nc2);
            i.wh_relation_metric.push(r.nc3);
            i.whb_relation_metric.push(r.nc4);
            i.nc2_class_means.push(r.nc2_h);
            i.train_acc1.push(r.train_acc1);
            i.train_acc5.push(r.train_acc5);
            i.test_acc1.push(r.test_acc1);
            i.test_acc5.push(r.test_acc5);
        }
        i
    }
}

/// CSV with a header and one row per epoch.
pub fn to_csv(rows: &[EpochMetrics]) -> String {
    let mut s =
        String::from("epoch,nc1,nc2,nc2_h,nc3,nc4,train_acc1,train_acc5,test_acc1,test_acc5\n");
    for r in rows {
        s += &format!(
            "{},{:e},{:e},{:e},{:e},{:e},{},{},{},{}\n",
            r.epoch,
            r.nc1,
            r.nc2,
            r.nc2_h,
            r.nc3,
            r.nc4,
            r.train_acc1,
            r.train_acc5,
            r.test_acc1,
            r.test_acc5
        );
    }
    s
}

/// Validates every checkpoint of `run_dir` (or those in `epochs`), writing `info.json` and
/// `nc_metrics.csv` into the run directory. `data_dir` overrides the saved one.
pub fn validate_run(
    run_dir: &Path,
    data_dir: Option<&Path>,
    batch_size: usize,
    on_epoch: impl FnMut(&EpochMetrics),
) -> Result<Vec<EpochMetrics>> {
    validate_run_on(run_dir, data_dir, batch_size, &NnDevice::cpu(), on_epoch)
}

/// [`validate_run`] on `device`: on CUDA the features are extracted by the GPU network and
/// their class statistics accumulated on the GPU
/// ([`Backend::class_stats`](crate::backend::Backend::class_stats)); the metrics are the same.
pub fn validate_run_on(
    run_dir: &Path,
    data_dir: Option<&Path>,
    batch_size: usize,
    device: &NnDevice,
    mut on_epoch: impl FnMut(&EpochMetrics),
) -> Result<Vec<EpochMetrics>> {
    let mut cfg = read_config(run_dir)?;
    if let Some(d) = data_dir {
        cfg.data_dir = d.to_path_buf();
    }
    let epochs = list_checkpoints(run_dir)?;
    if epochs.is_empty() {
        return Err(Error::Data(format!(
            "no epoch_NNN.safetensors checkpoints in {}",
            run_dir.display()
        )));
    }
    let d = cfg.load_data(run_dir)?;
    let idx = cfg.train_indices(&d)?;
    let mut net: Net<f32> = Net::new(&cfg.model, cfg.seed)?;
    let mut rows = Vec::new();
    #[cfg(feature = "cuda")]
    let mut gpu = match device {
        NnDevice::Cuda(b) => Some(crate::nn::cuda::CudaEval::new(b, &cfg.model)?),
        NnDevice::Cpu { .. } => None,
    };
    for e in epochs {
        #[cfg(feature = "cuda")]
        let r = match gpu.as_mut() {
            Some(ev) => {
                Checkpoint::open(&checkpoint_path(run_dir, e))?.load_into(&mut net)?;
                let (fs, tr, te) = ev.checkpoint_stats(&mut net, &d, &idx, batch_size)?;
                epoch_metrics(e, &fs, &net, tr, te)?
            }
            None => validate_checkpoint(run_dir, e, &mut net, &d, &idx, batch_size)?,
        };
        #[cfg(not(feature = "cuda"))]
        let r = {
            let _ = device;
            validate_checkpoint(run_dir, e, &mut net, &d, &idx, batch_size)?
        };
        on_epoch(&r);
        rows.push(r);
        crate::io::write_atomic(
            &run_dir.join("info.json"),
            serde_json::to_string_pretty(&Info::from_rows(&rows))?.as_bytes(),
        )?;
        crate::io::write_atomic(&run_dir.join("nc_metrics.csv"), to_csv(&rows).as_bytes())?;
    }
    Ok(rows)
}

/// Reads the `info.json` written by [`validate_run`] (`null` entries become NaN); every list
/// must have one entry per epoch.
pub fn read_info(run_dir: &Path) -> Result<Info> {
    let p = run_dir.join("info.json");
    let s = std::fs::read_to_string(&p).map_err(|e| Error::io("read", &p, e))?;
    let info: Info = serde_json::from_str(&s).map_err(|e| {
        Error::format(
            &p,
            format!("not a ufm validate info.json ({e}); run `ufm validate --run DIR` first"),
        )
    })?;
    let n = info.epoch.len();
    for (name, v) in [
        ("collapse_metric", &info.collapse_metric),
        ("ETF_metric", &info.etf_metric),
        ("WH_relation_metric", &info.wh_relation_metric),
        ("Wh_b_relation_metric", &info.whb_relation_metric),
        ("nc2_class_means", &info.nc2_class_means),
        ("train_acc1", &info.train_acc1),
        ("train_acc5", &info.train_acc5),
        ("test_acc1", &info.test_acc1),
        ("test_acc5", &info.test_acc5),
    ] {
        if v.len() != n {
            return Err(Error::format(
                &p,
                format!("`{name}` has {} entries but `epoch` has {n}", v.len()),
            ));
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, nc4: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            nc1: 1.0 / epoch as f64,
            nc2: 0.5,
            nc2_h: 0.25,
            nc3: f64::INFINITY,
            nc4,
            train_acc1: 90.0,
            train_acc5: 99.0,
            test_acc1: 89.0,
            test_acc5: 98.0,
        }
    }

    /// NaN and Inf are written as `null` and read back as NaN (a missing point); every
    /// finite value round-trips exactly; lists of another length are refused by name.
    #[test]
    fn info_json_with_nan_round_trips_through_read_info() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [row(1, f64::NAN), row(2, 0.125)];
        let json = serde_json::to_string_pretty(&Info::from_rows(&rows)).unwrap();
        assert!(json.contains("null"), "{json}");
        std::fs::write(dir.path().join("info.json"), &json).unwrap();
        let back = read_info(dir.path()).unwrap();
        assert_eq!(back.epoch, vec![1, 2]);
        assert!(back.whb_relation_metric[0].is_nan());
        assert_eq!(back.whb_relation_metric[1], 0.125);
        assert!(back.wh_relation_metric.iter().all(|v| v.is_nan()));
        assert_eq!(back.collapse_metric, vec![1.0, 0.5]);
        assert_eq!(back.test_acc1, vec![89.0, 89.0]);
        let bad = json.replacen("\"test_acc5\": [\n    98.0,", "\"test_acc5\": [", 1);
        assert_ne!(bad, json);
        std::fs::write(dir.path().join("info.json"), &bad).unwrap();
        let e = read_info(dir.path()).unwrap_err().to_string();
        assert!(e.contains("test_acc5") && e.contains("1 entries"), "{e}");
    }
}
