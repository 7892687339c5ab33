"""The closed-form kernels in float64: both CNN implementations and the FNN
against neural-tangents' values (committed in tests/fixtures/, and live
where neural-tangents imports), and the numba kernel's zero-window and
block paths against the XLA kernel.

A file of its own (tests/ntga_test.py has the rest): pytest runs files on
two workers (`--dist loadfile`), so this file's worker compiles the numba
kernel's float64 routines while the other compiles the float32 ones; a
cold compile of each is most of a minute.
"""

import functools

import numpy as np
import pytest

from modelsteal.ntga import kernels
from tests import fixtures

import jax  # pylint: disable=g-bad-import-order
import jax.numpy as jnp

# x64 mode as a context: jax.enable_x64 from JAX 0.7 on, where
# jax.experimental's went (gone in 0.12)
enable_x64 = getattr(jax, 'enable_x64', None)
if enable_x64 is None:  # JAX < 0.7
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top


_CNN_IMPLS = ['xla', pytest.param('cpu', marks=pytest.mark.skipif(
    not kernels.cnn_cpu.available(),
    reason=f'the CPU kernel cannot run: {kernels.cnn_cpu.unavailable_reason()}'))]
_NEEDS_NUMBA = pytest.mark.skipif(
    not kernels.cnn_cpu.available(),
    reason=f'the CPU kernel cannot run: {kernels.cnn_cpu.unavailable_reason()}')
_NT_SKIP = fixtures.nt_live_skip_reason()


def _kernel_and_grads(fn, ref):
  """k(a, b), k(a, a), the gradients of sum(k(a, b) * r) along a and b,
  and of the block kernel's sum(k(a, a) * w) along a, on the inputs of a
  reference case (`tests/fixtures`)."""
  a, b, r, w = (jnp.asarray(ref[k]) for k in ('a', 'b', 'r', 'w'))
  return dict(
      k=fn(a, b), kaa=fn(a, a),
      **dict(zip(('ga', 'gb'), jax.jit(jax.grad(
          lambda x, y: jnp.sum(fn(x, y) * r), (0, 1)))(a, b))),
      gblock=jax.jit(jax.grad(lambda x: jnp.sum(fn(x, x) * w)))(a))


def _assert_matches_reference(ours, ref, rtol_k=1e-8, rtol_g=1e-9,
                              rtol_block=1e-7):
  # Values: float64 round-off only, except where a correlation is exactly
  # 1 (all-zero pairs, identical images), where both sides' sqrt(prod -
  # k^2) is round-off of ~1e-9 relative.
  for k in ('k', 'kaa'):
    assert ours[k].dtype == jnp.float64
    np.testing.assert_allclose(ours[k], ref[k], rtol=rtol_k, err_msg=k)
  for k in ('ga', 'gb'):
    assert np.all(np.isfinite(ours[k]))
    np.testing.assert_allclose(ours[k], ref[k], rtol=rtol_g,
                               atol=1e-12 * float(np.max(np.abs(ref[k]))),
                               err_msg=k)
  # The block kernel: x through both arguments, identical images on the
  # diagonal (the derivative there exists only along x1 = x2).
  np.testing.assert_allclose(ours['gblock'], ref['gblock'], rtol=rtol_block,
                             atol=1e-9 * float(np.max(np.abs(ref['gblock']))),
                             err_msg='gblock')


@pytest.mark.parametrize('case', ['cnn_odd', 'cnn_mnist', 'cnn_cifar'])
@pytest.mark.parametrize('impl', _CNN_IMPLS)
def test_closed_form_cnn_kernel_matches_neural_tangents_in_float64(impl, case):
  """Against neural-tangents' values (tests/fixtures/nt_reference.npz):
  odd 9x7x2 images (asymmetric SAME padding) with an all-zero image, zero
  borders and a near-copy; MNIST-shaped with identical images; CIFAR's
  shape."""
  ref = fixtures.nt_reference(case)
  with enable_x64():
    # xla: tile=2 also runs the tiled path (lax.map over rows of x1); cpu:
    # a few rows and columns pad the kernel's 32-row tiles and 64-column
    # chunks
    ours = _kernel_and_grads(
        jax.jit(lambda x, y: kernels.cnn_ntk(x, y, tile=2, impl=impl)), ref)
  # cnn_mnist: a[1] == b[0], correlation exactly 1 at every position, where
  # the derivative is the zero-derivative guard's and round-off of ~1e-8
  # relative (the block kernel's diagonal, identical images too, has 1e-7)
  _assert_matches_reference(ours, ref,
                            rtol_g=1e-7 if case == 'cnn_mnist' else 1e-9)


@pytest.mark.parametrize('case', ['fnn_small', 'fnn_mnist', 'fnn_cifar'])
def test_closed_form_fnn_kernel_matches_neural_tangents_in_float64(case):
  ref = fixtures.nt_reference(case)
  with enable_x64():
    ours = _kernel_and_grads(jax.jit(kernels.fnn_ntk), ref)
  _assert_matches_reference(ours, ref, rtol_k=1e-10, rtol_g=1e-8,
                            rtol_block=1e-8)


@pytest.mark.skipif(_NT_SKIP is not None, reason=_NT_SKIP or '')
@pytest.mark.parametrize('case', fixtures.KERNEL_CASES)
def test_reference_values_equal_live_neural_tangents(case):
  """Where neural-tangents imports (the `nt` extra): it still gives the
  committed values (written by tests/fixtures/make_nt_fixtures.py)."""
  ref = fixtures.nt_reference(case)
  fn = kernels.nt_cnn(10) if case.startswith('cnn') else kernels.nt_fnn()
  with enable_x64():
    live = _kernel_and_grads(jax.jit(fn), ref)
  for k, v in live.items():
    np.testing.assert_allclose(v, ref[k], rtol=1e-10,
                               atol=1e-13 * float(np.max(np.abs(ref[k]))),
                               err_msg=k)


@_NEEDS_NUMBA
@pytest.mark.slow
def test_cpu_kernel_zero_windows_match_the_xla_kernel():
  # The CPU kernel takes rows whose 5x5 window is all zero (most of an
  # MNIST image) from a per-column table and runs the patch products on the
  # other rows alone. 72 rows = tiles of 32: tile 0 dense below a zero band
  # (no zero row, or all zero), tile 1 mixed (whole zero images, zero left
  # halves), tile 2 eight rows and 24 padding rows.
  # float64: identical pairs (x2[5:10]) are ill-conditioned in float32.
  rng = np.random.default_rng(7)
  x1 = rng.random((72, 12, 12, 1))
  x1[:, :4] = 0.0          # conv-1 row 0: every row of every tile zero
  x1[32:42] = 0.0          # whole zero images
  x1[42:52, :, :6] = 0.0   # zero left halves
  x1[64:66, 6:] = 0.0
  x2 = rng.random((70, 12, 12, 1))
  x2[:5] = x1[32:37]       # zero columns too
  x2[5:10] = x1[42:47]     # and identical pairs

  def run(impl):
    r = jnp.asarray(np.random.default_rng(8).normal(size=(72, 70)))
    w = jnp.asarray(np.random.default_rng(9).normal(size=(72, 72)))
    a, b = jnp.asarray(x1), jnp.asarray(x2)
    f = lambda a, b: kernels.cnn_ntk(a, b, impl=impl)
    k = jax.jit(f)(a, b)
    g1, g2 = jax.jit(jax.grad(lambda a, b: jnp.sum(f(a, b) * r),
                              argnums=(0, 1)))(a, b)
    g2_only = jax.jit(jax.grad(lambda b: jnp.sum(f(a, b) * r)))(b)
    gb = jax.jit(jax.grad(lambda a: jnp.sum(f(a, a) * w)))(a)
    return k, g1, g2, g2_only, gb

  with enable_x64():
    ours, ref = run('cpu'), run('xla')
  assert ours[0].dtype == jnp.float64
  # round-off only; all-zero pairs (correlation exactly 1) carry both
  # kernels' sqrt(prod - k^2) round-off, ~1e-9 relative
  np.testing.assert_allclose(ours[0], ref[0], rtol=1e-8)
  for g, g_ref in zip(ours[1:], ref[1:]):
    scale = float(jnp.max(jnp.abs(g_ref)))
    assert scale > 0
    np.testing.assert_allclose(g, g_ref, rtol=1e-7, atol=1e-10 * scale)
  # the column side alone (no row cotangents computed) equals it with them
  np.testing.assert_allclose(ours[3], ours[2], rtol=1e-10,
                             atol=1e-13 * float(jnp.max(jnp.abs(ours[2]))))


@_NEEDS_NUMBA
@pytest.mark.slow
def test_block_kernel_computes_each_pair_once_and_equals_the_full_one(
    monkeypatch):
  # 150 images: chunks of 64 + 64 + 22 columns, row tiles of 32; the CPU
  # block kernel leaves out the rows below each chunk and fills them in by
  # symmetry; its gradient sends their cotangents to the transposes.
  rng = np.random.default_rng(11)
  x = rng.random((150, 12, 12, 1))
  x[:, :4] = 0.0
  x[20:40] = 0.0
  x[100:110, :, :6] = 0.0
  w = rng.normal(size=(150, 150))
  with enable_x64():
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    full = lambda a: kernels.cnn_ntk(a, a, impl='cpu')
    ref_k = jax.jit(full)(xj)
    ref_g = jax.jit(jax.grad(lambda a: jnp.sum(full(a) * wj)))(xj)
    assert kernels.block_kernel_fn(kernels.cnn_ntk) is kernels.cnn_ntk_block
    for n in (1, 2, 3):
      monkeypatch.setenv('MODELSTEAL_NTGA_THREADS', str(n))
      block = jax.jit(kernels.cnn_ntk_block)
      k = block(xj)
      g = jax.jit(jax.grad(lambda a: jnp.sum(kernels.cnn_ntk_block(a) * wj)))(
          xj)
      np.testing.assert_allclose(k, ref_k, rtol=1e-12)
      np.testing.assert_array_equal(k, k.T)  # filled in by symmetry
      np.testing.assert_allclose(g, ref_g, rtol=1e-9,
                                 atol=1e-12 * float(jnp.max(jnp.abs(ref_g))))
  # other kernels: K(x, x) through the kernel itself
  fn = kernels.block_kernel_fn(kernels.fnn_ntk)
  xs = jnp.asarray(x[:3], jnp.float32)
  np.testing.assert_array_equal(fn(xs), kernels.fnn_ntk(xs, xs))


@_NEEDS_NUMBA
def test_fused_validation_pass_equals_value_and_grad(monkeypatch):
  # NTGA's validation part on the CPU kernel runs forward and reverse sweep
  # of each tile in one pass (`kernels.cnn_val_loss_grad`); it must give
  # what jax.value_and_grad of the loss gives through the kernel's own
  # backward pass: 70 rows (tiles of 32, the last partly padding) with
  # zero windows, weights 0 on some, 150 columns (a partial chunk) with an
  # identical pair; on 1, 2 and 3 threads (row tiles split between them).
  rng = np.random.default_rng(21)
  xv = rng.random((70, 12, 12, 1)) * (rng.random((70, 12, 12, 1)) > 0.4)
  xv[:, :4] = 0.0
  xv[3] = 0.0
  xb = rng.random((150, 12, 12, 1))
  xb[:, -3:] = 0.0
  xb[5] = xv[7]
  alpha = rng.normal(size=(150, 10))
  yv = np.eye(10)[rng.integers(0, 10, 70)]
  wv = (np.arange(70) % 9 != 4).astype(float)
  from modelsteal.ntga import attack  # pylint: disable=g-import-not-at-top
  with enable_x64():
    xv, xb, alpha, yv, wv = map(jnp.asarray, (xv, xb, alpha, yv, wv))

    def chunk_loss(b, a):  # as attack._compiled's, on the kernel's backward
      logits = kernels.cnn_ntk(xv, b, impl='cpu') @ a
      ok = jnp.argmax(logits, -1) == jnp.argmax(yv, -1)
      return attack.cross_entropy(logits, yv, wv), jnp.sum(wv * ok)

    (l0, c0), (gx0, ga0) = jax.jit(jax.value_and_grad(
        chunk_loss, argnums=(0, 1), has_aux=True))(xb, alpha)
    fused = kernels.fused_val_grad_fn(kernels.cnn_ntk)
    assert fused is not None
    for n in (1, 2, 3):
      monkeypatch.setenv('MODELSTEAL_NTGA_THREADS', str(n))
      (l1, c1), (gx1, ga1) = jax.jit(fused)(xb, alpha, xv, yv, wv)
      assert gx1.dtype == jnp.float64
      np.testing.assert_allclose(l1, l0, rtol=1e-12)
      assert float(c1) == float(c0)
      for g, g_ref in ((gx1, gx0), (ga1, ga0)):
        scale = float(jnp.max(jnp.abs(g_ref)))
        assert scale > 0
        np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-12 * scale)
  # NTGA uses it for the CPU kernel only
  assert kernels.fused_val_grad_fn(kernels.fnn_ntk) is None
  assert kernels.fused_val_grad_fn(
      functools.partial(kernels.cnn_ntk, impl='xla')) is None


@_NEEDS_NUMBA
def test_own_patch_product_equals_matmul_on_every_remainder_path():
  """`cnn_cpu._gemm` (two rows and four inner terms per pass, leftovers
  after) against numpy: odd and even row counts, inner sizes that leave
  0-3 terms over, a transposed (strided) left operand as the reverse
  sweep passes it, and accumulation into what is there."""
  gemm = kernels.cnn_cpu._gemm  # pylint: disable=protected-access
  rng = np.random.default_rng(3)
  for m, k, n in ((1, 1, 1), (2, 4, 8), (3, 5, 13), (5, 6, 8), (7, 7, 3),
                  (32, 25, 64), (14, 75, 64)):
    a = rng.normal(size=(m, k))
    b = rng.normal(size=(k, n))
    out = rng.normal(size=(m, n))
    gemm(a, b, out, False)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    before = out.copy()
    at = np.ascontiguousarray(a.T).T  # same values, Fortran-ordered view
    gemm(at, b, out, True)
    np.testing.assert_allclose(out, before + a @ b, rtol=1e-12, atol=1e-12)
