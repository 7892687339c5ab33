"""Output modes and victim-side output defences, as plain functions.

Each takes probabilities float32 (N, K) and returns answers float32 (N, K):
what the victim reveals. They serve both sides: the local oracle applies them
to simulate an API (`--output`), and the REST server applies them before
answering (`--defense`). The set mirrors IBM ART's postprocessors
(`art/defences/postprocessor/`).

Spec strings (`parse_output`):

    probs                full probability vector
    label                top-1 only, as a one-hot row
    topk:K               the K largest probabilities, the rest zero
    rounded:D            probabilities rounded to D decimals
    cutoff:T             probabilities below T set to zero (ART HighConfidence)
    noise:S              Gaussian noise of std S, clipped and renormalised
    reverse_sigmoid:B,G  reverse sigmoid with beta B, gamma G
                         (Lee et al., arXiv 1806.00054)
    misinfo:TAU[,NU]     Adaptive Misinformation (Kariyappa & Qureshi,
                         CVPR 2020): queries the victim is unsure of
                         (top-1 probability below TAU, a sigmoid of slope NU
                         around it; NU 50 by default) are answered from a
                         misinformation function instead
    mad:EPS[,argmax]     Prediction Poisoning's MAD (Orekondy et al., ICLR
                         2020): the answer within L1 distance EPS (0 < EPS
                         <= 2) of the true one that turns an attacker's
                         gradient step furthest from the true one's;
                         `argmax` keeps the top-1 label (MAD-argmax)

`mad` reads the queries too (`OutputMode.uses_inputs`); the others read
only the probabilities.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import literal


def top1_label(p: np.ndarray) -> np.ndarray:
  out = np.zeros_like(p, dtype=np.float32)
  out[np.arange(len(p)), np.argmax(p, axis=1)] = 1.0
  return out


def top_k(p: np.ndarray, k: int) -> np.ndarray:
  out = np.zeros_like(p, dtype=np.float32)
  idx = np.argsort(-p, axis=1)[:, :k]
  rows = np.arange(len(p))[:, None]
  out[rows, idx] = p[rows, idx]
  return out


def rounding(p: np.ndarray, decimals: int) -> np.ndarray:
  return np.round(p, decimals).astype(np.float32)


def confidence_cutoff(p: np.ndarray, cutoff: float) -> np.ndarray:
  return np.where(p < cutoff, 0.0, p).astype(np.float32)


def gaussian_noise(p: np.ndarray, scale: float,
                   rng: np.random.Generator | None = None) -> np.ndarray:
  rng = rng or np.random.default_rng()
  noisy = np.clip(p + rng.normal(0.0, scale, p.shape), 0.0, None)
  sums = noisy.sum(axis=1, keepdims=True)
  return np.where(sums > 0, noisy / np.maximum(sums, 1e-12),
                  1.0 / p.shape[1]).astype(np.float32)


def reverse_sigmoid(p: np.ndarray, beta: float = 1.0,
                    gamma: float = 0.1) -> np.ndarray:
  """Reverse sigmoid perturbation (Lee et al. 2018), as ART computes it."""
  eps = 1e-9
  q = np.clip(p.astype(np.float64), eps, 1.0 - eps)
  z = gamma * np.log(q / (1.0 - q))
  perturbation = beta * (1.0 / (1.0 + np.exp(-z)) - 0.5)
  out = np.clip(p - perturbation, 0.0, 1.0)
  sums = out.sum(axis=1, keepdims=True)
  return np.where(sums > 0, out / np.maximum(sums, 1e-12),
                  1.0 / p.shape[1]).astype(np.float32)


def misinformation(p: np.ndarray) -> np.ndarray:
  """The answer that misleads most where the victim is right: mass
  inversely proportional to the victim's own probabilities, so its most
  likely class becomes the least likely. Adaptive Misinformation trains a
  network for this (loss -log(1 - f'(x)_y)); this closed form needs none
  and has the same aim: little probability on the victim's answer."""
  inv = 1.0 / np.clip(np.asarray(p, np.float64), 1e-6, 1.0)
  return (inv / inv.sum(axis=1, keepdims=True)).astype(np.float32)


def adaptive_misinformation(p: np.ndarray, tau: float,
                            nu: float = 50.0) -> np.ndarray:
  """(1 - a) p + a misinformation(p), a = sigmoid(nu (tau - max p)):
  in-distribution queries (confident victim) keep their answer, out-of-
  distribution ones (a knockoff set, generated images) get misinformation.
  The top-1 of queries with max p well above TAU is unchanged."""
  p = np.asarray(p, np.float32)
  a = 1.0 / (1.0 + np.exp(-nu * (tau - p.max(axis=1, keepdims=True))))
  return ((1.0 - a) * p + a * misinformation(p)).astype(np.float32)


def mad(p: np.ndarray, p_surrogate: np.ndarray, eps: float,
        keep_top1: bool = False) -> np.ndarray:
  """MAD (Maximizing Angular Deviation; Orekondy et al., "Prediction
  Poisoning", ICLR 2020) with the surrogate's gradient in its last layer.

  MAD answers the y~ that turns the attacker's gradient step a(y~) = G^T y~
  (G: the Jacobian of a surrogate's log-probabilities in its weights)
  furthest from the step on the true answer y, with y~ in the simplex and
  ||y~ - y||_1 <= eps. In the last layer's weights W (logits W h + b),
  d log p_s[k] / dW = (e_k - p_s) h^T, so a(y) = (y - p_s) h^T for any y in
  the simplex, and the angle between a(y~) and a(y) is the angle between
  y~ - p_s and y - p_s: the surrogate's probabilities `p_surrogate` are all
  the objective needs (no per-class backward pass). As in the paper, the
  candidates lie on the segments from y to each vertex e_k; along one the L1
  distance is linear (alpha ||e_k - y||_1), so the furthest point the
  budget allows is closed form, and the best of the K candidates by the
  objective is answered. `keep_top1` (MAD-argmax) shortens each segment to
  keep y's top-1 class. Where no candidate turns the step, y is answered.
  """
  y = np.asarray(p, np.float64)
  q = np.asarray(p_surrogate, np.float64)
  n, k = y.shape
  eye = np.eye(k)
  step = eye[None] - y[:, None, :]                      # (N, K, K): e_k - y
  length = np.abs(step).sum(axis=2)                     # ||e_k - y||_1
  alpha = np.minimum(1.0, eps / np.maximum(length, 1e-12))
  if keep_top1:
    top = y.argmax(axis=1)
    gap = y[np.arange(n), top][:, None] - y               # y_t - y_k >= 0
    # (1 - a) y_t > (1 - a) y_k + a  <=>  a < gap / (1 + gap)
    bound = gap / (1.0 + gap) * (1.0 - 1e-6)
    bound[np.arange(n), top] = 1.0
    alpha = np.minimum(alpha, bound)
  u = y - q                                             # (N, K)
  cand = u[:, None, :] + alpha[..., None] * step        # y~ - p_s, per k
  cos = (cand * u[:, None, :]).sum(axis=2) / np.maximum(
      np.linalg.norm(cand, axis=2) * np.linalg.norm(u, axis=1)[:, None],
      1e-12)
  best = cos.argmin(axis=1)
  rows = np.arange(n)
  out = y + alpha[rows, best][:, None] * step[rows, best]
  keep = cos[rows, best] >= 1.0 - 1e-9
  out[keep] = y[keep]
  out = np.clip(out, 0.0, None)
  return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


class RandomSurrogate:
  """MAD's surrogate: a randomly initialised one-hidden-layer ReLU network
  over the flattened, standardised query (the defender knows neither the
  attacker's architecture nor its weights, so it holds a stand-in; at
  initialisation it costs one small matrix product a batch). Its weights are
  drawn from `seed` on the first call, when the input size and the number
  of classes are known."""

  def __init__(self, seed: int = 0, hidden: int = 128):
    self.seed, self.hidden = seed, hidden
    self._weights = None

  def __call__(self, x: np.ndarray, num_classes: int) -> np.ndarray:
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    x = (x - x.mean(axis=1, keepdims=True)) / (
        x.std(axis=1, keepdims=True) + 1e-6)
    if self._weights is None or self._weights[0].shape[0] != x.shape[1] \
        or self._weights[1].shape[1] != num_classes:
      rng = np.random.default_rng(self.seed)
      d = x.shape[1]
      self._weights = (
          rng.normal(0, np.sqrt(2.0 / d), (d, self.hidden)).astype(np.float32),
          rng.normal(0, np.sqrt(1.0 / self.hidden),
                     (self.hidden, num_classes)).astype(np.float32))
    from scipy.special import softmax  # pylint: disable=g-import-not-at-top
    w1, w2 = self._weights
    return softmax(np.maximum(x @ w1, 0.0) @ w2, axis=1)


@dataclasses.dataclass(frozen=True)
class OutputMode:
  """A parsed spec: `apply(probs, queries) -> answers`; `soft` says
  whether the answers carry more than the top-1 label (students then use
  soft targets); `uses_inputs` whether `apply` needs the queries (`mad`)."""
  spec: str
  fn: Callable[..., np.ndarray]
  soft: bool
  uses_inputs: bool = False

  def apply(self, p: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
    if not self.uses_inputs:
      return self.fn(p)
    if x is None:
      raise ValueError(f'output mode {self.spec!r} needs the queries as well '
                       'as the probabilities.')
    return self.fn(p, x)


OUTPUT_MODES = ('probs', 'label', 'topk:K', 'rounded:D', 'cutoff:T', 'noise:S',
                'reverse_sigmoid:B,G', 'misinfo:TAU[,NU]', 'mad:EPS[,argmax]')


def parse_output(spec: str, seed: int = 0, field: str = 'output'
                 ) -> OutputMode:
  """Parses an output/defence spec (see the module docstring).

  `field`: the config field the spec came from (`output`, or a server's
  `defense`), named by the error.

  Raises:
    ConfigError (a ValueError): an unknown mode or a bad argument; lists the
      valid forms.
  """
  spec = (spec or '').strip()
  name, _, arg = spec.partition(':')
  try:
    if name in ('probs', 'none') and not arg:
      return OutputMode(spec, lambda p: np.asarray(p, np.float32), True)
    if name == 'label' and not arg:
      return OutputMode(spec, top1_label, False)
    if name == 'topk':
      k = int(arg)
      if k < 1:
        raise ValueError
      return OutputMode(spec, lambda p: top_k(p, k), k > 1)
    if name == 'rounded':
      d = int(arg)
      if d < 0:
        raise ValueError
      return OutputMode(spec, lambda p: rounding(p, d), True)
    if name == 'cutoff':
      t = float(arg)
      if not 0.0 <= t < 1.0:
        raise ValueError
      return OutputMode(spec, lambda p: confidence_cutoff(p, t), True)
    if name == 'noise':
      s = float(arg)
      if s < 0:
        raise ValueError
      rng = np.random.default_rng(seed)
      return OutputMode(spec, lambda p: gaussian_noise(p, s, rng), True)
    if name == 'reverse_sigmoid':
      parts = [float(v) for v in arg.split(',')] if arg else [1.0, 0.1]
      if len(parts) != 2:
        raise ValueError
      b, g = parts
      return OutputMode(spec, lambda p: reverse_sigmoid(p, b, g), True)
    if name == 'misinfo':
      parts = [float(v) for v in arg.split(',')]
      if len(parts) == 1:
        parts.append(50.0)
      if len(parts) != 2 or not 0 < parts[0] < 1 or parts[1] <= 0:
        raise ValueError
      tau, nu = parts
      return OutputMode(spec, lambda p: adaptive_misinformation(p, tau, nu),
                        True)
    if name == 'mad':
      eps_text, _, flag = arg.partition(',')
      eps = float(eps_text)
      if not 0 < eps <= 2 or flag.strip() not in ('', 'argmax'):
        raise ValueError
      keep = flag.strip() == 'argmax'
      surrogate = RandomSurrogate(seed)
      return OutputMode(
          spec, lambda p, x: mad(p, surrogate(x, np.shape(p)[1]), eps, keep),
          True, uses_inputs=True)
  except ValueError:
    pass
  raise ConfigError(field, f': invalid output mode {literal(repr(spec))}; '
                    f'valid forms: {", ".join(OUTPUT_MODES)} (e.g. topk:3, '
                    'rounded:2, mad:0.5,argmax).')
