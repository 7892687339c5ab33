"""Retries with exponential backoff: the one helper every remote client uses.

    policy = RetryPolicy(retries=4, backoff_s=0.5)
    answer = call_with_retries(lambda: one_attempt(), policy)

An attempt signals a failure that may pass (connection refused, timeout,
5xx, 429, gRPC UNAVAILABLE) by raising `Transient`, optionally with the
server's `Retry-After`; anything else it raises goes straight to the caller.
After the last attempt `RetriesExhausted` carries the last failure's message,
so each client can word the final error for its own user (which flag, which
URL, that answers so far are cached).
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Callable, TypeVar

T = TypeVar('T')


class Transient(Exception):
  """A failed attempt worth repeating; `retry_after` in seconds, if said."""

  def __init__(self, message: str, retry_after: float | str | None = None):
    super().__init__(message)
    self.message = message
    self.retry_after = retry_after


class RetriesExhausted(Exception):
  """Every attempt failed transiently; `last` says how the last one did."""

  def __init__(self, last: str, attempts: int):
    super().__init__(f'{attempts} attempts; last: {last}')
    self.last = last
    self.attempts = attempts


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  """`retries` repeats after the first attempt; the n-th waits about
  `backoff_s * 2**n` (jittered to 50-100%, at most `max_backoff_s`), or the
  server's Retry-After when that is longer."""
  retries: int = 4
  backoff_s: float = 0.5
  max_backoff_s: float = 20.0

  def __post_init__(self):
    if self.retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
      raise ValueError(f'retry settings must be >= 0, got {self}.')

  def delay(self, attempt: int, retry_after: float | str | None = None
            ) -> float:
    d = self.backoff_s * 2 ** attempt * (0.5 + random.random() / 2)
    if retry_after is not None:
      try:
        d = max(d, float(retry_after))
      except (TypeError, ValueError):
        pass  # an HTTP date or junk: keep our own delay
    return min(d, self.max_backoff_s)


def call_with_retries(attempt: Callable[[], T], policy: RetryPolicy,
                      sleep: Callable[[float], None] = time.sleep,
                      on_retry: Callable[[int, Transient], None] | None = None
                      ) -> T:
  """`attempt()` until it returns, repeating it after each `Transient`.

  Raises:
    RetriesExhausted: after `policy.retries + 1` transient failures.
  """
  last = None
  for n in range(policy.retries + 1):
    try:
      return attempt()
    except Transient as e:
      last = e
      if on_retry is not None:
        on_retry(n, e)
      if n < policy.retries:
        sleep(policy.delay(n, e.retry_after))
  raise RetriesExhausted(last.message, policy.retries + 1)
