"""The oracle: output modes, budget, answer cache, corrupt cache, resume."""

import glob
import os

import numpy as np
import pytest

from modelsteal.oracle import BudgetExceededError, LocalOracle
from tests.conftest import synthetic_images


class CountingVictim:
  """A fake black box: fixed probabilities, counts what it is asked."""

  def __init__(self, k=4):
    self.k, self.calls, self.rows = k, 0, 0

  def __call__(self, x):
    self.calls += 1
    self.rows += len(x)
    logits = x.reshape(len(x), -1)[:, :self.k] * 10
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_output_mode_and_budget():
  victim = CountingVictim()
  x, _ = synthetic_images(10)
  o = LocalOracle(victim, 'v', output='label', budget=15)
  a = o.query(x)
  assert a.shape == (10, 4) and set(np.unique(a)) <= {0.0, 1.0}
  np.testing.assert_array_equal(a.argmax(1), victim(x).argmax(1))
  o.query(x[:5])  # asked before: no budget used
  assert o.asked == 10
  x2, _ = synthetic_images(10, seed=9)
  with pytest.raises(BudgetExceededError, match='budget 15'):
    o.query(x2)
  assert o.asked == 10  # refused before sending anything
  with pytest.raises(ValueError, match='positive'):
    LocalOracle(victim, 'v', budget=0)


def test_mad_output_sees_the_queries():
  victim = CountingVictim()
  x, _ = synthetic_images(10)
  a = LocalOracle(victim, 'v', output='mad:0.4,argmax').query(x)
  p = victim(x)
  np.testing.assert_array_equal(a.argmax(1), p.argmax(1))
  assert (np.abs(a - p).sum(1) <= 0.4 + 1e-4).all() and not np.allclose(a, p)


def test_cache_never_pays_twice(tmp_path):
  victim = CountingVictim()
  x, _ = synthetic_images(20)
  o1 = LocalOracle(victim, 'v', output='probs', cache_dir=str(tmp_path))
  a1 = o1.query(x)
  o2 = LocalOracle(victim, 'v', output='probs', cache_dir=str(tmp_path))
  a2 = o2.query(x)
  assert victim.rows == 20 and o2.paid == 0 and o2.asked == 20
  np.testing.assert_array_equal(a1, a2)
  # another output mode or victim is another namespace
  o3 = LocalOracle(victim, 'v', output='label', cache_dir=str(tmp_path))
  o3.query(x[:3])
  assert o3.paid == 3


def test_corrupt_cache_part_is_set_aside_and_reasked(tmp_path, capsys):
  victim = CountingVictim()
  x, _ = synthetic_images(8)
  LocalOracle(victim, 'v', output='probs', cache_dir=str(tmp_path)).query(x)
  part, = glob.glob(str(tmp_path / '*' / 'part-*.npz'))
  with open(part, 'r+b') as f:
    f.truncate(os.path.getsize(part) // 2)
  o = LocalOracle(victim, 'v', output='probs', cache_dir=str(tmp_path))
  assert 'corrupt' in capsys.readouterr().err
  a = o.query(x)
  assert o.paid == 8 and a.shape == (8, 4)
  assert glob.glob(str(tmp_path / '*' / '*.corrupt'))


def test_query_all_batches_like_query():
  victim = CountingVictim()
  x, _ = synthetic_images(25)
  o = LocalOracle(victim, 'v', output='probs')
  np.testing.assert_array_equal(o.query_all(x, batch_size=10), victim(x))
  assert victim.calls == 1 + 3 and o.asked == 25  # 3 batches of <= 10
