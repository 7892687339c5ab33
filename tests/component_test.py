"""The component runner: caching, fingerprints, atomic outputs."""

import importlib
import json
import os
import sys
import time

import pytest

import modelsteal
from modelsteal.artifacts import ArtifactError, Examples
from modelsteal.component import (Component, InputArtifact, OutputArtifact,
                                  Parameter, component, scratch_dir, set_rerun)
from modelsteal.errors import UnknownNameError

CALLS = []


@component
def make(*, out: OutputArtifact[Examples], n: Parameter[int] = 3,
         fail: Parameter[bool] = False):
  CALLS.append(n)
  with open(out.path('data.txt'), 'w') as f:
    f.write('x' * n)
  out.properties['n'] = n
  if fail:
    raise RuntimeError('boom')


@component
def consume(*, src: InputArtifact[Examples], out: OutputArtifact[Examples]):
  with open(src.path('data.txt')) as f:
    out.properties['len'] = len(f.read())


def test_reuse_and_fingerprint(tmp_path):
  CALLS.clear()
  a = make.run(str(tmp_path), n=3)
  b = make.run(str(tmp_path), n=3)
  c = make.run(str(tmp_path), n=4)
  assert not a.reused and b.reused and not c.reused
  assert CALLS == [3, 4]
  assert a['out'].uri == b['out'].uri != c['out'].uri
  assert b['out'].properties == {'n': 3}
  record = json.load(open(os.path.join(a.execution_dir, 'execution.json')))
  assert record['status'] == 'complete' and record['parameters'] == {
      'n': 3, 'fail': False}
  # downstream fingerprints follow the upstream artifact
  d1 = consume.run(str(tmp_path), src=a['out'])
  d2 = consume.run(str(tmp_path), src=c['out'])
  assert d1['out'].properties['len'] == 3 and d2['out'].properties['len'] == 4
  assert d1.execution_dir != d2.execution_dir


def test_a_later_parameter_at_its_default_keeps_the_fingerprint():
  def before(*, out: OutputArtifact[Examples], n: Parameter[int] = 3):
    del out, n

  def after(*, out: OutputArtifact[Examples], n: Parameter[int] = 3,
            extra: Parameter[int] = 0):
    del out, n, extra
  after.__name__ = 'before'
  old = Component(before)
  new = Component(after, later=('extra',))
  plain = Component(after)  # not declared later: every fingerprint changes
  fp = lambda c, **p: c.fingerprint({}, c._split_kwargs(p)[1])  # pylint: disable=protected-access
  assert fp(new, n=3) == fp(old, n=3) == fp(new, n=3, extra=0)
  assert fp(new, n=3, extra=5) != fp(old, n=3)
  assert fp(plain, n=3) != fp(old, n=3)


def test_failed_run_leaves_nothing_finished(tmp_path):
  with pytest.raises(RuntimeError):
    make.run(str(tmp_path), n=5, fail=True)
  leftovers = os.listdir(tmp_path / 'make')
  assert all(not os.path.exists(tmp_path / 'make' / d / 'execution.json')
             for d in leftovers)
  assert not [d for d in leftovers if d.startswith('.tmp')]
  assert not make.run(str(tmp_path), n=5).reused


def test_direct_call_and_validation(tmp_path):
  out = Examples(uri=str(tmp_path / 'o'))
  os.makedirs(out.uri)
  make(out=out, n=2)  # the undecorated function, for unit tests
  assert open(out.path('data.txt')).read() == 'xx'
  assert os.path.isdir(scratch_dir())
  with pytest.raises(TypeError, match='unknown argument'):
    make.run(str(tmp_path), m=1)
  with pytest.raises(TypeError, match='keyword-only'):
    Component(lambda a: a)


def test_artifact_load_errors(tmp_path):
  with pytest.raises(ArtifactError, match='not a directory'):
    Examples.load(str(tmp_path / 'nope'))
  os.makedirs(tmp_path / 'half')
  with pytest.raises(ArtifactError, match='never finished'):
    Examples.load(str(tmp_path / 'half'))


# Fingerprints that follow the code (issue 28) --------------------------------

PROBE = '''
from modelsteal.artifacts import Examples
from modelsteal.component import OutputArtifact, Parameter, component


@component
def probe(*, out: OutputArtifact[Examples], n: Parameter[int] = 1):
  """Writes what this code computes."""
  from {pkg} import helper  # a lazy import counts too
  out.properties['value'] = helper.scale() * n + OFFSET


OFFSET = {offset}
'''
HELPER = '''
def scale():
  return {scale}
'''


@pytest.fixture
def probe_pkg(tmp_path, monkeypatch):
  """A package `mspkg_<id>` with a component module and a helper it imports.

  Returns write(offset=, scale=, comment=): rewrites the sources, reloads the
  modules and returns the component.
  """
  pkg = f'mspkg_{abs(hash(str(tmp_path))) % 10**8}'
  root = tmp_path / 'src' / pkg
  root.mkdir(parents=True)
  (root / '__init__.py').write_text('')
  monkeypatch.syspath_prepend(str(tmp_path / 'src'))
  monkeypatch.setattr(sys, 'dont_write_bytecode', True)
  # The helper is older than the process, as installed code is; one written
  # later is not trusted to be the code that runs (see the test below).
  past = time.time_ns() - 3600 * 10**9

  def write(offset=0, scale=1, comment='', reload=True):
    (root / 'comp.py').write_text(
        comment + PROBE.format(pkg=pkg, offset=offset))
    helper = root / 'helper.py'
    helper.write_text(HELPER.format(scale=scale))
    if reload:
      os.utime(helper, ns=(past, past))
    importlib.invalidate_caches()
    for name in (f'{pkg}.helper', f'{pkg}.comp'):
      if name in sys.modules and reload:
        importlib.reload(sys.modules[name])
    return importlib.import_module(f'{pkg}.comp').probe

  yield write
  for name in list(sys.modules):
    if name == pkg or name.startswith(pkg + '.'):
      del sys.modules[name]


def _record(run):
  with open(os.path.join(run.execution_dir, 'execution.json')) as f:
    return json.load(f)


def test_changed_code_is_not_reused_and_the_stale_run_is_reported(
    tmp_path, probe_pkg, capsys):
  work = str(tmp_path / 'work')
  probe = probe_pkg(offset=0)
  first = probe.run(work, n=2)
  again = probe.run(work, n=2)
  assert not first.reused and again.reused
  assert first['out'].properties['value'] == 2
  record = _record(first)
  assert record['package_version'] == modelsteal.__version__
  assert record['code_fingerprint'] == probe.code_fingerprint().digest
  assert {m.rpartition('.')[2] for m in record['code_modules']} >= {
      'comp', 'helper', 'artifacts'}
  capsys.readouterr()

  # A comment or docstring edit is not a code change.
  probe = probe_pkg(offset=0, comment='"""A new docstring."""\n# a comment\n')
  assert probe.run(work, n=2).reused
  assert 'stale' not in capsys.readouterr().out

  # The component's own module changes: run again, report the old run.
  probe = probe_pkg(offset=10)
  second = probe.run(work, n=2)
  out = capsys.readouterr().out
  assert not second.reused and second['out'].properties['value'] == 12
  assert second.execution_dir != first.execution_dir
  assert second.stale_dir == first.execution_dir
  assert f'the finished run in {first.execution_dir} is stale' in out
  assert 'code changed: ' in out and '.comp' in out
  assert out.count('\n') == 1  # one notice line
  # ... which stays on disk, finished and readable, and unchanged.
  assert _record(first)['status'] == 'complete'
  assert Examples.load(first['out'].uri).properties['value'] == 2
  assert probe.run(work, n=2).reused  # the new run is reused in turn

  # A module it imports (lazily, inside the function) changes.
  probe = probe_pkg(offset=10, scale=5)
  third = probe.run(work, n=2)
  out = capsys.readouterr().out
  assert not third.reused and third['out'].properties['value'] == 20
  assert 'stale' in out and '.helper' in out
  assert third.stale_dir == second.execution_dir  # the newest stale one
  assert 'older stale run' in out
  assert sorted(d for d in os.listdir(os.path.join(work, 'probe'))
                if not d.startswith('.')) == sorted(
                    os.path.basename(r.execution_dir)
                    for r in (first, second, third))


def test_code_edited_after_start_is_never_reused_elsewhere(
    tmp_path, probe_pkg, capsys):
  probe = probe_pkg(offset=0)
  probe.run(str(tmp_path), n=1)
  probe_pkg(offset=0, scale=3, reload=False)  # on disk, not in memory
  fp = probe.code_fingerprint()
  assert 'helper.py' in {os.path.basename(f) for f in fp.unverified}
  run = probe.run(str(tmp_path), n=1)
  assert not run.reused and _record(run)['code_unverified']
  assert 'changed on disk after this process started' in (
      capsys.readouterr().out)


def test_package_version_change_is_not_reused(tmp_path, monkeypatch, capsys):
  CALLS.clear()
  a = make.run(str(tmp_path), n=3)
  assert make.run(str(tmp_path), n=3).reused
  capsys.readouterr()
  monkeypatch.setattr(modelsteal, '__version__', '99.0.0')
  b = make.run(str(tmp_path), n=3)
  out = capsys.readouterr().out
  assert not b.reused and CALLS == [3, 3]
  assert b.stale_dir == a.execution_dir and b.execution_dir != a.execution_dir
  assert 'stale' in out and f'package {modelsteal.__version__}' not in out
  assert '-> 99.0.0' in out and a.execution_dir in out
  assert _record(b)['package_version'] == '99.0.0'
  assert _record(a)['status'] == 'complete'  # kept
  monkeypatch.undo()
  assert make.run(str(tmp_path), n=3).execution_dir == a.execution_dir


def test_a_run_cached_before_code_fingerprints_is_reported_stale(
    tmp_path, capsys):
  a = make.run(str(tmp_path), n=6)
  record = _record(a)
  for field in ('key', 'code_fingerprint', 'code_modules', 'python'):
    del record[field]
  record['fingerprint'] = 'f' * 64  # the old formula's
  old_dir = os.path.join(tmp_path, 'make', 'ffffffffffffffff')
  os.rename(a.execution_dir, old_dir)
  with open(os.path.join(old_dir, 'execution.json'), 'w') as f:
    json.dump(record, f)
  b = make.run(str(tmp_path), n=6)
  out = capsys.readouterr().out
  assert not b.reused and b.stale_dir == old_dir
  assert 'made before code fingerprints were recorded' in out
  # different parameters: not this run's stale copy
  assert make.run(str(tmp_path), n=7).stale_dir is None


@pytest.fixture
def rerun_reset():
  yield
  set_rerun(None)


def test_forced_rerun(tmp_path, monkeypatch, capsys, rerun_reset):
  del rerun_reset
  monkeypatch.delenv('MODELSTEAL_RERUN', raising=False)
  CALLS.clear()
  a = make.run(str(tmp_path), n=2)
  down = consume.run(str(tmp_path), src=a['out'])
  assert set_rerun('make') == {'make'}
  b = make.run(str(tmp_path), n=2)
  out = capsys.readouterr().out
  assert not b.reused and CALLS == [2, 2] and 'rerun forced' in out
  assert b.execution_dir == a.execution_dir  # takes the cached run's place
  kept = [d for d in os.listdir(tmp_path / 'make') if '.replaced-' in d]
  assert len(kept) == 1 and os.path.exists(
      tmp_path / 'make' / kept[0] / 'out' / 'artifact.json')
  assert _record(b)['forced_rerun']
  # once per process: a second call reuses the forced run
  assert make.run(str(tmp_path), n=2).reused and CALLS == [2, 2]
  # new outputs: the step that reads them runs again
  assert b['out'].fingerprint != a['out'].fingerprint
  down2 = consume.run(str(tmp_path), src=b['out'])
  assert not down2.reused and down2.execution_dir != down.execution_dir
  # later lookups (forcing off) find the forced run
  set_rerun([])
  assert make.run(str(tmp_path), n=2).reused

  # The environment variable, 'all', and a failed forced run.
  set_rerun(None)
  make.run(str(tmp_path), n=9)
  monkeypatch.setenv('MODELSTEAL_RERUN', 'all')

  def broken(**kwargs):
    raise RuntimeError('boom')
  monkeypatch.setattr(make, 'fn', broken)
  with pytest.raises(RuntimeError):
    make.run(str(tmp_path), n=9)
  monkeypatch.undo()
  monkeypatch.delenv('MODELSTEAL_RERUN', raising=False)
  assert make.run(str(tmp_path), n=9).reused  # the old run is still there
  monkeypatch.setenv('MODELSTEAL_RERUN', ' consume , make')
  assert not make.run(str(tmp_path), n=9).reused


def test_rerun_names_are_checked(monkeypatch, rerun_reset):
  del rerun_reset
  with pytest.raises(UnknownNameError, match="no step named 'mkae'.*make"):
    set_rerun('mkae')
  # the package's steps are known before their modules are imported
  assert set_rerun('train_model,label_queries') == {'train_model',
                                                    'label_queries'}
  assert set_rerun('all') == {'all'}
  set_rerun(None)
  monkeypatch.setenv('MODELSTEAL_RERUN', 'nope')
  with pytest.raises(UnknownNameError, match='MODELSTEAL_RERUN=nope'):
    make.run('/nonexistent-never-written', n=1)
  monkeypatch.delenv('MODELSTEAL_RERUN')
