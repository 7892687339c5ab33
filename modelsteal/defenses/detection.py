"""Streaming detectors of model-stealing clients, one state per client.

Each detector sees a client's queries in the order they were answered,
request by request (`observe(x, probs)`: the inputs and the victim's own,
undefended probabilities), and says when that client looks like a thief.

`prada`   PRADA (Juuti et al., "PRADA: Protecting against DNN Model Stealing
          Attacks", EuroS&P 2019). For each query, the L2 distance to the
          nearest earlier query of the same predicted class ("growing
          set"; a query joins it when that distance exceeds the set's mean
          minus one standard deviation). Natural queries give roughly
          normal distances; synthetic ones (Jacobian augmentation, a
          generator's) do not. Flags when the Shapiro-Wilk W of all
          distances so far falls below `delta`.
`shift`   An output-distribution window test, in the spirit of VarDetect
          (Pal et al., "Stateful Detection of Model Extraction Attacks",
          arXiv 2107.05166), which compares a client's recent queries with
          benign data by a two-sample test in a learned space; here the
          space is the victim's own output, so no second model is needed.
          Over the client's last `window` queries: a Kolmogorov-Smirnov test
          of the victim's top-1 log-margin against the owner's reference
          data, and a chi-square test of the predicted classes against the
          reference's class shares. Flags when either p-value falls below
          `alpha`. It sees out-of-distribution queries (knockoff sets,
          generated images) whatever their shape; it cannot see an attacker
          whose queries are drawn from the same distribution as honest
          clients' (BUILD_NOTES.md, "Detection").

Spec strings (`parse_detectors`): `prada`, `prada:0.9` (delta), `shift`,
`shift:1e-6` (alpha), comma-separated.
"""

from __future__ import annotations

import collections
import dataclasses
import warnings
from typing import Callable

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import literal


def log_margin(probs: np.ndarray) -> np.ndarray:
  """log p(top-1) - log p(top-2), per row: the victim's confidence."""
  p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
  top2 = np.sort(p, axis=1)[:, -2:]
  return np.log(top2[:, 1]) - np.log(top2[:, 0])


class _Rows:
  """A growing (n, d) float32 array with cached squared norms."""

  def __init__(self, d: int):
    self.x = np.empty((64, d), np.float32)
    self.sq = np.empty(64, np.float32)
    self.n = 0

  def add(self, v: np.ndarray) -> None:
    if self.n == len(self.x):
      self.x = np.concatenate([self.x, np.empty_like(self.x)])
      self.sq = np.concatenate([self.sq, np.empty_like(self.sq)])
    self.x[self.n] = v
    self.sq[self.n] = v @ v
    self.n += 1

  def min_dist(self, v: np.ndarray) -> float:
    d2 = self.sq[:self.n] - 2.0 * (self.x[:self.n] @ v) + v @ v
    return float(np.sqrt(max(float(d2.min()), 0.0)))


class Prada:
  """PRADA's per-client state (see the module docstring).

  Args:
    delta: flag when W < delta.
    min_queries: distances needed before the first test (the paper: 100).
    test_every: queries between tests (Shapiro-Wilk over all distances is
      O(n log n); every query would cost more than the model call).
  """

  name = 'prada'

  def __init__(self, delta: float = 0.9, min_queries: int = 100,
               test_every: int = 20):
    self.delta = delta
    self.min_queries = min_queries
    self.test_every = test_every
    self.growing: dict[int, _Rows] = {}
    self.growing_d: dict[int, list[float]] = {}
    self.distances: list[float] = []
    self.queries = 0
    self._tested_at = 0
    self.last_w: float | None = None

  def observe(self, x: np.ndarray, probs: np.ndarray) -> bool:
    flat = np.asarray(x, np.float32).reshape(len(x), -1)
    labels = np.argmax(probs, axis=1)
    for v, c in zip(flat, labels.tolist()):
      self.queries += 1
      rows = self.growing.get(c)
      if rows is None:
        rows = self.growing[c] = _Rows(flat.shape[1])
        rows.add(v)
        self.growing_d[c] = []
        continue
      d = rows.min_dist(v)
      self.distances.append(d)
      gd = self.growing_d[c]
      threshold = (np.mean(gd) - np.std(gd)) if gd else 0.0
      if d > threshold:
        rows.add(v)
        gd.append(d)
    return self._test()

  def _test(self) -> bool:
    n = len(self.distances)
    if n < self.min_queries or (n - self._tested_at < self.test_every
                                and self._tested_at):
      return False
    self._tested_at = n
    from scipy import stats  # pylint: disable=g-import-not-at-top
    d = np.asarray(self.distances[-5000:])  # W's accuracy ends near 5,000
    if np.ptp(d) == 0:  # all equal: no spread to test, a degenerate stream
      self.last_w = 0.0
      return True
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      self.last_w = float(stats.shapiro(d).statistic)
    return self.last_w < self.delta

  def evidence(self) -> dict:
    return {'W': self.last_w, 'distances': len(self.distances)}


@dataclasses.dataclass(frozen=True)
class Reference:
  """What `shift` compares against: the victim's log-margins and class
  shares on the owner's own data (`reference_from_probs`)."""
  margins: np.ndarray
  class_share: np.ndarray


def reference_from_probs(probs: np.ndarray) -> Reference:
  probs = np.asarray(probs, np.float32)
  k = probs.shape[1]
  counts = np.bincount(np.argmax(probs, axis=1), minlength=k).astype(float)
  # No class at exactly zero: one unseen class must not make every window
  # that holds it "impossible".
  share = (counts + 0.5) / (counts.sum() + 0.5 * k)
  return Reference(np.sort(log_margin(probs)), share)


class Shift:
  """The output-shift window test's per-client state (module docstring).

  Args:
    reference: from `reference_from_probs`.
    alpha: flag when a p-value falls below it. Tests repeat along a stream
      of tens of thousands of queries, so it sits far below 0.05.
    window: queries per test (the most recent).
    test_every: queries between tests.
  """

  name = 'shift'

  def __init__(self, reference: Reference, alpha: float = 1e-6,
               window: int = 500, test_every: int = 50):
    self.reference = reference
    self.alpha = alpha
    self.window = window
    self.test_every = test_every
    self.margins = collections.deque(maxlen=window)
    self.labels = collections.deque(maxlen=window)
    self.queries = 0
    self._tested_at = 0
    self.last_p: dict | None = None

  def observe(self, x: np.ndarray, probs: np.ndarray) -> bool:
    del x
    self.margins.extend(log_margin(probs).tolist())
    self.labels.extend(np.argmax(probs, axis=1).tolist())
    self.queries += len(probs)
    if (len(self.margins) < self.window
        or self.queries - self._tested_at < self.test_every):
      return False
    self._tested_at = self.queries
    from scipy import stats  # pylint: disable=g-import-not-at-top
    p_ks = float(stats.ks_2samp(np.asarray(self.margins),
                                self.reference.margins).pvalue)
    k = len(self.reference.class_share)
    counts = np.bincount(np.asarray(self.labels), minlength=k)
    expected = self.reference.class_share * counts.sum()
    p_chi = float(stats.chisquare(counts, expected).pvalue)
    self.last_p = {'ks': p_ks, 'chi2': p_chi}
    return min(p_ks, p_chi) < self.alpha

  def evidence(self) -> dict:
    return {'p': self.last_p, 'window': len(self.margins)}


DETECTORS = ('prada', 'prada:DELTA', 'shift', 'shift:ALPHA')


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
  """One parsed detector: `make()` returns a fresh per-client state."""
  name: str
  make: Callable[[], object]
  needs_reference: bool


def parse_detectors(spec: str, reference: Reference | None = None,
                    field: str = 'detect') -> list[DetectorSpec]:
  """'prada,shift:1e-6' -> detector specs. `shift` needs `reference`."""
  out = []
  for part in [p.strip() for p in (spec or '').split(',') if p.strip()]:
    name, _, arg = part.partition(':')
    try:
      value = float(arg) if arg else None
    except ValueError:
      value = -1.0
    if name == 'prada' and (value is None or 0 < value < 1):
      delta = 0.9 if value is None else value
      out.append(DetectorSpec('prada', lambda d=delta: Prada(delta=d),
                              False))
    elif name == 'shift' and (value is None or 0 < value < 1):
      alpha = 1e-6 if value is None else value
      if reference is None:
        raise ConfigError(field, ': "shift" compares clients with the '
                          "owner's data; give {detect_reference} too.")
      out.append(DetectorSpec(
          'shift', lambda a=alpha: Shift(reference, alpha=a), True))
    else:
      raise ConfigError(field, f': invalid detector {literal(repr(part))}; '
                        f'valid forms: {", ".join(DETECTORS)} (DELTA and '
                        'ALPHA in (0, 1)).')
    if [d.name for d in out].count(out[-1].name) > 1:
      raise ConfigError(field, f': {out[-1].name} is named twice.')
  return out
