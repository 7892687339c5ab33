"""Neural Tangent Generalization Attack: GP mean in closed form, then PGD.

Yuan & Wu, "Neural Tangent Generalization Attacks", ICML 2021,
https://arxiv.org/abs/2106.02963 (Algorithm 1, block-wise NTGA).

For a block of training images `x_b` (n images, labels Y_b one-hot (n, K)),
the surrogate's mean prediction on the validation target after time t of
gradient descent on the MSE is, as `nt.predict.gradient_descent_mse` defines
it (learning rate 1, zero initial mean output):

    f_t(x_v) = K_vb f(K_bb + r I) Y_b,   f(lambda) = (1 - exp(-lambda t / (n K))) / lambda

with K the surrogate's NTK, r = diag_reg * trace(K_bb) / n. NTGA maximises
the cross-entropy of f_t(x_v) against the validation labels over x_b within an
L-inf ball, by projected gradient ascent.

What differs from the official code (github.com/lionelmessi6410/ntga), on
purpose:

* a real PGD: steps of `eps_iter` from the current iterate, projected onto the
  eps ball around the clean block and onto [0, 1] after every step, optional
  uniform random start (the official loop restarts from the clean block with a
  full-eps step each iteration: one FGSM step, repeated; `official=True`
  reproduces that: one gradient, one full-eps step);
* f(K_bb + r I) Y_b is computed once per step from one `eigh` with a
  hand-written backward pass (Daleckii-Krein divided differences), stable for
  close eigenvalues; `nt.predict.gradient_descent_mse` caches its
  eigendecomposition, which leaks tracers under `jax.grad`;
* the block's own kernel and its GP weights are computed once per step, not
  once per validation batch; validation batches are sharded over every JAX
  device;
* float32 by default (float64 on request), and every sample is poisoned.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.ntga import kernels


@dataclasses.dataclass(frozen=True)
class AttackConfig:
  """PGD and GP settings of one NTGA run.

  Attributes:
    eps: L-inf budget on [0, 1] pixels (MNIST 0.3, CIFAR-10 8/255).
    eps_iter: PGD step; None means min(eps, 2.5 * eps / nb_iter) (Madry et
      al.: the boundary is reachable in 40% of the steps).
    nb_iter: PGD steps per block.
    t: training time of the GP mean, divided inside by the number of label
      entries (n K) as neural-tangents does.
    diag_reg: diagonal regulariser relative to the block kernel's mean
      diagonal.
    rand_init: start from a uniform random point of the eps ball.
    official: the official code's procedure instead of PGD: one gradient
      at the clean block and one step of the full eps along its sign
      (`nb_iter` and `eps_iter` are then ignored; `rand_init` must be off).
    precision: `float32` or `float64`.
    val_batch_size: validation images per batch and device (memory bound).
    val_sample: if > 0, each gradient (and the final loss) uses this many
      validation images drawn afresh without replacement from the target,
      so a gradient costs what a target of `val_sample` images would while
      the steps together still see the whole target; 0 uses all of it.
  """
  eps: float = 0.3
  eps_iter: float | None = None
  nb_iter: int = 10
  t: float = 64.0
  diag_reg: float = 1e-4
  rand_init: bool = False
  precision: str = 'float32'
  val_batch_size: int = 500
  official: bool = False
  val_sample: int = 0

  @property
  def steps(self) -> int:
    return 1 if self.official else self.nb_iter

  @property
  def step(self) -> float:
    if self.official:
      return self.eps
    if self.eps_iter:
      return self.eps_iter
    return min(self.eps, 2.5 * self.eps / max(self.nb_iter, 1))

  def validate(self) -> None:
    if not 0 < self.eps <= 1:
      raise ConfigError('eps', f'must be in (0, 1] (pixels are in [0, 1]), '
                        f'got {self.eps}.')
    if not 0 < self.step <= self.eps:
      raise ConfigError('eps_iter', f'must be in (0, {{eps}}={self.eps}], '
                        f'got {self.step}.')
    if self.official and self.rand_init:
      raise ConfigError('official', 'mode starts from the clean block: drop '
                        '{rand_init}.')
    if self.nb_iter < 1:
      raise ConfigError('nb_iter', f'must be at least 1, got {self.nb_iter}.')
    if self.t <= 0:
      raise ConfigError('t', f'must be positive, got {self.t}.')
    if self.diag_reg < 0:
      raise ConfigError('diag_reg', f'must be >= 0, got {self.diag_reg}.')
    if self.precision not in ('float32', 'float64'):
      raise ConfigError('precision', f'must be float32 or float64, got '
                        f'{self.precision!r}.')
    if self.val_batch_size < 1:
      raise ConfigError('val_batch_size', 'must be at least 1.')
    if self.val_sample < 0:
      raise ConfigError('val_sample', f'must be >= 0 (0: the whole '
                        f'validation target), got {self.val_sample}.')


# ------------------------------------------------------------ GP mean weights
def _weights_of_eigenvalues(lam, s):
  """f(lambda) = (1 - exp(-lambda s)) / lambda and f'(lambda), stably.

  With x = lambda s: f = s phi(x), f' = s^2 phi'(x), phi(x) = (1 - e^-x) / x;
  phi' by its series where the closed form cancels (x < 1e-2).
  """
  lam = jnp.maximum(lam, jnp.finfo(lam.dtype).tiny)  # PSD up to round-off
  x = lam * s
  em1 = jnp.expm1(-x)
  phi = -em1 / x
  x_safe = jnp.maximum(x, 1e-2)
  em1_safe = jnp.expm1(-x_safe)
  dphi = jnp.where(x < 1e-2, -0.5 + x / 3 - x * x / 8,
                   (x_safe * (em1_safe + 1) + em1_safe) / (x_safe * x_safe))
  return s * phi, s * s * dphi


@jax.custom_vjp
def _matrix_function_apply(k, y, s):
  lam, v = jnp.linalg.eigh(k)
  f, _ = _weights_of_eigenvalues(lam, s)
  return v @ (f[:, None] * (v.T @ y))


def _mfa_fwd(k, y, s):
  lam, v = jnp.linalg.eigh(k)
  f, df = _weights_of_eigenvalues(lam, s)
  return v @ (f[:, None] * (v.T @ y)), (lam, v, f, df, y, s)


def _mfa_bwd(res, g):
  """Daleckii-Krein: d f(K) = V (G o (V^T dK V)) V^T, G the divided differences.

  Differentiating `eigh` instead would divide by eigenvalue gaps that can be
  tiny (near-duplicate images) and rely on cancellation.
  """
  lam, v, f, df, y, s = res
  a = v.T @ g  # (n, K)
  b = v.T @ y
  gap = lam[:, None] - lam[None, :]
  # Where eigenvalues are close (relative to 1/s, the scale on which f
  # bends), the divided difference cancels; the mean derivative is accurate.
  tol = 1e-5 if lam.dtype == jnp.float64 else 1e-2
  close = jnp.abs(gap) * s < tol
  divided = (f[:, None] - f[None, :]) / jnp.where(close, 1.0, gap)
  divided = jnp.where(close, 0.5 * (df[:, None] + df[None, :]), divided)
  inner = 0.5 * (a @ b.T + b @ a.T)  # symmetric part: K is symmetric
  k_bar = v @ (divided * inner) @ v.T
  y_bar = v @ (f[:, None] * a)
  return k_bar, y_bar, jnp.zeros_like(s)


_matrix_function_apply.defvjp(_mfa_fwd, _mfa_bwd)


def gp_weights(k_bb, y_b, t: float, diag_reg: float = 1e-4):
  """alpha (n, K) with f_t(x) = K(x, x_b) @ alpha, the GP mean at time t.

  Args:
    k_bb: block NTK (n, n).
    y_b: block targets (n, K), one-hot.
    t: training time; divided by y_b.size as neural-tangents does.
    diag_reg: regulariser relative to the mean diagonal of k_bb.
  """
  n = k_bb.shape[0]
  k_reg = k_bb + (diag_reg * jnp.trace(k_bb) / n) * jnp.eye(n, dtype=k_bb.dtype)
  s = jnp.asarray(t / y_b.size, k_bb.dtype)
  return _matrix_function_apply(k_reg, y_b.astype(k_bb.dtype), s)


def gp_predict(k_tb, k_bb, y_b, t: float, diag_reg: float = 1e-4):
  """GP mean prediction (N_test, K) on test points with NTK k_tb (N_test, n)."""
  return k_tb @ gp_weights(k_bb, y_b, t, diag_reg)


def cross_entropy(logits, y_onehot, weights):
  """Sum over rows of weighted cross-entropy (padding rows weigh 0)."""
  return -jnp.sum(weights * jnp.sum(jax.nn.log_softmax(logits) * y_onehot,
                                    axis=-1))


# -------------------------------------------------------------------- attack
@functools.lru_cache(maxsize=16)
def _compiled(kernel_fn: Callable, t: float, reg: float):
  """The jitted pieces of one step, shared by attacks with the same settings
  (XLA compiles once per kernel, t and shapes, not once per `NTGA`)."""

  # The whole block kernel on one device: `kernels.block_kernel_fn` (the
  # CPU CNN kernel computes each pair once there).
  block_fn = kernels.block_kernel_fn(kernel_fn)

  def rows_fn(lo, hi):
    return lambda x: (block_fn(x) if (lo, hi) == (0, x.shape[0]) else
                      kernel_fn(x[lo:hi], x))

  def kernel_rows(xb, lo, hi):
    return rows_fn(lo, hi)(xb)

  def rows_vjp(xb, k_bar_rows, lo, hi):
    # x enters the rows [lo, hi) of K(x, x) through both arguments; the parts
    # of all devices add up to the gradient of the whole block kernel. A
    # kernel whose backward pass recomputes what it needs (`cnn_ntk`) is not
    # evaluated forward here: XLA drops the unused primal.
    return jax.vjp(rows_fn(lo, hi), xb)[1](k_bar_rows)[0]

  def alpha_fn(k_bb, yb):
    return gp_weights(k_bb, yb, t, reg)

  def gp_vjp(k_bb, yb, g):
    return jax.vjp(lambda k: gp_weights(k, yb, t, reg), k_bb)[1](g)[0]

  def chunk_loss(xb, alpha, xv, yv, wv):
    logits = kernel_fn(xv, xb) @ alpha
    correct = jnp.sum(wv * (jnp.argmax(logits, -1) == jnp.argmax(yv, -1)))
    return cross_entropy(logits, yv, wv), correct

  # The CPU CNN kernel's fused pass gives the same loss and gradients
  # without running the kernel forward twice (`kernels.cnn_val_loss_grad`).
  chunk_grad = (kernels.fused_val_grad_fn(kernel_fn) or
                jax.value_and_grad(chunk_loss, argnums=(0, 1), has_aux=True))
  return (jax.jit(kernel_rows, static_argnums=(1, 2)),
          jax.jit(rows_vjp, static_argnums=(2, 3)),
          jax.jit(alpha_fn), jax.jit(gp_vjp), jax.jit(chunk_grad),
          jax.jit(chunk_loss))


def _split(n: int, parts: int) -> list[tuple[int, int]]:
  """[lo, hi) row ranges of n rows in `parts` near-equal parts."""
  edges = np.linspace(0, n, parts + 1).round().astype(int)
  return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


class NTGA:
  """Block-wise NTGA against one validation target.

  Work is spread over `devices` by dispatch, not by SPMD partitioning: each
  validation batch lives on one device (round robin) and each device
  computes its share of the block kernel's rows and the host adds the
  parts. (Measured with JAX 0.5.3, BUILD_NOTES issue 11, session 5: two
  host CPU devices ran their programs one after the other, so on a CPU
  this split buys no parallelism; on several accelerators it does.) (XLA's SPMD partitioner
  on the CPU turned the tiled CNN kernel into a program that did not finish.)

  Args:
    kernel_fn: surrogate NTK (x1, x2) -> (N1, N2), see `kernels`.
    x_val: float (N_val, H, W, C) validation target images in [0, 1].
    y_val: int (N_val,) their labels.
    num_classes: K.
    config: `AttackConfig`.
    devices: JAX devices to use (default: all).
  """

  def __init__(self, kernel_fn: Callable, x_val: np.ndarray, y_val: np.ndarray,
               num_classes: int, config: AttackConfig, devices=None):
    config.validate()
    self.config = config
    self.num_classes = int(num_classes)
    self.dtype = jnp.float64 if config.precision == 'float64' else jnp.float32
    if (self.dtype == jnp.float64 and
        jax.dtypes.canonicalize_dtype(jnp.float64) != jnp.float64):
      raise ValueError('precision float64 needs JAX x64 mode: run inside '
                       '`jax.enable_x64()` (JAX < 0.7: '
                       '`jax.experimental.enable_x64()`).')
    self.devices = list(devices or jax.devices())
    self.n_devices = len(self.devices)
    self.n_val = len(x_val)
    if config.val_sample > self.n_val:
      raise ConfigError('val_sample', f'({config.val_sample}) exceeds the '
                        f'validation target ({self.n_val} images).')
    self._pool = None
    if 0 < config.val_sample < self.n_val:
      # kept on the host; each gradient ships its own draw
      self._pool = (np.asarray(x_val), np.asarray(y_val))
      self._val = None
    else:
      self._val = self._batches(x_val, y_val)
    (self._kernel_rows, self._rows_vjp, self._alpha_of, self._gp_vjp,
     self._chunk_grad, self._chunk_loss) = _compiled(
         kernel_fn, float(config.t), float(config.diag_reg))
    self.gradients = 0  # loss_and_grad calls, for records and tests

  def _batches(self, x_val, y_val):
    """Validation images as padded batches, round robin over the devices:
    a list of (device index, x, one-hot y, weights)."""
    chunk = self.config.val_batch_size
    np_dtype = np.dtype(self.config.precision)
    n_pad = (-len(x_val)) % chunk
    xv = np.concatenate([np.asarray(x_val, np_dtype),
                         np.zeros((n_pad,) + x_val.shape[1:], np_dtype)])
    yv = np.eye(self.num_classes, dtype=np_dtype)[np.asarray(y_val)]
    yv = np.concatenate([yv, np.zeros((n_pad, self.num_classes), np_dtype)])
    wv = np.concatenate([np.ones(len(x_val), np_dtype),
                         np.zeros(n_pad, np_dtype)])
    out = []
    for k, i in enumerate(range(0, len(xv), chunk)):
      d = k % self.n_devices
      out.append((d,) + tuple(jax.device_put(a[i:i + chunk], self.devices[d])
                              for a in (xv, yv, wv)))
    return out

  def validation(self, rng: np.random.Generator | None = None):
    """(batches, image count) for one gradient or loss: the whole target,
    or with `val_sample` a fresh draw of that many images from `rng`."""
    if self._pool is None:
      return self._val, self.n_val
    rng = rng if rng is not None else np.random.default_rng(0)
    pick = np.sort(rng.choice(self.n_val, self.config.val_sample,
                              replace=False))
    return (self._batches(self._pool[0][pick], self._pool[1][pick]),
            len(pick))

  def _on_all(self, x):
    x = np.asarray(x, self.config.precision)
    return [jax.device_put(x, d) for d in self.devices]

  def _to(self, x, d: int):
    return jax.device_put(x, self.devices[d])

  def _block(self, xb, yb):
    """Block on every device, its kernel's row parts, K_bb and alpha."""
    xbs = self._on_all(xb)
    parts = _split(len(xb), self.n_devices)
    rows = [self._kernel_rows(xbs[d], lo, hi)
            for d, (lo, hi) in enumerate(parts)]
    k_bb = jnp.concatenate([self._to(r, 0) for r in rows], axis=0)
    yb1 = self._to(np.eye(self.num_classes,
                          dtype=self.config.precision)[np.asarray(yb)], 0)
    alpha = self._alpha_of(k_bb, yb1)
    alphas = [alpha] + [self._to(alpha, d) for d in range(1, self.n_devices)]
    return xbs, parts, k_bb, yb1, alphas

  def loss(self, xb: np.ndarray, yb: np.ndarray,
           rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Mean validation cross-entropy and accuracy of the GP trained on x_b
    (with `val_sample`, on a draw from `rng`)."""
    val, n = self.validation(rng)
    xbs, _, _, _, alphas = self._block(xb, yb)
    acc = [[0.0, 0.0] for _ in self.devices]
    for d, xv, yv, wv in val:
      l, c = self._chunk_loss(xbs[d], alphas[d], xv, yv, wv)
      acc[d] = [acc[d][0] + l, acc[d][1] + c]
    total = sum(float(a[0]) for a in acc)
    correct = sum(float(a[1]) for a in acc)
    return total / n, correct / n

  def loss_and_grad(self, xb: np.ndarray, yb: np.ndarray,
                    rng: np.random.Generator | None = None):
    """(mean loss, accuracy, d mean loss / d x_b as float (n, H, W, C));
    with `val_sample`, over a draw from `rng`."""
    val, n = self.validation(rng)
    xbs, parts, k_bb, yb1, alphas = self._block(xb, yb)
    acc = [None] * self.n_devices  # per device: loss, correct, g_x, g_alpha
    for d, xv, yv, wv in val:  # dispatched asynchronously
      (l, c), (gx, ga) = self._chunk_grad(xbs[d], alphas[d], xv, yv, wv)
      acc[d] = ((l, c, gx, ga) if acc[d] is None else
                tuple(a + b for a, b in zip(acc[d], (l, c, gx, ga))))
    acc = [a for a in acc if a is not None]
    total = sum(float(a[0]) for a in acc)
    correct = sum(float(a[1]) for a in acc)
    g_alpha = sum(self._to(a[3], 0) for a in acc)
    k_bar = self._gp_vjp(k_bb, yb1, g_alpha)
    g_x = [self._rows_vjp(xbs[d], self._to(k_bar[lo:hi], d), lo, hi)
           for d, (lo, hi) in enumerate(parts)]
    g = sum(np.asarray(x) for x in g_x) + sum(np.asarray(a[2]) for a in acc)
    self.gradients += 1
    return total / n, correct / n, g / n

  def attack_block(self, xb: np.ndarray, yb: np.ndarray, key=None,
                   callback: Callable[[int, float], None] | None = None):
    """Projected gradient ascent on one block.

    Args:
      xb: float (n, H, W, C) clean block in [0, 1].
      yb: int (n,) its labels.
      key: PRNG key for the random start (needed when `rand_init`) and the
        validation draws of `val_sample`.
      callback: called with (step, loss before the step).

    Returns:
      (poisoned block float32 (n, H, W, C) within eps of xb and in [0, 1],
       dict of losses and validation accuracies of the GP before and after).
    """
    cfg = self.config
    np_dtype = np.dtype(cfg.precision)
    x0 = np.asarray(xb, np_dtype)
    lo, hi = np.maximum(x0 - cfg.eps, 0.0), np.minimum(x0 + cfg.eps, 1.0)
    x = x0
    if cfg.rand_init:
      if key is None:
        raise ValueError('rand_init needs a PRNG key.')
      noise = np.asarray(jax.random.uniform(key, x0.shape, minval=-cfg.eps,
                                            maxval=cfg.eps), np_dtype)
      x = np.clip(x0 + noise, lo, hi)
    # validation draws (val_sample): reproducible from the block's key
    rng = np.random.default_rng(
        0 if key is None else np.asarray(jax.random.key_data(key)))
    losses, accs = [], []
    for i in range(cfg.steps):
      loss, acc, g = self.loss_and_grad(x, yb, rng)
      losses.append(loss)
      accs.append(acc)
      if callback:
        callback(i, loss)
      x = np.clip(x + np_dtype.type(cfg.step) * np.sign(g), lo, hi)
    final_loss, final_acc = self.loss(x, yb, rng)
    losses.append(final_loss)
    accs.append(final_acc)
    return x.astype(np.float32), {'loss': losses, 'val_accuracy': accs}


def precision_scope(precision: str):
  """Context manager for the attack's arithmetic.

  Matrix products run at full float32 precision ('highest'): on GPUs and TPUs
  JAX's default is TF32 / bf16 passes, too coarse for the kernels' arcsin
  near correlation 1 (a no-op on CPUs). float64 also turns JAX's x64 mode on.
  """
  import contextlib  # pylint: disable=g-import-not-at-top
  stack = contextlib.ExitStack()
  stack.enter_context(jax.default_matmul_precision('highest'))
  if precision == 'float64':
    enable_x64 = getattr(jax, 'enable_x64', None)  # JAX >= 0.7
    if enable_x64 is None:
      from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top
    stack.enter_context(enable_x64())
  return stack


__all__ = ['AttackConfig', 'NTGA', 'cross_entropy', 'gp_predict', 'gp_weights',
           'precision_scope']

