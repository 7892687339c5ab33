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

Cost, measured on a 2-core CPU (see BUILD_NOTES.md, issues 4 and 11): the
FNN surrogate takes about 0.5 s per block-iteration, 8 minutes for all of
MNIST; the CNN surrogate's closed-form kernel (numba loops on a CPU, see
`modelsteal/ntga/cnn_cpu.py`; the first run compiles them for about a
minute, cached afterwards) about 2 s per block-iteration against 1,000
validation images on one core (its XLA version 9 s, neural-tangents' kernel 55 s), so
`--official` (one gradient per block) against 2,000 validation images poisons
all of MNIST in about a quarter of an hour. On a GPU (JAX with CUDA; no
TensorFlow needed) a CNN gradient against 10,000 validation images takes
0.08-0.09 s (H200, H100), and 10-step PGD over all of MNIST 165 s (H100).

Variants:

    --dataset=/path/mnist.npz                 a local Keras-style npz / IDX folder
    --dataset=cifar10                         eps 8/255, t 4096 (fnn) / 8 (cnn)
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

import dataclasses
import os
import time

from absl import app
from absl import flags

from pipelines import common

_SURROGATE = flags.DEFINE_enum('surrogate', 'fnn', ['fnn', 'cnn'],
                               'Infinite-width surrogate network.')
_EPS = flags.DEFINE_float('eps', None, 'L-inf budget on [0, 1] pixels; '
                          'default 0.3 (MNIST), 8/255 (CIFAR-10).')
_T = flags.DEFINE_float('t', None, 'GP training time; default 64 (MNIST), '
                        '4096 (CIFAR-10 fnn), 8 (CIFAR-10 cnn).')
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
    'validation_target). Measured, MNIST, CNN surrogate, 10 PGD steps: a CNN '
    'target trained on the poisoned set reached 9.5% with 10,000, 14.7% with '
    '5,000 (60 min on 2 CPU cores), 22-24% with 1,000-2,000.')
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


@dataclasses.dataclass(frozen=True)
class NtgaConfig:
  dataset: str = 'mnist'
  data_dir: str | None = None
  surrogate: str = 'fnn'
  eps: float | None = None
  t: float | None = None
  block_size: int = 512
  nb_iter: int = 10
  eps_iter: float | None = None
  rand_init: bool = False
  val_size: int = 10000
  train_size: int = 0
  precision: str = 'float32'
  kernel_impl: str = 'closed_form'
  val_batch_size: int = 0
  official: bool = False
  val_sample: int = 0
  export_npz: str | None = None
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False


def _shrink(ds, n_train=600, n_test=200):
  return dataclasses.replace(ds, x_train=ds.x_train[:n_train],
                             y_train=ds.y_train[:n_train],
                             x_test=ds.x_test[:n_test], y_test=ds.y_test[:n_test])


def run(cfg: NtgaConfig):
  """Runs the pipeline; returns the component's `RunResult`."""
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  from modelsteal import ntga  # pylint: disable=g-import-not-at-top

  started = time.time()
  ds = data_lib.load_dataset(cfg.dataset, cfg.data_dir)
  print(f'[ntga] data: {ds.name} from {ds.source}: {len(ds.y_train)} train / '
        f'{len(ds.y_test)} test images {ds.shape}', flush=True)
  val_size, train_size, block_size, nb_iter = (cfg.val_size, cfg.train_size,
                                               cfg.block_size, cfg.nb_iter)
  val_sample = cfg.val_sample
  if cfg.smoke:
    ds = _shrink(ds)
    val_size, block_size, nb_iter = min(200, len(ds.y_train) // 2), 128, 2
    val_sample = min(val_sample, val_size // 2)
    room = len(ds.y_train) - val_size
    train_size = min(train_size or room, 256, room)
  examples = data_lib.import_dataset(ds, cfg.workdir)
  defaults = ntga.dataset_defaults(ds.name, cfg.surrogate)
  eps = cfg.eps if cfg.eps is not None else defaults['eps']
  t = cfg.t if cfg.t is not None else defaults['t']
  result = ntga.generate_ntga.run(
      cfg.workdir, examples=examples, surrogate=cfg.surrogate, eps=eps,
      eps_iter=cfg.eps_iter or 0.0, t=t, nb_iter=nb_iter,
      block_size=block_size, val_size=val_size, train_size=train_size,
      seed=cfg.seed, rand_init=cfg.rand_init, precision=cfg.precision,
      kernel_impl=cfg.kernel_impl, val_batch_size=cfg.val_batch_size,
      official=cfg.official, val_sample=val_sample)
  art = result['poisoned']
  p = art.properties
  note = 'reused' if result.reused else f'{result.duration_s:.1f}s'
  rows = [
      ('dataset', f'{p["source"]} ({p["sizes"]["train"]} poisoned, '
                  f'{p["sizes"]["val"]} validation target)'),
      ('validation draws', f'{p["val_sample"]} images per gradient'
       if p.get('val_sample') else 'the whole target'),
      ('surrogate', f'{p["surrogate"]}: {p["surrogate_description"]}'),
      ('eps / eps_iter / nb_iter / t',
       f'{p["eps"]:g} / {p["eps_iter"]:g} / {p["nb_iter"]} / {p["t"]:g}'
       + (' (official one-step mode)' if cfg.official else '')),
      ('blocks', f'{p["blocks"]} of ~{p["sizes"]["train"] // p["blocks"]}'),
      ('surrogate val loss', f'{p["surrogate_val_loss"]["clean"]:.4f} -> '
                             f'{p["surrogate_val_loss"]["poisoned"]:.4f}'),
      ('surrogate val accuracy',
       f'{100 * p["surrogate_val_accuracy"]["clean"]:.2f}% -> '
       f'{100 * p["surrogate_val_accuracy"]["poisoned"]:.2f}%'),
      ('max / mean |delta|', f'{p["max_abs_perturbation"]:.4f} / '
                             f'{p["mean_abs_perturbation"]:.4f}'),
      ('s per block-iteration',
       'n/a' if p['seconds_per_block_iteration'] is None else
       f'{p["seconds_per_block_iteration"]:.3f} ({p["devices"]})'),
      ('run', note),
  ]
  print()
  for k, v in rows:
    print(f'  {k:<30} {v}')
  print(f'\npoisoned: {art.uri}')
  print(f'grid:     {art.path("examples.png")}')
  print(f'record:   {os.path.join(result.execution_dir, "execution.json")}')
  if cfg.export_npz:
    path = ntga.export_npz(art, cfg.export_npz)
    print(f'npz:      {path}')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return result


def config_from_flags() -> NtgaConfig:
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
  # issue 11, "Threads on a shared machine: the CNN kernel").
  cpu.keep_freed_memory()  # no page faults per gradient (see cpu.py)
  # one BLAS thread for jaxlib's eigh: OpenBLAS's spinning pool made
  # gradients 3-8x slower beside another process (see cpu.py)
  cpu.limit_blas_threads(1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _OWNS_PROCESS:
    tune_process()
  common.run_main(lambda: run(config_from_flags()), 'ntga')


if __name__ == '__main__':
  _OWNS_PROCESS = True
  app.run(main)
