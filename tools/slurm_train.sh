#!/usr/bin/env bash
# Multi-GPU / multi-node training on SLURM: one task per GPU; jax.distributed finds the coordinator
# from SLURM's variables (first node of the allocation), so nothing else needs setting.
#
#   sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-task=1 --cpus-per-task=12 tools/slurm_train.sh \
#          configs/cortical.py:bf16 /path/to/store runs/cortical
#
# The global batch (data.batch_size) is split over all processes; it must be divisible by their number.
set -euo pipefail
CONFIG=${1:?config, e.g. configs/cortical.py:bf16}
STORE=${2:?FeatureStore directory}
WORKDIR=${3:?work directory (shared filesystem: checkpoints are written by every process)}
shift 3
srun --kill-on-bad-exit=1 nforge train --config "$CONFIG" --workdir "$WORKDIR" \
     --config.data.store="$STORE" "$@"
