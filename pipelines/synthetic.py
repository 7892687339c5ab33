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
`--generator_token_env`). Its cost and results on a 2-core CPU:
BUILD_NOTES.md, "Generated queries and synthetic data".

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

from absl import app
from absl import flags

from pipelines import _generator_flags as gen_flags
from pipelines import common

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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    from modelsteal.experiments import synthetic  # pylint: disable=g-import-not-at-top
    from modelsteal.errors import ConfigError  # pylint: disable=g-import-not-at-top
    try:
      sweep = tuple(int(v) for v in _SWEEP.value)
    except ValueError as e:
      raise ConfigError('sweep', f'must be integers ({e}).') from None
    rest = {'api': _API.value, 'prompt': _PROMPT.value,
            'token_env': _TOKEN_ENV.value, 'requests_per_s': _RPS.value}
    synthetic.run(synthetic.SyntheticConfig(
        generator=_GENERATOR.value, dataset=common.DATASET.value,
        data_dir=common.DATA_DIR.value, per_class=_PER_CLASS.value,
        sweep=sweep, classifiers=tuple(_CLASSIFIERS.value),
        filter=_FILTER.value, pixels=_PIXELS.value, rest=rest,
        generator_epochs=gen_flags.EPOCHS.value,
        latent_dim=gen_flags.LATENT_DIM.value,
        generator_decoder=gen_flags.DECODER.value,
        generator_latent=gen_flags.SAMPLING.value,
        workdir=common.WORKDIR.value, seed=common.SEED.value,
        smoke=common.SMOKE.value))

  common.run_main(body, 'synthetic', {
      **gen_flags.FLAG_NAMES, 'requests_per_s': '--generator_rps',
      'token_env': '--generator_token_env', 'api': '--generator_api'})


if __name__ == '__main__':
  app.run(main)
