"""A text-to-image web service as a class-conditional generator.

    ref = rest_ref('https://api.example.com/v1/images/generations',
                   api='openai', token_env='OPENAI_API_KEY',
                   class_names=CLASS_NAMES['cifar10'], image_shape=(32, 32, 3))
    gen = RestGenerator.from_ref(ref, cache_dir='runs/generator_cache/rest')
    gen.generate('cat', 16, seed=0)   # float32 (16, 32, 32, 3) in [0, 1]

One prompt per class, `prompt.format(label=class_name)` (default `a photo of
a {label}`). Services differ; a small adapter (`api`) covers the common
shapes:

* `openai`: POST JSON `{prompt, n, response_format: b64_json, seed}`,
  answer `{"data": [{"b64_json": ...} | {"url": ...}]}`.
* `raw`: POST JSON `{inputs: prompt, parameters: {seed}}` with
  `Accept: image/*`, answer the image bytes (Hugging Face Inference,
  Stability); 503 while the model loads (`estimated_time` is waited for).
* `replicate`: POST JSON `{input: {prompt, num_outputs, seed}}` creates a
  job; its `urls.get` is polled until `succeeded`, then each output URL
  (or `data:` URI) is fetched.
* `tfserving`: a generator SavedModel served by `python -m pipelines.serve`
  (URL `http://HOST:PORT/v1/models/NAME`): POST `:predict` to its
  `generate` signature with the class and standard-normal noise.

A Bearer token is read from the environment variable `token_env` when the
generator is built (never stored, never part of a fingerprint). Requests
are batched (`images_per_request`), spaced to at most `requests_per_s`,
retried with exponential backoff on connection errors, timeouts, 5xx and
429 (honouring `Retry-After`), and on answers that are not what the
adapter expects (malformed JSON, bytes that are not an image), then fail
with one clear `GeneratorError`; other 4xx fail at once. Every image is
written to `cache_dir` as it arrives (the bytes as received), keyed by
class, seed and index: a resumed run re-requests nothing it has. Images
are decoded, centre-cropped to a square, resized to `image_shape` and made
grayscale (or RGB) with `tf.image`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import time
import urllib.parse

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import literal
from modelsteal.errors import UnknownNameError
from modelsteal.retry import call_with_retries
from modelsteal.retry import RetriesExhausted
from modelsteal.retry import RetryPolicy
from modelsteal.retry import Transient
from modelsteal.synthetic.base import Generator
from modelsteal.synthetic.base import GeneratorError
from modelsteal.synthetic.base import rng_for

APIS = ('openai', 'raw', 'replicate', 'tfserving')
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_sleep = time.sleep  # tests replace it to run without waiting
_TFSERVING_URL = re.compile(r'^https?://[^/\s]+/v1/models/[^/:\s]+'
                            r'(/versions/\d+)?$')


class _Junk(Exception):
  """An answer that is not what the adapter expects (retried)."""


def rest_ref(url: str, *, api: str = 'openai',
             prompt: str = 'a photo of a {label}', token_env: str | None = None,
             class_names=(), image_shape=(28, 28, 1),
             requests_per_s: float = 2.0, images_per_request: int = 4,
             **unused) -> dict:
  """A generator reference for a text-to-image URL (checked, not called).

  Raises:
    ValueError: a malformed URL, unknown api, prompt without `{label}`,
      or a token variable that is not set.
  """
  del unused
  url = (url or '').strip().rstrip('/')
  parsed = urllib.parse.urlparse(url)
  if parsed.scheme not in ('http', 'https') or not parsed.netloc:
    raise ConfigError('generator', f'{literal(repr(url))} is not an http(s) '
                      'URL.')
  if api not in APIS:
    raise UnknownNameError('generator_api', f': unknown generator api '
                           f'{literal(repr(api))}; valid: '
                           f'{", ".join(APIS)}.')
  if api == 'tfserving' and not _TFSERVING_URL.match(url):
    raise ConfigError('generator', f'{literal(repr(url))}: a served '
                      'generator URL is http://HOST:PORT/v1/models/NAME.')
  if '{label}' not in prompt:
    raise ConfigError('prompt', f'{literal(repr(prompt))} must contain '
                      '{{label}}, where the class name goes.')
  if token_env and not os.environ.get(token_env):
    raise ConfigError('generator_token_env', f'={literal(token_env)}: the '
                      'environment variable '
                      f'{literal(token_env)} is not set; export it with the '
                      "service's API token.")
  if requests_per_s <= 0:
    raise ConfigError('generator_rps', 'must be positive, got '
                      f'{requests_per_s}.')
  names = [str(n) for n in class_names]
  shape = [int(d) for d in image_shape]
  canon = json.dumps([url, api, prompt, names, shape])
  return {'kind': 'rest', 'url': url, 'api': api, 'prompt': prompt,
          'token_env': token_env, 'class_names': names, 'image_shape': shape,
          'requests_per_s': float(requests_per_s),
          'images_per_request': int(images_per_request),
          'fingerprint': hashlib.sha256(canon.encode()).hexdigest(),
          'name': parsed.netloc}


def decode_image(data: bytes, shape) -> np.ndarray:
  """Image bytes -> float32 (H, W, C) in [0, 1]: decoded, centre-cropped to
  a square, resized, grayscale or RGB as `shape` says.

  Raises:
    _Junk: bytes that are not a PNG/JPEG/GIF/BMP image.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  h, w, c = (int(d) for d in shape)
  try:
    img = tf.io.decode_image(data, expand_animations=False)
  except (tf.errors.InvalidArgumentError, ValueError) as e:
    raise _Junk(f'bytes that are not an image ({len(data)} bytes starting '
                f'{data[:16]!r}): {str(e).splitlines()[0][:120]}') from None
  img = tf.cast(img, tf.float32) / 255.0
  if img.shape[-1] == 4:  # drop alpha
    img = img[..., :3]
  side = int(min(img.shape[0], img.shape[1]))
  img = tf.image.resize_with_crop_or_pad(img, side, side)
  img = tf.image.resize(img, (h, w), method='area' if side > max(h, w)
                        else 'bilinear', antialias=True)
  if c == 1 and img.shape[-1] == 3:
    img = tf.image.rgb_to_grayscale(img)
  elif c == 3 and img.shape[-1] == 1:
    img = tf.image.grayscale_to_rgb(img)
  return np.clip(img.numpy(), 0.0, 1.0).astype(np.float32)


class RestGenerator(Generator):
  """See the module docstring. `from_ref` builds one from `rest_ref`."""

  def __init__(self, url: str, *, api: str = 'openai', class_names=(),
               image_shape=(28, 28, 1), prompt: str = 'a photo of a {label}',
               token_env: str | None = None, requests_per_s: float = 2.0,
               images_per_request: int = 4, timeout_s: float = 60.0,
               connect_timeout_s: float = 5.0, retries: int = 4,
               backoff_s: float = 0.5, max_backoff_s: float = 30.0,
               poll_interval_s: float = 1.0, max_poll_s: float = 600.0,
               cache_dir: str | None = None, fingerprint: str | None = None,
               session=None):
    import requests  # pylint: disable=g-import-not-at-top
    ref = rest_ref(url, api=api, prompt=prompt, token_env=token_env,
                   class_names=class_names, image_shape=image_shape,
                   requests_per_s=requests_per_s,
                   images_per_request=images_per_request)
    self.url, self.api, self.prompt = ref['url'], api, prompt
    self.source = f'generator service {self.url}'
    self._names = tuple(ref['class_names'])
    if not self._names:
      raise ValueError('a REST generator needs the class names.')
    self._shape = tuple(ref['image_shape'])
    self._requests = requests
    self.session = session or requests.Session()
    self.headers = {}
    if token_env:
      self.headers['Authorization'] = f'Bearer {os.environ[token_env]}'
    self.min_interval = 1.0 / requests_per_s
    self.per_request = 1 if api == 'raw' else max(1, images_per_request)
    self.timeout = (connect_timeout_s, timeout_s)
    self.policy = RetryPolicy(retries, backoff_s, max_backoff_s)
    self.poll_interval_s, self.max_poll_s = poll_interval_s, max_poll_s
    fp = fingerprint or ref['fingerprint']
    self.cache_dir = os.path.join(cache_dir, fp[:16]) if cache_dir else None
    self._last_request = 0.0
    self.requests_sent = 0  # HTTP requests, retries and polls included
    self.images_received = 0
    self._noise_dim = None

  @classmethod
  def from_ref(cls, ref: dict, cache_dir: str | None = None, **kwargs):
    keys = ('api', 'class_names', 'image_shape', 'prompt', 'token_env',
            'requests_per_s', 'images_per_request')
    return cls(ref['url'], **{k: ref[k] for k in keys if k in ref},
               fingerprint=ref.get('fingerprint'), cache_dir=cache_dir,
               **kwargs)

  @property
  def class_names(self):
    return self._names

  @property
  def image_shape(self):
    return self._shape

  # -- HTTP -------------------------------------------------------------------

  def _http(self, method: str, url: str, **kwargs):
    """One HTTP exchange, rate-limited; returns the response (any status)
    or raises `requests` connection/timeout errors."""
    wait = self._last_request + self.min_interval - time.monotonic()
    if wait > 0:
      _sleep(wait)
    self._last_request = time.monotonic()
    self.requests_sent += 1
    return self.session.request(method, url, timeout=self.timeout,
                                headers={**self.headers,
                                         **kwargs.pop('headers', {})},
                                **kwargs)

  def _with_retries(self, what: str, attempt_fn):
    """Runs `attempt_fn()` (one full request and parse) with retries."""
    requests = self._requests

    def attempt():
      try:
        return attempt_fn()
      except (requests.ConnectionError, requests.Timeout) as e:
        raise Transient(f'{type(e).__name__}: {str(e)[:160]}') from None
      except _Retry as e:
        raise Transient(e.message, e.retry_after) from None
      except _Junk as e:
        raise Transient(f'junk answer: {e}') from None

    try:
      return call_with_retries(attempt, self.policy, sleep=_sleep)
    except RetriesExhausted as e:
      raise GeneratorError(
          f'the generator service {self.url} is unreachable or failing after '
          f'{e.attempts} attempts to {what} ({literal(e.last)}). Check the '
          'URL, the {generator_api} and that the service is up; rerun to '
          'resume: images received so far are cached.') from None

  def _check(self, resp):
    """Raises _Retry for transient statuses, GeneratorError for others."""
    if resp.status_code in (200, 201, 202):
      return resp
    message = resp.text[:200]
    retry_after = resp.headers.get('Retry-After')
    if resp.status_code == 503:
      try:  # Hugging Face: {"error": "... loading", "estimated_time": 20.0}
        retry_after = retry_after or json.loads(resp.text)['estimated_time']
      except (ValueError, KeyError, TypeError):
        pass
    if resp.status_code in _RETRY_STATUS:
      raise _Retry(f'HTTP {resp.status_code}: {message}', retry_after)
    hint = (' (check the token in the environment variable named by '
            '{generator_token_env})' if resp.status_code in (401, 403) else '')
    raise GeneratorError(f'the generator service {literal(self.url)} refused '
                         f'the request: HTTP {resp.status_code}: '
                         f'{literal(message)}{hint}')

  @staticmethod
  def _json(resp):
    try:
      return resp.json()
    except ValueError:
      raise _Junk(f'malformed JSON: {resp.text[:80]!r}') from None

  # -- adapters: one request for `m` images -> list of bytes ----------------

  def _ask(self, index: int, m: int, seed: int) -> list[bytes]:
    text = self.prompt.format(label=self._names[index])
    return getattr(self, f'_ask_{self.api}')(text, index, m, seed)

  def _ask_openai(self, text, index, m, seed):
    del index
    resp = self._check(self._http('POST', self.url, json={
        'prompt': text, 'n': m, 'response_format': 'b64_json', 'seed': seed}))
    obj = self._json(resp)
    try:
      items = obj['data']
      assert isinstance(items, list) and len(items) == m
    except (KeyError, TypeError, AssertionError):
      raise _Junk(f'expected {{"data": [{m} images]}}, got '
                  f'{json.dumps(obj)[:120]}') from None
    return [self._item_bytes(it) for it in items]

  def _item_bytes(self, item) -> bytes:
    if isinstance(item, dict) and isinstance(item.get('b64_json'), str):
      return _b64(item['b64_json'])
    if isinstance(item, dict) and isinstance(item.get('url'), str):
      return self._fetch(item['url'])
    if isinstance(item, str):
      return self._fetch(item)
    raise _Junk(f'an image entry without b64_json or url: {str(item)[:80]}')

  def _fetch(self, url: str) -> bytes:
    if url.startswith('data:'):
      return _b64(url.split(',', 1)[-1])
    resp = self._check(self._http('GET', urllib.parse.urljoin(
        self.url, url)))
    return resp.content

  def _ask_raw(self, text, index, m, seed):
    del index, m
    resp = self._check(self._http(
        'POST', self.url, json={'inputs': text, 'parameters': {'seed': seed}},
        headers={'Accept': 'image/*'}))
    if resp.headers.get('Content-Type', '').startswith('application/json'):
      raise _Junk(f'JSON where image bytes were expected: {resp.text[:80]!r}')
    return [resp.content]

  def _ask_replicate(self, text, index, m, seed):
    del index
    resp = self._check(self._http('POST', self.url, json={'input': {
        'prompt': text, 'num_outputs': m, 'seed': seed}}))
    job = self._json(resp)
    deadline = time.monotonic() + self.max_poll_s
    while not (isinstance(job, dict) and job.get('status') in (
        'succeeded', 'failed', 'canceled')):
      try:
        poll = job['urls']['get']
      except (KeyError, TypeError):
        raise _Junk(f'a job without urls.get: {json.dumps(job)[:120]}'
                    ) from None
      if time.monotonic() > deadline:
        raise GeneratorError(f'the job {poll} did not finish within '
                             f'{self.max_poll_s:.0f}s.')
      _sleep(self.poll_interval_s)
      job = self._json(self._check(self._http(
          'GET', urllib.parse.urljoin(self.url, poll))))
    if job['status'] != 'succeeded':
      raise _Retry(f'job {job["status"]}: {str(job.get("error"))[:160]}', None)
    out = job.get('output')
    out = [out] if isinstance(out, str) else out
    if not isinstance(out, list) or len(out) != m:
      raise _Junk(f'expected {m} outputs, got {str(out)[:120]}')
    return [self._item_bytes(o) for o in out]

  def _ask_tfserving(self, text, index, m, seed):
    del text
    if self._noise_dim is None:
      md = self._json(self._check(self._http('GET', self.url + '/metadata')))
      try:
        sigs = md['metadata']['signature_def']['signature_def']
        dims = sigs['generate']['inputs']['noise']['tensor_shape']['dim']
        self._noise_dim = int(dims[1]['size'])
      except (KeyError, TypeError, IndexError, ValueError):
        raise GeneratorError(f'{self.url} does not serve a generator (no '
                             '"generate" signature with a noise input).'
                             ) from None
    noise = rng_for(seed, index).standard_normal(
        (m, self._noise_dim)).astype(np.float32)
    resp = self._check(self._http('POST', self.url + ':predict', json={
        'signature_name': 'generate',
        'inputs': {'label': [index] * m, 'noise': noise.tolist()}}))
    obj = self._json(resp)
    try:
      out = obj['outputs']
      arr = np.asarray(out['images'] if isinstance(out, dict) else out,
                       np.float32)
      assert arr.shape == (m, *self._shape)
    except (KeyError, TypeError, ValueError, AssertionError):
      raise _Junk(f'expected {m} images of shape {self._shape}, got '
                  f'{json.dumps(obj)[:120]}') from None
    buf = []
    for a in arr:
      b = io.BytesIO()
      np.save(b, a)
      buf.append(b.getvalue())
    return buf

  # -- the generator --------------------------------------------------------

  def _path(self, index: int, seed: int, i: int) -> str | None:
    if not self.cache_dir:
      return None
    return os.path.join(self.cache_dir, str(index), f'{seed}-{i}.bin')

  def _decode(self, data: bytes) -> np.ndarray:
    if data[:6] == b'\x93NUMPY':  # tfserving: the array itself
      arr = np.load(io.BytesIO(data))
      if arr.shape != self._shape:
        raise _Junk(f'an array of shape {arr.shape}')
      return arr.astype(np.float32)
    return decode_image(data, self._shape)

  def _generate(self, index: int, n: int, seed: int) -> np.ndarray:
    images: list[np.ndarray | None] = [None] * n
    for i in range(n):
      path = self._path(index, seed, i)
      if path and os.path.exists(path):
        with open(path, 'rb') as f:
          try:
            images[i] = self._decode(f.read())
          except _Junk:
            os.remove(path)  # a corrupt cache entry is asked for again
    missing = [i for i in range(n) if images[i] is None]
    while missing:
      start, todo = missing[0], set(missing)
      m = 1  # a contiguous run of missing images, one request
      while m < self.per_request and start + m in todo:
        m += 1
      request_seed = (int(seed) * 100_003 + start) & 0x7FFFFFFF

      def attempt(m=m, request_seed=request_seed):
        blobs = self._ask(index, m, request_seed)
        return [(b, self._decode(b)) for b in blobs]  # junk -> retried

      got = self._with_retries(f'generate {m} images of '
                               f'{self._names[index]!r}', attempt)
      for j, (blob, img) in enumerate(got):
        i = start + j
        path = self._path(index, seed, i)
        if path:  # cache every image the moment it has arrived
          os.makedirs(os.path.dirname(path), exist_ok=True)
          with open(path + '.tmp', 'wb') as f:
            f.write(blob)
          os.replace(path + '.tmp', path)
        images[i] = img
        self.images_received += 1
      missing = [i for i in missing if images[i] is None]
    return np.stack(images)


class _Retry(Exception):

  def __init__(self, message: str, retry_after):
    super().__init__(message)
    self.message = message
    self.retry_after = retry_after


def _b64(text: str) -> bytes:
  try:
    return base64.b64decode(text, validate=True)
  except ValueError:
    raise _Junk(f'invalid base64 ({text[:40]!r})') from None
