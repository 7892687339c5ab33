"""A watermark in the answers, and the test that claims a stolen copy.

DAWN-style (Szyller et al., "DAWN: Dynamic Adversarial Watermarking of
Neural Networks", ACM MM 2021): the server answers a keyed fraction of
queries with a keyed wrong label. Which queries, and which label, is
HMAC-SHA256(key, the query's float32 bytes): no state to keep, the same
answer to the same query every time, and nothing an attacker can see
without the key. A student trained on the answers learns some of those
wrong labels; a model that never saw them agrees with one only by chance.

The test (`verify`): the owner replays the watermarked queries of a client
(from the query log) to a suspect. The honest answer of each is known (the
watermark label minus its keyed shift), so the test looks only where the
suspect departs from the honest answer and counts how often it departs to
the watermark's label. For a model that does not know the key, the
watermark label is uniform over the K-1 classes other than the honest one
and independent of where the model errs, so each such departure lands on
it with probability 1/(K-1); the p-value is the binomial tail
P(X >= agreements), X ~ Bin(departures, 1/(K-1)). (Counting agreements over
all marked queries with the same 1/(K-1) is also valid but weak: an
accurate model departs rarely, so agreement by chance is far rarer than
1/(K-1).)
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import literal


def load_key(path: str) -> bytes:
  """The watermark key: a file's bytes (at least 16), e.g.
  `head -c 32 /dev/urandom > wm.key`."""
  try:
    with open(path, 'rb') as f:
      key = f.read()
  except OSError as e:
    raise ConfigError('watermark_key', f': cannot read {literal(path)}: '
                      f'{literal(e.strerror or e)}') from None
  if len(key) < 16:
    raise ConfigError('watermark_key', f': {literal(path)} holds '
                      f'{len(key)} bytes; a key needs at least 16 '
                      '(head -c 32 /dev/urandom > wm.key).')
  return key


@dataclasses.dataclass(frozen=True)
class Watermark:
  key: bytes
  rate: float = 0.005  # fraction of queries answered with the keyed label

  def __post_init__(self):
    if not 0 < self.rate < 1:
      raise ConfigError('watermark_rate', f'must be in (0, 1), got '
                        f'{self.rate}.')

  def _shifts(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(which rows are watermarked, each row's keyed label shift in
    1..k-1)."""
    flat = np.ascontiguousarray(x, np.float32).reshape(len(x), -1)
    marked = np.zeros(len(x), bool)
    shifts = np.zeros(len(x), np.int64)
    cut = int(self.rate * 2**64)
    for i, row in enumerate(flat):
      h = hmac.new(self.key, row.tobytes(), hashlib.sha256).digest()
      if int.from_bytes(h[:8], 'little') < cut:
        marked[i] = True
        shifts[i] = 1 + int.from_bytes(h[8:16], 'little') % (k - 1)
    return marked, shifts

  def marks(self, x: np.ndarray, top: np.ndarray, k: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(which rows are watermarked, each row's watermark label) for queries
    `x` whose honest answers are `top`; the label differs from `top`."""
    marked, shifts = self._shifts(x, k)
    return marked, (np.asarray(top, np.int64) + shifts) % k

  def honest(self, x: np.ndarray, answered: np.ndarray, k: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """(which rows are watermarked, the honest label of each) from what
    the server answered (the watermark label on marked rows)."""
    marked, shifts = self._shifts(x, k)
    return marked, (np.asarray(answered, np.int64) - shifts) % k

  def apply(self, x: np.ndarray, out: dict, num_classes: int,
            probs_key: str = 'probabilities', label_key: str = 'label') -> int:
    """Rewrites the marked rows of a server's outputs in place: the
    watermark label becomes the answer (probabilities: the top entry and
    the label's entry swap, so the answer keeps its shape). Returns how
    many rows were marked."""
    probs = out.get(probs_key)
    if probs is not None:
      probs = np.array(probs, np.float32)
      top = probs.argmax(1)
    elif label_key in out:
      top = np.asarray(out[label_key]).reshape(-1)
    else:
      return 0
    marked, labels = self.marks(x, top, num_classes)
    if not marked.any():
      return 0
    rows = np.flatnonzero(marked)
    if probs is not None:
      a = probs[rows, top[rows]].copy()
      probs[rows, top[rows]] = probs[rows, labels[rows]]
      probs[rows, labels[rows]] = a
      out[probs_key] = probs
    if label_key in out:
      old = np.asarray(out[label_key])
      lab = old.reshape(-1).copy()
      lab[rows] = labels[rows]
      out[label_key] = lab.reshape(old.shape).astype(old.dtype)
    return int(marked.sum())


@dataclasses.dataclass(frozen=True)
class Verdict:
  marked: int  # watermarked queries replayed
  departures: int  # the suspect's answers other than the honest one
  agreements: int  # of those, the watermark's label
  num_classes: int
  p_value: float
  test: str

  def text(self) -> str:
    return (f'{self.agreements} of {self.departures} departures from the '
            f'honest answer (on {self.marked} watermarked queries) went to '
            f'the watermark label; {self.test}: p = {self.p_value:.3g}')


def verify(predictions: np.ndarray, labels: np.ndarray, honest: np.ndarray,
           num_classes: int) -> Verdict:
  """The binomial test of the module docstring, for a suspect's
  `predictions` on the marked queries, their watermark `labels` and their
  `honest` labels."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  predictions = np.asarray(predictions).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  departs = predictions != np.asarray(honest).reshape(-1)
  n = int(departs.sum())
  agree = int((predictions[departs] == labels[departs]).sum())
  chance = 1.0 / (num_classes - 1)
  p = float(stats.binom.sf(agree - 1, n, chance)) if n else 1.0
  return Verdict(len(labels), n, agree, num_classes, p,
                 f'one-sided binomial test over the {n} departures, chance '
                 f'1/{num_classes - 1}')
