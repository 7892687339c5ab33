"""Steps every experiment shares: the step log, the data split that every
stealing experiment sees, budgets against the pool, run names."""

from __future__ import annotations

import dataclasses
import re

from modelsteal.errors import ConfigError


class Steps:
  """Prints each experiment step with its time and whether it was reused;
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


def shrink(ds, n_train: int = 1200, n_test: int = 300):
  """The first `n_train` / `n_test` images of a dataset (smoke runs)."""
  return dataclasses.replace(ds, x_train=ds.x_train[:n_train],
                             y_train=ds.y_train[:n_train],
                             x_test=ds.x_test[:n_test],
                             y_test=ds.y_test[:n_test])


def load_and_split(dataset_name: str, data_dir, seed: int, smoke: bool,
                   wd: str):
  """(dataset, splits Examples, RunResult): the dataset loaded (shrunk in
  smoke runs) and split into the victim's half and the attacker's (`pool`,
  `heldout`) plus `test`, the same way for every experiment, so a generator
  and a stealing run given the same seed see the same attacker pool."""
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  dataset = data_lib.load_dataset(dataset_name, data_dir)
  if smoke:
    dataset = shrink(dataset)
  split = data_lib.split_data.run(
      wd, examples=data_lib.import_dataset(dataset, wd), seed=seed,
      victim_fraction=0.5, heldout_fraction=0.1,
      min_size=dataset.num_classes)
  return dataset, split['splits'], split


def fit_budgets(budgets, pool_size: int, *, chosen: bool, stand_in: bool,
                name: str) -> list[int]:
  """The query budgets a run uses, checked against the attacker's pool.

  A budget above the pool is capped to the pool with a notice when the
  budget is the default (`chosen` False) or the data is a stand-in
  (`stand_in`: the offline MNIST subset or a smoke run), so that every
  documented command also runs offline; a budget the user chose on their
  own data is a `ConfigError` on `budgets`. Duplicates after capping are
  dropped, order kept.
  """
  out = []
  for b in budgets:
    if b < 1:
      raise ConfigError('budgets', f': the query budget must be at least 1, '
                        f'got {b}.')
    if b > pool_size:
      if chosen and not stand_in:
        raise ConfigError(
            'budgets', f": the query budget ({b}) is larger than the "
            f"attacker's query pool ({pool_size} images); lower {{budgets}} "
            'or use a larger {query_data}.')
      why = 'smoke/offline data' if stand_in else 'default budget'
      print(f'[{name}] notice: budget {b} capped to the pool size '
            f'{pool_size} ({why}).', flush=True)
      b = pool_size
    if b not in out:
      out.append(b)
  return out


def run_name(parts) -> str:
  """A directory name from parts: joined by '-', unsafe characters '_'."""
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', '-'.join(str(p) for p in parts))
