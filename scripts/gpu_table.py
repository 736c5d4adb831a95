#!/usr/bin/env python3
"""Summary table of a `scripts/gpu-check.sh run`: criterion results (benches/cuda.rs) and the
PyTorch comparison (benches/compare_torch_gpu.py), against the measured copy bandwidth and
SGEMM rate.  Usage: python3 scripts/gpu_table.py OUT_DIR  (OUT_DIR holds criterion/ and
torch.jsonl)."""
import glob, json, os, sys
out = sys.argv[1]
rows = {}
for f in glob.glob(os.path.join(out, "criterion", "**", "new", "benchmark.json"), recursive=True):
    b = json.load(open(f))
    e = json.load(open(os.path.join(os.path.dirname(f), "estimates.json")))
    rows[(b["group_id"], b["function_id"])] = (e["mean"]["point_estimate"] * 1e-9, b.get("throughput"))
def rate(t, thr):
    if not thr: return None
    (kind, v), = thr.items()
    return v / t
copy = next((rate(t, thr) for (g, f), (t, thr) in rows.items() if g.startswith("copy_d2d")), None)
gemm = next((rate(t, thr) for (g, f), (t, thr) in rows.items() if g.startswith("sgemm")), None)
print(f"measured ceilings: d2d copy {copy/1e9:.0f} GB/s, SGEMM {gemm/1e12:.1f} TFLOP/s" if copy and gemm else f"ceilings: copy {copy}, gemm {gemm}")
step = {f: (t, thr, g) for (g, f), (t, thr) in rows.items() if g.startswith("gd_step")}
torch = [json.loads(l) for l in open(os.path.join(out, "torch.jsonl")) if l.strip().startswith("{")]
torch = [t for t in torch if "ms" in t]
print(f"{'implementation':<34}{'ms/step':>10}{'GB/s':>9}{'% copy':>8}{'TFLOP/s':>9}{'vs torch':>10}")
tbest = min((t["ms"] for t in torch), default=None)
flops = None
for f, (t, thr, g) in sorted(step.items(), key=lambda kv: -kv[1][0]):
    k = int(g.split("_K")[1].split("_")[0]); d = int(g.split("_d")[1].split("_")[0]); n = int(g.split("_N")[1])
    flops = 6 * n * d * k
    bw = rate(t, thr)
    print(f"{f:<34}{t*1e3:>10.3f}{bw/1e9:>9.0f}{100*bw/copy if copy else float('nan'):>8.0f}{flops/t/1e12:>9.2f}{(tbest/(t*1e3)) if tbest else float('nan'):>9.2f}x")
for r in torch:
    print(f"{r['impl']:<34}{r['ms']:>10.3f}{r['gbps_min_bytes']:>9.0f}{100*r['gbps_min_bytes']*1e9/copy if copy else float('nan'):>8.0f}{r['tflops']:>9.2f}{tbest/r['ms']:>9.2f}x")
print("targets: fused >= 60% of copy bandwidth, >= 2x faster than PyTorch eager ('vs torch' = best torch ms / ms)")

# Parity summary (tests/cuda_parity.rs output in parity.log).
plog = os.path.join(out, "parity.log")
if os.path.exists(plog):
    worst = {}
    for line in open(plog):
        if " rel err " in line:
            dt = line.split()[0]
            e = float(line.split(" rel err ")[1].split()[0])
            worst[dt] = max(worst.get(dt, 0.0), e)
    text = open(plog).read()
    res = [l for l in text.splitlines() if l.startswith("test result")]
    print("parity: " + (", ".join(f"{dt} max rel err {e:.1e}" for dt, e in sorted(worst.items())) or "no comparisons ran")
          + ("; SKIPPED (no GPU)" if "SKIPPED" in text else "") + f"; {res[-1] if res else 'no test result'}")
