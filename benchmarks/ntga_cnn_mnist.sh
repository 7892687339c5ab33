#!/usr/bin/env bash
# Issue 11's MNIST figures for NTGA-CNN on a 2-core CPU (BUILD_NOTES.md,
# "NTGA generation" and "Poison evaluation"), both cores:
#
#   bash benchmarks/ntga_cnn_mnist.sh [MNIST_NPZ] [WORKDIR]
#
#   1. NTGA-CNN, official one-step mode, 50,000 images, 2,000-image
#      validation target
#   2. damage: FNN-ReLU and FNN targets, clean vs poisoned, 10 epochs
#   3. damage: CNN target, clean vs poisoned, 5 epochs
#   4. the best defence of issue 5 (bitdepth:1), CNN target, 5 epochs
# PGD=1 adds the 10-step PGD generation with the same target (hours here);
# MODES="pgd official" sets the modes and their order.
# DEFEND=0 leaves out step 4.
# A set already at $WD/mnist_ntga_cnn_<mode>_v<VAL>.npz is evaluated as it is
# (step 1 skipped): e.g. one made on a GPU by benchmarks/ntga_cnn_gpu.sh and
# unpacked with benchmarks/poison_pack.py (VAL=10000 PGD=1 for that one).
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/mnist/mnist.npz}}
: "${MNIST:?give the MNIST npz as the first argument or set MODELSTEAL_DATA (a folder holding mnist/mnist.npz)}"
WD=${2:-./bench_runs}
VAL=${VAL:-2000}
modes=(official)
[[ "${PGD:-0}" == 1 ]] && modes+=(pgd)
[[ -n "${MODES:-}" ]] && read -ra modes <<< "$MODES"  # e.g. MODES="pgd official"
for mode in "${modes[@]}"; do
  npz="$WD/mnist_ntga_cnn_${mode}_v${VAL}.npz"
  extra=()
  [[ $mode == official ]] && extra=(--official)
  [[ -f "$npz" ]] || python -m pipelines.ntga --dataset="$MNIST" \
      --surrogate=cnn "${extra[@]}" --val_size="$VAL" --train_size=50000 \
      --workdir="$WD" --export_npz="$npz"
  python -m pipelines.poison_eval --poisoned="$npz" --dataset="$MNIST" \
      --targets=ntga_fnn_relu,ntga_fnn --target_epochs=10 --workdir="$WD"
  python -m pipelines.poison_eval --poisoned="$npz" --dataset="$MNIST" \
      --targets=ntga_cnn --target_epochs=5 --workdir="$WD"
  [[ "${DEFEND:-1}" == 1 ]] || continue
  python -m pipelines.defend --poisoned="$npz" --defense=bitdepth:1 \
      --target=cnn --epochs=5 --train_size=0 --workdir="$WD/defend_mnist"
done
