"""Components: train the built-in generator, mine images, sample real ones.

Mined images leave as an ordinary `Examples` artifact (split `train`, and
`pool` / `heldout` when asked), so training, stealing and evaluation take
them like any dataset.
"""

from __future__ import annotations

import os
import time

import numpy as np

from modelsteal import progress
from modelsteal.artifacts import Examples
from modelsteal.artifacts import Model
from modelsteal.artifacts import load_split
from modelsteal.artifacts import save_split
from modelsteal.component import InputArtifact
from modelsteal.component import OutputArtifact
from modelsteal.component import Parameter
from modelsteal.component import component
from modelsteal.component import scratch_dir
from modelsteal.component import workdir as component_workdir
from modelsteal.errors import ConfigError
from modelsteal.errors import literal
from modelsteal.errors import UnknownNameError
from modelsteal.synthetic.base import Generator
from modelsteal.synthetic.base import GeneratorError
from modelsteal.synthetic.base import class_names_for


@component
def train_generator(*, examples: InputArtifact[Examples],
                    generator: OutputArtifact[Model],
                    split: Parameter[str] = 'pool',
                    epochs: Parameter[int] = 30,
                    latent_dim: Parameter[int] = 16,
                    hidden: Parameter[list] = (512, 256),
                    batch_size: Parameter[int] = 128,
                    learning_rate: Parameter[float] = 1e-3,
                    classifier_epochs: Parameter[int] = 3,
                    seed: Parameter[int] = 0,
                    decoder: Parameter[str] = 'mlp',
                    latent: Parameter[str] = 'prior'):
  """Trains the built-in conditional VAE on one split and exports it.

  Trains on `split` only (the attacker's `pool` by default: never the
  victim's half, never the test split the classifiers are scored on);
  resumable per epoch. With `classifier_epochs` > 0 a small MLP is trained
  on the same split and exported as the generator's `classify` signature,
  the generator's own classifier for filtering samples by confidence.
  `decoder` (mlp, conv) and `latent` (prior, or fitted: per-class Gaussians
  fitted to the training images' codes, `cvae.fit_latent`) are the
  generator's design.

  Writes `serving/1/` (the generator SavedModel, see
  `modelsteal.synthetic.cvae`); properties record training time, sampling
  rate (images/s through the exported SavedModel) and the class names.
  """
  from modelsteal.synthetic.cvae import export_generator, fit_latent, train_cvae  # pylint: disable=g-import-not-at-top
  if latent not in ('prior', 'fitted'):
    raise UnknownNameError('generator_latent', ': unknown latent sampling '
                           f'{literal(repr(latent))}; valid: prior, fitted.')
  from modelsteal.synthetic.saved_model import SavedModelGenerator  # pylint: disable=g-import-not-at-top
  data = examples.load_split(split)
  k = int(examples.properties.get('num_classes') or data['y'].max() + 1)
  names = class_names_for(examples.properties.get('name', ''), k)
  started = time.time()
  model = train_cvae(data['x'], data['y'], k, epochs=epochs,
                     latent_dim=latent_dim, hidden=tuple(hidden),
                     batch_size=batch_size, learning_rate=learning_rate,
                     seed=seed, backup_dir=os.path.join(scratch_dir(), 'backup'),
                     desc='[train_generator] conditional VAE', decoder=decoder)
  train_s = time.time() - started
  classifier = None
  if classifier_epochs > 0:
    from modelsteal.training import TrainConfig, train_classifier  # pylint: disable=g-import-not-at-top
    classifier = train_classifier(
        'mnist_mlp', data['x'], data['y'], k,
        TrainConfig(epochs=classifier_epochs), seed=seed,
        desc='[train_generator] its own classifier (for filtering)')
  fitted = fit_latent(model, data['x'], data['y']) if latent == 'fitted' else None
  path = export_generator(model, generator.serving_dir, names,
                          classifier=classifier, fitted_latent=fitted)
  gen = SavedModelGenerator(path)
  gen.generate(0, 10, seed=0)  # first call traces; not part of the rate
  t = time.time()
  n = 2000 if len(data['x']) > 2000 else 200
  gen.generate(0, n, seed=1)
  rate = n / max(time.time() - t, 1e-9)
  generator.properties.update({
      'kind': 'cvae', 'dataset': examples.properties.get('name', ''),
      'split': split, 'train_size': int(len(data['x'])),
      'class_names': list(names), 'image_shape': list(data['x'].shape[1:]),
      'epochs': epochs, 'decoder': decoder, 'latent': latent,
      'train_s': round(train_s, 1),
      'samples_per_s': round(rate, 1), 'has_classifier': classifier is not None,
      # relative: the artifact is renamed into place after this returns
      'saved_model': os.path.relpath(path, generator.uri)})


def generator_ref_from_model(model: Model) -> dict:
  """The reference of a `train_generator` output (fingerprint: the run's)."""
  return {'kind': 'savedmodel', 'path': saved_model_path(model),
          'fingerprint': model.fingerprint}


def saved_model_path(model: Model) -> str:
  """The generator SavedModel directory inside a `train_generator` output."""
  return os.path.join(model.uri, model.properties['saved_model'])


def make_generator(ref: dict, class_names=None) -> Generator:
  """A `Generator` from a reference (`kind` savedmodel or rest)."""
  kind = ref.get('kind')
  if kind == 'savedmodel':
    from modelsteal.synthetic.saved_model import SavedModelGenerator  # pylint: disable=g-import-not-at-top
    return SavedModelGenerator(ref['path'], class_names=class_names,
                               pixels=ref.get('pixels', 'sample'))
  if kind == 'rest':
    from modelsteal.synthetic.rest import RestGenerator  # pylint: disable=g-import-not-at-top
    wd = component_workdir()
    cache = ref.get('cache_dir') or (os.path.join(wd, 'generator_cache', 'rest')
                                     if wd else None)
    return RestGenerator.from_ref(ref, cache_dir=cache)
  raise ValueError(f'unknown generator kind {kind!r}; valid: savedmodel, '
                   'rest.')


def _chunk_seed(seed: int, i: int) -> int:
  return (int(seed) * 1_000_003 + int(i)) & 0x7FFFFFFF


def parse_filter(spec: str) -> float:
  """`none` -> 0.0; `confidence:T` -> T in (0, 1)."""
  spec = (spec or 'none').strip()
  if spec == 'none':
    return 0.0
  if spec.startswith('confidence:'):
    try:
      t = float(spec.split(':', 1)[1])
    except ValueError:
      t = -1.0
    if 0.0 < t < 1.0:
      return t
  raise ConfigError('filter', f'{literal(repr(spec))}: expected none or '
                    'confidence:T with 0 < T < 1 (keep samples the '
                    'generator\'s own classifier gives at least T for their '
                    'class).')


def _cached_chunk(gen, root: str, c: int, i: int, chunk: int, seed: int):
  """(chunk i of class c, images generated fresh for it): read from the
  cache, or generated, scored, written there and read back (what a resumed
  run reads)."""
  path = os.path.join(root, str(c), f's{seed}-c{chunk}-{i}.npz')
  if os.path.exists(path):
    return load_split(path), 0
  x = gen.generate(c, chunk, seed=_chunk_seed(seed, i))
  extra = {}
  scores = gen.scores(x)
  if scores is not None:
    extra['scores'] = np.asarray(scores, np.float32)
  save_split(path, x, np.full(len(x), c, np.int64), **extra)
  return load_split(path), len(x)


def _write_splits(mined, x, y, conf, heldout_fraction: float,
                  seed: int) -> dict:
  """Writes `train` and, with a held-out fraction, a seeded `pool` /
  `heldout` split of it; returns the sizes."""
  mined.save_split('train', x, y, confidence=conf)
  sizes = {'train': int(len(y))}
  if heldout_fraction > 0:
    perm = np.random.default_rng(seed).permutation(len(y))
    n_held = int(round(len(y) * heldout_fraction))
    for split, rows in (('heldout', perm[:n_held]), ('pool', perm[n_held:])):
      rows = np.sort(rows)
      mined.save_split(split, x[rows], y[rows], idx=rows)
      sizes[split] = int(len(rows))
  return sizes


@component
def mine_images(*, mined: OutputArtifact[Examples],
                generator: Parameter[dict],
                per_class: Parameter[int],
                seed: Parameter[int] = 0,
                class_names: Parameter[list] = (),
                min_confidence: Parameter[float] = 0.0,
                heldout_fraction: Parameter[float] = 0.0,
                chunk: Parameter[int] = 250,
                max_tries: Parameter[int] = 20):
  """Mines `per_class` images of every class from a generator.

  Images are asked for in chunks of `chunk` per class, and each chunk is
  written to `<workdir>/generator_cache/<generator>/` the moment it
  arrives: an interrupted run, or a later run asking for more, re-requests
  nothing it already has (a run asking for fewer reads a prefix).

  Args (beyond the artifact):
    generator: a generator reference (`make_generator`).
    per_class: images kept per class (>= 1).
    seed: chunk i of class c is `generate(c, chunk, seed')` with seed'
      derived from (seed, i): reproducible.
    class_names: names for a generator that does not record them.
    min_confidence: 0 keeps every sample; T > 0 keeps those the generator's
      own classifier (`Generator.scores`) gives at least T for the intended
      class, asking for more chunks (at most `max_tries` times the needed
      number) until `per_class` are kept.
    heldout_fraction: > 0 also writes splits `pool` and `heldout` (a
      seeded split of `train`) for use as stealing queries.

  Writes split `train`: `x` float32 (N, H, W, C), `y` the intended class,
  `confidence` (when scored). Properties: the class names, the generator,
  the filter, how many images were generated and how many came fresh.
  """
  if per_class < 1:
    raise ConfigError('per_class', f'must be at least 1, got {per_class}.')
  gen = make_generator(generator, class_names=list(class_names) or None)
  names = gen.class_names
  wd = component_workdir()
  # The cache is per generator and per pixel mode (sampled or mean images
  # of one SavedModel differ).
  key = generator['fingerprint'][:16] + (
      '-' + generator['pixels'] if generator.get('pixels', 'sample') !=
      'sample' else '')
  root = (os.path.join(wd, 'generator_cache', key)
          if wd else os.path.join(scratch_dir(), 'generator_cache'))
  needed_chunks = -(-per_class // chunk)
  xs, ys, confs = [], [], []
  fresh = total = 0
  with progress.Progress(per_class * len(names), '[mine_images] mining',
                         'image') as bar:
    for c in range(len(names)):
      kept, i = 0, 0
      while kept < per_class:
        if i >= needed_chunks * max(1, max_tries if min_confidence else 1):
          raise GeneratorError(
              f'only {kept} of the {i * chunk} images generated for class '
              f'{names[c]!r} reach confidence {min_confidence}; lower the '
              'filter threshold or use {filter}=none.')
        part, new = _cached_chunk(gen, root, c, i, chunk, seed)
        fresh += new
        total += len(part['x'])
        conf = (part['scores'][:, c] if 'scores' in part else
                np.full(len(part['x']), np.nan, np.float32))
        if min_confidence > 0:
          if 'scores' not in part:
            raise GeneratorError(
                f'{gen.source} has no classifier of its own, so samples '
                'cannot be filtered by confidence; use {filter}=none.')
          keep = np.flatnonzero(conf >= min_confidence)
        else:
          keep = np.arange(len(part['x']))
        keep = keep[:per_class - kept]
        xs.append(part['x'][keep])
        ys.append(part['y'][keep])
        confs.append(conf[keep])
        kept += len(keep)
        bar.update(len(keep))
        i += 1
  x, y, conf = np.concatenate(xs), np.concatenate(ys), np.concatenate(confs)
  sizes = _write_splits(mined, x, y, conf, heldout_fraction, seed)
  mined.properties.update({
      'name': f'generated:{generator.get("name") or gen.source}',
      'source': gen.source, 'num_classes': len(names),
      'class_names': list(names), 'shape': list(gen.image_shape),
      'per_class': int(per_class), 'generator': generator,
      'filter': (f'confidence:{min_confidence:g}' if min_confidence
                 else 'none'),
      'images_generated': int(total), 'images_fresh': int(fresh),
      'sizes': sizes})


@component
def sample_per_class(*, examples: InputArtifact[Examples],
                     sampled: OutputArtifact[Examples],
                     per_class: Parameter[int],
                     split: Parameter[str] = 'pool',
                     seed: Parameter[int] = 0):
  """`per_class` real images of each class from one split (a seeded,
  class-balanced sample): the real-data baseline of the same size as the
  mined set. Writes split `train`.
  """
  from modelsteal.data import DataError  # pylint: disable=g-import-not-at-top
  data = examples.load_split(split)
  k = int(examples.properties.get('num_classes') or data['y'].max() + 1)
  perm = np.random.default_rng(seed).permutation(len(data['y']))
  rows = []
  for c in range(k):
    mine = perm[data['y'][perm] == c][:per_class]
    if len(mine) < per_class:
      raise DataError(f'the {split!r} split has only {len(mine)} real images '
                      f'of class {c}; {{per_class}}={per_class} needs more '
                      'data.')
    rows.append(mine)
  rows = np.sort(np.concatenate(rows))
  sampled.save_split('train', data['x'][rows], data['y'][rows], idx=rows)
  sampled.properties.update({**examples.properties, 'per_class': per_class,
                             'num_classes': k,
                             'sizes': {'train': int(len(rows))}})
