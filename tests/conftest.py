"""Shared fixtures and helpers: tiny synthetic data, served models, the
checks every remote oracle passes, the steal pipeline; no network, flags
parsed once."""

import contextlib
import glob
import os
import socket

os.environ.setdefault('MODELSTEAL_OFFLINE', '1')  # no 3 s network probe
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()

# The longest files first (seconds alone on the 2-core CPU, BUILD_NOTES.md
# "Test suite"): under `-n 2 --dist loadfile` (pytest.ini) each file runs
# whole on one worker, in this order, so the long ones do not start last
# and leave one worker idle at the end. Files not listed keep their order,
# after these.
SLOW_FILES = ('readme_test.py', 'synthetic_pipeline_test.py',
              'steal_pipeline_test.py', 'uq_pipeline_test.py',
              'rounds_pipeline_test.py', 'ntga_test.py', 'uq_test.py',
              'notebooks_test.py', 'multiworker_test.py',
              'defend_pipeline_test.py')


def pytest_collection_modifyitems(items):
  def rank(item):
    name = os.path.basename(str(item.path))
    return SLOW_FILES.index(name) if name in SLOW_FILES else len(SLOW_FILES)
  items.sort(key=rank)  # stable: a file's tests keep their order

SHARED_MNIST = os.path.join(os.path.dirname(__file__), '..', '..', 'shared',
                            'data', 'mnist', 'mnist.npz')


def synthetic_images(n, num_classes=4, size=12, seed=0):
  """Class k lights up a distinct horizontal band, plus noise: learnable."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, n)
  x = rng.uniform(0.0, 0.3, (n, size, size, 1)).astype(np.float32)
  band = size // num_classes
  for k in range(num_classes):
    x[y == k, k * band:(k + 1) * band, :, 0] += 0.6
  return np.clip(x, 0, 1), y.astype(np.int64)


@pytest.fixture
def tiny_npz(tmp_path):
  """A Keras-style npz: 400 train / 100 test images of 12x12, 4 classes."""
  xtr, ytr = synthetic_images(400, seed=1)
  xte, yte = synthetic_images(100, seed=2)
  path = tmp_path / 'tiny.npz'
  np.savez(path, x_train=(xtr * 255).astype(np.uint8), y_train=ytr,
           x_test=(xte * 255).astype(np.uint8), y_test=yte)
  return str(path)


@pytest.fixture(scope='session')
def tiny_model():
  """A small trained logits model on the synthetic data (12x12x1, 4 classes)."""
  from modelsteal.training import TrainConfig, train_classifier  # pylint: disable=g-import-not-at-top
  x, y = synthetic_images(300, seed=3)
  return train_classifier('mnist_mlp', x, y, 4, TrainConfig(epochs=3),
                          verbose=0)


def softmax(z):
  """Row-wise softmax, in float64: the probabilities a served model answers."""
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def free_port():
  """A TCP port on 127.0.0.1 that nothing listens on (just now)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def fast_retries(**kw):
  """Oracle settings that give up quickly: 2 retries, 10 ms backoff."""
  return dict(retries=2, backoff_s=0.01, timeout_s=10, **kw)


# Served models, for the serving and oracle tests. modelsteal.serving is
# imported in the functions: most test files never need it.


@pytest.fixture(scope='module')
def model_dir(tiny_model, tmp_path_factory):
  """Two versions of the tiny model: 1 sees inverted images, 2 plain ones."""
  from modelsteal.export import export_saved_model  # pylint: disable=g-import-not-at-top
  base = str(tmp_path_factory.mktemp('served') / 'tiny')
  export_saved_model(tiny_model, base, version=1,
                     preprocess=lambda x: 1.0 - x)
  export_saved_model(tiny_model, base, version=2)
  return base


@pytest.fixture(scope='module')
def victim_dir(tiny_model, tmp_path_factory):
  """The tiny model as version 1 of a SavedModel: a victim to serve."""
  from modelsteal.export import export_saved_model  # pylint: disable=g-import-not-at-top
  base = str(tmp_path_factory.mktemp('victim') / 'v')
  export_saved_model(tiny_model, base, version=1)
  return base


def tiny_model_server(model_dir, *more):
  """A ModelServer of `model_dir` (the fixture): 'tiny' (every version),
  'tiny_label' (labels only, the latest version), then the servables `more`;
  a 64 kB body limit, 2 ms batching."""
  from modelsteal import serving  # pylint: disable=g-import-not-at-top
  servables = [
      serving.load_servable(model_dir, 'tiny'),
      serving.load_servable(model_dir, 'tiny_label', defense='label',
                            versions='latest'),
      *more,
  ]
  return serving.ModelServer(servables, max_body_bytes=64 * 1024,
                             batch_timeout_s=0.002)


def victim_server(victim_dir, *more_names):
  """A ModelServer of `victim_dir` (the fixture) as 'victim', 'victim_label'
  (labels only) and 'victim_resume', then as each of `more_names`."""
  from modelsteal import serving  # pylint: disable=g-import-not-at-top
  return serving.ModelServer(
      [serving.load_servable(victim_dir, 'victim'),
       serving.load_servable(victim_dir, 'victim_label', defense='label'),
       serving.load_servable(victim_dir, 'victim_resume')] +
      [serving.load_servable(victim_dir, name) for name in more_names])


@contextlib.contextmanager
def serve_in_background(ms, **app_kw):
  """`ms` served on loopback for the with block (`app_kw`: `make_app`'s, e.g.
  grpc_port=0): yields its BackgroundServer, with `.model_server` = ms."""
  from modelsteal import serving  # pylint: disable=g-import-not-at-top
  with serving.BackgroundServer(ms.make_app(**app_kw)) as bg:
    bg.model_server = ms
    yield bg


# Checks that the REST and gRPC oracles must both pass.


def check_budget_and_cache(ref, kind, victim_dir, cache_dir):
  """`ref` (of `victim_dir` served) is of `kind` and says 4 classes, version
  1, 12x12x1 images; 10 queries in batches of 4 under a budget of 15 answer as the
  local victim, 3 requests; 6 more are refused; a fresh oracle on the same
  cache pays nothing. Returns that fresh oracle."""
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import BudgetExceededError  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import make_oracle  # pylint: disable=g-import-not-at-top
  assert ref['kind'] == kind and ref['num_classes'] == 4
  assert ref['version'] == '1' and ref['input_shape'] == [12, 12, 1]
  x = synthetic_images(10, seed=5)[0]
  oracle = make_oracle(ref, output='probs', budget=15, cache_dir=cache_dir)
  oracle.batch_size = 4
  got = oracle.query(x)
  np.testing.assert_allclose(got, load_predictor(victim_dir)(x), atol=1e-5)
  assert oracle.paid == 10 and oracle.requests_sent == 3
  with pytest.raises(BudgetExceededError):
    oracle.query(synthetic_images(6, seed=6)[0])
  # a fresh oracle on the same victim pays nothing: the cache answers
  again = make_oracle(ref, output='probs', cache_dir=cache_dir)
  np.testing.assert_allclose(again.query(x), got)
  assert again.paid == 0 and again.requests_sent == 0
  return again


def check_one_hot_answers(ref, victim_dir):
  """A label-only victim (4 classes): one-hot rows, the local victim's
  classes."""
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import make_oracle  # pylint: disable=g-import-not-at-top
  x = synthetic_images(7, seed=8)[0]
  got = make_oracle(ref, output='probs').query(x)
  want = load_predictor(victim_dir)(x).argmax(1)
  assert got.shape == (7, 4) and (got.sum(1) == 1).all()
  np.testing.assert_array_equal(got.argmax(1), want)


def query_under_a_small_limit(victim_dir, n, ref_of, **app_kw):
  """n queries to `victim_dir` served as 'v' with a 20 kB limit (under 20
  images of 12x12), by an oracle on `ref_of(bg, ms)`; checks the answers
  against the local victim. Returns the oracle and the ModelServer."""
  from modelsteal import serving  # pylint: disable=g-import-not-at-top
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import make_oracle  # pylint: disable=g-import-not-at-top
  ms = serving.ModelServer([serving.load_servable(victim_dir, 'v')],
                           max_body_bytes=20_000)
  x = synthetic_images(n, seed=9)[0]
  with serving.BackgroundServer(ms.make_app(**app_kw)) as bg:
    oracle = make_oracle(ref_of(bg, ms), output='probs')
    got = oracle.query(x)
  np.testing.assert_allclose(got, load_predictor(victim_dir)(x), atol=1e-5)
  return oracle, ms


def check_unreachable(oracle):
  """A query to an endpoint nobody serves: a clear error that names the
  serve command, nothing paid."""
  from modelsteal.oracle import OracleError  # pylint: disable=g-import-not-at-top
  with pytest.raises(OracleError, match='unreachable') as e:
    oracle.query(np.zeros((2, 12, 12, 1), np.float32))
  assert 'pipelines.serve' in str(e.value)
  assert oracle.paid == 0


def tiny_splits(tiny_npz, wd):
  """The `tiny_npz` dataset imported and split in `wd`: the splits artifact."""
  from modelsteal import data  # pylint: disable=g-import-not-at-top
  return data.split_data.run(
      wd, examples=data.import_dataset(data.load_dataset(tiny_npz), wd))[
          'splits']


def check_labeling_resumes(oracle_cls, splits, ref, wd, monkeypatch,
                           stats=None):
  """label_queries (budget 150, batches of 32) of the victim `ref`, stopped
  after two batches by a KeyboardInterrupt in `oracle_cls._ask`, leaves no
  finished or half-written run; the rerun pays only the rest. For a served
  victim, `stats` (its server's counters): the server sees each query
  exactly once, and a finished run is reused."""
  from modelsteal import attacks  # pylint: disable=g-import-not-at-top
  real = oracle_cls._ask
  calls = []

  def interrupted(self, x):
    if len(calls) == 2:
      raise KeyboardInterrupt
    calls.append(len(x))
    return real(self, x)

  monkeypatch.setattr(oracle_cls, '_ask', interrupted)
  kwargs = dict(splits=splits, victim=ref, budget=150, batch_size=32)
  with pytest.raises(KeyboardInterrupt):
    attacks.label_queries.run(wd, **kwargs)
  if stats is not None:
    assert stats.instances == 64
  assert not glob.glob(os.path.join(wd, 'label_queries', '*',
                                    'execution.json'))
  assert not glob.glob(os.path.join(wd, 'label_queries', '.tmp*'))
  monkeypatch.setattr(oracle_cls, '_ask', real)
  res = attacks.label_queries.run(wd, **kwargs)
  props = res['labeled'].properties
  assert props['queries_asked'] == 150 and props['queries_paid'] == 150 - 64
  if stats is not None:
    assert stats.instances == 150  # the server saw each query exactly once
    # a finished run is reused: nothing more is sent
    attacks.label_queries.run(wd, **kwargs)
    assert stats.instances == 150


# The steal pipeline.


def steal_smoke(stats, tiny_npz, wd, **victim):
  """`pipelines.steal --smoke --budget=60` (one mnist_mlp student) of a
  served victim, `victim` its flag (victim_url=URL or victim_grpc=ADDRESS);
  checks results.csv. Returns it and how many queries the server (`stats`)
  answered meanwhile."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from pipelines import steal  # pylint: disable=g-import-not-at-top
  (where,) = victim.values()
  before = stats.instances
  with flagsaver.flagsaver(**victim, dataset=tiny_npz, workdir=wd, smoke=True,
                           budget=60, students=['mnist_mlp']):
    steal.main(['steal'])
  df = pd.read_csv(glob.glob(os.path.join(wd, 'steal', '*', 'results.csv'))[0])
  assert df['role'].tolist() == ['victim', 'student']
  assert df['saved_model'].iloc[0] == where
  assert df['victim_accuracy'].iloc[0] > 0.9  # the tiny model is good
  assert df['queries_paid'].iloc[1] == 60
  return df, stats.instances - before


def steal_error(capsys, **flags):
  """`pipelines.steal` with `flags` exits 2 with an error and no traceback:
  returns what it wrote to stderr."""
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from pipelines import steal  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    with flagsaver.flagsaver(**flags):
      steal.main(['steal'])
  err = capsys.readouterr().err
  assert e.value.code == 2 and 'Traceback' not in err, err
  return err
