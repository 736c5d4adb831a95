#!/usr/bin/env bash
# GPU check of the CUDA backend, in two halves:
#
#   bash scripts/gpu-check.sh build   # here (x86-64, no GPU needed): release, stripped
#                                     # test + bench binaries -> .gpu/ (git-ignored)
#   bash scripts/gpu-check.sh run     # on the GPU machine (CUDA 13, driver >= 580, PyTorch,
#                                     # no Rust): parity tests, benches, PyTorch comparison,
#                                     # one short table; about 3-5 minutes, hard cap 8.
#
# With the device tool: run(command="bash scripts/gpu-check.sh run", carry=[".gpu"]).
# Logs and criterion data go to $OUT (when set) or .gpu/out/.
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
    mkdir -p .gpu
    rm -f .gpu/cuda_parity .gpu/bench_cuda
    local exe
    exe=$(cargo test --release --no-run --test cuda_parity --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda_parity":
        print(m["executable"])')
    cp "$exe" .gpu/cuda_parity
    exe=$(cargo bench --no-run --bench cuda --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])')
    cp "$exe" .gpu/bench_cuda
    strip .gpu/cuda_parity .gpu/bench_cuda
    {
        echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
        echo "built $(date -u +%FT%TZ) on $(uname -m), $(rustc --version)"
        echo "needs glibc >= $(objdump -T .gpu/cuda_parity .gpu/bench_cuda | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -n 1)"
    } > .gpu/BUILD_INFO
    cat .gpu/BUILD_INFO
    du -ch .gpu/cuda_parity .gpu/bench_cuda | tail -n 1
}

find_cuda_libs() {
    # libnvrtc.so.13 (+ builtins) and libcublas.so.13: toolkit, system, or pip wheels.
    local dirs="" d sp
    for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
             /usr/lib/x86_64-linux-gnu; do
        [ -e "$d/libnvrtc.so.13" ] || [ -e "$d/libcublas.so.13" ] && dirs="$dirs:$d"
    done
    for sp in $(python3 -c 'import site,sys; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
        [ -d "$sp/nvidia" ] || continue
        for d in $(find "$sp/nvidia" -maxdepth 3 \( -name 'libnvrtc.so.13' -o -name 'libcublas.so.13' \) -printf '%h\n' 2>/dev/null | sort -u); do
            dirs="$dirs:$d"
        done
    done
    echo "${dirs#:}"
}

run() {
    local out="${OUT:-.gpu/out}"
    mkdir -p "$out"
    [ -x .gpu/cuda_parity ] && [ -x .gpu/bench_cuda ] || {
        echo "gpu-check: .gpu/ has no binaries: run 'bash scripts/gpu-check.sh build' first (and carry .gpu)" >&2
        exit 1
    }
    cat .gpu/BUILD_INFO
    local libs
    libs=$(find_cuda_libs)
    export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv || true
    local t0=$SECONDS status=0
    echo "== parity tests =="
    # cli_device_flag needs the ufm binary at its build-time path: run it here, not there.
    timeout 150 .gpu/cuda_parity --test-threads=1 --nocapture --skip cli_device_flag \
        2>&1 | tee "$out/parity.log" | grep -E 'device:|SKIPPED|rel err [^ ]*e-0[0-4]|test |result|panicked' || status=1
    grep -q 'test result: ok' "$out/parity.log" || status=1
    echo "== benches (criterion) =="
    CRITERION_HOME="$out/criterion" timeout 300 .gpu/bench_cuda --bench \
        --warm-up-time 1 --measurement-time 3 --sample-size 10 2>&1 | tee "$out/bench.log" |
        grep -E '^[a-z_0-9]+/|time:|thrpt:|skipped' || status=1
    echo "== PyTorch eager =="
    timeout 120 python3 benches/compare_torch_gpu.py > "$out/torch.jsonl" 2> "$out/torch.err" || {
        status=1
        tail -n 5 "$out/torch.err"
    }
    cat "$out/torch.jsonl"
    echo "== table ($((SECONDS - t0)) s) =="
    python3 - "$out" <<'PY'
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
PY
    echo "gpu-check: finished in $((SECONDS - t0)) s, status $status (logs in $out)"
    return $status
}

case "${1:-}" in
build) build ;;
run) run ;;
*)
    echo "usage: bash scripts/gpu-check.sh build|run" >&2
    exit 2
    ;;
esac
