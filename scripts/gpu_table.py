#!/usr/bin/env python3
"""Summary table of a `scripts/gpu-check.sh run`: criterion results (benches/cuda.rs) and the
PyTorch comparison (benches/compare_torch_gpu.py), against the measured copy bandwidth and
SGEMM rate; then the training section: `ufm train --device cuda` images/s and peak memory
against PyTorch+cuDNN (benches/compare_torch_train_gpu.py), with the ratio, and the
network-layer parity.  Usage: python3 scripts/gpu_table.py OUT_DIR  (OUT_DIR holds criterion/,
torch.jsonl, train_*.log, torch_train.jsonl, nn_parity.log; missing parts are skipped)."""
import glob, json, os, re, sys
out = sys.argv[1]


def training_table():
    """ufm vs PyTorch training throughput and memory (the issue's targets)."""
    ours = {}
    for f in sorted(glob.glob(os.path.join(out, "train_*.log"))):
        name = os.path.basename(f)[len("train_"):-len(".log")]
        last = None
        for line in open(f, errors="replace"):
            m = re.search(r"cuda epoch (\d+): (\d+) images/s, peak device memory ([0-9.]+) MiB", line)
            if m:
                last = (int(m.group(1)), float(m.group(2)), float(m.group(3)))
        ours[name] = last
    tt = os.path.join(out, "torch_train.jsonl")
    torch = {}
    if os.path.exists(tt):
        for l in open(tt):
            if l.strip().startswith("{"):
                r = json.loads(l)
                if "images_per_s" in r:
                    key = (r["dataset"], r["fixdim"], r["impl"])
                    torch[key] = r  # the last epoch wins
    if not ours and not torch:
        return
    print()
    print("training: resnet18 (ImageNet stem), batch 128, f32; last epoch of each run")
    print(f"{'run':<34}{'images/s':>10}{'peak MiB':>10}{'ours/torch':>12}")
    names = {"cifar": ("cifar10", 0), "cifar_fixdim10": ("cifar10", 10), "mnist": ("mnist", 0)}
    for name, v in ours.items():
        ds, fd = names.get(name, (name, 0))
        t = torch.get((ds, fd, "torch_cudnn_fp32"))
        if v is None:
            print(f"{'ufm ' + name:<34}{'failed (see train_' + name + '.log)':>32}")
            continue
        ratio = f"{v[1] / t['images_per_s']:.2f}x" if t else "n/a"
        print(f"{'ufm ' + name:<34}{v[1]:>10.0f}{v[2]:>10.1f}{ratio:>12}")
    for (ds, fd, impl), r in sorted(torch.items()):
        label = f"{impl} {ds}" + (f" fixdim {fd}" if fd else "")
        print(f"{label:<34}{r['images_per_s']:>10.0f}{r.get('peak_mib', float('nan')):>10.1f}")
    c, t = ours.get("cifar"), torch.get(("cifar10", 0, "torch_cudnn_fp32"))
    if c and t:
        print(f"target: ufm >= 0.5 x PyTorch+cuDNN f32 images/s on CIFAR-10: {c[1] / t['images_per_s']:.2f}x")
    cf = ours.get("cifar_fixdim10")
    if c and cf:
        msg = f"--fixdim 10 peak-memory saving: ufm {100 * (1 - cf[2] / c[2]):.1f}%"
        t10 = torch.get(("cifar10", 10, "torch_cudnn_fp32"))
        if t and t10 and "peak_mib" in t:
            msg += f", PyTorch {100 * (1 - t10['peak_mib'] / t['peak_mib']):.1f}%"
        print(msg + " (paper: 'over 20%')")
    plog = os.path.join(out, "nn_parity.log")
    if os.path.exists(plog):
        text = open(plog, errors="replace").read()
        errs = [float(m) for m in re.findall(r" rel err ([0-9.e+-]+) ", text)]
        res = [l for l in text.splitlines() if l.startswith("test result")]
        print("network-layer parity: " + (f"{len(errs)} comparisons, max rel err {max(errs):.1e}" if errs else "no comparisons ran")
              + ("; SKIPPED (no GPU)" if "SKIPPED" in text else "") + f"; {res[-1] if res else 'no test result'}")
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
tj = os.path.join(out, "torch.jsonl")
torch = [json.loads(l) for l in open(tj) if l.strip().startswith("{")] if os.path.exists(tj) else []
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

training_table()
