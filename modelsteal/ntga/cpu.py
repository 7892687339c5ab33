"""XLA:CPU thread settings for NTGA generation on shared machines,
`limit_blas_threads` (one BLAS thread for jaxlib's eigh: the cure for the
3-8x slow gradients beside another process) and `keep_freed_memory`
(glibc's malloc told to reuse what XLA frees).

By default XLA:CPU runs one host device whose large loops and dots are split
over an Eigen thread pool with a thread per core. `configure()` instead
gives XLA one host device per core the process may use, each running its
programs on one thread (`--xla_cpu_multi_thread_eigen=false`), and `NTGA`
spreads the validation batches and the block kernel's rows over those
devices: the work is split once per call rather than inside every operation.
(Measured later, BUILD_NOTES issue 11, session 5: JAX 0.5.3 ran the host
devices' programs one after the other, so this split gives no parallelism
on a CPU; the settings are kept for their shared-machine figures below.)
Measured (BUILD_NOTES.md, issue 11, `benchmarks/ntga_contention.sh`): the
slowdowns beside another process (up to 4-8x in single calls, with either
thread setting) came from the BLAS threads of jaxlib's eigh, not from XLA's
threads: with `limit_blas_threads(1)` an NTGA-FNN gradient slowed 1.1-1.6x
beside another XLA process (session 13). Adding
`intra_op_parallelism_threads=1` made it 19x, so it is not set.

It must run before JAX creates its CPU backend (first `jax.devices()` or
computation); `pipelines.ntga` (except with the numba CNN kernel, which
runs faster on XLA's default single device and threads itself) and
`benchmarks/ntga_timing.py` call it at start-up. Flags the user already set
in `XLA_FLAGS` win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys


def available_cores() -> int:
  """Cores this process may run on (affinity mask, e.g. under taskset)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def configure(devices: int | None = None) -> str | None:
  """Sets XLA_FLAGS for `devices` single-threaded CPU devices.

  Args:
    devices: host devices to create; default one per available core.

  Returns:
    The XLA_FLAGS now set, or None where JAX's backend already exists in
    this process (the flags could no longer apply; nothing is changed).
  """
  if 'jax' in sys.modules:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    if xla_bridge.backends_are_initialized():
      return None
  n = devices or available_cores()
  flags = os.environ.get('XLA_FLAGS', '').split()
  wanted = {'--xla_force_host_platform_device_count': str(n),
            '--xla_cpu_multi_thread_eigen': 'false'}
  have = {f.split('=')[0] for f in flags}
  flags += [f'{k}={v}' for k, v in wanted.items() if k not in have]
  os.environ['XLA_FLAGS'] = ' '.join(flags)
  return os.environ['XLA_FLAGS']


def limit_blas_threads(threads: int = 1) -> int:
  """Limits the BLAS libraries' thread pools (OpenBLAS, MKL, BLIS) to
  `threads`, in this process, now and for those loaded later.

  jaxlib's CPU eigh (the GP weights of every NTGA gradient) calls scipy's
  bundled OpenBLAS, which starts a thread per core; after each call those
  threads spin, waiting for more work. perf on an NTGA-FNN gradient loop
  (both cores): OpenBLAS's `blas_thread_server` took 14% of the samples,
  about 0.18 CPU s per 0.63 s gradient, competing with XLA's own threads
  for the two cores; with one BLAS thread the gradient took 0.50 s
  (BUILD_NOTES issue 11, session 13). The 512x512 eigh gains nothing from
  more threads.

  Libraries already loaded are limited through threadpoolctl (where it is
  installed; the `ntga` extra brings it), later ones through
  OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and BLIS_NUM_THREADS. Where the
  user set any of those variables, the user's choice wins: nothing is
  changed. Process-wide: for a process that does NTGA generation only
  (`python -m pipelines.ntga`). Returns the number of BLAS libraries
  limited now (0 where none is loaded yet, threadpoolctl is missing, or
  the user chose).
  """
  names = ('OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'BLIS_NUM_THREADS')
  if any(v in os.environ for v in names):
    return 0
  for var in names:
    os.environ[var] = str(threads)
  try:
    import threadpoolctl  # pylint: disable=g-import-not-at-top
  except ImportError:
    return 0
  threadpoolctl.threadpool_limits(limits=threads, user_api='blas')
  return sum(i['user_api'] == 'blas' for i in threadpoolctl.threadpool_info())


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def keep_freed_memory(arenas: int | None = 1) -> bool:
  """Makes glibc's malloc keep freed memory for reuse instead of handing it
  back to the kernel (no mmap for large blocks, no trimming of the heap).

  Each NTGA gradient's XLA program allocates its temporaries (about 110 MB
  for a CNN block against 1,000 validation images, 60 and 53 MB blocks)
  and frees them at its end; glibc serves blocks that large with a fresh
  mmap, so every gradient faulted 28,000 new pages in (0.06-0.1 s of system
  time per gradient, BUILD_NOTES issue 11, session 12). With the memory
  kept, later gradients reuse the same pages: 2 page faults, no system
  time (the wall time moved by less than the machine's drift). The process
  holds on to its peak heap until it exits, which is what a generation run
  wants. Safe to call at any time; a no-op (False) where the C library is
  not glibc.

  `arenas` caps glibc's malloc arenas (None: glibc's default, up to 8 per
  core). The numba CNN kernel starts its threads afresh in every call, and
  glibc gives new threads arenas of their own, whose heaps it maps and
  trims apart from the main one: on both cores a gradient still faulted
  35,000 pages with the settings above. With one arena, memory one thread
  frees is what the next one gets (0 faults; BUILD_NOTES issue 11, session
  13). Call it before other threads start: arenas already handed out stay.
  Process-wide, like the rest: meant for a process that does NTGA
  generation only (`python -m pipelines.ntga`); one arena would make many
  threads that allocate at once (TensorFlow training) wait on one lock.
  """
  name = ctypes.util.find_library('c')
  if not name:
    return False
  try:
    libc = ctypes.CDLL(name)
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  # trim threshold: the largest int (freed memory is never returned)
  ok = bool(mallopt(_M_MMAP_MAX, 0) and
            mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
  if arenas:
    ok = bool(mallopt(_M_ARENA_MAX, arenas)) and ok
  return ok
