#!/usr/bin/env bash
# Issue 8's figures on full MNIST (not run in CI): the UQ-student study of
# Pape et al. (ESANN 2023) with label-only answers from victim mnist_cnn.
#
#   bash benchmarks/uq_mnist.sh [path/to/mnist.npz] [seed ...]
#
# For each seed (default 0): the five UQ methods plus a heterogeneous and a
# bootstrapped ensemble, and a plain student, at 1,000 and 10,000 queries.
# Victim and answers are cached in $WD, so a second seed pays no query for
# the victim's training and a rerun reuses every finished student. Each run
# prints its table; results.csv, diversity.csv, diversity_b*.png and
# steps.csv (time per step) are in $WD/uq/<run>/.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/mnist/mnist.npz}}
: "${DATA:?give the MNIST npz as the first argument or set MODELSTEAL_DATA (a folder holding mnist/mnist.npz)}"
shift || true
SEEDS=${*:-0}
WD=${WD:-bench_runs/uq_mnist}
for seed in $SEEDS; do
  echo "== seed $seed"
  start=$(date +%s)
  python -m pipelines.uq --victim=mnist_cnn --dataset="$DATA" --workdir="$WD" \
      --methods=all --budgets=1000,10000 --seed="$seed"
  echo "seed $seed wall time: $(( $(date +%s) - start )) s"
done
