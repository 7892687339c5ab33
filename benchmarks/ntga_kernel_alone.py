r"""The CPU CNN kernel alone (no NTGA around it), min of 5 calls:

    taskset -c 1 python benchmarks/ntga_kernel_alone.py [MNIST_NPZ]

val_fwd: K(1,000 MNIST test images, 512 perturbed training images);
val_bwd: its gradient along the 512 (the validation part of a gradient: the
column side alone); block_fwdbwd: the block kernel K(x, x) of the 512 and
its gradient. One thread unless MODELSTEAL_NTGA_THREADS says otherwise.
Figures: BUILD_NOTES.md, "NTGA generation" (N15); run alternately against a
`git worktree` of the previous commit when comparing kernels.
"""
import os
import sys
import time

os.environ.setdefault('MODELSTEAL_NTGA_THREADS', '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from modelsteal.data import sources
from modelsteal.ntga import cnn_cpu, kernels

import _data  # benchmarks/_data.py: the data path


def main():
  path = _data.mnist_npz(sys.argv[1] if len(sys.argv) > 1 else None)
  ds = sources.load_dataset(path)
  xv = jnp.asarray(ds.x_test[:1000], jnp.float32)
  xb = ds.x_train[:512]
  sign = np.sign(np.random.default_rng(0).normal(size=xb.shape))
  xb = jnp.asarray(np.clip(xb + 0.3 * sign, 0, 1), jnp.float32)
  r = jnp.asarray(np.random.default_rng(1).normal(size=(1000, 512)),
                  jnp.float32)
  w = jnp.asarray(np.random.default_rng(2).normal(size=(512, 512)),
                  jnp.float32)
  f = lambda a, b: kernels.cnn_ntk(a, b, impl='cpu')
  fwd = jax.jit(f)
  bwd = jax.jit(jax.grad(lambda b: jnp.sum(f(xv, b) * r)))
  blk = jax.jit(jax.grad(lambda b: jnp.sum(kernels.cnn_ntk_block(b) * w)))

  def timed(fn, *args, n=5):
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(n):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      ts.append(time.perf_counter() - t0)
    return min(ts)

  print(f'IT={cnn_cpu.IT} JC={cnn_cpu.JC} threads={cnn_cpu.threads()} '
        f'val_fwd={timed(fwd, xv, xb):.3f} val_bwd={timed(bwd, xb):.3f} '
        f'block_fwdbwd={timed(blk, xb):.3f}', flush=True)


if __name__ == '__main__':
  main()
