"""modelsteal.oracle.rest: a victim over HTTP, with the local oracle's budget
and cache; retries, clear errors, label-only answers, resume over HTTP.

Servers (the real one and small fakes) bind 127.0.0.1 on free ports.
"""

import numpy as np
import pytest
from aiohttp import web

from modelsteal import serving
from modelsteal.oracle import OracleError
from modelsteal.oracle import rest
from tests.conftest import check_budget_and_cache
from tests.conftest import check_labeling_resumes
from tests.conftest import check_one_hot_answers
from tests.conftest import check_unreachable
from tests.conftest import fast_retries
from tests.conftest import free_port
from tests.conftest import query_under_a_small_limit
from tests.conftest import serve_in_background
from tests.conftest import steal_error
from tests.conftest import tiny_splits
from tests.conftest import victim_server


@pytest.fixture(scope='module')
def server(victim_dir):
  with serve_in_background(victim_server(victim_dir)) as bg:
    yield bg


def test_answers_match_the_local_victim_with_budget_and_cache(
    server, victim_dir, tmp_path):
  url = server.url + '/v1/models/victim'
  ref = rest.victim_ref_from_url(url)
  assert rest.victim_ref_from_url(url + '/')['fingerprint'] == ref[
      'fingerprint']
  check_budget_and_cache(ref, 'rest', victim_dir, str(tmp_path))


def test_label_only_endpoint_gives_one_hot_answers(server, victim_dir):
  ref = rest.victim_ref_from_url(server.url + '/v1/models/victim_label')
  assert ref['num_classes'] == 4  # from the server's metadata
  check_one_hot_answers(ref, victim_dir)


def test_fingerprint_names_the_version(server):
  a = rest.victim_ref_from_url(server.url + '/v1/models/victim')
  b = rest.victim_ref_from_url(server.url + '/v1/models/victim/versions/1')
  c = rest.victim_ref_from_url(server.url + '/v1/models/victim_label')
  assert len({a['fingerprint'], b['fingerprint'], c['fingerprint']}) == 3


def test_a_small_body_limit_halves_the_batch(victim_dir):
  oracle, ms = query_under_a_small_limit(
      victim_dir, 20, lambda bg, ms: rest.victim_ref_from_url(
          bg.url + '/v1/models/v'))
  # 20 queries in one request were refused; halves (or less) went through
  assert oracle.batch_size <= 10 and ms.stats['v'].instances == 20


def test_malformed_urls_are_refused():
  for url in ('localhost:8501/v1/models/m', 'http://h:1/v2/models/m',
              'http://h:1/v1/models/m:predict', 'http://h:1/v1/models/',
              'http://h:1/v1/models/m/versions/x'):
    with pytest.raises(ValueError, match='not a TF Serving model URL'):
      rest.check_url(url)


def test_unreachable_endpoint_is_a_clear_error():
  url = f'http://127.0.0.1:{free_port()}/v1/models/m'
  oracle = rest.RestOracle(url, num_classes=4, **fast_retries())
  check_unreachable(oracle)
  assert oracle.http.attempts == 3


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
                             **fast_retries())
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
                             **fast_retries())
    with pytest.raises(OracleError, match=words):
      oracle.query(np.zeros((2, 2), np.float32))
  finally:
    bg.stop()
  assert len(calls) == 1 and oracle.paid == 0  # no retry, nothing paid


def test_interrupted_labeling_over_http_resumes_without_asking_twice(
    server, tiny_npz, tmp_path, monkeypatch):
  ref = rest.victim_ref_from_url(server.url + '/v1/models/victim_resume')
  wd = str(tmp_path)
  check_labeling_resumes(rest.RestOracle, tiny_splits(tiny_npz, wd), ref, wd,
                         monkeypatch,
                         stats=server.model_server.stats['victim_resume'])


def test_steal_pipeline_victim_url_errors(server, tiny_npz, tmp_path, capsys):
  common = dict(workdir=str(tmp_path), smoke=True)
  url = server.url + '/v1/models/victim'
  assert 'needs --dataset' in steal_error(capsys, victim_url=url, **common)
  assert 'not a TF Serving model URL' in steal_error(
      capsys, victim_url='http://127.0.0.1/models/x', dataset=tiny_npz,
      **common)
  assert 'unreachable' in steal_error(
      capsys, victim_url=f'http://127.0.0.1:{free_port()}/v1/models/m',
      dataset=tiny_npz, **common)
  assert 'Servable not found' in steal_error(
      capsys, victim_url=server.url + '/v1/models/nope', dataset=tiny_npz,
      **common)
  assert 'pick the dataset' in steal_error(
      capsys, victim_url=url, dataset='offline_mnist', **common)
  assert 'not several' in steal_error(capsys, victim_url=url, victim_path=str(
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
