"""Times `ufm metrics` against vectorised NumPy and PyTorch implementations of the same 15
metrics on the same synthetic, seeded files, checks that the numbers agree, and prints the
speed ratios. Interleaved: every round runs every implementation once, in an order that rotates
from round to round, so that slow phases of a shared machine hit all of them.

Run from the repository root after `cargo build --release` (needs numpy; torch for the PyTorch
rows, which are skipped with a note when torch is missing):

    python benches/compare_metrics_numpy.py [--threads 2] [--rounds 5]   # both sizes of issue 3
    python benches/compare_metrics_numpy.py --quick                      # only N=50000, d=512, K=10
    python benches/compare_metrics_numpy.py --sizes 4000,64,10 --rounds 1 --loop-samples 20  # smoke

Every side uses --threads threads (OPENBLAS/OMP/MKL_NUM_THREADS set before NumPy and torch are
imported, `torch.set_num_threads`, `ufm metrics --threads`). Every timing is end to end from
the files on disk (page cache warm): NumPy's and torch's include np.load, ufm's includes process
start-up. The table gives the median and the minimum wall time over --rounds rounds, the median
CPU time (user + system, all threads; the fairer number on a shared, loaded machine, though
OpenBLAS's and OpenMP's spinning threads inflate NumPy's and torch's), and ratios
implementation / ufm of the medians.

Before timing, every implementation's 15 numbers are checked (the first run, which is also the
warm-up): the f64 NumPy forms against ufm to 1e-9 relative, the f32 torch forms against the
NumPy reference (`numpy (d x d)`, or `numpy-kxk` with --skip-dense) to 1e-4 relative
(`ncc_agreement` to 1e-4 absolute: a few tied samples may flip in f32).

Implementations compared:
* `numpy (d x d)` (f64): the vectorised form peers use (rhubarbwu, the MSE repo): one-hot GEMM
  for the means, Sigma_W = Xc^T Xc (d x d, BLAS syrk), a d x d pseudo-inverse of Sigma_B
  (np.linalg.pinv, as the original uses scipy.linalg.pinv) and eigh of Sigma_B for the
  top-(K-1) variant.
* `numpy-kxk` (f64): NumPy with ufm's algorithm (K x K projection of the centred features, no
  d x d matrix), the best vectorised NumPy we could write.
* `torch rhubarbwu` (f32): rhubarbwu/neural-collapse's accumulators (MeanAccumulator, then
  CovarAccumulator and VarNormAccumulator in a second pass, DecAccumulator) and measures, in
  f32 on the CPU, written as fast as torch allows: features taken from np.load without a copy
  (`torch.from_numpy`), passes over batches of --torch-batch rows (default 4096, so the
  batch temporaries stay in cache), class sums by `index_add_` (no one-hot matrix), the centred
  batch by `index_select(out=)` + `sub_` into one preallocated buffer, the pooled d x d Sigma_W
  by ONE in-place GEMM per batch (`addmm_`), the per-class squared norms by
  `linalg.vector_norm(out=)` + `index_add_` (no squared copy), the NCC and linear decisions of a
  batch from one GEMM against [Mbar; W]^T (preallocated output), and ONE `torch.linalg.eigh`
  of the d x d Sigma_B serving both the pseudo-inverse metric (exactly what
  `torch.linalg.pinv(hermitian=True)` computes, with its default f32 tolerance
  max(d, K) eps |lambda|_max) and the top-(K-1) metric (rhubarbwu's `svd` variant), so the
  d x d decomposition runs once. Differences from rhubarbwu's code, each only a speed-up or
  needed to compute the same metrics as ufm: no SHA-256 of M per batch, no eps on the counts,
  the sample-weighted global mean (ufm's and the seed's; rhubarbwu's default is the mean of the
  class means), the NCC rule on centred means and the linear rule with the bias.
* `torch-kxk` (f32): ufm's algorithm in torch (the same passes, but the centred batch is
  projected on Mbar^T, B x K, and only the K x K matrix Z^T Z is accumulated; eigh of the K x K
  Gram matrix), the fastest torch we could write.
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

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--dir", default="/tmp/ufm_metrics_bench")
ap.add_argument("--binary", default="target/release/ufm")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--loop-samples", type=int, default=200)
ap.add_argument("--sizes", default="50000,512,10:50000,2048,100",
                help="N,d,K triples separated by ':'")
ap.add_argument("--quick", action="store_true", help="only the first of --sizes")
ap.add_argument("--skip-dense", action="store_true", help="skip the d x d NumPy variant")
ap.add_argument("--torch-batch", type=int, default=4096, help="rows per batch of the torch passes")
ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch implementations")
ap.add_argument("--check-only", action="store_true",
                help="run every implementation once per size, check the agreement, time nothing")
ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH ('-': stdout)")
ARGS = ap.parse_args()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
import numpy as np  # noqa: E402  (after the thread settings)

torch = None
if not ARGS.no_torch:
    try:
        import torch  # noqa: E402

        torch.set_num_threads(ARGS.threads)
    except ImportError as _e:
        print(f"torch not importable ({_e}): the PyTorch rows are skipped")
        torch = None

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


# ---------------------------------------------------------------------------------------------
# PyTorch, f32 (rhubarbwu/neural-collapse's accumulators, tuned; and ufm's K x K algorithm)


def t_etf_error(a):
    k = a.shape[0]
    e = (torch.eye(k, dtype=a.dtype) - 1.0 / k) / (k - 1) ** 0.5
    return float(torch.linalg.matrix_norm(a / torch.linalg.matrix_norm(a) - e))


def t_equinorm(v):
    nrm = torch.linalg.vector_norm(v, dim=1)
    return float(nrm.std() / nrm.mean())  # std is unbiased (ddof=1) by default


def t_equiangular(v):
    k = v.shape[0]
    u = v / torch.linalg.vector_norm(v, dim=1, keepdim=True)
    c = u @ u.T + 1.0 / (k - 1)
    c.fill_diagonal_(0.0)
    return float(c.abs().sum() / (k * (k - 1)))


def torch_metrics(paths, kxk, batch):
    """The 15 metrics in f32 torch, two passes over batches of `batch` rows (see the module
    docstring: `torch rhubarbwu` with kxk=False, `torch-kxk` with kxk=True)."""
    x = torch.from_numpy(np.load(paths["features"]))  # f32, N x d, no copy
    y = torch.from_numpy(np.load(paths["labels"]))  # int64
    w = torch.from_numpy(np.load(paths["W"])).float()
    b = torch.from_numpy(np.load(paths["b"])).float()
    n, d = x.shape
    k = int(y.max()) + 1
    starts = range(0, n, batch)
    # pass 1 (MeanAccumulator): class sums and counts
    sums = torch.zeros(k, d)
    for s in starts:
        sums.index_add_(0, y[s:s + batch], x[s:s + batch])
    cnt = torch.bincount(y, minlength=k).float()
    mu = sums.div_(cnt[:, None])
    mg = (cnt @ mu) / n  # sample-weighted global mean
    mb = mu - mg  # K x d
    g = mb @ mb.T
    # pass 2 (CovarAccumulator, VarNormAccumulator, DecAccumulator), preallocated buffers
    bsz = min(batch, n)
    xc = torch.empty(bsz, d)
    nrm = torch.empty(bsz)
    dec = torch.empty(bsz, 2 * k)
    a = torch.cat([mb, w]).T.contiguous()  # d x 2K
    ncc_c = torch.diagonal(g) + 2.0 * (mb @ mg)  # NCC score: ||mb_k||^2 - 2 (x - mg).mb_k
    ss = torch.zeros(k)
    agree = 0
    if kxk:
        mbt = mb.T.contiguous()
        z = torch.empty(bsz, k)
        p = torch.zeros(k, k)
    else:
        sw = torch.zeros(d, d)
    for s in starts:
        xb, yb = x[s:s + batch], y[s:s + batch]
        r = xb.shape[0]
        c, nb, db = xc[:r], nrm[:r], dec[:r]
        torch.index_select(mu, 0, yb, out=c)
        c.sub_(xb)  # mu_y - x (the sign does not matter below)
        torch.linalg.vector_norm(c, dim=1, out=nb)
        ss.index_add_(0, yb, nb.square_())
        if kxk:
            zb = z[:r]
            torch.mm(c, mbt, out=zb)
            p.addmm_(zb.T, zb)
        else:
            sw.addmm_(c.T, c)
        torch.mm(xb, a, out=db)
        ncc = torch.argmin(ncc_c - 2.0 * db[:, :k], dim=1)
        net = torch.argmax(db[:, k:] + b, dim=1)
        agree += int((ncc == net).sum())
    r = {}
    eps = torch.finfo(torch.float32).eps
    if kxk:
        p /= n
        lam, u = torch.linalg.eigh(g)
        keep = lam > max(d, k) * eps * lam[-1]
        keep[0] = False
        q = torch.diagonal(u.T @ p @ u)
        r["nc1"] = float(torch.sum(q[keep] / lam[keep] ** 2))
        top = lam > 0
        top[0] = False
        r["nc1_papyan"] = float(k * torch.sum(q[top] / lam[top] ** 2))
    else:
        sw /= n
        sb = mb.T @ mb / k
        lam, u = torch.linalg.eigh(sb)  # once, for both the pinv and the top-(K-1) metrics
        keep = lam > max(d, k) * eps * lam.abs().max()  # torch.linalg.pinv's default rtol
        uk = u[:, keep]
        r["nc1"] = float(torch.sum((uk * (sw @ uk)).sum(0) / lam[keep]) / k)
        ut = u[:, -(k - 1):]
        r["nc1_papyan"] = float(torch.sum((ut * (sw @ ut)).sum(0) / lam[-(k - 1):]))
    tr_sw = ss.sum() / n
    r["nc1_trace_ratio"] = float(tr_sw / (torch.trace(g) / k))
    v = ss / cnt
    dist2 = torch.cdist(mb, mb, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    iu = torch.triu_indices(k, k, 1)
    r["cdnv"] = float(torch.mean((v[:, None] + v[None, :])[iu[0], iu[1]] / 2 / dist2[iu[0], iu[1]]))
    r["nc2_w"] = t_etf_error(w @ w.T)
    wc = w - w.mean(0)
    r["nc2_w_centered"] = t_etf_error(wc @ wc.T)
    r["nc2_h"] = t_etf_error(g)
    r["equinorm_h"] = t_equinorm(mb)
    r["equinorm_w"] = t_equinorm(w)
    r["equiangular_h"] = t_equiangular(mb)
    r["equiangular_w"] = t_equiangular(w)
    r["nc3"] = t_etf_error(w @ mb.T)
    r["nc3_papyan"] = float(torch.sum((w / torch.linalg.matrix_norm(w)
                                       - mb / torch.linalg.matrix_norm(mb)) ** 2))
    r["bias"] = float(torch.linalg.vector_norm(w @ mg + b))
    r["ncc_agreement"] = agree / n
    return r


# ---------------------------------------------------------------------------------------------
# ufm, timing, main


def ufm_metrics(binary, paths, threads):
    cmd = [binary, "metrics", "--features", paths["features"], "--labels", paths["labels"],
           "--weights", paths["W"], "--bias", paths["b"], "--json", "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def cpu_now():
    """CPU seconds (user + system) of this process and its finished children, all threads."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def timed(f):
    """Wall time, CPU time and value of one call."""
    c0, t0 = cpu_now(), time.perf_counter()
    val = f()
    return time.perf_counter() - t0, cpu_now() - c0, val


def max_rel(v, ref, keys):
    return max(abs(v[key] - ref[key]) / max(abs(ref[key]), 1e-300) for key in keys)


def check(name, v, ref, ref_name, tol):
    """Fails the run if `v` and `ref` disagree beyond `tol` (ncc_agreement: absolute)."""
    rel_keys = [key for key in KEYS if key != "ncc_agreement"]
    err = max_rel(v, ref, rel_keys)
    err_ncc = abs(v["ncc_agreement"] - ref["ncc_agreement"])
    if err > tol or err_ncc > tol:
        bad = [key for key in rel_keys if abs(v[key] - ref[key]) > tol * max(abs(ref[key]), 1e-300)]
        print(f"  check FAILED: {name} vs {ref_name}: max rel. diff {err:.1e}, ncc_agreement diff "
              f"{err_ncc:.1e}, tolerance {tol:.0e} ({', '.join(bad) or 'ncc_agreement'})", file=sys.stderr)
        sys.exit(1)
    return max(err, err_ncc)


def main():
    a = ARGS
    sizes = [tuple(int(v) for v in spec.split(",")) for spec in a.sizes.split(":")]
    if a.quick:
        sizes = sizes[:1]
    impls = [("ufm metrics", lambda p: ufm_metrics(a.binary, p, a.threads)),
             ("numpy-kxk", lambda p: numpy_metrics(p, kxk=True))]
    if not a.skip_dense:
        impls.append(("numpy (d x d)", lambda p: numpy_metrics(p, kxk=False)))
    if torch is not None:
        impls.append(("torch-kxk", lambda p: torch_metrics(p, kxk=True, batch=a.torch_batch)))
        impls.append(("torch rhubarbwu", lambda p: torch_metrics(p, kxk=False, batch=a.torch_batch)))
    print(f"numpy {np.__version__}" + (f", torch {torch.__version__}" if torch is not None else "")
          + f", {a.threads} threads everywhere, {a.rounds} rounds, interleaved")
    result = {"threads": a.threads, "rounds": a.rounds, "numpy": np.__version__,
              "torch": torch.__version__ if torch is not None else None, "sizes": []}
    for n, d, k in sizes:
        paths = make_files(os.path.join(a.dir, f"N{n}_d{d}_K{k}"), n, d, k, seed=3)
        np.load(paths["features"])  # warm the page cache
        # check (and warm up): every implementation once
        vals = {name: f(paths) for name, f in impls}
        ref_name = "numpy (d x d)" if "numpy (d x d)" in vals else "numpy-kxk"
        errs = {}
        for name in vals:
            if name.startswith("numpy"):
                errs[name] = check(name, vals[name], vals["ufm metrics"], "ufm metrics", 1e-9)
            elif name.startswith("torch"):
                errs[name] = check(name, vals[name], vals[ref_name], ref_name, 1e-4)
        print(f"\nN={n} d={d} K={k}: check passed (torch f32 vs {ref_name} <= 1e-4, numpy vs ufm "
              "<= 1e-9); max diffs: " + ", ".join(f"{nm} {e:.1e}" for nm, e in errs.items()), flush=True)
        if a.check_only:
            continue
        names = [name for name, _ in impls]
        fns = dict(impls)
        walls = {name: [] for name in names}
        cpus = {name: [] for name in names}
        loads = [os.getloadavg()[0]]
        for r in range(a.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                t, c, _ = timed(lambda: fns[name](paths))
                walls[name].append(t)
                cpus[name].append(c)
            loads.append(os.getloadavg()[0])
        t_loop = loop_time(paths, a.loop_samples)
        med = {name: float(np.median(v)) for name, v in walls.items()}
        mn = {name: float(np.min(v)) for name, v in walls.items()}
        cmed = {name: float(np.median(v)) for name, v in cpus.items()}
        u = "ufm metrics"
        print(f"N={n} d={d} K={k}   (1-min load average {min(loads):.1f}-{max(loads):.1f}; "
              "wall and CPU seconds; ratios to ufm of the medians)")
        print(f"  {'':<17} {'median':>9} {'min':>9} {'ratio':>7}   {'CPU med.':>8} {'ratio':>7}   "
              "check max diff")
        for name in names:
            chk = f"{errs[name]:.1e}" if name in errs else "(reference)"
            chk += f" vs {ref_name}" if name.startswith("torch") else (" vs ufm" if name in errs else "")
            print(f"  {name:<17} {med[name]:8.3f}s {mn[name]:8.3f}s {med[name] / med[u]:6.2f}x   "
                  f"{cmed[name]:7.3f}s {cmed[name] / cmed[u]:6.2f}x   {chk}")
        print(f"  {'loop (extrap.)':<17} {t_loop:8.1f}s {'':>9} {t_loop / med[u]:6.0f}x   "
              f"(per-sample Python loop on {a.loop_samples} samples, scaled to N; wall)")
        entry = {"n": n, "d": d, "k": k, "load_min": min(loads), "load_max": max(loads),
                 "wall": walls, "cpu": cpus, "median": med, "min": mn, "cpu_median": cmed,
                 "check_max_diff": errs, "check_reference_torch": ref_name, "loop_extrapolated": t_loop}
        for fam in ("numpy", "torch"):
            cand = [name for name in names if name.startswith(fam)]
            if cand:
                best = min(cand, key=lambda nm: med[nm])
                best_min = min(cand, key=lambda nm: mn[nm])
                print(f"  best {fam} / ufm: {med[best] / med[u]:.2f}x by medians ({best}), "
                      f"{mn[best_min] / mn[u]:.2f}x by minimums ({best_min})")
                entry[f"best_{fam}_ratio_median"] = med[best] / med[u]
                entry[f"best_{fam}_ratio_min"] = mn[best_min] / mn[u]
        result["sizes"].append(entry)
    if a.json:
        text = json.dumps(result, indent=1)
        if a.json == "-":
            print(text)
        else:
            tmp = a.json + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(text + "\n")
            os.replace(tmp, a.json)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
