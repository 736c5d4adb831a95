//! `ufm._ufm`: the Python extension of `ufm` (PyO3 + rust-numpy, abi3).
//!
//! A thin layer over the library, like the CLI: every function converts its arguments, calls
//! the library with the GIL released, and converts the result. Array arguments go through
//! `ufm._arrays` (NumPy arrays and torch CPU tensors, zero copy where possible). Errors become
//! `ValueError` (bad input), `OSError` (I/O) or `RuntimeError` (CUDA unavailable); a panic in
//! the library is caught and reported as a `RuntimeError` naming it as a bug, never as
//! PyO3's `PanicException`.

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use ndarray::{Array1, Array2};
use ufm::certify::{CertifySpec, ConvexOptions, Representation};
use ufm::landscape::{HessianOptions, LanczosOptions};
use ufm::metrics::{
    compute_metrics, metrics_from_stats, BufferedStats, ClassStats, FeatureChunk, GlobalMean,
    InMemory, Metric, MetricsConfig, MetricsReport, Strategy,
};
use ufm::solver::{OptimizerSpec, Precision, SolveSpec};
use ufm::ufm::{Loss, UfmConfig, UfmProblem};
use ufm::Error;

// ---------------------------------------------------------------------------------------------
// Errors

/// `ufm::Error` as a Python exception with the library's message.
fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::Io { source, .. } => match source.raw_os_error() {
            // (errno, message): Python picks the subclass (FileNotFoundError, ...).
            Some(code) => PyOSError::new_err((code, msg)),
            None => PyOSError::new_err(msg),
        },
        Error::CudaUnavailable(_) | Error::Cuda { .. } => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// Runs `f` (library work, no Python objects) with the GIL released; errors and panics become
/// Python exceptions.
fn run<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce() -> ufm::Result<T> + Send,
) -> PyResult<T> {
    let out = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(e)),
        Err(payload) => {
            let m = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(PyRuntimeError::new_err(format!(
                "internal error in ufm ({what}): {m}; this is a bug, please report it"
            )))
        }
    }
}

fn bad(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Arrays in

enum Features<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

impl Features<'_> {
    fn chunk(&self) -> FeatureChunk<'_> {
        match self {
            Features::F32(a) => FeatureChunk::F32(a.as_array()),
            Features::F64(a) => FeatureChunk::F64(a.as_array()),
        }
    }
}

fn helper<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("ufm._arrays")?.getattr(name)
}

fn features<'py>(x: &Bound<'py, PyAny>, name: &str) -> PyResult<Features<'py>> {
    let a = helper(x.py(), "as_features")?.call1((x, name))?;
    if let Ok(v) = a.extract::<PyReadonlyArray2<'py, f64>>() {
        return Ok(Features::F64(v));
    }
    match a.extract::<PyReadonlyArray2<'py, f32>>() {
        Ok(v) => Ok(Features::F32(v)),
        Err(e) => Err(bad(format!("{name}: cannot read the array: {e}"))),
    }
}

fn labels<'py>(y: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArray1<'py, u32>> {
    let a = helper(y.py(), "as_labels")?.call1((y, "labels"))?;
    a.extract::<PyReadonlyArray1<'py, u32>>()
        .map_err(|e| bad(format!("labels: cannot read the array: {e}")))
}

fn matrix(x: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<Array2<f64>>> {
    let Some(x) = x.filter(|x| !x.is_none()) else {
        return Ok(None);
    };
    let a = helper(x.py(), "as_real")?.call1((x, name, 2))?;
    let a = a
        .extract::<PyReadonlyArray2<'_, f64>>()
        .map_err(|e| bad(format!("{name}: cannot read the array: {e}")))?;
    Ok(Some(a.as_array().to_owned()))
}

fn vector(x: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<Array1<f64>>> {
    let Some(x) = x.filter(|x| !x.is_none()) else {
        return Ok(None);
    };
    let a = helper(x.py(), "as_real")?.call1((x, name, 1))?;
    let a = a
        .extract::<PyReadonlyArray1<'_, f64>>()
        .map_err(|e| bad(format!("{name}: cannot read the array: {e}")))?;
    Ok(Some(a.as_array().to_owned()))
}

/// `None`, `"nc1,nc2_w"` or `["nc1", "nc2_w"]`.
fn metric_list(m: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<Metric>>> {
    let Some(m) = m.filter(|m| !m.is_none()) else {
        return Ok(None);
    };
    let names: Vec<String> = if let Ok(s) = m.cast::<PyString>() {
        s.to_str()?.split(',').map(str::to_string).collect()
    } else {
        m.extract::<Vec<String>>()
            .map_err(|_| bad("metrics must be a comma-separated string or a list of names"))?
    };
    names
        .iter()
        .map(|n| n.parse::<Metric>().map_err(to_py))
        .collect::<PyResult<Vec<_>>>()
        .map(Some)
}

fn parse<T: std::str::FromStr<Err = Error>>(s: &str) -> PyResult<T> {
    s.parse::<T>().map_err(to_py)
}

// ---------------------------------------------------------------------------------------------
// Results out

/// A serialisable report as a Python dict with the keys, order and values of the CLI's
/// `--json` output (through Python's `json.loads`, so floats round-trip exactly).
fn json_dict<'py>(py: Python<'py>, v: &impl serde::Serialize) -> PyResult<Bound<'py, PyDict>> {
    let text = serde_json::to_string(v).map_err(|e| bad(format!("serialising the report: {e}")))?;
    let obj = py.import("json")?.getattr("loads")?.call1((text,))?;
    obj.cast_into::<PyDict>()
        .map_err(|_| PyRuntimeError::new_err("report is not a JSON object"))
}

/// A metrics report as a dict: the keys of `ufm metrics --json` (less `file`), with every
/// metric as a float (`nan` where the CLI prints `null`, i.e. undefined).
fn metrics_dict<'py>(py: Python<'py>, r: &MetricsReport) -> PyResult<Bound<'py, PyDict>> {
    let d = json_dict(py, r)?;
    for &m in Metric::ALL {
        if let Some(v) = r.get(m) {
            d.set_item(m.name(), v)?;
        }
    }
    Ok(d)
}

fn metrics_config(
    metrics: Option<&Bound<'_, PyAny>>,
    global_mean: &str,
    n_classes: Option<usize>,
    rtol: Option<f64>,
) -> PyResult<MetricsConfig> {
    Ok(MetricsConfig {
        metrics: metric_list(metrics)?,
        n_classes,
        global_mean: parse::<GlobalMean>(global_mean)?,
        rtol,
        ..MetricsConfig::default()
    })
}

// ---------------------------------------------------------------------------------------------
// ufm.metrics

/// Every NC metric of N x d features with labels in 0..K-1, and of the classifier W (K x d)
/// and bias b (K) when given: the dict `ufm metrics --json` prints (less `file`).
///
/// features: float32/float64 NumPy array or torch CPU tensor, any memory order (read in place;
///     copied only when misaligned or byte-swapped). labels: N integers (any integer dtype).
/// metrics: None (all the inputs allow), "nc1,nc3" or a list of names (see list_metrics()).
/// global_mean: "weighted" (sample mean, the original code) or "class-mean" (Papyan).
/// n_classes: K (default: largest label + 1; every class needs a sample).
/// rtol: relative rank tolerance of nc1's pseudo-inverse (default max(d, K) * eps).
/// strategy: "auto", "one-pass" (d x d scatter) or "two-pass" (K x K projection) for NC1.
/// device: "cpu", "cuda" or "auto" (class statistics on GPU 0 when usable).
///
/// Metric values are floats (nan where undefined: the CLI prints null). Raises ValueError for
/// bad input (shapes, dtypes, labels out of range, NaN/Inf) with the CLI's messages.
#[pyfunction]
#[pyo3(name = "metrics", signature = (features, labels, W=None, b=None, *, metrics=None,
    global_mean="weighted", n_classes=None, rtol=None, strategy="auto", device="cpu"))]
#[allow(clippy::too_many_arguments, non_snake_case)]
fn metrics_py<'py>(
    py: Python<'py>,
    features: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    W: Option<&Bound<'py, PyAny>>,
    b: Option<&Bound<'py, PyAny>>,
    metrics: Option<&Bound<'py, PyAny>>,
    global_mean: &str,
    n_classes: Option<usize>,
    rtol: Option<f64>,
    strategy: &str,
    device: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let x = self::features(features, "features")?;
    let y = self::labels(labels)?;
    let w = matrix(W, "W")?;
    let b = vector(b, "b")?;
    let cfg = MetricsConfig {
        strategy: parse::<Strategy>(strategy)?,
        device: parse(device)?,
        ..metrics_config(metrics, global_mean, n_classes, rtol)?
    };
    let (chunk, ys) = (x.chunk(), y.as_slice()?);
    let r = run(py, "metrics", || {
        compute_metrics(
            &InMemory(chunk),
            ys,
            w.as_ref().map(|w| w.view()),
            b.as_ref().map(|b| b.view()),
            &cfg,
        )
    })?;
    metrics_dict(py, &r)
}

/// The metric names with their one-line definitions (`ufm metrics --list-metrics`).
#[pyfunction]
fn list_metrics(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for &m in Metric::ALL {
        d.set_item(m.name(), m.description())?;
    }
    Ok(d)
}

// ---------------------------------------------------------------------------------------------
// ufm.NCAccumulator

/// Streaming, mergeable neural-collapse statistics: per-class counts, means, sums of squares
/// and the d x d within-class scatter, accumulated in float64 in one pass (each batch centred
/// on its own class means and merged with the Chan et al. update, so features far from the
/// origin lose no digits).
///
///     acc = ufm.NCAccumulator(n_classes, feature_dim, scatter=True)
///     acc.update(features, labels)    # per batch: (B, d) float32/64 array or CPU tensor
///     acc.merge(other)                # shards from other processes (to_bytes/from_bytes, pickle)
///     acc.save(path); ufm.NCAccumulator.load(path)     # versioned .npz, validated on load
///     acc.compute(W, b)               # the dict of ufm.metrics (all but ncc_agreement)
///
/// Small batches are gathered into blocks of about 2048 rows per thread before they are
/// summarised; every method sees them. update() releases the GIL; one accumulator must not be
/// updated from two threads at once (use one per thread and merge). scatter=False keeps
/// O(K d) memory and drops nc1 and nc1_papyan.
#[pyclass(name = "NCAccumulator", module = "ufm")]
struct NcAccumulator {
    /// Batches smaller than a block are gathered into blocks of ~2048 rows per thread.
    acc: BufferedStats,
}

impl NcAccumulator {
    fn wrap(stats: ClassStats) -> Self {
        NcAccumulator {
            acc: BufferedStats::new(stats),
        }
    }

    /// The statistics with the buffered rows summarised in (a copy).
    fn snapshot(&self, py: Python<'_>) -> PyResult<ClassStats> {
        let acc = &self.acc;
        run(py, "NCAccumulator", || acc.snapshot())
    }
}

#[pymethods]
impl NcAccumulator {
    #[new]
    #[pyo3(signature = (n_classes, feature_dim, scatter=true))]
    fn new(n_classes: usize, feature_dim: usize, scatter: bool) -> PyResult<Self> {
        if n_classes < 2 {
            return Err(bad(format!(
                "invalid value for `n_classes`: need at least 2 classes, got {n_classes}"
            )));
        }
        if feature_dim == 0 {
            return Err(bad("invalid value for `feature_dim`: must be at least 1"));
        }
        let cells = if scatter {
            feature_dim.checked_mul(feature_dim)
        } else {
            n_classes.checked_mul(feature_dim)
        };
        if cells
            .and_then(|c| c.checked_mul(8))
            .is_none_or(|bytes| bytes > isize::MAX as usize)
        {
            return Err(bad(format!(
                "feature_dim = {feature_dim} is too large for the {} statistics",
                if scatter { "d x d scatter" } else { "class" }
            )));
        }
        Ok(NcAccumulator::wrap(ClassStats::with_scatter(
            n_classes,
            feature_dim,
            scatter,
        )))
    }

    /// Adds a batch: features (B x d, float32/float64, any strides; a NumPy array or a CPU
    /// tensor) with labels (B integers in 0..K-1). The GIL is released while the batch is
    /// summarised. A bad batch raises ValueError and leaves the accumulator unchanged.
    fn update(
        &mut self,
        py: Python<'_>,
        features: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let x = self::features(features, "features")?;
        let y = self::labels(labels)?;
        let (chunk, ys) = (x.chunk(), y.as_slice()?);
        let acc = &mut self.acc;
        run(py, "NCAccumulator.update", || match chunk {
            FeatureChunk::F32(a) => acc.push(a, ys),
            FeatureChunk::F64(a) => acc.push(a, ys),
        })
    }

    /// Adds another accumulator's statistics (same K, d and scatter setting), e.g. a shard
    /// from another process; `other` is left unchanged.
    fn merge(&mut self, py: Python<'_>, other: PyRef<'_, NcAccumulator>) -> PyResult<()> {
        let o = other.snapshot(py)?;
        let acc = &mut self.acc;
        run(py, "NCAccumulator.merge", || acc.merge(o))
    }

    /// The metrics of everything seen so far, as `ufm.metrics` returns them (all but
    /// ncc_agreement, which needs a second pass over the features). The accumulator can keep
    /// accumulating afterwards.
    #[pyo3(signature = (W=None, b=None, *, metrics=None, global_mean="weighted", rtol=None))]
    #[allow(non_snake_case)]
    fn compute<'py>(
        &self,
        py: Python<'py>,
        W: Option<&Bound<'py, PyAny>>,
        b: Option<&Bound<'py, PyAny>>,
        metrics: Option<&Bound<'py, PyAny>>,
        global_mean: &str,
        rtol: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let w = matrix(W, "W")?;
        let b = vector(b, "b")?;
        let cfg = metrics_config(metrics, global_mean, None, rtol)?;
        let acc = &self.acc;
        let r = run(py, "NCAccumulator.compute", || {
            let st = acc.snapshot()?.finish()?;
            metrics_from_stats(
                &st,
                w.as_ref().map(|w| w.view()),
                b.as_ref().map(|b| b.view()),
                &cfg,
            )
        })?;
        metrics_dict(py, &r)
    }

    /// Writes the state atomically as a versioned .npz (counts, means, class_ss, scatter).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let acc = &self.acc;
        run(py, "NCAccumulator.save", || acc.snapshot()?.save(&path))
    }

    /// Reads a state written by `save`, validating every member (OSError if the file cannot be
    /// read, ValueError if it is not a valid state).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let stats = run(py, "NCAccumulator.load", || ClassStats::load(&path))?;
        Ok(NcAccumulator::wrap(stats))
    }

    /// The state as the bytes of the .npz file `save` writes (for sending between processes).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let acc = &self.acc;
        let bytes = run(py, "NCAccumulator.to_bytes", || {
            acc.snapshot()?.to_npz_bytes()
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The inverse of `to_bytes`, validated like `load`.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let data = data.to_vec();
        let stats = run(py, "NCAccumulator.from_bytes", || {
            ClassStats::from_npz_bytes(&data, "bytes")
        })?;
        Ok(NcAccumulator::wrap(stats))
    }

    /// An independent copy.
    fn copy(&self) -> Self {
        NcAccumulator {
            acc: self.acc.clone(),
        }
    }

    fn __copy__(&self) -> Self {
        self.copy()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.copy()
    }

    /// Pickling goes through `to_bytes`/`from_bytes`.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let ctor = slf.get_type().getattr("from_bytes")?;
        let bytes = slf.borrow().to_bytes(py)?;
        PyTuple::new(py, [ctor, PyTuple::new(py, [bytes])?.into_any()])
    }

    /// K.
    #[getter]
    fn n_classes(&self) -> usize {
        self.acc.n_classes()
    }

    /// d.
    #[getter]
    fn feature_dim(&self) -> usize {
        self.acc.feature_dim()
    }

    /// Samples seen so far.
    #[getter]
    fn n_samples(&self) -> u64 {
        self.acc.n_samples()
    }

    /// Whether the d x d within-class scatter is tracked (needed by nc1 and nc1_papyan).
    #[getter]
    fn tracks_scatter(&self) -> bool {
        self.acc.tracks_scatter()
    }

    /// Per-class counts so far (uint64, K).
    #[getter]
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<u64>>> {
        Ok(self.snapshot(py)?.counts().to_vec().into_pyarray(py))
    }

    /// Class means so far (float64, K x d; zero rows for classes not seen yet).
    #[getter]
    fn means<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        Ok(self.snapshot(py)?.means().to_owned().into_pyarray(py))
    }

    /// Per-class sums of squared deviations from the class mean (float64, K).
    #[getter]
    fn class_sums_of_squares<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        Ok(self
            .snapshot(py)?
            .class_sums_of_squares()
            .to_vec()
            .into_pyarray(py))
    }

    /// The within-class scatter sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T (float64, d x d), or
    /// None when not tracked.
    #[getter]
    fn scatter<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArray2<f64>>>> {
        Ok(self.snapshot(py)?.scatter().map(|s| s.into_pyarray(py)))
    }

    fn __repr__(&self) -> String {
        format!(
            "NCAccumulator(n_classes={}, feature_dim={}, scatter={}; {} samples)",
            self.acc.n_classes(),
            self.acc.feature_dim(),
            if self.acc.tracks_scatter() {
                "True"
            } else {
                "False"
            },
            self.acc.n_samples()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// ufm.solve / certify / hessian: the CLI's problem and solver flags (src/bin/ufm/cmd_solve.rs)

/// `--classes --dim --per-class --class-sizes --lambda-w --lambda-h --lambda-b --no-bias --loss`.
struct ProblemArgs {
    classes: usize,
    dim: usize,
    per_class: usize,
    class_sizes: Option<Vec<usize>>,
    lambda_w: f64,
    lambda_h: f64,
    lambda_b: f64,
    no_bias: bool,
    loss: String,
}

impl ProblemArgs {
    fn build(&self) -> PyResult<UfmProblem> {
        let sizes = match &self.class_sizes {
            Some(s) => s.clone(),
            None => vec![self.per_class; self.classes],
        };
        let loss: Loss = parse(&self.loss)?;
        UfmConfig::with_class_sizes(sizes, self.dim)
            .lambdas(self.lambda_w, self.lambda_h, self.lambda_b)
            .loss(loss)
            .bias(!self.no_bias)
            .build()
            .map_err(to_py)
    }
}

/// `--optimizer --lr --history-size --precision --seed --init-scale --tol --max-iter
/// --time-limit`, with the CLI's precision-dependent defaults of `tol` and the gap tolerance.
struct SolverArgs {
    optimizer: String,
    lr: f64,
    history_size: usize,
    precision: String,
    seed: u64,
    init_scale: f64,
    tol: Option<f64>,
    max_iter: usize,
    time_limit: Option<f64>,
}

impl SolverArgs {
    fn spec(&self) -> PyResult<SolveSpec> {
        let precision: Precision = parse(&self.precision)?;
        let (default_tol, gap_tol) = match precision {
            Precision::F64 => (1e-9, 1e-8),
            Precision::F32 => (1e-4, 1e-4),
        };
        Ok(SolveSpec {
            optimizer: OptimizerSpec::parse(&self.optimizer, self.lr, self.history_size)
                .map_err(to_py)?,
            precision,
            seed: self.seed,
            init_scale: self.init_scale,
            tol: self.tol.unwrap_or(default_tol),
            max_iter: self.max_iter,
            time_limit: self.time_limit,
            gap_tol,
            ..SolveSpec::default()
        })
    }
}

/// `W` (K x d), `H` (d x N, the paper's orientation), `b` (K; zeros without a bias) and
/// `labels` of a flat point, as `ufm solve --save` writes them.
fn point_arrays<T>(py: Python<'_>, d: &Bound<'_, PyDict>, p: &UfmProblem, x: &[T]) -> PyResult<()>
where
    T: numpy::Element + ufm::Real,
{
    p.check_len("point", x).map_err(to_py)?;
    let (w, ht, b) = p.split(x);
    d.set_item("W", w.to_owned().into_pyarray(py))?;
    d.set_item("H", ht.t().to_owned().into_pyarray(py))?;
    let b: Array1<T> = b.map_or_else(|| Array1::zeros(p.n_classes()), |b| b.to_owned());
    d.set_item("b", b.into_pyarray(py))?;
    let labels: Vec<i64> = p.labels().iter().map(|&y| y as i64).collect();
    d.set_item("labels", labels.into_pyarray(py))?;
    Ok(())
}

/// `ufm solve`: the dict of `ufm solve --json` plus the solution's arrays W, H, b, labels.
#[pyfunction]
#[pyo3(signature = (*, classes=10, dim=12, per_class=20, class_sizes=None, lambda_w=5e-4,
    lambda_h=5e-4, lambda_b=5e-4, no_bias=false, loss="ce", optimizer="lbfgs", lr=1.0,
    history_size=10, precision="f64", seed=0, init_scale=1.0, tol=None, max_iter=10_000,
    time_limit=None, device="cpu", trace=None, trace_every=10, save=None))]
#[allow(clippy::too_many_arguments)]
fn solve<'py>(
    py: Python<'py>,
    classes: usize,
    dim: usize,
    per_class: usize,
    class_sizes: Option<Vec<usize>>,
    lambda_w: f64,
    lambda_h: f64,
    lambda_b: f64,
    no_bias: bool,
    loss: &str,
    optimizer: &str,
    lr: f64,
    history_size: usize,
    precision: &str,
    seed: u64,
    init_scale: f64,
    tol: Option<f64>,
    max_iter: usize,
    time_limit: Option<f64>,
    device: &str,
    trace: Option<PathBuf>,
    trace_every: usize,
    save: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let p = ProblemArgs {
        classes,
        dim,
        per_class,
        class_sizes,
        lambda_w,
        lambda_h,
        lambda_b,
        no_bias,
        loss: loss.to_string(),
    }
    .build()?;
    let mut spec = SolverArgs {
        optimizer: optimizer.to_string(),
        lr,
        history_size,
        precision: precision.to_string(),
        seed,
        init_scale,
        tol,
        max_iter,
        time_limit,
    }
    .spec()?;
    if trace.is_some() {
        spec.trace_every = trace_every.max(1);
    }
    let device = parse(device)?;
    let (out, dev, note) = run(py, "solve", || {
        let out = ufm::backend::solve(&p, &spec, None, device)?;
        if let Some(path) = &trace {
            if let Some(t) = &out.0.trace {
                t.write(path)?;
            }
        }
        if let Some(path) = &save {
            match &out.0.x_f32 {
                Some(x) => ufm::io::save_ufm_npz(path, &p, x)?,
                None => ufm::io::save_ufm_npz(path, &p, &out.0.x)?,
            }
        }
        Ok(out)
    })?;
    let d = json_dict(py, &out.summary)?;
    d.set_item("device", dev)?;
    d.set_item("device_note", note)?;
    match &out.x_f32 {
        Some(x) => point_arrays(py, &d, &p, x)?,
        None => point_arrays(py, &d, &p, &out.x)?,
    }
    Ok(d)
}

/// `ufm certify`: the dict of `ufm certify --json` plus the non-convex solution (W, H, b,
/// labels) and the factored convex optimum (W_convex, H_convex).
#[pyfunction]
#[pyo3(signature = (*, classes=10, dim=12, per_class=20, class_sizes=None, lambda_w=5e-4,
    lambda_h=5e-4, lambda_b=5e-4, no_bias=false, loss="ce", optimizer="lbfgs", lr=1.0,
    history_size=10, precision="f64", seed=0, init_scale=1.0, tol=None, max_iter=10_000,
    time_limit=None, convex_tol=1e-10, convex_max_iter=50_000, rank_tol=1e-6, gap_tol=1e-8,
    per_sample=false, no_polish=false))]
#[allow(clippy::too_many_arguments)]
fn certify<'py>(
    py: Python<'py>,
    classes: usize,
    dim: usize,
    per_class: usize,
    class_sizes: Option<Vec<usize>>,
    lambda_w: f64,
    lambda_h: f64,
    lambda_b: f64,
    no_bias: bool,
    loss: &str,
    optimizer: &str,
    lr: f64,
    history_size: usize,
    precision: &str,
    seed: u64,
    init_scale: f64,
    tol: Option<f64>,
    max_iter: usize,
    time_limit: Option<f64>,
    convex_tol: f64,
    convex_max_iter: usize,
    rank_tol: f64,
    gap_tol: f64,
    per_sample: bool,
    no_polish: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let p = ProblemArgs {
        classes,
        dim,
        per_class,
        class_sizes,
        lambda_w,
        lambda_h,
        lambda_b,
        no_bias,
        loss: loss.to_string(),
    }
    .build()?;
    let spec = CertifySpec {
        solve: SolverArgs {
            optimizer: optimizer.to_string(),
            lr,
            history_size,
            precision: precision.to_string(),
            seed,
            init_scale,
            tol,
            max_iter,
            time_limit,
        }
        .spec()?,
        convex: ConvexOptions {
            rel_tol: convex_tol,
            max_iter: convex_max_iter,
            ..ConvexOptions::default()
        },
        representation: if per_sample {
            Representation::PerSample
        } else {
            Representation::ClassCollapsed
        },
        rank_tol,
        gap_tol,
        polish: !no_polish,
    };
    let out = run(py, "certify", || ufm::certify::certify(&p, &spec))?;
    let d = json_dict(py, &out.report)?;
    point_arrays(py, &d, &p, &out.x_nonconvex)?;
    d.set_item("W_convex", out.factors.w.clone().into_pyarray(py))?;
    d.set_item("H_convex", out.factors.ht.t().to_owned().into_pyarray(py))?;
    Ok(d)
}

/// `ufm hessian`: the dict of `ufm hessian --json` plus `eigenvalues` (ascending; None on the
/// Lanczos path) and the analysed point (W, H, b, labels).
#[pyfunction]
#[pyo3(signature = (*, classes=10, dim=12, per_class=20, class_sizes=None, lambda_w=5e-4,
    lambda_h=5e-4, lambda_b=5e-4, no_bias=false, loss="ce", optimizer="lbfgs", lr=1.0,
    history_size=10, precision="f64", seed=0, init_scale=1.0, tol=None, max_iter=10_000,
    time_limit=None, zero_tol=ufm::landscape::spectrum::DEFAULT_REL_TOL, dense_limit=3000,
    lanczos=false, collapsed=false, lanczos_steps=300, lanczos_tol=1e-8, load=None,
    no_polish=false, W=None, H=None, b=None))]
#[allow(clippy::too_many_arguments, non_snake_case)]
fn hessian<'py>(
    py: Python<'py>,
    classes: usize,
    dim: usize,
    per_class: usize,
    class_sizes: Option<Vec<usize>>,
    lambda_w: f64,
    lambda_h: f64,
    lambda_b: f64,
    no_bias: bool,
    loss: &str,
    optimizer: &str,
    lr: f64,
    history_size: usize,
    precision: &str,
    seed: u64,
    init_scale: f64,
    tol: Option<f64>,
    max_iter: usize,
    time_limit: Option<f64>,
    zero_tol: f64,
    dense_limit: usize,
    lanczos: bool,
    collapsed: bool,
    lanczos_steps: usize,
    lanczos_tol: f64,
    load: Option<PathBuf>,
    no_polish: bool,
    W: Option<&Bound<'py, PyAny>>,
    H: Option<&Bound<'py, PyAny>>,
    b: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    if lanczos && collapsed {
        return Err(bad("lanczos=True and collapsed=True exclude each other"));
    }
    let p = ProblemArgs {
        classes,
        dim,
        per_class,
        class_sizes,
        lambda_w,
        lambda_h,
        lambda_b,
        no_bias,
        loss: loss.to_string(),
    }
    .build()?;
    let spec = SolverArgs {
        optimizer: optimizer.to_string(),
        lr,
        history_size,
        precision: precision.to_string(),
        seed,
        init_scale,
        tol,
        max_iter,
        time_limit,
    }
    .spec()?;
    let (w, h, b) = (matrix(W, "W")?, matrix(H, "H")?, vector(b, "b")?);
    let given = match (w, h) {
        (Some(w), Some(h)) => {
            if load.is_some() {
                return Err(bad("give either load= or the point (W=, H=, b=), not both"));
            }
            Some((w, h, b))
        }
        (None, None) if b.is_none() => None,
        _ => {
            return Err(bad(
                "a point needs both W (K x d) and H (d x N); b is optional",
            ))
        }
    };
    let opts = HessianOptions {
        rel_tol: zero_tol,
        dense_limit: if lanczos || collapsed { 0 } else { dense_limit },
        want_vector: false,
        use_collapsed: !lanczos,
        lanczos: LanczosOptions {
            max_iter: lanczos_steps,
            tol: lanczos_tol,
            seed: spec.seed,
        },
    };
    let (x, r) = run(py, "hessian", || {
        let x = match (&load, &given) {
            (Some(path), _) => ufm::io::load_ufm_npz(path, &p)?,
            (None, Some((w, h, b))) => {
                let x = p.join(w.view(), h.t(), b.as_ref().map(|b| b.view()))?;
                if x.iter().any(|v| !v.is_finite()) {
                    return Err(Error::NonFinite {
                        what: "the point (W, H, b)".into(),
                    });
                }
                x
            }
            (None, None) => {
                let mut x = ufm::solver::solve(&p, &spec, None)?.x;
                if !no_polish {
                    ufm::landscape::critical::newton_polish(&p, &mut x, 1e-11)?;
                }
                x
            }
        };
        let r = ufm::landscape::hessian_report(&p, &x, &opts)?;
        Ok((x, r))
    })?;
    let d = json_dict(py, &r)?;
    d.set_item(
        "eigenvalues",
        r.hessian.eigenvalues.clone().map(|e| e.into_pyarray(py)),
    )?;
    point_arrays(py, &d, &p, &x)?;
    Ok(d)
}

/// Panics inside the library call wrapper, on a rayon worker thread when `in_pool` (for the
/// test that a panic reaches Python as a RuntimeError, never as a PanicException).
#[pyfunction]
#[pyo3(signature = (in_pool=false))]
fn _test_panic(py: Python<'_>, in_pool: bool) -> PyResult<()> {
    run(py, "_test_panic", || -> ufm::Result<()> {
        if in_pool {
            rayon::scope(|s| s.spawn(|_| panic!("deliberate panic in a worker thread")));
        }
        panic!("deliberate panic")
    })
}

// ---------------------------------------------------------------------------------------------

/// The compiled part of the `ufm` package.
#[pymodule]
fn _ufm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(metrics_py, m)?)?;
    m.add_function(wrap_pyfunction!(list_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(solve, m)?)?;
    m.add_function(wrap_pyfunction!(certify, m)?)?;
    m.add_function(wrap_pyfunction!(hessian, m)?)?;
    m.add_function(wrap_pyfunction!(_test_panic, m)?)?;
    m.add_class::<NcAccumulator>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "CLASS_STATS_VERSION",
        ufm::metrics::stats::CLASS_STATS_VERSION,
    )?;
    Ok(())
}
