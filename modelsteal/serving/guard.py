"""The owner's side of the server: keys, limits, the query log, detectors.

A `Guard` stands between a parsed request and the model, the same for REST
and gRPC (`ModelServer.answer`):

    client = guard.authenticate(key)       401: no answer, nothing logged
    guard.check(client, n)                 403 if blocked; 429 over limits
    out = model(inputs)
    flags = detectors observe (x, victim's own probabilities)
    out = misleading answers, when the client is flagged and so configured
    log line written (and fsync'ed) before the answer leaves

Without a key file every request is the client "anonymous" (one log, one
detector state); with neither a log, detectors nor keys the guard is off
and costs nothing.

`on_detect`: `flag` (log it, keep answering), `block` (403 from then on),
or an output-defence spec (`label`, `noise:0.3`, ...) answered to that
client from then on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time

import numpy as np

from modelsteal.defenses.output import parse_output
from modelsteal.errors import ConfigError
from modelsteal.serving import access
from modelsteal.serving import querylog
from modelsteal.serving.codec import ServingError
from modelsteal.serving.registry import LABEL
from modelsteal.serving.registry import PROBS
from modelsteal.serving.registry import RAW

log = logging.getLogger('modelsteal.serving')

# Requests of at most this many instances are observed, marked and logged on
# the event loop: for a few images the detectors cost less than the trip to
# the guard's thread and back (BUILD_NOTES.md, "Owner's side"), and the trip
# would hold the client's lock meanwhile, so one client's concurrent
# requests would queue behind it.
_INLINE_INSTANCES = 8

ANONYMOUS = access.Client(name='anonymous', key_sha256='0' * 64)


@dataclasses.dataclass
class ClientState:
  client: access.Client
  detectors: list
  flagged: list = dataclasses.field(default_factory=list)
  detected_at: dict = dataclasses.field(default_factory=dict)  # name -> query
  queries: int = 0
  watermarked: int = 0  # answers given with the watermark's label
  lock: asyncio.Lock | None = None


@dataclasses.dataclass(frozen=True)
class GuardConfig:
  """Args:
    clients: from `access.load_clients`; None: no keys (anonymous).
    log_dir: the query log's folder; None: no log.
    fsync: fsync each group of log lines before answering.
    detectors: from `detection.parse_detectors`.
    on_detect: flag | block | an output-defence spec.
    watermark: answers every client's keyed fraction of queries with a
      keyed wrong label (`defenses.watermark`).
  """
  clients: tuple | None = None
  log_dir: str | None = None
  fsync: bool = True
  detectors: tuple = ()
  on_detect: str = 'flag'
  watermark: object = None  # a `defenses.watermark.Watermark`, or None


class Guard:

  def __init__(self, cfg: GuardConfig, seed: int = 0,
               clock=time.time):
    self.cfg = cfg
    self.gate = (access.Gate(list(cfg.clients), clock=clock)
                 if cfg.clients is not None else None)
    self.log = querylog.QueryLog(cfg.log_dir, cfg.fsync) if cfg.log_dir else None
    self._clock = clock
    self.mislead = None
    if cfg.on_detect not in ('flag', 'block'):
      try:
        self.mislead = parse_output(cfg.on_detect, seed=seed,
                                    field='on_detect')
      except ConfigError:
        raise ConfigError('on_detect', ': must be flag, block or an output '
                          f'defence spec (label, topk:K, noise:S, ...), got '
                          f'{cfg.on_detect!r}.') from None
    clients = list(cfg.clients) if cfg.clients is not None else [ANONYMOUS]
    self.states = {c.name: ClientState(c, [d.make() for d in cfg.detectors])
                   for c in clients}
    self._executor: concurrent.futures.ThreadPoolExecutor | None = None
    self.denied = 0

  @property
  def needs_raw(self) -> bool:
    """Whether the model must hand over its undefended probabilities."""
    return (bool(self.cfg.detectors) or self.mislead is not None
            or self.cfg.watermark is not None)

  @property
  def active(self) -> bool:
    return bool(self.gate or self.log or self.cfg.detectors
                or self.cfg.watermark is not None)

  async def start(self) -> None:
    self._executor = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix='guard')
    for name, st in self.states.items():
      st.lock = asyncio.Lock()
      if self.log is None:
        continue
      summary = self.log.open_client(name)
      st.flagged = list(summary.flagged)
      if self.gate is not None and st.client.quota is not None:
        now = self._clock()
        w = self.gate.window(st.client, now)
        start = w * st.client.quota_period_s
        self.gate.restore(name, sum(n for t, n in summary.answered
                                    if t >= start), w)
    if self.log is not None:
      await self.log.start()

  async def stop(self) -> None:
    if self.log is not None:
      await self.log.stop()
    if self._executor is not None:
      self._executor.shutdown(wait=False, cancel_futures=True)

  def authenticate(self, key: str | None) -> ClientState:
    if self.gate is None:
      return self.states[ANONYMOUS.name]
    try:
      return self.states[self.gate.authenticate(key).name]
    except access.AccessDenied:
      self.denied += 1
      raise

  async def answer(self, st: ClientState, model_call, where: dict,
                   inputs: dict) -> dict:
    """Runs `model_call()` for client `st` within its limits, with the
    detectors and the log; `where` names the model, version, signature and
    protocol for the log."""
    n = len(next(iter(inputs.values())))
    if 'block' == self.cfg.on_detect and st.flagged:
      await self._log_refusal(st, where, n, 403)
      raise ServingError(403, f'client {st.client.name!r} is blocked: '
                         f'flagged by {", ".join(st.flagged)}.')
    if self.gate is not None:
      try:
        self.gate.admit(st.client, n)
      except ServingError as e:
        await self._log_refusal(st, where, n, e.status)
        raise
    try:
      out = await model_call()
    except BaseException:
      if self.gate is not None:
        self.gate.refund(st.client, n)
      raise
    raw = out.pop(RAW, None)
    if (not self.cfg.detectors and self.log is None
        and self.cfg.watermark is None):
      return out
    # The detectors, the misleading answer, the watermark and the log line:
    # in the guard's thread for a large request, on the loop for a small one.
    async with st.lock:
      if n > _INLINE_INSTANCES:
        line = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._after_model, st, where, inputs, out, raw, n)
      else:
        line = self._after_model(st, where, inputs, out, raw, n)
    if line is not None:
      await self._append(st, line)
    return out

  def _after_model(self, st, where, inputs, out, raw, n) -> bytes | None:
    new_flags = self._observe(st, inputs, raw) if self.cfg.detectors else []
    if st.flagged and self.mislead is not None and raw is not None:
      p = self.mislead.apply(np.asarray(raw, np.float32),
                             next(iter(inputs.values()), None))
      if PROBS in out:
        out[PROBS] = p
      if LABEL in out:
        out[LABEL] = p.argmax(axis=1).astype(np.int64)
    marked = 0
    if self.cfg.watermark is not None and raw is not None:
      marked = self.cfg.watermark.apply(next(iter(inputs.values())), out,
                                        np.shape(raw)[1], PROBS, LABEL)
    st.watermarked += marked
    if self.log is None:
      return None
    return self.log.encode({
        't': self._clock(), 'client': st.client.name, **where,
        'status': 200, 'n': n, 'flags': new_flags,
        'inputs': {k: querylog.encode_array(v) for k, v in inputs.items()},
        'outputs': {k: querylog.encode_array(np.asarray(v))
                    for k, v in out.items()}})

  def _observe(self, st: ClientState, inputs: dict, raw) -> list:
    x = next(iter(inputs.values()))
    st.queries += len(x)
    new = []
    for d in st.detectors:
      if d.name in st.flagged:
        continue
      if d.observe(x, raw):
        st.flagged.append(d.name)
        st.detected_at[d.name] = st.queries
        new.append(d.name)
        log.warning('client %r flagged by %s at query %d: %s',
                    st.client.name, d.name, st.queries, d.evidence())
    return new

  async def _append(self, st: ClientState, line: bytes) -> None:
    # The sequence number goes in on the loop, right before the line joins
    # the writer's queue, so lines are written in sequence order.
    seq = self.log.next_seq(st.client.name)
    try:
      await self.log.append(st.client.name,
                            b'{"seq":%d,' % seq + line[1:])
    except OSError as e:
      raise ServingError(500, str(e)) from e

  async def _log_refusal(self, st, where, n, status) -> None:
    if self.log is None:
      return
    entry = {'t': self._clock(), 'client': st.client.name, **where,
             'status': status, 'n': n, 'flags': []}
    await self._append(st, self.log.encode(entry))

  def summary(self) -> dict:
    return {'denied': self.denied,
            'clients': {n: {'queries': s.queries, 'flagged': s.flagged,
                            'detected_at': s.detected_at,
                            'evidence': {d.name: d.evidence()
                                         for d in s.detectors},
                            'watermarked': s.watermarked,
                            'used': (self.gate.used(n) if self.gate else None)}
                        for n, s in self.states.items()},
            'log': ({'groups': self.log.groups, 'entries': self.log.entries}
                    if self.log else None)}



def reference_probs(servable, images: np.ndarray,
                    batch_size: int = 256) -> np.ndarray:
  """The served model's own (undefended) probabilities on the owner's
  reference images, through its default signature."""
  sig = servable.version(None).signature(None)
  if not sig.has_probs:
    raise ServingError(400, f'signature {sig.name!r} has no probabilities.')
  (name,) = sig.inputs if len(sig.inputs) == 1 else (None,)
  if name is None:
    raise ConfigError('detect_reference', ': the model takes several inputs '
                      f'({sorted(sig.inputs)}); a reference needs one.')
  dtype = np.dtype(sig.inputs[name].dtype)
  keep, sig.keep_raw = sig.keep_raw, True
  try:
    out = [sig.run({name: images[i:i + batch_size].astype(dtype)})[RAW]
           for i in range(0, len(images), batch_size)]
  finally:
    sig.keep_raw = keep
  return np.concatenate(out)
