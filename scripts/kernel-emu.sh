#!/usr/bin/env bash
# Runs the network kernels of kernels/nn.cu on the CPU, without a GPU: scripts/kernel-emu/emu.h
# emulates the CUDA execution model (one std::thread per CUDA thread, __syncthreads and warp
# shuffles through barriers), nn_test.cpp calls each kernel as the Rust layers do (cuBLAS
# mirrored by a column-major SGEMM) and compares with direct loops. Needs g++ with C++20.
# Usage: bash scripts/kernel-emu.sh   (exit status 1 on any mismatch)
set -euo pipefail
cd "$(dirname "$0")/kernel-emu"
out="${TMPDIR:-/tmp}/ufm-kernel-emu-$$"
trap 'rm -f "$out"' EXIT
g++ -std=c++20 -O1 -pthread -o "$out" nn_test.cpp
"$out"
