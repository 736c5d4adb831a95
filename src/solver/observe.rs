//! Observers: traces of $f$, $\lVert\nabla f\rVert$, time and user metrics, written to CSV or
//! JSON so that figures are drawn from exported data.

use super::Progress;
use crate::error::{Error, Result};
use crate::real::Real;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Called by the [`Executor`](super::Executor) every `observe_every` iterations.
pub trait Observer<T: Real> {
    /// Sees the iteration number, the solver's progress, the current point and the solver
    /// time so far (seconds).
    fn observe(&mut self, iter: usize, progress: &Progress, x: &[T], seconds: f64) -> Result<()>;
}

/// One row of a trace.
#[derive(Clone, Debug, Serialize)]
pub struct TraceRow {
    /// Iteration.
    pub iter: usize,
    /// Objective.
    pub f: f64,
    /// Gradient norm.
    pub grad_norm: f64,
    /// Solver seconds so far.
    pub seconds: f64,
    /// Extra columns (NC metrics, gap to the optimum, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, f64>,
}

/// A recorded trace.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Trace {
    /// Rows in iteration order.
    pub rows: Vec<TraceRow>,
}

impl Trace {
    /// Column names: `iter,f,grad_norm,seconds` then the extra keys (sorted).
    pub fn columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = ["iter", "f", "grad_norm", "seconds"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut extra: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| r.extra.keys().cloned())
            .collect();
        extra.sort();
        extra.dedup();
        cols.extend(extra);
        cols
    }

    /// CSV text with a header row.
    pub fn to_csv(&self) -> String {
        let cols = self.columns();
        let mut s = cols.join(",");
        s.push('\n');
        for r in &self.rows {
            let mut fields = vec![
                r.iter.to_string(),
                fmt(r.f),
                fmt(r.grad_norm),
                fmt(r.seconds),
            ];
            for c in &cols[4..] {
                fields.push(r.extra.get(c).map_or(String::new(), |v| fmt(*v)));
            }
            s.push_str(&fields.join(","));
            s.push('\n');
        }
        s
    }

    /// Writes CSV (`.csv`) or JSON (any other extension) atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            self.to_csv()
        } else {
            serde_json::to_string_pretty(self)?
        };
        crate::io::write_atomic(path, text.as_bytes())
    }
}

fn fmt(v: f64) -> String {
    format!("{v:e}")
}

/// Extra trace columns computed from the current point.
pub type MetricsFn<'a, T> = Box<dyn FnMut(&[T]) -> Result<BTreeMap<String, f64>> + 'a>;

/// Records a [`Trace`]; `metrics` adds extra columns computed from the current point.
pub struct TraceRecorder<'a, T> {
    /// The recorded rows.
    pub trace: Trace,
    metrics: Option<MetricsFn<'a, T>>,
    echo: Option<Box<dyn Write + 'a>>,
}

impl<'a, T: Real> TraceRecorder<'a, T> {
    /// A recorder of $f$, $\lVert\nabla f\rVert$ and time only.
    pub fn new() -> Self {
        TraceRecorder {
            trace: Trace::default(),
            metrics: None,
            echo: None,
        }
    }
    /// Adds extra columns computed from $x$ at each observation.
    pub fn with_metrics(
        mut self,
        f: impl FnMut(&[T]) -> Result<BTreeMap<String, f64>> + 'a,
    ) -> Self {
        self.metrics = Some(Box::new(f));
        self
    }
    /// Also prints each row to `w` (progress display).
    pub fn echo_to(mut self, w: impl Write + 'a) -> Self {
        self.echo = Some(Box::new(w));
        self
    }
}

impl<T: Real> Default for TraceRecorder<'_, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Real> Observer<T> for TraceRecorder<'_, T> {
    fn observe(&mut self, iter: usize, p: &Progress, x: &[T], seconds: f64) -> Result<()> {
        let extra = match self.metrics.as_mut() {
            Some(m) => m(x)?,
            None => BTreeMap::new(),
        };
        if let Some(w) = self.echo.as_mut() {
            let mut line = format!("iter {iter:>6}  f {:.12e}  |grad| {:.3e}", p.f, p.grad_norm);
            for (k, v) in &extra {
                line.push_str(&format!("  {k} {v:.3e}"));
            }
            writeln!(w, "{line}").map_err(|e| Error::io("write", "<progress output>", e))?;
        }
        self.trace.rows.push(TraceRow {
            iter,
            f: p.f,
            grad_norm: p.grad_norm,
            seconds,
            extra,
        });
        Ok(())
    }
}
