"""modelsteal.ntga: kernels, GP mean, PGD, the component and the pipeline."""

import dataclasses
import functools
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl.testing import flagsaver

from modelsteal import data
from modelsteal.ntga import attack as attack_lib
from modelsteal.ntga import generate as generate_lib
from modelsteal.ntga import kernels
from tests import fixtures
from tests.conftest import synthetic_images

import jax  # pylint: disable=g-bad-import-order
import jax.numpy as jnp

# x64 mode as a context: jax.enable_x64 from JAX 0.7 on, where
# jax.experimental's went (gone in 0.12)
enable_x64 = getattr(jax, 'enable_x64', None)
if enable_x64 is None:  # JAX < 0.7
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top


# One problem shape throughout (8x8 images, 4 classes, blocks of 40, 40
# validation images in batches of 16, t=16): XLA compiles it once.
def _tiny_examples(tmp_path, n_train=160, n_test=40, size=8, num_classes=4):
  xtr, ytr = synthetic_images(n_train, num_classes=num_classes, size=size,
                              seed=1)
  xte, yte = synthetic_images(n_test, num_classes=num_classes, size=size,
                              seed=2)
  ds = data.sources._make('tiny', xtr, ytr, xte, yte, source='synthetic')  # pylint: disable=protected-access
  return data.import_dataset(ds, str(tmp_path / 'import'))


_TINY = dict(val_size=40, block_size=48, nb_iter=3, eps=0.1, t=16.0,
             val_batch_size=16)


# ---------------------------------------------------------------- kernels
@pytest.mark.slow
def test_closed_form_fnn_kernel_in_float32_matches_neural_tangents():
  """float32 inputs against neural-tangents' float64 values on them
  (tests/fixtures; float64 in ntga_kernel64_test.py)."""
  ref = fixtures.nt_reference('fnn_small')
  a, b, r, w = (jnp.asarray(ref[k], jnp.float32) for k in ('a', 'b', 'r', 'w'))
  np.testing.assert_allclose(kernels.fnn_ntk(a, b), ref['k'], rtol=1e-5)
  np.testing.assert_allclose(kernels.fnn_ntk(a, a), ref['kaa'], rtol=1e-5)
  for argnums, g_ref in ((0, ref['ga']), (1, ref['gb'])):
    g = jax.jit(jax.grad(lambda x, y: jnp.sum(kernels.fnn_ntk(x, y) * r),
                         argnums))(a, b)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4,
                               atol=1e-5 * float(np.max(np.abs(g_ref))))
  # the block's kernel depends on x through both arguments
  g = jax.jit(jax.grad(lambda x: jnp.sum(kernels.fnn_ntk(x, x) * w)))(a)
  np.testing.assert_allclose(g, ref['gblock'], rtol=1e-4,
                             atol=1e-5 * float(np.max(np.abs(ref['gblock']))))


_CNN_IMPLS = ['xla', pytest.param('cpu', marks=pytest.mark.skipif(
    not kernels.cnn_cpu.available(), reason='numba is not installed'))]
# The float64 kernel tests are in tests/ntga_kernel64_test.py: a file of
# their own, so a second test worker compiles the numba kernel's float64
# routines while this file's worker compiles the float32 ones.


@functools.lru_cache(maxsize=None)
def _cifar_reference():
  """CIFAR-shaped float32 inputs, neural-tangents' float64 kernel on them
  (tests/fixtures), and the float64 gradient of the block kernel (the XLA
  kernel's, so this file compiles only the numba kernel's float32
  routines; both kernels are checked against neural-tangents in float64 in
  ntga_kernel64_test.py); computed once for both implementations."""
  ref = fixtures.nt_reference('cnn_cifar')
  a = jnp.asarray(ref['a'], jnp.float32)
  b = jnp.asarray(ref['b'], jnp.float32)
  with enable_x64():
    g64 = np.asarray(jax.grad(
        lambda x: jnp.sum(kernels.cnn_ntk(x, x, impl='xla')))(
            a.astype(jnp.float64)))
  return a, b, ref['k'], g64


@pytest.mark.parametrize('impl', _CNN_IMPLS)
@pytest.mark.slow
def test_closed_form_cnn_kernel_in_float32_and_cifar_shape(impl):
  a, b, k_nt, g64 = _cifar_reference()
  ours = functools.partial(kernels.cnn_ntk, impl=impl)
  k = jax.jit(ours)(a, b)
  assert k.shape == (2, 2) and k.dtype == jnp.float32
  np.testing.assert_allclose(k, k_nt, rtol=1e-5)
  g = jax.grad(lambda x: jnp.sum(ours(x, x)))(a)
  assert g.shape == a.shape and np.all(np.isfinite(g))
  assert g64.dtype == np.float64
  np.testing.assert_allclose(g, g64, rtol=1e-3,
                             atol=1e-4 * float(np.max(np.abs(g64))))


def test_cnn_kernel_impl_choice_and_errors(monkeypatch):
  assert kernels.resolve_cnn_impl('xla') == 'xla'
  want = 'cpu' if kernels.cnn_cpu.available() else 'xla'
  assert kernels.resolve_cnn_impl() == want  # this machine runs JAX on a CPU
  with pytest.raises(ValueError, match='impl must be one of'):
    kernels.cnn_ntk(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 8, 8, 1)),
                    impl='gpu')
  # on an accelerator: XLA by default, and the CPU kernel refused clearly
  monkeypatch.setattr(kernels.jax, 'default_backend', lambda: 'gpu')
  assert kernels.resolve_cnn_impl() == 'xla'
  if kernels.cnn_cpu.available():
    with pytest.raises(ValueError, match="runs on JAX's CPU backend"):
      kernels.resolve_cnn_impl('cpu')


def test_accelerator_defaults_and_no_ffi_fall_back_to_xla(monkeypatch):
  # accelerators: whole-block tiles and 1,000-image validation batches
  cpu_sur = kernels.get_surrogate('cnn', 10)
  assert cpu_sur.kernel_fn is kernels.cnn_ntk
  # CPUs: 1,000-image batches for the numba kernel, 64 for XLA's and nt's
  assert cpu_sur.val_batch_size == (
      1000 if kernels.cnn_cpu.available() else 64)
  if kernels.neural_tangents_unavailable() is None:
    assert kernels.get_surrogate('cnn', 10, 'nt').val_batch_size == 64
  monkeypatch.setattr(kernels.jax, 'default_backend', lambda: 'gpu')
  gpu_sur = kernels.get_surrogate('cnn', 10)
  assert gpu_sur.val_batch_size == 1000
  assert gpu_sur.kernel_fn.keywords == {'tile': 512}
  monkeypatch.undo()
  # a jaxlib without the FFI headers: the XLA kernel, and a clear refusal
  monkeypatch.setattr(kernels.cnn_cpu, 'ffi_api_version', lambda: None)
  if kernels.cnn_cpu.numba is not None:
    assert not kernels.cnn_cpu.available()
    assert kernels.resolve_cnn_impl() == 'xla'
    assert kernels.get_surrogate('cnn', 10).val_batch_size == 64
    with pytest.raises(ValueError, match="FFI headers.*impl='xla'"):
      kernels.resolve_cnn_impl('cpu')
    # a major FFI version whose call frame may differ: refused too
    monkeypatch.setattr(kernels.cnn_cpu, 'ffi_api_version', lambda: (1, 0))
    assert not kernels.cnn_cpu.available()
    with pytest.raises(ValueError, match="version 0.x.*1.0.*impl='xla'"):
      kernels.resolve_cnn_impl('cpu')


def test_cpu_kernel_registers_through_the_typed_ffi():
  # the installed jaxlib's FFI version, read from its headers (XLA refuses
  # a handler whose version differs); no legacy custom-call ABI left
  major, minor = kernels.cnn_cpu.ffi_api_version()
  assert major == 0 and minor >= 1
  import inspect  # pylint: disable=g-import-not-at-top
  src = inspect.getsource(kernels.cnn_cpu)
  assert 'api_version=0' not in src and 'custom_call_api_version' not in src


def test_kernel_impl_nt_without_neural_tangents_is_one_config_error(
    monkeypatch):
  from modelsteal import errors  # pylint: disable=g-import-not-at-top
  import builtins  # pylint: disable=g-import-not-at-top
  real_import = builtins.__import__

  def no_nt(name, *args, **kw):
    if name.split('.')[0] == 'neural_tangents':
      raise ImportError(f'No module named {name!r}')
    return real_import(name, *args, **kw)

  monkeypatch.setattr(builtins, '__import__', no_nt)
  for name in ('fnn', 'cnn'):
    with pytest.raises(errors.ConfigError, match=r'pip install -e "\.\[nt\]"') as e:
      kernels.get_surrogate(name, 10, 'nt')
    assert e.value.field == 'kernel_impl'
    assert '\n' not in str(e.value)
  # jax >= 0.6: neural-tangents 0.6.5 imports but fails (jax.core.Jaxpr)
  def broken_nt(name, *args, **kw):
    if name.split('.')[0] == 'neural_tangents':
      raise AttributeError("module 'jax.core' has no attribute 'Jaxpr'")
    return real_import(name, *args, **kw)

  monkeypatch.setattr(builtins, '__import__', broken_nt)
  with pytest.raises(errors.ConfigError, match='does not import with jax'):
    kernels.get_surrogate('fnn', 10, 'nt')


@pytest.mark.skipif(not kernels.cnn_cpu.available(),
                    reason='the CPU kernel needs numba (the ntga extra)')
@pytest.mark.slow
def test_cpu_kernel_threads_give_the_same_kernel_and_gradients(monkeypatch):
  x1 = jnp.asarray(synthetic_images(40, seed=5)[0][:, :12, :12], jnp.float32)
  x2 = jnp.asarray(synthetic_images(200, seed=6)[0][:, :12, :12], jnp.float32)

  def run(n):  # 200 columns: 4 chunks of 64, spread over n threads
    monkeypatch.setenv('MODELSTEAL_NTGA_THREADS', str(n))
    f = lambda a, b: jnp.sum(jnp.sin(kernels.cnn_ntk(a, b, impl='cpu')))
    return (kernels.cnn_ntk(x1, x2, impl='cpu'),) + jax.grad(
        f, argnums=(0, 1))(x1, x2) + (jax.grad(lambda a: f(a, a))(x2),)

  one = run(1)
  for n in (2, 3, 8):
    many = run(n)
    # Disjoint columns and per-column cotangents: the same sums in the same
    # order, yet two runs (one in CI) saw 0.3% of the per-column gradient
    # differ by 1-2 float32 ulps (2.4e-7 relative) from the one-thread run;
    # the cause was not found (no buffer is shared between the threads, and
    # OpenBLAS runs these small products on one thread), so a few ulps.
    for a, b in zip(many[0::2], one[0::2]):
      np.testing.assert_allclose(a, b, rtol=2e-6,
                                 atol=1e-7 * float(jnp.max(jnp.abs(b))))
    for a, b in zip(many[1::2], one[1::2]):  # summed over threads
      np.testing.assert_allclose(a, b, rtol=1e-5,
                                 atol=1e-6 * float(jnp.max(jnp.abs(b))))
  assert not np.array_equal(one[1], 0 * one[1])
  monkeypatch.setenv('MODELSTEAL_NTGA_THREADS', 'two')
  with pytest.raises(ValueError, match='MODELSTEAL_NTGA_THREADS must be'):
    kernels.cnn_ntk(x1, x2, impl='cpu')


def test_precision_scope_uses_full_float32_products():
  before = jax.config.jax_default_matmul_precision
  with attack_lib.precision_scope('float32'):
    assert jax.config.jax_default_matmul_precision == 'highest'
    assert jnp.zeros(1).dtype == jnp.float32
  with attack_lib.precision_scope('float64'):
    assert jnp.zeros(1).dtype == jnp.float64
  assert jax.config.jax_default_matmul_precision == before


def test_poison_pack_round_trip_is_bit_exact(tiny_npz, tmp_path):
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                  'benchmarks'))
  import poison_pack  # pylint: disable=g-import-not-at-top
  ds = data.load_dataset(tiny_npz)
  rng = np.random.default_rng(0)
  delta = 0.3 * np.sign(rng.standard_normal(ds.x_train.shape))
  x = np.clip(ds.x_train + delta, 0, 1).astype(np.float32)
  idx = rng.permutation(len(x))
  src = tmp_path / 'set.npz'
  np.savez(src, x_train=x, y_train=ds.y_train, idx_train=idx,
           x_test=ds.x_test.astype(np.float32), y_test=ds.y_test)
  paths = poison_pack.pack(str(src), str(tmp_path / 'p' / 'set'), parts=3)
  assert len(paths) == 3
  out = poison_pack.unpack(str(tmp_path / 'p' / 'set'), tiny_npz,
                           str(tmp_path / 'back.npz'))
  with np.load(out) as a, np.load(src) as b:
    assert set(a.keys()) == set(b.keys())
    for k in b.keys():
      np.testing.assert_array_equal(a[k], b[k])
  other = tmp_path / 'other.npz'  # another copy of the data: an error
  with np.load(tiny_npz) as z:
    np.savez(other, **{k: z[k] for k in z.keys() if k != 'x_test'},
             x_test=255 - z['x_test'])
  with pytest.raises(ValueError, match='SHA-256 differs'):
    poison_pack.unpack(str(tmp_path / 'p' / 'set'), str(other),
                       str(tmp_path / 'x.npz'))
  os.remove(paths[1])  # a missing part: an error
  with pytest.raises(ValueError, match='2 of 3 parts'):
    poison_pack.unpack(str(tmp_path / 'p' / 'set'), tiny_npz,
                       str(tmp_path / 'x.npz'))


def test_keep_freed_memory_stops_page_faults_of_repeated_large_blocks():
  # An NTGA gradient frees ~110 MB of XLA temporaries at its end; glibc's
  # default maps blocks that large afresh each time (28,000 page faults per
  # gradient). Measured in fresh processes: a 64 MB block allocated,
  # touched and freed, then again; the second time's faults.
  code = r'''
import ctypes, resource, sys
from modelsteal.ntga import cpu
if sys.argv[1] == '1':
  assert cpu.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
n = 64 << 20
for i in range(2):
  f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  p = libc.malloc(n)
  ctypes.memset(p, 1, n)
  libc.free(ctypes.c_void_p(p))
  print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
'''
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  faults = []
  for keep in '01':
    out = subprocess.run([sys.executable, '-c', code, keep], cwd=root,
                         capture_output=True, text=True, check=True)
    faults.append(int(out.stdout.split()[1]))
  assert faults[0] > 8000, faults  # 64 MB of 4 KB pages mapped again
  assert faults[1] < 100, faults   # the same pages reused


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2,
    reason='OpenBLAS starts one thread per available core: on one core it '
    'has one thread with or without the limit, so the test could not fail')
@pytest.mark.slow
def test_limit_blas_threads_reaches_the_lapack_that_jax_loads_later():
  # jaxlib's CPU eigh loads scipy's OpenBLAS at its first call, after the
  # pipeline's start-up; its threads (one per core, spinning between calls)
  # made NTGA gradients 3-8x slower beside another process. In fresh
  # processes: the limit is set first (or not), then JAX's eigh loads the
  # library; the BLAS libraries that appeared with the eigh, and their
  # threads.
  code = r'''
import json, sys
from modelsteal.ntga import cpu
if sys.argv[1] == '1':
  cpu.limit_blas_threads(1)
import jax.numpy as jnp, threadpoolctl
def blas():
  return {i['filepath']: i['num_threads'] for i in
          threadpoolctl.threadpool_info() if i['user_api'] == 'blas'}
before = blas()
jnp.linalg.eigh(jnp.eye(8)).eigenvalues.block_until_ready()
print(json.dumps({'new': {k: v for k, v in blas().items() if k not in before},
                  'all': blas()}))
'''
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if not k.endswith('_NUM_THREADS')}
  env['JAX_PLATFORMS'] = 'cpu'  # the CPU eigh, also where a GPU is
  seen = []
  for limit in '01':
    out = subprocess.run([sys.executable, '-c', code, limit], cwd=root,
                         env=env, capture_output=True, text=True, check=True)
    seen.append(json.loads(out.stdout.strip().splitlines()[-1]))
  default, limited = seen
  assert default['new'], default  # the eigh loaded a BLAS (scipy's)
  assert max(default['new'].values()) >= 2, default  # one thread per core
  assert limited['new'] and set(limited['new'].values()) == {1}, limited
  assert set(limited['all'].values()) == {1}, limited


def test_pipeline_tunes_only_a_process_of_its_own():
  # `python -m pipelines.ntga` sets process-wide things (BLAS threads,
  # malloc arenas); `main` called in another process (tests, notebooks)
  # must not: one malloc arena would slow TensorFlow training after it.
  from pipelines import ntga as ntga_pipeline  # pylint: disable=g-import-not-at-top
  assert not ntga_pipeline._OWNS_PROCESS  # pylint: disable=protected-access
  code = r'''
import os
from absl import flags
from pipelines import ntga
flags.FLAGS(['ntga', '--surrogate=fnn'])
ntga.tune_process()
print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['XLA_FLAGS'])
'''
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items()
         if not k.endswith('_NUM_THREADS') and k != 'XLA_FLAGS'}
  out = subprocess.run([sys.executable, '-c', code], cwd=root, env=env,
                       capture_output=True, text=True, check=True)
  assert out.stdout.startswith('1 '), out.stdout
  assert '--xla_force_host_platform_device_count=' in out.stdout


def test_cpu_configure_sets_one_single_threaded_device_per_core(monkeypatch):
  from modelsteal.ntga import cpu  # pylint: disable=g-import-not-at-top
  assert cpu.available_cores() >= 1
  # JAX already runs in this process (started before the flag is set: an
  # unknown XLA flag aborts a backend that starts with it): nothing may change
  jax.devices()
  monkeypatch.setenv('XLA_FLAGS', '--foo=1')
  assert cpu.configure() is None
  assert os.environ['XLA_FLAGS'] == '--foo=1'
  code = r'''
import os
from modelsteal.ntga import cpu
flags = cpu.configure()
assert '--xla_force_host_platform_device_count=3' in flags, flags
assert '--xla_cpu_multi_thread_eigen=false' in flags
assert '--xla_cpu_multi_thread_eigen=true' not in flags or True
import jax
print('devices', len(jax.devices()))
'''
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=3',
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], cwd=root, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'devices 3' in out.stdout  # the user's own setting won


def test_fast_arcsin_is_accurate():
  x = jnp.linspace(-1.0, 1.0, 10001, dtype=jnp.float32)
  err = jnp.max(jnp.abs(kernels._asin(x) - jnp.arcsin(x)))  # pylint: disable=protected-access
  assert float(err) < 1e-6


# ---------------------------------------------------------------- GP mean
def test_gp_prediction_matches_closed_form_and_neural_tangents():
  """Against the closed form (scipy's expm) and neural-tangents'
  `predict.gradient_descent_mse` (its values in tests/fixtures; live too
  where it imports)."""
  import scipy.linalg  # pylint: disable=g-import-not-at-top
  ref = fixtures.nt_reference('gp')
  t, reg = float(ref['t']), float(ref['diag_reg'])
  with enable_x64():
    xb, xt, yb = (jnp.asarray(ref[k]) for k in ('xb', 'xt', 'yb'))
    kbb, ktb = kernels.fnn_ntk(xb, xb), kernels.fnn_ntk(xt, xb)
    ours = np.asarray(attack_lib.gp_predict(ktb, kbb, yb, t, reg))
    k = np.asarray(kbb) + reg * np.trace(kbb) / 10 * np.eye(10)
    direct = np.asarray(ktb) @ np.linalg.solve(
        k, (np.eye(10) - scipy.linalg.expm(-k * t / yb.size)) @ np.asarray(yb))
    live = None
    if kernels.neural_tangents_unavailable() is None:
      import neural_tangents as nt  # pylint: disable=g-import-not-at-top
      live = np.asarray(nt.predict.gradient_descent_mse(kbb, yb, diag_reg=reg)(
          t, 0.0, 0.0, ktb)[1])
  assert np.abs(ours).max() > 1e-3  # not trivially zero
  np.testing.assert_allclose(ours, direct, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(ours, ref['mean'], rtol=1e-9, atol=1e-12)
  if live is not None:
    np.testing.assert_allclose(live, ref['mean'], rtol=1e-12, atol=1e-14)


def test_gp_weight_gradient_matches_autodiff_through_eigh():
  rng = np.random.default_rng(1)

  def plain(k, y, s):
    lam, v = jnp.linalg.eigh(k)
    return v @ ((-jnp.expm1(-lam * s) / lam)[:, None] * (v.T @ y))

  with enable_x64():
    xb = jnp.asarray(rng.random((9, 3, 3, 1)))
    yb = jax.nn.one_hot(rng.integers(0, 3, 9), 3, dtype=jnp.float64)
    r = jnp.asarray(rng.normal(size=(9, 3)))

    def loss(fn, x):
      k = kernels.fnn_ntk(x, x)
      k = k + 1e-4 * jnp.trace(k) / 9 * jnp.eye(9)
      return jnp.sum(fn(k, yb, jnp.asarray(40.0 / yb.size)) * r)

    ours = jax.jit(jax.grad(
        lambda x: loss(attack_lib._matrix_function_apply, x)))(xb)  # pylint: disable=protected-access
    ref = jax.jit(jax.grad(lambda x: loss(plain, x)))(xb)
  np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-12)


# ---------------------------------------------------------------- PGD
def _tiny_attack(precision='float32', seed=3, **kw):
  x, y = synthetic_images(80, num_classes=4, size=8, seed=seed)
  cfg = dict(eps=0.1, nb_iter=4, t=16.0, val_batch_size=16,
             precision=precision)
  cfg.update(kw)
  return (attack_lib.NTGA(kernels.fnn_ntk, x[40:], y[40:], 4,
                          attack_lib.AttackConfig(**cfg)), x[:40], y[:40])


@pytest.mark.slow
def test_pgd_raises_loss_within_eps_and_unit_box():
  att, xb, yb = _tiny_attack()
  x_adv, st = att.attack_block(xb, yb)
  losses = st['loss']
  assert len(losses) == 5
  assert losses[-1] > losses[0] + 1e-3
  assert sum(b > a for a, b in zip(losses, losses[1:])) >= 3
  assert np.abs(x_adv - xb).max() <= 0.1 + 1e-6
  assert np.abs(x_adv - xb).max() > 0.05  # it did move
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  # a real PGD: the first step is eps_iter, not eps
  att1, _, _ = _tiny_attack(seed=4, eps_iter=0.02, nb_iter=1)
  x1, _ = att1.attack_block(xb, yb)
  assert np.abs(x1 - xb).max() <= 0.02 + 1e-6


def test_loss_gradient_matches_finite_differences():
  att, xb, yb = _tiny_attack()
  _, _, g = att.loss_and_grad(xb, yb)
  rng = np.random.default_rng(0)
  # Half along the gradient, half random: along a random direction alone
  # the derivative is so small (about 2e-4) that float32 round-off in the
  # two losses moves the finite difference by more than 5% on some CPUs.
  # A wrong gradient still fails: its own direction is not the loss's.
  r = rng.normal(size=xb.shape)
  d = (g / np.linalg.norm(g) + r / np.linalg.norm(r)).astype(np.float32)
  d /= np.linalg.norm(d)
  h = 1e-2
  fd = (att.loss(xb + h * d, yb)[0] - att.loss(xb - h * d, yb)[0]) / (2 * h)
  assert np.sum(g * d) == pytest.approx(fd, rel=0.05, abs=1e-6)


@pytest.mark.slow
def test_random_start_and_float64():
  att, xb, yb = _tiny_attack(rand_init=True)
  with pytest.raises(ValueError, match='PRNG key'):
    att.attack_block(xb, yb)
  x1, _ = att.attack_block(xb, yb, jax.random.PRNGKey(0))
  x2, _ = att.attack_block(xb, yb, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(x1, x2)
  assert np.abs(x1 - xb).max() <= 0.1 + 1e-6
  att32, _, _ = _tiny_attack()
  l32, _, g32 = att32.loss_and_grad(xb, yb)
  with attack_lib.precision_scope('float64'):
    att64, _, _ = _tiny_attack('float64')
    l64, _, g64 = att64.loss_and_grad(xb, yb)
  assert g64.dtype == np.float64
  assert l64 == pytest.approx(l32, rel=1e-5)
  assert np.mean(np.sign(g64) == np.sign(g32)) > 0.95


def test_bad_settings_are_clear_errors():
  with pytest.raises(ValueError, match='eps must be'):
    attack_lib.AttackConfig(eps=0.0).validate()
  with pytest.raises(ValueError, match='eps_iter'):
    attack_lib.AttackConfig(eps=0.1, eps_iter=0.2).validate()
  with pytest.raises(ValueError, match='float64'):
    attack_lib.AttackConfig(precision='float16').validate()
  with pytest.raises(ValueError, match='val_size'):
    generate_lib.split_for_attack(100, 100, 0)
  with pytest.raises(KeyError, match='surrogate'):
    kernels.get_surrogate('resnet', 10)


def test_blocks_cover_every_sample():
  order = np.arange(1000)
  blocks = generate_lib.make_blocks(order, 512)
  assert [len(b) for b in blocks] == [500, 500]
  blocks = generate_lib.make_blocks(np.arange(50000), 512)
  assert len(blocks) == 98 and {len(b) for b in blocks} == {510, 511}
  np.testing.assert_array_equal(np.concatenate(blocks), np.arange(50000))


def test_cnn_surrogate_attack_raises_loss():
  x, y = synthetic_images(30, num_classes=3, size=8, seed=5)
  sur = kernels.get_surrogate('cnn', 3)
  att = attack_lib.NTGA(sur.kernel_fn, x[10:], y[10:], 3,
                        attack_lib.AttackConfig(eps=0.1, nb_iter=2, t=8.0,
                                                val_batch_size=10))
  x_adv, st = att.attack_block(x[:10], y[:10])
  assert st['loss'][-1] > st['loss'][0]
  assert np.abs(x_adv - x[:10]).max() <= 0.1 + 1e-6


def test_official_mode_is_one_gradient_and_one_full_eps_signed_step():
  x, y = synthetic_images(30, num_classes=3, size=8, seed=5)
  x[:10, :2] = 0.0  # pixels that the clip at 0 must hold
  cfg = attack_lib.AttackConfig(eps=0.1, nb_iter=5, eps_iter=0.01, t=8.0,
                                val_batch_size=10, official=True)
  att = attack_lib.NTGA(kernels.cnn_ntk, x[10:], y[10:], 3, cfg)
  _, _, g = att.loss_and_grad(x[:10], y[:10])
  assert att.gradients == 1
  x_adv, st = att.attack_block(x[:10], y[:10])
  assert att.gradients == 2  # one more: official mode ignores nb_iter
  assert len(st['loss']) == 2  # before and after the single step
  expected = np.clip(x[:10] + 0.1 * np.sign(g), 0.0, 1.0)
  np.testing.assert_allclose(x_adv, expected, atol=1e-6)
  assert st['loss'][1] > st['loss'][0]
  with pytest.raises(ValueError, match='official'):
    attack_lib.AttackConfig(official=True, rand_init=True).validate()


@pytest.mark.slow
def test_val_sample_draws_fresh_subsets_of_the_target(tmp_path):
  x, y = synthetic_images(60, num_classes=3, size=8, seed=7)
  xv, yv = x[20:], y[20:]
  cfg = attack_lib.AttackConfig(eps=0.1, nb_iter=3, t=8.0, val_batch_size=8,
                                val_sample=12)
  att = attack_lib.NTGA(kernels.fnn_ntk, xv, yv, 3, cfg)
  # one gradient on a draw equals the whole-target attack on those images
  rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
  loss, acc, g = att.loss_and_grad(x[:10], y[:10], rng_a)
  pick = np.sort(rng_b.choice(40, 12, replace=False))
  ref = attack_lib.NTGA(kernels.fnn_ntk, xv[pick], yv[pick], 3,
                        dataclasses.replace(cfg, val_sample=0))
  loss_r, acc_r, g_r = ref.loss_and_grad(x[:10], y[:10])
  assert loss == pytest.approx(loss_r, rel=1e-5) and acc == acc_r
  np.testing.assert_allclose(g, g_r, rtol=1e-4, atol=1e-7)
  # successive gradients see other images; a block's key fixes the draws
  _, _, g2 = att.loss_and_grad(x[:10], y[:10], rng_a)
  assert not np.allclose(g, g2)
  key = jax.random.PRNGKey(4)
  x1, s1 = att.attack_block(x[:10], y[:10], key)
  x2, s2 = att.attack_block(x[:10], y[:10], key)
  np.testing.assert_array_equal(x1, x2)
  assert s1['loss'] == s2['loss']
  with pytest.raises(ValueError, match='exceeds the validation target'):
    attack_lib.NTGA(kernels.fnn_ntk, xv, yv, 3,
                    dataclasses.replace(cfg, val_sample=41))
  with pytest.raises(ValueError, match='val_sample must be'):
    dataclasses.replace(cfg, val_sample=-1).validate()
  # the component says so before any kernel is built
  with pytest.raises(ValueError, match='exceeds the validation target'):
    generate_lib.generate_ntga.run(str(tmp_path), examples=_tiny_examples(
        tmp_path), **dict(_TINY, val_sample=41))


# ---------------------------------------------------------------- component
@pytest.mark.slow
def test_component_keeps_labels_and_order_and_is_deterministic(tmp_path):
  ex = _tiny_examples(tmp_path)
  r1 = generate_lib.generate_ntga.run(str(tmp_path / 'a'), examples=ex,
                                      **_TINY)
  r2 = generate_lib.generate_ntga.run(str(tmp_path / 'b'), examples=ex,
                                      **_TINY)
  src = ex.load_split('train')
  out = r1['poisoned'].load_split('train')
  idx = out['idx']
  assert len(idx) == 160 - 40  # every sample but the validation target
  assert np.all(np.diff(idx) > 0)  # the source order
  np.testing.assert_array_equal(out['y'], src['y'][idx])
  delta = out['x'] - src['x'][idx]
  assert np.abs(delta).max() <= 0.1 + 1e-6
  assert np.mean(np.abs(delta) > 1e-4) > 0.5  # poisoned, not copied
  assert out['x'].min() >= 0 and out['x'].max() <= 1
  val = r1['poisoned'].load_split('val')
  assert not set(val['idx']) & set(idx)
  np.testing.assert_array_equal(val['x'], src['x'][val['idx']])
  test = r1['poisoned'].load_split('test')
  np.testing.assert_array_equal(test['x'], ex.load_split('test')['x'])
  np.testing.assert_array_equal(
      out['x'], r2['poisoned'].load_split('train')['x'])
  assert os.path.getsize(r1['poisoned'].path('examples.png')) > 1000
  with open(os.path.join(r1.execution_dir, 'execution.json')) as f:
    assert json.load(f)['status'] == 'complete'
  props = r1['poisoned'].properties
  assert props['blocks'] == 3 and props['surrogate_val_loss']['poisoned'] > (
      props['surrogate_val_loss']['clean'])
  # another seed gives another permutation
  r3 = generate_lib.generate_ntga.run(str(tmp_path / 'a'), examples=ex,
                                      seed=1, **_TINY)
  assert not np.array_equal(r3['poisoned'].load_split('val')['idx'],
                            val['idx'])
  # rerun: reused
  assert generate_lib.generate_ntga.run(str(tmp_path / 'a'), examples=ex,
                                        **_TINY).reused


@pytest.mark.parametrize('surrogate', ['fnn', 'cnn'])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch,
                                                        surrogate):
  ex = _tiny_examples(tmp_path)
  whole = generate_lib.generate_ntga.run(str(tmp_path / 'whole'), examples=ex,
                                         rand_init=True, surrogate=surrogate,
                                         **_TINY)
  original = attack_lib.NTGA.attack_block
  calls = []

  def interrupted(self, *a, **kw):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return original(self, *a, **kw)

  monkeypatch.setattr(attack_lib.NTGA, 'attack_block', interrupted)
  wd = str(tmp_path / 'resumed')
  with pytest.raises(KeyboardInterrupt):
    generate_lib.generate_ntga.run(wd, examples=ex, rand_init=True,
                                   surrogate=surrogate, **_TINY)
  assert len(glob.glob(os.path.join(wd, 'generate_ntga', '.scratch-*',
                                    'block_*.npz'))) == 2
  assert not glob.glob(os.path.join(wd, 'generate_ntga', '*',
                                    'execution.json'))
  calls.clear()
  resumed = generate_lib.generate_ntga.run(wd, examples=ex, rand_init=True,
                                           surrogate=surrogate, **_TINY)
  assert len(calls) == 1  # only the unfinished block was computed
  a = whole['poisoned'].load_split('train')
  b = resumed['poisoned'].load_split('train')
  np.testing.assert_array_equal(a['x'], b['x'])
  np.testing.assert_array_equal(a['idx'], b['idx'])
  # the record names the code that computed the CNN kernel
  want = kernels.resolve_cnn_impl() if surrogate == 'cnn' else None
  assert resumed['poisoned'].properties['cnn_kernel'] == want


@pytest.mark.slow
def test_sharded_validation_over_two_devices_matches_one():
  code = r'''
import numpy as np, jax
from modelsteal.ntga import attack, kernels
from tests import fixtures
from tests.conftest import synthetic_images
assert len(jax.devices()) == 2
x, y = synthetic_images(70, num_classes=3, size=6, seed=3)
cfg = attack.AttackConfig(eps=0.1, nb_iter=2, t=16.0, val_batch_size=8)
for fn in (kernels.fnn_ntk, kernels.cnn_ntk):
  one = attack.NTGA(fn, x[20:], y[20:], 3, cfg, jax.devices()[:1])
  two = attack.NTGA(fn, x[20:], y[20:], 3, cfg)
  l1, _, g1 = one.loss_and_grad(x[:20], y[:20])
  l2, _, g2 = two.loss_and_grad(x[:20], y[:20])
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  np.testing.assert_allclose(g1, g2, rtol=1e-3, atol=1e-4 * np.abs(g1).max())
print('OK', two.n_devices)
'''
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', code], cwd=root, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'OK 2' in out.stdout


# ---------------------------------------------------------------- pipeline
@pytest.mark.slow
def test_pipeline_smoke_export_and_reuse(tiny_npz, tmp_path, capsys):
  from pipelines import ntga as ntga_pipeline  # pylint: disable=g-import-not-at-top
  wd = str(tmp_path / 'runs')
  npz = str(tmp_path / 'out' / 'poisoned.npz')
  blas_env = os.environ.get('OPENBLAS_NUM_THREADS')
  with flagsaver.flagsaver(dataset=tiny_npz, workdir=wd, smoke=True,
                           export_npz=npz, surrogate='fnn'):
    ntga_pipeline.main(['ntga'])
  # main in a process not its own leaves its settings alone (see
  # test_pipeline_tunes_only_a_process_of_its_own)
  assert os.environ.get('OPENBLAS_NUM_THREADS') == blas_env
  out = capsys.readouterr().out
  assert 'poisoned:' in out and 'execution.json' in out and npz in out
  with np.load(npz) as z:
    assert set(z.files) == {'x_train', 'y_train', 'idx_train', 'x_test',
                            'y_test'}
    with np.load(tiny_npz) as src:
      clean = src['x_train'][z['idx_train']].astype(np.float32) / 255
      np.testing.assert_array_equal(z['y_train'], src['y_train'][z['idx_train']])
      assert len(z['y_test']) == len(src['y_test'])
    assert z['x_train'].dtype == np.float32
    assert np.abs(z['x_train'][..., 0] - clean[..., 0]).max() <= 0.3 + 1e-6
  with flagsaver.flagsaver(dataset=tiny_npz, workdir=wd, smoke=True,
                           surrogate='fnn'):
    ntga_pipeline.main(['ntga'])
  assert 'reused' in capsys.readouterr().out
  with flagsaver.flagsaver(dataset=tiny_npz, workdir=wd, smoke=True, eps=3.0):
    with pytest.raises(SystemExit):
      ntga_pipeline.main(['ntga'])
  assert 'eps must be' in capsys.readouterr().err


def test_pipeline_smoke_cnn_official(tiny_npz, tmp_path, capsys):
  from pipelines import ntga as ntga_pipeline  # pylint: disable=g-import-not-at-top
  with flagsaver.flagsaver(dataset=tiny_npz, workdir=str(tmp_path), smoke=True,
                           surrogate='cnn', official=True, val_sample=50):
    ntga_pipeline.main(['ntga'])
  out = capsys.readouterr().out
  assert 'official one-step mode' in out and 'poisoned:' in out
  assert '50 drawn per gradient' in out
  rec = glob.glob(str(tmp_path / 'generate_ntga' / '*' / 'poisoned' /
                      'artifact.json'))
  with open(rec[0]) as f:
    props = json.load(f)['properties']
  assert props['mode'] == 'official one-step' and props['nb_iter'] == 1
  assert 'held out' in props['validation_target']
  assert props['val_sample'] == 50 and 'drawn afresh' in props[
      'validation_target']
