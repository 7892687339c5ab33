"""The victim zoo: name -> dataset + architecture + training recipe.

A victim is trained once on its private split (the `victim` half of the
training set, by seed) by the cached `train_model` component, and referred to
everywhere else by a victim reference (see `modelsteal.oracle`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from modelsteal.errors import UnknownNameError
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
    # CIFAR-10 recipes: BUILD_NOTES.md, "Stealing on CIFAR-10".
    'cifar10_cnn': VictimSpec('cifar10', 'cifar10_cnn',
                              TrainConfig(epochs=60, batch_size=128,
                                          learning_rate=3e-3,
                                          augment='crop_flip',
                                          weight_decay=0.05,
                                          label_smoothing=0.1,
                                          warmup_epochs=2,
                                          precision='mixed_bfloat16'),
                              ('cifar10_cnn', 'resnet20', 'lenet5')),
    'cifar10_resnet20': VictimSpec('cifar10', 'resnet20',
                                   TrainConfig(epochs=80, batch_size=128,
                                               learning_rate=0.1,
                                               optimizer='sgd',
                                               augment='crop_flip',
                                               weight_decay=5e-4,
                                               warmup_epochs=2,
                                               precision='mixed_bfloat16'),
                                   ('resnet20', 'cifar10_cnn', 'lenet5')),
}


def get_victim(name: str) -> VictimSpec:
  if name not in VICTIMS:
    raise UnknownNameError('', f'unknown victim {name!r}; the zoo has: '
                           f'{", ".join(sorted(VICTIMS))}. Or pass '
                           '{victim_path}.')
  return VICTIMS[name]


@dataclasses.dataclass(frozen=True)
class VictimRef:
  """Where a victim (or a student scored like one) answers from.

  Attributes:
    kind: `local` (a SavedModel or `.keras` file in this process), `rest`
      (a TF-Serving-style REST endpoint) or `grpc` (TF Serving's gRPC API).
    location: the SavedModel directory or `.keras` path, the model URL, or
      the gRPC address HOST:PORT/NAME.
    fingerprint: names the victim in the answer cache; changes when the
      model does.
    details: what the endpoint said of itself (REST: version, num_classes,
      signature_name, input_shape).
  """
  kind: str
  location: str
  fingerprint: str
  details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def path(self) -> str | None:
    return self.location if self.kind == 'local' else None

  @property
  def url(self) -> str | None:
    return self.location if self.kind == 'rest' else None

  @property
  def address(self) -> str | None:
    return self.location if self.kind == 'grpc' else None

  def as_param(self) -> dict:
    """The JSON form components take as a parameter (and fingerprint)."""
    key = {'local': 'path', 'grpc': 'address'}.get(self.kind, 'url')
    return {'kind': self.kind, key: self.location,
            'fingerprint': self.fingerprint, **self.details}

  @classmethod
  def coerce(cls, ref: 'VictimRef | Mapping[str, Any]') -> 'VictimRef':
    """`ref` itself, or the VictimRef of its JSON form (a component's
    parameter as recorded)."""
    return ref if isinstance(ref, cls) else cls.from_param(ref)

  @classmethod
  def from_param(cls, ref: Mapping[str, Any]) -> 'VictimRef':
    rest = {k: v for k, v in ref.items()
            if k not in ('kind', 'path', 'url', 'address', 'fingerprint')}
    return cls(ref['kind'], ref.get('path') or ref.get('url') or
               ref['address'], ref['fingerprint'], rest)


def victim_ref_from_model(model_artifact) -> VictimRef:
  """The victim reference of a Model artifact written by `train_model`:
  its SavedModel, or its `.keras` file where it was trained without one
  (`serving=False`)."""
  from modelsteal.export import resolve_saved_model_dir  # pylint: disable=g-import-not-at-top
  path = (model_artifact.keras_path
          if model_artifact.properties.get('serving') is False
          else resolve_saved_model_dir(model_artifact.serving_dir))
  return VictimRef('local', path, model_artifact.fingerprint)


def victim_ref_from_path(path: str) -> VictimRef:
  """A victim reference for a user's `.keras` file or SavedModel.

  The fingerprint hashes the file contents, so a changed model is not
  confused with an earlier one in the answer cache.
  """
  import hashlib  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from modelsteal.export import ModelLoadError  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise ModelLoadError(f'{{victim_path}} {path!r}: no such file or '
                         'directory.')
  h = hashlib.sha256()
  files = ([path] if os.path.isfile(path) else sorted(
      os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs))
  for f in files:
    h.update(os.path.relpath(f, path).encode())
    with open(f, 'rb') as fh:
      for chunk in iter(lambda: fh.read(1 << 20), b''):
        h.update(chunk)
  return VictimRef('local', os.path.abspath(path), h.hexdigest())
