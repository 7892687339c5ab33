"""A victim behind a TF-Serving-style REST endpoint.

    ref = victim_ref_from_url('http://127.0.0.1:8501/v1/models/mnist',
                              num_classes=10)
    oracle = make_oracle(ref, output='label', budget=10000, cache_dir=...)

`RestOracle` sends queries as `POST URL:predict` with `{"signature_name",
"instances"}` in batches of `batch_size`, and reads the answers whatever the
server reveals: probabilities (`predictions` as (N, K) lists, or objects with
a `probabilities` key), or only labels (ints, or objects with `label`/
`classes`), which become one-hot rows over `num_classes`. Budget accounting
and the answer cache are the base `Oracle`'s: an interrupted run resumes
without asking an answered query again.

Transient failures (connection refused or reset, timeouts, 5xx, 429) are
retried with exponential backoff (honouring `Retry-After`); other 4xx
answers and anything that is not a prediction raise `OracleError` at once,
quoting the server's message; a 413 (body too large) halves the batch size
and tries again.

The victim reference's fingerprint hashes the URL and the endpoint's
metadata (model version, signatures, declared defence), so answers are
cached per model version: a new version served at the same URL is a new
victim.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import literal
from modelsteal.oracle.base import OracleError
from modelsteal.oracle.remote import answer_scores
from modelsteal.oracle.remote import api_key
from modelsteal.oracle.remote import class_count
from modelsteal.oracle.remote import RemoteOracle
from modelsteal.oracle.remote import RequestTooLargeError
from modelsteal.oracle.remote import unauthorized_hint
from modelsteal.retry import call_with_retries
from modelsteal.retry import RetriesExhausted
from modelsteal.retry import RetryPolicy
from modelsteal.retry import Transient

_URL = re.compile(r'^https?://[^/\s]+/v1/models/[^/:\s]+(/versions/\d+)?/?$')
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class BodyTooLargeError(RequestTooLargeError):
  """The endpoint refused a request as too large (HTTP 413)."""


def check_url(url: str) -> str:
  """The endpoint URL, without a trailing slash; ValueError if malformed."""
  if not isinstance(url, str) or not _URL.match(url.strip()):
    raise ConfigError(
        'victim_url', f'{literal(repr(url))} is not a TF Serving model URL; '
        'expected http://HOST:PORT/v1/models/NAME (optionally /versions/N), '
        'e.g. http://127.0.0.1:8501/v1/models/mnist.')
  return url.strip().rstrip('/')


class _Http:
  """requests with timeouts, retries and backoff; errors as OracleError."""

  def __init__(self, timeout_s: float = 60.0, connect_timeout_s: float = 5.0,
               retries: int = 4, backoff_s: float = 0.5,
               max_backoff_s: float = 20.0, session=None):
    import requests  # pylint: disable=g-import-not-at-top
    self._requests = requests
    self.session = session or requests.Session()
    self.timeout = (connect_timeout_s, timeout_s)
    self.policy = RetryPolicy(retries, backoff_s, max_backoff_s)
    self.attempts = 0  # HTTP attempts made, retries included

  def _attempt(self, method: str, url: str, body: bytes | None) -> dict:
    requests = self._requests
    self.attempts += 1
    try:
      headers = {'Content-Type': 'application/json'} if body else {}
      key = api_key()
      if key:
        headers['Authorization'] = f'Bearer {key}'
      resp = self.session.request(method, url, data=body,
                                  timeout=self.timeout, headers=headers)
    except (requests.ConnectionError, requests.Timeout) as e:
      raise Transient(f'{type(e).__name__}: {str(e)[:200]}') from None
    if resp.status_code == 200:
      try:
        return resp.json()
      except ValueError:
        raise OracleError(
            f'{url} answered something that is not JSON (content type '
            f'{resp.headers.get("Content-Type")!r}: '
            f'{resp.text[:120]!r}); is this a TF Serving endpoint?'
        ) from None
    message = _server_message(resp)
    if resp.status_code == 413:
      raise BodyTooLargeError(f'{url} refused the request as too large '
                              f'(HTTP 413: {message})')
    if resp.status_code not in _RETRY_STATUS:
      raise OracleError(f'{url} refused the request: HTTP '
                        f'{resp.status_code}: {literal(message)}'
                        + (unauthorized_hint() if resp.status_code == 401
                           else ''))
    raise Transient(f'HTTP {resp.status_code}: {message}',
                    resp.headers.get('Retry-After'))

  def call(self, method: str, url: str, body: bytes | None = None) -> dict:
    try:
      return call_with_retries(lambda: self._attempt(method, url, body),
                               self.policy)
    except RetriesExhausted as e:
      raise OracleError(
          f'the victim endpoint {literal(url)} is unreachable or failing '
          f'after {e.attempts} attempts ({literal(e.last)}). Is the server '
          'running (python -m pipelines.serve --model_dir=...) and the URL '
          'right? Rerun to resume: answers received so far are cached.'
      ) from None


def _encode(request: dict) -> bytes:
  """JSON of a request holding numpy arrays. orjson writes float32 arrays
  directly (6x faster than `tolist` + json, no Python objects for the
  garbage collector to walk) with the shortest repr that reads back to the
  same float32; json is the fallback."""
  try:
    import orjson  # pylint: disable=g-import-not-at-top
  except ImportError:
    orjson = None
  if orjson is not None:
    try:
      return orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
      pass  # dtypes orjson does not write (float16, ...)
  return json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v
                     for k, v in request.items()},
                    separators=(',', ':')).encode()


def _server_message(resp) -> str:
  try:
    obj = resp.json()
    if isinstance(obj, dict) and 'error' in obj:
      return str(obj['error'])[:300]
  except ValueError:
    pass
  return resp.text[:200] or resp.reason or ''


def fetch_metadata(url: str, http: _Http | None = None) -> dict:
  """`GET URL/metadata`, checked to be TF Serving model metadata."""
  http = http or _Http()
  md = http.call('GET', url + '/metadata')
  try:
    sigs = md['metadata']['signature_def']['signature_def']
    version = md['model_spec']['version']
    assert isinstance(sigs, dict) and sigs
  except (KeyError, TypeError, AssertionError):
    raise OracleError(f'{url}/metadata is not TF Serving model metadata '
                      f'(got {json.dumps(md)[:200]}); is the URL right?'
                      ) from None
  del version
  return md


def _pick_signature(md: dict, name: str | None) -> tuple[str, dict]:
  sigs = {k: v for k, v in md['metadata']['signature_def'][
      'signature_def'].items() if not k.startswith('__')}
  name = name or ('serving_default' if 'serving_default' in sigs else
                  next(iter(sigs), None))
  if name not in sigs:
    raise OracleError(f'the endpoint has no signature {name!r}; it has '
                      f'{sorted(sigs)}.')
  return name, sigs[name]


def _dims(info: dict) -> list[int] | None:
  ts = info.get('tensor_shape') or {}
  if ts.get('unknown_rank'):
    return None
  return [int(d.get('size', -1)) for d in ts.get('dim', [])]


def describe_endpoint(md: dict, signature_name: str | None = None) -> dict:
  """What the oracle needs from metadata: input name and shape, classes."""
  name, sig = _pick_signature(md, signature_name)
  inputs = sig.get('inputs') or {}
  if len(inputs) != 1:
    raise OracleError(f'signature {name!r} takes inputs {sorted(inputs)}; a '
                      'victim must take one image tensor.')
  (input_name, info), = inputs.items()
  dims = _dims(info)
  outputs = sig.get('outputs') or {}
  num_classes = None
  if 'probabilities' in outputs:
    d = _dims(outputs['probabilities'])
    if d and d[-1] > 0:
      num_classes = d[-1]
  extra = md.get('modelsteal') or {}
  if num_classes is None and isinstance(extra.get('num_classes'), int):
    num_classes = extra['num_classes']
  return {'signature_name': name, 'input_name': input_name,
          'input_shape': None if dims is None else dims[1:],
          'num_classes': num_classes, 'outputs': sorted(outputs),
          'version': str(md['model_spec'].get('version', ''))}


def victim_ref_from_url(url: str, num_classes: int | None = None,
                        signature_name: str | None = None,
                        timeout_s: float = 30.0) -> dict:
  """A victim reference for a REST endpoint (asks it for its metadata).

  Args:
    url: `http://HOST:PORT/v1/models/NAME[/versions/N]`.
    num_classes: the number of classes, needed when the endpoint answers
      labels only and its metadata does not say; checked against the
      metadata otherwise.
    signature_name: the signature to call (default `serving_default`).

  Raises:
    ValueError: a malformed URL or a class count the endpoint contradicts.
    OracleError: the endpoint is unreachable or not a TF Serving model.
  """
  url = check_url(url)
  http = _Http(timeout_s=timeout_s, retries=2)
  md = fetch_metadata(url, http)
  desc = describe_endpoint(md, signature_name)
  k = class_count(url, desc['num_classes'], num_classes)
  canon = json.dumps(md, sort_keys=True, separators=(',', ':'))
  fp = hashlib.sha256(f'{url}|{canon}'.encode()).hexdigest()
  return {'kind': 'rest', 'url': url, 'fingerprint': fp,
          'version': desc['version'], 'num_classes': k,
          'signature_name': desc['signature_name'],
          'input_shape': desc['input_shape']}


class RestOracle(RemoteOracle):
  """An oracle over HTTP; see the module docstring.

  Args:
    url: the model URL (`http://HOST:PORT/v1/models/NAME[/versions/N]`).
    identity: the victim fingerprint (names the answer cache).
    num_classes: classes, for label-only answers (else from metadata).
    signature_name: signature to call (default: serving_default).
    batch_size: instances per request.
    timeout_s: read timeout per request; connect_timeout_s for connecting.
    retries: retries of a failed request (5xx, 429, connection errors).
    backoff_s: first backoff delay; doubles per retry (with jitter).
    **kwargs: `Oracle`'s (output, budget, cache_dir, seed).
  """

  def __init__(self, url: str, identity: str | None = None,
               num_classes: int | None = None,
               signature_name: str | None = None, batch_size: int = 128,
               timeout_s: float = 60.0, connect_timeout_s: float = 5.0,
               retries: int = 4, backoff_s: float = 0.5, **kwargs):
    self.url = check_url(url)
    self.http = _Http(timeout_s=timeout_s, connect_timeout_s=connect_timeout_s,
                      retries=retries, backoff_s=backoff_s)
    self._described = False
    super().__init__(self.url, identity, num_classes, signature_name,
                     batch_size, **kwargs)

  def _describe(self) -> None:
    """Fetches metadata once, lazily: a fully cached run needs no server."""
    if self._described:
      return
    desc = describe_endpoint(fetch_metadata(self.url, self.http),
                             self.signature_name)
    self.signature_name = desc['signature_name']
    if self.num_classes is None:
      self.num_classes = desc['num_classes']
    self.input_shape = desc['input_shape']
    self._described = True

  def _input_shape(self) -> list[int] | None:
    self._describe()
    return self.input_shape

  def _request(self, chunk: np.ndarray):
    body = _encode({'signature_name': self.signature_name,
                    'instances': np.ascontiguousarray(chunk)})
    return self.http.call('POST', self.url + ':predict', body)

  def _parse(self, answer, n: int) -> np.ndarray:
    """A predict response -> (n, K) float32 scores (one-hot for labels)."""
    def bad(why):
      return OracleError(f'{self.url} answered something that is not a '
                         f'prediction ({why}): {json.dumps(answer)[:200]}')

    if not isinstance(answer, dict) or 'predictions' not in answer:
      raise bad('no "predictions" key')
    preds = answer['predictions']
    if not isinstance(preds, list) or len(preds) != n:
      raise bad(f'expected a list of {n} predictions')
    if preds and isinstance(preds[0], dict):
      key = next((k for k in ('probabilities', 'probs', 'scores', 'label',
                              'labels', 'classes') if k in preds[0]), None)
      if key is None:
        raise bad(f'no probabilities or label among {sorted(preds[0])}')
      try:
        preds = [p[key] for p in preds]
      except (KeyError, TypeError):
        raise bad(f'not every prediction has "{key}"') from None
    try:
      arr = np.asarray(preds, np.float64)
    except (ValueError, TypeError):
      raise bad('ragged or non-numeric values') from None
    return answer_scores(arr, n, self.num_classes, self.url, bad)
