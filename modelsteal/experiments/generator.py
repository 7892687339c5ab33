"""The built-in class-conditional generator (a conditional VAE): trained on
the attacker's pool only (never the victim's half, the test split or the
attacker's held-out images), exported as a SavedModel with a
`generate(label, noise)` signature; and `generator_ref`, which turns a
generator name, path or URL into the reference every generator user takes.

    from modelsteal.experiments import generator
    generator.run(generator.TrainGeneratorConfig(dataset='mnist'))
"""

from __future__ import annotations

import dataclasses
import os
import time

from modelsteal.errors import ConfigError
from modelsteal.errors import UnknownNameError
from modelsteal.experiments.common import load_and_split

# The built-in generator's design (BUILD_NOTES.md, "Generated queries and
# synthetic data").
DECODER = 'mlp'
LATENT = 'fitted'


@dataclasses.dataclass(frozen=True)
class TrainGeneratorConfig:
  """The built-in generator's training; validated at construction."""
  dataset: str = 'mnist'
  data_dir: str | None = None
  epochs: int = 30
  latent_dim: int = 16
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False
  decoder: str = DECODER
  latent: str = LATENT

  def __post_init__(self):
    if self.epochs < 1:
      raise ConfigError('epochs', f'must be at least 1, got '
                        f'{self.epochs}.')
    if self.latent_dim < 1:
      raise ConfigError('latent_dim', f'must be at least 1, got '
                        f'{self.latent_dim}.')
    if self.decoder not in ('mlp', 'conv'):
      raise UnknownNameError('decoder', f': unknown decoder '
                             f'{self.decoder!r}; valid: mlp, conv.')
    if self.latent not in ('prior', 'fitted'):
      raise UnknownNameError('latent', f': unknown latent sampling '
                             f'{self.latent!r}; valid: prior, fitted.')


def train(cfg: TrainGeneratorConfig, name: str = 'train_generator'):
  """Trains (or reuses) the generator; returns (RunResult, dataset)."""
  from modelsteal.synthetic import train_generator  # pylint: disable=g-import-not-at-top
  wd = os.path.abspath(cfg.workdir)
  dataset, splits, _ = load_and_split(cfg.dataset, cfg.data_dir, cfg.seed,
                                      cfg.smoke, wd)
  smoke = dict(epochs=1, hidden=[64], classifier_epochs=1) if cfg.smoke else {}
  res = train_generator.run(
      wd, examples=splits, split='pool',
      **{'epochs': cfg.epochs, 'latent_dim': cfg.latent_dim,
         'hidden': [512, 256], 'seed': cfg.seed, 'decoder': cfg.decoder,
         'latent': cfg.latent, **smoke})
  p = res['generator'].properties
  note = 'reused' if res.reused else f'{res.duration_s:.1f}s'
  print(f'[{name}] generator on {dataset.name} ({p["train_size"]} images of '
        f'the attacker\'s pool): {note}', flush=True)
  return res, dataset


def generator_ref(spec: str, *, workdir: str, dataset: str | None,
                  data_dir=None, seed: int = 0, smoke: bool = False,
                  epochs: int = 30, latent_dim: int = 16,
                  rest: dict | None = None, name: str = 'synthetic',
                  decoder: str = DECODER, latent: str = LATENT) -> dict:
  """The generator reference for `--generator=NAME_OR_PATH_OR_URL`.

  NAME: a built-in generator (`cvae`: trained here, or reused, on the
  attacker's pool of `dataset`); PATH: a generator SavedModel; URL: a
  text-to-image service (`rest` holds the adapter options of
  `modelsteal.synthetic.rest.RestGenerator`).

  Raises:
    UnknownNameError: an unknown name; GeneratorError: a path that is not a
    generator; ConfigError: a malformed URL.
  """
  from modelsteal import synthetic  # pylint: disable=g-import-not-at-top
  spec = (spec or '').strip()
  if not spec:
    raise ConfigError('generator', 'is required: a built-in name (cvae), a '
                      'generator SavedModel directory, or an http(s) URL.')
  if spec.startswith(('http://', 'https://')):
    from modelsteal.synthetic.rest import rest_ref  # pylint: disable=g-import-not-at-top
    return rest_ref(spec, **(rest or {}))
  if spec in synthetic.BUILTIN_GENERATORS:
    res, _ = train(TrainGeneratorConfig(
        dataset=dataset or 'mnist', data_dir=data_dir, epochs=epochs,
        latent_dim=latent_dim, workdir=workdir, seed=seed, smoke=smoke,
        decoder=decoder, latent=latent),
                   name=name)
    return {**synthetic.generator_ref_from_model(res['generator']),
            'name': spec}
  if os.path.exists(spec):
    return {**synthetic.generator_ref_from_path(spec),
            'name': os.path.basename(os.path.normpath(spec))}
  raise UnknownNameError(
      '', f'unknown generator {spec!r}: not a built-in name '
      f'({", ".join(synthetic.BUILTIN_GENERATORS)}), not an existing path, '
      'not an http(s) URL. Train one with python -m '
      'pipelines.train_generator, or pass a generator SavedModel directory.')


def sample_grid(gen, path: str, per_class: int = 10, seed: int = 0,
                title: str = '') -> str:
  """A PNG grid of `per_class` samples of every class of `gen`."""
  from modelsteal.synthetic.plots import plot_sample_grid  # pylint: disable=g-import-not-at-top
  images = [gen.generate(c, per_class, seed=seed)
            for c in range(len(gen.class_names))]
  return plot_sample_grid(images, gen.class_names, path, title=title)


def run(cfg: TrainGeneratorConfig):
  """Trains (or reuses) the generator, prints where it is and how fast it
  samples, draws a sample grid; returns the `train_generator` RunResult."""
  from modelsteal.synthetic import SavedModelGenerator  # pylint: disable=g-import-not-at-top
  from modelsteal.synthetic.components import saved_model_path  # pylint: disable=g-import-not-at-top
  started = time.time()
  res, dataset = train(cfg)
  p = res['generator'].properties
  path = saved_model_path(res['generator'])
  gen = SavedModelGenerator(path)
  grid = sample_grid(gen, os.path.join(res.execution_dir, 'samples.png'),
                     seed=cfg.seed, title=f'conditional VAE on {dataset.name} '
                     f'({p["epochs"]} epochs)')
  print(f'training time  {p["train_s"]:.1f}s ({p["epochs"]} epochs, '
        f'{p["train_size"]} images)\n'
        f'sampling rate  {p["samples_per_s"]:,.0f} images/s\n'
        f'classes        {", ".join(p["class_names"])}\n'
        f'samples        {grid}\n'
        f'SavedModel     {path}\n'
        f'use it         python -m pipelines.synthetic --generator={path} '
        f'--dataset={cfg.dataset}\n'
        f'serve it       python -m pipelines.serve --model_dir='
        f'{os.path.dirname(path)} --model_name=generator\n'
        f'total time {time.time() - started:.1f}s', flush=True)
  return res


