r"""Train on unlearnable (NTGA-poisoned) data and recover clean accuracy.

    python -m pipelines.defend --poisoned=ARTIFACT_OR_NPZ --defense=all \
        --clean=../shared/data/mnist/mnist.npz

Trains the CNN target of the NTGA paper on the poisoned training set under
each defence (and, with `--clean`, on the same rows of the clean training set,
the defence's cost when there is no poison), records clean-test accuracy
after every epoch, and writes `results.{csv,json}` and a PNG of accuracy per
epoch under `<workdir>/defend/<run>/`. Each trained model is exported as a
SavedModel whose serving signature applies the defence's test-time
preprocessing, so it serves raw images.

`--poisoned` takes the NTGA pipeline's artifact directory (splits `train`
poisoned, `test` clean) or an `.npz` in the exported form (`x_train`,
`y_train`, `x_test`, `y_test`, optional `idx_train`), such as a
competition's. Defences (`--defense`, comma list, `+` composes, or `all`):
none, jpeg:Q, grayscale, bitdepth:B, median:K, blur:S, crop, flip, cutout,
mixup, cutmix, adv:EPS. Cost per epoch on a 2-core CPU: BUILD_NOTES.md,
"Training defences"; `--train_size` and `--epochs` shrink it, and
`--target=fnn_relu` is much cheaper than the CNN.
"""

from __future__ import annotations

from absl import app
from absl import flags

from pipelines import common

_DEFENSE = flags.DEFINE_string('defense', 'none', 'Comma list of defences, or '
                               'all.')
_TARGET = flags.DEFINE_string('target', 'cnn', 'Target network: cnn, fnn, '
                              'fnn_relu (the NTGA paper\'s) or any '
                              'architecture name.')
_CLEAN = flags.DEFINE_string('clean', None, 'Clean dataset (name or path) to '
                             'measure each defence without poison.')
_EPOCHS = flags.DEFINE_integer('epochs', 10, 'Training epochs.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Batch size.')
_LR = flags.DEFINE_float('learning_rate', 1e-3, 'Adam learning rate (cosine '
                         'decay).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    from modelsteal.experiments import defend  # pylint: disable=g-import-not-at-top
    defend.run(defend.DefendConfig(
        poisoned=common.POISONED.value, defense=_DEFENSE.value,
        target=_TARGET.value, clean=_CLEAN.value, epochs=_EPOCHS.value,
        batch_size=_BATCH.value, learning_rate=_LR.value,
        train_size=common.TRAIN_SIZE.value, workdir=common.WORKDIR.value,
        seed=common.SEED.value, smoke=common.SMOKE.value,
        distribute=common.DISTRIBUTE.value, data_dir=common.DATA_DIR.value))

  common.run_main(body, 'defend')


if __name__ == '__main__':
  app.run(main)
