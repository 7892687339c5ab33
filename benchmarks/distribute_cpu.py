r"""One student trained three ways on this machine's CPU: one device, two
logical CPU devices (`--distribute=mirrored`), and two local worker processes
on loopback (`--distribute=multiworker`, `MultiWorkerMirroredStrategy` from
`TF_CONFIG`). Same data, recipe, seed and global batch; prints wall time of
the `fit` and clean test accuracy per setup.

    python benchmarks/distribute_cpu.py --dataset=MNIST_NPZ

(`--dataset` defaults to the offline 5,000-digit subset; BUILD_NOTES.md,
"Distribute and TPU", used full MNIST.)

A sanity check of the plumbing, not a speed-up claim: on one machine the
replicas share the same cores, so two of them cannot train faster than one.
Each setup runs in a fresh process (logical devices and the cluster must be
configured before TensorFlow starts).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import json, os, sys, time
setup, dataset, arch, n, epochs, batch = sys.argv[1:7]
import tensorflow as tf
if setup == 'two_devices':
  cpu, = tf.config.list_physical_devices('CPU')
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from modelsteal import distribute
name = {'one_device': 'default', 'two_devices': 'mirrored',
        'two_workers': 'multiworker'}[setup]
strategy = distribute.use(name)
from modelsteal import data as data_lib
from modelsteal.training import TrainConfig, predict_logits, train_classifier
ds = data_lib.load_dataset(dataset)
x, y = ds.x_train[:int(n)], ds.y_train[:int(n)]
cfg = TrainConfig(epochs=int(epochs), batch_size=int(batch),
                  learning_rate=2e-3)
t0 = time.time()
model = train_classifier(arch, x, y, ds.num_classes, cfg, seed=0,
                         strategy=strategy, verbose=0)
fit_s = time.time() - t0
acc = float((predict_logits(model, ds.x_test).argmax(1) == ds.y_test).mean())
if distribute.is_chief():
  print('RESULT', json.dumps({'setup': setup, 'replicas':
      strategy.num_replicas_in_sync, 'fit_s': round(fit_s, 1),
      'test_accuracy': round(acc, 4)}), flush=True)
"""


def _run(setup, args):
  argv = [sys.executable, '-c', _CHILD, setup, args.dataset, args.arch,
          str(args.n), str(args.epochs), str(args.batch_size)]
  base = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT)
  if setup != 'two_workers':
    procs = [subprocess.Popen(argv, env=base, stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)]
  else:
    socks = [socket.socket() for _ in range(2)]
    for s in socks:
      s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
      s.close()
    procs = []
    for i in range(2):
      env = dict(base, TF_CONFIG=json.dumps({
          'cluster': {'worker': [f'127.0.0.1:{p}' for p in ports]},
          'task': {'type': 'worker', 'index': i}}))
      procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                    text=True, cwd=ROOT))
  outs = [p.communicate()[0] for p in procs]
  for p, out in zip(procs, outs):
    if p.returncode:
      raise SystemExit(f'{setup} failed:\n{out[-3000:]}')
  line = next(l for out in outs for l in out.splitlines()
              if l.startswith('RESULT '))
  return json.loads(line[len('RESULT '):])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', default='offline_mnist')
  parser.add_argument('--arch', default='mnist_cnn')
  parser.add_argument('--n', type=int, default=20000)
  parser.add_argument('--epochs', type=int, default=3)
  parser.add_argument('--batch_size', type=int, default=128)
  args = parser.parse_args()
  rows = []
  for setup in ('one_device', 'two_devices', 'two_workers'):
    t0 = time.time()
    r = _run(setup, args)
    r['process_s'] = round(time.time() - t0, 1)
    rows.append(r)
    print(json.dumps(r), flush=True)
  print(f'\n{args.arch} on {args.n} images of {args.dataset}, {args.epochs} '
        f'epochs, global batch {args.batch_size}:')
  print(f'{"setup":<12} {"replicas":>8} {"fit s":>8} {"test acc":>9} '
        f'{"wall s":>8}')
  for r in rows:
    print(f'{r["setup"]:<12} {r["replicas"]:>8} {r["fit_s"]:>8} '
          f'{100 * r["test_accuracy"]:>8.2f}% {r["process_s"]:>8}')


if __name__ == '__main__':
  main()
