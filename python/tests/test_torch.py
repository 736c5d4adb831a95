"""torch CPU tensors are accepted (read through DLPack, gradients detached); skipped cleanly
when torch is not installed. ufm itself never imports torch."""

import sys

import numpy as np
import pytest

import ufm
from conftest import make_data
from reference import METRIC_KEYS

torch = pytest.importorskip("torch")


def test_ufm_does_not_import_torch():
    import subprocess

    code = "import sys, ufm; ufm.metrics([[0.0, 1.0], [1.0, 0.0]], [0, 1]); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tensors_give_the_numpy_numbers():
    h, y, w, b = make_data(n=500, d=8, k=4, seed=20)
    h32 = h.astype(np.float32)
    th = torch.from_numpy(h32).requires_grad_(True)
    lin = torch.nn.Linear(8, 4).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    got = ufm.metrics(th, torch.from_numpy(y), lin.weight, lin.bias)
    want = ufm.metrics(h32, y, w, b)
    for key in METRIC_KEYS:
        assert got[key] == want[key], key


def test_accumulator_takes_tensor_batches_of_any_layout():
    h, y, w, b = make_data(n=1200, d=6, k=3, seed=21)
    th, ty = torch.from_numpy(h), torch.from_numpy(y)
    acc_t, acc_n = ufm.NCAccumulator(3, 6), ufm.NCAccumulator(3, 6)
    for s in range(0, 1200, 200):
        batch = th[s:s + 200]
        if s == 400:
            batch = batch.t().contiguous().t()  # column-major tensor
        if s == 600:
            batch = torch.stack([batch, batch], dim=2).reshape(200, 12)[:, ::2]  # strided columns
        acc_t.update(batch, ty[s:s + 200])
        acc_n.update(h[s:s + 200], y[s:s + 200])
    got, want = acc_t.compute(w, b), acc_n.compute(w, b)
    for key in METRIC_KEYS:
        if key in want:
            assert abs(got[key] - want[key]) <= 1e-12 * max(1.0, abs(want[key])), key


def test_strided_tensor_view_is_read_in_place():
    h, y, _, _ = make_data(n=400, d=10, k=4, seed=22)
    th = torch.from_numpy(h)[::2, 1:9]
    got = ufm.metrics(th, torch.from_numpy(y)[::2])
    want = ufm.metrics(np.ascontiguousarray(h[::2, 1:9]), y[::2])
    assert got["nc1"] == pytest.approx(want["nc1"], rel=1e-12)


def test_unsupported_tensors_are_value_errors():
    h, y, _, _ = make_data(n=50, d=4, k=2, seed=23)
    with pytest.raises(ValueError, match="float32 or float64|float"):
        ufm.metrics(torch.from_numpy(h).to(torch.bfloat16), torch.from_numpy(y))
    with pytest.raises(ValueError, match="float32 or float64"):
        ufm.metrics(torch.from_numpy(h).half(), torch.from_numpy(y))
    with pytest.raises(ValueError, match="integers"):
        ufm.metrics(torch.from_numpy(h), torch.from_numpy(y).double())
