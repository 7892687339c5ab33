r"""Wall time of the attacker's queries through each oracle: local, REST, gRPC.

    python benchmarks/oracle_walltime.py --model_dir=PATH [--dataset=MNIST_NPZ] \
        [--queries=10000] [--output=label]

Serves `--model_dir` with `python -m pipelines.serve` (a subprocess on free
REST and gRPC ports, loopback), then answers the same `--queries` MNIST test
images (random images without a dataset) through `LocalOracle` (the
SavedModel in this process), the REST oracle and the gRPC oracle, each with
its default batch size, no answer cache, `--repeats` times; prints wall
seconds, queries/s and whether the answers agree, and writes `<out>.json`.
Not a test: figures go to BUILD_NOTES.md ("Serving").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.serve_load import _images  # pylint: disable=wrong-import-position
from benchmarks.serve_load import _Server  # pylint: disable=wrong-import-position


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--model_dir', required=True)
  data_dir = os.environ.get('MODELSTEAL_DATA')
  ap.add_argument('--dataset', default=data_dir and os.path.join(
      data_dir, 'mnist', 'mnist.npz'))
  ap.add_argument('--queries', type=int, default=10000)
  ap.add_argument('--output', default='label')
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--out', default=os.path.join(REPO, 'bench_runs',
                                                'oracle_walltime'))
  args = ap.parse_args(argv)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import LocalOracle  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import make_oracle  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle.grpc_oracle import victim_ref_from_address  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle.rest import victim_ref_from_url  # pylint: disable=g-import-not-at-top

  predictor = load_predictor(args.model_dir)
  shape = predictor.input_shape or (28, 28, 1)
  x = _images(args.dataset, args.queries, shape)
  server = _Server([f'--model_dir={args.model_dir}', '--model_name=victim'],
                   limit_s=120 + 60 * args.repeats)
  rows, answers = [], {}
  try:
    refs = {'local': None,
            'rest': victim_ref_from_url(server.url, num_classes=10),
            'grpc': victim_ref_from_address(server.grpc + '/victim',
                                            num_classes=10)}
    for repeat in range(args.repeats):
      for kind, ref in refs.items():
        oracle = (LocalOracle(predictor, identity='local', output=args.output)
                  if ref is None else make_oracle(ref, output=args.output))
        oracle.query(x[:8])  # connect, metadata, warm-up: not timed
        oracle = (LocalOracle(predictor, identity='local', output=args.output)
                  if ref is None else make_oracle(ref, output=args.output))
        started = time.perf_counter()
        got = oracle.query_all(x)
        wall = time.perf_counter() - started
        answers[kind] = got
        rows.append({'oracle': kind, 'repeat': repeat, 'queries': len(x),
                     'wall_s': round(wall, 3),
                     'queries_per_s': round(len(x) / wall, 1),
                     'paid': oracle.paid,
                     'batch_size': getattr(oracle, 'batch_size', len(x))})
        print(json.dumps(rows[-1]), flush=True)
  finally:
    server.close()
  agree = {k: float((v.argmax(1) == answers['local'].argmax(1)).mean())
           for k, v in answers.items()}
  print('\n| oracle | queries | batch per request | wall s (each repeat) | '
        'queries/s (best) | answers equal to local |')
  print('|---|---|---|---|---|---|')
  for kind in refs:
    mine = [r for r in rows if r['oracle'] == kind]
    print(f'| {kind} | {args.queries} | {mine[0]["batch_size"]} | '
          f'{", ".join(str(r["wall_s"]) for r in mine)} | '
          f'{max(r["queries_per_s"] for r in mine)} | '
          f'{100 * agree[kind]:.2f}% |')
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + '.json.tmp', 'w') as f:
    json.dump({'model_dir': args.model_dir, 'rows': rows, 'agree': agree}, f,
              indent=1)
  os.replace(args.out + '.json.tmp', args.out + '.json')
  if min(agree.values()) < 1.0:
    sys.exit('the oracles disagree')


if __name__ == '__main__':
  main()
