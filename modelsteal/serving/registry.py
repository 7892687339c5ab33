"""Served models: versions found on disk, their signatures, the defence.

TF Serving's layout: a model's base directory holds numbered version
directories, each a SavedModel. `load_servable(base_dir, name)` loads every
version (the highest answers requests that name none) and each version's
signatures. A directory that is itself a SavedModel is served as version 1;
a modelsteal Model artifact (with `serving/`) is looked into.

An output defence (`modelsteal.defenses.output`, e.g. `label`, `topk:3`,
`reverse_sigmoid:1,0.1`) is applied to the `probabilities` output of every
signature that has one, before anything leaves the server; `label` is then
recomputed from what is revealed. With the `label` defence the
`probabilities` output is withheld altogether and the metadata no longer
lists it: clients see a model that only answers labels.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import numpy as np

from modelsteal.defenses.output import parse_output
from modelsteal.errors import ConfigError
from modelsteal.errors import literal
from modelsteal.errors import UserError
from modelsteal.serving.codec import ServingError
from modelsteal.serving.codec import tensor_info

PROBS = 'probabilities'
LABEL = 'label'
# The undefended probabilities, handed to the server's detectors beside the
# visible outputs when `Signature.keep_raw` is set; never sent to a client.
RAW = '__raw_probabilities'


class ServableLoadError(UserError, ValueError):
  """The model directory cannot be served; the message says why."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """What the codec needs of a tensor: TF dtype name and shape (None dims)."""
  name: str  # the graph tensor name, for metadata
  dtype: str
  shape: tuple | None


class Signature:
  """One callable signature of one version, with the defence applied.

  `run(inputs)` takes {input name: array} and returns {output name: array}
  (only the outputs the client may see). It is called from one worker thread
  at a time per signature (the batcher's), and guards the defence's random
  generator with a lock for callers that do not.
  """

  def __init__(self, name: str, fn, defense: str = 'probs', seed: int = 0):
    self.name = name
    self._fn = fn
    args = fn.structured_input_signature[1]
    self.inputs = {k: TensorSpec(f'{name}_{k}:0', v.dtype.name,
                                 None if v.shape.rank is None else
                                 tuple(v.shape.as_list()))
                   for k, v in sorted(args.items())}
    outs = fn.structured_outputs
    if not isinstance(outs, dict):
      outs = {'output_0': outs}
    self._all_outputs = {k: TensorSpec(f'StatefulPartitionedCall:{i}',
                                       v.dtype.name,
                                       None if v.shape.rank is None else
                                       tuple(v.shape.as_list()))
                         for i, (k, v) in enumerate(sorted(outs.items()))}
    self.mode = parse_output(defense, seed=seed, field='defense')
    self.defended = self.mode.spec not in ('probs', 'none')
    if self.defended and PROBS not in self._all_outputs:
      raise ServableLoadError(
          f'signature {name!r} has no "{PROBS}" output (it has '
          f'{sorted(self._all_outputs)}), so the defence {defense!r} cannot '
          'be applied; serve a model exported by modelsteal.export.')
    self.outputs = dict(self._all_outputs)
    if self.mode.spec == 'label':
      self.outputs.pop(PROBS)
      if LABEL not in self.outputs:
        self.outputs[LABEL] = TensorSpec('label', 'int64', (None,))
    self._lock = threading.Lock()
    self.keep_raw = False

  @property
  def has_probs(self) -> bool:
    return PROBS in self._all_outputs

  @property
  def num_classes(self) -> int | None:
    spec = self._all_outputs.get(PROBS)
    if spec is None or spec.shape is None or spec.shape[-1] is None:
      return None
    return int(spec.shape[-1])

  def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    out = self._fn(**{k: tf.constant(v) for k, v in inputs.items()})
    if not isinstance(out, dict):
      out = {'output_0': out}
    out = {k: v.numpy() for k, v in out.items()}
    raw = out.get(PROBS) if self.keep_raw else None
    if self.defended:
      with self._lock:
        p = self.mode.apply(np.asarray(out[PROBS], np.float32),
                            next(iter(inputs.values()), None))
      out[PROBS] = p
      out[LABEL] = p.argmax(axis=1).astype(np.int64)
    visible = {k: out[k] for k in self.outputs}
    if raw is not None:
      visible[RAW] = raw
    return visible

  def signature_def(self) -> dict:
    return {'inputs': {k: tensor_info(v.name, v.dtype, v.shape)
                       for k, v in self.inputs.items()},
            'outputs': {k: tensor_info(v.name, v.dtype, v.shape)
                        for k, v in self.outputs.items()},
            'method_name': 'tensorflow/serving/predict'}

  def warm_up(self) -> None:
    """One call on a batch of zeros, so the first client does not pay for
    loading kernels (TF Serving's warmup, without a warmup file)."""
    try:
      batch = {}
      for k, v in self.inputs.items():
        if v.shape is None or any(d is None for d in v.shape[1:]):
          return
        batch[k] = np.zeros((1, *v.shape[1:]), np.dtype(v.dtype))
      self.run(batch)
    except Exception:  # pylint: disable=broad-except
      pass  # a model that rejects zeros still serves real requests


class Version:
  """One loaded SavedModel version."""

  def __init__(self, number: int, path: str, defense: str, seed: int):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.number = number
    self.path = path
    try:
      self._loaded = tf.saved_model.load(path)
    except Exception as e:  # pylint: disable=broad-except
      raise ServableLoadError(f'{path!r} could not be loaded as a SavedModel: '
                              f'{type(e).__name__}: {str(e)[:300]}') from e
    sigs = {k: v for k, v in self._loaded.signatures.items()
            if not k.startswith('__')}
    if not sigs:
      raise ServableLoadError(f'{path!r} has no signatures to serve; export '
                              'it with modelsteal.export.export_saved_model.')
    self.signatures = {k: Signature(k, v, defense, seed)
                       for k, v in sorted(sigs.items())}

  def signature(self, name: str | None) -> Signature:
    name = name or 'serving_default'
    if name not in self.signatures:
      raise ServingError(400, f'Serving signature name: "{name}" not found in '
                         f'signature def; available: {sorted(self.signatures)}.')
    return self.signatures[name]


def find_versions(base_dir: str) -> dict[int, str]:
  """Version number -> SavedModel directory under a model's base directory."""
  if not os.path.isdir(base_dir):
    raise ServableLoadError(f'{{model_dir}} {literal(repr(base_dir))}: no '
                            'such directory.')
  if os.path.exists(os.path.join(base_dir, 'saved_model.pb')):
    return {1: base_dir}
  versions = {int(d): os.path.join(base_dir, d) for d in os.listdir(base_dir)
              if d.isdigit() and os.path.exists(
                  os.path.join(base_dir, d, 'saved_model.pb'))}
  if versions:
    return versions
  serving = os.path.join(base_dir, 'serving')
  if os.path.isdir(serving):  # a modelsteal Model artifact
    return find_versions(serving)
  raise ServableLoadError(
      f'{base_dir!r} holds no saved_model.pb and no numbered version '
      'directories (<dir>/1/saved_model.pb): not a servable model.')


class Servable:
  """A named model: its loaded versions; requests without one get the
  highest."""

  def __init__(self, name: str, versions: dict[int, Version], defense: str):
    self.name = name
    self.versions = dict(sorted(versions.items()))
    self.defense = defense

  @property
  def latest(self) -> int:
    return max(self.versions)

  def version(self, number: str | int | None) -> Version:
    if number is None:
      return self.versions[self.latest]
    try:
      n = int(number)
    except (TypeError, ValueError):
      raise ServingError(404, f'Servable not found for request: '
                         f'Specific({self.name}, {number}): versions are '
                         'numbers.') from None
    if n not in self.versions:
      raise ServingError(404, f'Servable not found for request: Specific('
                         f'{self.name}, {n}); versions served: '
                         f'{sorted(self.versions)}.')
    return self.versions[n]


def load_servable(base_dir: str, name: str, defense: str = 'probs',
                  seed: int = 0, versions: str = 'all',
                  warm_up: bool = True) -> Servable:
  """Loads a model's versions from `base_dir` (see the module docstring).

  Args:
    base_dir: the model's base directory (or a SavedModel directory).
    name: the model name in URLs (`/v1/models/NAME`).
    defense: output defence spec applied to `probabilities`.
    seed: seed of the defence's randomness (the `noise` defence).
    versions: 'all' loads every numbered version, 'latest' only the highest
      (TF Serving's default policy).
    warm_up: run each signature once on zeros before serving.

  Raises:
    ServableLoadError: nothing servable there; ValueError: a bad defence.
  """
  parse_output(defense, field='defense')  # fail before loading anything
  if versions not in ('all', 'latest'):
    raise ConfigError('versions', "must be 'all' or 'latest', got "
                      f'{literal(repr(versions))}.')
  found = find_versions(base_dir)
  if versions == 'latest':
    found = {max(found): found[max(found)]}
  loaded = {n: Version(n, p, defense, seed) for n, p in found.items()}
  if warm_up:
    for v in loaded.values():
      for s in v.signatures.values():
        s.warm_up()
  return Servable(name, loaded, defense)

