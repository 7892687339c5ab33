"""A victim behind TF Serving's gRPC `PredictionService`.

    ref = victim_ref_from_address('127.0.0.1:8500/mnist', num_classes=10)
    oracle = make_oracle(ref, output='label', budget=10000, cache_dir=...)

The address is `HOST:PORT/NAME`, or `HOST:PORT/NAME/versions/N` for one
version. `GrpcOracle` sends `PredictRequest`s of `batch_size` images as
`tensor_content` and reads `probabilities` where the server reveals them,
else `label` (one-hot over `num_classes`). Budget accounting and the answer
cache are the base `Oracle`'s: an interrupted run resumes without paying an
answered query again.

Transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, INTERNAL,
UNKNOWN, and RESOURCE_EXHAUSTED from a quota) are retried with exponential
backoff (`modelsteal.retry`); other codes raise `OracleError` at once,
quoting the server; a message over the server's size limit halves the batch
for good and tries again.

The fingerprint hashes the address and the served signatures and version, so
a new version at the same address is a new victim.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import literal
from modelsteal.oracle.base import OracleError
from modelsteal.oracle.remote import answer_scores
from modelsteal.oracle.remote import api_key
from modelsteal.oracle.remote import class_count
from modelsteal.oracle.remote import RemoteOracle
from modelsteal.oracle.remote import RequestTooLargeError
from modelsteal.oracle.remote import unauthorized_hint
from modelsteal.oracle.rest import describe_endpoint
from modelsteal.retry import call_with_retries
from modelsteal.retry import RetriesExhausted
from modelsteal.retry import RetryPolicy
from modelsteal.retry import Transient

_ADDRESS = re.compile(r'^(?P<target>[^/\s]+:\d+)/(?P<name>[^/\s]+)'
                      r'(/versions/(?P<version>\d+))?/?$')
_MAX_MESSAGE = 256 << 20


class _TooLarge(RequestTooLargeError):
  """The server refused a request as over its message size limit."""


def parse_address(address: str) -> tuple[str, str, int | None]:
  """'HOST:PORT/NAME[/versions/N]' -> (target, name, version or None)."""
  m = _ADDRESS.match(address.strip()) if isinstance(address, str) else None
  if not m:
    raise ConfigError(
        'victim_grpc', f'{literal(repr(address))} is not a gRPC model '
        'address; expected HOST:PORT/NAME (optionally /versions/N), e.g. '
        '127.0.0.1:8500/mnist.')
  v = m.group('version')
  return m.group('target'), m.group('name'), None if v is None else int(v)


def _codes():
  import grpc  # pylint: disable=g-import-not-at-top
  c = grpc.StatusCode
  return c, frozenset({c.UNAVAILABLE, c.DEADLINE_EXCEEDED, c.ABORTED,
                       c.INTERNAL, c.UNKNOWN, c.RESOURCE_EXHAUSTED})


class _Channel:
  """A channel and stub with deadlines, retries and backoff."""

  def __init__(self, address: str, timeout_s: float = 60.0, retries: int = 4,
               backoff_s: float = 0.5, max_backoff_s: float = 20.0):
    import grpc  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
    self.address = address
    self.target, self.name, self.version = parse_address(address)
    self.timeout_s = timeout_s
    self.policy = RetryPolicy(retries, backoff_s, max_backoff_s)
    self.channel = grpc.insecure_channel(self.target, options=[
        ('grpc.max_send_message_length', _MAX_MESSAGE),
        ('grpc.max_receive_message_length', _MAX_MESSAGE)])
    self.stub = prediction_service_pb2_grpc.PredictionServiceStub(
        self.channel)
    self.attempts = 0  # RPCs made, retries included

  def spec(self, msg) -> None:
    msg.model_spec.name = self.name
    if self.version is not None:
      msg.model_spec.version.value = self.version

  def _attempt(self, method: str, request):
    import grpc  # pylint: disable=g-import-not-at-top
    codes, transient = _codes()
    self.attempts += 1
    try:
      key = api_key()
      return getattr(self.stub, method)(
          request, timeout=self.timeout_s,
          metadata=(('authorization', f'Bearer {key}'),) if key else None)
    except grpc.RpcError as e:
      code, details = e.code(), (e.details() or '')[:300]
      if code == codes.RESOURCE_EXHAUSTED and 'larger than max' in details:
        raise _TooLarge(f'{self.address} refused the request as too large '
                        f'({details})') from None
      if code in transient:
        raise Transient(f'{code.name}: {details}') from None
      raise OracleError(f'{self.address} refused the request: {code.name}: '
                        f'{literal(details)}'
                        + (unauthorized_hint()
                           if code == codes.UNAUTHENTICATED else '')) from None

  def call(self, method: str, request):
    try:
      return call_with_retries(lambda: self._attempt(method, request),
                               self.policy)
    except RetriesExhausted as e:
      raise OracleError(
          f'the victim endpoint {literal(self.address)} is unreachable or '
          f'failing after {e.attempts} attempts ({literal(e.last)}). Is the '
          'server running (python -m pipelines.serve --model_dir=...) with '
          'gRPC on that port? Rerun to resume: answers received so far are '
          'cached.') from None

  def metadata(self) -> dict:
    """GetModelMetadata as the REST metadata JSON (for `describe_endpoint`)."""
    from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    self.spec(req)
    req.metadata_field.append('signature_def')
    resp = self.call('GetModelMetadata', req)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    if ('signature_def' not in resp.metadata or
        not resp.metadata['signature_def'].Unpack(sigs) or
        not sigs.signature_def):
      raise OracleError(f'{self.address} answered metadata without '
                        'signatures; is this a TF Serving model?')
    return {'model_spec': {'name': resp.model_spec.name,
                           'version': str(resp.model_spec.version.value)},
            'metadata': {'signature_def': json_format.MessageToDict(
                sigs, preserving_proto_field_name=True)}}

  def close(self) -> None:
    self.channel.close()


def victim_ref_from_address(address: str, num_classes: int | None = None,
                            signature_name: str | None = None,
                            timeout_s: float = 30.0) -> dict:
  """A victim reference for a gRPC endpoint (asks it for its metadata).

  Raises:
    ConfigError: a malformed address, or a class count the endpoint
      contradicts.
    OracleError: the endpoint is unreachable or not a TF Serving model.
  """
  import json  # pylint: disable=g-import-not-at-top
  ch = _Channel(address, timeout_s=timeout_s, retries=2)
  try:
    md = ch.metadata()
  finally:
    ch.close()
  desc = describe_endpoint(md, signature_name)
  k = class_count(address, desc['num_classes'], num_classes)
  canon = json.dumps(md, sort_keys=True, separators=(',', ':'))
  fp = hashlib.sha256(f'grpc|{address}|{canon}'.encode()).hexdigest()
  return {'kind': 'grpc', 'address': address.strip().rstrip('/'),
          'fingerprint': fp, 'version': desc['version'],
          'num_classes': k,
          'signature_name': desc['signature_name'],
          'input_shape': desc['input_shape']}


class GrpcOracle(RemoteOracle):
  """An oracle over gRPC; see the module docstring.

  Args:
    address: `HOST:PORT/NAME[/versions/N]`.
    identity: the victim fingerprint (names the answer cache).
    num_classes: classes, for label-only answers (else from metadata).
    signature_name: signature to call (default: serving_default).
    batch_size: images per request.
    timeout_s: deadline per RPC.
    retries, backoff_s: as `modelsteal.retry.RetryPolicy`.
    **kwargs: `Oracle`'s (output, budget, cache_dir, seed).
  """

  def __init__(self, address: str, identity: str | None = None,
               num_classes: int | None = None,
               signature_name: str | None = None, batch_size: int = 256,
               timeout_s: float = 60.0, retries: int = 4,
               backoff_s: float = 0.5, **kwargs):
    parse_address(address)  # a bad address fails here, not on first use
    self.address = address.strip().rstrip('/')
    self._settings = dict(timeout_s=timeout_s, retries=retries,
                          backoff_s=backoff_s)
    self._ch: _Channel | None = None
    self._desc = None
    super().__init__(self.address, identity, num_classes, signature_name,
                     batch_size, **kwargs)

  @property
  def rpc(self) -> _Channel:
    """The channel, opened lazily: a fully cached run needs no server."""
    if self._ch is None:
      self._ch = _Channel(self.address, **self._settings)
    return self._ch

  def _describe(self) -> dict:
    if self._desc is None:
      self._desc = describe_endpoint(self.rpc.metadata(), self.signature_name)
      self.signature_name = self._desc['signature_name']
      if self.num_classes is None:
        self.num_classes = self._desc['num_classes']
    return self._desc

  def _input_shape(self) -> list[int] | None:
    return self._describe()['input_shape']

  def _request(self, chunk: np.ndarray):
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
    from modelsteal.serving.tensors import fill_tensor  # pylint: disable=g-import-not-at-top
    req = predict_pb2.PredictRequest()
    self.rpc.spec(req)
    req.model_spec.signature_name = self.signature_name
    fill_tensor(req.inputs[self._desc['input_name']],
                np.ascontiguousarray(chunk, np.float32))
    return self.rpc.call('Predict', req)

  def _parse(self, resp, n: int) -> np.ndarray:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    def bad(why):
      return OracleError(f'{self.address} answered something that is not a '
                         f'prediction ({why}).')

    outs = resp.outputs
    key = next((k for k in ('probabilities', 'label') if k in outs), None)
    if key is None:
      raise OracleError(f'{self.address} answered outputs {sorted(outs)}: '
                        'no "probabilities" or "label".')
    arr = tf.make_ndarray(outs[key])
    return answer_scores(arr, n, self.num_classes, self.address, bad,
                         labels=key == 'label')
