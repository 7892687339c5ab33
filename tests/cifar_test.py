"""CIFAR-shaped (32x32x3) data through the stealing pipelines, offline: the
generated `synthetic_cifar10` stand-in and a 32x32x3 npz in place of the
real data."""

import glob
import json
import os

import numpy as np
import pandas as pd
import pytest
import requests
from absl.testing import flagsaver

from modelsteal.export import load_predictor
from pipelines import steal
from tests.serving_test import _CliServer


def _results(wd):
  path, = glob.glob(os.path.join(wd, 'steal', '*', 'results.csv'))
  return pd.read_csv(path)


@pytest.mark.slow
def test_cifar_shaped_student_exports_reloads_and_serves(tmp_path):
  wd = str(tmp_path)
  with flagsaver.flagsaver(victim='cifar10_cnn', dataset='synthetic_cifar10',
                           workdir=wd, smoke=True, budget=200,
                           students=['lenet5']):
    steal.main(['steal'])
  df = _results(wd)
  assert df['role'].tolist() == ['victim', 'student']
  assert df['queries_paid'].iloc[1] == 200
  # the row says which data it came from: the stand-in, not CIFAR-10
  assert df['data'].str.contains('synthetic stand-in').all()
  student = df['saved_model'].iloc[1]  # .../model/serving/1
  keras_file = os.path.join(os.path.dirname(os.path.dirname(student)),
                            'model.keras')
  import keras  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).uniform(0, 1, (6, 32, 32, 3)).astype(
      np.float32)
  local = load_predictor(student)(x)
  logits = keras.saving.load_model(keras_file, compile=False)(x).numpy()
  np.testing.assert_allclose(local, keras.ops.softmax(logits).numpy(),
                             atol=1e-5)
  cli = _CliServer(f'--model_dir={os.path.dirname(student)}',
                   '--model_name=cifar_student')
  try:
    base = cli.url.rsplit('/v1/', 1)[0]
    resp = requests.post(f'{base}/v1/models/cifar_student:predict',
                         data=json.dumps({'instances': x.tolist()}),
                         timeout=60)
    assert resp.status_code == 200, resp.text
    served = [p['probabilities'] for p in resp.json()['predictions']]
    np.testing.assert_allclose(served, local, atol=1e-5)
  finally:
    cli.close()


def test_a_32x32x3_npz_runs_where_mnist_does(tmp_path, capsys):
  """A user's own colour npz: the victim's dataset is the path, students
  default to the colour ones, and a grey query set is refused in one line."""
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 500)
  x = rng.integers(0, 60, (500, 32, 32, 3)).astype(np.uint8)
  for k in range(4):  # a learnable colour band per class
    x[y == k, 8 * k:8 * k + 8, :, k % 3] = 230
  npz = str(tmp_path / 'colour.npz')
  np.savez(npz, x_train=x[:400], y_train=y[:400], x_test=x[400:],
           y_test=y[400:])
  grey = str(tmp_path / 'grey.npz')
  np.savez(grey, x_train=x[:400, :, :, 0], y_train=y[:400],
           x_test=x[400:, :, :, 0], y_test=y[400:])
  with flagsaver.flagsaver(victim='cifar10_cnn', dataset=npz, query_data=grey,
                           workdir=str(tmp_path / 'w'), smoke=True, budget=60,
                           students=['lenet5']):
    with pytest.raises(SystemExit) as e:
      steal.main(['steal'])
  assert e.value.code == 2
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if 'error:' in l]
  assert len(lines) == 1 and 'shape' in lines[0] and 'Traceback' not in err
