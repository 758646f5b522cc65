# Settings of the cluster recipe, read by every job (sbatch passes the submitter's environment, so
# `RUN=data/runs/x SHARDS=16 examples/slurm/submit.sh` overrides any of them). Paths are relative
# to the repository root, where the jobs run; it must sit on a filesystem every node sees.
: "${RUN:=data/runs/sdxl}"
: "${MODEL:=checkpoints/sdxl-base}"                                  # diffusers folder: the personalized model's base
: "${REFERENCE_MODEL:=$MODEL}"                                       # text-to-image model of the clean references
: "${IP_ADAPTER:=checkpoints/ip-adapter-plus_sdxl_vit-h.safetensors}" # the model PatchDPO improves (release layout)
: "${IMAGE_ENCODER:=checkpoints/clip-vit-h-14}"
: "${PATCH_ENCODER:=default}"                                        # score-patches --encoder
: "${LATENT_GRID:=128}"                                              # SDXL: 1024 px / 8
: "${PROMPT_FLAGS:=--subjects 5000}"                                  # synthesize-prompts
: "${REFERENCE_FLAGS:=}"                                              # generate-images --mode reference
: "${GENERATE_FLAGS:=--per-reference 1}"                              # generate-images --mode personalized
: "${SCORE_FLAGS:=}"                                                  # score-patches
: "${SHARDS:=8}"                                                     # array tasks of generation and scoring
: "${EPOCHS:=1}"
# The authors' step: 8 GPUs x 4 pairs. --batch is one rank's micro-batch; the step takes
# --grad-accum micro-batches, split over the ranks (the rank count must divide it).
: "${DPO_FLAGS:=--objective patch-dpo --batch 4 --grad-accum 8 --lr 3e-5 --save-every 200}"
: "${DEVICE:=cuda}"
export RUN MODEL REFERENCE_MODEL IP_ADAPTER IMAGE_ENCODER PATCH_ENCODER LATENT_GRID PROMPT_FLAGS REFERENCE_FLAGS GENERATE_FLAGS SCORE_FLAGS SHARDS EPOCHS DPO_FLAGS DEVICE
mkdir -p logs
