"""Classifiers trained on generated images beside the same classifiers on
as many real ones (real-test accuracy of both), and generated images as
stealing queries (`generated_queries`).

    from modelsteal.experiments import synthetic
    synthetic.run(synthetic.SyntheticConfig(generator='cvae', per_class=100))
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

from modelsteal.errors import ConfigError
from modelsteal.errors import UnknownNameError
from modelsteal.experiments import generator as generator_lib
from modelsteal.experiments.common import Steps
from modelsteal.experiments.common import load_and_split
from modelsteal.experiments.common import run_name


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Classifiers trained on generated vs real images; validated at
  construction."""
  generator: str = 'cvae'
  dataset: str | None = None
  data_dir: str | None = None
  per_class: int = 1000
  sweep: tuple[int, ...] = ()
  classifiers: tuple[str, ...] = ('mnist_cnn', 'mnist_mlp', 'lenet5')
  filter: str = 'none'
  pixels: str = 'sample'
  rest: dict = dataclasses.field(default_factory=dict)
  generator_epochs: int = 30
  latent_dim: int = 16
  generator_decoder: str = generator_lib.DECODER
  generator_latent: str = generator_lib.LATENT
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False

  def __post_init__(self):
    from modelsteal import models  # pylint: disable=g-import-not-at-top
    from modelsteal import synthetic  # pylint: disable=g-import-not-at-top
    for n in sorted({self.per_class, *self.sweep}):
      if n < 1:
        field = 'per_class' if n == self.per_class else 'sweep'
        raise ConfigError(field, f': images per class must be at least 1, '
                          f'got {n}.')
    if not self.classifiers:
      raise ConfigError('classifiers', 'is empty; name at least one of '
                        f'{", ".join(sorted(models.ARCHITECTURES))}.')
    for arch in self.classifiers:
      if arch not in models.ARCHITECTURES:
        raise UnknownNameError(
            'classifiers', f': unknown classifier architecture {arch!r}; '
            f'valid: {", ".join(sorted(models.ARCHITECTURES))}.')
    synthetic.parse_filter(self.filter)
    generator_lib.TrainGeneratorConfig(epochs=self.generator_epochs,
                                   latent_dim=self.latent_dim,
                                   decoder=self.generator_decoder,
                                   latent=self.generator_latent)


SMOKE_PER_CLASS = 20  # the smoke pool holds about 54 real images per class


def open_generator(spec: str, *, wd: str, dataset, dataset_name: str,
                   data_dir=None, seed: int = 0, smoke: bool = False,
                   epochs: int = 30, latent_dim: int = 16, rest=None,
                   pixels: str = 'sample', name: str = 'synthetic',
                   decoder: str = generator_lib.DECODER,
                   latent: str = generator_lib.LATENT):
  """(reference, Generator) for `spec`, checked against the dataset."""
  from modelsteal import synthetic  # pylint: disable=g-import-not-at-top
  from modelsteal.data import DataError  # pylint: disable=g-import-not-at-top
  names = synthetic.class_names_for(dataset.name, dataset.num_classes)
  rest = dict(rest or {})
  rest.setdefault('class_names', list(names))
  rest.setdefault('image_shape', list(dataset.shape))
  ref = generator_lib.generator_ref(
      spec, workdir=wd, dataset=dataset_name, data_dir=data_dir, seed=seed,
      smoke=smoke, epochs=epochs, latent_dim=latent_dim, rest=rest, name=name,
      decoder=decoder, latent=latent)
  if ref['kind'] == 'savedmodel' and pixels != 'sample':
    ref['pixels'] = pixels
  gen = synthetic.make_generator(ref, class_names=list(names))
  if tuple(gen.image_shape) != tuple(dataset.shape):
    raise DataError(f'the generator makes images of shape {gen.image_shape}, '
                    f'the dataset {dataset.name} has {dataset.shape}; pick '
                    'a generator for this dataset.')
  for i, n in enumerate(names):  # an unknown name: GeneratorError, clear
    if gen.class_index(n) != i:
      raise DataError(f'the generator has class {n!r} at index '
                      f'{gen.class_index(n)}, the dataset {dataset.name} at '
                      f'{i}; the class orders must agree.')
  if len(gen.class_names) != dataset.num_classes:
    raise DataError(f'the generator knows {len(gen.class_names)} classes, '
                    f'the dataset {dataset.name} has {dataset.num_classes}.')
  return ref, gen


def generated_queries(cfg, dataset, wd: str, steps, name: str = 'steal'):
  """The Examples of generated stealing queries (`pool`, `heldout`) for a
  `StealConfig(query_data='generator:SPEC')`: enough images that the
  pool holds the largest budget; the victim labels them later, the
  generator's intended class is ignored."""
  from modelsteal import synthetic  # pylint: disable=g-import-not-at-top
  spec = cfg.query_data.split(':', 1)[1]
  ref, gen = open_generator(
      spec, wd=wd, dataset=dataset, dataset_name=cfg.dataset or
      _victim_dataset(cfg), data_dir=cfg.data_dir, seed=cfg.seed,
      smoke=cfg.smoke, name=name)
  k = len(gen.class_names)
  per_class = math.ceil(max(cfg.budgets) / (k * 0.9)) + 1
  if cfg.smoke:
    per_class = min(per_class, SMOKE_PER_CLASS)
  res = synthetic.mine_images.run(
      wd, generator=ref, per_class=per_class, seed=cfg.seed,
      class_names=list(gen.class_names), heldout_fraction=0.1)
  steps.record(f'mine_images (queries: {ref.get("name", spec)})', res)
  return res['mined']




def _victim_dataset(cfg) -> str:
  from modelsteal import victims  # pylint: disable=g-import-not-at-top
  return victims.get_victim(cfg.victim).dataset


def _real_test_accuracy(model_artifact, splits) -> float:
  from modelsteal.training import predict_probs  # pylint: disable=g-import-not-at-top
  test = splits.load_split('test')
  probs = predict_probs(model_artifact.load_keras(), test['x'])
  return float((probs.argmax(1) == test['y']).mean())


def _sizes(cfg: SyntheticConfig) -> list[int]:
  """The images-per-class values to train with (capped in smoke runs)."""
  sizes = sorted({cfg.per_class, *cfg.sweep})
  if cfg.smoke and max(sizes) > SMOKE_PER_CLASS:
    print(f'[synthetic] notice: smoke run: images per class capped to '
          f'{SMOKE_PER_CLASS}.', flush=True)
    sizes = sorted({min(n, SMOKE_PER_CLASS) for n in sizes})
  return sizes


def _train_on(cfg: SyntheticConfig, wd: str, steps: Steps, data: str,
              examples, n: int, splits, dataset, filter_name: str
              ) -> list[dict]:
  """Each classifier trained on `examples` (n per class), scored on the real
  test split: one row each."""
  from modelsteal.attacks import train_model  # pylint: disable=g-import-not-at-top
  from modelsteal.experiments.recipes import student_recipe  # pylint: disable=g-import-not-at-top
  rows = []
  total = n * dataset.num_classes
  for arch in cfg.classifiers:
    res = train_model.run(wd, examples=examples, arch=arch,
                          recipe=student_recipe(arch, total, cfg.smoke,
                                                channels=dataset.shape[-1]),
                          split='train', targets='y', seed=cfg.seed)
    steps.record(f'train {arch} on {n}/class {data}', res)
    rows.append({'classifier': arch, 'data': data, 'per_class': n,
                 'train_size': total, 'filter': filter_name,
                 'accuracy': _real_test_accuracy(res['model'], splits),
                 'train_s': round(res.duration_s, 1)})
  return rows


def comparison_table(long, gen_name: str):
  """Generated beside real, one row per classifier and images per class,
  from the per-training rows of `run`."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  keys = ['classifier', 'per_class']
  gen_rows = long[long['data'] == 'generated'].set_index(keys)
  real_rows = long[long['data'] == 'real'].set_index(keys)
  table = pd.DataFrame({
      'generator': gen_name,
      'filter': gen_rows['filter'],
      'train_size': gen_rows['train_size'],
      'acc_generated': gen_rows['accuracy'],
      'acc_real': real_rows['accuracy'],
  }).reset_index()
  table['gap_points'] = (100 * (table['acc_real'] -
                                table['acc_generated'])).round(2)
  return table.sort_values(['per_class', 'classifier'], kind='stable')


LEGEND = """\
acc_generated  real-test accuracy, trained on generated images only
acc_real       the same classifier on as many real images (the attacker's pool)
gap_points     acc_real - acc_generated, in percentage points
filter         none, or confidence:T (the generator's own classifier)"""


def run(cfg: SyntheticConfig):
  """Runs the comparison; returns (results DataFrame, output directory)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal import evaluation  # pylint: disable=g-import-not-at-top
  from modelsteal import synthetic  # pylint: disable=g-import-not-at-top
  from modelsteal.synthetic.plots import plot_per_class_sweep  # pylint: disable=g-import-not-at-top

  started = time.time()
  sizes = _sizes(cfg)
  min_conf = synthetic.parse_filter(cfg.filter)
  wd = os.path.abspath(cfg.workdir)
  steps = Steps('synthetic')
  dataset_name = cfg.dataset or 'mnist'
  dataset, splits, _ = load_and_split(dataset_name, cfg.data_dir, cfg.seed,
                                      cfg.smoke, wd)
  print(f'[synthetic] data: {dataset.name} from {dataset.source}: '
        f'{len(dataset.x_train)} train / {len(dataset.x_test)} test',
        flush=True)
  ref, gen = open_generator(
      cfg.generator, wd=wd, dataset=dataset, dataset_name=dataset_name,
      data_dir=cfg.data_dir, seed=cfg.seed, smoke=cfg.smoke,
      epochs=cfg.generator_epochs, latent_dim=cfg.latent_dim, rest=cfg.rest,
      pixels=cfg.pixels, decoder=cfg.generator_decoder,
      latent=cfg.generator_latent)
  gen_name = ref.get('name') or cfg.generator
  print(f'[synthetic] generator: {gen.source}', flush=True)

  rows = []
  for n in sizes:
    mined = synthetic.mine_images.run(
        wd, generator=ref, per_class=n, seed=cfg.seed,
        class_names=list(gen.class_names), min_confidence=min_conf)
    steps.record(f'mine_images per_class={n}', mined)
    real = synthetic.sample_per_class.run(wd, examples=splits, per_class=n,
                                          seed=cfg.seed)
    steps.record(f'sample_per_class per_class={n} (real)', real)
    rows += _train_on(cfg, wd, steps, 'generated', mined['mined'], n, splits,
                      dataset, mined['mined'].properties['filter'])
    rows += _train_on(cfg, wd, steps, 'real', real['sampled'], n, splits,
                      dataset, '')
  long = pd.DataFrame(rows)
  table = comparison_table(long, gen_name)

  name = run_name(
      [dataset.name, gen_name, f'n{"_".join(map(str, sizes))}',
       f'filter{cfg.filter}'] + (['mean'] if cfg.pixels == 'mean' else [])
      + (['smoke'] if cfg.smoke else []))
  out_dir = os.path.join(wd, 'synthetic', name)
  csv_path, json_path = evaluation.save_results(table, out_dir)
  evaluation.save_results(long, out_dir, stem='runs')
  steps.save(out_dir)
  grid = generator_lib.sample_grid(
      gen, os.path.join(out_dir, 'samples.png'), seed=cfg.seed,
      title=f'{gen_name}: generated samples per class')
  print('\n' + evaluation.format_table(table))
  print(LEGEND)
  if len(sizes) > 1:
    plot = plot_per_class_sweep(
        long, os.path.join(out_dir, 'per_class_sweep.png'),
        title=f'{dataset.name}: trained on {gen_name} images vs real ones')
    print(f'\nplot:     {plot}')
  print(f'samples:  {grid}\nresults:  {csv_path}\n          {json_path}')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return table, out_dir
