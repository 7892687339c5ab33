"""TF Serving's gRPC API from `modelsteal.serving`: a stock
`tensorflow_serving.apis` client (Predict, GetModelMetadata, Classify,
GetModelStatus), every bad request's status code, the defence, batching
shared with REST, and 8 clients on loopback with no failed request.

Servers bind 127.0.0.1 on free ports; every call has a deadline.
"""

import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from modelsteal import serving
from tests.conftest import serve_in_background
from tests.conftest import softmax
from tests.conftest import synthetic_images
from tests.conftest import tiny_model_server

DEADLINE = 30.0  # seconds, per call


@pytest.fixture(scope='module')
def server(model_dir):
  ms = tiny_model_server(model_dir)
  with serve_in_background(ms, grpc_port=0) as bg:
    bg.channel = grpc.insecure_channel(f'127.0.0.1:{ms.grpc.port}')
    bg.stub = prediction_service_pb2_grpc.PredictionServiceStub(bg.channel)
    yield bg
    bg.channel.close()


def _x(n=5, seed=7):
  return synthetic_images(n, seed=seed)[0]


def _request(x, name='tiny', version=None, signature='serving_default',
             input_name='images'):
  """Written as in TF Serving's own client examples."""
  req = predict_pb2.PredictRequest()
  req.model_spec.name = name
  req.model_spec.signature_name = signature
  if version is not None:
    req.model_spec.version.value = version
  req.inputs[input_name].CopyFrom(tf.make_tensor_proto(x))
  return req


@pytest.mark.parametrize('n', [5, 1])
def test_stock_client_gets_the_keras_probabilities(server, tiny_model, n):
  x = _x(n)
  resp = server.stub.Predict(_request(x), DEADLINE)
  probs = tf.make_ndarray(resp.outputs['probabilities'])
  np.testing.assert_allclose(probs, softmax(tiny_model(x).numpy()),
                             atol=1e-5)
  np.testing.assert_array_equal(tf.make_ndarray(resp.outputs['label']),
                                probs.argmax(1))
  assert resp.model_spec.name == 'tiny'
  assert resp.model_spec.version.value == 2
  assert resp.model_spec.signature_name == 'serving_default'


def test_versions_and_float_val_tensors(server, tiny_model):
  x = _x(3)
  # version 1 inverts its input; a tensor written value by value (float_val,
  # not tensor_content) reads the same
  req = _request(x, version=1)
  t = req.inputs['images']
  t.ClearField('tensor_content')
  t.float_val.extend(x.reshape(-1).tolist())
  resp = server.stub.Predict(req, DEADLINE)
  np.testing.assert_allclose(tf.make_ndarray(resp.outputs['probabilities']),
                             softmax(tiny_model(1.0 - x).numpy()), atol=1e-5)
  assert resp.model_spec.version.value == 1


def test_output_filter_and_label_defence(server):
  req = _request(_x(4))
  req.output_filter.append('label')
  resp = server.stub.Predict(req, DEADLINE)
  assert set(resp.outputs) == {'label'}
  resp = server.stub.Predict(_request(_x(4), name='tiny_label'), DEADLINE)
  assert set(resp.outputs) == {'label'}  # the probabilities never leave
  assert tf.make_ndarray(resp.outputs['label']).shape == (4,)


def test_metadata_and_status(server):
  req = get_model_metadata_pb2.GetModelMetadataRequest()
  req.model_spec.name = 'tiny'
  req.metadata_field.append('signature_def')
  resp = server.stub.GetModelMetadata(req, DEADLINE)
  sigs = get_model_metadata_pb2.SignatureDefMap()
  resp.metadata['signature_def'].Unpack(sigs)
  sig = sigs.signature_def['serving_default']
  assert [d.size for d in sig.inputs['images'].tensor_shape.dim] == [
      -1, 12, 12, 1]
  assert sig.inputs['images'].dtype == tf.float32.as_datatype_enum
  assert set(sig.outputs) >= {'probabilities', 'label'}
  assert resp.model_spec.version.value == 2
  # the label-only model's metadata lists no probabilities
  req.model_spec.name = 'tiny_label'
  resp = server.stub.GetModelMetadata(req, DEADLINE)
  resp.metadata['signature_def'].Unpack(sigs)
  assert 'probabilities' not in sigs.signature_def['serving_default'].outputs

  stub = model_service_pb2_grpc.ModelServiceStub(server.channel)
  sreq = get_model_status_pb2.GetModelStatusRequest()
  sreq.model_spec.name = 'tiny'
  status = stub.GetModelStatus(sreq, DEADLINE)
  assert [v.version for v in status.model_version_status] == [2, 1]
  assert all(v.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
             for v in status.model_version_status)


def test_classify_with_examples(server, tiny_model):
  x = _x(3)
  req = classification_pb2.ClassificationRequest()
  req.model_spec.name = 'tiny'
  for img in x:
    ex = req.input.example_list.examples.add()
    ex.features.feature['images'].float_list.value.extend(
        img.reshape(-1).tolist())
  resp = server.stub.Classify(req, DEADLINE)
  scores = np.array([[c.score for c in cl.classes]
                     for cl in resp.result.classifications])
  np.testing.assert_allclose(scores, softmax(tiny_model(x).numpy()),
                             atol=1e-5)
  assert [c.label for c in resp.result.classifications[0].classes] == [
      '0', '1', '2', '3']


def _bad(kind):
  x = _x(2)
  if kind == 'dtype':
    return _request(x.astype(np.float64)), grpc.StatusCode.INVALID_ARGUMENT
  if kind == 'shape':
    return _request(x[:, :6]), grpc.StatusCode.INVALID_ARGUMENT
  if kind == 'nan':
    x[0, 0, 0, 0] = np.nan
    return _request(x), grpc.StatusCode.INVALID_ARGUMENT
  if kind == 'input_name':
    return _request(x, input_name='pixels'), grpc.StatusCode.INVALID_ARGUMENT
  if kind == 'signature':
    return _request(x, signature='nope'), grpc.StatusCode.INVALID_ARGUMENT
  if kind == 'content_bytes':
    req = _request(x)
    req.inputs['images'].tensor_content = b'\0' * 12
    return req, grpc.StatusCode.INVALID_ARGUMENT
  if kind == 'model':
    return _request(x, name='nope'), grpc.StatusCode.NOT_FOUND
  if kind == 'version':
    return _request(x, version=7), grpc.StatusCode.NOT_FOUND
  if kind == 'too_large':  # the limit is 64 KiB; this is 576 KiB
    return _request(_x(1000)), grpc.StatusCode.RESOURCE_EXHAUSTED
  raise AssertionError(kind)


@pytest.mark.parametrize('kind', ['dtype', 'shape', 'nan', 'input_name',
                                  'signature', 'content_bytes', 'model',
                                  'version', 'too_large'])
def test_bad_requests_get_their_code_and_the_server_goes_on(server, kind):
  req, code = _bad(kind)
  with pytest.raises(grpc.RpcError) as e:
    server.stub.Predict(req, DEADLINE)
  assert e.value.code() == code, e.value.details()
  assert e.value.details()  # says what was wrong
  ok = server.stub.Predict(_request(_x(2)), DEADLINE)
  assert tf.make_ndarray(ok.outputs['probabilities']).shape == (2, 4)


def test_unserved_methods_say_so(server):
  from tensorflow_serving.apis import regression_pb2  # pylint: disable=g-import-not-at-top
  req = regression_pb2.RegressionRequest()
  req.model_spec.name = 'tiny'
  with pytest.raises(grpc.RpcError) as e:
    server.stub.Regress(req, DEADLINE)
  assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_rest_and_grpc_share_one_batching_queue(server, tiny_model):
  """Concurrent REST and gRPC requests of the same signature answer right,
  and every one of them went through the one batcher."""
  stats = server.model_server._batchers  # pylint: disable=protected-access
  key = ('tiny', 2, 'serving_default')
  before = stats[key].stats.instances if key in stats else 0
  x = _x(6, seed=11)
  want = softmax(tiny_model(x).numpy())
  results, errors = {}, []

  def rest(i):
    try:
      r = requests.post(server.url + '/v1/models/tiny:predict',
                        json={'instances': x[i:i + 1].tolist()}, timeout=30)
      results[('rest', i)] = np.array(r.json()['predictions'][0][
          'probabilities'])
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  def rpc(i):
    try:
      resp = server.stub.Predict(_request(x[i:i + 1]), DEADLINE)
      results[('grpc', i)] = tf.make_ndarray(
          resp.outputs['probabilities'])[0]
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=f, args=(i,)) for i in range(6)
             for f in (rest, rpc)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert not errors
  for (_, i), p in results.items():
    np.testing.assert_allclose(p, want[i], atol=1e-5)
  assert len(results) == 12
  assert stats[key].stats.instances - before == 12


def test_eight_clients_for_a_bounded_time_fail_nothing(server, tiny_model):
  x = _x(16, seed=3)
  want = softmax(tiny_model(x).numpy())
  deadline = time.monotonic() + 3.0
  counts, failures = [0] * 8, []

  def client(i):
    channel = grpc.insecure_channel(f'127.0.0.1:{server.model_server.grpc.port}')
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    k = i
    while time.monotonic() < deadline and counts[i] < 2000:
      n = 1 + k % 16
      try:
        resp = stub.Predict(_request(x[:n]), DEADLINE)
        got = tf.make_ndarray(resp.outputs['probabilities'])
        if not np.allclose(got, want[:n], atol=1e-5):
          failures.append(f'client {i}: wrong answer for {n} images')
      except grpc.RpcError as e:
        failures.append(f'client {i}: {e.code()} {e.details()}')
      counts[i] += 1
      k += 1
    channel.close()

  threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert not failures, failures[:3]
  assert min(counts) > 0 and sum(counts) >= 8


def test_a_taken_grpc_port_is_one_clear_error(model_dir, server):
  ms = serving.ModelServer([serving.load_servable(model_dir, 'again')])
  with pytest.raises(OSError, match='--grpc_port'):
    with serving.BackgroundServer(ms.make_app(grpc_port=server.model_server
                                              .grpc.port)):
      pass
