#!/usr/bin/env bash
# Issue 11: NTGA gradient time alone and with one of the two cores taken by
# another process, with XLA's default threading and with
# modelsteal.ntga.cpu.configure() (one single-threaded device per core).
#
#   bash benchmarks/ntga_contention.sh            (FNN, 10,000 validation images)
#   SUR=cnn NVAL=1000 bash benchmarks/ntga_contention.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUR=${SUR:-fnn}
NVAL=${NVAL:-10000}
OUT=${OUT:-bench_runs/ntga_contention.csv}
run() {  # label, extra flags
  echo "== $1"
  python benchmarks/ntga_timing.py --surrogate="$SUR" --n_val="$NVAL" \
      --methods=ours --repeats=3 --out="$OUT" "${@:2}" 2>&1 | grep "per gradient"
}
busy() { taskset -c 0 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!; }
if [[ "${SKIP_ALONE:-0}" != 1 ]]; then
  run "xla default, alone" --noconfigure_cpu
  run "configured, alone"
fi
B=$(busy); run "xla default, core 0 busy" --noconfigure_cpu; kill "$B"
B=$(busy); run "configured, core 0 busy"; kill "$B"
# Another XLA process with its default thread pool (one thread per core) as
# the neighbour: what a second experiment or a test run on the machine does.
neighbour() {
  python -c "import jax.numpy as jnp
x = jnp.ones((1500, 1500))
while True: (x @ x).block_until_ready()" >/dev/null 2>&1 & echo $!
}
B=$(neighbour); sleep 5; run "xla default, XLA neighbour" --noconfigure_cpu; kill "$B"
B=$(neighbour); sleep 5; run "configured, XLA neighbour"; kill "$B"
