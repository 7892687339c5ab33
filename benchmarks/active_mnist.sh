#!/usr/bin/env bash
# Issue 9's figures on full MNIST (not run in CI): round-based stealing of
# victim mnist_cnn with label-only answers, one line per query strategy.
#
#   bash benchmarks/active_mnist.sh [path/to/mnist.npz] [seed ...]
#
# BUDGET (default 3000) is spent in ROUNDS (default 6) rounds: a random seed
# set of BUDGET/ROUNDS, then equal rounds picked by each strategy with the
# student of the round before. STRATEGIES defaults to
# random,margin,entropy,kcenter. The victim and every answer are cached in
# $WD (shared with benchmarks/steal_mnist.sh's layout), so strategies and
# seeds pay only for new queries. Each run prints its per-round table and
# writes rounds.csv / rounds.png in $WD/steal_rounds/<run>/. A knockoff pool:
# QUERY_DATA=$MODELSTEAL_DATA/fashion_mnist bash benchmarks/active_mnist.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/mnist/mnist.npz}}
: "${DATA:?give the MNIST npz as the first argument or set MODELSTEAL_DATA (a folder holding mnist/mnist.npz)}"
shift || true
SEEDS=${*:-0}
WD=${WD:-bench_runs/active_mnist}
BUDGET=${BUDGET:-3000}
ROUNDS=${ROUNDS:-6}
STRATEGIES=${STRATEGIES:-random,margin,entropy,kcenter}
EXTRA=()
# SCHEDULE=500,1000,2000: cumulative queries per round (--round_schedule),
# instead of BUDGET / ROUNDS.
ROUNDING=(--budget="$BUDGET" --rounds="$ROUNDS")
[ -n "${SCHEDULE:-}" ] && ROUNDING=(--round_schedule="$SCHEDULE")
[ -n "${QUERY_DATA:-}" ] && EXTRA+=(--query_data="$QUERY_DATA")
[ -n "${STUDENTS:-}" ] && EXTRA+=(--students="$STUDENTS")
for seed in $SEEDS; do
  echo "== seed $seed"
  start=$(date +%s)
  python -m pipelines.steal --victim=mnist_cnn --dataset="$DATA" \
      --workdir="$WD" "${ROUNDING[@]}" \
      --query_strategy="$STRATEGIES" --seed="$seed" "${EXTRA[@]}"
  echo "seed $seed wall time: $(( $(date +%s) - start )) s"
done
