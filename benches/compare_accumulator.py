"""Streaming NC statistics: ufm.NCAccumulator against vectorised NumPy (and torch, when
installed) accumulators of the same statistics, over a stream of batches as a training loop
produces them.

    python benches/compare_accumulator.py --threads 2       # d=512 K=10, then d=1024 K=100

Every implementation consumes the same stream of float32 batches (B x d features, B labels) and
then computes the same metrics (nc1, nc1_trace_ratio, cdnv, nc2_h, nc2_w, nc3, bias) from its
statistics; the time is the whole stream plus that final step. Implementations:

  ufm            NCAccumulator.update per batch (f64, one pass, per-batch class-centred scatter
                 merged with the Chan et al. update), then .compute(W, b)
  numpy-1pass    the fastest NumPy one-pass accumulator I could write: preallocated f64
                 buffers, in place; class sums by a one-hot GEMM, the raw second moment
                 S += X^T X (BLAS syrk); Sigma_W = (S - sum_k n_k mu_k mu_k^T)/N at the end.
                 Fast, but loses digits when the features sit far from the origin.
  numpy-blocked  the same one-pass, exact algorithm as ufm written in NumPy: batches are copied
                 (f64) into a preallocated block of ufm's block size (4096 rows at d=512, 2048
                 at d=1024); a full block gets its class means by a one-hot GEMM, is centred
                 in place, and its scatter X_c^T X_c (BLAS syrk, on the large block at BLAS's
                 full rate) is merged with the Chan et al. rank-K correction. The fastest
                 exact NumPy accumulator I could write.
  numpy-2pass    two passes over the stream, as rhubarbwu/neural-collapse's MeanAccumulator
                 then CovarAccumulator do: pass 1 class sums, pass 2 the scatter of X - M[y]
                 (exact). A training loop must run the network twice over the data for this.
  numpy-2pass-f32  the same in float32 throughout (rhubarbwu's accumulators default to the
                 features' dtype): about twice the flop rate, at the accuracy shown.
  torch-1pass, torch-blocked, torch-2pass, torch-2pass-f32   the same in torch (index_add_, addmm_), if torch
                 imports.

Before each timed run the script sleeps --gap seconds (0.3 by default): OpenBLAS's worker
threads keep spinning for about 2^28 cycles (~0.1 s) after a BLAS call and OpenMP's for a
while too, and on a 2-vCPU machine a spinning thread left by the previous implementation takes
half of the next one's CPU. Without the gap, whichever implementation follows NumPy or torch
pays for their idle threads (`--gap 0` shows it).

All finalisations use the K x K route for NC1 (tr(G^+^2 P), no d x d pseudo-inverse), so the
comparison is about the accumulation. Implementations alternate within each repetition (the
machine is shared, timings are noisy) and the median over repetitions is reported, with the
ratio to ufm and each implementation's largest relative deviation from ufm's metrics.
"""

import argparse
import os
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batch", type=int, default=None, help="batch size (default per config)")
    p.add_argument("--configs", default="512x10x128x25600,1024x100x256x12800",
                   help="comma-separated d x K x batch x N")
    p.add_argument("--offset", type=float, default=0.0, help="add this to every feature")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--gap", type=float, default=0.3,
                   help="seconds of sleep before each timed run (default 0.3), so that the "
                        "previous implementation's idle worker threads have stopped spinning")
    return p.parse_args()


ARGS = parse()
for var in ("RAYON_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

import ufm  # noqa: E402

try:
    if ARGS.no_torch:
        raise ImportError
    import torch  # noqa: E402

    torch.set_num_threads(ARGS.threads)
except ImportError:
    torch = None

METRICS = ["nc1", "nc1_trace_ratio", "cdnv", "nc2_h", "nc2_w", "nc3", "bias"]


def etf_error(a, xp=np):
    k = a.shape[0]
    target = (xp.eye(k) - 1.0 / k) / (k - 1) ** 0.5
    return float(((a / (a**2).sum() ** 0.5 - target) ** 2).sum() ** 0.5)


def finish(counts, means, sigma_w, class_ss, w, b):
    """The metrics from (n_k, mu_k, Sigma_W, per-class sum of squares) in NumPy, f64."""
    n = counts.sum()
    k = len(counts)
    mu_g = counts @ means / n
    mbar = means - mu_g
    g = mbar @ mbar.T
    p = mbar @ sigma_w @ mbar.T
    lam, v = np.linalg.eigh(g)
    keep = lam > max(means.shape) * np.finfo(float).eps * lam.max()
    ginv = (v[:, keep] / lam[keep]) @ v[:, keep].T
    out = {"nc1": float(np.trace(ginv @ ginv @ p))}
    tr_b = (mbar**2).sum() / k
    out["nc1_trace_ratio"] = float(np.trace(sigma_w) / tr_b)
    var = class_ss / counts
    d2 = ((means[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    iu = np.triu_indices(k, 1)
    out["cdnv"] = float(np.mean(0.5 * (var[iu[0]] + var[iu[1]]) / d2[iu]))
    out["nc2_h"] = etf_error(g)
    out["nc2_w"] = etf_error(w @ w.T)
    out["nc3"] = etf_error(w @ mbar.T)
    out["bias"] = float(np.linalg.norm(w @ mu_g + b))
    return out


class NumpyOnePass:
    def __init__(self, k, d, bmax):
        self.k = k
        self.counts = np.zeros(k)
        self.sums = np.zeros((k, d))
        self.s = np.zeros((d, d))
        self.sq = np.zeros(k)
        self.x = np.empty((bmax, d))
        self.oh = np.zeros((k, bmax))
        self.tmp = np.empty((d, d))

    def update(self, xb, yb):
        m = len(yb)
        x, oh = self.x[:m], self.oh[:, :m]
        np.copyto(x, xb)
        oh.fill(0.0)
        oh[yb, np.arange(m)] = 1.0
        self.counts += oh.sum(axis=1)
        self.sums += oh @ x
        np.matmul(x.T, x, out=self.tmp)  # syrk
        self.s += self.tmp
        self.sq += oh @ np.einsum("ij,ij->i", x, x)

    def compute(self, w, b):
        means = self.sums / self.counts[:, None]
        n = self.counts.sum()
        sigma_w = (self.s - (means.T * self.counts) @ means) / n
        class_ss = self.sq - self.counts * (means**2).sum(axis=1)
        return finish(self.counts, means, sigma_w, class_ss, w, b)


class Blocked:
    """Batches gathered into blocks, each summarised about its own class means and merged
    (Chan et al.): ufm's algorithm, vectorised. `xp` is numpy or torch."""

    def __init__(self, k, d, block, xp):
        self.k, self.d, self.block, self.xp, self.fill = k, d, block, xp, 0
        t = xp is not np
        f = dict(dtype=torch.float64) if t else dict(dtype=np.float64)
        self.zeros = (lambda *s: torch.zeros(*s, **f)) if t else (lambda *s: np.zeros(s, **f))
        self.counts, self.means = self.zeros(k), self.zeros(k, d)
        self.s, self.ss = self.zeros(d, d), self.zeros(k)
        self.buf, self.cen = self.zeros(block, d), self.zeros(block, d)
        self.tmp, self.oh = self.zeros(d, d), self.zeros(k, block)
        self.lab = torch.zeros(block, dtype=torch.int64) if t else np.zeros(block, dtype=np.int64)
        self.ar = torch.arange(block) if t else np.arange(block)

    def update(self, xb, yb):
        m = len(yb)
        if self.fill + m > self.block:
            self.flush()
        a, e = self.fill, self.fill + m
        if self.xp is np:
            np.copyto(self.buf[a:e], xb)
        else:
            self.buf[a:e].copy_(xb)
        self.lab[a:e] = yb
        self.fill = e
        if e == self.block:
            self.flush()

    def flush(self):
        n = self.fill
        if n == 0:
            return
        self.fill = 0
        x, y, oh = self.buf[:n], self.lab[:n], self.oh[:, :n]
        if self.xp is np:
            oh.fill(0.0)
        else:
            oh.zero_()
        oh[y, self.ar[:n]] = 1.0
        cnt = oh.sum(1)
        nu = (oh @ x) / cnt.clip(min=1.0)[:, None]
        if self.xp is np:
            np.take(nu, y, axis=0, out=self.cen[:n])
            x -= self.cen[:n]
            np.matmul(x.T, x, out=self.tmp)  # syrk
            self.s += self.tmp
            sq = (x * x).sum(1)
        else:
            torch.index_select(nu, 0, y, out=self.cen[:n])
            x.sub_(self.cen[:n])
            self.s.addmm_(x.T, x)
            sq = (x * x).sum(1)
        ssb = oh @ sq
        tot = self.counts + cnt
        w = self.counts * cnt / tot.clip(min=1.0)
        delta = nu - self.means
        self.s += (delta.T * w) @ delta
        self.ss += ssb + w * (delta * delta).sum(1)
        self.means += (cnt / tot.clip(min=1.0))[:, None] * delta
        self.counts = tot

    def compute(self, w, b):
        self.flush()
        f = (lambda a: a) if self.xp is np else (lambda a: a.numpy())
        c = f(self.counts)
        return finish(c, f(self.means), f(self.s) / c.sum(), f(self.ss), w, b)


def block_rows(d):
    """ufm's block (metrics::buffered::default_block_rows): 16 MiB of f64 rows, 256..8192."""
    return max(256, min(8192, (16 << 20) // (8 * d)))


class NumpyTwoPass:
    def __init__(self, k, d, bmax, dtype=np.float64):
        self.k, self.d, self.bmax, self.dt = k, d, bmax, dtype

    def run(self, stream, w, b):
        k, d, dt = self.k, self.d, self.dt
        counts, sums = np.zeros(k, dt), np.zeros((k, d), dt)
        x, oh = np.empty((self.bmax, d), dt), np.zeros((k, self.bmax), dt)
        for xb, yb in stream:  # pass 1: class sums
            m = len(yb)
            np.copyto(x[:m], xb)
            oh[:, :m].fill(0.0)
            oh[yb, np.arange(m)] = 1.0
            counts += oh[:, :m].sum(axis=1)
            sums += oh[:, :m] @ x[:m]
        means = sums / counts[:, None]
        s, tmp, sq = np.zeros((d, d), dt), np.empty((d, d), dt), np.zeros(k, dt)
        for xb, yb in stream:  # pass 2: scatter about the final means
            m = len(yb)
            xc = x[:m]
            np.subtract(xb, means[yb], out=xc)
            np.matmul(xc.T, xc, out=tmp)
            s += tmp
            sq += np.bincount(yb, weights=np.einsum("ij,ij->i", xc, xc), minlength=k).astype(dt)
        f = np.float64
        return finish(counts.astype(f), means.astype(f), s.astype(f) / counts.sum(), sq.astype(f), w, b)


class TorchOnePass:
    def __init__(self, k, d, bmax):
        f = dict(dtype=torch.float64)
        self.counts = torch.zeros(k, **f)
        self.sums = torch.zeros(k, d, **f)
        self.s = torch.zeros(d, d, **f)
        self.sq = torch.zeros(k, **f)
        self.x = torch.empty(bmax, d, **f)
        self.ones = torch.ones(bmax, **f)

    def update(self, xb, yb):
        m = len(yb)
        x = self.x[:m]
        x.copy_(xb)
        self.counts.index_add_(0, yb, self.ones[:m])
        self.sums.index_add_(0, yb, x)
        self.s.addmm_(x.T, x)
        self.sq.index_add_(0, yb, (x * x).sum(dim=1))

    def compute(self, w, b):
        c = self.counts.numpy()
        means = (self.sums / self.counts[:, None]).numpy()
        sigma_w = (self.s.numpy() - (means.T * c) @ means) / c.sum()
        class_ss = self.sq.numpy() - c * (means**2).sum(axis=1)
        return finish(c, means, sigma_w, class_ss, w, b)


class TorchTwoPass:
    def __init__(self, k, d, bmax, dtype=None):
        self.k, self.d, self.bmax = k, d, bmax
        self.dt = dtype or torch.float64

    def run(self, stream, w, b):
        f = dict(dtype=self.dt)
        k, d = self.k, self.d
        counts, sums = torch.zeros(k, **f), torch.zeros(k, d, **f)
        x, ones = torch.empty(self.bmax, d, **f), torch.ones(self.bmax, **f)
        for xb, yb in stream:
            m = len(yb)
            x[:m].copy_(xb)
            counts.index_add_(0, yb, ones[:m])
            sums.index_add_(0, yb, x[:m])
        means = sums / counts[:, None]
        s, sq = torch.zeros(d, d, **f), torch.zeros(k, **f)
        for xb, yb in stream:
            m = len(yb)
            xc = x[:m]
            torch.sub(xb, means[yb], out=xc)
            s.addmm_(xc.T, xc)
            sq.index_add_(0, yb, (xc * xc).sum(dim=1))
        c = counts.double().numpy()
        return finish(c, means.double().numpy(), s.double().numpy() / c.sum(), sq.double().numpy(), w, b)


def run_ufm(stream, k, d, w, b):
    acc = ufm.NCAccumulator(k, d)
    for xb, yb in stream:
        acc.update(xb, yb)
    return acc.compute(w, b, metrics=METRICS)


def bench(d, k, bsz, n):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, d)).astype(np.float32) * 2.0
    stream = []
    for s in range(0, n, bsz):
        m = min(bsz, n - s)
        y = rng.integers(0, k, size=m)
        x = (centres[y] + rng.normal(size=(m, d)).astype(np.float32) + ARGS.offset).astype(np.float32)
        stream.append((x, y))
    w = centres.astype(np.float64) + 0.1 * rng.normal(size=(k, d))
    b = 0.01 * rng.normal(size=k)

    impls = {"ufm": lambda: run_ufm(stream, k, d, w, b)}

    def np1():
        a = NumpyOnePass(k, d, bsz)
        for xb, yb in stream:
            a.update(xb, yb)
        return a.compute(w, b)

    impls["numpy-1pass"] = np1

    def run_blocked(xp, st):
        a = Blocked(k, d, block_rows(d), xp)
        for xb, yb in st:
            a.update(xb, yb)
        return a.compute(w, b)

    impls["numpy-blocked"] = lambda: run_blocked(np, stream)
    impls["numpy-2pass"] = lambda: NumpyTwoPass(k, d, bsz).run(stream, w, b)
    impls["numpy-2pass-f32"] = lambda: NumpyTwoPass(k, d, bsz, np.float32).run(stream, w, b)
    if torch is not None:
        tstream = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in stream]

        def t1():
            a = TorchOnePass(k, d, bsz)
            for xb, yb in tstream:
                a.update(xb, yb)
            return a.compute(w, b)

        impls["torch-1pass"] = t1
        impls["torch-blocked"] = lambda: run_blocked(torch, tstream)
        impls["torch-2pass"] = lambda: TorchTwoPass(k, d, bsz).run(tstream, w, b)
        impls["torch-2pass-f32"] = lambda: TorchTwoPass(k, d, bsz, torch.float32).run(tstream, w, b)

    times = {name: [] for name in impls}
    results = {}
    names = list(impls)
    for rep in range(ARGS.reps + 1):  # the first round warms up and is not timed
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            time.sleep(ARGS.gap)
            t0 = time.perf_counter()
            results[name] = impls[name]()
            dt = time.perf_counter() - t0
            if rep > 0:
                times[name].append(dt)
    ref = results["ufm"]
    med = {name: float(np.median(t)) for name, t in times.items()}
    print(f"\nd={d} K={k} batch={bsz} N={n} ({len(stream)} batches, float32, offset {ARGS.offset}), "
          f"{ARGS.threads} threads, median of {ARGS.reps}")
    print(f"{'implementation':<14} {'median s':>9} {'min s':>8} {'x ufm':>7} {'us/batch':>9}  max rel. diff of metrics vs ufm")
    for name in names:
        dev = max(abs(results[name][m] - ref[m]) / max(abs(ref[m]), 1e-300) for m in METRICS)
        print(f"{name:<14} {med[name]:9.3f} {min(times[name]):8.3f} {med[name] / med['ufm']:7.2f} "
              f"{1e6 * med[name] / len(stream):9.0f}  {dev:.1e}")
    return med


def main():
    print(f"ufm {ufm.__version__}, numpy {np.__version__}, torch {torch.__version__ if torch else 'not installed'}, "
          f"python {sys.version.split()[0]}")
    with open("/proc/loadavg") as f:
        print("load average before:", " ".join(f.read().split()[:3]))
    for cfg in ARGS.configs.split(","):
        d, k, bsz, n = (int(v) for v in cfg.split("x"))
        bench(d, k, ARGS.batch or bsz, n)
    with open("/proc/loadavg") as f:
        print("\nload average after:", " ".join(f.read().split()[:3]))


if __name__ == "__main__":
    main()
