//! End-to-end tests of `ufm certify` and `ufm certify figure`.

use assert_cmd::Command;
use predicates::prelude::*;

fn ufm() -> Command {
    Command::cargo_bin("ufm").unwrap()
}

#[test]
fn certify_json_has_the_certificate_keys_and_certifies_an_imbalanced_instance() {
    let out = ufm()
        .args([
            "certify",
            "--class-sizes",
            "50,50,5,5",
            "--dim",
            "4",
            "--lambda-w",
            "5e-3",
            "--lambda-h",
            "5e-3",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for key in [
        "nonconvex_objective",
        "convex_objective",
        "lower_bound",
        "certified_gap",
        "rank",
        "attained",
        "singular_values",
        "distance",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    let f = v["nonconvex_objective"].as_f64().unwrap();
    let lb = v["lower_bound"].as_f64().unwrap();
    assert!(lb <= f && (f - lb) <= 1e-8 * lb, "f {f} lb {lb}");
    assert_eq!(v["attained"], serde_json::Value::Bool(true));
    assert_eq!(v["certified_optimal"], serde_json::Value::Bool(true));
    assert!(v["rank"].as_u64().unwrap() <= 4);
}

#[test]
fn certify_reports_rank_above_d_as_not_attained() {
    ufm()
        .args([
            "certify",
            "--classes",
            "6",
            "--per-class",
            "5",
            "--dim",
            "2",
            "--lambda-w",
            "5e-3",
            "--lambda-h",
            "5e-3",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("rank of Z*  5"))
        .stdout(predicate::str::contains("NOT attained"))
        .stdout(predicate::str::contains("lower bound only"));
}

#[test]
fn certify_refuses_focal_loss_with_the_reason() {
    ufm()
        .args(["certify", "--loss", "focal:2"])
        .assert()
        .code(1)
        .stderr(predicate::str::starts_with("Error: "))
        .stderr(predicate::str::contains("not convex in the logits"));
}

#[test]
fn figure_writes_csv_png_svg_and_redraws_from_csv() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("imb");
    ufm()
        .args([
            "certify",
            "figure",
            "--out",
            stem.to_str().unwrap(),
            "--points",
            "4",
            "--class-sizes",
            "100,100,100,100,100",
            "--minor-classes",
            "3",
        ])
        .assert()
        .success();
    for ext in ["csv", "png", "svg"] {
        assert!(stem.with_extension(ext).exists(), "{ext}");
    }
    let csv = stem.with_extension("csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 5);
    std::fs::remove_file(stem.with_extension("png")).unwrap();
    ufm()
        .args([
            "certify",
            "figure",
            "--out",
            stem.to_str().unwrap(),
            "--from-csv",
            csv.to_str().unwrap(),
        ])
        .assert()
        .success();
    assert!(stem.with_extension("png").exists());
    ufm()
        .args([
            "certify",
            "figure",
            "--out",
            stem.to_str().unwrap(),
            "--max-ratio",
            "0.5",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--max-ratio"));
}
