//! `ufm metrics`: neural-collapse metrics of features from any network.

use crate::cmd_solve::DeviceArg;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;
use std::path::{Path, PathBuf};
use ufm::features::{self, FeatureSource, Inputs};
use ufm::metrics::{compute_metrics, GlobalMean, Metric, MetricsConfig, MetricsReport, Strategy};

/// Arguments of `ufm metrics`.
#[derive(Args, Debug)]
#[command(
    after_help = "Inputs: either bundles FILE.npz / FILE.safetensors holding `features` (N x d) \
or `H` (d x N, as `ufm solve --save` writes), `labels`, and optionally `W`, `b`, `test_features`, \
`test_labels`; or --features F.npy --labels L.npy [--weights W.npy --bias b.npy]. .npy and \
.safetensors features are streamed, so files larger than memory work.\n\
Several bundles (e.g. one per epoch checkpoint) give one CSV row each.\n\
A test split (--test-features/--test-labels, or `test_*` arrays) is reported separately: every \
metric is computed from the test split alone (its own class means, as Papyan-style analyses of \
the test loader do; the original code reports no NC metric on test data), with K from the train split.\n\
Examples:\n  ufm metrics run.npz\n  ufm metrics --features H.npy --labels y.npy --weights W.npy --json\n  \
ufm metrics ckpt_*.npz --csv nc.csv\n  ufm metrics run.npz --metrics nc1,nc2_w --global-mean class-mean"
)]
pub struct MetricsArgs {
    /// Bundles (.npz or .safetensors); one result per file.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Features (N x d) as .npy (f32/f64, C or Fortran order; streamed), or a bundle.
    #[arg(long, value_name = "F.npy")]
    pub features: Option<PathBuf>,
    /// Labels (N integers in 0..K-1) as .npy.
    #[arg(long, value_name = "L.npy")]
    pub labels: Option<PathBuf>,
    /// Classifier W (K x d) as .npy; with bundles, replaces their W.
    #[arg(long, value_name = "W.npy")]
    pub weights: Option<PathBuf>,
    /// Bias b (K) as .npy; with bundles, replaces their b.
    #[arg(long, value_name = "b.npy")]
    pub bias: Option<PathBuf>,
    /// Test-split features (.npy); metrics reported separately, from the test split's own statistics.
    #[arg(long, value_name = "F.npy", requires = "test_labels")]
    pub test_features: Option<PathBuf>,
    /// Test-split labels (.npy).
    #[arg(long, value_name = "L.npy", requires = "test_features")]
    pub test_labels: Option<PathBuf>,
    /// Number of classes K (default: the largest label + 1). Every class needs a sample.
    #[arg(long)]
    pub classes: Option<usize>,
    /// Comma-separated metrics (default: all the inputs allow). See --list-metrics.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Option<Vec<String>>,
    /// Global mean: weighted (sample mean, original code) or class-mean (mean of class means, Papyan).
    #[arg(long, default_value = "weighted")]
    pub global_mean: String,
    /// Relative rank tolerance of the pseudo-inverse in nc1 and nc1_papyan (default
    /// max(d,K)·eps, as scipy pinv).
    #[arg(long)]
    pub rtol: Option<f64>,
    /// How NC1 gets Sigma_W: auto, one-pass (d x d scatter), two-pass (K x K projection).
    #[arg(long, default_value = "auto")]
    pub strategy: String,
    /// Rows per chunk read from disk (0: about 16 MiB per chunk).
    #[arg(long, default_value_t = 0)]
    pub chunk_rows: usize,
    /// Keep features of up to this many MiB in memory between the two passes instead of
    /// reading the file again (0: always stream, memory O(d^2 + Kd) plus one chunk).
    #[arg(long, default_value_t = 1024)]
    pub cache_mib: usize,
    /// Where the class statistics are accumulated: cpu (default), cuda (GPU 0: counts, means
    /// and the d x d scatter with f64 accumulation; needs in-memory or memory-mapped
    /// features), or auto (cuda when usable, else the cpu with a note).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Stream .npy/.safetensors features with chunked reads instead of mapping them into
    /// memory (use it when another program may rewrite the file during the run).
    #[arg(long)]
    pub no_mmap: bool,
    /// Worker threads, 1 to 4096 (default: all cores, or RAYON_NUM_THREADS).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub threads: Option<u16>,
    /// Print one JSON object (an array for several files).
    #[arg(long)]
    pub json: bool,
    /// Write one CSV row per file to PATH ('-' for stdout).
    #[arg(long, value_name = "PATH")]
    pub csv: Option<String>,
    /// Regression targets (N x n .npy): report NRC1-3 (Andriopoulos et al. 2024) of --features
    /// (N x d .npy, or one bundle FILE.npz) and --weights (n x d) instead of NC metrics.
    #[arg(long, value_name = "Y.npy")]
    pub targets: Option<PathBuf>,
    /// List the metric names with their definitions and exit.
    #[arg(long)]
    pub list_metrics: bool,
}

struct Run {
    name: String,
    train: MetricsReport,
    test: Option<MetricsReport>,
}

pub fn run(args: MetricsArgs) -> Result<()> {
    if let Some(t) = &args.targets {
        if args.files.len() > 1 {
            bail!(
                "--targets takes one bundle FILE.npz or --features, not {} files",
                args.files.len()
            );
        }
        let bundle = args.files.first().map(PathBuf::as_path);
        let (f, w) = (args.features.as_deref(), args.weights.as_deref());
        return crate::cmd_regress::metrics_from_files(Some(t), f, bundle, w, None, args.json);
    }
    if args.list_metrics {
        for m in Metric::ALL {
            println!("{:<16} {}", m.name(), m.description());
        }
        return Ok(());
    }
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(t))
            .build_global()
            .context("setting up the thread pool")?;
    }
    let cfg = MetricsConfig {
        metrics: match &args.metrics {
            Some(ms) => Some(
                ms.iter()
                    .map(|m| m.parse::<Metric>())
                    .collect::<ufm::Result<Vec<_>>>()?,
            ),
            None => None,
        },
        n_classes: args.classes,
        global_mean: args.global_mean.parse::<GlobalMean>()?,
        rtol: args.rtol,
        strategy: args.strategy.parse::<Strategy>()?,
        chunk_rows: args.chunk_rows,
        cache_bytes: args.cache_mib.saturating_mul(1 << 20),
        device: args.device.into(),
    };
    let w = match &args.weights {
        Some(p) => Some(features::read_matrix(p)?),
        None => None,
    };
    let b = match &args.bias {
        Some(p) => Some(features::read_vector(p)?),
        None => None,
    };
    let mut runs = Vec::new();
    if let Some(fp) = &args.features {
        if !args.files.is_empty() {
            bail!("give either bundle FILEs or --features/--labels, not both");
        }
        let lp = args
            .labels
            .as_ref()
            .context("--features needs --labels L.npy")?;
        let inputs = Inputs {
            features: features::open_features(fp)?,
            labels: features::read_labels(lp)?,
            w: w.clone(),
            b: b.clone(),
            test: test_split(&args)?,
        };
        runs.push(evaluate(
            &fp.display().to_string(),
            inputs,
            &cfg,
            !args.no_mmap,
        )?);
    } else {
        if args.files.is_empty() {
            bail!("no input: give bundle FILEs (.npz/.safetensors) or --features F.npy --labels L.npy (see --help)");
        }
        if args.labels.is_some() {
            bail!("--labels goes with --features; bundles hold their own `labels`");
        }
        for path in &args.files {
            let mut inputs = features::open_bundle(path)?;
            if w.is_some() {
                inputs.w = w.clone();
            }
            if b.is_some() {
                inputs.b = b.clone();
            }
            if let Some(t) = test_split(&args)? {
                inputs.test = Some(t);
            }
            runs.push(evaluate(
                &path.display().to_string(),
                inputs,
                &cfg,
                !args.no_mmap,
            )?);
        }
    }
    // Notes from the library (e.g. `bias` left out without b), each said once.
    let mut said = std::collections::BTreeSet::new();
    for r in &runs {
        for n in r
            .train
            .notes
            .iter()
            .chain(r.test.iter().flat_map(|t| &t.notes))
        {
            if said.insert(n.as_str()) {
                eprintln!("note: {n}");
            }
        }
    }
    if let Some(r) = runs.first() {
        if r.train.n_classes_inferred && !args.json && args.csv.as_deref() != Some("-") {
            eprintln!(
                "note: K = {} inferred as the largest label + 1 (pass --classes to set it)",
                r.train.n_classes
            );
        }
    }
    if let Some(csv) = &args.csv {
        let text = csv_table(&runs);
        if csv == "-" {
            print!("{text}");
        } else {
            ufm::io::write_atomic(Path::new(csv), text.as_bytes())?;
            if !args.json {
                eprintln!("wrote {} row(s) to {csv}", runs.len());
            }
        }
        if !args.json {
            return Ok(());
        }
    }
    if args.json {
        let text = if runs.len() == 1 {
            serde_json::to_string_pretty(&RunJson {
                file: &runs[0].name,
                train: &runs[0].train,
                test: runs[0].test.as_ref(),
            })?
        } else {
            let vals: Vec<Value> = runs.iter().map(json_value).collect::<Result<_>>()?;
            serde_json::to_string_pretty(&vals)?
        };
        println!("{text}");
        return Ok(());
    }
    for (i, r) in runs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_table(r);
    }
    Ok(())
}

fn test_split(args: &MetricsArgs) -> Result<Option<(FeatureSource, Vec<u32>)>> {
    match (&args.test_features, &args.test_labels) {
        (Some(f), Some(l)) => Ok(Some((
            features::open_features(f)?,
            features::read_labels(l)?,
        ))),
        _ => Ok(None),
    }
}

fn evaluate(name: &str, mut inputs: Inputs, cfg: &MetricsConfig, mmap: bool) -> Result<Run> {
    inputs.features = inputs.features.with_mmap(mmap);
    if let Some((f, l)) = inputs.test.take() {
        inputs.test = Some((f.with_mmap(mmap), l));
    }
    let train = compute_metrics(
        &inputs.features,
        &inputs.labels,
        inputs.w.as_ref().map(|w| w.view()),
        inputs.b.as_ref().map(|b| b.view()),
        cfg,
    )
    .with_context(|| format!("computing metrics of {name}"))?;
    if let Some(why) = &train.device_note {
        eprintln!("note: --device auto: {why}; accumulating on the CPU");
    }
    let test = match &inputs.test {
        Some((f, l)) => {
            let tcfg = MetricsConfig {
                n_classes: Some(train.n_classes),
                ..cfg.clone()
            };
            Some(
                compute_metrics(
                    f,
                    l,
                    inputs.w.as_ref().map(|w| w.view()),
                    inputs.b.as_ref().map(|b| b.view()),
                    &tcfg,
                )
                .with_context(|| format!("computing test-split metrics of {name}"))?,
            )
        }
        None => None,
    };
    Ok(Run {
        name: name.to_string(),
        train,
        test,
    })
}

/// One run as JSON: the train report's keys (in report order), the file, and `test`.
#[derive(serde::Serialize)]
struct RunJson<'a> {
    file: &'a str,
    #[serde(flatten)]
    train: &'a MetricsReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    test: Option<&'a MetricsReport>,
}

fn json_value(r: &Run) -> Result<Value> {
    Ok(serde_json::to_value(RunJson {
        file: &r.name,
        train: &r.train,
        test: r.test.as_ref(),
    })?)
}

fn fmt_val(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else {
        format!("{v:.6e}")
    }
}

fn csv_table(runs: &[Run]) -> String {
    let cols: Vec<Metric> = Metric::ALL
        .iter()
        .copied()
        .filter(|&m| runs.iter().any(|r| r.train.get(m).is_some()))
        .collect();
    let tcols: Vec<Metric> = Metric::ALL
        .iter()
        .copied()
        .filter(|&m| {
            runs.iter()
                .any(|r| r.test.as_ref().and_then(|t| t.get(m)).is_some())
        })
        .collect();
    let mut out = String::from("file,n_classes,n_samples,feature_dim,class_counts");
    for m in &cols {
        out.push(',');
        out.push_str(m.name());
    }
    if !tcols.is_empty() {
        out.push_str(",test_n_samples");
    }
    for m in &tcols {
        out.push_str(",test_");
        out.push_str(m.name());
    }
    out.push('\n');
    let cell = |v: Option<f64>| v.map(|v| format!("{v:e}")).unwrap_or_default();
    for r in runs {
        let name = if r.name.contains([',', '"']) {
            format!("\"{}\"", r.name.replace('"', "\"\""))
        } else {
            r.name.clone()
        };
        let counts: Vec<String> = r.train.class_counts.iter().map(|c| c.to_string()).collect();
        out.push_str(&format!(
            "{name},{},{},{},{}",
            r.train.n_classes,
            r.train.n_samples,
            r.train.feature_dim,
            counts.join(" ")
        ));
        for &m in &cols {
            out.push(',');
            out.push_str(&cell(r.train.get(m)));
        }
        if !tcols.is_empty() {
            out.push(',');
            if let Some(t) = &r.test {
                out.push_str(&t.n_samples.to_string());
            }
        }
        for &m in &tcols {
            out.push(',');
            out.push_str(&cell(r.test.as_ref().and_then(|t| t.get(m))));
        }
        out.push('\n');
    }
    out
}

fn print_table(r: &Run) {
    let t = &r.train;
    println!(
        "{}: N = {} samples, d = {}, K = {}{}, global mean {}, {} pass(es) over the features on the CPU",
        r.name,
        t.n_samples,
        t.feature_dim,
        t.n_classes,
        if t.n_classes_inferred {
            " (largest label + 1)"
        } else {
            ""
        },
        match t.global_mean {
            GlobalMean::Weighted => "sample-weighted",
            GlobalMean::ClassMean => "mean of class means",
        },
        t.passes
    );
    if t.device != "cpu" {
        println!("class statistics accumulated on {}", t.device);
    }
    let counts = &t.class_counts;
    if counts.iter().all(|&c| c == counts[0]) {
        println!("class counts: {} per class", counts[0]);
    } else {
        let s: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
        println!("class counts: {}", s.join(" "));
    }
    if let Some(tt) = &r.test {
        println!("test split: N = {} samples", tt.n_samples);
        println!(
            "{:<16} {:>13} {:>13}  definition",
            "metric", "train", "test"
        );
    } else {
        println!("{:<16} {:>13}  definition", "metric", "value");
    }
    for &m in Metric::ALL {
        let Some(v) = t.get(m) else { continue };
        match &r.test {
            Some(tt) => println!(
                "{:<16} {:>13} {:>13}  {}",
                m.name(),
                fmt_val(v),
                tt.get(m).map(fmt_val).unwrap_or_else(|| "-".into()),
                m.description()
            ),
            None => println!("{:<16} {:>13}  {}", m.name(), fmt_val(v), m.description()),
        }
    }
}
