"""`python -m pipelines.serve` in a subprocess for the owner's-side
benchmarks: REST only, a free port, killed after a time limit."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(flags: list[str], limit_s: float):
  """(process, kill timer, model URL) once the server listens; its output
  is echoed until then and drained after."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'pipelines.serve', '--port=0', '--grpc_port=-1',
       '--model_name=victim', *flags],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  timer = threading.Timer(limit_s, proc.kill)
  timer.start()
  for line in proc.stdout:
    print(line, end='', flush=True)
    if line.startswith('[serve] listening:'):
      threading.Thread(target=lambda: [None for _ in proc.stdout],
                       daemon=True).start()
      return proc, timer, line.split()[2]
  timer.cancel()
  raise RuntimeError('the server did not start')
