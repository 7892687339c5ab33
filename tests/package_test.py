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
