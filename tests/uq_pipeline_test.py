"""`python -m pipelines.uq`: resume, bad input; UQ students in
`pipelines.steal` (the study end to end: tests/readme_test.py)."""

import glob
import os

import pandas as pd
import pytest
from absl.testing import flagsaver

from modelsteal import training
from pipelines import steal
from pipelines import uq as uq_pipeline


def _main(module=uq_pipeline, **flags):
  with flagsaver.flagsaver(**flags):
    module.main(['uq'])


def _results(workdir, kind='uq'):
  path, = glob.glob(os.path.join(workdir, kind, '*', 'results.csv'))
  return pd.read_csv(path), os.path.dirname(path)


# The study end to end (every method, both variants, the table, the
# diversity trace and plot, one labelling step) is checked on the README's
# `pipelines.uq --methods=all` command: tests/readme_test.py,
# `_check_uq_all_methods`.


@pytest.mark.slow
def test_interrupted_run_resumes_without_retraining_finished_members(
    tiny_npz, tmp_path, monkeypatch, capsys):
  wd = str(tmp_path)
  flags = dict(victim='mnist_mlp', dataset=tiny_npz, workdir=wd, smoke=True,
               budgets=['60'], methods=['ensemble:mnist_mlp:members=3'],
               variants=['none'])
  real = training.train_classifier
  calls = []

  def counting(*args, **kwargs):
    calls.append(kwargs.get('seed'))
    if interrupt_at and len(calls) == interrupt_at:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(training, 'train_classifier', counting)
  # calls: victim, plain student, member 0, member 1 <- interrupted there
  interrupt_at = 4
  with pytest.raises(SystemExit) as e:
    _main(**flags)
  assert e.value.code == 130
  assert 'run the same command again to resume' in capsys.readouterr().err
  assert not glob.glob(os.path.join(wd, 'uq', '*', 'results.csv'))
  done = list(calls)
  calls.clear()
  interrupt_at = 0
  _main(**flags)
  # resumed: member 0 (seed 0) is not retrained, members 1 and 2 are
  assert calls == [1, 2], (done, calls)
  df, _ = _results(wd)
  assert len(df) == 2


@pytest.mark.parametrize('flags, match', [
    (dict(methods=['nope']), 'unknown UQ method'),
    (dict(methods=['ensemble:mnist_mlp:members=0']), 'members must be'),
    (dict(arch='resnet9000'), 'unknown base architecture'),
    (dict(methods=['ensemble:resnet9000']), 'unknown base architecture'),
    (dict(variants=['wild']), 'unknown variant'),
])
def test_bad_input_one_error_line(tiny_npz, tmp_path, capsys, flags, match):
  with pytest.raises(SystemExit) as e:
    _main(victim='mnist_mlp', dataset=tiny_npz, workdir=str(tmp_path),
          smoke=True, budgets=['40'], **flags)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert 'uq: error:' in err and match in err and 'Traceback' not in err, err
  assert not os.path.exists(os.path.join(str(tmp_path), 'train_model'))


@pytest.mark.slow
def test_steal_takes_uq_students_beside_plain_ones(tiny_npz, tmp_path, capsys):
  wd = str(tmp_path)
  _main(steal, victim='mnist_mlp', dataset=tiny_npz, workdir=wd, smoke=True,
        budgets=['60'], students=['mnist_mlp', 'mcdropout:mnist_mlp:samples=4'])
  df, _ = _results(wd, 'steal')
  assert list(df['arch']) == ['mnist_mlp', 'mnist_mlp',
                              'mcdropout:mnist_mlp:samples=4']
  sm = df['saved_model'].iloc[2]
  assert '/train_uq_model/' in sm
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  sig = tf.saved_model.load(sm).signatures['serving_default']
  assert {'probabilities', 'label', 'entropy', 'mutual_information'} <= set(
      sig.structured_outputs)
  with pytest.raises(SystemExit):
    _main(steal, victim='mnist_mlp', dataset=tiny_npz, workdir=wd, smoke=True,
          students=['swag:mnist_mlp:rank=1'])
  assert 'rank must be an integer' in capsys.readouterr().err
