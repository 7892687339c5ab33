"""modelsteal.oracle.grpc_oracle: a victim over TF Serving's gRPC API, with
the local oracle's budget and cache; label-only answers, halving on the
size limit, retries, clear errors, resume with nothing paid twice, and the
steal pipeline with --victim_grpc.

Servers bind 127.0.0.1 on free ports; every RPC has a deadline.
"""

import grpc
import numpy as np
import pytest

from modelsteal.oracle import OracleError
from modelsteal.oracle import grpc_oracle
from tests.conftest import check_budget_and_cache
from tests.conftest import check_labeling_resumes
from tests.conftest import check_one_hot_answers
from tests.conftest import check_unreachable
from tests.conftest import fast_retries
from tests.conftest import free_port
from tests.conftest import query_under_a_small_limit
from tests.conftest import serve_in_background
from tests.conftest import steal_error
from tests.conftest import steal_smoke
from tests.conftest import tiny_splits
from tests.conftest import victim_server


@pytest.fixture(scope='module')
def server(victim_dir):
  ms = victim_server(victim_dir, 'victim_steal')
  with serve_in_background(ms, grpc_port=0) as bg:
    bg.address = f'127.0.0.1:{ms.grpc.port}'
    yield bg


def test_answers_match_the_local_victim_with_budget_and_cache(
    server, victim_dir, tmp_path):
  address = server.address + '/victim'
  ref = grpc_oracle.victim_ref_from_address(address)
  again = check_budget_and_cache(ref, 'grpc', victim_dir, str(tmp_path))
  assert again._ch is None  # a fully cached run opened no channel


def test_label_only_endpoint_gives_one_hot_answers(server, victim_dir):
  ref = grpc_oracle.victim_ref_from_address(server.address + '/victim_label',
                                            num_classes=4)
  check_one_hot_answers(ref, victim_dir)


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
  oracle, ms = query_under_a_small_limit(
      victim_dir, 40, lambda bg, ms: grpc_oracle.victim_ref_from_address(
          f'127.0.0.1:{ms.grpc.port}/v'), grpc_port=0)
  assert oracle.batch_size <= 20 and ms.stats['v'].instances == 40


@pytest.mark.parametrize('address', ['127.0.0.1/m', '127.0.0.1:85', 'h:1/',
                                     'h:1/m/versions/x', 'http://h:1/m'])
def test_malformed_addresses_are_refused(address):
  with pytest.raises(ValueError, match='not a gRPC model address'):
    grpc_oracle.parse_address(address)


def test_unreachable_endpoint_is_retried_then_a_clear_error():
  oracle = grpc_oracle.GrpcOracle(f'127.0.0.1:{free_port()}/m',
                                  num_classes=4, **fast_retries())
  check_unreachable(oracle)
  assert oracle.rpc.attempts == 3


def test_an_unknown_model_is_not_retried(server):
  oracle = grpc_oracle.GrpcOracle(server.address + '/nope', **fast_retries())
  with pytest.raises(OracleError, match='NOT_FOUND'):
    oracle.query(np.zeros((2, 12, 12, 1), np.float32))
  assert oracle.rpc.attempts == 1


def test_interrupted_labeling_over_grpc_resumes_without_paying_twice(
    server, tiny_npz, tmp_path, monkeypatch):
  ref = grpc_oracle.victim_ref_from_address(server.address + '/victim_resume')
  wd = str(tmp_path)
  check_labeling_resumes(grpc_oracle.GrpcOracle, tiny_splits(tiny_npz, wd),
                         ref, wd, monkeypatch,
                         stats=server.model_server.stats['victim_resume'])


def test_steal_pipeline_over_grpc(server, tiny_npz, tmp_path):
  _, sent = steal_smoke(server.model_server.stats['victim_steal'], tiny_npz,
                        str(tmp_path / 'w'),
                        victim_grpc=server.address + '/victim_steal')
  assert sent >= 60


def test_steal_pipeline_victim_grpc_errors(server, tiny_npz, tmp_path,
                                           capsys):
  common = dict(workdir=str(tmp_path), smoke=True)
  address = server.address + '/victim'
  assert '--victim_grpc needs --dataset' in steal_error(
      capsys, victim_grpc=address, **common)
  assert 'not a gRPC model address' in steal_error(
      capsys, victim_grpc='127.0.0.1/x', dataset=tiny_npz, **common)
  assert 'NOT_FOUND' in steal_error(
      capsys, victim_grpc=server.address + '/nope', dataset=tiny_npz,
      **common)
  assert 'pick the dataset' in steal_error(
      capsys, victim_grpc=address, dataset='offline_mnist', **common)
  err = steal_error(capsys, victim_grpc=address, victim_url=server.url +
                    '/v1/models/victim', dataset=tiny_npz, **common)
  assert '--victim_url or --victim_grpc: pass one victim' in err


def test_grpc_status_codes_are_what_the_oracle_expects():
  """The retry set is made of real status codes (a renamed one would make
  every failure look permanent)."""
  codes, transient = grpc_oracle._codes()  # pylint: disable=protected-access
  assert codes is grpc.StatusCode
  assert grpc.StatusCode.UNAVAILABLE in transient
  assert grpc.StatusCode.NOT_FOUND not in transient
