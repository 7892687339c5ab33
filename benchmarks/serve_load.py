r"""Load test of `python -m pipelines.serve`: REST and gRPC, with and
without batching, beside the model's own local predict rate.

    python benchmarks/serve_load.py --clients=8 --seconds=20 --images=1,64

Starts the server (a subprocess, 127.0.0.1, a free port) on the `mnist_cnn`
victim SavedModel trained by `python -m pipelines.steal --workdir=bench_runs`
(or `--model_dir`), once with batching and once without; in each, per
protocol, `--clients` concurrent clients send requests of `--images` real
MNIST test images back to back for `--seconds`: REST `:predict` in row format
(asyncio + aiohttp, one keep-alive connection each), gRPC `Predict` with
`tensor_content` (grpc.aio, one channel each); bodies built beforehand. Reports requests/s,
images/s, latency percentiles, failed requests and the server's mean batch
size; writes `<out>.json`.

`--modes=batching,owner` adds the owner's side in the same run: `owner` is
`batching` plus an API key per request (checked), the query log (fsync'ed
group commits) and the detectors (`--owner_detect`, reference: the
`--dataset` training images), all clients one key.

Bounded: each phase stops at its deadline or after `--max_requests`; each
request times out after 30 s; the server is stopped (SIGTERM, then SIGKILL)
whatever happens. Loopback only. Not a test: figures go to BUILD_NOTES.md
("Serving").
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _default_model_dir() -> str | None:
  """The victim SavedModel of the benchmark steal run, if there is one."""
  import csv  # pylint: disable=g-import-not-at-top
  for path in sorted(glob.glob(os.path.join(REPO, 'bench_runs', 'steal',
                                            'mnist_cnn-*', 'results.csv'))):
    with open(path) as f:
      for row in csv.DictReader(f):
        if row['role'] == 'victim' and os.path.isdir(row['saved_model']):
          return os.path.dirname(row['saved_model'])
  return None


def _images(dataset: str | None, n: int, shape):
  import numpy as np  # pylint: disable=g-import-not-at-top
  if dataset and os.path.exists(dataset):
    with np.load(dataset) as z:
      x = z['x_test'][:n].astype(np.float32) / 255.0
    return x.reshape(len(x), *shape)
  return np.random.default_rng(0).uniform(size=(n, *shape)).astype(np.float32)


def _cpu_s(pid: int) -> float:
  """User + system CPU seconds of a process (Linux /proc), 0 elsewhere."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
  except (OSError, IndexError, ValueError):
    return 0.0


class _Server:
  """The serve pipeline in a subprocess, stopped on close or after limit_s."""

  def __init__(self, args: list[str], limit_s: float):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', MODELSTEAL_OFFLINE='1')
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'pipelines.serve', '--port=0', '--grpc_port=0',
         *args], cwd=REPO,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self._killer = threading.Timer(limit_s, self.proc.kill)
    self._killer.start()
    lines = []
    self.url = self.grpc = None
    for line in self.proc.stdout:
      lines.append(line)
      if line.startswith('[serve] listening:'):
        self.url = line.split()[2]
        self.base = self.url.split('/v1/')[0]
      elif line.startswith('[serve] grpc:'):
        self.grpc = line.split()[2]
      if self.url and self.grpc:
        # keep draining its output so the pipe never fills
        threading.Thread(target=lambda: [_ for _ in self.proc.stdout],
                         daemon=True).start()
        return
    self.close()
    raise RuntimeError('the server did not start:\n' + ''.join(lines[-20:]))

  def close(self):
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM)
      try:
        self.proc.wait(20)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait(10)
    self._killer.cancel()


# The API key of the `owner` mode (None otherwise): a header on every REST
# request, metadata on every gRPC call.
_KEY = [None]


def _headers() -> dict:
  return {'x-api-key': _KEY[0]} if _KEY[0] else {}


def _metadata():
  return (('x-api-key', _KEY[0]),) if _KEY[0] else None


async def _load(url: str, bodies: list[bytes], n_images: int, clients: int,
                seconds: float, max_requests: int) -> dict:
  import aiohttp  # pylint: disable=g-import-not-at-top
  latencies, failures, errors = [], 0, []
  sent = 0
  deadline = time.monotonic() + seconds
  timeout = aiohttp.ClientTimeout(total=30)
  connector = aiohttp.TCPConnector(limit=clients)

  async def client(i, session):
    nonlocal failures, sent
    k = i
    while time.monotonic() < deadline and sent < max_requests:
      sent += 1
      body = bodies[k % len(bodies)]
      k += clients
      t0 = time.monotonic()
      try:
        async with session.post(url, data=body, headers={
            'Content-Type': 'application/json', **_headers()}) as resp:
          payload = await resp.read()
          ok = resp.status == 200
          if ok:
            preds = json.loads(payload)['predictions']
            ok = len(preds) == n_images
          if not ok:
            failures += 1
            errors.append(f'HTTP {resp.status}: {payload[:200]!r}')
      except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        failures += 1
        errors.append(f'{type(e).__name__}: {e}')
      latencies.append(time.monotonic() - t0)

  started = time.monotonic()
  async with aiohttp.ClientSession(connector=connector,
                                   timeout=timeout) as session:
    await asyncio.gather(*[client(i, session) for i in range(clients)])
  elapsed = time.monotonic() - started
  return _summary(latencies, failures, errors, elapsed, n_images)


def _load_grpc_sync(address: str, requests_: list, n_images: int,
                    clients: int, seconds: float, max_requests: int) -> dict:
  """The gRPC load from blocking stubs in `clients` threads (grpc's C core
  waits without the GIL; cheaper per call than grpc.aio's client)."""
  import grpc  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  latencies, errors = [], []
  failures = [0]
  sent = [0]
  deadline = time.monotonic() + seconds

  def client(i):
    with grpc.insecure_channel(address) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      k = i
      while time.monotonic() < deadline and sent[0] < max_requests:
        sent[0] += 1
        req = requests_[k % len(requests_)]
        k += clients
        t0 = time.monotonic()
        try:
          resp = stub.Predict(req, timeout=30, metadata=_metadata())
          probs = np.frombuffer(resp.outputs['probabilities'].tensor_content,
                                np.float32)
          if probs.size % n_images or not probs.size:
            failures[0] += 1
            errors.append(f'{probs.size} scores for {n_images} images')
        except grpc.RpcError as e:
          failures[0] += 1
          errors.append(f'{e.code()}: {e.details()}')
        latencies.append(time.monotonic() - t0)

  started = time.monotonic()
  threads = [threading.Thread(target=client, args=(i,)) for i in
             range(clients)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(seconds + 60)
  elapsed = time.monotonic() - started
  return _summary(latencies, failures[0], errors, elapsed, n_images)


async def _load_grpc(address: str, requests_: list, n_images: int,
                     clients: int, seconds: float, max_requests: int) -> dict:
  """The same load over gRPC: `clients` concurrent callers on one channel
  each (grpc.aio), PredictRequests built once beforehand."""
  import grpc  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  latencies, failures, errors = [], 0, []
  sent = 0
  deadline = time.monotonic() + seconds

  async def client(i):
    nonlocal failures, sent
    async with grpc.aio.insecure_channel(address) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      k = i
      while time.monotonic() < deadline and sent < max_requests:
        sent += 1
        req = requests_[k % len(requests_)]
        k += clients
        t0 = time.monotonic()
        try:
          resp = await stub.Predict(req, timeout=30, metadata=_metadata())
          probs = np.frombuffer(resp.outputs['probabilities'].tensor_content,
                                np.float32)
          if probs.size % n_images or not probs.size:
            failures += 1
            errors.append(f'{probs.size} scores for {n_images} images')
        except grpc.aio.AioRpcError as e:
          failures += 1
          errors.append(f'{e.code()}: {e.details()}')
        latencies.append(time.monotonic() - t0)

  started = time.monotonic()
  await asyncio.gather(*[client(i) for i in range(clients)])
  elapsed = time.monotonic() - started
  return _summary(latencies, failures, errors, elapsed, n_images)


def _summary(latencies, failures, errors, elapsed, n_images) -> dict:
  lat = sorted(latencies)
  pct = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0
  n = len(latencies)
  return {'requests': n, 'failed': failures, 'seconds': round(elapsed, 2),
          'requests_per_s': round(n / elapsed, 1),
          'images_per_s': round((n - failures) * n_images / elapsed, 1),
          'latency_ms_p50': round(pct(0.5), 1),
          'latency_ms_p99': round(pct(0.99), 1), 'errors': errors[:5]}


def _local_rate(model_dir: str, x, seconds: float = 5.0,
                batch: int = 256) -> float:
  """Images/s of the SavedModel's own predict in this process: the ceiling
  a server of it can approach."""
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  predict = load_predictor(model_dir)
  xb = x[:batch]
  predict(xb)
  n, started = 0, time.perf_counter()
  while time.perf_counter() - started < seconds:
    predict(xb)
    n += len(xb)
  return n / (time.perf_counter() - started)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--model_dir', default=None)
  data_dir = os.environ.get('MODELSTEAL_DATA')
  ap.add_argument('--dataset', default=data_dir and os.path.join(
      data_dir, 'mnist', 'mnist.npz'),
                  help='npz with x_test (read in place; default '
                  '$MODELSTEAL_DATA/mnist/mnist.npz); random images if '
                  'absent')
  ap.add_argument('--clients', type=int, default=8)
  ap.add_argument('--seconds', type=float, default=30.0)
  ap.add_argument('--images', default='1,16',
                  help='images per request; a comma list runs each')
  ap.add_argument('--modes', default='batching,nobatching')
  ap.add_argument('--max_requests', type=int, default=1_000_000)
  ap.add_argument('--batch_timeout_ms', type=float, default=5.0)
  ap.add_argument('--grpc_client', default='sync', choices=['sync', 'aio'],
                  help='blocking stubs in threads, or grpc.aio')
  ap.add_argument('--protocols', default='rest,grpc',
                  help='rest, grpc, or both (each in the same server)')
  ap.add_argument('--local_seconds', type=float, default=5.0,
                  help="seconds timing the SavedModel's own predict in this "
                  'process, for the ratio (0: skip)')
  ap.add_argument('--owner_detect', default='prada,shift',
                  help='--detect of the owner mode')
  ap.add_argument('--owner_flags', default='',
                  help='more server flags of the owner mode, comma-separated '
                  '(e.g. --noquery_log_fsync)')
  ap.add_argument('--out', default=os.path.join(REPO, 'bench_runs',
                                                'serve_load'))
  args = ap.parse_args(argv)
  if not 0 < args.seconds <= 600 or args.clients < 1:
    ap.error('--seconds must be in (0, 600] and --clients >= 1.')
  model_dir = args.model_dir or _default_model_dir()
  if not model_dir:
    ap.error('no --model_dir, and no bench_runs/steal/mnist_cnn-* run to take '
             'the victim from; run python -m pipelines.steal --workdir='
             'bench_runs first.')

  results, local_rate = [], None
  for mode in args.modes.split(','):
    flags = [f'--model_dir={model_dir}', '--model_name=mnist',
             f'--batch_timeout_ms={args.batch_timeout_ms}',
             '--nobatching' if mode == 'nobatching' else '--batching']
    _KEY[0] = None
    if mode == 'owner':
      sys.path.insert(0, REPO)
      import shutil  # pylint: disable=g-import-not-at-top
      from pipelines import keys  # pylint: disable=g-import-not-at-top
      owner_dir = args.out + '_owner'
      shutil.rmtree(owner_dir, ignore_errors=True)
      os.makedirs(owner_dir)
      _KEY[0] = keys.run(os.path.join(owner_dir, 'keys.json'), add='load')
      flags += [f'--api_keys={owner_dir}/keys.json',
                f'--query_log={owner_dir}/log']
      if args.owner_detect:
        flags += [f'--detect={args.owner_detect}']
        if 'shift' in args.owner_detect:
          flags += [f'--detect_reference={args.dataset}']
      flags += [f for f in args.owner_flags.split(',') if f]
    server = _Server(flags, limit_s=120 + len(args.images.split(',')) *
                     (args.seconds + 60))
    try:
      import requests  # pylint: disable=g-import-not-at-top
      md = requests.get(server.url + '/metadata', timeout=30,
                        headers=_headers()).json()
      dims = md['metadata']['signature_def']['signature_def'][
          'serving_default']['inputs']['images']['tensor_shape']['dim']
      shape = [int(d['size']) for d in dims[1:]]
      for protocol, n_images in [(p, int(v))
                                 for p in args.protocols.split(',')
                                 for v in args.images.split(',')]:
        x = _images(args.dataset, 64 * n_images, shape)
        if local_rate is None and args.local_seconds > 0:
          local_rate = round(_local_rate(model_dir, _images(
              args.dataset, 256, shape), args.local_seconds), 1)
          print(f'local predict (batches of 256): {local_rate} images/s',
                flush=True)
        if protocol == 'rest':
          bodies = [json.dumps({'instances': x[i:i + n_images].tolist()}
                               ).encode() for i in range(0, len(x), n_images)]
          requests.post(server.url + ':predict', data=bodies[0], timeout=30,
                        headers=_headers())
        else:
          import tensorflow as tf  # pylint: disable=g-import-not-at-top
          from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
          bodies = []
          for i in range(0, len(x), n_images):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = 'mnist'
            req.inputs['images'].CopyFrom(tf.make_tensor_proto(
                x[i:i + n_images]))
            bodies.append(req)
        before = requests.get(server.base + '/monitoring/modelsteal/stats',
                              timeout=30, headers=_headers()).json()
        cpu0 = _cpu_s(server.proc.pid)
        own0 = _cpu_s(os.getpid())
        if protocol == 'rest':
          res = asyncio.run(_load(server.url + ':predict', bodies, n_images,
                                  args.clients, args.seconds,
                                  args.max_requests))
        elif args.grpc_client == 'sync':
          res = _load_grpc_sync(server.grpc, bodies, n_images, args.clients,
                                args.seconds, args.max_requests)
        else:
          res = asyncio.run(_load_grpc(server.grpc, bodies, n_images,
                                       args.clients, args.seconds,
                                       args.max_requests))
        server_cpu = _cpu_s(server.proc.pid) - cpu0
        client_cpu = _cpu_s(os.getpid()) - own0
        after = requests.get(server.base + '/monitoring/modelsteal/stats',
                             timeout=30, headers=_headers()).json()
        calls = sum(b['calls'] for b in after['batches']) - sum(
            b['calls'] for b in before['batches'])
        inst = sum(b['instances'] for b in after['batches']) - sum(
            b['instances'] for b in before['batches'])
        m0, m1 = before['models']['mnist'], after['models']['mnist']
        reqs = max(1, m1['requests'] - m0['requests'])
        model_s = sum(b['model_s'] for b in after['batches']) - sum(
            b['model_s'] for b in before['batches'])
        res.update({'mode': mode, 'protocol': protocol,
                    'clients': args.clients,
                    'images_per_request': n_images,
                    'mean_batch': round(inst / calls, 1) if calls else None,
                    'model_ms_per_call': round(1000 * model_s / calls, 1)
                                         if calls else None,
                    'decode_ms_per_request': round(
                        1000 * (m1['decode_s'] - m0['decode_s']) / reqs, 2),
                    'server_cpu_share': round(server_cpu / res['seconds'], 2),
                    'client_cpu_share': round(client_cpu / res['seconds'], 2),
                    'body_bytes': len(bodies[0]) if protocol == 'rest'
                                  else bodies[0].ByteSize(),
                    'local_images_per_s': local_rate})
        results.append(res)
        print(json.dumps(res), flush=True)
    finally:
      server.close()

  print('\n| mode | protocol | clients | images/request | requests | failed | req/s | '
        'images/s | p50 ms | p99 ms | mean batch | model ms/call | '
        'decode ms/request | server CPU share | client CPU share |')
  print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for r in results:
    print(f'| {r["mode"]} | {r["protocol"]} | {r["clients"]} | {r["images_per_request"]} | '
          f'{r["requests"]} | {r["failed"]} | {r["requests_per_s"]} | '
          f'{r["images_per_s"]} | {r["latency_ms_p50"]} | '
          f'{r["latency_ms_p99"]} | {r["mean_batch"] or "-"} | '
          f'{r["model_ms_per_call"] or "-"} | {r["decode_ms_per_request"]} | '
          f'{r["server_cpu_share"]} | {r["client_cpu_share"]} |')
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + '.json.tmp', 'w') as f:
    json.dump({'model_dir': model_dir, 'seconds': args.seconds,
               'local_images_per_s': local_rate,
               'results': results}, f, indent=1)
  os.replace(args.out + '.json.tmp', args.out + '.json')
  print(f'\nresults: {args.out}.json')
  if any(r['failed'] for r in results):
    sys.exit(1)


if __name__ == '__main__':
  main()
