"""Slow, obvious NumPy references of every NC metric, written from the definitions (the
module table of `ufm::metrics`), independent of the Rust code: two passes over the data,
d x d pseudo-inverses, explicit loops over class pairs."""

import numpy as np


def etf_error(a):
    k = a.shape[0]
    target = (np.eye(k) - np.ones((k, k)) / k) / np.sqrt(k - 1)
    return float(np.linalg.norm(a / np.linalg.norm(a) - target))


def equinorm(v):
    n = np.linalg.norm(v, axis=1)
    return float(n.std(ddof=1) / n.mean())


def equiangular(v):
    k = v.shape[0]
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    c = u @ u.T
    off = ~np.eye(k, dtype=bool)
    return float(np.abs(c[off] + 1.0 / (k - 1)).mean())


def all_metrics(h, y, k, w=None, b=None, global_mean="weighted"):
    """Every metric the inputs allow, as a dict keyed like `ufm metrics --json`."""
    h = np.asarray(h, dtype=np.float64)
    n, d = h.shape
    counts = np.bincount(y, minlength=k)
    means = np.stack([h[y == c].mean(axis=0) for c in range(k)])
    mu_g = h.mean(axis=0) if global_mean == "weighted" else means.mean(axis=0)
    mbar = means - mu_g  # K x d, rows mu_k - mu_G
    dev = h - means[y]
    sigma_w = dev.T @ dev / n
    sigma_b = mbar.T @ mbar / k
    out = {
        "n_classes": k,
        "n_samples": n,
        "feature_dim": d,
        "class_counts": counts.tolist(),
        "nc1": float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, hermitian=True)) / k),
    }
    lam, vec = np.linalg.eigh(sigma_b)
    top, vtop = lam[-(k - 1):], vec[:, -(k - 1):]
    out["nc1_papyan"] = float(np.trace(sigma_w @ (vtop / top) @ vtop.T))
    out["nc1_trace_ratio"] = float(np.trace(sigma_w) / np.trace(sigma_b))
    var = np.array([((h[y == c] - means[c]) ** 2).sum(axis=1).mean() for c in range(k)])
    pairs = [
        0.5 * (var[a] + var[c]) / np.sum((means[a] - means[c]) ** 2)
        for a in range(k)
        for c in range(a + 1, k)
    ]
    out["cdnv"] = float(np.mean(pairs))
    out["nc2_h"] = etf_error(mbar @ mbar.T)
    out["equinorm_h"] = equinorm(mbar)
    out["equiangular_h"] = equiangular(mbar)
    if w is not None:
        w = np.asarray(w, dtype=np.float64)
        out["nc2_w"] = etf_error(w @ w.T)
        wc = w - w.mean(axis=0)
        out["nc2_w_centered"] = etf_error(wc @ wc.T)
        out["equinorm_w"] = equinorm(w)
        out["equiangular_w"] = equiangular(w)
        out["nc3"] = etf_error(w @ mbar.T)
        out["nc3_papyan"] = float(
            np.sum((w / np.linalg.norm(w) - mbar / np.linalg.norm(mbar)) ** 2)
        )
        bb = np.zeros(k) if b is None else np.asarray(b, dtype=np.float64)
        if b is not None:  # as `ufm metrics`: without b the bias metric is left out
            out["bias"] = float(np.linalg.norm(w @ mu_g + bb))
        # Nearest class centre vs the classifier's decision, ties to the smaller index.
        dist = ((h[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
        logits = h @ w.T + bb
        out["ncc_agreement"] = float(np.mean(dist.argmin(axis=1) == logits.argmax(axis=1)))
    return out


METRIC_KEYS = [
    "nc1", "nc1_papyan", "nc1_trace_ratio", "cdnv", "nc2_w", "nc2_w_centered", "nc2_h",
    "equinorm_h", "equinorm_w", "equiangular_h", "equiangular_w", "nc3", "nc3_papyan",
    "bias", "ncc_agreement",
]


def ufm_objective(w, h, b, labels, lambda_w, lambda_h, lambda_b, loss="ce"):
    """f(W,H,b) = (1/N) sum_i l(W h_i + b, y_i) + lW/2|W|^2 + lH/2|H|^2 + lb/2|b|^2, with
    H = [h_1 ... h_N] (d x N); CE or MSE = 1/2 |z - e_y|^2."""
    z = w @ h + b[:, None]  # K x N
    n = h.shape[1]
    if loss == "ce":
        zmax = z.max(axis=0)
        lse = zmax + np.log(np.exp(z - zmax).sum(axis=0))
        data = np.mean(lse - z[labels, np.arange(n)])
    elif loss == "mse":
        e = np.zeros_like(z)
        e[labels, np.arange(n)] = 1.0
        data = 0.5 * np.sum((z - e) ** 2) / n
    else:
        raise ValueError(loss)
    return float(
        data
        + 0.5 * lambda_w * np.sum(w**2)
        + 0.5 * lambda_h * np.sum(h**2)
        + 0.5 * lambda_b * np.sum(b**2)
    )
