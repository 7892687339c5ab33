"""The package's import contract."""

import os
import subprocess
import sys

import pytest


def test_import_loads_neither_tensorflow_nor_jax():
  code = ('import sys, modelsteal, modelsteal.data, modelsteal.oracle;'
          'print(sorted(m for m in ("tensorflow", "keras", "jax") '
          'if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True).stdout.strip()
  assert out == '[]'


def test_every_pipeline_imports_in_one_process():
  """absl rejects a flag defined twice: all pipelines must coexist (the test
  suite and notebooks import several)."""
  import pkgutil
  import pipelines
  names = [m.name for m in pkgutil.iter_modules(pipelines.__path__)]
  assert {'steal', 'serve', 'defend', 'ntga', 'poison_eval'} <= set(names)
  code = ';'.join(f'import pipelines.{n}' for n in names) + ';print("ok")'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, cwd=__file__.rsplit('/tests/', 1)[0])
  assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-2000:]


def test_no_pipeline_imports_another_pipeline():
  """Pipelines are flags -> config -> experiment -> print; shared flags live
  in helper modules (`pipelines.common`, `pipelines._*`), never in another
  pipeline. Lazy imports inside functions count too."""
  import ast
  import pathlib
  root = pathlib.Path(__file__).resolve().parent.parent / 'pipelines'
  pipelines = {p.stem for p in root.glob('*.py')
               if not p.stem.startswith('_') and p.stem != 'common'}
  assert {'steal', 'uq', 'synthetic', 'train_generator'} <= pipelines
  found = []
  for path in root.glob('*.py'):
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.ImportFrom) and node.module == 'pipelines':
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith(
          'pipelines.'):
        names = [node.module.split('.')[1]]
      elif isinstance(node, ast.Import):
        names = [a.name.split('.')[1] for a in node.names
                 if a.name.startswith('pipelines.')]
      found += [(path.stem, n) for n in names if n in pipelines]
  assert not found, found


def test_a_stealing_experiment_runs_from_a_config_without_flags(tiny_npz,
                                                              tmp_path):
  """A notebook's way in: a config and `run`, in a fresh interpreter where
  no absl flag is defined or parsed (no pipeline module is imported)."""
  code = f"""
import sys
from modelsteal.experiments import steal
df, out_dir = steal.run(steal.StealConfig(
    victim='mnist_mlp', dataset={tiny_npz!r}, budgets=(60,),
    students=('mnist_mlp',), workdir={str(tmp_path / 'runs')!r}, smoke=True))
assert not [m for m in sys.modules if m.startswith('pipelines')]
print('ROLES', list(df['role']), 'PAID', df['queries_paid'].iloc[1],
      'FID', df['fidelity'].iloc[1], 'DIR', out_dir)
"""
  env = dict(os.environ, MODELSTEAL_OFFLINE='1', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, env=env, timeout=300,
                        cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  line, = [l for l in proc.stdout.splitlines() if l.startswith('ROLES')]
  assert "ROLES ['victim', 'student'] PAID 60" in line
  fid = float(line.split('FID ')[1].split()[0])
  assert 0.0 <= fid <= 1.0
  out_dir = line.split('DIR ')[1]
  assert os.path.exists(os.path.join(out_dir, 'results.csv'))


def test_config_errors_name_the_field_not_a_flag():
  from modelsteal.errors import ConfigError
  from modelsteal.experiments import steal
  with pytest.raises(ConfigError) as e:
    steal.StealConfig(query_strategy='margin', rounds=1)
  assert e.value.field == 'query_strategy' and '--' not in str(e.value)
  assert 'needs rounds of 2' in str(e.value)
  with pytest.raises(ConfigError) as e:
    steal.StealConfig(victim='nope')
  assert "unknown victim 'nope'" in str(e.value)
