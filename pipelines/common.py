"""Flags every pipeline shares, defined once (absl rejects a flag defined
twice in one process, and the tests import every pipeline), plus the shared
`main` wrapper that turns user mistakes into one clear line."""

from __future__ import annotations

import sys
from typing import Callable

from absl import flags

DATASET = flags.DEFINE_string(
    'dataset', None, 'Dataset name (mnist, fashion_mnist, cifar10, '
    'offline_mnist) or path (Keras-style .npz / IDX folder).')
DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data directory.')
WORKDIR = flags.DEFINE_string('workdir', './runs', 'Root of all artifacts.')
SEED = flags.DEFINE_integer('seed', 0, 'Seed for splits, queries, training.')
SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny data and steps (tests).')
POISONED = flags.DEFINE_string(
    'poisoned', None, 'Poisoned Examples artifact directory (from '
    'pipelines.ntga) or an exported .npz (x_train, y_train, x_test, y_test, '
    'optional idx_train).')
TRAIN_SIZE = flags.DEFINE_integer(
    'train_size', 0, 'Use only the first N training images (0: all): a '
    'reduced problem. In pipelines.ntga, the number of images poisoned.')
DISTRIBUTE = flags.DEFINE_string('distribute', 'default',
                                 'tf.distribute strategy: default, mirrored, '
                                 'multiworker (from TF_CONFIG), tpu.')
VERBOSE = flags.DEFINE_bool(
    'verbose', False, "Keras' line per training epoch (and per-epoch "
    'accuracy) instead of one progress line per step.')


def user_errors() -> tuple[type[BaseException], ...]:
  """Exceptions a user can cause: printed as one line, never a traceback."""
  from modelsteal.artifacts import ArtifactError  # pylint: disable=g-import-not-at-top
  from modelsteal.data import DataError, DatasetUnavailableError  # pylint: disable=g-import-not-at-top
  from modelsteal.export import ModelLoadError  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import BudgetExceededError, OracleError  # pylint: disable=g-import-not-at-top
  return (KeyError, ValueError, DataError, DatasetUnavailableError,
          ModelLoadError, BudgetExceededError, OracleError, ArtifactError)


def fit_budgets(budgets, pool_size: int, *, flag: str, stand_in: bool,
                name: str) -> list[int]:
  """The query budgets a run uses, checked against the attacker's pool.

  One rule for `--budget` and `--budgets`: a budget above the pool is capped
  to the pool with a notice when the budget is the default (`flag` empty) or
  the data is a stand-in (`stand_in`: the offline MNIST subset or `--smoke`),
  so that every documented command also runs offline; a budget the user
  asked for on their own data is an error naming the flag they passed.
  Duplicates after capping are dropped, order kept.
  """
  out = []
  for b in budgets:
    if b < 1:
      raise ValueError(f'{flag or "--budget"}: the query budget must be at '
                       f'least 1, got {b}.')
    if b > pool_size:
      if flag and not stand_in:
        raise ValueError(
            f"{flag}: the query budget ({b}) is larger than the attacker's "
            f'query pool ({pool_size} images); lower {flag} or use a larger '
            '--query_data.')
      why = 'smoke/offline data' if stand_in else 'default budget'
      print(f'[{name}] notice: budget {b} capped to the pool size '
            f'{pool_size} ({why}).', flush=True)
      b = pool_size
    if b not in out:
      out.append(b)
  return out


def run_main(body: Callable[[], object], name: str) -> None:
  """Runs a pipeline body: quiet logs, clear errors, resumable Ctrl-C."""
  from modelsteal import progress  # pylint: disable=g-import-not-at-top
  from pipelines import import_tensorflow_quietly, quiet_logs  # pylint: disable=g-import-not-at-top
  import_tensorflow_quietly()
  quiet_logs()
  progress.set_verbose(VERBOSE.value)
  try:
    body()
  except KeyboardInterrupt:
    print(f'\n{name}: interrupted. Nothing half-written was kept and finished '
          'steps (and answers received) are saved: run the same command '
          'again to resume.', file=sys.stderr)
    sys.exit(130)
  except user_errors() as e:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f'{name}: error: {msg}', file=sys.stderr)
    sys.exit(2)


class Steps:
  """Prints each pipeline step with its time and whether it was reused;
  `save` writes them as `steps.csv` / `steps.json`."""

  def __init__(self, name: str):
    self.name = name
    self.rows = []

  def record(self, label: str, result) -> None:
    self.rows.append((label, result.duration_s, result.reused))
    note = 'reused' if result.reused else f'{result.duration_s:.1f}s'
    print(f'[{self.name}] {label:<44} {note:>10}  {result.execution_dir}',
          flush=True)

  def save(self, out_dir: str) -> None:
    import pandas as pd  # pylint: disable=g-import-not-at-top
    from modelsteal import evaluation  # pylint: disable=g-import-not-at-top
    evaluation.save_results(pd.DataFrame(self.rows, columns=[
        'step', 'seconds', 'reused']), out_dir, stem='steps')
