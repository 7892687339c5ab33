"""Flags every pipeline shares, defined once (absl rejects a flag defined
twice in one process, and the tests import every pipeline), plus the shared
`main` wrapper that turns user mistakes into one clear line. Not a
pipeline: pipelines import this and `pipelines._steal_flags` /
`pipelines._generator_flags`, never each other."""

from __future__ import annotations

import sys
from typing import Callable, Mapping

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


RERUN = flags.DEFINE_list(
    'rerun', [], 'Run these steps again even where a finished run of the '
    'same code, parameters and inputs is cached (component names such as '
    'train_model,label_queries, or all); the old runs stay on disk.')


def flag_label(field: str, flag_names: Mapping[str, str] | None) -> str:
  """The flag a user typed for a config field (`--field` unless mapped)."""
  return (flag_names or {}).get(field) or f'--{field}'


def error_line(error: BaseException,
               flag_names: Mapping[str, str] | None = None) -> str:
  """A user error as the one line a pipeline prints, fields as flags."""
  from modelsteal.errors import UserError  # pylint: disable=g-import-not-at-top
  if isinstance(error, UserError):
    return error.render(lambda f: flag_label(f, flag_names))
  return str(error)


def run_main(body: Callable[[], object], name: str,
             flag_names: Mapping[str, str] | None = None) -> None:
  """Runs a pipeline body: quiet logs, clear errors, resumable Ctrl-C.

  A `modelsteal.errors.UserError` is printed as one `NAME: error:` line (a
  config field shown as its flag: `--field`, or as `flag_names` maps it)
  and exits with status 2; anything else is a bug and keeps its traceback.
  """
  from modelsteal import progress  # pylint: disable=g-import-not-at-top
  from modelsteal.errors import UserError  # pylint: disable=g-import-not-at-top
  from pipelines import import_tensorflow_quietly, quiet_logs  # pylint: disable=g-import-not-at-top
  import_tensorflow_quietly()
  quiet_logs()
  progress.set_verbose(VERBOSE.value)
  from modelsteal.component import set_rerun  # pylint: disable=g-import-not-at-top
  try:
    set_rerun(RERUN.value or None)  # None: MODELSTEAL_RERUN, if set
    body()
  except KeyboardInterrupt:
    print(f'\n{name}: interrupted. Nothing half-written was kept and finished '
          'steps (and answers received) are saved: run the same command '
          'again to resume.', file=sys.stderr)
    sys.exit(130)
  except UserError as e:
    print(f'{name}: error: {error_line(e, flag_names)}', file=sys.stderr)
    sys.exit(2)
