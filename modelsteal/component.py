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

* the fingerprint hashes the component name, the parameters, the input
  artifacts' fingerprints, and the code that computes: the source of the
  component's module and of every module of this package it imports,
  transitively (`code_fingerprint`), the package version and the optional
  manual `version`;
* a finished run with that fingerprint is reused (`RunResult.reused`), so a
  victim is trained once and a query is never labeled twice;
* a finished run with the same parameters and inputs made by other code (an
  upgrade, an edit) is stale: one line names its directory, it stays on disk
  untouched, and the step runs again into a directory of its own;
* `set_rerun` (or `MODELSTEAL_RERUN=train_model,label_queries`, or `all`)
  forces steps to run again; the earlier run is kept beside the new one;
* outputs are written under a temporary directory and renamed into place only
  when the function returned, together with `execution.json`; an interrupted
  or failed run therefore never looks finished;
* `scratch_dir()` gives the function a directory that survives an interrupted
  run (checkpoints for `keras.callbacks.BackupAndRestore`) and is removed on
  success.
"""

from __future__ import annotations

import ast
import contextvars
import dataclasses
import hashlib
import inspect
import json
import marshal
import os
import shutil
import sys
import tempfile
import textwrap
import time
import typing
from typing import Any, Callable, Generic, Iterable, TypeVar

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
  # A finished run with the same parameters and inputs made by other code
  # (kept on disk, not reused), or None.
  stale_dir: str | None = None

  def __getitem__(self, name: str) -> artifacts_lib.Artifact:
    return self.outputs[name]


def _jsonable(value: Any) -> Any:
  if hasattr(value, 'as_param'):  # a typed reference (victims.VictimRef)
    return _jsonable(value.as_param())
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


def _library_versions() -> dict[str, str]:
  """Versions of the numerical libraries loaded, for the record only."""
  return {name: str(getattr(sys.modules[name], '__version__', '?'))
          for name in ('numpy', 'tensorflow', 'keras', 'jax', 'neural_tangents')
          if name in sys.modules}


# Code fingerprints ---------------------------------------------------------
#
# A run is reused only if it was made by the same code: the fingerprint holds
# a digest over the source of the component's module and of every module of
# this package (and of the component's own package) that it imports,
# transitively, found by a static scan of `import` statements (lazy imports
# inside functions included). The source is hashed as its syntax tree without
# docstrings, so an edited comment or docstring reruns nothing, while any
# edited statement does. This module (the runner) is left out: it decides
# where results go, not what they are. See `Component.code_fingerprint`.

_RUNNER_MODULES = frozenset({'modelsteal.component', 'modelsteal.errors'})
# Before this time every file on disk is the code the process runs; a file
# changed later may differ from what was imported.
_STARTED_NS = time.time_ns()
# file path -> os.stat at the time a component in it was defined (a module
# written after start, as in a test, is trusted while it stays so).
_DEFINED_STAT: dict[str, tuple[int, int]] = {}
# sha256 of a file's bytes + module name -> `_parse_source`'s answer
_SOURCE_CACHE: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {}
_PROCESS_NONCE = os.urandom(8).hex()
_WARNED_UNVERIFIED: set[str] = set()


@dataclasses.dataclass(frozen=True)
class CodeFingerprint:
  """The code a component's runs depend on.

  Attributes:
    digest: sha256 over `modules` (and the Python version).
    modules: module name -> sha256 of its source (docstrings and comments
      left out), for every module scanned.
    unverified: files changed on disk after this process started (or
      unreadable): the code that runs may not be what is on disk, so
      `digest` is unique to this process and such runs are never reused by
      another.
  """
  digest: str
  modules: dict[str, str]
  unverified: tuple[str, ...] = ()


def _strip_docstrings(tree: ast.AST) -> ast.AST:
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                         ast.AsyncFunctionDef)) and node.body:
      first = node.body[0]
      if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
          and isinstance(first.value.value, str)):
        node.body = node.body[1:]  # only dumped, never compiled
  return tree


def _parse_source(source: bytes, module: str, is_package: bool, filename: str
                  ) -> tuple[str, tuple[tuple[str, ...], ...]]:
  """(digest, imports) of one module's source.

  Each import is a tuple of candidate module names, the first that is a
  module being the one imported.
  """
  key = hashlib.sha256(source).hexdigest()
  hit = _SOURCE_CACHE.get(key + module)
  if hit is not None:
    return hit
  tree = ast.parse(source, filename=filename)
  package = module if is_package else module.rpartition('.')[0]
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        # `import p.q.m` runs p.q.m and p.q (the top package's registry
        # only where the code names it alone: `import p`).
        parts = alias.name.split('.')
        names.update(('.'.join(parts[:i]),)
                     for i in range(min(2, len(parts)), len(parts) + 1))
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split('.') if package else []
        base = base[:len(base) - (node.level - 1)]
        mod = '.'.join(base + ([node.module] if node.module else []))
      else:
        mod = node.module or ''
      if not mod:
        continue
      for alias in node.names:
        # `from p import sub` is sub's code; `from m import f` is m's.
        names.add((mod,) if alias.name == '*' else (f'{mod}.{alias.name}', mod))
  digest = hashlib.sha256(
      ast.dump(_strip_docstrings(tree)).encode()).hexdigest()
  hit = (digest, tuple(sorted(names)))
  _SOURCE_CACHE[key + module] = hit
  return hit


_MODULE_FILES: dict[tuple[str, frozenset[str]], tuple[str, bool] | None] = {}


def _module_file(name: str, tops: frozenset[str]) -> tuple[str, bool] | None:
  """(source path, is_package) of module `name` of a followed package.

  Found on disk under the top-level package's directory, without importing
  anything; None for other packages, for a name that is an attribute rather
  than a module, and for compiled modules. Cached per process.
  """
  key = (name, tops)
  if key not in _MODULE_FILES:
    _MODULE_FILES[key] = _find_module_file(name, tops)
  return _MODULE_FILES[key]


def _find_module_file(name: str, tops: frozenset[str]
                      ) -> tuple[str, bool] | None:
  top, _, rest = name.partition('.')
  root = sys.modules.get(top)
  if top not in tops or root is None:
    return None
  paths = list(getattr(root, '__path__', None) or ())
  if not paths:  # a plain top-level module
    f = getattr(root, '__file__', None)
    return (f, False) if not rest and f and f.endswith('.py') else None
  for base in paths:
    p = os.path.join(base, *rest.split('.')) if rest else base
    if rest and os.path.isfile(p + '.py'):
      return p + '.py', False
    if os.path.isfile(os.path.join(p, '__init__.py')):
      return os.path.join(p, '__init__.py'), True
  return None


def _trusted(path: str, st: os.stat_result) -> bool:
  return (st.st_mtime_ns <= _STARTED_NS or
          _DEFINED_STAT.get(path) == (st.st_mtime_ns, st.st_size))


def code_fingerprint(fn: Callable[..., Any]) -> CodeFingerprint:
  """The `CodeFingerprint` of the code `fn`'s module runs.

  Followed: `fn`'s module, then every imported module of this package or of
  `fn`'s own top-level package, transitively. Files are re-read at each call
  (a millisecond for the package's ~60 modules); they are parsed once per
  process and content, so a call costs no noticeable time.
  """
  module = sys.modules.get(fn.__module__)
  path = getattr(module, '__file__', None) if module is not None else None
  top = fn.__module__.partition('.')[0]
  tops = frozenset({'modelsteal', top})
  modules: dict[str, str] = {}
  unverified: list[str] = []
  todo: list[str] = []
  if path and path.endswith('.py') and os.path.isfile(path):
    is_package = os.path.basename(path) == '__init__.py'
    todo.append(fn.__module__)
    files = {fn.__module__: (path, is_package)}
  else:
    # No source file (a notebook cell, `python -c`): hash what can be seen
    # of the function and, not knowing its imports, the whole package.
    files = {}
    try:
      src = inspect.getsource(fn).encode()
      digest = hashlib.sha256(ast.dump(_strip_docstrings(ast.parse(
          textwrap.dedent(src.decode())))).encode()).hexdigest()
    except (OSError, TypeError, SyntaxError):
      digest = hashlib.sha256(marshal.dumps(fn.__code__)).hexdigest()
    modules[f'{fn.__module__}:{fn.__qualname__}'] = digest
    todo.extend(_package_modules())
  seen = set()
  while todo:
    name = todo.pop()
    if name in seen or name in _RUNNER_MODULES:
      continue
    seen.add(name)
    found = files.get(name) or _module_file(name, tops)
    if found is None:
      continue
    fpath, is_package = found
    try:
      with open(fpath, 'rb') as f:
        source = f.read()
      st = os.stat(fpath)
      digest, imported = _parse_source(source, name, is_package, fpath)
    except (OSError, SyntaxError, ValueError):
      unverified.append(fpath)
      continue
    if not _trusted(fpath, st):
      unverified.append(fpath)
    modules[name] = digest
    for candidates in imported:
      for cand in candidates:
        if cand in seen or _module_file(cand, tops) is not None:
          todo.append(cand)
          break
  blob = json.dumps({'modules': modules,
                     'python': list(sys.version_info[:2])}, sort_keys=True)
  if unverified:
    blob += _PROCESS_NONCE
    for f in unverified:
      if f not in _WARNED_UNVERIFIED:
        _WARNED_UNVERIFIED.add(f)
        print(f'[modelsteal] {f} changed on disk after this process started '
              '(or is unreadable): the code running may not be what is on '
              'disk, so runs made by it are not reused by later processes.',
              flush=True)
  return CodeFingerprint(hashlib.sha256(blob.encode()).hexdigest(), modules,
                         tuple(sorted(unverified)))


def _package_modules() -> list[str]:
  """Every module name of this package, from its directory."""
  root = os.path.dirname(os.path.abspath(__file__))
  names = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames
                         if not d.startswith('.') and d != '__pycache__')
    rel = os.path.relpath(dirpath, os.path.dirname(root)).replace(os.sep, '.')
    for f in sorted(filenames):
      if f.endswith('.py'):
        names.append(rel if f == '__init__.py' else f'{rel}.{f[:-3]}')
  return names


# Forced reruns -------------------------------------------------------------

RERUN_ENV = 'MODELSTEAL_RERUN'
_RERUN_OVERRIDE: frozenset[str] | None = None  # set by `set_rerun`
_RERUN_FROM_ENV: tuple[str, frozenset[str]] | None = None  # (value, parsed)
_FORCED_DONE: set[str] = set()  # fingerprints already rerun in this process
_COMPONENT_NAMES: set[str] = set()  # every Component created in this process


def _parse_steps(steps: str | Iterable[str], field: str) -> frozenset[str]:
  if isinstance(steps, str):
    steps = steps.split(',')
  names = frozenset(s.strip() for s in steps if s and s.strip())
  if 'all' in names:
    return frozenset({'all'})
  unknown = names - _COMPONENT_NAMES
  if unknown:
    unknown -= known_steps()
  if unknown:
    from modelsteal import errors  # pylint: disable=g-import-not-at-top
    raise errors.UnknownNameError(
        field, f'no step named {", ".join(repr(u) for u in sorted(unknown))}; '
        f'the steps are {", ".join(sorted(known_steps()))}, or \'all\'.')
  return names


def known_steps() -> frozenset[str]:
  """Names of the package's components, and of any other defined so far.

  The package's are found by a scan of its source (nothing is imported), so
  a step can be named before its module is loaded.
  """
  names = set(_COMPONENT_NAMES)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for module in _package_modules():
    path = os.path.join(root, *module.split('.'))
    path = path + '.py' if os.path.isfile(path + '.py') else os.path.join(
        path, '__init__.py')
    try:
      with open(path, 'rb') as f:
        source = f.read()
      if b'@component' not in source:
        continue
      tree = ast.parse(source, filename=path)
    except (OSError, SyntaxError, ValueError):
      continue
    for node in tree.body:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for d in node.decorator_list:
          d = d.func if isinstance(d, ast.Call) else d
          if getattr(d, 'id', getattr(d, 'attr', None)) == 'component':
            names.add(node.name)
  return frozenset(names)


def set_rerun(steps: str | Iterable[str] | None) -> frozenset[str]:
  """Makes the named steps run again instead of reusing a finished run.

  For this process, it replaces the environment variable `MODELSTEAL_RERUN`
  (same syntax: `MODELSTEAL_RERUN=train_model,label_queries` or `all`). A
  forced step runs once per fingerprint in this process and its run takes
  the place of the cached one (later lookups find it); the earlier run is
  kept on disk, renamed `<dir>.replaced-<time>`. A forced run's outputs get
  new fingerprints, so the steps that read them run again too.

  Args:
    steps: step (component) names, as a comma-separated string or an
      iterable; 'all' for every step; '' or [] for none; None to go back to
      the environment variable.

  Returns:
    The steps now forced (`{'all'}` for all).

  Raises:
    modelsteal.errors.UnknownNameError: a name is no component's (field
      `rerun`); the message lists the steps.
  """
  global _RERUN_OVERRIDE
  _RERUN_OVERRIDE = None if steps is None else _parse_steps(steps, 'rerun')
  return rerun_steps()


def rerun_steps() -> frozenset[str]:
  """The steps forced to rerun: `set_rerun`'s, else `MODELSTEAL_RERUN`'s."""
  global _RERUN_FROM_ENV
  if _RERUN_OVERRIDE is not None:
    return _RERUN_OVERRIDE
  value = os.environ.get(RERUN_ENV, '')
  if _RERUN_FROM_ENV is None or _RERUN_FROM_ENV[0] != value:
    try:
      parsed = _parse_steps(value, '')
    except KeyError as e:
      raise type(e)('', f'{RERUN_ENV}={value}: {e}') from None
    _RERUN_FROM_ENV = (value, parsed)
  return _RERUN_FROM_ENV[1]


def _forced(name: str) -> bool:
  steps = rerun_steps()
  return 'all' in steps or name in steps


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
    _COMPONENT_NAMES.add(self.name)
    path = getattr(sys.modules.get(fn.__module__), '__file__', None)
    if path and path.endswith('.py'):
      try:
        st = os.stat(path)
        _DEFINED_STAT[path] = (st.st_mtime_ns, st.st_size)
      except OSError:
        pass

  def __call__(self, **kwargs):
    return self.fn(**kwargs)

  def code_fingerprint(self) -> CodeFingerprint:
    """The code this component's runs depend on (see `code_fingerprint`)."""
    return code_fingerprint(self.fn)

  def _key(self, params: dict[str, Any], input_fps: dict[str, str]) -> str:
    """What a run computes from, not by which code: parameters and inputs.

    Runs with the same key made by other code are the stale ones. Computed
    from JSON values, so it can be recomputed from any `execution.json`,
    including those written before code fingerprints were recorded.
    """
    # Parameters added later are left out while at their defaults, so runs
    # cached before they existed keep their keys.
    params = {k: v for k, v in _jsonable(params).items()
              if not (k in self.later and
                      v == _jsonable(self.parameters.get(k)))}
    record = {'component': self.name, 'parameters': params,
              'inputs': dict(sorted(input_fps.items()))}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()
                          ).hexdigest()

  def _fingerprint(self, inputs, params):
    key = self._key(params, {k: v.fingerprint for k, v in inputs.items()})
    code = self.code_fingerprint()
    record = {'key': key, 'version': self.version, 'code': code.digest,
              'package_version': _package_version()}
    fp = hashlib.sha256(json.dumps(record, sort_keys=True).encode()
                        ).hexdigest()
    return fp, key, code

  def fingerprint(self, inputs: dict[str, artifacts_lib.Artifact],
                  params: dict[str, Any]) -> str:
    """Of a run: parameters, inputs, `version`, code and package version."""
    return self._fingerprint(inputs, params)[0]

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
    """Runs the component under `workdir`, or reuses a finished identical run.

    Identical: same parameters, inputs, `version`, code and package version
    (`fingerprint`). A finished run with the same parameters and inputs made
    by other code is reported as stale and left as it is; the new run goes
    into a directory of its own. A step named by `set_rerun` (or
    `MODELSTEAL_RERUN`) runs again whatever is cached.
    """
    from modelsteal import distribute  # pylint: disable=g-import-not-at-top
    inputs, params = self._split_kwargs(kwargs)
    fp, key, code = self._fingerprint(inputs, params)
    # A non-chief worker of a multi-worker run writes to a private directory.
    workdir = distribute.worker_workdir(workdir)
    base = os.path.join(workdir, self.name)
    final = os.path.join(base, fp[:16])
    forced = fp not in _FORCED_DONE and _forced(self.name)
    finished = self._load_finished(final)
    reused = None if forced else finished
    # Workers reuse a step only together: one training alone would leave the
    # others waiting for its collectives.
    if distribute.all_agree(reused is not None):
      return reused
    if reused is not None:
      print(f'[modelsteal] {self.name}: another worker has no finished run of '
            'this step; running it again on every worker.', flush=True)
    stale_dir = None
    if forced and finished is not None:
      print(f'[modelsteal] {self.name}: rerun forced ({RERUN_ENV} or '
            f'set_rerun); the finished run in {final} is kept beside the new '
            'one as *.replaced-<time>.', flush=True)
    elif finished is None:
      stale_dir = self._report_stale(base, fp, key, code, final)
    os.makedirs(base, exist_ok=True)
    tmp = os.path.join(base, f'.tmp-{fp[:16]}-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    # A forced run's outputs are new artifacts: the steps reading them must
    # not reuse what they computed from the earlier ones.
    salt = f'/rerun-{time.time_ns()}-{os.getpid()}' if forced else ''
    outputs = {}
    for n, t in self.outputs.items():
      outputs[n] = t(uri=os.path.join(tmp, n), fingerprint=hashlib.sha256(
          f'{fp}/{n}{salt}'.encode()).hexdigest())
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
          'key': key,
          'status': 'complete',
          'package_version': _package_version(),
          'code_fingerprint': code.digest,
          'code_modules': {m: d[:16] for m, d in sorted(code.modules.items())},
          'python': '.'.join(map(str, sys.version_info[:2])),
          'libraries': _library_versions(),
          'forced_rerun': forced,
          'started': time.strftime('%Y-%m-%dT%H:%M:%S',
                                   time.localtime(started)),
          'duration_s': round(duration, 3),
          'inputs': {k: {'uri': v.uri, 'fingerprint': v.fingerprint}
                     for k, v in inputs.items()},
          'parameters': _jsonable(params),
          'outputs': {k: os.path.join(final, k) for k in outputs},
      }
      if code.unverified:
        record['code_unverified'] = list(code.unverified)
      with open(os.path.join(tmp, 'execution.json'), 'w') as f:
        json.dump(record, f, indent=1)
      if os.path.exists(final):
        if forced and finished is not None:  # kept, under another name
          stamp = time.strftime('%Y%m%d-%H%M%S')
          aside = f'{final}.replaced-{stamp}'
          if os.path.exists(aside):
            aside += f'-{os.getpid()}'
          os.rename(final, aside)
        else:  # a directory without a finished record
          shutil.rmtree(final)
      os.rename(tmp, final)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    finally:
      _CONTEXT.reset(token)
    if forced:
      _FORCED_DONE.add(fp)
    shutil.rmtree(scratch, ignore_errors=True)
    for n, a in outputs.items():
      a.uri = os.path.join(final, n)
    return RunResult(self.name, outputs, False, duration, final, stale_dir)

  def _load_finished(self, final: str) -> RunResult | None:
    """The finished run in `final`, or None."""
    record_path = os.path.join(final, 'execution.json')
    if not os.path.exists(record_path):
      return None
    try:
      with open(record_path) as f:
        record = json.load(f)
      if record.get('status') != 'complete':
        return None
      outputs = {n: t.load(os.path.join(final, n))
                 for n, t in self.outputs.items()}
      return RunResult(self.name, outputs, True,
                       float(record.get('duration_s', 0.0)), final)
    except (ValueError, OSError, AttributeError,
            artifacts_lib.ArtifactError) as e:
      print(f'[modelsteal] {final}: unreadable earlier run ({e}); running '
            'again.', flush=True)
      return None

  def _report_stale(self, base: str, fp: str, key: str, code: CodeFingerprint,
                    final: str) -> str | None:
    """Prints one line about the newest stale run of `key`; its directory."""
    try:
      entries = sorted(os.listdir(base))
    except OSError:
      return None
    stale = []
    for d in entries:
      if d.startswith('.'):
        continue
      try:
        with open(os.path.join(base, d, 'execution.json')) as f:
          record = json.load(f)
        if (record.get('status') != 'complete' or
            record.get('fingerprint') == fp):
          continue
        # Records written before code fingerprints have no key: recomputed.
        rkey = record.get('key') or self._key(
            record.get('parameters', {}),
            {k: v['fingerprint'] for k, v in record.get('inputs', {}).items()})
        if rkey == key:
          when = os.stat(os.path.join(base, d, 'execution.json')).st_mtime_ns
          stale.append((str(record.get('started', '')), when, d, record))
      except (OSError, ValueError, TypeError, KeyError, AttributeError):
        continue
    if not stale:
      return None
    stale.sort()
    *_, d, record = stale[-1]
    path = os.path.join(base, d)
    older = (f'; {len(stale) - 1} older stale run(s) beside it'
             if len(stale) > 1 else '')
    print(f'[modelsteal] {self.name}: the finished run in {path} is stale '
          f'({self._why_stale(record, code)}); it stays on disk, unused'
          f'{older}; running again into {final}.', flush=True)
    return path

  def _why_stale(self, record: dict[str, Any], code: CodeFingerprint) -> str:
    why = []
    old_modules = record.get('code_modules')
    if not isinstance(old_modules, dict):
      why.append('made before code fingerprints were recorded')
    else:
      now = {m: d[:16] for m, d in code.modules.items()}
      changed = sorted(m for m in set(old_modules) | set(now)
                       if old_modules.get(m) != now.get(m))
      if changed:
        why.append('code changed: ' + ', '.join(changed[:3]) + (
            f' and {len(changed) - 3} more' if len(changed) > 3 else ''))
      python = '.'.join(map(str, sys.version_info[:2]))
      if record.get('python') != python:
        why.append(f'Python {record.get("python")} -> {python}')
    if record.get('package_version') != _package_version():
      why.append(f'package {record.get("package_version")} -> '
                 f'{_package_version()}')
    if str(record.get('version')) != str(self.version):
      why.append(f'version {record.get("version")} -> {self.version}')
    return '; '.join(why) or 'made by code not verifiable on disk'


def component(fn: Callable[..., Any] | None = None, *, version: str = '1',
              later: tuple[str, ...] = ()):
  """Decorator: turns a keyword-only function into a `Component`.

  Args:
    fn: the function.
    version: an extra, manual part of the fingerprint. Edits to the code are
      followed without it (`code_fingerprint`); bump it where behaviour
      changes without a source change this package can see (a data file
      the function reads, a changed third-party library).
    later: parameters added after runs were cached whose default keeps the
      old behaviour: left out of the fingerprint while at their default.
  """
  if fn is None:
    return lambda f: Component(f, version=version, later=later)
  return Component(fn, version=version, later=later)
