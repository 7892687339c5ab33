"""The package's import contract."""

import subprocess
import sys


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
