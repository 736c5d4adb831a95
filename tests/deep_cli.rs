//! End-to-end tests of `ufm deep linear`, `ufm deep relu` and `ufm deep figures`.

use assert_cmd::Command;
use predicates::prelude::*;

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
fn deep_linear_json_certifies_the_solver_on_an_imbalanced_instance() {
    let v = json(&[
        "deep",
        "linear",
        "--layers",
        "3",
        "--class-sizes",
        "20,10,5,5",
        "--width",
        "8",
        "--lambda",
        "1e-3",
        "--starts",
        "2",
        "--json",
    ]);
    let cert = v["certificate"]["objective"].as_f64().unwrap();
    let gaps: Vec<f64> = v["relative_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_f64().unwrap())
        .collect();
    assert!(cert > 0.0 && gaps.iter().all(|&g| g > -1e-12));
    assert!(gaps.iter().any(|&g| g <= 1e-8), "{gaps:?}");
    assert_eq!(v["layer_nc"].as_array().unwrap().len(), 3);
    assert_eq!(v["certificate"]["classes"].as_array().unwrap().len(), 4);
}

#[test]
fn deep_linear_reports_the_zero_solution() {
    ufm()
        .args([
            "deep",
            "linear",
            "--layers",
            "3",
            "--class-sizes",
            "20,10,5,5",
            "--lambda",
            "0.05",
            "--starts",
            "1",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("zero solution beats its root"))
        .stdout(predicate::str::contains("largest-stationary-root rule"));
}

#[test]
fn deep_linear_cross_entropy_is_not_certified() {
    ufm()
        .args([
            "deep", "linear", "--loss", "ce", "--starts", "1", "--layers", "2",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing below is certified"))
        .stdout(predicate::str::contains("simplex-ETF configuration"));
}

#[test]
fn deep_relu_json_compares_solver_dnc_and_srg() {
    let v = json(&[
        "deep",
        "relu",
        "--layers",
        "3",
        "--classes",
        "6",
        "--width",
        "8",
        "--lambda",
        "0.004",
        "--starts",
        "1",
        "--max-iter",
        "300",
        "--json",
    ]);
    let dnc = v["dnc"]["loss"].as_f64().unwrap();
    let srg = v["srg"]["loss"].as_f64().unwrap();
    let ratio = v["srg_over_dnc"].as_f64().unwrap();
    assert!((srg / dnc - ratio).abs() < 1e-12);
    assert!(v["runs"].as_array().unwrap().len() == 1);
}

#[test]
fn deep_commands_reject_bad_input_with_the_flag() {
    ufm()
        .args(["deep", "linear", "--loss", "focal:2"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--loss must be mse or ce"));
    ufm()
        .args(["deep", "relu", "--width", "5", "--starts", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("width"));
    ufm()
        .args(["deep", "linear", "--layers", "0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--layers"));
    ufm()
        .args(["deep", "linear", "--optimizer", "adam", "--starts", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unknown optimizer"));
}

#[test]
fn deep_figures_quick_writes_data_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    ufm()
        .args(["deep", "figures", "--quick", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    for f in [
        "deep_relu_ratio.csv",
        "deep_relu_ratio.png",
        "deep_relu_ratio.svg",
        "deep_relu_training.csv",
        "deep_relu_training.png",
        "deep_linear_zero.csv",
        "deep_linear_zero.svg",
        "deep_summary.json",
    ] {
        let m = std::fs::metadata(dir.path().join(f)).unwrap();
        assert!(m.len() > 100, "{f} too small");
    }
    let csv = std::fs::read_to_string(dir.path().join("deep_relu_ratio.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("ratio"));
    assert_eq!(csv.lines().count(), 1 + 3 * 3);
}
