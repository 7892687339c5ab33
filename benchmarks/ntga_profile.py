r"""Where one NTGA-CNN gradient's time goes: each jitted piece of
`NTGA.loss_and_grad` timed alone (min and median of 5 calls).

    taskset -c 1 python benchmarks/ntga_profile.py [MNIST_NPZ] [N_VAL]

Validation target: the first N_VAL (default 1,000) test images; block: 512
training images plus 0.3 x a random sign per pixel (a block after a PGD
step). Pieces: the block kernel (`kernel_rows`) and its backward
(`rows_vjp`), the GP weights (`alpha`) and their VJP (`gp_vjp`), the
validation part's forward and backward (`chunk_grad`, per validation
batch) and its forward alone (`chunk_loss`). Figures: BUILD_NOTES.md, "NTGA
generation" (N13). MNIST_NPZ defaults to $MODELSTEAL_DATA/mnist/mnist.npz.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from modelsteal.data import sources
from modelsteal.ntga import attack, cpu, kernels

import _data  # benchmarks/_data.py: the data path


def main():
  path = _data.mnist_npz(sys.argv[1] if len(sys.argv) > 1 else None)
  n_val = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
  jax.config.update('jax_default_matmul_precision', 'highest')
  cpu.keep_freed_memory()  # as pipelines.ntga does
  cpu.limit_blas_threads(1)  # as pipelines.ntga does
  ds = sources.load_dataset(path)
  xv, yv = ds.x_test[:n_val], ds.y_test[:n_val]
  xb, yb = ds.x_train[:512], ds.y_train[:512]
  sign = np.sign(np.random.default_rng(0).normal(size=xb.shape))
  xb = np.clip(xb + 0.3 * sign, 0, 1).astype(np.float32)
  sur = kernels.get_surrogate('cnn', 10)
  att = attack.NTGA(sur.kernel_fn, xv, yv, 10,
                    attack.AttackConfig(val_batch_size=sur.val_batch_size))

  def timed(name, fn, n=5):
    fn()
    ts = []
    for _ in range(n):
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      ts.append(time.perf_counter() - t0)
    print(f'{name:14} {min(ts):.3f} s  (median {np.median(ts):.3f})',
          flush=True)

  timed('loss_and_grad', lambda: att.loss_and_grad(xb, yb)[2], 3)
  xbs, _, k_bb, yb1, alphas = att._block(xb, yb)  # pylint: disable=protected-access
  _, xvb, yvb, wvb = att._val[0]  # pylint: disable=protected-access
  g_alpha = jnp.ones((len(xb), 10), jnp.float32)
  kbar = att._gp_vjp(k_bb, yb1, g_alpha)  # pylint: disable=protected-access
  timed('kernel_rows', lambda: att._kernel_rows(xbs[0], 0, len(xb)))  # pylint: disable=protected-access
  timed('alpha', lambda: att._alpha_of(k_bb, yb1))  # pylint: disable=protected-access
  timed('gp_vjp', lambda: att._gp_vjp(k_bb, yb1, g_alpha))  # pylint: disable=protected-access
  timed('rows_vjp', lambda: att._rows_vjp(xbs[0], kbar, 0, len(xb)))  # pylint: disable=protected-access
  print(f'validation batches: {len(att._val)} of {sur.val_batch_size}; '  # pylint: disable=protected-access
        'per batch:')
  timed('chunk_grad', lambda: att._chunk_grad(xbs[0], alphas[0], xvb, yvb, wvb))  # pylint: disable=protected-access
  timed('chunk_loss', lambda: att._chunk_loss(xbs[0], alphas[0], xvb, yvb, wvb))  # pylint: disable=protected-access


if __name__ == '__main__':
  main()
