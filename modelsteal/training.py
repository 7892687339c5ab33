"""One training routine for victims, students and target models.

Hard labels train with sparse cross-entropy; soft targets (probability
answers) with cross-entropy against the target distribution, which has the
same gradient as KL(target || student) (they differ by the targets' entropy,
a constant). Adam with cosine decay, optional small random translations
(`keras.layers.RandomTranslation`) for image data, resumable through
`keras.callbacks.BackupAndRestore`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

import numpy as np

from modelsteal import progress


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """A training recipe."""
  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 1e-3
  # False, True (random +-10% translations, MNIST) or 'crop_flip' (pad-4
  # random crops and horizontal flips, the standard CIFAR-10 augmentation)
  augment: bool | str = False
  weight_decay: float = 0.0
  label_smoothing: float = 0.0
  schedule: str = 'cosine'  # or 'constant' (SWAG's weight-collection phase)
  # Batches per compiled call (Keras `steps_per_execution`): 32 or more keeps
  # a TPU busy; 1 elsewhere.
  steps_per_execution: int = 1
  # XLA-compile the training step: None lets Keras decide (off on CPU and
  # under tf.distribute); True also makes every batch the same shape.
  jit_compile: bool | None = None
  # Epochs of linear warm-up from 0 to `learning_rate` before the cosine.
  warmup_epochs: int = 0
  # 'adam' (AdamW where weight_decay > 0) or 'sgd' (Nesterov momentum 0.9).
  optimizer: str = 'adam'
  # 'float32', or 'mixed_bfloat16' (bf16 compute, float32 weights and
  # logits: faster on CPUs with AVX-512 BF16, BUILD_NOTES.md "Stealing on
  # CIFAR-10").
  precision: str = 'float32'

  def __post_init__(self):
    from modelsteal.errors import ConfigError  # pylint: disable=g-import-not-at-top
    if self.augment not in (False, True, 'crop_flip'):
      raise ConfigError('augment', f"is false, true or 'crop_flip', got "
                        f'{self.augment!r}.')
    if self.optimizer not in ('adam', 'sgd'):
      raise ConfigError('optimizer', f"is 'adam' or 'sgd', got "
                        f'{self.optimizer!r}.')
    if self.precision not in ('float32', 'mixed_bfloat16'):
      raise ConfigError('precision', f"is 'float32' or 'mixed_bfloat16', "
                        f'got {self.precision!r}.')
    if not 0 <= self.warmup_epochs < max(self.epochs, 1):
      raise ConfigError('warmup_epochs', f'must be in [0, epochs), got '
                        f'{self.warmup_epochs}.')


# tf.data autotuning of the training pipeline (see `train_classifier`);
# benchmarks/epoch_overhead.py turns it on to show what it costs.
DATA_AUTOTUNE = False


# Fields added to TrainConfig after 0.1.0: left out of a recipe's parameters
# while at their defaults, so runs cached before they existed (a victim
# trained once) keep their fingerprints.
_LATER_FIELDS = ('schedule', 'steps_per_execution', 'jit_compile',
                 'warmup_epochs', 'optimizer', 'precision')


def recipe_params(config: TrainConfig) -> dict:
  """A recipe as a component parameter (a dict; see `_LATER_FIELDS`)."""
  d = dataclasses.asdict(config)
  defaults = TrainConfig()
  for f in _LATER_FIELDS:
    if f in d and d[f] == getattr(defaults, f):
      del d[f]
  return d


def native_bfloat16(cpuinfo: str | None = None) -> bool:
  """Whether bf16 arithmetic runs natively here: an accelerator, or a CPU
  with AVX-512 BF16 / AMX (x86) or BF16 (Arm) instructions. Elsewhere
  oneDNN emulates it, and `mixed_bfloat16` trains many times slower
  than float32 (BUILD_NOTES.md, "Stealing on CIFAR-10")."""
  if cpuinfo is None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if tf.config.list_physical_devices('GPU') or \
        tf.config.list_physical_devices('TPU'):
      return True
    try:
      with open('/proc/cpuinfo', encoding='utf-8') as f:
        cpuinfo = f.read()
    except OSError:
      return False
  flags = set()
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    if key.strip() in ('flags', 'Features'):
      flags.update(value.split())
  return bool(flags & {'avx512_bf16', 'amx_bf16', 'bf16'})


def for_this_machine(config: TrainConfig, cpuinfo: str | None = None,
                     log=print) -> TrainConfig:
  """`config` with `mixed_bfloat16` replaced by float32 where bf16 is not
  native (`native_bfloat16`), said on one line. The recipe that ran is the
  one recorded, so a cached model says which precision trained it.
  MODELSTEAL_BFLOAT16=1 keeps bf16 anyway."""
  if (config.precision != 'mixed_bfloat16' or
      os.environ.get('MODELSTEAL_BFLOAT16') == '1' or
      native_bfloat16(cpuinfo)):
    return config
  log('[training] this CPU has no native bf16 (AVX-512 BF16, AMX or Arm '
      'BF16): training in float32 instead of mixed_bfloat16, which would be '
      'emulated and many times slower (BUILD_NOTES.md, "Stealing on '
      'CIFAR-10"; MODELSTEAL_BFLOAT16=1 keeps it).')
  return dataclasses.replace(config, precision='float32')


@contextlib.contextmanager
def precision_policy(precision: str):
  """Keras' global dtype policy set to `precision` while models are built
  (their layers keep it), float32 again afterwards."""
  import keras  # pylint: disable=g-import-not-at-top
  if precision == 'float32':
    yield
    return
  before = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(precision)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(before)


def translation_augmenter(seed: int, fraction: float = 0.1):
  import keras  # pylint: disable=g-import-not-at-top
  layer = keras.layers.RandomTranslation(fraction, fraction,
                                         fill_mode='constant', seed=seed)
  return lambda images: layer(images, training=True)


def train_classifier(arch: str, x: np.ndarray, targets: np.ndarray,
                     num_classes: int, config: TrainConfig, *, seed: int = 0,
                     strategy=None, backup_dir: str | None = None,
                     verbose: int | None = None, model=None, callbacks=(),
                     pair_augment=None, wrap=None, desc: str | None = None):
  """Trains architecture `arch` (or the given `model`) on images `x`.

  Args:
    arch: key of `modelsteal.models.ARCHITECTURES`.
    x: float32 (N, H, W, C) in [0, 1].
    targets: int (N,) labels, or float (N, K) target distributions (rows are
      renormalised; all-zero rows fall back to uniform).
    num_classes: K.
    config: the recipe.
    seed: initialisation, shuffling and augmentation seed.
    strategy: a `tf.distribute.Strategy` (default: the current one).
    backup_dir: if given, training state is backed up there each epoch and
      an interrupted run resumes from it.
    verbose: 0 silent, 1 one progress line (`modelsteal.progress`, rate
      and ETA over the whole fit), 2 Keras' line per epoch; None: 2 when
      `modelsteal.progress.verbose()`, else 1.
    model: an already-built model to train instead of building `arch`.
    callbacks: extra Keras callbacks.
    pair_augment: optional (images, targets) -> (images, targets) batch
      augmentation (mixup, cutmix) applied after `config.augment`.
    wrap: optional function model -> training model (e.g. adversarial
      training); the unwrapped model is returned.
    desc: what the progress line calls this training (default `train ARCH`).

  Returns:
    The trained `keras.Model` (logits).
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modelsteal import distribute as distribute_lib  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top

  strategy = strategy or tf.distribute.get_strategy()
  if targets.ndim == 1 and config.label_smoothing:
    # sparse cross-entropy has no smoothing: hard labels become one-hot
    targets = np.eye(num_classes, dtype=np.float32)[np.asarray(targets)]
  soft = targets.ndim == 2
  targets = normalise_targets(targets, num_classes)
  keras.utils.set_random_seed(seed)
  # The recipe's batch is the global batch, split evenly over the replicas
  # (and, under `multiworker`, over the workers: tf.data shards it by
  # element). Static shapes (TPU, XLA): every batch full, the data repeated.
  batch_size = distribute_lib.global_batch_size(config.batch_size, strategy)
  static = (distribute_lib.needs_static_shapes(strategy) or
            bool(config.jit_compile))
  steps = max(1, math.ceil(len(x) / batch_size))
  with strategy.scope():
    if model is None:
      with precision_policy(config.precision):
        model = models.build(arch, x.shape[1:], num_classes)
    trainer = wrap(model) if wrap else model
    compile_trainer(trainer, config, steps, soft)
  ds = training_dataset(x, targets, batch_size, config, seed=seed,
                        static=static, pair_augment=pair_augment)
  callbacks = list(callbacks)
  if backup_dir:
    callbacks.insert(0, keras.callbacks.BackupAndRestore(backup_dir))
  if verbose is None:
    verbose = 2 if progress.verbose() else 1
  if verbose == 1:
    callbacks.append(progress.keras_callback(desc or f'train {arch}'))
  try:
    trainer.fit(ds, epochs=config.epochs, verbose=2 if verbose == 2 else 0,
                callbacks=callbacks, shuffle=False,  # tf.data shuffles
                steps_per_epoch=steps)
  except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
          tf.errors.CancelledError, tf.errors.AbortedError) as e:
    if distribute_lib.is_multiworker():
      raise distribute_lib.lost_worker_error(e) from e
    raise
  return model


def normalise_targets(targets: np.ndarray, num_classes: int) -> np.ndarray:
  """int64 labels (N,), or float32 distributions (N, K) whose rows sum to 1
  (all-zero rows become uniform)."""
  if targets.ndim != 2:
    return np.asarray(targets, np.int64)
  targets = np.asarray(targets, np.float32)
  sums = targets.sum(axis=1, keepdims=True)
  return np.where(sums > 0, targets / np.maximum(sums, 1e-12),
                  1.0 / num_classes).astype(np.float32)


def compile_trainer(trainer, config: TrainConfig, steps_per_epoch: int,
                    soft: bool) -> None:
  """Compiles with the recipe's optimiser, schedule and loss (call inside
  the strategy's scope)."""
  import keras  # pylint: disable=g-import-not-at-top
  warmup = steps_per_epoch * config.warmup_epochs
  if config.schedule == 'cosine' and warmup:
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps_per_epoch * config.epochs - warmup,
        warmup_target=config.learning_rate, warmup_steps=warmup)
  elif config.schedule == 'cosine':
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=steps_per_epoch * config.epochs)
  elif config.schedule == 'constant':
    schedule = config.learning_rate
  else:
    raise ValueError(f"schedule must be 'cosine' or 'constant', got "
                     f'{config.schedule!r}.')
  if config.optimizer == 'sgd':
    opt = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                               weight_decay=config.weight_decay or None)
  elif config.weight_decay:
    opt = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
  else:
    opt = keras.optimizers.Adam(schedule)
  if soft:
    loss = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=config.label_smoothing)
  else:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  trainer.compile(optimizer=opt, loss=loss,
                  steps_per_execution=config.steps_per_execution,
                  jit_compile=('auto' if config.jit_compile is None else
                               config.jit_compile))


def training_dataset(x: np.ndarray, targets: np.ndarray, batch_size: int,
                     config: TrainConfig, *, seed: int, static: bool,
                     pair_augment=None):
  """The fit's tf.data pipeline: shuffled, augmented as the recipe says,
  repeated (one iterator for the whole fit)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modelsteal.data import make_tf_dataset  # pylint: disable=g-import-not-at-top
  if config.augment == 'crop_flip':
    from modelsteal.data import crop_flip_augmenter  # pylint: disable=g-import-not-at-top
    augment = crop_flip_augmenter(seed)
  else:
    augment = translation_augmenter(seed) if config.augment else None
  # One iterator for the whole fit (the data repeated, `steps_per_epoch`):
  # Keras restarts a finite dataset's iterator every epoch, a large share of
  # a small student's training time on a 2-core CPU (BUILD_NOTES.md,
  # "Active strategies"). Each pass over the data is reshuffled; a batch may
  # span two passes.
  ds = make_tf_dataset(x, targets, batch_size, shuffle=True, seed=seed,
                       augment=augment, repeat=True, drop_remainder=static)
  if pair_augment is not None:
    ds = ds.map(pair_augment, num_parallel_calls=tf.data.AUTOTUNE)
  # tf.data's autotuning off: with an iterator still running at the end of
  # the fit, its optimisation thread sometimes held up `fit`'s return by
  # many seconds (BUILD_NOTES.md, "Active strategies").
  options = tf.data.Options()
  options.autotune.enabled = DATA_AUTOTUNE
  return ds.with_options(options)


def predict_logits(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """Logits (N, K) float32 of a Keras model, called eagerly in batches.

  Not `model.predict`: that builds a new `tf.function` per model, and a
  process that trains and scores many models (defences, ensembles, sweeps)
  traces one graph per model for a single call, which TF reports as
  excessive retracing. One eager call per batch costs no tracing at all.
  """
  if not len(x):
    return np.zeros((0, model.output_shape[-1]), np.float32)
  return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                         for i in range(0, len(x), batch_size)]).astype(
                             np.float32)


def predict_probs(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """Softmax probabilities (N, K) float32 of a logits model."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  logits = predict_logits(model, x, batch_size)
  return tf.nn.softmax(logits).numpy().astype(np.float32)


def epoch_accuracy_callback(x: np.ndarray, y: np.ndarray, model_fn=None,
                            preprocess=None, batch_size: int = 1024,
                            verbose: bool | None = None):
  """A callback recording clean accuracy after every epoch in `.history`.

  Args:
    x, y: evaluation images float32 (N, H, W, C) and int labels.
    model_fn: () -> the model to evaluate (default: the trained model; pass
      it when training a wrapper).
    preprocess: test-time transform applied to `x` once, up front.
    batch_size: evaluation batch size.
    verbose: print a line per epoch (None: `modelsteal.progress.verbose()`).
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if verbose is None:
    verbose = progress.verbose()
  if preprocess is not None:
    x = np.concatenate([np.asarray(preprocess(tf.constant(x[i:i + batch_size])))
                        for i in range(0, len(x), batch_size)])

  class EpochAccuracy(keras.callbacks.Callback):

    def __init__(self):
      super().__init__()
      self.history = []

    def on_epoch_end(self, epoch, logs=None):
      m = model_fn() if model_fn else self.model
      pred = predict_logits(m, x, batch_size).argmax(1)
      acc = float((pred == y).mean())
      self.history.append(acc)
      if verbose:
        print(f'  epoch {epoch + 1}: clean test accuracy {100 * acc:.2f}%',
              flush=True)

  return EpochAccuracy()
