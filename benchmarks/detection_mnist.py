r"""Detection of stealing clients by `pipelines.serve --detect`, on MNIST.

    python benchmarks/detection_mnist.py --model_dir=VICTIM_SAVEDMODEL \
        --mnist=$MODELSTEAL_DATA/mnist/mnist.npz \
        --fashion=$MODELSTEAL_DATA/fashion_mnist [--detect=prada,shift]

Starts the server (a subprocess on 127.0.0.1) with one API key per client, a
query log and the detectors (`--detect_reference` = MNIST's training images,
the owner's data), then streams, each client with its own key, in requests
of 100 images:

  benign_0..2   the 10,000 MNIST test images each, in its own random order
  jbda          Jacobian-based augmentation (Papernot et al., AsiaCCS 2017):
                150 attacker images, then rounds of x + 0.1 sign(grad) of a
                substitute (an MLP retrained on the answers each round), as
                PRADA's paper attacks; until `--attack_queries`
  natural       MNIST training images (the attacker's half) at random
  knockoff      Fashion-MNIST training images

and reports, per client, the query at which each detector flagged it (or
never) from the server's own stats: CSV, JSON and markdown under `--out`.
Not a test: figures go to BUILD_NOTES.md ("Owner's side").
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _start_server(args, keys_file, log_dir):
  import _serve_proc  # pylint: disable=g-import-not-at-top
  return _serve_proc.start(
      [f'--model_dir={args.model_dir}', f'--api_keys={keys_file}',
       f'--query_log={log_dir}', f'--detect={args.detect}',
       f'--detect_reference={args.mnist}', '--on_detect=flag'], args.limit_s)


class Client:

  def __init__(self, url, key):
    import requests  # pylint: disable=g-import-not-at-top
    self.url = url + ':predict'
    self.session = requests.Session()
    self.session.headers['x-api-key'] = key
    self.sent = 0

  def ask(self, x):
    out = []
    for i in range(0, len(x), 100):
      body = json.dumps({'instances': x[i:i + 100].tolist()})
      r = self.session.post(self.url, data=body, timeout=60)
      r.raise_for_status()
      out.extend(p['probabilities'] for p in r.json()['predictions'])
      self.sent += len(x[i:i + 100])
    return np.asarray(out, np.float32)


def jbda(client, seeds, queries, rng):
  """Papernot et al.'s augmentation with a fresh MLP substitute per round."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = seeds
  y = client.ask(x).argmax(1)
  while client.sent < queries:
    sub = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Flatten(),
                            keras.layers.Dense(200, activation='relu'),
                            keras.layers.Dense(200, activation='relu'),
                            keras.layers.Dense(10)])
    sub.compile('adam', keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    sub.fit(x, y, epochs=10, batch_size=64, verbose=0)
    new = []
    for i in range(0, len(x), 256):
      xb = tf.constant(x[i:i + 256])
      with tf.GradientTape() as tape:
        tape.watch(xb)
        logit = tf.gather(sub(xb), y[i:i + 256], batch_dims=1)
      new.append(np.clip(xb + 0.1 * np.sign(tape.gradient(logit, xb)), 0, 1))
    new = np.concatenate(new).astype(np.float32)
    new = new[:queries - client.sent]
    x = np.concatenate([x, new])
    y = np.concatenate([y, client.ask(new).argmax(1)])
  del rng


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--model_dir', required=True)
  ap.add_argument('--mnist', required=True, help='MNIST npz or IDX folder')
  ap.add_argument('--fashion', required=True,
                  help='Fashion-MNIST npz or IDX folder')
  ap.add_argument('--detect', default='prada,shift')
  ap.add_argument('--benign_images', type=int, default=10000)
  ap.add_argument('--attack_queries', type=int, default=5000)
  ap.add_argument('--out', default=os.path.join(REPO, 'bench_runs',
                                                'detection'))
  ap.add_argument('--limit_s', type=float, default=3600)
  args = ap.parse_args(argv)
  from modelsteal.data import load_dataset  # pylint: disable=g-import-not-at-top
  from pipelines import keys  # pylint: disable=g-import-not-at-top
  os.makedirs(args.out, exist_ok=True)
  mnist = load_dataset(args.mnist)
  fashion = load_dataset(args.fashion)
  names = ['benign_0', 'benign_1', 'benign_2', 'jbda', 'natural', 'knockoff']
  keys_file = os.path.join(args.out, 'keys.json')
  if os.path.exists(keys_file):
    os.remove(keys_file)
  secret = {n: keys.run(keys_file, add=n) for n in names}
  log_dir = os.path.join(args.out, 'log')
  if os.path.isdir(log_dir):
    for f in os.listdir(log_dir):
      os.remove(os.path.join(log_dir, f))
  proc, timer, url = _start_server(args, keys_file, log_dir)
  try:
    rng = np.random.default_rng(0)
    for i in range(3):
      order = np.random.default_rng(100 + i).permutation(len(mnist.x_test))
      Client(url, secret[f'benign_{i}']).ask(
          mnist.x_test[order[:args.benign_images]])
      print(f'benign_{i}: done', flush=True)
    half = len(mnist.x_train) // 2  # the attacker's half: the second
    pool = np.arange(half, len(mnist.x_train))
    jbda(Client(url, secret['jbda']), mnist.x_train[rng.choice(pool, 150,
                                                              replace=False)],
         args.attack_queries, rng)
    print('jbda: done', flush=True)
    Client(url, secret['natural']).ask(
        mnist.x_train[rng.choice(pool, args.attack_queries, replace=False)])
    Client(url, secret['knockoff']).ask(
        fashion.x_train[rng.choice(len(fashion.x_train), args.attack_queries,
                                   replace=False)])
    import requests  # pylint: disable=g-import-not-at-top
    base = url.split('/v1/')[0]
    stats = requests.get(base + '/monitoring/modelsteal/stats', timeout=60,
                         headers={'x-api-key': secret['benign_0']}).json()
  finally:
    proc.terminate()
    proc.wait(30)
    timer.cancel()
  rows = []
  for n in names:
    c = stats['guard']['clients'][n]
    row = {'client': n, 'queries': c['queries']}
    for d in args.detect.split(','):
      d = d.split(':')[0]
      row[f'{d}_flagged_at'] = c['detected_at'].get(d)
      ev = c['evidence'].get(d, {})
      row[f'{d}_last'] = json.dumps(ev.get('W', ev.get('p')))
    rows.append(row)
  import pandas as pd  # pylint: disable=g-import-not-at-top
  df = pd.DataFrame(rows)
  df.to_csv(os.path.join(args.out, 'detection.csv'), index=False)
  with open(os.path.join(args.out, 'detection.json'), 'w') as f:
    json.dump({'rows': rows, 'detect': args.detect,
               'model_dir': args.model_dir}, f, indent=1)
  with open(os.path.join(args.out, 'detection.md'), 'w') as f:
    f.write('| ' + ' | '.join(df.columns) + ' |\n|'
            + '---|' * len(df.columns) + '\n')
    for r in df.itertuples(index=False):
      f.write('| ' + ' | '.join(str(v) for v in r) + ' |\n')
  print(df.to_string(index=False))


if __name__ == '__main__':
  main()
