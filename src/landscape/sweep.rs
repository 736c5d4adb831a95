//! Random-initialisation sweeps: $T$ seeded trials $\times$ optimizers $\times$ a grid over the
//! feature dimension $d$ and the weight decay $\lambda$ ($\lambda_W=\lambda_H=\lambda$;
//! $\lambda_b$ from the base problem). A trial *succeeds* when its final objective is within
//! the gap tolerance of the global optimum,
//! $$f-f^\star\le\texttt{gap\_tol}\cdot\max(1,|f^\star|),$$
//! with $f^\star$ from the closed form when theory gives one, and otherwise (e.g. $d<K-1$, other
//! losses) the best objective over all trials and optimizers of that $(d,\lambda)$ cell (marked
//! `empirical`). This is the experiment behind Zhu et al. (2021), Thm 3.2: for $d\ge K$ every
//! trial should succeed.
//!
//! Trials run in parallel (rayon). A sweep can be split into `n` shards (shard `i` runs jobs
//! $j\equiv i\pmod n$ of the fixed job order), each writing its trials; [`merge_shards`] combines
//! them and [`summarize`] computes the per-cell table, so a cluster array job runs one shard per
//! task.

use crate::error::{Error, Result};
use crate::solver::{solve, OptimizerSpec, SolveSpec};
use crate::ufm::{global_minimum, UfmConfig};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Most trials (jobs) in one sweep.
pub const MAX_JOBS: usize = 10_000_000;

/// What to sweep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SweepSpec {
    /// The base problem (class sizes, loss, bias, $\lambda_b$); `feature_dim` and
    /// $\lambda_W,\lambda_H$ are overwritten by the grid.
    pub base: UfmConfig,
    /// Feature dimensions $d$.
    pub dims: Vec<usize>,
    /// Weight decays $\lambda=\lambda_W=\lambda_H$.
    pub lambdas: Vec<f64>,
    /// Optimizers.
    pub optimizers: Vec<OptimizerSpec>,
    /// Trials $T$ per cell; trial $t$ starts from seed `seed + t` (the same start for every optimizer).
    pub trials: usize,
    /// Base seed.
    pub seed: u64,
    /// Standard deviation of the Gaussian initialisation.
    pub init_scale: f64,
    /// Gradient-norm tolerance of each solve.
    pub tol: f64,
    /// Iteration limit of each solve.
    pub max_iter: usize,
    /// Time limit of each solve (seconds).
    pub time_limit: Option<f64>,
    /// Relative gap tolerance for success.
    pub gap_tol: f64,
}

impl SweepSpec {
    /// Checks the grid.
    pub fn validate(&self) -> Result<()> {
        if self.dims.is_empty() || self.dims.contains(&0) {
            return Err(Error::param(
                "dims",
                "give at least one feature dimension, all >= 1",
            ));
        }
        if self.lambdas.is_empty() || self.lambdas.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
            return Err(Error::param(
                "lambdas",
                "give at least one weight decay, all finite and > 0",
            ));
        }
        if self.optimizers.is_empty() {
            return Err(Error::param("optimizers", "give at least one optimizer"));
        }
        if self.trials == 0 {
            return Err(Error::param("trials", "must be >= 1"));
        }
        if !(self.gap_tol.is_finite() && self.gap_tol > 0.0) {
            return Err(Error::param("gap-tol", "must be finite and > 0"));
        }
        match self.checked_n_jobs() {
            Some(n) if n <= MAX_JOBS => {}
            n => {
                return Err(Error::param(
                    "trials",
                    format!(
                        "{} dims x {} lambdas x {} optimizers x {} trials = {} trials in all, more than {MAX_JOBS}; \
                         use fewer",
                        self.dims.len(),
                        self.lambdas.len(),
                        self.optimizers.len(),
                        self.trials,
                        n.map_or("more than 2^64".into(), |n| n.to_string())
                    ),
                ))
            }
        }
        crate::solver::time_limit("time-limit", self.time_limit)?;
        // Every cell must build.
        for &d in &self.dims {
            self.cell_config(d, self.lambdas[0]).build()?;
        }
        Ok(())
    }

    fn cell_config(&self, d: usize, lambda: f64) -> UfmConfig {
        let mut c = self.base.clone();
        c.feature_dim = d;
        c.lambda_w = lambda;
        c.lambda_h = lambda;
        c
    }

    /// Number of jobs (cells × optimizers × trials), saturating at `usize::MAX` (a valid spec
    /// has at most [`MAX_JOBS`]).
    pub fn n_jobs(&self) -> usize {
        self.checked_n_jobs().unwrap_or(usize::MAX)
    }

    fn checked_n_jobs(&self) -> Option<usize> {
        self.dims
            .len()
            .checked_mul(self.lambdas.len())?
            .checked_mul(self.optimizers.len())?
            .checked_mul(self.trials)
    }

    /// Job `j` in the fixed order $(d,\lambda,\text{optimizer},t)$, last index fastest.
    fn job(&self, j: usize) -> (usize, f64, OptimizerSpec, usize) {
        let t = j % self.trials;
        let r = j / self.trials;
        let o = r % self.optimizers.len();
        let r = r / self.optimizers.len();
        let l = r % self.lambdas.len();
        let di = r / self.lambdas.len();
        (self.dims[di], self.lambdas[l], self.optimizers[o], t)
    }
}

/// One trial.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrialRow {
    /// Job index in the full sweep.
    pub job: usize,
    /// $d$.
    pub d: usize,
    /// $\lambda$.
    pub lambda: f64,
    /// Optimizer short name.
    pub optimizer: String,
    /// Trial index $t$.
    pub trial: usize,
    /// Seed of the starting point.
    pub seed: u64,
    /// Final objective (NaN if the solver failed).
    pub objective: f64,
    /// $f^\star$ from the closed form, if any.
    pub closed_form: Option<f64>,
    /// Final gradient norm.
    pub grad_norm: f64,
    /// Iterations.
    pub iterations: usize,
    /// Solver seconds.
    pub seconds: f64,
    /// Whether the gradient tolerance was met.
    pub converged: bool,
    /// Solver error (divergence), if any.
    pub error: Option<String>,
}

/// A shard's output: the spec, which shard, and its trials.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardOutput {
    /// The sweep.
    pub spec: SweepSpec,
    /// Shard index $i$.
    pub shard: usize,
    /// Number of shards $n$.
    pub n_shards: usize,
    /// Trials of this shard (in job order).
    pub rows: Vec<TrialRow>,
}

/// Runs shard `shard` of `n_shards` (use `0, 1` for the whole sweep). `progress(done, total)`
/// is called after each trial.
pub fn run_sweep(
    spec: &SweepSpec,
    shard: usize,
    n_shards: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ShardOutput> {
    spec.validate()?;
    if n_shards == 0 || shard >= n_shards {
        return Err(Error::param(
            "shard",
            format!("expected i/n with 0 <= i < n, got {shard}/{n_shards}"),
        ));
    }
    let jobs: Vec<usize> = (shard..spec.n_jobs()).step_by(n_shards).collect();
    let total = jobs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let rows = jobs
        .par_iter()
        .map(|&j| {
            let r = run_trial(spec, j);
            let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(k, total);
            r
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ShardOutput {
        spec: spec.clone(),
        shard,
        n_shards,
        rows,
    })
}

fn run_trial(spec: &SweepSpec, j: usize) -> Result<TrialRow> {
    let (d, lambda, opt, t) = spec.job(j);
    let p = spec.cell_config(d, lambda).build()?;
    let seed = spec.seed.wrapping_add(t as u64);
    let s = SolveSpec {
        optimizer: opt,
        seed,
        init_scale: spec.init_scale,
        tol: spec.tol,
        max_iter: spec.max_iter,
        time_limit: spec.time_limit,
        trace_every: 0,
        gap_tol: spec.gap_tol,
        ..SolveSpec::default()
    };
    let closed_form = global_minimum(&p).map(|g| g.objective);
    let mut row = TrialRow {
        job: j,
        d,
        lambda,
        optimizer: opt.short_name().to_string(),
        trial: t,
        seed,
        objective: f64::NAN,
        closed_form,
        grad_norm: f64::NAN,
        iterations: 0,
        seconds: 0.0,
        converged: false,
        error: None,
    };
    match solve(&p, &s, None) {
        Ok(out) => {
            let m = out.summary;
            row.objective = m.objective;
            row.grad_norm = m.grad_norm;
            row.iterations = m.iterations;
            row.seconds = m.seconds;
            row.converged = m.converged;
        }
        Err(e @ Error::Diverged { .. }) => row.error = Some(e.to_string()),
        Err(e) => return Err(e),
    }
    Ok(row)
}

/// Combines shard outputs: checks that they come from the same valid sweep, that each is a
/// shard `i/n` with $0\le i<n$ holding exactly the jobs $j\equiv i\pmod n$ of the sweep, that no
/// shard is given twice, and that the union covers every job (else an error listing the
/// missing shards). Shard files are input: a bad one is an error naming it, never a panic.
pub fn merge_shards(parts: Vec<ShardOutput>) -> Result<ShardOutput> {
    let first = parts
        .first()
        .ok_or_else(|| Error::Data("no shard files to merge".into()))?;
    let (spec, n) = (first.spec.clone(), first.n_shards);
    spec.validate()
        .map_err(|e| Error::Data(format!("the shards' sweep is not valid: {e}")))?;
    let n_jobs = spec.n_jobs();
    if n == 0 || n > n_jobs.max(1) {
        return Err(Error::Data(format!(
            "shard {}/{n}: the shard count must be between 1 and the {n_jobs} jobs of the sweep",
            first.shard
        )));
    }
    let mut seen = vec![false; n];
    let mut rows = Vec::new();
    for part in parts {
        if part.spec != spec || part.n_shards != n {
            return Err(Error::Data(format!(
                "shard {}/{} comes from a different sweep (spec or shard count differs)",
                part.shard, part.n_shards
            )));
        }
        if part.shard >= n {
            return Err(Error::Data(format!(
                "shard {}/{n}: the index must be below the shard count",
                part.shard
            )));
        }
        if std::mem::replace(&mut seen[part.shard], true) {
            return Err(Error::Data(format!("shard {}/{n} given twice", part.shard)));
        }
        let want = (part.shard..n_jobs).step_by(n);
        if part.rows.len() != want.len() || part.rows.iter().zip(want).any(|(r, j)| r.job != j) {
            return Err(Error::Data(format!(
                "shard {}/{n} does not hold exactly its jobs ({} rows; jobs j = {} mod {n} of {n_jobs} expected)",
                part.shard,
                part.rows.len(),
                part.shard
            )));
        }
        rows.extend(part.rows);
    }
    let missing: Vec<usize> = (0..n).filter(|&i| !seen[i]).collect();
    if !missing.is_empty() {
        return Err(Error::Data(format!(
            "missing shards {missing:?} of {n}; run `ufm landscape --shard i/{n}` for them"
        )));
    }
    rows.sort_by_key(|r| r.job);
    Ok(ShardOutput {
        spec,
        shard: 0,
        n_shards: 1,
        rows,
    })
}

/// One cell of the summary table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CellSummary {
    /// $d$.
    pub d: usize,
    /// $\lambda$.
    pub lambda: f64,
    /// Optimizer.
    pub optimizer: String,
    /// Trials in the cell.
    pub trials: usize,
    /// $f^\star$ used.
    pub reference: f64,
    /// `closed-form` or `empirical` (best over the cell's trials of every optimizer).
    pub reference_source: String,
    /// Trials with gap $\le$ tolerance.
    pub successes: usize,
    /// successes / trials.
    pub success_fraction: f64,
    /// Median iterations.
    pub median_iterations: f64,
    /// Median solver seconds.
    pub median_seconds: f64,
    /// Largest gap $f-f^\star$ over the cell's trials.
    pub max_gap: f64,
    /// Trials whose solver diverged.
    pub diverged: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// Per-cell success fraction, median iterations and time (cells in grid order).
pub fn summarize(spec: &SweepSpec, rows: &[TrialRow]) -> Vec<CellSummary> {
    let mut out = Vec::new();
    for &d in &spec.dims {
        for &lambda in &spec.lambdas {
            // JSON round trips may change the last bit of a float: match λ relatively.
            let same = |a: f64| (a - lambda).abs() <= 1e-12 * lambda.abs();
            let cell: Vec<&TrialRow> = rows.iter().filter(|r| r.d == d && same(r.lambda)).collect();
            let (reference, source) = match cell.iter().find_map(|r| r.closed_form) {
                Some(f) => (f, "closed-form"),
                None => (
                    cell.iter()
                        .map(|r| r.objective)
                        .filter(|f| f.is_finite())
                        .fold(f64::INFINITY, f64::min),
                    "empirical",
                ),
            };
            for opt in &spec.optimizers {
                let name = opt.short_name();
                let rs: Vec<&&TrialRow> = cell.iter().filter(|r| r.optimizer == name).collect();
                if rs.is_empty() {
                    continue;
                }
                let ok = |r: &TrialRow| {
                    r.objective.is_finite()
                        && r.objective - reference <= spec.gap_tol * reference.abs().max(1.0)
                };
                let successes = rs.iter().filter(|r| ok(r)).count();
                out.push(CellSummary {
                    d,
                    lambda,
                    optimizer: name.to_string(),
                    trials: rs.len(),
                    reference,
                    reference_source: source.to_string(),
                    successes,
                    success_fraction: successes as f64 / rs.len() as f64,
                    median_iterations: median(rs.iter().map(|r| r.iterations as f64).collect()),
                    median_seconds: median(rs.iter().map(|r| r.seconds).collect()),
                    max_gap: rs.iter().map(|r| r.objective - reference).fold(
                        f64::NEG_INFINITY,
                        |a, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
                    ),
                    diverged: rs.iter().filter(|r| r.error.is_some()).count(),
                });
            }
        }
    }
    out
}

fn csv_escape(s: &str) -> String {
    s.replace([',', '\n', '"'], " ")
}

fn opt_f(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x:e}"))
}

/// Trials as CSV (header row; floats in round-trip `e` notation).
pub fn trials_csv(rows: &[TrialRow]) -> String {
    let mut s = String::from(
        "job,d,lambda,optimizer,trial,seed,objective,closed_form,grad_norm,iterations,seconds,converged,error\n",
    );
    for r in rows {
        s.push_str(&format!(
            "{},{},{:e},{},{},{},{:e},{},{:e},{},{:e},{},{}\n",
            r.job,
            r.d,
            r.lambda,
            r.optimizer,
            r.trial,
            r.seed,
            r.objective,
            opt_f(r.closed_form),
            r.grad_norm,
            r.iterations,
            r.seconds,
            r.converged,
            r.error.as_deref().map(csv_escape).unwrap_or_default()
        ));
    }
    s
}

/// Summary table as CSV.
pub fn summary_csv(cells: &[CellSummary]) -> String {
    let mut s = String::from(
        "d,lambda,optimizer,trials,successes,success_fraction,median_iterations,median_seconds,max_gap,diverged,reference,reference_source\n",
    );
    for c in cells {
        s.push_str(&format!(
            "{},{:e},{},{},{},{},{},{:e},{:e},{},{:e},{}\n",
            c.d,
            c.lambda,
            c.optimizer,
            c.trials,
            c.successes,
            c.success_fraction,
            c.median_iterations,
            c.median_seconds,
            c.max_gap,
            c.diverged,
            c.reference,
            c.reference_source
        ));
    }
    s
}

/// Reads a shard file written by [`write_shard`].
pub fn read_shard(path: &Path) -> Result<ShardOutput> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("not a `ufm landscape` shard JSON file: {e}")))
}

/// Writes a shard's trials as `<stem>.json` (for merging) and `<stem>.csv`.
pub fn write_shard(stem: &Path, out: &ShardOutput) -> Result<()> {
    let json = serde_json::to_string_pretty(out)?;
    crate::io::write_atomic(&stem.with_extension("json"), json.as_bytes())?;
    crate::io::write_atomic(
        &stem.with_extension("csv"),
        trials_csv(&out.rows).as_bytes(),
    )
}

/// Writes `summary.csv` and `summary.json` into `dir`.
pub fn write_summary(dir: &Path, spec: &SweepSpec, cells: &[CellSummary]) -> Result<()> {
    crate::io::write_atomic(&dir.join("summary.csv"), summary_csv(cells).as_bytes())?;
    let json = serde_json::to_string_pretty(&serde_json::json!({ "spec": spec, "cells": cells }))?;
    crate::io::write_atomic(&dir.join("summary.json"), json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SweepSpec {
        SweepSpec {
            base: UfmConfig::balanced(3, 3, 2).lambdas(1e-2, 1e-2, 1e-3),
            dims: vec![1, 2, 4],
            lambdas: vec![1e-2, 3e-2],
            optimizers: vec![
                OptimizerSpec::Lbfgs { memory: 10 },
                OptimizerSpec::Newton {
                    radius: 1.0,
                    max_cg: 200,
                },
            ],
            trials: 3,
            seed: 5,
            init_scale: 1.0,
            tol: 1e-9,
            max_iter: 2000,
            time_limit: None,
            gap_tol: 1e-7,
        }
    }

    #[test]
    fn shards_merge_to_the_unsharded_sweep() {
        let s = spec();
        let whole = run_sweep(&s, 0, 1, &|_, _| {}).unwrap();
        assert_eq!(whole.rows.len(), s.n_jobs());
        let parts: Vec<ShardOutput> = (0..3)
            .map(|i| run_sweep(&s, i, 3, &|_, _| {}).unwrap())
            .collect();
        let merged = merge_shards(parts.clone()).unwrap();
        let strip = |rs: &[TrialRow]| -> Vec<(usize, u64, String, u64)> {
            rs.iter()
                .map(|r| (r.job, r.seed, r.optimizer.clone(), r.objective.to_bits()))
                .collect()
        };
        assert_eq!(strip(&merged.rows), strip(&whole.rows));
        assert!(merge_shards(parts[..2].to_vec())
            .unwrap_err()
            .to_string()
            .contains("missing shards [2]"));
        let mut dup = parts.clone();
        dup.push(parts[0].clone());
        assert!(merge_shards(dup).is_err());
        // Per-cell summary against a direct count.
        let cells = summarize(&s, &merged.rows);
        assert_eq!(cells.len(), 3 * 2 * 2);
        for c in &cells {
            let rs: Vec<&TrialRow> = merged
                .rows
                .iter()
                .filter(|r| r.d == c.d && r.lambda == c.lambda && r.optimizer == c.optimizer)
                .collect();
            assert_eq!(c.trials, 3);
            let ok = rs
                .iter()
                .filter(|r| r.objective - c.reference <= 1e-7 * c.reference.abs().max(1.0))
                .count();
            assert_eq!(c.successes, ok);
            // d = 1 < K-1 = 2 has no closed form; d >= K-1 does.
            assert_eq!(
                c.reference_source,
                if c.d == 1 { "empirical" } else { "closed-form" }
            );
        }
        // Thm 3.2 territory (d = 4 > K): every trial reaches the global optimum.
        assert!(cells
            .iter()
            .filter(|c| c.d == 4)
            .all(|c| c.success_fraction == 1.0));
    }

    /// Shard files are input: an index at or beyond the count, a count of 0, rows of other
    /// jobs or an invalid spec are errors, never an index-out-of-bounds panic.
    #[test]
    fn merge_rejects_malformed_shards_without_panicking() {
        let mut s = spec();
        s.dims = vec![2];
        s.lambdas = vec![1e-2];
        s.trials = 2;
        s.optimizers.truncate(1);
        let a = run_sweep(&s, 0, 2, &|_, _| {}).unwrap();
        let b = run_sweep(&s, 1, 2, &|_, _| {}).unwrap();
        assert_eq!(
            merge_shards(vec![a.clone(), b.clone()]).unwrap().rows.len(),
            2
        );
        let msg = |parts: Vec<ShardOutput>| merge_shards(parts).unwrap_err().to_string();
        let mut bad = b.clone();
        bad.shard = 2;
        assert!(msg(vec![a.clone(), bad.clone()]).contains("below the shard count"));
        bad.shard = usize::MAX;
        assert!(msg(vec![bad]).contains("below the shard count"));
        let mut zero = a.clone();
        zero.n_shards = 0;
        assert!(msg(vec![zero]).contains("shard count"));
        let mut many = a.clone();
        many.n_shards = usize::MAX;
        assert!(msg(vec![many]).contains("shard count"));
        let mut swapped = a.clone();
        swapped.rows = b.rows.clone();
        assert!(msg(vec![swapped, b.clone()]).contains("does not hold exactly its jobs"));
        let mut empty = a.clone();
        empty.rows.clear();
        assert!(msg(vec![empty, b.clone()]).contains("does not hold exactly its jobs"));
        let mut invalid = a.clone();
        invalid.spec.trials = 0;
        assert!(msg(vec![invalid]).contains("not valid"));
        // a sweep too large to run is refused up front, its job count named
        let mut huge = s.clone();
        huge.trials = usize::MAX;
        let e = run_sweep(&huge, 0, 1, &|_, _| {}).unwrap_err().to_string();
        assert!(e.contains("trials") && e.contains("more than"), "{e}");
    }

    #[test]
    fn shard_files_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec();
        s.dims = vec![2];
        s.trials = 1;
        let out = run_sweep(&s, 1, 2, &|_, _| {}).unwrap();
        let stem = dir.path().join("trials-shard-1-of-2");
        write_shard(&stem, &out).unwrap();
        let back = read_shard(&stem.with_extension("json")).unwrap();
        assert_eq!(back.rows.len(), out.rows.len());
        for (a, b) in back.rows.iter().zip(&out.rows) {
            // serde_json parses floats to within one ulp.
            assert!((a.objective - b.objective).abs() <= 1e-15 * b.objective.abs());
            assert_eq!((a.job, a.seed, a.iterations), (b.job, b.seed, b.iterations));
        }
        let csv = std::fs::read_to_string(stem.with_extension("csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + out.rows.len());
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        let e = read_shard(&dir.path().join("bad.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.json"), "{e}");
    }
}
