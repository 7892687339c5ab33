"""The black-box query interface: every access to a victim goes through here.

An `Oracle` answers batches of images in an output mode (`label`, `probs`,
`topk:K`, `rounded:D`, ... see `modelsteal.defenses.output`), counts the
queries, refuses to go past its budget, and keeps an on-disk answer cache.
Subclasses implement only `_ask(x) -> probabilities`: `LocalOracle` calls a
model in this process; a REST oracle calls a TF-Serving-style endpoint.

Accounting: `asked` counts the distinct queries the attack has used (cached
or not) and is what the budget limits; `paid` counts those actually sent to
the victim. A rerun therefore asks as much as before but pays nothing.
"""

from __future__ import annotations

import abc
import hashlib
import os

import numpy as np

from modelsteal.defenses.output import parse_output
from modelsteal.errors import ConfigError
from modelsteal.errors import UserError
from modelsteal.oracle.cache import AnswerCache
from modelsteal.oracle.cache import query_keys


class BudgetExceededError(UserError, RuntimeError):
  """The attack asked for more queries than its budget allows."""


class OracleError(UserError, RuntimeError):
  """The victim could not be asked, or answered something unusable."""


class Oracle(abc.ABC):
  """Base class; see the module docstring."""

  def __init__(self, output: str = 'label', budget: int | None = None,
               cache_dir: str | None = None, seed: int = 0):
    self.mode = parse_output(output, seed=seed)
    if budget is not None and budget <= 0:
      raise ConfigError('budgets', ': the query budget must be positive, '
                        f'got {budget}.')
    self.budget = budget
    self.asked = 0
    self.paid = 0
    self._seen: set[bytes] = set()
    self.cache = None
    if cache_dir:
      ns = hashlib.sha256(f'{self.identity}|{self.mode.spec}'.encode())
      self.cache = AnswerCache(os.path.join(cache_dir, ns.hexdigest()[:16]))

  @property
  @abc.abstractmethod
  def identity(self) -> str:
    """A string that names the victim (its fingerprint or URL)."""

  @abc.abstractmethod
  def _ask(self, x: np.ndarray) -> np.ndarray:
    """Sends x float32 (N, H, W, C) to the victim; returns (N, K) scores."""

  @property
  def soft(self) -> bool:
    return self.mode.soft

  def check_budget(self, n_new: int) -> None:
    if self.budget is not None and self.asked + n_new > self.budget:
      raise BudgetExceededError(
          f'query budget exceeded: {self.asked} queries used, {n_new} more '
          f'asked, budget {self.budget}. Raise {{budgets}} or ask fewer.')

  def query(self, x: np.ndarray) -> np.ndarray:
    """Answers a batch; cached queries are not sent (nor paid) again.

    Args:
      x: float32 (N, H, W, C) in [0, 1].

    Returns:
      float32 (N, K) answers in this oracle's output mode.

    Raises:
      BudgetExceededError: before anything is sent, if the batch would take
        the attack past its budget.
    """
    x = np.asarray(x, np.float32)
    keys = query_keys(x)
    new = [k for k in dict.fromkeys(keys) if k not in self._seen]
    self.check_budget(len(new))
    answers: list[np.ndarray | None] = [None] * len(x)
    missing = []
    for i, k in enumerate(keys):
      hit = self.cache.get(k) if self.cache is not None else None
      if hit is None:
        missing.append(i)
      else:
        answers[i] = hit
    if missing:
      raw = np.asarray(self._ask(x[missing]), np.float32)
      if raw.ndim != 2 or raw.shape[0] != len(missing):
        raise OracleError(f'the victim answered shape {raw.shape} for '
                          f'{len(missing)} queries; expected (N, classes).')
      got = self.mode.apply(raw, x[missing])
      self.paid += len(missing)
      for j, i in enumerate(missing):
        answers[i] = got[j]
      if self.cache is not None:
        self.cache.put([keys[i] for i in missing], got)
        self.cache.flush()
    self._seen.update(new)
    self.asked += len(new)
    return np.stack(answers).astype(np.float32)


  def query_all(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """`query` over any number of images, `batch_size` at a time."""
    return np.concatenate([self.query(x[i:i + batch_size])
                           for i in range(0, len(x), batch_size)])


class LocalOracle(Oracle):
  """A victim in this process: any `modelsteal.export.Predictor`."""

  def __init__(self, predictor, identity: str, **kwargs):
    self.predictor = predictor
    self._identity = identity
    super().__init__(**kwargs)

  @property
  def identity(self) -> str:
    return self._identity

  def _ask(self, x: np.ndarray) -> np.ndarray:
    return self.predictor(x)
