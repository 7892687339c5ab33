"""absl entry points: `python -m pipelines.<name>`; each module's docstring
opens with its command."""

import os

# TF's C++ INFO/WARNING lines drown the pipelines' own output; errors remain.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def quiet_logs():
  """absl INFO lines from TF's SavedModel writer are noise for a CLI user."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
