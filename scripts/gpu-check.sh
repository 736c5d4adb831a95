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
    python3 scripts/gpu_table.py "$out"
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
