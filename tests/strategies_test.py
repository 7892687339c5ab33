"""Query strategies: distinct new picks, exact budgets, each beats random on
a toy problem built for it, clear errors."""

import numpy as np
import pytest

from modelsteal.attacks import strategies as st
from modelsteal.attacks.active import round_sizes


def _linear_model(offset=0.0, scale=4.0):
  """2-D logistic 'student': class 1 iff x0 > offset (a Keras logits model)."""
  import keras  # pylint: disable=g-import-not-at-top
  inp = keras.Input((2,))
  dense = keras.layers.Dense(2)
  m = keras.Model(inp, dense(inp))
  dense.set_weights([np.array([[-scale, scale], [0.0, 0.0]], np.float32),
                     np.array([scale * offset, -scale * offset], np.float32)])
  return m


@pytest.fixture(scope='module')
def pool():
  return np.random.default_rng(0).uniform(-1, 1, (600, 2)).astype(np.float32)


@pytest.fixture(scope='module')
def plain():
  return st.as_student(_linear_model())


@pytest.fixture(scope='module')
def committee():
  """Five members whose boundaries x0 = c spread over [-0.3, 0.3]."""
  members = [_linear_model(c, scale=20.0) for c in np.linspace(-0.3, 0.3, 5)]
  from modelsteal.training import predict_probs  # pylint: disable=g-import-not-at-top
  return st.Student(lambda x: np.stack([predict_probs(m, x) for m in members]),
                    members[2], num_samples=5)


def _student_for(name, plain, committee):
  return committee if name in st.NEEDS_UQ else plain


def _covering_radius(pool, centres):
  d = np.linalg.norm(pool[:, None] - pool[centres][None], axis=-1)
  return d.min(axis=1).max()


@pytest.mark.parametrize('name', list(st.QUERY_STRATEGIES))
def test_distinct_new_picks_and_exact_budget(name, pool, plain, committee):
  chosen = np.arange(0, 600, 7)  # 86 already asked
  idx = st.select_queries(pool, 40, name, seed=1, chosen=chosen,
                          student=_student_for(name, plain, committee))
  assert len(idx) == 40 and len(set(idx.tolist())) == 40
  assert not set(idx.tolist()) & set(chosen.tolist())
  # the whole remaining pool can be taken, one more cannot
  rest = 600 - len(chosen)
  assert len(st.select_queries(pool, rest, name, chosen=chosen,
                               student=_student_for(name, plain,
                                                    committee))) == rest
  with pytest.raises(ValueError, match='larger than'):
    st.select_queries(pool, rest + 1, name, chosen=chosen,
                      student=_student_for(name, plain, committee))


@pytest.mark.parametrize('name', list(st.QUERY_STRATEGIES))
def test_candidates_limit_what_the_strategy_scores(name, pool, plain,
                                                   committee):
  chosen = np.arange(0, 600, 7)
  seen = []
  student = _student_for(name, plain, committee)
  counting = st.Student(lambda x: (seen.append(len(x)),
                                   student.sample_probs(x))[1],
                        student.keras_model, student.num_samples)
  idx = st.select_queries(pool, 20, name, seed=3, chosen=chosen,
                          student=None if name == 'random' else counting,
                          candidates=100)
  assert len(set(idx.tolist())) == 20
  assert not set(idx.tolist()) & set(chosen.tolist())
  # the strategy saw the asked images and 100 candidates, not the pool
  assert all(n <= len(chosen) + 100 for n in seen)
  if name in ('entropy', 'margin', 'least_confidence', 'bald', 'qbc'):
    assert seen  # they score through sample_probs
  with pytest.raises(ValueError, match='cannot hold'):
    st.select_queries(pool, 20, name, chosen=chosen, student=counting,
                      candidates=10)


def test_candidates_keep_the_strategy_near_the_boundary(pool, plain):
  idx = st.select_queries(pool, 10, 'margin', seed=0, student=plain,
                          candidates=200)
  rnd = st.select_queries(pool, 10, 'random', seed=0)
  assert np.abs(pool[idx, 0]).mean() < 0.25 * np.abs(pool[rnd, 0]).mean()


@pytest.mark.parametrize('name', ['entropy', 'margin', 'least_confidence',
                                  'dfal', 'dfal_kcenter'])
def test_boundary_strategies_ask_near_the_boundary(name, pool, plain):
  """Random wastes queries far from the boundary x0 = 0; these do not."""
  idx = st.select_queries(pool, 30, name, seed=0, student=plain)
  rnd = st.select_queries(pool, 30, 'random', seed=0)
  assert np.abs(pool[idx, 0]).mean() < 0.25 * np.abs(pool[rnd, 0]).mean()
  if name != 'dfal_kcenter':  # the 30 closest of 600 lie within |x0| < 0.1
    assert np.abs(pool[idx, 0]).max() < 0.1


def test_dfal_distance_is_the_distance_to_a_linear_boundary(pool, plain):
  d = st.deepfool_distance(plain.keras_model, pool[:50], overshoot=0.0)
  np.testing.assert_allclose(d, np.abs(pool[:50, 0]), rtol=1e-3, atol=1e-3)


def test_dfal_kcenter_spreads_along_the_boundary(pool, plain):
  """Both stay near x0 = 0; k-center covers the boundary band better."""
  band = np.flatnonzero(np.abs(pool[:, 0]) < 0.15)
  dk = st.select_queries(pool, 12, 'dfal_kcenter', student=plain)
  df = st.select_queries(pool, 12, 'dfal', student=plain)
  r = lambda idx: np.abs(pool[band][:, None, 1] - pool[idx][None, :, 1]).min(
      1).max()
  assert r(dk) < r(df)


def test_kcenter_covers_the_pool_better_than_random(pool, plain):
  chosen = np.array([0, 1, 2])
  kc = st.select_queries(pool, 25, 'kcenter', seed=0, student=plain,
                         chosen=chosen)
  radii = [_covering_radius(pool, np.concatenate([
      chosen, st.select_queries(pool, 25, 'random', seed=s, chosen=chosen)]))
           for s in range(5)]
  assert _covering_radius(pool, np.concatenate([chosen, kc])) < min(radii)
  # greedy k-center is a 2-approximation: by hand on four points on a line
  pts = np.array([[0.0], [1.0], [2.0], [10.0]], np.float32)
  assert st.greedy_kcenter(pts, np.array([0]), 2,
                           np.random.default_rng(0)).tolist() == [3, 2]


@pytest.mark.parametrize('name', ['bald', 'qbc'])
def test_committee_strategies_ask_where_members_disagree(name, pool,
                                                         committee):
  idx = st.select_queries(pool, 30, name, student=committee)
  assert (np.abs(pool[idx, 0]) <= 0.3 + 0.02).all()  # between the boundaries
  rnd = st.select_queries(pool, 30, 'random', seed=0)
  assert (np.abs(pool[rnd, 0]) <= 0.32).mean() < 0.6


@pytest.mark.parametrize('name', ['bald', 'qbc'])
def test_committee_strategies_need_a_uq_student(name, pool, plain):
  with pytest.raises(st.StrategyError, match='needs a UQ student'):
    st.select_queries(pool, 5, name, student=plain)


def test_active_strategies_need_a_student_and_unknown_names_fail(pool):
  with pytest.raises(st.StrategyError, match='needs the current student'):
    st.select_queries(pool, 5, 'entropy')
  with pytest.raises(KeyError, match='unknown query strategy'):
    st.select_queries(pool, 5, 'psychic')


def test_a_bad_user_strategy_is_caught(pool, monkeypatch):
  monkeypatch.setitem(st.QUERY_STRATEGIES, 'twice',
                      lambda pool_x, n, rng, **kw: np.zeros(n, np.int64))
  with pytest.raises(st.StrategyError, match='distinct, new'):
    st.select_queries(pool, 3, 'twice')


def test_random_without_chosen_is_a_nested_prefix(pool):
  a = st.select_queries(pool, 10, 'random', seed=3)
  b = st.select_queries(pool, 50, 'random', seed=3)
  assert a.tolist() == b[:10].tolist()


def test_round_sizes():
  assert round_sizes(10000, 5) == [2000, 4000, 6000, 8000, 10000]
  assert round_sizes(1000, 4, seed_size=100) == [100, 400, 700, 1000]
  assert round_sizes(500, 1) == [500]
  assert round_sizes(2000, 3, schedule=[500, 1000, 2000]) == [500, 1000, 2000]
  with pytest.raises(ValueError, match='increasing'):
    round_sizes(2000, 3, schedule=[500, 500, 2000])
  with pytest.raises(ValueError, match='ends at 1000'):
    round_sizes(2000, 2, schedule=[500, 1000])
  with pytest.raises(ValueError, match='rounds must be at least 1'):
    round_sizes(100, 0)
  with pytest.raises(ValueError, match='cannot fill'):
    round_sizes(10, 20, seed_size=5)
