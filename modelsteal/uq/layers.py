"""The few Keras 3 layers the UQ students need (no tf_keras, no TFP/edward2).

Stochastic layers (`MCDropout`, `BayesDense`, `BayesConv2D`) draw their noise
at prediction time from a *sample context*: `with sample_context(seed, t):`
makes every stochastic layer use sample `t`'s noise, seeded statelessly from
(seed, t, the layer's salt). The noise has no batch axis (one dropout mask,
one weight draw per sample), so sample `t` is one network applied to every
image: answers do not depend on how images are batched, and a SavedModel that
traces `S` contexts (`modelsteal.uq.export`) gives exactly the Keras output.
Outside a context, at inference, they are deterministic (dropout off, mean
weights). In training they draw fresh noise every step.

`BEDense` / `BEConv2D` are BatchEnsemble layers (Wen et al., ICLR 2020,
arXiv 2002.06715): a shared slow weight W and per-member rank-1 fast weights,
W_i = W * (r_i s_i^T). Their input batch is M stacked copies of the images,
member i's copy at rows [i N, (i + 1) N).
"""

from __future__ import annotations

import contextlib
import math

import keras
from keras import ops

_SAMPLE: list[tuple[int, int] | None] = [None]


@contextlib.contextmanager
def sample_context(seed: int, t: int):
  """Stochastic layers called inside use the noise of sample `t` of `seed`."""
  old = _SAMPLE[0]
  _SAMPLE[0] = (int(seed), int(t))
  try:
    yield
  finally:
    _SAMPLE[0] = old


def _stateless_seed(salt: int) -> int | None:
  ctx = _SAMPLE[0]
  if ctx is None:
    return None
  seed, t = ctx
  return (seed * 1_000_003 + t * 7_919 + salt * 104_729 + 17) % (2**31 - 1)


@keras.saving.register_keras_serializable('modelsteal')
class MCDropout(keras.layers.Dropout):
  """Dropout that stays on at prediction time inside a sample context.

  Unlike calling the model with `training=True`, BatchNorm layers stay in
  inference mode (Gal & Ghahramani 2016, arXiv 1506.02142).
  """

  def __init__(self, rate, salt: int = 0, **kwargs):
    super().__init__(rate, **kwargs)
    self.salt = int(salt)

  def call(self, inputs, training=False):
    if training:
      return super().call(inputs, training=True)
    seed = _stateless_seed(self.salt)
    if seed is None or self.rate == 0:
      return inputs
    shape = (1,) + tuple(inputs.shape[1:])
    keep = keras.random.uniform(shape, seed=seed) >= self.rate
    return ops.where(keep, inputs / (1.0 - self.rate), ops.zeros_like(inputs))

  def get_config(self):
    return {**super().get_config(), 'salt': self.salt}


def _softplus_inverse(x: float) -> float:
  return math.log(math.expm1(x))


class _Bayes:
  """Mean-field Gaussian weights (Blundell et al. 2015, arXiv 1505.05424).

  sigma = softplus(rho); prior N(0, prior_std^2); the KL term is added as a
  layer loss scaled by `kl_scale` (1 / training-set size), so the summed loss
  is the per-example negative ELBO.
  """

  def _bayes_init(self, salt, prior_std, init_std, kl_scale):
    self.salt = int(salt)
    self.prior_std = float(prior_std)
    self.init_std = float(init_std)
    self.kl_scale = float(kl_scale)

  def _bayes_build(self):
    rho0 = keras.initializers.Constant(_softplus_inverse(self.init_std))
    self.kernel_rho = self.add_weight(name='kernel_rho',
                                      shape=self.kernel.shape,
                                      initializer=rho0)
    self.bias_rho = (self.add_weight(name='bias_rho', shape=self.bias.shape,
                                     initializer=rho0) if self.use_bias
                     else None)
    self._rng = keras.random.SeedGenerator(self.salt)

  def _draw(self, mu, rho, training):
    if training:
      eps = keras.random.normal(mu.shape, seed=self._rng)
    else:
      seed = _stateless_seed(self.salt * 2 + (rho is self.bias_rho))
      if seed is None:
        return mu
      eps = keras.random.normal(mu.shape, seed=seed)
    return mu + ops.softplus(rho) * eps

  def kl(self):
    total = 0.0
    for mu, rho in ((self.kernel, self.kernel_rho), (self.bias, self.bias_rho)):
      if rho is None:
        continue
      sigma = ops.softplus(rho)
      p = self.prior_std
      total += ops.sum(ops.log(p / sigma) + (sigma**2 + mu**2) / (2 * p**2)
                       - 0.5)
    return total

  def _bayes_config(self):
    return {'salt': self.salt, 'prior_std': self.prior_std,
            'init_std': self.init_std, 'kl_scale': self.kl_scale}


@keras.saving.register_keras_serializable('modelsteal')
class BayesDense(_Bayes, keras.layers.Dense):
  """`Dense` with mean-field Gaussian weights (reparameterisation)."""

  def __init__(self, units, salt=0, prior_std=1.0, init_std=1e-3,
               kl_scale=1.0, **kwargs):
    super().__init__(units, **kwargs)
    self._bayes_init(salt, prior_std, init_std, kl_scale)

  def build(self, input_shape):
    super().build(input_shape)
    self._bayes_build()

  def call(self, inputs, training=False):
    w = self._draw(self.kernel, self.kernel_rho, training)
    y = ops.matmul(inputs, w)
    if self.use_bias:
      y = y + self._draw(self.bias, self.bias_rho, training)
    if training:
      self.add_loss(self.kl_scale * self.kl())
    return self.activation(y)

  def get_config(self):
    return {**super().get_config(), **self._bayes_config()}


@keras.saving.register_keras_serializable('modelsteal')
class BayesConv2D(_Bayes, keras.layers.Conv2D):
  """`Conv2D` with mean-field Gaussian weights (reparameterisation)."""

  def __init__(self, filters, kernel_size, salt=0, prior_std=1.0,
               init_std=1e-3, kl_scale=1.0, **kwargs):
    super().__init__(filters, kernel_size, **kwargs)
    self._bayes_init(salt, prior_std, init_std, kl_scale)

  def build(self, input_shape):
    super().build(input_shape)
    self._bayes_build()

  def call(self, inputs, training=False):
    w = self._draw(self.kernel, self.kernel_rho, training)
    y = self.convolution_op(inputs, w)
    if self.use_bias:
      y = y + self._draw(self.bias, self.bias_rho, training)
    if training:
      self.add_loss(self.kl_scale * self.kl())
    return self.activation(y)

  def get_config(self):
    return {**super().get_config(), **self._bayes_config()}


def _random_sign(seed):
  def init(shape, dtype=None):
    bits = keras.random.uniform(shape, seed=seed) < 0.5
    return ops.cast(ops.where(bits, -1.0, 1.0), dtype or 'float32')
  return init


class _BatchEnsemble:
  """Shared slow weight, per-member rank-1 factors (random-sign init)."""

  def _be_build(self, in_dim, out_dim):
    m = self.ensemble_size
    self.alpha = self.add_weight(name='alpha', shape=(m, in_dim),
                                 initializer=_random_sign(self.salt * 2 + 1))
    self.gamma = self.add_weight(name='gamma', shape=(m, out_dim),
                                 initializer=_random_sign(self.salt * 2 + 2))
    self.member_bias = self.add_weight(name='member_bias', shape=(m, out_dim),
                                       initializer='zeros')

  def _per_member(self, x, factor):
    """x (M*N, ..., D) * factor[i] on member i's rows."""
    m = self.ensemble_size
    shape = ops.shape(x)
    xm = ops.reshape(x, (m, -1) + tuple(x.shape[1:]))
    f = ops.reshape(factor, (m, 1) + (1,) * (len(x.shape) - 2) + (-1,))
    return ops.reshape(xm * f, shape)


@keras.saving.register_keras_serializable('modelsteal')
class BEDense(_BatchEnsemble, keras.layers.Dense):
  """BatchEnsemble `Dense` (use_bias means per-member biases)."""

  def __init__(self, units, ensemble_size=4, salt=0, **kwargs):
    super().__init__(units, **kwargs)
    self.ensemble_size = int(ensemble_size)
    self.salt = int(salt)

  def build(self, input_shape):
    super().build(input_shape)
    self._be_build(input_shape[-1], self.units)

  def call(self, inputs, training=False):
    y = ops.matmul(self._per_member(inputs, self.alpha), self.kernel)
    bias = self.member_bias + (self.bias if self.use_bias else 0.0)
    y = self._per_member(y, self.gamma) + self._per_member(
        ops.ones_like(y), bias)
    return self.activation(y)

  def get_config(self):
    return {**super().get_config(), 'ensemble_size': self.ensemble_size,
            'salt': self.salt}


@keras.saving.register_keras_serializable('modelsteal')
class BEConv2D(_BatchEnsemble, keras.layers.Conv2D):
  """BatchEnsemble `Conv2D`: input channels scaled by r_i, outputs by s_i."""

  def __init__(self, filters, kernel_size, ensemble_size=4, salt=0, **kwargs):
    super().__init__(filters, kernel_size, **kwargs)
    self.ensemble_size = int(ensemble_size)
    self.salt = int(salt)

  def build(self, input_shape):
    super().build(input_shape)
    self._be_build(input_shape[-1], self.filters)

  def call(self, inputs, training=False):
    y = self.convolution_op(self._per_member(inputs, self.alpha), self.kernel)
    bias = self.member_bias + (self.bias if self.use_bias else 0.0)
    y = self._per_member(y, self.gamma) + self._per_member(
        ops.ones_like(y), bias)
    return self.activation(y)

  def get_config(self):
    return {**super().get_config(), 'ensemble_size': self.ensemble_size,
            'salt': self.salt}
