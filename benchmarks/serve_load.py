r"""Load test of `python -m pipelines.serve`, with and without batching.

    taskset -c 0 python benchmarks/serve_load.py --clients=8 --seconds=30

Starts the server (a subprocess, 127.0.0.1, a free port) on the `mnist_cnn`
victim SavedModel trained by `python -m pipelines.steal --workdir=bench_runs`
(or `--model_dir`), once with batching and once without; in each, `--clients`
concurrent clients (asyncio + aiohttp, one keep-alive connection each) send
`:predict` requests of `--images` real MNIST test images (row format, bodies
encoded once beforehand) back to back for `--seconds`. Reports requests/s,
images/s, latency percentiles, failed requests and the server's mean batch
size; writes `<out>.json`.

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
    for line in self.proc.stdout:
      lines.append(line)
      if line.startswith('[serve] listening:'):
        self.url = line.split()[2]
        self.base = self.url.split('/v1/')[0]
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
            'Content-Type': 'application/json'}) as resp:
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
  lat = sorted(latencies)
  pct = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0
  n = len(latencies)
  return {'requests': n, 'failed': failures, 'seconds': round(elapsed, 2),
          'requests_per_s': round(n / elapsed, 1),
          'images_per_s': round((n - failures) * n_images / elapsed, 1),
          'latency_ms_p50': round(pct(0.5), 1),
          'latency_ms_p99': round(pct(0.99), 1), 'errors': errors[:5]}


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

  results = []
  for mode in args.modes.split(','):
    flags = [f'--model_dir={model_dir}', '--model_name=mnist',
             f'--batch_timeout_ms={args.batch_timeout_ms}',
             '--batching' if mode == 'batching' else '--nobatching']
    server = _Server(flags, limit_s=120 + len(args.images.split(',')) *
                     (args.seconds + 60))
    try:
      import requests  # pylint: disable=g-import-not-at-top
      md = requests.get(server.url + '/metadata', timeout=30).json()
      dims = md['metadata']['signature_def']['signature_def'][
          'serving_default']['inputs']['images']['tensor_shape']['dim']
      shape = [int(d['size']) for d in dims[1:]]
      for n_images in [int(v) for v in args.images.split(',')]:
        x = _images(args.dataset, 64 * n_images, shape)
        bodies = [json.dumps({'instances': x[i:i + n_images].tolist()}).encode()
                  for i in range(0, len(x), n_images)]
        requests.post(server.url + ':predict', data=bodies[0], timeout=30)
        before = requests.get(server.base + '/monitoring/modelsteal/stats',
                              timeout=30).json()
        cpu0 = _cpu_s(server.proc.pid)
        res = asyncio.run(_load(server.url + ':predict', bodies, n_images,
                                args.clients, args.seconds, args.max_requests))
        server_cpu = _cpu_s(server.proc.pid) - cpu0
        after = requests.get(server.base + '/monitoring/modelsteal/stats',
                             timeout=30).json()
        calls = sum(b['calls'] for b in after['batches']) - sum(
            b['calls'] for b in before['batches'])
        inst = sum(b['instances'] for b in after['batches']) - sum(
            b['instances'] for b in before['batches'])
        m0, m1 = before['models']['mnist'], after['models']['mnist']
        reqs = max(1, m1['requests'] - m0['requests'])
        model_s = sum(b['model_s'] for b in after['batches']) - sum(
            b['model_s'] for b in before['batches'])
        res.update({'mode': mode, 'clients': args.clients,
                    'images_per_request': n_images,
                    'mean_batch': round(inst / calls, 1) if calls else None,
                    'model_ms_per_call': round(1000 * model_s / calls, 1)
                                         if calls else None,
                    'decode_ms_per_request': round(
                        1000 * (m1['decode_s'] - m0['decode_s']) / reqs, 2),
                    'server_cpu_share': round(server_cpu / res['seconds'], 2),
                    'body_bytes': len(bodies[0])})
        results.append(res)
        print(json.dumps(res), flush=True)
    finally:
      server.close()

  print('\n| mode | clients | images/request | requests | failed | req/s | '
        'images/s | p50 ms | p99 ms | mean batch | model ms/call | '
        'decode ms/request | server CPU share |')
  print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for r in results:
    print(f'| {r["mode"]} | {r["clients"]} | {r["images_per_request"]} | '
          f'{r["requests"]} | {r["failed"]} | {r["requests_per_s"]} | '
          f'{r["images_per_s"]} | {r["latency_ms_p50"]} | '
          f'{r["latency_ms_p99"]} | {r["mean_batch"] or "-"} | '
          f'{r["model_ms_per_call"] or "-"} | {r["decode_ms_per_request"]} | '
          f'{r["server_cpu_share"]} |')
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + '.json.tmp', 'w') as f:
    json.dump({'model_dir': model_dir, 'seconds': args.seconds,
               'results': results}, f, indent=1)
  os.replace(args.out + '.json.tmp', args.out + '.json')
  print(f'\nresults: {args.out}.json')
  if any(r['failed'] for r in results):
    sys.exit(1)


if __name__ == '__main__':
  main()
