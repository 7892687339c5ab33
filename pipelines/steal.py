r"""Steal a black-box image classifier and measure how well it was copied.

    python -m pipelines.steal --victim=mnist_cnn

Trains (once, then cached) the zoo victim `mnist_cnn` on its private half of
MNIST, labels 10,000 random queries from the attacker's half through a
label-only oracle, trains two students (the victim's architecture and an MLP)
on the answers, and prints accuracy and fidelity of each. Artifacts, with an
`execution.json` each, go under `--workdir` (default ./runs); the results
table to `<workdir>/steal/<run>/results.{csv,json}` and each student's
servable SavedModel to `<workdir>/train_model/<id>/model/serving/1`. About
2-3 minutes on a 2-core CPU with the victim cached; the first run also trains
the victim (about a minute).

Variants:

    --output=probs | label | topk:3 | rounded:2        what the victim reveals
    --budgets=100,1000,10000                           sweep, with a PNG plot
    --query_data=fashion_mnist                         knockoff-style queries
    --query_data=generator:cvae                        generated queries (a
                                 generator name, SavedModel path or URL;
                                 pipelines/synthetic.py)
    --query_strategy=entropy --rounds=5                active stealing in rounds
    --query_strategy=random,margin,kcenter --rounds=5  strategies compared
                                 (pipelines/rounds.py: rounds.csv, rounds.png)
    --victim_path=PATH --dataset=mnist                 your own victim
    --victim_url=http://127.0.0.1:8501/v1/models/NAME --dataset=mnist
                                 a victim behind a TF-Serving REST endpoint
                                 (python -m pipelines.serve), over HTTP
    --students=mnist_cnn,lenet5,mnist_mlp              student architectures
    --warm_start --round_candidates=10000              cheaper rounds: train
                                 each round's student further, score 10,000
                                 candidates per round
    --student_recipe=batch_size=128,epochs=30          the students' training
                                 recipe (default: epochs by answer count)
    --students=mnist_cnn,ensemble:mnist_cnn,mcdropout:mnist_cnn:samples=20
                                 UQ students (modelsteal.uq) beside plain ones
    --distribute=mirrored|tpu                          tf.distribute strategy
    --smoke                                            a tiny run, seconds

Rerunning a command reuses every finished step; an interrupted run resumes,
paying only for the queries that were not answered yet.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time

from absl import app
from absl import flags

from pipelines import common

_VICTIM = flags.DEFINE_string('victim', 'mnist_cnn', 'Victim zoo name.')
_VICTIM_PATH = flags.DEFINE_string(
    'victim_path', None, 'A .keras file or SavedModel to steal instead of a '
    'zoo victim (needs --dataset).')
_VICTIM_URL = flags.DEFINE_string(
    'victim_url', None, 'A TF-Serving-style REST endpoint to steal, '
    'http://HOST:PORT/v1/models/NAME[/versions/N] (needs --dataset).')
_QUERY_DATA = flags.DEFINE_string(
    'query_data', None, "Attacker's query dataset; default: the attacker's "
    'half of --dataset.')
_OUTPUT = flags.DEFINE_string(
    'output', 'label', 'What the victim answers: probs, label, topk:K, '
    'rounded:D (and the defences cutoff:T, noise:S, reverse_sigmoid:B,G).')
_BUDGET = flags.DEFINE_integer('budget', 10000, 'Query budget.')
_BUDGETS = flags.DEFINE_list('budgets', [], 'Budget sweep, e.g. 100,1000,10000 '
                             '(overrides --budget).')
_STRATEGY = flags.DEFINE_string(
    'query_strategy', 'random', 'Query strategy, or several separated by '
    'commas (compared round by round): random, entropy, margin, '
    'least_confidence, kcenter, dfal, dfal_kcenter, bald, qbc (these two '
    'need a UQ student first in --students). Active ones need --rounds >= 2.')
_ROUNDS = flags.DEFINE_integer(
    'rounds', 1, 'Ask in this many rounds (a random seed set, then the '
    'strategy with the student of the round before); 1: all at once.')
_SEED_SIZE = flags.DEFINE_integer(
    'seed_size', 0, 'Queries in the random seed set of a round-based run '
    '(0: budget / rounds); the rest is split evenly over the other rounds.')
_SCHEDULE = flags.DEFINE_list(
    'round_schedule', [], 'Queries paid after each round, cumulative, e.g. '
    '500,1000,2000,5000,10000 (a random seed set of 500, then rounds of 500, '
    '1000, 3000, 5000); sets --rounds and --budget (the last entry).')
_ROUND_EPOCHS = flags.DEFINE_float(
    'round_epochs', 1.0, "Epochs of every round's student but the last, as "
    "a fraction of the recipe's. Those students only pick the next queries "
    '(their fidelity is still reported); the last one is the stolen model '
    'and gets the full recipe. Below 1 the rounds cost less time.')
_ROUND_CANDIDATES = flags.DEFINE_integer(
    'round_candidates', 0, 'Per round, the strategy scores a random this '
    'many of the pool images not asked yet instead of all of them (0: all); '
    'selection then costs that many forward passes.')
_WARM_START = flags.DEFINE_bool(
    'warm_start', False, "Each round's student starts from the weights of "
    "the round before's (trained further on every answer so far) instead of "
    'from scratch, so the rounds\' training is not thrown away; pair it with '
    'fewer epochs (--student_recipe=epochs=N). Plain students only.')
_STUDENT_RECIPE = flags.DEFINE_list(
    'student_recipe', [], "Change the students' training recipe, "
    'KEY=VALUE,... over TrainConfig fields (epochs, batch_size, '
    'learning_rate, augment, weight_decay, label_smoothing, schedule, '
    'steps_per_execution), e.g. batch_size=128,epochs=40. Default: '
    'epochs 120,000/n within [12, 60], batch 64 below 5,000 answers else 128, '
    'learning rate 2e-3, translations for CNNs.')
_STUDENTS = flags.DEFINE_list(
    'students', [], "Student architectures; default: the victim's plus one "
    'of another family. A UQ student is METHOD:ARCH[+ARCH][:key=value], '
    'METHOD one of ensemble, mcdropout, swag, batchensemble, bbb.')


@dataclasses.dataclass(frozen=True)
class StealConfig:
  victim: str = 'mnist_cnn'
  victim_path: str | None = None
  victim_url: str | None = None
  dataset: str | None = None
  data_dir: str | None = None
  query_data: str | None = None
  output: str = 'label'
  budgets: tuple[int, ...] = (10000,)
  budget_flag: str = ''  # '--budget' / '--budgets' when the user passed one
  query_strategy: str = 'random'  # comma-separated for several
  rounds: int = 1
  seed_size: int = 0
  round_schedule: tuple[int, ...] = ()
  round_epochs: float = 1.0
  student_recipe: tuple[tuple[str, object], ...] = ()  # (field, value) pairs
  warm_start: bool = False
  round_candidates: int = 0
  students: tuple[str, ...] = ()
  distribute: str = 'default'
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False


def student_recipe(arch: str, n: int, smoke: bool, overrides=()) -> dict:
  """Epochs scale inversely with the data so small budgets still converge.

  `overrides`: (field, value) pairs from `parse_recipe_overrides` (the
  `--student_recipe` flag); a smoke run keeps its one epoch.
  """
  from modelsteal.models import FAMILIES  # pylint: disable=g-import-not-at-top
  from modelsteal.training import recipe_params, TrainConfig  # pylint: disable=g-import-not-at-top
  epochs = 1 if smoke else int(min(60, max(12, round(120_000 / max(n, 1)))))
  recipe = {'epochs': epochs, 'batch_size': 64 if n < 5000 else 128,
            'learning_rate': 2e-3, 'augment': FAMILIES.get(arch) == 'cnn',
            'weight_decay': 0.0, 'label_smoothing': 0.0}
  if not overrides:
    return recipe  # the same parameters: runs cached before stay valid
  recipe.update({k: v for k, v in overrides if not (smoke and k == 'epochs')})
  return recipe_params(TrainConfig(**recipe))


def victim_path_name(path: str) -> str:
  """A run-name part for `--victim_path`: the last path part that names the
  model, past TF-Serving version directories and generic folder names.

  >>> victim_path_name('/models/mnist/1')
  'mnist'
  >>> victim_path_name('runs/train_model/50ff38b1/model/serving/1/')
  '50ff38b1'
  >>> victim_path_name('victim.keras')
  'victim'
  """
  parts = [p for p in os.path.normpath(path).split(os.sep) if p]
  for part in reversed(parts):
    if not part.isdigit() and part not in ('serving', 'model', 'saved_model',
                                           '.', '..'):
      return part[:-len('.keras')] if part.endswith('.keras') else part
  return 'victim'


def parse_recipe_overrides(items) -> tuple[tuple[str, object], ...]:
  """`['batch_size=128', 'epochs=40']` -> typed (field, value) pairs.

  >>> parse_recipe_overrides(['batch_size=128', 'augment=false'])
  (('augment', False), ('batch_size', 128))
  """
  import dataclasses as dc  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig  # pylint: disable=g-import-not-at-top
  fields = {f.name: f for f in dc.fields(TrainConfig) if f.name != 'jit_compile'}
  defaults = TrainConfig()
  out = {}
  for item in items:
    key, sep, text = item.partition('=')
    key, text = key.strip(), text.strip()
    if not sep or not key or not text:
      raise ValueError(f'--student_recipe: write KEY=VALUE, got {item!r}.')
    if key not in fields:
      raise ValueError(f'--student_recipe: unknown field {key!r}; valid: '
                       f'{", ".join(fields)}.')
    kind = type(getattr(defaults, key))
    try:
      if kind is bool:
        if text.lower() not in ('true', 'false', '1', '0'):
          raise ValueError(text)
        value = text.lower() in ('true', '1')
      else:
        value = kind(text)
    except ValueError:
      raise ValueError(f'--student_recipe: {key} takes '
                       f'{"an" if kind is int else "a"} {kind.__name__}, '
                       f'got {text!r}.') from None
    if key in ('epochs', 'batch_size', 'steps_per_execution') and value < 1:
      raise ValueError(f'--student_recipe: {key} must be at least 1, got '
                       f'{value}.')
    if key in ('learning_rate',) and not value > 0:
      raise ValueError(f'--student_recipe: {key} must be above 0, got '
                       f'{value}.')
    if key == 'schedule' and value not in ('cosine', 'constant'):
      raise ValueError("--student_recipe: schedule is 'cosine' or "
                       f"'constant', got {value!r}.")
    out[key] = value
  return tuple(sorted(out.items()))


def recipe_tag(overrides) -> str:
  """A run-name part for `--student_recipe` ('' when there is none)."""
  return '_'.join(f'{k}{v:g}' if isinstance(v, float) else f'{k}{v}'
                  for k, v in overrides)


def _scaled(recipe: dict, epochs_scale: float) -> dict:
  if epochs_scale == 1.0:
    return recipe  # the same parameters: runs cached before stay valid
  return {**recipe, 'epochs': max(1, round(recipe['epochs'] * epochs_scale))}


def _shrink(ds, n_train=1200, n_test=300):
  return dataclasses.replace(ds, x_train=ds.x_train[:n_train],
                             y_train=ds.y_train[:n_train],
                             x_test=ds.x_test[:n_test], y_test=ds.y_test[:n_test])




@dataclasses.dataclass
class Prepared:
  """What every stealing experiment starts from (see `prepare`)."""
  wd: str
  dataset: object
  splits: object  # Examples: victim / pool / heldout / test
  query_splits: object  # Examples the queries come from (pool, heldout)
  victim_ref: dict
  victim_name: str
  victim_arch: str
  victim_row: dict
  students: list
  budgets: list
  steps: common.Steps


def prepare(cfg: StealConfig, name: str = 'steal') -> Prepared:
  """Checks the config, loads and splits the data, trains (or reuses) the
  victim and scores it; shared by `pipelines.steal` and `pipelines.uq`."""
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  from modelsteal import distribute  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal import uq  # pylint: disable=g-import-not-at-top
  from modelsteal import victims  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks import QUERY_STRATEGIES, evaluate_model, train_model  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses import parse_output  # pylint: disable=g-import-not-at-top
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.training import recipe_params  # pylint: disable=g-import-not-at-top

  parse_output(cfg.output)  # fail early on a bad mode
  for s in cfg.query_strategy.split(','):
    if s not in QUERY_STRATEGIES:
      raise KeyError(f'unknown query strategy {s!r}; valid: '
                     f'{", ".join(QUERY_STRATEGIES)}.')
    if s != 'random' and cfg.rounds < 2:
      raise ValueError(f'--query_strategy={s} picks with the current student, '
                       'so it needs --rounds of 2 or more (a random seed set '
                       'first).')
  if not cfg.round_epochs > 0:
    raise ValueError(f'--round_epochs must be above 0, got {cfg.round_epochs}.')
  if cfg.round_candidates < 0:
    raise ValueError('--round_candidates must be 0 (the whole pool) or '
                     f'positive, got {cfg.round_candidates}.')
  if cfg.warm_start and cfg.rounds < 2:
    raise ValueError('--warm_start starts each round\'s student from the '
                     'round before\'s; add --rounds (2 or more) or '
                     '--round_schedule.')
  if cfg.round_epochs != 1.0 and cfg.rounds < 2:
    raise ValueError('--round_epochs applies to the students of a '
                     'round-based run; add --rounds (2 or more) or '
                     '--round_schedule.')
  for b in cfg.budgets:
    if b < 1:
      raise ValueError(f'{cfg.budget_flag or "--budget"}: the query budget '
                       f'must be at least 1, got {b}.')
  spec = None
  if cfg.victim_path and cfg.victim_url:
    raise ValueError('pass either --victim_path or --victim_url, not both.')
  if cfg.victim_path or cfg.victim_url:
    flag = '--victim_path' if cfg.victim_path else '--victim_url'
    if not cfg.dataset:
      raise ValueError(f'{flag} needs --dataset: the data the victim '
                       'classifies.')
  else:
    spec = victims.get_victim(cfg.victim)
  students = list(cfg.students) or list(spec.students if spec else ())
  if cfg.warm_start and students and uq.is_uq_spec(students[0]):
    raise ValueError('--warm_start trains plain students further; the first '
                     f'--students entry is the UQ student {students[0]!r}.')
  for s in students:
    if uq.is_uq_spec(s):
      uq.parse_spec(s)  # raises a clear error on a bad spec
    elif s not in models.ARCHITECTURES:
      raise KeyError(f'unknown student architecture {s!r}; valid: '
                     f'{", ".join(sorted(models.ARCHITECTURES))}, or a UQ '
                     'student METHOD:ARCH (methods: '
                     f'{", ".join(sorted(uq.UQ_METHODS))}).')
  distribute.use(cfg.distribute)
  # Non-chief workers of a multi-worker run write to a private directory.
  wd = distribute.worker_workdir(os.path.abspath(cfg.workdir))
  steps = common.Steps(name)

  # Data: the victim's dataset, split into the victim's half and the
  # attacker's; the query data is the attacker's half unless said otherwise.
  dataset = data_lib.load_dataset(cfg.dataset or spec.dataset, cfg.data_dir)
  if cfg.smoke:
    dataset = _shrink(dataset)
  print(f'[{name}] data: {dataset.name} from {dataset.source}: '
        f'{len(dataset.x_train)} train / {len(dataset.x_test)} test, '
        f'shape {dataset.shape}', flush=True)
  min_size = dataset.num_classes
  split = data_lib.split_data.run(
      wd, examples=data_lib.import_dataset(dataset, wd), seed=cfg.seed,
      victim_fraction=0.5, heldout_fraction=0.1, min_size=min_size)
  steps.record('split_data', split)
  splits = split['splits']
  query_splits = splits
  if (cfg.query_data or '').startswith('generator:'):
    # Generated queries: mined into an ordinary Examples artifact (pool,
    # heldout) that the victim labels like any other.
    from pipelines import synthetic  # pylint: disable=g-import-not-at-top
    query_splits = synthetic.generated_queries(cfg, dataset, wd, steps)
  elif cfg.query_data and cfg.query_data != (cfg.dataset or spec.dataset):
    qds = data_lib.load_dataset(cfg.query_data, cfg.data_dir)
    if cfg.smoke:
      qds = _shrink(qds)
    if qds.shape != dataset.shape:
      raise data_lib.DataError(
          f'--query_data {qds.name} has images of shape {qds.shape}, the '
          f'victim takes {dataset.shape}.')
    qsplit = data_lib.split_data.run(
        wd, examples=data_lib.import_dataset(qds, wd), seed=cfg.seed,
        victim_fraction=0.0, heldout_fraction=0.1, min_size=min_size)
    steps.record(f'split_data (queries: {qds.name})', qsplit)
    query_splits = qsplit['splits']
  pool_size = query_splits.properties['sizes']['pool']

  # Victim.
  if spec is not None:
    recipe = recipe_params(spec.recipe)
    if cfg.smoke:
      recipe['epochs'] = 1
    vres = train_model.run(wd, examples=splits, arch=spec.arch, recipe=recipe,
                           split='victim', targets='y', seed=cfg.seed)
    steps.record(f'train victim {cfg.victim}', vres)
    victim_ref = victims.victim_ref_from_model(vres['model'])
    victim_name = cfg.victim
    acc = vres['model'].properties.get('test_accuracy')
    print(f'[{name}] victim {cfg.victim}: test accuracy {100 * acc:.2f}% '
          f'(SavedModel {victim_ref["path"]})', flush=True)
  elif cfg.victim_url:
    victim_ref, victim_name = _rest_victim(cfg.victim_url, dataset)
  else:
    victim_ref = victims.victim_ref_from_path(cfg.victim_path)
    victim_name = victim_path_name(cfg.victim_path)
    load_predictor(victim_ref['path']).check_input(dataset.shape)
  if not students:
    students = (['mnist_cnn', 'mnist_mlp'] if dataset.shape[-1] == 1
                else ['cifar10_cnn', 'lenet5'])

  # Budgets above the pool: one rule for --budget and --budgets; capped on
  # the small offline subset and in smoke runs (see common.fit_budgets).
  budgets = common.fit_budgets(
      cfg.budgets, pool_size, flag=cfg.budget_flag, name=name,
      stand_in=(cfg.smoke or
                query_splits.properties.get('name') == 'offline_mnist'))

  vev = evaluate_model.run(wd, splits=splits, query_splits=query_splits,
                           model=victim_ref, victim=victim_ref)
  steps.record('evaluate victim', vev)
  victim_metrics = vev['evaluation'].properties
  victim_row = {'model': victim_name, 'role': 'victim',
                'arch': spec.arch if spec else 'unknown', 'budget': 0,
                'output': 'probs', 'queries_paid': 0, **victim_metrics,
                'normalized_accuracy': 1.0, 'train_s': None,
                'saved_model': victim_ref.get('path') or victim_ref.get('url')}
  return Prepared(wd, dataset, splits, query_splits, victim_ref, victim_name,
                  spec.arch if spec else 'unknown', victim_row, students,
                  budgets, steps)


def label(p: Prepared, cfg: StealConfig, budget: int):
  """The `label_queries` run for one budget (cached: never paid twice)."""
  from modelsteal.attacks import label_queries  # pylint: disable=g-import-not-at-top
  lab = label_queries.run(p.wd, splits=p.query_splits, victim=p.victim_ref,
                          output=cfg.output, budget=budget,
                          strategy=cfg.query_strategy, seed=cfg.seed)
  p.steps.record(f'label_queries budget={budget} output={cfg.output}', lab)
  return lab['labeled']


def train_student(p: Prepared, cfg: StealConfig, labeled, arch: str,
                  budget: int, probe_every: int = 50,
                  epochs_scale: float = 1.0, init=None,
                  serving: bool = True) -> dict:
  """Trains one student (plain architecture or UQ spec) on the answers and
  scores it with `evaluate_model`; returns its results row. `epochs_scale`
  multiplies the recipe's epochs (at least one epoch); `init`: a plain
  student's Model artifact to start from (`finetune_model`); `serving`:
  False skips a plain student's SavedModel (`saved_model` is then its
  `.keras` file)."""
  from modelsteal import uq  # pylint: disable=g-import-not-at-top
  from modelsteal import victims  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks import evaluate_model, finetune_model, train_model  # pylint: disable=g-import-not-at-top
  from modelsteal.uq.components import train_uq_model  # pylint: disable=g-import-not-at-top
  if uq.is_uq_spec(arch):
    spec = uq.parse_spec(arch)
    base = spec.archs[0]
    sres = train_uq_model.run(
        p.wd, examples=labeled, probe=p.splits, spec=str(spec),
        recipe=_scaled(student_recipe(base, budget, cfg.smoke,
                                      cfg.student_recipe), epochs_scale),
        targets='answers',
        seed=cfg.seed, probe_every=probe_every)
    arch = str(spec)
  elif init is not None:
    sres = finetune_model.run(
        p.wd, examples=labeled, init=init,
        recipe=_scaled(student_recipe(arch, budget, cfg.smoke,
                                      cfg.student_recipe), epochs_scale),
        split='train', targets='answers', seed=cfg.seed, serving=serving)
  else:
    sres = train_model.run(p.wd, examples=labeled, arch=arch,
                           recipe=_scaled(student_recipe(arch, budget,
                                                         cfg.smoke,
                                                         cfg.student_recipe),
                                          epochs_scale),
                           split='train', targets='answers', seed=cfg.seed,
                           serving=serving)
  p.steps.record(f'train student {arch} budget={budget}', sres)
  sref = victims.victim_ref_from_model(sres['model'])
  sev = evaluate_model.run(p.wd, splits=p.splits, query_splits=p.query_splits,
                           model=sref, victim=p.victim_ref)
  p.steps.record(f'evaluate student {arch} budget={budget}', sev)
  m = sev['evaluation'].properties
  return {'model': f'{arch}@{budget}', 'role': 'student', 'arch': arch,
          'budget': budget, 'output': cfg.output,
          'queries_paid': labeled.properties['queries_paid'], **m,
          'normalized_accuracy': m['accuracy'] /
          p.victim_row['accuracy'], 'train_s': round(sres.duration_s, 1),
          'saved_model': sref['path'], 'model_dir': sres['model'].uri}


def run(cfg: StealConfig):
  """Runs the pipeline; returns (results DataFrame, output directory)."""
  from modelsteal import evaluation  # pylint: disable=g-import-not-at-top

  started = time.time()
  if cfg.rounds > 1:
    from pipelines import rounds  # pylint: disable=g-import-not-at-top
    return rounds.run(cfg, cfg.query_strategy.split(','), prepare=prepare,
                      train_student=train_student, recipe_tag=recipe_tag)
  p = prepare(cfg)
  rows = [p.victim_row]
  for b in p.budgets:
    labeled = label(p, cfg, b)
    for arch in p.students:
      rows.append(train_student(p, cfg, labeled, arch, b))

  df = evaluation.results_frame(rows, evaluation.STEAL_COLUMNS)
  df = df.drop(columns=['model_dir'])
  run_name = re.sub(r'[^A-Za-z0-9_.-]+', '_', '-'.join(
      [p.victim_name, cfg.output, (cfg.query_data or 'same'),
       'b' + '_'.join(map(str, p.budgets))] +
      ([recipe_tag(cfg.student_recipe)] if cfg.student_recipe else []) +
      (['smoke'] if cfg.smoke else [])))
  out_dir = os.path.join(p.wd, 'steal', run_name)
  csv_path, json_path = evaluation.save_results(df, out_dir)
  p.steps.save(out_dir)
  print('\n' + evaluation.format_table(df.drop(columns=['saved_model'])))
  print(evaluation.STEAL_LEGEND)
  if len(p.budgets) > 1:
    plot = evaluation.plot_budget_sweep(
        df, os.path.join(out_dir, 'budget_sweep.png'),
        title=f'stealing {p.victim_name} ({cfg.output} answers)')
    print(f'\nplot:     {plot}')
  print(f'results:  {csv_path}\n          {json_path}')
  for r in rows[1:]:
    print(f'student {r["model"]:<18} SavedModel: {r["saved_model"]}')
    keras_file = os.path.join(os.path.dirname(os.path.dirname(
        r['saved_model'])), 'model.keras')
    if os.path.exists(keras_file):
      print(' ' * 27 + f'Keras file: {keras_file}')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return df, out_dir


def _rest_victim(url: str, dataset) -> tuple[dict, str]:
  """The victim reference of a REST endpoint, checked against the data."""
  from modelsteal.oracle.rest import victim_ref_from_url  # pylint: disable=g-import-not-at-top
  ref = victim_ref_from_url(url, num_classes=dataset.num_classes)
  from modelsteal.export import check_input_shape  # pylint: disable=g-import-not-at-top
  check_input_shape(ref.get('input_shape'), dataset.shape, ref['url'])
  name = ref['url'].split('/v1/models/', 1)[1].replace('/versions/', '@v')
  print(f'[steal] victim {ref["url"]}: version {ref["version"]}, '
        f'{ref["num_classes"]} classes (fingerprint {ref["fingerprint"][:12]})',
        flush=True)
  return ref, name


def config_from_flags() -> StealConfig:
  budgets = tuple(int(b) for b in _BUDGETS.value) if _BUDGETS.value else (
      _BUDGET.value,)
  schedule = tuple(int(b) for b in _SCHEDULE.value)
  rounds = _ROUNDS.value
  if schedule:
    from modelsteal.attacks.active import round_sizes  # pylint: disable=g-import-not-at-top
    # its order checked now, before a victim is trained or a budget capped
    round_sizes(schedule[-1], len(schedule), schedule=schedule)
    if _BUDGETS.value or not flags.FLAGS['budget'].using_default_value:
      if budgets != (schedule[-1],):
        raise ValueError(f'--round_schedule ends at {schedule[-1]}, which is '
                         'the budget; leave --budget/--budgets out.')
    if not flags.FLAGS['rounds'].using_default_value and rounds != len(
        schedule):
      raise ValueError(f'--round_schedule has {len(schedule)} rounds but '
                       f'--rounds={rounds}; leave --rounds out.')
    budgets, rounds = (schedule[-1],), len(schedule)
    budget_flag = '--round_schedule'
  else:
    budget_flag = ('--budgets' if _BUDGETS.value else '' if
                   flags.FLAGS['budget'].using_default_value else '--budget')
  return StealConfig(
      victim=_VICTIM.value, victim_path=_VICTIM_PATH.value,
      victim_url=_VICTIM_URL.value,
      dataset=common.DATASET.value, data_dir=common.DATA_DIR.value,
      query_data=_QUERY_DATA.value, output=_OUTPUT.value, budgets=budgets,
      budget_flag=budget_flag,
      query_strategy=_STRATEGY.value, students=tuple(_STUDENTS.value),
      rounds=rounds, seed_size=_SEED_SIZE.value, round_schedule=schedule,
      round_epochs=_ROUND_EPOCHS.value,
      student_recipe=parse_recipe_overrides(_STUDENT_RECIPE.value),
      warm_start=_WARM_START.value,
      round_candidates=_ROUND_CANDIDATES.value,
      distribute=common.DISTRIBUTE.value, workdir=common.WORKDIR.value, seed=common.SEED.value,
      smoke=common.SMOKE.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    try:
      cfg = config_from_flags()
    except ValueError as e:
      if 'round_schedule' in str(e) or str(e).startswith('--student_recipe'):
        raise
      raise ValueError('--budgets and --round_schedule must be integers '
                       f'({e}).') from e
    run(cfg)

  common.run_main(body, 'steal')


if __name__ == '__main__':
  app.run(main)
