"""On-disk answer cache: a query is paid for once, ever.

Entries are keyed by the SHA-1 of the query's float32 bytes and its shape.
Each flush writes one `part-NNNNNN.npz` (keys (n, 20) uint8, answers (n, K)
float32) to a temporary name and renames it, so a part is either whole or
absent. A part that is nevertheless unreadable (disk trouble, a hand edit) is
moved aside as `*.corrupt` with a warning and its queries are asked again:
a clean resume, never a crash deep inside numpy.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
import zipfile

import numpy as np


def query_keys(x: np.ndarray) -> list[bytes]:
  x = np.ascontiguousarray(x, np.float32)
  shape = str(x.shape[1:]).encode()
  return [hashlib.sha1(shape + row.tobytes()).digest() for row in x]


class AnswerCache:
  """A persistent map query -> answer row, under `directory`."""

  def __init__(self, directory: str):
    self.directory = directory
    os.makedirs(directory, exist_ok=True)
    self._index: dict[bytes, np.ndarray] = {}
    self._pending_keys: list[bytes] = []
    self._pending_answers: list[np.ndarray] = []
    self.corrupt_parts: list[str] = []
    self._load()

  def _load(self) -> None:
    for path in sorted(glob.glob(os.path.join(self.directory, 'part-*.npz'))):
      try:
        with np.load(path) as z:
          keys, answers = z['keys'], z['answers']
        if keys.shape[0] != answers.shape[0] or keys.shape[1:] != (20,):
          raise ValueError('keys and answers disagree')
      except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        aside = path + '.corrupt'
        os.replace(path, aside)
        self.corrupt_parts.append(aside)
        print(f'[modelsteal] answer cache: {path} is corrupt ({e}); moved it '
              f'to {aside}; its queries will be asked again.', file=sys.stderr)
        continue
      for k, a in zip(keys, answers):
        self._index[k.tobytes()] = a

  def __len__(self) -> int:
    return len(self._index)

  def get(self, key: bytes) -> np.ndarray | None:
    return self._index.get(key)

  def put(self, keys: list[bytes], answers: np.ndarray) -> None:
    for k, a in zip(keys, answers):
      self._index[k] = a
    self._pending_keys.extend(keys)
    self._pending_answers.append(np.asarray(answers, np.float32))

  def flush(self) -> None:
    if not self._pending_keys:
      return
    n = len(glob.glob(os.path.join(self.directory, 'part-*.npz')))
    path = os.path.join(self.directory, f'part-{n:06d}-{os.getpid()}.npz')
    tmp = path + '.tmp.npz'
    keys = np.frombuffer(b''.join(self._pending_keys), np.uint8).reshape(-1, 20)
    np.savez(tmp, keys=keys, answers=np.concatenate(self._pending_answers))
    os.replace(tmp, path)
    self._pending_keys, self._pending_answers = [], []
