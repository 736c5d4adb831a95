"""ufm: neural-collapse metrics, a streaming NC accumulator and the unconstrained feature
model, from Python (a PyO3 extension over the Rust library `ufm`).

    metrics(features, labels, W=None, b=None, ...)  every NC metric of a labelled feature matrix
    NCAccumulator(K, d)                              .update(features, labels) per batch, .merge,
                                                     .save/.load, .compute(W, b)
    solve(...), certify(...), hessian(...)           the `ufm solve|certify|hessian` subcommands
    list_metrics()                                   metric names and definitions

Features are NumPy arrays or torch CPU tensors (float32/float64, any memory order; read in place
through DLPack or ``__array__``, torch is never imported). Results are dicts with the keys of
the CLI's ``--json`` output. Bad input raises ValueError, file errors OSError, with the CLI's
messages. The Rust work runs with the GIL released, on ``RAYON_NUM_THREADS`` threads (default:
all cores).
"""

from ._ufm import (
    CLASS_STATS_VERSION,
    NCAccumulator,
    __version__,
    certify,
    hessian,
    list_metrics,
    metrics,
    solve,
)

__all__ = [
    "CLASS_STATS_VERSION",
    "NCAccumulator",
    "__version__",
    "certify",
    "hessian",
    "list_metrics",
    "metrics",
    "solve",
]
