#!/usr/bin/env bash
# The GPU box benchmark, one command: ours on each GPU execution provider present (cuda, webgpu)
# against PyTorch CUDA fp32 and bf16 on the same weights, for the SD 1.5 UNet sample step at 512 px
# and the patch-dpo step on 1 pair at 64x64 latents (bench/gpu.ts, bench/gpu.py). Prints ratio
# lines and peak device memory; a full run appends its rows to bench/RESULTS.md. Under 8 minutes.
#
#   bench/gpu.sh                 full size (a GPU box; run `make setup-cuda` first for cuda)
#   bench/gpu.sh --mode smoke    a small UNet at 16x16 latents on the providers present here
#                                (lavapipe's webgpu, cpu) and PyTorch on the CPU: a smoke test
#   bench/gpu.sh --help          every option
#
# Needs: Bun and `make setup` (node_modules); for webgpu a Vulkan driver and libvulkan1; for the
# PyTorch rows python3 with torch (CUDA build) and diffusers (`pip install torch diffusers`).
set -uo pipefail
cd "$(dirname "$0")/.."
command -v bun >/dev/null 2>&1 || { echo "bench/gpu.sh: bun is missing: make setup (or npm i -g bun@1.4.5)" >&2; exit 1; }
[ -d node_modules/onnxruntime-node ] || { echo "bench/gpu.sh: node_modules is missing: make setup" >&2; exit 1; }
# Dawn (the WebGPU provider) wants a runtime folder.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
mode=full
for a in "$@"; do [ "$a" = smoke ] && mode=smoke; done
for ((i = 1; i <= $#; i++)); do [ "${!i}" = --mode ] && { j=$((i + 1)); mode="${!j:-full}"; }; done
# The whole run stays under 8 minutes on a GPU box: each measurement has its own --timeout too.
limit=470
[ "$mode" = smoke ] && limit=1200
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
exec timeout --signal=KILL "$limit" bun bench/gpu.ts "$@"
