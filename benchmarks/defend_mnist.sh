#!/usr/bin/env bash
# Issue 5's table: clean-test accuracy of the NTGA CNN target trained on
# NTGA-poisoned MNIST under each defence, and on the same rows of clean MNIST.
#
#   bash benchmarks/defend_mnist.sh NTGA_FNN.npz [NTGA_CNN.npz]
#
# The poisoned sets are the exports of `python -m pipelines.ntga
# --export_npz=...`; CLEAN (default $MODELSTEAL_DATA/mnist/mnist.npz) is the
# clean MNIST npz. TRAIN_SIZE (default 10000) and EPOCHS (default 5) keep the
# whole table affordable on a CPU (run time: benchmarks/README.md);
# TRAIN_SIZE=0 uses every image.
set -euo pipefail
cd "$(dirname "$0")/.."
CLEAN=${CLEAN:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/mnist/mnist.npz}}
: "${CLEAN:?set CLEAN to the clean MNIST npz, or MODELSTEAL_DATA (a folder holding mnist/mnist.npz)}"
WD=${WD:-bench_runs/defend_mnist}
DEFENSES=${DEFENSES:-all}
for poisoned in "$@"; do
  echo "== $poisoned"
  python -m pipelines.defend --poisoned="$poisoned" --clean="$CLEAN" \
      --defense="$DEFENSES" --target=cnn --epochs="${EPOCHS:-5}" \
      --train_size="${TRAIN_SIZE:-10000}" --workdir="$WD"
done
