//! End-to-end tests of `ufm margin`, `ufm sphere`, `ufm seli`, `ufm regress`,
//! `ufm metrics --targets` and the margins `ufm solve` reports when K > d+1.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn ufm() -> Command {
    Command::cargo_bin("ufm").unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = ufm()
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn margin_of_named_codes_and_of_saved_weights() {
    let v = json(&["margin", "--config", "icosahedron", "--json"]);
    let m = 1.0 - 1.0 / 5f64.sqrt();
    assert!((v["report"]["min_margin"].as_f64().unwrap() - m).abs() < 1e-12);
    assert!((v["closed_form"]["margin"].as_f64().unwrap() - m).abs() < 1e-15);
    assert!(v["report"]["classes"].as_array().unwrap().is_empty());
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("pentagon.npy");
    ufm()
        .args(["margin", "--config", "polygon:5", "--save"])
        .arg(&w)
        .assert()
        .success()
        .stdout(predicate::str::contains("closed form"));
    let v = json(&[
        "margin",
        "--weights",
        w.to_str().unwrap(),
        "--json",
        "--per-class",
    ]);
    let m = 1.0 - (2.0 * std::f64::consts::PI / 5.0).cos();
    assert!((v["report"]["min_margin"].as_f64().unwrap() - m).abs() < 1e-12);
    assert_eq!(v["report"]["classes"].as_array().unwrap().len(), 5);
    assert_eq!(v["reference"]["code"], "polygon:5");
    ufm()
        .args(["margin", "--config", "dodecahedron"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown configuration"));
    ufm()
        .args(["margin", "--weights", "/nonexistent/W.npy"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("/nonexistent/W.npy"));
}

#[test]
fn solve_reports_margins_when_there_are_more_classes_than_dimensions_plus_one() {
    let v = json(&[
        "solve",
        "--classes",
        "6",
        "--dim",
        "2",
        "--per-class",
        "1",
        "--lambda-w",
        "1e-4",
        "--lambda-h",
        "1e-4",
        "--lambda-b",
        "0",
        "--no-bias",
        "--json",
    ]);
    let m = v["margins"]["min_margin"].as_f64().unwrap();
    // Six classes in the plane: the regular hexagon's margin 1 - cos(60°) = 1/2 is the target.
    assert!(m > 0.0 && m <= 0.5 + 1e-9, "{m}");
    let v = json(&["solve", "--classes", "3", "--dim", "4", "--json"]);
    assert!(v.get("margins").is_none());
}

#[test]
fn sphere_reaches_the_closed_form_and_certifies_the_hessian() {
    let v = json(&[
        "sphere",
        "--classes",
        "3",
        "--dim",
        "3",
        "--per-class",
        "2",
        "--tau",
        "4",
        "--hessian",
        "--saddle",
        "--json",
    ]);
    assert_eq!(v["is_global_min"], true);
    assert_eq!(v["spectrum"]["n_negative"], 0);
    assert_eq!(v["spectrum"]["n_zero"], v["rotation_orbit_dim"]);
    assert!(v["saddle"]["spectrum"]["lambda_min"].as_f64().unwrap() < 0.0);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ico.npz");
    ufm()
        .args([
            "sphere",
            "--classes",
            "12",
            "--dim",
            "3",
            "--per-class",
            "1",
            "--init",
            "icosahedron",
            "--save",
        ])
        .arg(&out)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("icosahedron").or(predicate::str::contains("reference code")),
        );
    let v = json(&["margin", "--weights", out.to_str().unwrap(), "--json"]);
    assert!((v["report"]["min_margin"].as_f64().unwrap() - (1.0 - 1.0 / 5f64.sqrt())).abs() < 1e-6);
    ufm()
        .args(["sphere", "--tau", "-1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("tau"));
}

#[test]
fn seli_point_and_figure() {
    let v = json(&[
        "seli",
        "--class-sizes",
        "20,20,2,2",
        "--lambda",
        "1e-4",
        "--json",
    ]);
    assert!(v["certified_gap"].as_f64().unwrap().abs() < 1e-12);
    assert_eq!(v["rank"], 3);
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("seli");
    ufm()
        .args([
            "seli",
            "figure",
            "--ratios",
            "1,10",
            "--points",
            "3",
            "--lambda-max",
            "1e-2",
            "--lambda-min",
            "1e-4",
            "--minority-size",
            "2",
            "--out",
        ])
        .arg(&stem)
        .assert()
        .success();
    for ext in ["csv", "png", "svg"] {
        assert!(stem.with_extension(ext).exists(), "{ext}");
    }
    let csv = std::fs::read_to_string(stem.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 3);
    ufm()
        .args(["seli", "figure", "--from-csv"])
        .arg(stem.with_extension("csv"))
        .arg("--out")
        .arg(dir.path().join("again"))
        .assert()
        .success();
    ufm()
        .args(["seli", "figure", "--from-csv", "/nonexistent.csv"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("/nonexistent.csv"));
}

fn write_npy(path: &Path, a: &ndarray::Array2<f64>) {
    use ndarray_npy::WriteNpyExt;
    a.write_npy(std::fs::File::create(path).unwrap()).unwrap();
}

#[test]
fn regress_and_nrc_metrics_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("reg.npz");
    let v = json(&[
        "regress",
        "--samples",
        "40",
        "--outputs",
        "2",
        "--dim",
        "4",
        "--json",
        "--save",
        bundle.to_str().unwrap(),
    ]);
    assert!(v["relative_gap"].as_f64().unwrap().abs() < 1e-8, "{v}");
    assert!(v["nrc"]["nrc1"].as_f64().unwrap() < 1e-12);
    assert!(v["gram_error"].as_f64().unwrap() < 1e-6);
    let m = json(&["regress", "metrics", bundle.to_str().unwrap(), "--json"]);
    assert!(m["nrc2"].as_f64().unwrap() < 1e-12, "{m}");
    // The same through `ufm metrics --targets` with .npy files.
    let y = ufm::regression::random_targets(40, 2, 0.5, 0).unwrap();
    let p = ufm::regression::RegressionProblem::new(y.clone(), 4, 1e-3, 1e-3, true).unwrap();
    let cf = ufm::regression::closed_form(&p).unwrap();
    let (yp, hp, wp) = (
        dir.path().join("Y.npy"),
        dir.path().join("H.npy"),
        dir.path().join("W.npy"),
    );
    write_npy(&yp, &y);
    write_npy(&hp, &cf.ht);
    write_npy(&wp, &cf.w);
    let m = json(&[
        "metrics",
        "--targets",
        yp.to_str().unwrap(),
        "--features",
        hp.to_str().unwrap(),
        "--weights",
        wp.to_str().unwrap(),
        "--json",
    ]);
    for key in ["nrc1", "nrc2", "nrc3"] {
        assert!(m[key].as_f64().unwrap() < 1e-12, "{key}: {m}");
    }
    ufm()
        .args(["metrics", "--targets", yp.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--features"));
}
