#!/usr/bin/env python3
"""The UFM gradient step of benches/cuda.rs, written in PyTorch eager on the same GPU.

    python3 benches/compare_torch_gpu.py [--n 1000000 --d 512 --k 10 --loss ce --reps 20]
    python3 benches/compare_torch_gpu.py --cpu --n 2000 --d 16 --k 4   # smoke test, no GPU

One step at (W, H^T, b) with H^T stored N x d (as in ufm), labels grouped by class:
    Z = H W^T + 1 b^T, G = grad_Z loss / N,
    f = mean loss + lambda/2 (|W|^2 + |H|^2 + |b|^2),  |grad f|,
    W -= lr (G^T H + lambda W), b -= lr (G^T 1 + lambda b), H -= lr (G W + lambda H).
Two variants: `manual` (the formulas above, addmm etc.) and `autograd` (loss.backward()).
Timing: warm-up, then `reps` steps between sync() calls; the median of
`rounds` such rounds is reported. Bytes are counted as in benches/cuda.rs: 3 * 4 N d (H read
twice, written once). Prints one JSON object per line.
"""
import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--loss", choices=["ce", "mse"], default="ce")
    ap.add_argument("--lam", type=float, default=5e-4)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cpu", action="store_true", help="smoke test on the CPU (small sizes)")
    args = ap.parse_args()
    if args.cpu:
        dev, name = torch.device("cpu"), "cpu"
        sync = lambda: None
    elif not torch.cuda.is_available():
        print(json.dumps({"skipped": "torch.cuda.is_available() is False"}))
        return
    else:
        dev = torch.device("cuda")
        name = torch.cuda.get_device_name(0)
        sync = torch.cuda.synchronize
    k, d = args.k, args.d
    n = (args.n // k) * k
    g = torch.Generator(device=dev).manual_seed(0)
    H = 0.1 * torch.randn(n, d, device=dev, generator=g)
    W = 0.1 * torch.randn(k, d, device=dev, generator=g)
    b = torch.zeros(k, device=dev)
    labels = torch.arange(k, device=dev).repeat_interleave(n // k)
    onehot = torch.nn.functional.one_hot(labels, k).float()
    lam, lr = args.lam, args.lr

    def step_manual(H, W, b):
        Z = torch.addmm(b, H, W.T)
        if args.loss == "ce":
            lse = torch.logsumexp(Z, 1)
            loss = (lse - Z.gather(1, labels[:, None]).squeeze(1)).mean()
            G = torch.softmax(Z, 1).sub_(onehot).div_(n)
        else:
            R = Z - onehot
            loss = 0.5 * R.square().sum(1).mean()
            G = R.div_(n)
        gW = torch.addmm(W, G.T, H, beta=lam)
        gb = G.sum(0).add_(b, alpha=lam)
        gH = torch.addmm(H, G, W, beta=lam)
        f = loss + 0.5 * lam * (W.square().sum() + H.square().sum() + b.square().sum())
        gn = torch.sqrt(gH.square().sum() + gW.square().sum() + gb.square().sum())
        H.sub_(gH, alpha=lr)
        W.sub_(gW, alpha=lr)
        b.sub_(gb, alpha=lr)
        return f, gn

    def step_autograd(H, W, b):
        for t in (H, W, b):
            t.requires_grad_(True)
            t.grad = None
        Z = torch.addmm(b, H, W.T)
        if args.loss == "ce":
            loss = torch.nn.functional.cross_entropy(Z, labels)
        else:
            loss = 0.5 * (Z - onehot).square().sum(1).mean()
        f = loss + 0.5 * lam * (W.square().sum() + H.square().sum() + b.square().sum())
        f.backward()
        with torch.no_grad():
            gn = torch.sqrt(H.grad.square().sum() + W.grad.square().sum() + b.grad.square().sum())
            H.sub_(H.grad, alpha=lr)
            W.sub_(W.grad, alpha=lr)
            b.sub_(b.grad, alpha=lr)
        for t in (H, W, b):
            t.requires_grad_(False)
        return f.detach(), gn

    bytes_min = 3 * 4 * n * d
    flops = 6 * n * d * k
    for variant, fn in (("manual", step_manual), ("autograd", step_autograd)):
        Hc, Wc, bc = H.clone(), W.clone(), b.clone()
        ctx = torch.no_grad() if variant == "manual" else torch.enable_grad()
        with ctx:
            for _ in range(3):
                fn(Hc, Wc, bc)
            sync()
            times = []
            for _ in range(args.rounds):
                sync()
                t0 = time.perf_counter()
                for _ in range(args.reps):
                    f, gn = fn(Hc, Wc, bc)
                sync()
                times.append((time.perf_counter() - t0) / args.reps)
        t = statistics.median(times)
        print(json.dumps({
            "impl": f"torch-eager-{variant}",
            "device": name,
            "torch": torch.__version__,
            "n": n, "d": d, "k": k, "loss": args.loss,
            "ms": 1e3 * t,
            "gbps_min_bytes": bytes_min / t / 1e9,
            "tflops": flops / t / 1e12,
            "f": float(f), "grad_norm": float(gn),
        }), flush=True)
        del Hc, Wc, bc
        if not args.cpu:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
