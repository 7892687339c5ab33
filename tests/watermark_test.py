"""The DAWN-style watermark: which answers it marks, what it answers, the
binomial test, and `pipelines.verify` on a local suspect and over a URL."""

import os

import numpy as np
import pytest
import requests

from modelsteal import serving
from modelsteal.defenses import watermark
from modelsteal.errors import ConfigError
from modelsteal.export import export_saved_model
from modelsteal.serving import guard as guard_lib
from tests.conftest import synthetic_images

KEY = b'0123456789abcdef-watermark'


def test_marks_are_keyed_deterministic_and_never_the_honest_label():
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (20000, 6)).astype(np.float32)
  top = rng.integers(0, 10, len(x))
  wm = watermark.Watermark(KEY, rate=0.05)
  marked, labels = wm.marks(x, top, 10)
  assert 0.04 < marked.mean() < 0.06
  assert (labels[marked] != top[marked]).all()
  assert (labels[~marked] == top[~marked]).all()
  assert set(np.unique(labels[marked] - top[marked]) % 10) == set(range(1, 10))
  again, labels2 = wm.marks(x, top, 10)
  np.testing.assert_array_equal(marked, again)
  np.testing.assert_array_equal(labels, labels2)
  other, _ = watermark.Watermark(b'another key, 16+ bytes', 0.05).marks(
      x, top, 10)
  assert (other & marked).mean() < 0.01  # a different key marks others


def test_apply_swaps_the_top_entry_with_the_watermark_label():
  x = np.random.default_rng(1).uniform(0, 1, (4000, 5)).astype(np.float32)
  p = np.random.default_rng(2).dirichlet(np.ones(4), len(x)).astype(np.float32)
  out = {'probabilities': p.copy(), 'label': p.argmax(1)}
  wm = watermark.Watermark(KEY, rate=0.1)
  n = wm.apply(x, out, 4)
  marked, labels = wm.marks(x, p.argmax(1), 4)
  assert n == marked.sum() > 0
  np.testing.assert_array_equal(out['probabilities'].argmax(1)[marked],
                                labels[marked])
  np.testing.assert_array_equal(out['label'], out['probabilities'].argmax(1))
  np.testing.assert_allclose(np.sort(out['probabilities'], 1), np.sort(p, 1))
  np.testing.assert_array_equal(out['probabilities'][~marked], p[~marked])


def test_the_binomial_test_separates_a_copy_from_chance():
  honest = np.arange(60) % 10
  labels = (honest + 1 + np.arange(60) % 9) % 10
  copy = watermark.verify(labels, labels, honest, 10)
  assert copy.agreements == copy.departures == 60 and copy.p_value < 1e-50
  rng = np.random.default_rng(3)
  chance = watermark.verify(rng.integers(0, 10, 60), labels, honest, 10)
  assert 40 < chance.departures and chance.p_value > 1e-3
  accurate = watermark.verify(honest, labels, honest, 10)
  assert accurate.departures == 0 and accurate.p_value == 1.0
  # honest labels recovered from the watermarked answers
  x = rng.uniform(0, 1, (3000, 4)).astype(np.float32)
  top = rng.integers(0, 10, len(x))
  wm = watermark.Watermark(KEY, rate=0.2)
  marked, wlabels = wm.marks(x, top, 10)
  again, back = wm.honest(x, np.where(marked, wlabels, top), 10)
  np.testing.assert_array_equal(again, marked)
  np.testing.assert_array_equal(back[marked], top[marked])
  with pytest.raises(ConfigError, match='watermark_rate'):
    watermark.Watermark(KEY, rate=0.0)


def test_load_key_refuses_a_short_key(tmp_path):
  p = tmp_path / 'k'
  p.write_bytes(b'short')
  with pytest.raises(ConfigError, match='at least 16'):
    watermark.load_key(str(p))
  with pytest.raises(ConfigError, match='cannot read'):
    watermark.load_key(str(tmp_path / 'none'))


@pytest.fixture(scope='module')
def model_dir(tiny_model, tmp_path_factory):
  base = str(tmp_path_factory.mktemp('wm') / 'tiny')
  export_saved_model(tiny_model, base, version=1)
  return base


def test_verify_claims_the_watermarked_server_and_not_the_clean_model(
    model_dir, tmp_path, capsys):
  from pipelines import verify  # pylint: disable=g-import-not-at-top
  key_file = tmp_path / 'wm.key'
  key_file.write_bytes(KEY)
  log_dir = str(tmp_path / 'log')
  rate = 0.1
  g = guard_lib.Guard(guard_lib.GuardConfig(
      log_dir=log_dir, watermark=watermark.Watermark(KEY, rate)))
  ms = serving.ModelServer([serving.load_servable(model_dir, 'tiny')],
                           guard=g)
  x = synthetic_images(600, seed=11)[0]
  with serving.BackgroundServer(ms.make_app()) as bg:
    url = bg.url + '/v1/models/tiny'
    for i in range(0, len(x), 100):
      r = requests.post(url + ':predict', timeout=30,
                        json={'instances': x[i:i + 100].tolist()})
      assert r.status_code == 200
    assert g.states['anonymous'].watermarked > 30
    # The server itself answers with its watermark: claimed, over its URL.
    served = verify.run(verify.VerifyConfig(
        suspect=url, watermark_key=str(key_file), query_log=log_dir,
        watermark_rate=rate))
  assert served['claimed'] and served['clients_claimed'] == ['anonymous']
  (row,) = served['rows']
  assert row['agreements'] == row['departures'] == row['marked'] > 30
  # The same model without the watermark: an innocent suspect.
  clean = verify.run(verify.VerifyConfig(
      suspect=model_dir, watermark_key=str(key_file), query_log=log_dir,
      watermark_rate=rate))
  assert not clean['claimed'] and clean['rows'][0]['departures'] <= 3
  with pytest.raises(ConfigError, match='client'):
    verify.run(verify.VerifyConfig(
        suspect=model_dir, watermark_key=str(key_file), query_log=log_dir,
        client='nobody'))
  assert os.path.exists(os.path.join(log_dir, 'anonymous.jsonl'))


def test_serve_refuses_a_watermark_without_a_log(model_dir, tmp_path):
  from pipelines import serve  # pylint: disable=g-import-not-at-top
  key_file = tmp_path / 'wm.key'
  key_file.write_bytes(KEY)
  with pytest.raises(ConfigError) as e:
    serve.build_server(serve.ServeConfig(model_dir=model_dir,
                                         watermark_key=str(key_file)))
  assert e.value.field == 'watermark_key'
