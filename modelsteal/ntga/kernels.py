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
arguments. Both kernels are written out in closed form (`fnn_ntk`,
`cnn_ntk`) because neural-tangents' versions spend most of their time in two
places on a CPU: `arctan2`, which XLA evaluates one scalar at a time (about
16 ns per entry; a polynomial takes 0.3 ns), and an autodiff backward pass
that makes many passes over the (N1, N2) matrices. The closed forms use a
vectorisable `arcsin` (Abramowitz & Stegun 4.4.46, abs. error < 3e-7 in
float32; float64 inputs use the exact `jnp.arcsin`) and hand-written
backward passes. neural-tangents itself is optional (the `nt` extra,
`kernel_impl='nt'`; it needs jax <= 0.5.3): `tests/ntga_test.py` and
`tests/ntga_kernel64_test.py` check values and gradients against reference
values it computed (`tests/fixtures/`), and against it live where it
imports.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from modelsteal.ntga import cnn_cpu

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


# ------------------------------------------------------------ CNN closed form
CNN_DENSE_LAYERS = 3
_FILTER = 5
_STRIDE = 2
_TWO_PI = 2 * math.pi


def _same_pads(size: int) -> tuple[int, int]:
  """(before, after) zero padding of a SAME 5x5 stride-2 conv on `size`."""
  out = -(-size // _STRIDE)
  total = max((out - 1) * _STRIDE + _FILTER - size, 0)
  return total // 2, total - total // 2


def _band(size: int, dtype) -> jnp.ndarray:
  """(out, size) 0/1 matrix of a SAME 5-tap stride-2 window sum along an axis."""
  lo, _ = _same_pads(size)
  out = -(-size // _STRIDE)
  r = np.arange(out)[:, None] * _STRIDE - lo
  h = np.arange(size)[None, :]
  return jnp.asarray((h >= r) & (h < r + _FILTER), dtype)


def _box(x):
  """Conv of a covariance map: 5x5 stride-2 box sum, zero padded (SAME).

  x: (H, W, ...) maps with the spatial axes first. Separable, and each axis
  is a product with a 0/1 band matrix: XLA:CPU runs a dot over the large
  trailing (...) block at memory speed, where strided slices of a padded
  array (or `reduce_window`) run element by element with bounds checks.
  Returns (ceil(H/2), ceil(W/2), ...). The division by 25 is left to the
  caller.
  """
  bh, bw = _band(x.shape[0], x.dtype), _band(x.shape[1], x.dtype)
  rest = x.shape[2:]
  y = bh @ x.reshape(x.shape[0], -1)  # (h2, W * ...)
  y = y.reshape((bh.shape[0], x.shape[1], -1))
  # A dot batched over r keeps the (r, c, ...) layout: no transpose after.
  bwb = jnp.broadcast_to(bw, (bh.shape[0],) + bw.shape)
  y = jax.lax.dot_general(bwb, y, (((2,), (1,)), ((0,), (0,))))
  return y.reshape((bh.shape[0], bw.shape[0]) + rest)


def _box_t(g, in_hw):
  """Transpose of `_box` (the adjoint), for maps of spatial size in_hw."""
  bh, bw = _band(in_hw[0], g.dtype), _band(in_hw[1], g.dtype)
  rest = g.shape[2:]
  bwb = jnp.broadcast_to(bw.T, (g.shape[0],) + bw.T.shape)
  y = jax.lax.dot_general(bwb, g.reshape(g.shape[:2] + (-1,)),
                          (((2,), (1,)), ((0,), (0,))))
  y = bh.T @ y.reshape(y.shape[0], -1)
  return y.reshape(tuple(in_hw) + rest)


def _guard_tol(dtype):
  """Relative guard on prod - k^2 (see `_relu_bwd`)."""
  # neural-tangents' `_sqrt` has derivative 0 where prod - k^2 <= 1e-30. Two
  # identical windows (the diagonal of the block kernel) leave prod - k^2 at
  # round-off instead (k and the variances come from different sums), and
  # 1/sqrt of that would turn the round-off into a huge gradient; below a few
  # hundred ulps of prod the correlation is taken as exactly 1.
  return 1e-12 if dtype == jnp.float64 else 1e-6


def _relu(k, ntk, prod):
  """ReLU of one covariance map pair: arc-cosine kernel, elementwise.

  k, ntk: nngp and NTK (...); prod: var1 * var2 (...). Returns (nngp',
  ntk', dot, sr) with sr = sqrt(prod - k^2), theta the angle between the two
  inputs and dot = (pi - theta) / 2pi the derivative kernel.

  theta is arctan2(sr, k), as in neural-tangents, but through the
  vectorisable arcsin of whichever of cos(theta) = k / sqrt(prod) and
  sin(theta) = sr / sqrt(prod) is smaller: arccos(rho) alone is
  ill-conditioned near rho = 1 (a round-off of 1e-16 in rho moves it by 1e-8,
  and the next layer amplifies that to 1e-4), which is where identical and
  all-zero windows sit.
  """
  sr = jnp.sqrt(jnp.maximum(prod - k * k, 0.0))
  inv = jax.lax.rsqrt(prod)
  cos, sin = jnp.clip(k * inv, -1.0, 1.0), jnp.minimum(sr * inv, 1.0)
  use_cos = jnp.abs(cos) <= sin
  a = _asin(jnp.where(use_cos, cos, sin))
  theta = jnp.where(use_cos, math.pi / 2 - a, jnp.where(cos > 0, a, math.pi - a))
  dot = 0.5 - theta * (1 / _TWO_PI)
  return sr * (1 / _TWO_PI) + dot * k, ntk * dot, dot, sr


def _relu_bwd(k, ntk, prod, dot, sr, g_k_out, g_ntk_out):
  """Cotangents (k, ntk, prod) of `_relu`, with neural-tangents' guard.

  d nngp'/dk = dot, d nngp'/dprod = sr / (4 pi prod),
  d dot/dk = 1 / (2 pi sr), d dot/dprod = -k / (4 pi sr prod),
  the 1/sr terms set to 0 where prod - k^2 <= tol * prod (correlation +-1:
  all-zero windows of both images, identical windows).
  """
  ok = prod - k * k > _guard_tol(k.dtype) * prod
  inv_sr = jnp.where(ok, 1.0 / jnp.where(ok, sr, 1.0), 0.0)
  inv_prod = 1.0 / prod
  gd = g_ntk_out * ntk * inv_sr  # (cotangent of dot) * 2 pi * d dot / dk
  g_k = g_k_out * dot + gd * (1 / _TWO_PI)
  g_prod = (g_k_out * sr - gd * k) * (inv_prod / (2 * _TWO_PI))
  return g_k, g_ntk_out * dot, g_prod


def _dense_coeffs(depth, w_var, b_var):
  """ntk_out = a_t * ntk_in + a_k * nngp_in + c after `depth` Dense layers."""
  n = (1.0, 0.0, 0.0)  # nngp as (coefficient of nngp_in, of ntk_in, const)
  t = (0.0, 1.0, 0.0)
  for _ in range(depth):
    n = (w_var * n[0], w_var * n[1], w_var * n[2] + b_var)
    t = tuple(w_var * ti + ni for ti, ni in zip(t, n))
  return t[1], t[0], t[2]


def _cnn_features(x, w_var, b_var):
  """Per-image quantities of the CNN kernel.

  Returns conv-1 patches P (h1, w1, N, 25 C) scaled by sqrt(w / 25 C), the
  variance maps before the first ReLU q1 (h1, w1, N) and before the second
  q2 (h2, w2, N).
  """
  c = x.shape[-1]
  p = jax.lax.conv_general_dilated_patches(
      x, (_FILTER, _FILTER), (_STRIDE, _STRIDE), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  p = jnp.transpose(p, (1, 2, 0, 3)) * math.sqrt(w_var / (_FILTER**2 * c))
  q1 = jnp.sum(p * p, axis=-1) + b_var
  q2 = (w_var / _FILTER**2) * _box(q1 / 2) + b_var
  return p, q1, q2


def _cnn_layers(f1, f2, w_var, b_var):
  """The (h, w, N1, N2) maps of both conv layers for one tile."""
  p1, q1a, q2a = f1
  p2, q1b, q2b = f2
  k1 = jnp.einsum('hwif,hwjf->hwij', p1, p2) + b_var
  prod1 = q1a[..., :, None] * q1b[..., None, :]
  k1r, t1r, _, _ = _relu(k1, k1, prod1)  # first layer: ntk = nngp
  c = w_var / _FILTER**2
  k2 = c * _box(k1r) + b_var
  t2 = c * _box(t1r) + k2
  prod2 = q2a[..., :, None] * q2b[..., None, :]
  return k1, prod1, k2, t2, prod2


def _cnn_core_forward(f1, f2, w_var, b_var):
  """NTK (N1, N2) from both sides' features."""
  _, _, k2, t2, prod2 = _cnn_layers(f1, f2, w_var, b_var)
  k2r, t2r, _, _ = _relu(k2, t2, prod2)
  kf, tf = jnp.mean(k2r, axis=(0, 1)), jnp.mean(t2r, axis=(0, 1))
  a_t, a_k, c0 = _dense_coeffs(CNN_DENSE_LAYERS, w_var, b_var)
  return a_t * tf + a_k * kf + c0


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _cnn_core(f1, f2, w_var, b_var):
  return _cnn_core_forward(f1, f2, w_var, b_var)


def _cnn_core_fwd(f1, f2, w_var, b_var):
  # Residuals are the features only (a few MB): the (h, w, N1, N2) maps are
  # recomputed in the backward pass, which costs less than storing them.
  return _cnn_core(f1, f2, w_var, b_var), (f1, f2)


def _cnn_core_bwd(w_var, b_var, res, g):
  """Hand-written backward pass: one forward recompute, one reverse sweep."""
  f1, f2 = res
  (p1, q1a, q2a), (p2, q1b, q2b) = f1, f2
  h1, w1 = p1.shape[:2]
  k1, prod1, k2, t2, prod2 = _cnn_layers(f1, f2, w_var, b_var)
  _, _, dot2, sr2 = _relu(k2, t2, prod2)
  h2, w2 = k2.shape[:2]
  a_t, a_k, _ = _dense_coeffs(CNN_DENSE_LAYERS, w_var, b_var)
  # Flatten is a mean over positions: the same cotangent at every position.
  g_t2r = jnp.broadcast_to(g * (a_t / (h2 * w2)), k2.shape)
  g_k2r = jnp.broadcast_to(g * (a_k / (h2 * w2)), k2.shape)
  g_k2, g_t2, g_prod2 = _relu_bwd(k2, t2, prod2, dot2, sr2, g_k2r, g_t2r)
  c = w_var / _FILTER**2
  # t2 = c box(t1r) + k2, k2 = c box(k1r) + b.
  g_k1r = c * _box_t(g_k2 + g_t2, (h1, w1))
  g_t1r = c * _box_t(g_t2, (h1, w1))
  _, _, dot1, sr1 = _relu(k1, k1, prod1)
  g_k1, g_t1, g_prod1 = _relu_bwd(k1, k1, prod1, dot1, sr1, g_k1r, g_t1r)
  g_k1 = g_k1 + g_t1  # first layer: ntk = nngp
  g_p1 = jnp.einsum('hwij,hwjf->hwif', g_k1, p2)
  g_p2 = jnp.einsum('hwij,hwif->hwjf', g_k1, p1)
  g_q1a = jnp.einsum('hwij,hwj->hwi', g_prod1, q1b)
  g_q1b = jnp.einsum('hwij,hwi->hwj', g_prod1, q1a)
  g_q2a = jnp.einsum('hwij,hwj->hwi', g_prod2, q2b)
  g_q2b = jnp.einsum('hwij,hwi->hwj', g_prod2, q2a)
  return (g_p1, g_q1a, g_q2a), (g_p2, g_q1b, g_q2b)


_cnn_core.defvjp(_cnn_core_fwd, _cnn_core_bwd)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class _Needs:
  """Which sides of the CPU kernel are differentiated (a static residual)."""
  x1: bool
  x2: bool


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _cnn_core_cpu(f1, f2, w_var, b_var):
  return cnn_cpu.forward(f1, f2, w_var, b_var,
                         _dense_coeffs(CNN_DENSE_LAYERS, w_var, b_var))


def _cnn_core_cpu_fwd(f1, f2, w_var, b_var):
  # symbolic_zeros: each leaf says whether it is differentiated, so that the
  # side that is not (the validation images) costs no patch cotangents.
  needs = _Needs(*(any(a.perturbed for a in f) for f in (f1, f2)))
  f1, f2 = (tuple(a.value for a in f) for f in (f1, f2))
  return _cnn_core_cpu(f1, f2, w_var, b_var), (f1, f2, needs)


def _cnn_core_cpu_bwd(w_var, b_var, res, g):
  f1, f2, needs = res
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    return tuple(tuple(jnp.zeros_like(a) for a in f) for f in (f1, f2))
  return cnn_cpu.backward(f1, f2, g, needs.x1, needs.x2, w_var, b_var,
                          _dense_coeffs(CNN_DENSE_LAYERS, w_var, b_var))


_cnn_core_cpu.defvjp(_cnn_core_cpu_fwd, _cnn_core_cpu_bwd, symbolic_zeros=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _cnn_block_cpu(f, w_var, b_var):
  """K(x, x) on the CPU kernel, each pair once (`cnn_cpu.forward(sym)`)."""
  return cnn_cpu.forward(f, f, w_var, b_var,
                         _dense_coeffs(CNN_DENSE_LAYERS, w_var, b_var),
                         sym=True)


def _cnn_block_cpu_fwd(f, w_var, b_var):
  return _cnn_block_cpu(f, w_var, b_var), f


def _cnn_block_cpu_bwd(w_var, b_var, f, g):
  g1, g2 = cnn_cpu.backward(f, f, g, True, True, w_var, b_var,
                            _dense_coeffs(CNN_DENSE_LAYERS, w_var, b_var),
                            sym=True)
  return (tuple(a + b for a, b in zip(g1, g2)),)


_cnn_block_cpu.defvjp(_cnn_block_cpu_fwd, _cnn_block_cpu_bwd)


def cnn_ntk_block(x, w_var: float = W_VAR, b_var: float = B_VAR,
                  tile: int = 8, impl: str = 'auto'):
  """`cnn_ntk(x, x)`, NTGA's block kernel. The CPU kernel computes each
  image pair once, by whole 64-column chunks (56% of the pairs of a
  512-image block, forward and backward); `xla` is `cnn_ntk(x, x)`."""
  impl = resolve_cnn_impl(impl)
  if impl == 'cpu':
    return _cnn_block_cpu(_cnn_features(x, w_var, b_var), w_var, b_var)
  return cnn_ntk(x, x, w_var, b_var, tile=tile, impl=impl)


def _cnn_ntk_keywords(kernel_fn: KernelFn) -> dict | None:
  """kernel_fn's keywords if it is `cnn_ntk` or a keywords-only
  `functools.partial` of it; else None."""
  if kernel_fn is cnn_ntk:
    return {}
  if (isinstance(kernel_fn, functools.partial) and kernel_fn.func is cnn_ntk
      and not kernel_fn.args):
    return dict(kernel_fn.keywords)
  return None


def block_kernel_fn(kernel_fn: KernelFn) -> Callable:
  """x -> kernel_fn(x, x), through `cnn_ntk_block` where kernel_fn is
  `cnn_ntk` (or a `functools.partial` of it with keywords only)."""
  kw = _cnn_ntk_keywords(kernel_fn)
  if kw is not None:
    return functools.partial(cnn_ntk_block, **kw) if kw else cnn_ntk_block
  return lambda x: kernel_fn(x, x)


def cnn_val_loss_grad(xb, alpha, xv, yv, wv, w_var: float = W_VAR,
                      b_var: float = B_VAR):
  """((loss, correct), (d loss / d xb, d loss / d alpha)) of NTGA's
  validation part, loss = sum_i wv_i CE(cnn_ntk(xv, xb)_i alpha, yv_i), in
  one pass of the CPU kernel (`cnn_cpu.val_loss_grad`): what
  `jax.value_and_grad` of that loss gives (tests/ntga_kernel64_test.py),
  without running the kernel forward twice."""
  fb, vjp = jax.vjp(lambda x: _cnn_features(x, w_var, b_var), xb)
  fv = _cnn_features(xv, w_var, b_var)
  loss, correct, g_fb, g_alpha = cnn_cpu.val_loss_grad(
      fv, fb, alpha, yv, wv, w_var, b_var,
      _dense_coeffs(CNN_DENSE_LAYERS, w_var, b_var))
  return (loss, correct), (vjp(g_fb)[0], g_alpha)


def fused_val_grad_fn(kernel_fn: KernelFn) -> Callable | None:
  """`cnn_val_loss_grad` where kernel_fn is `cnn_ntk` (or a keywords-only
  `functools.partial` of it) running on the CPU kernel; else None."""
  kw = _cnn_ntk_keywords(kernel_fn)
  if kw is None or resolve_cnn_impl(kw.pop('impl', 'auto')) != 'cpu':
    return None
  kw.pop('tile', None)
  return functools.partial(cnn_val_loss_grad, **kw)


CNN_IMPLS = ('auto', 'cpu', 'xla')


def resolve_cnn_impl(impl: str = 'auto') -> str:
  """`cpu` or `xla`: what `cnn_ntk(impl=...)` runs on this machine."""
  if impl not in CNN_IMPLS:
    raise ValueError(f'impl must be one of {CNN_IMPLS}, got {impl!r}')
  if impl == 'auto':
    return ('cpu' if cnn_cpu.available() and jax.default_backend() == 'cpu'
            else 'xla')
  if impl == 'cpu' and not cnn_cpu.available():
    raise ValueError(cnn_cpu.unavailable_reason())
  if impl == 'cpu' and jax.default_backend() != 'cpu':
    raise ValueError(f"impl='cpu' runs on JAX's CPU backend; this process "
                     f"runs on {jax.default_backend()}: use impl='auto' or "
                     "'xla'")
  return impl


def cnn_ntk(x1, x2, w_var: float = W_VAR, b_var: float = B_VAR,
            tile: int = 8, impl: str = 'auto'):
  """NTK (N1, N2) of NTGA's CNN surrogate at infinite width, in closed form.

  2 x [Conv(5x5, stride 2, SAME), ReLU], Flatten, 3 x Dense, NTK
  parameterisation (the architecture of `nt_cnn`; widths and the number of
  classes do not change the kernel). With a Flatten read-out only the spatial
  diagonal of each covariance matters, so every layer works on maps of one
  value per image pair and position:

  * conv 1: a batched matrix product of 5x5 patches, one per position;
  * ReLU: the arc-cosine kernel per position (vectorisable arcsin);
  * conv 2: a 5x5 stride-2 box sum of the maps, zero padded, divided by 25;
  * Flatten: the mean over positions; the Dense layers: an affine map.

  Two implementations of the same maths, both with a hand-written backward
  pass that keeps neural-tangents' zero derivative where a correlation
  reaches +-1:

  * `cpu`: fused loops in numba (`cnn_cpu`), an XLA custom call; each tile
    of image pairs goes through the whole network in cache. The default
    when JAX runs on the CPU and numba is installed.
  * `xla`: jnp maps of shape (h, w, tile, N2), x1 in tiles of `tile` rows;
    the default on accelerators.

  tests/ntga_test.py checks values and gradients of both against `nt_cnn`.

  Args:
    x1: (N1, H, W, C) images.
    x2: (N2, H, W, C) images, same shape and dtype.
    w_var: weight variance W_std^2.
    b_var: bias variance b_std^2.
    tile: rows of x1 per tile of the `xla` implementation.
    impl: `auto`, `cpu` or `xla`.
  """
  impl = resolve_cnn_impl(impl)
  f2 = _cnn_features(x2, w_var, b_var)
  if impl == 'cpu':
    return _cnn_core_cpu(_cnn_features(x1, w_var, b_var), f2, w_var, b_var)
  n1 = x1.shape[0]
  if n1 <= tile:
    return _cnn_core(_cnn_features(x1, w_var, b_var), f2, w_var, b_var)
  pad = (-n1) % tile
  x1p = jnp.pad(x1, ((0, pad),) + ((0, 0),) * (x1.ndim - 1))
  tiles = x1p.reshape((-1, tile) + x1.shape[1:])
  out = jax.lax.map(
      lambda xt: _cnn_core(_cnn_features(xt, w_var, b_var), f2, w_var, b_var),
      tiles)
  return out.reshape(-1, out.shape[-1])[:n1]


# ------------------------------------------------------- neural-tangents stax
NT_INSTALL = ('pip install -e ".[nt]" (neural-tangents 0.6.5, its last '
              'release, needs jax/jaxlib 0.4.34-0.5.3: the extra installs '
              'jax 0.5.3 in place of the current one)')


def neural_tangents_unavailable() -> str | None:
  """Why `neural_tangents` cannot be used here, or None where it can.

  It is an optional extra (`nt`): the closed-form kernels do not need it.
  Its last release imports `jax.core.Jaxpr`, gone from jax 0.6 on, so on a
  current JAX the import fails with an AttributeError, not an ImportError.
  """
  try:
    import neural_tangents  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return 'neural-tangents is not installed'
  except Exception as e:  # pylint: disable=broad-except
    return (f'neural-tangents does not import with jax {jax.__version__} '
            f'({type(e).__name__}: {e})')
  return None


def _stax():
  """`neural_tangents.stax`, or a ConfigError (field kernel_impl) saying
  what to install."""
  reason = neural_tangents_unavailable()
  if reason:
    from modelsteal.errors import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(
        'kernel_impl', f"'nt' (neural-tangents' own kernels) cannot run: "
        f'{reason}. Install it with {NT_INSTALL}, or use closed_form (the '
        'default: the same kernels in closed form).')
  from neural_tangents import stax  # pylint: disable=g-import-not-at-top
  return stax


def nt_fnn(depth: int = FNN_DEPTH, w_var: float = W_VAR, b_var: float = B_VAR):
  """The same FNN through `neural_tangents.stax` (reference and fallback;
  the optional `nt` extra)."""
  stax = _stax()
  w, b = math.sqrt(w_var), math.sqrt(b_var)
  layers = [stax.Flatten()]
  for _ in range(depth):
    layers += [stax.Dense(512, W_std=w, b_std=b), stax.Erf()]
  kernel_fn = stax.serial(*layers)[2]
  return lambda x1, x2: kernel_fn(x1, x2, 'ntk')


def nt_cnn(num_classes: int, w_var: float = W_VAR, b_var: float = B_VAR):
  """NTGA's CNN surrogate through `neural_tangents.stax` (the optional `nt`
  extra)."""
  stax = _stax()
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
    kernel_impl: `closed_form` (`fnn_ntk`, `cnn_ntk`: fast, default) or
      `nt` (neural-tangents' stax; slower, for comparison; needs the `nt`
      extra, else a `modelsteal.errors.ConfigError` naming it).
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
    # Accelerators: the whole block as one tile and 1,000-image validation
    # batches, else the device idles between small launches (H200: 0.08 s
    # per gradient against 10,000 images this way, BUILD_NOTES issue 11).
    # CPUs, numba kernel: 1,000-image batches too (it tiles itself; each
    # batch re-derives the block's patches and takes its cotangent back to
    # pixels, 1.3 s of a 4.0 s gradient with batches of 64). CPUs, XLA
    # kernel: batches of 64 (its per-position maps must fit the cache).
    on_cpu = jax.default_backend() == 'cpu'
    numba_kernel = (on_cpu and kernel_impl == 'closed_form' and
                    resolve_cnn_impl() == 'cpu')
    val_batch = 64 if on_cpu and not numba_kernel else 1000
    if kernel_impl == 'closed_form':
      fn = cnn_ntk if on_cpu else functools.partial(cnn_ntk, tile=512)
    elif kernel_impl == 'nt':
      fn = nt_cnn(num_classes)
    else:
      raise ValueError(f'unknown kernel_impl {kernel_impl!r}; valid: '
                       'closed_form, nt.')
    return Surrogate('cnn', fn,
                     '2 x [Conv(64, 5x5, stride 2, SAME), Relu], Flatten, '
                     f'Dense(384), Dense(192), Dense({num_classes}), NTK, '
                     f'W_std^2={W_VAR}, b_std^2={B_VAR}',
                     val_batch_size=val_batch)
  raise KeyError(f'unknown surrogate {name!r}; valid: fnn, cnn.')


def kernel_matrix(kernel_fn: KernelFn, x1: np.ndarray, x2: np.ndarray,
                  batch_size: int = 1000) -> np.ndarray:
  """NTK (N1, N2) as numpy, computed in row batches of x1 (for evaluation)."""
  f = jax.jit(kernel_fn)
  x2 = jnp.asarray(x2)
  out = [np.asarray(f(jnp.asarray(x1[i:i + batch_size]), x2))
         for i in range(0, len(x1), batch_size)]
  return np.concatenate(out, axis=0)
