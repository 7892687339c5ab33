"""Figures: a grid of generated samples per class, accuracy against
`per_class` (real vs generated training data)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from modelsteal.evaluation import _pyplot
from modelsteal.evaluation import _save_figure


def plot_sample_grid(images_by_class: list[np.ndarray], class_names,
                     path: str, title: str = '') -> str:
  """One row per class: `images_by_class[c]` float32 (n, H, W, C)."""
  plt = _pyplot()
  rows = len(images_by_class)
  cols = max(1, max(len(x) for x in images_by_class))
  fig, axes = plt.subplots(rows, cols, figsize=(0.8 * cols + 1.2, 0.8 * rows),
                           squeeze=False)
  for r, x in enumerate(images_by_class):
    for c in range(cols):
      ax = axes[r][c]
      ax.set_xticks([])
      ax.set_yticks([])
      for s in ax.spines.values():
        s.set_visible(False)
      if c < len(x):
        img = x[c]
        if img.shape[-1] == 1:
          ax.imshow(img[..., 0], cmap='gray', vmin=0, vmax=1)
        else:
          ax.imshow(np.clip(img, 0, 1))
      if c == 0:
        ax.set_ylabel(str(class_names[r])[:12], rotation=0, ha='right',
                      va='center', fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  return _save_figure(fig, path)


def plot_per_class_sweep(df: pd.DataFrame, path: str, title: str = '') -> str:
  """Real-test accuracy against images per class, one colour per
  classifier, solid: real training images, dashed: generated ones.

  `df` has columns classifier, data ('real' / 'generated'), per_class,
  accuracy (fraction).
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  colours = plt.cm.tab10.colors
  for i, (clf, part) in enumerate(df.groupby('classifier', sort=False)):
    for data, style in (('real', '-'), ('generated', '--')):
      d = part[part['data'] == data].sort_values('per_class')
      if len(d):
        ax.plot(d['per_class'], 100 * d['accuracy'], style, marker='o',
                color=colours[i % 10], label=f'{clf} ({data})')
  ax.set_xscale('log')
  ax.set_xlabel('training images per class')
  ax.set_ylabel('real test accuracy (%)')
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  if title:
    ax.set_title(title, fontsize=9)
  return _save_figure(fig, path)
