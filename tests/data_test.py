"""Datasets: files, validation, fallback, splits."""

import gzip
import os

import numpy as np
import pytest

from modelsteal import data
from modelsteal.data.splits import split_indices


def test_npz_loads_and_normalises(tiny_npz):
  ds = data.load_dataset(tiny_npz)
  assert ds.x_train.shape == (400, 12, 12, 1) and ds.x_train.dtype == np.float32
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
  assert ds.num_classes == 4 and ds.y_test.shape == (100,)


def _write_idx(path, arr):
  header = bytes([0, 0, 8, arr.ndim]) + b''.join(
      int(d).to_bytes(4, 'big') for d in arr.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_folder_and_truncated_file(tmp_path):
  rng = np.random.default_rng(0)
  for prefix, n in (('train', 30), ('t10k', 10)):
    _write_idx(tmp_path / f'{prefix}-images-idx3-ubyte.gz',
               rng.integers(0, 256, (n, 8, 8)))
    _write_idx(tmp_path / f'{prefix}-labels-idx1-ubyte.gz',
               rng.integers(0, 3, n))
  ds = data.load_dataset(str(tmp_path))
  assert ds.x_train.shape == (30, 8, 8, 1) and ds.x_test.shape == (10, 8, 8, 1)
  raw = gzip.open(tmp_path / 'train-images-idx3-ubyte.gz').read()
  with gzip.open(tmp_path / 'train-images-idx3-ubyte.gz', 'wb') as f:
    f.write(raw[:-50])
  with pytest.raises(data.DataError, match='truncated'):
    data.load_dataset(str(tmp_path))


@pytest.mark.parametrize('bad, match', [
    (np.full((2, 4, 4), np.nan, np.float32), 'NaN'),
    (np.full((2, 4, 4), 2.0, np.float32), 'pixels must lie'),
    (np.full((2, 4, 4), -0.5, np.float32), 'pixels must lie'),
    (np.zeros((2, 4), np.float32), 'shape'),
])
def test_check_images_rejects(bad, match):
  with pytest.raises(data.DataError, match=match):
    data.check_images(bad)


def test_unknown_name_and_missing_path():
  with pytest.raises(KeyError, match='valid names: .*cifar10.*mnist'):
    data.load_dataset('imagenet21k')
  with pytest.raises(data.DataError, match='no such file'):
    data.load_dataset('/no/such/file.npz')


def test_offline_fallback_is_loud_and_only_for_mnist(tmp_path, capsys):
  ds = data.load_dataset('mnist', data_dir=str(tmp_path))
  assert ds.name == 'offline_mnist' and len(ds.x_train) == 4000
  assert 'FALLING BACK' in capsys.readouterr().err
  with pytest.raises(data.DatasetUnavailableError, match='Pass a path'):
    data.load_dataset('fashion_mnist', data_dir=str(tmp_path))


def test_splits_disjoint_deterministic_and_size_checked():
  a = split_indices(1000, seed=3, victim_fraction=0.5, heldout_fraction=0.1,
                    min_size=10)
  b = split_indices(1000, seed=3, victim_fraction=0.5, heldout_fraction=0.1,
                    min_size=10)
  all_idx = np.concatenate([a['victim'], a['pool'], a['heldout']])
  assert len(np.unique(all_idx)) == 1000
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert len(a['victim']) == 500 and len(a['heldout']) == 50
  with pytest.raises(data.DataError, match="'heldout' split has 1"):
    split_indices(20, seed=0, victim_fraction=0.5, heldout_fraction=0.1,
                  min_size=5)


def test_import_and_split_components(tiny_npz, tmp_path):
  ds = data.load_dataset(tiny_npz)
  ex = data.import_dataset(ds, str(tmp_path))
  assert data.import_dataset(ds, str(tmp_path)).uri == ex.uri
  res = data.split_data.run(str(tmp_path), examples=ex, seed=0)
  sp = res['splits']
  assert set(sp.splits) == {'victim', 'pool', 'heldout', 'test'}
  v = sp.load_split('victim')
  np.testing.assert_allclose(v['x'], ds.x_train[v['idx']], atol=1e-6)
  assert os.path.exists(os.path.join(res.execution_dir, 'execution.json'))


def test_corrupt_split_file_gives_clear_error(tiny_npz, tmp_path):
  from modelsteal.artifacts import ArtifactError
  ds = data.load_dataset(tiny_npz)
  ex = data.import_dataset(ds, str(tmp_path))
  path = ex.path('train.npz')
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 3)
  with pytest.raises(ArtifactError, match='corrupt or truncated.*delete'):
    ex.load_split('train')


# ------------------------------------------------- npz files of the wrong kind
def _npz(tmp_path, name='bad.npz', **overrides):
  """A CIFAR-shaped npz (24 train / 8 test, 3 classes) with `overrides`."""
  rng = np.random.default_rng(0)
  arrays = {'x_train': rng.integers(0, 256, (24, 32, 32, 3), np.uint8),
            'y_train': np.arange(24) % 3,
            'x_test': rng.integers(0, 256, (8, 32, 32, 3), np.uint8),
            'y_test': np.arange(8) % 3}
  arrays.update(overrides)
  path = tmp_path / name
  np.savez(path, **arrays)
  return str(path)


def test_cifar_shaped_npz_loads_as_rgb_floats(tmp_path):
  ds = data.load_dataset(_npz(tmp_path, 'ok.npz'))
  assert ds.shape == (32, 32, 3) and ds.x_train.dtype == np.float32
  assert ds.x_train.max() <= 1.0 and ds.num_classes == 3
  assert ds.note == '' and ds.label == 'ok'


@pytest.mark.parametrize('overrides, match', [
    # wrong shape
    ({'x_train': np.zeros((24, 3, 32, 32), np.uint8)}, 'channels-first'),
    ({'x_test': np.zeros((8, 28, 28, 1), np.uint8)}, 'differ in shape'),
    ({'x_train': np.zeros((24, 3072), np.uint8)}, r'got shape \(24, 3072\)'),
    ({'y_train': np.eye(3)[np.arange(24) % 3]}, 'one-hot'),
    ({'y_test': np.arange(5) % 3}, '5 labels for 8 images'),
    # wrong dtype
    ({'x_train': np.full((24, 32, 32, 3), 300, np.int32)}, 'int32.*0..255'),
    ({'x_train': np.full((24, 32, 32, 3), 255.0)}, 'look like 0..255'),
    ({'x_test': np.zeros((8, 32, 32, 3), bool)}, 'dtype bool'),
    ({'x_test': np.full((8, 32, 32, 3), 'a')}, 'dtype <U1'),
    ({'y_train': np.full(24, 'cat')}, 'labels must be integer'),
    ({'y_train': np.full(24, 0.5)}, 'labels must be integer'),
    # labels out of range
    ({'y_test': np.full(8, -1)}, 'negative label -1'),
    ({'y_train': np.arange(24) % 3 + 1, 'y_test': np.arange(8) % 3 + 1},
     'out of range.*1-based'),
    ({'y_test': np.full(8, 255)}, 'out of range.*largest label is 255'),
    ({'y_test': np.full(8, 5), 'num_classes': np.array(3)},
     'test labels: label 5 is out of range for 3 classes'),
])
def test_bad_npz_gives_one_clear_data_error(tmp_path, overrides, match):
  path = _npz(tmp_path, **overrides)
  with pytest.raises(data.DataError, match=match) as e:
    data.load_dataset(path)
  assert '\n' not in str(e.value)  # one `error:` line in a pipeline
  from modelsteal.errors import UserError  # pylint: disable=g-import-not-at-top
  assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)


def test_note_from_the_file_and_into_the_run_record(tmp_path):
  ds = data.load_dataset(_npz(tmp_path, note=np.array('a resized copy')))
  assert ds.note == 'a resized copy' and ds.label == 'a resized copy'
  assert ds.source.endswith('; a resized copy')
  ex = data.import_dataset(ds, str(tmp_path / 'wd'))
  assert ex.properties['note'] == 'a resized copy'


def test_known_file_is_noted_by_content(tmp_path, monkeypatch):
  import hashlib  # pylint: disable=g-import-not-at-top
  path = _npz(tmp_path)
  with open(path, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  monkeypatch.setitem(data.sources.KNOWN_FILES,
                      (os.path.getsize(path), digest), data.JPEG_Q75_NOTE)
  ds = data.load_dataset(path)
  assert ds.note == 'CIFAR-10 (JPEG q75 copy)'
  # The same content imported before notes existed gets its note added.
  wd = str(tmp_path / 'wd')
  plain = data.import_dataset(data.sources._make(  # pylint: disable=protected-access
      'bad', ds.x_train, ds.y_train, ds.x_test, ds.y_test, source='x'), wd)
  assert plain.properties['note'] == ''
  again = data.import_dataset(ds, wd)
  assert again.uri == plain.uri and again.properties['note'] == ds.note
  from modelsteal.artifacts import Examples  # pylint: disable=g-import-not-at-top
  assert Examples.load(plain.uri).properties['note'] == ds.note


SHARED_CIFAR = os.path.join(os.path.dirname(__file__), '..', '..', 'shared',
                            'data', 'cifar10', 'cifar10_jpeg_q75.npz')


@pytest.mark.skipif(not os.path.exists(SHARED_CIFAR),
                    reason='the shared CIFAR-10 JPEG copy is not here')
def test_shared_cifar10_jpeg_copy_is_labelled():
  # Only the note: hashing 171 MB is cheap, decoding it all is not.
  assert data.sources.known_file_note(SHARED_CIFAR) == data.JPEG_Q75_NOTE


# ------------------------------------------------------- the CIFAR stand-in
def test_synthetic_cifar10_stand_in():
  ds = data.load_dataset('synthetic_cifar10')
  assert ds.shape == (32, 32, 3) and ds.num_classes == 10
  assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min()
  assert len(ds.x_train) == 1000 and len(ds.x_test) == 300
  assert np.bincount(ds.y_train).min() == 100  # balanced
  assert 'not CIFAR-10' in ds.note
  small = data.synthetic_cifar10(50, 20, seed=1)
  again = data.synthetic_cifar10(50, 20, seed=1)
  assert small.fingerprint == again.fingerprint
  assert small.fingerprint != data.synthetic_cifar10(50, 20, seed=2).fingerprint
  # Learnable: class means differ far more than the noise between them.
  means = np.stack([ds.x_train[ds.y_train == k].mean(0) for k in range(10)])
  assert np.abs(means[:, None] - means[None]).mean(axis=(2, 3, 4)).max() > 0.1


def test_crop_flip_augmenter_shifts_and_flips():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).random((64, 8, 8, 3)).astype(np.float32)
  out = np.asarray(data.crop_flip_augmenter(seed=0, pad=2)(tf.constant(x)))
  assert out.shape == x.shape
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  flips = 0
  for i in range(len(x)):  # every output is one window, maybe mirrored
    wins = [(padded[i, a:a + 8, b:b + 8], f) for a in range(5)
            for b in range(5) for f in (False, True)]
    hits = [f for w, f in wins if np.array_equal(
        w[:, ::-1] if f else w, out[i])]
    assert hits, i
    flips += hits[0]
  assert 10 < flips < 54  # about half flipped
