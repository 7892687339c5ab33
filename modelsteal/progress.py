"""Progress for long loops: one line per step, quiet unless asked.

On a terminal, `Progress` redraws one line in place (`\\r`, no ANSI codes)
with count, rate and ETA, and erases it when the step ends, so a finished
step leaves only the caller's own summary line. When the output is not a
terminal (a log file, a pipe, CI), it writes nothing but a plain line every
`interval` seconds, so short steps stay silent and long ones show signs of
life without filling the log with carriage returns or escape codes.

Verbosity is one process-wide setting (`set_verbose`), like
`modelsteal.distribute.use`: pipelines set it from `--verbose`; library
functions take `verbose=None` to mean "the process setting". With verbose
on, training prints Keras' per-epoch lines instead of a bar.
"""

from __future__ import annotations

import sys
import time

_VERBOSE = False


def set_verbose(verbose: bool) -> None:
  """Per-epoch (and other detailed) lines on or off for this process."""
  global _VERBOSE
  _VERBOSE = bool(verbose)


def verbose() -> bool:
  return _VERBOSE


def _duration(seconds: float) -> str:
  seconds = int(round(max(seconds, 0)))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m'


class Progress:
  """A progress line: `desc: 120/540 queries, 3,110/s, ETA 0s, loss 0.12`.

  Args:
    total: number of units the step will do (None or 0: unknown).
    desc: what the step is, shown first.
    unit: name of one unit.
    plural: its plural (default `unit + 's'`).
    stream: where to write (default: sys.stdout at creation).
    interval: seconds between lines when the stream is not a terminal.
    enabled: False writes nothing at all.

  Use as a context manager, or call `close()`; `update(n, **info)` adds `n`
  units and shows the keyword values after the rate (floats as %.4g).
  """

  def __init__(self, total: int | None, desc: str, unit: str = 'step',
               plural: str | None = None, *, stream=None,
               interval: float = 30.0, enabled: bool = True):
    self.total = int(total or 0)
    self.desc = desc
    self.unit = unit
    self.plural = plural or unit + 's'
    self.stream = stream or sys.stdout
    self.enabled = enabled
    self.interval = interval
    isatty = getattr(self.stream, 'isatty', None)
    self.tty = bool(isatty and isatty())
    self.n = 0
    self.info: dict = {}
    self.start = time.monotonic()
    self._last = self.start
    self._width = 0

  def line(self) -> str:
    """The current line (without newline)."""
    elapsed = time.monotonic() - self.start
    rate = self.n / elapsed if elapsed > 0 else 0.0
    units = self.unit if self.n == 1 and not self.total else self.plural
    parts = [f'{self.n:,}/{self.total:,} {units}' if self.total
             else f'{self.n:,} {units}']
    if rate >= 10:
      parts.append(f'{rate:,.0f}/s')
    elif rate > 0:
      parts.append(f'{rate:.2f}/s')
    if self.total and rate > 0 and self.n < self.total:
      parts.append(f'ETA {_duration((self.total - self.n) / rate)}')
    else:
      parts.append(_duration(elapsed))
    parts += [f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}'
              for k, v in self.info.items()]
    return f'{self.desc}: ' + ', '.join(parts)

  def update(self, n: int = 1, **info) -> None:
    self.n += n
    self.info.update(info)
    if not self.enabled:
      return
    now = time.monotonic()
    if self.tty:
      if now - self._last >= 0.1 or self.n >= self.total > 0:
        self._draw()
        self._last = now
    elif now - self._last >= self.interval:
      self.stream.write(self.line() + '\n')
      self.stream.flush()
      self._last = now

  def _draw(self) -> None:
    text = self.line()
    pad = max(0, self._width - len(text))
    self.stream.write('\r' + text + ' ' * pad)
    self.stream.flush()
    self._width = len(text)

  def close(self) -> None:
    """Erases the terminal line; elsewhere a final line if any was written."""
    if not self.enabled:
      return
    if self.tty and self._width:
      self.stream.write('\r' + ' ' * self._width + '\r')
      self.stream.flush()
    elif not self.tty and self._last > self.start:
      self.stream.write(self.line() + ', done\n')
      self.stream.flush()
    self._width = 0
    self.enabled = False

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def keras_callback(desc: str, *, stream=None, interval: float = 30.0):
  """A Keras callback showing training as one `Progress` line.

  Counts batches over all epochs (`epoch 3/12` and the last loss shown), so
  the ETA covers the whole fit. Erased (terminal) or summarised (log) at the
  end of training.
  """
  import keras  # pylint: disable=g-import-not-at-top

  class TrainProgress(keras.callbacks.Callback):

    def __init__(self):
      super().__init__()
      self.bar = None
      self.epochs = 0

    def on_train_begin(self, logs=None):
      self.epochs = int(self.params.get('epochs') or 0)
      steps = int(self.params.get('steps') or 0)
      self.bar = Progress(steps * self.epochs, desc, 'batch', 'batches',
                          stream=stream, interval=interval)

    def on_epoch_begin(self, epoch, logs=None):
      if self.bar.n == 0 and epoch:  # resumed (BackupAndRestore): less to do
        self.bar.total -= epoch * int(self.params.get('steps') or 0)
      self.bar.info['epoch'] = f'{epoch + 1}/{self.epochs}'

    def on_train_batch_end(self, batch, logs=None):
      loss = (logs or {}).get('loss')
      self.bar.update(1, **({'loss': float(loss)} if loss is not None else {}))

    def on_train_end(self, logs=None):
      self.bar.close()

  return TrainProgress()
