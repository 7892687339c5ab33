#!/usr/bin/env bash
# Issue 5's table: clean-test accuracy of the NTGA CNN target trained on
# NTGA-poisoned MNIST under each defence, and on the same rows of clean MNIST.
#
#   bash benchmarks/defend_mnist.sh NTGA_FNN.npz [NTGA_CNN.npz]
#
# The poisoned sets are the exports of `python -m pipelines.ntga
# --export_npz=...`. TRAIN_SIZE (default 10000) and EPOCHS (default 5) keep the
# whole table within about an hour on a 2-core CPU (the CNN target costs about
# 50 s per epoch of 50,000 images there); TRAIN_SIZE=0 uses every image.
set -euo pipefail
cd "$(dirname "$0")/.."
CLEAN=${CLEAN:-../shared/data/mnist/mnist.npz}
WD=${WD:-bench_runs/defend_mnist}
DEFENSES=${DEFENSES:-all}
for poisoned in "$@"; do
  echo "== $poisoned"
  python -m pipelines.defend --poisoned="$poisoned" --clean="$CLEAN" \
      --defense="$DEFENSES" --target=cnn --epochs="${EPOCHS:-5}" \
      --train_size="${TRAIN_SIZE:-10000}" --workdir="$WD"
done
