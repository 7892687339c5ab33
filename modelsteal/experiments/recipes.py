"""Students' training recipes: the default rule (epochs by answer count)
and the user's overrides (`StealConfig.student_recipe`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from modelsteal.errors import ConfigError


def parse_recipe_overrides(items) -> tuple[tuple[str, Any], ...]:
  """`['batch_size=128', 'epochs=40']` -> typed (field, value) pairs for
  `StealConfig.student_recipe`.

  >>> parse_recipe_overrides(['batch_size=128', 'augment=false'])
  (('augment', False), ('batch_size', 128))
  """
  from modelsteal.training import TrainConfig  # pylint: disable=g-import-not-at-top
  fields = {f.name: f for f in dataclasses.fields(TrainConfig)
            if f.name != 'jit_compile'}
  defaults = TrainConfig()
  out = {}

  def bad(message):
    return ConfigError('student_recipe', f': {message}')

  for item in items:
    key, sep, text = item.partition('=')
    key, text = key.strip(), text.strip()
    if not sep or not key or not text:
      raise bad(f'write KEY=VALUE, got {item!r}.')
    if key not in fields:
      raise bad(f'unknown field {key!r}; valid: {", ".join(fields)}.')
    kind = type(getattr(defaults, key))
    try:
      if kind is bool:
        if text.lower() not in ('true', 'false', '1', '0'):
          raise ValueError(text)
        value = text.lower() in ('true', '1')
      else:
        value = kind(text)
    except ValueError:
      raise bad(f'{key} takes {"an" if kind is int else "a"} '
                f'{kind.__name__}, got {text!r}.') from None
    if key in ('epochs', 'batch_size', 'steps_per_execution') and value < 1:
      raise bad(f'{key} must be at least 1, got {value}.')
    if key == 'learning_rate' and not value > 0:
      raise bad(f'{key} must be above 0, got {value}.')
    if key == 'schedule' and value not in ('cosine', 'constant'):
      raise bad(f"schedule is 'cosine' or 'constant', got {value!r}.")
    out[key] = value
  return tuple(sorted(out.items()))


def student_recipe(arch: str, n: int, smoke: bool, overrides=(),
                   channels: int = 1) -> dict:
  """A student's training recipe for `n` answers: epochs scale inversely
  with the data (within [12, 60]; [24, 60] on colour images) so that small
  budgets still converge.

  Convolutional students augment: small translations on grey digits,
  CIFAR's pad-4 crops and flips on colour images (`channels` 3).
  `overrides`: (field, value) pairs (`parse_recipe_overrides`); a smoke run
  keeps its one epoch.
  """
  from modelsteal.models import FAMILIES  # pylint: disable=g-import-not-at-top
  from modelsteal.training import recipe_params, TrainConfig  # pylint: disable=g-import-not-at-top
  # Colour images need more passes than digits (CIFAR-10 students: 24 to
  # 60 epochs; BUILD_NOTES.md, "Stealing on CIFAR-10").
  scale, floor = (300_000, 24) if channels == 3 else (120_000, 12)
  epochs = 1 if smoke else int(min(60, max(floor, round(scale / max(n, 1)))))
  conv = FAMILIES.get(arch) in ('cnn', 'resnet')
  augment = ('crop_flip' if conv and channels == 3 else
             FAMILIES.get(arch) == 'cnn')
  recipe = {'epochs': epochs, 'batch_size': 64 if n < 5000 else 128,
            'learning_rate': 2e-3, 'augment': augment,
            'weight_decay': 0.0, 'label_smoothing': 0.0}
  if not overrides:
    return recipe  # the same parameters: runs cached before stay valid
  recipe.update({k: v for k, v in overrides if not (smoke and k == 'epochs')})
  return recipe_params(TrainConfig(**recipe))


def recipe_tag(overrides) -> str:
  """A run-name part for `student_recipe` ('' when there is none)."""
  return '_'.join(f'{k}{v:g}' if isinstance(v, float) else f'{k}{v}'
                  for k, v in overrides)


def scaled(recipe: dict, epochs_scale: float) -> dict:
  """The recipe with its epochs multiplied by `epochs_scale` (at least 1)."""
  if epochs_scale == 1.0:
    return recipe  # the same parameters: runs cached before stay valid
  return {**recipe, 'epochs': max(1, round(recipe['epochs'] * epochs_scale))}
