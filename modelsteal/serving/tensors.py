"""TensorProto <-> numpy for the gRPC API, without TensorFlow's Python ops.

`tf.make_ndarray` and `tf.make_tensor_proto` would do, but cost an eager
TensorFlow round trip per tensor. Here a request tensor is read straight from
its bytes: `tensor_content` (what `tf.make_tensor_proto` writes for arrays)
with `np.frombuffer`, or the typed repeated field (`float_val`, `int64_val`,
...; one value fills the whole shape, as in TensorFlow). Answers are written
as `tensor_content`, which `tf.make_ndarray` reads. Every failure a client can
cause is a `ServingError` (400), as for JSON.
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2

from modelsteal.serving.codec import check_input
from modelsteal.serving.codec import dtype_enum
from modelsteal.serving.codec import numpy_dtype
from modelsteal.serving.codec import ServingError

# DataType enum -> the repeated field that holds its values.
_FIELDS = {
    types_pb2.DT_FLOAT: 'float_val', types_pb2.DT_DOUBLE: 'double_val',
    types_pb2.DT_HALF: 'half_val', types_pb2.DT_INT8: 'int_val',
    types_pb2.DT_INT16: 'int_val', types_pb2.DT_INT32: 'int_val',
    types_pb2.DT_UINT8: 'int_val', types_pb2.DT_INT64: 'int64_val',
    types_pb2.DT_BOOL: 'bool_val',
}
_ENUM = {np.dtype(np.float32): types_pb2.DT_FLOAT,
         np.dtype(np.float64): types_pb2.DT_DOUBLE,
         np.dtype(np.float16): types_pb2.DT_HALF,
         np.dtype(np.int8): types_pb2.DT_INT8,
         np.dtype(np.int16): types_pb2.DT_INT16,
         np.dtype(np.int32): types_pb2.DT_INT32,
         np.dtype(np.int64): types_pb2.DT_INT64,
         np.dtype(np.uint8): types_pb2.DT_UINT8,
         np.dtype(np.bool_): types_pb2.DT_BOOL}


def _dtype_name(enum: int) -> str:
  try:
    return types_pb2.DataType.Name(enum)
  except ValueError:
    return f'DataType({enum})'


def to_array(t: tensor_pb2.TensorProto, name: str, spec) -> np.ndarray:
  """A request's TensorProto -> the checked input array for `spec`."""
  np_dtype = numpy_dtype(spec.dtype)
  want = dtype_enum(spec.dtype)
  if np_dtype is None:
    raise ServingError(400, f'input "{name}": dtype {spec.dtype} is not '
                       'supported by this server.')
  if t.dtype != types_pb2.DataType.Value(want):
    raise ServingError(400, f'input "{name}" expects {want}, got '
                       f'{_dtype_name(t.dtype)}.')
  if t.tensor_shape.unknown_rank:
    raise ServingError(400, f'input "{name}" has an unknown rank; give its '
                       'shape.')
  shape = tuple(int(d.size) for d in t.tensor_shape.dim)
  if any(d < 0 for d in shape):
    raise ServingError(400, f'input "{name}" has shape {shape}; sizes must '
                       'be known.')
  n = math.prod(shape)
  dtype = np.dtype(np_dtype)
  if t.tensor_content:
    if len(t.tensor_content) != n * dtype.itemsize:
      raise ServingError(400, f'input "{name}": tensor_content holds '
                         f'{len(t.tensor_content)} bytes, shape {shape} of '
                         f'{want} needs {n * dtype.itemsize}.')
    arr = np.frombuffer(t.tensor_content, dtype).reshape(shape)
  else:
    vals = getattr(t, _FIELDS[t.dtype])
    if t.dtype == types_pb2.DT_HALF:  # the float16 bit patterns, as ints
      flat = np.asarray(vals, np.uint16).view(np.float16)
    else:
      flat = np.asarray(vals, dtype)
    if len(flat) == n:
      arr = flat.reshape(shape)
    elif len(flat) == 1:
      arr = np.full(shape, flat[0], dtype)
    else:
      raise ServingError(400, f'input "{name}" has {len(flat)} values for '
                         f'shape {shape} ({n} values).')
  check_input(arr, name, spec)
  return arr


def to_inputs(tensors, specs: dict) -> dict[str, np.ndarray]:
  """A request's `inputs` map -> {name: array}, every input named once."""
  names = set(tensors.keys())
  if names != set(specs):
    missing, unknown = sorted(set(specs) - names), sorted(names - set(specs))
    raise ServingError(400, f'the signature takes inputs {sorted(specs)}; '
                       f'missing {missing}, unknown {unknown}.')
  arrays = {k: to_array(tensors[k], k, specs[k]) for k in sorted(specs)}
  sizes = {a.shape[0] if a.ndim else 1 for a in arrays.values()}
  if len(sizes) != 1:
    raise ServingError(400, 'all inputs must have the same batch size, got '
                       f'{ {k: a.shape for k, a in arrays.items()} }.')
  return arrays


def fill_tensor(t: tensor_pb2.TensorProto, arr: np.ndarray) -> None:
  """Writes `arr` into the (empty) TensorProto `t` as tensor_content."""
  arr = np.asarray(arr)
  if arr.dtype not in _ENUM:
    arr = arr.astype(np.float32 if arr.dtype.kind == 'f' else np.int64)
  t.dtype = _ENUM[arr.dtype]
  for d in arr.shape:
    t.tensor_shape.dim.add(size=d)
  t.tensor_content = np.ascontiguousarray(arr).tobytes()


def make_tensor(arr: np.ndarray) -> tensor_pb2.TensorProto:
  t = tensor_pb2.TensorProto()
  fill_tensor(t, arr)
  return t
