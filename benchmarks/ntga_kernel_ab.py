r"""A/B of the numba CNN kernel of two checkouts, in one process.

    git worktree add /tmp/base <commit>
    taskset -c 1 python benchmarks/ntga_kernel_ab.py --base=/tmp/base [--reps=8] [--parts=val,fwd,bwd,grad]

Loads `modelsteal/ntga/cnn_cpu.py` of this checkout ("new") and of --base
under other module names and runs both, alternating base and new call by
call, so that the machine's drift (this 2-core VM moves by 10-20% between
minutes and between processes) falls on both alike. Parts, MNIST, block of
512 training images + 0.3 x a random sign per pixel, 1,000 test images as
the validation target:
  val: the fused validation pass (`_val_range`: forward, loss, reverse
       sweep along the block), called directly (no XLA, one thread);
  fwd: the block kernel K(x, x) (`_forward`, each pair once), directly;
  bwd: its backward pass, both sides (`_backward_chunk` per chunk), directly;
  grad: the whole block gradient as NTGA computes it
       (`attack.NTGA.loss_and_grad`: block kernel, GP weights, the fused
       validation pass and the backward passes), through XLA: each side's
       module is the one `kernels.cnn_ntk` calls into, so this part times
       the way the kernel is registered with XLA and called (the original
       custom-call ABI before issue 29, the typed FFI after) as well as the
       loops. The figure ntga_timing.py reports, 1,000 validation images.
Prints min and median seconds per part, their ratio (new / base) and a
checksum of each side's results (equal up to float32 summation order when
only speed changed). Used for the kernel changes of BUILD_NOTES "Session
14" (val, fwd, bwd) and "NTGA on current JAX" (grad). Its compiled code goes
to its own NUMBA_CACHE_DIR (the routines are compiled for direct calls
here; they must not land in the package's cache). A base whose kernel
refuses the JAX in use (the original ABI on JAX >= 0.6) is run anyway, and
says so.
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('NUMBA_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'ntga_kernel_ab'))
sys.path.insert(0, ROOT)

from modelsteal.ntga import cpu  # pylint: disable=g-import-not-at-top
# as ntga_timing.py and pipelines.ntga: one single-threaded XLA device per
# core this process may use (set before JAX's backend starts)
cpu.configure()

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from modelsteal.data import sources
from modelsteal.ntga import kernels

NCLS = 10


def _load(path, name):
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  sys.modules[name] = mod  # numba's cache finds the module by this name
  spec.loader.exec_module(mod)
  return mod


def _prep(m, fv, fb, dc):
  w, b = kernels.W_VAR, kernels.B_VAR
  ops = [np.asarray(o) for o in m._operands(fv, fb, w, b, dc, (0, 1), ncls=NCLS)]  # pylint: disable=protected-access
  bops = [np.asarray(o) for o in m._operands(fb, fb, w, b, dc, (1, 1), sym=True)]  # pylint: disable=protected-access
  return ops, bops


def _val(m, ops, y1):
  _, prm, a, qa1, ra1, qa2, ra2, bm, qb1, rb1, qb2, rb2, box, hw = ops
  nt, nc = a.shape[1], bm.shape[0]
  alpha = (np.random.default_rng(5).standard_normal((nc * m.JC, NCLS))
           * 0.01).astype(np.float32)
  yp = np.zeros((nt * m.IT, NCLS), np.float32)
  yp[:len(y1)] = y1
  wp = np.zeros(nt * m.IT, np.float32)
  wp[:len(y1)] = 1.0 / len(y1)
  at = np.ascontiguousarray(a.transpose(0, 1, 3, 2))
  stats = np.zeros(2, np.float32)
  galpha = np.zeros((nc * m.JC, NCLS), np.float32)
  gb, gqb1, gqb2 = np.zeros_like(bm), np.zeros_like(qb1), np.zeros_like(qb2)
  t0 = time.perf_counter()
  m._val_range(a, qa1, ra1, qa2, ra2, bm, qb1, rb1, qb2, rb2, box, hw,  # pylint: disable=protected-access
               prm[0], prm[1], prm[2], prm[3], prm[4], alpha, yp, wp, 0, 1,
               stats, galpha, gb, gqb1, gqb2, at)
  return time.perf_counter() - t0, (float(stats[0]), float(np.abs(gb).sum()))


def _fwd(m, bops):
  _, prm, a, qa1, ra1, qa2, ra2, bm, qb1, rb1, qb2, rb2, box, hw = bops
  out = np.zeros((a.shape[1] * m.IT, bm.shape[0] * m.JC), np.float32)
  t0 = time.perf_counter()
  m._forward(a, qa1, ra1, qa2, ra2, bm, qb1, rb1, qb2, rb2, box, hw,  # pylint: disable=protected-access
             prm[0], prm[1], prm[2], prm[3], prm[4], out, 0, 1, True)
  return time.perf_counter() - t0, (float(np.abs(out).sum()),)


def _bwd(m, bops):
  _, prm, a, qa1, ra1, qa2, ra2, bm, qb1, rb1, qb2, rb2, box, hw = bops
  g = np.random.default_rng(2).standard_normal(
      (a.shape[1] * m.IT, bm.shape[0] * m.JC)).astype(np.float32)
  s2 = qa2.shape[1]
  wt, wk = np.float32(prm[2] / s2), np.float32(prm[3] / s2)
  at = np.ascontiguousarray(a.transpose(0, 1, 3, 2))
  bt = np.ascontiguousarray(bm.transpose(0, 1, 3, 2))
  ga, gqa1, gqa2 = np.zeros_like(a), np.zeros_like(qa1), np.zeros_like(qa2)
  gb, gqb1, gqb2 = np.zeros_like(bm), np.zeros_like(qb1), np.zeros_like(qb2)
  t0 = time.perf_counter()
  for c in range(bm.shape[0]):
    m._backward_chunk(a, qa1, ra1, qa2, ra2, bm, qb1, rb1, qb2, rb2, box, hw,  # pylint: disable=protected-access
                      prm[0], prm[1], wt, wk, g, True, True, c, True,
                      ga, gqa1, gqa2, gb, gqb1, gqb2, at, bt)
  return (time.perf_counter() - t0,
          (float(np.abs(ga).sum()), float(np.abs(gb).sum())))


def _grad(m, att, xb, yb):
  """One block gradient with `kernels.cnn_ntk` calling into module m."""
  kernels.cnn_cpu = m
  t0 = time.perf_counter()
  loss, _, g = att.loss_and_grad(xb, yb)
  return time.perf_counter() - t0, (float(loss), float(np.abs(g).sum()))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--base', required=True, help='the other checkout')
  ap.add_argument('--dataset', default=os.path.join(
      ROOT, '..', 'shared', 'data', 'mnist', 'mnist.npz'))
  ap.add_argument('--reps', type=int, default=8)
  ap.add_argument('--parts', default='val,fwd,bwd')
  ap.add_argument('--n_val', type=int, default=1000,
                  help='validation images of the grad part')
  args = ap.parse_args()
  parts = args.parts.split(',')
  bad = set(parts) - {'val', 'fwd', 'bwd', 'grad'}
  if bad or args.reps < 1 or args.n_val < 1:
    ap.error(f'--parts takes val, fwd, bwd, grad (got {sorted(bad)}); '
             '--reps, --n_val >= 1')
  src = os.path.join(args.base, 'modelsteal', 'ntga', 'cnn_cpu.py')
  if not os.path.isfile(src):
    ap.error(f'{src}: no such file (--base must be a checkout)')
  jax.config.update('jax_default_matmul_precision', 'highest')
  cpu.keep_freed_memory()
  cpu.limit_blas_threads(1)
  mods = {'base': _load(src, 'cnn_ab_base'),
          'new': _load(os.path.join(ROOT, 'modelsteal', 'ntga', 'cnn_cpu.py'),
                       'cnn_ab_new')}
  ds = sources.load_dataset(args.dataset)
  xb = ds.x_train[:512]
  sign = np.sign(np.random.default_rng(0).normal(size=xb.shape))
  xb = np.clip(xb + 0.3 * sign, 0, 1).astype(np.float32)
  yv = ds.y_test[:1000]
  y1 = (np.eye(NCLS, dtype=np.float32)[yv] if yv.ndim == 1
        else yv.astype(np.float32))
  w, b = kernels.W_VAR, kernels.B_VAR
  dc = kernels._dense_coeffs(kernels.CNN_DENSE_LAYERS, w, b)  # pylint: disable=protected-access
  fv = kernels._cnn_features(jnp.asarray(ds.x_test[:1000]), w, b)  # pylint: disable=protected-access
  fb = kernels._cnn_features(jnp.asarray(xb), w, b)  # pylint: disable=protected-access
  prep = {k: _prep(m, fv, fb, dc) for k, m in mods.items()}
  atts = {}
  if 'grad' in parts:
    import functools  # pylint: disable=g-import-not-at-top
    from modelsteal.ntga import attack  # pylint: disable=g-import-not-at-top
    for k, m in mods.items():
      if not m.available():
        print(f'{k}: {m.unavailable_reason()} -- run anyway for the A/B')
        m.unavailable_reason = lambda: None
      # a partial per side: attack._compiled caches by kernel function
      fn = functools.partial(kernels.cnn_ntk, impl='cpu')
      atts[k] = attack.NTGA(fn, ds.x_test[:args.n_val],
                            ds.y_test[:args.n_val], NCLS,
                            attack.AttackConfig(val_batch_size=1000))
    yb = ds.y_train[:512]
  print(f'jax {jax.__version__}, devices {jax.devices()}, '
        f'kernel threads {mods["new"].threads()}', flush=True)
  times = {(k, p): [] for k in mods for p in parts}
  sums = {}
  for r in range(args.reps + 1):  # the first round compiles
    for k, m in mods.items():
      ops, bops = prep[k]
      for p in parts:
        t, chk = (_val(m, ops, y1) if p == 'val' else
                  _fwd(m, bops) if p == 'fwd' else
                  _bwd(m, bops) if p == 'bwd' else _grad(m, atts[k], xb, yb))
        if r:
          times[(k, p)].append(t)
        sums[(k, p)] = chk
  for p in parts:
    tb, tn = times[('base', p)], times[('new', p)]
    print(f'{p}: base min {min(tb):.3f} median {np.median(tb):.3f} s | '
          f'new min {min(tn):.3f} median {np.median(tn):.3f} s | '
          f'new/base min {min(tn) / min(tb):.3f} median '
          f'{np.median(tn) / np.median(tb):.3f} | checksums '
          f'{sums[("base", p)]} {sums[("new", p)]}')


if __name__ == '__main__':
  main()
