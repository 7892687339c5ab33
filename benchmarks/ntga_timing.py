r"""Seconds per NTGA gradient (one block against the validation target).

    taskset -c 1 python benchmarks/ntga_timing.py --surrogate=fnn --n_val=10000
    taskset -c 1 python benchmarks/ntga_timing.py --surrogate=cnn --n_val=1000
    taskset -c 1 python benchmarks/ntga_timing.py --surrogate=cnn --methods=ours --n_val=1000 --dataset=PATH/mnist.npz --perturb=0.3

Times d loss / d block for a 512-image MNIST-shaped block three ways. By
default the images are random pixels; `--dataset=PATH.npz` takes real ones
(validation target from its test split, block from its training split;
`--perturb=0.3` adds eps * a random sign to every block pixel, as a block
looks after its first PGD step). The CPU CNN kernel's cost depends on the
images: it skips the arc-cosine map where a validation image's 5x5 window
is all zero (56% of MNIST's conv-1 windows), which random pixels never
have.

* `naive` (needs the `nt` extra, i.e. jax 0.5.3): neural-tangents kernels, closed-form GP mean through `eigh`, and
  `jax.grad` of the whole loss in one jit (what the issue calls the
  straightforward version);
* `nt+blocked` (the `nt` extra too): this package's `NTGA.loss_and_grad` (block kernel and GP
  weights once per step, validation in batches) on neural-tangents kernels;
* `ours`: the same with the closed-form kernel (`fnn_ntk`, `cnn_ntk`).

Prints a table (median of --repeats after one warm-up call that compiles) and
appends it to --out (CSV). XLA gets one single-threaded CPU device per core
the process may use (`modelsteal.ntga.cpu`): `taskset -c 1` times one core,
no taskset both. `--shape=32,32,3` times the CIFAR-10 shape.
"""

from __future__ import annotations

import functools
import os
import sys
import resource
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

_SURROGATE = flags.DEFINE_enum('surrogate', 'fnn', ['fnn', 'cnn'], 'Surrogate.')
_N_VAL = flags.DEFINE_integer('n_val', 10000, 'Validation target images.')
_BLOCK = flags.DEFINE_integer('block', 512, 'Block size.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per method.')
_METHODS = flags.DEFINE_list('methods', ['naive', 'nt+blocked', 'ours'],
                             'Methods to time.')
_VAL_BATCH = flags.DEFINE_integer('val_batch_size', 0, '0: surrogate default.')
_OUT = flags.DEFINE_string('out', 'bench_runs/ntga_timing_v3.csv', 'CSV to append (v3: with CPU seconds, images, perturb, batch, thread and malloc settings).')
_CONFIGURE = flags.DEFINE_bool(
    'configure_cpu', True, 'modelsteal.ntga.cpu.configure() (off: XLA\'s '
    'defaults, one device with a thread pool).')
_DEVICES = flags.DEFINE_integer(
    'devices', 0, 'With --configure_cpu: single-threaded host devices (0: '
    'one per available core, as configure() does by default).', lower_bound=0)
_THREADS = flags.DEFINE_bool(
    'thread_stats', False, 'Per timed call, the threads\' on-CPU and '
    'run-queue waiting seconds (/proc/self/task/*/schedstat): whether a slow '
    'call was starved (waiting) or busy (spinning). Threads that ended '
    'within the call (the numba CNN kernel\'s) are not seen.')
_ARENAS = flags.DEFINE_integer(
    'malloc_arenas', 1, 'With --keep_freed_memory: glibc malloc arenas '
    '(0: glibc\'s default, 8 per core; every new kernel thread then gets a '
    'fresh arena).', lower_bound=0)
_BLAS = flags.DEFINE_integer(
    'blas_threads', 1, 'modelsteal.ntga.cpu.limit_blas_threads(N), as '
    'pipelines.ntga does (0: the BLAS libraries\' defaults, a spinning '
    'thread per core for jaxlib\'s eigh).', lower_bound=0)
_KEEP_MEM = flags.DEFINE_bool(
    'keep_freed_memory', True, 'modelsteal.ntga.cpu.keep_freed_memory(), as '
    'pipelines.ntga does (off: glibc\'s defaults, every gradient maps its '
    'XLA temporaries afresh).')
_TILE = flags.DEFINE_integer('tile', 0, 'cnn_ntk rows per tile (0: its '
                            'default, sized for a CPU cache).')
_CNN_IMPL = flags.DEFINE_enum(
    'cnn_impl', 'auto', ['auto', 'cpu', 'xla'], 'cnn_ntk implementation '
    '(auto: numba loops on a CPU, XLA on an accelerator); the CSV\'s method '
    'column names it.')
_SHAPE = flags.DEFINE_list('shape', ['28', '28', '1'], 'Image shape H,W,C.')
_DATASET = flags.DEFINE_string(
    'dataset', None, 'An .npz with x_train, y_train, x_test, y_test (e.g. '
    'MNIST): real images instead of random pixels (--shape is ignored).')
_PERTURB = flags.DEFINE_float(
    'perturb', 0.0, 'With --dataset: eps * a random sign added to every '
    'block pixel (clipped to [0, 1]), like a block after a PGD step.')


def main(argv):
  del argv
  from modelsteal.ntga import cpu  # pylint: disable=g-import-not-at-top
  if _CONFIGURE.value:
    cpu.configure(_DEVICES.value or None)  # single-threaded XLA devices
  if _KEEP_MEM.value:
    cpu.keep_freed_memory(_ARENAS.value or None)
  if _BLAS.value:
    cpu.limit_blas_threads(_BLAS.value)
  import jax  # pylint: disable=g-import-not-at-top
  # float32 matrix products in full precision on GPUs too (not TF32)
  jax.config.update('jax_default_matmul_precision', 'highest')
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from modelsteal.ntga import attack, kernels  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  n_val, n_b = _N_VAL.value, _BLOCK.value
  shape = tuple(int(v) for v in _SHAPE.value)
  if _DATASET.value:
    from modelsteal.data import sources  # pylint: disable=g-import-not-at-top
    try:
      ds = sources.load_dataset(_DATASET.value)
    except (sources.DataError, KeyError) as e:
      raise app.UsageError(f'--dataset: {e}') from None
    if len(ds.x_test) < n_val or len(ds.x_train) < n_b:
      raise app.UsageError(f'{_DATASET.value} has {len(ds.x_test)} test and '
                           f'{len(ds.x_train)} training images; --n_val='
                           f'{n_val} and --block={n_b} need more')
    xv, yv = ds.x_test[:n_val], ds.y_test[:n_val]
    xb, yb = ds.x_train[:n_b], ds.y_train[:n_b]
    if _PERTURB.value:
      sign = rng.choice(np.array([-1, 1], np.float32), xb.shape)
      xb = np.clip(xb + _PERTURB.value * sign, 0, 1)
    shape = xv.shape[1:]
  else:
    xv = rng.random((n_val,) + shape, dtype=np.float32)
    yv = rng.integers(0, 10, n_val)
    xb = rng.random((n_b,) + shape, dtype=np.float32)
    yb = rng.integers(0, 10, n_b)
  sur = _SURROGATE.value
  nt_kernel = None
  if set(_METHODS.value) & {'naive', 'nt+blocked'}:  # needs neural-tangents
    reason = kernels.neural_tangents_unavailable()
    if reason:
      raise app.UsageError(
          f'--methods naive and nt+blocked need neural-tangents ({reason}): '
          f'{kernels.NT_INSTALL}; or --methods=ours')
    nt_kernel = kernels.nt_fnn() if sur == 'fnn' else kernels.nt_cnn(10)
  bs = _VAL_BATCH.value or kernels.get_surrogate(sur, 10).val_batch_size
  rows = []

  def schedstat():
    """{thread id: (on-CPU ns, run-queue wait ns, name)} of this process."""
    out = {}
    for tid in os.listdir('/proc/self/task'):
      try:
        with open(f'/proc/self/task/{tid}/schedstat') as f:
          run, wait, _ = f.read().split()
        with open(f'/proc/self/task/{tid}/comm') as f:
          name = f.read().strip()
        out[tid] = (int(run), int(wait), name)
      except (OSError, ValueError):
        pass
    return out

  def thread_report(s0, s1, wall):
    d = sorted(((s1[t][0] - s0.get(t, (0, 0))[0]) / 1e9,
                (s1[t][1] - s0.get(t, (0, 0))[1]) / 1e9, s1[t][2]) for t in s1)
    busy = [x for x in d if x[0] + x[1] > 0.01 * wall]
    return (f'    wall {wall:.2f}s: {len(busy)} threads ran; on-CPU '
            f'{sum(x[0] for x in d):.2f}s, waiting {sum(x[1] for x in d):.2f}s;'
            ' per thread (name cpu/wait): ' +
            ' '.join(f'{n} {r:.2f}/{w:.2f}'
                     for r, w, n in sorted(busy, reverse=True)))

  def timed(name, fn):
    t0 = time.time()
    fn()
    first = time.time() - t0
    ts, cpu, sys_s, faults = [], [], [], []
    for _ in range(_REPEATS.value):
      r0 = resource.getrusage(resource.RUSAGE_SELF)
      s0 = schedstat() if _THREADS.value else None
      t0, c0 = time.time(), time.process_time()
      fn()
      ts.append(time.time() - t0)
      cpu.append(time.process_time() - c0)
      r1 = resource.getrusage(resource.RUSAGE_SELF)
      if s0 is not None:  # after the readings above: /proc reads cost too
        print(thread_report(s0, schedstat(), ts[-1]), flush=True)
      sys_s.append(r1.ru_stime - r0.ru_stime)
      faults.append(r1.ru_minflt - r0.ru_minflt)
    med, cpu_med = float(np.median(ts)), float(np.median(cpu))
    rows.append((sur, name, 'x'.join(map(str, shape)), n_b, n_val, first, med,
                 cpu_med, 'mnist' if _DATASET.value else 'random',
                 _PERTURB.value, bs))
    # CPU seconds (all threads) beside wall seconds: on a VM, time stolen by
    # the host shows in the wall time only.
    print(f'{sur:4} {name:11} {shape} block {n_b} x val {n_val}: first call '
          f'{first:7.2f}s, then {med:7.3f}s per gradient ({cpu_med:.3f} CPU '
          f's; all: {" ".join(f"{t:.2f}" for t in ts)}; system '
          f'{np.median(sys_s):.3f} s, {int(np.median(faults))} page faults)',
          flush=True)

  for method in _METHODS.value:
    if method == 'naive':
      xv_j, yv_j = jnp.asarray(xv), jax.nn.one_hot(yv, 10)
      yb_j = jax.nn.one_hot(yb, 10)

      def loss(x, xv_, yv_):
        kbb = nt_kernel(x, x)
        kvb = nt_kernel(xv_, x)
        n = kbb.shape[0]
        kbb = kbb + 1e-4 * jnp.trace(kbb) / n * jnp.eye(n)
        lam, v = jnp.linalg.eigh(kbb)
        f = -jnp.expm1(-lam * 64.0 / yb_j.size) / lam
        logits = kvb @ (v @ (f[:, None] * (v.T @ yb_j)))
        return -jnp.sum(jax.nn.log_softmax(logits) * yv_)

      g = jax.jit(jax.grad(loss))
      timed('naive', lambda: g(jnp.asarray(xb), xv_j, yv_j).block_until_ready())
    elif method in ('nt+blocked', 'ours'):
      fn = nt_kernel
      if method == 'ours':
        fn = kernels.get_surrogate(sur, 10).kernel_fn
        if sur == 'cnn':
          impl = _CNN_IMPL.value
          if impl == 'auto':
            impl = ('cpu' if kernels.cnn_cpu.available() and
                    jax.default_backend() == 'cpu' else 'xla')
          fn = functools.partial(kernels.cnn_ntk, tile=_TILE.value or 8,
                                 impl=impl)
          method = f'ours-{impl}'
      att = attack.NTGA(fn, xv, yv, 10,
                        attack.AttackConfig(val_batch_size=bs))
      timed(method, lambda: att.loss_and_grad(xb, yb))
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  new = not os.path.exists(_OUT.value)
  with open(_OUT.value, 'a') as f:
    if new:
      f.write('surrogate,method,shape,block,n_val,first_call_s,'
              'seconds_per_gradient,cpu_seconds_per_gradient,images,perturb,'
              'val_batch_size,devices,configure_cpu,blas_threads,'
              'keep_freed_memory,malloc_arenas\n')
    for r in rows:
      f.write(','.join(str(v) for v in r) + f',{len(jax.devices())}x'
              f'{jax.devices()[0].device_kind},{_CONFIGURE.value},'
              f'{_BLAS.value},{_KEEP_MEM.value},{_ARENAS.value}\n')
  print(f'appended to {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
