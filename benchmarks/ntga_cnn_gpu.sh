#!/usr/bin/env bash
# Full-MNIST NTGA-CNN on one GPU: 10-step PGD and the official one-step mode,
# the default 10,000-image validation target, each packed losslessly for the
# trip back (BUILD_NOTES.md, "NTGA generation"):
#
#   bash benchmarks/ntga_cnn_gpu.sh MNIST_NPZ OUT_DIR
#   VAL=2000 MODES=pgd bash benchmarks/ntga_cnn_gpu.sh MNIST_NPZ OUT_DIR
#
# VAL (default 10000) is the validation target; the 50,000 poisoned rows are
# the same for every VAL (--train_size=50000). Files: OUT_DIR/<mode>_v<VAL>_*.npz.
#
# Needs JAX with a GPU backend, numpy, absl-py, matplotlib; no TensorFlow.
# Then, on the CPU machine:
#   python benchmarks/poison_pack.py unpack OUT_DIR/pgd_v10000 --dataset=MNIST_NPZ --out=SET.npz
#   python -m pipelines.poison_eval --poisoned=SET.npz --dataset=MNIST_NPZ
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${1:?MNIST npz}
OUT_DIR=${2:?output folder}
WD=${WD:-/tmp/ntga_gpu}
MODES=${MODES:-pgd official}
VAL=${VAL:-10000}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR" "$WD/meta"
nvidia-smi -L || true
python3 -c 'import jax; print("jax", jax.__version__, jax.devices())'
for mode in $MODES; do
  extra=()
  [[ $mode == official ]] && extra=(--official)
  name=${mode}_v$VAL
  python3 -m pipelines.ntga --dataset="$MNIST" --surrogate=cnn "${extra[@]}" \
      --val_size="$VAL" --train_size=50000 --workdir="$WD" \
      --export_npz="$WD/$name.npz"
  python3 benchmarks/poison_pack.py pack "$WD/$name.npz" "$OUT_DIR/$name" --parts=2
  run=$(dirname "$(ls -t "$WD"/generate_ntga/*/execution.json | head -1)")
  mkdir -p "$WD/meta/$name"
  cp "$run/execution.json" "$run/poisoned/blocks.csv" "$run/poisoned/examples.png" "$WD/meta/$name/"
  tar -C "$WD/meta" -cf "$OUT_DIR/meta.tar" .
done
