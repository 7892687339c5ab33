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


@dataclasses.dataclass(frozen=True)
class OutputMode:
  """A parsed spec: `apply(probs) -> answers`; `soft` says whether the
  answers carry more than the top-1 label (students then use soft targets)."""
  spec: str
  apply: Callable[[np.ndarray], np.ndarray]
  soft: bool


OUTPUT_MODES = ('probs', 'label', 'topk:K', 'rounded:D', 'cutoff:T', 'noise:S',
                'reverse_sigmoid:B,G', 'misinfo:TAU[,NU]')


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
  except ValueError:
    pass
  raise ConfigError(field, f': invalid output mode {literal(repr(spec))}; '
                    f'valid forms: {", ".join(OUTPUT_MODES)} (e.g. topk:3, '
                    'rounded:2).')
