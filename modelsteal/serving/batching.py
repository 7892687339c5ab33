"""Request batching: many concurrent requests, one model call.

Like TF Serving's `--enable_batching` (`max_batch_size`,
`batch_timeout_micros`): the first request to arrive opens a batch and takes
every request already queued; it waits (at most `timeout_s`) only while it
holds fewer requests than the batch before it did, so under load batches
fill and an idle server answers at once; up to `max_batch_size` instances; the batch runs as one call in the worker thread, and each request
gets its own rows back. A request larger than `max_batch_size` runs alone.
If a merged batch fails, its requests are retried one by one so a single bad
request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from typing import Callable

import numpy as np

Inputs = dict[str, np.ndarray]


@dataclasses.dataclass
class _Item:
  inputs: Inputs
  size: int
  future: asyncio.Future


@dataclasses.dataclass
class BatchStats:
  calls: int = 0  # model calls
  instances: int = 0  # instances answered
  largest: int = 0  # largest batch run, in instances
  model_s: float = 0.0  # wall time inside model calls


class Batcher:
  """Merges concurrent `submit` calls into batched `fn` calls.

  Args:
    fn: {name: (N, ...) array} -> {name: (N, ...) array}; runs in `executor`.
    executor: where `fn` runs (one thread: one model call at a time, which
      on a CPU is also the fastest).
    max_batch_size: instances per call at most (a larger request runs alone).
    timeout_s: how long an open batch waits for more requests.
  """

  def __init__(self, fn: Callable[[Inputs], Inputs],
               executor: concurrent.futures.Executor,
               max_batch_size: int = 256, timeout_s: float = 0.005):
    if max_batch_size < 1:
      raise ValueError(f'max_batch_size must be >= 1, got {max_batch_size}.')
    if timeout_s < 0:
      raise ValueError(f'timeout must be >= 0, got {timeout_s}.')
    self._fn = fn
    self._executor = executor
    self.max_batch_size = max_batch_size
    self.timeout_s = timeout_s
    self._queue: asyncio.Queue[_Item] | None = None
    self._task: asyncio.Task | None = None
    self._carry: _Item | None = None
    self._expected = 1  # requests in the last batch
    self.stats = BatchStats()

  async def submit(self, inputs: Inputs) -> Inputs:
    """Answers one request's inputs (all with the same leading size)."""
    if self._task is None or self._task.done():
      self._queue = asyncio.Queue()
      self._task = asyncio.get_running_loop().create_task(self._loop())
    size = len(next(iter(inputs.values())))
    fut = asyncio.get_running_loop().create_future()
    self._queue.put_nowait(_Item(inputs, size, fut))
    return await fut

  async def close(self) -> None:
    await cancel_and_wait(self._task)

  async def _gather(self) -> list[_Item]:
    loop = asyncio.get_running_loop()
    first = self._carry or await self._queue.get()
    self._carry = None
    items, size = [first], first.size
    deadline = loop.time() + self.timeout_s
    while size < self.max_batch_size:
      try:  # take what is already queued without waiting
        nxt = self._queue.get_nowait()
      except asyncio.QueueEmpty:
        remaining = deadline - loop.time()
        # Wait only for the requests the last batch suggests are coming:
        # clients answered together ask again together. An idle server (a
        # last batch of one) answers at once.
        if remaining <= 0 or len(items) >= self._expected:
          break
        try:
          nxt = await asyncio.wait_for(self._queue.get(), remaining)
        except asyncio.TimeoutError:
          break
      if size + nxt.size > self.max_batch_size:
        self._carry = nxt  # opens the next batch
        break
      items.append(nxt)
      size += nxt.size
    self._expected = len(items)
    return items

  async def _run(self, items: list[_Item]) -> list[Inputs | BaseException]:
    loop = asyncio.get_running_loop()
    if len(items) == 1:
      merged = items[0].inputs
    else:
      merged = {k: np.concatenate([it.inputs[k] for it in items])
                for k in items[0].inputs}
    started = time.perf_counter()
    try:
      out = await loop.run_in_executor(self._executor, self._fn, merged)
    except Exception as e:  # pylint: disable=broad-except
      if len(items) == 1:
        return [e]
      results = []
      for it in items:  # isolate the request that failed
        results.extend(await self._run([it]))
      return results
    n = sum(it.size for it in items)
    if len(items) > 1 and any(np.ndim(v) == 0 or len(v) != n
                              for v in out.values()):
      # an output without a batch axis cannot be split: run one by one
      results = []
      for it in items:
        results.extend(await self._run([it]))
      return results
    self.stats.calls += 1
    self.stats.model_s += time.perf_counter() - started
    self.stats.instances += n
    self.stats.largest = max(self.stats.largest, n)
    results, start = [], 0
    for it in items:
      results.append({k: v[start:start + it.size] for k, v in out.items()})
      start += it.size
    return results

  async def _loop(self) -> None:
    while True:
      items = await self._gather()
      try:
        results = await self._run(items)
      except asyncio.CancelledError:
        for it in items:
          if not it.future.done():
            it.future.cancel()
        raise
      for it, res in zip(items, results):
        if it.future.done():  # the client went away
          continue
        if isinstance(res, BaseException):
          it.future.set_exception(res)
        else:
          it.future.set_result(res)


async def cancel_and_wait(task: asyncio.Task | None) -> None:
  """Cancels a background task and waits until it has stopped."""
  if task is None:
    return
  task.cancel()
  try:
    await task
  except asyncio.CancelledError:
    pass
