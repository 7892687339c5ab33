"""TF Serving's gRPC API (`tensorflow.serving.PredictionService`, `ModelService`).

Served from the same `ModelServer` as REST: the same models and versions,
the same output defence, the same batching queue (one model call can hold
REST and gRPC requests together). Runs on the REST server's asyncio loop
(grpc.aio), so the model still runs in the server's one model thread.

    PredictionService.Predict            PredictRequest -> named outputs
    PredictionService.GetModelMetadata   metadata_field ["signature_def"]
    PredictionService.Classify           tf.Examples with the image as a
                                         float feature (see `_examples`)
    ModelService.GetModelStatus          versions, AVAILABLE

A stock client works unchanged (TF Serving's own example):

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = 'mnist'
    req.model_spec.signature_name = 'serving_default'
    req.inputs['images'].CopyFrom(tf.make_tensor_proto(x))
    probs = tf.make_ndarray(stub.Predict(req, 10.0).outputs['probabilities'])

Status codes: INVALID_ARGUMENT (wrong dtype, shape, NaN, unknown input or
output name, unknown signature), NOT_FOUND (unknown model or version),
RESOURCE_EXHAUSTED (a message over the size limit: grpc refuses it before
the handler runs), UNIMPLEMENTED (Regress, MultiInference, config reload),
INTERNAL (the model itself failed). Nothing a client sends stops the server.
"""

from __future__ import annotations

import functools
import logging

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from modelsteal.serving import access
from modelsteal.serving import tensors
from modelsteal.serving.codec import check_input
from modelsteal.serving.codec import dtype_enum
from modelsteal.serving.codec import numpy_dtype
from modelsteal.serving.codec import ServingError
from modelsteal.serving.registry import LABEL
from modelsteal.serving.registry import PROBS

log = logging.getLogger('modelsteal.serving')

_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT,
          401: grpc.StatusCode.UNAUTHENTICATED,
          403: grpc.StatusCode.PERMISSION_DENIED,
          404: grpc.StatusCode.NOT_FOUND,
          413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          429: grpc.StatusCode.RESOURCE_EXHAUSTED,
          501: grpc.StatusCode.UNIMPLEMENTED}


def _client(server, context):
  """The guard's client for the call's `authorization: Bearer KEY` or
  `x-api-key` metadata (None when the server has no guard)."""
  if server.guard is None:
    return None
  meta = {}
  for k, v in context.invocation_metadata() or ():
    meta.setdefault(k.lower(), v)
  return server.authenticate(access.key_from_headers(meta.get))


def _rpc(method):
  """ServingError -> its status code; a bug -> INTERNAL, logged."""

  @functools.wraps(method)
  async def wrapper(self, request, context):
    try:
      return await method(self, request, context)
    except ServingError as e:
      self.server.count_error(request.model_spec.name)
      retry = access.retry_after_header(getattr(e, 'retry_after_s', None))
      if retry is not None:
        context.set_trailing_metadata((('retry-after', retry),))
      await context.abort(_CODES.get(e.status, grpc.StatusCode.INTERNAL),
                          e.message)
    except Exception as e:  # pylint: disable=broad-except
      if isinstance(e, grpc.aio.AbortError):
        raise
      log.exception('internal error in %s', method.__name__)
      self.server.count_error(request.model_spec.name)
      await context.abort(grpc.StatusCode.INTERNAL,
                          f'internal error: {type(e).__name__}: {e}')
  return wrapper


def _resolve(server, spec):
  """ModelSpec -> (servable, version), or NOT_FOUND."""
  if spec.WhichOneof('version_choice') == 'version_label':
    raise ServingError(404, f'Servable not found for request: '
                       f'Specific({spec.name}, label {spec.version_label!r}): '
                       'this server has no version labels; give a version '
                       'number or none.')
  number = spec.version.value if spec.HasField('version') else None
  servable = server.servable(spec.name, number)
  return servable, servable.version(number)


def _echo_spec(out_spec, servable, version, sig) -> None:
  out_spec.name = servable.name
  out_spec.version.value = version.number
  out_spec.signature_name = sig.name


def _tensor_info(spec) -> meta_graph_pb2.TensorInfo:
  info = meta_graph_pb2.TensorInfo(
      name=spec.name, dtype=types_pb2.DataType.Value(dtype_enum(spec.dtype)))
  if spec.shape is None:
    info.tensor_shape.unknown_rank = True
  else:
    for d in spec.shape:
      info.tensor_shape.dim.add(size=-1 if d is None else int(d))
  return info


def signature_def(sig) -> meta_graph_pb2.SignatureDef:
  out = meta_graph_pb2.SignatureDef(method_name='tensorflow/serving/predict')
  for k, v in sig.inputs.items():
    out.inputs[k].CopyFrom(_tensor_info(v))
  for k, v in sig.outputs.items():
    out.outputs[k].CopyFrom(_tensor_info(v))
  return out


def _examples(request, sig) -> dict[str, np.ndarray]:
  """A ClassificationRequest's tf.Examples -> the signature's one input.

  A predict signature "allows" Classify when it takes one numeric tensor:
  each Example carries that tensor's values flattened in a float_list (or
  int64_list) feature named like the input, or as its only feature.
  """
  kind = request.input.WhichOneof('kind')
  if kind is None:
    raise ServingError(400, 'Classify needs input.example_list with one '
                       'tf.Example per instance.')
  examples = getattr(request.input, kind).examples
  if not examples:
    raise ServingError(400, 'input.example_list is empty; send at least one '
                       'tf.Example.')
  if len(sig.inputs) != 1:
    raise ServingError(400, f'signature {sig.name!r} takes inputs '
                       f'{sorted(sig.inputs)}; Classify serves signatures of '
                       'one input.')
  (name, spec), = sig.inputs.items()
  if spec.shape is None or any(d is None for d in spec.shape[1:]):
    raise ServingError(400, f'input "{name}" has no fixed instance shape, so '
                       'flat Example features cannot be reshaped to it.')
  dtype = numpy_dtype(spec.dtype)
  rows = []
  for i, ex in enumerate(examples):
    feats = ex.features.feature
    key = name if name in feats else (next(iter(feats)) if len(feats) == 1
                                      else None)
    if key is None:
      raise ServingError(400, f'example {i} has features {sorted(feats)}; '
                         f'it needs "{name}" (the image, flattened).')
    f = feats[key]
    which = f.WhichOneof('kind')
    if which not in ('float_list', 'int64_list'):
      raise ServingError(400, f'example {i}: feature "{key}" must be a '
                         f'float_list or int64_list, got {which}.')
    rows.append(np.asarray(getattr(f, which).value, dtype))
  size = int(np.prod(spec.shape[1:]))
  if any(len(r) != size for r in rows):
    bad = next(i for i, r in enumerate(rows) if len(r) != size)
    raise ServingError(400, f'example {bad} has {len(rows[bad])} values; '
                       f'input "{name}" needs {size} per instance '
                       f'{tuple(spec.shape[1:])}.')
  arr = np.stack(rows).reshape(len(rows), *spec.shape[1:])
  check_input(arr, name, spec)
  return {name: arr}


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """PredictionService over a `ModelServer` (see the module docstring)."""

  def __init__(self, server):
    self.server = server

  @_rpc
  async def Predict(self, request, context):
    client = _client(self.server, context)
    servable, version = _resolve(self.server, request.model_spec)
    sig = version.signature(request.model_spec.signature_name or None)
    inputs = tensors.to_inputs(request.inputs, sig.inputs)
    wanted = list(request.output_filter)
    unknown = sorted(set(wanted) - set(sig.outputs))
    if unknown:
      raise ServingError(400, f'output_filter names {unknown}; signature '
                         f'{sig.name!r} has outputs {sorted(sig.outputs)}.')
    out = await self.server.answer(client, servable, version, sig, inputs,
                                   'grpc')
    resp = predict_pb2.PredictResponse()
    _echo_spec(resp.model_spec, servable, version, sig)
    for k in wanted or out:
      tensors.fill_tensor(resp.outputs[k], out[k])
    return resp

  @_rpc
  async def GetModelMetadata(self, request, context):
    _client(self.server, context)
    fields = list(request.metadata_field)
    if fields != ['signature_def']:
      raise ServingError(400, 'metadata_field must be ["signature_def"] (the '
                         f'only metadata served), got {fields}.')
    servable, version = _resolve(self.server, request.model_spec)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    for k, s in version.signatures.items():
      sigs.signature_def[k].CopyFrom(signature_def(s))
    resp = get_model_metadata_pb2.GetModelMetadataResponse()
    resp.model_spec.name = servable.name
    resp.model_spec.version.value = version.number
    resp.metadata['signature_def'].Pack(sigs)
    return resp

  @_rpc
  async def Classify(self, request, context):
    client = _client(self.server, context)
    servable, version = _resolve(self.server, request.model_spec)
    sig = version.signature(request.model_spec.signature_name or None)
    if PROBS not in sig.outputs and LABEL not in sig.outputs:
      raise ServingError(400, f'signature {sig.name!r} has outputs '
                         f'{sorted(sig.outputs)}: no "{PROBS}" or "{LABEL}" '
                         'to classify with.')
    inputs = _examples(request, sig)
    out = await self.server.answer(client, servable, version, sig, inputs,
                                   'grpc')
    resp = classification_pb2.ClassificationResponse()
    _echo_spec(resp.model_spec, servable, version, sig)
    if PROBS in out:
      for row in np.asarray(out[PROBS], np.float32):
        c = resp.result.classifications.add()
        for k, p in enumerate(row.tolist()):
          c.classes.add(label=str(k), score=p)
    else:  # label-only: one class per instance, no score revealed
      for label in np.asarray(out[LABEL]).reshape(-1).tolist():
        resp.result.classifications.add().classes.add(label=str(label))
    return resp

  @_rpc
  async def Regress(self, request, context):
    raise ServingError(501, 'Regress is not served: these models are '
                       'classifiers; use Predict or Classify.')

  @_rpc
  async def MultiInference(self, request, context):
    raise ServingError(501, 'MultiInference is not served; use Predict or '
                       'Classify.')


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """ModelService.GetModelStatus over a `ModelServer`."""

  def __init__(self, server):
    self.server = server

  @_rpc
  async def GetModelStatus(self, request, context):
    _client(self.server, context)
    spec = request.model_spec
    if spec.WhichOneof('version_choice') == 'version_label':
      _resolve(self.server, spec)  # raises NOT_FOUND
    servable = self.server.servable(spec.name)
    numbers = ([servable.version(spec.version.value).number]
               if spec.HasField('version') else
               sorted(servable.versions, reverse=True))
    resp = get_model_status_pb2.GetModelStatusResponse()
    for n in numbers:
      resp.model_version_status.add(
          version=n, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    return resp

  async def HandleReloadConfigRequest(self, request, context):
    await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                        'config reloads are not served; restart the server '
                        'with the new --model_dir.')


class GrpcEndpoint:
  """The gRPC server of a `ModelServer`, started on the running loop.

  Args:
    server: the `ModelServer` whose models, defence and batching it uses.
    host, port: where to listen (port 0: any free port; `port` then says).
    max_message_bytes: larger requests get RESOURCE_EXHAUSTED.
  """

  def __init__(self, server, host: str = '127.0.0.1', port: int = 8500,
               max_message_bytes: int = 32 << 20):
    self.server = server
    self.host = host
    self.port = port
    self.max_message_bytes = max_message_bytes
    self._grpc = None

  @property
  def address(self) -> str:
    return f'{self.host}:{self.port}'

  async def start(self) -> None:
    self._grpc = grpc.aio.server(options=[
        ('grpc.max_receive_message_length', self.max_message_bytes),
        ('grpc.max_send_message_length', -1),
        # Two servers must not share a port silently.
        ('grpc.so_reuseport', 0),
    ])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(self.server), self._grpc)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(self.server), self._grpc)
    try:
      bound = self._grpc.add_insecure_port(f'{self.host}:{self.port}')
    except RuntimeError as e:  # grpc raises for a port in use
      bound, why = 0, str(e)
    else:
      why = 'address in use or not available'
    if not bound:
      self._grpc = None
      raise OSError(f'cannot listen for gRPC on {self.host}:{self.port} '
                    f'({why}); pick another --grpc_port (0 picks a free one, '
                    '-1 turns gRPC off).')
    self.port = bound
    await self._grpc.start()

  async def stop(self, grace_s: float = 1.0) -> None:
    if self._grpc is not None:
      await self._grpc.stop(grace_s)
      self._grpc = None
