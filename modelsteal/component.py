"""TFX-style components in a few hundred lines, without the TFX runtime.

A component is a top-level, keyword-only function whose arguments are
annotated as `InputArtifact[T]`, `OutputArtifact[T]` or `Parameter[T]`
(after tfx `dsl/component/experimental/decorators.py`):

    @component
    def train(*, examples: InputArtifact[Examples],
              model: OutputArtifact[Model], epochs: Parameter[int] = 3):
      ...

`train(...)` stays the plain function: a unit test calls it with artifacts
pointing at temporary directories. `train.run(workdir, examples=..., epochs=5)`
is the cached execution:

* the fingerprint hashes the component name and version, the parameters and
  the input artifacts' fingerprints;
* a finished run with that fingerprint is reused (`RunResult.reused`), so a
  victim is trained once and a query is never labeled twice;
* outputs are written under a temporary directory and renamed into place only
  when the function returned, together with `execution.json`; an interrupted
  or failed run therefore never looks finished;
* `scratch_dir()` gives the function a directory that survives an interrupted
  run (checkpoints for `keras.callbacks.BackupAndRestore`) and is removed on
  success.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
import typing
from typing import Any, Callable, Generic, TypeVar

from modelsteal import artifacts as artifacts_lib

T = TypeVar('T')


class _Marker:
  kind = ''

  def __init__(self, type_):
    self.type = type_

  def __repr__(self):
    return f'{type(self).__name__}[{getattr(self.type, "__name__", self.type)}]'


class _InputMarker(_Marker):
  kind = 'input'


class _OutputMarker(_Marker):
  kind = 'output'


class _ParameterMarker(_Marker):
  kind = 'parameter'


class InputArtifact(Generic[T]):
  """Annotation: an artifact this component reads."""

  def __class_getitem__(cls, item):
    return _InputMarker(item)


class OutputArtifact(Generic[T]):
  """Annotation: an artifact this component writes (its `uri` is created)."""

  def __class_getitem__(cls, item):
    return _OutputMarker(item)


class Parameter(Generic[T]):
  """Annotation: a JSON-serialisable value that is part of the fingerprint."""

  def __class_getitem__(cls, item):
    return _ParameterMarker(item)


@dataclasses.dataclass
class _Context:
  scratch_dir: str
  workdir: str


_CONTEXT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar(
    'modelsteal_component_context', default=None)


def scratch_dir() -> str:
  """A directory that survives an interrupted run of the current component.

  Outside `Component.run` (a direct call in a test) it is a fresh temporary
  directory.
  """
  ctx = _CONTEXT.get()
  if ctx is None:
    return tempfile.mkdtemp(prefix='modelsteal-scratch-')
  os.makedirs(ctx.scratch_dir, exist_ok=True)
  return ctx.scratch_dir


def workdir() -> str | None:
  """The workdir of the running component (None in a direct call)."""
  ctx = _CONTEXT.get()
  return ctx.workdir if ctx else None


@dataclasses.dataclass
class RunResult:
  """What `Component.run` returns."""
  component: str
  outputs: dict[str, artifacts_lib.Artifact]
  reused: bool
  duration_s: float
  execution_dir: str

  def __getitem__(self, name: str) -> artifacts_lib.Artifact:
    return self.outputs[name]


def _jsonable(value: Any) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return _jsonable(dataclasses.asdict(value))
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in sorted(value.items())}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (str, int, float, bool)) or value is None:
    return value
  if hasattr(value, 'item'):  # numpy scalar
    return value.item()
  raise TypeError(f'parameter value {value!r} of type {type(value).__name__} is '
                  'not JSON-serialisable; pass str, int, float, bool, lists, '
                  'dicts or dataclasses of those.')


def _package_version() -> str:
  from modelsteal import __version__  # pylint: disable=g-import-not-at-top
  return __version__


class Component:
  """A decorated component function. See the module docstring."""

  def __init__(self, fn: Callable[..., Any], version: str = '1',
               later: tuple[str, ...] = ()):
    self.fn = fn
    self.name = fn.__name__
    self.version = version
    self.later = tuple(later)
    self.__doc__ = fn.__doc__
    self.__wrapped__ = fn
    hints = typing.get_type_hints(fn)
    sig = inspect.signature(fn)
    self.inputs: dict[str, type] = {}
    self.outputs: dict[str, type] = {}
    self.parameters: dict[str, Any] = {}
    for pname, p in sig.parameters.items():
      if p.kind is not inspect.Parameter.KEYWORD_ONLY:
        raise TypeError(f'component {self.name}: argument {pname!r} must be '
                        'keyword-only (put a bare * first).')
      marker = hints.get(pname)
      if isinstance(marker, _InputMarker):
        self.inputs[pname] = marker.type
      elif isinstance(marker, _OutputMarker):
        self.outputs[pname] = marker.type
      elif isinstance(marker, _ParameterMarker):
        self.parameters[pname] = (None if p.default is inspect.Parameter.empty
                                  else p.default)
      else:
        raise TypeError(f'component {self.name}: argument {pname!r} needs an '
                        'InputArtifact[...], OutputArtifact[...] or '
                        'Parameter[...] annotation.')
    self._required_params = {
        n for n, p in sig.parameters.items()
        if n in self.parameters and p.default is inspect.Parameter.empty}

  def __call__(self, **kwargs):
    return self.fn(**kwargs)

  def fingerprint(self, inputs: dict[str, artifacts_lib.Artifact],
                  params: dict[str, Any]) -> str:
    # Parameters added later are left out while at their defaults, so runs
    # cached before they existed keep their fingerprints.
    params = {k: v for k, v in params.items()
              if not (k in self.later and v == self.parameters.get(k))}
    record = {
        'component': self.name,
        'version': self.version,
        'parameters': _jsonable(params),
        'inputs': {k: v.fingerprint for k, v in sorted(inputs.items())},
    }
    blob = json.dumps(record, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()

  def _split_kwargs(self, kwargs):
    inputs, params = {}, {}
    for k, v in kwargs.items():
      if k in self.inputs:
        if not isinstance(v, artifacts_lib.Artifact):
          raise TypeError(f'{self.name}: input {k!r} must be an artifact, got '
                          f'{type(v).__name__}.')
        inputs[k] = v
      elif k in self.parameters:
        params[k] = v
      else:
        raise TypeError(f'{self.name}: unknown argument {k!r}; it takes inputs '
                        f'{sorted(self.inputs)} and parameters '
                        f'{sorted(self.parameters)}.')
    missing = (set(self.inputs) - set(inputs)) | (self._required_params -
                                                  set(params))
    if missing:
      raise TypeError(f'{self.name}: missing arguments {sorted(missing)}.')
    full_params = {k: params.get(k, d) for k, d in self.parameters.items()}
    return inputs, full_params

  def run(self, workdir: str, **kwargs) -> RunResult:
    """Runs the component under `workdir`, or reuses a finished identical run."""
    from modelsteal import distribute  # pylint: disable=g-import-not-at-top
    inputs, params = self._split_kwargs(kwargs)
    fp = self.fingerprint(inputs, params)
    # A non-chief worker of a multi-worker run writes to a private directory.
    workdir = distribute.worker_workdir(workdir)
    base = os.path.join(workdir, self.name)
    final = os.path.join(base, fp[:16])
    record_path = os.path.join(final, 'execution.json')
    reused = None
    if os.path.exists(record_path):
      try:
        with open(record_path) as f:
          record = json.load(f)
        if record.get('status') == 'complete':
          outputs = {n: t.load(os.path.join(final, n))
                     for n, t in self.outputs.items()}
          reused = RunResult(self.name, outputs, True,
                             float(record.get('duration_s', 0.0)), final)
      except (ValueError, OSError, artifacts_lib.ArtifactError) as e:
        print(f'[modelsteal] {final}: unreadable earlier run ({e}); running '
              'again.')
    # Workers reuse a step only together: one training alone would leave the
    # others waiting for its collectives.
    if distribute.all_agree(reused is not None):
      return reused
    if reused is not None:
      print(f'[modelsteal] {self.name}: another worker has no finished run of '
            'this step; running it again on every worker.', flush=True)
    os.makedirs(base, exist_ok=True)
    tmp = os.path.join(base, f'.tmp-{fp[:16]}-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    outputs = {}
    for n, t in self.outputs.items():
      outputs[n] = t(uri=os.path.join(tmp, n),
                     fingerprint=hashlib.sha256(f'{fp}/{n}'.encode()).hexdigest())
      os.makedirs(outputs[n].uri)
    scratch = os.path.join(base, f'.scratch-{fp[:16]}')
    token = _CONTEXT.set(_Context(scratch_dir=scratch, workdir=workdir))
    started = time.time()
    try:
      self.fn(**inputs, **outputs, **params)
      for a in outputs.values():
        a.save_properties()
      duration = time.time() - started
      record = {
          'component': self.name,
          'version': self.version,
          'fingerprint': fp,
          'status': 'complete',
          'package_version': _package_version(),
          'started': time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(started)),
          'duration_s': round(duration, 3),
          'inputs': {k: {'uri': v.uri, 'fingerprint': v.fingerprint}
                     for k, v in inputs.items()},
          'parameters': _jsonable(params),
          'outputs': {k: os.path.join(final, k) for k in outputs},
      }
      with open(os.path.join(tmp, 'execution.json'), 'w') as f:
        json.dump(record, f, indent=1)
      if os.path.exists(final):  # a stale directory without a finished record
        shutil.rmtree(final)
      os.rename(tmp, final)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    finally:
      _CONTEXT.reset(token)
    shutil.rmtree(scratch, ignore_errors=True)
    for n, a in outputs.items():
      a.uri = os.path.join(final, n)
    return RunResult(self.name, outputs, False, duration, final)


def component(fn: Callable[..., Any] | None = None, *, version: str = '1',
              later: tuple[str, ...] = ()):
  """Decorator: turns a keyword-only function into a `Component`.

  Args:
    fn: the function.
    version: bump it when the function's behaviour changes, so earlier cached
      runs are not reused.
    later: parameters added after runs were cached whose default keeps the
      old behaviour: left out of the fingerprint while at their default.
  """
  if fn is None:
    return lambda f: Component(f, version=version, later=later)
  return Component(fn, version=version, later=later)
