r"""Measure the damage of unlearnable data: clean vs poisoned training.

    python -m pipelines.poison_eval --poisoned=runs/generate_ntga/<run>/poisoned

Trains each target network (default: the paper's MNIST targets `ntga_fnn`,
`ntga_fnn_relu`, `ntga_cnn`) for a fixed number of epochs on the poisoned
training set and on the same rows' clean images, evaluates on the clean test
split after every epoch, and prints final and best accuracy per target and
data. Writes `results.csv`, `results.json`, `curves.csv` and `accuracy.png`
under `<workdir>/evaluate_poison/<run>/evaluation/` with an `execution.json`.
`--poisoned` is an artifact written by `python -m pipelines.ntga` or an
exported `.npz` (`x_train`, `y_train`, `idx_train`, `x_test`, `y_test`; then
`--dataset` names the clean source). The clean source defaults to the one the
artifact was made from.

Each target is trained twice (clean and poisoned); the cost on a 2-core
CPU: BUILD_NOTES.md, "Poison evaluation". Variants:

    --targets=ntga_fnn_relu,ntga_cnn          which targets
    --target_epochs=10 --target_batch_size=128 --target_lr=1e-3
    --target_max_train=10000                  a reduced run
    --smoke                                   a tiny run, seconds

Finished trainings are kept: an interrupted run resumes with the next one.
"""

from __future__ import annotations

from absl import app
from absl import flags

from pipelines import common

_TARGETS = flags.DEFINE_list('targets', ['ntga_fnn', 'ntga_fnn_relu',
                                         'ntga_cnn'],
                             'Target architectures to train.')
_EPOCHS = flags.DEFINE_integer('target_epochs', 10, 'Training epochs.')
_BATCH = flags.DEFINE_integer('target_batch_size', 128, 'Batch size.')
_LR = flags.DEFINE_float('target_lr', 1e-3, 'Adam learning rate (cosine '
                         'decay).')
_MAX_TRAIN = flags.DEFINE_integer('target_max_train', 0, 'Use only the first N '
                                  'training rows (0: all).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    from modelsteal.experiments import poison_eval  # pylint: disable=g-import-not-at-top
    poison_eval.run(poison_eval.PoisonEvalConfig(
        poisoned=common.POISONED.value or '', dataset=common.DATASET.value,
        data_dir=common.DATA_DIR.value, targets=tuple(_TARGETS.value),
        epochs=_EPOCHS.value, batch_size=_BATCH.value,
        learning_rate=_LR.value, max_train=_MAX_TRAIN.value,
        workdir=common.WORKDIR.value, seed=common.SEED.value,
        smoke=common.SMOKE.value))

  common.run_main(body, 'poison_eval', {
      'epochs': '--target_epochs', 'batch_size': '--target_batch_size',
      'learning_rate': '--target_lr', 'max_train': '--target_max_train'})


if __name__ == '__main__':
  app.run(main)
