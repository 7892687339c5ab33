"""TF Serving's REST JSON formats: request parsing, response building, errors.

Follows https://www.tensorflow.org/tfx/serving/api_rest (Predict, Model
status, Model metadata). Every failure a client can cause is a
`ServingError` carrying the HTTP status; the app answers it as TF Serving
does, `{"error": "<message>"}`.

Requests (`parse_predict_request`):

    {"signature_name": S?, "instances": [row, ...]}     row format
    {"signature_name": S?, "inputs": tensor | {name: tensor}}  columnar

With a single named input a row is the tensor itself; with several, each row
is an object `{name: value}`. Responses (`format_predictions`): row requests
get `{"predictions": [...]}` (a list of values for a single output, a list of
objects per instance for several), columnar ones `{"outputs": ...}` (the
tensor, or an object of tensors).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

try:  # faster on the float arrays requests carry (BUILD_NOTES.md, "Serving"); optional
  import orjson  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover - depends on the environment
  orjson = None

# TF dtype name -> (numpy dtype, proto enum name). Strings are not served:
# every model this package exports takes float images.
_DTYPES = {
    'float32': (np.float32, 'DT_FLOAT'), 'float64': (np.float64, 'DT_DOUBLE'),
    'float16': (np.float16, 'DT_HALF'), 'int8': (np.int8, 'DT_INT8'),
    'int16': (np.int16, 'DT_INT16'), 'int32': (np.int32, 'DT_INT32'),
    'int64': (np.int64, 'DT_INT64'), 'uint8': (np.uint8, 'DT_UINT8'),
    'bool': (np.bool_, 'DT_BOOL'),
}


class ServingError(Exception):
  """A request the server cannot answer; `status` is the HTTP status code."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status
    self.message = message


def dtype_enum(dtype_name: str) -> str:
  return _DTYPES.get(dtype_name, (None, 'DT_INVALID'))[1]


def tensor_info(name: str, dtype_name: str, shape: tuple | None) -> dict:
  """A TensorInfo proto as TF Serving prints it (int64 sizes as strings)."""
  if shape is None:
    tshape = {'dim': [], 'unknown_rank': True}
  else:
    tshape = {'dim': [{'size': str(-1 if d is None else int(d)), 'name': ''}
                      for d in shape], 'unknown_rank': False}
  return {'dtype': dtype_enum(dtype_name), 'tensor_shape': tshape,
          'name': name}


def decode_json(body: bytes) -> dict:
  """Body bytes -> the request object, or a 400 saying what is wrong."""
  if not body or not body.strip():
    raise ServingError(400, 'JSON Parse error: the request body is empty; '
                       'send {"instances": [...]} or {"inputs": ...}.')
  obj = None
  if orjson is not None:
    try:
      obj = orjson.loads(body)
    except orjson.JSONDecodeError:
      pass  # NaN/Infinity tokens (TF Serving allows them) or bad JSON
  try:
    if obj is None:
      obj = json.loads(body)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ServingError(400, f'JSON Parse error: {e}') from None
  except RecursionError:
    raise ServingError(400, 'JSON Parse error: nesting too deep.') from None
  if not isinstance(obj, dict):
    raise ServingError(400, 'JSON Value: the request must be a JSON object '
                       f'with "instances" or "inputs", got a {type(obj).__name__}.')
  return obj


def _to_array(value: Any, name: str, spec) -> np.ndarray:
  """A JSON tensor -> numpy array of the input's dtype, checked.

  Raises ServingError (400) for ragged lists, non-numbers, NaN/Infinity,
  empty tensors and shapes the signature does not accept.
  """
  if isinstance(value, dict):
    raise ServingError(400, f'input "{name}": binary ({{"b64": ...}}) or '
                       'object values are not supported; send numbers.')
  try:
    raw = np.asarray(value)
  except ValueError:
    raise ServingError(400, f'input "{name}": the nested lists are ragged '
                       '(rows of different lengths); every instance must '
                       'have the same shape.') from None
  if raw.dtype == object:
    raise ServingError(400, f'input "{name}": the nested lists are ragged or '
                       'mix types; every instance must have the same shape.')
  np_dtype = _DTYPES[spec.dtype][0] if spec.dtype in _DTYPES else None
  if np_dtype is None:
    raise ServingError(400, f'input "{name}": dtype {spec.dtype} is not '
                       'supported by this server.')
  if raw.dtype.kind not in 'biuf' or (raw.dtype.kind == 'b' and
                                       np_dtype is not np.bool_):
    raise ServingError(400, f'input "{name}" expects numbers of type '
                       f'{dtype_enum(spec.dtype)}, got {raw.dtype.name} '
                       'values (strings or booleans?).')
  if raw.dtype.kind == 'f' and np.dtype(np_dtype).kind in 'iu':
    check_input(raw, name, spec)  # NaN, empty and shape say more first
    raise ServingError(400, f'input "{name}" expects integers '
                       f'({dtype_enum(spec.dtype)}), got fractional numbers.')
  check_input(raw, name, spec)
  with np.errstate(over='ignore', invalid='ignore'):
    arr = raw.astype(np_dtype)
  if arr.dtype.kind == 'f' and not np.isfinite(arr).all():
    raise ServingError(400, f'input "{name}" overflows {spec.dtype}.')
  return arr


def check_input(arr: np.ndarray, name: str, spec) -> None:
  """What every transport checks of an input tensor: finite, not empty, of
  a shape the signature accepts (400 otherwise)."""
  if arr.dtype.kind == 'f' and not np.isfinite(arr).all():
    raise ServingError(400, f'input "{name}" contains NaN or Infinity; '
                       'send finite numbers.')
  if arr.size == 0:
    raise ServingError(400, f'input "{name}" is empty; send at least one '
                       'instance.')
  shape = spec.shape
  if shape is not None:
    if arr.ndim != len(shape) or any(
        d is not None and d != g for d, g in zip(shape, arr.shape)):
      raise ServingError(400, f'input "{name}" must have shape '
                         f'{shape_text(shape)}, got {tuple(arr.shape)}.')


def shape_text(shape: tuple) -> str:
  """(None, 28, 28, 1) -> '(N, 28, 28, 1)'."""
  return '(' + ', '.join('N' if i == 0 and d is None else
                         ('?' if d is None else str(d))
                         for i, d in enumerate(shape)) + ')'


def numpy_dtype(dtype_name: str):
  """The numpy dtype of a TF dtype name this server accepts, or None."""
  return _DTYPES.get(dtype_name, (None, None))[0]


def parse_predict_request(obj: dict, input_specs: dict) -> tuple[dict, bool]:
  """Request object -> ({input name: array}, row_format).

  Args:
    obj: the decoded JSON request.
    input_specs: input name -> spec with `.dtype` (TF dtype name) and `.shape`
      (tuple with None for unknown dims, or None).

  Returns:
    The input arrays, all with the same leading (batch) dimension, and
    whether the request was in row format (`instances`).
  """
  has_rows, has_cols = 'instances' in obj, 'inputs' in obj
  if has_rows and has_cols:
    raise ServingError(400, 'Not both "instances" and "inputs" can be '
                       'specified; use one format.')
  if not has_rows and not has_cols:
    raise ServingError(400, 'Missing "inputs" or "instances" key in the '
                       'request.')
  unknown = set(obj) - {'instances', 'inputs', 'signature_name'}
  if unknown:
    raise ServingError(400, f'unknown request keys {sorted(unknown)}; valid: '
                       '"signature_name", "instances" or "inputs".')
  names = list(input_specs)
  if has_rows:
    rows = obj['instances']
    if not isinstance(rows, list):
      raise ServingError(400, '"instances" must be a list (one entry per '
                         'instance).')
    if not rows:
      raise ServingError(400, '"instances" is empty; send at least one '
                         'instance.')
    if len(names) == 1 and not isinstance(rows[0], dict):
      columns = {names[0]: rows}
    else:
      if not all(isinstance(r, dict) for r in rows):
        raise ServingError(400, 'with several named inputs each instance must '
                           f'be an object with keys {names}.')
      columns = {}
      for n in names:
        if any(n not in r for r in rows):
          raise ServingError(400, f'an instance lacks input "{n}"; every '
                             f'instance needs {names}.')
        columns[n] = [r[n] for r in rows]
      extra = {k for r in rows for k in r} - set(names)
      if extra:
        raise ServingError(400, f'unknown inputs {sorted(extra)}; the '
                           f'signature takes {names}.')
  else:
    cols = obj['inputs']
    if isinstance(cols, dict) and (len(names) > 1 or names[0] in cols):
      missing = set(names) - set(cols)
      extra = set(cols) - set(names)
      if missing or extra:
        raise ServingError(400, f'"inputs" must name exactly the inputs '
                           f'{names}; missing {sorted(missing)}, unknown '
                           f'{sorted(extra)}.')
      columns = dict(cols)
    elif len(names) == 1:
      if isinstance(cols, dict) and 'b64' not in cols:
        raise ServingError(400, f'"inputs" names {sorted(cols)}; the '
                           f'signature takes {names}.')
      columns = {names[0]: cols}
    else:
      raise ServingError(400, f'the signature has several inputs {names}; '
                         '"inputs" must be an object naming each.')
  arrays = {n: _to_array(columns[n], n, input_specs[n]) for n in names}
  sizes = {a.shape[0] if a.ndim else 1 for a in arrays.values()}
  if len(sizes) != 1:
    raise ServingError(400, 'all inputs must have the same batch size, got '
                       f'{ {n: a.shape for n, a in arrays.items()} }.')
  return arrays, has_rows


def format_predictions(outputs: dict[str, np.ndarray], row_format: bool
                       ) -> dict:
  """Output arrays -> the response object (see the module docstring)."""
  if row_format:
    if len(outputs) == 1:
      (value,) = outputs.values()
      return {'predictions': value.tolist()}
    lists = {k: v.tolist() for k, v in outputs.items()}
    n = len(next(iter(lists.values())))
    return {'predictions': [{k: v[i] for k, v in lists.items()}
                            for i in range(n)]}
  if len(outputs) == 1:
    (value,) = outputs.values()
    return {'outputs': value.tolist()}
  return {'outputs': {k: v.tolist() for k, v in outputs.items()}}


def encode_json(obj: Any, finite: bool = True) -> bytes:
  """Compact JSON; `finite=False` when values may hold NaN/Infinity, which
  orjson would write as null and TF Serving writes as tokens."""
  if orjson is not None and finite:
    try:
      return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
      pass
  return json.dumps(obj, separators=(',', ':')).encode()


def all_finite(outputs: dict[str, np.ndarray]) -> bool:
  return all(v.dtype.kind != 'f' or np.isfinite(v).all()
             for v in outputs.values())
