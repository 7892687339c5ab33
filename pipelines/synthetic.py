r"""Train classifiers on generated images and compare with real ones.

    python -m pipelines.synthetic --generator=cvae --dataset=mnist \
        --per_class=1000 --classifiers=mnist_cnn,mnist_mlp,lenet5

Mines `--per_class` images of every class from the generator (cached as
they arrive, resumable, with progress), trains each classifier on them and,
for comparison, on the same number of real images of the attacker's pool
split, and reports real-test accuracy of both (table on the terminal, CSV
and JSON). Writes a PNG grid of generated samples per class and, with
`--sweep`, the accuracy as `per_class` grows (a PNG plot). Everything goes
under `<workdir>/synthetic/<run>/`. The real test split is never seen by
the generator nor by any classifier before scoring.

`--generator` is a built-in name (`cvae`: trained once on the attacker's
pool, `pipelines.train_generator`), a generator SavedModel directory, or
the URL of a text-to-image service (`--generator_api`, `--prompt`,
`--generator_token_env`). With the default 1,000 images per class and
three classifiers, 18 minutes on a 2-core CPU shared with another job (the
generator cached; six trainings of 10,000 images). On full MNIST a
`mnist_cnn` reached 96.4% trained on generated images, 98.8% on real ones
(BUILD_NOTES.md, "Issue 10").

Variants:

    --sweep=10,100,1000                 accuracy against images per class
    --filter=confidence:0.9             keep samples the generator's own
                                        classifier is sure of (recorded in
                                        the table; default none)
    --pixels=mean                       Bernoulli means instead of samples
    --generator=https://HOST/v1/images/generations --generator_api=openai
        --generator_token_env=OPENAI_API_KEY --prompt='a photo of a {label}'
    --smoke                             a tiny run, seconds

Stealing with generated queries: `python -m pipelines.steal
--query_data=generator:cvae`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time

from absl import app
from absl import flags

from pipelines import common
from pipelines import train_generator as train_generator_pipeline

_GENERATOR = flags.DEFINE_string(
    'generator', 'cvae', 'Built-in generator name (cvae), a generator '
    'SavedModel directory, or an http(s) URL of a text-to-image service.')
_PER_CLASS = flags.DEFINE_integer('per_class', 1000,
                                  'Images per class to mine and train on.')
_SWEEP = flags.DEFINE_list('sweep', [], 'Also train with these per_class '
                           'values (a sweep with a PNG plot), e.g. 10,100.')
_CLASSIFIERS = flags.DEFINE_list(
    'classifiers', ['mnist_cnn', 'mnist_mlp', 'lenet5'],
    'Classifier architectures to train.')
_FILTER = flags.DEFINE_string(
    'filter', 'none', 'none, or confidence:T: keep samples to which the '
    "generator's own classifier gives at least T for their class.")
_PIXELS = flags.DEFINE_enum('pixels', 'sample', ['sample', 'mean'],
                            'SavedModel generators: sampled pixels or means.')
_API = flags.DEFINE_enum('generator_api', 'openai',
                         ['openai', 'raw', 'replicate', 'tfserving'],
                         'Adapter for a --generator URL.')
_TOKEN_ENV = flags.DEFINE_string(
    'generator_token_env', None, 'Environment variable holding the Bearer '
    'token of a --generator URL (never stored).')
_PROMPT = flags.DEFINE_string('prompt', 'a photo of a {label}',
                              'Prompt template of a --generator URL.')
_RPS = flags.DEFINE_float('generator_rps', 2.0, 'Requests per second at '
                          'most to a --generator URL.')


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
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
  generator_decoder: str = train_generator_pipeline.DECODER
  generator_latent: str = train_generator_pipeline.LATENT
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False


SMOKE_PER_CLASS = 20  # the smoke pool holds about 54 real images per class


def open_generator(spec: str, *, wd: str, dataset, dataset_name: str,
                   data_dir=None, seed: int = 0, smoke: bool = False,
                   epochs: int = 30, latent_dim: int = 16, rest=None,
                   pixels: str = 'sample', name: str = 'synthetic',
                   decoder: str = train_generator_pipeline.DECODER,
                   latent: str = train_generator_pipeline.LATENT):
  """(reference, Generator) for `spec`, checked against the dataset."""
  from modelsteal import synthetic  # pylint: disable=g-import-not-at-top
  from modelsteal.data import DataError  # pylint: disable=g-import-not-at-top
  names = synthetic.class_names_for(dataset.name, dataset.num_classes)
  rest = dict(rest or {})
  rest.setdefault('class_names', list(names))
  rest.setdefault('image_shape', list(dataset.shape))
  ref = train_generator_pipeline.generator_ref(
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
  """The Examples of generated stealing queries (`pool`, `heldout`) for
  `pipelines.steal --query_data=generator:SPEC`: enough images that the
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


def run(cfg: SyntheticConfig):
  """Runs the comparison; returns (results DataFrame, output directory)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal import evaluation  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal import synthetic  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks import train_model  # pylint: disable=g-import-not-at-top
  from modelsteal.synthetic.plots import plot_per_class_sweep  # pylint: disable=g-import-not-at-top
  student_recipe = train_generator_pipeline.steal_module().student_recipe

  started = time.time()
  sizes = sorted({cfg.per_class, *cfg.sweep})
  for n in sizes:
    if n < 1:
      flag = '--per_class' if n == cfg.per_class else '--sweep'
      raise ValueError(f'{flag}: images per class must be at least 1, got '
                       f'{n}.')
  if not cfg.classifiers:
    raise ValueError('--classifiers is empty; name at least one of '
                     f'{", ".join(sorted(models.ARCHITECTURES))}.')
  for arch in cfg.classifiers:
    if arch not in models.ARCHITECTURES:
      raise KeyError(f'unknown classifier architecture {arch!r}; valid: '
                     f'{", ".join(sorted(models.ARCHITECTURES))}.')
  min_conf = synthetic.parse_filter(cfg.filter)
  if cfg.smoke and max(sizes) > SMOKE_PER_CLASS:
    print(f'[synthetic] notice: --smoke: images per class capped to '
          f'{SMOKE_PER_CLASS}.', flush=True)
    sizes = sorted({min(n, SMOKE_PER_CLASS) for n in sizes})
  wd = os.path.abspath(cfg.workdir)
  steps = common.Steps('synthetic')
  dataset_name = cfg.dataset or 'mnist'
  dataset, splits = train_generator_pipeline.split_like_steal(
      dataset_name, cfg.data_dir, cfg.seed, cfg.smoke, wd, 'synthetic')
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
    for data, examples in (('generated', mined['mined']),
                           ('real', real['sampled'])):
      for arch in cfg.classifiers:
        total = n * dataset.num_classes
        res = train_model.run(wd, examples=examples, arch=arch,
                              recipe=student_recipe(arch, total, cfg.smoke),
                              split='train', targets='y', seed=cfg.seed)
        steps.record(f'train {arch} on {n}/class {data}', res)
        rows.append({
            'classifier': arch, 'data': data, 'per_class': n,
            'train_size': total,
            'filter': mined['mined'].properties['filter'] if
                      data == 'generated' else '',
            'accuracy': _real_test_accuracy(res['model'], splits),
            'train_s': round(res.duration_s, 1)})

  long = pd.DataFrame(rows)
  gen_rows = long[long['data'] == 'generated'].set_index(
      ['classifier', 'per_class'])
  real_rows = long[long['data'] == 'real'].set_index(
      ['classifier', 'per_class'])
  table = pd.DataFrame({
      'generator': gen_name,
      'filter': gen_rows['filter'],
      'train_size': gen_rows['train_size'],
      'acc_generated': gen_rows['accuracy'],
      'acc_real': real_rows['accuracy'],
  }).reset_index()
  table['gap_points'] = (100 * (table['acc_real'] -
                                table['acc_generated'])).round(2)
  table = table.sort_values(['per_class', 'classifier'], kind='stable')

  run_name = re.sub(r'[^A-Za-z0-9_.-]+', '_', '-'.join(
      [dataset.name, gen_name, f'n{"_".join(map(str, sizes))}',
       f'filter{cfg.filter}'] + (['mean'] if cfg.pixels == 'mean' else [])
      + (['smoke'] if cfg.smoke else [])))
  out_dir = os.path.join(wd, 'synthetic', run_name)
  csv_path, json_path = evaluation.save_results(table, out_dir)
  evaluation.save_results(long, out_dir, stem='runs')
  steps.save(out_dir)
  grid = train_generator_pipeline.sample_grid(
      gen, os.path.join(out_dir, 'samples.png'), seed=cfg.seed,
      title=f'{gen_name}: generated samples per class')
  print('\n' + evaluation.format_table(table))
  print('acc_generated  real-test accuracy, trained on generated images only\n'
        'acc_real       the same classifier on as many real images (the '
        "attacker's pool)\n"
        'gap_points     acc_real - acc_generated, in percentage points\n'
        "filter         none, or confidence:T (the generator's own "
        'classifier)')
  if len(sizes) > 1:
    plot = plot_per_class_sweep(
        long, os.path.join(out_dir, 'per_class_sweep.png'),
        title=f'{dataset.name}: trained on {gen_name} images vs real ones')
    print(f'\nplot:     {plot}')
  print(f'samples:  {grid}\nresults:  {csv_path}\n          {json_path}')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return table, out_dir


def config_from_flags() -> SyntheticConfig:
  try:
    sweep = tuple(int(v) for v in _SWEEP.value)
  except ValueError as e:
    raise ValueError(f'--sweep must be integers ({e}).') from None
  rest = {'api': _API.value, 'prompt': _PROMPT.value,
          'token_env': _TOKEN_ENV.value, 'requests_per_s': _RPS.value}
  return SyntheticConfig(
      generator=_GENERATOR.value, dataset=common.DATASET.value,
      data_dir=common.DATA_DIR.value, per_class=_PER_CLASS.value,
      sweep=sweep, classifiers=tuple(_CLASSIFIERS.value),
      filter=_FILTER.value, pixels=_PIXELS.value, rest=rest,
      generator_epochs=flags.FLAGS.generator_epochs,
      latent_dim=flags.FLAGS.latent_dim,
      generator_decoder=flags.FLAGS.generator_decoder,
      generator_latent=flags.FLAGS.generator_latent,
      workdir=common.WORKDIR.value,
      seed=common.SEED.value, smoke=common.SMOKE.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  common.run_main(lambda: run(config_from_flags()), 'synthetic')


if __name__ == '__main__':
  app.run(main)
