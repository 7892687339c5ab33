"""A generated stand-in with CIFAR-10's shape, for smoke runs and tests.

`load_dataset('synthetic_cifar10')` (or `synthetic_cifar10(...)` for other
sizes) gives 32x32 RGB images of 10 classes that a small CNN learns in a few
epochs, without any file or network: every pipeline's `--smoke` mode and the
tests run at 32x32x3 without the real data. Figures measured on it mean
nothing about CIFAR-10; its `note` says so.
"""

from __future__ import annotations

import numpy as np

STANDIN_NOTE = 'synthetic stand-in (not CIFAR-10)'

# Class k: a grating at angle ANGLES[k] and frequency FREQS[k] (cycles per
# image) over a tint COLOURS[k]. Neighbouring classes share either the
# colour family or the orientation, so colour alone does not separate them.
_ANGLES = np.deg2rad([0, 36, 72, 108, 144, 0, 36, 72, 108, 144])
_FREQS = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0])
_COLOURS = np.array([
    [0.8, 0.3, 0.3], [0.3, 0.8, 0.3], [0.3, 0.3, 0.8], [0.8, 0.8, 0.3],
    [0.3, 0.8, 0.8], [0.8, 0.3, 0.8], [0.6, 0.6, 0.6], [0.8, 0.5, 0.2],
    [0.2, 0.5, 0.8], [0.5, 0.8, 0.2]], np.float32)


def standin_arrays(n: int, seed: int = 0, num_classes: int = 10,
                   size: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """`n` generated images, uint8 (n, size, size, 3), and int64 labels (n,).

  Labels are balanced (n // num_classes each, the rest spread) and shuffled.
  Each image: its class's grating with a random phase and contrast, over its
  class's tint with random brightness, plus pixel noise.
  """
  if not 1 <= num_classes <= len(_ANGLES):
    raise ValueError(f'num_classes must be in 1..{len(_ANGLES)}, got '
                     f'{num_classes}.')
  rng = np.random.default_rng(seed)
  y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
  u = np.linspace(0.0, 1.0, size, endpoint=False, dtype=np.float32)
  yy, xx = np.meshgrid(u, u, indexing='ij')
  angle = _ANGLES[y] + rng.normal(0.0, 0.1, n)
  phase = rng.uniform(0.0, 2 * np.pi, n)
  proj = (np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy)
  wave = np.sin(2 * np.pi * _FREQS[y][:, None, None] * proj +
                phase[:, None, None]).astype(np.float32)  # (n, size, size)
  contrast = rng.uniform(0.15, 0.3, (n, 1, 1, 1)).astype(np.float32)
  bright = rng.uniform(0.7, 1.1, (n, 1, 1, 1)).astype(np.float32)
  x = (_COLOURS[y][:, None, None, :] * bright + contrast * wave[..., None] +
       rng.normal(0.0, 0.08, (n, size, size, 3)).astype(np.float32))
  return (np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8), y


def synthetic_cifar10(n_train: int = 1000, n_test: int = 300, seed: int = 0):
  """The stand-in as a `Dataset`: 32x32x3 in [0, 1], 10 classes.

  Deterministic in (n_train, n_test, seed); train and test are drawn with
  different seeds. Goes through the same validation as a loaded file.
  """
  from modelsteal.data import sources  # pylint: disable=g-import-not-at-top
  xtr, ytr = standin_arrays(n_train, seed=2 * seed)
  xte, yte = standin_arrays(n_test, seed=2 * seed + 1)
  return sources._make(  # pylint: disable=protected-access
      'synthetic_cifar10', xtr, ytr, xte, yte, num_classes=10,
      source=f'generated in memory ({n_train} train / {n_test} test, seed '
      f'{seed})', note=STANDIN_NOTE)
