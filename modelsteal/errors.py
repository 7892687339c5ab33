"""The one family of errors a user can cause and fix.

A pipeline prints any `UserError` as one `NAME: error: ...` line and exits
with status 2; every other exception is a bug and keeps its traceback. The
library never knows flag names: a `ConfigError` names the config field
(`budgets`, `query_strategy`), and the pipeline that built the config from
flags says which flag that was (`pipelines.common.run_main`).

A `ConfigError`'s message may name other config fields as `{field}`
placeholders:

>>> e = ConfigError('seed_size', 'must be in [1, {budgets}], got 7.')
>>> str(e)
'seed_size must be in [1, budgets], got 7.'
>>> e.render(lambda name: '--' + name)
'--seed_size must be in [1, --budgets], got 7.'
>>> ConfigError('budgets', ': the query budget must be at least 1.').render(
...     {'budgets': '--budget'}.get)
'--budget: the query budget must be at least 1.'

Only `{identifier}` (lower case, digits, underscores) is a placeholder;
other braces (a dict's repr, `{0}`, `{ }`) stay as written, and `{{name}}`
stands for the literal text `{name}` (see `literal`).

Each error also derives from the builtin a caller would expect (`ValueError`
for a bad value, `KeyError` for an unknown name), so `except ValueError`
written against earlier versions keeps working.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

# `{{name}}` (a literal `{name}`) or `{name}` (a config field).
_PLACEHOLDER = re.compile(
    r'\{\{([a-z_][a-z0-9_]*)\}\}|\{([a-z_][a-z0-9_]*)\}')

LabelFor = Callable[[str], Optional[str]]


def _bare(name: str) -> str:
  return name


def literal(text: str) -> str:
  """`text` (a user's value) escaped so that no part of it reads as a
  placeholder: `{label}` in a prompt stays `{label}` when rendered."""
  return re.sub(r'\{([a-z_][a-z0-9_]*)\}', r'{{\1}}', str(text))


def substitute(message: str, label_for: LabelFor | None = None) -> str:
  """`message` with each `{field}` replaced by `label_for(field)` (the bare
  field name when `label_for` is None or returns None or '')."""
  label_for = label_for or _bare

  def one(m: re.Match) -> str:
    if m.group(1) is not None:
      return '{' + m.group(1) + '}'
    return label_for(m.group(2)) or m.group(2)

  return _PLACEHOLDER.sub(one, message)


class UserError(Exception):
  """A mistake the user can fix: bad name, path, shape, budget, endpoint.

  Its message may name config fields as `{field}` placeholders too (`no TPU
  found; pass {distribute}=default`): `str()` shows the bare field name,
  `render(label_for)` the label (a pipeline: the flag). Text from outside
  (a server's answer, another exception) goes in through `literal`.
  """

  def render(self, label_for: LabelFor | None = None) -> str:
    """The one-line message a pipeline prints, each `{field}` placeholder
    shown as `label_for(field)` (see `ConfigError.render`)."""
    if len(self.args) == 1 and isinstance(self.args[0], str):
      return substitute(self.args[0], label_for)
    return super().__str__()

  def __str__(self) -> str:
    return self.render()


class ConfigError(UserError, ValueError):
  """A config field holds a bad value.

  Attributes:
    field: the config field's name (`budgets`), or '' when the mistake is
      not one field's (two fields that contradict each other name the first).
    message: what is wrong and what to do, with the field as the subject
      left out: `ConfigError('rounds', 'must be at least 1, got 0.')` reads
      `rounds must be at least 1, got 0.`. A message that starts with ':' (or
      '=') is joined without a space (`budgets: the query budget ...`,
      `query_strategy=margin needs ...`). Other config fields appear as
      `{field}` placeholders.
  """

  def __init__(self, field: str, message: str):
    self.field = field
    self.message = message
    # args[0] is the bare rendering: code that reads `e.args[0]` (as for a
    # KeyError) gets the message, not the field.
    super().__init__(self.render())

  def __reduce__(self):  # pickles (a worker process's error) as it was made
    return type(self), (self.field, self.message)

  def render(self, label_for: LabelFor | None = None) -> str:
    """The message with the leading field and each `{field}` placeholder
    shown as `label_for(field)` (e.g. the flag, `'--budget'`); with no
    `label_for` (or where it returns None or ''), as the bare field name."""
    text = substitute(self.message, label_for)
    if not self.field:
      return text
    label = (label_for or _bare)(self.field) or self.field
    return f'{label}{text}' if text.startswith((':', '=')) else (
        f'{label} {text}')

  def __str__(self) -> str:
    return self.render()


class UnknownNameError(ConfigError, KeyError):
  """A config field names something that does not exist (a victim, an
  architecture, a strategy); the message lists the valid names."""

  def __str__(self) -> str:  # KeyError would quote the message
    return self.render()


def check(condition: bool, field: str, message: str) -> None:
  """Raises `ConfigError(field, message)` unless `condition` holds."""
  if not condition:
    raise ConfigError(field, message)
