"""UQ students (modelsteal.uq): validity, stochasticity, seeds, export, serving,
diversity metrics, specs."""

import numpy as np
import pytest
import requests
import tensorflow as tf

from modelsteal import uq
from modelsteal.training import TrainConfig
from modelsteal.uq import diversity as div
from pipelines import serve
from tests.conftest import synthetic_images

SPECS = ['ensemble:mnist_mlp:members=3', 'mcdropout:mnist_mlp:samples=8',
         'swag:mnist_mlp:samples=4:epochs=2', 'batchensemble:mnist_mlp:members=3',
         'bbb:mnist_mlp:samples=6:init_std=0.05']


def _fit(spec, tmp, seed=0, probe=True):
  x, y = synthetic_images(192, seed=1)
  px, _ = synthetic_images(32, seed=2)
  ctx = uq.FitContext(scratch=str(tmp), probe_x=px if probe else None,
                      probe_every=3, verbose=0)
  return uq.fit(uq.parse_spec(spec), x, y, 4,
                TrainConfig(epochs=2, batch_size=32), seed, ctx)


@pytest.fixture(scope='module')
def students(tmp_path_factory):
  return {s: _fit(s, tmp_path_factory.mktemp('scratch')) for s in SPECS}


@pytest.fixture(scope='module')
def probe_x():
  return synthetic_images(40, seed=5)[0]


@pytest.mark.slow
@pytest.mark.parametrize('spec', SPECS)
def test_combined_prediction_is_a_distribution(students, probe_x, spec):
  student, trace = students[spec]
  p = student.sample_probs(probe_x)
  assert p.shape == (student.num_samples, 40, 4)
  mean = student.predict_probs(probe_x)
  assert np.all(mean >= 0) and np.allclose(mean.sum(1), 1, atol=1e-5)
  # learnable toy data: the combined student is far above chance (25%)
  y = synthetic_images(40, seed=5)[1]
  assert (mean.argmax(1) == y).mean() > 0.6
  # the diversity trace was logged from the first step to the last
  frame = uq.trace_frame(trace)
  assert len(frame) >= 3 and frame['step'].is_monotonic_increasing
  assert frame['step'].iloc[-1] >= 12  # 2 epochs x 6 steps


@pytest.mark.parametrize('spec', ['mcdropout:mnist_mlp:samples=8',
                                  'swag:mnist_mlp:samples=4:epochs=2',
                                  'bbb:mnist_mlp:samples=6:init_std=0.05'])
def test_stochastic_samples_differ(students, probe_x, spec):
  student, _ = students[spec]
  p = student.sample_probs(probe_x)
  for t in range(1, len(p)):
    assert np.abs(p[t] - p[0]).max() > 1e-4, f'sample {t} equals sample 0'
  # and from the deterministic mean network (dropout off / mean weights)
  if spec.startswith(('mcdropout', 'bbb')):
    mean_net = tf.nn.softmax(student.models[0](probe_x, training=False)).numpy()
    assert np.abs(p - mean_net[None]).max() > 1e-4


@pytest.mark.slow
def test_mc_dropout_keeps_batchnorm_in_inference_mode(tmp_path):
  """cifar10_cnn has BatchNorm: a batch of one must get the same answer as
  the same image inside a larger batch (batch statistics would differ)."""
  x, y = synthetic_images(64, seed=1, size=16)
  x = np.repeat(x, 3, axis=-1)
  spec = uq.parse_spec('mcdropout:cifar10_cnn:samples=3')
  student, _ = uq.fit(spec, x, y, 4, TrainConfig(epochs=1, batch_size=32), 0,
                      uq.FitContext(scratch=str(tmp_path), verbose=0))
  alone = student.sample_probs(x[:1])
  batch = student.sample_probs(x[:16])[:, :1]
  np.testing.assert_allclose(alone, batch, atol=1e-5)


def test_sampling_and_training_are_seeded(students, probe_x, tmp_path):
  spec = 'mcdropout:mnist_mlp:samples=8'
  student, _ = students[spec]
  np.testing.assert_array_equal(student.sample_probs(probe_x),
                                student.sample_probs(probe_x))
  again, _ = _fit(spec, tmp_path / 'a', probe=False)
  np.testing.assert_allclose(again.predict_probs(probe_x),
                             student.predict_probs(probe_x), atol=1e-5)
  other, _ = _fit(spec, tmp_path / 'b', seed=1, probe=False)
  assert np.abs(other.predict_probs(probe_x) -
                student.predict_probs(probe_x)).max() > 1e-3


@pytest.mark.parametrize('spec', SPECS)
def test_save_load_and_export_reproduce_the_keras_output(students, probe_x,
                                                         spec, tmp_path):
  student, _ = students[spec]
  want = student.sample_probs(probe_x)
  student.save(str(tmp_path / 'uq'))
  np.testing.assert_allclose(uq.load_student(str(tmp_path / 'uq')).sample_probs(
      probe_x), want, atol=1e-6)
  version = uq.export_uq_saved_model(student, str(tmp_path / 'serving'), 1)
  out = tf.saved_model.load(version).signatures['serving_default'](
      images=tf.constant(probe_x))
  mean = want.mean(0)
  np.testing.assert_allclose(out['probabilities'].numpy(), mean, atol=1e-5)
  np.testing.assert_array_equal(out['label'].numpy(), mean.argmax(1))
  np.testing.assert_allclose(out['entropy'].numpy(), div.entropy(mean),
                             atol=1e-4)
  np.testing.assert_allclose(out['mutual_information'].numpy(),
                             div.mutual_information(want), atol=1e-4)


def test_exported_uq_student_serves_through_pipelines_serve(students, probe_x,
                                                            tmp_path):
  from modelsteal import serving  # pylint: disable=g-import-not-at-top
  student, _ = students['mcdropout:mnist_mlp:samples=8']
  base = str(tmp_path / 'served')
  uq.export_uq_saved_model(student, base, 1)
  ms = serve.build_server(serve.ServeConfig(model_dir=base, model_name='uq'))
  with serving.BackgroundServer(ms.make_app(grpc_port=0)) as bg:
    r = requests.post(bg.url + '/v1/models/uq:predict',
                      json={'instances': probe_x[:5].tolist()}, timeout=60)
    assert r.status_code == 200, r.text
    preds = r.json()['predictions']
    import grpc  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
    req = predict_pb2.PredictRequest()
    req.model_spec.name = 'uq'
    req.inputs['images'].CopyFrom(tf.make_tensor_proto(probe_x[:5]))
    with grpc.insecure_channel(f'127.0.0.1:{ms.grpc.port}') as channel:
      out = prediction_service_pb2_grpc.PredictionServiceStub(
          channel).Predict(req, 60)
  want = student.sample_probs(probe_x[:5])
  np.testing.assert_allclose(tf.make_ndarray(out.outputs['probabilities']),
                             want.mean(0), atol=1e-5)
  np.testing.assert_allclose(
      tf.make_ndarray(out.outputs['mutual_information']),
      div.mutual_information(want), atol=1e-4)
  np.testing.assert_allclose([p['probabilities'] for p in preds],
                             want.mean(0), atol=1e-5)
  np.testing.assert_allclose([p['mutual_information'] for p in preds],
                             div.mutual_information(want), atol=1e-4)


def test_diversity_metrics_by_hand():
  # 2 members, 2 images, 2 classes
  p = np.array([[[0.9, 0.1], [0.2, 0.8]],
                [[0.5, 0.5], [0.6, 0.4]]])
  # variance over members of each (image, class): (0.4/2)^2 = 0.04 and
  # (0.4/2)^2 = 0.04 everywhere -> 0.04
  assert div.prediction_variance(p) == pytest.approx(0.04)
  # top-1: member 0 -> [0, 1], member 1 -> [0 (tie -> first), 0]: 1 of 2 differ
  assert div.pairwise_disagreement(p) == pytest.approx(0.5)
  h = lambda q: -sum(v * np.log(v) for v in q)
  mi0 = h([0.7, 0.3]) - (h([0.9, 0.1]) + h([0.5, 0.5])) / 2
  mi1 = h([0.4, 0.6]) - (h([0.2, 0.8]) + h([0.6, 0.4])) / 2
  np.testing.assert_allclose(div.mutual_information(p), [mi0, mi1])
  assert div.diversity(p)['mutual_information'] == pytest.approx((mi0 + mi1) / 2)
  # three members: pairs (0,1), (0,2), (1,2)
  top = np.eye(3)[[[0, 1], [0, 2], [1, 2]]]  # one-hot (3 members, 2 images)
  assert div.pairwise_disagreement(top) == pytest.approx((0.5 + 1 + 0.5) / 3)
  assert div.pairwise_disagreement(p[:1]) == 0.0


def test_expected_calibration_error_by_hand():
  probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7]])
  labels = np.array([0, 1, 0, 1])
  # bins: (0.933, 1]: two images, accuracy 0.5, confidence 0.95 -> 0.45;
  # (0.6 - 1/15 ...]: 0.6 correct -> |1 - 0.6|; 0.7 correct -> |1 - 0.7|
  want = 0.5 * 0.45 + 0.25 * 0.4 + 0.25 * 0.3
  assert div.expected_calibration_error(probs, labels) == pytest.approx(want)


@pytest.mark.parametrize('text, match', [
    ('nope:mnist_cnn', 'unknown UQ method'),
    ('ensemble:resnet9000', 'unknown base architecture'),
    ('ensemble:mnist_cnn:members=0', 'members must be an integer'),
    ('ensemble:mnist_cnn:members=2.5', 'members must be an integer'),
    ('ensemble:mnist_cnn:members=abc', 'needs a number'),
    ('mcdropout:mnist_cnn:rate=1.5', 'rate must be in'),
    ('mcdropout:mnist_cnn:bogus=1', 'unknown option'),
    ('mcdropout:mnist_cnn+lenet5', 'only ensemble takes several'),
    ('ensemble', 'write METHOD:ARCH'),
])
def test_bad_specs_say_what_is_wrong(text, match):
  with pytest.raises(uq.UQSpecError, match=match):
    uq.parse_spec(text)


def test_spec_round_trip_and_canonical_form():
  s = uq.parse_spec('ensemble:mnist_cnn+lenet5:members=5:bootstrap=1')
  assert str(s) == 'ensemble:mnist_cnn+lenet5:bootstrap=1'  # members=5 default
  assert uq.parse_spec(str(s)) == s
