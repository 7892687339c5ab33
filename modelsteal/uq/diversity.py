"""Diversity and calibration of a set of predictions: pure numpy.

Every function takes `probs` float (S, N, K): S members or samples, N
images, K classes, rows summing to 1 (S = 1 for a plain model).
"""

from __future__ import annotations

import itertools

import numpy as np

_EPS = 1e-12


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
  """Shannon entropy in nats along `axis`."""
  p = np.asarray(p, np.float64)
  return -np.sum(p * np.log(np.clip(p, _EPS, 1.0)), axis=axis)


def prediction_variance(probs: np.ndarray) -> float:
  """Variance across members, averaged over images and classes."""
  return float(np.asarray(probs, np.float64).var(axis=0).mean())


def pairwise_disagreement(probs: np.ndarray) -> float:
  """Mean over member pairs of the fraction of images whose top-1 differs."""
  top = np.asarray(probs).argmax(-1)
  pairs = list(itertools.combinations(range(len(top)), 2))
  if not pairs:
    return 0.0
  return float(np.mean([(top[i] != top[j]).mean() for i, j in pairs]))


def mutual_information(probs: np.ndarray) -> np.ndarray:
  """Per image: entropy of the mean minus the mean entropy (N,) (BALD)."""
  probs = np.asarray(probs, np.float64)
  return entropy(probs.mean(0)) - entropy(probs).mean(0)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = 15) -> float:
  """ECE of (N, K) probabilities: sum over equal-width confidence bins of
  (bin weight) * |accuracy - mean confidence| (Guo et al. 2017)."""
  probs = np.asarray(probs, np.float64)
  conf = probs.max(1)
  correct = probs.argmax(1) == np.asarray(labels)
  edges = np.linspace(0.0, 1.0, bins + 1)
  ece = 0.0
  for lo, hi in zip(edges[:-1], edges[1:]):
    inside = (conf > lo) & (conf <= hi)
    if inside.any():
      ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
  return float(ece)


def diversity(probs: np.ndarray) -> dict[str, float]:
  """The three diversity measures logged during training."""
  return {'variance': prediction_variance(probs),
          'disagreement': pairwise_disagreement(probs),
          'mutual_information': float(mutual_information(probs).mean())}
