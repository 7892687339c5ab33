"""`python -m pipelines.train_generator`, `pipelines.synthetic` and
`pipelines.steal --query_data=generator:...` in smoke mode; bad input.

One workdir for the module: the smoke generator is trained once and reused
by the later tests, as a user's second command would reuse it.
"""

import glob
import json
import os
import socket

import numpy as np
import pandas as pd
import pytest
from absl.testing import flagsaver

from modelsteal.synthetic import cvae
from modelsteal.synthetic import rest
from pipelines import steal
from pipelines import synthetic
from pipelines import train_generator


@pytest.fixture(scope='module')
def wd(tmp_path_factory):
  return str(tmp_path_factory.mktemp('synthetic_wd'))


def _run(module, **flags):
  with flagsaver.flagsaver(**flags):
    module.main([module.__name__])


@pytest.mark.slow
def test_train_generator_smoke_then_reuse(wd, capsys):
  _run(train_generator, dataset='offline_mnist', smoke=True, workdir=wd)
  out = capsys.readouterr().out
  assert 'sampling rate' in out and 'images/s' in out
  path = out.split('SavedModel     ')[1].split()[0]
  assert os.path.exists(os.path.join(path, 'saved_model.pb'))
  assert glob.glob(os.path.join(wd, 'train_generator', '*', 'samples.png'))
  with open(os.path.join(path, 'assets.extra', 'generator.json')) as f:
    assert json.load(f)['latent_sampling'].startswith('fitted')  # default
  _run(train_generator, dataset='offline_mnist', smoke=True, workdir=wd)
  assert '): reused' in capsys.readouterr().out
  _run(train_generator, dataset='offline_mnist', smoke=True, workdir=wd,
       generator_latent='prior', generator_decoder='conv')
  out = capsys.readouterr().out
  assert '): reused' not in out  # another design: another run
  path = out.split('SavedModel     ')[1].split()[0]
  with open(os.path.join(path, 'assets.extra', 'generator.json')) as f:
    assert json.load(f)['latent_sampling'] == 'prior'


@pytest.mark.slow
def test_synthetic_smoke_table_and_grid(wd, capsys):
  _run(synthetic, generator='cvae', dataset='offline_mnist', smoke=True,
       workdir=wd, per_class=5, classifiers=['mnist_mlp'],
       filter='confidence:0.02')  # the smoke classifier is weak
  out = capsys.readouterr().out
  run_dir, = glob.glob(os.path.join(wd, 'synthetic', '*'))
  df = pd.read_csv(os.path.join(run_dir, 'results.csv'))
  assert list(df['per_class']) == [5] and list(df['train_size']) == [50]
  assert list(df['classifier']) == ['mnist_mlp']
  assert list(df['filter']) == ['confidence:0.02']
  assert df['acc_generated'].between(0, 1).all()
  assert df['acc_real'].between(0, 1).all()
  assert 'acc_generated' in out and 'gap_points' in out
  with open(os.path.join(run_dir, 'results.json')) as f:
    assert len(json.load(f)) == 1
  assert os.path.getsize(os.path.join(run_dir, 'samples.png')) > 1000
  mined, = glob.glob(os.path.join(wd, 'mine_images', '*', 'mined'))
  with open(os.path.join(mined, 'artifact.json')) as f:
    props = json.load(f)['properties']
  assert props['sizes'] == {'train': 50}
  assert props['filter'] == 'confidence:0.02'


def test_per_class_sweep_plot(tmp_path):
  from modelsteal.synthetic.plots import plot_per_class_sweep  # pylint: disable=g-import-not-at-top
  df = pd.DataFrame({'classifier': ['cnn'] * 4,
                     'data': ['real', 'generated'] * 2,
                     'per_class': [10, 10, 100, 100],
                     'accuracy': [0.8, 0.7, 0.95, 0.9]})
  path = plot_per_class_sweep(df, str(tmp_path / 'sweep.png'))
  assert os.path.getsize(path) > 1000


@pytest.mark.slow
def test_steal_with_generated_queries_labels_them_through_the_oracle(wd):
  _run(steal, victim='mnist_mlp', dataset='offline_mnist', smoke=True,
       workdir=wd, query_data='generator:cvae', budget=40,
       students=['mnist_mlp'])
  results, = glob.glob(os.path.join(wd, 'steal', '*generator_cvae*',
                                    'results.csv'))
  df = pd.read_csv(results)
  assert list(df['role']) == ['victim', 'student']
  assert df['queries_paid'].iloc[1] == 40
  lab, = glob.glob(os.path.join(wd, 'label_queries', '*', 'labeled'))
  from modelsteal.artifacts import Examples  # pylint: disable=g-import-not-at-top
  data = Examples.load(lab).load_split('train')
  assert set(np.unique(data['x'])) <= {0.0, 1.0}  # generated (Bernoulli)
  np.testing.assert_array_equal(data['y'], data['answers'].argmax(1))


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _expect_error(capsys, match, **flags):
  with pytest.raises(SystemExit) as e:
    _run(synthetic, **flags)
  assert e.value.code == 2
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if 'error:' in l]
  assert len(lines) == 1 and lines[0].startswith('synthetic: error:'), err
  assert match in lines[0], err
  assert 'Traceback' not in err


def test_bad_input_is_one_clear_error_line(wd, tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(rest, '_sleep', lambda s: None)
  common = dict(dataset='offline_mnist', smoke=True, workdir=wd,
                classifiers=['mnist_mlp'], per_class=3)
  _expect_error(capsys, "unknown generator 'dall-e'",
                **{**common, 'generator': 'dall-e'})
  _expect_error(capsys, '--per_class: images per class must be at least 1',
                **{**common, 'generator': 'cvae', 'per_class': 0})
  _expect_error(capsys, 'unreachable or failing',
                **{**common, 'generator': f'http://127.0.0.1:{_free_port()}'
                   '/v1/images/generations'})
  # a generator of 28x28 images whose classes are letters, not digits
  model = cvae.build_cvae((28, 28, 1), 10, latent_dim=2, hidden=(8,))
  path = cvae.export_generator(model, str(tmp_path / 'letters'),
                               list('abcdefghij'))
  _expect_error(capsys, "does not know the class '0'",
                **{**common, 'generator': path})
  with pytest.raises(SystemExit):
    _run(steal, victim='mnist_mlp', dataset='offline_mnist', smoke=True,
         workdir=wd, query_data='generator:nothing-here')
  assert "steal: error: unknown generator 'nothing-here'" in (
      capsys.readouterr().err)
