"""Query strategies: which pool images the attacker sends next.

One signature for all:

    fn(pool_x, n, rng, *, student=None, chosen=None) -> indices (n,)

`pool_x` float32 (N, ...) is the attacker's pool, `chosen` the pool indices
already queried (never picked again), `student` the current student as a
`Student` view (`as_student` wraps a Keras model or a UQ student). `random`
needs no student: without `chosen` it takes a prefix of one seeded
permutation, so the query sets of a budget sweep are nested and a larger
budget re-asks nothing. The active strategies follow ActiveThief (Pal et al.,
AAAI 2020): uncertainty (`entropy`, `margin`, `least_confidence`), core-set
k-center on the student's penultimate-layer embeddings (`kcenter`, Sener &
Savarese, ICLR 2018, arXiv 1708.00489), DeepFool distance to the decision
boundary (`dfal`, Ducoffe & Precioso 2018, arXiv 1802.09841), DFAL then
k-center (`dfal_kcenter`), and two that need a UQ student (S > 1 samples):
`bald` (mutual information, Houlsby et al. 2011, arXiv 1112.5745) and `qbc`
(vote entropy of the committee, Seung et al. 1992).

A strategy of your own: one function with that signature and one line in
`QUERY_STRATEGIES`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import UnknownNameError
from modelsteal.errors import UserError


class StrategyError(UserError, ValueError):
  """A strategy that cannot run with what it was given."""


class Student:
  """What strategies see of a student.

  Attributes:
    sample_probs: x -> float32 (S, N, K); S = 1 for a plain model.
    keras_model: a Keras model x -> logits (N, K): embeddings and DeepFool.
    num_samples: S.
  """

  def __init__(self, sample_probs: Callable[[np.ndarray], np.ndarray],
               keras_model, num_samples: int = 1):
    self.sample_probs = sample_probs
    self.keras_model = keras_model
    self.num_samples = num_samples

  def embed(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Penultimate-layer activations (the input of the last layer) (N, D)."""
    import keras  # pylint: disable=g-import-not-at-top
    m = self.keras_model
    emb = keras.Model(m.input, m.layers[-1].input)
    return np.concatenate([np.asarray(emb(x[i:i + batch_size], training=False))
                           .reshape(len(x[i:i + batch_size]), -1)
                           for i in range(0, len(x), batch_size)])


def as_student(obj) -> Student:
  """A `Student` view of a Keras logits model or a `modelsteal.uq.UQStudent`."""
  if isinstance(obj, Student):
    return obj
  if hasattr(obj, 'sample_probs') and hasattr(obj, 'models'):  # UQStudent
    return Student(obj.sample_probs, obj.models[0], obj.num_samples)
  from modelsteal.training import predict_probs  # pylint: disable=g-import-not-at-top
  return Student(lambda x: predict_probs(obj, x)[None], obj, 1)


def _free(n_pool: int, chosen) -> np.ndarray:
  mask = np.ones(n_pool, bool)
  if chosen is not None and len(chosen):
    mask[np.asarray(chosen, np.int64)] = False
  return np.flatnonzero(mask)


def _need_student(student, name: str) -> Student:
  if student is None:
    raise StrategyError(f'query strategy {name!r} needs the current student; '
                        'it picks from the second round on ({rounds} > 1).')
  return as_student(student)


def _top(free: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
  """The n free indices with the highest scores (stable: ties by index)."""
  order = np.argsort(-scores, kind='stable')[:n]
  return free[order]


def random_strategy(pool_x, n, rng, *, student=None, chosen=None):
  del student
  if chosen is None or not len(chosen):
    return rng.permutation(len(pool_x))[:n]
  free = _free(len(pool_x), chosen)
  return rng.permutation(free)[:n]


def _uncertainty(score_fn: Callable[[np.ndarray], np.ndarray], name: str):
  def strategy(pool_x, n, rng, *, student=None, chosen=None):
    del rng
    s = _need_student(student, name)
    free = _free(len(pool_x), chosen)
    probs = s.sample_probs(pool_x[free]).mean(0)
    return _top(free, score_fn(probs), n)
  strategy.__name__ = f'{name}_strategy'
  return strategy


def _entropy(p):
  return -np.sum(p * np.log(np.clip(p, 1e-12, 1.0)), axis=1)


def _margin(p):
  top2 = np.sort(p, axis=1)[:, -2:]
  return -(top2[:, 1] - top2[:, 0])  # small margin first


def _least_confidence(p):
  return -p.max(axis=1)


entropy_strategy = _uncertainty(_entropy, 'entropy')
margin_strategy = _uncertainty(_margin, 'margin')
least_confidence_strategy = _uncertainty(_least_confidence, 'least_confidence')


def greedy_kcenter(emb: np.ndarray, centres: np.ndarray, n: int,
                   rng: np.random.Generator) -> np.ndarray:
  """Greedy k-center: n rows of `emb` that each lie farthest from the
  centres so far (row indices into `emb`; `centres` are rows already
  covered, possibly empty, then a random first pick)."""
  emb = np.asarray(emb, np.float32)
  sq = np.einsum('ij,ij->i', emb, emb)
  dist = np.full(len(emb), np.inf, np.float32)

  def cover(rows):
    nonlocal dist
    for i in range(0, len(rows), 512):
      c = emb[rows[i:i + 512]]
      d = sq[:, None] - 2 * emb @ c.T + np.einsum('ij,ij->i', c, c)[None]
      dist = np.minimum(dist, np.maximum(d, 0).min(axis=1))

  if len(centres):
    cover(np.asarray(centres))
  picked = []
  for _ in range(n):
    i = int(rng.integers(len(emb))) if not np.isfinite(dist).any() else int(
        np.argmax(dist))
    picked.append(i)
    cover(np.array([i]))
    dist[i] = -1.0
  return np.array(picked, np.int64)


def kcenter_strategy(pool_x, n, rng, *, student=None, chosen=None):
  s = _need_student(student, 'kcenter')
  emb = s.embed(pool_x)
  chosen = np.asarray(chosen if chosen is not None else [], np.int64)
  return greedy_kcenter(emb, chosen, n, rng)


def deepfool_distance(model, x: np.ndarray, max_iter: int = 10,
                      overshoot: float = 0.02, batch_size: int = 256
                      ) -> np.ndarray:
  """L2 norm of DeepFool's perturbation (Moosavi-Dezfooli et al., CVPR 2016)
  that flips `model`'s top-1 class, per image (N,); inf if not flipped."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  # One traced graph for all batches and iterations (an eager
  # batch_jacobian re-vectorises the model on every call, far slower).
  @tf.function(reduce_retracing=True)
  def logits_and_jacobian(xa):
    with tf.GradientTape() as tape:
      tape.watch(xa)
      logits = model(xa, training=False)
    return logits, tape.batch_jacobian(logits, xa)  # (B, K), (B, K, ...)

  out = []
  for i in range(0, len(x), batch_size):
    x0 = tf.constant(x[i:i + batch_size], tf.float32)
    k0 = tf.argmax(model(x0, training=False), axis=1)
    r = tf.zeros_like(x0)
    done = tf.zeros(len(x0), tf.bool)
    axes = list(range(1, len(x0.shape)))
    for _ in range(max_iter):
      xa = x0 + (1 + overshoot) * r
      logits, jac = logits_and_jacobian(xa)
      done = done | (tf.argmax(logits, axis=1) != k0)
      if bool(tf.reduce_all(done)):
        break
      f0 = tf.gather(logits, k0, batch_dims=1)
      g0 = tf.gather(jac, k0, batch_dims=1)
      w = jac - g0[:, None]
      f = logits - f0[:, None]
      wnorm = tf.sqrt(tf.reduce_sum(tf.square(w), axis=[a + 1 for a in axes]))
      ratio = tf.abs(f) / (wnorm + 1e-8)
      ratio = tf.where(tf.one_hot(k0, logits.shape[1]) > 0, np.inf, ratio)
      l = tf.argmin(ratio, axis=1)
      wl = tf.gather(w, l, batch_dims=1)
      step = (tf.gather(ratio, l, batch_dims=1) + 1e-4) / (
          tf.gather(wnorm, l, batch_dims=1) + 1e-8)
      step = tf.where(done, 0.0, step)
      r = r + tf.reshape(step, [-1] + [1] * len(axes)) * wl
    norm = tf.sqrt(tf.reduce_sum(tf.square((1 + overshoot) * r), axis=axes))
    out.append(tf.where(done, norm, np.inf).numpy())
  return np.concatenate(out) if out else np.zeros(0, np.float32)


# DeepFool on a random subset of the free pool: DeepFool costs many forward
# and backward passes per candidate (BUILD_NOTES.md, "Active strategies").
MAX_DFAL_CANDIDATES = 2000


def _dfal_candidates(pool_x, m, rng, student, chosen):
  free = _free(len(pool_x), chosen)
  if len(free) > max(MAX_DFAL_CANDIDATES, m):
    free = np.sort(rng.choice(free, max(MAX_DFAL_CANDIDATES, m),
                              replace=False))
  dist = deepfool_distance(student.keras_model, pool_x[free])
  return free[np.argsort(dist, kind='stable')[:m]]


def dfal_strategy(pool_x, n, rng, *, student=None, chosen=None):
  s = _need_student(student, 'dfal')
  return _dfal_candidates(pool_x, n, rng, s, chosen)


def dfal_kcenter_strategy(pool_x, n, rng, *, student=None, chosen=None):
  """DFAL keeps the 2n images closest to the boundary, k-center spreads n
  of them over the embedding (ActiveThief's DFAL + k-center)."""
  s = _need_student(student, 'dfal_kcenter')
  cand = _dfal_candidates(pool_x, min(2 * n, len(pool_x)), rng, s, chosen)
  chosen = np.asarray(chosen if chosen is not None else [], np.int64)
  emb = s.embed(pool_x[np.concatenate([chosen, cand])])
  rows = greedy_kcenter(emb, np.arange(len(chosen)), n, rng)
  return cand[rows - len(chosen)]


def _committee(score: Callable[[np.ndarray], np.ndarray], name: str):
  def strategy(pool_x, n, rng, *, student=None, chosen=None):
    del rng
    s = _need_student(student, name)
    if s.num_samples < 2:
      raise StrategyError(
          f'query strategy {name!r} needs a UQ student with several members '
          'or samples (e.g. {students}=ensemble:mnist_cnn or '
          'mcdropout:mnist_cnn); the current student has one.')
    free = _free(len(pool_x), chosen)
    return _top(free, score(s.sample_probs(pool_x[free])), n)
  strategy.__name__ = f'{name}_strategy'
  return strategy


def _bald(probs):
  return _entropy(probs.mean(0)) - np.mean([_entropy(p) for p in probs], 0)


def _vote_entropy(probs):
  votes = probs.argmax(-1)  # (S, N)
  k = probs.shape[-1]
  share = np.stack([(votes == c).mean(0) for c in range(k)], axis=1)
  return _entropy(share) + 1e-6 * _entropy(probs.mean(0))  # ties: soft


bald_strategy = _committee(_bald, 'bald')
qbc_strategy = _committee(_vote_entropy, 'qbc')

QUERY_STRATEGIES = {
    'random': random_strategy,
    'entropy': entropy_strategy,
    'margin': margin_strategy,
    'least_confidence': least_confidence_strategy,
    'kcenter': kcenter_strategy,
    'dfal': dfal_strategy,
    'dfal_kcenter': dfal_kcenter_strategy,
    'bald': bald_strategy,
    'qbc': qbc_strategy,
}
# Strategies that need a UQ student (S > 1).
NEEDS_UQ = ('bald', 'qbc')


def check_strategy(name: str) -> None:
  if name not in QUERY_STRATEGIES:
    raise UnknownNameError('query_strategy', f': unknown query strategy '
                           f'{name!r}; valid: '
                           f'{", ".join(QUERY_STRATEGIES)}.')


def select_queries(pool_x: np.ndarray, budget: int, strategy: str = 'random',
                   seed: int = 0, *, student=None, chosen=None,
                   candidates: int = 0) -> np.ndarray:
  """Indices of `budget` pool images to query next.

  `candidates` > 0: the strategy sees only a random `candidates` of the
  images not asked yet (plus those asked, as `chosen`), so scoring the pool
  costs that many forward passes instead of the whole pool's.

  Raises:
    KeyError: unknown strategy (lists the valid ones).
    ValueError: budget not in [1, free pool size]; a strategy missing the
      student it needs (`StrategyError`).
  """
  check_strategy(strategy)
  if budget < 1:
    raise ConfigError('budgets', ': the query budget must be at least 1, '
                      f'got {budget}.')
  free = len(pool_x) - (len(chosen) if chosen is not None else 0)
  if budget > free:
    raise ConfigError('budgets', f': the query budget ({budget}) is larger '
                      f"than the attacker's query pool ({free} images not "
                      'yet asked); lower {budgets} or use a larger '
                      '{query_data}.')
  if candidates < 0:
    raise ConfigError('round_candidates', 'must be 0 (the whole pool) or '
                      f'positive, got {candidates}.')
  rng = np.random.default_rng(seed)
  if candidates and candidates < free:
    if candidates < budget:
      raise ConfigError('round_candidates', f'({candidates}) cannot hold '
                        f'the {budget} queries of this round; raise '
                        '{round_candidates}.')
    asked = (np.asarray(chosen, np.int64) if chosen is not None else
             np.zeros(0, np.int64))
    sub = np.concatenate([asked, rng.choice(_free(len(pool_x), asked),
                                            candidates, replace=False)])
    picked = np.asarray(QUERY_STRATEGIES[strategy](
        pool_x[sub], budget, rng, student=student,
        chosen=np.arange(len(asked))), np.int64)
    if len(picked) and (picked.min() < 0 or picked.max() >= len(sub)):
      raise StrategyError(f'query strategy {strategy!r} returned indices '
                          'outside the pool.')
    idx = sub[picked]
  else:
    idx = np.asarray(QUERY_STRATEGIES[strategy](
        pool_x, budget, rng, student=student, chosen=chosen), np.int64)
  again = np.intersect1d(idx, chosen) if chosen is not None else []
  if len(idx) != budget or len(np.unique(idx)) != budget or len(again):
    raise StrategyError(f'query strategy {strategy!r} returned {len(idx)} '
                        f'indices ({len(np.unique(idx))} distinct, '
                        f'{len(again)} already asked) for {budget} queries; '
                        'a strategy must pick distinct, new pool images.')
  return idx
