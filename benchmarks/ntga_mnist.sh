#!/usr/bin/env bash
# NTGA-FNN figures on full MNIST (BUILD_NOTES.md, "NTGA generation" and
# "Poison evaluation"). Run from the repository root.
#
#   bash benchmarks/ntga_mnist.sh [MNIST_NPZ] [WORKDIR]
#
# Runs on one core of a 2-core CPU (taskset -c 1) so that a shared machine's
# other core stays free; drop the taskset to use both. Steps (run time:
# benchmarks/README.md):
#   1. gradient timing, FNN surrogate, 512 x 10,000 (and the CNN with
#      neural-tangents' kernel, 512 x 1,000)
#   2. NTGA-FNN generation, 50,000 images, 10 PGD steps
#   3. damage: FNN and FNN-ReLU targets, clean vs poisoned, 10 epochs
#   4. damage: CNN target, clean vs poisoned, 5 epochs
#   5. NTGA-CNN on a reduced problem (2 blocks of 512, 1,000 val)
# The CNN surrogate at full scale: benchmarks/ntga_cnn_cpu_full.sh (CPU) or
# benchmarks/ntga_cnn_gpu.sh (GPU).
set -euo pipefail
MNIST=${1:-${MODELSTEAL_DATA:+$MODELSTEAL_DATA/mnist/mnist.npz}}
: "${MNIST:?give the MNIST npz as the first argument or set MODELSTEAL_DATA (a folder holding mnist/mnist.npz)}"
WD=${2:-./bench_runs}
export MODELSTEAL_OFFLINE=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
PIN="taskset -c 1"

$PIN python benchmarks/ntga_timing.py --surrogate=fnn --n_val=10000 \
    --out="$WD/ntga_timing.csv"
$PIN python benchmarks/ntga_timing.py --surrogate=cnn --n_val=1000 \
    --methods=nt+blocked --repeats=1 --out="$WD/ntga_timing.csv"

$PIN python -m pipelines.ntga --dataset="$MNIST" --surrogate=fnn \
    --workdir="$WD" --export_npz="$WD/mnist_ntga_fnn.npz" | tee "$WD/ntga_fnn.log"
ART=$(ls -d "$WD"/generate_ntga/*/poisoned | head -1)

$PIN python -m pipelines.poison_eval --poisoned="$WD/mnist_ntga_fnn.npz" \
    --dataset="$MNIST" --targets=ntga_fnn_relu,ntga_fnn --target_epochs=10 \
    --workdir="$WD" | tee "$WD/poison_eval_fnn_targets.log"
$PIN python -m pipelines.poison_eval --poisoned="$WD/mnist_ntga_fnn.npz" \
    --dataset="$MNIST" --targets=ntga_cnn --target_epochs=5 \
    --workdir="$WD" | tee "$WD/poison_eval_cnn_target.log"

$PIN python -m pipelines.ntga --dataset="$MNIST" --surrogate=cnn \
    --train_size=1024 --val_size=1000 --workdir="$WD" \
    --export_npz="$WD/mnist_ntga_cnn_reduced.npz" | tee "$WD/ntga_cnn_reduced.log"
echo "artifacts under $WD ($ART)"
