//! Claim: hostile or absurd input to the `ufm` binary gives a clear error (exit code 1,
//! `Error: ...` naming the flag or file) and never a panic, an allocation abort or a hang;
//! figures are written atomically; `ufm validate` → `ufm plot` round-trips undefined metrics;
//! one `ufm train` at a time uses a run directory, and `--resume` checks every saved tensor.
//!
//! Training tests use a small synthetic MNIST (generated IDX files), so they need no data set.
//! Every command runs under a 120 s timeout: a hang fails the test instead of stalling it.

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn ufm() -> Command {
    let mut c = Command::cargo_bin("ufm").unwrap();
    c.timeout(Duration::from_secs(120));
    // memory checks compare against a fixed limit, so the results do not depend on the machine
    c.env("UFM_MAX_MEMORY", "4G");
    c
}

/// Runs `cmd`, expects exit code 1 with an `Error:` line (not a panic, an abort or a
/// timeout), and returns stderr.
fn fails(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("the command finishes within its timeout");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains("Error: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

/// Runs `cmd`, expects success, returns (stdout, stderr).
fn succeeds(cmd: &mut Command) -> (String, String) {
    let out = cmd
        .output()
        .expect("the command finishes within its timeout");
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "stdout: {o}\nstderr: {e}");
    (o, e)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn time_limit_nan_or_negative_is_an_error_and_inf_means_no_limit() {
    for v in ["nan", "NaN", "-1", "-inf"] {
        let e = fails(ufm().args(["solve", &format!("--time-limit={v}")]));
        assert!(e.contains("`time-limit`") && e.contains(">= 0"), "{v}: {e}");
    }
    let e = fails(ufm().args(["certify", "--time-limit=nan", "--classes", "3"]));
    assert!(e.contains("`time-limit`"), "{e}");
    let (out, _) = succeeds(ufm().args([
        "solve",
        "--classes",
        "3",
        "--per-class",
        "2",
        "--dim",
        "3",
        "--time-limit",
        "inf",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["report"]["converged"], true, "{out}");
    // 1e30 s is beyond Duration's range: also no limit, not a panic
    succeeds(ufm().args([
        "solve",
        "--classes",
        "3",
        "--per-class",
        "2",
        "--time-limit",
        "1e30",
    ]));
}

#[test]
fn class_counts_near_u64_max_are_errors_naming_the_sizes() {
    let max = u64::MAX.to_string();
    let e = fails(ufm().args(["solve", "--classes", &max, "--per-class", "2"]));
    assert!(e.contains("`classes`") && e.contains(&max), "{e}");
    let e = fails(ufm().args(["solve", "--classes", "10", "--per-class", &max]));
    assert!(e.contains("`per-class`") && e.contains("overflows"), "{e}");
    let e = fails(ufm().args(["solve", "--class-sizes", &format!("{max},5")]));
    assert!(
        e.contains("`class-sizes`") && e.contains("overflows"),
        "{e}"
    );
    // fits in 64 bits but not in memory: the estimate and the limit are named
    let e = fails(ufm().args(["solve", "--classes", "4294967295", "--per-class", "2"]));
    assert!(
        e.contains("K = 4294967295") && e.contains("needs at least") && e.contains("4.0 GiB"),
        "{e}"
    );
    let e = fails(ufm().args([
        "solve",
        "--classes",
        "100000",
        "--per-class",
        "100000",
        "--dim",
        "1000",
    ]));
    assert!(
        e.contains("needs at least") && e.contains("UFM_MAX_MEMORY"),
        "{e}"
    );
    // every subcommand that builds a problem goes through the same check
    for sub in ["hessian", "saddles", "certify", "landscape"] {
        let e = fails(ufm().args([sub, "--classes", &max, "--per-class", "2"]));
        assert!(e.contains("`classes`"), "{sub}: {e}");
    }
    // `landscape --classes 0` used to underflow computing its default dims
    let e = fails(ufm().args(["landscape", "--classes", "0"]));
    assert!(e.contains("`classes`"), "{e}");
    let e = fails(ufm().args(["landscape", "--classes", "3", "--trials", &max]));
    assert!(e.contains("`trials`") && e.contains("more than"), "{e}");
}

#[test]
fn shard_flags_and_malformed_shard_files_are_errors() {
    for s in ["2/2", "0/0", "x/2", "1", "5/3", "-1/2"] {
        let e = fails(ufm().args(["landscape", "--classes", "3", &format!("--shard={s}")]));
        assert!(e.contains("--shard"), "{s}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sweep = [
        "landscape",
        "--classes",
        "3",
        "--per-class",
        "2",
        "--dims",
        "2",
        "--lambdas",
        "1e-2",
        "--trials",
        "2",
    ];
    for i in 0..2 {
        succeeds(
            ufm()
                .args(sweep)
                .arg(format!("--shard={i}/2"))
                .arg("--out")
                .arg(&out),
        );
    }
    let shard = |i: usize| out.join(format!("trials-shard-{i}-of-2.json"));
    let merged = dir.path().join("merged");
    succeeds(
        ufm()
            .args(["landscape", "merge"])
            .arg(shard(0))
            .arg(shard(1))
            .arg("--out")
            .arg(&merged),
    );
    let text = std::fs::read_to_string(shard(1)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (key, val, want) in [
        ("shard", 7u64, "below the shard count"),
        ("n_shards", 0, "shard count"),
        ("shard", u64::MAX, "below the shard count"),
    ] {
        let mut w = v.clone();
        w[key] = val.into();
        let bad = dir.path().join(format!("bad-{key}-{val}.json"));
        std::fs::write(&bad, serde_json::to_string(&w).unwrap()).unwrap();
        let files: Vec<PathBuf> = if key == "n_shards" {
            vec![bad]
        } else {
            vec![shard(0), bad]
        };
        let e = fails(
            ufm()
                .args(["landscape", "merge"])
                .args(&files)
                .arg("--out")
                .arg(&merged),
        );
        assert!(e.contains(want), "{key}={val}: {e}");
    }
    // rows of another shard's jobs
    v["rows"][0]["job"] = 0.into();
    let bad = dir.path().join("bad-rows.json");
    std::fs::write(&bad, serde_json::to_string(&v).unwrap()).unwrap();
    let e = fails(
        ufm()
            .args(["landscape", "merge"])
            .arg(shard(0))
            .arg(&bad)
            .arg("--out")
            .arg(&merged),
    );
    assert!(e.contains("exactly its jobs"), "{e}");
}

/// Writes a small MNIST (`n` training and 20 test images, labels i mod 10) as uncompressed
/// IDX files under `<dir>/MNIST/raw/`.
fn synthetic_mnist(dir: &Path, n: usize) {
    let raw = dir.join("MNIST/raw");
    std::fs::create_dir_all(&raw).unwrap();
    for (prefix, n) in [("train", n), ("t10k", 20)] {
        let mut im = vec![];
        for v in [2051u32, n as u32, 28, 28] {
            im.extend_from_slice(&v.to_be_bytes());
        }
        im.extend((0..n * 784).map(|j| ((j * 7 + (j / 784) * 13) % 256) as u8));
        let mut lb = vec![];
        for v in [2049u32, n as u32] {
            lb.extend_from_slice(&v.to_be_bytes());
        }
        lb.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(raw.join(format!("{prefix}-images-idx3-ubyte")), im).unwrap();
        std::fs::write(raw.join(format!("{prefix}-labels-idx1-ubyte")), lb).unwrap();
    }
}

/// The flags of a tiny MLP run on the synthetic data (only `--epochs` and the mode vary).
fn tiny_run(data: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        "--dataset",
        "mnist",
        "--model",
        "mlp",
        "--width",
        "8",
        "--depth",
        "1",
        "--batch-size",
        "10",
        "--lr",
        "0.01",
        "--uid",
        "run",
        "--data-dir",
        data.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn absurd_model_sizes_and_configs_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let e = fails(ufm().args([
        "train",
        "--model",
        "mlp",
        "--width",
        "1000000000000",
        "--print-params",
    ]));
    assert!(e.contains("`width`") && e.contains("1000000000000"), "{e}");
    let max = u64::MAX.to_string();
    let e = fails(ufm().args([
        "train",
        "--model",
        "resnet18-adapt",
        "--width",
        &max,
        "--print-params",
    ]));
    assert!(e.contains("`width`") && e.contains("overflows"), "{e}");
    let e = fails(ufm().args([
        "train",
        "--model",
        "resnet18",
        "--fixdim",
        &max,
        "--print-params",
    ]));
    assert!(e.contains("`fixdim`"), "{e}");
    // a training run is refused before its data are read
    let e = fails(
        ufm()
            .args([
                "train",
                "--model",
                "mlp",
                "--depth",
                "1",
                "--width",
                "1000000000000",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("nowhere"))
            .arg("--out-dir")
            .arg(dir.path()),
    );
    assert!(e.contains("`width`"), "{e}");
    // --sample-size near u64::MAX: an error naming the class, not a capacity overflow
    let data = dir.path().join("data");
    synthetic_mnist(&data, 40);
    let out = dir.path().join("runs");
    let e = fails(
        ufm()
            .args(tiny_run(&data, &out))
            .args(["--epochs", "1", "--sample-size", &max]),
    );
    assert!(
        e.contains("`sample-size`") && e.contains("fewer than"),
        "{e}"
    );
    // a config.json with absurd sizes (hand-edited, or from another tool) is refused by name
    succeeds(
        ufm()
            .args(tiny_run(&data, &out))
            .args(["--epochs", "1", "--force"]),
    );
    let cfg_path = out.join("run/config.json");
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["model"]["width"] = 1_000_000_000_000u64.into();
    std::fs::write(&cfg_path, serde_json::to_string(&v).unwrap()).unwrap();
    let e = fails(ufm().arg("validate").arg("--run").arg(out.join("run")));
    assert!(e.contains("config.json") && e.contains("`width`"), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["schedule"] = serde_json::json!({"Step": {"step": 0, "gamma": 0.1}});
    std::fs::write(&cfg_path, serde_json::to_string(&v).unwrap()).unwrap();
    let e = fails(ufm().arg("validate").arg("--run").arg(out.join("run")));
    assert!(e.contains("config.json") && e.contains("`patience`"), "{e}");
}

#[test]
fn uid_must_be_a_single_folder_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for uid in ["../x", "", "/tmp/abs", "a/b", ".", "..", "a\\b"] {
        let e = fails(
            ufm()
                .args(["train", "--model", "mlp", "--uid", uid])
                .arg("--out-dir")
                .arg(&out),
        );
        assert!(e.contains("`uid`"), "{uid:?}: {e}");
    }
    assert_eq!(listing(dir.path()), Vec::<String>::new(), "nothing created");
}

fn rows(nc1: &[f64]) -> ufm::nn::validate::Info {
    let r: Vec<ufm::nn::validate::EpochMetrics> = nc1
        .iter()
        .enumerate()
        .map(|(i, &v)| ufm::nn::validate::EpochMetrics {
            epoch: i + 1,
            nc1: v,
            nc2: 0.5,
            nc2_h: 0.5,
            nc3: f64::NAN,
            nc4: if i == 0 { f64::NAN } else { 1e-3 },
            train_acc1: 100.0,
            train_acc5: 100.0,
            test_acc1: if i == 1 { f64::NAN } else { 90.0 },
            test_acc5: 99.0,
        })
        .collect();
    ufm::nn::validate::Info::from_rows(&r)
}

/// `ufm plot` reads the `null`s `ufm validate` writes for undefined metrics, and draws
/// values that used to hang plotters (1e308, subnormals, 600 decades) quickly, with a note;
/// every file is written atomically (no temporaries; a planted symbolic link at an output
/// name is replaced, its target untouched).
#[test]
fn plot_reads_nulls_and_draws_extreme_values_quickly_and_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let figs = dir.path().join("figs");
    let cases: [&[f64]; 4] = [
        &[1.0, 0.5, 0.25],
        &[1e308, 1.0, f64::MAX],
        &[5e-324, 1e-310, 1.0],
        &[1e-300, 1e300, 1.0],
    ];
    std::fs::create_dir_all(&figs).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&victim, figs.join("c0-NC1.png")).unwrap();
    for (i, nc1) in cases.iter().enumerate() {
        let run = dir.path().join(format!("run{i}"));
        std::fs::create_dir_all(&run).unwrap();
        let json = serde_json::to_string_pretty(&rows(nc1)).unwrap();
        assert!(json.contains("null"));
        std::fs::write(run.join("info.json"), json).unwrap();
        let t0 = Instant::now();
        let (_, err) = succeeds(
            ufm()
                .arg("plot")
                .arg("--run")
                .arg(&run)
                .arg("--out")
                .arg(&figs)
                .args(["--prefix", &format!("c{i}")]),
        );
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "case {i}: {:?}",
            t0.elapsed()
        );
        if i > 0 {
            assert!(err.contains("note: NC1"), "case {i}: {err}");
        }
        // NC3 is undefined (null) at every epoch: no figure, a note
        assert!(
            err.contains("note: NC3: no defined values"),
            "case {i}: {err}"
        );
    }
    let files = listing(&figs);
    assert_eq!(files.len(), 4 * 10, "{files:?}");
    assert!(files.iter().all(|f| !f.starts_with('.')), "{files:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let png = std::fs::read(figs.join("c0-NC1.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn certify_figure_and_landscape_replot_draw_extreme_values_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("imb.csv");
    let header = "ratio,n_minor,objective,lower_bound,rank,cos_major,cos_minor,cos_cross,w_norm_major,w_norm_minor,mean_norm_major,mean_norm_minor";
    std::fs::write(
        &csv,
        format!(
            "{header}\n1,10,1,1,4,-0.3,-0.3,-0.3,5e-324,1,1,1\n10,1,1e308,1,4,1e308,-1e308,0,1e308,1e-300,1,1\n1e300,1,1,1,4,0.1,0.2,nan,1,1,inf,1\n"
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    succeeds(
        ufm()
            .args(["certify", "figure", "--from-csv"])
            .arg(&csv)
            .arg("--out")
            .arg(dir.path().join("imb")),
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
    let d = dir.path().join("land");
    std::fs::create_dir_all(&d).unwrap();
    for opt in ["gd", "lbfgs", "newton"] {
        std::fs::write(
            d.join(format!("convergence_{opt}.csv")),
            "iter,gap,grad_norm,nc1\n0,1e308,5e-324,1\n1,1e-300,1e300,0\n2,0,-1,nan\n",
        )
        .unwrap();
    }
    std::fs::write(
        d.join("spectra.csv"),
        "point,index,eigenvalue\nglobal-min,0,1e308\nglobal-min,1,5e-324\nsaddle,0,-1e300\nsaddle,1,0\n",
    )
    .unwrap();
    std::fs::write(d.join("spectra.json"), "{\"points\": []}").unwrap();
    std::fs::write(
        d.join("summary.csv"),
        "d,lambda,optimizer,success_fraction,reference_source\n2,1e-3,gd,0.5,closed-form\n3,1e308,gd,1e308,empirical\n",
    )
    .unwrap();
    let t0 = Instant::now();
    succeeds(
        ufm()
            .args(["landscape", "figures", "--replot", "--out"])
            .arg(&d),
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
    // a spectra.csv without the expected columns is an error, not an index panic
    std::fs::write(d.join("spectra.csv"), "point\nglobal-min\n").unwrap();
    let e = fails(
        ufm()
            .args(["landscape", "figures", "--replot", "--out"])
            .arg(&d),
    );
    assert!(e.contains("point,index,eigenvalue"), "{e}");
}

#[test]
fn out_of_range_counts_are_rejected_by_the_parser() {
    for args in [
        vec!["metrics", "x.npz", "--threads", "100000000000"],
        vec!["metrics", "x.npz", "--threads", "0"],
        vec!["certify", "figure", "--points", "100000000000"],
        vec!["certify", "figure", "--points", "1"],
    ] {
        let out = ufm().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("invalid value") && !err.contains("panicked"),
            "{err}"
        );
    }
}

/// A tensor of a safetensors file: name, dtype, shape, bytes.
type Tensor = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// Rewrites a safetensors file through `edit`, keeping its metadata.
fn rewrite_safetensors(path: &Path, edit: impl FnOnce(&mut Vec<Tensor>)) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = meta.metadata().clone();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    edit(&mut v);
    let views: Vec<_> = v
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, md).unwrap()).unwrap();
}

/// `--resume` checks every optimizer tensor against the model: another shape, another dtype
/// or a missing buffer is an error naming the tensor (never a panic, never a silent reset);
/// the untouched file resumes.
#[test]
fn resume_with_a_bad_optimizer_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_mnist(&data, 40);
    let out = dir.path().join("runs");
    let run = tiny_run(&data, &out);
    succeeds(ufm().args(&run).args(["--epochs", "1"]));
    let resume = out.join("run/resume.safetensors");
    let good = std::fs::read(&resume).unwrap();
    const NAME: &str = "optim.0.momentum_buffer";
    let name = NAME;
    type Edit = Box<dyn Fn(&mut Vec<Tensor>)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "shape [3072, 8]",
            Box::new(|v: &mut Vec<Tensor>| {
                let t = v.iter_mut().find(|t| t.0 == NAME).unwrap();
                t.2 = vec![t.2[1], t.2[0]];
            }),
        ),
        (
            "expected F32",
            Box::new(|v: &mut Vec<Tensor>| {
                let t = v.iter_mut().find(|t| t.0 == NAME).unwrap();
                t.1 = safetensors::Dtype::I32;
            }),
        ),
        (
            "is missing after",
            Box::new(|v: &mut Vec<Tensor>| {
                v.retain(|t| t.0 != NAME);
            }),
        ),
    ];
    for (want, edit) in cases {
        std::fs::write(&resume, &good).unwrap();
        rewrite_safetensors(&resume, |v| edit(v));
        let e = fails(ufm().args(&run).args(["--epochs", "2", "--resume"]));
        assert!(e.contains(name) && e.contains(want), "{want}: {e}");
        assert!(e.contains("resume.safetensors"), "{e}");
    }
    std::fs::write(&resume, &good).unwrap();
    succeeds(ufm().args(&run).args(["--epochs", "2", "--resume"]));
    assert!(out.join("run/epoch_002.safetensors").is_file());
}

/// While one `ufm train` uses a run directory, a second one (with `--force` or `--resume`)
/// is refused with the first one's pid; once the first is killed (SIGKILL: no clean-up runs)
/// the directory is free again.
#[test]
fn a_run_directory_is_used_by_one_train_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_mnist(&data, 40);
    let out = dir.path().join("runs");
    let run = tiny_run(&data, &out);
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("ufm"))
        .args(&run)
        .args(["--epochs", "1000000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id();
    let lock = out.join("run/.ufm.lock");
    let t0 = Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim() != pid.to_string()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the first run never locked"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for mode in ["--force", "--resume"] {
        let e = fails(ufm().args(&run).args(["--epochs", "2", mode]));
        assert!(
            e.contains("another `ufm train`") && e.contains(&format!("pid {pid}")),
            "{mode}: {e}"
        );
    }
    first.kill().unwrap();
    first.wait().unwrap();
    succeeds(ufm().args(&run).args(["--epochs", "1", "--force"]));
    assert!(out.join("run/epoch_001.safetensors").is_file());
}

/// `ufm metrics` with K far beyond the number of samples (from --classes or from one huge
/// label) is an error before the K x d statistics are allocated.
#[test]
fn metrics_with_more_classes_than_samples_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.npy");
    let l = dir.path().join("l.npy");
    ndarray_npy::write_npy(&f, &ndarray::Array2::<f64>::from_elem((6, 3), 1.0)).unwrap();
    let labels = ndarray::arr1(&[0i64, 1, 2, 0, 1, 2]);
    ndarray_npy::write_npy(&l, &labels).unwrap();
    let e = fails(
        ufm()
            .arg("metrics")
            .arg("--features")
            .arg(&f)
            .arg("--labels")
            .arg(&l)
            .args(["--classes", &u64::MAX.to_string()]),
    );
    assert!(
        e.contains("--classes") && e.contains("only 6 samples"),
        "{e}"
    );
    ndarray_npy::write_npy(&l, &ndarray::arr1(&[0i64, 1, 2, 0, 1, 4_000_000_000])).unwrap();
    let e = fails(
        ufm()
            .arg("metrics")
            .arg("--features")
            .arg(&f)
            .arg("--labels")
            .arg(&l),
    );
    assert!(
        e.contains("4000000000") && e.contains("only 6 samples"),
        "{e}"
    );
}
