#!/usr/bin/env bash
# NVRTC compile check of every kernel in kernels/ for compute_80 and compute_90, on a machine
# without a GPU or CUDA toolkit: installs the `nvidia-cuda-nvrtc` wheel (CUDA 13.0, ~90 MB) from
# PyPI into a virtual environment under target/, points the dynamic loader at its libnvrtc.so.13
# (+ libnvrtc-builtins.so.13.0) and runs `cargo run --example nvrtc_check`. Fails, printing
# NVRTC's log (kernels/<file>.cu(<line>): error ...), on any compile error or on an entry point
# registered in src/backend/kernels.rs that is missing from the PTX.
#
#   bash scripts/nvrtc-check.sh [compute_80 compute_90 ...]
# Env: NVRTC_VENV (default target/nvrtc-venv), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NVRTC_VENV:-target/nvrtc-venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/pip" ]; then
    "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import importlib.metadata as m; v = m.version("nvidia-cuda-nvrtc"); assert v.startswith("13.0"), v' 2>/dev/null; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'nvidia-cuda-nvrtc==13.0.*'
fi
LIB="$(find "$VENV" -name 'libnvrtc.so.13' -printf '%h\n' | head -n 1)"
if [ -z "$LIB" ]; then
    echo "nvrtc-check: libnvrtc.so.13 not found in $VENV after installing nvidia-cuda-nvrtc" >&2
    exit 1
fi
echo "nvrtc-check: using $(ls "$LIB"/libnvrtc.so.13) ($("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("nvidia-cuda-nvrtc"))'))"
LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" cargo run --quiet --example nvrtc_check -- "$@"
