#!/usr/bin/env bash
# NTGA-CNN: the official code's one-step procedure against 10-step PGD on
# the same MNIST subset and validation target, damage on the CNN target
# (BUILD_NOTES.md, "Poison evaluation"). Isolates the one-step weakness at a
# size a 2-core CPU finishes in one sitting (run time: benchmarks/README.md):
#
#   bash benchmarks/ntga_cnn_pgd_vs_official.sh [MNIST_NPZ] [WORKDIR]
#
# TRAIN (default 10000) images are poisoned against a VAL (default 1000)
# image target; poison_eval trains the CNN target on those rows, clean and
# poisoned, and scores the 10,000 clean test images.
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/mnist/mnist.npz}}
: "${MNIST:?give the MNIST npz as the first argument or set MODELSTEAL_DATA (a folder holding mnist/mnist.npz)}"
WD=${2:-./bench_runs}
TRAIN=${TRAIN:-10000}
VAL=${VAL:-1000}
for mode in official pgd; do
  npz="$WD/mnist_ntga_cnn_${mode}_t${TRAIN}_v${VAL}.npz"
  extra=()
  [[ $mode == official ]] && extra=(--official)
  python -m pipelines.ntga --dataset="$MNIST" --surrogate=cnn "${extra[@]}" \
      --val_size="$VAL" --train_size="$TRAIN" --workdir="$WD" \
      --export_npz="$npz"
  python -m pipelines.poison_eval --poisoned="$npz" --dataset="$MNIST" \
      --targets=ntga_cnn --target_epochs=5 --workdir="$WD"
done
