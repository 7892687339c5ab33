#!/usr/bin/env bash
# Issue 9's cost comparison (not run in CI): wall time of an active run to
# random's 10,000-query fidelity, beside the random 10,000-query run, on the
# same machine, one after the other.
#
#   bash benchmarks/active_walltime.sh [path/to/mnist.npz] [seed ...]
#
# Per seed: (1) the victim mnist_cnn is trained or reused in $VICTIM_WD (not
# timed); (2) `pipelines.steal --budget=10000` (random, all at once) and
# (3) `pipelines.steal --query_strategy=$STRATEGY --round_schedule=S
# --round_epochs=$ROUND_EPOCHS` for each S in $SCHEDULES (space-separated),
# each in a fresh workdir (no cached answer or
# student: every query is paid, every student trained) against the victim's
# SavedModel. Prints one table: wall seconds of the whole command and the
# final student's fidelity; the per-step times are in each run's steps.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/mnist/mnist.npz}}
: "${DATA:?give the MNIST npz as the first argument or set MODELSTEAL_DATA (a folder holding mnist/mnist.npz)}"
shift || true
SEEDS=${*:-0}
WD=${WD:-bench_runs/active_walltime}
VICTIM_WD=${VICTIM_WD:-$WD/victim}
STRATEGY=${STRATEGY:-margin}
SCHEDULES=${SCHEDULES:-500,1000 1000,1500}
ROUND_EPOCHS=${ROUND_EPOCHS:-0.25}
STUDENT=${STUDENT:-mnist_cnn}
read -r -a EXTRA <<< "${EXTRA:-}"  # e.g. EXTRA=--smoke: a quick check
# Flags of the active runs only, e.g. ACTIVE_EXTRA=--student_recipe=batch_size=128
read -r -a ACTIVE_EXTRA <<< "${ACTIVE_EXTRA:-}"
TAG=${TAG:-}  # a suffix of the active runs' names in walltime.csv
SUMMARY=$WD/walltime.csv
mkdir -p "$WD"
[ -f "$SUMMARY" ] || echo "seed,run,wall_s,queries,fidelity,accuracy,log" > "$SUMMARY"
for seed in $SEEDS; do
  python -m pipelines.steal --victim=mnist_cnn --dataset="$DATA" \
      --workdir="$VICTIM_WD" --budget=100 --students=mnist_mlp --seed="$seed" \
      "${EXTRA[@]}" > "$WD/victim_s$seed.log"
  victim=$(python - "$VICTIM_WD" "$seed" <<'EOF'
import glob, sys
import pandas as pd
import os
runs = sorted(glob.glob(f'{sys.argv[1]}/steal/*/results.csv'), key=os.path.getmtime)
df = pd.read_csv(runs[-1])
print(df[df['role'] == 'victim']['saved_model'].iloc[0])
EOF
)
  stamp=$(date +%Y%m%d-%H%M%S)
  for run in random $SCHEDULES; do
    args=(--budget=10000)
    [ "$run" != random ] && args=(--query_strategy="$STRATEGY"
        --round_schedule="$run" --round_epochs="$ROUND_EPOCHS")
    [ "$run" != random ] && args+=("${ACTIVE_EXTRA[@]}")
    [ "$run" != random ] && run="$STRATEGY:${run//,/_}$TAG"
    dir=$WD/$stamp-s$seed-${run//:/-}
    echo "== seed $seed: $run (${args[*]})"
    start=$(date +%s.%N)
    python -m pipelines.steal --victim_path="$victim" --dataset="$DATA" \
        --workdir="$dir" --students="$STUDENT" --seed="$seed" "${args[@]}" \
        "${EXTRA[@]}" \
        > "$dir.log" 2>&1
    wall=$(python -c "print(round($(date +%s.%N) - $start, 1))")
    python - "$dir" "$seed" "$run" "$wall" "$dir.log" >> "$SUMMARY" <<'EOF'
import glob, sys
import pandas as pd
d, seed, run, wall, log = sys.argv[1:]
csv, = (glob.glob(f'{d}/steal_rounds/*/rounds.csv') or
        glob.glob(f'{d}/steal/*/results.csv'))
df = pd.read_csv(csv)
last = df[df['role'] == 'student'].iloc[-1]
print(f"{seed},{run},{wall},{last['budget']},{last['fidelity']:.4f},"
      f"{last['accuracy']:.4f},{log}")
EOF
    tail -1 "$SUMMARY"
  done
done
python -c "import pandas as pd; print(pd.read_csv('$SUMMARY').to_string(index=False))"
