"""modelsteal.errors: rendering with field labels, placeholders, the bases."""

import pickle

import pytest

from modelsteal import errors
from modelsteal.errors import ConfigError, UnknownNameError, UserError

FLAGS = {'budgets': '--budget', 'seed_size': '--seed_size',
         'victim_path': '--victim_path'}


def test_leading_field_is_the_subject():
  e = ConfigError('rounds', 'must be at least 1, got 0.')
  assert str(e) == 'rounds must be at least 1, got 0.'
  assert e.render(lambda f: '--' + f) == '--rounds must be at least 1, got 0.'
  assert e.field == 'rounds'
  assert e.message == 'must be at least 1, got 0.'


def test_colon_message_joins_without_a_space():
  e = ConfigError('budgets', ': the query budget must be at least 1, got 0.')
  assert str(e) == 'budgets: the query budget must be at least 1, got 0.'
  assert e.render(FLAGS.get) == (
      '--budget: the query budget must be at least 1, got 0.')


def test_placeholders_render_with_the_labels():
  e = ConfigError('seed_size', 'must be in [1, {budgets}={budget}], got 7.'
                  .replace('{budget}', '5'))
  assert str(e) == 'seed_size must be in [1, budgets=5], got 7.'
  assert e.render(FLAGS.get) == '--seed_size must be in [1, --budget=5], got 7.'


def test_no_leading_field():
  e = UnknownNameError('', "unknown victim 'x'. Or pass {victim_path}.")
  assert str(e) == "unknown victim 'x'. Or pass victim_path."
  assert e.render(FLAGS.get) == "unknown victim 'x'. Or pass --victim_path."


def test_unknown_label_falls_back_to_the_field():
  e = ConfigError('query_strategy', 'conflicts with {rounds}.')
  assert e.render(FLAGS.get) == 'query_strategy conflicts with rounds.'


def test_other_braces_are_left_alone():
  msg = "got {'a': {'b': 1}}, {0}, { }, {Upper}, {} and {{label}}."
  e = ConfigError('', msg)
  assert str(e) == "got {'a': {'b': 1}}, {0}, { }, {Upper}, {} and {label}."
  assert e.render(lambda f: '--' + f) == str(e)


def test_literal_keeps_a_users_braces():
  prompt = 'a photo of {label} on {background}'
  e = ConfigError('prompt', f'{errors.literal(repr(prompt))} needs {{seed}}.')
  assert e.render(lambda f: '--' + f) == (
      "--prompt 'a photo of {label} on {background}' needs --seed.")


def test_bases_and_isinstance():
  e = ConfigError('rounds', 'bad.')
  assert isinstance(e, UserError) and isinstance(e, ValueError)
  assert not isinstance(e, KeyError)
  k = UnknownNameError('victim', "unknown victim 'x'.")
  assert isinstance(k, UserError)
  assert isinstance(k, KeyError) and isinstance(k, ValueError)
  assert isinstance(k, ConfigError)
  assert str(k) == "victim unknown victim 'x'."  # not quoted like a KeyError
  assert k.args[0] == str(k)
  with pytest.raises(KeyError, match='unknown victim'):
    raise k


def test_check_and_pickle():
  errors.check(True, 'rounds', 'never raised')
  with pytest.raises(ConfigError, match=r'^rounds must be positive') as info:
    errors.check(False, 'rounds', 'must be positive.')
  back = pickle.loads(pickle.dumps(info.value))
  assert type(back) is ConfigError
  assert (back.field, back.message) == ('rounds', 'must be positive.')
  u = pickle.loads(pickle.dumps(UnknownNameError('a', 'b {c}')))
  assert type(u) is UnknownNameError and u.render(lambda f: f.upper()) == 'A b C'


def test_plain_user_error_render():
  e = UserError('the endpoint did not answer.')
  assert e.render(FLAGS.get) == str(e) == 'the endpoint did not answer.'


@pytest.mark.parametrize('cls, builtin', [
    ('modelsteal.data.sources.DataError', ValueError),
    ('modelsteal.data.sources.DatasetUnavailableError', RuntimeError),
    ('modelsteal.export.ModelLoadError', ValueError),
    ('modelsteal.oracle.base.BudgetExceededError', RuntimeError),
    ('modelsteal.oracle.base.OracleError', RuntimeError),
    ('modelsteal.artifacts.ArtifactError', RuntimeError),
    ('modelsteal.synthetic.base.GeneratorError', ValueError),
    ('modelsteal.uq.base.UQSpecError', ValueError),
    ('modelsteal.attacks.strategies.StrategyError', ValueError),
    ('modelsteal.distribute.DistributeError', ValueError),
    ('modelsteal.serving.registry.ServableLoadError', ValueError),
])
def test_library_errors_are_user_errors(cls, builtin):
  import importlib  # pylint: disable=g-import-not-at-top
  module, name = cls.rsplit('.', 1)
  err = getattr(importlib.import_module(module), name)
  assert issubclass(err, UserError) and issubclass(err, builtin)


def test_equals_message_joins_without_a_space():
  e = ConfigError('query_strategy', '=margin needs {rounds} of 2 or more.')
  assert str(e) == 'query_strategy=margin needs rounds of 2 or more.'
  assert e.render(lambda f: '--' + f) == (
      '--query_strategy=margin needs --rounds of 2 or more.')
