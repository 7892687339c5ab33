r"""The watermark on MNIST: stolen students are claimed, independent models
are not, honest clients barely notice.

    python benchmarks/watermark_mnist.py --model_dir=VICTIM_SAVEDMODEL \
        --mnist=$MODELSTEAL_DATA/mnist/mnist.npz [--rate=0.005]

1. Serves the victim (`pipelines.serve` in a subprocess, 127.0.0.1) with a
   fresh watermark key, the query log and one API key per client.
2. An honest client sends the 10,000 MNIST test images; its accuracy is
   compared with the victim's own (no watermark) on the same images.
3. `pipelines.steal --victim_url` steals it with 10,000 queries, label-only
   and probabilities, students `mnist_cnn` and `mnist_mlp` (each output its
   own client key, so each has its own log).
4. Independent models: `mnist_cnn` and `mnist_mlp`, five seeds each,
   trained on true labels of 10,000 MNIST training images (no queries).
5. `pipelines.verify` logic on every model against every client's log:
   agreements with the watermark, p-value.

Writes `--out`/watermark.{csv,json}. Not a test: figures go to
BUILD_NOTES.md ("Owner's side").
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _serve(args, out, keys_file, key_file, log_dir):
  import _serve_proc  # pylint: disable=g-import-not-at-top
  return _serve_proc.start(
      [f'--model_dir={args.model_dir}', f'--api_keys={keys_file}',
       f'--query_log={log_dir}', f'--watermark_key={key_file}',
       f'--watermark_rate={args.rate}'], args.limit_s)


def _serve_and_steal(args, mnist, key_file, keys_file, log_dir, thieves,
                     students):
  """Serves the watermarked victim, measures the honest client and runs the
  thieves; returns the honest figures."""
  import requests  # pylint: disable=g-import-not-at-top
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from pipelines import keys  # pylint: disable=g-import-not-at-top
  with open(key_file, 'wb') as f:
    f.write(secrets.token_bytes(32))
  for p in [keys_file] + glob.glob(log_dir + '/*'):
    if os.path.exists(p):
      os.remove(p)
  secret = {n: keys.run(keys_file, add=n) for n in ['honest'] + thieves}
  proc, timer, url = _serve(args, args.out, keys_file, key_file, log_dir)
  try:
    # The honest client: the test set, answers against the truth.
    s = requests.Session()
    s.headers['x-api-key'] = secret['honest']
    answered = []
    for i in range(0, len(mnist.x_test), 500):
      r = s.post(url + ':predict', timeout=120,
                 json={'instances': mnist.x_test[i:i + 500].tolist()})
      r.raise_for_status()
      answered += [p['label'] for p in r.json()['predictions']]
    victim = load_predictor(args.model_dir, trusted=True)
    own = victim(mnist.x_test).argmax(1)
    honest = {'honest_accuracy_watermarked':
                  float((np.asarray(answered) == mnist.y_test).mean()),
              'victim_accuracy': float((own == mnist.y_test).mean())}
    print(honest, flush=True)
    # The thieves.
    for thief, output in zip(thieves, ['label', 'probs']):
      wd = os.path.join(args.out, f'steal_{thief}')
      subprocess.run(
          [sys.executable, '-m', 'pipelines.steal', f'--victim_url={url}',
           f'--dataset={args.mnist}', f'--workdir={wd}',
           f'--budget={args.budget}', f'--output={output}',
           '--students=mnist_cnn,mnist_mlp'],
          cwd=REPO, check=True,
          env=dict(os.environ, MODELSTEAL_API_KEY=secret[thief],
                   TF_CPP_MIN_LOG_LEVEL='2'))
  finally:
    proc.terminate()
    proc.wait(30)
    timer.cancel()
  return honest


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--model_dir', required=True)
  ap.add_argument('--mnist', required=True)
  ap.add_argument('--rate', type=float, default=0.005)
  ap.add_argument('--budget', type=int, default=10000)
  ap.add_argument('--seeds', type=int, default=5)
  ap.add_argument('--out', default=os.path.join(REPO, 'bench_runs',
                                                'watermark'))
  ap.add_argument('--limit_s', type=float, default=7200)
  ap.add_argument('--verify_only', action='store_true',
                  help='reuse the key, logs and students of the last run')
  args = ap.parse_args(argv)
  from modelsteal.data import load_dataset  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses import watermark  # pylint: disable=g-import-not-at-top
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.serving import querylog  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig  # pylint: disable=g-import-not-at-top
  from modelsteal.training import train_classifier  # pylint: disable=g-import-not-at-top
  os.makedirs(args.out, exist_ok=True)
  mnist = load_dataset(args.mnist)
  key_file = os.path.join(args.out, 'wm.key')
  keys_file = os.path.join(args.out, 'keys.json')
  log_dir = os.path.join(args.out, 'log')
  thieves = ['thief_label', 'thief_probs']
  rows, students = [], {}
  if args.verify_only:
    honest = json.load(open(os.path.join(args.out, 'watermark.json')))[
        'honest']
  else:
    honest = _serve_and_steal(args, mnist, key_file, keys_file, log_dir,
                              thieves, students)
  for thief in thieves:
    for res in glob.glob(os.path.join(args.out, f'steal_{thief}', 'steal',
                                      '*', 'results.json')):
      for row in json.load(open(res)):
        if row.get('role') == 'student':
          students[f'{thief}/{row["arch"]}'] = row['saved_model']
  # Independent models: true labels, no queries.
  rng = np.random.default_rng(0)
  idx = rng.choice(len(mnist.x_train), 10000, replace=False)
  independent = {}
  for arch in ('mnist_cnn', 'mnist_mlp'):
    for seed in range(args.seeds):
      m = train_classifier(arch, mnist.x_train[idx], mnist.y_train[idx], 10,
                           TrainConfig(epochs=12), seed=seed, verbose=0)
      independent[f'independent/{arch}/seed{seed}'] = (
          lambda x, m=m: m.predict(x, batch_size=1024, verbose=0).argmax(1))
  wm = watermark.Watermark(open(key_file, 'rb').read(), args.rate)
  logs = {}
  for thief in thieves:
    x, outs = querylog.replay(querylog.log_path(log_dir, thief))
    ans = outs['probabilities'].argmax(1) if 'probabilities' in outs else (
        np.asarray(outs['label']).reshape(-1))
    marked, honest_labels = wm.honest(x, ans, 10)
    logs[thief] = (x[marked], ans[marked], honest_labels[marked], len(x))
  models = {k: (lambda x, p=load_predictor(v): p(x).argmax(1))
            for k, v in sorted(students.items())}
  models.update(independent)
  for name, predict in models.items():
    for thief, (xm, labels, honest_labels, n) in logs.items():
      v = watermark.verify(predict(xm), labels, honest_labels, 10)
      rows.append({'model': name, 'log': thief, 'queries': n,
                   'marked': v.marked, 'departures': v.departures,
                   'agreements': v.agreements, 'p_value': v.p_value})
      print(rows[-1], flush=True)
  import pandas as pd  # pylint: disable=g-import-not-at-top
  df = pd.DataFrame(rows)
  df.to_csv(os.path.join(args.out, 'watermark.csv'), index=False)
  with open(os.path.join(args.out, 'watermark.json'), 'w') as f:
    json.dump({'honest': honest, 'rate': args.rate, 'rows': rows}, f,
              indent=1)
  print(df.to_string(index=False))
  print(honest)


if __name__ == '__main__':
  main()
