"""`python -m pipelines.defend` in smoke mode on a tiny poisoned set."""

import glob
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from absl.testing import flagsaver

from modelsteal.defenses.training import parse_defense
from pipelines import defend
from tests.conftest import synthetic_images


@pytest.fixture
def poisoned_npz(tmp_path):
  """Clean synthetic data plus a class-wise +-0.2 shortcut, NTGA-export form."""
  xtr, ytr = synthetic_images(300, seed=21)
  xte, yte = synthetic_images(100, seed=22)
  clean = tmp_path / 'clean.npz'
  np.savez(clean, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
  shortcut = np.random.default_rng(0).choice([-0.2, 0.2], (4, 12, 12, 1))
  xp = np.clip(xtr + shortcut[ytr], 0, 1).astype(np.float32)
  path = tmp_path / 'poisoned.npz'
  np.savez(path, x_train=xp, y_train=ytr, idx_train=np.arange(300),
           x_test=xte, y_test=yte)
  return str(path), str(clean)


@pytest.mark.slow
def test_defend_smoke_table_and_export(poisoned_npz, tmp_path, capsys):
  poisoned, clean = poisoned_npz
  wd = str(tmp_path / 'w')
  with flagsaver.flagsaver(poisoned=poisoned, clean=clean, workdir=wd,
                           smoke=True, target='fnn_relu',
                           defense='none,bitdepth:1+crop,mixup,adv:0.1'):
    defend.main(['defend'])
  out = capsys.readouterr().out
  csv, = glob.glob(os.path.join(wd, 'defend', '*', 'results.csv'))
  df = pd.read_csv(csv)
  assert len(df) == 8 and set(df['data']) == {'poisoned', 'clean'}
  assert df['accuracy'].between(0, 1).all()
  assert glob.glob(os.path.join(wd, 'defend', '*', 'accuracy_per_epoch.png'))
  assert 'best defence on the poisoned set' in out
  # the exported model applies the defence's preprocessing itself
  row = df[(df.defense == 'bitdepth:1+crop') & (df.data == 'poisoned')].iloc[0]
  sig = tf.saved_model.load(row['saved_model']).signatures['serving_default']
  x, _ = synthetic_images(8, seed=30)
  served = sig(images=tf.constant(x))['probabilities'].numpy()
  import keras
  km = keras.models.load_model(os.path.join(
      os.path.dirname(os.path.dirname(row['saved_model'])), 'model.keras'),
                               compile=False)
  pre = parse_defense('bitdepth:1').apply_preprocess(tf.constant(x))
  np.testing.assert_allclose(served, tf.nn.softmax(km(pre)).numpy(), atol=1e-5)


def test_defend_errors(poisoned_npz, tmp_path, capsys):
  poisoned, _ = poisoned_npz
  for flags, match in (({'defense': 'denoise'}, 'unknown defence'),
                       ({'target': 'vgg'}, 'unknown target'),
                       ({'poisoned': str(tmp_path / 'nope.npz')},
                        'no such file')):
    kw = dict(poisoned=poisoned, workdir=str(tmp_path / 'w'), smoke=True)
    kw.update(flags)
    with flagsaver.flagsaver(**kw), pytest.raises(SystemExit) as e:
      defend.main(['defend'])
    assert e.value.code == 2
    assert match in capsys.readouterr().err


def test_clean_dataset_with_other_labels_is_refused(poisoned_npz, tmp_path,
                                                    capsys):
  poisoned, clean = poisoned_npz
  z = dict(np.load(clean))
  z['y_train'] = (z['y_train'] + 1) % 4  # another dataset's labels
  other = tmp_path / 'other.npz'
  np.savez(other, **z)
  with flagsaver.flagsaver(poisoned=poisoned, clean=str(other), smoke=True,
                           workdir=str(tmp_path / 'w')), \
      pytest.raises(SystemExit) as e:
    defend.main(['defend'])
  assert e.value.code == 2 and 'labels of --poisoned' in capsys.readouterr().err
