"""Bad input raises ValueError (OSError for files) with the library's message; nothing reaches
Python as a PanicException."""

import numpy as np
import pytest

import ufm
from conftest import make_data

H, Y, W, B = make_data(n=60, d=5, k=3, seed=30)


@pytest.mark.parametrize(
    "features, labels, kwargs, needle",
    [
        (H[0], Y, {}, "2-D"),
        (H[None], Y, {}, "2-D"),
        (H.astype(np.int64), Y, {}, "float32 or float64"),
        (H.astype(np.float16), Y, {}, "float32 or float64"),
        ("abc", Y, {}, "float32 or float64"),
        (H, Y.astype(np.float64), {}, "integers"),
        (H, Y[:, None], {}, "1-D"),
        (H, -Y, {}, "negative"),
        (H, Y[:-1], {}, "59"),
        (H, np.where(np.arange(60) == 7, 5, Y), {"n_classes": 3}, "label 5 at index 7"),
        (H, np.zeros(60, dtype=np.int64), {}, "at least 2 classes"),
        (H[:, :0], Y, {}, "zero feature columns"),
        (H[:0], Y[:0], {}, "no samples"),
        (H, Y, {"n_classes": 4}, r"\[3\] have no samples"),
        (H, Y, {"W": W[:, :4]}, "3x5"),
        (H, Y, {"W": np.full((3, 5), np.nan)}, "non-finite"),
        (H, Y, {"b": B}, "without the classifier"),
        (H, Y, {"W": W, "b": B[:2]}, "3 entries"),
        (H, Y, {"global_mean": "median"}, "global mean"),
        (H, Y, {"strategy": "three-pass"}, "strategy"),
        (H, Y, {"device": "tpu"}, "tpu"),
        (H, Y, {"metrics": 3}, "comma-separated"),
    ],
)
def test_bad_metrics_input_is_a_value_error(features, labels, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ufm.metrics(features, labels, **kwargs)


def test_nan_and_inf_name_the_row():
    for bad in (np.nan, np.inf, -np.inf):
        h = H.copy()
        h[41, 3] = bad
        with pytest.raises(ValueError, match="feature row 41"):
            ufm.metrics(h, Y)
        with pytest.raises(ValueError, match="feature row 41"):
            ufm.metrics(h.astype(np.float32), Y)


def test_foreign_byte_order_and_misaligned_arrays_are_read():
    want = ufm.metrics(H, Y)["nc1"]
    assert ufm.metrics(H.astype(">f8"), Y.astype(">i8"))["nc1"] == want
    buf = np.zeros(H.size * 8 + 1, dtype=np.uint8)
    mis = np.frombuffer(buf.data, dtype=np.float64, count=H.size, offset=1).reshape(H.shape)
    assert not mis.flags.aligned
    mis_w = mis.copy()  # fill through a writable aligned copy, then back into the buffer
    mis_w[...] = H
    buf[1:] = np.frombuffer(mis_w.tobytes(), dtype=np.uint8)
    assert ufm.metrics(mis, Y)["nc1"] == want


def test_cuda_without_a_gpu_is_a_clear_error():
    try:
        ufm.metrics(H, Y, device="cuda")
    except (RuntimeError, ValueError) as e:
        assert "CUDA" in str(e) or "cuda" in str(e)
    # auto falls back to the CPU
    assert ufm.metrics(H, Y, device="auto")["nc1"] == ufm.metrics(H, Y)["nc1"]


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"classes": 1}, "class"),
        ({"dim": 0}, "dim"),
        ({"lambda_w": -1.0}, "lambda"),
        ({"loss": "hinge"}, "hinge"),
        ({"optimizer": "adam"}, "adam"),
        ({"precision": "f16"}, "f16"),
        ({"class_sizes": [5, 0, 5]}, "class"),
        ({"lr": float("nan"), "optimizer": "gd"}, "lr|step|learning"),
    ],
)
def test_bad_solver_options_are_value_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ufm.solve(**kwargs)


def test_hessian_option_conflicts_and_points():
    with pytest.raises(ValueError, match="exclude each other"):
        ufm.hessian(lanczos=True, collapsed=True)
    with pytest.raises(ValueError, match="both W"):
        ufm.hessian(classes=2, dim=2, per_class=2, W=np.eye(2))
    with pytest.raises(ValueError, match="W"):
        ufm.hessian(classes=2, dim=2, per_class=2, W=np.eye(3), H=np.zeros((3, 4)))
    with pytest.raises(OSError):
        ufm.hessian(classes=2, dim=2, per_class=2, load="/nonexistent/point.npz")


def test_positional_misuse_is_a_type_error():
    with pytest.raises(TypeError):
        ufm.solve(3)
    with pytest.raises(TypeError):
        ufm.metrics(H)


def test_a_library_panic_is_a_runtime_error_not_a_panic_exception():
    from ufm import _ufm

    for in_pool in (False, True):
        with pytest.raises(RuntimeError, match=r"internal error in ufm \(_test_panic\): deliberate panic") as e:
            _ufm._test_panic(in_pool)
        assert type(e.value) is RuntimeError
    # The interpreter and the library still work afterwards.
    assert ufm.metrics(H, Y)["n_samples"] == 60
