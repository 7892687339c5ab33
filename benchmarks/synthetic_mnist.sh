#!/usr/bin/env bash
# Issue 10's figures on full MNIST (not run in CI; BUILD_NOTES.md,
# "Generated queries and synthetic data").
#
#   bash benchmarks/synthetic_mnist.sh [path/to/mnist.npz]
#
# 1. trains (once, cached) the conditional VAE on the attacker's pool and
#    prints its training time and sampling rate;
# 2. trains mnist_cnn, mnist_mlp, lenet5 on 1,000 generated images per class
#    and on 1,000 real ones per class; real-test accuracy table;
# 3. steals mnist_cnn label-only with 10,000 generated queries, then with
#    10,000 real attacker-split queries (the victim is trained once, cached).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/mnist/mnist.npz}}
: "${DATA:?give the MNIST npz as the first argument or set MODELSTEAL_DATA (a folder holding mnist/mnist.npz)}"
WD=${WD:-bench_runs/synthetic}
echo "== 1. generator"
python -m pipelines.train_generator --dataset="$DATA" --workdir="$WD"
echo "== 2. classifiers on generated vs real images"
python -m pipelines.synthetic --generator=cvae --dataset="$DATA" \
  --per_class=1000 --classifiers=mnist_cnn,mnist_mlp,lenet5 --workdir="$WD"
echo "== 3. stealing with generated queries, then with real ones"
python -m pipelines.steal --victim=mnist_cnn --dataset="$DATA" \
  --query_data=generator:cvae --budget=10000 --students=mnist_cnn --workdir="$WD"
python -m pipelines.steal --victim=mnist_cnn --dataset="$DATA" \
  --budget=10000 --students=mnist_cnn --workdir="$WD"
