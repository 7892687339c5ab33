"""Who may ask: API keys, quotas and rate limits for the model server.

A key file is JSON, one entry per client; the server keeps only each key's
SHA-256, so the file can be read by others without giving keys away
(`python -m pipelines.keys` writes it and prints each new key once):

    {"clients": [
      {"name": "alice", "key_sha256": "9f86d0...",
       "quota": 100000, "quota_period_s": 86400,
       "rate": 200, "burst": 512,
       "expires": "2027-06-30T00:00:00+00:00", "revoked": false}
    ]}

`name` names the client in the query log and in errors (never the key).
`quota`: instances per `quota_period_s` (fixed windows from the epoch; a day
by default); `rate`/`burst`: a token bucket of instances per second; each
field is optional (absent: no limit). A client sends its key as
`Authorization: Bearer KEY` or `x-api-key: KEY` (REST headers, gRPC
metadata alike).

Refusals: 401 (no key, an unknown, expired or revoked key; the message says
which, never the key), 429 with `retry_after_s` (quota spent: until the
window ends; rate: until the bucket holds the request).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
from typing import Callable

from modelsteal.errors import ConfigError
from modelsteal.errors import literal
from modelsteal.serving.codec import ServingError

_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
_HEX64 = re.compile(r'^[0-9a-f]{64}$')
_FIELDS = ('name', 'key_sha256', 'quota', 'quota_period_s', 'rate', 'burst',
           'expires', 'revoked')


class AccessDenied(ServingError):
  """401 or 429; `retry_after_s` is set for 429 (the Retry-After header)."""

  def __init__(self, status: int, message: str,
               retry_after_s: float | None = None):
    super().__init__(status, message)
    self.retry_after_s = retry_after_s


def hash_key(key: str) -> str:
  return hashlib.sha256(key.encode('utf-8')).hexdigest()


def new_key() -> str:
  """A fresh random key (32 bytes, URL-safe text)."""
  return 'msk_' + secrets.token_urlsafe(32)


@dataclasses.dataclass(frozen=True)
class Client:
  name: str
  key_sha256: str
  quota: int | None = None  # instances per quota period
  quota_period_s: float = 86400.0
  rate: float | None = None  # instances per second, sustained
  burst: int | None = None  # instances at once (bucket size)
  expires: float | None = None  # unix time
  revoked: bool = False

  def to_json(self) -> dict:
    out = {'name': self.name, 'key_sha256': self.key_sha256}
    for f in ('quota', 'rate', 'burst'):
      if getattr(self, f) is not None:
        out[f] = getattr(self, f)
    if self.quota is not None:
      out['quota_period_s'] = self.quota_period_s
    if self.expires is not None:
      out['expires'] = datetime.datetime.fromtimestamp(
          self.expires, datetime.timezone.utc).isoformat()
    if self.revoked:
      out['revoked'] = True
    return out


def _bad(i, msg):
  return ConfigError('api_keys', f': client {i}: {msg}')


def _number(entry, i, field, kind, minimum):
  v = entry.get(field)
  if v is None:
    return None
  if isinstance(v, bool) or not isinstance(v, (int, float)) or (
      kind is int and not float(v).is_integer()) or v < minimum:
    raise _bad(i, f'"{field}" must be a number >= {minimum}'
               + (' (whole)' if kind is int else '')
               + f', got {literal(repr(v))}.')
  return kind(v)


def parse_clients(obj) -> list[Client]:
  """The key file's JSON object -> clients; ConfigError('api_keys') names
  the entry and field at fault."""
  if not isinstance(obj, dict) or not isinstance(obj.get('clients'), list):
    raise ConfigError('api_keys', ': the key file must be a JSON object '
                      '{"clients": [...]} (see modelsteal.serving.access).')
  out, names, hashes = [], set(), set()
  for i, e in enumerate(obj['clients']):
    if not isinstance(e, dict):
      raise _bad(i, 'must be a JSON object.')
    unknown = sorted(set(e) - set(_FIELDS) - {'key'})
    if unknown:
      raise _bad(i, f'unknown fields {literal(unknown)}; known: '
                 f'{", ".join(_FIELDS)}.')
    if 'key' in e:
      raise _bad(i, 'holds a key in clear; store its "key_sha256" instead '
                 '(python -m pipelines.keys writes it).')
    name = e.get('name')
    if not isinstance(name, str) or not _NAME.match(name):
      raise _bad(i, '"name" must be 1-64 letters, digits, "_", "." or "-", '
                 f'got {literal(repr(name))}.')
    if name in names:
      raise _bad(i, f'the name {name!r} is used twice.')
    digest = e.get('key_sha256')
    if not isinstance(digest, str) or not _HEX64.match(digest):
      raise _bad(i, f'({name}) "key_sha256" must be 64 lower-case hex '
                 'digits.')
    if digest in hashes:
      raise _bad(i, f'({name}) has the same key as another client.')
    expires = e.get('expires')
    if expires is not None:
      try:
        dt = datetime.datetime.fromisoformat(str(expires))
      except ValueError:
        raise _bad(i, f'({name}) "expires" must be an ISO 8601 time, got '
                   f'{literal(repr(expires))}.') from None
      if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
      expires = dt.timestamp()
    revoked = e.get('revoked', False)
    if not isinstance(revoked, bool):
      raise _bad(i, f'({name}) "revoked" must be true or false.')
    period = _number(e, i, 'quota_period_s', float, 1)
    out.append(Client(
        name=name, key_sha256=digest, quota=_number(e, i, 'quota', int, 0),
        quota_period_s=86400.0 if period is None else period,
        rate=_number(e, i, 'rate', float, 1e-9),
        burst=_number(e, i, 'burst', int, 1), expires=expires,
        revoked=revoked))
    names.add(name)
    hashes.add(digest)
  return out


def load_clients(path: str) -> list[Client]:
  try:
    with open(path, encoding='utf-8') as f:
      obj = json.load(f)
  except FileNotFoundError:
    raise ConfigError('api_keys', f': no key file at {literal(path)} '
                      '(python -m pipelines.keys --key_file=... creates '
                      'one).') from None
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError('api_keys', f': cannot read {literal(path)} as JSON: '
                      f'{literal(e)}') from None
  return parse_clients(obj)


def key_from_headers(get: Callable[[str], str | None]) -> str | None:
  """The presented key from `Authorization: Bearer KEY` or `x-api-key`
  (`get` looks a header or metadata key up, case-insensitively)."""
  auth = get('authorization')
  if auth:
    scheme, _, value = auth.strip().partition(' ')
    if scheme.lower() == 'bearer' and value.strip():
      return value.strip()
  key = get('x-api-key')
  return key.strip() if key and key.strip() else None


@dataclasses.dataclass
class _Usage:
  window: int = -1  # quota window index
  used: int = 0  # instances answered in that window
  tokens: float = 0.0
  refilled: float = 0.0


class Gate:
  """Authenticates keys and admits requests within each client's limits.

  Args:
    clients: from `load_clients`.
    clock: unix time (tests pass a fake one).
  """

  def __init__(self, clients: list[Client],
               clock: Callable[[], float] = time.time):
    self.clients = {c.name: c for c in clients}
    self._digests = [(bytes.fromhex(c.key_sha256), c) for c in clients]
    self._clock = clock
    self._usage = {c.name: _Usage() for c in clients}
    self._lock = threading.Lock()

  def authenticate(self, key: str | None) -> Client:
    """The client whose key this is, or AccessDenied(401).

    Compares the key's digest against every client's with
    `hmac.compare_digest`, all of them each time, so the time taken says
    nothing about which bytes matched.
    """
    if not key:
      raise AccessDenied(401, 'an API key is required: send "Authorization: '
                         'Bearer KEY" or "x-api-key: KEY".')
    digest = hashlib.sha256(key.encode('utf-8', 'replace')).digest()
    found = None
    for d, c in self._digests:
      if hmac.compare_digest(d, digest):
        found = c
    if found is None:
      raise AccessDenied(401, 'the API key is not valid.')
    if found.revoked:
      raise AccessDenied(401, f'the API key of client {found.name!r} has '
                         'been revoked.')
    if found.expires is not None and self._clock() >= found.expires:
      raise AccessDenied(401, f'the API key of client {found.name!r} '
                         'expired.')
    return found

  def restore(self, name: str, used_in_window: int, window: int) -> None:
    """Quota already spent (from the query log, at startup)."""
    u = self._usage[name]
    u.window, u.used = window, used_in_window

  def window(self, client: Client, now: float | None = None) -> int:
    now = self._clock() if now is None else now
    return int(now // client.quota_period_s)

  def admit(self, client: Client, n: int) -> None:
    """Takes `n` instances from the client's quota and bucket, or raises
    AccessDenied(429) and takes nothing."""
    now = self._clock()
    with self._lock:
      u = self._usage[client.name]
      if client.quota is not None:
        w = self.window(client, now)
        if w != u.window:
          u.window, u.used = w, 0
        if u.used + n > client.quota:
          left = client.quota - u.used
          retry = (w + 1) * client.quota_period_s - now
          raise AccessDenied(
              429, f'client {client.name!r} has {left} of its '
              f'{client.quota} instances left in this quota period; the '
              f'request has {n}.', retry_after_s=retry)
      if client.rate is not None:
        burst = client.burst or max(1, math.ceil(client.rate))
        if n > burst:
          raise ServingError(
              400, f'a request of {n} instances is more than client '
              f'{client.name!r} may send at once ({burst}); split it.')
        if u.refilled == 0.0:
          u.tokens, u.refilled = float(burst), now
        u.tokens = min(float(burst), u.tokens + (now - u.refilled)
                       * client.rate)
        u.refilled = now
        if u.tokens < n:
          raise AccessDenied(
              429, f'client {client.name!r} is over its rate of '
              f'{client.rate:g} instances/s.',
              retry_after_s=(n - u.tokens) / client.rate)
        u.tokens -= n
      if client.quota is not None:
        u.used += n

  def refund(self, client: Client, n: int) -> None:
    """Gives back what `admit` took for a request that was not answered."""
    with self._lock:
      u = self._usage[client.name]
      if client.quota is not None:
        u.used = max(0, u.used - n)
      if client.rate is not None:
        u.tokens += n

  def used(self, name: str) -> int:
    return self._usage[name].used


def retry_after_header(seconds: float | None) -> str | None:
  """Retry-After is whole seconds; round up so a client that waits is
  admitted."""
  return None if seconds is None else str(max(1, math.ceil(seconds)))
