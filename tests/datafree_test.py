"""modelsteal.attacks.datafree: the zeroth-order gradient, exact budgets
(probes included), resume without paying twice, the journal, options, and a
toy victim the loop learns to copy better than noise queries do."""

import numpy as np
import pytest

from modelsteal.attacks import datafree
from modelsteal.errors import ConfigError
from modelsteal.oracle import LocalOracle
from tests.conftest import steal_error
from tests.conftest import synthetic_images


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_zo_gradient_of_a_linear_softmax_model_within_its_tolerance():
  rng = np.random.default_rng(0)
  shape, k, n = (4, 4, 1), 3, 5
  d = int(np.prod(shape))
  w = rng.normal(size=(d, k))
  y = rng.integers(0, k, n)

  def f(x):  # cross-entropy of softmax(x W) against y, per image
    p = _softmax(x.reshape(len(x), -1) @ w)
    return -np.log(p[np.arange(len(x)) % n, y[np.arange(len(x)) % n]])

  x = rng.uniform(size=(n, *shape))
  p = _softmax(x.reshape(n, -1) @ w)
  true = ((p - np.eye(k)[y]) @ w.T).reshape(n, *shape)
  for m in (100, 1600):
    u = datafree.unit_directions(rng, n, m, shape)
    probes = (x[:, None] + 1e-4 * u).reshape(-1, *shape)
    # f at the probes of image i, against that image's label
    fu = np.stack([
        -np.log(_softmax(probes[i * m:(i + 1) * m].reshape(m, -1) @ w)[:, y[i]])
        for i in range(n)])
    est = datafree.zo_gradient(f(x), fu, u, 1e-4)
    err = np.linalg.norm((est - true).reshape(n, -1), axis=1)
    norm = np.linalg.norm(true.reshape(n, -1), axis=1)
    # the estimate's relative error is about sqrt(d / m)
    assert (err / norm < 3 * np.sqrt(d / m)).all(), (m, err / norm)


class _CountingVictim:
  """A fixed random linear softmax model on 12x12x1 images."""

  def __init__(self, k=4):
    rng = np.random.default_rng(1)
    self.w = rng.normal(size=(144, k)).astype(np.float32) * 3
    self.seen = 0

  def __call__(self, x):
    self.seen += len(x)
    return _softmax(x.reshape(len(x), -1) @ self.w).astype(np.float32)


def _attack(tmp_path, victim, output='probs', seed=0, **cfg):
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  settings = dict(budget=3000, batch_size=20, directions=2, student_steps=2,
                  latent_dim=8, checkpoint_every=1000, probe_size=50,
                  lr_student=0.05, lr_generator=1e-3)
  settings.update(cfg)
  c = datafree.DataFreeConfig(**settings)
  oracle = LocalOracle(victim, identity='toy', output=output,
                       budget=c.budget)
  px = synthetic_images(50, seed=9)[0]
  student = models.build('mnist_mlp', (12, 12, 1), 4)
  return datafree.DataFreeAttack(
      c, oracle, student, (12, 12, 1), 4, px, victim.__class__().__call__(
          px).argmax(1), str(tmp_path), seed=seed, log=lambda s: None)


def test_budget_is_exact_with_probes_and_stops_cleanly(tmp_path):
  victim = _CountingVictim()
  att = _attack(tmp_path, victim, budget=1000)
  # one round: 20 * (2 + 1) generator queries + 2 * 20 student queries
  assert att.cfg.round_queries(False) == 100
  att.run()
  assert victim.seen == 1000 == int(att.paid.numpy()) == att.oracle.paid
  assert att.curve.rows[-1]['queries'] == 1000


def test_label_only_answers_pay_no_probes(tmp_path):
  victim = _CountingVictim()
  att = _attack(tmp_path, victim, output='label', budget=600)
  assert att.cfg.round_queries(True) == 60
  att.run()
  assert victim.seen == 600


@pytest.mark.slow
def test_a_resumed_run_pays_nothing_twice_and_ends_the_same(tmp_path):
  whole = _CountingVictim()
  a = _attack(tmp_path / 'a', whole, budget=2000)
  a.run()
  want = a.student.get_weights()

  victim = _CountingVictim()
  b = _attack(tmp_path / 'b', victim, budget=2000)
  real = b._student_round  # pylint: disable=protected-access
  rounds = []

  def interrupted():
    if len(rounds) == 14:  # 1,400 queries in, past the first checkpoint
      raise KeyboardInterrupt
    rounds.append(1)
    return real()

  b._student_round = interrupted  # pylint: disable=protected-access
  with pytest.raises(KeyboardInterrupt):
    b.run()
  paid_before = victim.seen
  c = _attack(tmp_path / 'b', victim, budget=2000)
  c.run()
  assert victim.seen == 2000  # the journal answered the re-asked queries
  assert paid_before > 1000 and c.journal.replayed > 0
  for got, ref in zip(c.student.get_weights(), want):
    np.testing.assert_allclose(got, ref, atol=1e-5)


class _BandVictim:
  """Class k when band k of a 12x12 image is bright (mean over 0.6), else
  class 0: uniform noise (band means near 0.5) is all class 0 to it, so
  noise queries teach a student nothing about the other classes."""

  def __init__(self):
    self.seen = 0

  def __call__(self, x):
    self.seen += len(x)
    bands = x[..., 0].reshape(len(x), 4, 3, 12).mean(axis=(2, 3))
    logits = 30.0 * np.maximum(bands - 0.6, 0.0)
    logits[:, 0] += 3.0
    return _softmax(logits).astype(np.float32)


@pytest.mark.slow
def test_the_loop_copies_a_toy_victim_better_than_noise_queries(tmp_path):
  import keras  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  victim = _BandVictim()
  c = datafree.DataFreeConfig(budget=20000, batch_size=20, directions=2,
                              student_steps=5, latent_dim=8,
                              checkpoint_every=10000, probe_size=100,
                              lr_student=0.05, lr_generator=1e-3)
  px, _ = synthetic_images(100, seed=9)
  labels = victim(px).argmax(1)
  att = datafree.DataFreeAttack(
      c, LocalOracle(victim, identity='toy', output='probs', budget=c.budget),
      models.build('mnist_mlp', (12, 12, 1), 4), (12, 12, 1), 4, px, labels,
      str(tmp_path), log=lambda s: None)
  att.run()
  fid = att.curve.rows[-1]['fidelity']
  # the same student on uniform-noise queries: every query of the budget a
  # training answer (no probes), one pass
  keras.utils.set_random_seed(0)
  noise = np.random.default_rng(0).uniform(size=(20000, 12, 12, 1)).astype(
      np.float32)
  s = models.build('mnist_mlp', (12, 12, 1), 4)
  s.compile('adam', keras.losses.CategoricalCrossentropy(from_logits=True))
  s.fit(noise, victim(noise), epochs=1, batch_size=20, verbose=0)
  noise_fid = (s.predict(px, verbose=0).argmax(1) == labels).mean()
  assert fid > noise_fid + 0.1, (fid, noise_fid)


@pytest.mark.parametrize('items,words', [
    (['loss=hinge'], 'unknown loss'),
    (['directions=0'], 'directions must be at least 1'),
    (['generator=vae'], 'unknown generator'),
    (['directions=1.5'], 'must be an integer'),
    (['nope=1'], 'is not FIELD=VALUE'),
])
def test_bad_options_name_the_field(items, words):
  with pytest.raises(ConfigError, match=words):
    datafree.DataFreeConfig(**datafree.parse_overrides(items))


def test_a_budget_below_one_round_is_refused():
  with pytest.raises(ConfigError, match='one data-free round'):
    datafree.DataFreeConfig(budget=100).check_budget(False)


def test_a_torn_journal_entry_is_asked_again(tmp_path):
  path = str(tmp_path / 'j.bin')
  j = datafree.Journal(path)
  x = np.ones((3, 2), np.float32)
  j.append(x, np.eye(3, dtype=np.float32))
  j.append(2 * x, np.eye(3, dtype=np.float32))
  j.close()
  with open(path, 'r+b') as f:
    f.truncate(f.seek(0, 2) - 5)
  j = datafree.Journal(path)
  np.testing.assert_array_equal(j.take(x), np.eye(3))
  assert j.take(2 * x) is None  # torn: asked again
  j.close()


def _steal_error(capsys, **flags):
  err = steal_error(capsys, **flags)
  assert len([l for l in err.splitlines() if 'error' in l]) == 1, err
  return err


def test_pipeline_options_errors_are_one_line(tmp_path, capsys):
  common = dict(workdir=str(tmp_path), smoke=True)
  assert '--datafree' in _steal_error(capsys, query_data='datafree',
                                      datafree=['loss=hinge'], **common)
  assert '--query_data=datafree' in _steal_error(
      capsys, datafree=['directions=2'], **common)
  assert 'one data-free round' in _steal_error(
      capsys, query_data='datafree', output='probs', budget=100, **common)
  assert '--rounds' in _steal_error(capsys, query_data='datafree', rounds=3,
                                    **common)


@pytest.mark.slow
def test_datafree_over_rest_smoke(tiny_model, tiny_npz, tmp_path):
  """The whole pipeline against a served victim: every query over HTTP,
  probes included, and the same command again resumes from the finished
  state without paying anything."""
  import glob  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from modelsteal import serving  # pylint: disable=g-import-not-at-top
  from modelsteal.export import export_saved_model  # pylint: disable=g-import-not-at-top
  from pipelines import steal  # pylint: disable=g-import-not-at-top
  base = str(tmp_path / 'victim')
  export_saved_model(tiny_model, base, version=1)
  ms = serving.ModelServer([serving.load_servable(base, 'v')])
  flags = dict(dataset=tiny_npz, workdir=str(tmp_path / 'w'), smoke=True,
               query_data='datafree', output='probs', budget=1200,
               students=['mnist_mlp'],
               datafree=['batch_size=16', 'checkpoint_every=400',
                         'latent_dim=8'])
  with serving.BackgroundServer(ms.make_app()) as bg:
    with flagsaver.flagsaver(victim_url=bg.url + '/v1/models/v', **flags):
      steal.main(['steal'])
    first = ms.stats['v'].instances
    with flagsaver.flagsaver(victim_url=bg.url + '/v1/models/v', **flags):
      steal.main(['steal'])
    second = ms.stats['v'].instances - first
  (csv,) = glob.glob(os.path.join(str(tmp_path / 'w'), 'datafree', '*',
                                  'results.csv'))
  df = pd.read_csv(csv)
  paid = int(df['queries_paid'].iloc[1])
  assert paid <= 1200 and paid > 1200 - 16 * 7  # rounds of 16 * (2 + 5)
  # the first run: the victim's scoring (test + held-out, its own pass),
  # the fidelity yardstick, then exactly the paid queries
  curve = pd.read_csv(os.path.join(os.path.dirname(csv), 'curve.csv'))
  assert curve['queries'].iloc[-1] == paid
  assert second < first - paid + 1  # the rerun paid no datafree query
