"""The component runner: caching, fingerprints, atomic outputs."""

import json
import os

import pytest

from modelsteal.artifacts import ArtifactError, Examples
from modelsteal.component import (Component, InputArtifact, OutputArtifact,
                                  Parameter, component, scratch_dir)

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
