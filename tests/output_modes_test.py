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
