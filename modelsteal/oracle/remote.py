"""What the REST and gRPC oracles share: the class count, batching, the
input shape check, halving the batch when a request is too large, and
reading an answer.

A subclass names its endpoint (`endpoint`, quoted in every error), and
implements `_input_shape` (the endpoint's image shape, from its metadata),
`_request(chunk)` (one request; raises `RequestTooLargeError` when the server
refuses it as too large) and `_parse(answer, n)` (usually through
`answer_scores`).
"""

from __future__ import annotations

import abc
import os
from typing import Callable

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import literal
from modelsteal.oracle.base import Oracle
from modelsteal.oracle.base import OracleError


class RequestTooLargeError(OracleError):
  """The endpoint refused a request as over its size limit."""


def class_count(endpoint: str, answered: int | None,
                expected: int | None) -> int | None:
  """A victim's class count: what its metadata says (`answered`), else the
  dataset's (`expected`); ConfigError where the two differ."""
  if expected is not None and answered is not None and answered != expected:
    raise ConfigError('dataset', f': {literal(endpoint)} answers {answered} '
                      f'classes, the dataset has {expected}; pick the '
                      'dataset the victim classifies.')
  return answered or expected


def answer_scores(arr: np.ndarray, n: int, num_classes: int | None,
                  endpoint: str, bad: Callable[[str], OracleError],
                  labels: bool | None = None) -> np.ndarray:
  """An endpoint's answer to n queries -> (n, K) float32 scores.

  Args:
    arr: the answer as numbers: (n, K) probabilities, or (n,) class indices
      (also (n, 1)).
    n: the number of queries asked.
    num_classes: K, for label answers (one-hot rows over K) and checked
      against probabilities; None when the endpoint does not say.
    endpoint: names the endpoint in errors.
    bad: why -> the OracleError for an answer that is not a prediction.
    labels: whether arr holds class indices; None: a 1-D (or one-column)
      answer does.

  Raises:
    OracleError: not a prediction, or labels with no class count.
  """
  if labels is None:
    if arr.ndim == 2 and arr.shape[1] == 1:
      arr = arr[:, 0]
    labels = arr.ndim == 1
  elif labels:
    arr = arr.reshape(-1)
  if not np.isfinite(arr).all():
    raise bad('NaN or Infinity')
  if labels:
    if len(arr) != n:
      raise bad(f'{len(arr)} labels for {n} queries')
    if not np.all(arr == np.round(arr)) or arr.min() < 0:
      raise bad('1-D answers that are not class indices')
    k = num_classes
    if k is None:
      raise OracleError(f'{endpoint} answers labels only and its metadata '
                        'does not say how many classes there are; pass '
                        'num_classes (the pipeline passes the dataset\'s).')
    if arr.max() >= k:
      raise bad(f'label {int(arr.max())} out of range for {k} classes')
    one_hot = np.zeros((n, k), np.float32)
    one_hot[np.arange(n), arr.astype(np.int64)] = 1.0
    return one_hot
  if arr.ndim != 2 or arr.shape[0] != n:
    raise bad(f'answers of shape {arr.shape}' +
              ('' if arr.shape[:1] == (n,) else f' for {n} queries'))
  if num_classes is not None and arr.shape[1] != num_classes:
    raise bad(f'{arr.shape[1]} scores per instance, expected {num_classes}')
  return arr.astype(np.float32)


class RemoteOracle(Oracle):
  """An oracle over the network; see the module docstring.

  Args:
    endpoint: the URL or address (names the endpoint in errors).
    identity: the victim fingerprint (names the answer cache); default
      `endpoint`.
    num_classes: classes, for label-only answers (else from metadata).
    signature_name: signature to call (default: serving_default).
    batch_size: images per request; halves for good on a request the
      server refuses as too large.
    **kwargs: `Oracle`'s (output, budget, cache_dir, seed).
  """

  def __init__(self, endpoint: str, identity: str | None,
               num_classes: int | None, signature_name: str | None,
               batch_size: int, **kwargs):
    self.endpoint = endpoint
    self._identity = identity or endpoint
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    self.batch_size = batch_size
    self.num_classes = num_classes
    self.signature_name = signature_name
    self.requests_sent = 0
    super().__init__(**kwargs)

  @property
  def identity(self) -> str:
    return self._identity

  @abc.abstractmethod
  def _input_shape(self) -> list[int] | None:
    """The image shape the endpoint takes (-1: any), None if unknown."""

  @abc.abstractmethod
  def _request(self, chunk: np.ndarray):
    """Sends one request; raises RequestTooLargeError if refused as such."""

  @abc.abstractmethod
  def _parse(self, answer, n: int) -> np.ndarray:
    """The answer to one request of n queries -> (n, K) float32."""

  def _ask(self, x: np.ndarray) -> np.ndarray:
    shape = self._input_shape()
    if shape is not None and (len(shape) != x.ndim - 1 or any(
        d not in (-1, g) for d, g in zip(shape, x.shape[1:]))):
      raise OracleError(f'{self.endpoint} takes images of shape '
                        f'{tuple(shape)}, the queries have shape '
                        f'{x.shape[1:]}; pick the dataset the victim '
                        'classifies.')
    out, i = [], 0
    while i < len(x):
      chunk = x[i:i + self.batch_size]
      out.append(self._send(chunk))
      i += len(chunk)
    return np.concatenate(out)

  def _send(self, chunk: np.ndarray) -> np.ndarray:
    try:
      answer = self._request(chunk)
    except RequestTooLargeError as e:
      if len(chunk) == 1:
        raise OracleError(f'{e}; even a single query is too large for this '
                          'endpoint.') from None
      # The server's size limit is below our batch: halve it, for good.
      half = len(chunk) // 2
      self.batch_size = min(self.batch_size, half)
      return np.concatenate([self._send(chunk[:half]),
                             self._send(chunk[half:])])
    self.requests_sent += 1
    return self._parse(answer, len(chunk))


API_KEY_ENV = 'MODELSTEAL_API_KEY'


def api_key() -> str | None:
  """The key a served victim asks for (`pipelines.serve --api_keys`), from
  the environment: a flag would put it in process lists and run records."""
  key = os.environ.get(API_KEY_ENV, '').strip()
  return key or None


def unauthorized_hint() -> str:
  return (f' The endpoint wants an API key: set {API_KEY_ENV}.'
          if api_key() is None else
          f' Check the key in {API_KEY_ENV}.')
