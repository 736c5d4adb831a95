#!/usr/bin/env python3
"""Time one full-batch UFM gradient-descent step (cross-entropy, K=10, d=512, n=5000 per class,
N=50,000) in PyTorch (CPU, f32, hand-written gradient) and NumPy (f64), and compare with
`ufm solve --optimizer gd` (our fused step) in f32 and f64, all on the same number of threads.

Usage (after `cargo build --release`):
    python3 benches/compare_torch.py [--threads 2] [--iters 200] [--bin target/release/ufm]
Needs numpy (and torch for the PyTorch row): pip install numpy torch
"""
import argparse
import json
import os
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--iters", type=int, default=200)
ap.add_argument("--classes", type=int, default=10)
ap.add_argument("--dim", type=int, default=512)
ap.add_argument("--per-class", type=int, default=5000)
ap.add_argument("--bin", default="target/release/ufm")
args = ap.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402  (after the thread variables are set)

K, d, n = args.classes, args.dim, args.per_class
N = K * n
lam, lr = 5e-4, 1e-3
labels = np.repeat(np.arange(K), n)


def numpy_step(W, H, b, Y):
    Z = W @ H + b[:, None]
    Z -= Z.max(axis=0, keepdims=True)
    P = np.exp(Z)
    P /= P.sum(axis=0, keepdims=True)
    G = (P - Y) / N
    gW = G @ H.T + lam * W
    gH = W.T @ G + lam * H
    gb = G.sum(axis=1) + lam * b
    W -= lr * gW
    H -= lr * gH
    b -= lr * gb


def time_numpy(dtype):
    rng = np.random.default_rng(0)
    W = (0.1 * rng.standard_normal((K, d))).astype(dtype)
    H = (0.1 * rng.standard_normal((d, N))).astype(dtype)
    b = np.zeros(K, dtype)
    Y = np.zeros((K, N), dtype)
    Y[labels, np.arange(N)] = 1
    numpy_step(W, H, b, Y)
    t = time.perf_counter()
    for _ in range(args.iters):
        numpy_step(W, H, b, Y)
    return (time.perf_counter() - t) / args.iters


def time_torch():
    import torch
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    W = 0.1 * torch.randn(K, d, generator=g)
    H = 0.1 * torch.randn(d, N, generator=g)
    b = torch.zeros(K)
    Y = torch.zeros(K, N)
    Y[torch.as_tensor(labels), torch.arange(N)] = 1

    def step():
        Z = W @ H + b[:, None]
        P = torch.softmax(Z, dim=0)
        G = (P - Y) / N
        gW = G @ H.T + lam * W
        gH = W.T @ G + lam * H
        gb = G.sum(dim=1) + lam * b
        W.sub_(lr * gW)
        H.sub_(lr * gH)
        b.sub_(lr * gb)

    with torch.no_grad():
        step()
        t = time.perf_counter()
        for _ in range(args.iters):
            step()
        return (time.perf_counter() - t) / args.iters, torch.__version__


def time_ufm(precision):
    cmd = [args.bin, "solve", "--classes", str(K), "--dim", str(d), "--per-class", str(n),
           "--lambda-w", str(lam), "--lambda-h", str(lam), "--lambda-b", str(lam),
           "--optimizer", "gd", "--lr", str(lr), "--tol", "0", "--max-iter", str(args.iters),
           "--init-scale", "0.1", "--precision", precision, "--json"]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    # `seconds` is solver time: the iterations plus one initial and one final evaluation.
    return out["seconds"] / (out["iterations"] + 2)


rows = []
ours32, ours64 = time_ufm("f32"), time_ufm("f64")
rows.append(("ufm fused GD step, f32", ours32))
rows.append(("ufm fused GD step, f64", ours64))
try:
    t_torch, ver = time_torch()
    rows.append((f"PyTorch {ver} hand-written step, f32", t_torch))
except ImportError:
    t_torch = None
t_np64 = time_numpy(np.float64)
rows.append((f"NumPy {np.__version__} step, f64", t_np64))
t_np32 = time_numpy(np.float32)
rows.append((f"NumPy {np.__version__} step, f32", t_np32))

print(f"UFM gradient step, K={K} d={d} n={n} (N={N}), {args.threads} threads, {args.iters} iterations")
print(f"{'implementation':45s} {'ms/step':>9s}")
for name, t in rows:
    print(f"{name:45s} {1e3 * t:9.3f}")
if t_torch is not None:
    print(f"speed-up f32 vs PyTorch: {t_torch / ours32:.2f}x  (target >= 1.5x)")
print(f"speed-up f64 vs NumPy f64: {t_np64 / ours64:.2f}x  (target >= 1x)")
