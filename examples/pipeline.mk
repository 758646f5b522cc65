# `make pipeline RUN=data/runs/p1`: the whole PatchDPO method on one machine, one step after another
# (the order of scripts/demo.ts, without its scorer checks):
#
#   prompts -> references -> personalized generations -> SSL patch encoder -> patch scores
#   -> EPOCHS PatchDPO epochs -> generations with the trained IP-Adapter (<RUN>-after) -> eval -> report
#
# Resumable: each step leaves a stamp in <RUN>/.pipeline/ when it succeeds. An interrupted step
# leaves none, so the next `make pipeline` reruns it, and the script resumes where it stopped
# (finished rows are skipped, training continues from its newest checkpoint). A step rerun with
# other flags is refused by the script, naming the setting; `rm -r <RUN>/.pipeline` makes make
# revisit every step (finished ones then return at once).
#
# The defaults run on the embedded tiny world on a CPU in minutes. A real run overrides the models
# and the per-step flags, e.g. SDXL + IP-Adapter-Plus on one 8-GPU box:
#   make pipeline RUN=data/runs/sdxl NP=8 DEVICE=cuda MODEL=checkpoints/sdxl-base REFERENCE_MODEL=checkpoints/sdxl-base \
#     IP_ADAPTER=checkpoints/ip-adapter-plus_sdxl_vit-h.safetensors IMAGE_ENCODER=checkpoints/clip-vit-h-14 \
#     PROMPT_FLAGS="--subjects 5000" REFERENCE_FLAGS= GENERATE_FLAGS="--per-reference 4" LATENT_GRID=128 \
#     SSL_FLAGS="--encoder checkpoints/dinov2-small --steps 2000" DPO_FLAGS="--batch 4 --grad-accum 8" EPOCHS=1 EVAL_FLAGS=
# NP=n runs the two training steps data-parallel under mpirun -np n (n must divide --grad-accum;
# with a GPU per rank, see the README's "Past one machine").

MODEL ?= checkpoints/tiny
IP_ADAPTER ?= $(MODEL)/ip-adapter.safetensors
IMAGE_ENCODER ?= mobilenet_v2
REFERENCE_MODEL ?= tinyworld
DEVICE ?= cpu
NP ?= 1
EPOCHS ?= 3
LATENT_GRID ?= 16
PROMPT_FLAGS ?= --world tiny --tiny-split train --subjects 6 --scenes-per-subject 2
REFERENCE_FLAGS ?= --width 224 --height 224
GENERATE_FLAGS ?= --width 64 --height 64 --steps 20 --guidance 1 --ip-scale 1 --per-reference 2 --batch 6
SSL_FLAGS ?= --feature-layer block_13_expand_relu --train-blocks 2 --steps 80 --lr 3e-4 --warmup 5 --holdout 2 --crop-scale 0.5,1 --save-every 20 --batch 4 --grad-accum 2
SCORE_FLAGS ?=
DPO_FLAGS ?= --objective patch-dpo --size 64 --batch 1 --grad-accum 2 --lr 1e-5 --beta 500 --save-every 10
EVAL_FLAGS ?=

ifeq ($(NP),1)
LAUNCH :=
else
# As root Open MPI wants both ALLOW_RUN_AS_ROOT variables; they change nothing for other users.
LAUNCH := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np $(NP) --oversubscribe --bind-to none
endif

P := $(RUN)/.pipeline
AFTER := $(RUN)-after
TRAINED := $(RUN)/train/ip-adapter-epoch-$(EPOCHS).safetensors
GEN := --model $(MODEL) --image-encoder $(IMAGE_ENCODER) --device $(DEVICE)

.PHONY: pipeline
pipeline: setup $(P)/report.done
	@echo "pipeline done: $(RUN) (before) and $(AFTER) (after $(EPOCHS) epochs); report: $(AFTER)/eval/report.html"

$(P)/prompts.done:
	bun scripts/synthesize-prompts.ts --run $(RUN) $(PROMPT_FLAGS)
	@mkdir -p $(P) && touch $@

$(P)/references.done: $(P)/prompts.done
	bun scripts/generate-images.ts --run $(RUN) --mode reference --model $(REFERENCE_MODEL) --device $(DEVICE) $(REFERENCE_FLAGS)
	@touch $@

$(P)/generations.done: $(P)/references.done
	bun scripts/generate-images.ts --run $(RUN) --mode personalized $(GEN) --ip-adapter $(IP_ADAPTER) $(GENERATE_FLAGS)
	@touch $@

# The self-supervised patch task on the run's references (resumes from <RUN>/encoder-ssl/step-N).
$(P)/encoder.done: $(P)/references.done
	$(LAUNCH) bun scripts/finetune-encoder.ts --run $(RUN) --out $(RUN)/encoder-ssl --device $(DEVICE) --resume $(SSL_FLAGS)
	@touch $@

$(P)/scores.done: $(P)/generations.done $(P)/encoder.done
	bun scripts/score-patches.ts --run $(RUN) --encoder $(RUN)/encoder-ssl --latent-grid $(LATENT_GRID) --device $(DEVICE) $(SCORE_FLAGS)
	@touch $@

# Epoch e starts from epoch e-1's IP-Adapter; --resume continues a stopped epoch and skips finished ones.
$(P)/train.done: $(P)/scores.done
	for e in $$(seq 1 $(EPOCHS)); do \
	  $(LAUNCH) bun scripts/dpo-epoch.ts --run $(RUN) $(GEN) --ip-adapter $(IP_ADAPTER) --epoch $$e --resume $(DPO_FLAGS) || exit 1; \
	done
	@touch $@

$(P)/after.done: $(P)/train.done
	mkdir -p $(AFTER)
	for f in prompts.jsonl references.jsonl references; do [ -e $(AFTER)/$$f ] || cp -r $(RUN)/$$f $(AFTER)/; done
	bun scripts/generate-images.ts --run $(AFTER) --mode personalized $(GEN) --ip-adapter $(TRAINED) $(GENERATE_FLAGS)
	@touch $@

$(P)/report.done: $(P)/after.done
	bun scripts/eval.ts --run $(RUN) --device $(DEVICE) $(EVAL_FLAGS)
	bun scripts/eval.ts --run $(AFTER) --device $(DEVICE) $(EVAL_FLAGS)
	bun scripts/report.ts --run $(AFTER) --compare $(RUN) --train-log $(RUN)/train --train-log $(RUN)/encoder-ssl --title "PatchDPO pipeline: $(RUN), before vs after"
	@touch $@
