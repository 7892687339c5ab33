"""`--distribute=multiworker`: two worker processes on loopback train a tiny
student with `MultiWorkerMirroredStrategy`; the chief's model equals a
single-worker model trained with the same global batch, only the chief
writes artifacts, cached steps are reused only together, and a worker that
dies mid-training ends the chief's run with a clear error and no finished
record. Plus the `TF_CONFIG` checks (no processes needed)."""

import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from modelsteal import distribute
from modelsteal.artifacts import Examples, Model
from tests.conftest import synthetic_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = {'epochs': 2, 'batch_size': 32, 'learning_rate': 2e-3,
          'augment': False}

# Each worker: the step that the chief (alone) finished before, which worker
# 1 has no copy of (so both train it again, together); the same step again
# (both reuse it); then a new step during which worker 1 dies after two
# training batches.
_WORKER = r"""
import json, os, sys, time
t0 = time.time()
index, wd, examples_uri, log_path = sys.argv[1:5]
index = int(index)
from modelsteal import distribute
distribute.use('multiworker')
import keras
from modelsteal import training
from modelsteal.artifacts import Examples
from modelsteal.attacks import train_model
ex = Examples.load(examples_uri)
recipe = json.loads(sys.argv[5])
while not os.path.exists(sys.argv[6]):  # the single-worker run is done
  time.sleep(0.2)
log = {'is_chief': distribute.is_chief(), 't': [round(time.time() - t0, 1)],
       'replicas': distribute.current().num_replicas_in_sync}
def step(seed=0):
  r = train_model.run(wd, examples=ex, arch='ntga_fnn_relu', recipe=recipe,
                      split='train', targets='y', seed=seed)
  log['t'].append(round(time.time() - t0, 1))
  return [r.reused, r['model'].uri]
log['run1'] = step()
log['run2'] = step()
with open(log_path, 'w') as f:
  json.dump(log, f)
if index == 1:
  real = training.train_classifier
  def dying(*a, **k):
    die = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: os._exit(3) if b == 1 else None)
    return real(*a, **{**k, 'callbacks': list(k.get('callbacks', ())) + [die]})
  training.train_classifier = dying
try:
  step(seed=1)
  log['run3'] = 'finished'
except distribute.WorkerLostError as e:
  log['run3'] = 'WorkerLostError: ' + str(e)
log['t'].append(round(time.time() - t0, 1))
with open(log_path, 'w') as f:
  json.dump(log, f)
"""


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _examples(path):
  x, y = synthetic_images(256, seed=5)
  xt, yt = synthetic_images(64, seed=6)
  ex = Examples(uri=str(path), fingerprint='tiny-multiworker')
  os.makedirs(ex.uri)
  ex.save_split('train', x, y)
  ex.save_split('test', xt, yt)
  ex.save_properties()
  return ex


def _weights(model_dir):
  import keras  # pylint: disable=g-import-not-at-top
  m = keras.saving.load_model(Model.load(model_dir).keras_path, compile=False)
  return np.concatenate([np.ravel(w) for w in m.get_weights()])


@pytest.mark.slow
def test_two_workers_on_loopback_match_one_worker(tmp_path):
  from modelsteal.attacks import train_model  # pylint: disable=g-import-not-at-top
  ex = _examples(tmp_path / 'examples')
  wd = str(tmp_path / 'shared_workdir')
  go = str(tmp_path / 'go')
  ports = _free_ports(2)
  procs, logs = [], []
  for i in range(2):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', MODELSTEAL_OFFLINE='1',
               MODELSTEAL_HEALTH_CHECK_S='1', MODELSTEAL_CLUSTER_WAIT_S='120',
               TMPDIR=str(tmp_path / f'tmp{i}'), TF_CONFIG=json.dumps({
                   'cluster': {'worker': [f'127.0.0.1:{p}' for p in ports]},
                   'task': {'type': 'worker', 'index': i}}))
    os.makedirs(env['TMPDIR'])
    logs.append(str(tmp_path / f'log{i}.json'))
    procs.append(subprocess.Popen(
        [sys.executable, '-c', _WORKER, str(i), wd, ex.uri, logs[i],
         json.dumps(RECIPE), go], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True))
  # Meanwhile one worker (this process, no strategy) trains the step first,
  # with the same global batch of 32; then the workers start.
  single = train_model.run(wd, examples=ex, arch='ntga_fnn_relu',
                           recipe=RECIPE, split='train', targets='y', seed=0)
  reference = _weights(single['model'].uri)
  open(go, 'w').close()
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=240)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  assert procs[1].returncode == 3, outs[1][-3000:]  # died as planned
  assert procs[0].returncode == 0, outs[0][-3000:]
  chief, worker = (json.load(open(p)) for p in logs)
  print('chief timeline (s):', chief['t'])
  assert chief['is_chief'] and not worker['is_chief']
  assert chief['replicas'] == 2

  # Reused only together: the worker had no copy, so both trained; then both
  # reused.
  assert [chief['run1'][0], chief['run2'][0]] == [False, True]
  assert [worker['run1'][0], worker['run2'][0]] == [False, True]
  assert 'another worker has no finished run' in outs[0]
  # Only the chief wrote under the shared workdir; the worker wrote under its
  # own temporary directory.
  assert chief['run1'][1].startswith(wd)
  assert worker['run1'][1].startswith(str(tmp_path / 'tmp1'))
  records = glob.glob(os.path.join(wd, '**', 'execution.json'),
                      recursive=True)
  assert len(records) == 1, records
  # The dead worker: a clear error on the chief, and no finished record.
  assert chief['run3'].startswith('WorkerLostError'), chief['run3']
  assert 'stopped answering' in chief['run3']
  assert not glob.glob(os.path.join(wd, 'train_model', '.tmp*'))

  # The chief's model is the one a single worker trains with the same global
  # batch: the cluster shards each batch 16 + 16 and averages the gradients.
  # (ntga_fnn_relu has no dropout: replicas draw their own dropout masks.)
  chief_w = _weights(chief['run1'][1])
  np.testing.assert_allclose(chief_w, _weights(worker['run1'][1]), atol=1e-6)
  np.testing.assert_allclose(chief_w, reference, atol=1e-4)


@pytest.mark.parametrize('raw, says', [
    (None, 'is not set'),
    ('{"cluster": ', 'not valid JSON'),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": '
     '"worker", "index": 0}}', "job(s) ['ps']"),
    ('{"cluster": {"worker": ["hostonly"]}, "task": {"type": "worker"}}',
     '"host:port"'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}}', 'no "task"'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", '
     '"index": 2}}', 'out of range'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", '
     '"index": 0}}', 'not a job'),
])
def test_bad_tf_config_says_what_is_wrong(raw, says):
  with pytest.raises(distribute.DistributeError) as e:
    distribute.parse_tf_config(raw)
  assert says in str(e.value)
  assert 'TF_CONFIG=' in str(e.value)  # and shows a valid example


def test_tf_config_chief():
  t = distribute.parse_tf_config(json.dumps({
      'cluster': {'chief': ['a:1'], 'worker': ['b:2', 'c:3']},
      'task': {'type': 'worker', 'index': 0}}))
  assert (t.num_workers, t.is_chief) == (3, False)
  t = distribute.parse_tf_config(json.dumps({
      'cluster': {'worker': ['b:2', 'c:3']},
      'task': {'type': 'worker', 'index': 0}}))
  assert t.is_chief


def test_multiworker_without_tf_config_is_a_clear_error(monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  with pytest.raises(distribute.DistributeError, match='TF_CONFIG'):
    distribute.get_strategy('multiworker')
