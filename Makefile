# patchdpo: `make demo` runs the main job on the embedded tiny world, `make test` runs the tests.
# Both bootstrap Bun from npm when it is missing, then install the pinned dependencies.
SHELL := /bin/bash
BUN_VERSION := 1.4.5
RUN ?= data/runs/demo

.PHONY: all setup demo test typecheck status tinybench tiny-model patch-encoder encoder-split clean

all: test

node_modules/.installed: package.json bun.lock
	@command -v bun >/dev/null 2>&1 || npm i -g bun@$(BUN_VERSION)
	bun install --frozen-lockfile
	@touch $@

setup: node_modules/.installed

# Type errors fail the tests too (tsc 7 checks the whole tree in seconds).
test: setup
	bun x tsc --noEmit -p .
	bun test --timeout 120000

typecheck: setup
	bun x tsc --noEmit -p .

demo: setup
	bun scripts/demo.ts --run $(RUN)

# What state a run is in: steps done / killed, rows per manifest, coverage, shards (scripts/status.ts).
status: setup
	bun scripts/status.ts --run $(RUN)

# The whole method on one machine, step by step and resumably: make pipeline RUN=data/runs/p1 [NP=2]
# (examples/pipeline.mk; README "Past one machine"). The defaults run the tiny world on a CPU.
include examples/pipeline.mk

# TinyBench (bench/TINYBENCH.md): does PatchDPO fix details? The tiny world, against ground truth,
# 3 seeds, about 45 minutes on a 2-core CPU; not part of CI (CI runs a short chain in the tests).
tinybench: setup
	bun bench/tinybench.ts

# Remakes the committed tiny generator (checkpoints/tiny) from scratch into a new folder; resumable.
tiny-model: setup
	bun scripts/pretrain-tiny.ts --out data/pretrain/tiny-x0 --steps 4000 --batch 8 --lr 5e-4 --warmup 150 --scene-share 0.5 --prediction sample --save-every 250 --threads 2

# Remakes the shipped patch encoder (checkpoints/patch-encoder, the default of score-patches and eval):
# the SSL patch finetune of MobileNetV2 on the shared DreamBench photos plus tiny-world renders, with
# the setting bench/encoder-split.ts chose on unseen subjects. Trains into data/patch-encoder
# (resumable), then copies the result over the committed one (git checkout restores it).
DREAMBENCH ?= ../shared/data/dreambench
PATCH_ENCODER_FLAGS := --feature-layer block_13_expand_relu --train-blocks 2 --lr 3e-4 --schedule warmup --warmup 20 --steps 600 --batch 4 --seed 0
patch-encoder: setup
	@test -d $(DREAMBENCH) || { echo "$(DREAMBENCH) is missing: point DREAMBENCH= at DreamBench photos (<subject>/<n>.jpg)"; exit 1; }
	bun scripts/render-tinyworld.ts --out data/encoder-data/tinyworld --split train,val --size 64 --scenes 1 --seed 0
	bun scripts/finetune-encoder.ts --images $(DREAMBENCH) --images data/encoder-data/tinyworld $(PATCH_ENCODER_FLAGS) --out data/patch-encoder --save-every 50 --resume
	mkdir -p checkpoints/patch-encoder
	cp data/patch-encoder/weights.safetensors data/patch-encoder/state.json data/patch-encoder/train-log.jsonl checkpoints/patch-encoder/
	cp $(DREAMBENCH)/references_and_licenses.txt checkpoints/patch-encoder/CREDITS.txt

# How well the patch finetune generalizes to unseen DreamBench subjects, and which setting to ship
# (bench/ENCODER-SPLIT.md); about an hour on a 2-core CPU, resumable.
encoder-split: setup
	bun bench/encoder-split.ts --photos $(DREAMBENCH)

# bench-dpo-step with recompute (gradient checkpointing) and the frozen UNet kept mapped from its
# file (CompileOptions.mappedWeights), the frozen twin inside the training graph (one session);
# `make bench-dpo-step` is the same step without any of them.
bench-dpo-step-recompute: setup
	bun bench/run.ts dpo-step --rounds 3 --threads 2 --iters 1 --ours="--recompute --mapped-weights --twin-in-graph"

# bench-<name>: ours (bench/<name>.ts) vs PyTorch (bench/<name>.py), appended to bench/RESULTS.md
bench-%: setup
	@/usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null || { \
	  echo "installing PyTorch for the reference (Debian packages)"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-torch python3-torchvision libopenblas0-pthread; }
	bun bench/run.ts $*

# GPU execution providers (README "On a GPU box"). setup-cuda: onnxruntime-node's CUDA 12 provider,
# which its npm package does not ship: runs the package's own install script (what Bun runs for a
# trusted package, `bun pm trust onnxruntime-node`, without writing trustedDependencies into
# package.json); it downloads Microsoft.ML.OnnxRuntime.Gpu.Linux from nuget.org (internet once),
# then the preflight checks that the provider runs. lavapipe: Mesa's CPU Vulkan driver for
# --device webgpu on a machine without a GPU (Debian 12, root). bench-gpu: bench/gpu.sh.
.PHONY: setup-cuda lavapipe bench-gpu
setup-cuda: setup
	cd node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL_CUDA=v12 $$(command -v node || command -v bun) script/install.js
	bun -e 'const { deviceProblem } = await import("./lib/graph/index.ts"); const p = await deviceProblem("cuda"); console.log(p ?? "--device cuda: the CUDA provider runs"); process.exit(p ? 1 : 0)'

lavapipe:
	.ci/lavapipe

bench-gpu: setup
	bench/gpu.sh

clean:
	rm -rf data/runs .cache bench/out
