"""Output modes / output defences on probability arrays."""

import numpy as np
import pytest

from modelsteal.defenses import output as out

P = np.array([[0.6, 0.3, 0.1], [0.05, 0.15, 0.8]], np.float32)


def test_label_topk_rounding_cutoff():
  np.testing.assert_array_equal(out.top1_label(P), [[1, 0, 0], [0, 0, 1]])
  np.testing.assert_allclose(out.top_k(P, 2), [[0.6, 0.3, 0], [0, 0.15, 0.8]])
  np.testing.assert_allclose(out.rounding(P, 1), [[0.6, 0.3, 0.1],
                                                  [0.0, 0.2, 0.8]], atol=1e-6)
  np.testing.assert_allclose(out.confidence_cutoff(P, 0.2),
                             [[0.6, 0.3, 0], [0, 0, 0.8]])


def test_noise_and_reverse_sigmoid_stay_distributions_and_keep_argmax():
  rng = np.random.default_rng(0)
  n = out.gaussian_noise(P, 0.01, rng)
  r = out.reverse_sigmoid(P, beta=1.0, gamma=0.1)
  for a in (n, r):
    assert a.shape == P.shape and (a >= 0).all()
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-5)
  assert (r.argmax(1) == P.argmax(1)).all()
  assert not np.allclose(r, P, atol=1e-3)  # it does perturb


def test_parse_output():
  assert not out.parse_output('label').soft
  assert out.parse_output('probs').soft
  assert not out.parse_output('topk:1').soft and out.parse_output('topk:3').soft
  np.testing.assert_allclose(out.parse_output('rounded:1').apply(P)[1],
                             [0.0, 0.2, 0.8], atol=1e-6)
  for bad in ('logits', 'topk:0', 'topk:x', 'rounded:-1', 'label:3', ''):
    with pytest.raises(ValueError, match='valid forms'):
      out.parse_output(bad)


def test_adaptive_misinformation_keeps_confident_answers_and_inverts_unsure():
  sure = np.array([[0.97, 0.02, 0.01]], np.float32)
  unsure = np.array([[0.4, 0.35, 0.25]], np.float32)
  am = out.parse_output('misinfo:0.8')
  assert am.soft
  np.testing.assert_allclose(am.apply(sure), sure, atol=1e-3)
  misled = am.apply(unsure)
  np.testing.assert_allclose(misled.sum(1), 1.0, atol=1e-5)
  assert misled.argmax(1)[0] == 2  # the victim's least likely class
  assert misled[0, 0] < unsure[0, 0]
  for bad in ('misinfo', 'misinfo:1.5', 'misinfo:0.5,-1', 'misinfo:0.5,1,2'):
    with pytest.raises(ValueError, match='valid forms'):
      out.parse_output(bad)


def _dirichlet(n, k, seed=0, conc=0.3):
  return np.random.default_rng(seed).dirichlet([conc] * k, n).astype(
      np.float32)


def _cos(a, b):
  return (a * b).sum(-1) / np.maximum(
      np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def test_mad_reduction_matches_the_last_layer_gradient_by_finite_differences():
  # The angle MAD maximises is between the attacker's steps G^T y~ and
  # G^T y, G the Jacobian of log softmax(W h) in W; checked numerically.
  rng = np.random.default_rng(1)
  k, d = 4, 3
  w, h = rng.normal(size=(k, d)), rng.normal(size=d)

  def log_softmax(wf):
    z = wf.reshape(k, d) @ h
    return z - np.log(np.exp(z - z.max()).sum()) - z.max()

  jac = np.zeros((k, k * d))  # d log p_k / d W, by central differences
  for j in range(k * d):
    e = np.zeros(k * d)
    e[j] = 1e-6
    jac[:, j] = (log_softmax(w.ravel() + e) - log_softmax(w.ravel() - e)) / 2e-6
  z = w @ h
  ps = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
  y = _dirichlet(1, k, seed=2)[0].astype(np.float64)
  y_mad = out.mad(y[None], ps[None], 0.8)[0].astype(np.float64)
  full = _cos(jac.T @ y_mad, jac.T @ y)
  np.testing.assert_allclose(full, _cos(y_mad - ps, y - ps), atol=1e-5)
  assert full < 0.99  # and the answer does turn the step


def test_mad_keeps_its_utility_bound_and_beats_every_point_on_the_segments():
  y = _dirichlet(64, 10)
  ps = _dirichlet(64, 10, seed=3, conc=5.0)
  for eps in (0.1, 0.5, 2.0):
    y_mad = out.mad(y, ps, eps)
    assert (y_mad >= 0).all()
    np.testing.assert_allclose(y_mad.sum(1), 1.0, atol=1e-5)
    assert (np.abs(y_mad - y).sum(1) <= eps + 1e-5).all()
    got = _cos(y_mad - ps, y - ps)
    # every feasible point on the segments y -> e_k, on a grid
    best = np.full(len(y), 2.0)
    for kk in range(10):
      step = np.eye(10)[kk] - y
      amax = np.minimum(1.0, eps / np.abs(step).sum(1))
      for t in np.linspace(0, 1, 41):
        cand = y + (t * amax)[:, None] * step
        best = np.minimum(best, _cos(cand - ps, y - ps))
    assert (got <= best + 1e-5).all()
    # and a random answer in the simplex, as far from y, turns it less
    noise = np.random.default_rng(4).dirichlet([1.0] * 10, len(y))
    size = np.abs(y_mad - y).sum(1, keepdims=True)
    rand = y + np.minimum(1, size / np.abs(noise - y).sum(1, keepdims=True)
                          ) * (noise - y)
    assert (1 - got).mean() > 1.5 * (1 - _cos(rand - ps, y - ps)).mean()


def test_mad_argmax_keeps_top1_and_the_plain_mode_may_not():
  y = _dirichlet(200, 10, seed=5)
  ps = _dirichlet(200, 10, seed=6, conc=5.0)
  kept = out.mad(y, ps, 1.0, keep_top1=True)
  np.testing.assert_array_equal(kept.argmax(1), y.argmax(1))
  assert (np.abs(kept - y).sum(1) <= 1.0 + 1e-5).all()
  assert np.abs(kept - y).sum(1).mean() > 0.05  # it perturbs
  assert (out.mad(y, ps, 1.0).argmax(1) != y.argmax(1)).mean() > 0.3


def test_parse_mad_needs_the_queries():
  mode = out.parse_output('mad:0.5,argmax', seed=1)
  assert mode.soft and mode.uses_inputs
  x = np.random.default_rng(0).random((2, 4, 4, 1)).astype(np.float32)
  a = mode.apply(P, x)
  np.testing.assert_array_equal(a.argmax(1), P.argmax(1))
  assert (np.abs(a - P).sum(1) <= 0.5 + 1e-5).all() and not np.allclose(a, P)
  np.testing.assert_array_equal(a, out.parse_output('mad:0.5,argmax',
                                                    seed=1).apply(P, x))
  with pytest.raises(ValueError, match='needs the queries'):
    mode.apply(P)
  for bad in ('mad', 'mad:0', 'mad:2.5', 'mad:0.5,top1', 'mad:x'):
    with pytest.raises(ValueError, match='valid forms'):
      out.parse_output(bad)
