#!/usr/bin/env python3
"""One full-batch UFM gradient-descent step (cross-entropy, lambda_W = lambda_H = lambda_b =
5e-4, lr 1e-3) in ufm against the fastest PyTorch (f32) and NumPy (f64) steps we could write,
all on the same number of threads, interleaved.

Usage (after `cargo build --release`):
    python benches/compare_torch.py [--threads 2] [--rounds 7] [--iters 10]
                                    [--sizes 10,512,5000:100,512,500] [--no-compile]

For each size, every implementation runs `--iters` steps per round, `--rounds` rounds, the
order of the implementations rotating from round to round (so slow phases of a shared machine
hit all of them); the table gives the median and the minimum over rounds of the mean time per
step, and the ratios of the best PyTorch / NumPy implementation to ufm. Before timing, every
Python implementation is checked against a plain NumPy f64 step on a small instance.

Implementations:
* `ufm f32` / `ufm f64`: `ufm solve --optimizer gd` (the fused single-pass step; its solver time
  over iterations + 2, the initial and final evaluations being as costly as a step). ufm's step
  also returns f and |grad f|, which none of the Python steps compute.
* `torch alloc`: the textbook step (softmax, dense one-hot Y, (P - Y)/N, a new tensor for each
  intermediate), H stored d x N: the baseline of the first version of this script.
* `torch prealloc`: H stored N x d (ufm's layout), every buffer allocated once, `torch.addmm`
  with `out=` for the logits (bias folded in as beta), the softmax in place (amax/sum with
  `out=`, `sub_`, `exp_`, `div_`), the label term by `index_add_` of -1 at the N label entries
  (no dense Y), 1/N and lambda folded into the GEMMs' alpha/beta, and the H update as ONE
  in-place GEMM `H.addmm_(G, W, beta=1 - lr lambda_H, alpha=-lr/N)` (no N x d temporary).
* `torch compiled`: `torch.compile` (inductor, CPU) of the functional step, when it compiles
  here (skipped with --no-compile or if inductor fails).
* `numpy alloc`: the textbook NumPy step (d x N, dense Y, temporaries).
* `numpy prealloc`: N x d, `np.matmul(..., out=)`, in-place softmax with `out=` reductions, the
  label gather, 1/N and -lr folded into the small N x K matrix before the GEMMs; NumPy has no
  in-place GEMM accumulate, so the H update is `matmul(out=T)`, `H *= 1 - lr lambda_H`, `H += T`.
* `numpy blocked`: the prealloc step on blocks of `--block` rows (default 2048), so that the
  N x d temporaries and the extra passes over H stay in the last-level cache.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=7)
ap.add_argument("--iters", type=int, default=10)
ap.add_argument("--sizes", default="10,512,5000:100,512,500",
                help="K,d,n triples separated by ':' (n samples per class)")
ap.add_argument("--block", type=int, default=2048, help="rows per block of `numpy blocked`")
ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
ap.add_argument("--bin", default="target/release/ufm")
args = ap.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402  (after the thread variables are set)
import torch  # noqa: E402

torch.set_num_threads(args.threads)
LAM, LR = 5e-4, 1e-3


# ---------------------------------------------------------------------------------------------
# NumPy


def numpy_alloc(K, d, N, labels, H0, W0, b0):
    """Textbook step, H stored d x N."""
    W, b = W0.copy(), b0.copy()
    H = np.ascontiguousarray(H0.T)
    Y = np.zeros((K, N), H.dtype)
    Y[labels, np.arange(N)] = 1

    def step():
        nonlocal W, b
        Z = W @ H + b[:, None]
        Z -= Z.max(axis=0, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=0, keepdims=True)
        G = (P - Y) / N
        gW = G @ H.T + LAM * W
        gH = W.T @ G + LAM * H
        gb = G.sum(axis=1) + LAM * b
        W -= LR * gW
        H[...] -= LR * gH
        b -= LR * gb

    return step, lambda: (H.T, W, b)


def _numpy_block_step(H, W, b, Z, m, s, T, gW, gWb, gb, idx, N):
    """The tuned step on rows H (n x d) with buffers of matching size; adds to gW, gb.
    Leaves G = -(lr/N) (P - Y) in Z."""
    np.matmul(H, W.T, out=Z)
    Z += b
    np.max(Z, axis=1, keepdims=True, out=m)
    Z -= m
    np.exp(Z, out=Z)
    np.sum(Z, axis=1, keepdims=True, out=s)
    Z /= s
    Z.reshape(-1)[idx] -= 1.0  # P - Y by the label gather
    Z *= -LR / N  # -(lr/N)(P - Y)
    np.matmul(Z.T, H, out=gWb)  # -(lr/N) G^T H
    gW += gWb
    gb += Z.sum(axis=0)
    np.matmul(Z, W, out=T)
    H *= 1.0 - LR * LAM
    H += T


def numpy_prealloc(K, d, N, labels, H0, W0, b0, block=None):
    H, W, b = H0.copy(), W0.copy(), b0.copy()
    dt = H.dtype
    B = N if block is None else min(block, N)
    Z, m, s = np.empty((B, K), dt), np.empty((B, 1), dt), np.empty((B, 1), dt)
    T, gW, gWb, gb = np.empty((B, d), dt), np.empty((K, d), dt), np.empty((K, d), dt), np.empty(K, dt)
    starts = list(range(0, N, B))
    idxs = [np.arange(min(B, N - i)) * K + labels[i:i + B] for i in starts]

    def step():
        gW.fill(0.0)
        gb.fill(0.0)
        for i, idx in zip(starts, idxs):
            r = min(B, N - i)
            _numpy_block_step(H[i:i + r], W, b, Z[:r], m[:r], s[:r], T[:r], gW, gWb, gb, idx, N)
        # gW, gb hold -lr * (loss part); add the weight decay and apply
        np.multiply(W, 1.0 - LR * LAM, out=W)
        np.add(W, gW, out=W)
        np.multiply(b, 1.0 - LR * LAM, out=b)
        np.add(b, gb, out=b)

    return step, lambda: (H, W, b)


# ---------------------------------------------------------------------------------------------
# PyTorch


def torch_alloc(K, d, N, labels, H0, W0, b0):
    H = torch.from_numpy(np.ascontiguousarray(H0.T)).clone()
    W, b = torch.from_numpy(W0).clone(), torch.from_numpy(b0).clone()
    Y = torch.zeros(K, N, dtype=H.dtype)
    Y[torch.as_tensor(labels), torch.arange(N)] = 1

    def step():
        Z = W @ H + b[:, None]
        P = torch.softmax(Z, dim=0)
        G = (P - Y) / N
        gW = G @ H.T + LAM * W
        gH = W.T @ G + LAM * H
        gb = G.sum(dim=1) + LAM * b
        W.sub_(LR * gW)
        H.sub_(LR * gH)
        b.sub_(LR * gb)

    return step, lambda: (H.T.numpy(), W.numpy(), b.numpy())


def torch_prealloc(K, d, N, labels, H0, W0, b0):
    H = torch.from_numpy(H0).clone()
    W, b = torch.from_numpy(W0).clone(), torch.from_numpy(b0).clone()
    dt = H.dtype
    Z, m, s = torch.empty(N, K, dtype=dt), torch.empty(N, 1, dtype=dt), torch.empty(N, 1, dtype=dt)
    gW, gb = torch.empty(K, d, dtype=dt), torch.empty(K, dtype=dt)
    idx = torch.arange(N) * K + torch.as_tensor(labels, dtype=torch.int64)
    neg1 = torch.full((N,), -1.0, dtype=dt)
    Zf = Z.view(-1)

    def step():
        torch.addmm(b, H, W.t(), out=Z)  # Z = H W^T + b
        torch.amax(Z, 1, keepdim=True, out=m)
        Z.sub_(m).exp_()
        torch.sum(Z, 1, keepdim=True, out=s)
        Z.div_(s)  # P
        Zf.index_add_(0, idx, neg1)  # P - Y
        torch.addmm(W, Z.t(), H, beta=LAM, alpha=1.0 / N, out=gW)  # G^T H / N + lam W
        torch.sum(Z, 0, out=gb)
        gb.mul_(1.0 / N).add_(b, alpha=LAM)
        H.addmm_(Z, W, beta=1.0 - LR * LAM, alpha=-LR / N)  # H - lr (lam H + G W / N)
        W.add_(gW, alpha=-LR)
        b.add_(gb, alpha=-LR)

    return step, lambda: (H.numpy(), W.numpy(), b.numpy())


def torch_compiled(K, d, N, labels, H0, W0, b0):
    H = torch.from_numpy(H0).clone()
    W, b = torch.from_numpy(W0).clone(), torch.from_numpy(b0).clone()
    y = torch.as_tensor(labels, dtype=torch.int64)

    def functional(H, W, b):
        Z = torch.addmm(b, H, W.t())
        P = torch.softmax(Z, dim=1)
        G = P.scatter_add(1, y[:, None], torch.full((N, 1), -1.0, dtype=P.dtype)) / N
        gW = G.t() @ H + LAM * W
        gb = G.sum(0) + LAM * b
        Hn = torch.addmm(H, G, W, beta=1.0 - LR * LAM, alpha=-LR)
        return Hn, W - LR * gW, b - LR * gb

    f = torch.compile(functional, dynamic=False)
    state = [H, W, b]

    def step():
        state[0], state[1], state[2] = f(*state)

    return step, lambda: tuple(t.numpy() for t in state)


# ---------------------------------------------------------------------------------------------
# ufm


def ufm_time(K, d, n, precision, iters):
    cmd = [args.bin, "solve", "--classes", str(K), "--dim", str(d), "--per-class", str(n),
           "--lambda-w", str(LAM), "--lambda-h", str(LAM), "--lambda-b", str(LAM),
           "--optimizer", "gd", "--lr", str(LR), "--tol", "0", "--max-iter", str(iters),
           "--init-scale", "0.1", "--precision", precision, "--json"]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    # `seconds` is solver time: the iterations plus one initial and one final evaluation.
    return out["seconds"] / (out["iterations"] + 2)


# ---------------------------------------------------------------------------------------------


def instance(K, d, n, dtype, seed=0):
    N = K * n
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(K), n)
    H0 = (0.1 * rng.standard_normal((N, d))).astype(dtype)
    W0 = (0.1 * rng.standard_normal((K, d))).astype(dtype)
    b0 = (0.1 * rng.standard_normal(K)).astype(dtype)
    return N, labels, H0, W0, b0


def check(impls):
    """Every implementation against numpy_alloc in f64 after three steps on a small instance."""
    K, d, n = 5, 24, 30
    N, labels, H0, W0, b0 = instance(K, d, n, np.float64, seed=1)
    ref_step, ref_state = numpy_alloc(K, d, N, labels, H0, W0, b0)
    for _ in range(3):
        ref_step()
    ref = [np.array(a, np.float64) for a in ref_state()]
    ok = {}
    for name, make, dtype in impls:
        try:
            N2, labels2, H2, W2, b2 = instance(K, d, n, dtype, seed=1)
            st, state = make(K, d, N2, labels2, H2, W2, b2)
            for _ in range(3):
                st()
            got = [np.array(a, np.float64) for a in state()]
            tol = 1e-12 if dtype == np.float64 else 1e-5
            err = max(np.abs(g - r).max() / max(np.abs(r).max(), 1e-300) for g, r in zip(got, ref))
            if err > tol:
                print(f"  check FAILED: {name}: max rel. error {err:.1e} > {tol:.0e}", file=sys.stderr)
                sys.exit(1)
            ok[name] = err
        except Exception as e:  # noqa: BLE001 (torch.compile can fail in many ways)
            print(f"  {name}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
    return ok


def main():
    impls = [
        ("torch alloc f32", torch_alloc, np.float32),
        ("torch prealloc f32", torch_prealloc, np.float32),
        ("numpy alloc f64", numpy_alloc, np.float64),
        ("numpy prealloc f64", numpy_prealloc, np.float64),
        ("numpy blocked f64", lambda *a: numpy_prealloc(*a, block=args.block), np.float64),
    ]
    if not args.no_compile:
        impls.insert(2, ("torch compiled f32", torch_compiled, np.float32))
    print(f"PyTorch {torch.__version__}, NumPy {np.__version__}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.iters} steps, interleaved")
    ok = check(impls)
    impls = [i for i in impls if i[0] in ok]
    print("  correctness (3 steps vs textbook NumPy f64, max rel. error): "
          + ", ".join(f"{k} {v:.0e}" for k, v in ok.items()))
    for spec in args.sizes.split(":"):
        K, d, n = (int(v) for v in spec.split(","))
        N = K * n
        runners = {}
        for name, make, dtype in impls:
            Nn, labels, H0, W0, b0 = instance(K, d, n, dtype)
            st, _ = make(K, d, Nn, labels, H0, W0, b0)
            st()  # warm-up (and compilation)
            runners[name] = st
        names = ["ufm f32", "ufm f64"] + list(runners)
        times = {k: [] for k in names}
        loads = [os.getloadavg()[0]]
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                if name.startswith("ufm"):
                    times[name].append(ufm_time(K, d, n, name.split()[1], args.iters))
                else:
                    st = runners[name]
                    t0 = time.perf_counter()
                    for _ in range(args.iters):
                        st()
                    times[name].append((time.perf_counter() - t0) / args.iters)
            loads.append(os.getloadavg()[0])
        med = {k: float(np.median(v)) for k, v in times.items()}
        mn = {k: float(np.min(v)) for k, v in times.items()}
        print(f"\n(K, d, n) = ({K}, {d}, {n}), N = {N}; 1-min load average "
              f"{min(loads):.1f}-{max(loads):.1f}")
        print(f"  {'implementation':<22} {'median ms':>10} {'min ms':>9}")
        for k in names:
            print(f"  {k:<22} {1e3 * med[k]:10.2f} {1e3 * mn[k]:9.2f}")
        for label, pref, ours in [("PyTorch f32", "torch", "ufm f32"), ("NumPy f64", "numpy", "ufm f64")]:
            cand = [k for k in names if k.startswith(pref) and k.endswith(ours[-3:])]
            if not cand:
                continue
            best = min(cand, key=lambda k: med[k])
            best_min = min(cand, key=lambda k: mn[k])
            print(f"  best {label} / {ours}: {med[best] / med[ours]:.2f}x by medians ({best}), "
                  f"{mn[best_min] / mn[ours]:.2f}x by minimums ({best_min})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
