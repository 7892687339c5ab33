"""The importer (external data -> Examples) and the victim/attacker split."""

from __future__ import annotations

import os
import shutil

import numpy as np

from modelsteal.artifacts import Examples
from modelsteal.component import InputArtifact
from modelsteal.component import OutputArtifact
from modelsteal.component import Parameter
from modelsteal.component import component
from modelsteal.errors import ConfigError
from modelsteal.data.sources import DataError
from modelsteal.data.sources import Dataset


def import_dataset(dataset: Dataset, workdir: str,
                   train_idx: np.ndarray | None = None) -> Examples:
  """Writes `dataset` as an Examples artifact keyed by its content (TFX Importer).

  `train_idx`, if given, is stored with the train split as `idx` (each row's
  index in the source training split, as NTGA exports carry it).

  Reused when the same content was imported before; written to a temporary
  directory and renamed, so an interrupted import is never taken for finished.
  """
  from modelsteal import distribute  # pylint: disable=g-import-not-at-top
  workdir = distribute.worker_workdir(workdir)  # chief-only writes
  fp = dataset.fingerprint
  if train_idx is not None:
    import hashlib  # pylint: disable=g-import-not-at-top
    fp = hashlib.sha256((fp + hashlib.sha256(np.asarray(
        train_idx, np.int64).tobytes()).hexdigest()).encode()).hexdigest()
  uri = os.path.join(workdir, 'import_dataset', fp[:16])
  if os.path.exists(os.path.join(uri, 'artifact.json')):
    art = Examples.load(uri)
    if art.properties.get('note', '') != dataset.note:
      # Imported before notes existed: same content, so keep it and add the
      # note (written aside, then renamed: never a half-written JSON).
      art.properties['note'] = dataset.note
      art.properties['source'] = dataset.source
      tmp = Examples(uri=f'{uri}.props-{os.getpid()}', properties=art.properties,
                     fingerprint=art.fingerprint)
      tmp.save_properties()
      os.replace(tmp.path('artifact.json'), art.path('artifact.json'))
      os.rmdir(tmp.uri)
    return art
  tmp = f'{uri}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  art = Examples(uri=tmp, fingerprint=fp, properties={
      'name': dataset.name, 'source': dataset.source, 'note': dataset.note,
      'num_classes': dataset.num_classes, 'shape': list(dataset.shape)})
  extra = {} if train_idx is None else {'idx': np.asarray(train_idx, np.int64)}
  art.save_split('train', dataset.x_train, dataset.y_train, **extra)
  art.save_split('test', dataset.x_test, dataset.y_test)
  art.save_properties()
  if os.path.exists(uri):
    shutil.rmtree(uri)
  os.rename(tmp, uri)
  art.uri = uri
  return art


def load_poisoned(path: str, workdir: str) -> Examples:
  """A poisoned training set as an Examples artifact (splits `train`, `test`).

  Takes the NTGA pipeline's artifact directory (or the run directory that
  holds it as `poisoned/`), or an `.npz` in the exported form (`x_train`,
  `y_train`, `x_test`, `y_test`, optional `idx_train`), which is imported
  like any dataset (content-keyed, validated, atomic).

  Raises:
    DataError / ArtifactError: a path that is neither.
  """
  from modelsteal.data.sources import load_dataset  # pylint: disable=g-import-not-at-top
  if not path:
    raise ConfigError('poisoned', 'is required: an NTGA artifact directory '
                      'or an exported .npz.')
  if os.path.isdir(path):
    for cand in (path, os.path.join(path, 'poisoned')):
      if os.path.exists(os.path.join(cand, 'artifact.json')):
        return Examples.load(cand)
    raise DataError(f'--poisoned {path!r}: no artifact.json; pass an Examples '
                    'artifact directory or an .npz.')
  ds = load_dataset(path)
  with np.load(path) as z:
    idx = z['idx_train'] if 'idx_train' in z.files else None
  return import_dataset(ds, workdir, train_idx=idx)


def split_indices(n: int, seed: int, victim_fraction: float,
                  heldout_fraction: float, min_size: int) -> dict[str, np.ndarray]:
  """Deterministic disjoint index sets `victim`, `pool`, `heldout`.

  The training split is permuted with `seed`; the first `victim_fraction` is
  the victim's private data, the rest the attacker's, of which
  `heldout_fraction` is kept back to measure fidelity on attacker-distribution
  data that was never queried for training.
  """
  if not 0.0 <= victim_fraction < 1.0:
    raise DataError(f'victim_fraction must be in [0, 1), got {victim_fraction}.')
  perm = np.random.default_rng(seed).permutation(n)
  n_victim = int(round(n * victim_fraction))
  attacker = perm[n_victim:]
  n_heldout = int(round(len(attacker) * heldout_fraction))
  out = {'pool': attacker[n_heldout:], 'heldout': attacker[:n_heldout]}
  if victim_fraction > 0:
    out['victim'] = perm[:n_victim]
  for k, v in out.items():
    if len(v) < min_size:
      raise DataError(
          f'the {k!r} split has {len(v)} examples (of {n} training examples); '
          f'at least {min_size} are needed. Use more data or change the '
          'fractions.')
  return out


@component
def split_data(*, examples: InputArtifact[Examples],
               splits: OutputArtifact[Examples],
               seed: Parameter[int] = 0,
               victim_fraction: Parameter[float] = 0.5,
               heldout_fraction: Parameter[float] = 0.1,
               min_size: Parameter[int] = 10):
  """Splits a training set into the victim's half and the attacker's.

  Writes splits `victim` (absent when victim_fraction is 0), `pool` (the
  attacker's query pool), `heldout` (attacker-distribution data never queried)
  and `test` (copied; never queried for training). Each split carries `idx`,
  the rows' indices in the source training split.
  """
  train = examples.load_split('train')
  test = examples.load_split('test')
  idx = split_indices(len(train['y']), seed, victim_fraction, heldout_fraction,
                      min_size)
  for name, rows in idx.items():
    splits.save_split(name, train['x'][rows], train['y'][rows], idx=rows)
  splits.save_split('test', test['x'], test['y'],
                    idx=np.arange(len(test['y'])))
  splits.properties.update(examples.properties)
  splits.properties['sizes'] = {k: int(len(v)) for k, v in idx.items()}
  splits.properties['sizes']['test'] = int(len(test['y']))


def make_tf_dataset(x: np.ndarray, y: np.ndarray | None = None,
                    batch_size: int = 128, shuffle: bool = False,
                    seed: int = 0, augment=None, repeat: bool = False,
                    drop_remainder: bool = False):
  """A batched, prefetched tf.data pipeline over in-memory arrays.

  Args:
    x: float32 (N, H, W, C).
    y: labels (N,) or targets (N, K); None for inference.
    batch_size: batch size.
    shuffle: reshuffle each epoch with `seed`.
    seed: shuffle seed.
    augment: optional function (images batch) -> images batch, applied after
      batching (vectorised, cheaper than per example).
    repeat: repeat forever.
    drop_remainder: drop a partial last batch (static batch shapes).

  Under a multi-worker strategy each worker keeps its share of every batch
  (sharding by element, `AutoShardPolicy.DATA`): in-memory arrays have no
  files to shard by.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
  if shuffle:
    ds = ds.shuffle(min(len(x), 60000), seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  if augment is not None:
    if y is None:
      ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:
      ds = ds.map(lambda a, b: (augment(a), b),
                  num_parallel_calls=tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
