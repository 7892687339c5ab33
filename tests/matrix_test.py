"""`python -m pipelines.matrix --smoke`: attacks x defences over the REST
server, every cell's figures, resume, and the config's errors."""

import glob
import json
import os

import numpy as np
import pytest
from absl.testing import flagsaver

from modelsteal.errors import ConfigError
from modelsteal.experiments import matrix
from tests.conftest import synthetic_images


@pytest.fixture
def knockoff_npz(tmp_path):
  """Images of the victim's shape from elsewhere: inverted, other bands."""
  x, y = synthetic_images(300, seed=21)
  path = tmp_path / 'knockoff.npz'
  x = ((1.0 - x) * 255).astype(np.uint8)
  np.savez(path, x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
  return str(path)


@pytest.mark.slow
def test_matrix_smoke_fills_every_cell_and_resumes(tiny_npz, knockoff_npz,
                                                   tmp_path, capsys):
  from pipelines import matrix as pipeline  # pylint: disable=g-import-not-at-top
  wd = str(tmp_path / 'w')
  flags = dict(dataset=tiny_npz, knockoff_data=knockoff_npz, workdir=wd,
               smoke=True, budget=60, honest_images=40,
               defenses='none;label;block;watermark', watermark_rate=0.2,
               attacks=['random', 'knockoff'], student='mnist_mlp')
  with flagsaver.flagsaver(**flags):
    pipeline.main(['matrix'])
  out = capsys.readouterr().out
  (run_dir,) = [os.path.join(wd, 'matrix', d)
                for d in os.listdir(os.path.join(wd, 'matrix'))]
  cells = json.load(open(os.path.join(run_dir, 'cells.json')))
  assert {(c['defense'], c['attack']) for c in cells} == {
      (d, a) for d in ('none', 'label', 'block', 'watermark')
      for a in ('random', 'knockoff')}
  for c in cells:
    assert 0 <= c['honest_accuracy'] <= 1
    assert 'prada_flagged_at' in c and 'shift_flagged_at' in c
    if not c['blocked']:
      assert 0 <= c['fidelity'] <= 1 and c['queries_answered'] == 60
  wm = [c for c in cells if c['defense'] == 'watermark' and not c['blocked']]
  assert wm and all(c['watermark_marked'] > 0 and 0 <= c['p_value'] <= 1
                    for c in wm)
  assert all(c['p_value'] is None for c in cells
             if c['defense'] != 'watermark')
  assert os.path.exists(os.path.join(run_dir, 'fidelity.png'))
  assert 'fidelity' in out and 'cells:' in out
  # a rerun finds every cell done: nothing is asked again
  before = os.path.getmtime(os.path.join(run_dir, 'cells.json'))
  with flagsaver.flagsaver(**flags):
    pipeline.main(['matrix'])
  assert os.path.getmtime(os.path.join(run_dir, 'cells.json')) == before


@pytest.mark.slow
def test_matrix_margin_attack_asks_in_rounds_against_mad(tiny_npz, tmp_path):
  wd = str(tmp_path / 'w')
  res = matrix.run(matrix.MatrixConfig(
      dataset=tiny_npz, workdir=wd, smoke=True, budget=60, honest_images=20,
      attacks=('margin',), active_rounds=3, student='mnist_mlp',
      defenses=('none', 'mad:0.5,argmax')), progress=lambda _: None)
  cells = {c['defense']: c for c in res['cells']}
  assert set(cells) == {'none', 'mad:0.5,argmax'}
  for c in cells.values():
    assert c['attack'] == 'margin' and c['queries_answered'] == 60
    assert 0 <= c['fidelity'] <= 1
  # MAD-argmax keeps every label the honest client reads
  assert cells['mad:0.5,argmax']['honest_accuracy'] == \
      cells['none']['honest_accuracy']
  # three rounds: a seed set of 20, then two rounds chosen by margin, per cell
  rounds = glob.glob(os.path.join(wd, 'label_round', '*', 'execution.json'))
  assert len(rounds) == 4, rounds


@pytest.mark.parametrize('kwargs,field', [
    ({'attacks': ()}, 'attacks'),
    ({'attacks': ('jbda',)}, 'attacks'),
    ({'attacks': ('knockoff',)}, 'attacks'),
    ({'defenses': ('blur:3',)}, 'defenses'),
    ({'defenses': ('none', 'none')}, 'defenses'),
    ({'budget': 3}, 'budget'),
    ({'active_rounds': 1}, 'active_rounds'),
    ({'detect': 'prada:5'}, 'detect'),
])
def test_matrix_config_errors_name_the_field(kwargs, field):
  with pytest.raises(ConfigError) as e:
    matrix.MatrixConfig(**{'attacks': ('random',), **kwargs})
  assert e.value.field == field
