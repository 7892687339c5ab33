"""Infinite-width surrogates of NTGA: neural tangent kernels of an FNN and a CNN.

Yuan & Wu, "Neural Tangent Generalization Attacks", ICML 2021,
https://arxiv.org/abs/2106.02963, section 4 and the official code
(github.com/lionelmessi6410/ntga, `models/*_infinite.py`):

* FNN: 5 x [Dense(512), Erf] (no read-out layer, as in the official code);
* CNN: 2 x [Conv(64, 5x5, stride 2, SAME), Relu], Flatten, Dense(384),
  Dense(192), Dense(num_classes);

both in the NTK parameterisation with W_std^2 = 1.76, b_std^2 = 0.18. Widths
do not matter at infinite width.

A kernel function here maps images `x1` (N1, H, W, C) and `x2` (N2, H, W, C)
to the NTK (N1, N2), is traceable and differentiable by JAX in both
arguments. The CNN kernel is `neural_tangents.stax`'s. The FNN kernel is
written out in closed form (`fnn_ntk`) because neural-tangents' version spends
most of its time in two places on a CPU: `arctan2`, which XLA evaluates one
scalar at a time (about 16 ns per entry; a polynomial takes 0.3 ns), and an
autodiff backward pass that makes many passes over the (N1, N2) matrices. The
closed form uses a vectorisable `arcsin` (Abramowitz & Stegun 4.4.46, abs.
error < 3e-7 in float32; float64 inputs use the exact `jnp.arcsin`) and a
hand-written backward pass; `tests/ntga_test.py` checks both value and
gradient against `neural_tangents`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

W_VAR = 1.76
B_VAR = 0.18
FNN_DEPTH = 5

KernelFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class Surrogate:
  """An infinite-width surrogate network.

  Attributes:
    name: `fnn` or `cnn`.
    kernel_fn: (x1 (N1, H, W, C), x2 (N2, H, W, C)) -> NTK (N1, N2).
    description: the architecture, for records.
    val_batch_size: validation images per batch (and per device) that keep
      the kernel's intermediates within a few hundred MB.
  """
  name: str
  kernel_fn: KernelFn
  description: str
  val_batch_size: int


# ----------------------------------------------------------------- arcsin
_ASIN_COEFFS = (-0.0012624911, 0.0066700901, -0.0170881256, 0.0308918810,
                -0.0501743046, 0.0889789874, -0.2145988016, 1.5707963050)


def _asin(x):
  """arcsin; a vectorisable polynomial in float32 (A&S 4.4.46), exact in f64."""
  if x.dtype == jnp.float64:
    return jnp.arcsin(x)
  a = jnp.abs(x)
  p = jnp.asarray(_ASIN_COEFFS[0], x.dtype)
  for c in _ASIN_COEFFS[1:]:
    p = p * a + c
  r = (math.pi / 2) - jnp.sqrt(jnp.maximum(1.0 - a, 0.0)) * p
  return jnp.where(x < 0, -r, r)


# ------------------------------------------------------------ FNN closed form
def _flat(x):
  return x.reshape(x.shape[0], -1)


def _fnn_variances(x, depth, w_var, b_var):
  """Pre-activation variances q_l (depth, N) of each Dense layer's output."""
  q = w_var * jnp.sum(x * x, axis=-1) / x.shape[-1] + b_var
  qs = []
  for _ in range(depth):
    qs.append(q)
    q = w_var * (2 / math.pi) * _asin(2 * q / (1 + 2 * q)) + b_var
  return jnp.stack(qs)


def _matvec(a, v):
  # XLA rewrites matrix-vector dots into multiply + reduce loops, strided and
  # slow on a CPU for the column sums; a dot with a few padded columns stays a
  # real matrix product.
  return (a @ jnp.pad(v[:, None], ((0, 0), (0, 7))))[:, 0]


def _vecmat(v, a):
  return (jnp.pad(v[None, :], ((0, 7), (0, 0))) @ a)[0]


def _fnn_forward(x1, x2, depth, w_var, b_var):
  """Returns the NTK and what the backward pass needs.

  The layers run in a `lax.scan`: unrolled, XLA fuses the chain of layers into
  loops that recompute every earlier layer, several times slower on a CPU.
  """
  d = x1.shape[-1]
  q1 = _fnn_variances(x1, depth, w_var, b_var)
  q2 = _fnn_variances(x2, depth, w_var, b_var)
  k = w_var * (x1 @ x2.T) / d + b_var  # Dense: nngp == ntk at the first layer

  def layer(carry, q):
    k, ntk = carry
    c1, c2 = 1 + 2 * q[0], 1 + 2 * q[1]
    p = c1[:, None] * c2[None, :]
    r = jax.lax.rsqrt(p - 4 * k * k)
    nngp = (2 / math.pi) * _asin(2 * k * jax.lax.rsqrt(p))
    ntk_out = ntk * ((4 / math.pi) * r)
    k_next = w_var * nngp + b_var
    return (k_next, w_var * ntk_out + k_next), (k, ntk, ntk_out)

  _, (ks, ntks, outs) = jax.lax.scan(layer, (k, k), (q1, q2))
  return outs[-1], (q1, q2, ks, ntks)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _fnn_ntk_flat(x1, x2, depth, w_var, b_var):
  return _fnn_forward(x1, x2, depth, w_var, b_var)[0]


def _fnn_fwd(x1, x2, depth, w_var, b_var):
  ntk, (q1, q2, ks, ntks) = _fnn_forward(x1, x2, depth, w_var, b_var)
  return ntk, (x1, x2, q1, q2, ks, ntks)


def _fnn_bwd(depth, w_var, b_var, res, g):
  """Backward pass, one fused elementwise sweep per layer (reverse scan).

  Per layer, with p = (1 + 2 q1)(1 + 2 q2), r = (p - 4k^2)^(-1/2):
  nngp' = 2/pi asin(2k / sqrt(p)), dot = 4/pi r, ntk' = ntk * dot, and
  d nngp'/dk = dot, d nngp'/dp = -2/pi k r / p, d dot/dk = 16/pi k r^3,
  d dot/dp = -2/pi r^3. The variances q reach the (N1, N2) matrices only
  through p, so their cotangents are matrix-vector products. Between layers:
  k_next = w nngp' + b and ntk_next = w ntk' + k_next.
  """
  x1, x2, q1, q2, ks, ntks = res
  d = x1.shape[-1]

  def layer(carry, xs):
    g_ntk_out, g_nngp_out = carry
    k, ntk, q1l, q2l = xs
    c1, c2 = 1 + 2 * q1l, 1 + 2 * q2l
    p = c1[:, None] * c2[None, :]
    r = jax.lax.rsqrt(p - 4 * k * k)
    g_dot = g_ntk_out * ntk
    r3 = r * r * r
    g_k = g_nngp_out * ((4 / math.pi) * r) + g_dot * ((16 / math.pi) * k * r3)
    g_p = -(2 / math.pi) * (g_nngp_out * k * r / p + g_dot * r3)
    g_ntk_in = g_ntk_out * ((4 / math.pi) * r)
    g_k_in = g_k + g_ntk_in  # ntk_in = w ntk'_prev + k_in depends on k_in too
    return ((w_var * g_ntk_in, w_var * g_k_in),
            (2 * _matvec(g_p, c2), 2 * _vecmat(c1, g_p), g_k_in))

  _, (g_q1, g_q2, g_k_in) = jax.lax.scan(
      layer, (g, jnp.zeros_like(g)), (ks, ntks, q1, q2), reverse=True)
  g_k0 = g_k_in[0]  # first layer: k = w x1 x2^T / d + b, ntk = k
  _, vjp1 = jax.vjp(lambda x: _fnn_variances(x, depth, w_var, b_var), x1)
  _, vjp2 = jax.vjp(lambda x: _fnn_variances(x, depth, w_var, b_var), x2)
  g_x1 = (w_var / d) * (g_k0 @ x2) + vjp1(g_q1)[0]
  g_x2 = (w_var / d) * jnp.einsum('ij,ik->jk', g_k0, x1) + vjp2(g_q2)[0]
  return g_x1, g_x2


_fnn_ntk_flat.defvjp(_fnn_fwd, _fnn_bwd)


def fnn_ntk(x1, x2, depth: int = FNN_DEPTH, w_var: float = W_VAR,
            b_var: float = B_VAR):
  """NTK (N1, N2) of depth x [Dense, Erf] at infinite width, in closed form.

  Args:
    x1: (N1, ...) inputs, flattened.
    x2: (N2, ...) inputs, same trailing shape and dtype.
    depth: number of [Dense, Erf] blocks.
    w_var: weight variance W_std^2.
    b_var: bias variance b_std^2.
  """
  return _fnn_ntk_flat(_flat(x1), _flat(x2), depth, w_var, b_var)


# ------------------------------------------------------- neural-tangents stax
def nt_fnn(depth: int = FNN_DEPTH, w_var: float = W_VAR, b_var: float = B_VAR):
  """The same FNN through `neural_tangents.stax` (reference and fallback)."""
  from neural_tangents import stax  # pylint: disable=g-import-not-at-top
  w, b = math.sqrt(w_var), math.sqrt(b_var)
  layers = [stax.Flatten()]
  for _ in range(depth):
    layers += [stax.Dense(512, W_std=w, b_std=b), stax.Erf()]
  kernel_fn = stax.serial(*layers)[2]
  return lambda x1, x2: kernel_fn(x1, x2, 'ntk')


def nt_cnn(num_classes: int, w_var: float = W_VAR, b_var: float = B_VAR):
  """NTGA's CNN surrogate through `neural_tangents.stax`."""
  from neural_tangents import stax  # pylint: disable=g-import-not-at-top
  w, b = math.sqrt(w_var), math.sqrt(b_var)
  layers = []
  for _ in range(2):
    layers += [stax.Conv(64, (5, 5), strides=(2, 2), padding='SAME', W_std=w,
                         b_std=b), stax.Relu()]
  layers += [stax.Flatten(), stax.Dense(384, W_std=w, b_std=b),
             stax.Dense(192, W_std=w, b_std=b),
             stax.Dense(num_classes, W_std=w, b_std=b)]
  kernel_fn = stax.serial(*layers)[2]
  return lambda x1, x2: kernel_fn(x1, x2, 'ntk')


def get_surrogate(name: str, num_classes: int,
                  kernel_impl: str = 'closed_form') -> Surrogate:
  """Builds surrogate `name` (`fnn` or `cnn`).

  Args:
    name: `fnn` or `cnn`.
    num_classes: K (the CNN's read-out width; irrelevant at infinite width
      but part of the architecture).
    kernel_impl: for the FNN, `closed_form` (fast, default) or `nt`
      (neural-tangents' stax; slower, for comparison).
  """
  if name == 'fnn':
    if kernel_impl == 'closed_form':
      fn = fnn_ntk
    elif kernel_impl == 'nt':
      fn = nt_fnn()
    else:
      raise ValueError(f'unknown kernel_impl {kernel_impl!r}; valid: '
                       'closed_form, nt.')
    return Surrogate('fnn', fn, f'{FNN_DEPTH} x [Dense(512), Erf], NTK, '
                     f'W_std^2={W_VAR}, b_std^2={B_VAR}', val_batch_size=500)
  if name == 'cnn':
    return Surrogate('cnn', nt_cnn(num_classes),
                     '2 x [Conv(64, 5x5, stride 2, SAME), Relu], Flatten, '
                     f'Dense(384), Dense(192), Dense({num_classes}), NTK, '
                     f'W_std^2={W_VAR}, b_std^2={B_VAR}', val_batch_size=50)
  raise KeyError(f'unknown surrogate {name!r}; valid: fnn, cnn.')


def kernel_matrix(kernel_fn: KernelFn, x1: np.ndarray, x2: np.ndarray,
                  batch_size: int = 1000) -> np.ndarray:
  """NTK (N1, N2) as numpy, computed in row batches of x1 (for evaluation)."""
  f = jax.jit(kernel_fn)
  x2 = jnp.asarray(x2)
  out = [np.asarray(f(jnp.asarray(x1[i:i + batch_size]), x2))
         for i in range(0, len(x1), batch_size)]
  return np.concatenate(out, axis=0)
