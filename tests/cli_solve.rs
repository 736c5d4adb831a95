//! End-to-end tests of `ufm solve` through the binary.

use assert_cmd::Command;
use predicates::prelude::*;

fn ufm() -> Command {
    Command::cargo_bin("ufm").unwrap()
}

#[test]
fn default_run_reaches_the_global_minimum_and_prints_a_summary() {
    ufm()
        .arg("solve")
        .assert()
        .success()
        .stdout(predicate::str::contains("global minimum reached"))
        .stdout(predicate::str::contains("NC metrics"));
}

#[test]
fn json_output_has_the_documented_keys() {
    let out = ufm()
        .args([
            "solve",
            "--classes",
            "4",
            "--dim",
            "5",
            "--per-class",
            "6",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "objective",
        "global_min_objective",
        "gap",
        "grad_norm",
        "iterations",
        "seconds",
        "converged",
        "is_global_min",
        "nc",
    ] {
        assert!(v.get(k).is_some(), "missing key {k}");
    }
    for k in ["nc1", "nc2_w", "nc2_h", "nc3", "bias"] {
        assert!(v["nc"].get(k).is_some(), "missing nc.{k}");
    }
    assert_eq!(v["is_global_min"], true);
    let gap = v["gap"].as_f64().unwrap();
    assert!(gap.abs() < 1e-8);
    // No closed form: null, not a made-up number.
    let out = ufm()
        .args(["solve", "--class-sizes", "5,2,3", "--dim", "4", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["global_min_objective"].is_null() && v["gap"].is_null() && v["is_global_min"].is_null()
    );
}

#[test]
fn trace_and_save_write_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    let save = dir.path().join("sol.npz");
    ufm()
        .args([
            "solve",
            "--classes",
            "3",
            "--dim",
            "4",
            "--per-class",
            "5",
            "--optimizer",
            "newton",
            "--trace-every",
            "1",
        ])
        .arg("--trace")
        .arg(&trace)
        .arg("--save")
        .arg(&save)
        .assert()
        .success();
    let csv = std::fs::read_to_string(&trace).unwrap();
    let header = csv.lines().next().unwrap();
    for col in [
        "iter",
        "f",
        "grad_norm",
        "seconds",
        "gap",
        "nc1",
        "nc2_w",
        "nc3",
        "bias",
    ] {
        assert!(
            header.split(',').any(|c| c == col),
            "missing column {col} in {header}"
        );
    }
    assert!(csv.lines().count() > 3);
    let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(&save).unwrap()).unwrap();
    let h: ndarray::Array2<f64> = npz.by_name("H").unwrap();
    assert_eq!(h.dim(), (4, 15));
}

#[test]
fn bad_flags_give_clear_errors_and_exit_code_1() {
    for (args, needle) in [
        (vec!["--loss", "hinge"], "unknown loss `hinge`"),
        (vec!["--classes", "0"], "`classes`"),
        (vec!["--dim", "0"], "`dim`"),
        (vec!["--lambda-w", "-1"], "`lambda-w`"),
        (vec!["--optimizer", "adam"], "unknown optimizer"),
        (vec!["--optimizer", "gd", "--lr", "1e5"], "lower --lr"),
    ] {
        ufm()
            .arg("solve")
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::str::starts_with("Error: "))
            .stderr(predicate::str::contains(needle));
    }
}

/// Issue 15: the summary counts objective evaluations, and L-BFGS's line search costs at most
/// 1.3 evaluations per iteration on average (unit steps are accepted almost always).
#[test]
fn evaluation_counts_are_reported_and_lbfgs_needs_few_per_iteration() {
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["solve", "--json", "--classes", "6", "--dim", "8"];
        args.extend_from_slice(extra);
        let out = ufm().args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for extra in [
        &["--per-class", "10"][..],
        &["--per-class", "10", "--loss", "mse"],
        &["--class-sizes", "30,3,3,3,3,3"],
        &["--per-class", "10", "--precision", "f32"],
    ] {
        let v = run(extra);
        let iters = v["iterations"].as_u64().unwrap();
        let evals = v["evals"].as_u64().unwrap();
        let per = v["evals_per_iter"].as_f64().unwrap();
        assert!(
            iters > 5 && evals > iters,
            "{extra:?}: {iters} iterations, {evals} evals"
        );
        assert!(
            (per - (evals - 1) as f64 / iters as f64).abs() < 1e-12,
            "{extra:?}: {per}"
        );
        assert!(
            per <= 1.3,
            "{extra:?}: {per} evaluations per L-BFGS iteration"
        );
        assert_eq!(v["hvps"].as_u64(), Some(0));
    }
    // Gradient descent with a fixed step: one (fused) evaluation per iteration.
    let v = run(&["--per-class", "10", "--optimizer", "gd", "--max-iter", "50"]);
    assert_eq!(v["iterations"].as_u64(), Some(50));
    assert_eq!(v["evals_per_iter"].as_f64(), Some(1.0));
    // Newton-CG counts its Hessian-vector products.
    let v = run(&["--per-class", "10", "--optimizer", "newton"]);
    assert!(v["hvps"].as_u64().unwrap() > v["iterations"].as_u64().unwrap());
}
