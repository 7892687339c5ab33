"""An append-only query log, one JSON-lines file per client.

Each line is one request: what was asked (the input arrays, exactly), when,
what was answered (the output arrays as sent), and what the server decided
(status, detector flags), enough to replay a client's history:

    {"seq": 17, "t": 1796651234.5, "client": "alice", "protocol": "rest",
     "model": "mnist", "version": 1, "signature": "serving_default",
     "status": 200, "n": 64, "flags": [],
     "inputs": {"images": {"dtype": "float32", "shape": [64, 28, 28, 1],
                           "b64": "..."}},
     "outputs": {"probabilities": {...}, "label": {...}}}

Refused requests (429, 400 before the model ran) are logged with their
status and no arrays. Keys are never written; clients are named.

Durability: the server answers a request only after its line is written
(and, with `fsync`, on disk). Writes from concurrent requests are grouped:
one writer thread takes every line waiting, writes each file's share with
one `write`, then one `fsync` per file, then releases all their answers (a
group commit). A process killed mid-write leaves at most a torn last line,
never an acknowledged one; `read_log` ignores a torn last line and the next
writer cuts it off before appending.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import json
import os
from typing import Iterator

import numpy as np

try:
  import orjson  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover - orjson is in the serve extra
  orjson = None


def encode_array(a: np.ndarray) -> dict:
  a = np.ascontiguousarray(a)
  return {'dtype': a.dtype.str, 'shape': list(a.shape),
          'b64': base64.b64encode(a.tobytes()).decode('ascii')}


def decode_array(d: dict) -> np.ndarray:
  return np.frombuffer(base64.b64decode(d['b64']),
                       np.dtype(d['dtype'])).reshape(d['shape'])


def _dumps(obj) -> bytes:
  if orjson is not None:
    return orjson.dumps(obj) + b'\n'
  return json.dumps(obj, separators=(',', ':')).encode() + b'\n'


def log_path(directory: str, client: str) -> str:
  return os.path.join(directory, f'{client}.jsonl')


@dataclasses.dataclass
class LogSummary:
  """What the server needs from a client's log at startup."""
  entries: int = 0
  last_seq: int = -1
  flagged: list = dataclasses.field(default_factory=list)  # detector names
  answered: list = dataclasses.field(default_factory=list)  # (t, n) of 200s
  torn_tail: bool = False


def read_log(path: str) -> Iterator[dict]:
  """The entries of one client's log, in order. A torn last line (a write
  cut off by a crash, never acknowledged) is skipped; a bad line anywhere
  else raises ValueError with its line number."""
  with open(path, 'rb') as f:
    data = f.read()
  lines = data.split(b'\n')
  complete = lines[:-1]  # the piece after the last newline is torn or empty
  for i, line in enumerate(complete):
    try:
      yield json.loads(line)
    except ValueError as e:
      raise ValueError(f'{path}: line {i + 1} is not a log entry ({e}).'
                       ) from None


def summarize(path: str) -> LogSummary:
  out = LogSummary()
  if not os.path.exists(path):
    return out
  with open(path, 'rb') as f:
    data = f.read()
  out.torn_tail = bool(data) and not data.endswith(b'\n')
  for e in read_log(path):
    out.entries += 1
    out.last_seq = max(out.last_seq, int(e.get('seq', -1)))
    for name in e.get('flags') or ():
      if name not in out.flagged:
        out.flagged.append(name)
    if e.get('status') == 200:
      out.answered.append((float(e['t']), int(e['n'])))
  return out


def replay(path: str, name: str | None = None
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """A client's answered queries in order: (inputs of input `name`, the
  outputs by name), concatenated over requests."""
  xs, outs = [], {}
  for e in read_log(path):
    if e.get('status') != 200:
      continue
    ins = e['inputs']
    key = name or next(iter(ins))
    xs.append(decode_array(ins[key]))
    for k, v in e['outputs'].items():
      outs.setdefault(k, []).append(decode_array(v))
  if not xs:
    return np.zeros((0,)), {}
  return np.concatenate(xs), {k: np.concatenate(v) for k, v in outs.items()}


class QueryLog:
  """The server's log writer (see the module docstring).

  Args:
    directory: one `CLIENT.jsonl` per client is appended here.
    fsync: `fsync` each group before answering (survives a power cut, not
      just a killed process).
  """

  def __init__(self, directory: str, fsync: bool = True):
    self.directory = directory
    self.fsync = fsync
    os.makedirs(directory, exist_ok=True)
    self._fds: dict[str, int] = {}
    self._seq: dict[str, int] = {}
    self._pending: list = []
    self._wake: asyncio.Event | None = None
    self._task: asyncio.Task | None = None
    self._executor: concurrent.futures.ThreadPoolExecutor | None = None
    self.groups = 0  # writes done (for the stats endpoint)
    self.entries = 0

  def open_client(self, client: str) -> LogSummary:
    """Opens (or creates) a client's file, cutting off a torn last line
    first, and returns what it held."""
    path = log_path(self.directory, client)
    summary = summarize(path)
    if summary.torn_tail:
      with open(path, 'rb') as f:
        data = f.read()
      with open(path, 'r+b') as f:
        f.truncate(data.rfind(b'\n') + 1)
    self._fds[client] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                0o600)
    self._seq[client] = summary.last_seq + 1
    return summary

  async def start(self) -> None:
    self._wake = asyncio.Event()
    self._executor = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix='querylog')
    self._task = asyncio.get_running_loop().create_task(self._run())

  async def stop(self) -> None:
    from modelsteal.serving.batching import cancel_and_wait  # pylint: disable=g-import-not-at-top
    await cancel_and_wait(self._task)
    self._task = None
    for fd in self._fds.values():
      os.close(fd)
    self._fds.clear()
    if self._executor is not None:
      self._executor.shutdown(wait=True)

  def next_seq(self, client: str) -> int:
    s = self._seq[client]
    self._seq[client] = s + 1
    return s

  async def append(self, client: str, line: bytes) -> None:
    """Returns once `line` (one encoded entry, `encode`) is written."""
    fut = asyncio.get_running_loop().create_future()
    self._pending.append((client, line, fut))
    self._wake.set()
    await fut

  @staticmethod
  def encode(entry: dict) -> bytes:
    return _dumps(entry)

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      await self._wake.wait()
      self._wake.clear()
      group, self._pending = self._pending, []
      if not group:
        continue
      try:
        if self.fsync:
          await loop.run_in_executor(self._executor, self._write, group)
        else:  # into the page cache: microseconds, not worth a thread
          self._write(group)
      except Exception as e:  # pylint: disable=broad-except
        for _, _, fut in group:
          if not fut.done():
            fut.set_exception(OSError(f'the query log cannot be written: '
                                      f'{e}'))
      else:
        self.groups += 1
        self.entries += len(group)
        for _, _, fut in group:
          if not fut.done():
            fut.set_result(None)

  def _write(self, group) -> None:
    by_client: dict[str, list[bytes]] = {}
    for client, line, _ in group:
      by_client.setdefault(client, []).append(line)
    for client, lines in by_client.items():
      fd = self._fds[client]
      buf = memoryview(b''.join(lines))
      while buf:
        buf = buf[os.write(fd, buf):]
      if self.fsync:
        os.fsync(fd)
