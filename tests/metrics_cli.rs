//! End-to-end tests of `ufm metrics`: JSON keys, CSV rows, error messages, and agreement with
//! the metrics `ufm solve` reports for the solution it saves.

use assert_cmd::Command;
use ndarray::{Array1, Array2};
use ndarray_npy::write_npy;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn ufm() -> Command {
    Command::cargo_bin("ufm").unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name)
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

#[test]
fn json_has_every_metric_key() {
    let out = ufm()
        .args(["metrics", "--json"])
        .arg(fixture("bundle.npz"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    for key in [
        "nc1",
        "nc1_papyan",
        "nc1_trace_ratio",
        "cdnv",
        "nc2_w",
        "nc2_w_centered",
        "nc2_h",
        "equinorm_h",
        "equinorm_w",
        "equiangular_h",
        "equiangular_w",
        "nc3",
        "nc3_papyan",
        "bias",
        "ncc_agreement",
        "n_classes",
        "n_samples",
        "feature_dim",
        "class_counts",
    ] {
        assert!(v.get(key).is_some(), "missing key {key} in {v}");
    }
    assert_eq!(v["n_samples"], 23);
    assert_eq!(v["class_counts"].as_array().unwrap().len(), 4);
}

#[test]
fn npy_inputs_and_bundles_give_the_same_numbers() {
    let a = ufm()
        .args(["metrics", "--json", "--features"])
        .arg(fixture("h_f32_f.npy"))
        .arg("--labels")
        .arg(fixture("y_i32.npy"))
        .arg("--weights")
        .arg(fixture("w_f64_f.npy"))
        .arg("--bias")
        .arg(fixture("b_f64.npy"))
        .output()
        .unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = ufm()
        .args(["metrics", "--json"])
        .arg(fixture("bundle.safetensors"))
        .output()
        .unwrap();
    // The same C-order file read through the memory map (default) and by chunked reads.
    let mapped = |extra: &[&str]| {
        let o = ufm()
            .args(["metrics", "--json", "--features"])
            .arg(fixture("h_f32_c.npy"))
            .arg("--labels")
            .arg(fixture("y_i32.npy"))
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        json(&o.stdout)
    };
    assert_eq!(mapped(&[]), mapped(&["--no-mmap", "--chunk-rows", "7"]));
    let (a, b) = (json(&a.stdout), json(&b.stdout));
    for key in ["nc1", "nc2_w", "nc3", "bias", "cdnv", "ncc_agreement"] {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-12 * x.abs(), "{key}: {x} vs {y}");
    }
}

#[test]
fn several_files_give_one_csv_row_each() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("nc.csv");
    ufm()
        .args(["metrics", "--metrics", "nc1,nc2_w,ncc_agreement", "--csv"])
        .arg(&csv)
        .arg(fixture("bundle.npz"))
        .arg(fixture("bundle_h_dxn.npz"))
        .arg(fixture("bundle.safetensors"))
        .assert()
        .success();
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "file,n_classes,n_samples,feature_dim,class_counts,nc1,nc2_w,ncc_agreement"
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[2].contains("bundle_h_dxn.npz,4,23,6,"));
}

#[test]
fn readable_table_names_the_metrics() {
    ufm()
        .arg("metrics")
        .arg(fixture("bundle.npz"))
        .assert()
        .success()
        .stdout(predicate::str::contains("nc1_trace_ratio"))
        .stdout(predicate::str::contains("N = 23 samples, d = 6, K = 4"))
        .stderr(predicate::str::contains(
            "inferred as the largest label + 1",
        ));
}

#[test]
fn test_split_is_reported_separately() {
    let out = ufm()
        .args(["metrics", "--json", "--metrics", "nc1,cdnv"])
        .arg(fixture("bundle.npz"))
        .arg("--test-features")
        .arg(fixture("h_f64_c.npy"))
        .arg("--test-labels")
        .arg(fixture("y_i64.npy"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    // Same data as the train split (f64 vs f32 of exactly representable values).
    assert_eq!(v["test"]["nc1"], v["nc1"]);
    assert_eq!(v["test"]["n_samples"], 23);
}

fn write_case(dir: &Path, h: &Array2<f64>, y: &[i64]) -> (PathBuf, PathBuf) {
    let (hp, yp) = (dir.join("h.npy"), dir.join("y.npy"));
    write_npy(&hp, h).unwrap();
    write_npy(&yp, &Array1::from(y.to_vec())).unwrap();
    (hp, yp)
}

fn metrics_err(args: &[&str], hp: &Path, yp: &Path) -> String {
    let out = ufm()
        .arg("metrics")
        .args(args)
        .arg("--features")
        .arg(hp)
        .arg("--labels")
        .arg(yp)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "expected failure");
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(e.starts_with("Error: "), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let h = Array2::from_shape_fn((6, 3), |(i, j)| (i * 3 + j) as f64);
    let (hp, yp) = write_case(dir.path(), &h, &[0, 1, 2, 0, 1, 2]);
    // Label outside 0..K-1.
    let e = metrics_err(&["--classes", "2"], &hp, &yp);
    assert!(e.contains("label 2") && e.contains("outside 0..2"), "{e}");
    // Empty class.
    let e = metrics_err(&["--classes", "4"], &hp, &yp);
    assert!(e.contains("[3] have no samples"), "{e}");
    // Length mismatch.
    let (_, yp5) = write_case(dir.path(), &h, &[0, 1, 2, 0, 1]);
    let e = metrics_err(&[], &hp, &yp5);
    assert!(
        e.contains("one per feature row") && e.contains("h.npy"),
        "{e}"
    );
    // NaN in row 4, named with the file.
    let mut hn = h.clone();
    hn[[4, 2]] = f64::NAN;
    let (hp, yp) = write_case(dir.path(), &hn, &[0, 1, 2, 0, 1, 2]);
    let e = metrics_err(&["--chunk-rows", "2"], &hp, &yp);
    assert!(e.contains("feature row 4") && e.contains("h.npy"), "{e}");
    // Truncated and corrupt files.
    let e = metrics_err(&[], &fixture("truncated.npy"), &fixture("y_i64.npy"));
    assert!(
        e.contains("truncated.npy") && e.contains("truncated"),
        "{e}"
    );
    let e = metrics_err(&[], &fixture("not_npy.npy"), &fixture("y_i64.npy"));
    assert!(e.contains("not_npy.npy"), "{e}");
    // Float labels, unknown metric, W of the wrong shape.
    let e = metrics_err(&[], &fixture("h_f32_c.npy"), &fixture("y_f32.npy"));
    assert!(e.contains("must be integers"), "{e}");
    let e = metrics_err(
        &["--metrics", "nc1,nc7"],
        &fixture("h_f32_c.npy"),
        &fixture("y_i64.npy"),
    );
    assert!(e.contains("unknown metric `nc7`"), "{e}");
    let e = metrics_err(
        &["--weights", fixture("b_f64.npy").to_str().unwrap()],
        &fixture("h_f32_c.npy"),
        &fixture("y_i64.npy"),
    );
    assert!(e.contains("b_f64.npy") && e.contains("2-D"), "{e}");
}

#[test]
fn metrics_of_a_saved_solution_match_what_solve_reports() {
    let dir = tempfile::tempdir().unwrap();
    let sol = dir.path().join("sol.npz");
    let out = ufm()
        .args([
            "solve",
            "--classes",
            "4",
            "--dim",
            "6",
            "--per-class",
            "5",
            "--max-iter",
            "40",
            "--json",
            "--save",
        ])
        .arg(&sol)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let solve = json(&out.stdout);
    let out = ufm()
        .args(["metrics", "--json"])
        .arg(&sol)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = json(&out.stdout);
    for key in ["nc1", "nc2_w", "nc2_h", "nc3", "bias"] {
        let a = solve["nc"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("solve nc.{key}"));
        let b = m[key].as_f64().unwrap();
        assert!(
            (a - b).abs() <= 1e-9 * a.abs().max(1e-12),
            "{key}: solve {a} vs metrics {b}"
        );
    }
}

/// `--device cuda` is a clear error without a GPU (and works with one); `--device auto` gives
/// the CPU's numbers, with one note on stderr when it stays on the CPU.
#[test]
fn device_flag_errors_or_falls_back_clearly() {
    let args = |dev: &str| {
        let mut c = ufm();
        c.args(["metrics", "--json", "--device", dev, "--features"])
            .arg(fixture("h_f64_c.npy"))
            .arg("--labels")
            .arg(fixture("y_i64.npy"))
            .arg("--weights")
            .arg(fixture("w_f64_f.npy"));
        c.output().unwrap()
    };
    let cpu = args("cpu");
    assert!(cpu.status.success());
    let cuda = args("cuda");
    let auto = args("auto");
    assert!(auto.status.success());
    let note = String::from_utf8_lossy(&auto.stderr);
    let (c, a) = (json(&cpu.stdout), json(&auto.stdout));
    if cuda.status.success() {
        assert!(json(&cuda.stdout)["device"]
            .as_str()
            .unwrap()
            .starts_with("cuda"));
    } else {
        assert_eq!(cuda.status.code(), Some(1));
        let err = String::from_utf8_lossy(&cuda.stderr);
        assert!(err.contains("CUDA is not available"), "{err}");
        assert_eq!(note.matches("accumulating on the CPU").count(), 1, "{note}");
        assert_eq!(a["device"], "cpu");
        for key in ["nc1", "nc2_w", "nc3", "cdnv", "ncc_agreement"] {
            assert_eq!(a[key], c[key], "{key}");
        }
    }
}

/// `--weights` without `--bias`: `bias` is left out of the JSON (not computed as if b = 0)
/// and stderr says so once, also with a test split (whose report would repeat the note).
#[test]
fn weights_without_bias_leave_bias_out_with_one_note() {
    let out = ufm()
        .args(["metrics", "--json", "--features"])
        .arg(fixture("h_f64_c.npy"))
        .arg("--labels")
        .arg(fixture("y_i64.npy"))
        .arg("--weights")
        .arg(fixture("w_f64_f.npy"))
        .arg("--test-features")
        .arg(fixture("h_f64_c.npy"))
        .arg("--test-labels")
        .arg(fixture("y_i64.npy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v = json(&out.stdout);
    assert!(v.get("bias").is_none(), "{v}");
    assert!(v["test"].get("bias").is_none(), "{v}");
    assert!(v.get("nc3").is_some() && v["test"].get("nc3").is_some());
    assert_eq!(err.matches("`bias`").count(), 1, "{err}");
    assert!(err.contains("--bias"), "{err}");
    // asked for by name without b: an error naming --bias
    let out = ufm()
        .args(["metrics", "--metrics", "bias", "--features"])
        .arg(fixture("h_f64_c.npy"))
        .arg("--labels")
        .arg(fixture("y_i64.npy"))
        .arg("--weights")
        .arg(fixture("w_f64_f.npy"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bias"));
}

/// One corrupt label (4,000,000,000) among 50 samples: refused at once (no K × d allocation)
/// with a short message pointing at `--classes`; `--classes` larger than N is refused too.
#[test]
fn outlier_label_is_refused_quickly_with_a_short_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, y) = (tmp.path().join("h.npy"), tmp.path().join("y.npy"));
    write_npy(
        &h,
        &Array2::<f64>::from_shape_fn((50, 3), |(i, j)| (i * 3 + j) as f64),
    )
    .unwrap();
    let mut labels: Vec<i64> = (0..50).map(|i| i % 3).collect();
    labels[17] = 4_000_000_000;
    write_npy(&y, &Array1::from(labels)).unwrap();
    let t0 = std::time::Instant::now();
    let out = ufm()
        .args(["metrics", "--features"])
        .arg(&h)
        .arg("--labels")
        .arg(&y)
        .output()
        .unwrap();
    assert!(t0.elapsed().as_secs_f64() < 10.0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("4000000000") && err.contains("index 17") && err.contains("--classes"),
        "{err}"
    );
    assert!(err.len() < 600, "{} bytes: {err}", err.len());
    let out = ufm()
        .args(["metrics", "--classes", "4000000001", "--features"])
        .arg(&h)
        .arg("--labels")
        .arg(&y)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("only 50 samples"), "{err}");
}
