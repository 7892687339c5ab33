"""absl entry points: `python -m pipelines.<name>`; each module's docstring
opens with its command."""

import importlib.util
import os
import re
import sys
import threading

# TF's C++ INFO/WARNING lines drown the pipelines' own output; errors remain.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Lines TF's C++ start-up writes to stderr before its logging is configured
# (TF_CPP_MIN_LOG_LEVEL cannot hide them): noise on every machine without an
# NVIDIA driver.
_STARTUP_NOISE = re.compile(
    r'All log messages before absl::InitializeLog\(\) is called are written '
    r'to STDERR|cudart_stub\.cc:\d+\] Could not find cuda drivers')
# Hidden only where there is no NVIDIA driver at all; with a driver, a failed
# cuInit is a real error and is shown.
_NO_DRIVER_ERROR = re.compile(r'failed call to cuInit')


def quiet_logs():
  """absl INFO lines from TF's SavedModel writer are noise for a CLI user."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)


def is_startup_noise(line: str, no_driver: bool) -> bool:
  """Whether a stderr line from TF's start-up is known noise."""
  return bool(_STARTUP_NOISE.search(line) or (
      no_driver and _NO_DRIVER_ERROR.search(line)))


def _no_nvidia_driver() -> bool:
  return not os.path.exists('/dev/nvidiactl') and not os.path.exists(
      '/proc/driver/nvidia/version')


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow with its CPU-machine start-up noise filtered out.

  While TF loads and probes for GPUs, file descriptor 2 goes through a pipe;
  every line passes through at once except the known start-up noise: the
  `absl::InitializeLog` banner, "Could not find cuda drivers", and, only
  where the machine has no NVIDIA driver, the "failed call to cuInit" error.
  Anything else (a real error, a Python warning) is written as it arrives.
  Where TensorFlow is not installed (a JAX-only GPU image), nothing is done:
  `pipelines.ntga` runs without it.
  """
  if 'tensorflow' in sys.modules:
    return
  if importlib.util.find_spec('tensorflow') is None:
    return  # a JAX-only machine (e.g. a GPU image): pipelines.ntga needs no TF
  no_driver = _no_nvidia_driver()
  sys.stderr.flush()
  read_fd, write_fd = os.pipe()
  saved = os.dup(2)
  os.dup2(write_fd, 2)
  os.close(write_fd)

  def pump():
    pending = b''
    with os.fdopen(read_fd, 'rb', buffering=0) as pipe:
      while True:
        chunk = pipe.read(65536)
        if chunk:
          pending += chunk
          *lines, pending = pending.split(b'\n')
        else:
          lines, pending = ([pending] if pending else []), b''
        for line in lines:
          if is_startup_noise(line.decode('utf-8', 'replace'), no_driver):
            continue
          os.write(saved, line + b'\n')
        if not chunk:
          return

  thread = threading.Thread(target=pump, daemon=True)
  thread.start()
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices('GPU')  # where cuInit is tried
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # the pipe's last write end closes: the pump ends
    thread.join(timeout=10)
    os.close(saved)
