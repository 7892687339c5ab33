"""A `tf.distribute` strategy from a name: `default`, `mirrored`, `tpu`.

`mirrored` uses every local GPU (or, with none, every logical CPU device);
`tpu` connects to a Colab / Cloud TPU (`TPUClusterResolver`), or to the one
named by `tpu_address`.
"""

from __future__ import annotations

STRATEGIES = ('default', 'mirrored', 'tpu')


def get_strategy(name: str = 'default', tpu_address: str | None = None):
  """Returns a `tf.distribute.Strategy`.

  Raises:
    ValueError: unknown name (lists the valid ones) or no TPU reachable.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    gpus = tf.config.list_logical_devices('GPU')
    devices = [d.name for d in (gpus or tf.config.list_logical_devices('CPU'))]
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == 'tpu':
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
          tpu=tpu_address or '')
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
      raise ValueError(f'--distribute=tpu: no TPU found ({e}). On Colab pick '
                       'a TPU runtime; elsewhere pass its address.') from e
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f'unknown distribution strategy {name!r}; valid: '
                   f'{", ".join(STRATEGIES)}.')


_CURRENT = None


def use(name: str = 'default', tpu_address: str | None = None):
  """Sets the strategy that training components use, and returns it.

  Kept out of component fingerprints on purpose: where a model was trained
  does not change what it is, so a victim trained on a TPU is reused on a CPU.
  """
  global _CURRENT
  _CURRENT = get_strategy(name, tpu_address)
  return _CURRENT


def current():
  """The strategy set by `use`, or TF's default strategy."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return _CURRENT or tf.distribute.get_strategy()
