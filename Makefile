# patchdpo: `make demo` runs the main job on the embedded tiny world, `make test` runs the tests.
# Both bootstrap Bun from npm when it is missing, then install the pinned dependencies.
SHELL := /bin/bash
BUN_VERSION := 1.4.5
RUN ?= data/runs/demo

.PHONY: all setup demo test typecheck tinybench tiny-model clean

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

# TinyBench (bench/TINYBENCH.md): does PatchDPO fix details? The tiny world, against ground truth,
# 3 seeds, about 45 minutes on a 2-core CPU; not part of CI (CI runs a short chain in the tests).
tinybench: setup
	bun bench/tinybench.ts

# Remakes the committed tiny generator (checkpoints/tiny) from scratch into a new folder; resumable.
tiny-model: setup
	bun scripts/pretrain-tiny.ts --out data/pretrain/tiny-x0 --steps 4000 --batch 8 --lr 5e-4 --warmup 150 --scene-share 0.5 --prediction sample --save-every 250 --threads 2

# bench-<name>: ours (bench/<name>.ts) vs PyTorch (bench/<name>.py), appended to bench/RESULTS.md
bench-%: setup
	@/usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null || { \
	  echo "installing PyTorch for the reference (Debian packages)"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-torch python3-torchvision libopenblas0-pthread; }
	bun bench/run.ts $*

clean:
	rm -rf data/runs .cache bench/out
