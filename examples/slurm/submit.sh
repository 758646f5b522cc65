#!/bin/bash
# Submits the whole method as a chain of Slurm jobs, each starting when the one before succeeded:
#   prompts -> references (array) -> merge -> generations (array) -> merge [+ SSL patch encoder]
#   -> scores (array) -> merge
#   -> EPOCHS PatchDPO epochs (srun, data-parallel)
# Run from the repository root: examples/slurm/submit.sh (settings: examples/slurm/config.sh).
# Every job resumes, so after a failure fix the cause and submit again: finished work is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
source examples/slurm/config.sh
sub() { sbatch --parsable "$@"; }
after() { echo "--dependency=afterok:$1"; }
array="--array=0-$((SHARDS - 1))"

j=$(sub --job-name=patchdpo-prompts --time=00:30:00 --output=logs/%x-%j.out --wrap "bun scripts/synthesize-prompts.ts --run $RUN $PROMPT_FLAGS")
j=$(sub "$(after "$j")" "$array" examples/slurm/generate.sbatch reference)
refs=$(sub "$(after "$j")" examples/slurm/merge.sbatch generate-images --mode reference)
j=$(sub "$(after "$refs")" "$array" examples/slurm/generate.sbatch personalized)
j=$(sub "$(after "$j")" examples/slurm/merge.sbatch generate-images --mode personalized)
# Optional: the self-supervised patch encoder on the references, data-parallel like dpo-epoch
# (SSL_FLAGS="--encoder checkpoints/dinov2-small --steps 2000 --batch 8 --grad-accum 8"); the
# scores then use it. Without SSL_FLAGS they use PATCH_ENCODER (the shipped one by default).
if [ -n "${SSL_FLAGS:-}" ]; then
  ssl=$(sub "$(after "$refs")" --job-name=patchdpo-ssl --nodes=1 --ntasks-per-node=8 --gpus-per-task=1 --cpus-per-task=8 --time=04:00:00 --output=logs/%x-%j.out \
    --wrap "srun --mpi=pmix bun scripts/finetune-encoder.ts --run $RUN --out $RUN/encoder-ssl --resume --device $DEVICE $SSL_FLAGS")
  j="$j:$ssl"
  export PATCH_ENCODER=$RUN/encoder-ssl
fi
j=$(sub "$(after "$j")" "$array" examples/slurm/score.sbatch)
j=$(sub "$(after "$j")" examples/slurm/merge.sbatch score-patches)
for e in $(seq 1 "$EPOCHS"); do
  j=$(sub "$(after "$j")" examples/slurm/dpo-epoch.sbatch "$e")
done
echo "submitted; the last job is $j (squeue -u ${USER:-$(id -un)}; logs in logs/)"
