"""The built-in generator: a small conditional VAE (Keras 3), and its export.

A conditional VAE (Kingma et al., "Semi-supervised learning with deep
generative models", NeurIPS 2014, https://arxiv.org/abs/1406.5298; Sohn et
al., NeurIPS 2015) with MLP encoder and decoder, both given the class as a
one-hot vector. The decoder outputs one Bernoulli logit per pixel; images
are *sampled* from those Bernoulli pixels rather than shown as their means
(mean images are blurry, averages of many strokes; sampled ones have the
sharp, varied strokes of real digits, and a classifier trained on them
generalises better: BUILD_NOTES.md, "Generated queries and synthetic data").

Why this model (the same section has the figures): on a CPU, sample quality
and diversity per CPU-minute decide. A conditional DCGAN needs many epochs
to stop collapsing, a diffusion U-Net costs far more per epoch and per
sample, while an MLP VAE trains an MNIST epoch in seconds and samples
thousands of images per second, with likelihood training that covers every
mode of every class.

Export (`export_generator`) writes a SavedModel with signatures

    generate(label: int64 (N,), noise: float32 (N, D)) -> {'images': (N, H, W, C)}
    generate_mean(label, noise) -> {'images': ...}  the Bernoulli means
    serving_default: the same as generate
    classify(images) -> {'probabilities', 'label'}  (when a classifier is
      exported with it: the generator's own classifier, for filtering)

`noise` is standard normal with D = latent_dim + H*W*C: the first
latent_dim entries make the latent code, the others drive the Bernoulli
sampling of each pixel (pixel = 1 where Phi(noise) < p), so one noise array
determines the image and the caller holds all randomness. The latent code
is the noise itself (the prior) or, with `fit_latent`'s tables (the
default of `pipelines.train_generator`), z = m_c + L_c noise: a Gaussian
per class fitted to the codes of the training images, which gave 97.4%
against 96.4% for a CNN trained on 10,000 generated MNIST images. Beside
`saved_model.pb`, `assets.extra/generator.json` records the class names,
image shape and latent sampling.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import literal
from modelsteal.errors import UnknownNameError

GENERATOR_JSON = os.path.join('assets.extra', 'generator.json')


def build_cvae(image_shape, num_classes: int, latent_dim: int = 16,
               hidden: tuple[int, ...] = (512, 256), seed: int = 0,
               decoder: str = 'mlp'):
  """A `CVAE` keras.Model (built on first call).

  `decoder`: `mlp` (the hidden sizes reversed), or `conv`: a dense layer to
  a (H/4, W/4, 64) map and two stride-2 transposed convolutions (64, 32
  filters), then a 3x3 convolution to one logit per pixel; H and W must be
  multiples of 4.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  h, w, c = (int(d) for d in image_shape)
  dim = h * w * c

  def mlp(name, in_dim, out_dim, sizes):
    inp = keras.Input((in_dim,))
    cond = keras.Input((num_classes,))
    t = keras.layers.Concatenate()([inp, cond])
    for s in sizes:
      t = keras.layers.Dense(s, activation='relu')(t)
    return keras.Model([inp, cond], keras.layers.Dense(out_dim)(t), name=name)

  def conv_decoder():
    if h % 4 or w % 4:
      raise ConfigError('generator_decoder', '=conv needs image sides that '
                        f'are multiples of 4, got {h}x{w}.')
    inp = keras.Input((latent_dim,))
    cond = keras.Input((num_classes,))
    t = keras.layers.Concatenate()([inp, cond])
    t = keras.layers.Dense(hidden[-1], activation='relu')(t)
    t = keras.layers.Dense((h // 4) * (w // 4) * 64, activation='relu')(t)
    t = keras.layers.Reshape((h // 4, w // 4, 64))(t)
    for filters in (64, 32):
      t = keras.layers.Conv2DTranspose(filters, 4, strides=2, padding='same',
                                       activation='relu')(t)
    t = keras.layers.Conv2D(c, 3, padding='same')(t)
    return keras.Model([inp, cond], keras.layers.Flatten()(t), name='decoder')

  if decoder not in ('mlp', 'conv'):
    raise UnknownNameError('generator_decoder', ': unknown decoder '
                           f'{literal(repr(decoder))}; valid: mlp, conv.')

  class CVAE(keras.Model):
    """Encoder q(z | x, y), decoder p(x | z, y) with Bernoulli pixels."""

    def __init__(self):
      super().__init__()
      self.image_shape = (h, w, c)
      self.num_classes = num_classes
      self.latent_dim = latent_dim
      self.encoder = mlp('encoder', dim, 2 * latent_dim, hidden)
      self.decoder = (conv_decoder() if decoder == 'conv' else
                      mlp('decoder', latent_dim, dim, tuple(reversed(hidden))))
      self.seeds = keras.random.SeedGenerator(seed)
      self.trackers = [keras.metrics.Mean(name=n)
                       for n in ('loss', 'reconstruction', 'kl')]

    @property
    def metrics(self):
      return self.trackers

    def call(self, inputs, training=False):
      x, y = inputs
      cond = tf.one_hot(tf.cast(y, tf.int32), num_classes)
      stats = self.encoder([tf.reshape(x, [-1, dim]), cond])
      mu, logvar = tf.split(stats, 2, axis=-1)
      eps = keras.random.normal(tf.shape(mu), seed=self.seeds)
      z = mu + tf.exp(0.5 * logvar) * eps if training else mu
      return self.decoder([z, cond]), mu, logvar

    def decode_logits(self, z, labels):
      cond = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
      return tf.reshape(self.decoder([z, cond]), [-1, h, w, c])

    def _loss_terms(self, x, y, training):
      logits, mu, logvar = self((x, y), training=training)
      flat = tf.reshape(x, [-1, dim])
      rec = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
          labels=flat, logits=logits), axis=-1)
      kl = -0.5 * tf.reduce_sum(1 + logvar - mu ** 2 - tf.exp(logvar), -1)
      return tf.reduce_mean(rec + kl), tf.reduce_mean(rec), tf.reduce_mean(kl)

    def _track(self, values):
      for t, v in zip(self.trackers, values):
        t.update_state(v)
      return {t.name: t.result() for t in self.trackers}

    def train_step(self, data):
      x, y = data
      with tf.GradientTape() as tape:
        values = self._loss_terms(x, y, training=True)
      grads = tape.gradient(values[0], self.trainable_weights)
      self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
      return self._track(values)

    def test_step(self, data):
      x, y = data
      return self._track(self._loss_terms(x, y, training=False))

  model = CVAE()
  model((tf.zeros([1, h, w, c]), tf.zeros([1], tf.int64)))  # build
  return model


def train_cvae(x: np.ndarray, y: np.ndarray, num_classes: int, *,
               epochs: int = 20, latent_dim: int = 16,
               hidden: tuple[int, ...] = (512, 256), batch_size: int = 128,
               learning_rate: float = 1e-3, seed: int = 0,
               backup_dir: str | None = None, callbacks=(), desc: str = '',
               decoder: str = 'mlp'):
  """Trains a conditional VAE on images `x` float32 (N, H, W, C) in [0, 1]
  and int labels `y` (N,); resumable through `backup_dir`.

  Returns:
    The trained `CVAE` model.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from modelsteal import progress  # pylint: disable=g-import-not-at-top
  from modelsteal.data import make_tf_dataset  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  model = build_cvae(x.shape[1:], num_classes, latent_dim, hidden, seed,
                     decoder)
  steps = -(-len(x) // batch_size)
  model.compile(optimizer=keras.optimizers.Adam(
      keras.optimizers.schedules.CosineDecay(
          learning_rate, decay_steps=max(1, steps * epochs), alpha=0.1)))
  cbs = list(callbacks)
  if backup_dir:
    cbs.insert(0, keras.callbacks.BackupAndRestore(backup_dir))
  if progress.verbose():
    verbose = 2
  else:
    verbose = 0
    cbs.append(progress.keras_callback(desc or 'train generator'))
  ds = make_tf_dataset(np.asarray(x, np.float32), np.asarray(y, np.int64),
                       batch_size, shuffle=True, seed=seed)
  model.fit(ds, epochs=epochs, verbose=verbose, callbacks=cbs, shuffle=False)
  return model


def fit_latent(model, x: np.ndarray, y: np.ndarray, batch_size: int = 2048):
  """Per-class Gaussians fitted to the encoder's aggregate posterior.

  A VAE's prior N(0, I) and the codes its encoder actually gives the
  training images differ (prior holes: regions the decoder never learned to
  draw). Sampling from a density fitted to the codes after training (Ghosh
  et al., "From Variational to Deterministic Autoencoders", ICLR 2020,
  ex-post density estimation) gives better images at no training cost. Here,
  per class c: the mean m_c and covariance S_c of the posterior means on the
  images of c, plus the mean posterior variance (the moments of q(z | c)).

  Returns:
    (means (K, d), cholesky factors (K, d, d)), float32: z = m_c + L_c eps.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  d, k = model.latent_dim, model.num_classes
  stats = []
  for i in range(0, len(x), batch_size):
    xb = tf.constant(np.asarray(x[i:i + batch_size], np.float32).reshape(
        -1, int(np.prod(model.image_shape))))
    stats.append(model.encoder([xb, tf.one_hot(y[i:i + batch_size], k)])
                 .numpy())
  stats = np.concatenate(stats)
  mu, var = stats[:, :d], np.exp(stats[:, d:])
  means = np.zeros((k, d), np.float32)
  chols = np.tile(np.eye(d, dtype=np.float32), (k, 1, 1))
  for c in range(k):
    m = mu[y == c]
    if len(m) < 2:  # a class without images keeps the prior
      continue
    cov = np.cov(m, rowvar=False).reshape(d, d) + np.diag(var[y == c].mean(0))
    means[c] = m.mean(0)
    chols[c] = np.linalg.cholesky(cov + 1e-6 * np.eye(d))
  return means, chols


def export_generator(model, base_dir: str, class_names, *, classifier=None,
                     fitted_latent=None, version: int = 1) -> str:
  """Writes `<base_dir>/<version>/`, a SavedModel with the signatures of
  the module docstring; returns the version directory.

  Args:
    model: a trained `CVAE` (from `train_cvae`).
    base_dir: the model's base directory (TF Serving layout).
    class_names: names, index = class.
    classifier: optional logits Keras model on the same images, exported as
      `classify` (the generator's own classifier, used to filter samples).
    fitted_latent: optional (means, cholesky factors) from `fit_latent`: the
      latent part of `noise` (standard normal) is mapped to
      z = m_c + L_c noise for class c. None: z = noise (the prior).
    version: version number.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  h, w, c = model.image_shape
  latent = model.latent_dim
  k = model.num_classes
  if len(class_names) != k:
    raise ValueError(f'{len(class_names)} class names for {k} classes.')
  noise_dim = latent + h * w * c
  latent_tables = None if fitted_latent is None else tuple(
      tf.constant(np.asarray(t, np.float32)) for t in fitted_latent)
  spec = [tf.TensorSpec([None], tf.int64, name='label'),
          tf.TensorSpec([None, noise_dim], tf.float32, name='noise')]

  def means(labels, noise):
    # Out-of-range classes would become all-zero one-hot rows and silently
    # produce junk; clipping makes them a clear "class K-1" instead, and the
    # client checks classes before it asks.
    labels = tf.clip_by_value(labels, 0, k - 1)
    z = noise[:, :latent]
    if latent_tables is not None:
      z = tf.gather(latent_tables[0], labels) + tf.einsum(
          'nij,nj->ni', tf.gather(latent_tables[1], labels), z)
    return tf.sigmoid(model.decode_logits(z, labels))

  @tf.function(input_signature=spec)
  def generate(labels, noise):
    p = means(labels, noise)
    e = tf.reshape(noise[:, latent:], [-1, h, w, c])
    u = 0.5 * (1.0 + tf.math.erf(e / np.sqrt(2.0).astype(np.float32)))
    return {'images': tf.cast(u < p, tf.float32)}

  @tf.function(input_signature=spec)
  def generate_mean(labels, noise):
    return {'images': means(labels, noise)}

  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint('generate', generate)
  archive.add_endpoint('generate_mean', generate_mean)
  archive.add_endpoint('serving_default', generate)
  if classifier is not None:
    archive.track(classifier)

    @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32,
                                                name='images')])
    def classify(images):
      probs = tf.nn.softmax(classifier(images, training=False), axis=-1)
      return {'probabilities': probs,
              'label': tf.argmax(probs, axis=-1, output_type=tf.int64)}

    archive.add_endpoint('classify', classify)
  os.makedirs(base_dir, exist_ok=True)
  final = os.path.join(base_dir, str(version))
  tmp = os.path.join(base_dir, f'.tmp-{version}-{os.getpid()}')
  shutil.rmtree(tmp, ignore_errors=True)
  archive.write_out(tmp, verbose=False)
  os.makedirs(os.path.join(tmp, 'assets.extra'), exist_ok=True)
  with open(os.path.join(tmp, GENERATOR_JSON), 'w') as f:
    json.dump({'kind': 'cvae', 'class_names': list(class_names),
               'image_shape': [h, w, c], 'latent_dim': latent,
               'latent_sampling': 'prior' if latent_tables is None else
                                  'fitted per class (fit_latent)',
               'noise_dim': noise_dim, 'noise': 'standard normal',
               'signatures': ['generate', 'generate_mean', 'serving_default']
               + (['classify'] if classifier is not None else [])}, f,
              indent=1)
  if os.path.exists(final):
    shutil.rmtree(final)
  os.rename(tmp, final)
  return final
