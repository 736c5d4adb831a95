"""ufm.metrics against the NumPy references of reference.py, in every dtype and memory order,
and against the CLI's `ufm metrics --json`."""

import json
import subprocess

import numpy as np
import pytest

import ufm
from conftest import make_data, rel_close
from reference import METRIC_KEYS, all_metrics


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("global_mean", ["weighted", "class-mean"])
def test_every_metric_matches_the_numpy_reference(dtype, order, global_mean):
    h, y, w, b = make_data(n=700, d=13, k=5, seed=1, offset=4.0)
    h = np.asarray(h.astype(dtype), order=order)
    r = ufm.metrics(h, y, w, b, global_mean=global_mean)
    # The reference sees exactly the values ufm sees (f32 widened to f64).
    ref = all_metrics(h.astype(np.float64), y, 5, w, b, global_mean.replace("-", "_"))
    assert r["n_classes"] == 5 and r["n_samples"] == 700 and r["feature_dim"] == 13
    assert r["class_counts"] == ref["class_counts"]
    assert r["global_mean"] == global_mean.replace("-", "_")
    for key in METRIC_KEYS:
        assert rel_close(r[key], ref[key], 1e-9), (key, r[key], ref[key])


def test_without_classifier_only_feature_metrics():
    h, y, _, _ = make_data(seed=2)
    r = ufm.metrics(h, y)
    ref = all_metrics(h, y, 4)
    present = [k for k in METRIC_KEYS if k in r]
    assert present == [k for k in METRIC_KEYS if k in ref]
    assert "nc2_w" not in r and "ncc_agreement" not in r
    for key in present:
        assert rel_close(r[key], ref[key], 1e-9), key


def test_layouts_give_the_same_numbers():
    """Strided, reversed and transposed views are read in place and agree with a contiguous
    copy (the reversed columns with reversed W columns)."""
    h, y, w, b = make_data(n=900, d=10, k=3, seed=3)
    base = ufm.metrics(h, y, w, b)
    views = {
        "every other row": (h[::2], y[::2], w),
        "reversed columns": (h[:, ::-1], y, w[:, ::-1]),
        "reversed rows": (h[::-1], y[::-1], w),
        "fortran": (np.asfortranarray(h), y, w),
    }
    for name, (hv, yv, wv) in views.items():
        got = ufm.metrics(hv, yv, wv, b)
        want = ufm.metrics(np.ascontiguousarray(hv), np.ascontiguousarray(yv), np.ascontiguousarray(wv), b)
        for key in METRIC_KEYS:
            assert rel_close(got[key], want[key], 1e-12), (name, key)
    assert base["n_samples"] == 900


def test_strategies_agree():
    h, y, w, b = make_data(n=500, d=20, k=4, seed=4, offset=50.0)
    one = ufm.metrics(h, y, w, b, strategy="one-pass")
    two = ufm.metrics(h, y, w, b, strategy="two-pass")
    for key in METRIC_KEYS:
        assert rel_close(one[key], two[key], 1e-10), key


def test_metric_selection_by_name():
    h, y, w, b = make_data(seed=5)
    r = ufm.metrics(h, y, w, b, metrics="nc1,nc3")
    assert [k for k in METRIC_KEYS if k in r] == ["nc1", "nc3"]
    r2 = ufm.metrics(h, y, w, b, metrics=["nc3", "nc1"])
    assert r2["nc1"] == r["nc1"] and r2["nc3"] == r["nc3"]
    with pytest.raises(ValueError, match="unknown metric `nc9`"):
        ufm.metrics(h, y, metrics="nc9")
    with pytest.raises(ValueError, match="needs the classifier W"):
        ufm.metrics(h, y, metrics="nc3")


def test_undefined_metric_is_nan():
    """Both class means at the origin: the class-mean Gram matrix is zero and its ETF error is
    undefined (the CLI prints null)."""
    h = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    y = np.array([0, 0, 1, 1])
    r = ufm.metrics(h, y, metrics="nc2_h,cdnv")
    assert np.isnan(r["nc2_h"])
    assert np.isinf(r["cdnv"])


def test_list_metrics_names_every_metric():
    assert list(ufm.list_metrics()) == METRIC_KEYS


def test_keys_and_values_equal_the_cli_json(cli, tmp_path):
    h, y, w, b = make_data(n=400, d=9, k=4, seed=6)
    h = h.astype(np.float32)
    for name, a in {"H": h, "y": y, "W": w, "b": b}.items():
        np.save(tmp_path / f"{name}.npy", a)
    out = subprocess.run(
        [cli, "metrics", "--features", str(tmp_path / "H.npy"), "--labels", str(tmp_path / "y.npy"),
         "--weights", str(tmp_path / "W.npy"), "--bias", str(tmp_path / "b.npy"), "--json"],
        check=True, capture_output=True, text=True,
    )
    want = json.loads(out.stdout)
    want.pop("file")
    got = ufm.metrics(h, y, w, b)
    assert list(got) == list(want)
    for key, v in want.items():
        if isinstance(v, float):
            assert rel_close(got[key], v, 1e-12), key
        else:
            assert got[key] == v, key
