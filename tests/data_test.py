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
