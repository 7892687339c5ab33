"""What every UQ student shares: the spec, one shape of answer, save/load,
probe logging during training.

A UQ student answers `sample_logits(x) -> (S, N, K)`: S members (deep
ensemble, SWAG weight samples), S stochastic passes (MC dropout, Bayes by
backprop) or S fast-weight members (BatchEnsemble). Combining (the mean of
the softmaxes), diversity, export and BALD/QBC are written once against that.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import numpy as np

from modelsteal.errors import UserError


class UQSpecError(UserError, ValueError):
  """A UQ student spec a user wrote that cannot be built."""


@dataclasses.dataclass(frozen=True)
class UQSpec:
  """`METHOD:ARCH[+ARCH...][:key=value...]`, e.g. `ensemble:mnist_cnn:members=5`.

  `archs` cycles over the members of a (heterogeneous) deep ensemble; the
  other methods take one base architecture.
  """
  method: str
  archs: tuple[str, ...]
  options: tuple[tuple[str, float], ...]  # sorted, defaults filled in

  @property
  def opts(self) -> dict:
    return dict(self.options)

  def __str__(self) -> str:
    """Canonical: options that differ from the defaults, sorted."""
    from modelsteal.uq import UQ_METHODS  # pylint: disable=g-import-not-at-top
    defaults = UQ_METHODS[self.method].OPTIONS
    opts = ''.join(f':{k}={_fmt(v)}' for k, v in self.options
                   if float(v) != float(defaults[k]))
    return f'{self.method}:{"+".join(self.archs)}{opts}'


def _fmt(v) -> str:
  return str(int(v)) if float(v).is_integer() else repr(float(v))


def is_uq_spec(text: str) -> bool:
  return ':' in text


def parse_spec(text: str) -> UQSpec:
  """Parses and validates a spec; errors name what to write instead."""
  from modelsteal.models import ARCHITECTURES  # pylint: disable=g-import-not-at-top
  from modelsteal.uq import UQ_METHODS  # pylint: disable=g-import-not-at-top
  parts = text.strip().split(':')
  if len(parts) < 2 or not parts[1]:
    raise UQSpecError(f'UQ student {text!r}: write METHOD:ARCH[:key=value], '
                      'e.g. ensemble:mnist_cnn:members=5.')
  method, archs = parts[0], tuple(a for a in parts[1].split('+'))
  if method not in UQ_METHODS:
    raise UQSpecError(f'unknown UQ method {method!r} in {text!r}; valid: '
                      f'{", ".join(sorted(UQ_METHODS))}.')
  for a in archs:
    if a not in ARCHITECTURES:
      raise UQSpecError(f'unknown base architecture {a!r} in {text!r}; '
                        f'valid: {", ".join(sorted(ARCHITECTURES))}.')
  defaults = UQ_METHODS[method].OPTIONS
  if len(archs) > 1 and method != 'ensemble':
    raise UQSpecError(f'{text!r}: only ensemble takes several architectures '
                      '(ARCH+ARCH); the other methods take one.')
  opts = dict(defaults)
  for kv in parts[2:]:
    k, eq, v = kv.partition('=')
    if not eq or k not in defaults:
      raise UQSpecError(f'{text!r}: unknown option {kv!r} for {method}; valid '
                        f'options (with defaults): '
                        f'{", ".join(f"{a}={_fmt(b)}" for a, b in defaults.items())}.')
    try:
      opts[k] = float(v)
    except ValueError:
      raise UQSpecError(f'{text!r}: option {k} needs a number, got {v!r}.'
                        ) from None
  UQ_METHODS[method].check(opts, text)
  return UQSpec(method, archs, tuple(sorted(opts.items())))


def check_count(opts: dict, key: str, text: str, lo: int = 1,
                hi: int = 100) -> None:
  v = opts[key]
  if not float(v).is_integer() or not lo <= v <= hi:
    raise UQSpecError(f'{text!r}: {key} must be an integer in [{lo}, {hi}], '
                      f'got {_fmt(v)}.')


def check_fraction(opts: dict, key: str, text: str, lo: float = 0.0,
                   hi: float = 1.0) -> None:
  if not lo <= opts[key] < hi:
    raise UQSpecError(f'{text!r}: {key} must be in [{lo}, {hi}), got '
                      f'{_fmt(opts[key])}.')


class UQStudent:
  """A trained UQ student: Keras models plus how to sample them.

  Attributes:
    spec: the `UQSpec`.
    models: the Keras models (members, or the one stochastic model).
    num_classes: K.
    seed: the sampling seed (stochastic methods) fixed at training.
  """

  def __init__(self, spec: UQSpec, models: list, num_classes: int, seed: int,
               input_shape: tuple):
    self.spec = spec
    self.models = list(models)
    self.num_classes = int(num_classes)
    self.seed = int(seed)
    self.input_shape = tuple(input_shape)
    self._probs_fn = None

  @property
  def method(self):
    from modelsteal.uq import UQ_METHODS  # pylint: disable=g-import-not-at-top
    return UQ_METHODS[self.spec.method]

  @property
  def num_samples(self) -> int:
    return self.method.num_samples(self.spec)

  def sample_logits(self, x):
    """x float32 (N, H, W, C) -> logits (S, N, K); eager or inside tf.function."""
    return self.method.sample_logits(self, x)

  def sample_probs(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Softmax of every sample, float32 (S, N, K)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if getattr(self, '_probs_fn', None) is None:
      # Traced once (the S samples unrolled, as in the export): graph mode
      # is much faster than S eager passes per batch.
      self._probs_fn = tf.function(
          lambda b: tf.nn.softmax(self.sample_logits(b), axis=-1),
          input_signature=[tf.TensorSpec([None, *self.input_shape],
                                         tf.float32)])
      # One trace per student by design; TF counts the traces of every
      # student's function (one Python code object) together and would log
      # "triggered tf.function retracing" in a study of several students.
      self._probs_fn._omit_frequent_tracing_warning = True  # pylint: disable=protected-access
    x = np.asarray(x, np.float32)
    outs = [self._probs_fn(tf.constant(x[i:i + batch_size])).numpy()
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=1).astype(np.float32)

  def predict_probs(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The combined prediction: the mean of the samples' softmaxes (N, K)."""
    return self.sample_probs(x, batch_size).mean(0)

  def save(self, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for i, m in enumerate(self.models):
      # Plain arrays in `model.weights` order (fixed by the architecture):
      # Keras' path-keyed .weights.h5 does not round-trip the nested
      # BatchEnsemble model.
      np.savez(os.path.join(directory, f'model_{i}.npz'),
               *[w.numpy() for w in m.weights])
    with open(os.path.join(directory, 'uq.json'), 'w') as f:
      json.dump({'spec': str(self.spec), 'num_classes': self.num_classes,
                 'seed': self.seed, 'input_shape': list(self.input_shape)},
                f, indent=1)


def load_student(directory: str) -> UQStudent:
  """Rebuilds a student saved by `UQStudent.save` (architecture + weights)."""
  from modelsteal.uq import UQ_METHODS  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, 'uq.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{directory!r} has no uq.json: not a saved UQ '
                            'student.')
  with open(path) as f:
    meta = json.load(f)
  spec = parse_spec(meta['spec'])
  models = UQ_METHODS[spec.method].build(spec, tuple(meta['input_shape']),
                                         meta['num_classes'], meta['seed'])
  for i, m in enumerate(models):
    with np.load(os.path.join(directory, f'model_{i}.npz')) as z:
      arrays = [z[f'arr_{j}'] for j in range(len(z.files))]
    if len(arrays) != len(m.weights) or any(
        a.shape != tuple(w.shape) for a, w in zip(arrays, m.weights)):
      from modelsteal.export import ModelLoadError  # pylint: disable=g-import-not-at-top
      raise ModelLoadError(f'{directory!r}: the saved weights do not fit '
                           f'{meta["spec"]}; the student was saved by '
                           'another version of modelsteal.')
    for w, a in zip(m.weights, arrays):
      w.assign(a)
  return UQStudent(spec, models, meta['num_classes'], meta['seed'],
                   tuple(meta['input_shape']))


@dataclasses.dataclass
class FitContext:
  """What a method's `fit` gets besides data and recipe.

  Attributes:
    scratch: a directory that survives an interruption (resume state).
    probe_x: fixed probe images (P, H, W, C) for the diversity trace.
    probe_every: log the trace every this many optimizer steps.
    strategy: tf.distribute strategy (None: current).
    verbose: `train_classifier`'s verbosity (None: its default).
  """
  scratch: str
  probe_x: np.ndarray | None = None
  probe_every: int = 50
  strategy: object = None
  verbose: int | None = None


def probe_logger(ctx: FitContext, probs_fn: Callable[..., np.ndarray],
                 name: str, step_offset: int = 0):
  """A Keras callback recording `probs_fn(model)` (S, P, K) every
  `probe_every` optimizer steps (plus `step_offset`), persisted to the scratch dir each epoch so that a resumed
  run keeps the trace of the epochs it does not redo.

  `.records` is a list of (step, probs float16 (S, P, K)).
  """
  import keras  # pylint: disable=g-import-not-at-top
  path = os.path.join(ctx.scratch, f'trace_{name}.npz')

  class ProbeLogger(keras.callbacks.Callback):

    def __init__(self):
      super().__init__()
      self.records: list[tuple[int, np.ndarray]] = []

    def _step(self) -> int:
      return int(self.model.optimizer.iterations.numpy()) + step_offset

    def restore(self, upto: int | None = None) -> None:
      """Loads the saved trace (of a resumed run), up to step `upto`."""
      if os.path.exists(path):
        with np.load(path) as z:
          self.records = [(int(s), z[f'p{i}']) for i, s in
                          enumerate(z['steps']) if upto is None or s <= upto]

    def on_train_begin(self, logs=None):
      self.restore(self._step())  # resumed: what the restored epochs logged
      if not self.records or self.records[-1][0] < self._step():
        self._log()

    def _log(self):
      self.records.append((self._step(),
                           np.asarray(probs_fn(self.model), np.float16)))

    def on_train_batch_end(self, batch, logs=None):
      if (self._step() - step_offset) % ctx.probe_every == 0:
        self._log()

    def on_epoch_end(self, epoch, logs=None):
      self.save()

    def on_train_end(self, logs=None):
      if not self.records or self.records[-1][0] < self._step():
        self._log()  # the trained state, also between two logging steps
      self.save()

    def save(self):
      if self.records:
        np.savez(path + '.tmp.npz', steps=[s for s, _ in self.records],
                 **{f'p{i}': p for i, (_, p) in enumerate(self.records)})
        os.replace(path + '.tmp.npz', path)

  return ProbeLogger() if ctx.probe_x is not None else None


def trace_frame(records: list[tuple[int, np.ndarray]],
                probe_y: np.ndarray | None = None):
  """(step, probs (S, P, K)) records -> DataFrame of diversity per step."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal.uq.diversity import diversity  # pylint: disable=g-import-not-at-top
  rows = []
  for step, probs in records:
    probs = np.asarray(probs, np.float32)
    row = {'step': int(step), 'samples': int(probs.shape[0]),
           **diversity(probs)}
    if probe_y is not None:
      row['probe_accuracy'] = float((probs.mean(0).argmax(1) == probe_y).mean())
    rows.append(row)
  return pd.DataFrame(rows)


def merge_member_traces(traces: list[list[tuple[int, np.ndarray]]]):
  """Per-member (1, P, K) traces -> one trace of (M, P, K) at common steps."""
  common = set.intersection(*[{s for s, _ in t} for t in traces])
  by_step = [dict(t) for t in traces]
  return [(s, np.concatenate([d[s] for d in by_step])) for s in sorted(common)]


def softmax(logits) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.nn.softmax(logits, axis=-1).numpy()


def stack_members(student: UQStudent, x):
  """Deep ensemble / SWAG: one forward pass per member model."""
  from keras import ops  # pylint: disable=g-import-not-at-top
  return ops.stack([m(x, training=False) for m in student.models])


def stack_contexts(model, seed: int, samples: int, x):
  """MC dropout / Bayes by backprop: `samples` passes, each in its context."""
  from keras import ops  # pylint: disable=g-import-not-at-top
  from modelsteal.uq.layers import sample_context  # pylint: disable=g-import-not-at-top
  outs = []
  for t in range(samples):
    with sample_context(seed, t):
      outs.append(model(x, training=False))
  return ops.stack(outs)


def build_seeded(build_fn: Callable[[], object], seed: int, strategy=None):
  """Builds a model under `strategy` after seeding Keras (reproducible init)."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  with (strategy or tf.distribute.get_strategy()).scope():
    return build_fn()


def clone_replacing(model, replace: Callable):
  """`keras.models.clone_model` where `replace(layer, index)` may return a
  new layer for an old one (or None to clone it unchanged)."""
  import keras  # pylint: disable=g-import-not-at-top
  counter = [0]

  def clone(layer):
    counter[0] += 1
    new = replace(layer, counter[0])
    return new if new is not None else layer.__class__.from_config(
        layer.get_config())

  return keras.models.clone_model(model, clone_function=clone)
