"""ufm.solve / certify / hessian against NumPy: the objective recomputed from the returned
arrays, stationarity by finite differences, the Hessian's spectrum from a finite-difference
Hessian, and parity with the CLI's --json."""

import json
import subprocess

import numpy as np
import pytest

import ufm
from reference import ufm_objective

SMALL = dict(classes=3, dim=4, per_class=5, lambda_w=5e-3, lambda_h=5e-3, lambda_b=5e-3)


def flat(w, h, b):
    return np.concatenate([w.ravel(), h.ravel(), b.ravel()])


def unflat(x, k, d, n):
    w = x[: k * d].reshape(k, d)
    h = x[k * d : k * d + d * n].reshape(d, n)
    return w, h, x[k * d + d * n :]


def numpy_f(r, loss="ce", **lam):
    k, d = r["W"].shape
    n = r["H"].shape[1]
    lw, lh, lb = lam["lambda_w"], lam["lambda_h"], lam["lambda_b"]
    return lambda x: ufm_objective(*unflat(x, k, d, n), r["labels"], lw, lh, lb, loss)


def fd_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def fd_hessian(f, x, eps=1e-4):
    m = x.size
    hess = np.zeros((m, m))
    for i in range(m):
        for j in range(i, m):
            ei, ej = np.zeros(m), np.zeros(m)
            ei[i], ej[j] = eps, eps
            v = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * eps * eps)
            hess[i, j] = hess[j, i] = v
    return hess


@pytest.mark.parametrize("loss, lambda_b", [("ce", 5e-3), ("mse", 0.0)])
def test_solve_returns_a_stationary_point_whose_objective_numpy_recomputes(loss, lambda_b):
    """CE with a regularised bias and MSE with a free bias: both have closed-form minima."""
    kw = dict(SMALL, lambda_b=lambda_b)
    r = ufm.solve(loss=loss, **kw)
    k, d, n = 3, 4, 15
    assert r["W"].shape == (k, d) and r["H"].shape == (d, n) and r["b"].shape == (k,)
    assert r["labels"].tolist() == sorted(r["labels"].tolist()) and len(r["labels"]) == n
    f = numpy_f(r, loss, **kw)
    x = flat(r["W"], r["H"], r["b"])
    assert r["objective"] == pytest.approx(f(x), rel=1e-12)
    assert np.linalg.norm(fd_grad(f, x)) < 1e-6
    assert r["converged"] and r["is_global_min"] and abs(r["gap"]) < 1e-8
    assert r["global_min_objective"] == pytest.approx(f(x), rel=1e-8)
    assert set(r["nc"]) == {"nc1", "nc2_w", "nc2_h", "nc3", "bias"}
    assert r["problem"]["lambda_b"] == lambda_b and r["spec"]["seed"] == 0


def test_solve_f32_and_save(tmp_path):
    path = tmp_path / "sol.npz"
    r = ufm.solve(precision="f32", save=str(path), **SMALL)
    assert r["W"].dtype == np.float32
    with np.load(path) as f:
        for key in ("W", "H", "b", "labels"):
            assert np.array_equal(f[key], r[key]), key


def test_solve_matches_the_cli_json(cli):
    args = ["--classes", "3", "--dim", "4", "--per-class", "5", "--lambda-w", "5e-3",
            "--lambda-h", "5e-3", "--lambda-b", "5e-3", "--optimizer", "newton", "--seed", "3"]
    out = subprocess.run([cli, "solve", *args, "--json"], check=True, capture_output=True, text=True)
    want = json.loads(out.stdout)
    got = ufm.solve(optimizer="newton", seed=3, **SMALL)
    assert [k for k in got if k in want] == list(want)
    for key in ("objective", "grad_norm", "gap", "global_min_objective"):
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-300), key
    assert got["iterations"] == want["iterations"]
    assert got["problem"] == want["problem"] and got["spec"] == want["spec"]


def test_certify_bounds_the_numpy_objective():
    kw = dict(class_sizes=[20, 20, 4, 4], dim=4, lambda_w=5e-3, lambda_h=5e-3, lambda_b=5e-3)
    r = ufm.certify(**kw)
    f = numpy_f(r, **kw)
    fx = f(flat(r["W"], r["H"], r["b"]))
    assert r["nonconvex_objective"] == pytest.approx(fx, rel=1e-12)
    assert r["lower_bound"] <= fx + 1e-12
    assert r["certified_optimal"] and r["certified_gap"] < 1e-8
    assert r["W_convex"].shape[0] == 4 and r["H_convex"].shape[1] == 48


def test_hessian_spectrum_equals_a_finite_difference_hessian():
    kw = dict(classes=2, dim=3, per_class=3, lambda_w=1e-2, lambda_h=1e-2, lambda_b=1e-2)
    r = ufm.hessian(**kw)
    f = numpy_f(r, **kw)
    x = flat(r["W"], r["H"], r["b"])
    ev = np.linalg.eigvalsh(fd_hessian(f, x))
    assert r["hessian"]["method"] == "dense"
    assert r["eigenvalues"].shape == (x.size,) and np.all(np.diff(r["eigenvalues"]) >= 0)
    assert np.abs(r["eigenvalues"] - ev).max() < 1e-5
    assert r["lambda_min"] == r["eigenvalues"][0]
    assert r["near_zero_count"] == r["orbit_dim"] + r["bias_null_dim"] and r["orbit_agrees"]


def test_hessian_at_a_given_point():
    """The origin (W = 0, H = 0): a strict saddle with lambda_min < 0, checked against NumPy."""
    kw = dict(classes=3, dim=2, per_class=2, lambda_w=5e-3, lambda_h=5e-3, lambda_b=5e-3)
    w, h, b = np.zeros((3, 2)), np.zeros((2, 6)), np.zeros(3)
    r = ufm.hessian(W=w, H=h, b=b, **kw)
    ref = {"W": w, "H": h, "labels": np.repeat(np.arange(3), 2)}
    ev = np.linalg.eigvalsh(fd_hessian(numpy_f(ref, **kw), flat(w, h, b)))
    assert r["lambda_min"] < 0
    assert np.abs(r["eigenvalues"] - ev).max() < 1e-5
    assert np.array_equal(r["W"], w)
