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
  """A class's growing set: (n, d) float32 rows with cached squared norms,
  holding the most recent `cap` rows (a ring)."""

  def __init__(self, d: int, cap: int):
    self.x = np.empty((min(64, cap), d), np.float32)
    self.sq = np.empty(len(self.x), np.float32)
    self.cap = cap
    self.n = 0  # rows held
    self._next = 0  # where the next row goes once full

  def add(self, v: np.ndarray) -> None:
    for row in np.atleast_2d(v):
      if self.n < self.cap:
        if self.n == len(self.x):
          grow = min(len(self.x), self.cap - len(self.x))
          self.x = np.concatenate([self.x, np.empty((grow, self.x.shape[1]),
                                                    np.float32)])
          self.sq = np.concatenate([self.sq, np.empty(grow, np.float32)])
        i = self.n
        self.n += 1
      else:
        i = self._next
        self._next = (self._next + 1) % self.cap
      self.x[i] = row
      self.sq[i] = row @ row

  def min_dists(self, v: np.ndarray) -> np.ndarray:
    """The distance of each row of `v` (m, d) to its nearest held row."""
    d2 = (self.sq[:self.n][None, :] - 2.0 * (v @ self.x[:self.n].T)
          + np.einsum('ij,ij->i', v, v)[:, None])
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0))


def _pairwise(v: np.ndarray) -> np.ndarray:
  sq = np.einsum('ij,ij->i', v, v)
  return np.sqrt(np.maximum(sq[:, None] - 2.0 * (v @ v.T) + sq[None, :], 0.0))


class Prada:
  """PRADA's per-client state (see the module docstring).

  Args:
    delta: flag when W < delta.
    min_queries: distances needed before the first test (the paper: 100).
    test_every: queries between tests, at least; the gap grows with the
      stream (1% of it), since Shapiro-Wilk over thousands of distances
      costs more than a model call.
    cap: rows kept per class's growing set (the most recent); the paper
      keeps all, which makes a long stream's every query cost O(stream).
  """

  name = 'prada'

  def __init__(self, delta: float = 0.88, min_queries: int = 100,
               test_every: int = 20, cap: int = 2000):
    self.delta = delta
    self.min_queries = min_queries
    self.test_every = test_every
    self.cap = cap
    self.growing: dict[int, _Rows] = {}
    self._stats: dict[int, list[float]] = {}  # class -> [count, sum, sumsq]
    # Shapiro-Wilk's W is accurate up to about 5,000 values: the test sees
    # the most recent 5,000 distances.
    self.distances = collections.deque(maxlen=5000)
    self.n_distances = 0
    self.queries = 0
    self._tested_at = 0
    self.last_w: float | None = None

  def observe(self, x: np.ndarray, probs: np.ndarray) -> bool:
    flat = np.asarray(x, np.float32).reshape(len(x), -1)
    labels = np.argmax(probs, axis=1)
    self.queries += len(flat)
    # Each query's distance depends only on earlier queries of its class:
    # one matrix product per class against the growing set, then the
    # batch's own members in order.
    for c in np.unique(labels).tolist():
      v = flat[labels == c]
      rows = self.growing.get(c)
      if rows is None:
        rows = self.growing[c] = _Rows(flat.shape[1], self.cap)
        self._stats[c] = [0.0, 0.0, 0.0]
        to_set = np.full(len(v), np.inf)
      else:
        to_set = rows.min_dists(v)
      within = _pairwise(v) if len(v) > 1 else None
      st = self._stats[c]
      added = []
      for j in range(len(v)):
        d = to_set[j]
        if added:
          d = min(d, float(within[j, added].min()))
        if not np.isfinite(d):  # the class's first query starts its set
          added.append(j)
          continue
        self.distances.append(float(d))
        self.n_distances += 1
        n, s1, s2 = st
        threshold = (s1 / n - np.sqrt(max(s2 / n - (s1 / n) ** 2, 0.0))
                     if n else 0.0)
        if d > threshold:
          added.append(j)
          st[0], st[1], st[2] = n + 1, s1 + d, s2 + d * d
      rows.add(v[added])
    return self._test()

  def _test(self) -> bool:
    n = self.n_distances
    gap = max(self.test_every, n // 100)
    if n < self.min_queries or (self._tested_at and
                                n - self._tested_at < gap):
      return False
    self._tested_at = n
    from scipy import stats  # pylint: disable=g-import-not-at-top
    d = np.asarray(self.distances)
    if np.ptp(d) == 0:  # all equal: no spread to test, a degenerate stream
      self.last_w = 0.0
      return True
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      self.last_w = float(stats.shapiro(d).statistic)
    return self.last_w < self.delta

  def evidence(self) -> dict:
    return {'W': self.last_w, 'distances': self.n_distances}


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
      delta = 0.88 if value is None else value
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
  if out:
    # The tests' first call would otherwise import scipy.stats (a slow
    # import) inside a request, on the server's event loop.
    from scipy import stats  # pylint: disable=g-import-not-at-top,unused-import
  return out
