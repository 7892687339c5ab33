"""The closed-form CNN NTK as fused loops on the CPU (numba).

`kernels.cnn_ntk` in XLA streams every per-position map of a tile through
memory several times per layer (one loop fusion per elementwise step); on a
CPU that, not the arithmetic, is its cost. Here one tile of IT x JC (32 x 64)
image pairs goes through the whole network in cache: per conv-1 position a
small matrix product of the 5x5 patches (`_gemm`: OpenBLAS spent as long
packing these small operands as multiplying them), the arc-cosine map, and
the box sum
straight into the conv-2 accumulators; then conv 2's arc-cosine map and the
mean. The backward pass keeps the tile's conv-1 maps, runs the reverse sweep
in the same loops, and computes a side's patch cotangents only when that
side is differentiated (the validation images never are). Row images whose
5x5 window is all zero at a position (56% of an MNIST image's) take their
maps from a per-column table and skip the patch product (`_zero_rows`). The
block kernel K(x, x) computes each pair once (`forward(sym=True)`). NTGA's
validation part has a fused pass of its own (`val_loss_grad`): per row tile
the forward maps of all column chunks, the tile's loss and its cotangent,
then the reverse sweep from the kept maps, so the kernel runs forward once
instead of twice. The column chunks (row tiles in the fused pass) of a
call are spread over `threads()` POSIX threads (one per available core by
default, `MODELSTEAL_NTGA_THREADS` to set).

The maths is `kernels.cnn_ntk`'s (same arcsin, same zero-derivative guard);
`kernels.cnn_ntk(impl='cpu')` calls into this module as an XLA custom call
through XLA's typed FFI (`jax.ffi`; `forward`, `backward`, `val_loss_grad`),
and tests/ntga_test.py and tests/ntga_kernel64_test.py check it against the
XLA version, autodiff and neural-tangents' values.
"""

from __future__ import annotations

import functools
import math

import numpy as np

try:  # numba is in the `ntga` extra; without it the XLA kernel runs.
  import numba
except ImportError:  # pragma: no cover - exercised where numba is missing
  numba = None

IT = 32   # rows (x1 images) per tile: one patch product per position and tile
JC = 64   # columns (x2 images) per chunk: the SIMD loops run over these;
          # chunks are spread over threads

# asin(x) = x + x^3 P(x^2) on |x| <= 0.75: P's coefficients, lowest first
# (least squares on Chebyshev nodes, 9e-8 absolute error in float32).
_ASIN_SMALL = (0.16666547, 0.07506901, 0.04330254, 0.04271592, -0.03874064,
               0.18656515, -0.23740319, 0.17624229)


def unavailable_reason() -> str | None:
  """Why the kernel cannot run in this process, or None where it can."""
  if numba is None:
    return "impl='cpu' needs numba: pip install numba"
  version = ffi_api_version()
  if version is None:
    import jax  # pylint: disable=g-import-not-at-top
    return (f"impl='cpu' needs jax.ffi and the XLA FFI headers of jaxlib "
            f"(jax.ffi.include_dir()); JAX {jax.__version__} has none: "
            "upgrade jax and jaxlib, or use impl='xla'")
  if version[0] != 0:
    # a new major version may move the call frame's fields (read by offset)
    return (f"impl='cpu' reads XLA FFI call frames of API version 0.x; this "
            f"jaxlib's is {version[0]}.{version[1]}: use impl='xla'")
  return None


def available() -> bool:
  return unavailable_reason() is None


def _identity_decorator(*args, **kwargs):
  del args, kwargs
  return lambda f: f


if numba is not None:
  from numba import types as _types  # pylint: disable=g-import-not-at-top
  from numba.extending import overload as _overload  # pylint: disable=g-import-not-at-top
  _OPTS = dict(fastmath=True, error_model='numpy', boundscheck=False,
               cache=True)
  # numba links every compiled callee into its caller and optimises the
  # whole again, so each level of `_jit` calls repeats the optimisation of
  # everything below it. The glue between a job routine and the two loops
  # that need a function of their own (`_layer1`, `_backward_chunk`) is
  # therefore `_inline` (numba IR inlining): cold compile 94 s -> 67 s,
  # same speed (BUILD_NOTES.md, "Whole suite").
  _inline = numba.njit(inline='always', **_OPTS)
  _jit = numba.njit(nogil=True, **_OPTS)
  # Small per-element helpers called from many places: compiled once and
  # inlined by LLVM, where numba-IR inlining retyped them at every call
  # site (cold compile -11 s per dtype, same speed; BUILD_NOTES, session 10).
  _small = numba.njit(**_OPTS)
else:  # the module imports; `available()` says no
  _overload = _identity_decorator
  _inline = _jit = _small = lambda f: f


def _const(like, value):
  """value in the float type of `like` (a scalar or array), in numba code."""
  raise NotImplementedError('numba only')


def _asin_2pi(x):
  """arcsin(x) / 2 pi for |x| <= 0.75 in numba code (exact in float64)."""
  raise NotImplementedError('numba only')


@_overload(_const, inline='always')
def _const_numba(like, value):
  ty = like.dtype if isinstance(like, _types.Array) else like
  if ty == _types.float32:
    return lambda like, value: np.float32(value)
  return lambda like, value: np.float64(value)


def _guard_tol(like):
  """kernels._guard_tol in numba code: 1e-12 in float64, 1e-6 in float32."""
  raise NotImplementedError('numba only')


@_overload(_guard_tol, inline='always')
def _guard_tol_numba(like):
  if like == _types.float64:
    return lambda like: np.float64(1e-12)
  return lambda like: np.float32(1e-6)


@_overload(_asin_2pi, inline='always')
def _asin_2pi_numba(x):
  if x == _types.float64:
    return lambda x: math.asin(x) * (1 / (2 * math.pi))
  u = np.float32(1 / (2 * math.pi))
  s0, s1, s2, s3, s4, s5, s6, s7 = (np.float32(c / (2 * math.pi))
                                    for c in _ASIN_SMALL)

  def asin32_2pi(x):
    # Only called with |x| <= 1/sqrt(2) (the smaller of |cos| and sin), so
    # an odd polynomial needs no sqrt: asin(x) = x + x^3 P(x^2), P fitted
    # on [0, 0.75] (9e-8 absolute in float32); 1 / 2 pi folded into it.
    z = x * x
    p = (((((((s7 * z + s6) * z + s5) * z + s4) * z + s3) * z + s2) * z
          + s1) * z + s0) * z + u
    return x * p
  return asin32_2pi


@_small
def _relu(k, prod, inv):
  """kernels._relu: theta through the arcsin of the smaller of |cos| and
  sin, dot = 1/2 - theta / 2 pi:

    |cos| <= sin: theta = pi/2 - asin(cos), dot = 1/4 + asin(cos) / 2 pi
    cos > 0:      theta = asin(sin),        dot = 1/2 - asin(sin) / 2 pi
    else:         theta = pi - asin(sin),   dot = asin(sin) / 2 pi

  The argument taken is at most 1/sqrt(2) (cos^2 + sin^2 = 1; sin = 0
  where rounding makes prod < k^2), so cos and sin need no clamping."""
  zero = _const(k, 0.0)
  sr = math.sqrt(max(prod - k * k, zero))
  cos = k * inv
  sin = sr * inv
  use_cos = abs(cos) <= sin
  a = _asin_2pi(cos if use_cos else sin)
  pos = cos > zero
  dot = (_const(k, 0.25) + a if use_cos else
         (_const(k, 0.5) - a if pos else a))
  return sr * _const(k, 1 / (2 * math.pi)) + dot * k, dot, sr


@_small
def _relu_bwd(k, ntk, prod, inv, dot, sr, gk_out, gt_out):
  """kernels._relu_bwd, with neural-tangents' guard at correlation +-1."""
  zero, one = _const(k, 0.0), _const(k, 1.0)
  tol = _guard_tol(k)
  ok = prod - k * k > tol * prod
  inv_sr = one / (sr if ok else one)
  inv_sr = inv_sr if ok else zero
  gd = gt_out * ntk * inv_sr
  g_k = gk_out * dot + gd * _const(k, 1 / (2 * math.pi))
  g_prod = (gk_out * sr - gd * k) * (inv * inv * _const(k, 1 / (4 * math.pi)))
  return g_k, gt_out * dot, g_prod


@_inline
def _zero_tables(A, s1, jc):
  """A chunk's zero-window tables for `_zero_rows`, empty (zr < 0), and its
  buffer of gathered patches."""
  zq = np.empty(s1, A.dtype)
  zr = np.empty(s1, A.dtype)
  zr[:] = -1  # no table yet (1/sqrt q > 0); not NaN: fastmath assumes none
  ztab = np.empty((6, s1, jc), A.dtype)
  zrow = np.zeros((s1, IT), np.int64)
  zrest = np.zeros(s1, np.int64)
  acs = np.empty((s1, IT, A.shape[3]), A.dtype)
  return zq, zr, ztab, zrow, zrest, acs


@_inline
def _tile_zero_windows(A, i0, zw):
  """zw[p, ii]: whether row ii of tile i0 has an all-zero window at conv-1
  position p. Once per tile and call: the validation pass's chunks share
  it (the test ran per chunk and position before, 4% of that pass)."""
  f = A.shape[3]
  zero_ = _const(A, 0.0)
  for p in range(A.shape[0]):
    for ii in range(IT):
      zero = A[p, i0, ii, 0] == zero_
      if zero:
        big = zero_
        for q in range(1, f):
          big = max(big, abs(A[p, i0, ii, q]))
        zero = big == zero_
      zw[p, ii] = zero


@_inline
def _zero_rows(A, qa1, ra1, qb1, rb1, c, i0, p, bvar, zq, zr, ztab, zrow,
               zw):
  """Sorts the rows of tile i0 at conv-1 position p: zrow[p, ii] = -1 where
  the row's window is all zero, else the row's place among the others
  (which the patch product then runs on alone, see `_layer1`). Returns how
  many rows are not zero; builds the chunk's table at p on first use.

  A zero window makes the pair's conv-1 covariance exactly b_var and the
  row's variance the same for every such row, so the arc-cosine map and
  what the backward pass needs of it depend on the column alone: ztab[:,
  p] holds [ReLU value, k * dot, dot, sr, 1/sr (0 where neural-tangents'
  guard holds), inv^2 / 4 pi] per column, from the same `_relu`. A zero row
  whose (q, 1/sqrt q) differ from the table's takes the ordinary path.
  MNIST: 56% of the conv-1 windows of an image are all zero.
  """
  jc = ztab.shape[2]
  rest = 0
  for ii in range(IT):
    use = False
    if zw[p, ii]:
      qa = qa1[i0 * IT + ii, p]
      ra = ra1[i0 * IT + ii, p]
      if zr[p] < 0:  # no table at p in this chunk yet
        zq[p] = qa
        zr[p] = ra
        tol = _guard_tol(bvar)
        for jj in range(jc):
          prod = qa * qb1[c, p, jj]
          inv = ra * rb1[c, p, jj]
          kr, dot, sr = _relu(bvar, prod, inv)
          ok = prod - bvar * bvar > tol * prod
          ztab[0, p, jj] = kr
          ztab[1, p, jj] = bvar * dot
          ztab[2, p, jj] = dot
          ztab[3, p, jj] = sr
          ztab[4, p, jj] = _const(bvar, 1.0) / sr if ok else _const(bvar, 0.0)
          ztab[5, p, jj] = inv * inv * _const(bvar, 1 / (4 * math.pi))
      use = qa == zq[p] and ra == zr[p]
    if use:
      zrow[p, ii] = -1
    else:
      zrow[p, ii] = rest
      rest += 1
  return rest


@_small
def _relu_bwd_zero(ztab, p, jj, bvar, gk_out, gt_out):
  """`_relu_bwd` for a zero-window row (k = ntk = b_var), from the table."""
  gd = gt_out * bvar * ztab[4, p, jj]
  dot = ztab[2, p, jj]
  g_k = gk_out * dot + gd * _const(bvar, 1 / (2 * math.pi))
  g_prod = (gk_out * ztab[3, p, jj] - gd * bvar) * ztab[5, p, jj]
  return g_k, gt_out * dot, g_prod


@_small
def _keep(a):
  """A use of `a` after `_run_jobs`: the job threads reach the buffer by
  address only, so its lifetime is made explicit (numba kept such arrays
  to the end of the function in a test, but does not promise it)."""
  return a.size


@_small
def _add_into(dst, src):
  """dst += src for 2-D arrays, as loops numba vectorises (its slice
  arithmetic does not as well)."""
  for i in range(dst.shape[0]):
    for j in range(dst.shape[1]):
      dst[i, j] += src[i, j]


@_small
def _gemm(a, b, out, add):
  """out (M, N) = a (M, K) @ b (K, N), or += where add: two rows of out
  and four of b per pass, so each b vector loaded feeds eight FMAs and the
  a values stay in registers. For the kernel's small products (K = 25
  patch values or a tile's rows, N = JC) this is about as fast as
  OpenBLAS's kernel and skips its packing copies, which cost as much as
  the product itself here (perf: sgemm_itcopy 8.9% against sgemm_kernel
  8.4% of a validation pass)."""
  m, k = a.shape
  n = b.shape[1]
  if not add:
    for i in range(m):
      for j in range(n):
        out[i, j] = 0
  i = 0
  while i + 2 <= m:
    q = 0
    while q + 4 <= k:
      a0, a1, a2, a3 = a[i, q], a[i, q + 1], a[i, q + 2], a[i, q + 3]
      c0, c1 = a[i + 1, q], a[i + 1, q + 1]
      c2, c3 = a[i + 1, q + 2], a[i + 1, q + 3]
      for j in range(n):
        b0, b1, b2, b3 = b[q, j], b[q + 1, j], b[q + 2, j], b[q + 3, j]
        out[i, j] += (a0 * b0 + a1 * b1) + (a2 * b2 + a3 * b3)
        out[i + 1, j] += (c0 * b0 + c1 * b1) + (c2 * b2 + c3 * b3)
      q += 4
    while q < k:
      a0, c0 = a[i, q], a[i + 1, q]
      for j in range(n):
        out[i, j] += a0 * b[q, j]
        out[i + 1, j] += c0 * b[q, j]
      q += 1
    i += 2
  if i < m:
    for q in range(k):
      a0 = a[i, q]
      for j in range(n):
        out[i, j] += a0 * b[q, j]


@_small
def _sum_taps(dst, src, rows, n):
  """dst[e] = sum over the n rows r of rows[:n] of src[r, e]: each element
  stored once, its taps summed in registers (a loop that adds one tap at a
  time into dst reads and writes dst per tap). dst (E,), src (R, E)."""
  if n == 1:
    a = rows[0]
    for e in range(dst.shape[0]):
      dst[e] = src[a, e]
  elif n == 2:
    a, b = rows[0], rows[1]
    for e in range(dst.shape[0]):
      dst[e] = src[a, e] + src[b, e]
  elif n == 3:
    a, b, c = rows[0], rows[1], rows[2]
    for e in range(dst.shape[0]):
      dst[e] = src[a, e] + src[b, e] + src[c, e]
  elif n == 4:
    a, b, c, d = rows[0], rows[1], rows[2], rows[3]
    for e in range(dst.shape[0]):
      dst[e] = (src[a, e] + src[b, e]) + (src[c, e] + src[d, e])
  elif n == 5:
    a, b, c, d, f = rows[0], rows[1], rows[2], rows[3], rows[4]
    for e in range(dst.shape[0]):
      dst[e] = (src[a, e] + src[b, e]) + (src[c, e] + src[d, e]) + src[f, e]
  else:
    for e in range(dst.shape[0]):
      dst[e] = src[rows[0], e]
    for m in range(1, n):
      r = rows[m]
      for e in range(dst.shape[0]):
        dst[e] += src[r, e]


@_jit
def _layer1(A, qa1, ra1, B, qb1, rb1, box, hw, c, i0, bvar, kk, k1,
           acc_k, acc_t, r1, t1, hk, ht, zq, zr, ztab, zrow, zrest, acs, zw,
           fresh):
  """Conv 1 + ReLU for one tile; box sums into acc (conv 2, undivided).

  Row by row: the ReLU maps of one input row (r1, t1), their 5-tap window
  sums along the row (hk, ht), added into the conv-2 rows whose window
  holds the input row: the separable box sum, 40% fewer adds than 25 taps.
  Rows whose window is all zero copy their maps from the chunk's table and
  skip the patch product (`_zero_rows`; zrow, zrest say which rows, per
  position, for the backward pass; k1 holds the other rows, in their
  order).
  """
  h1, w1, w2 = hw[0], hw[1], hw[2]
  jc = B.shape[3]
  r12, t12 = r1.reshape((r1.shape[0], -1)), t1.reshape((t1.shape[0], -1))
  hk2, ht2 = hk.reshape((hk.shape[0], -1)), ht.reshape((ht.shape[0], -1))
  taps = np.empty(5, np.int64)
  for y in range(h1):
    for x in range(w1):
      p = y * w1 + x
      rest = _zero_rows(A, qa1, ra1, qb1, rb1, c, i0, p, bvar, zq, zr, ztab,
                        zrow, zw)
      zrest[p] = rest
      if rest == IT:
        _gemm(A[p, i0], B[c, p], kk, False)
      elif rest:  # the patch product of the rows that are not zero
        if fresh:  # else acs holds them from this tile's first chunk
          for ii in range(IT):
            m = zrow[p, ii]
            if m >= 0:
              acs[p, m] = A[p, i0, ii]
        _gemm(acs[p, :rest], B[c, p], kk[:rest], False)
      for ii in range(IT):
        m = zrow[p, ii]
        if m < 0:
          for jj in range(jc):
            r1[x, ii, jj] = ztab[0, p, jj]
            t1[x, ii, jj] = ztab[1, p, jj]
          continue
        qa = qa1[i0 * IT + ii, p]
        ra = ra1[i0 * IT + ii, p]
        for jj in range(jc):
          k = kk[m, jj] + bvar
          k1[p, m, jj] = k
          kr, dot, _ = _relu(k, qa * qb1[c, p, jj], ra * rb1[c, p, jj])
          r1[x, ii, jj] = kr
          t1[x, ii, jj] = k * dot
    for cx in range(w2):
      x0 = box[2, cx, 0]
      n = box[2, cx, 1] - x0
      for m in range(n):
        taps[m] = x0 + m
      _sum_taps(hk2[cx], r12, taps, n)
      _sum_taps(ht2[cx], t12, taps, n)
    for m in range(box[0, y, 0]):
      o = box[0, y, 1 + m]
      o0 = o * w2
      # the first input row of conv-2 row o stores, the others add (no
      # zeroing pass over the accumulators)
      if y == 0 or o > box[0, y - 1, box[0, y - 1, 0]]:
        for cx in range(w2):
          for ii in range(IT):
            for jj in range(jc):
              acc_k[o0 + cx, ii, jj] = hk[cx, ii, jj]
              acc_t[o0 + cx, ii, jj] = ht[cx, ii, jj]
      else:
        for cx in range(w2):
          for ii in range(IT):
            for jj in range(jc):
              acc_k[o0 + cx, ii, jj] += hk[cx, ii, jj]
              acc_t[o0 + cx, ii, jj] += ht[cx, ii, jj]

@_inline
def _readout(qa2, ra2, qb2, rb2, c, i0, bvar, cbox, wt, wk, c_0, acc_k,
             acc_t, sk, st, out, r0):
  """Conv 2's ReLU, the mean over positions and the Dense layers for tile
  (i0, c) from its box sums (`_layer1`): NTK row i0 * IT + ii, column
  c * JC + jj into out[r0 + ii, c * JC + jj]."""
  jc = acc_k.shape[2]
  sk[:] = 0
  st[:] = 0
  for o in range(qa2.shape[1]):
    for ii in range(IT):
      qa = qa2[i0 * IT + ii, o]
      ra = ra2[i0 * IT + ii, o]
      for jj in range(jc):
        k2 = cbox * acc_k[o, ii, jj] + bvar
        t2 = cbox * acc_t[o, ii, jj] + k2
        kr, dot, _ = _relu(k2, qa * qb2[c, o, jj], ra * rb2[c, o, jj])
        sk[ii, jj] += kr
        st[ii, jj] += t2 * dot
  for ii in range(IT):
    for jj in range(jc):
      out[r0 + ii, c * jc + jj] = wt * st[ii, jj] + wk * sk[ii, jj] + c_0


@_inline
def _row_tiles(nt, c, jc, sym):
  """Row tiles computed for column chunk c: all, or (sym) those above the
  chunk's end, so every pair of the block kernel is computed once or, in
  the chunk's diagonal square, twice."""
  if not sym:
    return nt
  return min(nt, ((c + 1) * jc + IT - 1) // IT)


@_inline
def _owns(c, nc, t, parts, sym):
  """Whether thread t of `parts` takes column chunk c: contiguous shares,
  or (sym: chunk c costs c + 1) a snake order, 0 1 1 0 0 1 1 0 for two
  threads, so the threads' shares cost about the same."""
  if not sym:
    return t * nc // parts <= c < (t + 1) * nc // parts
  r, pos = c // parts, c % parts
  return (pos if r % 2 == 0 else parts - 1 - pos) == t


@_inline
def _forward(A, qa1, ra1, qa2, ra2, B, qb1, rb1, qb2, rb2, box, hw,
            bvar, cbox, a_t, a_k, c_0, out, t, parts, sym):
  """out (N1, NC * JC) = NTK, the column chunks of thread t of `parts`
  (`_owns`); A (S1, N1 / IT, IT, F), B (NC, S1, F, JC). sym: A is B (the
  block kernel), only the rows above each chunk's end are computed
  (`forward(sym=True)` fills in the rest)."""
  s1, nt, _, _ = A.shape
  nc, jc = B.shape[0], B.shape[3]
  s2 = qa2.shape[1]
  wt, wk = a_t / _const(a_t, s2), a_k / _const(a_k, s2)  # not float64
  for c in range(nc):
    if not _owns(c, nc, t, parts, sym):
      continue
    kk = np.empty((IT, jc), A.dtype)
    k1 = np.empty((s1, IT, jc), A.dtype)
    acc_k = np.empty((s2, IT, jc), A.dtype)
    acc_t = np.empty((s2, IT, jc), A.dtype)
    r1 = np.empty((hw[1], IT, jc), A.dtype)
    t1 = np.empty((hw[1], IT, jc), A.dtype)
    hk = np.empty((hw[2], IT, jc), A.dtype)
    ht = np.empty((hw[2], IT, jc), A.dtype)
    sk = np.empty((IT, jc), A.dtype)
    st = np.empty((IT, jc), A.dtype)
    zq, zr, ztab, zrow, zrest, acs = _zero_tables(A, s1, jc)
    zw = np.empty((s1, IT), np.bool_)
    for i0 in range(_row_tiles(nt, c, jc, sym)):
      _tile_zero_windows(A, i0, zw)
      _layer1(A, qa1, ra1, B, qb1, rb1, box, hw, c, i0, bvar, kk, k1,
             acc_k, acc_t, r1, t1, hk, ht, zq, zr, ztab, zrow, zrest, acs, zw,
             True)
      _readout(qa2, ra2, qb2, rb2, c, i0, bvar, cbox, wt, wk, c_0, acc_k,
               acc_t, sk, st, out, i0 * IT)
  return out

@_jit
def _backward_chunk(A, qa1, ra1, qa2, ra2, B, qb1, rb1, qb2, rb2, box,
                   hw, bvar, cbox, wt, wk, g, need_a, need_b, c, sym,
                   gA, gqa1, gqa2, gB, gqb1, gqb2, AT, BT):
  """Backward pass of column chunk c; adds into the g* arrays given."""
  s1, nt, _, _ = A.shape
  jc = B.shape[3]
  s2 = qa2.shape[1]
  dt_ = A.dtype
  kk = np.empty((IT, jc), dt_)
  k1 = np.empty((s1, IT, jc), dt_)
  acc_k = np.empty((s2, IT, jc), dt_)
  acc_t = np.empty((s2, IT, jc), dt_)
  r1 = np.empty((hw[1], IT, jc), dt_)
  t1 = np.empty((hw[1], IT, jc), dt_)
  hk = np.empty((hw[2], IT, jc), dt_)
  ht = np.empty((hw[2], IT, jc), dt_)
  zq, zr, ztab, zrow, zrest, acs = _zero_tables(A, s1, jc)
  zw = np.empty((s1, IT), np.bool_)
  scr = _reverse_scratch(A, s2, hw, jc)
  for i0 in range(_row_tiles(nt, c, jc, sym)):
    _tile_zero_windows(A, i0, zw)
    _layer1(A, qa1, ra1, B, qb1, rb1, box, hw, c, i0, bvar, kk, k1,
           acc_k, acc_t, r1, t1, hk, ht, zq, zr, ztab, zrow, zrest, acs, zw,
           True)
    _backward_tile(A, qa1, ra1, qa2, ra2, B, qb1, rb1, qb2, rb2, box, hw,
                   bvar, cbox, wt, wk, g, 0, need_a, need_b, c, i0,
                   gA, gqa1, gqa2, gB, gqb1, gqb2, AT, BT,
                   k1, acc_k, acc_t, zq, ztab, zrow, zrest, acs, scr)


@_inline
def _reverse_scratch(A, s2, hw, jc):
  """Work arrays of `_backward_tile`."""
  dt_ = A.dtype
  f = A.shape[3]
  return (np.empty((s2, IT, jc), dt_), np.empty((s2, IT, jc), dt_),
          np.empty((hw[2], IT, jc), dt_), np.empty((hw[2], IT, jc), dt_),
          np.empty((IT, jc), dt_), np.empty((IT, jc), dt_),
          np.empty((IT, jc), dt_), np.empty((IT, f), dt_),
          np.empty((IT, jc), dt_),
          np.empty(jc, dt_), np.empty(jc, dt_))


@_jit
def _backward_tile(A, qa1, ra1, qa2, ra2, B, qb1, rb1, qb2, rb2, box, hw,
                   bvar, cbox, wt, wk, g, g0, need_a, need_b, c, i0,
                   gA, gqa1, gqa2, gB, gqb1, gqb2, AT, BT,
                   k1, acc_k, acc_t, zq, ztab, zrow, zrest, acs, scr):
  """The reverse sweep of tile (i0, c) from its forward maps (`_layer1`:
  k1, acc_k, acc_t and the zero-window tables): the NTK's cotangent of
  row i is g[i - g0]; adds into the g* arrays given."""
  ga, gt, vk, vt, gk, gsk, gst, tmp_a, gkc, zsk, zst = scr
  jc = B.shape[3]
  s2 = qa2.shape[1]
  # conv 2's ReLU and the read-out, reversed.
  for o in range(s2):
    for ii in range(IT):
      i = i0 * IT + ii
      qa = qa2[i, o]
      ra = ra2[i, o]
      gq = _const(bvar, 0.0)
      for jj in range(jc):
        k2 = cbox * acc_k[o, ii, jj] + bvar
        t2 = cbox * acc_t[o, ii, jj] + k2
        prod = qa * qb2[c, o, jj]
        inv = ra * rb2[c, o, jj]
        _, dot, sr = _relu(k2, prod, inv)
        gi = g[i - g0, c * jc + jj]
        g_k2, g_t2, g_prod = _relu_bwd(k2, t2, prod, inv, dot, sr,
                                      gi * wk, gi * wt)
        # t2 = cbox box(t1r) + k2, k2 = cbox box(k1r) + b
        ga[o, ii, jj] = cbox * (g_k2 + g_t2)
        gt[o, ii, jj] = cbox * g_t2
        gq += g_prod * qb2[c, o, jj]
        gqb2[c, o, jj] += g_prod * qa
      gqa2[i, o] += gq
  # the box sum transposed (conv-2 rows, then columns), conv 1's ReLU
  # reversed, the patch products.
  h1, w1, w2 = hw[0], hw[1], hw[2]
  ga2, gt2 = ga.reshape((ga.shape[0], -1)), gt.reshape((gt.shape[0], -1))
  vk2, vt2 = vk.reshape((vk.shape[0], -1)), vt.reshape((vt.shape[0], -1))
  gsk1, gst1 = gsk.reshape(-1), gst.reshape(-1)
  taps = np.empty(5, np.int64)
  for y in range(h1):
    n = box[0, y, 0]
    for cx in range(w2):
      for m in range(n):
        taps[m] = box[0, y, 1 + m] * w2 + cx
      _sum_taps(vk2[cx], ga2, taps, n)
      _sum_taps(vt2[cx], gt2, taps, n)
    for x in range(w1):
      p = y * w1 + x
      n = box[1, x, 0]
      for m in range(n):
        taps[m] = box[1, x, 1 + m]
      _sum_taps(gsk1, vk2, taps, n)
      _sum_taps(gst1, vt2, taps, n)
      if need_a:
        _conv1_reverse_both(qa1, ra1, qb1, rb1, c, i0, p, bvar, k1, zrow,
                            ztab, gsk, gst, gk, gqa1, gqb1)
        np.dot(gk, BT[c, p], tmp_a)  # N = F: OpenBLAS is faster here
        _add_into(gA[p, i0], tmp_a)
        rest = zrest[p]
        if need_b and rest == IT:
          _gemm(AT[p, i0], gk, gB[c, p], True)
        elif need_b and rest:  # zero rows add nothing to B's cotangent
          for ii in range(IT):
            m = zrow[p, ii]
            if m >= 0:
              gkc[m] = gk[ii]
          _gemm(acs[p, :rest].T, gkc[:rest], gB[c, p], True)
      else:  # the row side's cotangents are not needed
        rest = _conv1_reverse_cols(qa1, ra1, qb1, rb1, c, i0, p, bvar, k1,
                                   zrow, zq, ztab, gsk, gst, gkc, zsk, zst,
                                   gqb1)
        if need_b and rest == IT:  # gkc's rows are then the tile's
          _gemm(AT[p, i0], gkc, gB[c, p], True)
        elif need_b and rest:
          _gemm(acs[p, :rest].T, gkc[:rest], gB[c, p], True)


@_jit
def _val_range(A, qa1, ra1, qa2, ra2, B, qb1, rb1, qb2, rb2, box, hw,
               bvar, cbox, a_t, a_k, c_0, alpha, yv, wv, t, parts,
               stats, galpha, gB, gqb1, gqb2, AT):
  """NTGA's validation part, fused: for the row tiles of thread t of
  `parts` (contiguous shares), the NTK rows K(x_v, x_b) (all column
  chunks, their maps kept), the loss sum_i w_i CE(K_i alpha, y_i), its
  cotangent G = w (softmax - y) alpha^T, and at once the reverse sweep of
  every tile from the kept maps: no second forward pass. Adds loss and
  correct count into stats, K^T dlogits into galpha, the column side's
  cotangents into gB, gqb1, gqb2."""
  s1, nt, _, _ = A.shape
  nc, jc = B.shape[0], B.shape[3]
  s2 = qa2.shape[1]
  ncls = alpha.shape[1]
  dt_ = A.dtype
  wt, wk = a_t / _const(a_t, s2), a_k / _const(a_k, s2)  # not float64
  kk = np.empty((IT, jc), dt_)
  k1s = np.empty((nc, s1, IT, jc), dt_)
  accks = np.empty((nc, s2, IT, jc), dt_)
  accts = np.empty((nc, s2, IT, jc), dt_)
  r1 = np.empty((hw[1], IT, jc), dt_)
  t1 = np.empty((hw[1], IT, jc), dt_)
  hk = np.empty((hw[2], IT, jc), dt_)
  ht = np.empty((hw[2], IT, jc), dt_)
  zqs = np.empty((nc, s1), dt_)
  zrs = np.empty((nc, s1), dt_)
  zrs[:] = -1  # no tables yet (see `_zero_tables`)
  ztabs = np.empty((nc, 6, s1, jc), dt_)
  zrows = np.zeros((nc, s1, IT), np.int64)
  zrests = np.zeros((nc, s1), np.int64)
  acs = np.empty((s1, IT, A.shape[3]), dt_)
  scr = _reverse_scratch(A, s2, hw, jc)
  krow = np.empty((IT, nc * jc), dt_)
  grow = np.empty((IT, nc * jc), dt_)
  logits = np.empty((IT, ncls), dt_)
  dlog = np.empty((IT, ncls), dt_)
  ga_t = np.empty((nc * jc, ncls), dt_)
  alpha_t = np.ascontiguousarray(alpha.T)
  sk = np.empty((IT, jc), dt_)
  st = np.empty((IT, jc), dt_)
  # the row side is not differentiated: placeholders of the right types
  gA = np.empty((1, 1, 1, 1), dt_)
  gqa1 = np.empty((1, 1), dt_)
  gqa2 = np.empty((nt * IT, s2), dt_)
  loss = _const(bvar, 0.0)
  correct = _const(bvar, 0.0)
  zw = np.empty((s1, IT), np.bool_)
  for i0 in range(t * nt // parts, (t + 1) * nt // parts):
    _tile_zero_windows(A, i0, zw)
    for c in range(nc):
      _layer1(A, qa1, ra1, B, qb1, rb1, box, hw, c, i0, bvar, kk, k1s[c],
             accks[c], accts[c], r1, t1, hk, ht, zqs[c], zrs[c], ztabs[c],
             zrows[c], zrests[c], acs, zw, c == 0)
      _readout(qa2, ra2, qb2, rb2, c, i0, bvar, cbox, wt, wk, c_0, accks[c],
               accts[c], sk, st, krow, 0)
    # the loss of the tile's rows and its cotangent (attack.cross_entropy)
    np.dot(krow, alpha, logits)
    for ii in range(IT):
      i = i0 * IT + ii
      w = wv[i]
      top = logits[ii, 0]
      arg = 0
      for k in range(1, ncls):
        if logits[ii, k] > top:
          top = logits[ii, k]
          arg = k
      ysum = _const(bvar, 0.0)
      yarg = 0
      for k in range(ncls):
        ysum += yv[i, k]
        if yv[i, k] > yv[i, yarg]:
          yarg = k
      z = _const(bvar, 0.0)
      for k in range(ncls):
        z += math.exp(logits[ii, k] - top)
      lz = math.log(z) + top
      for k in range(ncls):
        loss -= w * yv[i, k] * (logits[ii, k] - lz)
        dlog[ii, k] = w * (math.exp(logits[ii, k] - lz) * ysum - yv[i, k])
      if arg == yarg:
        correct += w
    np.dot(krow.T, dlog, ga_t)
    _add_into(galpha, ga_t)
    np.dot(dlog, alpha_t, grow)
    for c in range(nc):
      _backward_tile(A, qa1, ra1, qa2, ra2, B, qb1, rb1, qb2, rb2, box, hw,
                     bvar, cbox, wt, wk, grow, i0 * IT, False, True, c, i0,
                     gA, gqa1, gqa2, gB, gqb1, gqb2, AT, AT,
                     k1s[c], accks[c], accts[c], zqs[c], ztabs[c], zrows[c],
                     zrests[c], acs, scr)
  stats[0] += loss
  stats[1] += correct


@_small
def _conv1_pair_bwd(k, qa, ra, qb, rb, gk_out, gt_out):
  """Conv 1's ReLU reversed for one pair at one position: the covariance's
  cotangent (ntk = nngp there) and the variance product's."""
  prod = qa * qb
  inv = ra * rb
  _, dot, sr = _relu(k, prod, inv)
  g_k, g_t, g_prod = _relu_bwd(k, k, prod, inv, dot, sr, gk_out, gt_out)
  return g_k + g_t, g_prod


@_inline
def _conv1_reverse_both(qa1, ra1, qb1, rb1, c, i0, p, bvar, k1, zrow, ztab,
                        gsk, gst, gk, gqa1, gqb1):
  """Conv 1's ReLU reversed at position p for every row of tile i0: the
  covariance cotangents gk (IT, JC) and both sides' variance cotangents."""
  jc = gk.shape[1]
  for ii in range(IT):
    i = i0 * IT + ii
    qa = qa1[i, p]
    gq = _const(bvar, 0.0)
    m = zrow[p, ii]
    if m < 0:  # an all-zero window: the table's terms
      for jj in range(jc):
        g_k, g_t, g_prod = _relu_bwd_zero(ztab, p, jj, bvar,
                                          gsk[ii, jj], gst[ii, jj])
        gk[ii, jj] = g_k + g_t
        gq += g_prod * qb1[c, p, jj]
        gqb1[c, p, jj] += g_prod * qa
      gqa1[i, p] += gq
      continue
    ra = ra1[i, p]
    for jj in range(jc):
      gk[ii, jj], g_prod = _conv1_pair_bwd(k1[p, m, jj], qa, ra, qb1[c, p, jj],
                                           rb1[c, p, jj], gsk[ii, jj],
                                           gst[ii, jj])
      gq += g_prod * qb1[c, p, jj]
      gqb1[c, p, jj] += g_prod * qa
    gqa1[i, p] += gq


@_inline
def _conv1_reverse_cols(qa1, ra1, qb1, rb1, c, i0, p, bvar, k1, zrow, zq,
                        ztab, gsk, gst, gkc, zsk, zst, gqb1):
  """`_conv1_reverse_both` where only the column side is differentiated:
  gkc gets the covariance cotangents of the rows that are not zero, in
  their order (what the patch product needs); the zero rows' terms are
  linear in their incoming cotangents and share the table, so they are
  summed first and taken through the table once. Returns the number of
  rows that are not zero."""
  jc = gkc.shape[1]
  rest = 0
  zeros = 0
  for ii in range(IT):
    m = zrow[p, ii]
    if m < 0:
      if zeros == 0:
        zsk[:] = gsk[ii]
        zst[:] = gst[ii]
      else:
        for jj in range(jc):
          zsk[jj] += gsk[ii, jj]
          zst[jj] += gst[ii, jj]
      zeros += 1
      continue
    rest += 1
    i = i0 * IT + ii
    qa = qa1[i, p]
    ra = ra1[i, p]
    for jj in range(jc):
      gkc[m, jj], g_prod = _conv1_pair_bwd(k1[p, m, jj], qa, ra,
                                           qb1[c, p, jj], rb1[c, p, jj],
                                           gsk[ii, jj], gst[ii, jj])
      gqb1[c, p, jj] += g_prod * qa
  if zeros:
    qz = zq[p]
    for jj in range(jc):
      _, _, g_prod = _relu_bwd_zero(ztab, p, jj, bvar, zsk[jj], zst[jj])
      gqb1[c, p, jj] += g_prod * qz
  return rest


@_inline
def _backward_range(A, qa1, ra1, qa2, ra2, B, qb1, rb1, qb2, rb2, box, hw,
                    bvar, cbox, a_t, a_k, g, need_a, need_b, t, parts, sym,
                    gA, gqa1, gqa2, gB, gqb1, gqb2, AT, BT):
  """Cotangents of (A, qa1, qa2) and (B, qb1, qb2) for the NTK's cotangent
  g, the column chunks of thread t (`_owns`; sym: see `_forward`): added
  into the g* arrays given (gA, gqa1,
  gqa2 sum over chunks; gB, gqb1, gqb2 are per chunk). AT, BT: A and B
  with their last two axes swapped, contiguous (for BLAS), where needed."""
  s2 = qa2.shape[1]
  wt, wk = a_t / _const(a_t, s2), a_k / _const(a_k, s2)  # not float64
  nc = B.shape[0]
  for c in range(nc):
    if not _owns(c, nc, t, parts, sym):
      continue
    _backward_chunk(A, qa1, ra1, qa2, ra2, B, qb1, rb1, qb2, rb2, box,
                   hw, bvar, cbox, wt, wk, g, need_a, need_b, c, sym,
                   gA, gqa1, gqa2, gB, gqb1, gqb2, AT, BT)


@_inline
def _unpack(ins, dt_):
  """The custom call's operands as arrays (see `_operands`)."""
  # operand 0: int32 dims; 1: params; 2-11: the two sides; 12-13: box map
  d = numba.carray(ins[0], (_NDIMS,), np.int32)
  s1, nt, it_, f, nc, jc, s2 = d[0], d[1], d[2], d[3], d[4], d[5], d[6]
  prm = numba.carray(ins[1], (5,), dt_)
  a = numba.carray(ins[2], (s1, nt, it_, f), dt_)
  qa1 = numba.carray(ins[3], (nt * it_, s1), dt_)
  ra1 = numba.carray(ins[4], (nt * it_, s1), dt_)
  qa2 = numba.carray(ins[5], (nt * it_, s2), dt_)
  ra2 = numba.carray(ins[6], (nt * it_, s2), dt_)
  b = numba.carray(ins[7], (nc, s1, f, jc), dt_)
  qb1 = numba.carray(ins[8], (nc, s1, jc), dt_)
  rb1 = numba.carray(ins[9], (nc, s1, jc), dt_)
  qb2 = numba.carray(ins[10], (nc, s2, jc), dt_)
  rb2 = numba.carray(ins[11], (nc, s2, jc), dt_)
  box = numba.carray(ins[12], (3, d[9], 4), np.int32)
  hw = numba.carray(ins[13], (3,), np.int32)
  return d, prm, a, qa1, ra1, qa2, ra2, b, qb1, rb1, qb2, rb2, box, hw


# ------------------------------------------------------------ threads
# A custom call runs on the XLA device's one thread, and JAX 0.5.3 ran two
# host devices' programs one after the other (BUILD_NOTES, issue 11), so the
# kernel spreads its column chunks over threads of its own: POSIX threads
# started from the compiled code (numba's `prange` cannot be loaded from
# numba's cache when called from a `cfunc`). The thread routine is a `cfunc`
# reached through a named symbol, so no address is compiled into cached code.
_WORKER = 'modelsteal_cnn_ntk_worker_'  # + f32 / f64
_JOB = 12      # int64 fields of a job, see `_job`
# One compiled routine per job kind and dtype (see `_job`), each reached
# through its symbol: a caller that held the routine's code itself would
# make numba link and optimise that code again in every function up the
# call chain (a cold compile took minutes that way). Everything from the
# custom call down is specialised by dtype (the `dt_` arguments), so only
# the dtypes in use are compiled: a float32 user never waits for float64.
_JOB_ROUTINE = 'modelsteal_cnn_ntk_job_'  # + fwd_f32, bwd_f64, ...
_NDIMS = 14    # int32 dims operand, see `_operands`

if numba is not None:
  from llvmlite import ir as _ir  # pylint: disable=g-import-not-at-top
  from numba.core import cgutils as _cgutils  # pylint: disable=g-import-not-at-top
  from numba.extending import intrinsic as _intrinsic  # pylint: disable=g-import-not-at-top

  _VP = _ir.IntType(8).as_pointer()
  _I64 = _ir.IntType(64)
  _I32 = _ir.IntType(32)

  def _suffix(dt_type):
    """'f32' or 'f64': the symbol suffix of a dtype argument's type."""
    return 'f64' if dt_type.dtype == _types.float64 else 'f32'

  @_intrinsic
  def _addr(typingctx, ptr):  # pylint: disable=unused-argument
    """A pointer (voidptr, void**, an array's .ctypes.data) as int64."""
    def codegen(context, builder, sig, args):
      v = args[0]
      if isinstance(v.type, _ir.PointerType):
        return builder.ptrtoint(v, _I64)
      return builder.sext(v, _I64) if v.type.width < 64 else v
    return _types.int64(ptr), codegen

  @_intrinsic
  def _voidp(typingctx, a):  # pylint: disable=unused-argument
    def codegen(context, builder, sig, args):
      return builder.inttoptr(args[0], _VP)
    return _types.voidptr(_types.int64), codegen

  @_intrinsic
  def _voidpp(typingctx, a):  # pylint: disable=unused-argument
    def codegen(context, builder, sig, args):
      return builder.inttoptr(args[0], _VP.as_pointer())
    return _types.CPointer(_types.voidptr)(_types.int64), codegen

  @_intrinsic
  def _spawn(typingctx, job, dt_):  # pylint: disable=unused-argument
    """pthread_create(&tid, NULL, worker, job): tid, or -1 if it failed;
    the worker of dt_'s dtype."""
    def codegen(context, builder, sig, args):
      wty = _ir.FunctionType(_VP, [_VP])
      worker = _cgutils.get_or_insert_function(
          builder.module, wty, _WORKER + _suffix(sig.args[1]))
      cty = _ir.FunctionType(_I32, [_I64.as_pointer(), _VP, wty.as_pointer(),
                                    _VP])
      create = _cgutils.get_or_insert_function(builder.module, cty,
                                               'pthread_create')
      tid = _cgutils.alloca_once(builder, _I64)
      rc = builder.call(create, [tid, _ir.Constant(_VP, None), worker,
                                 args[0]])
      ok = builder.icmp_signed('==', rc, _ir.Constant(_I32, 0))
      return builder.select(ok, builder.load(tid), _ir.Constant(_I64, -1))
    return _types.int64(_types.voidptr, dt_), codegen

  @_intrinsic
  def _call_job(typingctx, kind, job, dt_):  # pylint: disable=unused-argument
    """Calls the job routine of `kind` (0 forward, 1 backward, 2 the fused
    validation pass) for dt_'s
    dtype by its symbol name: callers hold only a declaration, not the
    routine's code."""
    def codegen(context, builder, sig, args):
      fty = _ir.FunctionType(_ir.VoidType(), [_VP])
      sfx = _suffix(sig.args[2])
      fwd, bwd, val = (_cgutils.get_or_insert_function(
          builder.module, fty, f'{_JOB_ROUTINE}{k}_{sfx}')
                       for k in ('fwd', 'bwd', 'val'))
      is_fwd = builder.icmp_signed('==', args[0], _ir.Constant(_I64, 0))
      is_bwd = builder.icmp_signed('==', args[0], _ir.Constant(_I64, 1))
      routine = builder.select(is_fwd, fwd, builder.select(is_bwd, bwd, val))
      builder.call(routine, [args[1]])
      return context.get_dummy_value()
    return _types.none(_types.int64, _types.voidptr, dt_), codegen

  @_intrinsic
  def _join(typingctx, tid):  # pylint: disable=unused-argument
    def codegen(context, builder, sig, args):
      jty = _ir.FunctionType(_I32, [_I64, _VP.as_pointer()])
      join = _cgutils.get_or_insert_function(builder.module, jty,
                                             'pthread_join')
      return builder.call(join, [args[0], _ir.Constant(_VP.as_pointer(),
                                                       None)])
    return _types.int32(_types.int64), codegen
else:
  _addr = _voidp = _voidpp = _spawn = _join = _call_job = None

_F32 = np.dtype('float32')
_F64 = np.dtype('float64')


@_inline
def _run_forward(ins, outp, t, parts, dt_):
  d, prm, a, qa1, ra1, qa2, ra2, b, qb1, rb1, qb2, rb2, box, hw = (
      _unpack(ins, dt_))
  k = numba.carray(outp, (d[1] * d[2], d[4] * d[5]), dt_)
  _forward(a, qa1, ra1, qa2, ra2, b, qb1, rb1, qb2, rb2, box, hw,
           prm[0], prm[1], prm[2], prm[3], prm[4], k, t, parts, d[11] != 0)


@_inline
def _run_backward(ins, out, t, parts, dt_, ga_p, gqa1_p, gqa2_p, at_p,
                  bt_p):
  """The backward pass of thread t's chunks: gA, gqa1, gqa2 into the
  buffers at ga_p, gqa1_p, gqa2_p; gB, gqb1, gqb2 into the results."""
  d, prm, a, qa1, ra1, qa2, ra2, b, qb1, rb1, qb2, rb2, box, hw = (
      _unpack(ins, dt_))
  s1, nt, it_, f, nc, jc, s2 = d[0], d[1], d[2], d[3], d[4], d[5], d[6]
  need_a, need_b = d[7] != 0, d[8] != 0
  g = numba.carray(ins[14], (nt * it_, nc * jc), dt_)
  ga = numba.carray(_voidp(ga_p), (s1, nt, it_, f), dt_)
  gqa1 = numba.carray(_voidp(gqa1_p), (nt * it_, s1), dt_)
  gqa2 = numba.carray(_voidp(gqa2_p), (nt * it_, s2), dt_)
  gb = numba.carray(out[3], (nc, s1, f, jc), dt_)
  gqb1 = numba.carray(out[4], (nc, s1, jc), dt_)
  gqb2 = numba.carray(out[5], (nc, s2, jc), dt_)
  at = (numba.carray(_voidp(at_p), (s1, nt, f, it_), dt_) if need_b
        else a[:1].transpose(0, 1, 3, 2).copy())
  bt = (numba.carray(_voidp(bt_p), (nc, s1, jc, f), dt_) if need_a
        else b[:1].transpose(0, 1, 3, 2).copy())
  _backward_range(a, qa1, ra1, qa2, ra2, b, qb1, rb1, qb2, rb2, box, hw,
                  prm[0], prm[1], prm[2], prm[3], g, need_a, need_b,
                  t, parts, d[11] != 0, ga, gqa1, gqa2, gb, gqb1, gqb2, at,
                  bt)


@_inline
def _run_val(ins, t, parts, dt_, st_p, gal_p, gb_p, gqb1_p, gqb2_p, at_p):
  """The fused validation pass of thread t's row tiles (`_val_range`),
  into the buffers given."""
  d, prm, a, qa1, ra1, qa2, ra2, b, qb1, rb1, qb2, rb2, box, hw = (
      _unpack(ins, dt_))
  s1, nt, it_, f, nc, jc, s2 = d[0], d[1], d[2], d[3], d[4], d[5], d[6]
  ncls = d[12]
  alpha = numba.carray(ins[14], (nc * jc, ncls), dt_)
  yv = numba.carray(ins[15], (nt * it_, ncls), dt_)
  wv = numba.carray(ins[16], (nt * it_,), dt_)
  stats = numba.carray(_voidp(st_p), (2,), dt_)
  galpha = numba.carray(_voidp(gal_p), (nc * jc, ncls), dt_)
  gb = numba.carray(_voidp(gb_p), (nc, s1, f, jc), dt_)
  gqb1 = numba.carray(_voidp(gqb1_p), (nc, s1, jc), dt_)
  gqb2 = numba.carray(_voidp(gqb2_p), (nc, s2, jc), dt_)
  at = numba.carray(_voidp(at_p), (s1, nt, f, it_), dt_)
  _val_range(a, qa1, ra1, qa2, ra2, b, qb1, rb1, qb2, rb2, box, hw,
             prm[0], prm[1], prm[2], prm[3], prm[4], alpha, yv, wv, t, parts,
             stats, galpha, gb, gqb1, gqb2, at)


@_jit
def _job(job, dt_):
  """Runs one job: [kind (0 forward, 1 backward, 2 fused validation pass),
  ins, out, thread t, threads, then the buffers: gA, gqa1, gqa2, AT, BT
  (backward) or stats, galpha, gB, gqb1, gqb2, AT (fused)], through the
  job routine of its kind and dt_ (`_job_routines`)."""
  _call_job(job[0], _voidp(_addr(job.ctypes.data)), dt_)


@_jit
def _run_jobs(jobs, dt_):
  """Job 0 on this thread, the others on threads of their own (inline where
  a thread cannot be started)."""
  n = jobs.shape[0]
  tids = np.full(n, -1, np.int64)
  for t in range(1, n):
    tids[t] = _spawn(_voidp(_addr(jobs[t].ctypes.data)), dt_)
  _job(jobs[0], dt_)
  for t in range(1, n):
    if tids[t] >= 0:
      _join(tids[t])
    else:
      _job(jobs[t], dt_)


@_jit
def _new_jobs(kind, ins, out):
  """One job per thread (dims[10] threads, at most one per column chunk),
  each with its share of the chunks."""
  d = numba.carray(ins[0], (_NDIMS,), np.int32)
  nc = d[4]
  parts = max(1, min(d[10], nc))
  jobs = np.zeros((parts, _JOB), np.int64)
  for t in range(parts):
    jobs[t, 0] = kind
    jobs[t, 1] = _addr(ins)
    jobs[t, 2] = _addr(out)
    jobs[t, 3], jobs[t, 4] = t, parts
  return jobs


@_jit
def _forward_cc(out, ins, dt_):
  _run_jobs(_new_jobs(0, ins, out), dt_)


@_jit
def _backward_cc(out, ins, dt_):
  d, prm, a, qa1, ra1, qa2, ra2, b, qb1, rb1, qb2, rb2, box, hw = (
      _unpack(ins, dt_))
  s1, nt, it_, f, nc, jc, s2 = d[0], d[1], d[2], d[3], d[4], d[5], d[6]
  need_a, need_b = d[7] != 0, d[8] != 0
  ga = numba.carray(out[0], (s1, nt, it_, f), dt_)
  gqa1 = numba.carray(out[1], (nt * it_, s1), dt_)
  gqa2 = numba.carray(out[2], (nt * it_, s2), dt_)
  ga[:] = 0
  gqa1[:] = 0
  gqa2[:] = 0
  numba.carray(out[3], (nc * s1 * f * jc,), dt_)[:] = 0
  numba.carray(out[4], (nc * s1 * jc,), dt_)[:] = 0
  numba.carray(out[5], (nc * s2 * jc,), dt_)[:] = 0
  # the patch products' transposed operands, contiguous for BLAS
  at = (np.ascontiguousarray(a.transpose(0, 1, 3, 2)) if need_b
        else np.empty((1, 1, 1, 1), dt_))
  bt = (np.ascontiguousarray(b.transpose(0, 1, 3, 2)) if need_a
        else np.empty((1, 1, 1, 1), dt_))
  jobs = _new_jobs(1, ins, out)
  parts = jobs.shape[0]
  # threads other than this one sum gA, gqa1, gqa2 into buffers of their own
  sa = np.zeros((parts - 1, s1, nt, it_, f), dt_)
  sq1 = np.zeros((parts - 1, nt * it_, s1), dt_)
  sq2 = np.zeros((parts - 1, nt * it_, s2), dt_)
  for t in range(parts):
    if t == 0:
      jobs[t, 5] = _addr(ga.ctypes.data)
      jobs[t, 6] = _addr(gqa1.ctypes.data)
      jobs[t, 7] = _addr(gqa2.ctypes.data)
    else:
      jobs[t, 5] = _addr(sa[t - 1].ctypes.data)
      jobs[t, 6] = _addr(sq1[t - 1].ctypes.data)
      jobs[t, 7] = _addr(sq2[t - 1].ctypes.data)
    jobs[t, 8] = _addr(at.ctypes.data)
    jobs[t, 9] = _addr(bt.ctypes.data)
  _run_jobs(jobs, dt_)
  for t in range(parts - 1):
    ga += sa[t]
    gqa1 += sq1[t]
    gqa2 += sq2[t]


@_jit
def _val_cc(out, ins, dt_):
  """Results: stats [loss, correct], galpha, gB, gqb1, gqb2 (`val_loss_grad`).
  Threads take contiguous shares of the row tiles, each into buffers of
  its own (thread 0 into the results), summed at the end."""
  d = numba.carray(ins[0], (_NDIMS,), np.int32)
  s1, nt, it_, f, nc, jc, s2 = d[0], d[1], d[2], d[3], d[4], d[5], d[6]
  ncls = d[12]
  a = numba.carray(ins[2], (s1, nt, it_, f), dt_)
  sizes = np.array([2, nc * jc * ncls, nc * s1 * f * jc, nc * s1 * jc,
                    nc * s2 * jc], np.int64)
  parts = max(1, min(d[10], nt))
  # one flat buffer per thread and result; thread 0's are the results
  bufs = np.zeros((parts - 1, sizes.sum()), dt_)
  offs = np.zeros(6, np.int64)
  offs[1:] = np.cumsum(sizes)
  for k in range(5):
    numba.carray(out[k], (sizes[k],), dt_)[:] = 0
  at = np.ascontiguousarray(a.transpose(0, 1, 3, 2))
  jobs = np.zeros((parts, _JOB), np.int64)
  for t in range(parts):
    jobs[t, 0] = 2
    jobs[t, 1] = _addr(ins)
    jobs[t, 3], jobs[t, 4] = t, parts
    for k in range(5):
      jobs[t, 5 + k] = (_addr(out[k]) if t == 0 else
                        _addr(bufs[t - 1, offs[k]:].ctypes.data))
    jobs[t, 10] = _addr(at.ctypes.data)
  _run_jobs(jobs, dt_)
  _keep(at)  # the threads reach it by address only: alive until here
  for t in range(parts - 1):
    for k in range(5):
      res = numba.carray(out[k], (sizes[k],), dt_)
      for e in range(sizes[k]):
        res[e] += bufs[t, offs[k] + e]


@functools.lru_cache(maxsize=None)
def _job_routines(sfx: str) -> tuple[str, ...]:
  """Compiles (or loads) the forward, backward and fused validation job
  routines of one dtype
  ('f32' or 'f64') and names them for the JIT linker (`_JOB_ROUTINE`);
  before any code that calls them is compiled or loaded."""
  import llvmlite.binding as llvm  # pylint: disable=g-import-not-at-top
  from numba import types  # pylint: disable=g-import-not-at-top
  sig = types.void(types.voidptr)
  dt_ = _F64 if sfx == 'f64' else _F32

  @numba.cfunc(sig, **_CFUNC_OPTS)
  def fwd(arg):
    job = numba.carray(arg, (_JOB,), np.int64)
    _run_forward(_voidpp(job[1]), _voidp(job[2]), job[3], job[4], dt_)

  @numba.cfunc(sig, **_CFUNC_OPTS)
  def bwd(arg):
    job = numba.carray(arg, (_JOB,), np.int64)
    _run_backward(_voidpp(job[1]), _voidpp(job[2]), job[3], job[4], dt_,
                  job[5], job[6], job[7], job[8], job[9])

  @numba.cfunc(sig, **_CFUNC_OPTS)
  def val(arg):
    job = numba.carray(arg, (_JOB,), np.int64)
    _run_val(_voidpp(job[1]), job[3], job[4], dt_, job[5], job[6], job[7],
             job[8], job[9], job[10])

  names = tuple(f'{_JOB_ROUTINE}{k}_{sfx}' for k in ('fwd', 'bwd', 'val'))
  for name, fn in zip(names, (fwd, bwd, val)):
    llvm.add_symbol(name, fn.address)
  _KEEP.extend((fwd, bwd, val))
  return names


@functools.lru_cache(maxsize=None)
def _worker_symbol(sfx: str) -> str:
  """Compiles (or loads) the thread routine of one dtype and names it for
  the JIT linker (`_WORKER` + sfx); before any code that starts threads is
  compiled or loaded."""
  import llvmlite.binding as llvm  # pylint: disable=g-import-not-at-top
  from numba import types  # pylint: disable=g-import-not-at-top
  _job_routines(sfx)
  dt_ = _F64 if sfx == 'f64' else _F32

  @numba.cfunc(types.voidptr(types.voidptr), **_CFUNC_OPTS)
  def worker(arg):
    _call_job(numba.carray(arg, (_JOB,), np.int64)[0], arg, dt_)
    return arg

  llvm.add_symbol(_WORKER + sfx, worker.address)
  _KEEP.append(worker)
  return _WORKER + sfx


def threads() -> int:
  """Threads per kernel call: MODELSTEAL_NTGA_THREADS, else the cores this
  process may run on."""
  import os  # pylint: disable=g-import-not-at-top
  from modelsteal.ntga import cpu  # pylint: disable=g-import-not-at-top
  env = os.environ.get('MODELSTEAL_NTGA_THREADS')
  if env:
    try:
      n = int(env)
    except ValueError:
      n = 0
    if n < 1:
      raise ValueError(f'MODELSTEAL_NTGA_THREADS must be a positive integer, '
                       f'got {env!r}')
    return n
  return cpu.available_cores()


# ------------------------------------------------------------ XLA's typed FFI
# The handlers are numba `cfunc`s with XLA's typed FFI ABI (xla/ffi/api/
# c_api.h, the interface `jax.ffi` documents): `XLA_FFI_Error *f(
# XLA_FFI_CallFrame *)`, the call frame read by byte offset. These structs
# only grow at their ends (the header's ABI rule) and the offsets below are
# the same in the headers of jaxlib 0.5.3, 0.10.2 and 0.12.1. In int64 words
# of the call frame: [1] extension_start, [4] stage (int32), [7] argument
# count, [9] argument pointers, [12] result count, [14] result pointers; an
# XLA_FFI_Buffer's data pointer is its word [3].
_FFI_EXECUTE = 3   # XLA_FFI_ExecutionStage_EXECUTE
_FFI_METADATA = 1  # XLA_FFI_Extension_Metadata


@functools.lru_cache(maxsize=None)
def ffi_api_version() -> tuple[int, int] | None:
  """(XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR) of the installed jaxlib's
  headers (`jax.ffi.include_dir()`), or None where they are not found.

  XLA asks a handler for the API version it was built against when the
  handler is registered and refuses one that differs from its own; a numba
  handler is built here, against the jaxlib it runs with."""
  import os  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  try:
    import jax.ffi  # pylint: disable=g-import-not-at-top
    path = os.path.join(jax.ffi.include_dir(), 'xla', 'ffi', 'api', 'c_api.h')
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except (ImportError, AttributeError, OSError):
    return None
  found = [re.search(rf'#define XLA_FFI_API_{k}\s+(\d+)', text)
           for k in ('MAJOR', 'MINOR')]
  if not all(found):
    return None
  return int(found[0].group(1)), int(found[1].group(1))


if numba is not None:
  @_small
  def _ffi_metadata(frame, major, minor):
    """Answers XLA's metadata query (at registration: the handler's API
    version, no traits) if `frame` is one: True; else False."""
    ext = numba.carray(frame, (2,), np.int64)[1]
    while ext != 0:  # a chain of XLA_FFI_(Internal)Extension_Base
      e = numba.carray(_voidp(ext), (6,), np.int32)
      if e[2] == _FFI_METADATA:
        md = numba.carray(_voidp(ext), (4,), np.int64)[3]
        # XLA_FFI_Metadata: api_version.major_version, .minor_version at
        # bytes 24, 28; traits at 32
        v = numba.carray(_voidp(md), (9,), np.int32)
        v[6], v[7], v[8] = major, minor, 0
        return True
      ext = numba.carray(_voidp(ext), (3,), np.int64)[2]
    return False

  @_jit
  def _ffi_buffers(frame, results):
    """The data pointers of the call frame's operands (or results), as
    int64; the kernel's routines take them as a void** (`_unpack`)."""
    f = numba.carray(frame, (15,), np.int64)
    n, p = (f[12], f[14]) if results else (f[7], f[9])
    bufs = numba.carray(_voidp(p), (n,), np.int64)
    out = np.empty(max(n, 1), np.int64)
    for i in range(n):
      out[i] = numba.carray(_voidp(bufs[i]), (4,), np.int64)[3]
    return out

  @_small
  def _ffi_stage(frame):
    return numba.carray(frame, (10,), np.int32)[8]
else:
  _ffi_metadata = _ffi_buffers = _ffi_stage = None


@functools.lru_cache(maxsize=None)
def _targets(dtype_name: str) -> tuple[str, str, str]:
  """Registers the XLA FFI targets (forward, backward, fused validation
  pass) of a dtype.

  Each is a numba `cfunc` with XLA's typed FFI ABI (see above): operands
  and results are buffers in row-major layout, in the order of `_operands`.
  A custom call runs inside the XLA program on the device's thread, like
  any op: no Python, no GIL, and JAX's asynchronous dispatch and several
  host devices work as with the XLA kernel (a `jax.pure_callback`
  deadlocked there). It spreads its column chunks over `threads()` threads
  (dims[10]).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from numba import types  # pylint: disable=g-import-not-at-top
  dt = np.dtype(dtype_name)
  sfx = 'f64' if dt == np.float64 else 'f32'
  _worker_symbol(sfx)
  dt_ = _F64 if sfx == 'f64' else _F32
  # closure constants: part of numba's cache key, so a cached handler built
  # against another jaxlib's FFI version is not reused
  major, minor = ffi_api_version()
  sig = types.voidptr(types.voidptr)

  @numba.cfunc(sig, **_CFUNC_OPTS)
  def fwd_ffi(frame):
    if not _ffi_metadata(frame, major, minor) and (
        _ffi_stage(frame) == _FFI_EXECUTE):
      ins, outs = _ffi_buffers(frame, False), _ffi_buffers(frame, True)
      _forward_cc(_voidp(outs[0]), _voidpp(_addr(ins.ctypes.data)), dt_)
      _keep(ins)
    return _voidp(0)  # NULL: no error

  @numba.cfunc(sig, **_CFUNC_OPTS)
  def bwd_ffi(frame):
    if not _ffi_metadata(frame, major, minor) and (
        _ffi_stage(frame) == _FFI_EXECUTE):
      ins, outs = _ffi_buffers(frame, False), _ffi_buffers(frame, True)
      _backward_cc(_voidpp(_addr(outs.ctypes.data)),
                   _voidpp(_addr(ins.ctypes.data)), dt_)
      _keep(ins)
      _keep(outs)
    return _voidp(0)

  @numba.cfunc(sig, **_CFUNC_OPTS)
  def val_ffi(frame):
    if not _ffi_metadata(frame, major, minor) and (
        _ffi_stage(frame) == _FFI_EXECUTE):
      ins, outs = _ffi_buffers(frame, False), _ffi_buffers(frame, True)
      _val_cc(_voidpp(_addr(outs.ctypes.data)),
              _voidpp(_addr(ins.ctypes.data)), dt_)
      _keep(ins)
      _keep(outs)
    return _voidp(0)

  names = tuple(f'modelsteal_cnn_ntk_ffi_{k}_{dtype_name}'
                for k in ('fwd', 'bwd', 'val'))
  for name, fn in zip(names, (fwd_ffi, bwd_ffi, val_ffi)):
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(fn.ctypes),
                                platform='cpu')
  _KEEP.extend((fwd_ffi, bwd_ffi, val_ffi))  # the code must outlive the calls
  return names


_KEEP: list = []
_CFUNC_OPTS = dict(nopython=True, cache=True)


@functools.lru_cache(maxsize=None)
def _box_tables(h: int, w: int):
  """Index tables of conv 2's 5x5 stride-2 SAME box on (h, w) maps.

  box[0, y] = [n, r0, r1, r2]: the n conv-2 rows whose window holds input
  row y; box[1, x]: the same for columns; box[2, cx] = [lo, hi, 0, 0]: the
  input columns [lo, hi) of conv-2 column cx. hw = [h, w, ceil(w / 2)].
  """
  from modelsteal.ntga.kernels import _same_pads  # pylint: disable=g-import-not-at-top
  box = np.zeros((3, max(h, w), 4), np.int32)
  for axis, size in ((0, h), (1, w)):
    lo, _ = _same_pads(size)
    for o in range(-(-size // 2)):
      first, last = max(2 * o - lo, 0), min(2 * o - lo + 5, size)
      for i in range(first, last):
        box[axis, i, 0] += 1
        box[axis, i, box[axis, i, 0]] = o
      if axis == 1:
        box[2, o, :2] = first, last
  return box, np.array([h, w, -(-w // 2)], np.int32)


def _rows(jnp, p, q1, q2, b_var):
  """Side-1 layout: A (S1, N/IT, IT, F), q (Np, S), 1/sqrt(q). Padding rows
  look like all-zero images (zero patches, q1 = b_var), so they take the
  zero-window path (`_zero_rows`) and cost next to nothing."""
  h1, w1, n, f = p.shape
  pad = (-n) % IT
  a = jnp.pad(p.reshape(h1 * w1, n, f), ((0, 0), (0, pad), (0, 0)))
  qa1 = jnp.pad(q1.reshape(h1 * w1, n).T, ((0, pad), (0, 0)),
                constant_values=b_var)
  qa2 = jnp.pad(q2.reshape(-1, n).T, ((0, pad), (0, 0)), constant_values=1)
  a = a.reshape(h1 * w1, -1, IT, f)
  return a, qa1, 1 / jnp.sqrt(qa1), qa2, 1 / jnp.sqrt(qa2)


def _cols(jnp, p, q1, q2):
  """Side-2 layout: B (NC, S1, F, JC), q (NC, S, JC), 1/sqrt(q)."""
  h1, w1, n, f = p.shape
  pad = (-n) % JC
  b = jnp.pad(p.reshape(h1 * w1, n, f), ((0, 0), (0, pad), (0, 0)))
  qb1 = jnp.pad(q1.reshape(h1 * w1, n), ((0, 0), (0, pad)), constant_values=1)
  qb2 = jnp.pad(q2.reshape(-1, n), ((0, 0), (0, pad)), constant_values=1)
  nc = b.shape[1] // JC
  b = b.reshape(h1 * w1, nc, JC, f).transpose(1, 0, 3, 2)
  qb1 = qb1.reshape(h1 * w1, nc, JC).transpose(1, 0, 2)
  qb2 = qb2.reshape(-1, nc, JC).transpose(1, 0, 2)
  return b, qb1, 1 / jnp.sqrt(qb1), qb2, 1 / jnp.sqrt(qb2)


def _operands(f1, f2, w_var, b_var, dense_coeffs, need=(0, 0), sym=False,
              ncls=0):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  p1, p2 = f1[0], f2[0]
  dt = p1.dtype
  h1, w1, _, f = p1.shape
  rows = _rows(jnp, *f1, b_var)
  cols = _cols(jnp, *f2)
  s2 = f1[2].shape[0] * f1[2].shape[1]
  box, hw = _box_tables(h1, w1)
  dims = np.array([h1 * w1, rows[0].shape[1], IT, f, cols[0].shape[0], JC,
                   s2, need[0], need[1], box.shape[1], threads(), int(sym),
                   ncls, 0],
                  np.int32)
  a_t, a_k, c_0 = dense_coeffs
  prm = np.array([b_var, w_var / 25, a_t, a_k, c_0], dt)
  return (jnp.asarray(dims), jnp.asarray(prm)) + rows + cols + (
      jnp.asarray(box), jnp.asarray(hw))


def _sym_missing(n: int) -> np.ndarray:
  """(n, n): the block kernel's entries that `sym` leaves out (row i at or
  below the end of column j's chunk); their transposes are computed."""
  i, j = np.arange(n)[:, None], np.arange(n)[None, :]
  return i >= (j // JC + 1) * JC


def _col_cotangents(gB, gqb1, gqb2, hw1, hw2, n2):
  """The column side's cotangents from their chunked layouts (`_cols`) back
  to the features' (patches, q1, q2)."""
  s1, f = hw1[0] * hw1[1], gB.shape[2]
  return (gB.transpose(1, 0, 3, 2).reshape(s1, -1, f)[:, :n2]
          .reshape(hw1 + (n2, f)),
          gqb1.transpose(1, 0, 2).reshape(s1, -1)[:, :n2].reshape(hw1 + (n2,)),
          gqb2.transpose(1, 0, 2).reshape(hw2[0] * hw2[1], -1)[:, :n2]
          .reshape(hw2 + (n2,)))


def forward(f1, f2, w_var, b_var, dense_coeffs, sym=False):
  """NTK (N1, N2) from the features of `kernels._cnn_features` (traceable).

  sym: f1 is f2 (the block kernel K(x, x)): each pair is computed once
  (about 56% of the pairs for 512 images: whole 64-column chunks above the
  diagonal) and the rest filled in by symmetry."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n1, n2 = f1[0].shape[2], f2[0].shape[2]
  ops = _operands(f1, f2, w_var, b_var, dense_coeffs, sym=sym)
  name = _targets(np.dtype(f1[0].dtype).name)[0]
  shape = (ops[2].shape[1] * IT, ops[7].shape[0] * JC)
  out, = jax.ffi.ffi_call(
      name, (jax.ShapeDtypeStruct(shape, f1[0].dtype),))(*ops)
  out = out[:n1, :n2]
  if sym:
    out = jnp.where(_sym_missing(n1), out.T, out)
  return out


def backward(f1, f2, g, need1, need2, w_var, b_var, dense_coeffs,
             sym=False):
  """Cotangents of both sides' features (zeros for a side not needed).

  sym: as in `forward`, g the cotangent of the whole block kernel; the
  cotangent of the entries left out goes to their transposes, and the
  features' cotangent is the sum of both sides'."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  p1, p2 = f1[0], f2[0]
  h1, w1, n1, f = p1.shape
  n2 = p2.shape[2]
  if sym:
    miss = _sym_missing(n1)
    g = jnp.where(miss, 0, g + jnp.where(miss.T, g.T, 0))
  ops = _operands(f1, f2, w_var, b_var, dense_coeffs, (need1, need2), sym)
  name = _targets(np.dtype(p1.dtype).name)[1]
  nt, nc = ops[2].shape[1], ops[7].shape[0]
  gp = jnp.pad(g, ((0, nt * IT - n1), (0, nc * JC - n2)))
  shapes = [ops[i].shape for i in (2, 3, 5, 7, 8, 10)]
  gA, gqa1, gqa2, gB, gqb1, gqb2 = jax.ffi.ffi_call(
      name, tuple(jax.ShapeDtypeStruct(s, p1.dtype) for s in shapes))(*ops, gp)
  s1 = h1 * w1
  hw2 = f1[2].shape[:2]
  g1 = (gA.reshape(s1, -1, f)[:, :n1].reshape(h1, w1, n1, f),
        gqa1[:n1].T.reshape(h1, w1, n1),
        gqa2[:n1].T.reshape(hw2 + (n1,)))
  g2 = _col_cotangents(gB, gqb1, gqb2, (h1, w1), hw2, n2)
  return g1, g2


def val_loss_grad(f1, f2, alpha, y, w, w_var, b_var, dense_coeffs):
  """NTGA's validation part in one pass: with K = NTK(x1, x2) (N1, N2),

      loss = sum_i w_i CE(K_i alpha, y_i),  correct = sum_i w_i [argmax ok],

  and the cotangents of x2's features and of alpha, each tile's reverse
  sweep right after its forward maps (the unfused way runs the forward
  twice: for K, then again inside the backward pass). x1 (the validation
  images) is not differentiated.

  Args:
    f1, f2: features (`kernels._cnn_features`) of x1 and x2.
    alpha: (N2, K) GP weights; y: (N1, K) targets; w: (N1,) row weights.

  Returns:
    (loss, correct, cotangents of f2, cotangent of alpha (N2, K)).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  p1, p2 = f1[0], f2[0]
  dt = p1.dtype
  h1, w1, n1, f = p1.shape
  n2 = p2.shape[2]
  ncls = alpha.shape[1]
  ops = _operands(f1, f2, w_var, b_var, dense_coeffs, (0, 1), ncls=ncls)
  name = _targets(np.dtype(dt).name)[2]
  nt, nc = ops[2].shape[1], ops[7].shape[0]
  alpha_p = jnp.pad(alpha.astype(dt), ((0, nc * JC - n2), (0, 0)))
  y_p = jnp.pad(y.astype(dt), ((0, nt * IT - n1), (0, 0)))
  w_p = jnp.pad(w.astype(dt), (0, nt * IT - n1))
  shapes = [(2,), (nc * JC, ncls)] + [ops[i].shape for i in (7, 8, 10)]
  stats, g_alpha, gB, gqb1, gqb2 = jax.ffi.ffi_call(
      name, tuple(jax.ShapeDtypeStruct(s, dt) for s in shapes))(*ops, alpha_p, y_p, w_p)
  g2 = _col_cotangents(gB, gqb1, gqb2, (h1, w1), f1[2].shape[:2], n2)
  return stats[0], stats[1], g2, g_alpha[:n2]
