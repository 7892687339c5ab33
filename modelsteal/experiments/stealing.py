"""The steps of every stealing experiment (`steal`, `rounds`, `uq`): the
config, `prepare` (data, splits, query source, victim, budgets), `label`
(one budget's answers, cached) and `train_student` (one student, scored).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from modelsteal.errors import ConfigError
from modelsteal.errors import UnknownNameError
from modelsteal.experiments import recipes
from modelsteal.experiments.common import Steps
from modelsteal.experiments.common import fit_budgets
from modelsteal.experiments.common import load_and_split
from modelsteal.experiments.common import shrink
from modelsteal.victims import VictimRef


@dataclasses.dataclass(frozen=True)
class StealConfig:
  """One stealing experiment; validated once, at construction.

  Raises `ConfigError` naming the field on a value that cannot work (an
  unknown victim, strategy or student, contradicting fields). Checks that
  need the data (a budget larger than the pool) run in `prepare`.
  """
  victim: str = 'mnist_cnn'
  victim_path: str | None = None
  victim_url: str | None = None
  victim_grpc: str | None = None  # HOST:PORT/NAME[/versions/N]
  dataset: str | None = None
  data_dir: str | None = None
  query_data: str | None = None
  output: str = 'label'
  budgets: tuple[int, ...] = (10000,)
  # Whether the user chose the budget: a chosen budget above the pool is an
  # error on real data; the default one is capped (`common.fit_budgets`).
  budget_chosen: bool = False
  query_strategy: str = 'random'  # comma-separated for several
  rounds: int = 1
  seed_size: int = 0
  round_schedule: tuple[int, ...] = ()
  round_epochs: float = 1.0
  student_recipe: tuple[tuple[str, Any], ...] = ()  # (field, value) pairs
  warm_start: bool = False
  round_candidates: int = 0
  students: tuple[str, ...] = ()
  # query_data='datafree': FIELD=VALUE settings of the loop
  # (modelsteal.attacks.datafree.DataFreeConfig)
  datafree: tuple[str, ...] = ()
  distribute: str = 'default'
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False

  def __post_init__(self):
    _validate(self)

  @property
  def external_victim(self) -> bool:
    """A victim the user brings (a file or an endpoint), not a zoo name."""
    return bool(self.victim_path or self.victim_url or self.victim_grpc)

  @property
  def strategies(self) -> list[str]:
    return self.query_strategy.split(',')


def _validate(cfg: StealConfig) -> None:
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal import uq  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks import QUERY_STRATEGIES  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks.active import round_sizes  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses import parse_output  # pylint: disable=g-import-not-at-top
  parse_output(cfg.output)
  for s in cfg.strategies:
    if s not in QUERY_STRATEGIES:
      raise UnknownNameError('query_strategy', f': unknown query strategy '
                             f'{s!r}; valid: {", ".join(QUERY_STRATEGIES)}.')
    if s != 'random' and cfg.rounds < 2:
      raise ConfigError('query_strategy', f'={s} picks with the current '
                        'student, so it needs {rounds} of 2 or more (a '
                        'random seed set first).')
  if cfg.round_schedule:
    # its order checked now, before a victim is trained or a budget capped
    round_sizes(cfg.round_schedule[-1], len(cfg.round_schedule),
                schedule=cfg.round_schedule)
  if not cfg.round_epochs > 0:
    raise ConfigError('round_epochs', f'must be above 0, got '
                      f'{cfg.round_epochs}.')
  if cfg.round_candidates < 0:
    raise ConfigError('round_candidates', 'must be 0 (the whole pool) or '
                      f'positive, got {cfg.round_candidates}.')
  if cfg.warm_start and cfg.rounds < 2:
    raise ConfigError('warm_start', "starts each round's student from the "
                      "round before's; add {rounds} (2 or more) or "
                      '{round_schedule}.')
  if cfg.round_epochs != 1.0 and cfg.rounds < 2:
    raise ConfigError('round_epochs', 'applies to the students of a '
                      'round-based run; add {rounds} (2 or more) or '
                      '{round_schedule}.')
  for b in cfg.budgets:
    if b < 1:
      raise ConfigError('budgets', f': the query budget must be at least 1, '
                        f'got {b}.')
  if cfg.datafree and cfg.query_data != 'datafree':
    raise ConfigError('datafree', 'sets the data-free loop; add '
                      '{query_data}=datafree.')
  if cfg.query_data == 'datafree':
    from modelsteal.experiments import datafree  # pylint: disable=g-import-not-at-top
    if cfg.rounds > 1 or cfg.query_strategy != 'random':
      raise ConfigError('query_data', '=datafree makes its own queries; '
                        'leave {rounds}, {round_schedule} and '
                        '{query_strategy} out.')
    datafree.config(cfg)  # its own fields' errors, now
  given = [f for f in ('victim_path', 'victim_url', 'victim_grpc')
           if getattr(cfg, f)]
  if len(given) > 1:
    raise ConfigError(given[0], 'or ' + ' or '.join(
        '{%s}' % f for f in given[1:]) + ': pass one victim, not several.')
  for field in given:
    if getattr(cfg, field) and not cfg.dataset:
      raise ConfigError(field, 'needs {dataset}: the data the victim '
                        'classifies.')
  spec = None
  if not cfg.external_victim:
    from modelsteal import victims  # pylint: disable=g-import-not-at-top
    spec = victims.get_victim(cfg.victim)
  students = list(cfg.students) or list(spec.students if spec else ())
  if cfg.warm_start and students and uq.is_uq_spec(students[0]):
    raise ConfigError('warm_start', 'trains plain students further; the '
                      f'first {{students}} entry is the UQ student '
                      f'{students[0]!r}.')
  for s in students:
    if uq.is_uq_spec(s):
      uq.parse_spec(s)  # raises a clear error on a bad spec
    elif s not in models.ARCHITECTURES:
      raise UnknownNameError(
          'students', f': unknown student architecture {s!r}; valid: '
          f'{", ".join(sorted(models.ARCHITECTURES))}, or a UQ student '
          f'METHOD:ARCH (methods: {", ".join(sorted(uq.UQ_METHODS))}).')


def victim_path_name(path: str) -> str:
  """A run-name part for `victim_path`: the last path part that names the
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


@dataclasses.dataclass(frozen=True)
class Victim:
  """The victim of an experiment, ready to be asked."""
  ref: VictimRef
  name: str  # for run names and tables
  arch: str  # 'unknown' for a user's model or an endpoint


@dataclasses.dataclass
class StudentResult:
  """One trained and scored student: a results row and where it lies."""
  arch: str
  budget: int
  output: str
  queries_paid: int
  metrics: dict  # evaluate_model's properties (accuracy, fidelity, ...)
  normalized_accuracy: float
  train_s: float
  saved_model: str
  model_dir: str  # the Model artifact
  data: str = ''  # the dataset's label: its name, or its note (a JPEG copy)

  def row(self) -> dict:
    return {'model': f'{self.arch}@{self.budget}', 'role': 'student',
            'arch': self.arch, 'budget': self.budget, 'output': self.output,
            'queries_paid': self.queries_paid, **self.metrics,
            'normalized_accuracy': self.normalized_accuracy,
            'train_s': self.train_s, 'saved_model': self.saved_model,
            'data': self.data}


@dataclasses.dataclass
class Prepared:
  """What every stealing experiment starts from (see `prepare`)."""
  wd: str
  dataset: Any  # modelsteal.data.Dataset
  splits: Any  # Examples: victim / pool / heldout / test
  query_splits: Any  # Examples the queries come from (pool, heldout)
  victim: Victim
  victim_row: dict
  students: list[str]
  budgets: list[int]
  steps: Steps


def load_data(cfg: StealConfig, wd: str, steps: Steps, name: str):
  """(dataset, splits): the victim's dataset split into the victim's half,
  the attacker's pool and held-out images, and test."""
  from modelsteal import victims  # pylint: disable=g-import-not-at-top
  dataset_name = cfg.dataset or victims.get_victim(cfg.victim).dataset
  dataset, splits, split_run = load_and_split(dataset_name, cfg.data_dir,
                                              cfg.seed, cfg.smoke, wd)
  print(f'[{name}] data: {dataset.name} from {dataset.source}: '
        f'{len(dataset.x_train)} train / {len(dataset.x_test)} test, '
        f'shape {dataset.shape}', flush=True)
  steps.record('split_data', split_run)
  return dataset, splits


def query_source(cfg: StealConfig, dataset, splits, wd: str, steps: Steps,
                 name: str):
  """The Examples the queries come from (`pool`, `heldout`): the attacker's
  half of the data, another dataset, or a generator's images."""
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  from modelsteal import victims  # pylint: disable=g-import-not-at-top
  if (cfg.query_data or '').startswith('generator:'):
    from modelsteal.experiments import synthetic  # pylint: disable=g-import-not-at-top
    return synthetic.generated_queries(cfg, dataset, wd, steps, name)
  own = cfg.dataset or (None if cfg.external_victim else
                        victims.get_victim(cfg.victim).dataset)
  if not cfg.query_data or cfg.query_data == own:
    return splits
  qds = data_lib.load_dataset(cfg.query_data, cfg.data_dir)
  if cfg.smoke:
    qds = shrink(qds)
  if qds.shape != dataset.shape:
    raise data_lib.DataError(
        f'query_data {qds.name} has images of shape {qds.shape}, the victim '
        f'takes {dataset.shape}.')
  qsplit = data_lib.split_data.run(
      wd, examples=data_lib.import_dataset(qds, wd), seed=cfg.seed,
      victim_fraction=0.0, heldout_fraction=0.1, min_size=dataset.num_classes)
  steps.record(f'split_data (queries: {qds.name})', qsplit)
  return qsplit['splits']


def open_victim(cfg: StealConfig, dataset, splits, wd: str, steps: Steps,
                name: str) -> Victim:
  """The zoo victim trained on its half (cached), a user's model, or an
  endpoint, checked against the data."""
  from modelsteal import victims  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks import train_model  # pylint: disable=g-import-not-at-top
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.training import for_this_machine, recipe_params  # pylint: disable=g-import-not-at-top
  if cfg.victim_url:
    return _rest_victim(cfg.victim_url, dataset, name)
  if cfg.victim_grpc:
    return _grpc_victim(cfg.victim_grpc, dataset, name)
  if cfg.victim_path:
    ref = victims.victim_ref_from_path(cfg.victim_path)
    load_predictor(ref.location, trusted=True).check_input(dataset.shape)
    return Victim(ref, victim_path_name(cfg.victim_path), 'unknown')
  spec = victims.get_victim(cfg.victim)
  recipe = recipe_params(for_this_machine(spec.recipe))
  if cfg.smoke:
    recipe['epochs'] = 1
    if recipe.get('warmup_epochs'):
      recipe['warmup_epochs'] = 0
  vres = train_model.run(wd, examples=splits, arch=spec.arch, recipe=recipe,
                         split='victim', targets='y', seed=cfg.seed)
  steps.record(f'train victim {cfg.victim}', vres)
  ref = victims.victim_ref_from_model(vres['model'])
  acc = vres['model'].properties.get('test_accuracy')
  print(f'[{name}] victim {cfg.victim}: test accuracy {100 * acc:.2f}% '
        f'(SavedModel {ref.location})', flush=True)
  return Victim(ref, cfg.victim, spec.arch)


def _rest_victim(url: str, dataset, name: str) -> Victim:
  from modelsteal.export import check_input_shape  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle.rest import victim_ref_from_url  # pylint: disable=g-import-not-at-top
  ref = VictimRef.from_param(victim_ref_from_url(
      url, num_classes=dataset.num_classes))
  check_input_shape(ref.details.get('input_shape'), dataset.shape,
                    ref.location)
  label = ref.location.split('/v1/models/', 1)[1].replace('/versions/', '@v')
  print(f'[{name}] victim {ref.location}: version {ref.details["version"]}, '
        f'{ref.details["num_classes"]} classes (fingerprint '
        f'{ref.fingerprint[:12]})', flush=True)
  return Victim(ref, label, 'unknown')


def _grpc_victim(address: str, dataset, name: str) -> Victim:
  from modelsteal.export import check_input_shape  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle.grpc_oracle import victim_ref_from_address  # pylint: disable=g-import-not-at-top
  ref = VictimRef.from_param(victim_ref_from_address(
      address, num_classes=dataset.num_classes))
  check_input_shape(ref.details.get('input_shape'), dataset.shape,
                    ref.location)
  label = 'grpc:' + ref.location.split('/', 1)[1].replace('/versions/', '@v')
  print(f'[{name}] victim {ref.location} (gRPC): version '
        f'{ref.details["version"]}, {ref.details["num_classes"]} classes '
        f'(fingerprint {ref.fingerprint[:12]})', flush=True)
  return Victim(ref, label, 'unknown')


def score_victim(victim: Victim, splits, query_splits, wd: str,
                 steps: Steps, data: str = '') -> dict:
  """The victim's results row (accuracy on test, on the attacker's data)."""
  from modelsteal.attacks import evaluate_model  # pylint: disable=g-import-not-at-top
  vev = evaluate_model.run(wd, splits=splits, query_splits=query_splits,
                           model=victim.ref, victim=victim.ref)
  steps.record('evaluate victim', vev)
  return {'model': victim.name, 'role': 'victim', 'arch': victim.arch,
          'budget': 0, 'output': 'probs', 'queries_paid': 0,
          **vev['evaluation'].properties, 'normalized_accuracy': 1.0,
          'train_s': None, 'saved_model': victim.ref.location, 'data': data}


def default_students(cfg: StealConfig, dataset) -> list[str]:
  from modelsteal import victims  # pylint: disable=g-import-not-at-top
  if cfg.students:
    return list(cfg.students)
  if not cfg.external_victim:
    return list(victims.get_victim(cfg.victim).students)
  return (['mnist_cnn', 'mnist_mlp'] if dataset.shape[-1] == 1
          else ['cifar10_cnn', 'lenet5'])


def prepare(cfg: StealConfig, name: str = 'steal') -> Prepared:
  """Loads and splits the data, opens the queries' source, trains (or
  reuses) the victim and scores it, and fits the budgets to the pool."""
  from modelsteal import distribute  # pylint: disable=g-import-not-at-top
  distribute.use(cfg.distribute)
  # Non-chief workers of a multi-worker run write to a private directory.
  wd = distribute.worker_workdir(os.path.abspath(cfg.workdir))
  steps = Steps(name)
  dataset, splits = load_data(cfg, wd, steps, name)
  query_splits = query_source(cfg, dataset, splits, wd, steps, name)
  victim = open_victim(cfg, dataset, splits, wd, steps, name)
  budgets = fit_budgets(
      cfg.budgets, query_splits.properties['sizes']['pool'],
      chosen=cfg.budget_chosen, name=name,
      stand_in=(cfg.smoke or query_splits.properties.get('name') in
                ('offline_mnist', 'synthetic_cifar10')))
  victim_row = score_victim(victim, splits, query_splits, wd, steps,
                            data=dataset.label)
  return Prepared(wd, dataset, splits, query_splits, victim, victim_row,
                  default_students(cfg, dataset), budgets, steps)


def label(p: Prepared, cfg: StealConfig, budget: int):
  """The labeled queries of one budget (cached: never paid twice)."""
  from modelsteal.attacks import label_queries  # pylint: disable=g-import-not-at-top
  lab = label_queries.run(p.wd, splits=p.query_splits, victim=p.victim.ref,
                          output=cfg.output, budget=budget,
                          strategy=cfg.query_strategy, seed=cfg.seed)
  p.steps.record(f'label_queries budget={budget} output={cfg.output}', lab)
  return lab['labeled']


def train_student(p: Prepared, cfg: StealConfig, labeled, arch: str,
                  budget: int, probe_every: int = 50,
                  epochs_scale: float = 1.0, init=None,
                  serving: bool = True) -> StudentResult:
  """Trains one student (plain architecture or UQ spec) on the answers and
  scores it.

  Args:
    epochs_scale: multiplies the recipe's epochs (at least one epoch).
    init: a plain student's Model artifact to start from.
    serving: False skips a plain student's SavedModel (`saved_model` is then
      its `.keras` file).
  """
  from modelsteal import uq  # pylint: disable=g-import-not-at-top
  from modelsteal import victims  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks import evaluate_model, finetune_model, train_model  # pylint: disable=g-import-not-at-top
  from modelsteal.uq.components import train_uq_model  # pylint: disable=g-import-not-at-top
  base = uq.parse_spec(arch).archs[0] if uq.is_uq_spec(arch) else arch
  recipe = recipes.scaled(
      recipes.student_recipe(base, budget, cfg.smoke, cfg.student_recipe,
                             channels=p.dataset.shape[-1]), epochs_scale)
  if uq.is_uq_spec(arch):
    arch = str(uq.parse_spec(arch))
    sres = train_uq_model.run(p.wd, examples=labeled, probe=p.splits,
                              spec=arch, recipe=recipe, targets='answers',
                              seed=cfg.seed, probe_every=probe_every)
  elif init is not None:
    sres = finetune_model.run(p.wd, examples=labeled, init=init,
                              recipe=recipe, split='train', targets='answers',
                              seed=cfg.seed, serving=serving)
  else:
    sres = train_model.run(p.wd, examples=labeled, arch=arch, recipe=recipe,
                           split='train', targets='answers', seed=cfg.seed,
                           serving=serving)
  p.steps.record(f'train student {arch} budget={budget}', sres)
  sref = victims.victim_ref_from_model(sres['model'])
  sev = evaluate_model.run(p.wd, splits=p.splits, query_splits=p.query_splits,
                           model=sref, victim=p.victim.ref)
  p.steps.record(f'evaluate student {arch} budget={budget}', sev)
  m = sev['evaluation'].properties
  return StudentResult(
      arch=arch, budget=budget, output=cfg.output,
      queries_paid=labeled.properties['queries_paid'], metrics=m,
      normalized_accuracy=m['accuracy'] / p.victim_row['accuracy'],
      train_s=round(sres.duration_s, 1), saved_model=sref.location,
      model_dir=sres['model'].uri, data=p.dataset.label)
