r"""Make a training set unlearnable with Neural Tangent Generalization Attacks.

    python -m pipelines.ntga --dataset=mnist --surrogate=fnn --eps=0.3 --t=64

Poisons every training image except a held-out validation target (default
10,000 images; MNIST: 50,000 poisoned) with block-wise NTGA (Yuan & Wu, ICML
2021, https://arxiv.org/abs/2106.02963): clean-label, within `--eps` in L-inf,
by 10 steps of projected gradient ascent per block of ~512 images against the
closed-form mean of an infinite-width surrogate (`--surrogate=fnn|cnn`,
neural-tangents kernels). Writes an `Examples` artifact under
`<workdir>/generate_ntga/<run>/poisoned/` (`train.npz` poisoned, same order
and labels as the source, with `idx`; `val.npz` the attack's target;
`test.npz` clean; `examples.png`; `blocks.csv`) and `execution.json`, and
prints their paths. `--export_npz=PATH` also writes the set as it is handed to
others: `x_train` (poisoned), `y_train`, `idx_train`, `x_test`, `y_test`.

The CNN surrogate's closed-form kernel runs numba loops on a CPU
(`modelsteal/ntga/cnn_cpu.py`; the first run compiles them, cached
afterwards) and XLA on an accelerator (JAX with CUDA; no TensorFlow needed).
Seconds per block-iteration and whole-set times, CPU and GPU:
BUILD_NOTES.md, "NTGA generation".

Variants:

    --dataset=/path/mnist.npz                 a local Keras-style npz / IDX folder
    --dataset=cifar10                         eps 8/255, t 4096 (fnn and cnn)
    --surrogate=cnn --official --val_size=2000         NTGA-CNN on a CPU
    --kernel_impl=nt                                   neural-tangents' kernels
    --nb_iter=10 --eps_iter=0.075 --rand_init          PGD settings
    --block_size=512 --val_batch_size=500              memory / speed
    --precision=float64                                 slower, for checking
    --smoke                                             a tiny run, seconds

An interrupted run resumes at the first unfinished block when the same
command is run again; a finished run is reused.
"""

from __future__ import annotations

from absl import app
from absl import flags

from pipelines import common

_SURROGATE = flags.DEFINE_enum('surrogate', 'fnn', ['fnn', 'cnn'],
                               'Infinite-width surrogate network.')
_EPS = flags.DEFINE_float('eps', None, 'L-inf budget on [0, 1] pixels; '
                          'default 0.3 (MNIST), 8/255 (CIFAR-10).')
_T = flags.DEFINE_float('t', None, 'GP training time; default 64 (MNIST), '
                        '4096 (CIFAR-10; the paper has 8 for its cnn: '
                        'BUILD_NOTES.md, "NTGA generation").')
_BLOCK_SIZE = flags.DEFINE_integer('block_size', 512, 'Images per block.')
_NB_ITER = flags.DEFINE_integer('nb_iter', 10, 'PGD steps per block.')
_EPS_ITER = flags.DEFINE_float('eps_iter', None,
                               'PGD step; default min(eps, 2.5 * eps / nb_iter).')
_RAND_INIT = flags.DEFINE_bool('rand_init', False, 'PGD random start.')
_VAL_SIZE = flags.DEFINE_integer(
    'val_size', 10000, 'Validation target: training images held out of the '
    'poisoned set whose surrogate loss the attack maximises. Each gradient '
    'costs time in proportion to it: a smaller target fits a time budget but '
    'makes the objective noisier and the poison weaker (recorded as '
    'validation_target; measured trade-off: BUILD_NOTES.md, "NTGA '
    'generation").')
_OFFICIAL = flags.DEFINE_bool(
    'official', False, "The official code's procedure instead of PGD: one "
    'gradient at the clean block, one signed step of the full eps '
    '(--nb_iter, --eps_iter ignored).')
_PRECISION = flags.DEFINE_enum('precision', 'float32', ['float32', 'float64'],
                               'Floating point precision of the attack.')
_KERNEL_IMPL = flags.DEFINE_enum(
    'kernel_impl', 'closed_form', ['closed_form', 'nt'],
    'Surrogate kernel: closed_form (fnn_ntk / cnn_ntk, fast; cnn_ntk runs '
    'numba loops on a CPU and XLA on an accelerator, the run record\'s '
    'cnn_kernel says which) or nt (neural-tangents\' stax, for comparison).')
_VAL_BATCH = flags.DEFINE_integer(
    'val_batch_size', 0, 'Validation images per batch and device (0: '
    'surrogate default: fnn 500; cnn 1000, or 64 where the XLA kernel '
    'runs on a CPU).')
_VAL_SAMPLE = flags.DEFINE_integer(
    'val_sample', 0, 'Validation images drawn afresh from the --val_size '
    'target for each gradient (0: the whole target). A gradient then costs '
    'what a --val_size=N target would, while the steps together still see '
    'the whole target; recorded as val_sample and in validation_target.')
_EXPORT_NPZ = flags.DEFINE_string('export_npz', None,
                                  'Also write the poisoned set to this .npz.')


def config_from_flags():
  from modelsteal.experiments.ntga import NtgaConfig  # pylint: disable=g-import-not-at-top
  return NtgaConfig(
      dataset=common.DATASET.value or 'mnist', data_dir=common.DATA_DIR.value,
      surrogate=_SURROGATE.value, eps=_EPS.value, t=_T.value,
      block_size=_BLOCK_SIZE.value, nb_iter=_NB_ITER.value,
      eps_iter=_EPS_ITER.value, rand_init=_RAND_INIT.value,
      val_size=_VAL_SIZE.value, train_size=common.TRAIN_SIZE.value,
      precision=_PRECISION.value, kernel_impl=_KERNEL_IMPL.value,
      val_batch_size=_VAL_BATCH.value, official=_OFFICIAL.value,
      val_sample=_VAL_SAMPLE.value,
      export_npz=_EXPORT_NPZ.value,
      workdir=common.WORKDIR.value, seed=common.SEED.value,
      smoke=common.SMOKE.value)


# Process-wide settings (XLA's devices, malloc, BLAS threads) are made only
# where this module owns the process (`python -m pipelines.ntga`), not where
# a caller runs `main` in its own process (the tests, a notebook).
_OWNS_PROCESS = False


def tune_process():
  """The generation process's settings (modelsteal/ntga/cpu.py)."""
  from modelsteal.ntga import cnn_cpu, cpu  # pylint: disable=g-import-not-at-top
  if not (_SURROGATE.value == 'cnn' and _KERNEL_IMPL.value == 'closed_form'
          and cnn_cpu.available()):
    cpu.configure()  # one single-threaded XLA device per core (see cpu.py)
  # else: the numba CNN kernel threads itself; XLA's default single device
  # was faster with it, alone and beside other processes (BUILD_NOTES.md,
  # "NTGA generation").
  cpu.keep_freed_memory()  # no page faults per gradient (see cpu.py)
  # one BLAS thread for jaxlib's eigh: OpenBLAS's spinning pool made
  # gradients several times slower beside another process (see cpu.py)
  cpu.limit_blas_threads(1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _OWNS_PROCESS:
    tune_process()
  def body():
    from modelsteal.experiments import ntga  # pylint: disable=g-import-not-at-top
    ntga.run(config_from_flags())

  common.run_main(body, 'ntga')


if __name__ == '__main__':
  _OWNS_PROCESS = True
  app.run(main)
