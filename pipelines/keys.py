r"""Write the API key file of `pipelines.serve --api_keys`.

    python -m pipelines.keys --key_file=keys.json --add=alice \
        [--quota=100000 --quota_period_s=86400] [--rate=200 --burst=512] \
        [--expires=2027-06-30T00:00:00+00:00]
    python -m pipelines.keys --key_file=keys.json --revoke=alice
    python -m pipelines.keys --key_file=keys.json          (lists clients)

`--add` prints the new key once, on stdout; the file keeps only its SHA-256.
Give the key to the client; it sends `Authorization: Bearer KEY` (or
`x-api-key: KEY`). A running server reads the file when it starts.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys

from absl import app
from absl import flags

from pipelines import common

_KEY_FILE = flags.DEFINE_string('key_file', None, 'The key file (JSON).')
_ADD = flags.DEFINE_string('add', None, 'Add a client by this name, with a '
                           'fresh key (printed once).')
_REVOKE = flags.DEFINE_string('revoke', None, 'Revoke this client\'s key.')
_QUOTA = flags.DEFINE_integer('quota', None, 'Instances per quota period.')
_QUOTA_PERIOD = flags.DEFINE_float('quota_period_s', 86400.0,
                                   'The quota period (seconds).')
_RATE = flags.DEFINE_float('rate', None, 'Instances per second, sustained.')
_BURST = flags.DEFINE_integer('burst', None, 'Instances at once (default: '
                              'one second of --rate).')
_EXPIRES = flags.DEFINE_string('expires', None, 'ISO 8601 time the key '
                               'stops working.')


def run(key_file: str, add: str | None = None, revoke: str | None = None,
        **limits) -> str | None:
  """Adds, revokes or lists; returns the new key when adding."""
  from modelsteal.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from modelsteal.files import atomic_write  # pylint: disable=g-import-not-at-top
  from modelsteal.serving import access  # pylint: disable=g-import-not-at-top
  if not key_file:
    raise ConfigError('key_file', 'is required.')
  clients = (access.load_clients(key_file) if os.path.exists(key_file)
             else [])
  if add and revoke:
    raise ConfigError('add', 'and {revoke} cannot be given together.')
  key = None
  if add:
    try:
      access.parse_clients({'clients': [{'name': add,
                                         'key_sha256': '0' * 64}]})
    except ConfigError:
      raise ConfigError('add', ': a client name is 1-64 letters, digits, '
                        f'"_", "." or "-", got {add!r}.') from None
    if any(c.name == add for c in clients):
      raise ConfigError('add', f': client {add!r} exists; revoke it and add '
                        'another name.')
    key = access.new_key()
    entry = {'name': add, 'key_sha256': access.hash_key(key),
             **{k: v for k, v in limits.items() if v is not None}}
    if entry.get('quota') is None:
      entry.pop('quota_period_s', None)
    clients += access.parse_clients({'clients': [entry]})
  elif revoke:
    if not any(c.name == revoke for c in clients):
      raise ConfigError('revoke', f': no client {revoke!r} in {key_file}.')
    clients = [dataclasses.replace(c, revoked=True) if c.name == revoke
               else c for c in clients]
  if add or revoke:
    text = json.dumps({'clients': [c.to_json() for c in clients]}, indent=1)

    def write(tmp):
      with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text + '\n')
      os.chmod(tmp, 0o600)

    atomic_write(key_file, write)
  for c in clients:
    limits_text = ', '.join(
        f'{k} {v}' for k, v in (('quota', c.quota), ('rate', c.rate),
                                ('burst', c.burst)) if v is not None)
    state = 'revoked' if c.revoked else (
        'expires ' + datetime.datetime.fromtimestamp(
            c.expires, datetime.timezone.utc).isoformat()
        if c.expires is not None else 'active')
    print(f'[keys] {c.name}: {state}'
          + (f'; {limits_text}' if limits_text else ''), file=sys.stderr)
  return key


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    key = run(_KEY_FILE.value, _ADD.value, _REVOKE.value, quota=_QUOTA.value,
              quota_period_s=_QUOTA_PERIOD.value, rate=_RATE.value,
              burst=_BURST.value, expires=_EXPIRES.value)
    if key is not None:
      print(key)

  # The key file's errors name its field api_keys (pipelines.serve's flag).
  common.run_main(body, 'keys', {'api_keys': '--key_file'})


if __name__ == '__main__':
  app.run(main)
