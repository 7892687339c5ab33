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
epoch; its training time and sampling rate on a 2-core CPU: BUILD_NOTES.md,
"Generated queries and synthetic data".

    --generator_epochs=30 --latent_dim=16     the recipe
    --generator_decoder=mlp|conv --generator_latent=prior|fitted
    --smoke                                   a tiny run, seconds

Use it: `python -m pipelines.synthetic --generator=cvae --dataset=mnist`
(the same command finds the cached generator), or any SavedModel path.
"""

from __future__ import annotations

from absl import app

from pipelines import _generator_flags as gen_flags
from pipelines import common


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    from modelsteal.experiments import generator  # pylint: disable=g-import-not-at-top
    generator.run(generator.TrainGeneratorConfig(
        dataset=common.DATASET.value or 'mnist',
        data_dir=common.DATA_DIR.value, epochs=gen_flags.EPOCHS.value,
        latent_dim=gen_flags.LATENT_DIM.value, workdir=common.WORKDIR.value,
        seed=common.SEED.value, smoke=common.SMOKE.value,
        decoder=gen_flags.DECODER.value, latent=gen_flags.SAMPLING.value))

  common.run_main(body, 'train_generator', gen_flags.FLAG_NAMES)


if __name__ == '__main__':
  app.run(main)
