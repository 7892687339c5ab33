"""modelsteal.oracle.grpc_oracle: a victim over TF Serving's gRPC API, with
the local oracle's budget and cache; label-only answers, halving on the
size limit, retries, clear errors, resume with nothing paid twice, and the
steal pipeline with --victim_grpc.

Servers bind 127.0.0.1 on free ports; every RPC has a deadline.
"""

import glob
import os
import socket

import grpc
import numpy as np
import pandas as pd
import pytest
from absl.testing import flagsaver

from modelsteal import attacks
from modelsteal import data
from modelsteal import serving
from modelsteal.export import export_saved_model
from modelsteal.export import load_predictor
from modelsteal.oracle import BudgetExceededError
from modelsteal.oracle import OracleError
from modelsteal.oracle import grpc_oracle
from modelsteal.oracle import make_oracle
from tests.conftest import synthetic_images


@pytest.fixture(scope='module')
def victim_dir(tiny_model, tmp_path_factory):
  base = str(tmp_path_factory.mktemp('grpc_victim') / 'v')
  export_saved_model(tiny_model, base, version=1)
  return base


@pytest.fixture(scope='module')
def server(victim_dir):
  ms = serving.ModelServer([
      serving.load_servable(victim_dir, 'victim'),
      serving.load_servable(victim_dir, 'victim_label', defense='label'),
      serving.load_servable(victim_dir, 'victim_resume'),
      serving.load_servable(victim_dir, 'victim_steal'),
  ])
  with serving.BackgroundServer(ms.make_app(grpc_port=0)) as bg:
    bg.model_server = ms
    bg.address = f'127.0.0.1:{ms.grpc.port}'
    yield bg


def _fast(**kw):
  return dict(retries=2, backoff_s=0.01, timeout_s=10, **kw)


def test_answers_match_the_local_victim_with_budget_and_cache(
    server, victim_dir, tmp_path):
  address = server.address + '/victim'
  ref = grpc_oracle.victim_ref_from_address(address)
  assert ref['kind'] == 'grpc' and ref['num_classes'] == 4
  assert ref['version'] == '1' and ref['input_shape'] == [12, 12, 1]
  x = synthetic_images(10, seed=5)[0]
  oracle = make_oracle(ref, output='probs', budget=15, cache_dir=str(tmp_path))
  oracle.batch_size = 4
  got = oracle.query(x)
  np.testing.assert_allclose(got, load_predictor(victim_dir)(x), atol=1e-5)
  assert oracle.paid == 10 and oracle.requests_sent == 3
  with pytest.raises(BudgetExceededError):
    oracle.query(synthetic_images(6, seed=6)[0])
  again = make_oracle(ref, output='probs', cache_dir=str(tmp_path))
  np.testing.assert_allclose(again.query(x), got)
  assert again.paid == 0 and again.requests_sent == 0
  assert again._ch is None  # a fully cached run opened no channel


def test_label_only_endpoint_gives_one_hot_answers(server, victim_dir):
  ref = grpc_oracle.victim_ref_from_address(server.address + '/victim_label',
                                            num_classes=4)
  x = synthetic_images(7, seed=8)[0]
  got = make_oracle(ref, output='probs').query(x)
  assert got.shape == (7, 4) and (got.sum(1) == 1).all()
  np.testing.assert_array_equal(got.argmax(1),
                                load_predictor(victim_dir)(x).argmax(1))


def test_fingerprint_names_the_version_and_the_transport(server):
  from modelsteal.oracle import rest  # pylint: disable=g-import-not-at-top
  a = grpc_oracle.victim_ref_from_address(server.address + '/victim')
  b = grpc_oracle.victim_ref_from_address(server.address +
                                          '/victim/versions/1')
  c = grpc_oracle.victim_ref_from_address(server.address + '/victim_label')
  d = rest.victim_ref_from_url(server.url + '/v1/models/victim')
  assert len({a['fingerprint'], b['fingerprint'], c['fingerprint'],
              d['fingerprint']}) == 4


def test_a_small_message_limit_halves_the_batch(victim_dir):
  ms = serving.ModelServer([serving.load_servable(victim_dir, 'v')],
                           max_body_bytes=20_000)  # < 20 images of 12x12
  x = synthetic_images(40, seed=9)[0]
  with serving.BackgroundServer(ms.make_app(grpc_port=0)):
    ref = grpc_oracle.victim_ref_from_address(f'127.0.0.1:{ms.grpc.port}/v')
    oracle = make_oracle(ref, output='probs')
    got = oracle.query(x)
  np.testing.assert_allclose(got, load_predictor(victim_dir)(x), atol=1e-5)
  assert oracle.batch_size <= 20 and ms.stats['v'].instances == 40


@pytest.mark.parametrize('address', ['127.0.0.1/m', '127.0.0.1:85', 'h:1/',
                                     'h:1/m/versions/x', 'http://h:1/m'])
def test_malformed_addresses_are_refused(address):
  with pytest.raises(ValueError, match='not a gRPC model address'):
    grpc_oracle.parse_address(address)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_unreachable_endpoint_is_retried_then_a_clear_error():
  oracle = grpc_oracle.GrpcOracle(f'127.0.0.1:{_free_port()}/m',
                                  num_classes=4, **_fast())
  with pytest.raises(OracleError, match='unreachable') as e:
    oracle.query(np.zeros((2, 12, 12, 1), np.float32))
  assert 'pipelines.serve' in str(e.value)
  assert oracle.rpc.attempts == 3 and oracle.paid == 0


def test_an_unknown_model_is_not_retried(server):
  oracle = grpc_oracle.GrpcOracle(server.address + '/nope', **_fast())
  with pytest.raises(OracleError, match='NOT_FOUND'):
    oracle.query(np.zeros((2, 12, 12, 1), np.float32))
  assert oracle.rpc.attempts == 1


def test_interrupted_labeling_over_grpc_resumes_without_paying_twice(
    server, tiny_npz, tmp_path, monkeypatch):
  wd = str(tmp_path)
  splits = data.split_data.run(
      wd, examples=data.import_dataset(data.load_dataset(tiny_npz), wd))[
          'splits']
  ref = grpc_oracle.victim_ref_from_address(server.address + '/victim_resume')
  stats = server.model_server.stats['victim_resume']
  real = grpc_oracle.GrpcOracle._ask
  calls = []

  def interrupted(self, x):
    if len(calls) == 2:
      raise KeyboardInterrupt
    calls.append(len(x))
    return real(self, x)

  monkeypatch.setattr(grpc_oracle.GrpcOracle, '_ask', interrupted)
  kwargs = dict(splits=splits, victim=ref, budget=150, batch_size=32)
  with pytest.raises(KeyboardInterrupt):
    attacks.label_queries.run(wd, **kwargs)
  assert stats.instances == 64
  monkeypatch.setattr(grpc_oracle.GrpcOracle, '_ask', real)
  res = attacks.label_queries.run(wd, **kwargs)
  props = res['labeled'].properties
  assert props['queries_asked'] == 150 and props['queries_paid'] == 150 - 64
  assert stats.instances == 150  # the server saw each query exactly once
  attacks.label_queries.run(wd, **kwargs)
  assert stats.instances == 150


def test_steal_pipeline_over_grpc(server, tiny_npz, tmp_path):
  from pipelines import steal  # pylint: disable=g-import-not-at-top
  wd = str(tmp_path / 'w')
  address = server.address + '/victim_steal'
  before = server.model_server.stats['victim_steal'].instances
  with flagsaver.flagsaver(victim_grpc=address, dataset=tiny_npz, workdir=wd,
                           smoke=True, budget=60, students=['mnist_mlp']):
    steal.main(['steal'])
  df = pd.read_csv(glob.glob(os.path.join(wd, 'steal', '*', 'results.csv'))[0])
  assert df['role'].tolist() == ['victim', 'student']
  assert df['saved_model'].iloc[0] == address
  assert df['victim_accuracy'].iloc[0] > 0.9
  assert df['queries_paid'].iloc[1] == 60
  assert server.model_server.stats['victim_steal'].instances >= before + 60


def _steal_error(capsys, **flags):
  from pipelines import steal  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    with flagsaver.flagsaver(**flags):
      steal.main(['steal'])
  err = capsys.readouterr().err
  assert e.value.code == 2 and 'Traceback' not in err, err
  return err


def test_steal_pipeline_victim_grpc_errors(server, tiny_npz, tmp_path,
                                           capsys):
  common = dict(workdir=str(tmp_path), smoke=True)
  address = server.address + '/victim'
  assert '--victim_grpc needs --dataset' in _steal_error(
      capsys, victim_grpc=address, **common)
  assert 'not a gRPC model address' in _steal_error(
      capsys, victim_grpc='127.0.0.1/x', dataset=tiny_npz, **common)
  assert 'NOT_FOUND' in _steal_error(
      capsys, victim_grpc=server.address + '/nope', dataset=tiny_npz,
      **common)
  assert 'pick the dataset' in _steal_error(
      capsys, victim_grpc=address, dataset='offline_mnist', **common)
  err = _steal_error(capsys, victim_grpc=address, victim_url=server.url +
                     '/v1/models/victim', dataset=tiny_npz, **common)
  assert '--victim_url or --victim_grpc: pass one victim' in err


def test_grpc_status_codes_are_what_the_oracle_expects():
  """The retry set is made of real status codes (a renamed one would make
  every failure look permanent)."""
  codes, transient = grpc_oracle._codes()  # pylint: disable=protected-access
  assert codes is grpc.StatusCode
  assert grpc.StatusCode.UNAVAILABLE in transient
  assert grpc.StatusCode.NOT_FOUND not in transient
