r"""Train the built-in class-conditional generator (a conditional VAE).

    python -m pipelines.train_generator --dataset=mnist

Splits the dataset exactly as `pipelines.steal` does (same `--seed`, the
victim's half set aside) and trains a conditional VAE with Bernoulli pixels
on the attacker's `pool` split only: never on the victim's half, never on
the test split classifiers are scored on, nor on the attacker's held-out
images. Exports it as a SavedModel with a `generate(label, noise)`
signature (and `serving_default`, so `python -m pipelines.serve
--model_dir=PATH` serves it), prints its training time, sampling rate and
path, and draws a grid of samples per class. Cached and resumable per
epoch; on full MNIST (27,000 pool images) 30 epochs took 5 minutes on a
2-core CPU shared with another job, and it samples about 16,000 images/s
(BUILD_NOTES.md, "Issue 10").

    --generator_epochs=30 --latent_dim=16     the recipe
    --generator_decoder=mlp|conv --generator_latent=prior|fitted
    --smoke                                   a tiny run, seconds

Use it: `python -m pipelines.synthetic --generator=cvae --dataset=mnist`
(the same command finds the cached generator), or any SavedModel path.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from absl import app
from absl import flags

from pipelines import common

_EPOCHS = flags.DEFINE_integer('generator_epochs', 30,
                               'Epochs of the built-in generator.')
_LATENT = flags.DEFINE_integer('latent_dim', 16,
                               'Latent size of the built-in generator.')
# The built-in generator's design (BUILD_NOTES.md, "Issue 10").
DECODER = 'mlp'
LATENT = 'fitted'
_DECODER = flags.DEFINE_enum(
    'generator_decoder', DECODER, ['mlp', 'conv'], 'Decoder of the built-in '
    'generator: an MLP, or transposed convolutions (image sides: multiples '
    'of 4).')
_SAMPLING = flags.DEFINE_enum(
    'generator_latent', LATENT, ['prior', 'fitted'], 'Latent codes of the '
    'built-in generator: the prior N(0, I), or per-class Gaussians fitted '
    'after training to the codes of the training images.')


@dataclasses.dataclass(frozen=True)
class TrainGeneratorConfig:
  dataset: str = 'mnist'
  data_dir: str | None = None
  epochs: int = 30
  latent_dim: int = 16
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False
  decoder: str = DECODER
  latent: str = LATENT


def steal_module():
  """`pipelines.steal`, without importing it twice: under `python -m
  pipelines.steal` it is `__main__`, and a second import would define its
  flags again."""
  main = sys.modules.get('__main__')
  spec = getattr(main, '__spec__', None)
  if spec is not None and spec.name == 'pipelines.steal':
    return main
  from pipelines import steal  # pylint: disable=g-import-not-at-top
  return steal


def split_like_steal(dataset_name: str, data_dir, seed: int, smoke: bool,
                     wd: str, name: str):
  """(dataset, splits Examples): loaded, shrunk in smoke runs and split as
  `pipelines.steal.prepare` splits it, so the attacker's pool is the same."""
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  dataset = data_lib.load_dataset(dataset_name, data_dir)
  if smoke:
    dataset = steal_module()._shrink(dataset)  # pylint: disable=protected-access
  split = data_lib.split_data.run(
      wd, examples=data_lib.import_dataset(dataset, wd), seed=seed,
      victim_fraction=0.5, heldout_fraction=0.1,
      min_size=dataset.num_classes)
  return dataset, split['splits']


def train(cfg: TrainGeneratorConfig, name: str = 'train_generator'):
  """Trains (or reuses) the generator; returns (RunResult, dataset)."""
  from modelsteal.synthetic import train_generator  # pylint: disable=g-import-not-at-top
  if cfg.epochs < 1:
    raise ValueError(f'--generator_epochs must be at least 1, got '
                     f'{cfg.epochs}.')
  if cfg.latent_dim < 1:
    raise ValueError(f'--latent_dim must be at least 1, got {cfg.latent_dim}.')
  wd = os.path.abspath(cfg.workdir)
  dataset, splits = split_like_steal(cfg.dataset, cfg.data_dir, cfg.seed,
                                     cfg.smoke, wd, name)
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
    KeyError: an unknown name; GeneratorError: a path that is not a
    generator; ValueError: a malformed URL.
  """
  from modelsteal import synthetic  # pylint: disable=g-import-not-at-top
  spec = (spec or '').strip()
  if not spec:
    raise ValueError('--generator is required: a built-in name (cvae), a '
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
  raise KeyError(
      f'unknown generator {spec!r}: not a built-in name '
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


def config_from_flags() -> TrainGeneratorConfig:
  return TrainGeneratorConfig(
      dataset=common.DATASET.value or 'mnist', data_dir=common.DATA_DIR.value,
      epochs=_EPOCHS.value, latent_dim=_LATENT.value,
      workdir=common.WORKDIR.value, seed=common.SEED.value,
      smoke=common.SMOKE.value, decoder=_DECODER.value,
      latent=_SAMPLING.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  common.run_main(lambda: run(config_from_flags()), 'train_generator')


if __name__ == '__main__':
  app.run(main)
