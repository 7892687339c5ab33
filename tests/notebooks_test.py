"""The Colab notebooks run top to bottom, headless, on the CPU in smoke mode
(tiny synthetic data), as a user would run them: a notebook that breaks
fails here. The TPU / GPU cells must fall back with a message.

To keep the suite's time budget the three share one kernel (TensorFlow is
imported once; the namespace is cleared before each notebook, so a notebook
cannot lean on another's variables) and one workdir (the UQ notebook reuses
the victim the stealing notebook trained, as a user's second notebook
would)."""

import json
import os

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What a smoke run changes in each notebook's `parameters` cell (appended, as
# papermill does), besides SMOKE and WORKDIR.
SMOKE = {
    'steal_tpu.ipynb': dict(VICTIM='mnist_mlp', BUDGETS=(60, 120),
                            STUDENTS=('mnist_mlp',)),
    'uq_active_gpu.ipynb': dict(
        VICTIM='mnist_mlp', STUDENTS=('mnist_mlp',),
        UQ_METHODS=('mcdropout',), UQ_VARIANTS=('none',), UQ_BUDGETS=(60,),
        STRATEGIES='margin', ROUNDS=2, ACTIVE_BUDGET=80),
    'ntga_gpu.ipynb': dict(TARGETS=('ntga_fnn',), DEFENSES='bitdepth:1',
                           EPOCHS=1, TRAIN_SIZE=128),
}
FALLBACK = {'steal_tpu.ipynb': 'No TPU here', 'ntga_gpu.ipynb': 'No GPU here',
            'uq_active_gpu.ipynb': 'No GPU here'}


def test_every_notebook_is_tested():
  assert sorted(os.listdir(os.path.join(ROOT, 'notebooks'))) == sorted(SMOKE)


def _outputs(nb):
  text = []
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      text.append(out.get('text', '') or json.dumps(out.get('data', {})))
  return '\n'.join(text)


def _smoke_notebook(name, data, workdir):
  nb = nbformat.read(os.path.join(ROOT, 'notebooks', name), as_version=4)
  cell = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', ()))
  overrides = dict(SMOKE=True, WORKDIR=workdir,
                   **{k: v for k, v in data.items()
                      if f'\n{k} = ' in cell.source}, **SMOKE[name])
  for key in overrides:
    assert f'\n{key} = ' in cell.source, f'{name} has no parameter {key}'
  cell.source += '\n# smoke run (tests/notebooks_test.py)\n' + '\n'.join(
      f'{k} = {v!r}' for k, v in overrides.items())
  nb.cells.insert(0, nbformat.v4.new_code_cell(
      "get_ipython().run_line_magic('reset', '-f')"))
  return nb


@pytest.mark.slow
def test_notebooks_run_in_smoke_mode(tiny_npz, tmp_path, monkeypatch):
  monkeypatch.setenv('PYTHONPATH', ROOT)
  monkeypatch.setenv('MODELSTEAL_OFFLINE', '1')
  data = {'DATASET': tiny_npz, 'DATASETS': (tiny_npz,)}
  workdir = str(tmp_path / 'runs')
  km = KernelManager(kernel_name='python3')
  km.start_kernel(cwd=str(tmp_path))
  try:
    for name in SMOKE:  # stealing first: the UQ notebook reuses its victim
      nb = _smoke_notebook(name, data, workdir)
      NotebookClient(nb, km=km, timeout=300).execute()  # raises, with the cell
      out = _outputs(nb)
      assert FALLBACK[name] in out, name
      assert 'image/png' in out, name  # the plots are shown inline
  finally:
    km.shutdown_kernel(now=True)
  assert os.listdir(workdir)
