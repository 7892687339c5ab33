#!/usr/bin/env bash
# Issue 2's figures on full MNIST (not run in CI; BUILD_NOTES.md, "Stealing").
#
#   bash benchmarks/steal_mnist.sh [path/to/mnist.npz]
#
# 1. trains and caches the victim (a 100-query run), 2. times the default run
# with the victim cached (10,000 label-only queries, two students), 3. sweeps
# budgets 100,1000,10000 (label-only) and 4. with probability answers.
# Each run prints its table; per-step times are in <run dir>/steps.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/mnist/mnist.npz}}
: "${DATA:?give the MNIST npz as the first argument or set MODELSTEAL_DATA (a folder holding mnist/mnist.npz)}"
WD=${WD:-bench_runs/steal_mnist}
run() { python -m pipelines.steal --victim=mnist_cnn --dataset="$DATA" --workdir="$WD" "$@"; }
echo "== 1. victim (trained once, cached)"; run --budget=100
echo "== 2. default run, victim cached"
start=$(date +%s.%N); run; end=$(date +%s.%N)
python -c "print(f'default run wall time: {$end - $start:.1f} s')"
echo "== 3. budget sweep, label-only"; run --budgets=100,1000,10000
echo "== 4. budget sweep, probabilities"; run --budgets=100,1000,10000 --output=probs
