"""The victim zoo: name -> dataset + architecture + training recipe.

A victim is trained once on its private split (the `victim` half of the
training set, by seed) by the cached `train_model` component, and referred to
everywhere else by a victim reference (see `modelsteal.oracle`).
"""

from __future__ import annotations

import dataclasses

from modelsteal.training import TrainConfig


@dataclasses.dataclass(frozen=True)
class VictimSpec:
  dataset: str
  arch: str
  recipe: TrainConfig
  students: tuple[str, ...]  # default students: same arch + another family


VICTIMS: dict[str, VictimSpec] = {
    'mnist_cnn': VictimSpec('mnist', 'mnist_cnn',
                            TrainConfig(epochs=12, batch_size=128,
                                        learning_rate=2e-3, augment=True),
                            ('mnist_cnn', 'mnist_mlp')),
    'mnist_mlp': VictimSpec('mnist', 'mnist_mlp',
                            TrainConfig(epochs=10, batch_size=128),
                            ('mnist_mlp', 'mnist_cnn')),
    'fashion_mnist_cnn': VictimSpec('fashion_mnist', 'mnist_cnn',
                                    TrainConfig(epochs=15, batch_size=128,
                                                learning_rate=2e-3,
                                                augment=True),
                                    ('mnist_cnn', 'mnist_mlp')),
    'cifar10_cnn': VictimSpec('cifar10', 'cifar10_cnn',
                              TrainConfig(epochs=40, batch_size=128,
                                          learning_rate=2e-3, augment=True,
                                          weight_decay=5e-4),
                              ('cifar10_cnn', 'lenet5')),
}


def get_victim(name: str) -> VictimSpec:
  if name not in VICTIMS:
    raise KeyError(f'unknown victim {name!r}; the zoo has: '
                   f'{", ".join(sorted(VICTIMS))}. Or pass --victim_path.')
  return VICTIMS[name]


def victim_ref_from_model(model_artifact) -> dict:
  """The victim reference of a Model artifact written by `train_model`:
  its SavedModel, or its `.keras` file where it was trained without one
  (`serving=False`)."""
  from modelsteal.export import resolve_saved_model_dir  # pylint: disable=g-import-not-at-top
  path = (model_artifact.keras_path
          if model_artifact.properties.get('serving') is False
          else resolve_saved_model_dir(model_artifact.serving_dir))
  return {'kind': 'local', 'path': path,
          'fingerprint': model_artifact.fingerprint}


def victim_ref_from_path(path: str) -> dict:
  """A victim reference for a user's `.keras` file or SavedModel.

  The fingerprint hashes the file contents, so a changed model is not
  confused with an earlier one in the answer cache.
  """
  import hashlib  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from modelsteal.export import ModelLoadError  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise ModelLoadError(f'--victim_path {path!r}: no such file or directory.')
  h = hashlib.sha256()
  files = ([path] if os.path.isfile(path) else sorted(
      os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs))
  for f in files:
    h.update(os.path.relpath(f, path).encode())
    with open(f, 'rb') as fh:
      for chunk in iter(lambda: fh.read(1 << 20), b''):
        h.update(chunk)
  return {'kind': 'local', 'path': os.path.abspath(path),
          'fingerprint': h.hexdigest()}
