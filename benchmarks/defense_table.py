r"""Stealing `mnist_cnn` through each victim-side output defence.

    taskset -c 0 python benchmarks/defense_table.py \
        --dataset=MNIST_NPZ --workdir=bench_runs

`--dataset` defaults to `$MODELSTEAL_DATA/mnist/mnist.npz`.

For each output defence (`modelsteal.defenses.output`: none, top-1 label,
top-k, rounding, high-confidence cut-off, Gaussian noise, reverse sigmoid)
the zoo victim `mnist_cnn` (trained once on its half of full MNIST, cached)
labels the same 10,000 random queries from the attacker's half; two students
of the victim's architecture are trained on them:

* "as given": on the answers the defence reveals (soft targets when the
  answers carry more than a label, as `pipelines.steal` does);
* "top-1": on the argmax of those answers only.

Each student's test accuracy and fidelity (label agreement with the
undefended victim on the test set) is reported, with the victim's own test
accuracy under the defence (argmax of its defended answers: the utility cost
to honest users) and the mean L1 change the defence makes to the probability
vectors. The defences run through the local oracle, which applies the very
functions the REST server applies with `--defense` (tests/serving_test.py
checks the server does); HTTP would add time, not information.

Top-1 students whose labels are identical to an earlier defence's (top-k,
cut-off and rounding keep the argmax) are trained once and shared: identical
data, seed and recipe make the identical model. Every step is a cached
component run: a rerun reuses everything, an interrupted one resumes.

10-12 trainings (run time: benchmarks/README.md; the table: BUILD_NOTES.md,
"Output defences"). Writes `<workdir>/defense_table/table.{csv,json,md}`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

DEFENSES = ('probs', 'label', 'topk:3', 'rounded:1', 'cutoff:0.25',
            'noise:0.1', 'noise:0.3', 'reverse_sigmoid:1,0.1')


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  data_dir = os.environ.get('MODELSTEAL_DATA')
  ap.add_argument('--dataset', default=data_dir and os.path.join(
      data_dir, 'mnist', 'mnist.npz'), help='MNIST npz (default: '
      '$MODELSTEAL_DATA/mnist/mnist.npz)')
  ap.add_argument('--workdir', default='bench_runs')
  ap.add_argument('--victim', default='mnist_cnn')
  ap.add_argument('--budget', type=int, default=10000)
  ap.add_argument('--defenses', default=','.join(DEFENSES),
                  help='comma-separated; a spec may contain a comma '
                  '(reverse_sigmoid:B,G), so separate specs with ";" then.')
  ap.add_argument('--student', default=None,
                  help="student architecture (default: the victim's)")
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--query_data', default=None,
                  help='draw the queries from this dataset (npz or IDX '
                  'folder of the same shape, e.g. Fashion-MNIST: a knockoff '
                  "attack) instead of the attacker's half")
  ap.add_argument('--smoke', action='store_true',
                  help='tiny data, 1 epoch: checks the script runs')
  args = ap.parse_args(argv)
  if not args.dataset and args.smoke:
    args.dataset = 'offline_mnist'  # the check needs no real data
  if not args.dataset:
    ap.error('--dataset: give the MNIST npz, or set MODELSTEAL_DATA (a '
             'folder holding mnist/mnist.npz).')

  import numpy as np  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  from modelsteal import victims  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks import evaluate_model, label_queries, train_model  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses import parse_output  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import make_oracle  # pylint: disable=g-import-not-at-top
  from modelsteal.experiments.recipes import student_recipe  # pylint: disable=g-import-not-at-top

  defenses = _split_specs(args.defenses)
  for d in defenses:
    parse_output(d)
  started = time.time()
  wd = os.path.abspath(args.workdir)
  spec = victims.get_victim(args.victim)
  student_arch = args.student or spec.arch
  dataset = data_lib.load_dataset(args.dataset)
  if args.smoke:
    dataset = dataclasses.replace(
        dataset, x_train=dataset.x_train[:1200], y_train=dataset.y_train[:1200],
        x_test=dataset.x_test[:300], y_test=dataset.y_test[:300])
  print(f'[defense_table] {dataset.name} from {dataset.source}: '
        f'{len(dataset.x_train)} train / {len(dataset.x_test)} test', flush=True)
  # The same steps, with the same parameters, as pipelines.steal: the victim
  # and the splits that run trained are reused.
  splits = data_lib.split_data.run(
      wd, examples=data_lib.import_dataset(dataset, wd), seed=args.seed,
      victim_fraction=0.5, heldout_fraction=0.1,
      min_size=dataset.num_classes)['splits']
  from modelsteal.training import for_this_machine, recipe_params  # pylint: disable=g-import-not-at-top
  recipe = recipe_params(for_this_machine(spec.recipe))
  if args.smoke:
    recipe['epochs'] = 1
  vres = train_model.run(wd, examples=splits, arch=spec.arch, recipe=recipe,
                         split='victim', targets='y', seed=args.seed)
  victim_ref = victims.victim_ref_from_model(vres['model'])
  _log(f'victim {args.victim}', vres)
  test = splits.load_split('test')
  queries = splits
  if args.query_data:
    qds = data_lib.load_dataset(args.query_data)
    queries = data_lib.split_data.run(
        wd, examples=data_lib.import_dataset(qds, wd), seed=args.seed,
        victim_fraction=0.0, heldout_fraction=0.1,
        min_size=dataset.num_classes)['splits']
  budget = min(args.budget, queries.properties['sizes']['pool'])
  clean = make_oracle(victim_ref, output='probs',
                      cache_dir=os.path.join(wd, 'answer_cache'))
  clean_probs = clean.query(test['x'])

  rows, top1_models = [], {}
  for d in defenses:
    defended = make_oracle(victim_ref, output=d, seed=args.seed,
                           cache_dir=os.path.join(wd, 'answer_cache'))
    answers = defended.query(test['x'])
    lab = label_queries.run(wd, splits=queries, victim=victim_ref, output=d,
                            budget=budget, strategy='random', seed=args.seed)
    _log(f'label_queries {d}', lab)
    labeled = lab['labeled']
    soft = bool(labeled.properties['soft'])
    recipe_s = student_recipe(student_arch, budget, args.smoke)
    row = {'defense': d,
           'victim_accuracy': float((answers.argmax(1) == test['y']).mean()),
           'mean_l1_change': float(np.abs(answers - clean_probs).sum(1).mean()),
           'answers_soft': soft,
           'queries_paid': int(labeled.properties['queries_paid'])}
    # "as given": what pipelines.steal trains (soft targets when soft)
    given = train_model.run(wd, examples=labeled, arch=student_arch,
                            recipe=recipe_s, split='train', targets='answers',
                            seed=args.seed)
    _log(f'student {student_arch} on {d} answers', given)
    row.update(_metrics(evaluate_model, wd, splits, given, victim_ref, 'given'))
    # "top-1": on the argmax of the answers only; shared when identical
    y = labeled.load_split('train')['y']
    key = hashlib.sha1(np.ascontiguousarray(y, np.int64).tobytes()).hexdigest()
    if not soft:
      top1_models.setdefault(key, (d, given))
    if key in top1_models:
      same_as, top1 = top1_models[key]
      row['top1_same_labels_as'] = same_as
    else:
      top1 = train_model.run(wd, examples=labeled, arch=student_arch,
                             recipe=recipe_s, split='train', targets='y',
                             seed=args.seed)
      _log(f'student {student_arch} on top-1 of {d}', top1)
      top1_models[key] = (d, top1)
      row['top1_same_labels_as'] = ''
    row.update(_metrics(evaluate_model, wd, splits, top1, victim_ref, 'top1'))
    rows.append(row)
    print(f'[defense_table] {d}: ' + json.dumps(
        {k: round(v, 4) if isinstance(v, float) else v
         for k, v in row.items()}), flush=True)

  df = pd.DataFrame(rows)
  out = os.path.join(wd, 'defense_table' + ('_smoke' if args.smoke else '')
                     + ('_knockoff' if args.query_data else ''))
  os.makedirs(out, exist_ok=True)
  md = _markdown(df, args, dataset, budget, student_arch,
                 float((clean_probs.argmax(1) == test['y']).mean()))
  for name, text in (('table.csv', df.to_csv(index=False)),
                     ('table.json', df.to_json(orient='records', indent=1)),
                     ('table.md', md)):
    tmp = os.path.join(out, name + '.tmp')
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, os.path.join(out, name))
  print('\n' + md)
  print(f'tables: {out}/table.{{md,csv,json}}; total '
        f'{time.time() - started:.0f}s', flush=True)


def _split_specs(text: str) -> list[str]:
  if ';' in text:
    return [s.strip() for s in text.split(';') if s.strip()]
  specs = []
  for part in text.split(','):  # rejoin reverse_sigmoid:B,G
    part = part.strip()
    if specs and specs[-1].startswith('reverse_sigmoid:') and (
        specs[-1].count(',') == 0) and _is_number(part):
      specs[-1] += ',' + part
    elif part:
      specs.append(part)
  return specs


def _is_number(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


def _log(label, res):
  note = 'reused' if res.reused else f'{res.duration_s:.1f}s'
  print(f'[defense_table] {label:<48} {note:>8}', flush=True)


def _metrics(evaluate_model, wd, splits, res, victim_ref, prefix):
  from modelsteal import victims  # pylint: disable=g-import-not-at-top
  ref = victims.victim_ref_from_model(res['model'])
  ev = evaluate_model.run(wd, splits=splits, query_splits=splits, model=ref,
                          victim=victim_ref)
  m = ev['evaluation'].properties
  return {f'{prefix}_accuracy': m['accuracy'],
          f'{prefix}_fidelity': m['fidelity'],
          f'{prefix}_train_s': round(res.duration_s, 1)}


def _markdown(df, args, dataset, budget, arch, victim_acc) -> str:
  source = (os.path.basename(os.path.normpath(args.query_data))
            if args.query_data else "the attacker's half")
  lines = [
      f'Stealing {args.victim} ({dataset.name}, victim test accuracy '
      f'{100 * victim_acc:.2f}%) with {budget:,} random queries from '
      f'{source}, student '
      f'{arch}; accuracy = test accuracy, fidelity = test-set label agreement '
      'with the undefended victim.',
      '',
      '| defence | victim acc. under defence | mean L1 change of probs | '
      'student on answers as given: acc. / fid. | student on top-1 only: '
      'acc. / fid. |',
      '|---|---|---|---|---|',
  ]
  for r in df.to_dict('records'):
    note = (f' (same labels as `{r["top1_same_labels_as"]}`)'
            if r['top1_same_labels_as'] and r['top1_same_labels_as'] !=
            r['defense'] else '')
    given = 'soft' if r['answers_soft'] else 'labels'
    lines.append(
        f'| `{r["defense"]}` | {100 * r["victim_accuracy"]:.2f}% | '
        f'{r["mean_l1_change"]:.3f} | {100 * r["given_accuracy"]:.2f}% / '
        f'{100 * r["given_fidelity"]:.2f}% ({given}) | '
        f'{100 * r["top1_accuracy"]:.2f}% / {100 * r["top1_fidelity"]:.2f}%'
        f'{note} |')
  return '\n'.join(lines) + '\n'


if __name__ == '__main__':
  main()
