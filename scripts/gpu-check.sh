#!/usr/bin/env bash
# GPU check of the CUDA backend, in two halves:
#
#   bash scripts/gpu-check.sh build   # here (x86-64, no GPU needed): release, stripped
#                                     # test + bench binaries -> .gpu/ (git-ignored)
#   bash scripts/gpu-check.sh run [all|backend|train]
#                                     # on the GPU machine (CUDA 13, driver >= 580, PyTorch,
#                                     # no Rust). backend: UFM parity tests, benches, PyTorch
#                                     # comparison (about 3-5 minutes); train: network-layer
#                                     # parity (tests/nn_cuda_parity.rs), one resnet18 epoch on
#                                     # the CIFAR-10 subset (with and without --fixdim 10) and on
#                                     # MNIST with images/s and peak memory, PyTorch+cuDNN
#                                     # training the same model (about 3-4 minutes); one table.
#
# With the device tool: run(command="bash scripts/gpu-check.sh run", carry=[".gpu"]).
# The build also copies the release `ufm` binary and the data (MNIST, CIFAR-10 subset: ~27 MB
# from ${UFM_DATA_DIR:-../shared/data}) into .gpu/, which must stay under 64 MiB.
# The GPU tests are #[ignore]d in a plain `cargo test` (no GPU there); here they run with
# --include-ignored and UFM_REQUIRE_GPU=1, so a missing GPU fails them instead of skipping.
# Logs and criterion data go to $OUT (when set) or .gpu/out/.
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
    mkdir -p .gpu
    rm -f .gpu/cuda_parity .gpu/bench_cuda .gpu/nn_cuda_parity .gpu/ufm
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
    exe=$(cargo test --release --no-run --test nn_cuda_parity --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "nn_cuda_parity":
        print(m["executable"])')
    cp "$exe" .gpu/nn_cuda_parity
    cargo build --release --bin ufm
    cp target/release/ufm .gpu/ufm
    strip .gpu/cuda_parity .gpu/bench_cuda .gpu/nn_cuda_parity .gpu/ufm
    local data="${UFM_DATA_DIR:-../shared/data}"
    rm -rf .gpu/data
    mkdir -p .gpu/data/MNIST .gpu/data/cifar10-subset
    cp -r "$data/MNIST/raw" .gpu/data/MNIST/
    cp -r "$data/cifar10-subset/cifar-10-batches-bin" .gpu/data/cifar10-subset/
    {
        echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
        echo "built $(date -u +%FT%TZ) on $(uname -m), $(rustc --version)"
        echo "needs glibc >= $(objdump -T .gpu/cuda_parity .gpu/bench_cuda .gpu/nn_cuda_parity .gpu/ufm | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -n 1)"
    } > .gpu/BUILD_INFO
    cat .gpu/BUILD_INFO
    rm -rf .gpu/out
    du -sh .gpu/* | sort -h
    local total
    total=$(du -sb .gpu | cut -f1)
    echo "total $((total / 1048576)) MiB (limit 64 MiB to carry)"
    [ "$total" -lt $((64 * 1048576)) ] || {
        echo "gpu-check: .gpu/ is over 64 MiB and cannot be carried" >&2
        exit 1
    }
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
    local what="${1:-all}"
    local out="${OUT:-.gpu/out}"
    mkdir -p "$out"
    [ -x .gpu/cuda_parity ] && [ -x .gpu/bench_cuda ] && [ -x .gpu/nn_cuda_parity ] && [ -x .gpu/ufm ] || {
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
    if [ "$what" = all ] || [ "$what" = backend ]; then
        backend "$out" || status=1
    fi
    if [ "$what" = all ] || [ "$what" = train ]; then
        train "$out" || status=1
    fi
    echo "== table ($((SECONDS - t0)) s) =="
    python3 scripts/gpu_table.py "$out"
    echo "gpu-check: finished in $((SECONDS - t0)) s, status $status (logs in $out)"
    return $status
}

backend() {
    local out="$1" status=0
    echo "== parity tests =="
    # cli_device_flag needs the ufm binary at its build-time path: run it here, not there.
    UFM_REQUIRE_GPU=1 timeout 150 .gpu/cuda_parity --test-threads=1 --nocapture --include-ignored \
        --skip cli_device_flag \
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
    echo "== ufm metrics --device cpu vs cuda (N=50000, d=512, K=10, f32 features) =="
    local m
    m=$(mktemp -d)
    python3 - "$m" <<'PY' || status=1
import os, sys
import numpy as np
d = sys.argv[1]
r = np.random.default_rng(3)
y = np.arange(50000) % 10
mu = 3 * r.standard_normal((10, 512))
np.save(os.path.join(d, "h.npy"), (mu[y] + r.standard_normal((50000, 512))).astype(np.float32))
np.save(os.path.join(d, "y.npy"), y)
np.save(os.path.join(d, "w.npy"), mu + r.standard_normal((10, 512)))
PY
    for dev in cpu cuda; do
        { time timeout 60 .gpu/ufm metrics --device "$dev" --json --features "$m/h.npy" \
            --labels "$m/y.npy" --weights "$m/w.npy" > "$out/metrics_$dev.json"; } 2> "$out/metrics_$dev.err" || status=1
        echo "metrics $dev: $(grep real "$out/metrics_$dev.err") $(grep -o '"nc1": [^,]*' "$out/metrics_$dev.json")"
    done
    rm -rf "$m"
    return $status
}

# The training section: ufm's GPU layers against the CPU layers, then throughput and memory of
# `ufm train --device cuda` and of PyTorch+cuDNN on the same data, model and batch size.
train() {
    local out="$1" status=0 runs
    runs=$(mktemp -d)
    echo "== network-layer parity (nn_cuda_parity) =="
    # cli_* tests need the ufm binary at its build-time path: they run in CI, not here.
    UFM_DATA_DIR=.gpu/data UFM_REQUIRE_GPU=1 timeout 300 .gpu/nn_cuda_parity --test-threads=1 --nocapture \
        --include-ignored --skip cli_ \
        2>&1 | tee "$out/nn_parity.log" | grep -E 'device:|SKIPPED|rel err [^ ]*e-0[0-3]|epoch .* loss cpu|test |result|panicked' || status=1
    grep -q 'test result: ok' "$out/nn_parity.log" || status=1
    echo "== ufm train --device cuda: resnet18, batch 128 =="
    # name | data dir | flags; 2 epochs on the subset (the first includes NVRTC + cuBLAS set-up)
    local spec name dir flags
    for spec in "cifar|.gpu/data/cifar10-subset|--dataset cifar10 --epochs 2" \
                "cifar_fixdim10|.gpu/data/cifar10-subset|--dataset cifar10 --epochs 2 --fixdim 10" \
                "mnist|.gpu/data|--dataset mnist --epochs 1"; do
        IFS='|' read -r name dir flags <<< "$spec"
        # shellcheck disable=SC2086
        timeout 240 .gpu/ufm train --device cuda --model resnet18 --batch-size 128 --lr 0.05 \
            $flags --data-dir "$dir" --out-dir "$runs" --uid "$name" --force \
            > "$out/train_$name.log" 2>&1 || status=1
        grep -E 'device|cuda epoch|^epoch|Error' "$out/train_$name.log" | sed "s/^/$name: /"
    done
    echo "== ufm validate --device cuda (cifar run) =="
    { time timeout 120 .gpu/ufm validate --device cuda --run "$runs/cifar" --batch-size 500; } \
        > "$out/validate_cifar.log" 2>&1 || status=1
    tail -n 5 "$out/validate_cifar.log"
    echo "== PyTorch + cuDNN, same model and batch =="
    : > "$out/torch_train.jsonl"
    for flags in "--dataset cifar10" "--dataset cifar10 --fixdim 10" "--dataset cifar10 --tf32" "--dataset mnist --epochs 1"; do
        local ddir=.gpu/data/cifar10-subset
        case "$flags" in *mnist*) ddir=.gpu/data ;; esac
        # shellcheck disable=SC2086
        timeout 180 python3 benches/compare_torch_train_gpu.py --data-dir "$ddir" --batch 128 $flags \
            >> "$out/torch_train.jsonl" 2>> "$out/torch_train.err" || { status=1; tail -n 5 "$out/torch_train.err"; }
    done
    cat "$out/torch_train.jsonl"
    rm -rf "$runs"
    return $status
}

case "${1:-}" in
build) build ;;
run) run "${2:-all}" ;;
*)
    echo "usage: bash scripts/gpu-check.sh build | run [all|backend|train]" >&2
    exit 2
    ;;
esac
