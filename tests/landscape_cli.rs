//! End-to-end tests of `ufm hessian`, `ufm saddles` and `ufm landscape` (+ `merge`).

use assert_cmd::Command;
use serde_json::Value;

fn ufm() -> Command {
    Command::cargo_bin("ufm").unwrap()
}

const SMALL: [&str; 10] = [
    "--classes",
    "3",
    "--per-class",
    "3",
    "--lambda-w",
    "1e-2",
    "--lambda-h",
    "1e-2",
    "--lambda-b",
    "1e-3",
];

#[test]
fn tiny_sweep_end_to_end_writes_a_consistent_csv_and_shards_merge_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let common = [
        "--dims",
        "1,2,4",
        "--lambdas",
        "1e-2,3e-2",
        "--optimizers",
        "lbfgs,newton",
        "--trials",
        "3",
        "--gap-tol",
        "1e-7",
    ];
    let out = ufm()
        .arg("landscape")
        .args(SMALL)
        .args(common)
        .arg("--out")
        .arg(&whole)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("36/36 trials"),
        "progress not printed: {stderr}"
    );

    // trials.csv: header, one row per job, every job once.
    let trials = std::fs::read_to_string(whole.join("trials.csv")).unwrap();
    let mut lines = trials.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..4], ["job", "d", "lambda", "optimizer"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3 * 2 * 2 * 3);
    let mut jobs: Vec<usize> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    jobs.sort_unstable();
    assert_eq!(jobs, (0..36).collect::<Vec<_>>());
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();

    // summary.csv agrees with a recount from trials.csv.
    let summary = std::fs::read_to_string(whole.join("summary.csv")).unwrap();
    let mut sl = summary.lines();
    let sh: Vec<&str> = sl.next().unwrap().split(',').collect();
    let scol = |name: &str| sh.iter().position(|h| *h == name).unwrap();
    let cells: Vec<Vec<&str>> = sl.map(|l| l.split(',').collect()).collect();
    assert_eq!(cells.len(), 12);
    for c in &cells {
        let (d, lam, opt) = (c[scol("d")], c[scol("lambda")], c[scol("optimizer")]);
        let reference: f64 = c[scol("reference")].parse().unwrap();
        let ok = rows
            .iter()
            .filter(|r| r[col("d")] == d && r[col("lambda")] == lam && r[col("optimizer")] == opt)
            .filter(|r| {
                let f: f64 = r[col("objective")].parse().unwrap();
                f - reference <= 1e-7 * reference.abs().max(1.0)
            })
            .count();
        assert_eq!(c[scol("successes")].parse::<usize>().unwrap(), ok, "{c:?}");
        if d == "4" {
            // d > K: every trial reaches the closed-form optimum (Zhu et al. 2021, Thm 3.2).
            assert_eq!(c[scol("success_fraction")], "1", "{c:?}");
            assert_eq!(c[scol("reference_source")], "closed-form");
        }
    }

    // Two shards + merge reproduce the same summary.
    let sharded = dir.path().join("sharded");
    for i in 0..2 {
        let st = ufm()
            .arg("landscape")
            .args(SMALL)
            .args(common)
            .args(["--shard", &format!("{i}/2"), "--out"])
            .arg(&sharded)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let merged = dir.path().join("merged");
    let st = ufm()
        .args(["landscape", "merge"])
        .arg(sharded.join("trials-shard-0-of-2.json"))
        .arg(sharded.join("trials-shard-1-of-2.json"))
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let strip = |s: &str| -> Vec<String> {
        // Drop the timing column, which differs between runs.
        s.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                [&f[..7], &f[8..]].concat().join(",")
            })
            .collect()
    };
    let merged_summary = std::fs::read_to_string(merged.join("summary.csv")).unwrap();
    assert_eq!(strip(&merged_summary), strip(&summary));

    // A missing shard is an error that names it.
    ufm()
        .args(["landscape", "merge"])
        .arg(sharded.join("trials-shard-0-of-2.json"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("missing shards [1]"));
    ufm()
        .args(["landscape", "--shard", "2/2"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("--shard"));
}

#[test]
fn hessian_json_reports_orbit_dimension_agreement() {
    let out = ufm()
        .args(["hessian", "--dim", "4", "--json"])
        .args(SMALL)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "lambda_min",
        "lambda_max",
        "negative_count",
        "near_zero_count",
        "grad_norm",
        "objective",
        "orbit_dim",
    ] {
        assert!(v.get(key).is_some(), "missing key {key}");
    }
    // K = 3, d = 4: 6 - (2*1)/2 = 5.
    assert_eq!(v["orbit_dim"], 5);
    assert_eq!(v["near_zero_count"], 5);
    assert_eq!(v["negative_count"], 0);
}

#[test]
fn saddles_json_lists_certified_strict_saddles_that_escape() {
    let out = ufm()
        .args(["saddles", "--dim", "4", "--json"])
        .args(SMALL)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2, "origin and rank-1 for K = 3");
    assert_eq!(list[0]["kind"], "origin");
    assert_eq!(list[1]["kind"], "rank-1");
    assert_eq!(list[1]["rank"], 1);
    for s in list {
        assert!(s["grad_norm"].as_f64().unwrap() <= 1e-9);
        assert!(s["lambda_min"].as_f64().unwrap() < 0.0);
        assert!(s["negative_count"].as_u64().unwrap() >= 1);
        assert!(s["escape_gap"].as_f64().unwrap().abs() <= 1e-8);
        for key in ["lambda_max", "near_zero_count", "objective"] {
            assert!(s.get(key).is_some(), "missing {key}");
        }
    }
    let (cf, m) = (
        list[0]["lambda_min_closed_form"].as_f64().unwrap(),
        list[0]["lambda_min"].as_f64().unwrap(),
    );
    assert!((cf - m).abs() < 1e-12, "{cf} vs {m}");
}

#[test]
fn bad_input_gives_actionable_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("p.npz");
    std::fs::write(&bad, b"not a zip").unwrap();
    ufm()
        .args(["hessian", "--load"])
        .arg(&bad)
        .assert()
        .failure()
        .stderr(predicates::str::contains("p.npz"));
    ufm()
        .args(["landscape", "--dims", "0"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("dims"));
}

#[test]
fn hessian_of_a_saved_solution_matches_the_solved_one() {
    let dir = tempfile::tempdir().unwrap();
    for precision in ["f64", "f32"] {
        let path = dir.path().join(format!("sol-{precision}.npz"));
        ufm()
            .args(["solve", "--dim", "4", "--precision", precision, "--save"])
            .arg(&path)
            .args(SMALL)
            .assert()
            .success();
        let out = ufm()
            .args(["hessian", "--dim", "4", "--json", "--load"])
            .arg(&path)
            .args(SMALL)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["orbit_dim"], 5);
        if precision == "f64" {
            // At an f64 solution (|grad| <= 1e-9) the orbit directions are near zero.
            assert_eq!(v["near_zero_count"], 5, "{v}");
        }
        assert_eq!(v["negative_count"], 0, "{precision}: {v}");
        // Wrong problem flags are named in the error.
        ufm()
            .args(["hessian", "--dim", "5", "--load"])
            .arg(&path)
            .args(SMALL)
            .assert()
            .failure()
            .stderr(predicates::str::contains("--dim"));
    }
}
