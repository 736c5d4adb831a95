import os
import pathlib
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

ROOT = pathlib.Path(__file__).resolve().parents[2]


def ufm_binary():
    """The `ufm` CLI, for parity tests: $UFM_BIN, else target/{debug,release}/ufm of this
    repository (built by `cargo test` / `cargo build`), else `ufm` on PATH."""
    env = os.environ.get("UFM_BIN")
    if env:
        return env
    for sub in ("target/debug/ufm", "target/release/ufm"):
        if (ROOT / sub).exists():
            return str(ROOT / sub)
    return shutil.which("ufm")


@pytest.fixture
def cli():
    b = ufm_binary()
    if not b:
        pytest.skip("no ufm binary (cargo build --bin ufm, or set UFM_BIN)")
    return b


def make_data(n=600, d=12, k=4, seed=0, offset=0.0, spread=1.0):
    """Imbalanced classes, class means far apart in some directions, Gaussian spread; a
    classifier near the class means and a small bias."""
    rng = np.random.default_rng(seed)
    p = np.linspace(1.0, 2.0, k)
    y = rng.choice(k, size=n, p=p / p.sum())
    y[:k] = np.arange(k)  # every class present
    centres = rng.normal(size=(k, d)) * 3.0
    h = offset + centres[y] + spread * rng.normal(size=(n, d))
    w = centres + 0.3 * rng.normal(size=(k, d))
    b = 0.1 * rng.normal(size=k)
    return h, y.astype(np.int64), w, b


def rel_close(a, b, rtol, floor=1e-12):
    return abs(a - b) <= rtol * max(abs(a), abs(b), floor)
