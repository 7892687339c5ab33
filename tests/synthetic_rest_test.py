"""modelsteal.synthetic.rest: text-to-image services against a local fake
that is slow, fails, rate-limits and answers junk; the three adapters;
the image cache and resume; decoding.

The fake binds 127.0.0.1 on a free port. Waits (backoff, Retry-After, rate
limit, polling) go through `rest._sleep`, recorded here instead of slept.
"""

import asyncio
import base64
import socket

import numpy as np
import pytest
from aiohttp import web

from modelsteal import serving
from modelsteal.synthetic import GeneratorError
from modelsteal.synthetic import rest

SHAPE = (12, 12, 1)
NAMES = ['cat', 'dog']


def _png(value=255, h=30, w=40, channels=3) -> bytes:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  img = np.full((h, w, channels), value, np.uint8)
  return tf.io.encode_png(img).numpy()


class Fake:
  """Per-path behaviour; `calls[path]` counts requests, `prompts` records."""

  def __init__(self):
    self.calls = {}
    self.prompts = []
    self.auth = []
    self.png = _png()
    self.b64 = base64.b64encode(self.png).decode()

  def count(self, request) -> int:
    self.calls[request.path] = self.calls.get(request.path, 0) + 1
    self.auth.append(request.headers.get('Authorization'))
    return self.calls[request.path]

  async def openai(self, request):
    k = self.count(request)
    mode = request.match_info['mode']
    try:
      body = await request.json()
    except ValueError:
      return web.json_response({'error': 'bad body'}, status=400)
    self.prompts.append(body['prompt'])
    if mode == 'slow' and k == 1:
      await asyncio.sleep(1.0)  # past the client's 0.3 s read timeout
    if mode == 'flaky' and k <= 2:
      return web.json_response({'error': 'overloaded'}, status=500)
    if mode == 'limited' and k == 1:
      return web.json_response({'error': 'slow down'}, status=429,
                               headers={'Retry-After': '7'})
    if mode == 'junkjson' or (mode == 'junkonce' and k == 1):
      return web.Response(text='{"data": [', content_type='application/json')
    if mode == 'badimage':
      junk = base64.b64encode(b'<html>not an image</html>').decode()
      return web.json_response({'data': [{'b64_json': junk}] * body['n']})
    if mode == 'auth' and request.headers.get('Authorization') != (
        'Bearer s3cret'):
      return web.json_response({'error': 'invalid api key'}, status=401)
    return web.json_response({'data': [{'b64_json': self.b64}] * body['n']})

  async def raw(self, request):
    k = self.count(request)
    if k == 1:
      return web.json_response({'error': 'Model is loading',
                                'estimated_time': 3.5}, status=503)
    return web.Response(body=self.png, content_type='image/png')

  async def replicate_create(self, request):
    self.count(request)
    body = await request.json()
    self.prompts.append(body['input']['prompt'])
    return web.json_response({'id': 'j1', 'status': 'starting', 'urls': {
        'get': '/replicate/jobs/j1'}}, status=201)

  async def replicate_job(self, request):
    k = self.count(request)
    if k < 3:
      return web.json_response({'id': 'j1', 'status': 'processing',
                                'urls': {'get': '/replicate/jobs/j1'}})
    return web.json_response({'id': 'j1', 'status': 'succeeded', 'output': [
        '/files/a.png', 'data:image/png;base64,' + self.b64]})

  async def file(self, request):
    self.count(request)
    return web.Response(body=self.png, content_type='image/png')

  def app(self):
    app = web.Application()
    app.router.add_post('/openai/{mode}', self.openai)
    app.router.add_post('/raw', self.raw)
    app.router.add_post('/replicate/predictions', self.replicate_create)
    app.router.add_get('/replicate/jobs/j1', self.replicate_job)
    app.router.add_get('/files/a.png', self.file)
    return app


@pytest.fixture
def fake():
  f = Fake()
  with serving.BackgroundServer(f.app()) as bg:
    f.url = bg.url
    yield f


@pytest.fixture
def sleeps(monkeypatch):
  waited = []
  monkeypatch.setattr(rest, '_sleep', waited.append)
  return waited


def _gen(url, **kw):
  args = dict(class_names=NAMES, image_shape=SHAPE, retries=3,
              backoff_s=0.01, timeout_s=0.3, requests_per_s=1000.0)
  args.update(kw)
  return rest.RestGenerator(url, **args)


def test_openai_json_base64_prompts_and_decoding(fake, sleeps):
  gen = _gen(fake.url + '/openai/ok', images_per_request=4)
  x = gen.generate('dog', 6, seed=0)
  assert x.shape == (6, *SHAPE) and x.dtype == np.float32
  np.testing.assert_allclose(x, 1.0, atol=1e-3)  # a white RGB image, gray
  assert fake.calls['/openai/ok'] == 2  # 4 + 2 images, batched
  assert fake.prompts == ['a photo of a dog'] * 2
  del sleeps


def test_slow_failing_and_rate_limited_services_are_retried(fake, sleeps):
  for mode in ('slow', 'flaky', 'limited', 'junkonce'):
    x = _gen(f'{fake.url}/openai/{mode}').generate(0, 2, seed=1)
    assert x.shape == (2, *SHAPE), mode
  assert fake.calls['/openai/flaky'] == 3
  assert fake.calls['/openai/limited'] == 2
  assert max(sleeps) >= 7  # Retry-After honoured (the backoff is 0.01 s)


@pytest.mark.parametrize('mode,message', [
    ('junkjson', 'malformed JSON'), ('badimage', 'not an image')])
def test_junk_gets_retries_then_one_clear_error(fake, sleeps, mode, message):
  with pytest.raises(GeneratorError, match=message) as e:
    _gen(f'{fake.url}/openai/{mode}').generate(0, 1)
  assert 'after 4 attempts' in str(e.value)
  assert fake.calls[f'/openai/{mode}'] == 4
  del sleeps


def test_bearer_token_from_the_environment(fake, sleeps, monkeypatch):
  with pytest.raises(GeneratorError, match='HTTP 401.*token'):
    _gen(fake.url + '/openai/auth').generate(0, 1)
  assert fake.calls['/openai/auth'] == 1  # a 4xx is not retried
  with pytest.raises(ValueError, match='MY_TOKEN is not set'):
    _gen(fake.url + '/openai/auth', token_env='MY_TOKEN')
  monkeypatch.setenv('MY_TOKEN', 's3cret')
  gen = _gen(fake.url + '/openai/auth', token_env='MY_TOKEN')
  assert gen.generate(1, 1).shape == (1, *SHAPE)
  assert fake.auth[-1] == 'Bearer s3cret'
  ref = rest.rest_ref(fake.url + '/openai/auth', token_env='MY_TOKEN')
  assert 's3cret' not in str(ref)
  del sleeps


def test_raw_bytes_wait_while_the_model_loads(fake, sleeps):
  x = _gen(fake.url + '/raw', api='raw').generate('cat', 2, seed=0)
  assert x.shape == (2, *SHAPE)
  assert fake.calls['/raw'] == 3  # 503 loading, then one image per request
  assert 3.5 in sleeps


def test_replicate_jobs_are_polled(fake, sleeps):
  gen = _gen(fake.url + '/replicate/predictions', api='replicate',
             images_per_request=2, poll_interval_s=0.5)
  x = gen.generate('cat', 2, seed=0)
  assert x.shape == (2, *SHAPE)
  assert fake.calls['/replicate/jobs/j1'] == 3
  assert fake.calls['/files/a.png'] == 1
  assert sleeps.count(0.5) == 3  # before each of the 3 polls


def test_every_image_is_cached_and_a_resume_asks_only_for_the_rest(
    fake, sleeps, tmp_path):
  url = fake.url + '/openai/ok'
  first = _gen(url, cache_dir=str(tmp_path), images_per_request=2)
  a = first.generate('cat', 4, seed=3)
  assert fake.calls['/openai/ok'] == 2
  again = _gen(url, cache_dir=str(tmp_path), images_per_request=2)
  np.testing.assert_array_equal(again.generate('cat', 4, seed=3), a)
  assert fake.calls['/openai/ok'] == 2 and again.requests_sent == 0
  again.generate('cat', 7, seed=3)  # 3 more images: 2 requests
  assert fake.calls['/openai/ok'] == 4 and again.images_received == 3
  del sleeps


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_unreachable_url_is_one_clear_error(sleeps):
  gen = _gen(f'http://127.0.0.1:{_free_port()}/v1/images')
  with pytest.raises(GeneratorError, match='unreachable or failing after 4 '
                     'attempts') as e:
    gen.generate(0, 1)
  assert 'rerun to resume' in str(e.value)
  del sleeps


def test_bad_references_are_refused():
  with pytest.raises(ValueError, match='not an http'):
    rest.rest_ref('ftp://x/y')
  with pytest.raises(ValueError, match='unknown generator api'):
    rest.rest_ref('http://x/y', api='dalle')
  with pytest.raises(ValueError, match='must contain {label}'):
    rest.rest_ref('http://x/y', prompt='a photo')


def test_decode_crops_the_centre_and_resizes():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  img = np.zeros((20, 60, 3), np.uint8)
  img[:, 20:40] = 255  # the centre square is white, the sides black
  out = rest.decode_image(tf.io.encode_png(img).numpy(), (10, 10, 1))
  assert out.shape == (10, 10, 1)
  np.testing.assert_allclose(out, 1.0, atol=1e-3)
  rgb = rest.decode_image(_png(128, channels=1), (8, 8, 3))
  assert rgb.shape == (8, 8, 3)
  np.testing.assert_allclose(rgb, 128 / 255, atol=1e-3)
  with pytest.raises(rest._Junk):  # pylint: disable=protected-access
    rest.decode_image(b'GIF89a-garbage', (8, 8, 1))
