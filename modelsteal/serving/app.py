"""The HTTP app: TF Serving's REST API on aiohttp.

Endpoints (https://www.tensorflow.org/tfx/serving/api_rest):

    GET  /v1/models/NAME[/versions/N]            model status
    GET  /v1/models/NAME[/versions/N]/metadata   signature defs
    POST /v1/models/NAME[/versions/N]:predict    row or columnar predict
    GET  /monitoring/modelsteal/stats            request/batch counters (ours)

Every error is `{"error": "<message>"}` with the status TF Serving uses:
400 for a bad request (malformed JSON, wrong shape or dtype, NaN, empty
input, unknown signature), 404 for an unknown model, version or path, 405
for a wrong method, 413 for a body over `max_body_bytes`, 500 when the model
itself fails. Nothing a client sends can stop the server.

With a `guard` (`guard.Guard`: API keys, quotas, the query log, detectors)
every endpoint needs a key: 401 without a valid one (with
`WWW-Authenticate: Bearer`), 429 with `Retry-After` over a quota or rate,
403 for a client blocked on detection.

`ModelServer(...).make_app()` builds the aiohttp app; `serve_forever` runs it
until SIGINT/SIGTERM; `BackgroundServer` runs it in a thread (tests,
benchmarks, notebooks).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import signal
import threading
import time
from typing import Callable

from aiohttp import web

from modelsteal.errors import ConfigError
from modelsteal.serving import access
from modelsteal.serving.batching import Batcher
from modelsteal.serving.codec import ServingError
from modelsteal.serving.codec import all_finite
from modelsteal.serving.codec import decode_json
from modelsteal.serving.codec import encode_json
from modelsteal.serving.codec import fast_predict_request
from modelsteal.serving.codec import format_predictions
from modelsteal.serving.codec import parse_predict_request
from modelsteal.serving.registry import RAW
from modelsteal.serving.registry import ServableLoadError
from modelsteal.serving.registry import Servable

log = logging.getLogger('modelsteal.serving')

# Bodies above this are decoded off the event loop, so one huge request does
# not stall the others' I/O while it parses.
_OFFLOAD_BYTES = 256 * 1024

# The guard's client state of a request (set by the key check).
_CLIENT = (web.RequestKey('client', object) if hasattr(web, 'RequestKey')
           else 'client')


@dataclasses.dataclass
class ModelStats:
  requests: int = 0  # predict requests answered
  instances: int = 0  # instances answered
  errors: int = 0  # requests answered with an error
  decode_s: float = 0.0  # wall time parsing and checking request bodies
  model_s: float = 0.0  # wall time waiting for model calls (incl. batching)


class ModelServer:
  """Serves one or more `Servable`s.

  Args:
    servables: the models (from `registry.load_servable`); names must differ.
    batching: merge concurrent predict requests (see `batching.Batcher`).
    max_batch_size: instances per model call at most, when batching.
    batch_timeout_s: how long an open batch waits for more requests.
    max_body_bytes: larger request bodies get 413.
    num_threads: threads running model calls (1 serialises them; on a small
      CPU that is also the fastest, TF parallelises inside each call).
    guard: keys, limits, query log and detectors (`guard.Guard`); None: off.
  """

  def __init__(self, servables: list[Servable], batching: bool = True,
               max_batch_size: int = 256, batch_timeout_s: float = 0.005,
               max_body_bytes: int = 32 << 20, num_threads: int = 1,
               guard=None):
    self.models = {}
    for s in servables:
      if s.name in self.models:
        raise ValueError(f'two models are named {s.name!r}.')
      self.models[s.name] = s
    if max_body_bytes < 1024:
      raise ConfigError('max_body_bytes', 'must be at least 1024, got '
                        f'{max_body_bytes}.')
    if num_threads < 1:
      raise ValueError(f'num_threads must be >= 1, got {num_threads}.')
    self.batching = batching
    self.max_batch_size = max_batch_size
    self.batch_timeout_s = batch_timeout_s
    self.max_body_bytes = max_body_bytes
    self.num_threads = num_threads
    self.stats = {name: ModelStats() for name in self.models}
    self._batchers: dict[tuple, Batcher] = {}
    self._executor: concurrent.futures.ThreadPoolExecutor | None = None
    self._io_executor: concurrent.futures.ThreadPoolExecutor | None = None
    self.grpc = None  # the gRPC endpoint, when make_app starts one
    self.guard = guard if guard is not None and guard.active else None
    if self.guard is not None and self.guard.needs_raw:
      for s in servables:
        for v in s.versions.values():
          for sig in v.signatures.values():
            if not sig.has_probs:
              raise ServableLoadError(
                  f'signature {sig.name!r} of {s.name!r} has no '
                  '"probabilities" output, which detectors and misleading '
                  'answers need; serve a model exported by modelsteal.export.')
            sig.keep_raw = True
    if batching:  # validate the batching arguments now, not on a request
      Batcher(lambda x: x, None, max_batch_size, batch_timeout_s)

  # -- app -------------------------------------------------------------------

  def make_app(self, grpc_port: int | None = None,
               grpc_host: str = '127.0.0.1') -> web.Application:
    """The aiohttp app; with `grpc_port` (0: any free port) it also starts
    TF Serving's gRPC API on the same loop (`grpc_api`); `self.grpc` then
    holds that endpoint and its bound port."""
    # aiohttp enforces the body limit while reading (chunked bodies too);
    # bodies announced larger by Content-Length are refused before reading.
    middlewares = [self._errors]
    if self.guard is not None:
      middlewares.append(self._authenticate)
    app = web.Application(middlewares=middlewares,
                          client_max_size=self.max_body_bytes)
    self.grpc = None
    if grpc_port is not None:
      from modelsteal.serving.grpc_api import GrpcEndpoint  # pylint: disable=g-import-not-at-top
      self.grpc = GrpcEndpoint(self, grpc_host, grpc_port,
                               self.max_body_bytes)
    m = r'{name:[^/:]+}'
    v = r'{version:[^/:]+}'
    app.router.add_get(f'/v1/models/{m}', self._status)
    app.router.add_get(f'/v1/models/{m}/versions/{v}', self._status)
    app.router.add_get(f'/v1/models/{m}/metadata', self._metadata)
    app.router.add_get(f'/v1/models/{m}/versions/{v}/metadata', self._metadata)
    app.router.add_post(f'/v1/models/{m}:{{verb}}', self._predict)
    app.router.add_post(f'/v1/models/{m}/versions/{v}:{{verb}}', self._predict)
    app.router.add_get('/monitoring/modelsteal/stats', self._stats)
    app.on_startup.append(self._start)
    app.on_cleanup.append(self._stop)
    return app

  async def _start(self, app):
    del app
    self._executor = concurrent.futures.ThreadPoolExecutor(
        self.num_threads, thread_name_prefix='model')
    self._io_executor = concurrent.futures.ThreadPoolExecutor(
        2, thread_name_prefix='decode')
    if self.guard is not None:
      await self.guard.start()
    if self.grpc is not None:
      await self.grpc.start()

  async def _stop(self, app):
    del app
    if self.grpc is not None:
      await self.grpc.stop()
    for b in self._batchers.values():
      await b.close()
    self._batchers.clear()
    if self.guard is not None:
      await self.guard.stop()
    for ex in (self._executor, self._io_executor):
      if ex is not None:
        ex.shutdown(wait=False, cancel_futures=True)

  @web.middleware
  async def _errors(self, request: web.Request, handler):
    try:
      return await handler(request)
    except access.AccessDenied as e:
      self._count_error(request)
      resp = _error(e.status, e.message)
      if e.status == 401:
        resp.headers['WWW-Authenticate'] = 'Bearer'
      retry = access.retry_after_header(e.retry_after_s)
      if retry is not None:
        resp.headers['Retry-After'] = retry
      return resp
    except ServingError as e:
      self._count_error(request)
      return _error(e.status, e.message)
    except web.HTTPException as e:
      if e.status < 400:
        raise
      self._count_error(request)
      if e.status == 413:
        msg = (f'request body too large: the limit is {self.max_body_bytes} '
               'bytes (--max_body_bytes); send fewer instances per request.')
      elif e.status == 405:
        allowed = ', '.join(sorted(getattr(e, 'allowed_methods', ()) or ()))
        msg = (f'method {request.method} not allowed on {request.path}'
               + (f'; use {allowed}.' if allowed else '.'))
      elif e.status == 404:
        msg = (f'no such endpoint: {request.path}; see /v1/models/NAME, '
               '/v1/models/NAME/metadata, /v1/models/NAME:predict.')
      else:
        msg = e.reason or e.text or f'HTTP {e.status}'
      resp = _error(e.status, msg)
      if e.status == 405 and 'Allow' in e.headers:
        resp.headers['Allow'] = e.headers['Allow']
      return resp
    except (asyncio.CancelledError, KeyboardInterrupt):
      raise
    except Exception as e:  # pylint: disable=broad-except
      log.exception('internal error on %s', request.path)
      self._count_error(request)
      return _error(500, f'internal error: {type(e).__name__}: {e}')

  @web.middleware
  async def _authenticate(self, request: web.Request, handler):
    request[_CLIENT] = self.guard.authenticate(
        access.key_from_headers(request.headers.get))
    return await handler(request)

  def _count_error(self, request):
    self.count_error(request.match_info.get('name') if request.match_info
                     else None)

  def count_error(self, name: str | None) -> None:
    if name in self.stats:
      self.stats[name].errors += 1

  def _servable(self, request: web.Request) -> Servable:
    return self.servable(request.match_info['name'],
                         request.match_info.get('version'))

  # -- handlers --------------------------------------------------------------

  async def _status(self, request: web.Request) -> web.Response:
    servable = self._servable(request)
    v = request.match_info.get('version')
    numbers = [servable.version(v).number] if v else sorted(
        servable.versions, reverse=True)
    return _json({'model_version_status': [
        {'version': str(n), 'state': 'AVAILABLE',
         'status': {'error_code': 'OK', 'error_message': ''}}
        for n in numbers]})

  async def _metadata(self, request: web.Request) -> web.Response:
    servable = self._servable(request)
    version = servable.version(request.match_info.get('version'))
    sigs = {k: s.signature_def() for k, s in version.signatures.items()}
    default = version.signatures.get('serving_default') or next(
        iter(version.signatures.values()))
    return _json({
        'model_spec': {'name': servable.name, 'signature_name': '',
                       'version': str(version.number)},
        'metadata': {'signature_def': {'signature_def': sigs}},
        # Not in TF Serving; clients that do not know it ignore it. It lets a
        # label-only endpoint say how many classes there are.
        'modelsteal': {'defense': servable.defense,
                       'num_classes': default.num_classes},
    })

  async def _predict(self, request: web.Request) -> web.Response:
    verb = request.match_info['verb']
    servable = self._servable(request)
    version = servable.version(request.match_info.get('version'))
    if verb != 'predict':
      raise ServingError(404 if verb not in ('classify', 'regress') else 400,
                         f'"{verb}" is not served here; this server answers '
                         ':predict only.')
    if (request.content_length or 0) > self.max_body_bytes:
      raise web.HTTPRequestEntityTooLarge(self.max_body_bytes,
                                          request.content_length)
    body = await request.read()
    started = time.perf_counter()
    specs_for = lambda name: version.signature(name).inputs
    if len(body) > _OFFLOAD_BYTES:
      fast = await asyncio.get_running_loop().run_in_executor(
          self._io_executor, fast_predict_request, body, specs_for)
    else:
      fast = fast_predict_request(body, specs_for)
    if fast is not None:
      inputs, rows, sig_name = fast
      sig = version.signature(sig_name)
    else:
      inputs, rows, sig = await self._parse_slowly(body, version)
    self.stats[servable.name].decode_s += time.perf_counter() - started
    out = await self.answer(request.get(_CLIENT), servable, version, sig,
                            inputs, 'rest')
    return web.Response(body=encode_json(format_predictions(out, rows),
                                         finite=all_finite(out)),
                        content_type='application/json')

  async def _parse_slowly(self, body: bytes, version):
    """The general JSON path (any request TF Serving takes, every error)."""
    if len(body) > _OFFLOAD_BYTES:
      obj = await asyncio.get_running_loop().run_in_executor(
          self._io_executor, decode_json, body)
    else:
      obj = decode_json(body)
    sig_name = obj.get('signature_name')
    if sig_name is not None and not isinstance(sig_name, str):
      raise ServingError(400, '"signature_name" must be a string.')
    sig = version.signature(sig_name)
    if len(body) > _OFFLOAD_BYTES:
      inputs, rows = await asyncio.get_running_loop().run_in_executor(
          self._io_executor, parse_predict_request, obj, sig.inputs)
    else:
      inputs, rows = parse_predict_request(obj, sig.inputs)
    return inputs, rows, sig

  async def run_model(self, servable: Servable, version, sig,
                      inputs: dict) -> dict:
    """One request's checked inputs -> the signature's visible outputs,
    through the shared batching queue (REST and gRPC alike)."""
    started = time.perf_counter()
    if self.batching:
      key = (servable.name, version.number, sig.name)
      if key not in self._batchers:
        self._batchers[key] = Batcher(sig.run, self._executor,
                                      self.max_batch_size,
                                      self.batch_timeout_s)
      out = await self._batchers[key].submit(inputs)
    else:
      out = await asyncio.get_running_loop().run_in_executor(
          self._executor, sig.run, inputs)
    stats = self.stats[servable.name]
    stats.model_s += time.perf_counter() - started
    stats.requests += 1
    stats.instances += len(next(iter(inputs.values())))
    return out

  async def answer(self, client, servable: Servable, version, sig,
                   inputs: dict, protocol: str) -> dict:
    """`run_model` behind the guard (when there is one): the client's
    limits, the detectors, the query log; `client` is what
    `authenticate` returned."""
    if self.guard is None:
      out = await self.run_model(servable, version, sig, inputs)
      out.pop(RAW, None)
      return out
    where = {'protocol': protocol, 'model': servable.name,
             'version': version.number, 'signature': sig.name}
    return await self.guard.answer(
        client, lambda: self.run_model(servable, version, sig, inputs),
        where, inputs)

  def authenticate(self, key: str | None):
    """The guard's client state for `key` (None without a guard)."""
    return None if self.guard is None else self.guard.authenticate(key)

  def servable(self, name: str, version: str | int | None = None):
    """The named model, or a 404 `ServingError` naming what is served."""
    if name not in self.models:
      what = f'Specific({name}, {version})' if version else f'Latest({name})'
      raise ServingError(404, f'Servable not found for request: {what}; '
                         f'models served: {sorted(self.models)}.')
    return self.models[name]

  async def _stats(self, request: web.Request) -> web.Response:
    del request
    return _json({
        'models': {k: dataclasses.asdict(v) for k, v in self.stats.items()},
        'guard': self.guard.summary() if self.guard is not None else None,
        'batching': self.batching,
        'batches': [{'model': k[0], 'version': k[1], 'signature': k[2],
                     **dataclasses.asdict(b.stats)}
                    for k, b in self._batchers.items()]})


def _json(obj, status: int = 200) -> web.Response:
  return web.Response(body=encode_json(obj), status=status,
                      content_type='application/json')


def _error(status: int, message: str) -> web.Response:
  return _json({'error': message}, status)


# -- running -------------------------------------------------------------------


async def _start_site(app: web.Application, host: str, port: int
                      ) -> tuple[web.AppRunner, int]:
  runner = web.AppRunner(app, access_log=None)
  await runner.setup()
  site = web.TCPSite(runner, host, port)
  try:
    await site.start()
  except OSError as e:
    await runner.cleanup()
    raise OSError(f'cannot listen on {host}:{port}: {e.strerror or e}; pick '
                  'another --port (0 picks a free one).') from e
  bound = runner.addresses[0][1]
  return runner, bound


def serve_forever(app: web.Application, host: str = '127.0.0.1',
                  port: int = 8501,
                  on_ready: Callable[[int], None] | None = None) -> None:
  """Runs `app` until SIGINT or SIGTERM; `on_ready(port)` once listening."""

  async def main():
    runner, bound = await _start_site(app, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        loop.add_signal_handler(sig, stop.set)
      except (NotImplementedError, RuntimeError):  # not the main thread
        pass
    if on_ready:
      on_ready(bound)
    try:
      await stop.wait()
    finally:
      await runner.cleanup()

  asyncio.run(main())


class BackgroundServer:
  """Runs an aiohttp app on `host` in a daemon thread with its own loop.

      with BackgroundServer(server.make_app()) as bg:
        requests.get(bg.url + '/v1/models/NAME')

  Args:
    app: the aiohttp application.
    host: interface (loopback by default).
    port: 0 picks a free port; `port` then says which.
  """

  def __init__(self, app: web.Application, host: str = '127.0.0.1',
               port: int = 0, start_timeout_s: float = 60.0):
    self.app = app
    self.host = host
    self.port = port
    self._timeout = start_timeout_s
    self._loop: asyncio.AbstractEventLoop | None = None
    self._runner: web.AppRunner | None = None
    self._thread: threading.Thread | None = None
    self._error: BaseException | None = None

  @property
  def url(self) -> str:
    return f'http://{self.host}:{self.port}'

  def start(self) -> 'BackgroundServer':
    ready = threading.Event()

    def run():
      loop = asyncio.new_event_loop()
      self._loop = loop
      asyncio.set_event_loop(loop)
      try:
        self._runner, self.port = loop.run_until_complete(
            _start_site(self.app, self.host, self.port))
      except BaseException as e:  # pylint: disable=broad-except
        self._error = e
        ready.set()
        loop.close()
        return
      ready.set()
      loop.run_forever()
      loop.run_until_complete(self._runner.cleanup())
      loop.close()

    self._thread = threading.Thread(target=run, daemon=True,
                                    name='modelsteal-server')
    self._thread.start()
    if not ready.wait(self._timeout):
      raise TimeoutError(f'the server did not start within {self._timeout}s.')
    if self._error is not None:
      raise self._error
    return self

  def stop(self, timeout_s: float = 30.0) -> None:
    if self._thread is None or not self._thread.is_alive():
      return
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(timeout_s)

  def __enter__(self) -> 'BackgroundServer':
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()


def wait_until_ready(url: str, timeout_s: float = 60.0) -> None:
  """Polls `url` (a status URL) until it answers 200; for subprocess
  servers."""
  import requests  # pylint: disable=g-import-not-at-top
  deadline = time.monotonic() + timeout_s
  last = None
  while time.monotonic() < deadline:
    try:
      if requests.get(url, timeout=2).status_code == 200:
        return
    except requests.RequestException as e:
      last = e
    time.sleep(0.2)
  raise TimeoutError(f'{url} did not answer within {timeout_s}s ({last}).')
