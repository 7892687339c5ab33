#!/usr/bin/env bash
# Data-free stealing (BUILD_NOTES.md, "Data-free stealing"): the mnist_cnn
# victim with probability answers (2,000,000 queries) and label-only answers
# (5,000,000), and fashion_mnist_cnn with probabilities (5,000,000). Not run
# in CI; each run is tens of minutes to hours on a 2-core CPU, checkpointed
# (rerun the script to resume: nothing is paid twice).
#
#   bash benchmarks/datafree_mnist.sh MNIST_NPZ [FASHION_NPZ] [seed ...]
#
# RUNS (default "probs label fashion"), WD and DATAFREE (extra --datafree
# settings, e.g. directions=10,loss=kl) override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${1:?give the MNIST npz}
FASHION=${2:-}
shift; shift || true
SEEDS=${*:-0}
WD=${WD:-bench_runs}
RUNS=${RUNS:-probs label fashion}
DF=${DATAFREE:+--datafree=$DATAFREE}
for seed in $SEEDS; do
  for r in $RUNS; do
    case $r in
      probs) args=(--victim=mnist_cnn --dataset="$MNIST" --output=probs --budget=2000000) ;;
      label) args=(--victim=mnist_cnn --dataset="$MNIST" --output=label --budget=5000000) ;;
      fashion) [ -n "$FASHION" ] || { echo "no Fashion-MNIST npz: skipped"; continue; }
               args=(--victim=fashion_mnist_cnn --dataset="$FASHION" --output=probs --budget=5000000) ;;
    esac
    echo "== $r, seed $seed"
    time python -m pipelines.steal "${args[@]}" --query_data=datafree \
      --students=mnist_cnn --workdir="$WD" --seed="$seed" $DF
  done
done
