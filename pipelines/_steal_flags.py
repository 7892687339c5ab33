"""The stealing flags, shared by `pipelines.steal` and `pipelines.uq` (a
helper module, not a pipeline), and the `StealConfig` they make."""

from __future__ import annotations

from absl import flags

from pipelines import common

_VICTIM = flags.DEFINE_string('victim', 'mnist_cnn', 'Victim zoo name.')
_VICTIM_PATH = flags.DEFINE_string(
    'victim_path', None, 'A .keras file or SavedModel to steal instead of a '
    'zoo victim (needs --dataset). Opened as your own model: a .keras file '
    'loads with Keras safe mode off (its Lambda layers run), and a '
    'SavedModel is a program; name only a model you trust.')
_VICTIM_URL = flags.DEFINE_string(
    'victim_url', None, 'A TF-Serving-style REST endpoint to steal, '
    'http://HOST:PORT/v1/models/NAME[/versions/N] (needs --dataset).')
_DATAFREE = flags.DEFINE_list(
    'datafree', [], 'With --query_data=datafree: the loop\'s settings as '
    'FIELD=VALUE, e.g. directions=10,loss=kl,generator=maze (MAZE\'s '
    'choices); fields: modelsteal.attacks.datafree.DataFreeConfig.')
_VICTIM_GRPC = flags.DEFINE_string(
    'victim_grpc', None, "TF Serving's gRPC PredictionService to steal, "
    'HOST:PORT/NAME[/versions/N], e.g. 127.0.0.1:8500/mnist (needs --dataset).')
_QUERY_DATA = flags.DEFINE_string(
    'query_data', None, "Attacker's query dataset; default: the attacker's "
    'half of --dataset. datafree: no data, a generator learns what to ask '
    '(DFME; --datafree sets it).')
_OUTPUT = flags.DEFINE_string(
    'output', 'label', 'What the victim answers: probs, label, topk:K, '
    'rounded:D (and the defences cutoff:T, noise:S, reverse_sigmoid:B,G, '
    'misinfo:TAU[,NU], mad:EPS[,argmax]).')
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
    'learning rate 2e-3, translations for CNNs '
    '(modelsteal.experiments.steal.student_recipe).')
_STUDENTS = flags.DEFINE_list(
    'students', [], "Student architectures; default: the victim's plus one "
    'of another family. A UQ student is METHOD:ARCH[+ARCH][:key=value], '
    'METHOD one of ensemble, mcdropout, swag, batchensemble, bbb.')


def flag_names() -> dict[str, str]:
  """StealConfig fields whose flag is not `--FIELD`: the budget's field is
  `budgets`, typed as whichever budget flag the user passed."""
  if _SCHEDULE.value:
    return {'budgets': '--round_schedule'}
  return {'budgets': '--budgets' if _BUDGETS.value else '--budget'}


def _integers(field: str, values) -> tuple[int, ...]:
  from modelsteal.errors import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    return tuple(int(v) for v in values)
  except ValueError as e:
    raise ConfigError(field, f'must be integers ({e}).') from None


def steal_config():
  """The `StealConfig` of the flags (validated as it is made)."""
  from modelsteal.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from modelsteal.experiments.steal import StealConfig, parse_recipe_overrides  # pylint: disable=g-import-not-at-top
  budget_default = flags.FLAGS['budget'].using_default_value
  budgets = (_integers('budgets', _BUDGETS.value) if _BUDGETS.value
             else (_BUDGET.value,))
  chosen = bool(_BUDGETS.value) or not budget_default
  schedule = _integers('round_schedule', _SCHEDULE.value)
  rounds = _ROUNDS.value
  if schedule:
    from modelsteal.attacks.active import round_sizes  # pylint: disable=g-import-not-at-top
    # its order first: the budget comparison below assumes an ordered one
    round_sizes(schedule[-1], len(schedule), schedule=schedule)
    if chosen and budgets != (schedule[-1],):
      raise ConfigError('round_schedule', f'ends at {schedule[-1]}, which is '
                        'the budget; leave --budget/--budgets out.')
    if not flags.FLAGS['rounds'].using_default_value and rounds != len(
        schedule):
      raise ConfigError('round_schedule', f'has {len(schedule)} rounds but '
                        f'{{rounds}}={rounds}; leave {{rounds}} out.')
    budgets, rounds, chosen = (schedule[-1],), len(schedule), True
  return StealConfig(
      victim=_VICTIM.value, victim_path=_VICTIM_PATH.value,
      victim_url=_VICTIM_URL.value, victim_grpc=_VICTIM_GRPC.value,
      dataset=common.DATASET.value,
      data_dir=common.DATA_DIR.value, query_data=_QUERY_DATA.value,
      output=_OUTPUT.value, budgets=budgets, budget_chosen=chosen,
      query_strategy=_STRATEGY.value, students=tuple(_STUDENTS.value),
      rounds=rounds, seed_size=_SEED_SIZE.value, round_schedule=schedule,
      round_epochs=_ROUND_EPOCHS.value,
      student_recipe=parse_recipe_overrides(_STUDENT_RECIPE.value),
      warm_start=_WARM_START.value, round_candidates=_ROUND_CANDIDATES.value,
      datafree=tuple(_DATAFREE.value),
      distribute=common.DISTRIBUTE.value, workdir=common.WORKDIR.value,
      seed=common.SEED.value, smoke=common.SMOKE.value)
