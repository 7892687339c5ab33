"""Artifacts: a directory (`uri`) plus a small JSON of properties.

The names follow TFX's standard artifact types (`tfx/types/standard_artifacts.py`)
so that a reader who knows TFX knows what each holds; there is no ML-metadata
store behind them, only the directory and `artifact.json` inside it.

Layouts written by this package:

* `Examples`: one `<split>.npz` per split with `x` (N, H, W, C) and `y` (N,),
  plus optional extra arrays (`answers` (N, K) float32 for labeled queries,
  `idx` (N,) int64 for each row's index in the source split). `x` is stored as
  uint8 when every pixel is a multiple of 1/255 (property `encoding`), float32
  in [0, 1] otherwise; `load_split` always returns float32 in [0, 1].
* `Model`: `model.keras` (training state) and `serving/<version>/` (SavedModel
  with a `serving_default` signature returning `probabilities` and `label`).
* `Evaluation`: `results.csv` / `results.json` and plots.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from typing import Any

import numpy as np

from modelsteal.errors import UserError


class ArtifactError(UserError, RuntimeError):
  """An artifact is missing, incomplete or corrupt."""


@dataclasses.dataclass
class Artifact:
  """A directory with a JSON of properties. Subclasses only name the type."""

  uri: str
  properties: dict[str, Any] = dataclasses.field(default_factory=dict)
  fingerprint: str = ''

  TYPE_NAME = 'Artifact'

  @property
  def type_name(self) -> str:
    return type(self).TYPE_NAME

  def path(self, *parts: str) -> str:
    return os.path.join(self.uri, *parts)

  def save_properties(self) -> None:
    os.makedirs(self.uri, exist_ok=True)
    with open(self.path('artifact.json'), 'w') as f:
      json.dump({'type': self.type_name, 'fingerprint': self.fingerprint,
                 'properties': self.properties}, f, indent=1, default=str)

  @classmethod
  def load(cls, uri: str) -> 'Artifact':
    """Opens an artifact directory written by this package."""
    meta_path = os.path.join(uri, 'artifact.json')
    if not os.path.isdir(uri):
      raise ArtifactError(f'{uri!r} is not a directory; expected a {cls.TYPE_NAME} '
                          'artifact written by modelsteal.')
    if not os.path.exists(meta_path):
      raise ArtifactError(f'{uri!r} has no artifact.json: not a modelsteal '
                          'artifact, or a run that never finished.')
    try:
      with open(meta_path) as f:
        meta = json.load(f)
    except (OSError, ValueError) as e:
      raise ArtifactError(f'{meta_path!r} is unreadable ({e}); delete the run '
                          'directory and run again.') from e
    if cls is not Artifact and meta.get('type') != cls.TYPE_NAME:
      raise ArtifactError(f'{uri!r} holds a {meta.get("type")} artifact, '
                          f'expected {cls.TYPE_NAME}.')
    return cls(uri=uri, properties=meta.get('properties', {}),
               fingerprint=meta.get('fingerprint', ''))


class Examples(Artifact):
  TYPE_NAME = 'Examples'

  @property
  def splits(self) -> list[str]:
    return sorted(f[:-4] for f in os.listdir(self.uri) if f.endswith('.npz'))

  def save_split(self, split: str, x: np.ndarray, y: np.ndarray,
                 **extra: np.ndarray) -> None:
    """Writes one split; pixels as uint8 when that loses nothing."""
    save_split(self.path(f'{split}.npz'), x, y, **extra)

  def load_split(self, split: str) -> dict[str, np.ndarray]:
    path = self.path(f'{split}.npz')
    if not os.path.exists(path):
      raise ArtifactError(f'{self.uri!r} has no split {split!r}; it has '
                          f'{self.splits}.')
    return load_split(path)


class Model(Artifact):
  TYPE_NAME = 'Model'

  @property
  def keras_path(self) -> str:
    return self.path('model.keras')

  @property
  def serving_dir(self) -> str:
    return self.path('serving')

  def load_keras(self):
    import keras  # pylint: disable=g-import-not-at-top
    return keras.models.load_model(self.keras_path, compile=False)


class Evaluation(Artifact):
  TYPE_NAME = 'Evaluation'


def _is_uint8_exact(x: np.ndarray) -> bool:
  if x.dtype == np.uint8:
    return True
  scaled = x * 255.0
  return bool(np.all(np.abs(scaled - np.round(scaled)) < 1e-3))


def save_split(path: str, x: np.ndarray, y: np.ndarray, **extra) -> None:
  x = np.asarray(x)
  if x.dtype != np.uint8 and _is_uint8_exact(x):
    x = np.round(np.asarray(x, np.float32) * 255.0).astype(np.uint8)
  elif x.dtype != np.uint8:
    x = x.astype(np.float32)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez(tmp, x=x, y=np.asarray(y), **extra)
  os.replace(tmp, path)


def load_split(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path) as z:
      out = {k: z[k] for k in z.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise ArtifactError(f'{path!r} is corrupt or truncated ({e}); delete its '
                        'run directory and run again.') from e
  if 'x' in out and out['x'].dtype == np.uint8:
    out['x'] = out['x'].astype(np.float32) / 255.0
  return out
