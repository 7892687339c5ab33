#!/usr/bin/env bash
# The CIFAR-10 stealing table (BUILD_NOTES.md, "Stealing on CIFAR-10"): both
# zoo victims, label-only and probability answers, budgets 1,000 to 22,500
# (the whole attacker pool), three students, per seed. Not run in CI; hours
# on a 2-core CPU (the section has the measured parts).
#
#   bash benchmarks/cifar10_steal.sh [path/to/cifar10.npz] [seed ...]
#
# Without a path it uses $MODELSTEAL_DATA/cifar10/cifar10_jpeg_q75.npz; a
# figure made from that JPEG copy is labelled "CIFAR-10 (JPEG q75 copy)"
# (the results' `data` column says so). Every step is cached: rerunning the
# script after an interruption resumes where it stopped and pays for no
# query twice. VICTIMS, OUTPUTS, BUDGETS, STUDENTS and WD override the
# defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/cifar10/cifar10_jpeg_q75.npz}}
: "${DATA:?give the CIFAR-10 npz as the first argument or set MODELSTEAL_DATA (a folder holding cifar10/cifar10_jpeg_q75.npz)}"
shift || true
SEEDS=${*:-0 1 2}
WD=${WD:-bench_runs/cifar}
VICTIMS=${VICTIMS:-cifar10_cnn cifar10_resnet20}
OUTPUTS=${OUTPUTS:-label probs}
BUDGETS=${BUDGETS:-1000,5000,10000,22500}
STUDENTS=${STUDENTS:-cifar10_cnn,resnet20,lenet5}
for seed in $SEEDS; do
  for victim in $VICTIMS; do
    for output in $OUTPUTS; do
      echo "== seed $seed, victim $victim, $output answers"
      python -m pipelines.steal --victim="$victim" --dataset="$DATA" \
        --output="$output" --budgets="$BUDGETS" --students="$STUDENTS" \
        --seed="$seed" --workdir="$WD"
    done
  done
done
