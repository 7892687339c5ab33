"""Writing files so that an interruption never leaves half of one."""

from __future__ import annotations

import os
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None]) -> None:
  """`write(tmp)` writes the whole file at a temporary path beside `path`,
  which then replaces `path` in one rename: readers see the old file or the
  new one, never a torn one."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
