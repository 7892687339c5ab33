"""The owner's side of the server: API keys, quotas and rate limits, the
query log, detectors of thieves, answers for flagged clients, and loading a
suspect model safely. Servers bind 127.0.0.1 on free ports."""

import asyncio
import glob
import json
import os

import grpc
import numpy as np
import pytest
import requests

from modelsteal import serving
from modelsteal.defenses import detection
from modelsteal.errors import ConfigError
from modelsteal.export import export_saved_model
from modelsteal.export import load_predictor
from modelsteal.export import ModelLoadError
from modelsteal.serving import access
from modelsteal.serving import guard as guard_lib
from modelsteal.serving import querylog
from tests.conftest import synthetic_images

TIMEOUT = 30
KEY_A, KEY_B, KEY_OLD = 'key-alice-123', 'key-bob-456', 'key-old-789'


def _clients(now=1_000_000.0):
  return (
      access.Client('alice', access.hash_key(KEY_A)),
      access.Client('bob', access.hash_key(KEY_B), quota=7,
                    quota_period_s=3600),
      access.Client('old', access.hash_key(KEY_OLD), expires=now - 1),
      access.Client('gone', access.hash_key('key-gone'), revoked=True),
  )


# -- keys and limits, without a server ------------------------------------


def test_authenticate_names_the_reason_and_never_the_key():
  gate = access.Gate(list(_clients()), clock=lambda: 1_000_000.0)
  assert gate.authenticate(KEY_A).name == 'alice'
  for key, reason in [(None, 'required'), ('', 'required'),
                      ('nope', 'not valid'), (KEY_OLD, 'expired'),
                      ('key-gone', 'revoked')]:
    with pytest.raises(access.AccessDenied) as e:
      gate.authenticate(key)
    assert e.value.status == 401 and reason in e.value.message
    if key:
      assert key not in e.value.message


def test_quota_and_rate_refuse_with_retry_after_and_take_nothing():
  now = [7200.0 + 100]  # 100 s into an hour window
  c = access.Client('c', '0' * 64, quota=10, quota_period_s=3600)
  gate = access.Gate([c], clock=lambda: now[0])
  gate.admit(c, 6)
  with pytest.raises(access.AccessDenied) as e:
    gate.admit(c, 5)
  assert e.value.status == 429 and e.value.retry_after_s == pytest.approx(3500)
  assert gate.used('c') == 6  # the refused request took nothing
  gate.admit(c, 4)
  now[0] += 3600  # the next window
  gate.admit(c, 10)

  r = access.Client('r', '1' * 64, rate=10.0, burst=20)
  gate = access.Gate([r], clock=lambda: now[0])
  gate.admit(r, 20)
  with pytest.raises(access.AccessDenied) as e:
    gate.admit(r, 5)
  assert e.value.status == 429 and e.value.retry_after_s == pytest.approx(0.5)
  now[0] += 0.5
  gate.admit(r, 5)
  with pytest.raises(serving.ServingError) as e:
    gate.admit(r, 21)  # can never fit: not worth retrying
  assert e.value.status == 400 and 'split' in e.value.message
  assert access.retry_after_header(0.2) == '1'


@pytest.mark.parametrize('entry,words', [
    ({'name': 'a', 'key': 'x'}, 'in clear'),
    ({'name': 'a b', 'key_sha256': 'a' * 64}, '"name"'),
    ({'name': 'a', 'key_sha256': 'xyz'}, 'key_sha256'),
    ({'name': 'a', 'key_sha256': 'a' * 64, 'quota': -1}, '"quota"'),
    ({'name': 'a', 'key_sha256': 'a' * 64, 'expires': 'soon'}, 'ISO 8601'),
    ({'name': 'a', 'key_sha256': 'a' * 64, 'colour': 1}, 'unknown fields'),
])
def test_key_file_errors_name_the_entry_and_field(entry, words):
  with pytest.raises(ConfigError) as e:
    access.parse_clients({'clients': [entry]})
  assert e.value.field == 'api_keys' and words in str(e.value)
  assert 'client 0' in str(e.value)


def test_keys_pipeline_adds_revokes_and_stores_only_hashes(tmp_path, capsys):
  from pipelines import keys  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'keys.json')
  key = keys.run(path, add='alice', quota=100, quota_period_s=60.0, rate=5.0)
  text = open(path).read()
  assert key and key not in text and access.hash_key(key) in text
  (c,) = access.load_clients(path)
  assert (c.name, c.quota, c.quota_period_s, c.rate) == ('alice', 100, 60.0,
                                                         5.0)
  keys.run(path, revoke='alice')
  assert access.load_clients(path)[0].revoked
  with pytest.raises(ConfigError):
    keys.run(path, add='alice')
  with pytest.raises(ConfigError) as e:
    keys.run(path, add='bad name')
  assert e.value.field == 'add'
  assert 'revoked' in capsys.readouterr().err


# -- the log -----------------------------------------------------------------


def test_log_cuts_a_torn_tail_and_keeps_every_whole_line(tmp_path):
  d = str(tmp_path)
  whole = [{'seq': i, 't': 1.0, 'status': 200, 'n': 1} for i in range(3)]
  with open(querylog.log_path(d, 'c'), 'wb') as f:
    for e in whole:
      f.write(json.dumps(e).encode() + b'\n')
    f.write(b'{"seq": 3, "t": 1.0, "sta')  # a write cut off by a crash
  assert [e['seq'] for e in querylog.read_log(querylog.log_path(d, 'c'))] == [
      0, 1, 2]
  qlog = querylog.QueryLog(d, fsync=False)
  summary = qlog.open_client('c')
  assert summary.torn_tail and summary.last_seq == 2
  assert qlog.next_seq('c') == 3

  async def write():
    await qlog.start()
    await qlog.append('c', qlog.encode({'seq': 3, 'status': 200, 'n': 1,
                                        't': 2.0}))
    await qlog.stop()

  asyncio.run(write())
  assert [e['seq'] for e in querylog.read_log(querylog.log_path(d, 'c'))] == [
      0, 1, 2, 3]
  with open(querylog.log_path(d, 'c'), 'ab') as f:
    f.write(b'garbage\n{"seq": 9}\n')
  with pytest.raises(ValueError, match='line 5'):
    list(querylog.read_log(querylog.log_path(d, 'c')))


# -- detectors on toy streams ----------------------------------------------


def _onehot_probs(labels, k=10, p=0.9):
  out = np.full((len(labels), k), (1 - p) / (k - 1), np.float32)
  out[np.arange(len(labels)), labels] = p
  return out


def test_prada_flags_synthetic_queries_not_natural_ones():
  rng = np.random.default_rng(0)
  # natural: i.i.d. draws around 10 class centres
  centres = rng.normal(0, 1, (10, 64))
  labels = rng.integers(0, 10, 3000)
  natural = centres[labels] + rng.normal(0, 0.7, (3000, 64))
  benign = detection.Prada()
  for i in range(0, 3000, 50):
    assert not benign.observe(natural[i:i + 50], _onehot_probs(labels[i:i + 50]))
  assert benign.last_w is not None and benign.last_w > benign.delta

  # synthetic: Jacobian-style augmentation, each new query one small signed
  # step from an earlier one
  seeds = natural[:20]
  thief = detection.Prada()
  pool, flagged_at = list(seeds), None
  thief.observe(seeds, _onehot_probs(labels[:20]))
  for step in range(1, 40):
    parents = np.asarray(pool[-20:])
    kids = parents + 0.1 * np.sign(rng.normal(0, 1, parents.shape))
    pool.extend(kids)
    if thief.observe(kids, _onehot_probs(labels[:20])):
      flagged_at = 20 * (step + 1)
      break
  assert flagged_at is not None and flagged_at <= 500


def _prada_by_hand(x, labels):
  """PRADA's distances one query at a time, as the paper states them."""
  sets, stats, out = {}, {}, []
  for v, c in zip(x, labels):
    if c not in sets:
      sets[c], stats[c] = [v], []
      continue
    d = min(float(np.linalg.norm(v - u)) for u in sets[c])
    out.append(d)
    t = np.mean(stats[c]) - np.std(stats[c]) if stats[c] else 0.0
    if d > t:
      sets[c].append(v)
      stats[c].append(d)
  return np.array(out)


def test_prada_distances_match_the_rule_in_batches_and_alone():
  rng = np.random.default_rng(3)
  x = rng.normal(0, 1, (300, 16)).astype(np.float32)
  x[150:] = x[:150] + 0.05 * rng.normal(0, 1, (150, 16)).astype(np.float32)
  labels = rng.integers(0, 3, 300)
  want = _prada_by_hand(x, labels)
  for batch in (1, 7, 64):
    det = detection.Prada(min_queries=10 ** 6)  # no test: distances only
    for i in range(0, 300, batch):
      det.observe(x[i:i + batch], _onehot_probs(labels[i:i + batch], k=3))
    # a batch is taken class by class: the same distances, another order
    np.testing.assert_allclose(np.sort(det.distances), np.sort(want),
                               rtol=1e-4, atol=1e-4)


def test_shift_flags_out_of_distribution_windows_only():
  rng = np.random.default_rng(1)

  def confident(n):  # the owner's kind of data: peaked answers, all classes
    return rng.dirichlet(np.full(10, 0.05), n).astype(np.float32)

  ref = detection.reference_from_probs(confident(2000))
  benign = detection.Shift(ref)
  for _ in range(60):
    assert not benign.observe(None, confident(50))
  ood = detection.Shift(ref)
  flat = rng.dirichlet(np.full(10, 3.0), 50).astype(np.float32)
  fired = [ood.observe(None, flat) for _ in range(20)]
  assert any(fired) and fired.index(True) * 50 + 50 <= 2000
  with pytest.raises(ConfigError, match='detect_reference'):
    detection.parse_detectors('shift')
  with pytest.raises(ConfigError, match='invalid detector'):
    detection.parse_detectors('prada:2')


# -- the server --------------------------------------------------------------


@pytest.fixture(scope='module')
def model_dir(tiny_model, tmp_path_factory):
  base = str(tmp_path_factory.mktemp('owner') / 'tiny')
  export_saved_model(tiny_model, base, version=1)
  return base


def _guarded(model_dir, log_dir, **cfg):
  servable = serving.load_servable(model_dir, 'tiny')
  g = guard_lib.Guard(guard_lib.GuardConfig(log_dir=log_dir, **cfg),
                      clock=lambda: 1_000_000.0)
  return serving.ModelServer([servable], guard=g, batch_timeout_s=0.002)


def _predict(url, x, key=None, header='bearer'):
  headers = {}
  if key is not None:
    headers = ({'Authorization': f'Bearer {key}'} if header == 'bearer'
               else {'x-api-key': key})
  return requests.post(url + '/v1/models/tiny:predict', timeout=TIMEOUT,
                       headers=headers, json={'instances': x.tolist()})


def test_keys_quota_and_log_over_rest_and_grpc(model_dir, tmp_path):
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  from modelsteal.serving import tensors  # pylint: disable=g-import-not-at-top
  log_dir = str(tmp_path / 'log')
  ms = _guarded(model_dir, log_dir, clients=_clients())
  x = synthetic_images(12, seed=5)[0]
  with serving.BackgroundServer(ms.make_app(grpc_port=0)) as bg:
    for key in (None, 'wrong', KEY_OLD, 'key-gone'):
      r = _predict(bg.url, x[:2], key)
      assert r.status_code == 401 and 'predictions' not in r.json()
      assert r.headers['WWW-Authenticate'] == 'Bearer'
      assert key is None or key not in r.text
    assert requests.get(bg.url + '/v1/models/tiny',
                        timeout=TIMEOUT).status_code == 401
    ok = _predict(bg.url, x[:3], KEY_A)
    assert ok.status_code == 200
    assert _predict(bg.url, x[3:5], KEY_A, header='x-api-key').status_code == 200
    assert _predict(bg.url, x[:5], KEY_B).status_code == 200
    over = _predict(bg.url, x[:3], KEY_B)  # 5 + 3 > quota 7
    assert over.status_code == 429 and int(over.headers['Retry-After']) >= 1

    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(ms.grpc.address))
    req = predict_pb2.PredictRequest()
    req.model_spec.name = 'tiny'
    tensors.fill_tensor(req.inputs['images'], x[5:7])
    with pytest.raises(grpc.RpcError) as e:
      stub.Predict(req, TIMEOUT)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    resp = stub.Predict(req, TIMEOUT,
                        metadata=(('authorization', f'Bearer {KEY_A}'),))
    assert 'probabilities' in resp.outputs
    req = predict_pb2.PredictRequest()
    req.model_spec.name = 'tiny'
    tensors.fill_tensor(req.inputs['images'], x[5:8])  # 5 + 3 > 7 again
    with pytest.raises(grpc.RpcError) as e:
      stub.Predict(req, TIMEOUT, metadata=(('x-api-key', KEY_B),))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(e.value.trailing_metadata())['retry-after']

  # The log: alice's three answered requests, replayable exactly; bob's
  # answer and his refusals; nobody else's; no key anywhere.
  files = sorted(os.path.basename(p) for p in glob.glob(log_dir + '/*'))
  assert files == ['alice.jsonl', 'bob.jsonl', 'gone.jsonl', 'old.jsonl']
  alice = list(querylog.read_log(querylog.log_path(log_dir, 'alice')))
  assert [(e['seq'], e['status'], e['n'], e['protocol']) for e in alice] == [
      (0, 200, 3, 'rest'), (1, 200, 2, 'rest'), (2, 200, 2, 'grpc')]
  xs, outs = querylog.replay(querylog.log_path(log_dir, 'alice'))
  np.testing.assert_array_equal(xs, x[:7])
  np.testing.assert_allclose(outs['probabilities'][:3],
                             [p['probabilities'] for p in ok.json()[
                                 'predictions']], atol=1e-6)
  bob = list(querylog.read_log(querylog.log_path(log_dir, 'bob')))
  assert [e['status'] for e in bob] == [200, 429, 429]
  assert [e['protocol'] for e in bob] == ['rest', 'rest', 'grpc']
  assert 'inputs' not in bob[1]
  for p in glob.glob(log_dir + '/*'):
    text = open(p).read()
    assert all(k not in text for k in (KEY_A, KEY_B, KEY_OLD, 'key-gone'))
  assert os.path.getsize(querylog.log_path(log_dir, 'old')) == 0

  # A restart counts the quota already spent from the log.
  ms2 = _guarded(model_dir, log_dir, clients=_clients())
  with serving.BackgroundServer(ms2.make_app()) as bg:
    assert _predict(bg.url, x[:3], KEY_B).status_code == 429
    assert _predict(bg.url, x[:2], KEY_B).status_code == 200


def _toy_stream_model(tmp_path):
  """A model over 8x8x1 inputs whose probabilities are the softmax of the
  first 4 pixels scaled up: easy to aim queries at."""
  import keras  # pylint: disable=g-import-not-at-top
  inp = keras.Input((8, 8, 1), name='images')
  z = keras.layers.Flatten()(inp)
  z = keras.layers.Dense(4, use_bias=False, trainable=False,
                         kernel_initializer=keras.initializers.Constant(
                             np.eye(64, 4, dtype=np.float32) * 20.0))(z)
  model = keras.Model(inp, z)
  base = str(tmp_path / 'toy')
  export_saved_model(model, base, version=1)
  return base


def test_flagged_client_is_misled_then_blocked(tmp_path):
  base = _toy_stream_model(tmp_path)
  rng = np.random.default_rng(0)
  # the thief sends one image and tiny steps from it: PRADA fires
  seed = rng.uniform(0, 1, (1, 8, 8, 1)).astype(np.float32)
  steps = [np.clip(seed + 0.01 * i * np.sign(rng.normal(size=seed.shape)),
                   0, 1).astype(np.float32) for i in range(400)]
  for mode in ('label', 'block'):
    servable = serving.load_servable(base, 'tiny')
    g = guard_lib.Guard(guard_lib.GuardConfig(
        log_dir=str(tmp_path / mode), detectors=tuple(
            detection.parse_detectors('prada')), on_detect=mode))
    ms = serving.ModelServer([servable], guard=g)
    statuses, answers = [], []
    with serving.BackgroundServer(ms.make_app()) as bg:
      for i in range(0, 400, 20):
        r = _predict(bg.url, np.concatenate(steps[i:i + 20]))
        statuses.append(r.status_code)
        if r.status_code == 200:
          answers.append(np.asarray([p['probabilities']
                                     for p in r.json()['predictions']]))
    st = g.states['anonymous']
    assert st.flagged == ['prada'] and st.detected_at['prada'] <= 400
    entries = list(querylog.read_log(str(tmp_path / mode / 'anonymous.jsonl')))
    first = next(i for i, e in enumerate(entries) if e['flags'])
    assert entries[first]['flags'] == ['prada']
    if mode == 'label':  # one-hot answers once flagged, soft before
      assert all(statuses) and set(statuses) == {200}
      assert not np.isin(answers[0], (0.0, 1.0)).all()
      assert np.isin(answers[-1], (0.0, 1.0)).all()
    else:
      assert statuses[first] == 200 and set(statuses[first + 1:]) == {403}
      assert [e['status'] for e in entries[first + 1:]] == [403] * (
          len(statuses) - first - 1)


def test_serve_pipeline_rejects_bad_owner_options(tmp_path, model_dir):
  from pipelines import serve  # pylint: disable=g-import-not-at-top
  for kwargs, field in [
      ({'api_keys': str(tmp_path / 'none.json')}, 'api_keys'),
      ({'detect': 'prada:7'}, 'detect'),
      ({'detect': 'shift'}, 'detect'),
      ({'on_detect': 'block'}, 'on_detect'),
      ({'detect': 'prada', 'on_detect': 'explode'}, 'on_detect'),
      ({'detect_reference': 'mnist'}, 'detect_reference'),
  ]:
    with pytest.raises(ConfigError) as e:
      serve.build_server(serve.ServeConfig(model_dir=model_dir, **kwargs))
    assert e.value.field == field, (kwargs, str(e.value))


# -- suspects load safely ------------------------------------------------------


def test_a_suspect_keras_file_with_code_is_refused(tmp_path):
  import keras  # pylint: disable=g-import-not-at-top
  inp = keras.Input((4,))
  model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp))
  path = str(tmp_path / 'suspect.keras')
  model.save(path)
  with pytest.raises(ModelLoadError) as e:
    load_predictor(path)
  assert 'safe mode' in str(e.value) and '\n' not in str(e.value)
  out = load_predictor(path, trusted=True)(np.ones((2, 4), np.float32))
  assert out.shape == (2, 4)


# -- a killed server loses no acknowledged entry ------------------------------


@pytest.mark.slow
def test_query_log_survives_kill_9_mid_load(model_dir, tmp_path):
  """Eight clients stream requests, each image marked with its request id;
  the server is killed with SIGKILL mid-load. Every request that got its
  answer is in the log, whole; the log reads back with no bad line."""
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  log_dir = str(tmp_path / 'log')
  env = dict(os.environ, MODELSTEAL_OFFLINE='1', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'pipelines.serve', '--port=0', '--grpc_port=-1',
       f'--model_dir={model_dir}', '--model_name=tiny',
       f'--query_log={log_dir}'],
      cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  killer = threading.Timer(120, proc.kill)
  killer.start()
  try:
    url = None
    for line in proc.stdout:
      if line.startswith('[serve] listening:'):
        url = line.split()[2].split('/v1/')[0]
        break
    assert url, 'the server did not start'
    acked, lock, stop = set(), threading.Lock(), threading.Event()
    base = synthetic_images(1, seed=9)[0]

    def client(c):
      i = 0
      session = requests.Session()
      while not stop.is_set():
        rid = c * 100_000 + i
        x = base.copy()
        x[0, 0, 0, 0] = rid  # the id, exactly representable in float32
        try:
          r = session.post(url + '/v1/models/tiny:predict', timeout=10,
                           json={'instances': x.tolist()})
        except requests.RequestException:
          return
        if r.status_code == 200:
          with lock:
            acked.add(rid)
        i += 1

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      futures = [pool.submit(client, c) for c in range(8)]
      deadline = 60
      while len(acked) < 300 and deadline > 0:
        threading.Event().wait(0.1)
        deadline -= 0.1
      proc.send_signal(signal.SIGKILL)
      proc.wait(10)
      stop.set()
      for f in futures:
        f.result(30)
  finally:
    killer.cancel()
    proc.kill()
    proc.stdout.close()
  assert len(acked) >= 300
  path = querylog.log_path(log_dir, 'anonymous')
  entries = list(querylog.read_log(path))  # raises on a bad line
  logged = [int(querylog.decode_array(e['inputs']['images'])[0, 0, 0, 0])
            for e in entries]
  assert len(set(logged)) == len(logged)  # nothing twice
  assert acked <= set(logged), sorted(acked - set(logged))[:5]
  assert [e['seq'] for e in entries] == list(range(len(entries)))


def test_oracles_send_the_key_from_the_environment(model_dir, tmp_path,
                                                   monkeypatch):
  from modelsteal.oracle.base import OracleError  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle.grpc_oracle import GrpcOracle  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle.rest import RestOracle  # pylint: disable=g-import-not-at-top
  ms = _guarded(model_dir, None, clients=_clients())
  x = synthetic_images(5, seed=6)[0]
  with serving.BackgroundServer(ms.make_app(grpc_port=0)) as bg:
    url = bg.url + '/v1/models/tiny'
    monkeypatch.delenv('MODELSTEAL_API_KEY', raising=False)
    for make in (lambda: RestOracle(url, output='probs', retries=0),
                 lambda: GrpcOracle(ms.grpc.address + '/tiny', output='probs',
                                    retries=0)):
      with pytest.raises(OracleError) as e:
        make().query(x)
      assert 'MODELSTEAL_API_KEY' in str(e.value)
    monkeypatch.setenv('MODELSTEAL_API_KEY', KEY_A)
    for oracle in (RestOracle(url, output='probs'),
                   GrpcOracle(ms.grpc.address + '/tiny', output='probs')):
      assert oracle.query(x).shape == (5, 4)
