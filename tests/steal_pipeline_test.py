"""`python -m pipelines.steal` end to end (smoke), reuse, resume, bad input."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from absl.testing import flagsaver

from modelsteal import attacks, victims
from modelsteal.oracle import LocalOracle
from modelsteal.experiments import steal as steal_lib
from pipelines import steal
from tests.conftest import check_labeling_resumes
from tests.conftest import synthetic_images
from tests.conftest import tiny_splits


def _main(**flags):
  with flagsaver.flagsaver(**flags):
    steal.main(['steal'])


def _results(workdir):
  path, = glob.glob(os.path.join(workdir, 'steal', '*', 'results.csv'))
  return pd.read_csv(path)


@pytest.mark.slow
def test_smoke_default_victim_then_reuse(tmp_path, capsys):
  wd = str(tmp_path)
  _main(victim='mnist_cnn', dataset='offline_mnist', workdir=wd, smoke=True)
  out = capsys.readouterr().out
  df = _results(wd)
  assert list(df['role']) == ['victim', 'student', 'student']
  assert set(df['arch']) == {'mnist_cnn', 'mnist_mlp'}
  for col in ('model', 'budget', 'output', 'accuracy', 'fidelity',
              'fidelity_heldout', 'normalized_accuracy'):
    assert col in df.columns
  assert (df['fidelity'].between(0, 1)).all() and df['fidelity'].iloc[0] == 1
  assert 'capped to the pool size' in out and 'results.json' in out
  # each student is a servable SavedModel with named outputs
  sm = df['saved_model'].iloc[1]
  sig = tf.saved_model.load(sm).signatures['serving_default']
  x = np.zeros((2, 28, 28, 1), np.float32)
  res = sig(images=tf.constant(x))
  assert res['probabilities'].shape == (2, 10) and res['label'].shape == (2,)
  # rerun: every step is reused, the results are identical
  _main(victim='mnist_cnn', dataset='offline_mnist', workdir=wd, smoke=True)
  out2 = capsys.readouterr().out
  steps = [l for l in out2.splitlines() if l.startswith('[steal]') and
           wd in l and 'SavedModel' not in l]
  assert steps and all('reused' in l for l in steps)
  pd.testing.assert_frame_equal(df, _results(wd))


@pytest.mark.slow
def test_budget_sweep_plot_and_probs(tiny_npz, tmp_path):
  wd = str(tmp_path)
  _main(victim='mnist_mlp', dataset=tiny_npz, workdir=wd, smoke=True,
        budgets=['20', '60'], output='topk:2', students=['mnist_mlp'])
  df = _results(wd)
  assert sorted(df[df.role == 'student']['budget']) == [20, 60]
  assert glob.glob(os.path.join(wd, 'steal', '*', 'budget_sweep.png'))
  labeled = glob.glob(os.path.join(wd, 'label_queries', '*', 'labeled'))
  props = [json.load(open(os.path.join(p, 'artifact.json')))['properties']
           for p in labeled]
  assert {p['budget'] for p in props} == {20, 60}
  assert all(p['soft'] for p in props)
  # nested random queries: the 60-query run paid only for 40 new ones
  assert sorted(p['queries_paid'] for p in props) == [20, 40]


def _expect_error(capsys, match, **flags):
  with pytest.raises(SystemExit) as e:
    _main(**flags)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert 'error:' in err and match in err, err
  assert 'Traceback' not in err


def test_bad_inputs_give_clear_errors(tiny_npz, tiny_model, tmp_path, capsys):
  wd = str(tmp_path / 'w')
  common = dict(workdir=wd, smoke=True)
  _expect_error(capsys, 'the zoo has', victim='resnet9000', **common)
  _expect_error(capsys, 'valid names', victim='mnist_mlp', dataset='imagenet',
                **common)
  _expect_error(capsys, 'valid forms', victim='mnist_mlp', dataset=tiny_npz,
                output='logits', **common)
  _expect_error(capsys, 'at least 1', victim='mnist_mlp', dataset=tiny_npz,
                budget=0, **common)
  # a budget above the pool of the user's own data: an error naming the flag
  # passed (not in smoke mode, whose small pool caps budgets instead)
  _expect_error(capsys, "--budget: the query budget (100000) is larger than "
                'the attacker', victim='mnist_mlp', dataset=tiny_npz,
                budget=100000, workdir=wd)
  _expect_error(capsys, '--budgets: the query budget (5000) is larger',
                victim='mnist_mlp', dataset=tiny_npz, budgets=['10', '5000'],
                workdir=wd)
  _expect_error(capsys, '--budgets: the query budget must be at least 1',
                victim='mnist_mlp', dataset=tiny_npz, budgets=['0'], **common)
  _expect_error(capsys, 'unknown student', victim='mnist_mlp',
                dataset=tiny_npz, students=['vgg99'], **common)
  _expect_error(capsys, 'needs --dataset', victim_path=str(tmp_path), **common)
  (tmp_path / 'junk').mkdir()
  _expect_error(capsys, 'not a SavedModel', victim_path=str(tmp_path / 'junk'),
                dataset=tiny_npz, **common)
  tiny_model.save(str(tmp_path / 'v.keras'))  # 12x12 model, 28x28 data
  _expect_error(capsys, 'takes images of shape', victim_path=str(
      tmp_path / 'v.keras'), dataset='offline_mnist', **common)
  bad = tmp_path / 'nan.npz'
  x = np.random.default_rng(0).uniform(size=(50, 8, 8)).astype(np.float32)
  x[3, 2, 2] = np.nan
  np.savez(bad, x_train=x, y_train=np.arange(50) % 3, x_test=x[:10],
           y_test=np.arange(10) % 3)
  _expect_error(capsys, 'NaN', victim='mnist_mlp', dataset=str(bad), **common)
  small = tmp_path / 'small.npz'
  np.savez(small, x_train=np.zeros((8, 8, 8), np.uint8),
           y_train=np.arange(8) % 3, x_test=np.zeros((4, 8, 8), np.uint8),
           y_test=np.arange(4) % 3)
  _expect_error(capsys, 'at least', victim='mnist_mlp', dataset=str(small),
                **common)
  # nothing looked finished after all those failures
  assert not glob.glob(os.path.join(wd, 'steal', '*', 'results.csv'))


@pytest.mark.slow
def test_smoke_caps_budgets_above_the_pool(tiny_npz, tmp_path, capsys):
  """--smoke shrinks the data, so --budgets meant for the full data are
  capped to the pool (with a notice) like the default budget."""
  wd = str(tmp_path)
  _main(victim='mnist_mlp', dataset=tiny_npz, workdir=wd, smoke=True,
        budgets=['20', '5000'], students=['mnist_mlp'])
  out = capsys.readouterr().out
  pool = json.load(open(glob.glob(os.path.join(
      wd, 'split_data', '*', 'splits', 'artifact.json'))[0]))['properties'][
          'sizes']['pool']
  assert f'budget 5000 capped to the pool size {pool}' in out
  assert sorted(_results(wd).query('role == "student"')['budget']) == [20, pool]


def test_victim_path_savedmodel(tiny_model, tiny_npz, tmp_path):
  from modelsteal.export import export_saved_model
  # a TF-Serving layout: the version directory is not the victim's name
  export_saved_model(tiny_model, str(tmp_path / 'victim' / '1'))
  wd = str(tmp_path / 'w')
  _main(victim_path=str(tmp_path / 'victim' / '1'), dataset=tiny_npz,
        workdir=wd, smoke=True, budget=50, students=['mnist_mlp'])
  df = _results(wd)
  assert df['role'].tolist() == ['victim', 'student']
  assert df['model'].iloc[0] == 'victim'
  assert df['victim_accuracy'].iloc[0] > 0.9  # the tiny model is good


def test_victim_path_name():
  assert steal_lib.victim_path_name('/models/mnist/1') == 'mnist'
  assert steal_lib.victim_path_name(
      'runs/train_model/50ff38b1/model/serving/1/') == '50ff38b1'
  assert steal_lib.victim_path_name('victim.keras') == 'victim'
  assert steal_lib.victim_path_name('/1') == 'victim'


def test_interrupted_labeling_resumes_without_paying_twice(
    tiny_npz, tmp_path, monkeypatch):
  wd = str(tmp_path)
  splits = tiny_splits(tiny_npz, wd)
  victim = attacks.train_model.run(
      wd, examples=splits, arch='mnist_mlp', split='victim',
      recipe={'epochs': 1})['model']
  check_labeling_resumes(LocalOracle, splits,
                         victims.victim_ref_from_model(victim), wd,
                         monkeypatch)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tiny_npz, tmp_path):
  """MirroredStrategy needs the devices configured before TF starts: a fresh
  interpreter runs the smoke pipeline on two logical CPU devices."""
  code = f"""
import tensorflow as tf
cpu, = tf.config.list_physical_devices('CPU')
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from absl import flags
from absl.testing import flagsaver
flags.FLAGS.mark_as_parsed()
from pipelines import steal
from tests.conftest import synthetic_images
from modelsteal import distribute
with flagsaver.flagsaver(victim='mnist_mlp', dataset={tiny_npz!r},
                         workdir={str(tmp_path)!r}, smoke=True, budget=60,
                         students=['mnist_mlp'], distribute='mirrored'):
  steal.main(['steal'])
s = distribute.current()
print('REPLICAS', s.num_replicas_in_sync, type(s).__name__)
"""
  env = dict(os.environ, MODELSTEAL_OFFLINE='1', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, env=env, timeout=300,
                        cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'REPLICAS 2 MirroredStrategy' in proc.stdout
  assert glob.glob(os.path.join(str(tmp_path), 'steal', '*', 'results.csv'))


@pytest.mark.slow
def test_knockoff_queries_from_another_dataset(tiny_npz, tmp_path):
  """--query_data: the pool and held-out data come from the other dataset."""
  other = tmp_path / 'other.npz'
  x, y = synthetic_images(300, seed=40)
  x = 1.0 - x  # a different distribution of the same shape
  np.savez(other, x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
  wd = str(tmp_path / 'w')
  _main(victim='mnist_mlp', dataset=tiny_npz, query_data=str(other),
        workdir=wd, smoke=True, budget=100, students=['mnist_mlp'])
  labeled, = glob.glob(os.path.join(wd, 'label_queries', '*', 'labeled'))
  from modelsteal.artifacts import Examples
  xs = Examples.load(labeled).load_split('train')['x']
  # every query is an image of the other dataset, none of the victim's
  theirs = {r.tobytes() for r in x.astype(np.float32)}
  assert len(xs) == 100 and all(r.tobytes() in theirs for r in xs)
  _expect_error_shape = tmp_path / 'rgb.npz'
  xr = np.zeros((40, 12, 12, 3), np.uint8)
  np.savez(_expect_error_shape, x_train=xr, y_train=np.arange(40) % 4,
           x_test=xr[:8], y_test=np.arange(8) % 4)
  with pytest.raises(SystemExit):
    _main(victim='mnist_mlp', dataset=tiny_npz, workdir=wd, smoke=True,
          query_data=str(_expect_error_shape), students=['mnist_mlp'])
