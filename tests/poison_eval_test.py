"""modelsteal.poison_eval and `python -m pipelines.poison_eval` (smoke)."""

import glob
import json
import os

import numpy as np
import pandas as pd
import pytest
from absl.testing import flagsaver

from modelsteal import data
from modelsteal import poison_eval
from modelsteal.artifacts import ArtifactError
from modelsteal.artifacts import Examples
from tests.conftest import synthetic_images


def _clean(tmp_path, n=300):
  xtr, ytr = synthetic_images(n, seed=1)
  xte, yte = synthetic_images(200, seed=2)
  ds = data.sources._make('tiny', xtr, ytr, xte, yte, source='synthetic')  # pylint: disable=protected-access
  return data.import_dataset(ds, str(tmp_path / 'import'))


def _poisoned(tmp_path, clean, rows, x_fn, name='p'):
  src = clean.load_split('train')
  art = Examples(uri=str(tmp_path / name), fingerprint=name,
                 properties={'num_classes': 4, 'name': name})
  art.save_split('train', x_fn(src['x'][rows]), src['y'][rows], idx=rows)
  test = clean.load_split('test')
  art.save_split('test', test['x'], test['y'])
  art.save_properties()
  return art


def test_pairs_rows_and_rejects_a_foreign_poisoned_set(tmp_path):
  clean = _clean(tmp_path)
  rows = np.arange(0, 300, 3)
  pois = _poisoned(tmp_path, clean, rows, lambda x: np.clip(x + 0.01, 0, 1))
  xc, xp, y, xt, yt = poison_eval.paired_training_sets(clean, pois)
  src = clean.load_split('train')
  np.testing.assert_array_equal(xc, src['x'][rows])
  np.testing.assert_array_equal(y, src['y'][rows])
  assert xp.shape == xc.shape and len(yt) == len(xt) == 200
  other = _clean(tmp_path / 'other', n=300)
  foreign = Examples(uri=str(tmp_path / 'f'), fingerprint='f')
  shuffled = np.random.default_rng(0).permutation(rows)
  foreign.save_split('train', src['x'][rows],
                     (src['y'][shuffled] + 1) % 4, idx=rows)
  foreign.save_properties()
  with pytest.raises(ArtifactError, match='labels'):
    poison_eval.paired_training_sets(other, foreign)


def test_noise_data_is_damaged_and_clean_data_is_not(tmp_path):
  clean = _clean(tmp_path)
  rows = np.arange(300)
  rng = np.random.default_rng(0)
  # "poison": images replaced by noise, labels kept: nothing to learn
  pois = _poisoned(tmp_path, clean, rows,
                   lambda x: rng.random(x.shape).astype(np.float32))
  ev_dir = tmp_path / 'ev'
  res = poison_eval.evaluate_poison.run(
      str(ev_dir), clean=clean, poisoned=pois, targets=['mnist_mlp'],
      epochs=2, batch_size=32, learning_rate=3e-3)
  ev = res['evaluation']
  df = pd.read_csv(ev.path('results.csv'))
  assert list(df['data']) == ['clean', 'poisoned']
  by = df.set_index('data')
  assert by.loc['clean', 'final_accuracy'] > 0.8
  assert by.loc['poisoned', 'final_accuracy'] < 0.6
  assert (df['best_accuracy'] >= df['final_accuracy']).all()
  curves = pd.read_csv(ev.path('curves.csv'))
  assert len(curves) == 4 and set(curves['epoch']) == {1, 2}
  assert os.path.getsize(ev.path('accuracy.png')) > 1000
  with open(ev.path('results.json')) as f:
    assert len(json.load(f)) == 2


def test_interrupted_evaluation_redoes_only_unfinished_trainings(
    tmp_path, monkeypatch):
  clean = _clean(tmp_path)
  pois = _poisoned(tmp_path, clean, np.arange(100), lambda x: x)
  calls = []

  def fake(arch, x, y, *a, epochs, **kw):
    calls.append(arch)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return [0.1 * (i + 1) for i in range(epochs)]

  monkeypatch.setattr(poison_eval, 'train_and_track', fake)
  kw = dict(clean=clean, poisoned=pois, targets=['mnist_mlp', 'ntga_fnn'],
            epochs=2)
  with pytest.raises(KeyboardInterrupt):
    poison_eval.evaluate_poison.run(str(tmp_path / 'ev'), **kw)
  calls.clear()
  res = poison_eval.evaluate_poison.run(str(tmp_path / 'ev'), **kw)
  assert len(calls) == 2  # the two ntga_fnn trainings
  df = pd.read_csv(res['evaluation'].path('results.csv'))
  assert len(df) == 4 and (df['best_epoch'] == 2).all()
  with pytest.raises(KeyError, match='unknown target'):
    poison_eval.evaluate_poison.run(str(tmp_path / 'ev2'), clean=clean,
                                    poisoned=pois, targets=['nope'])


@pytest.mark.slow
def test_pipelines_smoke_artifact_and_exported_npz(tiny_npz, tmp_path, capsys):
  from pipelines import ntga as ntga_pipeline  # pylint: disable=g-import-not-at-top
  from pipelines import poison_eval as pe_pipeline  # pylint: disable=g-import-not-at-top
  wd = str(tmp_path / 'runs')
  npz = str(tmp_path / 'poisoned.npz')
  with flagsaver.flagsaver(dataset=tiny_npz, workdir=wd, smoke=True,
                           export_npz=npz):
    ntga_pipeline.main(['ntga'])
  art, = glob.glob(os.path.join(wd, 'generate_ntga', '*', 'poisoned'))
  capsys.readouterr()
  with flagsaver.flagsaver(poisoned=art, workdir=wd, smoke=True,
                           targets=['mnist_mlp']):
    pe_pipeline.main(['poison_eval'])
  out = capsys.readouterr().out
  assert 'final_accuracy' in out and 'results.csv' in out
  csv, = glob.glob(os.path.join(wd, 'evaluate_poison', '*', 'evaluation',
                                'results.csv'))
  df = pd.read_csv(csv)
  assert list(df['data']) == ['clean', 'poisoned']
  assert df['train_images'].iloc[0] == 200  # the smoke run's poisoned rows
  # the exported form, with the clean source named explicitly: the same rows
  from modelsteal.experiments import poison_eval as pe_lib  # pylint: disable=g-import-not-at-top
  cfg = pe_lib.PoisonEvalConfig(poisoned=npz, dataset=tiny_npz, workdir=wd)
  clean, from_npz = pe_lib._load_inputs(cfg)  # pylint: disable=protected-access
  from modelsteal.artifacts import Examples  # pylint: disable=g-import-not-at-top
  a, b = Examples.load(art).load_split('train'), from_npz.load_split('train')
  np.testing.assert_array_equal(a['idx'], b['idx'])
  np.testing.assert_allclose(a['x'], b['x'])
  xc, xp, _, _, _ = poison_eval.paired_training_sets(clean, from_npz)
  assert 0 < np.abs(xp - xc).max() <= 0.3 + 1e-6
  # an npz without --dataset is a clear error
  with flagsaver.flagsaver(poisoned=npz, dataset=None, workdir=wd, smoke=True,
                           targets=['mnist_mlp']):
    with pytest.raises(SystemExit):
      pe_pipeline.main(['poison_eval'])
  assert '--dataset' in capsys.readouterr().err
