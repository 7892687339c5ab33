#!/usr/bin/env bash
# Issue 11: NTGA gradient time alone and with one of the two cores taken by
# another process, per thread setting:
#   xla            XLA's defaults (one device, Eigen pool), BLAS's own threads
#   configured     modelsteal.ntga.cpu.configure(), BLAS's own threads
#                  (the FNN default until session 13, which also had
#                  glibc's malloc arenas: ntga_timing.py now caps them)
#   xla+blas1      XLA's defaults, one BLAS thread (cpu.limit_blas_threads)
#   configured+blas1   both (pipelines.ntga's FNN default since session 13)
#
#   bash benchmarks/ntga_contention.sh            (FNN, 10,000 validation images)
#   SUR=cnn NVAL=1000 bash benchmarks/ntga_contention.sh
#   SETTINGS="configured configured+blas1" bash benchmarks/ntga_contention.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUR=${SUR:-fnn}
NVAL=${NVAL:-10000}
OUT=${OUT:-bench_runs/ntga_contention.csv}
SETTINGS=${SETTINGS:-xla configured xla+blas1 configured+blas1}
flags_of() {
  case "$1" in
    xla) echo --noconfigure_cpu --blas_threads=0 ;;
    configured) echo --configure_cpu --blas_threads=0 ;;
    xla+blas1) echo --noconfigure_cpu --blas_threads=1 ;;
    configured+blas1) echo --configure_cpu --blas_threads=1 ;;
    *) echo "unknown setting $1" >&2; exit 2 ;;
  esac
}
LOG=${LOG:-bench_runs/ntga_contention.log}  # every run's whole output
mkdir -p "$(dirname "$OUT")" "$(dirname "$LOG")"
B=
# the busy loop or the neighbour must not outlive a failed or stopped run
trap 'if [[ -n "$B" ]]; then kill "$B" 2>/dev/null || true; fi' EXIT
run() {  # label, setting
  printf '%-40s ' "$1, $2"
  # shellcheck disable=SC2046
  python benchmarks/ntga_timing.py --surrogate="$SUR" --n_val="$NVAL" \
      --methods=ours --repeats=3 --out="$OUT" $(flags_of "$2") 2>&1 |
      tee -a "$LOG" | grep "per gradient" | sed 's/.*then *//' ||
      echo "FAILED (see $LOG)"
}
busy() { taskset -c 0 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!; }
# Another XLA process with its default thread pool (one thread per core) as
# the neighbour: what a second experiment or a test run on the machine does.
neighbour() {
  python -c "import jax.numpy as jnp
x = jnp.ones((1500, 1500))
while True: (x @ x).block_until_ready()" >/dev/null 2>&1 & echo $!
}
for s in $SETTINGS; do flags_of "$s" >/dev/null; done  # fail early
if [[ "${SKIP_ALONE:-0}" != 1 ]]; then
  for s in $SETTINGS; do run alone "$s"; done
fi
for s in $SETTINGS; do B=$(busy); run "core 0 busy" "$s"; kill "$B"; B=; done
for s in $SETTINGS; do
  B=$(neighbour); sleep 5; run "XLA neighbour" "$s"; kill "$B"; B=
done
