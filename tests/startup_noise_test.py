"""TF's CPU-machine start-up noise is filtered; real errors are not."""

import os
import subprocess
import sys

import pytest

from pipelines import is_startup_noise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUINIT = ('E0000 00:00:1795644623.556586 2723 cuda_platform.cc:52] failed '
          'call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: '
          'UNKNOWN ERROR (303)')


def test_noise_lines_and_real_errors():
  assert is_startup_noise('WARNING: All log messages before '
                          'absl::InitializeLog() is called are written to '
                          'STDERR', no_driver=False)
  assert is_startup_noise('I0000 00:00:1795644621.379813 2723 cudart_stub.cc:'
                          '31] Could not find cuda drivers on your machine, '
                          'GPU will not be used.', no_driver=False)
  assert is_startup_noise(CUINIT, no_driver=True)
  # with an NVIDIA driver present, a failed cuInit is a real error
  assert not is_startup_noise(CUINIT, no_driver=False)
  assert not is_startup_noise('E0000 some_kernel.cc:12] out of memory',
                              no_driver=True)
  assert not is_startup_noise('Traceback (most recent call last):', True)


@pytest.mark.slow
def test_tensorflow_import_is_quiet_but_stderr_still_works():
  code = ('import os, sys\n'
          'from pipelines import import_tensorflow_quietly\n'
          'import_tensorflow_quietly()\n'
          'import tensorflow as tf\n'
          'print(tf.constant(2).numpy() * 21)\n'
          'sys.stderr.write("real error after import\\n")\n')
  env = dict(os.environ)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # as a user's shell has it
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, cwd=ROOT, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == '42'
  for noise in ('absl::InitializeLog', 'cudart_stub', 'cuInit' if
                not os.path.exists('/dev/nvidiactl') else 'absl::Initialize'):
    assert noise not in proc.stderr, proc.stderr
  assert 'real error after import' in proc.stderr


@pytest.mark.slow
def test_ntga_pipeline_runs_where_tensorflow_is_not_installed(tiny_npz,
                                                              tmp_path):
  # A JAX-only GPU image: TF hidden by a finder that refuses it.
  code = ('import sys\n'
          'class NoTF:\n'
          '  def find_spec(self, name, path=None, target=None):\n'
          '    if name.split(".")[0] == "tensorflow":\n'
          '      raise ModuleNotFoundError("No module named tensorflow")\n'
          'sys.meta_path.insert(0, NoTF())\n'
          'import importlib.util\n'
          'importlib.util.find_spec = (lambda name, *a, f=importlib.util.'
          'find_spec: None if name == "tensorflow" else f(name, *a))\n'
          'sys.argv = ["ntga", "--dataset=" + sys.argv[1], "--smoke",\n'
          '            "--workdir=" + sys.argv[2]]\n'
          'from absl import app\n'
          'from pipelines import ntga\n'
          'app.run(ntga.main)\n')
  proc = subprocess.run([sys.executable, '-c', code, tiny_npz,
                         str(tmp_path)], capture_output=True, text=True,
                        cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'poisoned:' in proc.stdout
  assert 'tensorflow' not in proc.stderr.lower(), proc.stderr[-2000:]
