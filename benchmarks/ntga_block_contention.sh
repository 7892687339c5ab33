#!/usr/bin/env bash
# Issue 11, as a user meets it: seconds per NTGA block of `python -m
# pipelines.ntga` (10 PGD steps, fresh workdir each run) alone and beside
# another XLA process, with the pipeline's BLAS limit (its default) and
# without it (OPENBLAS_NUM_THREADS set to the number of cores: a user's
# setting wins, so this is the pipeline as it was before session 13).
#
#   bash benchmarks/ntga_block_contention.sh [MNIST_NPZ]
#   SUR=cnn VAL=1000 bash benchmarks/ntga_block_contention.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/mnist/mnist.npz}}
: "${MNIST:?give the MNIST npz as the first argument or set MODELSTEAL_DATA (a folder holding mnist/mnist.npz)}"
SUR=${SUR:-fnn}
VAL=${VAL:-10000}
TRAIN=${TRAIN:-2048}  # 4 blocks of 512
WD=${WD:-bench_runs/ntga_block_contention}
mkdir -p "$WD"
B=
trap 'if [[ -n "$B" ]]; then kill "$B" 2>/dev/null || true; fi' EXIT
neighbour() {
  python -c "import jax.numpy as jnp
x = jnp.ones((1500, 1500))
while True: (x @ x).block_until_ready()" >/dev/null 2>&1 & echo $!
}
run() {  # label, blas (limit|cores)
  local dir
  dir="$WD/$(date +%Y%m%d-%H%M%S)-$1-$2"
  local env=()
  [[ $2 == cores ]] && env=(OPENBLAS_NUM_THREADS="$(nproc)")
  env "${env[@]}" python -m pipelines.ntga --dataset="$MNIST" \
      --surrogate="$SUR" --val_size="$VAL" --train_size="$TRAIN" \
      --workdir="$dir" > "$dir.log" 2>&1 || { echo "$1 $2: FAILED ($dir.log)"; return; }
  printf '%-10s blas %-6s s per block: %s\n' "$1" "$2" "$(
      grep -oE '^\[ntga\] block [0-9]+/[0-9]+ .*, [0-9.]+s' "$dir.log" |
      grep -oE '[0-9.]+s$' | tr '\n' ' ')"
}
for blas in cores limit; do run alone "$blas"; done
for blas in cores limit; do
  B=$(neighbour); sleep 5; run neighbour "$blas"; kill "$B"; B=
done
