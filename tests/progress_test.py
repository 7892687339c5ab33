"""modelsteal.progress: plain lines in logs, one redrawn line on terminals."""

import io
import re

import pytest

from modelsteal import progress
from modelsteal.training import TrainConfig, train_classifier
from tests.conftest import synthetic_images

ANSI = re.compile(r'\x1b\[')


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def test_log_file_gets_plain_lines_with_rate_and_eta():
  out = io.StringIO()
  with progress.Progress(100, 'asking', 'query', 'queries', stream=out,
                         interval=0) as bar:
    for _ in range(4):
      bar.update(25, paid=7)
  text = out.getvalue()
  assert not ANSI.search(text) and '\r' not in text
  lines = text.splitlines()
  assert lines[0].startswith('asking: 25/100 queries, ')
  assert 'ETA' in lines[0] and '/s' in lines[0] and 'paid 7' in lines[0]
  assert lines[-1].startswith('asking: 100/100 queries') and lines[-1].endswith(
      'done')


def test_short_step_in_a_log_file_prints_nothing():
  out = io.StringIO()
  with progress.Progress(10, 'quick', stream=out) as bar:  # interval 30 s
    bar.update(10)
  assert out.getvalue() == ''


def test_terminal_line_is_redrawn_then_erased_without_ansi():
  out = _Terminal()
  with progress.Progress(3, 'work', stream=out) as bar:
    for _ in range(3):
      bar.update(1)
  text = out.getvalue()
  assert text.startswith('\rwork: ') and '3/3 steps' in text
  assert not ANSI.search(text) and '\n' not in text
  assert text.endswith('\r') and text.rstrip('\r').split('\r')[-1].strip() == ''


@pytest.mark.slow
def test_quiet_training_is_one_progress_line_verbose_is_per_epoch(capsys):
  x, y = synthetic_images(64, seed=5)
  cfg = TrainConfig(epochs=3, batch_size=32)
  progress.set_verbose(False)
  log = io.StringIO()
  cb = progress.keras_callback('train tiny', stream=log, interval=0)
  train_classifier('mnist_mlp', x, y, 4, cfg, verbose=0, callbacks=[cb])
  lines = log.getvalue().splitlines()
  assert len(lines) == 3 * 2 + 1  # every batch (interval 0), then done
  assert lines[0].startswith('train tiny: 1/6 batches') and 'epoch 1/3' in (
      lines[0])
  assert 'epoch 3/3' in lines[-1] and 'loss' in lines[-1]
  capsys.readouterr()
  train_classifier('mnist_mlp', x, y, 4, cfg)  # quiet default: no epochs
  assert 'Epoch' not in capsys.readouterr().out
  try:
    progress.set_verbose(True)
    train_classifier('mnist_mlp', x, y, 4, cfg)
  finally:
    progress.set_verbose(False)
  out = capsys.readouterr().out
  assert len(re.findall(r'loss: ', out)) == 3  # Keras' line per epoch


@pytest.mark.parametrize('seconds,text', [(5, '5s'), (125, '2m05s'),
                                          (3720, '1h02m')])
def test_durations(seconds, text):
  assert progress._duration(seconds) == text  # pylint: disable=protected-access
