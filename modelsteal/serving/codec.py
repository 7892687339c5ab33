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
import re
from typing import Any
import warnings

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
  if _is_b64(value) or (isinstance(value, list) and value and
                        _is_b64(value[0])):
    arr = decode_b64_images(value if isinstance(value, list) else [value],
                            name, spec)
    check_input(arr, name, spec)
    return arr
  if isinstance(value, dict):
    raise ServingError(400, f'input "{name}": object values are not '
                       'supported; send numbers, or images as '
                       '{"b64": "<base64 PNG/JPEG>"}.')
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


def _is_b64(v) -> bool:
  return isinstance(v, dict) and len(v) == 1 and 'b64' in v


def decode_b64_images(values: list, name: str, spec) -> np.ndarray:
  """TF Serving's binary values, `{"b64": "<base64>"}`, for an image input.

  TF Serving hands the bytes to a string input; these models take float
  pixels, so each value here is an encoded image (PNG, JPEG, GIF, BMP)
  decoded to the input's (H, W, C) (grey for C=1, RGB for C=3, never
  resized) and scaled to [0, 1] (float inputs) or kept as bytes (uint8).
  """
  import base64  # pylint: disable=g-import-not-at-top
  import binascii  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  shape = spec.shape
  if (shape is None or len(shape) != 4 or any(d is None for d in shape[1:])
      or shape[3] not in (1, 3)):
    raise ServingError(400, f'input "{name}" of shape {shape} takes no '
                       'images; "b64" values are decoded as images of '
                       '(H, W, 1 or 3).')
  h, w, c = shape[1:]
  dtype = numpy_dtype(spec.dtype)
  if dtype is None or np.dtype(dtype).kind not in 'fu':
    raise ServingError(400, f'input "{name}" ({spec.dtype}) takes no images.')
  out = []
  for i, v in enumerate(values):
    if not _is_b64(v) or not isinstance(v['b64'], str):
      raise ServingError(400, f'input "{name}": instance {i} is not '
                         '{"b64": "<base64 string>"}; send every instance the '
                         'same way.')
    try:
      raw = base64.b64decode(v['b64'], validate=True)
      img = Image.open(io.BytesIO(raw))
      img.load()
    except (binascii.Error, ValueError):
      raise ServingError(400, f'input "{name}": instance {i} is not valid '
                         'base64.') from None
    except Exception:  # pylint: disable=broad-except
      raise ServingError(400, f'input "{name}": instance {i} is not a PNG, '
                         'JPEG, GIF or BMP image.') from None
    a = np.asarray(img.convert('L' if c == 1 else 'RGB'), np.uint8)
    if c == 1:
      a = a[..., None]
    if a.shape != (h, w, c):
      raise ServingError(400, f'input "{name}": instance {i} is an image of '
                         f'{a.shape[1]}x{a.shape[0]}; the model takes '
                         f'{w}x{h} (images are not resized).')
    out.append(a)
  arr = np.stack(out)
  if np.dtype(dtype).kind == 'f':
    arr = arr.astype(dtype) / np.asarray(255, dtype)
  return arr.astype(dtype, copy=False)


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


# The fast path of `fast_predict_request`: a request whose tensor is plain
# numbers, brackets and commas, found without parsing it as JSON.
_ROWS = re.compile(rb'"(instances|inputs)"\s*:\s*(\[[\[\]0-9eE+\-.,\s]*\])')
_NUMBER_CHARS = b'0123456789.eE+- \t\r\n'
_TO_SPACES = bytes.maketrans(b'[],\t\r\n', b'      ')
_SKELETONS: dict[tuple, bytes] = {}


def _skeleton(dims: tuple) -> bytes:
  """The brackets and commas of a regular nested list of shape `dims`."""
  if dims not in _SKELETONS:
    inner = b'' if not dims[1:] else _skeleton(dims[1:])
    _SKELETONS[dims] = b'[' + b','.join([inner] * dims[0]) + b']'
  return _SKELETONS[dims]


def fast_predict_request(body: bytes, specs_for
                         ) -> tuple[dict, bool, str | None] | None:
  """A predict body of one float tensor -> (inputs, row_format,
  signature_name) without building Python lists; None when the body is not
  that simple (then `parse_predict_request` decides, with its errors).

  `specs_for(signature_name)` gives that signature's input specs. Checked as
  strictly as the general path: the rest of the body must be valid JSON with
  only `signature_name` beside the tensor, the tensor's brackets must be
  exactly those of a regular array of the signature's instance shape, every
  number must parse, and the values must be finite.
  """
  matches = list(_ROWS.finditer(body))
  if len(matches) != 1:
    return None
  m = matches[0]
  key = m.group(1).decode()
  rest = body[:m.start(2)] + b'0' + body[m.end(2):]
  try:
    obj = orjson.loads(rest) if orjson is not None else json.loads(rest)
  except ValueError:
    return None
  if not isinstance(obj, dict) or set(obj) - {key, 'signature_name'}:
    return None
  sig_name = obj.get('signature_name')
  if sig_name is not None and not isinstance(sig_name, str):
    return None
  input_specs = specs_for(sig_name)
  if len(input_specs) != 1:
    return None
  (name, spec), = input_specs.items()
  if (spec.dtype != 'float32' or spec.shape is None or
      any(d is None for d in spec.shape[1:])):
    return None
  text = m.group(2)
  per_instance = int(np.prod(spec.shape[1:], dtype=np.int64))
  with warnings.catch_warnings():
    # junk between numbers: older numpy warns and stops, newer raises
    warnings.simplefilter('ignore', DeprecationWarning)
    try:
      values = np.fromstring(text.translate(_TO_SPACES), dtype=np.float64,
                             sep=' ')
    except ValueError:
      return None
  n, extra = divmod(len(values), per_instance)
  if extra or not n or text.translate(None, _NUMBER_CHARS) != _skeleton(
      (n, *spec.shape[1:])):
    return None
  with np.errstate(over='ignore'):
    arr = values.astype(np.float32).reshape(n, *spec.shape[1:])
  if not np.isfinite(arr).all():
    return None  # the general path says which (NaN, or float32 overflow)
  return {name: arr}, key == 'instances', sig_name


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
    if len(names) == 1 and (not isinstance(rows[0], dict) or
                            _is_b64(rows[0])):
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
  """Output arrays -> the response object (see the module docstring).

  The arrays stay arrays (`encode_json` writes them without a Python object
  per number); only row format with several outputs makes one small dict
  per instance.
  """
  if row_format:
    if len(outputs) == 1:
      (value,) = outputs.values()
      return {'predictions': value}
    n = len(next(iter(outputs.values())))
    return {'predictions': [{k: v[i] for k, v in outputs.items()}
                            for i in range(n)]}
  if len(outputs) == 1:
    (value,) = outputs.values()
    return {'outputs': value}
  return {'outputs': dict(outputs)}


def _plain(obj):
  """json's fallback for numpy values."""
  if isinstance(obj, (np.ndarray, np.generic)):
    return obj.tolist()
  raise TypeError(f'{type(obj).__name__} is not JSON serializable')


def encode_json(obj: Any, finite: bool = True) -> bytes:
  """Compact JSON of objects holding numpy arrays; `finite=False` when
  values may hold NaN/Infinity, which orjson would write as null and TF
  Serving writes as tokens."""
  if orjson is not None and finite:
    try:
      return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except (TypeError, orjson.JSONEncodeError):
      pass  # dtypes orjson does not write (float16, ...)
  return json.dumps(obj, separators=(',', ':'), default=_plain).encode()


def all_finite(outputs: dict[str, np.ndarray]) -> bool:
  return all(v.dtype.kind != 'f' or np.isfinite(v).all()
             for v in outputs.values())
