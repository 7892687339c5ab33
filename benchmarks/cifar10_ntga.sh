#!/usr/bin/env bash
# Unlearnable CIFAR-10 (BUILD_NOTES.md, "NTGA generation" and "Poison
# evaluation"): NTGA-FNN and NTGA-CNN over the 40,000 training images left
# after the 10,000-image validation target, eps 8/255, then the damage on the
# paper's targets and on the zoo's cifar10_cnn, clean rows included. Not run
# in CI; hours on a 2-core CPU.
#
#   bash benchmarks/cifar10_ntga.sh [path/to/cifar10.npz]
#
# Without a path it uses $MODELSTEAL_DATA/cifar10/cifar10_jpeg_q75.npz; label
# figures from it "CIFAR-10 (JPEG q75 copy)". Every block and every training
# is cached: rerunning after an interruption resumes. SURROGATES, TARGETS,
# EPOCHS, SAMPLE (validation images drawn per CNN gradient) and WD override
# the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/cifar10/cifar10_jpeg_q75.npz}}
: "${DATA:?give the CIFAR-10 npz as the first argument or set MODELSTEAL_DATA (a folder holding cifar10/cifar10_jpeg_q75.npz)}"
WD=${WD:-bench_runs/cifar_ntga}
SURROGATES=${SURROGATES:-fnn cnn}
TARGETS=${TARGETS:-ntga_fnn,ntga_fnn_relu,ntga_cnn,cifar10_cnn}
EPOCHS=${EPOCHS:-10}
SAMPLE=${SAMPLE:-1000}
for s in $SURROGATES; do
  echo "== NTGA-$s"
  extra=()
  [ "$s" = cnn ] && extra=(--val_sample="$SAMPLE")
  time python -m pipelines.ntga --dataset="$DATA" --surrogate="$s" \
    --workdir="$WD" --export_npz="$WD/cifar10_ntga_$s.npz" "${extra[@]}"
done
for s in $SURROGATES; do
  echo "== damage of NTGA-$s"
  time python -m pipelines.poison_eval --poisoned="$WD/cifar10_ntga_$s.npz" \
    --dataset="$DATA" --targets="$TARGETS" --target_epochs="$EPOCHS" \
    --workdir="$WD"
done
