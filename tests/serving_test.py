"""modelsteal.serving and `python -m pipelines.serve`: TF Serving's REST API
(status, metadata, row and columnar predict, versions), batching, every bad
request, output defences, and the loopback acceptance test: steal a served
victim over HTTP, serve the student, query it as a TF Serving client would.

Servers bind 127.0.0.1 on free ports; every wait is bounded.
"""

import asyncio
import concurrent.futures
import glob
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import requests
from absl.testing import flagsaver

from modelsteal import serving
from modelsteal.export import load_predictor
from tests.conftest import serve_in_background
from tests.conftest import softmax
from tests.conftest import steal_smoke
from tests.conftest import synthetic_images
from tests.conftest import tiny_model_server

TIMEOUT = 30  # seconds, per HTTP call
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def server(model_dir):
  ms = tiny_model_server(model_dir, serving.load_servable(
      model_dir, 'tiny_rounded', defense='rounded:1', versions='latest'))
  with serve_in_background(ms) as bg:
    yield bg


def _x(n=5, seed=7):
  return synthetic_images(n, seed=seed)[0]


def _local(tiny_model, x):
  return softmax(tiny_model(x, training=False).numpy())


def _post(server, path, **kwargs):
  return requests.post(server.url + path, timeout=TIMEOUT, **kwargs)


def _get(server, path):
  return requests.get(server.url + path, timeout=TIMEOUT)


# -- the API ------------------------------------------------------------------


def test_status_lists_versions_as_tf_serving(server):
  r = _get(server, '/v1/models/tiny')
  assert r.status_code == 200
  status = r.json()['model_version_status']
  assert [s['version'] for s in status] == ['2', '1']
  assert all(s['state'] == 'AVAILABLE' and s['status']['error_code'] == 'OK'
             for s in status)
  one = _get(server, '/v1/models/tiny/versions/1').json()
  assert [s['version'] for s in one['model_version_status']] == ['1']


def test_metadata_is_a_signature_def(server):
  md = _get(server, '/v1/models/tiny/metadata').json()
  assert md['model_spec'] == {'name': 'tiny', 'signature_name': '',
                              'version': '2'}
  sig = md['metadata']['signature_def']['signature_def']['serving_default']
  assert sig['method_name'] == 'tensorflow/serving/predict'
  images = sig['inputs']['images']
  assert images['dtype'] == 'DT_FLOAT'
  assert [d['size'] for d in images['tensor_shape']['dim']] == [
      '-1', '12', '12', '1']
  assert sig['outputs']['probabilities']['dtype'] == 'DT_FLOAT'
  assert [d['size'] for d in sig['outputs']['probabilities']['tensor_shape'][
      'dim']] == ['-1', '4']
  assert sig['outputs']['label']['dtype'] == 'DT_INT64'
  v1 = _get(server, '/v1/models/tiny/versions/1/metadata').json()
  assert v1['model_spec']['version'] == '1'


def test_row_format_predict_matches_the_local_model(server, tiny_model):
  x = _x()
  r = _post(server, '/v1/models/tiny:predict', json={'instances': x.tolist()})
  assert r.status_code == 200, r.text
  preds = r.json()['predictions']
  assert len(preds) == 5 and set(preds[0]) == {'probabilities', 'label'}
  probs = np.array([p['probabilities'] for p in preds])
  np.testing.assert_allclose(probs, _local(tiny_model, x), atol=1e-5)
  assert [p['label'] for p in preds] == list(probs.argmax(1))


def test_columnar_predict_and_explicit_signature(server, tiny_model):
  x = _x(3)
  for body in ({'inputs': x.tolist()},
               {'inputs': {'images': x.tolist()}},
               {'signature_name': 'serving_default', 'inputs': x.tolist()}):
    r = _post(server, '/v1/models/tiny:predict', json=body)
    assert r.status_code == 200, r.text
    out = r.json()['outputs']
    np.testing.assert_allclose(out['probabilities'], _local(tiny_model, x),
                               atol=1e-5)
    assert out['label'] == list(np.argmax(out['probabilities'], 1))
  # row format with a named input, as for multi-input signatures
  r = _post(server, '/v1/models/tiny:predict',
            json={'instances': [{'images': row} for row in x.tolist()]})
  assert r.status_code == 200, r.text
  assert len(r.json()['predictions']) == 3


def test_specific_versions_are_served(server, tiny_model):
  x = _x(4)
  v1 = _post(server, '/v1/models/tiny/versions/1:predict',
             json={'inputs': x.tolist()}).json()['outputs']['probabilities']
  v2 = _post(server, '/v1/models/tiny/versions/2:predict',
             json={'inputs': x.tolist()}).json()['outputs']['probabilities']
  np.testing.assert_allclose(v1, _local(tiny_model, 1.0 - x), atol=1e-5)
  np.testing.assert_allclose(v2, _local(tiny_model, x), atol=1e-5)
  assert not np.allclose(v1, v2, atol=1e-3)


# -- bad requests ---------------------------------------------------------------

_GOOD = {'instances': np.zeros((1, 12, 12, 1)).tolist()}
_BAD = [
    # (case, method, path, request kwargs, status, words in the error)
    ('malformed JSON', 'POST', '/v1/models/tiny:predict',
     {'data': b'{"instances": [[1, 2]'}, 400, 'JSON Parse error'),
    ('not an object', 'POST', '/v1/models/tiny:predict',
     {'json': [[1, 2]]}, 400, 'JSON object'),
    ('empty body', 'POST', '/v1/models/tiny:predict', {'data': b''}, 400,
     'empty'),
    ('no instances or inputs', 'POST', '/v1/models/tiny:predict',
     {'json': {'images': []}}, 400, 'Missing "inputs" or "instances"'),
    ('both formats', 'POST', '/v1/models/tiny:predict',
     {'json': {'instances': [], 'inputs': []}}, 400, 'Not both'),
    ('empty instances', 'POST', '/v1/models/tiny:predict',
     {'json': {'instances': []}}, 400, 'empty'),
    ('empty inputs', 'POST', '/v1/models/tiny:predict',
     {'json': {'inputs': []}}, 400, 'empty'),
    ('wrong shape', 'POST', '/v1/models/tiny:predict',
     {'json': {'instances': np.zeros((2, 12, 11, 1)).tolist()}}, 400,
     'must have shape (N, 12, 12, 1)'),
    ('wrong rank', 'POST', '/v1/models/tiny:predict',
     {'json': {'instances': [0.5, 0.5]}}, 400, 'must have shape'),
    ('ragged rows', 'POST', '/v1/models/tiny:predict',
     {'json': {'instances': [[[[0.1]] * 12] * 12, [[[0.1]] * 11] * 12]}}, 400,
     'ragged'),
    ('strings', 'POST', '/v1/models/tiny:predict',
     {'json': {'instances': [[[['a']] * 12] * 12]}}, 400, 'DT_FLOAT'),
    ('booleans', 'POST', '/v1/models/tiny:predict',
     {'json': {'instances': [[[[True]] * 12] * 12]}}, 400, 'DT_FLOAT'),
    ('NaN', 'POST', '/v1/models/tiny:predict',
     {'data': json.dumps({'instances': [[[[float('nan')]] * 12] * 12]})},
     400, 'NaN'),
    ('Infinity', 'POST', '/v1/models/tiny:predict',
     {'data': json.dumps({'inputs': [[[[float('inf')]] * 12] * 12]})}, 400,
     'Infinity'),
    ('binary value that is no image', 'POST', '/v1/models/tiny:predict',
     {'json': {'instances': [{'b64': 'AAAA'}]}}, 400, 'not a PNG'),
    ('object value', 'POST', '/v1/models/tiny:predict',
     {'json': {'inputs': {'images': {'x': 1}}}}, 400, 'object values'),
    ('unknown request key', 'POST', '/v1/models/tiny:predict',
     {'json': {**_GOOD, 'examples': []}}, 400, 'unknown request keys'),
    ('unknown signature', 'POST', '/v1/models/tiny:predict',
     {'json': {**_GOOD, 'signature_name': 'nope'}}, 400, 'not found'),
    ('signature not a string', 'POST', '/v1/models/tiny:predict',
     {'json': {**_GOOD, 'signature_name': 3}}, 400, 'must be a string'),
    ('unknown input name', 'POST', '/v1/models/tiny:predict',
     {'json': {'inputs': {'pixels': _GOOD['instances']}}}, 400,
     "signature takes ['images']"),
    ('oversized body', 'POST', '/v1/models/tiny:predict',
     {'data': b'{"instances": [' + b'0.1, ' * 20000 + b'0.1]}'}, 413,
     'too large'),
    ('oversized chunked body', 'POST', '/v1/models/tiny:predict',
     {'data': iter([b'{"instances": [' + b'0.1, ' * 20000 + b'0.1]}'])}, 413,
     'too large'),
    ('unknown model', 'POST', '/v1/models/nope:predict', {'json': _GOOD}, 404,
     'Servable not found'),
    ('unknown model status', 'GET', '/v1/models/nope', {}, 404,
     'Servable not found'),
    ('unknown version', 'POST', '/v1/models/tiny/versions/7:predict',
     {'json': _GOOD}, 404, 'Specific(tiny, 7)'),
    ('unknown version metadata', 'GET', '/v1/models/tiny/versions/7/metadata',
     {}, 404, 'Servable not found'),
    ('non-numeric version', 'POST', '/v1/models/tiny/versions/x:predict',
     {'json': _GOOD}, 404, 'versions are numbers'),
    ('unknown verb', 'POST', '/v1/models/tiny:explain', {'json': _GOOD}, 404,
     ':predict only'),
    ('unknown path', 'GET', '/v2/everything', {}, 404, 'no such endpoint'),
    ('GET on predict', 'GET', '/v1/models/tiny:predict', {}, 405,
     'use POST'),
    ('POST on status', 'POST', '/v1/models/tiny', {'json': _GOOD}, 405,
     'not allowed'),
    ('DELETE on metadata', 'DELETE', '/v1/models/tiny/metadata', {}, 405,
     'not allowed'),
]


@pytest.mark.parametrize('case,method,path,kwargs,status,words', _BAD,
                         ids=[c[0] for c in _BAD])
def test_bad_request_gets_a_json_error(server, case, method, path, kwargs,
                                       status, words):
  del case
  r = requests.request(method, server.url + path, timeout=TIMEOUT, **kwargs)
  assert r.status_code == status, r.text
  assert r.headers['Content-Type'].startswith('application/json')
  body = r.json()
  assert set(body) == {'error'} and words in body['error'], body
  if status == 405:
    assert r.headers.get('Allow')
  # and the server still answers
  ok = _post(server, '/v1/models/tiny:predict', json=_GOOD)
  assert ok.status_code == 200 and len(ok.json()['predictions']) == 1


def test_errors_are_counted_and_the_server_keeps_going(server):
  stats = _get(server, '/monitoring/modelsteal/stats').json()
  assert stats['batching'] is True
  before = stats['models']['tiny']['errors']
  _post(server, '/v1/models/tiny:predict', data=b'nonsense')
  after = _get(server, '/monitoring/modelsteal/stats').json()
  assert after['models']['tiny']['errors'] == before + 1


# -- defences -------------------------------------------------------------------


def test_label_defence_reveals_labels_only(server, tiny_model):
  x = _x(6)
  md = _get(server, '/v1/models/tiny_label/metadata').json()
  sig = md['metadata']['signature_def']['signature_def']['serving_default']
  assert sorted(sig['outputs']) == ['label']
  assert md['modelsteal'] == {'defense': 'label', 'num_classes': 4}
  r = _post(server, '/v1/models/tiny_label:predict',
            json={'instances': x.tolist()})
  assert r.status_code == 200, r.text
  assert r.json()['predictions'] == list(_local(tiny_model, x).argmax(1))
  cols = _post(server, '/v1/models/tiny_label:predict',
               json={'inputs': x.tolist()}).json()
  assert cols['outputs'] == r.json()['predictions']


def test_rounding_defence_is_applied_before_answering(server, tiny_model):
  x = _x(6)
  preds = _post(server, '/v1/models/tiny_rounded:predict',
                json={'instances': x.tolist()}).json()['predictions']
  probs = np.array([p['probabilities'] for p in preds])
  np.testing.assert_allclose(probs, np.round(_local(tiny_model, x), 1),
                             atol=1e-6)
  assert [p['label'] for p in preds] == list(probs.argmax(1))


def test_mad_defence_reads_the_queries_and_keeps_top1(model_dir, tiny_model):
  sig = serving.load_servable(model_dir, 'tiny_mad', defense='mad:0.5,argmax',
                              versions='latest').version(None).signature(None)
  x = _x(8)
  out = sig.run({'images': x})
  probs, truth = out['probabilities'], _local(tiny_model, x)
  np.testing.assert_array_equal(out['label'], truth.argmax(1))
  assert (np.abs(probs - truth).sum(1) <= 0.5 + 1e-4).all()
  assert np.abs(probs - truth).sum(1).mean() > 0.01


def test_defence_needs_a_probabilities_output(tmp_path):
  import tensorflow as tf

  class Doubler(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def __call__(self, x):
      return {'y': 2 * x}

  m = Doubler()
  tf.saved_model.save(m, str(tmp_path / '1'),
                      signatures={'serving_default': m.__call__})
  with pytest.raises(serving.ServableLoadError, match='no "probabilities"'):
    serving.load_servable(str(tmp_path), 'd', defense='label')
  # without a defence any SavedModel serves; one output -> no names
  ms = serving.ModelServer([serving.load_servable(str(tmp_path), 'd')])
  with serving.BackgroundServer(ms.make_app()) as bg:
    r = requests.post(bg.url + '/v1/models/d:predict',
                      json={'instances': [[1, 2, 3]]}, timeout=TIMEOUT)
    assert r.json() == {'predictions': [[2.0, 4.0, 6.0]]}
    r = requests.post(bg.url + '/v1/models/d:predict',
                      json={'inputs': [[1, 2, 3], [0, 0, 1]]}, timeout=TIMEOUT)
    assert r.json() == {'outputs': [[2.0, 4.0, 6.0], [0.0, 0.0, 2.0]]}
    # an output overflowing to Infinity is written as TF Serving does
    r = requests.post(bg.url + '/v1/models/d:predict',
                      json={'instances': [[3e38, 1, 1]]}, timeout=TIMEOUT)
    assert r.status_code == 200 and 'Infinity' in r.text
    assert r.json()['predictions'] == [[float('inf'), 2.0, 2.0]]


# -- batching -------------------------------------------------------------------


def test_batcher_merges_concurrent_requests_and_splits_answers():
  calls = []

  def fn(inputs):
    calls.append(len(inputs['x']))
    return {'y': inputs['x'] * 10, 'n': np.full(len(inputs['x']), 1)}

  async def go(max_batch_size):
    calls.clear()
    b = serving.Batcher(fn, concurrent.futures.ThreadPoolExecutor(1),
                        max_batch_size=max_batch_size, timeout_s=5.0)
    reqs = [{'x': np.arange(k, k + size, dtype=np.float32)}
            for k, size in ((0, 2), (100, 3), (200, 1), (300, 4))]
    outs = await asyncio.gather(*[b.submit(r) for r in reqs])
    await b.close()
    for r, o in zip(reqs, outs):
      np.testing.assert_array_equal(o['y'], r['x'] * 10)
      assert len(o['n']) == len(r['x'])
    return list(calls), b.stats

  # all four arrive together: one call (the batch fills, no timeout wait)
  calls1, stats = asyncio.run(go(10))
  assert calls1 == [10] and stats.calls == 1 and stats.largest == 10
  # a smaller limit: batches never exceed it, nothing is lost
  calls2, stats = asyncio.run(go(5))
  assert calls2 == [5, 5] and stats.instances == 10


def test_batcher_answers_a_lone_request_at_once_and_waits_under_load():
  """An idle server does not wait out its window; after a batch of four,
  the next batch waits (within the window) for the four to come back."""
  import time  # pylint: disable=g-import-not-at-top
  calls = []

  def fn(inputs):
    calls.append(len(inputs['x']))
    return {'y': inputs['x']}

  async def go():
    b = serving.Batcher(fn, concurrent.futures.ThreadPoolExecutor(1),
                        max_batch_size=100, timeout_s=2.0)
    t0 = time.perf_counter()
    await b.submit({'x': np.zeros(1)})
    lone = time.perf_counter() - t0
    await asyncio.gather(*[b.submit({'x': np.zeros(1)}) for _ in range(4)])

    async def late(delay):
      await asyncio.sleep(delay)
      return await b.submit({'x': np.zeros(1)})

    # the four clients ask again, not quite together
    await asyncio.gather(*[late(0.02 * i) for i in range(4)])
    await b.close()
    return lone

  lone = asyncio.run(go())
  assert lone < 1.0  # not the 2 s window
  assert calls == [1, 4, 4]


def test_batcher_isolates_a_failing_request():

  def fn(inputs):
    if (inputs['x'] < 0).any():
      raise ValueError('negative input')
    return {'y': inputs['x'] + 1}

  async def go():
    b = serving.Batcher(fn, concurrent.futures.ThreadPoolExecutor(1),
                        max_batch_size=100, timeout_s=0.05)
    return await asyncio.gather(
        b.submit({'x': np.array([1.0])}), b.submit({'x': np.array([-1.0])}),
        b.submit({'x': np.array([2.0, 3.0])}), return_exceptions=True)

  good, bad, good2 = asyncio.run(go())
  assert isinstance(bad, ValueError)
  np.testing.assert_array_equal(good['y'], [2.0])
  np.testing.assert_array_equal(good2['y'], [3.0, 4.0])


def test_concurrent_clients_each_get_their_own_answers(server, tiny_model):
  xs = [_x(1 + i % 3, seed=100 + i) for i in range(24)]

  def ask(x):
    r = _post(server, '/v1/models/tiny:predict', json={'inputs': x.tolist()})
    assert r.status_code == 200, r.text
    return np.array(r.json()['outputs']['probabilities'])

  with concurrent.futures.ThreadPoolExecutor(12) as pool:
    answers = list(pool.map(ask, xs))
  for x, a in zip(xs, answers):
    np.testing.assert_allclose(a, _local(tiny_model, x), atol=1e-5)
  batches = _get(server, '/monitoring/modelsteal/stats').json()['batches']
  assert any(b['model'] == 'tiny' and b['instances'] >= 48 for b in batches)


def test_unbatched_server_answers_the_same(model_dir, tiny_model):
  ms = serving.ModelServer([serving.load_servable(model_dir, 'tiny',
                                                  versions='latest')],
                           batching=False)
  x = _x(3)
  with serving.BackgroundServer(ms.make_app()) as bg:
    r = requests.post(bg.url + '/v1/models/tiny:predict',
                      json={'inputs': x.tolist()}, timeout=TIMEOUT)
    np.testing.assert_allclose(r.json()['outputs']['probabilities'],
                               _local(tiny_model, x), atol=1e-5)
    stats = requests.get(bg.url + '/monitoring/modelsteal/stats',
                         timeout=TIMEOUT).json()
  assert stats['batching'] is False and stats['batches'] == []


# -- the command line -----------------------------------------------------------


def _serve_main(capsys, **flags):
  from pipelines import serve
  with pytest.raises(SystemExit) as e:
    with flagsaver.flagsaver(**flags):
      serve.main(['serve'])
  err = capsys.readouterr().err
  return e.value.code, err


def test_serve_cli_rejects_bad_arguments(tmp_path, model_dir, capsys):
  (tmp_path / 'junk').mkdir()
  code, err = _serve_main(capsys, model_dir=str(tmp_path / 'junk'))
  assert code == 2 and 'not a servable model' in err and 'Traceback' not in err
  code, err = _serve_main(capsys, model_dir=str(tmp_path / 'missing'))
  assert code == 2 and 'no such directory' in err
  code, err = _serve_main(capsys, model_dir=model_dir,
                          output_defense='blur:3')
  assert code == 2 and 'valid forms' in err
  code, err = _serve_main(capsys, model_dir=None)
  assert code == 2 and '--model_dir is required' in err


class _CliServer:
  """`python -m pipelines.serve ... --port=0` in a subprocess; reads the URL
  it prints. Killed after `limit_s` whatever happens."""

  def __init__(self, *args, limit_s=180):
    env = dict(os.environ, MODELSTEAL_OFFLINE='1', TF_CPP_MIN_LOG_LEVEL='2')
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'pipelines.serve', '--port=0',
         '--grpc_port=0', *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    self._killer = threading.Timer(limit_s, self.proc.kill)
    self._killer.start()
    self.lines = []
    self.url = self.grpc = None
    for line in self.proc.stdout:
      self.lines.append(line)
      if line.startswith('[serve] listening:'):
        self.url = line.split()[2]
      elif line.startswith('[serve] grpc:'):
        self.grpc = line.split()[2]
      if self.url and (self.grpc or '--grpc_port=-1' in args):
        return
    self.close()
    raise AssertionError('the server did not start:\n' + ''.join(self.lines))

  def close(self):
    self.proc.terminate()
    try:
      self.proc.wait(30)
    finally:
      self._killer.cancel()
      self.proc.kill()
      self.proc.stdout.close()


def test_active_rounds_over_http_with_probability_answers(server, tiny_npz,
                                                          tmp_path):
  """Round-based stealing (margin) of a REST victim that answers
  probabilities: the same oracle path, every round's queries paid over
  HTTP, exactly the budget."""
  from pipelines import steal
  wd = str(tmp_path / 'w')
  before = server.model_server.stats['tiny'].instances
  with flagsaver.flagsaver(victim_url=server.url + '/v1/models/tiny',
                           dataset=tiny_npz, workdir=wd, smoke=True,
                           output='probs', query_strategy='margin',
                           round_schedule=['20', '60'],
                           students=['mnist_mlp']):
    steal.main(['steal'])
  path, = glob.glob(os.path.join(wd, 'steal_rounds', '*', 'rounds.csv'))
  df = pd.read_csv(path)
  assert list(df['queries']) == [20, 60]
  assert list(df['queries_paid']) == [20, 60]
  assert df['output'].eq('probs').all()
  # 60 training queries, plus the victim's scoring on test/held-out images
  assert server.model_server.stats['tiny'].instances >= before + 60


@pytest.mark.slow
def test_steal_over_http_then_serve_the_student(server, tiny_npz, tmp_path):
  """The acceptance test, on loopback: steal a served victim with
  --victim_url (smoke), serve the exported student with the command line,
  query it with plain TF Serving REST calls, compare with the local model."""
  df, sent = steal_smoke(server.model_server.stats['tiny'], tiny_npz,
                         str(tmp_path / 'w'),
                         victim_url=server.url + '/v1/models/tiny')
  assert sent > 0

  student = df['saved_model'].iloc[1]  # .../model/serving/1
  cli = _CliServer(f'--model_dir={os.path.dirname(student)}',
                   '--model_name=student')
  try:
    assert cli.url.endswith('/v1/models/student')
    base = cli.url.rsplit('/v1/', 1)[0]
    status = requests.get(f'{base}/v1/models/student', timeout=TIMEOUT).json()
    assert status['model_version_status'][0]['version'] == '1'
    assert status['model_version_status'][0]['state'] == 'AVAILABLE'
    md = requests.get(f'{base}/v1/models/student/metadata',
                      timeout=TIMEOUT).json()
    assert 'serving_default' in md['metadata']['signature_def'][
        'signature_def']
    x = _x(8, seed=11)
    rows = requests.post(f'{base}/v1/models/student:predict',
                         data=json.dumps({'instances': x.tolist()}),
                         timeout=TIMEOUT)
    assert rows.status_code == 200, rows.text
    cols = requests.post(f'{base}/v1/models/student/versions/1:predict',
                         json={'signature_name': 'serving_default',
                               'inputs': {'images': x.tolist()}},
                         timeout=TIMEOUT)
    assert cols.status_code == 200, cols.text
    local = load_predictor(student)(x)
    np.testing.assert_allclose(
        [p['probabilities'] for p in rows.json()['predictions']], local,
        atol=1e-5)
    np.testing.assert_allclose(cols.json()['outputs']['probabilities'], local,
                               atol=1e-5)
    assert cols.json()['outputs']['label'] == list(local.argmax(1))
    # the same model over gRPC, as a stock TF Serving client asks it
    import grpc  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
    req = predict_pb2.PredictRequest()
    req.model_spec.name = 'student'
    req.inputs['images'].CopyFrom(tf.make_tensor_proto(x))
    with grpc.insecure_channel(cli.grpc) as channel:
      resp = prediction_service_pb2_grpc.PredictionServiceStub(
          channel).Predict(req, TIMEOUT)
    np.testing.assert_allclose(
        tf.make_ndarray(resp.outputs['probabilities']), local, atol=1e-5)
    bad = requests.post(f'{base}/v1/models/student:predict',
                        data=b'{"instances": [1,', timeout=TIMEOUT)
    assert bad.status_code == 400 and 'error' in bad.json()
  finally:
    cli.close()
  assert cli.proc.returncode is not None


def test_codec_without_orjson_gives_the_same_answers(monkeypatch):
  from modelsteal.serving import codec
  body = json.dumps({'instances': [[0.25, 1e-3]], 'signature_name': 's'})
  fast = codec.decode_json(body.encode())
  out = {'p': np.array([[0.5, np.float32(0.1)]], np.float32)}
  fast_out = codec.encode_json(codec.format_predictions(out, True))
  monkeypatch.setattr(codec, 'orjson', None)
  assert codec.decode_json(body.encode()) == fast
  slow_out = codec.encode_json(codec.format_predictions(out, True))
  # the same float32 values (orjson writes float32's shortest repr, json
  # the float64 repr of the same float32)
  np.testing.assert_array_equal(
      np.float32(json.loads(slow_out)['predictions']),
      np.float32(json.loads(fast_out)['predictions']))
  with pytest.raises(codec.ServingError, match='JSON Parse error'):
    codec.decode_json(b'{"instances": [1,')
  assert codec.decode_json(b'{"inputs": [NaN]}')['inputs'][0] != 0


def _spec(shape=(None, 2, 2, 1)):
  from modelsteal.serving.registry import TensorSpec  # pylint: disable=g-import-not-at-top
  return {'images': TensorSpec('images:0', 'float32', shape)}


def test_fast_request_path_reads_exactly_what_the_general_path_reads():
  from modelsteal.serving import codec  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).random((3, 2, 2, 1)).astype(np.float32)
  x[0, 0, 0, 0] = -1.5e-7
  specs = _spec()
  for obj in ({'instances': x.tolist()},
              {'signature_name': 'serving_default', 'inputs': x.tolist()}):
    for body in (json.dumps(obj).encode(), json.dumps(obj, indent=2).encode()):
      fast = codec.fast_predict_request(body, lambda name: specs)
      assert fast is not None, body[:80]
      general, rows = codec.parse_predict_request(codec.decode_json(body),
                                                  specs)
      np.testing.assert_array_equal(fast[0]['images'], general['images'])
      assert fast[1] == rows == ('instances' in obj)
      assert fast[2] == obj.get('signature_name')


@pytest.mark.parametrize('body', [
    b'{"instances": [[[[1],[2]],[[3],[4]]], [[[1],[2]],[[3]]]]}',  # ragged
    b'{"instances": [[[[1],[2]],[[3],[4,5]]]]}',  # an extra value, same count
    b'{"instances": [[[[1],[2]],[[3],[4]]]], "x": 1}',  # unknown key
    b'{"instances": [[[[1],[2]],[[3],[4]]]], "signature_name": 3}',
    b'{"instances": [[[[1],[2]],[[3],[1-2]]]]}',  # not a number
    b'{"instances": [[[[1],[2]],[[3],[1e999]]]]}',  # overflows
    b'{"instances": [[[[1],[2]],[[3],[4]]]]',  # not JSON
    b'{"instances": [], "inputs": [[[[1],[2]],[[3],[4]]]]}',
    b'{"instances": [[[[1],[2]],[[3],[4]]],], "a": 1}',
])
def test_fast_request_path_leaves_anything_odd_to_the_general_path(body):
  from modelsteal.serving import codec  # pylint: disable=g-import-not-at-top
  assert codec.fast_predict_request(body, lambda name: _spec()) is None


def _png(img):
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format='PNG')
  import base64  # pylint: disable=g-import-not-at-top
  return base64.b64encode(buf.getvalue()).decode()


def test_b64_png_instances_are_decoded_as_images(server, tiny_model):
  x = _x(3)
  pixels = np.round(x[..., 0] * 255).astype(np.uint8)
  rows = [{'b64': _png(p)} for p in pixels]
  r = _post(server, '/v1/models/tiny:predict', json={'instances': rows})
  assert r.status_code == 200, r.text
  want = _local(tiny_model, pixels[..., None].astype(np.float32) / 255)
  np.testing.assert_allclose([p['probabilities'] for p in
                              r.json()['predictions']], want, atol=1e-5)
  r = _post(server, '/v1/models/tiny:predict',
            json={'inputs': {'b64': _png(pixels[0])}})
  assert r.status_code == 200, r.text
  bad = _post(server, '/v1/models/tiny:predict',
              json={'instances': [{'b64': _png(np.zeros((5, 5), np.uint8))}]})
  assert bad.status_code == 400 and '5x5' in bad.json()['error']
  junk = _post(server, '/v1/models/tiny:predict',
               json={'instances': [{'b64': 'aGVsbG8='}]})
  assert junk.status_code == 400 and 'not a PNG' in junk.json()['error']


