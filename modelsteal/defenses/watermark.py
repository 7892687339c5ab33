"""A watermark in the answers, and the test that claims a stolen copy.

DAWN-style (Szyller et al., "DAWN: Dynamic Adversarial Watermarking of
Neural Networks", ACM MM 2021): the server answers a keyed fraction of
queries with a keyed wrong label. Which queries, and which label, is
HMAC-SHA256(key, the query's float32 bytes): no state to keep, the same
answer to the same query every time, and nothing an attacker can see
without the key. A student trained on the answers learns some of those
wrong labels; a model that never saw them agrees with one only by chance.

The test (`verify`): the owner replays the watermarked queries of a client
(from the query log) to a suspect and counts how often it gives the
watermark's label. For a model that does not know the key, the watermark
label is uniform over the K-1 classes other than the victim's answer, so
each agreement has probability at most 1/(K-1) whatever the model; the
p-value is the binomial tail P(X >= agreements), X ~ Bin(n, 1/(K-1)).
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

  def marks(self, x: np.ndarray, top: np.ndarray, k: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(which rows are watermarked, each row's watermark label) for queries
    `x` whose honest answers are `top`; the label differs from `top`."""
    x = np.ascontiguousarray(x, np.float32)
    flat = x.reshape(len(x), -1)
    marked = np.zeros(len(x), bool)
    labels = np.asarray(top, np.int64).copy()
    cut = int(self.rate * 2**64)
    for i, row in enumerate(flat):
      h = hmac.new(self.key, row.tobytes(), hashlib.sha256).digest()
      if int.from_bytes(h[:8], 'little') < cut:
        marked[i] = True
        shift = 1 + int.from_bytes(h[8:16], 'little') % (k - 1)
        labels[i] = (labels[i] + shift) % k
    return marked, labels

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
  agreements: int  # answered with the watermark's label
  num_classes: int
  p_value: float
  test: str

  def text(self) -> str:
    return (f'{self.agreements} of {self.marked} watermarked queries answered '
            f'with the watermark label (chance at most 1/{self.num_classes - 1}'
            f' each); {self.test}: p = {self.p_value:.3g}')


def verify(predictions: np.ndarray, labels: np.ndarray,
           num_classes: int) -> Verdict:
  """The binomial test of the module docstring, for a suspect's
  `predictions` on the marked queries whose watermark labels are `labels`."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  predictions = np.asarray(predictions).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  n = len(labels)
  agree = int((predictions == labels).sum())
  p = float(stats.binom.sf(agree - 1, n, 1.0 / (num_classes - 1))) if n else 1.0
  return Verdict(n, agree, num_classes, p,
                 f'one-sided binomial test, n={n}, chance 1/{num_classes - 1}')
