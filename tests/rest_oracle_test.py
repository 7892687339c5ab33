"""modelsteal.oracle.rest: a victim over HTTP, with the local oracle's budget
and cache; retries, clear errors, label-only answers, resume over HTTP.

Servers (the real one and small fakes) bind 127.0.0.1 on free ports.
"""

import glob
import os
import socket

import numpy as np
import pytest
from absl.testing import flagsaver
from aiohttp import web

from modelsteal import attacks
from modelsteal import data
from modelsteal import serving
from modelsteal.export import export_saved_model
from modelsteal.export import load_predictor
from modelsteal.oracle import BudgetExceededError
from modelsteal.oracle import OracleError
from modelsteal.oracle import make_oracle
from modelsteal.oracle import rest
from tests.conftest import synthetic_images


@pytest.fixture(scope='module')
def victim_dir(tiny_model, tmp_path_factory):
  base = str(tmp_path_factory.mktemp('victim') / 'v')
  export_saved_model(tiny_model, base, version=1)
  return base


@pytest.fixture(scope='module')
def server(victim_dir):
  ms = serving.ModelServer([
      serving.load_servable(victim_dir, 'victim'),
      serving.load_servable(victim_dir, 'victim_label', defense='label'),
      serving.load_servable(victim_dir, 'victim_resume'),
  ])
  with serving.BackgroundServer(ms.make_app()) as bg:
    bg.model_server = ms
    yield bg


def _fast(**kw):
  return dict(retries=2, backoff_s=0.01, timeout_s=10, **kw)


def test_answers_match_the_local_victim_with_budget_and_cache(
    server, victim_dir, tmp_path):
  url = server.url + '/v1/models/victim'
  ref = rest.victim_ref_from_url(url)
  assert ref['kind'] == 'rest' and ref['num_classes'] == 4
  assert ref['version'] == '1' and ref['input_shape'] == [12, 12, 1]
  assert rest.victim_ref_from_url(url + '/')['fingerprint'] == ref[
      'fingerprint']
  x = synthetic_images(10, seed=5)[0]
  oracle = make_oracle(ref, output='probs', budget=15, cache_dir=str(tmp_path))
  oracle.batch_size = 4
  got = oracle.query(x)
  np.testing.assert_allclose(got, load_predictor(victim_dir)(x), atol=1e-5)
  assert oracle.paid == 10 and oracle.requests_sent == 3
  with pytest.raises(BudgetExceededError):
    oracle.query(synthetic_images(6, seed=6)[0])
  # a fresh oracle on the same victim pays nothing: the cache answers
  again = make_oracle(ref, output='probs', cache_dir=str(tmp_path))
  np.testing.assert_allclose(again.query(x), got)
  assert again.paid == 0 and again.requests_sent == 0


def test_label_only_endpoint_gives_one_hot_answers(server, victim_dir):
  ref = rest.victim_ref_from_url(server.url + '/v1/models/victim_label')
  assert ref['num_classes'] == 4  # from the server's metadata
  x = synthetic_images(7, seed=8)[0]
  got = make_oracle(ref, output='probs').query(x)
  want = load_predictor(victim_dir)(x).argmax(1)
  assert got.shape == (7, 4) and (got.sum(1) == 1).all()
  np.testing.assert_array_equal(got.argmax(1), want)


def test_fingerprint_names_the_version(server):
  a = rest.victim_ref_from_url(server.url + '/v1/models/victim')
  b = rest.victim_ref_from_url(server.url + '/v1/models/victim/versions/1')
  c = rest.victim_ref_from_url(server.url + '/v1/models/victim_label')
  assert len({a['fingerprint'], b['fingerprint'], c['fingerprint']}) == 3


def test_a_small_body_limit_halves_the_batch(victim_dir, tmp_path):
  ms = serving.ModelServer([serving.load_servable(victim_dir, 'v')],
                           max_body_bytes=20_000)  # < 20 images of 12x12
  x = synthetic_images(20, seed=9)[0]
  with serving.BackgroundServer(ms.make_app()) as bg:
    ref = rest.victim_ref_from_url(bg.url + '/v1/models/v')
    oracle = make_oracle(ref, output='probs')
    got = oracle.query(x)
  np.testing.assert_allclose(got, load_predictor(victim_dir)(x), atol=1e-5)
  # 20 queries in one request were refused; halves (or less) went through
  assert oracle.batch_size <= 10 and ms.stats['v'].instances == 20


def test_malformed_urls_are_refused():
  for url in ('localhost:8501/v1/models/m', 'http://h:1/v2/models/m',
              'http://h:1/v1/models/m:predict', 'http://h:1/v1/models/',
              'http://h:1/v1/models/m/versions/x'):
    with pytest.raises(ValueError, match='not a TF Serving model URL'):
      rest.check_url(url)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_unreachable_endpoint_is_a_clear_error():
  url = f'http://127.0.0.1:{_free_port()}/v1/models/m'
  oracle = rest.RestOracle(url, num_classes=4, **_fast())
  with pytest.raises(OracleError, match='unreachable') as e:
    oracle.query(np.zeros((2, 12, 12, 1), np.float32))
  assert 'pipelines.serve' in str(e.value)
  assert oracle.http.attempts == 3 and oracle.paid == 0


def _fake(handler) -> serving.BackgroundServer:
  """A stand-in endpoint: metadata of a 4-class model, `handler` predicts."""

  async def metadata(request):
    del request
    return web.json_response({
        'model_spec': {'name': 'm', 'version': '1', 'signature_name': ''},
        'metadata': {'signature_def': {'signature_def': {'serving_default': {
            'inputs': {'images': {'dtype': 'DT_FLOAT', 'tensor_shape': {
                'dim': [{'size': '-1'}, {'size': '2'}]}}},
            'outputs': {'probabilities': {'dtype': 'DT_FLOAT', 'tensor_shape': {
                'dim': [{'size': '-1'}, {'size': '4'}]}}}}}}}})

  app = web.Application()
  app.router.add_get('/v1/models/m/metadata', metadata)
  app.router.add_post('/v1/models/m:predict', handler)
  return serving.BackgroundServer(app).start()


def test_retries_with_backoff_on_5xx_and_429():
  calls = []

  async def flaky(request):
    body = await request.json()
    calls.append(len(body['instances']))
    if len(calls) == 1:
      return web.json_response({'error': 'overloaded'}, status=503)
    if len(calls) == 2:
      return web.json_response({'error': 'slow down'}, status=429,
                               headers={'Retry-After': '0'})
    return web.json_response({'predictions': [[0.1, 0.2, 0.3, 0.4]] *
                                              len(body['instances'])})

  bg = _fake(flaky)
  try:
    oracle = rest.RestOracle(bg.url + '/v1/models/m', output='probs',
                             **_fast())
    got = oracle.query(np.zeros((3, 2), np.float32))
  finally:
    bg.stop()
  np.testing.assert_allclose(got, [[0.1, 0.2, 0.3, 0.4]] * 3, atol=1e-6)
  assert calls == [3, 3, 3] and oracle.http.attempts == 3 + 1  # + metadata
  assert oracle.paid == 3


@pytest.mark.parametrize('answer,status,words', [
    ({'foo': 1}, 200, 'not a prediction'),
    ({'predictions': [[0.5, 0.5, 0, 0]]}, 200, 'list of 2 predictions'),
    ({'predictions': [[0.5, 'x', 0, 0]] * 2}, 200, 'non-numeric'),
    ({'predictions': [[0.5, 0.5]] * 2}, 200, '2 scores per instance'),
    ({'predictions': [7, 1]}, 200, 'out of range'),
    ({'predictions': [{'logits': [1]}] * 2}, 200, 'no probabilities or label'),
    ('<html>hello</html>', 200, 'not JSON'),
    ({'error': 'input must be 3-D'}, 400, 'input must be 3-D'),
])
def test_answers_that_are_not_predictions_are_refused(answer, status, words):
  calls = []

  async def handler(request):
    calls.append(1)
    if isinstance(answer, str):
      return web.Response(text=answer, content_type='text/html')
    return web.json_response(answer, status=status)

  bg = _fake(handler)
  try:
    oracle = rest.RestOracle(bg.url + '/v1/models/m', cache_dir=None,
                             **_fast())
    with pytest.raises(OracleError, match=words):
      oracle.query(np.zeros((2, 2), np.float32))
  finally:
    bg.stop()
  assert len(calls) == 1 and oracle.paid == 0  # no retry, nothing paid


def test_interrupted_labeling_over_http_resumes_without_asking_twice(
    server, tiny_npz, tmp_path, monkeypatch):
  wd = str(tmp_path)
  splits = data.split_data.run(
      wd, examples=data.import_dataset(data.load_dataset(tiny_npz), wd))[
          'splits']
  ref = rest.victim_ref_from_url(server.url + '/v1/models/victim_resume')
  stats = server.model_server.stats['victim_resume']
  real = rest.RestOracle._ask
  calls = []

  def interrupted(self, x):
    if len(calls) == 2:
      raise KeyboardInterrupt
    calls.append(len(x))
    return real(self, x)

  monkeypatch.setattr(rest.RestOracle, '_ask', interrupted)
  kwargs = dict(splits=splits, victim=ref, budget=150, batch_size=32)
  with pytest.raises(KeyboardInterrupt):
    attacks.label_queries.run(wd, **kwargs)
  assert stats.instances == 64
  assert not glob.glob(os.path.join(wd, 'label_queries', '*',
                                    'execution.json'))
  monkeypatch.setattr(rest.RestOracle, '_ask', real)
  res = attacks.label_queries.run(wd, **kwargs)
  props = res['labeled'].properties
  assert props['queries_asked'] == 150 and props['queries_paid'] == 150 - 64
  assert stats.instances == 150  # the server saw each query exactly once
  # a finished run is reused: nothing more is sent
  attacks.label_queries.run(wd, **kwargs)
  assert stats.instances == 150


def _steal(capsys, **flags):
  from pipelines import steal
  with pytest.raises(SystemExit) as e:
    with flagsaver.flagsaver(**flags):
      steal.main(['steal'])
  err = capsys.readouterr().err
  assert e.value.code == 2 and 'Traceback' not in err, err
  return err


def test_steal_pipeline_victim_url_errors(server, tiny_npz, tmp_path, capsys):
  common = dict(workdir=str(tmp_path), smoke=True)
  url = server.url + '/v1/models/victim'
  assert 'needs --dataset' in _steal(capsys, victim_url=url, **common)
  assert 'not a TF Serving model URL' in _steal(
      capsys, victim_url='http://127.0.0.1/models/x', dataset=tiny_npz,
      **common)
  assert 'unreachable' in _steal(
      capsys, victim_url=f'http://127.0.0.1:{_free_port()}/v1/models/m',
      dataset=tiny_npz, **common)
  assert 'Servable not found' in _steal(
      capsys, victim_url=server.url + '/v1/models/nope', dataset=tiny_npz,
      **common)
  assert 'pick the dataset' in _steal(
      capsys, victim_url=url, dataset='offline_mnist', **common)
  assert 'not several' in _steal(capsys, victim_url=url, victim_path=str(
      tmp_path), dataset=tiny_npz, **common)


def test_request_encoding_is_exact_with_and_without_orjson(monkeypatch):
  import builtins
  import json
  x = np.random.default_rng(3).random((5, 4, 4, 1)).astype(np.float32)
  fast = rest._encode({'signature_name': 's', 'instances': x})
  real_import = builtins.__import__

  def no_orjson(name, *args, **kwargs):
    if name == 'orjson':
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, '__import__', no_orjson)
  slow = rest._encode({'signature_name': 's', 'instances': x})
  for body in (fast, slow):
    obj = json.loads(body)
    assert obj['signature_name'] == 's'
    np.testing.assert_array_equal(
        np.asarray(obj['instances']).astype(np.float32), x)
