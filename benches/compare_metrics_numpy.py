"""Times `ufm metrics` against vectorised NumPy implementations of the same metrics on the same
synthetic, seeded files, checks that the numbers agree, and prints the speed ratios.

Run from the repository root after `cargo build --release`:

    /opt/pyenv/bin/python benches/compare_metrics_numpy.py            # both sizes of issue 3
    /opt/pyenv/bin/python benches/compare_metrics_numpy.py --quick    # only N=50000, d=512, K=10

Both sides use 2 threads (OPENBLAS_NUM_THREADS/OMP_NUM_THREADS=2 for NumPy, --threads 2 for
ufm) and f64 accumulation of f32 features. Every timing is end to end from the files on disk
(page cache warm): NumPy's includes np.load, ufm's includes process start-up. The best of
--repeats runs is reported, as wall time and as CPU time (user + system, all threads; the
fairer number on a shared, loaded machine, though OpenBLAS's spinning threads inflate
NumPy's). Ratios are NumPy time / ufm time.

Implementations compared:
* `numpy`: the vectorised form peers use (rhubarbwu, the MSE repo): one-hot GEMM for the means,
  Sigma_W = Xc^T Xc (d x d, BLAS syrk), a d x d pseudo-inverse of Sigma_B (np.linalg.pinv, as
  the original uses scipy.linalg.pinv) and eigh of Sigma_B for the top-(K-1) variant.
* `numpy-kxk`: NumPy with ufm's algorithm (K x K projection of the centred features, no d x d
  matrix), i.e. the best vectorised NumPy we could write.
* `loop`: the original code's per-sample Python loop for the means and Sigma_W, timed on a
  subset of --loop-samples samples and extrapolated linearly to N (plus the pinv).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
import numpy as np  # noqa: E402  (after the thread settings)

KEYS = ["nc1", "nc1_papyan", "nc1_trace_ratio", "cdnv", "nc2_w", "nc2_w_centered", "nc2_h",
        "equinorm_h", "equinorm_w", "equiangular_h", "equiangular_w", "nc3", "nc3_papyan",
        "bias", "ncc_agreement"]


def make_files(out, n, d, k, seed):
    """Balanced classes, class means of scale 3, unit noise; W = means + noise; f32 features."""
    os.makedirs(out, exist_ok=True)
    paths = {x: os.path.join(out, f"{x}.npy") for x in ["features", "labels", "W", "b"]}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    rng = np.random.default_rng(seed)
    mu = 3.0 * rng.standard_normal((k, d))
    y = np.arange(n) % k
    rng.shuffle(y)
    h = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 4096):
        e = min(n, s + 4096)
        h[s:e] = mu[y[s:e]] + rng.standard_normal((e - s, d))
    np.save(paths["features"], h)
    np.save(paths["labels"], y.astype(np.int64))
    np.save(paths["W"], mu + rng.standard_normal((k, d)))
    np.save(paths["b"], rng.standard_normal(k))
    return paths


def etf_error(a):
    k = a.shape[0]
    e = (np.eye(k) - np.ones((k, k)) / k) / np.sqrt(k - 1)
    return float(np.linalg.norm(a / np.linalg.norm(a) - e))


def equinorm(v):
    nrm = np.linalg.norm(v, axis=1)
    return float(nrm.std(ddof=1) / nrm.mean())


def equiangular(v):
    k = v.shape[0]
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    c = u @ u.T + 1.0 / (k - 1)
    np.fill_diagonal(c, 0.0)
    return float(np.abs(c).sum() / (k * (k - 1)))


def numpy_metrics(paths, kxk):
    x = np.load(paths["features"]).astype(np.float64)
    y = np.load(paths["labels"])
    w = np.load(paths["W"])
    b = np.load(paths["b"])
    n, d = x.shape
    k = int(y.max()) + 1
    cnt = np.bincount(y, minlength=k).astype(np.float64)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    mu = (onehot.T @ x) / cnt[:, None]
    mg = cnt @ mu / n
    mb = mu - mg  # K x d, rows mu_k - mu_G
    xc = x - mu[y]
    ss = np.bincount(y, weights=np.einsum("ij,ij->i", xc, xc), minlength=k)
    g = mb @ mb.T
    r = {}
    rtol = max(d, k) * np.finfo(float).eps
    if kxk:
        z = xc @ mb.T
        p = z.T @ z / n
        lam, u = np.linalg.eigh(g)
        keep = lam > rtol * lam[-1]
        keep[: k - (k - 1)] = False
        q = u.T @ p @ u
        r["nc1"] = float(np.sum(np.diag(q)[keep] / lam[keep] ** 2))
        top = np.zeros(k, bool)
        top[1:] = lam[1:] > 0
        r["nc1_papyan"] = float(k * np.sum(np.diag(q)[top] / lam[top] ** 2))
        tr_sw = ss.sum() / n
    else:
        sw = xc.T @ xc / n
        sb = mb.T @ mb / k
        r["nc1"] = float(np.sum(sw * np.linalg.pinv(sb, rtol=rtol).T) / k)
        lam, u = np.linalg.eigh(sb)
        ut = u[:, -(k - 1):]
        r["nc1_papyan"] = float(np.sum((ut.T @ sw @ ut).diagonal() / lam[-(k - 1):]))
        tr_sw = np.trace(sw)
    r["nc1_trace_ratio"] = float(tr_sw / (np.trace(g) / k))
    v = ss / cnt
    sq = (mu * mu).sum(1)
    dist2 = sq[:, None] + sq[None, :] - 2 * mu @ mu.T
    iu = np.triu_indices(k, 1)
    r["cdnv"] = float(np.mean((v[:, None] + v[None, :])[iu] / 2 / dist2[iu]))
    r["nc2_w"] = etf_error(w @ w.T)
    wc = w - w.mean(0)
    r["nc2_w_centered"] = etf_error(wc @ wc.T)
    r["nc2_h"] = etf_error(g)
    r["equinorm_h"] = equinorm(mb)
    r["equinorm_w"] = equinorm(w)
    r["equiangular_h"] = equiangular(mb)
    r["equiangular_w"] = equiangular(w)
    r["nc3"] = etf_error(w @ mb.T)
    r["nc3_papyan"] = float(np.sum((w / np.linalg.norm(w) - mb / np.linalg.norm(mb)) ** 2))
    r["bias"] = float(np.linalg.norm(w @ mg + b))
    ncc = np.argmin(np.diag(g)[None, :] - 2 * (x - mg) @ mb.T, axis=1)
    net = np.argmax(x @ w.T + b, axis=1)
    r["ncc_agreement"] = float(np.mean(ncc == net))
    return r


def loop_time(paths, samples):
    """The original's per-sample loops (means, then Sigma_W), per sample, plus its pinv."""
    x = np.load(paths["features"], mmap_mode="r")
    y = np.load(paths["labels"])
    n, d = x.shape
    k = int(y.max()) + 1
    t0 = time.perf_counter()
    mean = np.zeros((k, d))
    for i in range(samples):
        mean[y[i]] += x[i]
    t_mean = (time.perf_counter() - t0) / samples
    mu = mean / np.maximum(np.bincount(y[:samples], minlength=k), 1)[:, None]
    sw = np.zeros((d, d))
    t0 = time.perf_counter()
    for i in range(samples):
        v = x[i] - mu[y[i]]
        sw += np.outer(v, v)
    t_cov = (time.perf_counter() - t0) / samples
    t0 = time.perf_counter()
    np.linalg.pinv(sw / samples + np.eye(d))
    t_pinv = time.perf_counter() - t0
    return (t_mean + t_cov) * n + t_pinv


def ufm_metrics(binary, paths, threads):
    cmd = [binary, "metrics", "--features", paths["features"], "--labels", paths["labels"],
           "--weights", paths["W"], "--bias", paths["b"], "--json", "--threads", str(threads)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, json.loads(out)


def cpu_now():
    """CPU seconds (user + system) of this process and its finished children, all threads."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def best(f, repeats):
    """Best wall time and best CPU time over `repeats` runs, and the last result."""
    walls, cpus, val = [], [], None
    for _ in range(repeats):
        c0, t0 = cpu_now(), time.perf_counter()
        val = f()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_now() - c0)
    return min(walls), min(cpus), val


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/ufm_metrics_bench")
    ap.add_argument("--binary", default="target/release/ufm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-samples", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-dense", action="store_true", help="skip the d x d NumPy variant")
    a = ap.parse_args()
    sizes = [(50_000, 512, 10)] + ([] if a.quick else [(50_000, 2048, 100)])
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, "
          f"ufm --threads {a.threads}, best of {a.repeats}")
    for n, d, k in sizes:
        paths = make_files(os.path.join(a.dir, f"N{n}_d{d}_K{k}"), n, d, k, seed=3)
        np.load(paths["features"])  # warm the page cache
        t_ufm, c_ufm, val_ufm = best(lambda: ufm_metrics(a.binary, paths, a.threads)[1], a.repeats)
        rows = [("ufm metrics", t_ufm, c_ufm, val_ufm)]
        rows.append(("numpy-kxk",) + best(lambda: numpy_metrics(paths, kxk=True), a.repeats))
        if not a.skip_dense:
            rows.append(("numpy (d x d)",) + best(lambda: numpy_metrics(paths, kxk=False), a.repeats))
        t_loop = loop_time(paths, a.loop_samples)
        print(f"\nN={n} d={d} K={k}   (load average {os.getloadavg()[0]:.1f})")
        print(f"  {'':<15} {'wall':>9}   {'ratio':>7}   {'CPU':>8}   {'ratio':>7}   max rel. diff vs ufm")
        for name, t, c, v in rows:
            dev = max(abs(v[key] - val_ufm[key]) / max(abs(val_ufm[key]), 1e-300) for key in KEYS)
            print(f"  {name:<15} {t:8.3f}s   {t / t_ufm:6.2f}x   {c:7.3f}s   {c / c_ufm:6.2f}x   {dev:.1e}")
        print(f"  {'loop (extrap.)':<15} {t_loop:8.1f}s   {t_loop / t_ufm:6.0f}x   "
              f"(per-sample Python loop on {a.loop_samples} samples, scaled to N; wall)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
